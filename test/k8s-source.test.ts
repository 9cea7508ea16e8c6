// The Kubernetes source against a fake kube-apiserver (test/k8s-fake-apiserver.ts) speaking the
// real list/watch shapes over HTTP on 127.0.0.1: initial sync, watch events, enrollment by
// namespace label, BOOKMARKs, server-closed and reset watches, 410 Gone (HTTP and ERROR event),
// services and EndpointSlices, RBAC errors and the initial-sync timeout.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Model } from '../core/model';
import { parse } from 'yaml';
import type { Logger } from '../core/log';
import type { SourceSnapshot } from '../mesh-agent/sources/source';
import { KubernetesSource, kubeConfigFor, KubernetesSourceError, type KubernetesSourceOptions } from '../mesh-agent/sources/kubernetes';
import { FakeApiServer, type ResourceName } from './k8s-fake-apiserver';
import { fixtureDir } from './fixture-dir';

// ---- helpers ------------------------------------------------------------------------------------

/** Locates test/fixtures/k8s whether run from the source tree or a compiled outDir. */
const fixturesDir = (): string => fixtureDir('k8s');

type Cluster = Record<ResourceName, Array<Record<string, unknown>>>;

function loadCluster(): Cluster {
  return parse(fs.readFileSync(path.join(fixturesDir(), 'cluster.yaml'), 'utf8')) as Cluster;
}

function captureLog(): Logger & { lines: Array<{ level: string; msg: string; fields?: Record<string, unknown> }> } {
  const lines: Array<{ level: string; msg: string; fields?: Record<string, unknown> }> = [];
  const at = (level: string) => (msg: string, fields?: Record<string, unknown>) => void lines.push({ level, msg, fields });
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

interface Harness {
  server: FakeApiServer;
  source: KubernetesSource;
  log: ReturnType<typeof captureLog>;
  /** Every update the source emitted, in order. */
  updates: SourceSnapshot[];
  close(): Promise<void>;
}

async function harness(opts: Partial<KubernetesSourceOptions> = {}, cluster: Cluster = loadCluster()): Promise<Harness> {
  const server = await new FakeApiServer().start();
  for (const r of ['namespaces', 'pods', 'services', 'endpointslices'] as const) for (const o of cluster[r] ?? []) server.create(r, o);
  const log = captureLog();
  const source = new KubernetesSource({
    kubeConfig: kubeConfigFor(server.url),
    nodeName: 'node-a',
    services: true,
    log,
    debounceMs: 20,
    backoff: { initialMs: 20, maxMs: 200 },
    cgroupDriver: 'none',
    ...opts,
  });
  const updates: SourceSnapshot[] = [];
  source.on('update', (s) => updates.push(s));
  return {
    server,
    source,
    log,
    updates,
    async close() {
      source.stop();
      await server.close();
    },
  };
}

/** The next update (after those already seen) whose snapshot satisfies `pred`. */
function nextUpdate(source: KubernetesSource, pred: (s: SourceSnapshot) => boolean = () => true, timeoutMs = 5000): Promise<SourceSnapshot> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      source.off('update', on);
      reject(new Error('no matching update from the kubernetes source in time'));
    }, timeoutMs);
    const on = (s: SourceSnapshot) => {
      if (!pred(s)) return;
      clearTimeout(t);
      source.off('update', on);
      resolve(s);
    };
    source.on('update', on);
  });
}

async function until(cond: () => boolean, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const workloadNames = (s: SourceSnapshot) => s.model.workloads.map((w) => `${w.namespace}/${w.name}`);

// ---- the fixture's expected model ------------------------------------------------------------------

const UID = {
  web1: '0b6d1e2a-1111-4c1e-9a1e-000000000001',
  web2: '0b6d1e2a-1111-4c1e-9a1e-000000000002',
  web9: '0b6d1e2a-1111-4c1e-9a1e-000000000009',
  special1: '0b6d1e2a-2222-4c1e-9a1e-000000000002',
  api1: '0b6d1e2a-3333-4c1e-9a1e-000000000001',
};

/** The model test/fixtures/k8s/cluster.yaml must give on node-a. */
function expectedModel(): Model {
  const webEp = (servicePort: string, port: number) => [
    { service: 'shop/web', address: '10.244.1.10', servicePort, port, weight: 1, healthy: true, node: 'node-a', locality: { zone: 'zone-1' }, workload: UID.web1 },
    { service: 'shop/web', address: '10.244.1.11', servicePort, port, weight: 1, healthy: false, node: 'node-a', workload: UID.web2 },
    { service: 'shop/web', address: '10.244.2.20', servicePort, port, weight: 1, healthy: true, node: 'node-b', workload: UID.web9 },
    { service: 'shop/web', address: 'fd00:10:244:1::a', servicePort, port, weight: 1, healthy: true, node: 'node-a', workload: UID.web1 },
  ];
  return {
    services: [
      { namespace: 'payments', name: 'api', vips: ['10.96.1.1'], ports: [{ port: 8080, protocol: 'TCP', targetPort: 8443 }] },
      { namespace: 'payments', name: 'cache', vips: ['10.96.1.2'], ports: [{ name: 'redis', port: 6379, protocol: 'TCP', targetPort: 6379 }] },
      {
        namespace: 'shop',
        name: 'dns',
        vips: ['10.96.0.53'],
        ports: [
          { name: 'dns-tcp', port: 53, protocol: 'TCP', targetPort: 5353 },
          { name: 'dns', port: 53, protocol: 'UDP', targetPort: 5353 },
        ],
      },
      {
        namespace: 'shop',
        name: 'web',
        vips: ['10.96.0.10', 'fd00:96::a'],
        ports: [
          // targetPort "http-web" resolved through the slices' port named after the service port
          { name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 },
          { name: 'metrics', port: 9090, protocol: 'TCP', targetPort: 9090 },
        ],
      },
    ],
    endpoints: [
      // the only endpoints left are terminating: the serving one takes the traffic
      { service: 'payments/api', address: '10.244.1.30', servicePort: 8080, port: 8443, weight: 1, healthy: true, node: 'node-a' },
      { service: 'payments/api', address: '10.244.3.6', servicePort: 8080, port: 8443, weight: 1, healthy: false, node: 'node-c' },
      // internalTrafficPolicy Local: node-b's endpoint is not ours
      { service: 'payments/cache', address: '10.244.1.31', servicePort: 'redis', port: 6379, weight: 1, healthy: true, node: 'node-a' },
      { service: 'shop/dns', address: '10.244.1.40', servicePort: 'dns', port: 5353, weight: 1, healthy: true, node: 'node-b' },
      { service: 'shop/dns', address: '10.244.1.40', servicePort: 'dns-tcp', port: 5353, weight: 1, healthy: true, node: 'node-b' },
      ...webEp('http', 8080),
      ...webEp('metrics', 9090),
    ],
    workloads: [
      { namespace: 'legacy', name: 'special-1', serviceAccount: 'special', ips: ['10.244.1.21'], node: 'node-a', uid: UID.special1, healthy: true },
      { namespace: 'payments', name: 'api-1', serviceAccount: 'default', ips: ['10.244.1.30'], node: 'node-a', uid: UID.api1, healthy: true },
      { namespace: 'shop', name: 'web-1', serviceAccount: 'web', ips: ['10.244.1.10', 'fd00:10:244:1::a'], node: 'node-a', uid: UID.web1, healthy: true },
      { namespace: 'shop', name: 'web-2', serviceAccount: 'web', ips: ['10.244.1.11'], node: 'node-a', uid: UID.web2, healthy: false },
    ],
  };
}

function runningPod(ns: string, name: string, ip: string, ready: boolean, labels: Record<string, string> = {}) {
  return {
    metadata: { name, namespace: ns, labels },
    spec: { nodeName: 'node-a', serviceAccountName: 'sa-' + name, containers: [{ name: 'c' }] },
    status: { phase: 'Running', qosClass: 'BestEffort', podIP: ip, podIPs: [{ ip }], conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] },
  };
}

async function withHarness(fn: (h: Harness) => Promise<void>, opts: Parameters<typeof harness>[0] = {}): Promise<void> {
  const h = await harness(opts);
  try {
    await fn(h);
  } finally {
    await h.close();
  }
}

describe('kubernetes source: initial sync', () => {
  test('lists pods of this node, namespaces, services and slices, and derives the expected model', () =>
    withHarness(async (h) => {
      const snap = await h.source.start();
      assert.equal(snap.nodeName, 'node-a');
      assert.deepEqual(snap.model, expectedModel());
      // Only node-a's pods were asked for, and the lists were plain (no resourceVersion: a consistent read).
      const podList = h.server.requests.find((r) => r.resource === 'pods' && !r.watch)!;
      assert.equal(podList.query.fieldSelector, 'spec.nodeName=node-a');
      assert.equal(podList.query.resourceVersion, undefined);
      // Each collection is then watched from its list's resourceVersion, with bookmarks asked for.
      for (const r of ['namespaces', 'pods', 'services', 'endpointslices'] as const) {
        const w = await h.server.waitForRequest((q) => q.resource === r && q.watch, { from: 0 });
        assert.equal(w.query.allowWatchBookmarks, 'true', r);
        assert.equal(w.query.resourceVersion, h.server.resourceVersion, r);
        assert.ok(Number(w.query.timeoutSeconds) >= 300 && Number(w.query.timeoutSeconds) <= 600, r);
        if (r === 'pods') assert.equal(w.query.fieldSelector, 'spec.nodeName=node-a');
      }
      // What was left out is said, once each.
      const warned = h.source.warnings().map((w) => `${w.resource}: ${w.reason.split(/[:(]/)[0].trim()}`);
      assert.deepEqual(warned, [
        'pod shop/node-exporter: enrolled',
        'service shop/db: headless service',
        'service shop/dns: port 9999/SCTP skipped',
        'service shop/dns: sessionAffinity ClientIP is not supported',
        'service shop/search: ExternalName service',
      ]);
      assert.equal(h.log.lines.filter((l) => l.level === 'warn' && l.msg.includes('left out')).length, 5);
      assert.equal(h.updates.length, 0, 'the initial model is the result of start(), not an update');
      assert.equal(h.source.state().synced, true);
    }));

  test('paginated lists (limit/continue) give the same model', () =>
    withHarness(
      async (h) => {
        const snap = await h.source.start();
        assert.deepEqual(snap.model, expectedModel());
        const pages = h.server.requests.filter((r) => r.resource === 'pods' && !r.watch);
        assert.ok(pages.length >= 2, `pods listed in ${pages.length} page(s)`);
        assert.ok(pages.slice(1).every((p) => p.query.continue && p.query.limit === '2'));
      },
      { pageSize: 2 },
    ));

  test('services off: only namespaces and pods are watched, the model has workloads only', () =>
    withHarness(
      async (h) => {
        const snap = await h.source.start();
        assert.deepEqual(snap.model.services, []);
        assert.deepEqual(snap.model.endpoints, []);
        assert.deepEqual(snap.model.workloads, expectedModel().workloads);
        assert.deepEqual([...new Set(h.server.requests.map((r) => r.resource))].sort(), ['namespaces', 'pods']);
      },
      { services: false },
    ));

  test('custom enrollment labels', () =>
    withHarness(
      async (h) => {
        const snap = await h.source.start();
        // shop's ambient label no longer enrolls, nor does sockmesh.io/mesh=enabled (payments,
        // special-1); the namespace legacy matches the custom namespace label.
        assert.deepEqual(workloadNames(snap), ['legacy/app-1', 'legacy/special-1']);
      },
      { services: false, enrollment: { namespaceLabel: 'kubernetes.io/metadata.name=legacy', ourLabel: 'example.com/mesh=on' } },
    ));
});

describe('kubernetes source: watch events', () => {
  test('pod becomes running, turns ready, is deleted; irrelevant changes cause no update', () =>
    withHarness(async (h) => {
      await h.source.start();
      // web-3 was Pending without IP: it appears once it runs with an IP.
      h.server.update('pods', 'shop/web-3', (p) => {
        p.status = { phase: 'Running', qosClass: 'BestEffort', podIP: '10.244.1.13', podIPs: [{ ip: '10.244.1.13' }], conditions: [{ type: 'Ready', status: 'False' }] };
      });
      let s = await nextUpdate(h.source);
      assert.deepEqual(
        s.model.workloads.find((w) => w.name === 'web-3'),
        { namespace: 'shop', name: 'web-3', serviceAccount: 'web', ips: ['10.244.1.13'], node: 'node-a', uid: '0b6d1e2a-1111-4c1e-9a1e-000000000004', healthy: false },
      );
      // Changes that do not touch the model (a pod of a namespace that is not enrolled, an
      // annotation) emit nothing: the next update is the readiness flip.
      h.server.update('pods', 'legacy/app-1', (p) => {
        (p.metadata as { labels: Record<string, string> }).labels.version = 'v2';
      });
      h.server.update('pods', 'shop/web-1', (p) => {
        (p.metadata as { annotations?: Record<string, string> }).annotations = { note: 'x' };
      });
      await new Promise((r) => setTimeout(r, 60));
      h.server.update('pods', 'shop/web-3', (p) => {
        (p.status as { conditions: unknown[] }).conditions = [{ type: 'Ready', status: 'True' }];
      });
      s = await nextUpdate(h.source);
      assert.equal(s.model.workloads.find((w) => w.name === 'web-3')?.healthy, true);
      assert.equal(h.updates.length, 2);
      // A new pod, then deletions.
      h.server.create('pods', runningPod('shop', 'web-4', '10.244.1.14', true));
      s = await nextUpdate(h.source, (x) => workloadNames(x).includes('shop/web-4'));
      h.server.remove('pods', 'shop/web-3');
      h.server.remove('pods', 'shop/web-4');
      s = await nextUpdate(h.source, (x) => !workloadNames(x).includes('shop/web-4'));
      assert.deepEqual(workloadNames(s), ['legacy/special-1', 'payments/api-1', 'shop/web-1', 'shop/web-2']);
      // Only the initial list: everything else came over the watch.
      assert.equal(h.server.requests.filter((r) => r.resource === 'pods' && !r.watch).length, 1);
    }));

  test('a burst of changes is one update (debounced)', () =>
    withHarness(
      async (h) => {
        await h.source.start();
        for (let i = 0; i < 5; i++) h.server.create('pods', runningPod('shop', `burst-${i}`, `10.244.1.${100 + i}`, true));
        const s = await nextUpdate(h.source);
        await new Promise((r) => setTimeout(r, 250));
        assert.equal(h.updates.length, 1);
        assert.equal(s.model.workloads.filter((w) => w.name.startsWith('burst-')).length, 5);
      },
      { debounceMs: 100 },
    ));

  test('a namespace gains the ambient label: its pods appear; loses it: they go (pod labels still count)', () =>
    withHarness(async (h) => {
      await h.source.start();
      h.server.update('namespaces', 'legacy', (ns) => {
        ns.metadata.labels!['istio.io/dataplane-mode'] = 'ambient';
      });
      let s = await nextUpdate(h.source);
      assert.ok(workloadNames(s).includes('legacy/app-1'));
      h.server.update('namespaces', 'legacy', (ns) => {
        delete ns.metadata.labels!['istio.io/dataplane-mode'];
      });
      s = await nextUpdate(h.source);
      assert.ok(!workloadNames(s).includes('legacy/app-1'));
      assert.ok(workloadNames(s).includes('legacy/special-1'), 'enrolled by its own label');
      // The namespace opting out of sockmesh (while still labelled ambient) removes its pods.
      h.server.update('namespaces', 'shop', (ns) => {
        ns.metadata.labels!['sockmesh.io/mesh'] = 'disabled';
      });
      s = await nextUpdate(h.source);
      assert.deepEqual(workloadNames(s), ['legacy/special-1', 'payments/api-1']);
    }));
});

describe('kubernetes source: resourceVersion handling', () => {
  test('BOOKMARK advances the resourceVersion: the next watch starts from it', () =>
    withHarness(async (h) => {
      await h.source.start();
      const first = await h.server.waitForRequest((r) => r.resource === 'pods' && r.watch, { from: 0 });
      // Other collections move the (cluster-wide) resourceVersion; the pods watch sees nothing.
      h.server.create('namespaces', { metadata: { name: 'other' } });
      h.server.create('services', { metadata: { name: 'x', namespace: 'other' }, spec: { type: 'ClusterIP', clusterIP: '10.96.9.9', clusterIPs: ['10.96.9.9'], ports: [{ port: 1, protocol: 'TCP', targetPort: 1 }] } });
      assert.notEqual(first.query.resourceVersion, h.server.resourceVersion);
      const bookmarkRv = h.server.bookmark('pods');
      await until(() => h.source.state().resources.pods.bookmarks === 1, 5000, 'the bookmark');
      assert.equal(h.source.state().resources.pods.resourceVersion, bookmarkRv);
      const from = h.server.requests.length;
      assert.equal(h.server.closeWatches('pods'), 1);
      const next = await h.server.waitForRequest((r) => r.resource === 'pods' && r.watch, { from });
      assert.equal(next.query.resourceVersion, bookmarkRv);
      assert.equal(next.query.allowWatchBookmarks, 'true');
      assert.equal(h.server.requests.slice(from).filter((r) => r.resource === 'pods' && !r.watch).length, 0, 'no re-list');
    }));

  test('a watch the server ends is resumed from the last resourceVersion, without listing again', () =>
    withHarness(async (h) => {
      await h.source.start();
      h.server.create('pods', runningPod('shop', 'web-5', '10.244.1.15', true));
      await nextUpdate(h.source, (s) => workloadNames(s).includes('shop/web-5'));
      const lastRv = h.server.resourceVersion;
      const from = h.server.requests.length;
      h.server.closeWatches(); // all four
      for (const r of ['namespaces', 'pods', 'services', 'endpointslices'] as const) {
        const w = await h.server.waitForRequest((q) => q.resource === r && q.watch, { from });
        if (r === 'pods') assert.equal(w.query.resourceVersion, lastRv);
      }
      // Events in between closing and resuming are not lost: they are replayed from history.
      h.server.remove('pods', 'shop/web-5');
      await nextUpdate(h.source, (s) => !workloadNames(s).includes('shop/web-5'));
      assert.equal(h.server.requests.slice(from).filter((r) => !r.watch).length, 0, 'no list');
      assert.equal(h.source.state().resources.pods.lists, 1);
    }));

  test('watches carry timeoutSeconds; when the server ends them at that timeout they are resumed', () =>
    withHarness(
      async (h) => {
        await h.source.start();
        const first = await h.server.waitForRequest((r) => r.resource === 'pods' && r.watch, { from: 0 });
        assert.equal(first.query.timeoutSeconds, '1');
        const second = await h.server.waitForRequest((r) => r.resource === 'pods' && r.watch, { from: first.seq + 1, timeoutMs: 3000 });
        assert.equal(second.query.resourceVersion, first.query.resourceVersion);
        assert.equal(h.source.state().resources.pods.lists, 1);
      },
      { services: false, watchTimeoutSeconds: { min: 1, max: 1 } },
    ));

  test('a reset watch connection is retried (with backoff) from the last resourceVersion', () =>
    withHarness(async (h) => {
      await h.source.start();
      await h.server.waitForRequest((r) => r.resource === 'pods' && r.watch, { from: 0 });
      const from = h.server.requests.length;
      const rv = h.source.state().resources.pods.resourceVersion;
      h.server.closeWatches('pods', { destroy: true });
      h.server.create('pods', runningPod('shop', 'web-6', '10.244.1.16', true), { deliver: false });
      const w = await h.server.waitForRequest((r) => r.resource === 'pods' && r.watch, { from });
      assert.equal(w.query.resourceVersion, rv);
      await nextUpdate(h.source, (s) => workloadNames(s).includes('shop/web-6'));
      assert.equal(h.source.state().resources.pods.lists, 1);
    }));

  test('410 Gone as an HTTP 410 on a too-old watch: re-list, and the model converges (deletion in the gap)', () =>
    withHarness(async (h) => {
      await h.source.start();
      await h.server.waitForRequest((r) => r.resource === 'pods' && r.watch, { from: 0 });
      // While we are not watching: web-2 is deleted, web-7 created, and history is compacted.
      h.server.remove('pods', 'shop/web-2', { deliver: false });
      h.server.create('pods', runningPod('shop', 'web-7', '10.244.1.17', true), { deliver: false });
      h.server.compact();
      const from = h.server.requests.length;
      h.server.closeWatches('pods');
      const s = await nextUpdate(h.source, (x) => workloadNames(x).includes('shop/web-7'));
      assert.deepEqual(workloadNames(s), ['legacy/special-1', 'payments/api-1', 'shop/web-1', 'shop/web-7']);
      await h.server.waitForRequest((r) => r.resource === 'pods' && r.watch && r.status === 200, { from });
      const after = h.server.requests.slice(from).filter((r) => r.resource === 'pods');
      assert.deepEqual(
        after.slice(0, 3).map((r) => [r.watch ? 'watch' : 'list', r.status]),
        [
          ['watch', 410],
          ['list', 200],
          ['watch', 200],
        ],
      );
      assert.equal(after[2].query.resourceVersion, h.server.resourceVersion);
      assert.equal(h.source.state().resources.pods.relistsGone, 1);
      assert.equal(h.source.state().resources.namespaces.relistsGone, 0);
    }));

  test('410 Gone as a watch ERROR event on an open watch: re-list, converge', () =>
    withHarness(async (h) => {
      await h.source.start();
      await h.server.waitForRequest((r) => r.resource === 'endpointslices' && r.watch, { from: 0 });
      // web-1's endpoint goes unready, unseen; the watch then expires.
      h.server.update(
        'endpointslices',
        'shop/web-abc12',
        (sl) => {
          ((sl.endpoints as Array<{ conditions: Record<string, boolean> }>)[0].conditions = { ready: false, serving: false, terminating: false });
        },
        { deliver: false },
      );
      h.server.compact();
      const from = h.server.requests.length;
      assert.equal(h.server.expireWatches('endpointslices'), 1);
      const s = await nextUpdate(h.source);
      const e = s.model.endpoints.find((x) => x.address === '10.244.1.10' && x.servicePort === 'http')!;
      assert.equal(e.healthy, false);
      await h.server.waitForRequest((r) => r.resource === 'endpointslices' && r.watch, { from });
      const after = h.server.requests.slice(from).filter((r) => r.resource === 'endpointslices');
      assert.deepEqual(after.slice(0, 2).map((r) => (r.watch ? 'watch' : 'list')), ['list', 'watch']);
      assert.equal(h.source.state().resources.endpointslices.relistsGone, 1);
      assert.equal(h.server.openWatches('endpointslices'), 1, 'one watch, not two');
    }));

  test('410 Gone and then the re-list fails (500): retried until it succeeds, one watch afterwards', () =>
    withHarness(async (h) => {
      await h.source.start();
      await h.server.waitForRequest((r) => r.resource === 'pods' && r.watch, { from: 0 });
      h.server.remove('pods', 'shop/web-1', { deliver: false });
      h.server.compact();
      h.server.failNext('pods', { count: 2, code: 500 });
      const from = h.server.requests.length;
      h.server.closeWatches('pods');
      const s = await nextUpdate(h.source, (x) => !workloadNames(x).includes('shop/web-1'));
      assert.deepEqual(workloadNames(s), ['legacy/special-1', 'payments/api-1', 'shop/web-2']);
      await h.server.waitForRequest((r) => r.resource === 'pods' && r.watch && r.status === 200, { from });
      const after = h.server.requests.slice(from).filter((r) => r.resource === 'pods');
      assert.deepEqual(after.map((r) => `${r.watch ? 'watch' : 'list'} ${r.status}`), ['watch 410', 'list 500', 'list 500', 'list 200', 'watch 200']);
      assert.equal(h.server.openWatches('pods'), 1);
    }));

  test('a watch refused (403 while RBAC is being changed, then 500) is retried and resumes without a list', () =>
    withHarness(async (h) => {
      await h.source.start();
      await h.server.waitForRequest((r) => r.resource === 'pods' && r.watch, { from: 0 });
      const rv = h.source.state().resources.pods.resourceVersion;
      h.server.forbid('pods');
      const from = h.server.requests.length;
      h.server.closeWatches('pods');
      await h.server.waitForRequest((r) => r.resource === 'pods' && r.watch && r.status === 403, { from });
      h.server.forbid('pods', false);
      h.server.failNext('pods', { watch: true, code: 500 });
      h.server.create('pods', runningPod('shop', 'web-8', '10.244.1.18', true));
      await nextUpdate(h.source, (x) => workloadNames(x).includes('shop/web-8'));
      const after = h.server.requests.slice(from).filter((r) => r.resource === 'pods');
      assert.ok(after.every((r) => r.watch && r.query.resourceVersion === rv), 'every retry resumes from the same resourceVersion, no list');
      assert.deepEqual(after.slice(-2).map((r) => r.status), [500, 200]);
    }));

  test('410 Gone as an ERROR event answering a too-old watch request: re-list, converge', () =>
    withHarness(async (h) => {
      h.server.goneMode = 'event';
      await h.source.start();
      await h.server.waitForRequest((r) => r.resource === 'namespaces' && r.watch, { from: 0 });
      h.server.update('namespaces', 'legacy', (ns) => {
        ns.metadata.labels!['sockmesh.io/mesh'] = 'enabled';
      }, { deliver: false });
      h.server.compact();
      const from = h.server.requests.length;
      h.server.closeWatches('namespaces');
      const s = await nextUpdate(h.source);
      assert.ok(workloadNames(s).includes('legacy/app-1'));
      const relisted = await h.server.waitForRequest((r) => r.resource === 'namespaces' && !r.watch, { from });
      await h.server.waitForRequest((r) => r.resource === 'namespaces' && r.watch, { from: relisted.seq });
      const after = h.server.requests.slice(from).filter((r) => r.resource === 'namespaces');
      assert.deepEqual(after.slice(0, 3).map((r) => (r.watch ? 'watch' : 'list')), ['watch', 'list', 'watch']);
      assert.equal(after[0].status, 200, 'the refusal came as an event');
      assert.equal(h.source.state().resources.namespaces.relistsGone, 1);
    }));
});

describe('kubernetes source: services and EndpointSlices', () => {
  test('endpoint readiness, named targetPort changes, service deletion', () =>
    withHarness(async (h) => {
      await h.source.start();
      // web-2 turns ready
      h.server.update('endpointslices', 'shop/web-abc12', (sl) => {
        (sl.endpoints as Array<{ conditions: Record<string, boolean> }>)[1].conditions = { ready: true, serving: true, terminating: false };
      });
      let s = await nextUpdate(h.source);
      assert.ok(s.model.endpoints.filter((e) => e.address === '10.244.1.11').every((e) => e.healthy));
      // the container port behind "http-web" moves to 8081 in both slices
      for (const k of ['shop/web-abc12', 'shop/web-v6xyz']) {
        h.server.update('endpointslices', k, (sl) => {
          (sl.ports as Array<{ name: string; port: number }>)[0].port = 8081;
        });
      }
      s = await nextUpdate(h.source, (x) => x.model.endpoints.filter((e) => e.servicePort === 'http').every((e) => e.port === 8081));
      assert.equal(s.model.services.find((x) => x.name === 'web')!.ports[0].targetPort, 8081);
      // the service goes: so do its VIPs and endpoints (its slices may linger a moment)
      h.server.remove('services', 'shop/web');
      s = await nextUpdate(h.source);
      assert.ok(!s.model.services.some((x) => x.name === 'web'));
      assert.ok(!s.model.endpoints.some((e) => e.service === 'shop/web'));
      // a new service and its slice
      h.server.create('services', { metadata: { name: 'new', namespace: 'shop' }, spec: { type: 'ClusterIP', clusterIP: '10.96.0.77', clusterIPs: ['10.96.0.77'], ports: [{ name: 'h', port: 80, protocol: 'TCP', targetPort: 'web' }] } });
      h.server.create('endpointslices', {
        metadata: { name: 'new-1', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'new' } },
        addressType: 'IPv4',
        ports: [{ name: 'h', port: 3000, protocol: 'TCP' }],
        endpoints: [{ addresses: ['10.244.1.10'], conditions: { ready: true }, nodeName: 'node-a' }],
      });
      s = await nextUpdate(h.source, (x) => x.model.endpoints.some((e) => e.service === 'shop/new'));
      assert.deepEqual(s.model.services.find((x) => x.name === 'new'), { namespace: 'shop', name: 'new', vips: ['10.96.0.77'], ports: [{ name: 'h', port: 80, protocol: 'TCP', targetPort: 3000 }] });
      assert.deepEqual(s.model.endpoints.filter((e) => e.service === 'shop/new'), [
        { service: 'shop/new', address: '10.244.1.10', servicePort: 'h', port: 3000, weight: 1, healthy: true, node: 'node-a' },
      ]);
    }));
});

describe('kubernetes source: failures', () => {
  test('RBAC without a rule: start() rejects with SM_K8S_FORBIDDEN naming the collection', async () => {
    const h = await harness();
    h.server.forbid('endpointslices');
    try {
      await assert.rejects(h.source.start(), (e: unknown) => {
        assert.ok(e instanceof KubernetesSourceError);
        assert.equal(e.code, 'SM_K8S_FORBIDDEN');
        assert.match(e.message, /endpointslices/);
        assert.match(e.message, /list and watch/);
        return true;
      });
    } finally {
      await h.close();
    }
  });

  test('an API server that never answers: start() rejects with SM_K8S_SYNC_TIMEOUT', async () => {
    const silent = http.createServer(() => {});
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const source = new KubernetesSource({
      kubeConfig: kubeConfigFor(`http://127.0.0.1:${(silent.address() as AddressInfo).port}`),
      nodeName: 'node-a',
      services: false,
      log: { debug() {}, info() {}, warn() {}, error() {} },
      syncTimeoutMs: 300,
    });
    try {
      await assert.rejects(source.start(), (e: unknown) => e instanceof KubernetesSourceError && e.code === 'SM_K8S_SYNC_TIMEOUT' && /namespaces/.test(e.message));
    } finally {
      source.stop();
      silent.closeAllConnections();
      await new Promise((r) => silent.close(r));
    }
  });

  test('a list that fails (500) is retried; start() resolves once it succeeds', async () => {
    const h = await harness({ services: false });
    // The source talks to a proxy in front of the fake server that answers the first two
    // requests with a 500, as an API server does while etcd elects a leader.
    let failures = 2;
    const proxy = http.createServer((req, res) => {
      if (failures-- > 0) {
        res.writeHead(500, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', status: 'Failure', code: 500, reason: 'InternalError', message: 'etcdserver: leader changed' }));
        return;
      }
      const up = http.request({ host: '127.0.0.1', port: h.server.port, path: req.url, method: req.method, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      });
      // Either side may be cut when the test ends (the watch is long-lived).
      up.on('error', () => res.destroy());
      res.on('close', () => up.destroy());
      req.pipe(up);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const source = new KubernetesSource({
      kubeConfig: kubeConfigFor(`http://127.0.0.1:${(proxy.address() as AddressInfo).port}`),
      nodeName: 'node-a',
      services: false,
      log: h.log,
      backoff: { initialMs: 10, maxMs: 50 },
      cgroupDriver: 'none',
    });
    try {
      const snap = await source.start();
      assert.deepEqual(snap.model.workloads, expectedModel().workloads);
      assert.ok(h.log.lines.some((l) => l.msg.includes('list failed; retrying') && String(l.fields?.error).includes('leader changed')));
    } finally {
      source.stop();
      proxy.closeAllConnections();
      await new Promise((r) => proxy.close(r));
      await h.close();
    }
  });
});

describe('kubernetes source: pod cgroups', () => {
  test('podCgroups() and Workload.cgroup from the pods on disk (auto driver)', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'sockmesh-k8s-cg-'));
    try {
      // web-1 (Burstable) under the systemd layout, special-1 (Guaranteed) under cgroupfs.
      const web1 = path.join(root, 'kubepods.slice/kubepods-burstable.slice', `kubepods-burstable-pod${UID.web1.replace(/-/g, '_')}.slice`);
      const special1 = path.join(root, 'kubepods', `pod${UID.special1}`);
      fs.mkdirSync(web1, { recursive: true });
      fs.mkdirSync(special1, { recursive: true });
      await withHarness(
        async (h) => {
          const snap = await h.source.start();
          const cg = h.source.podCgroups();
          assert.equal(cg.get(UID.web1)?.cgroup, web1);
          assert.equal(cg.get(UID.web1)?.qosClass, 'Burstable');
          assert.equal(cg.get(UID.special1)?.cgroup, special1);
          assert.equal(cg.get(UID.special1)?.qosClass, 'Guaranteed');
          assert.equal(cg.get(UID.web2)?.cgroup, undefined, 'not on disk');
          assert.equal(cg.size, 4);
          const w = snap.model.workloads as Array<{ name: string; cgroup?: string }>;
          assert.equal(w.find((x) => x.name === 'web-1')?.cgroup, web1);
          assert.equal(w.find((x) => x.name === 'web-2')?.cgroup, undefined);
        },
        { cgroupRoot: root, cgroupDriver: 'auto', services: false },
      );
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
