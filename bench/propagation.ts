// Config propagation (issue 6, scenario 4): how long from a change of the control plane's file to
// the change being in the kernel maps, for one endpoint and for a full 10k-service push.
//
// Real processes, as in demo/demo.ts: `sockmesh control-plane --config FILE` (it watches FILE) and
// `sockmesh agent --xds` fed by it, attached to a sandbox node's cgroup with its pins under the
// sandbox's bpffs directory. The bench writes the file the way config management does (a
// temporary file renamed over it), takes t0 just before that write, and then polls the pinned
// maps itself (bench/kernelmaps.ts) until the kernel shows the change: t1. Logs are not trusted
// for the end time; they only split it into stages:
//
//   t0 ─▶ control plane log "config changed" (file watch debounce, re-read, validate, build the
//         snapshot) ─▶ agent log "xds: update" (push, decode, validate) ─▶ kernel (t1: translate,
//         diff, map writes) ─▶ agent log "applied config" (written after the apply returns).
//
// Log times are wall clock with 1 ms resolution (pino isoTime); the kernel poll has the interval
// given by --poll-us plus one lookup.
//
// Cases:
//   one endpoint: the first endpoint of the last service alternates between two addresses, R
//     changes per (config size, xDS mode); the agent's mode is fixed at its start, so modes are
//     interleaved by restarting the agent in blocks (order rotated per block); the datapath stays
//     pinned across restarts and the new agent adopts it.
//   full push: small config (a few services) -> N services x E endpoints and back, t1 when the
//     last service has all E backends and the service count is right (push), or when the last
//     service is gone and the count is back (removal).
//
// CPU per change = CPU time (user+sys, /proc/PID/task/*/schedstat) of the control plane and of the
// agent from t0 until both are quiet again.
//
//   node dist/bench/propagation.js [--quick] [--sizes 1000,10000] [--changes 50] [--blocks 5]
//        [--modes sotw,delta] [--push-services 10000] [--push-reps 5] [--push-modes sotw,delta]
//        [--endpoints 10] [--poll-us 200] [--out FILE.json]
import { ChildProcess, spawn, StdioOptions } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { IPPROTO_TCP, SvcKey } from '../abi/codecs';
import { Sandbox, SOCKMESH_CLI } from '../sandbox/sandbox';
import { ChartSpec, median, percentile, procCpuUs, procRss, rotate, ScenarioOptions, ScenarioResult, intArg, intListArg, runStandalone } from './common';
import { ServiceProbe } from './kernelmaps';

/** How the agent gets its config: over xDS from the control plane (SotW or Delta), or the file itself. */
export type XdsMode = 'sotw' | 'delta' | 'file';

// ---- configs -------------------------------------------------------------------------------

// Addresses, all inside 198.18.0.0/15 and never contacted. The sandbox has one node, whose pods
// are in 198.18.1.0/24 (and 198.18.250.0/24 would hold inter-node links): these stay clear of it.
const ipInt = (s: string): number => s.split('.').reduce((a, o) => a * 256 + Number(o), 0);
const intIp = (n: number): string => [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');
const VIP_BASE = ipInt('198.19.0.1'); // services: 198.19.0.1 .. 198.19.63.255
const MAX_SERVICES = ipInt('198.19.64.0') - VIP_BASE;
const EP_POOLS: Array<[number, number]> = [
  [ipInt('198.19.64.1'), ipInt('198.19.255.255')],
  [ipInt('198.18.8.1'), ipInt('198.18.249.255')],
];
const MAX_ENDPOINTS = EP_POOLS.reduce((a, [lo, hi]) => a + hi - lo + 1, 0);
/** The address the toggled endpoint takes in its "changed" state. */
export const TOGGLE_ADDR = '198.18.5.1';
const SERVICE_PORT = 80;
const TARGET_PORT = 8080;

export function vipOf(i: number): string {
  if (i >= MAX_SERVICES) throw new Error(`at most ${MAX_SERVICES} services`);
  return intIp(VIP_BASE + i);
}

export function endpointAddr(g: number): string {
  let rest = g;
  for (const [lo, hi] of EP_POOLS) {
    if (rest <= hi - lo) return intIp(lo + rest);
    rest -= hi - lo + 1;
  }
  throw new Error(`at most ${MAX_ENDPOINTS} endpoints`);
}

export const serviceName = (i: number): string => `s${String(i).padStart(5, '0')}`;
export const serviceKey = (i: number): SvcKey => ({ ip: vipOf(i), port: SERVICE_PORT, proto: IPPROTO_TCP });

export interface BenchConfig {
  services: number;
  endpointsPerService: number;
  /** Every n-th service (0, n, 2n, ...) gets HTTP rules (an Envoy listener with an RBAC filter). 0: none. */
  l7Every?: number;
  /** The first endpoint of the last service is at TOGGLE_ADDR instead of its own address. */
  toggled?: boolean;
  /** Local pods: workloads on node1. */
  workloads: Array<{ name: string; ip: string; cgroup?: string }>;
}

/** The L7 listener istiod would send for a service with an HTTP RBAC filter (as in demo/demo.ts). */
function l7Listener(i: number): string {
  const vip = vipOf(i);
  const host = `${serviceName(i)}.bench.svc.cluster.local`;
  const at = (t: string) => `type.googleapis.com/${t}`;
  const res = {
    '@type': at('envoy.config.listener.v3.Listener'),
    name: `${vip}_${SERVICE_PORT}`,
    address: { socketAddress: { address: vip, portValue: SERVICE_PORT } },
    filterChains: [
      {
        filters: [
          {
            name: 'envoy.filters.network.http_connection_manager',
            typedConfig: {
              '@type': at('envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager'),
              statPrefix: `outbound_${vip}_${SERVICE_PORT}`,
              routeConfig: {
                name: serviceName(i),
                virtualHosts: [{ name: serviceName(i), domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: `outbound|${SERVICE_PORT}||${host}` } }] }],
              },
              httpFilters: [
                {
                  name: 'envoy.filters.http.rbac',
                  typedConfig: {
                    '@type': at('envoy.extensions.filters.http.rbac.v3.RBAC'),
                    rules: {
                      action: 'DENY',
                      policies: { 'deny-admin': { permissions: [{ urlPath: { path: { prefix: '/admin' } } }], principals: [{ any: true }] } },
                    },
                  },
                },
                { name: 'envoy.filters.http.router', typedConfig: { '@type': at('envoy.extensions.filters.http.router.v3.Router') } },
              ],
            },
          },
        ],
      },
    ],
  };
  return `  - ${JSON.stringify(res)}\n`; // JSON is YAML: one flow line per resource
}

/** The control plane's file (the agent's format plus `xds:`), one flow-style line per entry. */
export function configYaml(c: BenchConfig): string {
  const n = c.services;
  const e = c.endpointsPerService;
  if (n * e > MAX_ENDPOINTS) throw new Error(`at most ${MAX_ENDPOINTS} endpoints`);
  const out: string[] = ['# generated by bench/propagation.ts\nnode: node1\nservices:\n'];
  for (let i = 0; i < n; i++) {
    out.push(`  - { name: ${serviceName(i)}, namespace: bench, vips: [${vipOf(i)}], ports: [{ name: http, port: ${SERVICE_PORT}, targetPort: ${TARGET_PORT} }] }\n`);
  }
  out.push(n ? 'endpoints:\n' : 'endpoints: []\n');
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < e; j++) {
      const addr = c.toggled && i === n - 1 && j === 0 ? TOGGLE_ADDR : endpointAddr(i * e + j);
      out.push(`  - { service: bench/${serviceName(i)}, address: ${addr} }\n`);
    }
  }
  out.push(c.workloads.length ? 'workloads:\n' : 'workloads: []\n');
  for (const w of c.workloads) {
    out.push(`  - { namespace: bench, name: ${w.name}, serviceAccount: ${w.name}, ips: [${w.ip}], node: node1${w.cgroup ? `, cgroup: ${JSON.stringify(w.cgroup)}` : ''} }\n`);
  }
  const l7 = c.l7Every ? Array.from({ length: n }, (_, i) => i).filter((i) => i % c.l7Every! === 0) : [];
  if (l7.length) out.push('xds:\n', ...l7.map(l7Listener));
  return out.join('');
}

/** --map-size arguments for configs up to `services` x `endpoints`: only what the defaults cannot hold. */
export function mapSizeArgs(services: number, endpointsPerService: number): string[] {
  const pow2 = (x: number) => 2 ** Math.ceil(Math.log2(x));
  const eps = services * endpointsPerService;
  const args: string[] = [];
  // Every endpoint address becomes a (synthetic) workload with an identity: sm_ip_identity holds them all.
  if (eps + 1024 > 65536) args.push('--map-size', `sm_ip_identity=${pow2((eps + 1024) * 1.25)}`);
  // A change writes a new generation beside the old one: room for twice the slots.
  if (2 * eps > 262144) args.push('--map-size', `sm_backends=${pow2(2 * eps)}`);
  if (services > 65536) args.push('--map-size', `sm_services=${pow2(services * 1.25)}`);
  return args;
}

// ---- processes and their logs ----------------------------------------------------------------

const wallMs = (): number => performance.timeOrigin + performance.now();

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** A process's JSON log lines, read from the file its stderr goes to. */
export class LogFile {
  readonly lines: any[] = [];
  private offset = 0;
  private partial = '';

  constructor(readonly path: string) {}

  /** Read what was appended since the last call. */
  poll(): void {
    let fd: number;
    try {
      fd = fs.openSync(this.path, 'r');
    } catch {
      return;
    }
    try {
      const size = fs.fstatSync(fd).size;
      if (size <= this.offset) return;
      const buf = Buffer.alloc(size - this.offset);
      const n = fs.readSync(fd, buf, 0, buf.length, this.offset);
      this.offset += n;
      const text = this.partial + buf.subarray(0, n).toString('utf8');
      const parts = text.split('\n');
      this.partial = parts.pop() ?? '';
      for (const l of parts) {
        try {
          this.lines.push(JSON.parse(l));
        } catch {
          this.lines.push({ msg: '(not json)', text: l });
        }
      }
    } finally {
      fs.closeSync(fd);
    }
  }

  /** First line from index `from` on that matches. */
  find(from: number, pred: (j: any) => boolean): any | undefined {
    this.poll();
    for (let i = from; i < this.lines.length; i++) if (pred(this.lines[i])) return this.lines[i];
    return undefined;
  }

  tail(n = 15): string {
    this.poll();
    return this.lines
      .slice(-n)
      .map((j) => JSON.stringify(j))
      .join('\n');
  }
}

export interface Proc {
  name: string;
  child: ChildProcess;
  pid: number;
  log: LogFile;
}

function alive(p: Proc): boolean {
  try {
    const st = fs.readFileSync(`/proc/${p.pid}/stat`, 'utf8');
    return st.slice(st.lastIndexOf(')') + 2, st.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Wait for a log line of `p` (from index `from`), failing early if `p` dies. */
export async function waitLog(p: Proc, pred: (j: any) => boolean, timeoutMs: number, from = 0, what = 'log line'): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const j = p.log.find(from, pred);
    if (j) return j;
    if (!alive(p)) throw new Error(`${p.name} exited while waiting for ${what}:\n${p.log.tail()}`);
    if (Date.now() > deadline) throw new Error(`${p.name}: no ${what} within ${timeoutMs} ms:\n${p.log.tail()}`);
    await sleep(20);
  }
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
export async function stopProc(p: Proc | undefined, graceMs = 5000): Promise<void> {
  if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return;
  const gone = new Promise<void>((r) => p.child.once('exit', () => r()));
  p.child.kill('SIGTERM');
  const t = setTimeout(() => p.child.kill('SIGKILL'), graceMs);
  await gone;
  clearTimeout(t);
}

/** Wait until the processes have used less than `thresholdUs` CPU over `windowMs`, twice in a row. */
export async function settle(pids: number[], maxMs: number, windowMs = 100, thresholdUs = 3000): Promise<void> {
  const cpu = () => pids.reduce((a, p) => a + procCpuUs(p), 0);
  const deadline = Date.now() + maxMs;
  let quiet = 0;
  let prev = cpu();
  while (quiet < 2 && Date.now() < deadline) {
    await sleep(windowMs);
    const now = cpu();
    quiet = now - prev < thresholdUs ? quiet + 1 : 0;
    prev = now;
  }
}

export interface PollResult {
  ok: boolean;
  /** process.hrtime.bigint() when the predicate first held. */
  atNs: bigint;
  polls: number;
}

/**
 * Call `pred` every `intervalUs` (blocking this thread, so nothing else of this process runs in
 * between; the children's logs go to files, not pipes, so they never block on us) until it holds.
 */
export function pollUntil(pred: () => boolean, timeoutMs: number, intervalUs: number, watch: Proc[] = []): PollResult {
  const deadline = process.hrtime.bigint() + BigInt(timeoutMs) * 1_000_000n;
  let polls = 0;
  let nextCheck = 0;
  for (;;) {
    polls++;
    if (pred()) return { ok: true, atNs: process.hrtime.bigint(), polls };
    const now = process.hrtime.bigint();
    if (now > deadline) return { ok: false, atNs: now, polls };
    if (polls >= nextCheck) {
      nextCheck = polls + 500;
      for (const p of watch) if (!alive(p)) throw new Error(`${p.name} exited:\n${p.log.tail()}`);
    }
    if (intervalUs > 0) sleepSync(intervalUs / 1000);
  }
}

export interface RigOptions {
  /** Initial config of the control plane. */
  config: BenchConfig;
  log: (line: string) => void;
}

/**
 * A sandbox node (pods `client` and `proxy`), the local control plane serving a file, and, on
 * demand, the agent (any xDS mode, restartable: the datapath stays pinned) and the L7 proxy.
 */
export class Rig {
  sb!: Sandbox;
  tmp!: string;
  bpffs!: string;
  /** The control plane's file. */
  cfgPath!: string;
  /** The agent's own file (mode 'file'): a separate file, so the control plane does not re-read it too. */
  agentCfgPath!: string;
  cp?: Proc;
  agent?: Proc;
  proxy?: Proc;
  private seq = 0;
  readonly log: (line: string) => void;

  private constructor(log: (line: string) => void) {
    this.log = log;
  }

  static async create(o: RigOptions): Promise<Rig> {
    const rig = new Rig(o.log);
    Sandbox.cleanupStale('smbench');
    rig.sb = await Sandbox.create({ prefix: 'smbench', nodes: [{ name: 'node1', pods: [{ name: 'client' }, { name: 'proxy' }] }] });
    try {
      rig.tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'smbench-prop-'));
      rig.bpffs = path.join(rig.sb.ensureBpffsDir(), 'x');
      rig.cfgPath = path.join(rig.tmp, 'mesh.yaml');
      rig.agentCfgPath = path.join(rig.tmp, 'agent.yaml');
      fs.writeFileSync(rig.cfgPath, configYaml(o.config));
      fs.writeFileSync(rig.agentCfgPath, configYaml({ ...o.config, l7Every: 0 }));
    } catch (e) {
      await rig.close();
      throw e;
    }
    return rig;
  }

  /** The pods as workloads of the config. */
  workloads(): BenchConfig['workloads'] {
    return [{ name: 'client', ip: this.sb.pod('client').ipv4, cgroup: this.sb.pod('client').cgroupPath }];
  }

  /** Start a process (`start` spawns it with the given stdio) with stderr to a log file. */
  private spawnLogged(name: string, start: (stdio: StdioOptions) => ChildProcess): Proc {
    const logPath = path.join(this.tmp, `${name}-${++this.seq}.log`);
    const fd = fs.openSync(logPath, 'a');
    try {
      const child = start(['ignore', 'ignore', fd]);
      if (child.pid === undefined) throw new Error(`${name}: spawn failed`);
      child.on('error', () => undefined);
      return { name, child, pid: child.pid, log: new LogFile(logPath) };
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * `sockmesh <args>` in the node's host cgroup (beside, not below, the meshed cgroup; root
   * network namespace), so that the sandbox's teardown kills it even when this process dies
   * without its finally (Ctrl-C).
   */
  private spawnSockmesh(name: string, args: string[]): Proc {
    const cg = this.sb.node('node1').hostCgroupPath;
    return this.spawnLogged(name, (stdio) => spawn('sh', ['-c', `echo $$ > "${cg}/cgroup.procs" && exec "$@"`, 'sh', SOCKMESH_CLI, ...args], { stdio }));
  }

  /** Start the control plane on the current file (a free loopback port; cpAddress says which). */
  async startControlPlane(): Promise<void> {
    this.cp = this.spawnSockmesh('control-plane', ['control-plane', '--config', this.cfgPath, '--listen', '127.0.0.1:0']);
    const j = await waitLog(this.cp, (l) => l.msg === 'control plane running', 300_000, 0, '"control plane running"');
    this.cpAddress = String(j.address);
  }

  cpAddress = '';

  /** Start the agent and wait for its first apply. */
  async startAgent(mode: XdsMode, extra: string[] = [], withProxy = false, timeoutMs = 600_000): Promise<any> {
    const source = mode === 'file' ? ['--config', this.agentCfgPath] : ['--xds', this.cpAddress, '--xds-mode', mode];
    const args = ['agent', ...source, '--node-name', 'node1', '--cgroup', this.sb.node('node1').cgroupPath, '--bpffs', this.bpffs, '--admin', 'none', ...extra];
    if (withProxy) args.push('--proxy-listen', `${this.sb.pod('proxy').ipv4}:15001`, '--proxy-control', this.proxyControl());
    this.agent = this.spawnSockmesh(`agent-${mode}`, args);
    return waitLog(this.agent, (l) => l.msg === 'applied config', timeoutMs, 0, 'first "applied config"');
  }

  /** Stop the agent (SIGTERM; SIGKILL after `graceMs`: a busy agent may not get to its handler). */
  async stopAgent(graceMs = 5000): Promise<void> {
    await stopProc(this.agent, graceMs);
    this.agent = undefined;
  }

  proxyControl(): string {
    return path.join(this.tmp, 'proxy.sock');
  }

  /** `sockmesh proxy` in the `proxy` pod (its netns and cgroup, the host's /sys/fs/bpf). */
  startProxy(): Proc {
    const pod = this.sb.pod('proxy');
    const args = ['proxy', '--listen', `${pod.ipv4}:15001`, '--bpffs', this.bpffs, '--control', this.proxyControl()];
    this.proxy = this.spawnLogged('proxy', (stdio) => this.sb.spawnSockmesh('proxy', args, { stdio, detached: false }));
    return this.proxy;
  }

  /**
   * Replace a file atomically (temp file + rename, as config management does): the control
   * plane's, or the agent's own for mode 'file'. Returns the time just before the write.
   */
  writeConfig(text: string, file = this.cfgPath): { t0Wall: number; t0Ns: bigint } {
    const tmp = `${file}.tmp`;
    const t0Wall = wallMs();
    const t0Ns = process.hrtime.bigint();
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, file);
    return { t0Wall, t0Ns };
  }

  /** The file a change for an agent in `mode` goes to. */
  fileFor(mode: XdsMode): string {
    return mode === 'file' ? this.agentCfgPath : this.cfgPath;
  }

  /** Write a config while no measurement runs and wait for the control plane to load it. */
  async loadConfig(text: string): Promise<void> {
    if (fs.readFileSync(this.cfgPath, 'utf8') === text) return;
    if (!this.cp) {
      this.writeConfig(text);
      return;
    }
    this.cp.log.poll();
    const from = this.cp!.log.lines.length;
    this.writeConfig(text);
    await waitLog(this.cp, (l) => l.msg === 'control plane: config changed', 300_000, from, '"config changed"');
  }

  pids(): { cp: number; agent: number } {
    return { cp: this.cp!.pid, agent: this.agent!.pid };
  }

  async close(): Promise<void> {
    for (const p of [this.proxy, this.agent, this.cp]) {
      try {
        await stopProc(p);
      } catch {
        /* keep going */
      }
    }
    try {
      if (this.bpffs && fs.existsSync(this.bpffs)) Datapath.remove(this.bpffs);
    } catch (e) {
      this.log(`propagation: Datapath.remove: ${(e as Error).message}`);
    }
    await this.sb?.teardown();
    if (this.tmp) fs.rmSync(this.tmp, { recursive: true, force: true });
  }
}

// ---- measurement -----------------------------------------------------------------------------

export interface ChangeSample {
  /** t0 -> kernel shows the change. */
  kernelMs: number;
  /** t0 -> control plane logged "config changed" (debounce + read + validate + snapshot). */
  cpMs: number | null;
  /** t0 -> agent logged its first "xds: update" of the change. */
  xdsMs: number | null;
  /** t0 -> agent logged the "applied config" that completed the change (after the apply returned). */
  appliedMs: number | null;
  /** The reconciler's own duration for that apply (ApplyReport.durationMs). */
  reconcileMs: number | null;
  /** CPU of the control plane and of the agent from t0 until both were quiet again. */
  cpCpuMs: number;
  agentCpuMs: number;
  polls: number;
  /** For the full push: the count check after the last service's entry (ms after t0). */
  countMs?: number;
}

/** The kernel did not show a change in time (the processes may still be busy with it). */
export class PropagationTimeout extends Error {}

/** Write `text` at t0, poll `pred` until it holds, wait for the logs and for quiet; one sample. */
async function measureChange(
  rig: Rig,
  mode: XdsMode,
  text: string,
  pred: () => boolean,
  o: { timeoutMs: number; pollUs: number; changedService: (j: any) => boolean },
): Promise<ChangeSample> {
  const cp = rig.cp!;
  const agent = rig.agent!;
  cp.log.poll();
  agent.log.poll();
  const cpFrom = cp.log.lines.length;
  const agFrom = agent.log.lines.length;
  const { cp: cpPid, agent: agPid } = rig.pids();
  const cpu0 = { cp: procCpuUs(cpPid), agent: procCpuUs(agPid) };
  const { t0Wall, t0Ns } = rig.writeConfig(text, rig.fileFor(mode));
  const r = pollUntil(pred, o.timeoutMs, o.pollUs, [cp, agent]);
  if (!r.ok) {
    throw new PropagationTimeout(`propagation (${mode}): the kernel did not show the change within ${o.timeoutMs} ms\nagent:\n${agent.log.tail(8)}\ncontrol plane:\n${cp.log.tail(4)}`);
  }
  const kernelMs = Number(r.atNs - t0Ns) / 1e6;
  // A change can take several applies (xDS types arrive one by one): the one that completed it is
  // the first logged once the kernel showed it. The log line is written right after the apply
  // returns, and the poller may notice the kernel change a little later (a poll interval, the
  // service count): 50 ms of slack. If no such line comes, the last apply that changed services.
  const t1Wall = t0Wall + kernelMs - 50;
  const changing = (j: any) => j.msg === 'applied config' && o.changedService(j);
  let applied: any;
  try {
    applied = await waitLog(agent, (j) => changing(j) && Date.parse(j.time) >= t1Wall, 10_000, agFrom, '"applied config" of the change');
  } catch {
    agent.log.poll();
    applied = agent.log.lines.slice(agFrom).filter(changing).pop();
  }
  await settle([cpPid, agPid], 120_000);
  const cpu1 = { cp: procCpuUs(cpPid), agent: procCpuUs(agPid) };
  const at = (j: any): number | null => (j ? Date.parse(j.time) - t0Wall : null);
  return {
    kernelMs,
    cpMs: mode === 'file' ? null : at(cp.log.find(cpFrom, (j) => j.msg === 'control plane: config changed')),
    xdsMs: mode === 'file' ? null : at(agent.log.find(agFrom, (j) => j.msg === 'xds: update')),
    appliedMs: at(applied),
    reconcileMs: typeof applied?.durationMs === 'number' ? applied.durationMs : null,
    cpCpuMs: (cpu1.cp - cpu0.cp) / 1e3,
    agentCpuMs: (cpu1.agent - cpu0.agent) / 1e3,
    polls: r.polls,
  };
}

export interface PropagationOptions {
  /** Config sizes (services) for the one-endpoint change. */
  sizes: number[];
  endpointsPerService: number;
  /** One-endpoint changes per (size, mode). */
  changes: number;
  modes: XdsMode[];
  /** Agent restarts per (size, mode) the changes are spread over (interleaving the modes). */
  blocks: number;
  /** Full push: services of the big config, repetitions, modes, services of the small config. */
  pushServices: number;
  pushReps: number;
  pushModes: XdsMode[];
  smallServices: number;
  /** Give up on one change after this long (one endpoint / full push). */
  timeoutS: number;
  pushTimeoutS: number;
  /** Kernel poll interval (µs). */
  pollUs: number;
  /** Pause between two changes (ms), after both processes are quiet. */
  pauseMs: number;
}

export const FULL: PropagationOptions = {
  sizes: [100, 1000],
  endpointsPerService: 10,
  changes: 20,
  modes: ['sotw', 'delta'],
  blocks: 5,
  pushServices: 10000,
  pushReps: 2,
  pushModes: ['file', 'sotw', 'delta'],
  smallServices: 10,
  timeoutS: 120,
  pushTimeoutS: 300,
  pollUs: 200,
  pauseMs: 200,
};

export const QUICK: PropagationOptions = {
  ...FULL,
  sizes: [100],
  changes: 4,
  blocks: 2,
  pushServices: 1000,
  pushReps: 2,
  pushModes: ['sotw', 'file'],
};

interface Summary {
  n: number;
  p50: number;
  p99: number;
  max: number;
}

function summary(xs: Array<number | null | undefined>): Summary | null {
  const v = xs.filter((x): x is number => typeof x === 'number' && Number.isFinite(x));
  if (!v.length) return null;
  return { n: v.length, p50: percentile(v, 50), p99: percentile(v, 99), max: Math.max(...v) };
}

export interface CaseResult {
  case: 'endpoint' | 'push' | 'removal';
  services: number;
  endpoints: number;
  mode: XdsMode;
  samples: ChangeSample[];
  kernel: Summary | null;
  cp: Summary | null;
  xds: Summary | null;
  applied: Summary | null;
  reconcile: Summary | null;
  cpCpuMs: number;
  agentCpuMs: number;
}

function caseResult(c: CaseResult['case'], services: number, endpoints: number, mode: XdsMode, samples: ChangeSample[]): CaseResult {
  return {
    case: c,
    services,
    endpoints,
    mode,
    samples,
    kernel: summary(samples.map((s) => s.kernelMs)),
    cp: summary(samples.map((s) => s.cpMs)),
    xds: summary(samples.map((s) => s.xdsMs)),
    applied: summary(samples.map((s) => s.appliedMs)),
    reconcile: summary(samples.map((s) => s.reconcileMs)),
    cpCpuMs: median(samples.map((s) => s.cpCpuMs)),
    agentCpuMs: median(samples.map((s) => s.agentCpuMs)),
  };
}

const changedServices = (j: any): boolean => (j.added ?? 0) + (j.updated ?? 0) + (j.removed ?? 0) > 0;

export async function runPropagation(o: PropagationOptions & ScenarioOptions): Promise<ScenarioResult> {
  const log = o.log;
  const E = o.endpointsPerService;
  const maxServices = Math.max(...o.sizes, o.pushServices);
  const mapArgs = mapSizeArgs(maxServices, E);
  const started = Date.now();
  const rig = await Rig.create({ config: { services: o.smallServices, endpointsPerService: E, workloads: [] }, log });
  const cases: CaseResult[] = [];
  const failures: Array<{ case: string; mode: XdsMode; services: number; error: string }> = [];
  const pollStats: number[] = [];
  let probe: ServiceProbe | undefined;
  let agentMem: { mode: XdsMode; rssKiB: number; hwmKiB: number } | undefined;
  try {
    const workloads = rig.workloads();
    const cfg = (services: number, toggled = false): string => configYaml({ services, endpointsPerService: E, toggled, workloads });
    await rig.loadConfig(cfg(o.smallServices)); // with the pod as workload
    await rig.startControlPlane();
    log(`propagation: control plane at ${rig.cpAddress}; agent map sizes: ${mapArgs.join(' ') || 'defaults'}`);

    const hasAddr = (i: number, addr: string, n: number) => (): boolean => {
      const b = probe!.backends(serviceKey(i));
      return !!b && b.length === n && b.some((x) => x.ip === addr);
    };
    const lacksAddr = (i: number, addr: string, n: number) => (): boolean => {
      const b = probe!.backends(serviceKey(i));
      return !!b && b.length === n && !b.some((x) => x.ip === addr);
    };
    /** Agent up in `mode` on `text` with the kernel showing `services` services (the last one complete). */
    const agentUp = async (mode: XdsMode, text: string, services: number, toggled: boolean): Promise<void> => {
      if (mode === 'file') rig.writeConfig(text, rig.agentCfgPath);
      else await rig.loadConfig(text);
      await rig.startAgent(mode, mapArgs);
      probe ??= new ServiceProbe(rig.bpffs);
      const last = services - 1;
      const addr = toggled ? TOGGLE_ADDR : endpointAddr(last * E);
      const r = pollUntil(() => hasAddr(last, addr, E)() && probe!.serviceCount() === services, 600_000, 10_000, [rig.agent!]);
      if (!r.ok) throw new Error(`propagation: agent (${mode}) did not bring the kernel to ${services} services`);
      await settle(Object.values(rig.pids()), 60_000);
    };

    // ---- one endpoint, per config size, modes interleaved in blocks
    for (const size of o.sizes) {
      let toggled = false;
      const samples = new Map<XdsMode, ChangeSample[]>(o.modes.map((m) => [m, []]));
      const perBlock = Math.ceil(o.changes / o.blocks);
      for (let b = 0; b < o.blocks; b++) {
        for (const mode of rotate(o.modes, b)) {
          const want = Math.min(perBlock, o.changes - samples.get(mode)!.length);
          if (want <= 0) continue;
          await agentUp(mode, cfg(size, toggled), size, toggled);
          for (let k = 0; k < want; k++) {
            toggled = !toggled;
            const last = size - 1;
            const pred = toggled ? hasAddr(last, TOGGLE_ADDR, E) : lacksAddr(last, TOGGLE_ADDR, E);
            const s = await measureChange(rig, mode, cfg(size, toggled), pred, { timeoutMs: o.timeoutS * 1000, pollUs: o.pollUs, changedService: changedServices });
            samples.get(mode)!.push(s);
            pollStats.push(s.kernelMs / s.polls);
            await sleep(o.pauseMs);
          }
          await rig.stopAgent();
        }
        log(`propagation: ${size} services, block ${b + 1}/${o.blocks} done`);
      }
      for (const m of o.modes) cases.push(caseResult('endpoint', size, size * E, m, samples.get(m)!));
    }

    // ---- full push: small <-> big, both directions, modes interleaved per repetition. A mode
    // that times out once is not tried again (its processes are killed and the state restored).
    const big = cfg(o.pushServices);
    const small = cfg(o.smallServices);
    const push = new Map<XdsMode, ChangeSample[]>(o.pushModes.map((m) => [m, []]));
    const removal = new Map<XdsMode, ChangeSample[]>(o.pushModes.map((m) => [m, []]));
    const gaveUp = new Set<XdsMode>();
    const lastBig = o.pushServices - 1;
    const countIs = (n: number) => () => probe!.serviceCount() === n;
    for (let r = 0; r < o.pushReps; r++) {
      for (const mode of rotate(o.pushModes, r)) {
        if (gaveUp.has(mode)) continue;
        await agentUp(mode, small, o.smallServices, false);
        const full = hasAddr(lastBig, endpointAddr(lastBig * E), E);
        const opts = { timeoutMs: o.pushTimeoutS * 1000, pollUs: o.pollUs, changedService: changedServices };
        let dir = 'push';
        try {
          const s1 = await measureChange(rig, mode, big, () => full() && countIs(o.pushServices)(), opts);
          push.get(mode)!.push(s1);
          const slots = Datapath.openPinned(rig.bpffs);
          try {
            const n = slots.maps.sm_backends.count();
            if (n !== o.pushServices * E) log(`propagation: after the push sm_backends holds ${n} slots, expected ${o.pushServices * E}`);
          } finally {
            slots.close();
          }
          agentMem = { mode, ...procRss(rig.agent!.pid) };
          await sleep(o.pauseMs);
          dir = 'removal';
          const gone = () => probe!.entry(serviceKey(lastBig)) === null;
          const s2 = await measureChange(rig, mode, small, () => gone() && countIs(o.smallServices)(), opts);
          removal.get(mode)!.push(s2);
          await rig.stopAgent();
          log(`propagation: push ${r + 1}/${o.pushReps} (${mode}): ${s1.kernelMs.toFixed(0)} ms up, ${s2.kernelMs.toFixed(0)} ms down`);
        } catch (e) {
          if (!(e instanceof PropagationTimeout)) throw e;
          gaveUp.add(mode);
          failures.push({ case: dir, mode, services: o.pushServices, error: e.message });
          log(`propagation: ${dir} ${r + 1}/${o.pushReps} (${mode}) gave up: ${e.message}`);
          await rig.stopAgent(1000);
          // The control plane may be stuck in the big reload: restart it on the small config.
          await stopProc(rig.cp, 1000);
          rig.writeConfig(small);
          await rig.startControlPlane();
        }
      }
    }
    for (const m of o.pushModes) {
      if (push.get(m)!.length) cases.push(caseResult('push', o.pushServices, o.pushServices * E, m, push.get(m)!));
      if (removal.get(m)!.length) cases.push(caseResult('removal', o.pushServices, o.pushServices * E, m, removal.get(m)!));
    }
  } finally {
    probe?.close();
    await rig.close();
  }
  const data = {
    options: { ...o, log: undefined },
    mapSizeArgs: mapArgs,
    pollIntervalMeanUs: pollStats.length ? median(pollStats) * 1000 : null,
    agentAfterPush: agentMem ?? null,
    elapsedS: (Date.now() - started) / 1000,
    cases,
    failures,
  };
  return { name: 'propagation', title: 'Config propagation', markdown: markdown(o, data), data, charts: charts(cases), headline: headline(cases) };
}

function headline(cases: CaseResult[]): Array<{ metric: string; value: string }> {
  return cases
    .filter((c) => c.kernel && (c.case === 'push' || (c.case === 'endpoint' && c.mode !== 'file')))
    .map((c) => ({
      metric: c.case === 'endpoint' ? `config propagation, one endpoint at ${c.services} services (${c.mode})` : `config propagation, full push of ${c.services} services / ${c.endpoints} endpoints (${c.mode})`,
      value: `p50 ${f(c.kernel!.p50, 0)} ms, p99 ${f(c.kernel!.p99, 0)} ms (n=${c.kernel!.n})`,
    }));
}

const f = (x: number | null | undefined, d = 1): string => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : '–');

interface MarkdownData {
  pollIntervalMeanUs: number | null;
  agentAfterPush: { mode: XdsMode; rssKiB: number; hwmKiB: number } | null;
  mapSizeArgs: string[];
  elapsedS: number;
  cases: CaseResult[];
  failures: Array<{ case: string; mode: XdsMode; services: number; error: string }>;
}

const MODE_LABEL: Record<XdsMode, string> = { sotw: 'xDS SotW', delta: 'xDS Delta', file: 'agent file' };

function markdown(o: PropagationOptions, d: MarkdownData): string {
  const rows = d.cases.map(
    (c) =>
      `| ${c.case === 'endpoint' ? 'one endpoint' : c.case === 'push' ? `push ${o.smallServices} → ${c.services} svc` : `removal ${c.services} → ${o.smallServices} svc`} | ${c.services} / ${c.endpoints} | ${MODE_LABEL[c.mode]} | ${c.kernel?.n ?? 0} | ${f(c.kernel?.p50)} | ${f(c.kernel?.p99)} | ${f(c.kernel?.max)} | ${f(c.cp?.p50)} | ${f(c.xds?.p50)} | ${f(c.applied?.p50)} | ${f(c.reconcile?.p50)} | ${f(c.cpCpuMs, 0)} | ${f(c.agentCpuMs, 0)} |`,
  );
  const fails = d.failures.map((x) => `- **${x.case}, ${x.services} services, ${MODE_LABEL[x.mode]}: not in the kernel within ${x.case === 'endpoint' ? o.timeoutS : o.pushTimeoutS} s**, not retried. Last log lines:\n\n  \`\`\`\n  ${x.error.split('\n').slice(1).join('\n  ').slice(0, 3000)}\n  \`\`\``);
  return `Time from a config file being replaced (temp file + rename, t0 taken just before writing) to the change being visible in the kernel maps, read by the bench process from the pinned maps every ${o.pollUs} µs (measured: one poll per ${f(d.pollIntervalMeanUs, 0)} µs on average, so the kernel column is late by at most about that). Real processes: \`sockmesh control-plane\` watching its file and \`sockmesh agent\` (one sandbox node, ${d.mapSizeArgs.length ? `\`${d.mapSizeArgs.join(' ')}\`` : 'default map sizes'}) fed by it over xDS (SotW or Delta: \`--xds-mode\`), or — "agent file" rows — reading a file with the same services and endpoints itself (\`--config\`, no control plane in the path; that file lists no workload per endpoint address, so the agent has no identity per endpoint address to translate and write, where over xDS the control plane sends a synthetic workload for each). Each service has one VIP, one TCP port and ${o.endpointsPerService} endpoints (addresses in 198.18.0.0/15, never contacted); every endpoint address is also a (synthetic) workload the control plane serves over WDS, so the agent holds an identity for each.

- **one endpoint**: the first endpoint of the last service changes address, alternating between two values, ${o.changes} changes per row; the modes were taken in ${o.blocks} alternating block(s) of agent runs (an agent's source is fixed at start; the datapath stays pinned across the restarts and the next agent adopts it).
- **push / removal**: the file goes from ${o.smallServices} services to ${o.pushServices} (t1: the last service has all its backends and the kernel holds exactly that many services) and back (t1: the last service is gone and the count is back), up to ${o.pushReps} repetition(s) per mode, modes rotated per repetition.

| change | services / endpoints | source | n | kernel p50 (ms) | p99 | max | CP "config changed" p50 | agent "xds: update" p50 | agent "applied config" p50 | reconcile p50 (ms) | CP CPU/change (ms) | agent CPU/change (ms) |
|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
${rows.join('\n')}
${fails.length ? `\nGave up:\n\n${fails.join('\n')}\n` : ''}
Stage columns are milliseconds after t0, from the processes' log timestamps (1 ms resolution, wall clock): the control plane logs "config changed" after its file watch's **100 ms trailing debounce** (config/file-watch.ts — a directory \`fs.watch\` plus a 1 s metadata poll feed it; the agent's own file source uses the same watch), the re-read, validation and the new snapshot; the agent logs "xds: update" when the first response of the change is decoded and validated, and "applied config" after the kernel writes of the apply that completed the change returned — so it comes after the kernel column (a change can take several applies: SotW and Delta deliver the types one by one, and the agent applies each consistent view). "reconcile" is the reconciler's own duration (ApplyReport.durationMs). CPU per change is each process's CPU time from t0 until both were quiet again (median over the row); in "agent file" rows the control plane is idle (it serves another file).

Caveats: 2 shared vCPUs, so the control plane, the agent and the kernel poller compete (and other work on the machine with them: wall times swing, CPU times hold better). The poller sleeps between lookups (one \`bpf(MAP_LOOKUP_ELEM)\` per poll while the service's generation is unchanged). Percentiles are exact over the samples of a row; with ${o.changes} samples p99 is the largest or second largest. Both processes redo work proportional to the **whole** config on every change: the control plane re-reads and re-validates the whole file (YAML with positions for its error messages) and rebuilds every resource, synchronously; the agent re-translates every resource it holds into a model and diffs it against the kernel. That is why a one-endpoint change costs more with more services — in Delta mode too, where only the changed resources travel. Elapsed: ${f(d.elapsedS, 0)} s.
${d.agentAfterPush ? `\nAgent (${MODE_LABEL[d.agentAfterPush.mode]}) RSS right after its last full push: ${f(d.agentAfterPush.rssKiB / 1024)} MiB (high-water mark ${f(d.agentAfterPush.hwmKiB / 1024)} MiB).\n` : ''}`;
}

function charts(cases: CaseResult[]): ChartSpec[] {
  const out: ChartSpec[] = [];
  const ep = cases.filter((c) => c.case === 'endpoint');
  if (ep.length) {
    const groups = ep.map((c) => `${c.services} svc, ${c.mode}`);
    out.push({
      name: 'propagation-endpoint',
      title: 'One endpoint change: file write → kernel map',
      unit: 'ms',
      groups,
      series: [
        { label: 'p50', values: ep.map((c) => c.kernel?.p50 ?? null) },
        { label: 'p99', values: ep.map((c) => c.kernel?.p99 ?? null) },
      ],
    });
  }
  const full = cases.filter((c) => c.case !== 'endpoint');
  if (full.length) {
    out.push({
      name: 'propagation-full',
      title: 'Full push and removal: file write → kernel maps',
      unit: 'ms',
      groups: full.map((c) => `${c.case} ${c.services} svc, ${c.mode}`),
      series: [
        { label: 'p50', values: full.map((c) => c.kernel?.p50 ?? null) },
        { label: 'max', values: full.map((c) => c.kernel?.max ?? null) },
      ],
    });
  }
  return out;
}

// ---- options and standalone ------------------------------------------------------------------

/** Options from the command line (`--sizes 1000,10000 ...`), defaults from FULL or QUICK. */
export function propagationArgs(argv: string[], quick = false): PropagationOptions & { out?: string } {
  const d = quick ? QUICK : FULL;
  const { values } = parseArgs({
    args: argv,
    options: {
      sizes: { type: 'string', default: d.sizes.join(',') },
      endpoints: { type: 'string', default: String(d.endpointsPerService) },
      changes: { type: 'string', default: String(d.changes) },
      modes: { type: 'string', default: d.modes.join(',') },
      blocks: { type: 'string', default: String(d.blocks) },
      'push-services': { type: 'string', default: String(d.pushServices) },
      'push-reps': { type: 'string', default: String(d.pushReps) },
      'push-modes': { type: 'string', default: d.pushModes.join(',') },
      'small-services': { type: 'string', default: String(d.smallServices) },
      'timeout-s': { type: 'string', default: String(d.timeoutS) },
      'push-timeout-s': { type: 'string', default: String(d.pushTimeoutS) },
      'poll-us': { type: 'string', default: String(d.pollUs) },
      'pause-ms': { type: 'string', default: String(d.pauseMs) },
      out: { type: 'string' },
    },
  });

  const modes = (s: string, what: string): XdsMode[] =>
    s.split(',').map((m) => {
      if (m !== 'sotw' && m !== 'delta' && m !== 'file') throw new Error(`--${what}: '${m}' is not sotw, delta or file`);
      return m;
    });
  const o: PropagationOptions & { out?: string } = {
    sizes: intListArg(values.sizes!, 'sizes'),
    endpointsPerService: intArg(values.endpoints!, 'endpoints', 1),
    changes: intArg(values.changes!, 'changes', 1),
    modes: modes(values.modes!, 'modes'),
    blocks: intArg(values.blocks!, 'blocks', 1),
    pushServices: intArg(values['push-services']!, 'push-services', 1),
    pushReps: intArg(values['push-reps']!, 'push-reps', 0),
    pushModes: modes(values['push-modes']!, 'push-modes'),
    smallServices: intArg(values['small-services']!, 'small-services', 1),
    timeoutS: intArg(values['timeout-s']!, 'timeout-s', 1),
    pushTimeoutS: intArg(values['push-timeout-s']!, 'push-timeout-s', 1),
    pollUs: intArg(values['poll-us']!, 'poll-us', 0),
    pauseMs: intArg(values['pause-ms']!, 'pause-ms', 0),
    out: values.out,
  };
  if (o.smallServices >= o.pushServices) throw new Error('--small-services must be below --push-services');
  return o;
}

if (require.main === module) runStandalone(propagationArgs, runPropagation);
