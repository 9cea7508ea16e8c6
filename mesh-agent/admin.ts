// The agent's admin endpoint: /metrics, /healthz, /readyz, /config-dump, /debug/state.
//
// It listens on a loopback address or a unix socket ONLY, and refuses anything else: it has no
// authentication, and /config-dump shows the whole mesh (every service, endpoint and workload
// identity). Kubelet probes and a node-local Prometheus agent reach loopback of a hostNetwork pod.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import type { Registry } from 'prom-client';
import { UsageError } from '../core/errors';
import { formatAddress, parseAddress } from '../core/ip';
import { SHORT_NAME } from '../xds/proto/resource-types';
import type { TypeUrl } from '../xds/types';
import type { Logger } from '../core/log';

export const DEFAULT_ADMIN_LISTEN = '127.0.0.1:15021';

export type AdminAddress = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

/**
 * 127.0.0.0/8 or ::1 (in any spelling). Not ::ffff:127.0.0.1: a listener on it is an IPv6 socket
 * (ipv6Only) on an IPv4-mapped address, which the kernel refuses to bind.
 */
function isLoopbackIp(host: string): boolean {
  if (!net.isIPv4(host) && !net.isIPv6(host)) return false;
  const a = parseAddress(host);
  if (!a || (a.family === 4 && net.isIPv6(host))) return false;
  return a.family === 4 ? a.bytes[0] === 127 : formatAddress(a) === '::1';
}

/**
 * Parse an admin address: `127.0.0.1:15021`, `[::1]:15021`, `localhost:15021` (= 127.0.0.1) or
 * `unix:/run/sockmesh/agent.sock`. Anything that is not loopback or an absolute unix socket path
 * is refused (SM_USAGE) with the reason.
 */
export function parseAdminAddress(s: string, verb: 'listen on' | 'connect to' = 'listen on'): AdminAddress {
  const bad = (why: string): never => {
    throw new UsageError(`admin address ${JSON.stringify(s)}: ${why}`);
  };
  if (s.startsWith('unix:')) {
    const p = s.slice('unix:'.length);
    if (!p.startsWith('/')) bad('a unix socket must be an absolute path (unix:/run/sockmesh/agent.sock)');
    return { kind: 'unix', path: p };
  }
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(s);
  if (!m) bad('expected HOST:PORT ([V6]:PORT) on a loopback address, or unix:/PATH');
  const host = m![1] ?? m![2];
  const port = Number(m![3]);
  if (port > 65535) bad(`port ${port} is out of range`);
  if (host === 'localhost') return { kind: 'tcp', host: '127.0.0.1', port };
  if (!net.isIP(host)) bad(`${host} is not an IP address; use 127.0.0.1, ::1, localhost or unix:/PATH`);
  if (!isLoopbackIp(host)) {
    bad(
      `refusing to ${verb} ${host}: the admin endpoint has no authentication and exposes the whole mesh config, ` +
        'so it listens only on loopback (127.0.0.0/8, ::1) or a unix socket',
    );
  }
  return { kind: 'tcp', host, port };
}

export function formatAdminAddress(a: AdminAddress): string {
  if (a.kind === 'unix') return `unix:${a.path}`;
  return net.isIPv6(a.host) ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

export interface Readiness {
  ready: boolean;
  /** Why not (or what is ready), for humans. */
  reason: string;
  [k: string]: unknown;
}

export interface AdminHandlers {
  registry: Registry;
  readiness(): Readiness;
  /** The config as received from the source; null before the first one. */
  configDump(): unknown | null;
  debugState(): unknown;
}

const JSON_TYPE = 'application/json; charset=utf-8';

function toJson(v: unknown): string {
  return JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? x.toString() : x instanceof Error ? { name: x.name, message: x.message, code: (x as { code?: unknown }).code } : x), 2) + '\n';
}

/** A unix socket file nobody listens on (left by a killed agent) is removed; a live one is not. */
function removeStaleSocket(p: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch {
    return Promise.resolve();
  }
  if (!st.isSocket()) {
    return Promise.reject(new UsageError(`admin socket path ${p} exists and is not a socket; refusing to replace it`));
  }
  return new Promise((resolve, reject) => {
    const c = net.connect(p);
    c.once('connect', () => {
      c.destroy();
      reject(Object.assign(new Error(`admin socket ${p} is in use by another process`), { code: 'EADDRINUSE' }));
    });
    c.once('error', () => {
      try {
        fs.unlinkSync(p);
      } catch {
        /* raced with someone else: listen() will say */
      }
      resolve();
    });
  });
}

export class AdminServer {
  private constructor(
    private readonly server: http.Server,
    readonly address: AdminAddress,
  ) {}

  /** `address` with the real port when 0 was asked for. */
  get url(): string {
    return formatAdminAddress(this.address);
  }

  static async start(listen: string, h: AdminHandlers, log?: Logger): Promise<AdminServer> {
    const addr = parseAdminAddress(listen);
    const server = http.createServer((req, res) => {
      void handle(req, res, h).catch((e: unknown) => {
        log?.error('admin request failed', { path: req.url, error: e as Error });
        if (!res.headersSent) res.writeHead(500, { 'content-type': JSON_TYPE });
        res.end(toJson({ error: (e as Error).message }));
      });
    });
    server.keepAliveTimeout = 5000;
    server.headersTimeout = 10_000;
    server.requestTimeout = 30_000;
    if (addr.kind === 'unix') {
      fs.mkdirSync(path.dirname(addr.path), { recursive: true, mode: 0o750 });
      await removeStaleSocket(addr.path);
    }
    await new Promise<void>((resolve, reject) => {
      const onError = (e: NodeJS.ErrnoException) => {
        const what = formatAdminAddress(addr);
        const hint = e.code === 'EADDRINUSE' ? ' (another agent, or set another address with --admin; --admin none disables it)' : '';
        reject(Object.assign(new Error(`admin endpoint: cannot listen on ${what}: ${e.message}${hint}`), { code: e.code }));
      };
      server.once('error', onError);
      const done = () => {
        server.off('error', onError);
        resolve();
      };
      if (addr.kind === 'unix') server.listen(addr.path, done);
      else server.listen({ host: addr.host, port: addr.port, ipv6Only: net.isIPv6(addr.host) }, done);
    });
    let bound: AdminAddress = addr;
    if (addr.kind === 'unix') {
      fs.chmodSync(addr.path, 0o600); // the config dump is for the node's administrators
    } else {
      const a = server.address() as net.AddressInfo;
      bound = { kind: 'tcp', host: addr.host, port: a.port };
    }
    server.on('error', (e) => log?.error('admin endpoint error', { error: e }));
    return new AdminServer(server, bound);
  }

  close(): void {
    this.server.close();
    this.server.closeAllConnections();
    if (this.address.kind === 'unix') {
      try {
        fs.unlinkSync(this.address.path);
      } catch {
        /* gone already */
      }
    }
  }
}

async function handle(req: http.IncomingMessage, res: http.ServerResponse, h: AdminHandlers): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://admin');
  const send = (code: number, body: unknown) => {
    res.writeHead(code, { 'content-type': JSON_TYPE, 'cache-control': 'no-store' });
    res.end(req.method === 'HEAD' ? undefined : toJson(body));
  };
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-type': JSON_TYPE });
    res.end(toJson({ error: `method ${req.method} not allowed` }));
    return;
  }
  switch (url.pathname) {
    case '/metrics': {
      const text = await h.registry.metrics();
      res.writeHead(200, { 'content-type': h.registry.contentType });
      res.end(req.method === 'HEAD' ? undefined : text);
      return;
    }
    case '/healthz':
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(req.method === 'HEAD' ? undefined : 'ok\n');
      return;
    case '/readyz': {
      const r = h.readiness();
      send(r.ready ? 200 : 503, r);
      return;
    }
    case '/config-dump': {
      const d = h.configDump();
      if (d === null) send(503, { error: 'no config received from the source yet' });
      else send(200, d);
      return;
    }
    case '/debug/state':
      send(200, h.debugState());
      return;
    default:
      send(404, { error: `no such endpoint ${url.pathname}`, endpoints: ['/metrics', '/healthz', '/readyz', '/config-dump', '/debug/state'] });
  }
}

/** GET `path` from an agent's admin endpoint; rejects on connection errors and after timeoutMs. */
export function adminGet(listen: string, urlPath: string, timeoutMs = 3000): Promise<{ status: number; body: string; contentType: string }> {
  let addr: AdminAddress;
  try {
    addr = parseAdminAddress(listen, 'connect to');
  } catch (e) {
    return Promise.reject(e);
  }
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        method: 'GET',
        path: urlPath,
        ...(addr.kind === 'unix' ? { socketPath: addr.path } : { host: addr.host, port: addr.port }),
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), contentType: String(res.headers['content-type'] ?? '') }),
        );
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer from the admin endpoint ${listen} within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** Where the config came from and which version of it, for /config-dump. */
export interface SourceInfo {
  description: string;
  kind: 'file' | 'xds' | 'other';
  /** file: the path and its modification time when the config was read. */
  file?: { path: string; mtime: string | null };
  /** xds: per resource type (short name), the last accepted version and what the client holds. */
  xds?: Record<string, { lastAckVersion: string; resources: number; connected: boolean; lastNack?: { at: string; detail: string } }>;
  /** Sources that describe their own versions (an optional `versions()` method). */
  versions?: unknown;
}

export function describeSource(
  source: { description: string } | undefined,
  xdsState: Record<string, { lastAckVersion: string; resources: number; connected: boolean; lastNack?: { at: Date; detail: string } } | undefined> | undefined,
  configPath?: string,
  shortName: (typeUrl: string) => string = (t) => SHORT_NAME[t as TypeUrl] ?? t,
): SourceInfo {
  const description = source?.description ?? '';
  const versionsFn = (source as { versions?: unknown } | undefined)?.versions;
  const extra = typeof versionsFn === 'function' ? { versions: (versionsFn as () => unknown).call(source) } : {};
  if (xdsState) {
    const xds: NonNullable<SourceInfo['xds']> = {};
    for (const [t, s] of Object.entries(xdsState)) {
      if (!s) continue;
      xds[shortName(t)] = {
        lastAckVersion: s.lastAckVersion,
        resources: s.resources,
        connected: s.connected,
        ...(s.lastNack ? { lastNack: { at: s.lastNack.at.toISOString(), detail: s.lastNack.detail } } : {}),
      };
    }
    return { description, kind: 'xds', xds, ...extra };
  }
  // A FileSource describes itself as `file PATH`.
  const file = configPath ?? /^file (.+)$/.exec(description)?.[1];
  if (file) {
    let mtime: string | null = null;
    try {
      mtime = fs.statSync(file).mtime.toISOString();
    } catch {
      /* removed since: the config in force stays */
    }
    return { description, kind: 'file', file: { path: path.resolve(file), mtime }, ...extra };
  }
  return { description, kind: 'other', ...extra };
}
