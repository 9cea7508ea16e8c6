// SVG bar charts for the benchmark report (issue 6): every scenario returns ChartSpec[] and
// bench/run.ts writes them with writeCharts() next to report.md, which links them.
//
// Hand-written instead of a plotting library: the charts are one shape (grouped bars), the report
// must not pull a browser or a native renderer into CI, and the output has to be byte-stable so a
// re-run with the same numbers does not churn the committed reference results. The SVG is SVG 1.1,
// self-contained (no fonts, images, CSS or scripts from outside) and paints its own white background
// so it reads the same in GitHub's light and dark themes (GitHub shows .svg through <img>).
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ChartSpec } from './common';

/**
 * Okabe & Ito's colour-blind-safe palette, reordered so the first series get the most distinct
 * colours on white (its yellow is weak on white, so it comes late). More than 8 series cycle.
 */
const PALETTE = ['#0072B2', '#E69F00', '#009E73', '#D55E00', '#56B4E9', '#CC79A7', '#F0E442', '#000000'];

const FONT = "Helvetica, Arial, 'DejaVu Sans', sans-serif";
const INK = '#222222';
const AXIS = '#555555';
const GRID = '#dddddd';
const GRID_MINOR = '#f0f0f0';
const MUTED = '#888888';

const PAD = 16;
const MIN_WIDTH = 900;
const MIN_HEIGHT = 420;
const PLOT_MIN_HEIGHT = 280;
const GROUP_GAP = 24;
const MAX_SLOT = 56;
const BAR_GAP = 4;

/** Escape text for XML content and (double- or single-quoted) attribute values. */
export function escapeXml(s: string): string {
  // Characters XML 1.0 forbids outright (C0 controls but tab/LF/CR, U+FFFE/FFFF, lone surrogates)
  // would make the document ill-formed however they are escaped: replace them.
  const clean = s.replace(
    /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g,
    '\uFFFD',
  );
  return clean.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!);
}

const SUFFIXES: Array<[number, string]> = [
  [1, ''],
  [1e3, 'k'],
  [1e6, 'M'],
  [1e9, 'G'],
  [1e12, 'T'],
];

/** Compact value label: 3 significant digits, k/M/G/T above 1000 (1234 → "1.23k", 0.5 → "0.5"). */
export function formatValue(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return '0';
  const abs = Math.abs(v);
  let i = 0;
  while (i + 1 < SUFFIXES.length && abs >= SUFFIXES[i + 1][0]) i++;
  let m = Number((v / SUFFIXES[i][0]).toPrecision(3));
  // 999.7 rounds to 1000: say "1k", not "1e+3" or "1000".
  if (Math.abs(m) >= 1000 && i + 1 < SUFFIXES.length) {
    i++;
    m = Number((v / SUFFIXES[i][0]).toPrecision(3));
  }
  return `${m}${SUFFIXES[i][1]}`;
}

/**
 * "Nice" linear ticks (steps of 1, 2 or 5 × 10^k) from at or below `min` to at or above `max`, about
 * `count` intervals. Tick values are rounded so they print without binary noise (0.3, not
 * 0.30000000000000004).
 */
export function niceTicks(min: number, max: number, count: number): number[] {
  if (!Number.isFinite(min) || !Number.isFinite(max)) throw new Error(`niceTicks: bounds must be finite, got ${min}..${max}`);
  if (min > max) [min, max] = [max, min];
  if (min === max) {
    // One value: a range around it that includes zero, so a bar still has a height.
    if (min === 0) max = 1;
    else if (min > 0) min = 0;
    else max = 0;
  }
  const n = Math.max(1, Math.round(count));
  const raw = (max - min) / n;
  let exp = Math.floor(Math.log10(raw));
  let mult = raw / 10 ** exp;
  // Thresholds at the geometric means between 1, 2, 5 and 10: the step nearest to raw on a log scale.
  if (mult >= Math.sqrt(50)) {
    mult = 1;
    exp++;
  } else if (mult >= Math.sqrt(10)) mult = 5;
  else if (mult >= Math.sqrt(2)) mult = 2;
  else mult = 1;
  // step = mult × 10^exp; divide by 10^-exp for negative exp (0.1 is not exact, 10 is).
  const at = (i: number) => Number((exp >= 0 ? i * mult * 10 ** exp : (i * mult) / 10 ** -exp).toPrecision(12));
  const step = at(1);
  const first = Math.floor(min / step + 1e-9);
  const last = Math.ceil(max / step - 1e-9);
  const ticks: number[] = [];
  for (let i = first; i <= last; i++) ticks.push(at(i) === 0 ? 0 : at(i)); // no -0
  return ticks;
}

/** Powers of ten from strictly below the smallest positive value to at or above the largest. */
export function logTicks(values: number[]): number[] {
  const pos = values.filter((v) => Number.isFinite(v) && v > 0);
  if (!pos.length) return [1, 10];
  const lo = Math.min(...pos);
  const hi = Math.max(...pos);
  // Math.log10 can be off by one ulp near powers of ten; settle the exponents with exact compares.
  let a = Math.floor(Math.log10(lo));
  while (10 ** a >= lo) a--;
  while (10 ** (a + 1) < lo) a++;
  let b = Math.ceil(Math.log10(hi));
  while (10 ** b < hi) b++;
  while (10 ** (b - 1) >= hi) b--;
  const ticks: number[] = [];
  for (let e = a; e <= b; e++) ticks.push(pow10(e));
  return ticks;
}

/** 10^e with 0.01, not 0.010000000000000002. */
const pow10 = (e: number) => (e >= 0 ? 10 ** e : Number((1 / 10 ** -e).toPrecision(12)));

/** Rough advance width of s in px: no font metrics available, ~0.6 em per character of a sans font. */
function textWidth(s: string, fontSize: number): number {
  return [...s].length * fontSize * 0.6;
}

/** Coordinates printed with at most one decimal: stable, compact output. */
function n(x: number): string {
  const r = Math.round(x * 10) / 10;
  return String(r === 0 ? 0 : r);
}

function text(x: number, y: number, s: string, attrs: Record<string, string | number> = {}): string {
  const a = Object.entries(attrs)
    .map(([k, v]) => ` ${k}="${escapeXml(String(v))}"`)
    .join('');
  return `<text x="${n(x)}" y="${n(y)}"${a}>${escapeXml(s)}</text>`;
}

function line(x1: number, y1: number, x2: number, y2: number, stroke: string, cls?: string): string {
  const c = cls ? ` class="${cls}"` : '';
  return `<line${c} x1="${n(x1)}" y1="${n(y1)}" x2="${n(x2)}" y2="${n(y2)}" stroke="${stroke}" stroke-width="1"/>`;
}

/** A value axis: maps a value to a y pixel, with its ticks and the y its bars grow from. */
interface Axis {
  ticks: number[];
  minor: number[];
  y: (v: number) => number;
  base: number;
  drawable: (v: number) => boolean;
}

function makeAxis(spec: ChartSpec, values: number[], top: number, bottom: number): Axis {
  const h = bottom - top;
  if (spec.log) {
    const ticks = logTicks(values);
    const a = Math.log10(ticks[0]);
    const b = Math.log10(ticks[ticks.length - 1]);
    const y = (v: number) => bottom - ((Math.log10(v) - a) / (b - a)) * h;
    // Unlabelled 2..9 × 10^k lines help read values when few decades are shown.
    const minor: number[] = [];
    if (ticks.length <= 4) {
      for (const t of ticks.slice(0, -1)) for (let k = 2; k <= 9; k++) minor.push(Number((t * k).toPrecision(12)));
    }
    return { ticks, minor, y, base: bottom, drawable: (v) => v > 0 };
  }
  // Bars on a linear axis always start at zero, or their lengths would not be proportional.
  const finite = values.filter((v) => Number.isFinite(v));
  const lo = Math.min(0, ...finite);
  const hi = Math.max(0, ...finite);
  const ticks = niceTicks(lo, hi === lo ? lo + 1 : hi, 5);
  const t0 = ticks[0];
  const t1 = ticks[ticks.length - 1];
  const y = (v: number) => bottom - ((v - t0) / (t1 - t0)) * h;
  return { ticks, minor: [], y, base: y(0), drawable: () => true };
}

/** A grouped bar chart as a standalone SVG 1.1 document (same spec → same bytes). */
export function barChart(spec: ChartSpec): string {
  const groups = spec.groups;
  const series = spec.series;
  series.forEach((s, i) => {
    if (s.values.length !== groups.length) {
      throw new Error(`chart ${spec.name}: series ${i} (${s.label}) has ${s.values.length} values for ${groups.length} groups`);
    }
  });
  const isValue = (v: number | null): v is number => v !== null && Number.isFinite(v);
  const values = series.flatMap((s) => s.values.filter(isValue));

  // Horizontal layout: a bar slot wide enough for its value label, a group wide enough for its label.
  const labels = series.flatMap((s) => s.values.filter(isValue).map(formatValue));
  const slot0 = Math.max(28, ...labels.map((l) => textWidth(l, 10) + 6));
  const groupW0 = Math.max(series.length * slot0 + GROUP_GAP, ...groups.map((g) => textWidth(g, 12) + 12));

  const axisTitle = spec.log ? (spec.unit ? `${spec.unit}, log scale` : 'log scale') : spec.unit;
  // The left margin holds the axis title and the tick labels. The ticks depend on the data only, not
  // on pixels, so a throw-away axis over a dummy range gives their labels before the layout exists.
  const probe = makeAxis(spec, values, 0, 1);
  const tickW = Math.max(...probe.ticks.map((t) => textWidth(formatValue(t), 11)));
  const plotLeft = PAD + (axisTitle ? 22 : 0) + 8 + tickW + 8;

  const plotW = Math.max(MIN_WIDTH - plotLeft - PAD, groups.length * groupW0);
  const titleW = textWidth(spec.title, 16) * 1.1; // bold
  const width = Math.ceil(Math.max(plotLeft + plotW + PAD, titleW + 2 * PAD));
  const plotRight = width - PAD;
  const groupW = groups.length ? (plotRight - plotLeft) / groups.length : 0;
  const slot = series.length ? Math.min(MAX_SLOT, Math.max(slot0, (groupW - GROUP_GAP) / series.length)) : 0;

  // Vertical layout: title, legend rows (wrapped to the width), headroom for value labels, plot,
  // group labels, footnote.
  const titleY = PAD + 14;
  const legendTop = titleY + 14;
  const legendItems: Array<{ x: number; row: number; label: string; color: string }> = [];
  let lx = plotLeft;
  let row = 0;
  series.forEach((s, i) => {
    const w = 12 + 6 + textWidth(s.label, 12) + 18;
    if (lx > plotLeft && lx + w > plotRight) {
      row++;
      lx = plotLeft;
    }
    legendItems.push({ x: lx, row, label: s.label, color: PALETTE[i % PALETTE.length] });
    lx += w;
  });
  const legendRows = series.length ? row + 1 : 0;
  const plotTop = legendTop + legendRows * 18 + 22;
  const bottomMargin = 50;
  const plotH = Math.max(PLOT_MIN_HEIGHT, MIN_HEIGHT - plotTop - bottomMargin);
  const plotBottom = plotTop + plotH;
  const height = Math.ceil(plotBottom + bottomMargin);

  const axis = makeAxis(spec, values, plotTop, plotBottom);
  const out: string[] = [];
  out.push('<?xml version="1.0" encoding="UTF-8"?>');
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}"` +
      ` font-family="${escapeXml(FONT)}" fill="${INK}">`,
  );
  out.push(`<title>${escapeXml(spec.title)}</title>`);
  out.push(`<rect class="background" x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`);
  out.push(text(PAD, titleY, spec.title, { 'font-size': 16, 'font-weight': 'bold' }));

  for (const it of legendItems) {
    const y = legendTop + it.row * 18;
    out.push(`<rect class="legend" x="${n(it.x)}" y="${n(y)}" width="12" height="12" fill="${it.color}"/>`);
    out.push(text(it.x + 18, y + 10.5, it.label, { 'font-size': 12 }));
  }

  // Grid and value axis.
  out.push('<g class="grid">');
  for (const m of axis.minor) out.push(line(plotLeft, axis.y(m), plotRight, axis.y(m), GRID_MINOR, 'minor'));
  for (const t of axis.ticks) out.push(line(plotLeft, axis.y(t), plotRight, axis.y(t), GRID));
  out.push('</g>');
  out.push('<g class="axis" font-size="11">');
  for (const t of axis.ticks) {
    const y = axis.y(t);
    out.push(line(plotLeft - 5, y, plotLeft, y, AXIS));
    out.push(text(plotLeft - 8, y + 4, formatValue(t), { class: 'tick', 'text-anchor': 'end' }));
  }
  out.push(line(plotLeft, plotTop, plotLeft, plotBottom, AXIS));
  out.push(line(plotLeft, axis.base, plotRight, axis.base, AXIS));
  if (axisTitle) {
    const x = PAD + 12;
    const y = (plotTop + plotBottom) / 2;
    out.push(text(x, y, axisTitle, { 'text-anchor': 'middle', 'font-size': 12, transform: `rotate(-90 ${n(x)} ${n(y)})` }));
  }
  out.push('</g>');

  // Bars, their value labels, and n/a markers.
  let notDrawn = false;
  let notPositive = false;
  out.push('<g class="bars" font-size="10" text-anchor="middle">');
  groups.forEach((g, gi) => {
    const gx = plotLeft + gi * groupW;
    const x0 = gx + (groupW - slot * series.length) / 2;
    series.forEach((s, si) => {
      const v = s.values[gi];
      const x = x0 + si * slot + BAR_GAP / 2;
      const w = slot - BAR_GAP;
      const cx = x + w / 2;
      const what = `${s.label}, ${g}`;
      if (!isValue(v) || !axis.drawable(v)) {
        notDrawn = true;
        if (isValue(v)) notPositive = true;
        const why = isValue(v) ? `${formatValue(v)}: cannot be drawn on a log scale` : 'not measured';
        out.push(`<text class="na" x="${n(cx)}" y="${n(axis.base - 4)}" fill="${MUTED}"><title>${escapeXml(`${what}: ${why}`)}</title>n/a</text>`);
        return;
      }
      const yv = axis.y(v);
      const top = Math.min(yv, axis.base);
      const h = Math.abs(axis.base - yv);
      const color = PALETTE[si % PALETTE.length];
      const tip = `${what}: ${v} ${spec.unit}`.trimEnd();
      out.push(
        `<rect class="bar s${si} g${gi}" x="${n(x)}" y="${n(top)}" width="${n(w)}" height="${n(h)}" fill="${color}"><title>${escapeXml(tip)}</title></rect>`,
      );
      const ly = v < 0 ? top + h + 11 : top - 4;
      out.push(text(cx, ly, formatValue(v), { class: 'value' }));
    });
  });
  out.push('</g>');

  out.push('<g class="groups" font-size="12" text-anchor="middle">');
  groups.forEach((g, gi) => out.push(text(plotLeft + (gi + 0.5) * groupW, plotBottom + 18, g)));
  out.push('</g>');

  if (notDrawn) {
    const note = notPositive ? 'n/a: not measured, or ≤ 0 (not drawable on a log scale)' : 'n/a: not measured';
    out.push(text(plotRight, height - 10, note, { 'font-size': 11, 'text-anchor': 'end', fill: MUTED }));
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** Write every chart to `${dir}/${name}.svg`; returns the paths in the order given. */
export function writeCharts(dir: string, charts: ChartSpec[]): string[] {
  const seen = new Set<string>();
  for (const c of charts) {
    // The name becomes a file name in the results directory: refuse paths and clashes.
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(c.name)) throw new Error(`chart name ${JSON.stringify(c.name)} is not a plain file name`);
    if (seen.has(c.name)) throw new Error(`two charts named ${c.name}`);
    seen.add(c.name);
  }
  const svgs = charts.map(barChart); // render all before writing any: a bad spec leaves no partial set
  fs.mkdirSync(dir, { recursive: true });
  return charts.map((c, i) => {
    const file = path.join(dir, `${c.name}.svg`);
    fs.writeFileSync(file, svgs[i]);
    return file;
  });
}
