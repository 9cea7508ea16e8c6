// A source of the desired model: the local file today, xDS next, the Kubernetes API later. The
// agent takes one source; whatever it emits is reconciled into the kernel.
import { EventEmitter } from 'node:events';
import { ConfigFileSource } from '../../config';
import type { Model } from '../../core/model';

export interface SourceSnapshot {
  model: Model;
  /** The node the source says this is, when it knows (the local file's `node:`). */
  nodeName?: string;
}

export interface ModelSourceEvents {
  /** A new valid model that differs from the previous one. */
  update: [SourceSnapshot];
  /** Input rejected; the last good model stays in force. */
  invalid: [Error];
}

export interface ModelSource extends EventEmitter<ModelSourceEvents> {
  /** A short description for logs, e.g. `file /etc/sockmesh/mesh.yaml`. */
  readonly description: string;
  /** Resolves with the first model; rejects (touching nothing) when the first input is invalid. */
  start(): Promise<SourceSnapshot>;
  stop(): void;
}

/** The local YAML file (config/), reloaded on change. */
export class FileSource extends EventEmitter<ModelSourceEvents> implements ModelSource {
  readonly description: string;
  private readonly file: ConfigFileSource;

  constructor(path: string) {
    super();
    this.description = `file ${path}`;
    this.file = new ConfigFileSource(path);
    this.file.on('update', (cfg) => this.emit('update', cfg));
    this.file.on('invalid', (err) => this.emit('invalid', err));
  }

  async start(): Promise<SourceSnapshot> {
    return this.file.start();
  }

  stop(): void {
    this.file.stop();
  }
}

/** A fixed model given in code (embedders, the benchmarks, tests); `set` pushes a new one. */
export class StaticSource extends EventEmitter<ModelSourceEvents> implements ModelSource {
  constructor(
    private snap: SourceSnapshot,
    readonly description = 'static model',
  ) {
    super();
  }
  async start(): Promise<SourceSnapshot> {
    return this.snap;
  }
  /** Replace the model: the agent applies it as it would a changed file. */
  set(snap: SourceSnapshot): void {
    this.snap = snap;
    this.emit('update', snap);
  }
  stop(): void {}
}
