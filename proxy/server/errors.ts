// Errors with stable codes, in the manner of mesh-agent/errors.ts (kept separate so that proxy/
// does not depend on the agent).
export type ProxyErrorCode =
  | 'SM_PROXY_POLICY_KEY' // a key of setPolicies() is not "ip:port", "[ipv6]:port" or ":port"
  | 'SM_PROXY_CLOSED' // listen() after close()
  | 'SM_PROXY_CONNECT_TIMEOUT' // no TCP connection to the original destination within upstreamConnectMs
  | 'SM_PROXY_HEADERS_TIMEOUT' // no upstream response head within upstreamResponseHeadersMs
  | 'SM_PROXY_IDLE_TIMEOUT' // upstream silent for upstreamIdleMs
  | 'SM_PROXY_UPSTREAM_RESET' // the upstream reset the HTTP/2 stream or closed the session
  | 'SM_PROXY_UPSTREAM_OVERFLOW'; // maxPendingPerUpstream requests already wait for a connection

export class ProxyError extends Error {
  readonly code: ProxyErrorCode;
  constructor(code: ProxyErrorCode, message: string, opts: { cause?: unknown } = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = 'ProxyError';
    this.code = code;
  }
}
