// The whole path through xDS: local control plane -> `sockmesh agent --xds` -> kernel -> traffic
// between sandbox pods. Endpoint edits in the control plane's file reach new connections; with the
// control plane gone the datapath keeps the last good config; when it comes back the agent
// reconnects and catches up.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { createLogger } from '../core/log';
import { Sandbox, ServerHandle } from '../sandbox/sandbox';
import { startControlPlane } from '../xds/server/control-plane';
import { scaled } from '../sandbox/time-scale';
import { kernelSkip } from './kernel';

const SOCKMESH = path.resolve(__dirname, '../../bin/sockmesh');
const VIP = '198.19.0.40';

describe('[kernel] control plane -> agent over xDS -> kernel', kernelSkip(), () => {
  let sb: Sandbox;
  let dir: string;
  let cfg: string;
  let bpffs: string;
  let agent: ChildProcess | undefined;
  let cp: Awaited<ReturnType<typeof startControlPlane>> | undefined;
  let port = 0;
  const servers: ServerHandle[] = [];
  const log = createLogger({ level: 'warn' });

  const yaml = (backend: string, extra = '') => `
node: node1
services:
  - { name: web, vips: [${VIP}], ports: [{ name: http, port: 80, targetPort: 8080 }, { name: echo, port: 90, targetPort: 9000 }] }
endpoints:
  - { service: default/web, address: ${sb.pod(backend).ipv4} }
workloads:
  - { name: client, serviceAccount: client, ips: [${sb.pod('client').ipv4}], node: node1 }
  - { name: web1, serviceAccount: web, ips: [${sb.pod('web1').ipv4}], node: node1 }
  - { name: web2, serviceAccount: web, ips: [${sb.pod('web2').ipv4}], node: node1 }
${extra}`;
  const write = (backend: string, extra = '') => {
    fs.writeFileSync(cfg + '.tmp', yaml(backend, extra));
    fs.renameSync(cfg + '.tmp', cfg);
  };
  const ids = async () => (await sb.podtool('client', ['ids', '--target', `${VIP}:80`, '--count', '6'])).last;
  // The agent's reconnect backoff grows to 30 s (jittered) during a long outage.
  const waitForBackend = async (backend: string, timeoutMs = 20_000) => {
    for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; ) {
      const r = await ids();
      if (r.ids[backend] === 6) return;
      await new Promise((res) => setTimeout(res, 100));
    }
    assert.fail(`traffic never moved to ${backend}`);
  };

  before(async () => {
    sb = await Sandbox.create({ nodes: [{ name: 'node1', pods: [{ name: 'client' }, { name: 'web1' }, { name: 'web2' }] }] });
    for (const w of ['web1', 'web2']) {
      servers.push(await sb.startServer(w, ['serve', '--port', '8080', '--mode', 'id', '--name', w]));
      servers.push(await sb.startServer(w, ['serve', '--port', '9000', '--mode', 'echo', '--name', w]));
    }
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockmesh-xds-'));
    cfg = path.join(dir, 'cp.yaml');
    write('web1');
    cp = await startControlPlane({ configPath: cfg, address: '127.0.0.1:0', log, debounceMs: 50 });
    port = cp.port;
    bpffs = path.join(sb.ensureBpffsDir(), 'xds');
    agent = spawn(
      SOCKMESH,
      ['agent', '--xds', `127.0.0.1:${port}`, '--xds-mode', 'delta', '--node-name', 'node1', '--cgroup', sb.node('node1').cgroupPath, '--bpffs', bpffs, '--admin', 'none'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let err = '';
    agent.stderr!.on('data', (d) => (err += d));
    for (let i = 0; i < 200 && !err.includes('"applied config"'); i++) await new Promise((r) => setTimeout(r, 50));
    assert.match(err, /"applied config"/, err);
  });

  after(async () => {
    agent?.kill('SIGTERM');
    if (agent) await new Promise((r) => agent!.once('exit', r));
    await cp?.stop();
    for (const s of servers) await s.stop();
    if (bpffs && fs.existsSync(bpffs)) Datapath.remove(bpffs);
    await sb?.teardown();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('services, endpoints and local workloads arrive over xDS and drive the kernel', async () => {
    const r = await ids();
    assert.deepEqual(r.ids, { web1: 6 });
    assert.deepEqual(r.peer, { address: VIP, port: 80 });
    // Workloads came over ambient Address resources: same-node pairs are redirected.
    const dp = Datapath.openPinned(bpffs);
    try {
      const before = dp.counters().msg_redirected;
      const t = await sb.podtool('client', ['transfer', '--target', `${VIP}:90`, '--mode', 'echo', '--bytes', '100000']);
      assert.equal(t.last.ok, true);
      assert.ok(dp.counters().msg_redirected > before, 'no redirect: local workloads did not arrive');
    } finally {
      dp.close();
    }
  });

  test('an endpoint edit in the control plane file moves new connections', async () => {
    write('web2');
    await waitForBackend('web2');
  });

  test('control plane down for 30 s: traffic unaffected; back up: the agent reconnects and catches up', async () => {
    await cp!.stop();
    cp = undefined;
    // Connections keep being made, and served by the last good config, for the whole outage.
    const outageMs = Number(process.env.SOCKMESH_OUTAGE_MS ?? 30_000);
    const loop = await sb.podtool('client', ['connect-loop', '--target', `${VIP}:80`, '--duration-ms', String(outageMs), '--interval-ms', '50'], {
      timeoutMs: outageMs + 60_000,
    });
    const attempts = loop.lines.filter((l) => l.t0 !== undefined);
    assert.ok(attempts.length > outageMs / 200, `only ${attempts.length} connects in ${outageMs} ms`);
    assert.deepEqual(attempts.filter((l) => l.err || l.id !== 'web2'), [], 'a connect failed or went elsewhere while the control plane was down');
    write('web1');
    cp = await startControlPlane({ configPath: cfg, address: `127.0.0.1:${port}`, log, debounceMs: 50 });
    await waitForBackend('web1', 60_000);
  });

  test('with --xds alone (no pod cgroup known) callers are named by their network namespace: DENY holds, others pass', async () => {
    // An ambient Authorization: DENY service account `web` in namespace default. Over xDS the agent
    // learns workloads and their IPs but no cgroups; without another way to name a caller every
    // meshed caller would be unresolved, and the DENY would (fail closed) refuse the client too.
    // A namespace is found through the processes in it: as a pod's pause process does, an idle
    // server keeps the client's alive (the other pods have theirs).
    servers.push(await sb.startServer('client', ['serve', '--port', '7000', '--mode', 'id', '--name', 'client']));
    write(
      'web1',
      `xds:
  - "@type": type.googleapis.com/istio.security.Authorization
    name: deny-web
    namespace: default
    scope: NAMESPACE
    action: DENY
    groups: [{ rules: [{ matches: [{ principals: [{ exact: cluster.local/ns/default/sa/web }] }] }] }]
`,
    );
    const target = `${sb.pod('web1').ipv4}:8080`;
    const connect = async (pod: string) => (await sb.podtool(pod, ['connect', '--target', target, '--connect-timeout-ms', '1500'])).last;
    let web2: any;
    for (const deadline = Date.now() + scaled(20_000); Date.now() < deadline; ) {
      web2 = await connect('web2');
      if (web2.err === 'EACCES') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(web2.err, 'EACCES', `the DENYed pod was not refused: ${JSON.stringify(web2)}`);
    assert.equal((await connect('client')).ok, true, 'the client is not the denied identity');
  });
});
