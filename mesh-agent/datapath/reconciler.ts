// Desired model -> kernel maps, applying only the difference.
//
// Replacing a service's backends is atomic for a connecting client:
//   1. the new table is written as a new generation of slots, beside the old one;
//   2. the service entry is switched to the new generation with one map update (connect4 reads it
//      once, so it sees the old table or the new one, never a mix, and never zero backends);
//   3. an RCU grace period passes (Datapath.rcuSync), so no program still holds the old entry;
//   4. the old slots are deleted.
// After apply() returns, no new connection can be sent to a removed backend.
//
// The reconciler keeps a mirror of what it wrote. adopt() rebuilds that mirror from the kernel, so
// an agent restarted over a running datapath writes nothing when nothing changed.
import * as bpf from '../../native';
import { DatapathError } from '../../core/errors';
import { L7Policy, Model, serviceRef, Service, ServicePort } from '../../core/model';
import {
  Backend,
  backend as backendCodec,
  IPPROTO_TCP,
  IPPROTO_UDP,
  ipKey,
  IpKey,
  cgroupId,
  EP_F_PROBE,
  EP_F_PROXY,
  IDENTITY_L7_PORTS,
  IDENTITY_UNRESOLVED,
  VERDICT_ALLOW,
  LocalEp,
  localEp,
  PolicyDst,
  policyDst,
  PolicyKey,
  policyKey,
  PolicyValue,
  policyValue,
  REVNAT_POD_ENTRIES,
  revnatKey,
  revnatValue,
  slotKey,
  SlotKey,
  SvcKey,
  svcKey,
  SvcValue,
  svcValue,
} from '../../abi/codecs';
import type { Datapath } from './datapath';
import { familyOf, mustCanonicalIp as canonicalIp } from '../../core/ip';
import { mapFullError, TypedMap } from './maps';
import { buildSlots, DEFAULT_MAX_SLOTS } from './slots';
import * as fs from 'node:fs';
import { identityTable, spiffeId } from '../../core/identity';
import { CompiledPolicy, compilePolicies, L7Protection, lookupRows, policyEntryKey, type SetRows } from './policy';
import { matchNamespaces } from './netns';

/** SM_SVC_F_L7 in bpf/include/sockmesh_types.h */
export const SVC_F_L7 = 1;

export interface DesiredService {
  key: SvcKey;
  /** Human name for messages: `ns/name port/PROTO on VIP`. */
  label: string;
  slots: Backend[];
  flags: number;
}

export interface DesiredState {
  services: Map<string, DesiredService>;
  localEps: Map<string, LocalEp>;
  /** Identity of every known workload IP (inbound policy). */
  ipIdentities: Map<string, LocalEp>;
  /** Identity of each local pod cgroup, by cgroup id (outbound policy). */
  cgroupIdentities: Map<bigint, LocalEp>;
  /** Identity of each local pod's network namespace, by cookie (callers without a known cgroup). */
  netnsIdentities: Map<bigint, LocalEp>;
  /** Address of a local pod -> the netns cookie of its namespace (same-node redirection, localNetns()). */
  localNetns: Map<string, bigint>;
  policy: CompiledPolicy;
  /** The HTTP rules the L7 proxy applies, one entry per destination it can see (VIP or backend). */
  proxyDestinations: L7Policy[];
  /** identity number -> SPIFFE id, for the L7 proxy (the kernel carries only the number). */
  identities: Map<number, string>;
}

export interface ApplyReport {
  added: number;
  updated: number;
  removed: number;
  unchanged: number;
  slotsWritten: number;
  slotsDeleted: number;
  localEpsAdded: number;
  localEpsRemoved: number;
  /** Identity entries (by IP and by cgroup) written or removed. */
  identitiesChanged: number;
  /** L4 policy table entries written / deleted, destinations switched. */
  policyEntriesWritten: number;
  policyEntriesDeleted: number;
  policyDstsChanged: number;
  /** Changes that could not be applied (each left the service as it was). */
  errors: DatapathError[];
  durationMs: number;
}

interface Current {
  key: SvcKey;
  value: SvcValue;
  /** null: the kernel's table for this service is incomplete; rewrite it. */
  slots: Backend[] | null;
}

export function svcKeyString(k: SvcKey): string {
  return `${k.ip}|${k.port}|${k.proto}`;
}

const protoNumber = (p: ServicePort['protocol']): number => (p === 'UDP' ? IPPROTO_UDP : IPPROTO_TCP);

function portMatches(sel: number | string | undefined, p: ServicePort): boolean {
  return sel === undefined || sel === p.port || (p.name !== undefined && sel === p.name);
}

/** The kernel state a model asks for, on node `nodeName`. */
export interface DesiredOptions {
  maxSlots?: number;
  /** Addresses of L7 proxies (this node's and peer nodes'): SM_EP_F_PROXY in sm_ip_identity. */
  proxies?: string[];
  /**
   * Addresses of this node that kubelet probes come from: SM_EP_F_PROBE in sm_ip_identity (TCP
   * from them is let into local pods unjudged, as ztunnel lets probes through).
   */
  probeSources?: string[];
  /**
   * SPIFFE id -> identity number (the agent's pinned allocation); default: numbers derived from
   * this model alone (identityTable). A workload without a number is judged as unresolved.
   */
  identities?: Map<string, number>;
  /**
   * Network namespaces of the processes in the meshed cgroup (cookie -> addresses): local workloads
   * without a known cgroup are named by the namespace that holds their addresses (netns.ts).
   */
  netns?: Map<bigint, string[]>;
  /** cookie -> the cgroup directories of the processes found in that namespace (see localNetns). */
  netnsCgroups?: Map<bigint, string[]>;
}

/**
 * Which namespace is a local pod's own, address by address: the one namespace that holds the
 * address among the namespaces of the pod's own processes (its cgroup, when known), or among all
 * namespaces of the meshed cgroup otherwise. An address held by two candidates is given to neither
 * (its sockets stay on TCP): a pod that copies another's address into a namespace of its own can
 * cost that pod the fast path, never receive its bytes.
 */
export function localNetns(
  workloads: Array<{ ips: string[]; cgroup?: string }>,
  netns: Map<bigint, string[]>,
  cgroups: Map<bigint, string[]> | undefined,
): Map<string, bigint> {
  const holders = new Map<string, bigint[]>();
  for (const [cookie, addrs] of netns) for (const a of new Set(addrs)) holders.set(a, [...(holders.get(a) ?? []), cookie]);
  const out = new Map<string, bigint>();
  for (const w of workloads) {
    const inPod = (cookie: bigint) => {
      if (!w.cgroup) return true;
      const cg = w.cgroup.replace(/\/+$/, '');
      return (cgroups?.get(cookie) ?? []).some((c) => c === cg || c.startsWith(cg + '/'));
    };
    for (const text of w.ips) {
      const ip = canonicalIp(text);
      const c = (holders.get(ip) ?? []).filter(inPod);
      if (c.length === 1) out.set(ip, c[0]);
    }
  }
  return out;
}

export function desiredState(model: Model, nodeName: string | undefined, opts: DesiredOptions = {}): DesiredState {
  const maxSlots = opts.maxSlots ?? DEFAULT_MAX_SLOTS;
  const byService = new Map<string, Model['endpoints']>();
  for (const e of model.endpoints) {
    const list = byService.get(e.service) ?? [];
    list.push(e);
    byService.set(e.service, list);
  }
  const services = new Map<string, DesiredService>();
  for (const s of model.services as Service[]) {
    const eps = byService.get(serviceRef(s)) ?? [];
    for (const p of s.ports) {
      for (const vipText of s.vips) {
        const vip = canonicalIp(vipText);
        const fam = familyOf(vip);
        let usable = eps.filter((e) => e.healthy && portMatches(e.servicePort, p) && familyOf(e.address) === fam);
        // Envoy priorities: only the best (lowest) priority that has a healthy backend serves.
        const best = Math.min(...usable.map((e) => e.priority ?? 0));
        usable = usable.filter((e) => (e.priority ?? 0) === best);
        const backends = usable.map((e) => ({ ip: canonicalIp(e.address), port: e.port ?? p.targetPort ?? p.port, weight: e.weight }));
        const key: SvcKey = { ip: vip, port: p.port, proto: protoNumber(p.protocol) };
        services.set(svcKeyString(key), {
          key,
          label: `${serviceRef(s)} port ${p.port}/${p.protocol} on ${vip}`,
          slots: buildSlots(backends, maxSlots),
          flags: 0,
        });
      }
    }
  }
  // Services with HTTP rules: TCP connects to them are steered to the node's L7 proxy, and their
  // backends' ports take connections from the proxy alone (any other way in would skip the rules).
  const l7: L7Protection = { ports: new Map(), vips: new Map() };
  const warnings: string[] = [];
  const protect = (ip: string, port: number) => {
    const set = l7.ports.get(ip) ?? new Set<number>();
    set.add(port);
    l7.ports.set(ip, set);
  };
  // Every address a backend can be reached at: all endpoints of the service port, whatever their
  // health, priority, weight or family, and every address of the workloads behind them.
  const ipsOfWorkload = new Map<string, string[]>();
  for (const w of model.workloads) {
    const ips = w.ips.map(canonicalIp);
    for (const ip of ips) ipsOfWorkload.set(ip, ips);
  }
  const backendsOf = (svc: Service, port: number): Array<{ ip: string; port: number }> => {
    const sp = svc.ports.find((x) => x.port === port && x.protocol !== 'UDP');
    if (!sp) return [];
    const seen = new Map<string, { ip: string; port: number }>();
    for (const e of byService.get(serviceRef(svc)) ?? []) {
      if (!portMatches(e.servicePort, sp)) continue;
      const bport = e.port ?? sp.targetPort ?? sp.port;
      for (const ip of ipsOfWorkload.get(canonicalIp(e.address)) ?? [canonicalIp(e.address)]) seen.set(`${ip}|${bport}`, { ip, port: bport });
    }
    return [...seen.values()];
  };
  // What the proxy judges, per destination it can see: the VIP, or (a direct connect, steered as
  // well) a backend's address. Filters of every policy for one destination are chained, so each
  // must allow (two services onto one backend port: the stricter of both).
  const proxyDsts = new Map<string, L7Policy>();
  const judge = (ip: string, port: number, p: L7Policy) => {
    const k = svcKeyString({ ip, port, proto: IPPROTO_TCP });
    const cur = proxyDsts.get(k);
    proxyDsts.set(k, cur ? { ...cur, filters: [...cur.filters, ...p.filters] } : { ...p, destination: { ip, port } });
  };
  for (const p of model.policies?.l7 ?? []) {
    const d = p.destination;
    const svcModel = d.ip ? undefined : model.services.find((s) => serviceRef(s) === d.service);
    if (!d.ip && !svcModel) {
      warnings.push(`HTTP rules for ${d.service ?? '(no destination)'} port ${d.port}: no such service; nothing to steer`);
      continue;
    }
    const vips = d.ip ? [canonicalIp(d.ip)] : svcModel!.vips.map(canonicalIp);
    for (const vip of vips) {
      const svc = services.get(svcKeyString({ ip: vip, port: d.port, proto: IPPROTO_TCP }));
      const owner = svcModel ?? model.services.find((s) => s.vips.some((v) => canonicalIp(v) === vip));
      if (!svc || !owner) {
        // Not a service VIP (a pod IP, say): clients cannot be steered to the proxy for it, so the
        // port is closed to everything but the proxy rather than left open without the rules.
        protect(vip, d.port);
        judge(vip, d.port, p);
        warnings.push(`HTTP rules for ${vip} port ${d.port}: not a service VIP; meshed clients are steered to the L7 proxy, others cannot connect`);
        continue;
      }
      svc.flags |= SVC_F_L7;
      judge(vip, d.port, p);
      const backends = backendsOf(owner, d.port);
      for (const b of backends) {
        protect(b.ip, b.port);
        judge(b.ip, b.port, p);
      }
      const byPort = l7.vips.get(vip) ?? new Map<number, Array<{ ip: string; port: number }>>();
      byPort.set(d.port, backends);
      l7.vips.set(vip, byPort);
    }
  }
  const ids = opts.identities ?? identityTable(model.workloads);
  const localEps = new Map<string, LocalEp>();
  const ipIdentities = new Map<string, LocalEp>();
  const cgroupIdentities = new Map<bigint, LocalEp>();
  for (const w of model.workloads) {
    const ep = { identity: ids.get(spiffeId(w)) ?? IDENTITY_UNRESOLVED, flags: 0 };
    for (const ip of w.ips) ipIdentities.set(canonicalIp(ip), ep);
    if (nodeName === undefined || w.node !== nodeName) continue;
    for (const ip of w.ips) localEps.set(canonicalIp(ip), ep);
    if (w.cgroup) {
      try {
        cgroupIdentities.set(fs.statSync(w.cgroup, { bigint: true }).ino, ep);
      } catch {
        /* the pod's cgroup is gone (or not there yet): nothing to map */
      }
    }
  }
  const netnsIdentities = new Map<bigint, LocalEp>();
  if (opts.netns) {
    const owner = new Map<string, string>();
    const epOf = new Map<string, LocalEp>();
    for (const w of model.workloads) {
      if (nodeName === undefined || w.node !== nodeName) continue;
      const key = `${w.namespace}/${w.name}`;
      epOf.set(key, { identity: ids.get(spiffeId(w)) ?? IDENTITY_UNRESOLVED, flags: 0 });
      for (const ip of w.ips) owner.set(canonicalIp(ip), key);
    }
    for (const [cookie, key] of matchNamespaces(opts.netns, owner)) netnsIdentities.set(cookie, epOf.get(key)!);
  }
  const local = nodeName === undefined ? [] : model.workloads.filter((w) => w.node === nodeName);
  const localNs = opts.netns ? localNetns(local, opts.netns, opts.netnsCgroups) : new Map<string, bigint>();
  // L7 proxies (this node's and its peers'): the only sources let into ports with HTTP rules.
  for (const text of opts.proxies ?? []) {
    const ip = canonicalIp(text);
    ipIdentities.set(ip, { identity: ipIdentities.get(ip)?.identity ?? 0, flags: EP_F_PROXY });
  }
  for (const text of opts.probeSources ?? []) {
    const ip = canonicalIp(text);
    const cur = ipIdentities.get(ip);
    ipIdentities.set(ip, { identity: cur?.identity ?? 0, flags: (cur?.flags ?? 0) | EP_F_PROBE });
  }
  const policy = compilePolicies(model, l7, ids);
  policy.warnings.unshift(...warnings);
  return {
    services,
    localEps,
    ipIdentities,
    cgroupIdentities,
    netnsIdentities,
    localNetns: localNs,
    policy,
    proxyDestinations: [...proxyDsts.values()],
    identities: new Map([...ids].map(([spiffe, n]) => [n, spiffe])),
  };
}

function sameSlots(a: Backend[] | null, b: Backend[]): boolean {
  if (!a || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i].ip !== b[i].ip || a[i].port !== b[i].port) return false;
  return true;
}

export class Reconciler {
  private readonly svc: TypedMap<SvcKey, SvcValue>;
  private readonly slotsMap: TypedMap<SlotKey, Backend>;
  private readonly eps: TypedMap<IpKey, LocalEp>;
  private readonly ipIds: TypedMap<IpKey, LocalEp>;
  private readonly cgIds: TypedMap<{ id: bigint }, LocalEp>;
  private readonly nsIds: TypedMap<{ id: bigint }, LocalEp>;
  private readonly polDst: TypedMap<IpKey, PolicyDst>;
  private readonly pol: TypedMap<PolicyKey, PolicyValue>;
  private current = new Map<string, Current>();
  private currentEps = new Map<string, LocalEp>();
  private currentIpIds = new Map<string, LocalEp>();
  private currentCgIds = new Map<bigint, LocalEp>();
  private currentNsIds = new Map<bigint, LocalEp>();
  private readonly localNs: TypedMap<IpKey, { id: bigint }>;
  private currentLocalNs = new Map<string, { id: bigint }>();
  private currentRevnatPods = new Set<bigint>();
  private currentPolDst = new Map<string, PolicyDst>();
  private currentPol = new Map<string, { key: PolicyKey; value: PolicyValue }>();
  private usedIds = new Set<number>();
  private nextId = 1;
  private slotEntries = 0;

  /**
   * `betweenSteps` runs between the steps of a policy/identity change (after the first tables,
   * after the identity entries): a test widens the window there to show no connect falls in it.
   */
  constructor(
    private readonly dp: Datapath,
    private readonly hooks: { betweenSteps?: (step: 'tables' | 'identities') => void } = {},
  ) {
    this.svc = new TypedMap(dp.maps.sm_services, svcKey, svcValue);
    this.slotsMap = new TypedMap(dp.maps.sm_backends, slotKey, backendCodec);
    this.eps = new TypedMap(dp.maps.sm_local_eps, ipKey, localEp);
    this.ipIds = new TypedMap(dp.maps.sm_ip_identity, ipKey, localEp);
    this.cgIds = new TypedMap(dp.maps.sm_cgroup_identity, cgroupId, localEp);
    this.nsIds = new TypedMap(dp.maps.sm_netns_identity, cgroupId, localEp); // a u64 key as well
    this.localNs = new TypedMap(dp.maps.sm_local_netns, ipKey, cgroupId); // a u64 value
    this.polDst = new TypedMap(dp.maps.sm_policy_dst, ipKey, policyDst);
    this.pol = new TypedMap(dp.maps.sm_policy, policyKey, policyValue);
  }

  /** Identity numbers the kernel still refers to (policy rows, identity entries). */
  identitiesInUse(): Set<number> {
    const out = new Set<number>();
    for (const e of this.currentPol.values()) out.add(e.key.identity);
    for (const v of this.currentIpIds.values()) out.add(v.identity);
    for (const v of this.currentCgIds.values()) out.add(v.identity);
    for (const v of this.currentNsIds.values()) out.add(v.identity);
    for (const v of this.currentEps.values()) out.add(v.identity);
    return out;
  }

  /**
   * Read what the kernel holds (after an agent restart, or a first start) and delete slot
   * generations no service points to (left by an agent killed in the middle of an update).
   */
  adopt(): { services: number; slots: number; localEps: number; orphanSlotsDeleted: number } {
    this.current.clear();
    this.usedIds.clear();
    const groups = new Map<string, Map<number, Backend>>();
    const allSlots = this.slotsMap.entries();
    for (const [k, v] of allSlots) {
      const g = `${k.svcId}|${k.gen}`;
      let m = groups.get(g);
      if (!m) groups.set(g, (m = new Map()));
      m.set(k.slot, v);
    }
    const live = new Set<string>();
    for (const [k, v] of this.svc.entries()) {
      const g = `${v.svcId}|${v.gen}`;
      live.add(g);
      const m = groups.get(g);
      let slots: Backend[] | null = [];
      for (let i = 0; i < v.slotCount; i++) {
        const b = m?.get(i);
        if (!b) {
          slots = null;
          break;
        }
        slots.push(b);
      }
      this.current.set(svcKeyString(k), { key: k, value: v, slots });
      this.usedIds.add(v.svcId);
    }
    const orphans = allSlots.filter(([k]) => !live.has(`${k.svcId}|${k.gen}`)).map(([k]) => k);
    // Unreferenced since before this process started, so no program can still be reading them.
    this.slotsMap.deleteMany(orphans);
    this.slotEntries = allSlots.length - orphans.length;
    this.currentEps = new Map(this.eps.entries().map(([k, v]) => [k.ip, v]));
    this.currentIpIds = new Map(this.ipIds.entries().map(([k, v]) => [k.ip, v]));
    this.currentCgIds = new Map(this.cgIds.entries().map(([k, v]) => [k.id, v]));
    this.currentNsIds = new Map(this.nsIds.entries().map(([k, v]) => [k.id, v]));
    this.currentLocalNs = new Map(this.localNs.entries().map(([k, v]) => [k.ip, v]));
    this.currentRevnatPods = new Set();
    const outer = this.dp.maps.sm_revnat_pods;
    for (let k = bpf.mapGetNextKey(outer.fd, null, 8); k; k = bpf.mapGetNextKey(outer.fd, k, 8)) this.currentRevnatPods.add(k.readBigUInt64LE(0));
    this.currentPolDst = new Map(this.polDst.entries().map(([k, v]) => [k.ip, v]));
    this.currentPol = new Map(this.pol.entries().map(([key, value]) => [policyEntryKey(key), { key, value }]));
    return { services: this.current.size, slots: this.slotEntries, localEps: this.currentEps.size, orphanSlotsDeleted: orphans.length };
  }

  private allocId(): number {
    while (this.usedIds.has(this.nextId) || this.nextId === 0) this.nextId = (this.nextId + 1) >>> 0;
    const id = this.nextId;
    this.usedIds.add(id);
    this.nextId = (this.nextId + 1) >>> 0;
    return id;
  }

  private writeSlots(svcId: number, gen: number, slots: Backend[]): void {
    const keys: Buffer[] = [];
    const values: Buffer[] = [];
    slots.forEach((b, i) => {
      keys.push(slotKey.encode({ svcId, gen, slot: i }));
      values.push(backendCodec.encode(b));
    });
    try {
      if (keys.length) bpf.mapUpdateBatch(this.slotsMap.raw.fd, keys, values, bpf.consts.BPF_ANY);
    } catch (e) {
      // Leave nothing of this generation behind: it is not referenced, but it takes room.
      for (const k of keys) bpf.mapDelete(this.slotsMap.raw.fd, k);
      throw e;
    }
  }

  /** Delete a generation's slots; returns how many entries were really there. */
  private deleteSlots(svcId: number, gen: number, count: number): number {
    const keys: Buffer[] = [];
    for (let i = 0; i < count; i++) keys.push(slotKey.encode({ svcId, gen, slot: i }));
    return keys.length ? bpf.mapDeleteBatch(this.slotsMap.raw.fd, keys) : 0;
  }

  /**
   * Apply the difference between `desired` and the kernel. Never throws: what could not be applied
   * is in `errors`, and the next apply() retries it (the agent calls apply() again while errors
   * remain). A change refused for room that this same pass freed (slots of removed or replaced
   * services go only after the RCU wait) is retried once right away.
   */
  apply(desired: DesiredState): ApplyReport {
    const t0 = process.hrtime.bigint();
    const first = this.applyOnce(desired);
    let report = first;
    if (first.errors.some((e) => e.code === 'SM_MAP_FULL') && first.slotsDeleted + first.removed > 0) {
      const second = this.applyOnce(desired);
      report = {
        added: first.added + second.added,
        updated: first.updated + second.updated,
        removed: first.removed + second.removed,
        unchanged: second.unchanged,
        slotsWritten: first.slotsWritten + second.slotsWritten,
        slotsDeleted: first.slotsDeleted + second.slotsDeleted,
        localEpsAdded: first.localEpsAdded + second.localEpsAdded,
        localEpsRemoved: first.localEpsRemoved + second.localEpsRemoved,
        identitiesChanged: first.identitiesChanged + second.identitiesChanged,
        policyEntriesWritten: first.policyEntriesWritten + second.policyEntriesWritten,
        policyEntriesDeleted: first.policyEntriesDeleted + second.policyEntriesDeleted,
        policyDstsChanged: first.policyDstsChanged + second.policyDstsChanged,
        errors: second.errors,
        durationMs: 0,
      };
    }
    report.durationMs = Number(process.hrtime.bigint() - t0) / 1e6;
    return report;
  }

  private applyOnce(desired: DesiredState): ApplyReport {
    const report: ApplyReport = {
      added: 0,
      updated: 0,
      removed: 0,
      unchanged: 0,
      slotsWritten: 0,
      slotsDeleted: 0,
      localEpsAdded: 0,
      localEpsRemoved: 0,
      identitiesChanged: 0,
      policyEntriesWritten: 0,
      policyEntriesDeleted: 0,
      policyDstsChanged: 0,
      errors: [],
      durationMs: 0,
    };
    // Policy and identities first: a new backend is protected (its ports with HTTP rules closed to
    // all but the proxy, its L4 rows in the VIP's set) before any connect can be sent to it.
    this.applyPolicyAndIdentities(desired, report);
    const svcCap = this.svc.raw.maxEntries;
    const slotCap = this.slotsMap.raw.maxEntries;
    const retired: Array<{ svcId: number; gen: number; count: number }> = [];
    // Ids of removed services are reused only after their slots are gone (step 4), or a new
    // service could write over slots that are about to be deleted.
    const freedIds: number[] = [];

    // 1. Services no longer wanted go first, so their entries make room for new ones.
    for (const [k, cur] of [...this.current]) {
      if (desired.services.has(k)) continue;
      try {
        this.svc.delete(cur.key);
      } catch (e) {
        report.errors.push(kernelError(e, this.svc.raw.name, this.svc.raw.maxEntries, `removing ${svcKeyString(cur.key)}`));
        continue;
      }
      this.current.delete(k);
      freedIds.push(cur.value.svcId);
      retired.push({ svcId: cur.value.svcId, gen: cur.value.gen, count: cur.value.slotCount });
      report.removed++;
    }
    let svcCount = this.current.size;

    // 2. New generations, beside the old ones.
    const switched: Array<{ k: string; d: DesiredService; value: SvcValue; old: Current | undefined }> = [];
    for (const [k, d] of desired.services) {
      const cur = this.current.get(k);
      if (cur && sameSlots(cur.slots, d.slots) && cur.value.flags === d.flags) {
        report.unchanged++;
        continue;
      }
      if (!cur && svcCount >= svcCap) {
        report.errors.push(mapFullError(this.svc.raw, 1, svcCap - svcCount, `service ${d.label}`));
        continue;
      }
      if (this.slotEntries + d.slots.length > slotCap) {
        report.errors.push(
          mapFullError(this.slotsMap.raw, d.slots.length, slotCap - this.slotEntries, `service ${d.label} (${d.slots.length} backend slots)`),
        );
        continue;
      }
      const svcId = cur ? cur.value.svcId : this.allocId();
      const gen = cur ? (cur.value.gen + 1) >>> 0 : 1;
      try {
        this.writeSlots(svcId, gen, d.slots);
      } catch (e) {
        if (!cur) this.usedIds.delete(svcId);
        report.errors.push(kernelError(e, this.slotsMap.raw.name, this.slotsMap.raw.maxEntries, `service ${d.label}`));
        continue;
      }
      this.slotEntries += d.slots.length;
      report.slotsWritten += d.slots.length;
      if (!cur) svcCount++;
      switched.push({ k, d, value: { svcId, gen, slotCount: d.slots.length, flags: d.flags, key: d.key }, old: cur });
    }

    // 3. Switch each service to its new generation in one update.
    for (const s of switched) {
      try {
        // In place under the value's spin lock: readers copy it under the same lock.
        this.svc.set(s.d.key, s.value, bpf.consts.BPF_ANY | bpf.consts.BPF_F_LOCK);
      } catch (e) {
        this.slotEntries -= this.safeDeleteSlots(s.value.svcId, s.value.gen, s.value.slotCount, report);
        report.slotsWritten -= s.value.slotCount;
        if (!s.old) {
          this.usedIds.delete(s.value.svcId);
          svcCount--;
        }
        report.errors.push(kernelError(e, this.svc.raw.name, this.svc.raw.maxEntries, `service ${s.d.label}`));
        continue;
      }
      if (s.old) {
        report.updated++;
        retired.push({ svcId: s.old.value.svcId, gen: s.old.value.gen, count: s.old.value.slotCount });
      } else {
        report.added++;
      }
      this.current.set(s.k, { key: s.d.key, value: s.value, slots: s.d.slots });
    }

    // 4. Wait out readers of the old entries, then drop the old slots.
    if (retired.length) {
      try {
        this.dp.rcuSync();
        for (const r of retired) {
          const n = this.safeDeleteSlots(r.svcId, r.gen, r.count, report);
          this.slotEntries -= n;
          report.slotsDeleted += n;
        }
      } catch (e) {
        // Without the grace period the old slots must stay (a reader may still use them); they
        // are unreferenced and adopt() collects them on the next start.
        report.errors.push(new DatapathError('SM_KERNEL', `RCU wait failed; old backend slots kept: ${(e as Error).message}`, { cause: e }));
      }
    }
    for (const id of freedIds) this.usedIds.delete(id);

    // 5. Local meshed pods (sockops consults these for same-node redirection).
    for (const [ip, v] of desired.localEps) {
      const cur = this.currentEps.get(ip);
      if (cur && cur.identity === v.identity && cur.flags === v.flags) continue;
      try {
        this.eps.set({ ip }, v);
        this.currentEps.set(ip, v);
        report.localEpsAdded++;
      } catch (e) {
        report.errors.push(kernelError(e, this.eps.raw.name, this.eps.raw.maxEntries, `local pod ${ip}`));
      }
    }
    for (const ip of [...this.currentEps.keys()]) {
      if (desired.localEps.has(ip)) continue;
      try {
        this.eps.delete({ ip });
      } catch (e) {
        report.errors.push(kernelError(e, this.eps.raw.name, this.eps.raw.maxEntries, `removing local pod ${ip}`));
        continue;
      }
      this.currentEps.delete(ip);
      report.localEpsRemoved++;
    }
    // 6. Which namespace owns each local address (same-node redirection), and each local pod
    // namespace's own table of unconnected-UDP translations.
    this.syncTable(
      this.localNs,
      this.currentLocalNs as Map<string | bigint, { id: bigint }>,
      new Map([...desired.localNetns].map(([ip, id]) => [ip, { id }])) as Map<string | bigint, { id: bigint }>,
      (k) => ({ ip: k as string }),
      (a, b) => a.id === b.id,
      report,
    );
    this.syncRevnatPods(new Set([...desired.localNetns.values(), ...desired.netnsIdentities.keys()]), report);
    return report;
  }

  /** One LRU per local pod namespace (sm_revnat_pods): created when the pod appears, dropped with it. */
  private syncRevnatPods(want: Set<bigint>, report: ApplyReport): void {
    const outer = this.dp.maps.sm_revnat_pods;
    const key = (c: bigint) => {
      const b = Buffer.alloc(8);
      b.writeBigUInt64LE(c);
      return b;
    };
    for (const c of want) {
      if (this.currentRevnatPods.has(c)) continue;
      let inner = -1;
      try {
        inner = bpf.mapCreate(bpf.consts.BPF_MAP_TYPE_LRU_HASH, revnatKey.size, revnatValue.size, REVNAT_POD_ENTRIES, 'sm_revnat_pod');
        const v = Buffer.alloc(4);
        v.writeUInt32LE(inner);
        bpf.mapUpdate(outer.fd, key(c), v, bpf.consts.BPF_ANY);
        this.currentRevnatPods.add(c);
      } catch (e) {
        report.errors.push(kernelError(e, outer.name, outer.maxEntries, `revnat table of netns ${c}`));
      } finally {
        if (inner >= 0) bpf.closeFd(inner); // the outer map holds it now
      }
    }
    for (const c of [...this.currentRevnatPods]) {
      if (want.has(c)) continue;
      try {
        bpf.mapDelete(outer.fd, key(c));
        this.currentRevnatPods.delete(c);
      } catch (e) {
        report.errors.push(kernelError(e, outer.name, outer.maxEntries, `removing the revnat table of netns ${c}`));
      }
    }
  }

  /** A small keyed table: write what differs, delete what is gone. */
  private syncTable<K, V>(
    map: TypedMap<K, V>,
    current: Map<string | bigint, V>,
    desired: Map<string | bigint, V>,
    keyOf: (k: string | bigint) => K,
    eq: (a: V, b: V) => boolean,
    report: ApplyReport,
  ): number {
    let n = 0;
    for (const [k, v] of desired) {
      const cur = current.get(k);
      if (cur !== undefined && eq(cur, v)) continue;
      try {
        map.set(keyOf(k), v);
        current.set(k, v);
        n++;
      } catch (e) {
        report.errors.push(kernelError(e, map.raw.name, map.raw.maxEntries, `entry ${String(k)}`));
      }
    }
    for (const k of [...current.keys()]) {
      if (desired.has(k)) continue;
      try {
        map.delete(keyOf(k));
        current.delete(k);
        n++;
      } catch (e) {
        report.errors.push(kernelError(e, map.raw.name, map.raw.maxEntries, `removing ${String(k)}`));
      }
    }
    return n;
  }

  /**
   * Policy tables and identity entries are separate maps, so no single write switches both. A new
   * identity entry (a pod that starts) is written after the tables that name it; when an existing
   * entry changes identity (an IP given to a pod of another identity) a connect could be judged with
   * the new identity by the old tables, or the old identity by the new ones, whichever is looser.
   * So such a change goes in three steps: every destination first switches to a transition set (the
   * new rows, where each identity that is being replaced is judged by both the old and the new
   * tables: allowed only if both allow); then the identity entries change; then the new sets. Each
   * connect is judged by the old configuration, the new one, or more strictly than both.
   */
  private applyPolicyAndIdentities(desired: DesiredState, report: ApplyReport): void {
    const replaced = this.replacedIdentities(desired);
    if (!replaced.size) {
      this.applyPolicy(desired.policy, report);
      this.hooks.betweenSteps?.('tables');
      this.applyIdentities(desired, report);
      return;
    }
    const errors = report.errors.length;
    this.applyPolicy(this.transitionPolicy(desired.policy, replaced), report);
    if (report.errors.length > errors) return; // the old tables and identities stay; retried
    try {
      this.dp.rcuSync(); // no connect still judged by the old tables
    } catch (e) {
      report.errors.push(new DatapathError('SM_KERNEL', `RCU wait failed; identities not switched: ${(e as Error).message}`, { cause: e }));
      return;
    }
    this.hooks.betweenSteps?.('tables');
    this.applyIdentities(desired, report);
    this.hooks.betweenSteps?.('identities');
    this.applyPolicy(desired.policy, report);
  }

  /** Identity numbers of entries (IP, cgroup, netns) that the desired state gives another identity. */
  private replacedIdentities(desired: DesiredState): Set<number> {
    const out = new Set<number>();
    const scan = <K>(current: Map<K, LocalEp>, want: Map<K, LocalEp>) => {
      for (const [k, v] of current) {
        const w = want.get(k);
        if (w && w.identity !== v.identity) out.add(v.identity);
      }
    };
    scan(this.currentIpIds, desired.ipIdentities);
    scan(this.currentCgIds, desired.cgroupIdentities);
    scan(this.currentNsIds, desired.netnsIdentities);
    return out;
  }

  /** The new tables, with each identity in `replaced` judged by the old and the new rows at once. */
  private transitionPolicy(next: CompiledPolicy, replaced: Set<number>): CompiledPolicy {
    const rowsOf = (entries: Iterable<{ key: PolicyKey; value: PolicyValue }>) => {
      const bySet = new Map<number, SetRows>();
      for (const e of entries) {
        const set = bySet.get(e.key.set) ?? { rows: new Map(), flags: 0 };
        set.rows.set(`${e.key.identity}|${e.key.port}`, { identity: e.key.identity, port: e.key.port, value: e.value });
        bySet.set(e.key.set, set);
      }
      return bySet;
    };
    const oldRows = rowsOf(this.currentPol.values());
    const newRows = rowsOf(next.entries.values());
    const out: CompiledPolicy = { dsts: new Map(), entries: new Map(), rules: next.rules, warnings: [] };
    const made = new Map<string, number>(); // `${old set}|${new set}` -> transition set id
    const used = new Set<number>([...oldRows.keys(), ...newRows.keys()]);
    for (const ip of new Set([...this.currentPolDst.keys(), ...next.dsts.keys()])) {
      const o = this.currentPolDst.get(ip);
      const n = next.dsts.get(ip);
      const pair = `${o?.set ?? 0}|${n?.set ?? 0}`;
      let id = made.get(pair);
      if (id === undefined) {
        id = 1;
        while (used.has(id)) id = (id + 1) >>> 0 || 1;
        used.add(id);
        made.set(pair, id);
        const or = o ? oldRows.get(o.set) : undefined;
        const nr = n ? newRows.get(n.set) : undefined;
        // Start from the new rows (or the old ones for a destination that loses its policies).
        const rows = new Map(nr?.rows ?? or?.rows ?? [['0|0', { identity: 0, port: 0, value: { verdict: VERDICT_ALLOW, rule: 0 } }]]);
        // Ports with HTTP rules in either stay closed to all but the proxy.
        for (const r of or?.rows.values() ?? []) if (r.identity === IDENTITY_L7_PORTS) rows.set(`${r.identity}|${r.port}`, r);
        const ports = new Set<number>([0]);
        for (const r of [...(or?.rows.values() ?? []), ...(nr?.rows.values() ?? [])]) ports.add(r.port);
        for (const x of replaced) {
          for (const port of ports) {
            const a = lookupRows(or, x, port);
            const b = lookupRows(nr, x, port);
            const v = a.verdict !== VERDICT_ALLOW ? a : b;
            rows.set(`${x}|${port}`, { identity: x, port, value: v });
          }
        }
        for (const r of rows.values()) {
          const key: PolicyKey = { set: id, identity: r.identity, port: r.port };
          out.entries.set(policyEntryKey(key), { key, value: r.value });
        }
      }
      out.dsts.set(ip, { set: id, ...((o?.flags ?? 0) | (n?.flags ?? 0) ? { flags: (o?.flags ?? 0) | (n?.flags ?? 0) } : {}) });
    }
    return out;
  }

  private applyIdentities(desired: DesiredState, report: ApplyReport): void {
    const eq = (a: LocalEp, b: LocalEp) => a.identity === b.identity && a.flags === b.flags;
    report.identitiesChanged += this.syncTable(
      this.ipIds,
      this.currentIpIds as Map<string | bigint, LocalEp>,
      desired.ipIdentities as Map<string | bigint, LocalEp>,
      (k) => ({ ip: k as string }),
      eq,
      report,
    );
    report.identitiesChanged += this.syncTable(
      this.cgIds,
      this.currentCgIds as Map<string | bigint, LocalEp>,
      desired.cgroupIdentities as Map<string | bigint, LocalEp>,
      (k) => ({ id: k as bigint }),
      eq,
      report,
    );
    report.identitiesChanged += this.syncTable(
      this.nsIds,
      this.currentNsIds as Map<string | bigint, LocalEp>,
      desired.netnsIdentities as Map<string | bigint, LocalEp>,
      (k) => ({ id: k as bigint }),
      eq,
      report,
    );
  }

  /**
   * Make-before-break, as for services: new verdict rows first, then destinations switch to their
   * (new) policy set, then an RCU grace period, then rows nobody points at are deleted.
   */
  private applyPolicy(p: CompiledPolicy, report: ApplyReport): void {
    this.avoidRewrites(p);
    // Rows of sets no destination points at and this table does not use (left by an attempt that
    // did not fit): never read by a program, so they go first, to make room.
    const referenced = new Set([...this.currentPolDst.values()].map((d) => d.set));
    const garbage = [...this.currentPol.entries()].filter(([k, e]) => !referenced.has(e.key.set) && !p.entries.has(k));
    if (garbage.length) {
      try {
        this.pol.deleteMany(garbage.map(([, e]) => e.key));
        for (const [k] of garbage) this.currentPol.delete(k);
        report.policyEntriesDeleted += garbage.length;
      } catch (e) {
        report.errors.push(kernelError(e, this.pol.raw.name, this.pol.raw.maxEntries, 'deleting unused L4 policy rows'));
      }
    }
    // A set's id is the hash of its content (policy.ts): a row of a set in force is never
    // rewritten, a changed table is new rows beside the old ones.
    const written: string[] = [];
    for (const [k, e] of p.entries) {
      const cur = this.currentPol.get(k);
      if (cur && cur.value.verdict === e.value.verdict && cur.value.rule === e.value.rule) continue;
      try {
        this.pol.set(e.key, e.value);
        this.currentPol.set(k, e);
        written.push(k);
        report.policyEntriesWritten++;
      } catch (e2) {
        report.errors.push(kernelError(e2, this.pol.raw.name, this.pol.raw.maxEntries, 'L4 policy table'));
        // Do not point destinations at an incomplete table: the previous one stays in force, and
        // what was written of this one (referenced by nobody) is taken back.
        const undo = written.filter((w) => !referenced.has(this.currentPol.get(w)!.key.set));
        try {
          this.pol.deleteMany(undo.map((w) => this.currentPol.get(w)!.key));
          for (const w of undo) this.currentPol.delete(w);
        } catch {
          /* left as garbage: collected at the next apply */
        }
        return;
      }
    }
    report.policyDstsChanged += this.syncTable(
      this.polDst,
      this.currentPolDst as Map<string | bigint, PolicyDst>,
      p.dsts as Map<string | bigint, PolicyDst>,
      (k) => ({ ip: k as string }),
      (a, b) => a.set === b.set && (a.flags ?? 0) === (b.flags ?? 0),
      report,
    );
    const stale = [...this.currentPol.keys()].filter((k) => !p.entries.has(k));
    if (!stale.length) return;
    try {
      this.dp.rcuSync();
      this.pol.deleteMany(stale.map((k) => this.currentPol.get(k)!.key));
      for (const k of stale) this.currentPol.delete(k);
      report.policyEntriesDeleted += stale.length;
    } catch (e) {
      report.errors.push(kernelError(e, this.pol.raw.name, this.pol.raw.maxEntries, 'deleting stale L4 policy rows'));
    }
  }

  /**
   * A set id is the hash of the set's content, so an id already in the kernel normally holds the
   * same rows. Should a new content hash to an id the kernel holds with other rows, it moves to a
   * free id: rows of a set in force are never rewritten in place.
   */
  private avoidRewrites(p: CompiledPolicy): void {
    const group = (entries: Iterable<{ key: PolicyKey; value: PolicyValue }>) => {
      const out = new Map<number, Map<string, string>>();
      for (const e of entries) {
        const m = out.get(e.key.set) ?? new Map<string, string>();
        m.set(`${e.key.identity}|${e.key.port}`, `${e.value.verdict}|${e.value.rule}`);
        out.set(e.key.set, m);
      }
      return out;
    };
    const current = group(this.currentPol.values());
    const desired = group(p.entries.values());
    const same = (a: Map<string, string>, b: Map<string, string>) => a.size === b.size && [...a].every(([k, v]) => b.get(k) === v);
    for (const [set, rows] of desired) {
      const cur = current.get(set);
      if (!cur || same(cur, rows)) continue;
      let id = (set + 1) >>> 0 || 1;
      while (current.has(id) || desired.has(id)) id = (id + 1) >>> 0 || 1;
      desired.set(id, rows);
      for (const [k, e] of [...p.entries]) {
        if (e.key.set !== set) continue;
        p.entries.delete(k);
        const key = { ...e.key, set: id };
        p.entries.set(policyEntryKey(key), { key, value: e.value });
      }
      for (const [ip, d] of p.dsts) if (d.set === set) p.dsts.set(ip, { ...d, set: id });
    }
  }

  private safeDeleteSlots(svcId: number, gen: number, count: number, report: ApplyReport): number {
    try {
      return this.deleteSlots(svcId, gen, count);
    } catch (e) {
      report.errors.push(kernelError(e, this.slotsMap.raw.name, this.slotsMap.raw.maxEntries, `deleting slots of service id ${svcId}`));
      return 0;
    }
  }
}

function kernelError(e: unknown, map: string, capacity: number, what: string): DatapathError {
  const code = (e as { code?: string }).code;
  if (code === 'E2BIG' || code === 'ENOSPC') {
    return new DatapathError('SM_MAP_FULL', `map ${map} is full (capacity ${capacity}): ${what} was not applied`, {
      cause: e,
      details: { map, capacity },
    });
  }
  return new DatapathError('SM_KERNEL', `${what}: kernel update of ${map} failed: ${(e as Error).message}`, { cause: e });
}
