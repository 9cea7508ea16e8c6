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

function haproxyConfig(name: string, bind: string, server: string): string {
  // One thread, one process, foreground: its CPU is that of one pid. HAProxy sets TCP_NODELAY on
  // both sides of a TCP-mode proxy by default.
  return [
    'global',
    '  nbthread 1',
    '  maxconn 4096',
    '  log stderr format raw local0 err',
    'defaults',
    '  mode tcp',
    '  timeout connect 5s',
    '  timeout client 300s',
    '  timeout server 300s',
    `listen ${name}`,
    `  bind ${bind}`,
    `  server app ${server}`,
    '',
  ].join('\n');
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

/**
 * Start the outbound HAProxy in `clientPod` and the inbound one in `serverPod` (whose app listens
 * on 127.0.0.1:appPort or any address). Returns the target the client app should use.
 */
export async function startSidecars(sb: Sandbox, clientPod: string, serverPod: string, appPort: number): Promise<Sidecars> {
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
    const start = async (pod: string, name: string, bind: string, server: string, port: number): Promise<number> => {
      const cfg = path.join(dir, `${name}.cfg`);
      fs.writeFileSync(cfg, haproxyConfig(name, bind, server));
      // -db: foreground, no daemon, no master process; the spawned pid IS haproxy (sh and
      // `ip netns exec` both exec).
      const child = sb.spawn(pod, [HAPROXY, '-db', '-f', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
      children.push(child);
      let err = '';
      child.stderr?.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-4000)));
      await waitListening(sb, pod, port, child, `haproxy ${name} in pod ${pod}`, () => err);
      return child.pid!;
    };
    const inPid = await start(serverPod, 'inbound', `${sb.pod(serverPod).ipv4}:${SIDECAR_IN_PORT}`, `127.0.0.1:${appPort}`, SIDECAR_IN_PORT);
    const outPid = await start(clientPod, 'outbound', `127.0.0.1:${SIDECAR_OUT_PORT}`, `${sb.pod(serverPod).ipv4}:${SIDECAR_IN_PORT}`, SIDECAR_OUT_PORT);
    return { target: `127.0.0.1:${SIDECAR_OUT_PORT}`, pids: [outPid, inPid], stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
