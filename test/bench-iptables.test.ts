// The kube-proxy-style rules of the service-scale benchmark (bench/iptables.ts, bench/scale.ts):
// the generated restore text has kube-proxy's shape, and, loaded into a sandbox node namespace,
// it really sends a pod's connections to the first and the last service's endpoint, leaves other
// addresses alone, and a partial (single-service) sync changes only that service's DNAT target.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { fullSyncRestore, KubeService, kubeJumpCommands, partialSyncRestore, restoreStats, sepChain, svcChain } from '../bench/iptables';
import { CLUSTER_CIDR, scaleServices, scaleVip } from '../bench/scale';
import { Sandbox, ServerHandle } from '../sandbox/sandbox';
import { kernelSkip } from './kernel';

const KP = { clusterCidr: CLUSTER_CIDR };
const N = 50;
const REAL = { ip: '198.18.2.10', port: 9000 };

const lines = (text: string, re: RegExp): string[] => text.split('\n').filter((l) => re.test(l));

describe('bench iptables: generated kube-proxy rules', () => {
  const services = scaleServices(N, REAL);
  const text = fullSyncRestore(services, KP);

  test('one KUBE-SERVICES jump per service, in order, and the KUBE-NODEPORTS jump last', () => {
    const jumps = lines(text, /^-A KUBE-SERVICES /);
    assert.equal(jumps.length, N + 1);
    services.forEach((s, i) => {
      assert.equal(
        jumps[i],
        `-A KUBE-SERVICES -d ${s.vip}/32 -p tcp -m comment --comment "bench/svc${i}:tcp cluster IP" -m tcp --dport ${s.port} -j ${svcChain(s)}`,
      );
    });
    assert.match(jumps[N], /-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS$/);
    assert.ok(text.startsWith('*nat\n') && text.endsWith('COMMIT\n'));
  });

  test('a KUBE-SVC and a KUBE-SEP chain per service, DNAT to its endpoint', () => {
    const svcChains = lines(text, /^:KUBE-SVC-/);
    const sepChains = lines(text, /^:KUBE-SEP-/);
    assert.equal(svcChains.length, N);
    assert.equal(sepChains.length, N);
    const names = [...svcChains, ...sepChains].map((l) => l.slice(1, l.indexOf(' ')));
    assert.equal(new Set(names).size, names.length, 'chain names are unique');
    for (const c of names) assert.ok(c.length <= 28, `${c}: iptables chain names are at most 28 characters`);
    for (const s of services) {
      const sep = sepChain(s, s.endpoints[0]);
      assert.deepEqual(lines(text, new RegExp(`^-A ${sep} .*DNAT`)), [
        `-A ${sep} -p tcp -m comment --comment bench/${s.name}:tcp -m tcp -j DNAT --to-destination ${s.endpoints[0].ip}:${s.endpoints[0].port}`,
      ]);
      assert.equal(lines(text, new RegExp(`^-A ${svcChain(s)} .*-j ${sep}$`)).length, 1);
    }
    assert.equal(restoreStats(text).rules, N + 1 + 4 + N * 4);
  });

  test('endpoints are chosen uniformly with -m statistic, the last one without', () => {
    const s: KubeService = { ...services[1], endpoints: [1, 2, 3].map((k) => ({ ip: `198.18.9.${k}`, port: 80 })) };
    const jumps = lines(fullSyncRestore([s], KP), new RegExp(`^-A ${svcChain(s)} .*KUBE-SEP-`));
    assert.equal(jumps.length, 3);
    assert.match(jumps[0], /--probability 0\.3333333333 /);
    assert.match(jumps[1], /--probability 0\.5000000000 /);
    assert.doesNotMatch(jumps[2], /statistic/);
  });

  test('a partial sync writes KUBE-SERVICES in full and only the changed service chains', () => {
    const part = partialSyncRestore(services, new Set([7]), KP);
    assert.equal(lines(part, /^-A KUBE-SERVICES /).length, N + 1);
    assert.deepEqual(
      lines(part, /^:KUBE-S(VC|EP)-/).map((l) => l.slice(1, l.indexOf(' '))),
      [svcChain(services[7]), sepChain(services[7], services[7].endpoints[0])],
    );
    assert.equal(lines(part, /^-X /).length, 0, 'stale chains are deleted only by a full sync');
    assert.deepEqual(lines(fullSyncRestore(services.slice(1), KP, [svcChain(services[0])]), /^-X /), [`-X ${svcChain(services[0])}`]);
  });

  test('VIPs past 65534 services reuse the addresses on the next port', () => {
    assert.deepEqual(scaleVip(0), { vip: '198.19.0.1', port: 80 });
    assert.deepEqual(scaleVip(65533), { vip: '198.19.255.254', port: 80 });
    assert.deepEqual(scaleVip(65534), { vip: '198.19.0.1', port: 81 });
    const keys = new Set(Array.from({ length: 100_000 }, (_, i) => `${scaleVip(i).vip}:${scaleVip(i).port}`));
    assert.equal(keys.size, 100_000);
  });
});

describe('[kernel] bench iptables: the rules in a sandbox node namespace', kernelSkip(), () => {
  let sb: Sandbox;
  const servers: ServerHandle[] = [];
  let services: KubeService[];

  const nat = async (argv: string[], input?: string): Promise<string> => {
    const r = await sb.execNode('n1', argv, { input, timeoutMs: 60_000 });
    assert.equal(r.code, 0, `${argv.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  /** Which backend ids `count` connects to `vip:port` from the client pod reach. */
  const reach = async (vip: string, port: number, count = 4): Promise<{ ids: Record<string, number>; errors: Record<string, number> }> => {
    const r = await sb.podtool('c', ['ids', '--target', `${vip}:${port}`, '--count', String(count), '--connect-timeout-ms', '2000']);
    assert.ok(r.last, `podtool ids: ${r.stdout} ${r.stderr}`);
    return { ids: r.last.ids, errors: r.last.errors };
  };

  before(async () => {
    // Client on n1 (the rules live in n1's netns); backends on n2, so replies come back through
    // n1's conntrack and are un-DNATed (a same-bridge reply would be bridged past it).
    sb = await Sandbox.create({
      prefix: 'smbench',
      nodes: [
        { name: 'n1', pods: [{ name: 'c', meshed: false }] },
        { name: 'n2', pods: [{ name: 's1', meshed: false }, { name: 's2', meshed: false }] },
      ],
    });
    for (const s of ['s1', 's2']) servers.push(await sb.startServer(s, ['serve', '--port', '9000', '--name', s, '--mode', 'id']));
    services = scaleServices(N, { ip: sb.pod('s1').ipv4, port: 9000 });
  });

  after(async () => {
    for (const s of servers) await s.stop();
    await sb?.teardown();
  });

  test('the full sync is valid iptables-restore input (--test) and loads', async () => {
    const text = fullSyncRestore(services, KP);
    await nat(['iptables-restore', '--test', '--noflush'], text);
    for (const c of kubeJumpCommands()) await nat(['iptables', ...c]);
    await nat(['iptables-restore', '--noflush', '--counters'], text);
    const saved = await nat(['iptables-save', '-t', 'nat']);
    assert.equal(lines(saved, /^-A KUBE-SERVICES /).length, N + 1);
    assert.equal(lines(saved, /DNAT/).length, N);
  });

  test('a pod reaches the real backend through the first and the last VIP', async () => {
    for (const i of [0, N - 1]) {
      const r = await reach(services[i].vip, services[i].port);
      assert.deepEqual(r.ids, { s1: 4 }, `service ${i}: ${JSON.stringify(r)}`);
    }
  });

  test('a VIP that is not in the rules is not translated', async () => {
    const other = scaleVip(N + 10); // a (VIP, port) pair of no service: no route, no DNAT
    const r = await reach(other.vip, other.port, 2);
    assert.deepEqual(r.ids, {});
    assert.equal(Object.values(r.errors).reduce((a, b) => a + b, 0), 2);
    // Right VIP, wrong port: kube-proxy matches both.
    const wrongPort = await reach(services[0].vip, services[0].port + 1, 1);
    assert.deepEqual(wrongPort.ids, {});
  });

  test('a single-service partial sync changes only that service DNAT target', async () => {
    const before = await nat(['iptables-save', '-t', 'nat']);
    const last = N - 1;
    const moved = services.map((s, i) => (i === last ? { ...s, endpoints: [{ ip: sb.pod('s2').ipv4, port: 9000 }] } : s));
    await nat(['iptables-restore', '--noflush', '--counters'], partialSyncRestore(moved, new Set([last]), KP));
    const afterSave = await nat(['iptables-save', '-t', 'nat']);

    const r = await reach(services[last].vip, services[last].port);
    assert.deepEqual(r.ids, { s2: 4 });
    assert.deepEqual((await reach(services[0].vip, services[0].port)).ids, { s1: 4 });

    // Rules of every chain but the changed service's KUBE-SVC are the same, in the same order; the
    // only new rules are the new KUBE-SEP chain's (the old one stays, unreferenced, until a full sync).
    const svc = svcChain(services[last]);
    const newSep = sepChain(moved[last], moved[last].endpoints[0]);
    const rules = (t: string) => lines(t, /^-A /).filter((l) => !l.startsWith(`-A ${svc} `));
    const b = rules(before);
    const a = rules(afterSave);
    assert.deepEqual(
      a.filter((l) => !l.startsWith(`-A ${newSep} `)),
      b,
    );
    const dnat = lines(afterSave, new RegExp(`^-A ${newSep} .*DNAT`));
    assert.equal(dnat.length, 1);
    assert.ok(dnat[0].endsWith(`-j DNAT --to-destination ${sb.pod('s2').ipv4}:9000`), dnat[0]);
    const svcRules = lines(afterSave, new RegExp(`^-A ${svc} `));
    assert.equal(svcRules.length, 2);
    assert.match(svcRules[1], new RegExp(`-j ${newSep}$`));
  });
});
