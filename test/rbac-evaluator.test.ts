// proxy/rbac: Envoy RBAC semantics case by case (matchers, actions, filter chains, fail-closed
// handling), compile-time validation (SM_RBAC_INVALID naming filter, policy and field path) and
// warnings. Expected values come from Envoy's documented behaviour, cited where it surprises.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compileRbacFilters, RbacConfigError } from '../proxy/rbac';
import type { Decision, RbacFilterConfig, RequestAttributes } from '../proxy/types';

type J = Record<string, unknown>;
const HTTP = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC';
const NETWORK = 'type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC';

function filter(config: J, name = 'envoy.filters.http.rbac'): RbacFilterConfig {
  return { name, config: { '@type': HTTP, ...config } };
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
    destinationPort: 8080,
    ...o,
  };
}
/** One ALLOW filter with one policy "p". */
function allowIf(permission: J, principal: J = { any: true }) {
  return compileRbacFilters([filter({ rules: { policies: { p: { permissions: [permission], principals: [principal] } } } })]);
}
const allowed = (permission: J, r: Partial<RequestAttributes>, principal?: J): boolean => allowIf(permission, principal).evaluate(req(r)).allow;

function invalid(filters: RbacFilterConfig[], pattern: RegExp): RbacConfigError {
  let err: unknown;
  try {
    compileRbacFilters(filters);
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof RbacConfigError, `expected SM_RBAC_INVALID, got ${String(err)}`);
  assert.equal(err.code, 'SM_RBAC_INVALID');
  assert.match(err.message, pattern);
  return err;
}

describe('HeaderMatcher (HeaderUtility::matchHeaders)', () => {
  const h = (m: J) => ({ header: { name: 'x-h', ...m } });
  test('absent header: only present_match decides, and invert_match flips that; other kinds never match', () => {
    const missing = { headers: {} };
    const rows: Array<[J, boolean]> = [
      [{ exactMatch: 'v' }, false],
      [{ exactMatch: 'v', invertMatch: true }, false], // NOT "true because v is absent"
      [{ prefixMatch: 'v', invertMatch: true }, false],
      [{ safeRegexMatch: { regex: '.*' }, invertMatch: true }, false],
      [{ stringMatch: { exact: 'v' }, invertMatch: true }, false],
      [{ rangeMatch: { start: '0', end: '9' }, invertMatch: true }, false],
      [{ presentMatch: true }, false],
      [{ presentMatch: true, invertMatch: true }, true],
      [{ presentMatch: false }, true],
      [{ presentMatch: false, invertMatch: true }, false],
      [{}, false], // no specifier: present_match true
      [{ invertMatch: true }, true],
    ];
    for (const [m, want] of rows) assert.equal(allowed(h(m), missing), want, JSON.stringify(m));
  });

  test('treat_missing_header_as_empty: the absent header is "" and the ordinary match (and inversion) applies', () => {
    const missing = { headers: {} };
    const t = { treatMissingHeaderAsEmpty: true };
    assert.equal(allowed(h({ ...t, stringMatch: { exact: '' } }), missing), true);
    assert.equal(allowed(h({ ...t, stringMatch: { exact: '' }, invertMatch: true }), missing), false);
    assert.equal(allowed(h({ ...t, exactMatch: 'v', invertMatch: true }), missing), true);
    assert.equal(allowed(h({ ...t, presentMatch: true }), missing), true); // Envoy: present_ is the result once a value exists
  });

  test('present header: match, then invert', () => {
    const v = { headers: { 'x-h': 'value' } };
    assert.equal(allowed(h({ exactMatch: 'value' }), v), true);
    assert.equal(allowed(h({ exactMatch: 'value', invertMatch: true }), v), false);
    assert.equal(allowed(h({ exactMatch: 'other', invertMatch: true }), v), true);
    assert.equal(allowed(h({ presentMatch: false }), v), false);
    assert.equal(allowed(h({ presentMatch: false, invertMatch: true }), v), true);
    assert.equal(allowed(h({ prefixMatch: 'val' }), v), true);
    assert.equal(allowed(h({ suffixMatch: 'lue' }), v), true);
    assert.equal(allowed(h({ containsMatch: 'alu' }), v), true);
    assert.equal(allowed(h({ safeRegexMatch: { regex: 'val' } }), v), false); // whole-value match
    assert.equal(allowed(h({ safeRegexMatch: { regex: 'v.*' } }), v), true);
  });

  test('exact_match "" matches any value (deprecated field), string_match.exact "" only the empty value', () => {
    assert.equal(allowed(h({ exactMatch: '' }), { headers: { 'x-h': 'anything' } }), true);
    assert.equal(allowed(h({ stringMatch: { exact: '' } }), { headers: { 'x-h': 'anything' } }), false);
    assert.equal(allowed(h({ stringMatch: { exact: '' } }), { headers: { 'x-h': '' } }), true);
  });

  test('range_match is [start, end) over absl::SimpleAtoi (whitespace, sign, 64 bits)', () => {
    const r = (v: string) => allowed(h({ rangeMatch: { start: '-5', end: '10' } }), { headers: { 'x-h': v } });
    assert.equal(r('9'), true);
    assert.equal(r('10'), false);
    assert.equal(r('-5'), true);
    assert.equal(r(' 7 '), true);
    assert.equal(r('+7'), true);
    assert.equal(r('7a'), false);
    assert.equal(r(''), false);
    assert.equal(r('99999999999999999999'), false);
    assert.equal(allowed(h({ rangeMatch: { start: '9223372036854775806', end: '9223372036854775807' } }), { headers: { 'x-h': '9223372036854775806' } }), true);
  });

  test('repeated headers arrive joined with ","; names are case-insensitive; :method and :path are matchable', () => {
    assert.equal(allowed(h({ exactMatch: 'a' }), { headers: { 'x-h': 'a,b' } }), false);
    assert.equal(allowed(h({ exactMatch: 'a,b' }), { headers: { 'x-h': 'a,b' } }), true);
    assert.equal(allowed({ header: { name: 'X-H', exactMatch: 'v' } }, { headers: { 'x-h': 'v' } }), true);
    // from the request when the header map lacks the pseudo-headers
    assert.equal(allowed({ header: { name: ':method', stringMatch: { exact: 'POST' } } }, { method: 'POST', headers: {} }), true);
    assert.equal(allowed({ header: { name: ':path', stringMatch: { exact: '/a?b=1' } } }, { path: '/a?b=1' }), true); // :path keeps the query
    assert.equal(allowed({ header: { name: ':authority', stringMatch: { exact: 'WWW.example.com', ignoreCase: true } } }, { headers: { ':authority': 'www.EXAMPLE.com' } }), true);
  });
});

describe('StringMatcher, url_path, uri_template', () => {
  const path = (m: J) => ({ urlPath: { path: m } });
  test('ignore_case folds ASCII only, as absl does', () => {
    assert.equal(allowed(path({ exact: '/ABC', ignoreCase: true }), { path: '/abc' }), true);
    assert.equal(allowed(path({ exact: '/É', ignoreCase: true }), { path: '/é' }), false);
    assert.equal(allowed(path({ prefix: '/API/', ignoreCase: true }), { path: '/api/x' }), true);
    assert.equal(allowed(path({ suffix: '.TXT', ignoreCase: true }), { path: '/a.txt' }), true);
    assert.equal(allowed(path({ contains: 'MID', ignoreCase: true }), { path: '/a/mid/b' }), true);
    assert.equal(allowed(path({ exact: '/ABC' }), { path: '/abc' }), false);
  });

  test('url_path is the path without query and fragment', () => {
    assert.equal(allowed(path({ exact: '/a' }), { path: '/a?x=1' }), true);
    assert.equal(allowed(path({ exact: '/a' }), { path: '/a#frag' }), true);
    assert.equal(allowed(path({ suffix: '=1' }), { path: '/a?x=1' }), false);
    assert.equal(allowed(path({ safeRegex: { regex: '/a' } }), { path: '/a?x' }), true);
  });

  test('uri_template: Envoy\'s segments, globs, variables and suffixes', () => {
    const tpl = (pathTemplate: string) => ({
      uriTemplate: { name: 'uri-template', typedConfig: { '@type': 'type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig', pathTemplate } },
    });
    const rows: Array<[string, string, boolean]> = [
      ['/path/template/*', '/path/template/x', true],
      ['/path/template/*', '/path/template/x?q=1', true],
      ['/path/template/*', '/path/template/x/y', false],
      ['/path/template/*', '/path/template/', false], // `*` is one or more characters
      ['/**/path/template', '/a/b/path/template', true],
      ['/**/path/template', '//path/template', true],
      ['/**/path/template', '/path/template', false], // the "/" around ** is literal, as in Envoy
      ['/api/{rest=**}', '/api/', true],
      ['/api/{rest=**}', '/api/a/b/c', true],
      ['/api/{rest=**}', '/api', false],
      ['/api/{v}/users', '/api/v1/users', true],
      ['/api/{v=*}/users', '/api/v1/x/users', false],
      ['/api/{v=v1/*}/users', '/api/v1/x/users', true],
      ['/*.txt', '/notes.txt', true],
      ['/*.txt', '/a/notes.txt', false],
      ['/x/**', '/x/', true],
      ['/a/', '/a/', true],
      ['/a/*', '/a/b*c', false], // `*` and other non-pchar characters never match a glob
    ];
    for (const [t, p, want] of rows) assert.equal(allowed(tpl(t), { path: p }), want, `${t} on ${p}`);
    for (const bad of ['a/b', '/a//b', '/a*', '/**/*', '/{1x}', '/{a}/{a}', '/{a}/{b}/{c}/{d}/{e}/{f}', '/{abcdefghijklmnopq}', '/*.txt/x', '/a\u00e9', '/{x=}', '/{x']) {
      invalid([filter({ rules: { policies: { p: { permissions: [tpl(bad)], principals: [{ any: true }] } } } })], /pathTemplate: invalid uri template/);
    }
  });
});

describe('addresses, ports, principals, SNI', () => {
  const cidr = (addressPrefix: string, prefixLen: number) => ({ addressPrefix, prefixLen });
  test('CIDR ranges ignore host bits and match their own family; IPv4-mapped addresses are IPv4', () => {
    assert.equal(allowed({ destinationIp: cidr('10.0.0.1', 8) }, { destinationIp: '10.200.3.4' }), true);
    assert.equal(allowed({ destinationIp: cidr('10.0.0.0', 8) }, { destinationIp: '11.0.0.1' }), false);
    assert.equal(allowed({ destinationIp: cidr('0.0.0.0', 0) }, { destinationIp: 'fd00::1' }), false);
    assert.equal(allowed({ destinationIp: cidr('::', 0) }, { destinationIp: 'fd00::1' }), true);
    assert.equal(allowed({ destinationIp: cidr('10.0.0.0', 8) }, { destinationIp: '::ffff:10.1.1.1' }), true);
    assert.equal(allowed({ destinationIp: cidr('::ffff:10.0.0.0', 104) }, { destinationIp: '10.1.1.1' }), true);
    assert.equal(allowed({ destinationIp: cidr('fd00::', 120) }, { destinationIp: 'fd00::ff' }), true);
    assert.equal(allowed({ destinationIp: cidr('fd00::', 121) }, { destinationIp: 'fd00::ff' }), false);
  });

  test('source_ip and direct_remote_ip are the peer, remote_ip the remote address', () => {
    const r = { directRemoteIp: '10.0.0.1', sourceIp: '10.0.0.1', remoteIp: '192.168.0.1' };
    assert.equal(allowed({ any: true }, r, { sourceIp: cidr('10.0.0.1', 32) }), true);
    assert.equal(allowed({ any: true }, r, { directRemoteIp: cidr('10.0.0.1', 32) }), true);
    assert.equal(allowed({ any: true }, r, { remoteIp: cidr('10.0.0.1', 32) }), false);
    assert.equal(allowed({ any: true }, r, { remoteIp: cidr('192.168.0.0', 16) }), true);
  });

  test('an address that is not one is unknown, not "another address": it fails closed even under not', () => {
    const ev = allowIf({ any: true }, { notId: { directRemoteIp: cidr('10.0.0.0', 8) } });
    const d = ev.evaluate(req({ directRemoteIp: 'garbage' }));
    assert.equal(d.allow, false);
    assert.match(d.unsupported.join('\n'), /directRemoteIp "garbage" is not an IP address/);
  });

  test('destination_port and destination_port_range [start, end)', () => {
    assert.equal(allowed({ destinationPort: 8080 }, { destinationPort: 8080 }), true);
    assert.equal(allowed({ destinationPort: 8080 }, { destinationPort: 8081 }), false);
    const range = { destinationPortRange: { start: 8000, end: 8080 } };
    assert.equal(allowed(range, { destinationPort: 8000 }), true);
    assert.equal(allowed(range, { destinationPort: 8079 }), true);
    assert.equal(allowed(range, { destinationPort: 8080 }), false);
    assert.equal(allowed({ destinationPortRange: { start: 0, end: 65536 } }, { destinationPort: 65535 }), true);
  });

  test('authenticated: a missing principal never matches; without principal_name any identity matches', () => {
    const spiffe = 'spiffe://cluster.local/ns/foo/sa/bar';
    assert.equal(allowed({ any: true }, { principal: spiffe }, { authenticated: {} }), true);
    assert.equal(allowed({ any: true }, {}, { authenticated: {} }), false);
    assert.equal(allowed({ any: true }, { principal: '' }, { authenticated: {} }), false); // "" is no identity
    assert.equal(allowed({ any: true }, {}, { authenticated: { principalName: { safeRegex: { regex: '.*' } } } }), false);
    assert.equal(allowed({ any: true }, { principal: spiffe }, { authenticated: { principalName: { exact: spiffe } } }), true);
    assert.equal(allowed({ any: true }, { principal: spiffe }, { authenticated: { principalName: { prefix: 'spiffe://cluster.local/' } } }), true);
    assert.equal(allowed({ any: true }, {}, { notId: { authenticated: {} } }), true); // plaintext clients
  });

  test('requested_server_name: the SNI, "" for plaintext', () => {
    assert.equal(allowed({ requestedServerName: { exact: 'api.example.com' } }, { requestedServerName: 'api.example.com' }), true);
    assert.equal(allowed({ requestedServerName: { suffix: '.example.com' } }, {}), false);
    assert.equal(allowed({ notRule: { requestedServerName: { exact: 'x.com' } } }, {}), true);
  });
});

describe('actions, policy order, filter chains, dry run', () => {
  const pol = (permission: J = { any: true }, principal: J = { any: true }) => ({ permissions: [permission], principals: [principal] });
  test('`rules` absent: the filter enforces nothing; present without policies: ALLOW denies all, DENY allows all', () => {
    assert.equal(compileRbacFilters([filter({})]).evaluate(req()).allow, true);
    assert.equal(compileRbacFilters([filter({})]).evaluate(req()).reason, 'no enforced RBAC rules');
    assert.equal(compileRbacFilters([filter({ rules: {} })]).evaluate(req()).allow, false);
    assert.equal(compileRbacFilters([filter({ rules: { action: 'DENY' } })]).evaluate(req()).allow, true);
    assert.equal(compileRbacFilters([filter({ rules: { action: 1, policies: { d: pol() } } })]).evaluate(req()).allow, false); // enum as number
  });

  test('policies are tried in byte order of their names; the first match is the effective policy', () => {
    const ev = compileRbacFilters([filter({ rules: { action: 'DENY', policies: { 'rule[2]': pol(), 'rule[10]': pol(), b: pol(), B: pol() } } })]);
    assert.equal(ev.evaluate(req()).policy, 'B');
    const ev2 = compileRbacFilters([filter({ rules: { action: 'DENY', policies: { 'rule[2]': pol(), 'rule[10]': pol() } } })]);
    assert.equal(ev2.evaluate(req()).policy, 'rule[10]');
  });

  test('LOG never denies; the matching policy is reported in logged', () => {
    const ev = compileRbacFilters([filter({ rules: { action: 'LOG', policies: { audit: pol({ urlPath: { path: { prefix: '/admin' } } }) } } })]);
    const hit = ev.evaluate(req({ path: '/admin/x' }));
    assert.deepEqual([hit.allow, hit.logged], [true, ['envoy.filters.http.rbac: audit']]);
    assert.deepEqual(ev.evaluate(req({ path: '/x' })).logged, []);
  });

  test('a chain: the first filter that denies decides; every ALLOW filter must pass; labels tell same-named filters apart', () => {
    const deny = filter({ rules: { action: 'DENY', policies: { 'no-admin': pol({ urlPath: { path: { prefix: '/admin' } } }) } } });
    const allowGet = filter({ rules: { policies: { get: pol({ header: { name: ':method', stringMatch: { exact: 'GET' } } }) } } });
    const allowPort = filter({ rules: { policies: { port: pol({ destinationPort: 8080 }) } } }, 'other');
    const ev = compileRbacFilters([deny, allowGet, allowPort]);
    const d1 = ev.evaluate(req({ path: '/admin' }));
    assert.deepEqual([d1.allow, d1.filter, d1.policy], [false, 'envoy.filters.http.rbac#0', 'no-admin']);
    const d2 = ev.evaluate(req({ method: 'POST' }));
    assert.deepEqual([d2.allow, d2.filter, d2.policy, d2.reason], [false, 'envoy.filters.http.rbac#1', undefined, 'no ALLOW policy matched in filter envoy.filters.http.rbac#1']);
    const d3 = ev.evaluate(req({ destinationPort: 9090 }));
    assert.deepEqual([d3.allow, d3.filter], [false, 'other']);
    const d4 = ev.evaluate(req());
    assert.deepEqual([d4.allow, d4.filter, d4.policy], [true, 'other', 'port']);
    assert.equal(ev.evaluate(req()).reason, 'matched ALLOW policy port in filter other');
    assert.deepEqual(ev.filters.map((f) => f.label), ['envoy.filters.http.rbac#0', 'envoy.filters.http.rbac#1', 'other']);
  });

  test('shadow rules are reported, never enforced; a denial stops the chain before later shadow rules', () => {
    const shadowDeny = filter({ shadowRules: { action: 'DENY', policies: { s: pol() } }, shadowRulesStatPrefix: 'istio_dry_run_deny_' });
    const enforceDeny = filter({ rules: { action: 'DENY', policies: { d: pol({ destinationPort: 1 }) } } });
    const shadowAllow = filter({ shadowRules: { policies: { a: pol({ destinationPort: 1 }) } } });
    const shadowLog = filter({ shadowRules: { action: 'LOG', policies: { l: pol() } } });
    const ev = compileRbacFilters([shadowDeny, enforceDeny, shadowAllow, shadowLog]);
    const d = ev.evaluate(req());
    assert.equal(d.allow, true);
    assert.deepEqual(d.dryRun, [
      { filter: 'envoy.filters.http.rbac#0', policy: 's', action: 'DENY', wouldAllow: false },
      { filter: 'envoy.filters.http.rbac#2', action: 'ALLOW', wouldAllow: false },
      { filter: 'envoy.filters.http.rbac#3', policy: 'l', action: 'LOG', wouldAllow: true },
    ]);
    const stopped = ev.evaluate(req({ destinationPort: 1 }));
    assert.equal(stopped.allow, false);
    assert.deepEqual(stopped.dryRun.map((r) => r.filter), ['envoy.filters.http.rbac#0']);
  });

  test('a network filter sees the connection only: no headers, no path', () => {
    const net = (rules: J): RbacFilterConfig => ({ name: 'envoy.filters.network.rbac', config: { '@type': NETWORK, statPrefix: 'tcp.', rules } });
    const onPath = compileRbacFilters([net({ policies: { p: pol({ urlPath: { path: { prefix: '/' } } }) } })]);
    assert.equal(onPath.evaluate(req({ path: '/x' })).allow, false);
    const notPath = compileRbacFilters([net({ policies: { p: pol({ notRule: { urlPath: { path: { prefix: '/' } } } }) } })]);
    assert.equal(notPath.evaluate(req({ path: '/x' })).allow, true);
    const l4 = compileRbacFilters([net({ policies: { p: pol({ destinationPort: 8080 }, { authenticated: { principalName: { safeRegex: { regex: '.*/ns/ns-1/.*' } } } }) } })]);
    assert.equal(l4.evaluate(req({ principal: 'spiffe://td/ns/ns-1/sa/a' })).allow, true);
    assert.equal(l4.evaluate(req({ principal: 'spiffe://td/ns/ns-2/sa/a' })).allow, false);
    assert.equal(compileRbacFilters([{ name: 'envoy.filters.network.rbac', config: { statPrefix: 'tcp.', rules: {} } }]).filters[0].kind, 'network');
  });
});

describe('fail closed', () => {
  const meta = { metadata: { filter: 'envoy.filters.http.jwt_authn', path: [{ key: 'payload' }, { key: 'iss' }], value: { stringMatch: { exact: 'x' } } } };
  const one = (action: string, permission: J, extra: J = {}) => compileRbacFilters([filter({ rules: { action, policies: { p: { permissions: [permission], principals: [{ any: true }], ...extra } } } })]);

  test('an ALLOW policy that depends on an unevaluable matcher does not match — also under not', () => {
    for (const p of [meta, { notRule: meta }, { andRules: { rules: [{ any: true }, meta] } }]) {
      const d = one('ALLOW', p).evaluate(req());
      assert.equal(d.allow, false, JSON.stringify(p));
      assert.match(d.unsupported[0], /^envoy\.filters\.http\.rbac: policy p: metadata envoy\.filters\.http\.jwt_authn payload\.iss/);
    }
  });

  test('a DENY policy that depends on one matches; a LOG policy logs', () => {
    const d = one('DENY', { notRule: meta }).evaluate(req());
    assert.deepEqual([d.allow, d.policy], [false, 'p']);
    assert.match(d.reason, /matched DENY policy p in filter envoy\.filters\.http\.rbac \(an unsupported matcher failed closed\)/);
    const l = one('LOG', meta).evaluate(req());
    assert.deepEqual([l.allow, l.logged], [true, ['envoy.filters.http.rbac: p']]);
  });

  test('an unknown that cannot change the outcome is not one: or(any, m) matches, and(port mismatch, m) does not', () => {
    const a = one('ALLOW', { orRules: { rules: [{ any: true }, meta] } }).evaluate(req());
    assert.deepEqual([a.allow, a.unsupported], [true, []]);
    const b = one('DENY', { andRules: { rules: [{ destinationPort: 1 }, meta] } }).evaluate(req());
    assert.deepEqual([b.allow, b.unsupported], [true, []]);
  });

  test('a CEL condition is unevaluable', () => {
    assert.equal(one('ALLOW', { any: true }, { condition: { constExpr: { boolValue: true } } }).evaluate(req()).allow, false);
    assert.equal(one('DENY', { any: true }, { checkedCondition: { expr: {} } }).evaluate(req()).allow, false);
  });

  test('the matcher-tree API denies every request; a shadow matcher tree only gives a note', () => {
    const tree = compileRbacFilters([filter({ matcher: { matcherList: {} } })]);
    const d = tree.evaluate(req());
    assert.equal(d.allow, false);
    assert.match(d.reason, /matcher tree/);
    const shadow = compileRbacFilters([filter({ shadowMatcher: { matcherList: {} } })]).evaluate(req());
    assert.deepEqual([shadow.allow, shadow.dryRun], [true, []]);
    assert.match(shadow.unsupported[0], /shadow rules\): the RBAC matcher tree is not evaluated/);
  });

  test('the logger hears each fail-closed policy once, and every compile warning', () => {
    const lines: string[] = [];
    const ev = compileRbacFilters([filter({ rules: { policies: { p: { permissions: [meta], principals: [{ any: true }] } } } })], { logger: { warn: (m) => lines.push(m) } });
    ev.evaluate(req());
    ev.evaluate(req());
    assert.equal(lines.filter((l) => /fails closed$/.test(l)).length, 1);
    assert.ok(lines.some((l) => l.startsWith('rbac: filter envoy.filters.http.rbac, policy "p": rules.policies["p"].permissions[0].metadata: ')));
  });
});

describe('validation: SM_RBAC_INVALID names the filter, the policy and the field path', () => {
  const withPerm = (permission: unknown, name?: string) => [filter({ rules: { policies: { 'ns[foo]-policy[x]-rule[0]': { permissions: [permission], principals: [{ any: true }] } } } }, name)];
  test('a bad regex', () => {
    const e = invalid(withPerm({ urlPath: { path: { safeRegex: { regex: '(a' } } } }), /^SM_RBAC_INVALID: filter envoy\.filters\.http\.rbac, policy "ns\[foo\]-policy\[x\]-rule\[0\]": rules\.policies\["ns\[foo\]-policy\[x\]-rule\[0\]"\]\.permissions\[0\]\.urlPath\.path\.safeRegex\.regex: invalid RE2 regex "\(a": missing \)/);
    assert.deepEqual(e.issues[0], {
      filter: 'envoy.filters.http.rbac',
      filterIndex: 0,
      policy: 'ns[foo]-policy[x]-rule[0]',
      path: 'rules.policies["ns[foo]-policy[x]-rule[0]"].permissions[0].urlPath.path.safeRegex.regex',
      reason: 'invalid RE2 regex "(a": missing ) (at offset 0)',
    });
    invalid(withPerm({ header: { name: 'x', safeRegexMatch: { regex: '(?=x)' } } }), /header\.safeRegexMatch\.regex: invalid RE2 regex "\(\?=x\)": lookahead/);
  });

  test('unknown action, wrong types, broken oneofs, out-of-range values', () => {
    invalid([filter({ rules: { action: 'REJECT' } })], /filter envoy\.filters\.http\.rbac: rules\.action: unknown action a string \("REJECT"\): expected ALLOW, DENY or LOG/);
    invalid([filter({ rules: { policies: { p: { permissions: { any: true }, principals: [{ any: true }] } } } })], /rules\.policies\["p"\]\.permissions: expected a list/);
    invalid([filter({ rules: { policies: { p: { permissions: [], principals: [{ any: true }] } } } })], /permissions: must have at least 1 item/);
    invalid([filter({ rules: { policies: { p: { principals: [{ any: true }] } } } })], /permissions: required/);
    invalid([filter({ rules: { policies: [] } })], /rules\.policies: expected a map/);
    invalid(withPerm({ any: true, destinationPort: 80 }), /permission: only one of any, destinationPort may be set/);
    invalid(withPerm({ destination_port_x: 80 }), /permission: none of the supported fields is set \(found "destination_port_x"\)/);
    invalid(withPerm({ any: false }), /any: must be true/);
    invalid(withPerm({ andRules: { rules: [] } }), /andRules\.rules: must have at least 1 item/);
    invalid(withPerm({ destinationPort: 70000 }), /destinationPort: 70000 is out of range/);
    invalid(withPerm({ destinationPort: '80x' }), /destinationPort: expected an integer/);
    invalid(withPerm({ destinationPortRange: { start: 90, end: 80 } }), /destinationPortRange: range start 90 must be lower than range end 80/);
    invalid(withPerm({ destinationIp: { addressPrefix: '10.0.0.0', prefixLen: 33 } }), /addressPrefix: prefixLen 33 is longer than an IPv4 address/);
    invalid(withPerm({ destinationIp: { addressPrefix: '10.0.0.0/8' } }), /addressPrefix: "10\.0\.0\.0\/8" is not an IP address/);
    invalid(withPerm({ urlPath: { path: { prefix: '' } } }), /urlPath\.path\.prefix: must not be empty/);
    invalid(withPerm({ urlPath: { path: { exact: '/a', prefix: '/b' } } }), /string matcher: only one of exact, prefix may be set/);
    invalid(withPerm({ urlPath: { path: { safeRegex: { regex: 'a' }, ignoreCase: true } } }), /ignoreCase: ignore_case has no effect for safe_regex/);
    invalid(withPerm({ header: { exactMatch: 'x' } }), /header\.name: required field missing/);
    invalid(withPerm({ urlPath: { path: { exact: 5 } } }), /path\.exact: expected a string, got a number \(5\)/);
  });

  test('both spellings of one field, per-route configs, foreign types, exclusive fields, the network filter\'s header ban', () => {
    invalid([filter({ rules: { policies: { p: { permissions: [{ any: true }], principals: [{ any: true }] } } }, shadow_rules: {}, shadowRules: {} })], /shadowRules: given twice, as "shadowRules" and "shadow_rules"/);
    invalid([{ name: 'r', config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute', rbac: {} } }], /RBACPerRoute/);
    invalid([{ name: 'r', config: { '@type': 'type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors' } }], /@type: not an RBAC filter config/);
    invalid([filter({ rules: {}, matcher: {} })], /rules and matcher are exclusive/);
    invalid([{ name: 'envoy.filters.network.rbac', config: { '@type': NETWORK, statPrefix: 't', rules: { policies: { p: { permissions: [{ notRule: { header: { name: 'a' } } }], principals: [{ any: true }] } } } } }], /notRule\.header: header rules are not supported by the network RBAC filter/);
    invalid([{ name: 'x' } as unknown as RbacFilterConfig], /filter x: \(config\): the filter's typed config is missing/);
  });

  test('absurd nesting is refused, not a stack overflow: 100 levels of and/or/not, 1000 regex groups', () => {
    let deep: J = { any: true };
    for (let i = 0; i < 5000; i++) deep = { notRule: deep };
    invalid(withPerm(deep), /rules nested deeper than 100 levels/);
    let ok: J = { any: true };
    for (let i = 0; i < 100; i++) ok = { notRule: ok };
    assert.equal(compileRbacFilters(withPerm(ok)).evaluate(req()).allow, true); // an even number of nots
    invalid(withPerm({ urlPath: { path: { safeRegex: { regex: '('.repeat(5000) + 'a' + ')'.repeat(5000) } } } }), /groups nested deeper than 1000/);
  });

  test('every problem is collected, with the filter index', () => {
    const e = invalid(
      [filter({ rules: { action: 'NOPE' } }, 'a'), filter({ rules: { policies: { q: { permissions: [{ urlPath: { path: { safeRegex: { regex: '*' } } } }], principals: [{ sourceIp: { addressPrefix: 'x' } }] } } } }, 'b')],
      /and 2 more problems/,
    );
    assert.deepEqual(
      e.issues.map((i) => [i.filterIndex, i.policy, i.path]),
      [
        [0, undefined, 'rules.action'],
        [1, 'q', 'rules.policies["q"].permissions[0].urlPath.path.safeRegex.regex'],
        [1, 'q', 'rules.policies["q"].principals[0].sourceIp.addressPrefix'],
      ],
    );
  });
});

describe('accepted as written, with warnings', () => {
  test('snake_case (config dumps) and lowerCamelCase read the same', () => {
    const snake = compileRbacFilters([
      filter({
        rules: {
          action: 'DENY',
          policies: {
            p: {
              permissions: [{ and_rules: { rules: [{ url_path: { path: { prefix: '/a' } } }, { destination_port_range: { start: 1, end: 9000 } }] } }],
              principals: [{ or_ids: { ids: [{ direct_remote_ip: { address_prefix: '10.0.0.0', prefix_len: 8 } }] } }],
            },
          },
        },
      }),
    ]);
    assert.equal(snake.evaluate(req({ path: '/a/b' })).allow, false);
    assert.equal(snake.evaluate(req({ path: '/b' })).allow, true);
    assert.deepEqual(snake.warnings, []);
  });

  test('unknown fields and unenforced features are warnings naming the path, not silent', () => {
    const ev = compileRbacFilters([
      filter({
        rules: { policies: { p: { permissions: [{ any: true, future_field: 1 }], principals: [{ any: true }], note: 'x' } }, auditLoggingOptions: {} },
        shadowRulesStatPrefix: 'x',
        futureTopLevel: true,
      }),
      { name: 'envoy.filters.network.rbac', config: { '@type': NETWORK, rules: {}, enforcementType: 'CONTINUOUS' } },
    ]);
    const w = ev.warnings.map((x) => `${x.filterIndex} ${x.path}: ${x.message}`);
    assert.deepEqual(w, [
      '0 futureTopLevel: unknown field, ignored',
      '0 rules.auditLoggingOptions: RBAC audit logging is not implemented by sockmesh; ignored',
      '0 rules.policies["p"].note: unknown field, ignored',
      '0 rules.policies["p"].permissions[0].future_field: unknown field, ignored',
      '1 statPrefix: stat_prefix is required by Envoy; it only names statistics, so sockmesh accepts its absence',
      '1 enforcementType: CONTINUOUS enforcement re-checks dynamic metadata on every read in Envoy; sockmesh decides once per connection',
    ]);
  });

  test('the filter config may come as typedConfig / typed_config (listener and fixture shape)', () => {
    const ev = compileRbacFilters([{ name: 'r', typedConfig: { '@type': HTTP, rules: {} } } as unknown as RbacFilterConfig]);
    assert.equal(ev.evaluate(req()).allow, false);
  });
});

test('evaluation cost: a realistic policy set stays in the microseconds', () => {
  const pol = (i: number) => ({
    permissions: [{ andRules: { rules: [{ orRules: { rules: [{ urlPath: { path: { prefix: `/api/v${i}/` } } }, { urlPath: { path: { exact: `/health${i}` } } }] } }, { header: { name: ':method', stringMatch: { exact: 'GET' } } }] } }],
    principals: [{ orIds: { ids: [{ authenticated: { principalName: { safeRegex: { regex: `.*/ns/ns-${i}/.*` } } } }, { authenticated: { principalName: { exact: `spiffe://cluster.local/ns/x/sa/s${i}` } } }] } }],
  });
  const policies: Record<string, unknown> = {};
  for (let i = 0; i < 20; i++) policies[`p${i}`] = pol(i);
  const ev = compileRbacFilters([filter({ rules: { action: 'DENY', policies: { d: { permissions: [{ urlPath: { path: { prefix: '/admin' } } }], principals: [{ any: true }] } } } }), filter({ rules: { policies } })]);
  const r = req({ path: '/api/v19/x?y=1', principal: 'spiffe://cluster.local/ns/ns-19/sa/default' });
  let d: Decision | undefined;
  const n = 20000;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) d = ev.evaluate(r);
  const us = Number(process.hrtime.bigint() - t0) / 1e3 / n;
  assert.deepEqual([d!.allow, d!.policy], [true, 'p19']);
  assert.ok(us < 200, `${us.toFixed(1)} µs per evaluation`);
});
