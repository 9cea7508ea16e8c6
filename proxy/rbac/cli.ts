// `sockmesh authz check`: what the proxy's RBAC evaluator decides for one request, from RBAC
// filter files, with the same evaluator the proxy runs. For operators asking "why was this
// denied?" and for checking a policy before it is pushed.

import * as fs from 'node:fs';
import { parseArgs } from 'node:util';
import { parseAllDocuments } from 'yaml';
import { UsageError } from '../../core/errors';
import type { Decision, RbacFilterConfig, RequestAttributes } from '../types';
import { isObject, typeName } from './config-reader';
import { compileRbacFilters, HTTP_RBAC_FILTER, NETWORK_RBAC_FILTER, NETWORK_RBAC_TYPE, RbacEvaluator } from './engine';
import { RbacConfigError, warningText } from './errors';
import { parseAddress } from '../../core/ip';

export const AUTHZ_CHECK_USAGE = `usage: sockmesh authz check --rbac FILE [--rbac FILE ...] --method M --path P
         [--header K:V ...] [--source-ip IP] [--source-principal SPIFFE] [--dest-ip IP]
         [--dest-port N] [--sni NAME] [--json]

Evaluates one request against Envoy RBAC filters (envoy.filters.http.rbac and
envoy.filters.network.rbac), in the order given, with the evaluator of sockmesh's L7 proxy.
A FILE holds YAML or JSON: one filter {name, typedConfig} (typed_config and config are accepted
too), a list of them, or several YAML documents; a bare RBAC typed config (with "@type") also works.

  --header K:V        a request header (repeatable; repeated names are joined with ","). :authority
                      defaults to the host header; :method and :path come from --method and --path.
  --source-ip IP      the client's address (source, direct remote and remote IP)
  --source-principal  the client's SPIFFE id (spiffe://TD/ns/NS/sa/SA); absent: not authenticated
  --dest-ip, --dest-port  where the client was connecting
  --sni NAME          the TLS SNI; absent: plaintext
  --json              print the Decision as JSON

Prints allow or deny, the filter and policy that decided, dry-run (shadow rules) results and the
matchers that could not be evaluated (they fail closed). An attribute left out is unknown: a rule
that needs it fails closed.
Exit status: 0 evaluated (allow or deny), 1 a file cannot be read or is not a valid RBAC config,
2 usage.
`;

export interface AuthzCliIo {
  out: (s: string) => void;
  err: (s: string) => void;
}

const stdio: AuthzCliIo = { out: (s) => void process.stdout.write(s), err: (s) => void process.stderr.write(s) };

/** An RBAC file given on the command line that cannot be read as filters. */
export class RbacFileError extends UsageError {
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: ${message}`);
  }
}

function parseDocuments(file: string, text: string): unknown[] {
  try {
    return [JSON.parse(text)];
  } catch {
    // not JSON: YAML (a superset) reports errors with a position
  }
  const docs = parseAllDocuments(text);
  const list = Array.isArray(docs) ? docs : [docs];
  for (const d of list) {
    if (d.errors.length) {
      const e = d.errors[0];
      const pos = e.linePos?.[0] ? `line ${e.linePos[0].line}, column ${e.linePos[0].col}: ` : '';
      throw new RbacFileError(file, `not valid JSON or YAML: ${pos}${e.message.split('\n')[0]}`);
    }
  }
  return list.map((d) => d.toJS()).filter((d) => d !== null && d !== undefined);
}

/** The RBAC filters in a file, in order. Throws RbacFileError when it cannot be read or is not that shape. */
export function loadRbacFilterFile(file: string): RbacFilterConfig[] {
  let text: string;
  try {
    text = fs.readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (e) {
    throw new RbacFileError(file, `cannot read: ${(e as Error).message}`);
  }
  const out: RbacFilterConfig[] = [];
  const items = parseDocuments(file, text).flatMap((d) => (Array.isArray(d) ? d : [d]));
  items.forEach((it, i) => {
    if (!isObject(it)) throw new RbacFileError(file, `item ${i}: expected an RBAC filter {name, typedConfig}, got ${typeName(it)}`);
    const config = it.typedConfig ?? it.typed_config ?? it.config;
    if (config !== undefined) {
      if (typeof it.name !== 'string' || !it.name) throw new RbacFileError(file, `item ${i}: the filter has no name`);
      if (!isObject(config)) throw new RbacFileError(file, `item ${i} (${it.name}): typedConfig is ${typeName(config)}, not an object`);
      out.push({ name: it.name, config });
    } else if (typeof it['@type'] === 'string') {
      const network = it['@type'].endsWith(NETWORK_RBAC_TYPE);
      out.push({ name: network ? NETWORK_RBAC_FILTER : HTTP_RBAC_FILTER, config: it });
    } else {
      throw new RbacFileError(file, `item ${i}: expected an RBAC filter {name, typedConfig} or an RBAC typed config with "@type"`);
    }
  });
  if (!out.length) throw new RbacFileError(file, 'no RBAC filter in the file');
  return out;
}

function parseHeader(h: string): [string, string] {
  const colon = h.indexOf(':', h.startsWith(':') ? 1 : 0);
  if (colon <= 0 || (h.startsWith(':') && colon === 1)) throw new UsageError(`--header ${h}: expected NAME:VALUE`);
  return [h.slice(0, colon).trim().toLowerCase(), h.slice(colon + 1).trim()];
}

function buildRequest(v: Record<string, string | string[] | boolean | undefined>): RequestAttributes {
  const method = String(v.method).toUpperCase();
  const path = String(v.path);
  const headers: Record<string, string> = {};
  for (const h of (v.header as string[] | undefined) ?? []) {
    const [k, val] = parseHeader(h);
    headers[k] = Object.prototype.hasOwnProperty.call(headers, k) ? `${headers[k]},${val}` : val;
  }
  headers[':method'] = method;
  headers[':path'] = path;
  if (headers[':authority'] === undefined && headers.host !== undefined) headers[':authority'] = headers.host;
  if (headers[':scheme'] === undefined) headers[':scheme'] = 'http';
  const ip = (opt: string): string => {
    const s = v[opt] as string | undefined;
    if (s === undefined) return '';
    if (!parseAddress(s, { brackets: true, zone: true })) throw new UsageError(`--${opt} ${s}: not an IP address`);
    return s;
  };
  const src = ip('source-ip');
  let port = NaN; // unknown: a port rule fails closed
  if (v['dest-port'] !== undefined) {
    const s = String(v['dest-port']);
    if (!/^\d{1,5}$/.test(s) || Number(s) > 65535) throw new UsageError(`--dest-port ${s}: expected a port number 0..65535`);
    port = Number(s);
  }
  const principal = v['source-principal'] as string | undefined;
  if (principal !== undefined && !principal) throw new UsageError('--source-principal: empty (leave it out for an unauthenticated client)');
  return {
    method,
    path,
    headers,
    sourceIp: src,
    sourcePort: 0,
    directRemoteIp: src,
    remoteIp: src,
    destinationIp: ip('dest-ip'),
    destinationPort: port,
    ...(principal !== undefined ? { principal } : {}),
    ...(v.sni !== undefined ? { requestedServerName: String(v.sni) } : {}),
  };
}

function formatDecision(d: Decision, ev: RbacEvaluator, origins: string[]): string {
  const lines: string[] = [d.allow ? 'allow' : 'deny'];
  const who = d.filter !== undefined ? `filter ${d.filter}${d.policy !== undefined ? `, policy ${d.policy}` : ', no policy'}` : '(no single filter)';
  lines.push(`  decided by: ${who}`);
  lines.push(`  reason:     ${d.reason}`);
  if (d.dryRun.length) {
    lines.push('  dry run (shadow rules, not enforced):');
    for (const r of d.dryRun) {
      const what = r.policy !== undefined ? `policy ${r.policy} matched` : 'no policy matched';
      lines.push(`    - ${r.filter}: ${r.action} shadow rules, ${what} → would ${r.wouldAllow ? 'allow' : 'deny'}`);
    }
  }
  if (d.logged.length) {
    lines.push('  logged (LOG policies matched):');
    for (const l of d.logged) lines.push(`    - ${l}`);
  }
  if (d.unsupported.length) {
    lines.push('  unsupported matchers (failed closed):');
    for (const u of d.unsupported) lines.push(`    - ${u}`);
  }
  lines.push('filters, in order:');
  ev.filters.forEach((f, i) => {
    const slot = (s: typeof f.rules, what: string): string | undefined =>
      s === undefined ? undefined : s === 'matcher-tree' ? `${what}: matcher tree (not evaluated)` : `${what}: ${s.action}, ${s.policies.length} polic${s.policies.length === 1 ? 'y' : 'ies'}`;
    const parts = [slot(f.rules, 'rules'), slot(f.shadowRules, 'shadow rules')].filter(Boolean);
    lines.push(`  ${f.label} (${f.kind}, ${origins[i]}): ${parts.length ? parts.join('; ') : 'no rules (enforces nothing)'}`);
  });
  if (ev.warnings.length) {
    lines.push('config warnings:');
    for (const w of ev.warnings) lines.push(`  - ${origins[w.filterIndex]}: ${warningText(w)}`);
  }
  return lines.join('\n') + '\n';
}

/** `sockmesh authz check ARGS` (ARGS after "authz check"). Returns the exit status. */
export function runAuthzCheckCli(args: string[], io: AuthzCliIo = stdio): number {
  let values: Record<string, string | string[] | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        rbac: { type: 'string', multiple: true },
        method: { type: 'string' },
        path: { type: 'string' },
        header: { type: 'string', multiple: true },
        'source-ip': { type: 'string' },
        'source-principal': { type: 'string' },
        'dest-ip': { type: 'string' },
        'dest-port': { type: 'string' },
        sni: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    io.err(`sockmesh authz check: ${(e as Error).message}\n\n${AUTHZ_CHECK_USAGE}`);
    return 2;
  }
  if (values.help) {
    io.out(AUTHZ_CHECK_USAGE);
    return 0;
  }
  const files = (values.rbac as string[] | undefined) ?? [];
  const missing = [!files.length && '--rbac', values.method === undefined && '--method', values.path === undefined && '--path'].filter(Boolean);
  if (missing.length) {
    io.err(`sockmesh authz check: ${missing.join(', ')} required\n\n${AUTHZ_CHECK_USAGE}`);
    return 2;
  }
  let req: RequestAttributes;
  try {
    req = buildRequest(values);
  } catch (e) {
    if (e instanceof UsageError) {
      io.err(`sockmesh authz check: ${e.message}\n\n${AUTHZ_CHECK_USAGE}`);
      return 2;
    }
    throw e;
  }

  const filters: RbacFilterConfig[] = [];
  const origins: string[] = [];
  for (const file of files) {
    try {
      const fs_ = loadRbacFilterFile(file);
      fs_.forEach((f, i) => {
        filters.push(f);
        origins.push(fs_.length > 1 ? `${file} item ${i}` : file);
      });
    } catch (e) {
      if (e instanceof RbacFileError) {
        io.err(`sockmesh authz check: ${e.message}\n`);
        return 1;
      }
      throw e;
    }
  }
  let ev: RbacEvaluator;
  try {
    ev = compileRbacFilters(filters);
  } catch (e) {
    if (e instanceof RbacConfigError) {
      for (const i of e.issues) {
        const line = e.lines()[e.issues.indexOf(i)];
        io.err(`sockmesh authz check: SM_RBAC_INVALID: ${origins[i.filterIndex] ?? '?'}: ${line}\n`);
      }
      return 1;
    }
    throw e;
  }
  const d = ev.evaluate(req);
  if (values.json) {
    io.out(JSON.stringify(d, null, 2) + '\n');
    for (const w of ev.warnings) io.err(`sockmesh authz check: warning: ${origins[w.filterIndex]}: ${warningText(w)}\n`);
  } else {
    io.out(formatDecision(d, ev, origins));
  }
  return 0;
}
