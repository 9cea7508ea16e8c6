// ConfigFileSource: the local config file as a live source of Models. Change detection is
// FileWatch's (file-watch.ts: directory watch + metadata poll + debounce); this class re-reads,
// validates and compares.

import { EventEmitter } from 'node:events';
import { resolve } from 'node:path';
import { ConfigError } from './errors';
import { FileWatch } from './file-watch';
import { canonicalJson, loadConfigFile, type LoadedConfig } from './local-file';

export interface ConfigFileSourceOptions {
  /** Quiet period after the last change notification before the file is re-read. Default 100 ms. */
  debounceMs?: number;
  /** How often the file's metadata is polled as a fallback to fs.watch. Default 1000 ms. */
  pollIntervalMs?: number;
  /** Use fs.watch on the directory in addition to polling. Default true; false = poll only. */
  fsWatch?: boolean;
}

export interface ConfigFileSourceEvents {
  /** A reload produced a valid config that differs from the current one (which it now is). */
  update: [LoadedConfig];
  /** A reload failed validation (or the file could not be read); the current config is unchanged. */
  invalid: [ConfigError];
}

export class ConfigFileSource extends EventEmitter<ConfigFileSourceEvents> {
  readonly path: string;
  private readonly watch: FileWatch;
  private last: LoadedConfig | undefined;
  private lastJson = '';
  private running = false;

  constructor(path: string, opts: ConfigFileSourceOptions = {}) {
    super();
    this.path = resolve(path);
    this.watch = new FileWatch(this.path, () => this.reload(), opts);
  }

  /**
   * Loads the file and starts watching it. Throws ConfigError if the file is invalid (nothing is
   * left running in that case).
   */
  start(): LoadedConfig {
    if (this.running) throw new Error('ConfigFileSource already started');
    const cfg = loadConfigFile(this.path);
    this.last = cfg;
    this.lastJson = canonicalJson(cfg);
    this.running = true;
    this.watch.start();
    return cfg;
  }

  /** The last valid config (undefined before start()). */
  current(): LoadedConfig | undefined {
    return this.last;
  }

  /** Re-reads the file now (e.g. on SIGHUP). */
  reload(): void {
    if (!this.running) return;
    this.watch.markSeen();
    let cfg: LoadedConfig;
    try {
      cfg = loadConfigFile(this.path);
    } catch (e) {
      const err =
        e instanceof ConfigError
          ? e
          : new ConfigError([{ file: this.path, path: '(file)', reason: `unexpected error: ${(e as Error)?.message ?? String(e)}` }]);
      this.emit('invalid', err);
      return;
    }
    const json = canonicalJson(cfg);
    if (json === this.lastJson) return;
    this.last = cfg;
    this.lastJson = json;
    this.emit('update', cfg);
  }

  stop(): void {
    this.running = false;
    this.watch.stop();
  }
}
