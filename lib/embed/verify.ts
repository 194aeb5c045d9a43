/**
 * 1:1 decisions on embeddings: the cosine score of two faces, the threshold for a target false-accept
 * rate, and a calibration that turns any score into an estimated false-match rate — the honest answer
 * to "what is the match percentage": not a probability that two faces are the same person, but how
 * often two different people score at least this high.
 *
 * Conventions (the same everywhere in this file and in {@link verify}):
 * - a pair is accepted ("match") iff score ≥ threshold (inclusive);
 * - the impostor acceptance rate at t is FAR(t) = #{impostor scores ≥ t} / #impostors, and a
 *   threshold meets a target iff FAR(t) ≤ far (a rate equal to the target is allowed);
 * - the set of thresholds meeting the target is the open interval (s, ∞) where s is the (K+1)-th
 *   largest impostor score, K = the largest count with K/#impostors ≤ far. It has no smallest
 *   element, so {@link calibrateThreshold} returns the smallest float64 above s (every float32 or
 *   float64 score above s is ≥ it, s itself is not): no threshold accepts more genuine pairs while
 *   meeting the target. With far ≥ 1 every threshold qualifies and the result is −Infinity.
 *
 * {@link ScoreCalibration}: built from labelled scores of a held-out set (pairs of different people,
 * and optionally of the same person), it estimates the false-match rate of a score as
 * (k + 1)/(n + 1), k = the impostor scores ≥ it out of n: the empirical tail, shifted by one
 * pseudo-count so that it never claims more than the data can support. Beyond the largest impostor
 * score it stays at 1/(n + 1) — n comparisons cannot vouch for a rate much below 1/n, so the estimate
 * is not extrapolated with a fitted tail. It is non-increasing in the score and lies in
 * [1/(n + 1), 1]. Large sets are stored compactly: the `maxExact` largest impostor (and genuine)
 * scores exactly, the rest as knots (score, count ≥ score) read conservatively (impostor counts
 * rounded up, genuine counts down).
 *
 * Saved with a model as a sidecar JSON file, `<model without extension>.calibration.json` (e.g.
 * `r50.safetensors` → `r50.calibration.json`), written atomically; {@link FaceEmbedder.create} loads it
 * when it opens a model by path. A sidecar keeps the model file untouched (safetensors metadata would
 * mean rewriting a large file) and applies to the model's .onnx export as well.
 *
 * Sorting and counting run in slices with the event loop free between them (a million scores per
 * slice at most), so calibrating millions of pairs (IJB-C has 15.6M) does not stall a server.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';

import { FacecudaError, invalidParameterError, outOfRangeError } from '../errors';
import { atomicWriteFile, ioError } from '../fsutil';
import { version } from '../system';
import { assertKnownOptions, assertNumber, is, optionsObject } from '../validate';

// #region helpers

/** Elements per slice of work between yields to the event loop. */
const SLICE = 1 << 18;

const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

const scratch = new DataView(new ArrayBuffer(8));

/** The smallest float64 greater than x (x finite). */
export function nextUp(x: number): number {
  if (Number.isNaN(x) || x === Infinity) return x;
  if (x === 0) return Number.MIN_VALUE;
  scratch.setFloat64(0, x);
  const bits = scratch.getBigUint64(0);
  scratch.setBigUint64(0, x > 0 ? bits + 1n : bits - 1n);
  return scratch.getFloat64(0);
}

function tag(v: unknown): string {
  return Object.prototype.toString.call(v);
}

/** A vector of finite numbers (Float32Array, Float64Array or number[]) as a Float64Array. */
function readVector(v: unknown, name: string): Float64Array {
  let out: Float64Array;
  if (tag(v) === '[object Float32Array]' || tag(v) === '[object Float64Array]') out = Float64Array.from(v as ArrayLike<number>);
  else if (Array.isArray(v)) {
    if (!v.every((x) => typeof x === 'number')) throw invalidParameterError(name, 'a Float32Array, Float64Array or array of numbers', v);
    out = Float64Array.from(v as number[]);
  } else throw invalidParameterError(name, 'a Float32Array, Float64Array or array of numbers', v);
  for (let i = 0; i < out.length; i++) {
    if (!Number.isFinite(out[i])) throw outOfRangeError(`${name}[${i}]`, 'a finite number', out[i]);
  }
  return out;
}

/** Labels: booleans, or numbers 0/1 (1 = genuine, same person). */
function readLabels(v: unknown, name: string, n: number): Uint8Array {
  const ok = Array.isArray(v) || (ArrayBuffer.isView(v) && !/Big(Int|Uint)64Array|DataView/.test(tag(v)));
  if (!ok) throw invalidParameterError(name, 'an array of booleans (true = same person) or of 0/1', v);
  const arr = v as ArrayLike<unknown>;
  if (arr.length !== n) throw new FacecudaError('SHAPE_MISMATCH', `${name} has ${arr.length} entries but scores has ${n}`);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const x = arr[i];
    if (x === true || x === 1) out[i] = 1;
    else if (x !== false && x !== 0) throw invalidParameterError(`${name}[${i}]`, 'a boolean or 0/1', x);
  }
  return out;
}

/** Ascending copy of `values`, sorted in slices with yields between them (bottom-up merge sort). */
async function sortAscending(values: Float64Array): Promise<Float64Array> {
  const n = values.length;
  let a = values.slice();
  for (let i = 0; i < n; i += SLICE) {
    a.subarray(i, Math.min(n, i + SLICE)).sort();
    if (i + SLICE < n) await yieldToLoop();
  }
  let b = new Float64Array(n);
  let budget = 0;
  for (let width = SLICE; width < n; width *= 2) {
    for (let lo = 0; lo < n; lo += 2 * width) {
      const mid = Math.min(n, lo + width);
      const hi = Math.min(n, lo + 2 * width);
      let i = lo;
      let j = mid;
      let k = lo;
      while (i < mid && j < hi) b[k++] = a[i] <= a[j] ? a[i++] : a[j++];
      while (i < mid) b[k++] = a[i++];
      while (j < hi) b[k++] = a[j++];
      budget += hi - lo;
      if (budget >= 4 * SLICE) {
        budget = 0;
        await yieldToLoop();
      }
    }
    [a, b] = [b, a];
  }
  return a;
}

/** First index i with a[i] ≥ s (a ascending), or a.length. */
function lowerBound(a: ArrayLike<number>, s: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid] < s) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** First index i with a[i] > s (a ascending), or a.length. */
function upperBound(a: ArrayLike<number>, s: number): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid] <= s) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The largest K with K/n ≤ far (K in [0, n]). */
function allowedCount(far: number, n: number): number {
  let k = Math.min(n, Math.max(0, Math.floor(far * n)));
  while (k < n && (k + 1) / n <= far) k++;
  while (k > 0 && k / n > far) k--;
  return k;
}

async function splitByLabel(scores: Float64Array, labels: Uint8Array): Promise<{ genuine: Float64Array; impostor: Float64Array }> {
  let ng = 0;
  for (let i = 0; i < labels.length; i++) ng += labels[i];
  const genuine = new Float64Array(ng);
  const impostor = new Float64Array(labels.length - ng);
  let g = 0;
  let m = 0;
  for (let i = 0; i < scores.length; i++) {
    if (labels[i]) genuine[g++] = scores[i];
    else impostor[m++] = scores[i];
    if ((i + 1) % (4 * SLICE) === 0) await yieldToLoop();
  }
  return { genuine, impostor };
}

// #endregion

// #region verify

/** Options of {@link verify}. */
export interface VerifyOptions {
  /** Accept iff score ≥ threshold. */
  threshold: number;
  /** A calibration to also report the score's estimated false-match rate. */
  calibration?: ScoreCalibration;
}

/** What {@link verify} returns. */
export interface VerifyResult {
  /** Cosine similarity in [−1, 1]. */
  score: number;
  /** score ≥ threshold. */
  match: boolean;
  /** With `calibration`: {@link ScoreCalibration.falseMatchRate} of the score. */
  falseMatchRate?: number;
}

/**
 * The 1:1 decision for two embeddings: cosine similarity (unit or raw vectors; accumulated in
 * float64) and whether it reaches the threshold.
 *
 * @throws TypeError for non-vectors; `SHAPE_MISMATCH` for different lengths; RangeError for a zero
 *   vector, non-finite values or a bad threshold
 * @example
 * const { score, match } = verify(idPhoto, selfie, { threshold: 0.36 });
 */
export function verify(a: Float32Array | Float64Array | number[], b: Float32Array | Float64Array | number[], options: VerifyOptions): VerifyResult {
  // Validate arguments
  const x = readVector(a, 'a');
  const y = readVector(b, 'b');
  if (x.length === 0) throw outOfRangeError('a length', 'at least 1', 0);
  if (x.length !== y.length) throw new FacecudaError('SHAPE_MISMATCH', `a has ${x.length} values but b has ${y.length}`);
  if (!is.object(options)) throw invalidParameterError('options', 'an options object with a threshold', options);
  assertKnownOptions(options as unknown as Record<string, unknown>, 'verify', ['threshold', 'calibration']);
  const { threshold, calibration } = options;
  if (typeof threshold !== 'number' || Number.isNaN(threshold)) throw invalidParameterError('threshold', 'a number', threshold);
  if (calibration !== undefined && !(calibration instanceof ScoreCalibration)) throw invalidParameterError('calibration', 'a ScoreCalibration', calibration);
  // Interpret options
  let dot = 0;
  let nx = 0;
  let ny = 0;
  for (let i = 0; i < x.length; i++) {
    dot += x[i] * y[i];
    nx += x[i] * x[i];
    ny += y[i] * y[i];
  }
  if (nx === 0) throw outOfRangeError('a', 'a vector with a non-zero norm', 'a zero vector');
  if (ny === 0) throw outOfRangeError('b', 'a vector with a non-zero norm', 'a zero vector');
  const score = Math.max(-1, Math.min(1, dot / Math.sqrt(nx * ny)));
  const result: VerifyResult = { score, match: score >= threshold };
  if (calibration) result.falseMatchRate = calibration.falseMatchRate(score);
  return result;
}

// #endregion

// #region calibrateThreshold

/** Options of {@link calibrateThreshold}. */
export interface CalibrateOptions {
  /** Target impostor acceptance rate in [0, 1], e.g. 1e-4. */
  far: number;
}

/** What {@link calibrateThreshold} returns. */
export interface ThresholdCalibration {
  /** Accept iff score ≥ threshold (−Infinity when far ≥ 1). */
  threshold: number;
  /** Genuine acceptance rate at the threshold (fraction of genuine scores ≥ it). */
  tar: number;
  /** The achieved impostor acceptance rate (≤ the target). */
  far: number;
  genuineCount: number;
  impostorCount: number;
}

/**
 * The smallest threshold whose impostor acceptance rate is at most `far`, with the genuine
 * acceptance rate it achieves (conventions in the file header). For eKYC decisions: calibrate on a
 * held-out set of genuine and impostor pairs scored by the same model and pipeline.
 *
 * @param scores pair scores (cosine)
 * @param labels true / 1 for same-person pairs, false / 0 for impostor pairs
 * @throws TypeError / RangeError for bad arguments; `SHAPE_MISMATCH` when the lengths differ;
 *   RangeError when there is no impostor or no genuine score
 * @example
 * const { threshold, tar } = await calibrateThreshold(scores, issame, { far: 1e-4 });
 */
export async function calibrateThreshold(
  scores: Float32Array | Float64Array | number[], labels: ArrayLike<boolean | number>, options: CalibrateOptions,
): Promise<ThresholdCalibration> {
  // Validate arguments
  const s = readVector(scores, 'scores');
  const l = readLabels(labels, 'labels', s.length);
  if (!is.object(options)) throw invalidParameterError('options', 'an options object with far', options);
  assertKnownOptions(options as unknown as Record<string, unknown>, 'calibrateThreshold', ['far']);
  assertNumber(options.far, 'far', 0, 1);
  const { genuine, impostor } = await splitByLabel(s, l);
  if (impostor.length === 0) throw outOfRangeError('labels', 'at least one impostor pair (false / 0)', 'none');
  if (genuine.length === 0) throw outOfRangeError('labels', 'at least one genuine pair (true / 1)', 'none');
  // Interpret options
  const imp = await sortAscending(impostor);
  const n = imp.length;
  const k = allowedCount(options.far, n);
  const threshold = k >= n ? -Infinity : nextUp(imp[n - 1 - k]);
  const accepted = n - lowerBound(imp, threshold);
  let tp = 0;
  for (let i = 0; i < genuine.length; i++) {
    if (genuine[i] >= threshold) tp++;
    if ((i + 1) % (4 * SLICE) === 0) await yieldToLoop();
  }
  return { threshold, tar: tp / genuine.length, far: accepted / n, genuineCount: genuine.length, impostorCount: n };
}

// #endregion

// #region ScoreCalibration

/** A set of scores as stored: the largest exactly, the rest as knots (see the file header). */
export interface ScoreTailJSON {
  /** Number of scores. */
  count: number;
  /** The largest min(count, maxExact) scores, ascending. */
  top: number[];
  /** Below top: [score, number of scores ≥ score], ascending by score (empty when top holds them all). */
  knots: [number, number][];
}

/** The JSON form of a {@link ScoreCalibration} (also the sidecar file's content). */
export interface ScoreCalibrationJSON {
  kind: 'facecuda.score-calibration';
  version: 1;
  /** Score of a pair: the cosine of the two embeddings. */
  score: 'cosine';
  impostor: ScoreTailJSON;
  genuine: ScoreTailJSON | null;
  /** The facecuda version that fitted it. */
  createdBy: string;
  /** Free text: which model, data and pipeline it was fitted on. */
  description: string;
}

/** Options of {@link ScoreCalibration.fit}. */
export interface CalibrationFitOptions {
  /** Scores kept exactly per class (default 20000; the largest ones, where the rates are small). */
  maxExact?: number;
  /** Knots for the rest (default 2000). */
  maxKnots?: number;
  /** Recorded as `description`. */
  description?: string;
}

class ScoreTail {
  private constructor(readonly count: number, readonly top: Float64Array, readonly knotScores: Float64Array, readonly knotCounts: Float64Array) {}

  static fromSorted(x: Float64Array, maxExact: number, maxKnots: number): ScoreTail {
    const n = x.length;
    const m = Math.min(n, maxExact);
    const rest = n - m;
    const top = x.slice(n - m);
    if (rest === 0) return new ScoreTail(n, top, new Float64Array(0), new Float64Array(0));
    const kk = Math.min(rest, Math.max(2, maxKnots));
    const idx = new Set<number>();
    for (let j = 0; j < kk; j++) idx.add(Math.round((j * (rest - 1)) / Math.max(1, kk - 1)));
    idx.add(0);
    idx.add(rest - 1);
    const sortedIdx = [...idx].sort((p, q) => p - q);
    const scores: number[] = [];
    const counts: number[] = [];
    for (const i of sortedIdx) {
      const v = x[i];
      if (scores.length && scores[scores.length - 1] === v) continue;
      scores.push(v);
      counts.push(n - lowerBound(x, v));
    }
    return new ScoreTail(n, top, Float64Array.from(scores), Float64Array.from(counts));
  }

  static fromJSON(j: unknown, name: string): ScoreTail {
    const bad = (what: string): FacecudaError => new FacecudaError('CORRUPT_FILE', `calibration ${name}: ${what}`);
    if (!is.object(j)) throw bad('is not an object');
    const { count, top, knots } = j as Record<string, unknown>;
    if (!is.integer(count) || count < 1) throw bad('count is not a positive integer');
    if (!Array.isArray(top) || !top.every((v) => is.number(v))) throw bad('top is not an array of numbers');
    if (!Array.isArray(knots) || !knots.every((k) => Array.isArray(k) && k.length === 2 && is.number(k[0]) && is.integer(k[1]))) throw bad('knots is not an array of [score, count] pairs');
    const t = Float64Array.from(top as number[]);
    const ks = Float64Array.from((knots as [number, number][]).map((k) => k[0]));
    const kc = Float64Array.from((knots as [number, number][]).map((k) => k[1]));
    if (t.length < 1 || t.length > count) throw bad(`top holds ${t.length} scores for a count of ${count}`);
    for (let i = 1; i < t.length; i++) if (!(t[i - 1] <= t[i])) throw bad('top is not ascending');
    if ((ks.length === 0) !== (t.length === count)) throw bad('knots must be present exactly when top does not hold every score');
    for (let i = 0; i < ks.length; i++) {
      if (i > 0 && !(ks[i - 1] < ks[i] && kc[i - 1] >= kc[i])) throw bad('knots are not ascending with non-increasing counts');
      if (ks[i] > t[0] || kc[i] > count || kc[i] < t.length) throw bad('a knot lies outside the stored range');
    }
    if (ks.length > 0 && kc[0] !== count) throw bad('the first knot must be the smallest score (count = all scores)');
    return new ScoreTail(count, t, ks, kc);
  }

  toJSON(): ScoreTailJSON {
    return { count: this.count, top: Array.from(this.top), knots: Array.from(this.knotScores, (s, i) => [s, this.knotCounts[i]] as [number, number]) };
  }

  /** #{scores ≥ s}: exact in the stored top; below it, rounded up ('upper') or down ('lower'). */
  countAtLeast(s: number, mode: 'upper' | 'lower'): number {
    const m = this.top.length;
    if (s > this.top[0] || this.knotScores.length === 0) return m - lowerBound(this.top, s);
    const ks = this.knotScores;
    const last = ks.length - 1;
    if (s > ks[last]) return m;
    if (mode === 'upper') {
      const j = lowerBound(ks, s) - 1; // largest knot < s
      return j < 0 ? this.count : this.knotCounts[j];
    }
    const j = lowerBound(ks, s); // smallest knot ≥ s
    return this.knotCounts[j];
  }

  /** Every stored score, ascending. */
  stored(): Float64Array {
    const out = new Float64Array(this.knotScores.length + this.top.length);
    out.set(this.knotScores, 0);
    out.set(this.top, this.knotScores.length);
    return out;
  }
}

/**
 * Score → estimated false-match rate, fitted on labelled scores (conventions and estimate in the
 * file header). Immutable; JSON round trip with {@link toJSON} / {@link ScoreCalibration.fromJSON};
 * saved next to a model with {@link save}.
 *
 * @example
 * const cal = await ScoreCalibration.fit(scores, issame, { description: 'r50, in-house selfie set' });
 * cal.falseMatchRate(0.42);        // e.g. 3.1e-5: about 3 in 100 000 impostor pairs score ≥ 0.42
 * await cal.save('r50.safetensors'); // → r50.calibration.json
 */
export class ScoreCalibration {
  readonly #impostor: ScoreTail;
  readonly #genuine: ScoreTail | null;
  /** Free text recorded with the calibration. */
  readonly description: string;
  /** The facecuda version that fitted it. */
  readonly createdBy: string;

  private constructor(impostor: ScoreTail, genuine: ScoreTail | null, description: string, createdBy: string) {
    this.#impostor = impostor;
    this.#genuine = genuine;
    this.description = description;
    this.createdBy = createdBy;
  }

  /**
   * Fits a calibration on labelled pair scores (at least one impostor pair; genuine pairs optional,
   * used for {@link genuineAcceptRate}).
   *
   * @throws TypeError / RangeError for bad arguments; `SHAPE_MISMATCH` when the lengths differ
   */
  static async fit(scores: Float32Array | Float64Array | number[], labels: ArrayLike<boolean | number>, options?: CalibrationFitOptions): Promise<ScoreCalibration> {
    // Apply defaults
    const opts = optionsObject(options, 'options');
    assertKnownOptions(opts, 'ScoreCalibration.fit', ['maxExact', 'maxKnots', 'description']);
    const maxExact = opts.maxExact ?? 20000;
    const maxKnots = opts.maxKnots ?? 2000;
    const description = opts.description ?? '';
    // Validate arguments
    const s = readVector(scores, 'scores');
    const l = readLabels(labels, 'labels', s.length);
    if (!is.integer(maxExact)) throw invalidParameterError('maxExact', 'an integer', maxExact);
    if (maxExact < 1) throw outOfRangeError('maxExact', 'an integer ≥ 1', maxExact);
    if (!is.integer(maxKnots)) throw invalidParameterError('maxKnots', 'an integer', maxKnots);
    if (maxKnots < 2) throw outOfRangeError('maxKnots', 'an integer ≥ 2', maxKnots);
    if (!is.string(description)) throw invalidParameterError('description', 'a string', description);
    const { genuine, impostor } = await splitByLabel(s, l);
    if (impostor.length === 0) throw outOfRangeError('labels', 'at least one impostor pair (false / 0)', 'none');
    // Interpret options
    const imp = ScoreTail.fromSorted(await sortAscending(impostor), maxExact, maxKnots);
    const gen = genuine.length > 0 ? ScoreTail.fromSorted(await sortAscending(genuine), maxExact, maxKnots) : null;
    return new ScoreCalibration(imp, gen, description, `facecuda ${version()}`);
  }

  /**
   * Rebuilds a calibration from {@link toJSON}'s output (or the parsed sidecar file).
   * @throws `CORRUPT_FILE` for anything that is not a valid calibration
   */
  static fromJSON(json: unknown): ScoreCalibration {
    const bad = (what: string): FacecudaError => new FacecudaError('CORRUPT_FILE', `calibration: ${what}`);
    if (!is.object(json)) throw bad('not an object');
    const j = json as Partial<ScoreCalibrationJSON>;
    if (j.kind !== 'facecuda.score-calibration') throw bad(`kind is ${JSON.stringify(j.kind)}, not 'facecuda.score-calibration'`);
    if (j.version !== 1) throw bad(`version ${JSON.stringify(j.version)} is not supported (this facecuda reads version 1)`);
    if (j.score !== 'cosine') throw bad(`score ${JSON.stringify(j.score)} is not supported`);
    const impostor = ScoreTail.fromJSON(j.impostor, 'impostor');
    const genuine = j.genuine === null || j.genuine === undefined ? null : ScoreTail.fromJSON(j.genuine, 'genuine');
    return new ScoreCalibration(impostor, genuine, is.string(j.description) ? j.description : '', is.string(j.createdBy) ? j.createdBy : 'unknown');
  }

  /**
   * Reads a calibration saved with {@link save}: give the model's path or the sidecar's.
   * @throws `IO_ERROR` when the file cannot be read; `CORRUPT_FILE` when it is not a calibration
   */
  static async load(modelOrSidecarPath: string): Promise<ScoreCalibration> {
    if (!is.string(modelOrSidecarPath)) throw invalidParameterError('path', 'a string', modelOrSidecarPath);
    const file = calibrationPath(modelOrSidecarPath);
    let text: string;
    try {
      text = await fsp.readFile(file, 'utf8');
    } catch (err) {
      throw ioError('read', file, err);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new FacecudaError('CORRUPT_FILE', `${file}: not valid JSON (${(err as Error).message})`);
    }
    try {
      return ScoreCalibration.fromJSON(parsed);
    } catch (err) {
      throw new FacecudaError('CORRUPT_FILE', `${file}: ${(err as Error).message}`);
    }
  }

  /** Number of impostor scores it was fitted on. */
  get impostorCount(): number {
    return this.#impostor.count;
  }

  /** Number of genuine scores it was fitted on (0 if none). */
  get genuineCount(): number {
    return this.#genuine ? this.#genuine.count : 0;
  }

  /**
   * Estimated false-match rate of `score`: (k + 1)/(n + 1), k = impostor scores ≥ score (rounded up
   * where stored as knots), n = impostors. Non-increasing in the score, in [1/(n + 1), 1].
   */
  falseMatchRate(score: number): number {
    if (typeof score !== 'number' || Number.isNaN(score)) throw invalidParameterError('score', 'a number', score);
    return (this.#impostor.countAtLeast(score, 'upper') + 1) / (this.#impostor.count + 1);
  }

  /** The empirical impostor acceptance rate k/n at threshold `score` (k rounded up where stored as knots). */
  impostorAcceptRate(score: number): number {
    if (typeof score !== 'number' || Number.isNaN(score)) throw invalidParameterError('score', 'a number', score);
    return this.#impostor.countAtLeast(score, 'upper') / this.#impostor.count;
  }

  /** Fraction of genuine scores ≥ `score` (rounded down where stored as knots); NaN without genuine scores. */
  genuineAcceptRate(score: number): number {
    if (typeof score !== 'number' || Number.isNaN(score)) throw invalidParameterError('score', 'a number', score);
    if (!this.#genuine) return NaN;
    return this.#genuine.countAtLeast(score, 'lower') / this.#genuine.count;
  }

  /**
   * The smallest threshold whose impostor acceptance rate ({@link impostorAcceptRate}) is ≤ far:
   * with every score stored exactly, the same threshold as {@link calibrateThreshold}.
   */
  thresholdFor(far: number): number {
    assertNumber(far, 'far', 0, 1);
    const k = allowedCount(far, this.#impostor.count);
    if (k >= this.#impostor.count) return -Infinity;
    const stored = this.#impostor.stored();
    // countAtLeast(nextUp(stored[i]), 'upper') is non-increasing in i: find the first i that fits.
    let lo = 0;
    let hi = stored.length - 1; // nextUp(max) always fits (count 0)
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#impostor.countAtLeast(nextUp(stored[mid]), 'upper') <= k) hi = mid;
      else lo = mid + 1;
    }
    return nextUp(stored[lo]);
  }

  toJSON(): ScoreCalibrationJSON {
    return {
      kind: 'facecuda.score-calibration',
      version: 1,
      score: 'cosine',
      impostor: this.#impostor.toJSON(),
      genuine: this.#genuine ? this.#genuine.toJSON() : null,
      createdBy: this.createdBy,
      description: this.description,
    };
  }

  /**
   * Writes the calibration next to a model (`r50.safetensors` → `r50.calibration.json`), or to the
   * given `*.calibration.json` path, atomically.
   * @returns the file written
   * @throws `IO_ERROR` when it cannot be written
   */
  async save(modelOrSidecarPath: string): Promise<string> {
    if (!is.string(modelOrSidecarPath)) throw invalidParameterError('path', 'a string', modelOrSidecarPath);
    const file = calibrationPath(modelOrSidecarPath);
    await atomicWriteFile(file, new TextEncoder().encode(JSON.stringify(this.toJSON())));
    return file;
  }
}

/**
 * The sidecar path of a model's calibration: `<dir>/<name without extension>.calibration.json`; a
 * path already ending in `.calibration.json` is returned as it is.
 * @example calibrationPath('models/r50.safetensors'); // 'models/r50.calibration.json'
 */
export function calibrationPath(modelPath: string): string {
  if (!is.string(modelPath) || modelPath.length === 0) throw invalidParameterError('path', 'a non-empty string', modelPath);
  if (modelPath.endsWith('.calibration.json')) return modelPath;
  const p = path.parse(modelPath);
  return path.join(p.dir, `${p.name}.calibration.json`);
}

// #endregion
