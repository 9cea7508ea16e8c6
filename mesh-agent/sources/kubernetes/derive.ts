// Cluster objects → Model (pure). What becomes what:
//  - enrolled (enrollment.ts), Running pods of this node with IPs → workloads;
//  - ClusterIP Services (all their clusterIPs; TCP and UDP ports) → services;
//  - EndpointSlices (discovery.k8s.io/v1) → endpoints, one per (address, slice port), weight 1.
// Everything left out that an operator might expect in the datapath comes back as a warning with
// the reason, in the shape `sockmesh xds translate` uses.
import { parseIp } from '../../../core/ip';
import { serviceRef, type Endpoint, type Model, type Protocol, type Service as ModelService, type ServicePort, type Workload } from '../../../core/model';
import { podCgroupPath, podQosClass, kubeletPodUid, type CgroupOptions, type QosClass } from './cgroup';
import { decideEnrollment, type Enrollment } from './enrollment';
import type { EndpointSlice, Namespace, Pod, Service } from './objects';

export interface Warning {
  resource: string;
  reason: string;
}

export interface ClusterView {
  namespaces: Iterable<Namespace>;
  /** Pods of this node (the source watches them with spec.nodeName=<node>). */
  pods: Iterable<Pod>;
  services?: Iterable<Service>;
  endpointSlices?: Iterable<EndpointSlice>;
}

export interface DeriveOptions {
  nodeName: string;
  enrollment: Enrollment;
  /** Derive services and endpoints (else only workloads). */
  services: boolean;
  /** Resolve each workload's cgroup (into Workload.cgroup and `pods`); false: do not. */
  cgroup?: CgroupOptions | false;
}

export interface LocalPod {
  uid: string;
  namespace: string;
  name: string;
  qosClass: QosClass;
  /** Absolute cgroup v2 directory, when resolved. */
  cgroup?: string;
}

export interface Derived {
  model: Model;
  warnings: Warning[];
  /** The enrolled local pods that became workloads, with their cgroups. */
  pods: LocalPod[];
}

/** The Workload the model has (core/model.ts), with its `cgroup`. */
export type K8sWorkload = Workload & { cgroup?: string };

const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
/** Set by Istio's injector on pods that run an Envoy sidecar; Istio ambient leaves those alone. */
const SIDECAR_ANNOTATION = 'sidecar.istio.io/status';

const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

function canonicalIps(texts: Array<string | undefined>, resource: string, field: string, warnings: Warning[]): string[] {
  const out: string[] = [];
  for (const t of texts) {
    if (!t) continue;
    const p = parseIp(t);
    if (!p.ok) {
      warnings.push({ resource, reason: `${field} ${t} left out: ${p.reason}` });
      continue;
    }
    if (!out.includes(p.address)) out.push(p.address);
  }
  return out;
}

export function deriveWorkloads(view: ClusterView, o: DeriveOptions, warnings: Warning[]): { workloads: K8sWorkload[]; pods: LocalPod[] } {
  const nsLabels = new Map<string, Record<string, string>>();
  for (const ns of view.namespaces) if (ns.metadata?.name) nsLabels.set(ns.metadata.name, ns.metadata.labels ?? {});
  const workloads: K8sWorkload[] = [];
  const pods: LocalPod[] = [];
  for (const pod of view.pods) {
    const m = pod.metadata ?? {};
    if (!m.namespace || !m.name) continue;
    if (pod.spec?.nodeName !== o.nodeName) continue; // the field selector already says so; be sure
    const d = decideEnrollment(m.labels, nsLabels.get(m.namespace), o.enrollment);
    if (!d.enrolled) continue;
    const resource = `pod ${m.namespace}/${m.name}`;
    if (pod.spec?.hostNetwork) {
      warnings.push({ resource, reason: `enrolled (${d.by}) but uses the host network: its IPs are the node's, so it is not meshed` });
      continue;
    }
    if (m.annotations?.[SIDECAR_ANNOTATION] !== undefined) {
      warnings.push({ resource, reason: `enrolled (${d.by}) but runs an Istio sidecar (${SIDECAR_ANNOTATION}); left to the sidecar, as Istio ambient does` });
      continue;
    }
    if (pod.status?.phase !== 'Running') continue;
    const podIps = pod.status?.podIPs?.length ? pod.status.podIPs.map((p) => p.ip) : [pod.status?.podIP];
    const ips = canonicalIps(podIps, resource, 'pod IP', warnings);
    if (!ips.length) continue;
    const uid = m.uid ?? `${m.namespace}/${m.name}`;
    const w: K8sWorkload = {
      namespace: m.namespace,
      name: m.name,
      serviceAccount: pod.spec?.serviceAccountName || pod.spec?.serviceAccount || 'default',
      ips,
      node: o.nodeName,
      uid,
      healthy: (pod.status?.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True'),
    };
    const local: LocalPod = { uid, namespace: m.namespace, name: m.name, qosClass: podQosClass(pod) };
    if (o.cgroup !== false && kubeletPodUid(pod)) {
      const cg = podCgroupPath(pod, o.cgroup ?? {});
      if (cg) {
        w.cgroup = cg;
        local.cgroup = cg;
      }
    }
    workloads.push(w);
    pods.push(local);
  }
  workloads.sort((a, b) => cmp(a.namespace, b.namespace) || cmp(a.name, b.name));
  pods.sort((a, b) => cmp(a.namespace, b.namespace) || cmp(a.name, b.name));
  return { workloads, pods };
}

interface SvcInfo {
  svc: ModelService;
  /** Named targetPort per service port (index into svc.ports), resolved from the slices. */
  named: Map<number, string>;
  /** internalTrafficPolicy: Local — only this node's endpoints serve. */
  nodeLocal: boolean;
}

function deriveServices(services: Iterable<Service>, warnings: Warning[]): Map<string, SvcInfo> {
  const out = new Map<string, SvcInfo>();
  for (const s of services) {
    const m = s.metadata ?? {};
    if (!m.namespace || !m.name) continue;
    const ref = serviceRef({ namespace: m.namespace, name: m.name });
    const resource = `service ${ref}`;
    const spec = s.spec ?? {};
    if (spec.type === 'ExternalName') {
      warnings.push({ resource, reason: `ExternalName service (${spec.externalName ?? '?'}) skipped: it is a DNS alias, with no VIP to translate` });
      continue;
    }
    const ipTexts = spec.clusterIPs?.length ? spec.clusterIPs : [spec.clusterIP];
    if (spec.clusterIP === 'None' || ipTexts.includes('None')) {
      warnings.push({ resource, reason: 'headless service (clusterIP None) skipped: clients connect to pod IPs directly, there is no VIP to translate' });
      continue;
    }
    if (!spec.clusterIP) {
      warnings.push({ resource, reason: 'no clusterIP; skipped' });
      continue;
    }
    const vips = canonicalIps(ipTexts, resource, 'clusterIP', warnings);
    if (!vips.length) continue;
    const ports: ServicePort[] = [];
    const named = new Map<number, string>();
    for (const p of spec.ports ?? []) {
      const proto = p.protocol ?? 'TCP';
      if (proto !== 'TCP' && proto !== 'UDP') {
        warnings.push({ resource, reason: `port ${p.port}/${proto} skipped: only TCP and UDP are translated` });
        continue;
      }
      if (!p.port) continue;
      const sp: ServicePort = { port: p.port, protocol: proto as Protocol };
      if (p.name) sp.name = p.name;
      if (typeof p.targetPort === 'number') sp.targetPort = p.targetPort;
      else if (typeof p.targetPort === 'string' && /^[0-9]+$/.test(p.targetPort)) sp.targetPort = Number(p.targetPort);
      else if (typeof p.targetPort === 'string' && p.targetPort) named.set(ports.length, p.targetPort);
      else sp.targetPort = p.port; // the API server defaults targetPort to port
      ports.push(sp);
    }
    if (!ports.length) {
      warnings.push({ resource, reason: 'no TCP or UDP port; skipped' });
      continue;
    }
    if (spec.sessionAffinity === 'ClientIP') {
      warnings.push({ resource, reason: 'sessionAffinity ClientIP is not supported: each connection picks a backend on its own' });
    }
    out.set(ref, { svc: { namespace: m.namespace, name: m.name, vips, ports }, named, nodeLocal: spec.internalTrafficPolicy === 'Local' });
  }
  return out;
}

interface Candidate {
  ep: Endpoint;
  ready: boolean;
  servingTerminating: boolean;
  family: 4 | 6;
}

function deriveEndpoints(slices: Iterable<EndpointSlice>, svcs: Map<string, SvcInfo>, nodeName: string, warnings: Warning[]): Endpoint[] {
  const cands: Candidate[] = [];
  const resolved = new Map<string, Map<number, Set<number>>>(); // ref → port index → backend ports
  for (const sl of slices) {
    const m = sl.metadata ?? {};
    if (!m.namespace || !m.name) continue;
    const resource = `endpointslice ${m.namespace}/${m.name}`;
    const svcName = m.labels?.[SERVICE_NAME_LABEL];
    if (!svcName) {
      warnings.push({ resource, reason: `no ${SERVICE_NAME_LABEL} label: not tied to a service; skipped` });
      continue;
    }
    const ref = serviceRef({ namespace: m.namespace, name: svcName });
    const info = svcs.get(ref);
    if (!info) continue; // service absent or skipped (and warned about) above
    if (sl.addressType !== 'IPv4' && sl.addressType !== 'IPv6') {
      warnings.push({ resource, reason: `addressType ${sl.addressType ?? '?'} skipped: only IPv4 and IPv6 endpoints are translated` });
      continue;
    }
    const family = sl.addressType === 'IPv4' ? 4 : 6;
    for (const p of sl.ports ?? []) {
      const proto = p.protocol ?? 'TCP';
      const name = p.name ?? '';
      // A slice port is named after the Service port (not the container port); its number is
      // the target port as resolved for the pods of this slice — named targetPorts included.
      const idx = info.svc.ports.findIndex((sp) => (sp.name ?? '') === name && sp.protocol === proto);
      if (idx < 0) continue;
      const sp = info.svc.ports[idx];
      if (p.port == null) {
        warnings.push({ resource, reason: `port "${name}" has no number (all ports); skipped` });
        continue;
      }
      for (const e of sl.endpoints ?? []) {
        // As kube-proxy: the addresses are fungible and only the first one is used.
        const text = e.addresses?.[0];
        if (!text) continue;
        const ip = parseIp(text);
        if (!ip.ok) {
          warnings.push({ resource, reason: `endpoint ${text} skipped: ${ip.reason}` });
          continue;
        }
        if (ip.family !== family) {
          warnings.push({ resource, reason: `endpoint ${text} skipped: not an ${sl.addressType} address` });
          continue;
        }
        if (info.nodeLocal && e.nodeName !== nodeName) continue;
        // Unknown (nil) readiness is to be read as ready; serving defaults to ready.
        const ready = e.conditions?.ready ?? true;
        const serving = e.conditions?.serving ?? ready;
        const terminating = e.conditions?.terminating ?? false;
        const ep: Endpoint = { service: ref, address: ip.address, servicePort: sp.name ?? sp.port, port: p.port, weight: 1, healthy: ready };
        if (e.nodeName) ep.node = e.nodeName;
        if (e.zone) ep.locality = { zone: e.zone };
        if (e.targetRef?.kind === 'Pod' && e.targetRef.uid) ep.workload = e.targetRef.uid;
        cands.push({ ep, ready, servingTerminating: serving && terminating, family });
        if (info.named.has(idx)) {
          const byPort = resolved.get(ref) ?? new Map<number, Set<number>>();
          resolved.set(ref, byPort);
          const set = byPort.get(idx) ?? new Set<number>();
          byPort.set(idx, set);
          set.add(p.port);
        }
      }
    }
  }
  // A named targetPort that every endpoint resolved to the same number becomes the port's
  // targetPort; otherwise the per-endpoint ports say it.
  for (const [ref, byPort] of resolved) {
    const svc = svcs.get(ref)!.svc;
    for (const [idx, set] of byPort) if (set.size === 1) svc.ports[idx].targetPort = [...set][0];
  }
  // kube-proxy's graceful termination: when a service port has no ready endpoint (per family),
  // endpoints that are terminating but still serving take the traffic.
  const anyReady = new Set<string>();
  const group = (c: Candidate) => `${c.ep.service}|${c.ep.servicePort}|${c.family}`;
  for (const c of cands) if (c.ready) anyReady.add(group(c));
  for (const c of cands) if (!anyReady.has(group(c)) && c.servingTerminating) c.ep.healthy = true;
  // The same address may sit in two slices for a moment (an endpoint moving between them): keep
  // one, the healthy one if either is.
  const byKey = new Map<string, Endpoint>();
  for (const { ep } of cands) {
    const k = `${ep.service}|${ep.servicePort}|${ep.address}|${ep.port}`;
    const prev = byKey.get(k);
    if (!prev || (!prev.healthy && ep.healthy)) byKey.set(k, ep);
  }
  return [...byKey.values()].sort(
    (a, b) => cmp(a.service, b.service) || cmp(String(a.servicePort), String(b.servicePort)) || cmp(a.address, b.address) || (a.port ?? 0) - (b.port ?? 0),
  );
}

export function deriveModel(view: ClusterView, o: DeriveOptions): Derived {
  const warnings: Warning[] = [];
  const { workloads, pods } = deriveWorkloads(view, o, warnings);
  let services: ModelService[] = [];
  let endpoints: Endpoint[] = [];
  if (o.services) {
    const svcs = deriveServices(view.services ?? [], warnings);
    endpoints = deriveEndpoints(view.endpointSlices ?? [], svcs, o.nodeName, warnings);
    services = [...svcs.values()].map((i) => i.svc).sort((a, b) => cmp(a.namespace, b.namespace) || cmp(a.name, b.name));
    for (const s of services) s.ports.sort((a, b) => a.port - b.port || cmp(a.protocol, b.protocol));
  }
  const seen = new Set<string>();
  const uniq = warnings
    .filter((w) => {
      const k = `${w.resource}\n${w.reason}`;
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    })
    .sort((a, b) => cmp(a.resource, b.resource) || cmp(a.reason, b.reason));
  return { model: { services, endpoints, workloads }, warnings: uniq, pods };
}

/** JSON with object keys sorted, so that equal models have equal text whatever built them. */
export function canonicalJson(v: unknown): string {
  return JSON.stringify(v, (_k, val: unknown) => {
    if (val && typeof val === 'object' && !Array.isArray(val)) {
      return Object.fromEntries(Object.keys(val).sort().map((k) => [k, (val as Record<string, unknown>)[k]]));
    }
    return val;
  });
}
