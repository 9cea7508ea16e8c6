// The benchmark suite's --quick mode, end to end (issue 6: CI checks that the harness works). It
// judges no speed: it checks that every scenario ran, measured what it claims to measure (the
// redirect really happened where it should and not where it should not, the L7 proxy really
// served the requests, the iptables rules really translated) and wrote its report, JSON and charts.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { kernelSkip } from './kernel';

const RUN = path.resolve(__dirname, '../bench/run.js');

describe('[kernel] bench --quick', kernelSkip(), () => {
  test('every scenario runs and writes report.md, JSON and SVG charts', () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'sockmesh-bench-'));
    try {
      const r = spawnSync(process.execPath, [RUN, '--quick', '--out-dir', out], { encoding: 'utf8', timeout: 900_000 });
      assert.equal(r.status, 0, `bench --quick failed:\n${r.stderr.slice(-6000)}`);
      const report = fs.readFileSync(path.join(out, 'report.md'), 'utf8');
      assert.match(report, /--quick run/);
      for (const s of ['pingpong', 'l7', 'scale', 'propagation', 'memory']) {
        assert.ok(fs.existsSync(path.join(out, `${s}.json`)), `${s}.json missing`);
      }
      const svgs = fs.readdirSync(out).filter((f) => f.endsWith('.svg'));
      assert.ok(svgs.length >= 5, `only ${svgs.length} charts`);
      for (const f of svgs) {
        assert.match(report, new RegExp(`\\(${f.replace('.', '\\.')}\\)`), `${f} not linked from the report`);
        assert.match(fs.readFileSync(path.join(out, f), 'utf8'), /^<\?xml[^]*<svg[^]*<\/svg>\s*$/);
      }

      const pp = JSON.parse(fs.readFileSync(path.join(out, 'pingpong.json'), 'utf8'));
      assert.ok(pp.machine?.kernel, 'machine block missing');
      const row = (v: string, conns = 1) => pp.rows.find((x: any) => x.variant === v && x.conns === conns && x.size === 64);
      for (const v of ['plain', 'sockmesh', 'noredirect', 'sidecar', 'http-plain', 'http-sockmesh', 'http-sidecar', 'http-l7', 'xnode-plain', 'xnode-sockmesh']) {
        for (const c of [1, 32]) assert.ok(row(v, c)?.p50_us > 0, `no 64 B × ${c} result for ${v}`);
      }
      // The redirect is where it should be, and only there.
      assert.ok(row('sockmesh').redirects_per_txn >= 1.9, `sockmesh: ${row('sockmesh').redirects_per_txn} redirects per round trip`);
      for (const v of ['plain', 'noredirect', 'xnode-sockmesh']) assert.equal(row(v).redirects_per_txn, 0, `${v} was redirected`);
      assert.ok(pp.bulk.length >= 4, 'bulk rows missing');

      const l7 = JSON.parse(fs.readFileSync(path.join(out, 'l7.json'), 'utf8'));
      assert.ok(JSON.stringify(l7).includes('sockmesh'), 'l7: no sockmesh variant');
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });
});
