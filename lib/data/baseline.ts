/**
 * Verification metrics (SPEC §10.2) and a linear baseline on raw pixels.
 *
 * - {@link verificationAccuracy}: the arcface_torch 10-fold protocol (calculate_roc). Embeddings are
 *   L2-normalized, dist = ‖e1 − e2‖² ∈ [0, 4], thresholds = arange(0, 4, 0.01) (i·0.01, 400 values),
 *   folds = sklearn KFold(10, shuffle=False) (contiguous; the first n mod 10 folds one longer); per
 *   fold the threshold with the best accuracy on the other 9 folds (first, i.e. smallest, among ties),
 *   "same" iff dist < threshold (strict), accuracy = (TP + TN)/n on the held-out fold; the result is
 *   the mean and the population std of the 10 fold accuracies.
 * - {@link tarAtFar}: calculate_val, thresholds arange(0, 4, 0.001); per fold the threshold is
 *   scipy's interp1d(far_train, thresholds, kind='slinear') at the target FAR (0 when no threshold
 *   reaches it), and TAR is measured on the held-out fold; the mean over folds.
 * - {@link linearPixelBaseline}: Fisherfaces. Pixels are area-averaged to about 28×28×3 (a linear
 *   map, which also gives the linear method some robustness to small shifts), centred, projected on
 *   the top principal components (randomized subspace iteration, Halko et al. 2011), then on the
 *   linear discriminants of the training identities (LDA: within-class whitening, then the top
 *   eigenvectors of the whitened between-class scatter). The whole embedding is one affine map of
 *   the raw pixels, learned on training identities only, and is verified on held-out pairs with the
 *   protocol above. It is what "a linear method on raw pixels" scores on a data set.
 *
 * Arithmetic is float64 throughout (dot products of float32 embeddings included).
 */
import { invalidParameterError, outOfRangeError } from '../errors';
import { assertInteger, assertKnownOptions, assertNumber, optionsObject } from '../validate';
import type { RawImage } from './types';
import { accuracyProtocol, valProtocol } from '../eval/verification';

/** Embeddings: one vector per pair side, or all of them in one flat array of n × dim values. */
export type Embeddings = readonly ArrayLike<number>[] | Float32Array | Float64Array;

/** What {@link verificationAccuracy} returns. */
export interface VerificationAccuracy {
  /** Mean of the 10 fold accuracies. */
  accuracy: number;
  /** Population standard deviation of the 10 fold accuracies. */
  std: number;
  /** Mean of the 10 chosen thresholds (on ‖e1 − e2‖² of normalized embeddings). */
  threshold: number;
  foldAccuracies: number[];
  foldThresholds: number[];
}

/** What {@link tarAtFarStats} returns. */
export interface TarAtFar {
  /** Mean TAR (VAL) over the folds. */
  tar: number;
  /** Population std of the fold TARs. */
  std: number;
  /** Mean FAR reached on the held-out folds. */
  far: number;
}

const NFOLDS = 10;

// ---- argument handling

/** Reads (e1, e2, [dim,] issame, ...rest) into float64 normalized distances. */
function readPairs(fn: string, args: unknown[]): { dist: Float64Array; same: Uint8Array; rest: unknown[] } {
  const [e1, e2] = args;
  let dim: number | undefined;
  let k = 2;
  if (typeof args[2] === 'number') {
    dim = args[2];
    assertInteger(dim, `${fn} dim`, 1, 2 ** 31 - 1);
    k = 3;
  }
  const issame = args[k];
  if (!Array.isArray(issame) && !ArrayBuffer.isView(issame)) throw invalidParameterError(`${fn} issame`, 'an array of booleans', issame);
  const n = (issame as ArrayLike<unknown>).length;
  if (n < NFOLDS) throw outOfRangeError(`${fn} issame`, `at least ${NFOLDS} pairs (10 folds)`, n);
  const same = new Uint8Array(n);
  for (let i = 0; i < n; i++) same[i] = (issame as ArrayLike<unknown>)[i] ? 1 : 0;
  const v1 = readEmbeddings(fn, 'embeddings1', e1, n, dim);
  const v2 = readEmbeddings(fn, 'embeddings2', e2, n, dim);
  if (v1.dim !== v2.dim) throw outOfRangeError(`${fn} embeddings2`, `vectors of dimension ${v1.dim} (as embeddings1)`, v2.dim);
  return { dist: normalizedDistances(v1.get, v2.get, n, v1.dim), same, rest: args.slice(k + 1) };
}

function readEmbeddings(
  fn: string, name: string, e: unknown, n: number, dim: number | undefined,
): { dim: number; get: (i: number) => ArrayLike<number>; } {
  if (e instanceof Float32Array || e instanceof Float64Array) {
    const d = dim ?? e.length / n;
    if (!Number.isInteger(d) || d < 1 || e.length !== n * d) {
      throw outOfRangeError(`${fn} ${name}`, `${n} × ${dim ?? 'dim'} values`, e.length);
    }
    return { dim: d, get: (i) => e.subarray(i * d, i * d + d) };
  }
  if (!Array.isArray(e)) throw invalidParameterError(`${fn} ${name}`, 'an array of vectors or a Float32Array', e);
  if (e.length !== n) throw outOfRangeError(`${fn} ${name}`, `${n} vectors (one per pair)`, e.length);
  const d = (e[0] as ArrayLike<number>)?.length;
  if (!Number.isInteger(d) || d < 1 || (dim !== undefined && d !== dim)) throw outOfRangeError(`${fn} ${name}[0]`, `a vector of length ${dim ?? '≥ 1'}`, d);
  for (let i = 0; i < n; i++) {
    if (!e[i] || (e[i] as ArrayLike<number>).length !== d) throw outOfRangeError(`${fn} ${name}[${i}]`, `a vector of length ${d}`, (e[i] as ArrayLike<number>)?.length);
  }
  return { dim: d, get: (i) => e[i] as ArrayLike<number> };
}

/** ‖a/‖a‖ − b/‖b‖‖² per pair, float64 (a zero vector stays zero, as sklearn's normalize). */
export function normalizedDistances(
  get1: (i: number) => ArrayLike<number>, get2: (i: number) => ArrayLike<number>, n: number, dim: number,
): Float64Array {
  const dist = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const a = get1(i);
    const b = get2(i);
    let na = 0;
    let nb = 0;
    for (let d = 0; d < dim; d++) {
      na += a[d] * a[d];
      nb += b[d] * b[d];
    }
    const ia = na > 0 ? 1 / Math.sqrt(na) : 0;
    const ib = nb > 0 ? 1 / Math.sqrt(nb) : 0;
    let s = 0;
    for (let d = 0; d < dim; d++) {
      const x = a[d] * ia - b[d] * ib;
      s += x * x;
    }
    if (!Number.isFinite(s)) throw outOfRangeError('embeddings', 'finite values', s);
    dist[i] = s;
  }
  return dist;
}

// ---- the protocol

/**
 * 10-fold verification accuracy, exactly as SPEC §10.2 (arcface_torch calculate_roc). Pass
 * `(embeddings1, embeddings2, issame)` with one vector per pair side, or
 * `(e1, e2, dim, issame)` with flat n × dim arrays. Embeddings need not be normalized.
 *
 * @example
 * const { accuracy, std } = verificationAccuracy(emb.filter((_, i) => i % 2 === 0), emb.filter((_, i) => i % 2 === 1), issame);
 */
export function verificationAccuracy(embeddings1: Embeddings, embeddings2: Embeddings, issame: readonly boolean[]): VerificationAccuracy;
export function verificationAccuracy(e1: Float32Array | Float64Array, e2: Float32Array | Float64Array, dim: number, issame: readonly boolean[]): VerificationAccuracy;
export function verificationAccuracy(...args: unknown[]): VerificationAccuracy {
  const { dist, same } = readPairs('verificationAccuracy', args);
  return accuracyFromDistances(dist, same);
}

/**
 * The §10.2 accuracy from precomputed squared distances (for callers that compute their own): the
 * same computation as lib/eval's verificationMetrics (numpy's summation order; a fold without same
 * pairs gives NaN, as arcface_torch).
 */
export function accuracyFromDistances(dist: Float64Array, same: Uint8Array): VerificationAccuracy {
  const r = accuracyProtocol(dist, same);
  return { accuracy: r.accuracy, std: r.accuracyStd, threshold: r.threshold, foldAccuracies: r.foldAccuracies, foldThresholds: r.foldThresholds };
}

/**
 * TAR at a FAR (default 1e−3) as SPEC §10.2's calculate_val: the mean over the 10 folds. Pass
 * `(e1, e2, issame[, far])` or `(e1, e2, dim, issame[, far])` as {@link verificationAccuracy}.
 */
export function tarAtFar(embeddings1: Embeddings, embeddings2: Embeddings, issame: readonly boolean[], far?: number): number;
export function tarAtFar(e1: Float32Array | Float64Array, e2: Float32Array | Float64Array, dim: number, issame: readonly boolean[], far?: number): number;
export function tarAtFar(...args: unknown[]): number {
  return tarAtFarStatsImpl(...args).tar;
}

/** {@link tarAtFar} with the fold std and the FAR actually reached. */
export function tarAtFarStats(embeddings1: Embeddings, embeddings2: Embeddings, issame: readonly boolean[], far?: number): TarAtFar;
export function tarAtFarStats(e1: Float32Array | Float64Array, e2: Float32Array | Float64Array, dim: number, issame: readonly boolean[], far?: number): TarAtFar;
export function tarAtFarStats(...args: unknown[]): TarAtFar {
  return tarAtFarStatsImpl(...args);
}

function tarAtFarStatsImpl(...args: unknown[]): TarAtFar {
  const { dist, same, rest } = readPairs('tarAtFar', args);
  const target = rest[0] ?? 1e-3;
  assertNumber(target, 'tarAtFar far', Number.MIN_VALUE, 1);
  return tarFromDistances(dist, same, target);
}

/** The §10.2 TAR@FAR from precomputed squared distances (lib/eval's VAL computation). */
export function tarFromDistances(dist: Float64Array, same: Uint8Array, target: number): TarAtFar {
  const v = valProtocol(dist, same, target);
  return { tar: v.val, std: v.valStd, far: v.far };
}

/** The Verifier shape the Trainer takes (flat embeddings with a dimension). */
export const verifier = {
  accuracy: (e1: Float32Array, e2: Float32Array, dim: number, issame: readonly boolean[]): { accuracy: number; std: number } =>
    verificationAccuracy(e1, e2, dim, issame),
  tarAtFar: (e1: Float32Array, e2: Float32Array, dim: number, issame: readonly boolean[], far: number): number =>
    tarAtFar(e1, e2, dim, issame, far),
};

// ---- the linear baseline

/** Options of {@link linearPixelBaseline}. */
export interface LinearBaselineOptions {
  /** Training images and their identity labels (identities disjoint from the pairs' for a held-out score). */
  train: { images: readonly RawImage[]; labels: ArrayLike<number> };
  /** Verification pairs: images[2k], images[2k+1] are pair k. */
  pairs: { images: readonly RawImage[]; issame: readonly boolean[] };
  /** Principal components kept (default 128, at most samples − 1). */
  pcaDims?: number;
  /**
   * Discriminant dimensions kept (default min(classes − 1, ⌈pcaDims/2⌉): on SyntheticFaces 'default'
   * with 200 training identities, 128 → 64 scored best among 31/63/64/127, so the default gives the
   * linear method its best showing).
   */
  ldaDims?: number;
  /** Side of the area-averaged image the method sees (default 28). */
  side?: number;
  /** Seed of the randomized PCA (default 0). */
  seed?: number;
}

/** What {@link linearPixelBaseline} returns. */
export interface LinearBaselineResult extends VerificationAccuracy {
  method: string;
  tarAtFar1e3: number;
  inputDims: number;
  pcaDims: number;
  ldaDims: number;
  seconds: number;
}

/** A fitted linear embedding: x ↦ Wᵀ(pixels(x) − μ). */
export interface LinearEmbedding {
  readonly dim: number;
  embed(image: RawImage): Float64Array;
}

/**
 * Fisherfaces on raw pixels (PCA then LDA), fitted on `train`, scored on `pairs` with
 * {@link verificationAccuracy} — the "linear method on raw pixels" reference of a data set.
 */
export function linearPixelBaseline(options: LinearBaselineOptions): LinearBaselineResult {
  const o = optionsObject(options, 'options');
  assertKnownOptions(o, 'linearPixelBaseline', ['train', 'pairs', 'pcaDims', 'ldaDims', 'side', 'seed']);
  const pairs = o.pairs as LinearBaselineOptions['pairs'];
  if (!pairs || !Array.isArray(pairs.images) || !Array.isArray(pairs.issame)) {
    throw invalidParameterError('options.pairs', '{ images: RawImage[], issame: boolean[] }', pairs);
  }
  if (pairs.images.length !== 2 * pairs.issame.length) {
    throw outOfRangeError('options.pairs.images', `2 × ${pairs.issame.length} images (two per pair)`, pairs.images.length);
  }
  const t0 = Date.now();
  const { train, ...fitOptions } = o as unknown as LinearBaselineOptions;
  const model = fitLinearPixelEmbedding(train, fitOptions);
  const P = pairs.issame.length;
  const dim = model.dim;
  const e1 = new Float64Array(P * dim);
  const e2 = new Float64Array(P * dim);
  for (let k = 0; k < P; k++) {
    e1.set(model.embed(pairs.images[2 * k]), k * dim);
    e2.set(model.embed(pairs.images[2 * k + 1]), k * dim);
  }
  const acc = verificationAccuracy(e1, e2, dim, pairs.issame);
  const tar = tarAtFar(e1, e2, dim, pairs.issame, 1e-3);
  return {
    method: `PCA(${(model as FittedModel).pcaDims}) + LDA(${dim}) on ${(model as FittedModel).side}×${(model as FittedModel).side}×3 area-averaged raw pixels`,
    ...acc,
    tarAtFar1e3: tar,
    inputDims: (model as FittedModel).inputDims,
    pcaDims: (model as FittedModel).pcaDims,
    ldaDims: dim,
    seconds: (Date.now() - t0) / 1000,
  };
}

interface FittedModel extends LinearEmbedding {
  side: number;
  inputDims: number;
  pcaDims: number;
}

/** Fits the PCA + LDA embedding of {@link linearPixelBaseline} (exported for reuse and tests). */
export function fitLinearPixelEmbedding(
  train: LinearBaselineOptions['train'],
  options: Omit<LinearBaselineOptions, 'train' | 'pairs'> & { pairs?: unknown } = {},
): LinearEmbedding {
  if (!train || !Array.isArray(train.images) || !train.labels || typeof train.labels.length !== 'number') {
    throw invalidParameterError('options.train', '{ images: RawImage[], labels: Int32Array | number[] }', train);
  }
  const N = train.images.length;
  if (train.labels.length !== N) throw outOfRangeError('options.train.labels', `${N} labels (one per image)`, train.labels.length);
  // Apply defaults
  const side = options.side ?? 28;
  const seed = options.seed ?? 0;
  // Validate arguments
  assertInteger(side, 'options.side', 4, 256);
  assertInteger(seed, 'options.seed', 0, 2 ** 32 - 1);
  const classIndex = new Map<number, number>();
  for (let i = 0; i < N; i++) {
    const l = train.labels[i];
    if (!Number.isInteger(l)) throw invalidParameterError(`options.train.labels[${i}]`, 'an integer', l);
    if (!classIndex.has(l)) classIndex.set(l, classIndex.size);
  }
  const C = classIndex.size;
  if (C < 2) throw outOfRangeError('options.train.labels', 'at least 2 classes', C);
  const pcaDims = options.pcaDims ?? Math.min(128, N - 1);
  assertInteger(pcaDims, 'options.pcaDims', 1, N - 1);
  const ldaDims = options.ldaDims ?? Math.min(C - 1, Math.ceil(pcaDims / 2));
  assertInteger(ldaDims, 'options.ldaDims', 1, Math.min(C - 1, pcaDims));
  // Interpret options
  const D = side * side * 3;
  if (pcaDims > D) throw outOfRangeError('options.pcaDims', `at most ${D} (the input dimension)`, pcaDims);
  const X = new Float32Array(N * D);
  for (let i = 0; i < N; i++) pixelFeatures(train.images[i], side, X.subarray(i * D, (i + 1) * D), `options.train.images[${i}]`);
  const mu = new Float64Array(D);
  for (let i = 0; i < N; i++) for (let d = 0; d < D; d++) mu[d] += X[i * D + d];
  for (let d = 0; d < D; d++) mu[d] /= N;
  for (let i = 0; i < N; i++) for (let d = 0; d < D; d++) X[i * D + d] -= mu[d];

  // PCA: V (pcaDims × D, orthonormal rows), P = X Vᵀ (N × pcaDims).
  const V = randomizedPca(X, N, D, pcaDims, seed);
  const k = pcaDims;
  const P = new Float64Array(N * k);
  for (let i = 0; i < N; i++) {
    const xi = i * D;
    for (let j = 0; j < k; j++) {
      const vj = j * D;
      let s = 0;
      for (let d = 0; d < D; d++) s += X[xi + d] * V[vj + d];
      P[i * k + j] = s;
    }
  }
  // LDA in PCA space (P is centred): Sw = Σ (p − μ_c)(p − μ_c)ᵀ, Sb = Σ_c n_c μ_c μ_cᵀ.
  const means = new Float64Array(C * k);
  const counts = new Float64Array(C);
  const cls = new Int32Array(N);
  for (let i = 0; i < N; i++) {
    const c = classIndex.get(train.labels[i]) as number;
    cls[i] = c;
    counts[c]++;
    for (let j = 0; j < k; j++) means[c * k + j] += P[i * k + j];
  }
  for (let c = 0; c < C; c++) for (let j = 0; j < k; j++) means[c * k + j] /= counts[c];
  const Sw = new Float64Array(k * k);
  const Sb = new Float64Array(k * k);
  const r = new Float64Array(k);
  for (let i = 0; i < N; i++) {
    const c = cls[i];
    for (let j = 0; j < k; j++) r[j] = P[i * k + j] - means[c * k + j];
    for (let a = 0; a < k; a++) for (let b = a; b < k; b++) Sw[a * k + b] += r[a] * r[b];
  }
  for (let c = 0; c < C; c++) {
    for (let a = 0; a < k; a++) for (let b = a; b < k; b++) Sb[a * k + b] += counts[c] * means[c * k + a] * means[c * k + b];
  }
  for (let a = 0; a < k; a++) {
    for (let b = 0; b < a; b++) {
      Sw[a * k + b] = Sw[b * k + a];
      Sb[a * k + b] = Sb[b * k + a];
    }
  }
  // Within-class whitening (a small ridge keeps it invertible when N − C < k).
  let trace = 0;
  for (let a = 0; a < k; a++) trace += Sw[a * k + a];
  for (let a = 0; a < k; a++) Sw[a * k + a] += 1e-4 * (trace / k);
  const ew = symmetricEigen(Sw, k);
  const W1 = new Float64Array(k * k); // columns: e_m / √λ_m
  for (let m = 0; m < k; m++) {
    const s = 1 / Math.sqrt(Math.max(ew.values[m], 1e-12));
    for (let a = 0; a < k; a++) W1[a * k + m] = ew.vectors[a * k + m] * s;
  }
  // Sb' = W1ᵀ Sb W1, its top eigenvectors F; W = W1 F.
  const T = matmul(Sb, W1, k, k, k);
  const Sb2 = matmulTransA(W1, T, k, k, k);
  const eb = symmetricEigen(Sb2, k);
  const W = new Float64Array(k * ldaDims);
  for (let a = 0; a < k; a++) {
    for (let m = 0; m < ldaDims; m++) {
      let s = 0;
      for (let b = 0; b < k; b++) s += W1[a * k + b] * eb.vectors[b * k + m];
      W[a * ldaDims + m] = s;
    }
  }
  // The full map: e = Wᵀ V (x − μ) = A (x − μ), A = (V ᵀW)ᵀ: ldaDims × D.
  const A = new Float64Array(ldaDims * D);
  for (let m = 0; m < ldaDims; m++) {
    for (let j = 0; j < k; j++) {
      const w = W[j * ldaDims + m];
      if (w === 0) continue;
      for (let d = 0; d < D; d++) A[m * D + d] += w * V[j * D + d];
    }
  }
  const buf = new Float32Array(D);
  const model: FittedModel = {
    dim: ldaDims,
    side,
    inputDims: D,
    pcaDims: k,
    embed(image: RawImage): Float64Array {
      pixelFeatures(image, side, buf, 'image');
      const e = new Float64Array(ldaDims);
      for (let m = 0; m < ldaDims; m++) {
        let s = 0;
        const am = m * D;
        for (let d = 0; d < D; d++) s += A[am + d] * (buf[d] - mu[d]);
        e[m] = s;
      }
      return e;
    },
  };
  return model;
}

/** Area-averages an HWC RGB image to side × side × 3, values in [0, 1], into `out`. */
function pixelFeatures(img: RawImage, side: number, out: Float32Array, name: string): void {
  if (!img || !(img.data instanceof Uint8Array) || img.channels !== 3 || img.data.length !== img.width * img.height * 3) {
    throw invalidParameterError(name, 'a RawImage (HWC RGB uint8)', img);
  }
  const { width: w, height: h, data } = img;
  out.fill(0);
  // Each source pixel contributes to the target cell it falls in (box filter; exact area average when side divides the size).
  const cnt = new Float32Array(side * side);
  for (let y = 0; y < h; y++) {
    const ty = Math.min(side - 1, Math.floor((y * side) / h));
    for (let x = 0; x < w; x++) {
      const tx = Math.min(side - 1, Math.floor((x * side) / w));
      const t = ty * side + tx;
      const p = (y * w + x) * 3;
      out[t * 3] += data[p];
      out[t * 3 + 1] += data[p + 1];
      out[t * 3 + 2] += data[p + 2];
      cnt[t]++;
    }
  }
  for (let t = 0; t < side * side; t++) {
    const s = cnt[t] > 0 ? 1 / (255 * cnt[t]) : 0;
    out[t * 3] *= s;
    out[t * 3 + 1] *= s;
    out[t * 3 + 2] *= s;
  }
}

// ---- small dense linear algebra (float64, row-major)

/** C = A (m × n) · B (n × p). */
function matmul(A: Float64Array, B: Float64Array, m: number, n: number, p: number): Float64Array {
  const C = new Float64Array(m * p);
  for (let i = 0; i < m; i++) {
    for (let l = 0; l < n; l++) {
      const a = A[i * n + l];
      if (a === 0) continue;
      for (let j = 0; j < p; j++) C[i * p + j] += a * B[l * p + j];
    }
  }
  return C;
}

/** C = Aᵀ (A: n × m) · B (n × p). */
function matmulTransA(A: Float64Array, B: Float64Array, n: number, m: number, p: number): Float64Array {
  const C = new Float64Array(m * p);
  for (let l = 0; l < n; l++) {
    for (let i = 0; i < m; i++) {
      const a = A[l * m + i];
      if (a === 0) continue;
      for (let j = 0; j < p; j++) C[i * p + j] += a * B[l * p + j];
    }
  }
  return C;
}

/**
 * Eigen-decomposition of a symmetric n × n matrix by cyclic Jacobi rotations: eigenvalues in
 * descending order, eigenvectors as the columns of `vectors` (row-major n × n).
 */
export function symmetricEigen(S: Float64Array, n: number): { values: Float64Array; vectors: Float64Array } {
  const a = Float64Array.from(S);
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  for (let sweep = 0; sweep < 60; sweep++) {
    let off = 0;
    let diag = 0;
    for (let p = 0; p < n; p++) {
      diag += a[p * n + p] * a[p * n + p];
      for (let q = p + 1; q < n; q++) off += a[p * n + q] * a[p * n + q];
    }
    if (off <= 1e-30 * diag || off === 0) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q];
        if (Math.abs(apq) < 1e-300) continue;
        const app = a[p * n + p];
        const aqq = a[q * n + q];
        const theta = (aqq - app) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = a[k * n + p];
          const akq = a[k * n + q];
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p * n + k];
          const aqk = a[q * n + k];
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = v[k * n + p];
          const vkq = v[k * n + q];
          v[k * n + p] = c * vkp - s * vkq;
          v[k * n + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => a[j * n + j] - a[i * n + i]);
  const values = new Float64Array(n);
  const vectors = new Float64Array(n * n);
  order.forEach((src, dst) => {
    values[dst] = a[src * n + src];
    for (let k = 0; k < n; k++) vectors[k * n + dst] = v[k * n + src];
  });
  return { values, vectors };
}

/** Orthonormalizes the `count` rows (length `len`) of M in place (modified Gram–Schmidt, twice). */
function orthonormalizeRows(M: Float64Array, count: number, len: number): void {
  for (let pass = 0; pass < 2; pass++) {
    for (let i = 0; i < count; i++) {
      const ri = i * len;
      for (let j = 0; j < i; j++) {
        const rj = j * len;
        let s = 0;
        for (let d = 0; d < len; d++) s += M[ri + d] * M[rj + d];
        for (let d = 0; d < len; d++) M[ri + d] -= s * M[rj + d];
      }
      let nn = 0;
      for (let d = 0; d < len; d++) nn += M[ri + d] * M[ri + d];
      const inv = nn > 1e-300 ? 1 / Math.sqrt(nn) : 0;
      for (let d = 0; d < len; d++) M[ri + d] *= inv;
    }
  }
}

/**
 * Top-k principal directions of the centred rows of X (N × D) by randomized subspace iteration
 * (k + 16 columns, one power iteration): k × D orthonormal rows, by decreasing variance.
 */
const POWER_ITERATIONS = 1;

function randomizedPca(X: Float32Array, N: number, D: number, k: number, seed: number): Float64Array {
  const l = Math.min(k + 16, N, D);
  // Ω: l × D Gaussian (Box–Muller over mulberry32).
  let st = seed >>> 0;
  const rand = (): number => {
    st = (st + 0x6d2b79f5) >>> 0;
    let t = st;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  let Z: Float64Array = new Float64Array(l * D);
  for (let i = 0; i < Z.length; i++) Z[i] = Math.sqrt(-2 * Math.log(rand())) * Math.cos(2 * Math.PI * rand());
  let Y: Float64Array = new Float64Array(l * N);
  for (let it = 0; it <= POWER_ITERATIONS; it++) {
    // Yᵀ = Z Xᵀ (l × N), orthonormalized.
    Y = timesXt(Z, X, l, N, D);
    orthonormalizeRows(Y, l, N);
    if (it < POWER_ITERATIONS) {
      // Zᵀ = Xᵀ Y → Z = Yᵀ-rows times X (l × D), orthonormalized.
      Z = timesX(Y, X, l, N, D);
      orthonormalizeRows(Z, l, D);
    }
  }
  // B = Qᵀ X (l × D); B Bᵀ = U S² Uᵀ; the right singular vectors are Bᵀ u / s.
  const B = timesX(Y, X, l, N, D);
  const G = new Float64Array(l * l);
  for (let i = 0; i < l; i++) {
    for (let j = i; j < l; j++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += B[i * D + d] * B[j * D + d];
      G[i * l + j] = s;
      G[j * l + i] = s;
    }
  }
  const { values, vectors } = symmetricEigen(G, l);
  const V = new Float64Array(k * D);
  for (let m = 0; m < k; m++) {
    const s = values[m] > 1e-300 ? 1 / Math.sqrt(values[m]) : 0;
    for (let i = 0; i < l; i++) {
      const u = vectors[i * l + m] * s;
      if (u === 0) continue;
      for (let d = 0; d < D; d++) V[m * D + d] += u * B[i * D + d];
    }
  }
  return V;
}

/** R (l × N) = M (l × D) · Xᵀ. */
function timesXt(M: Float64Array, X: Float32Array, l: number, N: number, D: number): Float64Array {
  const R = new Float64Array(l * N);
  for (let i = 0; i < N; i++) {
    const xi = i * D;
    for (let j = 0; j < l; j++) {
      const mj = j * D;
      let s = 0;
      for (let d = 0; d < D; d++) s += M[mj + d] * X[xi + d];
      R[j * N + i] = s;
    }
  }
  return R;
}

/** R (l × D) = M (l × N) · X. */
function timesX(M: Float64Array, X: Float32Array, l: number, N: number, D: number): Float64Array {
  const R = new Float64Array(l * D);
  for (let i = 0; i < N; i++) {
    const xi = i * D;
    for (let j = 0; j < l; j++) {
      const m = M[j * N + i];
      if (m === 0) continue;
      const rj = j * D;
      for (let d = 0; d < D; d++) R[rj + d] += m * X[xi + d];
    }
  }
  return R;
}
