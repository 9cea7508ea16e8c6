// Istio's own RBAC output (test/fixtures/istio/authz-rbac/*-out*.yaml, copied from
// istio/istio) compiled and evaluated. Every expectation below is derived from the matching
// *-in.yaml AuthorizationPolicy and Istio's documented semantics (quoted in the comments), not from
// running the evaluator. A new *-out*.yaml without expectations here fails the last test.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { parse } from 'yaml';
import { compileRbacFilters } from '../proxy/rbac';
import type { Decision, DryRunResult, RbacFilterConfig, RequestAttributes } from '../proxy/types';
import { findDir, istioFixture } from './fixture-dir';

const ISTIO = istioFixture('authz-rbac');
const OURS = findDir('test/fixtures/rbac');

function load(file: string, dir = ISTIO): RbacFilterConfig[] {
  const doc = parse(fs.readFileSync(path.join(dir, file), 'utf8'));
  return (Array.isArray(doc) ? doc : [doc]).map((d: { name: string; typedConfig: Record<string, unknown> }) => ({ name: d.name, config: d.typedConfig }));
}

function req(o: Partial<RequestAttributes> = {}): RequestAttributes {
  return {
    method: 'GET',
    path: '/',
    headers: {},
    sourceIp: '10.0.0.9',
    sourcePort: 40000,
    directRemoteIp: '10.0.0.9',
    remoteIp: '10.0.0.9',
    destinationIp: '10.0.0.5',
    destinationPort: 80,
    ...o,
  };
}

interface Expect {
  allow: boolean;
  filter?: string;
  policy?: string;
  dryRun?: DryRunResult[];
}
function check(d: Decision, want: Expect, what: string): void {
  assert.equal(d.allow, want.allow, `${what}: allow (${d.reason})`);
  if ('filter' in want) assert.equal(d.filter, want.filter, `${what}: filter`);
  if ('policy' in want) assert.equal(d.policy, want.policy, `${what}: policy`);
  if (want.dryRun) assert.deepEqual(d.dryRun, want.dryRun, `${what}: dryRun`);
}

const covered = new Set<string>();
const H = 'envoy.filters.http.rbac';
const spiffe = (td: string, ns: string, sa = 'default') => `spiffe://${td}/ns/${ns}/sa/${sa}`;

describe('Istio RBAC fixtures', () => {
  test('http-allow-empty-rule: ALLOW with `rules: [{}]` allows everything', () => {
    covered.add('http-allow-empty-rule-out.yaml');
    const ev = compileRbacFilters(load('http-allow-empty-rule-out.yaml'));
    for (const r of [req(), req({ method: 'DELETE', path: '/admin', principal: spiffe('cluster.local', 'x') }), req({ destinationPort: 1 })]) {
      check(ev.evaluate(r), { allow: true, filter: H, policy: 'ns[foo]-policy[allow-all]-rule[0]' }, `${r.method} ${r.path}`);
    }
  });

  test('http-allow-nil-rule: an ALLOW policy without rules allows nothing', () => {
    covered.add('http-allow-nil-rule-out.yaml');
    const ev = compileRbacFilters(load('http-allow-nil-rule-out.yaml'));
    for (const r of [req(), req({ principal: spiffe('cluster.local', 'foo') }), req({ method: 'POST', path: '/x' })]) {
      check(ev.evaluate(r), { allow: false, filter: H, policy: undefined }, `${r.method} ${r.path}`);
    }
  });

  test('http-deny-empty-rule: DENY with `rules: [{}]` denies everything', () => {
    covered.add('http-deny-empty-rule-out.yaml');
    const ev = compileRbacFilters(load('http-deny-empty-rule-out.yaml'));
    check(ev.evaluate(req()), { allow: false, policy: 'ns[foo]-policy[deny-all]-rule[0]' }, 'GET /');
    check(ev.evaluate(req({ principal: spiffe('cluster.local', 'foo'), path: '/x' })), { allow: false, policy: 'ns[foo]-policy[deny-all]-rule[0]' }, 'GET /x');
  });

  test('http-deny-and-allow: DENY before ALLOW; the ALLOW policy applies, so anything it does not match is denied', () => {
    covered.add('http-deny-and-allow-out1.yaml');
    covered.add('http-deny-and-allow-out2.yaml');
    // istiod emits the DENY filter first ("CUSTOM, then DENY, then ALLOW")
    const ev = compileRbacFilters([...load('http-deny-and-allow-out1.yaml'), ...load('http-deny-and-allow-out2.yaml')]);
    check(ev.evaluate(req({ principal: 'spiffe://deny' })), { allow: false, filter: `${H}#0`, policy: 'ns[foo]-policy[httpbin-deny]-rule[0]' }, 'principal deny');
    check(ev.evaluate(req({ principal: 'spiffe://allow' })), { allow: true, filter: `${H}#1`, policy: 'ns[foo]-policy[httpbin-allow]-rule[0]' }, 'principal allow');
    check(ev.evaluate(req({ principal: 'spiffe://someone-else' })), { allow: false, filter: `${H}#1`, policy: undefined }, 'other principal');
    check(ev.evaluate(req()), { allow: false, filter: `${H}#1`, policy: undefined }, 'no principal (plaintext)');
    // principals: ["deny"] is the exact identity spiffe://deny, not a prefix
    check(ev.evaluate(req({ principal: 'spiffe://deny/ns/a/sa/b' })), { allow: false, filter: `${H}#1` }, 'spiffe://deny/...');
  });

  test('http-dry-run-allow-and-deny: both policies dry-run — nothing enforced, both reported', () => {
    covered.add('http-dry-run-allow-and-deny-out1.yaml');
    covered.add('http-dry-run-allow-and-deny-out2.yaml');
    const ev = compileRbacFilters([...load('http-dry-run-allow-and-deny-out1.yaml'), ...load('http-dry-run-allow-and-deny-out2.yaml')]);
    check(ev.evaluate(req({ path: '/deny' })), {
      allow: true,
      policy: undefined,
      dryRun: [
        { filter: `${H}#0`, policy: 'ns[foo]-policy[httpbin-2]-rule[0]', action: 'DENY', wouldAllow: false },
        { filter: `${H}#1`, action: 'ALLOW', wouldAllow: false },
      ],
    }, '/deny');
    check(ev.evaluate(req({ path: '/allow' })), {
      allow: true,
      dryRun: [
        { filter: `${H}#0`, action: 'DENY', wouldAllow: true },
        { filter: `${H}#1`, policy: 'ns[foo]-policy[httpbin-1]-rule[0]', action: 'ALLOW', wouldAllow: true },
      ],
    }, '/allow');
    check(ev.evaluate(req({ path: '/other' })), {
      allow: true,
      dryRun: [
        { filter: `${H}#0`, action: 'DENY', wouldAllow: true },
        { filter: `${H}#1`, action: 'ALLOW', wouldAllow: false },
      ],
    }, '/other');
  });

  test('http-dry-run-mix: the enforced ALLOW decides, the dry-run ALLOW is only reported', () => {
    covered.add('http-dry-run-mix-out.yaml');
    const ev = compileRbacFilters(load('http-dry-run-mix-out.yaml'));
    check(ev.evaluate(req({ path: '/another' })), { allow: true, policy: 'ns[foo]-policy[httpbin-2]-rule[0]', dryRun: [{ filter: H, action: 'ALLOW', wouldAllow: false }] }, '/another');
    // /allow is only allowed by the dry-run policy: denied, and the dry run says it would pass
    check(ev.evaluate(req({ path: '/allow' })), { allow: false, policy: undefined, dryRun: [{ filter: H, policy: 'ns[foo]-policy[httpbin-1]-rule[0]', action: 'ALLOW', wouldAllow: true }] }, '/allow');
    check(ev.evaluate(req({ path: '/allow?x=1' })), { allow: false, dryRun: [{ filter: H, policy: 'ns[foo]-policy[httpbin-1]-rule[0]', action: 'ALLOW', wouldAllow: true }] }, '/allow?x=1');
    check(ev.evaluate(req({ path: '/x' })), { allow: false, dryRun: [{ filter: H, action: 'ALLOW', wouldAllow: false }] }, '/x');
  });

  test('http-trust-domains: trustDomains in one source, notTrustDomains in another (sources are ORed)', () => {
    covered.add('http-trust-domains-out.yaml');
    const ev = compileRbacFilters(load('http-trust-domains-out.yaml'));
    const P = 'ns[foo]-policy[httpbin]-rule[0]';
    check(ev.evaluate(req({ principal: spiffe('cluster.local', 'foo') })), { allow: true, policy: P }, 'cluster.local');
    check(ev.evaluate(req({ principal: spiffe('another.local', 'bar') })), { allow: true, policy: P }, 'another.local');
    // not in the listed trust domains, and not in the excluded ones: the second source matches
    check(ev.evaluate(req({ principal: spiffe('other.local', 'bar') })), { allow: true, policy: P }, 'other.local');
    // "bad*" excludes every trust domain starting with "bad"; "untrusted" exactly that one
    check(ev.evaluate(req({ principal: spiffe('bad.local', 'foo') })), { allow: false }, 'bad.local');
    check(ev.evaluate(req({ principal: spiffe('badly', 'foo') })), { allow: false }, 'badly');
    check(ev.evaluate(req({ principal: spiffe('untrusted', 'foo') })), { allow: false }, 'untrusted');
    check(ev.evaluate(req({ principal: spiffe('untrusted.local', 'foo') })), { allow: true }, 'untrusted.local');
    // A plaintext client has no trust domain, so it is "not in" the excluded ones: the
    // notTrustDomains source (not_id over authenticated) matches it.
    check(ev.evaluate(req()), { allow: true, policy: P }, 'plaintext');
  });

  test('http-allow-path: paths and notPaths both contain "*", so no request passes', () => {
    covered.add('http-allow-path-out.yaml');
    const ev = compileRbacFilters(load('http-allow-path-out.yaml'));
    for (const p of ['/exact', '/prefix/a', '/a/suffix', '/path/template/x', '/a/path/template', '/anything', '/not-exact']) {
      check(ev.evaluate(req({ path: p })), { allow: false, policy: undefined }, p);
    }
  });

  test('path forms, one per filter (test/fixtures/rbac/http-path-forms-out.yaml, matchers copied from http-allow-path-out.yaml)', () => {
    const byName = new Map(load('http-path-forms-out.yaml', OURS).map((f) => [f.name, compileRbacFilters([f])]));
    const rows: Array<[string, string, boolean]> = [
      // "/exact": exact path, query ignored
      ['exact', '/exact', true],
      ['exact', '/exact?a=1', true],
      ['exact', '/exact/', false],
      ['exact', '/Exact', false],
      // "/prefix/*": prefix "/prefix/"
      ['prefix', '/prefix/', true],
      ['prefix', '/prefix/a/b', true],
      ['prefix', '/prefix', false],
      ['prefix', '/prefixes/a', false],
      // "*/suffix": suffix "/suffix"
      ['suffix', '/a/b/suffix', true],
      ['suffix', '/suffix', true],
      ['suffix', '/asuffix', false],
      ['suffix', '/suffix?x=/suffix', true],
      // "*": any non-empty path
      ['any', '/', true],
      ['any', '/a/b?c', true],
      // "/path/template/{*}": exactly one more segment
      ['template-one', '/path/template/x', true],
      ['template-one', '/path/template/x?y=1', true],
      ['template-one', '/path/template/x/y', false],
      ['template-one', '/path/template/', false],
      ['template-one', '/path/template', false],
      // "/{**}/path/template": any segments before, at least the "/" on each side (Envoy's regex)
      ['template-any', '/a/path/template', true],
      ['template-any', '/a/b/c/path/template', true],
      ['template-any', '//path/template', true],
      ['template-any', '/path/template', false],
      ['template-any', '/a/path/template/x', false],
      // paths minus notPaths
      ['paths-and-not-paths', '/exact', true],
      ['paths-and-not-paths', '/prefix/ok', true],
      ['paths-and-not-paths', '/prefix/x/not-suffix', false],
      ['paths-and-not-paths', '/prefix/a/not-path/template', false],
      ['paths-and-not-paths', '/prefix/not-prefix/x', true], // notPaths "/not-prefix/*" excludes paths that START with it
      ['paths-and-not-paths', '/not-exact', false],
      ['paths-and-not-paths', '/elsewhere', false],
    ];
    for (const [form, p, want] of rows) {
      const d = byName.get(form)!.evaluate(req({ path: p }));
      assert.equal(d.allow, want, `${form} on ${p}: ${d.reason}`);
    }
  });

  test('http-single-policy: every source requires a request principal (JWT), which sockmesh cannot see', () => {
    covered.add('http-single-policy-out.yaml');
    const ev = compileRbacFilters(load('http-single-policy-out.yaml'));
    // the JWT claims are dynamic metadata: a warning at compile time for each such matcher
    assert.equal(ev.warnings.filter((w) => /metadata envoy\.filters\.http\.jwt_authn/.test(w.message)).length, 16);
    // Everything the request can satisfy for rule[0]'s to[0]/from[0] — but a source listing both
    // principals and namespaces needs both, and "rule[0]-from[0]-principal[1]" has no namespace,
    // so the policy cannot match whatever the JWT says: a plain deny, no unsupported matcher
    // involved.
    const r = req({
      method: 'rule[0]-to[0]-method[1]',
      path: 'rule[0]-to[0]-path[1]',
      headers: { ':authority': 'RULE[0]-TO[0]-HOST[1]', 'x-header': 'header' },
      destinationIp: '10.10.10.10',
      destinationPort: 9001,
      principal: 'spiffe://rule[0]-from[0]-principal[1]',
      directRemoteIp: '10.0.0.1',
      remoteIp: '10.99.10.8',
    });
    const d = ev.evaluate(r);
    check(d, { allow: false, policy: undefined }, 'rule[0] shaped request');
    assert.deepEqual(d.unsupported, []);
    check(ev.evaluate(req()), { allow: false }, 'GET /');
  });

  test('tcp-allow-both-http-tcp: only the rule with no HTTP-only field survives in the network filter (ALLOW: stricter)', () => {
    covered.add('tcp-allow-both-http-tcp-out.yaml');
    const ev = compileRbacFilters(load('tcp-allow-both-http-tcp-out.yaml'));
    assert.equal(ev.filters[0].kind, 'network');
    const N = 'envoy.filters.network.rbac';
    // rule[3]: from namespaces ["ns-1"] to ports ["80"]
    check(ev.evaluate(req({ destinationPort: 80, principal: spiffe('cluster.local', 'ns-1') })), { allow: true, filter: N, policy: 'ns[foo]-policy[httpbin-deny]-rule[3]' }, 'ns-1 → 80');
    // the method is HTTP: invisible to the network filter, whatever it is
    check(ev.evaluate(req({ method: 'POST', destinationPort: 80, principal: spiffe('cluster.local', 'ns-1') })), { allow: true }, 'POST ns-1 → 80');
    // rule[1] (ns-1, port 8080, GET) and rule[2] (ns-2 with requestPrincipals, port 9090) carry HTTP fields: dropped
    check(ev.evaluate(req({ destinationPort: 8080, principal: spiffe('cluster.local', 'ns-1') })), { allow: false, filter: N, policy: undefined }, 'ns-1 → 8080');
    check(ev.evaluate(req({ destinationPort: 9090, principal: spiffe('cluster.local', 'ns-2') })), { allow: false }, 'ns-2 → 9090');
    check(ev.evaluate(req({ destinationPort: 80, principal: spiffe('cluster.local', 'ns-2') })), { allow: false }, 'ns-2 → 80');
    check(ev.evaluate(req({ destinationPort: 80 })), { allow: false }, 'plaintext → 80');
  });

  test('tcp-allow-only-http: every rule is HTTP-only, so the network filter allows nothing', () => {
    covered.add('tcp-allow-only-http-out.yaml');
    const ev = compileRbacFilters(load('tcp-allow-only-http-out.yaml'));
    check(ev.evaluate(req({ principal: spiffe('cluster.local', 'ns-1') })), { allow: false, filter: 'envoy.filters.network.rbac', policy: undefined }, 'ns-1');
    check(ev.evaluate(req({ headers: { ':authority': 'example.com' } })), { allow: false }, 'example.com');
  });

  test('tcp-deny-both-http-tcp: HTTP fields are removed from DENY rules (broader), so rule[0] denies every connection', () => {
    covered.add('tcp-deny-both-http-tcp-out.yaml');
    const filters = load('tcp-deny-both-http-tcp-out.yaml');
    const ev = compileRbacFilters(filters);
    // rule[10]'s `experimental.envoy.filters.a.b[c]` conditions are metadata: warned, fail closed
    assert.equal(ev.warnings.filter((w) => /metadata envoy\.filters\.a\.b/.test(w.message)).length, 2);
    for (const r of [req(), req({ destinationPort: 9999, principal: spiffe('cluster.local', 'x') })]) {
      check(ev.evaluate(r), { allow: false, filter: 'envoy.filters.network.rbac', policy: 'ns[foo]-policy[httpbin-deny]-rule[0]' }, `port ${r.destinationPort}`);
    }
    // The same filter without the rules that became "any" (0, 1, 2, 8) shows the others at work.
    const cfg = structuredClone(filters[0].config) as { rules: { policies: Record<string, unknown> } };
    for (const i of [0, 1, 2, 8]) delete cfg.rules.policies[`ns[foo]-policy[httpbin-deny]-rule[${i}]`];
    const rest = compileRbacFilters([{ name: filters[0].name, config: cfg }]);
    const P = (i: number) => `ns[foo]-policy[httpbin-deny]-rule[${i}]`;
    // rule[4]: to ports ["80"] (its requestPrincipals dropped). rule[10] needs port 80 and 91 at once: never.
    check(rest.evaluate(req({ destinationPort: 80, principal: spiffe('cluster.local', 'ns-2') })), { allow: false, policy: P(4) }, 'ns-2 → 80');
    // rule[5]: ports ["8080"]
    check(rest.evaluate(req({ destinationPort: 8080, principal: spiffe('cluster.local', 'ns-2') })), { allow: false, policy: P(5) }, 'ns-2 → 8080');
    // rule[3]: from namespaces ["ns-1"], any port; in byte order "rule[3]" comes before "rule[4]"
    check(rest.evaluate(req({ destinationPort: 9000, principal: spiffe('cluster.local', 'ns-1') })), { allow: false, policy: P(3) }, 'ns-1 → 9000');
    check(rest.evaluate(req({ destinationPort: 80, principal: spiffe('cluster.local', 'ns-1') })), { allow: false, policy: P(3) }, 'ns-1 → 80');
    check(rest.evaluate(req({ destinationPort: 9000, principal: spiffe('cluster.local', 'ns-3') })), { allow: true }, 'ns-3 → 9000');
    check(rest.evaluate(req({ destinationPort: 9000 })), { allow: true }, 'plaintext → 9000');
  });

  test('every *-out*.yaml fixture compiles and has expectations above', () => {
    const all = fs.readdirSync(ISTIO).filter((f) => /-out\d*\.yaml$/.test(f)).sort();
    assert.ok(all.length >= 14, `only ${all.length} fixtures found in ${ISTIO}`);
    for (const f of all) compileRbacFilters(load(f));
    assert.deepEqual(all.filter((f) => !covered.has(f)), []);
  });
});
