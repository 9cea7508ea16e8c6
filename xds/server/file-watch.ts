// Calls back when a file may have changed, the way mesh-agent/config/watch.ts detects changes
// (that class is tied to the agent's loader, which rejects our `xds:` key): fs.watch on the
// directory, filtered by basename (editors and ConfigMap volumes replace files by rename or by
// swapping a `..data` symlink), plus a poll of the file's metadata as a fallback; both feed one
// trailing debounce timer. What "changed" means is up to the callback (it re-reads and compares).

import { statSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';

export interface FileWatchOptions {
  /** Quiet period after the last notification. Default 100 ms. */
  debounceMs?: number;
  /** Metadata poll interval. Default 1000 ms. */
  pollIntervalMs?: number;
  /** Also use fs.watch. Default true. */
  fsWatch?: boolean;
}

export class FileWatch {
  readonly path: string;
  private readonly dir: string;
  private readonly base: string;
  private readonly debounceMs: number;
  private readonly pollIntervalMs: number;
  private readonly useFsWatch: boolean;
  private watcher: FSWatcher | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private debounceTimer: NodeJS.Timeout | undefined;
  private lastStat = '';
  private running = false;

  constructor(path: string, private readonly onChange: () => void, opts: FileWatchOptions = {}) {
    this.path = resolve(path);
    this.dir = dirname(this.path);
    this.base = basename(this.path);
    this.debounceMs = opts.debounceMs ?? 100;
    this.pollIntervalMs = opts.pollIntervalMs ?? 1000;
    this.useFsWatch = opts.fsWatch ?? true;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.lastStat = this.statKey();
    if (this.useFsWatch) {
      try {
        this.watcher = watch(this.dir, { persistent: false }, (_ev, name) => {
          const n = name?.toString();
          if (!n || n === this.base || n === '..data') this.kick();
        });
        this.watcher.on('error', () => {
          this.watcher?.close();
          this.watcher = undefined; // the poll carries on alone
        });
      } catch {
        this.watcher = undefined;
      }
    }
    this.pollTimer = setInterval(() => {
      const k = this.statKey();
      if (k !== this.lastStat) {
        this.lastStat = k;
        this.kick();
      }
    }, this.pollIntervalMs);
    this.pollTimer.unref();
  }

  stop(): void {
    this.running = false;
    this.watcher?.close();
    this.watcher = undefined;
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    this.pollTimer = this.debounceTimer = undefined;
  }

  private kick(): void {
    if (!this.running) return;
    if (this.debounceTimer) clearTimeout(this.debounceTimer);
    this.debounceTimer = setTimeout(() => {
      this.debounceTimer = undefined;
      this.lastStat = this.statKey();
      if (this.running) this.onChange();
    }, this.debounceMs);
  }

  private statKey(): string {
    try {
      const s = statSync(this.path);
      return `${s.ino}:${s.size}:${s.mtimeMs}:${s.ctimeMs}`;
    } catch {
      return 'missing';
    }
  }
}
