// Our ADS client against our ADS server, State of the World and Delta: initial snapshot
// (make-before-break), NACK of invalid resources with the previous version kept, ACK after the
// fix, removals, unsubscribe, a server restart mid-stream (reconnect; Delta resumes with
// initial_resource_versions and is sent only what changed), resource timeouts, TLS and tokens.
// Everything runs on 127.0.0.1.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter, once } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../core/log';
import { TYPE, type Json, type TypeUrl } from '../xds/types';
import { messageType } from '../xds/proto/load';
import { AdsServer } from '../xds/server/ads-server';
import type { SnapshotEntry } from '../xds/server/snapshot';
import type { StreamInfo } from '../xds/server/stream-base';
import { Subscription } from '../xds/server/subscription';
import { XdsClient, type XdsSnapshot, type XdsUpdate } from '../xds/client/xds-client';
import { istioNode, istioNodeId } from '../xds/client/node-id';
import { Backoff } from '../xds/client/backoff';
import { fixtureDir } from './fixture-dir';

// ---- helpers ---------------------------------------------------------------------------------

function memLog(): { log: Logger; lines: Array<{ level: string; msg: string } & Record<string, unknown>> } {
  const lines: Array<{ level: string; msg: string } & Record<string, unknown>> = [];
  const rec = (level: string) => (msg: string, f?: Record<string, unknown>) => void lines.push({ level, msg, ...(f ?? {}) });
  return { log: { debug: rec('debug'), info: rec('info'), warn: rec('warn'), error: rec('error') }, lines };
}

/** Resolves with the first event (args[0]) matching pred, or rejects after ms. */
function waitEvent<T>(em: EventEmitter, event: string, pred: (v: T) => boolean = () => true, ms = 5000): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      em.off(event, on);
      reject(new Error(`timed out waiting for '${event}'`));
    }, ms);
    const on = (v: T) => {
      if (!pred(v)) return;
      clearTimeout(t);
      em.off(event, on);
      resolve(v);
    };
    em.on(event, on);
  });
}

async function until(what: string, pred: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const fixturesDir = (): string => fixtureDir('xds');

// ---- resources (canonical proto3 JSON, so what the client decodes must equal them) -------------

const HCM = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const ROUTER = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router';
const TCP_PROXY = 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy';
const A = 'outbound|80||a.default.svc.cluster.local';
const B = 'outbound|80||b.default.svc.cluster.local';

const cluster = (name: string, edsName?: string, timeout = '10s'): Json => ({
  name,
  type: 'EDS',
  edsClusterConfig: { edsConfig: { ads: {} }, ...(edsName ? { serviceName: edsName } : {}) },
  connectTimeout: timeout,
});
const cla = (name: string, port: number): Json => ({
  clusterName: name,
  endpoints: [{ locality: {}, lbEndpoints: [{ endpoint: { address: { socketAddress: { address: '10.1.0.1', portValue: port } } }, healthStatus: 'HEALTHY', loadBalancingWeight: 2 }], loadBalancingWeight: 2 }],
});
const tcpListener = (name: string, clusterName: string): Json => ({
  name,
  address: { socketAddress: { address: '10.0.0.1', portValue: 80 } },
  filterChains: [{ filters: [{ name: 'envoy.filters.network.tcp_proxy', typedConfig: { '@type': TCP_PROXY, statPrefix: clusterName, cluster: clusterName } }] }],
});
const httpListener = (name: string, route: string): Json => ({
  name,
  address: { socketAddress: { address: '0.0.0.0', portValue: 8080 } },
  filterChains: [
    {
      filters: [
        {
          name: 'envoy.filters.network.http_connection_manager',
          typedConfig: {
            '@type': HCM,
            statPrefix: 'http',
            rds: { configSource: { ads: {} }, routeConfigName: route },
            httpFilters: [{ name: 'envoy.filters.http.router', typedConfig: { '@type': ROUTER } }],
          },
        },
      ],
    },
  ],
});
const route = (name: string, clusterName: string): Json => ({
  name,
  virtualHosts: [{ name: 'all', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: clusterName } }] }],
});
const workload = (uid: string, ip: number[]): Json => ({
  workload: { uid, name: uid.split('/').pop(), namespace: 'default', addresses: [Buffer.from(ip).toString('base64')], serviceAccount: 'sa', node: 'node1' },
});
const authz = (name: string): Json => ({ name, namespace: 'default', scope: 'NAMESPACE', groups: [{ rules: [{ matches: [{ destinationPorts: [80] }] }] }] });

interface Spec {
  clusters?: Json[];
  clas?: Json[];
  listeners?: Json[];
  routes?: Json[];
  addresses?: Json[];
  authz?: Json[];
}
function entries(s: Spec): SnapshotEntry[] {
  const e = (typeUrl: TypeUrl, list: Json[] = []) => list.map((json) => ({ typeUrl, json }));
  return [
    ...e(TYPE.CLUSTER, s.clusters),
    ...e(TYPE.ENDPOINT, s.clas),
    ...e(TYPE.LISTENER, s.listeners),
    ...e(TYPE.ROUTE, s.routes),
    ...e(TYPE.ADDRESS, s.addresses),
    ...e(TYPE.AUTHORIZATION, s.authz),
  ];
}
const base = (): Spec => ({
  clusters: [cluster(A), cluster(B, 'b-eds')],
  clas: [cla(A, 8080), cla('b-eds', 9090)],
  listeners: [tcpListener('10.0.0.1_80', A), httpListener('http', 'route-80')],
  routes: [route('route-80', B)],
  addresses: [workload('default/w1', [10, 1, 0, 1])],
  authz: [authz('allow')],
});

/** Rejects any port above 65535, as the translation layer will. */
function validate(_t: TypeUrl, _name: string, json: Json): string | null {
  const m = /"portValue":(\d+)/g;
  for (let x = m.exec(JSON.stringify(json)); x; x = m.exec(JSON.stringify(json))) {
    if (Number(x[1]) > 65535) return `port ${x[1]} is out of range (1..65535)`;
  }
  return null;
}

const complete = (s: XdsSnapshot | undefined, spec: Spec) =>
  !!s &&
  s.waiting.length === 0 &&
  s.resources[TYPE.CLUSTER].length === (spec.clusters?.length ?? 0) &&
  s.resources[TYPE.ENDPOINT].length === (spec.clas?.length ?? 0) &&
  s.resources[TYPE.LISTENER].length === (spec.listeners?.length ?? 0) &&
  s.resources[TYPE.ROUTE].length === (spec.routes?.length ?? 0) &&
  s.resources[TYPE.ADDRESS].length === (spec.addresses?.length ?? 0) &&
  s.resources[TYPE.AUTHORIZATION].length === (spec.authz?.length ?? 0);

function openStream(server: AdsServer): StreamInfo {
  const s = server.streams().find((x) => !x.closedAt);
  assert.ok(s, 'an open stream');
  return s;
}

// ---- unit tests ------------------------------------------------------------------------------

test('subscription rules: legacy wildcard, explicit *, Delta add/remove', () => {
  const cds = new Subscription(TYPE.CLUSTER);
  assert.equal(cds.applySotw([], true), true);
  assert.deepEqual(cds.list(), ['*']); // first empty request on LDS/CDS = wildcard
  assert.equal(cds.applySotw([], false), false); // stays
  cds.applySotw(['x'], false);
  assert.deepEqual(cds.list(), ['x']); // names without * end it
  cds.applySotw([], false);
  assert.deepEqual(cds.list(), []);
  cds.applySotw(['*', 'y'], false);
  assert.deepEqual(cds.list(), ['*', 'y']);

  const eds = new Subscription(TYPE.ENDPOINT);
  eds.applySotw([], true);
  assert.deepEqual(eds.list(), []); // empty EDS request = nothing
  eds.applySotw(['*'], false);
  assert.equal(eds.wants('anything'), true);

  const d = new Subscription(TYPE.LISTENER);
  d.applyDelta([], [], true);
  assert.deepEqual(d.list(), ['*']);
  d.applyDelta(['l1'], [], false);
  assert.deepEqual(d.list(), ['*', 'l1']); // Delta subscriptions are a set: wildcard stays
  assert.deepEqual(d.applyDelta([], ['*', 'l1'], false), { changed: true, unsubscribed: ['l1'] });
  assert.deepEqual(d.list(), []);
});

test('istiod-style node identity and full-jitter backoff', () => {
  assert.equal(istioNodeId({ type: 'ztunnel', ip: '10.0.0.5', podName: 'ztunnel-abc', namespace: 'istio-system' }), 'ztunnel~10.0.0.5~ztunnel-abc.istio-system~istio-system.svc.cluster.local');
  const n = istioNode({ type: 'sidecar', ip: '10.0.0.6', podName: 'web-0', namespace: 'shop', domain: 'example.org', nodeName: 'node1', extra: { FOO: 'bar' } });
  assert.equal(n.id, 'sidecar~10.0.0.6~web-0.shop~shop.svc.example.org');
  assert.deepEqual(n.metadata, { ISTIO_VERSION: '1.24.0', CLUSTER_ID: 'Kubernetes', NAMESPACE: 'shop', INSTANCE_IPS: '10.0.0.6', NODE_NAME: 'node1', FOO: 'bar' });

  const b = new Backoff({ initialMs: 100, maxMs: 1000, random: () => 0.999999 });
  assert.deepEqual([b.next(), b.next(), b.next(), b.next(), b.next(), b.next()], [99, 199, 399, 799, 999, 999]);
  b.reset();
  assert.equal(b.next(), 99);
  const z = new Backoff({ initialMs: 100, random: () => 0 });
  assert.equal(z.next(), 0); // full jitter: anywhere in [0, cap)
});

// ---- the protocol, both variants -------------------------------------------------------------

for (const mode of ['sotw', 'delta'] as const) {
  describe(`XdsClient and AdsServer over ${mode === 'sotw' ? 'State of the World' : 'Delta'}`, () => {
    const { log } = memLog();
    const server = new AdsServer({ log });
    let port = 0;
    let client: XdsClient;
    const updates: XdsUpdate[] = [];
    const snapshots: XdsSnapshot[] = [];

    before(async () => {
      server.setSnapshot(entries(base()));
      port = await server.listen('127.0.0.1:0');
      client = new XdsClient({
        server: `127.0.0.1:${port}`,
        mode,
        node: istioNode({ type: 'ztunnel', ip: '10.9.0.1', podName: 'sockmesh-node1', namespace: 'sockmesh', nodeName: 'node1' }),
        backoff: { initialMs: 20, maxMs: 100 },
        validate,
        log,
        watch: { [TYPE.CLUSTER]: '*', [TYPE.LISTENER]: '*', [TYPE.ADDRESS]: '*', [TYPE.AUTHORIZATION]: '*' },
      });
      client.on('update', (u) => updates.push(u));
      client.on('snapshot', (s) => snapshots.push(s));
    });

    after(async () => {
      client.close();
      await server.stop();
    });

    test('the initial snapshot arrives whole: CDS → its EDS, LDS → its RDS, ambient types', async () => {
      const spec = base();
      if (!complete(client.lastSnapshot(), spec)) await waitEvent<XdsSnapshot>(client, 'snapshot', (s) => complete(s, spec));
      const snap = client.lastSnapshot() as XdsSnapshot;
      const byName = (t: TypeUrl) => Object.fromEntries(snap.resources[t].map((r) => [r.name, r.json]));
      assert.deepEqual(byName(TYPE.CLUSTER), { [A]: cluster(A), [B]: cluster(B, 'b-eds') });
      assert.deepEqual(byName(TYPE.ENDPOINT), { [A]: cla(A, 8080), 'b-eds': cla('b-eds', 9090) });
      assert.deepEqual(byName(TYPE.LISTENER), { '10.0.0.1_80': tcpListener('10.0.0.1_80', A), http: httpListener('http', 'route-80') });
      assert.deepEqual(byName(TYPE.ROUTE), { 'route-80': route('route-80', B) });
      assert.deepEqual(byName(TYPE.ADDRESS), { 'default/w1': workload('default/w1', [10, 1, 0, 1]) });
      assert.deepEqual(byName(TYPE.AUTHORIZATION), { 'default/allow': authz('allow') });

      // The server saw who we are and what we derived: EDS names from the clusters, RDS from the listener.
      const s = openStream(server);
      assert.equal(s.kind, mode);
      assert.equal(s.node?.id, 'ztunnel~10.9.0.1~sockmesh-node1.sockmesh~sockmesh.svc.cluster.local');
      assert.equal((s.node?.metadata as Json).NODE_NAME, 'node1');
      assert.deepEqual(s.types[TYPE.ENDPOINT]?.subscription, ['b-eds', A]);
      assert.deepEqual(s.types[TYPE.ROUTE]?.subscription, ['route-80']);
      assert.deepEqual(s.types[TYPE.CLUSTER]?.subscription, ['*']);
      await until('ACKs of every type', () => Object.values(s.types).every((t) => (t?.acks ?? 0) >= 1) && Object.keys(s.types).length === 6);
      const st = client.state();
      assert.equal(st[TYPE.CLUSTER].resources, 2);
      assert.equal(st[TYPE.CLUSTER].connected, true);
      assert.ok(st[TYPE.ENDPOINT].lastAckVersion);
    });

    test('an invalid CLA (port 70000) is NACKed naming it; the previous version stays; the fix is ACKed', async () => {
      const before = client.state()[TYPE.ENDPOINT].lastAckVersion;
      const updatesBefore = updates.length;
      const bad = base();
      bad.clas = [cla(A, 70000), cla('b-eds', 9091)];
      const clientNack = waitEvent<{ typeUrl: string; detail: string }>(client, 'nack', (n) => n.typeUrl === TYPE.ENDPOINT);
      const serverNack = waitEvent<{ typeUrl: string; message: string; code: number; nonce: string; versionInfo?: string }>(server, 'nack', (n) => n.typeUrl === TYPE.ENDPOINT);
      server.setSnapshot(entries(bad));
      const cn = await clientNack;
      const sn = await serverNack;
      assert.match(cn.detail, new RegExp(`${A.replace(/\|/g, '\\|')}: port 70000 is out of range`));
      assert.equal(sn.code, 3); // INVALID_ARGUMENT
      assert.match(sn.message, /port 70000 is out of range/);
      assert.match(sn.message, /outbound\|80\|\|a\.default/);
      if (mode === 'sotw') assert.equal(sn.versionInfo, before); // "I still run this version"
      assert.equal(server.lastNack(TYPE.ENDPOINT)?.message, sn.message);
      // Nothing of the rejected response applied — not even the valid b-eds change.
      assert.deepEqual(client.get(TYPE.ENDPOINT, A)?.json, cla(A, 8080));
      assert.deepEqual(client.get(TYPE.ENDPOINT, 'b-eds')?.json, cla('b-eds', 9090));
      assert.equal(client.state()[TYPE.ENDPOINT].lastAckVersion, before);
      assert.match(client.state()[TYPE.ENDPOINT].lastNack?.detail ?? '', /port 70000/);
      assert.equal(updates.slice(updatesBefore).filter((u) => u.typeUrl === TYPE.ENDPOINT).length, 0);

      const fixed = base();
      fixed.clas = [cla(A, 8081), cla('b-eds', 9090)];
      const upd = waitEvent<XdsUpdate>(client, 'update', (u) => u.typeUrl === TYPE.ENDPOINT);
      const ack = waitEvent<{ typeUrl: string; version: string }>(server, 'ack', (a: { typeUrl?: string }) => a.typeUrl === TYPE.ENDPOINT);
      server.setSnapshot(entries(fixed));
      const u = await upd;
      assert.deepEqual(u.updated.map((r) => r.name), [A]); // b-eds unchanged: no update
      assert.deepEqual(u.added, []);
      const a = await ack;
      const snap = server.currentSnapshot();
      assert.equal(a.version, mode === 'sotw' ? snap.typeVersion(TYPE.ENDPOINT) : snap.version);
      assert.notEqual(client.state()[TYPE.ENDPOINT].lastAckVersion, before);
    });

    test('an undecodable Any inside a cluster is NACKed naming the cluster; the whole response is rejected', async () => {
      const badCluster = messageType(TYPE.CLUSTER).encode(
        messageType(TYPE.CLUSTER).fromObject({
          name: 'outbound|80||bad.default.svc.cluster.local',
          transport_socket: { name: 'tls', typed_config: { type_url: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext', value: Buffer.from([0x0a, 0xff, 0x01]) } },
        }),
      ).finish();
      const spec = base();
      spec.clas = [cla(A, 8081), cla('b-eds', 9090)];
      spec.clusters = [cluster(A, undefined, '3s'), cluster(B, 'b-eds')]; // a valid change in the same response
      const nack = waitEvent<{ typeUrl: string; detail: string }>(client, 'nack', (n) => n.typeUrl === TYPE.CLUSTER);
      server.setSnapshot([...entries(spec), { typeUrl: TYPE.CLUSTER, name: 'outbound|80||bad.default.svc.cluster.local', raw: badCluster }]);
      const n = await nack;
      assert.match(n.detail, /outbound\|80\|\|bad\.default\.svc\.cluster\.local: cannot decode: transportSocket\.typedConfig: cannot decode envoy\.extensions\.transport_sockets\.tls\.v3\.UpstreamTlsContext/);
      await until('the server recorded the NACK', () => /bad\.default/.test(server.lastNack(TYPE.CLUSTER)?.message ?? ''));
      assert.deepEqual(client.get(TYPE.CLUSTER, A)?.json, cluster(A)); // the valid change did not apply either
      assert.equal(client.get(TYPE.CLUSTER, 'outbound|80||bad.default.svc.cluster.local'), undefined);

      const ack = waitEvent(server, 'ack', (a: { typeUrl?: string }) => a.typeUrl === TYPE.CLUSTER);
      server.setSnapshot(entries(spec)); // the bad cluster gone, the change still there
      await ack;
      await until('cluster a updated', () => (client.get(TYPE.CLUSTER, A)?.json as Json | undefined)?.connectTimeout === '3s');
    });

    test('make-before-break: a new cluster and listener show up only together with their endpoints and route', async () => {
      const C = 'outbound|80||c.default.svc.cluster.local';
      const spec = base();
      spec.clas = [cla(A, 8081), cla('b-eds', 9090), cla(C, 7070)];
      spec.clusters = [cluster(A, undefined, '3s'), cluster(B, 'b-eds'), cluster(C)];
      spec.listeners = [...(spec.listeners ?? []), httpListener('http2', 'route-81')];
      spec.routes = [...(spec.routes ?? []), route('route-81', C)];
      const seen = snapshots.length;
      const ready = waitEvent<XdsSnapshot>(client, 'snapshot', (s) => s.resources[TYPE.CLUSTER].some((r) => r.name === C) && s.resources[TYPE.LISTENER].length === 3);
      server.setSnapshot(entries(spec));
      const s = await ready;
      assert.deepEqual(s.resources[TYPE.ENDPOINT].find((r) => r.name === C)?.json, cla(C, 7070));
      assert.deepEqual(s.resources[TYPE.ROUTE].find((r) => r.name === 'route-81')?.json, route('route-81', C));
      // No snapshot in between showed C without its CLA or http2 without its route.
      for (const x of snapshots.slice(seen)) {
        const eds = new Set(x.resources[TYPE.ENDPOINT].map((r) => r.name));
        const rds = new Set(x.resources[TYPE.ROUTE].map((r) => r.name));
        for (const c of x.resources[TYPE.CLUSTER]) {
          const need = ((c.json.edsClusterConfig as Json | undefined)?.serviceName as string | undefined) || c.name;
          assert.ok(eds.has(need), `snapshot ${x.seq}: cluster ${c.name} without its CLA ${need}`);
        }
        for (const l of x.resources[TYPE.LISTENER]) {
          const m = /"routeConfigName":"([^"]+)"/.exec(JSON.stringify(l.json));
          if (m) assert.ok(rds.has(m[1]), `snapshot ${x.seq}: listener ${l.name} without route ${m[1]}`);
        }
      }
    });

    test('removals propagate (CDS → its CLA, LDS → its route)', async () => {
      const spec: Spec = { clusters: [cluster(A, undefined, '3s')], clas: [cla(A, 8081)], listeners: [tcpListener('10.0.0.1_80', A)], routes: [], addresses: base().addresses, authz: base().authz };
      const removedAll = Promise.all([
        waitEvent<XdsUpdate>(client, 'update', (u) => u.typeUrl === TYPE.CLUSTER && u.removed.includes(B)),
        waitEvent<XdsUpdate>(client, 'update', (u) => u.typeUrl === TYPE.ENDPOINT && u.removed.includes('b-eds')),
        waitEvent<XdsUpdate>(client, 'update', (u) => u.typeUrl === TYPE.LISTENER && u.removed.includes('http')),
        waitEvent<XdsUpdate>(client, 'update', (u) => u.typeUrl === TYPE.ROUTE && u.removed.includes('route-80')),
      ]);
      const resp = waitEvent<{ typeUrl: string; resources: Array<{ name: string }>; removed: string[] }>(server, 'response', (r: { typeUrl?: string }) => r.typeUrl === TYPE.CLUSTER);
      server.setSnapshot(entries(spec));
      const r = await resp;
      if (mode === 'sotw') {
        assert.deepEqual(r.resources.map((x) => x.name), [A]); // the full set, without b
        assert.deepEqual(r.removed, []);
      } else {
        assert.deepEqual(r.resources, []); // a is unchanged: not re-sent
        assert.deepEqual(r.removed, [B, 'outbound|80||c.default.svc.cluster.local']); // c: from the previous test
      }
      await removedAll;
      if (!complete(client.lastSnapshot(), spec)) await waitEvent<XdsSnapshot>(client, 'snapshot', (s) => complete(s, spec));
      await until('EDS and RDS unsubscribed on the server', () => {
        const t = openStream(server).types;
        return JSON.stringify(t[TYPE.ENDPOINT]?.subscription) === JSON.stringify([A]) && t[TYPE.ROUTE]?.subscription.length === 0;
      });
    });

    test('unwatch propagates to the server and drops the resources', async () => {
      const upd = waitEvent<XdsUpdate>(client, 'update', (u) => u.typeUrl === TYPE.AUTHORIZATION);
      client.unwatch(TYPE.AUTHORIZATION, '*');
      assert.deepEqual((await upd).removed, ['default/allow']);
      assert.deepEqual(client.resources(TYPE.AUTHORIZATION), []);
      await until('server-side subscription emptied', () => openStream(server).types[TYPE.AUTHORIZATION]?.subscription.length === 0);
      // A push of the type no longer reaches this client.
      const n = server.streams()[0].responses.length;
      server.setSnapshot([...entries({ ...base(), clusters: [cluster(A, undefined, '3s')], clas: [cla(A, 8081)], listeners: [tcpListener('10.0.0.1_80', A)], routes: [] }).filter((e) => e.typeUrl !== TYPE.AUTHORIZATION), { typeUrl: TYPE.AUTHORIZATION, json: authz('other') }]);
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(server.streams()[0].responses.slice(n).filter((r) => r.typeUrl === TYPE.AUTHORIZATION).length, 0);
      assert.deepEqual(client.resources(TYPE.AUTHORIZATION), []);
      // Watching a name again subscribes to just that.
      const got = waitEvent<XdsUpdate>(client, 'update', (u) => u.typeUrl === TYPE.AUTHORIZATION);
      client.watch(TYPE.AUTHORIZATION, ['default/other']);
      assert.deepEqual((await got).added.map((r) => r.name), ['default/other']);
    });

    test('server stopped and restarted on the same port: the client keeps its config, reconnects and resumes', async () => {
      const held = Object.fromEntries(client.resources(TYPE.CLUSTER).map((r) => [r.name, r.version]));
      const heldEds = Object.fromEntries(client.resources(TYPE.ENDPOINT).map((r) => [r.name, r.version]));
      const oldStream = openStream(server).id;
      const disc = waitEvent<{ reason: string }>(client, 'disconnected');
      await server.stop();
      await disc;
      assert.equal(client.isConnected(), false);
      assert.equal(client.resources(TYPE.CLUSTER).length, 1); // last good config stays in force
      assert.equal(client.state()[TYPE.CLUSTER].connected, false);

      // While it is down, one cluster changes.
      const spec: Spec = {
        clusters: [cluster(A, undefined, '7s')],
        clas: [cla(A, 8081)],
        listeners: [tcpListener('10.0.0.1_80', A)],
        routes: [],
        addresses: base().addresses,
        authz: [authz('other')],
      };
      server.setSnapshot(entries(spec));
      const after: XdsUpdate[] = [];
      const onUpd = (u: XdsUpdate) => after.push(u);
      client.on('update', onUpd);
      const conn = waitEvent(client, 'connected');
      await server.listen(`127.0.0.1:${port}`);
      await conn;
      await until('cluster a updated after reconnect', () => (client.get(TYPE.CLUSTER, A)?.json as Json | undefined)?.connectTimeout === '7s');
      const s = openStream(server);
      assert.ok(s.id > oldStream);
      await until('every subscribed type ACKed on the new stream', () => [TYPE.CLUSTER, TYPE.ENDPOINT, TYPE.LISTENER, TYPE.ADDRESS, TYPE.AUTHORIZATION].every((t) => (s.types[t]?.acks ?? 0) >= 1 || mode === 'delta'));
      await new Promise((r) => setTimeout(r, 50));
      client.off('update', onUpd);
      // Only the changed resource caused work on the client.
      assert.deepEqual(after.map((u) => [u.typeUrl, u.added.length, u.updated.map((r) => r.name), u.removed]), [[TYPE.CLUSTER, 0, [A], []]]);
      if (mode === 'delta') {
        assert.deepEqual(s.types[TYPE.CLUSTER]?.initialResourceVersions, held);
        assert.deepEqual(s.types[TYPE.ENDPOINT]?.initialResourceVersions, heldEds);
        assert.deepEqual(s.types[TYPE.ADDRESS]?.initialResourceVersions, { 'default/w1': client.get(TYPE.ADDRESS, 'default/w1')?.version });
        // The server re-sent nothing the client already had at that version.
        const sent = s.responses.flatMap((r) => r.resources.map((x) => `${r.typeUrl}|${x.name}`));
        assert.deepEqual(sent, [`${TYPE.CLUSTER}|${A}`]);
      } else {
        assert.ok(s.responses.some((r) => r.typeUrl === TYPE.CLUSTER && r.resources.length === 1));
      }
    });
  });
}

// ---- timeouts, TLS, token --------------------------------------------------------------------

test('a ClusterLoadAssignment that never arrives: "resource does not exist" after resourceTimeoutMs, then the snapshot goes on', async () => {
  const { log, lines } = memLog();
  const server = new AdsServer({ log });
  server.setSnapshot(entries({ clusters: [cluster(A), cluster(B, 'ghost')], clas: [cla(A, 80)] }));
  const port = await server.listen('127.0.0.1:0');
  const client = new XdsClient({ server: `127.0.0.1:${port}`, mode: 'delta', node: { id: 't' }, resourceTimeoutMs: 200, log, watch: { [TYPE.CLUSTER]: '*' } });
  try {
    const missing = waitEvent<{ typeUrl: string; name: string }>(client, 'missing');
    const snap = waitEvent<XdsSnapshot>(client, 'snapshot', (s) => s.resources[TYPE.CLUSTER].length === 2);
    const t0 = Date.now();
    assert.deepEqual(await missing, { typeUrl: TYPE.ENDPOINT, name: 'ghost' });
    assert.ok(Date.now() - t0 >= 150);
    const s = await snap;
    assert.deepEqual(s.resources[TYPE.ENDPOINT].map((r) => r.name), [A]);
    assert.deepEqual(client.state()[TYPE.ENDPOINT].missing, ['ghost']);
    assert.ok(lines.some((l) => l.level === 'warn' && l.msg === 'xds: resource does not exist' && l.name === 'ghost' && l.type === 'EDS'));
  } finally {
    client.close();
    await server.stop();
  }
});

test('many ClusterLoadAssignments that never arrive are given up in one batch: one warning, one snapshot', async () => {
  const { log, lines } = memLog();
  const server = new AdsServer({ log });
  const ghosts = Array.from({ length: 200 }, (_, i) => `ghost-${String(i).padStart(3, '0')}`);
  server.setSnapshot(entries({ clusters: [cluster(A), ...ghosts.map((g, i) => cluster(`c${i}`, g))], clas: [cla(A, 80)] }));
  const port = await server.listen('127.0.0.1:0');
  const client = new XdsClient({ server: `127.0.0.1:${port}`, mode: 'sotw', node: { id: 't' }, resourceTimeoutMs: 200, log, watch: { [TYPE.CLUSTER]: '*' } });
  try {
    let missing = 0;
    client.on('missing', () => missing++);
    await waitEvent<XdsSnapshot>(client, 'snapshot', (s) => s.resources[TYPE.CLUSTER].length === 201);
    assert.equal(missing, 200);
    assert.deepEqual(client.state()[TYPE.ENDPOINT].missing, ghosts);
    const warns = lines.filter((l) => l.msg === 'xds: resource does not exist');
    assert.equal(warns.length, 1, JSON.stringify(warns));
    assert.equal(warns[0].count, 200);
  } finally {
    client.close();
    await server.stop();
  }
});

test('a blocked event loop does not give up a resource whose response is waiting to be read', async () => {
  // What an agent decoding a 10k-service push goes through: the "does not exist" timer comes due
  // while the process is busy, before the EDS response that answers it has been read.
  const { log, lines } = memLog();
  const server = new AdsServer({ log });
  server.setSnapshot(entries({ clusters: [cluster(A)], clas: [cla(A, 80)] }));
  const port = await server.listen('127.0.0.1:0');
  const client = new XdsClient({ server: `127.0.0.1:${port}`, mode: 'sotw', node: { id: 't' }, resourceTimeoutMs: 200, log, watch: { [TYPE.CLUSTER]: '*' } });
  try {
    client.once('update', (u: { typeUrl: string }) => {
      assert.equal(u.typeUrl, TYPE.CLUSTER);
      const until = Date.now() + 1600; // the EDS subscription is armed; block past its deadline
      while (Date.now() < until);
    });
    const s = await waitEvent<XdsSnapshot>(client, 'snapshot', (x) => x.resources[TYPE.ENDPOINT].length === 1);
    assert.deepEqual(s.resources[TYPE.ENDPOINT].map((r) => r.name), [A]);
    assert.deepEqual(client.state()[TYPE.ENDPOINT].missing, []);
    assert.ok(!lines.some((l) => l.msg === 'xds: resource does not exist'), 'gave up a resource that had arrived');
  } finally {
    client.close();
    await server.stop();
  }
});

test('TLS from files and a bearer token re-read on every reconnect', async () => {
  const fix = path.join(fixturesDir(), 'tls');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smxds-'));
  const tokenFile = path.join(dir, 'token');
  fs.writeFileSync(tokenFile, 'tok-1\n');
  const { log } = memLog();
  const creds = () => grpc.ServerCredentials.createSsl(null, [{ private_key: fs.readFileSync(path.join(fix, 'server.key')), cert_chain: fs.readFileSync(path.join(fix, 'server.crt')) }], false);
  const server = new AdsServer({ log, credentials: creds() });
  server.setSnapshot(entries({ addresses: [workload('default/w1', [10, 1, 0, 1])] }));
  const port = await server.listen('127.0.0.1:0');
  const client = new XdsClient({
    server: `127.0.0.1:${port}`,
    mode: 'sotw',
    node: { id: 't' },
    tls: { caFile: path.join(fix, 'ca.crt'), serverNameOverride: 'localhost' },
    tokenFile,
    backoff: { initialMs: 20, maxMs: 50 },
    log,
    watch: { [TYPE.ADDRESS]: '*' },
  });
  try {
    await waitEvent<XdsSnapshot>(client, 'snapshot', (s) => s.resources[TYPE.ADDRESS].length === 1);
    assert.equal(openStream(server).authorization, 'Bearer tok-1');
    fs.writeFileSync(tokenFile, 'tok-2\n');
    await server.stop();
    await waitEvent(client, 'disconnected');
    const conn = waitEvent(client, 'connected');
    await server.listen(`127.0.0.1:${port}`);
    await conn;
    await until('new stream', () => server.streams().some((s) => !s.closedAt && s.authorization === 'Bearer tok-2'));
  } finally {
    client.close();
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  // A client without the CA cannot connect (and says so only in debug logs while retrying).
  const plain = new AdsServer({ log, credentials: creds() });
  const p2 = await plain.listen('127.0.0.1:0');
  const c2 = new XdsClient({ server: `127.0.0.1:${p2}`, mode: 'sotw', node: { id: 't' }, backoff: { initialMs: 20, maxMs: 50 }, log, watch: { [TYPE.ADDRESS]: '*' } });
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(c2.isConnected(), false);
  c2.close();
  await plain.stop();
});

test('IPv6 loopback: listen on [::1], connect, identify', async () => {
  const server = new AdsServer({ log: memLog().log });
  const port = await server.listen('[::1]:0');
  const client = new XdsClient({ server: `[::1]:${port}`, mode: 'delta', node: { id: 'v6' }, log: memLog().log, watch: { [TYPE.LISTENER]: '*' } });
  try {
    await once(client, 'connected');
    await waitEvent<XdsSnapshot>(client, 'snapshot', (s) => s.waiting.length === 0);
    assert.equal(openStream(server).node?.id, 'v6');
  } finally {
    client.close();
    await server.stop();
  }
});
