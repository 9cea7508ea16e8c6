// L7 scenario (issue 6, scenario 5): `wrk` against an allowed path of a service guarded by 10 RBAC
// policies, on one sandbox node, variants interleaved and repeated in one run:
//
//   direct   unmeshed client pod -> server pod IP:8080 (no mesh, no policy)
//   l7       meshed client pod -> service VIP:80; the service has HTTP rules, so connect() is
//            steered by the kernel to the node's L7 proxy (`sockmesh proxy`, its own pod), which
//            evaluates the Envoy RBAC filter (ALLOW, 10 policies) and forwards to the server
//   sidecar  unmeshed pods, client -> outbound HAProxy (mode http) in its pod -> inbound HAProxy
//            (mode http) in the server pod, which applies the same 10 rules as ACLs -> app
//   l4       meshed client pod -> a second VIP of the same server without HTTP rules: connect-time
//            translation + sk_msg redirect only (reference row: what sockmesh costs without L7)
//
// The 10 policies are one list (POLICIES below) rendered twice: as an Envoy RBAC filter
// (envoy.filters.http.rbac, ALLOW, the shape istiod generates for an AuthorizationPolicy with ten
// rules: path AND method(s) AND header, from a principal) and as HAProxy `acl` +
// `http-request allow if ...` + a final `http-request deny`. The benchmarked request
// (GET /api/v1/catalog/items/42, x-tenant: acme, from the frontend workload) is allowed only by
// the tenth policy, so every request is checked against all ten (both engines stop at the first
// policy that matches). Before measuring, each variant is checked with curl: the allowed request
// gets 200, and on the two guarded variants a denied path, a denied method and a wrong header get
// 403 — the policies are really in force.
//
// Per cell (variant × connections × repetition) one wrk run (`-t1 -cN -dDs`, keep-alive, one
// request in flight per connection). wrk's own numbers are read from a Lua `done` hook
// (bench/wrk-report.lua): requests, errors, latency percentiles. Any socket error, timeout or
// non-2xx/3xx response fails the run (allowed path: there must be none).
//
// CPU per request = CPU of wrk (getrusage of its children, via bash `times`) + CPU of every other
// process on the path over the run (server, proxy or both HAProxies; /proc/PID/task/*/schedstat,
// ns) / requests completed. Softirq work is charged to whichever task was on the CPU, so the
// kernel's network work is in it too (mostly).
//
//   node dist/bench/l7.js [--quick] [--connections 16,1] [--duration 10] [--reps 3] [--warmup 5]   (quick: 1 s, 1 rep, 1 s)
//                         [--variants direct,l7,sidecar,l4] [--access-log none|stdout] [--out FILE.json]
import { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { Agent } from '../mesh-agent/agent';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { createLogger } from '../core/log';
import type { Model } from '../core/model';
import { StaticSource } from '../mesh-agent/sources/source';
import { Sandbox, ServerHandle, waitServer } from '../sandbox/sandbox';
import { ChartSpec, ROOT, ScenarioOptions, ScenarioResult, ensureNativePingpong, median, pidsCpuUs, rotate, intArg, intListArg, runStandalone } from './common';
import { Sidecars, startHttpSidecars } from './sidecar';

const WRK = '/usr/bin/wrk';
const WRK_SCRIPT = path.join(ROOT, 'bench', 'wrk-report.lua');
const VIP_L7 = '198.19.0.60';
const VIP_L4 = '198.19.0.61';
const APP_PORT = 8080;
const PROXY_PORT = 15001;
const PROXY_METRICS = '127.0.0.1:15090';
const NS = 'bench';
const TRUST_DOMAIN = 'cluster.local';
const RBAC_TYPE = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC';

/** The request wrk sends on every variant. */
export const BENCH_PATH = '/api/v1/catalog/items/42';
const BENCH_HEADER = { name: 'x-tenant', value: 'acme' };
/** Service account of the client workload (sockmesh) / the client pod's IP stands for it (HAProxy). */
export const CLIENT_SA = 'frontend';

export const ALL_VARIANTS = ['direct', 'l7', 'sidecar', 'l4'] as const;
export type L7Variant = (typeof ALL_VARIANTS)[number];
const LABEL: Record<L7Variant, string> = {
  direct: 'direct (pod IP, no mesh)',
  l7: 'sockmesh L7 proxy (RBAC ×10)',
  sidecar: 'HAProxy HTTP sidecars (ACL ×10)',
  l4: 'sockmesh L4 (VIP + redirect)',
};

// ---- the 10 policies, once ---------------------------------------------------------------------

export interface BenchPolicy {
  /** Numbered so that Envoy's (sorted by name) and our (insertion) order agree: p10 is last. */
  name: string;
  path: { prefix: string } | { exact: string };
  methods: string[];
  header?: { name: string; value: string };
  /** Service account of the allowed caller. */
  sa: string;
}

export const POLICIES: readonly BenchPolicy[] = [
  { name: 'p01-orders-read', path: { prefix: '/api/v1/orders' }, methods: ['GET', 'HEAD'], header: BENCH_HEADER, sa: CLIENT_SA },
  { name: 'p02-orders-write', path: { prefix: '/api/v1/orders' }, methods: ['POST', 'PUT'], header: BENCH_HEADER, sa: 'checkout' },
  { name: 'p03-payments', path: { prefix: '/api/v1/payments' }, methods: ['POST'], header: { name: 'x-request-class', value: 'critical' }, sa: 'checkout' },
  { name: 'p04-users-self', path: { prefix: '/api/v1/users/me' }, methods: ['GET'], header: BENCH_HEADER, sa: CLIENT_SA },
  { name: 'p05-admin', path: { prefix: '/admin' }, methods: ['GET', 'POST', 'DELETE'], sa: 'ops' },
  { name: 'p06-metrics', path: { exact: '/metrics' }, methods: ['GET'], sa: 'prometheus' },
  { name: 'p07-health', path: { exact: '/healthz' }, methods: ['GET'], sa: 'kubelet' },
  { name: 'p08-search', path: { prefix: '/api/v1/search' }, methods: ['GET'], header: { name: 'x-tenant', value: 'globex' }, sa: CLIENT_SA },
  { name: 'p09-inventory', path: { prefix: '/api/v2/inventory' }, methods: ['GET', 'PUT'], sa: 'warehouse' },
  { name: 'p10-catalog-read', path: { prefix: '/api/v1/catalog' }, methods: ['GET', 'HEAD'], header: BENCH_HEADER, sa: CLIENT_SA },
];

export const spiffe = (sa: string) => `spiffe://${TRUST_DOMAIN}/ns/${NS}/sa/${sa}`;

/** The policies as the config of one envoy.filters.http.rbac filter (proto3 JSON). */
export function envoyRbac(list: readonly BenchPolicy[] = POLICIES): Record<string, unknown> {
  const policies: Record<string, unknown> = {};
  for (const p of list) {
    const rules: unknown[] = [{ urlPath: { path: p.path } }];
    rules.push({ orRules: { rules: p.methods.map((m) => ({ header: { name: ':method', stringMatch: { exact: m } } })) } });
    if (p.header) rules.push({ header: { name: p.header.name, stringMatch: { exact: p.header.value } } });
    policies[p.name] = {
      permissions: [{ andRules: { rules } }],
      principals: [{ authenticated: { principalName: { exact: spiffe(p.sa) } } }],
    };
  }
  return { '@type': RBAC_TYPE, rules: { action: 'ALLOW', policies } };
}

/**
 * The same policies as HAProxy inbound rules. Without mTLS HAProxy has no peer identity, so the
 * principal becomes the caller's source address (the client pod's IP for the client's service
 * account, addresses of no pod for the others): one more ACL per policy, as cheap as a principal
 * comparison.
 */
function haproxyRules(saIp: (sa: string) => string): string[] {
  const out: string[] = [];
  const id = (p: BenchPolicy) => p.name.replace(/-/g, '_');
  for (const p of POLICIES) {
    const n = id(p);
    out.push('exact' in p.path ? `acl ${n}_path path ${p.path.exact}` : `acl ${n}_path path_beg ${p.path.prefix}`);
    out.push(`acl ${n}_method method ${p.methods.join(' ')}`);
    if (p.header) out.push(`acl ${n}_hdr req.hdr(${p.header.name}) -m str ${p.header.value}`);
    out.push(`acl ${n}_src src ${saIp(p.sa)}`);
  }
  for (const p of POLICIES) {
    const n = id(p);
    out.push(`http-request allow if ${n}_path ${n}_method${p.header ? ` ${n}_hdr` : ''} ${n}_src`);
  }
  out.push('http-request deny deny_status 403');
  return out;
}

// ---- options and results ---------------------------------------------------------------------

export interface L7Options {
  /** wrk connections per cell, one cell per value (default 16 and 1). */
  connections?: number[];
  /** Seconds per wrk run (default 10, quick 1). */
  durationS?: number;
  reps?: number;
  /**
   * Seconds of unmeasured wrk load per variant before the first repetition (default 5, quick 1).
   * The Node proxy's CPU per request keeps falling for tens of thousands of requests (JIT), so the
   * warm-up runs are kept in the data too.
   */
  warmupS?: number;
  variants?: L7Variant[];
  /** The sockmesh proxy's access log: 'none' (default, like the HAProxies) or 'stdout' (a pipe this process drains). */
  accessLog?: 'none' | 'stdout';
}

interface RunSample {
  rps: number;
  requests: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  mean: number;
  cpuPerReq: number;
  wrkCpuPerReq: number;
  serverCpuPerReq: number;
  proxyCpuPerReq: number;
  steeredConns: number;
  redirectsPerReq: number;
}

export interface L7Row {
  variant: L7Variant;
  connections: number;
  rps: number;
  p50_us: number;
  p90_us: number;
  p99_us: number;
  p999_us: number;
  cpu_us_per_req: number;
  wrk_cpu_us_per_req: number;
  server_cpu_us_per_req: number;
  proxy_cpu_us_per_req: number;
  redirects_per_req: number;
  runs: number;
}

interface Check {
  variant: L7Variant;
  what: string;
  expect: number;
  got: number;
}

interface Variant {
  key: L7Variant;
  client: string;
  url: string;
  server: number;
  /** Proxies on the path (sockmesh proxy, or both HAProxies). */
  proxies: number[];
}

// ---- helpers ---------------------------------------------------------------------------------

interface WrkReport {
  requests: number;
  duration_us: number;
  bytes: number;
  errors: { connect: number; read: number; write: number; status: number; timeout: number };
  latency_us: { min: number; mean: number; max: number; p50: number; p90: number; p99: number; p999: number };
}

/** Run wrk in `pod` under bash so that `times` reports its CPU (getrusage of children, µs precise sum, printed in ms). */
async function runWrk(sb: Sandbox, pod: string, url: string, conns: number, durationS: number): Promise<{ rep: WrkReport; cpuUs: number }> {
  const wrap = 'wrk "$@"; rc=$?; times >&2; exit $rc';
  const args = ['-t1', `-c${conns}`, `-d${durationS}s`, '-s', WRK_SCRIPT, '-H', `${BENCH_HEADER.name}: ${BENCH_HEADER.value}`, url];
  const r = await sb.exec(pod, ['bash', '-c', wrap, WRK, ...args], { timeoutMs: (durationS + 60) * 1000 });
  const line = r.stdout.split('\n').find((l) => l.startsWith('{"wrk_report"'));
  if (r.code !== 0 || !line) throw new Error(`wrk ${args.join(' ')} in pod ${pod}: exit ${r.code ?? r.signal}${r.timedOut ? ' (timed out)' : ''}\n${r.stdout}\n${r.stderr}`);
  const times = [...r.stderr.matchAll(/(\d+)m([\d.]+)s (\d+)m([\d.]+)s/g)];
  if (times.length < 2) throw new Error(`wrk in pod ${pod}: no \`times\` output: ${r.stderr}`);
  const t = times[times.length - 1]; // second line: children (wrk)
  const cpuUs = (Number(t[1]) * 60 + Number(t[2]) + Number(t[3]) * 60 + Number(t[4])) * 1e6;
  return { rep: JSON.parse(line) as WrkReport, cpuUs };
}

/** HTTP status of one request made with curl from `pod` (a fresh connection). */
async function curlStatus(sb: Sandbox, pod: string, url: string, method: string, header: string): Promise<number> {
  const r = await sb.exec(pod, ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-X', method, '-H', header, '--max-time', '5', url], { timeoutMs: 15_000 });
  return Number(r.stdout.trim()) || 0;
}

/** Sum of the samples of a Prometheus metric whose labels include every `want` pair. */
function metricSum(text: string, name: string, want: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    const labels = /\{([^}]*)\}/.exec(line)?.[1] ?? '';
    if (Object.entries(want).every(([k, v]) => labels.includes(`${k}="${v}"`))) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

function killTree(c: ChildProcess | undefined): Promise<void> {
  if (!c || c.pid === undefined || c.exitCode !== null || c.signalCode !== null) return Promise.resolve();
  const gone = new Promise<void>((r) => c.once('close', () => r()));
  try {
    process.kill(-c.pid, 'SIGKILL');
  } catch {
    return Promise.resolve();
  }
  return gone;
}

const fmt = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '–');

// ---- the scenario ------------------------------------------------------------------------------

export async function runL7(opts: L7Options & ScenarioOptions): Promise<ScenarioResult> {
  const log = opts.log;
  const conns = opts.connections ?? [16, 1];
  const durationS = opts.durationS ?? (opts.quick ? 1 : 10);
  const reps = opts.reps ?? (opts.quick ? 1 : 3);
  const warmupS = opts.warmupS ?? (opts.quick ? 1 : 5);
  const keys = opts.variants ?? [...ALL_VARIANTS];
  const accessLog = opts.accessLog ?? 'none';
  for (const k of keys) if (!ALL_VARIANTS.includes(k)) throw new Error(`l7: unknown variant '${k}' (${ALL_VARIANTS.join(', ')})`);
  if (!Number.isInteger(durationS) || durationS < 1) throw new Error('l7: duration must be a whole number of seconds >= 1 (wrk -d)');
  if (conns.some((c) => !Number.isInteger(c) || c < 1)) throw new Error('l7: connections must be integers >= 1');
  if (!fs.existsSync(WRK)) throw new Error(`l7: ${WRK} not found (Debian package wrk)`);

  Sandbox.cleanupStale('smbench');
  const sb = await Sandbox.create({
    prefix: 'smbench',
    nodes: [
      {
        name: 'node1',
        pods: [
          { name: 'uc', meshed: false }, // direct
          { name: 'us', meshed: false },
          { name: 'mc' }, // sockmesh client (workload frontend), l7 and l4
          { name: 'ms' }, // sockmesh server (workload catalog), behind HTTP rules
          // The L4 variant's server: a port with HTTP rules takes connections from the L7 proxy
          // only, so the L4 path needs a server of its own (same workload, same code).
          { name: 'm4' },
          { name: 'proxy' }, // the node's L7 proxy
          { name: 'sc', meshed: false }, // sidecar
          { name: 'ss', meshed: false },
        ],
      },
    ],
  });
  const servers: ServerHandle[] = [];
  let sidecars: Sidecars | undefined;
  let agent: Agent | undefined;
  let proxy: ChildProcess | undefined;
  let tmp: string | undefined;
  let bpffs: string | undefined;
  try {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'smbench-l7-'));
    bpffs = path.join(sb.ensureBpffsDir(), 'l7');
    // Upstream app: the native tool's HTTP mode if this build has it, else podtool's Node server.
    let upstream = 'native pingpong --mode http';
    const startServer = async (pod: string): Promise<number> => {
      if (upstream.startsWith('native')) {
        try {
          const bin = ensureNativePingpong();
          const child = sb.spawn(pod, [bin, '--serve', '--mode', 'http', '--port', String(APP_PORT)], { stdio: ['ignore', 'pipe', 'pipe'] });
          const h = await waitServer(child, 15_000, `${pod}: native http server`);
          servers.push(h);
          return h.child.pid!;
        } catch (e) {
          log(`l7: native HTTP server unavailable (${(e as Error).message.split('\n')[0]}); using podtool serve-http`);
          upstream = 'podtool serve-http (Node)';
        }
      }
      const h = await sb.startServer(pod, ['serve-http', '--port', String(APP_PORT), '--name', pod]);
      servers.push(h);
      return h.child.pid!;
    };
    const serverPod: Record<L7Variant, string> = { direct: 'us', l7: 'ms', l4: 'm4', sidecar: 'ss' };
    const serverPid: Record<string, number> = {};
    for (const k of keys) serverPid[serverPod[k]] ??= await startServer(serverPod[k]);

    // ---- sockmesh: agent in this process (a static model), proxy in its pod
    const needMesh = keys.includes('l7') || keys.includes('l4');
    let proxyStdoutLines = 0;
    if (needMesh) {
      const ip = (n: string) => sb.pod(n).ipv4;
      const model: Model = {
        services: [
          { namespace: NS, name: 'catalog', vips: [VIP_L7], ports: [{ port: 80, protocol: 'TCP', targetPort: APP_PORT }] },
          { namespace: NS, name: 'catalog-l4', vips: [VIP_L4], ports: [{ port: 80, protocol: 'TCP', targetPort: APP_PORT }] },
        ],
        endpoints: [
          { service: `${NS}/catalog`, address: ip('ms'), weight: 1, healthy: true },
          { service: `${NS}/catalog-l4`, address: ip('m4'), weight: 1, healthy: true },
        ],
        workloads: [
          { namespace: NS, name: 'frontend', serviceAccount: CLIENT_SA, ips: [ip('mc')], node: 'node1' },
          { namespace: NS, name: 'catalog', serviceAccount: 'catalog', ips: [ip('ms')], node: 'node1' },
          { namespace: NS, name: 'catalog-l4', serviceAccount: 'catalog', ips: [ip('m4')], node: 'node1' },
        ],
        policies: { l4: [], l7: [{ destination: { ip: VIP_L7, port: 80 }, filters: [{ name: 'envoy.filters.http.rbac', config: envoyRbac() }] }] },
      };
      const control = path.join(tmp, 'proxy.sock');
      const proxyPod = sb.pod('proxy');
      agent = new Agent({
        source: new StaticSource({ model, nodeName: 'node1' }, 'bench/l7 model'),
        cgroupPath: sb.node('node1').cgroupPath,
        bpffsDir: bpffs,
        // No cgroupPath: the proxy reports its own cgroup in its hello, and the agent exempts it.
        proxy: { host: proxyPod.ipv4, port: PROXY_PORT, controlPath: control },
        log: createLogger({ level: 'warn' }),
      });
      const report = await agent.start();
      if (report.errors.length) throw report.errors[0];
      // As demo/demo.ts runs it: the proxy's pod netns and cgroup, the host's /sys/fs/bpf. Own
      // process group: killed as one.
      const args = ['proxy', '--listen', `${proxyPod.ipv4}:${PROXY_PORT}`, '--bpffs', bpffs, '--control', control, '--metrics', PROXY_METRICS];
      args.push('--access-log', accessLog);
      proxy = sb.spawnSockmesh('proxy', args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let proxyErr = '';
      proxy.stderr!.setEncoding('utf8').on('data', (d: string) => (proxyErr = (proxyErr + d).slice(-20_000)));
      // Drained (else the proxy blocks on a full pipe) and counted: one line per request with
      // --access-log stdout, none at all with none (checked after every run).
      proxy.stdout?.on('data', (d: Buffer) => {
        for (const b of d) if (b === 10) proxyStdoutLines++;
      });
      const proxyCgroup = fs.statSync(proxyPod.cgroupPath, { bigint: true }).ino;
      const deadline = Date.now() + 20_000;
      while (!(proxyErr.includes('"policies applied"') && agent.datapath.proxyConfig()?.proxyCgroupId === proxyCgroup && agent.proxySteering().size > 0)) {
        if (proxy.exitCode !== null || proxy.signalCode !== null) throw new Error(`sockmesh proxy exited (${proxy.exitCode ?? proxy.signalCode}): ${proxyErr}`);
        if (Date.now() > deadline) throw new Error(`sockmesh proxy: no "policies applied" / cgroup exemption within 20 s: ${proxyErr}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    const proxyMetrics = async (): Promise<string> => {
      const r = await sb.exec('proxy', ['curl', '-sf', `http://${PROXY_METRICS}/metrics`], { timeoutMs: 10_000 });
      if (r.code !== 0) throw new Error(`proxy /metrics: curl exit ${r.code}: ${r.stderr}`);
      return r.stdout;
    };

    if (keys.includes('sidecar')) {
      const clientIp = sb.pod('sc').ipv4;
      // Callers other than the frontend: addresses in the node's subnet that no pod has.
      const others = [...new Set(POLICIES.map((p) => p.sa).filter((sa) => sa !== CLIENT_SA))];
      sidecars = await startHttpSidecars(sb, 'sc', 'ss', APP_PORT, {
        inboundRules: haproxyRules((sa) => (sa === CLIENT_SA ? clientIp : `198.18.1.${200 + others.indexOf(sa)}`)),
      });
    }

    const all: Record<L7Variant, Omit<Variant, 'server'>> = {
      direct: { key: 'direct', client: 'uc', url: `http://${sb.pod('us').ipv4}:${APP_PORT}`, proxies: [] },
      l7: { key: 'l7', client: 'mc', url: `http://${VIP_L7}:80`, proxies: proxy?.pid ? [proxy.pid] : [] },
      sidecar: { key: 'sidecar', client: 'sc', url: `http://${sidecars?.target ?? ''}`, proxies: sidecars?.pids ?? [] },
      l4: { key: 'l4', client: 'mc', url: `http://${VIP_L4}:80`, proxies: [] },
    };
    const variants: Variant[] = keys.map((k) => ({ ...all[k], server: serverPid[serverPod[k]] }));

    // ---- the policies are in force (and the allowed request passes) before anything is measured
    const hdr = `${BENCH_HEADER.name}: ${BENCH_HEADER.value}`;
    const checks: Check[] = [];
    for (const v of variants) {
      const guarded = v.key === 'l7' || v.key === 'sidecar';
      const cases: Array<[string, string, string, string, number]> = [
        [`GET ${BENCH_PATH}`, 'GET', BENCH_PATH, hdr, 200],
        ...(guarded
          ? ([
              ['GET /admin/users (p05 allows only sa ops)', 'GET', '/admin/users', hdr, 403],
              [`POST ${BENCH_PATH} (method)`, 'POST', BENCH_PATH, hdr, 403],
              [`GET ${BENCH_PATH} with x-tenant: globex`, 'GET', BENCH_PATH, `${BENCH_HEADER.name}: globex`, 403],
            ] as Array<[string, string, string, string, number]>)
          : []),
      ];
      for (const [what, method, p, h, expect] of cases) {
        const got = await curlStatus(sb, v.client, `${v.url}${p}`, method, h);
        checks.push({ variant: v.key, what, expect, got });
        log(`l7 check ${v.key.padEnd(8)} ${what.padEnd(44)} -> ${got} (want ${expect})`);
      }
    }
    const bad = checks.filter((c) => c.got !== c.expect);
    if (bad.length) throw new Error(`l7: policy checks failed: ${bad.map((c) => `${c.variant} ${c.what}: got ${c.got}, want ${c.expect}`).join('; ')}`);
    if (keys.includes('l7')) {
      const m = await proxyMetrics();
      const allowedBy = metricSum(m, 'sockmesh_proxy_requests_total', { decision: 'allow', policy: POLICIES[POLICIES.length - 1].name });
      if (allowedBy < 1) throw new Error(`l7: the proxy's metrics do not show the check request allowed by ${POLICIES[POLICIES.length - 1].name}:\n${m}`);
    }

    // ---- measure
    const counters = () => (agent ? agent.datapath.counters() : undefined);
    const samples = new Map<string, RunSample[]>();
    const cell = async (v: Variant, c: number, d: number, measured: boolean, tag: string): Promise<void> => {
      const k0 = counters();
      const m0 = v.key === 'l7' ? await proxyMetrics() : '';
      const s0 = pidsCpuUs([v.server]);
      const p0 = pidsCpuUs(v.proxies);
      const logLines0 = proxyStdoutLines;
      const { rep, cpuUs } = await runWrk(sb, v.client, `${v.url}${BENCH_PATH}`, c, d);
      const s1 = pidsCpuUs([v.server]);
      const p1 = pidsCpuUs(v.proxies);
      const k1 = counters();
      const e = rep.errors;
      const nerr = e.connect + e.read + e.write + e.status + e.timeout;
      if (nerr > 0 || rep.requests === 0) {
        throw new Error(`l7: ${LABEL[v.key]}, ${c} conns (${tag}): ${rep.requests} requests, errors ${JSON.stringify(e)} — the allowed path must not fail`);
      }
      if (v.key === 'l7') {
        // Every request wrk counted went through the proxy and was allowed by the last policy;
        // up to one more per connection may have been in flight when wrk stopped.
        const m1 = await proxyMetrics();
        const allow = (t: string) => metricSum(t, 'sockmesh_proxy_requests_total', { decision: 'allow', policy: POLICIES[POLICIES.length - 1].name });
        const all = (t: string) => metricSum(t, 'sockmesh_proxy_requests_total');
        const upErr = metricSum(m1, 'sockmesh_proxy_upstream_errors_total') - metricSum(m0, 'sockmesh_proxy_upstream_errors_total');
        const n = allow(m1) - allow(m0);
        const other = all(m1) - all(m0) - n;
        if (n < rep.requests || other !== 0 || upErr !== 0) {
          throw new Error(`l7: proxy metrics disagree with wrk (${tag}, ${c} conns): wrk ${rep.requests} requests, proxy allowed ${n} by the last policy, ${other} other decisions, ${upErr} upstream errors`);
        }
        if (n > rep.requests + c) log(`l7: warning: proxy allowed ${n} requests, wrk completed ${rep.requests} (${c} conns)`);
        if (accessLog === 'none' && proxyStdoutLines !== 0) {
          throw new Error(`l7: the proxy wrote ${proxyStdoutLines} stdout lines with --access-log none`);
        }
        if (accessLog === 'stdout' && proxyStdoutLines - logLines0 < rep.requests) {
          // The access log is written asynchronously; this is a hint, not a failure.
          log(`l7: note: ${proxyStdoutLines - logLines0} access-log lines for ${rep.requests} requests so far`);
        }
      }
      const steered = k0 && k1 ? Number(k1.l7_steered - k0.l7_steered) : 0;
      const redirects = k0 && k1 ? Number(k1.msg_redirected - k0.msg_redirected) : 0;
      const n = rep.requests;
      const sample: RunSample = {
        rps: n / (rep.duration_us / 1e6),
        requests: n,
        p50: rep.latency_us.p50,
        p90: rep.latency_us.p90,
        p99: rep.latency_us.p99,
        p999: rep.latency_us.p999,
        mean: rep.latency_us.mean,
        cpuPerReq: (cpuUs + (s1 - s0) + (p1 - p0)) / n,
        wrkCpuPerReq: cpuUs / n,
        serverCpuPerReq: (s1 - s0) / n,
        proxyCpuPerReq: (p1 - p0) / n,
        steeredConns: steered,
        redirectsPerReq: redirects / n,
      };
      // wrk's default resolve() test-connects once before the run, so a run opens c + 1 connections.
      if (v.key === 'l7' && steered < c) throw new Error(`l7: only ${steered} connections steered to the proxy for ${c} wrk connections (${tag})`);
      log(
        `l7 ${tag.padEnd(10)} c=${String(c).padStart(3)} ${LABEL[v.key].padEnd(34)} ${fmt(sample.rps, 0).padStart(7)} req/s  p50 ${fmt(sample.p50, 0).padStart(5)} us  ` +
          `p99 ${fmt(sample.p99, 0).padStart(6)} us  cpu ${fmt(sample.cpuPerReq).padStart(6)} us/req (wrk ${fmt(sample.wrkCpuPerReq)}, server ${fmt(sample.serverCpuPerReq)}, proxy ${fmt(sample.proxyCpuPerReq)})` +
          (v.key === 'l4' ? `  redirects/req ${fmt(sample.redirectsPerReq, 2)}` : '') +
          (v.key === 'l7' ? `  steered conns ${steered}` : ''),
      );
      const key = `${measured ? '' : 'warmup|'}${c}|${v.key}`;
      if (!samples.has(key)) samples.set(key, []);
      samples.get(key)!.push(sample);
    };

    // Warm-up: JIT of the Node proxy, HAProxy's and the kernel's caches, server connections.
    for (const v of variants) await cell(v, Math.max(...conns), warmupS, false, 'warm-up');
    for (let rep = 0; rep < reps; rep++) {
      for (const [ci, c] of conns.entries()) {
        // Rotate which variant goes first, so drift in machine load hits all alike.
        for (const v of rotate(variants, rep + ci)) await cell(v, c, durationS, true, `rep ${rep + 1}/${reps}`);
      }
    }

    // ---- report
    const rows: L7Row[] = [];
    for (const c of conns) {
      for (const v of variants) {
        const s = samples.get(`${c}|${v.key}`)!;
        const med = (f: (x: RunSample) => number) => median(s.map(f));
        rows.push({
          variant: v.key,
          connections: c,
          rps: med((x) => x.rps),
          p50_us: med((x) => x.p50),
          p90_us: med((x) => x.p90),
          p99_us: med((x) => x.p99),
          p999_us: med((x) => x.p999),
          cpu_us_per_req: med((x) => x.cpuPerReq),
          wrk_cpu_us_per_req: med((x) => x.wrkCpuPerReq),
          server_cpu_us_per_req: med((x) => x.serverCpuPerReq),
          proxy_cpu_us_per_req: med((x) => x.proxyCpuPerReq),
          redirects_per_req: med((x) => x.redirectsPerReq),
          runs: s.length,
        });
      }
    }
    const warm = variants
      .map((v) => ({ v, s: samples.get(`warmup|${Math.max(...conns)}|${v.key}`)?.[0] }))
      .filter((x) => x.s)
      .map((x) => `${LABEL[x.v.key]} ${fmt(x.s!.cpuPerReq)} µs/req at ${fmt(x.s!.rps, 0)} req/s`);
    const markdown = renderMarkdown({ rows, checks, conns, durationS, reps, warmupS, upstream, accessLog, keys, counters: counters(), warm });
    const charts = buildCharts(rows, conns, keys);
    return {
      name: 'l7',
      title: 'L7: wrk through 10 RBAC policies vs an HAProxy HTTP sidecar pair',
      markdown,
      data: {
        options: { connections: conns, durationS, reps, warmupS, variants: keys, accessLog, quick: opts.quick },
        upstream,
        wrk: { threads: 1, script: 'bench/wrk-report.lua', path: BENCH_PATH, header: `${BENCH_HEADER.name}: ${BENCH_HEADER.value}` },
        policies: POLICIES,
        checks,
        rows,
        samples: Object.fromEntries(samples),
      },
      charts,
    };
  } finally {
    if (sidecars) await sidecars.stop().catch(() => undefined);
    await killTree(proxy);
    agent?.stop();
    for (const s of servers) await s.stop();
    if (bpffs && fs.existsSync(bpffs)) Datapath.remove(bpffs);
    await sb.teardown();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  }
}

function renderMarkdown(r: {
  rows: L7Row[];
  checks: Check[];
  conns: number[];
  durationS: number;
  reps: number;
  warmupS: number;
  upstream: string;
  accessLog: string;
  keys: L7Variant[];
  counters?: Record<string, bigint>;
  warm: string[];
}): string {
  const lines = [
    '| conns | variant | req/s | p50 (µs) | p90 (µs) | p99 (µs) | added p50 vs direct (µs) | req/s vs direct | p50 vs direct | CPU/req (µs) | wrk / server / proxy (µs) | CPU vs direct |',
    '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|',
  ];
  const ratio = (a: number, b?: number) => (b ? `${(a / b).toFixed(2)}×` : '–');
  for (const c of r.conns) {
    const base = r.rows.find((x) => x.connections === c && x.variant === 'direct');
    for (const x of r.rows.filter((y) => y.connections === c)) {
      const added = base ? `${x.p50_us - base.p50_us >= 0 ? '+' : ''}${fmt(x.p50_us - base.p50_us, 0)}` : '–';
      lines.push(
        `| ${c} | ${LABEL[x.variant]} | ${fmt(x.rps, 0)} | ${fmt(x.p50_us, 0)} | ${fmt(x.p90_us, 0)} | ${fmt(x.p99_us, 0)} | ${added} | ` +
          `${ratio(x.rps, base?.rps)} | ${ratio(x.p50_us, base?.p50_us)} | ${fmt(x.cpu_us_per_req)} | ` +
          `${fmt(x.wrk_cpu_us_per_req)} / ${fmt(x.server_cpu_us_per_req)} / ${fmt(x.proxy_cpu_us_per_req)} | ${ratio(x.cpu_us_per_req, base?.cpu_us_per_req)} |`,
      );
    }
  }
  const checkLines = ['| variant | request | status | expected |', '|---|---|---:|---:|'];
  for (const c of r.checks) checkLines.push(`| ${LABEL[c.variant]} | ${c.what} | ${c.got} | ${c.expect} |`);
  const k = r.counters;
  const l4 = r.rows.filter((x) => x.variant === 'l4');
  return [
    lines.join('\n'),
    '',
    `wrk 4.1 (\`-t1 -cN -d${r.durationS}s\`, keep-alive, one request in flight per connection), ` +
      `\`GET ${BENCH_PATH}\` with \`${BENCH_HEADER.name}: ${BENCH_HEADER.value}\`; ${r.reps} interleaved repetitions per cell ` +
      `(variant order rotated), after ${r.warmupS} s of unmeasured load per variant; medians of per-run values. ` +
      `Upstream: ${r.upstream} on :${APP_PORT}. sockmesh proxy access log: ${r.accessLog}.` +
      (k ? ` Kernel counters after the run: l7_steered=${k.l7_steered} msg_redirected=${k.msg_redirected} msg_fallback=${k.msg_fallback}.` : '') +
      (l4.length ? ` sk_msg redirects per request on the L4 row: ${l4.map((x) => `${fmt(x.redirects_per_req, 2)} (c=${x.connections})`).join(', ')}.` : '') +
      ` CPU/req during the (unmeasured) warm-up, ${Math.max(...r.conns)} conns: ${r.warm.join('; ')}.`,
    '',
    '**Policies in force.** The sockmesh proxy evaluates one `envoy.filters.http.rbac` filter, action ALLOW, with 10 policies; ' +
      'each is path (prefix or exact) AND method (one of a list) AND, for most, a header, from one SPIFFE principal — the shape ' +
      'istiod gives an AuthorizationPolicy with ten rules. The benchmarked request matches only the tenth (`p10-catalog-read`), so all ten ' +
      'are evaluated on every request (the proxy\'s metrics confirm, per run, that every request wrk completed was allowed by that policy). ' +
      'The inbound HAProxy has the same ten rules as `acl` (path_beg/path, method, req.hdr, and `src` = the caller pod\'s IP standing in for the principal, ' +
      'since without mTLS HAProxy has no peer identity) + `http-request allow if ...` ×10 + `http-request deny deny_status 403`. Checked before measuring:',
    '',
    checkLines.join('\n'),
    '',
    '**Method.** CPU/req = CPU of wrk (getrusage of the child, via bash `times`, ms resolution over the run) + CPU of the server and of the proxy ' +
      '(sockmesh proxy, or both HAProxies) over the run from `/proc/PID/task/*/schedstat`, divided by the requests wrk completed. Softirq work is ' +
      'charged to whichever task was on the CPU, so the network stack is in these numbers (mostly). Every run must have zero wrk socket errors, ' +
      'timeouts and non-2xx/3xx responses, or the scenario fails. HAProxy: `mode http`, one thread per proxy, `option http-keep-alive` on ' +
      'both, `http-reuse always` on both backends (idle server connections are shared; the client side stays keep-alive), no access log. ' +
      'The sockmesh proxy is the Node process `sockmesh proxy` (one event loop; undici keep-alive pool upstream).',
    '',
    '**Caveats.** 2 vCPUs shared by wrk, the server and the proxies: at 16 connections every variant is CPU-bound, so req/s measures ' +
      'total CPU per request more than anything else, and latency includes queueing behind the other processes. Absolute numbers swing between ' +
      'runs on this VM; compare rows within a run. **Read p90/p99 with care**: wrk measures closed-loop (a new request only after the previous ' +
      'response), and before reporting it adds synthetic samples for every request slower than twice the mean per-connection interval I ' +
      '(its coordinated-omission correction, `stats_correct`): a stall of S adds about S/I samples, so on this VM, where the vCPUs stall for ' +
      'milliseconds now and then, the tail is dominated by synthetic samples and the FASTER variant (smaller I) is penalised more. p50 is ' +
      'robust to this. wrk 4.1 keeps latencies in a linear histogram of 1 µs buckets (exact percentiles to the µs), not an HdrHistogram. ' +
      'The Node proxy gets faster for a long while (JIT): see its warm-up CPU/req above. The sidecar pair is a cheap ' +
      'sidecar: no TLS, no iptables capture (the client addresses its outbound proxy), no telemetry. The sockmesh L7 path has no TLS either. ' +
      'Same node only.',
    '',
  ].join('\n');
}

function buildCharts(rows: L7Row[], conns: number[], keys: L7Variant[]): ChartSpec[] {
  const groups = conns.map((c) => `${c} conn${c === 1 ? '' : 's'}`);
  const series = (f: (r: L7Row) => number) =>
    keys.map((k) => ({ label: LABEL[k], values: conns.map((c) => rows.find((r) => r.variant === k && r.connections === c)).map((r) => (r ? f(r) : null)) }));
  const latGroups = conns.flatMap((c) => [`p50, ${c} conn${c === 1 ? '' : 's'}`, `p99, ${c} conn${c === 1 ? '' : 's'}`]);
  const latSeries = keys.map((k) => ({
    label: LABEL[k],
    values: conns.flatMap((c) => {
      const r = rows.find((x) => x.variant === k && x.connections === c);
      return [r ? r.p50_us : null, r ? r.p99_us : null];
    }),
  }));
  return [
    { name: 'l7-rps', title: 'wrk requests/s (higher is better)', unit: 'req/s', groups, series: series((r) => r.rps) },
    { name: 'l7-latency', title: 'wrk latency p50 / p99 (lower is better)', unit: 'µs', groups: latGroups, series: latSeries },
    { name: 'l7-cpu', title: 'CPU per request: wrk + server + proxies (lower is better)', unit: 'µs', groups, series: series((r) => r.cpu_us_per_req) },
  ];
}

// ---- standalone ------------------------------------------------------------------------------

export function l7Args(argv: string[], quick = false): L7Options & { out?: string } {
  const { values } = parseArgs({
    args: argv,
    options: {
      connections: { type: 'string', default: '16,1' },
      duration: { type: 'string', default: quick ? '1' : '10' },
      reps: { type: 'string', default: quick ? '1' : '3' },
      warmup: { type: 'string', default: quick ? '1' : '5' },
      variants: { type: 'string', default: ALL_VARIANTS.join(',') },
      'access-log': { type: 'string', default: 'none' },
      out: { type: 'string' },
    },
  });
  const al = values['access-log'];
  if (al !== 'none' && al !== 'stdout') throw new Error(`--access-log: '${al}' is not none or stdout`);
  return {
    connections: intListArg(values.connections!, 'connections'),
    durationS: intArg(values.duration!, 'duration', 1),
    reps: intArg(values.reps!, 'reps', 1),
    warmupS: intArg(values.warmup!, 'warmup', 1),
    variants: values.variants!.split(',').filter(Boolean) as L7Variant[],
    accessLog: al,
    out: values.out,
  };
}

if (require.main === module) runStandalone(l7Args, runL7);
