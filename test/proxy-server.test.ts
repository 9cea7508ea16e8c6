// The L7 proxy server against real upstreams on 127.0.0.1: HTTP/1.1 (node:http), h2c (node:http2),
// gRPC (@grpc/grpc-js on both ends), a hand-written WebSocket-style upgrade echo. The kernel's part
// (lookupOrigin) is a stand-in that returns whatever `state.origin` holds; the RBAC evaluator is a
// stand-in that denies paths under /deny and requests carrying x-deny.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import { createL7Proxy, type L7Proxy, type L7ProxyOptions } from '../proxy/server';
import type { ConnectionOrigin, Decision, Evaluator, RequestAttributes } from '../proxy/types';

// ---- stand-ins -------------------------------------------------------------------------------

class StandIn implements Evaluator {
  seen: RequestAttributes[] = [];
  constructor(private readonly denyAll = false) {}
  evaluate(req: RequestAttributes): Decision {
    this.seen.push(req);
    const deny = this.denyAll || req.path.startsWith('/deny') || req.headers['x-deny'] !== undefined;
    return deny
      ? {
          allow: false,
          filter: 'stand-in',
          policy: 'deny-path',
          reason: 'matched DENY policy',
          dryRun: [{ filter: 'stand-in', policy: 'shadow-deny', action: 'DENY', wouldAllow: false }],
          unsupported: [],
          logged: [],
        }
      : { allow: true, filter: 'stand-in', policy: 'allow-rest', reason: 'matched ALLOW policy', dryRun: [], unsupported: [], logged: [] };
  }
}

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  bodyBytes: number;
  trailers: Record<string, string>;
}

interface Upstream {
  name: string;
  port: number;
  seen: Seen[];
  close(): Promise<void>;
}

/**
 * /echo streams the body back (/echo-late: after 300 ms, so that the request side has to push back
 * meanwhile); /trailers answers with a trailer; /hang never answers; anything else answers JSON
 * describing the request.
 */
async function httpUpstream(name: string): Promise<Upstream> {
  const seen: Seen[] = [];
  const hanging: http.ServerResponse[] = [];
  const server = http.createServer((req, res) => {
    if (req.url === '/echo' || req.url === '/echo-late') {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      req.pause();
      setTimeout(() => req.pipe(res), req.url === '/echo-late' ? 300 : 0);
      return;
    }
    if (req.url === '/trailers') {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-checksum' });
      res.write('part1');
      res.addTrailers({ 'x-checksum': 'abc123' });
      res.end('part2');
      return;
    }
    if (req.url === '/hang') {
      hanging.push(res);
      return;
    }
    let bodyBytes = 0;
    req.on('data', (d: Buffer) => (bodyBytes += d.length));
    req.on('end', () => {
      const s: Seen = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, bodyBytes, trailers: { ...req.trailers } as Record<string, string> };
      seen.push(s);
      res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': name });
      res.end(JSON.stringify({ upstream: name, ...s }));
    });
  });
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, bodyBytes: 0, trailers: {} });
    if (req.url === '/decline') {
      socket.end('HTTP/1.1 426 Upgrade Required\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope');
      return;
    }
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n');
    if (head.length) socket.write(head);
    socket.pipe(socket);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    name,
    port: (server.address() as net.AddressInfo).port,
    seen,
    close: () =>
      new Promise((r) => {
        for (const res of hanging) res.destroy();
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

interface H2Seen {
  headers: http2.IncomingHttpHeaders;
  trailers?: http2.IncomingHttpHeaders;
  bodyBytes: number;
}

/** h2c: answers JSON of what it saw, with a response trailer x-served-by. */
async function h2Upstream(): Promise<{ port: number; seen: H2Seen[]; close(): Promise<void> }> {
  const seen: H2Seen[] = [];
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    const s: H2Seen = { headers, bodyBytes: 0 };
    stream.on('trailers', (t) => (s.trailers = t));
    stream.on('data', (d: Buffer) => (s.bodyBytes += d.length));
    stream.on('end', () => {
      seen.push(s);
      stream.respond({ ':status': 200, 'content-type': 'application/json' }, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers({ 'x-served-by': 'h2-upstream' }));
      stream.end(JSON.stringify({ path: headers[':path'], bodyBytes: s.bodyBytes }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, seen, close: () => new Promise((r) => server.close(() => r())) };
}

interface Harness {
  proxy: L7Proxy;
  port: number;
  logs: Record<string, unknown>[];
  state: { origin: ConnectionOrigin | undefined };
}

async function startProxy(opts: Partial<L7ProxyOptions> = {}): Promise<Harness> {
  const logs: Record<string, unknown>[] = [];
  const state: Harness['state'] = { origin: undefined };
  const proxy = createL7Proxy({
    lookupOrigin: () => state.origin,
    originLookupRetryMs: 1,
    accessLog: (line) => logs.push(JSON.parse(line)),
    ...opts,
  });
  const { port } = await proxy.listen({ host: '127.0.0.1' });
  return { proxy, port, logs, state };
}

const origin = (port: number, principal = 'spiffe://cluster.local/ns/shop/sa/frontend'): ConnectionOrigin => ({
  destinationIp: '127.0.0.1',
  destinationPort: port,
  principal,
});

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  trailers: NodeJS.Dict<string>;
  localPort: number;
}

function request(
  port: number,
  o: { method?: string; path?: string; headers?: http.OutgoingHttpHeaders; body?: string | Buffer; agent?: http.Agent } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: o.method ?? 'GET', path: o.path ?? '/', headers: o.headers, agent: o.agent ?? false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString('utf8'),
          trailers: res.trailers,
          localPort: res.socket?.localPort ?? req.socket?.localPort ?? 0,
        }),
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(o.body);
  });
}

/** Reads from a raw socket until `until` holds for what arrived (or the peer closes). */
function rawConnect(port: number) {
  const socket = net.connect(port, '127.0.0.1');
  let text = '';
  let closed = false;
  const waiters: (() => void)[] = [];
  const poke = () => waiters.splice(0).forEach((w) => w());
  socket.on('data', (d: Buffer) => {
    text += d.toString('latin1');
    poke();
  });
  socket.on('close', () => {
    closed = true;
    poke();
  });
  socket.on('error', () => {});
  return {
    socket,
    get text() {
      return text;
    },
    get closed() {
      return closed;
    },
    async until(pred: (t: string) => boolean, what: string, ms = 10_000): Promise<string> {
      const deadline = Date.now() + ms;
      while (!pred(text)) {
        if (closed) throw new Error(`connection closed before ${what}; got ${JSON.stringify(text.slice(0, 300))}`);
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(text.slice(0, 300))}`);
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 50);
        });
      }
      return text;
    },
    async waitClose(ms = 10_000): Promise<void> {
      const deadline = Date.now() + ms;
      while (!closed) {
        if (Date.now() > deadline) throw new Error('connection not closed');
        await new Promise<void>((r) => {
          waiters.push(r);
          setTimeout(r, 50);
        });
      }
    },
  };
}

async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

// ---- fixtures shared by the tests --------------------------------------------------------------

let A: Upstream;
let B: Upstream;
let H2: Awaited<ReturnType<typeof h2Upstream>>;
let h: Harness;
let evaluator: StandIn;

before(async () => {
  A = await httpUpstream('A');
  B = await httpUpstream('B');
  H2 = await h2Upstream();
  evaluator = new StandIn();
  h = await startProxy({
    policies: new Map<string, Evaluator>([
      [`127.0.0.1:${A.port}`, evaluator],
      [`:${H2.port}`, evaluator],
    ]),
  });
});

after(async () => {
  await h.proxy.close();
  await Promise.all([A.close(), B.close(), H2.close()]);
});

// ---- HTTP/1.1 ----------------------------------------------------------------------------------

test('an allowed request goes to the recorded destination, never to the one named by Host or an absolute-form target', async () => {
  h.state.origin = origin(A.port);
  const r = await request(h.port, { path: '/hello?x=1', headers: { host: `127.0.0.1:${B.port}`, 'x-multi': ['a', 'b'] } });
  assert.equal(r.status, 200);
  assert.equal(JSON.parse(r.body).upstream, 'A');
  assert.equal(B.seen.length, 0);
  const seen = A.seen.at(-1)!;
  assert.equal(seen.url, '/hello?x=1');
  assert.equal(seen.headers.host, `127.0.0.1:${B.port}`, 'Host is forwarded as the client sent it');
  assert.equal(seen.headers.expect, undefined);

  // What the policy saw: the kernel's view of the connection, the request's own view of itself.
  const attrs = evaluator.seen.at(-1)!;
  assert.equal(attrs.destinationIp, '127.0.0.1');
  assert.equal(attrs.destinationPort, A.port);
  assert.equal(attrs.principal, 'spiffe://cluster.local/ns/shop/sa/frontend');
  assert.equal(attrs.sourceIp, '127.0.0.1');
  assert.equal(attrs.sourcePort, r.localPort);
  assert.equal(attrs.directRemoteIp, '127.0.0.1');
  assert.equal(attrs.remoteIp, '127.0.0.1');
  assert.equal(attrs.method, 'GET');
  assert.equal(attrs.path, '/hello?x=1');
  assert.equal(attrs.headers[':authority'], `127.0.0.1:${B.port}`);
  assert.equal(attrs.headers[':method'], 'GET');
  assert.equal(attrs.headers[':path'], '/hello?x=1');
  assert.equal(attrs.headers[':scheme'], 'http');
  assert.equal(attrs.headers['x-multi'], 'a,b', 'repeated headers joined with ","');

  // Absolute-form naming B: rewritten to origin-form, B's authority becomes Host, still sent to A.
  const c = rawConnect(h.port);
  c.socket.write(`GET http://127.0.0.1:${B.port}/abs?q=1 HTTP/1.1\r\nHost: somewhere.else\r\nConnection: close\r\n\r\n`);
  await c.waitClose();
  assert.match(c.text, /^HTTP\/1\.1 200 OK\r\n/);
  assert.match(c.text, /"upstream":"A"/);
  assert.equal(B.seen.length, 0);
  assert.equal(A.seen.at(-1)!.url, '/abs?q=1');
  assert.equal(A.seen.at(-1)!.headers.host, `127.0.0.1:${B.port}`);
});

test('a denied request is answered 403 "RBAC: access denied" and never reaches the upstream', async () => {
  h.state.origin = origin(A.port);
  const before = A.seen.length;
  const r = await request(h.port, { path: '/deny/secret' });
  assert.equal(r.status, 403);
  assert.equal(r.body, 'RBAC: access denied');
  assert.equal(r.headers['content-type'], 'text/plain');
  // Dot segments and percent-encoded unreserved characters cannot walk around the rule.
  for (const p of ['/ok/../deny/x', '/%64eny/x', '/./deny', '/ok/%2E%2E/deny']) {
    const d = await request(h.port, { path: p });
    assert.equal(d.status, 403, p);
  }
  assert.equal(A.seen.length, before);
  const ok = await request(h.port, { path: '/a/./b/../c' });
  assert.equal(ok.status, 200);
  assert.equal(A.seen.at(-1)!.url, '/a/c', 'the upstream receives the path the policy judged');
  const log = h.logs.find((l) => l.path === '/deny/secret')!;
  assert.equal(log.decision, 'deny');
  assert.equal(log.policy, 'deny-path');
  assert.equal(log.status, 403);
});

test('fail closed: a destination without an evaluator is refused with 503 and never reached (decision "no_policy")', async () => {
  h.state.origin = origin(B.port);
  const before = B.seen.length;
  const r = await request(h.port, { path: '/allowed/but-unpoliced' });
  assert.equal(r.status, 503);
  assert.equal(r.body, 'sockmesh: no policy for this destination yet');
  assert.equal(B.seen.length, before, 'the backend saw the request');
  assert.equal(h.logs.find((l) => l.path === '/allowed/but-unpoliced')!.decision, 'no_policy');
});

test('fail closed: a proxy that has no policy table yet refuses every request with 503 (gRPC: UNAVAILABLE)', async () => {
  const p = await startProxy();
  try {
    p.state.origin = origin(A.port);
    const before = A.seen.length;
    const r = await request(p.port, { path: '/hello' });
    assert.equal(r.status, 503);
    assert.equal(p.logs.at(-1)!.decision, 'no_table');
    const g = await request(p.port, { method: 'POST', path: '/echo.Echo/Allowed', headers: { 'content-type': 'application/grpc' }, body: '' });
    assert.equal(g.status, 200);
    assert.equal(g.headers['grpc-status'] ?? g.trailers['grpc-status'], '14');
    assert.equal(A.seen.length, before, 'the backend saw a request');
    // Once a table is in force, the same request is judged and forwarded.
    p.proxy.setPolicies(new Map([[`127.0.0.1:${A.port}`, new StandIn()]]));
    assert.equal((await request(p.port, { path: '/hello' })).status, 200);
  } finally {
    await p.proxy.close();
  }
});

test('a connection the datapath did not steer is refused (403) and closed', async () => {
  h.state.origin = undefined;
  const before = A.seen.length + B.seen.length;
  const c = rawConnect(h.port);
  c.socket.write(`GET / HTTP/1.1\r\nHost: 127.0.0.1:${A.port}\r\n\r\n`);
  await c.waitClose();
  assert.match(c.text, /^HTTP\/1\.1 403 Forbidden\r\n/);
  assert.match(c.text, /connection: close/i);
  // HTTP/2 too.
  const s = http2.connect(`http://127.0.0.1:${h.port}`);
  s.on('error', () => {});
  const status = await new Promise<number>((resolve, reject) => {
    const r = s.request({ ':path': '/' });
    r.on('response', (hd) => resolve(Number(hd[':status'])));
    r.on('error', reject);
    r.end();
  });
  s.destroy();
  assert.equal(status, 403);
  assert.equal(A.seen.length + B.seen.length, before);
  assert.ok(h.logs.some((l) => l.decision === 'unknown_origin' && l.status === 403));
});

test('policies swap while a keep-alive connection stays open: allowed, then denied, then allowed again on the same connection', async () => {
  h.state.origin = origin(A.port);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const r1 = await request(h.port, { path: '/swap', agent });
    assert.equal(r1.status, 200);
    h.proxy.setPolicies(new Map([[`127.0.0.1:${A.port}`, new StandIn(true)]]));
    const r2 = await request(h.port, { path: '/swap', agent });
    assert.equal(r2.status, 403);
    assert.equal(r2.body, 'RBAC: access denied');
    assert.equal(r2.localPort, r1.localPort, 'same connection');
    assert.notEqual(r2.headers.connection, 'close');
    h.proxy.setPolicies(
      new Map<string, Evaluator>([
        [`127.0.0.1:${A.port}`, evaluator],
        [`:${H2.port}`, evaluator],
      ]),
    );
    const r3 = await request(h.port, { path: '/swap', agent });
    assert.equal(r3.status, 200);
    assert.equal(r3.localPort, r1.localPort, 'still the same connection');
  } finally {
    agent.destroy();
  }
  assert.throws(() => h.proxy.setPolicies(new Map([['not-a-key', evaluator]])), { code: 'SM_PROXY_POLICY_KEY' });
});

test('Expect: 100-continue is answered only after the policy allowed the request', async () => {
  h.state.origin = origin(A.port);
  const c = rawConnect(h.port);
  c.socket.write('POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n');
  await c.until((t) => t.includes('\r\n\r\n'), '100 Continue');
  assert.equal(c.text, 'HTTP/1.1 100 Continue\r\n\r\n');
  c.socket.write('hello');
  await c.until((t) => t.includes('"upstream":"A"'), 'final response');
  assert.match(c.text, /\r\n\r\nHTTP\/1\.1 200 OK\r\n/);
  const seen = A.seen.at(-1)!;
  assert.equal(seen.bodyBytes, 5);
  assert.equal(seen.headers.expect, undefined, 'the proxy answered Expect itself');
  c.socket.destroy();

  const d = rawConnect(h.port);
  d.socket.write('POST /deny/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n');
  await d.waitClose();
  assert.match(d.text, /^HTTP\/1\.1 403 Forbidden\r\n/, 'no 100 before the denial');
  assert.ok(d.text.endsWith('RBAC: access denied'));
});

test('Upgrade (WebSocket) is passed through after the policy allowed it; denied and declined upgrades are not', async () => {
  h.state.origin = origin(A.port);
  const up = 'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n';
  const c = rawConnect(h.port);
  c.socket.write(`GET /ws HTTP/1.1\r\nHost: a\r\n${up}\r\nearly`);
  await c.until((t) => t.includes('\r\n\r\n') && t.includes('early'), '101 and the echoed early bytes');
  assert.match(c.text, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
  assert.match(c.text, /upgrade: websocket/i);
  c.socket.write('-ping-');
  await c.until((t) => t.endsWith('early-ping-'), 'echo through the tunnel');
  c.socket.end();
  await c.waitClose();
  const rec = await waitFor(() => h.logs.find((l) => l.path === '/ws'));
  assert.equal(rec.status, 101);
  assert.equal(rec.upgraded, true);
  assert.equal(rec.bytesIn, 11);
  assert.equal(rec.bytesOut, 11);

  const d = rawConnect(h.port);
  d.socket.write(`GET /deny/ws HTTP/1.1\r\nHost: a\r\n${up}\r\n`);
  await d.waitClose();
  assert.match(d.text, /^HTTP\/1\.1 403 Forbidden\r\n/);

  const n = rawConnect(h.port);
  n.socket.write(`GET /decline HTTP/1.1\r\nHost: a\r\n${up}\r\n`);
  await n.waitClose();
  assert.match(n.text, /^HTTP\/1\.1 426 Upgrade Required\r\n/);
  assert.ok(n.text.endsWith('nope'));

  // h2c is never tunnelled (later requests would bypass the policy): served as a plain request.
  const p = rawConnect(h.port);
  p.socket.write('GET /plain HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n');
  await p.waitClose();
  assert.match(p.text, /^HTTP\/1\.1 200 OK\r\n/);
  const seen = A.seen.at(-1)!;
  assert.equal(seen.url, '/plain');
  assert.equal(seen.headers.upgrade, undefined);
  assert.equal(seen.headers['http2-settings'], undefined);
});

test('HTTP/1.1 response trailers are preserved', async () => {
  h.state.origin = origin(A.port);
  const r = await request(h.port, { path: '/trailers' });
  assert.equal(r.status, 200);
  assert.equal(r.body, 'part1part2');
  assert.equal(r.trailers['x-checksum'], 'abc123');
});

test('an unreachable destination is answered 503 with the reason', async () => {
  const dead = await closedPort();
  const table = (extra: Array<[string, Evaluator]>) => new Map<string, Evaluator>([[`127.0.0.1:${A.port}`, evaluator], [`:${H2.port}`, evaluator], ...extra]);
  h.proxy.setPolicies(table([[`127.0.0.1:${dead}`, evaluator]]));
  try {
    h.state.origin = origin(dead);
    const r = await request(h.port, { path: '/x' });
    assert.equal(r.status, 503);
    assert.equal(r.body, 'upstream connect error: ECONNREFUSED');
    assert.match(await h.proxy.metrics(), /sockmesh_proxy_upstream_errors_total\{reason="connect_refused"\} [1-9]/);
  } finally {
    h.proxy.setPolicies(table([]));
  }
});

test('an upstream that does not answer is answered 504', async () => {
  const p = await startProxy({ timeouts: { upstreamResponseHeadersMs: 300 }, policies: new Map([[`127.0.0.1:${A.port}`, new StandIn()]]) });
  try {
    p.state.origin = origin(A.port);
    const r = await request(p.port, { path: '/hang' });
    assert.equal(r.status, 504);
    assert.equal(r.body, 'upstream request timeout');
    assert.equal(p.logs.at(-1)!.upstreamError, 'UND_ERR_HEADERS_TIMEOUT');
  } finally {
    await p.proxy.close();
  }
});

test('IPv6: a proxy on [::1] forwards to an IPv6 destination; the policy sees IPv6 addresses', async () => {
  const up = http.createServer((req, res) => res.end(`v6 ${req.url}`));
  await new Promise<void>((r) => up.listen(0, '::1', r));
  const upPort = (up.address() as net.AddressInfo).port;
  const ev = new StandIn();
  const logs: Record<string, unknown>[] = [];
  const proxy = createL7Proxy({
    lookupOrigin: () => ({ destinationIp: '::1', destinationPort: upPort }),
    policies: new Map([[`[::1]:${upPort}`, ev]]),
    accessLog: (l) => logs.push(JSON.parse(l)),
  });
  try {
    const { port } = await proxy.listen({ host: '::1' });
    const r = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      http
        .get({ host: '::1', port, path: '/six', agent: false }, (res) => {
          let b = '';
          res.on('data', (d) => (b += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: b }));
        })
        .on('error', reject);
    });
    assert.deepEqual(r, { status: 200, body: 'v6 /six' });
    assert.equal(ev.seen.at(-1)!.sourceIp, '::1');
    assert.equal(ev.seen.at(-1)!.destinationIp, '::1');
    assert.equal(logs.at(-1)!.destination, `[::1]:${upPort}`);
    assert.match(String(logs.at(-1)!.client), /^\[::1\]:\d+$/);
  } finally {
    await proxy.close();
    await new Promise((r) => up.close(r));
  }
});

// ---- HTTP/2 and gRPC -----------------------------------------------------------------------------

test('h2c in, h2c out: requests, request and response trailers, denial, policy swap on one session', async () => {
  h.state.origin = origin(H2.port);
  const s = http2.connect(`http://127.0.0.1:${h.port}`);
  s.on('error', () => {});
  const call = (hdrs: http2.OutgoingHttpHeaders, body?: string, trailers?: http2.OutgoingHttpHeaders) =>
    new Promise<{ status: number; body: string; trailers?: http2.IncomingHttpHeaders; headers: http2.IncomingHttpHeaders }>((resolve, reject) => {
      const r = s.request(hdrs, { endStream: body === undefined, waitForTrailers: trailers !== undefined });
      if (trailers) r.once('wantTrailers', () => r.sendTrailers(trailers));
      let headers: http2.IncomingHttpHeaders = {};
      let tr: http2.IncomingHttpHeaders | undefined;
      let b = '';
      r.on('response', (hd) => (headers = hd));
      r.on('trailers', (t) => (tr = t));
      r.on('data', (d: Buffer) => (b += d));
      r.on('end', () => resolve({ status: Number(headers[':status']), body: b, trailers: tr, headers }));
      r.on('error', reject);
      if (body !== undefined) r.end(body);
    });
  try {
    const r1 = await call({ ':path': '/h2/./one', ':method': 'POST', 'x-multi': ['1', '2'] }, 'twelve bytes', { 'x-req-trailer': 'sum' });
    assert.equal(r1.status, 200);
    assert.deepEqual(JSON.parse(r1.body), { path: '/h2/one', bodyBytes: 12 });
    assert.equal(r1.trailers?.['x-served-by'], 'h2-upstream');
    const seen = H2.seen.at(-1)!;
    assert.equal(seen.trailers?.['x-req-trailer'], 'sum');
    assert.equal(seen.headers[':authority'], `127.0.0.1:${h.port}`);
    assert.equal(evaluator.seen.at(-1)!.headers['x-multi'], '1,2');

    const denied = await call({ ':path': '/deny/h2' });
    assert.equal(denied.status, 403);
    assert.equal(denied.body, 'RBAC: access denied');

    h.proxy.setPolicies(new Map([[`:${H2.port}`, new StandIn(true)]]));
    const r2 = await call({ ':path': '/h2/two' });
    assert.equal(r2.status, 403, 'the new table applies to the next stream of the same session');
  } finally {
    h.proxy.setPolicies(
      new Map<string, Evaluator>([
        [`127.0.0.1:${A.port}`, evaluator],
        [`:${H2.port}`, evaluator],
      ]),
    );
    s.close();
  }
});

const passthrough = (b: Buffer) => b;
const echoService = {
  unary: {
    path: '/sockmesh.test.Echo/Unary',
    requestStream: false,
    responseStream: false,
    requestSerialize: passthrough,
    requestDeserialize: passthrough,
    responseSerialize: passthrough,
    responseDeserialize: passthrough,
  },
  serverStream: {
    path: '/sockmesh.test.Echo/ServerStream',
    requestStream: false,
    responseStream: true,
    requestSerialize: passthrough,
    requestDeserialize: passthrough,
    responseSerialize: passthrough,
    responseDeserialize: passthrough,
  },
} as const;

interface EchoClient extends grpc.Client {
  unary(req: Buffer, md: grpc.Metadata, cb: (err: grpc.ServiceError | null, res?: Buffer) => void): grpc.ClientUnaryCall;
  serverStream(req: Buffer, md?: grpc.Metadata): grpc.ClientReadableStream<Buffer>;
}

test('gRPC through the proxy, as seen by @grpc/grpc-js: allowed with metadata and trailers, denied with PERMISSION_DENIED, unreachable with UNAVAILABLE', async () => {
  const server = new grpc.Server();
  server.addService(echoService as unknown as grpc.ServiceDefinition, {
    unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      const initial = new grpc.Metadata();
      initial.set('x-initial', 'hello');
      call.sendMetadata(initial);
      const trailer = new grpc.Metadata();
      trailer.set('x-trailer', 'bye');
      trailer.set('x-saw-principal-header', String(call.metadata.get('x-deny').length));
      cb(null, Buffer.concat([Buffer.from('echo:'), call.request]), trailer);
    },
    serverStream: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      for (let i = 0; i < 5; i++) call.write(Buffer.from(`msg-${i}`));
      call.end();
    },
  });
  const grpcPort = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
  );
  const gEval = new StandIn();
  const dead = await closedPort();
  h.proxy.setPolicies(
    new Map<string, Evaluator>([
      [`127.0.0.1:${A.port}`, evaluator],
      [`:${H2.port}`, evaluator],
      [`127.0.0.1:${grpcPort}`, gEval],
      [`127.0.0.1:${dead}`, gEval],
    ]),
  );
  const Client = grpc.makeGenericClientConstructor(echoService as unknown as grpc.ServiceDefinition, 'Echo');
  const client = new Client(`127.0.0.1:${h.port}`, grpc.credentials.createInsecure()) as unknown as EchoClient;
  const unary = (md: grpc.Metadata) =>
    new Promise<{ err: grpc.ServiceError | null; res?: Buffer; initial?: grpc.Metadata; status?: grpc.StatusObject }>((resolve) => {
      let initial: grpc.Metadata | undefined;
      let status: grpc.StatusObject | undefined;
      let result: { err: grpc.ServiceError | null; res?: Buffer } | undefined;
      const done = () => result && status && resolve({ ...result, initial, status });
      const call = client.unary(Buffer.from('ping'), md, (err, res) => {
        result = { err, res };
        done();
      });
      call.on('metadata', (m) => (initial = m));
      call.on('status', (s) => {
        status = s;
        done();
      });
    });
  try {
    h.state.origin = origin(grpcPort);
    const ok = await unary(new grpc.Metadata());
    assert.equal(ok.err, null);
    assert.equal(ok.res?.toString(), 'echo:ping');
    assert.deepEqual(ok.initial?.get('x-initial'), ['hello']);
    assert.equal(ok.status?.code, grpc.status.OK);
    assert.deepEqual(ok.status?.metadata.get('x-trailer'), ['bye']);
    assert.equal(gEval.seen.at(-1)!.path, '/sockmesh.test.Echo/Unary');
    assert.equal(gEval.seen.at(-1)!.headers['content-type'], 'application/grpc');
    assert.equal(gEval.seen.at(-1)!.headers.te, 'trailers');

    const md = new grpc.Metadata();
    md.set('x-deny', 'yes');
    const denied = await unary(md);
    assert.equal(denied.err?.code, grpc.status.PERMISSION_DENIED);
    assert.equal(denied.err?.details, 'RBAC: access denied');
    const log = h.logs.filter((l) => l.path === '/sockmesh.test.Echo/Unary').at(-1)!;
    assert.equal(log.decision, 'deny');
    assert.equal(log.status, 200);
    assert.equal(log.grpcStatus, 7);

    const msgs: string[] = [];
    await new Promise<void>((resolve, reject) => {
      const st = client.serverStream(Buffer.from('go'));
      st.on('data', (m: Buffer) => msgs.push(m.toString()));
      st.on('error', reject);
      st.on('end', () => resolve());
    });
    assert.deepEqual(msgs, ['msg-0', 'msg-1', 'msg-2', 'msg-3', 'msg-4']);

    h.state.origin = origin(dead);
    // A new connection (the old one keeps its recorded origin; grpc-js shares connections between
    // clients unless told not to).
    const client2 = new Client(`127.0.0.1:${h.port}`, grpc.credentials.createInsecure(), {
      'grpc.use_local_subchannel_pool': 1,
    }) as unknown as EchoClient;
    const refused = await new Promise<grpc.ServiceError | null>((resolve) => client2.unary(Buffer.from('x'), new grpc.Metadata(), (err) => resolve(err)));
    client2.close();
    assert.equal(refused?.code, grpc.status.UNAVAILABLE);
    assert.equal(refused?.details, 'upstream connect error: ECONNREFUSED');
  } finally {
    client.close();
    server.forceShutdown();
    h.proxy.setPolicies(
      new Map<string, Evaluator>([
        [`127.0.0.1:${A.port}`, evaluator],
        [`:${H2.port}`, evaluator],
      ]),
    );
  }
});

// ---- streaming and memory ----------------------------------------------------------------------

// The proxy runs in a child process so that its memory is its own. It samples after a forced GC:
// what is measured is what the proxy holds, not garbage V8 has not collected yet (without the GC,
// RSS rises by some 30-40 MiB here just from Buffers awaiting collection, whatever the proxy does).
const CHILD_PROXY = `
const [index, upPort] = process.argv.slice(1);
const { createL7Proxy } = require(index);
const allow = { evaluate: () => ({ allow: true, dryRun: [], unsupported: [], logged: [] }) };
const proxy = createL7Proxy({
  lookupOrigin: () => ({ destinationIp: '127.0.0.1', destinationPort: Number(upPort) }),
  policies: new Map([['127.0.0.1:' + upPort, allow]]),
});
let peak = { rss: 0, arrayBuffers: 0 };
const sample = () => {
  global.gc();
  const m = process.memoryUsage();
  peak = { rss: Math.max(peak.rss, m.rss), arrayBuffers: Math.max(peak.arrayBuffers, m.arrayBuffers) };
};
setInterval(sample, 30).unref();
process.on('message', (m) => {
  if (m === 'reset') { peak = { rss: 0, arrayBuffers: 0 }; sample(); process.send(peak); }
  if (m === 'peak') { sample(); process.send(peak); }
  if (m === 'exit') proxy.close().then(() => process.exit(0));
});
proxy.listen().then(({ port }) => process.send({ port }));
`;

test('a 50 MiB body streams both ways at once through a separate proxy process without its memory growing by anything near that', async () => {
  const child = spawn(process.execPath, ['--expose-gc', '-e', CHILD_PROXY, path.join(__dirname, '..', 'proxy', 'server', 'index.js'), String(A.port)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: process.env,
  });
  type Msg = { port?: number; rss?: number; arrayBuffers?: number };
  const next = () => new Promise<Msg>((resolve) => child.once('message', (m) => resolve(m as Msg)));
  try {
    const { port } = await next();
    // Both directions stall once: the upstream starts reading 300 ms late, the client stops reading
    // the response for 300 ms. A proxy without backpressure would fill up meanwhile.
    const stream = async (size: number) => {
      const sent = crypto.createHash('sha256');
      const got = crypto.createHash('sha256');
      let received = 0;
      const chunk = 64 * 1024;
      function* gen() {
        for (let off = 0, i = 0; off < size; off += chunk, i++) {
          const b = Buffer.alloc(Math.min(chunk, size - off), i % 251);
          sent.update(b);
          yield b;
        }
      }
      await new Promise<void>((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/echo-late', agent: false, headers: { 'content-type': 'application/octet-stream' } }, (res) => {
          assert.equal(res.statusCode, 200);
          let paused = false;
          res.on('data', (d: Buffer) => {
            received += d.length;
            got.update(d);
            if (!paused && received > size / 4) {
              paused = true;
              res.pause();
              setTimeout(() => res.resume(), 300);
            }
          });
          res.on('end', () => resolve());
          res.on('error', reject);
        });
        req.on('error', reject);
        Readable.from(gen()).pipe(req);
      });
      assert.equal(received, size);
      assert.equal(got.digest('hex'), sent.digest('hex'));
    };
    await stream(4 * 1024 * 1024); // warm up: code loaded, pools and buffers allocated
    child.send('reset');
    const base = await next();
    await stream(50 * 1024 * 1024);
    child.send('peak');
    const peak = await next();
    const MiB = 1024 * 1024;
    const growth = peak.rss! - base.rss!;
    process.stdout.write(
      `# proxy RSS ${(base.rss! / MiB).toFixed(1)} → ${(peak.rss! / MiB).toFixed(1)} MiB, live buffers at most ${(peak.arrayBuffers! / MiB).toFixed(1)} MiB, streaming 50 MiB each way\n`,
    );
    // RSS also moves with the allocator's and V8's own bookkeeping (4-20 MiB here): a loose bound.
    // The buffers alive at once are the precise measure (about 4 MiB here: socket and stream buffers).
    assert.ok(growth < 32 * MiB, `proxy RSS grew by ${(growth / MiB).toFixed(1)} MiB`);
    assert.ok(peak.arrayBuffers! < 16 * MiB, `proxy held ${(peak.arrayBuffers! / MiB).toFixed(1)} MiB of buffers at once`);
  } finally {
    child.send('exit');
    await new Promise((r) => child.once('exit', r));
  }
});

// ---- observability -------------------------------------------------------------------------------

test('metrics and the access log', async () => {
  h.state.origin = origin(A.port);
  const r = await request(h.port, { method: 'POST', path: '/logged', body: 'abc', headers: { host: 'shop.example:8080' } });
  assert.equal(r.status, 200);
  await request(h.port, { path: '/deny/metrics' });
  const text = await h.proxy.metrics();
  assert.match(text, /sockmesh_proxy_requests_total\{decision="allow",policy="allow-rest",code="200"\} \d+/);
  assert.match(text, /sockmesh_proxy_requests_total\{decision="deny",policy="deny-path",code="403"\} \d+/);
  assert.match(text, /sockmesh_proxy_requests_total\{decision="no_policy",policy="",code="503"\} \d+/);
  assert.match(text, /sockmesh_proxy_requests_total\{decision="unknown_origin",policy="",code="403"\} \d+/);
  assert.match(text, /sockmesh_proxy_request_duration_seconds_count \d+/);
  assert.match(text, /sockmesh_proxy_upstream_errors_total\{reason="connect_refused"\} \d+/);
  assert.match(text, /sockmesh_proxy_connections_active \d+/);
  assert.match(text, /sockmesh_proxy_dry_run_matches_total\{policy="shadow-deny"\} \d+/);

  const line = h.logs.find((l) => l.path === '/logged')!;
  assert.equal(line.protocol, 'HTTP/1.1');
  assert.equal(line.client, `127.0.0.1:${r.localPort}`);
  assert.equal(line.principal, 'spiffe://cluster.local/ns/shop/sa/frontend');
  assert.equal(line.method, 'POST');
  assert.equal(line.authority, 'shop.example:8080');
  assert.equal(line.destination, `127.0.0.1:${A.port}`);
  assert.equal(line.decision, 'allow');
  assert.equal(line.policy, 'allow-rest');
  assert.equal(line.status, 200);
  assert.equal(line.bytesIn, 3);
  assert.equal(line.bytesOut, Buffer.byteLength(r.body));
  assert.equal(typeof line.upstreamMs, 'number');
  assert.equal(typeof line.durationMs, 'number');
  assert.ok(!Number.isNaN(Date.parse(String(line.time))));
  const denied = h.logs.find((l) => l.path === '/deny/metrics')!;
  assert.deepEqual(denied.dryRun, [{ filter: 'stand-in', policy: 'shadow-deny', action: 'DENY', wouldAllow: false }]);
});

async function waitFor<T>(f: () => T | undefined, ms = 5000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
