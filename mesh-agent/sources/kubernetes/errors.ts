// Errors of the Kubernetes source, with stable codes in the manner of ../../errors.ts (whose
// ErrorCode union is closed; these codes are proposed for it — see README.md).

export type KubernetesErrorCode =
  | 'SM_K8S_OPTIONS' // an option (an enrollment label, the node name) is malformed
  | 'SM_K8S_UNAUTHORIZED' // the API server rejected our credentials (401)
  | 'SM_K8S_FORBIDDEN' // RBAC does not allow a list/watch we need (403); README.md lists the rules
  | 'SM_K8S_HTTP' // any other failed API request (see statusCode / cause)
  | 'SM_K8S_SYNC_TIMEOUT'; // the initial lists did not all succeed in time

export class KubernetesSourceError extends Error {
  readonly code: KubernetesErrorCode;
  readonly details: Record<string, unknown>;
  constructor(code: KubernetesErrorCode, message: string, opts: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = 'KubernetesSourceError';
    this.code = code;
    this.details = opts.details ?? {};
  }
}
