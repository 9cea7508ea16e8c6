// The L7 proxy's CPU per request without the kernel datapath: the proxy server (createL7Proxy) in
// a process of its own on loopback, with a stand-in `lookupOrigin` that names a native HTTP upstream
// (build/bench/pingpong --serve --mode http), the ten RBAC policies of bench/l7.ts, and wrk (or the
// native client) driving it over keep-alive connections. The proxy process's CPU (user+sys of all its
// threads, /proc/PID/task/*/schedstat) over a measured run, divided by the requests of that run, is
// the figure; the run is preceded by an unmeasured warm-up (the JIT keeps improving for tens of
// thousands of requests).
//
// Several builds can be compared side by side: `--dist LABEL=DIR` (DIR holds proxy/server and
// proxy/rbac as compiled, e.g. a copy of dist/ taken before a change); the variants are measured
// interleaved, the order rotated per repetition, and medians reported.
//
//   node dist/bench/proxy-profile.js [--dist LABEL=DIR ...] [--load get|post|native]
//        [--conns 8] [--duration 10] [--warmup 10] [--reps 3] [--access-log none|stdout]
//        [--cpu-prof DIR]                    write a V8 CPU profile of each proxy process (one run)
//   node dist/bench/proxy-profile.js --summarize FILE.cpuprofile [--top 40]
//
// Without --dist the current build (dist/ of this checkout) is measured alone.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { ensureNativePingpong, median, procCpuUs, ROOT, rotate } from './common';
import { BENCH_PATH, BenchPolicy, CLIENT_SA, envoyRbac, POLICIES, spiffe } from './l7';

/** The native client cannot send x-tenant; an eleventh policy (last in name order) admits its POSTs. */
const NATIVE_PATH = '/native/echo';

/** bench/l7.ts's ten policies (p10 also admits POST), plus p11 for the native client. */
function rbacConfig(): Record<string, unknown> {
  const ps: BenchPolicy[] = POLICIES.map((p) => (p.name === 'p10-catalog-read' ? { ...p, methods: [...p.methods, 'POST'] } : p));
  ps.push({ name: 'p11-native', path: { prefix: '/native' }, methods: ['POST'], sa: CLIENT_SA });
  return envoyRbac(ps);
}

// ---- the proxy process ---------------------------------------------------------------------------

/** `--child DIR UPSTREAM_PORT ACCESS_LOG`: runs DIR's proxy, prints {"port"} once listening. */
async function child(dir: string, upstreamPort: number, accessLog: string): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const server = require(path.join(dir, 'proxy', 'server')) as typeof import('../proxy/server');
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const rbac = require(path.join(dir, 'proxy', 'rbac')) as typeof import('../proxy/rbac');
  const evaluator = rbac.compileRbacFilters([{ name: 'envoy.filters.http.rbac', config: rbacConfig() }]);
  const origin = { destinationIp: '127.0.0.1', destinationPort: upstreamPort, principal: spiffe(CLIENT_SA) };
  const proxy = server.createL7Proxy({
    lookupOrigin: () => origin,
    policies: new Map([[`127.0.0.1:${upstreamPort}`, evaluator]]),
    accessLog: accessLog === 'stdout' ? (line) => process.stdout.write(line + '\n') : undefined,
  });
  const { port } = await proxy.listen({ host: '127.0.0.1', port: 0 });
  process.stderr.write(JSON.stringify({ event: 'listening', port, pid: process.pid }) + '\n');
  // A clean exit, so that --cpu-prof writes its profile.
  process.once('SIGTERM', () => void proxy.close().then(() => process.exit(0)));
}

interface Variant {
  label: string;
  dir: string;
}

interface Running {
  v: Variant;
  proc: ChildProcess;
  pid: number;
  port: number;
  accessLines: number;
}

async function startProxy(v: Variant, upstreamPort: number, accessLog: string, cpuProfDir?: string): Promise<Running> {
  const nodeArgs = cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', cpuProfDir, '--cpu-prof-name', `proxy-${v.label}.cpuprofile`] : [];
  const proc = spawn(process.execPath, [...nodeArgs, __filename, '--child', v.dir, String(upstreamPort), accessLog], {
    // A copy of dist/ outside the checkout still finds undici and prom-client here.
    env: { ...process.env, NODE_PATH: path.join(ROOT, 'node_modules') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const r: Running = { v, proc, pid: proc.pid!, port: 0, accessLines: 0 };
  proc.stdout!.on('data', (d: Buffer) => {
    for (const b of d) if (b === 10) r.accessLines++;
  });
  let err = '';
  r.port = await new Promise<number>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`proxy ${v.label}: not listening within 20 s: ${err}`)), 20_000);
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => {
      err += d;
      const m = /"event":"listening","port":(\d+)/.exec(err);
      if (m) {
        clearTimeout(t);
        resolve(Number(m[1]));
      }
    });
    proc.once('exit', (code) => reject(new Error(`proxy ${v.label} exited (${code}): ${err}`)));
  });
  return r;
}

async function stopProxy(r: Running): Promise<void> {
  if (r.proc.exitCode !== null || r.proc.signalCode !== null) return;
  const exited = new Promise((res) => r.proc.once('exit', res));
  r.proc.kill('SIGTERM');
  const t = setTimeout(() => r.proc.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(t);
}

// ---- the upstream and the load --------------------------------------------------------------------

interface Upstream {
  proc: ChildProcess;
  port: number;
  /** Connections the upstream accepted so far (its SIGUSR1 stats line). */
  accepted(): Promise<number>;
}

async function startUpstream(): Promise<Upstream> {
  const bin = ensureNativePingpong();
  const proc = spawn(bin, ['--serve', '--mode', 'http', '--host', '127.0.0.1', '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  const waiters: Array<(n: number) => void> = [];
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    for (let i; (i = out.indexOf('\n')) >= 0; out = out.slice(i + 1)) {
      const line = out.slice(0, i);
      const m = /"event":"stats","accepted":(\d+)/.exec(line);
      if (m) waiters.shift()?.(Number(m[1]));
      const l = /"event":"listening".*"port":(\d+)/.exec(line);
      if (l) waiters.shift()?.(Number(l[1]));
    }
  });
  const port = await new Promise<number>((resolve) => waiters.push(resolve));
  return {
    proc,
    port,
    accepted: () =>
      new Promise<number>((resolve) => {
        waiters.push(resolve);
        proc.kill('SIGUSR1');
      }),
  };
}

type Load = 'get' | 'post' | 'native';

interface LoadResult {
  requests: number;
  rps: number;
  p50Us?: number;
  errors: string;
}

function wrkScript(load: Load): string {
  const file = path.join(os.tmpdir(), `proxy-profile-${process.pid}-${load}.lua`);
  const lines = [`wrk.headers["x-tenant"] = "acme"`];
  if (load === 'post') {
    lines.push(`wrk.method = "POST"`, `wrk.body = string.rep("x", 64)`, `wrk.headers["Content-Type"] = "application/octet-stream"`);
  }
  fs.writeFileSync(file, lines.join('\n') + '\n');
  return file;
}

function runLoad(load: Load, port: number, conns: number, seconds: number, script: string): LoadResult {
  if (load === 'native') {
    // --rounds per connection (sized for roughly `seconds` at ~4k req/s); no client-side warm-up, so
    // that every request the proxy serves is counted. The JSON's "rounds" is the total over all connections.
    const rounds = Math.max(200, Math.round((seconds * 4000) / conns));
    const r = spawnSync(ensureNativePingpong(), ['--target', `127.0.0.1:${port}`, '--http', '--path', NATIVE_PATH, '--size', '64', '--rounds', String(rounds), '--warmup', '0', '--conns', String(conns)], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    const j = JSON.parse(r.stdout.trim().split('\n').pop() || '{}') as { ok?: boolean; rounds?: number; tps?: number; p50_us?: number; error?: string };
    if (!j.ok) return { requests: 0, rps: 0, errors: `native client: ${r.stdout} ${r.stderr}` };
    return { requests: j.rounds ?? 0, rps: j.tps ?? 0, p50Us: j.p50_us, errors: '' };
  }
  const r = spawnSync('wrk', ['-t1', `-c${conns}`, `-d${seconds}s`, '--latency', '-s', script, `http://127.0.0.1:${port}${BENCH_PATH}`], { encoding: 'utf8' });
  const out = r.stdout ?? '';
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0);
  const p50 = /50%\s+([\d.]+)(us|ms|s)/.exec(out);
  const p50Us = p50 ? Number(p50[1]) * (p50[2] === 'us' ? 1 : p50[2] === 'ms' ? 1e3 : 1e6) : undefined;
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1];
  const sockErr = /Socket errors: (.*)/.exec(out)?.[1];
  const errors = [non2xx ? `${non2xx} non-2xx` : '', sockErr ? `socket errors: ${sockErr}` : '', r.status !== 0 ? `wrk exit ${r.status}: ${r.stderr}` : '']
    .filter(Boolean)
    .join('; ');
  return { requests, rps, p50Us, errors };
}

// ---- main ---------------------------------------------------------------------------------------

interface Sample {
  label: string;
  rep: number;
  requests: number;
  rps: number;
  p50Us?: number;
  cpuUsPerReq: number;
  upstreamConnections: number;
  errors: string;
}

async function measure(opts: {
  variants: Variant[];
  load: Load;
  conns: number;
  durationS: number;
  warmupS: number;
  reps: number;
  accessLog: string;
  cpuProfDir?: string;
  log: (l: string) => void;
}): Promise<Sample[]> {
  const up = await startUpstream();
  const script = wrkScript(opts.load);
  const running: Running[] = [];
  const samples: Sample[] = [];
  try {
    for (const v of opts.variants) running.push(await startProxy(v, up.port, opts.accessLog, opts.cpuProfDir));
    for (const r of running) {
      opts.log(`warm-up ${r.v.label} (pid ${r.pid}, port ${r.port}) ${opts.warmupS} s`);
      const w = runLoad(opts.load, r.port, opts.conns, opts.warmupS, script);
      if (w.errors) throw new Error(`${r.v.label}: warm-up: ${w.errors}`);
    }
    for (let rep = 0; rep < opts.reps; rep++) {
      for (const r of rotate(running, rep)) {
        const acc0 = await up.accepted();
        const cpu0 = procCpuUs(r.pid);
        const res = runLoad(opts.load, r.port, opts.conns, opts.durationS, script);
        const cpu1 = procCpuUs(r.pid);
        const acc1 = await up.accepted();
        const s: Sample = {
          label: r.v.label,
          rep,
          requests: res.requests,
          rps: res.rps,
          p50Us: res.p50Us,
          cpuUsPerReq: res.requests ? (cpu1 - cpu0) / res.requests : NaN,
          upstreamConnections: acc1 - acc0,
          errors: res.errors,
        };
        samples.push(s);
        opts.log(
          `rep ${rep} ${s.label}: ${s.rps.toFixed(0)} req/s, ${s.cpuUsPerReq.toFixed(1)} µs CPU/req, p50 ${s.p50Us ?? '?'} µs, upstream connections opened ${s.upstreamConnections}${s.errors ? `, ERRORS ${s.errors}` : ''}`,
        );
      }
    }
  } finally {
    await Promise.all(running.map(stopProxy));
    up.proc.kill('SIGKILL');
    fs.rmSync(script, { force: true });
  }
  return samples;
}

function markdown(samples: Sample[], variants: Variant[], o: { load: Load; conns: number; durationS: number; reps: number; accessLog: string }): string {
  const rows = variants.map((v) => {
    const s = samples.filter((x) => x.label === v.label);
    const p50s = s.map((x) => x.p50Us).filter((x): x is number => x !== undefined);
    return `| ${v.label} | ${median(s.map((x) => x.cpuUsPerReq)).toFixed(1)} | ${s.map((x) => x.cpuUsPerReq.toFixed(0)).join(' / ')} | ${median(s.map((x) => x.rps)).toFixed(0)} | ${p50s.length ? median(p50s).toFixed(0) : '–'} | ${median(s.map((x) => x.upstreamConnections))} |`;
  });
  return [
    `L7 proxy alone on loopback: ${o.load === 'native' ? 'native client, 64-byte POSTs' : o.load === 'post' ? 'wrk, 64-byte POSTs' : 'wrk, GETs'} over ${o.conns} keep-alive connections, ${o.durationS} s per run, ${o.reps} interleaved runs, access log ${o.accessLog}, RBAC ×10 (the request matches the tenth policy).`,
    '',
    '| build | proxy CPU µs/req (median) | per run | req/s (median) | p50 µs | upstream connections opened per run |',
    '|---|---|---|---|---|---|',
    ...rows,
  ].join('\n');
}

/** Self time per function and per file of a .cpuprofile, largest first. */
function summarize(file: string, top: number): string {
  const prof = JSON.parse(fs.readFileSync(file, 'utf8')) as {
    nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }>;
    samples: number[];
    timeDeltas: number[];
  };
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const shortUrl = (u: string) => u.replace(/^file:\/\//, '').replace(ROOT + '/', '').replace(/^.*node_modules\//, 'nm/');
  const keyOf = (n: (typeof prof.nodes)[number]) => `${n.callFrame.functionName || '(anon)'} ${shortUrl(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;
  const selfUs = new Map<number, number>();
  for (let i = 0; i < prof.samples.length; i++) selfUs.set(prof.samples[i], (selfUs.get(prof.samples[i]) ?? 0) + (prof.timeDeltas[i] ?? 0));
  const fn = new Map<string, number>();
  const fileT = new Map<string, number>();
  let total = 0;
  for (const [id, us] of selfUs) {
    const n = byId.get(id)!;
    const short = shortUrl(n.callFrame.url);
    const key = keyOf(n);
    fn.set(key, (fn.get(key) ?? 0) + us);
    const f = n.callFrame.url ? short.replace(/^nm\/([^/]+)\/.*$/, 'nm/$1') : n.callFrame.functionName;
    fileT.set(f, (fileT.get(f) ?? 0) + us);
    total += us;
  }
  // Inclusive time per function (a function on the stack twice counts once).
  const parent = new Map<number, number>();
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const incl = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const k = keyOf(byId.get(cur)!);
      if (seen.has(k)) continue;
      seen.add(k);
      incl.set(k, (incl.get(k) ?? 0) + us);
    }
  }
  const idle = [...fn].filter(([k]) => k.startsWith('(idle)')).reduce((a, [, v]) => a + v, 0);
  const busy = total - idle;
  const fmt = (m: Map<string, number>) =>
    [...m]
      .filter(([k]) => !k.startsWith('(idle)'))
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([k, v]) => `${((100 * v) / busy).toFixed(1).padStart(5)}%  ${k}`)
      .join('\n');
  return `busy ${(busy / 1e3).toFixed(0)} ms of ${(total / 1e3).toFixed(0)} ms\n\nby file:\n${fmt(fileT)}\n\nby function (self):\n${fmt(fn)}\n\nby function (inclusive):\n${fmt(incl)}\n`;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') return child(argv[1], Number(argv[2]), argv[3]);
  const { values } = parseArgs({
    args: argv,
    options: {
      dist: { type: 'string', multiple: true },
      load: { type: 'string', default: 'get' },
      conns: { type: 'string', default: '8' },
      duration: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '10' },
      reps: { type: 'string', default: '3' },
      'access-log': { type: 'string', default: 'none' },
      'cpu-prof': { type: 'string' },
      summarize: { type: 'string' },
      top: { type: 'string', default: '40' },
    },
  });
  if (values.summarize) {
    process.stdout.write(summarize(values.summarize, Number(values.top)));
    return;
  }
  const load = values.load as Load;
  if (!['get', 'post', 'native'].includes(load)) throw new Error('--load must be get, post or native');
  const variants: Variant[] = (values.dist ?? [`current=${path.join(ROOT, 'dist')}`]).map((d) => {
    const i = d.indexOf('=');
    return i > 0 ? { label: d.slice(0, i), dir: path.resolve(d.slice(i + 1)) } : { label: path.basename(d), dir: path.resolve(d) };
  });
  const o = {
    variants,
    load,
    conns: Number(values.conns),
    durationS: Number(values.duration),
    warmupS: Number(values.warmup),
    reps: Number(values.reps),
    accessLog: values['access-log']!,
    cpuProfDir: values['cpu-prof'] ? path.resolve(values['cpu-prof']) : undefined,
    log: (l: string) => process.stderr.write(l + '\n'),
  };
  const samples = await measure(o);
  process.stdout.write(markdown(samples, variants, o) + '\n');
}

if (require.main === module) {
  main().catch((e) => {
    process.stderr.write(`proxy-profile: ${(e as Error).stack ?? e}\n`);
    process.exit(1);
  });
}
