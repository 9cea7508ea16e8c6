// The local channel between the agent and the node's L7 proxy: a unix socket the proxy listens on,
// carrying one JSON object per line. The agent sends the L7 policies and the identity table after
// every change; the proxy compiles them and answers ok (now in force) or an error (the previous
// policies stay in force).
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import type { L7Policy } from '../core/model';
import * as bpf from '../native';

export const DEFAULT_PROXY_CONTROL = '/run/sockmesh/proxy.sock';

export interface ProxyConfigMessage {
  type: 'config';
  version: number;
  l7: L7Policy[];
  /** [identity number, SPIFFE id] */
  identities: Array<[number, string]>;
}

export type ProxyReply = { ok: true; version: number } | { ok: false; version: number; error: string };

/**
 * The first line the proxy sends on every connection: its own cgroup id, which the datapath must
 * exempt from steering (or the proxy's upstream connects would come back to itself). The proxy
 * knows it; the agent cannot know it in advance (a container's cgroup changes with each restart).
 */
export interface ProxyHello {
  type: 'hello';
  /** decimal string (u64) */
  cgroupId: string;
}

/**
 * Sent by a proxy whose successor now holds its listening sockets and serves the control path
 * (abi/proxy-handover.ts): the agent connects again (to the successor) and lets this session drain.
 */
export interface ProxyHandover {
  type: 'handover';
}

/** This process's cgroup v2 id: the inode of its cgroup directory (cgroup namespaces included). */
export function ownCgroupId(cgroup2Mount: string): bigint {
  return cgroupIdOf('self', cgroup2Mount);
}

/** The cgroup v2 id of a process ('self' or a pid visible here), as seen from this process's cgroup namespace. */
export function cgroupIdOf(pid: number | 'self', cgroup2Mount: string): bigint {
  const line = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => l.startsWith('0::'));
  if (!line) throw new Error(`no cgroup v2 entry in /proc/${pid}/cgroup`);
  return fs.statSync(path.join(cgroup2Mount, line.slice(3)), { bigint: true }).ino;
}

/**
 * Whether a hello may be believed: the cgroup it names must be the one the process that listens
 * on the control socket runs in (SO_PEERCRED), or whoever binds the socket could exempt any cgroup
 * from steering. null when it holds, else why not.
 */
export function checkHello(h: ProxyHello, peerPid: number, cgroup2Mount: string): string | null {
  if (!peerPid) return 'the process behind the control socket is not visible from here (another pid namespace: the agent needs hostPID)';
  let actual: bigint;
  try {
    actual = cgroupIdOf(peerPid, cgroup2Mount);
  } catch (e) {
    return `cannot read the cgroup of pid ${peerPid}: ${(e as Error).message}`;
  }
  if (actual !== BigInt(h.cgroupId)) return `the hello names cgroup ${h.cgroupId}, but the process behind the socket (pid ${peerPid}) runs in cgroup ${actual}`;
  return null;
}

function lines(sock: net.Socket, onLine: (l: string) => void): void {
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => {
    buf += d;
    if (buf.length > 64 << 20) {
      sock.destroy(new Error('control message too large'));
      return;
    }
    for (let i; (i = buf.indexOf('\n')) >= 0; buf = buf.slice(i + 1)) onLine(buf.slice(0, i));
  });
}

/** The proxy's end of the control channel. */
export interface ControlServer {
  /** Tell every agent session that a successor serves the control path now (they drain). */
  announceHandover(): void;
  /** Stop accepting agents; with `sessions`, end the open sessions too. */
  close(sessions?: boolean): void;
}

/**
 * Proxy side: serve the control socket; `apply` returns null when the config is in force, or the
 * error. A socket file left at the path (a crashed proxy's, or the one a predecessor hands over
 * from) is replaced.
 */
export function serveControl(
  socketPath: string,
  apply: (m: ProxyConfigMessage) => string | null,
  hello?: ProxyHello,
): ControlServer {
  fs.rmSync(socketPath, { force: true });
  const sessions = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sessions.add(sock);
    sock.once('close', () => sessions.delete(sock));
    if (hello) sock.write(JSON.stringify(hello) + '\n');
    lines(sock, (line) => {
      let reply: ProxyReply;
      let version = 0;
      try {
        const m = JSON.parse(line) as ProxyConfigMessage;
        version = m.version;
        if (m.type !== 'config' || !Array.isArray(m.l7) || !Array.isArray(m.identities)) throw new Error('not a config message');
        const err = apply(m);
        reply = err === null ? { ok: true, version } : { ok: false, version, error: err };
      } catch (e) {
        reply = { ok: false, version, error: (e as Error).message };
      }
      sock.write(JSON.stringify(reply) + '\n');
    });
    sock.on('error', () => undefined);
  });
  // Made with its final permissions (the bind happens inside listen(), under this umask): never
  // reachable by others, not even between listen and a chmod.
  const umask = process.umask(0o177);
  try {
    server.listen(socketPath, () => fs.chmodSync(socketPath, 0o600));
  } finally {
    process.umask(umask);
  }
  return {
    announceHandover() {
      const line = JSON.stringify({ type: 'handover' } satisfies ProxyHandover) + '\n';
      for (const s of sessions) s.write(line);
    },
    close(endSessions = false) {
      server.close();
      if (endSessions) for (const s of sessions) s.end();
    },
  };
}

const U64_MAX = (1n << 64n) - 1n;

/**
 * One line from the proxy, checked field by field: a hello or a reply, or why it is neither. What
 * a peer sends is never trusted to have the shape it should (a scalar, a missing field, a cgroup
 * id that is not a u64 are all refused here, not where they are used).
 */
export function parseProxyLine(line: string): ProxyHello | ProxyHandover | ProxyReply | string {
  let m: unknown;
  try {
    m = JSON.parse(line);
  } catch {
    return 'not JSON';
  }
  if (typeof m !== 'object' || m === null || Array.isArray(m)) return 'not a JSON object';
  const o = m as Record<string, unknown>;
  if (o.type === 'hello') {
    if (typeof o.cgroupId !== 'string' || !/^[0-9]{1,20}$/.test(o.cgroupId) || BigInt(o.cgroupId) > U64_MAX || BigInt(o.cgroupId) === 0n) {
      return 'hello without a valid cgroupId (a non-zero u64 as a decimal string)';
    }
    return { type: 'hello', cgroupId: o.cgroupId };
  }
  if (o.type === 'handover') return { type: 'handover' };
  if (o.type !== undefined) return `unknown message type ${JSON.stringify(o.type).slice(0, 40)}`;
  if (!Number.isSafeInteger(o.version) || (o.version as number) < 0) return 'reply without an integer version';
  if (o.ok === true) return { ok: true, version: o.version as number };
  if (o.ok === false) return { ok: false, version: o.version as number, error: typeof o.error === 'string' ? o.error.slice(0, 4096) : 'no reason given' };
  return 'reply whose ok is not a boolean';
}

/**
 * Agent side: keeps the latest config and delivers it whenever the proxy is (re)connected.
 * Emits 'reply' with each answer, 'invalid' with the reason for a line that is neither a hello nor
 * a reply (ignored), and 'down' when the connected proxy goes away (whatever it had acknowledged
 * is then gone with it).
 *
 * A restart without a gap (abi/proxy-handover.ts): the running proxy, once its successor holds the
 * listening sockets and serves the control path, says `handover` on its session. That session is
 * then draining: the client connects to the path again at once (reaching the successor), and the
 * draining session's end is 'retired', not 'down' (the proxy behind it finishes its connections
 * and exits, and steering goes on through the successor).
 */
export class ProxyControlClient extends EventEmitter<{
  reply: [ProxyReply];
  hello: [ProxyHello, number, { replacing: boolean }];
  error: [Error];
  invalid: [string];
  down: [];
  retired: [number];
}> {
  private sock?: net.Socket;
  private readonly draining = new Set<net.Socket>();
  private latest?: ProxyConfigMessage;
  private timer?: NodeJS.Timeout;
  private closed = false;

  constructor(private readonly socketPath: string, private readonly retryMs = 1000) {
    super();
    this.connect();
  }

  /** Sessions of proxies that handed over and are still finishing their connections. */
  get drainingCount(): number {
    return this.draining.size;
  }

  private connect(): void {
    if (this.closed) return;
    clearTimeout(this.timer);
    const sock = net.connect(this.socketPath);
    // The pid of the process that listens on the socket (SO_PEERCRED), for checking its hello.
    let peerPid = 0;
    sock.on('connect', () => {
      this.sock = sock;
      const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
      try {
        if (typeof fd === 'number' && fd >= 0) peerPid = bpf.peerCred(fd).pid;
      } catch {
        peerPid = 0; // not believed: checkHello says why
      }
      if (this.latest) sock.write(JSON.stringify(this.latest) + '\n');
    });
    lines(sock, (l) => {
      const m = parseProxyLine(l);
      if (typeof m === 'string') this.emit('invalid', m);
      else if (!('type' in m)) this.emit('reply', m);
      else if (m.type === 'hello') this.emit('hello', m, peerPid, { replacing: this.draining.size > 0 });
      else if (this.sock === sock) {
        // handover: only the session in use can be handed over, once.
        this.sock = undefined;
        this.draining.add(sock);
        this.connect();
      }
    });
    sock.on('error', (e) => this.emit('error', e));
    sock.on('close', () => {
      if (this.draining.delete(sock)) {
        if (!this.closed) this.emit('retired', this.draining.size);
        return;
      }
      const wasUp = this.sock === sock;
      if (wasUp) this.sock = undefined;
      if (wasUp && !this.closed) this.emit('down');
      // A failed connect, or the session in use gone: try again later.
      if (!this.closed && !this.sock) {
        clearTimeout(this.timer);
        this.timer = setTimeout(() => this.connect(), this.retryMs);
        this.timer.unref();
      }
    });
  }

  send(m: Omit<ProxyConfigMessage, 'type' | 'version'>): number {
    const version = (this.latest?.version ?? 0) + 1;
    this.latest = { type: 'config', version, ...m };
    this.sock?.write(JSON.stringify(this.latest) + '\n');
    return version;
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.sock?.destroy();
    for (const d of this.draining) d.destroy();
  }
}
