// Map capacity: a change that does not fit is refused as a whole, with an error that names the
// map and its capacity, and the service keeps its previous, complete state. Real maps, created
// small on purpose through the capacity settings.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { desiredState, Reconciler } from '../mesh-agent/datapath/reconciler';
import { Model } from '../core/model';
import { svcKey, SvcValue, svcValue } from '../abi/codecs';
import { TypedMap } from '../mesh-agent/datapath/maps';
import { Sandbox } from '../sandbox/sandbox';
import { kernelSkip, podNamespaces } from './kernel';
import * as path from 'node:path';

function model(backendsPerService: number[]): Model {
  const m: Model = { services: [], endpoints: [], workloads: [] };
  backendsPerService.forEach((n, i) => {
    m.services.push({ namespace: 'default', name: `svc${i}`, vips: [`198.19.1.${i + 1}`], ports: [{ port: 80, protocol: 'TCP' }] });
    for (let b = 0; b < n; b++) {
      m.endpoints.push({ service: `default/svc${i}`, address: `198.18.9.${b + 1}`, port: 8080, weight: 1, healthy: true });
    }
  });
  return m;
}

describe('[kernel] map capacity', kernelSkip(), () => {
  let sb: Sandbox;
  let dp: Datapath;
  let rec: Reconciler;
  const svcEntry = (i: number): SvcValue | undefined =>
    new Map(new TypedMap(dp.maps.sm_services, svcKey, svcValue).entries().map(([k, v]) => [k.ip, v])).get(`198.19.1.${i + 1}`);

  before(async () => {
    sb = await Sandbox.create({ nodes: [{ name: 'node1', pods: [{ name: 'a' }] }] });
    dp = Datapath.install({
      cgroupPath: sb.node('node1').cgroupPath,
      bpffsDir: path.join(sb.ensureBpffsDir(), 'cap'),
      mapSizes: { sm_backends: 8, sm_services: 4 },
    });
    rec = new Reconciler(dp);
    rec.adopt();
  });

  after(async () => {
    dp?.close();
    if (dp) Datapath.remove(dp.bpffsDir);
    await sb?.teardown();
  });

  test('a backend table that does not fit is refused whole; the service keeps its old table', () => {
    let r = rec.apply(desiredState(model([3, 2]), 'node1', podNamespaces(sb)));
    assert.deepEqual(r.errors, []);
    assert.equal(dp.maps.sm_backends.count(), 5);
    const svc1 = svcEntry(1)!;

    // svc1 grows to 6 backends: the new generation (6) would sit beside the old slots (5) -> 11 > 8.
    // svc2 (1 backend) fits and is applied in the same pass.
    r = rec.apply(desiredState(model([3, 6, 1]), 'node1', podNamespaces(sb)));
    assert.equal(r.errors.length, 1);
    const e = r.errors[0];
    assert.equal(e.code, 'SM_MAP_FULL');
    assert.match(e.message, /map sm_backends is full \(capacity 8\)/);
    assert.match(e.message, /default\/svc1/);
    assert.deepEqual(svcEntry(1), svc1, 'svc1 must keep its previous generation');
    assert.equal(r.added, 1);
    assert.equal(dp.maps.sm_backends.count(), 6, 'no half-written slots left behind');
  });

  test('room freed by removals in the same apply is used in the same apply', () => {
    rec.apply(desiredState(model([]), 'node1', podNamespaces(sb)));
    assert.deepEqual(rec.apply(desiredState(model([5]), 'node1', podNamespaces(sb))).errors, []);
    // Swap svc0 (5 slots) for a service at another index (5 slots) in a map of 8: the old slots go
    // only after the RCU wait, so the first pass cannot fit the new one; the retry pass must.
    const swapped = model([0, 5]);
    swapped.services = swapped.services.filter((x) => x.name !== 'svc0');
    const r = rec.apply(desiredState(swapped, 'node1', podNamespaces(sb)));
    assert.deepEqual(r.errors, []);
    assert.equal(r.added, 1);
    assert.equal(r.removed, 1);
    assert.equal(dp.maps.sm_backends.count(), 5);
  });

  test('a service that does not fit in sm_services is refused with the map named', () => {
    rec.apply(desiredState(model([]), 'node1', podNamespaces(sb)));
    const r = rec.apply(desiredState(model([1, 1, 1, 1, 1]), 'node1', podNamespaces(sb)));
    assert.equal(r.errors.length, 1);
    assert.equal(r.errors[0].code, 'SM_MAP_FULL');
    assert.match(r.errors[0].message, /map sm_services is full \(capacity 4\)/);
    assert.equal(dp.maps.sm_services.count(), 4);
  });
});
