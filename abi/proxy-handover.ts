// A restart of the node's L7 proxy that fails no request. The running proxy serves a unix socket
// (default /run/sockmesh/proxy-handover.sock, mode 0600, same user only); a new proxy that starts
// beside it connects there and is handed the listening sockets themselves (SCM_RIGHTS), so the
// kernel's accept queue, and every connection waiting in it, never goes away:
//
//   new -> old   connect                  old stops serving the control and handover paths (they
//                                         are the successor's to bind) and sends
//   old -> new   header line + fds + the config in force (policies and identities)
//   new          applies that config, serves the control path
//   new -> old   "control-ready"          old tells the agent `handover` on its session; the agent
//                                         connects to the path again (the new proxy), believes
//                                         its hello (SO_PEERCRED) and exempts its cgroup as well
//   new          waits until the kernel exempts its cgroup (sm_config; at once when both run in
//                one cgroup), then accepts on the inherited sockets
//   new -> old   "serving"                old stops accepting, finishes its connections (h2
//                                         GOAWAY, h1 after the response in flight) and exits
//
// If the new proxy goes away before "serving", the old one serves both paths again and goes on.
// Steering never stops: the agent's acknowledged destinations stay steered throughout, to a
// listening socket that always has a process accepting on it.
import * as fs from 'node:fs';
import * as net from 'node:net';
import { config as configCodec } from './codecs';
import { mapPin } from './pins';
import type { ProxyConfigMessage } from './proxy-control';
import type { Logger } from '../core/log';
import * as bpf from '../native';

export const DEFAULT_PROXY_HANDOVER = '/run/sockmesh/proxy-handover.sock';

const MAX_HEADER = 64 << 10;
const MAX_CONFIG = 64 << 20;

export interface HandedListener {
  host: string;
  port: number;
  fd: number;
}

interface Header {
  type: 'listeners';
  listeners: Array<{ host: string; port: number }>;
  /** The old proxy's cgroup id (decimal u64). */
  cgroupId: string;
  /** Bytes of the config message (JSON) that follow the header line; 0: it had none. */
  configBytes: number;
}

/** What a new proxy inherits from the one it replaces. */
export interface Inheritance {
  listeners: HandedListener[];
  config: ProxyConfigMessage | null;
  predecessorCgroupId: bigint;
  /** Tell the old proxy that the control path is served here now. */
  controlReady(): void;
  /** Tell the old proxy that the inherited sockets are accepted on here: it stops and drains. */
  serving(): void;
  /** Give up (closing whatever was inherited): the old proxy goes on as before. */
  abort(): void;
}

function parseHeader(line: string): Header | string {
  let h: unknown;
  try {
    h = JSON.parse(line);
  } catch {
    return 'header is not JSON';
  }
  const o = h as Record<string, unknown>;
  if (typeof o !== 'object' || o === null || o.type !== 'listeners' || !Array.isArray(o.listeners)) return 'not a listeners header';
  for (const l of o.listeners as unknown[]) {
    const x = l as Record<string, unknown>;
    if (typeof x !== 'object' || x === null || typeof x.host !== 'string' || !Number.isInteger(x.port) || (x.port as number) < 1 || (x.port as number) > 65535) {
      return 'a listener without host and port';
    }
  }
  if (typeof o.cgroupId !== 'string' || !/^[0-9]{1,20}$/.test(o.cgroupId)) return 'header without a cgroupId';
  if (!Number.isInteger(o.configBytes) || (o.configBytes as number) < 0 || (o.configBytes as number) > MAX_CONFIG) return 'header with a bad configBytes';
  return o as unknown as Header;
}

/**
 * New side: take over from the proxy serving `path`. null when none does (no socket file, or
 * nobody listening on it: a fresh start). Throws when one answered but the handover failed (the
 * old proxy then goes on serving).
 */
export function takeOver(path: string, timeoutMs = 10_000): Inheritance | null {
  let fd: number;
  try {
    fd = bpf.unixConnect(path, timeoutMs);
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (code === 'ENOENT' || code === 'ECONNREFUSED') return null;
    throw e;
  }
  const fds: number[] = [];
  const closeAll = () => {
    for (const f of fds) bpf.closeFd(f);
    fds.length = 0;
  };
  try {
    let data = Buffer.alloc(0);
    let header: Header | undefined;
    let headerEnd = 0;
    for (;;) {
      if (header && data.length - headerEnd >= header.configBytes) break;
      let got: { data: Buffer; fds: number[] };
      try {
        got = bpf.recvFds(fd, 65536);
      } catch (e) {
        const code = (e as { code?: string }).code;
        throw new Error(code === 'EAGAIN' ? `the running proxy sent nothing for ${timeoutMs} ms` : `reading from the running proxy: ${(e as Error).message}`);
      }
      fds.push(...got.fds);
      if (got.data.length === 0) throw new Error('the running proxy closed the handover connection');
      data = Buffer.concat([data, got.data]);
      if (!header) {
        const nl = data.indexOf(0x0a);
        if (nl < 0) {
          if (data.length > MAX_HEADER) throw new Error('handover header too long');
          continue;
        }
        const h = parseHeader(data.subarray(0, nl).toString('utf8'));
        if (typeof h === 'string') throw new Error(`handover: ${h}`);
        header = h;
        headerEnd = nl + 1;
      }
    }
    if (fds.length !== header.listeners.length) throw new Error(`handover: ${header.listeners.length} listeners announced, ${fds.length} sockets received`);
    let config: ProxyConfigMessage | null = null;
    if (header.configBytes) {
      const m = JSON.parse(data.subarray(headerEnd, headerEnd + header.configBytes).toString('utf8')) as ProxyConfigMessage;
      if (m?.type !== 'config' || !Array.isArray(m.l7) || !Array.isArray(m.identities)) throw new Error('handover: the config is not a config message');
      config = m;
    }
    const listeners = header.listeners.map((l, i) => ({ host: l.host, port: l.port, fd: fds[i] }));
    let done = false;
    const say = (word: string) => {
      if (!done) bpf.sendFds(fd, Buffer.from(word + '\n'));
    };
    return {
      listeners,
      config,
      predecessorCgroupId: BigInt(header.cgroupId),
      controlReady: () => say('control-ready'),
      serving: () => {
        say('serving');
        done = true;
        bpf.closeFd(fd);
      },
      abort: () => {
        if (done) return;
        done = true;
        closeAll();
        bpf.closeFd(fd);
      },
    };
  } catch (e) {
    closeAll();
    bpf.closeFd(fd);
    throw e;
  }
}

/** What the running proxy does at each step of handing over to a successor. */
export interface HandoverHooks {
  /** The sockets to hand over, and the config in force (its JSON; null before the first). */
  state(): { listeners: HandedListener[]; config: string | null; cgroupId: bigint };
  /** A successor connected: stop serving the control path (it binds it next). */
  begin(): void;
  /** The successor serves the control path: tell the agent. */
  controlReady(): void;
  /** The successor accepts: stop accepting, finish, exit. */
  serving(): void;
  /** The successor went away before serving: serve the control path again. */
  abort(): void;
}

/**
 * Old side: serve `path` for a successor. One handover at a time, to a process of this user only
 * (SO_PEERCRED). Returns a function that stops serving.
 */
export function serveHandover(path: string, hooks: HandoverHooks, log: Logger): () => void {
  let server: net.Server | undefined;
  let stopped = false;
  const listen = () => {
    fs.rmSync(path, { force: true });
    server = net.createServer(onSuccessor);
    server.on('error', (e) => log.error('handover socket', { path, error: e.message }));
    const umask = process.umask(0o177);
    try {
      server.listen(path);
    } finally {
      process.umask(umask);
    }
  };
  const onSuccessor = (sock: net.Socket) => {
    sock.on('error', () => undefined);
    const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd ?? -1;
    try {
      const peer = bpf.peerCred(fd);
      if (peer.uid !== process.getuid?.()) {
        log.warn('handover refused: the successor runs as another user', { uid: peer.uid, pid: peer.pid });
        sock.destroy();
        return;
      }
      log.info('a successor is taking over', { pid: peer.pid });
    } catch (e) {
      log.warn('handover refused: no peer credentials', { error: (e as Error).message });
      sock.destroy();
      return;
    }
    // The path is the successor's now: closing our server unlinks it (libuv), so before it binds.
    server?.close();
    server = undefined;
    hooks.begin();
    let served = false;
    try {
      const st = hooks.state();
      const config = Buffer.from(st.config ?? '', 'utf8');
      const header: Header = { type: 'listeners', listeners: st.listeners.map(({ host, port }) => ({ host, port })), cgroupId: st.cgroupId.toString(), configBytes: config.length };
      const head = Buffer.from(JSON.stringify(header) + '\n');
      const sent = bpf.sendFds(fd, head, st.listeners.map((l) => l.fd));
      sock.write(Buffer.concat([head.subarray(sent), config]));
    } catch (e) {
      log.error('handover failed; going on', { error: (e as Error).message });
      sock.destroy();
    }
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      buf += d;
      if (buf.length > 1024) sock.destroy();
      for (let i; (i = buf.indexOf('\n')) >= 0; buf = buf.slice(i + 1)) {
        const word = buf.slice(0, i);
        if (word === 'control-ready') hooks.controlReady();
        else if (word === 'serving' && !served) {
          served = true;
          hooks.serving();
        }
      }
    });
    sock.on('close', () => {
      if (served || stopped) return;
      log.warn('the successor went away before it accepted; serving on');
      hooks.abort();
      listen();
    });
  };
  listen();
  return () => {
    stopped = true;
    server?.close();
  };
}

/** Close an inherited listening socket that is not used here. */
export function closeInherited(l: HandedListener): void {
  bpf.closeFd(l.fd);
}

/** Whether the kernel exempts `cgroupId` from steering (the agent has believed its hello). */
export function kernelExempts(bpffsDir: string, cgroupId: bigint): boolean {
  const fd = bpf.objGet(mapPin(bpffsDir, 'sm_config'));
  try {
    const v = bpf.mapLookup(fd, Buffer.alloc(4), configCodec.size);
    if (!v) return false;
    const c = configCodec.decode(v);
    return c.proxyCgroupId === cgroupId || c.proxyCgroupPrev === cgroupId;
  } finally {
    bpf.closeFd(fd);
  }
}
