// Envoy → model: the real Istio config dumps (test/fixtures/istio/configdump, copies of
// the shared fixtures) and a hand-written sidecar-shaped resource set
// (test/fixtures/translate/sidecar-synthetic.json) covering what the dumps do not.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import type { Endpoint, Model } from '../core/model';
import { translateConfigDump, translateEnvoy } from '../xds/translate/envoy';
import { serviceOfCluster } from '../xds/translate/envoy-clusters';
import type { TranslateResult } from '../xds/translate/result';
import { fixtureDir, istioFixture } from './fixture-dir';

const fixturesDir = (): string => fixtureDir('translate');
const FIX = fixturesDir();
const load = (rel: string): any => JSON.parse(fs.readFileSync(path.resolve(FIX, rel), 'utf8'));

const eps = (m: Model, service: string, port?: number): Endpoint[] =>
  m.endpoints.filter((e) => e.service === service && (port === undefined || e.servicePort === port));
const backends = (m: Model, service: string, port?: number): string[] =>
  eps(m, service, port).map((e) => `${e.address}:${e.port} w${e.weight} ${e.healthy ? 'healthy' : 'unhealthy'}`);
const warned = (r: TranslateResult, resource: string, re: RegExp): boolean => r.warnings.some((w) => w.resource.startsWith(resource) && re.test(w.reason));

describe('endpoints-sidecar.json (a bare EndpointsConfigDump)', () => {
  const dump = load(istioFixture('configdump', 'endpoints-sidecar.json'));
  const r = translateConfigDump(dump);

  test('the fixture holds 37 ClusterLoadAssignments: 5 static (bootstrap) and 32 dynamic (EDS)', () => {
    const c = dump.configs[0];
    assert.equal(c['@type'], 'type.googleapis.com/envoy.admin.v3.EndpointsConfigDump');
    assert.equal(c.static_endpoint_configs.length, 5);
    assert.equal(c.dynamic_endpoint_configs.length, 32);
    assert.deepEqual(
      c.static_endpoint_configs.map((e: any) => e.endpoint_config.cluster_name),
      ['zipkin', 'sds-grpc', 'agent', 'xds-grpc', 'prometheus_stats'],
    );
  });

  test('every IP endpoint of the 28 outbound service clusters, and nothing else, is in the model', () => {
    assert.equal(r.model.endpoints.length, 32);
    assert.equal(new Set(r.model.endpoints.map((e) => `${e.service}|${e.servicePort}`)).size, 28);
    assert.deepEqual(r.model.services, [], 'no listeners, so no VIPs');
    assert.deepEqual(r.model.policies, { l4: [], l7: [] });
  });

  test('reviews: three backends with weight 1, healthy, and the workload from istio metadata', () => {
    assert.deepEqual(eps(r.model, 'default/reviews', 9080), [
      { service: 'default/reviews', address: '10.244.0.192', servicePort: 9080, port: 9080, weight: 1, healthy: true, workload: 'default/reviews-v3' },
      { service: 'default/reviews', address: '10.244.0.193', servicePort: 9080, port: 9080, weight: 1, healthy: true, workload: 'default/reviews-v2' },
      { service: 'default/reviews', address: '10.244.0.195', servicePort: 9080, port: 9080, weight: 1, healthy: true, workload: 'default/reviews-v1' },
    ]);
  });

  test('service port and backend port differ where the target port does', () => {
    assert.deepEqual(backends(r.model, 'istio-system/istiod', 443), ['10.244.0.175:15017 w1 healthy']);
    assert.deepEqual(backends(r.model, 'default/httpbin', 8000), ['10.244.0.178:80 w1 healthy']);
    assert.deepEqual(backends(r.model, 'istio-system/istio-ingressgateway', 80), ['10.244.0.176:8080 w1 healthy']);
    assert.deepEqual(backends(r.model, 'istio-system/istio-ingressgateway', 443), ['10.244.0.176:8443 w1 healthy']);
    assert.deepEqual(backends(r.model, 'default/kubernetes', 443), ['172.18.0.2:6443 w1 healthy']);
    assert.deepEqual(backends(r.model, 'kube-system/kube-dns', 53), ['10.244.0.8:53 w1 healthy', '10.244.0.3:53 w1 healthy']);
    assert.deepEqual(backends(r.model, 'kube-system/kube-dns', 9153), ['10.244.0.8:9153 w1 healthy', '10.244.0.3:9153 w1 healthy']);
  });

  test('the locality weight (3 for reviews) does not leak into endpoint weights', () => {
    assert.equal(dump.configs[0].dynamic_endpoint_configs[0].endpoint_config.endpoints[0].load_balancing_weight, 3);
    assert.ok(eps(r.model, 'default/reviews').every((e) => e.weight === 1));
  });

  test('pipe and loopback endpoints of bootstrap clusters are skipped with a reason; empty CLAs are not warned about', () => {
    assert.ok(warned(r, 'ClusterLoadAssignment sds-grpc', /pipe address .*not an IP endpoint; skipped/));
    assert.ok(warned(r, 'ClusterLoadAssignment xds-grpc', /pipe address/));
    assert.ok(warned(r, 'ClusterLoadAssignment agent', /127\.0\.0\.1 is a loopback address/));
    assert.ok(warned(r, 'ClusterLoadAssignment prometheus_stats', /loopback/));
    assert.equal(r.warnings.length, 4, JSON.stringify(r.warnings, null, 1));
    for (const n of ['zipkin', 'BlackHoleCluster', 'PassthroughCluster', 'inbound|9080||', 'InboundPassthroughClusterIpv4']) {
      assert.ok(!eps(r.model, n).length && !r.warnings.some((w) => w.resource.includes(n)), n);
    }
  });

  test('health: UNHEALTHY/DRAINING/TIMEOUT/DEGRADED are unhealthy, HEALTHY/UNKNOWN/absent healthy', () => {
    const d = structuredClone(dump);
    const lbs = d.configs[0].dynamic_endpoint_configs[0].endpoint_config.endpoints[0].lb_endpoints;
    const statuses = ['UNHEALTHY', 'DEGRADED', 'DRAINING', 'TIMEOUT', 'UNKNOWN', undefined];
    const extra = statuses.map((s, i) => ({ ...structuredClone(lbs[0]), endpoint: { address: { socket_address: { address: `10.9.9.${i + 1}`, port_value: 9080 } } }, health_status: s }));
    lbs.push(...extra);
    const m = translateConfigDump(d).model;
    assert.deepEqual(
      eps(m, 'default/reviews').slice(3).map((e) => `${e.address} ${e.healthy}`),
      ['10.9.9.1 false', '10.9.9.2 false', '10.9.9.3 false', '10.9.9.4 false', '10.9.9.5 true', '10.9.9.6 true'],
    );
  });

  test('the same dump in lowerCamelCase (the live proto3 JSON form) gives the same model', () => {
    const camel = (v: any): any =>
      Array.isArray(v)
        ? v.map(camel)
        : v && typeof v === 'object'
          ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k === 'filter_metadata' ? 'filterMetadata' : k.includes('.') || k === 'istio' ? k : k.replace(/_([a-z])/g, (_m, c) => c.toUpperCase()), camel(x)]))
          : v;
    const c = camel(dump);
    assert.ok(c.configs[0].dynamicEndpointConfigs, 'converted');
    assert.deepEqual(translateConfigDump(c).model, r.model);
  });

  test('the EndpointsConfigDump on its own (without the configs wrapper) gives the same model', () => {
    assert.deepEqual(translateConfigDump(dump.configs[0]).model, r.model);
  });

  test('the dynamic CLAs passed straight to translateEnvoy (as from an EDS stream) give the same endpoints', () => {
    const clas = dump.configs[0].dynamic_endpoint_configs.map((e: any) => e.endpoint_config);
    assert.deepEqual(translateEnvoy({ endpoints: clas }).model.endpoints, r.model.endpoints);
  });
});

describe('waypoint-full.json (a whole waypoint dump)', () => {
  const r = translateConfigDump(load(istioFixture('configdump', 'waypoint-full.json')));

  test('the internal listener matcher maps VIP 10.104.171.68 ports 8000 and 8100 to httpbin', () => {
    assert.deepEqual(r.model.services, [
      { namespace: 'default', name: 'httpbin', vips: ['10.104.171.68'], ports: [{ port: 8000, protocol: 'TCP' }, { port: 8100, protocol: 'TCP' }] },
    ]);
    assert.deepEqual(
      r.destinations!.map((d) => `${d.vip}:${d.port} ${d.clusters.map((c) => c.name).join()}`),
      ['10.104.171.68:8000 inbound-vip|8000|http|httpbin.default.svc.cluster.local', '10.104.171.68:8100 inbound-vip|8100|http|httpbin.default.svc.cluster.local'],
    );
  });

  test('no backends: 8000 has no CLA, 8100 only an Envoy-internal address; both are said', () => {
    assert.deepEqual(r.model.endpoints, []);
    assert.ok(warned(r, 'destination 10.104.171.68:8000', /has no ClusterLoadAssignment/));
    assert.ok(warned(r, 'ClusterLoadAssignment inbound-vip|8100', /Envoy internal address \(listener "connect_originate"\) is not an IP endpoint; skipped/));
    assert.ok(warned(r, 'destination 10.104.171.68:8100', /has no backends: connections to it are refused/));
  });

  test('static clusters keep only usable endpoints; chains without a port and the health listener are warned', () => {
    assert.ok(warned(r, 'cluster agent', /loopback/));
    assert.ok(warned(r, 'listener main_internal chain direct-tcp', /no destination port/));
    assert.ok(warned(r, 'listener main_internal chain direct-http', /no destination port/));
    assert.ok(warned(r, 'listener static 0.0.0.0:15021', /no destination IP/));
    assert.ok(!r.warnings.some((w) => w.resource.startsWith('route ')), 'the inline route config listed under static_route_configs is in use');
    assert.deepEqual(r.model.policies, { l4: [], l7: [] });
  });
});

describe('http-route-cluster-listener.json', () => {
  const r = translateConfigDump(load(istioFixture('configdump', 'http-route-cluster-listener.json')));
  test('a route config no listener uses and a subset cluster without endpoints give no service, with a warning for the route', () => {
    assert.deepEqual(r.model, { services: [], endpoints: [], workloads: [], policies: { l4: [], l7: [] } });
    assert.deepEqual(r.warnings, [{ resource: 'route http.8080', reason: 'not used by any listener, so no VIP:port leads to it; not translated' }]);
  });
  test('the route and cluster are understood once a listener uses them', () => {
    const d = load(istioFixture('configdump', 'http-route-cluster-listener.json'));
    const listener = {
      name: '0.0.0.0_8080',
      address: { socket_address: { address: '10.96.50.1', port_value: 8080 } },
      filter_chains: [
        {
          filters: [
            {
              name: 'envoy.filters.network.http_connection_manager',
              typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager', rds: { route_config_name: 'http.8080' } },
            },
          ],
        },
      ],
    };
    d.configs[2].dynamic_listeners.push({ name: '0.0.0.0_8080', active_state: { listener } });
    const r2 = translateConfigDump(d);
    // Every route goes to outbound|9080||productpage (no CDS entry in this dump): service known, no backends.
    assert.deepEqual(r2.model.services, [{ namespace: 'default', name: 'productpage', vips: ['10.96.50.1'], ports: [{ port: 8080, protocol: 'TCP' }] }]);
    assert.ok(warned(r2, 'destination 10.96.50.1:8080', /cluster outbound\|9080\|\|productpage.default.svc.cluster.local is not known/));
  });
});

describe('sidecar-synthetic.json (outbound/inbound listeners, RDS, every cluster type)', () => {
  const input = load('sidecar-synthetic.json');
  const r = translateEnvoy(input);
  const m = r.model;
  const svc = (ref: string) => m.services.find((s) => `${s.namespace}/${s.name}` === ref);

  test('per-VIP TCP listener: kube-dns, weights, health per Envoy semantics, hostname skipped, priority kept', () => {
    assert.deepEqual(svc('kube-system/kube-dns'), { namespace: 'kube-system', name: 'kube-dns', vips: ['10.96.0.10'], ports: [{ port: 53, protocol: 'TCP' }] });
    assert.deepEqual(backends(m, 'kube-system/kube-dns', 53), [
      '10.244.0.8:53 w3 healthy',
      '10.244.0.3:53 w1 unhealthy',
      '10.244.0.4:53 w1 unhealthy', // DEGRADED
      '10.244.0.5:53 w1 unhealthy', // DRAINING
      '10.244.0.6:53 w1 unhealthy', // TIMEOUT
      '10.244.0.7:53 w1 healthy', // UNKNOWN
      '10.245.0.9:5353 w1 healthy',
    ]);
    const first = eps(m, 'kube-system/kube-dns')[0];
    assert.deepEqual(first.locality, { region: 'eu-west1', zone: 'eu-west1-b' });
    assert.equal(first.workload, 'kube-system/coredns');
    assert.equal(eps(m, 'kube-system/kube-dns')[6].priority, 1);
    assert.ok(warned(r, 'ClusterLoadAssignment outbound|53||kube-dns', /lbEndpoints\[6\]: host name "dns.example.com": the kernel datapath needs IPs; skipped/));
  });

  test('0.0.0.0_PORT listener: prefix-range chain → TCP service; non-host prefix warned', () => {
    assert.deepEqual(svc('db/mongo'), { namespace: 'db', name: 'mongo', vips: ['10.96.5.5'], ports: [{ port: 9080, protocol: 'TCP' }] });
    // 4000000:2000000 reduced exactly to 2:1 (EDS service name differs from the cluster name).
    assert.deepEqual(backends(m, 'db/mongo'), ['10.244.3.1:27017 w2 healthy', '10.244.3.2:27017 w1 healthy']);
    assert.ok(warned(r, 'listener 0.0.0.0_9080 chain wide', /10\.100\.0\.0\/16 is not a single address/));
  });

  test('HTTP via RDS: VIPs from virtual host domains, catch-all route chosen over a path route', () => {
    assert.deepEqual(svc('default/reviews'), { namespace: 'default', name: 'reviews', vips: ['10.96.1.1', 'fd00:96::1:1'], ports: [{ port: 9080, protocol: 'TCP' }] });
    assert.deepEqual(backends(m, 'default/reviews'), ['10.244.1.1:9080 w1 healthy', '10.244.1.2:9080 w1 healthy', '10.244.1.3:9080 w1 healthy']);
    assert.ok(warned(r, 'route 9080 vhost reviews', /pick between clusters .*v2.* per request .* all connections go to outbound\|9080\|\|reviews/));
    // 10.96.2.2:8888 is for another port and is ignored; the IPv6 additional address is a second backend.
    assert.deepEqual(svc('default/ratings')!.vips, ['10.96.2.2']);
    assert.deepEqual(backends(m, 'default/ratings'), ['10.244.2.1:9080 w1 healthy', 'fd00:10:244::2:1:9080 w1 healthy']);
    assert.ok(warned(r, 'route unused-route', /not used by any listener/));
  });

  test('tcp_proxy weighted clusters 90/10 over 3+1 backends → exact effective weights 3,3,3,1', () => {
    assert.deepEqual(backends(m, 'db/mysql', 3306), [
      '10.244.4.1:3306 w3 healthy',
      '10.244.4.2:3306 w3 healthy',
      '10.244.4.3:3306 w3 healthy',
      '10.244.4.9:3306 w1 healthy',
    ]);
    assert.deepEqual(svc('db/mysql')!.vips, ['10.96.7.7']);
  });

  test('cluster types the kernel cannot hold are skipped with the reason, and so are their VIPs', () => {
    const reasons = Object.fromEntries(r.warnings.filter((w) => w.resource.startsWith('cluster ')).map((w) => [w.resource.slice(8), w.reason]));
    assert.equal(reasons['outbound|443||api.example.com'], 'STRICT_DNS: backends are resolved by DNS at connect time; the kernel datapath needs IPs; skipped');
    assert.match(reasons['outbound|80||legacy.example.com'], /^LOGICAL_DNS: /);
    assert.match(reasons['PassthroughCluster'], /^ORIGINAL_DST: connections go to their original destination/);
    assert.match(reasons['aggregate-mysql'], /^custom cluster type envoy.clusters.aggregate/);
    assert.ok(warned(r, 'destination 10.96.9.9:443', /skipped \(STRICT_DNS\)/));
    assert.ok(!m.services.some((s) => s.vips.includes('10.96.9.9')));
    assert.ok(warned(r, 'listener virtualOutbound chain virtualOutbound-catchall-tcp', /no destination port/));
  });

  test('a STATIC cluster with an inline load assignment and a dual-stack listener; a non-Istio name keeps namespace ""', () => {
    assert.deepEqual(svc('/static-backend'), { namespace: '', name: 'static-backend', vips: ['10.96.8.8', '2001:db8:96::8'], ports: [{ port: 8080, protocol: 'TCP' }] });
    assert.deepEqual(backends(m, '/static-backend'), ['192.0.2.10:8080 w1 healthy', '2001:db8::10:8080 w2 healthy']);
  });

  test('an Istio service cluster no listener reaches still yields its endpoints; subsets do not', () => {
    assert.deepEqual(backends(m, 'default/orphan', 8080), ['10.244.6.1:8080 w1 healthy']);
    assert.ok(!m.services.some((s) => s.name === 'orphan'));
    // reviews v2 (a subset) adds no second copy of 10.244.1.2.
    assert.equal(eps(m, 'default/reviews').filter((e) => e.address === '10.244.1.2').length, 1);
  });

  test('policies: inbound network RBAC (same on tls and plaintext chains) → one L4 ALLOW; HTTP url_path RBAC → L7; dry-run DENY → dryRun', () => {
    assert.deepEqual(m.policies!.l4, [
      {
        name: 'shop/no-legacy/rule[0]',
        action: 'DENY',
        dryRun: true,
        when: { or: [{ sourceIp: { address: '192.168.0.0', prefixLen: 16 } }, { principal: { exact: 'spiffe://cluster.local/ns/legacy/sa/default' } }] },
        scope: { kind: 'destinations', destinations: [{ ip: '10.96.3.3', port: 80 }] },
        origin: 'envoy.filters.http.rbac',
      },
      {
        name: 'default/reviews-viewer/rule[0]',
        action: 'ALLOW',
        dryRun: false,
        when: { and: [{ destinationPort: 9080 }, { namespace: { exact: 'frontend' } }] },
        scope: { kind: 'destinations', destinations: [{ port: 9080 }] },
        origin: 'envoy.filters.network.rbac',
      },
    ]);
    assert.equal(m.policies!.l7.length, 1);
    assert.deepEqual(m.policies!.l7[0].destination, { port: 8080 });
    assert.equal(m.policies!.l7[0].filters[0].name, 'envoy.filters.http.rbac');
    assert.deepEqual(Object.keys((m.policies!.l7[0].filters[0].config as any).rules.policies), ['ns[default]-policy[admin-only]-rule[0]']);
  });

  test('a listener bound only to loopback is not a mesh destination (not mistaken for a wildcard)', () => {
    const lo = structuredClone(input.listeners.find((l: any) => l.name === '10.96.8.8_8080'));
    lo.name = 'admin';
    lo.address.socketAddress.address = '127.0.0.1';
    delete lo.additionalAddresses;
    const r2 = translateEnvoy({ ...input, listeners: [lo] });
    assert.deepEqual(r2.model.services, []);
    assert.ok(warned(r2, 'listener admin', /address 127\.0\.0\.1: .*loopback.*; it cannot be a VIP/));
  });

  test('every model address and weight is one the datapath accepts', () => {
    for (const e of m.endpoints) {
      assert.ok(e.weight >= 1 && e.weight <= 1_000_000 && Number.isInteger(e.weight), JSON.stringify(e));
      assert.ok(e.port! >= 1 && e.port! <= 65535);
    }
  });

  test('the same resources as an admin ConfigDump give the same model', () => {
    const dump = {
      configs: [
        { '@type': 'type.googleapis.com/envoy.admin.v3.ClustersConfigDump', dynamic_active_clusters: input.clusters.map((c: any) => ({ cluster: c })) },
        { '@type': 'type.googleapis.com/envoy.admin.v3.ListenersConfigDump', dynamic_listeners: input.listeners.map((l: any) => ({ name: l.name, active_state: { listener: l } })) },
        { '@type': 'type.googleapis.com/envoy.admin.v3.RoutesConfigDump', dynamic_route_configs: input.routes.map((x: any) => ({ route_config: x })) },
        { '@type': 'type.googleapis.com/envoy.admin.v3.EndpointsConfigDump', dynamic_endpoint_configs: input.endpoints.map((x: any) => ({ endpoint_config: x })) },
      ],
    };
    assert.deepEqual(translateConfigDump(dump).model, m);
  });
});

describe('config dump states', () => {
  test('active resources are used; warming ones only when not active; error states are reported', () => {
    const cluster = (name: string) => ({ name, type: 'STATIC', load_assignment: { cluster_name: name, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '10.1.1.1', port_value: 80 } } } }] }] } });
    const listener = (name: string, vip: string, c: string) => ({
      name,
      address: { socket_address: { address: vip, port_value: 80 } },
      filter_chains: [{ filters: [{ name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', cluster: c } }] }],
    });
    const dump = {
      configs: [
        {
          '@type': 'type.googleapis.com/envoy.admin.v3.ClustersConfigDump',
          dynamic_active_clusters: [{ cluster: cluster('a') }],
          dynamic_warming_clusters: [{ cluster: { ...cluster('a'), type: 'STRICT_DNS' } }, { cluster: cluster('b') }],
        },
        {
          '@type': 'type.googleapis.com/envoy.admin.v3.ListenersConfigDump',
          dynamic_listeners: [
            { name: 'la', active_state: { listener: listener('la', '10.96.0.1', 'a') }, draining_state: { listener: listener('la', '10.96.0.9', 'a') } },
            { name: 'lb', warming_state: { listener: listener('lb', '10.96.0.2', 'b') } },
            { name: 'lc', error_state: { details: 'bad filter' } },
          ],
        },
      ],
    };
    const r = translateConfigDump(dump);
    assert.deepEqual(
      r.model.services.map((s) => `${s.name} ${s.vips}`),
      ['a 10.96.0.1', 'b 10.96.0.2'],
    );
    assert.ok(warned(r, 'cluster b', /is warming/));
    assert.ok(warned(r, 'listener lb', /is warming/));
    assert.ok(warned(r, 'listener lc', /Envoy rejected its last update: bad filter/));
    assert.ok(!warned(r, 'cluster a', /STRICT_DNS/), 'the warming version of an active cluster is ignored');
    assert.deepEqual(translateConfigDump({ nothing: true }).warnings, [{ resource: 'config dump', reason: 'not an Envoy admin ConfigDump (no "configs" list and no "@type")' }]);
  });
});

describe('service identity from cluster names', () => {
  test('Istio names, metadata, fallback', () => {
    assert.deepEqual(serviceOfCluster('outbound|9080|v1|reviews.default.svc.cluster.local'), {
      namespace: 'default',
      name: 'reviews',
      port: 9080,
      subset: 'v1',
      direction: 'outbound',
      from: 'cluster-name',
    });
    assert.deepEqual(serviceOfCluster('outbound|80||web.shop.svc.corp.example'), { namespace: 'shop', name: 'web', port: 80, direction: 'outbound', from: 'cluster-name' });
    assert.deepEqual(serviceOfCluster('inbound-vip|8000|http|httpbin.default.svc.cluster.local'), {
      namespace: 'default',
      name: 'httpbin',
      port: 8000,
      direction: 'inbound-vip',
      from: 'cluster-name',
    });
    const meta = { metadata: { filterMetadata: { istio: { services: [{ host: 'api.example.com', name: 'api.example.com', namespace: 'egress' }] } } } };
    assert.deepEqual(serviceOfCluster('outbound|443||api.example.com', meta), { namespace: 'egress', name: 'api.example.com', port: 443, direction: 'outbound', from: 'metadata' });
    assert.deepEqual(serviceOfCluster('outbound|443||api.example.com'), { namespace: '', name: 'api.example.com', port: 443, direction: 'outbound', from: 'fallback' });
    assert.deepEqual(serviceOfCluster('my_backend'), { namespace: '', name: 'my_backend', from: 'fallback' });
  });
});
