// The sockmesh model (core/model.ts) as xDS resources, in proto3 JSON, named and shaped
// the way istiod names and shapes them, so one translator reads our control plane and a real
// istiod alike. For each service port:
//
//   CDS  `outbound|PORT||NAME.NS.svc.cluster.local`  type EDS over ADS, Istio's cluster metadata
//        (filter_metadata.istio.services / default_original_port). UDP ports (Istio has none) are
//        `outbound_udp|PORT||HOST`, so a TCP and a UDP port of one number do not collide.
//   EDS  the ClusterLoadAssignment of that cluster: one LocalityLbEndpoints per (locality,
//        priority), each endpoint with address:port, load_balancing_weight and health_status.
//   LDS  per VIP: `VIP_PORT`, bound to VIP:PORT (bind_to_port false, as a sidecar's outbound
//        listeners are), a tcp_proxy to the cluster; UDP ports get `VIP_PORT_udp` with a
//        udp_proxy listener filter.
//        per TCP port also the proxyless-gRPC api_listener `HOST:PORT` (what istiod serves to
//        gRPC xDS clients for `xds:///HOST:PORT`), an HttpConnectionManager with RDS and the
//        router filter;
//   RDS  `HOST:PORT`: one virtual host (domains: the host's short forms, with and without the
//        port, and the VIPs) routing every path to the cluster.
//
// Ambient (what istiod sends ztunnel):
//   Address{service} `NS/HOST`: VIPs and ports (service_port → target_port).
//   Address{workload} uid (the model's uid, default `NS/NAME`): addresses, namespace,
//        service_account, node, status and `services` (`NS/HOST` → ports) from the endpoints at
//        its IPs. An endpoint address that is no workload's IP gets a synthetic workload, uid
//        `sockmesh//Endpoint/ADDRESS` (istiod does the same for ServiceEntry endpoints), so a
//        WDS-only reader (ztunnel) sees every backend.
//
// The ambient form is coarser than EDS: Workload.status is per workload, so a workload is
// UNHEALTHY only if the model says so or every endpoint it backs is unhealthy; weights become
// Workload.capacity only when all of a workload's endpoints share one weight other than 1.

import { isIP } from 'node:net';
import type { Endpoint, Model, Service, ServicePort, Workload } from '../../core/model';
import { AF_INET, AF_INET6, familyOf, ipToBytes } from '../../core/ip';
import { TYPE, type Json, type TypeUrl } from '../types';

export interface ModelToXdsOptions {
  /** Cluster DNS domain; default `cluster.local`. */
  domain?: string;
}

export interface JsonResource {
  typeUrl: TypeUrl;
  name: string;
  json: Json;
}

const AT = (name: string) => `type.googleapis.com/${name}`;
const TCP_PROXY = AT('envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy');
const UDP_PROXY = AT('envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig');
const HCM = AT('envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager');
const ROUTER = AT('envoy.extensions.filters.http.router.v3.Router');

export const SYNTHETIC_WORKLOAD_UID_PREFIX = 'sockmesh//Endpoint/';

export function serviceHostname(s: { name: string; namespace: string }, domain = 'cluster.local'): string {
  return `${s.name}.${s.namespace}.svc.${domain}`;
}

/** Istio's outbound cluster name (`outbound|PORT||HOST`); `outbound_udp|...` for UDP ports. */
export function outboundClusterName(port: number, hostname: string, protocol: 'TCP' | 'UDP' = 'TCP'): string {
  return `${protocol === 'UDP' ? 'outbound_udp' : 'outbound'}|${port}||${hostname}`;
}

function ipB64(ip: string): string {
  const b = ipToBytes(ip);
  return (familyOf(ip) === AF_INET ? b.subarray(0, 4) : b).toString('base64');
}

function hostPort(host: string, port: number): string {
  return isIP(host) && familyOf(host) === AF_INET6 ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Whether an endpoint serves a port of its service (servicePort: number = any protocol, name = that port). */
export function endpointServesPort(ep: Endpoint, p: ServicePort): boolean {
  if (ep.servicePort === undefined) return true;
  return typeof ep.servicePort === 'number' ? ep.servicePort === p.port : ep.servicePort === p.name;
}

function targetPort(ep: Endpoint, p: ServicePort): number {
  return ep.port ?? p.targetPort ?? p.port;
}

function clusterJson(s: Service, p: ServicePort, name: string, host: string): Json {
  return {
    name,
    type: 'EDS',
    edsClusterConfig: { edsConfig: { ads: {}, initialFetchTimeout: '0s', resourceApiVersion: 'V3' }, serviceName: name },
    connectTimeout: '10s',
    metadata: {
      filterMetadata: {
        istio: { services: [{ host, name: s.name, namespace: s.namespace }], default_original_port: p.port },
        sockmesh: { protocol: p.protocol, ...(p.name ? { portName: p.name } : {}) },
      },
    },
  };
}

function loadAssignmentJson(name: string, p: ServicePort, eps: Endpoint[]): Json {
  const groups = new Map<string, { locality: Json; priority: number; lb: Json[]; weight: number }>();
  for (const ep of eps) {
    const loc: Json = {};
    if (ep.locality?.region) loc.region = ep.locality.region;
    if (ep.locality?.zone) loc.zone = ep.locality.zone;
    if (ep.locality?.subzone) loc.subZone = ep.locality.subzone;
    const priority = ep.priority ?? 0;
    const key = JSON.stringify([loc, priority]);
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { locality: loc, priority, lb: [], weight: 0 }));
    const sock: Json = { address: ep.address, portValue: targetPort(ep, p) };
    if (p.protocol === 'UDP') sock.protocol = 'UDP';
    const lb: Json = {
      endpoint: { address: { socketAddress: sock } },
      healthStatus: ep.healthy ? 'HEALTHY' : 'UNHEALTHY',
      loadBalancingWeight: ep.weight,
    };
    const meta: Json = {};
    if (ep.node) meta.node = ep.node;
    if (ep.workload) meta.workload = ep.workload;
    if (Object.keys(meta).length) lb.metadata = { filterMetadata: { sockmesh: meta } };
    g.lb.push(lb);
    g.weight += ep.weight;
  }
  const endpoints = [...groups.values()]
    .sort((a, b) => a.priority - b.priority)
    .map((g) => ({
      // gRPC requires a locality on every LocalityLbEndpoints, even an empty one.
      locality: g.locality,
      lbEndpoints: g.lb,
      loadBalancingWeight: Math.max(1, g.weight),
      ...(g.priority ? { priority: g.priority } : {}),
    }));
  return { clusterName: name, endpoints };
}

function tcpListenerJson(vip: string, p: ServicePort, cluster: string): Json {
  return {
    name: `${vip}_${p.port}`,
    address: { socketAddress: { address: vip, portValue: p.port } },
    filterChains: [{ filters: [{ name: 'envoy.filters.network.tcp_proxy', typedConfig: { '@type': TCP_PROXY, statPrefix: cluster, cluster } }] }],
    bindToPort: false,
    trafficDirection: 'OUTBOUND',
  };
}

function udpListenerJson(vip: string, p: ServicePort, cluster: string): Json {
  return {
    name: `${vip}_${p.port}_udp`,
    address: { socketAddress: { address: vip, portValue: p.port, protocol: 'UDP' } },
    udpListenerConfig: {},
    listenerFilters: [
      {
        name: 'envoy.filters.udp_listener.udp_proxy',
        typedConfig: {
          '@type': UDP_PROXY,
          statPrefix: cluster,
          // The plain `cluster` form (deprecated in favour of a matcher whose on_no_match routes to
          // the cluster, but still honoured by Envoy): one fixed cluster is all a VIP port needs,
          // and it is what xds/translate reads.
          cluster,
        },
      },
    ],
    bindToPort: false,
    trafficDirection: 'OUTBOUND',
  };
}

function grpcListenerJson(name: string): Json {
  return {
    name,
    apiListener: {
      apiListener: {
        '@type': HCM,
        statPrefix: name,
        rds: { configSource: { ads: {}, resourceApiVersion: 'V3' }, routeConfigName: name },
        httpFilters: [{ name: 'envoy.filters.http.router', typedConfig: { '@type': ROUTER } }],
      },
    },
  };
}

function routeJson(name: string, s: Service, p: ServicePort, host: string, cluster: string, domain: string): Json {
  const short = [s.name, `${s.name}.${s.namespace}`, `${s.name}.${s.namespace}.svc`, host];
  if (domain !== 'cluster.local') short.push(`${s.name}.${s.namespace}.svc.cluster.local`);
  const domains = [...new Set([...short.flatMap((h) => [h, `${h}:${p.port}`]), ...s.vips.flatMap((v) => [v, hostPort(v, p.port)])])];
  return {
    name,
    virtualHosts: [{ name, domains, routes: [{ match: { prefix: '/' }, route: { cluster } }] }],
    validateClusters: false,
  };
}

/** Every resource of a model, Envoy and ambient. Order: services as in the model, then workloads. */
export function modelToXds(model: Model, opts: ModelToXdsOptions = {}): JsonResource[] {
  const domain = opts.domain ?? 'cluster.local';
  const out: JsonResource[] = [];
  const svcByRef = new Map(model.services.map((s) => [`${s.namespace}/${s.name}`, s]));
  const epsBySvc = new Map<string, Endpoint[]>();
  for (const ep of model.endpoints) {
    const l = epsBySvc.get(ep.service);
    if (l) l.push(ep);
    else epsBySvc.set(ep.service, [ep]);
  }

  for (const s of model.services) {
    const host = serviceHostname(s, domain);
    const eps = epsBySvc.get(`${s.namespace}/${s.name}`) ?? [];
    for (const p of s.ports) {
      const cluster = outboundClusterName(p.port, host, p.protocol);
      const portEps = eps.filter((ep) => endpointServesPort(ep, p));
      out.push({ typeUrl: TYPE.CLUSTER, name: cluster, json: clusterJson(s, p, cluster, host) });
      out.push({ typeUrl: TYPE.ENDPOINT, name: cluster, json: loadAssignmentJson(cluster, p, portEps) });
      for (const vip of s.vips) {
        const l = p.protocol === 'UDP' ? udpListenerJson(vip, p, cluster) : tcpListenerJson(vip, p, cluster);
        out.push({ typeUrl: TYPE.LISTENER, name: l.name as string, json: l });
      }
      if (p.protocol === 'TCP') {
        const name = `${host}:${p.port}`;
        out.push({ typeUrl: TYPE.LISTENER, name, json: grpcListenerJson(name) });
        out.push({ typeUrl: TYPE.ROUTE, name, json: routeJson(name, s, p, host, cluster, domain) });
      }
    }
    const ports = new Map<string, Json>();
    for (const p of s.ports) {
      const t = p.targetPort ?? p.port;
      ports.set(`${p.port}/${t}`, { servicePort: p.port, targetPort: t });
    }
    const v4 = s.vips.some((v) => familyOf(v) === AF_INET);
    const v6 = s.vips.some((v) => familyOf(v) === AF_INET6);
    out.push({
      typeUrl: TYPE.ADDRESS,
      name: `${s.namespace}/${host}`,
      json: {
        service: {
          name: s.name,
          namespace: s.namespace,
          hostname: host,
          addresses: s.vips.map((v) => ({ address: ipB64(v) })),
          ports: [...ports.values()],
          ipFamilies: v4 && v6 ? 'DUAL' : v6 ? 'IPV6_ONLY' : 'IPV4_ONLY',
        },
      },
    });
  }

  // Workloads, with the services they back (by IP), then synthetic ones for the other endpoint IPs.
  const wlByIp = new Map<string, Workload>();
  for (const w of model.workloads) for (const ip of w.ips) wlByIp.set(ip, w);
  type Backing = { ports: Map<string, Map<string, Json>>; eps: Endpoint[]; firstNs: string };
  const backing = new Map<string, Backing>(); // workload uid or synthetic uid
  const synthetic = new Map<string, string>(); // synthetic uid → address
  const uidOf = (w: Workload) => w.uid ?? `${w.namespace}/${w.name}`;
  for (const ep of model.endpoints) {
    const s = svcByRef.get(ep.service);
    if (!s) continue;
    const w = wlByIp.get(ep.address);
    const uid = w ? uidOf(w) : `${SYNTHETIC_WORKLOAD_UID_PREFIX}${ep.address}`;
    if (!w) synthetic.set(uid, ep.address);
    let b = backing.get(uid);
    if (!b) backing.set(uid, (b = { ports: new Map(), eps: [], firstNs: s.namespace }));
    b.eps.push(ep);
    const key = `${s.namespace}/${serviceHostname(s, domain)}`;
    let pm = b.ports.get(key);
    if (!pm) b.ports.set(key, (pm = new Map()));
    for (const p of s.ports) {
      if (!endpointServesPort(ep, p)) continue;
      const t = targetPort(ep, p);
      pm.set(`${p.port}/${t}`, { servicePort: p.port, targetPort: t });
    }
  }
  const workloadJson = (uid: string, base: Json, addresses: string[], b: Backing | undefined, unhealthy: boolean): Json => {
    const json: Json = { uid, ...base, addresses: addresses.map(ipB64) };
    if (b && b.ports.size) {
      const services: Json = {};
      for (const [k, pm] of [...b.ports].sort(([a], [c]) => (a < c ? -1 : a > c ? 1 : 0))) services[k] = { ports: [...pm.values()] };
      json.services = services;
    }
    const allUnhealthy = !!b && b.eps.length > 0 && b.eps.every((e) => !e.healthy);
    if (unhealthy || allUnhealthy) json.status = 'UNHEALTHY';
    const weights = new Set(b?.eps.map((e) => e.weight) ?? []);
    if (weights.size === 1) {
      const wgt = [...weights][0];
      if (wgt !== 1) json.capacity = wgt;
    }
    return json;
  };
  for (const w of model.workloads) {
    const uid = uidOf(w);
    const base: Json = { name: w.name, namespace: w.namespace, serviceAccount: w.serviceAccount };
    if (w.node) base.node = w.node;
    if (w.trustDomain) base.trustDomain = w.trustDomain;
    out.push({ typeUrl: TYPE.ADDRESS, name: uid, json: { workload: workloadJson(uid, base, w.ips, backing.get(uid), w.healthy === false) } });
  }
  for (const [uid, address] of synthetic) {
    const b = backing.get(uid) as Backing;
    const base: Json = { name: `endpoint-${address.replace(/[.:]/g, '-')}`, namespace: b.firstNs };
    const node = b.eps.find((e) => e.node)?.node;
    if (node) base.node = node;
    out.push({ typeUrl: TYPE.ADDRESS, name: uid, json: { workload: workloadJson(uid, base, [address], b, false) } });
  }
  return out;
}
