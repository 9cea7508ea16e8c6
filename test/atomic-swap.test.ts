// Backend replacement under load: over a hundred replacements while a client connects in a loop.
// Backends rotate web1 -> web2 -> web3 -> web1 ..., so replacement k removes the backend of k-1.
// A connect attempt that started (t0) after replacement k returned, and ended before the next
// attempt started, may only reach the backend of k or of a replacement that began during the
// attempt; never one removed before it started. No connect may fail (never zero backends, never a
// half-written table).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { desiredState, Reconciler } from '../mesh-agent/datapath/reconciler';
import { Model } from '../core/model';
import { parseJsonLines, PODTOOL_PATH, Sandbox, ServerHandle } from '../sandbox/sandbox';
import { scaled } from '../sandbox/time-scale';
import { kernelSkip, podNamespaces } from './kernel';

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
    // The client is not a declared workload: translate every socket of the meshed cgroup
    // (--translate-unenrolled), as a node without enrollment would.
    dp.setTranslateAll(true);
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
    assert.deepEqual(rec.apply(desiredState(model(BACKENDS[0]), 'node1', podNamespaces(sb))).errors, []);
    const c0 = dp.counters();

    const child = sb.spawn('client', [process.execPath, PODTOOL_PATH, 'connect-loop', '--target', `${VIP}:80`, '--duration-ms', String(scaled(4000))], {
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
      const r = rec.apply(desiredState(model(backend), 'node1', podNamespaces(sb)));
      const end = process.hrtime.bigint();
      assert.deepEqual(r.errors, []);
      applies.push({ start, end, backend });
      // ~20 ms apart (host time; an emulated kernel stretches an attempt, so the gap is scaled):
      // an attempt (about a millisecond) then rarely overlaps two replacements, so most attempts
      // have exactly one valid backend.
      await new Promise((res) => setTimeout(res, scaled(20)));
    }
    await exited;

    const attempts = parseJsonLines(out).filter((l) => l.t0 !== undefined);
    assert.ok(applies.length > 50, `only ${applies.length} replacements`);
    assert.ok(attempts.length > 200, `only ${attempts.length} connects`);
    assert.deepEqual(attempts.filter((l) => l.err), [], 'a connect failed during replacement');
    let checked = 0;
    let strict = 0;
    attempts.forEach((a, i) => {
      const t0 = BigInt(a.t0);
      // The attempt is over before the next one starts (the loop is sequential).
      const until = i + 1 < attempts.length ? BigInt(attempts[i + 1].t0) : 1n << 62n;
      let k = -1;
      for (let j = 0; j < applies.length && applies[j].end < t0; j++) k = j;
      if (k < 0) return;
      const allowed = new Set([applies[k].backend]);
      for (let j = k + 1; j < applies.length && applies[j].start < until; j++) allowed.add(applies[j].backend);
      assert.ok(
        allowed.has(a.id),
        `connect at ${t0} reached ${a.id}; replacement ${k} had returned, so only ${[...allowed].join(',')} are valid`,
      );
      checked++;
      if (allowed.size === 1) strict++;
    });
    // Most checks must be strict (one valid backend), or the test proves little.
    assert.ok(strict > checked / 2, `only ${strict} of ${checked} attempts had a single valid backend`);
    assert.ok(checked > 100, `only ${checked} attempts checked`);
    const c1 = dp.counters();
    assert.equal(c1.map_errors - c0.map_errors, 0n, 'a connect read a slot of a generation that was gone');
    assert.equal(c1.connect_no_backend - c0.connect_no_backend, 0n);
  });
});
