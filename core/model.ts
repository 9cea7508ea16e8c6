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
  /** Where the backend is (Envoy locality / ambient Locality), informational for now. */
  locality?: { region?: string; zone?: string; subzone?: string };
  /** Envoy priority (0 is highest); the datapath uses only the highest priority that has healthy backends. */
  priority?: number;
  /** uid of the workload behind this endpoint, when the source knows it. */
  workload?: string;
}

export interface Workload {
  namespace: string;
  name: string;
  serviceAccount: string;
  ips: string[];
  /** Node the workload runs on. Workloads on the agent's own node are "local meshed pods". */
  node?: string;
  /** Stable unique id (ambient Workload.uid); defaults to `namespace/name` where a source has none. */
  uid?: string;
  /** SPIFFE trust domain; default cluster.local. */
  trustDomain?: string;
  /** Workload.status from ambient: unhealthy workloads are not chosen as backends. */
  healthy?: boolean;
  /**
   * cgroup v2 directory of a local pod (the Kubernetes source derives it from the pod uid). The
   * datapath knows the caller of connect() by its cgroup; without it, outbound L4 policy sees the
   * pod as an unknown identity.
   */
  cgroup?: string;
}

export interface Model {
  services: Service[];
  endpoints: Endpoint[];
  workloads: Workload[];
  /** Absent in sources that carry no policy (the local file, for now). */
  policies?: Policies;
}

export function serviceRef(s: { namespace: string; name: string }): ServiceRef {
  return `${s.namespace}/${s.name}`;
}

export function emptyModel(): Model {
  return { services: [], endpoints: [], workloads: [] };
}

// --- Policy (issue 3 produces it from xDS; issue 5 enforces L4 in the kernel, issue 4 L7) -------

/** String matcher as in istio.security.StringMatch / envoy StringMatcher (L4-relevant subset). */
export type StringMatch = { exact: string } | { prefix: string } | { suffix: string } | { presence: true };

/** An address prefix, canonical text + prefix length (a /32 or /128 for a single address). */
export interface Cidr {
  address: string;
  prefixLen: number;
}

/**
 * An L4 condition over a connection: its source (identity, namespace, IP) and its destination
 * (IP, port). Trees of these express both ambient Authorization (groups OR, rules AND, matches OR,
 * fields AND with not_ twins) and the L4-decidable part of Envoy RBAC (and_/or_/not_ rules).
 */
export type L4Expr =
  | { any: true }
  | { and: L4Expr[] }
  | { or: L4Expr[] }
  | { not: L4Expr }
  | { principal: StringMatch } // SPIFFE id of the source: spiffe://TD/ns/NS/sa/SA
  | { namespace: StringMatch } // namespace of the source
  | { sourceIp: Cidr }
  | { destinationIp: Cidr }
  | { destinationPort: number }
  | { destinationPortRange: { start: number; end: number } }; // [start, end)

export type PolicyAction = 'ALLOW' | 'DENY' | 'LOG';

export type PolicyScope =
  | { kind: 'global' }
  | { kind: 'namespace'; namespace: string }
  /** Workloads selected by uid (ambient: Workload.authorization_policies lists the policy). */
  | { kind: 'workloads'; workloads: string[] }
  /** Destinations of an Envoy listener (VIP or pod IP and port) the RBAC filter sat on. */
  | { kind: 'destinations'; destinations: Array<{ ip?: string; port: number }> };

export interface L4Policy {
  /** `namespace/name` of the source policy, plus a rule suffix for Envoy RBAC policies. */
  name: string;
  scope: PolicyScope;
  action: PolicyAction;
  /** shadow_rules / istio_dry_run_*: evaluated and reported, never enforced. */
  dryRun: boolean;
  /** The policy applies to a connection when this holds. */
  when: L4Expr;
  /** Where it came from, for operators (`ambient`, `envoy.filters.network.rbac`, ...). */
  origin: string;
}

/**
 * HTTP authorization the kernel cannot judge (paths, methods, headers): the Envoy RBAC filter
 * configs for one destination, in filter-chain order, kept as delivered (proto3 JSON of
 * envoy.extensions.filters.http.rbac.v3.RBAC). The L7 proxy evaluates them; the datapath steers
 * connections to that destination to the proxy.
 */
export interface L7Policy {
  destination: { ip?: string; port: number; service?: ServiceRef };
  filters: Array<{ name: string; config: Record<string, unknown> }>;
}

export interface Policies {
  l4: L4Policy[];
  l7: L7Policy[];
}
