// What one stream has asked for of one type, per the xDS spec's subscription rules
// ("How the client specifies what resources to return"):
//
// - `*` among the names is an explicit wildcard subscription (any type);
// - legacy wildcard: for LDS/CDS (and the ambient types) a *first* request with no names means
//   "everything". In SotW it stays in force while later requests are empty too, and ends when the
//   client names resources without `*`; in Delta subscriptions are a set that requests add to and
//   remove from, so it lasts until `*` is unsubscribed;
// - for EDS/RDS an empty SotW request subscribes to nothing.

import type { TypeUrl } from '../types';
import { WILDCARD_TYPES } from '../proto/resource-types';

export class Subscription {
  wildcard = false;
  /** Explicitly subscribed names (without `*`). */
  names = new Set<string>();
  private legacy = false;

  constructor(readonly typeUrl: TypeUrl) {}

  /** Applies a SotW request's resource_names. Returns true if the subscription changed. */
  applySotw(resourceNames: readonly string[], first: boolean): boolean {
    const before = this.key();
    if (resourceNames.length === 0) {
      if (first && WILDCARD_TYPES.has(this.typeUrl)) this.legacy = true;
      this.wildcard = this.legacy;
      this.names = new Set();
    } else {
      this.legacy = false;
      this.wildcard = resourceNames.includes('*');
      this.names = new Set(resourceNames.filter((n) => n !== '*'));
    }
    return this.key() !== before;
  }

  /** Applies a Delta request. Returns the names that were unsubscribed and whether anything changed. */
  applyDelta(subscribe: readonly string[], unsubscribe: readonly string[], first: boolean): { changed: boolean; unsubscribed: string[] } {
    const before = this.key();
    if (first && subscribe.length === 0 && WILDCARD_TYPES.has(this.typeUrl)) this.wildcard = true;
    const unsubscribed: string[] = [];
    for (const n of subscribe) {
      if (n === '*') this.wildcard = true;
      else this.names.add(n);
    }
    for (const n of unsubscribe) {
      if (n === '*') this.wildcard = false;
      else if (this.names.delete(n)) unsubscribed.push(n);
    }
    return { changed: this.key() !== before, unsubscribed };
  }

  /** Whether a resource of this name is wanted. */
  wants(name: string): boolean {
    return this.wildcard || this.names.has(name);
  }

  /** Sorted names, `*` first when wildcard: for logs and stream info. */
  list(): string[] {
    return [...(this.wildcard ? ['*'] : []), ...[...this.names].sort()];
  }

  private key(): string {
    return JSON.stringify(this.list());
  }
}
