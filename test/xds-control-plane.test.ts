// The local control plane: the sockmesh model as Envoy + ambient resources, the `xds:` list of
// raw resources, the watched file (valid edits pushed, invalid ones logged and ignored), and the
// `sockmesh control-plane` entry point.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Logger } from '../core/log';
import { isConfigError } from '../config/errors';
import { parseConfigText } from '../config/local-file';
import { TYPE, type Json, type TypeUrl } from '../xds/types';
import { encodeJson, toProto3Json } from '../xds/proto/json';
import { modelToXds, outboundClusterName, SYNTHETIC_WORKLOAD_UID_PREFIX } from '../xds/server/model-to-xds';
import { parseControlPlaneText, loadControlPlaneFile } from '../xds/server/config-file';
import { controlPlaneEntries, startControlPlane } from '../xds/server/control-plane';
import { Snapshot } from '../xds/server/snapshot';
import { parseListenAddress } from '../xds/server/ads-server';
import { XdsClient, type XdsSnapshot, type XdsUpdate } from '../xds/client/xds-client';
import { fixtureDir } from './fixture-dir';

function memLog(): { log: Logger; lines: Array<{ level: string; msg: string } & Record<string, unknown>> } {
  const lines: Array<{ level: string; msg: string } & Record<string, unknown>> = [];
  const rec = (level: string) => (msg: string, f?: Record<string, unknown>) => void lines.push({ level, msg, ...(f ?? {}) });
  return { log: { debug: rec('debug'), info: rec('info'), warn: rec('warn'), error: rec('error') }, lines };
}

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

const fixturesDir = (): string => fixtureDir('xds');
const FIX = fixturesDir();
const CONFIG = path.join(FIX, 'control-plane.yaml');
const HOST = 'echo.default.svc.cluster.local';
const TCP80 = outboundClusterName(80, HOST);
const UDP53 = outboundClusterName(53, HOST, 'UDP');
const b64 = (bytes: number[]) => Buffer.from(bytes).toString('base64');

function byKey(rs: Array<{ typeUrl: TypeUrl; name: string; json: Json }>): Map<string, Json> {
  return new Map(rs.map((r) => [`${r.typeUrl.split('.').pop()} ${r.name}`, r.json]));
}

test('the model as Envoy resources, named and shaped as istiod does', () => {
  const cfg = loadControlPlaneFile(CONFIG);
  const rs = byKey(modelToXds(cfg.loaded.model));
  assert.deepEqual([...rs.keys()].filter((k) => !k.startsWith('Address')), [
    `Cluster ${TCP80}`,
    `ClusterLoadAssignment ${TCP80}`,
    'Listener 198.19.0.10_80',
    'Listener fd53:6f63:6b01::10_80',
    `Listener ${HOST}:80`,
    `RouteConfiguration ${HOST}:80`,
    `Cluster ${UDP53}`,
    `ClusterLoadAssignment ${UDP53}`,
    'Listener 198.19.0.10_53_udp',
    'Listener fd53:6f63:6b01::10_53_udp',
  ]);
  assert.deepEqual(rs.get(`Cluster ${TCP80}`), {
    name: TCP80,
    type: 'EDS',
    edsClusterConfig: { edsConfig: { ads: {}, initialFetchTimeout: '0s', resourceApiVersion: 'V3' }, serviceName: TCP80 },
    connectTimeout: '10s',
    metadata: { filterMetadata: { istio: { services: [{ host: HOST, name: 'echo', namespace: 'default' }], default_original_port: 80 }, sockmesh: { protocol: 'TCP', portName: 'tcp' } } },
  });
  // tcp: only .11 (servicePort tcp) and .12 (all ports); target port 8080; weights, health.
  assert.deepEqual(rs.get(`ClusterLoadAssignment ${TCP80}`), {
    clusterName: TCP80,
    endpoints: [
      {
        locality: {},
        lbEndpoints: [
          { endpoint: { address: { socketAddress: { address: '198.18.1.11', portValue: 8080 } } }, healthStatus: 'HEALTHY', loadBalancingWeight: 3, metadata: { filterMetadata: { sockmesh: { node: 'node1' } } } },
          { endpoint: { address: { socketAddress: { address: '198.18.1.12', portValue: 8080 } } }, healthStatus: 'UNHEALTHY', loadBalancingWeight: 1 },
        ],
        loadBalancingWeight: 4,
      },
    ],
  });
  assert.deepEqual((rs.get(`ClusterLoadAssignment ${UDP53}`)?.endpoints as Json[])[0].lbEndpoints, [
    { endpoint: { address: { socketAddress: { address: '198.18.1.12', portValue: 53, protocol: 'UDP' } } }, healthStatus: 'UNHEALTHY', loadBalancingWeight: 1 },
  ]);
  assert.deepEqual(rs.get('Listener 198.19.0.10_80'), {
    name: '198.19.0.10_80',
    address: { socketAddress: { address: '198.19.0.10', portValue: 80 } },
    filterChains: [{ filters: [{ name: 'envoy.filters.network.tcp_proxy', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy', statPrefix: TCP80, cluster: TCP80 } }] }],
    bindToPort: false,
    trafficDirection: 'OUTBOUND',
  });
  const udp = rs.get('Listener fd53:6f63:6b01::10_53_udp') as Json;
  assert.deepEqual(udp.address, { socketAddress: { address: 'fd53:6f63:6b01::10', portValue: 53, protocol: 'UDP' } });
  assert.match(JSON.stringify(udp.listenerFilters), /udp_proxy.*"cluster":"outbound_udp\|53\|\|echo/);
  const api = rs.get(`Listener ${HOST}:80`) as Json;
  assert.deepEqual((api.apiListener as Json).apiListener, {
    '@type': 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
    statPrefix: `${HOST}:80`,
    rds: { configSource: { ads: {}, resourceApiVersion: 'V3' }, routeConfigName: `${HOST}:80` },
    httpFilters: [{ name: 'envoy.filters.http.router', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router' } }],
  });
  const vh = (rs.get(`RouteConfiguration ${HOST}:80`)?.virtualHosts as Json[])[0];
  assert.deepEqual(vh.routes, [{ match: { prefix: '/' }, route: { cluster: TCP80 } }]);
  for (const d of ['echo', 'echo:80', `${HOST}:80`, 'echo.default.svc', '198.19.0.10:80', '[fd53:6f63:6b01::10]:80']) assert.ok((vh.domains as string[]).includes(d), d);
  // Everything is canonical proto3 JSON: it encodes, and decodes back to itself.
  for (const r of modelToXds(cfg.loaded.model)) assert.deepEqual(toProto3Json(r.typeUrl, encodeJson(r.typeUrl, r.json)), r.json, r.name);
});

test('the model as ambient resources: services, workloads with their services, synthetic workloads for other endpoints', () => {
  const cfg = loadControlPlaneFile(CONFIG);
  const rs = byKey(modelToXds(cfg.loaded.model));
  assert.deepEqual(rs.get(`Address default/${HOST}`), {
    service: {
      name: 'echo',
      namespace: 'default',
      hostname: HOST,
      addresses: [{ address: b64([198, 19, 0, 10]) }, { address: b64([0xfd, 0x53, 0x6f, 0x63, 0x6b, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10]) }],
      ports: [{ servicePort: 80, targetPort: 8080 }, { servicePort: 53, targetPort: 53 }],
      ipFamilies: 'DUAL',
    },
  });
  assert.deepEqual(rs.get('Address default/echo-0'), {
    workload: {
      uid: 'default/echo-0',
      name: 'echo-0',
      namespace: 'default',
      serviceAccount: 'echo',
      node: 'node1',
      addresses: [b64([198, 18, 1, 11])],
      services: { [`default/${HOST}`]: { ports: [{ servicePort: 80, targetPort: 8080 }] } },
      capacity: 3,
    },
  });
  assert.deepEqual(rs.get('Address default/client'), {
    workload: { uid: 'default/client', name: 'client', namespace: 'default', serviceAccount: 'default', node: 'node1', addresses: [b64([198, 18, 1, 10])] },
  });
  // 198.18.1.12 is no workload's IP: a synthetic workload carries it, unhealthy like its endpoint.
  assert.deepEqual(rs.get(`Address ${SYNTHETIC_WORKLOAD_UID_PREFIX}198.18.1.12`), {
    workload: {
      uid: `${SYNTHETIC_WORKLOAD_UID_PREFIX}198.18.1.12`,
      name: 'endpoint-198-18-1-12',
      namespace: 'default',
      addresses: [b64([198, 18, 1, 12])],
      services: { [`default/${HOST}`]: { ports: [{ servicePort: 80, targetPort: 8080 }, { servicePort: 53, targetPort: 53 }] } },
      status: 'UNHEALTHY',
    },
  });
});

test('the `xds:` list: raw resources added, replacing generated ones of the same name', () => {
  const cfg = loadControlPlaneFile(CONFIG);
  assert.deepEqual(cfg.extra.map((e) => [e.typeUrl, e.name]), [
    [TYPE.AUTHORIZATION, 'default/allow-client'],
    [TYPE.CLUSTER, TCP80],
  ]);
  const snap = Snapshot.build(controlPlaneEntries(cfg));
  assert.equal(snap.resources(TYPE.AUTHORIZATION).size, 1);
  const c = toProto3Json(TYPE.CLUSTER, snap.resources(TYPE.CLUSTER).get(TCP80)?.value as Uint8Array);
  assert.equal(c.connectTimeout, '2s'); // the raw one won
  assert.equal(c.metadata, undefined);
  // The agent's part is exactly what the agent's loader makes of the file without `xds:`.
  const text = fs.readFileSync(CONFIG, 'utf8');
  assert.deepEqual(cfg.loaded, parseConfigText(text.slice(0, text.indexOf('\nxds:') + 1), CONFIG));
});

test('config errors: positions stay exact around the `xds:` list, and the list is checked entry by entry', () => {
  const text = [
    'xds:', // 1
    '  - "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster', // 2
    '    name: c1', // 3
    '    lbPolicy: FASTEST', // 4
    '  - "@type": type.googleapis.com/envoy.config.cluster.v3.Nope', // 5
    '  - "@type": type.googleapis.com/envoy.config.listener.v3.Listener', // 6
    '    address: { socketAddress: { address: 10.0.0.1, portValue: 80 } }', // 7
    '  - name: no-type', // 8
    '  - "@type": type.googleapis.com/istio.security.Authorization', // 9
    '    name: p', // 10
    '  - "@type": type.googleapis.com/istio.security.Authorization', // 11
    '    name: p', // 12
    'services:', // 13
    '  - name: echo', // 14
    '    vip: [198.19.0.10]', // 15
    '    ports: [{ port: 80 }]', // 16
  ].join('\n');
  let err: unknown;
  try {
    parseControlPlaneText(text, 'cp.yaml');
  } catch (e) {
    err = e;
  }
  assert.ok(isConfigError(err));
  const lines = err.message.split('\n');
  assert.deepEqual(
    lines.map((l) => l.replace(/: .*$/, '')),
    ['cp.yaml:4:15', 'cp.yaml:5:14', 'cp.yaml:6:5', 'cp.yaml:8:5', 'cp.yaml:11:5', 'cp.yaml:14:5', 'cp.yaml:15:5'],
  );
  assert.match(lines[0], /xds\[0\]\.lbPolicy: not a valid envoy\.config\.cluster\.v3\.Cluster: unknown value "FASTEST"/);
  assert.match(lines[1], /xds\[1\]\.@type: unsupported @type type\.googleapis\.com\/envoy\.config\.cluster\.v3\.Nope/);
  assert.match(lines[2], /xds\[2\]: LDS resource has no name/);
  assert.match(lines[3], /xds\[3\]\.@type: missing "@type"/);
  assert.match(lines[4], /xds\[5\]: duplicate Authorization resource \/p/);
  assert.match(lines[6], /services\[0\]\.vip: unknown key "vip"/);

  // Flow style (JSON) with `xds` first, in the middle, last.
  for (const json of [
    '{"xds": [], "services": []}',
    '{"services": [], "xds": [{"@type": "type.googleapis.com/istio.security.Authorization", "name": "p"}], "workloads": []}',
    '{"services": [], "xds": []}',
  ]) {
    assert.doesNotThrow(() => parseControlPlaneText(json, 'cp.json'), json);
  }
  assert.equal(parseControlPlaneText('xds:\n', 'x').extra.length, 0);
  assert.throws(() => parseControlPlaneText('xds: 5\n', 'x'), /x:1:6: xds: expected a list/);
});

test('listen addresses', () => {
  assert.deepEqual(parseListenAddress('127.0.0.1:0'), { host: '127.0.0.1', port: 0, grpcAddress: '127.0.0.1:0' });
  assert.deepEqual(parseListenAddress('[::1]:15010'), { host: '::1', port: 15010, grpcAddress: '[::1]:15010' });
  for (const bad of ['127.0.0.1', '::1:80', '127.0.0.1:70000', '']) assert.throws(() => parseListenAddress(bad), /SM_XDS_CONFIG|invalid listen address/);
});

test('startControlPlane: served to a client; file edits pushed; an invalid edit keeps the last snapshot', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smxds-cp-'));
  const file = path.join(dir, 'mesh.yaml');
  const original = fs.readFileSync(CONFIG, 'utf8');
  fs.writeFileSync(file, original);
  const { log, lines } = memLog();
  const cp = await startControlPlane({ configPath: file, address: '127.0.0.1:0', log, debounceMs: 20, pollIntervalMs: 50 });
  const client = new XdsClient({
    server: cp.address,
    mode: 'delta',
    node: { id: 'sidecar~10.0.0.1~t.default~default.svc.cluster.local' },
    log,
    backoff: { initialMs: 20, maxMs: 100 },
    watch: { [TYPE.CLUSTER]: '*', [TYPE.LISTENER]: '*', [TYPE.ADDRESS]: '*', [TYPE.AUTHORIZATION]: '*' },
  });
  const write = (text: string) => {
    // Replace atomically, the way the README recommends (and editors do).
    fs.writeFileSync(file + '.tmp', text);
    fs.renameSync(file + '.tmp', file);
  };
  try {
    const snap = await waitEvent<XdsSnapshot>(client, 'snapshot', (s) => s.waiting.length === 0 && s.resources[TYPE.ROUTE].length === 1);
    assert.equal(snap.resources[TYPE.CLUSTER].length, 2);
    assert.equal(snap.resources[TYPE.ENDPOINT].length, 2);
    assert.equal(snap.resources[TYPE.LISTENER].length, 5);
    assert.equal(snap.resources[TYPE.ADDRESS].length, 4);
    assert.deepEqual(snap.resources[TYPE.AUTHORIZATION].map((r) => r.name), ['default/allow-client']);

    // A weight edit: only the CLA and the workload's capacity change.
    const upd = waitEvent<XdsUpdate>(client, 'update', (u) => u.typeUrl === TYPE.ENDPOINT);
    write(original.replace('weight: 3', 'weight: 5'));
    const u = await upd;
    assert.deepEqual(u.updated.map((r) => r.name), [TCP80]);
    assert.match(JSON.stringify(u.updated[0].json), /"loadBalancingWeight":5/);

    // An invalid edit: logged, nothing pushed, the last snapshot stays.
    const version = cp.server.currentSnapshot().version;
    const responses = cp.server.streams()[0].responses.length;
    write(original.replace('weight: 3', 'weight: 0'));
    const deadline = Date.now() + 3000;
    while (!lines.some((l) => l.level === 'error' && /invalid config/.test(l.msg))) {
      assert.ok(Date.now() < deadline, 'the invalid edit was logged');
      await new Promise((r) => setTimeout(r, 10));
    }
    const logged = lines.find((l) => l.level === 'error' && /invalid config/.test(l.msg)) as Json;
    assert.match(String(logged.error), /mesh\.yaml:\d+:\d+: endpoints\[0\]\.weight: weight 0 is not allowed/);
    assert.equal(cp.server.currentSnapshot().version, version);
    assert.equal(cp.server.streams()[0].responses.length, responses);
    assert.match(JSON.stringify(client.get(TYPE.ENDPOINT, TCP80)?.json), /"loadBalancingWeight":5/);

    // A comment-only edit re-reads the file but changes nothing.
    write('# just a comment\n' + original.replace('weight: 3', 'weight: 5'));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(cp.server.streams()[0].responses.length, responses);

    // Removing the `xds:` list removes the Authorization and restores the generated cluster.
    const gone = waitEvent<XdsUpdate>(client, 'update', (u) => u.typeUrl === TYPE.AUTHORIZATION);
    write(original.slice(0, original.indexOf('\nxds:') + 1));
    assert.deepEqual((await gone).removed, ['default/allow-client']);
    assert.equal(cp.reload(), true);
  } finally {
    client.close();
    await cp.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('`sockmesh control-plane` entry point: usage, invalid config, run until SIGTERM', async () => {
  const mod = path.resolve(__dirname, '..', 'xds', 'server', 'control-plane.js');
  const run = (args: string[]) => `require(${JSON.stringify(mod)}).runControlPlaneCli(${JSON.stringify(args)})`;
  const env = { ...process.env, NODE_PATH: process.env.NODE_PATH ?? path.join(process.cwd(), 'node_modules') };
  const usage = spawnSync(process.execPath, ['-e', run([])], { encoding: 'utf8', env });
  assert.equal(usage.status, 2);
  assert.match(usage.stderr, /--config is required/);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smxds-cli-'));
  try {
    const bad = path.join(dir, 'bad.yaml');
    fs.writeFileSync(bad, 'services:\n  - name: x\n    vips: [198.19.0.1]\n    ports: [{ port: 99999 }]\n');
    const inv = spawnSync(process.execPath, ['-e', run(['--config', bad])], { encoding: 'utf8', env });
    assert.equal(inv.status, 1);
    assert.match(inv.stderr, /bad\.yaml:4:\d+: services\[0\]\.ports\[0\]\.port/);

    const child = spawn(process.execPath, ['-e', run(['--config', CONFIG, '--listen', '127.0.0.1:0'])], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const deadline = Date.now() + 10_000;
    while (!/control plane running/.test(err)) {
      assert.ok(Date.now() < deadline, `started: ${err}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.match(err, /"msg":"xds server listening".*"address":"127\.0\.0\.1:\d+"/);
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
