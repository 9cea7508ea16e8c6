// Policies from a newer control plane than this build knows must be refused, not enforced with
// conditions silently dropped by the protobuf decoder.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeToJson, encodeJson, unknownFields } from '../xds/proto/json';

const AUTHZ = 'istio.security.Authorization';

function ld(fieldNo: number, body: Uint8Array): Buffer {
  // length-delimited field: tag, varint length (< 128 here), body
  assert.ok(body.length < 128);
  return Buffer.concat([Buffer.from([(fieldNo << 3) | 2, body.length]), Buffer.from(body)]);
}

test('an Authorization with only known fields has none unknown', () => {
  const bytes = encodeJson(AUTHZ, {
    name: 'p',
    namespace: 'ns',
    action: 'DENY',
    groups: [{ rules: [{ matches: [{ destinationPorts: [80], notNamespaces: [{ exact: 'x' }] }] }] }],
  });
  assert.deepEqual(unknownFields(AUTHZ, bytes), []);
});

test('unknown fields are found at the top level and deep inside a Match', () => {
  const match = Buffer.concat([Buffer.from(encodeJson('istio.security.Match', { destinationPorts: [80] })), ld(11, Buffer.from([0x0a, 0x02, 0x6e, 0x73]))]);
  const bytes = Buffer.concat([
    ld(1, Buffer.from('p')),
    ld(5, ld(1, ld(2, match))), // groups[0].rules[0].matches[0]
    Buffer.from([6 << 3, 1]), // a varint field 6 = true
  ]);
  assert.deepEqual(unknownFields(AUTHZ, bytes).sort(), ['#6', 'groups.rules.matches.#11']);
  // ...which the decoder alone would have dropped without a trace:
  assert.deepEqual(decodeToJson(AUTHZ, bytes), { name: 'p', groups: [{ rules: [{ matches: [{ destinationPorts: [80] }] }] }] });
});
