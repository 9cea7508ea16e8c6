// Per-resource validation: the reason a resource must be rejected (NACKed), or null.
//
// The rules are Envoy's own where Envoy has one (protoc-gen-validate annotations in the
// envoy/config/** protos: load_balancing_weight >= 1, port_value <= 65535, priority <= 128,
// cluster_name min_len 1, RBAC Permission.Set/Principal.Set min_items 1, ...) plus what the kernel
// datapath and the model need to be able to trust (an endpoint port of 0 cannot be connected to,
// IP bytes must be 4 or 16 long, an Authorization port must fit 16 bits — ztunnel casts it to u16,
// so 65616 would silently become 80). Every reason starts with the field path as spelled in the
// input, e.g. `endpoints[0].lbEndpoints[2].endpoint.address.socketAddress.portValue: 70000 is out
// of range (1..65535)`.
//
// The xDS client calls this per resource before accepting a response; the translators call it on
// every resource first, so a resource that fails here contributes nothing to a model.

import { isIP } from 'node:net';
import { hostBits, parseAddress } from '../../core/ip';
import { TYPE } from '../types';
import { decodeBytes, field, int, isHostname, isObj, Json, keyOf, shortType } from './json';

export const UINT32_MAX = 4294967295;

export const CLUSTER_TYPES = ['STATIC', 'STRICT_DNS', 'LOGICAL_DNS', 'EDS', 'ORIGINAL_DST'] as const;
export const HEALTH_STATUSES = ['UNKNOWN', 'HEALTHY', 'UNHEALTHY', 'DRAINING', 'TIMEOUT', 'DEGRADED'] as const;
export const RBAC_ACTIONS = ['ALLOW', 'DENY', 'LOG'] as const;
export const AUTHZ_SCOPES = ['GLOBAL', 'NAMESPACE', 'WORKLOAD_SELECTOR'] as const;
export const AUTHZ_ACTIONS = ['ALLOW', 'DENY'] as const;
export const WORKLOAD_STATUSES = ['HEALTHY', 'UNHEALTHY'] as const;
export const LB_SCOPES = ['UNSPECIFIED_SCOPE', 'REGION', 'ZONE', 'SUBZONE', 'NODE', 'CLUSTER', 'NETWORK'] as const;
export const LB_MODES = ['UNSPECIFIED_MODE', 'STRICT', 'FAILOVER', 'PASSTHROUGH'] as const;
export const LB_HEALTH_POLICIES = ['ONLY_HEALTHY', 'ALLOW_ALL'] as const;

const MAX_DEPTH = 64;

class Invalid extends Error {}

function fail(path: string, msg: string): never {
  throw new Invalid(`${path || '(resource)'}: ${msg}`);
}

function show(v: unknown): string {
  const s = typeof v === 'string' ? JSON.stringify(v) : (JSON.stringify(v) ?? String(v));
  return s.length > 60 ? s.slice(0, 57) + '...' : s;
}

const join = (path: string, key: string): string => (path ? `${path}.${key}` : key);
const at = (path: string, o: unknown, name: string): string => join(path, keyOf(o, name) ?? name);

function integer(path: string, v: unknown, min: number, max: number): number {
  const n = int(v);
  if (n === undefined) fail(path, `${show(v)} is not an integer`);
  if (n < min || n > max) fail(path, `${n} is out of range (${min}..${max})`);
  return n;
}

function optInt(path: string, o: Json, name: string, min: number, max: number): number | undefined {
  const v = field(o, name);
  return v === undefined || v === null ? undefined : integer(at(path, o, name), v, min, max);
}

function optObj(path: string, o: Json, name: string): Json | undefined {
  const v = field(o, name);
  if (v === undefined || v === null) return undefined;
  if (!isObj(v)) fail(at(path, o, name), `must be an object, got ${show(v)}`);
  return v;
}

function reqObj(path: string, o: Json, name: string): Json {
  const v = optObj(path, o, name);
  if (v === undefined) fail(at(path, o, name), 'is required');
  return v;
}

function list(path: string, o: Json, name: string, minItems = 0): unknown[] {
  const v = field(o, name);
  if (v === undefined || v === null) {
    if (minItems > 0) fail(at(path, o, name), `needs at least ${minItems} item(s)`);
    return [];
  }
  if (!Array.isArray(v)) fail(at(path, o, name), `must be a list, got ${show(v)}`);
  if (v.length < minItems) fail(at(path, o, name), `needs at least ${minItems} item(s)`);
  return v;
}

function objItem(path: string, v: unknown): Json {
  if (!isObj(v)) fail(path, `must be an object, got ${show(v)}`);
  return v;
}

function optStr(path: string, o: Json, name: string): string | undefined {
  const v = field(o, name);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') fail(at(path, o, name), `must be a string, got ${show(v)}`);
  return v;
}

function reqStr(path: string, o: Json, name: string): string {
  const v = optStr(path, o, name);
  if (v === undefined || v === '') fail(at(path, o, name), 'is required (non-empty string)');
  return v;
}

function optEnum(path: string, o: Json, name: string, names: readonly string[]): void {
  const v = field(o, name);
  if (v === undefined || v === null) return;
  if (typeof v === 'string' ? names.includes(v) : int(v) !== undefined && int(v)! >= 0 && int(v)! < names.length) return;
  fail(at(path, o, name), `${show(v)} is not one of ${names.join(', ')}`);
}

// --- Envoy -----------------------------------------------------------------------------------

/** envoy.config.core.v3.Address. `endpoint`: an upstream host, whose port must be 1..65535. */
function address(path: string, a: Json, endpoint: boolean): void {
  const sa = optObj(path, a, 'socketAddress');
  const pipe = optObj(path, a, 'pipe');
  const internal = optObj(path, a, 'envoyInternalAddress');
  const n = [sa, pipe, internal].filter((x) => x !== undefined).length;
  if (n === 0) fail(path, 'has none of socketAddress, pipe, envoyInternalAddress');
  if (n > 1) fail(path, 'has more than one of socketAddress, pipe, envoyInternalAddress');
  if (pipe) reqStr(at(path, a, 'pipe'), pipe, 'path');
  if (!sa) return;
  const p = at(path, a, 'socketAddress');
  const addr = reqStr(p, sa, 'address');
  if (!isIP(addr) && !isHostname(addr)) fail(at(p, sa, 'address'), `${show(addr)} is neither an IP address nor a host name`);
  optEnum(p, sa, 'protocol', ['TCP', 'UDP']);
  const port = field(sa, 'portValue');
  if (port === undefined || port === null) {
    if (field(sa, 'namedPort') !== undefined) {
      if (endpoint) fail(at(p, sa, 'namedPort'), 'named ports are not supported for upstream endpoints');
      return;
    }
    if (endpoint) fail(join(p, 'portValue'), 'is required for an endpoint (1..65535)');
    return;
  }
  integer(at(p, sa, 'portValue'), port, endpoint ? 1 : 0, 65535);
}

/** envoy.config.endpoint.v3.ClusterLoadAssignment. */
function cla(path: string, o: Json): void {
  reqStr(path, o, 'clusterName');
  list(path, o, 'endpoints').forEach((le, i) => {
    const lp = `${at(path, o, 'endpoints')}[${i}]`;
    const l = objItem(lp, le);
    // Envoy's own dump prints an unset locality weight as 0 (see the waypoint fixture), so 0 is
    // accepted here even though the proto says gte 1; it means "no locality weight".
    optInt(lp, l, 'loadBalancingWeight', 0, UINT32_MAX);
    optInt(lp, l, 'priority', 0, 128);
    const loc = optObj(lp, l, 'locality');
    if (loc) for (const k of ['region', 'zone', 'subZone']) optStr(at(lp, l, 'locality'), loc, k);
    let sum = 0;
    list(lp, l, 'lbEndpoints').forEach((lbe, j) => {
      const ep = `${at(lp, l, 'lbEndpoints')}[${j}]`;
      const e = objItem(ep, lbe);
      const endpoint = optObj(ep, e, 'endpoint');
      if (!endpoint) {
        if (optStr(ep, e, 'endpointName') === undefined) fail(ep, 'has neither endpoint nor endpointName');
      } else {
        address(at(at(ep, e, 'endpoint'), endpoint, 'address'), reqObj(at(ep, e, 'endpoint'), endpoint, 'address'), true);
        optStr(at(ep, e, 'endpoint'), endpoint, 'hostname');
      }
      optEnum(ep, e, 'healthStatus', HEALTH_STATUSES);
      sum += optInt(ep, e, 'loadBalancingWeight', 1, UINT32_MAX) ?? 1;
      if (sum > UINT32_MAX) fail(at(ep, e, 'loadBalancingWeight'), `the weights of locality ${i} add up to more than ${UINT32_MAX}`);
    });
  });
}

function cluster(path: string, o: Json): void {
  reqStr(path, o, 'name');
  optEnum(path, o, 'type', CLUSTER_TYPES);
  const ct = optObj(path, o, 'clusterType');
  if (ct) reqStr(at(path, o, 'clusterType'), ct, 'name');
  const eds = optObj(path, o, 'edsClusterConfig');
  if (eds) optStr(at(path, o, 'edsClusterConfig'), eds, 'serviceName');
  const la = optObj(path, o, 'loadAssignment');
  if (la) cla(at(path, o, 'loadAssignment'), la);
}

function cidrRange(path: string, c: unknown): void {
  const o = objItem(path, c);
  const a = reqStr(path, o, 'addressPrefix');
  if (parseAddress(a) === undefined) fail(at(path, o, 'addressPrefix'), `${show(a)} is not an IP address`);
  optInt(path, o, 'prefixLen', 0, hostBits(a));
}

function permission(path: string, p: unknown, depth: number): void {
  if (depth > MAX_DEPTH) fail(path, `nested more than ${MAX_DEPTH} levels deep`);
  const o = objItem(path, p);
  if (Object.keys(o).length === 0) fail(path, 'sets no rule');
  for (const set of ['andRules', 'orRules']) {
    const s = optObj(path, o, set);
    if (s) list(at(path, o, set), s, 'rules', 1).forEach((r, i) => permission(`${at(at(path, o, set), s, 'rules')}[${i}]`, r, depth + 1));
  }
  if (field(o, 'notRule') !== undefined) permission(at(path, o, 'notRule'), field(o, 'notRule'), depth + 1);
  if (field(o, 'destinationIp') !== undefined) cidrRange(at(path, o, 'destinationIp'), field(o, 'destinationIp'));
  optInt(path, o, 'destinationPort', 0, 65535);
  const r = optObj(path, o, 'destinationPortRange');
  if (r) {
    const rp = at(path, o, 'destinationPortRange');
    const start = optInt(rp, r, 'start', 0, 65535) ?? 0;
    const end = optInt(rp, r, 'end', 0, 65536) ?? 0;
    if (end < start) fail(rp, `end ${end} is before start ${start}`);
  }
}

function principal(path: string, p: unknown, depth: number): void {
  if (depth > MAX_DEPTH) fail(path, `nested more than ${MAX_DEPTH} levels deep`);
  const o = objItem(path, p);
  if (Object.keys(o).length === 0) fail(path, 'sets no identifier');
  for (const set of ['andIds', 'orIds']) {
    const s = optObj(path, o, set);
    if (s) list(at(path, o, set), s, 'ids', 1).forEach((r, i) => principal(`${at(at(path, o, set), s, 'ids')}[${i}]`, r, depth + 1));
  }
  if (field(o, 'notId') !== undefined) principal(at(path, o, 'notId'), field(o, 'notId'), depth + 1);
  for (const k of ['sourceIp', 'directRemoteIp', 'remoteIp']) if (field(o, k) !== undefined) cidrRange(at(path, o, k), field(o, k));
  const au = field(o, 'authenticated');
  if (au !== undefined && au !== null && !isObj(au)) fail(at(path, o, 'authenticated'), `must be an object, got ${show(au)}`);
}

function rbacRules(path: string, r: Json): void {
  optEnum(path, r, 'action', RBAC_ACTIONS);
  const pols = optObj(path, r, 'policies');
  if (!pols) return;
  const pp = at(path, r, 'policies');
  for (const [name, pol] of Object.entries(pols)) {
    const p = join(pp, name);
    const po = objItem(p, pol);
    list(p, po, 'permissions', 1).forEach((x, i) => permission(`${at(p, po, 'permissions')}[${i}]`, x, 0));
    list(p, po, 'principals', 1).forEach((x, i) => principal(`${at(p, po, 'principals')}[${i}]`, x, 0));
  }
}

/** envoy.extensions.filters.{http,network}.rbac.v3.RBAC. */
export function validateRbacConfig(cfg: unknown, path = ''): string | null {
  try {
    const o = objItem(path, cfg);
    const r = optObj(path, o, 'rules');
    if (r) rbacRules(at(path, o, 'rules'), r);
    const s = optObj(path, o, 'shadowRules');
    if (s) rbacRules(at(path, o, 'shadowRules'), s);
    return null;
  } catch (e) {
    if (e instanceof Invalid) return e.message;
    throw e;
  }
}

const RBAC_TYPES = new Set(['envoy.extensions.filters.http.rbac.v3.RBAC', 'envoy.extensions.filters.network.rbac.v3.RBAC']);
const HCM_TYPE = 'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager';
const TCP_PROXY_TYPE = 'envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy';

/** A filter's typed config, validated where we read it (RBAC, tcp_proxy, HCM). */
function filter(path: string, f: unknown): void {
  const o = objItem(path, f);
  reqStr(path, o, 'name');
  const tc = optObj(path, o, 'typedConfig');
  if (!tc) return;
  const tp = at(path, o, 'typedConfig');
  // An Any in proto3 JSON carries its type; without it the config cannot be interpreted.
  if (typeof tc['@type'] !== 'string' || tc['@type'] === '') fail(tp, 'has no "@type"');
  const t = shortType(tc['@type']);
  if (t !== undefined && RBAC_TYPES.has(t)) {
    const r = validateRbacConfig(tc, tp);
    if (r) throw new Invalid(r);
  } else if (t === TCP_PROXY_TYPE) {
    optStr(tp, tc, 'cluster');
    const wc = optObj(tp, tc, 'weightedClusters');
    if (wc) {
      list(at(tp, tc, 'weightedClusters'), wc, 'clusters', 1).forEach((c, i) => {
        const cp = `${at(at(tp, tc, 'weightedClusters'), wc, 'clusters')}[${i}]`;
        const co = objItem(cp, c);
        reqStr(cp, co, 'name');
        optInt(cp, co, 'weight', 1, UINT32_MAX);
      });
    }
  } else if (t === HCM_TYPE) {
    const rds = optObj(tp, tc, 'rds');
    if (rds) optStr(at(tp, tc, 'rds'), rds, 'routeConfigName');
    const rc = optObj(tp, tc, 'routeConfig');
    if (rc) routeConfig(at(tp, tc, 'routeConfig'), rc, true);
    list(tp, tc, 'httpFilters').forEach((hf, i) => filter(`${at(tp, tc, 'httpFilters')}[${i}]`, hf));
  }
}

function filterChain(path: string, c: unknown): void {
  const o = objItem(path, c);
  optStr(path, o, 'name');
  const m = optObj(path, o, 'filterChainMatch');
  if (m) {
    const mp = at(path, o, 'filterChainMatch');
    optInt(mp, m, 'destinationPort', 1, 65535);
    for (const k of ['prefixRanges', 'sourcePrefixRanges', 'directSourcePrefixRanges']) {
      list(mp, m, k).forEach((r, i) => cidrRange(`${at(mp, m, k)}[${i}]`, r));
    }
    list(mp, m, 'sourcePorts').forEach((p, i) => integer(`${at(mp, m, 'sourcePorts')}[${i}]`, p, 1, 65535));
  }
  list(path, o, 'filters').forEach((f, i) => filter(`${at(path, o, 'filters')}[${i}]`, f));
}

function listener(path: string, o: Json): void {
  reqStr(path, o, 'name');
  const a = optObj(path, o, 'address');
  if (a) address(at(path, o, 'address'), a, false);
  list(path, o, 'filterChains').forEach((c, i) => filterChain(`${at(path, o, 'filterChains')}[${i}]`, c));
  const d = optObj(path, o, 'defaultFilterChain');
  if (d) filterChain(at(path, o, 'defaultFilterChain'), d);
}

function routeConfig(path: string, o: Json, inline: boolean): void {
  if (inline) optStr(path, o, 'name');
  else reqStr(path, o, 'name');
  list(path, o, 'virtualHosts').forEach((vh, i) => {
    const vp = `${at(path, o, 'virtualHosts')}[${i}]`;
    const v = objItem(vp, vh);
    reqStr(vp, v, 'name');
    list(vp, v, 'domains', 1).forEach((d, j) => {
      if (typeof d !== 'string' || d === '') fail(`${at(vp, v, 'domains')}[${j}]`, `must be a non-empty string, got ${show(d)}`);
    });
    list(vp, v, 'routes').forEach((r, j) => {
      const rp = `${at(vp, v, 'routes')}[${j}]`;
      const ro = objItem(rp, r);
      reqObj(rp, ro, 'match');
      const act = optObj(rp, ro, 'route');
      if (!act) return;
      const ap = at(rp, ro, 'route');
      const c = optStr(ap, act, 'cluster');
      if (c === '') fail(at(ap, act, 'cluster'), 'is empty');
      const wc = optObj(ap, act, 'weightedClusters');
      if (wc) {
        list(at(ap, act, 'weightedClusters'), wc, 'clusters', 1).forEach((x, k) => {
          const cp = `${at(at(ap, act, 'weightedClusters'), wc, 'clusters')}[${k}]`;
          const co = objItem(cp, x);
          reqStr(cp, co, 'name');
          optInt(cp, co, 'weight', 0, UINT32_MAX);
        });
      }
    });
  });
}

// --- Istio ambient -------------------------------------------------------------------------------

function ipBytes(path: string, v: unknown): void {
  const b = decodeBytes(v);
  if (b === undefined) fail(path, `${show(v)} is not base64`);
  if (b.length !== 4 && b.length !== 16) fail(path, `${b.length} bytes; an IP address has 4 (IPv4) or 16 (IPv6)`);
}

function ports(path: string, o: Json): void {
  list(path, o, 'ports').forEach((p, i) => {
    const pp = `${at(path, o, 'ports')}[${i}]`;
    const po = objItem(pp, p);
    integer(at(pp, po, 'servicePort'), field(po, 'servicePort') ?? 0, 1, 65535);
    optInt(pp, po, 'targetPort', 0, 65535);
  });
}

function workload(path: string, w: Json): void {
  const uid = optStr(path, w, 'uid');
  const name = optStr(path, w, 'name');
  if (!uid && !name) fail(join(path, 'uid'), 'is required (a workload needs a uid or a name)');
  for (const k of ['namespace', 'serviceAccount', 'trustDomain', 'node', 'network', 'hostname', 'clusterId']) optStr(path, w, k);
  list(path, w, 'addresses').forEach((a, i) => ipBytes(`${at(path, w, 'addresses')}[${i}]`, a));
  optEnum(path, w, 'status', WORKLOAD_STATUSES);
  optInt(path, w, 'capacity', 0, UINT32_MAX);
  list(path, w, 'authorizationPolicies').forEach((p, i) => {
    if (typeof p !== 'string') fail(`${at(path, w, 'authorizationPolicies')}[${i}]`, `must be a string, got ${show(p)}`);
  });
  const svcs = optObj(path, w, 'services');
  if (svcs) {
    const sp = at(path, w, 'services');
    for (const [k, v] of Object.entries(svcs)) {
      if (!/^[^/]+\/[^/]+$/.test(k)) fail(join(sp, JSON.stringify(k)), 'key must be "namespace/hostname"');
      ports(join(sp, JSON.stringify(k)), objItem(join(sp, JSON.stringify(k)), v));
    }
  }
  const loc = optObj(path, w, 'locality');
  if (loc) for (const k of ['region', 'zone', 'subzone']) optStr(at(path, w, 'locality'), loc, k);
}

function service(path: string, s: Json): void {
  reqStr(path, s, 'name');
  reqStr(path, s, 'namespace');
  reqStr(path, s, 'hostname');
  list(path, s, 'addresses').forEach((a, i) => {
    const ap = `${at(path, s, 'addresses')}[${i}]`;
    const ao = objItem(ap, a);
    optStr(ap, ao, 'network');
    ipBytes(at(ap, ao, 'address'), field(ao, 'address'));
  });
  ports(path, s);
  const lb = optObj(path, s, 'loadBalancing');
  if (lb) {
    const lp = at(path, s, 'loadBalancing');
    list(lp, lb, 'routingPreference').forEach((v, i) => {
      const ok = typeof v === 'string' ? (LB_SCOPES as readonly string[]).includes(v) : int(v) !== undefined && int(v)! >= 0 && int(v)! < LB_SCOPES.length;
      if (!ok) fail(`${at(lp, lb, 'routingPreference')}[${i}]`, `${show(v)} is not one of ${LB_SCOPES.join(', ')}`);
    });
    optEnum(lp, lb, 'mode', LB_MODES);
    optEnum(lp, lb, 'healthPolicy', LB_HEALTH_POLICIES);
  }
}

function stringMatches(path: string, m: Json, name: string): void {
  list(path, m, name).forEach((x, i) => {
    const p = `${at(path, m, name)}[${i}]`;
    const o = objItem(p, x);
    const set = ['exact', 'prefix', 'suffix', 'presence'].filter((k) => field(o, k) !== undefined && field(o, k) !== null);
    if (set.length !== 1) fail(p, `must set exactly one of exact, prefix, suffix, presence (has ${set.length})`);
    if (set[0] !== 'presence') optStr(p, o, set[0]);
  });
}

function authorization(path: string, a: Json): void {
  reqStr(path, a, 'name');
  optStr(path, a, 'namespace');
  optEnum(path, a, 'scope', AUTHZ_SCOPES);
  optEnum(path, a, 'action', AUTHZ_ACTIONS);
  list(path, a, 'groups').forEach((g, gi) => {
    const gp = `${at(path, a, 'groups')}[${gi}]`;
    const go = objItem(gp, g);
    list(gp, go, 'rules').forEach((r, ri) => {
      const rp = `${at(gp, go, 'rules')}[${ri}]`;
      const ro = objItem(rp, r);
      list(rp, ro, 'matches').forEach((m, mi) => {
        const mp = `${at(rp, ro, 'matches')}[${mi}]`;
        const mo = objItem(mp, m);
        for (const k of ['namespaces', 'notNamespaces', 'principals', 'notPrincipals']) stringMatches(mp, mo, k);
        for (const k of ['serviceAccounts', 'notServiceAccounts']) {
          list(mp, mo, k).forEach((x, i) => {
            const p = `${at(mp, mo, k)}[${i}]`;
            const o = objItem(p, x);
            reqStr(p, o, 'namespace');
            reqStr(p, o, 'serviceAccount');
          });
        }
        for (const k of ['sourceIps', 'notSourceIps', 'destinationIps', 'notDestinationIps']) {
          list(mp, mo, k).forEach((x, i) => {
            const p = `${at(mp, mo, k)}[${i}]`;
            const o = objItem(p, x);
            ipBytes(at(p, o, 'address'), field(o, 'address'));
            const len = decodeBytes(field(o, 'address'))!.length === 4 ? 32 : 128;
            optInt(p, o, 'length', 0, len);
          });
        }
        for (const k of ['destinationPorts', 'notDestinationPorts']) {
          list(mp, mo, k).forEach((x, i) => integer(`${at(mp, mo, k)}[${i}]`, x, 1, 65535));
        }
      });
    });
  });
}

function address_(path: string, a: Json): void {
  const w = optObj(path, a, 'workload');
  const s = optObj(path, a, 'service');
  if (w && s) fail(path, 'has both workload and service');
  if (w) workload(at(path, a, 'workload'), w);
  else if (s) service(at(path, a, 'service'), s);
  else fail(path, 'has neither workload nor service');
}

/**
 * The reason `json` (resource `name` of type `typeUrl`) must be rejected, or null if it is
 * acceptable. Never throws. Unknown type URLs are not judged (null).
 */
export function validateResource(typeUrl: string, name: string, json: unknown): string | null {
  try {
    if (!isObj(json)) return `(resource): must be a JSON object, got ${show(json)}`;
    if (typeof name !== 'string' || name === '') return '(resource): has no name';
    switch (typeUrl) {
      case TYPE.CLUSTER:
        cluster('', json);
        break;
      case TYPE.ENDPOINT:
        cla('', json);
        break;
      case TYPE.LISTENER:
        listener('', json);
        break;
      case TYPE.ROUTE:
        routeConfig('', json, false);
        break;
      case TYPE.ADDRESS:
        address_('', json);
        break;
      case TYPE.AUTHORIZATION:
        authorization('', json);
        break;
      default:
        return null;
    }
    return null;
  } catch (e) {
    if (e instanceof Invalid) return e.message;
    // A bug here must not take the client down; report it as the reason instead.
    return `(resource): validation failed: ${e instanceof Error ? e.message : String(e)}`;
  }
}
