// Calls back when a file may have changed. Shared by the agent's config source and the local
// control plane.
//
// Belt and braces: fs.watch on the *directory*, filtered by basename, because editors and config
// management replace files by writing a temp file and renaming it (a watch on the file's inode would
// not survive), and `..data` events count too (Kubernetes ConfigMap volumes swap a symlink); plus a
// poll of the file's dev/inode/size/mtime/ctime for file systems where fs.watch is unreliable (NFS,
// some overlays), which also re-opens the directory watch if the directory (re)appears. Both feed
// one trailing debounce timer, so a burst of writes gives one callback. What "changed" means is the
// callback's business (it re-reads and compares).
import { statSync, watch, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';

export interface FileWatchOptions {
  /** Quiet period after the last notification before the callback. Default 100 ms. */
  debounceMs?: number;
  /** How often the file's metadata is polled. Default 1000 ms. */
  pollIntervalMs?: number;
  /** Use fs.watch on the directory in addition to polling. Default true; false = poll only. */
  fsWatch?: boolean;
  /** Keep the process alive while watching (the agent relies on it). Default true. */
  keepAlive?: boolean;
}

export class FileWatch {
  readonly path: string;
  private readonly dir: string;
  private readonly base: string;
  private readonly debounceMs: number;
  private readonly pollIntervalMs: number;
  private readonly useFsWatch: boolean;
  private readonly keepAlive: boolean;
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
    this.keepAlive = opts.keepAlive ?? true;
  }

  /** Start watching; the file's current metadata is the baseline. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.lastStat = this.statKey();
    this.openWatcher();
    this.pollTimer = setInterval(() => this.poll(), this.pollIntervalMs);
    if (!this.keepAlive) this.pollTimer.unref();
  }

  /**
   * Take the file's metadata as seen now (call it right before reading the file: a write racing
   * with the read then shows up on the next poll).
   */
  markSeen(): void {
    this.lastStat = this.statKey();
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
    this.debounceTimer = setTimeout(() => {
      this.debounceTimer = undefined;
      if (!this.running) return;
      this.markSeen();
      this.onChange();
    }, this.debounceMs);
  }

  private poll(): void {
    if (!this.running) return;
    if (!this.watcher && this.useFsWatch) this.openWatcher(); // the directory may have (re)appeared
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
    if (!this.useFsWatch) return;
    try {
      const w = watch(this.dir, { persistent: this.keepAlive }, (_event, filename) => {
        const f = filename === null || filename === undefined ? null : filename.toString();
        if (f === null || f === this.base || f === '..data') this.schedule();
      });
      w.on('error', () => {
        // e.g. the directory was removed; polling carries on and re-opens the watch.
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
      /* already closed */
    }
  }
}
