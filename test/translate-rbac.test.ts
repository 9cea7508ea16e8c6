// Envoy RBAC filters → L4 (kernel) / L7 (proxy): every `*-out*.yaml` of
// test/fixtures/istio/authz-rbac (what istiod generates from the `*-in.yaml` policies).
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { parse } from 'yaml';
import type { L4Expr } from '../core/model';
import { NEVER, renderExpr, simplify } from '../xds/translate/expr';
import { classifyRbacFilter, policyName, regexToExpr, splitRbacFilters } from '../xds/translate/rbac';
import { istioFixture } from './fixture-dir';

const DIR = istioFixture('authz-rbac');
const filter = (f: string): any => parse(fs.readFileSync(path.join(DIR, f), 'utf8'));
const DEST = { ip: '10.96.0.20', port: 8000, service: 'foo/httpbin' };
const SCOPE = { kind: 'destinations', destinations: [{ ip: '10.96.0.20', port: 8000 }] };

const p = (exact: string): L4Expr => ({ principal: { exact } });
const ns = (m: any): L4Expr => ({ namespace: m });
const src = (address: string, prefixLen: number): L4Expr => ({ sourceIp: { address, prefixLen } });

describe('authz-rbac fixtures', () => {
  test('every *-out*.yaml is covered by a case below', () => {
    const outs = fs.readdirSync(DIR).filter((f) => /-out\d*\.yaml$/.test(f)).sort();
    assert.deepEqual(outs, [
      'http-allow-empty-rule-out.yaml',
      'http-allow-nil-rule-out.yaml',
      'http-allow-path-out.yaml',
      'http-deny-and-allow-out1.yaml',
      'http-deny-and-allow-out2.yaml',
      'http-deny-empty-rule-out.yaml',
      'http-dry-run-allow-and-deny-out1.yaml',
      'http-dry-run-allow-and-deny-out2.yaml',
      'http-dry-run-mix-out.yaml',
      'http-single-policy-out.yaml',
      'http-trust-domains-out.yaml',
      'tcp-allow-both-http-tcp-out.yaml',
      'tcp-allow-only-http-out.yaml',
      'tcp-deny-both-http-tcp-out.yaml',
    ]);
  });

  const l4Cases: Array<[string, Array<{ name: string; action: string; dryRun: boolean; when: L4Expr }>, string]> = [
    // allow-all: `rules: [{}]` → permissions and(any), principals and(any).
    ['http-allow-empty-rule-out.yaml', [{ name: 'foo/allow-all/rule[0]', action: 'ALLOW', dryRun: false, when: { any: true } }], 'envoy.filters.http.rbac'],
    // `rules: []`-ish "allow nothing" written as not(any): an ALLOW that matches nothing.
    ['http-allow-nil-rule-out.yaml', [{ name: 'foo/allow-none/rule[0]', action: 'ALLOW', dryRun: false, when: NEVER }], 'envoy.filters.http.rbac'],
    ['http-deny-and-allow-out1.yaml', [{ name: 'foo/httpbin-deny/rule[0]', action: 'DENY', dryRun: false, when: p('spiffe://deny') }], 'envoy.filters.http.rbac'],
    ['http-deny-and-allow-out2.yaml', [{ name: 'foo/httpbin-allow/rule[0]', action: 'ALLOW', dryRun: false, when: p('spiffe://allow') }], 'envoy.filters.http.rbac'],
    ['http-deny-empty-rule-out.yaml', [{ name: 'foo/deny-all/rule[0]', action: 'DENY', dryRun: false, when: { any: true } }], 'envoy.filters.http.rbac'],
    // Only rule[3] (namespaces + ports) survives istiod's TCP filtering; `.*/ns/ns-1/.*` is namespace = ns-1.
    [
      'tcp-allow-both-http-tcp-out.yaml',
      [{ name: 'foo/httpbin-deny/rule[3]', action: 'ALLOW', dryRun: false, when: { and: [{ destinationPort: 80 }, ns({ exact: 'ns-1' })] } }],
      'envoy.filters.network.rbac',
    ],
    // `rules: {}`: an ALLOW engine with no policies denies everything.
    ['tcp-allow-only-http-out.yaml', [{ name: '(no policies)', action: 'ALLOW', dryRun: false, when: NEVER }], 'envoy.filters.network.rbac'],
  ];
  for (const [file, want, origin] of l4Cases) {
    test(`${file} → L4 only`, () => {
      const f = filter(file);
      const r = splitRbacFilters(DEST, [f]);
      assert.equal(r.rejected, undefined);
      assert.deepEqual(r.l7, []);
      assert.deepEqual(r.warnings, []);
      assert.deepEqual(
        r.l4,
        want.map((x) => ({ ...x, scope: SCOPE, origin })),
      );
    });
  }

  const l7Cases: Array<[string, RegExp]> = [
    ['http-allow-path-out.yaml', /urlPath/],
    ['http-dry-run-allow-and-deny-out1.yaml', /^shadowRules\..*urlPath/],
    ['http-dry-run-allow-and-deny-out2.yaml', /^shadowRules\..*urlPath/],
    ['http-dry-run-mix-out.yaml', /^rules\..*urlPath/],
    ['http-single-policy-out.yaml', /header/],
    ['http-trust-domains-out.yaml', /safeRegex \("spiffe:\/\/bad\[\^\/\]\*\/\.\*"\)/],
    // rule[10] uses connection.sni (requested_server_name) and an experimental metadata key.
    ['tcp-deny-both-http-tcp-out.yaml', /requestedServerName/],
  ];
  for (const [file, why] of l7Cases) {
    test(`${file} → L7, the filter kept whole`, () => {
      const f = filter(file);
      const r = splitRbacFilters(DEST, [f]);
      assert.deepEqual(r.l4, []);
      assert.deepEqual(r.l7, [{ destination: { ip: '10.96.0.20', port: 8000, service: 'foo/httpbin' }, filters: [{ name: f.name, config: f.typedConfig }] }]);
      const c = classifyRbacFilter(f);
      assert.equal(c.kind, 'l7');
      assert.match((c as { reason: string }).reason, why);
    });
  }

  test('tcp-deny-both-http-tcp without rule[10] is fully L4: each rule as a DENY with its tree', () => {
    const f = filter('tcp-deny-both-http-tcp-out.yaml');
    delete f.typedConfig.rules.policies['ns[foo]-policy[httpbin-deny]-rule[10]'];
    const r = splitRbacFilters(DEST, [f]);
    assert.deepEqual(r.l7, []);
    const ns1 = ns({ exact: 'ns-1' });
    assert.deepEqual(
      r.l4.map((x) => [x.name, x.action, x.when]),
      [
        ['foo/httpbin-deny/rule[0]', 'DENY', { any: true }],
        ['foo/httpbin-deny/rule[1]', 'DENY', { any: true }],
        ['foo/httpbin-deny/rule[2]', 'DENY', { any: true }],
        ['foo/httpbin-deny/rule[3]', 'DENY', ns1],
        ['foo/httpbin-deny/rule[4]', 'DENY', { destinationPort: 80 }],
        ['foo/httpbin-deny/rule[5]', 'DENY', { destinationPort: 8080 }],
        ['foo/httpbin-deny/rule[6]', 'DENY', { and: [{ destinationPort: 8080 }, ns({ exact: 'ns-2' })] }],
        ['foo/httpbin-deny/rule[7]', 'DENY', { and: [{ destinationPort: 80 }, ns1] }],
        ['foo/httpbin-deny/rule[8]', 'DENY', { any: true }],
        ['foo/httpbin-deny/rule[9]', 'DENY', { destinationPort: 80 }],
      ],
    );
    assert.ok(r.l4.every((x) => x.origin === 'envoy.filters.network.rbac' && !x.dryRun));
  });

  test('rule[10] without its SNI/metadata permissions: the full principal tree, not_ twins, IP blocks', () => {
    const f = filter('tcp-deny-both-http-tcp-out.yaml');
    const pol = f.typedConfig.rules.policies['ns[foo]-policy[httpbin-deny]-rule[10]'];
    const rules = pol.permissions[0].andRules.rules;
    pol.permissions[0].andRules.rules = rules.filter((x: any) => !JSON.stringify(x).includes('requestedServerName') && !JSON.stringify(x).includes('metadata'));
    f.typedConfig.rules.policies = { 'ns[foo]-policy[httpbin-deny]-rule[10]': pol };
    const r = splitRbacFilters(DEST, [f]);
    assert.deepEqual(r.l7, []);
    const when = r.l4[0].when as { and: L4Expr[] };
    // permissions: port 80, not port 8000, dst 10.10.10.10, not dst 90.10.10.10, port 91, not 9001
    assert.deepEqual(when.and.slice(0, 6), [
      { destinationPort: 80 },
      { not: { destinationPort: 8000 } },
      { destinationIp: { address: '10.10.10.10', prefixLen: 32 } },
      { not: { destinationIp: { address: '90.10.10.10', prefixLen: 32 } } },
      { destinationPort: 91 },
      { not: { destinationPort: 9001 } },
    ]);
    const principals = { or: [p('spiffe://principal'), { principal: { suffix: 'principal-suffix' } }, { principal: { prefix: 'spiffe://principal-prefix' } }, { principal: { presence: true } }] };
    const notPrincipals = {
      not: { or: [p('spiffe://not-principal'), { principal: { suffix: 'not-principal-suffix' } }, { principal: { prefix: 'spiffe://not-principal-prefix' } }, { principal: { presence: true } }] },
    };
    const namespaces = { or: [ns({ exact: 'ns' }), ns({ suffix: 'ns-suffix' }), ns({ prefix: 'ns-prefix' }), ns({ presence: true })] };
    const notNamespaces = { not: { or: [ns({ exact: 'not-ns' }), ns({ suffix: 'not-ns-suffix' }), ns({ prefix: 'not-ns-prefix' }), ns({ presence: true })] } };
    assert.deepEqual(when.and.slice(6, 10), [principals, notPrincipals, namespaces, notNamespaces]);
    // Network RBAC: remote_ip and direct_remote_ip are both the peer address.
    assert.deepEqual(when.and.slice(10, 18), [
      src('172.18.4.0', 22),
      { not: src('192.168.244.139', 32) },
      src('1.2.3.4', 32),
      { not: src('9.0.0.1', 32) },
      src('10.10.10.10', 32),
      { not: src('90.10.10.10', 32) },
      src('192.168.3.3', 32),
      { not: src('172.19.31.3', 32) },
    ]);
    // The `when` copies of source.namespace/source.principal are identical subtrees: deduplicated.
    assert.equal(when.and.length, 18);
  });

  test('two filters on one chain (deny-and-allow out1 + out2) → a DENY and an ALLOW for the destination', () => {
    const r = splitRbacFilters(DEST, [filter('http-deny-and-allow-out1.yaml'), filter('http-deny-and-allow-out2.yaml')]);
    assert.deepEqual(
      r.l4.map((x) => [x.name, x.action, renderExpr(x.when)]),
      [
        ['foo/httpbin-deny/rule[0]', 'DENY', 'principal = "spiffe://deny"'],
        ['foo/httpbin-allow/rule[0]', 'ALLOW', 'principal = "spiffe://allow"'],
      ],
    );
  });

  test('dry-run allow-and-deny (out1 + out2) → one L7 policy holding both filters in chain order', () => {
    const a = filter('http-dry-run-allow-and-deny-out1.yaml');
    const b = filter('http-dry-run-allow-and-deny-out2.yaml');
    const r = splitRbacFilters([DEST, { port: 9000 }], [a, { name: 'envoy.filters.http.router', typedConfig: {} }, b]);
    assert.deepEqual(r.l4, []);
    assert.deepEqual(r.l7, [
      { destination: { ip: '10.96.0.20', port: 8000, service: 'foo/httpbin' }, filters: [{ name: a.name, config: a.typedConfig }, { name: b.name, config: b.typedConfig }] },
      { destination: { port: 9000 }, filters: [{ name: a.name, config: a.typedConfig }, { name: b.name, config: b.typedConfig }] },
    ]);
  });

  test('an L4-decidable dry-run filter → dryRun policies with the shadow action', () => {
    const f = filter('http-deny-and-allow-out1.yaml');
    f.typedConfig.shadowRules = f.typedConfig.rules;
    delete f.typedConfig.rules;
    const r = splitRbacFilters(DEST, [f]);
    assert.deepEqual(
      r.l4.map((x) => [x.name, x.action, x.dryRun]),
      [['foo/httpbin-deny/rule[0]', 'DENY', true]],
    );
  });
});

describe('RBAC semantics beyond the fixtures', () => {
  const allow = (principal: string) => ({
    name: 'envoy.filters.network.rbac',
    typedConfig: {
      '@type': 'type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC',
      rules: { policies: { [`allow-${principal}`]: { permissions: [{ any: true }], principals: [{ authenticated: { principalName: { exact: principal } } }] } } },
    },
  });

  test('two enforcing ALLOW filters must both pass: combined into one ALLOW (AND of their ORs)', () => {
    const r = splitRbacFilters({ port: 80 }, [allow('spiffe://a'), allow('spiffe://b')]);
    assert.deepEqual(r.l4.length, 1);
    assert.equal(r.l4[0].action, 'ALLOW');
    assert.deepEqual(r.l4[0].when, { and: [p('spiffe://a'), p('spiffe://b')] });
    assert.match(r.warnings[0].reason, /2 ALLOW filters in one chain must each pass/);
  });

  test('remote_ip: the peer for network RBAC; from X-Forwarded-For for HTTP unless use_remote_address', () => {
    const mk = (name: string, type: string) => ({
      name,
      typedConfig: { '@type': type, rules: { policies: { x: { permissions: [{ any: true }], principals: [{ remoteIp: { addressPrefix: '10.0.0.0', prefixLen: 8 } }] } } } },
    });
    const net = mk('envoy.filters.network.rbac', 'type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC');
    const http = mk('envoy.filters.http.rbac', 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC');
    assert.deepEqual(splitRbacFilters({ port: 80 }, [net]).l4[0].when, src('10.0.0.0', 8));
    assert.equal(splitRbacFilters({ port: 80 }, [http]).l7.length, 1);
    assert.match((classifyRbacFilter(http) as any).reason, /remoteIp \(taken from X-Forwarded-For\)/);
    assert.deepEqual(splitRbacFilters({ port: 80 }, [http], { remoteIpIsPeer: true }).l4[0].when, src('10.0.0.0', 8));
    assert.equal(splitRbacFilters({ port: 80 }, [net], { proxyProtocol: true }).l7.length, 1);
  });

  test('rules absent: nothing enforced; per-route overrides and CEL conditions → L7; ignore_case → L7', () => {
    assert.deepEqual(splitRbacFilters({ port: 80 }, [{ name: 'envoy.filters.http.rbac', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC' } }]), {
      l4: [],
      l7: [],
      warnings: [],
    });
    const f = filter('http-deny-and-allow-out1.yaml');
    assert.equal(splitRbacFilters({ port: 80 }, [f], { perRouteOverride: true }).l7.length, 1);
    const cel = filter('http-deny-and-allow-out1.yaml');
    cel.typedConfig.rules.policies['ns[foo]-policy[httpbin-deny]-rule[0]'].condition = { constExpr: { boolValue: true } };
    assert.equal(splitRbacFilters({ port: 80 }, [cel]).l7.length, 1);
    const ic = filter('http-deny-and-allow-out1.yaml');
    ic.typedConfig.rules.policies['ns[foo]-policy[httpbin-deny]-rule[0]'].principals[0].andIds.ids[0].orIds.ids[0].authenticated.principalName.ignoreCase = true;
    assert.equal(splitRbacFilters({ port: 80 }, [ic]).l7.length, 1);
  });

  test('an invalid filter rejects the whole set (as Envoy rejects the listener), naming the field', () => {
    const f = filter('tcp-allow-both-http-tcp-out.yaml');
    f.typedConfig.rules.policies['ns[foo]-policy[httpbin-deny]-rule[3]'].permissions[0].andRules.rules[0].orRules.rules[0].destinationPort = 70000;
    const r = splitRbacFilters({ port: 80 }, [f]);
    assert.deepEqual([r.l4, r.l7], [[], []]);
    assert.match(r.rejected!, /permissions\[0\]\.andRules\.rules\[0\]\.orRules\.rules\[0\]\.destinationPort: 70000 is out of range \(0\.\.65535\)/);
  });

  test('non-RBAC filters are ignored; garbage in the list never throws', () => {
    const r = splitRbacFilters({ port: 80 }, [null as any, 42 as any, { name: 'envoy.filters.http.router', typedConfig: {} }, filter('http-deny-empty-rule-out.yaml')]);
    assert.equal(r.l4.length, 1);
    assert.doesNotThrow(() => splitRbacFilters(undefined as any, undefined as any));
  });

  test('istiod regex shapes', () => {
    assert.deepEqual(regexToExpr('.*/ns/rule\\[0\\]-from\\[0\\]-ns\\[1\\]/.*'), ns({ exact: 'rule[0]-from[0]-ns[1]' }));
    assert.deepEqual(regexToExpr('.*/ns/.*-suffix/.*'), ns({ suffix: '-suffix' }));
    assert.deepEqual(regexToExpr('.*/ns/pre-.*/.*'), ns({ prefix: 'pre-' }));
    assert.deepEqual(regexToExpr('.*/ns/.*/.*'), ns({ presence: true }));
    assert.deepEqual(regexToExpr('spiffe://.*-suffix'), { principal: { suffix: '-suffix' } });
    assert.deepEqual(regexToExpr('spiffe://td/ns/x/.*'), { principal: { prefix: 'spiffe://td/ns/x/' } });
    assert.deepEqual(regexToExpr('.+'), { principal: { presence: true } });
    for (const bad of ['spiffe://bad[^/]*/.*', '.*/ns/a|b/.*', 'foo\\d+', '.*/ns/a/b/.*', '^x$']) assert.equal(regexToExpr(bad), undefined, bad);
  });

  test('policy names: istiod keys → namespace/name/rule[N]; others verbatim', () => {
    assert.equal(policyName('ns[foo]-policy[httpbin-deny]-rule[10]'), 'foo/httpbin-deny/rule[10]');
    assert.equal(policyName('my policy'), 'my policy');
  });

  test('simplify keeps meaning: flattening, neutral/absorbing elements, duplicates, double negation', () => {
    const a: L4Expr = { destinationPort: 1 };
    const b: L4Expr = { destinationPort: 2 };
    assert.deepEqual(simplify({ and: [{ and: [a, { any: true }] }, b, a] }), { and: [a, b] });
    assert.deepEqual(simplify({ or: [NEVER, { or: [a] }] }), a);
    assert.deepEqual(simplify({ or: [a, { any: true }] }), { any: true });
    assert.deepEqual(simplify({ and: [a, NEVER] }), NEVER);
    assert.deepEqual(simplify({ not: { not: a } }), a);
    assert.deepEqual(simplify({ not: NEVER }), { any: true });
    assert.deepEqual(simplify({ or: [] }), NEVER);
    assert.deepEqual(simplify({ and: [] }), { any: true });
  });
});
