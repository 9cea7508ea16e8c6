// One Delta (incremental) ADS stream (DeltaAggregatedResources).
//
// The stream tracks, per type, the version of every resource it believes the client holds: seeded
// from initial_resource_versions on the client's first request for the type (a reconnecting
// client lists what it kept), then updated with each response. A response carries only resources
// whose version differs and, in removed_resources, names the client holds that are gone from the
// snapshot. Unsubscribed names are simply forgotten (the client already dropped them).
//
// The tracking is optimistic (a response counts as applied when sent), and a NACK undoes it: the
// client rejected the response whole and still holds what it had, so the stream's view of every
// resource in that response goes back to before it, and the next push re-sends what differs.
// Subscription changes are honoured whatever nonce a request carries; the nonce only identifies
// the response an ACK/NACK is about.

import type { TypeUrl } from '../types';
import type { DeltaDiscoveryRequestMsg, DeltaDiscoveryResponseMsg } from '../proto/ads';
import { SHORT_NAME, WILDCARD_TYPES, isTypeUrl } from '../proto/resource-types';
import { AdsStreamBase } from './stream-base';
import { Subscription } from './subscription';

interface TypeState {
  sub: Subscription;
  /** name → version the client holds (as far as we know). */
  held: Map<string, string>;
}

export class DeltaStream extends AdsStreamBase<DeltaDiscoveryRequestMsg, DeltaDiscoveryResponseMsg> {
  private readonly state = new Map<TypeUrl, TypeState>();
  /** Unanswered responses: nonce → type, system version, and what `held` said before it. */
  private readonly pending = new Map<string, { typeUrl: TypeUrl; version: string; before: Map<string, string | undefined> }>();

  onRequest(req: DeltaDiscoveryRequestMsg): void {
    this.recordNode(req.node);
    const typeUrl = req.type_url ?? '';
    if (!isTypeUrl(typeUrl)) {
      this.host.log.warn('xds stream: request for an unsupported type ignored', { stream: this.info.id, typeUrl });
      return;
    }
    let st = this.state.get(typeUrl);
    const first = !st;
    if (!st) {
      const initial = { ...(req.initial_resource_versions ?? {}) };
      st = { sub: new Subscription(typeUrl), held: new Map(Object.entries(initial)) };
      this.state.set(typeUrl, st);
      if (Object.keys(initial).length) this.typeInfo(typeUrl).initialResourceVersions = initial;
    }

    const nonce = req.response_nonce ?? '';
    if (nonce) {
      const p = this.pending.get(nonce);
      if (p && p.typeUrl === typeUrl) {
        this.pending.delete(nonce);
        const err = req.error_detail;
        if (err && (err.code || err.message)) {
          for (const [name, v] of p.before) {
            if (v === undefined) st.held.delete(name);
            else st.held.set(name, v);
          }
          this.recordNack(typeUrl, nonce, err);
        } else {
          this.recordAck(typeUrl, nonce, p.version);
        }
      } else {
        this.host.log.debug('xds stream: ACK/NACK for an unknown nonce', { stream: this.info.id, type: SHORT_NAME[typeUrl], nonce });
      }
    }

    const { changed, unsubscribed } = st.sub.applyDelta(req.resource_names_subscribe ?? [], req.resource_names_unsubscribe ?? [], first);
    for (const n of unsubscribed) if (!st.sub.wants(n)) st.held.delete(n);
    this.typeInfo(typeUrl).subscription = st.sub.list();
    if (first || changed) this.send(typeUrl, st, first);
  }

  push(): void {
    for (const [typeUrl, st] of this.state) this.send(typeUrl, st, false);
  }

  private send(typeUrl: TypeUrl, st: TypeState, first: boolean): void {
    const snap = this.host.snapshot();
    const all = snap.resources(typeUrl);
    const updated = [...all.values()].filter((r) => st.sub.wants(r.name) && st.held.get(r.name) !== r.version);
    const removed: string[] = [];
    const before = new Map<string, string | undefined>();
    for (const name of [...st.held.keys()]) {
      if (!st.sub.wants(name)) {
        st.held.delete(name);
      } else if (!all.has(name)) {
        removed.push(name);
        before.set(name, st.held.get(name));
        st.held.delete(name);
      }
    }
    // An empty first response for a wildcard type tells the client "there is nothing (else)",
    // so it need not wait for a timeout before treating the type as received.
    if (!updated.length && !removed.length && !(first && st.sub.wildcard && WILDCARD_TYPES.has(typeUrl))) return;
    for (const r of updated) {
      before.set(r.name, st.held.get(r.name));
      st.held.set(r.name, r.version);
    }
    const nonce = this.host.nextNonce();
    this.pending.set(nonce, { typeUrl, version: snap.version, before });
    if (this.pending.size > 1000) this.pending.delete(this.pending.keys().next().value as string); // a client that never ACKs
    this.write({
      system_version_info: snap.version,
      type_url: typeUrl,
      nonce,
      resources: updated.map((r) => ({ name: r.name, version: r.version, resource: { type_url: r.anyTypeUrl, value: r.value } })),
      removed_resources: removed,
      control_plane: { identifier: 'sockmesh' },
    });
    this.recordResponse({
      typeUrl,
      nonce,
      version: snap.version,
      resources: updated.map((r) => ({ name: r.name, version: r.version })),
      removed,
      at: new Date(),
    });
  }
}
