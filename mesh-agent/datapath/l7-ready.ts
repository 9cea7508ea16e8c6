// Which destinations the kernel may steer to the node's L7 proxy: those whose HTTP rules the proxy
// has acknowledged (map sm_l7_ready, read by sm_steer_to_proxy in bpf/sock_lb.c). Anything else
// that needs the proxy is refused at connect() (ECONNREFUSED), so no connection reaches a proxy
// that would not know the rules for it.
//
// The rules, in the order the agent meets them:
//   - a table is sent (version V, destinations D(V)): nothing is added yet;
//   - the proxy answers ok to V: the destinations of V that every table since V has held are
//     added (a late answer never enables a destination a later table dropped, even if a still
//     later one brought it back: the proxy may hold the table without it);
//   - a config no longer has a destination: it is removed at once, before any answer;
//   - the control channel drops (the proxy died or restarted): the map is emptied; the proxy that
//     comes back has no table until it answers the one the agent sends it.
// A proxy that refuses a table keeps its previous one in force, and so does the kernel: the
// destinations it had acknowledged stay, the new ones wait.
import { IPPROTO_TCP, l7ReadyValue, svcKey, type SvcKey } from '../../abi/codecs';
import type { L7Policy } from '../../core/model';
import { mustCanonicalIp as canonicalIp } from '../../core/ip';
import type { Datapath } from './datapath';
import { TypedMap } from './maps';

const keyText = (k: { ip: string; port: number }) => `${canonicalIp(k.ip)}|${k.port}`;

function keysOf(dests: readonly L7Policy[]): Map<string, SvcKey> {
  const out = new Map<string, SvcKey>();
  for (const d of dests) {
    if (!d.destination.ip) continue; // the agent sends only ip:port destinations (reconciler.ts)
    const k = { ip: canonicalIp(d.destination.ip), port: d.destination.port, proto: IPPROTO_TCP };
    out.set(keyText(k), k);
  }
  return out;
}

export class L7Readiness {
  private readonly map: TypedMap<SvcKey, { version: number }>;
  /** The destinations of the newest table sent. */
  private newest = new Map<string, SvcKey>();
  private newestVersion?: number;
  /** The version of the table in which each wanted destination last came (back) into the set. */
  private readonly since = new Map<string, number>();
  /** What the map holds (read once; this object is then its only writer). */
  private readonly inMap = new Map<string, SvcKey>();

  constructor(dp: Datapath) {
    this.map = new TypedMap(dp.maps.sm_l7_ready, svcKey, l7ReadyValue);
    for (const [k] of this.map.entries()) this.inMap.set(keyText(k), k);
  }

  /** How many destinations the kernel steers now. */
  get size(): number {
    return this.inMap.size;
  }

  /** What the kernel steers now: "ip|port" -> acknowledged version. */
  current(): Map<string, number> {
    return new Map(this.map.entries().map(([k, v]) => [keyText(k), v.version]));
  }

  /**
   * A table with these destinations was sent to the proxy as `version`: remove at once what it no
   * longer has; the rest waits for an answer.
   */
  applied(dests: readonly L7Policy[], version: number): void {
    this.newest = keysOf(dests);
    this.newestVersion = version;
    // `since` holds exactly the wanted destinations: a dropped one forgets when it came in.
    for (const text of this.since.keys()) if (!this.newest.has(text)) this.since.delete(text);
    for (const text of this.newest.keys()) if (!this.since.has(text)) this.since.set(text, version);
    const gone = [...this.inMap].filter(([text]) => !this.newest.has(text));
    this.map.deleteMany(gone.map(([, k]) => k));
    for (const [text] of gone) this.inMap.delete(text);
  }

  /**
   * The proxy answered ok to `version`: its destinations that are still wanted may be steered.
   * Returns how many it added. Throws (SM_MAP_FULL, say) with the rest left refused.
   */
  acked(version: number): number {
    // A destination wanted without a break since a table no newer than this answer was in that
    // table (and in every one since). One dropped and brought back after it waits: the proxy may
    // hold a table without its rules. The newest table, sent again to a proxy that reconnects,
    // counts again.
    if (this.newestVersion === undefined || version > this.newestVersion) return 0;
    let added = 0;
    for (const [text, k] of this.newest) {
      if (this.inMap.has(text) || version < (this.since.get(text) ?? Infinity)) continue;
      this.map.set(k, { version });
      this.inMap.set(text, k);
      added++;
    }
    return added;
  }

  /** The proxy is gone: nothing is steered until a proxy acknowledges a table again. */
  clear(): void {
    this.map.deleteMany(this.map.entries().map(([k]) => k));
    this.inMap.clear();
  }

  /**
   * Mark exactly these destinations as acknowledged: for tests and benchmarks that drive the
   * datapath without an agent (and a proxy stand-in that needs no table).
   */
  static set(dp: Datapath, dests: readonly L7Policy[], version = 1): void {
    const r = new L7Readiness(dp);
    r.applied(dests, version);
    r.acked(version);
  }
}
