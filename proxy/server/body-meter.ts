// A pass-through for a request body on its way upstream: counts bytes and notices a client that
// stops sending. Chunks are passed by reference (no copy) and backpressure is the stream's own:
// at most ~2 × highWaterMark bytes sit here, however slow the upstream.
import { Transform, type TransformCallback } from 'node:stream';

export class BodyMeter extends Transform {
  bytes = 0;
  private timer: NodeJS.Timeout | undefined;

  /**
   * `onIdle` fires when no chunk arrived for `idleMs` while the consumer was waiting for one. If
   * data is still buffered here the upstream is the slow side, and the clock is restarted instead.
   */
  constructor(
    private readonly idleMs: number,
    private readonly onIdle: () => void,
  ) {
    super();
    this.arm();
  }

  private arm(): void {
    if (this.idleMs <= 0) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      if (this.destroyed || this.writableFinished) return;
      if (this.readableLength > 0 || this.writableLength > 0) this.arm();
      else this.onIdle();
    }, this.idleMs);
    this.timer.unref();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    this.arm();
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    clearTimeout(this.timer);
    cb();
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    clearTimeout(this.timer);
    cb(err);
  }
}
