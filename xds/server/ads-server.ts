// The ADS gRPC server: envoy.service.discovery.v3.AggregatedDiscoveryService over @grpc/grpc-js,
// State of the World and Delta, serving one Snapshot to every stream.
//
// setSnapshot() swaps the snapshot and pushes to every open stream whatever its subscriptions make
// due. listen()/stop() may be called repeatedly on one AdsServer (a fresh grpc.Server each time),
// which keeps the snapshot and the stream records across a restart — what the reconnect tests use.

import { EventEmitter } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import { createLogger, type Logger } from '../../core/log';
import type { TypeUrl } from '../types';
import { adsServiceDefinition, type DeltaDiscoveryRequestMsg, type DeltaDiscoveryResponseMsg, type DiscoveryRequestMsg, type DiscoveryResponseMsg } from '../proto/ads';
import { XdsError } from '../../core/errors';
import { DeltaStream } from './delta-stream';
import { Snapshot, type SnapshotEntry } from './snapshot';
import { SotwStream } from './sotw-stream';
import type { AdsStreamBase, NackRecord, ResponseRecord, StreamHost, StreamInfo } from './stream-base';

export interface AdsServerOptions {
  log?: Logger;
  /** Default: insecure (the control plane listens on loopback). */
  credentials?: grpc.ServerCredentials;
  /** How many closed streams stay listed in streams(). Default 50. */
  keepClosedStreams?: number;
}

export interface AdsServerEvents {
  'stream-open': [StreamInfo];
  'stream-close': [StreamInfo];
  ack: [{ streamId: number; typeUrl: TypeUrl; nonce: string; version: string }];
  nack: [NackRecord];
  response: [{ streamId: number } & ResponseRecord];
  snapshot: [Snapshot];
}

/** Parses `host:port`, `[v6]:port` (port 0 = any). Only the forms grpc-js binds are accepted. */
export function parseListenAddress(addr: string): { host: string; port: number; grpcAddress: string } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(addr);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw new XdsError('SM_XDS_CONFIG', `invalid listen address ${JSON.stringify(addr)}: expected HOST:PORT or [IPV6]:PORT, e.g. 127.0.0.1:15010 or [::1]:0`);
  }
  const host = m[1] ?? m[2];
  return { host, port, grpcAddress: m[1] ? `[${host}]:${port}` : `${host}:${port}` };
}

export class AdsServer extends EventEmitter<AdsServerEvents> {
  private readonly log: Logger;
  private readonly credentials: grpc.ServerCredentials;
  private readonly keepClosed: number;
  private server: grpc.Server | undefined;
  private snap: Snapshot = Snapshot.empty();
  private readonly open = new Map<number, AdsStreamBase<unknown, unknown>>();
  private readonly closed: StreamInfo[] = [];
  private nextStreamId = 1;
  private nonceCounter = 0;
  private readonly nacks: NackRecord[] = [];
  private readonly host: StreamHost;

  constructor(opts: AdsServerOptions = {}) {
    super();
    this.log = opts.log ?? createLogger({ component: 'xds-server' });
    this.credentials = opts.credentials ?? grpc.ServerCredentials.createInsecure();
    this.keepClosed = opts.keepClosedStreams ?? 50;
    this.host = {
      log: this.log,
      snapshot: () => this.snap,
      nextNonce: () => String(++this.nonceCounter),
      onAck: (info, typeUrl, nonce, version) => this.emit('ack', { streamId: info.id, typeUrl, nonce, version }),
      onNack: (rec) => {
        this.nacks.push(rec);
        if (this.nacks.length > 200) this.nacks.shift();
        this.emit('nack', rec);
      },
      onResponse: (info, rec) => this.emit('response', { streamId: info.id, ...rec }),
    };
  }

  /** Binds and starts serving. Returns the bound port (useful with port 0). */
  async listen(address: string): Promise<number> {
    if (this.server) throw new XdsError('SM_XDS_CONFIG', 'AdsServer is already listening');
    const { grpcAddress } = parseListenAddress(address);
    const server = new grpc.Server();
    server.addService(adsServiceDefinition(), {
      StreamAggregatedResources: (call: grpc.ServerDuplexStream<DiscoveryRequestMsg, DiscoveryResponseMsg>) =>
        this.attach(new SotwStream(this.host, call, this.nextStreamId++, 'sotw'), call),
      DeltaAggregatedResources: (call: grpc.ServerDuplexStream<DeltaDiscoveryRequestMsg, DeltaDiscoveryResponseMsg>) =>
        this.attach(new DeltaStream(this.host, call, this.nextStreamId++, 'delta'), call),
    } as grpc.UntypedServiceImplementation);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(grpcAddress, this.credentials, (err, p) => (err ? reject(err) : resolve(p))),
    );
    this.server = server;
    this.log.info('xds server listening', { address: grpcAddress.replace(/:\d+$/, `:${port}`) });
    return port;
  }

  /**
   * Stops serving. Open streams are cancelled at once (clients see UNAVAILABLE and reconnect)
   * unless graceMs > 0, in which case they get that long to finish first.
   */
  async stop(graceMs = 0): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    if (graceMs > 0) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(t);
          resolve();
        });
      });
    } else {
      server.forceShutdown();
    }
    for (const s of [...this.open.values()]) this.closeStream(s);
  }

  /**
   * Replaces what is served and pushes the changes. Accepts resources in proto3 JSON form
   * (XdsResource works as is) and raw entries; throws XdsError, serving the previous snapshot, if
   * an entry does not encode or two entries share a type and name.
   */
  setSnapshot(entries: Iterable<SnapshotEntry> | Snapshot): Snapshot {
    const next = entries instanceof Snapshot ? entries : Snapshot.build(entries);
    const prev = this.snap;
    this.snap = next;
    if (prev.version !== next.version) {
      this.log.info('xds snapshot', { version: next.version, resources: next.counts(), streams: this.open.size });
      for (const s of this.open.values()) {
        try {
          s.push();
        } catch (e) {
          this.log.error('xds stream: push failed', { stream: s.info.id, error: e as Error });
        }
      }
    }
    this.emit('snapshot', next);
    return next;
  }

  currentSnapshot(): Snapshot {
    return this.snap;
  }

  /** Open streams, then recently closed ones. */
  streams(): StreamInfo[] {
    return [...[...this.open.values()].map((s) => s.info), ...this.closed];
  }

  /** The most recent NACK (of a type, if given) on any stream. */
  lastNack(typeUrl?: TypeUrl): NackRecord | undefined {
    for (let i = this.nacks.length - 1; i >= 0; i--) if (!typeUrl || this.nacks[i].typeUrl === typeUrl) return this.nacks[i];
    return undefined;
  }

  /** The bound grpc.Server while listening. */
  get grpcServer(): grpc.Server | undefined {
    return this.server;
  }

  private attach<Req, Res>(stream: AdsStreamBase<Req, Res>, call: grpc.ServerDuplexStream<Req, Res>): void {
    const s = stream as unknown as AdsStreamBase<unknown, unknown>;
    this.open.set(s.info.id, s);
    this.log.info('xds stream opened', { stream: s.info.id, kind: s.info.kind, peer: s.info.peer });
    this.emit('stream-open', s.info);
    // Headers now, so a client knows it is connected before the first response.
    call.sendMetadata(new grpc.Metadata());
    call.on('data', (req: Req) => {
      try {
        stream.onRequest(req);
      } catch (e) {
        this.log.error('xds stream: request handling failed', { stream: s.info.id, error: e as Error });
      }
    });
    call.on('end', () => {
      this.closeStream(s);
      call.end();
    });
    call.on('cancelled', () => this.closeStream(s));
    call.on('error', (e: Error) => {
      this.log.debug('xds stream error', { stream: s.info.id, error: e });
      this.closeStream(s);
    });
    call.on('close', () => this.closeStream(s));
  }

  private closeStream(s: AdsStreamBase<unknown, unknown>): void {
    if (!this.open.delete(s.info.id)) return;
    s.markClosed();
    this.closed.unshift(s.info);
    if (this.closed.length > this.keepClosed) this.closed.pop();
    this.log.info('xds stream closed', { stream: s.info.id, kind: s.info.kind, node: s.info.node?.id });
    this.emit('stream-close', s.info);
  }
}
