// HTTP/1.1 in, HTTP/1.1 out. Node's parser (llhttp, strict) reads the client; undici Pools carry
// the request to the original destination. Bodies are streamed both ways with backpressure.
import * as http from 'node:http';
import type * as net from 'node:net';
import type { Duplex } from 'node:stream';
import type { Dispatcher } from 'undici';
import { BodyMeter } from './body-meter';
import { buildAttributesOwning, type ConnState, type OriginOk, type ProxyCore, type RequestRecord } from './core';
import { ProxyError } from '../../core/errors';
import { checkHttp1Head, forwardAndMatch, forwardHeaders, isGrpcContentType, pairs, rawToStrings, type FilterOptions } from './headers';
import { NO_POLICY_BODY, RBAC_DENIED_BODY, UNKNOWN_ORIGIN_BODY, grpcStatusForHttp, rawHttp1Reply, writeLocalHttp1, type LocalReply } from './local-reply';
import { parseRequestTarget } from './request-target';
import { classifyUpstreamError } from './upstream';

/** Host travels separately (undici's `host`); the proxy answers Expect itself. */
const DROP_REQUEST: ReadonlySet<string> = new Set(['host', 'expect']);
const REQUEST_FILTER: FilterOptions = { drop: DROP_REQUEST };

const STATUS_FOR_PARSE_ERROR: Record<string, number> = {
  HPE_HEADER_OVERFLOW: 431,
  HPE_CHUNK_EXTENSIONS_OVERFLOW: 413,
  ERR_HTTP_REQUEST_TIMEOUT: 408,
};

/** Expect: none, 100-continue (answered after the policy allows), or anything else (417). */
type Expect = 'none' | 'continue' | 'unsupported';

interface Admitted {
  origin: OriginOk;
  path: string;
  authority: string | undefined;
  headers: string[];
  grpc: boolean;
}

interface Exchange {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  rec: RequestRecord;
  /** Set when the connection is failed under the exchange: nothing more may be written. */
  dead: boolean;
  /** Stops the upstream request (set once undici has it on a connection). */
  abortUpstream: (() => void) | undefined;
  /** Counts the request body on its way upstream. */
  meter?: BodyMeter;
}

export class Http1Frontend {
  readonly server: http.Server;

  constructor(private readonly core: ProxyCore) {
    const { limits, timeouts } = core.cfg;
    this.server = http.createServer({
      maxHeaderSize: limits.maxHeaderBytes,
      headersTimeout: timeouts.headersMs,
      requestTimeout: timeouts.requestMs,
      keepAliveTimeout: timeouts.keepAliveMs,
      connectionsCheckingInterval: Math.min(1000, Math.max(10, Math.floor(timeouts.headersMs / 4))),
      insecureHTTPParser: false,
      joinDuplicateHeaders: false,
      // Checked in checkHttp1Head/admit instead, so that the 400 is logged like every other answer.
      requireHostHeader: false,
      noDelay: true,
    });
    // Node keeps at most this many fields and silently drops the rest; one more than the limit
    // lets checkHttp1Head see that the limit was passed.
    this.server.maxHeadersCount = limits.maxHeaders + 1;
    this.server.on('request', (req, res) => this.onRequest(req, res, 'none'));
    this.server.on('checkContinue', (req, res) => this.onRequest(req, res, 'continue'));
    // Without this listener Node answers 417 itself, unlogged.
    this.server.on('checkExpectation', (req, res) => this.onRequest(req, res, 'unsupported'));
    this.server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => this.onUpgrade(req, socket as net.Socket, head));
    this.server.on('connect', (req: http.IncomingMessage, socket: Duplex) => this.onConnectMethod(req, socket as net.Socket));
    this.server.on('clientError', (err: Error, socket: Duplex) => this.onClientError(err, socket as net.Socket));
    // Node arms headersTimeout/requestTimeout (its connection list and the interval that checks
    // it) when the server emits 'listening'. This server never listens — sniffed connections are
    // handed to it — so the event is emitted here to arm them. (Tested: the slowloris 408.)
    this.server.emit('listening');
  }

  /** Hand over a sniffed socket (paused, its first bytes unshifted). */
  accept(socket: net.Socket): void {
    this.server.emit('connection', socket);
    // The server reads the handle directly; resuming flushes the unshifted bytes to its parser first.
    socket.resume();
  }

  close(): void {
    this.server.close(); // stops the connections-checking interval; the server itself never listened
  }

  // ---- requests -------------------------------------------------------------------------------

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse, expect: Expect): void {
    const conn = this.core.conns.get(req.socket as net.Socket);
    if (!conn) {
      res.destroy();
      return;
    }
    const start = () => this.serve(conn, req, res, expect);
    if (!conn.h1.busy) {
      start();
      return;
    }
    // Pipelined behind a request still being served. Responses go out in order anyway; serving
    // one at a time keeps one upstream request per connection, and pausing the socket leaves
    // further requests in the kernel's buffer instead of parsing them into memory.
    if (conn.h1.queue.length >= this.core.cfg.limits.maxPipelinedRequests) {
      const rec = this.core.record(conn, `HTTP/${req.httpVersion}`);
      rec.method = req.method;
      rec.path = req.url;
      rec.error = 'pipeline limit';
      res.once('close', () => {
        rec.status = res.statusCode;
        rec.finish();
      });
      writeLocalHttp1(res, { status: 503, body: 'too many pipelined requests', close: true }, false);
      return;
    }
    conn.h1.queue.push(start);
    conn.socket.pause();
  }

  private serve(conn: ConnState, req: http.IncomingMessage, res: http.ServerResponse, expect: Expect): void {
    conn.h1.busy = true;
    const rec = this.core.record(conn, `HTTP/${req.httpVersion}`);
    const ex: Exchange = { req, res, rec, dead: false, abortUpstream: undefined };
    conn.h1.current = {
      rec,
      headersSent: () => res.headersSent,
      kill: () => {
        ex.dead = true;
        ex.abortUpstream?.();
      },
    };
    res.once('close', () => {
      if (!res.writableFinished) {
        rec.error ??= 'downstream closed before the response completed';
        ex.abortUpstream?.();
      }
      if (res.headersSent && !ex.dead) rec.status = res.statusCode;
      if (ex.meter) rec.bytesIn = ex.meter.bytes;
      rec.finish();
      conn.h1.busy = false;
      conn.h1.current = undefined;
      if (conn.socket.destroyed || this.core.closing) {
        conn.h1.queue.length = 0;
        if (this.core.closing) conn.socket.destroySoon();
        return;
      }
      const next = conn.h1.queue.shift();
      if (next) next();
      else conn.socket.resume();
    });
    this.forward(conn, ex, expect).catch((err) => {
      this.core.cfg.logger.error('request handling failed', { err, client: conn.client });
      rec.error = err instanceof Error ? err.message : String(err);
      this.local(ex, { status: 500, body: 'internal proxy error', close: true }, false);
    });
  }

  private async forward(conn: ConnState, ex: Exchange, expect: Expect): Promise<void> {
    const { req, res, rec } = ex;
    const a = await this.admit(conn, ex, expect);
    if (!a) return;
    const { timeouts } = this.core.cfg;
    if (expect === 'continue') res.writeContinue(); // only now: the policy allowed the request

    const pool = this.core.upstreams.pool(a.origin.destination);
    if (this.core.upstreams.overflowed(pool)) {
      this.upstreamFailed(ex, new ProxyError('SM_PROXY_UPSTREAM_OVERFLOW', 'too many requests waiting for the destination'), a.grpc);
      return;
    }
    let body: BodyMeter | null = null;
    let clientTimedOut = false;
    if (hasBody(req)) {
      const meter = new BodyMeter(timeouts.requestBodyIdleMs, () => {
        clientTimedOut = true;
        rec.error = 'request body timeout';
        this.local(ex, { status: 408, body: 'request body timeout', close: true }, a.grpc);
        meter.destroy();
        ex.abortUpstream?.();
      });
      body = meter;
      ex.meter = meter;
      // pipe, not pipeline: if undici drops the body (the response came first) the request must
      // not be destroyed with it — the response is still being written to the same socket.
      req.pipe(meter);
      req.once('error', (err) => meter.destroy(err));
      meter.on('error', () => {});
    }
    const headers = a.headers; // built for this request by admit(), not shared
    if (a.authority) headers.push('host', a.authority);
    let drainHooked = false;
    const handler: Dispatcher.DispatchHandlers = {
      onConnect: (abort) => {
        ex.abortUpstream = () => abort();
        if (res.destroyed || ex.dead) abort();
      },
      onHeaders: (status, raw, resume, statusText) => {
        if (status < 200) return true; // 1xx other than 101 are not relayed (100 is the proxy's own)
        if (ex.dead || res.destroyed || res.headersSent) return false;
        rec.markUpstreamHeaders();
        const out = forwardHeaders(rawToStrings(raw));
        // The client is still sending a body nobody will read: close after this response.
        if (!req.complete || this.core.closing) out.push('connection', 'close');
        res.sendDate = false;
        try {
          res.writeHead(status, statusText || http.STATUS_CODES[status] || '', out);
        } catch (err) {
          ex.abortUpstream?.();
          this.upstreamFailed(ex, err, a.grpc);
          return false;
        }
        if (!drainHooked) {
          drainHooked = true;
          res.on('drain', resume);
        }
        return true;
      },
      onData: (chunk) => {
        if (ex.dead) return false;
        rec.bytesOut += chunk.length;
        return res.write(chunk);
      },
      onComplete: (trailers) => {
        if (ex.dead) return;
        const t = rawToStrings(trailers as unknown as Buffer[]);
        if (t.length) res.addTrailers(pairs(t));
        res.end();
      },
      onError: (err) => {
        if (ex.dead || res.destroyed || clientTimedOut) return;
        this.upstreamFailed(ex, err, a.grpc);
      },
    };
    rec.markUpstreamStart();
    pool.dispatch(
      {
        path: a.path,
        method: req.method as Dispatcher.HttpMethod,
        headers,
        body,
        headersTimeout: a.grpc ? 0 : timeouts.upstreamResponseHeadersMs,
        bodyTimeout: timeouts.upstreamIdleMs,
      },
      handler,
    );
  }

  /**
   * Everything before forwarding: the connection's origin, the checks llhttp does not make, the
   * request target, the policy. Answers and returns undefined when the request goes no further.
   */
  private async admit(conn: ConnState, ex: Exchange, expect: Expect): Promise<Admitted | undefined> {
    const { req, rec } = ex;
    const cfg = this.core.cfg;
    rec.method = req.method;
    rec.path = req.url;
    rec.authority = req.headers.host;
    const origin = await conn.origin;
    if (ex.dead) return undefined;
    if (!origin.ok) {
      rec.decision = 'unknown_origin';
      rec.reason = origin.reason;
      this.local(ex, { status: 403, body: UNKNOWN_ORIGIN_BODY, close: true }, false);
      return undefined;
    }
    rec.setOrigin(origin);
    let bad =
      checkHttp1Head(req, cfg.limits.maxHeaders) ??
      (req.httpVersion === '1.1' && req.headers.host === undefined ? { status: 400, reason: 'missing Host header' } : undefined);
    if (expect === 'unsupported') bad ??= { status: 417, reason: 'unsupported expectation' };
    if (bad) {
      rec.error = bad.reason;
      this.local(ex, { status: bad.status, body: bad.reason, close: true }, isGrpcContentType(req.headers['content-type']));
      return undefined;
    }
    const target = parseRequestTarget(req.method ?? '', req.url ?? '', {
      normalize: cfg.normalizePath,
      mergeSlashes: cfg.mergeSlashes,
      allowAbsolute: true,
    });
    if (!target.ok) {
      rec.error = target.reason;
      this.local(ex, { status: 400, body: target.reason, close: true }, isGrpcContentType(req.headers['content-type']));
      return undefined;
    }
    const authority = target.authority ?? req.headers.host;
    rec.path = target.path;
    rec.authority = authority;
    const { headers, matching } = forwardAndMatch(req.rawHeaders, REQUEST_FILTER);
    const grpc = isGrpcContentType(matching['content-type']);
    const attrs = buildAttributesOwning({
      method: req.method ?? '',
      path: target.path,
      authority,
      scheme: 'http',
      headers: matching,
      conn,
      origin: origin.origin,
    });
    const verdict = this.core.authorize(attrs, origin, rec);
    if (verdict !== 'allow') {
      // A 100-continue client has not sent its body, or may still: do not wait for it.
      const close = req.headers.expect !== undefined || !req.complete;
      const reply = verdict === 'deny' ? { status: 403, body: RBAC_DENIED_BODY, close } : { status: 503, body: NO_POLICY_BODY, close };
      this.local(ex, reply, grpc);
      return undefined;
    }
    return { origin, path: target.path, authority, headers, grpc };
  }

  private local(ex: Exchange, reply: LocalReply, grpc: boolean): void {
    if (ex.dead) return;
    if (!ex.res.headersSent) {
      ex.rec.status = grpc ? 200 : reply.status;
      if (grpc) ex.rec.grpcStatus = reply.grpcStatus ?? grpcStatusForHttp(reply.status);
    }
    writeLocalHttp1(ex.res, reply, grpc);
  }

  private upstreamFailed(ex: Exchange, err: unknown, grpc: boolean): void {
    const f = classifyUpstreamError(err);
    ex.rec.upstreamError = f.code;
    this.core.metrics.upstreamErrors.inc({ reason: f.reason });
    if (ex.res.headersSent) {
      // Too late for a status: cut the response so the client sees it incomplete.
      ex.res.destroy();
      return;
    }
    this.local(ex, { status: f.status, body: f.message, close: !ex.req.complete }, grpc);
  }

  // ---- upgrade (WebSocket) --------------------------------------------------------------------

  private onUpgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    const conn = this.core.conns.get(socket);
    // An upgrade pipelined behind a request still being answered would need that answer written
    // first on a socket Node has already handed over; such a client is not worth the complexity.
    if (!conn || conn.h1.busy) {
      socket.destroy();
      return;
    }
    conn.h1.busy = true;
    const res = new http.ServerResponse(req);
    res.assignSocket(socket);
    res.shouldKeepAlive = false;
    res.once('finish', () => socket.destroySoon());
    const rec = this.core.record(conn, `HTTP/${req.httpVersion}`);
    const ex: Exchange = { req, res, rec, dead: false, abortUpstream: undefined };
    socket.once('close', () => {
      if (rec.upgraded) return; // the tunnel finishes the record, with its byte counts
      if (res.headersSent) rec.status = res.statusCode;
      rec.finish();
    });
    this.upgrade(conn, ex, socket, head).catch((err) => {
      this.core.cfg.logger.error('upgrade handling failed', { err, client: conn.client });
      socket.destroy();
    });
  }

  private async upgrade(conn: ConnState, ex: Exchange, socket: net.Socket, head: Buffer): Promise<void> {
    const { req, res, rec } = ex;
    const a = await this.admit(conn, ex, 'none');
    if (!a) return;
    const { timeouts, upgradeProtocols } = this.core.cfg;
    if (hasBody(req)) {
      rec.error = 'upgrade request with a body';
      this.local(ex, { status: 400, body: 'upgrade request with a body is not supported', close: true }, a.grpc);
      return;
    }
    // Only configured protocols are passed (never h2c: a tunnel would carry later requests past
    // the policy). Without one, the request is served as a plain request, the Upgrade dropped.
    const offered = (req.headers.upgrade ?? '').split(',').map((t) => t.trim()).filter(Boolean);
    const passed = offered.filter((t) => upgradeProtocols.has(t.split('/')[0].toLowerCase()));
    const pool = this.core.upstreams.pool(a.origin.destination);
    const headers = a.headers.slice();
    if (a.authority) headers.push('host', a.authority);
    let upstreamSocket: Duplex | undefined;
    socket.once('close', () => upstreamSocket?.destroy());
    rec.markUpstreamStart();
    pool.dispatch(
      {
        path: a.path,
        method: req.method as Dispatcher.HttpMethod,
        headers,
        body: null,
        upgrade: passed.length ? passed.join(', ') : null,
        headersTimeout: timeouts.upstreamResponseHeadersMs,
        bodyTimeout: timeouts.upstreamIdleMs,
      },
      {
        onConnect: (abort) => {
          if (socket.destroyed) abort();
        },
        onUpgrade: (status, raw, up) => {
          upstreamSocket = up;
          rec.markUpstreamHeaders();
          if (socket.destroyed) {
            up.destroy();
            return;
          }
          rec.status = status;
          rec.upgraded = true;
          rec.observeDuration();
          const out = forwardHeaders(rawToStrings(raw as Buffer[]), { keepUpgrade: true });
          let headText = `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? 'Switching Protocols'}\r\n`;
          for (let i = 0; i + 1 < out.length; i += 2) headText += `${out[i]}: ${out[i + 1]}\r\n`;
          res.detachSocket(socket); // it wrote nothing; from here the socket is a raw tunnel
          socket.write(headText + '\r\n', 'latin1');
          tunnel(socket, up, head, timeouts.upstreamIdleMs, (bytesIn, bytesOut) => {
            rec.bytesIn = bytesIn;
            rec.bytesOut = bytesOut;
            rec.finish();
          });
        },
        onHeaders: (status, raw, resume, statusText) => {
          // The destination declined the upgrade (or none was offered): an ordinary response, then close.
          if (status < 200) return true;
          if (res.headersSent || socket.destroyed) return false;
          rec.markUpstreamHeaders();
          const out = forwardHeaders(rawToStrings(raw));
          out.push('connection', 'close');
          res.sendDate = false;
          res.writeHead(status, statusText || http.STATUS_CODES[status] || '', out);
          res.on('drain', resume);
          return true;
        },
        onData: (chunk) => {
          rec.bytesOut += chunk.length;
          return res.write(chunk);
        },
        onComplete: () => {
          res.end();
        },
        onError: (err) => {
          if (socket.destroyed) return;
          this.upstreamFailed(ex, err, a.grpc);
        },
      },
    );
  }

  // ---- CONNECT and parse errors ---------------------------------------------------------------

  /** CONNECT would make the proxy a relay to wherever the client names: always refused. */
  private onConnectMethod(req: http.IncomingMessage, socket: net.Socket): void {
    const conn = this.core.conns.get(socket);
    const rec = this.core.record(conn, `HTTP/${req.httpVersion}`);
    rec.method = req.method;
    rec.authority = req.url;
    rec.status = 405;
    rec.error = 'CONNECT is not supported';
    void conn?.origin.then((o) => o.ok && rec.setOrigin(o));
    socket.once('close', () => rec.finish());
    this.failSocket(socket, rawHttp1Reply(405, 'CONNECT is not supported', ['allow', 'GET, HEAD, POST, PUT, DELETE, OPTIONS, TRACE, PATCH']));
  }

  /**
   * Node's parser refused the bytes (llhttp: framing, obs-fold, limits), or a headers/request
   * timeout expired. Answer with the status that fits if nothing of a response was written yet,
   * and close the connection: after a framing error nothing further on it can be trusted.
   */
  private onClientError(err: Error & { code?: string }, socket: net.Socket): void {
    const conn = this.core.conns.get(socket);
    if (conn?.h1.failed) return; // the parser reports every later chunk again
    if (conn) conn.h1.failed = true;
    const code = err.code ?? 'ERR';
    const current = conn?.h1.current;
    current?.kill();
    if (!socket.writable || code === 'ECONNRESET' || code === 'EPIPE') {
      socket.destroy();
      return;
    }
    const status = STATUS_FOR_PARSE_ERROR[code] ?? 400;
    const rec = current?.rec ?? this.core.record(conn, 'HTTP/1.1');
    rec.error = code;
    if (current && current.headersSent()) {
      socket.destroy();
      return;
    }
    rec.status = status;
    if (!current) {
      void conn?.origin.then((o) => o.ok && rec.setOrigin(o));
      socket.once('close', () => rec.finish());
    }
    const body = status === 431 ? 'request header fields too large' : status === 408 ? 'request timeout' : status === 413 ? 'chunk extensions too large' : 'bad request';
    this.failSocket(socket, rawHttp1Reply(status, body));
  }

  /** Write a last answer, stop reading, close once it is flushed (or soon, if the peer does not read). */
  private failSocket(socket: net.Socket, reply: Buffer): void {
    socket.end(reply);
    socket.once('finish', () => setTimeout(() => socket.destroy(), 1000).unref());
    setTimeout(() => socket.destroy(), 5000).unref();
  }
}

function hasBody(req: http.IncomingMessage): boolean {
  if (req.headers['transfer-encoding'] !== undefined) return true;
  const cl = req.headers['content-length'];
  return cl !== undefined && Number(cl) > 0;
}

/**
 * Bytes both ways until both sides have closed (a side that closes has said all it will: the other
 * is ended after flushing, and destroyed 2 s later at the latest), either errors, or the client
 * socket sees no traffic for `idleMs`. `head` is what the client sent after the upgrade request.
 */
export function tunnel(
  client: net.Socket,
  upstream: Duplex,
  head: Buffer,
  idleMs: number,
  done: (bytesIn: number, bytesOut: number) => void,
): void {
  let bytesIn = head.length;
  let bytesOut = 0;
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    client.destroy();
    upstream.destroy();
    done(bytesIn, bytesOut);
  };
  const onClose = (other: Duplex) => () => {
    if (other.destroyed) return finish();
    other.end();
    setTimeout(finish, 2000).unref();
  };
  client.on('data', (d: Buffer) => (bytesIn += d.length));
  upstream.on('data', (d: Buffer) => (bytesOut += d.length));
  client.on('error', finish);
  upstream.on('error', finish);
  client.once('close', onClose(upstream));
  upstream.once('close', onClose(client));
  if (idleMs > 0) client.setTimeout(idleMs, finish);
  if (head.length) upstream.write(head);
  client.pipe(upstream);
  upstream.pipe(client);
}
