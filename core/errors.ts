// Errors with stable codes (operators grep them, tests assert on them), in the manner of undici's
// UndiciError: a code, a message that says what to do, and the underlying cause.

export type ErrorCode =
  | 'SM_MAP_FULL' // a kernel map has no room for a change; nothing of that change was written
  | 'SM_MAP_MISMATCH' // a pinned map differs from what this build expects
  | 'SM_ROOT_CGROUP' // refusing to attach to the machine's root cgroup
  | 'SM_NOT_CGROUP2' // attach path is not a cgroup v2 directory
  | 'SM_LINK_FOREIGN' // a pinned link belongs to another cgroup
  | 'SM_NOT_INSTALLED' // no datapath pinned at the given bpffs directory
  | 'SM_AGENT_RUNNING' // another agent already manages this datapath
  | 'SM_KERNEL' // a kernel operation failed (see cause)
  | 'SM_USAGE'; // bad command line

export class SockmeshError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;
  constructor(code: ErrorCode, message: string, opts: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = 'SockmeshError';
    this.code = code;
    this.details = opts.details ?? {};
  }
}
