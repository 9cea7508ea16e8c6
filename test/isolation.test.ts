// Isolation between pods of one node, and upgrades under traffic:
//   - a pod that makes its own network namespace (user namespace: no privilege needed) and puts a
//     victim's addresses on it cannot pre-create sockets that take the victim's place in the
//     sockhash: keys carry each socket's netns cookie and a pair is local only between the
//     namespaces that own its two addresses;
//   - one pod's unconnected-UDP churn cannot evict another pod's translations (per-pod revnat
//     tables), and a connect's translation lives with its socket (getpeername keeps the VIP);
//   - a process in the meshed cgroup that is no enrolled workload is not translated, unless the
//     node says so (--translate-unenrolled);
//   - a datapath restarted with doubled capacities carries its tables over, and 100 streaming
//     connections paired before it keep moving, byte for byte.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import * as bpf from '../native';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { desiredState, Reconciler, type DesiredState } from '../mesh-agent/datapath/reconciler';
import type { Model } from '../core/model';
import { readSockets } from '../cli/dump';
import { Sandbox, ServerHandle } from '../sandbox/sandbox';
import { waitUntil } from '../sandbox/time-scale';
import { kernelSkip, podNamespaces } from './kernel';

const VIP = '198.19.0.80';
const UDP_VIP = '198.19.0.81';
const PORT = 7000;

// A child that prints JSON lines; `lines` fills as they come, `send` writes a line to its stdin.
interface Proc {
  child: ChildProcess;
  lines: any[];
  stderr: () => string;
  send: (l: string) => void;
  waitFor: (pred: (o: any) => boolean, ms?: number) => Promise<any>;
}
function proc(child: ChildProcess): Proc {
  const lines: any[] = [];
  let buf = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const l = buf.slice(0, i);
      buf = buf.slice(i + 1);
      try {
        lines.push(JSON.parse(l));
      } catch {
        err += `(not JSON) ${l}\n`;
      }
    }
  });
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  return {
    child,
    lines,
    stderr: () => err,
    send: (l) => child.stdin!.write(l + '\n'),
    waitFor: async (pred, ms = 15_000) => {
      assert.ok(await waitUntil(() => lines.some(pred), ms, 20), `no such line; got ${JSON.stringify(lines)} ${err}`);
      return lines.find(pred);
    },
  };
}

// The attacker: in a netns of its own, with the victim's addresses on lo, a listener on the
// server's address and a connection from the client's address and port to it: both ends of the
// tuple the victim will use. Counts every byte its sockets receive; prints it when stdin ends.
const ATTACKER = `
const net = require('net');
const [sip, port, cip, sport] = process.argv.slice(1);
let got = 0;
const keep = [];
const count = (s) => { keep.push(s); s.on('data', (d) => (got += d.length)); s.on('error', () => {}); };
const srv = net.createServer(count);
srv.listen(+port, sip, () => {
  const c = net.connect({ host: sip, port: +port, localAddress: cip, localPort: +sport }, () => {
    count(c);
    console.log(JSON.stringify({ event: 'ready', pid: process.pid }));
  });
  c.on('error', (e) => console.log(JSON.stringify({ error: e.code })));
});
process.stdin.on('data', () => {}).on('end', () => { console.log(JSON.stringify({ got })); process.exit(0); });
`;

// The victim: from a fixed source port to the VIP, 64 KiB out and echoed back; reports whether
// the echo is identical and what getpeername() says.
const VICTIM = `
const net = require('net');
const crypto = require('crypto');
const [vip, port, cip, sport] = process.argv.slice(1);
const data = crypto.randomBytes(65536);
const back = [];
let n = 0;
const s = net.connect({ host: vip, port: +port, localAddress: cip, localPort: +sport }, () => {
  const peer = {};
  s._handle.getpeername(peer);
  s.on('data', (d) => {
    back.push(d);
    n += d.length;
    if (n >= data.length) {
      console.log(JSON.stringify({ identical: Buffer.concat(back).equals(data), peer: peer.address, local: s.localAddress + ':' + s.localPort }));
      s.destroy();
    }
  });
  s.write(data);
});
s.on('error', (e) => { console.log(JSON.stringify({ error: e.code })); process.exit(1); });
`;

// Streams: C connections to the target, each sending 4 KiB and checking the echo, round after
// round. On a stdin line it prints the fewest rounds any connection has done and each
// connection's peer address as getpeername() returns it now; when stdin ends it stops and reports.
const STREAM = `
const net = require('net');
const [host, port, conns] = process.argv.slice(1);
const chunk = Buffer.alloc(4096);
const state = [];
let mismatches = 0, errors = 0;
for (let i = 0; i < +conns; i++) {
  const st = { rounds: 0, s: null, want: null, got: [] , n: 0 };
  state.push(st);
  const s = net.connect({ host, port: +port }, () => round());
  st.s = s;
  const round = () => {
    st.want = Buffer.from(chunk.fill((i + st.rounds) & 255));
    st.got = []; st.n = 0;
    s.write(st.want);
  };
  s.on('data', (d) => {
    st.got.push(d); st.n += d.length;
    if (st.n < st.want.length) return;
    if (!Buffer.concat(st.got).equals(st.want)) mismatches++;
    st.rounds++;
    if (!stopping) round(); else s.end();
  });
  s.on('error', () => errors++);
}
let stopping = false;
const peers = () => state.map((st) => { const p = {}; st.s._handle && st.s._handle.getpeername(p); return p.address; });
process.stdin.setEncoding('utf8').on('data', () => {
  console.log(JSON.stringify({ event: 'progress', minRounds: Math.min(...state.map((s) => s.rounds)), peers: [...new Set(peers())], errors, mismatches }));
}).on('end', () => {
  stopping = true;
  setTimeout(() => {
    console.log(JSON.stringify({ event: 'done', minRounds: Math.min(...state.map((s) => s.rounds)), errors, mismatches }));
    process.exit(0);
  }, 500);
});
`;

// A UDP server that answers only when told: every datagram whose payload is 'victim' is answered
// with 'pong' once a line arrives on stdin (so that the answer comes after the churn).
const UDP_SERVER = `
const dgram = require('dgram');
const s = dgram.createSocket('udp4');
const waiting = [];
s.on('message', (m, r) => { if (m.toString() === 'victim') { waiting.push(r); console.log(JSON.stringify({ event: 'got', from: r.address })); } });
s.bind(+process.argv[1], () => console.log(JSON.stringify({ event: 'listening' })));
process.stdin.setEncoding('utf8').on('data', () => { for (const r of waiting.splice(0)) s.send('pong', r.port, r.address); });
`;

// An unconnected UDP socket: one datagram to the VIP, then the source of the answer.
const UDP_CLIENT = `
const dgram = require('dgram');
const [vip, port] = process.argv.slice(1);
const s = dgram.createSocket('udp4');
s.on('message', (m, r) => { console.log(JSON.stringify({ from: r.address, port: r.port, data: m.toString() })); process.exit(0); });
s.send('victim', +port, vip, () => console.log(JSON.stringify({ event: 'sent' })));
`;

// Unconnected UDP from N fresh sockets to the VIP: N translations for this pod's table to hold.
const UDP_CHURN = `
const dgram = require('dgram');
const [vip, port, n] = process.argv.slice(1);
let left = +n;
const one = () => {
  if (left-- === 0) { console.log(JSON.stringify({ done: +n })); process.exit(0); }
  const s = dgram.createSocket('udp4');
  s.send('churn', +port, vip, () => { s.close(); setImmediate(one); });
};
one();
`;

describe('[kernel] isolation between pods, upgrades under traffic', kernelSkip(), () => {
  let sb: Sandbox;
  let dp: Datapath;
  let desired: DesiredState;
  let udpServer: Proc;
  const servers: ServerHandle[] = [];
  const procs: Proc[] = [];
  const dps: Datapath[] = [];

  const ip = (p: string) => sb.pod(p).ipv4;
  const start = (pod: string, code: string, args: string[], wrap: string[] = []): Proc => {
    const p = proc(sb.spawn(pod, [...wrap, process.execPath, '-e', code, ...args], { stdio: ['pipe', 'pipe', 'pipe'] }));
    procs.push(p);
    return p;
  };
  // What a STREAM process says about its connections now.
  const progress = async (p: Proc) => {
    p.lines.length = 0;
    p.send('progress');
    return p.waitFor((o) => o.event === 'progress');
  };
  const run = async (pod: string, code: string, args: string[]): Promise<any> => {
    const p = start(pod, code, args);
    const code_ = await new Promise<number | null>((r) => p.child.once('exit', r));
    assert.equal(code_, 0, JSON.stringify(p.lines) + p.stderr());
    return p.lines[p.lines.length - 1];
  };

  before(async () => {
    sb = await Sandbox.create({
      nodes: [{ name: 'node1', pods: [{ name: 'client' }, { name: 'server' }, { name: 'attacker' }, { name: 'plain' }] }],
    });
    dp = Datapath.install({ cgroupPath: sb.node('node1').cgroupPath, bpffsDir: path.join(sb.ensureBpffsDir(), 'iso'),
      // The table shared by pods without one of their own, small: one shared LRU would lose the
      // victim's entry to the churn below.
      mapSizes: { sm_revnat: 256 },
    });
    dps.push(dp);
    const w = (name: string) => ({ namespace: 'default', name, serviceAccount: name, node: 'node1', ips: [ip(name)] });
    // 'plain' is in the meshed cgroup but no workload of the model: not enrolled.
    const model: Model = {
      services: [
        { namespace: 'default', name: 'echo', vips: [VIP], ports: [{ port: PORT, protocol: 'TCP', targetPort: PORT }] },
        { namespace: 'default', name: 'dns', vips: [UDP_VIP], ports: [{ port: 53, protocol: 'UDP', targetPort: 5353 }] },
      ],
      endpoints: [
        { service: 'default/echo', address: ip('server'), weight: 1, healthy: true },
        { service: 'default/dns', address: ip('server'), weight: 1, healthy: true },
      ],
      workloads: [w('client'), w('server'), w('attacker')],
    };
    desired = desiredState(model, 'node1', podNamespaces(sb));
    const rec = new Reconciler(dp);
    rec.adopt();
    assert.deepEqual(rec.apply(desired).errors, []);
    servers.push(await sb.startServer('server', ['serve', '--port', String(PORT), '--mode', 'echo', '--name', 'server']));
    udpServer = start('server', UDP_SERVER, ['5353']);
    await udpServer.waitFor((o) => o.event === 'listening');
  });

  after(async () => {
    for (const p of procs) if (p.child.exitCode === null && p.child.pid) try { process.kill(-p.child.pid, 'SIGKILL'); } catch { /* gone */ }
    for (const h of servers) await h.stop().catch(() => undefined);
    for (const d of dps) d.close();
    if (dp) Datapath.remove(dp.bpffsDir);
    await sb?.teardown();
  });

  test('a pod with its own netns holding the victim\'s addresses and tuple gets none of its bytes', async () => {
    const sport = '41234';
    // unshare -Urn: a user namespace (no privilege needed) owning a new netns, where the attacker
    // is root and may put any address on its loopback.
    const setup = `ip link set lo up && ip addr add ${ip('client')}/32 dev lo && ip addr add ${ip('server')}/32 dev lo && exec "$@"`;
    const attacker = start('attacker', ATTACKER, [ip('server'), String(PORT), ip('client'), sport], ['unshare', '-Urn', 'sh', '-c', setup, 'sh']);
    const ready = await attacker.waitFor((o) => o.event === 'ready' || o.error);
    assert.equal(ready.event, 'ready', JSON.stringify(ready) + attacker.stderr());
    const attackerNetns = bpf.netnsInfo(`/proc/${ready.pid}/ns/net`).cookie;
    const victimNetns = bpf.netnsInfo(`/proc/${servers[0].child.pid}/ns/net`).cookie; // not the attacker's
    assert.notEqual(attackerNetns, victimNetns);
    // The attacker's two sockets made a same-node pair with the victim's exact tuple: none of it
    // is in the sockhash (its addresses are not its own namespace's in the node's registry).
    assert.deepEqual(readSockets(dp).filter((s) => s.netns === attackerNetns.toString()), []);

    const c0 = dp.counters();
    const v = await run('client', VICTIM, [VIP, String(PORT), ip('client'), sport]);
    const c1 = dp.counters();
    assert.deepEqual(v, { identical: true, peer: VIP, local: `${ip('client')}:${sport}` });
    // The victim's own pair was made and redirected: the attack did not simply turn the fast path off.
    assert.ok(c1.sock_local_pair - c0.sock_local_pair >= 2n, `sock_local_pair +${c1.sock_local_pair - c0.sock_local_pair}`);
    assert.ok(c1.msg_redirected - c0.msg_redirected > 0n, 'nothing was redirected');
    attacker.child.stdin!.end();
    const report = await attacker.waitFor((o) => 'got' in o);
    assert.equal(report.got, 0, 'the attacker received bytes');
  });

  test("one pod's unconnected-UDP churn evicts none of another pod's translations", async () => {
    const stream = start('client', STREAM, [VIP, String(PORT), '20']);
    assert.ok(await waitUntil(async () => (await progress(stream)).minRounds > 0, 20_000, 100), 'the connections did not start');
    const client = start('client', UDP_CLIENT, [UDP_VIP, '53']);
    await client.waitFor((o) => o.event === 'sent');
    await udpServer.waitFor((o) => o.event === 'got' && o.from === ip('client'));

    // 3000 fresh sockets from another (enrolled) pod: more than its own table holds, and ten times
    // what the shared table holds.
    const churn = await run('attacker', UDP_CHURN, [UDP_VIP, '53', '3000']);
    assert.deepEqual(churn, { done: 3000 });

    udpServer.send('reply');
    const answer = await client.waitFor((o) => 'from' in o);
    assert.deepEqual(answer, { from: UDP_VIP, port: 53, data: 'pong' }, 'the reply came back unreversed');
    const p = await progress(stream);
    assert.deepEqual(p.peers, [VIP], 'getpeername() of an older connection shows a backend');
    stream.child.stdin!.end();
    const done = await stream.waitFor((o) => o.event === 'done');
    assert.deepEqual([done.errors, done.mismatches], [0, 0]);
  });

  test('a process in the meshed cgroup that is no workload is not translated, unless the node translates every socket', async () => {
    const attempt = async () => {
      const c0 = dp.counters();
      const r = (await sb.podtool('plain', ['connect', '--target', `${VIP}:${PORT}`, '--connect-timeout-ms', '1500'])).last;
      return { r, translated: dp.counters().connect_translated - c0.connect_translated };
    };
    const off = await attempt();
    assert.equal(off.translated, 0n);
    assert.equal(off.r.ok, false, JSON.stringify(off.r));
    dp.setTranslateAll(true);
    try {
      const on = await attempt();
      assert.equal(on.translated, 1n);
      assert.equal(on.r.ok, true, JSON.stringify(on.r));
    } finally {
      dp.setTranslateAll(false);
    }
    // An enrolled workload in the same cgroup is translated either way.
    const c0 = dp.counters();
    const w = (await sb.podtool('client', ['connect', '--target', `${VIP}:${PORT}`])).last;
    assert.equal(w.ok, true, JSON.stringify(w));
    assert.equal(dp.counters().connect_translated - c0.connect_translated, 1n);
  });

  test('a restart with doubled capacities: tables carried over, 100 streaming connections unbroken, the old sockhash freed with its last socket', async () => {
    const stream = start('client', STREAM, [VIP, String(PORT), '100']);
    assert.ok(await waitUntil(async () => (await progress(stream)).minRounds > 0, 20_000, 100), 'the connections did not start');
    const paired = readSockets(dp).length;
    assert.ok(paired >= 200, `only ${paired} sockets in the sockhash`);

    const sizes = { sm_sockhash: dp.maps.sm_sockhash.maxEntries * 2, sm_services: dp.maps.sm_services.maxEntries * 2, sm_backends: dp.maps.sm_backends.maxEntries * 2, sm_revnat: 512 };
    dp.close();
    dps.splice(dps.indexOf(dp), 1);
    const before = (await progress(stream)).minRounds;
    const dp2 = Datapath.install({ cgroupPath: sb.node('node1').cgroupPath, bpffsDir: dp.bpffsDir, mapSizes: sizes });
    dps.push(dp2);
    dp = dp2;
    const byName = new Map(dp2.migrations.map((m) => [m.name, m]));
    assert.equal(byName.get('sm_sockhash')?.outcome, 'kept', JSON.stringify(dp2.migrations));
    assert.ok(byName.get('sm_sockhash')!.entries >= paired - 2, JSON.stringify(byName.get('sm_sockhash')));
    for (const m of ['sm_services', 'sm_backends'] as const) {
      assert.equal(byName.get(m)?.outcome, 'copied', JSON.stringify(byName.get(m)));
      assert.ok(byName.get(m)!.entries > 0);
      assert.equal(dp2.maps[m].maxEntries, sizes[m]);
    }
    assert.equal(dp2.retiredInUse.length, 1);
    // Translation works at once from the copied tables, before the agent's first apply.
    const early = (await sb.podtool('client', ['connect', '--target', `${VIP}:${PORT}`])).last;
    assert.equal(early.ok, true, JSON.stringify(early));
    const rec = new Reconciler(dp2);
    rec.adopt();
    assert.deepEqual(rec.apply(desired).errors, []);

    // Every old connection kept moving after the restart.
    assert.ok(await waitUntil(async () => (await progress(stream)).minRounds > before + 2, 20_000, 100), 'a connection stalled');
    // New pairs go into the new sockhash and are redirected there.
    const c0 = dp2.counters();
    const t = await sb.podtool('client', ['transfer', '--target', `${VIP}:${PORT}`, '--mode', 'echo', '--bytes', '65536']);
    assert.equal(t.last.mismatches, 0, JSON.stringify(t.last));
    const c1 = dp2.counters();
    assert.ok(c1.sock_local_pair - c0.sock_local_pair >= 2n);
    assert.ok(c1.msg_redirected - c0.msg_redirected > 0n);

    stream.child.stdin!.end();
    const done = await stream.waitFor((o) => o.event === 'done');
    assert.deepEqual([done.errors, done.mismatches], [0, 0]);
    if (stream.child.exitCode === null && stream.child.signalCode === null) await new Promise((r) => stream.child.once('exit', r));
    let removed: string[] = [];
    assert.ok(await waitUntil(() => (removed = dp2.collectRetired()).length > 0, 10_000, 100), JSON.stringify(dp2.retiredInUse));
    assert.ok(removed[0].includes('sm_sockhash'), removed.join());
    assert.deepEqual(dp2.retiredInUse, []);
  });
});
