// One factor for the fixed waits of the kernel tests, the sandbox and podtool: how much slower than
// the host this run is. scripts/kernel-test.sh sets SOCKMESH_TIME_SCALE=10 when it runs the tests in a
// software-emulated VM (qemu TCG runs ~10x slower); on the host it is 1. A wait that is too short
// under emulation is fixed by this factor, never by editing its number.

function parseScale(v: string | undefined): number {
  if (v === undefined || v === '') return 1;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 1 || n > 100) throw new Error(`SOCKMESH_TIME_SCALE=${JSON.stringify(v)}: expected a number from 1 to 100`);
  return n;
}

export const TIME_SCALE = parseScale(process.env.SOCKMESH_TIME_SCALE);

/** `ms` on the host, scaled for this run. */
export function scaled(ms: number): number {
  return Math.round(ms * TIME_SCALE);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Polls `cond` every `stepMs` until it holds or `ms` (scaled) have passed; true if it held.
 * The step is not scaled: a faster machine only answers sooner.
 */
export async function waitUntil(cond: () => boolean | Promise<boolean>, ms: number, stepMs = 25): Promise<boolean> {
  const deadline = Date.now() + scaled(ms);
  for (;;) {
    if (await cond()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(stepMs);
  }
}
