// xds/proto: the proto Root and proto3 JSON conversion, on real Istio/Envoy output.
//
// Round trips: fixture JSON → fromProto3Json → encode → decode → toProto3Json must give back the
// fixture, modulo the documented normalisations: field names come back lowerCamelCase (the dumps
// print .proto names); everything else — defaults, int64 strings, durations, Any contents, Struct
// keys — must be identical.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { decodeMessage, encodeJson, fromProto3Json, lowerCamel, toProto3Json } from '../xds/proto/json';
import { findMessageType, messageType, protoRoot } from '../xds/proto/load';
import { resourceName } from '../xds/proto/resource-types';
import { isXdsError } from '../core/errors';
import { TYPE, type Json } from '../xds/types';
import { fixtureDir, istioFixture } from './fixture-dir';

/** test/fixtures/xds, from the source tree or a compiled outDir. */
const fixturesDir = (): string => fixtureDir('xds');
const FIX = fixturesDir();
const readJson = (rel: string) => JSON.parse(fs.readFileSync(path.resolve(FIX, rel), 'utf8')) as Json;

/**
 * Deep equality where an object key of `orig` may come back as its lowerCamelCase form (the only
 * normalisation a dump printed with .proto names goes through). Struct keys are left alone by the
 * converter, so they match exactly.
 */
function assertEqualModuloCase(orig: unknown, back: unknown, p = ''): void {
  if (Array.isArray(orig)) {
    assert.ok(Array.isArray(back), `${p}: expected a list`);
    assert.equal(back.length, orig.length, `${p}: list length`);
    orig.forEach((x, i) => assertEqualModuloCase(x, back[i], `${p}[${i}]`));
    return;
  }
  if (orig && typeof orig === 'object') {
    assert.ok(back && typeof back === 'object' && !Array.isArray(back), `${p}: expected an object`);
    const b = back as Record<string, unknown>;
    const used = new Set<string>();
    for (const [k, v] of Object.entries(orig)) {
      const bk = k in b ? k : lowerCamel(k);
      assert.ok(bk in b, `${p}.${k}: missing after the round trip`);
      used.add(bk);
      assertEqualModuloCase(v, b[bk], `${p}.${k}`);
    }
    const extra = Object.keys(b).filter((k) => !used.has(k));
    assert.deepEqual(extra, [], `${p}: keys added by the round trip`);
    return;
  }
  assert.equal(back, orig, p);
}

function roundTrip(typeName: string, json: unknown): Json {
  const bytes = encodeJson(typeName, json);
  const back = toProto3Json(typeName, bytes);
  // And the output is a fixed point: converting it again changes nothing, byte for byte.
  assert.deepEqual(Buffer.from(encodeJson(typeName, back)), Buffer.from(bytes), 'second encode differs');
  return back;
}

test('the Root knows the xDS resource, filter, admin and Istio types', () => {
  const names = [
    'envoy.service.discovery.v3.DiscoveryRequest',
    'envoy.service.discovery.v3.DeltaDiscoveryResponse',
    'envoy.service.discovery.v3.AggregatedDiscoveryService',
    'envoy.config.cluster.v3.Cluster',
    'envoy.config.endpoint.v3.ClusterLoadAssignment',
    'envoy.config.listener.v3.Listener',
    'envoy.config.route.v3.RouteConfiguration',
    'envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy',
    'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
    'envoy.extensions.filters.network.rbac.v3.RBAC',
    'envoy.extensions.filters.http.rbac.v3.RBAC',
    'envoy.extensions.filters.http.router.v3.Router',
    'envoy.admin.v3.ConfigDump',
    'istio.workload.Address',
    'istio.security.Authorization',
  ];
  for (const n of names) assert.ok(protoRoot().lookup(n), n);
  for (const n of names.filter((x) => !x.endsWith('Service'))) assert.ok(findMessageType(`type.googleapis.com/${n}`), n);
  assert.equal(findMessageType('type.googleapis.com/no.such.Type'), undefined);
});

test('Istio protos carry the published field numbers', () => {
  const ids = (t: string) => Object.fromEntries(messageType(t).fieldsArray.map((f) => [f.name, f.id]));
  assert.deepEqual(ids('istio.workload.Address'), { workload: 1, service: 2 });
  assert.deepEqual(ids('istio.workload.Workload'), {
    uid: 20, name: 1, namespace: 2, addresses: 3, hostname: 21, network: 4, tunnel_protocol: 5, trust_domain: 6,
    service_account: 7, waypoint: 8, network_gateway: 19, node: 9, canonical_name: 10, canonical_revision: 11,
    workload_type: 12, workload_name: 13, native_tunnel: 14, application_tunnel: 23, services: 22,
    authorization_policies: 16, status: 17, cluster_id: 18, locality: 24, network_mode: 25, extensions: 26, capacity: 27,
  });
  assert.deepEqual(ids('istio.workload.Service'), {
    name: 1, namespace: 2, hostname: 3, addresses: 4, ports: 5, subject_alt_names: 6, waypoint: 7, load_balancing: 8,
    ip_families: 9, extensions: 10, creation_timestamp: 11,
  });
  assert.deepEqual(ids('istio.workload.GatewayAddress'), { hostname: 1, address: 2, hbone_mtls_port: 3 });
  assert.deepEqual(ids('istio.security.Match'), {
    namespaces: 1, not_namespaces: 2, principals: 3, not_principals: 4, source_ips: 5, not_source_ips: 6,
    destination_ips: 7, not_destination_ips: 8, destination_ports: 9, not_destination_ports: 10,
  });
  assert.deepEqual(ids('istio.security.StringMatch'), { exact: 1, prefix: 2, suffix: 3, presence: 4 });
  // Reserved numbers stay reserved.
  assert.deepEqual(messageType('istio.workload.Workload').reserved, [[15, 15]]);
});

for (const file of ['endpoints-sidecar.json', 'waypoint-full.json']) {
  test(`round trip: whole Envoy config dump ${file}`, () => {
    const dump = readJson(istioFixture('configdump', file));
    assertEqualModuloCase(dump, roundTrip('envoy.admin.v3.ConfigDump', dump));
  });
}

test('round trip: clusters, listeners, routes and CLAs taken out of the config dumps, as xDS resources', () => {
  const found: Record<string, number> = {};
  const visit = (v: unknown, where: string): void => {
    if (Array.isArray(v)) return v.forEach((x, i) => visit(x, `${where}[${i}]`));
    if (!v || typeof v !== 'object') return;
    const o = v as Json;
    const t = o['@type'];
    if (t === TYPE.CLUSTER || t === TYPE.ENDPOINT || t === TYPE.LISTENER || t === TYPE.ROUTE) {
      // Istio's MetadataExchange filter is not in our Root: such a resource is checked separately.
      if (!JSON.stringify(o).includes('metadataexchange')) {
        const { ['@type']: _t, ...body } = o;
        const back = roundTrip(t, body);
        assertEqualModuloCase(body, back);
        // (Static listeners in a bootstrap may be nameless; xDS ones are not.)
        if (!/static_|bootstrap/.test(where)) assert.ok(resourceName(t, back), `${where}: ${t} has a name`);
        found[t] = (found[t] ?? 0) + 1;
      }
    }
    for (const [k, x] of Object.entries(o)) visit(x, `${where}.${k}`);
  };
  for (const f of ['endpoints-sidecar.json', 'waypoint-full.json', 'http-route-cluster-listener.json']) visit(readJson(istioFixture('configdump', f)), f);
  assert.ok(found[TYPE.ENDPOINT] >= 30, `CLAs: ${found[TYPE.ENDPOINT]}`);
  assert.ok(found[TYPE.CLUSTER] >= 1 && found[TYPE.LISTENER] >= 1 && found[TYPE.ROUTE] >= 2, JSON.stringify(found));
});

test('an Any of a type the Root does not know: inline fields are an error naming it; {"@type","value"} is kept byte for byte', () => {
  const dump = readJson(istioFixture('configdump', 'http-route-cluster-listener.json'));
  assert.throws(
    () => encodeJson('envoy.admin.v3.ConfigDump', dump),
    (e: unknown) => isXdsError(e) && e.code === 'SM_XDS_JSON' && /envoy\.tcp\.metadataexchange\.config\.MetadataExchange/.test(e.message) && /filters\[0\]\.typed_config/.test(e.message),
  );
  const unknown = { '@type': 'type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange', value: 'ChNpc3Rpby1wZWVyLWV4Y2hhbmdl' };
  const cluster = { name: 'c', filters: [{ name: 'istio.metadata_exchange', typedConfig: unknown }] };
  const back = roundTrip(TYPE.CLUSTER, cluster);
  assert.deepEqual(back, cluster);
});

test('round trip: Envoy RBAC filters generated by istiod (HTTP and network)', () => {
  const dir = istioFixture('authz-rbac');
  let n = 0;
  for (const f of fs.readdirSync(dir).filter((x) => /-out\d*\.yaml$/.test(x)).sort()) {
    for (const doc of parseAllDocuments(fs.readFileSync(path.join(dir, f), 'utf8'))) {
      const filter = doc.toJS() as Json | null;
      if (!filter) continue;
      const isHttp = String((filter.typedConfig as Json)['@type']).includes('filters.http.rbac');
      const t = isHttp ? 'envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter' : 'envoy.config.listener.v3.Filter';
      assert.deepEqual(roundTrip(t, filter), filter, f);
      n++;
    }
  }
  assert.ok(n >= 14, `${n} filters`);
});

test('round trip: ambient Authorization resources from istiod; newer Match fields are rejected by name', () => {
  for (const f of ['allow-groups.yaml', 'deny-groups.yaml']) {
    const a = parseYaml(fs.readFileSync(istioFixture('ambient-authorization', f), 'utf8')) as Json;
    const back = roundTrip(TYPE.AUTHORIZATION, a);
    assert.deepEqual(back, a, f);
    assert.equal(resourceName(TYPE.AUTHORIZATION, back), `${(a.namespace as string | undefined) ?? ''}/${a.name as string}`);
  }
  // allow-full.yaml carries (not_)serviceAccounts, which the reference field list we were given
  // does not define: the conversion fails and says which field.
  const full = parseYaml(fs.readFileSync(istioFixture('ambient-authorization', 'allow-full.yaml'), 'utf8'));
  assert.throws(() => encodeJson(TYPE.AUTHORIZATION, full), /notServiceAccounts.*unknown field|unknown field "notServiceAccounts"/);
  // ...and is accepted, minus those fields, when unknown fields are to be ignored.
  const back = toProto3Json(TYPE.AUTHORIZATION, fromProto3Json(TYPE.AUTHORIZATION, full, { ignoreUnknownFields: true }));
  assert.equal((back.groups as unknown[]).length, (full as Json & { groups: unknown[] }).groups.length);
});

test('round trip: ambient Address (workload with every field, service)', () => {
  const addrs = JSON.parse(fs.readFileSync(path.join(FIX, 'ambient-addresses.json'), 'utf8')) as Json[];
  for (const a of addrs) assert.deepEqual(roundTrip(TYPE.ADDRESS, a), a);
  assert.equal(resourceName(TYPE.ADDRESS, addrs[0]), 'Kubernetes//Pod/shop/web-0');
  assert.equal(resourceName(TYPE.ADDRESS, addrs[1]), 'shop/web.shop.svc.cluster.local');
});

test('well-known types and scalars in proto3 JSON form', () => {
  const cluster = {
    name: 'c',
    connectTimeout: '1.500s',
    perConnectionBufferLimitBytes: 32768, // UInt32Value as a bare number
    ignoreHealthOnHostRemoval: true, // bool
    lbPolicy: 'RING_HASH', // enum by name
    maxRequestsPerConnection: 0, // UInt32Value 0 is set, so printed
    metadata: { filterMetadata: { a: { s: 'x', n: 1.25, b: false, nil: null, l: [1, 'two', { three: 3 }], o: {} } } },
    dnsRefreshRate: '-0.000000001s',
    ringHashLbConfig: { minimumRingSize: '1024' }, // UInt64Value as a string
    cleanupInterval: '315576000000s',
    typedExtensionProtocolOptions: {
      b: { '@type': 'type.googleapis.com/google.protobuf.Duration', value: '0.010s' },
      a: { '@type': 'type.googleapis.com/google.protobuf.UInt32Value', value: 7 },
    },
  };
  assert.deepEqual(roundTrip(TYPE.CLUSTER, cluster), cluster);

  // Accepted on input, printed canonically.
  const loose = { name: 'c', connect_timeout: '2s', per_connection_buffer_limit_bytes: '17', lb_policy: 2, circuit_breakers: {} };
  assert.deepEqual(toProto3Json(TYPE.CLUSTER, encodeJson(TYPE.CLUSTER, loose)), {
    name: 'c',
    connectTimeout: '2s',
    perConnectionBufferLimitBytes: 17,
    lbPolicy: 'RING_HASH',
    circuitBreakers: {},
  });
  // Defaults of fields without presence are omitted (and not encoded).
  assert.deepEqual(toProto3Json(TYPE.CLUSTER, encodeJson(TYPE.CLUSTER, { name: 'c', lbPolicy: 'ROUND_ROBIN', respectDnsTtl: false, altStatName: '' })), { name: 'c' });
  assert.equal(encodeJson(TYPE.CLUSTER, { name: 'c', altStatName: '' }).length, encodeJson(TYPE.CLUSTER, { name: 'c' }).length);

  // Timestamps normalise to UTC with 0/3/6/9 fractional digits; bytes are base64.
  const svc = { service: { name: 's', creationTimestamp: '2024-01-02T05:04:05.1+02:00', addresses: [{ address: Buffer.from([10, 0, 0, 1]).toString('base64') }] } };
  assert.deepEqual(toProto3Json(TYPE.ADDRESS, encodeJson(TYPE.ADDRESS, svc)), {
    service: { name: 's', creationTimestamp: '2024-01-02T03:04:05.100Z', addresses: [{ address: 'CgAAAQ==' }] },
  });
  // Unknown enum numbers survive as numbers.
  assert.deepEqual(toProto3Json(TYPE.AUTHORIZATION, encodeJson(TYPE.AUTHORIZATION, { name: 'p', action: 7 })), { name: 'p', action: 7 });
  // An Any holding an Any nests under "value"; a top-level Any keeps its "@type".
  const nested = { '@type': 'type.googleapis.com/google.protobuf.Any', value: { '@type': TYPE.CLUSTER, name: 'x' } };
  assert.deepEqual(roundTrip('google.protobuf.Any', nested), nested);
  const plainAny = { '@type': TYPE.CLUSTER, name: 'y', connectTimeout: '1s' };
  assert.deepEqual(roundTrip('google.protobuf.Any', plainAny), plainAny);
  // Struct keys are never case-converted; google.protobuf.Value null is kept.
  const m = toProto3Json('envoy.config.core.v3.Metadata', encodeJson('envoy.config.core.v3.Metadata', { filterMetadata: { x: { snake_key: null } } }));
  assert.deepEqual(m, { filterMetadata: { x: { snake_key: null } } });
});

test('proto3 JSON errors name the path and the reason', () => {
  const cases: Array<[unknown, RegExp]> = [
    [{ name: 'c', connectTimeout: '1.5' }, /connectTimeout: expected a duration/],
    [{ name: 'c', lbPolicy: 'FASTEST' }, /lbPolicy: unknown value "FASTEST" for enum envoy\.config\.cluster\.v3\.Cluster\.LbPolicy/],
    [{ name: 'c', perConnectionBufferLimitBytes: 4294967296 }, /out of range for uint32/],
    [{ name: 'c', nmae: 'x' }, /unknown field "nmae" in envoy\.config\.cluster\.v3\.Cluster/],
    [{ name: 'c', type: 'EDS', clusterType: { name: 'x' } }, /oneof cluster_discovery_type: both "type" and "clusterType" are set/],
    [{ name: 5 }, /name: expected a string, got number 5/],
    [{ name: 'c', transportSocket: { name: 't', typedConfig: { value: 'AA==' } } }, /typedConfig: Any without a valid "@type"/],
    [{ name: 'c', transportSocket: { name: 't', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext', sni: 1 } } }, /\.sni: expected a string/],
  ];
  for (const [json, re] of cases) {
    assert.throws(() => encodeJson(TYPE.CLUSTER, json), (e: unknown) => isXdsError(e) && e.code === 'SM_XDS_JSON' && re.test(e.message), re.source);
  }
  assert.throws(() => fromProto3Json(TYPE.CLUSTER, { '@type': TYPE.LISTENER, name: 'x' }), /does not match the expected type envoy\.config\.cluster\.v3\.Cluster/);
});

test('undecodable bytes, also inside an Any, are SM_XDS_DECODE errors with the path', () => {
  assert.throws(() => toProto3Json(TYPE.CLUSTER, Uint8Array.from([0x0a, 0xff])), (e: unknown) => isXdsError(e) && e.code === 'SM_XDS_DECODE');
  const listener = messageType(TYPE.LISTENER).fromObject({
    name: 'l',
    filter_chains: [{ filters: [{ name: 'f', typed_config: { type_url: 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', value: Buffer.from([0x0a, 0xff]) } }] }],
  });
  const bytes = messageType(TYPE.LISTENER).encode(listener).finish();
  assert.equal((decodeMessage(TYPE.LISTENER, bytes) as unknown as { name: string }).name, 'l'); // the outer message is fine
  assert.throws(
    () => toProto3Json(TYPE.LISTENER, bytes),
    (e: unknown) => isXdsError(e) && e.code === 'SM_XDS_DECODE' && /filterChains\[0\]\.filters\[0\]\.typedConfig: cannot decode envoy\.extensions\.filters\.network\.tcp_proxy\.v3\.TcpProxy/.test(e.message),
  );
});
