// podtool: the program run inside sandbox pods by the tests, the demo and the benchmarks.
//
//   node dist/sandbox/podtool.js <subcommand> [--flag value ...]
//
// Output: one JSON object per line on stdout. Servers print {"event":"listening",...} once ready
// and run until killed. Clients exit 0 even when individual operations fail (the results are in
// the JSON), 2 on bad usage, 3 when the overall --timeout-ms (default 60 000) expires (after
// printing {"error":"timeout",...}). Timeouts (not durations) are scaled by SOCKMESH_TIME_SCALE
// (time-scale.ts).
//
// Subcommands:
//   serve      --port P --name N [--host ::] [--mode id|echo|sink|pingpong] [--verbose]
//   serve-udp  --port P --name N [--host ::] [--verbose]
//   ids        --target HOST:PORT --count N [--concurrency C] [--connect-timeout-ms T]
//   connect-loop --target HOST:PORT --duration-ms D [--interval-ms I] [--connect-timeout-ms T]
//   transfer   --target HOST:PORT --bytes N [--chunk K] [--conns C] [--mode echo|sink] [--seed S]
//   udp        --target HOST:PORT [--payload S] [--count N] [--reply-timeout-ms T]
//   pingpong   --target HOST:PORT --size S --rounds R [--warmup W] [--conns C]
//   serve-http --port P --name N          serve-grpc --port P --name N
//   http       --target HOST:PORT --path P [--host H] [--method M] [--duration-ms D [--interval-ms I]]
//   grpc       --target HOST:PORT --method Allowed|Forbidden
//   connect    --target HOST:PORT [--connect-timeout-ms T] [--local-port P] [--hold-ms H]
// IPv6 targets are written [addr]:port.

import { createHash } from 'node:crypto';
import * as dgram from 'node:dgram';
import * as http from 'node:http';
import * as net from 'node:net';
import { scaled } from './time-scale';

type Flags = Record<string, string | true>;

class UsageError extends Error {}

function out(obj: unknown): void {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0);
});

function parseArgs(argv: string[]): { cmd: string; flags: Flags } {
  const [cmd, ...rest] = argv;
  if (!cmd) throw new UsageError('missing subcommand');
  const flags: Flags = {};
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i];
    if (!a.startsWith('--')) throw new UsageError(`unexpected argument '${a}'`);
    const eq = a.indexOf('=');
    if (eq > 0) {
      flags[a.slice(2, eq)] = a.slice(eq + 1);
    } else if (i + 1 < rest.length && !rest[i + 1].startsWith('--')) {
      flags[a.slice(2)] = rest[++i];
    } else {
      flags[a.slice(2)] = true;
    }
  }
  return { cmd, flags };
}

function str(f: Flags, k: string, def?: string): string {
  const v = f[k];
  if (v === undefined || v === true) {
    if (def !== undefined) return def;
    throw new UsageError(`--${k} is required`);
  }
  return v;
}

function int(f: Flags, k: string, def?: number, min = 0): number {
  const v = f[k];
  if (v === undefined) {
    if (def !== undefined) return def;
    throw new UsageError(`--${k} is required`);
  }
  if (v === true || !/^\d+$/.test(v)) throw new UsageError(`--${k} must be a non-negative integer`);
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min) throw new UsageError(`--${k} must be an integer >= ${min}`);
  return n;
}

interface Target {
  host: string;
  port: number;
  family: 4 | 6;
}

function parseTarget(s: string): Target {
  let host: string;
  let port: string;
  const m6 = /^\[([^\]]+)\]:(\d+)$/.exec(s);
  if (m6) {
    host = m6[1];
    port = m6[2];
  } else {
    const i = s.lastIndexOf(':');
    if (i <= 0) throw new UsageError(`bad --target '${s}' (HOST:PORT or [V6]:PORT)`);
    host = s.slice(0, i);
    port = s.slice(i + 1);
    if (host.includes(':')) throw new UsageError(`bad --target '${s}': write IPv6 as [addr]:port`);
  }
  const p = Number(port);
  if (!/^\d+$/.test(port) || p < 1 || p > 65535) throw new UsageError(`bad port in --target '${s}'`);
  return { host, port: p, family: net.isIPv6(host) ? 6 : 4 };
}

function bump(m: Record<string, number>, k: string): void {
  m[k] = (m[k] ?? 0) + 1;
}

function code(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  return err?.code ?? err?.message ?? String(e);
}

function hrNow(): bigint {
  return process.hrtime.bigint();
}

// ---- servers -----------------------------------------------------------------------------------

function serve(f: Flags): void {
  const port = int(f, 'port', undefined, 0);
  const name = str(f, 'name');
  const host = str(f, 'host', '::');
  const mode = str(f, 'mode', 'id');
  const verbose = f.verbose === true;
  if (!['id', 'echo', 'sink', 'pingpong'].includes(mode)) throw new UsageError(`bad --mode '${mode}'`);
  let connId = 0;
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (sock) => {
    const id = ++connId;
    const peer = { address: sock.remoteAddress, port: sock.remotePort };
    if (verbose) out({ event: 'conn', id, peer, local: { address: sock.localAddress, port: sock.localPort } });
    sock.on('error', (e) => {
      if (verbose) out({ event: 'conn-error', id, err: code(e) });
      sock.destroy();
    });
    if (verbose) sock.on('close', () => out({ event: 'conn-close', id, bytesRead: sock.bytesRead, bytesWritten: sock.bytesWritten }));
    switch (mode) {
      case 'id':
        sock.on('data', () => undefined); // drain whatever the client sends
        sock.end(name + '\n');
        break;
      case 'echo':
      case 'pingpong':
        // pipe() ends the writable side once the client's EOF has been read and all data
        // was written back: half-close works.
        sock.pipe(sock);
        break;
      case 'sink': {
        const h = createHash('sha256');
        let n = 0;
        sock.on('data', (d: Buffer) => {
          h.update(d);
          n += d.length;
        });
        sock.on('end', () => sock.end(JSON.stringify({ bytes: n, sha256: h.digest('hex') }) + '\n'));
        break;
      }
    }
  });
  server.on('error', (e) => {
    out({ event: 'error', err: code(e), message: (e as Error).message });
    process.exit(1);
  });
  server.listen({ port, host, ipv6Only: false }, () => {
    const a = server.address() as net.AddressInfo;
    out({ event: 'listening', proto: 'tcp', name, mode, host, address: a.address, port: a.port, pid: process.pid });
  });
}

function serveUdp(f: Flags): void {
  const port = int(f, 'port', undefined, 0);
  const name = str(f, 'name');
  const host = str(f, 'host', '::');
  const verbose = f.verbose === true;
  const sock = dgram.createSocket({ type: net.isIPv4(host) ? 'udp4' : 'udp6', ipv6Only: false });
  sock.on('message', (msg, rinfo) => {
    if (verbose) out({ event: 'datagram', from: { address: rinfo.address, port: rinfo.port }, bytes: msg.length });
    sock.send(Buffer.concat([Buffer.from(name + ':'), msg]), rinfo.port, rinfo.address, (e) => {
      if (e && verbose) out({ event: 'send-error', err: code(e) });
    });
  });
  sock.on('error', (e) => {
    out({ event: 'error', err: code(e), message: e.message });
    process.exit(1);
  });
  sock.bind({ port, address: host }, () => {
    const a = sock.address();
    out({ event: 'listening', proto: 'udp', name, host, address: a.address, port: a.port, pid: process.pid });
  });
}

// ---- TCP clients -------------------------------------------------------------------------------

interface IdResult {
  id: string | null;
  err: string | null;
  peer?: { address?: string; port?: number };
}

/** Connect, read the server's name line (to EOF), close. */
function fetchId(t: Target, timeoutMs: number, onStart?: () => void): Promise<IdResult> {
  return new Promise((resolve) => {
    let data = '';
    let done = false;
    let peer: IdResult['peer'];
    onStart?.();
    const sock = net.connect({ host: t.host, port: t.port });
    const finish = (r: IdResult): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(peer ? { ...r, peer } : r);
    };
    const timer = setTimeout(() => finish({ id: null, err: 'ETIMEDOUT' }), timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => {
      peer = { address: sock.remoteAddress, port: sock.remotePort };
    });
    sock.on('data', (d: string) => {
      data += d;
    });
    sock.on('end', () => {
      const id = data.split('\n')[0].trim();
      finish(id ? { id, err: null } : { id: null, err: 'EMPTY' });
    });
    sock.on('error', (e) => finish({ id: null, err: code(e) }));
    sock.on('close', () => finish(data ? { id: data.split('\n')[0].trim(), err: null } : { id: null, err: 'ECLOSED' }));
  });
}

async function ids(f: Flags): Promise<void> {
  const t = parseTarget(str(f, 'target'));
  const count = int(f, 'count', 1, 1);
  const conc = Math.min(int(f, 'concurrency', 1, 1), count);
  const cto = scaled(int(f, 'connect-timeout-ms', 5000, 1));
  const idsOut: Record<string, number> = {};
  const errors: Record<string, number> = {};
  let peer: IdResult['peer'] | null = null;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++;
      const r = await fetchId(t, cto);
      if (i === 0 || (peer === null && r.peer)) peer = r.peer ?? null;
      if (r.id !== null) bump(idsOut, r.id);
      else bump(errors, r.err ?? 'UNKNOWN');
    }
  };
  await Promise.all(Array.from({ length: conc }, worker));
  out({ ids: idsOut, errors, peer, count });
}

async function connectLoop(f: Flags): Promise<void> {
  const t = parseTarget(str(f, 'target'));
  const dur = int(f, 'duration-ms', undefined, 1);
  const interval = int(f, 'interval-ms', 0);
  const cto = scaled(int(f, 'connect-timeout-ms', 2000, 1));
  const end = Date.now() + dur;
  while (Date.now() < end) {
    let t0 = 0n;
    const r = await fetchId(t, cto, () => {
      t0 = hrNow();
    });
    out({ t0: t0.toString(), id: r.id, err: r.err });
    if (interval > 0) await new Promise((res) => setTimeout(res, interval));
    else await new Promise((res) => setImmediate(res));
  }
}

async function connectOnce(f: Flags): Promise<void> {
  const t = parseTarget(str(f, 'target'));
  const cto = scaled(int(f, 'connect-timeout-ms', 5000, 1));
  const localPort = f['local-port'] === undefined ? undefined : int(f, 'local-port', undefined, 1);
  const holdMs = f['hold-ms'] === undefined ? undefined : int(f, 'hold-ms', undefined, 0);
  const start = hrNow();
  const ms = (): number => Number(hrNow() - start) / 1e6;
  await new Promise<void>((resolve) => {
    const sock = net.connect({ host: t.host, port: t.port, ...(localPort ? { localPort } : {}) });
    let done = false;
    const finish = (o: unknown): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      out(o);
      sock.destroy();
      resolve();
    };
    const timer = setTimeout(() => finish({ ok: false, err: 'ETIMEDOUT', ms: ms() }), cto);
    sock.on('connect', () => {
      const o = {
        ok: true,
        peer: { address: sock.remoteAddress, port: sock.remotePort, family: sock.remoteFamily },
        local: { address: sock.localAddress, port: sock.localPort },
        ms: ms(),
      };
      if (holdMs === undefined) return finish(o);
      // Held open: say so now, close gracefully later, and report once the socket is closed.
      clearTimeout(timer);
      out({ event: 'connected', ...o });
      setTimeout(() => sock.end(), holdMs);
      sock.on('close', () => finish({ ...o, closed: true }));
      sock.resume();
    });
    sock.on('error', (e) => finish({ ok: false, err: code(e), ms: ms() }));
  });
}

/** Deterministic pseudo-random byte stream (xorshift32), generated block by block. */
class ByteStream {
  private s: number;
  constructor(seed: number) {
    this.s = (seed ^ 0x9e3779b9) >>> 0 || 0x12345678;
  }
  fill(buf: Buffer): Buffer {
    let s = this.s;
    let i = 0;
    const n4 = buf.length & ~3;
    for (; i < n4; i += 4) {
      s ^= s << 13;
      s >>>= 0;
      s ^= s >>> 17;
      s ^= s << 5;
      s >>>= 0;
      buf.writeUInt32LE(s, i);
    }
    for (; i < buf.length; i++) {
      s ^= s << 13;
      s >>>= 0;
      s ^= s >>> 17;
      s ^= s << 5;
      s >>>= 0;
      buf[i] = s & 0xff;
    }
    this.s = s;
    return buf;
  }
}

interface ConnResult {
  ok: boolean;
  mismatch: boolean;
  err: string | null;
}

function transferOne(t: Target, bytes: number, chunk: number, mode: string, seed: number, cto: number): Promise<ConnResult> {
  return new Promise((resolve) => {
    const sentHash = createHash('sha256');
    const rcvHash = createHash('sha256');
    let rcvBytes = 0;
    let reply = '';
    let done = false;
    const gen = new ByteStream(seed);
    const BLOCK = Math.max(chunk, 65536);
    let block: Buffer = Buffer.alloc(0);
    let off = 0;
    let remaining = bytes;
    let writeDone = false;
    const sock = net.connect({ host: t.host, port: t.port, allowHalfOpen: true });
    const finish = (r: ConnResult): void => {
      if (done) return;
      done = true;
      clearTimeout(ctimer);
      sock.destroy();
      resolve(r);
    };
    const ctimer = setTimeout(() => {
      if (!sock.remoteAddress) finish({ ok: false, mismatch: false, err: 'ETIMEDOUT' });
    }, cto);
    sock.on('error', (e) => finish({ ok: false, mismatch: false, err: code(e) }));
    sock.on('data', (d: Buffer) => {
      if (mode === 'echo') {
        rcvHash.update(d);
        rcvBytes += d.length;
      } else {
        reply += d.toString('utf8');
      }
    });
    sock.on('end', () => {
      const sent = sentHash.digest('hex');
      if (!writeDone) return finish({ ok: false, mismatch: true, err: 'EARLYEOF' });
      if (mode === 'echo') {
        const got = rcvHash.digest('hex');
        const bad = got !== sent || rcvBytes !== bytes;
        finish({ ok: !bad, mismatch: bad, err: null });
      } else {
        let r: { bytes?: number; sha256?: string } = {};
        try {
          r = JSON.parse(reply.trim());
        } catch {
          return finish({ ok: false, mismatch: true, err: 'BADREPLY' });
        }
        const bad = r.bytes !== bytes || r.sha256 !== sent;
        finish({ ok: !bad, mismatch: bad, err: null });
      }
    });
    sock.on('close', () => finish({ ok: false, mismatch: false, err: 'ECLOSED' }));
    // Writer: respect back-pressure; 1-byte chunks are cut from 64 KiB generated blocks.
    const pump = (): void => {
      while (remaining > 0 && !done) {
        if (off >= block.length) {
          block = gen.fill(Buffer.allocUnsafe(Math.min(BLOCK, Math.ceil(remaining / chunk) * chunk)));
          off = 0;
        }
        const n = Math.min(chunk, remaining, block.length - off);
        const piece = block.subarray(off, off + n);
        off += n;
        remaining -= n;
        sentHash.update(piece);
        if (!sock.write(piece)) {
          sock.once('drain', pump);
          return;
        }
      }
      if (remaining === 0 && !writeDone) {
        writeDone = true;
        sock.end(); // shutdown(SHUT_WR): the server sees EOF, we keep reading
      }
    };
    sock.on('connect', pump);
  });
}

async function transfer(f: Flags): Promise<void> {
  const t = parseTarget(str(f, 'target'));
  const bytes = int(f, 'bytes', undefined, 0);
  const chunk = int(f, 'chunk', 65536, 1);
  const conns = int(f, 'conns', 1, 1);
  const mode = str(f, 'mode', 'echo');
  const seed = int(f, 'seed', 1);
  const cto = scaled(int(f, 'connect-timeout-ms', 5000, 1));
  if (mode !== 'echo' && mode !== 'sink') throw new UsageError(`bad --mode '${mode}'`);
  const start = hrNow();
  const res = await Promise.all(Array.from({ length: conns }, (_x, i) => transferOne(t, bytes, chunk, mode, seed + i, cto)));
  const elapsedMs = Number(hrNow() - start) / 1e6;
  const errors: Record<string, number> = {};
  let mismatches = 0;
  for (const r of res) {
    if (r.mismatch) mismatches++;
    if (r.err) bump(errors, r.err);
  }
  const ok = res.every((r) => r.ok);
  out({
    ok,
    conns,
    bytes,
    chunk,
    mode,
    mismatches,
    errors,
    elapsed_ms: Math.round(elapsedMs * 1000) / 1000,
    mbit_per_s: elapsedMs > 0 ? Math.round(((bytes * conns * 8) / (elapsedMs / 1000) / 1e6) * 100) / 100 : null,
  });
}

// ---- UDP client ----------------------------------------------------------------------------------

async function udp(f: Flags): Promise<void> {
  const t = parseTarget(str(f, 'target'));
  const payload = str(f, 'payload', 'ping');
  const count = int(f, 'count', 1, 1);
  const rto = scaled(int(f, 'reply-timeout-ms', 2000, 1));
  const sock = dgram.createSocket(t.family === 6 ? 'udp6' : 'udp4');
  let waiter: ((m: { msg: Buffer; rinfo: dgram.RemoteInfo } | null) => void) | null = null;
  const queue: Array<{ msg: Buffer; rinfo: dgram.RemoteInfo }> = [];
  let sockErr: string | null = null;
  sock.on('message', (msg, rinfo) => {
    if (waiter) {
      const w = waiter;
      waiter = null;
      w({ msg, rinfo });
    } else queue.push({ msg, rinfo });
  });
  sock.on('error', (e) => {
    sockErr = code(e);
    if (waiter) {
      const w = waiter;
      waiter = null;
      w(null);
    }
  });
  await new Promise<void>((res) => sock.bind(0, res));
  let received = 0;
  const errors: Record<string, number> = {};
  for (let i = 0; i < count; i++) {
    const sendErr = await new Promise<string | null>((res) => sock.send(Buffer.from(payload), t.port, t.host, (e) => res(e ? code(e) : null)));
    if (sendErr) {
      bump(errors, sendErr);
      out({ seq: i, ok: false, err: sendErr });
      continue;
    }
    const m = queue.shift() ?? (await new Promise<{ msg: Buffer; rinfo: dgram.RemoteInfo } | null>((res) => {
      const timer = setTimeout(() => {
        waiter = null;
        res(null);
      }, rto);
      waiter = (x) => {
        clearTimeout(timer);
        res(x);
      };
    }));
    if (!m) {
      const e = sockErr ?? 'ETIMEDOUT';
      sockErr = null;
      bump(errors, e);
      out({ seq: i, ok: false, err: e });
      continue;
    }
    received++;
    const reply = m.msg.toString('utf8');
    const colon = reply.indexOf(':');
    out({
      seq: i,
      ok: true,
      from: { address: m.rinfo.address, port: m.rinfo.port },
      reply,
      id: colon >= 0 ? reply.slice(0, colon) : null,
    });
  }
  const localPort = sockPort(sock);
  sock.close();
  out({ done: true, sent: count, received, errors, local: { port: localPort } });
}

function sockPort(s: dgram.Socket): number | null {
  try {
    return s.address().port;
  } catch {
    return null;
  }
}

// ---- ping-pong latency -----------------------------------------------------------------------------

function pingpongConn(t: Target, size: number, cto: number): Promise<{ round: () => Promise<number>; close: () => void }> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: t.host, port: t.port, noDelay: true });
    const msg = Buffer.alloc(size, 0x61);
    let want = 0;
    let got = 0;
    let t0 = 0n;
    let cb: ((ns: number) => void) | null = null;
    let fail: ((e: Error) => void) | null = null;
    const timer = setTimeout(() => {
      sock.destroy();
      reject(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' }));
    }, cto);
    sock.on('data', (d: Buffer) => {
      got += d.length;
      if (cb && got >= want) {
        const c = cb;
        cb = null;
        fail = null;
        got -= want;
        c(Number(hrNow() - t0));
      }
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      if (fail) fail(e);
      else reject(e);
    });
    sock.on('close', () => {
      if (fail) fail(Object.assign(new Error('closed'), { code: 'ECLOSED' }));
    });
    sock.on('connect', () => {
      clearTimeout(timer);
      sock.setNoDelay(true);
      resolve({
        round: () =>
          new Promise<number>((res, rej) => {
            want = size;
            cb = res;
            fail = rej;
            t0 = hrNow();
            sock.write(msg);
          }),
        close: () => sock.destroy(),
      });
    });
  });
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

async function pingpong(f: Flags): Promise<void> {
  const t = parseTarget(str(f, 'target'));
  const size = int(f, 'size', undefined, 1);
  const rounds = int(f, 'rounds', undefined, 1);
  const warmup = int(f, 'warmup', Math.min(1000, Math.ceil(rounds / 10)));
  const conns = int(f, 'conns', 1, 1);
  const cto = scaled(int(f, 'connect-timeout-ms', 5000, 1));
  let cs: Array<{ round: () => Promise<number>; close: () => void }>;
  try {
    cs = await Promise.all(Array.from({ length: conns }, () => pingpongConn(t, size, cto)));
  } catch (e) {
    out({ ok: false, err: code(e), size, rounds, conns });
    return;
  }
  const samples: number[] = [];
  let err: string | null = null;
  try {
    await Promise.all(cs.map(async (c) => {
      for (let i = 0; i < warmup; i++) await c.round();
    }));
    const cpu0 = process.cpuUsage();
    const w0 = hrNow();
    await Promise.all(cs.map(async (c) => {
      for (let i = 0; i < rounds; i++) samples.push(await c.round());
    }));
    const wall = Number(hrNow() - w0) / 1e3;
    const cpu = process.cpuUsage(cpu0);
    const us = samples.map((ns) => ns / 1e3).sort((a, b) => a - b);
    const r3 = (x: number): number => Math.round(x * 1000) / 1000;
    out({
      ok: true,
      size,
      rounds,
      warmup,
      conns,
      samples: us.length,
      p50_us: r3(pct(us, 50)),
      p90_us: r3(pct(us, 90)),
      p99_us: r3(pct(us, 99)),
      mean_us: r3(us.reduce((a, b) => a + b, 0) / us.length),
      min_us: r3(us[0]),
      max_us: r3(us[us.length - 1]),
      wall_us: Math.round(wall),
      rps: Math.round((us.length / wall) * 1e6),
      cpu_user_us: cpu.user,
      cpu_sys_us: cpu.system,
    });
  } catch (e) {
    err = code(e);
    out({ ok: false, err, size, rounds, conns, samples: samples.length });
  } finally {
    cs.forEach((c) => c.close());
  }
}

// ---- main ----------------------------------------------------------------------------------------

const USAGE = `usage: podtool.js <subcommand> [--flags]
  serve --port P --name N [--host ::] [--mode id|echo|sink|pingpong] [--verbose]
  serve-udp --port P --name N [--host ::] [--verbose]
  ids --target HOST:PORT --count N [--concurrency C]
  connect-loop --target HOST:PORT --duration-ms D [--interval-ms I]
  transfer --target HOST:PORT --bytes N [--chunk K] [--conns C] [--mode echo|sink] [--seed S]
  udp --target HOST:PORT [--payload S] [--count N]
  pingpong --target HOST:PORT --size S --rounds R [--warmup W] [--conns C]
  connect --target HOST:PORT [--connect-timeout-ms T] [--local-port P] [--hold-ms H]
  (clients: [--timeout-ms T] overall bound, default 60000)`;

async function main(): Promise<void> {
  let cmd: string;
  let flags: Flags;
  try {
    ({ cmd, flags } = parseArgs(process.argv.slice(2)));
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${USAGE}\n`);
    process.exit(2);
  }
  const clients: Record<string, (f: Flags) => Promise<void>> = {
    ids,
    'connect-loop': connectLoop,
    transfer,
    udp,
    pingpong,
    connect: connectOnce,
    http: httpGet,
    grpc: grpcCall,
  };
  try {
    if (cmd === 'serve') return serve(flags);
    if (cmd === 'serve-udp') return serveUdp(flags);
    if (cmd === 'serve-http') return serveHttp(flags);
    if (cmd === 'serve-grpc') return serveGrpc(flags);
    const fn = clients[cmd];
    if (!fn) throw new UsageError(`unknown subcommand '${cmd}'`);
    const defTimeout = cmd === 'connect-loop' ? int(flags, 'duration-ms', 0) + 60_000 : 60_000;
    const timeoutMs = scaled(int(flags, 'timeout-ms', defTimeout, 1));
    const timer = setTimeout(() => {
      out({ error: 'timeout', cmd, timeout_ms: timeoutMs });
      process.exit(3);
    }, timeoutMs);
    await fn(flags);
    clearTimeout(timer);
    process.exit(0);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`${e.message}\n${USAGE}\n`);
      process.exit(2);
    }
    out({ error: 'exception', message: (e as Error).message });
    process.exit(1);
  }
}

// ---- HTTP and gRPC (L7 proxy tests) ----------------------------------------------------------

/** serve-http --port P --name N: answers every request with JSON {name, method, path, host}. */
function serveHttp(f: Flags): void {
  const name = str(f, 'name');
  const server = http.createServer((req, res) => {
    const body = JSON.stringify({ name, method: req.method, path: req.url, host: req.headers.host ?? null });
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end(body));
  });
  server.listen({ port: int(f, 'port'), host: str(f, 'host', '::') }, () => out({ event: 'listening', proto: 'http', name }));
}

// A generic gRPC service with raw-bytes messages, so no .proto file is needed.
const rawBytes = { serialize: (b: Buffer) => b, deserialize: (b: Buffer) => b };
const GRPC_METHODS = ['Allowed', 'Forbidden'];
function echoService(): Record<string, unknown> {
  return Object.fromEntries(
    GRPC_METHODS.map((m) => [
      m,
      { path: `/echo.Echo/${m}`, requestStream: false, responseStream: false, requestSerialize: rawBytes.serialize, requestDeserialize: rawBytes.deserialize, responseSerialize: rawBytes.serialize, responseDeserialize: rawBytes.deserialize },
    ]),
  );
}

/** serve-grpc --port P --name N: echo.Echo/{Allowed,Forbidden} answer with the server's name. */
function serveGrpc(f: Flags): void {
  const grpc = require('@grpc/grpc-js') as typeof import('@grpc/grpc-js');
  const name = str(f, 'name');
  const server = new grpc.Server();
  const reply = (_call: unknown, cb: (e: null, r: Buffer) => void) => cb(null, Buffer.from(name));
  server.addService(echoService() as never, Object.fromEntries(GRPC_METHODS.map((m) => [m, reply])));
  server.bindAsync(`[::]:${int(f, 'port')}`, grpc.ServerCredentials.createInsecure(), (err) => {
    if (err) throw err;
    out({ event: 'listening', proto: 'grpc', name });
  });
}

/**
 * http --target HOST:PORT --path P [--host H] [--method M]: one request; prints status and body.
 * With --duration-ms D: one request after another (each on a new connection, --interval-ms apart)
 * until D has passed, a line each.
 */
async function httpGet(f: Flags): Promise<void> {
  if (f['duration-ms'] === undefined) return httpOnce(f);
  const end = Date.now() + int(f, 'duration-ms', undefined, 1);
  const interval = int(f, 'interval-ms', 0);
  while (Date.now() < end) {
    await httpOnce(f);
    if (interval) await new Promise((r) => setTimeout(r, interval));
  }
}

async function httpOnce(f: Flags): Promise<void> {
  const t = parseTarget(str(f, 'target'));
  const headers: Record<string, string> = {};
  if (f.host) headers.host = str(f, 'host');
  await new Promise<void>((resolve) => {
    const req = http.request({ host: t.host, port: t.port, path: str(f, 'path', '/'), method: str(f, 'method', 'GET'), headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        out({ status: res.statusCode, body, peer: { address: req.socket?.remoteAddress, port: req.socket?.remotePort } });
        resolve();
      });
    });
    req.on('error', (e) => {
      out({ status: null, err: code(e) });
      resolve();
    });
    req.end();
  });
}

/** grpc --target HOST:PORT --method Allowed|Forbidden: one unary call; prints the status. */
async function grpcCall(f: Flags): Promise<void> {
  const grpc = require('@grpc/grpc-js') as typeof import('@grpc/grpc-js');
  const t = parseTarget(str(f, 'target'));
  const Client = grpc.makeGenericClientConstructor(echoService() as never, 'Echo');
  const client = new Client(t.host.includes(':') ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`, grpc.credentials.createInsecure()) as unknown as Record<
    string,
    (req: Buffer, cb: (e: { code: number; details: string } | null, r?: Buffer) => void) => void
  >;
  const method = str(f, 'method');
  await new Promise<void>((resolve) => {
    client[method](Buffer.from('hi'), (e, r) => {
      out(e ? { ok: false, code: e.code, details: e.details } : { ok: true, code: 0, reply: r!.toString() });
      resolve();
    });
  });
}

void main();
