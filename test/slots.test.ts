import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildSlots } from '../mesh-agent/datapath/slots';

const count = (slots: Array<{ ip: string }>) => slots.reduce<Record<string, number>>((m, s) => ((m[s.ip] = (m[s.ip] ?? 0) + 1), m), {});

test('small weights are expanded exactly, reduced by their GCD', () => {
  assert.deepEqual(count(buildSlots([{ ip: 'a', port: 1, weight: 2 }, { ip: 'b', port: 1, weight: 6 }])), { a: 1, b: 3 });
});

test('the table does not depend on the order backends are listed in', () => {
  const x = [{ ip: '10.0.0.2', port: 80, weight: 3 }, { ip: '10.0.0.1', port: 80, weight: 1 }];
  assert.deepEqual(buildSlots(x), buildSlots([...x].reverse()));
});

test('large weights are apportioned over the slot budget, every backend keeping a slot', () => {
  const slots = buildSlots(
    [
      { ip: 'a', port: 1, weight: 1_000_000 },
      { ip: 'b', port: 1, weight: 1 },
      { ip: 'c', port: 1, weight: 333_333 },
    ],
    256,
  );
  const c = count(slots);
  assert.equal(slots.length, 256);
  assert.equal(c.b, 1);
  // a : c should stay close to 3 : 1 (within one slot of the exact share)
  assert.ok(Math.abs(c.a - (255 * 1_000_000) / 1_333_333) <= 1.5, JSON.stringify(c));
});

test('zero-weight and duplicate backends', () => {
  assert.deepEqual(buildSlots([{ ip: 'a', port: 1, weight: 0 }]), []);
  assert.deepEqual(count(buildSlots([{ ip: 'a', port: 1, weight: 1 }, { ip: 'a', port: 1, weight: 1 }, { ip: 'b', port: 1, weight: 2 }])), {
    a: 1,
    b: 1,
  });
});

test('more backends than the slot budget still keep their weights (budget grows to 4 per backend)', () => {
  const many = Array.from({ length: 300 }, (_, i) => ({ ip: `b${String(i).padStart(3, '0')}`, port: 1, weight: 1 + (i % 4) }));
  const c = count(buildSlots(many, 256));
  assert.equal(Object.keys(c).length, 300);
  many.forEach((b) => assert.equal(c[b.ip], b.weight));
});
