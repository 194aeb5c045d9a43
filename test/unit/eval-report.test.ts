// Reports: report.json/report.html written atomically, the page offline and self-contained (no
// scripts, no external URLs), rendered by headless Chromium when it is installed (the SVG ROC curves,
// histogram bars and the threshold table must be in the DOM), and insightface's text tables.
import { execFileSync, spawnSync } from 'child_process';
import { promises as fsp } from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  formatIjbTable, formatVerificationTable, ijbMetrics, pyFixed, renderReportHtml, verificationMetrics, writeReport,
  type VerificationMetrics,
} from '../../lib/eval';
import { rng, SEED } from '../helpers';

function chromium(): string | null {
  for (const c of ['chromium', 'chromium-browser', 'google-chrome']) {
    const r = spawnSync('sh', ['-c', `command -v ${c}`], { encoding: 'utf8' });
    if (r.status === 0 && r.stdout.trim()) return r.stdout.trim();
  }
  return null;
}
const CHROMIUM = chromium();
if (!CHROMIUM) console.log('eval-report: headless Chromium rendering test skipped: no chromium on PATH (Debian: apt-get install chromium)');

function synthetic(seed: number, P: number, noise: number, groups = false): VerificationMetrics {
  const r = rng(seed);
  const D = 16;
  const e1 = new Float32Array(P * D);
  const e2 = new Float32Array(P * D);
  const issame: boolean[] = [];
  for (let k = 0; k < P; k++) {
    const s = r() < 0.5;
    issame.push(s);
    for (let d = 0; d < D; d++) {
      const b = r() * 2 - 1;
      e1[k * D + d] = b + noise * (r() - 0.5);
      e2[k * D + d] = (s ? b : r() * 2 - 1) + noise * (r() - 0.5);
    }
  }
  return verificationMetrics(e1, e2, issame, groups ? { groups: issame.map((_, k) => (k % 3 === 0 ? 'dark' : 'light')) } : {});
}

let dir: string;
beforeAll(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'facecuda-report-'));
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

describe('text tables', () => {
  test("formatVerificationTable prints insightface's lines", () => {
    const t = formatVerificationTable({ lfw: { accuracy: 0.998166666, accuracyStd: 0.0022912878, xnorm: 22.5, flip: true }, cfp: { accuracy: 0.9, accuracyStd: 0, xnorm: 1, flip: false } });
    expect(t).toBe('[lfw]XNorm: 22.500000\n[lfw]Accuracy-Flip: 0.99817+-0.00229\n[cfp]XNorm: 1.000000\n[cfp]Accuracy: 0.90000+-0.00000');
    expect(formatVerificationTable({ lfw: { accuracy: 1, accuracyStd: 0, xnorm: 2 } }, { step: 2000 })).toMatch(/^\[lfw\]\[2000\]XNorm: 2.000000\n\[lfw\]\[2000\]Accuracy-Flip: 1.00000\+-0.00000$/);
    expect(() => formatVerificationTable({ lfw: {} as never })).toThrow(/results.lfw/);
  });

  test("pyFixed rounds exact ties half to even like Python's %f", () => {
    expect(pyFixed(0.125, 2)).toBe('0.12'); // Python: '%.2f' % 0.125 == '0.12'
    expect(pyFixed(0.375, 2)).toBe('0.38');
    expect(pyFixed(0.015625, 5)).toBe('0.01562');
    expect(pyFixed(2.5, 0)).toBe('2');
    expect(pyFixed(0.1 + 0.2, 5)).toBe('0.30000');
    expect(pyFixed(-0.125, 2)).toBe('-0.12');
  });

  test('formatIjbTable: prettytable layout, TAR% at the nearest ROC point', () => {
    const r = rng(SEED);
    const n = 2000;
    const scores = Float64Array.from({ length: n }, (_, i) => (i % 4 === 0 ? 0.5 : 0) + r() * 0.6);
    const labels = Uint8Array.from({ length: n }, (_, i) => (i % 4 === 0 ? 1 : 0));
    const m = ijbMetrics(scores, labels);
    const t = formatIjbTable({ 'IJBC-r50': m }).split('\n');
    expect(t[1]).toMatch(/\|\s+Methods\s+\|\s+1e-06\s+\|\s+1e-05\s+\|\s+0\.0001\s+\|\s+0\.001\s+\|\s+0\.01\s+\|\s+0\.1\s+\|/);
    expect(t[3]).toContain(pyFixed(100 * m.tarAtFar['1e-1'].nearest, 2));
    expect(t).toHaveLength(5);
  });
});

describe('writeReport', () => {
  test('writes report.json (null for non-finite, no typed-array objects) and a self-contained report.html', async () => {
    const lfw = synthetic(SEED, 600, 1.2, true);
    const hard = synthetic(SEED + 1, 300, 2.5);
    const out = await writeReport(path.join(dir, 'r1'), { lfw, 'hard <pack>': hard }, { info: { model: 'fake', step: 3 } });
    const json = JSON.parse(await fsp.readFile(out.json, 'utf8'));
    expect(json.info).toEqual({ model: 'fake', step: 3 });
    expect(json.results.lfw.roc.thresholds[0]).toBeNull();
    expect(json.results.lfw.accuracy).toBe(lfw.accuracy);
    expect(Object.keys(json.results.lfw.groups)).toEqual(['dark', 'light']);
    const html = await fsp.readFile(out.html, 'utf8');
    expect(html).not.toMatch(/<script|https?:\/\/(?!www\.w3\.org\/2000\/svg)|<link|@import|url\(/i);
    expect(html).toContain('hard &#60;pack&#62;');
    expect((html.match(/<polyline class="roc-curve"/g) ?? []).length).toBe(2);
    expect((html.match(/<svg class="histogram"/g) ?? []).length).toBe(2);
    expect(html).toContain('<table class="thresholds">');
    expect(html).toContain('<table class="groups">');
    // No temporary files left behind.
    expect((await fsp.readdir(path.join(dir, 'r1'))).sort()).toEqual(['report.html', 'report.json']);
  });

  test('long ROCs are sampled in report.json; the page stays small', async () => {
    const r = rng(SEED + 5);
    const n = 200000;
    const scores = Float64Array.from({ length: n }, (_, i) => (i % 10 === 0 ? 0.3 : 0) + r());
    const labels = Uint8Array.from({ length: n }, (_, i) => (i % 10 === 0 ? 1 : 0));
    const m = ijbMetrics(scores, labels);
    expect(m.roc.fpr.length).toBeGreaterThan(4000);
    const out = await writeReport(path.join(dir, 'r2'), { IJBC: { ...m, scores, labels } });
    const json = JSON.parse(await fsp.readFile(out.json, 'utf8'));
    expect(json.results.IJBC.roc.sampled).toBe(true);
    expect(json.results.IJBC.roc.points).toBe(m.roc.fpr.length);
    expect(json.results.IJBC.scores).toBeUndefined();
    expect((await fsp.stat(out.html)).size).toBeLessThan(2e6);
  });

  test('argument errors', async () => {
    expect(() => renderReportHtml({})).toThrow(/results/);
    expect(() => renderReportHtml({ x: {} as never })).toThrow(/results.x/);
    await expect(writeReport(42 as unknown as string, {})).rejects.toThrow(/dir/);
  });

  (CHROMIUM ? test : test.skip)('headless Chromium renders the page: SVG curves, bars and tables in the DOM', async () => {
    const lfw = synthetic(SEED + 2, 600, 1.0, true);
    const out = await writeReport(path.join(dir, 'r3'), { lfw, agedb: synthetic(SEED + 3, 600, 1.6) });
    const profile = await fsp.mkdtemp(path.join(os.tmpdir(), 'facecuda-chromium-'));
    try {
      const args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', `--user-data-dir=${profile}`, '--virtual-time-budget=2000'];
      const dom = execFileSync(CHROMIUM!, [...args, '--dump-dom', `file://${out.html}`], { encoding: 'utf8', timeout: 60000, stdio: ['ignore', 'pipe', 'ignore'] });
      expect((dom.match(/<polyline class="roc-curve"/g) ?? []).length).toBe(2);
      expect((dom.match(/<rect class="bar genuine"/g) ?? []).length).toBeGreaterThan(5);
      expect((dom.match(/<rect class="bar impostor"/g) ?? []).length).toBeGreaterThan(5);
      expect(dom).toContain('<table class="thresholds">');
      // A screenshot, to see the page is painted (a PNG of some size).
      const png = path.join(dir, 'r3', 'shot.png');
      execFileSync(CHROMIUM!, [...args, `--screenshot=${png}`, '--window-size=1000,1400', `file://${out.html}`], { timeout: 60000, stdio: 'ignore' });
      const bytes = await fsp.readFile(png);
      expect(bytes.subarray(1, 4).toString()).toBe('PNG');
      expect(bytes.length).toBeGreaterThan(10000);
    } finally {
      await fsp.rm(profile, { recursive: true, force: true });
    }
  });
});
