// Weighted backend tables. The kernel picks a slot uniformly at random; each backend fills a
// number of slots proportional to its weight, so the pick is weighted without any arithmetic on
// the connect path.

export interface WeightedBackend {
  ip: string;
  port: number;
  weight: number;
}

/** Above this many slots, weights are apportioned instead of expanded exactly. */
export const DEFAULT_MAX_SLOTS = 256;

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/**
 * Build a service's slot table. Deterministic (the same backends in any order give the same
 * table), so an unchanged service produces an unchanged table and no kernel writes.
 *
 * Weights reduced by their GCD are expanded exactly when they sum to at most
 * max(maxSlots, 4 x backends); otherwise they are apportioned over that many slots by largest
 * remainder, every backend keeping at least one slot. A backend's share is then off by less than
 * one slot, i.e. by at most 1/slots of the total.
 */
export function buildSlots(backends: WeightedBackend[], maxSlots = DEFAULT_MAX_SLOTS): Array<{ ip: string; port: number }> {
  // Merge duplicates (one ip:port listed twice counts with the sum of its weights).
  const merged = new Map<string, WeightedBackend>();
  for (const b of backends) {
    if (b.weight <= 0) continue;
    const k = `${b.ip}|${b.port}`;
    const prev = merged.get(k);
    merged.set(k, prev ? { ...prev, weight: prev.weight + b.weight } : { ...b });
  }
  const list = [...merged.values()].sort((a, b) => (a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : a.port - b.port));
  if (!list.length) return [];
  const g = list.reduce((acc, b) => gcd(acc, b.weight), 0);
  const w = list.map((b) => b.weight / g);
  const total = w.reduce((a, b) => a + b, 0);
  const size = Math.max(maxSlots, 4 * list.length);
  let counts: number[];
  if (total <= size) {
    counts = w;
  } else {
    const exact = w.map((x) => (x * size) / total);
    counts = exact.map((x) => Math.max(1, Math.floor(x)));
    let sum = counts.reduce((a, b) => a + b, 0);
    const byRemainder = exact.map((x, i) => ({ i, r: x - Math.floor(x) })).sort((a, b) => b.r - a.r || a.i - b.i);
    for (let j = 0; sum < size; j = (j + 1) % byRemainder.length, sum++) counts[byRemainder[j].i]++;
    // The minimum of one slot may overshoot: take back from the largest holders.
    while (sum > size) {
      let max = 0;
      for (let i = 1; i < counts.length; i++) if (counts[i] > counts[max]) max = i;
      counts[max]--;
      sum--;
    }
  }
  const out: Array<{ ip: string; port: number }> = [];
  list.forEach((b, i) => {
    for (let n = 0; n < counts[i]; n++) out.push({ ip: b.ip, port: b.port });
  });
  return out;
}
