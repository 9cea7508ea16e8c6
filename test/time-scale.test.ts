// SOCKMESH_TIME_SCALE: the one factor by which every fixed wait of the tests and the sandbox grows
// under emulation (scripts/kernel-test.sh sets it), checked in a child process with the variable set.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const MOD = path.resolve(__dirname, '../sandbox/time-scale.js');

function withScale(value: string | undefined, code: string): { status: number | null; stdout: string; stderr: string } {
  const env = { ...process.env };
  delete env.SOCKMESH_TIME_SCALE;
  if (value !== undefined) env.SOCKMESH_TIME_SCALE = value;
  const r = spawnSync(process.execPath, ['-e', `const t = require(${JSON.stringify(MOD)}); ${code}`], { env, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout.trim(), stderr: r.stderr };
}

test('unset, the factor is 1; set, every scaled wait grows by it', () => {
  assert.equal(withScale(undefined, 'console.log(t.TIME_SCALE, t.scaled(1500))').stdout, '1 1500');
  assert.equal(withScale('10', 'console.log(t.TIME_SCALE, t.scaled(1500))').stdout, '10 15000');
  assert.equal(withScale('2.5', 'console.log(t.scaled(1000))').stdout, '2500');
});

test('a factor that is not a number from 1 to 100 is refused at load, naming the variable', () => {
  for (const bad of ['0', '0.5', 'ten', '1000', '-3']) {
    const r = withScale(bad, 'console.log("loaded")');
    assert.notEqual(r.status, 0, bad);
    assert.match(r.stderr, /SOCKMESH_TIME_SCALE=.*expected a number from 1 to 100/, bad);
  }
});

test('waitUntil polls until the condition holds, and gives up after the scaled time', async () => {
  const r = withScale(
    '3',
    `(async () => {
      let n = 0;
      const ok = await t.waitUntil(() => ++n >= 3, 1000, 5);
      const t0 = Date.now();
      const never = await t.waitUntil(() => false, 20, 5);
      console.log(ok, n, never, Date.now() - t0 >= 60);
    })()`,
  );
  assert.equal(r.stdout, 'true 3 false true', r.stderr);
});
