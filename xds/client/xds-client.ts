// The ADS client: one aggregated stream (State of the World or Delta) to an xDS server over
// @grpc/grpc-js, carrying the six resource types of xds/types.ts.
//
// Per response: decode (bytes → proto3 JSON) → validate (structure, then the caller's validate
// callback, which the translation layer supplies) → compare with what is held (unchanged bytes
// cost nothing) → apply → ACK. A response with any invalid resource is rejected whole — NACK with
// version_info = the last accepted version, response_nonce = its nonce and an error_detail
// (google.rpc.Status INVALID_ARGUMENT) naming each bad resource and why — and everything held
// stays as it was, as the xDS protocol asks ("ACK/NACK and resource type instance version").
//
// Subscriptions: what the caller watches, plus the EDS names the accepted clusters need and the
// RDS names the accepted listeners need. The 'snapshot' event is make-before-break, ordered
// CDS → EDS → LDS → RDS: the Envoy part of a snapshot only moves forward when CDS has arrived and
// every ClusterLoadAssignment it needs has arrived (or timed out: resourceTimeoutMs, then a
// "resource does not exist" warning naming it), and likewise LDS and its routes. The ambient
// types (WDS Address, Authorization) are independent and show up at once.
//
// Wildcard subscriptions are sent as an explicit `*` (not the legacy empty list), in both modes,
// so that unwatching a wildcard is expressible: an empty SotW list then means "nothing".
//
// While disconnected, everything held stays in force; reconnects use full-jitter exponential
// backoff, reset once a stream has lived resetAfterMs and received a response. A Delta client
// re-subscribes with initial_resource_versions so the server sends only what changed meanwhile.
// TLS files and the bearer token file are re-read on every connect (rotation needs no restart).

import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { createLogger, type Logger } from '../../core/log';
import { ALL_TYPES, TYPE, type Json, type TypeUrl, type XdsResource } from '../types';
import {
  adsServiceDefinition,
  CODE_INVALID_ARGUMENT,
  DELTA_METHOD,
  SOTW_METHOD,
  type AnyMsg,
  type DeltaDiscoveryRequestMsg,
  type DeltaDiscoveryResponseMsg,
  type DiscoveryRequestMsg,
  type DiscoveryResponseMsg,
} from '../proto/ads';
import { XdsError } from '../../core/errors';
import { decodeMessage, fromProto3Json, toProto3Json, unknownFields } from '../proto/json';
import { FULL_STATE_TYPES, SHORT_NAME, isTypeUrl, resourceName } from '../proto/resource-types';
import { Backoff } from './backoff';
import { edsNameOfCluster, rdsNamesOfListener } from './dependencies';
import { nodeToJson, type NodeIdentity } from './node-id';

export type XdsMode = 'sotw' | 'delta';

export interface XdsClientOptions {
  /** `host:port` or `[v6]:port` of the xDS server. */
  server: string;
  mode: XdsMode;
  node: NodeIdentity;
  /** TLS from PEM files (re-read on each connect); without it the channel is plaintext. */
  tls?: { caFile: string; certFile?: string; keyFile?: string; serverNameOverride?: string };
  /** A file holding a bearer token, sent as `authorization: Bearer ...` on each stream. */
  tokenFile?: string;
  /** How long a subscribed resource (or a wildcard type's first response) may take. Default 15000. */
  resourceTimeoutMs?: number;
  backoff?: { initialMs?: number; maxMs?: number; resetAfterMs?: number; random?: () => number };
  /** Extra validation of each decoded resource: return a reason to reject it, or null. */
  validate?: (typeUrl: TypeUrl, name: string, json: Json) => string | null;
  /** Subscriptions to start with, as if watch() were called right after construction. */
  watch?: Partial<Record<TypeUrl, readonly string[] | '*'>>;
  /** Connect on the next tick (default true); false waits for start(). */
  autoStart?: boolean;
  log?: Logger;
}

export interface XdsUpdate {
  typeUrl: TypeUrl;
  added: XdsResource[];
  updated: XdsResource[];
  removed: string[];
}

export interface XdsSnapshot {
  /** Increments with every snapshot event. */
  seq: number;
  /** Every held resource by type, sorted by name (Envoy types as of the last consistent point). */
  resources: Record<TypeUrl, XdsResource[]>;
  /** Subscribed types that have not arrived yet (nor timed out). */
  waiting: TypeUrl[];
}

export interface XdsNack {
  typeUrl: TypeUrl;
  nonce: string;
  /** The error_detail message sent. */
  detail: string;
  errors: Array<{ name: string; reason: string }>;
}

export interface XdsTypeState {
  connected: boolean;
  /** Version of the last accepted response ('' before the first). */
  lastAckVersion: string;
  lastNack?: XdsNack & { at: Date };
  resources: number;
  /** Current subscription, `*` first when wildcard. */
  subscribed: string[];
  /** A response of this type has been accepted (or the wait timed out). */
  received: boolean;
  /** Names that timed out ("resource does not exist"). */
  missing: string[];
}

export interface XdsClientEvents {
  connected: [{ server: string }];
  disconnected: [{ reason: string; code?: number }];
  update: [XdsUpdate];
  snapshot: [XdsSnapshot];
  nack: [XdsNack];
  ack: [{ typeUrl: TypeUrl; nonce: string; version: string }];
  missing: [{ typeUrl: TypeUrl; name: string }];
}

const RESOURCE_WRAPPER = 'type.googleapis.com/envoy.service.discovery.v3.Resource';
const ENVOY_TYPES: readonly TypeUrl[] = [TYPE.CLUSTER, TYPE.ENDPOINT, TYPE.LISTENER, TYPE.ROUTE];
/** Make-before-break order of requests on a new stream; the ambient types follow. */
const REQUEST_ORDER: readonly TypeUrl[] = [TYPE.CLUSTER, TYPE.ENDPOINT, TYPE.LISTENER, TYPE.ROUTE, TYPE.ADDRESS, TYPE.AUTHORIZATION];
const CLIENT_VERSION = '0.1.0';
/** A "does not exist" timer this late (ms) ran after a blocked event loop: grant TIMER_GRACE_MS. */
const TIMER_LATE_MS = 1000;
const TIMER_GRACE_MS = 2000;

interface Held extends XdsResource {
  hash: string;
}

interface TypeState {
  typeUrl: TypeUrl;
  userWildcard: boolean;
  userNames: Set<string>;
  resources: Map<string, Held>;
  lastAckVersion: string;
  lastNack?: XdsNack & { at: Date };
  received: boolean;
  typeTimedOut: boolean;
  missing: Set<string>;
  /** Requested names not held yet -> when they are given up ("does not exist"), ms since epoch. */
  deadlines: Map<string, number>;
  /** One timer per type expires every name whose deadline passed (see expire()). */
  expiryTimer?: NodeJS.Timeout;
  typeTimer?: NodeJS.Timeout;
  // Per stream:
  lastNonce: string;
  /** What this stream was last told (undefined: nothing yet on this stream). */
  sent?: { wildcard: boolean; names: Set<string> };
}

interface Candidate {
  name: string;
  json: Json;
  hash: string;
  version: string;
}

function hashOf(typeUrl: string, value: Uint8Array): string {
  return createHash('sha256').update(typeUrl).update('\0').update(value).digest('hex').slice(0, 16);
}

/** The name of a resource whose JSON conversion failed, read from the raw message if possible. */
function rawName(typeUrl: TypeUrl, value: Uint8Array): string | undefined {
  try {
    const m = decodeMessage(typeUrl, value) as unknown as Record<string, Record<string, unknown> & { uid?: string }>;
    const s = (v: unknown) => (typeof v === 'string' && v ? v : undefined);
    switch (typeUrl) {
      case TYPE.ENDPOINT:
        return s(m.cluster_name);
      case TYPE.ADDRESS:
        return s(m.workload?.uid) ?? (m.service ? `${s(m.service.namespace) ?? ''}/${s(m.service.hostname) ?? ''}` : undefined);
      case TYPE.AUTHORIZATION:
        return s(m.name) ? `${s(m.namespace) ?? ''}/${s(m.name)}` : undefined;
      default:
        return s(m.name);
    }
  } catch {
    return undefined;
  }
}

export class XdsClient extends EventEmitter<XdsClientEvents> {
  readonly mode: XdsMode;
  private readonly opts: XdsClientOptions;
  private readonly log: Logger;
  private readonly resourceTimeoutMs: number;
  private readonly resetAfterMs: number;
  private readonly backoff: Backoff;
  private readonly types = new Map<TypeUrl, TypeState>();
  private readonly nodeJson: Json;

  private channel: grpc.Client | undefined;
  private stream: grpc.ClientDuplexStream<unknown, unknown> | undefined;
  private streamStartedAt = 0;
  private streamGotResponse = false;
  private failuresInARow = 0;
  private nodeSent = false;
  private connected = false;
  private started = false;
  private closed = false;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private snapshotSeq = 0;
  private lastSnap: XdsSnapshot | undefined;
  /** Envoy resources as of the last consistent point (what 'snapshot' reports for them). */
  private consistentEnvoy: Map<TypeUrl, Held[]> = new Map();

  constructor(opts: XdsClientOptions) {
    super();
    this.opts = opts;
    this.mode = opts.mode;
    this.log = opts.log ?? createLogger({ component: 'xds-client' });
    this.resourceTimeoutMs = opts.resourceTimeoutMs ?? 15_000;
    this.resetAfterMs = opts.backoff?.resetAfterMs ?? 5_000;
    this.backoff = new Backoff(opts.backoff ?? {});
    this.nodeJson = nodeToJson(opts.node, CLIENT_VERSION);
    fromProto3Json('envoy.config.core.v3.Node', this.nodeJson); // fail now on a node that cannot be encoded
    for (const t of ALL_TYPES) {
      this.types.set(t, {
        typeUrl: t,
        userWildcard: false,
        userNames: new Set(),
        resources: new Map(),
        lastAckVersion: '',
        received: false,
        typeTimedOut: false,
        missing: new Set(),
        deadlines: new Map(),
        lastNonce: '',
      });
    }
    for (const [t, names] of Object.entries(opts.watch ?? {})) this.watch(t as TypeUrl, names as readonly string[] | '*');
    if (opts.autoStart !== false) setImmediate(() => this.start());
  }

  /** Connects (idempotent; called on the next tick after construction unless autoStart is false). */
  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    this.connect();
  }

  /** Subscribes to names of a type, or to all of it with '*'. */
  watch(typeUrl: TypeUrl, names: readonly string[] | '*'): void {
    const st = this.st(typeUrl);
    if (names === '*') st.userWildcard = true;
    else for (const n of names) st.userNames.add(n);
    this.subscriptionChanged(typeUrl);
  }

  /** Drops names (or the wildcard, with '*'); resources no longer subscribed are removed. */
  unwatch(typeUrl: TypeUrl, names: readonly string[] | '*'): void {
    const st = this.st(typeUrl);
    if (names === '*') st.userWildcard = false;
    else for (const n of names) st.userNames.delete(n);
    this.subscriptionChanged(typeUrl);
  }

  /** Held resources of a type. */
  resources(typeUrl: TypeUrl): XdsResource[] {
    return [...this.st(typeUrl).resources.values()].map(strip).sort(byName);
  }

  get(typeUrl: TypeUrl, name: string): XdsResource | undefined {
    const r = this.st(typeUrl).resources.get(name);
    return r ? strip(r) : undefined;
  }

  state(): Record<TypeUrl, XdsTypeState> {
    const out = {} as Record<TypeUrl, XdsTypeState>;
    for (const [t, st] of this.types) {
      const d = this.desired(st);
      out[t] = {
        connected: this.connected,
        lastAckVersion: st.lastAckVersion,
        resources: st.resources.size,
        subscribed: [...(d.wildcard ? ['*'] : []), ...[...d.names].sort()],
        received: st.received || st.typeTimedOut,
        missing: [...st.missing].sort(),
        ...(st.lastNack ? { lastNack: st.lastNack } : {}),
      };
    }
    return out;
  }

  /** The last 'snapshot' event's payload, if one was emitted. */
  lastSnapshot(): XdsSnapshot | undefined {
    return this.lastSnap;
  }

  isConnected(): boolean {
    return this.connected;
  }

  /** Closes the stream and the channel; no more events. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.clearTimers();
    const s = this.stream;
    this.stream = undefined;
    if (s) s.cancel();
    this.channel?.close();
    this.channel = undefined;
    if (this.connected) {
      this.connected = false;
      this.emit('disconnected', { reason: 'closed' });
    }
    this.removeAllListeners();
  }

  // -------------------------------------------------------------------------------------------
  // Connection

  private credentials(): grpc.ChannelCredentials {
    const tls = this.opts.tls;
    if (!tls) return grpc.credentials.createInsecure();
    return grpc.credentials.createSsl(
      readFileSync(tls.caFile),
      tls.keyFile ? readFileSync(tls.keyFile) : null,
      tls.certFile ? readFileSync(tls.certFile) : null,
    );
  }

  private connect(): void {
    this.reconnectTimer = undefined;
    if (this.closed) return;
    let stream: grpc.ClientDuplexStream<unknown, unknown>;
    try {
      const channelOptions: grpc.ChannelOptions = {
        'grpc.keepalive_time_ms': 30_000,
        'grpc.keepalive_timeout_ms': 10_000,
        'grpc.max_receive_message_length': 256 * 1024 * 1024,
      };
      if (this.opts.tls?.serverNameOverride) channelOptions['grpc.ssl_target_name_override'] = this.opts.tls.serverNameOverride;
      this.channel = new grpc.Client(this.opts.server, this.credentials(), channelOptions);
      const md = new grpc.Metadata();
      if (this.opts.tokenFile) md.set('authorization', `Bearer ${readFileSync(this.opts.tokenFile, 'utf8').trim()}`);
      const def = adsServiceDefinition()[this.mode === 'sotw' ? 'StreamAggregatedResources' : 'DeltaAggregatedResources'];
      stream = this.channel.makeBidiStreamRequest(
        this.mode === 'sotw' ? SOTW_METHOD : DELTA_METHOD,
        def.requestSerialize as (v: unknown) => Buffer,
        def.responseDeserialize as (b: Buffer) => unknown,
        md,
        {},
      );
    } catch (e) {
      this.log.warn('xds: cannot open a stream', { server: this.opts.server, error: e as Error });
      this.channel?.close();
      this.channel = undefined;
      this.scheduleReconnect();
      return;
    }
    this.stream = stream;
    this.streamStartedAt = Date.now();
    this.streamGotResponse = false;
    this.nodeSent = false;
    for (const st of this.types.values()) {
      st.lastNonce = '';
      st.sent = undefined;
    }
    stream.on('metadata', () => {
      if (this.stream === stream) this.markConnected();
    });
    stream.on('data', (msg: unknown) => {
      if (this.stream !== stream) return;
      this.markConnected();
      this.streamGotResponse = true;
      try {
        if (this.mode === 'sotw') this.onSotwResponse(msg as DiscoveryResponseMsg);
        else this.onDeltaResponse(msg as DeltaDiscoveryResponseMsg);
      } catch (e) {
        this.log.error('xds: response handling failed', { error: e as Error });
      }
    });
    stream.on('error', () => undefined); // the 'status' event below carries the outcome
    stream.on('status', (s: grpc.StatusObject) => {
      if (this.stream === stream) this.onStreamEnd(s);
    });
    for (const t of REQUEST_ORDER) this.sendSubscription(t);
  }

  private markConnected(): void {
    if (this.connected) return;
    this.connected = true;
    this.failuresInARow = 0;
    this.log.info('xds: connected', { server: this.opts.server, mode: this.mode });
    this.emit('connected', { server: this.opts.server });
  }

  private onStreamEnd(s: grpc.StatusObject): void {
    const lived = Date.now() - this.streamStartedAt;
    this.stream = undefined;
    this.channel?.close();
    this.channel = undefined;
    this.clearTimers();
    const reason = `${grpc.status[s.code] ?? s.code}: ${s.details || 'stream closed'}`;
    if (this.connected) {
      this.connected = false;
      this.log.warn('xds: disconnected; the last good config stays in force', { server: this.opts.server, reason });
      this.emit('disconnected', { reason, code: s.code });
    } else {
      // Loud on the first failure in a row and every tenth after, quiet in between.
      this.failuresInARow++;
      const level = this.failuresInARow === 1 || this.failuresInARow % 10 === 0 ? 'warn' : 'debug';
      this.log[level]('xds: cannot reach the xDS server; retrying', { server: this.opts.server, reason, attempts: this.failuresInARow });
    }
    if (lived >= this.resetAfterMs && this.streamGotResponse) this.backoff.reset();
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.closed) return;
    const delay = this.backoff.next();
    this.log.debug('xds: reconnecting', { inMs: delay, attempt: this.backoff.attempts });
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  private clearTimers(): void {
    for (const st of this.types.values()) {
      st.deadlines.clear();
      if (st.expiryTimer) clearTimeout(st.expiryTimer);
      st.expiryTimer = undefined;
      if (st.typeTimer) clearTimeout(st.typeTimer);
      st.typeTimer = undefined;
    }
  }

  private write(msg: DiscoveryRequestMsg | DeltaDiscoveryRequestMsg): void {
    if (!this.stream) return;
    if (!this.nodeSent) {
      msg.node = fromProto3Json('envoy.config.core.v3.Node', this.nodeJson);
      this.nodeSent = true;
    }
    this.stream.write(msg);
  }

  // -------------------------------------------------------------------------------------------
  // Subscriptions

  private st(typeUrl: TypeUrl): TypeState {
    const st = this.types.get(typeUrl);
    if (!st) throw new XdsError('SM_XDS_UNKNOWN_TYPE', `unknown xDS type ${typeUrl}`);
    return st;
  }

  /** Names the accepted resources of other types need (EDS from CDS, RDS from LDS). */
  private derivedNames(typeUrl: TypeUrl): Set<string> {
    const out = new Set<string>();
    if (typeUrl === TYPE.ENDPOINT) {
      for (const c of this.st(TYPE.CLUSTER).resources.values()) {
        const n = edsNameOfCluster(c.json);
        if (n) out.add(n);
      }
    } else if (typeUrl === TYPE.ROUTE) {
      for (const l of this.st(TYPE.LISTENER).resources.values()) for (const n of rdsNamesOfListener(l.json)) out.add(n);
    }
    return out;
  }

  private desired(st: TypeState): { wildcard: boolean; names: Set<string> } {
    const names = new Set([...st.userNames, ...this.derivedNames(st.typeUrl)]);
    return { wildcard: st.userWildcard, names };
  }

  private wants(d: { wildcard: boolean; names: Set<string> }, name: string): boolean {
    return d.wildcard || d.names.has(name);
  }

  /** Drops held resources no longer subscribed, tells the server, re-evaluates the snapshot. */
  private subscriptionChanged(typeUrl: TypeUrl): void {
    const removed = this.dropUnwanted(typeUrl);
    this.sendSubscription(typeUrl);
    if (removed.length) this.emit('update', { typeUrl, added: [], updated: [], removed });
    this.maybeEmitSnapshot();
  }

  /** Sends what the stream must know about the subscription of a type (nothing if unchanged). */
  private sendSubscription(typeUrl: TypeUrl): void {
    if (!this.stream) return;
    const st = this.st(typeUrl);
    const d = this.desired(st);
    const active = d.wildcard || d.names.size > 0;
    if (!st.sent && !active) return;
    if (st.sent && st.sent.wildcard === d.wildcard && sameSet(st.sent.names, d.names)) return;
    const nameList = [...d.names].sort();
    if (this.mode === 'sotw') {
      this.write({
        version_info: st.lastAckVersion,
        resource_names: d.wildcard ? ['*', ...nameList] : nameList,
        type_url: typeUrl,
        response_nonce: st.lastNonce,
      });
    } else if (!st.sent) {
      const initial: Record<string, string> = {};
      for (const r of st.resources.values()) if (this.wants(d, r.name)) initial[r.name] = r.version;
      this.write({
        type_url: typeUrl,
        resource_names_subscribe: d.wildcard ? ['*', ...nameList] : nameList,
        initial_resource_versions: initial,
      });
    } else {
      const sub = nameList.filter((n) => !st.sent?.names.has(n));
      const unsub = [...st.sent.names].filter((n) => !d.names.has(n)).sort();
      if (d.wildcard && !st.sent.wildcard) sub.unshift('*');
      if (!d.wildcard && st.sent.wildcard) unsub.unshift('*');
      this.write({ type_url: typeUrl, resource_names_subscribe: sub, resource_names_unsubscribe: unsub });
    }
    st.sent = { wildcard: d.wildcard, names: new Set(d.names) };
    this.armTimers(st, d);
  }

  /** Starts "does not exist" timers for requested names not held, and the first-response timer. */
  private armTimers(st: TypeState, d: { wildcard: boolean; names: Set<string> }): void {
    const deadline = Date.now() + this.resourceTimeoutMs;
    for (const name of d.names) {
      if (st.resources.has(name) || st.missing.has(name) || st.deadlines.has(name)) continue;
      st.deadlines.set(name, deadline);
    }
    this.scheduleExpiry(st);
    if (d.wildcard && !st.received && !st.typeTimedOut && !st.typeTimer) {
      const due = Date.now() + this.resourceTimeoutMs;
      const fire = (): void => {
        st.typeTimer = undefined;
        if (st.received) return;
        if (Date.now() - due > TIMER_LATE_MS) {
          // The event loop was busy (decoding a large response): the answer may be read next.
          st.typeTimer = setTimeout(fire, TIMER_GRACE_MS);
          return;
        }
        st.typeTimedOut = true;
        this.log.warn('xds: no response for a subscribed type', { type: SHORT_NAME[st.typeUrl], waitedMs: this.resourceTimeoutMs });
        this.maybeEmitSnapshot();
      };
      st.typeTimer = setTimeout(fire, this.resourceTimeoutMs);
    }
  }

  /** (Re)arms the type's single expiry timer for the earliest pending deadline. */
  private scheduleExpiry(st: TypeState): void {
    if (st.expiryTimer || !st.deadlines.size) return;
    let next = Infinity;
    for (const t of st.deadlines.values()) if (t < next) next = t;
    st.expiryTimer = setTimeout(() => this.expire(st, next), Math.max(0, next - Date.now()));
  }

  /**
   * Gives up every requested name whose deadline passed, in one batch with one snapshot: with
   * thousands of clusters, a timer and a snapshot rebuild per name kept the agent busy for
   * minutes while the EDS response that would have answered them sat unread. A timer that fires
   * late means the event loop was blocked (typically decoding another type's large response);
   * the awaited response may be waiting in the socket, so it gets a short grace first.
   */
  private expire(st: TypeState, due: number): void {
    st.expiryTimer = undefined;
    const now = Date.now();
    if (now - due > TIMER_LATE_MS) {
      st.expiryTimer = setTimeout(() => this.expire(st, Date.now() + TIMER_GRACE_MS), TIMER_GRACE_MS);
      return;
    }
    const gone: string[] = [];
    for (const [name, deadline] of st.deadlines) {
      if (deadline > now) continue;
      st.deadlines.delete(name);
      if (st.resources.has(name)) continue;
      st.missing.add(name);
      gone.push(name);
    }
    if (gone.length) {
      this.log.warn('xds: resource does not exist', {
        type: SHORT_NAME[st.typeUrl],
        ...(gone.length === 1 ? { name: gone[0] } : { count: gone.length, names: gone.slice(0, 10) }),
        waitedMs: this.resourceTimeoutMs,
      });
      for (const name of gone) this.emit('missing', { typeUrl: st.typeUrl, name });
      this.maybeEmitSnapshot();
    }
    this.scheduleExpiry(st);
  }

  // -------------------------------------------------------------------------------------------
  // Responses

  /** Decodes and checks one resource; returns an error reason or the candidate. */
  private check(typeUrl: TypeUrl, any: AnyMsg | null | undefined, nameHint: string | undefined, version: string, where: string, heldByHash: Map<string, Held>):
    | { ok: true; c: Candidate }
    | { ok: false; name: string; reason: string } {
    if (!any || !any.type_url) return { ok: false, name: nameHint ?? where, reason: 'resource is empty' };
    if (any.type_url !== typeUrl) {
      return { ok: false, name: nameHint ?? where, reason: `type_url ${any.type_url} in a ${SHORT_NAME[typeUrl]} response (expected ${typeUrl})` };
    }
    const value = any.value ?? new Uint8Array(0);
    const hash = hashOf(any.type_url, value);
    const st = this.st(typeUrl);
    // Unchanged bytes: no decode, no validation, no update (SotW re-sends every resource).
    const same = nameHint ? st.resources.get(nameHint) : heldByHash.get(hash);
    if (same && same.hash === hash) return { ok: true, c: { name: same.name, json: same.json, hash, version } };
    let json: Json;
    try {
      json = toProto3Json(typeUrl, value);
    } catch (e) {
      return { ok: false, name: nameHint ?? rawName(typeUrl, value) ?? where, reason: `cannot decode: ${(e as Error).message}` };
    }
    const name = nameHint ?? resourceName(typeUrl, json);
    if (!name) return { ok: false, name: where, reason: 'resource has no name' };
    if (typeUrl === TYPE.AUTHORIZATION) {
      // A policy field this build does not know would be dropped by the decoder, silently widening
      // or narrowing the policy: refuse the resource instead (fail closed).
      const unknown = unknownFields(typeUrl, value);
      if (unknown.length) {
        return {
          ok: false,
          name,
          reason:
            `carries fields this sockmesh build does not know (${unknown.join(', ')}), e.g. service-account ` +
            `matches or dry-run of a newer Istio; refused rather than enforced without them`,
        };
      }
    }
    const held = st.resources.get(name);
    if (held && held.hash === hash) return { ok: true, c: { name, json: held.json, hash, version } };
    if (this.opts.validate) {
      let reason: string | null;
      try {
        reason = this.opts.validate(typeUrl, name, json);
      } catch (e) {
        reason = `validation failed: ${(e as Error).message}`;
      }
      if (reason) return { ok: false, name, reason };
    }
    return { ok: true, c: { name, json, hash, version } };
  }

  /** Common to both variants: the type's state with the nonce recorded, and what is held by hash. */
  private beginResponse(typeUrl: string, nonce: string) {
    if (!isTypeUrl(typeUrl)) {
      this.log.warn('xds: response of an unsupported type ignored', { typeUrl });
      return null;
    }
    const st = this.st(typeUrl);
    st.lastNonce = nonce;
    const heldByHash = new Map([...st.resources.values()].map((r) => [r.hash, r]));
    return { typeUrl, nonce, st, heldByHash };
  }

  private onSotwResponse(res: DiscoveryResponseMsg): void {
    const begun = this.beginResponse(res.type_url ?? '', res.nonce ?? '');
    if (!begun) return;
    const { typeUrl, nonce, st, heldByHash } = begun;
    const version = res.version_info ?? '';
    const errors: Array<{ name: string; reason: string }> = [];
    const accepted = new Map<string, Candidate>();
    (res.resources ?? []).forEach((any, i) => {
      let inner: AnyMsg | null | undefined = any;
      let hint: string | undefined;
      if (any.type_url === RESOURCE_WRAPPER) {
        try {
          const w = decodeMessage('envoy.service.discovery.v3.Resource', any.value) as unknown as { name?: string; resource?: AnyMsg };
          inner = w.resource;
          hint = w.name || undefined;
        } catch (e) {
          errors.push({ name: `resources[${i}]`, reason: `cannot decode Resource wrapper: ${(e as Error).message}` });
          return;
        }
      }
      const r = this.check(typeUrl, inner, hint, version, `resources[${i}]`, heldByHash);
      if (!r.ok) errors.push({ name: r.name, reason: r.reason });
      else if (accepted.has(r.c.name)) errors.push({ name: r.c.name, reason: 'duplicate resource name in one response' });
      else accepted.set(r.c.name, r.c);
    });
    const d = this.desired(st);
    if (errors.length) {
      const nack = this.nack(typeUrl, nonce, version, errors);
      this.write({
        version_info: st.lastAckVersion,
        resource_names: this.sotwNames(d),
        type_url: typeUrl,
        response_nonce: nonce,
        error_detail: { code: CODE_INVALID_ARGUMENT, message: nack.detail },
      });
      return;
    }
    const removed = FULL_STATE_TYPES.has(typeUrl) ? [...st.resources.keys()].filter((n) => !accepted.has(n)) : [];
    const update = this.apply(st, [...accepted.values()], removed);
    st.lastAckVersion = version;
    st.received = true;
    const derived = this.afterAccept(st, update);
    // ACK after any EDS/RDS subscription the update caused went out (make-before-break).
    this.write({ version_info: version, resource_names: this.sotwNames(this.desired(st)), type_url: typeUrl, response_nonce: nonce });
    this.emit('ack', { typeUrl, nonce, version });
    this.finishAccept(typeUrl, update, derived);
  }

  private onDeltaResponse(res: DeltaDiscoveryResponseMsg): void {
    const begun = this.beginResponse(res.type_url ?? '', res.nonce ?? '');
    if (!begun) return;
    const { typeUrl, nonce, st, heldByHash } = begun;
    const version = res.system_version_info ?? '';
    const errors: Array<{ name: string; reason: string }> = [];
    const accepted = new Map<string, Candidate>();
    (res.resources ?? []).forEach((r, i) => {
      if (!r.resource) return; // a TTL heartbeat: nothing to update
      if (!r.name) {
        errors.push({ name: `resources[${i}]`, reason: 'resource has no name' });
        return;
      }
      const c = this.check(typeUrl, r.resource, r.name, r.version ?? '', `resources[${i}]`, heldByHash);
      if (!c.ok) errors.push({ name: c.name, reason: c.reason });
      else if (accepted.has(c.c.name)) errors.push({ name: c.c.name, reason: 'duplicate resource name in one response' });
      else accepted.set(c.c.name, c.c);
    });
    if (errors.length) {
      const nack = this.nack(typeUrl, nonce, version, errors);
      this.write({ type_url: typeUrl, response_nonce: nonce, error_detail: { code: CODE_INVALID_ARGUMENT, message: nack.detail } });
      return;
    }
    const removed = (res.removed_resources ?? []).filter((n) => st.resources.has(n) && !accepted.has(n));
    const update = this.apply(st, [...accepted.values()], removed);
    st.lastAckVersion = version;
    st.received = true;
    const derived = this.afterAccept(st, update);
    this.write({ type_url: typeUrl, response_nonce: nonce });
    this.emit('ack', { typeUrl, nonce, version });
    this.finishAccept(typeUrl, update, derived);
  }

  private sotwNames(d: { wildcard: boolean; names: Set<string> }): string[] {
    const names = [...d.names].sort();
    return d.wildcard ? ['*', ...names] : names;
  }

  private nack(typeUrl: TypeUrl, nonce: string, version: string, errors: Array<{ name: string; reason: string }>): XdsNack {
    const st = this.st(typeUrl);
    const detail =
      `${SHORT_NAME[typeUrl]} response version ${JSON.stringify(version)} (nonce ${nonce}) rejected, ` +
      `keeping version ${JSON.stringify(st.lastAckVersion)}: ` +
      errors.map((e) => `${e.name}: ${e.reason}`).join('; ');
    const nack: XdsNack = { typeUrl, nonce, detail, errors };
    st.lastNack = { ...nack, at: new Date() };
    this.log.warn('xds: response rejected (NACK)', { type: SHORT_NAME[typeUrl], nonce, version, error: detail });
    this.emit('nack', nack);
    return nack;
  }

  /** Applies accepted candidates and removals; returns what changed. */
  private apply(st: TypeState, cands: Candidate[], removedNames: string[]): XdsUpdate {
    const update: XdsUpdate = { typeUrl: st.typeUrl, added: [], updated: [], removed: [] };
    const d = this.desired(st);
    for (const c of cands) {
      if (!this.wants(d, c.name)) continue; // not (or no longer) subscribed
      const held = st.resources.get(c.name);
      if (held && held.hash === c.hash) continue;
      const r: Held = { typeUrl: st.typeUrl, name: c.name, version: c.version, json: c.json, hash: c.hash };
      st.resources.set(c.name, r);
      (held ? update.updated : update.added).push(strip(r));
      st.missing.delete(c.name);
      st.deadlines.delete(c.name); // the expiry timer skips names no longer pending
    }
    for (const n of removedNames) if (st.resources.delete(n)) update.removed.push(n);
    return update;
  }

  /**
   * After an accepted CDS/LDS response: follow its EDS/RDS names, subscribing before the ACK
   * goes out. Returns the EDS/RDS removals this caused, to be announced after the CDS/LDS update.
   */
  private afterAccept(st: TypeState, update: XdsUpdate): XdsUpdate[] {
    if (st.typeTimer) {
      clearTimeout(st.typeTimer);
      st.typeTimer = undefined;
    }
    if (!update.added.length && !update.updated.length && !update.removed.length) return [];
    const child = st.typeUrl === TYPE.CLUSTER ? TYPE.ENDPOINT : st.typeUrl === TYPE.LISTENER ? TYPE.ROUTE : undefined;
    if (!child) return [];
    const removed = this.dropUnwanted(child);
    this.sendSubscription(child);
    return removed.length ? [{ typeUrl: child, added: [], updated: [], removed }] : [];
  }

  /** Removes held resources of a type that are no longer subscribed, with their timers. */
  private dropUnwanted(typeUrl: TypeUrl): string[] {
    const st = this.st(typeUrl);
    const d = this.desired(st);
    const removed: string[] = [];
    for (const name of [...st.resources.keys()]) {
      if (!this.wants(d, name)) {
        st.resources.delete(name);
        removed.push(name);
      }
    }
    for (const name of [...st.missing]) if (!d.names.has(name)) st.missing.delete(name);
    for (const name of [...st.deadlines.keys()]) if (!d.names.has(name)) st.deadlines.delete(name);
    if (!d.wildcard && !d.names.size) st.received = false;
    return removed;
  }

  private finishAccept(typeUrl: TypeUrl, update: XdsUpdate, derived: XdsUpdate[]): void {
    if (update.added.length + update.updated.length + update.removed.length > 0) {
      this.log.info('xds: update', {
        type: SHORT_NAME[typeUrl],
        added: update.added.length,
        updated: update.updated.length,
        removed: update.removed.length,
        version: this.st(typeUrl).lastAckVersion,
      });
      this.emit('update', update);
    }
    for (const u of derived) this.emit('update', u);
    this.maybeEmitSnapshot();
  }

  // -------------------------------------------------------------------------------------------
  // Snapshots

  private arrived(st: TypeState): boolean {
    return st.received || st.typeTimedOut;
  }

  private active(st: TypeState): boolean {
    const d = this.desired(st);
    return d.wildcard || d.names.size > 0;
  }

  /** CDS → EDS → LDS → RDS all settled: every needed resource held or given up on. */
  private envoyConsistent(): boolean {
    const pairs: Array<[TypeUrl, TypeUrl]> = [
      [TYPE.CLUSTER, TYPE.ENDPOINT],
      [TYPE.LISTENER, TYPE.ROUTE],
    ];
    for (const [parent, child] of pairs) {
      const p = this.st(parent);
      if (this.active(p) && !this.arrived(p)) return false;
      const c = this.st(child);
      for (const n of this.derivedNames(child)) if (!c.resources.has(n) && !c.missing.has(n)) return false;
    }
    for (const t of [TYPE.ENDPOINT, TYPE.ROUTE] as const) {
      const s = this.st(t);
      if (s.userWildcard && !this.arrived(s)) return false;
    }
    return true;
  }

  private lastEnvoyKey = '';
  private lastAmbientKey = '0:|0:'; // both ambient types empty and not arrived

  /**
   * Emits 'snapshot' when the consistent Envoy view or the ambient view moved. Nothing is emitted
   * before the first subscribed type has arrived.
   */
  private maybeEmitSnapshot(): void {
    if (this.closed) return;
    if (![...this.types.values()].some((st) => this.active(st) && this.arrived(st))) return;
    const keyOf = (t: TypeUrl) => {
      const st = this.st(t);
      return `${this.arrived(st) ? 1 : 0}:` + [...st.resources.values()].map((r) => `${r.name}@${r.hash}`).sort().join(',');
    };
    let moved = false;
    if (this.envoyConsistent()) {
      const key = ENVOY_TYPES.map(keyOf).join('|');
      if (key !== this.lastEnvoyKey) {
        this.lastEnvoyKey = key;
        this.consistentEnvoy = new Map(ENVOY_TYPES.map((t) => [t, [...this.st(t).resources.values()]]));
        moved = true;
      }
    }
    const ambientKey = [TYPE.ADDRESS, TYPE.AUTHORIZATION].map(keyOf).join('|');
    if (ambientKey !== this.lastAmbientKey) {
      this.lastAmbientKey = ambientKey;
      moved = true;
    }
    if (!moved) return;
    const resources = {} as Record<TypeUrl, XdsResource[]>;
    for (const t of ALL_TYPES) {
      const src = ENVOY_TYPES.includes(t) ? (this.consistentEnvoy.get(t) ?? []) : [...this.st(t).resources.values()];
      resources[t] = src.map(strip).sort(byName);
    }
    const waiting = ALL_TYPES.filter((t) => {
      const st = this.st(t);
      return this.active(st) && !this.arrived(st);
    });
    this.lastSnap = { seq: ++this.snapshotSeq, resources, waiting };
    this.emit('snapshot', this.lastSnap);
  }
}

function strip(r: Held): XdsResource {
  return { typeUrl: r.typeUrl, name: r.name, version: r.version, json: r.json };
}

function byName(a: XdsResource, b: XdsResource): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

function sameSet(a: Set<string>, b: Set<string>): boolean {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}

