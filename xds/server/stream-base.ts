// What the SotW and Delta streams share: the record of one ADS stream (node, subscriptions,
// ACK/NACK bookkeeping, responses sent) that the server exposes for logs and tests.

import type * as grpc from '@grpc/grpc-js';
import type { Logger } from '../../core/log';
import type { Json, TypeUrl } from '../types';
import { toProto3Json } from '../proto/json';
import type { StatusMsg } from '../proto/ads';
import { SHORT_NAME } from '../proto/resource-types';
import type { Snapshot } from './snapshot';

export interface NackRecord {
  streamId: number;
  typeUrl: TypeUrl;
  /** The nonce of the response the client rejected. */
  nonce: string;
  /** SotW: the version the client still runs (its last accepted). Delta requests carry none. */
  versionInfo?: string;
  code: number;
  message: string;
  at: Date;
}

export interface ResponseRecord {
  typeUrl: TypeUrl;
  nonce: string;
  /** SotW version_info / Delta system_version_info. */
  version: string;
  resources: Array<{ name: string; version: string }>;
  /** Delta removed_resources. */
  removed: string[];
  at: Date;
}

export interface TypeStreamInfo {
  /** Subscribed names, `*` first when wildcard. */
  subscription: string[];
  /** Version the client last ACKed (SotW version_info; Delta: system version of the ACKed response). */
  ackedVersion?: string;
  lastAckNonce?: string;
  lastNack?: NackRecord;
  acks: number;
  nacks: number;
  /** Delta: initial_resource_versions of this stream's first request for the type. */
  initialResourceVersions?: Record<string, string>;
}

export interface StreamInfo {
  id: number;
  kind: 'sotw' | 'delta';
  peer: string;
  openedAt: Date;
  closedAt?: Date;
  /** envoy.config.core.v3.Node in proto3 JSON, from the first request that carried one. */
  node?: Json;
  /** The `authorization` request metadata, if any (kept for tests of token auth; never logged). */
  authorization?: string;
  types: Partial<Record<TypeUrl, TypeStreamInfo>>;
  /** Responses sent on this stream, oldest first (the last MAX_RECORDED). */
  responses: ResponseRecord[];
}

export const MAX_RECORDED = 500;

/** Server-side services a stream uses. */
export interface StreamHost {
  log: Logger;
  snapshot(): Snapshot;
  nextNonce(): string;
  onAck(info: StreamInfo, typeUrl: TypeUrl, nonce: string, version: string): void;
  onNack(rec: NackRecord): void;
  onResponse(info: StreamInfo, rec: ResponseRecord): void;
}

export abstract class AdsStreamBase<Req, Res> {
  readonly info: StreamInfo;

  constructor(
    protected readonly host: StreamHost,
    protected readonly call: grpc.ServerDuplexStream<Req, Res>,
    id: number,
    kind: 'sotw' | 'delta',
  ) {
    const auth = call.metadata.get('authorization')[0];
    this.info = { id, kind, peer: call.getPeer(), openedAt: new Date(), types: {}, responses: [] };
    if (typeof auth === 'string') this.info.authorization = auth;
  }

  abstract onRequest(req: Req): void;
  /** The snapshot changed: send whatever this stream's subscriptions make due. */
  abstract push(): void;

  protected typeInfo(typeUrl: TypeUrl): TypeStreamInfo {
    let t = this.info.types[typeUrl];
    if (!t) this.info.types[typeUrl] = t = { subscription: [], acks: 0, nacks: 0 };
    return t;
  }

  protected recordNode(node: unknown): void {
    if (this.info.node || !node) return;
    try {
      this.info.node = toProto3Json('envoy.config.core.v3.Node', node as Record<string, unknown>);
      this.host.log.info('xds stream: client identified', { stream: this.info.id, kind: this.info.kind, node: this.info.node.id, peer: this.info.peer });
    } catch (e) {
      this.host.log.warn('xds stream: cannot read node', { stream: this.info.id, error: e as Error });
    }
  }

  protected recordAck(typeUrl: TypeUrl, nonce: string, version: string): void {
    const t = this.typeInfo(typeUrl);
    t.acks++;
    t.ackedVersion = version;
    t.lastAckNonce = nonce;
    this.host.onAck(this.info, typeUrl, nonce, version);
  }

  protected recordNack(typeUrl: TypeUrl, nonce: string, detail: StatusMsg, versionInfo?: string): void {
    const t = this.typeInfo(typeUrl);
    t.nacks++;
    const rec: NackRecord = {
      streamId: this.info.id,
      typeUrl,
      nonce,
      code: detail.code ?? 0,
      message: detail.message ?? '',
      at: new Date(),
      ...(versionInfo !== undefined ? { versionInfo } : {}),
    };
    t.lastNack = rec;
    this.host.log.warn('xds stream: client rejected a response (NACK)', {
      stream: this.info.id,
      type: SHORT_NAME[typeUrl],
      nonce,
      node: this.info.node?.id,
      error: rec.message,
    });
    this.host.onNack(rec);
  }

  protected recordResponse(rec: ResponseRecord): void {
    this.info.responses.push(rec);
    if (this.info.responses.length > MAX_RECORDED) this.info.responses.shift();
    this.host.onResponse(this.info, rec);
  }

  protected write(msg: Res): void {
    if (this.info.closedAt) return;
    try {
      this.call.write(msg);
    } catch (e) {
      this.host.log.warn('xds stream: write failed', { stream: this.info.id, error: e as Error });
    }
  }

  markClosed(): void {
    if (!this.info.closedAt) this.info.closedAt = new Date();
  }
}
