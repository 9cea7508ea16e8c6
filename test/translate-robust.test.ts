// Robustness: mutated, truncated and random inputs never make the translators throw, and a resource
// is either rejected (then the model is exactly the model without it) or translated into a model
// the datapath accepts.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { parse } from 'yaml';
import { parseIp } from '../core/ip';
import type { L4Expr, Model } from '../core/model';
import { translateAmbient } from '../xds/translate/ambient';
import { translateConfigDump, translateEnvoy } from '../xds/translate/envoy';
import { splitRbacFilters } from '../xds/translate/rbac';
import { validateResource } from '../xds/translate/validate';
import { TYPE } from '../xds/types';
import { fixtureDir, istioFixture } from './fixture-dir';

const fixturesDir = (): string => fixtureDir('translate');
const FIX = fixturesDir();
const text = (rel: string): string => fs.readFileSync(path.resolve(FIX, rel), 'utf8');

function rng(seed: number): () => number {
  return () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
}
const rand = rng(7);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];

const GARBAGE: unknown[] = [0, -1, 1, 70000, 65536, 4294967296, 1e300, 2.5, '', 'x', '10.0.0.999', '0.0.0.0', '::ffff:1.2.3.4', '224.0.0.1', '!!', null, [], {}, true, 'UNHEALTHY', 'DEGRADED', [null], { any: true }, '80'];

/** Every path to a value inside `o`. */
function paths(o: unknown, p: Array<string | number> = [], out: Array<Array<string | number>> = []): Array<Array<string | number>> {
  if (p.length) out.push(p);
  if (Array.isArray(o)) o.forEach((x, i) => paths(x, [...p, i], out));
  else if (o && typeof o === 'object') for (const [k, x] of Object.entries(o)) paths(x, [...p, k], out);
  return out;
}

/** One random mutation: replace a value, delete a key, or cut a list short. */
function mutate<T>(o: T): T {
  const c: any = structuredClone(o);
  const ps = paths(c);
  if (!ps.length) return pick(GARBAGE) as T;
  const p = pick(ps);
  let parent = c;
  for (const k of p.slice(0, -1)) parent = parent[k];
  const last = p[p.length - 1];
  const r = rand();
  if (r < 0.7) parent[last] = structuredClone(pick(GARBAGE));
  else if (Array.isArray(parent)) parent.length = Number(last);
  else delete parent[last];
  return c;
}

/** Everything in a model is something the datapath and the policy layer accept. */
function assertSane(m: Model, ctx: string): void {
  const ip = (a: string) => assert.ok(parseIp(a).ok && parseIp(a).ok && (parseIp(a) as any).address === a, `${ctx}: address ${a}`);
  const port = (p: number | undefined) => assert.ok(p === undefined || (Number.isInteger(p) && p >= 1 && p <= 65535), `${ctx}: port ${p}`);
  for (const s of m.services) {
    assert.ok(s.vips.length > 0 && s.ports.length > 0, ctx);
    s.vips.forEach(ip);
    s.ports.forEach((p) => (port(p.port), port(p.targetPort)));
  }
  for (const e of m.endpoints) {
    ip(e.address);
    port(e.port);
    assert.ok(Number.isInteger(e.weight) && e.weight >= 1 && e.weight <= 1_000_000, `${ctx}: weight ${e.weight}`);
    assert.equal(typeof e.healthy, 'boolean');
  }
  for (const w of m.workloads) {
    assert.ok(w.ips.length > 0, ctx);
    w.ips.forEach(ip);
  }
  const expr = (e: L4Expr): void => {
    if ('and' in e) e.and.forEach(expr);
    else if ('or' in e) e.or.forEach(expr);
    else if ('not' in e) expr(e.not);
    // RBAC destination_port 0 is valid Envoy config (it never matches), so 0 is allowed here.
    else if ('destinationPort' in e) assert.ok(Number.isInteger(e.destinationPort) && e.destinationPort >= 0 && e.destinationPort <= 65535, `${ctx}: port ${e.destinationPort}`);
  };
  for (const p of m.policies?.l4 ?? []) expr(p.when);
  assert.doesNotThrow(() => JSON.stringify(m));
}

describe('mutated resources: rejected whole, or translated sanely', () => {
  const dump = JSON.parse(text(istioFixture('configdump', 'endpoints-sidecar.json')));
  const clas: any[] = dump.configs[0].dynamic_endpoint_configs.map((e: any) => e.endpoint_config);
  const syn = JSON.parse(text('sidecar-synthetic.json'));

  test('ClusterLoadAssignments (EDS): 250 mutations', () => {
    const baseline = (skip: number) => translateEnvoy({ endpoints: clas.filter((_c, i) => i !== skip) }).model;
    let rejected = 0;
    for (let n = 0; n < 250; n++) {
      const i = Math.floor(rand() * clas.length);
      const bad = mutate(clas[i]);
      const reason = validateResource(TYPE.ENDPOINT, 'x', bad);
      const list = clas.map((c, j) => (j === i ? bad : c));
      const r = translateEnvoy({ endpoints: list });
      assertSane(r.model, `mutation ${n}`);
      if (reason !== null) {
        rejected++;
        assert.ok(r.warnings.some((w) => w.reason.startsWith('rejected: ')), `mutation ${n}: rejection is reported`);
        assert.deepEqual(r.model, baseline(i), `mutation ${n} (${reason}): nothing of the rejected CLA is in the model`);
      }
    }
    assert.ok(rejected > 30, `enough mutations were invalid to exercise rejection (${rejected})`);
  });

  test('synthetic clusters, listeners and routes: 150 mutations', () => {
    const kinds = ['clusters', 'endpoints', 'listeners', 'routes'] as const;
    const types = { clusters: TYPE.CLUSTER, endpoints: TYPE.ENDPOINT, listeners: TYPE.LISTENER, routes: TYPE.ROUTE };
    for (let n = 0; n < 150; n++) {
      const kind = pick(kinds);
      const i = Math.floor(rand() * syn[kind].length);
      const bad = mutate(syn[kind][i]);
      const input = { ...syn, [kind]: syn[kind].map((x: unknown, j: number) => (j === i ? bad : x)) };
      const r = translateEnvoy(input);
      assertSane(r.model, `${kind} mutation ${n}`);
      if (validateResource(types[kind], 'x', bad) !== null) {
        const without = translateEnvoy({ ...syn, [kind]: syn[kind].filter((_x: unknown, j: number) => j !== i) });
        assert.deepEqual(r.model, without.model, `${kind} mutation ${n}: a rejected resource contributes nothing`);
      }
    }
  });

  test('ambient authorizations and addresses: 150 mutations', () => {
    const dir = istioFixture('ambient-authorization');
    const auths = fs.readdirSync(dir).filter((f) => !f.endsWith('-in.yaml')).map((f) => parse(fs.readFileSync(path.join(dir, f), 'utf8')));
    const b = (s: string) => Buffer.from(s.split('.').map(Number)).toString('base64');
    const addrs: any[] = [
      { service: { name: 's', namespace: 'n', hostname: 's.n.svc.cluster.local', addresses: [{ address: b('10.96.0.1') }], ports: [{ servicePort: 80, targetPort: 8080 }] } },
      { workload: { uid: 'w1', name: 'w1', namespace: 'n', addresses: [b('10.1.0.1')], services: { 'n/s.n.svc.cluster.local': { ports: [{ servicePort: 80, targetPort: 8080 }] } }, authorizationPolicies: ['cfg/allow'] } },
      { workload: { uid: 'w2', name: 'w2', namespace: 'n', addresses: [b('10.1.0.2')], status: 'UNHEALTHY', services: { 'n/s.n.svc.cluster.local': { ports: [{ servicePort: 80 }] } } } },
    ];
    for (let n = 0; n < 150; n++) {
      const inAuth = rand() < 0.5;
      const list = inAuth ? auths : addrs;
      const i = Math.floor(rand() * list.length);
      const bad = mutate(list[i]);
      const swapped = list.map((x: unknown, j: number) => (j === i ? bad : x));
      const r = translateAmbient(inAuth ? { addresses: addrs, authorizations: swapped } : { addresses: swapped, authorizations: auths });
      assertSane(r.model, `ambient mutation ${n}`);
      if (validateResource(inAuth ? TYPE.AUTHORIZATION : TYPE.ADDRESS, 'x', bad) !== null) {
        const rest = list.filter((_x: unknown, j: number) => j !== i);
        const without = translateAmbient(inAuth ? { addresses: addrs, authorizations: rest } : { addresses: rest, authorizations: auths });
        assert.deepEqual(r.model, without.model, `ambient mutation ${n}: a rejected resource contributes nothing`);
      }
    }
  });

  test('RBAC filters: 300 mutations never throw; invalid ones are rejected whole', () => {
    const dir = istioFixture('authz-rbac');
    const filters = fs.readdirSync(dir).filter((f) => /-out\d*\.yaml$/.test(f)).map((f) => parse(fs.readFileSync(path.join(dir, f), 'utf8')));
    for (let n = 0; n < 300; n++) {
      const bad = mutate(pick(filters));
      const r = splitRbacFilters({ ip: '10.0.0.1', port: 80 }, [bad]);
      if (r.rejected) assert.deepEqual([r.l4, r.l7], [[], []]);
      for (const p of r.l4) assertSane({ services: [], endpoints: [], workloads: [], policies: { l4: [p], l7: [] } }, `rbac mutation ${n}`);
    }
  });
});

describe('truncated and random input', () => {
  test('config dumps cut anywhere: JSON.parse fails or the translation is sane', () => {
    for (const f of ['endpoints-sidecar.json', 'waypoint-full.json', 'http-route-cluster-listener.json']) {
      const t = text(istioFixture('configdump', f));
      for (let n = 0; n < 20; n++) {
        const cut = t.slice(0, Math.floor(rand() * t.length));
        let doc: unknown;
        try {
          doc = parse(cut); // YAML (a JSON superset) accepts some truncations JSON.parse would not
        } catch {
          continue;
        }
        const r = translateConfigDump(doc);
        assertSane(r.model, `${f} cut`);
      }
    }
  });

  test('YAML fixtures cut anywhere', () => {
    for (const f of ['ambient-authorization/allow-full.yaml', 'authz-rbac/tcp-deny-both-http-tcp-out.yaml', 'authz-rbac/http-single-policy-out.yaml']) {
      const t = text(istioFixture(f));
      for (let n = 0; n < 40; n++) {
        let doc: any;
        try {
          doc = parse(t.slice(0, Math.floor(rand() * t.length)));
        } catch {
          continue;
        }
        assertSane(translateAmbient({ authorizations: [doc] }).model, f);
        assert.doesNotThrow(() => splitRbacFilters({ port: 1 }, [doc]));
      }
    }
  });

  test('junk of every shape into every entry point', () => {
    const junk: unknown[] = [undefined, null, 0, 'x', [], {}, [[]], [null, 1, 'a'], { configs: 'x' }, { configs: [null, 1, { '@type': 5 }] }, { clusters: {} }, { endpoints: [{}] }];
    let deep: any = {};
    for (let i = 0; i < 3000; i++) deep = { a: [deep] };
    junk.push(deep, { configs: [deep] }, { listeners: [deep] });
    for (const j of junk) {
      assert.doesNotThrow(() => assertSane(translateConfigDump(j).model, 'dump'));
      assert.doesNotThrow(() => assertSane(translateEnvoy(j as any).model, 'envoy'));
      assert.doesNotThrow(() => assertSane(translateEnvoy({ clusters: [j], endpoints: [j], listeners: [j], routes: [j] }).model, 'envoy lists'));
      assert.doesNotThrow(() => assertSane(translateAmbient({ addresses: [j, { workload: j }, { service: j }], authorizations: [j] }).model, 'ambient'));
      assert.doesNotThrow(() => splitRbacFilters({ port: 80 }, [j as any]));
      for (const t of Object.values(TYPE)) assert.equal(typeof validateResource(t, 'n', j), j !== null && typeof j === 'object' && !Array.isArray(j) ? typeof validateResource(t, 'n', j) : 'string');
    }
  });
});
