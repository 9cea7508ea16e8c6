// TCP Fast Open: a server socket made from a SYN that carried data must never take redirected
// bytes, or they would overtake the SYN's payload, still in its TCP receive queue. The kernel runs
// the passive-established callback for such a child (tcp_fastopen_create_child) before that
// payload is queued and while the child is still in SYN_RECV, so the datapath keeps every child
// in SYN_RECV out of the sockhash; its connection stays on TCP, byte for byte.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { desiredState, Reconciler } from '../mesh-agent/datapath/reconciler';
import type { Model } from '../core/model';
import { Sandbox, ServerHandle } from '../sandbox/sandbox';
import { waitUntil } from '../sandbox/time-scale';
import { kernelSkip, podNamespaces } from './kernel';

const TFO = path.resolve(__dirname, '..', '..', 'build', 'tools', 'tfo');

describe('[kernel] TCP Fast Open stays on TCP', kernelSkip(), () => {
  let sb: Sandbox;
  let dp: Datapath;
  let server: ChildProcess | undefined;
  const servers: ServerHandle[] = [];

  before(async () => {
    assert.ok(fs.existsSync(TFO), `${TFO} not built (scripts/build.sh)`);
    sb = await Sandbox.create({ nodes: [{ name: 'node1', pods: [{ name: 'client' }, { name: 'server' }] }] });
    // Fast Open on both ends, in the pods' own namespaces (client and server bits: 3).
    for (const pod of ['client', 'server']) {
      const r = await sb.exec(pod, ['sysctl', '-qw', 'net.ipv4.tcp_fastopen=3']);
      assert.equal(r.code, 0, r.stderr);
    }
    dp = Datapath.install({ cgroupPath: sb.node('node1').cgroupPath, bpffsDir: path.join(sb.ensureBpffsDir(), 'tfo') });
    const w = (name: string) => ({ namespace: 'default', name, serviceAccount: name, node: 'node1', ips: [sb.pod(name).ipv4] });
    const model: Model = { services: [], endpoints: [], workloads: [w('client'), w('server')] };
    const rec = new Reconciler(dp);
    rec.adopt();
    assert.deepEqual(rec.apply(desiredState(model, 'node1', podNamespaces(sb))).errors, []);
    servers.push(await sb.startServer('server', ['serve', '--port', '7071', '--mode', 'echo', '--name', 'server']));
    server = sb.spawn('server', [TFO, 'serve', '--port', '7070'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    server.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    assert.ok(await waitUntil(() => out.includes('"listening"'), 10_000, 20), 'tfo server did not start');
  });

  after(async () => {
    server?.kill('SIGKILL');
    for (const h of servers) await h.stop().catch(() => undefined);
    dp?.close();
    if (dp) Datapath.remove(dp.bpffsDir);
    await sb?.teardown();
  });

  test('connections whose SYN carries data are byte-identical and their server side is not redirected', async () => {
    const c0 = dp.counters();
    const r = await sb.exec('client', [TFO, 'client', '--target', sb.pod('server').ipv4, '--port', '7070', '--count', '30']);
    assert.equal(r.code, 0, r.stderr);
    const got = JSON.parse(r.stdout.trim()) as { connections: number; identical: number; synDataAcked: number };
    const c1 = dp.counters();
    // The first connection fetches the cookie; the others carry their first 64 bytes in the SYN.
    assert.ok(got.synDataAcked >= 25, `Fast Open was not used: ${JSON.stringify(got)}`);
    assert.equal(got.identical, 30, JSON.stringify(got) + r.stderr);
    // Each Fast Open child is kept off the sockhash (counted as a fallback); nothing was redirected.
    assert.ok(c1.msg_fallback - c0.msg_fallback >= BigInt(got.synDataAcked), `msg_fallback +${c1.msg_fallback - c0.msg_fallback}`);
    assert.equal(c1.msg_redirected - c0.msg_redirected, 0n);
  });

  test('control: between the same pods, with Fast Open on, a connection without data in its SYN is redirected', async () => {
    const c0 = dp.counters();
    const r = await sb.podtool('client', ['transfer', '--target', `${sb.pod('server').ipv4}:7071`, '--mode', 'echo', '--bytes', '65536']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.last.mismatches, 0, JSON.stringify(r.last));
    const c1 = dp.counters();
    assert.ok(c1.sock_local_pair - c0.sock_local_pair >= 2n, 'both ends entered the sockhash');
    assert.ok(c1.msg_redirected - c0.msg_redirected > 0n, 'nothing was redirected');
  });
});
