// L4 expressions: constructors, a conservative simplifier, and a readable rendering.
//
// The simplifier only applies identities that hold for any evaluator (flattening nested and/or,
// dropping neutral elements, absorbing elements, removing duplicates, double negation), so a
// simplified tree matches exactly the connections the original matched. It never reasons about
// what one leaf implies about another.

import type { L4Expr, StringMatch } from '../../core/model';
import { stableJson } from './json';

export const ANY: L4Expr = { any: true };
/** Matches no connection (the canonical form of "false"; `{or: []}` simplifies to it). */
export const NEVER: L4Expr = { not: { any: true } };

export const isAny = (e: L4Expr): boolean => 'any' in e;
export const isNever = (e: L4Expr): boolean => 'not' in e && 'any' in e.not;

export function simplify(e: L4Expr): L4Expr {
  if ('and' in e) {
    const kids: L4Expr[] = [];
    for (const c of e.and.map(simplify)) {
      if (isNever(c)) return NEVER;
      if (isAny(c)) continue;
      if ('and' in c) kids.push(...c.and);
      else kids.push(c);
    }
    const d = dedupe(kids);
    return d.length === 0 ? ANY : d.length === 1 ? d[0] : { and: d };
  }
  if ('or' in e) {
    const kids: L4Expr[] = [];
    for (const c of e.or.map(simplify)) {
      if (isAny(c)) return ANY;
      if (isNever(c)) continue;
      if ('or' in c) kids.push(...c.or);
      else kids.push(c);
    }
    const d = dedupe(kids);
    return d.length === 0 ? NEVER : d.length === 1 ? d[0] : { or: d };
  }
  if ('not' in e) {
    const c = simplify(e.not);
    if ('not' in c) return c.not; // not(not x) = x; also not(NEVER) = ANY
    return { not: c };
  }
  return e;
}

function dedupe(xs: L4Expr[]): L4Expr[] {
  const seen = new Set<string>();
  return xs.filter((x) => {
    const k = stableJson(x);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

function sm(what: string, m: StringMatch): string {
  if ('exact' in m) return `${what} = ${JSON.stringify(m.exact)}`;
  if ('prefix' in m) return `${what} starts with ${JSON.stringify(m.prefix)}`;
  if ('suffix' in m) return `${what} ends with ${JSON.stringify(m.suffix)}`;
  return `${what} present`;
}

/** One line, e.g. `port = 80 and (source namespace = "a" or not (principal = "spiffe://x"))`. */
export function renderExpr(e: L4Expr): string {
  if ('any' in e) return 'any';
  if (isNever(e)) return 'nothing';
  if ('and' in e) return e.and.map((c) => ('or' in c ? `(${renderExpr(c)})` : renderExpr(c))).join(' and ');
  if ('or' in e) return e.or.map((c) => ('and' in c ? `(${renderExpr(c)})` : renderExpr(c))).join(' or ');
  if ('not' in e) return `not (${renderExpr(e.not)})`;
  if ('principal' in e) return sm('principal', e.principal);
  if ('namespace' in e) return sm('source namespace', e.namespace);
  if ('sourceIp' in e) return `source ip in ${e.sourceIp.address}/${e.sourceIp.prefixLen}`;
  if ('destinationIp' in e) return `destination ip in ${e.destinationIp.address}/${e.destinationIp.prefixLen}`;
  if ('destinationPort' in e) return `port = ${e.destinationPort}`;
  return `port in [${e.destinationPortRange.start}, ${e.destinationPortRange.end})`;
}
