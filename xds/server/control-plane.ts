// The local control plane: the sockmesh config file (the agent's format, plus an optional `xds:`
// list of raw resources) served over ADS, SotW and Delta, to our own client, Envoy-style clients
// and gRPC's xDS clients alike. The file is watched; a valid edit becomes a new snapshot (pushed
// only if some resource changed), an invalid one is logged and the last good snapshot stays.

import { parseArgs } from 'node:util';
import { createLogger, type Logger } from '../../core/log';
import { isConfigError } from '../../config/errors';
import { XdsError } from '../../core/errors';
import { AdsServer } from './ads-server';
import { loadControlPlaneFile, type ControlPlaneConfig } from './config-file';
import { FileWatch } from '../../config/file-watch';
import { modelToXds, type ModelToXdsOptions } from './model-to-xds';
import { Snapshot, type SnapshotEntry } from './snapshot';

export const DEFAULT_LISTEN = '127.0.0.1:15010';

export interface ControlPlaneOptions {
  configPath: string;
  /** `127.0.0.1:0`, `[::1]:PORT`, ...; default 127.0.0.1:15010 (istiod's plaintext xDS port). */
  address?: string;
  log?: Logger;
  /** File-watch tuning (tests use short intervals). */
  debounceMs?: number;
  pollIntervalMs?: number;
  fsWatch?: boolean;
  domain?: ModelToXdsOptions['domain'];
}

export interface ControlPlane {
  port: number;
  /** The address as bound (port resolved). */
  address: string;
  server: AdsServer;
  /** Re-reads the file now; true if it was valid (whether or not anything changed). */
  reload(): boolean;
  stop(): Promise<void>;
}

/** The snapshot entries for a config: generated resources, raw `xds:` ones replacing same-named ones. */
export function controlPlaneEntries(cfg: ControlPlaneConfig, opts: ModelToXdsOptions = {}): SnapshotEntry[] {
  const byKey = new Map<string, SnapshotEntry>();
  for (const r of modelToXds(cfg.loaded.model, opts)) byKey.set(`${r.typeUrl}\0${r.name}`, r);
  for (const r of cfg.extra) byKey.set(`${r.typeUrl}\0${r.name}`, r);
  return [...byKey.values()];
}

export async function startControlPlane(opts: ControlPlaneOptions): Promise<ControlPlane> {
  const log = opts.log ?? createLogger({ component: 'control-plane' });
  const mopts: ModelToXdsOptions = opts.domain ? { domain: opts.domain } : {};
  // An invalid file at start is an error (ConfigError), as for the agent.
  const first = Snapshot.build(controlPlaneEntries(loadControlPlaneFile(opts.configPath), mopts));
  const server = new AdsServer({ log });
  server.setSnapshot(first);

  const reload = (): boolean => {
    let snap: Snapshot;
    try {
      snap = Snapshot.build(controlPlaneEntries(loadControlPlaneFile(opts.configPath), mopts));
    } catch (e) {
      const issues = isConfigError(e) ? e.errors.length : 1;
      log.error('control plane: invalid config, the last good snapshot stays in force', {
        config: opts.configPath,
        issues,
        error: (e as Error).message,
      });
      return false;
    }
    if (snap.version === server.currentSnapshot().version) {
      log.debug('control plane: config re-read, nothing changed', { config: opts.configPath });
    } else {
      log.info('control plane: config changed', { config: opts.configPath, version: snap.version });
      server.setSnapshot(snap);
    }
    return true;
  };

  const watcher = new FileWatch(opts.configPath, () => reload(), {
    ...(opts.debounceMs !== undefined ? { debounceMs: opts.debounceMs } : {}),
    ...(opts.pollIntervalMs !== undefined ? { pollIntervalMs: opts.pollIntervalMs } : {}),
    ...(opts.fsWatch !== undefined ? { fsWatch: opts.fsWatch } : {}),
    keepAlive: false, // the gRPC server keeps the process alive
  });
  const address = opts.address ?? DEFAULT_LISTEN;
  const port = await server.listen(address);
  watcher.start();
  const bound = address.replace(/:\d+$/, `:${port}`);
  log.info('control plane running', { config: opts.configPath, address: bound, resources: first.counts() });
  return {
    port,
    address: bound,
    server,
    reload,
    stop: async () => {
      watcher.stop();
      await server.stop();
    },
  };
}

const USAGE = `usage: sockmesh control-plane --config FILE [--listen ADDR]

  Serves FILE (the agent's config format, plus an optional top-level "xds:" list of raw
  resources in proto3 JSON) over xDS (ADS, State of the World and Delta) and reloads it on change.
  --listen ADDR   HOST:PORT or [IPV6]:PORT, default ${DEFAULT_LISTEN}
`;

/**
 * `sockmesh control-plane --config FILE [--listen ADDR]`: runs until SIGINT/SIGTERM. Exits 2 on
 * bad usage, 1 on an invalid config at start or a failure to listen.
 */
export async function runControlPlaneCli(args: string[]): Promise<ControlPlane> {
  const fail = (msg: string, code: number): never => {
    process.stderr.write(msg.endsWith('\n') ? msg : msg + '\n');
    process.exit(code);
  };
  let values: { config?: string; listen?: string; help?: boolean };
  try {
    ({ values } = parseArgs({ args, options: { config: { type: 'string' }, listen: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (e) {
    return fail(`control-plane: ${(e as Error).message}\n\n${USAGE}`, 2);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  if (!values.config) return fail(`control-plane: --config is required\n\n${USAGE}`, 2);
  const log = createLogger({ component: 'control-plane' });
  let cp: ControlPlane;
  try {
    cp = await startControlPlane({ configPath: values.config, ...(values.listen ? { address: values.listen } : {}), log });
  } catch (e) {
    if (isConfigError(e)) return fail(`sockmesh control-plane: invalid config:\n${e.message}`, 1);
    const code = (e as XdsError).code;
    return fail(`sockmesh control-plane: ${code ? code + ': ' : ''}${(e as Error).message}`, code === 'SM_XDS_CONFIG' ? 2 : 1);
  }
  const stop = (sig: string) => {
    log.info('stopping', { signal: sig });
    void cp.stop().then(() => process.exit(0));
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  return cp;
}
