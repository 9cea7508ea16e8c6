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
import { PolicyKey, PolicyValue, VERDICT_ALLOW, VERDICT_DENY } from '../../abi/codecs';

type Tri = boolean | undefined; // undefined: cannot be decided for this class

interface Ctx {
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
  if ('principal' in e) return strMatch(e.principal, ctx.principal);
  if ('namespace' in e) return strMatch(e.namespace, ctx.namespace);
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
  /** destination IP (canonical) -> policy set id */
  dsts: Map<string, number>;
  /** `${set}|${identity}|${port}` -> entry */
  entries: Map<string, { key: PolicyKey; value: PolicyValue }>;
  /** rule ids (sm_policy_value.rule) -> policy name; rule 0 means "no policy decided" */
  rules: string[];
  warnings: string[];
}

function fnv32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

export function policyEntryKey(k: PolicyKey): string {
  return `${k.set}|${k.identity}|${k.port}`;
}

/** Compile the model's enforced L4 policies (not LOG, not dry-run) into kernel tables. */
export function compilePolicies(model: Model): CompiledPolicy {
  const out: CompiledPolicy = { dsts: new Map(), entries: new Map(), rules: ['(none)'], warnings: [] };
  const enforced = (model.policies?.l4 ?? []).filter((p) => !p.dryRun && p.action !== 'LOG');
  if (!enforced.length) return out;
  const ruleIds = new Map<L4Policy, number>();
  enforced.forEach((p) => ruleIds.set(p, out.rules.push(p.name) - 1));

  // Source classes: every known identity (with its addresses), and the unknown identity (0).
  const ids = identityTable(model.workloads);
  const byIdentity = new Map<number, { spiffe: string; namespace: string; ips: string[] }>();
  for (const w of model.workloads) {
    const spiffe = spiffeId(w);
    const id = ids.get(spiffe)!;
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

  const usedSetIds = new Set<number>();
  for (const [key, set] of sets) {
    // Stable ids: the same policies give the same id on every apply (no kernel writes); a change
    // gives a new id, so the new table is complete before any destination points at it.
    let setId = fnv32(key) || 1;
    while (usedSetIds.has(setId)) setId = (setId + 1) >>> 0 || 1;
    usedSetIds.add(setId);
    for (const ip of set.ips) out.dsts.set(ip, setId);

    const ports = new Set<number>();
    set.exprs.forEach((x) => portsOf(x.when, ports));
    const portClasses: Array<number | undefined> = [undefined, ...[...ports].sort((a, b) => a - b)];
    const hasAllow = set.exprs.some((x) => x.p.action === 'ALLOW');
    const verdict = (ctx: Ctx): PolicyValue => {
      for (const x of set.exprs) {
        if (x.p.action === 'DENY' && evalExpr(x.when, ctx) !== false) return { verdict: VERDICT_DENY, rule: ruleIds.get(x.p)! };
      }
      if (!hasAllow) return { verdict: VERDICT_ALLOW, rule: 0 };
      for (const x of set.exprs) {
        if (x.p.action === 'ALLOW' && evalExpr(x.when, ctx) === true) return { verdict: VERDICT_ALLOW, rule: ruleIds.get(x.p)! };
      }
      return { verdict: VERDICT_DENY, rule: 0 };
    };
    const vector = (cls: { principal?: string; namespace?: string; sourceIps?: string[] }) =>
      portClasses.map((port) => verdict({ ...cls, destinationIp: set.ip, destinationPort: port }));
    const same = (a: PolicyValue, b: PolicyValue) => a.verdict === b.verdict && a.rule === b.rule;
    // Identity 0 (unknown, and every identity that behaves like it): its default row always,
    // and rows for the ports where it differs from that default.
    const emit = (identity: number, vec: PolicyValue[]) =>
      portClasses.forEach((port, i) => {
        if (port !== undefined && same(vec[i], vec[0])) return;
        const k: PolicyKey = { set: setId, identity, port: port ?? 0 };
        out.entries.set(policyEntryKey(k), { key: k, value: vec[i] });
      });
    const unknown = vector({});
    emit(0, unknown);
    for (const [id, cls] of byIdentity) {
      const vec = vector({ principal: cls.spiffe, namespace: cls.namespace, sourceIps: cls.ips });
      if (vec.every((v, i) => same(v, unknown[i]))) continue; // behaves like the fallback
      // Once (set, id, 0) exists the kernel no longer falls back to identity 0 for this identity,
      // so it gets its own default row and rows wherever a port differs from that default.
      emit(id, vec);
    }
  }
  return out;
}
