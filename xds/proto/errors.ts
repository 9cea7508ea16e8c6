// Errors of the xDS layer, with stable codes (operators grep them, tests assert on them), in the
// manner of mesh-agent/errors.ts. Kept here rather than in mesh-agent/errors.ts so the xDS layer
// does not widen the agent's ErrorCode union.

export type XdsErrorCode =
  | 'SM_XDS_PROTO_LOAD' // the .proto files could not be found or parsed
  | 'SM_XDS_UNKNOWN_TYPE' // a message type the Root does not know
  | 'SM_XDS_DECODE' // protobuf bytes that do not decode as the named type
  | 'SM_XDS_JSON' // proto3 JSON that does not fit the named type
  | 'SM_XDS_INVALID_RESOURCE' // a resource failed structural or caller validation
  | 'SM_XDS_CONFIG' // control-plane config problems (the `xds:` list, listen address)
  | 'SM_XDS_CLOSED'; // the client or server was closed

export class XdsError extends Error {
  readonly code: XdsErrorCode;
  /** Where in a JSON document or message the problem is, e.g. `filterChains[0].filters[1].typedConfig`. */
  readonly path?: string;
  constructor(code: XdsErrorCode, message: string, opts: { cause?: unknown; path?: string } = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = 'XdsError';
    this.code = code;
    if (opts.path !== undefined) this.path = opts.path;
  }
}

export function isXdsError(e: unknown): e is XdsError {
  return e instanceof XdsError;
}
