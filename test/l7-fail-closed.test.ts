// HTTP rules are never walked around by the kernel's own choices: a connect to a service with HTTP
// rules that cannot go to the L7 proxy (no proxy configured, none of the VIP's family, or a proxy
// that has not acknowledged the destination's rules) is refused with ECONNREFUSED instead of being
// sent to a backend unjudged. (Ways around the proxy, such as the backend's pod IP:
// dest-authz.test.ts.)
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { desiredState, Reconciler, type DesiredState } from '../mesh-agent/datapath/reconciler';
import { L7Readiness } from '../mesh-agent/datapath/l7-ready';
import type { Model } from '../core/model';
import { Sandbox } from '../sandbox/sandbox';
import { kernelSkip, podNamespaces } from './kernel';

const VIP4 = '198.19.0.70';
const VIP6 = 'fd53:6f63:6b99::70';
const PLAIN4 = '198.19.0.71';
const RBAC = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC';

describe('[kernel] L7 steering fails closed', kernelSkip(), () => {
  let sb: Sandbox;
  let dp: Datapath;
  let desired: DesiredState;

  const model = (): Model => {
    const p = (n: string) => sb.pod(n);
    return {
      services: [
        { namespace: 'default', name: 'web', vips: [VIP4, VIP6], ports: [{ port: 80, protocol: 'TCP', targetPort: 8080 }] },
        // Another port of the same pod: a service onto the HTTP one would be a way around the rules.
        { namespace: 'default', name: 'plain', vips: [PLAIN4], ports: [{ port: 80, protocol: 'TCP', targetPort: 8081 }] },
      ],
      endpoints: [
        { service: 'default/web', address: p('web').ipv4, weight: 1, healthy: true },
        { service: 'default/web', address: p('web').ipv6!, weight: 1, healthy: true },
        { service: 'default/plain', address: p('web').ipv4, weight: 1, healthy: true },
      ],
      workloads: [],
      policies: {
        l4: [],
        l7: [
          {
            destination: { service: 'default/web', port: 80 },
            filters: [{ name: 'envoy.filters.http.rbac', config: { '@type': RBAC, rules: { action: 'DENY', policies: { d: { permissions: [{ urlPath: { path: { prefix: '/admin' } } }], principals: [{ any: true }] } } } } }],
          },
        ],
      },
    };
  };
  const connect = async (target: string) => (await sb.podtool('client', ['ids', '--target', target, '--count', '1'])).last;
  const delta = async (target: string) => {
    const c0 = dp.counters();
    const r = await connect(target);
    const c1 = dp.counters();
    return { r, steered: Number(c1.l7_steered - c0.l7_steered), refused: Number(c1.connect_no_backend - c0.connect_no_backend) };
  };

  before(async () => {
    sb = await Sandbox.create({
      nodes: [{ name: 'node1', pods: [{ name: 'client', ipv6: true }, { name: 'web', ipv6: true }, { name: 'proxy', ipv6: true }] }],
    });
    await sb.startServer('web', ['serve', '--port', '8080', '--mode', 'id', '--name', 'web']);
    await sb.startServer('web', ['serve', '--port', '8081', '--mode', 'id', '--name', 'web']);
    // Stands in for the L7 proxy: whoever reaches it was steered.
    await sb.startServer('proxy', ['serve', '--port', '15001', '--mode', 'id', '--name', 'proxy']);
    dp = Datapath.install({ cgroupPath: sb.node('node1').cgroupPath, bpffsDir: path.join(sb.ensureBpffsDir(), 'l7fc') });
    // The client is not a declared workload: translate every socket of the meshed cgroup
    // (--translate-unenrolled), as a node without enrollment would.
    dp.setTranslateAll(true);
    const rec = new Reconciler(dp);
    rec.adopt();
    // The client plays the proxy in the last test: its addresses are the proxy's (SM_EP_F_PROXY).
    const proxies = [sb.pod('client').ipv4, sb.pod('client').ipv6!];
    desired = desiredState(model(), 'node1', { ...podNamespaces(sb), proxies });
    assert.deepEqual(rec.apply(desired).errors, []);
    // The proxy stand-in needs no table: every destination counts as acknowledged.
    L7Readiness.set(dp, desired.proxyDestinations);
  });

  after(async () => {
    dp?.close();
    if (dp) Datapath.remove(dp.bpffsDir);
    await sb?.teardown();
  });

  test('no proxy configured: a service with HTTP rules is refused at connect(), one without is not', async () => {
    dp.configureProxy(null);
    for (const vip of [VIP4, `[${VIP6}]`, `[::ffff:${VIP4}]`]) {
      const d = await delta(`${vip}:80`);
      assert.deepEqual(d.r.errors, { ECONNREFUSED: 1 }, vip);
      assert.deepEqual([d.steered, d.refused], [0, 1], vip);
    }
    const plain = await delta(`${PLAIN4}:80`);
    assert.deepEqual(plain.r.ids, { web: 1 });
  });

  test('a proxy of one family only: that family is steered, the other refused (never sent to a backend)', async () => {
    dp.configureProxy({ proxyCgroupId: 0n, proxy4: sb.pod('proxy').ipv4, proxyPort: 15001 });
    const v4 = await delta(`${VIP4}:80`);
    assert.deepEqual(v4.r.ids, { proxy: 1 }, JSON.stringify(v4.r));
    assert.deepEqual([v4.steered, v4.refused], [1, 0]);
    // An IPv6 socket reaching the IPv4 VIP through its mapped form is IPv4: steered too.
    const mapped = await delta(`[::ffff:${VIP4}]:80`);
    assert.deepEqual(mapped.r.ids, { proxy: 1 }, JSON.stringify(mapped.r));
    assert.deepEqual([mapped.steered, mapped.refused], [1, 0]);
    const v6 = await delta(`[${VIP6}]:80`);
    assert.deepEqual(v6.r.errors, { ECONNREFUSED: 1 }, JSON.stringify(v6.r));
    assert.deepEqual([v6.steered, v6.refused], [0, 1]);
    // With both families, both are steered.
    dp.configureProxy({ proxyCgroupId: 0n, proxy4: sb.pod('proxy').ipv4, proxy6: sb.pod('proxy').ipv6!, proxyPort: 15001 });
    assert.deepEqual((await delta(`[${VIP6}]:80`)).r.ids, { proxy: 1 });
  });

  test("the proxy's own cgroup is not steered: its connect to the VIP reaches a backend", async () => {
    const own = fs.statSync(sb.pod('client').cgroupPath, { bigint: true }).ino; // the client plays the proxy here
    dp.configureProxy({ proxyCgroupId: own, proxy4: sb.pod('proxy').ipv4, proxyPort: 15001 });
    const d = await delta(`${VIP4}:80`);
    assert.deepEqual(d.r.ids, { web: 1 }, JSON.stringify(d.r));
    assert.deepEqual([d.steered, d.refused], [0, 0]);
    // ...also for the family it has no proxy address of: exempt means translated, not refused.
    assert.deepEqual((await delta(`[${VIP6}]:80`)).r.ids, { web: 1 });
  });

  test('during a proxy handover the old proxy\'s cgroup stays exempt beside the new one, and only while named', async () => {
    const own = fs.statSync(sb.pod('client').cgroupPath, { bigint: true }).ino; // the client plays the old proxy
    const successor = fs.statSync(sb.pod('proxy').cgroupPath, { bigint: true }).ino;
    dp.configureProxy({ proxyCgroupId: successor, proxyCgroupPrev: own, proxy4: sb.pod('proxy').ipv4, proxyPort: 15001 });
    const d = await delta(`${VIP4}:80`);
    assert.deepEqual(d.r.ids, { web: 1 }, JSON.stringify(d.r));
    assert.deepEqual([d.steered, d.refused], [0, 0]);
    // The old proxy has finished: its cgroup is steered again like any other.
    dp.configureProxy({ proxyCgroupId: successor, proxy4: sb.pod('proxy').ipv4, proxyPort: 15001 });
    const after = await delta(`${VIP4}:80`);
    assert.deepEqual(after.r.ids, { proxy: 1 }, JSON.stringify(after.r));
    assert.deepEqual([after.steered, after.refused], [1, 0]);
  });

  test('steering waits for the proxy to acknowledge a destination, and stops when the proxy goes away', async () => {
    dp.configureProxy({ proxyCgroupId: 0n, proxy4: sb.pod('proxy').ipv4, proxy6: sb.pod('proxy').ipv6!, proxyPort: 15001 });
    const ready = new L7Readiness(dp);
    const dests = desired.proxyDestinations;
    const vip = dests.find((d) => d.destination.ip === VIP4)!;
    const others = dests.filter((d) => d !== vip);
    try {
      // The proxy went away: nothing is steered, every connect that needs it is refused.
      ready.clear();
      for (const target of [`${VIP4}:80`, `[${VIP6}]:80`, `${sb.pod('web').ipv4}:8080`]) {
        const d = await delta(target);
        assert.deepEqual(d.r.errors, { ECONNREFUSED: 1 }, `${target}: ${JSON.stringify(d.r)}`);
        assert.deepEqual([d.steered, d.refused], [0, 1], target);
      }
      // Table 7 (every destination) sent: still refused until the proxy answers it.
      ready.applied(dests, 7);
      assert.deepEqual((await delta(`${VIP4}:80`)).r.errors, { ECONNREFUSED: 1 });
      // Table 8 drops the IPv4 VIP and table 9 brings it back, all before 7 is answered. The late
      // answer to 7 enables what every table since 7 held, not the VIP: the proxy may be holding
      // table 8, which has no rules for it.
      ready.applied(others, 8);
      ready.applied(dests, 9);
      assert.equal(ready.acked(7), others.length);
      assert.deepEqual((await delta(`${VIP4}:80`)).r.errors, { ECONNREFUSED: 1 }, 'dropped by table 8, back in 9, 9 not answered');
      const v6 = await delta(`[${VIP6}]:80`);
      assert.deepEqual(v6.r.ids, { proxy: 1 }, JSON.stringify(v6.r));
      assert.equal(v6.steered, 1);
      // The answer to 9 enables it.
      assert.equal(ready.acked(9), 1);
      assert.deepEqual((await delta(`${VIP4}:80`)).r.ids, { proxy: 1 });
      // A proxy that reconnects is sent table 9 again; its answer counts again after a clear.
      ready.clear();
      assert.equal(ready.acked(9), dests.length);
      assert.equal(ready.size, dests.length);
    } finally {
      L7Readiness.set(dp, dests);
    }
  });
});
