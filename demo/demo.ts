// `npm run demo`: a sandbox node with pods, the local xDS control plane serving an embedded config,
// the sockmesh agent fed by it, real traffic, and what the datapath did with it. Everything it
// creates (namespaces, cgroups, pins, processes) is removed at the end, also on Ctrl-C.
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { Sandbox, ServerHandle, SOCKMESH_CLI as SOCKMESH } from '../sandbox/sandbox';

const VIP = '198.19.0.10';
const VIP6 = 'fd53:6f63:6b99::10';
const VIP_REMOTE = '198.19.0.20';
const VIP_API = '198.19.0.30';

function demoConfig(sb: Sandbox, web3Healthy = false): string {
  const p = (n: string) => sb.pod(n);
  return `# sockmesh demo config (embedded in demo/demo.ts)
node: node1
services:
  - name: web
    namespace: shop
    vips: [${VIP}, "${VIP6}"]
    ports:
      - { name: http, port: 80, targetPort: 8080 }
      - { name: dns, port: 53, protocol: UDP, targetPort: 5353 }
  - name: payments
    namespace: shop
    vips: [${VIP_REMOTE}]
    ports: [{ name: http, port: 80, targetPort: 8080 }]
  - name: api
    namespace: shop
    vips: [${VIP_API}]
    ports: [{ name: http, port: 80, targetPort: 8080 }]
endpoints:
  - { service: shop/api, address: ${p('api-1').ipv4} }
  - { service: shop/web, address: ${p('web-1').ipv4}, weight: 1 }
  - { service: shop/web, address: ${p('web-2').ipv4}, weight: 2 }
  - { service: shop/web, address: ${p('web-3').ipv4}, weight: 1, healthy: ${web3Healthy} }
  - { service: shop/web, address: "${p('web-1').ipv6}" }
  - { service: shop/web, address: "${p('web-2').ipv6}" }
  - { service: shop/payments, address: ${p('payments').ipv4}, node: node2 }
workloads:
  - { namespace: shop, name: frontend, serviceAccount: frontend, ips: [${p('frontend').ipv4}, "${p('frontend').ipv6}"], node: node1 }
  - { namespace: shop, name: web-1, serviceAccount: web, ips: [${p('web-1').ipv4}, "${p('web-1').ipv6}"], node: node1 }
  - { namespace: shop, name: web-2, serviceAccount: web, ips: [${p('web-2').ipv4}, "${p('web-2').ipv6}"], node: node1 }
  - { namespace: shop, name: web-3, serviceAccount: web, ips: [${p('web-3').ipv4}, "${p('web-3').ipv6}"], node: node1 }
  - { namespace: shop, name: payments, serviceAccount: payments, ips: [${p('payments').ipv4}], node: node2 }
  - { namespace: shop, name: api-1, serviceAccount: api, ips: [${p('api-1').ipv4}], node: node1 }
# HTTP rules for the api service, as istiod would send them: its outbound listener with an HTTP
# connection manager whose RBAC filter denies /admin. It replaces the generated TCP listener.
xds:
  - "@type": type.googleapis.com/envoy.config.listener.v3.Listener
    name: ${VIP_API}_80
    address: { socketAddress: { address: ${VIP_API}, portValue: 80 } }
    filterChains:
      - filters:
          - name: envoy.filters.network.http_connection_manager
            typedConfig:
              "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
              statPrefix: outbound_${VIP_API}_80
              routeConfig:
                name: api
                virtualHosts: [{ name: api, domains: ["*"], routes: [{ match: { prefix: "/" }, route: { cluster: "outbound|80||api.shop.svc.cluster.local" } }] }]
              httpFilters:
                - name: envoy.filters.http.rbac
                  typedConfig:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
                    rules:
                      action: DENY
                      policies:
                        deny-admin:
                          permissions: [{ urlPath: { path: { prefix: /admin } } }]
                          principals: [{ any: true }]
                - name: envoy.filters.http.router
                  typedConfig: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
`;
}

const say = (s = '') => process.stdout.write(s + '\n');
const heading = (s: string) => say(`\n\x1b[1m== ${s}\x1b[0m`);

function counters(bpffs: string): Record<string, bigint> {
  const dp = Datapath.openPinned(bpffs);
  try {
    return dp.counters();
  } finally {
    dp.close();
  }
}

function diff(a: Record<string, bigint>, b: Record<string, bigint>): string {
  return Object.keys(b)
    .filter((k) => b[k] !== a[k])
    .map((k) => `${k} +${b[k] - a[k]}`)
    .join(', ');
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** Resolve at the next JSON log line of `child` (stderr) whose msg is `msg`, printing `show(line)`. */
function waitLog(child: ChildProcess, msg: string, show: (j: any) => string, when: (j: any) => boolean = () => true): Promise<void> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (d: Buffer) => {
      buf += d;
      for (let i; (i = buf.indexOf('\n')) >= 0; buf = buf.slice(i + 1)) {
        const line = buf.slice(0, i);
        let j: any;
        try {
          j = JSON.parse(line);
        } catch {
          continue;
        }
        if (j.level === 'error') say(`  ${line}`);
        if (j.msg === msg && when(j)) {
          child.stderr!.off('data', onData);
          child.off('exit', onExit);
          say(show(j));
          resolve();
          return;
        }
      }
    };
    const onExit = (code: number | null) => reject(new Error(`${msg}: process exited with ${code}: ${buf}`));
    child.stderr!.on('data', onData);
    child.once('exit', onExit);
  });
}

async function main(): Promise<void> {
  Sandbox.cleanupStale();
  heading('sandbox');
  const sb = await Sandbox.create({
    prefix: 'smdemo',
    nodes: [
      {
        name: 'node1',
        pods: [...['frontend', 'web-1', 'web-2', 'web-3'].map((name) => ({ name, ipv6: true })), { name: 'api-1' }, { name: 'proxy' }],
      },
      { name: 'node2', pods: [{ name: 'payments' }] },
    ],
  });
  const servers: ServerHandle[] = [];
  let agent: ChildProcess | undefined;
  let controlPlane: ChildProcess | undefined;
  let proxy: ChildProcess | undefined;
  let tmp: string | undefined;
  const bpffs = path.join(sb.ensureBpffsDir(), 'sockmesh');
  const cleanup = async () => {
    agent?.kill('SIGTERM');
    controlPlane?.kill('SIGTERM');
    proxy?.kill('SIGTERM');
    for (const s of servers) await s.stop();
    if (fs.existsSync(bpffs)) Datapath.remove(bpffs);
    await sb.teardown();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  };
  try {
    for (const n of sb.nodeNames()) {
      const node = sb.node(n);
      say(`${n}: netns ${node.netns}, pods ${node.pods.map((p) => `${p}=${sb.pod(p).ipv4}`).join(' ')}`);
    }
    say(`meshed cgroup (agent attaches here): ${sb.node('node1').cgroupPath}`);
    for (const w of ['web-1', 'web-2', 'web-3', 'payments']) {
      servers.push(await sb.startServer(w, ['serve', '--port', '8080', '--mode', 'id', '--name', w]));
      servers.push(await sb.startServer(w, ['serve-udp', '--port', '5353', '--name', w]));
    }
    servers.push(await sb.startServer('payments', ['serve', '--port', '9000', '--mode', 'echo', '--name', 'payments']));
    servers.push(await sb.startServer('web-1', ['serve', '--port', '9000', '--mode', 'echo', '--name', 'web-1']));
    servers.push(await sb.startServer('api-1', ['serve-http', '--port', '8080', '--name', 'api-1']));

    heading('control plane and agent');
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sockmesh-demo-'));
    const cfg = path.join(tmp, 'mesh.yaml');
    fs.writeFileSync(cfg, demoConfig(sb));
    const port = await freePort();
    say(`$ sockmesh control-plane --config ${cfg} --listen 127.0.0.1:${port}`);
    controlPlane = spawn(SOCKMESH, ['control-plane', '--config', cfg, '--listen', `127.0.0.1:${port}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    await waitLog(controlPlane, 'control plane running', (j) => `control plane serving ${JSON.stringify(j.resources)}`);
    const proxyPod = sb.pod('proxy');
    const control = path.join(tmp, 'proxy.sock');
    const agentArgs = ['agent', '--xds', `127.0.0.1:${port}`, '--node-name', 'node1', '--cgroup', sb.node('node1').cgroupPath, '--bpffs', bpffs];
    agentArgs.push('--proxy-listen', `${proxyPod.ipv4}:15001`, '--proxy-control', control, '--admin', 'none');
    say(`$ sockmesh ${agentArgs.join(' ')}`);
    agent = spawn(SOCKMESH, agentArgs, { stdio: ['ignore', 'inherit', 'pipe'] });
    await waitLog(
      agent,
      'applied config',
      (j) => `agent applied the model from xDS: ${j.added} service entries, ${j.slotsWritten} backend slots, ${j.localEpsAdded} local pod IPs`,
    );

    // The node's L7 proxy, in its own pod (network namespace and cgroup, like a DaemonSet
    // container), seeing the host's /sys/fs/bpf.
    say(`$ sockmesh proxy --listen ${proxyPod.ipv4}:15001 --bpffs ${bpffs} --control ${control}   (in pod "proxy")`);
    const proxyKnown = waitLog(agent, 'proxy connected', (j) => `agent learned the proxy's cgroup (${j.cgroupId}): its own upstream connects are not steered`);
    const steering = waitLog(agent, 'proxy applied policies', (j) => `agent turned steering on for ${j.steered} destination(s) once the proxy acknowledged their rules`);
    proxy = sb.spawnSockmesh('proxy', ['proxy', '--listen', `${proxyPod.ipv4}:15001`, '--bpffs', bpffs, '--control', control], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    await Promise.all([
      proxyKnown,
      waitLog(proxy, 'policies applied', (j) => `proxy applied HTTP policies for ${j.destinations} destination(s) from the agent`),
    ]);
    await steering;

    let c0 = counters(bpffs);
    heading(`TCP: 300 connections from frontend to ${VIP}:80 (weights web-1:1, web-2:2, web-3 unhealthy)`);
    const ids = await sb.podtool('frontend', ['ids', '--target', `${VIP}:80`, '--count', '300', '--concurrency', '8']);
    for (const [k, v] of Object.entries(ids.last.ids as Record<string, number>).sort()) {
      say(`  ${k.padEnd(8)} ${String(v).padStart(4)}  ${'#'.repeat(Math.round(v / 5))}`);
    }
    say(`  getpeername() in the client: ${ids.last.peer.address}:${ids.last.peer.port}  (the VIP, not the backend)`);
    const ids6 = await sb.podtool('frontend', ['ids', '--target', `[${VIP6}]:80`, '--count', '20']);
    say(`  IPv6 VIP [${VIP6}]:80 -> ${JSON.stringify(ids6.last.ids)}, peer [${ids6.last.peer.address}]:${ids6.last.peer.port}`);
    let c1 = counters(bpffs);
    say(`  kernel counters: ${diff(c0, c1)}`);

    heading(`UDP: datagrams from frontend to ${VIP}:53`);
    c0 = c1;
    const udp = await sb.podtool('frontend', ['udp', '--target', `${VIP}:53`, '--payload', 'who-is-web', '--count', '3']);
    for (const l of udp.lines.filter((x) => x.ok)) say(`  reply "${l.reply}" from ${l.from.address}:${l.from.port}`);
    c1 = counters(bpffs);
    say(`  kernel counters: ${diff(c0, c1)}`);

    heading('same-node pair: frontend -> web-1 (both on node1): 8 MiB echoed through the sk_msg redirect');
    c0 = c1;
    const tr = await sb.podtool('frontend', ['transfer', '--target', `${sb.pod('web-1').ipv4}:9000`, '--mode', 'echo', '--bytes', String(8 << 20)]);
    c1 = counters(bpffs);
    say(`  byte-identical: ${tr.last.ok} (SHA-256 of sent == received)`);
    say(`  kernel counters: ${diff(c0, c1)}`);

    heading(`cross-node pair: frontend -> payments (${VIP_REMOTE}:80 on node2): translated, normal TCP path`);
    c0 = c1;
    const rem = await sb.podtool('frontend', ['ids', '--target', `${VIP_REMOTE}:80`, '--count', '5']);
    c1 = counters(bpffs);
    say(`  answers: ${JSON.stringify(rem.last.ids)}`);
    say(`  kernel counters: ${diff(c0, c1)}  (no msg_redirected: the peer is not on this node)`);

    heading(`L7: HTTP to ${VIP_API}:80, whose listener carries an RBAC filter denying /admin`);
    c0 = counters(bpffs);
    for (const p of ['/hello', '/admin/users']) {
      const r = await sb.podtool('frontend', ['http', '--target', `${VIP_API}:80`, '--path', p]);
      say(`  GET ${p.padEnd(12)} -> ${r.last.status} ${r.last.status === 200 ? JSON.parse(r.last.body).name : r.last.body}`);
    }
    c1 = counters(bpffs);
    say(`  kernel counters: ${diff(c0, c1)}  (steered to the node's proxy at connect time; other services never are)`);

    heading('edit the control plane file: web-3 becomes healthy');
    fs.writeFileSync(cfg + '.tmp', demoConfig(sb, true));
    fs.renameSync(cfg + '.tmp', cfg);
    // The change arrives as a few xDS updates (workload status, endpoints); wait for the one that
    // changed backend tables.
    await waitLog(
      agent,
      'applied config',
      (j) => `agent applied the change: ${j.updated} service entries updated, ${j.slotsWritten} slots written`,
      (j) => j.updated > 0,
    );
    const ids2 = await sb.podtool('frontend', ['ids', '--target', `${VIP}:80`, '--count', '300', '--concurrency', '8']);
    for (const [k, v] of Object.entries(ids2.last.ids as Record<string, number>).sort()) {
      say(`  ${k.padEnd(8)} ${String(v).padStart(4)}  ${'#'.repeat(Math.round(v / 5))}`);
    }

    heading('sockmesh status');
    say(execFileSync(SOCKMESH, ['status', '--bpffs', bpffs], { encoding: 'utf8' }));
  } finally {
    heading('cleanup');
    await cleanup();
    say('removed the datapath, the namespaces, the cgroups and the pins');
  }
}

main().catch((e) => {
  process.stderr.write(`demo failed: ${e instanceof Error ? e.stack : e}\n`);
  process.exit(1);
});
