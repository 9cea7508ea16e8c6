// Log-linear latency histogram, the TypeScript twin of the one in bench/native/pingpong.c (keep the
// two in step): merging the native tool's `hist.buckets` here gives the same percentiles it printed.
//
// Values are integer ns. v < 2048: one bucket per value (exact). For k >= 11, [2^k, 2^(k+1)) is
// split into 1024 buckets of width 2^(k-10) (< 1/1024 of the bucket's lower bound).
// percentile(p): rank = max(1, ceil(p/100 * count)) (podtool's rank rule on sorted samples); the
// value of the bucket holding the rank-th smallest value: its lower bound when exact, else
// lower + width/2 (the midpoint of [lower, lower+width), an integer), i.e. within 1/2048 of the
// true sample. So for one native run, `Hdr.fromBuckets(hist.buckets).percentile(50) / 1000` equals
// its `p50_us`, and for several runs merged with add() it equals what one run recording every
// sample would have printed.

const EXACT = 2048;
const SUB = 1024;
const TWO32 = 2 ** 32;

/** Index of the bucket holding the integer value v >= 0 (v < 2^53). */
export function bucketIndex(v: number): number {
  if (v < EXACT) return v;
  const k = v < TWO32 ? 31 - Math.clz32(v) : 63 - Math.clz32(Math.floor(v / TWO32)); // 2^k <= v < 2^(k+1)
  return EXACT + (k - 11) * SUB + (Math.floor(v / 2 ** (k - 10)) - SUB);
}

/** Lower bound (ns) and width of bucket i. */
export function bucketBounds(i: number): { lower: number; width: number } {
  if (i < EXACT) return { lower: i, width: 1 };
  const k = 11 + Math.floor((i - EXACT) / SUB);
  const width = 2 ** (k - 10);
  return { lower: (SUB + ((i - EXACT) % SUB)) * width, width };
}

/** The value percentile() reports for bucket i (see the header). */
export function bucketValue(i: number): number {
  const { lower, width } = bucketBounds(i);
  return width === 1 ? lower : lower + width / 2;
}

export class Hdr {
  /** counts[i] = samples in bucket i; grown on demand (latencies stay in the first ~20k). */
  private counts: number[] = [];
  count = 0;
  /** Exact when every sample went through record() or fromBuckets() got them; NaN when empty. */
  min = NaN;
  max = NaN;
  private sum = 0;

  record(ns: number, times = 1): void {
    if (!Number.isFinite(ns)) throw new RangeError(`Hdr.record: not a finite number: ${ns}`);
    const v = Math.max(0, Math.floor(ns));
    this.bump(bucketIndex(v), times);
    if (!(v >= this.min)) this.min = v;
    if (!(v <= this.max)) this.max = v;
    this.sum += v * times;
  }

  private bump(i: number, n: number): void {
    while (this.counts.length <= i) this.counts.push(0);
    this.counts[i] += n;
    this.count += n;
  }

  /** Merge `other` into this one (counts add up; min/max/mean follow). */
  add(other: Hdr): this {
    other.counts.forEach((n, i) => n && this.bump(i, n));
    if (other.count) {
      if (!(other.min >= this.min)) this.min = other.min;
      if (!(other.max <= this.max)) this.max = other.max;
    }
    this.sum += other.sum;
    return this;
  }

  /**
   * From `[lowerBoundNs, count]` pairs, as the native tool prints them. Pass the tool's exact
   * min/max (`hist.min`, `hist.max`) if known; otherwise they are the lowest bucket's lower bound
   * and the highest bucket's last value. The mean is then the count-weighted bucket value.
   */
  static fromBuckets(buckets: Array<[number, number]>, exact?: { min?: number; max?: number }): Hdr {
    const h = new Hdr();
    let lo = Infinity;
    let hi = -Infinity;
    for (const [lower, n] of buckets) {
      if (!Number.isInteger(lower) || lower < 0 || !Number.isInteger(n) || n < 0) {
        throw new RangeError(`Hdr.fromBuckets: bad bucket [${lower}, ${n}]`);
      }
      const i = bucketIndex(lower);
      const b = bucketBounds(i);
      if (b.lower !== lower) throw new RangeError(`Hdr.fromBuckets: ${lower} is not a bucket boundary`);
      if (!n) continue;
      h.bump(i, n);
      h.sum += bucketValue(i) * n;
      lo = Math.min(lo, lower);
      hi = Math.max(hi, lower + b.width - 1);
    }
    if (h.count) {
      h.min = exact?.min ?? lo;
      h.max = exact?.max ?? hi;
    }
    return h;
  }

  /** Non-empty buckets as `[lowerBoundNs, count]`, ascending (the native tool's format). */
  toBuckets(): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    this.counts.forEach((n, i) => n && out.push([bucketBounds(i).lower, n]));
    return out;
  }

  /** p in [0, 100] -> ns (see the header for the rank and value rules). NaN when empty. */
  percentile(p: number): number {
    if (!this.count) return NaN;
    const rank = Math.min(this.count, Math.max(1, Math.ceil((p / 100) * this.count)));
    let cum = 0;
    for (let i = 0; i < this.counts.length; i++) {
      cum += this.counts[i];
      if (cum >= rank) return bucketValue(i);
    }
    return bucketValue(this.counts.length - 1);
  }

  /** Mean in ns: exact for recorded samples, bucket values for fromBuckets(). NaN when empty. */
  mean(): number {
    return this.count ? this.sum / this.count : NaN;
  }
}
