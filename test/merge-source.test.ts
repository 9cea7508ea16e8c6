import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mergeModels } from '../mesh-agent/sources/merge';
import type { Model } from '../core/model';

const cp: Model = {
  services: [{ namespace: 'shop', name: 'web', vips: ['198.19.0.10'], ports: [{ port: 80, protocol: 'TCP' }] }],
  endpoints: [{ service: 'shop/web', address: '198.18.1.11', weight: 1, healthy: true }],
  workloads: [
    { namespace: 'shop', name: 'web-1', serviceAccount: 'web', ips: ['198.18.1.11'], node: 'n1' },
    { namespace: 'shop', name: 'legacy', serviceAccount: 'old', ips: ['198.18.1.12'], node: 'n1' },
    { namespace: 'pay', name: 'api', serviceAccount: 'api', ips: ['198.18.2.10'], node: 'n2' },
  ],
  policies: { l4: [], l7: [] },
};
const pods: Model = {
  services: [],
  endpoints: [],
  workloads: [{ namespace: 'shop', name: 'web-1', serviceAccount: 'web', ips: ['198.18.1.11'], node: 'n1', cgroup: '/sys/fs/cgroup/kubepods.slice/x' }],
};

test('Kubernetes describes local pods (with cgroups); the control plane the rest; unenrolled local pods are not meshed', () => {
  const m = mergeModels(cp, pods, 'n1');
  assert.deepEqual(m.services, cp.services);
  assert.deepEqual(m.policies, cp.policies);
  const byName = new Map(m.workloads.map((w) => [w.name, w]));
  assert.equal(byName.get('web-1')!.cgroup, '/sys/fs/cgroup/kubepods.slice/x');
  assert.equal(byName.get('legacy')!.node, undefined, 'a pod Kubernetes did not enrol must not be local');
  assert.equal(byName.get('api')!.node, 'n2');
  assert.equal(m.workloads.length, 3);
});

test('without a control plane, services come from Kubernetes', () => {
  const k8s: Model = { ...pods, services: cp.services, endpoints: cp.endpoints };
  const m = mergeModels({ services: [], endpoints: [], workloads: [] }, k8s, 'n1');
  assert.deepEqual(m.services, cp.services);
  assert.deepEqual(m.endpoints, cp.endpoints);
});
