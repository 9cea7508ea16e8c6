// The Kubernetes manifests in manifests/, checked without a cluster (there is none on the
// development machine or on CI):
//  - every YAML document parses (multi-document aware, duplicate keys and warnings are errors) and
//    validates against the Kubernetes schemas with kubernetes-models' own classes
//    (`new DaemonSet(obj).validate()`), PrometheusRule with @kubernetes-models/prometheus-operator;
//    an unknown apiVersion/kind fails;
//  - unknown fields fail too: kubernetes-models' validators accept any extra property (a typo such
//    as `mountPropogation` would pass them), so every object is also type-checked, in memory, as
//    an object literal of the package's TypeScript interface (excess-property check);
//  - the checks above really fail on a broken copy (required field removed, typo, unknown kind);
//  - kustomization.yaml lists exactly the manifest files, and `kubectl kustomize` renders them
//    (when kubectl is installed);
//  - the ClusterRole is read-only (get/list/watch on the four resources, nothing else);
//  - the DaemonSet: privileged agent, hostNetwork, bpffs + cgroup2 mounts, every probe and
//    admin/metrics endpoint on 127.0.0.1, arguments consistent ($(VAR)s defined, flags known to
//    the `sockmesh` CLI, agent and proxy agreeing on bpffs, control socket and proxy address);
//  - the PrometheusRule uses only known metric names.
//
// kubernetes-models (v4) and @kubernetes-models/prometheus-operator (v6, ESM only) are loaded as
// ES modules with a real dynamic import(): TypeScript compiling to CommonJS would turn a literal
// `import()` into require(), so the import goes through `new Function`.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import * as ts from 'typescript';
import * as YAML from 'yaml';
import { createProxyMetrics } from '../proxy/server/metrics';
import { findUp } from './fixture-dir';

// ---------------------------------------------------------------------------------------------
// Locating the repository (in-tree dist/test, or an out-of-tree build run with NODE_PATH)

const MANIFESTS = findUp('manifests/kustomization.yaml') ? path.dirname(findUp('manifests/kustomization.yaml')!) : '';
const ROOT = path.dirname(MANIFESTS);

// ---------------------------------------------------------------------------------------------
// ESM loading

const esmImport = new Function('specifier', 'return import(specifier)') as (specifier: string) => Promise<Record<string, unknown>>;

/**
 * Import `pkg/subpath` as an ES module, through the package's "exports" ("import" condition), by
 * file URL: a bare specifier would be resolved relative to this compiled file, which for an
 * out-of-tree build is not under the repository's node_modules.
 */
async function importEsm(pkg: string, subpath: string): Promise<Record<string, unknown>> {
  const dir = findUp(path.join('node_modules', pkg, 'package.json'));
  assert.ok(dir, `package ${pkg} is not installed (npm ci)`);
  const pj = JSON.parse(fs.readFileSync(dir, 'utf8')) as { exports?: Record<string, unknown> };
  const entry = pj.exports?.[`./${subpath}`] as { import?: string } | string | undefined;
  const rel = typeof entry === 'string' ? entry : entry?.import;
  assert.ok(rel, `${pkg} has no ES module export for ./${subpath}`);
  return esmImport(pathToFileURL(path.join(path.dirname(dir), rel)).href);
}

interface Model {
  validate(): void;
}
type ModelClass = new (data: unknown) => Model;

interface Kind {
  /** The package and "exports" subpath holding the class (and, as `${subpath}/${kind}`, its types). */
  pkg: string;
  subpath: string;
}

/** apiVersion → where its kinds live. Anything else is an unknown kind: the test fails. */
function kindSource(apiVersion: string): Kind | undefined {
  if (apiVersion === 'monitoring.coreos.com/v1') return { pkg: '@kubernetes-models/prometheus-operator', subpath: 'monitoring.coreos.com/v1' };
  if (apiVersion === 'v1') return { pkg: 'kubernetes-models', subpath: 'v1' };
  const m = /^([a-z0-9.-]+)\/(v[0-9a-z]+)$/.exec(apiVersion);
  // kubernetes-models covers the built-in API groups (apps, rbac.authorization.k8s.io, ...).
  if (m && (m[1].includes('.k8s.io') || ['apps', 'batch', 'policy', 'autoscaling'].includes(m[1]))) {
    return { pkg: 'kubernetes-models', subpath: `${m[1]}/${m[2]}` };
  }
  return undefined;
}

const moduleCache = new Map<string, Promise<Record<string, unknown>>>();
async function modelClass(apiVersion: string, kind: string): Promise<ModelClass | undefined> {
  const src = kindSource(apiVersion);
  if (!src) return undefined;
  const key = `${src.pkg}/${src.subpath}`;
  if (!moduleCache.has(key)) moduleCache.set(key, importEsm(src.pkg, src.subpath).catch(() => ({})));
  const mod = await moduleCache.get(key)!;
  const cls = mod[kind] as (ModelClass & { kind?: string; apiVersion?: string }) | undefined;
  // Only a model class of exactly this apiVersion/kind (the index also exports Spec/Status types).
  return typeof cls === 'function' && cls.kind === kind && cls.apiVersion === apiVersion ? cls : undefined;
}

// ---------------------------------------------------------------------------------------------
// Reading the manifests

interface Doc {
  file: string;
  /** Index of the document in its file (documents that are only comments are skipped). */
  index: number;
  obj: Record<string, any>;
}

const where = (d: Doc) => `${d.file}#${d.index}${d.obj?.kind ? ` (${d.obj.kind} ${d.obj.metadata?.name ?? ''})` : ''}`;

function yamlFiles(dir: string): string[] {
  return fs
    .readdirSync(dir)
    .filter((f) => /\.ya?ml$/.test(f))
    .sort();
}

/** Every document of every YAML file in `dir`. Parse errors and warnings throw. */
function loadDir(dir: string): Doc[] {
  const out: Doc[] = [];
  for (const file of yamlFiles(dir)) {
    const docs = YAML.parseAllDocuments(fs.readFileSync(path.join(dir, file), 'utf8'));
    if (!Array.isArray(docs)) throw new Error(`${file}: not a YAML stream`);
    docs.forEach((doc, index) => {
      const problems = [...doc.errors, ...doc.warnings];
      if (problems.length) throw new Error(`${file}#${index}: ${problems.map((e) => e.message).join('; ')}`);
      const obj = doc.toJS({ maxAliasCount: 0 }) as unknown;
      if (obj === null || obj === undefined) return; // a comment-only document
      if (typeof obj !== 'object' || Array.isArray(obj)) throw new Error(`${file}#${index}: not a mapping`);
      out.push({ file, index, obj: obj as Record<string, any> });
    });
  }
  return out;
}

const isKustomization = (d: Doc) => d.obj.kind === 'Kustomization' && String(d.obj.apiVersion).startsWith('kustomize.config.k8s.io/');

/**
 * Validate every Kubernetes object in `docs` with its kubernetes-models class. Throws one error
 * listing every problem (unknown kinds included).
 */
async function validateDocs(docs: Doc[]): Promise<number> {
  const problems: string[] = [];
  let validated = 0;
  for (const d of docs) {
    if (isKustomization(d)) continue; // not an API object; checked on its own below
    const { apiVersion, kind } = d.obj;
    if (typeof apiVersion !== 'string' || typeof kind !== 'string') {
      problems.push(`${where(d)}: no apiVersion/kind`);
      continue;
    }
    const Cls = await modelClass(apiVersion, kind);
    if (!Cls) {
      problems.push(`${where(d)}: unknown kind ${apiVersion}/${kind} (no kubernetes-models class for it)`);
      continue;
    }
    try {
      new Cls(structuredClone(d.obj)).validate();
      validated++;
    } catch (e) {
      problems.push(`${where(d)}: ${(e as Error).message}`);
    }
  }
  if (problems.length) throw new Error(`invalid manifests:\n  ${problems.join('\n  ')}`);
  return validated;
}

/**
 * The excess-property check: each object becomes `const x: IKind = <object literal>;` in a virtual
 * TypeScript file type-checked against the packages' declarations. Returns the diagnostics, each
 * prefixed with the document it is about.
 */
function typeCheckDocs(docs: Doc[]): string[] {
  const virtual = path.join(MANIFESTS, '__sockmesh_manifest_typecheck__.ts');
  const problems: string[] = [];
  let text = '';
  /** The document each object starts at, by line of the virtual file. */
  const owners: Array<{ line: number; doc: Doc }> = [];
  docs.forEach((d, i) => {
    if (isKustomization(d)) return;
    const src = kindSource(String(d.obj.apiVersion));
    const kind = String(d.obj.kind);
    if (!src || !/^[A-Z][A-Za-z0-9]*$/.test(kind)) {
      problems.push(`${where(d)}: unknown kind ${d.obj.apiVersion}/${d.obj.kind}`);
      return;
    }
    owners.push({ line: text.split('\n').length - 1, doc: d });
    text += `import type { I${kind} as T${i} } from ${JSON.stringify(`${src.pkg}/${src.subpath}/${kind}`)};\n`;
    text += `export const o${i}: T${i} = ${JSON.stringify(d.obj, null, 1)};\n`;
  });
  const options: ts.CompilerOptions = {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.ESNext,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    types: [],
    lib: ['lib.es2022.d.ts'],
  };
  const host = ts.createCompilerHost(options);
  const isVirtual = (name: string) => path.resolve(name) === virtual;
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (name, lang, onError, create) => (isVirtual(name) ? ts.createSourceFile(name, text, lang) : getSourceFile(name, lang, onError, create));
  const fileExists = host.fileExists.bind(host);
  host.fileExists = (name) => isVirtual(name) || fileExists(name);
  const readFile = host.readFile.bind(host);
  host.readFile = (name) => (isVirtual(name) ? text : readFile(name));
  const program = ts.createProgram([virtual], options, host);
  const sf = program.getSourceFile(virtual)!;
  for (const dg of [...program.getSyntacticDiagnostics(sf), ...program.getSemanticDiagnostics(sf)]) {
    const line = dg.start === undefined ? 0 : sf.getLineAndCharacterOfPosition(dg.start).line;
    const owner = [...owners].reverse().find((o) => o.line <= line);
    problems.push(`${owner ? where(owner.doc) : '?'}: ${ts.flattenDiagnosticMessageText(dg.messageText, '\n')}`);
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// Helpers over the objects

function only(docs: Doc[], kind: string): Doc[] {
  return docs.filter((d) => d.obj.kind === kind);
}
function one(docs: Doc[], kind: string): Record<string, any> {
  const found = only(docs, kind);
  assert.equal(found.length, 1, `expected exactly one ${kind}, found ${found.length}`);
  return found[0].obj;
}

/** `--flag=value` / `--flag value` / `--flag` → flag → values (in order). */
function parseFlags(args: string[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (!a.startsWith('--')) continue;
    const eq = a.indexOf('=');
    let name: string;
    let value: string;
    if (eq >= 0) {
      name = a.slice(2, eq);
      value = a.slice(eq + 1);
    } else {
      name = a.slice(2);
      value = i + 1 < args.length && !args[i + 1].startsWith('--') ? args[++i] : '';
    }
    out.set(name, [...(out.get(name) ?? []), value]);
  }
  return out;
}

/** Sample values for the downward API, to expand $(VAR)s as the kubelet would. */
const FIELD_SAMPLES: Record<string, string> = {
  'spec.nodeName': 'node-a',
  'status.hostIP': '192.0.2.10',
  'status.podIP': '192.0.2.10',
  'metadata.name': 'sockmesh-agent-xyz',
  'metadata.namespace': 'sockmesh-system',
};

/**
 * The container's environment as the kubelet builds it (ConfigMap keys looked up in `configMaps`),
 * and its command+args with $(VAR) expanded. Undefined variables and missing keys are reported.
 */
function expandContainer(c: Record<string, any>, configMaps: Map<string, Record<string, string>>): { argv: string[]; problems: string[] } {
  const env = new Map<string, string>();
  const problems: string[] = [];
  for (const e of c.env ?? []) {
    if (typeof e.value === 'string') env.set(e.name, e.value);
    else if (e.valueFrom?.fieldRef) {
      const v = FIELD_SAMPLES[e.valueFrom.fieldRef.fieldPath];
      if (v === undefined) problems.push(`${c.name}: env ${e.name}: no sample for fieldRef ${e.valueFrom.fieldRef.fieldPath}`);
      env.set(e.name, v ?? '');
    } else if (e.valueFrom?.configMapKeyRef) {
      const { name, key } = e.valueFrom.configMapKeyRef;
      const data = configMaps.get(name);
      if (!data) problems.push(`${c.name}: env ${e.name}: ConfigMap ${name} is not among the manifests`);
      else if (!(key in data)) problems.push(`${c.name}: env ${e.name}: ConfigMap ${name} has no key ${key}`);
      env.set(e.name, data?.[key] ?? '');
    } else problems.push(`${c.name}: env ${e.name}: unsupported source`);
  }
  const argv = [...(c.command ?? []), ...(c.args ?? [])].map((a: string) =>
    a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, v: string) => {
      if (!env.has(v)) {
        problems.push(`${c.name}: ${JSON.stringify(a)} uses $(${v}), which is not in its env (the kubelet would pass it literally)`);
        return m;
      }
      return env.get(v)!;
    }),
  );
  return { argv, problems };
}

/** host:port → { host, port }; [v6]:port too. */
function hostPort(s: string): { host: string; port: number } | undefined {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(s);
  return m ? { host: m[1], port: Number(m[2]) } : undefined;
}

// ---------------------------------------------------------------------------------------------
// PromQL: the metric names an expression selects

const PROMQL_KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'inf', 'nan', 'atan2', 'start', 'end']);

export function promqlMetricNames(expr: string): string[] {
  let s = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""');
  s = s.replace(/\{[^}]*\}/g, ' '); // label matchers
  s = s.replace(/\[[^\]]*\]/g, ' '); // range / subquery selectors
  s = s.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' '); // label lists
  const names = new Set<string>();
  for (const m of s.matchAll(/(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const name = m[0];
    if (PROMQL_KEYWORDS.has(name)) continue;
    if (s.slice(m.index! + name.length).trimStart().startsWith('(')) continue; // a function / aggregation
    names.add(name);
  }
  return [...names];
}

/**
 * The sockmesh metric names that exist. Proxy: from the proxy's own metric definitions. Agent:
 * mesh-agent/metrics.ts METRIC_NAMES, loaded at run time (compiled beside this test) so that this
 * file does not depend on it at compile time. TODO(issue 5): the fallback list below is used only
 * while mesh-agent/metrics.ts does not exist in the checkout; once it does, its compiled
 * METRIC_NAMES is required. Remove the fallback when metrics.ts has landed.
 */
const AGENT_METRIC_NAMES_PENDING = [
  'sockmesh_map_usage_ratio',
  'sockmesh_attach_failures_total',
  'sockmesh_xds_connected',
  'sockmesh_xds_nacks_total',
  'sockmesh_policy_drops_total',
];
async function knownMetricNames(): Promise<{ names: Set<string>; agentSource: string }> {
  const proxy = (await createProxyMetrics().registry.getMetricsAsJSON()).map((m) => m.name);
  // Beside this test (tsc -p), else in the checkout's dist/ (this test compiled alone).
  const candidates = [path.resolve(__dirname, '../mesh-agent/metrics.js'), path.join(ROOT, 'dist/mesh-agent/metrics.js')];
  const compiled = candidates.find((p) => fs.existsSync(p));
  let agent = AGENT_METRIC_NAMES_PENDING;
  let agentSource = 'the pending list in test/manifests.test.ts (mesh-agent/metrics.ts does not exist yet)';
  if (fs.existsSync(path.join(ROOT, 'mesh-agent/metrics.ts')) && !compiled) {
    assert.fail(`mesh-agent/metrics.ts exists but is not compiled (${candidates.join(', ')}): run tsc -p tsconfig.json`);
  }
  if (compiled) {
    const mod = require(compiled) as { METRIC_NAMES?: readonly string[] | Record<string, string> };
    assert.ok(mod.METRIC_NAMES, 'mesh-agent/metrics.ts exists but exports no METRIC_NAMES');
    agent = Array.isArray(mod.METRIC_NAMES) ? [...mod.METRIC_NAMES] : Object.values(mod.METRIC_NAMES as Record<string, string>);
    agentSource = 'mesh-agent/metrics.ts METRIC_NAMES';
  }
  return { names: new Set([...proxy, ...agent, 'up']), agentSource };
}

// ---------------------------------------------------------------------------------------------
// The tests

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sockmesh-manifests-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A copy of manifests/ in a fresh temp dir, with `edit` applied to file `file`'s text. */
function brokenCopy(name: string, file: string, edit: (text: string) => string): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  for (const f of yamlFiles(MANIFESTS)) fs.copyFileSync(path.join(MANIFESTS, f), path.join(dir, f));
  const before = fs.readFileSync(path.join(dir, file), 'utf8');
  const afterEdit = edit(before);
  // The edit must change data, not only a comment (else the test's pattern is stale).
  const data = (t: string) => JSON.stringify(YAML.parseAllDocuments(t, { uniqueKeys: false }).map((d) => d.toJS()));
  assert.notEqual(data(afterEdit), data(before), `the edit of ${file} changed no data (the test's pattern is stale)`);
  fs.writeFileSync(path.join(dir, file), afterEdit);
  return dir;
}

describe('manifests', () => {
  assert.ok(MANIFESTS, 'manifests/kustomization.yaml not found from the test or the working directory');
  const docs = loadDir(MANIFESTS);
  const configMaps = new Map<string, Record<string, string>>(only(docs, 'ConfigMap').map((d) => [d.obj.metadata.name, d.obj.data ?? {}]));

  test('every document validates against the Kubernetes schemas (kubernetes-models, prometheus-operator)', async () => {
    const n = await validateDocs(docs);
    const kinds = docs.filter((d) => !isKustomization(d)).map((d) => d.obj.kind).sort();
    assert.deepEqual(kinds, ['ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'DaemonSet', 'Namespace', 'PrometheusRule', 'ServiceAccount']);
    assert.equal(n, kinds.length);
  });

  test('no unknown field anywhere (TypeScript excess-property check against the same packages\' types)', () => {
    assert.deepEqual(typeCheckDocs(docs), []);
  });

  test('a broken manifest fails: required field removed, wrong type, typo in a field name, unknown kind', async () => {
    // DaemonSet without spec.selector (required).
    const noSelector = brokenCopy('no-selector', 'daemonset.yaml', (t) =>
      t.replace(/\n  selector:\n    matchLabels:\n(      .*\n)+?(?=  updateStrategy:)/, '\n'),
    );
    await assert.rejects(validateDocs(loadDir(noSelector)), /daemonset\.yaml#0 \(DaemonSet sockmesh-agent\): .*selector/);

    // A container without a name (required).
    const noName = brokenCopy('no-name', 'daemonset.yaml', (t) => t.replace('        - name: proxy\n          image:', '        - image:'));
    await assert.rejects(validateDocs(loadDir(noName)), /containers\/1 must have required property name/);

    // A ClusterRole rule without verbs (required).
    const noVerbs = brokenCopy('no-verbs', 'clusterrole.yaml', (t) => t.replace('    verbs: ["get", "list", "watch"]\n  - apiGroups: ["discovery', '  - apiGroups: ["discovery'));
    await assert.rejects(validateDocs(loadDir(noVerbs)), /rules\/0 must have required property verbs/);

    // A wrong type.
    const badType = brokenCopy('bad-type', 'daemonset.yaml', (t) => t.replace('hostNetwork: true', 'hostNetwork: "yes"'));
    await assert.rejects(validateDocs(loadDir(badType)), /hostNetwork must be boolean/);

    // A PrometheusRule rule without expr (required by the CRD schema).
    const noExpr = brokenCopy('no-expr', 'prometheusrule.yaml', (t) => t.replace('          expr: increase(sockmesh_xds_nacks_total[10m]) > 0\n', ''));
    await assert.rejects(validateDocs(loadDir(noExpr)), /PrometheusRule sockmesh.*expr/);

    // A typo in a field name: passes the schema validators (they allow extra properties), caught
    // by the excess-property check.
    const typo = brokenCopy('typo', 'daemonset.yaml', (t) => t.replace(/^( +)mountPropagation: Bidirectional$/m, '$1mountPropogation: Bidirectional'));
    await validateDocs(loadDir(typo)); // documents the gap the type check closes
    const diags = typeCheckDocs(loadDir(typo));
    assert.equal(diags.length, 1, diags.join('\n'));
    assert.match(diags[0], /daemonset\.yaml#0 \(DaemonSet sockmesh-agent\): .*'"?mountPropogation"?' does not exist in type 'IVolumeMount'/);

    // An unknown kind.
    const unknownKind = brokenCopy('unknown-kind', 'namespace.yaml', (t) => t + '---\napiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n');
    await assert.rejects(validateDocs(loadDir(unknownKind)), /namespace\.yaml#1 \(Widget w\): unknown kind example\.com\/v1\/Widget/);
    assert.match(typeCheckDocs(loadDir(unknownKind)).join('\n'), /unknown kind example\.com\/v1\/Widget/);

    // A YAML error (duplicate key) is an error, not a silently merged mapping.
    const dup = brokenCopy('dup', 'serviceaccount.yaml', (t) => t.replace('automountServiceAccountToken: false', 'automountServiceAccountToken: false\nautomountServiceAccountToken: true'));
    assert.throws(() => loadDir(dup), /serviceaccount\.yaml#0: .*[Uu]nique|duplicate/i);
  });

  test('kustomization.yaml lists every manifest, and only existing ones', () => {
    const k = docs.filter(isKustomization);
    assert.equal(k.length, 1, 'one Kustomization');
    assert.equal(k[0].file, 'kustomization.yaml');
    const kust = k[0].obj;
    assert.equal(kust.namespace, 'sockmesh-system');
    const resources: string[] = kust.resources;
    assert.equal(new Set(resources).size, resources.length, 'no resource listed twice');
    const files = yamlFiles(MANIFESTS).filter((f) => f !== 'kustomization.yaml');
    assert.deepEqual([...resources].sort(), files, 'resources: must be exactly the YAML files of manifests/');
    assert.equal(resources[0], 'namespace.yaml', 'the Namespace comes first');
    // app.kubernetes.io/name: sockmesh on everything, never injected into (immutable) selectors.
    const pairs = (kust.labels ?? []).find((l: any) => l.pairs?.['app.kubernetes.io/name'] === 'sockmesh');
    const common = kust.commonLabels?.['app.kubernetes.io/name'] === 'sockmesh';
    assert.ok(pairs || common, 'labels (or commonLabels) set app.kubernetes.io/name: sockmesh');
    if (pairs) assert.equal(pairs.includeSelectors ?? false, false);
    for (const d of docs.filter((x) => !isKustomization(x))) {
      assert.equal(d.obj.metadata?.labels?.['app.kubernetes.io/name'], 'sockmesh', `${where(d)} carries app.kubernetes.io/name itself`);
      const namespaced = !['Namespace', 'ClusterRole', 'ClusterRoleBinding'].includes(d.obj.kind);
      if (namespaced) assert.equal(d.obj.metadata.namespace, 'sockmesh-system', `${where(d)} namespace`);
    }
  });

  const kubectl = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' });
  test('kubectl kustomize renders the kustomization, and the result validates', { skip: kubectl.status === 0 ? false : 'kubectl is not installed' }, async () => {
    const r = spawnSync('kubectl', ['kustomize', MANIFESTS], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const dir = path.join(tmp, 'rendered');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'all.yaml'), r.stdout);
    const rendered = loadDir(dir);
    assert.equal(rendered.length, docs.length - 1, 'every object rendered once');
    await validateDocs(rendered);
    assert.deepEqual(typeCheckDocs(rendered), []);
    for (const d of rendered) assert.equal(d.obj.metadata.labels['app.kubernetes.io/part-of'], 'sockmesh', where(d));
    const ds = one(rendered, 'DaemonSet');
    assert.equal(ds.spec.template.metadata.labels['app.kubernetes.io/part-of'], 'sockmesh', 'labels reach the pod template');
    assert.equal(ds.spec.selector.matchLabels['app.kubernetes.io/part-of'], undefined, 'but not the selector');
  });

  test('ClusterRole: read-only get/list/watch on pods, namespaces, services, endpointslices; no secrets', () => {
    const roles = only(docs, 'ClusterRole').concat(only(docs, 'Role'));
    assert.equal(roles.length, 1);
    const role = roles[0].obj;
    assert.equal(role.aggregationRule, undefined, 'no aggregation (it could pull in other rules)');
    const granted = new Set<string>();
    for (const rule of role.rules) {
      assert.equal(rule.nonResourceURLs, undefined, 'no nonResourceURLs');
      assert.equal(rule.resourceNames, undefined);
      for (const v of rule.verbs) assert.ok(['get', 'list', 'watch'].includes(v), `verb ${v} is not read-only`);
      for (const g of rule.apiGroups) {
        assert.notEqual(g, '*');
        for (const r of rule.resources) {
          assert.notEqual(r, '*');
          assert.ok(!r.includes('/'), `no subresource (${r})`);
          assert.notEqual(r, 'secrets', 'no secrets');
          for (const v of rule.verbs) granted.add(`${g || 'core'}/${r}:${v}`);
        }
      }
    }
    const expected = ['core/pods', 'core/namespaces', 'core/services', 'discovery.k8s.io/endpointslices'].flatMap((r) =>
      ['get', 'list', 'watch'].map((v) => `${r}:${v}`),
    );
    assert.deepEqual([...granted].sort(), expected.sort());

    const sa = one(docs, 'ServiceAccount');
    const binding = one(docs, 'ClusterRoleBinding');
    assert.deepEqual(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role.metadata.name });
    assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: sa.metadata.name, namespace: sa.metadata.namespace }]);
    const ds = one(docs, 'DaemonSet');
    assert.equal(ds.spec.template.spec.serviceAccountName, sa.metadata.name);
  });

  describe('DaemonSet', () => {
    const ds = one(docs, 'DaemonSet');
    const pod = ds.spec.template.spec;
    const container = (name: string) => {
      const c = pod.containers.find((x: any) => x.name === name);
      assert.ok(c, `container ${name}`);
      return c;
    };
    const volume = (name: string) => {
      const v = pod.volumes.find((x: any) => x.name === name);
      assert.ok(v, `volume ${name}`);
      return v;
    };
    const mountOf = (c: any, volumeName: string) => (c.volumeMounts ?? []).find((m: any) => m.name === volumeName);
    const expanded = (name: string) => expandContainer(container(name), configMaps);

    test('two containers from one image: agent and proxy', () => {
      assert.deepEqual(
        pod.containers.map((c: any) => c.name),
        ['agent', 'proxy'],
      );
      assert.deepEqual(
        new Set(pod.containers.map((c: any) => c.image)),
        new Set(['ghcr.io/sockmesh/sockmesh:0.1.0']),
      );
      assert.deepEqual(expanded('agent').argv.slice(0, 2), ['sockmesh', 'agent']);
      assert.deepEqual(expanded('proxy').argv.slice(0, 2), ['sockmesh', 'proxy']);
    });

    test('host network, host PID (to find pod network namespaces), cluster DNS, node-critical, every taint tolerated, one node at a time', () => {
      assert.equal(pod.hostNetwork, true);
      assert.equal(pod.hostPID, true, 'the agent reads /proc/<pid>/ns/net of pod processes: same-node pairing needs it');
      assert.notEqual(pod.hostIPC, true);
      assert.equal(pod.dnsPolicy, 'ClusterFirstWithHostNet');
      assert.equal(pod.priorityClassName, 'system-node-critical');
      assert.ok(
        pod.tolerations.some((t: any) => t.operator === 'Exists' && !t.key && !t.effect),
        'a toleration with operator Exists and no key/effect tolerates every taint',
      );
      assert.equal(typeof pod.terminationGracePeriodSeconds, 'number');
      assert.deepEqual(ds.spec.updateStrategy, { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1, maxSurge: 0 } });
      assert.equal(pod.automountServiceAccountToken, false, 'the API token is projected into the agent only');
    });

    test('agent privileged; proxy not, with only CAP_BPF; both with resources', () => {
      const agent = container('agent');
      const proxy = container('proxy');
      assert.equal(agent.securityContext.privileged, true);
      assert.equal(agent.securityContext.readOnlyRootFilesystem, true);
      assert.notEqual(proxy.securityContext.privileged, true);
      assert.equal(proxy.securityContext.allowPrivilegeEscalation, false);
      assert.deepEqual(proxy.securityContext.capabilities, { drop: ['ALL'], add: ['BPF'] });
      assert.equal(proxy.securityContext.readOnlyRootFilesystem, true);
      for (const c of [agent, proxy]) {
        for (const k of ['requests', 'limits']) for (const r of ['cpu', 'memory']) assert.ok(c.resources?.[k]?.[r], `${c.name} resources.${k}.${r}`);
      }
      // The proxy gets no Kubernetes or istiod credentials.
      for (const v of ['kube-api-access', 'istio-token']) assert.equal(mountOf(proxy, v), undefined, `proxy mounts ${v}`);
    });

    test('mounts: bpffs (Bidirectional), cgroup2 (read-only, at /sys/fs/cgroup), /run/sockmesh, istio CA, istio-ca token', () => {
      const agent = container('agent');
      const proxy = container('proxy');
      assert.deepEqual(volume('bpffs').hostPath, { path: '/sys/fs/bpf', type: 'DirectoryOrCreate' });
      assert.deepEqual(mountOf(agent, 'bpffs'), { name: 'bpffs', mountPath: '/sys/fs/bpf', mountPropagation: 'Bidirectional' });
      assert.equal(mountOf(proxy, 'bpffs')?.mountPath, '/sys/fs/bpf');
      assert.equal(mountOf(proxy, 'bpffs')?.readOnly, true);

      assert.equal(volume('cgroup2').hostPath.path, '/sys/fs/cgroup');
      assert.equal(mountOf(agent, 'cgroup2')?.mountPath, '/sys/fs/cgroup');
      assert.equal(mountOf(agent, 'cgroup2')?.readOnly, true);

      assert.deepEqual(volume('run-sockmesh').hostPath, { path: '/run/sockmesh', type: 'DirectoryOrCreate' });
      for (const c of [agent, proxy]) assert.equal(mountOf(c, 'run-sockmesh')?.mountPath, '/run/sockmesh', c.name);

      assert.equal(volume('istio-ca-root-cert').configMap.name, 'istio-ca-root-cert');
      const tokens = volume('istio-token').projected.sources.map((s: any) => s.serviceAccountToken).filter(Boolean);
      assert.equal(tokens.length, 1);
      assert.equal(tokens[0].audience, 'istio-ca');

      // The agent's flags point into these mounts.
      const f = parseFlags(expanded('agent').argv);
      const cgroup = f.get('cgroup')![0];
      assert.ok(cgroup.startsWith('/sys/fs/cgroup/') && cgroup.length > '/sys/fs/cgroup/'.length, `--cgroup ${cgroup}: under the cgroup2 mount, not its root`);
      const ca = f.get('xds-ca')?.[0];
      assert.equal(ca, path.posix.join(mountOf(agent, 'istio-ca-root-cert').mountPath, 'root-cert.pem'));
      const token = f.get('xds-token-file')?.[0];
      assert.equal(token, path.posix.join(mountOf(agent, 'istio-token').mountPath, tokens[0].path));
      assert.equal(f.get('xds')?.[0], 'istiod.istio-system.svc:15012');
      for (const [c, flag] of [
        ['agent', 'bpffs'],
        ['proxy', 'bpffs'],
      ] as const) {
        const v = parseFlags(expanded(c).argv).get(flag)![0];
        assert.ok(v.startsWith('/sys/fs/bpf/'), `${c} --${flag} ${v} is on the bpffs mount`);
      }
    });

    test('$(VAR)s in command/args are all defined; ConfigMap keys exist', () => {
      for (const c of pod.containers) assert.deepEqual(expandContainer(c, configMaps).problems, [], c.name);
    });

    test('agent and proxy agree: bpffs, control socket, proxy address', () => {
      const a = parseFlags(expanded('agent').argv);
      const p = parseFlags(expanded('proxy').argv);
      assert.deepEqual(a.get('bpffs'), p.get('bpffs'));
      assert.deepEqual(a.get('proxy-control') ?? ['/run/sockmesh/proxy.sock'], p.get('control') ?? ['/run/sockmesh/proxy.sock']);
      assert.ok((p.get('control') ?? ['/run/sockmesh/proxy.sock'])[0].startsWith('/run/sockmesh/'));
      const listen = p.get('listen')!;
      assert.equal(listen.length, 1);
      assert.equal(hostPort(listen[0])?.host, FIELD_SAMPLES['status.hostIP'], 'the proxy listens on the node IP ($(HOST_IP))');
      // The agent steers to where the proxy listens (the proxy reports its cgroup itself).
      assert.ok(a.has('proxy-listen'), 'L7 steering is not configured');
      assert.deepEqual(a.get('proxy-listen'), listen);
      // The declared port is the proxy's data port, and nothing else.
      assert.deepEqual(
        pod.containers.flatMap((c: any) => (c.ports ?? []).map((x: any) => `${c.name}:${x.containerPort}`)),
        [`proxy:${hostPort(listen[0])!.port}`],
      );
    });

    test('every probe and every admin/metrics endpoint is on 127.0.0.1', () => {
      assert.equal(pod.hostNetwork, true, '127.0.0.1 in a probe means the pod only with hostNetwork');
      let probes = 0;
      for (const c of [...pod.containers, ...(pod.initContainers ?? [])]) {
        for (const kind of ['livenessProbe', 'readinessProbe', 'startupProbe']) {
          const p = c[kind];
          if (!p) continue;
          probes++;
          assert.equal(p.tcpSocket, undefined, `${c.name} ${kind}: tcpSocket would target the node IP`);
          assert.equal(p.grpc, undefined, `${c.name} ${kind}: grpc probes target the pod (node) IP`);
          if (p.httpGet) {
            assert.equal(p.httpGet.host, '127.0.0.1', `${c.name} ${kind}: httpGet.host`);
            assert.notEqual(p.httpGet.scheme, 'HTTPS');
          } else assert.ok(p.exec, `${c.name} ${kind}: httpGet on 127.0.0.1 or exec`);
        }
        const flags = parseFlags(expandContainer(c, configMaps).argv);
        for (const [name, values] of flags) {
          if (!/metrics|admin|health|debug|pprof|status/.test(name)) continue;
          for (const v of values) assert.ok(['127.0.0.1', '::1'].includes(hostPort(v)?.host ?? ''), `${c.name} --${name}=${v} must be on localhost`);
        }
      }
      assert.ok(container('agent').readinessProbe && container('agent').livenessProbe, 'agent probes');
      // The agent's probes hit its admin endpoint (--admin, default 127.0.0.1:15021).
      const admin = hostPort(parseFlags(expanded('agent').argv).get('admin')?.[0] ?? '127.0.0.1:15021');
      for (const kind of ['livenessProbe', 'readinessProbe', 'startupProbe']) {
        const p = container('agent')[kind];
        if (p) assert.equal(p.httpGet.port, admin?.port, `agent ${kind} port = --admin port`);
      }
      assert.equal(container('agent').readinessProbe.httpGet.path, '/readyz');
      assert.equal(container('agent').livenessProbe.httpGet.path, '/healthz');
      assert.equal(container('agent').livenessProbe.httpGet.port, 15021);
      assert.equal(parseFlags(expanded('proxy').argv).get('metrics')?.[0], '127.0.0.1:15091');
      assert.ok(probes >= 4);
    });

    test('every flag passed is one the `sockmesh` CLI knows (usage of this build)', (t) => {
      const main = [path.resolve(__dirname, '../cli/main.js'), path.join(ROOT, 'dist/cli/main.js')].find((p) => fs.existsSync(p));
      if (!main) {
        t.skip('the CLI is not built (dist/cli/main.js)');
        return;
      }
      const r = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(main)}).main(['help'])`], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      // "  agent (--config FILE | ...)\n        [--map-size ...]\n        description" → command → flags.
      const usage = new Map<string, Set<string>>();
      let current: Set<string> | undefined;
      for (const line of r.stdout.split('\n')) {
        const cmd = /^  ([a-z][a-z-]*(?: [a-z][a-z-]*)?)(?= |$)/.exec(line);
        if (cmd && !line.startsWith('   ')) {
          const words = cmd[1].split(' ');
          const name = words[1] && !words[1].startsWith('-') && ['config', 'datapath', 'authz', 'xds'].includes(words[0]) ? cmd[1] : words[0];
          current = new Set();
          usage.set(name, current);
        } else if (!line.startsWith('  ')) current = undefined;
        for (const m of line.matchAll(/--([a-z][a-z0-9-]*)/g)) current?.add(m[1]);
      }
      assert.ok(usage.get('agent')?.has('cgroup') && usage.get('proxy')?.has('listen'), `usage not understood:\n${r.stdout}`);
      for (const c of pod.containers) {
        const argv = expandContainer(c, configMaps).argv;
        assert.equal(argv[0], 'sockmesh');
        const known = usage.get(argv[1]);
        assert.ok(known, `${c.name}: unknown command ${argv[1]}`);
        for (const flag of parseFlags(argv).keys()) assert.ok(known.has(flag), `${c.name}: \`sockmesh ${argv[1]}\` has no --${flag}`);
      }
    });
  });

  describe('PrometheusRule', () => {
    const rule = one(docs, 'PrometheusRule');
    const alerts: Array<Record<string, any>> = rule.spec.groups.flatMap((g: any) => g.rules);

    test('the PromQL metric-name extractor', () => {
      assert.deepEqual(promqlMetricNames('sum by (instance, reason) (rate(sockmesh_policy_drops_total{x="a b"}[5m])) > 1'), ['sockmesh_policy_drops_total']);
      assert.deepEqual(promqlMetricNames('up{job="sockmesh-agent"} == 0'), ['up']);
      assert.deepEqual(promqlMetricNames('absent(up{job="x"})'), ['up']);
      assert.deepEqual(promqlMetricNames('a / on(instance) group_left(node) b offset 5m > 0.05 and c'), ['a', 'b', 'c']);
      assert.deepEqual(promqlMetricNames('histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m]))) > 1e3'), ['x_bucket']);
    });

    test('every metric name in the rules is known', async () => {
      const { names, agentSource } = await knownMetricNames();
      const known = (n: string) => names.has(n) || [...names].some((b) => ['_bucket', '_sum', '_count'].some((s) => n === b + s));
      const used = new Set<string>();
      for (const a of alerts) {
        for (const n of promqlMetricNames(a.expr)) {
          used.add(n);
          assert.ok(known(n), `${a.alert}: metric ${n} is not exported by sockmesh (agent names from ${agentSource})`);
        }
      }
      // Every sockmesh_* name is also listed in the file's header comment.
      const text = fs.readFileSync(path.join(MANIFESTS, 'prometheusrule.yaml'), 'utf8');
      const header = text.slice(0, text.indexOf('\napiVersion:'));
      for (const n of used) if (n.startsWith('sockmesh_')) assert.ok(header.includes(n), `${n} is not listed in the header comment`);
    });

    test('the alerts asked for, with severity and annotations', () => {
      const byExpr = (re: RegExp) => alerts.filter((a) => re.test(a.expr.replace(/\s+/g, ' ')));
      const required: Array<[string, RegExp]> = [
        ['map usage > 80 %', /^sockmesh_map_usage_ratio > 0\.8$/],
        ['attach failures', /^increase\(sockmesh_attach_failures_total\[5m\]\) > 0$/],
        ['xDS disconnected', /^sockmesh_xds_connected == 0$/],
        ['NACKs', /^increase\(sockmesh_xds_nacks_total\[10m\]\) > 0$/],
        ['policy drops by reason', /rate\(sockmesh_policy_drops_total\[5m\]\)/],
        ['agent down', /^up\{job="sockmesh-agent"\} == 0$/],
        ['proxy upstream errors', /rate\(sockmesh_proxy_upstream_errors_total\[5m\]\)/],
      ];
      for (const [what, re] of required) assert.equal(byExpr(re).length, 1, `one alert for ${what}`);
      assert.match(byExpr(/sockmesh_policy_drops_total/)[0].expr, /by \([^)]*\breason\b/);
      assert.equal(byExpr(/sockmesh_policy_drops_total/)[0].labels.severity, 'warning');
      assert.equal(byExpr(/sockmesh_xds_connected/)[0].for, '5m');
      const names = new Set<string>();
      for (const a of alerts) {
        assert.ok(a.alert && !names.has(a.alert), `alert name ${a.alert} unique`);
        names.add(a.alert);
        assert.ok(['warning', 'critical'].includes(a.labels?.severity), `${a.alert}: severity`);
        assert.ok(a.annotations?.summary && a.annotations?.description, `${a.alert}: summary and description`);
        if (a.for !== undefined) assert.match(a.for, /^\d+[smh]$/, `${a.alert}: for`);
        let depth = 0;
        for (const ch of a.expr as string) {
          depth += ch === '(' || ch === '[' || ch === '{' ? 1 : ch === ')' || ch === ']' || ch === '}' ? -1 : 0;
          assert.ok(depth >= 0, `${a.alert}: unbalanced brackets`);
        }
        assert.equal(depth, 0, `${a.alert}: unbalanced brackets`);
      }
    });
  });
});
