/**
 * Images in memory: decoding (JPEG/PNG through sharp), a pure-JS resampler, and the normalization
 * into the NCHW float32 layout the backbones take (SPEC §9.1: ToTensor → Normalize(0.5, 0.5)).
 *
 * - {@link decodeImage}: encoded bytes → {@link RawImage} (HWC, 8-bit, RGB or BGR). Grey images are
 *   expanded to three channels and an alpha channel is dropped (not flattened), as cv2.imdecode with
 *   IMREAD_COLOR does. An image that is not size×size is resized with {@link resizeImage} (bilinear,
 *   antialiased when shrinking) and the result says so (`resized`), so a loader can warn once.
 *   A file sharp cannot decode (unknown format, truncated JPEG, bad header) is `CORRUPT_FILE`.
 * - {@link resizeImage} / {@link resampleRegion}: a separable resampler (the Pillow scheme: per output
 *   pixel, a filter centred on the source position, its support widened by the scale factor when
 *   shrinking, weights normalized). Filters: 'nearest', 'bilinear' (triangle), 'area' (box, cv2's
 *   INTER_AREA when shrinking). Source coordinates use pixel centres (align_corners = false).
 * - {@link normalizeInto}: writes one image as CHW float32, (v/255 − 0.5)/0.5, into a batch buffer at
 *   an offset, optionally mirrored and with R and B swapped. The 256 possible values come from a table
 *   computed once, so the output is bitwise identical on every thread.
 *
 * sharp is loaded on first use: modules that only resample or normalize do not load libvips.
 */
import { FacecudaError, invalidParameterError, outOfRangeError } from '../errors';
import { assertInteger, assertKnownOptions, assertOneOf, is, optionsObject } from '../validate';
import type { RawImage } from './types';

export type ColorOrder = 'RGB' | 'BGR';
export const COLOR_ORDERS: readonly ColorOrder[] = ['RGB', 'BGR'];

export type ResampleFilter = 'nearest' | 'bilinear' | 'area';
export const RESAMPLE_FILTERS: readonly ResampleFilter[] = ['nearest', 'bilinear', 'area'];

export interface DecodeOptions {
  /** Output side in pixels (default 112); other sizes are resized to size×size. */
  size?: number;
  /** Channel order of the result (default 'RGB'). */
  colorOrder?: ColorOrder;
}

export interface DecodedImage extends RawImage {
  /** True when the file was not size×size and was resized. */
  readonly resized: boolean;
  /** The file's own dimensions. */
  readonly sourceWidth: number;
  readonly sourceHeight: number;
}

export interface NormalizeOptions {
  /** Mirror horizontally while writing (default false). */
  flip?: boolean;
  /** Channel order to write (default 'RGB'; 'BGR' swaps R and B of an RGB image). */
  colorOrder?: ColorOrder;
}

type SharpModule = typeof import('sharp');

let sharpLib: SharpModule | undefined;

/** sharp, loaded on first use. */
export function loadSharp(): SharpModule {
  if (!sharpLib) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    sharpLib = require('sharp') as SharpModule;
  }
  return sharpLib;
}

/** Checks that `v` is a RawImage with consistent dimensions. */
export function assertRawImage(v: unknown, name: string): asserts v is RawImage {
  if (!is.object(v)) throw invalidParameterError(name, 'a RawImage object', v);
  const { width, height, channels, data } = v as Record<string, unknown>;
  if (!is.integer(width) || width < 1) throw invalidParameterError(`${name}.width`, 'a positive integer', width);
  if (!is.integer(height) || height < 1) throw invalidParameterError(`${name}.height`, 'a positive integer', height);
  if (channels !== 3) throw invalidParameterError(`${name}.channels`, '3', channels);
  if (!ArrayBuffer.isView(data) || Object.prototype.toString.call(data) !== '[object Uint8Array]') {
    throw invalidParameterError(`${name}.data`, 'a Uint8Array', data);
  }
  if ((data as Uint8Array).length !== width * height * 3) {
    throw outOfRangeError(`${name}.data length`, `width·height·3 = ${width * height * 3}`, (data as Uint8Array).length);
  }
}

/**
 * Decodes a JPEG or PNG (anything sharp reads) into an 8-bit, three-channel image of size×size.
 *
 * @example
 * const img = await decodeImage(await fs.promises.readFile('face.jpg'));
 * if (img.resized) console.warn(`resized from ${img.sourceWidth}×${img.sourceHeight}`);
 */
export async function decodeImage(bytes: Uint8Array, options?: DecodeOptions): Promise<DecodedImage> {
  // Apply defaults
  const opts = optionsObject(options, 'decodeImage options');
  assertKnownOptions(opts, 'decodeImage', ['size', 'colorOrder']);
  const size = opts.size ?? 112;
  const colorOrder = opts.colorOrder ?? 'RGB';
  // Validate arguments
  if (!ArrayBuffer.isView(bytes) || Object.prototype.toString.call(bytes) !== '[object Uint8Array]') {
    throw invalidParameterError('bytes', 'a Uint8Array (or Buffer)', bytes);
  }
  assertInteger(size, 'size', 1, 16384);
  assertOneOf(colorOrder, 'colorOrder', COLOR_ORDERS);
  // Interpret options
  const sharp = loadSharp();
  const input = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let data: Buffer;
  let info: import('sharp').OutputInfo;
  try {
    ({ data, info } = await sharp(input, { failOn: 'error' }).removeAlpha().toColourspace('srgb').raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true }));
  } catch (err) {
    throw new FacecudaError('CORRUPT_FILE', `Cannot decode image (${bytes.byteLength} bytes): ${(err as Error).message}`);
  }
  let pixels = toThreeChannels(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), info.width, info.height, info.channels);
  let image: RawImage = { width: info.width, height: info.height, channels: 3, data: pixels };
  const resized = info.width !== size || info.height !== size;
  if (resized) image = resizeImage(image, size, size, 'bilinear');
  pixels = image.data;
  if (colorOrder === 'BGR') swapRedBlue(pixels);
  return { width: size, height: size, channels: 3, data: pixels, resized, sourceWidth: info.width, sourceHeight: info.height };
}

function toThreeChannels(src: Uint8Array, width: number, height: number, channels: number): Uint8Array {
  if (channels === 3) return src;
  const n = width * height;
  const out = new Uint8Array(n * 3);
  if (channels === 1 || channels === 2) {
    for (let i = 0; i < n; i++) {
      const g = src[i * channels];
      out[3 * i] = g;
      out[3 * i + 1] = g;
      out[3 * i + 2] = g;
    }
  } else if (channels === 4) {
    for (let i = 0; i < n; i++) {
      out[3 * i] = src[4 * i];
      out[3 * i + 1] = src[4 * i + 1];
      out[3 * i + 2] = src[4 * i + 2];
    }
  } else {
    throw new FacecudaError('CORRUPT_FILE', `Cannot decode image: ${channels} channels after conversion to sRGB`);
  }
  return out;
}

/** Swaps channels 0 and 2 of an HWC image in place (RGB ↔ BGR). */
export function swapRedBlue(data: Uint8Array): void {
  for (let i = 0; i + 2 < data.length; i += 3) {
    const t = data[i];
    data[i] = data[i + 2];
    data[i + 2] = t;
  }
}

// ---------------------------------------------------------------------------------------------
// Resampling

interface Taps {
  /** First source index per output pixel. */
  start: Int32Array;
  /** Number of taps per output pixel. */
  count: Int32Array;
  /** Weights, `stride` per output pixel. */
  weights: Float64Array;
  stride: number;
}

/**
 * Filter taps for one axis: output pixel o (of `outLen`) samples the source interval
 * [x0, x0 + len) of an axis of `srcLen` pixels.
 */
function computeTaps(srcLen: number, x0: number, len: number, outLen: number, requested: ResampleFilter): Taps {
  const scale = len / outLen;
  // cv2's INTER_AREA enlarges bilinearly.
  const filter = requested === 'area' && scale < 1 ? 'bilinear' : requested;
  const start = new Int32Array(outLen);
  const count = new Int32Array(outLen);
  if (filter === 'nearest') {
    const weights = new Float64Array(outLen).fill(1);
    for (let o = 0; o < outLen; o++) {
      const x = Math.floor(x0 + (o + 0.5) * scale);
      start[o] = Math.min(srcLen - 1, Math.max(0, x));
      count[o] = 1;
    }
    return { start, count, weights, stride: 1 };
  }
  const support = (filter === 'area' ? 0.5 : 1) * Math.max(scale, 1);
  const fscale = Math.max(scale, 1);
  const stride = Math.ceil(support) * 2 + 1;
  const weights = new Float64Array(outLen * stride);
  for (let o = 0; o < outLen; o++) {
    const center = x0 + (o + 0.5) * scale;
    let lo = Math.floor(center - support + 0.5);
    let hi = Math.floor(center + support + 0.5);
    if (lo < 0) lo = 0;
    if (hi > srcLen) hi = srcLen;
    if (hi <= lo) {
      // Entirely outside the image (a region beyond the border): clamp to the nearest pixel.
      lo = Math.min(srcLen - 1, Math.max(0, Math.floor(center)));
      hi = lo + 1;
    }
    let n = hi - lo;
    if (n > stride) n = stride;
    let sum = 0;
    for (let k = 0; k < n; k++) {
      const d = (lo + k + 0.5 - center) / fscale;
      let w: number;
      if (filter === 'area') w = d >= -0.5 && d < 0.5 ? 1 : 0;
      else w = Math.max(0, 1 - Math.abs(d));
      weights[o * stride + k] = w;
      sum += w;
    }
    if (sum === 0) {
      weights[o * stride] = 1;
      n = 1;
      lo = Math.min(srcLen - 1, Math.max(0, Math.floor(center)));
      sum = 1;
    }
    for (let k = 0; k < n; k++) weights[o * stride + k] /= sum;
    start[o] = lo;
    count[o] = n;
  }
  return { start, count, weights, stride };
}

/**
 * Resamples the region [x, x + w) × [y, y + h) of `src` (source pixels, may be fractional) to an
 * outW × outH image. Separable: a horizontal pass into float rows, then a vertical pass, rounded to
 * the nearest integer and clamped to [0, 255].
 */
export function resampleRegion(
  src: RawImage, x: number, y: number, w: number, h: number, outW: number, outH: number, filter: ResampleFilter = 'bilinear',
): RawImage {
  const sw = src.width;
  const sd = src.data;
  const tx = computeTaps(sw, x, w, outW, filter);
  const ty = computeTaps(src.height, y, h, outH, filter);
  // Source rows the vertical pass needs.
  let rowLo = src.height;
  let rowHi = 0;
  for (let o = 0; o < outH; o++) {
    rowLo = Math.min(rowLo, ty.start[o]);
    rowHi = Math.max(rowHi, ty.start[o] + ty.count[o]);
  }
  const rows = rowHi - rowLo;
  const rowLen = outW * 3;
  const tmp = new Float32Array(rows * rowLen);
  const xs = tx.start;
  const xn = tx.count;
  const xw = tx.weights;
  const xstride = tx.stride;
  for (let r = 0; r < rows; r++) {
    const srow = (rowLo + r) * sw * 3;
    const trow = r * rowLen;
    for (let o = 0; o < outW; o++) {
      const n = xn[o];
      const wb = o * xstride;
      let p = srow + xs[o] * 3;
      let a = 0;
      let b = 0;
      let c = 0;
      for (let k = 0; k < n; k++, p += 3) {
        const wk = xw[wb + k];
        a += wk * sd[p];
        b += wk * sd[p + 1];
        c += wk * sd[p + 2];
      }
      const t = trow + o * 3;
      tmp[t] = a;
      tmp[t + 1] = b;
      tmp[t + 2] = c;
    }
  }
  const out = new Uint8Array(outW * outH * 3);
  const acc = new Float32Array(rowLen);
  for (let o = 0; o < outH; o++) {
    const s0 = ty.start[o] - rowLo;
    const n = ty.count[o];
    const wb = o * ty.stride;
    acc.fill(0);
    for (let k = 0; k < n; k++) {
      const wk = ty.weights[wb + k];
      const base = (s0 + k) * rowLen;
      for (let i = 0; i < rowLen; i++) acc[i] += wk * tmp[base + i];
    }
    const orow = o * rowLen;
    for (let i = 0; i < rowLen; i++) {
      const v = Math.round(acc[i]);
      out[orow + i] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
  }
  return { width: outW, height: outH, channels: 3, data: out };
}

/** Resizes a whole image to width × height. */
export function resizeImage(src: RawImage, width: number, height: number, filter: ResampleFilter = 'bilinear'): RawImage {
  // Validate arguments
  assertRawImage(src, 'src');
  assertInteger(width, 'width', 1, 16384);
  assertInteger(height, 'height', 1, 16384);
  assertOneOf(filter, 'filter', RESAMPLE_FILTERS);
  // Interpret options
  if (width === src.width && height === src.height) return { width, height, channels: 3, data: src.data.slice() };
  return resampleRegion(src, 0, 0, src.width, src.height, width, height, filter);
}

// ---------------------------------------------------------------------------------------------
// Normalization

/** (v/255 − 0.5)/0.5 for every byte, rounded once to float32. */
export const NORMALIZE_TABLE: Float32Array = (() => {
  const t = new Float32Array(256);
  for (let v = 0; v < 256; v++) t[v] = (v / 255 - 0.5) / 0.5;
  return t;
})();

/**
 * Writes `raw` as CHW float32, (v/255 − 0.5)/0.5, into out[offset, offset + 3·h·w).
 *
 * @example
 * const images = new Float32Array(n * 3 * 112 * 112);
 * normalizeInto(img, images, i * 3 * 112 * 112, { flip: false });
 */
export function normalizeInto(raw: RawImage, out: Float32Array, offset: number, options?: NormalizeOptions): void {
  // Apply defaults
  const opts = optionsObject(options, 'normalizeInto options');
  assertKnownOptions(opts, 'normalizeInto', ['flip', 'colorOrder']);
  const flip = opts.flip ?? false;
  const colorOrder = opts.colorOrder ?? 'RGB';
  // Validate arguments
  assertRawImage(raw, 'raw');
  if (!ArrayBuffer.isView(out) || Object.prototype.toString.call(out) !== '[object Float32Array]') {
    throw invalidParameterError('out', 'a Float32Array', out);
  }
  const plane = raw.width * raw.height;
  assertInteger(offset, 'offset', 0, Math.max(0, out.length - 3 * plane));
  if (out.length < 3 * plane) throw outOfRangeError('out length', `at least ${3 * plane}`, out.length);
  if (!is.bool(flip)) throw invalidParameterError('flip', 'a boolean', flip);
  assertOneOf(colorOrder, 'colorOrder', COLOR_ORDERS);
  // Interpret options
  normalizeUnchecked(raw, out, offset, flip, colorOrder === 'BGR');
}

/** {@link normalizeInto} without argument checks (the loader's inner loop). */
export function normalizeUnchecked(raw: RawImage, out: Float32Array, offset: number, flip: boolean, swap: boolean): void {
  const { width, height, data } = raw;
  const plane = width * height;
  const t = NORMALIZE_TABLE;
  const c0 = offset + (swap ? 2 * plane : 0);
  const c1 = offset + plane;
  const c2 = offset + (swap ? 0 : 2 * plane);
  if (!flip) {
    for (let q = 0, p = 0; q < plane; q++, p += 3) {
      out[c0 + q] = t[data[p]];
      out[c1 + q] = t[data[p + 1]];
      out[c2 + q] = t[data[p + 2]];
    }
    return;
  }
  for (let y = 0; y < height; y++) {
    const row = y * width;
    for (let x = 0, p = (row + width - 1) * 3; x < width; x++, p -= 3) {
      const q = row + x;
      out[c0 + q] = t[data[p]];
      out[c1 + q] = t[data[p + 1]];
      out[c2 + q] = t[data[p + 2]];
    }
  }
}
