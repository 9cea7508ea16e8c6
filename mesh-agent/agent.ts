// The node agent: one config source -> desired state -> reconciler -> kernel maps.
//
// Start order matters for "bad input never corrupts state": the config is loaded and validated
// before the datapath is touched, so an agent started with a broken file exits non-zero and leaves
// a running datapath exactly as it was. Later invalid edits are logged and ignored; the last good
// config stays in force.
import { EventEmitter } from 'node:events';
import * as os from 'node:os';
import { FileSource, ModelSource, SourceSnapshot } from './sources/source';
import { AF_INET, familyOf } from '../core/ip';
import { Datapath, DatapathSettings } from './datapath/datapath';
import { DEFAULT_BPFFS_DIR, findCgroup2Mount } from '../abi/pins';
import { ApplyReport, desiredState, Reconciler } from './datapath/reconciler';
import { IdentityAllocator } from './datapath/identities';
import { NetnsScanner } from './datapath/netns';
import { spiffeId } from '../core/identity';
import * as fs from 'node:fs';
import { checkHello, ProxyControlClient } from '../abi/proxy-control';
import { L7Readiness } from './datapath/l7-ready';
import { acquireAgentLock } from './lock';
import { createLogger, Logger } from '../core/log';
import { AgentMetrics, xdsEventsOf, xdsStateOf } from './metrics';
import { AdminHandlers, AdminServer, describeSource, Readiness, SourceInfo } from './admin';

export interface AgentOptions extends DatapathSettings {
  /** Where the model comes from; `configPath` is shorthand for a FileSource. */
  source?: ModelSource;
  configPath?: string;
  /** This node's name; default: the config file's `node`, else the hostname. */
  nodeName?: string;
  maxSlots?: number;
  /** Delay before re-applying a config some of which could not be applied (default 5 s). */
  retryMs?: number;
  /**
   * The node's L7 proxy: connects to services with HTTP rules are steered to `host:port` (or
   * `hosts`, one IPv4 and one IPv6 address on a dual-stack node); the proxy's cgroup is exempt;
   * policies and identities are pushed to it over `controlPath`. A VIP with HTTP rules of a family
   * without a proxy address is refused, not steered. The proxy's addresses are also the sources
   * that local ports with HTTP rules accept connections from.
   */
  proxy?: { host: string; hosts?: string[]; port: number; cgroupPath?: string; controlPath: string };
  /**
   * Addresses of the other nodes' L7 proxies (the source address of their upstream connects): a
   * local port with HTTP rules accepts connections from these and from this node's proxy only.
   */
  peerProxies?: string[];
  /**
   * Addresses kubelet probes come from: TCP from these is let into local pods unjudged
   * (SM_EP_F_PROBE). Only a dedicated address that nothing but host-originated connections is
   * SNATed to is safe here (README, "Kubelet probes"). None by default.
   */
  probeSources?: string[];
  /**
   * Translate service addresses for every socket in the meshed cgroup, also of processes that are
   * no enrolled workload (kube-proxy replacement style). Default false: only sockets of enrolled
   * workloads (a known pod cgroup or network namespace) are translated, so a pod that runs its own
   * sidecar, or a process the mesh does not know, connects to the VIP untouched.
   */
  translateUnenrolled?: boolean;
  /** How often the network namespaces of the meshed cgroup are rescanned (default 2 s; see scanNetns). */
  netnsRescanMs?: number;
  log?: Logger;
  /**
   * The admin endpoint (/metrics, /healthz, /readyz, /config-dump, /debug/state): a loopback
   * `HOST:PORT` or `unix:/PATH`; anything else is refused. Absent: no admin endpoint.
   */
  admin?: { listen: string };
}

/** What the agent last received and applied (admin /config-dump and /readyz read it). */
export interface AgentSnapshot {
  /** The last model from the source, as received, with where it came from; undefined before. */
  received?: { snapshot: SourceSnapshot; source: SourceInfo; at: Date };
  /** The last apply of it to the kernel; undefined before. */
  applied?: { report: ApplyReport; at: Date };
  /** The last input the source rejected (the config in force stayed). */
  rejected?: { error: Error; at: Date };
  nodeName: string;
}

export interface AgentEvents {
  /** A config was applied; `doneAt` is process.hrtime.bigint() right after the kernel update returned. */
  applied: [ApplyReport, bigint];
  /** A config reload was rejected; the last good config stays in force. */
  invalid: [Error];
}

export class Agent extends EventEmitter<AgentEvents> {
  private readonly log: Logger;
  private source?: ModelSource;
  private dp?: Datapath;
  private reconciler?: Reconciler;
  private identities?: IdentityAllocator;
  private netns?: NetnsScanner;
  private netnsTimer?: NodeJS.Timeout;
  private retiredTimer?: NodeJS.Timeout;
  private lastNetns = '';
  private nodeName = '';
  private releaseLock?: () => void;
  private retryTimer?: NodeJS.Timeout;
  private proxyControl?: ProxyControlClient;
  private l7Ready?: L7Readiness;
  /** How many L7 policies the last "no proxy" warning was about (warn again when that changes). */
  private warnedNoProxy = 0;
  private lastProxyConfig = '';
  private lastPolicyWarnings = '';
  /** Reports of every apply, newest last (tests and status read them). */
  readonly reports: ApplyReport[] = [];
  /** Prometheus metrics (served on the admin endpoint's /metrics). */
  readonly metrics: AgentMetrics;
  private admin?: AdminServer;
  private attached = false;
  private last: Omit<AgentSnapshot, 'nodeName'> = {};
  private readonly startedAt = new Date();

  constructor(private readonly opts: AgentOptions) {
    super();
    this.log = opts.log ?? createLogger({ component: 'agent' });
    this.metrics = new AgentMetrics(
      { datapath: () => this.dp, xdsState: () => xdsStateOf(this.source) },
      { onCollectError: (what, e) => this.log.warn('metrics: kernel read failed', { what, error: e as Error }) },
    );
  }

  /** Validate config, take the agent lock, install or adopt the datapath, apply the config. */
  async start(): Promise<ApplyReport> {
    if (!this.opts.source && !this.opts.configPath) throw new Error('agent: a source or a configPath is required');
    this.source = this.opts.source ?? new FileSource(this.opts.configPath!);
    // The admin endpoint comes up first, so /healthz answers and /readyz says what is awaited while
    // a control plane is slow to send the first config. An address in use is reported only once
    // the agent lock is ours: a second agent on the same datapath must fail with SM_AGENT_RUNNING.
    let adminInUse: unknown;
    if (this.opts.admin) {
      try {
        this.admin = await AdminServer.start(this.opts.admin.listen, this.adminHandlers(), this.log);
        this.log.info('admin endpoint listening', { address: this.admin.url });
      } catch (e) {
        if ((e as { code?: string }).code !== 'EADDRINUSE') throw e;
        adminInUse = e;
      }
    }
    let report: ApplyReport;
    try {
      const starting = this.source.start(); // rejects on invalid input before anything is touched
      const xdsEvents = xdsEventsOf(this.source); // created inside start(): hook before its first response
      if (xdsEvents) this.metrics.watchXds(xdsEvents);
      const initial = await starting;
      this.releaseLock = await acquireAgentLock(this.opts.bpffsDir ?? DEFAULT_BPFFS_DIR);
      if (adminInUse) throw adminInUse;
      try {
        this.dp = Datapath.install(this.opts);
      } catch (e) {
        this.metrics.attachFailed();
        throw e;
      }
      this.attached = true;
      const k = this.dp.features;
      if (k) {
        this.log.info('kernel features', {
          kernel: k.kernel,
          present: k.features.filter((f) => f.present).map((f) => f.name),
          absent: k.features.filter((f) => !f.present).map((f) => `${f.name}${f.fallback ? ` (${f.fallback})` : ''}`),
        });
      }
      for (const p of this.dp.programs) {
        this.log.info('program', { name: p.name, attach: p.attachType, outcome: p.outcome, progId: p.progId, linkId: p.linkId });
      }
      for (const m of this.dp.migrations) this.log.info('pinned map migrated to a new layout or capacity', { ...m });
      for (const r of this.dp.retiredInUse) this.log.info('old sockhash kept until its sockets close', r);
      this.dp.setTranslateAll(!!this.opts.translateUnenrolled);
      if (this.dp.retiredInUse.length) {
        this.retiredTimer = setInterval(() => {
          for (const pin of this.dp!.collectRetired()) this.log.info('old sockhash removed: its last socket closed', { pin });
          if (!this.dp!.retiredInUse.length) clearInterval(this.retiredTimer);
        }, 10_000);
        this.retiredTimer.unref();
      }
      this.setUpProxy();
      this.reconciler = new Reconciler(this.dp);
      this.identities = new IdentityAllocator(this.dp);
      if (this.opts.cgroupPath) this.netns = new NetnsScanner(this.opts.cgroupPath);
      const adopted = this.reconciler.adopt();
      this.log.info('adopted kernel state', adopted);
      report = this.applyConfig(initial);
    } catch (e) {
      this.stop();
      throw e;
    }
    this.source.on('update', (cfg) => this.applyConfig(cfg));
    this.source.on('invalid', (err) => {
      this.last.rejected = { error: err, at: new Date() };
      this.log.error('config rejected; keeping the last good config', {
        code: (err as { code?: string }).code,
        source: this.source?.description,
        errors: (err as { errors?: unknown }).errors ?? err.message,
      });
      this.emit('invalid', err);
    });
    return report;
  }

  /**
   * Destinations the kernel steers to the L7 proxy now ("ip|port" -> version of the table the
   * proxy acknowledged them in); empty without a proxy or before its first answer.
   */
  proxySteering(): Map<string, number> {
    return this.l7Ready?.current() ?? new Map();
  }

  private setUpProxy(): void {
    const p = this.opts.proxy;
    this.l7Ready = new L7Readiness(this.dp!);
    // Nothing left from a previous agent is trusted: the proxy it talked to may be gone, or
    // another process may hold its port. Steering starts again with this agent's first answer.
    this.l7Ready.clear();
    if (!p) {
      // No proxy: connects to services with HTTP rules are refused in the kernel (fail closed).
      this.dp!.configureProxy(null);
      return;
    }
    // ::ffff:a.b.c.d is IPv4 (core/ip.ts).
    const hosts = p.hosts?.length ? p.hosts : [p.host];
    const proxy4 = hosts.find((h) => familyOf(h) === AF_INET);
    const proxy6 = hosts.find((h) => familyOf(h) !== AF_INET);
    // Steering is on from the start, so HTTP rules fail closed while no proxy runs (connects to
    // those services are refused). The proxy's own cgroup, exempt from steering, comes from
    // --proxy-cgroup or from the proxy itself when it connects (its hello).
    // The proxy's cgroup, and during a handover (abi/proxy-handover.ts) the old proxy's as well: both
    // exempt until the old one has finished its connections.
    let exempt = 0n;
    let draining = 0n;
    const configure = () =>
      this.dp!.configureProxy({ proxyCgroupId: exempt, proxyCgroupPrev: draining, proxyPort: p.port, ...(proxy4 ? { proxy4 } : {}), ...(proxy6 ? { proxy6 } : {}) });
    const fixed = p.cgroupPath ? fs.statSync(p.cgroupPath, { bigint: true }).ino : 0n;
    exempt = fixed;
    configure();
    this.proxyControl = new ProxyControlClient(p.controlPath);
    this.proxyControl.on('hello', (h, peerPid, { replacing }) => {
      // Believed only for the cgroup the process behind the socket really runs in (SO_PEERCRED),
      // and never against --proxy-cgroup: else whoever binds the socket exempts any cgroup.
      const why = fixed && BigInt(h.cgroupId) !== fixed ? `the hello names cgroup ${h.cgroupId}, --proxy-cgroup is ${fixed}` : checkHello(h, peerPid, findCgroup2Mount());
      if (why) {
        this.log.error('proxy hello ignored: its cgroup stays steered', { reason: why, cgroupId: h.cgroupId, pid: peerPid });
        return;
      }
      const cg = BigInt(h.cgroupId);
      if (replacing && exempt && exempt !== cg) draining = exempt;
      exempt = cg;
      this.log.info(replacing ? 'proxy connected, taking over from the running one' : 'proxy connected', { cgroupId: h.cgroupId, pid: peerPid });
      configure();
    });
    this.proxyControl.on('retired', (left) => {
      this.log.info('the proxy that handed over has finished', { stillDraining: left });
      if (left === 0 && draining) {
        draining = 0n;
        configure();
      }
    });
    this.proxyControl.on('error', (e) => this.log.debug('proxy control channel', { error: e.message }));
    this.proxyControl.on('invalid', (why) => this.log.warn('proxy control channel: a line from the proxy was ignored', { reason: why }));
    // Steering for a destination starts only once the proxy has acknowledged its rules, and stops
    // for all of them when the proxy goes away (l7-ready.ts): until then such connects are refused.
    this.proxyControl.on('down', () => {
      try {
        this.l7Ready!.clear();
      } catch (e) {
        this.log.error('could not stop steering to the L7 proxy', { error: (e as Error).message });
      }
      this.log.warn('proxy control channel closed: connects that need the L7 proxy are refused until a proxy acknowledges its policies');
    });
    this.proxyControl.on('reply', (r) => {
      if (!r.ok) {
        this.log.error('proxy rejected policies; it keeps the previous ones, and new destinations stay refused', { version: r.version, error: r.error });
        return;
      }
      try {
        const added = this.l7Ready!.acked(r.version);
        this.log.info('proxy applied policies', { version: r.version, steered: this.l7Ready!.size, added });
      } catch (e) {
        this.log.error('proxy applied policies, but steering could not be enabled for all of them (they stay refused)', { version: r.version, error: (e as Error).message });
      }
    });
  }

  private applyConfig(cfg: SourceSnapshot): ApplyReport {
    clearTimeout(this.retryTimer);
    this.nodeName = this.opts.nodeName ?? cfg.nodeName ?? os.hostname();
    if (this.last.received?.snapshot !== cfg) {
      // Versions as of receipt: they belong to this model (a later rejected edit does not).
      const source = describeSource(this.source, xdsStateOf(this.source), this.opts.configPath);
      this.last.received = { snapshot: cfg, source, at: new Date() };
    }
    const p = this.opts.proxy;
    const proxies = [...(p ? (p.hosts?.length ? p.hosts : [p.host]) : []), ...(this.opts.peerProxies ?? [])];
    // Numbers from the pinned allocation: stable across restarts, never shared by two names.
    const numbered = this.identities!.assign(
      cfg.model.workloads.map((w) => spiffeId(w)),
      () => this.reconciler!.identitiesInUse(),
    );
    const desired = desiredState(cfg.model, this.nodeName, { maxSlots: this.opts.maxSlots, proxies, probeSources: this.opts.probeSources, identities: numbered.ids, ...this.scanNetns() });
    const warnings = desired.policy.warnings.join('\n');
    if (warnings !== this.lastPolicyWarnings) {
      this.lastPolicyWarnings = warnings;
      for (const w of desired.policy.warnings) this.log.warn('policy', { warning: w });
    }
    const report = this.reconciler!.apply(desired);
    report.errors.push(...numbered.errors);
    const appliedAt = new Date();
    this.last.applied = { report, at: appliedAt };
    this.metrics.observeApply(report, appliedAt);
    const l7 = cfg.model.policies?.l7?.length ?? 0;
    if (!this.opts.proxy && l7 && l7 !== this.warnedNoProxy) {
      this.warnedNoProxy = l7;
      this.log.warn('the config has HTTP rules but the agent runs without --proxy-listen: connects to those destinations are refused', { l7Policies: l7 });
    }
    if (this.proxyControl) {
      const msg = { l7: desired.proxyDestinations, identities: [...desired.identities] };
      const json = JSON.stringify(msg);
      if (json !== this.lastProxyConfig) {
        this.lastProxyConfig = json;
        const version = this.proxyControl.send(msg);
        // Destinations this config dropped stop being steered now; new ones wait for the answer.
        try {
          this.l7Ready!.applied(desired.proxyDestinations, version);
        } catch (e) {
          this.log.error('could not update which destinations are steered to the L7 proxy', { error: (e as Error).message });
        }
      }
    }
    const doneAt = process.hrtime.bigint();
    this.reports.push(report);
    const { errors, ...counts } = report;
    this.log.info('applied config', { node: this.nodeName, ...counts, errors: errors.length });
    for (const e of errors) this.log.error('change not applied', { code: e.code, error: e.message, ...e.details });
    this.emit('applied', report, doneAt);
    if (errors.length) {
      // Room may free up (a capacity change, another service shrinking) or a transient kernel error
      // may pass: try the same config again until it all lands.
      this.retryTimer = setTimeout(() => this.applyConfig(cfg), this.opts.retryMs ?? 5000);
      this.retryTimer.unref();
    }
    return report;
  }

  /**
   * The network namespaces of the meshed cgroup, scanned now and rescanned while the agent runs
   * (pods come and go without a config change). They decide two things: which namespace is a local
   * pod's own, address by address (only then are its sockets paired on the same node: a namespace
   * a pod made for itself never is), and the identity of local workloads without a known cgroup.
   */
  private scanNetns(): { netns: Map<bigint, string[]>; netnsCgroups: Map<bigint, string[]> } | undefined {
    if (!this.netns) return undefined;
    const view = this.netns.scan();
    for (const e of view.errors) this.log.warn('network namespace not read; its pod stays unresolved and off the same-node fast path', { error: e });
    this.lastNetns = netnsKey(view.byCookie, view.cgroups);
    if (!this.netnsTimer) {
      this.netnsTimer = setInterval(() => {
        const v = this.netns!.scan();
        if (netnsKey(v.byCookie, v.cgroups) !== this.lastNetns && this.last.received) this.applyConfig(this.last.received.snapshot);
      }, this.opts.netnsRescanMs ?? 2000);
      this.netnsTimer.unref();
    }
    return { netns: view.byCookie, netnsCgroups: view.cgroups };
  }

  /** What the agent last received from its source and applied (admin /config-dump, /readyz). */
  snapshot(): AgentSnapshot {
    return { ...this.last, nodeName: this.nodeName };
  }

  /** Ready once the programs are attached and the first config is applied (admin /readyz). */
  readiness(): Readiness {
    const { received, applied } = this.last;
    if (!this.attached) {
      if (received) return { ready: false, reason: 'attaching the datapath programs' };
      return { ready: false, reason: `waiting for the first config from ${this.source?.description ?? 'the source'}` };
    }
    if (!applied) return { ready: false, reason: 'applying the first config' };
    const errors = applied.report.errors.length;
    return {
      ready: true,
      reason: errors ? `config applied with ${errors} change(s) not applied (retried)` : 'programs attached, config applied',
      appliedAt: applied.at.toISOString(),
      applyErrors: errors,
    };
  }

  /** The admin endpoint's address (the real port when 0 was asked for); undefined without one. */
  get adminAddress(): string | undefined {
    return this.admin?.url;
  }

  private adminHandlers(): AdminHandlers {
    return {
      registry: this.metrics.registry,
      readiness: () => this.readiness(),
      configDump: () => {
        const r = this.last.received;
        if (!r) return null;
        const a = this.last.applied;
        return {
          source: r.source,
          nodeName: this.nodeName,
          receivedAt: r.at.toISOString(),
          ...(r.snapshot.nodeName !== undefined ? { sourceNodeName: r.snapshot.nodeName } : {}),
          model: r.snapshot.model,
          lastApply: a ? applySummary(a.report, a.at) : null,
        };
      },
      debugState: () => ({
        pid: process.pid,
        startedAt: this.startedAt.toISOString(),
        uptimeSeconds: Math.round((Date.now() - this.startedAt.getTime()) / 1000),
        nodeName: this.nodeName,
        readiness: this.readiness(),
        source: describeSource(this.source, xdsStateOf(this.source), this.opts.configPath),
        datapath: {
          bpffsDir: this.opts.bpffsDir ?? DEFAULT_BPFFS_DIR,
          cgroupPath: this.opts.cgroupPath,
          programs: this.dp?.programs ?? [],
          proxy: this.opts.proxy ? { host: this.opts.proxy.host, port: this.opts.proxy.port, cgroupPath: this.opts.proxy.cgroupPath } : null,
        },
        applies: this.reports.length,
        lastApply: this.last.applied ? applySummary(this.last.applied.report, this.last.applied.at) : null,
        lastRejected: this.last.rejected ? { at: this.last.rejected.at.toISOString(), error: this.last.rejected.error.message } : null,
      }),
    };
  }

  get datapath(): Datapath {
    if (!this.dp) throw new Error('agent not started');
    return this.dp;
  }

  /** Stop watching and close fds. The datapath stays pinned and keeps working. */
  stop(): void {
    clearTimeout(this.retryTimer);
    clearInterval(this.netnsTimer);
    clearInterval(this.retiredTimer);
    this.admin?.close();
    this.admin = undefined;
    void this.metrics.close();
    this.attached = false;
    this.proxyControl?.close();
    this.source?.stop();
    this.dp?.close();
    this.dp = undefined;
    this.releaseLock?.();
    this.releaseLock = undefined;
  }
}

function applySummary(r: ApplyReport, at: Date): Record<string, unknown> {
  const { errors, ...counts } = r;
  return { at: at.toISOString(), ...counts, errors: errors.map((e) => ({ code: e.code, message: e.message, ...(Object.keys(e.details ?? {}).length ? { details: e.details } : {}) })) };
}

function netnsKey(m: Map<bigint, string[]>, cgroups: Map<bigint, string[]>): string {
  return JSON.stringify([...m].map(([c, a]) => [String(c), [...a].sort(), [...(cgroups.get(c) ?? [])].sort()]).sort());
}
