// Typed access to the pinned maps. RawMap owns one fd; TypedMap adds the codecs of
// abi/codecs.ts so callers deal in objects, never in byte offsets.
import * as bpf from '../../native';
import { DatapathError } from '../../core/errors';
import { StructCodec } from '../../abi/codecs';

export class RawMap {
  readonly name: string;
  readonly fd: number;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  readonly type: number;

  private constructor(name: string, fd: number) {
    this.name = name;
    this.fd = fd;
    const info = bpf.mapInfo(fd);
    this.keySize = info.keySize;
    this.valueSize = info.valueSize;
    this.maxEntries = info.maxEntries;
    this.type = info.type;
  }

  static open(pinPath: string, name: string): RawMap {
    return new RawMap(name, bpf.objGet(pinPath));
  }

  /**
   * Number of entries (the kernel keeps no cheap count for every map type). A batch dump walks
   * bucket by bucket, so, unlike a get_next_key walk, it cannot restart from the first key when an
   * entry is evicted under it.
   */
  count(): number {
    return bpf.mapLookupBatch(this.fd, this.keySize, this.valueSize, 4096).keys.length;
  }

  close(): void {
    bpf.closeFd(this.fd);
  }
}

/** Thrown before anything is written when a change does not fit (see reconciler). */
export function mapFullError(map: RawMap, needed: number, free: number, what: string): DatapathError {
  return new DatapathError(
    'SM_MAP_FULL',
    `map ${map.name} is full (capacity ${map.maxEntries}): ${what} needs ${needed} entries, ${free} free; ` +
      `nothing of it was written. Raise the capacity (agent setting mapSizes.${map.name}) or shrink the config.`,
    { details: { map: map.name, capacity: map.maxEntries, needed, free } },
  );
}

export class TypedMap<K, V> {
  constructor(
    readonly raw: RawMap,
    readonly key: StructCodec<K>,
    readonly value: StructCodec<V>,
  ) {
    if (raw.keySize !== key.size || raw.valueSize !== value.size) {
      throw new DatapathError(
        'SM_MAP_MISMATCH',
        `map ${raw.name}: kernel key/value sizes ${raw.keySize}/${raw.valueSize}, ` +
          `this build expects ${key.size}/${value.size} (struct ${key.cName}/${value.cName})`,
      );
    }
  }

  get(k: K): V | null {
    const v = bpf.mapLookup(this.raw.fd, this.key.encode(k), this.value.size);
    return v ? this.value.decode(v) : null;
  }

  set(k: K, v: V, flags: number = bpf.consts.BPF_ANY): void {
    bpf.mapUpdate(this.raw.fd, this.key.encode(k), this.value.encode(v), flags);
  }

  delete(k: K): boolean {
    return bpf.mapDelete(this.raw.fd, this.key.encode(k));
  }

  deleteMany(keys: K[]): void {
    if (keys.length) bpf.mapDeleteBatch(this.raw.fd, keys.map((k) => this.key.encode(k)));
  }

  /** The whole map (batched where the kernel supports it). */
  entries(): Array<[K, V]> {
    const { keys, values } = bpf.mapLookupBatch(this.raw.fd, this.key.size, this.value.size, 4096);
    return keys.map((k, i) => [this.key.decode(k), this.value.decode(values[i])]);
  }
}
