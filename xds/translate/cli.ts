// `sockmesh xds translate FILE [--json]`: what sockmesh would make of an Envoy config dump or a set
// of Istio ambient resources, without a control plane or a kernel. For operators checking what a
// mesh config becomes (and what is left out, and why) before pointing an agent at it.

import * as fs from 'node:fs';
import { parseAllDocuments } from 'yaml';
import type { Endpoint, L4Policy, Model, PolicyScope } from '../../core/model';
import { serviceRef } from '../../core/model';
import { translateAmbient } from './ambient';
import { EnvoyResources, translateConfigDump, translateEnvoy } from './envoy';
import { renderExpr } from './expr';
import { errorText, field, has, isObj, Json, shortType } from './json';
import { classifyRbacFilter } from './rbac';
import { DestinationInfo, TranslateResult, TranslateWarning } from './result';

export const TRANSLATE_USAGE = `usage: sockmesh xds translate FILE [--json]

FILE is an Envoy admin config dump (JSON: curl localhost:15000/config_dump, istioctl proxy-config all -o json)
or Istio ambient resources (YAML or JSON: one object, a list, or {resources: [...]}, of
istio.workload.Address / Workload / Service and istio.security.Authorization, or Envoy Cluster /
ClusterLoadAssignment / Listener / RouteConfiguration objects, with or without "@type").

Prints the resulting sockmesh model (services, endpoints, workloads, policies) and what was left
out and why. --json prints {services, endpoints, workloads, policies, warnings}.
Exit status: 0 translated (warnings allowed), 1 the file cannot be read or parsed, 2 usage.
`;

export interface CliIo {
  out: (s: string) => void;
  err: (s: string) => void;
}

const stdio: CliIo = { out: (s) => void process.stdout.write(s), err: (s) => void process.stderr.write(s) };

type Parsed = { ok: true; docs: unknown[] } | { ok: false; reason: string };

function parseFile(text: string): Parsed {
  try {
    return { ok: true, docs: [JSON.parse(text)] };
  } catch {
    // not JSON: YAML (JSON's superset) below reports the error with a position
  }
  const docs = parseAllDocuments(text, { uniqueKeys: false });
  const list = Array.isArray(docs) ? docs : [docs];
  for (const d of list) {
    if (d.errors.length) {
      const e = d.errors[0];
      const pos = e.linePos?.[0] ? `line ${e.linePos[0].line}, column ${e.linePos[0].col}: ` : '';
      return { ok: false, reason: `${pos}${e.message.split('\n')[0]}` };
    }
  }
  return { ok: true, docs: list.map((d) => d.toJS({ maxAliasCount: 1000 })).filter((d) => d !== null && d !== undefined) };
}

interface Sorted {
  envoy: Required<EnvoyResources>;
  ambient: { addresses: unknown[]; authorizations: unknown[] };
  unrecognised: TranslateWarning[];
}

const ENVOY_TYPES: Record<string, keyof EnvoyResources> = {
  'envoy.config.cluster.v3.Cluster': 'clusters',
  'envoy.config.endpoint.v3.ClusterLoadAssignment': 'endpoints',
  'envoy.config.listener.v3.Listener': 'listeners',
  'envoy.config.route.v3.RouteConfiguration': 'routes',
};

function withoutType(o: Json): Json {
  const { ['@type']: _t, ...rest } = o;
  return rest;
}

/** Sorts resources by their `@type`, or by their shape when they have none. */
function sortResources(items: unknown[]): Sorted {
  const s: Sorted = { envoy: { clusters: [], endpoints: [], listeners: [], routes: [] }, ambient: { addresses: [], authorizations: [] }, unrecognised: [] };
  items.forEach((raw, i) => {
    let r = raw;
    if (isObj(r) && shortType(r['@type']) === 'envoy.service.discovery.v3.Resource') r = field(r, 'resource');
    if (!isObj(r)) {
      s.unrecognised.push({ resource: `item ${i}`, reason: 'not an object; ignored' });
      return;
    }
    const t = shortType(r['@type']);
    const envoyKind = t ? ENVOY_TYPES[t] : undefined;
    if (envoyKind) s.envoy[envoyKind].push(r);
    else if (t === 'istio.workload.Address') s.ambient.addresses.push(withoutType(r));
    else if (t === 'istio.workload.Workload') s.ambient.addresses.push({ workload: withoutType(r) });
    else if (t === 'istio.workload.Service') s.ambient.addresses.push({ service: withoutType(r) });
    else if (t === 'istio.security.Authorization') s.ambient.authorizations.push(withoutType(r));
    else if (t !== undefined) s.unrecognised.push({ resource: `item ${i}`, reason: `type ${t} is not translated; ignored` });
    else if (has(r, 'workload') || (has(r, 'service') && isObj(field(r, 'service')))) s.ambient.addresses.push(r);
    else if (has(r, 'groups') || (has(r, 'name') && (has(r, 'scope') || has(r, 'action')) && !has(r, 'kind'))) s.ambient.authorizations.push(r);
    else if (has(r, 'hostname') && has(r, 'ports') && has(r, 'namespace')) s.ambient.addresses.push({ service: r });
    else if (has(r, 'uid') || has(r, 'serviceAccount') || has(r, 'authorizationPolicies') || (has(r, 'addresses') && has(r, 'services'))) s.ambient.addresses.push({ workload: r });
    else if (has(r, 'clusterName')) s.envoy.endpoints.push(r);
    else if (has(r, 'virtualHosts')) s.envoy.routes.push(r);
    else if (has(r, 'filterChains') || has(r, 'filterChainMatcher')) s.envoy.listeners.push(r);
    else if (has(r, 'name') && (has(r, 'type') || has(r, 'edsClusterConfig') || has(r, 'loadAssignment') || has(r, 'clusterType'))) s.envoy.clusters.push(r);
    else s.unrecognised.push({ resource: `item ${i}`, reason: `not a resource sockmesh translates (${has(r, 'kind') ? `kind ${String(r.kind)}` : `keys ${Object.keys(r).slice(0, 5).join(', ')}`}); ignored` });
  });
  return s;
}

function merge(a: TranslateResult, b: TranslateResult): TranslateResult {
  return {
    model: {
      services: [...a.model.services, ...b.model.services],
      endpoints: [...a.model.endpoints, ...b.model.endpoints],
      workloads: [...a.model.workloads, ...b.model.workloads],
      policies: { l4: [...(a.model.policies?.l4 ?? []), ...(b.model.policies?.l4 ?? [])], l7: [...(a.model.policies?.l7 ?? []), ...(b.model.policies?.l7 ?? [])] },
    },
    warnings: [...a.warnings, ...b.warnings],
    destinations: [...(a.destinations ?? []), ...(b.destinations ?? [])],
  };
}

/** Translate the parsed contents of a file; `kind` says what it was taken for. Undefined: nothing recognised. */
export function translateDocuments(docs: unknown[]): { result: TranslateResult; kind: string } | undefined {
  if (docs.length === 1 && isObj(docs[0]) && (Array.isArray(field(docs[0], 'configs')) || /ConfigDump$/.test(shortType(docs[0]['@type']) ?? ''))) {
    return { result: translateConfigDump(docs[0]), kind: 'Envoy config dump' };
  }
  const items = docs.flatMap((d) => (Array.isArray(d) ? d : isObj(d) && Array.isArray(d.resources) ? d.resources : [d]));
  const s = sortResources(items);
  const nEnvoy = Object.values(s.envoy).reduce((n, l) => n + l.length, 0);
  const nAmbient = s.ambient.addresses.length + s.ambient.authorizations.length;
  if (items.length > 0 && nEnvoy + nAmbient === 0) return undefined;
  let r: TranslateResult = { model: { services: [], endpoints: [], workloads: [], policies: { l4: [], l7: [] } }, warnings: [] };
  const kinds: string[] = [];
  if (nEnvoy) {
    r = merge(r, translateEnvoy(s.envoy));
    kinds.push(`${nEnvoy} Envoy resource(s)`);
  }
  if (nAmbient || !nEnvoy) {
    r = merge(r, translateAmbient(s.ambient));
    kinds.push(`${nAmbient} ambient resource(s)`);
  }
  r.warnings.unshift(...s.unrecognised);
  return { result: r, kind: kinds.join(' + ') };
}

// --- human output ---------------------------------------------------------------------------------

function table(headers: string[], rows: string[][]): string {
  if (rows.length === 0) return '  (none)\n';
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    '  ' +
    cells
      .map((c, i) => (i === cells.length - 1 ? c : (c ?? '').padEnd(widths[i])))
      .join('  ')
      .trimEnd() +
    '\n';
  return line(headers) + rows.map(line).join('');
}

const hostPort = (ip: string, port: number | undefined): string => (ip.includes(':') ? `[${ip}]` : ip) + (port !== undefined ? `:${port}` : '');

function scopeText(s: PolicyScope): string {
  switch (s.kind) {
    case 'global':
      return 'mesh-wide';
    case 'namespace':
      return `namespace ${s.namespace}`;
    case 'workloads':
      return s.workloads.length ? `workloads ${s.workloads.join(', ')}` : 'workloads (none selected)';
    case 'destinations':
      return s.destinations.map((d) => hostPort(d.ip ?? '*', d.port)).join(', ');
  }
}

function sameFamily(a: string, b: string): boolean {
  return a.includes(':') === b.includes(':');
}

export function formatHuman(file: string, kind: string, r: TranslateResult): string {
  const m: Model = r.model;
  const l4: L4Policy[] = m.policies?.l4 ?? [];
  const l7 = m.policies?.l7 ?? [];
  let out = `${file}: ${kind} → ${m.services.length} service(s), ${m.endpoints.length} endpoint(s), ${m.workloads.length} workload(s), ${l4.length} L4 polic${
    l4.length === 1 ? 'y' : 'ies'
  }, ${l7.length} L7 destination(s); ${r.warnings.length} warning(s)\n`;

  const dest = new Map<string, DestinationInfo>((r.destinations ?? []).map((d) => [`${d.service}|${d.vip}|${d.port}|${d.protocol}`, d]));
  const svcRows: string[][] = [];
  for (const s of m.services) {
    const ref = serviceRef(s);
    for (const p of s.ports) {
      for (const vip of s.vips) {
        const eps = m.endpoints.filter((e) => e.service === ref && (e.servicePort === undefined || e.servicePort === p.port || e.servicePort === p.name) && sameFamily(e.address, vip));
        const d = dest.get(`${ref}|${vip}|${p.port}|${p.protocol}`);
        const to = d ? d.clusters.map((c) => (d.clusters.length > 1 ? `${c.name} (weight ${c.weight})` : c.name)).join(', ') : p.targetPort ? `target port ${p.targetPort}` : '';
        svcRows.push([ref, hostPort(vip, p.port), p.protocol, `${eps.length} (${eps.filter((e) => e.healthy).length} healthy)`, to]);
      }
    }
  }
  out += `\nSERVICES\n${table(['SERVICE', 'VIP:PORT', 'PROTO', 'BACKENDS', 'CLUSTER / TARGET'], svcRows)}`;

  const loc = (e: Endpoint): string => [e.locality?.region, e.locality?.zone, e.locality?.subzone].filter(Boolean).join('/');
  out += `\nENDPOINTS\n${table(
    ['SERVICE', 'PORT', 'BACKEND', 'WEIGHT', 'HEALTH', 'PRIORITY', 'LOCALITY', 'WORKLOAD'],
    m.endpoints.map((e) => [
      e.service,
      e.servicePort === undefined ? 'all' : String(e.servicePort),
      hostPort(e.address, e.port),
      String(e.weight),
      e.healthy ? 'healthy' : 'UNHEALTHY',
      String(e.priority ?? 0),
      loc(e),
      e.workload ?? '',
    ]),
  )}`;

  out += `\nWORKLOADS\n${table(
    ['WORKLOAD', 'IDENTITY', 'IPS', 'NODE', 'HEALTH'],
    m.workloads.map((w) => [
      `${w.namespace}/${w.name}`,
      `spiffe://${w.trustDomain ?? 'cluster.local'}/ns/${w.namespace}/sa/${w.serviceAccount}`,
      w.ips.join(' '),
      w.node ?? '',
      w.healthy === false ? 'UNHEALTHY' : 'healthy',
    ]),
  )}`;

  out += `\nL4 POLICIES (enforceable in the kernel)\n${table(
    ['NAME', 'ACTION', 'SCOPE', 'FROM', 'WHEN'],
    l4.map((p) => [p.name, p.action + (p.dryRun ? ' (dry-run)' : ''), scopeText(p.scope), p.origin, renderExpr(p.when)]),
  )}`;

  out += `\nL7 POLICIES (need the HTTP proxy)\n${table(
    ['DESTINATION', 'SERVICE', 'FILTERS', 'WHY NOT L4'],
    l7.map((p) => [
      hostPort(p.destination.ip ?? '*', p.destination.port),
      p.destination.service ?? '',
      p.filters.map((f) => f.name).join(', '),
      p.filters
        .map((f) => classifyRbacFilter({ name: f.name, typedConfig: f.config }))
        .map((c) => (c.kind === 'l7' ? c.reason : ''))
        .filter(Boolean)
        .join('; '),
    ]),
  )}`;

  out += `\nWARNINGS (left out, and why)\n`;
  out += r.warnings.length ? r.warnings.map((w) => `  - ${w.resource}: ${w.reason}\n`).join('') : '  (none)\n';
  return out;
}

/** The --json output: the model's parts and the warnings (see xds/translate/README.md). */
export function toJsonOutput(r: TranslateResult): Json {
  return {
    services: r.model.services,
    endpoints: r.model.endpoints,
    workloads: r.model.workloads,
    policies: { l4: r.model.policies?.l4 ?? [], l7: r.model.policies?.l7 ?? [] },
    warnings: r.warnings,
  };
}

/** `sockmesh xds translate FILE [--json]`; returns the exit status. */
export function runTranslateCli(args: string[], io: CliIo = stdio): number {
  const json = args.includes('--json');
  const rest = args.filter((a) => a !== '--json');
  if (rest.includes('-h') || rest.includes('--help')) {
    io.out(TRANSLATE_USAGE);
    return 0;
  }
  const unknown = rest.filter((a) => a.startsWith('-') && a !== '-');
  if (rest.length !== 1 || unknown.length) {
    io.err(`${unknown.length ? `unknown option ${unknown[0]}\n` : ''}${TRANSLATE_USAGE}`);
    return 2;
  }
  const file = rest[0];
  let text: string;
  try {
    text = fs.readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (e) {
    io.err(`sockmesh xds translate: cannot read ${file}: ${errorText(e)}\n`);
    return 1;
  }
  const parsed = parseFile(text);
  if (!parsed.ok) {
    io.err(`sockmesh xds translate: ${file}: not valid JSON or YAML: ${parsed.reason}\n`);
    return 1;
  }
  let t: ReturnType<typeof translateDocuments>;
  try {
    t = translateDocuments(parsed.docs);
  } catch (e) {
    io.err(`sockmesh xds translate: ${file}: ${errorText(e)}\n`);
    return 1;
  }
  if (!t) {
    io.err(`sockmesh xds translate: ${file}: neither an Envoy config dump nor Envoy/ambient resources (nothing recognised)\n`);
    return 1;
  }
  io.out(json ? JSON.stringify(toJsonOutput(t.result), null, 2) + '\n' : formatHuman(file, t.kind, t.result));
  return 0;
}
