// The desired-state model: the seam between config sources (local YAML file today; xDS and the
// Kubernetes API in later issues) and the datapath reconciler. Plain data, no behaviour: a source
// produces a Model, the reconciler diffs it against what the kernel holds.

export type Protocol = 'TCP' | 'UDP';

/** `namespace/name`, the key by which endpoints refer to their service. */
export type ServiceRef = string;

export interface ServicePort {
  /** Optional port name, used by endpoints that name their port. */
  name?: string;
  /** The port clients connect to on the VIP (1..65535). */
  port: number;
  protocol: Protocol;
  /** Port on the backend; defaults to `port`. An endpoint may override it. */
  targetPort?: number;
}

export interface Service {
  namespace: string;
  name: string;
  /** Virtual IPs (IPv4 and/or IPv6, canonical text form). */
  vips: string[];
  ports: ServicePort[];
}

export interface Endpoint {
  service: ServiceRef;
  /** Backend address (IPv4 or IPv6). Only backends of a VIP's address family serve that VIP. */
  address: string;
  /**
   * Restrict this endpoint to one service port (by number or name); when absent the endpoint
   * serves every port of the service.
   */
  servicePort?: number | string;
  /** Backend port; defaults to the service port's targetPort (or port). */
  port?: number;
  /** Relative weight (1..1_000_000); default 1. */
  weight: number;
  /** Unhealthy endpoints are never chosen. */
  healthy: boolean;
  /** Node the backend runs on, when known (informational; locality lives in workloads). */
  node?: string;
}

export interface Workload {
  namespace: string;
  name: string;
  serviceAccount: string;
  ips: string[];
  /** Node the workload runs on. Workloads on the agent's own node are "local meshed pods". */
  node?: string;
}

export interface Model {
  services: Service[];
  endpoints: Endpoint[];
  workloads: Workload[];
}

export function serviceRef(s: { namespace: string; name: string }): ServiceRef {
  return `${s.namespace}/${s.name}`;
}

export function emptyModel(): Model {
  return { services: [], endpoints: [], workloads: [] };
}
