// Envoy clusters and ClusterLoadAssignments → backend sets, and cluster names → services.
//
// Health (envoy.config.core.v3.HealthStatus): UNKNOWN and HEALTHY are used, as Envoy uses them.
// UNHEALTHY, DRAINING and TIMEOUT are not. DEGRADED is treated as unhealthy: Envoy sends traffic to
// degraded hosts only when there are not enough healthy ones (a priority-like spill-over the slot
// table cannot express), so a degraded host gets no new connections here while any healthy host
// exists — and none at all when all are degraded. Locality weights are informational: Envoy only
// honours them with locality_weighted_lb_config (a warning says so when that is set); endpoint
// weights, priorities and health are what the kernel uses.

import { parseIp } from '../../core/ip';
import type { Endpoint } from '../../core/model';
import { arr, enumName, field, has, int, intField, isHostname, isObj, Json, obj, str } from './json';
import { Warnings } from './result';
import { CLUSTER_TYPES, HEALTH_STATUSES } from './validate';

/** The model's weight limit (config/: 1..1000000). */
export const MAX_WEIGHT = 1_000_000;

export interface Backend {
  address: string;
  port: number;
  weight: number;
  healthy: boolean;
  locality?: Endpoint['locality'];
  priority?: number;
  /** `namespace/name` from Istio's `istio.workload` endpoint metadata. */
  workload?: string;
}

export interface ClusterInfo {
  name: string;
  json?: Json;
  /** Why this cluster cannot be served by the kernel (it is then left out). */
  skipped?: string;
  /** undefined: an EDS cluster whose ClusterLoadAssignment is not known. */
  backends?: Backend[];
  /** Name of the ClusterLoadAssignment (EDS service name) this cluster takes its endpoints from. */
  cla?: string;
  /** Created for a ClusterLoadAssignment that no given cluster refers to. */
  implicit?: boolean;
  localityWeighted?: boolean;
}

const SKIP_REASONS: Record<string, string> = {
  STRICT_DNS: 'STRICT_DNS: backends are resolved by DNS at connect time; the kernel datapath needs IPs',
  LOGICAL_DNS: 'LOGICAL_DNS: the backend is a DNS name resolved per connection; the kernel datapath needs IPs',
  ORIGINAL_DST: 'ORIGINAL_DST: connections go to their original destination; there is no backend set to translate to',
};

/** `name;namespace;canonical-service;revision;cluster` (Istio's endpoint metadata) → `namespace/name`. */
function istioWorkload(lbe: unknown): string | undefined {
  const w = field(field(field(lbe, 'metadata'), 'filterMetadata'), 'istio');
  const s = isObj(w) ? w.workload : undefined;
  if (typeof s !== 'string') return undefined;
  const [name, ns] = s.split(';');
  return name && ns ? `${ns}/${name}` : undefined;
}

/** The IP of an envoy.config.core.v3.Address, or a reason why it is not one the kernel can use. */
function ipOf(addr: unknown): { ip: string; port: number } | { skip: string } {
  const sa = obj(addr, 'socketAddress');
  if (!sa) {
    const pipe = obj(addr, 'pipe');
    if (pipe) return { skip: `pipe address ${JSON.stringify(str(pipe, 'path'))} (a Unix socket) is not an IP endpoint` };
    const internal = obj(addr, 'envoyInternalAddress');
    if (internal) {
      return { skip: `Envoy internal address (listener ${JSON.stringify(str(internal, 'serverListenerName'))}) is not an IP endpoint` };
    }
    return { skip: 'has no socket address' };
  }
  const text = str(sa, 'address') ?? '';
  const port = intField(sa, 'portValue') ?? 0;
  const p = parseIp(text);
  if (p.ok) return { ip: p.address, port };
  if (isHostname(text)) return { skip: `host name ${JSON.stringify(text)}: the kernel datapath needs IPs` };
  return { skip: p.reason };
}

/**
 * The backends of one ClusterLoadAssignment (assumed valid, see validate.ts). Endpoints the kernel
 * cannot use are left out with a warning each; weights above the model's limit are scaled down
 * proportionally.
 */
export function backendsOfCla(cla: unknown, label: string, w: Warnings): Backend[] {
  const out: Backend[] = [];
  const seen = new Set<string>();
  arr(cla, 'endpoints').forEach((le, i) => {
    const loc = obj(le, 'locality');
    const locality = loc
      ? Object.fromEntries(
          (['region', 'zone', 'subZone'] as const)
            .map((k) => [k === 'subZone' ? 'subzone' : k, str(loc, k)] as const)
            .filter(([, v]) => v !== undefined && v !== ''),
        )
      : {};
    const priority = intField(le, 'priority') ?? 0;
    arr(le, 'lbEndpoints').forEach((lbe, j) => {
      const where = `endpoints[${i}].lbEndpoints[${j}]`;
      const ep = obj(lbe, 'endpoint');
      if (!ep) {
        w.add(label, `${where}: named endpoint (endpoint_name) is not supported; skipped`);
        return;
      }
      const health = enumName(field(lbe, 'healthStatus') ?? 'UNKNOWN', HEALTH_STATUSES) ?? 'UNKNOWN';
      const weight = int(field(lbe, 'loadBalancingWeight')) ?? 1;
      const addrs = [field(ep, 'address'), ...arr(ep, 'additionalAddresses').map((a) => field(a, 'address'))];
      addrs.forEach((a, k) => {
        const r = ipOf(a);
        const at = k === 0 ? where : `${where}.endpoint.additionalAddresses[${k - 1}]`;
        if ('skip' in r) {
          w.add(label, `${at}: ${r.skip}; skipped`);
          return;
        }
        const key = `${r.ip}|${r.port}|${priority}`;
        if (seen.has(key)) {
          w.add(label, `${at}: ${r.ip}:${r.port} is listed twice at priority ${priority}; the first one is kept`);
          return;
        }
        seen.add(key);
        out.push({
          address: r.ip,
          port: r.port,
          weight,
          healthy: health === 'HEALTHY' || health === 'UNKNOWN',
          ...(Object.keys(locality).length ? { locality } : {}),
          ...(priority ? { priority } : {}),
          ...(istioWorkload(lbe) ? { workload: istioWorkload(lbe) } : {}),
        });
      });
    });
  });
  // Weights are relative: divide by their GCD first (exact), scale only if that is not enough.
  if (Math.max(0, ...out.map((b) => b.weight)) > MAX_WEIGHT) {
    const g = out.reduce((a, b) => gcdInt(a, b.weight), 0) || 1;
    for (const b of out) b.weight /= g;
    const max = Math.max(...out.map((b) => b.weight));
    if (max > MAX_WEIGHT) {
      for (const b of out) b.weight = Math.max(1, Math.round((b.weight * MAX_WEIGHT) / max));
      w.add(label, `weights up to ${max * g} scaled down proportionally to the datapath's limit of ${MAX_WEIGHT} (approximate)`);
    }
  }
  return out;
}

function gcdInt(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

export interface ServiceIdentity {
  namespace: string;
  name: string;
  /** The service port in an Istio cluster name. */
  port?: number;
  subset?: string;
  /** `outbound`, `inbound`, `inbound-vip` for Istio cluster names. */
  direction?: string;
  /** How the identity was found: `cluster-name`, `metadata` or `fallback`. */
  from: 'cluster-name' | 'metadata' | 'fallback';
}

/**
 * The service behind a cluster:
 * 1. Istio's cluster name `outbound|PORT|SUBSET|HOST` (also `inbound-vip|PORT|PROTOCOL|HOST` on
 *    waypoints) with HOST = NAME.NAMESPACE.svc.<cluster domain>;
 * 2. else the cluster's `metadata.filterMetadata.istio.services[0]` {name, namespace} (istiod sets it
 *    for every service cluster, ServiceEntries included);
 * 3. else namespace "" and the name = HOST of an Istio-shaped name, or the whole cluster name.
 */
export function serviceOfCluster(clusterName: string, cluster?: unknown): ServiceIdentity {
  const m = /^(outbound|inbound|inbound-vip|outbound_)\|(\d*)\|([^|]*)\|(.*)$/.exec(clusterName);
  const port = m && m[2] ? Number(m[2]) : undefined;
  const direction = m?.[1];
  const subset = m && m[1] !== 'inbound-vip' && m[3] ? m[3] : undefined;
  const host = m?.[4] ?? '';
  const extra = { ...(port !== undefined ? { port } : {}), ...(subset ? { subset } : {}), ...(direction ? { direction } : {}) };
  const svc = /^([^.]+)\.([^.]+)\.svc(\.|$)/.exec(host);
  if (svc) return { namespace: svc[2], name: svc[1], ...extra, from: 'cluster-name' };
  const meta = arr(field(field(field(cluster, 'metadata'), 'filterMetadata'), 'istio'), 'services')[0];
  if (isObj(meta) && typeof meta.name === 'string' && typeof meta.namespace === 'string' && meta.name && meta.namespace) {
    return { namespace: meta.namespace, name: meta.name, ...extra, from: 'metadata' };
  }
  return { namespace: '', name: host || clusterName, ...extra, from: 'fallback' };
}

/**
 * All clusters by name: the given ones (assumed valid) plus one implicit EDS cluster per
 * ClusterLoadAssignment that no given cluster refers to (an endpoints-only dump, or a CLA that
 * arrived before its cluster).
 */
export function buildClusters(clusters: Json[], clas: Map<string, Json>, w: Warnings): Map<string, ClusterInfo> {
  const out = new Map<string, ClusterInfo>();
  const memo = new Map<string, Backend[]>();
  const claBackends = (name: string): Backend[] | undefined => {
    const cla = clas.get(name);
    if (!cla) return undefined;
    if (!memo.has(name)) memo.set(name, backendsOfCla(cla, `ClusterLoadAssignment ${name}`, w));
    return memo.get(name);
  };
  const covered = new Set<string>();
  for (const c of clusters) {
    const name = str(c, 'name') ?? '';
    const label = `cluster ${name}`;
    const info: ClusterInfo = { name, json: c };
    const rawType = field(c, 'type');
    const type = rawType === undefined ? (has(c, 'clusterType') ? 'CUSTOM' : 'STATIC') : enumName(rawType, CLUSTER_TYPES) ?? 'STATIC';
    if (has(field(c, 'commonLbConfig'), 'localityWeightedLbConfig')) info.localityWeighted = true;
    if (type === 'CUSTOM') {
      const ct = str(field(c, 'clusterType'), 'name') ?? '?';
      info.skipped = `custom cluster type ${ct} (e.g. aggregate or dynamic forward proxy) has no fixed backend set the kernel could hold`;
    } else if (type === 'EDS') {
      info.cla = str(field(c, 'edsClusterConfig'), 'serviceName') || name;
      info.backends = claBackends(info.cla);
      covered.add(info.cla);
    } else if (type === 'STATIC') {
      const la = obj(c, 'loadAssignment');
      if (la) {
        info.backends = backendsOfCla(la, label, w);
        const n = str(la, 'clusterName');
        if (n) covered.add(n);
      } else info.backends = claBackends(name) ?? [];
      covered.add(name);
    } else {
      info.skipped = SKIP_REASONS[type];
      covered.add(name);
    }
    if (info.skipped) w.add(label, `${info.skipped}; skipped`);
    if (info.localityWeighted && !info.skipped) {
      w.add(label, 'locality_weighted_lb_config: locality weights are not applied; endpoints are chosen by their own weights');
    }
    if (out.has(name)) w.add(label, 'defined twice; the last definition is used');
    out.set(name, info);
  }
  for (const name of clas.keys()) {
    if (covered.has(name) || out.has(name)) continue;
    out.set(name, { name, cla: name, backends: claBackends(name), implicit: true });
  }
  return out;
}
