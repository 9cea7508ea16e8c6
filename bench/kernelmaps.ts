// Reading the agent's kernel maps from a benchmark process: what a service's backend table holds
// right now (the propagation scenario polls it to see a change land), and how much kernel memory
// each map takes (the memory scenario).
//
// Everything goes through the pinned maps (Datapath.openPinned), never through the agent: the
// point is to observe the kernel, not the agent's opinion of it.
import * as fs from 'node:fs';
import * as bpf from '../native';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { MAP_NAMES } from '../abi/pins';
import { TypedMap } from '../mesh-agent/datapath/maps';
import { Backend, backend as backendCodec, slotKey, SlotKey, SvcKey, svcKey, SvcValue, svcValue } from '../abi/codecs';

/** One map's footprint, as the kernel reports it in /proc/PID/fdinfo of a map fd. */
export interface MapMemory {
  name: string;
  id: number;
  /** e.g. 'HASH', 'LRU_HASH' (BPF_MAP_TYPE_ without the prefix). */
  type: string;
  /** BPF_F_NO_PREALLOC set: elements are allocated on insert, not at creation. */
  noPrealloc: boolean;
  maxEntries: number;
  keySize: number;
  valueSize: number;
  /** Entries now; null where the map cannot be enumerated from user space (socket storage). */
  entries: number | null;
  /** `memlock:` of fdinfo (bpf_map_memory_usage() of the map type). */
  memlockBytes: number;
}

/** `key:\tvalue` lines of /proc/self/fdinfo/FD. */
export function fdinfo(fd: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8').split('\n')) {
    const m = /^([a-z_]+):\s*(.*)$/.exec(line);
    if (m) out[m[1]] = m[2];
  }
  return out;
}

let typeNames: Map<number, string> | undefined;
function mapTypeName(t: number): string {
  if (!typeNames) {
    typeNames = new Map();
    for (const [k, v] of Object.entries(bpf.addonConsts())) {
      if (k.startsWith('BPF_MAP_TYPE_')) typeNames.set(v, k.slice('BPF_MAP_TYPE_'.length));
    }
  }
  return typeNames.get(t) ?? `type ${t}`;
}

/** Entry count by a get_next_key walk (for map types without batch lookup, e.g. SOCKHASH). */
function walkCount(fd: number, keySize: number, limit = 1 << 22): number {
  let n = 0;
  let k: Buffer | null = bpf.mapGetNextKey(fd, null, keySize);
  while (k && n < limit) {
    n++;
    k = bpf.mapGetNextKey(fd, k, keySize);
  }
  return n;
}

/** Footprint of every sockmesh map of the datapath pinned under `bpffs`. */
export function mapMemory(bpffs: string): MapMemory[] {
  const dp = Datapath.openPinned(bpffs);
  try {
    const noPrealloc = bpf.consts.BPF_F_NO_PREALLOC;
    return MAP_NAMES.map((name) => {
      const m = dp.maps[name];
      const info = bpf.mapInfo(m.fd);
      const fi = fdinfo(m.fd);
      const type = mapTypeName(info.type);
      let entries: number | null;
      if (type === 'ARRAY' || type === 'PERCPU_ARRAY' || type === 'ARRAY_OF_MAPS') entries = info.maxEntries;
      else if (type === 'SK_STORAGE') entries = null;
      else if (type === 'HASH' || type === 'LRU_HASH') entries = m.count();
      else entries = walkCount(m.fd, info.keySize);
      return {
        name,
        id: info.id,
        type,
        noPrealloc: (info.flags & noPrealloc) !== 0,
        maxEntries: info.maxEntries,
        keySize: info.keySize,
        valueSize: info.valueSize,
        entries,
        memlockBytes: Number(fi.memlock ?? NaN),
      };
    });
  } finally {
    dp.close();
  }
}

/**
 * Read access to the service tables of a pinned datapath: the backends a connect to a service
 * can pick right now (the current generation's slots, as connect4 sees them).
 */
export class ServiceProbe {
  private readonly dp: Datapath;
  private readonly svc: TypedMap<SvcKey, SvcValue>;
  private readonly slotFd: number;
  private cache: { key: string; svcId: number; gen: number; backends: Backend[] } | undefined;

  constructor(bpffs: string) {
    this.dp = Datapath.openPinned(bpffs);
    this.svc = new TypedMap(this.dp.maps.sm_services, svcKey, svcValue);
    this.slotFd = this.dp.maps.sm_backends.fd;
  }

  /** The service entry (generation, slot count) or null when the kernel has none. */
  entry(key: SvcKey): SvcValue | null {
    return this.svc.get(key);
  }

  /**
   * The service's current backend slots (an address appears once per slot it fills); null when
   * the service has no entry. One lookup while the generation is unchanged, slotCount more when
   * it moved.
   */
  backends(key: SvcKey): Backend[] | null {
    const v = this.svc.get(key);
    if (!v) return null;
    const k = `${key.ip}|${key.port}|${key.proto}`;
    const c = this.cache;
    if (c && c.key === k && c.svcId === v.svcId && c.gen === v.gen) return c.backends;
    const out: Backend[] = [];
    for (let i = 0; i < v.slotCount; i++) {
      const sk: SlotKey = { svcId: v.svcId, gen: v.gen, slot: i };
      const b = bpf.mapLookup(this.slotFd, slotKey.encode(sk), backendCodec.size);
      if (b) out.push(backendCodec.decode(b));
    }
    // A generation whose slots are not all readable is being torn down: do not cache it.
    if (out.length === v.slotCount) this.cache = { key: k, svcId: v.svcId, gen: v.gen, backends: out };
    return out;
  }

  /** Number of service entries (one per VIP, port and protocol). */
  serviceCount(): number {
    return this.dp.maps.sm_services.count();
  }

  close(): void {
    this.dp.close();
  }
}
