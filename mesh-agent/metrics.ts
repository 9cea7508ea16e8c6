// Prometheus metrics of the node agent, in a registry of its own (never prom-client's global one,
// so the agent, the proxy and tests can live in one process).
//
// Two kinds of series:
//  - read from the kernel at scrape time (datapath counters, map fill levels): the kernel is the
//    truth, and a counter read at scrape time cannot drift from it. The kernel counters are
//    per-CPU u64 summed in user space; they restart from 0 only when the datapath is removed and
//    reinstalled, which Prometheus treats as any counter reset;
//  - observed by the agent as things happen (reconcile duration and errors, attach failures,
//    xDS ACK/NACK).
// Counting the entries of a hash map walks the whole map (the kernel keeps no count user space can
// read), so map counts are cached for `mapCountTtlMs`: a scrape every few seconds costs one walk
// per map per TTL, not one per scrape.
//
// The metric names are an interface: the PrometheusRule in manifests/ alerts on
// sockmesh_map_usage_ratio, sockmesh_attach_failures_total, sockmesh_xds_connected,
// sockmesh_xds_nacks_total and sockmesh_policy_drops_total. Rename nothing without it.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import * as bpf from '../native';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { COUNTER_NAMES } from '../abi/codecs';
import type { Datapath } from './datapath/datapath';
import type { RawMap } from './datapath/maps';
import type { ApplyReport } from './datapath/reconciler';
import type { XdsTypeState } from '../xds/client';
import { ALL_TYPES, type TypeUrl } from '../xds/types';
import { SHORT_NAME } from '../xds/proto/resource-types';

export const METRIC_NAMES = {
  datapathEvents: 'sockmesh_datapath_events_total',
  policyDrops: 'sockmesh_policy_drops_total',
  mapEntries: 'sockmesh_map_entries',
  mapCapacity: 'sockmesh_map_capacity',
  mapUsageRatio: 'sockmesh_map_usage_ratio',
  reconcileDuration: 'sockmesh_reconcile_duration_seconds',
  reconcileErrors: 'sockmesh_reconcile_errors_total',
  attachFailures: 'sockmesh_attach_failures_total',
  xdsConnected: 'sockmesh_xds_connected',
  xdsAcks: 'sockmesh_xds_acks_total',
  xdsNacks: 'sockmesh_xds_nacks_total',
  xdsVersionInfo: 'sockmesh_xds_version_info',
  configAppliedTimestamp: 'sockmesh_config_applied_timestamp_seconds',
  buildInfo: 'sockmesh_build_info',
} as const;

/**
 * Maps without a meaningful fill level: socket-local storage cannot be listed from user space,
 * arrays always hold max_entries entries (`sockmesh status` uses the same list).
 */
export const NO_USAGE_MAPS: ReadonlySet<string> = new Set(['sm_sock_state', 'sm_counters', 'sm_config', 'sm_rcu_sync']);

/**
 * LRU maps are full in steady state by design (sm_revnat keeps entries of closed sockets until
 * evicted): their fill level says nothing about room, so they get no usage ratio (an alert on it
 * would fire on every busy node). Their entries and capacity are still exported.
 */
const LRU_TYPES: ReadonlySet<number> = new Set([bpf.consts.BPF_MAP_TYPE_LRU_HASH, bpf.consts.BPF_MAP_TYPE_LRU_PERCPU_HASH]);

/** Kernel counters that count drops by L4 policy: `policy_<reason>` (not `policy_allow*`). */
export function policyDropReasons(names: readonly string[] = COUNTER_NAMES): Array<{ counter: string; reason: string }> {
  return names
    .filter((n) => n.startsWith('policy_') && !n.startsWith('policy_allow'))
    .map((n) => ({ counter: n, reason: n.slice('policy_'.length) }));
}

/** Reconcile error codes shown at 0 from the start, so `increase()` sees their first error. */
const KNOWN_RECONCILE_CODES = ['SM_MAP_FULL', 'SM_KERNEL'];

/** The package version (package.json two levels above dist/mesh-agent/), or `unknown`. */
export function buildVersion(): string {
  for (const p of [path.resolve(__dirname, '../../package.json'), path.resolve(__dirname, '../package.json')]) {
    try {
      const v = (JSON.parse(fs.readFileSync(p, 'utf8')) as { name?: string; version?: string });
      if (v.name === 'sockmesh' && v.version) return v.version;
    } catch {
      /* next */
    }
  }
  return 'unknown';
}

/** Counts a map's entries; may be asynchronous (WorkerMapCounter). */
export type MapCounter = (map: RawMap) => number | Promise<number>;

/**
 * Counts map entries on a worker thread. A count walks the map and copies every key and value
 * into JS (the kernel has no entry count user space can read): ~1 s for 262144 entries on a small
 * machine, which on the main thread would stall the agent, its xDS stream and the /healthz the
 * kubelet probes with a 2 s timeout. The worker gets a dup of the map fd and closes it, so the
 * agent may close its own fds meanwhile without the worker ever reading a reused fd number.
 */
export class WorkerMapCounter {
  private worker?: Worker;
  private nextId = 1;
  private readonly pending = new Map<number, { fd: number; resolve: (n: number) => void; reject: (e: Error) => void }>();

  readonly count: MapCounter = (map) => {
    const fd = bpf.dupFd(map.fd);
    return new Promise<number>((resolve, reject) => {
      const id = this.nextId++;
      this.pending.set(id, { fd, resolve, reject });
      this.start().postMessage({ id, fd, keySize: map.keySize, valueSize: map.valueSize });
    });
  };

  private start(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { native: require.resolve('../native') } });
    w.unref(); // counting never keeps the agent alive
    w.on('message', (m: { id: number; count?: number; error?: string }) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.error !== undefined) p.reject(new Error(m.error));
      else p.resolve(m.count!);
    });
    const fail = (e: Error) => {
      if (this.worker !== w) return;
      this.worker = undefined;
      this.failPending(e);
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`map counting worker exited (${code})`)));
    return (this.worker = w);
  }

  private failPending(e: Error): void {
    // The worker is gone: the fds it was given are ours to close.
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      try {
        bpf.closeFd(p.fd);
      } catch {
        /* closed by the worker before it died */
      }
      p.reject(e);
    }
  }

  async close(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    if (w) await w.terminate();
    this.failPending(new Error('map counting stopped'));
  }
}

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const bpf = require(workerData.native);
parentPort.on('message', ({ id, fd, keySize, valueSize }) => {
  try {
    parentPort.postMessage({ id, count: bpf.mapLookupBatch(fd, keySize, valueSize, 4096).keys.length });
  } catch (e) {
    parentPort.postMessage({ id, error: String(e && e.message || e) });
  } finally {
    try { bpf.closeFd(fd); } catch (e) { /* nothing to do */ }
  }
});
`;

/**
 * Entry counts of maps, each reused for `ttlMs` after it was taken. Past the TTL the last count is
 * still served while a new one is taken in the background (a scrape never waits for a walk of a
 * big map, except for the very first count of a map).
 */
export class MapCountCache {
  private readonly cache = new Map<string, { fd: number; at: number; count: number }>();
  private readonly inflight = new Map<string, Promise<number>>();
  constructor(
    readonly ttlMs = 5000,
    private readonly now: () => number = Date.now,
    private readonly counter: MapCounter = (m) => m.count(),
  ) {}

  async count(map: RawMap): Promise<number> {
    const c = this.cache.get(map.name);
    // Same fd: the same open map (a Datapath opened anew gets new fds, and counts afresh).
    const same = c !== undefined && c.fd === map.fd;
    if (same && this.now() - c!.at < this.ttlMs) return c!.count;
    const next = this.refresh(map);
    if (same) {
      next.catch(() => undefined); // reported by the next scrape that has to wait for a count
      return c!.count;
    }
    return next;
  }

  private refresh(map: RawMap): Promise<number> {
    let p = this.inflight.get(map.name);
    if (p) return p;
    p = (async () => {
      try {
        const count = await this.counter(map);
        this.cache.set(map.name, { fd: map.fd, at: this.now(), count });
        return count;
      } finally {
        this.inflight.delete(map.name);
      }
    })();
    this.inflight.set(map.name, p);
    return p;
  }

  clear(): void {
    this.cache.clear();
  }
}

/** What the agent's metrics read at scrape time. Either may return undefined (not there yet). */
export interface AgentMetricsSources {
  datapath?: () => Datapath | undefined;
  /** Per-type xDS client state (XdsSource.state()); undefined when the source is not xDS. */
  xdsState?: () => Partial<Record<TypeUrl, XdsTypeState>> | undefined;
}

/** The events of an xDS client the metrics count (XdsClient emits them). */
export interface XdsEvents {
  on(event: 'ack', fn: (e: { typeUrl: TypeUrl }) => void): unknown;
  on(event: 'nack', fn: (e: { typeUrl: TypeUrl }) => void): unknown;
}

export interface AgentMetricsOptions {
  /** How long a map's entry count is reused (default 5000 ms). */
  mapCountTtlMs?: number;
  /** Count map entries on a worker thread (default true; false: on the calling thread). */
  countInWorker?: boolean;
  version?: string;
  /** Called with errors met while reading the kernel at scrape time (the scrape goes on). */
  onCollectError?: (what: string, e: unknown) => void;
}

const typeLabel = (t: TypeUrl | string): string => SHORT_NAME[t as TypeUrl] ?? t;

export class AgentMetrics {
  readonly registry = new Registry();
  readonly mapCounts: MapCountCache;
  private readonly counter?: WorkerMapCounter;
  private readonly reconcileDuration: Histogram<string>;
  private readonly reconcileErrors: Counter<'code'>;
  private readonly attachFailures: Counter<string>;
  private readonly xdsAcks: Counter<'type'>;
  private readonly xdsNacks: Counter<'type'>;
  private readonly configApplied: Gauge<string>;
  private xdsWatched = false;

  constructor(sources: AgentMetricsSources = {}, opts: AgentMetricsOptions = {}) {
    const reg = [this.registry];
    if (opts.countInWorker !== false) this.counter = new WorkerMapCounter();
    const mapCounts = (this.mapCounts = new MapCountCache(opts.mapCountTtlMs ?? 5000, Date.now, this.counter?.count));
    const onError = opts.onCollectError ?? (() => undefined);
    const dp = () => {
      try {
        return sources.datapath?.();
      } catch {
        return undefined;
      }
    };
    /** The maps with a fill level and their (cached) counts; the three map gauges each read it. */
    const usage = async (): Promise<Array<{ name: string; entries: number; capacity: number; lru: boolean }>> => {
      const d = dp();
      if (!d) return [];
      const out: Array<{ name: string; entries: number; capacity: number; lru: boolean }> = [];
      // Object.keys, not MAP_NAMES: maps added to the datapath show up without a change here.
      for (const [name, m] of Object.entries(d.maps) as Array<[string, RawMap]>) {
        if (NO_USAGE_MAPS.has(name) || !m.maxEntries) continue;
        if (dp() !== d) return []; // closed while we waited for a count: its fds are not ours to use
        try {
          out.push({ name, entries: await mapCounts.count(m), capacity: m.maxEntries, lru: LRU_TYPES.has(m.type) });
        } catch (e) {
          onError(`counting ${name}`, e);
        }
      }
      return out;
    };
    const kernelCounters = (): Record<string, bigint> | undefined => {
      const d = dp();
      if (!d) return undefined;
      try {
        return d.counters();
      } catch (e) {
        onError('reading sm_counters', e);
        return undefined;
      }
    };

    new Counter({
      name: METRIC_NAMES.datapathEvents,
      help: 'Datapath events counted by the kernel programs (sm_counters, per-CPU, summed), by event',
      labelNames: ['event'],
      registers: reg,
      collect() {
        const c = kernelCounters();
        this.reset();
        if (!c) return;
        for (const [event, v] of Object.entries(c)) this.inc({ event }, Number(v));
      },
    });
    new Counter({
      name: METRIC_NAMES.policyDrops,
      help: 'Connections dropped by L4 policy in the kernel, by reason (0 without labels when the datapath has no policy counters)',
      labelNames: ['reason'],
      registers: reg,
      collect() {
        const c = kernelCounters();
        this.reset();
        if (!c) return;
        const reasons = policyDropReasons(Object.keys(c));
        if (!reasons.length) this.inc(0);
        for (const r of reasons) this.inc({ reason: r.reason }, Number(c[r.counter]));
      },
    });
    new Gauge({
      name: METRIC_NAMES.mapEntries,
      help: `Entries in each kernel map with a fill level (counts cached for ${mapCounts.ttlMs} ms)`,
      labelNames: ['map'],
      registers: reg,
      async collect() {
        const rows = await usage();
        this.reset();
        for (const u of rows) this.set({ map: u.name }, u.entries);
      },
    });
    new Gauge({
      name: METRIC_NAMES.mapCapacity,
      help: 'Capacity (max_entries) of each kernel map with a fill level',
      labelNames: ['map'],
      registers: reg,
      async collect() {
        const rows = await usage();
        this.reset();
        for (const u of rows) this.set({ map: u.name }, u.capacity);
      },
    });
    new Gauge({
      name: METRIC_NAMES.mapUsageRatio,
      help:
        'entries / capacity of each kernel map that refuses entries when full (SM_MAP_FULL, map_errors); ' +
        'not LRU maps (sm_revnat, sm_steer, sm_udp_flows), which are full by design and evict their oldest entries',
      labelNames: ['map'],
      registers: reg,
      async collect() {
        const rows = await usage();
        this.reset();
        for (const u of rows) if (!u.lru) this.set({ map: u.name }, u.entries / u.capacity);
      },
    });
    this.reconcileDuration = new Histogram({
      name: METRIC_NAMES.reconcileDuration,
      help: 'Time to apply one desired state to the kernel maps (reconciler apply)',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: reg,
    });
    this.reconcileErrors = new Counter({
      name: METRIC_NAMES.reconcileErrors,
      help: 'Changes the reconciler could not apply, by error code (each is retried)',
      labelNames: ['code'],
      registers: reg,
    });
    for (const code of KNOWN_RECONCILE_CODES) this.reconcileErrors.inc({ code }, 0);
    this.attachFailures = new Counter({
      name: METRIC_NAMES.attachFailures,
      help: 'Failures to load, attach or adopt the datapath programs',
      registers: reg,
    });
    new Gauge({
      name: METRIC_NAMES.xdsConnected,
      help: '1 while the ADS stream to the xDS server is up, by resource type',
      labelNames: ['type'],
      registers: reg,
      collect() {
        this.reset();
        const st = sources.xdsState?.();
        for (const [t, s] of Object.entries(st ?? {})) if (s) this.set({ type: typeLabel(t) }, s.connected ? 1 : 0);
      },
    });
    this.xdsAcks = new Counter({
      name: METRIC_NAMES.xdsAcks,
      help: 'xDS responses accepted (ACK), by resource type',
      labelNames: ['type'],
      registers: reg,
    });
    this.xdsNacks = new Counter({
      name: METRIC_NAMES.xdsNacks,
      help: 'xDS responses rejected (NACK; the previous version stays in force), by resource type',
      labelNames: ['type'],
      registers: reg,
    });
    new Gauge({
      name: METRIC_NAMES.xdsVersionInfo,
      help: 'Always 1: the version_info of the last accepted response, by resource type',
      labelNames: ['type', 'version'],
      registers: reg,
      collect() {
        this.reset();
        const st = sources.xdsState?.();
        for (const [t, s] of Object.entries(st ?? {})) {
          if (s?.lastAckVersion) this.set({ type: typeLabel(t), version: s.lastAckVersion }, 1);
        }
      },
    });
    this.configApplied = new Gauge({
      name: METRIC_NAMES.configAppliedTimestamp,
      help: 'Unix time at which the agent last applied a config to the kernel (0: never)',
      registers: reg,
    });
    const build = new Gauge({
      name: METRIC_NAMES.buildInfo,
      help: 'Always 1: the sockmesh version',
      labelNames: ['version'],
      registers: reg,
    });
    build.set({ version: opts.version ?? buildVersion() }, 1);
  }

  /** After each reconciler apply. */
  observeApply(report: ApplyReport, at: Date = new Date()): void {
    this.reconcileDuration.observe(report.durationMs / 1000);
    for (const e of report.errors) this.reconcileErrors.inc({ code: (e as { code?: string }).code ?? 'unknown' });
    this.configApplied.set(at.getTime() / 1000);
  }

  attachFailed(): void {
    this.attachFailures.inc();
  }

  /** Count ACKs and NACKs of an xDS client (all types shown at 0 from here on). */
  watchXds(events: XdsEvents): void {
    if (this.xdsWatched) return;
    this.xdsWatched = true;
    for (const t of ALL_TYPES) {
      this.xdsAcks.inc({ type: typeLabel(t) }, 0);
      this.xdsNacks.inc({ type: typeLabel(t) }, 0);
    }
    events.on('ack', (e) => this.xdsAcks.inc({ type: typeLabel(e.typeUrl) }));
    events.on('nack', (e) => this.xdsNacks.inc({ type: typeLabel(e.typeUrl) }));
  }

  /** Stop the counting worker (the agent calls it on stop). */
  close(): Promise<void> {
    return this.counter?.close() ?? Promise.resolve();
  }

  /** The Prometheus text exposition. */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}

/**
 * The xDS client inside an XdsSource, for its ack/nack events. XdsSource keeps its client private
 * (proposed: expose its events publicly); read it by name, and count nothing if it is not there.
 */
export function xdsEventsOf(source: unknown): XdsEvents | undefined {
  const c = (source as { client?: unknown } | null | undefined)?.client;
  return c && typeof (c as { on?: unknown }).on === 'function' ? (c as XdsEvents) : undefined;
}

/** XdsSource.state() (per-type client state), or undefined for other sources. */
export function xdsStateOf(source: unknown): Partial<Record<TypeUrl, XdsTypeState>> | undefined {
  const fn = (source as { state?: unknown } | null | undefined)?.state;
  if (typeof fn !== 'function') return undefined;
  const st = (fn as () => unknown).call(source) as Record<string, unknown> | undefined;
  if (!st || typeof st !== 'object') return undefined;
  // Only the xDS client's shape: another source's state() (Kubernetes) is not per xDS type.
  const looksXds = Object.entries(st).every(([k, v]) => k.startsWith('type.googleapis.com/') && typeof (v as XdsTypeState)?.lastAckVersion === 'string');
  return looksXds ? (st as Partial<Record<TypeUrl, XdsTypeState>>) : undefined;
}
