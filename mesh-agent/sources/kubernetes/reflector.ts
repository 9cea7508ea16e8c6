// One collection mirrored from the API server: list, then watch from the list's resourceVersion,
// as client-go's Reflector does. We do not use client-node's ListWatch/makeInformer (0.22.3,
// dist/cache.js). Read in its source, and each seen against test/k8s-fake-apiserver.ts:
//  - it never sends allowWatchBookmarks (its watch query is resourceVersion + selectors), so
//    BOOKMARKs never come and a quiet collection's resourceVersion falls behind until the
//    server's history is compacted and every reconnect turns into a full re-list;
//  - on any error other than 410 (a dropped connection, a 500, a 403 while RBAC is being applied) it
//    calls the error callbacks and stops for good: no request follows, even once the cause is gone;
//  - after a watch ERROR event (410) it re-lists but leaves the old request's `done` armed: we saw
//    two lists and then two concurrent watches of the same collection;
//  - a re-list that fails inside its `done` handler is an unhandled promise rejection, which
//    ends a Node 20 process;
//  - a connection that silently stops delivering is never noticed (the socket timeout it sets
//    has no listener).
//
// Here: every event updates the store and the resourceVersion (BOOKMARKs only the latter); a watch
// the server ends is resumed from the last resourceVersion without listing; `410 Gone` (an HTTP
// 410 on the watch request, or a watch ERROR event whose Status has code 410) means our
// resourceVersion is older than the server's history, so we re-list, which replaces the store and
// thereby also drops objects deleted while we were not watching; any other failure is retried
// with jittered exponential backoff. Each watch is a "generation": callbacks of a watch we have
// already given up on are ignored.
import type { Logger } from '../../../core/log';
import { statusCodeOf, type KubeApi, type WatchEventType, type WatchHandle } from './kube-api';
import { objectKey, type KubeObject, type Status } from './objects';

export interface ReflectorOptions {
  /** For logs: `pods`, `namespaces`, ... */
  name: string;
  /** Collection path, e.g. `/api/v1/pods`. */
  path: string;
  fieldSelector?: string;
  labelSelector?: string;
  api: KubeApi;
  log: Logger;
  /** Called after the store changed (list replaced, object added/modified/deleted). */
  onChange: () => void;
  /** List page size (default 500). */
  pageSize?: number;
  /** Retry backoff after failures (default 500 ms doubling to 30 s, ±25% jitter). */
  backoff?: { initialMs: number; maxMs: number };
  /**
   * Server-side watch timeout, picked at random in [min, max] seconds for each watch (default
   * 300..600, as client-go does), so that watches of many agents do not all end together. A watch
   * that outlives it by 30 s has stalled and is abandoned.
   */
  watchTimeoutSeconds?: { min: number; max: number };
}

export interface ReflectorStats {
  resourceVersion: string;
  synced: boolean;
  lists: number;
  /** Re-lists caused by 410 Gone. */
  relistsGone: number;
  watches: number;
  events: number;
  bookmarks: number;
  lastError?: string;
}

export class Reflector<T extends KubeObject> {
  readonly store = new Map<string, T>();
  private rv = '';
  private gen = 0;
  private watchHandle?: WatchHandle;
  private watchdog?: NodeJS.Timeout;
  private retryTimer?: NodeJS.Timeout;
  private failures = 0;
  private stopped = false;
  private readonly stats: ReflectorStats = { resourceVersion: '', synced: false, lists: 0, relistsGone: 0, watches: 0, events: 0, bookmarks: 0 };
  private firstList?: { resolve: () => void; reject: (e: unknown) => void };

  constructor(private readonly o: ReflectorOptions) {}

  /**
   * Lists and starts watching. Resolves after the first successful list; rejects if that list
   * fails with 401/403 (credentials or RBAC: retrying will not help, and the caller should say so).
   * Other failures are retried.
   */
  start(): Promise<void> {
    this.stopped = false;
    return new Promise<void>((resolve, reject) => {
      this.firstList = { resolve, reject };
      void this.list();
    });
  }

  stop(): void {
    this.stopped = true;
    this.gen++;
    this.abortWatch();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  state(): ReflectorStats {
    return { ...this.stats, resourceVersion: this.rv };
  }

  get resourceVersion(): string {
    return this.rv;
  }

  private selectorQuery(): Record<string, string> {
    const q: Record<string, string> = {};
    if (this.o.fieldSelector) q.fieldSelector = this.o.fieldSelector;
    if (this.o.labelSelector) q.labelSelector = this.o.labelSelector;
    return q;
  }

  private async list(): Promise<void> {
    const gen = ++this.gen;
    this.abortWatch();
    const items: T[] = [];
    let rv = '';
    let cont: string | undefined;
    try {
      do {
        // No resourceVersion: a consistent read of the latest state (what a re-list after 410 needs).
        const q: Record<string, string> = { ...this.selectorQuery(), limit: String(this.o.pageSize ?? 500) };
        if (cont) q.continue = cont;
        let page;
        try {
          page = await this.o.api.list<T>(this.o.path, q);
        } catch (e) {
          // An expired continue token (410): start the list over.
          if (cont && statusCodeOf(e) === 410) {
            this.o.log.info('k8s: list continue token expired; listing again', { resource: this.o.name });
            items.length = 0;
            cont = undefined;
            continue;
          }
          throw e;
        }
        if (gen !== this.gen || this.stopped) return;
        items.push(...page.items);
        rv = page.resourceVersion;
        cont = page.continue;
      } while (cont);
    } catch (e) {
      if (gen !== this.gen || this.stopped) return;
      this.stats.lastError = String((e as Error)?.message ?? e);
      const code = statusCodeOf(e);
      if (this.firstList && (code === 401 || code === 403)) {
        const first = this.firstList;
        this.firstList = undefined;
        first.reject(e);
        return;
      }
      this.o.log.warn('k8s: list failed; retrying', { resource: this.o.name, error: this.stats.lastError, statusCode: code });
      this.retry(() => this.list());
      return;
    }
    if (gen !== this.gen || this.stopped) return;
    this.stats.lists++;
    this.store.clear();
    for (const it of items) this.store.set(objectKey(it), it);
    this.rv = rv;
    this.failures = 0;
    this.stats.synced = true;
    this.o.log.debug('k8s: listed', { resource: this.o.name, items: items.length, resourceVersion: rv });
    this.o.onChange();
    if (this.firstList) {
      const first = this.firstList;
      this.firstList = undefined;
      first.resolve();
    }
    void this.watch();
  }

  private async watch(): Promise<void> {
    const gen = ++this.gen;
    const t = this.o.watchTimeoutSeconds ?? { min: 300, max: 600 };
    const timeoutSeconds = Math.round(t.min + Math.random() * (t.max - t.min));
    const query = { ...this.selectorQuery(), resourceVersion: this.rv, allowWatchBookmarks: true, timeoutSeconds };
    const started = Date.now();
    let delivered = 0;
    this.stats.watches++;
    const onEvent = (type: WatchEventType, obj: unknown) => {
      if (gen !== this.gen || this.stopped) return;
      if (++delivered === 1) this.failures = 0;
      this.onEvent(type, obj);
    };
    const onDone = (err: unknown) => {
      if (gen !== this.gen || this.stopped) return;
      this.gen++;
      this.clearWatchdog();
      this.watchHandle = undefined;
      if (err && statusCodeOf(err) === 410) return this.gone('HTTP 410 on the watch request');
      if (err) {
        this.stats.lastError = String((err as Error)?.message ?? err);
        this.o.log.warn('k8s: watch failed; resuming', { resource: this.o.name, error: this.stats.lastError, resourceVersion: this.rv });
        return this.retry(() => this.watch());
      }
      // The server ended the watch (its timeout, an apiserver restart): resume from where we are.
      // Immediately, unless it keeps ending watches at once (then back off, not spin).
      if (delivered === 0 && Date.now() - started < 1000) return this.retry(() => this.watch());
      this.failures = 0;
      void this.watch();
    };
    try {
      const handle = await this.o.api.watch(this.o.path, query, onEvent, onDone);
      if (gen !== this.gen || this.stopped) {
        handle.abort();
        return;
      }
      this.watchHandle = handle;
      this.watchdog = setTimeout(() => {
        if (gen !== this.gen || this.stopped) return;
        this.o.log.warn('k8s: watch outlived its timeout; abandoning it', { resource: this.o.name, timeoutSeconds });
        this.abortWatch();
        onDone(null);
      }, (timeoutSeconds + 30) * 1000);
      this.watchdog.unref();
    } catch (e) {
      onDone(e);
    }
  }

  private onEvent(type: WatchEventType, obj: unknown): void {
    if (type === 'ERROR') {
      const st = (obj ?? {}) as Status;
      this.gen++; // this watch is over, whatever its connection does next
      this.abortWatch();
      if (st.code === 410) return this.gone(`watch ERROR event: ${st.reason ?? ''} ${st.message ?? ''}`.trim());
      this.stats.lastError = `watch ERROR event: ${st.code ?? '?'} ${st.message ?? ''}`;
      this.o.log.warn('k8s: watch ERROR event; resuming', { resource: this.o.name, code: st.code, reason: st.reason, message: st.message });
      return this.retry(() => this.watch());
    }
    const o = obj as T | undefined;
    const rv = o?.metadata?.resourceVersion;
    if (!o || typeof o !== 'object' || !o.metadata) {
      this.o.log.warn('k8s: watch event without an object; ignored', { resource: this.o.name, type });
      return;
    }
    this.stats.events++;
    switch (type) {
      case 'ADDED':
      case 'MODIFIED':
        this.store.set(objectKey(o), o);
        this.o.onChange();
        break;
      case 'DELETED':
        if (this.store.delete(objectKey(o))) this.o.onChange();
        break;
      case 'BOOKMARK':
        this.stats.bookmarks++;
        break;
      default:
        this.o.log.warn('k8s: unknown watch event type; ignored', { resource: this.o.name, type });
        return;
    }
    if (rv) this.rv = rv;
  }

  private gone(why: string): void {
    this.stats.relistsGone++;
    this.o.log.info('k8s: resourceVersion too old (410 Gone); listing again', { resource: this.o.name, resourceVersion: this.rv, why });
    this.rv = '';
    void this.list();
  }

  private retry(fn: () => void): void {
    const b = this.o.backoff ?? { initialMs: 500, maxMs: 30_000 };
    const base = Math.min(b.maxMs, b.initialMs * 2 ** Math.min(this.failures, 30));
    this.failures++;
    const delay = base * (0.75 + Math.random() * 0.5);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (!this.stopped) fn();
    }, delay);
  }

  private clearWatchdog(): void {
    if (this.watchdog) clearTimeout(this.watchdog);
    this.watchdog = undefined;
  }

  private abortWatch(): void {
    this.clearWatchdog();
    const h = this.watchHandle;
    this.watchHandle = undefined;
    try {
      h?.abort();
    } catch {
      // already closed
    }
  }
}
