// The L4 datapath end to end, for real: programs loaded into this kernel and attached to the
// sandbox's node cgroup, pods in their own network namespaces, real sockets. Nothing is mocked.
//
// Topology: node1 { client, web1, web2, web3 }  node2 { remote }   (see sandbox/sandbox.ts)
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Agent } from '../mesh-agent/agent';
import { CounterName } from '../abi/codecs';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { createLogger } from '../core/log';
import { parseJsonLines, PODTOOL_PATH, Sandbox, ServerHandle } from '../sandbox/sandbox';
import { scaled, waitUntil } from '../sandbox/time-scale';
import { kernelSkip } from './kernel';

const SOCKMESH = path.resolve(__dirname, '../../bin/sockmesh');
const VIP4 = '198.19.0.10';
const VIP6 = 'fd53:6f63:6b99::10';
const VIP_EMPTY = '198.19.0.11';
const VIP_REMOTE = '198.19.0.12';
const VIP_FLIP = '198.19.0.13';

interface Cfg {
  flipTo?: string;
  web2Healthy?: boolean;
}

function configYaml(sb: Sandbox, c: Cfg = {}): string {
  const p = (n: string) => sb.pod(n);
  const flip = p(c.flipTo ?? 'web1');
  return `
node: node1
services:
  - name: web
    vips: [${VIP4}, "${VIP6}"]
    ports:
      - { name: http, port: 80, targetPort: 8080 }
      - { name: echo, port: 90, targetPort: 9000 }
      - { name: dns, port: 53, protocol: UDP, targetPort: 5353 }
  - name: empty
    vips: [${VIP_EMPTY}]
    ports: [{ port: 80 }]
  - name: remote
    vips: [${VIP_REMOTE}]
    ports:
      - { name: http, port: 80, targetPort: 8080 }
      - { name: echo, port: 90, targetPort: 9000 }
  - name: flip
    vips: [${VIP_FLIP}]
    ports: [{ port: 80, targetPort: 8080 }]
endpoints:
  - { service: default/web, address: ${p('web1').ipv4}, weight: 1 }
  - { service: default/web, address: "${p('web1').ipv6}", weight: 1 }
  - { service: default/web, address: ${p('web2').ipv4}, weight: 3, healthy: ${c.web2Healthy ?? true} }
  - { service: default/web, address: "${p('web2').ipv6}", weight: 3 }
  - { service: default/web, address: ${p('web3').ipv4}, weight: 5, healthy: false }
  - { service: default/remote, address: ${p('remote').ipv4} }
  - { service: default/flip, address: ${flip.ipv4} }
workloads:
  - { name: client, serviceAccount: client, ips: [${p('client').ipv4}, "${p('client').ipv6}"], node: node1 }
  - { name: web1, serviceAccount: web, ips: [${p('web1').ipv4}, "${p('web1').ipv6}"], node: node1 }
  - { name: web2, serviceAccount: web, ips: [${p('web2').ipv4}, "${p('web2').ipv6}"], node: node1 }
  - { name: web3, serviceAccount: web, ips: [${p('web3').ipv4}, "${p('web3').ipv6}"], node: node1 }
  - { name: remote, serviceAccount: web, ips: [${p('remote').ipv4}], node: node2 }
`;
}

describe('[kernel] L4 datapath in a sandbox', kernelSkip(), () => {
  let sb: Sandbox;
  let dir: string;
  let cfgPath: string;
  let bpffs: string;
  let agent: Agent | undefined;
  const servers: ServerHandle[] = [];

  const counters = (): Record<CounterName, bigint> => {
    const dp = Datapath.openPinned(bpffs);
    try {
      return dp.counters();
    } finally {
      dp.close();
    }
  };
  const delta = (a: Record<CounterName, bigint>, b: Record<CounterName, bigint>, k: CounterName) => Number(b[k] - a[k]);

  const writeConfig = (c: Cfg = {}, text?: string) => {
    // Replace atomically, as config management does.
    fs.writeFileSync(cfgPath + '.tmp', text ?? configYaml(sb, c));
    fs.renameSync(cfgPath + '.tmp', cfgPath);
  };

  const nextApplied = (a: Agent) =>
    new Promise<bigint>((resolve) => a.once('applied', (_r, doneAt) => resolve(doneAt)));

  before(async () => {
    sb = await Sandbox.create({
      nodes: [
        {
          name: 'node1',
          pods: [
            { name: 'client', ipv6: true },
            { name: 'web1', ipv6: true },
            { name: 'web2', ipv6: true },
            { name: 'web3', ipv6: true },
          ],
        },
        { name: 'node2', pods: [{ name: 'remote' }] },
      ],
    });
    for (const w of ['web1', 'web2', 'web3', 'remote']) {
      servers.push(await sb.startServer(w, ['serve', '--port', '8080', '--mode', 'id', '--name', w]));
      servers.push(await sb.startServer(w, ['serve', '--port', '9000', '--mode', 'echo', '--name', w]));
      servers.push(await sb.startServer(w, ['serve-udp', '--port', '5353', '--name', w]));
    }
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockmesh-dp-'));
    cfgPath = path.join(dir, 'mesh.yaml');
    writeConfig();
    bpffs = path.join(sb.ensureBpffsDir(), 'dp');
    agent = new Agent({
      configPath: cfgPath,
      cgroupPath: sb.node('node1').cgroupPath,
      bpffsDir: bpffs,
      log: createLogger({ level: 'warn' }),
    });
    const report = await agent.start();
    assert.deepEqual(report.errors, []);
  });

  after(async () => {
    agent?.stop();
    for (const s of servers) await s.stop();
    if (bpffs && fs.existsSync(bpffs)) Datapath.remove(bpffs);
    await sb?.teardown();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('TCP to a VIP reaches backends in proportion to their weights, never an unhealthy one', async () => {
    const before = counters();
    const r = await sb.podtool('client', ['ids', '--target', `${VIP4}:80`, '--count', '400', '--concurrency', '8']);
    assert.equal(r.code, 0, r.stderr);
    const ids: Record<string, number> = r.last.ids;
    assert.deepEqual(r.last.errors, {});
    assert.equal((ids.web1 ?? 0) + (ids.web2 ?? 0), 400, JSON.stringify(ids));
    assert.equal(ids.web3 ?? 0, 0, 'web3 is unhealthy and must never be chosen');
    // Weights 1:3 -> web1 ~ Binomial(400, 1/4): mean 100, sd 8.66. Accept +-5 sd (false failure
    // probability ~6e-7).
    assert.ok(ids.web1 >= 57 && ids.web1 <= 143, `web1 got ${ids.web1} of 400, expected 100 +- 43`);
    // getpeername() shows the VIP, not the backend.
    assert.deepEqual(r.last.peer, { address: VIP4, port: 80 });
    const after = counters();
    assert.equal(delta(before, after, 'connect_translated'), 400);
  });

  test('a service with no usable backend fails connect() at once with ECONNREFUSED', async () => {
    const before = counters();
    const r = await sb.podtool('client', ['connect', '--target', `${VIP_EMPTY}:80`]);
    assert.equal(r.last.ok, false);
    assert.equal(r.last.err, 'ECONNREFUSED');
    assert.ok(r.last.ms < scaled(5000), `took ${r.last.ms} ms: that is a timeout, not a rejection`);
    assert.equal(delta(before, counters(), 'connect_no_backend'), 1);
  });

  test('an IPv6 service reaches IPv6 backends and getpeername() shows the IPv6 VIP', async () => {
    const r = await sb.podtool('client', ['ids', '--target', `[${VIP6}]:80`, '--count', '40']);
    assert.deepEqual(r.last.errors, {});
    assert.equal((r.last.ids.web1 ?? 0) + (r.last.ids.web2 ?? 0), 40);
    assert.deepEqual(r.last.peer, { address: VIP6, port: 80 });
  });

  test('a UDP request to a VIP is answered from the VIP', async () => {
    const before = counters();
    for (const target of [`${VIP4}:53`, `[${VIP6}]:53`]) {
      const r = await sb.podtool('client', ['udp', '--target', target, '--payload', 'q', '--count', '3']);
      assert.equal(r.code, 0, r.stderr);
      const replies = r.lines.filter((l) => l.ok);
      assert.equal(replies.length, 3, r.stdout);
      for (const rep of replies) {
        assert.deepEqual(rep.from, { address: target.startsWith('[') ? VIP6 : VIP4, port: 53 });
        assert.match(rep.reply, /^web[12]:q$/);
      }
    }
    const after = counters();
    assert.equal(delta(before, after, 'udp_translated'), 6);
    assert.equal(delta(before, after, 'udp_reply_revnat'), 6);
  });

  describe('same-node redirection is byte-identical', () => {
    // echo: the client sends, half-closes (shutdown SHUT_WR), reads everything back, compares
    // SHA-256. sink: the server hashes what it received and answers after the client's half-close.
    const MiB = 1 << 20;
    const cases: Array<{ name: string; mode: 'echo' | 'sink'; bytes: number; chunk?: number; conns?: number }> = [
      { name: '1 byte, echoed', mode: 'echo', bytes: 1 },
      { name: '64 KiB, echoed', mode: 'echo', bytes: 64 * 1024 },
      { name: '16 MiB, echoed', mode: 'echo', bytes: 16 * MiB },
      { name: '20000 one-byte writes, echoed', mode: 'echo', bytes: 20000, chunk: 1 },
      { name: '16 MiB one way to a sink, answer after half-close', mode: 'sink', bytes: 16 * MiB },
      { name: '200 concurrent connections of 32 KiB, echoed', mode: 'echo', bytes: 32 * 1024, conns: 200 },
    ];
    before(async () => {
      servers.push(await sb.startServer('web1', ['serve', '--port', '9100', '--mode', 'sink', '--name', 'web1']));
    });
    for (const c of cases) {
      test(c.name, async () => {
        const before = counters();
        // echo goes through the VIP (both backends are local); sink straight to web1's pod IP.
        const target = c.mode === 'echo' ? `${VIP4}:90` : `${sb.pod('web1').ipv4}:9100`;
        const args = ['transfer', '--target', target, '--mode', c.mode, '--bytes', String(c.bytes)];
        if (c.chunk) args.push('--chunk', String(c.chunk));
        if (c.conns) args.push('--conns', String(c.conns));
        const r = await sb.podtool('client', args, { timeoutMs: 120_000 });
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.last.ok, true, JSON.stringify(r.last));
        assert.equal(r.last.mismatches, 0);
        const after = counters();
        const conns = c.conns ?? 1;
        assert.ok(delta(before, after, 'sock_local_pair') >= 2 * conns, 'both ends of every connection entered the sockhash');
        assert.ok(delta(before, after, 'msg_redirected') > 0, 'no message was redirected');
        // Replies (server -> client) are always redirected; a request direction stays on TCP only
        // when the client wrote before the server socket was established (see sm_sk_msg).
        // Sink: the request direction alone carries the bytes, so this proves the client's sends
        // were redirected (the server's first send always finds its client in the sockhash).
        const expected = c.mode === 'echo' ? c.bytes * conns : c.bytes;
        assert.ok(delta(before, after, 'msg_redirected_bytes') >= expected, `fewer than ${expected} bytes redirected`);
      });
    }
  });

  test('a backend on another node is translated but not redirected, and byte-identical', async () => {
    const before = counters();
    const r = await sb.podtool('client', ['transfer', '--target', `${VIP_REMOTE}:90`, '--mode', 'echo', '--bytes', String(4 << 20)]);
    assert.equal(r.last.ok, true, JSON.stringify(r.last));
    const after = counters();
    assert.equal(delta(before, after, 'connect_translated'), 1);
    assert.equal(delta(before, after, 'msg_redirected'), 0);
    assert.ok(delta(before, after, 'sock_not_local') >= 1);
  });

  test('backends replaced through the config file while a client connects in a loop', async () => {
    // The connect loop prints one line per attempt; wait for the first before changing anything.
    const child = sb.spawn('client', [process.execPath, PODTOOL_PATH, 'connect-loop', '--target', `${VIP_FLIP}:80`, '--duration-ms', String(scaled(2500))], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    const firstLine = new Promise<void>((resolve) => child.stdout!.on('data', (d) => ((out += d), out.includes('\n') && resolve())));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    await firstLine;
    await new Promise((r) => setTimeout(r, scaled(300)));
    const applied = nextApplied(agent!);
    writeConfig({ flipTo: 'web2' });
    const doneAt = await applied;
    await exited;
    const attempts = parseJsonLines(out).filter((l) => l.t0 !== undefined);
    const afterUpdate = attempts.filter((l) => BigInt(l.t0) > doneAt);
    const beforeUpdate = attempts.filter((l) => BigInt(l.t0) <= doneAt);
    assert.ok(beforeUpdate.length > 0 && afterUpdate.length > 0, `attempts before/after: ${beforeUpdate.length}/${afterUpdate.length}`);
    assert.deepEqual(attempts.filter((l) => l.err), [], 'no connect failed: never zero backends in between');
    assert.ok(beforeUpdate.some((l) => l.id === 'web1'));
    const stale = afterUpdate.filter((l) => l.id !== 'web2');
    assert.deepEqual(stale, [], 'a connect started after the update returned reached the removed backend');
    writeConfig();
    await nextApplied(agent!);
  });

  test('an invalid config reload is rejected and the datapath keeps the last good state', async () => {
    const snapshot = () => execFileSync('bpftool', ['-j', 'map', 'dump', 'pinned', path.join(bpffs, 'maps/sm_services')], { encoding: 'utf8' });
    const before = snapshot();
    const invalid = new Promise<Error>((resolve) => agent!.once('invalid', resolve));
    writeConfig({}, 'services:\n  - name: web\n    vips: [198.19.0.10]\n    ports: [{ port: 70000 }]\n');
    const err = await invalid;
    assert.match(err.message, /mesh\.yaml:\d+:\d+: services\[0\]\.ports\[0\]\.port: /);
    assert.equal(snapshot(), before);
    const r = await sb.podtool('client', ['ids', '--target', `${VIP4}:80`, '--count', '5']);
    assert.deepEqual(r.last.errors, {});
    writeConfig();
  });

  test('`sockmesh agent` with a malformed file exits non-zero naming file, path and reason, datapath unchanged', () => {
    const bad = path.join(dir, 'bad.yaml');
    fs.writeFileSync(bad, 'services:\n  - name: web\n    vip: [198.19.0.10]\n    ports: [{ port: 80 }]\n');
    const progsBefore = Datapath.readPrograms(bpffs);
    const r = spawnSync(SOCKMESH, ['agent', '--config', bad, '--cgroup', sb.node('node1').cgroupPath, '--bpffs', bpffs, '--admin', 'none'], {
      encoding: 'utf8',
    });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /bad\.yaml:3:5: services\[0\]\.vip: /);
    assert.deepEqual(Datapath.readPrograms(bpffs), progsBefore);
  });

  test('agent restart (SIGKILL) disrupts nothing: open connections live on, new ones are translated, no double attach', async () => {
    agent!.stop();
    agent = undefined;
    const runAgent = () =>
      spawn(SOCKMESH, ['agent', '--config', cfgPath, '--cgroup', sb.node('node1').cgroupPath, '--bpffs', bpffs, '--admin', 'none'], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
    const logsOf = (p: ReturnType<typeof runAgent>) => {
      const lines: any[] = [];
      let buf = '';
      p.stderr!.on('data', (d) => {
        buf += d;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          try {
            lines.push(JSON.parse(buf.slice(0, i)));
          } catch {
            /* not JSON */
          }
          buf = buf.slice(i + 1);
        }
      });
      return lines;
    };
    const waitFor = async (lines: any[], msg: string) => {
      await waitUntil(() => lines.some((l) => l.msg === msg), 10_000, 50);
      const l = lines.find((x) => x.msg === msg);
      assert.ok(l, `agent never logged "${msg}"`);
      return l;
    };

    const a1 = runAgent();
    const l1 = logsOf(a1);
    const applied1 = await waitFor(l1, 'applied config');
    assert.deepEqual([applied1.added, applied1.updated, applied1.removed, applied1.slotsWritten], [0, 0, 0, 0], 'adopting agent rewrote state');

    // A long-lived connection across the restart.
    const base = counters().sock_local_pair;
    const longConn = sb.podtool('client', ['pingpong', '--target', `${VIP4}:90`, '--size', '512', '--rounds', '30000'], {
      timeoutMs: 120_000,
    });
    // Wait until the long-lived connection is up (both ends in the sockhash) before the kill.
    await waitUntil(() => counters().sock_local_pair >= base + 2n, 5000);
    assert.ok(counters().sock_local_pair >= base + 2n, 'the long-lived connection never came up');
    a1.kill('SIGKILL');
    await new Promise((r) => a1.once('exit', r));
    // No agent now: new connections are still translated by the pinned programs.
    const during = await sb.podtool('client', ['ids', '--target', `${VIP4}:80`, '--count', '20']);
    assert.deepEqual(during.last.errors, {});
    assert.equal((during.last.ids.web1 ?? 0) + (during.last.ids.web2 ?? 0), 20);

    const a2 = runAgent();
    const l2 = logsOf(a2);
    const applied2 = await waitFor(l2, 'applied config');
    assert.deepEqual([applied2.added, applied2.updated, applied2.removed, applied2.slotsWritten], [0, 0, 0, 0]);
    const progs = l2.filter((l) => l.msg === 'program');
    assert.equal(progs.length, 12);
    assert.deepEqual(progs.filter((l) => l.outcome !== 'adopted'), [], 'programs re-attached instead of adopted');
    // A second agent on the same datapath is refused while this one runs.
    const dup = spawnSync(SOCKMESH, ['agent', '--config', cfgPath, '--cgroup', sb.node('node1').cgroupPath, '--bpffs', bpffs, '--admin', 'none'], {
      encoding: 'utf8',
    });
    assert.equal(dup.status, 1);
    assert.match(dup.stderr, /SM_AGENT_RUNNING: another sockmesh agent manages /);
    const pp = await longConn;
    assert.equal(pp.code, 0, pp.stderr);
    assert.equal(pp.last.rounds, 30000, JSON.stringify(pp.last));

    // Exactly one program per attach type on the cgroup.
    const shown = JSON.parse(
      execFileSync('bpftool', ['-j', 'cgroup', 'show', sb.node('node1').cgroupPath], { encoding: 'utf8' }),
    ) as Array<{ attach_type: string }>;
    const types = shown.map((s) => s.attach_type).sort();
    assert.equal(new Set(types).size, types.length, `attached twice: ${types.join(',')}`);
    assert.equal(types.length, 11);

    a2.kill('SIGTERM');
    await new Promise((r) => a2.once('exit', r));
  });

  test('`sockmesh status` shows programs, map usage and counters (table and --json)', () => {
    const j = JSON.parse(execFileSync(SOCKMESH, ['status', '--bpffs', bpffs, '--json'], { encoding: 'utf8' }));
    assert.equal(j.programs.length, 12);
    const svc = j.maps.find((m: any) => m.name === 'sm_services');
    // web: 3 ports x 2 VIPs, empty 1, remote 2, flip 1
    assert.equal(svc.entries, 10);
    assert.equal(svc.capacity, 65536);
    assert.ok(Number(j.counters.connect_translated) > 400);
    const t = execFileSync(SOCKMESH, ['status', '--bpffs', bpffs], { encoding: 'utf8' });
    assert.match(t, /sm_connect4\s+cgroup_inet4_connect/);
    assert.match(t, /sm_services\s+10\s+65536/);
  });
});
