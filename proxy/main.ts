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
import { DEFAULT_PROXY_CONTROL, ownCgroupId, ProxyConfigMessage, serveControl, type ControlServer } from '../abi/proxy-control';
import { closeInherited, DEFAULT_PROXY_HANDOVER, kernelExempts, serveHandover, takeOver, type Inheritance } from '../abi/proxy-handover';
import { KernelOrigins } from './origin';
import { compileRbacFilters } from './rbac';
import { createL7Proxy } from './server';
import type { Evaluator } from './types';

const USAGE = `usage: sockmesh proxy --listen HOST:PORT [--listen HOST:PORT] [--bpffs DIR] [--control SOCKET]
                      [--handover SOCKET|none] [--metrics 127.0.0.1:PORT] [--access-log stdout|none]

  The node's L7 proxy. Pods never address it: connects to services with HTTP rules are steered to
  it by the datapath (agent --proxy-listen). Policies and identities arrive from the agent over
  the control socket (default ${DEFAULT_PROXY_CONTROL}). One JSON access-log line per request goes
  to stdout unless --access-log none.

  Restarts fail no request: a proxy started while another runs takes its listening sockets over
  through the handover socket (default ${DEFAULT_PROXY_HANDOVER}), with the policies in force;
  the old one then finishes its connections and exits (abi/proxy-handover.ts).
`;

/** How long a successor waits for the agent to exempt its cgroup before it accepts anyway. */
const EXEMPT_WAIT_MS = 10_000;

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
      handover: { type: 'string', default: DEFAULT_PROXY_HANDOVER },
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
  const metricsAt = values.metrics ? splitHostPort(values.metrics) : undefined;
  if (values.metrics && (!metricsAt || !['127.0.0.1', '::1', 'localhost'].includes(metricsAt.host))) {
    process.stderr.write('proxy: --metrics must be a localhost address\n');
    process.exit(2);
  }
  let closeMetrics = () => {};
  const log = createLogger({ component: 'proxy' });
  const mount = findCgroup2Mount();
  const ownCgroup = ownCgroupId(mount);
  const handoverPath = values.handover === 'none' ? undefined : values.handover!;
  // A proxy already running here hands its listening sockets and policies over (or null: none).
  let inherited: Inheritance | null = null;
  if (handoverPath) {
    try {
      inherited = takeOver(handoverPath);
    } catch (e) {
      log.error('could not take over from the running proxy; starting afresh', { error: (e as Error).message });
    }
  }
  const origins = new KernelOrigins(values.bpffs!);
  const proxy = createL7Proxy({
    lookupOrigin: (sock) => (sock.remoteAddress && sock.remotePort ? origins.lookup(sock.remoteAddress, sock.remotePort) : undefined),
    accessLog: accessLog === 'stdout' ? (line) => process.stdout.write(line + '\n') : undefined,
    logger: log,
    // Upstream connects leave from the listen addresses (the ones the agent flags as the proxy's).
    sourceAddresses: listens.map((l) => l!.host).filter((h) => isIP(h) && h !== '0.0.0.0' && h !== '::'),
  });
  let inForce: string | null = null;
  const apply = (m: ProxyConfigMessage): string | null => {
    let table: Map<string, Evaluator>;
    try {
      table = compilePolicies(m, log);
    } catch (e) {
      log.error('policies rejected; the previous ones stay in force', { version: m.version, error: (e as Error).message });
      return (e as Error).message;
    }
    origins.setIdentities(new Map(m.identities));
    proxy.setPolicies(table);
    inForce = JSON.stringify(m);
    log.info('policies applied', { version: m.version, destinations: table.size, identities: m.identities.length });
    return null;
  };
  const hello = { type: 'hello' as const, cgroupId: ownCgroup.toString() };
  let control: ControlServer;
  if (inherited) {
    // The old proxy's policies first, so that nothing is accepted here without them.
    if (inherited.config && apply(inherited.config) !== null) {
      inherited.abort();
      inherited = null;
      log.error('the running proxy\'s policies do not compile here; starting afresh');
    }
  }
  if (inherited) {
    const inh = inherited;
    control = serveControl(values.control!, apply, hello);
    inh.controlReady();
    // Our own upstream connects must not be steered back to us: wait for the agent to exempt this
    // cgroup (at once when the old proxy ran in the same one).
    const deadline = Date.now() + EXEMPT_WAIT_MS;
    const exempt = () => inh.predecessorCgroupId === ownCgroup || kernelExempts(values.bpffs!, ownCgroup);
    while (!exempt() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    if (!exempt()) log.error('the agent has not exempted this proxy\'s cgroup; accepting anyway (upstream connects to steered services will fail)', { cgroupId: ownCgroup.toString() });
    const taken = new Set<number>();
    for (const l of listens) {
      const got = inh.listeners.find((x) => x.port === l!.port && (x.host === l!.host || x.host === `::ffff:${l!.host}`));
      if (got) {
        taken.add(got.fd);
        await proxy.listen({ fd: got.fd });
      } else {
        await proxy.listen({ host: l!.host, port: l!.port });
      }
    }
    for (const x of inh.listeners) if (!taken.has(x.fd)) closeInherited(x);
    inh.serving();
    log.info('took over from the running proxy', { listeners: inh.listeners.map((l) => `${l.host}:${l.port}`), inherited: taken.size });
  } else {
    // The data port first: an acknowledgement the agent turns into steering must come from the
    // process that holds the port the kernel steers to.
    for (const l of listens) await proxy.listen({ host: l!.host, port: l!.port });
    control = serveControl(values.control!, apply, hello);
  }
  let stopHandover = () => {};
  let leaving = false;
  if (handoverPath) {
    stopHandover = serveHandover(
      handoverPath,
      {
        state: () => ({ listeners: proxy.listeners(), config: inForce, cgroupId: ownCgroup }),
        begin: () => control.close(),
        controlReady: () => control.announceHandover(),
        serving: () => {
          leaving = true;
          closeMetrics();
          log.info('the successor accepts; finishing our connections', { connections: proxy.connectionCount() });
          void proxy.close().then(() => {
            control.close(true);
            log.info('handed over; exiting');
            setTimeout(() => process.exit(0), 50).unref();
          });
        },
        abort: () => {
          if (!leaving) control = serveControl(values.control!, apply, hello);
        },
      },
      log,
    );
  }
  if (metricsAt) {
    const server = http.createServer(async (req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': proxy.registry.contentType }).end(await proxy.metrics());
    });
    // During a handover the old proxy holds the port until it leaves: try again until then.
    server.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code !== 'EADDRINUSE' || leaving) {
        log.error('metrics listener', { error: e.message });
        return;
      }
      setTimeout(() => server.listen(metricsAt.port, metricsAt.host), 200).unref();
    });
    server.listen(metricsAt.port, metricsAt.host);
    closeMetrics = () => server.close();
  }
  log.info('proxy running', { listen: values.listen, control: values.control });
  const stop = () => {
    stopHandover();
    void proxy.close().then(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
