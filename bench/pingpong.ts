// Same-node ping-pong comparison, in one run, variants interleaved and repeated:
//
//   plain       unmeshed pods, client -> server pod IP over veth + bridge (no mesh)
//   sockmesh    meshed workloads, client -> VIP: connect-time translation + sk_msg redirect
//   noredirect  meshed pods that are NOT workloads of the model -> VIP: translated, not redirected
//   sidecar     unmeshed pods with a client-side and a server-side HAProxy TCP proxy (bench/sidecar.ts)
//
// Reports medians (over repetitions) of per-run p50/p90/p99 latency and CPU per round trip, and
// their ratios to plain.
//
//   npm run bench:pingpong [-- --rounds 5000 --reps 5 --sizes 64,4096,65536 --client native|node
//                              --variants plain,sockmesh,noredirect,sidecar --out FILE.json]
//
// --client native (default) uses bench/native/pingpong.c (built with gcc into build/bench/pingpong
// on first use) for both client and server: Node's own ~25 µs per round trip would hide the
// datapath's effect. --client node uses podtool's pingpong client and server as before.
//
// CPU per round trip = client CPU over the measured rounds (its own getrusage / cpuUsage) + the CPU
// of every other process on the path (server, and the two HAProxies in sidecar mode) over the run,
// from /proc/PID/task/*/schedstat (ns), scaled to the measured rounds. Kernel work in softirq
// context is charged to whichever task the CPU was running, so it is counted too.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { desiredState, Reconciler } from '../mesh-agent/datapath/reconciler';
import { Model } from '../mesh-agent/model/types';
import { Sandbox, ServerHandle, parseJsonLines, waitServer } from '../sandbox/sandbox';
import { ensureNativePingpong, median, procCpuUs } from './common';
import { startSidecars, Sidecars } from './sidecar';

const VIP = '198.19.0.10';
const VIP_NOREDIRECT = '198.19.0.11';
const APP_PORT = 9000;
export interface PingpongRow {
  size: number;
  variant: string;
  p50_us: number;
  p90_us: number;
  p99_us: number;
  cpu_us_per_rt: number;
  /** sk_msg redirects per round trip seen during this variant's runs (median). */
  redirects_per_rt: number;
  runs: number;
}

export interface PingpongOptions {
  rounds: number;
  reps: number;
  sizes: number[];
  client: 'native' | 'node';
  variants: string[];
  log?: (line: string) => void;
}

export interface PingpongResult {
  options: PingpongOptions;
  warmup: number;
  rows: PingpongRow[];
  counters: Record<string, string>;
  markdown: string;
}

export const ALL_VARIANTS = ['plain', 'sockmesh', 'noredirect', 'sidecar'];
const LABEL: Record<string, string> = {
  plain: 'plain (veth + bridge, no mesh)',
  sockmesh: 'sockmesh (VIP + redirect)',
  noredirect: 'sockmesh, redirect off (VIP only)',
  sidecar: 'sidecar (HAProxy TCP ×2)',
};

interface Variant {
  key: string;
  client: string;
  target: string;
  /** Processes on the path other than the client. */
  pids: number[];
}

export async function runPingpong(o: PingpongOptions): Promise<PingpongResult> {
  const log = o.log ?? ((l: string) => process.stderr.write(l + '\n'));
  for (const v of o.variants) if (!ALL_VARIANTS.includes(v)) throw new Error(`unknown variant '${v}' (${ALL_VARIANTS.join(', ')})`);
  const { rounds, reps, sizes } = o;
  const warmup = Math.max(100, Math.min(1000, Math.floor(rounds / 10)));
  const native = o.client === 'native' ? ensureNativePingpong() : undefined;

  Sandbox.cleanupStale('smbench');
  const sb = await Sandbox.create({
    prefix: 'smbench',
    nodes: [
      {
        name: 'node1',
        pods: [
          { name: 'mc' }, // sockmesh client / server (workloads)
          { name: 'ms' },
          { name: 'rc' }, // meshed, not workloads: translated, not redirected
          { name: 'rs' },
          { name: 'uc', meshed: false }, // plain
          { name: 'us', meshed: false },
          { name: 'sc', meshed: false }, // sidecar
          { name: 'ss', meshed: false },
        ],
      },
    ],
  });
  const servers: ServerHandle[] = [];
  let sidecars: Sidecars | undefined;
  const bpffs = path.join(sb.ensureBpffsDir(), 'pp');
  let dp: Datapath | undefined;
  try {
    const startServer = async (pod: string): Promise<number> => {
      let h: ServerHandle;
      if (native) {
        const child = sb.spawn(pod, [native, '--serve', '--port', String(APP_PORT)], { stdio: ['ignore', 'pipe', 'pipe'] });
        h = await waitServer(child, 15_000, `${pod}: native pingpong server`);
      } else {
        h = await sb.startServer(pod, ['serve', '--port', String(APP_PORT), '--mode', 'pingpong', '--name', pod]);
      }
      servers.push(h);
      return h.child.pid!;
    };
    const serverPods: Record<string, string> = { plain: 'us', sockmesh: 'ms', noredirect: 'rs', sidecar: 'ss' };
    const serverPid: Record<string, number> = {};
    for (const v of o.variants) serverPid[v] = await startServer(serverPods[v]);

    dp = Datapath.install({ cgroupPath: sb.node('node1').cgroupPath, bpffsDir: bpffs });
    const rec = new Reconciler(dp);
    rec.adopt();
    const model: Model = {
      services: [
        { namespace: 'bench', name: 'pp', vips: [VIP], ports: [{ port: 80, protocol: 'TCP', targetPort: APP_PORT }] },
        { namespace: 'bench', name: 'pp-noredir', vips: [VIP_NOREDIRECT], ports: [{ port: 80, protocol: 'TCP', targetPort: APP_PORT }] },
      ],
      endpoints: [
        { service: 'bench/pp', address: sb.pod('ms').ipv4, weight: 1, healthy: true },
        { service: 'bench/pp-noredir', address: sb.pod('rs').ipv4, weight: 1, healthy: true },
      ],
      // rc and rs are deliberately absent: no local endpoint entry, so sockops does not pair them.
      workloads: ['mc', 'ms'].map((n) => ({ namespace: 'bench', name: n, serviceAccount: n, ips: [sb.pod(n).ipv4], node: 'node1' })),
    };
    const report = rec.apply(desiredState(model, 'node1'));
    if (report.errors.length) throw report.errors[0];

    if (o.variants.includes('sidecar')) sidecars = await startSidecars(sb, 'sc', 'ss', APP_PORT);

    const all: Record<string, Variant> = {
      plain: { key: 'plain', client: 'uc', target: `${sb.pod('us').ipv4}:${APP_PORT}`, pids: [] },
      sockmesh: { key: 'sockmesh', client: 'mc', target: `${VIP}:80`, pids: [] },
      noredirect: { key: 'noredirect', client: 'rc', target: `${VIP_NOREDIRECT}:80`, pids: [] },
      sidecar: { key: 'sidecar', client: 'sc', target: sidecars?.target ?? '', pids: sidecars?.pids ?? [] },
    };
    const variants = o.variants.map((k) => ({ ...all[k], pids: [serverPid[k], ...all[k].pids] }));

    const runClient = async (v: Variant, size: number): Promise<any> => {
      const args = ['--target', v.target, '--size', String(size), '--rounds', String(rounds), '--warmup', String(warmup)];
      if (native) {
        const r = await sb.exec(v.client, [native, ...args], { timeoutMs: 300_000 });
        const lines = parseJsonLines(r.stdout);
        return { ...r, last: lines[lines.length - 1] };
      }
      return sb.podtool(v.client, ['pingpong', ...args], { timeoutMs: 300_000 });
    };

    const samples = new Map<string, Array<{ p50: number; p90: number; p99: number; cpu: number; redir: number }>>();
    for (let rep = 0; rep < reps; rep++) {
      for (const size of sizes) {
        // Rotate which variant goes first, so drift in machine load hits all alike.
        const k0 = (rep + sizes.indexOf(size)) % variants.length;
        const order = [...variants.slice(k0), ...variants.slice(0, k0)];
        for (const v of order) {
          const c0 = dp.counters().msg_redirected;
          const s0 = v.pids.reduce((a, p) => a + procCpuUs(p), 0);
          const r = await runClient(v, size);
          const s1 = v.pids.reduce((a, p) => a + procCpuUs(p), 0);
          const redir = Number(dp.counters().msg_redirected - c0) / (rounds + warmup);
          if (!r.last?.ok) throw new Error(`${v.key} ${size}B: ${r.stdout} ${r.stderr}`);
          const pathCpu = ((s1 - s0) * rounds) / (rounds + warmup);
          const cpu = (r.last.cpu_user_us + r.last.cpu_sys_us + pathCpu) / rounds;
          const k = `${size}|${v.key}`;
          if (!samples.has(k)) samples.set(k, []);
          samples.get(k)!.push({ p50: r.last.p50_us, p90: r.last.p90_us, p99: r.last.p99_us, cpu, redir });
          log(
            `rep ${rep + 1}/${reps} ${String(size).padStart(6)} B  ${LABEL[v.key].padEnd(34)} p50 ${r.last.p50_us.toFixed(1).padStart(7)} us  ` +
              `p99 ${r.last.p99_us.toFixed(1).padStart(7)} us  cpu ${cpu.toFixed(1).padStart(6)} us/rt  redirects/rt ${redir.toFixed(2)}`,
          );
        }
      }
    }
    const counters = dp.counters();
    const rows: PingpongRow[] = [];
    for (const size of sizes) {
      for (const v of variants) {
        const s = samples.get(`${size}|${v.key}`)!;
        rows.push({
          size,
          variant: v.key,
          p50_us: median(s.map((x) => x.p50)),
          p90_us: median(s.map((x) => x.p90)),
          p99_us: median(s.map((x) => x.p99)),
          cpu_us_per_rt: median(s.map((x) => x.cpu)),
          redirects_per_rt: median(s.map((x) => x.redir)),
          runs: s.length,
        });
      }
    }
    const lines = [
      `| size | variant | p50 (µs) | p99 (µs) | p50 vs plain | CPU/rt (µs) | CPU vs plain | redirects/rt |`,
      `|---:|---|---:|---:|---:|---:|---:|---:|`,
    ];
    for (const size of sizes) {
      const base = rows.find((r) => r.size === size && r.variant === 'plain');
      for (const r of rows.filter((x) => x.size === size)) {
        const ratio = (a: number, b?: number) => (b ? `${(a / b).toFixed(2)}×` : '–');
        lines.push(
          `| ${size} B | ${LABEL[r.variant]} | ${r.p50_us.toFixed(1)} | ${r.p99_us.toFixed(1)} | ${ratio(r.p50_us, base?.p50_us)} | ` +
            `${r.cpu_us_per_rt.toFixed(1)} | ${ratio(r.cpu_us_per_rt, base?.cpu_us_per_rt)} | ${r.redirects_per_rt.toFixed(2)} |`,
        );
      }
    }
    const markdown =
      `${lines.join('\n')}\n\n` +
      `${o.client} client/server; ${reps} interleaved repetitions × ${rounds} round trips (after ${warmup} warm-up) per cell; medians of per-run values.\n` +
      `kernel counters: msg_redirected=${counters.msg_redirected} msg_fallback=${counters.msg_fallback} sock_local_pair=${counters.sock_local_pair}\n`;
    return {
      options: { ...o, log: undefined },
      warmup,
      rows,
      counters: Object.fromEntries(Object.entries(counters).map(([k, v]) => [k, String(v)])),
      markdown,
    };
  } finally {
    if (sidecars) await sidecars.stop().catch(() => undefined);
    for (const s of servers) await s.stop();
    dp?.close();
    if (fs.existsSync(bpffs)) Datapath.remove(bpffs);
    await sb.teardown();
  }
}

export function pingpongArgs(argv: string[]): PingpongOptions & { out?: string } {
  const { values } = parseArgs({
    args: argv,
    options: {
      rounds: { type: 'string', default: '5000' },
      reps: { type: 'string', default: '5' },
      sizes: { type: 'string', default: '64,4096,65536' },
      client: { type: 'string', default: 'native' },
      variants: { type: 'string', default: ALL_VARIANTS.join(',') },
      out: { type: 'string' },
    },
  });
  if (values.client !== 'native' && values.client !== 'node') throw new Error(`--client must be native or node`);
  return {
    rounds: Number(values.rounds),
    reps: Number(values.reps),
    sizes: values.sizes!.split(',').map(Number),
    client: values.client,
    variants: values.variants!.split(',').filter(Boolean),
    out: values.out,
  };
}

async function main(): Promise<void> {
  const { out, ...o } = pingpongArgs(process.argv.slice(2));
  const res = await runPingpong(o);
  process.stdout.write(`\n${res.markdown}`);
  if (out) fs.writeFileSync(out, JSON.stringify({ ...res, markdown: undefined }, null, 2));
}

if (require.main === module) {
  main().catch((e) => {
    process.stderr.write(`bench failed: ${e instanceof Error ? e.stack : e}\n`);
    process.exit(1);
  });
}
