// Real-kernel tests of the native libbpf addon (no mocks). Needs root.
// Creates and removes: /sys/fs/bpf/smnative-<pid>, <cgroup2>/smnative-<pid>, a temp dir.
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import * as bpf from '../native/index';
import { BpfError, consts as C } from '../native/index';
import { scaled } from '../sandbox/time-scale';

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const skip = isRoot ? false : 'native BPF tests need root (bpf syscalls, bpffs, cgroup2)';

const BPFFS = '/sys/fs/bpf';

const OBJ_SRC = `
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sm_counter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 64);
	__type(key, __u64);
	__type(value, __u64);
} sm_socks SEC(".maps");

static __always_inline void bump(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&sm_counter, &idx);
	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("cgroup/connect4") int connect_a(struct bpf_sock_addr *ctx) { bump(0); return 1; }
SEC("cgroup/connect4") int connect_b(struct bpf_sock_addr *ctx) { bump(1); return 1; }
SEC("cgroup/sock_create") int sock_create(struct bpf_sock *ctx) { bump(2); return 1; }
SEC("sk_msg") int msg_pass(struct sk_msg_md *msg) { bump(3); return SK_PASS; }

char LICENSE[] SEC("license") = "GPL";
`;

// Out-of-bounds context read: compiles fine, must be rejected by the verifier.
const BAD_SRC = `
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("cgroup/connect4") int bad_ctx(struct bpf_sock_addr *ctx)
{
	return *(volatile __u32 *)((char *)ctx + 4000);
}

char LICENSE[] SEC("license") = "GPL";
`;

function findCgroup2(): string {
  for (const line of fs.readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const f = line.split(' ');
    if (f[2] === 'cgroup2' && f[1] !== undefined) return f[1];
  }
  throw new Error('no cgroup2 mount in /proc/mounts');
}

function ensureBpffs(): void {
  const mounted = fs
    .readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .some((l) => {
      const f = l.split(' ');
      return f[1] === BPFFS && f[2] === 'bpf';
    });
  if (!mounted) execFileSync('mount', ['-t', 'bpf', 'bpf', BPFFS]);
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

function u64(n: number | bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

function assertBpfError(fn: () => unknown, code: string, op: string): BpfError {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught instanceof BpfError, `expected BpfError, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  assert.equal(caught.op, op, caught.message);
  assert.ok(caught.errno > 0);
  return caught;
}

describe('[kernel] native libbpf addon', { skip }, () => {
  const pid = process.pid;
  const pinDir = path.join(BPFFS, `smnative-${pid}`);
  let cgDir = '';
  let tmpDir = '';
  let objPath = '';
  let badPath = '';
  const fds = new Set<number>();

  const track = (fd: number): number => {
    fds.add(fd);
    return fd;
  };
  const release = (fd: number): void => {
    fds.delete(fd);
    bpf.closeFd(fd);
  };

  before(() => {
    ensureBpffs();
    fs.mkdirSync(pinDir, { recursive: true });
    cgDir = path.join(findCgroup2(), `smnative-${pid}`);
    fs.mkdirSync(cgDir, { recursive: true });
    tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'smnative-'));
    const cc = (name: string, src: string): string => {
      const c = path.join(tmpDir, `${name}.c`);
      const o = path.join(tmpDir, `${name}.o`);
      fs.writeFileSync(c, src);
      execFileSync('clang', ['-O2', '-g', '-target', 'bpf', '-I/usr/include/x86_64-linux-gnu', '-c', c, '-o', o]);
      return o;
    };
    objPath = cc('good', OBJ_SRC);
    badPath = cc('bad', BAD_SRC);
  });

  after(() => {
    for (const fd of fds) {
      try {
        bpf.closeFd(fd);
      } catch {
        /* already closed */
      }
    }
    // Pins keep links attached: remove them before the cgroup.
    fs.rmSync(pinDir, { recursive: true, force: true });
    if (cgDir !== '') {
      for (let i = 0; i < 50; i++) {
        try {
          fs.rmdirSync(cgDir);
          break;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ENOENT') break;
          // A just-exited child may still be accounted to the cgroup.
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
        }
      }
    }
    if (tmpDir !== '') fs.rmSync(tmpDir, { recursive: true, force: true });
  });

  test('consts come from the addon and match CONST_NAMES', () => {
    const native = bpf.addonConsts();
    assert.deepEqual(Object.keys(native).sort(), [...bpf.CONST_NAMES].sort());
    assert.equal(C.BPF_ANY, 0);
    assert.equal(C.BPF_NOEXIST, 1);
    assert.equal(C.BPF_MAP_TYPE_HASH, 1);
    assert.equal(C.BPF_F_ALLOW_MULTI, 2);
    assert.equal(C.BPF_FS_MAGIC, 0xcafe4a11);
    assert.equal(typeof C.BPF_SK_MSG_VERDICT, 'number');
    assert.match(bpf.libbpfVersion(), /^v\d+\.\d+/);
  });

  test('hash map: update/lookup/delete/get_next_key and errors', () => {
    const fd = track(bpf.mapCreate(C.BPF_MAP_TYPE_HASH, 4, 8, 64, 'sm_t_hash'));
    const info = bpf.mapInfo(fd);
    assert.equal(info.name, 'sm_t_hash');
    assert.equal(info.type, C.BPF_MAP_TYPE_HASH);
    assert.deepEqual([info.keySize, info.valueSize, info.maxEntries], [4, 8, 64]);
    assert.ok(info.id > 0);

    assert.equal(bpf.mapLookup(fd, u32(1), 8), null);
    bpf.mapUpdate(fd, u32(1), u64(111));
    assert.deepEqual(bpf.mapLookup(fd, u32(1), 8), u64(111));
    assertBpfError(() => bpf.mapUpdate(fd, u32(1), u64(2), C.BPF_NOEXIST), 'EEXIST', 'map_update');
    assertBpfError(() => bpf.mapUpdate(fd, u32(2), u64(2), C.BPF_EXIST), 'ENOENT', 'map_update');
    bpf.mapUpdate(fd, u32(1), u64(112), C.BPF_EXIST);
    assert.deepEqual(bpf.mapLookup(fd, u32(1), 8), u64(112));

    const first = bpf.mapGetNextKey(fd, null, 4);
    assert.deepEqual(first, u32(1));
    assert.equal(bpf.mapGetNextKey(fd, first, 4), null);

    assert.equal(bpf.mapDelete(fd, u32(1)), true);
    assert.equal(bpf.mapDelete(fd, u32(1)), false);
    assert.equal(bpf.mapGetNextKey(fd, null, 4), null);

    // Size checks happen before any syscall and name the mismatch.
    const e1 = assertBpfError(() => bpf.mapUpdate(fd, Buffer.alloc(2), u64(1)), 'EINVAL', 'map_update');
    assert.match(e1.message, /key is 2 bytes, map key_size is 4/);
    assertBpfError(() => bpf.mapUpdate(fd, u32(1), u32(1)), 'EINVAL', 'map_update');
    assertBpfError(() => bpf.mapLookup(fd, u32(1), 4), 'EINVAL', 'map_lookup');
    assertBpfError(() => bpf.mapGetNextKey(fd, null, 8), 'EINVAL', 'map_get_next_key');
    assertBpfError(() => bpf.mapInfo(999999), 'EBADF', 'map_info');
    release(fd);
  });

  test('full hash map reports E2BIG with errno/op/message', () => {
    const fd = track(bpf.mapCreate(C.BPF_MAP_TYPE_HASH, 4, 4, 4, 'sm_t_full'));
    for (let i = 0; i < 4; i++) bpf.mapUpdate(fd, u32(i), u32(i));
    const e = assertBpfError(() => bpf.mapUpdate(fd, u32(99), u32(99)), 'E2BIG', 'map_update');
    assert.equal(e.errno, 7);
    assert.equal(e.name, 'BpfError');
    assert.ok(e instanceof Error);
    assert.equal(e.message, `map_update(fd=${fd}): E2BIG: Argument list too long`);
    // Updating an existing key in a full map still works.
    bpf.mapUpdate(fd, u32(3), u32(33));
    release(fd);
  });

  test('batch ops over 5000 entries', () => {
    const N = 5000;
    const fd = track(bpf.mapCreate(C.BPF_MAP_TYPE_HASH, 4, 8, 8192, 'sm_t_batch'));
    const keys = Array.from({ length: N }, (_, i) => u32(i));
    const values = Array.from({ length: N }, (_, i) => u64(i * 3 + 1));
    bpf.mapUpdateBatch(fd, keys, values);

    const check = (res: bpf.BatchResult, expectKeys: Set<number>): void => {
      assert.equal(res.keys.length, expectKeys.size);
      assert.equal(res.values.length, expectKeys.size);
      const seen = new Set<number>();
      res.keys.forEach((k, i) => {
        const key = k.readUInt32LE(0);
        assert.ok(expectKeys.has(key), `unexpected key ${key}`);
        assert.ok(!seen.has(key), `duplicate key ${key}`);
        seen.add(key);
        assert.equal(res.values[i]!.readBigUInt64LE(0), BigInt(key * 3 + 1));
      });
    };
    const all = new Set(Array.from({ length: N }, (_, i) => i));
    check(bpf.mapLookupBatch(fd, 4, 8, 64), all);
    check(bpf.mapLookupBatch(fd, 4, 8, 100000), all);

    let walked = 0;
    for (let k = bpf.mapGetNextKey(fd, null, 4); k !== null; k = bpf.mapGetNextKey(fd, k, 4)) walked++;
    assert.equal(walked, N);

    // Absent keys in the middle are skipped, not fatal.
    const del = [...Array.from({ length: N / 2 }, (_, i) => u32(i * 2)), u32(100000), u32(100001)];
    assert.equal(bpf.mapDeleteBatch(fd, del), N / 2);
    const odd = new Set(Array.from({ length: N / 2 }, (_, i) => i * 2 + 1));
    // maxCount 1 forces the ENOSPC path (a bucket holds more than one entry).
    check(bpf.mapLookupBatch(fd, 4, 8, 1), odd);
    assert.equal(bpf.mapLookup(fd, u32(0), 8), null);

    assertBpfError(() => bpf.mapUpdateBatch(fd, [u32(1)], []), 'EINVAL', 'map_update_batch');
    assertBpfError(() => bpf.mapUpdateBatch(fd, [u32(1)], [u32(1)]), 'EINVAL', 'map_update_batch');
    assert.equal(bpf.mapDeleteBatch(fd, []), 0);
    release(fd);
  });

  test('per-CPU array sized by numPossibleCpus, array batch', () => {
    const ncpu = bpf.numPossibleCpus();
    assert.ok(ncpu >= 1);
    const fd = track(bpf.mapCreate(C.BPF_MAP_TYPE_PERCPU_ARRAY, 4, 4, 2, 'sm_t_pcpu'));
    const vs = 8 * ncpu; // roundup8(4) per CPU
    const v = Buffer.alloc(vs);
    for (let c = 0; c < ncpu; c++) v.writeUInt32LE(1000 + c, c * 8);
    bpf.mapUpdate(fd, u32(1), v);
    assert.deepEqual(bpf.mapLookup(fd, u32(1), vs), v);
    assert.deepEqual(bpf.mapLookup(fd, u32(0), vs), Buffer.alloc(vs));
    const e = assertBpfError(() => bpf.mapLookup(fd, u32(1), 4), 'EINVAL', 'map_lookup');
    assert.match(e.message, /numPossibleCpus/);
    const all = bpf.mapLookupBatch(fd, 4, vs, 16);
    assert.equal(all.keys.length, 2);
    assert.deepEqual(all.values[1], v);
    // Array elements cannot be deleted: the per-element fallback reports it.
    assertBpfError(() => bpf.mapDeleteBatch(fd, [u32(0)]), 'EINVAL', 'map_delete_batch');
    release(fd);
  });

  test('LPM trie: batch ops fall back to per-element syscalls', () => {
    const fd = track(bpf.mapCreate(C.BPF_MAP_TYPE_LPM_TRIE, 8, 4, 32, 'sm_t_lpm', C.BPF_F_NO_PREALLOC));
    const key = (plen: number, a: number, b: number): Buffer => {
      const k = Buffer.alloc(8);
      k.writeUInt32LE(plen, 0);
      k[4] = 10;
      k[5] = a;
      k[6] = b;
      return k;
    };
    const keys = [key(16, 0, 0), key(24, 1, 0), key(24, 2, 0), key(32, 3, 7)];
    bpf.mapUpdateBatch(fd, keys, keys.map((_, i) => u32(i + 10)));
    const res = bpf.mapLookupBatch(fd, 8, 4, 2);
    assert.equal(res.keys.length, 4);
    const got = new Map(res.keys.map((k, i) => [k.toString('hex'), res.values[i]!.readUInt32LE(0)]));
    keys.forEach((k, i) => assert.equal(got.get(k.toString('hex')), i + 10));
    assert.equal(bpf.mapDeleteBatch(fd, [keys[0]!, key(8, 9, 9), keys[3]!]), 2);
    assert.equal(bpf.mapLookupBatch(fd, 8, 4).keys.length, 2);
    release(fd);
  });

  test('pin to bpffs, objGet, unlink; isBpffs', () => {
    assert.equal(bpf.isBpffs(pinDir), true);
    assert.equal(bpf.isBpffs(tmpDir), false);
    assert.equal(bpf.isBpffs(path.join(tmpDir, 'nope')), false);
    const fd = track(bpf.mapCreate(C.BPF_MAP_TYPE_HASH, 4, 4, 8, 'sm_t_pin'));
    bpf.mapUpdate(fd, u32(5), u32(55));
    const pin = path.join(pinDir, 'pinned_map');
    bpf.objPin(fd, pin);
    assertBpfError(() => bpf.objPin(fd, pin), 'EEXIST', 'obj_pin');
    const fd2 = track(bpf.objGet(pin));
    assert.equal(bpf.mapInfo(fd2).id, bpf.mapInfo(fd).id);
    assert.deepEqual(bpf.mapLookup(fd2, u32(5), 4), u32(55));
    const fd3 = track(bpf.mapGetFdById(bpf.mapInfo(fd).id));
    assert.equal(bpf.mapInfo(fd3).name, 'sm_t_pin');
    const dup = track(bpf.dupFd(fd));
    assert.notEqual(dup, fd);
    assert.equal(bpf.mapInfo(dup).id, bpf.mapInfo(fd).id);
    fs.unlinkSync(pin);
    assertBpfError(() => bpf.objGet(pin), 'ENOENT', 'obj_get');
    [fd, fd2, fd3, dup].forEach(release);
  });

  test('object open/load, pinned map reuse across objects, maxEntries', () => {
    const o1 = bpf.BpfObject.open(objPath, { pinRoot: pinDir, maxEntries: { sm_socks: 128 } });
    const progs = o1.programs();
    assert.deepEqual(
      progs.map((p) => [p.name, p.section, p.fd]),
      [
        ['connect_a', 'cgroup/connect4', -1],
        ['connect_b', 'cgroup/connect4', -1],
        ['sock_create', 'cgroup/sock_create', -1],
        ['msg_pass', 'sk_msg', -1],
      ],
    );
    assert.equal(o1.map('sm_socks').maxEntries, 128);
    o1.load();
    assert.equal(o1.loaded, true);
    const a = o1.program('connect_a');
    assert.ok(a.fd >= 0);
    assert.equal(a.progType, C.BPF_PROG_TYPE_CGROUP_SOCK_ADDR);
    assert.equal(a.attachType, C.BPF_CGROUP_INET4_CONNECT);
    assert.equal(o1.program('sock_create').attachType, C.BPF_CGROUP_INET_SOCK_CREATE);
    assert.equal(o1.program('msg_pass').progType, C.BPF_PROG_TYPE_SK_MSG);
    assertBpfError(() => o1.program('nope'), 'ENOENT', 'object_program');

    const counter = o1.map('sm_counter');
    assert.equal(counter.pinPath, path.join(pinDir, 'sm_counter'));
    const pinnedFd = track(bpf.objGet(counter.pinPath!));
    assert.equal(bpf.mapInfo(pinnedFd).id, bpf.mapInfo(counter.fd).id);
    release(pinnedFd);
    assert.equal(bpf.mapInfo(o1.map('sm_socks').fd).maxEntries, 128);
    bpf.mapUpdate(counter.fd, u32(0), u64(42));
    const counterId = bpf.mapInfo(counter.fd).id;

    const pi = bpf.progInfo(a.fd);
    assert.equal(pi.name, 'connect_a');
    assert.match(pi.tag, /^[0-9a-f]{16}$/);
    assert.equal(pi.type, C.BPF_PROG_TYPE_CGROUP_SOCK_ADDR);
    assert.ok(pi.mapIds.includes(counterId));
    assert.equal(typeof pi.runCnt, 'number');
    const byId = track(bpf.progGetFdById(pi.id));
    assert.equal(bpf.progInfo(byId).tag, pi.tag);
    release(byId);
    // Wrong kind of fd is refused instead of decoding garbage.
    assertBpfError(() => bpf.mapInfo(a.fd), 'EINVAL', 'map_info');
    assertBpfError(() => bpf.progInfo(counter.fd), 'EINVAL', 'prog_info');
    assertBpfError(() => o1.load(), 'EALREADY', 'object_load');

    const kept = track(bpf.dupFd(a.fd));
    o1.close();
    o1.close();
    assertBpfError(() => o1.programs(), 'EBADF', 'object_programs');
    assert.equal(bpf.progInfo(kept).id, pi.id, 'dup survives close');
    release(kept);

    // A restarted agent re-opening the object gets the same pinned map back.
    const o2 = bpf.BpfObject.open(objPath, { pinRoot: pinDir });
    o2.load();
    const c2 = o2.map('sm_counter');
    assert.equal(bpf.mapInfo(c2.fd).id, counterId);
    assert.deepEqual(bpf.mapLookup(c2.fd, u32(0), 8), u64(42));
    o2.close();

    const e = assertBpfError(
      () => bpf.BpfObject.open(objPath, { maxEntries: { no_such_map: 1 } }),
      'ENOENT',
      'object_open',
    );
    assert.match(e.message, /no_such_map/);
    assertBpfError(() => bpf.BpfObject.open(path.join(tmpDir, 'missing.o')), 'ENOENT', 'object_open');
    fs.writeFileSync(path.join(tmpDir, 'junk.o'), 'not an ELF file at all');
    const junk = assertBpfError(() => bpf.BpfObject.open(path.join(tmpDir, 'junk.o')), 'LIBBPF_ERRNO__FORMAT', 'object_open');
    assert.match(junk.verifierLog ?? '', /libbpf/);
  });

  test('verifier rejection surfaces as SM_VERIFIER with the log', () => {
    const o = bpf.BpfObject.open(badPath);
    try {
      let caught: unknown;
      try {
        o.load();
      } catch (e) {
        caught = e;
      }
      assert.ok(caught instanceof BpfError, String(caught));
      assert.equal(caught.code, 'SM_VERIFIER');
      assert.equal(caught.op, 'object_load');
      assert.ok(caught.errno > 0);
      assert.match(caught.message, /^object_load\(path=.*bad\.o\): SM_VERIFIER/);
      assert.match(caught.message, /invalid bpf_context access/);
      assert.match(caught.verifierLog ?? '', /invalid bpf_context access/);
      assert.match(o.log(), /BEGIN PROG LOAD LOG/);
    } finally {
      o.close();
    }
    // An explicitly requested verifier log of a good load is kept, not thrown.
    const ok = bpf.BpfObject.open(objPath, { pinRoot: pinDir, kernelLogLevel: 1 });
    try {
      ok.load();
      assert.match(ok.log(), /processed \d+ insns/);
    } finally {
      ok.close();
    }
  });

  test('cgroup links: create, query, pin, info, update, legacy attach, detach', () => {
    const o = bpf.BpfObject.open(objPath, { pinRoot: pinDir });
    const cgFd = track(bpf.openPath(cgDir, C.O_RDONLY | C.O_DIRECTORY));
    try {
      o.load();
      const a = o.program('connect_a');
      const b = o.program('connect_b');
      const sc = o.program('sock_create');
      const counter = o.map('sm_counter').fd;
      for (let i = 0; i < 4; i++) bpf.mapUpdate(counter, u32(i), u64(0));
      const aId = bpf.progInfo(a.fd).id;
      const bId = bpf.progInfo(b.fd).id;

      assert.deepEqual(bpf.progQuery(cgFd, C.BPF_CGROUP_INET4_CONNECT).progIds, []);
      const link = track(bpf.linkCreate(a.fd, cgFd, C.BPF_CGROUP_INET4_CONNECT));
      const q = bpf.progQuery(cgFd, C.BPF_CGROUP_INET4_CONNECT);
      assert.deepEqual(q.progIds, [aId]);
      assert.equal(q.attachFlags, C.BPF_F_ALLOW_MULTI);

      const li = bpf.linkInfo(link);
      assert.equal(li.type, C.BPF_LINK_TYPE_CGROUP);
      assert.equal(li.progId, aId);
      assert.equal(li.attachType, C.BPF_CGROUP_INET4_CONNECT);
      assert.equal(li.cgroupId, fs.statSync(cgDir).ino);

      // Pinned, the link outlives its fd (as across an agent restart).
      const linkPin = path.join(pinDir, 'connect4_link');
      bpf.objPin(link, linkPin);
      release(link);
      const link2 = track(bpf.objGet(linkPin));
      assert.equal(bpf.linkInfo(link2).id, li.id);
      assert.deepEqual(bpf.progQuery(cgFd, C.BPF_CGROUP_INET4_CONNECT).progIds, [aId]);
      const link3 = track(bpf.linkGetFdById(li.id));
      assert.equal(bpf.linkInfo(link3).cgroupId, li.cgroupId);
      release(link3);

      bpf.linkUpdate(link2, b.fd);
      assert.equal(bpf.linkInfo(link2).progId, bId);
      assert.deepEqual(bpf.progQuery(cgFd, C.BPF_CGROUP_INET4_CONNECT).progIds, [bId]);
      assertBpfError(() => bpf.linkUpdate(link2, sc.fd), 'EINVAL', 'link_update');
      assertBpfError(() => bpf.linkUpdate(link2, a.fd, a.fd), 'EPERM', 'link_update');
      bpf.linkUpdate(link2, b.fd, b.fd);

      const sockLink = track(bpf.linkCreate(sc.fd, cgFd, C.BPF_CGROUP_INET_SOCK_CREATE));
      assert.equal(bpf.linkInfo(sockLink).attachType, C.BPF_CGROUP_INET_SOCK_CREATE);

      // Exercise the hooks from a child placed in the test cgroup.
      const child = spawnSync(
        '/bin/sh',
        [
          '-c',
          'echo $$ > "$1/cgroup.procs" && exec "$2" -e "$3"',
          'sh',
          cgDir,
          process.execPath,
          "const s=require('dgram').createSocket('udp4');s.connect(9,'127.0.0.1',()=>s.close())",
        ],
        { encoding: 'utf8', timeout: scaled(20_000) },
      );
      assert.equal(child.status, 0, child.stderr);
      const count = (i: number): bigint => bpf.mapLookup(counter, u32(i), 8)!.readBigUInt64LE(0);
      assert.equal(count(0), 0n, 'connect_a was replaced');
      assert.ok(count(1) >= 1n, 'connect_b ran on connect()');
      assert.ok(count(2) >= 1n, 'sock_create ran');

      // Legacy multi-attach coexists with the link.
      bpf.progAttach(a.fd, cgFd, C.BPF_CGROUP_INET4_CONNECT, C.BPF_F_ALLOW_MULTI);
      assert.deepEqual(bpf.progQuery(cgFd, C.BPF_CGROUP_INET4_CONNECT).progIds.sort(), [aId, bId].sort());
      bpf.progDetach(a.fd, cgFd, C.BPF_CGROUP_INET4_CONNECT);
      assertBpfError(() => bpf.progDetach(a.fd, cgFd, C.BPF_CGROUP_INET4_CONNECT), 'ENOENT', 'prog_detach');

      bpf.linkDetach(link2);
      assert.deepEqual(bpf.progQuery(cgFd, C.BPF_CGROUP_INET4_CONNECT).progIds, []);
      fs.unlinkSync(linkPin);
      release(link2);
      bpf.linkDetach(sockLink);
      release(sockLink);
      assert.deepEqual(bpf.progQuery(cgFd, C.BPF_CGROUP_INET_SOCK_CREATE).progIds, []);
    } finally {
      o.close();
    }
    release(cgFd);
  });

  test('sk_msg on a sockhash: prog attach/query, socket cookie lookup, walk fallback', async () => {
    const o = bpf.BpfObject.open(objPath, { pinRoot: pinDir });
    const server = net.createServer();
    const sockets: net.Socket[] = [];
    try {
      o.load();
      const msg = o.program('msg_pass');
      const hash = o.map('sm_socks').fd;
      const counter = o.map('sm_counter').fd;
      bpf.mapUpdate(counter, u32(3), u64(0));
      const msgId = bpf.progInfo(msg.fd).id;

      // Programs must be on the map before sockets join it.
      bpf.progAttach(msg.fd, hash, C.BPF_SK_MSG_VERDICT);
      assert.deepEqual(bpf.progQuery(hash, C.BPF_SK_MSG_VERDICT).progIds, [msgId]);

      const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const port = (server.address() as net.AddressInfo).port;
      const client = net.connect(port, '127.0.0.1');
      sockets.push(client);
      await new Promise<void>((resolve, reject) => {
        client.once('connect', resolve);
        client.once('error', reject);
      });
      const peer = await accepted;
      sockets.push(peer);
      const fdOf = (s: net.Socket): number => (s as unknown as { _handle: { fd: number } })._handle.fd;

      bpf.mapUpdate(hash, u64(1), u64(fdOf(client)));
      const cookie = bpf.mapLookup(hash, u64(1), 8);
      assert.ok(cookie !== null && cookie.readBigUInt64LE(0) > 0n, 'lookup returns the socket cookie');
      const all = bpf.mapLookupBatch(hash, 8, 8);
      assert.deepEqual(all.keys, [u64(1)]);
      assert.deepEqual(all.values, [cookie]);

      const got = new Promise<string>((resolve) => peer.once('data', (d: Buffer) => resolve(d.toString())));
      client.write('ping');
      assert.equal(await got, 'ping');
      assert.ok(bpf.mapLookup(counter, u32(3), 8)!.readBigUInt64LE(0) >= 1n, 'sk_msg program ran');

      assert.equal(bpf.mapDelete(hash, u64(1)), true);
      bpf.progDetach(msg.fd, hash, C.BPF_SK_MSG_VERDICT);
      assert.deepEqual(bpf.progQuery(hash, C.BPF_SK_MSG_VERDICT).progIds, []);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      o.close();
    }
  });
});
