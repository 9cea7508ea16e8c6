// Istio ambient → model: the Authorization fixtures (test/fixtures/istio/
// ambient-authorization, what istiod sends ztunnel), hand-written Address resources, and a
// property test that the L4Expr of an Authorization decides every connection as ztunnel does.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { isIP } from 'node:net';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { parse } from 'yaml';
import type { L4Expr, StringMatch } from '../core/model';
import { authorizationExpr, translateAmbient } from '../xds/translate/ambient';
import { ipToBytes } from '../core/ip';
import { istioFixture } from './fixture-dir';

const DIR = istioFixture('ambient-authorization');
const authz = (f: string): any => parse(fs.readFileSync(path.join(DIR, f), 'utf8'));
const b64 = (ip: string): string => (isIP(ip) === 4 ? ipToBytes(ip).subarray(0, 4) : ipToBytes(ip)).toString('base64');

const ns = (exact: string): L4Expr => ({ namespace: { exact } });
const pr = (exact: string): L4Expr => ({ principal: { exact } });
const src = (address: string, prefixLen: number): L4Expr => ({ sourceIp: { address, prefixLen } });
const NEVER: L4Expr = { not: { any: true } };

describe('ambient Authorization fixtures', () => {
  test('allow-groups.yaml: groups OR, rules AND, matches OR, fields AND (the L7-only rules were dropped by istiod)', () => {
    const r = translateAmbient({ authorizations: [authz('allow-groups.yaml')] });
    assert.deepEqual(r.model.policies!.l4, [
      {
        name: '/groups',
        scope: { kind: 'namespace', namespace: '' },
        action: 'ALLOW',
        dryRun: false,
        when: {
          or: [
            { and: [{ destinationPort: 80 }, ns('only-l4-ns'), pr('spiffe://only-l4-principals')] },
            { and: [ns('when-l4-ns'), src('10.10.10.10', 32)] },
          ],
        },
        origin: 'ambient',
      },
    ]);
    assert.deepEqual(r.warnings, []);
  });

  test('allow-groups.yaml unsimplified: the full or(and(or(and(fields)))) nesting', () => {
    const tree = authorizationExpr(authz('allow-groups.yaml'), { simplify: false });
    assert.deepEqual(tree, {
      or: [
        {
          and: [
            { or: [{ and: [{ or: [{ destinationPort: 80 }] }] }] },
            { or: [{ and: [{ or: [ns('only-l4-ns')] }, { or: [pr('spiffe://only-l4-principals')] }] }] },
          ],
        },
        {
          and: [
            { or: [{ and: [{ or: [ns('when-l4-ns')] }] }] },
            { or: [{ and: [{ or: [src('10.10.10.10', 32)] }] }] },
          ],
        },
      ],
    });
  });

  test('deny-groups.yaml: empty matches ({} — the HTTP parts istiod dropped) never match, as in ztunnel', () => {
    const r = translateAmbient({ authorizations: [authz('deny-groups.yaml')] });
    const pol = r.model.policies!.l4[0];
    assert.equal(pol.action, 'DENY');
    assert.equal(pol.name, '/groups-deny');
    // Groups 3 (only L7), 4 (L4 and L7 when) and 6 (L7-only when) contain a rule whose only match
    // is {} and drop out; the rest stay.
    assert.deepEqual(pol.when, {
      or: [
        { and: [{ destinationPort: 80 }, ns('from-mix-ns'), pr('spiffe://from-mix-principal')] },
        { and: [{ destinationPort: 80 }, ns('to-mix-ns'), pr('spiffe://to-mix-principal')] },
        { and: [{ destinationPort: 80 }, ns('only-l4-ns'), pr('spiffe://only-l4-principals')] },
        { and: [ns('when-l4-ns'), src('10.10.10.10', 32), { not: src('20.20.20.20', 32) }] },
      ],
    });
    assert.deepEqual(
      r.warnings.map((w) => w.reason.split(' ')[0]),
      ['groups[3].rules[0].matches[0]', 'groups[3].rules[1].matches[0]', 'groups[4].rules[1].matches[0]', 'groups[6].rules[0].matches[0]', 'groups[6].rules[1].matches[0]'],
    );
    assert.match(r.warnings[0].reason, /ztunnel never matches an empty match/);
  });

  test('allow-full.yaml: every field and its not_ twin; service accounts; bytes → CIDRs', () => {
    const r = translateAmbient({ authorizations: [authz('allow-full.yaml')] });
    const pol = r.model.policies!.l4[0];
    assert.deepEqual([pol.name, pol.scope, pol.action], ['cfg/allow', { kind: 'namespace', namespace: 'cfg' }, 'ALLOW']);
    const g = (pol.when as { or: L4Expr[] }).or;
    // 10 groups; the 7th (when source.namespace) is the same tree as the 3rd (from namespaces) and
    // is deduplicated.
    assert.equal(authz('allow-full.yaml').groups.length, 10);
    assert.equal(g.length, 9);
    const sm = (kind: 'principal' | 'namespace', m: StringMatch): L4Expr => ({ [kind]: m }) as L4Expr;
    assert.deepEqual(g[0], {
      and: [
        { or: [pr('spiffe://principal'), sm('principal', { prefix: 'spiffe://principal-prefix-' }), sm('principal', { suffix: '-suffix-principal' }), sm('principal', { presence: true })] },
        {
          not: {
            or: [pr('spiffe://not-principal'), sm('principal', { prefix: 'spiffe://not-principal-prefix-' }), sm('principal', { suffix: '-suffix-not-principal' }), sm('principal', { presence: true })],
          },
        },
      ],
    });
    assert.deepEqual(g[1], {
      and: [
        { or: [sm('principal', { suffix: '/ns/ns/sa/sa' }), sm('principal', { suffix: '/ns/cfg/sa/sa-only' })] },
        { not: { or: [sm('principal', { suffix: '/ns/ns/sa/sa-not' }), sm('principal', { suffix: '/ns/cfg/sa/sa-not-only' })] } },
      ],
    });
    assert.deepEqual(g[2], {
      and: [
        { or: [ns('ns'), sm('namespace', { prefix: 'ns-prefix-' }), sm('namespace', { suffix: '-ns-suffix' }), sm('namespace', { presence: true })] },
        { not: { or: [ns('not-ns'), sm('namespace', { prefix: 'not-ns-prefix-' }), sm('namespace', { suffix: '-not-ns-suffix' }), sm('namespace', { presence: true })] } },
      ],
    });
    assert.deepEqual(g[3], { and: [{ or: [src('1.2.3.4', 32), src('5.6.0.0', 16)] }, { not: { or: [src('2.2.3.4', 32), src('6.6.0.0', 16)] } }] });
    assert.deepEqual(g[4], { and: [{ or: [{ destinationPort: 80 }, { destinationPort: 90 }] }, { not: { or: [{ destinationPort: 800 }, { destinationPort: 900 }] } }] });
    assert.deepEqual(g[6], { and: [(g[0] as any).and[0], { not: { or: [pr('spiffe://not-principal'), sm('principal', { prefix: 'spiffe://not-principal-prefix-' }), sm('principal', { suffix: '-not-suffix-principal' }), sm('principal', { presence: true })] } }] });
    assert.deepEqual(g[7], {
      and: [
        { or: [{ destinationIp: { address: '10.10.10.10', prefixLen: 32 } }, { destinationIp: { address: '192.168.10.0', prefixLen: 24 } }] },
        { not: { or: [{ destinationIp: { address: '90.10.10.10', prefixLen: 32 } }, { destinationIp: { address: '90.168.10.0', prefixLen: 24 } }] } },
      ],
    });
    assert.deepEqual(r.warnings, []);
  });
});

describe('Authorization semantics (ztunnel src/rbac.rs)', () => {
  const base = { name: 'p', namespace: 'n' };
  test('no groups: matches nothing (an ALLOW then denies), with a warning', () => {
    const r = translateAmbient({ authorizations: [{ ...base }] });
    assert.deepEqual(r.model.policies!.l4[0].when, NEVER);
    assert.match(r.warnings[0].reason, /has no rules: it matches nothing \(an ALLOW policy with no rules denies every connection/);
  });
  test('a group with no rules, or a rule with no matches, matches everything; an empty match nothing', () => {
    assert.deepEqual(authorizationExpr({ groups: [{}] }), { any: true });
    assert.deepEqual(authorizationExpr({ groups: [{ rules: [{}] }] }), { any: true });
    assert.deepEqual(authorizationExpr({ groups: [{ rules: [{ matches: [{}] }] }] }), NEVER);
    assert.deepEqual(authorizationExpr({ groups: [{ rules: [{ matches: [{}, { destinationPorts: [1] }] }] }] }), { destinationPort: 1 });
  });
  test('scope WORKLOAD_SELECTOR selects the workloads listing namespace/name; dryRun is carried', () => {
    const wl = (uid: string, pols: string[]) => ({ workload: { uid, name: uid, namespace: 'n', addresses: [b64('10.1.0.' + uid.length)], authorizationPolicies: pols } });
    const r = translateAmbient({
      addresses: [wl('a', ['n/p']), wl('bb', []), wl('ccc', ['n/p', 'n/q'])],
      authorizations: [{ ...base, scope: 'WORKLOAD_SELECTOR', dryRun: true, groups: [{ rules: [{ matches: [{ destinationPorts: [8080] }] }] }] }, { name: 'g', scope: 'GLOBAL', action: 'DENY', groups: [{}] }],
    });
    assert.deepEqual(r.model.policies!.l4.map((p) => [p.name, p.scope, p.action, p.dryRun]), [
      ['n/p', { kind: 'workloads', workloads: ['a', 'ccc'] }, 'ALLOW', true],
      ['/g', { kind: 'global' }, 'DENY', false],
    ]);
  });
  test('address length 0 is /0 (as ztunnel builds IpNet), with a warning if host bits are set; IPv6', () => {
    const r = translateAmbient({
      authorizations: [{ ...base, groups: [{ rules: [{ matches: [{ sourceIps: [{ address: b64('10.1.2.3') }, { address: b64('0.0.0.0') }, { address: b64('fd00::1'), length: 64 }] }] }] }] }],
    });
    assert.deepEqual(r.model.policies!.l4[0].when, { or: [src('0.0.0.0', 0), src('fd00::', 64)] });
    assert.equal(r.warnings.length, 1);
    assert.match(r.warnings[0].reason, /10\.1\.2\.3 with length 0 matches every IPv4 address/);
  });
});

// --- property: the expression decides like ztunnel --------------------------------------------

interface Conn {
  id?: { td: string; ns: string; sa: string };
  src: string;
  dst: string;
  port: number;
}

function inCidr(ip: string, c: { address: string; prefixLen: number }): boolean {
  if (isIP(ip) !== isIP(c.address)) return false;
  const bits = isIP(ip) === 4 ? 32 : 128;
  const n = (x: string) => BigInt('0x' + (isIP(x) === 4 ? ipToBytes(x).subarray(0, 4) : ipToBytes(x)).toString('hex'));
  const shift = BigInt(bits - c.prefixLen);
  return n(ip) >> shift === n(c.address) >> shift;
}

function sMatch(m: StringMatch, s: string): boolean {
  if ('exact' in m) return s === m.exact;
  if ('prefix' in m) return s.startsWith(m.prefix);
  if ('suffix' in m) return s.endsWith(m.suffix);
  return s !== '';
}

function evalExpr(e: L4Expr, c: Conn): boolean {
  const principal = c.id ? `spiffe://${c.id.td}/ns/${c.id.ns}/sa/${c.id.sa}` : '';
  if ('any' in e) return true;
  if ('and' in e) return e.and.every((x) => evalExpr(x, c));
  if ('or' in e) return e.or.some((x) => evalExpr(x, c));
  if ('not' in e) return !evalExpr(e.not, c);
  if ('principal' in e) return sMatch(e.principal, principal);
  if ('namespace' in e) return sMatch(e.namespace, c.id?.ns ?? '');
  if ('sourceIp' in e) return inCidr(c.src, e.sourceIp);
  if ('destinationIp' in e) return inCidr(c.dst, e.destinationIp);
  if ('destinationPort' in e) return c.port === e.destinationPort;
  return c.port >= e.destinationPortRange.start && c.port < e.destinationPortRange.end;
}

/** A direct port of ztunnel's Authorization::matches over the proto3 JSON resource. */
function ztunnel(a: any, c: Conn): boolean {
  const id = c.id ? `spiffe://${c.id.td}/ns/${c.id.ns}/sa/${c.id.sa}` : '';
  const ns = c.id?.ns ?? '';
  const sm = (m: any, s: string) => ('exact' in m ? s === m.exact : 'prefix' in m ? s.startsWith(m.prefix) : 'suffix' in m ? s.endsWith(m.suffix) : s !== '');
  const ipm = (x: any, ip: string) => {
    const b = Buffer.from(x.address, 'base64');
    const addr = b.length === 4 ? [...b].join('.') : (b.toString('hex').match(/.{4}/g) as string[]).join(':');
    return inCidr(ip, { address: addr, prefixLen: x.length ?? 0 });
  };
  const field = (pos: any[] | undefined, neg: any[] | undefined, pred: (v: any) => boolean) =>
    (!pos?.length || pos.some(pred)) && (!neg?.length || !neg.some(pred));
  const groups = a.groups ?? [];
  if (!groups.length) return false;
  return groups.some((g: any) =>
    (g.rules ?? []).every((r: any) => {
      const ms = r.matches ?? [];
      if (!ms.length) return true;
      return ms.some((m: any) => {
        if (!Object.values(m).some((v: any) => Array.isArray(v) && v.length)) return false;
        return (
          field(m.destinationIps, m.notDestinationIps, (x) => ipm(x, c.dst)) &&
          field(m.sourceIps, m.notSourceIps, (x) => ipm(x, c.src)) &&
          field(m.destinationPorts, m.notDestinationPorts, (p) => p === c.port) &&
          field(m.serviceAccounts, m.notServiceAccounts, (s) => !!c.id && c.id.ns === s.namespace && c.id.sa === s.serviceAccount) &&
          field(m.principals, m.notPrincipals, (s) => id.startsWith('spiffe://') && sm(s, id.slice('spiffe://'.length))) &&
          field(m.namespaces, m.notNamespaces, (s) => sm(s, ns))
        );
      });
    }),
  );
}

function rng(seed: number): () => number {
  return () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
}

describe('property: L4Expr(authorization) ≡ ztunnel on random connections', () => {
  const rand = rng(42);
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)];
  const TDS = ['cluster.local', 'principal-prefix-x', 'td'];
  const NSS = ['ns', 'ns-prefix-a', 'b-ns-suffix', 'not-ns', 'cfg', 'only-l4-ns', 'when-l4-ns', 'from-mix-ns', 'to-mix-ns', 'x'];
  const SAS = ['sa', 'sa-only', 'sa-not', 'a-suffix-principal', 'default', 'only-l4-principals'];
  const IPS = ['1.2.3.4', '5.6.7.8', '2.2.3.4', '6.6.1.1', '10.10.10.10', '192.168.10.5', '90.10.10.10', '90.168.10.1', '20.20.20.20', '9.9.9.9', 'fd00::1', '2001:db8::5'];
  const PORTS = [80, 90, 800, 900, 91, 92, 9001, 9002, 8080];
  const conn = (): Conn => ({
    ...(rand() < 0.85 ? { id: { td: pick(TDS), ns: pick(NSS), sa: pick(SAS) } } : {}),
    src: pick(IPS),
    dst: pick(IPS),
    port: pick(PORTS),
  });
  const strm = () => pick([{ exact: pick(NSS) }, { prefix: pick(['ns', 'not', 'principal-prefix']) }, { suffix: pick(['suffix', '-principal', 'sa']) }, { presence: {} }]);
  const cidr = () => ({ address: b64(pick(IPS)), length: pick([32, 24, 16, 0, 8]) });
  const randomMatch = (): any => {
    const m: any = {};
    const lists: Array<[string, () => unknown]> = [
      ['namespaces', strm],
      ['notNamespaces', strm],
      ['principals', strm],
      ['notPrincipals', strm],
      ['serviceAccounts', () => ({ namespace: pick(NSS), serviceAccount: pick(SAS) })],
      ['notServiceAccounts', () => ({ namespace: pick(NSS), serviceAccount: pick(SAS) })],
      ['sourceIps', cidr],
      ['notSourceIps', cidr],
      ['destinationIps', cidr],
      ['notDestinationIps', cidr],
      ['destinationPorts', () => pick(PORTS)],
      ['notDestinationPorts', () => pick(PORTS)],
    ];
    for (const [k, gen] of lists) if (rand() < 0.2) m[k] = Array.from({ length: 1 + Math.floor(rand() * 3) }, gen);
    return m;
  };
  const randomAuth = (): any => ({
    name: 'r',
    groups: Array.from({ length: Math.floor(rand() * 4) }, () => ({
      rules: Array.from({ length: Math.floor(rand() * 3) }, () => ({ matches: Array.from({ length: Math.floor(rand() * 3) }, randomMatch) })),
    })),
  });

  const cases: Array<[string, any]> = [
    ['allow-full.yaml', authz('allow-full.yaml')],
    ['allow-groups.yaml', authz('allow-groups.yaml')],
    ['deny-groups.yaml', authz('deny-groups.yaml')],
  ];
  for (let i = 0; i < 100; i++) cases.push([`random #${i}`, randomAuth()]);

  test('fixtures and 100 random authorizations × 200 connections each, simplified and unsimplified', () => {
    for (const [name, a] of cases) {
      const simplified = authorizationExpr(a);
      const full = authorizationExpr(a, { simplify: false });
      for (let k = 0; k < 200; k++) {
        const c = conn();
        const want = ztunnel(a, c);
        assert.equal(evalExpr(full, c), want, `${name} (unsimplified) on ${JSON.stringify(c)}`);
        assert.equal(evalExpr(simplified, c), want, `${name} on ${JSON.stringify(c)}`);
      }
    }
  });
});

// --- Addresses ------------------------------------------------------------------------------

describe('ambient Address resources → services, endpoints, workloads', () => {
  const svc = (extra: any = {}) => ({
    service: {
      name: 'reviews',
      namespace: 'default',
      hostname: 'reviews.default.svc.cluster.local',
      addresses: [{ network: '', address: b64('10.96.1.1') }, { address: b64('fd00:96::1') }],
      ports: [
        { servicePort: 9080, targetPort: 9080 },
        { servicePort: 80, targetPort: 0 },
      ],
      ...extra,
    },
  });
  const wl = (uid: string, ip: string, extra: any = {}) => ({
    workload: {
      uid,
      name: uid.split('/').pop(),
      namespace: 'default',
      addresses: [b64(ip)],
      node: 'node-1',
      serviceAccount: 'bookinfo-reviews',
      services: { 'default/reviews.default.svc.cluster.local': { ports: [{ servicePort: 9080, targetPort: 9080 }, { servicePort: 80, targetPort: 8080 }] } },
      ...extra,
    },
  });

  test('a service and its workloads: VIPs, target ports, health, identity, locality', () => {
    const r = translateAmbient({
      addresses: [
        svc(),
        wl('Kubernetes//Pod/default/reviews-1', '10.244.1.1', { locality: { region: 'r', zone: 'z' } }),
        wl('Kubernetes//Pod/default/reviews-2', '10.244.1.2', { status: 'UNHEALTHY', trustDomain: 'td.example', services: { 'default/reviews.default.svc.cluster.local': { ports: [{ servicePort: 9080 }] } } }),
      ],
    });
    assert.deepEqual(r.model.services, [
      {
        namespace: 'default',
        name: 'reviews',
        vips: ['10.96.1.1', 'fd00:96::1'],
        ports: [
          { port: 9080, protocol: 'TCP', targetPort: 9080 },
          { port: 80, protocol: 'TCP' },
        ],
      },
    ]);
    assert.deepEqual(r.model.workloads, [
      { namespace: 'default', name: 'reviews-1', serviceAccount: 'bookinfo-reviews', ips: ['10.244.1.1'], node: 'node-1', uid: 'Kubernetes//Pod/default/reviews-1', trustDomain: 'cluster.local', healthy: true },
      { namespace: 'default', name: 'reviews-2', serviceAccount: 'bookinfo-reviews', ips: ['10.244.1.2'], node: 'node-1', uid: 'Kubernetes//Pod/default/reviews-2', trustDomain: 'td.example', healthy: false },
    ]);
    assert.deepEqual(
      r.model.endpoints.map((e) => `${e.service} ${e.servicePort}→${e.address}:${e.port} w${e.weight} ${e.healthy} ${e.workload}`),
      [
        'default/reviews 9080→10.244.1.1:9080 w1 true Kubernetes//Pod/default/reviews-1',
        'default/reviews 80→10.244.1.1:8080 w1 true Kubernetes//Pod/default/reviews-1',
        'default/reviews 9080→10.244.1.2:9080 w1 false Kubernetes//Pod/default/reviews-2',
      ],
    );
    assert.deepEqual(r.model.endpoints[0].locality, { region: 'r', zone: 'z' });
    // reviews-2 maps only 9080, and the service gives no target port for 80: said, not guessed.
    assert.deepEqual(r.warnings.map((w) => w.resource + ': ' + w.reason), [
      'workload Kubernetes//Pod/default/reviews-2: service default/reviews.default.svc.cluster.local port 80: neither the workload nor the service gives a target port; no endpoint for it',
    ]);
  });

  test('defaults: service account "default", trust domain cluster.local; snake_case accepted', () => {
    const r = translateAmbient({ addresses: [{ workload: { uid: 'u1', name: 'w', namespace: 'x', addresses: [b64('10.0.0.9')], trust_domain: '' } }] });
    assert.deepEqual(r.model.workloads, [{ namespace: 'x', name: 'w', serviceAccount: 'default', ips: ['10.0.0.9'], uid: 'u1', trustDomain: 'cluster.local', healthy: true }]);
    const s = translateAmbient({ addresses: [{ service: { name: 'a', namespace: 'b', hostname: 'a.b.svc.cluster.local', addresses: [{ address: b64('10.96.0.1') }], ports: [{ service_port: 53, target_port: 5353 }] } }] });
    assert.deepEqual(s.model.services[0].ports, [{ port: 53, protocol: 'TCP', targetPort: 5353 }]);
  });

  test('skipped with a reason: headless services, waypoint services, hostname-only workloads', () => {
    const r = translateAmbient({
      addresses: [
        svc({ addresses: [] }),
        { service: { ...svc().service, name: 'ratings', hostname: 'ratings.default.svc.cluster.local', waypoint: { address: { address: b64('10.96.99.9') }, hboneMtlsPort: 15008 } } },
        { workload: { uid: 'ext', name: 'ext', namespace: 'default', hostname: 'db.example.com' } },
      ],
    });
    assert.deepEqual(r.model.services, []);
    assert.deepEqual(r.model.workloads, []);
    assert.deepEqual(
      r.warnings.map((w) => w.resource + ': ' + w.reason.replace(/:.*/, '')),
      ['service default/reviews.default.svc.cluster.local: has no VIP (a headless service', 'service default/ratings.default.svc.cluster.local: uses waypoint 10.96.99.9', 'workload ext: has no usable IP address (hostname db.example.com only); skipped'],
    );
  });

  test('load balancing: locality preferences warned; ALLOW_ALL health policy uses unhealthy workloads', () => {
    const r = translateAmbient({
      addresses: [svc({ loadBalancing: { routingPreference: ['NETWORK', 'ZONE'], mode: 'FAILOVER', healthPolicy: 'ALLOW_ALL' } }), wl('w1', '10.244.1.1', { status: 'UNHEALTHY' })],
    });
    assert.match(r.warnings[0].reason, /routing preference \[NETWORK, ZONE\], mode FAILOVER\) is not implemented/);
    assert.ok(r.model.endpoints.every((e) => e.healthy));
    assert.equal(r.model.workloads[0].healthy, false);
  });

  test('a workload of a service not received: name from NAME.NS.svc.*, ports from the workload', () => {
    const r = translateAmbient({ addresses: [wl('w1', '10.244.1.1', { services: { 'shop/web.shop.svc.cluster.local': { ports: [{ servicePort: 80, targetPort: 8080 }] }, 'shop/api.example.com': { ports: [{ servicePort: 443, targetPort: 443 }] } } })] });
    assert.deepEqual(r.model.endpoints.map((e) => `${e.service} ${e.servicePort}→${e.port}`), ['shop/web 80→8080']);
    assert.match(r.warnings[0].reason, /service shop\/api.example.com is not known/);
  });

  test('invalid resources are rejected whole with the field path; the rest is translated', () => {
    const bad = wl('bad', '10.244.1.9');
    bad.workload.addresses = ['AQID']; // 3 bytes
    const r = translateAmbient({ addresses: [bad, wl('good', '10.244.1.1')], authorizations: [{ name: 'p', groups: [{ rules: [{ matches: [{ destinationPorts: [65616] }] }] }] }] });
    assert.deepEqual(r.model.workloads.map((w) => w.name), ['good']);
    assert.ok(!r.model.endpoints.some((e) => e.address === '10.244.1.9'));
    assert.deepEqual(r.model.policies!.l4, []);
    assert.deepEqual(r.warnings, [
      { resource: 'workload bad', reason: 'rejected: workload.addresses[0]: 3 bytes; an IP address has 4 (IPv4) or 16 (IPv6)' },
      { resource: 'authorization /p', reason: 'rejected: groups[0].rules[0].matches[0].destinationPorts[0]: 65616 is out of range (1..65535)' },
    ]);
  });
});
