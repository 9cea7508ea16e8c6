// validateResource: the reason a resource must be NACKed, naming the field path; real resources pass.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { parse } from 'yaml';
import { TYPE } from '../xds/types';
import { validateResource } from '../xds/translate/validate';
import { fixtureDir, istioFixture } from './fixture-dir';

const fixturesDir = (): string => fixtureDir('translate');
const FIX = fixturesDir();
const json = (rel: string): any => JSON.parse(fs.readFileSync(path.resolve(FIX, rel), 'utf8'));

const cla = (lbEndpoints: unknown[]) => ({ clusterName: 'c', endpoints: [{ lbEndpoints }] });
const ep = (address: string, portValue: unknown, extra: object = {}) => ({ endpoint: { address: { socketAddress: { address, portValue } } }, ...extra });
const ok = ep('10.0.0.1', 80);
const v = (t: string, o: unknown, name = 'r') => validateResource(t, name, o);

describe('ClusterLoadAssignment', () => {
  test('port out of range, with the full field path', () => {
    assert.equal(v(TYPE.ENDPOINT, cla([ok, ok, ep('10.0.0.3', 70000)])), 'endpoints[0].lbEndpoints[2].endpoint.address.socketAddress.portValue: 70000 is out of range (1..65535)');
    assert.equal(v(TYPE.ENDPOINT, cla([ep('10.0.0.3', 0)])), 'endpoints[0].lbEndpoints[0].endpoint.address.socketAddress.portValue: 0 is out of range (1..65535)');
    assert.equal(v(TYPE.ENDPOINT, cla([ep('10.0.0.3', '80')])), null, 'proto3 JSON allows integers as strings');
    assert.equal(v(TYPE.ENDPOINT, cla([ep('10.0.0.3', 'eighty')])), 'endpoints[0].lbEndpoints[0].endpoint.address.socketAddress.portValue: "eighty" is not an integer');
    assert.equal(v(TYPE.ENDPOINT, cla([{ endpoint: { address: { socketAddress: { address: '10.0.0.1' } } } }])), 'endpoints[0].lbEndpoints[0].endpoint.address.socketAddress.portValue: is required for an endpoint (1..65535)');
  });

  test('paths use the spelling of the input (snake_case dumps)', () => {
    const o = { cluster_name: 'c', endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: '10.0.0.1', port_value: 65536 } } } }] }] };
    assert.equal(v(TYPE.ENDPOINT, o), 'endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value: 65536 is out of range (1..65535)');
  });

  test('weights: 0 and > 2^32-1 rejected (Envoy: gte 1); a locality whose weights overflow uint32', () => {
    assert.equal(v(TYPE.ENDPOINT, cla([ep('10.0.0.1', 80, { loadBalancingWeight: 0 })])), 'endpoints[0].lbEndpoints[0].loadBalancingWeight: 0 is out of range (1..4294967295)');
    assert.equal(v(TYPE.ENDPOINT, cla([ep('10.0.0.1', 80, { loadBalancingWeight: 4294967296 })])), 'endpoints[0].lbEndpoints[0].loadBalancingWeight: 4294967296 is out of range (1..4294967295)');
    assert.match(v(TYPE.ENDPOINT, cla([ep('10.0.0.1', 80, { loadBalancingWeight: 4294967295 }), ep('10.0.0.2', 80, { loadBalancingWeight: 1 })]))!, /lbEndpoints\[1\]\.loadBalancingWeight: the weights of locality 0 add up to more than 4294967295/);
    assert.equal(v(TYPE.ENDPOINT, { clusterName: 'c', endpoints: [{ loadBalancingWeight: 0, lbEndpoints: [ok] }] }), null, 'locality weight 0 is what Envoy dumps for "unset"');
  });

  test('addresses that do not parse; hostnames and pipes are valid (translation skips them)', () => {
    assert.equal(v(TYPE.ENDPOINT, cla([ep('10.0.0.999', 80)])), 'endpoints[0].lbEndpoints[0].endpoint.address.socketAddress.address: "10.0.0.999" is neither an IP address nor a host name');
    assert.equal(v(TYPE.ENDPOINT, cla([ep('not an address!', 80)])), 'endpoints[0].lbEndpoints[0].endpoint.address.socketAddress.address: "not an address!" is neither an IP address nor a host name');
    assert.equal(v(TYPE.ENDPOINT, cla([ep('', 80)])), 'endpoints[0].lbEndpoints[0].endpoint.address.socketAddress.address: is required (non-empty string)');
    assert.equal(v(TYPE.ENDPOINT, cla([ep('db.example.com', 5432)])), null);
    assert.equal(v(TYPE.ENDPOINT, cla([{ endpoint: { address: { pipe: { path: '/run/x.sock' } } } }])), null);
    assert.equal(v(TYPE.ENDPOINT, cla([{ endpoint: { address: {} } }])), 'endpoints[0].lbEndpoints[0].endpoint.address: has none of socketAddress, pipe, envoyInternalAddress');
  });

  test('other fields: cluster name, health status, priority, shapes', () => {
    assert.equal(v(TYPE.ENDPOINT, { endpoints: [] }), 'clusterName: is required (non-empty string)');
    assert.equal(v(TYPE.ENDPOINT, cla([ep('10.0.0.1', 80, { healthStatus: 'SICK' })])), 'endpoints[0].lbEndpoints[0].healthStatus: "SICK" is not one of UNKNOWN, HEALTHY, UNHEALTHY, DRAINING, TIMEOUT, DEGRADED');
    assert.equal(v(TYPE.ENDPOINT, { clusterName: 'c', endpoints: [{ priority: 129, lbEndpoints: [ok] }] }), 'endpoints[0].priority: 129 is out of range (0..128)');
    assert.equal(v(TYPE.ENDPOINT, { clusterName: 'c', endpoints: {} }), 'endpoints: must be a list, got {}');
    assert.equal(v(TYPE.ENDPOINT, cla([null])), 'endpoints[0].lbEndpoints[0]: must be an object, got null');
    assert.equal(v(TYPE.ENDPOINT, 'x'), '(resource): must be a JSON object, got "x"');
    assert.equal(validateResource(TYPE.ENDPOINT, '', cla([ok])), '(resource): has no name');
  });
});

describe('Cluster, Listener, RouteConfiguration', () => {
  test('cluster', () => {
    assert.equal(v(TYPE.CLUSTER, { type: 'EDS' }), 'name: is required (non-empty string)');
    assert.equal(v(TYPE.CLUSTER, { name: 'c', type: 'BOGUS' }), 'type: "BOGUS" is not one of STATIC, STRICT_DNS, LOGICAL_DNS, EDS, ORIGINAL_DST');
    assert.equal(v(TYPE.CLUSTER, { name: 'c', type: 'STATIC', loadAssignment: cla([ep('10.0.0.1', 99999)]) }), 'loadAssignment.endpoints[0].lbEndpoints[0].endpoint.address.socketAddress.portValue: 99999 is out of range (1..65535)');
    assert.equal(v(TYPE.CLUSTER, { name: 'c', type: 3 }), null, 'enums by number');
  });

  test('listener: address, chain match, filters, RBAC inside', () => {
    assert.equal(v(TYPE.LISTENER, { name: 'l', address: { socketAddress: { address: '0.0.0.0', portValue: 70000 } } }), 'address.socketAddress.portValue: 70000 is out of range (0..65535)');
    assert.equal(v(TYPE.LISTENER, { name: 'l', filterChains: [{ filterChainMatch: { destinationPort: 0 } }] }), 'filterChains[0].filterChainMatch.destinationPort: 0 is out of range (1..65535)');
    assert.equal(
      v(TYPE.LISTENER, { name: 'l', filterChains: [{ filterChainMatch: { prefixRanges: [{ addressPrefix: '10.0.0.0', prefixLen: 33 }] } }] }),
      'filterChains[0].filterChainMatch.prefixRanges[0].prefixLen: 33 is out of range (0..32)',
    );
    assert.equal(
      v(TYPE.LISTENER, { name: 'l', filterChains: [{ filterChainMatch: { prefixRanges: [{ addressPrefix: 'ten' }] } }] }),
      'filterChains[0].filterChainMatch.prefixRanges[0].addressPrefix: "ten" is not an IP address',
    );
    const rbac = {
      name: 'envoy.filters.network.rbac',
      typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC', rules: { policies: { p: { permissions: [{ andRules: { rules: [] } }], principals: [{ any: true }] } } } },
    };
    assert.equal(v(TYPE.LISTENER, { name: 'l', filterChains: [{ filters: [rbac] }] }), 'filterChains[0].filters[0].typedConfig.rules.policies.p.permissions[0].andRules.rules: needs at least 1 item(s)');
    const tcp = { name: 't', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', weightedClusters: { clusters: [{ name: 'a', weight: 0 }] } } };
    assert.equal(v(TYPE.LISTENER, { name: 'l', filterChains: [{ filters: [tcp] }] }), 'filterChains[0].filters[0].typedConfig.weightedClusters.clusters[0].weight: 0 is out of range (1..4294967295)');
    assert.equal(v(TYPE.LISTENER, { name: 'l', filterChains: [{ filters: [{ name: 'envoy.filters.network.rbac', typedConfig: { rules: {} } }] }] }), 'filterChains[0].filters[0].typedConfig: has no "@type"');
    // RBAC nested absurdly deep is refused, not a stack overflow.
    let perm: any = { any: true };
    for (let i = 0; i < 5000; i++) perm = { notRule: perm };
    const deep = { ...rbac, typedConfig: { ...rbac.typedConfig, rules: { policies: { p: { permissions: [perm], principals: [{ any: true }] } } } } };
    assert.match(v(TYPE.LISTENER, { name: 'l', filterChains: [{ filters: [deep] }] })!, /nested more than 64 levels deep$/);
  });

  test('route configuration', () => {
    assert.equal(v(TYPE.ROUTE, { name: 'r', virtualHosts: [{ name: 'v', domains: [] }] }), 'virtualHosts[0].domains: needs at least 1 item(s)');
    assert.equal(v(TYPE.ROUTE, { name: 'r', virtualHosts: [{ domains: ['*'] }] }), 'virtualHosts[0].name: is required (non-empty string)');
    assert.equal(v(TYPE.ROUTE, { name: 'r', virtualHosts: [{ name: 'v', domains: ['*'], routes: [{ route: { cluster: 'c' } }] }] }), 'virtualHosts[0].routes[0].match: is required');
  });
});

describe('istio.workload.Address and istio.security.Authorization', () => {
  const b = (bytes: number[]) => Buffer.from(bytes).toString('base64');
  test('address bytes must be 4 or 16 long; ports in range; one of workload/service', () => {
    assert.equal(v(TYPE.ADDRESS, { workload: { uid: 'u', addresses: [b([10, 0, 0, 1, 2])] } }), 'workload.addresses[0]: 5 bytes; an IP address has 4 (IPv4) or 16 (IPv6)');
    assert.equal(v(TYPE.ADDRESS, { workload: { uid: 'u', addresses: ['!!'] } }), 'workload.addresses[0]: "!!" is not base64');
    assert.equal(v(TYPE.ADDRESS, { workload: { uid: 'u', services: { 'ns/h': { ports: [{ servicePort: 80, targetPort: 70000 }] } } } }), 'workload.services."ns/h".ports[0].targetPort: 70000 is out of range (0..65535)');
    assert.equal(v(TYPE.ADDRESS, { workload: { uid: 'u', services: { nohost: { ports: [] } } } }), 'workload.services."nohost": key must be "namespace/hostname"');
    const svc = { name: 's', namespace: 'n', hostname: 's.n.svc.cluster.local', addresses: [{ address: b([10, 96, 0, 1]) }] };
    assert.equal(v(TYPE.ADDRESS, { service: { ...svc, ports: [{ servicePort: 0, targetPort: 80 }] } }), 'service.ports[0].servicePort: 0 is out of range (1..65535)');
    assert.equal(v(TYPE.ADDRESS, { service: { ...svc, addresses: [{ address: b([1, 2, 3]) }] } }), 'service.addresses[0].address: 3 bytes; an IP address has 4 (IPv4) or 16 (IPv6)');
    assert.equal(v(TYPE.ADDRESS, { service: { ...svc, hostname: '' } }), 'service.hostname: is required (non-empty string)');
    assert.equal(v(TYPE.ADDRESS, { service: svc, workload: { uid: 'u' } }), '(resource): has both workload and service');
    assert.equal(v(TYPE.ADDRESS, {}), '(resource): has neither workload nor service');
    assert.equal(v(TYPE.ADDRESS, { workload: { uid: 'u', status: 'DEAD' } }), 'workload.status: "DEAD" is not one of HEALTHY, UNHEALTHY');
  });

  test('Authorization: ports, CIDR lengths, string matches, enums', () => {
    const m = (match: object) => ({ name: 'p', groups: [{ rules: [{ matches: [match] }] }] });
    assert.equal(v(TYPE.AUTHORIZATION, m({ destinationPorts: [80, 65536] })), 'groups[0].rules[0].matches[0].destinationPorts[1]: 65536 is out of range (1..65535)');
    assert.equal(v(TYPE.AUTHORIZATION, m({ notDestinationPorts: [0] })), 'groups[0].rules[0].matches[0].notDestinationPorts[0]: 0 is out of range (1..65535)');
    assert.equal(v(TYPE.AUTHORIZATION, m({ sourceIps: [{ address: b([10, 0, 0, 0]), length: 33 }] })), 'groups[0].rules[0].matches[0].sourceIps[0].length: 33 is out of range (0..32)');
    assert.equal(v(TYPE.AUTHORIZATION, m({ destinationIps: [{ address: b([10, 0, 0]), length: 8 }] })), 'groups[0].rules[0].matches[0].destinationIps[0].address: 3 bytes; an IP address has 4 (IPv4) or 16 (IPv6)');
    assert.equal(v(TYPE.AUTHORIZATION, m({ principals: [{ exact: 'a', prefix: 'b' }] })), 'groups[0].rules[0].matches[0].principals[0]: must set exactly one of exact, prefix, suffix, presence (has 2)');
    assert.equal(v(TYPE.AUTHORIZATION, m({ serviceAccounts: [{ namespace: 'n' }] })), 'groups[0].rules[0].matches[0].serviceAccounts[0].serviceAccount: is required (non-empty string)');
    assert.equal(v(TYPE.AUTHORIZATION, { name: 'p', scope: 'CLUSTER' }), 'scope: "CLUSTER" is not one of GLOBAL, NAMESPACE, WORKLOAD_SELECTOR');
    assert.equal(v(TYPE.AUTHORIZATION, { name: 'p', action: 'AUDIT' }), 'action: "AUDIT" is not one of ALLOW, DENY');
    assert.equal(v(TYPE.AUTHORIZATION, { groups: [] }), 'name: is required (non-empty string)');
  });

  test('unknown type URLs are not judged', () => {
    assert.equal(validateResource('type.googleapis.com/foo.Bar', 'x', { anything: 1 }), null);
  });
});

describe('every real fixture resource is valid', () => {
  test('config dumps, the synthetic set, ambient authorizations', () => {
    const check = (t: string, name: string, o: unknown) => assert.equal(validateResource(t, name, o), null, `${t} ${name}`);
    for (const f of ['endpoints-sidecar.json', 'waypoint-full.json', 'http-route-cluster-listener.json']) {
      for (const c of json(istioFixture('configdump', f)).configs) {
        for (const e of [...(c.static_endpoint_configs ?? []), ...(c.dynamic_endpoint_configs ?? [])]) check(TYPE.ENDPOINT, e.endpoint_config.cluster_name, e.endpoint_config);
        for (const e of [...(c.static_clusters ?? []), ...(c.dynamic_active_clusters ?? [])]) check(TYPE.CLUSTER, e.cluster.name, e.cluster);
        for (const e of c.dynamic_listeners ?? []) check(TYPE.LISTENER, e.name, e.active_state.listener);
        for (const e of c.static_listeners ?? []) check(TYPE.LISTENER, 'static', { name: 'static', ...e.listener });
        for (const e of [...(c.static_route_configs ?? []), ...(c.dynamic_route_configs ?? [])]) check(TYPE.ROUTE, e.route_config.name, e.route_config);
      }
    }
    const syn = json('sidecar-synthetic.json');
    for (const x of syn.clusters) check(TYPE.CLUSTER, x.name, x);
    for (const x of syn.endpoints) check(TYPE.ENDPOINT, x.clusterName, x);
    for (const x of syn.listeners) check(TYPE.LISTENER, x.name, x);
    for (const x of syn.routes) check(TYPE.ROUTE, x.name, x);
    const dir = istioFixture('ambient-authorization');
    for (const f of fs.readdirSync(dir).filter((f) => !f.endsWith('-in.yaml'))) {
      const a = parse(fs.readFileSync(path.join(dir, f), 'utf8'));
      check(TYPE.AUTHORIZATION, a.name, a);
    }
  });
});
