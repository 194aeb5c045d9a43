/**
 * Score-based ROC analysis shared by the verification and IJB protocols (SPEC §10.2, §10.3): the
 * ROC exactly as sklearn.metrics.roc_curve (drop_intermediate on, thresholds[0] = +Infinity), TAR at
 * fixed FARs three ways, AUC, EER and score histograms.
 *
 * Scores are similarities (higher = more alike); a pair is accepted at threshold t iff score ≥ t.
 *
 * TAR@FAR, for each target FAR in {1e−6, …, 1e−1}:
 * - `nearest`: insightface's report (eval_ijbc.py): the ROC point whose FPR is nearest the target,
 *   ties to the earlier point of the reversed arrays (the higher FPR / higher TPR one). Its FPR may
 *   exceed the target.
 * - `tar`, `far`, `threshold`: the operating point a deployment would use: the last ROC point with
 *   FPR ≤ target (the most permissive threshold that keeps the FAR at or below the target).
 * - `interpolated`: TPR on the ROC polyline at FPR = target (linear between that point and the next).
 */
import { npSum } from './numeric';

/** Target FARs reported everywhere, keyed as in reports. */
export const FAR_TARGETS: ReadonlyArray<readonly [FarKey, number]> = [
  ['1e-6', 1e-6], ['1e-5', 1e-5], ['1e-4', 1e-4], ['1e-3', 1e-3], ['1e-2', 1e-2], ['1e-1', 1e-1],
];
export type FarKey = '1e-6' | '1e-5' | '1e-4' | '1e-3' | '1e-2' | '1e-1';

/** An ROC curve: parallel arrays, FPR and TPR non-decreasing, thresholds decreasing from +Infinity. */
export interface RocCurve {
  fpr: number[];
  tpr: number[];
  /** Score thresholds: the point's pairs are those with score ≥ threshold (the first is +Infinity). */
  thresholds: number[];
}

/** TAR at one target FAR (see the module notes). */
export interface TarAtFarPoint {
  /** TPR of the ROC point nearest the target FAR (insightface's number). */
  nearest: number;
  /** That point's FPR. */
  nearestFar: number;
  /** That point's score threshold. */
  nearestThreshold: number;
  /** TPR on the ROC polyline at exactly the target FAR. */
  interpolated: number;
  /** TPR at the last ROC point with FPR ≤ target. */
  tar: number;
  /** That point's FPR (≤ target). */
  far: number;
  /** That point's score threshold (+Infinity: nothing is accepted). */
  threshold: number;
}

/** Genuine and impostor score histograms over fixed bins. */
export interface ScoreHistogram {
  /** Lower edge of the first bin. */
  min: number;
  /** Upper edge of the last bin (inclusive). */
  max: number;
  genuine: number[];
  impostor: number[];
}

/** What {@link rocMetrics} returns. */
export interface RocMetrics {
  roc: RocCurve;
  tarAtFar: Record<FarKey, TarAtFarPoint>;
  /** Area under the ROC (trapezoids, as sklearn.metrics.auc). */
  auc: number;
  /** Equal error rate: where FPR = 1 − TPR on the ROC polyline. */
  eer: number;
  /** Score threshold of the first ROC point at or past the EER. */
  eerThreshold: number;
  histogram: ScoreHistogram;
}

/** Ascending copies of the genuine and the impostor scores. */
export function splitSorted(scores: ArrayLike<number>, same: ArrayLike<number | boolean>): { genuine: Float64Array; impostor: Float64Array } {
  let ng = 0;
  for (let i = 0; i < scores.length; i++) if (same[i]) ng++;
  const genuine = new Float64Array(ng);
  const impostor = new Float64Array(scores.length - ng);
  let a = 0;
  let b = 0;
  for (let i = 0; i < scores.length; i++) {
    if (same[i]) genuine[a++] = scores[i];
    else impostor[b++] = scores[i];
  }
  genuine.sort();
  impostor.sort();
  return { genuine, impostor };
}

/**
 * sklearn.metrics.roc_curve(labels, scores) with drop_intermediate=True: one point per distinct
 * score (counts of pairs with score ≥ it), points whose count increments equal both neighbours'
 * dropped, (0, 0) at +Infinity prepended. With no genuine (impostor) pairs TPR (FPR) is NaN.
 */
export function rocFromSorted(genuine: Float64Array, impostor: Float64Array): RocCurve {
  const P = genuine.length;
  const N = impostor.length;
  const roc: RocCurve = { fpr: [0 / N], tpr: [0 / P], thresholds: [Infinity] };
  const emit = (tp: number, fp: number, v: number): void => {
    roc.fpr.push(fp / N);
    roc.tpr.push(tp / P);
    roc.thresholds.push(v);
  };
  // Streaming drop_intermediate: point k is decided when point k + 1 arrives (second differences).
  let i = P - 1;
  let j = N - 1;
  let tp = 0;
  let fp = 0;
  let count = 0;
  let t2 = 0; let f2 = 0; // point k − 1
  let t1 = 0; let f1 = 0; let v1 = 0; // point k (undecided)
  while (i >= 0 || j >= 0) {
    const v = i >= 0 && (j < 0 || genuine[i] >= impostor[j]) ? genuine[i] : impostor[j];
    while (i >= 0 && genuine[i] === v) { tp++; i--; }
    while (j >= 0 && impostor[j] === v) { fp++; j--; }
    if (count === 0) {
      emit(tp, fp, v);
      t2 = tp; f2 = fp;
    } else {
      if (count >= 2 && (fp - 2 * f1 + f2 !== 0 || tp - 2 * t1 + t2 !== 0)) emit(t1, f1, v1);
      if (count >= 2) { t2 = t1; f2 = f1; }
      t1 = tp; f1 = fp; v1 = v;
    }
    count++;
  }
  if (count >= 2) emit(t1, f1, v1);
  return roc;
}

/** TAR at one target FAR on an ROC (see the module notes). */
export function tarAtFarPoint(roc: RocCurve, target: number): TarAtFarPoint {
  const { fpr, tpr, thresholds } = roc;
  const L = fpr.length;
  // insightface: min over (|fpr − x|, index) of the flipped arrays.
  let best = L - 1;
  let bestD = Math.abs(fpr[L - 1] - target);
  for (let k = L - 2; k >= 0; k--) {
    const d = Math.abs(fpr[k] - target);
    if (d < bestD) {
      bestD = d;
      best = k;
    }
  }
  let j = 0;
  while (j + 1 < L && fpr[j + 1] <= target) j++;
  let interpolated = tpr[j];
  if (fpr[j] !== target && j < L - 1) {
    const w = (target - fpr[j]) / (fpr[j + 1] - fpr[j]);
    interpolated = tpr[j] + w * (tpr[j + 1] - tpr[j]);
  }
  return {
    nearest: tpr[best], nearestFar: fpr[best], nearestThreshold: thresholds[best],
    interpolated, tar: tpr[j], far: fpr[j], threshold: thresholds[j],
  };
}

/** Trapezoidal area under the ROC with numpy's pairwise sum (np.trapz(tpr, fpr)). */
function auc(roc: RocCurve): number {
  const { fpr, tpr } = roc;
  const n = fpr.length - 1;
  if (n < 1) return NaN;
  const parts = new Float64Array(n);
  for (let i = 0; i < n; i++) parts[i] = ((fpr[i + 1] - fpr[i]) * (tpr[i + 1] + tpr[i])) / 2;
  return npSum(parts);
}

/** EER on the ROC polyline and the threshold of the first point at or past it. */
function eer(roc: RocCurve): { eer: number; eerThreshold: number } {
  const { fpr, tpr, thresholds } = roc;
  const g = (k: number): number => 1 - tpr[k] - fpr[k];
  let i = 0;
  while (i < fpr.length && !(g(i) <= 0)) i++;
  if (i >= fpr.length) i = fpr.length - 1;
  if (i === 0 || !Number.isFinite(g(i))) return { eer: NaN, eerThreshold: NaN };
  const a = g(i - 1) / (g(i - 1) - g(i));
  return { eer: fpr[i - 1] + a * (fpr[i] - fpr[i - 1]), eerThreshold: thresholds[i] };
}

/** Counts of sorted scores in `bins` equal bins over [min, max] (values outside are clamped). */
function histogram(sorted: Float64Array, min: number, max: number, bins: number): number[] {
  const out = new Array<number>(bins).fill(0);
  const w = (max - min) / bins;
  for (let i = 0; i < sorted.length; i++) {
    let b = Math.floor((sorted[i] - min) / w);
    if (b < 0) b = 0;
    if (b >= bins) b = bins - 1;
    out[b]++;
  }
  return out;
}

/** ROC, TAR@FAR at every target, AUC, EER and histograms of genuine and impostor scores. */
export function rocMetrics(genuine: Float64Array, impostor: Float64Array, bins = 100): RocMetrics {
  const roc = rocFromSorted(genuine, impostor);
  const tarAtFar = {} as Record<FarKey, TarAtFarPoint>;
  for (const [key, target] of FAR_TARGETS) tarAtFar[key] = tarAtFarPoint(roc, target);
  return {
    roc, tarAtFar, auc: auc(roc), ...eer(roc),
    histogram: { min: -1, max: 1, genuine: histogram(genuine, -1, 1, bins), impostor: histogram(impostor, -1, 1, bins) },
  };
}

/** How many of the ascending `sorted` values are ≥ t. */
export function countAtLeast(sorted: Float64Array, t: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid] < t) lo = mid + 1;
    else hi = mid;
  }
  return sorted.length - lo;
}
