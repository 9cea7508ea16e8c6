// Connections to original destinations: undici Pools for HTTP/1.1 (keep-alive, bounded), node:http2
// client sessions for HTTP/2 with prior knowledge (undici 6 cannot speak h2c without TLS/ALPN).
// The proxy connects to the destination the kernel recorded; for a VIP the kernel translates the
// proxy's own connect() like any other (the proxy's sockets must not be steered back to it — the
// datapath's concern).
import * as http2 from 'node:http2';
import { Pool } from 'undici';
import { ProxyError } from '../../core/errors';
import type { UpstreamErrorReason } from './metrics';
import type { ProxyConfig } from './options';

export interface UpstreamFailure {
  reason: UpstreamErrorReason;
  /** What the client is answered if the response has not started. */
  status: number;
  /** Body of that answer (grpc-message for gRPC). */
  message: string;
  /** The error's code, for the access log. */
  code: string;
}

const CONNECT_FAILED = new Set(['EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'EADDRINUSE', 'EAI_AGAIN', 'ENOTFOUND', 'EACCES', 'EPERM']);
const RESET = new Set([
  'ECONNRESET',
  'EPIPE',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_DESTROYED',
  'SM_PROXY_UPSTREAM_RESET',
  'ERR_HTTP2_STREAM_ERROR',
  'ERR_HTTP2_SESSION_ERROR',
  'ERR_HTTP2_GOAWAY_SESSION',
  'ERR_HTTP2_INVALID_SESSION',
  'ERR_HTTP2_STREAM_CANCEL',
]);

export function errorCode(err: unknown): string {
  const e = err as { code?: unknown; cause?: { code?: unknown }; name?: unknown } | undefined;
  // A stream cancelled because its session failed (e.g. could not connect) carries the session's error as cause.
  if (e?.code === 'ERR_HTTP2_STREAM_CANCEL' && typeof e.cause?.code === 'string') return e.cause.code;
  if (typeof e?.code === 'string') return e.code;
  if (typeof e?.cause?.code === 'string') return e.cause.code;
  return typeof e?.name === 'string' ? e.name : 'ERROR';
}

/** Envoy-like wording: operators grep "upstream connect error". */
export function classifyUpstreamError(err: unknown): UpstreamFailure {
  const code = errorCode(err);
  if (code === 'ECONNREFUSED') return { reason: 'connect_refused', status: 503, message: 'upstream connect error: ECONNREFUSED', code };
  if (CONNECT_FAILED.has(code)) return { reason: 'connect_failed', status: 503, message: `upstream connect error: ${code}`, code };
  if (code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'SM_PROXY_CONNECT_TIMEOUT' || code === 'ETIMEDOUT') {
    return { reason: 'connect_timeout', status: 503, message: 'upstream connect error: connect timeout', code };
  }
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'SM_PROXY_HEADERS_TIMEOUT') {
    return { reason: 'headers_timeout', status: 504, message: 'upstream request timeout', code };
  }
  if (code === 'UND_ERR_BODY_TIMEOUT' || code === 'SM_PROXY_IDLE_TIMEOUT') {
    return { reason: 'idle_timeout', status: 504, message: 'upstream idle timeout', code };
  }
  if (code === 'SM_PROXY_UPSTREAM_OVERFLOW') return { reason: 'overflow', status: 503, message: 'upstream overflow', code };
  // undici refused to write the request (a header or target it considers invalid): the request's fault.
  if (code === 'UND_ERR_INVALID_ARG' || code === 'UND_ERR_NOT_SUPPORTED') {
    return { reason: 'invalid_request', status: 400, message: `request cannot be forwarded: ${(err as Error).message}`, code };
  }
  if (RESET.has(code)) return { reason: 'reset', status: 503, message: `upstream reset before response: ${code}`, code };
  if (
    code.startsWith('HPE_') ||
    code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH' ||
    code === 'UND_ERR_HEADERS_OVERFLOW' ||
    code === 'UND_ERR_RES_EXCEEDED_MAX_SIZE' ||
    code === 'ERR_HTTP2_ERROR' ||
    code === 'ERR_HTTP2_PROTOCOL_ERROR' ||
    code === 'ERR_INVALID_CHAR' ||
    code === 'ERR_INVALID_HTTP_TOKEN'
  ) {
    return { reason: 'protocol', status: 502, message: `upstream protocol error: ${code}`, code };
  }
  return { reason: 'other', status: 503, message: `upstream error: ${code}`, code };
}

export class Upstreams {
  private readonly pools = new Map<string, Pool>();
  private readonly sessions = new Map<string, http2.ClientHttp2Session>();
  private readonly active = new WeakMap<http2.ClientHttp2Session, number>();
  private closed = false;
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly cfg: ProxyConfig) {
    // Destinations come and go with the services behind them: a pool with nothing to do for a
    // minute is closed (its keep-alive sockets have timed out by then anyway).
    this.sweeper = setInterval(() => this.sweep(), 60_000);
    this.sweeper.unref();
  }

  private sweep(): void {
    for (const [destination, pool] of this.pools) {
      const s = pool.stats;
      if (s.connected === 0 && s.pending === 0 && s.running === 0) {
        this.pools.delete(destination);
        void pool.close().catch(() => undefined);
      }
    }
  }

  /**
   * Connect from the proxy's own address of the destination's family: ports with HTTP rules take
   * connections from that address only (the route's choice could be another of the host's).
   */
  private sourceFor(destination: string): { localAddress?: string } {
    const a = this.cfg.source[destination.startsWith('[') ? 6 : 4];
    return a ? { localAddress: a } : {};
  }

  /** The HTTP/1.1 pool of a destination ("ip:port" / "[v6]:port"). */
  pool(destination: string): Pool {
    let pool = this.pools.get(destination);
    if (!pool) {
      const { timeouts, upstream } = this.cfg;
      pool = new Pool(`http://${destination}`, {
        connections: upstream.maxConnectionsPerUpstream,
        pipelining: 1,
        connect: { timeout: timeouts.upstreamConnectMs, ...this.sourceFor(destination) },
        headersTimeout: timeouts.upstreamResponseHeadersMs,
        bodyTimeout: timeouts.upstreamIdleMs,
        maxHeaderSize: upstream.maxResponseHeaderBytes,
        strictContentLength: true,
      });
      this.pools.set(destination, pool);
    }
    return pool;
  }

  /** Requests already waiting for a connection of this pool exceed maxPendingPerUpstream. */
  overflowed(pool: Pool): boolean {
    return pool.stats.pending >= this.cfg.upstream.maxPendingPerUpstream;
  }

  /**
   * A stream on the destination's HTTP/2 session, opening the session if needed. A session that
   * has received GOAWAY or closed is replaced; if `request()` throws on a cached session (closing
   * under us), one fresh session is tried.
   */
  h2Request(destination: string, headers: http2.OutgoingHttpHeaders, options: http2.ClientSessionRequestOptions): http2.ClientHttp2Stream {
    if (this.closed) throw new ProxyError('SM_PROXY_UPSTREAM_RESET', 'proxy is closing');
    for (let attempt = 0; ; attempt++) {
      const session = this.session(destination);
      try {
        const stream = session.request(headers, options);
        this.active.set(session, (this.active.get(session) ?? 0) + 1);
        stream.once('close', () => this.active.set(session, (this.active.get(session) ?? 1) - 1));
        return stream;
      } catch (err) {
        this.forget(destination, session);
        session.destroy();
        if (attempt >= 1) throw err;
      }
    }
  }

  private session(destination: string): http2.ClientHttp2Session {
    const cached = this.sessions.get(destination);
    if (cached && !cached.closed && !cached.destroyed) return cached;
    const { timeouts } = this.cfg;
    const session = http2.connect(`http://${destination}`, {
      settings: { enablePush: false },
      maxSessionMemory: 32,
      ...this.sourceFor(destination),
    });
    const timer = setTimeout(
      () => session.destroy(new ProxyError('SM_PROXY_CONNECT_TIMEOUT', `no connection to ${destination} within ${timeouts.upstreamConnectMs} ms`)),
      timeouts.upstreamConnectMs,
    );
    session.once('connect', () => clearTimeout(timer));
    session.once('close', () => {
      clearTimeout(timer);
      this.forget(destination, session);
    });
    session.once('goaway', () => this.forget(destination, session));
    // Errors reach the streams of the session; the listener only keeps them from being thrown.
    session.on('error', () => {});
    session.setTimeout(timeouts.keepAliveMs, () => {
      if ((this.active.get(session) ?? 0) === 0) session.close();
    });
    this.sessions.set(destination, session);
    return session;
  }

  private forget(destination: string, session: http2.ClientHttp2Session): void {
    if (this.sessions.get(destination) === session) this.sessions.delete(destination);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweeper);
    const pools = [...this.pools.values()];
    this.pools.clear();
    for (const s of this.sessions.values()) s.destroy();
    this.sessions.clear();
    await Promise.all(pools.map((p) => p.destroy().catch(() => undefined)));
  }
}
