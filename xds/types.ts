// Shared vocabulary of the xDS adaptor: resource type URLs and the decoded form every layer uses.
//
// Resources travel between the protocol layer (xds/proto, xds/client, xds/server) and the
// translation layer (xds/translate) in proto3 JSON form — the form of `istioctl`/Envoy admin config
// dumps: lowerCamelCase field names, `@type` inside Any, enums as names, int64 as strings,
// wrappers (UInt32Value...) as bare values, Duration as "1.5s", bytes as base64. One form means the
// translator reads a config dump and a live xDS stream with the same code.

export const TYPE = {
  CLUSTER: 'type.googleapis.com/envoy.config.cluster.v3.Cluster',
  ENDPOINT: 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',
  LISTENER: 'type.googleapis.com/envoy.config.listener.v3.Listener',
  ROUTE: 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration',
  ADDRESS: 'type.googleapis.com/istio.workload.Address',
  AUTHORIZATION: 'type.googleapis.com/istio.security.Authorization',
} as const;

export type TypeUrl = (typeof TYPE)[keyof typeof TYPE];

export const ALL_TYPES: readonly TypeUrl[] = Object.values(TYPE);

/** A proto3 JSON object. */
export type Json = Record<string, unknown>;

/** One named resource as received (or served). */
export interface XdsResource {
  typeUrl: TypeUrl;
  name: string;
  version: string;
  json: Json;
}
