// The node agent: one config source -> desired state -> reconciler -> kernel maps.
//
// Start order matters for "bad input never corrupts state": the config is loaded and validated
// before the datapath is touched, so an agent started with a broken file exits non-zero and leaves
// a running datapath exactly as it was. Later invalid edits are logged and ignored; the last good
// config stays in force.
import { EventEmitter } from 'node:events';
import * as os from 'node:os';
import { FileSource, ModelSource, SourceSnapshot } from './sources/source';
import { Datapath, DatapathSettings, DEFAULT_BPFFS_DIR } from './datapath/datapath';
import { ApplyReport, desiredState, Reconciler } from './datapath/reconciler';
import * as fs from 'node:fs';
import { isIP } from 'node:net';
import { ProxyControlClient } from '../proxy/control';
import { acquireAgentLock } from './lock';
import { createLogger, Logger } from './log';

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
   * The node's L7 proxy: connects to services with HTTP rules are steered to `host:port`; the
   * proxy's cgroup is exempt; policies and identities are pushed to it over `controlPath`.
   */
  proxy?: { host: string; port: number; cgroupPath: string; controlPath: string };
  log?: Logger;
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
  private nodeName = '';
  private releaseLock?: () => void;
  private retryTimer?: NodeJS.Timeout;
  private proxyControl?: ProxyControlClient;
  private lastProxyConfig = '';
  /** Reports of every apply, newest last (tests and status read them). */
  readonly reports: ApplyReport[] = [];

  constructor(private readonly opts: AgentOptions) {
    super();
    this.log = opts.log ?? createLogger({ component: 'agent' });
  }

  /** Validate config, take the agent lock, install or adopt the datapath, apply the config. */
  async start(): Promise<ApplyReport> {
    if (!this.opts.source && !this.opts.configPath) throw new Error('agent: a source or a configPath is required');
    this.source = this.opts.source ?? new FileSource(this.opts.configPath!);
    const initial = await this.source.start(); // rejects on invalid input before anything is touched
    let report: ApplyReport;
    try {
      this.releaseLock = await acquireAgentLock(this.opts.bpffsDir ?? DEFAULT_BPFFS_DIR);
      this.dp = Datapath.install(this.opts);
      for (const p of this.dp.programs) {
        this.log.info('program', { name: p.name, attach: p.attachType, outcome: p.outcome, progId: p.progId, linkId: p.linkId });
      }
      this.setUpProxy();
      this.reconciler = new Reconciler(this.dp);
      const adopted = this.reconciler.adopt();
      this.log.info('adopted kernel state', adopted);
      report = this.applyConfig(initial);
    } catch (e) {
      this.stop();
      throw e;
    }
    this.source.on('update', (cfg) => this.applyConfig(cfg));
    this.source.on('invalid', (err) => {
      this.log.error('config rejected; keeping the last good config', {
        code: (err as { code?: string }).code,
        source: this.source?.description,
        errors: (err as { errors?: unknown }).errors ?? err.message,
      });
      this.emit('invalid', err);
    });
    return report;
  }

  private setUpProxy(): void {
    const p = this.opts.proxy;
    if (!p) {
      this.dp!.configureProxy(null); // nothing is steered without a proxy
      return;
    }
    const fam = isIP(p.host);
    this.dp!.configureProxy({
      proxyCgroupId: fs.statSync(p.cgroupPath, { bigint: true }).ino,
      proxyPort: p.port,
      ...(fam === 4 ? { proxy4: p.host } : { proxy6: p.host }),
    });
    this.proxyControl = new ProxyControlClient(p.controlPath);
    this.proxyControl.on('error', (e) => this.log.debug('proxy control channel', { error: e.message }));
    this.proxyControl.on('reply', (r) => {
      if (r.ok) this.log.info('proxy applied policies', { version: r.version });
      else this.log.error('proxy rejected policies; it keeps the previous ones', { version: r.version, error: r.error });
    });
  }

  private applyConfig(cfg: SourceSnapshot): ApplyReport {
    clearTimeout(this.retryTimer);
    this.nodeName = this.opts.nodeName ?? cfg.nodeName ?? os.hostname();
    const desired = desiredState(cfg.model, this.nodeName, this.opts.maxSlots);
    const report = this.reconciler!.apply(desired);
    if (this.proxyControl) {
      const msg = { l7: cfg.model.policies?.l7 ?? [], identities: [...desired.identities] };
      const json = JSON.stringify(msg);
      if (json !== this.lastProxyConfig) {
        this.lastProxyConfig = json;
        this.proxyControl.send(msg);
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

  get datapath(): Datapath {
    if (!this.dp) throw new Error('agent not started');
    return this.dp;
  }

  /** Stop watching and close fds. The datapath stays pinned and keeps working. */
  stop(): void {
    clearTimeout(this.retryTimer);
    this.proxyControl?.close();
    this.source?.stop();
    this.dp?.close();
    this.dp = undefined;
    this.releaseLock?.();
    this.releaseLock = undefined;
  }
}
