// An independent peer: gRPC's own xDS client (@grpc/grpc-js-xds) resolves `xds:///HOST:PORT`
// through our control plane — LDS api_listener → RDS → CDS → EDS, its own decoding and validation
// — and real unary RPCs reach real gRPC servers on 127.0.0.1. Editing the control plane's YAML
// moves the RPCs to another server; a resource gRPC rejects is NACKed and recorded by our server.
//
// The endpoints are given as a raw ClusterLoadAssignment in the file's `xds:` list because the
// agent's config format (rightly, for a datapath) refuses loopback addresses in `endpoints:`, and
// these tests may only use 127.0.0.1. The service, its cluster, listener and route are generated
// from `services:` as for any other service.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../core/log';
import { TYPE } from '../xds/types';
import { startControlPlane, type ControlPlane } from '../xds/server/control-plane';

const quiet: Logger = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };

const HOST = 'echo.default.svc.cluster.local';
const TARGET = `xds:///${HOST}:8080`;
const CLUSTER = `outbound|8080||${HOST}`;

// A tiny service without .proto files: bytes in, bytes out.
const identity = (b: Buffer) => b;
const ECHO: grpc.ServiceDefinition = {
  Echo: {
    path: '/sockmesh.test.Echo/Echo',
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
    originalName: 'echo',
  },
};

async function echoServer(id: string): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server();
  server.addService(ECHO, { Echo: (_call: unknown, cb: grpc.sendUnaryData<Buffer>) => cb(null, Buffer.from(id)) } as grpc.UntypedServiceImplementation);
  const port = await new Promise<number>((res, rej) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  return { server, port };
}

function config(endpointPort: number, extraXds = ''): string {
  return `# control plane config for the gRPC interop test
services:
  - name: echo
    namespace: default
    vips: [198.19.0.10]
    ports:
      - { name: grpc, port: 8080 }
xds:
  - "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
    clusterName: "${CLUSTER}"
    endpoints:
      - locality: {}
        loadBalancingWeight: 1
        lbEndpoints:
          - endpoint: { address: { socketAddress: { address: 127.0.0.1, portValue: ${endpointPort} } } }
            healthStatus: HEALTHY
            loadBalancingWeight: 1
${extraXds}`;
}

let dir = '';
let file = '';
let cp: ControlPlane;
let a: { server: grpc.Server; port: number };
let b: { server: grpc.Server; port: number };
let client: grpc.Client & { Echo?: unknown };

function write(text: string): void {
  fs.writeFileSync(file + '.tmp', text);
  fs.renameSync(file + '.tmp', file);
}

function echo(): Promise<string> {
  return new Promise((resolve, reject) => {
    (client as unknown as { Echo: (req: Buffer, opts: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r?: Buffer) => void) => void }).Echo(
      Buffer.from('ping'),
      { deadline: Date.now() + 5000 },
      (e, r) => (e ? reject(e) : resolve((r as Buffer).toString())),
    );
  });
}

async function until(what: string, pred: () => boolean | Promise<boolean>, ms = 8000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

before(async () => {
  a = await echoServer('A');
  b = await echoServer('B');
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smxds-grpc-'));
  file = path.join(dir, 'mesh.yaml');
  write(config(a.port));
  cp = await startControlPlane({ configPath: file, address: '127.0.0.1:0', log: quiet, debounceMs: 20, pollIntervalMs: 50 });
  // grpc-js-xds reads (and caches) its bootstrap when the first xds: channel is created.
  process.env.GRPC_XDS_BOOTSTRAP_CONFIG = JSON.stringify({
    xds_servers: [{ server_uri: `127.0.0.1:${cp.port}`, channel_creds: [{ type: 'insecure' }], server_features: ['xds_v3'] }],
    node: { id: 'sidecar~127.0.0.1~grpc-client.default~default.svc.cluster.local', locality: { zone: 'test' } },
  });
  (require('@grpc/grpc-js-xds') as { register(): void }).register();
  const Ctor = grpc.makeGenericClientConstructor(ECHO, 'Echo');
  client = new Ctor(TARGET, grpc.credentials.createInsecure());
});

after(async () => {
  client?.close();
  await cp?.stop();
  a?.server.forceShutdown();
  b?.server.forceShutdown();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('gRPC resolves xds:///echo.default.svc.cluster.local:8080 through our control plane and calls the server', async () => {
  assert.equal(await echo(), 'A');
  const s = cp.server.streams().find((x) => String(x.node?.id ?? '').startsWith('sidecar~127.0.0.1~grpc-client'));
  assert.ok(s, 'gRPC opened a stream');
  assert.equal(s.kind, 'sotw');
  assert.equal(((s.node?.locality ?? {}) as { zone?: string }).zone, 'test');
  assert.deepEqual(s.types[TYPE.LISTENER]?.subscription, [`${HOST}:8080`]);
  assert.deepEqual(s.types[TYPE.ROUTE]?.subscription, [`${HOST}:8080`]);
  assert.deepEqual(s.types[TYPE.CLUSTER]?.subscription, [CLUSTER]);
  assert.deepEqual(s.types[TYPE.ENDPOINT]?.subscription, [CLUSTER]);
  await until('gRPC ACKed all four types', () => [TYPE.LISTENER, TYPE.ROUTE, TYPE.CLUSTER, TYPE.ENDPOINT].every((t) => (s.types[t]?.acks ?? 0) >= 1));
  for (const t of [TYPE.LISTENER, TYPE.ROUTE, TYPE.CLUSTER, TYPE.ENDPOINT]) assert.equal(s.types[t]?.nacks, 0, t);
  for (let i = 0; i < 5; i++) assert.equal(await echo(), 'A');
});

test('editing the endpoints in the YAML moves the RPCs to the second server', async () => {
  write(config(b.port));
  await until('RPCs reach B', async () => (await echo()) === 'B');
  for (let i = 0; i < 10; i++) assert.equal(await echo(), 'B');
});

test('a route gRPC rejects is NACKed by gRPC, recorded by our server, and the old route keeps working', async () => {
  // No path_specifier in the match: gRPC's RDS validation rejects it.
  const badRoute = `  - "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
    name: "${HOST}:8080"
    virtualHosts:
      - name: all
        domains: ["*"]
        routes:
          - match: { caseSensitive: true }
            route: { cluster: "${CLUSTER}" }
`;
  const nack = new Promise<{ message: string }>((resolve) => cp.server.once('nack', resolve));
  write(config(b.port, badRoute));
  const n = await nack;
  assert.match(n.message, /no path_specifier/);
  assert.equal(cp.server.lastNack(TYPE.ROUTE)?.message, n.message);
  assert.equal(await echo(), 'B');
  write(config(b.port));
  const s = cp.server.streams().find((x) => !x.closedAt && String(x.node?.id ?? '').startsWith('sidecar~127.0.0.1~grpc-client'));
  assert.ok(s);
  const acks = s.types[TYPE.ROUTE]?.acks ?? 0;
  await until('gRPC ACKs the restored route', () => (s.types[TYPE.ROUTE]?.acks ?? 0) > acks);
  assert.equal(await echo(), 'B');
});
