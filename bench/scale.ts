// Service scale (issue 6, scenario 3): kube-proxy-style iptables rules vs sockmesh's maps, at
// N = 100 .. 100 000 services. For each N:
//
//   apply time  iptables: wall and CPU time of `iptables-restore --noflush --counters` for kube-proxy's
//               full sync (into an empty nat table, then a periodic resync over the same rules) and
//               for a single-service change written the way kube-proxy >= 1.28 does it
//               (MinimizeIPTablesRestore: KUBE-SERVICES in full + the changed service's chains);
//               sockmesh: wall time of `Reconciler.apply(desiredState(model))` for the full model
//               into empty maps, the same model again (nothing to write), and a one-service change.
//   connect     native client (`pingpong --connect K`) to the FIRST and to the LAST service's VIP,
//               latency of connect() + one 1-byte echo, and CPU per connect.
//   size        iptables: rules and bytes of `iptables-save -t nat`; sockmesh: memlock of the
//               service maps (sm_services + sm_backends).
//
// Topology (one Sandbox, four nodes; routes between every pair of node namespaces):
//
//   node nft     client pod `cn` (unmeshed); kube-proxy rules via iptables-nft in the NODE netns
//   node srv     backend pod `srv`: native echo server on 198.18.2.10:9000
//   node sm      client pod `cm` (meshed); sockmesh datapath attached to this node's cgroup
//   node legacy  client pod `cl` (unmeshed); kube-proxy rules via iptables-legacy in the node netns
//
// The rules sit in the client's node namespace and see the pod's SYN in PREROUTING, as on a real
// node. The backend is on another node on purpose: a reply from a pod on the client's own bridge
// would be bridged (no br_netfilter here) and never un-DNATed; across nodes it comes back through
// the client's node netns, whose conntrack reverses the DNAT. sockmesh gets the same cross-node
// path (so no sk_msg redirect: translation only), in a node of its own so that its SYNs do not
// walk the kube-proxy rules of the other nodes. nft and legacy also get a node each: both
// backends' nat hooks in one netns would both run.
//
//   npm run build:ts && node dist/bench/scale.js [--quick] [--scales 100,1000,10000,50000,100000]
//       [--connects 1000] [--reps 3] [--backends nft,legacy] [--max-restore-s 60] [--out FILE.json]
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { desiredState, Reconciler } from '../mesh-agent/datapath/reconciler';
import { Endpoint, Model, Service } from '../core/model';
import { Sandbox, ServerHandle, parseJsonLines, waitServer } from '../sandbox/sandbox';
import { ChartSpec, ScenarioOptions, ScenarioResult, ensureNativePingpong, median, pidsCpuUs, rotate, runStandalone } from './common';
import { fdinfo } from './kernelmaps';
import {
  KubeProxyOptions,
  KubeService,
  fullSyncRestore,
  kubeJumpCommands,
  partialSyncRestore,
  restoreStats,
  savedServiceChains,
} from './iptables';

export type IptBackend = 'nft' | 'legacy';
export const ALL_BACKENDS: IptBackend[] = ['nft', 'legacy'];
const BIN: Record<IptBackend, string> = { nft: 'iptables-nft', legacy: 'iptables-legacy' };
/** Client pod of each variant (see the topology above). */
const CLIENT_POD: Record<IptBackend | 'sockmesh', string> = { nft: 'cn', legacy: 'cl', sockmesh: 'cm' };
const SM_NODE = 'sm';
const APP_PORT = 9000;
/** kube-proxy --cluster-cidr: the sandbox's pod space, so our clients are never masqueraded. */
export const CLUSTER_CIDR = '198.18.0.0/16';
const KP: KubeProxyOptions = { clusterCidr: CLUSTER_CIDR };
/** A resync (second full sync) is measured only when the first one took less than this. */
const RESYNC_MAX_MS = 60_000;

export interface ScaleOptions {
  scales: number[];
  /** Measured connects per client run. */
  connects: number;
  reps: number;
  /** iptables backends to compare with sockmesh. */
  backends: IptBackend[];
  /** An iptables-restore taking longer is killed; that backend is then skipped at larger N. */
  maxRestoreS: number;
  /** Single-service changes measured per scale (median reported). */
  changes: number;
}

// ---- the generated services ---------------------------------------------------------------------

/**
 * Service i of a run: one TCP port, one endpoint. VIPs come from 198.19.0.0/16 (RFC 2544
 * benchmarking range, never routed, never a sandbox address): 198.19.0.1 .. 198.19.255.254, then the
 * same VIPs again on the next port (kube-proxy matches VIP and port, so N services = N distinct
 * (VIP, port) pairs). Endpoints of all but the first and the last service are addresses in
 * 198.18.128.0/18, which no sandbox namespace owns and no packet ever goes to.
 */
export function scaleVip(i: number): { vip: string; port: number } {
  const j = 1 + (i % 65534);
  return { vip: `198.19.${j >> 8}.${j & 255}`, port: 80 + Math.floor(i / 65534) };
}

export function dummyEndpoint(i: number): { ip: string; port: number } {
  return { ip: `198.18.${128 + ((i >> 8) & 63)}.${i & 255}`, port: 8080 };
}

/** N kube services; the first and the last point at `real`. */
export function scaleServices(n: number, real: { ip: string; port: number }): KubeService[] {
  const out: KubeService[] = [];
  for (let i = 0; i < n; i++) {
    const { vip, port } = scaleVip(i);
    const ep = i === 0 || i === n - 1 ? real : dummyEndpoint(i);
    out.push({ namespace: 'bench', name: `svc${i}`, portName: 'tcp', vip, port, endpoints: [{ ...ep }] });
  }
  return out;
}

/** The same services as a sockmesh model (one service per kube service, same VIP, port, endpoint). */
export function scaleModel(services: KubeService[]): Model {
  const svcs: Service[] = [];
  const eps: Endpoint[] = [];
  for (const s of services) {
    svcs.push({ namespace: s.namespace, name: s.name, vips: [s.vip], ports: [{ name: s.portName, port: s.port, protocol: 'TCP' }] });
    for (const e of s.endpoints) eps.push({ service: `${s.namespace}/${s.name}`, address: e.ip, port: e.port, weight: 1, healthy: true });
  }
  return { services: svcs, endpoints: eps, workloads: [] };
}

// ---- measurements ------------------------------------------------------------------------------

export interface RestoreTiming {
  wallMs: number;
  /** user+sys of iptables-restore (getrusage of the waited-for child, via bash `times`); null when unreadable. */
  cpuMs: number | null;
  /** Peak RSS of iptables-restore, KiB (from /usr/bin/time). */
  maxRssKiB: number | null;
  inputBytes: number;
  timedOut: boolean;
}

export interface IptApply {
  backend: IptBackend;
  version: string;
  /** kube-proxy's full sync (--noflush); null when not tried (it timed out at a smaller scale). */
  full: RestoreTiming | null;
  /** Why `full` is missing or timed out. */
  fullNote?: string;
  /** Control: the same input without --noflush (replaces the whole nat table; kube-proxy never does this). */
  flushLoad: RestoreTiming;
  resync: (RestoreTiming & { saveMs: number }) | null;
  change: RestoreTiming[];
  /** Medians over `change`. */
  changeWallMs: number | null;
  changeCpuMs: number | null;
  rules: number;
  chains: number;
  saveBytes: number;
}

export interface SmApply {
  /** desiredState() + apply() into empty maps. */
  fullMs: number;
  /** apply() alone (its own durationMs): kernel writes + RCU waits + diffing. */
  fullApplyMs: number;
  /** This process's user+sys over the full apply (process.cpuUsage). */
  fullCpuMs: number;
  /** The same model again: nothing to write, diff only. */
  resyncMs: number;
  changeMs: number[];
  /** Medians over the single changes: wall, apply() alone, CPU. */
  changeWallMs: number;
  changeApplyMs: number;
  changeCpuMs: number;
  /** memlock of sm_services + sm_backends, bytes (capacity-dependent, see the notes). */
  mapBytes: number;
  mapCapacity: { sm_services: number; sm_backends: number };
}

export interface ConnectCell {
  scale: number;
  variant: string;
  /** 'first' | 'last' */
  which: string;
  p50_us: number;
  p90_us: number;
  p99_us: number;
  connect_p50_us: number | null;
  cpu_us_per_connect: number;
  runs: number;
}

export interface ScaleData {
  options: ScaleOptions;
  topology: Record<string, string>;
  apply: Array<{ scale: number; iptables: Array<IptApply | { backend: IptBackend; skipped: string }>; sockmesh: SmApply }>;
  connect: ConnectCell[];
}

const hasTime = fs.existsSync('/usr/bin/time');

/**
 * Runs "$@", then bash's `times`: the second line is the CPU of its waited-for descendants
 * (getrusage RUSAGE_CHILDREN, ms resolution; /usr/bin/time's %U/%S have only 10 ms, and cgroup
 * cpu.stat is not kept on this host's hybrid cgroup setup). /usr/bin/time, when present, adds the
 * peak RSS.
 */
const TIMED_SH = '"$@"; rc=$?; times >&2; exit $rc';

function parseTimes(stderr: string): number | null {
  const m = /^(\d+)m([\d.]+)s (\d+)m([\d.]+)s\n(\d+)m([\d.]+)s (\d+)m([\d.]+)s\s*$/m.exec(stderr);
  if (!m) return null;
  return (Number(m[5]) * 60 + Number(m[6]) + Number(m[7]) * 60 + Number(m[8])) * 1e3;
}

/** iptables-restore of `input` in a node's netns; wall time here, CPU and peak RSS of the child. */
async function restore(sb: Sandbox, node: string, b: IptBackend, input: string, timeoutMs: number, noflush = true): Promise<RestoreTiming> {
  const argv = [`${BIN[b]}-restore`, ...(noflush ? ['--noflush'] : []), '--counters'];
  const timed = ['bash', '-c', TIMED_SH, 'bash', ...(hasTime ? ['/usr/bin/time', '-f', 'SMRSS %M'] : []), ...argv];
  const t0 = process.hrtime.bigint();
  const r = await sb.execNode(node, timed, { input, timeoutMs });
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.timedOut) return { wallMs, cpuMs: null, maxRssKiB: null, inputBytes: Buffer.byteLength(input), timedOut: true };
  if (r.code !== 0) throw new Error(`${BIN[b]}-restore in node ${node} exited ${r.code ?? r.signal}: ${r.stderr.slice(0, 2000)}`);
  const rss = /^SMRSS (\d+)$/m.exec(r.stderr);
  return {
    wallMs,
    cpuMs: parseTimes(r.stderr),
    maxRssKiB: rss ? Number(rss[1]) : null,
    inputBytes: Buffer.byteLength(input),
    timedOut: false,
  };
}

async function nodeRun(sb: Sandbox, node: string, argv: string[], timeoutMs = 120_000): Promise<string> {
  const r = await sb.execNode(node, argv, { timeoutMs });
  if (r.code !== 0) throw new Error(`\`${argv.join(' ')}\` in node ${node} exited ${r.code ?? r.signal}${r.timedOut ? ' (timed out)' : ''}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** Empty the nat table of a node and install kube-proxy's jumps from the built-in chains. */
async function resetNat(sb: Sandbox, node: string, b: IptBackend): Promise<void> {
  await nodeRun(sb, node, [BIN[b], '-w', '-t', 'nat', '-F']);
  await nodeRun(sb, node, [BIN[b], '-w', '-t', 'nat', '-X']);
  await installJumps(sb, node, b, true);
}

/** kube-proxy's jumps from the built-in chains; `create`: also create the target chains. */
async function installJumps(sb: Sandbox, node: string, b: IptBackend, create: boolean): Promise<void> {
  for (const c of kubeJumpCommands()) if (create || !c.includes('-N')) await nodeRun(sb, node, [BIN[b], ...c]);
}

/** memlock (bpf_map_memory_usage) of a map fd, from /proc/self/fdinfo. */
const memlockBytes = (fd: number): number => Number(fdinfo(fd).memlock ?? NaN);

const pow2ceil = (n: number): number => 2 ** Math.ceil(Math.log2(Math.max(1, n)));

// ---- the scenario ------------------------------------------------------------------------------

export async function runScale(o: ScaleOptions & ScenarioOptions): Promise<ScenarioResult> {
  const log = o.log;
  for (const b of o.backends) if (!ALL_BACKENDS.includes(b)) throw new Error(`unknown iptables backend '${b}' (${ALL_BACKENDS.join(', ')})`);
  if (!o.scales.length || o.scales.some((n) => !Number.isInteger(n) || n < 2)) throw new Error('--scales: integers >= 2');
  const native = ensureNativePingpong();
  const warmup = Math.max(10, Math.min(200, Math.floor(o.connects / 10)));
  const versions: Partial<Record<IptBackend, string>> = {};
  for (const b of o.backends) {
    const r = spawnSync(BIN[b], ['--version'], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${BIN[b]} --version failed: ${r.error?.message ?? r.stderr}`);
    versions[b] = r.stdout.trim();
  }

  Sandbox.cleanupStale('smbench');
  const sb = await Sandbox.create({
    prefix: 'smbench',
    nodes: [
      { name: 'nft', pods: [{ name: CLIENT_POD.nft, meshed: false }] },
      { name: 'srv', pods: [{ name: 'srv', meshed: false }] },
      { name: SM_NODE, pods: [{ name: CLIENT_POD.sockmesh }] },
      { name: 'legacy', pods: [{ name: CLIENT_POD.legacy, meshed: false }] },
    ],
  });
  let server: ServerHandle | undefined;
  let dp: Datapath | undefined;
  const bpffs = path.join(sb.ensureBpffsDir(), 'scale');
  try {
    const real = { ip: sb.pod('srv').ipv4, port: APP_PORT };
    server = await waitServer(
      sb.spawn('srv', [native, '--serve', '--port', String(APP_PORT)], { stdio: ['ignore', 'pipe', 'pipe'] }),
      15_000,
      'srv: native pingpong server',
    );
    const serverPid: number = typeof server.ready?.pid === 'number' ? server.ready.pid : server.child.pid!;

    const maxN = Math.max(...o.scales);
    const mapCapacity = { sm_services: Math.max(1024, pow2ceil(maxN + 16)), sm_backends: Math.max(2048, 2 * pow2ceil(maxN + 16)) };
    dp = Datapath.install({ cgroupPath: sb.node(SM_NODE).cgroupPath, bpffsDir: bpffs, mapSizes: mapCapacity });
    // The bench's client is no workload of the model: translate every socket of the cgroup.
    dp.setTranslateAll(true);
    const rec = new Reconciler(dp);
    rec.adopt();
    const smApply = (m: Model): { wallMs: number; applyMs: number; cpuMs: number; updated: number; added: number } => {
      const c0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      const r = rec.apply(desiredState(m, SM_NODE));
      const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
      const c = process.cpuUsage(c0);
      if (r.errors.length) throw r.errors[0];
      return { wallMs, applyMs: r.durationMs, cpuMs: (c.user + c.system) / 1e3, updated: r.updated, added: r.added };
    };
    for (const b of o.backends) await resetNat(sb, b, b);

    const data: ScaleData = {
      options: { scales: o.scales, connects: o.connects, reps: o.reps, backends: o.backends, maxRestoreS: o.maxRestoreS, changes: o.changes },
      topology: {
        nft: `client ${sb.pod(CLIENT_POD.nft).ipv4}, rules in node netns via ${BIN.nft}`,
        legacy: `client ${sb.pod(CLIENT_POD.legacy).ipv4}, rules in node netns via ${BIN.legacy}`,
        sockmesh: `client ${sb.pod(CLIENT_POD.sockmesh).ipv4}, datapath on the node's cgroup`,
        server: `${real.ip}:${real.port} (node srv)`,
      },
      apply: [],
      connect: [],
    };
    const gaveUp: Partial<Record<IptBackend, string>> = {};
    const saveTimeoutMs = Math.max(300_000, o.maxRestoreS * 1000);
    const samples = new Map<string, Array<{ p50: number; p90: number; p99: number; c50: number | null; cpu: number }>>();

    for (const n of o.scales) {
      log(`scale ${n}: generating ${n} services`);
      const services = scaleServices(n, real);
      const changeAt = Math.floor(n / 2); // a service in the middle, never the first or the last
      const alt = [
        { ip: '198.18.191.1', port: 8081 },
        { ip: '198.18.191.2', port: 8081 },
      ];

      // -- iptables: full sync into an empty nat table, resync, single changes
      const iptRows: ScaleData['apply'][number]['iptables'] = [];
      const live: IptBackend[] = [];
      for (const b of o.backends) {
        const text = fullSyncRestore(services, KP);
        const st = restoreStats(text);
        const cap = o.maxRestoreS * 1000;
        log(`scale ${n}: ${BIN[b]}: ${st.rules} rules in ${st.chains} chains, ${(st.bytes / 1e6).toFixed(1)} MB of restore input`);
        // Control: the same input without --noflush (the whole nat table is replaced; the jumps
        // from the built-in chains go too and are put back, untimed).
        await resetNat(sb, b, b);
        const flushLoad = await restore(sb, b, b, text, cap, false);
        if (flushLoad.timedOut) {
          iptRows.push({ backend: b, skipped: `even without --noflush, the restore of ${n} services took over ${o.maxRestoreS} s` });
          await resetNat(sb, b, b);
          continue;
        }
        log(`scale ${n}: ${BIN[b]} restore without --noflush ${flushLoad.wallMs.toFixed(0)} ms`);
        let full: RestoreTiming | null = null;
        let fullNote: string | undefined = gaveUp[b];
        if (!gaveUp[b]) {
          await resetNat(sb, b, b);
          full = await restore(sb, b, b, text, cap);
          if (full.timedOut) {
            fullNote = gaveUp[b] = `the --noflush full sync of ${n} services did not finish within ${o.maxRestoreS} s (killed; nothing committed)`;
          }
          log(`scale ${n}: ${BIN[b]} full sync ${full.timedOut ? `> ${o.maxRestoreS} s, killed` : `${full.wallMs.toFixed(0)} ms (cpu ${full.cpuMs?.toFixed(0) ?? '?'} ms)`}`);
        }
        if (!full || full.timedOut) {
          // Load the same rules the fast way, so that connects and single changes are still measured.
          await resetNat(sb, b, b);
          // The same load as the control above, which finished within the cap; on this VM its
          // time swings, so allow it 3x before giving this backend up at this scale.
          const r = await restore(sb, b, b, text, 3 * cap, false);
          if (r.timedOut) {
            iptRows.push({ backend: b, skipped: `the rules of ${n} services could not be reloaded without --noflush within ${3 * o.maxRestoreS} s (a second time)` });
            await resetNat(sb, b, b);
            continue;
          }
          await installJumps(sb, b, b, false);
        }
        let resync: IptApply['resync'] = null;
        if (full && !full.timedOut && full.wallMs < RESYNC_MAX_MS) {
          // kube-proxy's periodic full sync: iptables-save to find stale chains, then everything again.
          const t0 = process.hrtime.bigint();
          const save = await nodeRun(sb, b, [`${BIN[b]}-save`, '-t', 'nat'], saveTimeoutMs);
          const saveMs = Number(process.hrtime.bigint() - t0) / 1e6;
          const r = await restore(sb, b, b, fullSyncRestore(services, KP, savedServiceChains(save)), cap);
          resync = { ...r, saveMs };
        }
        const save = await nodeRun(sb, b, [`${BIN[b]}-save`, '-t', 'nat'], saveTimeoutMs);
        const saved = restoreStats(save);
        if (saved.rules < st.rules + 3) throw new Error(`${BIN[b]}: ${saved.rules} rules in the nat table after the sync, expected ${st.rules} + 3 jumps`);
        iptRows.push({
          backend: b,
          version: versions[b]!,
          full,
          ...(fullNote ? { fullNote } : {}),
          flushLoad,
          resync,
          change: [],
          changeWallMs: null,
          changeCpuMs: null,
          rules: saved.rules,
          chains: saved.chains,
          saveBytes: saved.bytes,
        });
        live.push(b);
      }

      // -- sockmesh: empty maps, then the full model, the same again, then single changes
      smApply({ services: [], endpoints: [], workloads: [] });
      const model = scaleModel(services);
      const smFull = smApply(model);
      if (smFull.added !== n) throw new Error(`sockmesh: ${smFull.added} services added, expected ${n}`);
      const smResync = smApply(model);
      log(`scale ${n}: sockmesh full ${smFull.wallMs.toFixed(1)} ms (apply ${smFull.applyMs.toFixed(1)} ms), resync ${smResync.wallMs.toFixed(1)} ms`);
      const sm: SmApply = {
        fullMs: smFull.wallMs,
        fullApplyMs: smFull.applyMs,
        fullCpuMs: smFull.cpuMs,
        resyncMs: smResync.wallMs,
        changeMs: [],
        changeWallMs: NaN,
        changeApplyMs: NaN,
        changeCpuMs: NaN,
        mapBytes: memlockBytes(dp.maps.sm_services.fd) + memlockBytes(dp.maps.sm_backends.fd),
        mapCapacity,
      };

      // -- single-service changes, the variants interleaved
      const order: Array<IptBackend | 'sockmesh'> = [...live, 'sockmesh'];
      const smChange: Array<{ applyMs: number; cpuMs: number }> = [];
      for (let c = 0; c < o.changes; c++) {
        const ep = alt[c % 2];
        services[changeAt] = { ...services[changeAt], endpoints: [{ ...ep }] };
        model.endpoints[changeAt] = { ...model.endpoints[changeAt], address: ep.ip, port: ep.port };
        for (const v of rotate(order, c)) {
          if (v === 'sockmesh') {
            const r = smApply(model);
            if (r.updated !== 1) throw new Error(`sockmesh single change: ${r.updated} services updated, expected 1`);
            sm.changeMs.push(r.wallMs);
            smChange.push(r);
          } else {
            const r = await restore(sb, v, v, partialSyncRestore(services, new Set([changeAt]), KP), o.maxRestoreS * 1000);
            if (r.timedOut) log(`scale ${n}: ${BIN[v]}: a single-service change took over ${o.maxRestoreS} s (killed)`);
            (iptRows.find((x) => x.backend === v) as IptApply).change.push(r);
          }
        }
      }
      sm.changeWallMs = median(sm.changeMs);
      sm.changeApplyMs = median(smChange.map((x) => x.applyMs));
      sm.changeCpuMs = median(smChange.map((x) => x.cpuMs));
      for (const row of iptRows) {
        if (!('change' in row) || !row.change.length) continue;
        const done = row.change.filter((x) => !x.timedOut);
        // A killed change counts as "at least the cap" in the median.
        row.changeWallMs = median(row.change.map((x) => (x.timedOut ? o.maxRestoreS * 1000 : x.wallMs)));
        const cpus = done.map((x) => x.cpuMs).filter((x): x is number => x !== null);
        row.changeCpuMs = cpus.length ? median(cpus) : null;
        log(`scale ${n}: ${BIN[row.backend]} single change ${row.changeWallMs.toFixed(0)} ms; sockmesh ${sm.changeWallMs.toFixed(1)} ms`);
      }
      data.apply.push({ scale: n, iptables: iptRows, sockmesh: sm });

      // -- connects to the first and the last service, variants interleaved
      const first = scaleVip(0);
      const last = scaleVip(n - 1);
      const variants = [...live, 'sockmesh' as const].flatMap((v) => [
        { variant: v, which: 'first', pod: CLIENT_POD[v], target: `${first.vip}:${first.port}` },
        { variant: v, which: 'last', pod: CLIENT_POD[v], target: `${last.vip}:${last.port}` },
      ]);
      const connect = async (pod: string, target: string, count: number, warm: number): Promise<any> => {
        const r = await sb.exec(pod, [native, '--target', target, '--connect', String(count), '--warmup', String(warm)], {
          timeoutMs: 120_000 + count * 50,
        });
        const lines = parseJsonLines(r.stdout);
        const last = lines[lines.length - 1];
        if (r.code !== 0 || !last?.ok) {
          throw new Error(`connect from ${pod} to ${target} failed (exit ${r.code ?? r.signal}${r.timedOut ? ', timed out' : ''}): ${r.stdout.trim()} ${r.stderr.trim()}`);
        }
        return last;
      };
      // Sanity, loudly: every variant reaches the real backend through the first service.
      for (const v of variants.filter((x) => x.which === 'first')) await connect(v.pod, v.target, 3, 0);
      for (let rep = 0; rep < o.reps; rep++) {
        for (const v of rotate(variants, rep + o.scales.indexOf(n))) {
          const s0 = pidsCpuUs([serverPid]);
          const r = await connect(v.pod, v.target, o.connects, warmup);
          const serverUs = ((pidsCpuUs([serverPid]) - s0) * o.connects) / (o.connects + warmup);
          const cpu = (Number(r.cpu_user_us) + Number(r.cpu_sys_us) + serverUs) / o.connects;
          const k = `${n}|${v.variant}|${v.which}`;
          if (!samples.has(k)) samples.set(k, []);
          const c50 = typeof r.connect_p50_us === 'number' ? r.connect_p50_us : null;
          samples.get(k)!.push({ p50: r.p50_us, p90: r.p90_us, p99: r.p99_us, c50, cpu });
          log(
            `scale ${n} rep ${rep + 1}/${o.reps} ${v.variant.padEnd(8)} ${v.which.padEnd(5)} p50 ${Number(r.p50_us).toFixed(1).padStart(8)} us  ` +
              `p99 ${Number(r.p99_us).toFixed(1).padStart(8)} us  cpu ${cpu.toFixed(1).padStart(7)} us/connect`,
          );
        }
      }
      for (const v of variants) {
        const s = samples.get(`${n}|${v.variant}|${v.which}`)!;
        const c50s = s.map((x) => x.c50).filter((x): x is number => x !== null);
        data.connect.push({
          scale: n,
          variant: v.variant,
          which: v.which,
          p50_us: median(s.map((x) => x.p50)),
          p90_us: median(s.map((x) => x.p90)),
          p99_us: median(s.map((x) => x.p99)),
          connect_p50_us: c50s.length ? median(c50s) : null,
          cpu_us_per_connect: median(s.map((x) => x.cpu)),
          runs: s.length,
        });
      }
    }
    return {
      name: 'scale',
      title: 'Service scale: kube-proxy iptables rules vs sockmesh maps',
      markdown: renderMarkdown(data, versions, warmup, o.quick),
      data: { ...data, versions, warmup },
      charts: charts(data),
    };
  } finally {
    await server?.stop();
    dp?.close();
    if (fs.existsSync(bpffs)) Datapath.remove(bpffs);
    await sb.teardown();
  }
}

// ---- report ------------------------------------------------------------------------------------

const VLABEL: Record<string, string> = { nft: 'iptables-nft', legacy: 'iptables-legacy', sockmesh: 'sockmesh' };
const fmt = (x: number | null | undefined, d = 1): string => (x === null || x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(d));
const fmtMs = (x: number | null | undefined): string =>
  x === null || x === undefined || !Number.isFinite(x) ? '–' : x >= 100 ? x.toFixed(0) : x >= 1 ? x.toFixed(1) : x.toFixed(2);
const kib = (b: number): string => (b >= 1 << 20 ? `${(b / (1 << 20)).toFixed(1)} MiB` : `${(b / 1024).toFixed(0)} KiB`);

function renderMarkdown(d: ScaleData, versions: Partial<Record<IptBackend, string>>, warmup: number, quick: boolean): string {
  const variants = [...d.options.backends, 'sockmesh'];
  const cell = (n: number, v: string, w: string) => d.connect.find((c) => c.scale === n && c.variant === v && c.which === w);
  const out: string[] = [];
  out.push(
    `### Connect latency to the first and to the last service\n`,
    `connect() + one 1-byte echo on the new connection (closed with RST), µs; CPU = client + server per connect. ` +
      `Medians over ${d.options.reps} interleaved runs of ${d.options.connects} connects (after ${warmup} warm-up).\n`,
    `| services | variant | first p50 | first p99 | last p50 | last p90 | last p99 | last/first p50 | CPU/connect first | CPU/connect last |`,
    `|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|`,
  );
  for (const n of d.options.scales) {
    for (const v of variants) {
      const f = cell(n, v, 'first');
      const l = cell(n, v, 'last');
      if (!f || !l) {
        const why = d.apply.find((a) => a.scale === n)?.iptables.find((x) => x.backend === v);
        out.push(`| ${n} | ${VLABEL[v]} | not measured${why && 'skipped' in why ? `: ${why.skipped}` : ''} | | | | | | | |`);
        continue;
      }
      out.push(
        `| ${n} | ${VLABEL[v]} | ${fmt(f.p50_us)} | ${fmt(f.p99_us)} | ${fmt(l.p50_us)} | ${fmt(l.p90_us)} | ${fmt(l.p99_us)} | ` +
          `${(l.p50_us / f.p50_us).toFixed(2)}× | ${fmt(f.cpu_us_per_connect)} | ${fmt(l.cpu_us_per_connect)} |`,
      );
    }
  }
  out.push(
    `\n### Time to apply\n`,
    `iptables: wall time of \`iptables-restore --noflush --counters\` in the node netns (CPU = its user+sys, from getrusage of the waited-for child, ms resolution). ` +
      `Full = kube-proxy's full sync into an empty nat table; "no --noflush" = the same input restored without ` +
      `--noflush (the whole table replaced: a control kube-proxy never runs, showing what the --noflush merge costs); resync = the periodic full sync over the same rules ` +
      `(restore; the \`iptables-save -t nat\` kube-proxy runs first to find stale chains is the "save" column); ` +
      `1 change = kube-proxy's partial sync for one service whose endpoint changed (median of ${d.options.changes}). ` +
      `sockmesh: wall time of \`Reconciler.apply(desiredState(model))\` in this process, JS model diffing included ` +
      `("apply" = apply() alone, without building the desired state); CPU = this process's user+sys over it.\n`,
    `| services | variant | full sync (ms) | full CPU (ms) | no --noflush (ms) | resync (ms) | save (ms) | 1 change (ms) | 1 change CPU (ms) | rules | ruleset / maps |`,
    `|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|`,
  );
  for (const a of d.apply) {
    for (const r of a.iptables) {
      if ('skipped' in r) {
        out.push(`| ${a.scale} | ${VLABEL[r.backend]} | not applied: ${r.skipped} | | | | | | | | |`);
        continue;
      }
      const killed = `> ${d.options.maxRestoreS * 1000} (killed)`;
      const full = r.full === null ? 'not tried¹' : r.full.timedOut ? killed : fmtMs(r.full.wallMs);
      const nKilled = r.change.filter((x) => x.timedOut).length;
      const change =
        nKilled === r.change.length && nKilled > 0
          ? killed
          : `${fmtMs(r.changeWallMs)}${nKilled ? ` (${nKilled} of ${r.change.length} killed, counted as the cap)` : ''}`;
      const rss = r.full?.maxRssKiB ?? r.flushLoad.maxRssKiB;
      out.push(
        `| ${a.scale} | ${VLABEL[r.backend]} | ${full} | ${fmtMs(r.full?.cpuMs)} | ${fmtMs(r.flushLoad.wallMs)} | ` +
          `${r.resync?.timedOut ? killed : fmtMs(r.resync?.wallMs)} | ${fmtMs(r.resync?.saveMs)} | ` +
          `${change} | ${fmtMs(r.changeCpuMs)} | ${r.rules} | ${kib(r.saveBytes)} saved${rss ? `; restore RSS ${kib(rss * 1024)}` : ''} |`,
      );
    }
    const s = a.sockmesh;
    out.push(
      `| ${a.scale} | sockmesh | ${fmtMs(s.fullMs)} | ${fmtMs(s.fullCpuMs)} | – | ${fmtMs(s.resyncMs)} | – | ${fmtMs(s.changeWallMs)} ` +
        `(apply ${fmtMs(s.changeApplyMs)}) | ${fmtMs(s.changeCpuMs)} | – | ${kib(s.mapBytes)} memlock |`,
    );
  }
  const notTried = d.apply.flatMap((a) => a.iptables.filter((r): r is IptApply => !('skipped' in r) && r.full === null).map((r) => `${VLABEL[r.backend]} at ${a.scale}`));
  if (notTried.length) {
    const why = d.apply.flatMap((a) => a.iptables).find((r): r is IptApply => !('skipped' in r) && !!r.full?.timedOut)?.fullNote;
    out.push(
      `\n¹ ${notTried.join(', ')}: the --noflush full sync was not tried because at a smaller scale ${why ?? 'it timed out'}; ` +
        `the rules were loaded without --noflush instead, so the connects and single changes are still measured.`,
    );
  }
  const cap = d.apply[0]?.sockmesh.mapCapacity;
  out.push(
    `\n${Object.entries(versions)
      .map(([b, v]) => `\`${BIN[b as IptBackend]} --version\`: ${v}`)
      .join('; ')}. ` +
      `${quick ? 'Quick run (few connects, small scales): a harness check, not a measurement. ' : ''}\n`,
    `#### Method\n`,
    `- Sandbox with four node namespaces: the iptables-nft client's node, the iptables-legacy client's node, the sockmesh ` +
      `client's node (datapath attached to that node's cgroup) and the backend's node (native echo server). Every client ` +
      `reaches the backend across nodes, so the kube-proxy rules see the SYN in the client node's PREROUTING and the reply ` +
      `comes back through that node's conntrack (no br_netfilter needed), and sockmesh's connection is translated but not ` +
      `redirected: the comparison is translation only.`,
    `- Rules as kube-proxy's iptables mode writes them for ClusterIP services (nat table): PREROUTING/OUTPUT → ` +
      `KUBE-SERVICES with one \`-d VIP/32 -p tcp -m comment --comment "ns/name:port cluster IP" -m tcp --dport P\` jump per ` +
      `service and the KUBE-NODEPORTS jump last; per service a KUBE-SVC chain (the off-cluster KUBE-MARK-MASQ rule, the ` +
      `endpoint jump) and a KUBE-SEP chain (hairpin KUBE-MARK-MASQ, DNAT); KUBE-MARK-MASQ and KUBE-POSTROUTING. Chain names ` +
      `hashed as kube-proxy does; comments kept. Not generated: the filter table (its per-service rules exist only for ` +
      `services without endpoints), NodePort/external/load-balancer chains. The PREROUTING/OUTPUT/POSTROUTING jumps are ` +
      `installed once per scale with \`iptables -I\`, outside the timed restores.`,
    `- Services: N distinct (VIP, port) pairs, VIPs 198.19.0.1 – 198.19.255.254 then again on the next port; one TCP port ` +
      `and one endpoint each. The first and the last service lead to the real server; the others to unused addresses in ` +
      `198.18.128.0/18 that are never contacted. A single change moves the middle service's endpoint to another address.`,
    `- Partial sync = kube-proxy ≥ 1.28 with MinimizeIPTablesRestore (default): the restore declares (and so flushes and ` +
      `rewrites) KUBE-SERVICES in full plus the changed service's KUBE-SVC chain and its new KUBE-SEP chain; unchanged ` +
      `services' chains are not written and the old KUBE-SEP chain stays until the next full sync. So even one change ` +
      `rewrites N KUBE-SERVICES rules.`,
    `- sockmesh: the same N services as a model; maps created with sm_services capacity ${cap?.sm_services} and sm_backends ` +
      `${cap?.sm_backends} (enough for the largest scale of the run). "full" = the whole model into empty maps, ` +
      `"resync" = the same model again (the reconciler diffs against its mirror and writes nothing — kube-proxy's resync ` +
      `rewrites everything), "1 change" = desiredState for the whole model + a one-service apply (new backend generation, ` +
      `switch, RCU grace period, old slots deleted). Map memory = memlock (bpf_map_memory_usage) of sm_services + ` +
      `sm_backends; both are BPF_F_NO_PREALLOC hashes, so it is per-entry memory plus a bucket array sized by capacity.`,
    `- Connect latency: native \`pingpong --connect\` in the client pod; variants × {first, last} interleaved, order rotated ` +
      `per repetition; medians of per-run percentiles. CPU per connect = client's getrusage over the measured connects + ` +
      `the server's schedstat delta scaled to them. Only a connection's first packet walks the nat table, in softirq on the ` +
      `client's CPU — usually in the client task's context (charged to the client), sometimes in ksoftirqd (charged to nobody here).`,
    `- Ruleset size = \`iptables-save -t nat\` text (rules and bytes), not kernel memory (nf_tables and x_tables keep their ` +
      `own, larger, in-kernel representation that no counter here exposes per netns); a column, not a like-for-like comparison.`,
    `- The apply timings are single runs (initial full sync, resync) or medians of ${d.options.changes} (single change), on a ` +
      `shared 2-vCPU VM: treat differences under ~2× as noise. A restore taking longer than ${d.options.maxRestoreS} s is ` +
      `killed (nothing is committed: iptables-restore commits at COMMIT); a killed --noflush full sync is not tried again at ` +
      `larger scales, where the rules are loaded without --noflush so that connects and single changes are still measured. ` +
      `A resync is measured only when the full sync took under ${RESYNC_MAX_MS / 1000} s.`,
  );
  return out.join('\n') + '\n';
}

function charts(d: ScaleData): ChartSpec[] {
  const variants = [...d.options.backends, 'sockmesh'];
  const groups = d.options.scales.map((n) => `${n >= 1000 ? `${n / 1000}k` : n}`);
  const connect: ChartSpec = {
    name: 'scale-connect-p50',
    title: 'Connect latency p50 by number of services (first / last service)',
    unit: 'µs',
    groups,
    log: true,
    series: variants.flatMap((v) =>
      ['first', 'last'].map((w) => ({
        label: `${VLABEL[v]} ${w}`,
        values: d.options.scales.map((n) => d.connect.find((c) => c.scale === n && c.variant === v && c.which === w)?.p50_us ?? null),
      })),
    ),
  };
  const ipt = (n: number, b: string) => {
    const r = d.apply.find((a) => a.scale === n)?.iptables.find((x) => x.backend === b);
    return r && !('skipped' in r) ? r : undefined;
  };
  const apply: ChartSpec = {
    name: 'scale-apply',
    title: 'Time to apply a full sync and a single-service change',
    unit: 'ms',
    groups,
    log: true,
    series: [
      ...d.options.backends.flatMap((b) => [
        { label: `${VLABEL[b]} full sync`, values: d.options.scales.map((n) => (ipt(n, b)?.full?.timedOut ? null : ipt(n, b)?.full?.wallMs) ?? null) },
        { label: `${VLABEL[b]} 1 change`, values: d.options.scales.map((n) => ipt(n, b)?.changeWallMs ?? null) },
      ]),
      { label: 'sockmesh full', values: d.options.scales.map((n) => d.apply.find((a) => a.scale === n)?.sockmesh.fullMs ?? null) },
      { label: 'sockmesh 1 change', values: d.options.scales.map((n) => d.apply.find((a) => a.scale === n)?.sockmesh.changeWallMs ?? null) },
    ],
  };
  return [connect, apply];
}

// ---- standalone --------------------------------------------------------------------------------

export const SCALE_FULL = [100, 1000, 10000, 50000, 100000];
export const SCALE_QUICK = [100, 1000];

export function scaleArgs(argv: string[]): ScaleOptions & { quick: boolean; out?: string } {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      scales: { type: 'string' },
      connects: { type: 'string' },
      reps: { type: 'string' },
      backends: { type: 'string', default: ALL_BACKENDS.join(',') },
      'max-restore-s': { type: 'string', default: '60' },
      changes: { type: 'string' },
      out: { type: 'string' },
    },
  });
  const quick = !!values.quick;
  const num = (v: string | undefined, def: number, what: string): number => {
    const x = v === undefined ? def : Number(v);
    if (!Number.isFinite(x) || x <= 0) throw new Error(`--${what} must be a positive number`);
    return x;
  };
  return {
    quick,
    scales: values.scales ? values.scales.split(',').map(Number) : quick ? SCALE_QUICK : SCALE_FULL,
    connects: num(values.connects, quick ? 200 : 1000, 'connects'),
    reps: num(values.reps, quick ? 2 : 3, 'reps'),
    backends: values.backends!.split(',').filter(Boolean) as IptBackend[],
    maxRestoreS: num(values['max-restore-s'], 60, 'max-restore-s'),
    changes: num(values.changes, 2, 'changes'),
    out: values.out,
  };
}

if (require.main === module) runStandalone((argv, quick) => scaleArgs(quick ? ['--quick', ...argv] : argv), runScale);
