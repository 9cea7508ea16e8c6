// Entry point of the benchmark suite (issue 6): runs every scenario in the sandbox, one after the
// other, and writes under --out-dir (default bench/results/):
//
//   report.md           machine, versions, headline ratios, one section per scenario
//   <scenario>.json     everything the scenario measured (with the machine block)
//   <chart>.svg         bar charts (bench/svg.ts)
//
//   npm run bench [-- --quick] [--out-dir DIR] [--only pingpong,l7,...] [--skip scale,...]
//
// Scenarios: pingpong (same node and cross node, request/response and bulk: bench/pingpong.ts),
// l7 (wrk: bench/l7.ts), scale (iptables vs maps: bench/scale.ts), propagation (control plane ->
// kernel: bench/propagation.ts), memory (bench/memory.ts), concurrency (connections held open at
// once: bench/concurrency.ts).
//
// --quick: every scenario at small scale, a few minutes in all; it checks that the harness works
// end to end (CI runs it through test/bench-quick.test.ts) — its numbers are not meant to be judged.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ROOT, ScenarioOptions, ScenarioResult } from './common';
import { concurrencyArgs, runConcurrency } from './concurrency';
import { l7Args, runL7 } from './l7';
import { memoryArgs, runMemory } from './memory';
import { pingpongArgs, runPingpong } from './pingpong';
import { propagationArgs, runPropagation } from './propagation';
import { runScale, scaleArgs } from './scale';
import { writeCharts } from './svg';

export const SCENARIOS = ['pingpong', 'l7', 'scale', 'propagation', 'memory', 'concurrency'] as const;
type Scenario = (typeof SCENARIOS)[number];

function version(argv: string[], re?: RegExp): string {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', timeout: 10_000 });
  const text = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim();
  if (r.error || !text) return 'not found';
  const line = text.split('\n')[0].trim();
  return re ? (re.exec(text)?.[1] ?? line) : line;
}

function dpkgVersion(pkg: string): string {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Version}', pkg], { encoding: 'utf8' });
  return r.status === 0 && r.stdout ? r.stdout : 'not installed';
}

/** Machine, kernel and the versions of everything on the measured paths. */
export function machineInfo(quick: boolean): Record<string, unknown> {
  const git = (args: string[]) => spawnSync('git', ['-C', ROOT, ...args], { encoding: 'utf8' }).stdout?.trim() ?? '';
  return {
    date: new Date().toISOString(),
    quick,
    kernel: `${os.release()} ${os.version()}`,
    cpus: os.cpus().length,
    cpu_model: os.cpus()[0]?.model,
    memory_gib: +(os.totalmem() / 2 ** 30).toFixed(1),
    node: process.version,
    sockmesh_commit: `${git(['rev-parse', '--short', 'HEAD'])}${git(['status', '--porcelain', '--untracked-files=no']) ? ' (with local changes)' : ''}`,
    clang: version(['clang', '--version'], /version (\S+)/),
    libbpf: dpkgVersion('libbpf-dev'),
    gcc: version(['gcc', '-dumpfullversion']),
    haproxy: version(['haproxy', '-v'], /version (\S+)/),
    wrk: version(['wrk', '-v'], /wrk (\S+)/),
    iptables: version(['iptables', '--version']),
    undici: JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules', 'undici', 'package.json'), 'utf8')).version,
  };
}

function parseSuiteArgs(argv: string[]): { quick: boolean; outDir: string; scenarios: Scenario[]; rest: Record<Scenario, string[]> } {
  let quick = false;
  let outDir = path.join(ROOT, 'bench', 'results');
  let only: string[] = [...SCENARIOS];
  const skip: string[] = [];
  const rest = Object.fromEntries(SCENARIOS.map((s) => [s, [] as string[]])) as Record<Scenario, string[]>;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--quick') quick = true;
    else if (a === '--out-dir') outDir = path.resolve(argv[++i]);
    else if (a === '--only') only = argv[++i].split(',');
    else if (a === '--skip') skip.push(...argv[++i].split(','));
    else {
      // --<scenario>.<option> VALUE passes an option to one scenario, e.g. --pingpong.reps 3.
      const m = /^--(\w+)\.([\w-]+)$/.exec(a);
      if (!m || !(SCENARIOS as readonly string[]).includes(m[1])) {
        throw new Error(`unknown option '${a}' (--quick, --out-dir DIR, --only LIST, --skip LIST, --<scenario>.<option> VALUE; scenarios: ${SCENARIOS.join(', ')})`);
      }
      rest[m[1] as Scenario].push(`--${m[2]}`, argv[++i]);
    }
  }
  for (const s of [...only, ...skip]) if (!(SCENARIOS as readonly string[]).includes(s)) throw new Error(`unknown scenario '${s}' (${SCENARIOS.join(', ')})`);
  return { quick, outDir, scenarios: SCENARIOS.filter((s) => only.includes(s) && !skip.includes(s)), rest };
}

async function runScenario(s: Scenario, args: string[], base: ScenarioOptions): Promise<ScenarioResult> {
  switch (s) {
    case 'pingpong':
      return runPingpong({ ...pingpongArgs(args, base.quick), ...base });
    case 'l7':
      return runL7({ ...l7Args(args, base.quick), ...base });
    case 'scale':
      return runScale({ ...scaleArgs(base.quick ? ['--quick', ...args] : args), ...base });
    case 'propagation':
      return runPropagation({ ...propagationArgs(args, base.quick), ...base });
    case 'memory':
      return runMemory({ ...memoryArgs(args, base.quick), ...base });
    case 'concurrency':
      return runConcurrency({ ...concurrencyArgs(args, base.quick), ...base });
  }
}

export async function runSuite(argv: string[]): Promise<{ outDir: string; results: ScenarioResult[]; failed: string[] }> {
  const { quick, outDir, scenarios, rest } = parseSuiteArgs(argv);
  const log = (l: string) => process.stderr.write(`${l}\n`);
  const machine = machineInfo(quick);
  fs.mkdirSync(outDir, { recursive: true });
  const results: ScenarioResult[] = [];
  const failed: string[] = [];
  for (const s of scenarios) {
    log(`\n== ${s}${quick ? ' (quick)' : ''}`);
    const t0 = Date.now();
    try {
      const r = await runScenario(s, rest[s], { quick, log: (l) => log(`[${s}] ${l}`) });
      results.push(r);
      fs.writeFileSync(path.join(outDir, `${r.name}.json`), JSON.stringify({ machine, ...(r.data as object) }, null, 2) + '\n');
      writeCharts(outDir, r.charts);
      log(`== ${s} done in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    } catch (e) {
      // One broken scenario does not throw away the others' numbers; the exit code says it.
      failed.push(s);
      log(`== ${s} FAILED: ${e instanceof Error ? e.stack : e}`);
    }
  }
  fs.writeFileSync(path.join(outDir, 'report.md'), report(machine, results, failed));
  return { outDir, results, failed };
}

function report(machine: Record<string, unknown>, results: ScenarioResult[], failed: string[]): string {
  const m = machine as Record<string, string | number | boolean>;
  const out = [
    '# sockmesh benchmark report',
    '',
    `${m.date}${m.quick ? ' — **--quick run: small scale, numbers not meant to be judged**' : ''}`,
    '',
    '| | |',
    '|---|---|',
    ...Object.entries(machine)
      .filter(([k]) => !['date', 'quick'].includes(k))
      .map(([k, v]) => `| ${k} | ${String(v).replace(/\|/g, '\\|')} |`),
    '',
    'Read before quoting: this is a 2-vCPU VM whose wake-up latency swings several-fold between runs. Every comparison below ' +
      'ran in one run with its variants interleaved and repeated; the ratios and the CPU cost per transaction are what hold, ' +
      'absolute microseconds are not. Everything runs inside network namespaces and cgroups of a sandbox on one machine ' +
      '(`sandbox/sandbox.ts`): "nodes" are network namespaces joined by veth pairs, not separate hosts.',
    '',
  ];
  const headline = results.flatMap((r) => (r.headline ?? []).map((h) => ({ ...h, scenario: r.name })));
  if (headline.length) {
    out.push('## Headline', '', '| what | measured |', '|---|---|', ...headline.map((h) => `| ${h.metric} | ${h.value} |`), '');
  }
  if (failed.length) out.push(`**Failed scenarios** (see the run's log): ${failed.join(', ')}`, '');
  for (const r of results) {
    out.push(`## ${r.title}`, '', r.markdown.trim(), '');
    if (r.charts.length) out.push(r.charts.map((c) => `![${c.title}](${c.name}.svg)`).join('\n'), '');
  }
  return out.join('\n');
}

if (require.main === module) {
  runSuite(process.argv.slice(2))
    .then(({ outDir, results, failed }) => {
      process.stdout.write(`\nwritten: ${path.join(outDir, 'report.md')} (${results.map((r) => r.name).join(', ')})\n`);
      if (failed.length) {
        process.stderr.write(`bench: failed scenarios: ${failed.join(', ')}\n`);
        process.exit(1);
      }
    })
    .catch((e) => {
      process.stderr.write(`bench failed: ${e instanceof Error ? e.stack : e}\n`);
      process.exit(1);
    });
}
