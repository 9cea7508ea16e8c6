// "Sidecar mode" for the benchmarks: a client-side and a server-side HAProxy TCP proxy, each in its
// own pod (netns + cgroup, spawned with sandbox.spawn, so sandbox teardown kills them), the way a
// sidecar mesh puts an outbound and an inbound proxy next to every workload:
//
//   client pod:  app -> 127.0.0.1:OUT_PORT -> HAProxy (outbound) ----.
//   server pod:  HAProxy (inbound) on POD_IP:IN_PORT <---------------'  -> 127.0.0.1:APP_PORT -> app
//
// Traffic is addressed to the outbound proxy explicitly rather than captured with iptables
// REDIRECT as Istio/Linkerd do; the capture rule costs one more netfilter lookup per packet, which
// this leaves out (it flatters the sidecar slightly). No TLS either: both proxies are plain TCP
// relays, the cheapest a sidecar can be.
import { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Sandbox } from '../sandbox/sandbox';

export const HAPROXY = '/usr/sbin/haproxy';
export const SIDECAR_OUT_PORT = 15001;
export const SIDECAR_IN_PORT = 15006;

export interface Sidecars {
  /** What the client connects to (inside the client pod). */
  target: string;
  /** HAProxy pids (client side, server side), for CPU accounting. */
  pids: number[];
  stop(): Promise<void>;
}

/** What both kinds of sidecar share: one thread, one process (its CPU is that of one pid), no log. */
const HAPROXY_BASE = ['global', '  nbthread 1', '  maxconn 4096', '  log stderr format raw local0 err', 'defaults'];
const HAPROXY_TIMEOUTS = ['  timeout connect 5s', '  timeout client 300s', '  timeout server 300s'];

function haproxyConfig(name: string, bind: string, server: string): string {
  // HAProxy sets TCP_NODELAY on both sides of a TCP-mode proxy by default.
  return [...HAPROXY_BASE, '  mode tcp', ...HAPROXY_TIMEOUTS, `listen ${name}`, `  bind ${bind}`, `  server app ${server}`, ''].join('\n');
}

async function waitListening(sb: Sandbox, pod: string, port: number, child: ChildProcess, what: string, stderr: () => string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}): ${stderr()}`);
    const r = await sb.exec(pod, ['ss', '-Hltn', `sport = :${port}`], { timeoutMs: 5000 });
    if (r.code === 0 && r.stdout.trim()) return;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error(`${what}: not listening on :${port} within 10 s: ${stderr()}`);
}

/** One HAProxy to launch: its config text and the port to wait on (in `pod`). */
interface HaproxySpec {
  pod: string;
  name: string;
  config: string;
  port: number;
}

/**
 * Launch HAProxies in order (each waited for until it listens), in their pods. On failure the
 * ones already started are killed. Shared by the TCP and the HTTP sidecar pairs.
 */
async function launchHaproxies(sb: Sandbox, specs: HaproxySpec[]): Promise<{ pids: number[]; stop: () => Promise<void> }> {
  if (!fs.existsSync(HAPROXY)) throw new Error(`sidecar: ${HAPROXY} not found (Debian package haproxy)`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smbench-haproxy-'));
  const children: ChildProcess[] = [];
  const stop = async (): Promise<void> => {
    for (const c of children) {
      if (c.pid !== undefined && c.exitCode === null && c.signalCode === null) {
        const gone = new Promise<void>((r) => c.once('close', () => r()));
        try {
          process.kill(-c.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
        await gone;
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    const pids: number[] = [];
    for (const s of specs) {
      const cfg = path.join(dir, `${s.name}.cfg`);
      fs.writeFileSync(cfg, s.config);
      // -db: foreground, no daemon, no master process; the spawned pid IS haproxy (sh and
      // `ip netns exec` both exec).
      const child = sb.spawn(s.pod, [HAPROXY, '-db', '-f', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
      children.push(child);
      let err = '';
      child.stderr?.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-4000)));
      await waitListening(sb, s.pod, s.port, child, `haproxy ${s.name} in pod ${s.pod}`, () => err);
      pids.push(child.pid!);
    }
    return { pids, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/**
 * Start the outbound HAProxy in `clientPod` and the inbound one in `serverPod` (whose app listens
 * on 127.0.0.1:appPort or any address). Returns the target the client app should use.
 */
export async function startSidecars(sb: Sandbox, clientPod: string, serverPod: string, appPort: number): Promise<Sidecars> {
  const serverIp = sb.pod(serverPod).ipv4;
  const { pids, stop } = await launchHaproxies(sb, [
    { pod: serverPod, name: 'inbound', config: haproxyConfig('inbound', `${serverIp}:${SIDECAR_IN_PORT}`, `127.0.0.1:${appPort}`), port: SIDECAR_IN_PORT },
    { pod: clientPod, name: 'outbound', config: haproxyConfig('outbound', `127.0.0.1:${SIDECAR_OUT_PORT}`, `${serverIp}:${SIDECAR_IN_PORT}`), port: SIDECAR_OUT_PORT },
  ]);
  return { target: `127.0.0.1:${SIDECAR_OUT_PORT}`, pids: [pids[1], pids[0]], stop };
}

// ---- HTTP sidecars (bench/l7.ts) ------------------------------------------------------------------

export interface HttpSidecarOptions {
  /**
   * Lines of the inbound frontend that authorize requests (`acl ...`, `http-request allow if ...`,
   * `http-request deny ...`), inserted before its `default_backend`: the server-side authorization
   * an Istio sidecar applies to inbound traffic.
   */
  inboundRules?: string[];
  /**
   * Filler: this many `http-request deny if { path_beg /sm-denied-N }` rules that no request
   * matches (each is still evaluated on every request), before `inboundRules`. 0 or absent: none.
   */
  acls?: number;
}

function fillerRules(n: number): string[] {
  return Array.from({ length: n }, (_, i) => `http-request deny deny_status 403 if { path_beg /sm-denied-${i} }`);
}

function haproxyHttpConfig(name: string, bind: string, server: string, rules: string[]): string {
  // mode http on both sides, one thread each (one pid's CPU). Keep-alive everywhere:
  // `option http-keep-alive` (HAProxy's default mode since 1.7, written out so the choice is
  // visible) keeps the client-side connection open between requests, and `http-reuse always` lets
  // any idle server-side connection carry the next request (the most aggressive reuse; `safe`, the
  // default, would open a fresh server connection for the first request of each client
  // connection). `option http-buffer-request` is NOT set: headers are enough for the ACLs. No
  // access log, no X-Forwarded-For: nothing beyond what the ACL check needs.
  return [
    ...HAPROXY_BASE,
    '  mode http',
    '  option http-keep-alive',
    '  http-reuse always',
    ...HAPROXY_TIMEOUTS,
    '  timeout http-request 10s',
    '  timeout http-keep-alive 300s',
    `frontend ${name}`,
    `  bind ${bind}`,
    ...rules.map((r) => `  ${r}`),
    '  default_backend app',
    'backend app',
    `  server app ${server}`,
    '',
  ].join('\n');
}

/**
 * The HTTP flavour of startSidecars: both HAProxies in `mode http` (they parse every request and
 * response and keep connections alive on both sides), the inbound one applying
 * `opts.inboundRules`. Same ports and layout as the TCP pair.
 */
export async function startHttpSidecars(sb: Sandbox, clientPod: string, serverPod: string, appPort: number, opts: HttpSidecarOptions = {}): Promise<Sidecars> {
  const serverIp = sb.pod(serverPod).ipv4;
  const { pids, stop } = await launchHaproxies(sb, [
    {
      pod: serverPod,
      name: 'inbound',
      config: haproxyHttpConfig('inbound', `${serverIp}:${SIDECAR_IN_PORT}`, `127.0.0.1:${appPort}`, [...fillerRules(opts.acls ?? 0), ...(opts.inboundRules ?? [])]),
      port: SIDECAR_IN_PORT,
    },
    { pod: clientPod, name: 'outbound', config: haproxyHttpConfig('outbound', `127.0.0.1:${SIDECAR_OUT_PORT}`, `${serverIp}:${SIDECAR_IN_PORT}`, []), port: SIDECAR_OUT_PORT },
  ]);
  return { target: `127.0.0.1:${SIDECAR_OUT_PORT}`, pids: [pids[1], pids[0]], stop };
}
