/**
 * IJB-B / IJB-C 1:1 template verification (SPEC §10.3, arcface_torch eval_ijbc.py).
 *
 * Layout under `root` (insightface's IJB_release/IJBC): `meta/<name>_face_tid_mid.txt` (image name,
 * template id, media id per line), `meta/<name>_template_pair_label.txt` (template 1, template 2,
 * label 0/1), `meta/<name>_name_5pts_score.txt` (image name, 10 landmark coordinates x1 y1 … x5 y5,
 * faceness score), and the images in `loose_crop/`. `<name>` is `ijbc` or `ijbb`. Line i of the
 * landmark file and of the template file describe the same image (names are checked).
 *
 * Protocol: the embedder aligns each face from its 5 landmarks and embeds it (with flip: sum of the raw
 * embeddings of the image and its mirror). Per image, the feature is the raw vector (unit × norm;
 * `useNormScore`, insightface's default) or the unit vector, times the faceness score when
 * `useDetectorScore` (insightface's default; AdaFace turns it off). Per template, images are grouped
 * by media id: a media with one image contributes it, a media with several their mean; the template
 * is the sum over its medias (in ascending media id), L2-normalized. A pair's score is the dot product
 * of its templates. The ROC is sklearn's and TAR@FAR the nearest ROC point (roc.ts), which is the
 * number insightface prints (×100, two decimals; see {@link formatIjbTable}).
 *
 * Memory: image features are not kept: each is added into its (template, media) slot as it arrives
 * (float64, slots × dim; IJB-C has fewer slots than its 469,375 images), so the pass streams.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';

import { FacecudaError, invalidParameterError, outOfRangeError } from '../errors';
import { ioError } from '../fsutil';
import { assertBool, assertInteger, assertKnownOptions, assertOneOf, assertString, optionsObject } from '../validate';
import type { EmbedResult, IjbEmbedderLike } from './embedder';
import { pairwiseSum } from './numeric';
import { rocMetrics, splitSorted, type RocMetrics } from './roc';
import { checkResult } from './verification';

// ---------------------------------------------------------------------------------------------
// Meta files

/** Whitespace-separated tokens of a text file, line by line, without building one big string. */
function* lines(bytes: Uint8Array): Generator<[number, string[]]> {
  const dec = new TextDecoder('utf-8');
  let start = 0;
  let line = 0;
  while (start < bytes.length) {
    let end = bytes.indexOf(0x0a, start);
    if (end < 0) end = bytes.length;
    line++;
    const text = dec.decode(bytes.subarray(start, end)).trim();
    start = end + 1;
    if (text) yield [line, text.split(/\s+/)];
  }
}

async function readMeta(file: string): Promise<Uint8Array> {
  try {
    return await fsp.readFile(file);
  } catch (e) {
    throw ioError('read', file, e);
  }
}

function corrupt(file: string, line: number, msg: string): FacecudaError {
  return new FacecudaError('CORRUPT_FILE', `Corrupt IJB meta file '${file}' line ${line}: ${msg}`);
}

function int(file: string, line: number, tok: string, what: string): number {
  if (!/^[+-]?\d+$/.test(tok)) throw corrupt(file, line, `${what} '${tok.slice(0, 40)}' is not an integer`);
  const v = Number(tok);
  if (!Number.isSafeInteger(v) || Math.abs(v) > 2 ** 31 - 1) throw corrupt(file, line, `${what} ${tok} is out of range`);
  return v;
}

function float(file: string, line: number, tok: string, what: string): number {
  const v = Number(tok);
  if (!tok || !Number.isFinite(v)) throw corrupt(file, line, `${what} '${tok.slice(0, 40)}' is not a finite number`);
  return v;
}

/** `<name>_face_tid_mid.txt`: image name, template id, media id. */
export interface IjbFaces {
  names: string[];
  templates: Int32Array;
  medias: Int32Array;
}

/** Reads `<name>_face_tid_mid.txt` (image name, template id, media id per line). */
export async function readIjbFaces(file: string): Promise<IjbFaces> {
  assertString(file, 'file');
  const names: string[] = [];
  const t: number[] = [];
  const m: number[] = [];
  for (const [line, tok] of lines(await readMeta(file))) {
    if (tok.length !== 3) throw corrupt(file, line, `${tok.length} fields, expected 3 (image, template id, media id)`);
    names.push(tok[0]);
    t.push(int(file, line, tok[1], 'the template id'));
    m.push(int(file, line, tok[2], 'the media id'));
  }
  return { names, templates: Int32Array.from(t), medias: Int32Array.from(m) };
}

/** `<name>_template_pair_label.txt`: template 1, template 2, label. */
export interface IjbPairs {
  t1: Int32Array;
  t2: Int32Array;
  labels: Uint8Array;
}

/** Reads `<name>_template_pair_label.txt` (t1, t2, label 0/1 per line; IJB-C: 15.7 M lines). */
export async function readIjbPairs(file: string): Promise<IjbPairs> {
  assertString(file, 'file');
  const bytes = await readMeta(file);
  // A fast path over bytes: three non-negative integers per line (the real files); anything else
  // falls back to the tokenizer for a precise error.
  let cap = 1024;
  let t1 = new Int32Array(cap);
  let t2 = new Int32Array(cap);
  let lab = new Uint8Array(cap);
  let n = 0;
  let pos = 0;
  let line = 0;
  const L = bytes.length;
  while (pos < L) {
    line++;
    const vals = [0, 0, 0];
    let k = 0;
    let ok = true;
    while (pos < L && bytes[pos] !== 0x0a) {
      const c = bytes[pos];
      if (c === 0x20 || c === 0x09 || c === 0x0d) { pos++; continue; }
      if (c < 0x30 || c > 0x39 || k >= 3) { ok = false; break; }
      let v = 0;
      let digits = 0;
      while (pos < L && bytes[pos] >= 0x30 && bytes[pos] <= 0x39) {
        v = v * 10 + (bytes[pos] - 0x30);
        pos++;
        if (++digits > 10) { ok = false; break; }
      }
      if (!ok) break;
      vals[k++] = v;
    }
    if (!ok || (k !== 0 && k !== 3)) {
      // Re-tokenize the offending line for the message.
      const s = pos;
      let e = bytes.indexOf(0x0a, s);
      if (e < 0) e = L;
      let b = s;
      while (b > 0 && bytes[b - 1] !== 0x0a) b--;
      const tok = new TextDecoder().decode(bytes.subarray(b, e)).trim().split(/\s+/);
      if (tok.length !== 3) throw corrupt(file, line, `${tok.length} fields, expected 3 (template 1, template 2, label)`);
      tok.forEach((x, i) => int(file, line, x, ['template 1', 'template 2', 'the label'][i]));
      throw corrupt(file, line, 'negative or out-of-range values');
    }
    pos++;
    if (k === 0) continue;
    if (vals[0] > 2 ** 31 - 1 || vals[1] > 2 ** 31 - 1) throw corrupt(file, line, 'a template id out of range');
    if (vals[2] > 1) throw corrupt(file, line, `the label ${vals[2]} is not 0 or 1`);
    if (n === cap) {
      cap *= 2;
      const a = new Int32Array(cap); a.set(t1); t1 = a;
      const b = new Int32Array(cap); b.set(t2); t2 = b;
      const c = new Uint8Array(cap); c.set(lab); lab = c;
    }
    t1[n] = vals[0];
    t2[n] = vals[1];
    lab[n] = vals[2];
    n++;
  }
  return { t1: t1.slice(0, n), t2: t2.slice(0, n), labels: lab.slice(0, n) };
}

/** `<name>_name_5pts_score.txt`: image name, 5 landmarks, faceness score. */
export interface IjbLandmarks {
  names: string[];
  /** [n, 5, 2] pixel coordinates. */
  landmarks: Float32Array;
  /** Detector (faceness) scores, as written. */
  faceness: Float64Array;
}

/** Reads `<name>_name_5pts_score.txt` (image name, x1 y1 … x5 y5, faceness score per line). */
export async function readIjbLandmarks(file: string): Promise<IjbLandmarks> {
  assertString(file, 'file');
  const names: string[] = [];
  const lm: number[] = [];
  const sc: number[] = [];
  for (const [line, tok] of lines(await readMeta(file))) {
    if (tok.length !== 12) throw corrupt(file, line, `${tok.length} fields, expected 12 (image, 10 landmark coordinates, score)`);
    names.push(tok[0]);
    for (let i = 1; i <= 10; i++) lm.push(float(file, line, tok[i], `landmark coordinate ${i}`));
    sc.push(float(file, line, tok[11], 'the faceness score'));
  }
  return { names, landmarks: Float32Array.from(lm), faceness: Float64Array.from(sc) };
}

// ---------------------------------------------------------------------------------------------
// Aggregation

/** Template aggregation options. */
export interface IjbAggregationOptions {
  /** Keep each image's raw norm (insightface use_norm_score; default true). */
  useNormScore?: boolean;
  /** Weight each image by its faceness score (insightface use_detector_score; default true). */
  useDetectorScore?: boolean;
}

/**
 * Streams image features into (template, media) sums and turns them into normalized template
 * features (see the module notes). Create with the meta data, `add` every image's embedding (any
 * order, each once), then `templates()`.
 *
 * @example
 * const agg = new IjbAggregator(await readIjbFaces('IJBC/meta/ijbc_face_tid_mid.txt'), { useNormScore: true, useDetectorScore: true });
 * agg.add(0, await embedder.embedFaces(images, landmarks, { flip: true })); // images 0.. of the list
 * const scores = ijbPairScores(agg.templates(), await readIjbPairs('IJBC/meta/ijbc_template_pair_label.txt'));
 */
export class IjbAggregator {
  readonly templateIds: Int32Array;
  private readonly slotOf: Int32Array;
  private readonly slotsOfTemplate: number[][];
  private readonly counts: Int32Array;
  private sums: Float64Array | null = null;
  private dim = 0;
  private readonly seen: Uint8Array;

  constructor(
    private readonly faces: { templates: Int32Array; medias: Int32Array; faceness: ArrayLike<number> },
    private readonly options: Required<IjbAggregationOptions>,
  ) {
    const n = faces.templates.length;
    if (faces.medias.length !== n || faces.faceness.length !== n) throw outOfRangeError('faces', 'templates, medias and faceness of one length', `${n}, ${faces.medias.length}, ${faces.faceness.length}`);
    this.templateIds = Int32Array.from(new Set(faces.templates)).sort();
    const tIndex = new Map<number, number>();
    this.templateIds.forEach((t, i) => tIndex.set(t, i));
    const mediaSlots = this.templateIds.length ? Array.from(this.templateIds, () => new Map<number, number>()) : [];
    // Slots numbered per template in ascending media id (the order numpy's unique gives).
    const mediasOf: number[][] = Array.from(this.templateIds, () => []);
    for (let i = 0; i < n; i++) mediasOf[tIndex.get(faces.templates[i])!].push(faces.medias[i]);
    let slots = 0;
    this.slotsOfTemplate = mediasOf.map((ms, ti) => {
      const uniq = [...new Set(ms)].sort((a, b) => a - b);
      return uniq.map((m) => {
        mediaSlots[ti].set(m, slots);
        return slots++;
      });
    });
    this.slotOf = new Int32Array(n);
    for (let i = 0; i < n; i++) this.slotOf[i] = mediaSlots[tIndex.get(faces.templates[i])!].get(faces.medias[i])!;
    this.counts = new Int32Array(slots);
    this.seen = new Uint8Array(n);
  }

  /** Adds the embeddings of images `first .. first + n − 1` (rows of the meta files). */
  add(first: number, r: EmbedResult): void {
    const n = r.norms.length;
    const D = r.dim;
    if (!this.sums) {
      this.dim = D;
      this.sums = new Float64Array(this.counts.length * D);
    } else if (D !== this.dim) throw outOfRangeError('embedding dim', `${this.dim}`, D);
    const sums = this.sums;
    for (let i = 0; i < n; i++) {
      const row = first + i;
      if (row < 0 || row >= this.slotOf.length) throw outOfRangeError('row', `an image index below ${this.slotOf.length}`, row);
      if (this.seen[row]) throw outOfRangeError('row', 'each image added once', row);
      this.seen[row] = 1;
      const w = r.norms[i];
      const s = this.slotOf[row];
      const o = s * D;
      for (let d = 0; d < D; d++) {
        let f = this.options.useNormScore ? r.embeddings[i * D + d] * w : r.embeddings[i * D + d];
        if (this.options.useDetectorScore) f *= this.faces.faceness[row];
        sums[o + d] += f;
      }
      this.counts[s]++;
    }
  }

  /** [templates, dim] L2-normalized template features (in `templateIds` order). */
  templates(): { ids: Int32Array; features: Float64Array; dim: number } {
    const missing = this.seen.indexOf(0);
    if (missing >= 0) throw outOfRangeError('images', `every image embedded before aggregating`, `image ${missing} missing`);
    const D = this.dim;
    const T = this.templateIds.length;
    const out = new Float64Array(T * D);
    const sums = this.sums ?? new Float64Array(0);
    const sq = new Float64Array(D);
    for (let t = 0; t < T; t++) {
      const o = t * D;
      for (const s of this.slotsOfTemplate[t]) {
        const c = this.counts[s];
        for (let d = 0; d < D; d++) out[o + d] += c === 1 ? sums[s * D + d] : sums[s * D + d] / c;
      }
      for (let d = 0; d < D; d++) sq[d] = out[o + d] * out[o + d];
      const nrm = Math.sqrt(pairwiseSum(sq, 0, D));
      for (let d = 0; d < D; d++) out[o + d] /= nrm;
    }
    return { ids: this.templateIds, features: out, dim: D };
  }
}

/** Dot product in numpy's pairwise order (np.sum(a * b, -1)). */
function dot(a: Float64Array, ao: number, b: Float64Array, bo: number, n: number, scratch: Float64Array): number {
  for (let d = 0; d < n; d++) scratch[d] = a[ao + d] * b[bo + d];
  return pairwiseSum(scratch, 0, n);
}

/** Cosine scores of template pairs. */
export function ijbPairScores(
  templates: { ids: Int32Array; features: Float64Array; dim: number },
  pairs: { t1: Int32Array; t2: Int32Array },
  source = 'pairs',
): Float64Array {
  const index = new Map<number, number>();
  templates.ids.forEach((t, i) => index.set(t, i));
  const n = pairs.t1.length;
  const D = templates.dim;
  const scores = new Float64Array(n);
  const scratch = new Float64Array(D);
  for (let k = 0; k < n; k++) {
    const a = index.get(pairs.t1[k]);
    const b = index.get(pairs.t2[k]);
    if (a === undefined || b === undefined) {
      throw new FacecudaError('CORRUPT_FILE', `IJB ${source} line ${k + 1} names template ${a === undefined ? pairs.t1[k] : pairs.t2[k]}, which has no images`);
    }
    scores[k] = dot(templates.features, a * D, templates.features, b * D, D, scratch);
  }
  return scores;
}

// ---------------------------------------------------------------------------------------------
// The protocol

/** Options of {@link evaluateIjb}. */
export interface EvaluateIjbOptions extends IjbAggregationOptions {
  embedder: IjbEmbedderLike;
  /** The folder holding `meta/` and `loose_crop/`. */
  root: string;
  name: 'IJBC' | 'IJBB';
  /** Flip test-time augmentation (default true). */
  flip?: boolean;
  /** Images per embedFaces call (default 256). */
  batchSize?: number;
  /** Called after each batch with (images done, images in all). */
  onProgress?: (done: number, total: number) => void;
}

/** What {@link evaluateIjb} returns. */
export interface IjbResult extends RocMetrics {
  name: 'IJBC' | 'IJBB';
  flip: boolean;
  useNormScore: boolean;
  useDetectorScore: boolean;
  images: number;
  templates: number;
  pairs: number;
  genuine: number;
  impostor: number;
  dim: number;
  /** Cosine score of each template pair, in the pair file's order. */
  scores: Float64Array;
  labels: Uint8Array;
  embedSeconds: number;
  metricSeconds: number;
}

/** ROC metrics of scored template pairs (exported for callers with their own scores). */
export function ijbMetrics(scores: Float64Array, labels: Uint8Array): RocMetrics & { pairs: number; genuine: number; impostor: number } {
  const { genuine, impostor } = splitSorted(scores, labels);
  return { pairs: scores.length, genuine: genuine.length, impostor: impostor.length, ...rocMetrics(genuine, impostor) };
}

/**
 * IJB-B/C 1:1 verification (see the module notes).
 *
 * @example
 * const r = await evaluateIjb({ embedder, root: '/data/IJB_release/IJBC', name: 'IJBC' });
 * console.log(formatIjbTable({ 'r100-ms1mv3': r }));
 * @throws TypeError / RangeError for bad options; `IO_ERROR` for unreadable files; `CORRUPT_FILE` for
 *   malformed meta files (naming file and line)
 */
export async function evaluateIjb(options: EvaluateIjbOptions): Promise<IjbResult> {
  const o = optionsObject(options, 'options');
  assertKnownOptions(o, 'evaluateIjb', ['embedder', 'root', 'name', 'flip', 'batchSize', 'onProgress', 'useNormScore', 'useDetectorScore']);
  // Apply defaults
  const flip = (o.flip as boolean | undefined) ?? true;
  const batchSize = (o.batchSize as number | undefined) ?? 256;
  const useNormScore = (o.useNormScore as boolean | undefined) ?? true;
  const useDetectorScore = (o.useDetectorScore as boolean | undefined) ?? true;
  // Validate arguments
  const embedder = o.embedder as IjbEmbedderLike;
  if (!embedder || typeof embedder.embedFaces !== 'function') throw invalidParameterError('options.embedder', 'an object with an embedFaces(images, landmarks, { flip }) method', embedder);
  assertString(o.root, 'options.root');
  assertOneOf(o.name, 'options.name', ['IJBC', 'IJBB'] as const);
  assertBool(flip, 'options.flip');
  assertBool(useNormScore, 'options.useNormScore');
  assertBool(useDetectorScore, 'options.useDetectorScore');
  assertInteger(batchSize, 'options.batchSize', 1, 1 << 20);
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw invalidParameterError('options.onProgress', 'a function', o.onProgress);
  const onProgress = o.onProgress as EvaluateIjbOptions['onProgress'];
  // Interpret options
  const name = o.name as 'IJBC' | 'IJBB';
  const lower = name.toLowerCase();
  const meta = path.join(o.root, 'meta');
  const facesFile = path.join(meta, `${lower}_face_tid_mid.txt`);
  const pairsFile = path.join(meta, `${lower}_template_pair_label.txt`);
  const lmkFile = path.join(meta, `${lower}_name_5pts_score.txt`);
  const crops = path.join(o.root, 'loose_crop');

  const [faces, lmk, pairs] = await Promise.all([readIjbFaces(facesFile), readIjbLandmarks(lmkFile), readIjbPairs(pairsFile)]);
  const n = faces.names.length;
  if (lmk.names.length !== n) throw new FacecudaError('CORRUPT_FILE', `IJB meta files disagree: ${facesFile} has ${n} images, ${lmkFile} has ${lmk.names.length}`);
  for (let i = 0; i < n; i++) {
    if (faces.names[i] !== lmk.names[i]) throw corrupt(lmkFile, i + 1, `image '${lmk.names[i]}' where ${path.basename(facesFile)} has '${faces.names[i]}'`);
  }
  if (n === 0) throw new FacecudaError('CORRUPT_FILE', `IJB meta file '${facesFile}' lists no images`);
  const agg = new IjbAggregator({ templates: faces.templates, medias: faces.medias, faceness: lmk.faceness }, { useNormScore, useDetectorScore });

  const readBatch = (start: number): Promise<Uint8Array[]> => Promise.all(
    faces.names.slice(start, Math.min(n, start + batchSize)).map(async (f) => {
      const file = path.join(crops, f);
      try {
        return await fsp.readFile(file);
      } catch (e) {
        throw ioError('read', file, e);
      }
    }),
  );
  const t0 = performance.now();
  let dim = 0;
  let next = readBatch(0);
  for (let start = 0; start < n; start += batchSize) {
    const images = await next;
    if (start + batchSize < n) {
      next = readBatch(start + batchSize);
      next.catch(() => undefined); // surfaced when awaited
    }
    const count = images.length;
    const r = await embedder.embedFaces(images, lmk.landmarks.slice(start * 10, (start + count) * 10), { flip });
    checkResult(r, count, 'embedFaces', dim);
    dim = r.dim;
    agg.add(start, r);
    onProgress?.(start + count, n);
  }
  const t1 = performance.now();
  const scores = ijbPairScores(agg.templates(), pairs, pairsFile);
  const m = ijbMetrics(scores, pairs.labels);
  return {
    name, flip, useNormScore, useDetectorScore, images: n, templates: agg.templateIds.length, dim,
    ...m, scores, labels: pairs.labels,
    embedSeconds: (t1 - t0) / 1000, metricSeconds: (performance.now() - t1) / 1000,
  };
}
