/**
 * Reports of evaluation results: `report.json`, an offline `report.html` (inline SVG and CSS, no
 * scripts, no network, no external assets) with the ROC on a log FAR axis, genuine/impostor score
 * histograms and the threshold table, and the text tables insightface users know.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';

import { ioError, atomicWriteFile } from '../fsutil';
import { invalidParameterError } from '../errors';
import { assertKnownOptions, assertString, is, optionsObject } from '../validate';
import { FAR_TARGETS, type RocMetrics } from './roc';

/** One result in a report: anything with the ROC metrics (verification or IJB results), plus what it has of the rest. */
export interface ReportEntry extends RocMetrics {
  pairs?: number;
  genuine?: number;
  impostor?: number;
  accuracy?: number;
  accuracyStd?: number;
  threshold?: number;
  xnorm?: number;
  val?: number;
  valStd?: number;
  far?: number;
  flip?: boolean;
  templates?: number;
  images?: number;
  groups?: Record<string, ReportEntry & { atGlobalThreshold?: Record<string, { tar: number; far: number }> }>;
  /** Large per-pair arrays (IJB): left out of report.json. */
  scores?: unknown;
  labels?: unknown;
}

/** Options of {@link writeReport} and {@link renderReportHtml}. */
export interface ReportOptions {
  /** Page title (default 'facecuda evaluation'). */
  title?: string;
  /** Free-form facts printed under the title and stored in report.json (model, date, commit, …). */
  info?: Record<string, string | number | boolean>;
}

const MAX_ROC_POINTS = 4000;

/** Python's '%.Nf' (round half to even on the exact binary value; toFixed rounds ties up). */
export function pyFixed(x: number, digits: number): string {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? 'nan' : x > 0 ? 'inf' : '-inf';
  const exact = Math.abs(x).toFixed(Math.min(100, digits + 60));
  const dot = exact.indexOf('.');
  const tail = exact.slice(dot + 1 + digits);
  if (/^50*$/.test(tail)) {
    // A tie: half to even. toFixed picks the larger candidate, right when the kept last digit is odd.
    const kept = exact.slice(0, dot + 1 + digits).replace(/\.$/, '');
    if (Number(kept[kept.length - 1]) % 2 === 0) return (x < 0 ? '-' : '') + kept;
  }
  return x.toFixed(digits);
}

/**
 * insightface's verification log lines for each named result: `[lfw]XNorm: 22.123456` and
 * `[lfw]Accuracy-Flip: 0.99817+-0.00229` (`Accuracy` when the result says flip: false); with
 * `step`, `[lfw][2000]XNorm: …` as the training callback prints.
 *
 * @example
 * console.log(formatVerificationTable({ lfw, cfp_fp, agedb_30 }));
 */
export function formatVerificationTable(
  results: Record<string, { accuracy: number; accuracyStd: number; xnorm: number; flip?: boolean }>,
  options?: { step?: number },
): string {
  if (!is.object(results)) throw invalidParameterError('results', 'an object of named results', results);
  const o = optionsObject(options, 'options');
  assertKnownOptions(o, 'formatVerificationTable', ['step']);
  const step = o.step === undefined ? '' : `[${o.step}]`;
  const out: string[] = [];
  for (const [name, r] of Object.entries(results)) {
    if (!r || typeof r.accuracy !== 'number') throw invalidParameterError(`results.${name}`, 'verification metrics', r);
    out.push(`[${name}]${step}XNorm: ${pyFixed(r.xnorm, 6)}`);
    out.push(`[${name}]${step}${r.flip === false ? 'Accuracy' : 'Accuracy-Flip'}: ${pyFixed(r.accuracy, 5)}+-${pyFixed(r.accuracyStd, 5)}`);
  }
  return out.join('\n');
}

/**
 * insightface's IJB table (eval_ijbc.py's prettytable): one row per result, TAR (%) at the ROC point
 * nearest each FAR, two decimals.
 *
 * @example
 * console.log(formatIjbTable({ 'r100-IJBC': result }));
 */
export function formatIjbTable(results: Record<string, Pick<RocMetrics, 'tarAtFar'>>): string {
  if (!is.object(results)) throw invalidParameterError('results', 'an object of named results', results);
  const header = ['Methods', '1e-06', '1e-05', '0.0001', '0.001', '0.01', '0.1']; // Python's str() of the targets
  const rows = Object.entries(results).map(([name, r]) => {
    if (!r || !r.tarAtFar) throw invalidParameterError(`results.${name}`, 'ROC metrics with tarAtFar', r);
    return [name, ...FAR_TARGETS.map(([k]) => pyFixed(100 * r.tarAtFar[k].nearest, 2))];
  });
  const width = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)) + 2);
  const center = (s: string, w: number): string => {
    const left = Math.floor((w - s.length) / 2);
    return ' '.repeat(left) + s + ' '.repeat(w - s.length - left);
  };
  const rule = `+${width.map((w) => '-'.repeat(w)).join('+')}+`;
  const line = (r: string[]): string => `|${r.map((c, i) => center(c, width[i])).join('|')}|`;
  return [rule, line(header), rule, ...rows.map(line), rule].join('\n');
}

// ---------------------------------------------------------------------------------------------
// JSON

/** A log-spaced subsample of a long ROC that keeps its ends and the points near every target FAR. */
function sampleRoc(roc: RocMetrics['roc']): RocMetrics['roc'] & { sampled?: boolean; points?: number } {
  const L = roc.fpr.length;
  if (L <= MAX_ROC_POINTS) return roc;
  const keep = new Set<number>([0, L - 1]);
  // Every point whose (log FPR, TPR) moves by a visible amount since the last kept one.
  let lastX = -Infinity;
  let lastY = -Infinity;
  for (let i = 0; i < L; i++) {
    const x = Math.log10(Math.max(roc.fpr[i], 1e-7));
    if (Math.abs(x - lastX) > 7 / 1500 || Math.abs(roc.tpr[i] - lastY) > 1 / 1500) {
      keep.add(i);
      lastX = x;
      lastY = roc.tpr[i];
    }
  }
  const idx = [...keep].sort((a, b) => a - b);
  return { fpr: idx.map((i) => roc.fpr[i]), tpr: idx.map((i) => roc.tpr[i]), thresholds: idx.map((i) => roc.thresholds[i]), sampled: true, points: L };
}

function jsonable(results: Record<string, ReportEntry>): unknown {
  const out: Record<string, unknown> = {};
  for (const [name, r] of Object.entries(results)) {
    const { scores: _s, labels: _l, ...rest } = r;
    out[name] = { ...rest, roc: sampleRoc(r.roc) };
    if (rest.groups && is.object(rest.groups)) {
      const g: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(rest.groups)) g[k] = { ...v, roc: sampleRoc(v.roc) };
      (out[name] as Record<string, unknown>).groups = g;
    }
  }
  return out;
}

/** report.json's text: non-finite numbers as null, typed arrays as plain arrays, long ROCs sampled. */
export function reportJson(results: Record<string, ReportEntry>, options?: ReportOptions): string {
  const o = optionsObject(options, 'options');
  return `${JSON.stringify(
    { title: o.title ?? 'facecuda evaluation', info: o.info ?? {}, results: jsonable(results) },
    (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? null : ArrayBuffer.isView(v) ? Array.from(v as unknown as ArrayLike<number>) : v),
    1,
  )}\n`;
}

// ---------------------------------------------------------------------------------------------
// HTML

const esc = (s: unknown): string => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2'];
const pct = (x: number, d = 2): string => (Number.isFinite(x) ? `${pyFixed(100 * x, d)}%` : '–');
const fix = (x: number, d = 4): string => (Number.isFinite(x) ? pyFixed(x, d) : x === Infinity ? '∞' : '–');

/** The ROC of every result on one chart: FAR (log, 1e−6 … 1) against TAR. */
function rocSvg(results: [string, ReportEntry][]): string {
  const W = 640;
  const H = 420;
  const m = { l: 56, r: 16, t: 16, b: 44 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const X = (fpr: number): number => m.l + ((Math.log10(Math.max(fpr, 1e-6)) + 6) / 6) * pw;
  const Y = (tpr: number): number => m.t + (1 - tpr) * ph;
  const parts: string[] = [];
  for (let e = -6; e <= 0; e++) {
    const x = X(10 ** e).toFixed(1);
    parts.push(`<line class="grid" x1="${x}" y1="${m.t}" x2="${x}" y2="${m.t + ph}"/>`);
    parts.push(`<text class="tick" x="${x}" y="${m.t + ph + 16}" text-anchor="middle">1e${e}</text>`);
  }
  for (let t = 0; t <= 10; t += 2) {
    const y = Y(t / 10).toFixed(1);
    parts.push(`<line class="grid" x1="${m.l}" y1="${y}" x2="${m.l + pw}" y2="${y}"/>`);
    parts.push(`<text class="tick" x="${m.l - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${(t / 10).toFixed(1)}</text>`);
  }
  parts.push(`<rect class="frame" x="${m.l}" y="${m.t}" width="${pw}" height="${ph}"/>`);
  parts.push(`<text class="label" x="${m.l + pw / 2}" y="${H - 6}" text-anchor="middle">False accept rate (log scale)</text>`);
  parts.push(`<text class="label" transform="translate(14 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle">True accept rate</text>`);
  results.forEach(([name, r], i) => {
    const pts: string[] = [];
    let last = '';
    for (let k = 0; k < r.roc.fpr.length; k++) {
      if (!Number.isFinite(r.roc.fpr[k]) || !Number.isFinite(r.roc.tpr[k])) continue;
      const p = `${X(r.roc.fpr[k]).toFixed(1)},${Y(r.roc.tpr[k]).toFixed(1)}`;
      if (p !== last) pts.push(p);
      last = p;
    }
    const c = COLORS[i % COLORS.length];
    parts.push(`<polyline class="roc-curve" data-name="${esc(name)}" fill="none" stroke="${c}" stroke-width="1.8" points="${pts.join(' ')}"/>`);
    parts.push(`<rect x="${m.l + 12}" y="${m.t + 10 + 18 * i}" width="12" height="12" fill="${c}"/><text class="legend" x="${m.l + 30}" y="${m.t + 20 + 18 * i}">${esc(name)} (AUC ${fix(r.auc, 4)})</text>`);
  });
  return `<svg class="roc" xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="ROC curves">${parts.join('')}</svg>`;
}

/** Genuine and impostor score histograms of one result (each normalized to its own total). */
function histogramSvg(name: string, r: ReportEntry): string {
  const W = 640;
  const H = 260;
  const m = { l: 40, r: 16, t: 16, b: 40 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const { genuine, impostor, min, max } = r.histogram;
  const tot = (a: number[]): number => a.reduce((s, v) => s + v, 0) || 1;
  const gT = tot(genuine);
  const iT = tot(impostor);
  const top = Math.max(...genuine.map((v) => v / gT), ...impostor.map((v) => v / iT), 1e-9);
  const bw = pw / genuine.length;
  const parts: string[] = [`<rect class="frame" x="${m.l}" y="${m.t}" width="${pw}" height="${ph}"/>`];
  const bars = (a: number[], total: number, cls: string): void => {
    a.forEach((v, i) => {
      if (!v) return;
      const h = (v / total / top) * ph;
      parts.push(`<rect class="bar ${cls}" x="${(m.l + i * bw).toFixed(1)}" y="${(m.t + ph - h).toFixed(1)}" width="${Math.max(bw - 0.5, 0.5).toFixed(1)}" height="${h.toFixed(1)}"/>`);
    });
  };
  bars(impostor, iT, 'impostor');
  bars(genuine, gT, 'genuine');
  for (let k = 0; k <= 4; k++) {
    const v = min + ((max - min) * k) / 4;
    parts.push(`<text class="tick" x="${(m.l + (pw * k) / 4).toFixed(1)}" y="${m.t + ph + 16}" text-anchor="middle">${v.toFixed(1)}</text>`);
  }
  const t3 = r.tarAtFar['1e-3']?.threshold;
  if (Number.isFinite(t3)) {
    const x = (m.l + ((t3 - min) / (max - min)) * pw).toFixed(1);
    parts.push(`<line class="threshold" x1="${x}" y1="${m.t}" x2="${x}" y2="${m.t + ph}"/><text class="legend" x="${x}" y="${m.t + 12}" dx="4">FAR 1e-3</text>`);
  }
  parts.push(`<text class="label" x="${m.l + pw / 2}" y="${H - 6}" text-anchor="middle">Cosine score — genuine (blue) and impostor (red) pairs, each as a fraction of its total</text>`);
  return `<svg class="histogram" data-name="${esc(name)}" xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="score histograms of ${esc(name)}">${parts.join('')}</svg>`;
}

function thresholdTable(r: ReportEntry): string {
  const rows = [...FAR_TARGETS].reverse().map(([k]) => {
    const p = r.tarAtFar[k];
    return `<tr><td>${k}</td><td>${fix(p.threshold, 4)}</td><td>${pct(p.tar)}</td><td>${Number.isFinite(p.far) ? p.far.toExponential(2) : '–'}</td><td>${pct(p.nearest)}</td><td>${pct(p.interpolated)}</td></tr>`;
  });
  return `<table class="thresholds"><thead><tr><th>target FAR</th><th>threshold (cosine ≥)</th><th>TAR at it</th><th>FAR at it</th><th>TAR, nearest ROC point (insightface)</th><th>TAR, interpolated</th></tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

function summary(r: ReportEntry): string {
  const cells: [string, string][] = [];
  const rec = r as unknown as Record<string, unknown>;
  const n = (k: string): number | undefined => (typeof rec[k] === 'number' ? (rec[k] as number) : undefined);
  if (n('pairs') !== undefined) cells.push(['pairs', `${n('pairs')} (${n('genuine')} genuine, ${n('impostor')} impostor)`]);
  if (n('accuracy') !== undefined) cells.push([r.flip === false ? 'Accuracy' : 'Accuracy-Flip', `${fix(n('accuracy')!, 5)} ± ${fix(n('accuracyStd')!, 5)}`]);
  if (n('threshold') !== undefined) cells.push(['mean best distance threshold', fix(n('threshold')!, 3)]);
  if (n('xnorm') !== undefined) cells.push(['XNorm', fix(n('xnorm')!, 6)]);
  if (n('val') !== undefined) cells.push(['VAL@FAR=1e-3 (10-fold)', `${fix(n('val')!, 5)} ± ${fix(n('valStd')!, 5)} (FAR ${fix(n('far')!, 5)})`]);
  if (n('templates') !== undefined) cells.push(['templates / images', `${n('templates')} / ${n('images')}`]);
  cells.push(['AUC', fix(r.auc, 6)], ['EER', pct(r.eer, 3)]);
  return `<table class="summary"><tbody>${cells.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`).join('')}</tbody></table>`;
}

function groupTable(r: ReportEntry): string {
  const groups = r.groups;
  if (!groups || !is.object(groups)) return '';
  const keys = ['1e-2', '1e-3', '1e-4'];
  const head = `<tr><th>group</th><th>pairs</th><th>accuracy</th><th>AUC</th><th>EER</th>${keys.map((k) => `<th>TAR / FAR at global FAR ${k} threshold</th>`).join('')}</tr>`;
  const rows = Object.entries(groups).map(([g, m]) => `<tr><td>${esc(g)}</td><td>${esc(m.pairs)}</td><td>${fix(m.accuracy ?? NaN, 5)}</td><td>${fix(m.auc, 4)}</td><td>${pct(m.eer, 2)}</td>${keys
    .map((k) => {
      const a = m.atGlobalThreshold?.[k];
      return a ? `<td>${pct(a.tar)} / ${Number.isFinite(a.far) ? a.far.toExponential(2) : '–'}</td>` : '<td>–</td>';
    }).join('')}</tr>`);
  return `<h3>Per group</h3><table class="groups"><thead>${head}</thead><tbody>${rows.join('')}</tbody></table>`;
}

/** The report page's HTML (see the module notes). */
export function renderReportHtml(results: Record<string, ReportEntry>, options?: ReportOptions): string {
  if (!is.object(results) || Object.keys(results).length === 0) throw invalidParameterError('results', 'an object of one or more named results', results);
  const o = optionsObject(options, 'options');
  assertKnownOptions(o, 'renderReportHtml', ['title', 'info']);
  const title = (o.title as string | undefined) ?? 'facecuda evaluation';
  assertString(title, 'options.title');
  const entries = Object.entries(results);
  entries.forEach(([name, r]) => {
    if (!r || !r.roc || !r.tarAtFar || !r.histogram) throw invalidParameterError(`results.${name}`, 'evaluation metrics (roc, tarAtFar, histogram)', r);
  });
  const info = Object.entries((o.info as Record<string, unknown>) ?? {}).map(([k, v]) => `<li><b>${esc(k)}</b>: ${esc(v)}</li>`).join('');
  const sections = entries.map(([name, r]) => `<section><h2>${esc(name)}</h2>${summary(r)}<h3>Thresholds</h3>${thresholdTable(r)}<h3>Score distributions</h3>${histogramSvg(name, r)}${groupTable(r)}</section>`);
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title>
<style>
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;max-width:960px}
table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}
table.summary th{text-align:left}svg{display:block;margin:8px 0}.grid{stroke:#e4e4e4}.frame{fill:none;stroke:#888}
.tick,.legend{font-size:11px;fill:#444}.label{font-size:12px;fill:#222}.bar.genuine{fill:#1f77b4;opacity:.65}.bar.impostor{fill:#d62728;opacity:.55}
.threshold{stroke:#222;stroke-dasharray:4 3}section{border-top:1px solid #ddd;margin-top:24px}
</style></head>
<body>
<h1>${esc(title)}</h1>
${info ? `<ul class="info">${info}</ul>` : ''}
<p>Scores are cosine similarities of L2-normalized embeddings; a pair is accepted when its score is at or above the threshold. TAR at a target FAR is shown at the most permissive threshold whose FAR is at most the target (the last ROC point with FAR ≤ target), at the ROC point nearest the target (the number insightface prints) and interpolated on the ROC.</p>
<h2>ROC</h2>
${rocSvg(entries)}
${sections.join('\n')}
</body></html>
`;
}

/**
 * Writes `report.json` and `report.html` into `dir` (created if needed), each atomically.
 *
 * @example
 * await writeReport('out/eval', { lfw: await evaluateVerification(embedder, 'lfw.bin') }, { info: { model: 'r50' } });
 * @returns the two paths
 */
export async function writeReport(dir: string, results: Record<string, ReportEntry>, options?: ReportOptions): Promise<{ json: string; html: string }> {
  assertString(dir, 'dir');
  const html = renderReportHtml(results, options);
  const json = reportJson(results, options);
  try {
    await fsp.mkdir(dir, { recursive: true });
  } catch (e) {
    throw ioError('create', dir, e);
  }
  const out = { json: path.join(dir, 'report.json'), html: path.join(dir, 'report.html') };
  await atomicWriteFile(out.json, new TextEncoder().encode(json));
  await atomicWriteFile(out.html, new TextEncoder().encode(html));
  return out;
}
