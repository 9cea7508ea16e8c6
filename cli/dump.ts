// `sockmesh dump services|endpoints|identities|policies|sockets`: what the kernel maps hold, read
// straight from the pins (no agent needs to run), as tables or --json. Nothing here writes.
import { parseArgs } from 'node:util';
import * as path from 'node:path';
import * as bpf from '../native';
import { adminGet, DEFAULT_ADMIN_LISTEN } from '../mesh-agent/admin';
import {
  backend as backendCodec,
  Backend,
  IPPROTO_TCP,
  IPPROTO_UDP,
  ipKey,
  localEp,
  policyDst,
  policyKey,
  policyValue,
  slotKey,
  sockKey,
  svcKey,
  svcValue,
  IDENTITY_L7_PORTS,
  IDENTITY_UNRESOLVED,
  PDST_F_L7,
  VERDICT_ALLOW,
  VERDICT_DENY,
  VERDICT_L7,
} from '../abi/codecs';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { DEFAULT_BPFFS_DIR } from '../abi/pins';
import { RawMap, TypedMap } from '../mesh-agent/datapath/maps';
import { compilePolicies } from '../mesh-agent/datapath/policy';
import { SVC_F_L7 } from '../mesh-agent/datapath/reconciler';
import { identityTable } from '../core/identity';
import { familyOf } from '../core/ip';
import type { Model } from '../core/model';

// ---- shared helpers (trace.ts uses them too) ----------------------------------------------

export function protoName(p: number): string {
  return p === IPPROTO_TCP ? 'TCP' : p === IPPROTO_UDP ? 'UDP' : `proto${p}`;
}

/** `ip:port`, IPv6 in brackets. */
export function hostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** Names of the bits of sm_svc_value.flags (SM_SVC_F_* in bpf/include/sockmesh_types.h). */
export function svcFlagNames(flags: number): string[] {
  const out: string[] = [];
  if (flags & SVC_F_L7) out.push('L7');
  const rest = flags & ~SVC_F_L7;
  if (rest) out.push(`0x${rest.toString(16)}`);
  return out;
}

export function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd()).join('\n');
}

const pct = (share: number): string => `${(share * 100).toFixed(1)}%`;

// ---- services -----------------------------------------------------------------------------

export interface BackendShare {
  ip: string;
  port: number;
  /** Slots of the service's current generation that hold this backend. */
  slots: number;
  /** slots / slot count: the probability that a connect picks this backend. */
  share: number;
}

export interface ServiceEntry {
  vip: string;
  port: number;
  proto: string;
  svcId: number;
  gen: number;
  slotCount: number;
  flags: string[];
  backends: BackendShare[];
  /** Slots of the current generation missing from sm_backends (0 unless the maps are inconsistent). */
  missingSlots: number;
}

/** Slots of every (service id, generation), by slot index. */
function slotTables(dp: Datapath): Map<string, Map<number, Backend>> {
  const out = new Map<string, Map<number, Backend>>();
  for (const [k, v] of new TypedMap(dp.maps.sm_backends, slotKey, backendCodec).entries()) {
    const g = `${k.svcId}|${k.gen}`;
    let m = out.get(g);
    if (!m) out.set(g, (m = new Map()));
    m.set(k.slot, v);
  }
  return out;
}

/** Backends of one generation aggregated: a backend filling n of N slots gets n/N of the connects. */
export function aggregateSlots(slots: Map<number, Backend> | undefined, slotCount: number): { backends: BackendShare[]; missing: number } {
  const by = new Map<string, BackendShare>();
  let missing = 0;
  for (let i = 0; i < slotCount; i++) {
    const b = slots?.get(i);
    if (!b) {
      missing++;
      continue;
    }
    const k = hostPort(b.ip, b.port);
    const cur = by.get(k) ?? { ip: b.ip, port: b.port, slots: 0, share: 0 };
    cur.slots++;
    by.set(k, cur);
  }
  const backends = [...by.values()]
    .map((b) => ({ ...b, share: slotCount ? b.slots / slotCount : 0 }))
    .sort((a, b) => b.slots - a.slots || cmpAddr(a.ip, b.ip) || a.port - b.port);
  return { backends, missing };
}

function cmpAddr(a: string, b: string): number {
  const fa = familyOf(a);
  const fb = familyOf(b);
  if (fa !== fb) return fa - fb;
  if (fa === 2) {
    const n = (s: string) => s.split('.').reduce((x, o) => x * 256 + Number(o), 0);
    return n(a) - n(b);
  }
  return a < b ? -1 : a > b ? 1 : 0;
}

export function readServices(dp: Datapath): ServiceEntry[] {
  const slots = slotTables(dp);
  return new TypedMap(dp.maps.sm_services, svcKey, svcValue)
    .entries()
    .map(([k, v]) => {
      const { backends, missing } = aggregateSlots(slots.get(`${v.svcId}|${v.gen}`), v.slotCount);
      return {
        vip: k.ip,
        port: k.port,
        proto: protoName(k.proto),
        svcId: v.svcId,
        gen: v.gen,
        slotCount: v.slotCount,
        flags: svcFlagNames(v.flags),
        backends,
        missingSlots: missing,
      };
    })
    .sort((a, b) => cmpAddr(a.vip, b.vip) || a.port - b.port || a.proto.localeCompare(b.proto));
}

export function formatServices(s: ServiceEntry[]): string {
  if (!s.length) return 'no services in this datapath';
  return table([
    ['SERVICE', 'SVC ID', 'GEN', 'SLOTS', 'FLAGS', 'BACKENDS (SHARE)'],
    ...s.map((x) => [
      `${hostPort(x.vip, x.port)}/${x.proto}`,
      String(x.svcId),
      String(x.gen),
      String(x.slotCount),
      x.flags.join(',') || '-',
      x.backends.length
        ? x.backends.map((b) => `${hostPort(b.ip, b.port)} ${pct(b.share)}`).join(', ') + (x.missingSlots ? ` (${x.missingSlots} slots missing!)` : '')
        : 'none: connect() fails with ECONNREFUSED',
    ]),
  ]);
}

// ---- endpoints ----------------------------------------------------------------------------

export interface EndpointEntry {
  ip: string;
  port: number;
  /** A meshed pod of this node (sm_local_eps): same-node TCP to it can be redirected. */
  local: boolean;
  identity: number | null;
  services: Array<{ vip: string; port: number; proto: string; svcId: number; share: number }>;
}

export function readEndpoints(dp: Datapath, services: ServiceEntry[] = readServices(dp)): EndpointEntry[] {
  const locals = readLocalEps(dp);
  const by = new Map<string, EndpointEntry>();
  for (const s of services) {
    for (const b of s.backends) {
      const k = hostPort(b.ip, b.port);
      let e = by.get(k);
      if (!e) {
        const l = locals.get(b.ip);
        by.set(k, (e = { ip: b.ip, port: b.port, local: !!l, identity: l ? l.identity : null, services: [] }));
      }
      e.services.push({ vip: s.vip, port: s.port, proto: s.proto, svcId: s.svcId, share: b.share });
    }
  }
  return [...by.values()].sort((a, b) => cmpAddr(a.ip, b.ip) || a.port - b.port);
}

export function formatEndpoints(e: EndpointEntry[]): string {
  if (!e.length) return 'no backends in this datapath';
  return table([
    ['BACKEND', 'LOCAL POD', 'IDENTITY', 'SERVICES (SHARE)'],
    ...e.map((x) => [
      hostPort(x.ip, x.port),
      x.local ? 'yes' : 'no',
      x.identity === null ? '-' : String(x.identity),
      x.services.map((s) => `${hostPort(s.vip, s.port)}/${s.proto} ${pct(s.share)}`).join(', '),
    ]),
  ]);
}

// ---- identities ---------------------------------------------------------------------------

export function readLocalEps(dp: Datapath): Map<string, { identity: number; flags: number }> {
  return new Map(new TypedMap(dp.maps.sm_local_eps, ipKey, localEp).entries().map(([k, v]) => [k.ip, v]));
}

export interface IdentityEntry {
  ip: string;
  identity: number;
  flags: number;
  /** From the agent's config (admin endpoint), when reachable. */
  spiffe?: string;
  workload?: string;
}

export interface IdentityDump {
  identities: IdentityEntry[];
  /** Where SPIFFE ids came from, or why there are none. */
  spiffeSource: string;
}

export interface AgentNames {
  /** identity number -> SPIFFE id */
  byNumber: Map<number, string>;
  /** pod IP -> namespace/name */
  workloadByIp: Map<string, string>;
  /** sm_policy_value.rule -> policy name (index 0: none) */
  rules: string[];
  note: string;
}

function noNames(): Omit<AgentNames, 'note'> {
  return { byNumber: new Map(), workloadByIp: new Map(), rules: [] };
}

/**
 * SPIFFE ids, workload and policy names from the running agent's /config-dump: the identity numbers are
 * derived from the model's workloads (core/identity.ts) and the rule ids from its L4 policies
 * (datapath/policy.ts), by the same functions the reconciler uses.
 * Only used when that agent manages the datapath being read (its /debug/state names the bpffs).
 */
export async function identityNames(
  admin: string,
  bpffsDir: string,
): Promise<AgentNames> {
  const empty = noNames();
  let state: { datapath?: { bpffsDir?: string } };
  let dump: { model?: Model };
  try {
    const st = await adminGet(admin, '/debug/state', 1500);
    if (st.status !== 200) return { ...empty, note: `admin endpoint ${admin}: /debug/state answered ${st.status}` };
    state = JSON.parse(st.body);
    const theirs = state.datapath?.bpffsDir;
    if (theirs && path.resolve(theirs) !== path.resolve(bpffsDir)) {
      return { ...empty, note: `the agent at ${admin} manages ${theirs}, not ${bpffsDir}: no SPIFFE ids` };
    }
    const cd = await adminGet(admin, '/config-dump', 3000);
    if (cd.status !== 200) return { ...empty, note: `admin endpoint ${admin}: /config-dump answered ${cd.status}` };
    dump = JSON.parse(cd.body);
  } catch (e) {
    return { ...empty, note: `agent admin endpoint ${admin} not reachable (${(e as Error).message}): no SPIFFE ids` };
  }
  const workloads = dump.model?.workloads ?? [];
  const byNumber = new Map([...identityTable(workloads)].map(([spiffe, n]) => [n, spiffe]));
  const workloadByIp = new Map<string, string>();
  for (const w of workloads) for (const ip of w.ips) workloadByIp.set(ip, `${w.namespace}/${w.name}`);
  let rules: string[] = [];
  try {
    rules = compilePolicies(dump.model ?? { services: [], endpoints: [], workloads: [] }).rules;
  } catch {
    /* a model this build cannot compile: no policy names */
  }
  return { byNumber, workloadByIp, rules, note: `agent admin endpoint ${admin}` };
}

export async function readIdentities(dp: Datapath, admin: string | null): Promise<IdentityDump> {
  const names = admin ? await identityNames(admin, dp.bpffsDir) : { ...noNames(), note: 'not asked (--admin none)' };
  const identities = [...readLocalEps(dp)]
    .map(([ip, v]) => {
      const spiffe = names.byNumber.get(v.identity);
      const workload = names.workloadByIp.get(ip);
      return { ip, identity: v.identity, flags: v.flags, ...(spiffe ? { spiffe } : {}), ...(workload ? { workload } : {}) };
    })
    .sort((a, b) => cmpAddr(a.ip, b.ip));
  return { identities, spiffeSource: names.note };
}

export function formatIdentities(d: IdentityDump): string {
  const body = d.identities.length
    ? table([
        ['LOCAL POD IP', 'IDENTITY', 'WORKLOAD', 'SPIFFE ID'],
        ...d.identities.map((x) => [x.ip, x.identity ? String(x.identity) : '0 (unknown)', x.workload ?? '-', x.spiffe ?? '-']),
      ])
    : 'no local meshed pods in this datapath';
  return `${body}\n\nSPIFFE ids: ${d.spiffeSource}`;
}

// ---- policies -----------------------------------------------------------------------------

export interface PolicyDump {
  /** The sm_policy* maps with their fill level; empty: this datapath has no L4 policy maps. */
  maps: Array<{ name: string; entries: number; capacity: number }>;
  /** sm_policy_dst: destination IP -> policy set; `httpRules`: some of its ports take the L7 proxy only. */
  destinations: Array<{ ip: string; set: number; httpRules: boolean }>;
  /**
   * sm_policy: (set, source identity, destination port) -> verdict. identity 0: every identity
   * without rows of its own; port 0 (`*`): every port without rows of its own.
   */
  entries: Array<{ set: number; identity: number; port: number; verdict: string; rule: number; spiffe?: string; policy?: string }>;
  /** Where SPIFFE ids and policy names came from, or why there are none. */
  namesSource: string;
}

/** The L4 policy maps (`sm_policy*`) of this datapath; empty when it has none. */
export function policyMaps(dp: Datapath): Array<[string, RawMap]> {
  return (Object.entries(dp.maps) as Array<[string, RawMap]>).filter(([n]) => n.startsWith('sm_policy')).sort(([a], [b]) => a.localeCompare(b));
}

export function verdictName(v: number): string {
  return v === VERDICT_ALLOW ? 'ALLOW' : v === VERDICT_DENY ? 'DENY' : v === VERDICT_L7 ? 'L7 PROXY ONLY' : `verdict${v}`;
}

export async function readPolicies(dp: Datapath, admin: string | null): Promise<PolicyDump> {
  const pm = policyMaps(dp);
  const maps = pm.map(([name, m]) => ({ name, entries: m.count(), capacity: m.maxEntries }));
  const dstMap = dp.maps.sm_policy_dst as RawMap | undefined;
  const polMap = dp.maps.sm_policy as RawMap | undefined;
  if (!dstMap || !polMap) return { maps, destinations: [], entries: [], namesSource: 'no policy maps in this datapath' };
  const names = admin ? await identityNames(admin, dp.bpffsDir) : { ...noNames(), note: 'not asked (--admin none)' };
  const destinations = new TypedMap(dstMap, ipKey, policyDst)
    .entries()
    .map(([k, v]) => ({ ip: k.ip, set: v.set, httpRules: ((v.flags ?? 0) & PDST_F_L7) !== 0 }))
    .sort((a, b) => a.set - b.set || cmpAddr(a.ip, b.ip));
  const entries = new TypedMap(polMap, policyKey, policyValue)
    .entries()
    .map(([k, v]) => {
      const spiffe = names.byNumber.get(k.identity);
      const policy = v.rule ? names.rules[v.rule] : undefined;
      return { set: k.set, identity: k.identity, port: k.port, verdict: verdictName(v.verdict), rule: v.rule, ...(spiffe ? { spiffe } : {}), ...(policy ? { policy } : {}) };
    })
    .sort((a, b) => a.set - b.set || a.identity - b.identity || a.port - b.port);
  return { maps, destinations, entries, namesSource: names.note };
}

export function formatPolicies(p: PolicyDump): string {
  if (!p.maps.length) return 'no policy maps in this datapath';
  const out = [p.maps.map((m) => `${m.name}: ${m.entries} entries (capacity ${m.capacity})`).join('\n'), ''];
  if (!p.destinations.length) {
    out.push('no destination has an L4 policy: every connection is allowed');
  } else {
    out.push(table([['DESTINATION', 'POLICY SET', 'FLAGS'], ...p.destinations.map((d) => [d.ip, String(d.set), d.httpRules ? 'http-rules' : '-'])]), '');
    out.push(
      table([
        ['SET', 'SOURCE IDENTITY', 'PORT', 'VERDICT', 'RULE'],
        ...p.entries.map((e) => [
          String(e.set),
          e.identity === 0 ? '* (any other)' : e.identity === IDENTITY_L7_PORTS ? '(ports with HTTP rules)' : e.identity === IDENTITY_UNRESOLVED ? '(meshed, unresolved)' : e.spiffe ? `${e.identity} ${e.spiffe}` : String(e.identity),
          e.port === 0 ? '*' : String(e.port),
          e.verdict,
          e.rule === 0 ? '-' : e.policy ? `${e.rule} ${e.policy}` : String(e.rule),
        ]),
      ]),
    );
  }
  out.push('', `names: ${p.namesSource}`);
  return out.join('\n');
}

// ---- sockets ------------------------------------------------------------------------------

export interface SocketEntry {
  local: string;
  remote: string;
  /** The socket cookie (bpf_get_socket_cookie), as a decimal string. */
  cookie: string;
  /** The cookie of the socket's network namespace (part of its sockhash key), decimal. */
  netns: string;
  /** The peer socket (same pair, reversed, in the namespace that owns the remote address) is in the sockhash too: data between them is redirected. */
  paired: boolean;
}

export function readSockets(dp: Datapath): SocketEntry[] {
  const m = dp.maps.sm_sockhash;
  // Value size 8: a user-space lookup in a sockhash returns the socket cookie.
  const { keys, values } = bpf.mapLookupBatch(m.fd, sockKey.size, m.valueSize, 4096);
  const rows = keys.map((k, i) => {
    const s = sockKey.decode(k);
    return {
      local: hostPort(s.local, s.localPort),
      remote: hostPort(s.remote, s.remotePort),
      cookie: values[i].length >= 8 ? values[i].readBigUInt64LE(0).toString() : '?',
      netns: s.netns.toString(),
      paired: false,
    };
  });
  // tuple -> the namespaces holding a socket with it; the peer is the reversed tuple in another one.
  const byTuple = new Map<string, Set<string>>();
  for (const r of rows) {
    const t = `${r.local}>${r.remote}`;
    byTuple.set(t, (byTuple.get(t) ?? new Set()).add(r.netns));
  }
  for (const r of rows) r.paired = [...(byTuple.get(`${r.remote}>${r.local}`) ?? [])].some((n) => n !== r.netns);
  return rows.sort((a, b) => a.local.localeCompare(b.local) || a.remote.localeCompare(b.remote));
}

export function formatSockets(s: SocketEntry[]): string {
  if (!s.length) return 'no sockets in sm_sockhash (no open same-node connection between meshed pods)';
  return table([['NETNS', 'LOCAL', 'REMOTE', 'COOKIE', 'PEER IN SOCKHASH'], ...s.map((x) => [x.netns, x.local, x.remote, x.cookie, x.paired ? 'yes' : 'no'])]);
}

// ---- command line -------------------------------------------------------------------------

export const DUMP_USAGE = `usage: sockmesh dump <what> [--bpffs DIR] [--json]
  services     VIP:port/proto -> service id, generation, backends with their share of connects, flags
  endpoints    backend -> the services it serves (and whether it is a local meshed pod)
  identities   local meshed pod IP -> identity number (and SPIFFE id from the agent: [--admin ADDR|none])
  policies     L4 policy: destination -> policy set, (set, source identity, port) -> verdict and rule
               (SPIFFE ids and policy names from the agent: [--admin ADDR|none])
  sockets      sm_sockhash: same-node connections whose data is redirected, with socket cookies
`;

/** Runs `sockmesh dump ...`; returns the exit code. */
export async function runDumpCli(args: string[], out: (s: string) => void = (s) => process.stdout.write(s)): Promise<number> {
  const [what, ...rest] = args;
  const { values } = parseArgs({
    args: rest,
    options: {
      bpffs: { type: 'string', default: DEFAULT_BPFFS_DIR },
      json: { type: 'boolean', default: false },
      admin: { type: 'string', default: DEFAULT_ADMIN_LISTEN },
    },
  });
  const kinds = ['services', 'endpoints', 'identities', 'policies', 'sockets'];
  if (!what || !kinds.includes(what)) {
    process.stderr.write(`dump: expected one of ${kinds.join(', ')}\n\n${DUMP_USAGE}`);
    return 2;
  }
  const dp = Datapath.openPinned(values.bpffs);
  try {
    const emit = (json: unknown, text: string) => out(values.json ? JSON.stringify(json, null, 2) + '\n' : text + '\n');
    switch (what) {
      case 'services': {
        const s = readServices(dp);
        emit({ services: s }, formatServices(s));
        break;
      }
      case 'endpoints': {
        const e = readEndpoints(dp);
        emit({ endpoints: e }, formatEndpoints(e));
        break;
      }
      case 'identities': {
        const d = await readIdentities(dp, values.admin === 'none' ? null : values.admin!);
        emit(d, formatIdentities(d));
        break;
      }
      case 'policies': {
        const p = await readPolicies(dp, values.admin === 'none' ? null : values.admin!);
        emit(p, formatPolicies(p));
        break;
      }
      case 'sockets': {
        const s = readSockets(dp);
        emit({ sockets: s }, formatSockets(s));
        break;
      }
    }
    return 0;
  } finally {
    dp.close();
  }
}
