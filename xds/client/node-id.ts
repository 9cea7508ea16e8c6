// The node identity an xDS client presents, in istiod's form. istiod parses Node.id as
// `TYPE~IP~POD.NAMESPACE~NAMESPACE.svc.DOMAIN` and reads the pod's facts from Node.metadata
// (ISTIO_VERSION, CLUSTER_ID, NAMESPACE, INSTANCE_IPS, NODE_NAME, ...).

import type { Json } from '../types';

export type IstioProxyType = 'sidecar' | 'ztunnel' | 'router';

export interface NodeIdentity {
  /** Node.id */
  id: string;
  /** Node.cluster (Istio: the service cluster, e.g. `sockmesh.NAMESPACE`). */
  cluster?: string;
  /** Node.metadata, a google.protobuf.Struct. */
  metadata?: Record<string, unknown>;
  locality?: { region?: string; zone?: string; subzone?: string };
  /** Default `sockmesh`. */
  userAgentName?: string;
  userAgentVersion?: string;
}

export interface IstioNodeIdParts {
  type: IstioProxyType;
  ip: string;
  podName: string;
  namespace: string;
  /** Cluster DNS domain; default `cluster.local`. */
  domain?: string;
}

/** `TYPE~IP~POD.NS~NS.svc.DOMAIN`, e.g. `sidecar~10.1.2.3~web-0.shop~shop.svc.cluster.local`. */
export function istioNodeId(p: IstioNodeIdParts): string {
  return `${p.type}~${p.ip}~${p.podName}.${p.namespace}~${p.namespace}.svc.${p.domain ?? 'cluster.local'}`;
}

export interface IstioNodeOptions extends IstioNodeIdParts {
  /** CLUSTER_ID; default `Kubernetes` (istiod's default cluster id). */
  clusterId?: string;
  /** ISTIO_VERSION the client claims; istiod gates some features on it. Default `1.24.0`. */
  istioVersion?: string;
  /** NODE_NAME: the Kubernetes node the client runs on. */
  nodeName?: string;
  /** INSTANCE_IPS; default [ip]. */
  instanceIps?: string[];
  locality?: { region?: string; zone?: string; subzone?: string };
  /** More metadata keys (they override the defaults). */
  extra?: Record<string, unknown>;
}

/** A full NodeIdentity in istiod's form. */
export function istioNode(o: IstioNodeOptions): NodeIdentity {
  const metadata: Record<string, unknown> = {
    ISTIO_VERSION: o.istioVersion ?? '1.24.0',
    CLUSTER_ID: o.clusterId ?? 'Kubernetes',
    NAMESPACE: o.namespace,
    INSTANCE_IPS: (o.instanceIps ?? [o.ip]).join(','),
    ...(o.nodeName ? { NODE_NAME: o.nodeName } : {}),
    ...(o.extra ?? {}),
  };
  return {
    id: istioNodeId(o),
    cluster: `sockmesh.${o.namespace}`,
    metadata,
    ...(o.locality ? { locality: o.locality } : {}),
  };
}

/** envoy.config.core.v3.Node in proto3 JSON. */
export function nodeToJson(n: NodeIdentity, version: string): Json {
  const out: Json = { id: n.id, userAgentName: n.userAgentName ?? 'sockmesh', userAgentVersion: n.userAgentVersion ?? version };
  if (n.cluster) out.cluster = n.cluster;
  if (n.metadata) out.metadata = n.metadata;
  if (n.locality) out.locality = n.locality;
  return out;
}
