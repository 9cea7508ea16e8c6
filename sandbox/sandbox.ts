// Network-namespace + cgroup sandbox shared by the tests, the demo and the benchmarks.
//
// Layout (everything lives in namespaces and cgroups created here; the machine's root network
// namespace is never touched — no interface, address, route or firewall rule is created there):
//
//   per node  : netns `${prefix}-${runId}-${node}` holding a bridge `br0` (up) with the node's
//               bridge addresses; NO default route (nothing can leave the sandbox).
//   per pod   : netns `${prefix}-${runId}-${node}-${pod}` with `lo` up and `eth0`, the pod end of a
//               veth pair whose other end (`h-${pod}`, or `hp<N>` when that would exceed 15 chars)
//               sits in the node netns attached to `br0`. Default route (v4, and v6 if enabled)
//               via the bridge address. A `sleep infinity` in the pod's cgroup and netns stands
//               for Kubernetes' pause container (the agent finds pod namespaces through them).
//   >= 2 nodes: every pair of node namespaces is joined by a veth pair (`xn<j>` in node i, `xn<i>`
//               in node j), routes to the other nodes' pod subnets are added in the node
//               namespaces only, and forwarding (v4 and v6) is enabled inside the node namespaces.
//
// Addressing (node i is 1-based, in spec order):
//   node i subnets : 198.18.i.0/24            and fd53:6f63:6b00:i::/64 (i in hex)
//   bridge         : 198.18.i.1               and fd53:6f63:6b00:i::1
//   pods (k=0,1,..): 198.18.i.(10+k)          and fd53:6f63:6b00:i::(0x10+k)  (::10, ::11, ...)
//   inter-node link number p (0-based, pairs in order (1,2),(1,3)..(2,3)..):
//                    198.18.250.(4p+1)/30 (lower node) , 198.18.250.(4p+2)/30 (higher node)
//                    fd53:6f63:6bff::(4p+1)/126        , fd53:6f63:6bff::(4p+2)/126
//   198.18.0.0/15 is the RFC 2544 benchmarking range: never routed anywhere; fd53:6f63:6b00::/40
//   is a ULA prefix ("Soc" "k").
//
// cgroups (under the cgroup2 mount found in /proc/mounts):
//   <cg2>/${prefix}-${runId}/                       run root (teardown kills everything below)
//   <cg2>/${prefix}-${runId}/${node}/               node.cgroupPath: where an agent attaches
//   <cg2>/${prefix}-${runId}/${node}/pod-${pod}/    meshed pods
//   <cg2>/${prefix}-${runId}/${node}-unmeshed/pod-${pod}/   unmeshed pods (NOT below node.cgroupPath)
//   <cg2>/${prefix}-${runId}/${node}-host/          commands run by execNode/spawnNode
//
// bpffs: `sandbox.bpffsDir` = /sys/fs/bpf/${prefix}-${runId}, created lazily by whoever pins
// (ensureBpffsDir()), removed by teardown.
//
// runId is `${process.pid}` (a second concurrently live sandbox with the same prefix in the same
// process gets `${pid}.${n}`), so leftovers of crashed runs are recognisable: their pid is dead.

import { ChildProcess, SpawnOptions, spawn as cpSpawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { scaled } from './time-scale';

export interface PodSpec {
  name: string;
  ipv6?: boolean;
  /** Default true. Unmeshed pods get a cgroup outside node.cgroupPath. */
  meshed?: boolean;
}

export interface NodeSpec {
  name: string;
  pods: PodSpec[];
}

export interface SandboxSpec {
  nodes: NodeSpec[];
  /** Name prefix of every netns / cgroup / bpffs dir; default 'smsbx'. */
  prefix?: string;
}

export interface PodInfo {
  name: string;
  /** Name of the node the pod runs on. */
  node: string;
  netns: string;
  cgroupPath: string;
  ipv4: string;
  ipv6?: string;
  meshed: boolean;
  /** Name of the veth end in the node netns (attached to br0). */
  hostIfname: string;
}

export interface NodeLink {
  /** Name of the other node. */
  peer: string;
  /** Interface name in this node's netns. */
  ifname: string;
  local4: string;
  peer4: string;
  local6: string;
  peer6: string;
}

export interface NodeInfo {
  name: string;
  /** 1-based index (the `i` in 198.18.i.0/24). */
  index: number;
  netns: string;
  /** cgroup an agent attaches its programs to: every meshed pod of the node is below it. */
  cgroupPath: string;
  /** Parent of the node's unmeshed pods' cgroups (a sibling of cgroupPath). */
  unmeshedCgroupPath: string;
  /** cgroup used by execNode/spawnNode. */
  hostCgroupPath: string;
  bridgeIpv4: string;
  bridgeIpv6: string;
  subnet4: string;
  subnet6: string;
  links: NodeLink[];
  pods: string[];
}

export interface ExecOptions extends SpawnOptions {
  /** Kill the process group after this many ms (default 60 000). */
  timeoutMs?: number;
  /** Written to stdin, which is then closed. */
  input?: string | Buffer;
  /**
   * Run in the pod's netns but in the node's host cgroup, outside the meshed cgroup: its sockets
   * are made outside the mesh (like a socket made elsewhere and passed into the pod), so no
   * outbound hook ever sees them. Pods only.
   */
  outsideMesh?: boolean;
}

export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export interface PodtoolResult extends ExecResult {
  /** Every stdout line that parsed as JSON. */
  lines: any[];
  /** The last JSON line (the summary for most client subcommands), or undefined. */
  last: any;
}

export interface ServerHandle {
  child: ChildProcess;
  /** The `{"event":"listening",...}` line. */
  ready: any;
  /** Every JSON line printed so far (including `ready`). */
  lines: any[];
  stderr(): string;
  /** SIGKILL the server's process group and wait for it to exit. */
  stop(): Promise<void>;
}

/** Compiled podtool next to this module (dist/sandbox/podtool.js). */
export const PODTOOL_PATH = path.join(__dirname, 'podtool.js');
/** The `sockmesh` command of this checkout (bin/sockmesh, which runs dist/). */
export const SOCKMESH_CLI = path.resolve(__dirname, '..', '..', 'bin', 'sockmesh');

export interface PodSpawnOptions extends SpawnOptions {
  /**
   * Enter the pod's netns with nsenter instead of `ip netns exec`, which remounts /sys for the
   * netns and so hides /sys/fs/bpf: for processes that open pinned BPF objects (the L7 proxy).
   */
  hostSys?: boolean;
  /**
   * Run in this cgroup instead of the pod's, in the pod's netns (a second process of the pod in
   * a cgroup of its own, as a replacement container would be). Must lie inside the run's tree.
   */
  cgroupPath?: string;
}

const DEBUG = !!process.env.SOCKMESH_SANDBOX_DEBUG;
function debug(msg: string): void {
  if (DEBUG) process.stderr.write(`[sandbox] ${msg}\n`);
}

const NETNS_DIR = '/var/run/netns';

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function errCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

/** Run a command synchronously; throw an error naming the command and its stderr on failure. */
function run(argv: string[], input?: string): string {
  const r = spawnSync(argv[0], argv.slice(1), {
    input,
    encoding: 'utf8',
    stdio: ['pipe', 'pipe', 'pipe'],
    timeout: scaled(30_000),
  });
  if (r.error) throw new Error(`sandbox: \`${argv.join(' ')}\` failed to run: ${r.error.message}`);
  if (r.status !== 0) {
    const what = input ? `\n--- input ---\n${input}` : '';
    throw new Error(
      `sandbox: \`${argv.join(' ')}\` exited ${r.status ?? r.signal}: ${(r.stderr || '').trim()}${what}`,
    );
  }
  return r.stdout;
}

/** Like run() but never throws; returns whether it succeeded. */
function tryRun(argv: string[], input?: string): boolean {
  const r = spawnSync(argv[0], argv.slice(1), { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], timeout: scaled(30_000) });
  if (r.status !== 0) debug(`\`${argv.join(' ')}\` -> ${r.status ?? r.signal ?? r.error?.message}: ${(r.stderr || '').trim()}`);
  return r.status === 0;
}

function readMounts(): Array<{ source: string; target: string; type: string }> {
  const out: Array<{ source: string; target: string; type: string }> = [];
  for (const line of fs.readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const f = line.split(' ');
    if (f.length < 3) continue;
    // /proc/mounts escapes spaces etc. as octal (\040).
    const unesc = (s: string) => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    out.push({ source: unesc(f[0]), target: unesc(f[1]), type: f[2] });
  }
  return out;
}

/** The cgroup2 mount point, from /proc/mounts (prefers /sys/fs/cgroup, then the shortest path). */
export function findCgroup2Mount(): string {
  const m = readMounts().filter((x) => x.type === 'cgroup2').map((x) => x.target);
  if (m.length === 0) throw new Error('sandbox: no cgroup2 filesystem in /proc/mounts');
  if (m.includes('/sys/fs/cgroup')) return '/sys/fs/cgroup';
  return m.sort((a, b) => a.length - b.length)[0];
}

/** Mount bpffs at `p` unless /proc/mounts already shows a bpf filesystem there. Returns p. */
export function ensureBpffs(p = '/sys/fs/bpf'): string {
  if (readMounts().some((x) => x.type === 'bpf' && x.target === p)) return p;
  fs.mkdirSync(p, { recursive: true });
  run(['mount', '-t', 'bpf', 'bpf', p]);
  debug(`mounted bpffs at ${p}`);
  return p;
}

function bpffsMounted(p = '/sys/fs/bpf'): boolean {
  return readMounts().some((x) => x.type === 'bpf' && x.target === p);
}

function pidAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return errCode(e) === 'EPERM';
  }
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function listNetns(): string[] {
  try {
    return fs.readdirSync(NETNS_DIR);
  } catch {
    return [];
  }
}

function readProcs(cg: string): number[] {
  try {
    return fs
      .readFileSync(path.join(cg, 'cgroup.procs'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

function subdirs(dir: string): string[] {
  try {
    return fs
      .readdirSync(dir, { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => path.join(dir, d.name));
  } catch {
    return [];
  }
}

function cgroupPopulated(cg: string): boolean {
  try {
    const ev = fs.readFileSync(path.join(cg, 'cgroup.events'), 'utf8');
    return /^populated 1$/m.test(ev);
  } catch (e) {
    if (errCode(e) === 'ENOENT' && !fs.existsSync(cg)) return false;
    // No cgroup.events (should not happen on cgroup2): fall back to scanning procs.
    const walk = (d: string): boolean => readProcs(d).length > 0 || subdirs(d).some(walk);
    return walk(cg);
  }
}

/** Kill every process in the cgroup subtree `cg`, wait for it to be empty, rmdir bottom-up. */
function destroyCgroupTree(cg: string): void {
  if (!fs.existsSync(cg)) return;
  const deadline = Date.now() + scaled(10_000);
  const killFile = path.join(cg, 'cgroup.kill');
  let useKill = fs.existsSync(killFile);
  while (cgroupPopulated(cg) && Date.now() < deadline) {
    if (useKill) {
      try {
        fs.writeFileSync(killFile, '1');
      } catch (e) {
        debug(`cgroup.kill on ${cg} failed: ${(e as Error).message}`);
        useKill = false;
      }
    }
    if (!useKill) {
      const walk = (d: string): void => {
        for (const pid of readProcs(d)) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            /* gone */
          }
        }
        subdirs(d).forEach(walk);
      };
      walk(cg);
    }
    sleepSync(20);
  }
  if (cgroupPopulated(cg)) debug(`cgroup ${cg} still populated after 10 s`);
  const rmTree = (d: string): void => {
    for (const s of subdirs(d)) rmTree(s);
    for (let i = 0; i < 50; i++) {
      try {
        fs.rmdirSync(d);
        debug(`removed cgroup ${d}`);
        return;
      } catch (e) {
        const c = errCode(e);
        if (c === 'ENOENT') return;
        if (c !== 'EBUSY' && c !== 'ENOTEMPTY') {
          debug(`rmdir ${d}: ${(e as Error).message}`);
          return;
        }
        sleepSync(20);
      }
    }
    debug(`rmdir ${d}: still busy`);
  };
  rmTree(cg);
}

function deleteNetns(names: string[]): void {
  if (names.length === 0) return;
  // -force: keep going past errors (e.g. already deleted).
  tryRun(['ip', '-force', '-batch', '-'], names.map((n) => `netns del ${n}\n`).join(''));
  for (const n of names) {
    if (fs.existsSync(path.join(NETNS_DIR, n))) {
      tryRun(['ip', 'netns', 'del', n]);
    }
    if (!fs.existsSync(path.join(NETNS_DIR, n))) debug(`removed netns ${n}`);
  }
}

function rmBpffsDir(dir: string): void {
  if (!fs.existsSync(dir)) return;
  try {
    fs.rmSync(dir, { recursive: true, force: true });
    debug(`removed bpffs dir ${dir}`);
  } catch (e) {
    debug(`rm -rf ${dir}: ${(e as Error).message}`);
  }
}

// ---- process-wide registry: synchronous teardown on exit / signals ---------------------------

const live = new Set<Sandbox>();
let handlersInstalled = false;

function teardownAllSync(): void {
  for (const s of [...live]) {
    try {
      s.teardownSync();
    } catch (e) {
      process.stderr.write(`[sandbox] teardown failed: ${(e as Error).message}\n`);
    }
  }
}

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', teardownAllSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const h = (): void => {
      teardownAllSync();
      // If we were the only listener, behave like the default action: die by that signal.
      if (process.listenerCount(sig) === 1) {
        process.removeListener(sig, h);
        process.kill(process.pid, sig);
      }
    };
    process.on(sig, h);
  }
}

// ---- the sandbox -------------------------------------------------------------------------------

const NODE_NAME_RE = /^[A-Za-z0-9_]{1,32}$/;
const POD_NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_-]{0,31}$/;
const PREFIX_RE = /^[A-Za-z][A-Za-z0-9_]{0,15}$/;

const JOIN_CGROUP_SH = 'cg=$1; ns=$2; shift 2; echo $$ > "$cg/cgroup.procs" || { echo "sandbox: cannot join cgroup $cg" >&2; exit 125; }; ';
const IN_CGROUP_NETNS_SH = JOIN_CGROUP_SH + 'exec ip netns exec "$ns" "$@"';
/** Same, but /sys stays the host's (nsenter only switches the network namespace). */
const IN_CGROUP_NETNS_HOST_SYS_SH = JOIN_CGROUP_SH + `exec nsenter --net="${NETNS_DIR}/$ns" -- "$@"`;

export class Sandbox {
  readonly prefix: string;
  readonly runId: string;
  /** cgroup2 mount point. */
  readonly cgroup2: string;
  /** `<cg2>/${prefix}-${runId}`. */
  readonly cgroupRoot: string;
  /** `/sys/fs/bpf/${prefix}-${runId}` (not created until ensureBpffsDir()). */
  readonly bpffsDir: string;
  private readonly nodes = new Map<string, NodeInfo>();
  private readonly pods = new Map<string, PodInfo>();
  private tornDown = false;

  private constructor(prefix: string, runId: string, cg2: string) {
    this.prefix = prefix;
    this.runId = runId;
    this.cgroup2 = cg2;
    this.cgroupRoot = path.join(cg2, `${prefix}-${runId}`);
    this.bpffsDir = `/sys/fs/bpf/${prefix}-${runId}`;
  }

  /** Name prefix shared by every netns of this run. */
  get netnsPrefix(): string {
    return `${this.prefix}-${this.runId}-`;
  }

  static async create(spec: SandboxSpec): Promise<Sandbox> {
    return Sandbox.createSync(spec);
  }

  static createSync(spec: SandboxSpec): Sandbox {
    const prefix = spec.prefix ?? 'smsbx';
    if (!PREFIX_RE.test(prefix)) throw new Error(`sandbox: bad prefix '${prefix}'`);
    validateSpec(spec);
    Sandbox.cleanupStale(prefix);

    const cg2 = findCgroup2Mount();
    let runId = `${process.pid}`;
    for (let n = 2; [...live].some((s) => s.prefix === prefix && s.runId === runId) || fs.existsSync(path.join(cg2, `${prefix}-${runId}`)); n++) {
      runId = `${process.pid}.${n}`;
    }
    const sb = new Sandbox(prefix, runId, cg2);
    live.add(sb);
    installHandlers();
    try {
      sb.build(spec);
    } catch (e) {
      sb.teardownSync();
      throw e;
    }
    return sb;
  }

  private build(spec: SandboxSpec): void {
    const t0 = Date.now();
    const multi = spec.nodes.length >= 2;
    // ---- plan
    spec.nodes.forEach((ns, ni) => {
      const i = ni + 1;
      const hex = i.toString(16);
      const nodeCg = path.join(this.cgroupRoot, ns.name);
      const node: NodeInfo = {
        name: ns.name,
        index: i,
        netns: `${this.netnsPrefix}${ns.name}`,
        cgroupPath: nodeCg,
        unmeshedCgroupPath: path.join(this.cgroupRoot, `${ns.name}-unmeshed`),
        hostCgroupPath: path.join(this.cgroupRoot, `${ns.name}-host`),
        bridgeIpv4: `198.18.${i}.1`,
        bridgeIpv6: `fd53:6f63:6b00:${hex}::1`,
        subnet4: `198.18.${i}.0/24`,
        subnet6: `fd53:6f63:6b00:${hex}::/64`,
        links: [],
        pods: [],
      };
      this.nodes.set(ns.name, node);
      ns.pods.forEach((ps, k) => {
        const meshed = ps.meshed ?? true;
        const hostIf = `h-${ps.name}`.length <= 15 ? `h-${ps.name}` : `hp${this.pods.size}`;
        const pod: PodInfo = {
          name: ps.name,
          node: ns.name,
          netns: `${this.netnsPrefix}${ns.name}-${ps.name}`,
          cgroupPath: path.join(meshed ? node.cgroupPath : node.unmeshedCgroupPath, `pod-${ps.name}`),
          ipv4: `198.18.${i}.${10 + k}`,
          ...(ps.ipv6 ? { ipv6: `fd53:6f63:6b00:${hex}::${(0x10 + k).toString(16)}` } : {}),
          meshed,
          hostIfname: hostIf,
        };
        this.pods.set(ps.name, pod);
        node.pods.push(ps.name);
      });
    });
    const nodeList = [...this.nodes.values()];
    let p = 0;
    for (let a = 0; a < nodeList.length; a++) {
      for (let b = a + 1; b < nodeList.length; b++, p++) {
        const A = nodeList[a];
        const B = nodeList[b];
        const v4 = (o: number) => `198.18.250.${4 * p + o}`;
        const v6 = (o: number) => `fd53:6f63:6bff::${(4 * p + o).toString(16)}`;
        A.links.push({ peer: B.name, ifname: `xn${B.index}`, local4: v4(1), peer4: v4(2), local6: v6(1), peer6: v6(2) });
        B.links.push({ peer: A.name, ifname: `xn${A.index}`, local4: v4(2), peer4: v4(1), local6: v6(2), peer6: v6(1) });
      }
    }

    // ---- cgroups
    fs.mkdirSync(this.cgroupRoot);
    for (const n of nodeList) {
      fs.mkdirSync(n.cgroupPath);
      fs.mkdirSync(n.hostCgroupPath);
      if (n.pods.some((pn) => !this.pods.get(pn)!.meshed)) fs.mkdirSync(n.unmeshedCgroupPath);
    }
    for (const pod of this.pods.values()) fs.mkdirSync(pod.cgroupPath);

    // ---- namespaces
    const allNs = [...nodeList.map((n) => n.netns), ...[...this.pods.values()].map((q) => q.netns)];
    run(['ip', '-batch', '-'], allNs.map((n) => `netns add ${n}\n`).join(''));

    // sysctls, before any interface exists in the namespace (so `default` applies to them)
    const noDad = ['net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0'];
    for (const n of nodeList) {
      const s = [...noDad, 'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0'];
      if (multi) s.push('net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1', 'net.ipv6.conf.default.forwarding=1');
      run(['ip', 'netns', 'exec', n.netns, 'sysctl', '-q', '-w', ...s]);
    }
    for (const q of this.pods.values()) run(['ip', 'netns', 'exec', q.netns, 'sysctl', '-q', '-w', ...noDad]);

    // phase 1 (per node): bridge, pod veths, inter-node veths (created from the lower node)
    for (const n of nodeList) {
      const b: string[] = ['link add br0 type bridge mcast_snooping 0'];
      for (const pn of n.pods) {
        const q = this.pods.get(pn)!;
        b.push(`link add ${q.hostIfname} type veth peer name eth0 netns ${q.netns}`);
        b.push(`link set ${q.hostIfname} master br0`, `link set ${q.hostIfname} up`);
      }
      for (const l of n.links) {
        const peer = this.nodes.get(l.peer)!;
        if (peer.index > n.index) {
          const back = peer.links.find((x) => x.peer === n.name)!;
          b.push(`link add ${l.ifname} type veth peer name ${back.ifname} netns ${peer.netns}`);
        }
      }
      b.push('link set lo up', 'link set br0 up');
      b.push(`addr add ${n.bridgeIpv4}/24 dev br0`, `addr add ${n.bridgeIpv6}/64 dev br0 nodad`);
      run(['ip', '-n', n.netns, '-batch', '-'], b.join('\n') + '\n');
    }
    // phase 2 (per node): inter-node link addresses, up
    if (multi) {
      for (const n of nodeList) {
        const b: string[] = [];
        for (const l of n.links) {
          b.push(`addr add ${l.local4}/30 dev ${l.ifname}`, `addr add ${l.local6}/126 dev ${l.ifname} nodad`, `link set ${l.ifname} up`);
        }
        run(['ip', '-n', n.netns, '-batch', '-'], b.join('\n') + '\n');
      }
    }
    // phase 3 (per pod)
    for (const q of this.pods.values()) {
      const n = this.nodes.get(q.node)!;
      const b = ['link set lo up', `addr add ${q.ipv4}/24 dev eth0`];
      if (q.ipv6) b.push(`addr add ${q.ipv6}/64 dev eth0 nodad`);
      b.push('link set eth0 up', `route add default via ${n.bridgeIpv4} dev eth0`);
      if (q.ipv6) b.push(`route add default via ${n.bridgeIpv6} dev eth0`);
      run(['ip', '-n', q.netns, '-batch', '-'], b.join('\n') + '\n');
    }
    // phase 4 (per node): routes to the other nodes' subnets (node namespaces only)
    if (multi) {
      for (const n of nodeList) {
        const b: string[] = [];
        for (const l of n.links) {
          const peer = this.nodes.get(l.peer)!;
          b.push(`route add ${peer.subnet4} via ${l.peer4} dev ${l.ifname}`);
          b.push(`route add ${peer.subnet6} via ${l.peer6} dev ${l.ifname}`);
        }
        run(['ip', '-n', n.netns, '-batch', '-'], b.join('\n') + '\n');
      }
    }
    this.startPause();
    debug(`created sandbox ${this.prefix}-${this.runId} (${nodeList.length} nodes, ${this.pods.size} pods) in ${Date.now() - t0} ms`);
  }

  /**
   * One long-lived process per pod in the pod's cgroup and network namespace, as Kubernetes' pause
   * container: the agent finds a pod's namespace through the processes of its cgroup, so every pod
   * has one from its creation to its teardown (which kills it with the cgroup). Returns once each
   * of them has entered its namespace.
   */
  private startPause(): void {
    const waiting = new Map<number, bigint>();
    for (const q of this.pods.values()) {
      const child = this.spawnIn(q.cgroupPath, q.netns, ['sleep', 'infinity'], { stdio: 'ignore', hostSys: true });
      child.unref();
      if (child.pid) waiting.set(child.pid, fs.statSync(path.join(NETNS_DIR, q.netns), { bigint: true }).ino);
    }
    const deadline = Date.now() + scaled(10_000);
    while (waiting.size && Date.now() < deadline) {
      for (const [pid, ino] of waiting) {
        try {
          if (fs.statSync(`/proc/${pid}/ns/net`, { bigint: true }).ino === ino) waiting.delete(pid);
        } catch {
          throw new Error(`sandbox: a pod's pause process (pid ${pid}) exited before entering its network namespace`);
        }
      }
      if (waiting.size) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
    }
    if (waiting.size) throw new Error(`sandbox: ${waiting.size} pause processes did not enter their network namespace`);
  }

  // ---- lookups

  pod(name: string): PodInfo {
    const p = this.pods.get(name);
    if (!p) throw new Error(`sandbox: no pod '${name}'`);
    return p;
  }

  node(name: string): NodeInfo {
    const n = this.nodes.get(name);
    if (!n) throw new Error(`sandbox: no node '${name}'`);
    return n;
  }

  podNames(): string[] {
    return [...this.pods.keys()];
  }

  nodeNames(): string[] {
    return [...this.nodes.keys()];
  }

  /** Mount bpffs if needed and create this run's pin directory; returns bpffsDir. */
  ensureBpffsDir(): string {
    ensureBpffs('/sys/fs/bpf');
    fs.mkdirSync(this.bpffsDir, { recursive: true });
    return this.bpffsDir;
  }

  // ---- running commands

  /** Spawn argv in the pod's netns AND cgroup (own process group unless opts.detached=false). */
  spawn(podName: string, argv: string[], opts: PodSpawnOptions = {}): ChildProcess {
    const q = this.pod(podName);
    const { cgroupPath, ...rest } = opts;
    if (cgroupPath !== undefined && !path.resolve(cgroupPath).startsWith(this.cgroupRoot + '/')) throw new Error(`sandbox: cgroup ${cgroupPath} is outside the run's tree`);
    return this.spawnIn(cgroupPath ?? q.cgroupPath, q.netns, argv, rest);
  }

  /** `sockmesh <args>` in a pod, seeing the host's /sys/fs/bpf (as the node proxy's pod does). */
  spawnSockmesh(podName: string, args: string[], opts: Omit<PodSpawnOptions, 'hostSys'> = {}): ChildProcess {
    return this.spawn(podName, [process.execPath, SOCKMESH_CLI, ...args], { ...opts, hostSys: true });
  }

  /** Spawn argv in the node's netns, in the node's host cgroup (not below node.cgroupPath). */
  spawnNode(nodeName: string, argv: string[], opts: SpawnOptions = {}): ChildProcess {
    const n = this.node(nodeName);
    return this.spawnIn(n.hostCgroupPath, n.netns, argv, opts);
  }

  exec(podName: string, argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    if (!opts.outsideMesh) return collect(this.spawn(podName, argv, stripExec(opts)), opts);
    const q = this.pod(podName);
    return collect(this.spawnIn(this.node(q.node).hostCgroupPath, q.netns, argv, stripExec(opts)), opts);
  }

  execNode(nodeName: string, argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return collect(this.spawnNode(nodeName, argv, stripExec(opts)), opts);
  }

  /** Run `node podtool.js <args>` in a pod; parses JSON lines. */
  async podtool(podName: string, args: string[], opts: ExecOptions = {}): Promise<PodtoolResult> {
    const r = await this.exec(podName, [process.execPath, PODTOOL_PATH, ...args], opts);
    const lines = parseJsonLines(r.stdout);
    return { ...r, lines, last: lines[lines.length - 1] };
  }

  /**
   * Start a podtool server (`serve` / `serve-udp` args) in a pod and wait for its
   * `{"event":"listening"}` line.
   */
  async startServer(podName: string, args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<ServerHandle> {
    const child = this.spawn(podName, [process.execPath, PODTOOL_PATH, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: opts.env ?? process.env,
    });
    return waitServer(child, opts.timeoutMs ?? 15_000, `${podName}: podtool ${args.join(' ')}`);
  }

  private spawnIn(cg: string, netns: string, argv: string[], opts: PodSpawnOptions): ChildProcess {
    if (this.tornDown) throw new Error('sandbox: already torn down');
    if (argv.length === 0) throw new Error('sandbox: empty argv');
    const { hostSys, ...spawnOpts } = opts;
    const script = hostSys ? IN_CGROUP_NETNS_HOST_SYS_SH : IN_CGROUP_NETNS_SH;
    return cpSpawn('/bin/sh', ['-c', script, 'sh', cg, netns, ...argv], { detached: true, ...spawnOpts });
  }

  // ---- teardown

  async teardown(): Promise<void> {
    this.teardownSync();
  }

  /** Kill everything in the run's cgroups, rmdir them, delete the netns and the bpffs dir. Idempotent. */
  teardownSync(): void {
    this.tornDown = true;
    destroyCgroupTree(this.cgroupRoot);
    const mine = new Set<string>([...this.nodes.values()].map((n) => n.netns).concat([...this.pods.values()].map((q) => q.netns)));
    for (const n of listNetns()) if (n.startsWith(this.netnsPrefix)) mine.add(n);
    deleteNetns([...mine].filter((n) => fs.existsSync(path.join(NETNS_DIR, n))));
    rmBpffsDir(this.bpffsDir);
    live.delete(this);
  }

  /**
   * Remove leftovers of crashed runs with this prefix: cgroup dirs `<cg2>/${prefix}-${pid}[.n]`,
   * netns `${prefix}-${pid}[.n]-*` and bpffs dirs `/sys/fs/bpf/${prefix}-${pid}*` whose pid is dead.
   * Returns what was removed.
   */
  static cleanupStale(prefix = 'smsbx'): string[] {
    if (!PREFIX_RE.test(prefix)) throw new Error(`sandbox: bad prefix '${prefix}'`);
    const re = new RegExp(`^${escapeRe(prefix)}-(\\d+)(?:\\.\\d+)?(?:-|$)`);
    const deadName = (name: string): boolean => {
      const m = re.exec(name);
      return !!m && !pidAlive(Number(m[1]));
    };
    const removed: string[] = [];
    let cg2: string | undefined;
    try {
      cg2 = findCgroup2Mount();
    } catch {
      cg2 = undefined;
    }
    if (cg2) {
      const reCg = new RegExp(`^${escapeRe(prefix)}-(\\d+)(?:\\.\\d+)?$`);
      for (const d of subdirs(cg2)) {
        const m = reCg.exec(path.basename(d));
        if (m && !pidAlive(Number(m[1]))) {
          destroyCgroupTree(d);
          removed.push(d);
        }
      }
    }
    const stNs = listNetns().filter(deadName);
    deleteNetns(stNs);
    removed.push(...stNs.map((n) => `netns:${n}`));
    if (bpffsMounted()) {
      // Pins of a run are anything named `${prefix}-${pid}*`.
      const reBpf = new RegExp(`^${escapeRe(prefix)}-(\\d+)`);
      for (const e of fs.readdirSync('/sys/fs/bpf')) {
        const m = reBpf.exec(e);
        if (m && !pidAlive(Number(m[1]))) {
          const d = path.join('/sys/fs/bpf', e);
          rmBpffsDir(d);
          removed.push(d);
        }
      }
    }
    if (removed.length) debug(`cleanupStale(${prefix}) removed: ${removed.join(', ')}`);
    return removed;
  }
}

function validateSpec(spec: SandboxSpec): void {
  if (!spec.nodes || spec.nodes.length === 0) throw new Error('sandbox: spec needs at least one node');
  if (spec.nodes.length > 249) throw new Error('sandbox: at most 249 nodes');
  const nodeNames = new Set<string>();
  const podNames = new Set<string>();
  for (const n of spec.nodes) {
    if (!NODE_NAME_RE.test(n.name)) throw new Error(`sandbox: bad node name '${n.name}' (letters, digits, _; ≤32)`);
    if (nodeNames.has(n.name)) throw new Error(`sandbox: duplicate node '${n.name}'`);
    nodeNames.add(n.name);
    if (n.pods.length > 240) throw new Error(`sandbox: node '${n.name}': at most 240 pods`);
    for (const q of n.pods) {
      if (!POD_NAME_RE.test(q.name)) throw new Error(`sandbox: bad pod name '${q.name}' (letters, digits, _ -; ≤32)`);
      if (podNames.has(q.name)) throw new Error(`sandbox: duplicate pod '${q.name}' (pod names are unique per sandbox)`);
      podNames.add(q.name);
    }
  }
}

function stripExec(opts: ExecOptions): SpawnOptions {
  const { timeoutMs: _t, input: _i, outsideMesh: _o, ...rest } = opts;
  return { stdio: ['pipe', 'pipe', 'pipe'], ...rest };
}

function killGroup(child: ChildProcess, sig: NodeJS.Signals = 'SIGKILL'): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, sig);
  } catch {
    try {
      child.kill(sig);
    } catch {
      /* gone */
    }
  }
}

function collect(child: ChildProcess, opts: ExecOptions): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child);
    }, scaled(opts.timeoutMs ?? 60_000));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, timedOut });
    });
    if (child.stdin) {
      child.stdin.on('error', () => undefined);
      if (opts.input !== undefined) child.stdin.end(opts.input);
      else child.stdin.end();
    }
  });
}

export function parseJsonLines(text: string): any[] {
  const out: any[] = [];
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (!t.startsWith('{')) continue;
    try {
      out.push(JSON.parse(t));
    } catch {
      /* not JSON */
    }
  }
  return out;
}

/** Wait for a spawned podtool server's `{"event":"listening"}` line (`timeoutMs` on the host, scaled). */
export function waitServer(child: ChildProcess, hostTimeoutMs: number, what = 'server'): Promise<ServerHandle> {
  const timeoutMs = scaled(hostTimeoutMs);
  return new Promise((resolve, reject) => {
    const lines: any[] = [];
    let buf = '';
    let err = '';
    let settled = false;
    const exited = new Promise<void>((r) => child.once('close', () => r()));
    const handle = (ready: any): ServerHandle => ({
      child,
      ready,
      lines,
      stderr: () => err,
      stop: async () => {
        if (child.exitCode === null && child.signalCode === null) killGroup(child);
        await exited;
      },
    });
    const fail = (msg: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      killGroup(child);
      reject(new Error(`${what}: ${msg}; stderr: ${err.trim()}`));
    };
    const timer = setTimeout(() => fail(`no "listening" line within ${timeoutMs} ms`), timeoutMs);
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        let obj: any;
        try {
          obj = JSON.parse(line);
        } catch {
          continue;
        }
        lines.push(obj);
        if (!settled && obj && obj.event === 'listening') {
          settled = true;
          clearTimeout(timer);
          resolve(handle(obj));
        }
      }
    });
    child.on('error', (e) => fail(e.message));
    child.on('close', (code, sig) => fail(`exited (${code ?? sig}) before listening`));
  });
}

/** `[v6]:port` / `v4:port` for a target address. */
export function hostPort(addr: string, port: number): string {
  return net.isIPv6(addr) ? `[${addr}]:${port}` : `${addr}:${port}`;
}
