// L4 policy: the model's policies (ambient Authorization, the L4 part of Envoy RBAC) compiled into
// the verdict tables the kernel looks up (bpf/include/policy.h).
//
// The kernel cannot match principal prefixes or walk expression trees per connection, so the agent
// evaluates every policy here, for every identity it knows and every port the policies mention,
// and writes only the results. Semantics are Istio's: DENY policies first; if any ALLOW policy
// applies to the destination workload and none matches, deny; otherwise allow. Where a condition
// cannot be decided for a whole class (a source-IP range that covers some of an identity's
// addresses but not all, a large port range), the table fails closed: such a DENY counts as
// matching, such an ALLOW as not matching.
import { canonicalIp, cidrContains } from '../../core/ip';
import { identityTable, spiffeId } from '../../core/identity';
import type { L4Expr, L4Policy, Model, StringMatch, Workload } from '../../core/model';
import { IDENTITY_L7_PORTS, IDENTITY_UNRESOLVED, PDST_F_L7, PolicyDst, PolicyKey, PolicyValue, VERDICT_ALLOW, VERDICT_DENY, VERDICT_L7 } from '../../abi/codecs';

type Tri = boolean | undefined; // undefined: cannot be decided for this class

interface Ctx {
  /** A meshed caller whose identity is not known: principal, namespace and IP are undecidable. */
  unresolved?: boolean;
  principal?: string;
  namespace?: string;
  /** Addresses of the source identity; undefined for the unknown identity (any address). */
  sourceIps?: string[];
  destinationIp: string;
  /** undefined: "any other port" (none of the ports the policies name). */
  destinationPort?: number;
}

/** Ranges up to this many ports are expanded into port classes; larger ones stay undecidable for "other" ports. */
const MAX_EXPANDED_RANGE = 64;

function strMatch(m: StringMatch, v: string | undefined): boolean {
  if (v === undefined) return false;
  if ('exact' in m) return v === m.exact;
  if ('prefix' in m) return v.startsWith(m.prefix);
  if ('suffix' in m) return v.endsWith(m.suffix);
  return v !== '';
}

export function evalExpr(e: L4Expr, ctx: Ctx): Tri {
  if ('any' in e) return true;
  if ('and' in e) {
    let unknown = false;
    for (const x of e.and) {
      const r = evalExpr(x, ctx);
      if (r === false) return false;
      if (r === undefined) unknown = true;
    }
    return unknown ? undefined : true;
  }
  if ('or' in e) {
    let unknown = false;
    for (const x of e.or) {
      const r = evalExpr(x, ctx);
      if (r === true) return true;
      if (r === undefined) unknown = true;
    }
    return unknown ? undefined : false;
  }
  if ('not' in e) {
    const r = evalExpr(e.not, ctx);
    return r === undefined ? undefined : !r;
  }
  if ('principal' in e) return ctx.unresolved ? undefined : strMatch(e.principal, ctx.principal);
  if ('namespace' in e) return ctx.unresolved ? undefined : strMatch(e.namespace, ctx.namespace);
  if ('sourceIp' in e) {
    if (!ctx.sourceIps) return undefined;
    const hits = ctx.sourceIps.filter((ip) => cidrContains(e.sourceIp, ip)).length;
    return hits === 0 ? false : hits === ctx.sourceIps.length ? true : undefined;
  }
  if ('destinationIp' in e) return cidrContains(e.destinationIp, ctx.destinationIp);
  if ('destinationPort' in e) return ctx.destinationPort === undefined ? false : ctx.destinationPort === e.destinationPort;
  const { start, end } = e.destinationPortRange;
  if (ctx.destinationPort !== undefined) return ctx.destinationPort >= start && ctx.destinationPort < end;
  return end - start <= MAX_EXPANDED_RANGE ? false : undefined;
}

function portsOf(e: L4Expr, out: Set<number>): void {
  if ('and' in e) e.and.forEach((x) => portsOf(x, out));
  else if ('or' in e) e.or.forEach((x) => portsOf(x, out));
  else if ('not' in e) portsOf(e.not, out);
  else if ('destinationPort' in e) out.add(e.destinationPort);
  else if ('destinationPortRange' in e && e.destinationPortRange.end - e.destinationPortRange.start <= MAX_EXPANDED_RANGE) {
    for (let p = e.destinationPortRange.start; p < e.destinationPortRange.end; p++) out.add(p);
  }
}

function usesDestinationIp(e: L4Expr): boolean {
  if ('and' in e) return e.and.some(usesDestinationIp);
  if ('or' in e) return e.or.some(usesDestinationIp);
  if ('not' in e) return usesDestinationIp(e.not);
  return 'destinationIp' in e;
}

function workloadUid(w: Workload): string {
  return w.uid ?? `${w.namespace}/${w.name}`;
}

/** The policy, restricted to what applies to workload `w` (null: it does not apply). */
function applicable(p: L4Policy, w: Workload): L4Expr | null {
  const s = p.scope;
  switch (s.kind) {
    case 'global':
      return p.when;
    case 'namespace':
      return s.namespace === w.namespace ? p.when : null;
    case 'workloads':
      return s.workloads.includes(workloadUid(w)) || s.workloads.includes(`${w.namespace}/${w.name}`) ? p.when : null;
    case 'destinations': {
      const ips = new Set(w.ips.map((ip) => canonicalIp(ip)));
      const mine = s.destinations.filter((d) => d.ip !== undefined && ips.has(canonicalIp(d.ip)));
      if (!mine.length) return null;
      // The RBAC filter sat on a listener for ip:port: it judges only connections to that port.
      return { and: [{ or: mine.map((d) => ({ destinationPort: d.port })) }, p.when] };
    }
  }
}

export interface CompiledPolicy {
  /** destination IP (canonical) -> policy set id and flags (PDST_F_L7) */
  dsts: Map<string, PolicyDst>;
  /** `${set}|${identity}|${port}` -> entry */
  entries: Map<string, { key: PolicyKey; value: PolicyValue }>;
  /** rule ids (sm_policy_value.rule) -> policy name; rule 0 means "no policy decided" */
  rules: string[];
  warnings: string[];
}

/**
 * What HTTP rules ask of the kernel tables (from the services the L7 proxy serves):
 * `ports`: every backend IP of such a service -> its ports that only the proxy may open;
 * `vips`: every VIP of such a service -> VIP port -> the backends (ip, port) behind it, whose L4
 * policies a client is judged against when its connect is steered to the proxy.
 */
export interface L7Protection {
  ports: Map<string, Set<number>>;
  vips: Map<string, Map<number, Array<{ ip: string; port: number }>>>;
}

function fnv32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

export function policyEntryKey(k: PolicyKey): string {
  return `${k.set}|${k.identity}|${k.port}`;
}

/** One policy set before it has an id: its rows, keyed `${identity}|${port}`. */
export interface SetRows {
  rows: Map<string, { identity: number; port: number; value: PolicyValue }>;
  flags: number;
}

const ALLOW_NO_RULE: PolicyValue = { verdict: VERDICT_ALLOW, rule: 0 };

/** The kernel's lookup (bpf/include/policy.h), over rows not yet written: most specific first. */
export function lookupRows(set: SetRows | undefined, identity: number, port: number): PolicyValue {
  if (!set) return ALLOW_NO_RULE; // a destination without policies
  const get = (id: number, p: number) => set.rows.get(`${id}|${p}`)?.value;
  return get(identity, port) ?? get(identity, 0) ?? get(0, port) ?? get(0, 0) ?? { verdict: VERDICT_DENY, rule: 0 };
}

/**
 * Compile the model's enforced L4 policies (not LOG, not dry-run) into kernel tables, with the
 * rows that HTTP rules need (`l7`): ports only the proxy may open, and the L4 verdict of a client
 * steered to the proxy.
 *
 * A set's id is a hash of its whole content (every row and its flags), so a set in force is never
 * rewritten: any change, of a policy or of the identities it was evaluated for, is a new set
 * written beside the old one before its destinations switch to it (make-before-break).
 */
export function compilePolicies(model: Model, l7?: L7Protection, ids: Map<string, number> = identityTable(model.workloads)): CompiledPolicy {
  const out: CompiledPolicy = { dsts: new Map(), entries: new Map(), rules: ['(none)'], warnings: [] };
  const enforced = (model.policies?.l4 ?? []).filter((p) => !p.dryRun && p.action !== 'LOG');
  const ruleIds = new Map<L4Policy, number>();
  enforced.forEach((p) => ruleIds.set(p, out.rules.push(p.name) - 1));
  /** destination IP -> its L4 set */
  const l4Of = new Map<string, SetRows>();
  if (enforced.length) compileL4(model, enforced, ruleIds, l4Of, ids);
  const final = new Map<string, SetRows>(l4Of);
  if (l7) addL7(l7, l4Of, final, out.warnings);

  // Ids from content; equal content shares one set.
  const idOf = new Map<string, number>();
  const used = new Set<number>();
  for (const [ip, set] of final) {
    const rows = [...set.rows.values()].sort((a, b) => a.identity - b.identity || a.port - b.port);
    const content = JSON.stringify([set.flags, rows.map((r) => [r.identity, r.port, r.value.verdict, r.value.rule])]);
    let id = idOf.get(content);
    if (id === undefined) {
      id = fnv32(content) || 1;
      while (used.has(id)) id = (id + 1) >>> 0 || 1;
      used.add(id);
      idOf.set(content, id);
      for (const r of rows) {
        const key: PolicyKey = { set: id, identity: r.identity, port: r.port };
        out.entries.set(policyEntryKey(key), { key, value: r.value });
      }
    }
    out.dsts.set(ip, set.flags ? { set: id, flags: set.flags } : { set: id });
  }
  return out;
}

function compileL4(model: Model, enforced: L4Policy[], ruleIds: Map<L4Policy, number>, l4Of: Map<string, SetRows>, ids: Map<string, number>): void {
  // Source classes: every known identity (with its addresses), and the unknown identity (0).
  const byIdentity = new Map<number, { spiffe: string; namespace: string; ips: string[] }>();
  for (const w of model.workloads) {
    const spiffe = spiffeId(w);
    const id = ids.get(spiffe);
    if (id === undefined) continue; // not numbered (sm_identities full): judged as unresolved
    const cls = byIdentity.get(id) ?? { spiffe, namespace: w.namespace, ips: [] };
    cls.ips.push(...w.ips.map((ip) => canonicalIp(ip)!));
    byIdentity.set(id, cls);
  }

  // Destinations grouped by the policies that apply to them (and their IP, when a policy looks at it).
  const sets = new Map<string, { exprs: Array<{ p: L4Policy; when: L4Expr }>; ip: string; ips: string[] }>();
  for (const w of model.workloads) {
    const exprs = enforced.map((p) => ({ p, when: applicable(p, w) })).filter((x): x is { p: L4Policy; when: L4Expr } => x.when !== null);
    if (!exprs.length) continue;
    const byIp = exprs.some((x) => usesDestinationIp(x.when));
    for (const ipText of w.ips) {
      const ip = canonicalIp(ipText)!;
      const key = JSON.stringify([exprs.map((x) => ruleIds.get(x.p)), byIp ? ip : '', exprs.map((x) => x.when)]);
      const set = sets.get(key) ?? { exprs, ip, ips: [] };
      set.ips.push(ip);
      sets.set(key, set);
    }
  }

  for (const set of sets.values()) {
    const rows: SetRows = { rows: new Map(), flags: 0 };
    for (const ip of set.ips) l4Of.set(ip, rows);

    const ports = new Set<number>();
    set.exprs.forEach((x) => portsOf(x.when, ports));
    const portClasses: Array<number | undefined> = [undefined, ...[...ports].sort((a, b) => a - b)];
    const hasAllow = set.exprs.some((x) => x.p.action === 'ALLOW');
    const verdict = (ctx: Ctx): PolicyValue => {
      for (const x of set.exprs) {
        if (x.p.action === 'DENY' && evalExpr(x.when, ctx) !== false) return { verdict: VERDICT_DENY, rule: ruleIds.get(x.p)! };
      }
      if (!hasAllow) return ALLOW_NO_RULE;
      for (const x of set.exprs) {
        if (x.p.action === 'ALLOW' && evalExpr(x.when, ctx) === true) return { verdict: VERDICT_ALLOW, rule: ruleIds.get(x.p)! };
      }
      return { verdict: VERDICT_DENY, rule: 0 };
    };
    const vector = (cls: { unresolved?: boolean; principal?: string; namespace?: string; sourceIps?: string[] }) =>
      portClasses.map((port) => verdict({ ...cls, destinationIp: set.ip, destinationPort: port }));
    // Identity 0 (unknown, and every identity that behaves like it): its default row always,
    // and rows for the ports where it differs from that default.
    const emit = (identity: number, vec: PolicyValue[]) =>
      portClasses.forEach((port, i) => {
        if (port !== undefined && sameValue(vec[i], vec[0])) return;
        rows.rows.set(`${identity}|${port ?? 0}`, { identity, port: port ?? 0, value: vec[i] });
      });
    const unknown = vector({});
    emit(0, unknown);
    // A meshed caller the agent cannot name (its cgroup is not mapped): fail closed.
    const unresolved = vector({ unresolved: true });
    if (!unresolved.every((v, i) => sameValue(v, unknown[i]))) emit(IDENTITY_UNRESOLVED, unresolved);
    for (const [id, cls] of byIdentity) {
      const vec = vector({ principal: cls.spiffe, namespace: cls.namespace, sourceIps: cls.ips });
      if (vec.every((v, i) => sameValue(v, unknown[i]))) continue; // behaves like the fallback
      // Once (set, id, 0) exists the kernel no longer falls back to identity 0 for this identity,
      // so it gets its own default row and rows wherever a port differs from that default.
      emit(id, vec);
    }
  }
}

const sameValue = (a: PolicyValue, b: PolicyValue) => a.verdict === b.verdict && a.rule === b.rule;

/**
 * The rows HTTP rules add. Backends: their L4 rows (or "allow all" when they have none) plus one
 * marker row per port with HTTP rules. VIPs: for each port, the verdict for each identity is the
 * conjunction of that identity's verdicts at every backend (the first DENY decides; fail closed).
 */
function addL7(l7: L7Protection, l4Of: Map<string, SetRows>, final: Map<string, SetRows>, warnings: string[]): void {
  const marked = new Map<string, SetRows>(); // one marked copy per (L4 set, ports)
  const l4Ids = new Map<SetRows, number>();
  for (const [ip, ports] of l7.ports) {
    const base = l4Of.get(ip);
    if (base && !l4Ids.has(base)) l4Ids.set(base, l4Ids.size + 1);
    const sorted = [...ports].sort((a, b) => a - b);
    const k = `${base ? l4Ids.get(base) : 0}|${sorted.join(',')}`;
    let set = marked.get(k);
    if (!set) {
      set = { rows: new Map(base ? base.rows : [['0|0', { identity: 0, port: 0, value: ALLOW_NO_RULE }]]), flags: PDST_F_L7 };
      for (const port of sorted) set.rows.set(`${IDENTITY_L7_PORTS}|${port}`, { identity: IDENTITY_L7_PORTS, port, value: { verdict: VERDICT_L7, rule: 0 } });
      marked.set(k, set);
    }
    final.set(ip, set);
  }
  for (const [vip, byPort] of l7.vips) {
    if (l4Of.has(vip) || l7.ports.has(vip)) {
      warnings.push(`VIP ${vip} is also a workload address with policies; its HTTP services are judged by that address's rows`);
      continue;
    }
    const rows: SetRows = { rows: new Map([['0|0', { identity: 0, port: 0, value: ALLOW_NO_RULE }]]), flags: 0 };
    for (const [port, backends] of byPort) {
      const sets = backends.map((b) => ({ set: l4Of.get(b.ip), port: b.port }));
      if (!sets.some((x) => x.set)) continue; // no backend has L4 policy: nothing to judge
      const identities = new Set<number>([0]);
      for (const x of sets) for (const r of x.set?.rows.values() ?? []) if (r.identity !== IDENTITY_L7_PORTS) identities.add(r.identity);
      const verdictFor = (id: number): PolicyValue => {
        let allow: PolicyValue | undefined;
        for (const x of sets) {
          const v = lookupRows(x.set, id, x.port);
          if (v.verdict !== VERDICT_ALLOW) return v;
          allow ??= v;
        }
        return allow ?? ALLOW_NO_RULE;
      };
      const fallback = verdictFor(0);
      rows.rows.set(`0|${port}`, { identity: 0, port, value: fallback });
      for (const id of identities) {
        if (id === 0) continue;
        const v = verdictFor(id);
        if (!sameValue(v, fallback)) rows.rows.set(`${id}|${port}`, { identity: id, port, value: v });
      }
    }
    // Always written, "allow" when no backend has L4 policy: the kernel refuses to steer a connect
    // to a VIP with HTTP rules whose set is not in place (fail closed while a change is applied).
    final.set(vip, rows);
  }
}
