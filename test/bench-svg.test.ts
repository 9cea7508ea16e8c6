import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ChartSpec } from '../bench/common';
import { barChart, escapeXml, formatValue, logTicks, niceTicks, writeCharts } from '../bench/svg';

// A deliberately strict little XML parser (no dependency is available for this): one root element,
// properly nested and closed tags, quoted and unique attributes, only the five predefined entities
// and numeric references, no raw '<' or '&' in text or attributes. Throws on anything else.
interface El {
  name: string;
  attrs: Record<string, string>;
  children: El[];
  text: string; // all descendant text, entities decoded
}

function decode(s: string, where: string): string {
  if (/<|&(?!(?:amp|lt|gt|quot|apos|#[0-9]+|#x[0-9a-fA-F]+);)/.test(s)) throw new Error(`raw < or & in ${where}: ${s}`);
  return s.replace(/&(amp|lt|gt|quot|apos|#[0-9]+|#x[0-9a-fA-F]+);/g, (_, e: string) => {
    const named: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };
    if (named[e]) return named[e];
    return String.fromCodePoint(e[1] === 'x' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
  });
}

function parseXml(doc: string): El {
  let i = 0;
  if (doc.startsWith('<?xml')) {
    const end = doc.indexOf('?>');
    if (end < 0) throw new Error('unterminated XML declaration');
    i = end + 2;
  }
  const NAME = /[A-Za-z_:][-A-Za-z0-9_:.]*/y;
  const stack: El[] = [];
  let root: El | undefined;
  while (i < doc.length) {
    const lt = doc.indexOf('<', i);
    const chunk = lt < 0 ? doc.slice(i) : doc.slice(i, lt);
    if (chunk.length) {
      if (!stack.length) {
        if (chunk.trim()) throw new Error(`text outside the root element: ${chunk.trim().slice(0, 40)}`);
      } else {
        const t = decode(chunk, 'text');
        for (const e of stack) e.text += t;
      }
    }
    if (lt < 0) break;
    i = lt;
    if (doc.startsWith('<!--', i)) {
      const end = doc.indexOf('-->', i);
      if (end < 0) throw new Error('unterminated comment');
      i = end + 3;
      continue;
    }
    if (doc.startsWith('</', i)) {
      NAME.lastIndex = i + 2;
      const m = NAME.exec(doc);
      if (!m) throw new Error(`bad end tag at ${i}`);
      const close = doc.indexOf('>', i);
      if (doc.slice(i + 2 + m[0].length, close).trim()) throw new Error(`junk in end tag at ${i}`);
      const open = stack.pop();
      if (!open || open.name !== m[0]) throw new Error(`</${m[0]}> closes <${open?.name ?? 'nothing'}>`);
      i = close + 1;
      continue;
    }
    NAME.lastIndex = i + 1;
    const m = NAME.exec(doc);
    if (!m) throw new Error(`bad tag at ${i}: ${doc.slice(i, i + 20)}`);
    if (!stack.length && root) throw new Error('second root element');
    const el: El = { name: m[0], attrs: {}, children: [], text: '' };
    i = NAME.lastIndex;
    for (;;) {
      const ws = /\s*/y;
      ws.lastIndex = i;
      const sp = ws.exec(doc)![0];
      i = ws.lastIndex;
      if (doc.startsWith('/>', i) || doc[i] === '>') break;
      if (!sp) throw new Error(`attributes must be separated by white space at ${i}`);
      const attr = /([A-Za-z_:][-A-Za-z0-9_:.]*)\s*=\s*("([^"]*)"|'([^']*)')/y;
      attr.lastIndex = i;
      const a = attr.exec(doc);
      if (!a) throw new Error(`bad attribute at ${i}: ${doc.slice(i, i + 30)}`);
      if (a[1] in el.attrs) throw new Error(`duplicate attribute ${a[1]}`);
      el.attrs[a[1]] = decode(a[3] ?? a[4], `attribute ${a[1]}`);
      i = attr.lastIndex;
    }
    if (stack.length) stack[stack.length - 1].children.push(el);
    else root = el;
    if (doc.startsWith('/>', i)) i += 2;
    else {
      i += 1;
      stack.push(el);
    }
  }
  if (stack.length) throw new Error(`unclosed <${stack[stack.length - 1].name}>`);
  if (!root) throw new Error('no root element');
  return root;
}

function all(el: El, pred: (e: El) => boolean, out: El[] = []): El[] {
  if (pred(el)) out.push(el);
  for (const c of el.children) all(c, pred, out);
  return out;
}
const hasClass = (e: El, c: string) => (e.attrs.class ?? '').split(/\s+/).includes(c);
const bars = (root: El) => all(root, (e) => e.name === 'rect' && hasClass(e, 'bar'));
const bar = (root: El, s: number, g: number) => {
  const b = all(root, (e) => e.name === 'rect' && hasClass(e, 'bar') && hasClass(e, `s${s}`) && hasClass(e, `g${g}`));
  assert.equal(b.length, 1, `one bar for series ${s}, group ${g}`);
  return { y: Number(b[0].attrs.y), h: Number(b[0].attrs.height) };
};
const nas = (root: El) => all(root, (e) => e.name === 'text' && hasClass(e, 'na'));

const latency: ChartSpec = {
  name: 'pingpong-latency',
  title: 'Same-node ping-pong, p50 latency',
  unit: 'µs',
  groups: ['64 B', '4096 B', '65536 B'],
  series: [
    { label: 'plain', values: [19.2, 19.8, 46.3] },
    { label: 'sockmesh', values: [6.1, 6.4, 14] },
    { label: 'sockmesh, redirect off', values: [19, null, 45.8] },
    { label: 'HAProxy ×2 <sidecar> & "co"', values: [56.7, 64.7, 174.8] },
  ],
};

const scale: ChartSpec = {
  name: 'scale-connect',
  title: 'connect() latency vs number of services',
  unit: 'µs',
  log: true,
  groups: ['100', '1k', '10k', '100k'],
  series: [
    { label: 'iptables', values: [42, 310, 2900, 31000] },
    { label: 'sockmesh maps', values: [8.1, 8.3, 8.2, 8.6] },
    { label: 'broken', values: [0, -3, null, 1000] },
  ],
};

test('the strict XML checker rejects what it must (so the other tests mean something)', () => {
  assert.doesNotThrow(() => parseXml('<?xml version="1.0"?>\n<a x="1" y=\'&lt;\'><b/>t &amp; &#x41;</a>\n'));
  assert.equal(parseXml('<a>&lt;&amp;&gt;&quot;&#65;</a>').text, '<&>"A');
  for (const bad of ['<a><b></a></b>', '<a>x & y</a>', '<a>1 < 2</a>', '<a x=1/>', '<a x="1" x="2"/>', '<a x="<"/>', '<a>', '<a/><b/>', '<a/>junk', '<a x="1"y="2"/>']) {
    assert.throws(() => parseXml(bad), Error, bad);
  }
});

test('a chart is one well-formed, self-contained SVG 1.1 document with a white background', () => {
  for (const spec of [latency, scale]) {
    const svg = barChart(spec);
    const root = parseXml(svg);
    assert.equal(root.name, 'svg');
    assert.equal(root.attrs.xmlns, 'http://www.w3.org/2000/svg');
    assert.equal(root.attrs.version, '1.1');
    const [w, h] = [Number(root.attrs.width), Number(root.attrs.height)];
    assert.equal(root.attrs.viewBox, `0 0 ${w} ${h}`);
    assert.ok(w >= 900 && h >= 420 && w < 3000 && h < 1000, `${w}×${h}`);
    const bg = root.children.find((e) => e.name === 'rect');
    assert.ok(bg && bg.attrs.fill === '#ffffff' && bg.attrs.width === String(w) && bg.attrs.height === String(h), 'white background first');
    assert.equal(all(root, (e) => ['script', 'image', 'foreignObject', 'style', 'a', 'use'].includes(e.name)).length, 0);
    assert.doesNotMatch(svg, /href|url\(|on[a-z]+=|@import/i, 'nothing external, no handlers');
    assert.ok(root.text.includes(spec.title));
  }
});

test('one bar per non-null value, an n/a marker per null, one colour per series', () => {
  const root = parseXml(barChart(latency));
  const nonNull = latency.series.flatMap((s) => s.values).filter((v) => v !== null).length;
  assert.equal(bars(root).length, nonNull);
  assert.equal(nas(root).length, 1);
  assert.equal(all(root, (e) => e.name === 'rect' && hasClass(e, 's2') && hasClass(e, 'g1')).length, 0, 'no bar for the null');
  assert.match(root.text, /n\/a: not measured/);
  const colours = latency.series.map((_, s) => new Set(bars(root).filter((b) => hasClass(b, `s${s}`)).map((b) => b.attrs.fill)));
  for (const c of colours) assert.equal(c.size, 1, 'one colour within a series');
  assert.equal(new Set(colours.map((c) => [...c][0])).size, latency.series.length, 'distinct colours across series');
  // Every value is printed on its bar, compactly.
  const labels = all(root, (e) => e.name === 'text' && hasClass(e, 'value')).map((e) => e.text);
  assert.deepEqual(labels.sort(), latency.series.flatMap((s) => s.values).filter((v): v is number => v !== null).map(formatValue).sort());
  assert.ok(labels.includes('175'), '174.8 to 3 significant digits');
});

test('linear axis: bar heights proportional to values, sharing a baseline at zero', () => {
  const root = parseXml(barChart(latency));
  const ref = bar(root, 3, 2); // 174.8, the tallest: coordinates are rounded to 0.1 px
  const pxPerUnit = ref.h / 174.8;
  latency.series.forEach((s, si) =>
    s.values.forEach((v, gi) => {
      if (v === null) return;
      const b = bar(root, si, gi);
      assert.ok(Math.abs(b.h - v * pxPerUnit) <= 0.15, `${s.label}/${latency.groups[gi]}: ${b.h} vs ${v * pxPerUnit}`);
      assert.ok(Math.abs(b.y + b.h - (ref.y + ref.h)) <= 0.1, 'same baseline');
    }),
  );
  // The axis reaches past the largest value with nice ticks starting at 0.
  const ticks = all(root, (e) => e.name === 'text' && hasClass(e, 'tick')).map((e) => e.text);
  assert.equal(ticks[0], '0');
  assert.ok(Number(ticks[ticks.length - 1]) >= 174.8, ticks.join(','));
});

test('log axis: powers of ten covering the data, bars ordered by value, equal decades equal height', () => {
  const root = parseXml(barChart(scale));
  const ticks = all(root, (e) => e.name === 'text' && hasClass(e, 'tick')).map((e) => e.text);
  assert.deepEqual(ticks, ['1', '10', '100', '1k', '10k', '100k']);
  assert.deepEqual(logTicks([8.1, 31000]), [1, 10, 100, 1000, 10000, 100000]);
  assert.deepEqual(logTicks([100, 1000]), [10, 100, 1000], 'the smallest value gets a bar above the axis floor');
  assert.deepEqual(logTicks([0.05, 0.2]), [0.01, 0.1, 1]);
  assert.deepEqual(logTicks([0, -1]), [1, 10]);
  const ipt = [0, 1, 2, 3].map((g) => bar(root, 0, g).h);
  for (let g = 1; g < 4; g++) assert.ok(ipt[g] > ipt[g - 1], `iptables bars grow: ${ipt}`);
  assert.ok(bar(root, 1, 0).h < bar(root, 1, 3).h, '8.1 below 8.6');
  // 10 → 100 and 100 → 1000 span the same height; 1000 (series 2) sits exactly at a tick.
  const h1000 = bar(root, 2, 3).h;
  const h42 = Math.log10(42) * (h1000 / 3); // 1000 is 3 decades above the axis floor 1
  assert.ok(Math.abs(bar(root, 0, 0).h - h42) <= 0.2, `42 on a 1..100k axis: ${bar(root, 0, 0).h} vs ${h42}`);
  // 0 and -3 cannot be drawn on a log scale: n/a, like the null.
  assert.equal(nas(root).length, 3);
  assert.equal(bars(root).length, 12 - 3);
  assert.match(root.text, /≤ 0/);
});

test('labels and titles are escaped and round-trip', () => {
  const evil = 'a<&>"\'b HAProxy ×2 <sidecar>';
  const spec: ChartSpec = {
    name: 'evil',
    title: `T ${evil}`,
    unit: 'req/s <&>',
    groups: [`g ${evil}`],
    series: [{ label: `s ${evil}`, values: [1] }],
  };
  const svg = barChart(spec);
  const root = parseXml(svg);
  const texts = all(root, (e) => e.name === 'text' || e.name === 'title').map((e) => e.text);
  for (const want of [`T ${evil}`, `g ${evil}`, `s ${evil}`, 'req/s <&>']) assert.ok(texts.includes(want), `${want} in ${JSON.stringify(texts)}`);
  assert.equal(escapeXml('<&>"\''), '&lt;&amp;&gt;&quot;&apos;');
  // Characters XML cannot carry at all are replaced, not passed through.
  assert.doesNotThrow(() => parseXml(barChart({ ...spec, title: 'bell\u0007 \uD800 end' })));
  assert.doesNotMatch(barChart({ ...spec, title: 'bell\u0007' }), /\u0007/);
});

test('same spec, same bytes; wider with more groups and series', () => {
  const a = barChart(latency);
  assert.equal(barChart(JSON.parse(JSON.stringify(latency)) as ChartSpec), a);
  const wide: ChartSpec = {
    ...latency,
    groups: Array.from({ length: 12 }, (_, i) => `${2 ** i} B`),
    series: latency.series.map((s) => ({ ...s, values: Array.from({ length: 12 }, (_, i) => i * 10 + 1) })),
  };
  const w = (svg: string) => Number(parseXml(svg).attrs.width);
  assert.ok(w(barChart(wide)) > w(a) * 1.5, `${w(barChart(wide))} vs ${w(a)}`);
  assert.throws(() => barChart({ ...latency, groups: ['only one'] }), /has 3 values for 1 groups/);
});

test('niceTicks: round steps covering the range', () => {
  assert.deepEqual(niceTicks(0, 174.8, 5), [0, 50, 100, 150, 200]);
  assert.deepEqual(niceTicks(0, 100, 5), [0, 20, 40, 60, 80, 100]);
  assert.deepEqual(niceTicks(0, 1, 5), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  assert.deepEqual(niceTicks(0, 0.3, 3), [0, 0.1, 0.2, 0.3]);
  assert.deepEqual(niceTicks(-7, 12, 4), [-10, -5, 0, 5, 10, 15]);
  assert.deepEqual(niceTicks(0, 0, 5), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  for (const [lo, hi] of [[0, 1234567], [0, 0.00042], [3, 97], [0, 999.9]]) {
    const t = niceTicks(lo, hi, 5);
    assert.ok(t[0] <= lo && t[t.length - 1] >= hi && t.length >= 3 && t.length <= 12, `${lo}..${hi}: ${t}`);
    const step = t[1] - t[0];
    const mant = step / 10 ** Math.floor(Math.log10(step) + 1e-9);
    assert.ok([1, 2, 5].some((m) => Math.abs(mant - m) < 1e-6), `nice step ${step}`);
  }
});

test('formatValue: 3 significant digits with k/M suffixes', () => {
  const cases: Array<[number, string]> = [
    [0, '0'], [6.1, '6.1'], [19.25, '19.3'], [174.8, '175'], [999.7, '1k'], [1234, '1.23k'], [45678, '45.7k'],
    [123456, '123k'], [1999999, '2M'], [2.5e6, '2.5M'], [3.21e9, '3.21G'], [0.01234, '0.0123'], [-1500, '-1.5k'],
  ];
  for (const [v, s] of cases) assert.equal(formatValue(v), s, String(v));
});

test('writeCharts writes NAME.svg files and refuses unsafe or duplicate names', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-svg-'));
  try {
    const paths = writeCharts(path.join(dir, 'sub'), [latency, scale]);
    assert.deepEqual(paths, [path.join(dir, 'sub', 'pingpong-latency.svg'), path.join(dir, 'sub', 'scale-connect.svg')]);
    assert.equal(fs.readFileSync(paths[1], 'utf8'), barChart(scale));
    assert.throws(() => writeCharts(dir, [{ ...latency, name: '../x' }]), /plain file name/);
    assert.throws(() => writeCharts(dir, [latency, latency]), /two charts/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
