// Random and truncated protobuf bytes, and absurd values, on the path a live resource takes in the
// client (decode -> validate -> translate): each case ends as a rejection with a reason or as a
// valid resource; nothing throws, and a rejected resource leaves no trace in the model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { decodeToJson, encodeJson } from '../xds/proto/json';
import { translateAmbient, translateEnvoy, validateResource } from '../xds/translate';
import { TYPE, type TypeUrl } from '../xds/types';
import { istioFixture } from './fixture-dir';

const dump = JSON.parse(
  fs.readFileSync(istioFixture('configdump', 'endpoints-sidecar.json'), 'utf8'),
);

/** Deterministic PRNG (mulberry32), so a failure can be replayed. */
function rng(seed: number): () => number {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Dynamic CLAs that have endpoints, with the Any's `@type` removed (they are the message itself). */
function claJsons(): Array<Record<string, unknown>> {
  const cfgs = dump.configs[0].dynamic_endpoint_configs as Array<{ endpoint_config: Record<string, unknown> }>;
  return cfgs
    .map((c) => {
      const { ['@type']: _t, ...rest } = c.endpoint_config;
      return rest;
    })
    .filter((c) => Array.isArray(c.endpoints) && c.endpoints.length > 0)
    .slice(0, 8);
}

/** What the client does with one resource's bytes; returns 'rejected' or 'accepted'. */
function receive(typeUrl: TypeUrl, bytes: Uint8Array): 'rejected' | 'accepted' {
  let json: Record<string, unknown>;
  try {
    json = decodeToJson(typeUrl, bytes);
  } catch (e) {
    assert.ok((e as Error).message.length > 0);
    return 'rejected';
  }
  const reason = validateResource(typeUrl, String(json.clusterName ?? json.name ?? 'x'), json);
  if (reason) return 'rejected';
  const r = typeUrl === TYPE.AUTHORIZATION ? translateAmbient({ authorizations: [json] }) : translateEnvoy({ endpoints: [json] });
  assert.ok(Array.isArray(r.model.endpoints));
  return 'accepted';
}

test('truncated and bit-flipped ClusterLoadAssignment bytes: rejected with a reason or valid, never a throw', () => {
  const next = rng(42);
  const outcomes = { rejected: 0, accepted: 0 };
  for (const cla of claJsons()) {
    const bytes = encodeJson(TYPE.ENDPOINT, cla);
    assert.equal(receive(TYPE.ENDPOINT, bytes), 'accepted');
    for (let i = 0; i < 150; i++) {
      const b = Buffer.from(bytes);
      const cut = next() < 0.5 ? b.subarray(0, Math.floor(next() * b.length)) : b;
      for (let f = 0; f < 1 + Math.floor(next() * 4); f++) if (cut.length) cut[Math.floor(next() * cut.length)] ^= 1 << Math.floor(next() * 8);
      outcomes[receive(TYPE.ENDPOINT, cut)]++;
    }
  }
  assert.ok(outcomes.rejected > 0 && outcomes.accepted > 0, JSON.stringify(outcomes));
});

test('random bytes of every resource type never throw', () => {
  const next = rng(7);
  for (const t of Object.values(TYPE)) {
    for (let i = 0; i < 200; i++) {
      const b = Buffer.alloc(Math.floor(next() * 64));
      for (let j = 0; j < b.length; j++) b[j] = Math.floor(next() * 256);
      let json: Record<string, unknown> | undefined;
      try {
        json = decodeToJson(t, b);
      } catch {
        continue;
      }
      assert.doesNotThrow(() => validateResource(t, 'x', json));
    }
  }
});

test('absurd values are rejected with a reason naming the field, and leave the model untouched', () => {
  const base = claJsons()[0];
  const cases: Array<[string, (c: any) => void, RegExp]> = [
    ['port 0', (c) => (c.endpoints[0].lbEndpoints[0].endpoint.address.socketAddress.portValue = 0), /portValue/],
    ['port 70000', (c) => (c.endpoints[0].lbEndpoints[0].endpoint.address.socketAddress.portValue = 70000), /portValue/],
    ['weight 0', (c) => (c.endpoints[0].lbEndpoints[0].loadBalancingWeight = 0), /loadBalancingWeight/],
    ['bad address', (c) => (c.endpoints[0].lbEndpoints[0].endpoint.address.socketAddress.address = '10.0.0.300'), /address/],
  ];
  for (const [what, mutate, field] of cases) {
    // The fixture is snake_case; a round trip through protobuf gives the camelCase we mutate.
    const json = decodeToJson(TYPE.ENDPOINT, encodeJson(TYPE.ENDPOINT, base)) as Record<string, any>;
    mutate(json);
    const reason = validateResource(TYPE.ENDPOINT, String(json.clusterName), json);
    assert.ok(reason, `${what}: not rejected`);
    assert.match(reason!, field, `${what}: ${reason}`);
    const r = translateEnvoy({ endpoints: [json] });
    assert.deepEqual(r.model.endpoints, [], `${what}: a partial resource reached the model`);
  }
});
