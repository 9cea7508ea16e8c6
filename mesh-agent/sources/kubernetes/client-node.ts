// @kubernetes/client-node, typed by what we use of it. Its own .d.ts files import the types of
// `request`, `ws` and `js-yaml`, which are not installed (no @types/request, @types/ws,
// @types/js-yaml) and the repo compiles without skipLibCheck, so `import ... from
// '@kubernetes/client-node'` would break the build. A real KubeConfig satisfies these interfaces
// structurally, so callers may pass one. (Proposed: add those @types or skipLibCheck, then import
// the library's own types here.)

export interface ClusterLike {
  name?: string;
  server: string;
  skipTLSVerify?: boolean;
}

/** The part of client-node's KubeConfig (dist/config.d.ts, 0.22.3) this source uses. */
export interface KubeConfigLike {
  loadFromDefault(): void;
  loadFromOptions(options: {
    clusters: ClusterLike[];
    users: Array<{ name: string; token?: string }>;
    contexts: Array<{ name: string; cluster: string; user: string }>;
    currentContext: string;
  }): void;
  getCurrentCluster(): ClusterLike | null;
  /** Fills ca/cert/key/rejectUnauthorized and the Authorization header (tokens re-read as they rotate). */
  applyToHTTPSOptions(opts: object): Promise<void>;
}

/** client-node's Watch (dist/watch.d.ts); the resolved value is the `request` object, which can be aborted. */
export interface WatchLike {
  watch(path: string, queryParams: Record<string, unknown>, callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void, done: (err: unknown) => void): Promise<unknown>;
}

// eslint-disable-next-line @typescript-eslint/no-require-imports
const lib = require('@kubernetes/client-node') as {
  KubeConfig: new () => KubeConfigLike;
  Watch: new (kc: KubeConfigLike) => WatchLike;
};

export const KubeConfig = lib.KubeConfig;
export const Watch = lib.Watch;

/** A KubeConfig for `server` with no credentials (tests, or an API server proxy on localhost). */
export function kubeConfigFor(server: string): KubeConfigLike {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'cluster', server, skipTLSVerify: false }],
    users: [{ name: 'user' }],
    contexts: [{ name: 'context', cluster: 'cluster', user: 'user' }],
    currentContext: 'context',
  });
  return kc;
}
