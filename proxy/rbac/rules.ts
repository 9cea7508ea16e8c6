// Policy, Permission and Principal (envoy.config.rbac.v3) compiled to three-valued predicates, as
// Envoy's source/extensions/filters/common/rbac/matchers.cc evaluates them:
//   policy      = OR(permissions) AND OR(principals) [AND condition]
//   and_rules / and_ids: all; or_rules / or_ids: any; not_rule / not_id: negation; any: true
//   destination_ip / destination_port / destination_port_range [start, end): where the client was
//     connecting (the original destination the kernel recorded)
//   source_ip (deprecated) and direct_remote_ip: the connection's peer; remote_ip: the peer after
//     XFF/PROXY trust — sockmesh trusts neither, so the same address (RequestAttributes.remoteIp)
//   authenticated: the peer has an identity; with principal_name, a StringMatcher on it (the
//     SPIFFE id the datapath knows). No identity never matches, whatever the matcher.
//   requested_server_name: StringMatcher on the TLS SNI, "" without one
//   header / url_path / uri_template: the HTTP request (see matchers.ts)
// Not evaluable here, so UNKNOWN (they fail closed, engine.ts): metadata, sourced_metadata,
// filter_state, matcher and custom extensions, condition / checked_condition (CEL).

import { Msg, Scope } from './config-reader';
import { formatRange, inRange, type IpAddress, type IpRange, parseRange } from '../../core/ip';
import { compileHeaderMatcher, compilePathMatcher, compileStringMatcher, compileUriTemplate, StrPred } from './matchers';
import { allOf, always, anyOf, fromBool, NO, not, Pred, UNKNOWN, View } from './tri';

export interface RuleContext {
  /** A network (L4) RBAC filter: Envoy refuses header rules there. */
  network: boolean;
}

/**
 * How deep and/or/not may nest. Protobuf's parsers stop at 100 levels of messages, so nothing
 * deeper reaches Envoy over xDS; refusing it here also keeps compilation off the JS stack limit.
 */
const MAX_DEPTH = 100;

function tooDeep(scope: Scope, depth: number): boolean {
  if (depth <= MAX_DEPTH) return false;
  scope.error(`rules nested deeper than ${MAX_DEPTH} levels`);
  return true;
}

const never: Pred = () => NO;

function unknownLeaf(scope: Scope, desc: string): Pred {
  scope.warn(`${desc}: cannot be evaluated by sockmesh; it fails closed (an ALLOW policy that depends on it does not match, a DENY policy does)`);
  return (_v, ctx) => {
    ctx.notes.push(desc);
    return UNKNOWN;
  };
}

function describeMetadata(v: unknown): string {
  const m = v as { filter?: unknown; path?: unknown };
  const filter = typeof m?.filter === 'string' ? m.filter : '?';
  const keys = Array.isArray(m?.path) ? m.path.map((p) => (p as { key?: unknown })?.key).filter((k) => typeof k === 'string') : [];
  return `metadata ${filter}${keys.length ? ` ${keys.join('.')}` : ''} (no dynamic metadata, such as JWT claims, in sockmesh)`;
}

type IpSource = 'destinationIp' | 'directRemoteIp' | 'remoteIp';

function cidrLeaf(v: unknown, scope: Scope, source: IpSource): Pred {
  const m = Msg.read(v, scope, ['addressPrefix', 'prefixLen']);
  if (!m) return never;
  const address = m.str('addressPrefix', { required: true, minLen: 1 });
  const len = m.int('prefixLen', { min: 0, max: 128 }) ?? 0;
  if (address === undefined) return never;
  const c = parseRange(address, len);
  if (typeof c === 'string') {
    m.at('addressPrefix').error(c);
    return never;
  }
  const range: IpRange = c;
  const get: (v: View) => IpAddress | undefined = source === 'destinationIp' ? (x) => x.destinationIp() : source === 'directRemoteIp' ? (x) => x.directRemoteIp() : (x) => x.remoteIp();
  return (view, ctx) => {
    const ip = get(view);
    if (!ip) {
      // An address the datapath could not give is not "some other address": under a not_id it
      // would grant access. Unknown, so it fails closed.
      ctx.notes.push(`${source} ${JSON.stringify(view.rawIp(source))} is not an IP address (matching ${formatRange(range)})`);
      return UNKNOWN;
    }
    return fromBool(inRange(ip, range));
  };
}

function portOk(p: number): boolean {
  return Number.isInteger(p) && p >= 0 && p <= 65535;
}

function stringLeaf(sm: StrPred | undefined, get: (v: View) => string): Pred {
  if (!sm) return never;
  return (view, ctx) => sm(get(view), ctx);
}

function setOf<T>(m: Msg, field: string, item: string, compile: (v: unknown, s: Scope) => T): T[] {
  const set = m.msg(field, [item]);
  if (!set) return []; // not an object: reported by Msg.read
  const items = set.list(item, { minItems: 1 }) ?? [];
  return items.map((i) => compile(i.value, i.scope));
}

const PERMISSION = ['andRules', 'orRules', 'any', 'header', 'urlPath', 'destinationIp', 'destinationPort', 'destinationPortRange', 'metadata', 'notRule', 'requestedServerName', 'matcher', 'uriTemplate', 'sourcedMetadata'] as const;

export function compilePermission(v: unknown, scope: Scope, rc: RuleContext, depth = 0): Pred {
  if (tooDeep(scope, depth)) return never;
  const m = Msg.read(v, scope, PERMISSION);
  if (!m) return never;
  const rule = m.oneof(PERMISSION, 'permission', true);
  const at = (f: string) => m.at(f);
  switch (rule) {
    case undefined:
      return never;
    case 'andRules':
      return allOf(setOf(m, 'andRules', 'rules', (x, s) => compilePermission(x, s, rc, depth + 1)));
    case 'orRules':
      return anyOf(setOf(m, 'orRules', 'rules', (x, s) => compilePermission(x, s, rc, depth + 1)));
    case 'notRule':
      return not(compilePermission(m.get('notRule'), at('notRule'), rc, depth + 1));
    case 'any':
      if (m.get('any') !== true) at('any').error('must be true (any: false is not a rule)');
      return always;
    case 'header':
      if (rc.network) at('header').error('header rules are not supported by the network RBAC filter (Envoy rejects this config)');
      return compileHeaderMatcher(m.get('header'), at('header')) ?? never;
    case 'urlPath':
      return compilePathMatcher(m.get('urlPath'), at('urlPath')) ?? never;
    case 'uriTemplate':
      return compileUriTemplate(m.get('uriTemplate'), at('uriTemplate')) ?? never;
    case 'destinationIp':
      return cidrLeaf(m.get('destinationIp'), at('destinationIp'), 'destinationIp');
    case 'destinationPort': {
      const port = m.int('destinationPort', { min: 0, max: 65535 });
      if (port === undefined) return never;
      return (view, ctx) => {
        if (!portOk(view.destinationPort)) {
          ctx.notes.push(`destinationPort ${view.destinationPort} is not a port`);
          return UNKNOWN;
        }
        return fromBool(view.destinationPort === port);
      };
    }
    case 'destinationPortRange': {
      const r = m.msg('destinationPortRange', ['start', 'end']);
      if (!r) return never;
      const start = r.int('start', { min: 0, max: 65536 }) ?? 0;
      const end = r.int('end', { min: 0, max: 65536 }) ?? 0;
      if (start >= end) {
        r.scope.error(`range start ${start} must be lower than range end ${end} (the range is [start, end))`);
        return never;
      }
      return (view, ctx) => {
        if (!portOk(view.destinationPort)) {
          ctx.notes.push(`destinationPort ${view.destinationPort} is not a port`);
          return UNKNOWN;
        }
        return fromBool(view.destinationPort >= start && view.destinationPort < end);
      };
    }
    case 'requestedServerName':
      return stringLeaf(compileStringMatcher(m.get('requestedServerName'), at('requestedServerName'), 'requested server name'), (x) => x.sni);
    case 'metadata':
      return unknownLeaf(at('metadata'), describeMetadata(m.get('metadata')));
    case 'sourcedMetadata':
      return unknownLeaf(at('sourcedMetadata'), 'sourced metadata (no dynamic metadata in sockmesh)');
    case 'matcher':
      return unknownLeaf(at('matcher'), `matcher extension ${JSON.stringify((m.get('matcher') as { name?: unknown })?.name ?? '?')}`);
  }
}

const PRINCIPAL = ['andIds', 'orIds', 'any', 'authenticated', 'sourceIp', 'directRemoteIp', 'remoteIp', 'header', 'urlPath', 'metadata', 'filterState', 'notId', 'sourcedMetadata', 'custom'] as const;

export function compilePrincipal(v: unknown, scope: Scope, rc: RuleContext, depth = 0): Pred {
  if (tooDeep(scope, depth)) return never;
  const m = Msg.read(v, scope, PRINCIPAL);
  if (!m) return never;
  const id = m.oneof(PRINCIPAL, 'principal', true);
  const at = (f: string) => m.at(f);
  switch (id) {
    case undefined:
      return never;
    case 'andIds':
      return allOf(setOf(m, 'andIds', 'ids', (x, s) => compilePrincipal(x, s, rc, depth + 1)));
    case 'orIds':
      return anyOf(setOf(m, 'orIds', 'ids', (x, s) => compilePrincipal(x, s, rc, depth + 1)));
    case 'notId':
      return not(compilePrincipal(m.get('notId'), at('notId'), rc, depth + 1));
    case 'any':
      if (m.get('any') !== true) at('any').error('must be true (any: false is not an identifier)');
      return always;
    case 'authenticated': {
      const a = m.msg('authenticated', ['principalName']);
      if (!a) return never;
      if (!a.has('principalName') || a.get('principalName') === null) {
        return (view) => fromBool(view.principal !== undefined);
      }
      const sm = compileStringMatcher(a.get('principalName'), a.at('principalName'), 'principal');
      if (!sm) return never;
      return (view, ctx) => (view.principal === undefined ? NO : sm(view.principal, ctx));
    }
    case 'sourceIp':
      return cidrLeaf(m.get('sourceIp'), at('sourceIp'), 'directRemoteIp');
    case 'directRemoteIp':
      return cidrLeaf(m.get('directRemoteIp'), at('directRemoteIp'), 'directRemoteIp');
    case 'remoteIp':
      return cidrLeaf(m.get('remoteIp'), at('remoteIp'), 'remoteIp');
    case 'header':
      if (rc.network) at('header').error('header rules are not supported by the network RBAC filter (Envoy rejects this config)');
      return compileHeaderMatcher(m.get('header'), at('header')) ?? never;
    case 'urlPath':
      return compilePathMatcher(m.get('urlPath'), at('urlPath')) ?? never;
    case 'metadata':
      return unknownLeaf(at('metadata'), describeMetadata(m.get('metadata')));
    case 'filterState':
      return unknownLeaf(at('filterState'), 'filter state (no Envoy filter state in sockmesh)');
    case 'sourcedMetadata':
      return unknownLeaf(at('sourcedMetadata'), 'sourced metadata (no dynamic metadata in sockmesh)');
    case 'custom':
      return unknownLeaf(at('custom'), `custom principal extension ${JSON.stringify((m.get('custom') as { name?: unknown })?.name ?? '?')}`);
  }
}

export function compilePolicy(v: unknown, scope: Scope, rc: RuleContext): Pred {
  const m = Msg.read(v, scope, ['permissions', 'principals', 'condition', 'checkedCondition']);
  if (!m) return never;
  const perms = (m.list('permissions', { minItems: 1 }) ?? []).map((i) => compilePermission(i.value, i.scope, rc));
  const ids = (m.list('principals', { minItems: 1 }) ?? []).map((i) => compilePrincipal(i.value, i.scope, rc));
  const parts: Pred[] = [anyOf(perms.length ? perms : [never]), anyOf(ids.length ? ids : [never])];
  for (const f of ['condition', 'checkedCondition']) {
    if (m.has(f) && m.get(f) !== null) parts.push(unknownLeaf(m.at(f), `${f === 'condition' ? 'condition' : 'checked_condition'} (CEL expressions are not evaluated by sockmesh)`));
  }
  return allOf(parts);
}
