// Envoy listeners → (VIP, port) → cluster(s), and the RBAC filters guarding each filter chain.
//
// Where a destination comes from, in order:
// - the filter chain's match: `filterChainMatch.prefixRanges` (single-address ranges only) and
//   `destinationPort`, or the listener's unified `filterChainMatcher` tree (DestinationIPInput and
//   DestinationPortInput branches are followed; any other input — SNI, ALPN, transport protocol,
//   source — selects between chains by something the kernel cannot see at connect());
// - else the listener's own address when it is a specific IP (an Istio per-VIP listener
//   `10.96.0.10_53`), with its port unless the listener redirects by original destination
//   (use_original_dst: the listener port is then the redirect target, not the destination);
// - else, for an HTTP connection manager on a wildcard address (Istio's `0.0.0.0_9080`), the IP
//   literals among the route configuration's virtual host domains (istiod lists each service's
//   cluster IP, and IP:port, there): one destination per IP, served by that virtual host.
//
// From a destination to clusters: tcp_proxy `cluster` or `weighted_clusters` (weights per
// connection, exactly what the kernel does); for HTTP, the routes of the virtual host that serves
// the VIP. The kernel chooses once per connection, so HTTP routing by path/header/weight cannot be
// reproduced: when the routes name more than one cluster, connections go to the catch-all route's
// cluster(s) (prefix "/" with no other condition), else to Istio's unsubsetted service cluster
// (`outbound|PORT||HOST`), with a warning naming what per-request routing is lost.

import { isIP } from 'node:net';
import { parseIp } from '../../core/ip';
import type { Protocol } from '../../core/model';
import { serviceOfCluster } from './envoy-clusters';
import { arr, bool, field, has, int, intField, isObj, Json, obj, str, typedConfig } from './json';
import { hostBits, makeCidr, parseAddress } from '../../core/ip';
import { HTTP_RBAC, HTTP_RBAC_TYPE, NETWORK_RBAC, NETWORK_RBAC_TYPE, RbacFilterInput, SplitOptions } from './rbac';
import { Warnings } from './result';

const HCM_TYPE = 'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const TCP_PROXY_TYPE = 'envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy';
const UDP_PROXY_TYPE = 'envoy.extensions.filters.udp.udp_proxy.v3.UdpProxyConfig';
const PROXY_PROTOCOL_TYPE = 'envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol';
const DIP_INPUT = 'envoy.extensions.matching.common_inputs.network.v3.DestinationIPInput';
const DPORT_INPUT = 'envoy.extensions.matching.common_inputs.network.v3.DestinationPortInput';
const IP_MATCHER = 'xds.type.matcher.v3.IPMatcher';

export interface WeightedCluster {
  name: string;
  weight: number;
}

/** One way a VIP:port is served, as found in one filter chain. */
export interface Candidate {
  vip: string;
  port: number;
  protocol: Protocol;
  clusters: WeightedCluster[];
  via: string;
  /** The chain is chosen by something the kernel cannot see (`serverNames`, ALPN, ...). */
  selectedBy?: string;
}

/** The RBAC filters of one filter chain and the destinations they guard. */
export interface PolicyInput {
  dests: Array<{ ip?: string; port: number }>;
  filters: RbacFilterInput[];
  opts: SplitOptions;
  via: string;
}

export interface ListenerOutput {
  candidates: Candidate[];
  policies: PolicyInput[];
}

interface ChainDest {
  ip?: string;
  port?: number;
  selectedBy?: string;
  /** A destination prefix that is not a single address (cannot be a VIP). */
  prefix?: string;
}

const isType = (f: unknown, type: string, ...names: string[]): boolean => {
  const tc = typedConfig(f);
  return tc?.type === type || (tc?.type === undefined && names.includes(str(f, 'name') ?? ''));
};

// --- filter chain matching -----------------------------------------------------------------------

function inputKind(input: unknown): string {
  const t = typedConfig(input)?.type;
  if (t === DIP_INPUT) return 'ip';
  if (t === DPORT_INPUT) return 'port';
  return (t ?? str(input, 'name') ?? 'unknown input').split('.').pop()!;
}

function refine(ctx: ChainDest, kind: string, key: string): ChainDest {
  if (kind === 'port') {
    const p = int(key);
    return p !== undefined && p >= 1 && p <= 65535 ? { ...ctx, port: p } : { ...ctx, selectedBy: `destination port ${key}` };
  }
  if (kind === 'ip') {
    const [a, l] = key.split('/');
    const c = makeCidr(a, l === undefined ? hostBits(a) : Number(l));
    if (!c) return { ...ctx, selectedBy: `destination ${key}` };
    return c.prefixLen === hostBits(c.address) ? { ...ctx, ip: c.address } : { ...ctx, prefix: `${c.address}/${c.prefixLen}` };
  }
  return { ...ctx, selectedBy: ctx.selectedBy ? `${ctx.selectedBy}, ${kind}` : kind };
}

function walkOnMatch(om: unknown, ctx: ChainDest, out: Map<string, ChainDest[]>, depth: number): void {
  if (!isObj(om) || depth > 32) return;
  const action = obj(om, 'action');
  if (action) {
    const chain = str(typedConfig(action)?.value, 'value') ?? str(action, 'name');
    if (chain !== undefined) out.set(chain, [...(out.get(chain) ?? []), ctx]);
  }
  const m = obj(om, 'matcher');
  if (m) walkMatcher(m, ctx, out, depth + 1);
}

/** Follows an xds.type.matcher.v3.Matcher, recording the destination context of each chain it can reach. */
function walkMatcher(m: Json, ctx: ChainDest, out: Map<string, ChainDest[]>, depth: number): void {
  if (depth > 32) return;
  const tree = obj(m, 'matcherTree');
  let kind: string | undefined;
  if (tree) {
    kind = inputKind(field(tree, 'input'));
    for (const mapName of ['exactMatchMap', 'prefixMatchMap']) {
      const map = obj(obj(tree, mapName), 'map');
      for (const [k, om] of Object.entries(map ?? {})) walkOnMatch(om, refine(ctx, kind, k), out, depth);
    }
    const cm = typedConfig(field(tree, 'customMatch'));
    if (cm?.type === IP_MATCHER) {
      for (const rm of arr(cm.value, 'rangeMatchers')) {
        for (const r of arr(rm, 'ranges')) {
          const a = str(r, 'addressPrefix') ?? '';
          const key = `${a}/${int(field(r, 'prefixLen')) ?? 0}`;
          walkOnMatch(field(rm, 'onMatch'), kind === 'ip' ? refine(ctx, 'ip', key) : refine(ctx, kind, key), out, depth);
        }
      }
    }
  }
  const list = obj(m, 'matcherList');
  if (list) {
    for (const fm of arr(list, 'matchers')) {
      const sp = obj(field(fm, 'predicate'), 'singlePredicate');
      const k = sp ? inputKind(field(sp, 'input')) : 'predicate';
      const exact = str(obj(sp, 'valueMatch'), 'exact');
      walkOnMatch(field(fm, 'onMatch'), exact !== undefined && (k === 'ip' || k === 'port') ? refine(ctx, k, exact) : refine(ctx, k === 'ip' || k === 'port' ? 'predicate' : k, ''), out, depth);
    }
  }
  // No match on an IP or port input leaves that part of the destination unknown; on any other
  // input it is one more thing the kernel cannot see.
  const nm = field(m, 'onNoMatch');
  if (nm !== undefined) walkOnMatch(nm, kind === undefined || kind === 'ip' || kind === 'port' ? ctx : refine(ctx, kind, ''), out, depth);
}

const SELECTORS = ['serverNames', 'transportProtocol', 'applicationProtocols', 'sourcePrefixRanges', 'directSourcePrefixRanges', 'sourcePorts'];

function chainDests(chain: unknown, base: { ips: Array<string | undefined>; port?: number }): ChainDest[] {
  const m = obj(chain, 'filterChainMatch') ?? {};
  const port = intField(m, 'destinationPort') ?? base.port;
  const sel = SELECTORS.filter((k) => {
    const v = field(m, k);
    return Array.isArray(v) ? v.length > 0 : v !== undefined && v !== '';
  });
  const st = field(m, 'sourceType');
  if (st !== undefined && st !== 'ANY' && st !== 0) sel.push('sourceType');
  const selectedBy = sel.length ? sel.join(', ') : undefined;
  const ranges = arr(m, 'prefixRanges');
  if (ranges.length === 0) return base.ips.map((ip) => ({ ip, port, selectedBy }));
  return ranges.map((r) => refine({ port, selectedBy }, 'ip', `${str(r, 'addressPrefix') ?? ''}/${int(field(r, 'prefixLen')) ?? 0}`));
}

// --- HTTP ---------------------------------------------------------------------------------------

function isCatchAll(route: unknown): boolean {
  const m = obj(route, 'match');
  if (!m) return false;
  const prefix = str(m, 'prefix') ?? str(m, 'pathSeparatedPrefix');
  const re = str(obj(m, 'safeRegex'), 'regex');
  const all = prefix === '/' || prefix === '' || re === '.*' || re === '/.*';
  const conditions = ['headers', 'queryParameters', 'runtimeFraction', 'grpc', 'tlsContext', 'dynamicMetadata', 'filterState'].some((k) => {
    const v = field(m, k);
    return Array.isArray(v) ? v.length > 0 : v !== undefined;
  });
  return all && !conditions;
}

function routeClusters(route: unknown): WeightedCluster[] | string {
  const act = obj(route, 'route');
  if (!act) {
    for (const k of ['redirect', 'directResponse', 'filterAction', 'nonForwardingAction']) if (has(route, k)) return k;
    return 'no action';
  }
  const c = str(act, 'cluster');
  if (c) return [{ name: c, weight: 1 }];
  const wc = obj(act, 'weightedClusters');
  if (wc) return arr(wc, 'clusters').map((x) => ({ name: str(x, 'name') ?? '', weight: int(field(x, 'weight')) ?? 0 })).filter((x) => x.name && x.weight > 0);
  for (const k of ['clusterHeader', 'clusterSpecifierPlugin', 'inlineClusterSpecifierPlugin']) if (has(act, k)) return k;
  return 'no cluster';
}

const sameClusters = (a: WeightedCluster[], b: WeightedCluster[]): boolean =>
  a.length === b.length && a.every((x, i) => x.name === b[i].name && x.weight === b[i].weight);

/** The clusters one connection to a virtual host should go to, or why there are none. */
export function clustersOfVhost(vh: unknown, label: string, w: Warnings): WeightedCluster[] | undefined {
  const routes = arr(vh, 'routes');
  const forwarding: Array<{ route: unknown; clusters: WeightedCluster[] }> = [];
  const other = new Set<string>();
  for (const r of routes) {
    const c = routeClusters(r);
    if (typeof c === 'string') other.add(c);
    else if (c.length) forwarding.push({ route: r, clusters: c });
  }
  const names = [...new Set(forwarding.flatMap((f) => f.clusters.map((c) => c.name)))];
  const dynamic = [...other].filter((k) => k.startsWith('cluster') || k.startsWith('inline'));
  if (names.length === 0) {
    w.add(label, `no route forwards to a cluster (${[...other].join(', ') || 'no routes'}); not translated`);
    return undefined;
  }
  const lost = [...other].filter((k) => !dynamic.includes(k));
  if (lost.length) w.add(label, `routes answered by Envoy itself (${lost.join(', ')}) are not reproduced per connection`);
  if (dynamic.length) w.add(label, `routes choosing the cluster per request (${dynamic.join(', ')}) are not reproduced`);
  if (names.length === 1 && forwarding.every((f) => sameClusters(f.clusters, forwarding[0].clusters))) {
    const c = forwarding[0].clusters;
    if (c.length > 1) w.add(label, 'weighted clusters are applied per connection instead of per request');
    return c.length > 1 ? c : [{ name: c[0].name, weight: 1 }];
  }
  const catchAll = forwarding.find((f) => isCatchAll(f.route));
  let chosen: WeightedCluster[] | undefined = catchAll?.clusters;
  if (!chosen) {
    const plain = names.find((n) => {
      const s = serviceOfCluster(n);
      return s.direction === 'outbound' && !s.subset && s.from !== 'fallback';
    });
    if (plain) chosen = [{ name: plain, weight: 1 }];
  }
  if (!chosen) {
    w.add(label, `HTTP routes pick between clusters ${names.join(', ')} per request and none is a catch-all; not translated (needs the L7 proxy)`);
    return undefined;
  }
  w.add(
    label,
    `HTTP routes pick between clusters ${names.join(', ')} per request (by path/header/weight); the kernel decides per connection, so all connections go to ${chosen
      .map((c) => c.name)
      .join(', ')} (per-request routing needs the L7 proxy)`,
  );
  return chosen.length === 1 ? [{ name: chosen[0].name, weight: 1 }] : chosen;
}

/** The virtual host Envoy would use for requests to `ip` (Host = the IP) on `port`. */
function vhostFor(rc: Json, ip: string, port: number): Json | undefined {
  const vhs = arr(rc, 'virtualHosts').filter(isObj);
  const forms = isIP(ip) === 6 ? [`[${ip}]`, `[${ip}]:${port}`, ip] : [ip, `${ip}:${port}`];
  const domains = (vh: Json): string[] => arr(vh, 'domains').filter((d): d is string => typeof d === 'string').map((d) => d.toLowerCase());
  return (
    vhs.find((vh) => domains(vh).some((d) => forms.includes(d))) ??
    vhs.find((vh) => domains(vh).includes('*')) ??
    (vhs.length === 1 ? vhs[0] : undefined)
  );
}

/** IP-literal domains of a route configuration's virtual hosts (for `port`), each with its vhost. */
function vipsFromVhosts(rc: Json, port: number): Array<{ ip: string; vh: Json }> {
  const out: Array<{ ip: string; vh: Json }> = [];
  const seen = new Set<string>();
  for (const vh of arr(rc, 'virtualHosts').filter(isObj)) {
    for (const d of arr(vh, 'domains')) {
      if (typeof d !== 'string') continue;
      let host = d;
      let p: number | undefined;
      const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(d);
      const v4 = /^([^:]+):(\d+)$/.exec(d);
      if (v6) [host, p] = [v6[1], v6[2] ? Number(v6[2]) : undefined];
      else if (v4) [host, p] = [v4[1], Number(v4[2])];
      if (p !== undefined && p !== port) continue;
      const ip = parseIp(host);
      if (!ip.ok || seen.has(ip.address)) continue;
      seen.add(ip.address);
      out.push({ ip: ip.address, vh });
    }
  }
  return out;
}

/** Names of HTTP filters that routes/vhosts override with typed_per_filter_config. */
function perRouteOverrides(rc: Json | undefined): Set<string> {
  const out = new Set<string>();
  const add = (o: unknown): void => Object.keys(obj(o, 'typedPerFilterConfig') ?? {}).forEach((k) => out.add(k));
  add(rc);
  for (const vh of arr(rc, 'virtualHosts')) {
    add(vh);
    for (const r of arr(vh, 'routes')) {
      add(r);
      for (const c of arr(obj(obj(r, 'route'), 'weightedClusters'), 'clusters')) add(c);
    }
  }
  return out;
}

// --- listeners ------------------------------------------------------------------------------------

/**
 * The candidates (VIP:port → clusters) and the RBAC inputs of one (valid) listener. `routes` are
 * the RDS route configurations by name; names used are added to `usedRoutes`.
 */
export function translateListener(l: Json, routes: Map<string, Json>, usedRoutes: Set<string>, w: Warnings): ListenerOutput {
  const lname = str(l, 'name') ?? '?';
  const out: ListenerOutput = { candidates: [], policies: [] };
  const sa = obj(obj(l, 'address'), 'socketAddress');
  const protocol: Protocol = field(sa, 'protocol') === 'UDP' || field(sa, 'protocol') === 1 ? 'UDP' : 'TCP';
  const originalDst = bool(l, 'useOriginalDst');
  const lport = intField(sa, 'portValue');
  const port = originalDst || !lport ? undefined : lport;
  const ips: Array<string | undefined> = [];
  const addrs = [sa, ...arr(l, 'additionalAddresses').map((a) => obj(obj(a, 'address'), 'socketAddress'))].filter(isObj);
  let wildcard = addrs.length === 0; // internal listeners have no address
  for (const a of addrs) {
    const text = str(a, 'address') ?? '';
    const p = parseIp(text);
    if (p.ok) ips.push(p.address);
    else if (parseAddress(text)?.bytes.every((b) => b === 0)) wildcard = true; // 0.0.0.0, ::, ::ffff:0.0.0.0, 0:0::0
    else w.add(`listener ${lname}`, `address ${text}: ${p.reason}; it cannot be a VIP`);
  }
  if (ips.length === 0) {
    // Bound only to addresses that cannot be VIPs (loopback, ...): not a mesh destination at all.
    if (!wildcard) return out;
    ips.push(undefined);
  }
  const proxyProtocol = arr(l, 'listenerFilters').some((f) => isType(f, PROXY_PROTOCOL_TYPE, 'envoy.filters.listener.proxy_protocol'));

  // UDP: the proxy is a listener filter, there are no filter chains.
  for (const f of arr(l, 'listenerFilters')) {
    if (!isType(f, UDP_PROXY_TYPE, 'envoy.filters.udp_listener.udp_proxy')) continue;
    const cluster = str(typedConfig(f)?.value, 'cluster');
    if (!cluster) {
      w.add(`listener ${lname}`, 'udp_proxy chooses its cluster with a matcher; not translated');
      continue;
    }
    for (const ip of ips) {
      if (ip && port) out.candidates.push({ vip: ip, port, protocol: 'UDP', clusters: [{ name: cluster, weight: 1 }], via: `listener ${lname}` });
      else w.add(`listener ${lname}`, 'udp_proxy on a wildcard address or without a port: no VIP; not translated');
    }
  }

  const chains = arr(l, 'filterChains').filter(isObj);
  const dflt = obj(l, 'defaultFilterChain');
  const all = chains.map((c, i) => ({ chain: c, name: str(c, 'name') || `#${i}`, isDefault: false }));
  if (dflt) all.push({ chain: dflt, name: str(dflt, 'name') || 'default', isDefault: true });

  // With a filter_chain_matcher Envoy ignores filter_chain_match and selects chains by name.
  const matcher = obj(l, 'filterChainMatcher');
  const reached = new Map<string, ChainDest[]>();
  if (matcher) walkMatcher(matcher, { port }, reached, 0);
  const destsOf = (c: Json, name: string, isDefault: boolean): ChainDest[] => {
    if (matcher) return (reached.get(name) ?? []).map((d) => ({ ...d, ip: d.ip ?? (d.prefix ? undefined : ips[0]) }));
    if (isDefault) return ips.map((ip) => ({ ip, port, selectedBy: 'matching no other chain' }));
    return chainDests(c, { ips, port });
  };

  for (const { chain, name, isDefault } of all) {
    const label = `listener ${lname} chain ${name}`;
    const dests = destsOf(chain, name, isDefault);
    for (const d of dests) if (d.prefix) w.add(label, `destination prefix ${d.prefix} is not a single address, so it is not a VIP; not translated`);
    const filters = arr(chain, 'filters').filter(isObj);
    const rbac: RbacFilterInput[] = filters
      .filter((f) => isType(f, NETWORK_RBAC_TYPE, NETWORK_RBAC))
      .map((f) => ({ name: str(f, 'name') ?? NETWORK_RBAC, typedConfig: field(f, 'typedConfig') }));
    const opts: SplitOptions = { proxyProtocol };
    const terminal = filters[filters.length - 1];
    // (ip, port, clusters) this chain serves; ip undefined until derived.
    const served: Array<{ ip: string; port: number; clusters: WeightedCluster[]; selectedBy?: string; via: string }> = [];
    const policyDests: Array<{ ip?: string; port: number }> = [];
    const usable = dests.filter((d) => !d.prefix);
    const noPort = usable.some((d) => d.port === undefined);
    if (noPort) w.add(label, 'no destination port is known (an original-destination or internal listener without a port match); not translated');

    if (terminal && isType(terminal, TCP_PROXY_TYPE, 'envoy.filters.network.tcp_proxy', 'envoy.tcp_proxy')) {
      const tp = typedConfig(terminal)?.value ?? {};
      let clusters: WeightedCluster[] | undefined;
      if (has(tp, 'tunnelingConfig')) w.add(label, 'tcp_proxy tunnels its upstream over HTTP CONNECT (tunneling_config); not translated');
      else if (str(tp, 'cluster')) clusters = [{ name: str(tp, 'cluster')!, weight: 1 }];
      else if (obj(tp, 'weightedClusters')) {
        clusters = arr(obj(tp, 'weightedClusters'), 'clusters').map((c) => ({ name: str(c, 'name') ?? '', weight: int(field(c, 'weight')) ?? 1 }));
      } else w.add(label, 'tcp_proxy names no cluster; not translated');
      for (const d of usable) {
        if (d.port === undefined) continue;
        policyDests.push({ ...(d.ip ? { ip: d.ip } : {}), port: d.port });
        if (!clusters) continue;
        if (!d.ip) {
          w.add(label, `tcp_proxy to ${clusters.map((c) => c.name).join(', ')} on port ${d.port} has no destination IP (wildcard address, no prefix match); not a VIP service`);
          continue;
        }
        served.push({ ip: d.ip, port: d.port, clusters, selectedBy: d.selectedBy, via: label });
      }
    } else if (terminal && isType(terminal, HCM_TYPE, 'envoy.filters.network.http_connection_manager', 'envoy.http_connection_manager')) {
      const hcm = typedConfig(terminal)?.value ?? {};
      let rc = obj(hcm, 'routeConfig');
      let rcLabel = 'inline route configuration';
      // Envoy's admin dump lists inline route configurations under static_route_configs too.
      if (rc && str(rc, 'name')) usedRoutes.add(str(rc, 'name')!);
      const rdsName = str(obj(hcm, 'rds'), 'routeConfigName');
      if (!rc && rdsName !== undefined) {
        usedRoutes.add(rdsName);
        rc = routes.get(rdsName);
        rcLabel = `route ${rdsName}`;
        if (!rc) w.add(label, `RDS route configuration ${JSON.stringify(rdsName)} is not known; its destinations are not translated`);
      }
      if (!rc && has(hcm, 'scopedRoutes')) w.add(label, 'scoped routes (SRDS) are not supported; not translated');
      const overrides = perRouteOverrides(rc);
      for (const hf of arr(hcm, 'httpFilters').filter(isObj)) {
        if (!isType(hf, HTTP_RBAC_TYPE, HTTP_RBAC)) continue;
        const fname = str(hf, 'name') ?? HTTP_RBAC;
        if (bool(hf, 'disabled') && !overrides.has(fname)) continue; // off unless a route enables it
        if (overrides.has(fname)) opts.perRouteOverride = true;
        rbac.push({ name: fname, typedConfig: field(hf, 'typedConfig') });
      }
      opts.remoteIpIsPeer = bool(hcm, 'useRemoteAddress') && !((intField(hcm, 'xffNumTrustedHops') ?? 0) > 0) && !has(hcm, 'originalIpDetectionExtensions');
      for (const d of usable) {
        if (d.port === undefined) continue;
        if (!rc) {
          policyDests.push({ ...(d.ip ? { ip: d.ip } : {}), port: d.port });
          continue;
        }
        const pairs = d.ip ? [{ ip: d.ip, vh: vhostFor(rc, d.ip, d.port) }] : vipsFromVhosts(rc, d.port);
        if (pairs.length === 0) {
          policyDests.push({ port: d.port });
          w.add(label, `HTTP on port ${d.port} has no destination IP (wildcard address, no prefix match, no IP among the ${rcLabel} domains); not a VIP service`);
        }
        for (const { ip, vh } of pairs) {
          policyDests.push({ ip, port: d.port });
          if (!vh) {
            w.add(label, `no virtual host of ${rcLabel} serves ${ip}:${d.port} (Host-based routing only); not translated`);
            continue;
          }
          const vlabel = `${rcLabel} vhost ${str(vh, 'name') ?? '?'}`;
          const clusters = clustersOfVhost(vh, vlabel, w);
          if (clusters) served.push({ ip, port: d.port, clusters, selectedBy: d.selectedBy, via: `${label} ${vlabel}` });
        }
      }
    } else if (terminal) {
      w.add(label, `ends in filter ${str(terminal, 'name') ?? typedConfig(terminal)?.type ?? '?'}, which is not translated (only tcp_proxy and http_connection_manager are)`);
      for (const d of usable) if (d.port !== undefined) policyDests.push({ ...(d.ip ? { ip: d.ip } : {}), port: d.port });
    }

    for (const s of served) {
      out.candidates.push({ vip: s.ip, port: s.port, protocol, clusters: s.clusters, via: s.via, ...(s.selectedBy ? { selectedBy: s.selectedBy } : {}) });
    }
    if (rbac.length) {
      if (policyDests.length === 0) {
        w.add(label, `RBAC filters guard no destination the model can name (${dests.length ? 'no destination port known' : 'chain not reachable'}); their policy is not in the model`);
      } else out.policies.push({ dests: dedupeDests(policyDests), filters: rbac, opts, via: label });
    }
  }
  return out;
}

function dedupeDests(ds: Array<{ ip?: string; port: number }>): Array<{ ip?: string; port: number }> {
  const seen = new Set<string>();
  return ds.filter((d) => {
    const k = `${d.ip ?? '*'}|${d.port}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}
