// Reconnect delays: exponential with "full jitter" (a uniformly random delay between 0 and the
// exponential cap), which spreads a fleet of clients reconnecting to a restarted control plane.
// (AWS Architecture Blog, "Exponential Backoff And Jitter"; grpc-js backoff-timeout.ts jitters
// around the cap instead.)

export interface BackoffOptions {
  initialMs?: number;
  maxMs?: number;
  /** Injectable for deterministic tests; default Math.random. */
  random?: () => number;
}

export class Backoff {
  readonly initialMs: number;
  readonly maxMs: number;
  private readonly random: () => number;
  private attempt = 0;

  constructor(o: BackoffOptions = {}) {
    this.initialMs = Math.max(1, o.initialMs ?? 500);
    this.maxMs = Math.max(this.initialMs, o.maxMs ?? 30_000);
    this.random = o.random ?? Math.random;
  }

  /** The next delay; each call doubles the cap up to maxMs. */
  next(): number {
    const cap = Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return Math.floor(this.random() * cap);
  }

  reset(): void {
    this.attempt = 0;
  }

  get attempts(): number {
    return this.attempt;
  }
}
