// Where the tests' fixture folders are: found by walking up from the compiled test (dist/test/),
// from the cwd, or from where node_modules is (an out-of-tree build run with NODE_PATH).
import * as fs from 'node:fs';
import * as path from 'node:path';

/** The first `<ancestor>/<rel>` that exists, or undefined. */
export function findUp(rel: string): string | undefined {
  const starts = [__dirname, process.cwd()];
  try {
    starts.push(path.dirname(require.resolve('yaml/package.json')));
  } catch {
    /* not resolvable: the other starts */
  }
  for (const start of starts) {
    for (let d = start; ; d = path.dirname(d)) {
      const cand = path.join(d, rel);
      if (fs.existsSync(cand)) return cand;
      if (path.dirname(d) === d) break;
    }
  }
  return undefined;
}

/** findUp(rel), else `fallback` if it exists; throws naming rel otherwise. */
export function findDir(rel: string, fallback?: string): string {
  const d = findUp(rel);
  if (d) return d;
  if (fallback && fs.existsSync(fallback)) return fallback;
  throw new Error(`fixtures not found: ${rel}`);
}

/** test/fixtures/<name> of this repository. */
export function fixtureDir(name: string): string {
  return findDir(path.join('test', 'fixtures', name));
}

/** A file or folder of test/fixtures/istio: real Istio output, stored once (see its SOURCES.md). */
export function istioFixture(...parts: string[]): string {
  return path.join(fixtureDir('istio'), ...parts);
}
