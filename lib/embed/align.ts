/**
 * Face alignment: five detected landmarks → the ArcFace template by a least-squares similarity
 * transform (SPEC §10.3), and the warp of the image into the aligned crop.
 *
 * Coordinates are pixel indices: (0, 0) is the centre of the top-left pixel, x to the right, y down —
 * the convention of cv2.warpAffine and skimage, so landmarks from insightface's detectors and the
 * `_name_5pts_score.txt` files of IJB-B/C are used as they are.
 *
 * - {@link similarityTransform}: the rotation + uniform scale + translation minimizing the summed
 *   squared distance from the transformed source points to the destination points (Umeyama's
 *   solution; in 2-D it has the closed form below, never a reflection). Returns the 2×3 matrix M of
 *   `dst ≈ M·[x, y, 1]`, cv2's layout.
 * - {@link alignFace}: decodes (sharp), then warps with bilinear interpolation so that output pixel
 *   (X, Y) takes the source value at M⁻¹·(X, Y), with black (0) outside the image — what
 *   `cv2.warpAffine(img, M, (size, size), borderValue=0)` computes (cv2 rounds its bilinear weights to
 *   1/32; this does not). The warp runs in libvips (sharp's `affine`), on libuv's thread pool, never
 *   on the JavaScript thread: the source is first cut to the rectangle the crop needs (so a small face
 *   in a large photo costs a small warp), the transform is given to libvips with input and output
 *   offsets, and the size×size window is then read out of libvips' output, whose origin is the
 *   rounded bounding box of the transformed input rectangle (checked pixel by pixel against an
 *   independent warp in test/unit/align.test.ts).
 *
 * EXIF orientation is not applied (the pixels as stored, as {@link decodeImage} reads them): give
 * landmarks in the stored image's coordinates.
 */
import { ARCFACE_TEMPLATE_112, alignmentTemplate } from '../backbones/arch';
import { FacecudaError, invalidParameterError, outOfRangeError } from '../errors';
import { assertRawImage, loadSharp } from '../data/image';
import type { RawImage } from '../data/types';
import { assertInteger, assertKnownOptions, optionsObject } from '../validate';

export { ARCFACE_TEMPLATE_112 };

/** A 2×3 affine matrix [[a, b, tx], [c, d, ty]]: (x, y) ↦ (a·x + b·y + tx, c·x + d·y + ty). */
export type AffineMatrix = readonly [readonly [number, number, number], readonly [number, number, number]];

/** Points as [[x, y], …] or a flat [x0, y0, x1, y1, …] array. */
export type Points = ArrayLike<ArrayLike<number>> | ArrayLike<number>;

/** Options of {@link alignFace}. */
export interface AlignOptions {
  /** Side of the square crop (default 112): the ArcFace template scaled as insightface does (a multiple of 112 or 128). */
  size?: number;
  /** Destination points in crop pixels (default: the ArcFace template for `size`). */
  template?: Points;
}

/** What {@link alignFace} returns: the aligned RGB crop and the transform that made it. */
export interface AlignedFace extends RawImage {
  /** source pixel coordinates → crop pixel coordinates. */
  readonly matrix: AffineMatrix;
}

function isTypedNumbers(v: unknown): v is ArrayLike<number> {
  return ArrayBuffer.isView(v) && !(v instanceof DataView) && !/Big(Int|Uint)64Array/.test(Object.prototype.toString.call(v));
}

/**
 * Reads points as a Float64Array [x0, y0, x1, y1, …].
 * @internal
 */
export function readPoints(v: unknown, name: string): Float64Array {
  let flat: Float64Array;
  if (isTypedNumbers(v)) {
    flat = Float64Array.from(v as ArrayLike<number>);
  } else if (Array.isArray(v) && v.length > 0 && typeof v[0] === 'number') {
    flat = Float64Array.from(v as number[]);
    if (!(v as unknown[]).every((x) => typeof x === 'number')) throw invalidParameterError(name, 'an array of [x, y] points or of numbers', v);
  } else if (Array.isArray(v)) {
    flat = new Float64Array(v.length * 2);
    v.forEach((p: unknown, i: number) => {
      const ok = (Array.isArray(p) || isTypedNumbers(p)) && (p as ArrayLike<unknown>).length === 2
        && typeof (p as ArrayLike<unknown>)[0] === 'number' && typeof (p as ArrayLike<unknown>)[1] === 'number';
      if (!ok) throw invalidParameterError(`${name}[${i}]`, 'an [x, y] pair of numbers', p);
      flat[2 * i] = (p as ArrayLike<number>)[0];
      flat[2 * i + 1] = (p as ArrayLike<number>)[1];
    });
  } else {
    throw invalidParameterError(name, 'an array of [x, y] points or a typed array of x, y values', v);
  }
  if (flat.length % 2 !== 0) throw outOfRangeError(`${name} length`, 'an even number of values (x, y pairs)', flat.length);
  for (let i = 0; i < flat.length; i++) {
    if (!Number.isFinite(flat[i])) throw outOfRangeError(`${name} value ${i}`, 'a finite number', flat[i]);
  }
  return flat;
}

/**
 * The least-squares similarity transform taking `src` points to `dst` points (no reflection).
 *
 * With centred points p_i = src_i − mean(src), q_i = dst_i − mean(dst) and the transform
 * [[a, −b], [b, a]]·p + t, the optimum is a = Σ(p·q)/Σ|p|², b = Σ(p × q)/Σ|p|² (p × q = pₓq_y − p_yqₓ),
 * t = mean(dst) − [[a, −b], [b, a]]·mean(src): Umeyama's estimate, as skimage's SimilarityTransform
 * computes it.
 *
 * @param src points in the source image (5 landmarks, or any n ≥ 2 points)
 * @param dst as many destination points (default: the ArcFace 112×112 template)
 * @returns the 2×3 matrix M with dst ≈ M·[x, y, 1]
 * @throws TypeError for malformed points; RangeError for a count mismatch, non-finite values or
 *   coincident source points
 * @example
 * const M = similarityTransform(landmarks);           // → ARCFACE_TEMPLATE_112
 * const [x, y] = applyAffine(M, landmarks[0]);        // ≈ [38.29, 51.70]
 */
export function similarityTransform(src: Points, dst: Points = ARCFACE_TEMPLATE_112): AffineMatrix {
  // Validate arguments
  const s = readPoints(src, 'src');
  const d = readPoints(dst, 'dst');
  const n = s.length / 2;
  if (n < 2) throw outOfRangeError('src length', 'at least 2 points', n);
  if (d.length !== s.length) throw outOfRangeError('dst length', `${n} points (as many as src)`, d.length / 2);
  // Interpret options
  let sx = 0;
  let sy = 0;
  let dx = 0;
  let dy = 0;
  for (let i = 0; i < n; i++) {
    sx += s[2 * i];
    sy += s[2 * i + 1];
    dx += d[2 * i];
    dy += d[2 * i + 1];
  }
  sx /= n;
  sy /= n;
  dx /= n;
  dy /= n;
  let var2 = 0;
  let dot = 0;
  let cross = 0;
  for (let i = 0; i < n; i++) {
    const px = s[2 * i] - sx;
    const py = s[2 * i + 1] - sy;
    const qx = d[2 * i] - dx;
    const qy = d[2 * i + 1] - dy;
    var2 += px * px + py * py;
    dot += px * qx + py * qy;
    cross += px * qy - py * qx;
  }
  let spread = 0;
  for (let i = 0; i < s.length; i++) spread = Math.max(spread, Math.abs(s[i]));
  if (!(var2 > 1e-20 * Math.max(1, spread * spread))) throw outOfRangeError('src', 'points that are not all the same', Array.from(s));
  const a = dot / var2;
  const b = cross / var2;
  return [
    [a, -b, dx - (a * sx - b * sy)],
    [b, a, dy - (b * sx + a * sy)],
  ];
}

/** M·[x, y, 1]. */
export function applyAffine(m: AffineMatrix, point: ArrayLike<number>): [number, number] {
  const [x, y] = [point[0], point[1]];
  return [m[0][0] * x + m[0][1] * y + m[0][2], m[1][0] * x + m[1][1] * y + m[1][2]];
}

/**
 * The inverse of an affine matrix.
 * @throws RangeError for a singular matrix
 */
export function invertAffine(m: AffineMatrix): AffineMatrix {
  const [[a, b, tx], [c, d, ty]] = m;
  const det = a * d - b * c;
  if (!Number.isFinite(det) || det === 0) throw outOfRangeError('matrix', 'an invertible affine matrix', m);
  const ia = d / det;
  const ib = -b / det;
  const ic = -c / det;
  const id = a / det;
  return [
    [ia, ib, -(ia * tx + ib * ty)],
    [ic, id, -(ic * tx + id * ty)],
  ];
}

/** The template for a crop side: ArcFace's, scaled as insightface's estimate_norm does. */
function templateFor(size: number): Float64Array {
  if (size % 112 !== 0 && size % 128 !== 0) throw outOfRangeError('size', 'a multiple of 112 or 128 (or pass a template)', size);
  return readPoints(alignmentTemplate(size).landmarks, 'template');
}

function isUint8Array(v: unknown): v is Uint8Array {
  return ArrayBuffer.isView(v) && Object.prototype.toString.call(v) === '[object Uint8Array]';
}

/** Distance of v's fractional part from one half (how safe rounding v is). */
function tieDistance(v: number): number {
  return Math.abs(v - Math.floor(v) - 0.5);
}

/** Bounding-box origin of A·[0, w] × [0, h] as libvips rounds it. */
function boxOrigin(a: number, b: number, c: number, d: number, w: number, h: number): { x: number; y: number; tie: number } {
  const xs = [0, a * w, b * h, a * w + b * h];
  const ys = [0, c * w, d * h, c * w + d * h];
  const x = Math.min(...xs);
  const y = Math.min(...ys);
  return { x: Math.round(x), y: Math.round(y), tie: Math.min(tieDistance(x), tieDistance(y)) };
}

/** Grey, grey+alpha, RGB or RGBA pixels → RGB. */
function toRgb(src: Uint8Array, n: number, channels: number): Uint8Array {
  if (channels === 3) return src;
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    if (channels <= 2) {
      const g = src[i * channels];
      out[3 * i] = g;
      out[3 * i + 1] = g;
      out[3 * i + 2] = g;
    } else {
      out[3 * i] = src[i * channels];
      out[3 * i + 1] = src[i * channels + 1];
      out[3 * i + 2] = src[i * channels + 2];
    }
  }
  return out;
}

/**
 * Warps a decoded or encoded image with `matrix` (source → crop coordinates) into a size×size RGB
 * crop, bilinear, black outside the source. The pixel work runs in libvips, in two passes:
 *
 * 1. cut out the source rectangle the crop reads (the inverse image of the crop's pixel centres plus
 *    a margin worth 3 crop pixels; bilinear reads floor(x) and floor(x) + 1), padded with black
 *    where it runs past the image, so that the image's own edge blends with black exactly as
 *    cv2's BORDER_CONSTANT does;
 * 2. warp it with libvips' affine and copy the size×size window out of libvips' output frame: the
 *    rounded bounding box of the transformed rectangle, which offsets do not move (see below). The
 *    rectangle gets 0–2 extra black columns and rows (never read) so that no corner of that box
 *    sits on a rounding tie.
 * @internal (alignFace's engine, also used by FaceEmbedder)
 */
export async function warpAffine(image: Uint8Array | RawImage, matrix: AffineMatrix, size: number): Promise<RawImage> {
  const sharp = loadSharp();
  const encoded = isUint8Array(image);
  const corrupt = (err: unknown): FacecudaError =>
    new FacecudaError('CORRUPT_FILE', `Cannot decode image (${(image as Uint8Array).byteLength} bytes): ${(err as Error).message}`);
  const open = (): import('sharp').Sharp => (encoded
    ? sharp(Buffer.from(image.buffer, image.byteOffset, image.byteLength), { failOn: 'error' })
    : sharp(Buffer.from(image.data.buffer, image.data.byteOffset, image.data.byteLength), { raw: { width: image.width, height: image.height, channels: 3 } }));
  let width: number;
  let height: number;
  if (encoded) {
    try {
      const meta = await open().metadata();
      if (!meta.width || !meta.height) throw new Error('no image dimensions');
      width = meta.width;
      height = meta.height;
    } catch (err) {
      throw corrupt(err);
    }
  } else {
    width = image.width;
    height = image.height;
  }
  const out = new Uint8Array(size * size * 3);
  // Pass 1: the source rectangle [L0, R0) × [T0, B0) the crop reads.
  const inv = invertAffine(matrix);
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -Infinity;
  let y1 = -Infinity;
  for (const [X, Y] of [[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]]) {
    const [x, y] = applyAffine(inv, [X, Y]);
    x0 = Math.min(x0, x);
    y0 = Math.min(y0, y);
    x1 = Math.max(x1, x);
    y1 = Math.max(y1, y);
  }
  const [[a, b, tx], [c, d, ty]] = matrix;
  // A margin of 3 crop pixels around what the crop reads, in source pixels.
  const margin = 3 + Math.ceil(3 / Math.sqrt(Math.abs(a * d - b * c)));
  const L0 = Math.floor(x0) - margin;
  const T0 = Math.floor(y0) - margin;
  const R0 = Math.floor(x1) + 1 + margin;
  const B0 = Math.floor(y1) + 1 + margin;
  const left = Math.max(0, L0);
  const top = Math.max(0, T0);
  const right = Math.min(width, R0);
  const bottom = Math.min(height, B0);
  if (right <= left || bottom <= top) return { width: size, height: size, channels: 3, data: out }; // the face is outside the image
  // Black padding past the image, at most a margin's worth: farther out the crop is black anyway
  // (those crop pixels lie outside libvips' frame and stay 0).
  const padL = Math.min(margin, left - L0);
  const padT = Math.min(margin, top - T0);
  const padR0 = Math.min(margin, R0 - right);
  const padB0 = Math.min(margin, B0 - bottom);
  let best: { padR: number; padB: number; o: ReturnType<typeof boxOrigin> } | null = null;
  for (const [er, eb] of [[0, 0], [1, 0], [0, 1], [1, 1], [2, 0], [0, 2], [2, 1], [1, 2], [2, 2]]) {
    const o = boxOrigin(a, b, c, d, padL + (right - left) + padR0 + er, padT + (bottom - top) + padB0 + eb);
    if (!best || o.tie > best.o.tie) best = { padR: padR0 + er, padB: padB0 + eb, o };
    if (best.o.tie > 1e-6) break;
  }
  const { padR, padB, o } = best!;
  const w = padL + (right - left) + padR;
  const h = padT + (bottom - top) + padB;
  let region: Buffer;
  let channels: number;
  try {
    let pipeline = open().extract({ left, top, width: right - left, height: bottom - top });
    if (padL || padT || padR || padB) pipeline = pipeline.extend({ left: padL, top: padT, right: padR, bottom: padB, background: { r: 0, g: 0, b: 0, alpha: 1 } });
    const r = await pipeline.removeAlpha().toColourspace('srgb').raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
    if (r.info.width !== w || r.info.height !== h) throw new FacecudaError('INTERNAL', `alignment: expected a ${w}×${h} region, libvips gave ${r.info.width}×${r.info.height}`);
    region = r.data;
    channels = r.info.channels;
  } catch (err) {
    if (err instanceof FacecudaError) throw err;
    if (encoded) throw corrupt(err);
    throw new FacecudaError('INTERNAL', `The alignment warp failed: ${(err as Error).message}`);
  }
  if (channels < 1 || channels > 4) throw new FacecudaError('CORRUPT_FILE', `Cannot decode image: ${channels} channels after conversion to sRGB`);
  const rgb = toRgb(new Uint8Array(region.buffer, region.byteOffset, region.byteLength), w * h, channels);
  // Pass 2: the warp. Region pixel u is source pixel u + (left − padL, top − padT), so crop
  // coordinates are A·u + T with T = A·(left − padL, top − padT) + (tx, ty). libvips' output frame
  // is fixed by A and the region's size (offsets move the content, not the frame): give it only
  // T's fractional part, and crop pixel X is then frame pixel X − round(T) − origin.
  const ox = left - padL;
  const oy = top - padT;
  const Tx = a * ox + b * oy + tx;
  const Ty = c * ox + d * oy + ty;
  const sx = Math.round(Tx);
  const sy = Math.round(Ty);
  let data: Buffer;
  let info: import('sharp').OutputInfo;
  try {
    ({ data, info } = await sharp(Buffer.from(rgb.buffer, rgb.byteOffset, rgb.byteLength), { raw: { width: w, height: h, channels: 3 } })
      .affine([[a, b], [c, d]], { odx: Tx - sx, ody: Ty - sy, background: { r: 0, g: 0, b: 0 }, interpolator: 'bilinear' })
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true }));
  } catch (err) {
    throw new FacecudaError('INTERNAL', `The alignment warp failed: ${(err as Error).message}`);
  }
  const ow = info.width;
  const oh = info.height;
  if (info.channels !== 3) throw new FacecudaError('INTERNAL', `The alignment warp gave ${info.channels} channels`);
  const fx = sx + o.x;
  const fy = sy + o.y;
  // Crop pixel (X, Y) is frame pixel (X − fx, Y − fy).
  const i0 = Math.max(0, fx);
  const i1 = Math.min(size, fx + ow);
  if (i1 > i0) {
    for (let Y = 0; Y < size; Y++) {
      const j = Y - fy;
      if (j < 0 || j >= oh) continue;
      out.set(data.subarray((j * ow + (i0 - fx)) * 3, (j * ow + (i1 - fx)) * 3), (Y * size + i0) * 3);
    }
  }
  return { width: size, height: size, channels: 3, data: out };
}

/**
 * Aligns a face: the similarity transform from its five landmarks to the template, then the warp
 * into a size×size RGB crop (bilinear, black outside the image; see the file header).
 *
 * @param image an encoded file (JPEG, PNG, … anything sharp reads) or a {@link RawImage}
 * @param landmarks 5 points (eyes, nose tip, mouth corners, image-left first), [[x, y], …] or flat
 * @throws `CORRUPT_FILE` for an undecodable file; TypeError / RangeError for bad arguments
 * @example
 * const face = await alignFace(jpegBytes, [[180, 210], [245, 208], [212, 250], [188, 290], [240, 288]]);
 * face.width; // 112
 */
export async function alignFace(image: Uint8Array | RawImage, landmarks: Points, options?: AlignOptions): Promise<AlignedFace> {
  // Apply defaults
  const opts = optionsObject(options, 'options');
  assertKnownOptions(opts, 'alignFace', ['size', 'template']);
  const size = opts.size ?? 112;
  // Validate arguments
  if (!isUint8Array(image)) assertRawImage(image, 'image');
  assertInteger(size, 'size', 8, 4096);
  const dst = opts.template !== undefined ? readPoints(opts.template, 'template') : templateFor(size as number);
  const src = readPoints(landmarks, 'landmarks');
  if (src.length !== dst.length) throw outOfRangeError('landmarks length', `${dst.length / 2} points (as many as the template)`, src.length / 2);
  // Interpret options
  const matrix = similarityTransform(src, dst);
  const crop = await warpAffine(image, matrix, size as number);
  return { ...crop, matrix };
}

