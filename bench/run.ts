// Entry point of the benchmark suite (issue 6). So far it runs one scenario, the same-node
// ping-pong comparison (bench/pingpong.ts: plain / sockmesh / sockmesh without redirect / HAProxy
// sidecar pair, native client and server), and writes its JSON and Markdown under bench/results/.
//
//   node dist/bench/run.js [--quick] [--out-dir bench/results] [pingpong options...]
//
// --quick: small settings (2 000 round trips × 3 repetitions) that check the harness end to end in
// about a minute; the numbers of a quick run are not meant to be judged.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pingpongArgs, runPingpong } from './pingpong';

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const quick = argv.includes('--quick');
  let outDir = path.resolve(__dirname, '..', '..', 'bench', 'results');
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--quick') continue;
    if (argv[i] === '--out-dir') outDir = path.resolve(argv[++i]);
    else rest.push(argv[i]);
  }
  const opts = pingpongArgs([...(quick ? ['--rounds', '2000', '--reps', '3'] : []), ...rest]);
  const started = new Date();
  const pp = await runPingpong(opts);
  const machine = {
    date: started.toISOString(),
    kernel: os.release(),
    node: process.version,
    cpus: os.cpus().length,
    cpu_model: os.cpus()[0]?.model,
    quick,
  };
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, 'pingpong.json'), JSON.stringify({ machine, ...pp, markdown: undefined }, null, 2) + '\n');
  const md = `# sockmesh benchmarks\n\n${machine.date}, Linux ${machine.kernel}, ${machine.cpus} CPUs (${machine.cpu_model}), Node ${machine.node}${quick ? ', --quick' : ''}\n\n## Same-node ping-pong\n\n${pp.markdown}`;
  fs.writeFileSync(path.join(outDir, 'report.md'), md);
  process.stdout.write(`\n${md}\nwritten: ${path.join(outDir, 'report.md')}, pingpong.json\n`);
}

main().catch((e) => {
  process.stderr.write(`bench failed: ${e instanceof Error ? e.stack : e}\n`);
  process.exit(1);
});
