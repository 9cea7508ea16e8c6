// The contract between the parts of the per-node L7 proxy: the RBAC evaluator (proxy/rbac), the
// HTTP server (proxy/server) and the datapath, which tells the proxy where a connection was going
// and who opened it (never the request itself).

/** What an RBAC filter may look at for one HTTP request (Envoy's view of it). */
export interface RequestAttributes {
  /** Request method, upper case. */
  method: string;
  /** The request target's path including the query (what Envoy's `:path` holds). */
  path: string;
  /**
   * Header names lower-cased; repeated headers joined with "," as Envoy does for matching.
   * Includes the pseudo-headers `:method`, `:path`, `:authority` (from Host for HTTP/1.1), `:scheme`.
   */
  headers: Record<string, string>;
  /** Downstream connection: the client's address as the kernel saw it. */
  sourceIp: string;
  sourcePort: number;
  /** Envoy's direct_remote_ip (the peer of the connection) and remote_ip (after XFF trust; same here). */
  directRemoteIp: string;
  remoteIp: string;
  /** Where the client was connecting: the original destination recorded by the kernel. */
  destinationIp: string;
  destinationPort: number;
  /** SPIFFE id of the client's workload (spiffe://TD/ns/NS/sa/SA) as the kernel knows it; absent if unknown. */
  principal?: string;
  /** TLS SNI; absent for plaintext. */
  requestedServerName?: string;
}

/** One RBAC filter as delivered (xDS / fixtures): `name` + the filter's typed config in proto3 JSON. */
export interface RbacFilterConfig {
  name: string;
  /** envoy.extensions.filters.http.rbac.v3.RBAC (with `@type`) */
  config: Record<string, unknown>;
}

export interface DryRunResult {
  filter: string;
  /** The shadow policy that matched, if any. */
  policy?: string;
  /** The shadow rules' action and what it would have decided. */
  action: 'ALLOW' | 'DENY' | 'LOG';
  wouldAllow: boolean;
}

export interface Decision {
  allow: boolean;
  /** The filter and policy that decided (for DENY: the matching policy; for an ALLOW filter with no match: none). */
  filter?: string;
  policy?: string;
  /** Why, in a few words (e.g. "matched DENY policy", "no ALLOW policy matched"). */
  reason: string;
  dryRun: DryRunResult[];
  /** Matchers that could not be evaluated (they failed closed), e.g. "metadata (no JWT filter)". */
  unsupported: string[];
  /** LOG action policies that matched (Envoy sets access-log metadata; we report them). */
  logged: string[];
}

export interface Evaluator {
  evaluate(req: RequestAttributes): Decision;
}

/** The kernel's record of a steered connection, looked up by the client's address as the proxy sees it. */
export interface ConnectionOrigin {
  destinationIp: string;
  destinationPort: number;
  /** SPIFFE id of the client's workload, if the datapath knows it. */
  principal?: string;
}
