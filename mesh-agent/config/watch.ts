// ConfigFileSource: the local config file as a live source of Models.
//
// Change detection is deliberately belt-and-braces:
//  - fs.watch on the *directory* (filtered by basename), because editors and config-management
//    tools replace files by writing a temp file and renaming it over the original, which a watch on
//    the file itself (an inode) would not survive; `..data` events are also honoured, which is how
//    Kubernetes ConfigMap volumes swap content (via a symlink);
//  - a poll of the file's inode/size/mtime/ctime (following symlinks) every pollIntervalMs, for
//    file systems and platforms where fs.watch is unreliable (NFS, some container overlays).
// Both feed one trailing debounce timer, so a burst of writes causes one reload.

import { EventEmitter } from 'node:events';
import { statSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { ConfigError } from './errors';
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
  private readonly dir: string;
  private readonly base: string;
  private readonly debounceMs: number;
  private readonly pollIntervalMs: number;
  private readonly fsWatch: boolean;

  private last: LoadedConfig | undefined;
  private lastJson = '';
  private lastStat = '';
  private running = false;
  private watcher: FSWatcher | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private debounceTimer: NodeJS.Timeout | undefined;

  constructor(path: string, opts: ConfigFileSourceOptions = {}) {
    super();
    this.path = resolve(path);
    this.dir = dirname(this.path);
    this.base = basename(this.path);
    this.debounceMs = opts.debounceMs ?? 100;
    this.pollIntervalMs = opts.pollIntervalMs ?? 1000;
    this.fsWatch = opts.fsWatch ?? true;
  }

  /**
   * Loads the file and starts watching it. Throws ConfigError if the file is invalid (nothing is
   * left running in that case).
   */
  start(): LoadedConfig {
    if (this.running) throw new Error('ConfigFileSource already started');
    this.lastStat = this.statKey();
    const cfg = loadConfigFile(this.path);
    this.last = cfg;
    this.lastJson = canonicalJson(cfg);
    this.running = true;
    this.openWatcher();
    this.pollTimer = setInterval(() => this.poll(), this.pollIntervalMs);
    return cfg;
  }

  /** The last valid config (undefined before start()). */
  current(): LoadedConfig | undefined {
    return this.last;
  }

  /** Re-reads the file now (e.g. on SIGHUP), bypassing the debounce. */
  reload(): void {
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    this.debounceTimer = undefined;
    if (!this.running) return;
    // Record the metadata *before* reading: a write racing with the read shows up on the next poll.
    this.lastStat = this.statKey();
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
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    if (this.pollTimer) clearInterval(this.pollTimer);
    this.debounceTimer = this.pollTimer = undefined;
    this.closeWatcher();
  }

  private schedule(): void {
    if (!this.running) return;
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    this.debounceTimer = setTimeout(() => this.reload(), this.debounceMs);
  }

  private poll(): void {
    if (!this.running) return;
    if (!this.watcher && this.fsWatch) this.openWatcher(); // the directory may have (re)appeared
    if (this.statKey() !== this.lastStat) this.schedule();
  }

  private statKey(): string {
    try {
      const s = statSync(this.path, { bigint: true });
      return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`;
    } catch (e) {
      return `missing:${(e as NodeJS.ErrnoException).code ?? ''}`;
    }
  }

  private openWatcher(): void {
    if (!this.fsWatch) return;
    try {
      const w = watch(this.dir, { persistent: true }, (_event, filename) => {
        const f = filename === null || filename === undefined ? null : filename.toString();
        if (f === null || f === this.base || f === '..data') this.schedule();
      });
      w.on('error', () => {
        // e.g. the directory was removed; fall back to polling, which retries the watch.
        if (this.watcher === w) this.closeWatcher();
      });
      this.watcher = w;
    } catch {
      this.watcher = undefined; // polling still works
    }
  }

  private closeWatcher(): void {
    const w = this.watcher;
    this.watcher = undefined;
    try {
      w?.close();
    } catch {
      /* ignore */
    }
  }
}
