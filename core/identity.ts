// Workload identities: the SPIFFE id Istio gives a workload, and the number the datapath carries
// for it (sm_local_ep.identity, sm_steer_value.identity). The agent allocates numbers once per name
// and keeps them in a pinned map (mesh-agent/datapath/identities.ts). identityTable() below derives
// numbers from one model alone (FNV-1a, 31 bits, collisions probed in sorted order): for tools and
// tests that have no datapath; it can renumber a name when a colliding one comes or goes.
import type { Workload } from './model';

export const DEFAULT_TRUST_DOMAIN = 'cluster.local';

export function spiffeId(w: Pick<Workload, 'namespace' | 'serviceAccount' | 'trustDomain'>): string {
  return `spiffe://${w.trustDomain ?? DEFAULT_TRUST_DOMAIN}/ns/${w.namespace}/sa/${w.serviceAccount}`;
}

/** FNV-1a of `s`, 31 bits: where identity numbering starts for a name. */
export function fnv1a31(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h & 0x7fffffff;
}

/** SPIFFE id -> identity number (never 0: 0 means "unknown" in the kernel maps). */
export function identityTable(workloads: Workload[]): Map<string, number> {
  const ids = [...new Set(workloads.map(spiffeId))].sort();
  const taken = new Set<number>();
  const out = new Map<string, number>();
  for (const id of ids) {
    let n = fnv1a31(id) || 1;
    while (taken.has(n)) n = (n % 0x7fffffff) + 1;
    taken.add(n);
    out.set(id, n);
  }
  return out;
}
