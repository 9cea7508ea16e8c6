// `npm test` runs this: node's own test runner over dist/test/*.test.js, with a second reporter
// writing TAP to a file so we can check, afterwards, that no kernel test was skipped. On CI
// (CI=true) a skipped kernel test is a failure: a green run must mean the datapath really ran.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const dir = __dirname;
// --kernel-only: only the tests named [kernel] (and everything inside such a suite). The kernel
// matrix (scripts/test-kernels.sh) uses it: the other tests do not depend on the kernel and have
// already run on the host.
const kernelOnly = process.argv.includes('--kernel-only');
const only = process.argv.slice(2).filter((a) => a !== '--kernel-only');
// An argument names a test file (`native` is native.test.js, not bench-native.test.js); one that
// names no file selects every file whose name contains it.
const all = fs.readdirSync(dir).filter((f) => f.endsWith('.test.js'));
const selects = (o: string, f: string): boolean => (all.includes(`${o}.test.js`) ? f === `${o}.test.js` : f.includes(o));
const files = all
  .filter((f) => !only.length || only.some((o) => selects(o, f)))
  .sort()
  .map((f) => path.join(dir, f));
const unmatched = only.filter((o) => !all.some((f) => selects(o, f)));
if (unmatched.length) {
  // A typo must not quietly drop a file from a run (the kernel matrix names its files).
  process.stderr.write(`no test file matches ${unmatched.join(', ')}\n`);
  process.exit(2);
}
const tap = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'sockmesh-test-')), 'report.tap');

const r = spawnSync(
  process.execPath,
  [
    '--test',
    '--test-concurrency=1', // the kernel tests share one machine's BPF and netns state
    ...(kernelOnly ? ['--test-name-pattern=\\[kernel\\]'] : []),
    '--test-reporter=spec',
    '--test-reporter-destination=stdout',
    '--test-reporter=tap',
    `--test-reporter-destination=${tap}`,
    ...files,
  ],
  { stdio: 'inherit' },
);

const report = fs.existsSync(tap) ? fs.readFileSync(tap, 'utf8') : '';
const skipped = report
  .split('\n')
  .filter((l) => /^\s*ok \d+ .*# SKIP/i.test(l))
  .filter((l) => !(kernelOnly && /# SKIP test name does not match pattern/.test(l)));
const kernelSkips = skipped.filter((l) => /\[kernel\]/.test(l));
if (skipped.length) {
  process.stdout.write(`\nskipped tests:\n${skipped.map((l) => '  ' + l.trim()).join('\n')}\n`);
}
if (process.env.CI && kernelSkips.length) {
  process.stdout.write(`\nFAIL: ${kernelSkips.length} kernel test(s) were skipped on CI; the datapath was not tested.\n`);
  process.exit(1);
}
process.exit(r.status ?? 1);
