// Concurrency (issue 13): how many meshed connections a node holds at once, and whether the cost
// of one more connection depends on how many are open. The seed article's table is about a million
// connections; sockmesh keeps no per-connection state outside the socket itself (translation in
// socket-local storage, the pair in the sockhash), so the connect path should not notice.
//
// One node, two pods: `client` calls a service VIP whose backend is `srv` on the same node (so
// every pair is translated at connect and joins the sockhash for sk_msg redirection). The native
// holder (bench/native/connhold.c) opens connections and keeps every one open; at each checkpoint
// (e.g. 1000 and 100 000 open) it makes SAMPLE more, one at a time, and reports their connect +
// first 1-byte round trip latency. getpeername() must show the VIP on every connection, checked
// when each connects and again for all of them at the end. Beside it, an unmeshed pod does the same
// against the backend's own address (no mesh), up to --plain-max connections: how much of what
// changes with the count is the kernel's TCP and not the mesh.
//
// A process may hold at most 20 000 descriptors on this machine (the hard limit, which root
// cannot raise here: no CAP_SYS_RESOURCE), so connections are spread over holder processes of
// 18 000 each, one VIP port (and one server process behind it) per holder. That also keeps each
// (client, backend:port) pair well inside the pod's ephemeral ports (widened to 1024-65535).
//
//   npm run build:ts && node dist/bench/concurrency.js [--quick] [--counts 1000,100000,1000000]
//       [--sample 2000] [--inflight 256] [--plain-max 100000] [--out FILE.json]
import type { ChildProcess } from 'node:child_process';
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
import { ChartSpec, ensureNativeConnhold, intArg, intListArg, runStandalone, ScenarioOptions, ScenarioResult } from './common';

const VIP = '198.19.0.30';
const BASE_PORT = 9100;
const BASE_PORT_PLAIN = 9500;
/** Connections per holder process (and per VIP port and server process). */
const PER_HOLDER = 18_000;

export interface ConcurrencyOptions {
  counts: number[];
  sample: number;
  inflight: number;
  /** Largest checkpoint of the no-mesh comparison (memory: it holds its own connections). */
  plainMax: number;
  out?: string;
}

export function concurrencyArgs(argv: string[], quick: boolean): ConcurrencyOptions {
  const { values } = parseArgs({
    args: argv,
    options: { counts: { type: 'string' }, sample: { type: 'string' }, inflight: { type: 'string' }, 'plain-max': { type: 'string' }, out: { type: 'string' } },
  });
  return {
    counts: values.counts ? intListArg(values.counts, 'counts', 1) : quick ? [200, 2000] : [1000, 100_000, 1_000_000],
    sample: values.sample ? intArg(values.sample, 'sample', 1) : quick ? 100 : 2000,
    inflight: values.inflight ? intArg(values.inflight, 'inflight', 1) : 256,
    plainMax: values['plain-max'] ? intArg(values['plain-max'], 'plain-max', 1) : 100_000,
    out: values.out,
  };
}

interface Checkpoint {
  /** Connections open when the sample started. */
  open: number;
  checkpoint: number;
  sample: number;
  p50_us: number;
  p90_us: number;
  p99_us: number;
  bad_peer: number;
  errors: number;
  /** All holders together. */
  rss_kib: number;
  /** Kernel memory (Slab + kernel stacks in /proc/meminfo) grown since the start, KiB. */
  kernel_kib: number;
}

interface Done {
  open: number;
  bad_peer: number;
  bad_peer_at_end: number;
  errors: number;
  first_error: string;
  rss_kib: number;
}

/** One `connhold hold` process: a command on stdin, one JSON line back. */
class Holder {
  private buf = '';
  private waiting: Array<(v: Record<string, unknown>) => void> = [];
  held = 0;
  constructor(readonly child: ChildProcess) {
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      this.buf += d;
      for (let i; (i = this.buf.indexOf('\n')) >= 0; this.buf = this.buf.slice(i + 1)) this.waiting.shift()?.(JSON.parse(this.buf.slice(0, i)));
    });
    child.once('exit', (code, sig) => {
      for (const w of this.waiting.splice(0)) w({ error: `holder exited (${code ?? sig})` });
    });
  }
  cmd(line: string): Promise<Record<string, unknown>> {
    return new Promise((r) => {
      this.waiting.push(r);
      this.child.stdin!.write(line + '\n');
    });
  }
}

const pct = (xs: number[], p: number) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) * p)] : 0);

const pow2ceil = (n: number) => 2 ** Math.ceil(Math.log2(Math.max(2, n)));

function meminfoKiB(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const l of fs.readFileSync('/proc/meminfo', 'utf8').split('\n')) {
    const m = /^(\w+):\s+(\d+)/.exec(l);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

/** Largest count this machine's memory is expected to hold (~10 KiB per connection, both ends). */
export function memoryLimitedCount(): number {
  return Math.floor((meminfoKiB().MemAvailable * 0.6) / 10);
}

interface Variant {
  name: 'sockmesh' | 'no mesh';
  pod: string;
  /** Where the holders connect (and what getpeername() must show). */
  target: string;
  ports: number[];
  /** Largest checkpoint this variant runs to. */
  max: number;
  holders: Holder[];
  checkpoints: Checkpoint[];
  firstError: string;
}

/** Sample connections per turn: the two variants take turns, so that both see the same moment. */
const TURN = 50;

export async function runConcurrency(o: ConcurrencyOptions & ScenarioOptions): Promise<ScenarioResult> {
  const bin = ensureNativeConnhold();
  const fits = memoryLimitedCount();
  const counts = [...new Set(o.counts)].sort((a, b) => a - b);
  const plainMax = Math.min(o.plainMax, counts[counts.length - 1]);
  const need = (c: number) => c + o.sample * counts.length + Math.min(c, plainMax) + o.sample * counts.length;
  const skipped = counts.filter((c) => need(c) > fits);
  const run = counts.filter((c) => !skipped.includes(c));
  if (!run.length) throw new Error(`not enough memory for ${counts[0]} connections (about ${fits} fit)`);
  const maxOf = (cap: number) => Math.min(cap, run[run.length - 1]);
  const portsFor = (base: number, cap: number) => Array.from({ length: Math.ceil((maxOf(cap) + o.sample * run.length) / PER_HOLDER) }, (_, i) => base + i);

  const sb = await Sandbox.create({
    nodes: [{ name: 'node1', pods: [{ name: 'client' }, { name: 'srv' }, { name: 'plain', meshed: false }] }],
  });
  let agent: Agent | undefined;
  const servers: ServerHandle[] = [];
  const variants: Variant[] = [
    { name: 'sockmesh', pod: 'client', target: VIP, ports: portsFor(BASE_PORT, Infinity), max: maxOf(Infinity), holders: [], checkpoints: [], firstError: '' },
    { name: 'no mesh', pod: 'plain', target: sb.pod('srv').ipv4, ports: portsFor(BASE_PORT_PLAIN, plainMax), max: maxOf(plainMax), holders: [], checkpoints: [], firstError: '' },
  ];
  const [mesh] = variants;
  o.log(
    `counts ${run.join(', ')} (no mesh up to ${variants[1].max})${skipped.length ? `; skipped for memory: ${skipped.join(', ')} (about ${fits} connections fit)` : ''}; ` +
      `${mesh.ports.length} + ${variants[1].ports.length} holders`,
  );
  const bpffs = path.join(sb.ensureBpffsDir(), 'conc');
  try {
    for (const [pod, sysctls] of [
      ['client', ['net.ipv4.ip_local_port_range=1024 65535']],
      ['plain', ['net.ipv4.ip_local_port_range=1024 65535']],
      ['srv', ['net.core.somaxconn=65535', 'net.ipv4.tcp_max_syn_backlog=65535']],
    ] as const) {
      for (const s of sysctls) {
        const r = await sb.exec(pod, ['sysctl', '-qw', s], { outsideMesh: pod === 'plain' });
        if (r.code !== 0) throw new Error(`sysctl ${s} in ${pod}: ${r.stderr}`);
      }
    }
    const model: Model = {
      services: [{ namespace: 'default', name: 'hold', vips: [VIP], ports: mesh.ports.map((p) => ({ port: p, protocol: 'TCP' as const, targetPort: p })) }],
      endpoints: [{ service: 'default/hold', address: sb.pod('srv').ipv4, weight: 1, healthy: true }],
      workloads: ['client', 'srv'].map((n) => ({ namespace: 'default', name: n, serviceAccount: n, ips: [sb.pod(n).ipv4], node: 'node1' })),
      policies: { l4: [], l7: [] },
    };
    const maxOpen = mesh.max + o.sample * run.length;
    agent = new Agent({
      source: new StaticSource({ model, nodeName: 'node1' }),
      cgroupPath: sb.node('node1').cgroupPath,
      bpffsDir: bpffs,
      // Both ends of every pair: room for all of them.
      mapSizes: { sm_sockhash: pow2ceil(2 * maxOpen + 1024) },
      log: createLogger({ level: 'warn' }),
    });
    const rep = await agent.start();
    if (rep.errors.length) throw rep.errors[0];
    const allPorts = variants.flatMap((v) => v.ports);
    servers.push(
      ...(await Promise.all(allPorts.map((p) => waitServer(sb.spawn('srv', [bin, 'serve', String(p)], { stdio: ['ignore', 'pipe', 'pipe'] }), 30_000, `srv: connhold serve ${p}`)))),
    );
    for (const v of variants) {
      for (const p of v.ports) v.holders.push(new Holder(sb.spawn(v.pod, [bin, 'hold', v.target, String(p)], { stdio: ['pipe', 'pipe', 'inherit'] })));
    }

    const mem0 = meminfoKiB();
    const c0 = agent.datapath.counters();
    const inflightOf = (v: Variant) => Math.max(8, Math.ceil(o.inflight / v.holders.length));
    for (const c of run) {
      const active = variants.filter((v) => c <= v.max && !v.firstError);
      if (!active.includes(mesh)) break;
      const open = new Map<Variant, number>();
      for (const v of active) {
        // Spread c over the holders (on top of what each holds already, samples included).
        const share = (j: number) => Math.floor(c / v.holders.length) + (j < c % v.holders.length ? 1 : 0);
        const filled = await Promise.all(v.holders.map((h, j) => h.cmd(`fill ${Math.max(h.held, share(j))} ${inflightOf(v)}`)));
        filled.forEach((f, j) => (v.holders[j].held = Number(f.held ?? v.holders[j].held)));
        open.set(v, v.holders.reduce((a, h) => a + h.held, 0));
        const fillErr = filled.find((f) => f.first_error || f.error);
        if (fillErr) {
          v.firstError = String(fillErr.first_error || fillErr.error);
          o.log(`  ${v.name}: stopped filling at ${open.get(v)} open: ${v.firstError}`);
        }
      }
      const sampling = active.filter((v) => !v.firstError);
      if (!sampling.includes(mesh)) break;
      // The sample: one connection at a time, TURN at a time per variant, taking turns.
      const lat = new Map<Variant, number[]>(sampling.map((v) => [v, []]));
      const bad = new Map<Variant, number>(sampling.map((v) => [v, 0]));
      const errs = new Map<Variant, number>(sampling.map((v) => [v, 0]));
      for (let t = 0; t * TURN < o.sample; t++) {
        const k = Math.min(TURN, o.sample - t * TURN);
        for (const v of sampling) {
          const h = v.holders[t % v.holders.length];
          const r = await h.cmd(`sample ${k}`);
          lat.get(v)!.push(...((r.lat_us as number[]) ?? []));
          bad.set(v, bad.get(v)! + Number(r.bad_peer ?? 0));
          h.held += Number(r.sample ?? 0);
          if (r.first_error) v.firstError ||= String(r.first_error);
        }
      }
      const m = meminfoKiB();
      for (const v of sampling) {
        const checks = await Promise.all(v.holders.map((h) => h.cmd('check')));
        const xs = lat.get(v)!;
        const cp: Checkpoint = {
          open: open.get(v)!,
          checkpoint: c,
          sample: xs.length,
          p50_us: pct(xs, 0.5),
          p90_us: pct(xs, 0.9),
          p99_us: pct(xs, 0.99),
          bad_peer: bad.get(v)!,
          errors: checks.reduce((a, x) => a + Number(x.errors ?? 0), 0) + errs.get(v)!,
          rss_kib: checks.reduce((a, x) => a + Number(x.rss_kib ?? 0), 0),
          kernel_kib: m.Slab - mem0.Slab + (m.KernelStack - mem0.KernelStack),
        };
        v.checkpoints.push(cp);
        o.log(`  ${v.name}: ${JSON.stringify(cp)}`);
      }
    }
    if (!mesh.checkpoints.length) throw new Error(`no checkpoint reached: ${mesh.firstError}`);
    const checks = await Promise.all(mesh.holders.map((h) => h.cmd('check')));
    const done: Done = {
      open: checks.reduce((a, x) => a + Number(x.held ?? 0), 0),
      bad_peer: checks.reduce((a, x) => a + Number(x.bad_peer ?? 0), 0),
      bad_peer_at_end: checks.reduce((a, x) => a + Number(x.bad_peer_at_end ?? 0), 0),
      errors: checks.reduce((a, x) => a + Number(x.errors ?? 0), 0),
      first_error: mesh.firstError,
      rss_kib: checks.reduce((a, x) => a + Number(x.rss_kib ?? 0), 0),
    };
    // Everything is still open here: what the kernel holds for it.
    const sockhash = agent.datapath.maps.sm_sockhash.count();
    const c1 = agent.datapath.counters();
    const counters = Object.fromEntries(
      (['connect_translated', 'sock_local_pair', 'msg_redirected', 'map_errors'] as const).map((k) => [k, String(c1[k] - c0[k])]),
    );

    const plain = variants[1];
    const rows = mesh.checkpoints.map((c) => {
      const p = plain.checkpoints.find((x) => x.checkpoint === c.checkpoint);
      return {
        ...c,
        vs_first: +(c.p50_us / mesh.checkpoints[0].p50_us).toFixed(2),
        plain_p50_us: p?.p50_us ?? null,
        plain_vs_first: p ? +(p.p50_us / plain.checkpoints[0].p50_us).toFixed(2) : null,
        vs_plain: p ? +(c.p50_us / p.p50_us).toFixed(2) : null,
      };
    });
    const base = rows[0];
    const top = rows[rows.length - 1];
    const at100k = rows.find((r) => r.checkpoint === 100_000);
    const limits = [
      mesh.firstError && `the holders stopped at ${done.open.toLocaleString('en-US')} open connections: ${mesh.firstError}`,
      skipped.length && `not run for memory: ${skipped.join(', ')} (about ${fits.toLocaleString('en-US')} connections fit in MemAvailable)`,
    ].filter(Boolean);
    const fmt = (n: number) => n.toLocaleString('en-US');
    const md = [
      `One node; a meshed client pod holds connections to a service VIP whose backend is a pod on the same node (translated at connect, both ends in the sockhash), ` +
        `and an unmeshed pod holds connections to the backend's address directly (no mesh), up to ${fmt(plain.max)}. ` +
        `At each checkpoint both make ${o.sample} more connections one at a time, ${TURN} per turn, taking turns: connect() + the first 1-byte round trip. ` +
        `${mesh.holders.length} + ${plain.holders.length} holder processes of at most ${fmt(PER_HOLDER)} connections, one VIP port and one server process each (this machine's descriptor limit is 20 000 per process, and root cannot raise it here).`,
      '',
      '| open connections | sockmesh p50 | p90 | p99 | vs first checkpoint | no mesh p50 | no mesh vs first | sockmesh / no mesh | holders RSS | kernel memory since start |',
      '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
      ...rows.map(
        (r) =>
          `| ${fmt(r.open)} | ${r.p50_us.toFixed(1)} µs | ${r.p90_us.toFixed(1)} µs | ${r.p99_us.toFixed(1)} µs | ${r.vs_first}× | ${r.plain_p50_us === null ? '–' : `${r.plain_p50_us.toFixed(1)} µs`} | ${r.plain_vs_first ?? '–'}${r.plain_vs_first === null ? '' : '×'} | ${r.vs_plain ?? '–'}${r.vs_plain === null ? '' : '×'} | ${(r.rss_kib / 1024).toFixed(0)} MiB | ${(r.kernel_kib / 1024).toFixed(0)} MiB |`,
      ),
      '',
      `- getpeername() showed the VIP on ${fmt(done.open - done.bad_peer_at_end)} of ${fmt(done.open)} held meshed connections at the end (${done.bad_peer} wrong when they connected); errors: ${done.errors}.`,
      `- sockhash entries with everything open: ${fmt(sockhash)} (both ends of each pair). Counters over the run: ${JSON.stringify(counters)}.`,
      `- What limited the count: ${limits.length ? limits.join('; ') : 'nothing: every count ran'}. Kernel memory is for both ends of every connection of both variants (Slab + kernel stacks).`,
      at100k
        ? `- p50 at 100k open is ${at100k.vs_first}× the p50 at ${fmt(base.open)} with sockmesh${at100k.plain_vs_first !== null ? ` and ${at100k.plain_vs_first}× without a mesh` : ''} (goal ≤ 1.1×).`
        : '',
    ].join('\n');
    const chart: ChartSpec = {
      name: 'concurrency-connect',
      title: 'connect + first round trip (p50), by connections already open',
      unit: 'µs',
      groups: rows.map((r) => fmt(r.open)),
      series: [
        { label: 'sockmesh', values: rows.map((r) => r.p50_us) },
        { label: 'no mesh', values: rows.map((r) => r.plain_p50_us) },
      ],
    };
    return {
      name: 'concurrency',
      title: 'Concurrency: connections held open at once',
      markdown: md,
      data: {
        options: { counts: run, skipped, sample: o.sample, inflight: o.inflight, plainMax: plain.max, holders: mesh.holders.length, holdersPlain: plain.holders.length },
        checkpoints: rows,
        plain: plain.checkpoints,
        done,
        sockhash,
        counters,
        limits,
        memory_fits: fits,
        mem_total_kib: os.totalmem() / 1024,
      },
      charts: [chart],
      headline: [
        {
          metric: 'meshed connections held open at once (same node)',
          value: `${fmt(done.open)}, getpeername() right on ${fmt(done.open - done.bad_peer_at_end)}; connect+RTT p50 at ${fmt(top.open)} open ${top.vs_first}× at ${fmt(base.open)}${at100k?.vs_plain ? `, ${at100k.vs_plain}× no mesh at 100k` : ''}`,
        },
      ],
    };
  } finally {
    for (const v of variants) for (const h of v.holders) h.child.kill('SIGKILL');
    for (const sv of servers) sv.child.kill('SIGKILL');
    agent?.stop();
    if (fs.existsSync(bpffs)) Datapath.remove(bpffs);
    await sb.teardown();
  }
}

if (require.main === module) runStandalone(concurrencyArgs, runConcurrency);
