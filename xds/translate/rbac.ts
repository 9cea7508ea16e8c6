// Envoy RBAC filters → what the kernel can enforce (L4Policy) and what only the L7 proxy can
// (L7Policy).
//
// A filter is split whole, never per policy entry: an ALLOW filter lets a connection through when
// ANY of its policies matches, so enforcing some of its policies in the kernel and the others in
// the proxy would deny what one layer alone would allow. A filter goes to L4 only when every
// permission and principal of every policy (rules and shadow_rules) is decidable from the
// connection alone; otherwise the filter's config is kept as delivered in an L7Policy.
//
// Decidable at L4:
//   permissions: any, and_rules, or_rules, not_rule, destination_ip, destination_port,
//                destination_port_range
//   principals:  any, and_ids, or_ids, not_id, authenticated.principal_name (exact / prefix /
//                suffix without ignore_case; safe_regex only in the shapes istiod generates, see
//                regexToMatch), direct_remote_ip, source_ip and remote_ip (see remoteIpIsPeer)
// Everything else (header, url_path, uri_template, requested_server_name, metadata, matcher,
// condition, ...) sends the filter to L7.
//
// Semantics mirrored from Envoy (source/extensions/filters/common/rbac/engine_impl.cc):
// - `rules` absent: the filter enforces nothing. `rules` present with no policies and action ALLOW
//   denies every connection; this becomes an ALLOW policy that matches nothing, so that "an ALLOW
//   policy applies and none matched" denies, as in Istio.
// - A policy matches when any permission AND any principal match.
// - `shadow_rules` are evaluated and reported, never enforced: dryRun.
// - Several enforcing ALLOW filters on one destination must each pass (Envoy runs the chain), while
//   the model's ALLOW policies of one scope pass when any matches; they are therefore combined into
//   one ALLOW policy whose `when` is the AND of the filters' ORs.

import type { L4Expr, L4Policy, L7Policy, PolicyAction, ServiceRef } from '../../core/model';
import { ANY, NEVER, simplify } from './expr';
import { arr, field, has, int, isObj, Json, obj, str, typedConfig } from './json';
import { makeCidr } from '../../core/ip';
import { TranslateWarning } from './result';
import { RBAC_ACTIONS, validateRbacConfig } from './validate';

export const HTTP_RBAC_TYPE = 'envoy.extensions.filters.http.rbac.v3.RBAC';
export const NETWORK_RBAC_TYPE = 'envoy.extensions.filters.network.rbac.v3.RBAC';
export const HTTP_RBAC = 'envoy.filters.http.rbac';
export const NETWORK_RBAC = 'envoy.filters.network.rbac';

export interface RbacDestination {
  ip?: string;
  port: number;
  service?: ServiceRef;
}

export interface RbacFilterInput {
  name: string;
  typedConfig?: unknown;
  /** Accepted as an alias of typedConfig (the L7Policy form). */
  config?: unknown;
}

export interface SplitOptions {
  /**
   * Whether `remote_ip` is the connection's peer. For network RBAC it is (unless the listener
   * takes addresses from the PROXY protocol, see `proxyProtocol`). For HTTP RBAC Envoy takes it
   * from X-Forwarded-For unless the HttpConnectionManager has use_remote_address: true and no
   * trusted hops, so by default an HTTP filter using remote_ip goes to L7.
   */
  remoteIpIsPeer?: boolean;
  /** The listener has the proxy_protocol listener filter: source_ip/remote_ip are not the peer. */
  proxyProtocol?: boolean;
  /** Routes override the HTTP RBAC filter (typed_per_filter_config): its effect varies per request. */
  perRouteOverride?: boolean;
}

export interface SplitResult {
  l4: L4Policy[];
  l7: L7Policy[];
  warnings: TranslateWarning[];
  /**
   * Set when a filter's config is invalid: Envoy would reject the listener, so the caller must not
   * serve these destinations from this config (l4/l7 are empty then).
   */
  rejected?: string;
}

/** Why a filter must go to L7, as a path into its config (e.g. `rules.policies.p.permissions[0].urlPath`). */
export type Classification =
  | { kind: 'l4'; policies: Array<Omit<L4Policy, 'scope' | 'origin'>> }
  | { kind: 'l7'; reason: string }
  | { kind: 'not-rbac' };

class L7 extends Error {}

function rbacKind(f: RbacFilterInput): 'http' | 'network' | undefined {
  const tc = typedConfig({ typedConfig: f.typedConfig ?? f.config });
  const t = tc?.type;
  if (t === HTTP_RBAC_TYPE) return 'http';
  if (t === NETWORK_RBAC_TYPE) return 'network';
  // No typed config (or one without @type): the well-known filter name decides.
  if (t === undefined) {
    if (f.name === HTTP_RBAC) return 'http';
    if (f.name === NETWORK_RBAC) return 'network';
  }
  return undefined;
}

const RE_META = /[\\^$.|?*+()[\]{}]/;

/** The literal text of an RE2 pattern that has no operators (`\[` etc. unescaped), or undefined. */
function literal(re: string): string | undefined {
  let out = '';
  for (let i = 0; i < re.length; i++) {
    const c = re[i];
    if (c === '\\') {
      const n = re[i + 1];
      if (n === undefined || /[A-Za-z0-9]/.test(n)) return undefined; // \d, \b, ... are operators
      out += n;
      i++;
    } else if (RE_META.test(c)) return undefined;
    else out += c;
  }
  return out;
}

// The safe_regex shapes istiod writes for principals and namespaces
// (pilot/pkg/security/authz/model/generator.go), mapped back to what they mean:
//   `.+`                → principal present
//   `spiffe://.*SUFFIX` → principal ends with SUFFIX      (principals: ["*SUFFIX"])
//   `spiffe://PREFIX.*` → principal starts with spiffe://PREFIX
//   `.*/ns/NS/.*`       → namespace = NS                   (namespaces: ["NS"])
//   `.*/ns/.*SUF/.*`, `.*/ns/PRE.*/.*`, `.*/ns/.*/.*` → namespace ends with / starts with / present
// For a SPIFFE id spiffe://TD/ns/NS/sa/SA (no "/" in TD, NS or SA) these are equivalent.
// Anything else → undefined (L7).
export function regexToExpr(re: string): L4Expr | undefined {
  if (re === '.+' || re === '.*') return { principal: { presence: true } };
  let m = /^spiffe:\/\/\.\*(.+)$/.exec(re);
  if (m) {
    const lit = literal(m[1]);
    return lit !== undefined && lit !== '' ? { principal: { suffix: lit } } : undefined;
  }
  m = /^spiffe:\/\/(.+)\.\*$/.exec(re);
  if (m) {
    const lit = literal(m[1]);
    return lit !== undefined ? { principal: { prefix: `spiffe://${lit}` } } : undefined;
  }
  m = /^\.\*\/ns\/(.*)\/\.\*$/.exec(re);
  if (m) {
    const inner = m[1];
    if (inner === '.*') return { namespace: { presence: true } };
    let lit: string | undefined;
    if (inner.startsWith('.*') && (lit = literal(inner.slice(2))) !== undefined && lit !== '' && !lit.includes('/')) {
      return { namespace: { suffix: lit } };
    }
    if (inner.endsWith('.*') && (lit = literal(inner.slice(0, -2))) !== undefined && lit !== '' && !lit.includes('/')) {
      return { namespace: { prefix: lit } };
    }
    lit = literal(inner);
    if (lit !== undefined && lit !== '' && !lit.includes('/')) return { namespace: { exact: lit } };
  }
  return undefined;
}

/** authenticated.principal_name (an envoy.type.matcher.v3.StringMatcher) as an L4 condition. */
function principalName(path: string, m: unknown): L4Expr {
  if (!isObj(m)) throw new L7(`${path}: not a string matcher`);
  if (field(m, 'ignoreCase') === true) throw new L7(`${path}.ignoreCase`);
  const ex = str(m, 'exact');
  if (ex !== undefined) return { principal: { exact: ex } };
  const pre = str(m, 'prefix');
  if (pre !== undefined) return { principal: { prefix: pre } };
  const suf = str(m, 'suffix');
  if (suf !== undefined) return { principal: { suffix: suf } };
  const sr = obj(m, 'safeRegex');
  if (sr) {
    const e = regexToExpr(str(sr, 'regex') ?? '');
    if (e) return e;
    throw new L7(`${path}.safeRegex (${JSON.stringify(str(sr, 'regex'))})`);
  }
  throw new L7(`${path}: ${Object.keys(m).join(', ') || 'empty matcher'}`);
}

function cidr(path: string, c: unknown): { address: string; prefixLen: number } {
  const r = makeCidr(str(c, 'addressPrefix') ?? '', int(field(c, 'prefixLen')) ?? 0);
  if (!r) throw new L7(`${path}: invalid CIDR`); // validateRbacConfig rejects these first
  return r;
}

function permission(path: string, p: unknown, depth = 0): L4Expr {
  if (!isObj(p) || depth > 64) throw new L7(path);
  if (field(p, 'any') === true) return ANY;
  const and = obj(p, 'andRules');
  if (and) return { and: arr(and, 'rules').map((r, i) => permission(`${path}.andRules.rules[${i}]`, r, depth + 1)) };
  const or = obj(p, 'orRules');
  if (or) return { or: arr(or, 'rules').map((r, i) => permission(`${path}.orRules.rules[${i}]`, r, depth + 1)) };
  if (has(p, 'notRule')) return { not: permission(`${path}.notRule`, field(p, 'notRule'), depth + 1) };
  if (has(p, 'destinationIp')) return { destinationIp: cidr(`${path}.destinationIp`, field(p, 'destinationIp')) };
  if (has(p, 'destinationPort')) return { destinationPort: int(field(p, 'destinationPort')) ?? 0 };
  const r = obj(p, 'destinationPortRange');
  if (r) return { destinationPortRange: { start: int(field(r, 'start')) ?? 0, end: int(field(r, 'end')) ?? 0 } };
  throw new L7(`${path}.${Object.keys(p)[0] ?? '(empty)'}`);
}

interface Ctx {
  kind: 'http' | 'network';
  opts: SplitOptions;
}

function principal(path: string, p: unknown, ctx: Ctx, depth = 0): L4Expr {
  if (!isObj(p) || depth > 64) throw new L7(path);
  if (field(p, 'any') === true) return ANY;
  const and = obj(p, 'andIds');
  if (and) return { and: arr(and, 'ids').map((r, i) => principal(`${path}.andIds.ids[${i}]`, r, ctx, depth + 1)) };
  const or = obj(p, 'orIds');
  if (or) return { or: arr(or, 'ids').map((r, i) => principal(`${path}.orIds.ids[${i}]`, r, ctx, depth + 1)) };
  if (has(p, 'notId')) return { not: principal(`${path}.notId`, field(p, 'notId'), ctx, depth + 1) };
  if (has(p, 'authenticated')) {
    const pn = field(field(p, 'authenticated'), 'principalName');
    // `authenticated` without a name matches any authenticated (mTLS) peer.
    if (pn === undefined) return { principal: { presence: true } };
    return principalName(`${path}.authenticated.principalName`, pn);
  }
  // direct_remote_ip is always the physical peer; source_ip honours the PROXY protocol.
  if (has(p, 'directRemoteIp')) return { sourceIp: cidr(`${path}.directRemoteIp`, field(p, 'directRemoteIp')) };
  if (has(p, 'sourceIp')) {
    if (ctx.opts.proxyProtocol) throw new L7(`${path}.sourceIp (taken from the PROXY protocol header)`);
    return { sourceIp: cidr(`${path}.sourceIp`, field(p, 'sourceIp')) };
  }
  if (has(p, 'remoteIp')) {
    const peer = ctx.kind === 'network' ? !ctx.opts.proxyProtocol : ctx.opts.remoteIpIsPeer === true && !ctx.opts.proxyProtocol;
    if (!peer) throw new L7(`${path}.remoteIp (${ctx.kind === 'http' ? 'taken from X-Forwarded-For' : 'taken from the PROXY protocol header'})`);
    return { sourceIp: cidr(`${path}.remoteIp`, field(p, 'remoteIp')) };
  }
  throw new L7(`${path}.${Object.keys(p)[0] ?? '(empty)'}`);
}

/** `ns[foo]-policy[bar]-rule[3]` (istiod's key) → `foo/bar/rule[3]`; other keys unchanged. */
export function policyName(key: string): string {
  const m = /^ns\[([^\]]*)\]-policy\[([^\]]*)\]-rule\[(\d+)\]$/.exec(key);
  return m ? `${m[1]}/${m[2]}/rule[${m[3]}]` : key;
}

function rulesPolicies(path: string, rules: Json, dryRun: boolean, ctx: Ctx): Array<Omit<L4Policy, 'scope' | 'origin'>> {
  const action = (RBAC_ACTIONS as readonly string[]).includes(str(rules, 'action') ?? '')
    ? (str(rules, 'action') as PolicyAction)
    : ((RBAC_ACTIONS[int(field(rules, 'action')) ?? 0] ?? 'ALLOW') as PolicyAction);
  const pols = obj(rules, 'policies') ?? {};
  const out: Array<Omit<L4Policy, 'scope' | 'origin'>> = [];
  for (const [key, pol] of Object.entries(pols)) {
    const pp = `${path}.policies.${key}`;
    if (has(pol, 'condition') || has(pol, 'checkedCondition')) throw new L7(`${pp}.condition`);
    const perms = arr(pol, 'permissions').map((x, i) => permission(`${pp}.permissions[${i}]`, x));
    const princs = arr(pol, 'principals').map((x, i) => principal(`${pp}.principals[${i}]`, x, ctx));
    out.push({ name: policyName(key), action, dryRun, when: simplify({ and: [{ or: perms }, { or: princs }] }) });
  }
  if (out.length === 0 && action === 'ALLOW') {
    // Envoy: an ALLOW engine with no policies allows nothing.
    out.push({ name: '(no policies)', action, dryRun, when: NEVER });
  }
  return out;
}

/** Classify one filter; L4 policies have no scope/origin yet. Assumes a validated config. */
export function classifyRbacFilter(f: RbacFilterInput, opts: SplitOptions = {}): Classification {
  const kind = rbacKind(f);
  if (!kind) return { kind: 'not-rbac' };
  const cfg = typedConfig({ typedConfig: f.typedConfig ?? f.config })?.value ?? {};
  try {
    if (has(cfg, 'matcher')) throw new L7('matcher');
    if (has(cfg, 'shadowMatcher')) throw new L7('shadowMatcher');
    if (kind === 'http' && opts.perRouteOverride) throw new L7('typed_per_filter_config on routes overrides this filter per request');
    const ctx: Ctx = { kind, opts };
    const out: Array<Omit<L4Policy, 'scope' | 'origin'>> = [];
    const rules = obj(cfg, 'rules');
    if (rules) out.push(...rulesPolicies('rules', rules, false, ctx));
    const shadow = obj(cfg, 'shadowRules');
    if (shadow) out.push(...rulesPolicies('shadowRules', shadow, true, ctx));
    return { kind: 'l4', policies: out };
  } catch (e) {
    if (e instanceof L7) return { kind: 'l7', reason: e.message };
    throw e;
  }
}

/**
 * Split the RBAC filters that guard `destination` (one or several VIP/IP:port pairs) into kernel
 * and proxy policy. `filters` are in chain order; filters that are not RBAC are ignored, so a whole
 * filter chain or HCM http_filters list can be passed as is. Never throws.
 */
export function splitRbacFilters(
  destination: RbacDestination | RbacDestination[],
  filters: RbacFilterInput[],
  opts: SplitOptions = {},
): SplitResult {
  const dests = (Array.isArray(destination) ? destination : [destination]).map((d) => ({ ...d }));
  const where = dests.map((d) => `${d.ip ?? '*'}:${d.port}`).join(', ');
  const l4: L4Policy[] = [];
  const l7Filters: Array<{ name: string; config: Json }> = [];
  const warnings: TranslateWarning[] = [];
  const scope = { kind: 'destinations' as const, destinations: dests.map((d) => (d.ip !== undefined ? { ip: d.ip, port: d.port } : { port: d.port })) };
  // Enforcing ALLOW policies, per filter (see the header: several such filters are combined).
  const enforcingAllow: Array<{ origin: string; policies: L4Policy[] }> = [];
  for (const [i, f] of (Array.isArray(filters) ? filters : []).entries()) {
    try {
      if (!isObj(f)) continue;
      const kind = rbacKind(f);
      if (!kind) continue;
      const tc = typedConfig({ typedConfig: f.typedConfig ?? f.config });
      if (!tc) {
        return { l4: [], l7: [], warnings: [...warnings, { resource: `RBAC filter ${f.name} for ${where}`, reason: 'has no typedConfig (ECDS config_discovery is not supported)' }], rejected: 'RBAC filter without typedConfig' };
      }
      const bad = validateRbacConfig(tc.value);
      if (bad) {
        const reason = `filters[${i}] (${f.name}): ${bad}`;
        return { l4: [], l7: [], warnings: [...warnings, { resource: `RBAC filters for ${where}`, reason }], rejected: reason };
      }
      const c = classifyRbacFilter(f, opts);
      if (c.kind === 'l7') {
        l7Filters.push({ name: typeof f.name === 'string' ? f.name : kind === 'http' ? HTTP_RBAC : NETWORK_RBAC, config: tc.value });
        continue;
      }
      if (c.kind !== 'l4') continue;
      const origin = kind === 'http' ? HTTP_RBAC : NETWORK_RBAC;
      const pols = c.policies.map((p) => ({ ...p, scope, origin }));
      const allow = pols.filter((p) => !p.dryRun && p.action === 'ALLOW');
      if (allow.length) enforcingAllow.push({ origin, policies: allow });
      l4.push(...pols);
    } catch (e) {
      const reason = `filters[${i}]: ${e instanceof Error ? e.message : String(e)}`;
      return { l4: [], l7: [], warnings: [...warnings, { resource: `RBAC filters for ${where}`, reason }], rejected: reason };
    }
  }
  if (enforcingAllow.length > 1) {
    const combined = new Set(enforcingAllow.flatMap((g) => g.policies));
    const rest = l4.filter((p) => !combined.has(p));
    l4.length = 0;
    l4.push(...rest, {
      name: enforcingAllow.map((g) => g.policies.map((p) => p.name).join('|')).join(' & '),
      scope,
      action: 'ALLOW',
      dryRun: false,
      when: simplify({ and: enforcingAllow.map((g) => ({ or: g.policies.map((p) => p.when) })) }),
      origin: [...new Set(enforcingAllow.map((g) => g.origin))].join('+'),
    });
    warnings.push({
      resource: `RBAC filters for ${where}`,
      reason: `${enforcingAllow.length} ALLOW filters in one chain must each pass; combined into one ALLOW policy`,
    });
  }
  const l7: L7Policy[] = l7Filters.length
    ? dests.map((d) => ({ destination: { ...(d.ip !== undefined ? { ip: d.ip } : {}), port: d.port, ...(d.service ? { service: d.service } : {}) }, filters: l7Filters.map((x) => ({ ...x })) }))
    : [];
  return { l4, l7, warnings };
}
