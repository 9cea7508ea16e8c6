// `npm test` runs this: node's own test runner over dist/test/*.test.js, with a second reporter
// writing TAP to a file so we can check, afterwards, that no kernel test was skipped. On CI
// (CI=true) a skipped kernel test is a failure: a green run must mean the datapath really ran.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const dir = __dirname;
const only = process.argv.slice(2);
const files = fs
  .readdirSync(dir)
  .filter((f) => f.endsWith('.test.js'))
  .filter((f) => !only.length || only.some((o) => f.includes(o)))
  .sort()
  .map((f) => path.join(dir, f));
const tap = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'sockmesh-test-')), 'report.tap');

const r = spawnSync(
  process.execPath,
  [
    '--test',
    '--test-concurrency=1', // the kernel tests share one machine's BPF and netns state
    '--test-reporter=spec',
    '--test-reporter-destination=stdout',
    '--test-reporter=tap',
    `--test-reporter-destination=${tap}`,
    ...files,
  ],
  { stdio: 'inherit' },
);

const report = fs.existsSync(tap) ? fs.readFileSync(tap, 'utf8') : '';
const skipped = report.split('\n').filter((l) => /^\s*ok \d+ .*# SKIP/i.test(l));
const kernelSkips = skipped.filter((l) => /\[kernel\]/.test(l));
if (skipped.length) {
  process.stdout.write(`\nskipped tests:\n${skipped.map((l) => '  ' + l.trim()).join('\n')}\n`);
}
if (process.env.CI && kernelSkips.length) {
  process.stdout.write(`\nFAIL: ${kernelSkips.length} kernel test(s) were skipped on CI; the datapath was not tested.\n`);
  process.exit(1);
}
process.exit(r.status ?? 1);
