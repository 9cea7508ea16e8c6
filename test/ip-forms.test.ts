// One rule for addresses everywhere (core/ip.ts): the same address and range, written in each of
// its forms (IPv4, IPv4-mapped IPv6 in dotted and hex tails, upper case, uncompressed), gives the
// same answer in every layer that reads addresses: the translators (Envoy RBAC and ambient
// Authorization), the L4 policy compiler, the kernel codecs and the kernel itself, the L7 proxy's
// RBAC evaluator and its origin lookup, and the config file.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { canonicalIp, familyOf, ipToBytes, parseAddress, parseRange, inRange, AF_INET } from '../core/ip';
import type { Cidr, L4Expr, Model, Workload } from '../core/model';
import { parseConfigText } from '../config';
import { splitRbacFilters, authorizationExpr } from '../xds/translate';
import { evalExpr } from '../mesh-agent/datapath/policy';
import { steerKey } from '../abi/codecs';
import { compileRbacFilters, HTTP_RBAC_FILTER } from '../proxy/rbac';
import { peerIp } from '../proxy/server';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { desiredState, Reconciler } from '../mesh-agent/datapath/reconciler';
import { Sandbox } from '../sandbox/sandbox';
import { kernelSkip, podNamespaces } from './kernel';

/** 10.1.2.3 in every form a config, a feed or a socket may use. */
const ADDRESS_FORMS = ['10.1.2.3', '::ffff:10.1.2.3', '::FFFF:10.1.2.3', '::ffff:a01:203', '0:0:0:0:0:ffff:0a01:0203'];
/** 10.0.0.0/8 in its IPv4 and IPv4-mapped forms (host bits set in some: they are ignored). */
const RANGE_FORMS: Array<[string, number]> = [
  ['10.0.0.0', 8],
  ['10.9.9.9', 8],
  ['::ffff:10.0.0.0', 104],
  ['::ffff:a00:0', 104],
  ['::ffff:10.200.0.1', 104],
];
/** Addresses outside 10.0.0.0/8, and the IPv6 range that covers the mapped space but is not IPv4. */
const OUTSIDE = ['11.0.0.1', '::ffff:11.0.0.1', 'fd00::10'];

/** ambient's NetworkAddress bytes as written: 4 for IPv4 text, 16 for (mapped) IPv6 text. */
const ambientBytes = (text: string): string => {
  const v4 = Buffer.from(parseAddress(text)!.bytes); // every range form here is IPv4 or IPv4-mapped
  const b = text.includes(':') ? Buffer.concat([Buffer.alloc(10), Buffer.from([0xff, 0xff]), v4]) : v4;
  return b.toString('base64');
};

/** Envoy's network RBAC filter denying connections from the range. */
const denyFrom = (address: string, prefixLen: number) => ({
  name: 'envoy.filters.network.rbac',
  typedConfig: {
    '@type': 'type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC',
    statPrefix: 'tcp.',
    rules: { action: 'DENY', policies: { p: { permissions: [{ any: true }], principals: [{ directRemoteIp: { addressPrefix: address, prefixLen } }] } } },
  },
});

test('core: every form of the address is one address, and in every form of the range', () => {
  for (const a of ADDRESS_FORMS) {
    assert.equal(canonicalIp(a), '10.1.2.3', a);
    for (const [r, len] of RANGE_FORMS) {
      const range = parseRange(r, len);
      assert.ok(typeof range !== 'string', `${r}/${len}: ${String(range)}`);
      assert.equal(inRange(parseAddress(a)!, range), true, `${a} in ${r}/${len}`);
    }
  }
  for (const a of OUTSIDE) for (const [r, len] of RANGE_FORMS) assert.equal(inRange(parseAddress(a)!, parseRange(r, len) as never), false, `${a} in ${r}/${len}`);
  // A mapped range shorter than /96 also covers non-mapped IPv6: it stays IPv6, and no IPv4 is in it.
  const wide = parseRange('::ffff:10.0.0.0', 95);
  assert.ok(typeof wide !== 'string' && wide.family === 6);
  assert.equal(inRange(parseAddress('10.1.2.3')!, wide as never), false);
});

test('config file: a mapped VIP or workload IP is the IPv4 address', () => {
  for (const a of ADDRESS_FORMS) {
    const cfg = parseConfigText(`services:\n  - { name: web, vips: ["${a}"], ports: [{ port: 80 }] }\nworkloads:\n  - { name: w, ips: ["${a}"] }\n`);
    assert.deepEqual(cfg.model.services[0].vips, ['10.1.2.3'], a);
    assert.deepEqual(cfg.model.workloads[0].ips, ['10.1.2.3'], a);
  }
});

test('translators: Envoy RBAC and ambient Authorization give the one IPv4 range for every form', () => {
  for (const [r, len] of RANGE_FORMS) {
    const split = splitRbacFilters({ ip: '10.9.0.1', port: 80 }, [denyFrom(r, len)]);
    assert.equal(split.rejected, undefined, `${r}/${len}: ${split.rejected}`);
    assert.equal(split.l4.length, 1, `${r}/${len}`);
    const sources: Cidr[] = [];
    const walk = (e: L4Expr): void => {
      if ('sourceIp' in e) sources.push(e.sourceIp);
      for (const k of ['and', 'or'] as const) if (k in e) (e as Record<typeof k, L4Expr[]>)[k].forEach(walk);
      if ('not' in e) walk(e.not);
    };
    walk(split.l4[0].when);
    assert.deepEqual(sources, [{ address: '10.0.0.0', prefixLen: 8 }], `Envoy ${r}/${len}`);

    const expr = authorizationExpr({ name: 'x', namespace: 'ns', scope: 'GLOBAL', action: 'DENY', groups: [{ rules: [{ matches: [{ sourceIps: [{ address: ambientBytes(r), length: len }] }] }] }] });
    assert.deepEqual(expr, { sourceIp: { address: '10.0.0.0', prefixLen: 8 } }, `ambient ${r}/${len}`);
  }
});

test('L4 compiler: a source range matches every form of a source address', () => {
  for (const [r, len] of RANGE_FORMS) {
    for (const a of ADDRESS_FORMS) {
      assert.equal(evalExpr({ sourceIp: { address: r, prefixLen: len } }, { sourceIps: [a], destinationIp: '10.9.0.1' }), true, `${a} in ${r}/${len}`);
      assert.equal(evalExpr({ destinationIp: { address: r, prefixLen: len } }, { destinationIp: a }), true, `dst ${a} in ${r}/${len}`);
    }
    for (const a of OUTSIDE) assert.equal(evalExpr({ sourceIp: { address: r, prefixLen: len } }, { sourceIps: [a], destinationIp: '10.9.0.1' }), false, `${a} in ${r}/${len}`);
  }
});

test('kernel codecs: every form is written as the same IPv4 key', () => {
  const want = steerKey.encode({ ip: '10.1.2.3', port: 4000 });
  for (const a of ADDRESS_FORMS) {
    assert.equal(familyOf(a), AF_INET, a);
    assert.deepEqual(ipToBytes(a), ipToBytes('10.1.2.3'), a);
    assert.deepEqual(steerKey.encode({ ip: a, port: 4000 }), want, a);
  }
  // A dual-stack peer may carry a zone: the key is that of the address.
  assert.deepEqual(steerKey.encode({ ip: 'fe80::1%eth0', port: 4000 }), steerKey.encode({ ip: 'fe80::1', port: 4000 }));
});

test('L7 proxy: the RBAC evaluator and the peer address agree for every form', () => {
  for (const [r, len] of RANGE_FORMS) {
    const ev = compileRbacFilters([
      {
        name: HTTP_RBAC_FILTER,
        config: { rules: { action: 'DENY', policies: { p: { permissions: [{ any: true }], principals: [{ directRemoteIp: { addressPrefix: r, prefixLen: len } }] } } } },
      },
    ]);
    const req = (ip: string) => ({ method: 'GET', path: '/', headers: {}, sourceIp: ip, sourcePort: 40000, directRemoteIp: ip, remoteIp: ip, destinationIp: '10.9.0.1', destinationPort: 80 });
    for (const a of ADDRESS_FORMS) {
      assert.equal(ev.evaluate(req(a)).allow, false, `${a} in ${r}/${len}`);
      assert.equal(peerIp(a), '10.1.2.3', a);
    }
    for (const a of OUTSIDE) assert.equal(ev.evaluate(req(a)).allow, true, `${a} not in ${r}/${len}`);
  }
});

describe('[kernel] a DENY written in IPv4-mapped form holds for IPv4 pods in the kernel', kernelSkip(), () => {
  let sb: Sandbox;
  let dp: Datapath;
  const VIP = '198.19.0.61';

  const model = (range: [string, number]): Model => {
    const w = (n: string): Workload => ({ namespace: 'default', name: n, serviceAccount: n, ips: [sb.pod(n).ipv4], node: 'node1', cgroup: sb.pod(n).cgroupPath });
    const split = splitRbacFilters({ ip: sb.pod('web').ipv4, port: 8080 }, [denyFrom(...range)]);
    assert.equal(split.l4.length, 1);
    return {
      services: [{ namespace: 'default', name: 'web', vips: [VIP], ports: [{ port: 80, protocol: 'TCP', targetPort: 8080 }] }],
      endpoints: [{ service: 'default/web', address: sb.pod('web').ipv4, weight: 1, healthy: true }],
      workloads: [w('client'), w('other'), w('web')],
      policies: { l4: split.l4, l7: [] },
    };
  };
  const connect = async (pod: string, target: string) => (await sb.podtool(pod, ['connect', '--target', target, '--connect-timeout-ms', '1500'])).last;

  before(async () => {
    sb = await Sandbox.create({ nodes: [{ name: 'node1', pods: [{ name: 'client' }, { name: 'other' }, { name: 'web' }] }] });
    await sb.startServer('web', ['serve', '--port', '8080', '--mode', 'id', '--name', 'web']);
    dp = Datapath.install({ cgroupPath: sb.node('node1').cgroupPath, bpffsDir: path.join(sb.ensureBpffsDir(), 'ipforms') });
  });

  after(async () => {
    dp?.close();
    if (dp) Datapath.remove(dp.bpffsDir);
    await sb?.teardown();
  });

  test("the client's address as ::ffff:a.b.c.d/128 denies it by pod IP and VIP; another pod still connects", async () => {
    const rec = new Reconciler(dp);
    rec.adopt();
    assert.deepEqual(rec.apply(desiredState(model([`::ffff:${sb.pod('client').ipv4}`, 128]), 'node1', podNamespaces(sb))).errors, []);
    const web = sb.pod('web').ipv4;
    assert.equal((await connect('client', `${web}:8080`)).err, 'EACCES');
    assert.equal((await connect('client', `${VIP}:80`)).err, 'EACCES');
    assert.equal((await connect('other', `${web}:8080`)).ok, true);
    assert.equal((await connect('other', `${VIP}:80`)).ok, true);
  });
});
