// The `sockmesh` command line.
//
// Only what the usage text and several commands need is imported here (the datapath module is
// needed by the proxy too). Each subcommand loads its own modules when it
// runs: `sockmesh proxy` must not pay for the agent's sources (@kubernetes/client-node, grpc-js),
// about a second of CPU at every start.
import { parseArgs } from 'node:util';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { DEFAULT_BPFFS_DIR, findCgroup2Mount, type MapName, SIZABLE_MAPS } from '../abi/pins';
import type { SockmeshError } from '../core/errors';
import { AF_INET6, canonicalIp, familyOf } from '../core/ip';
import type { ModelSource } from '../mesh-agent/sources/source';
import { DEFAULT_PROXY_CONTROL } from '../abi/proxy-control';
import { DEFAULT_ADMIN_LISTEN } from '../mesh-agent/admin';

const USAGE = `usage: sockmesh <command> [options]

commands:
  agent (--config FILE | --xds HOST:PORT | --kubernetes) [--kubernetes] --cgroup PATH [--bpffs DIR] [--node-name NAME]
        [--map-size MAP=N ...] [--xds-mode sotw|delta] [--xds-ca FILE [--xds-cert FILE --xds-key FILE]]
        [--xds-token-file FILE] [--cgroup-driver auto|systemd|cgroupfs|none] [--proxy-listen HOST:PORT [--proxy-listen [IPv6]:PORT] [--proxy-cgroup PATH] [--proxy-control SOCKET]]
        [--peer-proxy IP ...] [--probe-source IP ...] [--translate-unenrolled] [--admin 127.0.0.1:PORT|[::1]:PORT|unix:PATH|none]
        run the node agent: load or adopt the datapath, apply the model from FILE (reloaded on
        change) or from an xDS control plane (ADS), keep the kernel in step; the admin endpoint
        (loopback or unix socket only) serves /metrics, /healthz, /readyz, /config-dump, /debug/state;
        local ports with HTTP rules accept connections only from the proxy's addresses and --peer-proxy
        (the other nodes' proxies); TCP from --probe-source (a dedicated address that only kubelet's
        connections are SNATed to) is let into local pods unjudged, as ztunnel lets probes in;
        service addresses are translated for enrolled workloads only, for every process in the
        --cgroup with --translate-unenrolled (kube-proxy replacement style)
  status [--bpffs DIR] [--json]
        attached programs, map usage and datapath counters
  dump services|endpoints|identities|policies|sockets [--bpffs DIR] [--json]
        what the kernel maps hold: services with backend shares, backends -> services, local pod
        identities (SPIFFE ids from the agent: [--admin ADDR|none]), L4 policy maps, sockhash
  trace --from POD_IP --to VIP:PORT [--proto tcp|udp] [--bpffs DIR] [--json]
        what the datapath will do with such a connection: service, backends and shares, identity,
        same-node redirect, L7 steering, L4 policy
  config-dump [--admin ADDR]
        the config the running agent received (model, source versions, last apply)
  config check FILE
        validate a config file (exit 1 with FILE:LINE:COL: PATH: REASON lines if invalid)
  datapath remove [--bpffs DIR]
        detach every program and delete the pins (the only way the datapath goes away)
  control-plane --config FILE [--listen ADDR]
        a local xDS control plane: serves FILE (the agent's format, plus raw resources under xds:)
        as Envoy (CDS/EDS/LDS/RDS) and Istio ambient (Address, Authorization) resources, State of
        the World and Delta, and pushes changes when FILE changes
  proxy --listen HOST:PORT [--bpffs DIR] [--control SOCKET] [--metrics 127.0.0.1:PORT]
        the node's L7 proxy (HTTP authorization with Envoy RBAC semantics) for steered connections
  authz check --rbac FILE [--rbac FILE ...] --method M --path P [--header K:V ...] [--source-ip IP]
        [--source-principal SPIFFE] [--dest-ip IP] [--dest-port N] [--sni NAME] [--json]
        evaluate RBAC filter files (as in the fixtures) for one request, with the proxy's evaluator
  xds translate FILE [--json]
        an Envoy admin config dump or a list of ambient resources -> the sockmesh model, with
        warnings naming what was skipped and why

defaults: --bpffs ${DEFAULT_BPFFS_DIR}, --admin ${DEFAULT_ADMIN_LISTEN}
`;

function fail(msg: string, code = 2): never {
  process.stderr.write(msg.endsWith('\n') ? msg : msg + '\n');
  process.exit(code);
}

function parseMapSizes(values: string[] | undefined): Partial<Record<MapName, number>> {
  const out: Partial<Record<MapName, number>> = {};
  for (const v of values ?? []) {
    const m = /^([a-z_]+)=(\d+)$/.exec(v);
    if (!m || !(SIZABLE_MAPS as readonly string[]).includes(m[1]) || Number(m[2]) < 1) {
      fail(`--map-size ${v}: expected MAP=N with MAP one of ${SIZABLE_MAPS.join(', ')} and N >= 1`);
    }
    out[m[1] as MapName] = Number(m[2]);
  }
  return out;
}

async function runAgent(args: string[]): Promise<void> {
  const { Agent } = await import('../mesh-agent/agent');
  const { isConfigError } = await import('../config');
  const { createLogger } = await import('../core/log');
  const { FileSource } = await import('../mesh-agent/sources/source');
  const { XdsSource } = await import('../mesh-agent/sources/xds');
  const { KubernetesSource } = await import('../mesh-agent/sources/kubernetes');
  const { MergedSource } = await import('../mesh-agent/sources/merge');
  const { parseAdminAddress } = await import('../mesh-agent/admin');
  const { values } = parseArgs({
    args,
    options: {
      config: { type: 'string' },
      xds: { type: 'string' },
      'xds-mode': { type: 'string', default: 'sotw' },
      'xds-ca': { type: 'string' },
      'xds-cert': { type: 'string' },
      'xds-key': { type: 'string' },
      'xds-token-file': { type: 'string' },
      'proxy-listen': { type: 'string', multiple: true },
      'proxy-cgroup': { type: 'string' },
      'proxy-control': { type: 'string', default: DEFAULT_PROXY_CONTROL },
      'peer-proxy': { type: 'string', multiple: true },
      'probe-source': { type: 'string', multiple: true },
      cgroup: { type: 'string' },
      bpffs: { type: 'string', default: DEFAULT_BPFFS_DIR },
      'node-name': { type: 'string' },
      'map-size': { type: 'string', multiple: true },
      admin: { type: 'string', default: DEFAULT_ADMIN_LISTEN },
      kubernetes: { type: 'boolean', default: false },
      'cgroup-driver': { type: 'string', default: 'auto' },
      'translate-unenrolled': { type: 'boolean', default: false },
    },
  });
  if (!values.cgroup || (values.config && values.xds) || (!values.config && !values.xds && !values.kubernetes)) {
    fail(`agent: --cgroup and one of --config, --xds or --kubernetes (which may accompany either) are required\n\n${USAGE}`);
  }
  if (values.kubernetes && !values['node-name']) fail('agent: --kubernetes needs --node-name (the Kubernetes node this agent runs on)');
  const driver = values['cgroup-driver'];
  if (!['auto', 'systemd', 'cgroupfs', 'none'].includes(driver!)) fail('agent: --cgroup-driver must be auto, systemd, cgroupfs or none');
  const mode = values['xds-mode'];
  if (mode !== 'sotw' && mode !== 'delta') fail(`agent: --xds-mode must be sotw or delta`);
  if (!!values['xds-cert'] !== !!values['xds-key']) fail('agent: --xds-cert and --xds-key go together');
  const admin = values.admin === 'none' ? undefined : { listen: values.admin! };
  if (admin) {
    try {
      parseAdminAddress(admin.listen); // refuse a non-loopback address before anything starts
    } catch (e) {
      fail(`agent: --admin: ${(e as Error).message}`);
    }
  }
  const log = createLogger({ component: 'agent' });
  const primary: ModelSource | undefined = values.xds
    ? new XdsSource({
        server: values.xds,
        mode,
        nodeName: values['node-name'],
        tls: values['xds-ca'] ? { caFile: values['xds-ca'], certFile: values['xds-cert'], keyFile: values['xds-key'] } : undefined,
        tokenFile: values['xds-token-file'],
        log,
      })
    : values.config
      ? new FileSource(values.config)
      : undefined;
  // Kubernetes: this node's enrolled pods (with their cgroups); also Services and EndpointSlices
  // when there is no control plane or file to describe services.
  const pods = values.kubernetes
    ? new KubernetesSource({
        nodeName: values['node-name']!,
        services: primary === undefined,
        cgroupRoot: findCgroup2Mount(),
        cgroupDriver: driver as 'auto' | 'systemd' | 'cgroupfs' | 'none',
        log,
      })
    : undefined;
  const source: ModelSource = primary && pods ? new MergedSource(primary, pods, values['node-name']) : (primary ?? pods)!;
  let proxy: { host: string; hosts?: string[]; port: number; cgroupPath?: string; controlPath: string } | undefined;
  if (values['proxy-listen']?.length || values['proxy-cgroup']) {
    // One address per family (a dual-stack node gives both), on one port: sm_config has one port.
    const listens = (values['proxy-listen'] ?? []).map((v) => {
      const hp = /^\[?([^\]]+?)\]?:(\d+)$/.exec(v);
      if (!hp || canonicalIp(hp[1]) === undefined || Number(hp[2]) < 1 || Number(hp[2]) > 65535) fail(`agent: --proxy-listen ${v}: expected IP:PORT or [IPv6]:PORT`);
      return { host: hp[1], port: Number(hp[2]), v6: familyOf(hp[1]) === AF_INET6 };
    });
    if (!listens.length) fail('agent: --proxy-listen HOST:PORT is required with --proxy-cgroup');
    if (listens.length > 2 || (listens.length === 2 && listens[0].v6 === listens[1].v6)) fail('agent: --proxy-listen: at most one IPv4 and one IPv6 address');
    if (listens.some((l) => l.port !== listens[0].port)) fail('agent: --proxy-listen: both addresses must use the same port');
    proxy = { host: listens[0].host, hosts: listens.map((l) => l.host), port: listens[0].port, cgroupPath: values['proxy-cgroup'], controlPath: values['proxy-control']! };
  }
  const peerProxies = values['peer-proxy'] ?? [];
  for (const ip of peerProxies) if (canonicalIp(ip) === undefined) fail(`agent: --peer-proxy ${ip}: expected an IP address`);
  const probeSources = values['probe-source'] ?? [];
  for (const v of probeSources) if (canonicalIp(v) === undefined) fail(`agent: --probe-source ${v}: expected an IP address`);
  const agent = new Agent({
    source,
    proxy,
    peerProxies,
    probeSources,
    cgroupPath: values.cgroup,
    bpffsDir: values.bpffs,
    nodeName: values['node-name'],
    mapSizes: parseMapSizes(values['map-size']),
    translateUnenrolled: values['translate-unenrolled'],
    log,
    admin,
  });
  try {
    await agent.start();
  } catch (e) {
    if (isConfigError(e)) fail(`sockmesh agent: invalid config, nothing changed:\n${e.message}`, 1);
    const err = e as SockmeshError;
    fail(`sockmesh agent: ${err.code ? err.code + ': ' : ''}${err.message}`, 1);
  }
  log.info('agent running', { source: source.description, cgroup: values.cgroup, bpffs: values.bpffs, admin: agent.adminAddress ?? 'none' });
  const stop = (sig: string) => {
    log.info('stopping; the datapath stays attached', { signal: sig });
    agent.stop();
    process.exit(0);
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

export async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'agent':
        return await runAgent(rest);
      case 'status': {
        const { values } = parseArgs({
          args: rest,
          options: { bpffs: { type: 'string', default: DEFAULT_BPFFS_DIR }, json: { type: 'boolean', default: false } },
        });
        const { formatStatus, readStatus } = await import('./status');
        const s = readStatus(values.bpffs);
        process.stdout.write(values.json ? JSON.stringify(s, null, 2) + '\n' : formatStatus(s) + '\n');
        return;
      }
      case 'dump':
        process.exitCode = await (await import('./dump')).runDumpCli(rest);
        return;
      case 'trace':
        process.exitCode = (await import('./trace')).runTraceCli(rest);
        return;
      case 'config-dump':
        process.exitCode = await (await import('./config-dump')).runConfigDumpCli(rest);
        return;
      case 'config': {
        if (rest[0] !== 'check' || !rest[1]) fail(USAGE);
        const { isConfigError, loadConfigFile } = await import('../config');
        try {
          const cfg = loadConfigFile(rest[1]);
          process.stdout.write(
            `${rest[1]}: ok (${cfg.model.services.length} services, ${cfg.model.endpoints.length} endpoints, ${cfg.model.workloads.length} workloads)\n`,
          );
        } catch (e) {
          if (isConfigError(e)) fail(e.message, 1);
          throw e;
        }
        return;
      }
      case 'datapath': {
        if (rest[0] !== 'remove') fail(USAGE);
        const { values } = parseArgs({ args: rest.slice(1), options: { bpffs: { type: 'string', default: DEFAULT_BPFFS_DIR } } });
        const r = Datapath.remove(values.bpffs);
        process.stdout.write(`removed datapath at ${values.bpffs}; detached: ${r.detached.join(', ') || 'nothing'}\n`);
        return;
      }
      case 'proxy':
        await (await import('../proxy/main')).runProxyCli(rest);
        return;
      case 'authz': {
        if (rest[0] !== 'check') fail(USAGE);
        process.exitCode = (await import('../proxy/rbac')).runAuthzCheckCli(rest.slice(1));
        return;
      }
      case 'control-plane':
        await (await import('../xds/server/control-plane')).runControlPlaneCli(rest);
        return;
      case 'xds': {
        if (rest[0] !== 'translate') fail(USAGE);
        process.exitCode = (await import('../xds/translate')).runTranslateCli(rest.slice(1));
        return;
      }
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE);
        return;
      default:
        fail(`unknown command ${JSON.stringify(cmd)}\n\n${USAGE}`);
    }
  } catch (e) {
    const err = e as SockmeshError;
    fail(`sockmesh ${cmd}: ${err.code ? err.code + ': ' : ''}${err.message}`, 1);
  }
}
