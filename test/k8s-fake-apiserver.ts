// A fake kube-apiserver for the Kubernetes source's tests: plain HTTP on 127.0.0.1, speaking the
// shapes of the real one for the four collections the source reads. No kube-apiserver runs on
// this machine; what this mimics, and from where:
//
//  - list (GET <collection>): `{kind: PodList, apiVersion, metadata: {resourceVersion, continue?},
//    items}`; items carry no kind/apiVersion, as the real server's JSON lists; `limit`/`continue`
//    paginate over a snapshot taken at the first page, as etcd-backed lists do; `fieldSelector`
//    (`a.b=v`, `a.b!=v`) and `labelSelector` (`k`, `!k`, `k=v`, `k==v`, `k!=v`, comma = and).
//  - watch (`?watch=true|1&resourceVersion=N&allowWatchBookmarks=true&timeoutSeconds=S`): a
//    200 response streaming newline-delimited `{type, object}` events — first those of history
//    after N, then live ones; ADDED/MODIFIED/DELETED computed against the selectors as the real
//    server does (an object that starts/stops matching is ADDED/DELETED); BOOKMARK objects carry
//    only kind, apiVersion and metadata.resourceVersion, and only when asked for.
//  - resourceVersions: one counter across all collections (etcd's revision); history older than
//    a compaction is gone: a watch from before it gets 410 — as an HTTP 410 with a Status body, or
//    as a 200 followed by an ERROR event whose object is `{kind: Status, code: 410, reason:
//    Expired}` and the end of the stream (the real server does the latter for most watches).
//
// Test hooks: create/update/remove (optionally without delivering the event to open watches, to
// make a gap), bookmark, closeWatches, expireWatches (ERROR 410 on open watches), compact,
// forbid (403 for a collection), failNext (an error status for the next lists or watches), and a
// log of every request with its query.
import * as http from 'node:http';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';

export type ResourceName = 'namespaces' | 'pods' | 'services' | 'endpointslices';

const RESOURCES: Record<ResourceName, { path: string; kind: string; apiVersion: string }> = {
  namespaces: { path: '/api/v1/namespaces', kind: 'Namespace', apiVersion: 'v1' },
  pods: { path: '/api/v1/pods', kind: 'Pod', apiVersion: 'v1' },
  services: { path: '/api/v1/services', kind: 'Service', apiVersion: 'v1' },
  endpointslices: { path: '/apis/discovery.k8s.io/v1/endpointslices', kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1' },
};

type Obj = { metadata: { name: string; namespace?: string; resourceVersion?: string; uid?: string; labels?: Record<string, string> } } & Record<string, unknown>;

export interface RecordedRequest {
  seq: number;
  resource: ResourceName | undefined;
  path: string;
  watch: boolean;
  query: Record<string, string>;
  /** HTTP status answered (200 for a watch that then sent an ERROR event). */
  status: number;
}

interface HistoryEvent {
  rv: number;
  resource: ResourceName;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: Obj;
  old?: Obj;
}

interface OpenWatch {
  resource: ResourceName;
  res: http.ServerResponse;
  match: (o: Obj) => boolean;
  bookmarks: boolean;
  timer?: NodeJS.Timeout;
}

const clone = <T>(o: T): T => JSON.parse(JSON.stringify(o)) as T;
const keyOf = (o: Obj) => (o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name);

function fieldValue(o: unknown, dotted: string): string {
  let cur: unknown = o;
  for (const part of dotted.split('.')) cur = cur && typeof cur === 'object' ? (cur as Record<string, unknown>)[part] : undefined;
  return cur === undefined || cur === null ? '' : String(cur);
}

function fieldMatcher(sel: string | undefined): (o: Obj) => boolean {
  if (!sel) return () => true;
  const terms = sel.split(',').map((t) => {
    const ne = t.indexOf('!=');
    if (ne >= 0) return { f: t.slice(0, ne), v: t.slice(ne + 2), neg: true };
    const [f, v] = t.includes('==') ? t.split('==') : t.split('=');
    return { f, v, neg: false };
  });
  return (o) => terms.every((t) => (fieldValue(o, t.f) === t.v) !== t.neg);
}

function labelMatcher(sel: string | undefined): (o: Obj) => boolean {
  if (!sel) return () => true;
  const terms = sel.split(',').map((t) => t.trim());
  return (o) => {
    const l = o.metadata.labels ?? {};
    return terms.every((t) => {
      if (t.startsWith('!')) return !(t.slice(1) in l);
      const ne = t.indexOf('!=');
      if (ne >= 0) return l[t.slice(0, ne)] !== t.slice(ne + 2);
      const eq = t.indexOf('=');
      if (eq < 0) return t in l;
      const k = t.slice(0, eq);
      const v = t.slice(t[eq + 1] === '=' ? eq + 2 : eq + 1);
      return l[k] === v;
    });
  };
}

function status(code: number, reason: string, message: string) {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

export class FakeApiServer {
  private readonly server = http.createServer((req, res) => this.handle(req, res));
  private rv = 1000;
  private compactedRv = 0;
  private readonly objects: Record<ResourceName, Map<string, Obj>> = { namespaces: new Map(), pods: new Map(), services: new Map(), endpointslices: new Map() };
  private history: HistoryEvent[] = [];
  private readonly open = new Set<OpenWatch>();
  private readonly snapshots = new Map<string, { rv: number; items: Obj[] }>();
  private readonly forbidden = new Set<ResourceName>();
  private readonly failures: Array<{ resource: ResourceName; watch: boolean; count: number; code: number }> = [];
  private readonly waiters: Array<{ pred: (r: RecordedRequest) => boolean; from: number; resolve: (r: RecordedRequest) => void }> = [];
  readonly requests: RecordedRequest[] = [];
  /** How a watch from a compacted resourceVersion is refused. */
  goneMode: 'http' | 'event' = 'http';
  port = 0;

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async close(): Promise<void> {
    for (const w of this.open) this.endWatch(w);
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  get resourceVersion(): string {
    return String(this.rv);
  }

  // ---- state changes ---------------------------------------------------------------------------

  /** Adds an object (deep-copied; uid and resourceVersion filled in). Returns what was stored. */
  create(resource: ResourceName, obj: object, opts: { deliver?: boolean } = {}): Obj {
    const o = clone(obj) as Obj;
    o.metadata.uid ??= randomUUID();
    const k = keyOf(o);
    if (this.objects[resource].has(k)) throw new Error(`fake apiserver: ${resource} ${k} already exists`);
    o.metadata.resourceVersion = String(++this.rv);
    this.objects[resource].set(k, o);
    this.record({ rv: this.rv, resource, type: 'ADDED', object: clone(o) }, opts.deliver ?? true);
    return o;
  }

  /** Changes an object in place through `fn` (given a copy) and stores the result. */
  update(resource: ResourceName, key: string, fn: (o: Obj) => void, opts: { deliver?: boolean } = {}): Obj {
    const old = this.objects[resource].get(key);
    if (!old) throw new Error(`fake apiserver: ${resource} ${key} not found`);
    const o = clone(old);
    fn(o);
    o.metadata.resourceVersion = String(++this.rv);
    this.objects[resource].set(key, o);
    this.record({ rv: this.rv, resource, type: 'MODIFIED', object: clone(o), old: clone(old) }, opts.deliver ?? true);
    return o;
  }

  remove(resource: ResourceName, key: string, opts: { deliver?: boolean } = {}): void {
    const old = this.objects[resource].get(key);
    if (!old) throw new Error(`fake apiserver: ${resource} ${key} not found`);
    this.objects[resource].delete(key);
    const o = clone(old);
    o.metadata.resourceVersion = String(++this.rv);
    this.record({ rv: this.rv, resource, type: 'DELETED', object: o }, opts.deliver ?? true);
  }

  /** Forgets history: watches from a resourceVersion older than now get 410 Gone. */
  compact(): void {
    this.compactedRv = this.rv;
    this.history = [];
  }

  /** 403 for lists and watches of this collection (RBAC without the rule). */
  forbid(resource: ResourceName, on = true): void {
    if (on) this.forbidden.add(resource);
    else this.forbidden.delete(resource);
  }

  /** Answers the next `count` lists (or watches) of `resource` with HTTP `code` and a Status body. */
  failNext(resource: ResourceName, opts: { watch?: boolean; count?: number; code?: number } = {}): void {
    this.failures.push({ resource, watch: opts.watch ?? false, count: opts.count ?? 1, code: opts.code ?? 500 });
  }

  /** Sends a BOOKMARK at the current resourceVersion to open watches (that asked for bookmarks). */
  bookmark(resource?: ResourceName): string {
    for (const w of this.open) {
      if (resource && w.resource !== resource) continue;
      if (!w.bookmarks) continue;
      const { kind, apiVersion } = RESOURCES[w.resource];
      this.send(w, { type: 'BOOKMARK', object: { kind, apiVersion, metadata: { resourceVersion: String(this.rv) } } });
    }
    return String(this.rv);
  }

  /** Ends open watches, as the server does at their timeout or when it restarts. */
  closeWatches(resource?: ResourceName, opts: { destroy?: boolean } = {}): number {
    let n = 0;
    for (const w of [...this.open]) {
      if (resource && w.resource !== resource) continue;
      n++;
      if (opts.destroy) {
        this.open.delete(w);
        clearTimeout(w.timer);
        w.res.socket?.destroy();
      } else this.endWatch(w);
    }
    return n;
  }

  /** Sends an ERROR event (410 Expired) on open watches and ends them. */
  expireWatches(resource?: ResourceName): number {
    let n = 0;
    for (const w of [...this.open]) {
      if (resource && w.resource !== resource) continue;
      n++;
      this.send(w, { type: 'ERROR', object: status(410, 'Expired', `too old resource version: ${this.compactedRv - 1} (${this.compactedRv})`) });
      this.endWatch(w);
    }
    return n;
  }

  openWatches(resource?: ResourceName): number {
    return [...this.open].filter((w) => !resource || w.resource === resource).length;
  }

  /** Resolves with the first request (from now on, or from index `from` of the log) matching `pred`. */
  waitForRequest(pred: (r: RecordedRequest) => boolean, opts: { from?: number; timeoutMs?: number } = {}): Promise<RecordedRequest> {
    const from = opts.from ?? this.requests.length;
    const found = this.requests.slice(from).find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const w = { pred, from, resolve };
      this.waiters.push(w);
      const t = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error('fake apiserver: no matching request in time'));
      }, opts.timeoutMs ?? 5000);
      w.resolve = (r) => {
        clearTimeout(t);
        resolve(r);
      };
    });
  }

  // ---- internals -------------------------------------------------------------------------------

  private record(ev: HistoryEvent, deliver: boolean): void {
    this.history.push(ev);
    if (!deliver) return;
    for (const w of this.open) if (w.resource === ev.resource) this.deliver(w, ev);
  }

  /** Sends `ev` as the watch's selectors make it look (or not at all). */
  private deliver(w: OpenWatch, ev: HistoryEvent): void {
    const { kind, apiVersion } = RESOURCES[ev.resource];
    const object = { kind, apiVersion, ...ev.object };
    const now = w.match(ev.object);
    if (ev.type === 'MODIFIED') {
      const before = ev.old ? w.match(ev.old) : now;
      if (before && now) this.send(w, { type: 'MODIFIED', object });
      else if (!before && now) this.send(w, { type: 'ADDED', object });
      else if (before && !now) this.send(w, { type: 'DELETED', object });
    } else if (now) this.send(w, { type: ev.type, object });
  }

  private send(w: OpenWatch, ev: unknown): void {
    if (!w.res.writableEnded) w.res.write(JSON.stringify(ev) + '\n');
  }

  private endWatch(w: OpenWatch): void {
    this.open.delete(w);
    clearTimeout(w.timer);
    if (!w.res.writableEnded) w.res.end();
  }

  private logRequest(r: Omit<RecordedRequest, 'seq'>): RecordedRequest {
    const rec = { seq: this.requests.length, ...r };
    this.requests.push(rec);
    for (const w of [...this.waiters]) {
      if (this.requests.length - 1 >= w.from && w.pred(rec)) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve(rec);
      }
    }
    return rec;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const query = Object.fromEntries(url.searchParams);
    const resource = (Object.keys(RESOURCES) as ResourceName[]).find((r) => RESOURCES[r].path === url.pathname);
    const watch = query.watch === 'true' || query.watch === '1';
    const answer = (code: number, body: unknown) => {
      this.logRequest({ resource, path: url.pathname, watch, query, status: code });
      res.writeHead(code, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.method !== 'GET') return answer(405, status(405, 'MethodNotAllowed', `${req.method} is not supported here`));
    if (!resource) return answer(404, status(404, 'NotFound', `the server could not find the requested resource (${url.pathname})`));
    if (this.forbidden.has(resource)) {
      return answer(403, status(403, 'Forbidden', `${resource} is forbidden: User "system:serviceaccount:sockmesh:agent" cannot ${watch ? 'watch' : 'list'} resource "${resource}" at the cluster scope`));
    }
    const failure = this.failures.find((f) => f.resource === resource && f.watch === watch && f.count > 0);
    if (failure) {
      failure.count--;
      return answer(failure.code, status(failure.code, 'InternalError', 'etcdserver: leader changed'));
    }
    const match = ((f, l) => (o: Obj) => f(o) && l(o))(fieldMatcher(query.fieldSelector), labelMatcher(query.labelSelector));
    const { kind, apiVersion } = RESOURCES[resource];
    if (!watch) return this.list(resource, query, match, answer);

    const fromRv = query.resourceVersion ? Number(query.resourceVersion) : 0;
    if (fromRv > 0 && fromRv < this.compactedRv) {
      const st = status(410, 'Expired', `too old resource version: ${fromRv} (${this.compactedRv})`);
      if (this.goneMode === 'http') return answer(410, st);
      this.logRequest({ resource, path: url.pathname, watch, query, status: 200 });
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ type: 'ERROR', object: st }) + '\n');
      return;
    }
    this.logRequest({ resource, path: url.pathname, watch, query, status: 200 });
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    res.flushHeaders();
    const w: OpenWatch = { resource, res, match, bookmarks: query.allowWatchBookmarks === 'true' || query.allowWatchBookmarks === '1' };
    this.open.add(w);
    res.on('close', () => {
      this.open.delete(w);
      clearTimeout(w.timer);
    });
    if (query.timeoutSeconds) w.timer = setTimeout(() => this.endWatch(w), Number(query.timeoutSeconds) * 1000);
    if (fromRv === 0) {
      // "Any" resourceVersion: the current state as synthetic ADDED events, then changes.
      for (const o of this.objects[resource].values()) if (match(o)) this.send(w, { type: 'ADDED', object: { kind, apiVersion, ...clone(o) } });
    } else {
      for (const ev of this.history) if (ev.resource === resource && ev.rv > fromRv) this.deliver(w, ev);
    }
  }

  private list(resource: ResourceName, query: Record<string, string>, match: (o: Obj) => boolean, answer: (code: number, body: unknown) => void): void {
    const { kind, apiVersion } = RESOURCES[resource];
    let snap: { rv: number; items: Obj[] };
    let offset = 0;
    if (query.continue) {
      const [id, off] = query.continue.split(':');
      const s = this.snapshots.get(id);
      if (!s) return answer(410, status(410, 'Expired', 'The provided continue parameter is too old to display a consistent list result.'));
      snap = s;
      offset = Number(off);
    } else {
      const items = [...this.objects[resource].values()].filter(match).sort((a, b) => (keyOf(a) < keyOf(b) ? -1 : 1));
      snap = { rv: this.rv, items: items.map(clone) };
    }
    const limit = query.limit ? Number(query.limit) : 0;
    const page = limit > 0 ? snap.items.slice(offset, offset + limit) : snap.items.slice(offset);
    const metadata: Record<string, string> = { resourceVersion: String(snap.rv) };
    if (limit > 0 && offset + limit < snap.items.length) {
      const id = query.continue ? query.continue.split(':')[0] : randomUUID();
      this.snapshots.set(id, snap);
      metadata.continue = `${id}:${offset + limit}`;
    }
    answer(200, { kind: `${kind}List`, apiVersion, metadata, items: page });
  }

  /** Makes every outstanding continue token expire (410 on its next page). */
  expireContinueTokens(): void {
    this.snapshots.clear();
  }
}
