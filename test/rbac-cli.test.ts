// `sockmesh authz check` (runAuthzCheckCli), run in-process with captured output: decisions on
// Istio's fixtures, the --json Decision, file shapes, and exit codes (0 evaluated, 1 bad files,
// 2 usage).
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { runAuthzCheckCli } from '../proxy/rbac';
import { findDir, istioFixture } from './fixture-dir';

const ISTIO = istioFixture('authz-rbac');
const OURS = findDir('test/fixtures/rbac');
const fx = (f: string) => path.join(ISTIO, f);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sockmesh-authz-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const write = (name: string, content: string): string => {
  const f = path.join(tmp, name);
  fs.writeFileSync(f, content);
  return f;
};

function run(...args: string[]): { code: number; out: string; err: string } {
  let out = '';
  let err = '';
  const code = runAuthzCheckCli(args, { out: (s) => void (out += s), err: (s) => void (err += s) });
  return { code, out, err };
}

describe('sockmesh authz check', () => {
  test('DENY then ALLOW filters: who decided, in words', () => {
    const base = ['--rbac', fx('http-deny-and-allow-out1.yaml'), '--rbac', fx('http-deny-and-allow-out2.yaml'), '--method', 'GET', '--path', '/'];
    const denied = run(...base, '--source-principal', 'spiffe://deny');
    assert.equal(denied.code, 0, denied.err);
    assert.match(denied.out, /^deny\n  decided by: filter envoy\.filters\.http\.rbac#0, policy ns\[foo\]-policy\[httpbin-deny\]-rule\[0\]\n  reason:     matched DENY policy/);
    const allowed = run(...base, '--source-principal', 'spiffe://allow');
    assert.equal(allowed.code, 0);
    assert.match(allowed.out, /^allow\n  decided by: filter envoy\.filters\.http\.rbac#1, policy ns\[foo\]-policy\[httpbin-allow\]-rule\[0\]/);
    const plaintext = run(...base);
    assert.match(plaintext.out, /^deny\n  decided by: filter envoy\.filters\.http\.rbac#1, no policy\n  reason:     no ALLOW policy matched in filter envoy\.filters\.http\.rbac#1/);
    assert.match(plaintext.out, /filters, in order:\n  envoy\.filters\.http\.rbac#0 \(http, .*http-deny-and-allow-out1\.yaml\): rules: DENY, 1 policy\n  envoy\.filters\.http\.rbac#1 \(http, .*out2\.yaml\): rules: ALLOW, 1 policy/);
  });

  test('dry-run results are printed, and --json prints the Decision', () => {
    const args = ['--rbac', fx('http-dry-run-mix-out.yaml'), '--method', 'get', '--path', '/allow?x=1'];
    const human = run(...args);
    assert.equal(human.code, 0);
    assert.match(human.out, /^deny\n/);
    assert.match(human.out, /dry run \(shadow rules, not enforced\):\n    - envoy\.filters\.http\.rbac: ALLOW shadow rules, policy ns\[foo\]-policy\[httpbin-1\]-rule\[0\] matched → would allow/);
    const json = run(...args, '--json');
    assert.equal(json.code, 0);
    assert.deepEqual(JSON.parse(json.out), {
      allow: false,
      filter: 'envoy.filters.http.rbac',
      reason: 'no ALLOW policy matched in filter envoy.filters.http.rbac',
      dryRun: [{ filter: 'envoy.filters.http.rbac', policy: 'ns[foo]-policy[httpbin-1]-rule[0]', action: 'ALLOW', wouldAllow: true }],
      unsupported: [],
      logged: [],
    });
  });

  test('headers, host → :authority, and a list file', () => {
    const file = write(
      'list.yaml',
      `- name: hosts
  typedConfig:
    '@type': type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
    rules:
      policies:
        by-host:
          permissions:
          - andRules:
              rules:
              - header: {name: ':authority', stringMatch: {exact: api.example.com, ignoreCase: true}}
              - header: {name: x-team, stringMatch: {exact: 'a,b'}}
          principals: [{any: true}]
- name: logger
  typedConfig:
    '@type': type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
    rules: {action: LOG, policies: {all: {permissions: [{any: true}], principals: [{any: true}]}}}
`,
    );
    const ok = run('--rbac', file, '--method', 'GET', '--path', '/', '--header', 'Host: API.example.com', '--header', 'x-team:a', '--header', 'X-Team: b', '--json');
    assert.equal(ok.code, 0, ok.err);
    const d = JSON.parse(ok.out);
    assert.deepEqual([d.allow, d.policy, d.logged], [true, 'by-host', ['logger: all']]);
    const no = run('--rbac', file, '--method', 'GET', '--path', '/', '--header', 'host:other.example.com', '--header', 'x-team:a,b');
    assert.match(no.out, /^deny\n/);
    assert.match(no.out, new RegExp(`hosts \\(http, ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} item 0\\)`));
  });

  test('network filters on L4 attributes; unsupported matchers are listed', () => {
    const r = run('--rbac', fx('tcp-allow-both-http-tcp-out.yaml'), '--method', 'GET', '--path', '/', '--dest-port', '80', '--source-principal', 'spiffe://cluster.local/ns/ns-1/sa/x', '--dest-ip', '10.0.0.5', '--source-ip', '10.1.1.1');
    assert.equal(r.code, 0);
    assert.match(r.out, /^allow\n  decided by: filter envoy\.filters\.network\.rbac, policy ns\[foo\]-policy\[httpbin-deny\]-rule\[3\]/);
    // a DENY rule on metadata fails closed and is named
    const meta = write(
      'meta.json',
      JSON.stringify({
        name: 'jwt',
        typed_config: {
          '@type': 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC',
          rules: { action: 'DENY', policies: { 'no-bad-issuer': { permissions: [{ any: true }], principals: [{ metadata: { filter: 'envoy.filters.http.jwt_authn', path: [{ key: 'payload' }, { key: 'iss' }], value: { string_match: { exact: 'bad' } } } }] } } },
        },
      }),
    );
    const m = run('--rbac', meta, '--method', 'GET', '--path', '/');
    assert.equal(m.code, 0);
    assert.match(m.out, /^deny\n/);
    assert.match(m.out, /unsupported matchers \(failed closed\):\n    - jwt: policy no-bad-issuer: metadata envoy\.filters\.http\.jwt_authn payload\.iss/);
    assert.match(m.out, /config warnings:\n  - .*meta\.json: filter jwt, policy "no-bad-issuer": rules\.policies\["no-bad-issuer"\]\.principals\[0\]\.metadata: /);
  });

  test('our path-forms fixture: one file, many filters, each must pass', () => {
    const r = run('--rbac', path.join(OURS, 'http-path-forms-out.yaml'), '--method', 'GET', '--path', '/exact', '--json');
    assert.equal(r.code, 0);
    // "/exact" passes exact, any and paths-and-not-paths but not prefix: denied by the prefix filter
    assert.deepEqual(JSON.parse(r.out).filter, 'prefix');
  });

  test('exit 1: unreadable, unparsable, wrongly shaped or invalid RBAC files (naming file and problem)', () => {
    const missing = run('--rbac', path.join(tmp, 'nope.yaml'), '--method', 'GET', '--path', '/');
    assert.equal(missing.code, 1);
    assert.match(missing.err, /nope\.yaml: cannot read/);
    const garbage = run('--rbac', write('bad.yaml', 'a: [1\n'), '--method', 'GET', '--path', '/');
    assert.equal(garbage.code, 1);
    assert.match(garbage.err, /bad\.yaml: not valid JSON or YAML: line \d+, column \d+/);
    const shape = run('--rbac', write('shape.yaml', '- 1\n'), '--method', 'GET', '--path', '/');
    assert.equal(shape.code, 1);
    assert.match(shape.err, /shape\.yaml: item 0: expected an RBAC filter/);
    const regex = write('regex.yaml', `name: r\ntypedConfig:\n  '@type': type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC\n  rules:\n    policies:\n      p:\n        permissions: [{urlPath: {path: {safeRegex: {regex: '(a'}}}}]\n        principals: [{any: true}]\n`);
    const bad = run('--rbac', fx('http-allow-empty-rule-out.yaml'), '--rbac', regex, '--method', 'GET', '--path', '/');
    assert.equal(bad.code, 1);
    assert.equal(bad.out, '');
    assert.match(bad.err, /SM_RBAC_INVALID: .*regex\.yaml: filter r, policy "p": rules\.policies\["p"\]\.permissions\[0\]\.urlPath\.path\.safeRegex\.regex: invalid RE2 regex "\(a"/);
    const action = run('--rbac', write('action.yaml', `name: r\ntypedConfig: {rules: {action: PERMIT}}\n`), '--method', 'GET', '--path', '/');
    assert.equal(action.code, 1);
    assert.match(action.err, /rules\.action: unknown action/);
  });

  test('exit 2: usage errors', () => {
    const f = fx('http-allow-empty-rule-out.yaml');
    for (const args of [
      [],
      ['--method', 'GET', '--path', '/'],
      ['--rbac', f, '--path', '/'],
      ['--rbac', f, '--method', 'GET'],
      ['--rbac', f, '--method', 'GET', '--path', '/', '--bogus'],
      ['--rbac', f, '--method', 'GET', '--path', '/', 'extra'],
      ['--rbac', f, '--method', 'GET', '--path', '/', '--dest-port', '70000'],
      ['--rbac', f, '--method', 'GET', '--path', '/', '--source-ip', '10.0.0.300'],
      ['--rbac', f, '--method', 'GET', '--path', '/', '--header', 'novalue'],
      ['--rbac', f, '--method', 'GET', '--path', '/', '--source-principal', ''],
    ]) {
      const r = run(...args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.err}`);
      assert.match(r.err, /usage: sockmesh authz check/);
    }
    const help = run('--help');
    assert.equal(help.code, 0);
    assert.match(help.out, /^usage: sockmesh authz check --rbac FILE/);
  });
});
