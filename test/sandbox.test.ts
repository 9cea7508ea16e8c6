// Sandbox + podtool: real traffic through the namespace sandbox, without any BPF.
// Needs root (netns, cgroups); skipped otherwise.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Sandbox, ServerHandle, findCgroup2Mount, ensureBpffs, hostPort } from '../sandbox/sandbox';

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

function sh(argv: string[]): string {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8' });
  assert.equal(r.status, 0, `${argv.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** What the root netns looks like (routes and interface names): must not change. */
function rootSnapshot(): { v4: string; v6: string; links: string } {
  return {
    v4: sh(['ip', 'route', 'show']),
    v6: sh(['ip', '-6', 'route', 'show']),
    links: sh(['ip', '-o', 'link', 'show'])
      .split('\n')
      .map((l) => l.split(':')[1]?.trim())
      .filter(Boolean)
      .sort()
      .join(','),
  };
}

function netnsList(): string[] {
  try {
    return fs.readdirSync('/var/run/netns');
  } catch {
    return [];
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

if (!isRoot) {
  test('sandbox (skipped: needs root for network namespaces and cgroups)', { skip: 'not running as root' }, () => undefined);
} else {
  const rootBefore = rootSnapshot();
  let sb: Sandbox | undefined;
  const servers: ServerHandle[] = [];
  const S = (): Sandbox => {
    assert.ok(sb, 'sandbox was not created');
    return sb;
  };

  before(async () => {
    sb = await Sandbox.create({
      nodes: [
        {
          name: 'node1',
          pods: [
            { name: 'a', ipv6: true },
            { name: 'b', ipv6: true },
            { name: 'c', ipv6: true, meshed: false },
          ],
        },
        { name: 'node2', pods: [{ name: 'x', ipv6: true }] },
      ],
    });
    const start = async (pod: string, args: string[]) => {
      const h = await sb!.startServer(pod, args);
      servers.push(h);
      return h;
    };
    await Promise.all([
      start('b', ['serve', '--port', '8080', '--name', 'b', '--mode', 'id']),
      start('b', ['serve', '--port', '8081', '--name', 'b', '--mode', 'echo']),
      start('b', ['serve', '--port', '8082', '--name', 'b', '--mode', 'sink']),
      start('b', ['serve-udp', '--port', '9000', '--name', 'b']),
      start('x', ['serve', '--port', '8080', '--name', 'x', '--mode', 'id']),
      start('x', ['serve', '--port', '8081', '--name', 'x', '--mode', 'echo']),
    ]);
  });

  after(() => {
    // Safety net if a test failed before the teardown test ran.
    sb?.teardownSync();
  });

  test('layout: names, addresses, cgroups', () => {
    const s = S();
    const a = s.pod('a');
    const c = s.pod('c');
    const n1 = s.node('node1');
    assert.equal(a.ipv4, '198.18.1.10');
    assert.equal(a.ipv6, 'fd53:6f63:6b00:1::10');
    assert.equal(s.pod('b').ipv4, '198.18.1.11');
    assert.equal(s.pod('x').ipv4, '198.18.2.10');
    assert.equal(n1.bridgeIpv4, '198.18.1.1');
    assert.equal(n1.subnet6, 'fd53:6f63:6b00:1::/64');
    assert.ok(a.netns.startsWith(`smsbx-${process.pid}-`));
    assert.ok(netnsList().includes(a.netns));
    assert.ok(netnsList().includes(n1.netns));
    assert.equal(s.cgroupRoot, path.join(findCgroup2Mount(), `smsbx-${process.pid}`));
    assert.ok(a.cgroupPath.startsWith(n1.cgroupPath + '/'), 'meshed pod is below node.cgroupPath');
    assert.ok(!c.cgroupPath.startsWith(n1.cgroupPath + '/'), 'unmeshed pod is not below node.cgroupPath');
    assert.equal(c.meshed, false);
    for (const p of [a.cgroupPath, c.cgroupPath, n1.cgroupPath]) assert.ok(fs.existsSync(path.join(p, 'cgroup.procs')), p);
    assert.equal(s.bpffsDir, `/sys/fs/bpf/smsbx-${process.pid}`);
  });

  test('pod processes run in the pod netns and the pod cgroup', async () => {
    const s = S();
    const cg2 = findCgroup2Mount();
    for (const name of ['a', 'c']) {
      const p = s.pod(name);
      const r = await s.exec(name, ['cat', '/proc/self/cgroup']);
      assert.equal(r.code, 0, r.stderr);
      const v2 = r.stdout.split('\n').find((l) => l.startsWith('0::'));
      assert.equal(v2, `0::/${path.relative(cg2, p.cgroupPath)}`);
      const addr = await s.exec(name, ['ip', '-o', 'addr', 'show', 'dev', 'eth0']);
      assert.match(addr.stdout, new RegExp(`inet ${p.ipv4.replace(/\./g, '\\.')}/24`));
    }
    // The long-running server really lives in pod b's cgroup.
    const procs = fs.readFileSync(path.join(s.pod('b').cgroupPath, 'cgroup.procs'), 'utf8').split('\n').map(Number);
    // Servers start concurrently, so their order in `servers` varies: pick one of pod b's.
    const pid = servers.find((h) => h.ready.name === 'b')!.ready.pid;
    let own = '';
    try {
      own = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8');
    } catch (e) {
      own = String(e);
    }
    assert.ok(procs.includes(pid), `server pid ${pid} not in pod-b cgroup.procs ${JSON.stringify(procs)}; /proc/${pid}/cgroup: ${own}`);
    // Node namespace has no default route: nothing can leave the sandbox.
    const r4 = await s.execNode('node1', ['ip', 'route', 'show', 'default']);
    const r6 = await s.execNode('node1', ['ip', '-6', 'route', 'show', 'default']);
    assert.equal(r4.stdout.trim() + r6.stdout.trim(), '');
  });

  test('ids a -> b over IPv4 and IPv6 (same node)', async () => {
    const s = S();
    const b = s.pod('b');
    for (const addr of [b.ipv4, b.ipv6!]) {
      const r = await s.podtool('a', ['ids', '--target', hostPort(addr, 8080), '--count', '10', '--concurrency', '3']);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(r.last.ids, { b: 10 });
      assert.deepEqual(r.last.errors, {});
      assert.deepEqual(r.last.peer, { address: addr, port: 8080 });
    }
  });

  test('transfer a -> b: 1 MiB echo, and 1-byte writes into a sink', async () => {
    const s = S();
    const b = s.pod('b');
    const echo = await s.podtool('a', ['transfer', '--target', hostPort(b.ipv4, 8081), '--bytes', String(1 << 20), '--mode', 'echo']);
    assert.equal(echo.code, 0, echo.stderr);
    assert.equal(echo.last.ok, true, JSON.stringify(echo.last));
    assert.equal(echo.last.mismatches, 0);
    const sink = await s.podtool('a', ['transfer', '--target', hostPort(b.ipv6!, 8082), '--bytes', '20000', '--chunk', '1', '--conns', '2', '--mode', 'sink']);
    assert.equal(sink.last.ok, true, JSON.stringify(sink.last));
  });

  test('cross-node a (node1) -> x (node2)', async () => {
    const s = S();
    const x = s.pod('x');
    for (const addr of [x.ipv4, x.ipv6!]) {
      const r = await s.podtool('a', ['ids', '--target', hostPort(addr, 8080), '--count', '5']);
      assert.deepEqual(r.last.ids, { x: 5 }, JSON.stringify(r.last));
      assert.deepEqual(r.last.peer, { address: addr, port: 8080 });
    }
    const t = await s.podtool('a', ['transfer', '--target', hostPort(x.ipv4, 8081), '--bytes', String(256 << 10), '--conns', '2']);
    assert.equal(t.last.ok, true, JSON.stringify(t.last));
  });

  test('udp a -> b over IPv4 and IPv6', async () => {
    const s = S();
    const b = s.pod('b');
    for (const addr of [b.ipv4, b.ipv6!]) {
      const r = await s.podtool('a', ['udp', '--target', hostPort(addr, 9000), '--payload', 'hi', '--count', '2']);
      assert.equal(r.code, 0, r.stderr);
      const replies = r.lines.filter((l) => l.seq !== undefined);
      assert.equal(replies.length, 2);
      for (const l of replies) {
        assert.equal(l.ok, true, JSON.stringify(l));
        assert.equal(l.reply, 'b:hi');
        assert.deepEqual(l.from, { address: addr, port: 9000 });
      }
    }
  });

  test('connect to a closed port fails fast with a real errno; exec timeout kills', async () => {
    const s = S();
    const r = await s.podtool('a', ['connect', '--target', hostPort(s.pod('b').ipv4, 1)]);
    assert.equal(r.last.ok, false);
    assert.equal(r.last.err, 'ECONNREFUSED');
    assert.ok(r.last.ms < 1000);
    const t = await s.exec('a', ['sleep', '30'], { timeoutMs: 300 });
    assert.equal(t.timedOut, true);
    assert.equal(t.signal, 'SIGKILL');
  });

  test('teardown removes everything and leaves the root netns untouched', async () => {
    const s = S();
    for (const h of servers) await h.stop();
    // Something still running in a pod must be killed by teardown.
    const stray = s.spawn('x', ['sleep', '300'], { stdio: 'ignore' });
    const strayExit = new Promise((r) => stray.once('exit', r));
    await new Promise((r) => setTimeout(r, 100));
    await s.teardown();
    await s.teardown(); // idempotent
    await strayExit;
    assert.deepEqual(netnsList().filter((n) => n.startsWith(s.netnsPrefix)), []);
    assert.equal(fs.existsSync(s.cgroupRoot), false);
    assert.equal(fs.existsSync(s.bpffsDir), false);
    assert.deepEqual(rootSnapshot(), rootBefore);
  });

  test('cleanupStale removes leftovers of dead pids only', async () => {
    const prefix = 'smsbxt';
    let dead = 999999;
    while (pidAlive(dead)) dead++;
    const cg2 = findCgroup2Mount();
    const staleNs = `${prefix}-${dead}-node1`;
    const liveNs = `${prefix}-${process.pid}-keep`;
    const staleCg = path.join(cg2, `${prefix}-${dead}`);
    const bpfDir = path.join(ensureBpffs(), `${prefix}-${dead}`);
    try {
      sh(['ip', 'netns', 'add', staleNs]);
      sh(['ip', 'netns', 'add', liveNs]);
      fs.mkdirSync(path.join(staleCg, 'node1', 'pod-a'), { recursive: true });
      fs.mkdirSync(path.join(bpfDir, 'sub'), { recursive: true });
      // A process left behind in the stale cgroup.
      const leftover = spawn('/bin/sh', ['-c', 'echo $$ > "$1/cgroup.procs" && exec sleep 300', 'sh', path.join(staleCg, 'node1', 'pod-a')], { stdio: 'ignore' });
      const leftoverExit = new Promise((r) => leftover.once('exit', r));
      await new Promise((r) => setTimeout(r, 100));
      const removed = Sandbox.cleanupStale(prefix);
      await leftoverExit;
      assert.ok(removed.length >= 3, JSON.stringify(removed));
      assert.equal(netnsList().includes(staleNs), false, 'stale netns removed');
      assert.equal(netnsList().includes(liveNs), true, 'netns of a live pid kept');
      assert.equal(fs.existsSync(staleCg), false, 'stale cgroup removed');
      assert.equal(fs.existsSync(bpfDir), false, 'stale bpffs dir removed');
    } finally {
      spawnSync('ip', ['netns', 'del', liveNs]);
      spawnSync('ip', ['netns', 'del', staleNs]);
      fs.rmSync(bpfDir, { recursive: true, force: true });
    }
  });
}
