// The folder layering of the README ("Architecture"): every import between top-level folders
// points down. Read from the TypeScript sources themselves (static imports, `import()` and
// `require()` of relative paths), so a new arrow that points up, or a cycle between folders,
// fails `npm test` with the file and the line that made it.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ts from 'typescript';
import { findUp } from './fixture-dir';

/**
 * Which folders each folder may import, lowest layer first. This is the table of the README's
 * architecture section; keep the two together.
 */
export const LAYERS: ReadonlyArray<readonly [string, readonly string[]]> = [
  ['core', []],
  ['native', ['core']],
  ['abi', ['core', 'native']],
  ['config', ['core']],
  ['xds', ['core', 'config']],
  ['proxy', ['core', 'abi']],
  ['mesh-agent', ['core', 'native', 'abi', 'config', 'xds', 'proxy']],
  ['cli', ['core', 'native', 'abi', 'config', 'xds', 'proxy', 'mesh-agent']],
  // Tools around the product: the sandbox (network namespaces, pods) knows nothing of sockmesh.
  ['sandbox', []],
  ['bench', ['core', 'native', 'abi', 'config', 'xds', 'proxy', 'mesh-agent', 'cli', 'sandbox']],
  ['demo', ['core', 'native', 'abi', 'config', 'xds', 'proxy', 'mesh-agent', 'cli', 'sandbox']],
  ['test', ['core', 'native', 'abi', 'config', 'xds', 'proxy', 'mesh-agent', 'cli', 'sandbox', 'bench', 'demo']],
];

interface Edge {
  from: string; // file, relative to the repository
  line: number;
  to: string; // resolved target, relative to the repository
}

function repoRoot(): string {
  const pkg = findUp('tsconfig.json');
  assert.ok(pkg, 'tsconfig.json not found above the test');
  return path.dirname(pkg);
}

function sources(root: string): string[] {
  const out: string[] = [];
  const walk = (rel: string): void => {
    for (const e of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        if (!['node_modules', 'dist', 'build', '.git'].includes(e.name) && !e.name.startsWith('.')) walk(r);
      } else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(r);
    }
  };
  walk('');
  return out;
}

/** Every relative import of every source file, resolved to a path in the repository. */
function edges(root: string, files: string[]): Edge[] {
  const out: Edge[] = [];
  for (const f of files) {
    const text = fs.readFileSync(path.join(root, f), 'utf8');
    const info = ts.preProcessFile(text, true, true);
    for (const imp of info.importedFiles) {
      if (!imp.fileName.startsWith('.')) continue;
      const to = path.posix.normalize(path.posix.join(path.posix.dirname(f), imp.fileName));
      const line = text.slice(0, imp.pos).split('\n').length;
      out.push({ from: f, line, to });
    }
  }
  return out;
}

const top = (p: string): string => p.split('/')[0];

function findCycle(graph: Map<string, Set<string>>): string[] | undefined {
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (n: string): string[] | undefined => {
    state.set(n, 'open');
    stack.push(n);
    for (const m of graph.get(n) ?? []) {
      if (state.get(m) === 'open') return [...stack.slice(stack.indexOf(m)), m];
      if (!state.has(m)) {
        const c = visit(m);
        if (c) return c;
      }
    }
    stack.pop();
    state.set(n, 'done');
    return undefined;
  };
  for (const n of graph.keys()) {
    if (!state.has(n)) {
      const c = visit(n);
      if (c) return c;
    }
  }
  return undefined;
}

test('every top-level folder with TypeScript has a place in the layering', () => {
  const root = repoRoot();
  const known = new Set(LAYERS.map(([n]) => n));
  const folders = new Set(sources(root).filter((f) => f.includes('/')).map(top));
  const unplaced = [...folders].filter((d) => !known.has(d));
  assert.deepEqual(unplaced, [], `folders missing from LAYERS in test/layering.test.ts (and the README): ${unplaced.join(', ')}`);
  assert.deepEqual(sources(root).filter((f) => !f.includes('/')), [], 'TypeScript at the top level belongs in a folder');
});

test('imports between top-level folders only point down the layering, and there is no cycle', () => {
  const root = repoRoot();
  const allowed = new Map(LAYERS.map(([n, deps]) => [n, new Set(deps)]));
  const all = edges(root, sources(root));
  assert.ok(all.length > 300, `only ${all.length} imports found: is the reader broken?`);
  const graph = new Map<string, Set<string>>();
  const bad: string[] = [];
  for (const e of all) {
    const a = top(e.from);
    const b = top(e.to);
    if (a === b) continue;
    if (!graph.has(a)) graph.set(a, new Set());
    graph.get(a)!.add(b);
    if (!allowed.get(a)?.has(b)) bad.push(`${e.from}:${e.line} imports ${e.to} (${a}/ may import only ${[...(allowed.get(a) ?? [])].join(', ') || 'nothing'})`);
  }
  const cycle = findCycle(graph);
  assert.equal(cycle, undefined, `import cycle between folders: ${cycle?.join(' -> ')}`);
  assert.deepEqual(bad, []);
});

test('the layering table itself has no cycle and names only known folders', () => {
  const names = new Set(LAYERS.map(([n]) => n));
  const graph = new Map(LAYERS.map(([n, deps]) => [n, new Set(deps)]));
  for (const [n, deps] of LAYERS) for (const d of deps) assert.ok(names.has(d), `${n} may import unknown ${d}`);
  assert.equal(findCycle(graph), undefined);
  // Lowest first: a folder only names folders listed before it.
  LAYERS.forEach(([n, deps], i) => {
    for (const d of deps) assert.ok(LAYERS.findIndex(([m]) => m === d) < i, `${n} (row ${i}) names ${d}, listed after it`);
  });
});

test('the check sees an upward import and a cycle (it is not vacuous)', () => {
  const graph = new Map([
    ['core', new Set(['xds'])],
    ['xds', new Set(['core'])],
  ]);
  assert.deepEqual(findCycle(graph), ['core', 'xds', 'core']);
  const e = edges(repoRoot(), ['test/layering.test.ts']);
  assert.ok(e.some((x) => x.to === 'test/fixture-dir'), 'own import of ./fixture-dir not seen');
  const dyn = edges(repoRoot(), ['cli/main.ts']);
  assert.ok(dyn.some((x) => top(x.to) === 'proxy'), "cli/main.ts's import() of the proxy not seen");
});

test("the README's folder table names every top-level folder, and says what each may import as LAYERS does", () => {
  const root = repoRoot();
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
  const start = readme.indexOf('| directory | may import | what |');
  assert.ok(start >= 0, 'README: the folder table (| directory | may import | what |) is missing');
  const rows = readme.slice(start).split('\n').slice(2);
  const table = new Map<string, string>();
  for (const row of rows) {
    if (!row.startsWith('|')) break;
    const [dirs, imports] = row.split('|').slice(1, 3);
    for (const d of dirs.matchAll(/`([^`/]+)\/`/g)) table.set(d[1], imports.trim());
  }
  const folders = fs
    .readdirSync(root, { withFileTypes: true })
    .filter((e) => e.isDirectory() && !e.name.startsWith('.') && !['node_modules', 'dist', 'build'].includes(e.name))
    .map((e) => e.name);
  for (const f of folders) assert.ok(table.has(f), `README folder table has no row for ${f}/`);
  for (const d of table.keys()) assert.ok(folders.includes(d), `README folder table names ${d}/, which does not exist`);
  // The "may import" column says what LAYERS says (spelled out, or "all of the above" / "nothing").
  const order = LAYERS.map(([n]) => n);
  for (const [name, deps] of LAYERS) {
    const said = table.get(name);
    if (said === undefined || ['test', 'bench', 'demo'].includes(name)) continue;
    if (said === 'nothing') assert.deepEqual(deps, [], `${name}/`);
    else if (said === 'all of the above') {
      const above = order.slice(0, order.indexOf(name)).filter((n) => n !== 'sandbox');
      assert.deepEqual([...deps].sort(), above.sort(), `${name}/: "all of the above"`);
    } else assert.deepEqual([...said.matchAll(/`([^`]+)`/g)].map((m) => m[1]).sort(), [...deps].sort(), `${name}/`);
  }
});
