// The agent's observability: Prometheus metrics read from the real kernel maps and counters at
// scrape time, and the admin endpoint (/healthz, /readyz, /config-dump, /debug/state, /metrics),
// which listens on loopback or a unix socket only. Real programs in a sandbox; nothing mocked but
// the model source, which the tests hold back to see the agent before its first config.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { adminGet, AdminServer, describeSource, parseAdminAddress } from '../mesh-agent/admin';
import { Agent } from '../mesh-agent/agent';
import { COUNTER_NAMES } from '../abi/codecs';
import { Datapath } from '../mesh-agent/datapath/datapath';
import type { RawMap } from '../mesh-agent/datapath/maps';
import type { Logger } from '../core/log';
import { MapCountCache, METRIC_NAMES, policyDropReasons, WorkerMapCounter } from '../mesh-agent/metrics';
import type { Model, Workload } from '../core/model';
import type { ModelSource, ModelSourceEvents, SourceSnapshot } from '../mesh-agent/sources/source';
import { XdsSource } from '../mesh-agent/sources/xds';
import { Sandbox, ServerHandle } from '../sandbox/sandbox';
import { startControlPlane } from '../xds/server/control-plane';
import { kernelSkip } from './kernel';

const SOCKMESH = path.resolve(__dirname, '../../bin/sockmesh');
/** The agent logs refused changes and NACKs at error level; these tests provoke both on purpose. */
const quiet = (): Logger => ({ debug() {}, info() {}, warn() {}, error() {} });

// ---- helpers ------------------------------------------------------------------------------

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Prometheus text format -> samples (enough for prom-client's output). */
function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `unparseable metrics line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the one sample of `name` whose labels include `labels`; undefined if none. */
function sample(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const hits = samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.ok(hits.length <= 1, `${name} ${JSON.stringify(labels)} matches ${hits.length} samples`);
  return hits[0]?.value;
}

async function until(what: string, fn: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!(await fn())) {
    if (Date.now() - t0 > ms) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A model source the test drives: start() resolves only when the test gives the first model. */
class TestSource extends EventEmitter<ModelSourceEvents> implements ModelSource {
  readonly description = 'test source';
  generation = 0;
  started = false;
  private release!: (s: SourceSnapshot) => void;
  private readonly first = new Promise<SourceSnapshot>((r) => (this.release = r));
  start(): Promise<SourceSnapshot> {
    this.started = true;
    return this.first;
  }
  give(model: Model): void {
    this.generation++;
    this.release({ model, nodeName: 'node1' });
  }
  push(model: Model): void {
    this.generation++;
    this.emit('update', { model, nodeName: 'node1' });
  }
  /** The optional versions() extension the admin endpoint shows in /config-dump. */
  versions(): Record<string, number> {
    return { generation: this.generation };
  }
  stop(): void {}
}

// ---- no kernel needed ---------------------------------------------------------------------

test('admin addresses: loopback IPs, localhost and absolute unix sockets only', () => {
  assert.deepEqual(parseAdminAddress('127.0.0.1:15021'), { kind: 'tcp', host: '127.0.0.1', port: 15021 });
  assert.deepEqual(parseAdminAddress('127.1.2.3:0'), { kind: 'tcp', host: '127.1.2.3', port: 0 });
  assert.deepEqual(parseAdminAddress('[::1]:15021'), { kind: 'tcp', host: '::1', port: 15021 });
  assert.deepEqual(parseAdminAddress('localhost:9'), { kind: 'tcp', host: '127.0.0.1', port: 9 });
  assert.deepEqual(parseAdminAddress('unix:/run/sockmesh/agent.sock'), { kind: 'unix', path: '/run/sockmesh/agent.sock' });
  for (const [addr, why] of [
    ['0.0.0.0:15021', /refusing to listen on 0\.0\.0\.0: .*loopback/],
    ['10.1.2.3:15021', /refusing to listen on 10\.1\.2\.3/],
    ['[::]:15021', /refusing to listen on ::/],
    ['[fd00::1]:15021', /refusing to listen on fd00::1/],
    ['[::ffff:127.0.0.1]:15021', /refusing to listen/],
    ['node1.example:15021', /not an IP address/],
    ['::1:15021', /expected HOST:PORT/],
    ['127.0.0.1', /expected HOST:PORT/],
    ['127.0.0.1:70000', /out of range/],
    ['unix:run/agent.sock', /absolute path/],
  ] as const) {
    assert.throws(() => parseAdminAddress(addr), (e: Error & { code?: string }) => e.code === 'SM_USAGE' && why.test(e.message), addr);
  }
});

test('an admin server is refused on a non-loopback address; the agent refuses before touching anything', async () => {
  await assert.rejects(AdminServer.start('0.0.0.0:0', { registry: null as never, readiness: () => ({ ready: true, reason: '' }), configDump: () => null, debugState: () => ({}) }), {
    code: 'SM_USAGE',
    message: /refusing to listen on 0\.0\.0\.0/,
  });
  const source = new TestSource();
  const bpffs = path.join(os.tmpdir(), `sockmesh-never-${process.pid}`);
  const agent = new Agent({ source, cgroupPath: '/nonexistent', bpffsDir: bpffs, admin: { listen: '0.0.0.0:15021' }, log: quiet() });
  await assert.rejects(agent.start(), { code: 'SM_USAGE', message: /refusing to listen on 0\.0\.0\.0/ });
  assert.equal(source.started, false, 'the source must not even be started');
  assert.equal(fs.existsSync(bpffs), false);
});

test('`sockmesh agent --admin 0.0.0.0:15021` exits 2 naming the reason, before reading the config', () => {
  const r = spawnSync(SOCKMESH, ['agent', '--config', '/nonexistent/mesh.yaml', '--cgroup', '/nonexistent', '--admin', '0.0.0.0:15021'], { encoding: 'utf8' });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /--admin: admin address "0\.0\.0\.0:15021": refusing to listen on 0\.0\.0\.0/);
});

test('map counts: reused for their TTL, then served stale while a new count is taken; per map and fd', async () => {
  let now = 1000;
  let walks = 0;
  let entries = 7;
  let release: (() => void) | undefined;
  // A slow counter (as on the worker thread): each walk resolves when the test says so.
  const counter = (m: RawMap) => {
    walks++;
    const n = m.fd === 42 ? entries : -1;
    return new Promise<number>((r) => (release = () => r(n)));
  };
  const cache = new MapCountCache(5000, () => now, counter);
  const map = { name: 'sm_revnat', fd: 42 } as unknown as RawMap;
  const first = cache.count(map);
  release!();
  assert.equal(await first, 7, 'the first count is waited for');
  entries = 9;
  now += 4999;
  assert.equal(await cache.count(map), 7, 'within the TTL: cached');
  assert.equal(walks, 1);
  now += 1;
  assert.equal(await cache.count(map), 7, 'TTL over: the last count, at once');
  assert.equal(walks, 2, 'and a new walk started');
  assert.equal(await cache.count(map), 7, 'no second walk while one is under way');
  assert.equal(walks, 2);
  release!();
  await new Promise((r) => setImmediate(r));
  assert.equal(await cache.count(map), 9);
  const other = cache.count({ name: 'sm_revnat', fd: 43 } as unknown as RawMap);
  release!();
  assert.equal(await other, -1, 'another fd (a reopened datapath) is counted afresh');
});

test('map counts on the worker thread are exact, and the worker closes the fds it was given', async () => {
  const bpf = await import('../native');
  const fd = bpf.mapCreate(bpf.consts.BPF_MAP_TYPE_HASH, 8, 4, 4096, 'sm_test_count');
  const w = new WorkerMapCounter();
  try {
    for (let i = 0; i < 1000; i++) {
      const k = Buffer.alloc(8);
      k.writeUInt32LE(i);
      bpf.mapUpdate(fd, k, Buffer.alloc(4));
    }
    const mapFds = () =>
      fs.readdirSync('/proc/self/fd').filter((f) => {
        try {
          return fs.readlinkSync(`/proc/self/fd/${f}`) === 'anon_inode:bpf-map';
        } catch {
          return false;
        }
      }).length;
    const before = mapFds();
    const map = { name: 'sm_test_count', fd, keySize: 8, valueSize: 4 } as unknown as RawMap;
    assert.deepEqual(await Promise.all([w.count(map), w.count(map), w.count(map)]), [1000, 1000, 1000]);
    assert.equal(mapFds(), before, 'the dup fds are closed');
  } finally {
    await w.close();
    bpf.closeFd(fd);
  }
});

test('policy drop reasons come from the policy_ counters (not policy_allow*)', () => {
  assert.deepEqual(policyDropReasons(['connect_translated', 'policy_deny_connect', 'policy_deny_ingress', 'policy_allowed']), [
    { counter: 'policy_deny_connect', reason: 'deny_connect' },
    { counter: 'policy_deny_ingress', reason: 'deny_ingress' },
  ]);
  assert.deepEqual(policyDropReasons(['connect_translated']), []);
});

test('describeSource: a file source gives its path and mtime', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockmesh-src-'));
  try {
    const f = path.join(dir, 'mesh.yaml');
    fs.writeFileSync(f, 'services: []\n');
    const t = new Date('2024-05-06T07:08:09.000Z');
    fs.utimesSync(f, t, t);
    assert.deepEqual(describeSource({ description: `file ${f}` }, undefined), {
      description: `file ${f}`,
      kind: 'file',
      file: { path: f, mtime: '2024-05-06T07:08:09.000Z' },
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// ---- kernel -------------------------------------------------------------------------------

const VIP = '198.19.0.70';
const SPARE_VIPS = ['198.19.0.71', '198.19.0.72', '198.19.0.73'];

describe('[kernel] agent metrics and admin endpoint', kernelSkip(), () => {
  let sb: Sandbox;
  let dir: string;
  let bpffs: string;
  let sock: string;
  let agent: Agent | undefined;
  let source: TestSource;
  const servers: ServerHandle[] = [];

  const wl = (n: string): Workload => ({ namespace: 'default', name: n, serviceAccount: n, ips: [sb.pod(n).ipv4], node: 'node1', cgroup: sb.pod(n).cgroupPath });
  /** web (2 ports) + `spare` one-port services; web2 accepts only the client's identity. */
  const model = (spare: number): Model => ({
    services: [
      { namespace: 'default', name: 'web', vips: [VIP], ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }, { name: 'alt', port: 81, protocol: 'TCP', targetPort: 8080 }] },
      ...Array.from({ length: spare }, (_, i) => ({
        namespace: 'default',
        name: `spare${i}`,
        vips: [SPARE_VIPS[i] ?? `198.19.1.${i}`],
        ports: [{ port: 80, protocol: 'TCP' as const, targetPort: 8080 }],
      })),
    ],
    endpoints: [
      { service: 'default/web', address: sb.pod('web1').ipv4, weight: 1, healthy: true },
      { service: 'default/web', address: sb.pod('web2').ipv4, weight: 3, healthy: true },
      ...Array.from({ length: spare }, (_, i) => ({ service: `default/spare${i}`, address: sb.pod('web1').ipv4, weight: 1, healthy: true })),
    ],
    workloads: ['client', 'other', 'web1', 'web2'].map(wl),
    policies: {
      l4: [
        {
          name: 'default/web2-allow-client',
          scope: { kind: 'workloads', workloads: ['default/web2'] },
          action: 'ALLOW',
          dryRun: false,
          when: { principal: { exact: 'spiffe://cluster.local/ns/default/sa/client' } },
          origin: 'test',
        },
      ],
      l7: [],
    },
  });
  const scrape = async () => parseMetrics(await agent!.metrics.text());
  const get = async (p: string) => {
    const r = await adminGet(`unix:${sock}`, p);
    return { ...r, json: r.contentType.startsWith('application/json') ? JSON.parse(r.body) : undefined };
  };
  const nextApplied = () => new Promise<void>((r) => agent!.once('applied', () => r()));

  before(async () => {
    sb = await Sandbox.create({ nodes: [{ name: 'node1', pods: [{ name: 'client' }, { name: 'other' }, { name: 'web1' }, { name: 'web2' }] }] });
    for (const w of ['web1', 'web2']) servers.push(await sb.startServer(w, ['serve', '--port', '8080', '--mode', 'id', '--name', w]));
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockmesh-metrics-'));
    sock = path.join(dir, 'run', 'agent.sock');
    bpffs = path.join(sb.ensureBpffsDir(), 'metrics');
  });

  after(async () => {
    agent?.stop();
    for (const s of servers) await s.stop();
    if (bpffs && fs.existsSync(bpffs)) Datapath.remove(bpffs);
    await sb?.teardown();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('/healthz answers at once; /readyz is 503 with the reason until the first config is applied, then 200', async () => {
    source = new TestSource();
    agent = new Agent({
      source,
      cgroupPath: sb.node('node1').cgroupPath,
      bpffsDir: bpffs,
      mapSizes: { sm_services: 8, sm_backends: 64 },
      retryMs: 3_600_000, // one apply per change: the counts below are exact
      admin: { listen: `unix:${sock}` },
      log: quiet(),
    });
    const started = agent.start();
    await until('the admin socket', () => fs.existsSync(sock));
    assert.equal((fs.statSync(sock).mode & 0o777).toString(8), '600');
    const h = await get('/healthz');
    assert.equal(h.status, 200);
    assert.equal(h.body, 'ok\n');
    const r = await get('/readyz');
    assert.equal(r.status, 503);
    assert.deepEqual(r.json, { ready: false, reason: 'waiting for the first config from test source' });
    assert.equal((await get('/config-dump')).status, 503);
    assert.equal(fs.existsSync(bpffs), false, 'nothing attached before the first config');
    // Before the datapath: no kernel series, but the process's own are there.
    let s = await scrape();
    assert.equal(sample(s, METRIC_NAMES.mapEntries, { map: 'sm_services' }), undefined);
    assert.equal(sample(s, METRIC_NAMES.buildInfo, { version: '0.1.0' }), 1);
    assert.equal(sample(s, METRIC_NAMES.attachFailures), 0);

    source.give(model(3));
    const report = await started;
    assert.deepEqual(report.errors, []);
    const ready = await get('/readyz');
    assert.equal(ready.status, 200, ready.body);
    assert.equal(ready.json.ready, true);
    assert.equal(ready.json.applyErrors, 0);
    s = await scrape();
    assert.equal(sample(s, `${METRIC_NAMES.reconcileDuration}_count`), 1);
    assert.ok(sample(s, `${METRIC_NAMES.reconcileDuration}_sum`)! > 0);
    const applied = sample(s, METRIC_NAMES.configAppliedTimestamp)!;
    assert.ok(Math.abs(applied - Date.now() / 1000) < 30, `applied at ${applied}`);
  });

  test('map entries, capacity and usage ratio are what the kernel maps hold', async () => {
    const s = await scrape();
    const dp = agent!.datapath;
    // web: 1 VIP x 2 ports; 3 spare services of one port.
    assert.equal(sample(s, METRIC_NAMES.mapEntries, { map: 'sm_services' }), 5);
    assert.equal(sample(s, METRIC_NAMES.mapCapacity, { map: 'sm_services' }), 8);
    assert.equal(sample(s, METRIC_NAMES.mapUsageRatio, { map: 'sm_services' }), 5 / 8);
    const slots = dp.maps.sm_backends.count();
    assert.equal(slots, agent!.reports[0].slotsWritten);
    assert.equal(sample(s, METRIC_NAMES.mapEntries, { map: 'sm_backends' }), slots);
    assert.equal(sample(s, METRIC_NAMES.mapUsageRatio, { map: 'sm_backends' }), slots / 64);
    assert.equal(sample(s, METRIC_NAMES.mapEntries, { map: 'sm_local_eps' }), 4);
    assert.equal(sample(s, METRIC_NAMES.mapCapacity, { map: 'sm_revnat' }), dp.maps.sm_revnat.maxEntries);
    // Entries and capacity for every map with a fill level; a usage ratio for those that refuse
    // entries when full, not for the LRU maps (full by design).
    const noFill = ['sm_sock_state', 'sm_counters', 'sm_config', 'sm_rcu_sync'];
    const lru = ['sm_revnat', 'sm_steer', 'sm_udp_flows'];
    for (const name of Object.keys(dp.maps)) {
      assert.equal(sample(s, METRIC_NAMES.mapEntries, { map: name }) !== undefined, !noFill.includes(name), name);
      assert.equal(sample(s, METRIC_NAMES.mapUsageRatio, { map: name }) !== undefined, !noFill.includes(name) && !lru.includes(name), name);
    }
  });

  test('datapath events and policy drops are the kernel counters', async () => {
    let s = await scrape();
    for (const event of COUNTER_NAMES) assert.notEqual(sample(s, METRIC_NAMES.datapathEvents, { event }), undefined, event);
    const ev = (x: Sample[], event: string) => sample(x, METRIC_NAMES.datapathEvents, { event })!;
    const drops = (x: Sample[], reason: string) => sample(x, METRIC_NAMES.policyDrops, { reason })!;
    const before = s;
    const r = await sb.podtool('client', ['ids', '--target', `${VIP}:80`, '--count', '20']);
    assert.deepEqual(r.last.errors, {});
    // `other` may not reach web2 (ALLOW client only): refused at connect().
    const denied = await sb.podtool('other', ['connect', '--target', `${sb.pod('web2').ipv4}:8080`, '--connect-timeout-ms', '1500']);
    assert.equal(denied.last.err, 'EACCES');
    s = await scrape();
    assert.equal(ev(s, 'connect_translated') - ev(before, 'connect_translated'), 20);
    assert.equal(drops(s, 'deny_connect') - drops(before, 'deny_connect'), 1);
    assert.equal(drops(s, 'deny_ingress'), Number(agent!.datapath.counters().policy_deny_ingress));
    // Same numbers as `sockmesh status` reads.
    const c = agent!.datapath.counters();
    for (const event of COUNTER_NAMES) assert.equal(ev(s, event), Number(c[event]), event);
  });

  test('a change that does not fit: reconcile errors by code, usage ratio 1, readiness says so', async () => {
    let s = await scrape();
    const fullBefore = sample(s, METRIC_NAMES.reconcileErrors, { code: 'SM_MAP_FULL' })!;
    assert.equal(fullBefore, 0);
    const applied = nextApplied();
    source.push(model(7)); // 2 + 7 = 9 entries for 8 places: one service is refused
    await applied;
    agent!.metrics.mapCounts.clear(); // counts are cached for 5 s; this test wants the new ones now
    s = await scrape();
    assert.equal(sample(s, METRIC_NAMES.reconcileErrors, { code: 'SM_MAP_FULL' }), 1);
    assert.equal(sample(s, METRIC_NAMES.mapUsageRatio, { map: 'sm_services' }), 1);
    assert.equal(sample(s, `${METRIC_NAMES.reconcileDuration}_count`), agent!.reports.length);
    const r = await get('/readyz');
    assert.equal(r.status, 200, 'a partial apply still serves');
    assert.equal(r.json.applyErrors, 1);
    assert.match(r.json.reason, /1 change\(s\) not applied/);

    const back = nextApplied();
    source.push(model(3));
    await back;
    agent!.metrics.mapCounts.clear();
    s = await scrape();
    assert.equal(sample(s, METRIC_NAMES.mapEntries, { map: 'sm_services' }), 5);
    assert.equal(sample(s, METRIC_NAMES.reconcileErrors, { code: 'SM_MAP_FULL' }), 1, 'a counter never goes back');
  });

  test('/config-dump is the model as received, with the source and its versions; /debug/state; /metrics over HTTP', async () => {
    const d = await get('/config-dump');
    assert.equal(d.status, 200);
    assert.deepEqual(d.json.model, JSON.parse(JSON.stringify(model(3))));
    assert.deepEqual(d.json.source, { description: 'test source', kind: 'other', versions: { generation: 3 } });
    assert.equal(d.json.nodeName, 'node1');
    assert.deepEqual(d.json.lastApply.errors, []);
    assert.equal(typeof d.json.lastApply.durationMs, 'number');
    assert.ok(Date.parse(d.json.receivedAt) <= Date.parse(d.json.lastApply.at));

    const st = await get('/debug/state');
    assert.equal(st.status, 200);
    assert.equal(st.json.pid, process.pid);
    assert.equal(st.json.datapath.bpffsDir, bpffs);
    assert.equal(st.json.datapath.programs.length, agent!.datapath.programs.length);
    assert.equal(st.json.readiness.ready, true);
    assert.equal(st.json.applies, agent!.reports.length);

    const m = await get('/metrics');
    assert.equal(m.status, 200);
    assert.match(m.contentType, /^text\/plain; version=0\.0\.4/);
    assert.equal(sample(parseMetrics(m.body), METRIC_NAMES.mapEntries, { map: 'sm_services' }), 5);
    assert.equal((await get('/nope')).status, 404);
  });

  test('stop() closes the admin endpoint and removes its socket', async () => {
    agent!.stop();
    agent = undefined;
    assert.equal(fs.existsSync(sock), false);
    await assert.rejects(adminGet(`unix:${sock}`, '/healthz', 1000));
  });
});

describe('[kernel] xDS metrics: connected, ACK/NACK, versions', kernelSkip(), () => {
  const XVIP = '198.19.0.75';
  let sb: Sandbox;
  let dir: string;
  let cfg: string;
  let bpffs: string;
  let agent: Agent | undefined;
  let cp: Awaited<ReturnType<typeof startControlPlane>> | undefined;
  const log = quiet();

  const yaml = (extra = '') => `
node: node1
services:
  - { name: web, vips: [${XVIP}], ports: [{ name: http, port: 80, targetPort: 8080 }] }
endpoints:
  - { service: default/web, address: ${sb.pod('web1').ipv4} }
workloads:
  - { name: client, serviceAccount: client, ips: [${sb.pod('client').ipv4}], node: node1 }
  - { name: web1, serviceAccount: web, ips: [${sb.pod('web1').ipv4}], node: node1 }
${extra}`;
  const write = (text: string) => {
    fs.writeFileSync(cfg + '.tmp', text);
    fs.renameSync(cfg + '.tmp', cfg);
  };
  const scrapeHttp = async () => {
    const r = await adminGet(agent!.adminAddress!, '/metrics');
    assert.equal(r.status, 200);
    return parseMetrics(r.body);
  };

  before(async () => {
    sb = await Sandbox.create({ nodes: [{ name: 'node1', pods: [{ name: 'client' }, { name: 'web1' }] }] });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockmesh-xdsm-'));
    cfg = path.join(dir, 'cp.yaml');
    write(yaml());
    cp = await startControlPlane({ configPath: cfg, address: '127.0.0.1:0', log, debounceMs: 50 });
    bpffs = path.join(sb.ensureBpffsDir(), 'xdsm');
    agent = new Agent({
      source: new XdsSource({ server: `127.0.0.1:${cp.port}`, mode: 'sotw', nodeName: 'node1', log }),
      nodeName: 'node1',
      cgroupPath: sb.node('node1').cgroupPath,
      bpffsDir: bpffs,
      admin: { listen: '127.0.0.1:0' },
      log,
    });
    assert.deepEqual((await agent.start()).errors, []);
  });

  after(async () => {
    agent?.stop();
    await cp?.stop();
    if (bpffs && fs.existsSync(bpffs)) Datapath.remove(bpffs);
    await sb?.teardown();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('connected per type, ACKs counted, the accepted version_info; /config-dump names the versions', async () => {
    assert.match(agent!.adminAddress!, /^127\.0\.0\.1:\d+$/);
    assert.notEqual(agent!.adminAddress, '127.0.0.1:0');
    const s = await scrapeHttp();
    const d = JSON.parse((await adminGet(agent!.adminAddress!, '/config-dump')).body);
    assert.equal(d.source.kind, 'xds');
    assert.match(d.source.description, /^xds 127\.0\.0\.1:\d+ \(sotw\)$/);
    for (const type of ['CDS', 'EDS', 'LDS', 'RDS', 'WDS', 'Authorization']) {
      assert.equal(sample(s, METRIC_NAMES.xdsConnected, { type }), 1, type);
      assert.equal(sample(s, METRIC_NAMES.xdsNacks, { type }), 0, type);
      assert.ok(sample(s, METRIC_NAMES.xdsAcks, { type })! >= 1, `${type} ACKed`);
      const version = d.source.xds[type].lastAckVersion;
      assert.ok(version, `${type} has an accepted version`);
      assert.equal(sample(s, METRIC_NAMES.xdsVersionInfo, { type, version }), 1, type);
    }
    assert.deepEqual(d.model.services.map((x: { vips: string[] }) => x.vips), [[XVIP]]);
  });

  test('a NACK is counted under its type; the version stays', async () => {
    const before = await scrapeHttp();
    const edsVersion = before.find((x) => x.name === METRIC_NAMES.xdsVersionInfo && x.labels.type === 'EDS')!.labels.version;
    // A raw ClusterLoadAssignment replacing the generated one, with a port the client must refuse.
    write(
      yaml(`xds:
  - "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
    clusterName: "outbound|80||web.default.svc.cluster.local"
    endpoints: [{ lbEndpoints: [{ endpoint: { address: { socketAddress: { address: ${sb.pod('web1').ipv4}, portValue: 70000 } } } }] }]
`),
    );
    let s: Sample[] = [];
    await until('the EDS NACK in the metrics', async () => {
      s = await scrapeHttp();
      return sample(s, METRIC_NAMES.xdsNacks, { type: 'EDS' })! >= 1;
    });
    assert.equal(sample(s, METRIC_NAMES.xdsNacks, { type: 'CDS' }), 0);
    assert.equal(sample(s, METRIC_NAMES.xdsVersionInfo, { type: 'EDS', version: edsVersion }), 1, 'the accepted version stays');
    const st = JSON.parse((await adminGet(agent!.adminAddress!, '/debug/state')).body);
    assert.match(st.source.xds.EDS.lastNack.detail, /70000/);
  });

  test('control plane gone: sockmesh_xds_connected drops to 0', async () => {
    await cp!.stop();
    cp = undefined;
    await until('xds_connected 0', async () => sample(await scrapeHttp(), METRIC_NAMES.xdsConnected, { type: 'CDS' }) === 0);
    const r = await adminGet(agent!.adminAddress!, '/readyz');
    assert.equal(r.status, 200, 'the last good config stays in force: still ready');
  });
});
