// Istio ambient resources (istio.workload.Address, istio.security.Authorization, as ztunnel gets
// them over WDS/xDS) → the sockmesh model.
//
// Authorization semantics are ztunnel's (src/rbac.rs), so that a policy means here what it means
// there:
// - groups are OR'd; a policy with no groups matches nothing (an ALLOW policy then denies all,
//   because an applying ALLOW policy must match);
// - rules inside a group are AND'd; a group with no rules matches everything;
// - matches inside a rule are OR'd; a rule with no matches matches everything;
// - within a match, every field that is set is AND'd, the values of one field are OR'd, and a
//   `not_*` field holds when none of its values match;
// - a match with no field set matches NOTHING (ztunnel skips it). istiod writes such empty
//   matches for the HTTP parts of a DENY policy (see ambient-authorization/deny-groups.yaml: the
//   "only L7" rule becomes two rules of `[{}]`), so such a DENY rule never denies at L4 — the
//   documented ztunnel behaviour (istio/istio#61126); a warning names every one of them.
// - principals are matched without the `spiffe://` prefix in ztunnel; the model's principal is the
//   full SPIFFE id, so exact/prefix values get `spiffe://` prepended.
// - ServiceAccountMatch {namespace, serviceAccount} becomes `principal ends with
//   /ns/NS/sa/SA`: for a SPIFFE id spiffe://TD/ns/NS/sa/SA (no "/" in TD, NS or SA) that is the
//   same test, trust domain ignored, as in ztunnel.
// - Address length: ztunnel builds IpNet(address, length), so length 0 is /0 (every address of
//   that family). proto3 cannot tell 0 from unset, and istiod always sets the length (32/128 for a
//   bare IP), so 0 only comes from an explicit /0; we follow ztunnel and warn when the address has
//   host bits set (which suggests a forgotten length).

import type { Cidr, Endpoint, L4Expr, L4Policy, Model, PolicyScope, Service, StringMatch, Workload } from '../../core/model';
import { serviceRef } from '../../core/model';
import { TYPE } from '../types';
import { MAX_WEIGHT } from './envoy-clusters';
import { ANY, NEVER, simplify } from './expr';
import { arr, decodeBytes, enumName, errorText, field, has, int, intField, ipFromBytes, isObj, Json, obj, str } from './json';
import { parseIp, rangeFromBytes, toCidr } from '../../core/ip';
import { TranslateResult, Warnings } from './result';
import { AUTHZ_ACTIONS, AUTHZ_SCOPES, LB_HEALTH_POLICIES, LB_MODES, LB_SCOPES, validateResource, WORKLOAD_STATUSES } from './validate';

export interface AmbientResources {
  /** istio.workload.Address: `{workload: {...}}` or `{service: {...}}`. */
  addresses?: unknown[];
  /** istio.security.Authorization. */
  authorizations?: unknown[];
}

// --- Authorization → L4Expr ------------------------------------------------------------------

function stringMatch(m: unknown): StringMatch | undefined {
  if (str(m, 'exact') !== undefined) return { exact: str(m, 'exact')! };
  if (str(m, 'prefix') !== undefined) return { prefix: str(m, 'prefix')! };
  if (str(m, 'suffix') !== undefined) return { suffix: str(m, 'suffix')! };
  if (has(m, 'presence')) return { presence: true };
  return undefined;
}

function principalMatch(m: unknown): L4Expr | undefined {
  const s = stringMatch(m);
  if (!s) return undefined;
  if ('exact' in s) return { principal: { exact: `spiffe://${s.exact}` } };
  if ('prefix' in s) return { principal: { prefix: `spiffe://${s.prefix}` } };
  return { principal: s };
}

function cidrOf(a: unknown, where: string, w: Warnings, label: string): Cidr | undefined {
  const b = decodeBytes(field(a, 'address'));
  if (!b) return undefined;
  const bits = b.length * 8; // the length as written: ::ffff:a.b.c.d/128 is the IPv4 host a.b.c.d
  const len = intField(a, 'length') ?? 0;
  const r = rangeFromBytes(b, len);
  if (typeof r === 'string') return undefined;
  const c = toCidr(r);
  // A prefix of 0 (or ::ffff:x/96) on a non-zero address is more likely a missing length than "everyone".
  if (r.prefixLen === 0 && ipFromBytes(b) !== c.address) {
    w.add(label, `${where}: ${ipFromBytes(b)} with length ${len} matches every IPv${r.family} address (as in ztunnel); was /${bits} meant?`);
  }
  return c;
}

type FieldConv = (v: unknown, where: string) => L4Expr | undefined;

/** One Match: set fields AND'd, values OR'd, not_* negated. No field set: matches nothing. */
function matchExpr(m: unknown, where: string, w: Warnings, label: string): L4Expr {
  const ip = (kind: 'sourceIp' | 'destinationIp'): FieldConv => (v, at) => {
    const c = cidrOf(v, at, w, label);
    return c ? ({ [kind]: c } as L4Expr) : undefined;
  };
  const fields: Array<[string, FieldConv]> = [
    ['namespaces', (v) => (stringMatch(v) ? { namespace: stringMatch(v)! } : undefined)],
    ['serviceAccounts', (v) => ({ principal: { suffix: `/ns/${str(v, 'namespace')}/sa/${str(v, 'serviceAccount')}` } })],
    ['principals', (v) => principalMatch(v)],
    ['sourceIps', ip('sourceIp')],
    ['destinationIps', ip('destinationIp')],
    ['destinationPorts', (v) => (int(v) !== undefined ? { destinationPort: int(v)! } : undefined)],
  ];
  const parts: L4Expr[] = [];
  for (const [name, conv] of fields) {
    for (const neg of [false, true]) {
      const key = neg ? `not${name[0].toUpperCase()}${name.slice(1)}` : name;
      const values = arr(m, key);
      if (values.length === 0) continue;
      const ors = values.map((v, i) => conv(v, `${where}.${key}[${i}]`)).filter((x): x is L4Expr => x !== undefined);
      parts.push(neg ? { not: { or: ors } } : { or: ors });
    }
  }
  if (parts.length === 0) {
    w.add(label, `${where} is empty: ztunnel never matches an empty match, so this rule never applies (istiod writes {} for the HTTP-only parts of a DENY rule; enforce those in a waypoint/L7)`);
    return NEVER;
  }
  return { and: parts };
}

/**
 * The condition of an Authorization as an L4Expr tree: or(groups) of and(rules) of or(matches) of
 * and(fields). `simplify: false` keeps every level (for inspection); by default it is simplified.
 */
export function authorizationExpr(auth: unknown, opts: { simplify?: boolean } = {}, w = new Warnings(), label = 'authorization'): L4Expr {
  const groups = arr(auth, 'groups');
  const tree: L4Expr = {
    or: groups.map((g, gi) => {
      const rules = arr(g, 'rules');
      return rules.length === 0
        ? ANY
        : {
            and: rules.map((r, ri) => {
              const matches = arr(r, 'matches');
              return matches.length === 0 ? ANY : { or: matches.map((m, mi) => matchExpr(m, `groups[${gi}].rules[${ri}].matches[${mi}]`, w, label)) };
            }),
          };
    }),
  };
  return opts.simplify === false ? tree : simplify(tree);
}

// --- Addresses ---------------------------------------------------------------------------------

interface SvcEntry {
  svc: Service;
  /** ALLOW_ALL health policy: unhealthy workloads are used too. */
  allowAll: boolean;
}

function workloadLabel(wl: Json): string {
  return `workload ${str(wl, 'uid') || `${str(wl, 'namespace') ?? ''}/${str(wl, 'name') ?? ''}`}`;
}

function translateService(s: Json, w: Warnings): SvcEntry | undefined {
  const ns = str(s, 'namespace')!;
  const host = str(s, 'hostname')!;
  const label = `service ${ns}/${host}`;
  const vips: string[] = [];
  for (const [i, a] of arr(s, 'addresses').entries()) {
    const ip = ipFromBytes(decodeBytes(field(a, 'address'))!)!;
    const p = parseIp(ip);
    if (!p.ok) w.add(label, `addresses[${i}]: ${p.reason}; not used as a VIP`);
    else if (!vips.includes(p.address)) vips.push(p.address);
  }
  if (vips.length === 0) {
    w.add(label, 'has no VIP (a headless service: clients connect to pod IPs directly); skipped');
    return undefined;
  }
  const wp = obj(s, 'waypoint');
  if (wp) {
    const to = str(obj(wp, 'hostname'), 'hostname') ?? ipFromBytes(decodeBytes(field(obj(wp, 'address'), 'address')) ?? Buffer.alloc(0)) ?? '?';
    w.add(label, `uses waypoint ${to}: its traffic must traverse the waypoint (L7 policy, routing), which translating the VIP straight to pods would bypass; skipped`);
    return undefined;
  }
  const ports = arr(s, 'ports').map((p) => {
    const t = intField(p, 'targetPort') ?? 0;
    return { port: intField(p, 'servicePort')!, protocol: 'TCP' as const, ...(t ? { targetPort: t } : {}) };
  });
  if (ports.length === 0) {
    w.add(label, 'has no ports; skipped');
    return undefined;
  }
  const lb = obj(s, 'loadBalancing');
  const prefs = arr(lb, 'routingPreference').map((v) => enumName(v, LB_SCOPES)).filter((v) => v && v !== 'UNSPECIFIED_SCOPE');
  const mode = enumName(field(lb, 'mode') ?? 0, LB_MODES) ?? 'UNSPECIFIED_MODE';
  if (prefs.length || (mode !== 'UNSPECIFIED_MODE' && mode !== 'PASSTHROUGH')) {
    w.add(label, `load balancing by locality (routing preference [${prefs.join(', ')}], mode ${mode}) is not implemented: endpoints are chosen by weight wherever they are`);
  }
  if (mode === 'PASSTHROUGH') w.add(label, 'load balancing mode PASSTHROUGH (connect to the original destination) is not implemented: the VIP is translated like any other');
  const allowAll = enumName(field(lb, 'healthPolicy') ?? 0, LB_HEALTH_POLICIES) === 'ALLOW_ALL';
  return { svc: { namespace: ns, name: str(s, 'name')!, vips, ports }, allowAll };
}

/** `name.namespace.svc.DOMAIN` → name, for services a workload names but that were not received. */
function nameFromHostname(host: string, ns: string): string | undefined {
  const m = /^([^.]+)\.([^.]+)\.svc(\.|$)/.exec(host);
  return m && m[2] === ns ? m[1] : undefined;
}

function translateWorkload(wl: Json, services: Map<string, SvcEntry | null>, w: Warnings): { workload: Workload; endpoints: Endpoint[] } | undefined {
  const label = workloadLabel(wl);
  const ips: string[] = [];
  for (const [i, a] of arr(wl, 'addresses').entries()) {
    const ip = ipFromBytes(decodeBytes(a)!)!;
    const p = parseIp(ip);
    if (!p.ok) w.add(label, `addresses[${i}]: ${p.reason}; not used`);
    else if (!ips.includes(p.address)) ips.push(p.address);
  }
  if (ips.length === 0) {
    const host = str(wl, 'hostname');
    w.add(label, `has no usable IP address${host ? ` (hostname ${host} only)` : ''}; skipped`);
    return undefined;
  }
  const healthy = enumName(field(wl, 'status') ?? 0, WORKLOAD_STATUSES) !== 'UNHEALTHY';
  const namespace = str(wl, 'namespace') ?? '';
  const loc = obj(wl, 'locality');
  const locality = loc ? Object.fromEntries(['region', 'zone', 'subzone'].map((k) => [k, str(loc, k)]).filter(([, v]) => v)) : {};
  const node = str(wl, 'node') || undefined;
  const uid = str(wl, 'uid') || undefined;
  const workload: Workload = {
    namespace,
    name: str(wl, 'name') || uid || '',
    serviceAccount: str(wl, 'serviceAccount') || 'default',
    ips,
    ...(node ? { node } : {}),
    ...(uid ? { uid } : {}),
    trustDomain: str(wl, 'trustDomain') || 'cluster.local',
    healthy,
  };
  const cap = intField(wl, 'capacity');
  const weight = cap === undefined ? 1 : Math.min(cap, MAX_WEIGHT);
  if (cap === 0) w.add(label, 'capacity 0: it receives no new connections');
  const endpoints: Endpoint[] = [];
  for (const [key, pl] of Object.entries(obj(wl, 'services') ?? {})) {
    const [ns, host] = key.split('/');
    const entry = services.get(key);
    if (entry === null) continue; // the service was skipped (warned there)
    const ref = entry ? serviceRef(entry.svc) : nameFromHostname(host, ns) ? `${ns}/${nameFromHostname(host, ns)}` : undefined;
    if (!ref) {
      w.add(label, `service ${key} is not known and its host name is not NAME.${ns}.svc.*; no endpoint for it`);
      continue;
    }
    const mine = new Map(arr(pl, 'ports').map((p) => [intField(p, 'servicePort')!, intField(p, 'targetPort') ?? 0] as const));
    const svcPorts = entry ? entry.svc.ports.map((p) => p.port) : [...mine.keys()];
    for (const sp of svcPorts) {
      const target = mine.get(sp) || entry?.svc.ports.find((p) => p.port === sp)?.targetPort || 0;
      if (!target) {
        w.add(label, `service ${key} port ${sp}: neither the workload nor the service gives a target port; no endpoint for it`);
        continue;
      }
      if (weight === 0) continue;
      for (const ip of ips) {
        endpoints.push({
          service: ref,
          address: ip,
          servicePort: sp,
          port: target,
          weight,
          healthy: healthy || entry?.allowAll === true,
          ...(node ? { node } : {}),
          ...(Object.keys(locality).length ? { locality } : {}),
          ...(uid ? { workload: uid } : {}),
        });
      }
    }
  }
  return { workload, endpoints };
}

/**
 * Translate ambient Address and Authorization resources (proto3 JSON, either field spelling) into
 * a model. Never throws; everything left out is named in `warnings`.
 */
export function translateAmbient(input: AmbientResources): TranslateResult {
  const w = new Warnings();
  const model: Model = { services: [], endpoints: [], workloads: [], policies: { l4: [], l7: [] } };
  try {
    const inp: AmbientResources = isObj(input) ? input : {};
    const services = new Map<string, SvcEntry | null>();
    const workloads: Json[] = [];
    (Array.isArray(inp.addresses) ? inp.addresses : []).forEach((a, i) => {
      const wl = obj(a, 'workload');
      const s = obj(a, 'service');
      const name = wl ? str(wl, 'uid') || str(wl, 'name') || `#${i}` : s ? `${str(s, 'namespace')}/${str(s, 'hostname')}` : `#${i}`;
      const bad = validateResource(TYPE.ADDRESS, name, a);
      if (bad) {
        w.add(wl ? `workload ${name}` : s ? `service ${name}` : `address ${name}`, `rejected: ${bad}`);
        return;
      }
      if (wl) workloads.push(wl);
      else if (s) {
        const key = `${str(s, 'namespace')}/${str(s, 'hostname')}`;
        if (services.has(key)) w.add(`service ${key}`, 'given twice; the last one is used');
        try {
          services.set(key, translateService(s, w) ?? null);
        } catch (e) {
          w.add(`service ${key}`, `not translated: internal error: ${errorText(e)}`);
          services.set(key, null);
        }
      }
    });
    for (const e of services.values()) if (e) model.services.push(e.svc);
    const byUidOrName = new Map<string, string[]>(); // policy key → workload uids
    const seenUids = new Set<string>();
    for (const wl of workloads) {
      try {
        const r = translateWorkload(wl, services, w);
        if (!r) continue;
        const id = r.workload.uid ?? `${r.workload.namespace}/${r.workload.name}`;
        if (seenUids.has(id)) {
          w.add(workloadLabel(wl), 'given twice; the first one is used');
          continue;
        }
        seenUids.add(id);
        model.workloads.push(r.workload);
        model.endpoints.push(...r.endpoints);
        for (const p of arr(wl, 'authorizationPolicies')) {
          if (typeof p === 'string') byUidOrName.set(p, [...(byUidOrName.get(p) ?? []), id]);
        }
      } catch (e) {
        w.add(workloadLabel(wl), `not translated: internal error: ${errorText(e)}`);
      }
    }
    (Array.isArray(inp.authorizations) ? inp.authorizations : []).forEach((a, i) => {
      const key = `${str(a, 'namespace') ?? ''}/${str(a, 'name') ?? `#${i}`}`;
      const label = `authorization ${key}`;
      const bad = validateResource(TYPE.AUTHORIZATION, str(a, 'name') || `#${i}`, a);
      if (bad) {
        w.add(label, `rejected: ${bad}`);
        return;
      }
      try {
        const scopeName = enumName(field(a, 'scope') ?? 0, AUTHZ_SCOPES)!;
        const scope: PolicyScope =
          scopeName === 'GLOBAL'
            ? { kind: 'global' }
            : scopeName === 'NAMESPACE'
              ? { kind: 'namespace', namespace: str(a, 'namespace') ?? '' }
              : { kind: 'workloads', workloads: byUidOrName.get(key) ?? [] };
        const local = new Warnings();
        const when = authorizationExpr(a, {}, local, label);
        for (const x of local.list) w.add(x.resource, x.reason);
        if (arr(a, 'groups').length === 0) {
          w.add(label, `has no rules: it matches nothing${enumName(field(a, 'action') ?? 0, AUTHZ_ACTIONS) === 'ALLOW' ? ' (an ALLOW policy with no rules denies every connection it applies to)' : ''}`);
        }
        const pol: L4Policy = {
          name: key,
          scope,
          action: enumName(field(a, 'action') ?? 0, AUTHZ_ACTIONS) as 'ALLOW' | 'DENY',
          dryRun: field(a, 'dryRun') === true,
          when,
          origin: 'ambient',
        };
        model.policies!.l4.push(pol);
      } catch (e) {
        w.add(label, `not translated: internal error: ${errorText(e)}`);
      }
    });
  } catch (e) {
    return {
      model: { services: [], endpoints: [], workloads: [], policies: { l4: [], l7: [] } },
      warnings: [...w.list, { resource: 'ambient resources', reason: `not translated: internal error: ${errorText(e)}` }],
    };
  }
  return { model, warnings: w.list };
}
