// HTTP/2 with prior knowledge (h2c) in, h2c out: one node:http2 client session per destination,
// streams mapped one to one, trailers both ways (gRPC's grpc-status lives there), resets relayed.
import * as http2 from 'node:http2';
import type * as net from 'node:net';
import { buildAttributesOwning, type ConnState, type ProxyCore, type RequestRecord } from './core';
import { ProxyError } from '../../core/errors';
import { HOP_BY_HOP, forwardAndMatch, isGrpcContentType, type FilterOptions } from './headers';
import { NO_POLICY_BODY, RBAC_DENIED_BODY, UNKNOWN_ORIGIN_BODY, grpcStatusForHttp, writeLocalH2, type LocalReply } from './local-reply';
import { parseRequestTarget, validAuthority } from './request-target';
import { classifyUpstreamError } from './upstream';

const { NGHTTP2_CANCEL, NGHTTP2_NO_ERROR, NGHTTP2_INTERNAL_ERROR, NGHTTP2_REFUSED_STREAM, NGHTTP2_FLAG_END_STREAM } = http2.constants;

/** Host becomes :authority; Expect is answered by the proxy. */
const DROP_REQUEST: ReadonlySet<string> = new Set(['host', 'expect']);
const H2_REQUEST_FILTER: FilterOptions = { drop: DROP_REQUEST, keepTeTrailers: true };
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

export class H2Frontend {
  readonly server: http2.Http2Server;
  private pending: ConnState | undefined;
  private readonly sessions = new Map<http2.Http2Session, ConnState>();

  constructor(private readonly core: ProxyCore) {
    const { limits } = core.cfg;
    this.server = http2.createServer({
      // nghttp2 resets a stream past this count; ours (maxHeaders) answers 431 below it.
      maxHeaderListPairs: Math.max(128, 2 * limits.maxHeaders + 16),
      maxSessionMemory: 10,
      settings: {
        maxConcurrentStreams: limits.h2MaxConcurrentStreams,
        // Node resets streams past this (ENHANCE_YOUR_CALM, once the client has ACKed our
        // SETTINGS); the proxy's own check answers 431 from maxHeaderBytes up to it.
        maxHeaderListSize: Math.max(2 * limits.maxHeaderBytes, 8192),
        enablePush: false,
      },
    });
    // 'session' is emitted synchronously inside emit('connection') (accept), which is how a
    // session is tied to the ConnState of its socket (the session's socket is a proxy object).
    this.server.on('session', (session: http2.ServerHttp2Session) => {
      const conn = this.pending;
      if (!conn) {
        session.destroy();
        return;
      }
      conn.session = session;
      this.sessions.set(session, conn);
      session.on('error', () => {});
      session.once('close', () => this.sessions.delete(session));
      session.setTimeout(core.cfg.timeouts.keepAliveMs, () => {
        if (conn.h2Streams === 0) session.close();
      });
    });
    this.server.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number, rawHeaders: unknown) =>
      this.onStream(stream, headers, flags, rawHeaders as string[]),
    );
  }

  /** Hand over a sniffed socket (paused, preface unshifted: the session reads it by itself). */
  accept(socket: net.Socket, conn: ConnState): void {
    this.pending = conn;
    try {
      this.server.emit('connection', socket);
    } finally {
      this.pending = undefined;
    }
  }

  /** Graceful: GOAWAY, open streams may finish. */
  closeSessions(): void {
    for (const s of this.sessions.keys()) if (!s.closed) s.close();
  }

  private onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number, rawHeaders: string[]): void {
    // First, before anything can return: a stream the client already broke (a body longer than its
    // content-length, say) reaches us aborted, without its session, and errors next; an 'error'
    // without a listener would take the whole proxy down.
    stream.on('error', () => {});
    const conn = stream.session ? this.sessions.get(stream.session) : undefined;
    if (!conn) {
      if (!stream.destroyed) stream.close(NGHTTP2_REFUSED_STREAM);
      return;
    }
    conn.h2Streams++;
    const rec = this.core.record(conn, 'HTTP/2');
    stream.once('close', () => {
      conn.h2Streams--;
      rec.finish();
    });
    this.handle(conn, stream, headers, flags, rawHeaders, rec).catch((err) => {
      this.core.cfg.logger.error('stream handling failed', { err, client: conn.client });
      rec.error = err instanceof Error ? err.message : String(err);
      this.local(stream, rec, { status: 500, body: 'internal proxy error' }, false);
    });
  }

  private local(stream: http2.ServerHttp2Stream, rec: RequestRecord, reply: LocalReply, grpc: boolean): void {
    if (!stream.headersSent) {
      rec.status = grpc ? 200 : reply.status;
      if (grpc) rec.grpcStatus = reply.grpcStatus ?? grpcStatusForHttp(reply.status);
    }
    writeLocalH2(stream, reply, grpc);
  }

  private async handle(
    conn: ConnState,
    stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    flags: number,
    rawHeaders: string[],
    rec: RequestRecord,
  ): Promise<void> {
    const cfg = this.core.cfg;
    const method = String(headers[':method'] ?? '');
    const rawPath = String(headers[':path'] ?? '');
    const host = headers.host;
    const authority = headers[':authority'] ?? host;
    rec.method = method;
    rec.path = rawPath;
    rec.authority = authority;
    const grpc0 = isGrpcContentType(headers['content-type']);
    const origin = await conn.origin;
    if (stream.destroyed) return;
    if (!origin.ok) {
      rec.decision = 'unknown_origin';
      rec.reason = origin.reason;
      this.local(stream, rec, { status: 403, body: UNKNOWN_ORIGIN_BODY }, false);
      conn.session?.close();
      return;
    }
    rec.setOrigin(origin);
    const reject = (status: number, reason: string) => {
      rec.error = reason;
      this.local(stream, rec, { status, body: reason }, grpc0);
    };
    if (method === 'CONNECT') return reject(405, 'CONNECT is not supported');
    if (!TOKEN.test(method) || method !== method.toUpperCase()) return reject(400, 'invalid method');
    // Sized as RFC 9113 §6.5.2 counts a header list. (Node enforces its advertised, larger,
    // SETTINGS_MAX_HEADER_LIST_SIZE only after the client ACKed it.)
    let fields = 0;
    let listSize = 0;
    for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
      if (!rawHeaders[i].startsWith(':')) fields++;
      listSize += Buffer.byteLength(rawHeaders[i]) + Buffer.byteLength(rawHeaders[i + 1]) + 32; // RFC 9113 §6.5.2
    }
    if (fields > cfg.limits.maxHeaders) return reject(431, 'too many header fields');
    if (listSize > cfg.limits.maxHeaderBytes) return reject(431, 'header list too large');
    if (host !== undefined && headers[':authority'] !== undefined && host !== headers[':authority']) {
      return reject(400, 'Host and :authority differ');
    }
    if (authority !== undefined && !validAuthority(authority)) return reject(400, 'invalid :authority');
    const target = parseRequestTarget(method, rawPath, { normalize: cfg.normalizePath, mergeSlashes: cfg.mergeSlashes, allowAbsolute: false });
    if (!target.ok) return reject(400, target.reason);
    rec.path = target.path;
    const { headers: fwd, matching } = forwardAndMatch(rawHeaders, H2_REQUEST_FILTER);
    const grpc = isGrpcContentType(matching['content-type']);
    const scheme = String(headers[':scheme'] ?? 'http');
    const attrs = buildAttributesOwning({ method, path: target.path, authority, scheme, headers: matching, conn, origin: origin.origin });
    const verdict = this.core.authorize(attrs, origin, rec);
    if (verdict !== 'allow') {
      this.local(stream, rec, verdict === 'deny' ? { status: 403, body: RBAC_DENIED_BODY } : { status: 503, body: NO_POLICY_BODY }, grpc);
      return;
    }
    if (/^\s*100-continue\s*$/i.test(String(headers.expect ?? ''))) stream.additionalHeaders({ ':status': 100 });

    // ---- forward ----
    const endStream = (flags & NGHTTP2_FLAG_END_STREAM) !== 0 || stream.endAfterHeaders;
    const out: http2.OutgoingHttpHeaders = { ':method': method, ':path': target.path, ':scheme': scheme };
    if (authority !== undefined) out[':authority'] = authority;
    for (let i = 0; i + 1 < fwd.length; i += 2) {
      const name = fwd[i].toLowerCase();
      const prev = out[name];
      out[name] = prev === undefined ? fwd[i + 1] : ([] as string[]).concat(prev as string | string[], fwd[i + 1]);
    }
    const t = cfg.timeouts;
    let up: http2.ClientHttp2Stream;
    rec.markUpstreamStart();
    try {
      up = this.core.upstreams.h2Request(origin.destination, out, { endStream, waitForTrailers: !endStream });
    } catch (err) {
      this.upstreamFailed(stream, rec, err, grpc);
      return;
    }
    let responded = false;
    let failed = false;
    let reqTrailers: http2.IncomingHttpHeaders | undefined;
    let respTrailers: http2.IncomingHttpHeaders | undefined;
    let headersTimer: NodeJS.Timeout | undefined;
    const fail = (err: unknown) => {
      if (failed) return;
      failed = true;
      clearTimeout(headersTimer);
      if (!up.closed) up.close(NGHTTP2_CANCEL);
      if (stream.destroyed || stream.closed) return; // the client left first: not the upstream's failure
      this.upstreamFailed(stream, rec, err, grpc);
    };
    // The response head is awaited from the end of the request (a streaming upload may be long);
    // never for gRPC, whose deadline is the client's.
    const armHeadersTimer = () => {
      if (grpc || t.upstreamResponseHeadersMs <= 0 || responded || failed) return;
      headersTimer = setTimeout(
        () => fail(new ProxyError('SM_PROXY_HEADERS_TIMEOUT', `no response head within ${t.upstreamResponseHeadersMs} ms`)),
        t.upstreamResponseHeadersMs,
      );
    };
    if (t.upstreamIdleMs > 0) {
      up.setTimeout(t.upstreamIdleMs, () => fail(new ProxyError('SM_PROXY_IDLE_TIMEOUT', `upstream idle for ${t.upstreamIdleMs} ms`)));
    }

    // request body and trailers
    if (endStream) {
      armHeadersTimer();
    } else {
      stream.on('data', (d: Buffer) => (rec.bytesIn += d.length));
      stream.once('trailers', (tr: http2.IncomingHttpHeaders) => (reqTrailers = tr));
      stream.once('end', () => {
        stream.setTimeout(0);
        armHeadersTimer();
      });
      up.once('wantTrailers', () => up.sendTrailers(cleanTrailers(reqTrailers)));
      if (t.requestBodyIdleMs > 0) {
        const onIdle = () => {
          if (failed || stream.readableEnded) return;
          // Data waiting to go upstream: the upstream is the slow side.
          if (up.writableLength > 0 || up.writableNeedDrain) {
            stream.setTimeout(t.requestBodyIdleMs, onIdle);
            return;
          }
          failed = true;
          rec.error = 'request body timeout';
          if (!up.closed) up.close(NGHTTP2_CANCEL);
          if (!stream.headersSent) this.local(stream, rec, { status: 408, body: 'request body timeout' }, grpc);
          else stream.close(NGHTTP2_CANCEL);
        };
        stream.setTimeout(t.requestBodyIdleMs, onIdle);
      }
      stream.pipe(up);
    }

    // response
    up.once('response', (h, upFlags) => {
      clearTimeout(headersTimer);
      if (failed || stream.destroyed || stream.closed) return;
      responded = true;
      rec.markUpstreamHeaders();
      const status = Number(h[':status']);
      const resp: http2.OutgoingHttpHeaders = { ':status': status };
      for (const [k, v] of Object.entries(h)) {
        if (k.startsWith(':') || HOP_BY_HOP.has(k) || v === undefined) continue;
        resp[k] = v;
      }
      rec.status = status;
      try {
        if (upFlags & NGHTTP2_FLAG_END_STREAM) {
          // Trailers-only (how gRPC reports an error without a message).
          rec.grpcStatus = grpcStatusOf(h);
          stream.respond(resp, { endStream: true });
          return;
        }
        stream.respond(resp, { waitForTrailers: true });
      } catch (err) {
        fail(err);
        return;
      }
      stream.once('wantTrailers', () => {
        rec.grpcStatus = grpcStatusOf(respTrailers) ?? grpcStatusOf(h);
        try {
          stream.sendTrailers(cleanTrailers(respTrailers));
        } catch {
          stream.close(NGHTTP2_INTERNAL_ERROR);
        }
      });
      up.on('data', (d: Buffer) => (rec.bytesOut += d.length));
      up.pipe(stream);
    });
    up.once('trailers', (tr: http2.IncomingHttpHeaders) => (respTrailers = tr));
    up.on('error', fail);
    up.once('close', () => {
      clearTimeout(headersTimer);
      if (failed) return;
      if (!responded) {
        fail(new ProxyError('SM_PROXY_UPSTREAM_RESET', `upstream closed the stream before responding (code ${up.rstCode})`));
        return;
      }
      // Reset by the upstream mid-response: the client is told the same way.
      if (up.rstCode !== undefined && up.rstCode !== NGHTTP2_NO_ERROR && !stream.closed) stream.close(up.rstCode);
    });
    stream.once('close', () => {
      clearTimeout(headersTimer);
      if (!up.closed) up.close(NGHTTP2_CANCEL);
    });
  }

  private upstreamFailed(stream: http2.ServerHttp2Stream, rec: RequestRecord, err: unknown, grpc: boolean): void {
    const f = classifyUpstreamError(err);
    rec.upstreamError = f.code;
    this.core.metrics.upstreamErrors.inc({ reason: f.reason });
    if (stream.headersSent) {
      stream.close(NGHTTP2_INTERNAL_ERROR);
      return;
    }
    this.local(stream, rec, { status: f.status, body: f.message }, grpc);
  }
}

function cleanTrailers(t: http2.IncomingHttpHeaders | undefined): http2.OutgoingHttpHeaders {
  const out: http2.OutgoingHttpHeaders = {};
  if (!t) return out;
  for (const [k, v] of Object.entries(t)) {
    if (k.startsWith(':') || HOP_BY_HOP.has(k) || v === undefined) continue;
    out[k] = v;
  }
  return out;
}

function grpcStatusOf(h: http2.IncomingHttpHeaders | undefined): number | undefined {
  const v = h?.['grpc-status'];
  if (v === undefined) return undefined;
  const n = Number(Array.isArray(v) ? v[0] : v);
  return Number.isInteger(n) ? n : undefined;
}
