/**
 * Training-time augmentations on {@link RawImage}s (HWC, uint8), in pure JavaScript, each drawn from
 * a counter-based generator keyed by the sample, so a sample's augmentation depends only on
 * (seed, epoch, sample index) — never on the thread, the batch or the order samples are processed in.
 *
 * ## The generator ({@link CounterRng})
 *
 * Key = (seed, epoch, index, stream): seed a safe integer ≥ 0 (split into its low and high 32 bits),
 * epoch and index integers in [0, 2^32), stream a small integer naming the use (below). Two 32-bit
 * lanes hash the whole key: lane_j = absorb(…absorb(IV_j, seedLo), seedHi, epoch, index, stream)
 * with absorb(h, w) = mix(h ^ w) + 0x9E3779B9 and mix = Chris Wellons' "lowbias32" finalizer
 * (x ^= x>>>16; x *= 0x7feb352d; x ^= x>>>15; x *= 0x846ca68b; x ^= x>>>16). Output n (n = 0, 1, …)
 * is mix(lane0 ^ mix(lane1 + n·0x9E3779B9)): a pure function of (key, n), with no state but the
 * counter, so any output can be recomputed anywhere. Floats are u32/2^32 (or 53 bits from two
 * outputs for {@link CounterRng.next53}).
 *
 * Streams ({@link STREAMS}): 0 the epoch permutation (index 0), 1 flip, 2 crop, 3 colour jitter,
 * 4 grayscale, 5 low resolution, 6 erasing. Each operation draws from its own stream, so enabling one
 * operation never changes the draws of another.
 *
 * ## Operations (applied in this order when enabled; each with a probability p)
 *
 * 1. `crop`: RandomResizedCrop (torchvision semantics): up to 10 tries of an area fraction in `scale`
 *    and a log-uniform aspect ratio w/h in `ratio`, then the centre fallback; the region is resampled
 *    (bilinear, antialiased) back to the image's size. Defaults scale [0.08, 1], ratio [3/4, 4/3].
 * 2. `flip`: horizontal mirror (arcface_torch: p 0.5).
 * 3. `colorJitter`: brightness, contrast, saturation factors uniform in [max(0, 1 − x), 1 + x], applied
 *    in a random order as torchvision does (contrast blends with the mean grey level, saturation with
 *    each pixel's grey, grey = 0.2989 R + 0.587 G + 0.114 B; results truncated to uint8 like
 *    torchvision's tensor path).
 * 4. `grayscale`: the grey level in all three channels.
 * 5. `lowRes` (AdaFace): shrink each side to ⌊u·side⌋ (u uniform in `scale`, default [0.2, 1]) and
 *    back, each resize with a filter drawn from `filters` (default nearest, bilinear, area).
 * 6. `erase`: RandomErasing (torchvision semantics): up to 10 tries of an area fraction in `scale`
 *    (default [0.02, 0.33]) and log-uniform aspect ratio h/w in `ratio` (default [0.3, 3.3]); a try
 *    fits when h < height and w < width; no fit, no erasing. `value` is in pixel units: a number
 *    0–255 (default 0), an [r, g, b] triple, or 'random' (uniform random bytes from the generator).
 *    torchvision erases after Normalize, where its default 0 is mid-grey: pass 128 to match that.
 *
 * @example
 * const opts = resolveAugment({ flip: 0.5, erase: { p: 0.25 } });
 * const out = augmentImage(image, opts, { seed: 2048, epoch: 3, index: 12345 });
 */
import { invalidParameterError, outOfRangeError } from '../errors';
import { assertKnownOptions, assertNumber, is } from '../validate';
import { RESAMPLE_FILTERS, ResampleFilter, resampleRegion } from './image';
import type { RawImage } from './types';

// ---------------------------------------------------------------------------------------------
// The counter-based generator

/** Stream numbers of the generator key. */
export const STREAMS = { permutation: 0, flip: 1, crop: 2, colorJitter: 3, grayscale: 4, lowRes: 5, erase: 6 } as const;

const GOLDEN = 0x9e3779b9;

function mix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x7feb352d);
  x ^= x >>> 15;
  x = Math.imul(x, 0x846ca68b);
  x ^= x >>> 16;
  return x >>> 0;
}

function absorb(h: number, w: number): number {
  return (mix32((h ^ w) >>> 0) + GOLDEN) >>> 0;
}

/** The generator's key: which sample, which epoch, which use. */
export interface RngKey {
  seed: number;
  epoch: number;
  index: number;
  stream?: number;
}

/**
 * A counter-based generator: output n is a pure function of (key, n). See the module comment.
 *
 * @example
 * const r = new CounterRng({ seed: 0, epoch: 1, index: 42, stream: STREAMS.crop });
 * const u = r.next(); // [0, 1)
 */
export class CounterRng {
  private readonly k0: number;
  private readonly k1: number;
  /** The next output's number. */
  counter = 0;

  constructor(key: RngKey) {
    const { seed, epoch, index } = key;
    const stream = key.stream ?? 0;
    const lo = seed >>> 0;
    const hi = Math.floor(seed / 4294967296) >>> 0;
    let a = 0x243f6a88;
    let b = 0xb7e15162;
    for (const w of [lo, hi, epoch >>> 0, index >>> 0, stream >>> 0]) {
      a = absorb(a, w);
      b = absorb(b, Math.imul(w, 0x2c1b3c6d) >>> 0);
    }
    this.k0 = mix32(a ^ 0x85ebca6b);
    this.k1 = mix32(b ^ 0xc2b2ae35);
  }

  /** The output at counter n (does not advance). */
  at(n: number): number {
    return mix32((this.k0 ^ mix32((this.k1 + Math.imul(n >>> 0, GOLDEN)) >>> 0)) >>> 0);
  }

  /** The next 32-bit output. */
  nextU32(): number {
    return this.at(this.counter++);
  }

  /** Uniform in [0, 1), 32 bits. */
  next(): number {
    return this.nextU32() / 4294967296;
  }

  /** Uniform in [0, 1), 53 bits (two outputs). */
  next53(): number {
    const hi = this.nextU32() >>> 5;
    const lo = this.nextU32() >>> 6;
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform in [lo, hi). */
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  /** Uniform integer in [lo, hi] (inclusive; 53-bit draw). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next53() * (hi - lo + 1));
  }

  /** True with probability p (always draws, so later draws do not depend on p). */
  chance(p: number): boolean {
    return this.next() < p;
  }
}

/** Checks an RNG key's parts. */
export function assertSeed(v: unknown, name: string): asserts v is number {
  if (!is.integer(v)) throw invalidParameterError(name, 'an integer', v);
  if (v < 0 || v > Number.MAX_SAFE_INTEGER) throw outOfRangeError(name, `an integer between 0 and ${Number.MAX_SAFE_INTEGER}`, v);
}

/**
 * The permutation of [0, size) for an epoch: Fisher–Yates (from the end, j uniform in [0, i]) driven
 * by the generator keyed (seed, epoch, 0, STREAMS.permutation). A pure function of (size, seed, epoch).
 */
export function epochPermutation(size: number, seed: number, epoch: number): Int32Array {
  const perm = new Int32Array(size);
  for (let i = 0; i < size; i++) perm[i] = i;
  const rng = new CounterRng({ seed, epoch, index: 0, stream: STREAMS.permutation });
  for (let i = size - 1; i > 0; i--) {
    const j = Math.floor(rng.next53() * (i + 1));
    const t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  return perm;
}

// ---------------------------------------------------------------------------------------------
// Options

export interface RandomResizedCropOptions {
  /** Probability (default 1). */
  p?: number;
  /** Area fraction range (default [0.08, 1]). */
  scale?: [number, number];
  /** Aspect ratio w/h range (default [3/4, 4/3]). */
  ratio?: [number, number];
}

export interface ColorJitterOptions {
  /** Probability (default 1). */
  p?: number;
  /** Brightness factor in [max(0, 1 − b), 1 + b] (default 0 = off). */
  brightness?: number;
  contrast?: number;
  saturation?: number;
}

export type EraseValue = number | [number, number, number] | 'random';

export interface RandomErasingOptions {
  /** Probability (default 0.5, torchvision's). */
  p?: number;
  /** Erased area fraction range (default [0.02, 0.33]). */
  scale?: [number, number];
  /** Aspect ratio h/w range (default [0.3, 3.3]). */
  ratio?: [number, number];
  /** Fill, in pixel units (default 0). */
  value?: EraseValue;
}

export interface LowResolutionOptions {
  /** Probability (default 1; AdaFace uses 0.2). */
  p?: number;
  /** Side fraction range of the small image (default [0.2, 1]). */
  scale?: [number, number];
  /** Filters drawn from for each of the two resizes (default all three). */
  filters?: ResampleFilter[];
}

/** Which augmentations to apply; an absent or false entry is off, true takes the defaults. */
export interface AugmentOptions {
  /** Probability of a horizontal flip. */
  flip?: number;
  crop?: RandomResizedCropOptions | boolean;
  colorJitter?: ColorJitterOptions | boolean;
  /** Probability of converting to grey. */
  grayscale?: number;
  lowRes?: LowResolutionOptions | boolean;
  erase?: RandomErasingOptions | boolean;
}

/** {@link AugmentOptions} with every default filled in; structured-cloneable. */
export interface ResolvedAugment {
  flip: number;
  crop: Required<RandomResizedCropOptions> | null;
  colorJitter: Required<ColorJitterOptions> | null;
  grayscale: number;
  lowRes: Required<LowResolutionOptions> | null;
  erase: Required<RandomErasingOptions> | null;
}

/** arcface_torch's training transform (SPEC §9.1): RandomHorizontalFlip(0.5). */
export const ARCFACE_AUGMENT: Readonly<AugmentOptions> = Object.freeze({ flip: 0.5 });

const AUGMENT_KEYS = ['flip', 'crop', 'colorJitter', 'grayscale', 'lowRes', 'erase'];

function probability(v: unknown, name: string): number {
  assertNumber(v, name, 0, 1);
  return v;
}

function range(v: unknown, name: string, min: number, max: number): [number, number] {
  if (!Array.isArray(v) || v.length !== 2) throw invalidParameterError(name, 'a [min, max] pair', v);
  assertNumber(v[0], `${name}[0]`, min, max);
  assertNumber(v[1], `${name}[1]`, min, max);
  if (v[0] > v[1]) throw outOfRangeError(name, 'a pair with min ≤ max', v);
  return [v[0], v[1]];
}

function section(v: unknown, name: string, known: string[]): Record<string, unknown> | null {
  if (v === undefined || v === false || v === null) return null;
  if (v === true) return {};
  if (!is.object(v)) throw invalidParameterError(name, 'an options object or a boolean', v);
  assertKnownOptions(v, name, known);
  return v;
}

/** Validates augmentation options and fills in the defaults. */
export function resolveAugment(options: AugmentOptions | undefined): ResolvedAugment {
  // Apply defaults
  const opts = (options ?? {}) as Record<string, unknown>;
  // Validate arguments
  if (!is.object(opts)) throw invalidParameterError('augment', 'an options object', options);
  assertKnownOptions(opts, 'augment', AUGMENT_KEYS);
  const flip = opts.flip === undefined ? 0 : probability(opts.flip, 'augment.flip');
  const grayscale = opts.grayscale === undefined ? 0 : probability(opts.grayscale, 'augment.grayscale');

  let crop: ResolvedAugment['crop'] = null;
  const c = section(opts.crop, 'augment.crop', ['p', 'scale', 'ratio']);
  if (c) {
    crop = {
      p: c.p === undefined ? 1 : probability(c.p, 'augment.crop.p'),
      scale: c.scale === undefined ? [0.08, 1] : range(c.scale, 'augment.crop.scale', Number.MIN_VALUE, 1),
      ratio: c.ratio === undefined ? [3 / 4, 4 / 3] : range(c.ratio, 'augment.crop.ratio', Number.MIN_VALUE, 1e6),
    };
  }

  let colorJitter: ResolvedAugment['colorJitter'] = null;
  const j = section(opts.colorJitter, 'augment.colorJitter', ['p', 'brightness', 'contrast', 'saturation']);
  if (j) {
    const f = (k: string): number => {
      if (j[k] === undefined) return 0;
      assertNumber(j[k], `augment.colorJitter.${k}`, 0, 1e6);
      return j[k] as number;
    };
    colorJitter = { p: j.p === undefined ? 1 : probability(j.p, 'augment.colorJitter.p'), brightness: f('brightness'), contrast: f('contrast'), saturation: f('saturation') };
  }

  let lowRes: ResolvedAugment['lowRes'] = null;
  const l = section(opts.lowRes, 'augment.lowRes', ['p', 'scale', 'filters']);
  if (l) {
    let filters: ResampleFilter[] = [...RESAMPLE_FILTERS];
    if (l.filters !== undefined) {
      if (!Array.isArray(l.filters) || l.filters.length === 0 || !l.filters.every((x) => RESAMPLE_FILTERS.includes(x))) {
        throw invalidParameterError('augment.lowRes.filters', `a non-empty array of ${RESAMPLE_FILTERS.map((x) => `'${x}'`).join(', ')}`, l.filters);
      }
      filters = [...(l.filters as ResampleFilter[])];
    }
    lowRes = {
      p: l.p === undefined ? 1 : probability(l.p, 'augment.lowRes.p'),
      scale: l.scale === undefined ? [0.2, 1] : range(l.scale, 'augment.lowRes.scale', Number.MIN_VALUE, 1),
      filters,
    };
  }

  let erase: ResolvedAugment['erase'] = null;
  const e = section(opts.erase, 'augment.erase', ['p', 'scale', 'ratio', 'value']);
  if (e) {
    let value: EraseValue = 0;
    if (e.value !== undefined) {
      if (e.value === 'random') value = 'random';
      else if (is.number(e.value)) {
        assertNumber(e.value, 'augment.erase.value', 0, 255);
        value = e.value;
      } else if (Array.isArray(e.value) && e.value.length === 3) {
        e.value.forEach((x, i) => assertNumber(x, `augment.erase.value[${i}]`, 0, 255));
        value = [e.value[0], e.value[1], e.value[2]];
      } else throw invalidParameterError('augment.erase.value', "a number 0–255, an [r, g, b] triple or 'random'", e.value);
    }
    erase = {
      p: e.p === undefined ? 0.5 : probability(e.p, 'augment.erase.p'),
      scale: e.scale === undefined ? [0.02, 0.33] : range(e.scale, 'augment.erase.scale', 0, 1),
      ratio: e.ratio === undefined ? [0.3, 3.3] : range(e.ratio, 'augment.erase.ratio', Number.MIN_VALUE, 1e6),
      value,
    };
  }
  // Interpret options
  return { flip, crop, colorJitter, grayscale, lowRes, erase };
}

/** True when the resolved options change no image. */
export function isIdentityAugment(a: ResolvedAugment): boolean {
  return a.flip === 0 && a.grayscale === 0 && (!a.crop || a.crop.p === 0) && (!a.colorJitter || a.colorJitter.p === 0)
    && (!a.lowRes || a.lowRes.p === 0) && (!a.erase || a.erase.p === 0);
}

// ---------------------------------------------------------------------------------------------
// Operations

/** A rectangle in pixels: columns [x, x + w), rows [y, y + h). */
export interface Rect {
  x: number;
  y: number;
  w: number;
  h: number;
}

/** Mirrors an image horizontally, in place. */
export function hflip(image: RawImage): RawImage {
  const { width, height, data } = image;
  for (let y = 0; y < height; y++) {
    let a = y * width * 3;
    let b = a + (width - 1) * 3;
    while (a < b) {
      for (let c = 0; c < 3; c++) {
        const t = data[a + c];
        data[a + c] = data[b + c];
        data[b + c] = t;
      }
      a += 3;
      b -= 3;
    }
  }
  return image;
}

/** torchvision RandomResizedCrop.get_params: the crop rectangle (ratio is w/h). */
export function cropParams(width: number, height: number, rng: CounterRng, scale: [number, number], ratio: [number, number]): Rect {
  const area = width * height;
  const logLo = Math.log(ratio[0]);
  const logHi = Math.log(ratio[1]);
  for (let attempt = 0; attempt < 10; attempt++) {
    const target = area * rng.uniform(scale[0], scale[1]);
    const aspect = Math.exp(rng.uniform(logLo, logHi));
    const w = Math.round(Math.sqrt(target * aspect));
    const h = Math.round(Math.sqrt(target / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      const y = rng.int(0, height - h);
      const x = rng.int(0, width - w);
      return { x, y, w, h };
    }
  }
  // Fallback: the centre crop with the ratio clamped into range.
  const inRatio = width / height;
  let w: number;
  let h: number;
  if (inRatio < ratio[0]) {
    w = width;
    h = Math.round(w / ratio[0]);
  } else if (inRatio > ratio[1]) {
    h = height;
    w = Math.round(h * ratio[1]);
  } else {
    w = width;
    h = height;
  }
  return { x: Math.floor((width - w) / 2), y: Math.floor((height - h) / 2), w, h };
}

/** torchvision RandomErasing.get_params: the erased rectangle (ratio is h/w), or null (no fit). */
export function eraseParams(width: number, height: number, rng: CounterRng, scale: [number, number], ratio: [number, number]): Rect | null {
  const area = width * height;
  const logLo = Math.log(ratio[0]);
  const logHi = Math.log(ratio[1]);
  for (let attempt = 0; attempt < 10; attempt++) {
    const target = area * rng.uniform(scale[0], scale[1]);
    const aspect = Math.exp(rng.uniform(logLo, logHi));
    const h = Math.round(Math.sqrt(target * aspect));
    const w = Math.round(Math.sqrt(target / aspect));
    if (!(h < height && w < width)) continue;
    const y = rng.int(0, height - h);
    const x = rng.int(0, width - w);
    return { x, y, w, h };
  }
  return null;
}

/** Fills a rectangle in place. */
export function fillRect(image: RawImage, r: Rect, value: EraseValue, rng?: CounterRng): void {
  const { width, data } = image;
  for (let y = r.y; y < r.y + r.h; y++) {
    for (let x = r.x; x < r.x + r.w; x++) {
      const p = (y * width + x) * 3;
      if (value === 'random') {
        const u = rng!.nextU32();
        data[p] = u & 255;
        data[p + 1] = (u >>> 8) & 255;
        data[p + 2] = (u >>> 16) & 255;
      } else if (typeof value === 'number') {
        data[p] = data[p + 1] = data[p + 2] = value;
      } else {
        data[p] = value[0];
        data[p + 1] = value[1];
        data[p + 2] = value[2];
      }
    }
  }
}

function grey(data: Uint8Array, p: number): number {
  // torchvision rgb_to_grayscale, truncated to uint8.
  return Math.floor(0.2989 * data[p] + 0.587 * data[p + 1] + 0.114 * data[p + 2]);
}

function clampByte(v: number): number {
  return v <= 0 ? 0 : v >= 255 ? 255 : Math.floor(v);
}

function applyTable(d: Uint8Array, table: Uint8Array): void {
  for (let i = 0; i < d.length; i++) d[i] = table[d[i]];
}

/** Brightness: v·f, in place. */
export function adjustBrightness(image: RawImage, f: number): void {
  const table = new Uint8Array(256);
  for (let v = 0; v < 256; v++) table[v] = clampByte(v * f);
  applyTable(image.data, table);
}

/** Contrast: blend with the image's mean grey level, in place. */
export function adjustContrast(image: RawImage, f: number): void {
  const d = image.data;
  let sum = 0;
  for (let p = 0; p < d.length; p += 3) sum += grey(d, p);
  const mean = sum / (d.length / 3);
  const m = (1 - f) * mean;
  const table = new Uint8Array(256);
  for (let v = 0; v < 256; v++) table[v] = clampByte(f * v + m);
  applyTable(d, table);
}

/** Saturation: blend each pixel with its grey level, in place. */
export function adjustSaturation(image: RawImage, f: number): void {
  const d = image.data;
  for (let p = 0; p < d.length; p += 3) {
    const g = (1 - f) * grey(d, p);
    d[p] = clampByte(f * d[p] + g);
    d[p + 1] = clampByte(f * d[p + 1] + g);
    d[p + 2] = clampByte(f * d[p + 2] + g);
  }
}

/** Grey level in all three channels, in place. */
export function toGrayscale(image: RawImage): void {
  const d = image.data;
  for (let p = 0; p < d.length; p += 3) d[p] = d[p + 1] = d[p + 2] = grey(d, p);
}

function factor(rng: CounterRng, x: number): number {
  return rng.uniform(Math.max(0, 1 - x), 1 + x);
}

/** The augmentation key of one sample. */
export interface SampleKey {
  seed: number;
  epoch: number;
  index: number;
}

/**
 * Applies the resolved augmentations to one image. May modify `image` in place; returns the result
 * (a new image when a crop or a resize happened). Same image, options and key → same bytes.
 */
export function augmentImage(image: RawImage, a: ResolvedAugment, key: SampleKey): RawImage {
  const rng = (stream: number): CounterRng => new CounterRng({ seed: key.seed, epoch: key.epoch, index: key.index, stream });
  let img = image;
  const { width, height } = img;

  if (a.crop && a.crop.p > 0) {
    const r = rng(STREAMS.crop);
    if (r.chance(a.crop.p)) {
      const rect = cropParams(width, height, r, a.crop.scale, a.crop.ratio);
      img = resampleRegion(img, rect.x, rect.y, rect.w, rect.h, width, height, 'bilinear');
    }
  }
  if (a.flip > 0 && rng(STREAMS.flip).chance(a.flip)) hflip(img);
  if (a.colorJitter && a.colorJitter.p > 0) {
    const r = rng(STREAMS.colorJitter);
    if (r.chance(a.colorJitter.p)) {
      const { brightness, contrast, saturation } = a.colorJitter;
      // torchvision's order: a random permutation of the operations, then the factors in that order.
      const order = [0, 1, 2];
      for (let i = 2; i > 0; i--) {
        const k = r.int(0, i);
        [order[i], order[k]] = [order[k], order[i]];
      }
      for (const op of order) {
        if (op === 0 && brightness > 0) adjustBrightness(img, factor(r, brightness));
        else if (op === 1 && contrast > 0) adjustContrast(img, factor(r, contrast));
        else if (op === 2 && saturation > 0) adjustSaturation(img, factor(r, saturation));
      }
    }
  }
  if (a.grayscale > 0 && rng(STREAMS.grayscale).chance(a.grayscale)) toGrayscale(img);
  if (a.lowRes && a.lowRes.p > 0) {
    const r = rng(STREAMS.lowRes);
    if (r.chance(a.lowRes.p)) {
      const u = r.uniform(a.lowRes.scale[0], a.lowRes.scale[1]);
      const sw = Math.max(1, Math.floor(u * width));
      const sh = Math.max(1, Math.floor(u * height));
      const down = a.lowRes.filters[r.int(0, a.lowRes.filters.length - 1)];
      const up = a.lowRes.filters[r.int(0, a.lowRes.filters.length - 1)];
      if (sw !== width || sh !== height) {
        const small = resampleRegion(img, 0, 0, width, height, sw, sh, down);
        img = resampleRegion(small, 0, 0, sw, sh, width, height, up);
      }
    }
  }
  if (a.erase && a.erase.p > 0) {
    const r = rng(STREAMS.erase);
    if (r.chance(a.erase.p)) {
      const rect = eraseParams(width, height, r, a.erase.scale, a.erase.ratio);
      if (rect) fillRect(img, rect, a.erase.value, r);
    }
  }
  return img;
}
