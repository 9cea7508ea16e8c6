// Identity numbers: which number the kernel carries for each SPIFFE id on this node.
//
// A number is allocated once per name and kept in the pinned map sm_identities, so it survives
// agent restarts and never moves when other names come or go (a number derived per model, by
// hashing and probing, would renumber a name when a colliding one appears or disappears). Two
// names never share a number: a collision of the hash a new name starts from is probed past.
// Numbers are node-local (nothing carries them between nodes); starting from the name's hash just
// makes them usually equal on every node, which helps reading dumps.
//
// A number is given back only when the map is full, and only if nothing in the kernel still refers
// to it (a policy row, an identity entry): a number is never reused while a table may judge by it.
import { createHash } from 'node:crypto';
import * as bpf from '../../native';
import { DatapathError } from '../../core/errors';
import { fnv1a31 } from '../../core/identity';
import { identityKey, identityName } from '../../abi/codecs';
import type { Datapath } from './datapath';
import { TypedMap } from './maps';

/** Identity numbers are 31-bit and never 0 (unknown); the reserved ones above are never reached. */
const MAX_IDENTITY = 0x7fffffff;

function nameHash(spiffe: string): Buffer {
  return createHash('sha256').update(spiffe).digest().subarray(0, 16);
}

export interface Assignment {
  /** SPIFFE id -> number, for every name that got one. */
  ids: Map<string, number>;
  /** Names that got no number (the map is full of numbers still in use): judged as unresolved. */
  unassigned: string[];
  errors: DatapathError[];
}

export class IdentityAllocator {
  private readonly map: TypedMap<{ identity: number }, { sha256: Buffer }>;
  /** hex(sha256[0:16]) -> number */
  private readonly byName = new Map<string, number>();
  private readonly taken = new Set<number>();

  constructor(dp: Datapath) {
    this.map = new TypedMap(dp.maps.sm_identities, identityKey, identityName);
    for (const [k, v] of this.map.entries()) {
      this.byName.set(v.sha256.toString('hex'), k.identity);
      this.taken.add(k.identity);
    }
  }

  /** How many numbers are held (in the pinned map). */
  get size(): number {
    return this.taken.size;
  }

  /**
   * Numbers for `names`: the ones they hold, new ones for new names. `inUse` names the numbers the
   * kernel still refers to; only others are given back, and only when the map is full.
   */
  assign(names: Iterable<string>, inUse: () => Set<number>): Assignment {
    const out: Assignment = { ids: new Map(), unassigned: [], errors: [] };
    const wanted = [...new Set(names)].sort();
    const wantedHashes = new Set(wanted.map((n) => nameHash(n).toString('hex')));
    let collected = false;
    for (const name of wanted) {
      const h = nameHash(name);
      const hex = h.toString('hex');
      const have = this.byName.get(hex);
      if (have !== undefined) {
        out.ids.set(name, have);
        continue;
      }
      for (;;) {
        if (this.taken.size >= this.map.raw.maxEntries && !collected) {
          this.collect(wantedHashes, inUse());
          collected = true;
        }
        const n = this.probe(name);
        try {
          this.map.set({ identity: n }, { sha256: h }, bpf.consts.BPF_NOEXIST);
          this.byName.set(hex, n);
          this.taken.add(n);
          out.ids.set(name, n);
        } catch (e) {
          const code = (e as { code?: string }).code;
          if ((code === 'E2BIG' || code === 'ENOSPC') && !collected) {
            this.collect(wantedHashes, inUse());
            collected = true;
            continue;
          }
          out.unassigned.push(name);
          out.errors.push(
            code === 'E2BIG' || code === 'ENOSPC'
              ? new DatapathError('SM_MAP_FULL', `map sm_identities is full (capacity ${this.map.raw.maxEntries}): ${name} has no identity number and is judged as unresolved (fail closed)`, {
                  cause: e,
                  details: { map: 'sm_identities', capacity: this.map.raw.maxEntries },
                })
              : new DatapathError('SM_KERNEL', `sm_identities: numbering ${name} failed: ${(e as Error).message}; it is judged as unresolved (fail closed)`, { cause: e }),
          );
        }
        break;
      }
    }
    return out;
  }

  /** The first free number from the name's hash on. */
  private probe(name: string): number {
    let n = fnv1a31(name) || 1;
    while (this.taken.has(n)) n = (n % MAX_IDENTITY) + 1;
    return n;
  }

  /** Give back numbers of names not wanted now that nothing in the kernel refers to. */
  private collect(wanted: Set<string>, inUse: Set<number>): void {
    const drop: Array<[string, number]> = [];
    for (const [hex, n] of this.byName) if (!wanted.has(hex) && !inUse.has(n)) drop.push([hex, n]);
    if (!drop.length) return;
    this.map.deleteMany(drop.map(([, identity]) => ({ identity })));
    for (const [hex, n] of drop) {
      this.byName.delete(hex);
      this.taken.delete(n);
    }
  }
}
