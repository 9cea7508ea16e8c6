// Memory (issue 6, scenario 6): RSS of the agent, the node's L7 proxy and the control plane with a
// tiny config and with N services (default 10 000, 10 endpoints each), and the kernel memory of
// every sockmesh map.
//
// Same processes as bench/propagation.ts (its Rig): `sockmesh control-plane` serving a file,
// `sockmesh agent --xds` with `--proxy-listen`, and `sockmesh proxy` in the sandbox's `proxy` pod.
// Every `l7Every`-th service carries HTTP rules (an Envoy listener with an RBAC filter, as istiod
// sends for an AuthorizationPolicy with HTTP fields), so the proxy holds policies for that share of
// the services; it holds nothing for the others (pure L4 services never reach it).
//
// Phases, in one run:
//   idle, default map sizes   tiny config (a few services), maps at their compiled-in capacities
//   idle, sized maps          the same, maps created with the --map-size N services need
//   N services                the control plane loads the big file, then a fresh agent starts
//                             against it (not a push: see the report), kernel and proxy checked
//
// Kernel map memory is `memlock:` from /proc/self/fdinfo of each pinned map (what the kernel
// charges: bpf_map_memory_usage()).
//
//   node dist/bench/memory.js [--quick] [--services 10000] [--endpoints 10] [--l7-every 10]
//        [--source sotw|delta|file] [--timeout-s 600] [--out FILE.json]
import { parseArgs } from 'node:util';
import { Datapath } from '../mesh-agent/datapath/datapath';
import { ChartSpec, procRss, ScenarioOptions, ScenarioResult, intArg, runStandalone } from './common';
import { MapMemory, mapMemory, ServiceProbe } from './kernelmaps';
import { configYaml, endpointAddr, mapSizeArgs, pollUntil, Rig, serviceKey, settle, stopProc, waitLog, XdsMode } from './propagation';

export interface MemoryOptions {
  services: number;
  endpointsPerService: number;
  /** Every n-th service has HTTP rules (0: none). */
  l7Every: number;
  /** Services of the idle config. */
  idleServices: number;
  /** How the agent gets the big config. */
  source: XdsMode;
  /** Give up on the agent converging on the big config after this long. */
  timeoutS: number;
}

export const FULL: MemoryOptions = { services: 10000, endpointsPerService: 10, l7Every: 10, idleServices: 10, source: 'sotw', timeoutS: 600 };
export const QUICK: MemoryOptions = { ...FULL, services: 1000, timeoutS: 300 };

interface Rss {
  rssKiB: number;
  hwmKiB: number;
}

export interface MemoryPhase {
  phase: string;
  services: number;
  endpoints: number;
  /** --map-size arguments of the agent. */
  mapSizes: string[];
  source: XdsMode;
  agent: Rss;
  proxy: Rss | null;
  controlPlane: Rss;
  /** What the proxy said it holds ("policies applied"). */
  proxyHolds: { destinations: number; identities: number } | null;
  maps: MapMemory[];
  mapsMemlockBytes: number;
}

const l7Count = (services: number, every: number): number => (every ? Math.ceil(services / every) : 0);

export async function runMemory(o: MemoryOptions & ScenarioOptions): Promise<ScenarioResult> {
  const log = o.log;
  const E = o.endpointsPerService;
  const sized = mapSizeArgs(o.services, E);
  const phases: MemoryPhase[] = [];
  const failures: string[] = [];
  const rig = await Rig.create({ config: { services: o.idleServices, endpointsPerService: E, l7Every: o.l7Every, workloads: [] }, log });
  let probe: ServiceProbe | undefined;
  try {
    const cfg = (services: number) => configYaml({ services, endpointsPerService: E, l7Every: o.l7Every, workloads: rig.workloads() });
    await rig.loadConfig(cfg(o.idleServices));
    await rig.startControlPlane();

    /** Agent (+ proxy unless running) up with `services` in the kernel and the proxy's policies in. */
    const up = async (source: XdsMode, mapSizes: string[], services: number, timeoutMs: number): Promise<{ destinations: number; identities: number } | null> => {
      if (source === 'file') rig.writeConfig(configYaml({ services, endpointsPerService: E, workloads: rig.workloads() }), rig.agentCfgPath);
      rig.proxy?.log.poll();
      const proxyFrom = rig.proxy?.log.lines.length ?? 0; // before the agent can send anything
      await rig.startAgent(source, mapSizes, true, timeoutMs);
      if (!rig.proxy) rig.startProxy();
      probe ??= new ServiceProbe(rig.bpffs);
      const last = services - 1;
      const r = pollUntil(
        () => {
          const b = probe!.backends(serviceKey(last));
          return !!b && b.length === E && b.some((x) => x.ip === endpointAddr(last * E)) && probe!.serviceCount() === services;
        },
        timeoutMs,
        20_000,
        [rig.agent!],
      );
      if (!r.ok) throw new Error(`memory: the kernel did not reach ${services} services within ${timeoutMs} ms`);
      // One entry per VIP with HTTP rules and one per address of its backends (a direct connect to
      // a backend is steered and judged too); every endpoint here has an address of its own.
      const want = source === 'file' ? 0 : l7Count(services, o.l7Every) * (1 + E);
      const held = await waitLog(rig.proxy!, (j) => j.msg === 'policies applied' && j.destinations === want, 120_000, proxyFrom, `proxy "policies applied" with ${want} destinations`);
      await settle([rig.agent!.pid, rig.proxy!.pid, rig.cp!.pid], 120_000, 200);
      return { destinations: held.destinations, identities: held.identities };
    };
    const measure = (phase: string, source: XdsMode, services: number, mapSizes: string[], proxyHolds: MemoryPhase['proxyHolds']): void => {
      const maps = mapMemory(rig.bpffs);
      const p: MemoryPhase = {
        phase,
        services,
        endpoints: services * E,
        mapSizes,
        source,
        agent: procRss(rig.agent!.pid),
        proxy: rig.proxy ? procRss(rig.proxy.pid) : null,
        controlPlane: procRss(rig.cp!.pid),
        proxyHolds,
        maps,
        mapsMemlockBytes: maps.reduce((a, m) => a + (Number.isFinite(m.memlockBytes) ? m.memlockBytes : 0), 0),
      };
      phases.push(p);
      log(`memory: ${phase}: agent ${(p.agent.rssKiB / 1024).toFixed(0)} MiB, proxy ${p.proxy ? (p.proxy.rssKiB / 1024).toFixed(0) : '–'} MiB, maps ${(p.mapsMemlockBytes / 2 ** 20).toFixed(1)} MiB`);
    };
    const restartDatapath = async (): Promise<void> => {
      await stopProc(rig.proxy);
      rig.proxy = undefined;
      await rig.stopAgent();
      probe?.close();
      probe = undefined;
      Datapath.remove(rig.bpffs); // new map capacities need new maps
    };

    // 1. idle, default map sizes
    let holds = await up(o.source, [], o.idleServices, 120_000);
    measure('idle, default map sizes', o.source, o.idleServices, [], holds);

    // 2. idle, sized maps (skipped when the defaults already fit)
    if (sized.length) {
      await restartDatapath();
      holds = await up(o.source, sized, o.idleServices, 120_000);
      measure('idle, sized maps', o.source, o.idleServices, sized, holds);
    }

    // 3. N services: the control plane loads the file while no agent runs, then a fresh agent starts.
    await rig.stopAgent();
    if (o.source !== 'file') await rig.loadConfig(cfg(o.services));
    try {
      holds = await up(o.source, sized, o.services, o.timeoutS * 1000);
      measure(`${o.services} services`, o.source, o.services, sized, holds);
    } catch (e) {
      if (o.source === 'file') throw e;
      const msg = `agent (${o.source}) did not converge on ${o.services} services within ${o.timeoutS} s: ${(e as Error).message.split('\n')[0]}\nlast agent log lines:\n${rig.agent?.log.tail(6) ?? ''}`;
      failures.push(msg);
      log(`memory: ${msg}`);
      // Fall back to the agent reading the same services from its own file (no HTTP rules: the
      // file format has no xds: section, so the proxy then holds nothing).
      await rig.stopAgent(1000);
      holds = await up('file', sized, o.services, o.timeoutS * 1000);
      measure(`${o.services} services (agent file)`, 'file', o.services, sized, holds);
    }
  } finally {
    probe?.close();
    await rig.close();
  }
  const data = { options: { ...o, log: undefined }, phases, failures };
  return { name: 'memory', title: 'Memory', markdown: markdown(o, phases, failures), data, charts: charts(phases), headline: headline(phases) };
}

const mib = (kib: number | undefined): string => (kib === undefined || !Number.isFinite(kib) ? '–' : (kib / 1024).toFixed(1));
const mibB = (b: number): string => (Number.isFinite(b) ? (b / 2 ** 20).toFixed(2) : '–');

function headline(phases: MemoryPhase[]): Array<{ metric: string; value: string }> {
  const big = phases[phases.length - 1];
  if (!big) return [];
  return [
    { metric: `agent RSS at ${big.services} services / ${big.endpoints} endpoints`, value: `${mib(big.agent.rssKiB)} MiB (peak ${mib(big.agent.hwmKiB)} MiB)` },
    { metric: `kernel map memory at ${big.services} services`, value: `${mibB(big.mapsMemlockBytes)} MiB` },
  ];
}

function markdown(o: MemoryOptions, phases: MemoryPhase[], failures: string[]): string {
  const proc = phases.map(
    (p) =>
      `| ${p.phase} | ${p.services} / ${p.endpoints} | ${mib(p.agent.rssKiB)} | ${mib(p.agent.hwmKiB)} | ${mib(p.proxy?.rssKiB)} | ${mib(p.proxy?.hwmKiB)} | ${p.proxyHolds ? `${p.proxyHolds.destinations} / ${p.proxyHolds.identities}` : '–'} | ${mib(p.controlPlane.rssKiB)} | ${mib(p.controlPlane.hwmKiB)} |`,
  );
  const names = phases[0]?.maps.map((m) => m.name) ?? [];
  const mapRows = names.map((name) => {
    const cells = phases.map((p) => {
      const m = p.maps.find((x) => x.name === name)!;
      return `${m.entries ?? '–'} / ${m.maxEntries} | ${mibB(m.memlockBytes)}`;
    });
    const m0 = phases[0].maps.find((x) => x.name === name)!;
    return `| ${name} | ${m0.type}${m0.type.includes('HASH') && m0.type !== 'SOCKHASH' ? (m0.noPrealloc ? ', no prealloc' : ', prealloc') : ''} | ${cells.join(' | ')} |`;
  });
  // Under each phase's MiB column (each phase has an entries column before it).
  const sums = phases.map((p) => `| **${mibB(p.mapsMemlockBytes)}**`).join(' | ');
  return `RSS (resident set) and its high-water mark (VmHWM) from /proc/PID/status of each process, after it was quiet for a while; kernel map memory is \`memlock:\` of each map's /proc/self/fdinfo entry (what the kernel accounts for the map, bpf_map_memory_usage()), per sockmesh map. Each service has one VIP, one TCP port and ${o.endpointsPerService} endpoints; every ${o.l7Every ? `${o.l7Every}th service (${l7Count(o.services, o.l7Every)} of ${o.services})` : 'no service'} has HTTP rules (an Envoy listener with an RBAC filter denying /admin), which is what the L7 proxy is given: the agent sends it the HTTP policies of those VIPs and of their backends' addresses (one destination each) and the identity table, nothing about pure L4 services. The agent gets its config over xDS (${o.source}) from \`sockmesh control-plane\`; for the ${o.services}-service phase the control plane loaded the big file first and a fresh agent then started against it (a live push of the whole config is measured in the propagation scenario; its peak memory is in the agent's high-water mark there).

| phase | services / endpoints | agent RSS (MiB) | agent peak | proxy RSS | proxy peak | proxy holds (L7 destinations / identities) | control plane RSS | control plane peak |
|---|---:|---:|---:|---:|---:|---:|---:|---:|
${proc.join('\n')}
${failures.length ? `\nNot measured as intended:\n\n${failures.map((f) => `- ${f.split('\n')[0]}`).join('\n')}\n\n  The "(agent file)" row is the fallback: the agent read the same services and endpoints from its own file (\`--config\`). That file format has no \`xds:\` section and lists no workload for the endpoint addresses, so in that row the proxy holds no HTTP policies and the agent no identity per endpoint address (over xDS the control plane sends a synthetic workload for each): it understates what the xDS agent holds.\n` : ''}
Kernel maps (entries / capacity | memlock MiB) per phase:

| map | type | ${phases.map((p) => `${p.phase}: entries / capacity | MiB`).join(' | ')} |
|---|---|${phases.map(() => '---:|---:').join('|')}|
${mapRows.join('\n')}
| **sum** | | ${sums} |

Notes:

- Map memory is charged when a map is created for a preallocated map (the LRU maps \`sm_revnat\` and \`sm_steer\`, the sockhash's bucket array, the arrays): that part depends on the capacities (\`--map-size\`), not on the config. Hash maps with \`BPF_F_NO_PREALLOC\` (services, backend slots, identities, policy) allocate elements on insert, and the kernel's memlock figure for them follows the element count (plus the bucket array sized by the capacity), so the idle rows show what capacity alone costs and the last row what ${o.services} services add. Socket storage (\`sm_sock_state\`) is charged per socket and reported as the map's own overhead only.
- Node's RSS includes the V8 heap as last grown: after a big config the heap is not returned to the system at once, so RSS after a change is nearer the high-water mark than to what the model needs; the peak columns are what a container memory limit must allow.
- The control plane here is sockmesh's local one (one per cluster in a real deployment, not per node); the agent and the proxy are the per-node costs.
`;
}

function charts(phases: MemoryPhase[]): ChartSpec[] {
  if (!phases.length) return [];
  return [
    {
      name: 'memory-rss',
      title: 'Resident memory per process',
      unit: 'MiB',
      groups: phases.map((p) => p.phase),
      series: [
        { label: 'agent', values: phases.map((p) => p.agent.rssKiB / 1024) },
        { label: 'agent peak', values: phases.map((p) => p.agent.hwmKiB / 1024) },
        { label: 'L7 proxy', values: phases.map((p) => (p.proxy ? p.proxy.rssKiB / 1024 : null)) },
        { label: 'control plane', values: phases.map((p) => p.controlPlane.rssKiB / 1024) },
      ],
    },
    {
      name: 'memory-maps',
      title: 'Kernel map memory (memlock)',
      unit: 'MiB',
      groups: phases.map((p) => p.phase),
      series: [{ label: 'all sockmesh maps', values: phases.map((p) => p.mapsMemlockBytes / 2 ** 20) }],
    },
  ];
}

/** Options from the command line, defaults from FULL or QUICK. */
export function memoryArgs(argv: string[], quick = false): MemoryOptions & { out?: string } {
  const d = quick ? QUICK : FULL;
  const { values } = parseArgs({
    args: argv,
    options: {
      services: { type: 'string', default: String(d.services) },
      endpoints: { type: 'string', default: String(d.endpointsPerService) },
      'l7-every': { type: 'string', default: String(d.l7Every) },
      'idle-services': { type: 'string', default: String(d.idleServices) },
      source: { type: 'string', default: d.source },
      'timeout-s': { type: 'string', default: String(d.timeoutS) },
      out: { type: 'string' },
    },
  });
  const source = values.source!;
  if (source !== 'sotw' && source !== 'delta' && source !== 'file') throw new Error(`--source: '${source}' is not sotw, delta or file`);
  const o = {
    services: intArg(values.services!, 'services', 1),
    endpointsPerService: intArg(values.endpoints!, 'endpoints', 1),
    l7Every: intArg(values['l7-every']!, 'l7-every', 0),
    idleServices: intArg(values['idle-services']!, 'idle-services', 1),
    source: source as XdsMode,
    timeoutS: intArg(values['timeout-s']!, 'timeout-s', 1),
    out: values.out,
  };
  if (o.idleServices >= o.services) throw new Error('--idle-services must be below --services');
  return o;
}

if (require.main === module) runStandalone(memoryArgs, runMemory);
