// First ping-pong comparison: sockmesh (VIP translation + sk_msg redirect) against the plain
// veth/bridge path between two pods of one node, in one run, variants interleaved and repeated.
// Reports medians of per-run p50/p99 latency and CPU per round trip, and their ratios.
//
//   npm run bench:pingpong [-- --rounds 5000 --reps 5 --sizes 64,4096,65536]
//
// CPU per round trip = client process CPU over the measured rounds (podtool's own cpuUsage) +
// server process CPU (/proc/PID/stat) over the run, scaled to the measured rounds. Kernel work in
// softirq context is charged to whichever process the CPU was running, so it is counted too.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { desiredState, Reconciler } from '../mesh-agent/datapath/reconciler';
import { Model } from '../mesh-agent/model/types';
import { Sandbox, ServerHandle } from '../sandbox/sandbox';

const VIP = '198.19.0.10';
const CLK_TCK = 100; // USER_HZ on Linux

function procCpuUs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1e6) / CLK_TCK; // utime + stime
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

export interface PingpongRow {
  size: number;
  variant: string;
  p50_us: number;
  p99_us: number;
  cpu_us_per_rt: number;
  runs: number;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '5000' },
      reps: { type: 'string', default: '5' },
      sizes: { type: 'string', default: '64,4096,65536' },
      out: { type: 'string' },
    },
  });
  const rounds = Number(values.rounds);
  const reps = Number(values.reps);
  const sizes = values.sizes!.split(',').map(Number);
  const warmup = Math.max(100, Math.floor(rounds / 10));

  Sandbox.cleanupStale('smbench');
  const sb = await Sandbox.create({
    prefix: 'smbench',
    nodes: [
      {
        name: 'node1',
        pods: [{ name: 'mc' }, { name: 'ms' }, { name: 'uc', meshed: false }, { name: 'us', meshed: false }],
      },
    ],
  });
  const servers: ServerHandle[] = [];
  const bpffs = path.join(sb.ensureBpffsDir(), 'pp');
  let dp: Datapath | undefined;
  try {
    for (const p of ['ms', 'us']) servers.push(await sb.startServer(p, ['serve', '--port', '9000', '--mode', 'pingpong', '--name', p]));
    const serverPid: Record<string, number> = { ms: servers[0].child.pid!, us: servers[1].child.pid! };
    dp = Datapath.install({ cgroupPath: sb.node('node1').cgroupPath, bpffsDir: bpffs });
    const rec = new Reconciler(dp);
    rec.adopt();
    const model: Model = {
      services: [{ namespace: 'bench', name: 'pp', vips: [VIP], ports: [{ port: 80, protocol: 'TCP', targetPort: 9000 }] }],
      endpoints: [{ service: 'bench/pp', address: sb.pod('ms').ipv4, weight: 1, healthy: true }],
      workloads: ['mc', 'ms'].map((n) => ({ namespace: 'bench', name: n, serviceAccount: n, ips: [sb.pod(n).ipv4], node: 'node1' })),
    };
    const report = rec.apply(desiredState(model, 'node1'));
    if (report.errors.length) throw report.errors[0];

    const variants = [
      { name: 'plain (veth + bridge, no mesh)', client: 'uc', server: 'us', target: `${sb.pod('us').ipv4}:9000` },
      { name: 'sockmesh (VIP + redirect)', client: 'mc', server: 'ms', target: `${VIP}:80` },
    ];
    const samples = new Map<string, Array<{ p50: number; p99: number; cpu: number }>>();
    for (let rep = 0; rep < reps; rep++) {
      for (const size of sizes) {
        // Alternate which variant goes first, so drift in machine load hits both alike.
        const order = rep % 2 ? [...variants].reverse() : variants;
        for (const v of order) {
          const s0 = procCpuUs(serverPid[v.server]);
          const r = await sb.podtool(
            v.client,
            ['pingpong', '--target', v.target, '--size', String(size), '--rounds', String(rounds), '--warmup', String(warmup)],
            { timeoutMs: 300_000 },
          );
          const s1 = procCpuUs(serverPid[v.server]);
          if (!r.last?.ok) throw new Error(`${v.name} ${size}B: ${r.stdout} ${r.stderr}`);
          const serverCpu = ((s1 - s0) * rounds) / (rounds + warmup);
          const cpu = (r.last.cpu_user_us + r.last.cpu_sys_us + serverCpu) / rounds;
          const k = `${size}|${v.name}`;
          if (!samples.has(k)) samples.set(k, []);
          samples.get(k)!.push({ p50: r.last.p50_us, p99: r.last.p99_us, cpu });
          process.stderr.write(`rep ${rep + 1}/${reps} ${String(size).padStart(6)} B  ${v.name.padEnd(32)} p50 ${r.last.p50_us.toFixed(1)} us  cpu ${cpu.toFixed(1)} us/rt\n`);
        }
      }
    }
    const counters = dp.counters();
    const rows: PingpongRow[] = [];
    for (const size of sizes) {
      for (const v of variants) {
        const s = samples.get(`${size}|${v.name}`)!;
        rows.push({
          size,
          variant: v.name,
          p50_us: median(s.map((x) => x.p50)),
          p99_us: median(s.map((x) => x.p99)),
          cpu_us_per_rt: median(s.map((x) => x.cpu)),
          runs: s.length,
        });
      }
    }
    const lines = [
      `| size | plain p50 (µs) | sockmesh p50 (µs) | latency ratio | plain CPU/rt (µs) | sockmesh CPU/rt (µs) | CPU ratio |`,
      `|---:|---:|---:|---:|---:|---:|---:|`,
    ];
    for (const size of sizes) {
      const [p, m] = rows.filter((r) => r.size === size);
      lines.push(
        `| ${size} B | ${p.p50_us.toFixed(1)} | ${m.p50_us.toFixed(1)} | ${(m.p50_us / p.p50_us).toFixed(2)}× | ${p.cpu_us_per_rt.toFixed(1)} | ${m.cpu_us_per_rt.toFixed(1)} | ${(m.cpu_us_per_rt / p.cpu_us_per_rt).toFixed(2)}× |`,
      );
    }
    const md = lines.join('\n');
    process.stdout.write(
      `\n${md}\n\n${reps} interleaved repetitions x ${rounds} round trips (after ${warmup} warm-up) per cell; medians of per-run p50.\n` +
        `kernel counters: msg_redirected=${counters.msg_redirected} msg_fallback=${counters.msg_fallback} sock_local_pair=${counters.sock_local_pair}\n`,
    );
    if (values.out) fs.writeFileSync(values.out, JSON.stringify({ rounds, reps, warmup, rows, counters: Object.fromEntries(Object.entries(counters).map(([k, v]) => [k, String(v)])) }, null, 2));
  } finally {
    for (const s of servers) await s.stop();
    dp?.close();
    if (fs.existsSync(bpffs)) Datapath.remove(bpffs);
    await sb.teardown();
  }
}

main().catch((e) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? e.stack : e}\n`);
  process.exit(1);
});
