// Shared pieces of the benchmark suite (issue 6): the native ping-pong tool, CPU accounting from
// /proc, small statistics, and the shape every scenario returns to bench/run.ts.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

const CLK_TCK = 100; // USER_HZ on Linux

/** Repository root (this file runs from dist/bench/). */
export const ROOT = path.resolve(__dirname, '..', '..');
export const NATIVE_PINGPONG_SRC = path.join(ROOT, 'bench', 'native', 'pingpong.c');
export const NATIVE_PINGPONG = path.join(ROOT, 'build', 'bench', 'pingpong');

/** Build build/bench/pingpong with gcc -O2 unless it is newer than its source. Returns its path. */
export function ensureNativePingpong(): string {
  return ensureNativeTool(NATIVE_PINGPONG_SRC, NATIVE_PINGPONG);
}

export const NATIVE_CONNHOLD = path.join(ROOT, 'build', 'bench', 'connhold');

/** The native connection holder of the concurrency scenario (bench/native/connhold.c). */
export function ensureNativeConnhold(): string {
  return ensureNativeTool(path.join(ROOT, 'bench', 'native', 'connhold.c'), NATIVE_CONNHOLD);
}

/** Compile one C file of bench/native/ into build/bench/ unless the binary is newer. */
function ensureNativeTool(srcPath: string, out: string): string {
  const src = fs.statSync(srcPath);
  if (fs.existsSync(out) && fs.statSync(out).mtimeMs >= src.mtimeMs) return out;
  fs.mkdirSync(path.dirname(out), { recursive: true });
  const tmp = `${out}.tmp${process.pid}`;
  const r = spawnSync('gcc', ['-O2', '-Wall', '-o', tmp, srcPath, '-lm'], { encoding: 'utf8' });
  if (r.status !== 0) {
    fs.rmSync(tmp, { force: true });
    throw new Error(`gcc ${srcPath} failed (${r.error?.message ?? r.status}): ${r.stderr}`);
  }
  fs.renameSync(tmp, out); // atomic: a concurrent run sees the old or the new binary
  return out;
}

/** CPU time (user+sys) of every thread of pid, in µs: ns-precise schedstat, else clock ticks. */
export function procCpuUs(pid: number): number {
  try {
    let ns = 0;
    for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
      ns += Number(fs.readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0]);
    }
    if (ns > 0) return ns / 1e3;
  } catch {
    /* no schedstat: fall back */
  }
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1e6) / CLK_TCK; // utime + stime
}

/** Summed procCpuUs of several pids (a pid that is gone counts 0). */
export function pidsCpuUs(pids: number[]): number {
  let us = 0;
  for (const p of pids) {
    try {
      us += procCpuUs(p);
    } catch {
      /* exited */
    }
  }
  return us;
}

/** Resident set size and its high-water mark of pid, in KiB (from /proc/PID/status). */
export function procRss(pid: number): { rssKiB: number; hwmKiB: number } {
  const st = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const get = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(st)?.[1] ?? NaN);
  return { rssKiB: get('VmRSS'), hwmKiB: get('VmHWM') };
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** Exact percentile (rank ceil(p/100*n)) of unsorted samples. */
export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i];
}

/** Rotate `xs` by k (interleaving: each repetition starts with a different variant). */
export function rotate<T>(xs: T[], k: number): T[] {
  const n = xs.length;
  if (!n) return [];
  const i = ((k % n) + n) % n;
  return [...xs.slice(i), ...xs.slice(0, i)];
}

/** A bar chart the report draws as SVG (bench/svg.ts). */
export interface ChartSpec {
  /** File name without extension, e.g. 'pingpong-latency'. */
  name: string;
  title: string;
  /** Unit of the values, e.g. 'µs', 'req/s'. */
  unit: string;
  /** Groups along the x axis (e.g. message sizes). */
  groups: string[];
  /** One bar per series in every group; values[i] belongs to groups[i] (null: not measured). */
  series: Array<{ label: string; values: Array<number | null> }>;
  /** Draw the value axis on a log scale (for ranges like 100 .. 100k). */
  log?: boolean;
}

/** What every scenario hands back to bench/run.ts. */
export interface ScenarioResult {
  /** Short id, also the JSON file name: 'pingpong', 'scale', ... */
  name: string;
  /** Section heading in report.md. */
  title: string;
  /** Markdown body of the section (tables, method, caveats). */
  markdown: string;
  /** Everything measured, written to `${name}.json`. */
  data: unknown;
  charts: ChartSpec[];
  /** The few figures README's headline table quotes (filled by run.ts where a scenario has none). */
  headline?: Array<{ metric: string; value: string }>;
}

/** Scenario-independent settings bench/run.ts passes down. */
export interface ScenarioOptions {
  quick: boolean;
  log: (line: string) => void;
}

/** An integer command-line value >= min, or an error naming the option. */
export function intArg(s: string, what: string, min: number): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${what}: '${s}' is not an integer >= ${min}`);
  return n;
}

/** A comma-separated list of integers >= min. */
export function intListArg(s: string, what: string, min = 1): number[] {
  return s.split(',').map((x) => intArg(x, what, min));
}

/**
 * `node dist/bench/<scenario>.js [--quick] [options] [--out FILE.json]`: run one scenario alone,
 * print its Markdown section on stdout (progress on stderr), write its data to --out.
 */
export function runStandalone<O extends object>(
  parse: (argv: string[], quick: boolean) => O & { out?: string },
  run: (o: O & ScenarioOptions) => Promise<ScenarioResult>,
): void {
  const argv = process.argv.slice(2);
  const quick = argv.includes('--quick');
  Promise.resolve()
    .then(async () => {
      const { out, ...o } = parse(argv.filter((a) => a !== '--quick'), quick);
      const res = await run({ ...(o as O), quick, log: (l: string) => process.stderr.write(l + '\n') });
      process.stdout.write(`## ${res.title}\n\n${res.markdown}\n`);
      if (out) fs.writeFileSync(out, JSON.stringify(res.data, null, 2) + '\n');
    })
    .catch((e) => {
      process.stderr.write(`bench failed: ${e instanceof Error ? e.stack : e}\n`);
      process.exit(1);
    });
}
