// compileRbacFilters: a chain of Envoy RBAC filters (envoy.filters.http.rbac and
// envoy.filters.network.rbac, in the order the listener runs them) → one Evaluator.
//
// Per filter, as Envoy's RBAC filters do (source/extensions/filters/{http,network}/rbac and
// filters/common/rbac/engine_impl.cc):
//   - shadow_rules are evaluated first, reported in Decision.dryRun, never enforced;
//   - `rules` absent: the filter enforces nothing. Present: policies are tried in lexicographic
//     (byte) order of their names and the first that matches is the effective policy;
//     ALLOW: allowed iff a policy matches (no policies: nothing is allowed);
//     DENY:  denied iff a policy matches (no policies: everything is allowed);
//     LOG:   always allowed; a matching policy is reported in Decision.logged;
//   - the first filter that denies ends the chain (later filters, shadow rules included, do not
//     run: Envoy has already answered 403).
// Fail closed: a policy whose outcome depends on a matcher sockmesh cannot evaluate (tri.ts) does
// not match in an ALLOW engine and matches in a DENY engine (and in a LOG one: logged); each such
// case is named in Decision.unsupported. A filter configured with the matcher-tree API
// (`matcher` instead of `rules`) denies every request.

import { Buffer } from 'node:buffer';
import type { Decision, DryRunResult, Evaluator, RbacFilterConfig, RequestAttributes } from '../types';
import { isObject, Msg, Scope, Sink, typeName } from './config-reader';
import { RbacConfigError, RbacWarning, warningText } from './errors';
import { type IpAddress, parseAddress } from '../../core/ip';
import { stripQuery } from './matchers';
import { compilePolicy } from './rules';
import { EvalContext, Pred, UNKNOWN, View, YES } from './tri';

export const HTTP_RBAC_TYPE = 'envoy.extensions.filters.http.rbac.v3.RBAC';
export const NETWORK_RBAC_TYPE = 'envoy.extensions.filters.network.rbac.v3.RBAC';
export const HTTP_RBAC_FILTER = 'envoy.filters.http.rbac';
export const NETWORK_RBAC_FILTER = 'envoy.filters.network.rbac';

export type RbacAction = 'ALLOW' | 'DENY' | 'LOG';

interface Engine {
  action: RbacAction;
  policies: Array<{ name: string; pred: Pred }>;
}

/** What a filter does for one of its two slots (rules, shadow rules). */
type Slot = { kind: 'none' } | { kind: 'rules'; engine: Engine } | { kind: 'matcher-tree' };

interface CompiledFilter {
  label: string;
  name: string;
  index: number;
  network: boolean;
  rules: Slot;
  shadow: Slot;
}

/** A compiled filter as the CLI and logs describe it. */
export interface FilterSummary {
  label: string;
  name: string;
  kind: 'http' | 'network';
  rules?: { action: RbacAction; policies: string[] } | 'matcher-tree';
  shadowRules?: { action: RbacAction; policies: string[] } | 'matcher-tree';
}

export interface CompileOptions {
  /** Warnings at compile time, and the first fail-closed evaluation of each policy, go here (core/log.ts's Logger fits). */
  logger?: { warn(msg: string, fields?: Record<string, unknown>): void };
}

export interface RbacEvaluator extends Evaluator {
  readonly filters: readonly FilterSummary[];
  /** Fields ignored and matchers that fail closed: accepted, but not enforced as written. */
  readonly warnings: readonly RbacWarning[];
}

function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function readAction(m: Msg): RbacAction | undefined {
  const v = m.get('action');
  if (v === undefined || v === null || v === 'ALLOW' || v === 0) return 'ALLOW'; // proto3 default
  if (v === 'DENY' || v === 1) return 'DENY';
  if (v === 'LOG' || v === 2) return 'LOG';
  return m.at('action').error(`unknown action ${typeName(v)}: expected ALLOW, DENY or LOG`);
}

function compileEngine(v: unknown, scope: Scope, network: boolean): Engine | undefined {
  const m = Msg.read(v, scope, ['action', 'policies', 'auditCondition', 'auditLog', 'auditLoggingOptions']);
  if (!m) return undefined;
  for (const f of ['auditCondition', 'auditLog', 'auditLoggingOptions']) {
    if (m.has(f)) m.at(f).warn('RBAC audit logging is not implemented by sockmesh; ignored');
  }
  const action = readAction(m);
  const raw = m.get('policies');
  const policies: Engine['policies'] = [];
  if (raw !== undefined && raw !== null) {
    if (!isObject(raw)) {
      m.at('policies').error(`expected a map of policy name to policy, got ${typeName(raw)}`);
    } else {
      const at = m.at('policies');
      for (const name of Object.keys(raw).sort(byteOrder)) {
        policies.push({ name, pred: compilePolicy(raw[name], at.policyEntry(name), { network }) });
      }
    }
  }
  return action ? { action, policies } : undefined;
}

const HTTP_FIELDS = ['rules', 'rulesStatPrefix', 'matcher', 'shadowRules', 'shadowMatcher', 'shadowRulesStatPrefix', 'trackPerRuleStats'];
const NETWORK_FIELDS = ['rules', 'matcher', 'shadowRules', 'shadowMatcher', 'shadowRulesStatPrefix', 'statPrefix', 'enforcementType', 'delayDeny'];

function readSlot(m: Msg, rulesField: string, matcherField: string, network: boolean): Slot {
  const hasRules = m.has(rulesField) && m.get(rulesField) !== null;
  const hasMatcher = m.has(matcherField) && m.get(matcherField) !== null;
  if (hasRules && hasMatcher) {
    m.scope.error(`${m.key(rulesField)} and ${m.key(matcherField)} are exclusive`);
    return { kind: 'none' };
  }
  if (hasMatcher) {
    m.at(matcherField).warn(
      rulesField === 'rules'
        ? 'the RBAC matcher tree is not evaluated by sockmesh: this filter denies every request (fail closed)'
        : 'the RBAC shadow matcher tree is not evaluated by sockmesh: no dry-run result for it',
    );
    return { kind: 'matcher-tree' };
  }
  if (!hasRules) return { kind: 'none' };
  const engine = compileEngine(m.get(rulesField), m.at(rulesField), network);
  return engine ? { kind: 'rules', engine } : { kind: 'none' };
}

/** The typed config of a filter: `config` (the contract), or `typedConfig` / `typed_config` as listeners and fixtures carry it. */
function typedConfigOf(f: RbacFilterConfig): unknown {
  const o = f as unknown as Record<string, unknown>;
  return o.config ?? o.typedConfig ?? o.typed_config;
}

function compileFilter(f: RbacFilterConfig, index: number, label: string, sink: Sink): CompiledFilter {
  const root = new Scope(sink, '');
  const name = typeof f?.name === 'string' ? f.name : '';
  const out: CompiledFilter = { label, name, index, network: false, rules: { kind: 'none' }, shadow: { kind: 'none' } };
  const cfg = typedConfigOf(f);
  if (!isObject(cfg)) {
    root.error(`the filter's typed config is missing or not an object (${typeName(cfg)})`);
    return out;
  }
  const type = cfg['@type'];
  if (type !== undefined) {
    const short = typeof type === 'string' ? type.slice(type.lastIndexOf('/') + 1) : '';
    if (short === NETWORK_RBAC_TYPE) out.network = true;
    else if (short.endsWith('.RBACPerRoute')) {
      root.at('@type').error('a per-route RBAC override (RBACPerRoute) is not a filter config; give the RBAC filter config itself');
      return out;
    } else if (short !== HTTP_RBAC_TYPE) {
      root.at('@type').error(`not an RBAC filter config: ${typeName(type)} (expected ${HTTP_RBAC_TYPE} or ${NETWORK_RBAC_TYPE})`);
      return out;
    }
  } else if (name === NETWORK_RBAC_FILTER) out.network = true;
  const m = Msg.read(cfg, root, out.network ? NETWORK_FIELDS : HTTP_FIELDS);
  if (!m) return out;
  out.rules = readSlot(m, 'rules', 'matcher', out.network);
  out.shadow = readSlot(m, 'shadowRules', 'shadowMatcher', out.network);
  if (out.network) {
    if (m.str('statPrefix') === undefined) m.at('statPrefix').warn('stat_prefix is required by Envoy; it only names statistics, so sockmesh accepts its absence');
    const et = m.get('enforcementType');
    if (et !== undefined && et !== 'ONE_TIME_ON_FIRST_BYTE' && et !== 0) {
      m.at('enforcementType').warn('CONTINUOUS enforcement re-checks dynamic metadata on every read in Envoy; sockmesh decides once per connection');
    }
    if (m.has('delayDeny')) m.at('delayDeny').warn('delay_deny is not implemented; a denied connection is closed at once');
  }
  return out;
}

function labels(filters: RbacFilterConfig[]): string[] {
  const names = filters.map((f) => (typeof f?.name === 'string' && f.name ? f.name : 'rbac'));
  const count = new Map<string, number>();
  for (const n of names) count.set(n, (count.get(n) ?? 0) + 1);
  return names.map((n, i) => (count.get(n)! > 1 ? `${n}#${i}` : n));
}

// ---------------------------------------------------------------------------------------------
// Views of a request

const hasOwn = (o: object, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k);

/** The contract says string; node's own header objects hold string[] for repeated headers. */
function headerText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) return v.join(',');
  return v === undefined || v === null ? undefined : String(v);
}

type IpSource = 'destinationIp' | 'directRemoteIp' | 'remoteIp';

/** Request addresses may come bracketed or with an IPv6 zone (ignored), as Envoy accepts them. */
const PEER = { brackets: true, zone: true } as const;

/**
 * What the connection says (both views share it): addresses parsed on first use, at most once per
 * evaluation. A class rather than closures: one allocation per request on the hot path.
 */
class ConnectionFacts {
  readonly raw: Record<IpSource, string>;
  private readonly parsed: Partial<Record<IpSource, IpAddress | null>> = {};

  constructor(req: RequestAttributes) {
    this.raw = {
      destinationIp: String(req.destinationIp ?? ''),
      directRemoteIp: String(req.directRemoteIp ?? ''),
      remoteIp: String(req.remoteIp ?? ''),
    };
  }

  ip(which: IpSource): IpAddress | undefined {
    let ip = this.parsed[which];
    if (ip === undefined) ip = this.parsed[which] = parseAddress(this.raw[which], PEER) ?? null;
    return ip ?? undefined;
  }
}

/** An HTTP filter's view: the request and its connection. */
class HttpView implements View {
  readonly principal: string | undefined;
  readonly sni: string;
  readonly destinationPort: number;
  readonly path: string | undefined;
  readonly urlPath: string | undefined;
  private readonly headers: Record<string, unknown>;

  constructor(
    private readonly req: RequestAttributes,
    readonly facts: ConnectionFacts,
  ) {
    this.headers = req.headers ?? {};
    this.principal = req.principal ? req.principal : undefined; // "" is no identity
    this.sni = req.requestedServerName ?? '';
    this.destinationPort = req.destinationPort;
    this.path = req.path;
    this.urlPath = stripQuery(req.path ?? '');
  }

  // :method and :path come from the request itself when the header map lacks them.
  header(name: string): string | undefined {
    const h = this.headers;
    return hasOwn(h, name) ? headerText(h[name]) : name === ':method' ? this.req.method : name === ':path' ? this.req.path : undefined;
  }

  destinationIp(): IpAddress | undefined {
    return this.facts.ip('destinationIp');
  }

  directRemoteIp(): IpAddress | undefined {
    return this.facts.ip('directRemoteIp');
  }

  remoteIp(): IpAddress | undefined {
    return this.facts.ip('remoteIp');
  }

  rawIp(which: IpSource): string {
    return this.facts.raw[which];
  }
}

/** A network filter sees the connection only: no headers, no path (Envoy passes it an empty header map). */
class NetworkView extends HttpView {
  override readonly path: undefined = undefined;
  override readonly urlPath: undefined = undefined;

  override header(): undefined {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// Evaluation

interface EngineResult {
  /** The effective policy: the first (in name order) that matched, or counted as matching when failing closed. */
  policy?: string;
  failedClosed: boolean;
}

/** A Decision with its fields in the documented order; `filter`/`policy` only when known. */
function decision(
  allow: boolean,
  reason: string,
  filter: string | undefined,
  policy: string | undefined,
  dryRun: DryRunResult[],
  unsupported: Set<string>,
  logged: string[],
): Decision {
  const d = { allow } as Decision;
  if (filter !== undefined) d.filter = filter;
  if (policy !== undefined) d.policy = policy;
  d.reason = reason;
  d.dryRun = dryRun;
  d.unsupported = unsupported.size ? [...unsupported] : [];
  d.logged = logged;
  return d;
}

export function compileRbacFilters(filters: RbacFilterConfig[], opts: CompileOptions = {}): RbacEvaluator {
  if (!Array.isArray(filters)) throw new RbacConfigError([{ filter: '(none)', filterIndex: -1, path: '', reason: 'expected a list of RBAC filters' }]);
  const issues: RbacConfigError['issues'] = [];
  const warnings: RbacWarning[] = [];
  const names = labels(filters);
  const compiled = filters.map((f, i) => {
    const sink: Sink = { filter: names[i], filterIndex: i, issues, warnings };
    return compileFilter(f, i, names[i], sink);
  });
  if (issues.length) throw new RbacConfigError(issues);
  const log = opts.logger;
  for (const w of warnings) log?.warn(`rbac: ${warningText(w)}`, { filter: w.filter, policy: w.policy, path: w.path });
  const loggedFailClosed = new Set<string>();

  function runEngine(f: CompiledFilter, e: Engine, view: View, ctx: EvalContext, unsupported: Set<string>, shadow: boolean): EngineResult {
    for (const p of e.policies) {
      const mark = ctx.notes.length;
      const r = p.pred(view, ctx);
      if (r === UNKNOWN) {
        const notes = ctx.notes.slice(mark);
        for (const n of notes) unsupported.add(`${f.label}${shadow ? ' (shadow rules)' : ''}: policy ${p.name}: ${n}`);
        ctx.notes.length = mark;
        const key = `${f.index}/${shadow}/${p.name}`;
        if (log && !loggedFailClosed.has(key)) {
          loggedFailClosed.add(key);
          log.warn('rbac: policy could not be evaluated; it fails closed', { filter: f.label, policy: p.name, shadow, action: e.action, unsupported: notes });
        }
        if (e.action !== 'ALLOW') return { policy: p.name, failedClosed: true };
        continue;
      }
      ctx.notes.length = mark;
      if (r === YES) return { policy: p.name, failedClosed: false };
    }
    return { failedClosed: false };
  }

  function evaluate(req: RequestAttributes): Decision {
    // The network view is needed only by a chain with network filters (rare for the proxy).
    const httpView = new HttpView(req, new ConnectionFacts(req));
    let networkView: NetworkView | undefined;
    const ctx: EvalContext = { notes: [] };
    const dryRun: DryRunResult[] = [];
    const unsupported = new Set<string>();
    const logged: string[] = [];
    let lastAllow: { filter: string; policy: string } | undefined;
    let denyEnforced = false;
    const finish = (allow: boolean, reason: string, filter?: string, policy?: string): Decision =>
      decision(allow, reason, filter, policy, dryRun, unsupported, logged);
    for (const f of compiled) {
      const view = f.network ? (networkView ??= new NetworkView(req, httpView.facts)) : httpView;
      if (f.shadow.kind === 'rules') {
        const e = f.shadow.engine;
        const r = runEngine(f, e, view, ctx, unsupported, true);
        const matched = r.policy !== undefined;
        dryRun.push({
          filter: f.label,
          ...(matched ? { policy: r.policy } : {}),
          action: e.action,
          wouldAllow: e.action === 'ALLOW' ? matched : e.action === 'DENY' ? !matched : true,
        });
      } else if (f.shadow.kind === 'matcher-tree') {
        unsupported.add(`${f.label} (shadow rules): the RBAC matcher tree is not evaluated (no dry-run result)`);
      }
      if (f.rules.kind === 'matcher-tree') {
        unsupported.add(`${f.label}: the RBAC matcher tree is not evaluated (fails closed)`);
        return finish(false, `filter ${f.label} uses the RBAC matcher tree, which sockmesh does not evaluate: denied (fail closed)`, f.label);
      }
      if (f.rules.kind !== 'rules') continue;
      const e = f.rules.engine;
      const r = runEngine(f, e, view, ctx, unsupported, false);
      const closed = r.failedClosed ? ' (an unsupported matcher failed closed)' : '';
      switch (e.action) {
        case 'ALLOW':
          if (r.policy === undefined) return finish(false, `no ALLOW policy matched in filter ${f.label}`, f.label);
          lastAllow = { filter: f.label, policy: r.policy };
          break;
        case 'DENY':
          if (r.policy !== undefined) return finish(false, `matched DENY policy ${r.policy} in filter ${f.label}${closed}`, f.label, r.policy);
          denyEnforced = true;
          break;
        case 'LOG':
          if (r.policy !== undefined) logged.push(`${f.label}: ${r.policy}`);
          break;
      }
    }
    if (lastAllow) return finish(true, `matched ALLOW policy ${lastAllow.policy} in filter ${lastAllow.filter}`, lastAllow.filter, lastAllow.policy);
    return finish(true, denyEnforced ? 'no DENY policy matched' : 'no enforced RBAC rules');
  }

  const summarize = (s: Slot): FilterSummary['rules'] => (s.kind === 'rules' ? { action: s.engine.action, policies: s.engine.policies.map((p) => p.name) } : s.kind === 'matcher-tree' ? 'matcher-tree' : undefined);
  const summaries: FilterSummary[] = compiled.map((f) => {
    const s: FilterSummary = { label: f.label, name: f.name, kind: f.network ? 'network' : 'http' };
    const r = summarize(f.rules);
    const sh = summarize(f.shadow);
    if (r) s.rules = r;
    if (sh) s.shadowRules = sh;
    return s;
  });

  return { evaluate, filters: summaries, warnings };
}

