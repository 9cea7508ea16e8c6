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

      const read = (s: string) => JSON.parse(fs.readFileSync(path.join(out, `${s}.json`), 'utf8'));
      // L7: the policies were really in force (denials checked), every variant served requests,
      // and the L7 proxy is on its variant's path (its CPU is counted) and nowhere else.
      const l7 = read('l7');
      assert.ok(l7.checks.length >= 4 && l7.checks.every((c: any) => c.got === c.expect), JSON.stringify(l7.checks));
      assert.ok(l7.checks.some((c: any) => c.expect === 403));
      for (const v of ['direct', 'l7', 'sidecar', 'l4']) assert.ok(l7.rows.some((r: any) => r.variant === v && r.rps > 0), `l7: no requests for ${v}`);
      for (const r of l7.rows) assert.equal(r.proxy_cpu_us_per_req > 0, r.variant === 'l7' || r.variant === 'sidecar', `l7: proxy CPU of ${r.variant}`);
      // Scale: every variant connected to the first and the last service at every scale.
      const scale = read('scale');
      for (const n of scale.options.scales) {
        for (const v of ['nft', 'legacy', 'sockmesh']) {
          for (const which of ['first', 'last']) {
            assert.ok(scale.connect.some((c: any) => c.scale === n && c.variant === v && c.which === which && c.p50_us > 0), `scale ${n} ${v} ${which}`);
          }
        }
      }
      // Propagation: changes were seen in the kernel, not timed out.
      const prop = read('propagation');
      assert.deepEqual(prop.failures, []);
      assert.ok(prop.cases.some((c: any) => c.case === 'endpoint' && c.samples.length > 0 && c.samples.every((x: any) => x.kernelMs > 0)));
      // Memory: every process was measured, and the kernel maps hold the bigger config.
      const mem = read('memory');
      assert.deepEqual(mem.failures, []);
      const last = mem.phases[mem.phases.length - 1];
      for (const k of ['agent', 'proxy', 'controlPlane']) assert.ok(last[k].rssKiB > 0, `memory: ${k}`);
      assert.ok(last.services > mem.phases[0].services);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });
});
