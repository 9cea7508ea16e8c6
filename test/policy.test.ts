// L4 identity policy: the compiled kernel tables decide exactly what Istio's semantics decide, and
// the kernel enforces them on real connections — outbound at connect() (EACCES), inbound at the SYN.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { PolicyValue, VERDICT_ALLOW, VERDICT_DENY } from '../abi/codecs';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { compilePolicies, evalExpr, policyEntryKey } from '../mesh-agent/datapath/policy';
import { desiredState, Reconciler } from '../mesh-agent/datapath/reconciler';
import { identityTable, spiffeId } from '../core/identity';
import type { L4Expr, L4Policy, Model, Workload } from '../core/model';
import { Sandbox, ServerHandle } from '../sandbox/sandbox';
import { kernelSkip, podNamespaces } from './kernel';

/** The kernel's lookup order (bpf/include/policy.h), over the compiled tables. */
function kernelVerdict(model: Model, dstIp: string, port: number, identity: number): number {
  const c = compilePolicies(model);
  const set = c.dsts.get(dstIp)?.set;
  if (set === undefined) return VERDICT_ALLOW;
  const get = (id: number, p: number) => c.entries.get(policyEntryKey({ set, identity: id, port: p }))?.value;
  const v: PolicyValue | undefined = get(identity, port) ?? get(identity, 0) ?? get(0, port) ?? get(0, 0);
  return v ? v.verdict : VERDICT_DENY;
}

/** Istio's semantics, evaluated directly (no tables): DENY first; ALLOW policies, if any, must match. */
function istioVerdict(model: Model, dst: Workload, port: number, src: Workload | null): number {
  const applies = (p: L4Policy) =>
    p.scope.kind === 'global' ||
    (p.scope.kind === 'namespace' && p.scope.namespace === dst.namespace) ||
    (p.scope.kind === 'workloads' && p.scope.workloads.includes(`${dst.namespace}/${dst.name}`));
  const ps = (model.policies?.l4 ?? []).filter((p) => !p.dryRun && p.action !== 'LOG' && applies(p));
  const ctx = src
    ? { principal: spiffeId(src), namespace: src.namespace, sourceIps: src.ips, destinationIp: dst.ips[0], destinationPort: port }
    : { destinationIp: dst.ips[0], destinationPort: port };
  if (ps.some((p) => p.action === 'DENY' && evalExpr(p.when, ctx) !== false)) return VERDICT_DENY;
  const allows = ps.filter((p) => p.action === 'ALLOW');
  if (!allows.length) return VERDICT_ALLOW;
  return allows.some((p) => evalExpr(p.when, ctx) === true) ? VERDICT_ALLOW : VERDICT_DENY;
}

const wl = (name: string, ns: string, sa: string, ip: string): Workload => ({ namespace: ns, name, serviceAccount: sa, ips: [ip] });

test('compiled tables agree with Istio semantics for every identity and port (generated policies)', () => {
  const workloads = [
    wl('a', 'shop', 'front', '198.18.1.10'),
    wl('b', 'shop', 'back', '198.18.1.11'),
    wl('c', 'pay', 'front', '198.18.1.12'),
    wl('d', 'pay', 'pay', '198.18.1.13'),
    wl('e', 'ops', 'admin', '198.18.2.10'),
  ];
  let seed = 12345;
  const rnd = (n: number) => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n);
  const leaf = (): L4Expr => {
    const w = workloads[rnd(workloads.length)];
    switch (rnd(5)) {
      case 0:
        return { principal: rnd(2) ? { exact: spiffeId(w) } : { suffix: `/sa/${w.serviceAccount}` } };
      case 1:
        return { namespace: { exact: w.namespace } };
      case 2:
        return { destinationPort: [80, 443, 8080][rnd(3)] };
      case 3:
        return { sourceIp: { address: w.ips[0], prefixLen: rnd(2) ? 32 : 24 } };
      default:
        return { destinationPortRange: { start: 8000, end: 8000 + 1 + rnd(100) } };
    }
  };
  const expr = (d: number): L4Expr => {
    if (d === 0 || rnd(3) === 0) return leaf();
    const k = rnd(3);
    if (k === 2) return { not: expr(d - 1) };
    const kids = [expr(d - 1), expr(d - 1)];
    return k === 0 ? { and: kids } : { or: kids };
  };
  for (let round = 0; round < 150; round++) {
    const policies: L4Policy[] = [];
    for (let i = 0, n = 1 + rnd(4); i < n; i++) {
      const dst = workloads[rnd(workloads.length)];
      const scope = [{ kind: 'global' as const }, { kind: 'namespace' as const, namespace: dst.namespace }, { kind: 'workloads' as const, workloads: [`${dst.namespace}/${dst.name}`] }][rnd(3)];
      policies.push({ name: `p${i}`, scope, action: rnd(2) ? 'ALLOW' : 'DENY', dryRun: rnd(8) === 0, when: expr(3), origin: 'test' });
    }
    const model: Model = { services: [], endpoints: [], workloads, policies: { l4: policies, l7: [] } };
    const ids = identityTable(workloads);
    for (const dst of workloads) {
      for (const port of [80, 443, 8080, 8001, 8050, 9999]) {
        for (const src of [...workloads, null]) {
          const id = src ? ids.get(spiffeId(src))! : 0;
          const want = istioVerdict(model, dst, port, src);
          const got = kernelVerdict(model, dst.ips[0], port, id);
          // The tables may deny where the direct evaluation could not decide for a whole class
          // (fail closed), never allow what Istio denies.
          if (want === VERDICT_DENY) assert.equal(got, VERDICT_DENY, `round ${round}: ${src?.name ?? 'unknown'} -> ${dst.name}:${port} allowed, Istio denies`);
          else if (got !== want) {
            // ...for the source's whole class, or for "any other port" when a port range too large to
            // expand covers this port.
            const cls = { principal: src ? spiffeId(src) : undefined, namespace: src?.namespace, sourceIps: src?.ips, destinationIp: dst.ips[0] };
            const unsure = policies.some(
              (p) => evalExpr(p.when, { ...cls, destinationPort: port }) === undefined || evalExpr(p.when, { ...cls, destinationPort: undefined }) === undefined,
            );
            assert.ok(unsure, `round ${round}: ${src?.name ?? 'unknown'} -> ${dst.name}:${port} denied without reason`);
          }
        }
      }
    }
  }
});

describe('[kernel] L4 policy enforced in the kernel', kernelSkip(), () => {
  let sb: Sandbox;
  let dp: Datapath;
  let rec: Reconciler;
  const servers: ServerHandle[] = [];

  const model = (allowOther: boolean): Model => {
    const w = (n: string): Workload => ({ namespace: 'default', name: n, serviceAccount: n, ips: [sb.pod(n).ipv4], node: 'node1', cgroup: sb.pod(n).cgroupPath });
    const principals: L4Expr[] = [{ principal: { exact: 'spiffe://cluster.local/ns/default/sa/client' } }];
    if (allowOther) principals.push({ principal: { exact: 'spiffe://cluster.local/ns/default/sa/other' } });
    return {
      services: [{ namespace: 'default', name: 'web', vips: ['198.19.0.60'], ports: [{ port: 80, protocol: 'TCP', targetPort: 8080 }] }],
      endpoints: [{ service: 'default/web', address: sb.pod('web').ipv4, weight: 1, healthy: true }],
      workloads: [w('client'), w('other'), w('web')],
      policies: {
        l4: [
          {
            name: 'default/web-allow',
            scope: { kind: 'workloads', workloads: ['default/web'] },
            action: 'ALLOW',
            dryRun: false,
            when: { and: [{ destinationPort: 8080 }, { or: principals }] },
            origin: 'test',
          },
        ],
        l7: [],
      },
    };
  };
  const connect = async (pod: string, target: string) =>
    (await sb.podtool(pod, ['connect', '--target', target, '--connect-timeout-ms', '1500'])).last;

  before(async () => {
    sb = await Sandbox.create({
      nodes: [{ name: 'node1', pods: [{ name: 'client' }, { name: 'other' }, { name: 'web' }, { name: 'outsider', meshed: false }] }],
    });
    servers.push(await sb.startServer('web', ['serve', '--port', '8080', '--mode', 'id', '--name', 'web']));
    servers.push(await sb.startServer('web', ['serve', '--port', '9000', '--mode', 'id', '--name', 'web']));
    dp = Datapath.install({ cgroupPath: sb.node('node1').cgroupPath, bpffsDir: path.join(sb.ensureBpffsDir(), 'pol') });
    rec = new Reconciler(dp);
    rec.adopt();
    assert.deepEqual(rec.apply(desiredState(model(false), 'node1', podNamespaces(sb))).errors, []);
  });

  after(async () => {
    for (const s of servers) await s.stop();
    dp?.close();
    if (dp) Datapath.remove(dp.bpffsDir);
    await sb?.teardown();
  });

  test('an allowed identity connects, to the pod IP and through the VIP', async () => {
    assert.equal((await connect('client', `${sb.pod('web').ipv4}:8080`)).ok, true);
    assert.equal((await connect('client', '198.19.0.60:80')).ok, true);
  });

  test('outbound: a denied identity, or a port outside the ALLOW, fails at connect() with EACCES', async () => {
    const before = dp.counters().policy_deny_connect;
    const r1 = await connect('other', `${sb.pod('web').ipv4}:8080`);
    assert.equal(r1.ok, false);
    assert.equal(r1.err, 'EACCES');
    const r2 = await connect('other', '198.19.0.60:80');
    assert.equal(r2.err, 'EACCES');
    const r3 = await connect('client', `${sb.pod('web').ipv4}:9000`);
    assert.equal(r3.err, 'EACCES');
    assert.equal(dp.counters().policy_deny_connect - before, 3n);
  });

  test('inbound: a SYN from a source the policy denies is dropped before the application sees it', async () => {
    // The outsider's cgroup is not meshed: no connect hook judges it, only the ingress hook at web.
    const before = dp.counters().policy_deny_ingress;
    const r = await connect('outsider', `${sb.pod('web').ipv4}:8080`);
    assert.equal(r.ok, false);
    assert.equal(r.err, 'ETIMEDOUT', JSON.stringify(r));
    assert.ok(dp.counters().policy_deny_ingress - before >= 1n);
  });

  test('a policy change applies to the next connection', async () => {
    assert.deepEqual(rec.apply(desiredState(model(true), 'node1', podNamespaces(sb))).errors, []);
    assert.equal((await connect('other', `${sb.pod('web').ipv4}:8080`)).ok, true);
    assert.deepEqual(rec.apply(desiredState(model(false), 'node1', podNamespaces(sb))).errors, []);
    assert.equal((await connect('other', `${sb.pod('web').ipv4}:8080`)).err, 'EACCES');
  });
});

describe('[kernel] L4 policy tables switch make-before-break', kernelSkip(), () => {
  let sb: Sandbox;
  let dp: Datapath;
  let rec: Reconciler;
  const servers: ServerHandle[] = [];

  /** web accepts the client on `ports` (each its own row), nobody else. */
  const model = (ports: number[]): Model => {
    const w = (n: string): Workload => ({ namespace: 'default', name: n, serviceAccount: n, ips: [sb.pod(n).ipv4], node: 'node1', cgroup: sb.pod(n).cgroupPath });
    return {
      services: [],
      endpoints: [],
      workloads: [w('client'), w('other'), w('web')],
      policies: {
        l4: [
          {
            name: 'default/web-allow',
            scope: { kind: 'workloads', workloads: ['default/web'] },
            action: 'ALLOW',
            dryRun: false,
            when: { and: [{ or: ports.map((p) => ({ destinationPort: p })) }, { principal: { exact: 'spiffe://cluster.local/ns/default/sa/client' } }] },
            origin: 'test',
          },
        ],
        l7: [],
      },
    };
  };
  const connect = async (pod: string, port: number) =>
    (await sb.podtool(pod, ['connect', '--target', `${sb.pod('web').ipv4}:${port}`, '--connect-timeout-ms', '1500'])).last;

  before(async () => {
    sb = await Sandbox.create({ nodes: [{ name: 'node1', pods: [{ name: 'client' }, { name: 'other' }, { name: 'web' }] }] });
    servers.push(await sb.startServer('web', ['serve', '--port', '8080', '--mode', 'id', '--name', 'web']));
    servers.push(await sb.startServer('web', ['serve', '--port', '8081', '--mode', 'id', '--name', 'web']));
    // Room for one small table and a little more: a large change cannot fit beside it.
    dp = Datapath.install({ cgroupPath: sb.node('node1').cgroupPath, bpffsDir: path.join(sb.ensureBpffsDir(), 'polmbb'), mapSizes: { sm_policy: 12 } });
    rec = new Reconciler(dp);
    rec.adopt();
  });

  after(async () => {
    for (const s of servers) await s.stop();
    dp?.close();
    if (dp) Datapath.remove(dp.bpffsDir);
    await sb?.teardown();
  });

  test('a change that does not fit leaves the previous table in force, whole; a later one that fits applies', async () => {
    assert.deepEqual(rec.apply(desiredState(model([8080]), 'node1', podNamespaces(sb))).errors, []);
    const before = dp.maps.sm_policy.count();
    assert.ok(before <= 6, `the small table takes ${before} rows`);
    assert.equal((await connect('client', 8080)).ok, true);
    assert.equal((await connect('client', 8081)).err, 'EACCES');
    // 20 ports: far more rows than the map has room for beside the table in force.
    const big = Array.from({ length: 20 }, (_, i) => 8081 + i);
    const r = rec.apply(desiredState(model(big), 'node1', podNamespaces(sb)));
    assert.ok(r.errors.some((e) => e.code === 'SM_MAP_FULL'), JSON.stringify(r.errors.map((e) => e.message)));
    assert.equal(r.policyDstsChanged, 0, 'no destination switched to the incomplete table');
    // The previous table decides, exactly as before: 8080 open to the client, 8081 not.
    assert.equal((await connect('client', 8080)).ok, true);
    assert.equal((await connect('client', 8081)).err, 'EACCES');
    assert.equal((await connect('other', 8080)).err, 'EACCES');
    // A change that fits replaces it (and the rows of the attempt that did not fit are collected).
    assert.deepEqual(rec.apply(desiredState(model([8081]), 'node1', podNamespaces(sb))).errors, []);
    assert.equal((await connect('client', 8081)).ok, true);
    assert.equal((await connect('client', 8080)).err, 'EACCES');
    assert.ok(dp.maps.sm_policy.count() <= before, 'no rows left behind');
  });
});
