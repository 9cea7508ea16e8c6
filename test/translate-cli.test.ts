// `sockmesh xds translate FILE [--json]` (runTranslateCli): output, JSON shape, exit codes.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { runTranslateCli } from '../xds/translate/cli';
import { fixtureDir, istioFixture } from './fixture-dir';

const fixturesDir = (): string => fixtureDir('translate');
const FIX = fixturesDir();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sockmesh-translate-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const write = (name: string, content: string): string => {
  const f = path.join(tmp, name);
  fs.writeFileSync(f, content);
  return f;
};

function run(...args: string[]): { code: number; out: string; err: string } {
  let out = '';
  let err = '';
  const code = runTranslateCli(args, { out: (s) => void (out += s), err: (s) => void (err += s) });
  return { code, out, err };
}

const b64 = (ip: string) => Buffer.from(ip.split('.').map(Number)).toString('base64');

describe('sockmesh xds translate', () => {
  test('a config dump, human output: services with VIP:port → cluster, endpoints, warnings', () => {
    const r = run(istioFixture('configdump', 'waypoint-full.json'));
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /Envoy config dump → 1 service\(s\), 0 endpoint\(s\)/);
    assert.match(r.out, /SERVICES\n\s+SERVICE\s+VIP:PORT\s+PROTO\s+BACKENDS\s+CLUSTER \/ TARGET\n\s+default\/httpbin\s+10\.104\.171\.68:8000\s+TCP\s+0 \(0 healthy\)\s+inbound-vip\|8000\|http\|httpbin/);
    assert.match(r.out, /WARNINGS \(left out, and why\)\n(.*\n)*\s+- ClusterLoadAssignment inbound-vip\|8100\|http\|httpbin.default.svc.cluster.local: endpoints\[0\]\.lbEndpoints\[0\]: Envoy internal address/);
  });

  test('a config dump with --json: exactly {services, endpoints, workloads, policies, warnings}', () => {
    const r = run(istioFixture('configdump', 'endpoints-sidecar.json'), '--json');
    assert.equal(r.code, 0, r.err);
    const j = JSON.parse(r.out);
    assert.deepEqual(Object.keys(j), ['services', 'endpoints', 'workloads', 'policies', 'warnings']);
    assert.deepEqual(Object.keys(j.policies), ['l4', 'l7']);
    assert.equal(j.endpoints.length, 32);
    assert.deepEqual(j.endpoints[0], { service: 'default/reviews', address: '10.244.0.192', servicePort: 9080, port: 9080, weight: 1, healthy: true, workload: 'default/reviews-v3' });
    assert.equal(j.warnings.length, 4);
    assert.deepEqual(Object.keys(j.warnings[0]), ['resource', 'reason']);
  });

  test('an ambient Authorization (YAML): the L4 policy rendered readably', () => {
    const r = run(istioFixture('ambient-authorization', 'allow-groups.yaml'));
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /\/groups\s+ALLOW\s+namespace\s+ambient\s+\(port = 80 and source namespace = "only-l4-ns" and principal = "spiffe:\/\/only-l4-principals"\) or \(source namespace = "when-l4-ns" and source ip in 10\.10\.10\.10\/32\)/);
  });

  test('a YAML list of ambient resources with @type, and {resources: [...]} of bare shapes', () => {
    const list = `- '@type': type.googleapis.com/istio.workload.Address
  service: { name: web, namespace: shop, hostname: web.shop.svc.cluster.local, addresses: [{ address: ${b64('10.96.0.5')} }], ports: [{ servicePort: 80, targetPort: 8080 }] }
- '@type': type.googleapis.com/istio.workload.Workload
  uid: shop/web-1
  name: web-1
  namespace: shop
  serviceAccount: web
  node: n1
  addresses: [${b64('10.244.0.5')}]
  services: { shop/web.shop.svc.cluster.local: { ports: [{ servicePort: 80, targetPort: 8080 }] } }
- '@type': type.googleapis.com/istio.security.Authorization
  name: only-frontend
  namespace: shop
  scope: NAMESPACE
  groups: [{ rules: [{ matches: [{ namespaces: [{ exact: frontend }] }] }] }]
`;
    const r = run(write('ambient.yaml', list), '--json');
    assert.equal(r.code, 0, r.err);
    const j = JSON.parse(r.out);
    assert.deepEqual(j.services, [{ namespace: 'shop', name: 'web', vips: ['10.96.0.5'], ports: [{ port: 80, protocol: 'TCP', targetPort: 8080 }] }]);
    assert.deepEqual(j.endpoints, [{ service: 'shop/web', address: '10.244.0.5', servicePort: 80, port: 8080, weight: 1, healthy: true, node: 'n1', workload: 'shop/web-1' }]);
    assert.equal(j.workloads[0].serviceAccount, 'web');
    assert.deepEqual(j.policies.l4[0].when, { namespace: { exact: 'frontend' } });

    const bare = JSON.stringify({
      resources: [
        { workload: { uid: 'u', name: 'w', namespace: 'x', addresses: [b64('10.244.0.6')] } },
        { name: 'deny-all', namespace: 'x', action: 'DENY', groups: [{}] },
        { kind: 'ConfigMap', metadata: { name: 'noise' } },
      ],
    });
    const r2 = run(write('bare.json', bare));
    assert.equal(r2.code, 0, r2.err);
    assert.match(r2.out, /x\/w\s+spiffe:\/\/cluster\.local\/ns\/x\/sa\/default\s+10\.244\.0\.6/);
    // No scope is GLOBAL (the proto3 default, 0).
    assert.match(r2.out, /x\/deny-all\s+DENY\s+mesh-wide\s+ambient\s+any/);
    assert.match(r2.out, /- item 2: not a resource sockmesh translates \(kind ConfigMap\); ignored/);
  });

  test('Envoy resources listed one by one (not a dump) are translated too', () => {
    const syn = JSON.parse(fs.readFileSync(path.join(FIX, 'sidecar-synthetic.json'), 'utf8'));
    const items = [...syn.clusters, ...syn.endpoints.map((e: object) => ({ '@type': 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment', ...e })), ...syn.listeners, ...syn.routes];
    const r = run(write('envoy-list.json', JSON.stringify(items)), '--json');
    assert.equal(r.code, 0, r.err);
    assert.ok(JSON.parse(r.out).services.some((s: any) => s.name === 'kube-dns'));
  });

  test('exit 1: unreadable, unparseable, or nothing recognised; exit 2: usage', () => {
    assert.equal(run(path.join(tmp, 'missing.json')).code, 1);
    const trunc = fs.readFileSync(istioFixture('configdump', 'waypoint-full.json'), 'utf8').slice(0, 5000);
    const r = run(write('trunc.json', trunc));
    assert.equal(r.code, 1);
    assert.match(r.err, /not valid JSON or YAML/);
    const k8s = run(istioFixture('authz-rbac', 'tcp-allow-only-http-in.yaml'));
    assert.equal(k8s.code, 1, 'an AuthorizationPolicy (the user-facing CRD) is not an xDS resource');
    assert.match(k8s.err, /nothing recognised/);
    assert.equal(run().code, 2);
    assert.equal(run('a', 'b').code, 2);
    assert.equal(run('--bogus', 'a').code, 2);
    assert.equal(run('--help').code, 0);
  });
});
