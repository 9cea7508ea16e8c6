// One error hierarchy for every part, in the manner of undici's UndiciError: one base class with a
// stable `code` (operators grep codes, tests assert on them, the agent's logs and metrics carry
// them), a message that says what to do, and the underlying `cause`. Each family of codes has its
// own subclass, so `instanceof` tells the part a failure comes from:
//
//   SockmeshError                the base: `e instanceof SockmeshError` holds for all of them
//   ├─ DatapathError             SM_MAP_FULL, SM_MAP_MISMATCH, SM_KERNEL, ... (the agent's kernel work)
//   ├─ UsageError                SM_USAGE (a bad command line or option value)
//   ├─ XdsError                  SM_XDS_* (protos, decoding, the control plane, NACKs)
//   ├─ ProxyError                SM_PROXY_* (the node's L7 proxy)
//   ├─ KubernetesSourceError     SM_K8S_* (the Kubernetes source)
//   ├─ ConfigError               SM_CONFIG_INVALID (config/errors.ts: carries every issue found)
//   ├─ RbacConfigError           SM_RBAC_INVALID (proxy/rbac/errors.ts: carries every issue found)
//   └─ BpfError                  errno names and SM_VERIFIER (native/index.ts: libbpf failures)
//
// The codes are part of the interface: never rename one; add a new code for a new meaning.

export type DatapathErrorCode =
  | 'SM_MAP_FULL' // a kernel map has no room for a change; nothing of that change was written
  | 'SM_MAP_MISMATCH' // a pinned map differs from what this build expects
  | 'SM_ROOT_CGROUP' // refusing to attach to the machine's root cgroup
  | 'SM_NOT_CGROUP2' // attach path is not a cgroup v2 directory
  | 'SM_LINK_FOREIGN' // a pinned link belongs to another cgroup
  | 'SM_NOT_INSTALLED' // no datapath pinned at the given bpffs directory
  | 'SM_AGENT_RUNNING' // another agent already manages this datapath
  | 'SM_KERNEL_FEATURE' // the running kernel lacks a feature the datapath cannot do without (named)
  | 'SM_VERIFIER' // the kernel's verifier rejected one of our programs (named, with the log's tail)
  | 'SM_KERNEL'; // a kernel operation failed (see cause)

export type UsageErrorCode = 'SM_USAGE'; // bad command line or option value

export type XdsErrorCode =
  | 'SM_XDS_PROTO_LOAD' // the .proto files could not be found or parsed
  | 'SM_XDS_UNKNOWN_TYPE' // a message type the Root does not know
  | 'SM_XDS_DECODE' // protobuf bytes that do not decode as the named type
  | 'SM_XDS_JSON' // proto3 JSON that does not fit the named type
  | 'SM_XDS_INVALID_RESOURCE' // a resource failed structural or caller validation
  | 'SM_XDS_NACK' // the agent refused (NACKed) a response; the last good config stays in force
  | 'SM_XDS_CONFIG' // control-plane config problems (the `xds:` list, listen address)
  | 'SM_XDS_CLOSED'; // the client or server was closed

export type ProxyErrorCode =
  | 'SM_PROXY_POLICY_KEY' // a key of setPolicies() is not "ip:port", "[ipv6]:port" or ":port"
  | 'SM_PROXY_CLOSED' // listen() after close()
  | 'SM_PROXY_CONNECT_TIMEOUT' // no TCP connection to the original destination within upstreamConnectMs
  | 'SM_PROXY_HEADERS_TIMEOUT' // no upstream response head within upstreamResponseHeadersMs
  | 'SM_PROXY_IDLE_TIMEOUT' // upstream silent for upstreamIdleMs
  | 'SM_PROXY_UPSTREAM_RESET' // the upstream reset the HTTP/2 stream or closed the session
  | 'SM_PROXY_UPSTREAM_OVERFLOW'; // maxPendingPerUpstream requests already wait for a connection

export type KubernetesErrorCode =
  | 'SM_K8S_OPTIONS' // an option (an enrollment label, the node name) is malformed
  | 'SM_K8S_UNAUTHORIZED' // the API server rejected our credentials (401)
  | 'SM_K8S_FORBIDDEN' // RBAC does not allow a list/watch we need (403); its README lists the rules
  | 'SM_K8S_HTTP' // any other failed API request (see statusCode / cause)
  | 'SM_K8S_SYNC_TIMEOUT'; // the initial lists did not all succeed in time

export type ConfigErrorCode = 'SM_CONFIG_INVALID'; // a config file has problems (every one is listed)
export type RbacErrorCode = 'SM_RBAC_INVALID'; // an RBAC filter config the evaluator refuses to run

/** Every code a SockmeshError may carry (BpfError adds the kernel's errno names). */
export type ErrorCode =
  | DatapathErrorCode
  | UsageErrorCode
  | XdsErrorCode
  | ProxyErrorCode
  | KubernetesErrorCode
  | ConfigErrorCode
  | RbacErrorCode;

export interface ErrorOptions {
  cause?: unknown;
  /** Structured facts for logs (the map, the sizes, the resource): never needed to read the message. */
  details?: Record<string, unknown>;
}

export class SockmeshError<C extends string = ErrorCode> extends Error {
  readonly code: C;
  readonly details: Record<string, unknown>;
  constructor(code: C, message: string, opts: ErrorOptions = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = new.target.name;
    this.code = code;
    this.details = opts.details ?? {};
  }
}

/** The agent's kernel work: loading, attaching, adopting, writing maps. */
export class DatapathError extends SockmeshError<DatapathErrorCode> {}

/** A command line or an option value that cannot be used; the message says which and why. */
export class UsageError extends SockmeshError<UsageErrorCode> {
  constructor(message: string, opts: ErrorOptions = {}) {
    super('SM_USAGE', message, opts);
  }
}

/** The xDS layer: protos, decoding, validation, the client and the control plane. */
export class XdsError extends SockmeshError<XdsErrorCode> {
  /** Where in a JSON document or message the problem is, e.g. `filterChains[0].filters[1].typedConfig`. */
  readonly path?: string;
  constructor(code: XdsErrorCode, message: string, opts: ErrorOptions & { path?: string } = {}) {
    super(code, message, opts);
    if (opts.path !== undefined) this.path = opts.path;
  }
}

/** The node's L7 proxy. */
export class ProxyError extends SockmeshError<ProxyErrorCode> {}

/** The Kubernetes source. */
export class KubernetesSourceError extends SockmeshError<KubernetesErrorCode> {}

export function isSockmeshError(e: unknown): e is SockmeshError<string> {
  return e instanceof SockmeshError;
}

export function isXdsError(e: unknown): e is XdsError {
  return e instanceof XdsError;
}
