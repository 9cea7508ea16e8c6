// The benchmarks' native traffic tool (bench/native/pingpong.c) and its histogram twin
// (bench/hdr.ts), on 127.0.0.1 only: no BPF, no namespaces. Every server mode against the tool's
// own clients and against Node's http client/server, the framings real peers use (pipelining,
// split reads, chunked responses, interim responses, Connection: close), the connect and bulk
// modes, and the histogram's accuracy and merge rules.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, execFile, type ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as http from 'node:http';
import * as net from 'node:net';
import { ensureNativePingpong } from '../bench/common';
import { Hdr, bucketBounds, bucketIndex } from '../bench/hdr';

let BIN = '';
/** Per-test limit: a server that stops answering must fail the test, not hang the run. */
const T = { timeout: 30_000 };

interface NativeServer {
  port: number;
  child: ChildProcess;
  /** SIGUSR1 -> the server's next {"event":"stats"} line. */
  stats(): Promise<{ accepted: number; open: number; requests: number; transfers: number; bytes_in: number }>;
  stop(): void;
}

const servers: NativeServer[] = [];

function startServer(mode: 'echo' | 'sink' | 'http'): Promise<NativeServer> {
  const child = spawn(BIN, ['--serve', '--port', '0', '--host', '127.0.0.1', '--mode', mode], { stdio: ['ignore', 'pipe', 'pipe'] });
  let pending = '';
  const waiters: Array<(l: any) => void> = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${mode} server did not start`)), 5000);
    child.on('exit', (code) => reject(new Error(`${mode} server exited (${code})`)));
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      pending += d;
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = JSON.parse(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
        if (line.event === 'listening') {
          clearTimeout(timer);
          const s: NativeServer = {
            port: line.port,
            child,
            stats: () =>
              new Promise((res) => {
                waiters.push(res);
                child.kill('SIGUSR1');
              }),
            stop: () => child.kill('SIGKILL'),
          };
          servers.push(s);
          resolve(s);
        } else if (line.event === 'stats') {
          waiters.shift()?.(line);
        }
      }
    });
  });
}

/** Runs the native client (asynchronously: Node servers in this process must keep serving). */
function client(args: string[]): Promise<any> {
  return new Promise((resolve, reject) => {
    execFile(BIN, [...args, '--timeout-ms', '5000'], { maxBuffer: 64 << 20, timeout: 60_000 }, (err, stdout, stderr) => {
      const lines = stdout.trim().split('\n').filter((l) => l.startsWith('{'));
      if (!lines.length) return reject(new Error(`pingpong ${args.join(' ')}: no JSON (${err?.message}) ${stderr}`));
      resolve(JSON.parse(lines[lines.length - 1]));
    });
  });
}

/** The histogram the tool printed gives back the percentiles it printed, exactly. */
function assertHistMatches(r: any): void {
  const h = Hdr.fromBuckets(r.hist.buckets, r.hist);
  assert.equal(h.count, r.samples);
  for (const [p, k] of [[50, 'p50_us'], [90, 'p90_us'], [99, 'p99_us']] as const) {
    assert.equal(h.percentile(p) / 1000, r[k], `${k}`);
  }
  assert.equal(h.min / 1000, r.min_us);
  assert.equal(h.max / 1000, r.max_us);
  assert.ok(r.min_us <= r.p50_us && r.p50_us <= r.p90_us && r.p90_us <= r.p99_us && r.p99_us <= r.max_us * 1.0005);
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

/** Raw exchange: write `chunks` (with `gapMs` between them), collect everything until the peer closes. */
function rawExchange(port: number, chunks: Array<string | Buffer>, gapMs = 0, endAfterMs?: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    sock.setNoDelay(true);
    sock.setTimeout(5000, () => sock.destroy(new Error(`raw exchange with :${port}: no close within 5 s`)));
    const got: Buffer[] = [];
    sock.on('data', (d) => got.push(d));
    sock.on('error', reject);
    sock.on('close', () => resolve(Buffer.concat(got)));
    sock.on('connect', async () => {
      for (const c of chunks) {
        sock.write(c);
        if (gapMs) await new Promise((r) => setTimeout(r, gapMs));
      }
      if (endAfterMs !== undefined) setTimeout(() => sock.end(), endAfterMs);
    });
  });
}

interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** Splits a byte stream of Content-Length-framed responses (what the native http server sends). */
function parseResponses(buf: Buffer, headOnly: boolean[] = []): RawResponse[] {
  const out: RawResponse[] = [];
  let off = 0;
  while (off < buf.length) {
    const end = buf.indexOf('\r\n\r\n', off);
    assert.ok(end >= 0, `incomplete head: ${buf.subarray(off).toString()}`);
    const [statusLine, ...lines] = buf.subarray(off, end).toString().split('\r\n');
    const headers: Record<string, string> = {};
    for (const l of lines) headers[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 1).trim();
    const len = headOnly[out.length] ? 0 : Number(headers['content-length']);
    assert.ok(Number.isInteger(len), `no Content-Length in ${statusLine}`);
    out.push({ status: Number(statusLine.split(' ')[1]), headers, body: buf.subarray(end + 4, end + 4 + len) });
    off = end + 4 + len;
  }
  return out;
}

function timeWaitCount(port: number): number {
  const r = spawnSync('ss', ['-Htan', 'state', 'time-wait', `( sport = :${port} or dport = :${port} )`], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.split('\n').filter((l) => l.trim()).length;
}

before(() => {
  // SOCKMESH_PINGPONG_BIN: test another build (e.g. a deliberately broken one) without touching
  // the shared build/bench/pingpong.
  BIN = process.env.SOCKMESH_PINGPONG_BIN || ensureNativePingpong();
});

after(() => {
  for (const s of servers) s.stop();
});

// ---- echo ping-pong ---------------------------------------------------------------------------

test('echo: one connection, every round counted, histogram percentiles equal the printed ones', T, async () => {
  const srv = await startServer('echo');
  const s0 = await srv.stats();
  const r = await client(['--target', `127.0.0.1:${srv.port}`, '--size', '100', '--rounds', '500', '--warmup', '20']);
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.equal(r.rounds, 500);
  assert.equal(r.conns, 1);
  assert.equal(r.hist.unit, 'ns');
  assertHistMatches(r);
  assert.ok(r.tps > 0 && r.elapsed_us > 0);
  assert.ok(r.cpu_user_us + r.cpu_sys_us >= 0);
  const s1 = await srv.stats();
  assert.equal(s1.accepted - s0.accepted, 1);
  assert.equal(s1.bytes_in - s0.bytes_in, 520 * 100, 'every round (warm-up included) sent exactly S bytes');
});

test('echo: --conns 4 opens 4 connections that each do R rounds', T, async () => {
  const srv = await startServer('echo');
  const s0 = await srv.stats();
  const r = await client(['--target', `127.0.0.1:${srv.port}`, '--size', '3000', '--rounds', '300', '--warmup', '10', '--conns', '4']);
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.equal(r.conns, 4);
  assert.equal(r.rounds, 4 * 300);
  assert.equal(r.rounds_per_conn, 300);
  assertHistMatches(r);
  const s1 = await srv.stats();
  assert.equal(s1.accepted - s0.accepted, 4, 'four distinct connections');
  assert.equal(s1.bytes_in - s0.bytes_in, 4 * 310 * 3000);
});

test('echo: a message larger than the socket buffers (1 MiB) round-trips', T, async () => {
  const srv = await startServer('echo');
  const r = await client(['--target', `127.0.0.1:${srv.port}`, '--size', String(1 << 20), '--rounds', '5', '--warmup', '1', '--conns', '2']);
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.equal(r.rounds, 10);
});

// ---- http server vs Node's client and raw sockets ----------------------------------------------

function nodeRequest(
  agent: http.Agent,
  port: number,
  opts: { method?: string; path?: string; body?: Buffer; headers?: Record<string, string> },
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, agent, method: opts.method ?? 'GET', path: opts.path ?? '/', headers: opts.headers }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(parts) }));
      res.on('error', reject);
    });
    req.setTimeout(5000, () => req.destroy(new Error('request timed out')));
    req.on('error', reject);
    req.end(opts.body);
  });
}

test('http server: Node keep-alive client, body echo up to 1 MiB, GET/HEAD, one connection', T, async () => {
  const srv = await startServer('http');
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const s0 = await srv.stats();
    const get = await nodeRequest(agent, srv.port, { path: '/any/path?q=1' });
    assert.equal(get.status, 200);
    assert.equal(get.body.toString(), 'ok\n');
    assert.equal(get.headers['content-length'], '3');
    for (const size of [1, 5000, 1 << 20]) {
      const body = crypto.randomBytes(size);
      const r = await nodeRequest(agent, srv.port, { method: 'POST', path: '/echo', body, headers: { 'content-length': String(size) } });
      assert.equal(r.status, 200);
      assert.ok(r.body.equals(body), `${size} B body echoed byte for byte`);
    }
    const head = await nodeRequest(agent, srv.port, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.body.length, 0);
    const put = await nodeRequest(agent, srv.port, { method: 'PUT', body: Buffer.from('xyz'), headers: { 'content-length': '3' } });
    assert.equal(put.body.toString(), 'xyz');
    const s1 = await srv.stats();
    assert.equal(s1.requests - s0.requests, 6);
    assert.equal(s1.accepted - s0.accepted, 1, 'keep-alive: every request on one connection');
  } finally {
    agent.destroy();
  }
});

test('http server: pipelined requests in one write, answered in order; Connection: close closes', T, async () => {
  const srv = await startServer('http');
  const reqs =
    'GET /a HTTP/1.1\r\nHost: x\r\n\r\n' +
    'POST /b HTTP/1.1\r\nhost: x\r\ncontent-LENGTH: 5\r\n\r\nhello' +
    'HEAD /c HTTP/1.1\r\nHost: x\r\n\r\n' +
    'POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n' +
    'GET /e HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' +
    'GET /never HTTP/1.1\r\nHost: x\r\n\r\n'; // after "close": must not be answered
  const buf = await rawExchange(srv.port, [reqs]);
  const rs = parseResponses(buf, [false, false, true, false, false]);
  assert.deepEqual(
    rs.map((r) => [r.status, r.body.toString()]),
    [
      [200, 'ok\n'],
      [200, 'hello'],
      [200, ''],
      [200, 'ok\n'],
      [200, 'ok\n'],
    ],
  );
  assert.equal(rs[2].headers['content-length'], '3', 'HEAD: the GET headers, no body');
  assert.equal(rs[4].headers['connection'], 'close');
});

test('http server: a request split across many reads (3-byte writes), LF-only line ends', T, async () => {
  const srv = await startServer('http');
  const req = 'POST /split HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world';
  const chunks: string[] = [];
  for (let i = 0; i < req.length; i += 3) chunks.push(req.slice(i, i + 3));
  chunks.push('GET /lf HTTP/1.1\nHost: x\nConnection: close\n\n');
  const rs = parseResponses(await rawExchange(srv.port, chunks, 2));
  assert.deepEqual(
    rs.map((r) => r.body.toString()),
    ['hello world', 'ok\n'],
  );
});

test('http server: chunked request -> 411, oversized head -> 431, garbage -> 400, HTTP/2.0 -> 505, all closed', T, async () => {
  const srv = await startServer('http');
  // Node's client sends Transfer-Encoding: chunked when no length is given.
  const agent = new http.Agent({ keepAlive: false });
  const chunked = await new Promise<{ status: number; conn: string | undefined }>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: srv.port, method: 'POST', agent }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode!, conn: res.headers.connection }));
    });
    req.on('error', reject);
    req.write('part one');
    req.end('part two');
  });
  assert.deepEqual(chunked, { status: 411, conn: 'close' });

  const cases: Array<[string, number]> = [
    [`GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 431],
    [`GET / HTTP/1.1\r\nX-Big: ${'a'.repeat(20_000)}`, 431], // never-ending head
    ['this is not http\r\n\r\n', 400],
    ['GET / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd', 400],
    ['GET / HTTP/1.1\r\nBad Name: x\r\n\r\n', 400],
    ['GET / HTTP/2.0\r\n\r\n', 505],
    ['POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n', 411],
  ];
  for (const [raw, code] of cases) {
    const rs = parseResponses(await rawExchange(srv.port, [raw]));
    assert.equal(rs.length, 1, raw.slice(0, 40));
    assert.equal(rs[0].status, code, raw.slice(0, 40));
    assert.equal(rs[0].headers['connection'], 'close');
  }
  // The server may see our FIN a moment after we saw its: poll briefly.
  let st = await srv.stats();
  for (let i = 0; i < 50 && st.open !== 0; i++) {
    await new Promise((r) => setTimeout(r, 20));
    st = await srv.stats();
  }
  assert.equal(st.open, 0, 'rejected connections are closed');
});

test('http server: Expect: 100-continue gets an interim 100 before the body is sent', T, async () => {
  const srv = await startServer('http');
  const got = await new Promise<{ sawContinue: boolean; body: string }>((resolve, reject) => {
    let sawContinue = false;
    const req = http.request(
      { host: '127.0.0.1', port: srv.port, method: 'POST', headers: { expect: '100-continue', 'content-length': '4' } },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d) => parts.push(d));
        res.on('end', () => resolve({ sawContinue, body: Buffer.concat(parts).toString() }));
      },
    );
    req.on('continue', () => {
      sawContinue = true;
      req.end('body');
    });
    req.on('error', reject);
  });
  assert.deepEqual(got, { sawContinue: true, body: 'body' });
});

test('http: native --http client against the native http server (GET and POST, --conns 3)', T, async () => {
  const srv = await startServer('http');
  const s0 = await srv.stats();
  const get = await client(['--target', `127.0.0.1:${srv.port}`, '--http', '--size', '0', '--rounds', '200', '--warmup', '0']);
  assert.equal(get.ok, true, JSON.stringify(get));
  assert.equal(get.mode, 'http');
  assert.equal(get.resp_body_bytes, 200 * 3);
  assertHistMatches(get);
  const post = await client(['--target', `127.0.0.1:${srv.port}`, '--http', '--size', '70000', '--rounds', '50', '--warmup', '5', '--conns', '3']);
  assert.equal(post.ok, true, JSON.stringify(post));
  assert.equal(post.rounds, 150);
  assert.equal(post.resp_body_bytes, 150 * 70000);
  assert.equal(post.reconnects, 0);
  const s1 = await srv.stats();
  assert.equal(s1.requests - s0.requests, 200 + 3 * 55);
  assert.equal(s1.accepted - s0.accepted, 1 + 3);
});

// ---- native --http client vs foreign servers ---------------------------------------------------

test('http client: Node server answering chunked with extra headers; path and Host header sent', T, async () => {
  const seen: Array<{ method: string; url: string; host: string | undefined; len: number }> = [];
  const server = http.createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d) => parts.push(d));
    req.on('end', () => {
      const body = Buffer.concat(parts);
      seen.push({ method: req.method!, url: req.url!, host: req.headers.host, len: body.length });
      res.setHeader('X-Extra-Header', 'yes');
      res.setHeader('Server', 'node-test');
      // No Content-Length: Node frames the body with Transfer-Encoding: chunked, here in 3 chunks.
      res.write(body.subarray(0, 10));
      res.write(body.subarray(10, 500));
      res.end(body.subarray(500));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  try {
    const r = await client([
      '--target', `127.0.0.1:${port}`, '--http', '--size', '2000', '--rounds', '100', '--warmup', '2', '--conns', '2',
      '--path', '/svc/echo', '--host-header', 'echo.bench.svc',
    ]);
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.equal(r.rounds, 200);
    assert.equal(r.resp_body_bytes, 200 * 2000);
    assert.equal(seen.length, 204);
    assert.ok(seen.every((s) => s.method === 'POST' && s.url === '/svc/echo' && s.host === 'echo.bench.svc' && s.len === 2000));
    const g = await client(['--target', `127.0.0.1:${port}`, '--http', '--size', '0', '--rounds', '10', '--warmup', '0']);
    assert.equal(g.ok, true, JSON.stringify(g));
    assert.equal(seen[seen.length - 1].method, 'GET');
  } finally {
    server.closeAllConnections();
    server.close();
  }
});

test('http client: raw server with odd but valid framings (lowercase names, chunk extensions, trailers, 100, close)', T, async () => {
  // Answers request n with framing n % 5; 'close' makes the client reconnect.
  let n = 0;
  let conns = 0;
  const server = net.createServer((sock) => {
    conns++;
    let buf = '';
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const len = Number(/content-length:\s*(\d+)/i.exec(buf.slice(0, end))?.[1] ?? 0);
        if (buf.length < end + 4 + len) return;
        const body = buf.slice(end + 4, end + 4 + len);
        buf = buf.slice(end + 4 + len);
        const kind = n++ % 5;
        const payload = body || 'ok\n';
        if (kind === 0) sock.write(`HTTP/1.1 200 OK\r\ncontent-length: ${payload.length}\r\nx-A: b\r\n\r\n${payload}`);
        else if (kind === 1)
          sock.write(
            `HTTP/1.1 201 Created\r\nTRANSFER-ENCODING: chunked\r\n\r\n` +
              `${payload.length.toString(16).toUpperCase()};ext=1\r\n${payload}\r\n0\r\nX-Trailer: t\r\n\r\n`,
          );
        else if (kind === 2) sock.write(`HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: ${payload.length}\r\n\r\n${payload}`);
        else if (kind === 3) {
          // Head and body trickle in separate segments.
          sock.write(`HTTP/1.1 200 OK\r\nContent-Le`);
          setTimeout(() => sock.write(`ngth: ${payload.length}\r\n\r\n${payload.slice(0, 1)}`), 2);
          setTimeout(() => sock.write(payload.slice(1)), 4);
        } else sock.end(`HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: ${payload.length}\r\n\r\n${payload}`);
      }
    });
    sock.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  try {
    const r = await client(['--target', `127.0.0.1:${port}`, '--http', '--size', '300', '--rounds', '50', '--warmup', '0']);
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.equal(r.resp_body_bytes, 50 * 300);
    assert.equal(r.reconnects, 10);
    assert.equal(conns, 11);
    // Epoll path: the same server with 3 connections.
    n = 0;
    const m = await client(['--target', `127.0.0.1:${port}`, '--http', '--size', '0', '--rounds', '20', '--warmup', '0', '--conns', '3']);
    assert.equal(m.ok, true, JSON.stringify(m));
    assert.equal(m.resp_body_bytes, 60 * 3);
    assert.equal(m.reconnects, 12);
  } finally {
    server.close();
  }
});

test('http client: a non-2xx status and a malformed response are errors, not samples', T, async () => {
  const server = http.createServer((req, res) => {
    if (req.url === '/deny') {
      res.statusCode = 403;
      res.end('RBAC: access denied');
    } else {
      res.socket!.end('HTTP/1.1 OK-ish\r\n\r\n');
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  try {
    const denied = await client(['--target', `127.0.0.1:${port}`, '--http', '--size', '0', '--rounds', '3', '--path', '/deny']);
    assert.equal(denied.ok, false);
    assert.equal(denied.err, 'http-status');
    assert.match(denied.message, /403/);
    const bad = await client(['--target', `127.0.0.1:${port}`, '--http', '--size', '0', '--rounds', '3']);
    assert.equal(bad.ok, false);
    assert.equal(bad.err, 'http-bad-response');
  } finally {
    server.closeAllConnections();
    server.close();
  }
});

// ---- connect latency ----------------------------------------------------------------------------

test('connect: N timed connects, closed with RST (no TIME_WAIT); a refused connect is ok:false', T, async () => {
  const srv = await startServer('echo');
  const s0 = await srv.stats();
  const r = await client(['--target', `127.0.0.1:${srv.port}`, '--connect', '300', '--warmup', '10']);
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.equal(r.mode, 'connect');
  assert.equal(r.rounds, 300);
  assertHistMatches(r);
  assert.equal(Hdr.fromBuckets(r.connect_hist.buckets).percentile(50) / 1000, r.connect_p50_us);
  assert.ok(r.connect_p50_us > 0 && r.connect_p50_us <= r.p50_us, 'connect() alone is part of connect + echo');
  const s1 = await srv.stats();
  assert.equal(s1.accepted - s0.accepted, 310);
  assert.equal(s1.bytes_in - s0.bytes_in, 310);
  assert.equal(timeWaitCount(srv.port), 0, 'no TIME_WAIT sockets left on either side');

  const dead = await freePort();
  const refused = await client(['--target', `127.0.0.1:${dead}`, '--connect', '5']);
  assert.equal(refused.ok, false);
  assert.equal(refused.err, 'connect');
  assert.equal(refused.errno, 111);
  assert.match(refused.message, /refused/i);
  assert.equal(refused.completed, 0);
  const pp = await client(['--target', `127.0.0.1:${dead}`, '--size', '64', '--rounds', '5']);
  assert.equal(pp.ok, false, 'ping-pong too');
});

// ---- bulk ---------------------------------------------------------------------------------------

test('bulk: sink server receives exactly the stated bytes per transfer, one ack each', T, async () => {
  const srv = await startServer('sink');
  const s0 = await srv.stats();
  const r = await client(['--target', `127.0.0.1:${srv.port}`, '--bulk', String(10_000_000), '--size', '65536', '--reps', '3', '--warmup', '1']);
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.equal(r.mode, 'bulk');
  assert.equal(r.bytes, 30_000_000);
  assert.equal(r.reps, 3);
  assert.ok(r.gbit_s > 0 && r.min_gbit_s <= r.median_gbit_s && r.median_gbit_s <= r.max_gbit_s);
  assert.ok(Math.abs(r.gbit_s - (r.bytes * 8) / (r.elapsed_us * 1000)) / r.gbit_s < 0.01);
  const odd = await client(['--target', `127.0.0.1:${srv.port}`, '--bulk', '1000001', '--size', '7', '--reps', '2']);
  assert.equal(odd.ok, true, JSON.stringify(odd));
  const zero = await client(['--target', `127.0.0.1:${srv.port}`, '--bulk', '0', '--size', '1', '--reps', '2']);
  assert.equal(zero.ok, true, JSON.stringify(zero));
  const s1 = await srv.stats();
  assert.equal(s1.transfers - s0.transfers, 4 + 2 + 2);
  assert.equal(s1.bytes_in - s0.bytes_in, 4 * (10_000_000 + 8) + 2 * (1_000_001 + 8) + 2 * 8);
});

// ---- Hdr ----------------------------------------------------------------------------------------

/** Deterministic PRNG (mulberry32), so a failure reproduces. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('Hdr: buckets tile the integers: every value falls in the bucket whose bounds hold it', T, () => {
  let prevEnd = 0;
  for (let i = 0; i < 2048 + 40 * 1024; i++) {
    const { lower, width } = bucketBounds(i);
    assert.equal(lower, prevEnd, `bucket ${i} starts where ${i - 1} ended`);
    if (i % 97 === 0 || i < 2100) {
      assert.equal(bucketIndex(lower), i);
      assert.equal(bucketIndex(lower + width - 1), i);
    }
    assert.ok(width === 1 || width / lower < 1 / 1024 + 1e-12);
    prevEnd = lower + width;
  }
  assert.equal(bucketIndex(2 ** 40 + 5), 2048 + (40 - 11) * 1024);
});

test('Hdr: percentiles within 0.1% of exact ones on random data; exact below 2048 ns', T, () => {
  const rand = rng(42);
  const h = new Hdr();
  const xs: number[] = [];
  for (let i = 0; i < 100_000; i++) {
    // log-uniform from 100 ns to ~10 s, integers: every bucket regime
    const v = Math.floor(100 * Math.exp(rand() * Math.log(1e8)));
    xs.push(v);
    h.record(v);
  }
  assert.equal(h.count, xs.length);
  const sorted = [...xs].sort((x, y) => x - y);
  // The rank rule of percentile() in bench/common.ts: the ceil(p/100*n)-th smallest sample.
  const exactPct = (p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
  for (const p of [0, 0.1, 1, 10, 25, 50, 75, 90, 99, 99.9, 99.99, 100]) {
    const exact = exactPct(p);
    const got = h.percentile(p);
    assert.ok(Math.abs(got - exact) / exact <= 0.001, `p${p}: hdr ${got} vs exact ${exact}`);
    if (exact < 2048) assert.equal(got, exact, `p${p} exact below 2048`);
  }
  assert.equal(h.min, sorted[0]);
  assert.equal(h.max, sorted[sorted.length - 1]);
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  assert.ok(Math.abs(h.mean() - mean) < 1e-6 * mean);
});

test('Hdr: merging two histograms equals recording every sample into one; buckets round-trip', T, () => {
  const rand = rng(7);
  const all = new Hdr();
  const a = new Hdr();
  const b = new Hdr();
  for (let i = 0; i < 50_000; i++) {
    const v = Math.floor(5000 + 200_000 * rand() ** 3);
    all.record(v);
    (i % 3 ? a : b).record(v);
  }
  const merged = new Hdr().add(a).add(b);
  assert.deepEqual(merged.toBuckets(), all.toBuckets());
  assert.equal(merged.count, all.count);
  assert.equal(merged.min, all.min);
  assert.equal(merged.max, all.max);
  for (const p of [1, 50, 90, 99, 99.9]) assert.equal(merged.percentile(p), all.percentile(p));
  // Via the native tool's wire format.
  const wire = Hdr.fromBuckets(a.toBuckets()).add(Hdr.fromBuckets(b.toBuckets()));
  assert.deepEqual(wire.toBuckets(), all.toBuckets());
  for (const p of [1, 50, 90, 99, 99.9]) assert.equal(wire.percentile(p), all.percentile(p));
  assert.throws(() => Hdr.fromBuckets([[2049, 1]]), /not a bucket boundary/);
  assert.ok(Number.isNaN(new Hdr().percentile(50)));
});

test('Hdr: merged native runs give the percentiles of one run over all their samples', T, async () => {
  const srv = await startServer('echo');
  const runs = await Promise.all(
    [64, 64].map(() => client(['--target', `127.0.0.1:${srv.port}`, '--size', '64', '--rounds', '300', '--warmup', '10'])),
  );
  const merged = new Hdr();
  for (const r of runs) {
    assert.equal(r.ok, true, JSON.stringify(r));
    merged.add(Hdr.fromBuckets(r.hist.buckets, r.hist));
  }
  assert.equal(merged.count, 600);
  assert.equal(merged.min, Math.min(...runs.map((r) => r.hist.min)));
  const p50 = merged.percentile(50) / 1000;
  assert.ok(p50 >= Math.min(...runs.map((r) => r.p50_us)) && p50 <= Math.max(...runs.map((r) => r.p50_us)));
});
