// Kernel feature probes (mesh-agent/datapath/features.ts over native/src/probes.cc) and what the
// agent does with the answers: the datapath refuses to load without a required feature, names a
// program the verifier rejects with the end of the verifier's log, and `sockmesh status` shows
// the probed features. These run on every kernel of `npm run test:kernels`.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DatapathError } from '../core/errors';
import { Datapath, defaultObjDir } from '../mesh-agent/datapath/datapath';
import { featuresTurnedOff, HELPER_IDS, hasFeature, missingRequired, probeFeatures } from '../mesh-agent/datapath/features';
import { findCgroup2Mount, OBJECTS } from '../abi/pins';
import * as bpf from '../native';
import { kernelSkip } from './kernel';

const SOCKMESH = path.resolve(__dirname, '../../bin/sockmesh');

test('helper numbers are those of linux/bpf.h (enum bpf_func_id, in the order of its mapper)', (t) => {
  const hdr = '/usr/include/linux/bpf.h';
  if (!fs.existsSync(hdr)) return t.skip('no linux/bpf.h (linux-libc-dev)');
  const text = fs.readFileSync(hdr, 'utf8');
  const start = text.indexOf('#define __BPF_FUNC_MAPPER');
  const start2 = text.indexOf('#define ___BPF_FUNC_MAPPER');
  const from = start2 >= 0 && (start < 0 || start2 < start) ? start2 : start;
  assert.ok(from >= 0, 'no helper mapper in linux/bpf.h');
  const names = [...text.slice(from, text.indexOf('\n\n', from)).matchAll(/FN\(([a-z_0-9]+)/g)].map((m) => m[1]);
  assert.equal(names[0], 'unspec');
  for (const [name, id] of Object.entries(HELPER_IDS)) assert.equal(names.indexOf(name), id, name);
});

test('SOCKMESH_FEATURES_OFF names features by their status names; an unknown one is refused', () => {
  assert.deepEqual([...featuresTurnedOff({ SOCKMESH_FEATURES_OFF: 'link:sk_msg, map:ringbuf' })], ['link:sk_msg', 'map:ringbuf']);
  assert.deepEqual([...featuresTurnedOff({})], []);
  assert.throws(() => featuresTurnedOff({ SOCKMESH_FEATURES_OFF: 'link:sk_msg,no-such' }), /unknown feature no-such/);
});

describe('[kernel] feature probes', kernelSkip(), () => {
  test('every required feature is present on this kernel, and the probes can say no', () => {
    const k = probeFeatures();
    assert.equal(k.kernel, os.release());
    assert.deepEqual(missingRequired(k), [], JSON.stringify(missingRequired(k)));
    assert.ok(k.features.length >= 20);
    for (const f of k.features) {
      assert.equal(typeof f.present, 'boolean', f.name);
      assert.equal(f.error, undefined, `${f.name}: ${f.error}`);
      assert.ok(f.required || f.fallback, `${f.name}: an optional feature says what happens without it`);
    }
    assert.ok(hasFeature(k, 'helper:cgroup_sock_addr:set_retval'));
    // sk_msg links came with 6.10: the probe must tell the kernels of the matrix apart.
    const [major, minor] = k.kernel.split(/[.-]/).map(Number);
    if (major === 6 && minor < 10) assert.equal(hasFeature(k, 'link:sk_msg'), false, `${k.kernel} has no sk_msg links`);
    if (major > 6 || (major === 6 && minor >= 10)) assert.equal(hasFeature(k, 'link:sk_msg'), true, `${k.kernel} has sk_msg links`);
    // The same probes answer no where the kernel refuses: a socket-map helper in an skb program,
    // set_retval outside cgroup programs, and a helper number no kernel has.
    const C = bpf.consts;
    assert.equal(bpf.probeHelper(C.BPF_PROG_TYPE_CGROUP_SKB, HELPER_IDS.msg_redirect_hash), false);
    assert.equal(bpf.probeHelper(C.BPF_PROG_TYPE_XDP, HELPER_IDS.set_retval), false);
    assert.equal(bpf.probeHelper(C.BPF_PROG_TYPE_SOCK_OPS, 100_000), false);
    assert.equal(bpf.probeHelper(C.BPF_PROG_TYPE_SK_MSG, HELPER_IDS.msg_redirect_hash), true);
  });
});

describe('[kernel] probes without the privilege to load BPF', kernelSkip(), () => {
  test('say "not permitted", never "the kernel lacks it"', (t) => {
    if (spawnSync('setpriv', ['--version']).status !== 0) return t.skip('no setpriv');
    const mod = path.resolve(__dirname, '../mesh-agent/datapath/features.js');
    const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', `console.log(JSON.stringify(require(${JSON.stringify(mod)}).probeFeatures()))`], {
      encoding: 'utf8',
    });
    assert.equal(r.status, 0, r.stderr);
    const k = JSON.parse(r.stdout) as { denied?: string; features: Array<{ present: boolean; error?: string }> };
    assert.match(k.denied ?? '', /may not load BPF programs .*EPERM/);
    assert.ok(k.features.every((f) => !f.present && f.error === k.denied));
  });
});

describe('[kernel] the datapath and the verifier', kernelSkip(), () => {
  let tmp: string;
  let cg: string;
  let bpffs: string;

  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'smfeat-'));
    cg = path.join(findCgroup2Mount(), `smfeat-${process.pid}`);
    fs.mkdirSync(cg, { recursive: true });
    bpffs = `/sys/fs/bpf/smfeat-${process.pid}`;
  });

  after(() => {
    try {
      Datapath.remove(bpffs);
    } catch {
      /* nothing pinned */
    }
    fs.rmSync(bpffs, { recursive: true, force: true });
    fs.rmdirSync(cg);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('a program the verifier rejects is named, with the end of the verifier log, and nothing is attached', () => {
    // The real objects, but sock_lb.bpf.o replaced by one whose program reads past its context.
    const objDir = path.join(tmp, 'objs');
    fs.mkdirSync(objDir);
    for (const o of OBJECTS) fs.copyFileSync(path.join(defaultObjDir(), o), path.join(objDir, o));
    const src = path.join(tmp, 'bad.c');
    fs.writeFileSync(
      src,
      `#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("cgroup/connect4") int sm_too_far(struct bpf_sock_addr *ctx)
{
	return *(volatile __u32 *)((char *)ctx + 4000);
}
char LICENSE[] SEC("license") = "GPL";
`,
    );
    execFileSync('clang', ['-O2', '-g', '-target', 'bpf', '-I/usr/include/x86_64-linux-gnu', '-c', src, '-o', path.join(objDir, 'sock_lb.bpf.o')]);
    let caught: unknown;
    try {
      Datapath.install({ cgroupPath: cg, bpffsDir: bpffs, objDir });
    } catch (e) {
      caught = e;
    }
    assert.ok(caught instanceof DatapathError, String(caught));
    assert.equal(caught.code, 'SM_VERIFIER');
    assert.match(caught.message, /rejected program sm_too_far of sock_lb\.bpf\.o/);
    assert.match(caught.message, /the log ends:\n[\s\S]*invalid bpf_context access off=4000/);
    assert.ok(!/BEGIN PROG LOAD LOG|^libbpf:/m.test(caught.message), 'only the verifier lines, not libbpf framing');
    assert.equal(caught.details.program, 'sm_too_far');
    assert.match(String(caught.details.verifierLog), /BEGIN PROG LOAD LOG/);
    // Nothing attached to the cgroup, no links pinned.
    const cgFd = bpf.openPath(cg);
    try {
      for (const t of ['BPF_CGROUP_INET4_CONNECT', 'BPF_CGROUP_SOCK_OPS', 'BPF_CGROUP_INET_INGRESS']) {
        assert.equal(bpf.progQuery(cgFd, bpf.consts[t as 'BPF_CGROUP_SOCK_OPS']).progIds.length, 0, t);
      }
    } finally {
      bpf.closeFd(cgFd);
    }
    const links = path.join(bpffs, 'links');
    assert.deepEqual(fs.existsSync(links) ? fs.readdirSync(links) : [], []);
  });

  test('without a required feature the agent refuses to start, naming it, and attaches nothing', () => {
    const cfg = path.join(tmp, 'mesh.yaml');
    fs.writeFileSync(cfg, 'services:\n  - { name: web, vips: [198.19.9.9], ports: [{ port: 80 }] }\n');
    // SOCKMESH_FEATURES_OFF makes the datapath see this kernel as one without bpf_set_retval.
    const r = spawnSync(SOCKMESH, ['agent', '--config', cfg, '--cgroup', cg, '--bpffs', bpffs, '--admin', 'none'], {
      encoding: 'utf8',
      env: { ...process.env, SOCKMESH_FEATURES_OFF: 'helper:cgroup_sock_addr:set_retval' },
      timeout: 60_000,
    });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /SM_KERNEL_FEATURE: kernel \S+ lacks what the datapath needs: helper:cgroup_sock_addr:set_retval \(.*Linux 5\.18; turned off by SOCKMESH_FEATURES_OFF\)\. Nothing was loaded or attached\./);
    const cgFd = bpf.openPath(cg);
    try {
      assert.equal(bpf.progQuery(cgFd, bpf.consts.BPF_CGROUP_INET4_CONNECT).progIds.length, 0);
    } finally {
      bpf.closeFd(cgFd);
    }
    assert.deepEqual(fs.existsSync(path.join(bpffs, 'links')) ? fs.readdirSync(path.join(bpffs, 'links')) : [], []);
    assert.deepEqual(fs.existsSync(path.join(bpffs, 'maps')) ? fs.readdirSync(path.join(bpffs, 'maps')) : [], []);
  });

  test('`sockmesh status` shows what the kernel can do, in text and JSON', () => {
    const dp = Datapath.install({ cgroupPath: cg, bpffsDir: bpffs });
    try {
      assert.deepEqual(missingRequired(dp.features!), []);
      const text = spawnSync(SOCKMESH, ['status', '--bpffs', bpffs], { encoding: 'utf8' });
      assert.equal(text.status, 0, text.stderr);
      assert.match(text.stdout, new RegExp(`KERNEL FEATURES \\(Linux ${os.release().replace(/[.+]/g, '\\$&')}\\)`));
      assert.match(text.stdout, /helper:cgroup_sock_addr:set_retval\s+yes\s+required\s+5\.18/);
      assert.match(text.stdout, /link:sk_msg\s+(yes|no)\s+optional\s+6\.10\s+legacy attach/);
      const json = spawnSync(SOCKMESH, ['status', '--bpffs', bpffs, '--json'], { encoding: 'utf8' });
      assert.equal(json.status, 0, json.stderr);
      const report = JSON.parse(json.stdout) as { kernel: { kernel: string; features: Array<{ name: string; present: boolean }> } };
      assert.equal(report.kernel.kernel, os.release());
      assert.deepEqual(
        report.kernel.features.map((f) => [f.name, f.present]),
        dp.features!.features.map((f) => [f.name, f.present]),
        'the CLI and the agent probe the same answers',
      );
    } finally {
      dp.close();
      Datapath.remove(bpffs);
    }
  });
});
