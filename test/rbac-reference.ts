// A second, deliberately naive implementation of Envoy RBAC semantics, used only by
// rbac-property.test.ts to cross-check proxy/rbac. It shares no code with the evaluator: it walks
// the raw JSON for every request (no compile step, no validation), uses JavaScript RegExp for
// regexes (the property test only generates patterns on which RE2 and JS agree), node's
// net.BlockList for CIDR ranges and a recursive matcher for URI templates.
//
// The semantics it encodes, written from Envoy's documentation and sources, not from the evaluator:
// - A policy matches when some permission and some principal match (and its condition, which is
//   never evaluable here). Three-valued: 'T', 'F', '?' (cannot be evaluated), Kleene and/or/not.
// - Policies in sorted name order; the first match is the effective policy. '?' counts as no match
//   in an ALLOW engine, as a match in DENY and LOG engines (fail closed / log).
// - Header: absent and not treat_missing_header_as_empty → only present_match decides (false
//   matches, true does not), then invert flips; any other kind is 'F'. exact_match "" matches any value.
// - Filters run in order; shadow rules first; the first deny stops the chain.

import { BlockList, isIPv4, isIPv6 } from 'node:net';
import type { Decision, DryRunResult, RbacFilterConfig, RequestAttributes } from '../proxy/types';

type T3 = 'T' | 'F' | '?';
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type J = any;

const snakeNames = new Map<string, string>();

/** A field in lowerCamelCase or snake_case. */
function get(o: J, camel: string): J {
  if (o === null || typeof o !== 'object') return undefined;
  if (camel in o) return o[camel];
  let snake = snakeNames.get(camel);
  if (snake === undefined) snakeNames.set(camel, (snake = camel.replace(/[A-Z]/g, (c) => '_' + c.toLowerCase())));
  return o[snake];
}
const has = (o: J, camel: string): boolean => get(o, camel) !== undefined && get(o, camel) !== null;

function kleeneAnd(xs: T3[]): T3 {
  if (xs.includes('F')) return 'F';
  return xs.includes('?') ? '?' : 'T';
}
function kleeneOr(xs: T3[]): T3 {
  if (xs.includes('T')) return 'T';
  return xs.includes('?') ? '?' : 'F';
}
function kleeneNot(x: T3): T3 {
  return x === '?' ? '?' : x === 'T' ? 'F' : 'T';
}
const b = (x: boolean): T3 => (x ? 'T' : 'F');

interface Req {
  http: boolean;
  r: RequestAttributes;
}

function lowerAscii(s: string): string {
  return s.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

function stringMatch(sm: J, s: string): T3 {
  const ic = get(sm, 'ignoreCase') === true;
  const norm = (x: string) => (ic ? lowerAscii(x) : x);
  if (has(sm, 'exact')) return b(norm(s) === norm(get(sm, 'exact')));
  if (has(sm, 'prefix')) return b(norm(s).startsWith(norm(get(sm, 'prefix'))));
  if (has(sm, 'suffix')) return b(norm(s).endsWith(norm(get(sm, 'suffix'))));
  if (has(sm, 'contains')) return b(norm(s).includes(norm(get(sm, 'contains'))));
  if (has(sm, 'safeRegex')) return regexMatch(get(sm, 'safeRegex'), s);
  return '?';
}

function regexMatch(rm: J, s: string): T3 {
  return b(new RegExp(`^(?:${get(rm, 'regex')})$`, 'u').test(s));
}

function headerValue(q: Req, name: string): string | undefined {
  if (!q.http) return undefined;
  const n = lowerAscii(name);
  if (Object.prototype.hasOwnProperty.call(q.r.headers, n)) return q.r.headers[n];
  if (n === ':method') return q.r.method;
  if (n === ':path') return q.r.path;
  return undefined;
}

function headerMatch(h: J, q: Req): T3 {
  const invert = get(h, 'invertMatch') === true;
  const emptyIfMissing = get(h, 'treatMissingHeaderAsEmpty') === true;
  const kinds = ['exactMatch', 'safeRegexMatch', 'rangeMatch', 'presentMatch', 'prefixMatch', 'suffixMatch', 'containsMatch', 'stringMatch'];
  const kind = kinds.find((k) => has(h, k)) ?? 'none';
  const presentWanted: boolean | undefined = kind === 'none' ? true : kind === 'presentMatch' ? get(h, 'presentMatch') : undefined;
  let value = headerValue(q, get(h, 'name'));
  if (value === undefined && !emptyIfMissing) {
    if (presentWanted === undefined) return 'F';
    // "present: false" is what an absent header satisfies
    const raw = presentWanted === false;
    return b(invert ? !raw : raw);
  }
  value = value ?? '';
  let r: T3;
  switch (kind) {
    case 'none':
    case 'presentMatch':
      r = b(presentWanted === true);
      break;
    case 'exactMatch':
      r = b(get(h, 'exactMatch') === '' || value === get(h, 'exactMatch'));
      break;
    case 'prefixMatch':
      r = b(value.startsWith(get(h, 'prefixMatch')));
      break;
    case 'suffixMatch':
      r = b(value.endsWith(get(h, 'suffixMatch')));
      break;
    case 'containsMatch':
      r = b(value.includes(get(h, 'containsMatch')));
      break;
    case 'safeRegexMatch':
      r = regexMatch(get(h, 'safeRegexMatch'), value);
      break;
    case 'stringMatch':
      r = stringMatch(get(h, 'stringMatch'), value);
      break;
    case 'rangeMatch': {
      const t = value.trim();
      const ok = /^[+-]?\d+$/.test(t);
      const n = ok ? BigInt(t) : 0n;
      const rg = get(h, 'rangeMatch');
      r = b(ok && n >= BigInt(get(rg, 'start') ?? 0) && n < BigInt(get(rg, 'end') ?? 0));
      break;
    }
    default:
      r = '?';
  }
  if (r === '?') return '?';
  return invert ? kleeneNot(r) : r;
}

function pathOnly(p: string): string {
  const m = /^[^?#]*/.exec(p);
  return m ? m[0] : p;
}

function urlPath(pm: J, q: Req): T3 {
  if (!q.http) return 'F';
  return stringMatch(get(pm, 'path'), pathOnly(q.r.path));
}

// ---- URI templates: a recursive matcher over tokens (not a regex).
type Tok = { lit: string } | { seg: true } | { any: true };
const PCHAR = /[A-Za-z0-9\-._~%!$&'()+,;:@=]/;

function tokens(template: string): Tok[] {
  const out: Tok[] = [];
  const pushPart = (part: string) => {
    if (part === '**') out.push({ any: true });
    else if (part === '*') out.push({ seg: true });
    else for (const c of part) out.push({ lit: c });
  };
  // walk the template: "/" separators stay literal; {x}, {x=*} → seg; {x=**} → any; {x=a/*} → parts
  let i = 0;
  while (i < template.length) {
    const c = template[i];
    if (c === '{') {
      const end = template.indexOf('}', i);
      const body = template.slice(i + 1, end);
      const eq = body.indexOf('=');
      if (eq < 0) out.push({ seg: true });
      else {
        body
          .slice(eq + 1)
          .split('/')
          .forEach((p, k) => {
            if (k > 0) out.push({ lit: '/' });
            pushPart(p);
          });
      }
      i = end + 1;
    } else if (c === '*') {
      if (template[i + 1] === '*') {
        out.push({ any: true });
        i += 2;
      } else {
        out.push({ seg: true });
        i += 1;
      }
    } else {
      out.push({ lit: c });
      i += 1;
    }
  }
  return out;
}

function matchTokens(ts: Tok[], ti: number, s: string, si: number): boolean {
  if (ti === ts.length) return si === s.length;
  const t = ts[ti];
  if ('lit' in t) return s[si] === t.lit && matchTokens(ts, ti + 1, s, si + 1);
  // `*`: one or more pchars; `**`: zero or more pchars or "/"
  let j = si;
  if ('any' in t && matchTokens(ts, ti + 1, s, j)) return true;
  while (j < s.length && (PCHAR.test(s[j]) || ('any' in t && s[j] === '/'))) {
    j++;
    if (matchTokens(ts, ti + 1, s, j)) return true;
  }
  return false;
}

function uriTemplate(u: J, q: Req): T3 {
  const template: string = get(get(u, 'typedConfig'), 'pathTemplate');
  const path = q.http ? pathOnly(q.r.path) : '';
  return b(matchTokens(tokens(template), 0, path, 0));
}

// ---- addresses through node's BlockList
function family(ip: string): { addr: string; type: 'ipv4' | 'ipv6' } | undefined {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped && isIPv4(mapped[1])) return { addr: mapped[1], type: 'ipv4' };
  if (isIPv4(ip)) return { addr: ip, type: 'ipv4' };
  if (isIPv6(ip)) return { addr: ip, type: 'ipv6' };
  return undefined;
}

function cidr(c: J, ip: string): T3 {
  const who = family(ip);
  if (!who) return '?';
  const net = family(get(c, 'addressPrefix'))!;
  let len = Number(get(c, 'prefixLen') ?? 0);
  // ::ffff:a.b.c.d/96+n is the IPv4 range a.b.c.d/n (an IPv4-mapped address is the IPv4 address)
  if (net.type === 'ipv4' && net.addr !== get(c, 'addressPrefix')) len -= 96;
  if (net.type !== who.type) return 'F';
  const list = new BlockList();
  list.addSubnet(net.addr, len, net.type);
  return b(list.check(who.addr, who.type));
}

// ---- permissions and principals, by recursion on the JSON
function permission(p: J, q: Req): T3 {
  if (has(p, 'andRules')) return kleeneAnd(get(get(p, 'andRules'), 'rules').map((x: J) => permission(x, q)));
  if (has(p, 'orRules')) return kleeneOr(get(get(p, 'orRules'), 'rules').map((x: J) => permission(x, q)));
  if (has(p, 'notRule')) return kleeneNot(permission(get(p, 'notRule'), q));
  if (has(p, 'any')) return 'T';
  if (has(p, 'header')) return headerMatch(get(p, 'header'), q);
  if (has(p, 'urlPath')) return urlPath(get(p, 'urlPath'), q);
  if (has(p, 'uriTemplate')) return uriTemplate(get(p, 'uriTemplate'), q);
  if (has(p, 'destinationIp')) return cidr(get(p, 'destinationIp'), q.r.destinationIp);
  if (has(p, 'destinationPort')) return b(q.r.destinationPort === Number(get(p, 'destinationPort')));
  if (has(p, 'destinationPortRange')) {
    const rg = get(p, 'destinationPortRange');
    return b(q.r.destinationPort >= Number(get(rg, 'start') ?? 0) && q.r.destinationPort < Number(get(rg, 'end') ?? 0));
  }
  if (has(p, 'requestedServerName')) return stringMatch(get(p, 'requestedServerName'), q.r.requestedServerName ?? '');
  return '?'; // metadata, matcher, ...
}

function principal(p: J, q: Req): T3 {
  if (has(p, 'andIds')) return kleeneAnd(get(get(p, 'andIds'), 'ids').map((x: J) => principal(x, q)));
  if (has(p, 'orIds')) return kleeneOr(get(get(p, 'orIds'), 'ids').map((x: J) => principal(x, q)));
  if (has(p, 'notId')) return kleeneNot(principal(get(p, 'notId'), q));
  if (has(p, 'any')) return 'T';
  if (has(p, 'authenticated')) {
    if (!q.r.principal) return 'F';
    const name = get(get(p, 'authenticated'), 'principalName');
    return name === undefined || name === null ? 'T' : stringMatch(name, q.r.principal);
  }
  if (has(p, 'sourceIp')) return cidr(get(p, 'sourceIp'), q.r.directRemoteIp);
  if (has(p, 'directRemoteIp')) return cidr(get(p, 'directRemoteIp'), q.r.directRemoteIp);
  if (has(p, 'remoteIp')) return cidr(get(p, 'remoteIp'), q.r.remoteIp);
  if (has(p, 'header')) return headerMatch(get(p, 'header'), q);
  if (has(p, 'urlPath')) return urlPath(get(p, 'urlPath'), q);
  return '?';
}

function policy(p: J, q: Req): T3 {
  const parts: T3[] = [kleeneOr(get(p, 'permissions').map((x: J) => permission(x, q))), kleeneOr(get(p, 'principals').map((x: J) => principal(x, q)))];
  if (has(p, 'condition') || has(p, 'checkedCondition')) parts.push('?');
  return kleeneAnd(parts);
}

type Action = 'ALLOW' | 'DENY' | 'LOG';
function actionOf(rbac: J): Action {
  const a = get(rbac, 'action');
  return a === 'DENY' || a === 1 ? 'DENY' : a === 'LOG' || a === 2 ? 'LOG' : 'ALLOW';
}

/** The effective policy of an RBAC engine for this request, if any. */
function effective(rbac: J, q: Req): string | undefined {
  const action = actionOf(rbac);
  const pols = get(rbac, 'policies') ?? {};
  for (const name of Object.keys(pols).sort()) {
    const r = policy(pols[name], q);
    if (r === 'T' || (r === '?' && action !== 'ALLOW')) return name;
  }
  return undefined;
}

export type RefDecision = Pick<Decision, 'allow' | 'filter' | 'policy' | 'dryRun' | 'logged'>;

export function referenceDecide(filters: RbacFilterConfig[], r: RequestAttributes): RefDecision {
  const seen: Record<string, number> = {};
  for (const f of filters) seen[f.name] = (seen[f.name] ?? 0) + 1;
  const label = (i: number) => (seen[filters[i].name] > 1 ? `${filters[i].name}#${i}` : filters[i].name);
  const dryRun: DryRunResult[] = [];
  const logged: string[] = [];
  let lastAllow: { filter: string; policy: string } | undefined;
  const deny = (filter: string, policy?: string): RefDecision => ({ allow: false, filter, ...(policy !== undefined ? { policy } : {}), dryRun, logged });

  for (let i = 0; i < filters.length; i++) {
    const cfg = filters[i].config;
    const network = String(cfg['@type'] ?? '').endsWith('network.rbac.v3.RBAC');
    const q: Req = { http: !network, r };
    const shadow = get(cfg, 'shadowRules');
    if (shadow !== undefined && shadow !== null) {
      const p = effective(shadow, q);
      const a = actionOf(shadow);
      const entry: DryRunResult = { filter: label(i), action: a, wouldAllow: a === 'LOG' ? true : a === 'ALLOW' ? p !== undefined : p === undefined };
      if (p !== undefined) entry.policy = p;
      // keep the key order of the evaluator's objects irrelevant: deepEqual ignores it
      dryRun.push(entry);
    }
    const rules = get(cfg, 'rules');
    if (rules === undefined || rules === null) continue;
    const a = actionOf(rules);
    const p = effective(rules, q);
    if (a === 'ALLOW') {
      if (p === undefined) return deny(label(i));
      lastAllow = { filter: label(i), policy: p };
    } else if (a === 'DENY') {
      if (p !== undefined) return deny(label(i), p);
    } else if (p !== undefined) {
      logged.push(`${label(i)}: ${p}`);
    }
  }
  return lastAllow ? { allow: true, ...lastAllow, dryRun, logged } : { allow: true, dryRun, logged };
}
