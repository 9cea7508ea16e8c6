// The L7 path end to end in the sandbox: agent -> kernel steering -> `sockmesh proxy` -> backend.
// A pod calls a service VIP that has HTTP rules: the kernel sends the connection to the node's
// proxy, which learns the original destination and the caller's identity from the kernel map, not
// from the request. Services without HTTP rules never touch the proxy.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Agent } from '../mesh-agent/agent';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { L7Readiness } from '../mesh-agent/datapath/l7-ready';
import { createLogger } from '../core/log';
import type { Model } from '../core/model';
import { StaticSource } from '../mesh-agent/sources/source';
import { Sandbox, ServerHandle } from '../sandbox/sandbox';
import { scaled, waitUntil } from '../sandbox/time-scale';
import { kernelSkip } from './kernel';

const VIP_HTTP = '198.19.0.50';
const VIP_GRPC = '198.19.0.51';
const VIP_PLAIN = '198.19.0.52';
const RBAC = 'type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC';

describe('[kernel] L7: kernel steering to the node proxy', kernelSkip(), () => {
  let sb: Sandbox;
  let dir: string;
  let agent: Agent;
  let proxy: ChildProcess;
  let proxyOut = '';
  let proxyErr = '';
  let bpffs: string;
  const servers: ServerHandle[] = [];

  const model = (): Model => {
    const ip = (n: string) => sb.pod(n).ipv4;
    return {
      services: [
        { namespace: 'default', name: 'web', vips: [VIP_HTTP], ports: [{ port: 80, protocol: 'TCP', targetPort: 8080 }] },
        { namespace: 'default', name: 'grpc', vips: [VIP_GRPC], ports: [{ port: 9090, protocol: 'TCP' }] },
        { namespace: 'default', name: 'plain', vips: [VIP_PLAIN], ports: [{ port: 80, protocol: 'TCP', targetPort: 8080 }] },
      ],
      endpoints: [
        { service: 'default/web', address: ip('web1'), weight: 1, healthy: true },
        { service: 'default/grpc', address: ip('web1'), weight: 1, healthy: true },
        { service: 'default/plain', address: ip('web2'), weight: 1, healthy: true },
      ],
      workloads: ['client', 'other', 'web1', 'web2'].map((n) => ({
        namespace: 'default',
        name: n,
        serviceAccount: n,
        ips: [ip(n)],
        node: 'node1',
      })),
      policies: {
        l4: [],
        l7: [
          {
            destination: { ip: VIP_HTTP, port: 80 },
            filters: [
              {
                name: 'envoy.filters.http.rbac',
                config: {
                  '@type': RBAC,
                  rules: { action: 'DENY', policies: { 'deny-admin': { permissions: [{ urlPath: { path: { prefix: '/deny' } } }], principals: [{ any: true }] } } },
                },
              },
              {
                name: 'envoy.filters.http.rbac',
                config: {
                  '@type': RBAC,
                  rules: {
                    action: 'ALLOW',
                    policies: {
                      'allow-client': {
                        permissions: [{ any: true }],
                        principals: [{ authenticated: { principalName: { exact: 'spiffe://cluster.local/ns/default/sa/client' } } }],
                      },
                    },
                  },
                },
              },
            ],
          },
          {
            destination: { service: 'default/grpc', port: 9090 },
            filters: [
              {
                name: 'envoy.filters.http.rbac',
                config: {
                  '@type': RBAC,
                  rules: { action: 'DENY', policies: { 'deny-forbidden': { permissions: [{ urlPath: { path: { exact: '/echo.Echo/Forbidden' } } }], principals: [{ any: true }] } } },
                },
              },
            ],
          },
        ],
      },
    };
  };

  const http = async (pod: string, target: string, p: string, host?: string) =>
    (await sb.podtool(pod, ['http', '--target', target, '--path', p, ...(host ? ['--host', host] : [])])).last;
  const counters = () => {
    const dp = Datapath.openPinned(bpffs);
    try {
      return dp.counters();
    } finally {
      dp.close();
    }
  };
  const proxyRequests = () => proxyOut.split('\n').filter((l) => l.startsWith('{')).length;

  before(async () => {
    sb = await Sandbox.create({
      nodes: [{ name: 'node1', pods: [{ name: 'client' }, { name: 'other' }, { name: 'web1' }, { name: 'web2' }, { name: 'proxy' }] }],
    });
    servers.push(await sb.startServer('web1', ['serve-http', '--port', '8080', '--name', 'web1']));
    servers.push(await sb.startServer('web1', ['serve-grpc', '--port', '9090', '--name', 'web1']));
    servers.push(await sb.startServer('web2', ['serve-http', '--port', '8080', '--name', 'web2']));
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockmesh-l7-'));
    bpffs = path.join(sb.ensureBpffsDir(), 'l7');
    const control = path.join(dir, 'proxy.sock');
    const proxyPod = sb.pod('proxy');
    agent = new Agent({
      source: new StaticSource({ model: model(), nodeName: 'node1' }),
      cgroupPath: sb.node('node1').cgroupPath,
      bpffsDir: bpffs,
      // No cgroupPath: the proxy tells the agent its own cgroup when it connects (its hello).
      proxy: { host: proxyPod.ipv4, port: 15001, controlPath: control },
      log: createLogger({ level: 'warn' }),
    });
    assert.deepEqual((await agent.start()).errors, []);
    // The proxy runs in its pod's network namespace and cgroup (exempt from steering, so its own
    // upstream connects are translated to backends). nsenter, not `ip netns exec`, so that it sees
    // the host's /sys/fs/bpf.
    await startProxy();
    // ...and the datapath now exempts the proxy's cgroup, learned from the proxy itself.
    const proxyCgroup = fs.statSync(proxyPod.cgroupPath, { bigint: true }).ino;
    await waitUntil(() => agent.datapath.proxyConfig()?.proxyCgroupId === proxyCgroup, 5000, 50);
    assert.equal(agent.datapath.proxyConfig()?.proxyCgroupId, proxyCgroup);
  });

  const proxyArgs = (control = path.join(dir, 'proxy.sock')) => [
    'proxy',
    '--listen',
    `${sb.pod('proxy').ipv4}:15001`,
    '--bpffs',
    bpffs,
    '--control',
    control,
    '--handover',
    path.join(dir, 'handover.sock'),
  ];

  /** Starts `sockmesh proxy`; with `unreachable`, on a control socket the agent does not know (it never gets a table). */
  async function startProxy(unreachable = false): Promise<void> {
    proxyOut = '';
    proxyErr = '';
    const control = path.join(dir, unreachable ? 'elsewhere.sock' : 'proxy.sock');
    proxy = sb.spawnSockmesh('proxy', proxyArgs(control), { stdio: ['ignore', 'pipe', 'pipe'] });
    proxy.stdout!.on('data', (d) => (proxyOut += d));
    proxy.stderr!.on('data', (d) => (proxyErr += d));
    const ready = unreachable ? '"proxy running"' : '"policies applied"';
    await waitUntil(() => proxyErr.includes(ready), 10_000, 50);
    assert.ok(proxyErr.includes(ready), proxyErr);
    // The kernel steers to the proxy once the agent has its answer (sm_l7_ready).
    if (!unreachable) assert.ok(await waitUntil(() => agent.proxySteering().size > 0, 10_000, 20), 'the agent never enabled steering');
  }

  async function stopProxy(): Promise<void> {
    const old = proxy;
    old.kill('SIGKILL');
    await new Promise((r) => old.once('exit', r));
  }

  after(async () => {
    proxy?.kill('SIGKILL');
    agent?.stop();
    for (const s of servers) await s.stop();
    if (bpffs && fs.existsSync(bpffs)) Datapath.remove(bpffs);
    await sb?.teardown();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('an allowed request is steered through the proxy to the backend; the client still sees the VIP', async () => {
    const before = counters().l7_steered;
    const r = await http('client', `${VIP_HTTP}:80`, '/hello');
    assert.equal(r.status, 200, JSON.stringify(r));
    assert.equal(JSON.parse(r.body).name, 'web1');
    assert.deepEqual(r.peer, { address: VIP_HTTP, port: 80 });
    assert.equal(counters().l7_steered - before, 1n);
    assert.match(proxyOut, /"\/hello"/);
  });

  test('a denied path gets 403 RBAC: access denied', async () => {
    const r = await http('client', `${VIP_HTTP}:80`, '/deny/this');
    assert.equal(r.status, 403);
    assert.equal(r.body, 'RBAC: access denied');
  });

  test("the backend's pod IP is no way around the rules: the connect goes to the proxy, which applies the service's rules", async () => {
    const target = `${sb.pod('web1').ipv4}:8080`;
    const ok = await http('client', target, '/hello');
    assert.equal(ok.status, 200, JSON.stringify(ok));
    assert.equal(JSON.parse(ok.body).name, 'web1');
    assert.deepEqual(ok.peer, { address: sb.pod('web1').ipv4, port: 8080 });
    assert.equal((await http('client', target, '/deny/this')).status, 403);
    assert.equal((await http('other', target, '/hello')).status, 403);
  });

  test('the caller identity comes from the kernel: another workload is not allowed', async () => {
    const r = await http('other', `${VIP_HTTP}:80`, '/hello');
    assert.equal(r.status, 403);
  });

  test('gRPC: a denied method gets status 7, an allowed one passes', async () => {
    const denied = (await sb.podtool('client', ['grpc', '--target', `${VIP_GRPC}:9090`, '--method', 'Forbidden'])).last;
    assert.equal(denied.code, 7, JSON.stringify(denied));
    const ok = (await sb.podtool('client', ['grpc', '--target', `${VIP_GRPC}:9090`, '--method', 'Allowed'])).last;
    assert.deepEqual(ok, { ok: true, code: 0, reply: 'web1' });
  });

  test('a forged Host still goes only to the kernel-recorded destination', async () => {
    const r = await http('client', `${VIP_HTTP}:80`, '/hello', `${VIP_PLAIN}:80`);
    assert.equal(r.status, 200);
    assert.equal(JSON.parse(r.body).name, 'web1', 'the Host header must not choose the upstream');
  });

  test('a service without HTTP rules bypasses the proxy', async () => {
    // Access-log lines of earlier tests may still be on their way through the pipe: let them land.
    const settled = async () => {
      for (let n = proxyRequests(), i = 0; i < 20; i++) {
        await new Promise((r) => setTimeout(r, scaled(100)));
        if (proxyRequests() === n) return n;
        n = proxyRequests();
      }
      return proxyRequests();
    };
    const requests = await settled();
    const steered = counters().l7_steered;
    const r = await http('client', `${VIP_PLAIN}:80`, '/hello');
    assert.equal(r.status, 200);
    assert.equal(JSON.parse(r.body).name, 'web2');
    assert.equal(counters().l7_steered, steered);
    assert.equal(await settled(), requests, 'the proxy saw a request for a service without HTTP rules');
  });

  test('a proxy that has not acknowledged a table gets no connection; one reached anyway answers 503', async () => {
    const acked = agent.proxySteering();
    assert.ok(acked.has(`${VIP_HTTP}|80`), JSON.stringify([...acked]));
    await stopProxy();
    await startProxy(true);
    try {
      // The agent saw its proxy go and the new one never answered: the kernel refuses the connect.
      assert.ok(await waitUntil(() => agent.proxySteering().size === 0, 10_000, 20), 'steering still on');
      const c0 = counters();
      const refused = await http('client', `${VIP_HTTP}:80`, '/hello');
      assert.equal(refused.err, 'ECONNREFUSED', JSON.stringify(refused));
      assert.equal(counters().l7_steered - c0.l7_steered, 0n);
      // Steering left on from before (an agent restarted while the proxy did): the proxy itself
      // refuses every request without a table, allowed paths too.
      const dp = Datapath.openPinned(bpffs);
      try {
        L7Readiness.set(dp, [...acked.keys()].map((k) => ({ destination: { ip: k.split('|')[0], port: Number(k.split('|')[1]) }, filters: [] })));
      } finally {
        dp.close();
      }
      for (const p of ['/hello', '/deny/admin']) {
        const r = await http('client', `${VIP_HTTP}:80`, p);
        assert.equal(r.status, 503, `${p}: ${JSON.stringify(r)}`);
        assert.equal(r.body, 'sockmesh: no policy for this destination yet');
      }
      assert.match(proxyOut, /"decision":"no_table"/);
    } finally {
      await stopProxy();
      await startProxy();
    }
  });

  test('the proxy restarted under a request loop: no request is answered without its policy', async () => {
    // A denied path, asked for again and again while the proxy is killed and started anew: every
    // answer is the policy's 403, or a connect the kernel refuses until the new proxy has answered
    // the agent's table (or reset while the old one dies); never the backend's 200.
    const loop = sb.podtool('client', ['http', '--target', `${VIP_HTTP}:80`, '--path', '/deny/admin', '--duration-ms', String(scaled(4000)), '--interval-ms', '10'], {
      timeoutMs: 60_000,
    });
    await new Promise((r) => setTimeout(r, scaled(500)));
    await stopProxy();
    await startProxy();
    const lines = (await loop).lines.filter((l) => 'status' in l);
    const statuses = new Map<string, number>();
    for (const l of lines) statuses.set(String(l.status ?? l.err), (statuses.get(String(l.status ?? l.err)) ?? 0) + 1);
    assert.ok(lines.length > 20, `only ${lines.length} requests`);
    assert.equal(statuses.get('200'), undefined, `answered by the backend: ${JSON.stringify([...statuses])}`);
    for (const s of statuses.keys()) assert.ok(['403', '503', 'ECONNREFUSED', 'ECONNRESET', 'EPIPE'].includes(s), `unexpected ${s}: ${JSON.stringify([...statuses])}`);
    assert.ok((statuses.get('403') ?? 0) > 0, 'the policy never answered');
    // The new proxy judges as the old one did.
    assert.equal((await http('client', `${VIP_HTTP}:80`, '/deny/admin')).status, 403);
    assert.equal((await http('client', `${VIP_HTTP}:80`, '/hello')).status, 200);
  });

  test('a new proxy started beside the running one takes its listening socket over: 0 failed requests', async () => {
    // A successor in a cgroup of its own (as a replacement container would be): its hello makes
    // the agent exempt it while the old proxy, still draining, stays exempt too.
    const nextCg = path.join(path.dirname(sb.pod('proxy').cgroupPath), 'proxy-next');
    fs.mkdirSync(nextCg, { recursive: true });
    const nextCgId = fs.statSync(nextCg, { bigint: true }).ino;
    const oldCgId = fs.statSync(sb.pod('proxy').cgroupPath, { bigint: true }).ino;
    assert.equal(agent.datapath.proxyConfig()?.proxyCgroupId, oldCgId);
    const steered = agent.proxySteering();
    const old = proxy;
    const oldExit = new Promise<number | null>((r) => (old.exitCode !== null ? r(old.exitCode) : old.once('exit', (c) => r(c))));
    // Allowed and denied paths, one after another, each on a new connection.
    const loop = (p: string) =>
      sb.podtool('client', ['http', '--target', `${VIP_HTTP}:80`, '--path', p, '--duration-ms', String(scaled(5000)), '--interval-ms', '5'], { timeoutMs: 90_000 });
    const oldAnswered = proxyRequests();
    const loops = [loop('/hello'), loop('/deny/admin')];
    await new Promise((r) => setTimeout(r, scaled(800)));
    let nextErr = '';
    let nextOut = '';
    const next = sb.spawnSockmesh('proxy', proxyArgs(), { stdio: ['ignore', 'pipe', 'pipe'], cgroupPath: nextCg });
    next.stderr!.on('data', (d) => (nextErr += d));
    next.stdout!.on('data', (d) => (nextOut += d));
    proxy = next;
    const [hello, deny] = await Promise.all(loops);
    const exitCode = await Promise.race([oldExit, new Promise<string>((r) => setTimeout(() => r('still running'), scaled(15_000)))]);
    assert.match(nextErr, /"took over from the running proxy"/, nextErr);
    assert.equal(exitCode, 0, `old proxy: ${exitCode}\n${proxyErr}`);
    const tally = (lines: Array<Record<string, unknown>>) => {
      const m = new Map<string, number>();
      for (const l of lines.filter((x) => 'status' in x)) m.set(String(l.status ?? l.err), (m.get(String(l.status ?? l.err)) ?? 0) + 1);
      return m;
    };
    const ok = tally(hello.lines);
    const denied = tally(deny.lines);
    assert.deepEqual([...ok.keys()], ['200'], `allowed path: ${JSON.stringify([...ok])}`);
    assert.deepEqual([...denied.keys()], ['403'], `denied path: ${JSON.stringify([...denied])}`);
    assert.ok(ok.get('200')! > 20 && denied.get('403')! > 20, JSON.stringify([...ok, ...denied]));
    // Both proxies answered some of them: the handover happened inside the loop.
    assert.ok(proxyRequests() > oldAnswered && nextOut.split('\n').filter((l) => l.startsWith('{')).length > 0, 'one proxy answered everything');
    // Steering never stopped, and the old cgroup's exemption went with the old proxy.
    assert.deepEqual(agent.proxySteering(), steered);
    assert.ok(await waitUntil(() => agent.datapath.proxyConfig()?.proxyCgroupPrev === undefined, scaled(5000), 20), JSON.stringify(agent.datapath.proxyConfig(), (_k, v) => (typeof v === 'bigint' ? String(v) : v)));
    assert.equal(agent.datapath.proxyConfig()?.proxyCgroupId, nextCgId);
    // The successor's own upstream connects are not steered back to it: a request still passes.
    assert.equal((await http('client', `${VIP_HTTP}:80`, '/hello')).status, 200);
    proxyOut = nextOut;
    proxyErr = nextErr;
    next.stdout!.on('data', (d) => (proxyOut += d));
    next.stderr!.on('data', (d) => (proxyErr += d));
  });

  test('the proxy refuses a connection the kernel did not steer (no open relay)', async () => {
    const r = await http('client', `${sb.pod('proxy').ipv4}:15001`, '/hello', `${VIP_HTTP}:80`);
    assert.equal(r.status, 403);
    assert.match(r.body, /not steered by the datapath/);
  });

  test('steering records do not outlive their connections: the proxy takes each one, sockops drops the rest at close', async () => {
    // Every request above ran on a closed connection: nothing may be left for a later socket on
    // the same address and port to inherit (dest-authz.test.ts holds one open and watches it go).
    const dp = Datapath.openPinned(bpffs);
    try {
      assert.ok(await waitUntil(() => dp.maps.sm_steer.count() === 0, 5000, 50), `sm_steer holds ${dp.maps.sm_steer.count()} records`);
    } finally {
      dp.close();
    }
  });
});
