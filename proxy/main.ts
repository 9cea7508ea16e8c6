// `sockmesh proxy`: the node's L7 proxy process. It accepts only connections the kernel steered to
// it (their origin is in the pinned sm_steer map), judges each HTTP request with the RBAC filters
// the agent pushed for the connection's original destination, and forwards allowed requests to
// that destination. Metrics and admin stay on localhost.
import * as http from 'node:http';
import { isIP } from 'node:net';
import { parseArgs } from 'node:util';
import { DEFAULT_BPFFS_DIR, findCgroup2Mount } from '../abi/pins';
import { createLogger, type Logger } from '../core/log';
import { parseIp } from '../core/ip';
import { DEFAULT_PROXY_CONTROL, ownCgroupId, ProxyConfigMessage, serveControl } from '../abi/proxy-control';
import { KernelOrigins } from './origin';
import { compileRbacFilters } from './rbac';
import { createL7Proxy } from './server';
import type { Evaluator } from './types';

const USAGE = `usage: sockmesh proxy --listen HOST:PORT [--listen HOST:PORT] [--bpffs DIR] [--control SOCKET]
                      [--metrics 127.0.0.1:PORT] [--access-log stdout|none]

  The node's L7 proxy. Pods never address it: connects to services with HTTP rules are steered to
  it by the datapath (agent --proxy-listen). Policies and identities arrive from the agent over
  the control socket (default ${DEFAULT_PROXY_CONTROL}). One JSON access-log line per request goes
  to stdout unless --access-log none.
`;

function splitHostPort(s: string): { host: string; port: number } | null {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(s);
  return m ? { host: m[1], port: Number(m[2]) } : null;
}

/** Compile the pushed policies into a policy table: all or nothing. */
export function compilePolicies(m: Pick<ProxyConfigMessage, 'l7'>, logger?: Logger): Map<string, Evaluator> {
  const table = new Map<string, Evaluator>();
  for (const p of m.l7) {
    const { ip: raw, port } = p.destination;
    const parsed = raw === undefined ? undefined : parseIp(raw);
    if (parsed && !parsed.ok) throw new Error(`L7 policy destination ${JSON.stringify(raw)} is not an IP address`);
    const ip = parsed?.ok ? parsed.address : undefined;
    const key = ip === undefined ? `:${port}` : ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
    table.set(key, compileRbacFilters(p.filters.map((f) => ({ name: f.name, config: f.config })), { logger }));
  }
  return table;
}

export async function runProxyCli(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      listen: { type: 'string', multiple: true },
      bpffs: { type: 'string', default: DEFAULT_BPFFS_DIR },
      control: { type: 'string', default: DEFAULT_PROXY_CONTROL },
      metrics: { type: 'string' },
      'access-log': { type: 'string', default: 'stdout' },
    },
  });
  const accessLog = values['access-log'];
  if (accessLog !== 'stdout' && accessLog !== 'none') {
    process.stderr.write(`proxy: --access-log must be stdout or none, not ${JSON.stringify(accessLog)}\n${USAGE}`);
    process.exit(2);
  }
  const listens = (values.listen ?? []).map(splitHostPort);
  if (!listens.length || listens.some((l) => !l)) {
    process.stderr.write(USAGE);
    process.exit(2);
  }
  const log = createLogger({ component: 'proxy' });
  const origins = new KernelOrigins(values.bpffs!);
  const proxy = createL7Proxy({
    lookupOrigin: (sock) => (sock.remoteAddress && sock.remotePort ? origins.lookup(sock.remoteAddress, sock.remotePort) : undefined),
    accessLog: accessLog === 'stdout' ? (line) => process.stdout.write(line + '\n') : undefined,
    logger: log,
    // Upstream connects leave from the listen addresses (the ones the agent flags as the proxy's).
    sourceAddresses: listens.map((l) => l!.host).filter((h) => isIP(h) && h !== '0.0.0.0' && h !== '::'),
  });
  // The data port first: an acknowledgement the agent turns into steering must come from the
  // process that holds the port the kernel steers to.
  for (const l of listens) await proxy.listen({ host: l!.host, port: l!.port });
  serveControl(
    values.control!,
    (m) => {
    let table: Map<string, Evaluator>;
    try {
      table = compilePolicies(m, log);
    } catch (e) {
      log.error('policies rejected; the previous ones stay in force', { version: m.version, error: (e as Error).message });
      return (e as Error).message;
    }
    origins.setIdentities(new Map(m.identities));
    proxy.setPolicies(table);
    log.info('policies applied', { version: m.version, destinations: table.size, identities: m.identities.length });
    return null;
    },
    { type: 'hello', cgroupId: ownCgroupId(findCgroup2Mount()).toString() },
  );
  if (values.metrics) {
    const m = splitHostPort(values.metrics);
    if (!m || !['127.0.0.1', '::1', 'localhost'].includes(m.host)) {
      process.stderr.write('proxy: --metrics must be a localhost address\n');
      process.exit(2);
    }
    http
      .createServer(async (req, res) => {
        if (req.url !== '/metrics') {
          res.writeHead(404).end();
          return;
        }
        res.writeHead(200, { 'content-type': proxy.registry.contentType }).end(await proxy.metrics());
      })
      .listen(m.port, m.host);
  }
  log.info('proxy running', { listen: values.listen, control: values.control });
  const stop = () => void proxy.close().then(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
