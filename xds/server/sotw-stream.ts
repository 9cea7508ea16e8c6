// One State-of-the-World ADS stream (StreamAggregatedResources).
//
// Every response for a type carries the full set the client subscribed to: everything of the
// type for a wildcard subscription, the subscribed names that exist otherwise. A response is sent
// when a type is first requested, when the subscription changes, and when a push changes the set
// (names or versions) the stream last got. A request whose response_nonce is not the latest one
// sent for its type is stale (the client has not seen our newest response yet) and is ignored, as
// go-control-plane and istiod do; an ACK/NACK is a request carrying the latest nonce.

import type { TypeUrl } from '../types';
import type { DiscoveryRequestMsg, DiscoveryResponseMsg } from '../proto/ads';
import { SHORT_NAME, isTypeUrl } from '../proto/resource-types';
import { AdsStreamBase } from './stream-base';
import { Subscription } from './subscription';

interface TypeState {
  sub: Subscription;
  lastNonce?: string;
  /** `name@version,...` of the last response; undefined until one was sent. */
  lastSentKey?: string;
}

export class SotwStream extends AdsStreamBase<DiscoveryRequestMsg, DiscoveryResponseMsg> {
  private readonly state = new Map<TypeUrl, TypeState>();

  onRequest(req: DiscoveryRequestMsg): void {
    this.recordNode(req.node);
    const typeUrl = req.type_url ?? '';
    if (!isTypeUrl(typeUrl)) {
      this.host.log.warn('xds stream: request for an unsupported type ignored', { stream: this.info.id, typeUrl });
      return;
    }
    let st = this.state.get(typeUrl);
    const first = !st;
    if (!st) this.state.set(typeUrl, (st = { sub: new Subscription(typeUrl) }));
    const nonce = req.response_nonce ?? '';
    if (nonce && nonce !== st.lastNonce) {
      this.host.log.debug('xds stream: stale request ignored', { stream: this.info.id, type: SHORT_NAME[typeUrl], nonce, latest: st.lastNonce });
      return;
    }
    if (nonce) {
      const err = req.error_detail;
      if (err && (err.code || err.message)) this.recordNack(typeUrl, nonce, err, req.version_info ?? '');
      else this.recordAck(typeUrl, nonce, req.version_info ?? '');
    }
    const changed = st.sub.applySotw(req.resource_names ?? [], first);
    this.typeInfo(typeUrl).subscription = st.sub.list();
    if (first || changed) this.send(typeUrl, st, true);
  }

  push(): void {
    for (const [typeUrl, st] of this.state) {
      if (st.lastSentKey !== undefined) this.send(typeUrl, st, false);
    }
  }

  private send(typeUrl: TypeUrl, st: TypeState, force: boolean): void {
    const snap = this.host.snapshot();
    const rs = [...snap.resources(typeUrl).values()].filter((r) => st.sub.wants(r.name));
    const key = rs.map((r) => `${r.name}@${r.version}`).join(',');
    if (!force && key === st.lastSentKey) return;
    const nonce = this.host.nextNonce();
    const version = snap.typeVersion(typeUrl);
    st.lastNonce = nonce;
    st.lastSentKey = key;
    this.write({
      version_info: version,
      type_url: typeUrl,
      nonce,
      resources: rs.map((r) => ({ type_url: r.anyTypeUrl, value: r.value })),
      control_plane: { identifier: 'sockmesh' },
    });
    this.recordResponse({ typeUrl, nonce, version, resources: rs.map((r) => ({ name: r.name, version: r.version })), removed: [], at: new Date() });
  }
}
