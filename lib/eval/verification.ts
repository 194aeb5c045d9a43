/**
 * The verification protocol of arcface_torch (SPEC §10.2) on pair embeddings, its extensions (VAL,
 * ROC, TAR@FAR, AUC, EER, per-group metrics) and the loop over a `.bin` pack.
 *
 * Exactness. Distances are float64 from the given values, rows normalized as sklearn's `normalize`
 * (x / ‖x‖, a zero row stays zero), sums in numpy's pairwise order (numeric.ts). Accuracy uses the
 * 400 thresholds i·0.01 (np.arange(0, 4, 0.01) is exactly these), strict `dist < t`, sklearn
 * KFold(10) without shuffling, and np.argmax's first maximum; the per-fold counts come from sorting
 * each fold once, so the integers (and therefore every accuracy) are those of the 400 full passes
 * the definition describes (test/fixtures/gen_eval.py runs those passes and the tests compare).
 * VAL@FAR 1e−3 is calculate_val: 4000 thresholds i·0.001, far_train per threshold, the threshold
 * interpolated as scipy's interp1d(kind='slinear') (the segment from the last far ≤ target to the
 * next; exactly on a far value: that value's last threshold), 0 when the largest far is below the
 * target; a fold without same (different) pairs gives NaN for its VAL (FAR), where Python raises.
 *
 * Scores. The ROC, TAR@FAR, AUC and EER are on the cosine similarity score = 1 − dist/2 (exact for
 * unit vectors; for the reference's float64 the same formula), so thresholds read as cosines.
 */
import { readBinPack, type BinPack } from '../data/binpack';
import { FacecudaError, invalidParameterError, outOfRangeError } from '../errors';
import { assertBool, assertInteger, assertKnownOptions, is, optionsObject } from '../validate';
import type { EmbedderLike, EmbedResult } from './embedder';
import { npMean, npStd, pairwiseSum } from './numeric';
import { countAtLeast, FAR_TARGETS, rocMetrics, splitSorted, type FarKey, type RocMetrics } from './roc';

const NFOLDS = 10;

/** Metrics of one set of pairs (the whole set, or one group). */
export interface PairMetrics extends RocMetrics {
  pairs: number;
  genuine: number;
  impostor: number;
  /** Mean 10-fold accuracy, a fraction (NaN with fewer than 10 pairs). */
  accuracy: number;
  /** Population std of the 10 fold accuracies. */
  accuracyStd: number;
  /** Mean of the 10 best squared-L2-distance thresholds. */
  threshold: number;
  foldAccuracies: number[];
  foldThresholds: number[];
  /** VAL (TAR) at FAR 1e−3, mean over the folds (calculate_val). */
  val: number;
  valStd: number;
  /** Mean FAR reached on the held-out folds by calculate_val. */
  far: number;
}

/** TAR and FAR of one group at the global threshold for a target FAR. */
export interface GroupAtThreshold {
  /** The global conservative score threshold (`tarAtFar[key].threshold` of all pairs). */
  threshold: number;
  tar: number;
  far: number;
}

/** Metrics of one group of pairs. */
export interface GroupMetrics extends PairMetrics {
  /** TAR/FAR of this group at the global thresholds: the spread fairness audits look at. */
  atGlobalThreshold: Record<FarKey, GroupAtThreshold>;
}

/** What {@link verificationMetrics} returns. */
export interface VerificationMetrics extends PairMetrics {
  /** Mean raw L2 norm (arcface_torch's XNorm). */
  xnorm: number;
  /** Per-group metrics when `options.groups` was given, keyed by group name (sorted). */
  groups?: Record<string, GroupMetrics>;
}

/** Options of {@link verificationMetrics}. */
export interface VerificationMetricsOptions {
  /** Embedding dimension (default: embeddings1.length / issame.length). */
  dim?: number;
  /** A group label per pair (age band, skin tone, quality bin, …). */
  groups?: readonly string[];
  /** Raw norms to average for XNorm (default: the norms of the given rows, before normalization). */
  norms?: ArrayLike<number>;
  /** Histogram bins over scores [−1, 1] (default 100). */
  histogramBins?: number;
}

/** Squared L2 distances of the normalized rows, and the raw row norms (emb1's rows, then emb2's). */
function distances(e1: ArrayLike<number>, e2: ArrayLike<number>, P: number, D: number): { dist: Float64Array; norms: Float64Array } {
  const dist = new Float64Array(P);
  const norms = new Float64Array(2 * P);
  const a = new Float64Array(D);
  const b = new Float64Array(D);
  const sq = new Float64Array(D);
  for (let k = 0; k < P; k++) {
    const o = k * D;
    for (let d = 0; d < D; d++) sq[d] = e1[o + d] * e1[o + d];
    const na = Math.sqrt(pairwiseSum(sq, 0, D));
    for (let d = 0; d < D; d++) sq[d] = e2[o + d] * e2[o + d];
    const nb = Math.sqrt(pairwiseSum(sq, 0, D));
    if (!Number.isFinite(na)) throw outOfRangeError(`embeddings1 row ${k}`, 'finite values', na);
    if (!Number.isFinite(nb)) throw outOfRangeError(`embeddings2 row ${k}`, 'finite values', nb);
    norms[k] = na;
    norms[P + k] = nb;
    const da = na === 0 ? 1 : na;
    const db = nb === 0 ? 1 : nb;
    for (let d = 0; d < D; d++) {
      a[d] = e1[o + d] / da;
      b[d] = e2[o + d] / db;
      const x = a[d] - b[d];
      sq[d] = x * x;
    }
    dist[k] = pairwiseSum(sq, 0, D);
  }
  return { dist, norms };
}

/** sklearn KFold(10, shuffle=False): [start, end) of each fold. */
function folds(n: number): [number, number][] {
  const out: [number, number][] = [];
  const base = Math.floor(n / NFOLDS);
  const extra = n % NFOLDS;
  let start = 0;
  for (let f = 0; f < NFOLDS; f++) {
    const len = base + (f < extra ? 1 : 0);
    out.push([start, start + len]);
    start += len;
  }
  return out;
}

/** For thresholds i·step (i < count): how many same / different pairs of [a, b) have dist < threshold. */
function foldCounts(dist: Float64Array, same: Uint8Array, a: number, b: number, step: number, count: number) {
  const s: number[] = [];
  const d: number[] = [];
  for (let i = a; i < b; i++) (same[i] ? s : d).push(dist[i]);
  const ss = Float64Array.from(s).sort();
  const ds = Float64Array.from(d).sort();
  const sameBelow = new Int32Array(count);
  const diffBelow = new Int32Array(count);
  let ps = 0;
  let pd = 0;
  for (let t = 0; t < count; t++) {
    const thr = t * step;
    while (ps < ss.length && ss[ps] < thr) ps++;
    while (pd < ds.length && ds[pd] < thr) pd++;
    sameBelow[t] = ps;
    diffBelow[t] = pd;
  }
  return { sameBelow, diffBelow, nSame: ss.length, nDiff: ds.length };
}

type Counts = ReturnType<typeof foldCounts>;

/** Training-set counts: the sum over every fold but `f`. */
function trainCounts(all: Counts[], f: number, count: number): Counts {
  const sameBelow = new Int32Array(count);
  const diffBelow = new Int32Array(count);
  let nSame = 0;
  let nDiff = 0;
  all.forEach((c, g) => {
    if (g === f) return;
    for (let t = 0; t < count; t++) {
      sameBelow[t] += c.sameBelow[t];
      diffBelow[t] += c.diffBelow[t];
    }
    nSame += c.nSame;
    nDiff += c.nDiff;
  });
  return { sameBelow, diffBelow, nSame, nDiff };
}

/** calculate_roc's 10-fold accuracy (also lib/data/baseline.ts's accuracyFromDistances). @internal */
export function accuracyProtocol(dist: Float64Array, same: Uint8Array) {
  const step = 0.01;
  const count = 400;
  const fs = folds(dist.length);
  const per = fs.map(([a, b]) => foldCounts(dist, same, a, b, step, count));
  const foldAccuracies: number[] = [];
  const foldThresholds: number[] = [];
  for (let f = 0; f < NFOLDS; f++) {
    const tr = trainCounts(per, f, count);
    let best = 0;
    let bestCorrect = -1;
    for (let t = 0; t < count; t++) {
      const correct = tr.sameBelow[t] + (tr.nDiff - tr.diffBelow[t]);
      if (correct > bestCorrect) {
        bestCorrect = correct;
        best = t;
      }
    }
    const c = per[f];
    const [a, b] = fs[f];
    foldAccuracies.push((c.sameBelow[best] + (c.nDiff - c.diffBelow[best])) / (b - a));
    foldThresholds.push(best * step);
  }
  return { accuracy: npMean(foldAccuracies), accuracyStd: npStd(foldAccuracies), threshold: npMean(foldThresholds), foldAccuracies, foldThresholds };
}

/** calculate_val at FAR `target` (also lib/data/baseline.ts's tarFromDistances). @internal */
export function valProtocol(dist: Float64Array, same: Uint8Array, target = 1e-3) {
  const step = 0.001;
  const count = 4000;
  const fs = folds(dist.length);
  const per = fs.map(([a, b]) => foldCounts(dist, same, a, b, step, count));
  const vals: number[] = [];
  const fars: number[] = [];
  const x = new Float64Array(count);
  for (let f = 0; f < NFOLDS; f++) {
    const tr = trainCounts(per, f, count);
    let thr = 0;
    if (tr.nDiff > 0) {
      for (let t = 0; t < count; t++) x[t] = tr.diffBelow[t] / tr.nDiff;
      if (x[count - 1] >= target) {
        let m = 0;
        while (m + 1 < count && x[m + 1] <= target) m++;
        if (m >= count - 1) thr = (count - 1) * step;
        else if (x[m] === target) thr = m * step;
        else {
          const w = (target - x[m]) / (x[m + 1] - x[m]);
          thr = (1 - w) * (m * step) + w * ((m + 1) * step);
        }
      }
    }
    const [a, b] = fs[f];
    let ta = 0;
    let fa = 0;
    let ns = 0;
    let nd = 0;
    for (let i = a; i < b; i++) {
      const acc = dist[i] < thr;
      if (same[i]) {
        ns++;
        if (acc) ta++;
      } else {
        nd++;
        if (acc) fa++;
      }
    }
    vals.push(ns ? ta / ns : NaN);
    fars.push(nd ? fa / nd : NaN);
  }
  return { val: npMean(vals), valStd: npStd(vals), far: npMean(fars) };
}

function pairMetrics(dist: Float64Array, same: Uint8Array, bins: number): { metrics: PairMetrics; scores: Float64Array } {
  const P = dist.length;
  const scores = new Float64Array(P);
  for (let i = 0; i < P; i++) scores[i] = 1 - dist[i] / 2;
  const { genuine, impostor } = splitSorted(scores, same);
  const folded = P >= NFOLDS
    ? { ...accuracyProtocol(dist, same), ...valProtocol(dist, same) }
    : { accuracy: NaN, accuracyStd: NaN, threshold: NaN, foldAccuracies: [], foldThresholds: [], val: NaN, valStd: NaN, far: NaN };
  return {
    metrics: { pairs: P, genuine: genuine.length, impostor: impostor.length, ...folded, ...rocMetrics(genuine, impostor, bins) },
    scores,
  };
}

function readIssame(issame: unknown): Uint8Array {
  if (!Array.isArray(issame) && !(issame instanceof Uint8Array)) throw invalidParameterError('issame', 'an array of booleans', issame);
  const n = issame.length;
  const same = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const v = (issame as ArrayLike<unknown>)[i];
    if (issame instanceof Uint8Array) {
      if (v !== 0 && v !== 1) throw outOfRangeError(`issame[${i}]`, '0 or 1', v);
    } else if (typeof v !== 'boolean') throw invalidParameterError(`issame[${i}]`, 'a boolean', v);
    same[i] = v ? 1 : 0;
  }
  return same;
}

/**
 * The SPEC §10.2 protocol and its extensions on pair embeddings: row k of `embeddings1` and of
 * `embeddings2` is pair k. Rows may be raw or unit (each is normalized).
 *
 * @example
 * const m = verificationMetrics(e1, e2, issame, { dim: 512 });
 * console.log(m.accuracy, m.accuracyStd, m.tarAtFar['1e-4'].nearest);
 * @throws TypeError / RangeError naming the argument for bad input (fewer than 10 pairs, lengths that
 *   are not P × dim, non-finite values, non-boolean flags, groups of the wrong length)
 */
export function verificationMetrics(
  embeddings1: Float32Array | Float64Array,
  embeddings2: Float32Array | Float64Array,
  issame: readonly boolean[] | Uint8Array,
  options?: VerificationMetricsOptions,
): VerificationMetrics {
  const o = optionsObject(options, 'options');
  assertKnownOptions(o, 'verificationMetrics', ['dim', 'groups', 'norms', 'histogramBins']);
  // Apply defaults
  const bins = (o.histogramBins as number | undefined) ?? 100;
  // Validate arguments
  const same = readIssame(issame);
  const P = same.length;
  if (P < NFOLDS) throw outOfRangeError('issame', `at least ${NFOLDS} pairs (10 folds)`, P);
  for (const [name, e] of [['embeddings1', embeddings1], ['embeddings2', embeddings2]] as const) {
    if (!(e instanceof Float32Array) && !(e instanceof Float64Array)) throw invalidParameterError(name, 'a Float32Array or Float64Array', e);
  }
  const dim = (o.dim as number | undefined) ?? embeddings1.length / P;
  if (o.dim !== undefined) assertInteger(o.dim, 'options.dim', 1, 1 << 20);
  else if (!Number.isInteger(dim) || dim < 1) throw outOfRangeError('embeddings1', `a multiple of ${P} values (one row per pair)`, embeddings1.length);
  if (embeddings1.length !== P * dim) throw outOfRangeError('embeddings1', `${P} × ${dim} = ${P * dim} values`, embeddings1.length);
  if (embeddings2.length !== P * dim) throw outOfRangeError('embeddings2', `${P} × ${dim} = ${P * dim} values (as embeddings1)`, embeddings2.length);
  assertInteger(bins, 'options.histogramBins', 1, 100000);
  const groups = o.groups as readonly string[] | undefined;
  if (groups !== undefined) checkGroups(groups, P);
  const norms = o.norms as ArrayLike<number> | undefined;
  if (norms !== undefined && (!norms || typeof norms.length !== 'number' || typeof norms === 'string')) {
    throw invalidParameterError('options.norms', 'an array of numbers', norms);
  }

  const d = distances(embeddings1, embeddings2, P, dim);
  return fromDistances(d.dist, same, npMean(norms ?? d.norms), groups, bins);
}

/** Everything after the distances (shared by the public entry points). */
function fromDistances(dist: Float64Array, same: Uint8Array, xnorm: number, groups: readonly string[] | undefined, bins: number): VerificationMetrics {
  const { metrics, scores } = pairMetrics(dist, same, bins);
  const result: VerificationMetrics = { ...metrics, xnorm };
  if (groups) {
    result.groups = {};
    for (const name of [...new Set(groups)].sort()) {
      const idx: number[] = [];
      groups.forEach((g, i) => {
        if (g === name) idx.push(i);
      });
      const gd = Float64Array.from(idx, (i) => dist[i]);
      const gs = Uint8Array.from(idx, (i) => same[i]);
      const gm = pairMetrics(gd, gs, bins);
      const sorted = splitSorted(Float64Array.from(idx, (i) => scores[i]), gs);
      const at = {} as Record<FarKey, GroupAtThreshold>;
      for (const [key] of FAR_TARGETS) {
        const t = metrics.tarAtFar[key].threshold;
        at[key] = {
          threshold: t,
          tar: sorted.genuine.length ? countAtLeast(sorted.genuine, t) / sorted.genuine.length : NaN,
          far: sorted.impostor.length ? countAtLeast(sorted.impostor, t) / sorted.impostor.length : NaN,
        };
      }
      result.groups[name] = { ...gm.metrics, atGlobalThreshold: at };
    }
  }
  return result;
}

/**
 * {@link verificationMetrics} from precomputed squared L2 distances of normalized embeddings (one
 * per pair, in [0, 4]); XNorm is NaN unless `options.xnorm` is given.
 *
 * @example
 * const m = verificationMetricsFromDistances(dist, issame);
 */
export function verificationMetricsFromDistances(
  dist: Float64Array,
  issame: readonly boolean[] | Uint8Array,
  options?: { groups?: readonly string[]; histogramBins?: number; xnorm?: number },
): VerificationMetrics {
  const o = optionsObject(options, 'options');
  assertKnownOptions(o, 'verificationMetricsFromDistances', ['groups', 'histogramBins', 'xnorm']);
  // Apply defaults
  const bins = (o.histogramBins as number | undefined) ?? 100;
  const xnorm = (o.xnorm as number | undefined) ?? NaN;
  // Validate arguments
  if (!(dist instanceof Float64Array)) throw invalidParameterError('dist', 'a Float64Array', dist);
  const same = readIssame(issame);
  if (same.length < NFOLDS) throw outOfRangeError('issame', `at least ${NFOLDS} pairs (10 folds)`, same.length);
  if (dist.length !== same.length) throw outOfRangeError('dist', `${same.length} distances (one per pair)`, dist.length);
  for (let i = 0; i < dist.length; i++) if (!Number.isFinite(dist[i])) throw outOfRangeError(`dist[${i}]`, 'a finite number', dist[i]);
  assertInteger(bins, 'options.histogramBins', 1, 100000);
  if (o.xnorm !== undefined && typeof o.xnorm !== 'number') throw invalidParameterError('options.xnorm', 'a number', o.xnorm);
  const groups = o.groups as readonly string[] | undefined;
  if (groups !== undefined) checkGroups(groups, same.length);
  return fromDistances(dist, same, xnorm, groups, bins);
}

function checkGroups(groups: unknown, P: number): void {
  if (!Array.isArray(groups)) throw invalidParameterError('options.groups', 'an array of strings (one per pair)', groups);
  if (groups.length !== P) throw outOfRangeError('options.groups', `${P} labels (one per pair)`, groups.length);
  groups.forEach((g, i) => {
    if (!is.string(g)) throw invalidParameterError(`options.groups[${i}]`, 'a string', g);
  });
}

/**
 * Reads an insightface verification pack (SPEC §10.1): Python pickle protocol 2 (or later) of
 * (bins, issame_list) with images as py2 str, bytes or 1-D uint8 numpy arrays. A thin wrapper of
 * {@link readBinPack}, whose restricted pickle machine bounds-checks every length against the file
 * before allocating and refuses any opcode or global a pack does not use.
 *
 * @example
 * const { images, issame } = await loadVerificationBin('faces_emore/lfw.bin'); // 12,000 JPEGs, 6,000 flags
 * @throws TypeError for a bad argument; `IO_ERROR` when the file cannot be read; `CORRUPT_FILE` for
 *   anything but a well-formed pack (also one with no pairs)
 */
export async function loadVerificationBin(source: string | Uint8Array): Promise<BinPack> {
  if (!is.string(source) && !(source instanceof Uint8Array)) throw invalidParameterError('path', 'a file path or the bytes of a .bin pack', source);
  const pack = await readBinPack(source);
  if (pack.issame.length === 0) {
    throw new FacecudaError('CORRUPT_FILE', `Corrupt .bin pack${is.string(source) ? ` '${source}'` : ''}: it holds no pairs`);
  }
  return pack;
}

/** Options of {@link evaluateVerification}. */
export interface EvaluateVerificationOptions {
  /** Flip test-time augmentation (default true, as arcface_torch reports Accuracy-Flip). */
  flip?: boolean;
  /** Images per `embed` call (default 256). */
  batchSize?: number;
  /** Pair groups, passed to {@link verificationMetrics}. */
  groups?: readonly string[];
  /** Called after each batch with (images done, images in all). */
  onProgress?: (done: number, total: number) => void;
}

/** What {@link evaluateVerification} returns. */
export interface VerificationEvaluation extends VerificationMetrics {
  flip: boolean;
  /** Images embedded (2P). */
  images: number;
  dim: number;
  /** Wall seconds spent in `embed` and in the metrics. */
  embedSeconds: number;
  metricSeconds: number;
}

/**
 * Embeds a verification pack and scores it with {@link verificationMetrics}. The embedder does the
 * flip fusion (sum of raw embeddings, then normalization, SPEC §10.2); XNorm is the mean of its
 * `viewNorms` when it reports them (arcface_torch's definition, both views), else of its `norms`.
 *
 * @param pack a pack from {@link loadVerificationBin}, or the path of a `.bin` file
 * @example
 * const m = await evaluateVerification(embedder, await loadVerificationBin('lfw.bin'));
 * console.log(formatVerificationTable({ lfw: m }));
 */
export async function evaluateVerification(
  embedder: EmbedderLike,
  pack: BinPack | string,
  options?: EvaluateVerificationOptions,
): Promise<VerificationEvaluation> {
  const o = optionsObject(options, 'options');
  assertKnownOptions(o, 'evaluateVerification', ['flip', 'batchSize', 'groups', 'onProgress']);
  // Apply defaults
  const flip = (o.flip as boolean | undefined) ?? true;
  const batchSize = (o.batchSize as number | undefined) ?? 256;
  // Validate arguments
  if (!embedder || typeof (embedder as EmbedderLike).embed !== 'function') throw invalidParameterError('embedder', 'an object with an embed(images, { flip }) method', embedder);
  assertBool(flip, 'options.flip');
  assertInteger(batchSize, 'options.batchSize', 1, 1 << 20);
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw invalidParameterError('options.onProgress', 'a function', o.onProgress);
  const p = is.string(pack) ? await loadVerificationBin(pack) : pack;
  if (!p || !Array.isArray(p.images) || !Array.isArray(p.issame)) throw invalidParameterError('pack', '{ images: Uint8Array[], issame: boolean[] } or a path', pack);
  if (p.images.length !== 2 * p.issame.length) throw outOfRangeError('pack.images', `2 × ${p.issame.length} images (two per pair)`, p.images.length);
  if (p.issame.length < NFOLDS) throw outOfRangeError('pack.issame', `at least ${NFOLDS} pairs (10 folds)`, p.issame.length);

  const n = p.images.length;
  const P = p.issame.length;
  let dim = 0;
  let e1 = new Float32Array(0);
  let e2 = new Float32Array(0);
  const norms: number[] = [];
  const viewNorms: number[] = [];
  let allViews = true;
  const t0 = performance.now();
  for (let start = 0; start < n; start += batchSize) {
    const batch = p.images.slice(start, Math.min(n, start + batchSize));
    const r: EmbedResult = await embedder.embed(batch, { flip });
    checkResult(r, batch.length, 'embed', dim);
    if (dim === 0) {
      dim = r.dim;
      e1 = new Float32Array(P * dim);
      e2 = new Float32Array(P * dim);
    }
    for (let i = 0; i < batch.length; i++) {
      const k = start + i;
      (k % 2 === 0 ? e1 : e2).set(r.embeddings.subarray(i * dim, (i + 1) * dim), (k >> 1) * dim);
      norms.push(r.norms[i]);
    }
    if (r.viewNorms) {
      for (let i = 0; i < batch.length; i++) {
        viewNorms.push(r.viewNorms[2 * i]);
        if (flip) viewNorms.push(r.viewNorms[2 * i + 1]);
      }
    } else allViews = false;
    (o.onProgress as EvaluateVerificationOptions['onProgress'])?.(start + batch.length, n);
  }
  const t1 = performance.now();
  const metrics = verificationMetrics(e1, e2, p.issame, {
    dim, norms: allViews ? viewNorms : norms, ...(o.groups !== undefined ? { groups: o.groups as string[] } : {}),
  });
  return { ...metrics, flip, images: n, dim, embedSeconds: (t1 - t0) / 1000, metricSeconds: (performance.now() - t1) / 1000 };
}

/** Checks an embedder's answer for `count` images. */
export function checkResult(r: EmbedResult, count: number, method: string, dim: number): void {
  if (!r || !(r.embeddings instanceof Float32Array) || !(r.norms instanceof Float32Array) || !is.integer(r.dim) || r.dim < 1) {
    throw invalidParameterError(`embedder.${method} result`, '{ embeddings: Float32Array, norms: Float32Array, dim }', r);
  }
  if (dim && r.dim !== dim) throw outOfRangeError(`embedder.${method} result.dim`, `${dim} (as the first batch)`, r.dim);
  if (r.embeddings.length !== count * r.dim) throw outOfRangeError(`embedder.${method} result.embeddings`, `${count} × ${r.dim} values`, r.embeddings.length);
  if (r.norms.length !== count) throw outOfRangeError(`embedder.${method} result.norms`, `${count} values`, r.norms.length);
  if (r.viewNorms !== undefined && (!(r.viewNorms instanceof Float32Array) || r.viewNorms.length !== 2 * count)) {
    throw outOfRangeError(`embedder.${method} result.viewNorms`, `a Float32Array of ${2 * count} values`, r.viewNorms?.length);
  }
}
