// The proxy's front door against hostile or broken clients: hand-written bytes on raw sockets, the
// exact status line asserted, and the connection closed afterwards. Which layer answers each case
// (llhttp inside Node, or the proxy) is listed in proxy/server/README.md.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import * as http from 'node:http';
import * as http2 from 'node:http2';
import * as net from 'node:net';
import { createL7Proxy, type L7Proxy, type L7ProxyOptions } from '../proxy/server';
import type { ConnectionOrigin, Decision, Evaluator, RequestAttributes } from '../proxy/types';

const allowAll: Evaluator = {
  evaluate: (r: RequestAttributes): Decision => ({
    allow: !r.path.startsWith('/deny'),
    policy: 'p',
    reason: 'stand-in',
    dryRun: [],
    unsupported: [],
    logged: [],
  }),
};

let upstreamPort = 0;
let upstream: http.Server;
const seen: string[] = [];
let releaseGate: () => void = () => {};
let gateReached: Promise<void>;
let gateReachedResolve: () => void = () => {};

function resetGate(): void {
  gateReached = new Promise((r) => (gateReachedResolve = r));
}

before(async () => {
  resetGate();
  upstream = http.createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    if (req.url === '/gate') {
      gateReachedResolve();
      releaseGate = () => res.end('gate');
      return;
    }
    req.resume();
    req.on('end', () => res.end(`ok ${req.url}`));
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  upstreamPort = (upstream.address() as net.AddressInfo).port;
});

after(async () => {
  upstream.closeAllConnections();
  await new Promise((r) => upstream.close(r));
});

async function withProxy(opts: Partial<L7ProxyOptions>, fn: (port: number, logs: Record<string, unknown>[]) => Promise<void>): Promise<void> {
  const logs: Record<string, unknown>[] = [];
  const origin: ConnectionOrigin = { destinationIp: '127.0.0.1', destinationPort: upstreamPort };
  const proxy: L7Proxy = createL7Proxy({
    lookupOrigin: () => origin,
    policies: new Map([[`:${upstreamPort}`, allowAll]]),
    accessLog: (l) => logs.push(JSON.parse(l)),
    timeouts: { headersMs: 300, keepAliveMs: 1000, requestBodyIdleMs: 300, shutdownGraceMs: 200 },
    ...opts,
  });
  const { port } = await proxy.listen();
  try {
    await fn(port, logs);
  } finally {
    await proxy.close();
  }
}

function raw(port: number) {
  const socket = net.connect(port, '127.0.0.1');
  let text = '';
  let closed = false;
  socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
  socket.on('close', () => (closed = true));
  socket.on('error', () => {});
  const wait = async (pred: () => boolean, what: string, ms = 10_000) => {
    const deadline = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; got ${JSON.stringify(text.slice(0, 300))}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  return {
    socket,
    get text() {
      return text;
    },
    get closed() {
      return closed;
    },
    wait,
    waitClose: (ms?: number) => wait(() => closed, 'close', ms),
  };
}

const statusLine = (t: string) => t.slice(0, t.indexOf('\r\n'));
const statusLines = (t: string) => [...t.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));

// [what, bytes, status line] — each on its own connection, which must be closed afterwards.
const CASES: [string, string, string][] = [
  ['Content-Length and Transfer-Encoding together', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 'HTTP/1.1 400 Bad Request'],
  ['two different Content-Length values', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!', 'HTTP/1.1 400 Bad Request'],
  ['a Content-Length list', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!', 'HTTP/1.1 400 Bad Request'],
  ['obs-fold (continuation line starting with SP)', 'GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n', 'HTTP/1.1 400 Bad Request'],
  ['obs-fold (continuation line starting with HTAB)', 'GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n\tc\r\n\r\n', 'HTTP/1.1 400 Bad Request'],
  ['chunk size that is not hex', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n', 'HTTP/1.1 400 Bad Request'],
  ['chunk size that overflows 64 bits', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n', 'HTTP/1.1 400 Bad Request'],
  ['chunk data not followed by CRLF', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX0\r\n\r\n', 'HTTP/1.1 400 Bad Request'],
  ['chunk size line ended by a bare LF', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n', 'HTTP/1.1 400 Bad Request'],
  ['a transfer coding other than chunked (last)', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n', 'HTTP/1.1 400 Bad Request'],
  ['a transfer coding besides chunked', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n', 'HTTP/1.1 501 Not Implemented'],
  ['two Host headers', 'GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', 'HTTP/1.1 400 Bad Request'],
  ['HTTP/1.1 without Host', 'GET / HTTP/1.1\r\n\r\n', 'HTTP/1.1 400 Bad Request'],
  ['an invalid Host', 'GET / HTTP/1.1\r\nHost: a b/c\r\n\r\n', 'HTTP/1.1 400 Bad Request'],
  ['whitespace before the colon', 'GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n', 'HTTP/1.1 400 Bad Request'],
  ['a bare CR in a header value', 'GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n', 'HTTP/1.1 400 Bad Request'],
  ['NUL in a header value', 'GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n', 'HTTP/1.1 400 Bad Request'],
  ['bare LF line endings', 'GET / HTTP/1.1\nHost: a\n\n', 'HTTP/1.1 400 Bad Request'],
  ['a fragment in the target', 'GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n', 'HTTP/1.1 400 Bad Request'],
  ['absolute-form with another scheme', 'GET https://a/ HTTP/1.1\r\nHost: a\r\n\r\n', 'HTTP/1.1 400 Bad Request'],
  ['absolute-form with userinfo', 'GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n', 'HTTP/1.1 400 Bad Request'],
  ['a malformed percent-encoding', 'GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n', 'HTTP/1.1 400 Bad Request'],
  ['asterisk-form with GET', 'GET * HTTP/1.1\r\nHost: a\r\n\r\n', 'HTTP/1.1 400 Bad Request'],
  ['an unknown method', 'FROB / HTTP/1.1\r\nHost: a\r\n\r\n', 'HTTP/1.1 400 Bad Request'],
  ['an HTTP/1.1 request looking like the h2 preface', 'PRI * HTTP/1.1\r\nHost: a\r\n\r\n', 'HTTP/1.1 400 Bad Request'],
  ['CONNECT', 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n', 'HTTP/1.1 405 Method Not Allowed'],
  ['an unknown Expect', 'GET / HTTP/1.1\r\nHost: a\r\nExpect: something\r\n\r\n', 'HTTP/1.1 417 Expectation Failed'],
  [`101 header fields (limit 100)`, 'GET / HTTP/1.1\r\nHost: a\r\n' + Array.from({ length: 100 }, (_, i) => `X-${i}: v\r\n`).join('') + '\r\n', 'HTTP/1.1 431 Request Header Fields Too Large'],
  ['17 KiB of header (limit 16 KiB)', 'GET / HTTP/1.1\r\nHost: a\r\nX-Big: ' + 'a'.repeat(17 * 1024) + '\r\n\r\n', 'HTTP/1.1 431 Request Header Fields Too Large'],
];

test('malformed, ambiguous and oversized requests get the right status and a closed connection, and never reach the upstream', async () => {
  await withProxy({}, async (port, logs) => {
    for (const [what, bytes, expected] of CASES) {
      const before = seen.length;
      const c = raw(port);
      c.socket.write(bytes);
      await c.waitClose().catch((e) => assert.fail(`${what}: ${e.message}`));
      assert.equal(statusLine(c.text), expected, what);
      assert.equal(seen.length, before, `${what}: reached the upstream`);
    }
    // Every refusal is logged like any request.
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(logs.filter((l) => l.decision === 'rejected').length, CASES.length);
    assert.ok(logs.some((l) => l.error === 'HPE_INVALID_CHUNK_SIZE' && l.status === 400));
  });
});

test('the header limits are configurable; exactly at the limit is accepted', async () => {
  await withProxy({ limits: { maxHeaders: 10, maxHeaderBytes: 4096 } }, async (port) => {
    const send = async (fields: number, extra = '') => {
      const c = raw(port);
      c.socket.write('GET /limit HTTP/1.1\r\nHost: a\r\nConnection: close\r\n' + Array.from({ length: fields - 2 }, (_, i) => `X-${i}: v\r\n`).join('') + extra + '\r\n');
      await c.waitClose();
      return statusLine(c.text);
    };
    assert.equal(await send(10), 'HTTP/1.1 200 OK');
    assert.equal(await send(11), 'HTTP/1.1 431 Request Header Fields Too Large');
    assert.equal(await send(3, `X-Big: ${'b'.repeat(4200)}\r\n`), 'HTTP/1.1 431 Request Header Fields Too Large');
  });
});

test('slowloris: a request head trickled in is cut with 408 after headersMs', async () => {
  await withProxy({}, async (port) => {
    const c = raw(port);
    c.socket.write('GET / HTTP/1.1\r\n');
    const trickle = setInterval(() => c.socket.writable && c.socket.write('X-Slow: 1\r\n'), 50);
    try {
      await c.waitClose();
    } finally {
      clearInterval(trickle);
    }
    assert.equal(statusLine(c.text), 'HTTP/1.1 408 Request Timeout');
  });
});

test('a connection that never completes its first bytes (silent, or a partial h2 preface) is closed', async () => {
  await withProxy({}, async (port) => {
    const silent = raw(port);
    const partial = raw(port);
    partial.socket.write('PRI * HTTP/2.0\r\n');
    await silent.waitClose();
    await partial.waitClose();
    assert.equal(silent.text, '');
    assert.equal(partial.text, '');
  });
});

test('keep-alive: a connection idle longer than headersMs is still usable; idle past keepAliveMs it is closed', async () => {
  await withProxy({}, async (port) => {
    const c = raw(port);
    c.socket.write('GET /ka1 HTTP/1.1\r\nHost: a\r\n\r\n');
    await c.wait(() => c.text.endsWith('ok /ka1'), 'first response');
    await new Promise((r) => setTimeout(r, 500)); // > headersMs (300), < keepAliveMs (1000)
    c.socket.write('GET /ka2 HTTP/1.1\r\nHost: a\r\n\r\n');
    await c.wait(() => c.text.endsWith('ok /ka2'), 'second response');
    assert.deepEqual(statusLines(c.text), [200, 200]);
    const length = c.text.length;
    await c.waitClose();
    assert.equal(c.text.length, length, 'closed without another word');
  });
});

test('a request body that stops arriving is cut with 408 after requestBodyIdleMs', async () => {
  await withProxy({}, async (port, logs) => {
    const c = raw(port);
    c.socket.write('POST /slow-body HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc');
    await c.waitClose();
    assert.equal(statusLine(c.text), 'HTTP/1.1 408 Request Timeout');
    assert.ok(c.text.endsWith('request body timeout'));
    const rec = logs.find((l) => l.path === '/slow-body')!;
    assert.equal(rec.status, 408);
    assert.equal(rec.bytesIn, 3);
  });
});

test('pipelined requests are served one at a time, in order, and not read ahead without bound', async () => {
  await withProxy({}, async (port) => {
    resetGate();
    const before = seen.length;
    const c = raw(port);
    c.socket.write('GET /gate HTTP/1.1\r\nHost: a\r\n\r\nGET /p1 HTTP/1.1\r\nHost: a\r\n\r\nGET /p2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
    await gateReached;
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(seen.slice(before), ['GET /gate'], 'the next request waits for the response in progress');
    releaseGate();
    await c.waitClose();
    assert.deepEqual(statusLines(c.text), [200, 200, 200]);
    assert.ok(c.text.indexOf('gate') < c.text.indexOf('ok /p1') && c.text.indexOf('ok /p1') < c.text.indexOf('ok /p2'));
  });
  await withProxy({ limits: { maxPipelinedRequests: 2 } }, async (port) => {
    resetGate();
    const c = raw(port);
    c.socket.write('GET /gate HTTP/1.1\r\nHost: a\r\n\r\n' + [1, 2, 3, 4, 5].map((i) => `GET /q${i} HTTP/1.1\r\nHost: a\r\n\r\n`).join(''));
    await gateReached;
    releaseGate();
    await c.waitClose();
    // /gate, /q1, /q2 served; /q3 is past the limit: 503 and the connection closes after it.
    assert.deepEqual(statusLines(c.text), [200, 200, 200, 503]);
    assert.ok(c.text.endsWith('too many pipelined requests'));
  });
});

test('HTTP/2: CONNECT, lower-case methods, Host differing from :authority, too many or too large header fields are refused per stream', async () => {
  await withProxy({ limits: { maxHeaders: 10, maxHeaderBytes: 4096 } }, async (port) => {
    const s = http2.connect(`http://127.0.0.1:${port}`);
    s.on('error', () => {});
    const status = (headers: http2.OutgoingHttpHeaders) =>
      new Promise<number>((resolve, reject) => {
        const r = s.request(headers);
        r.on('response', (h) => resolve(Number(h[':status'])));
        r.on('error', reject);
        r.end();
      });
    try {
      assert.equal(await status({ ':method': 'CONNECT', ':authority': 'example.com:443' }), 405);
      assert.equal(await status({ ':method': 'get', ':path': '/' }), 400);
      const many: http2.OutgoingHttpHeaders = { ':path': '/' };
      for (let i = 0; i < 11; i++) many[`x-${i}`] = 'v';
      assert.equal(await status(many), 431);
      assert.equal(await status({ ':path': '/', 'x-big': 'b'.repeat(5000) }), 431);
      assert.equal(await status({ ':path': '/', ':authority': 'a', host: 'b' }), 400);
      assert.equal(await status({ ':path': '/deny/x' }), 403, 'the session survives (and the policy still applies)');
    } finally {
      s.close();
    }
  });
});

test('HTTP/2: a body longer or shorter than its content-length resets that stream only; the proxy and the session live on', async () => {
  await withProxy({}, async (port) => {
    const s = http2.connect(`http://127.0.0.1:${port}`);
    s.on('error', () => {});
    const send = (headers: http2.OutgoingHttpHeaders, body: string) =>
      new Promise<string>((resolve) => {
        const r = s.request({ ':method': 'POST', ...headers });
        r.on('response', (h) => resolve(String(h[':status'])));
        r.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
        r.on('close', () => resolve(`closed ${r.rstCode}`));
        r.end(body);
      });
    try {
      for (const [cl, body] of [['5', 'hello world'], ['50', 'short'], ['0', 'x']] as const) {
        const got = await send({ ':path': '/body', 'content-length': cl }, body);
        assert.notEqual(got, '200', `content-length ${cl}, ${body.length} bytes: ${got}`);
      }
      // Another request on the same session, and on a new connection, is still judged (the
      // policy's 403: this upstream speaks HTTP/1 only, so an allowed h2 request would get 502).
      assert.equal(await send({ ':path': '/deny/after' }, 'ok'), '403');
      const s2 = http2.connect(`http://127.0.0.1:${port}`);
      s2.on('error', () => {});
      const r = s2.request({ ':path': '/deny/fresh' });
      const status = await new Promise((res) => r.on('response', (h) => res(h[':status'])));
      r.resume();
      r.end();
      s2.close();
      assert.equal(status, 403);
    } finally {
      s.close();
    }
  });
});
