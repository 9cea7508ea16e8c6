// The two API calls a reflector makes, over @kubernetes/client-node's KubeConfig (credentials:
// kubeconfig files, in-cluster service-account tokens re-read as they rotate, exec plugins):
//
//  - list: one page of a collection, as raw JSON, over node:http(s) with the options
//    KubeConfig.applyToHTTPSOptions gives. (Not the generated CoreV1Api: its ObjectSerializer turns
//    objects into classes — Dates, `_continue` — so list and watch objects would differ in shape.)
//  - watch: client-node's Watch (newline-delimited JSON events over a long GET). Its behaviour we
//    rely on, read in node_modules/@kubernetes/client-node/dist/watch.js (0.22.3): every event,
//    BOOKMARK and ERROR included, reaches the callback with the decoded object; a non-200 response
//    calls `done` with an Error carrying `statusCode` (so an HTTP 410 on a too-old resourceVersion
//    is visible); the server ending the stream calls `done(null)`; `done` is called at most once.
//    What it does not do — and the reflector therefore does — is ask for bookmarks, stop after an
//    ERROR event, notice a stalled connection, or retry.
import * as http from 'node:http';
import * as https from 'node:https';
import { Watch, type KubeConfigLike, type WatchLike } from './client-node';
import { KubernetesSourceError } from '../../../core/errors';
import type { KubeObject, Status } from './objects';

export interface ListPage<T> {
  items: T[];
  resourceVersion: string;
  /** The `continue` token of a paginated list; absent on the last page. */
  continue?: string;
}

export interface WatchHandle {
  abort(): void;
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

/** What a reflector needs from the API server; tests may substitute it, but ours use a real HTTP server. */
export interface KubeApi {
  list<T extends KubeObject>(path: string, query: Record<string, string>): Promise<ListPage<T>>;
  watch(
    path: string,
    query: Record<string, string | number | boolean>,
    onEvent: (type: WatchEventType, obj: unknown) => void,
    onDone: (err: unknown) => void,
  ): Promise<WatchHandle>;
}

/** An HTTP failure, with the Status body when the server sent one. */
export function apiError(path: string, statusCode: number | undefined, status: Status | undefined, cause?: unknown): KubernetesSourceError {
  const code = statusCode === 401 ? 'SM_K8S_UNAUTHORIZED' : statusCode === 403 ? 'SM_K8S_FORBIDDEN' : 'SM_K8S_HTTP';
  const what = statusCode ? `HTTP ${statusCode}` : 'request failed';
  const msg = status?.message ?? (cause instanceof Error ? cause.message : '');
  return new KubernetesSourceError(code, `GET ${path}: ${what}${msg ? `: ${msg}` : ''}`, {
    cause,
    details: { path, statusCode, reason: status?.reason },
  });
}

export function statusCodeOf(err: unknown): number | undefined {
  if (!err || typeof err !== 'object') return undefined;
  const e = err as { statusCode?: unknown; details?: { statusCode?: unknown }; code?: unknown };
  if (typeof e.statusCode === 'number') return e.statusCode;
  if (typeof e.details?.statusCode === 'number') return e.details.statusCode;
  if (typeof e.code === 'number') return e.code; // a metav1.Status
  return undefined;
}

const MAX_LIST_BYTES = 512 * 1024 * 1024;

export class ClientNodeApi implements KubeApi {
  private readonly watcher: WatchLike;

  constructor(
    private readonly kc: KubeConfigLike,
    private readonly requestTimeoutMs = 60_000,
  ) {
    this.watcher = new Watch(kc);
  }

  private server(): string {
    const cluster = this.kc.getCurrentCluster();
    if (!cluster) throw new KubernetesSourceError('SM_K8S_OPTIONS', 'kubeconfig has no current cluster');
    return cluster.server.replace(/\/+$/, '');
  }

  async list<T extends KubeObject>(path: string, query: Record<string, string>): Promise<ListPage<T>> {
    const url = new URL(this.server() + path);
    for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
    const opts: https.RequestOptions = { method: 'GET', headers: { Accept: 'application/json' } };
    await this.kc.applyToHTTPSOptions(opts);
    const mod = url.protocol === 'https:' ? https : http;
    const body = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = mod.request(url, opts, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_LIST_BYTES) req.destroy(new Error(`response larger than ${MAX_LIST_BYTES} bytes`));
          else chunks.push(c);
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      });
      req.setTimeout(this.requestTimeoutMs, () => req.destroy(new Error(`no response in ${this.requestTimeoutMs} ms`)));
      req.on('error', (e) => reject(apiError(path, undefined, undefined, e)));
      req.end();
    });
    let json: unknown;
    try {
      json = JSON.parse(body.text);
    } catch (e) {
      if (body.status !== 200) throw apiError(path, body.status, undefined);
      throw apiError(path, body.status, undefined, new Error(`response is not JSON: ${String(e)}`));
    }
    if (body.status !== 200) throw apiError(path, body.status, json as Status);
    const list = json as { items?: T[] | null; metadata?: { resourceVersion?: string; continue?: string } };
    return {
      items: list.items ?? [],
      resourceVersion: list.metadata?.resourceVersion ?? '',
      ...(list.metadata?.continue ? { continue: list.metadata.continue } : {}),
    };
  }

  async watch(
    path: string,
    query: Record<string, string | number | boolean>,
    onEvent: (type: WatchEventType, obj: unknown) => void,
    onDone: (err: unknown) => void,
  ): Promise<WatchHandle> {
    // Watch mutates its query object (adds watch=true); give it a copy.
    const req = (await this.watcher.watch(path, { ...query }, (type, obj) => onEvent(type as WatchEventType, obj), onDone)) as {
      abort(): void;
      removeAllListeners?(ev: string): void;
      on?(ev: string, cb: () => void): void;
    };
    return {
      abort() {
        // Errors after our own abort are of no interest (and must not be unhandled).
        req.on?.('error', () => {});
        req.abort();
      },
    };
  }
}
