// `sockmesh agent --kubernetes` against a fake kube-apiserver (no real one can run here): the
// agent meshes this node's pods in enrolled namespaces, translates Services from EndpointSlices,
// and leaves pods of a namespace that is not enrolled, or that run an Istio sidecar, untouched.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ipKey, localEp } from '../abi/codecs';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { TypedMap } from '../mesh-agent/datapath/maps';
import { Sandbox, ServerHandle } from '../sandbox/sandbox';
import { FakeApiServer } from './k8s-fake-apiserver';
import { kernelSkip } from './kernel';

const SOCKMESH = path.resolve(__dirname, '../../bin/sockmesh');
const VIP = '198.19.0.70';

describe('[kernel] agent fed by the Kubernetes API', kernelSkip(), () => {
  let sb: Sandbox;
  let api: FakeApiServer;
  let agent: ChildProcess;
  let dir: string;
  let bpffs: string;
  let err = '';
  const servers: ServerHandle[] = [];

  const pod = (name: string, ns: string, sa: string) => ({
    metadata: { name, namespace: ns, uid: `uid-${name}`, labels: { app: name } },
    spec: { nodeName: 'node1', serviceAccountName: sa, containers: [{ name }] },
    status: {
      phase: 'Running',
      qosClass: 'BestEffort',
      podIP: sb.pod(name).ipv4,
      podIPs: [{ ip: sb.pod(name).ipv4 }],
      conditions: [{ type: 'Ready', status: 'True' }],
    },
  });

  before(async () => {
    sb = await Sandbox.create({ nodes: [{ name: 'node1', pods: [{ name: 'client' }, { name: 'web' }, { name: 'oldapp' }, { name: 'sidecar' }] }] });
    servers.push(await sb.startServer('web', ['serve', '--port', '8080', '--mode', 'id', '--name', 'web']));
    api = await new FakeApiServer().start();
    api.create('namespaces', { metadata: { name: 'shop', labels: { 'istio.io/dataplane-mode': 'ambient' } } });
    api.create('namespaces', { metadata: { name: 'legacy', labels: {} } });
    api.create('pods', pod('client', 'shop', 'client'));
    api.create('pods', pod('web', 'shop', 'web'));
    api.create('pods', pod('oldapp', 'legacy', 'old'));
    // In an enrolled namespace, but injected with an Istio sidecar: left to its sidecar.
    const withSidecar = pod('sidecar', 'shop', 'sidecar') as any;
    withSidecar.metadata.annotations = { 'sidecar.istio.io/status': '{"containers":["istio-proxy"]}' };
    api.create('pods', withSidecar);
    api.create('services', {
      metadata: { name: 'web', namespace: 'shop' },
      spec: { type: 'ClusterIP', clusterIP: VIP, clusterIPs: [VIP], ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 }] },
    });
    api.create('endpointslices', {
      metadata: { name: 'web-abc', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'IPv4',
      endpoints: [{ addresses: [sb.pod('web').ipv4], conditions: { ready: true, serving: true, terminating: false }, nodeName: 'node1', targetRef: { kind: 'Pod', name: 'web', namespace: 'shop' } }],
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
    });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockmesh-k8s-'));
    const kubeconfig = path.join(dir, 'kubeconfig');
    fs.writeFileSync(
      kubeconfig,
      `apiVersion: v1\nkind: Config\nclusters: [{ name: fake, cluster: { server: "${api.url}" } }]\nusers: [{ name: u, user: {} }]\ncontexts: [{ name: c, context: { cluster: fake, user: u } }]\ncurrent-context: c\n`,
    );
    bpffs = path.join(sb.ensureBpffsDir(), 'k8s');
    agent = spawn(
      SOCKMESH,
      ['agent', '--kubernetes', '--node-name', 'node1', '--cgroup-driver', 'none', '--cgroup', sb.node('node1').cgroupPath, '--bpffs', bpffs, '--admin', 'none'],
      { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, KUBECONFIG: kubeconfig } },
    );
    agent.stderr!.on('data', (d) => (err += d));
    for (let i = 0; i < 200 && !err.includes('"applied config"'); i++) await new Promise((r) => setTimeout(r, 50));
    assert.match(err, /"applied config"/, err);
  });

  after(async () => {
    agent?.kill('SIGTERM');
    if (agent) await new Promise((r) => agent.once('exit', r));
    for (const s of servers) await s.stop();
    await api?.close();
    if (bpffs && fs.existsSync(bpffs)) Datapath.remove(bpffs);
    await sb?.teardown();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('a Service from the API is translated in the kernel', async () => {
    const r = await sb.podtool('client', ['ids', '--target', `${VIP}:80`, '--count', '5']);
    assert.deepEqual(r.last.ids, { web: 5 });
  });

  test('only pods of enrolled namespaces are meshed; the legacy namespace is not touched', () => {
    const dp = Datapath.openPinned(bpffs);
    try {
      const local = new TypedMap(dp.maps.sm_local_eps, ipKey, localEp).entries().map(([k]) => k.ip).sort();
      assert.deepEqual(local, [sb.pod('client').ipv4, sb.pod('web').ipv4].sort());
      assert.ok(!local.includes(sb.pod('oldapp').ipv4));
    } finally {
      dp.close();
    }
  });

  test('pods that are not enrolled (a namespace that is not, a pod with an Istio sidecar) are not translated, though in the meshed cgroup', async () => {
    const dp = Datapath.openPinned(bpffs);
    try {
      for (const p of ['oldapp', 'sidecar']) {
        const c0 = dp.counters().connect_translated;
        const r = (await sb.podtool(p, ['connect', '--target', `${VIP}:80`, '--connect-timeout-ms', '1000'])).last;
        assert.equal(r.ok, false, `${p}: ${JSON.stringify(r)}`);
        assert.equal(dp.counters().connect_translated - c0, 0n, p);
      }
      const local = new TypedMap(dp.maps.sm_local_eps, ipKey, localEp).entries().map(([k]) => k.ip);
      assert.ok(!local.includes(sb.pod('sidecar').ipv4));
    } finally {
      dp.close();
    }
  });

  test('enrolling the namespace later meshes its pods', async () => {
    api.update('namespaces', 'legacy', (ns: any) => (ns.metadata.labels = { 'sockmesh.io/mesh': 'enabled' }));
    const dp = Datapath.openPinned(bpffs);
    try {
      for (let i = 0; i < 100; i++) {
        const local = new TypedMap(dp.maps.sm_local_eps, ipKey, localEp).entries().map(([k]) => k.ip);
        if (local.includes(sb.pod('oldapp').ipv4)) return;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.fail('the enrolled namespace never reached the kernel');
    } finally {
      dp.close();
    }
  });
});
