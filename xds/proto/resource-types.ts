// Per-type facts of the six resource types the xDS layer speaks (xds/types.ts), shared by the
// client and the server: how a resource is named, which types allow wildcard subscriptions, and
// which types' State-of-the-World responses list every resource (so that absence means removal).

import { TYPE, type Json, type TypeUrl } from '../types';

/** Short names for logs and error messages. */
export const SHORT_NAME: Record<TypeUrl, string> = {
  [TYPE.CLUSTER]: 'CDS',
  [TYPE.ENDPOINT]: 'EDS',
  [TYPE.LISTENER]: 'LDS',
  [TYPE.ROUTE]: 'RDS',
  [TYPE.ADDRESS]: 'WDS',
  [TYPE.AUTHORIZATION]: 'Authorization',
};

/**
 * Types where an empty first request means "everything" (xDS "legacy wildcard"): LDS and CDS per
 * the xDS spec, and ztunnel's two ambient types, which it always subscribes to as a whole.
 */
export const WILDCARD_TYPES: ReadonlySet<TypeUrl> = new Set([TYPE.CLUSTER, TYPE.LISTENER, TYPE.ADDRESS, TYPE.AUTHORIZATION]);

/**
 * Types whose SotW responses carry the complete set, so a resource missing from a response is
 * deleted (Envoy: LDS and CDS; grpc-js-xds `allResourcesRequiredInSotW`). For EDS and RDS a
 * missing resource means nothing. The ambient types are sent whole as well.
 */
export const FULL_STATE_TYPES: ReadonlySet<TypeUrl> = WILDCARD_TYPES;

export function isTypeUrl(s: string): s is TypeUrl {
  return (Object.values(TYPE) as string[]).includes(s);
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/**
 * The xDS resource name of a resource in proto3 JSON form, as a server names it, or undefined if
 * the resource carries none. Envoy types: their name field (ClusterLoadAssignment:
 * cluster_name). Ambient, as istiod names them: a workload by its uid, a service by
 * `namespace/hostname`, an authorization by `namespace/name`.
 */
export function resourceName(typeUrl: TypeUrl, json: Json): string | undefined {
  switch (typeUrl) {
    case TYPE.CLUSTER:
    case TYPE.LISTENER:
    case TYPE.ROUTE:
      return str(json.name);
    case TYPE.ENDPOINT:
      return str(json.clusterName);
    case TYPE.ADDRESS: {
      const w = json.workload as Json | undefined;
      const s = json.service as Json | undefined;
      if (w) return str(w.uid);
      if (s) {
        const ns = str(s.namespace);
        const host = str(s.hostname);
        return host ? `${ns ?? ''}/${host}` : undefined;
      }
      return undefined;
    }
    case TYPE.AUTHORIZATION: {
      const name = str(json.name);
      return name ? `${str(json.namespace) ?? ''}/${name}` : undefined;
    }
  }
}
