// What every translator returns: a complete model plus the list of what it left out and why.
// A warning never means "half of this resource is in the model": a resource is either translated
// (possibly without some parts that the kernel cannot represent, each of which is named here) or
// left out whole.

import type { Model, Protocol, ServiceRef } from '../../core/model';

export interface TranslateWarning {
  /** What the warning is about, e.g. `cluster outbound|53||kube-dns.kube-system.svc.cluster.local`. */
  resource: string;
  reason: string;
}

/**
 * How one VIP:port was derived from Envoy config (for operators: `sockmesh xds translate` shows it).
 * Only the Envoy translator produces these.
 */
export interface DestinationInfo {
  vip: string;
  port: number;
  protocol: Protocol;
  service: ServiceRef;
  /** Clusters the connections go to, with their weights (one cluster: weight 1). */
  clusters: Array<{ name: string; weight: number }>;
  /** `listener NAME` / `listener NAME chain CHAIN` / `... route ROUTE vhost VH`. */
  via: string;
}

export interface TranslateResult {
  model: Model;
  warnings: TranslateWarning[];
  destinations?: DestinationInfo[];
}

export class Warnings {
  readonly list: TranslateWarning[] = [];
  private readonly seen = new Set<string>();

  add(resource: string, reason: string): void {
    const k = `${resource}\u0000${reason}`;
    if (this.seen.has(k)) return;
    this.seen.add(k);
    this.list.push({ resource, reason });
  }
}
