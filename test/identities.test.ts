// Identity numbers: allocated once per SPIFFE id and kept in the pinned map sm_identities. Two names
// whose hashes collide get different numbers, a number never moves when another name comes or goes
// or when the agent restarts, and a number still referred to by the kernel is never given to
// another name. The kernel judges the two colliding names apart.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { fnv1a31, identityTable, spiffeId } from '../core/identity';
import type { Model, Workload } from '../core/model';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { IdentityAllocator } from '../mesh-agent/datapath/identities';
import { desiredState, Reconciler } from '../mesh-agent/datapath/reconciler';
import { Sandbox, ServerHandle } from '../sandbox/sandbox';
import { kernelSkip, podNamespaces } from './kernel';

/** Two service accounts of namespace `ns` whose SPIFFE ids have the same 31-bit FNV hash. */
function collidingAccounts(ns: string): [string, string] {
  const seen = new Map<number, string>();
  for (let i = 0; i < 2_000_000; i++) {
    const sa = `sa-${i.toString(36)}`;
    const h = fnv1a31(spiffeId({ namespace: ns, serviceAccount: sa })) || 1;
    const other = seen.get(h);
    if (other !== undefined) return [other, sa].sort() as [string, string];
    seen.set(h, sa);
  }
  throw new Error('no collision found');
}

describe('[kernel] identity numbers: pinned, collision-free, stable', kernelSkip(), () => {
  let sb: Sandbox;
  const dps: Datapath[] = [];
  const opened: Datapath[] = [];
  const reopen = (dp: Datapath) => {
    const d = Datapath.openPinned(dp.bpffsDir);
    opened.push(d);
    return d;
  };
  const servers: ServerHandle[] = [];
  const [saA, saB] = collidingAccounts('default');
  const A = spiffeId({ namespace: 'default', serviceAccount: saA });
  const B = spiffeId({ namespace: 'default', serviceAccount: saB });
  // One datapath at a time on the node's cgroup: programs of several would all judge a connect.
  const install = (name: string, mapSizes = {}) => {
    for (const old of dps.splice(0)) {
      old.close();
      Datapath.remove(old.bpffsDir);
    }
    const dp = Datapath.install({ cgroupPath: sb.node('node1').cgroupPath, bpffsDir: path.join(sb.ensureBpffsDir(), name), mapSizes });
    dps.push(dp);
    return dp;
  };

  before(async () => {
    sb = await Sandbox.create({ nodes: [{ name: 'node1', pods: [{ name: 'a' }, { name: 'b' }, { name: 'web' }] }] });
    servers.push(await sb.startServer('web', ['serve', '--port', '8080', '--mode', 'id', '--name', 'web']));
  });

  after(async () => {
    for (const s of servers) await s.stop();
    for (const d of opened) d.close();
    for (const dp of dps.splice(0)) {
      dp.close();
      Datapath.remove(dp.bpffsDir);
    }
    await sb?.teardown();
  });

  test('colliding names get different numbers, which survive a restart and the other name leaving', () => {
    assert.equal(fnv1a31(A), fnv1a31(B), 'the names were built to collide');
    const dp = install('ids');
    const first = new IdentityAllocator(dp).assign([A, B], () => new Set());
    assert.deepEqual(first.errors, []);
    assert.notEqual(first.ids.get(A), first.ids.get(B));
    // A fresh allocator over the same pins (an agent restart), with A gone: B keeps its number.
    // Numbers derived from this model alone would give B the number A had (it renumbers).
    const again = new IdentityAllocator(reopen(dp)).assign([B], () => new Set());
    assert.equal(again.ids.get(B), first.ids.get(B));
    assert.equal(identityTable([{ namespace: 'default', serviceAccount: saB } as Workload]).get(B), first.ids.get(A));
    // A comes back: its own number again (kept, not reused, while the map has room).
    assert.equal(new IdentityAllocator(reopen(dp)).assign([A, B], () => new Set()).ids.get(A), first.ids.get(A));
  });

  test('a full map gives back only numbers nothing refers to; a name that cannot be numbered is reported', () => {
    const dp = install('idsfull', { sm_identities: 2 });
    const alloc = new IdentityAllocator(dp);
    const x = alloc.assign(['spiffe://cluster.local/ns/n/sa/x', 'spiffe://cluster.local/ns/n/sa/y'], () => new Set()).ids;
    // y is still referred to by the kernel, x is not: z takes x's place, y keeps its number.
    const inUse = new Set([x.get('spiffe://cluster.local/ns/n/sa/y')!]);
    const r = alloc.assign(['spiffe://cluster.local/ns/n/sa/z'], () => inUse);
    assert.deepEqual(r.errors, []);
    assert.equal(alloc.size, 2);
    assert.equal(alloc.assign(['spiffe://cluster.local/ns/n/sa/y'], () => inUse).ids.get('spiffe://cluster.local/ns/n/sa/y'), x.get('spiffe://cluster.local/ns/n/sa/y'));
    // Everything in use: a new name gets no number (judged as unresolved), and says so.
    const full = alloc.assign(['spiffe://cluster.local/ns/n/sa/w'], () => new Set([...alloc.assign(['spiffe://cluster.local/ns/n/sa/y', 'spiffe://cluster.local/ns/n/sa/z'], () => inUse).ids.values()]));
    assert.deepEqual(full.unassigned, ['spiffe://cluster.local/ns/n/sa/w']);
    assert.equal(full.errors[0]?.code, 'SM_MAP_FULL');
  });

  test('the kernel tells the colliding names apart: a DENY of one does not touch the other', async () => {
    const dp = install('idskernel');
    const w = (pod: string, sa: string): Workload => ({ namespace: 'default', name: pod, serviceAccount: sa, ips: [sb.pod(pod).ipv4], node: 'node1', cgroup: sb.pod(pod).cgroupPath });
    const model: Model = {
      services: [],
      endpoints: [],
      workloads: [w('a', saA), w('b', saB), w('web', 'web')],
      policies: {
        l4: [{ name: 'default/deny-a', scope: { kind: 'workloads', workloads: ['default/web'] }, action: 'DENY', dryRun: false, when: { principal: { exact: A } }, origin: 'test' }],
        l7: [],
      },
    };
    const rec = new Reconciler(dp);
    rec.adopt();
    const ids = new IdentityAllocator(dp).assign(model.workloads.map(spiffeId), () => rec.identitiesInUse()).ids;
    assert.deepEqual(rec.apply(desiredState(model, 'node1', { ...podNamespaces(sb), identities: ids })).errors, []);
    const connect = async (pod: string) => (await sb.podtool(pod, ['connect', '--target', `${sb.pod('web').ipv4}:8080`, '--connect-timeout-ms', '1500'])).last;
    assert.equal((await connect('a')).err, 'EACCES');
    assert.equal((await connect('b')).ok, true);
  });

  test('identities changed under a connect loop: no connect is judged by a mix of old and new tables', async () => {
    const dp = install('idsswap');
    // The pod at a's address and cgroup is, in turn, a workload of namespace bad and one of
    // namespace bad2; each config DENYs its own namespace at web. Both configs refuse every
    // connect from it: one let through would have been judged by the new identity against the old
    // table (or the reverse).
    const model = (ns: string): Model => ({
      services: [],
      endpoints: [],
      workloads: [
        { namespace: ns, name: 'a', serviceAccount: 'a', ips: [sb.pod('a').ipv4], node: 'node1', cgroup: sb.pod('a').cgroupPath },
        { namespace: 'default', name: 'web', serviceAccount: 'web', ips: [sb.pod('web').ipv4], node: 'node1', cgroup: sb.pod('web').cgroupPath },
      ],
      policies: {
        l4: [{ name: `default/deny-${ns}`, scope: { kind: 'workloads', workloads: ['default/web'] }, action: 'DENY', dryRun: false, when: { namespace: { exact: ns } }, origin: 'test' }],
        l7: [],
      },
    });
    // Each step of a change is held for 3 ms, so that connects do fall between the steps.
    const hold = new Int32Array(new SharedArrayBuffer(4));
    const rec = new Reconciler(dp, { betweenSteps: () => Atomics.wait(hold, 0, 0, 3) });
    rec.adopt();
    const alloc = new IdentityAllocator(dp);
    const apply = (ns: string) => {
      const m = model(ns);
      const ids = alloc.assign(m.workloads.map(spiffeId), () => rec.identitiesInUse()).ids;
      const r = rec.apply(desiredState(m, 'node1', { ...podNamespaces(sb), identities: ids }));
      assert.deepEqual(r.errors, []);
    };
    apply('bad');
    const durationMs = 4000;
    const loop = sb.podtool('a', ['connect-loop', '--target', `${sb.pod('web').ipv4}:8080`, '--duration-ms', String(durationMs), '--interval-ms', '0', '--connect-timeout-ms', '200'], {
      timeoutMs: durationMs + 60_000,
    });
    let flips = 0;
    const until = Date.now() + durationMs;
    while (Date.now() < until) {
      apply(flips % 2 ? 'bad' : 'bad2');
      flips++;
      await new Promise((r) => setImmediate(r));
    }
    const lines = (await loop).lines.filter((l) => l.t0 !== undefined);
    assert.ok(flips >= 10, `only ${flips} switches`);
    assert.ok(lines.length >= 20, `only ${lines.length} connects`);
    assert.deepEqual(lines.filter((l) => !l.err), [], `${flips} switches: a connect was let through`);
  });
});
