// Authorization at the destination: a pod port with HTTP rules is reached through the L7 proxy or
// not at all, whatever address, family, protocol, node or socket a client tries; and the client's
// L4 policy is judged on the steered path too. Every way around is attempted here on real
// sockets and real packets: the pod IP (both families), another service onto the same port, an
// unmeshed pod, a pod on the other node, a hand-made IPv6 SYN behind a hop-by-hop header, a UDP
// socket made outside the mesh. The proxy is a stand-in server here (whoever reaches it was
// steered); proxy-e2e.test.ts runs the real one.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SteerMap } from '../abi/steer-map';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { desiredState, Reconciler } from '../mesh-agent/datapath/reconciler';
import { L7Readiness } from '../mesh-agent/datapath/l7-ready';
import type { L4Policy, Model, Workload } from '../core/model';
import { Sandbox, ServerHandle } from '../sandbox/sandbox';
import { PODTOOL_PATH as PODTOOL } from '../sandbox/sandbox';
import { scaled, waitUntil } from '../sandbox/time-scale';
import { kernelSkip, podNamespaces } from './kernel';

const VIP4 = '198.19.0.80';
const VIP6 = 'fd53:6f63:6b99::80';
const SIDE4 = '198.19.0.81'; // a second service onto the same pod port, without HTTP rules
const RBAC = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC';
const RAWSYN = path.resolve(__dirname, '..', '..', 'build', 'tools', 'rawsyn');
const MKSOCK = path.resolve(__dirname, '..', '..', 'build', 'tools', 'mksock');

describe('[kernel] authorization at the destination: no way around the L7 proxy', kernelSkip(), () => {
  let sb: Sandbox;
  let dp: Datapath;
  let rec: Reconciler;
  const servers: ServerHandle[] = [];

  const model = (): Model => {
    const w = (n: string, namespace = 'default', node = 'node1'): Workload => ({
      namespace,
      name: n,
      serviceAccount: n,
      ips: [sb.pod(n).ipv4, ...(sb.pod(n).ipv6 ? [sb.pod(n).ipv6!] : [])],
      node,
      cgroup: sb.pod(n).cgroupPath,
    });
    const l4: L4Policy[] = [
      {
        name: 'default/web-deny-bad',
        scope: { kind: 'workloads', workloads: ['default/web'] },
        action: 'DENY',
        dryRun: false,
        when: { namespace: { exact: 'bad' } },
        origin: 'test',
      },
      {
        // An ALLOW list at the backend: the proxy's own identity is not on it, and must not need to be.
        name: 'default/web-allow-client',
        scope: { kind: 'workloads', workloads: ['default/web'] },
        action: 'ALLOW',
        dryRun: false,
        when: { principal: { exact: 'spiffe://cluster.local/ns/default/sa/client' } },
        origin: 'test',
      },
      {
        // Only a namespace DENY at `other`: shows how callers the mesh cannot name are judged.
        name: 'default/other-deny-bad',
        scope: { kind: 'workloads', workloads: ['default/other'] },
        action: 'DENY',
        dryRun: false,
        when: { namespace: { exact: 'bad' } },
        origin: 'test',
      },
    ];
    return {
      services: [
        { namespace: 'default', name: 'web', vips: [VIP4, VIP6], ports: [{ port: 80, protocol: 'TCP', targetPort: 8080 }] },
        { namespace: 'default', name: 'side', vips: [SIDE4], ports: [{ port: 80, protocol: 'TCP', targetPort: 8080 }] },
      ],
      endpoints: [
        { service: 'default/web', address: sb.pod('web').ipv4, weight: 1, healthy: true },
        { service: 'default/web', address: sb.pod('web').ipv6!, weight: 1, healthy: true },
        { service: 'default/side', address: sb.pod('web').ipv4, weight: 1, healthy: true },
      ],
      workloads: [w('client'), w('other'), w('denied', 'bad'), w('web'), w('remote', 'default', 'node2')],
      policies: {
        l4,
        l7: [
          {
            destination: { service: 'default/web', port: 80 },
            filters: [{ name: 'envoy.filters.http.rbac', config: { '@type': RBAC, rules: { action: 'DENY', policies: { d: { permissions: [{ urlPath: { path: { prefix: '/admin' } } }], principals: [{ any: true }] } } } } }],
          },
        ],
      },
    };
  };
  const connect = async (pod: string, target: string) =>
    (await sb.podtool(pod, ['ids', '--target', target, '--count', '1', '--connect-timeout-ms', '1500'])).last;
  const counted = async <T>(f: () => Promise<T>) => {
    const c0 = dp.counters();
    const r = await f();
    const c1 = dp.counters();
    return {
      r,
      steered: Number(c1.l7_steered - c0.l7_steered),
      deniedConnect: Number(c1.policy_deny_connect - c0.policy_deny_connect),
      deniedIngress: Number(c1.policy_deny_ingress - c0.policy_deny_ingress),
    };
  };
  const web = () => sb.pod('web');

  before(async () => {
    assert.ok(fs.existsSync(RAWSYN), `${RAWSYN} not built (scripts/build.sh)`);
    sb = await Sandbox.create({
      nodes: [
        {
          name: 'node1',
          pods: [
            { name: 'client', ipv6: true },
            { name: 'other', ipv6: true },
            { name: 'denied', ipv6: true },
            { name: 'web', ipv6: true },
            { name: 'proxy', ipv6: true },
            { name: 'outsider', ipv6: true, meshed: false },
          ],
        },
        { name: 'node2', pods: [{ name: 'remote', ipv6: true }] },
      ],
    });
    servers.push(await sb.startServer('web', ['serve', '--port', '8080', '--mode', 'id', '--name', 'web']));
    servers.push(await sb.startServer('web', ['serve', '--port', '8081', '--mode', 'id', '--name', 'web']));
    servers.push(await sb.startServer('web', ['serve-udp', '--port', '5353', '--name', 'web']));
    servers.push(await sb.startServer('other', ['serve-udp', '--port', '5353', '--name', 'other']));
    servers.push(await sb.startServer('other', ['serve', '--port', '8080', '--mode', 'id', '--name', 'other']));
    // Stands in for the L7 proxy: whoever reaches it was steered (15002 keeps connections open).
    servers.push(await sb.startServer('proxy', ['serve', '--port', '15001', '--mode', 'id', '--name', 'proxy']));
    servers.push(await sb.startServer('proxy', ['serve', '--port', '15002', '--mode', 'echo', '--name', 'proxy']));
    dp = Datapath.install({ cgroupPath: sb.node('node1').cgroupPath, bpffsDir: path.join(sb.ensureBpffsDir(), 'dstauthz') });
    // An IPv4 proxy only: the IPv6 VIP has no way to the rules.
    const proxyCg = fs.statSync(sb.pod('proxy').cgroupPath, { bigint: true }).ino;
    dp.configureProxy({ proxyCgroupId: proxyCg, proxy4: sb.pod('proxy').ipv4, proxyPort: 15001 });
    rec = new Reconciler(dp);
    rec.adopt();
    const proxies = [sb.pod('proxy').ipv4, sb.pod('proxy').ipv6!];
    const desired = desiredState(model(), 'node1', { ...podNamespaces(sb), proxies });
    assert.deepEqual(rec.apply(desired).errors, []);
    // The proxy stand-in needs no table: every destination counts as acknowledged.
    L7Readiness.set(dp, desired.proxyDestinations);
  });

  after(async () => {
    for (const s of servers) await s.stop().catch(() => undefined);
    dp?.close();
    if (dp) Datapath.remove(dp.bpffsDir);
    await sb?.teardown();
  });

  test('the way in: an allowed client through the VIP is steered to the proxy', async () => {
    const d = await counted(() => connect('client', `${VIP4}:80`));
    assert.deepEqual(d.r.ids, { proxy: 1 }, JSON.stringify(d.r));
    assert.equal(d.steered, 1);
  });

  test("the proxy's own connects reach the port, through the VIP and by pod IP, despite the backend's ALLOW list", async () => {
    assert.deepEqual((await connect('proxy', `${VIP4}:80`)).ids, { web: 1 });
    assert.deepEqual((await connect('proxy', `${web().ipv4}:8080`)).ids, { web: 1 });
    assert.deepEqual((await connect('proxy', `[${web().ipv6}]:8080`)).ids, { web: 1 });
  });

  test('meshed clients that go around the VIP are steered to the proxy too: pod IP, IPv4-mapped, another service onto the port', async () => {
    for (const [target, peer] of [
      [`${web().ipv4}:8080`, { address: web().ipv4, port: 8080 }],
      [`[::ffff:${web().ipv4}]:8080`, { address: `::ffff:${web().ipv4}`, port: 8080 }],
      [`${SIDE4}:80`, { address: SIDE4, port: 80 }],
    ] as const) {
      const d = await counted(() => connect('client', target));
      assert.deepEqual(d.r.ids, { proxy: 1 }, `${target}: ${JSON.stringify(d.r)}`);
      assert.equal(d.steered, 1, target);
      // The client still sees where it connected to.
      assert.deepEqual(d.r.peer, peer, target);
    }
    // No IPv6 proxy: the pod's IPv6 address is refused, not reached unjudged.
    const v6 = await counted(() => connect('client', `[${web().ipv6}]:8080`));
    assert.deepEqual(v6.r.errors, { ECONNREFUSED: 1 }, JSON.stringify(v6.r));
    // The backend's L4 policy holds on these paths as on the VIP's.
    for (const pod of ['denied', 'other']) assert.deepEqual((await connect(pod, `${web().ipv4}:8080`)).errors, { EACCES: 1 }, pod);
  });

  test('the VIP of the family without a proxy is refused, not sent to a backend', async () => {
    const d = await counted(() => connect('client', `[${VIP6}]:80`));
    assert.deepEqual(d.r.errors, { ECONNREFUSED: 1 }, JSON.stringify(d.r));
    assert.equal(d.steered, 0);
  });

  test("a client the backend's L4 policy denies is refused at connect() on the steered path too", async () => {
    // DENY namespace bad, and `other` is not on the ALLOW list: neither reaches the proxy.
    for (const pod of ['denied', 'other']) {
      const d = await counted(() => connect(pod, `${VIP4}:80`));
      assert.deepEqual(d.r.errors, { EACCES: 1 }, `${pod}: ${JSON.stringify(d.r)}`);
      assert.deepEqual([d.steered, d.deniedConnect], [0, 1], pod);
    }
  });

  test('an unmeshed pod, a pod on the other node and a socket made outside the mesh: the SYN is dropped at the pod', async () => {
    const attempts: Array<[string, string, boolean]> = [
      ['outsider', `${web().ipv4}:8080`, false],
      ['outsider', `[${web().ipv6}]:8080`, false],
      ['remote', `${web().ipv4}:8080`, false],
      ['remote', `[${web().ipv6}]:8080`, false],
      // The allowed client's own address, from a socket no connect hook saw.
      ['client', `${web().ipv4}:8080`, true],
    ];
    for (const [pod, target, outsideMesh] of attempts) {
      const d = await counted(async () => (await sb.podtool(pod, ['ids', '--target', target, '--count', '1', '--connect-timeout-ms', '1500'], { outsideMesh })).last);
      assert.deepEqual(d.r.errors, { ETIMEDOUT: 1 }, `${pod} -> ${target}: ${JSON.stringify(d.r)}`);
      assert.ok(d.deniedIngress >= 1, `${pod} -> ${target}: counted at ingress`);
    }
    // A port of the same pod without HTTP rules is judged by L4 policy alone: the allowed client's
    // address gets in, the unmeshed (unknown) pod does not (ALLOW list).
    const ok = await sb.podtool('client', ['ids', '--target', `${web().ipv4}:8081`, '--count', '1', '--connect-timeout-ms', '1500'], { outsideMesh: true });
    assert.deepEqual(ok.last.ids, { web: 1 }, JSON.stringify(ok.last));
    assert.deepEqual((await connect('outsider', `${web().ipv4}:8081`)).errors, { ETIMEDOUT: 1 });
  });

  test('IPv6 extension headers are walked: a SYN behind a hop-by-hop header is judged like any other', async () => {
    const raw = async (pod: string, port: number, hbh: boolean) => {
      // A raw socket cannot be made inside the mesh (next test): this one is made outside it.
      const r = await sb.exec(pod, [RAWSYN, '--src', sb.pod(pod).ipv6!, '--dst', web().ipv6!, '--port', String(port), ...(hbh ? ['--hbh'] : []), '--timeout-ms', '1500'], { outsideMesh: true });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      return JSON.parse(r.stdout.trim()).result as string;
    };
    // Raw sockets skip every socket hook: only the inbound program at the pod judges these.
    assert.equal(await raw('client', 8081, false), 'synack', 'control: allowed identity, no HTTP rules');
    assert.equal(await raw('client', 8081, true), 'synack', 'the walk reaches the TCP header');
    const d = await counted(async () => [await raw('denied', 8081, true), await raw('client', 8080, true), await raw('client', 8080, false)]);
    assert.deepEqual(d.r, ['timeout', 'timeout', 'timeout'], 'denied identity / HTTP port, behind a hop-by-hop header or not');
    assert.ok(d.deniedIngress >= 3);
  });

  test('sockets no hook of ours can judge are not made inside the mesh: raw, SCTP, UDP-Lite, MPTCP', async () => {
    const kinds = ['tcp4', 'tcp6', 'udp4', 'udp6', 'ping4', 'ping6', 'raw4', 'raw6', 'rawip4', 'sctp4', 'sctp6', 'sctpseq4', 'udplite4', 'udplite6', 'mptcp4'];
    const made = async (outsideMesh: boolean) => {
      const r = await sb.exec('denied', [MKSOCK, ...kinds], { outsideMesh });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      return new Map(r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { kind: string; ok: boolean; errno?: string }).map((j) => [j.kind, j]));
    };
    const inside = await made(false);
    const out = await made(true);
    // What the mesh judges is made as outside it (ping sockets as the namespace's ping_group_range says).
    for (const k of ['tcp4', 'tcp6', 'udp4', 'udp6']) assert.equal(inside.get(k)!.ok, true, k);
    for (const k of ['ping4', 'ping6']) assert.deepEqual(inside.get(k), out.get(k), k);
    // The rest is refused with EPERM where the kernel could make it at all (SCTP needs its module).
    let refused = 0;
    for (const k of ['raw4', 'raw6', 'rawip4', 'sctp4', 'sctp6', 'sctpseq4', 'udplite4', 'udplite6', 'mptcp4']) {
      if (!out.get(k)!.ok) {
        assert.deepEqual(inside.get(k), out.get(k), `${k}: the kernel has no such socket; the same answer in the mesh`);
        continue;
      }
      assert.deepEqual(inside.get(k), { kind: k, ok: false, errno: 'EPERM' }, k);
      refused++;
    }
    assert.ok(refused >= 4, `only ${refused} kinds could be tried`); // raw ones at least
  });

  test('UDP is judged inbound: a socket made outside the mesh in a denied pod does not reach the pod', async () => {
    const udp = async (pod: string, target: string, outsideMesh = false) =>
      (await sb.podtool(pod, ['udp', '--target', target, '--count', '1', '--reply-timeout-ms', '1500'], { outsideMesh })).last;
    assert.equal((await udp('client', `${web().ipv4}:5353`)).received, 1, 'control: the allowed client');
    for (const target of [`${web().ipv4}:5353`, `[${web().ipv6}]:5353`]) {
      const d = await counted(() => udp('denied', target, true));
      assert.equal(d.r.received, 0, `${target}: ${JSON.stringify(d.r)}`);
      assert.ok(d.deniedIngress >= 1, target);
    }
    // Inside the mesh the same pod is refused at sendmsg().
    assert.deepEqual((await udp('denied', `${web().ipv4}:5353`)).errors, { EACCES: 1 });
  });

  test("UDP replies to a flow the pod began are not judged by the pod's own policy", async () => {
    // `other` is not on web's ALLOW list, but web asked it: the answer comes back.
    const r = await sb.podtool('web', ['udp', '--target', `${sb.pod('other').ipv4}:5353`, '--count', '3', '--reply-timeout-ms', '1500']);
    assert.equal(r.last.received, 3, JSON.stringify(r.last));
    const r6 = await sb.podtool('web', ['udp', '--target', `[${sb.pod('other').ipv6}]:5353`, '--count', '1', '--reply-timeout-ms', '1500']);
    assert.equal(r6.last.received, 1, JSON.stringify(r6.last));
  });

  test('a steering record lives as long as its client socket: a later socket on the same address and port inherits nothing', async () => {
    const proxyCg = fs.statSync(sb.pod('proxy').cgroupPath, { bigint: true }).ino;
    dp.configureProxy({ proxyCgroupId: proxyCg, proxy4: sb.pod('proxy').ipv4, proxyPort: 15002 });
    const steer = SteerMap.open(dp.bpffsDir);
    try {
      const port = 47000 + (process.pid % 1000);
      const held = sb.spawn('client', [process.execPath, PODTOOL, 'connect', '--target', `${VIP4}:80`, '--local-port', String(port), '--hold-ms', String(scaled(1500))], { stdio: ['ignore', 'pipe', 'pipe'] });
      let outText = '';
      held.stdout!.setEncoding('utf8').on('data', (d: string) => (outText += d));
      const exited = new Promise<void>((res) => held.once('exit', () => res()));
      assert.ok(await waitUntil(() => outText.includes('"connected"'), 10_000, 20), outText);
      // The proxy stand-in does not read the record: it is there while the client socket is open...
      const rec = steer.lookup(sb.pod('client').ipv4, port);
      assert.deepEqual(rec?.orig, { ip: VIP4, port: 80 }, outText);
      await exited;
      assert.match(outText, /"closed":true/);
      // ...and gone once it closed, before the port could serve another socket (an IP reused by
      // another pod, a port reused after TIME_WAIT).
      assert.ok(await waitUntil(() => steer.lookup(sb.pod('client').ipv4, port) === undefined, 5000, 20), 'record deleted at close');
      // A socket on that address and port that goes to the proxy directly is not steered: it
      // finds no record, so the proxy refuses it (403 "not steered") instead of using the old one.
      const direct = await sb.podtool('client', ['connect', '--target', `${sb.pod('proxy').ipv4}:15002`, '--local-port', String(port), '--hold-ms', '200']);
      assert.equal(direct.last.ok, true, JSON.stringify(direct.last));
      assert.equal(steer.lookup(sb.pod('client').ipv4, port), undefined);
    } finally {
      steer.close();
      dp.configureProxy({ proxyCgroupId: proxyCg, proxy4: sb.pod('proxy').ipv4, proxyPort: 15001 });
    }
  });

  test("kubelet probes: TCP from a --probe-source address reaches every port unjudged, as ztunnel lets probes in; UDP from it does not", async () => {
    // The unmeshed pod stands in for the node's address kubelet connects from.
    const proxies = [sb.pod('proxy').ipv4, sb.pod('proxy').ipv6!];
    const probe = async (target: string) => (await sb.podtool('outsider', ['ids', '--target', target, '--count', '1', '--connect-timeout-ms', '1500'])).last;
    try {
      assert.deepEqual(rec.apply(desiredState(model(), 'node1', { ...podNamespaces(sb), proxies, probeSources: [sb.pod('outsider').ipv4, sb.pod('outsider').ipv6!] })).errors, []);
      // The port with HTTP rules and the one behind an ALLOW list that does not name it.
      for (const target of [`${web().ipv4}:8080`, `[${web().ipv6}]:8080`, `${web().ipv4}:8081`]) assert.deepEqual((await probe(target)).ids, { web: 1 }, target);
      const udp = (await sb.podtool('outsider', ['udp', '--target', `${web().ipv4}:5353`, '--count', '1', '--reply-timeout-ms', '1500'])).last;
      assert.equal(udp.received, 0, JSON.stringify(udp));
    } finally {
      assert.deepEqual(rec.apply(desiredState(model(), 'node1', { ...podNamespaces(sb), proxies })).errors, []);
    }
    // Not a probe source any more: judged again.
    assert.deepEqual((await probe(`${web().ipv4}:8081`)).errors, { ETIMEDOUT: 1 });
  });

  test('a meshed caller the agent cannot name is judged fail closed; a source outside the mesh as Istio judges plaintext', async () => {
    const target = `${sb.pod('other').ipv4}:8080`;
    assert.deepEqual((await connect('client', target)).ids, { other: 1 });
    assert.deepEqual((await connect('denied', target)).errors, { EACCES: 1 });
    // The proxy pod is in the meshed cgroup but no workload: it could be anyone, so a namespace
    // DENY counts as matching it (SM_IDENTITY_UNRESOLVED).
    const d = await counted(() => connect('proxy', target));
    assert.deepEqual(d.r.errors, { EACCES: 1 }, JSON.stringify(d.r));
    assert.equal(d.deniedConnect, 1);
    // An unmeshed pod has no identity at all: rules naming namespaces do not match it.
    assert.deepEqual((await connect('outsider', target)).ids, { other: 1 });
  });
});
