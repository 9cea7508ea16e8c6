// Options of the L7 proxy server, their defaults, and the resolved configuration the parts share.
import * as net from 'node:net';
import type { ConnectionOrigin, Evaluator } from '../types';

/** Same shape as core/log.ts `Logger`, so `createLogger({ component: 'proxy' })` can be passed as is
 *  (declared here so that proxy/ does not depend on the agent). */
export interface ProxyLogger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

/**
 * The datapath's record of an accepted connection. The real one reads a kernel map keyed by the
 * client's ip:port (which the kernel preserved). `undefined` means the kernel did not steer this
 * connection here, and the proxy refuses it. May be async; an `undefined` answer is retried
 * (`originLookupAttempts`, `originLookupRetryMs`) because the entry can be written a moment after accept.
 */
export type OriginLookup = (
  socket: net.Socket,
) => ConnectionOrigin | undefined | Promise<ConnectionOrigin | undefined>;

export interface ProxyLimits {
  /** Request header fields (not counting pseudo-headers); more → 431. */
  maxHeaders: number;
  /** Total size of the request head (HTTP/1.1: request line + fields, Node's maxHeaderSize; HTTP/2: SETTINGS_MAX_HEADER_LIST_SIZE). */
  maxHeaderBytes: number;
  /** HTTP/1.1 requests parsed ahead of the one being served on a connection; beyond → 503 and close. */
  maxPipelinedRequests: number;
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS offered to clients. */
  h2MaxConcurrentStreams: number;
}

export interface ProxyTimeouts {
  /** From accept (or the first byte of a request) until its head is complete; → 408 and close. */
  headersMs: number;
  /** Longest silence from the client while the proxy is ready for more request body; → 408 and close. */
  requestBodyIdleMs: number;
  /** Idle keep-alive HTTP/1.1 connection / HTTP/2 session with no open stream → closed. */
  keepAliveMs: number;
  /** Whole-request limit (headers + body), Node's requestTimeout; 0 = none (streaming uploads are bounded by requestBodyIdleMs instead). */
  requestMs: number;
  /** TCP connect to the original destination; → 503. */
  upstreamConnectMs: number;
  /** From the request sent (last body byte written) to the response head; → 504. Not applied to gRPC (its deadline is end to end). 0 = none. */
  upstreamResponseHeadersMs: number;
  /** Upstream silence while a response body or tunnel is open; → 504 before the response head, reset after. */
  upstreamIdleMs: number;
  /** close(): how long in-flight requests may finish before their connections are destroyed. */
  shutdownGraceMs: number;
}

export interface UpstreamLimits {
  /** HTTP/1.1 connections per original destination (undici Pool `connections`). */
  maxConnectionsPerUpstream: number;
  /** Requests waiting for one of those connections; beyond → 503 "upstream overflow". */
  maxPendingPerUpstream: number;
  /** Largest upstream response head accepted; beyond → 502. */
  maxResponseHeaderBytes: number;
}

export interface L7ProxyOptions {
  lookupOrigin: OriginLookup;
  /** Attempts while the lookup answers undefined (default 3), this far apart (default 5 ms). */
  originLookupAttempts?: number;
  originLookupRetryMs?: number;
  /** One attempt that has not answered by then fails: the connection is refused (default 1000 ms). */
  originLookupTimeoutMs?: number;
  /** Initial policies; see `setPolicies`. */
  policies?: ReadonlyMap<string, Evaluator>;
  /** One JSON line per request (no trailing newline). Default: none. */
  accessLog?: (line: string) => void;
  logger?: ProxyLogger;
  limits?: Partial<ProxyLimits>;
  timeouts?: Partial<ProxyTimeouts>;
  upstream?: Partial<UpstreamLimits>;
  /** Upgrade tokens passed through after an allow decision (case-insensitive). Default ["websocket"]. */
  upgradeProtocols?: string[];
  /** RFC 3986 normalisation of the path before the policy sees it and the upstream receives it. Default true. */
  normalizePath?: boolean;
  /** Also collapse "//" into "/" (Istio's MERGE_SLASHES). Default false. */
  mergeSlashes?: boolean;
  /**
   * Addresses upstream connects are made from, at most one per family: the proxy's own (its
   * listen addresses), which ports with HTTP rules accept connections from (SM_EP_F_PROXY). Without
   * one for a family the kernel picks the source by route. Default none.
   */
  sourceAddresses?: string[];
}

export interface ProxyConfig {
  lookupOrigin: OriginLookup;
  originLookupAttempts: number;
  originLookupRetryMs: number;
  originLookupTimeoutMs: number;
  accessLog?: (line: string) => void;
  logger: ProxyLogger;
  limits: ProxyLimits;
  timeouts: ProxyTimeouts;
  upstream: UpstreamLimits;
  upgradeProtocols: ReadonlySet<string>;
  normalizePath: boolean;
  mergeSlashes: boolean;
  /** Source address of upstream connects per family (4, 6), when given. */
  source: { 4?: string; 6?: string };
}

export const DEFAULT_LIMITS: ProxyLimits = {
  maxHeaders: 100,
  maxHeaderBytes: 16 * 1024,
  maxPipelinedRequests: 32,
  h2MaxConcurrentStreams: 100,
};

export const DEFAULT_TIMEOUTS: ProxyTimeouts = {
  headersMs: 10_000,
  requestBodyIdleMs: 30_000,
  keepAliveMs: 60_000,
  requestMs: 0,
  upstreamConnectMs: 5_000,
  upstreamResponseHeadersMs: 30_000,
  upstreamIdleMs: 300_000,
  shutdownGraceMs: 5_000,
};

export const DEFAULT_UPSTREAM: UpstreamLimits = {
  maxConnectionsPerUpstream: 128,
  maxPendingPerUpstream: 1024,
  maxResponseHeaderBytes: 64 * 1024,
};

const silent: ProxyLogger = { debug() {}, info() {}, warn() {}, error() {} };

export function resolveConfig(opts: L7ProxyOptions): ProxyConfig {
  if (typeof opts.lookupOrigin !== 'function') throw new TypeError('createL7Proxy: lookupOrigin is required');
  const limits = { ...DEFAULT_LIMITS, ...defined(opts.limits) };
  const timeouts = { ...DEFAULT_TIMEOUTS, ...defined(opts.timeouts) };
  const upstream = { ...DEFAULT_UPSTREAM, ...defined(opts.upstream) };
  for (const [k, v] of Object.entries({ ...limits, ...timeouts, ...upstream })) {
    if (!Number.isInteger(v) || v < 0) throw new TypeError(`createL7Proxy: ${k} must be a non-negative integer, got ${v}`);
  }
  if (timeouts.headersMs <= 0) throw new TypeError('createL7Proxy: headersMs must be positive');
  if (timeouts.requestMs > 0 && timeouts.requestMs < timeouts.headersMs) {
    throw new TypeError('createL7Proxy: requestMs must be 0 or >= headersMs');
  }
  return {
    lookupOrigin: opts.lookupOrigin,
    originLookupAttempts: Math.max(1, opts.originLookupAttempts ?? 3),
    originLookupRetryMs: Math.max(0, opts.originLookupRetryMs ?? 5),
    originLookupTimeoutMs: Math.max(1, opts.originLookupTimeoutMs ?? 1000),
    accessLog: opts.accessLog,
    logger: opts.logger ?? silent,
    limits,
    timeouts,
    upstream,
    upgradeProtocols: new Set((opts.upgradeProtocols ?? ['websocket']).map((p) => p.toLowerCase())),
    source: sourcesByFamily(opts.sourceAddresses ?? []),
    normalizePath: opts.normalizePath ?? true,
    mergeSlashes: opts.mergeSlashes ?? false,
  };
}

function defined<T extends object>(o: T | undefined): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(o ?? {})) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}

function sourcesByFamily(addrs: string[]): { 4?: string; 6?: string } {
  const out: { 4?: string; 6?: string } = {};
  for (const a of addrs) {
    const fam = net.isIPv4(a) ? 4 : net.isIPv6(a) ? 6 : 0;
    if (!fam) throw new TypeError(`createL7Proxy: source address ${JSON.stringify(a)} is not an IP address`);
    if (out[fam]) throw new TypeError(`createL7Proxy: more than one IPv${fam} source address`);
    out[fam] = a;
  }
  return out;
}
