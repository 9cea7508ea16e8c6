// What both protocol front ends share: per-connection state, the policy decision, and the one
// access-log line + metrics per request.
import type * as http2 from 'node:http2';
import type * as net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { ConnectionOrigin, DryRunResult, Evaluator, RequestAttributes } from '../types';
import { createProxyMetrics, type DecisionLabel, type ProxyMetrics } from './metrics';
import type { ProxyConfig } from './options';
import { hostPort, peerIp, type OriginResult } from './origin';
import { PolicyTable } from './policies';
import { Upstreams } from './upstream';

export type OriginOk = Extract<OriginResult, { ok: true }>;

/** An HTTP/1.1 request being served on a connection, as the parse-error path needs to see it. */
export interface Http1Current {
  rec: RequestRecord;
  headersSent(): boolean;
  /** The connection is being failed (parse error / timeout): write nothing more, stop the upstream. */
  kill(): void;
}

export class ConnState {
  private static nextId = 1;
  readonly id = ConnState.nextId++;
  readonly clientIp: string;
  readonly clientPort: number;
  readonly origin: Promise<OriginResult>;
  protocol?: 'http1' | 'h2';
  /** HTTP/1.1: one request served at a time; later pipelined ones wait here with the socket paused. */
  readonly h1 = {
    busy: false,
    queue: [] as (() => void)[],
    current: undefined as Http1Current | undefined,
    failed: false,
  };
  session?: http2.ServerHttp2Session;
  h2Streams = 0;
  requests = 0;

  constructor(
    readonly socket: net.Socket,
    origin: Promise<OriginResult>,
  ) {
    this.clientIp = peerIp(socket.remoteAddress ?? '');
    this.clientPort = socket.remotePort ?? 0;
    this.origin = origin;
  }

  get client(): string {
    return hostPort(this.clientIp, this.clientPort);
  }
}

/** The access-log line of one request, filled in as the request goes, written once. */
export class RequestRecord {
  /** Wall-clock start (ms); formatted only when an access-log line is written (`time`). */
  private readonly startedAt = Date.now();
  readonly started = performance.now();
  method?: string;
  path?: string;
  authority?: string;
  principal?: string;
  destination?: string;
  decision: DecisionLabel = 'rejected';
  policy?: string;
  filter?: string;
  reason?: string;
  // Shared empty lists until a decision fills them in (only read, never appended to).
  dryRun: readonly DryRunResult[] = NONE;
  logged: readonly string[] = NONE;
  unsupported: readonly string[] = NONE;
  status = 0;
  grpcStatus?: number;
  upstreamStarted?: number;
  upstreamMs?: number;
  bytesIn = 0;
  bytesOut = 0;
  upstreamError?: string;
  error?: string;
  upgraded = false;
  private observed = false;
  private done = false;

  constructor(
    private readonly core: ProxyCore,
    readonly conn: ConnState | undefined,
    readonly protocol: string,
  ) {}

  /** ISO 8601 start time of the request, as in the access log. */
  get time(): string {
    return new Date(this.startedAt).toISOString();
  }

  setOrigin(o: OriginOk): void {
    this.destination = o.destination;
    this.principal = o.origin.principal;
  }

  markUpstreamStart(): void {
    this.upstreamStarted = performance.now();
  }

  markUpstreamHeaders(): void {
    if (this.upstreamStarted !== undefined) this.upstreamMs = round(performance.now() - this.upstreamStarted);
  }

  /** Observe the duration now (an upgrade: the tunnel's lifetime is not a request latency). */
  observeDuration(): void {
    if (this.observed) return;
    this.observed = true;
    this.core.metrics.duration.observe((performance.now() - this.started) / 1000);
  }

  finish(): void {
    if (this.done) return;
    this.done = true;
    this.observeDuration();
    const m = this.core.metrics;
    m.requests.inc({ decision: this.decision, policy: this.policy ?? '', code: String(this.status) });
    const write = this.core.cfg.accessLog;
    if (!write) return;
    const line: Record<string, unknown> = {
      time: this.time,
      protocol: this.protocol,
      client: this.conn?.client,
      principal: this.principal,
      method: this.method,
      path: this.path,
      authority: this.authority,
      destination: this.destination,
      decision: this.decision,
      policy: this.policy,
      filter: this.filter,
      reason: this.reason,
      dryRun: this.dryRun.length ? this.dryRun : undefined,
      logged: this.logged.length ? this.logged : undefined,
      unsupported: this.unsupported.length ? this.unsupported : undefined,
      status: this.status,
      grpcStatus: this.grpcStatus,
      upstreamMs: this.upstreamMs,
      durationMs: round(performance.now() - this.started),
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      upgraded: this.upgraded || undefined,
      upstreamError: this.upstreamError,
      error: this.error,
    };
    try {
      write(JSON.stringify(line));
    } catch (err) {
      this.core.cfg.logger.error('access log write failed', { err });
    }
  }
}

const NONE: readonly never[] = Object.freeze([]);

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

/** What authorize() decided: forward, refuse with 403, or refuse with 503 (no policy to judge by). */
export type Verdict = 'allow' | 'deny' | 'unavailable';

export class ProxyCore {
  readonly metrics: ProxyMetrics;
  readonly upstreams: Upstreams;
  readonly conns = new Map<net.Socket, ConnState>();
  closing = false;
  /** Undefined until the first table arrives: until then every request is refused (fail closed). */
  private table: PolicyTable | undefined;
  /** Destinations already logged as "no policy" under the current table (log once, not per request). */
  private readonly unpoliced = new Set<string>();
  private loggedNoTable = false;

  constructor(
    readonly cfg: ProxyConfig,
    policies?: ReadonlyMap<string, Evaluator>,
  ) {
    this.metrics = createProxyMetrics();
    this.upstreams = new Upstreams(cfg);
    this.table = policies ? new PolicyTable(policies) : undefined;
  }

  setPolicies(map: ReadonlyMap<string, Evaluator>): void {
    this.table = new PolicyTable(map);
    this.unpoliced.clear();
    this.cfg.logger.info('policies replaced', { destinations: this.table.size });
  }

  record(conn: ConnState | undefined, protocol: string): RequestRecord {
    if (conn) conn.requests++;
    return new RequestRecord(this, conn, protocol);
  }

  /**
   * Looks the evaluator up now (not per connection), evaluates, and fills in the record. Fails
   * closed: no table yet, or no evaluator for the destination → 'unavailable' (503: the kernel
   * steered the connection here because the destination has rules, which this proxy does not hold
   * yet); a throwing evaluator → 'deny'.
   */
  authorize(attrs: RequestAttributes, origin: OriginOk, rec: RequestRecord): Verdict {
    if (!this.table) {
      rec.decision = 'no_table';
      rec.reason = 'no policy table yet';
      if (!this.loggedNoTable) {
        this.loggedNoTable = true;
        this.cfg.logger.warn('no policy table yet; requests are refused (503) until the agent pushes one', { destination: origin.destination });
      }
      return 'unavailable';
    }
    const entry = this.table.lookup(origin.origin.destinationIp, origin.origin.destinationPort);
    if (!entry) {
      rec.decision = 'no_policy';
      rec.reason = 'no policy for the destination';
      if (!this.unpoliced.has(origin.destination)) {
        this.unpoliced.add(origin.destination);
        this.cfg.logger.warn('no policy for destination; requests are refused (503)', { destination: origin.destination });
      }
      return 'unavailable';
    }
    try {
      const d = entry.evaluator.evaluate(attrs);
      rec.decision = d.allow ? 'allow' : 'deny';
      rec.filter = d.filter;
      rec.policy = d.policy;
      rec.reason = d.reason;
      rec.dryRun = d.dryRun ?? NONE;
      rec.logged = d.logged ?? NONE;
      rec.unsupported = d.unsupported ?? NONE;
      for (const r of rec.dryRun) if (r.policy !== undefined) this.metrics.dryRunMatches.inc({ policy: r.policy });
      return d.allow === true ? 'allow' : 'deny';
    } catch (err) {
      rec.decision = 'error';
      rec.reason = 'evaluator failed';
      rec.error = err instanceof Error ? err.message : String(err);
      this.cfg.logger.error('policy evaluation failed; request denied', { destination: origin.destination, key: entry.key, err });
      return 'deny';
    }
  }
}

export interface AttributeSources {
  method: string;
  path: string;
  authority: string | undefined;
  scheme: string;
  /** Forwarded fields joined for matching (headersForMatching). */
  headers: Record<string, string>;
  conn: ConnState;
  origin: ConnectionOrigin;
}

export function buildAttributes(a: AttributeSources): RequestAttributes {
  return attributesInto({ ...a.headers }, a);
}

/**
 * buildAttributes without the copy: the pseudo-headers are added to `a.headers` itself, which must
 * be a plain object the caller owns (forwardAndMatch's `matching`, built for this request).
 */
export function buildAttributesOwning(a: AttributeSources): RequestAttributes {
  return attributesInto(a.headers, a);
}

function attributesInto(headers: Record<string, string>, a: AttributeSources): RequestAttributes {
  headers[':method'] = a.method;
  headers[':path'] = a.path;
  headers[':scheme'] = a.scheme;
  if (a.authority !== undefined) {
    headers[':authority'] = a.authority;
    // Envoy keeps Host only as :authority, and a header rule on "host" matches it there; both
    // names are given so either form of rule sees the same value.
    headers.host = a.authority;
  }
  const attrs: RequestAttributes = {
    method: a.method,
    path: a.path,
    headers,
    sourceIp: a.conn.clientIp,
    sourcePort: a.conn.clientPort,
    directRemoteIp: a.conn.clientIp,
    remoteIp: a.conn.clientIp,
    destinationIp: a.origin.destinationIp,
    destinationPort: a.origin.destinationPort,
  };
  if (a.origin.principal !== undefined) attrs.principal = a.origin.principal;
  return attrs;
}
