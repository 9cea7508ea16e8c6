// Cluster objects → model, without an API server: enrollment decisions, EndpointSlice semantics
// (readiness, terminating fallback, duplicates, named ports), what is skipped and said so.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  canonicalJson,
  decideEnrollment,
  deriveModel,
  KubernetesSourceError,
  parseEnrollment,
  type ClusterView,
  type EndpointSlice,
  type Pod,
  type Service,
} from '../mesh-agent/sources/kubernetes';

const E = parseEnrollment();

describe('enrollment', () => {
  const ambient = { 'istio.io/dataplane-mode': 'ambient' };
  const ours = { 'sockmesh.io/mesh': 'enabled' };
  const cases: Array<[string, Record<string, string> | undefined, Record<string, string> | undefined, boolean]> = [
    ['namespace ambient', {}, ambient, true],
    ['namespace ours', {}, ours, true],
    ['neither', {}, { team: 'x' }, false],
    ['no namespace known', {}, undefined, false],
    ['pod ambient in a plain namespace', ambient, {}, true],
    ['pod ours in a plain namespace', ours, {}, true],
    ['pod opts out (istio none) of an ambient namespace', { 'istio.io/dataplane-mode': 'none' }, ambient, false],
    ['pod opts out (ours disabled) of an ambient namespace', { 'sockmesh.io/mesh': 'disabled' }, ambient, false],
    ['pod opt-out beats its own enrollment label', { ...ambient, 'sockmesh.io/mesh': 'disabled' }, {}, false],
    ['namespace opts out of sockmesh while ambient', {}, { ...ambient, 'sockmesh.io/mesh': 'disabled' }, false],
    ['pod label enrolls in an opted-out namespace', ours, { 'sockmesh.io/mesh': 'disabled' }, true],
    ['another value of the label is nothing', { 'istio.io/dataplane-mode': 'sidecar' }, {}, false],
  ];
  for (const [name, pod, ns, want] of cases) {
    test(name, () => assert.equal(decideEnrollment(pod, ns, E).enrolled, want));
  }

  test('malformed or contradictory labels are refused with SM_K8S_OPTIONS', () => {
    for (const o of [{ ourLabel: 'no-equals' }, { namespaceLabel: 'bad key=x' }, { ourLabel: 'a=b', optOutLabels: ['a=b'] }, { ourLabel: 'k=' + 'v'.repeat(64) }]) {
      assert.throws(() => parseEnrollment(o), (e: unknown) => e instanceof KubernetesSourceError && e.code === 'SM_K8S_OPTIONS', JSON.stringify(o));
    }
    assert.deepEqual(
      parseEnrollment({ namespaceLabel: 'example.com/dp=on', ourLabel: 'mesh=yes' }).optOut.map((m) => m.text),
      ['example.com/dp=none', 'mesh=disabled'],
    );
  });
});

const ns = (name: string, labels: Record<string, string> = {}) => ({ metadata: { name, labels } });

function runningPod(name: string, extra: { labels?: Record<string, string>; annotations?: Record<string, string>; ip?: string; node?: string; hostNetwork?: boolean } = {}): Pod {
  const ip = extra.ip ?? '10.0.0.1';
  return {
    metadata: { name, namespace: 'app', uid: `uid-${name}`, labels: extra.labels, annotations: extra.annotations },
    spec: { nodeName: extra.node ?? 'n1', hostNetwork: extra.hostNetwork },
    status: { phase: 'Running', podIP: ip, podIPs: [{ ip }], conditions: [{ type: 'Ready', status: 'True' }] },
  };
}

function svc(name: string, spec: Service['spec']): Service {
  return { metadata: { name, namespace: 'app' }, spec };
}

function slice(name: string, service: string, s: Omit<EndpointSlice, 'metadata'>): EndpointSlice {
  return { metadata: { name, namespace: 'app', labels: { 'kubernetes.io/service-name': service } }, ...s };
}

const derive = (v: Partial<ClusterView>) => deriveModel({ namespaces: [ns('app', { 'istio.io/dataplane-mode': 'ambient' })], pods: [], services: [], endpointSlices: [], ...v }, { nodeName: 'n1', enrollment: E, services: true, cgroup: false });

describe('deriveModel: workloads', () => {
  test('host network, Istio sidecar, bad IPs and other nodes are left out (the first three said so)', () => {
    const d = derive({
      pods: [
        runningPod('ok'),
        runningPod('hostnet', { hostNetwork: true }),
        runningPod('sidecar', { annotations: { 'sidecar.istio.io/status': '{"containers":["istio-proxy"]}' } }),
        runningPod('loop', { ip: '127.0.0.1' }),
        runningPod('elsewhere', { node: 'n2' }),
      ],
    });
    assert.deepEqual(d.model.workloads.map((w) => w.name), ['ok']);
    assert.deepEqual(d.warnings.map((w) => w.resource), ['pod app/hostnet', 'pod app/loop', 'pod app/sidecar']);
    assert.match(d.warnings[1].reason, /loopback/);
  });

  test('IPv6 pod IPs are canonicalised; status.podIP is used when podIPs is absent', () => {
    const p = runningPod('v6');
    p.status!.podIPs = [{ ip: '10.0.0.9' }, { ip: 'FD00:0:0:0::0009' }];
    const q = runningPod('old');
    delete q.status!.podIPs;
    q.status!.podIP = '10.0.0.10';
    const d = derive({ pods: [p, q] });
    assert.deepEqual(d.model.workloads.map((w) => w.ips), [['10.0.0.10'], ['10.0.0.9', 'fd00::9']]);
  });
});

describe('deriveModel: services and EndpointSlices', () => {
  const web = svc('web', { type: 'ClusterIP', clusterIP: '10.96.0.1', clusterIPs: ['10.96.0.1'], ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 'http' }] });
  const ep = (ip: string, conditions: Record<string, boolean | null>, node = 'n1') => ({ addresses: [ip], conditions, nodeName: node });

  test('terminating-but-serving endpoints take traffic only while nothing is ready', () => {
    const terminating = ep('10.0.0.2', { ready: false, serving: true, terminating: true });
    let d = derive({ services: [web], endpointSlices: [slice('w1', 'web', { addressType: 'IPv4', ports: [{ name: 'http', port: 8080 }], endpoints: [ep('10.0.0.1', { ready: true }), terminating] })] });
    assert.deepEqual(d.model.endpoints.map((e) => [e.address, e.healthy]), [['10.0.0.1', true], ['10.0.0.2', false]]);
    d = derive({ services: [web], endpointSlices: [slice('w1', 'web', { addressType: 'IPv4', ports: [{ name: 'http', port: 8080 }], endpoints: [ep('10.0.0.1', { ready: false, serving: false }), terminating] })] });
    assert.deepEqual(d.model.endpoints.map((e) => [e.address, e.healthy]), [['10.0.0.1', false], ['10.0.0.2', true]]);
  });

  test('unknown readiness (null/absent) counts as ready', () => {
    const d = derive({ services: [web], endpointSlices: [slice('w1', 'web', { addressType: 'IPv4', ports: [{ name: 'http', port: 8080 }], endpoints: [ep('10.0.0.1', { ready: null }), { addresses: ['10.0.0.3'] }] })] });
    assert.deepEqual(d.model.endpoints.map((e) => e.healthy), [true, true]);
  });

  test('an address in two slices (moving between them) is one endpoint, healthy if either says so', () => {
    const d = derive({
      services: [web],
      endpointSlices: [
        slice('w1', 'web', { addressType: 'IPv4', ports: [{ name: 'http', port: 8080 }], endpoints: [ep('10.0.0.1', { ready: false })] }),
        slice('w2', 'web', { addressType: 'IPv4', ports: [{ name: 'http', port: 8080 }], endpoints: [ep('10.0.0.1', { ready: true })] }),
      ],
    });
    assert.deepEqual(d.model.endpoints, [{ service: 'app/web', address: '10.0.0.1', servicePort: 'http', port: 8080, weight: 1, healthy: true, node: 'n1' }]);
  });

  test('a named targetPort resolved differently per pod: per-endpoint ports, no service-level targetPort', () => {
    const d = derive({
      services: [web],
      endpointSlices: [
        slice('w1', 'web', { addressType: 'IPv4', ports: [{ name: 'http', port: 8080 }], endpoints: [ep('10.0.0.1', { ready: true })] }),
        slice('w2', 'web', { addressType: 'IPv4', ports: [{ name: 'http', port: 9000 }], endpoints: [ep('10.0.0.2', { ready: true })] }),
      ],
    });
    assert.deepEqual(d.model.services[0].ports, [{ name: 'http', port: 80, protocol: 'TCP' }]);
    assert.deepEqual(d.model.endpoints.map((e) => [e.address, e.port]), [['10.0.0.1', 8080], ['10.0.0.2', 9000]]);
  });

  test('slice ports that the service does not have, FQDN slices, family mismatches and unlabelled slices', () => {
    const d = derive({
      services: [web],
      endpointSlices: [
        slice('w1', 'web', { addressType: 'IPv4', ports: [{ name: 'grpc', port: 9090 }, { name: 'http', port: 8080, protocol: 'UDP' }], endpoints: [ep('10.0.0.1', { ready: true })] }),
        slice('w2', 'web', { addressType: 'FQDN', ports: [{ name: 'http', port: 8080 }], endpoints: [{ addresses: ['db.example.com'] }] }),
        slice('w3', 'web', { addressType: 'IPv4', ports: [{ name: 'http', port: 8080 }], endpoints: [ep('fd00::1', { ready: true })] }),
        { metadata: { name: 'loose', namespace: 'app' }, addressType: 'IPv4', ports: [], endpoints: [] },
      ],
    });
    assert.deepEqual(d.model.endpoints, []);
    assert.deepEqual(
      d.warnings.map((w) => w.resource),
      ['endpointslice app/loose', 'endpointslice app/w2', 'endpointslice app/w3'],
    );
  });

  test('an IPv6 single-stack service, and ClusterIP services with numeric-string targetPorts', () => {
    const d = derive({
      services: [svc('v6', { type: 'ClusterIP', clusterIP: 'fd00:96::1', clusterIPs: ['fd00:96::1'], ports: [{ port: 443, targetPort: '8443' }] })],
      endpointSlices: [slice('v6-1', 'v6', { addressType: 'IPv6', ports: [{ name: '', port: 8443, protocol: 'TCP' }], endpoints: [ep('fd00:10::5', { ready: true })] })],
    });
    assert.deepEqual(d.model.services, [{ namespace: 'app', name: 'v6', vips: ['fd00:96::1'], ports: [{ port: 443, protocol: 'TCP', targetPort: 8443 }] }]);
    assert.deepEqual(d.model.endpoints.map((e) => [e.address, e.servicePort, e.port]), [['fd00:10::5', 443, 8443]]);
  });

  test('services off: no services, no endpoints, no service warnings', () => {
    const d = deriveModel(
      { namespaces: [], pods: [], services: [svc('x', { type: 'ExternalName', externalName: 'a.b' })], endpointSlices: [] },
      { nodeName: 'n1', enrollment: E, services: false, cgroup: false },
    );
    assert.deepEqual(d.model, { services: [], endpoints: [], workloads: [] });
    assert.deepEqual(d.warnings, []);
  });
});

test('canonicalJson does not depend on key order', () => {
  assert.equal(canonicalJson({ b: 1, a: { d: [1, { y: 2, x: 1 }], c: undefined } }), canonicalJson({ a: { d: [1, { x: 1, y: 2 }] }, b: 1 }));
});
