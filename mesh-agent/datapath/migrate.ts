// Upgrades across map changes. A new build may size or lay out a map differently from the one
// pinned by the datapath already running (an operator doubled a capacity, a struct grew). libbpf
// cannot reuse such a pin, so before loading, every incompatible pin is moved aside to
// <bpffs>/retired/, the new build creates and pins its own map, and after the programs are
// swapped (bpf_link_update, so no moment without a program) the old entries are copied over:
//   - same key and value layout (a capacity change): every entry is copied (hash, LRU, arrays,
//     per-CPU arrays);
//   - sm_sockhash: sockets cannot be copied from user space. The old sockhash stays pinned, with
//     its own sk_msg program, for as long as it holds sockets: pairs made before the upgrade keep
//     being redirected by the program they were added with; new pairs go into the new map. It is
//     unpinned (and freed with its program) once its last socket has closed (collectRetired);
//   - socket-local storage and maps of maps: not copied (storage cannot be walked from user space;
//     the agent refills its per-pod tables at its first apply). Old programs still attached to
//     old sockets keep their own references;
//   - any other layout change: the new map starts empty; tables the agent writes are written again
//     at its first apply, runtime tables (flows, translations of unconnected UDP) start afresh.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as bpf from '../../native';
import type { MapName } from '../../abi/pins';
import * as pins from '../../abi/pins';

export interface RetiredMap {
  name: MapName;
  /** Where the old map is pinned now. */
  pin: string;
  old: bpf.MapInfo;
  /** What changed, for the log. */
  why: string;
}

export interface MigrationResult {
  name: MapName;
  why: string;
  /** 'copied': entries moved into the new map; 'kept': the old map stays pinned until empty; 'dropped': not carried over. */
  outcome: 'copied' | 'kept' | 'dropped';
  entries: number;
  error?: string;
}

export function retiredDir(bpffsDir: string): string {
  return path.join(bpffsDir, 'retired');
}

const COPYABLE = new Set<number>([
  bpf.consts.BPF_MAP_TYPE_HASH,
  bpf.consts.BPF_MAP_TYPE_LRU_HASH,
  bpf.consts.BPF_MAP_TYPE_ARRAY,
  bpf.consts.BPF_MAP_TYPE_PERCPU_ARRAY,
]);

/** Maps whose pin describes the running datapath only through what is in them (never copied). */
const NOT_COPIED = new Set<MapName>(['sm_rcu_sync']);

function difference(old: bpf.MapInfo, want: bpf.MapDesc): string | null {
  const d: string[] = [];
  if (old.type !== want.type) d.push(`type ${old.type} -> ${want.type}`);
  if (old.keySize !== want.keySize) d.push(`key size ${old.keySize} -> ${want.keySize}`);
  if (old.valueSize !== want.valueSize) d.push(`value size ${old.valueSize} -> ${want.valueSize}`);
  if (old.maxEntries !== want.maxEntries) d.push(`capacity ${old.maxEntries} -> ${want.maxEntries}`);
  return d.length ? d.join(', ') : null;
}

/**
 * Move every pinned map that the opened (not yet loaded) objects cannot reuse to retired/, so that
 * loading creates it anew. Map flags are not compared here: a flags change still fails the load
 * with SM_MAP_MISMATCH.
 */
export function retireIncompatible(bpffsDir: string, wanted: Map<string, bpf.MapDesc>): RetiredMap[] {
  const out: RetiredMap[] = [];
  for (const name of pins.MAP_NAMES) {
    const want = wanted.get(name);
    const pin = pins.mapPin(bpffsDir, name);
    if (!want || !fs.existsSync(pin)) continue;
    const fd = bpf.objGet(pin);
    let old: bpf.MapInfo;
    try {
      old = bpf.mapInfo(fd);
    } finally {
      bpf.closeFd(fd);
    }
    const why = difference(old, want);
    if (!why) continue;
    fs.mkdirSync(retiredDir(bpffsDir), { recursive: true });
    // bpffs refuses names with a dot (EPERM): <map>-<old map id>.
    const to = path.join(retiredDir(bpffsDir), `${name}-${old.id}`);
    fs.renameSync(pin, to);
    out.push({ name, pin: to, old, why });
  }
  return out;
}

/** Put retired maps back where they were (the load failed: the old datapath stays as it was). */
export function restoreRetired(bpffsDir: string, retired: RetiredMap[]): void {
  for (const r of retired) {
    const pin = pins.mapPin(bpffsDir, r.name);
    try {
      if (fs.existsSync(pin)) fs.unlinkSync(pin);
      fs.renameSync(r.pin, pin);
    } catch {
      // best effort: the retired pin stays where it is and is reported by `sockmesh status`
    }
  }
}

function copyEntries(from: number, to: number, info: bpf.MapInfo, newInfo: bpf.MapInfo): number {
  let valueSize = info.valueSize;
  if (info.type === bpf.consts.BPF_MAP_TYPE_PERCPU_ARRAY) valueSize = Math.ceil(info.valueSize / 8) * 8 * bpf.numPossibleCpus();
  if (info.type === bpf.consts.BPF_MAP_TYPE_ARRAY || info.type === bpf.consts.BPF_MAP_TYPE_PERCPU_ARRAY) {
    const n = Math.min(info.maxEntries, newInfo.maxEntries);
    for (let i = 0; i < n; i++) {
      const k = Buffer.alloc(4);
      k.writeUInt32LE(i);
      const v = bpf.mapLookup(from, k, valueSize);
      if (v) bpf.mapUpdate(to, k, v, bpf.consts.BPF_ANY);
    }
    return n;
  }
  const { keys, values } = bpf.mapLookupBatch(from, info.keySize, valueSize, 4096);
  if (keys.length) bpf.mapUpdateBatch(to, keys, values, bpf.consts.BPF_ANY);
  return keys.length;
}

/**
 * After the new maps are pinned and the programs swapped: carry each retired map over as the
 * header says, and unpin what is not kept.
 */
export function migrateRetired(bpffsDir: string, retired: RetiredMap[]): MigrationResult[] {
  const out: MigrationResult[] = [];
  for (const r of retired) {
    const res: MigrationResult = { name: r.name, why: r.why, outcome: 'dropped', entries: 0 };
    out.push(res);
    if (r.old.type === bpf.consts.BPF_MAP_TYPE_SOCKHASH) {
      res.outcome = 'kept';
      res.entries = sockhashCount(r.pin);
      continue;
    }
    const newPin = pins.mapPin(bpffsDir, r.name);
    const sameLayout = (n: bpf.MapInfo) => n.type === r.old.type && n.keySize === r.old.keySize && n.valueSize === r.old.valueSize;
    if (COPYABLE.has(r.old.type) && !NOT_COPIED.has(r.name) && fs.existsSync(newPin)) {
      const from = bpf.objGet(r.pin);
      const to = bpf.objGet(newPin);
      try {
        const newInfo = bpf.mapInfo(to);
        if (sameLayout(newInfo)) {
          res.entries = copyEntries(from, to, r.old, newInfo);
          res.outcome = 'copied';
        }
      } catch (e) {
        res.error = (e as Error).message; // e.g. a smaller hash that cannot hold every entry
      } finally {
        bpf.closeFd(from);
        bpf.closeFd(to);
      }
    }
    fs.unlinkSync(r.pin);
  }
  return out;
}

function sockhashCount(pin: string): number {
  const fd = bpf.objGet(pin);
  try {
    const info = bpf.mapInfo(fd);
    let n = 0;
    for (let k = bpf.mapGetNextKey(fd, null, info.keySize); k; k = bpf.mapGetNextKey(fd, k, info.keySize)) n++;
    return n;
  } finally {
    bpf.closeFd(fd);
  }
}

/**
 * Unpin retired sockhashes that no longer hold a socket (their sk_msg program goes with them).
 * Returns the pins removed; the others are still in use.
 */
export function collectRetired(bpffsDir: string): { removed: string[]; inUse: Array<{ pin: string; sockets: number }> } {
  const dir = retiredDir(bpffsDir);
  const removed: string[] = [];
  const inUse: Array<{ pin: string; sockets: number }> = [];
  if (!fs.existsSync(dir)) return { removed, inUse };
  for (const name of fs.readdirSync(dir).sort()) {
    const pin = path.join(dir, name);
    let n: number;
    try {
      n = sockhashCount(pin);
    } catch {
      continue;
    }
    if (n === 0) {
      fs.unlinkSync(pin);
      removed.push(pin);
    } else {
      inUse.push({ pin, sockets: n });
    }
  }
  return { removed, inUse };
}
