// Backend replacement under load: hundreds of replacements while a client connects in a loop.
// Backends rotate web1 -> web2 -> web3 -> web1 ..., so after replacement k returned the backend of
// k-1 is removed: a connect that started after that must reach the backend of k (or of k+1 if
// replacement k+1 had already begun), never the removed one, and no connect may fail (never zero
// backends, never a half-written table).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { desiredState, Reconciler } from '../mesh-agent/datapath/reconciler';
import { Model } from '../mesh-agent/model/types';
import { parseJsonLines, PODTOOL_PATH, Sandbox, ServerHandle } from '../sandbox/sandbox';
import { kernelSkip } from './kernel';

const VIP = '198.19.0.30';
const BACKENDS = ['web1', 'web2', 'web3'];

describe('[kernel] atomic backend replacement under load', kernelSkip(), () => {
  let sb: Sandbox;
  let dp: Datapath;
  const servers: ServerHandle[] = [];

  before(async () => {
    sb = await Sandbox.create({ nodes: [{ name: 'node1', pods: [{ name: 'client' }, ...BACKENDS.map((name) => ({ name }))] }] });
    for (const b of BACKENDS) servers.push(await sb.startServer(b, ['serve', '--port', '8080', '--mode', 'id', '--name', b]));
    dp = Datapath.install({ cgroupPath: sb.node('node1').cgroupPath, bpffsDir: path.join(sb.ensureBpffsDir(), 'swap') });
  });

  after(async () => {
    for (const s of servers) await s.stop();
    dp?.close();
    if (dp) Datapath.remove(dp.bpffsDir);
    await sb?.teardown();
  });

  test('no connect reaches a removed backend after the update returned, none fails', async () => {
    const rec = new Reconciler(dp);
    rec.adopt();
    const model = (backend: string): Model => ({
      services: [{ namespace: 'default', name: 'rot', vips: [VIP], ports: [{ port: 80, protocol: 'TCP', targetPort: 8080 }] }],
      endpoints: [{ service: 'default/rot', address: sb.pod(backend).ipv4, weight: 1, healthy: true }],
      workloads: [],
    });
    assert.deepEqual(rec.apply(desiredState(model(BACKENDS[0]), 'node1')).errors, []);
    const c0 = dp.counters();

    const child = sb.spawn('client', [process.execPath, PODTOOL_PATH, 'connect-loop', '--target', `${VIP}:80`, '--duration-ms', '4000'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let running = true;
    const firstLine = new Promise<void>((resolve) => child.stdout!.on('data', (d) => ((out += d), out.includes('\n') && resolve())));
    const exited = new Promise<void>((resolve) => child.once('exit', () => ((running = false), resolve())));
    await firstLine;

    // applies[k] = { start, end, backend } in process.hrtime (CLOCK_MONOTONIC, shared with the pod).
    const applies: Array<{ start: bigint; end: bigint; backend: string }> = [];
    for (let k = 1; running; k++) {
      const backend = BACKENDS[k % BACKENDS.length];
      const start = process.hrtime.bigint();
      const r = rec.apply(desiredState(model(backend), 'node1'));
      const end = process.hrtime.bigint();
      assert.deepEqual(r.errors, []);
      applies.push({ start, end, backend });
      await new Promise((res) => setImmediate(res)); // let the stdout reader run
    }
    await exited;

    const attempts = parseJsonLines(out).filter((l) => l.t0 !== undefined);
    assert.ok(applies.length > 50, `only ${applies.length} replacements`);
    assert.ok(attempts.length > 200, `only ${attempts.length} connects`);
    assert.deepEqual(attempts.filter((l) => l.err), [], 'a connect failed during replacement');
    let checked = 0;
    for (const a of attempts) {
      const t0 = BigInt(a.t0);
      let k = -1;
      for (let i = 0; i < applies.length && applies[i].end < t0; i++) k = i;
      if (k < 0) continue;
      const allowed = new Set([applies[k].backend]);
      if (k + 1 < applies.length && applies[k + 1].start < t0 + 1_000_000_000n) allowed.add(applies[k + 1].backend);
      // A connect that started after replacement k returned may still be in flight when k+1 runs,
      // so k+1's backend is fine too; k-1's (removed by k) never is.
      assert.ok(allowed.has(a.id), `connect at ${t0} reached ${a.id}; after replacement ${k} only ${[...allowed]} are valid`);
      checked++;
    }
    assert.ok(checked > 100);
    const c1 = dp.counters();
    assert.equal(c1.map_errors - c0.map_errors, 0n, 'a connect read a slot of a generation that was gone');
    assert.equal(c1.connect_no_backend - c0.connect_no_backend, 0n);
  });
});
