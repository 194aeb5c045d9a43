// Evaluation benchmark: `npm run bench -- eval [--quick] [--device cpu|cuda] [--json f]`.
//
// Protocol half: the SPEC §10.2 verification protocol through the public API (lib/eval's
// verificationMetrics: row normalization, squared distances, 10-fold accuracy over 400 thresholds,
// VAL@FAR 1e-3 over 4000 thresholds, the ROC, TAR@FAR 1e-6..1e-1, AUC, EER, histograms) at P = 6000
// (LFW, AgeDB-30, CALFW, CPLFW) and 12 000 pairs, D = 512, random float32 embeddings with a
// same-identity structure: median time, pairs/s, and the metric part alone
// (verificationMetricsFromDistances, i.e. without the P × D distance pass). Also the IJB scoring of
// template pairs (ijbMetrics: sklearn ROC + TAR@FAR) at 1 M and 15.7 M pairs (IJB-C's count) unless
// --quick. CPU only: the protocol is host code whatever --device says.
//
// Embedding half: images/s of an embedder through the EmbedderLike interface that
// evaluateVerification uses (JPEG 112×112 crops in batches of 128, flip off and on: 512 images on
// the CPU, 12 000 = LFW's 2 × 6000 on CUDA). It runs when
// dist/embed exports a FaceEmbedder that `makeEmbedder` below can construct, and prints the reason
// it was skipped otherwise.
'use strict';
const fs = require('fs');
const path = require('path');
const h = require('./harness');

const D = 512;

function pairData(P, seed) {
  const e1 = h.randomF32(P * D, seed);
  const e2 = h.randomF32(P * D, seed + 1);
  const issame = [];
  for (let k = 0; k < P; k++) {
    const same = k % 2 === 0;
    issame.push(same);
    // Same pairs: e2 = e1 + noise, so the distances spread over [0, 4] as real embeddings do.
    if (same) for (let d = 0; d < D; d++) e2[k * D + d] = e1[k * D + d] + 1.6 * e2[k * D + d];
  }
  return { e1, e2, issame };
}

/**
 * The embedder for the images/s half, or { skipped, reason }. The one place that knows how lib/embed
 * builds a FaceEmbedder: FaceEmbedder.create({ model }) over a randomly initialized IResNet-50
 * (throughput does not depend on the weights).
 */
async function makeEmbedder(device) {
  const file = path.join(__dirname, '..', 'dist', 'embed', 'index.js');
  if (!fs.existsSync(file)) return { skipped: true, reason: 'dist/embed is not built (no lib/embed yet)' };
  let mod;
  try {
    mod = require(file);
  } catch (e) {
    return { skipped: true, reason: `dist/embed failed to load: ${e.message}` };
  }
  if (typeof mod.FaceEmbedder !== 'function') return { skipped: true, reason: 'dist/embed exports no FaceEmbedder' };
  try {
    const fc = require('../dist/index.js');
    const backbone = fc.Backbone.create('r50', { seed: 1, ...(device === 'cpu' ? {} : { device }) });
    const embedder = await mod.FaceEmbedder.create({ model: backbone });
    if (typeof embedder.embed !== 'function') return { skipped: true, reason: 'FaceEmbedder has no embed(images, { flip })' };
    return { embedder, description: `FaceEmbedder, IResNet-50 (random weights), ${device}` };
  } catch (e) {
    return { skipped: true, reason: `could not construct a FaceEmbedder: ${e.message}` };
  }
}

async function syntheticJpegs(n) {
  const sharp = require('sharp');
  const distinct = [];
  for (let i = 0; i < 64; i++) {
    const raw = Buffer.from(h.randomF32(112 * 112 * 3, 1000 + i).map((x) => (x + 1) * 127.5));
    distinct.push(new Uint8Array(await sharp(raw, { raw: { width: 112, height: 112, channels: 3 } }).jpeg({ quality: 95 }).toBuffer()));
  }
  return Array.from({ length: n }, (_, i) => distinct[i % distinct.length]);
}

async function run(opts) {
  const ev = require('../dist/eval/index.js');
  const fc = require('../dist/index.js');
  const info = await fc.system.info();
  const device = opts.device || 'cpu';
  h.printHeader('eval: verification protocol (SPEC §10.2) and IJB scoring, host code', info, [`D       ${D}`]);
  const records = [];
  const rows = [];
  const sizes = opts.quick ? [6000] : [6000, 12000];
  for (const P of sizes) {
    const { e1, e2, issame } = pairData(P, 17 + P);
    const full = await h.measure(() => ev.verificationMetrics(e1, e2, issame, { dim: D }), { minReps: 5, minSeconds: 2 });
    const m = ev.verificationMetrics(e1, e2, issame, { dim: D });
    // The metric part alone, from the distances.
    const dist = new Float64Array(P);
    for (let k = 0; k < P; k++) {
      let na = 0;
      let nb = 0;
      let ab = 0;
      for (let d = k * D; d < (k + 1) * D; d++) {
        na += e1[d] * e1[d];
        nb += e2[d] * e2[d];
        ab += e1[d] * e2[d];
      }
      dist[k] = Math.max(0, 2 - (2 * ab) / Math.sqrt(na * nb));
    }
    const metric = await h.measure(() => ev.verificationMetricsFromDistances(dist, issame), { minReps: 5, minSeconds: 2 });
    const rec = { name: `verification-P${P}`, pairs: P, dim: D, seconds: full.median, pairsPerSecond: P / full.median, metricSeconds: metric.median, accuracy: m.accuracy };
    records.push(rec);
    rows.push([rec.name, `${h.fixed(full.median * 1000, 1)} ms`, `${h.fixed(full.min * 1000, 1)}..${h.fixed(full.max * 1000, 1)}`, h.fixed(rec.pairsPerSecond, 0), `${h.fixed(metric.median * 1000, 1)} ms`, h.fixed(m.accuracy, 4)]);
  }
  h.printTable(['case', 'verificationMetrics', 'min..max', 'pairs/s', 'metrics from distances', 'accuracy'], rows);

  const ijbRows = [];
  for (const n of opts.quick ? [1000000] : [1000000, 15658489]) {
    const scores = new Float64Array(n);
    const labels = new Uint8Array(n);
    const u = h.randomF32(n, 99);
    for (let i = 0; i < n; i++) {
      labels[i] = i % 80 === 0 ? 1 : 0; // IJB-C: 19,557 genuine of 15.66 M
      scores[i] = labels[i] ? 0.5 + 0.4 * u[i] : 0.25 * u[i];
    }
    const t = await h.measure(() => ev.ijbMetrics(scores, labels), { warmup: n > 2e6 ? 0 : 1, minReps: n > 2e6 ? 1 : 3, minSeconds: 0, maxReps: 3 });
    records.push({ name: `ijb-roc-${n}`, pairs: n, seconds: t.median, pairsPerSecond: n / t.median });
    ijbRows.push([`ijb-roc-${n}`, `${h.fixed(t.median, 3)} s`, h.fixed(n / t.median / 1e6, 2)]);
  }
  h.printTable(['case', 'ijbMetrics', 'M pairs/s'], ijbRows);

  const got = await makeEmbedder(device);
  if (got.skipped) {
    process.stdout.write(`eval: embedding images/s skipped: ${got.reason}\n`);
    records.push({ name: 'embed', skipped: got.reason });
    return records;
  }
  // A CPU does tens of r50 images/s: a few batches measure the rate; a GPU gets the LFW-sized 12 000.
  const batch = 128;
  const n = device === 'cpu' ? (opts.quick ? 128 : 512) : opts.quick ? 1280 : 12000;
  const images = await syntheticJpegs(n);
  const embRows = [];
  for (const flip of [false, true]) {
    let sec;
    try {
      await got.embedder.embed(images.slice(0, Math.min(n, 32)), { flip });
      const t0 = h.now();
      for (let s = 0; s < n; s += batch) await got.embedder.embed(images.slice(s, s + batch), { flip });
      sec = h.now() - t0;
    } catch (e) {
      process.stdout.write(`eval: embedding failed (flip ${flip}): ${e.code || ''} ${e.message}\n`);
      records.push({ name: `embed-flip${flip ? 1 : 0}`, error: `${e.code || ''} ${e.message}` });
      continue;
    }
    records.push({ name: `embed-flip${flip ? 1 : 0}`, images: n, seconds: sec, imagesPerSecond: n / sec, embedder: got.description });
    embRows.push([`embed ${n} images, flip ${flip}`, `${h.fixed(sec, 2)} s`, h.fixed(n / sec, 0)]);
  }
  process.stdout.write(`embedder: ${got.description}\n`);
  h.printTable(['case', 'time', 'images/s'], embRows);
  return records;
}

module.exports = { run };
