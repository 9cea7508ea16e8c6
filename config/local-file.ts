// The local config source: a YAML (or JSON) file describing services, endpoints and workloads.
// See README.md in this directory for the operator-facing format description.
//
// Validation walks the YAML AST (not the plain JS value) so that every problem can be reported with
// its line and column. All problems are collected and thrown together as one ConfigError.

import { readFileSync } from 'node:fs';
import { isAlias, isMap, isNode, isScalar, isSeq, LineCounter, parseDocument, type Document } from 'yaml';
import type { Endpoint, Model, Protocol, Service, ServicePort, Workload } from '../core/model';
import { ConfigError, type ConfigIssue } from './errors';
import { parseIp, type IpFamily } from '../core/ip';

/** What a config file yields: the desired-state model and, optionally, the node it describes. */
export interface LoadedConfig {
  model: Model;
  /** The `node:` field: the node this file describes, if given. */
  nodeName?: string;
}

const TOP_KEYS = ['node', 'services', 'endpoints', 'workloads'] as const;
const SERVICE_KEYS = ['name', 'namespace', 'vips', 'ports'] as const;
const PORT_KEYS = ['name', 'port', 'protocol', 'targetPort'] as const;
const ENDPOINT_KEYS = ['service', 'address', 'port', 'servicePort', 'weight', 'healthy', 'node'] as const;
const WORKLOAD_KEYS = ['name', 'namespace', 'serviceAccount', 'ips', 'node', 'cgroup'] as const;

export const MAX_WEIGHT = 1_000_000;

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const NODE_NAME = /^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$/;

export function isDns1123Label(s: string): boolean {
  return s.length <= 63 && DNS1123_LABEL.test(s);
}

export function isDns1123Subdomain(s: string): boolean {
  return s.length <= 253 && DNS1123_SUBDOMAIN.test(s) && s.split('.').every((l) => l.length <= 63);
}

function isNodeName(s: string): boolean {
  return s.length <= 253 && NODE_NAME.test(s);
}

type NameRule = 'label' | 'subdomain' | 'node';

const RULE_TEXT: Record<NameRule, string> = {
  label: "must be a DNS-1123 label: lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters",
  subdomain:
    "must be a DNS-1123 subdomain: dot-separated DNS-1123 labels (lower-case letters, digits and '-'), at most 253 characters",
  node: "must be a host name: letters, digits, '.', '_' and '-', starting and ending with a letter or digit, at most 253 characters",
};

function checkName(rule: NameRule, s: string): boolean {
  return rule === 'label' ? isDns1123Label(s) : rule === 'subdomain' ? isDns1123Subdomain(s) : isNodeName(s);
}

function levenshtein(a: string, b: string): number {
  const d: number[] = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0];
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = d[j];
      d[j] = Math.min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return d[b.length];
}

function suggest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const dist = levenshtein(word.toLowerCase(), c.toLowerCase());
    if (dist < bestD) {
      bestD = dist;
      best = c;
    }
  }
  return best !== undefined && bestD <= Math.max(1, Math.floor(word.length / 3)) ? best : undefined;
}

function joinKey(path: string, key: string): string {
  return path ? `${path}.${key}` : key;
}

/** A mapping's fields: key node and (unresolved) value node per allowed key. */
type Fields = Map<string, { key: unknown; value: unknown }>;

type Issue = ConfigIssue & { offset: number };

class Checker {
  readonly issues: Issue[] = [];

  constructor(
    readonly file: string,
    private readonly lc: LineCounter,
    private readonly doc: Document,
  ) {}

  offsetOf(n: unknown): number | undefined {
    if (isNode(n) && n.range) return n.range[0];
    return undefined;
  }

  lineOf(n: unknown): number | undefined {
    const o = this.offsetOf(n);
    return o === undefined ? undefined : this.lc.linePos(o).line;
  }

  /** "services[0] (line 3)" — for pointing at an earlier declaration. */
  ref(path: string, n: unknown): string {
    const l = this.lineOf(n);
    return l === undefined ? path : `${path} at line ${l}`;
  }

  /** Records a problem positioned at the first of `nodes` that has a source range. */
  err(path: string, reason: string, ...nodes: unknown[]): void {
    let offset: number | undefined;
    for (const n of nodes) {
      offset = this.offsetOf(n);
      if (offset !== undefined) break;
    }
    this.errAt(path || '(root)', reason, offset);
  }

  errAt(path: string, reason: string, offset: number | undefined): void {
    const issue: Issue = { file: this.file, path, reason, offset: offset ?? -1 };
    if (offset !== undefined) {
      const { line, col } = this.lc.linePos(offset);
      issue.line = line;
      issue.col = col;
    }
    this.issues.push(issue);
  }

  get count(): number {
    return this.issues.length;
  }

  deref(n: unknown): unknown {
    for (let i = 0; i < 64 && isAlias(n); i++) n = n.resolve(this.doc);
    return n;
  }

  isNull(n: unknown): boolean {
    const v = this.deref(n);
    return v === null || v === undefined || (isScalar(v) && v.value === null);
  }

  kind(n: unknown): string {
    const v = this.deref(n);
    if (isMap(v)) return 'a mapping';
    if (isSeq(v)) return 'a list';
    if (isScalar(v)) {
      const x = v.value;
      if (x === null || x === undefined) return 'null';
      if (typeof x === 'string') return `a string ("${x.length > 40 ? x.slice(0, 37) + '...' : x}")`;
      if (typeof x === 'number') return `a number (${x})`;
      if (typeof x === 'boolean') return `a boolean (${x})`;
      return `a ${typeof x}`;
    }
    return 'nothing';
  }

  /** Reads a mapping, reporting non-mappings and unknown keys. */
  map(n: unknown, path: string, allowed: readonly string[]): Fields | undefined {
    const m = this.deref(n);
    if (!isMap(m)) {
      this.err(path, `expected a mapping (keys: ${allowed.join(', ')}), got ${this.kind(n)}`, n);
      return undefined;
    }
    const fields: Fields = new Map();
    for (const pair of m.items) {
      const k = this.deref(pair.key);
      if (!isScalar(k) || k.value === null || typeof k.value === 'object') {
        this.err(path, `keys must be plain strings, got ${this.kind(pair.key)}`, pair.key, n);
        continue;
      }
      const name = String(k.value);
      if (!allowed.includes(name)) {
        const s = suggest(name, allowed);
        this.err(
          joinKey(path, name),
          `unknown key "${name}"${s ? ` (did you mean "${s}"?)` : ''}; allowed keys: ${allowed.join(', ')}`,
          pair.key,
          n,
        );
        continue;
      }
      fields.set(name, { key: pair.key, value: pair.value });
    }
    return fields;
  }

  /** Reads an optional list field; null/absent → undefined (and "is required" when required). */
  list(f: Fields, key: string, path: string, parent: unknown, required: boolean): unknown[] | undefined {
    const e = f.get(key);
    const p = joinKey(path, key);
    if (!e || this.isNull(e.value)) {
      if (required) this.err(p, `${key} is required`, e?.key, parent);
      return undefined;
    }
    const v = this.deref(e.value);
    if (!isSeq(v)) {
      this.err(p, `expected a list, got ${this.kind(e.value)}`, e.value, e.key);
      return undefined;
    }
    return v.items;
  }

  /** A field's value node if present and not null; reports "is required" when absent and required. */
  field(f: Fields, key: string, path: string, parent: unknown, required: boolean): { value: unknown; key: unknown } | undefined {
    const e = f.get(key);
    if (!e || this.isNull(e.value)) {
      if (required) this.err(joinKey(path, key), `${key} is required`, e?.key, parent);
      return undefined;
    }
    return e;
  }

  str(f: Fields, key: string, path: string, parent: unknown, required: boolean): string | undefined {
    const e = this.field(f, key, path, parent, required);
    return e && this.strValue(e.value, joinKey(path, key), e.key);
  }

  strValue(n: unknown, path: string, fallback?: unknown): string | undefined {
    const v = this.deref(n);
    if (!isScalar(v) || typeof v.value !== 'string') {
      this.err(path, `expected a string, got ${this.kind(n)}`, n, fallback);
      return undefined;
    }
    return v.value;
  }

  name(f: Fields, key: string, path: string, parent: unknown, required: boolean, rule: NameRule): string | undefined {
    const e = this.field(f, key, path, parent, required);
    if (!e) return undefined;
    const s = this.strValue(e.value, joinKey(path, key), e.key);
    if (s === undefined) return undefined;
    if (!checkName(rule, s)) {
      this.err(joinKey(path, key), `invalid ${key} "${s}": ${RULE_TEXT[rule]}`, e.value, e.key);
      return undefined;
    }
    return s;
  }

  int(f: Fields, key: string, path: string, parent: unknown, required: boolean, min: number, max: number): number | undefined {
    const e = this.field(f, key, path, parent, required);
    return e && this.intValue(e.value, joinKey(path, key), min, max, e.key);
  }

  intValue(n: unknown, path: string, min: number, max: number, fallback?: unknown): number | undefined {
    const v = this.deref(n);
    if (!isScalar(v) || typeof v.value !== 'number') {
      this.err(path, `expected an integer, got ${this.kind(n)}`, n, fallback);
      return undefined;
    }
    const x = v.value;
    if (!Number.isInteger(x)) {
      this.err(path, `expected an integer, got ${x}`, n, fallback);
      return undefined;
    }
    if (x < min || x > max) {
      this.err(path, `${x} is out of range (${min}..${max})`, n, fallback);
      return undefined;
    }
    return x;
  }

  bool(f: Fields, key: string, path: string, parent: unknown): boolean | undefined {
    const e = this.field(f, key, path, parent, false);
    if (!e) return undefined;
    const v = this.deref(e.value);
    if (!isScalar(v) || typeof v.value !== 'boolean') {
      this.err(joinKey(path, key), `expected true or false, got ${this.kind(e.value)}`, e.value, e.key);
      return undefined;
    }
    return v.value;
  }

  ipValue(n: unknown, path: string, fallback?: unknown): { address: string; family: IpFamily } | undefined {
    const s = this.strValue(n, path, fallback);
    if (s === undefined) return undefined;
    const r = parseIp(s);
    if (!r.ok) {
      this.err(path, r.reason, n, fallback);
      return undefined;
    }
    return { address: r.address, family: r.family };
  }
}

interface ServiceInfo {
  svc: Service;
  index: number;
  node: unknown;
  families: Set<IpFamily>;
  /** VIPs / ports parsed without error: reference checks against them are meaningful. */
  vipsOk: boolean;
  portsOk: boolean;
}

function describePort(p: ServicePort): string {
  return `${p.name ? `${p.name} ` : ''}${p.port}/${p.protocol}`;
}

/**
 * Parses and validates config text. `file` is used only in error messages.
 * Returns a normalised model (defaults filled, order as in the file) or throws ConfigError.
 */
export function parseConfigText(text: string, file = '<config>'): LoadedConfig {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true, merge: false });
  const c = new Checker(file, lc, doc);

  for (const e of [...doc.errors, ...doc.warnings]) {
    let msg = e.message.replace(/\s+at line \d+, column \d+:?[\s\S]*$/, '');
    if (e.code === 'DUPLICATE_KEY') {
      const key = /^("[^"\n]*"|'[^'\n]*'|[^:\n]+?)\s*:/.exec(text.slice(e.pos[0]))?.[1];
      if (key) msg += `: ${key.startsWith('"') || key.startsWith("'") ? key : `"${key}"`}`;
    }
    c.errAt('(yaml)', msg, e.pos[0]);
  }
  // After a syntax error the tree is unreliable; report only the syntax problems.
  if (c.count > 0) throw finish(c);

  const result = validate(c, doc.contents);
  if (c.count > 0) throw finish(c);
  return result;
}

function finish(c: Checker): ConfigError {
  const sorted = c.issues
    .map((iss, i) => ({ iss, i }))
    .sort((a, b) => a.iss.offset - b.iss.offset || a.i - b.i)
    .map(({ iss: { file, path, line, col, reason } }): ConfigIssue =>
      line !== undefined ? { file, path, line, col, reason } : { file, path, reason },
    );
  return new ConfigError(sorted);
}

function validate(c: Checker, contents: unknown): LoadedConfig {
  const model: Model = { services: [], endpoints: [], workloads: [] };
  if (c.isNull(contents)) return { model };
  const top = c.map(contents, '', TOP_KEYS);
  if (!top) return { model };

  const nodeName = c.name(top, 'node', '', contents, false, 'node');

  // ---- services -------------------------------------------------------------------------------
  const byRef = new Map<string, ServiceInfo>();
  /** refs of services whose name/namespace were invalid: don't report endpoints pointing at them. */
  const brokenRefs = new Set<string>();
  const vipPortOwner = new Map<string, ServiceInfo>();

  (c.list(top, 'services', '', contents, false) ?? []).forEach((item, i) => {
    const p = `services[${i}]`;
    const f = c.map(item, p, SERVICE_KEYS);
    if (!f) return;
    const before = c.count;
    const name = c.name(f, 'name', p, item, true, 'label');
    const namespace = c.name(f, 'namespace', p, item, false, 'label') ?? 'default';
    const idOk = c.count === before && name !== undefined;

    // vips
    const beforeVips = c.count;
    const vips: string[] = [];
    const vipNodes: unknown[] = [];
    const vipSeen = new Map<string, number>();
    const families = new Set<IpFamily>();
    const vipItems = c.list(f, 'vips', p, item, true);
    if (vipItems && vipItems.length === 0) c.err(`${p}.vips`, 'at least one VIP is required', f.get('vips')?.value, item);
    (vipItems ?? []).forEach((vn, j) => {
      const vp = `${p}.vips[${j}]`;
      const ip = c.ipValue(vn, vp);
      if (!ip) return;
      const prev = vipSeen.get(ip.address);
      if (prev !== undefined) {
        c.err(vp, `duplicate VIP ${ip.address} (also vips[${prev}])`, vn);
        return;
      }
      vipSeen.set(ip.address, j);
      vips.push(ip.address);
      vipNodes.push(vn);
      families.add(ip.family);
    });
    const vipsOk = c.count === beforeVips;

    // ports
    const beforePorts = c.count;
    const ports: ServicePort[] = [];
    const portByKey = new Map<string, number>();
    const portByName = new Map<string, number>();
    const portItems = c.list(f, 'ports', p, item, true);
    if (portItems && portItems.length === 0) c.err(`${p}.ports`, 'at least one port is required', f.get('ports')?.value, item);
    (portItems ?? []).forEach((pn, j) => {
      const pp = `${p}.ports[${j}]`;
      const pf = c.map(pn, pp, PORT_KEYS);
      if (!pf) return;
      const b = c.count;
      const pname = c.name(pf, 'name', pp, pn, false, 'label');
      const port = c.int(pf, 'port', pp, pn, true, 1, 65535);
      let protocol: Protocol = 'TCP';
      const protoStr = c.str(pf, 'protocol', pp, pn, false);
      if (protoStr !== undefined) {
        const up = protoStr.toUpperCase();
        if (up === 'TCP' || up === 'UDP') protocol = up;
        else c.err(`${pp}.protocol`, `unsupported protocol "${protoStr}": must be TCP or UDP`, pf.get('protocol')?.value);
      }
      const tf = pf.get('targetPort');
      let targetPort: number | undefined;
      if (tf && !c.isNull(tf.value)) {
        const tv = c.deref(tf.value);
        if (isScalar(tv) && typeof tv.value === 'string') {
          c.err(`${pp}.targetPort`, `expected a port number, got ${c.kind(tf.value)} (named target ports are not supported)`, tf.value);
        } else {
          targetPort = c.intValue(tf.value, `${pp}.targetPort`, 1, 65535, tf.key);
        }
      }
      if (c.count !== b || port === undefined) return;

      const key = `${port}/${protocol}`;
      const dupPort = portByKey.get(key);
      if (dupPort !== undefined) {
        c.err(`${pp}.port`, `duplicate port ${key} (also ports[${dupPort}])`, pf.get('port')?.value, pn);
        return;
      }
      if (pname !== undefined) {
        const dupName = portByName.get(pname);
        if (dupName !== undefined) {
          c.err(`${pp}.name`, `duplicate port name "${pname}" (also ports[${dupName}])`, pf.get('name')?.value, pn);
          return;
        }
        portByName.set(pname, j);
      }
      portByKey.set(key, j);
      const sp: ServicePort = pname !== undefined ? { name: pname, port, protocol } : { port, protocol };
      sp.targetPort = targetPort ?? port;
      ports.push(sp);
    });
    const portsOk = c.count === beforePorts;

    if (!idOk) {
      const rawName = f.get('name');
      const rawNs = f.get('namespace');
      const n = rawName && isScalar(c.deref(rawName.value)) ? String((c.deref(rawName.value) as { value: unknown }).value) : '';
      const ns = rawNs && isScalar(c.deref(rawNs.value)) ? String((c.deref(rawNs.value) as { value: unknown }).value) : 'default';
      brokenRefs.add(`${ns}/${n}`);
      return;
    }
    const ref = `${namespace}/${name}`;
    const existing = byRef.get(ref);
    if (existing) {
      c.err(`${p}.name`, `duplicate service ${ref}: already declared at ${c.ref(`services[${existing.index}]`, existing.node)}`, f.get('name')?.value, item);
      return;
    }
    const svc: Service = { namespace, name: name as string, vips, ports };
    const info: ServiceInfo = { svc, index: i, node: item, families, vipsOk, portsOk };
    byRef.set(ref, info);
    model.services.push(svc);

    // (vip, port, protocol) must be unique across services.
    vips.forEach((vip, j) => {
      const clashes = new Map<ServiceInfo, string[]>();
      for (const sp of ports) {
        const k = `${vip}|${sp.port}|${sp.protocol}`;
        const owner = vipPortOwner.get(k);
        if (owner) {
          const l = clashes.get(owner) ?? [];
          l.push(`${sp.port}/${sp.protocol}`);
          clashes.set(owner, l);
        } else {
          vipPortOwner.set(k, info);
        }
      }
      for (const [owner, pl] of clashes) {
        c.err(
          `${p}.vips[${vipItems ? vipItems.indexOf(vipNodes[j]) : j}]`,
          `${vip} port ${pl.join(', ')} is already used by service ${owner.svc.namespace}/${owner.svc.name} ` +
            `(${c.ref(`services[${owner.index}]`, owner.node)}); each (VIP, port, protocol) must belong to one service`,
          vipNodes[j],
        );
      }
    });
  });

  // ---- endpoints ------------------------------------------------------------------------------
  /** effective backend key → endpoint index, to catch duplicates (also via different spellings). */
  const backendOwner = new Map<string, { index: number; node: unknown }>();

  const endpointItems = c.list(top, 'endpoints', '', contents, false) ?? [];
  endpointItems.forEach((item, i) => {
    const p = `endpoints[${i}]`;
    const f = c.map(item, p, ENDPOINT_KEYS);
    if (!f) return;
    const before = c.count;
    const serviceStr = c.str(f, 'service', p, item, true);
    const addrF = c.field(f, 'address', p, item, true);
    const addr = addrF && c.ipValue(addrF.value, `${p}.address`, addrF.key);
    const port = c.int(f, 'port', p, item, false, 1, 65535);

    let servicePort: number | string | undefined;
    const spF = c.field(f, 'servicePort', p, item, false);
    if (spF) {
      const v = c.deref(spF.value);
      if (isScalar(v) && typeof v.value === 'string') {
        servicePort = c.name(f, 'servicePort', p, item, false, 'label');
      } else if (isScalar(v) && typeof v.value === 'number') {
        servicePort = c.intValue(spF.value, `${p}.servicePort`, 1, 65535, spF.key);
      } else {
        c.err(`${p}.servicePort`, `expected a port number or port name, got ${c.kind(spF.value)}`, spF.value, spF.key);
      }
    }

    let weight = 1;
    const wF = c.field(f, 'weight', p, item, false);
    if (wF) {
      const wv = c.deref(wF.value);
      if (isScalar(wv) && wv.value === 0) {
        c.err(`${p}.weight`, `weight 0 is not allowed (1..${MAX_WEIGHT}); use healthy: false to drain an endpoint`, wF.value);
      } else {
        weight = c.intValue(wF.value, `${p}.weight`, 1, MAX_WEIGHT, wF.key) ?? 1;
      }
    }
    const healthy = c.bool(f, 'healthy', p, item) ?? true;
    const node = c.name(f, 'node', p, item, false, 'node');

    // References.
    let svcInfo: ServiceInfo | undefined;
    let covered: ServicePort[] = [];
    const svcNode = f.get('service')?.value;
    if (serviceStr !== undefined) {
      if (!serviceStr.includes('/')) {
        const hits = [...byRef.values()].filter((s) => s.svc.name === serviceStr);
        const hint = hits.length > 0 ? `"${hits[0].svc.namespace}/${serviceStr}"` : `"default/${serviceStr}"`;
        c.err(`${p}.service`, `service must be written namespace/name (e.g. ${hint}), got "${serviceStr}"`, svcNode);
      } else if (!byRef.has(serviceStr)) {
        if (!brokenRefs.has(serviceStr)) {
          const nm = serviceStr.slice(serviceStr.indexOf('/') + 1);
          const others = [...byRef.keys()].filter((r) => r.endsWith(`/${nm}`));
          const s = others[0] ?? suggest(serviceStr, [...byRef.keys()]);
          c.err(`${p}.service`, `unknown service "${serviceStr}"${s ? ` (did you mean "${s}"?)` : ''}: no such service is declared under services`, svcNode);
        }
      } else {
        svcInfo = byRef.get(serviceStr) as ServiceInfo;
      }
    }
    if (svcInfo) {
      const { svc } = svcInfo;
      const ref = `${svc.namespace}/${svc.name}`;
      if (servicePort !== undefined) {
        covered = svc.ports.filter((sp) => (typeof servicePort === 'number' ? sp.port === servicePort : sp.name === servicePort));
        if (covered.length === 0 && svcInfo.portsOk) {
          const avail = svc.ports.map(describePort).join(', ');
          const quoted = typeof servicePort === 'string' && /^[0-9]+$/.test(servicePort) ? ' (write port numbers without quotes)' : '';
          c.err(
            `${p}.servicePort`,
            `service ${ref} has no port ${typeof servicePort === 'number' ? servicePort : `named "${servicePort}"`}${quoted}; its ports are: ${avail}`,
            spF?.value,
          );
        }
      } else {
        covered = svc.ports;
      }
      if (addr && svcInfo.vipsOk && svcInfo.families.size > 0 && !svcInfo.families.has(addr.family)) {
        const fam = svcInfo.families.has(4) ? 'IPv4' : 'IPv6';
        c.err(`${p}.address`, `${addr.address} is IPv${addr.family} but service ${ref} only has ${fam} VIPs, so this endpoint could never be used`, addrF?.value);
      }
    }

    if (c.count !== before || !svcInfo || !addr) return;
    const ref = `${svcInfo.svc.namespace}/${svcInfo.svc.name}`;
    const dupOf = new Map<number, string[]>();
    for (const sp of covered) {
      const backendPort = port ?? sp.targetPort ?? sp.port;
      const k = `${ref}|${sp.port}/${sp.protocol}|${addr.address}|${backendPort}`;
      const owner = backendOwner.get(k);
      if (owner) {
        const l = dupOf.get(owner.index) ?? [];
        l.push(`${describePort(sp)} -> ${addr.address} port ${backendPort}`);
        dupOf.set(owner.index, l);
      } else {
        backendOwner.set(k, { index: i, node: item });
      }
    }
    for (const [j, what] of dupOf) {
      c.err(p, `duplicate endpoint: ${ref} ${what.join('; ')} is already declared by ${c.ref(`endpoints[${j}]`, endpointItems[j])}`, item);
    }
    if (dupOf.size > 0) return;

    const ep: Endpoint = { service: ref, address: addr.address } as Endpoint;
    if (servicePort !== undefined) ep.servicePort = servicePort;
    if (port !== undefined) ep.port = port;
    ep.weight = weight;
    ep.healthy = healthy;
    if (node !== undefined) ep.node = node;
    model.endpoints.push(ep);
  });

  // ---- workloads ------------------------------------------------------------------------------
  const wlByRef = new Map<string, { index: number; node: unknown }>();
  const ipOwner = new Map<string, { ref: string; path: string; node: unknown }>();

  (c.list(top, 'workloads', '', contents, false) ?? []).forEach((item, i) => {
    const p = `workloads[${i}]`;
    const f = c.map(item, p, WORKLOAD_KEYS);
    if (!f) return;
    const before = c.count;
    const name = c.name(f, 'name', p, item, true, 'subdomain');
    const namespace = c.name(f, 'namespace', p, item, false, 'label') ?? 'default';
    const serviceAccount = c.name(f, 'serviceAccount', p, item, false, 'subdomain') ?? 'default';
    const node = c.name(f, 'node', p, item, false, 'node');
    const cgroup = c.str(f, 'cgroup', p, item, false);
    if (cgroup !== undefined && !cgroup.startsWith('/')) c.err(`${p}.cgroup`, 'must be an absolute path to the pod\'s cgroup v2 directory', f.get('cgroup')?.value, item);
    let idOk = c.count === before && name !== undefined;
    const ref = `${namespace}/${name}`;

    if (idOk) {
      const existing = wlByRef.get(ref);
      if (existing) {
        c.err(`${p}.name`, `duplicate workload ${ref}: already declared at ${c.ref(`workloads[${existing.index}]`, existing.node)}`, f.get('name')?.value, item);
        idOk = false; // don't also report its IPs as claimed by the first declaration
      } else {
        wlByRef.set(ref, { index: i, node: item });
      }
    }

    const ips: string[] = [];
    const seen = new Map<string, number>();
    const ipItems = c.list(f, 'ips', p, item, true);
    if (ipItems && ipItems.length === 0) c.err(`${p}.ips`, 'at least one IP is required', f.get('ips')?.value, item);
    (ipItems ?? []).forEach((n, j) => {
      const ip = c.ipValue(n, `${p}.ips[${j}]`);
      if (!ip) return;
      const prev = seen.get(ip.address);
      if (prev !== undefined) {
        c.err(`${p}.ips[${j}]`, `duplicate IP ${ip.address} (also ips[${prev}])`, n);
        return;
      }
      seen.set(ip.address, j);
      const owner = ipOwner.get(ip.address);
      if (owner && idOk) {
        c.err(`${p}.ips[${j}]`, `IP ${ip.address} is already claimed by workload ${owner.ref} (${c.ref(owner.path, owner.node)}); a workload IP identifies exactly one workload`, n);
        return;
      }
      if (idOk) ipOwner.set(ip.address, { ref, path: `${p}.ips[${j}]`, node: n });
      ips.push(ip.address);
    });

    if (!idOk) return;
    const wl: Workload = { namespace, name: name as string, serviceAccount, ips };
    if (node !== undefined) wl.node = node;
    if (cgroup !== undefined) wl.cgroup = cgroup;
    model.workloads.push(wl);
  });

  return nodeName !== undefined ? { model, nodeName } : { model };
}

/**
 * Loads and validates a config file. Throws ConfigError (code SM_CONFIG_INVALID) listing every
 * problem, including an unreadable file.
 */
export function loadConfigFile(path: string): LoadedConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new ConfigError([{ file: path, path: '(file)', reason: `cannot read config file: ${err.message}` }]);
  }
  return parseConfigText(text, path);
}

/** Canonical JSON of a loaded config, for change detection (models are built in a fixed key order). */
export function canonicalJson(cfg: LoadedConfig): string {
  return JSON.stringify({ nodeName: cfg.nodeName ?? null, model: cfg.model });
}
