// The operator CLI against a real datapath with known content: `sockmesh dump
// services|endpoints|identities|policies|sockets`, `sockmesh trace` and `sockmesh config-dump`,
// run as the installed command (bin/sockmesh), tables and --json.
//
// Topology: node1 { client, other, web1, web2 }  node2 { remote }
//   web    198.19.0.90  80/TCP -> 8080 (HTTP rules: steered to the L7 proxy), 90/TCP -> 9000,
//                       53/UDP -> 5353; web1 weight 1, web2 weight 3
//   remote 198.19.0.91  80/TCP -> remote:8080 (another node)
//   empty  198.19.0.92  80/TCP, no endpoints
//   L4 policy: web2 accepts only the client's identity.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ChildProcess, execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Agent } from '../mesh-agent/agent';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { L7Readiness } from '../mesh-agent/datapath/l7-ready';
import type { Logger } from '../core/log';
import { identityTable, spiffeId } from '../core/identity';
import type { Model, Workload } from '../core/model';
import { StaticSource } from '../mesh-agent/sources/source';
import { Sandbox, ServerHandle } from '../sandbox/sandbox';
import { kernelSkip } from './kernel';

const SOCKMESH = path.resolve(__dirname, '../../bin/sockmesh');
const VIP = '198.19.0.90';
const VIP_REMOTE = '198.19.0.91';
const VIP_EMPTY = '198.19.0.92';
const PROXY = { host: '198.18.1.1', port: 15001 };
const silent: Logger = { debug() {}, info() {}, warn() {}, error() {} };

function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(SOCKMESH, args, { encoding: 'utf8', timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

describe('[kernel] sockmesh dump / trace / config-dump on a real datapath', kernelSkip(), () => {
  let sb: Sandbox;
  let dir: string;
  let bpffs: string;
  let admin: string;
  let agent: Agent | undefined;
  let model: Model;
  const servers: ServerHandle[] = [];
  const holders: ChildProcess[] = [];
  const ip = (pod: string) => sb.pod(pod).ipv4;

  const json = async (args: string[]) => {
    const r = await run([...args, '--bpffs', bpffs, '--json']);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout);
  };
  const text = async (args: string[]) => {
    const r = await run([...args, '--bpffs', bpffs]);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  };
  const ids = () => identityTable(model.workloads);
  const idOf = (pod: string) => ids().get(spiffeId(model.workloads.find((w) => w.name === pod)!))!;

  before(async () => {
    sb = await Sandbox.create({
      nodes: [
        { name: 'node1', pods: [{ name: 'client' }, { name: 'other' }, { name: 'web1' }, { name: 'web2' }] },
        { name: 'node2', pods: [{ name: 'remote' }] },
      ],
    });
    for (const w of ['web1', 'web2']) servers.push(await sb.startServer(w, ['serve', '--port', '9000', '--mode', 'echo', '--name', w]));
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sockmesh-dump-'));
    admin = `unix:${path.join(dir, 'agent.sock')}`;
    bpffs = path.join(sb.ensureBpffsDir(), 'dump');
    const wl = (n: string, node = 'node1'): Workload => ({
      namespace: 'default',
      name: n,
      serviceAccount: n,
      ips: [ip(n)],
      node,
      ...(node === 'node1' ? { cgroup: sb.pod(n).cgroupPath } : {}),
    });
    model = {
      services: [
        {
          namespace: 'default',
          name: 'web',
          vips: [VIP],
          ports: [
            { name: 'http', port: 80, protocol: 'TCP', targetPort: 8080 },
            { name: 'echo', port: 90, protocol: 'TCP', targetPort: 9000 },
            { name: 'dns', port: 53, protocol: 'UDP', targetPort: 5353 },
          ],
        },
        { namespace: 'default', name: 'remote', vips: [VIP_REMOTE], ports: [{ port: 80, protocol: 'TCP', targetPort: 8080 }] },
        { namespace: 'default', name: 'empty', vips: [VIP_EMPTY], ports: [{ port: 80, protocol: 'TCP' }] },
      ],
      endpoints: [
        { service: 'default/web', address: ip('web1'), weight: 1, healthy: true },
        { service: 'default/web', address: ip('web2'), weight: 3, healthy: true },
        { service: 'default/remote', address: ip('remote'), weight: 1, healthy: true },
      ],
      workloads: [wl('client'), wl('other'), wl('web1'), wl('web2'), wl('remote', 'node2')],
      policies: {
        l4: [
          {
            name: 'default/web2-allow-client',
            scope: { kind: 'workloads', workloads: ['default/web2'] },
            action: 'ALLOW',
            dryRun: false,
            when: { principal: { exact: 'spiffe://cluster.local/ns/default/sa/client' } },
            origin: 'test',
          },
        ],
        l7: [{ destination: { service: 'default/web', port: 80 }, filters: [] }],
      },
    };
    agent = new Agent({
      source: new StaticSource({ model, nodeName: 'node1' }, 'test source'),
      cgroupPath: sb.node('node1').cgroupPath,
      bpffsDir: bpffs,
      // Nothing listens there: only the kernel's steering decision is looked at.
      proxy: { ...PROXY, cgroupPath: sb.node('node1').hostCgroupPath, controlPath: path.join(dir, 'proxy.sock') },
      admin: { listen: admin },
      log: silent,
    });
    assert.deepEqual((await agent.start()).errors, []);
  });

  after(async () => {
    for (const h of holders) if (h.pid) try { process.kill(-h.pid, 'SIGKILL'); } catch { /* gone */ }
    agent?.stop();
    for (const s of servers) await s.stop();
    if (bpffs && fs.existsSync(bpffs)) Datapath.remove(bpffs);
    await sb?.teardown();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('dump services: VIP:port/proto -> svc id, generation, backend shares, flags (table and --json)', async () => {
    const j = await json(['dump', 'services']);
    assert.deepEqual(Object.keys(j), ['services']);
    const by = new Map(j.services.map((s: { vip: string; port: number; proto: string }) => [`${s.vip}:${s.port}/${s.proto}`, s]));
    assert.equal(by.size, 5);
    const http = by.get(`${VIP}:80/TCP`) as Record<string, any>;
    assert.deepEqual(Object.keys(http).sort(), ['backends', 'flags', 'gen', 'missingSlots', 'port', 'proto', 'slotCount', 'svcId', 'vip']);
    assert.ok(http.svcId > 0 && http.gen >= 1);
    assert.deepEqual(http.flags, ['L7']);
    assert.equal(http.missingSlots, 0);
    assert.deepEqual(
      http.backends.map((b: any) => [b.ip, b.port, b.share]),
      [
        [ip('web2'), 8080, 0.75],
        [ip('web1'), 8080, 0.25],
      ],
    );
    assert.equal(http.backends.reduce((n: number, b: any) => n + b.slots, 0), http.slotCount);
    const echo = by.get(`${VIP}:90/TCP`) as Record<string, any>;
    assert.deepEqual(echo.flags, []);
    assert.deepEqual(echo.backends.map((b: any) => b.port), [9000, 9000]);
    assert.deepEqual((by.get(`${VIP}:53/UDP`) as any).backends.map((b: any) => b.port), [5353, 5353]);
    assert.deepEqual(by.get(`${VIP_EMPTY}:80/TCP`), { vip: VIP_EMPTY, port: 80, proto: 'TCP', svcId: (by.get(`${VIP_EMPTY}:80/TCP`) as any).svcId, gen: 1, slotCount: 0, flags: [], backends: [], missingSlots: 0 });

    const t = await text(['dump', 'services']);
    assert.match(t, /^SERVICE\s+SVC ID\s+GEN\s+SLOTS\s+FLAGS\s+BACKENDS \(SHARE\)$/m);
    assert.match(t, new RegExp(`^${VIP.replace(/\./g, '\\.')}:80/TCP\\s+\\d+\\s+\\d+\\s+\\d+\\s+L7\\s+${ip('web2').replace(/\./g, '\\.')}:8080 75\\.0%, ${ip('web1').replace(/\./g, '\\.')}:8080 25\\.0%$`, 'm'));
    assert.match(t, new RegExp(`^${VIP_EMPTY.replace(/\./g, '\\.')}:80/TCP .*none: connect\\(\\) fails with ECONNREFUSED$`, 'm'));
  });

  test('dump endpoints: backend -> services, local or not, identity', async () => {
    const j = await json(['dump', 'endpoints']);
    const by = new Map(j.endpoints.map((e: { ip: string; port: number }) => [`${e.ip}:${e.port}`, e]));
    const web1 = by.get(`${ip('web1')}:8080`) as any;
    assert.deepEqual(web1, { ip: ip('web1'), port: 8080, local: true, identity: idOf('web1'), services: [{ vip: VIP, port: 80, proto: 'TCP', svcId: web1.services[0].svcId, share: 0.25 }] });
    assert.deepEqual((by.get(`${ip('web1')}:9000`) as any).services.map((s: any) => [s.port, s.share]), [[90, 0.25]]);
    const remote = by.get(`${ip('remote')}:8080`) as any;
    assert.equal(remote.local, false);
    assert.equal(remote.identity, null);
    assert.equal(by.size, 7); // web1, web2 x (8080, 9000, 5353), remote
    assert.match(await text(['dump', 'endpoints']), /^BACKEND\s+LOCAL POD\s+IDENTITY\s+SERVICES \(SHARE\)$/m);
  });

  test('dump identities: local pod IP -> identity, SPIFFE ids from the agent when reachable', async () => {
    const j = await json(['dump', 'identities', '--admin', admin]);
    assert.equal(j.spiffeSource, `agent admin endpoint ${admin}`);
    assert.deepEqual(
      j.identities,
      ['client', 'other', 'web1', 'web2'].map((n) => ({ ip: ip(n), identity: idOf(n), flags: 0, spiffe: `spiffe://cluster.local/ns/default/sa/${n}`, workload: `default/${n}` })),
    );
    const none = await json(['dump', 'identities', '--admin', 'none']);
    assert.equal(none.identities[0].spiffe, undefined);
    assert.match(none.spiffeSource, /not asked/);
    const unreachable = await json(['dump', 'identities', '--admin', `unix:${path.join(dir, 'nobody.sock')}`]);
    assert.equal(unreachable.identities.length, 4);
    assert.match(unreachable.spiffeSource, /not reachable/);
    assert.match(await text(['dump', 'identities', '--admin', admin]), new RegExp(`^${ip('client').replace(/\./g, '\\.')}\\s+${idOf('client')}\\s+default/client\\s+spiffe://cluster\\.local/ns/default/sa/client$`, 'm'));
  });

  test('dump policies: destination -> policy set, verdict rows with identities and policy names', async () => {
    const j = await json(['dump', 'policies', '--admin', admin]);
    assert.deepEqual(j.maps.map((m: any) => m.name), ['sm_policy', 'sm_policy_dst']);
    // web2's own L4 policy; web1 and web2 serve a port with HTTP rules (8080: the L7 proxy only);
    // the VIP carries the client's verdict for the steered path (all of web's backends at once).
    const dsts = new Map(j.destinations.map((d: any) => [d.ip, d]));
    assert.deepEqual([...dsts.keys()].sort(), [ip('web1'), ip('web2'), VIP].sort());
    assert.deepEqual([ip('web1'), ip('web2'), VIP].map((a) => (dsts.get(a) as any).httpRules), [true, true, false]);
    const rows = (a: string) => j.entries.filter((e: any) => e.set === (dsts.get(a) as any).set);
    const set = (dsts.get(ip('web2')) as any).set;
    const allow = rows(ip('web2')).find((e: any) => e.identity === idOf('client'));
    assert.deepEqual(allow, { set, identity: idOf('client'), port: 0, verdict: 'ALLOW', rule: 1, spiffe: 'spiffe://cluster.local/ns/default/sa/client', policy: 'default/web2-allow-client' });
    const dflt = rows(ip('web2')).find((e: any) => e.identity === 0 && e.port === 0);
    assert.deepEqual(dflt, { set, identity: 0, port: 0, verdict: 'DENY', rule: 0 });
    for (const b of ['web1', 'web2']) {
      assert.deepEqual(rows(ip(b)).filter((e: any) => e.identity === 0xffffffff).map((e: any) => [e.port, e.verdict]), [[8080, 'L7 PROXY ONLY']], b);
    }
    assert.deepEqual(
      rows(VIP).map((e: any) => [e.identity, e.port, e.verdict]),
      [[0, 0, 'ALLOW'], [0, 80, 'DENY'], [idOf('client'), 80, 'ALLOW']],
    );
    const t = await text(['dump', 'policies', '--admin', admin]);
    assert.match(t, /^SET\s+SOURCE IDENTITY\s+PORT\s+VERDICT\s+RULE$/m);
    assert.match(t, /ALLOW\s+1 default\/web2-allow-client$/m);
  });

  test('dump sockets: a long-lived same-node connection shows both ends, paired, with cookies', async () => {
    // A client in the client pod that connects to the echo VIP and holds the connection open.
    const script = `
      const s = require('net').connect({ host: '${VIP}', port: 90 }, () => {
        console.log(JSON.stringify({ local: s.localAddress, localPort: s.localPort }));
      });
      s.on('error', (e) => { console.log(JSON.stringify({ error: e.message })); process.exit(1); });
      setInterval(() => {}, 1000);`;
    const h = sb.spawn('client', [process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
    holders.push(h);
    const first = await new Promise<any>((resolve, reject) => {
      let buf = '';
      h.stdout!.on('data', (d) => {
        buf += d;
        if (buf.includes('\n')) resolve(JSON.parse(buf.slice(0, buf.indexOf('\n'))));
      });
      h.once('exit', (c) => reject(new Error(`holder exited ${c}`)));
    });
    assert.equal(first.local, ip('client'), JSON.stringify(first));
    const me = `${ip('client')}:${first.localPort}`;
    let mine: any[] = [];
    for (let i = 0; i < 100 && mine.length < 2; i++) {
      const j = await json(['dump', 'sockets']);
      assert.deepEqual(Object.keys(j), ['sockets']);
      mine = j.sockets.filter((s: any) => s.local === me || s.remote === me);
      if (mine.length < 2) await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(mine.length, 2, JSON.stringify(mine));
    const out = mine.find((s) => s.local === me)!;
    const back = mine.find((s) => s.remote === me)!;
    assert.match(out.remote, new RegExp(`^(${ip('web1')}|${ip('web2')}):9000$`.replace(/\./g, '\\.')), 'the kernel key holds the backend, not the VIP');
    assert.equal(back.local, out.remote);
    assert.equal(out.paired, true);
    assert.equal(back.paired, true);
    assert.match(out.cookie, /^\d+$/);
    assert.notEqual(out.cookie, back.cookie);
    // Each end is keyed with its own pod's network namespace (the client's, the backend's).
    assert.match(out.netns, /^\d+$/);
    assert.notEqual(out.netns, back.netns);
    assert.deepEqual(Object.keys(out).sort(), ['cookie', 'local', 'netns', 'paired', 'remote']);
    const t = await text(['dump', 'sockets']);
    assert.match(t, /^NETNS\s+LOCAL\s+REMOTE\s+COOKIE\s+PEER IN SOCKHASH$/m);
    assert.match(t, new RegExp(`^${out.netns}\\s+${me.replace(/\./g, '\\.')}\\s+${out.remote.replace(/\./g, '\\.')}\\s+${out.cookie}\\s+yes$`, 'm'));

    // Closed: the kernel removes both sockets from the sockhash.
    process.kill(-h.pid!, 'SIGKILL');
    await new Promise((r) => h.once('exit', r));
    for (let i = 0; i < 100 && mine.length; i++) {
      mine = (await json(['dump', 'sockets'])).sockets.filter((s: any) => s.local === me || s.remote === me);
      if (mine.length) await new Promise((r) => setTimeout(r, 50));
    }
    assert.deepEqual(mine, []);
  });

  test('trace: translated, same-node redirect per backend, identity, L4 policy per backend', async () => {
    const j = await json(['trace', '--from', ip('client'), '--to', `${VIP}:90`]);
    assert.deepEqual(Object.keys(j).sort(), ['backends', 'direct', 'l7', 'notes', 'outcome', 'policy', 'query', 'service', 'source', 'summary']);
    assert.equal(j.outcome, 'translated');
    assert.deepEqual(j.query, { from: ip('client'), to: `${VIP}:90`, proto: 'TCP' });
    assert.deepEqual(j.source, { ip: ip('client'), localPod: true, identity: idOf('client'), note: `local meshed pod, identity ${idOf('client')}` });
    const svc = (await json(['dump', 'services'])).services.find((s: any) => s.vip === VIP && s.port === 90);
    assert.deepEqual(j.service, { vip: VIP, port: 90, proto: 'TCP', svcId: svc.svcId, gen: svc.gen, slotCount: svc.slotCount, flags: [] });
    assert.deepEqual(
      j.backends.map((b: any) => [b.ip, b.port, b.share, b.localPod, b.identity, b.redirected, b.policy.verdict]),
      [
        [ip('web2'), 9000, 0.75, true, idOf('web2'), true, 'allow'],
        [ip('web1'), 9000, 0.25, true, idOf('web1'), true, 'allow'],
      ],
    );
    assert.equal(j.backends[0].policy.rule, 1);
    // web1 has no L4 policy of its own (its set only closes its HTTP port to all but the proxy).
    assert.equal(j.backends[1].policy.reason, `allowed (identity ${idOf('client')}, no policy matched)`);
    assert.equal(j.l7.steered, false);
    assert.deepEqual(j.notes, []);

    // Another identity: web2's policy refuses it at connect().
    const o = await json(['trace', '--from', ip('other'), '--to', `${VIP}:90`]);
    const web2 = o.backends.find((b: any) => b.ip === ip('web2'));
    assert.deepEqual([web2.policy.verdict, web2.policy.stage, web2.policy.rule], ['deny', 'connect', 0]);
    assert.match(web2.policy.reason, /denied at connect\(\) with EACCES/);
    assert.match(o.summary, /L4 policy denies 1 of them: 75\.0% of connects fail/);

    const t = await text(['trace', '--from', ip('other'), '--to', `${VIP}:90`]);
    assert.match(t, /^service\s+198\.19\.0\.90:90\/TCP: svc id \d+, generation \d+, \d+ slots, flags -$/m);
    assert.match(t, /same-node redirect \(sockhash \+ sk_msg\)/);
    assert.match(t, /^=> service 198\.19\.0\.90:90\/TCP/m);
  });

  test('trace: L7 steering, another node, no backend, UDP, not a service', async () => {
    // No proxy ever answered this agent: the destination is not steered but refused.
    const unacked = await json(['trace', '--from', ip('client'), '--to', `${VIP}:80`]);
    assert.equal(unacked.outcome, 'refused_no_l7_proxy');
    assert.equal(unacked.l7.steered, false);
    assert.match(unacked.l7.reason, /has not acknowledged this destination's rules/);
    // As if the proxy had acknowledged the table.
    const dp = Datapath.openPinned(bpffs);
    try {
      L7Readiness.set(dp, [{ destination: { ip: VIP, port: 80 }, filters: [] }]);
    } finally {
      dp.close();
    }
    const l7 = await json(['trace', '--from', ip('client'), '--to', `${VIP}:80`]);
    assert.equal(l7.outcome, 'steered_to_l7_proxy');
    assert.deepEqual([l7.l7.serviceHasL7, l7.l7.steered, l7.l7.proxy], [true, true, `${PROXY.host}:${PROXY.port}`]);
    assert.ok(l7.backends.every((b: any) => b.path === 'via the L7 proxy' && !b.redirected));
    assert.equal(l7.l7.clientPolicy.verdict, 'allow');
    // `other` is refused by web2's ALLOW list, so by the service as a whole, before any steering.
    const refused = await json(['trace', '--from', ip('other'), '--to', `${VIP}:80`]);
    assert.equal(refused.outcome, 'refused_policy');
    assert.equal(refused.l7.clientPolicy.stage, 'connect');
    // The HTTP port of a backend, addressed directly: only the L7 proxy may open it.
    const around = await json(['trace', '--from', ip('client'), '--to', `${ip('web1')}:8080`]);
    assert.equal(around.policy.verdict, 'deny');
    assert.match(around.policy.reason, /only the L7 proxy may connect/);

    const remote = await json(['trace', '--from', ip('client'), '--to', `${VIP_REMOTE}:80`]);
    assert.equal(remote.outcome, 'translated');
    assert.deepEqual(
      remote.backends.map((b: any) => [b.ip, b.localPod, b.redirected, b.path]),
      [[ip('remote'), false, false, 'normal TCP path (the backend is not a local meshed pod)']],
    );

    const empty = await json(['trace', '--from', ip('client'), '--to', `${VIP_EMPTY}:80`]);
    assert.equal(empty.outcome, 'refused_no_backend');
    assert.match(empty.summary, /ECONNREFUSED/);

    const udp = await json(['trace', '--from', ip('client'), '--to', `${VIP}:53`, '--proto', 'udp']);
    assert.equal(udp.outcome, 'translated');
    assert.equal(udp.query.proto, 'UDP');
    assert.ok(udp.backends.every((b: any) => !b.redirected && /^UDP: not redirected/.test(b.path)));
    assert.equal((await json(['trace', '--from', ip('client'), '--to', `${VIP}:53`])).outcome, 'not_a_service', '53/TCP is no service');

    const direct = await json(['trace', '--from', ip('client'), '--to', `${ip('web2')}:9000`]);
    assert.equal(direct.outcome, 'not_a_service');
    assert.equal(direct.service, null);
    assert.deepEqual(direct.direct, { localPod: true, redirected: true, path: 'same-node redirect (sockhash + sk_msg)' });
    assert.equal(direct.policy.verdict, 'allow');
    const denied = await json(['trace', '--from', ip('other'), '--to', `${ip('web2')}:9000`]);
    assert.equal(denied.policy.verdict, 'deny');
    assert.match(denied.summary, /L4 policy: denied at connect/);

    const outsider = await json(['trace', '--from', '198.18.9.9', '--to', `${VIP}:90`]);
    assert.equal(outsider.source.localPod, false);
    assert.ok(outsider.backends.every((b: any) => !b.redirected));

    const bad = await run(['trace', '--from', ip('client'), '--to', 'nonsense', '--bpffs', bpffs]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--to "nonsense": expected IP:PORT/);
  });

  test('config-dump prints what the running agent received; a wrong address fails clearly', async () => {
    const r = await run(['config-dump', '--admin', admin]);
    assert.equal(r.code, 0, r.stderr);
    const d = JSON.parse(r.stdout);
    assert.deepEqual(d.model, JSON.parse(JSON.stringify(model)));
    assert.deepEqual(d.source, { description: 'test source', kind: 'other' });
    assert.equal(d.nodeName, 'node1');
    assert.deepEqual(d.lastApply.errors, []);
    const gone = await run(['config-dump', '--admin', `unix:${path.join(dir, 'nobody.sock')}`]);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /cannot reach the agent's admin endpoint unix:.*nobody\.sock/);
    const refused = await run(['config-dump', '--admin', '0.0.0.0:15021']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /refusing to connect to 0\.0\.0\.0/);
  });
});
