// The model from an Istio-style control plane over ADS (xds/client), translated by xds/translate.
//
// What is taken from where:
//  - services and endpoints: from the Envoy resources (CDS/EDS/LDS/RDS) when the control plane
//    sends any clusters — they carry UDP, weights, priorities and health — else from the ambient
//    Address resources (what istiod sends a ztunnel-type node);
//  - workloads (local pods, identities): from ambient Address/Workload;
//  - L4 policy: ambient Authorization plus the L4-decidable part of Envoy RBAC; L7 policy: the rest.
// NACKs happen inside the client (the last good resources stay in force); the source only ever
// emits whole, consistent snapshots, and nothing when the translated model did not change.
import { EventEmitter } from 'node:events';
import * as os from 'node:os';
import { XdsClient, XdsSnapshot, istioNode, type NodeIdentity } from '../../xds/client';
import { translateAmbient, translateEnvoy, validateResource } from '../../xds/translate';
import { TYPE, type TypeUrl } from '../../xds/types';
import { XdsError } from '../../core/errors';
import type { Logger } from '../../core/log';
import type { Model } from '../../core/model';
import type { ModelSource, ModelSourceEvents, SourceSnapshot } from './source';

export interface XdsSourceOptions {
  server: string;
  mode?: 'sotw' | 'delta';
  /** Defaults to an istiod-style ztunnel identity for this host. */
  node?: NodeIdentity;
  nodeName?: string;
  tls?: { caFile: string; certFile?: string; keyFile?: string };
  tokenFile?: string;
  resourceTimeoutMs?: number;
  log: Logger;
}

function firstIpv4(): string {
  for (const addrs of Object.values(os.networkInterfaces())) {
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}

export function defaultNode(nodeName: string): NodeIdentity {
  return istioNode({ type: 'ztunnel', ip: firstIpv4(), podName: `sockmesh-${nodeName}`, namespace: 'istio-system', nodeName });
}

/** Translate one consistent snapshot into the model (pure; exported for tests). */
export function modelFromSnapshot(snap: XdsSnapshot): { model: Model; warnings: Array<{ resource: string; reason: string }> } {
  const json = (t: TypeUrl) => (snap.resources[t] ?? []).map((r) => r.json);
  const envoy = translateEnvoy({ clusters: json(TYPE.CLUSTER), endpoints: json(TYPE.ENDPOINT), listeners: json(TYPE.LISTENER), routes: json(TYPE.ROUTE) });
  const ambient = translateAmbient({ addresses: json(TYPE.ADDRESS), authorizations: json(TYPE.AUTHORIZATION) });
  const fromEnvoy = envoy.model.services.length > 0;
  const svc = fromEnvoy ? envoy.model : ambient.model;
  const model: Model = {
    services: svc.services,
    endpoints: svc.endpoints,
    workloads: ambient.model.workloads,
    policies: {
      l4: [...(ambient.model.policies?.l4 ?? []), ...(envoy.model.policies?.l4 ?? [])],
      l7: [...(envoy.model.policies?.l7 ?? []), ...(ambient.model.policies?.l7 ?? [])],
    },
  };
  return { model, warnings: [...envoy.warnings, ...ambient.warnings] };
}

export class XdsSource extends EventEmitter<ModelSourceEvents> implements ModelSource {
  readonly description: string;
  private client?: XdsClient;
  private lastJson = '';

  constructor(private readonly opts: XdsSourceOptions) {
    super();
    this.description = `xds ${opts.server} (${opts.mode ?? 'sotw'})`;
  }

  start(): Promise<SourceSnapshot> {
    const log = this.opts.log;
    const nodeName = this.opts.nodeName ?? os.hostname();
    this.client = new XdsClient({
      server: this.opts.server,
      mode: this.opts.mode ?? 'sotw',
      node: this.opts.node ?? defaultNode(nodeName),
      tls: this.opts.tls,
      tokenFile: this.opts.tokenFile,
      resourceTimeoutMs: this.opts.resourceTimeoutMs,
      validate: (t, name, json) => validateResource(t, name, json),
      // CDS and LDS wildcard; EDS and RDS names follow them inside the client.
      watch: { [TYPE.CLUSTER]: '*', [TYPE.LISTENER]: '*', [TYPE.ADDRESS]: '*', [TYPE.AUTHORIZATION]: '*' },
      log,
    });
    this.client.on('connected', (e) => log.info('xds connected', e));
    this.client.on('disconnected', (e) => log.warn('xds disconnected; the last good config stays in force', e));
    this.client.on('nack', (n) => {
      log.error('xds resource rejected (NACK); the previous version stays in force', { typeUrl: n.typeUrl, errors: n.errors });
      this.emit('invalid', Object.assign(new XdsError('SM_XDS_NACK', n.detail, { details: { typeUrl: n.typeUrl } }), { errors: n.errors }));
    });
    return new Promise((resolve) => {
      let started = false;
      this.client!.on('snapshot', (snap) => {
        if (snap.waiting.length) return; // make-before-break: only whole views
        const { model, warnings } = modelFromSnapshot(snap);
        const json = JSON.stringify(model);
        if (json === this.lastJson) return;
        this.lastJson = json;
        for (const w of warnings) log.warn('xds: left out of the datapath', w);
        const out: SourceSnapshot = { model, nodeName };
        if (!started) {
          started = true;
          resolve(out);
        } else {
          this.emit('update', out);
        }
      });
    });
  }

  state(): ReturnType<XdsClient['state']> | undefined {
    return this.client?.state();
  }

  stop(): void {
    this.client?.close();
  }
}
