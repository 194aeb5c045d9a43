/**
 * FaceEmbedder: faces in, embeddings out, with any backbone (a {@link Backbone}, or a .safetensors /
 * .onnx file), following the verification protocols' preprocessing (SPEC §10.2, §10.3).
 *
 * Per image:
 * 1. decode (sharp: JPEG, PNG, … as {@link decodeImage} reads them; EXIF orientation not applied) or
 *    take a {@link RawImage} (HWC RGB uint8);
 * 2. with {@link FaceEmbedder.embedFaces}: align from five landmarks to the model's ArcFace template
 *    (./align: least-squares similarity, bilinear warp, black outside the image);
 *    with {@link FaceEmbedder.embed}: the image must already be an aligned input-size crop — another
 *    size is resized (bilinear, sharp) with a warning, once per embedder, as the training loader does;
 * 3. normalize with the model's preprocessing, (v − mean)/std per channel — (v/255 − 0.5)/0.5 for
 *    every model facecuda builds, and whatever an imported ONNX graph declared (read back from the
 *    safetensors metadata by Backbone.load, from the graph by loadOnnx) — in the channel order the
 *    model takes ('rgb' unless `channelOrder: 'bgr'`: AdaFace's models take BGR);
 * 4. forward in eval mode in batches of `batchSize` (the next batch is decoded while one runs);
 * 5. with flip test-time augmentation, forward the horizontal mirror too and SUM the two raw
 *    embeddings (§10.2: e = e_orig + e_flip, AdaFace's fuse_features_with_norm is the same);
 * 6. L2-normalize. `norms` are the norms before that step — of the raw embedding, or with flip of the
 *    sum, i.e. about twice a single image's — a quality signal (AdaFace's premise: low-quality faces
 *    get small norms). An all-zero embedding stays zero, with norm 0. `viewNorms` keeps each view's
 *    own raw norm (image, mirror), whose mean is arcface_torch's XNorm.
 *
 * Threads: decoding, resizing and warping run in libvips on libuv's pool, the forward on the model's
 * device queue; the JavaScript thread only does the per-pixel table lookup of step 3 (a few µs per
 * image per kilobyte) and the O(D) sums of steps 5-6. Calls on one embedder run one after another.
 */
import { promises as fsp } from 'fs';

import { Backbone } from '../backbones/model';
import { resolveDevice, DeviceSpec } from '../device';
import { FacecudaError, invalidParameterError, outOfRangeError } from '../errors';
import { assertRawImage, loadSharp, NORMALIZE_TABLE } from '../data/image';
import type { RawImage } from '../data/types';
import { assertBool, assertInteger, assertKnownOptions, assertOneOf, is, optionsObject } from '../validate';
import { readPoints, similarityTransform, warpAffine } from './align';
import { calibrationPath, ScoreCalibration } from './verify';

/** An input face: an encoded image file, or decoded pixels (HWC, RGB, uint8). */
export type FaceImage = Uint8Array | RawImage;

/** Options of {@link FaceEmbedder.create}. */
export interface FaceEmbedderOptions {
  /** A Backbone (not owned: dispose it yourself), or the path of a .safetensors ({@link Backbone.save}) or .onnx file. */
  model: Backbone | string;
  /** Device to load a model file on (default 'cpu'); with a Backbone, must be its device if given. */
  device?: DeviceSpec;
  /** CPU threads for a model loaded from a file (default 0 = the whole pool). */
  threads?: number;
  /** Images per forward (default 32). */
  batchSize?: number;
  /** Default of the calls' `flip` (default false). */
  flip?: boolean;
  /** Channel order the model takes (default: its preprocessing's colorOrder, 'RGB' for every model facecuda builds or imports today). */
  channelOrder?: 'rgb' | 'bgr';
  /**
   * The score calibration to carry ({@link FaceEmbedder.calibration}); default: the model file's
   * sidecar (`<model>.calibration.json`) when there is one, else null. null: none.
   */
  calibration?: ScoreCalibration | null;
}

/** Options of {@link FaceEmbedder.embed} and {@link FaceEmbedder.embedFaces}. */
export interface EmbedCallOptions {
  /** Flip test-time augmentation (default: the embedder's `flip`). */
  flip?: boolean;
}

/** What {@link FaceEmbedder.embed} returns. */
export interface FaceEmbeddings {
  /** [count, dim] row-major, unit rows (zero rows stay zero). */
  embeddings: Float32Array;
  /** [count]: the L2 norm of each raw embedding (with flip: of the sum of the two). */
  norms: Float32Array;
  /**
   * [count, 2]: the raw norms of the image's own embedding (column 0) and, with flip, of its
   * mirror's (column 1; 0 without flip): arcface_torch's XNorm is their mean over both views (§10.2).
   */
  viewNorms: Float32Array;
  dim: number;
  count: number;
}

const CHANNEL_ORDERS = ['rgb', 'bgr'] as const;

function isUint8Array(v: unknown): v is Uint8Array {
  return ArrayBuffer.isView(v) && Object.prototype.toString.call(v) === '[object Uint8Array]';
}

function toRgb(src: Uint8Array, n: number, channels: number): Uint8Array {
  if (channels === 3) return src;
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const p = i * channels;
    if (channels <= 2) out.fill(src[p], 3 * i, 3 * i + 3);
    else out.set(src.subarray(p, p + 3), 3 * i);
  }
  return out;
}

/**
 * Embeds faces with a backbone (see the file header for the pipeline).
 *
 * @example
 * const embedder = await FaceEmbedder.create({ model: 'r50.safetensors', flip: true });
 * const { embeddings, norms, dim } = await embedder.embed([jpegA, jpegB]);
 * const aligned = await embedder.embedFaces([photo], landmarks); // landmarks: Float32Array [1, 5, 2]
 * embedder.dispose();
 */
export class FaceEmbedder {
  /** The backbone (in eval mode during calls; its mode is restored after each). */
  readonly model: Backbone;
  /** Embedding size D. */
  readonly dim: number;
  /** Side of the input crop. */
  readonly size: number;
  readonly batchSize: number;
  /** Default of the calls' flip. */
  readonly flip: boolean;
  readonly channelOrder: 'rgb' | 'bgr';
  /** The score calibration carried with the model, or null. */
  readonly calibration: ScoreCalibration | null;
  readonly #owned: boolean;
  readonly #tables: Float32Array[];
  readonly #template: Float64Array | null;
  #queue: Promise<unknown> = Promise.resolve();
  #warned = false;
  #disposed = false;

  private constructor(model: Backbone, owned: boolean, batchSize: number, flip: boolean, channelOrder: 'rgb' | 'bgr' | undefined, calibration: ScoreCalibration | null) {
    this.model = model;
    this.#owned = owned;
    this.dim = model.embeddingSize;
    const [c, h, w] = model.inputShape;
    if (c !== 3 || h !== w) {
      throw new FacecudaError('NOT_IMPLEMENTED', `FaceEmbedder takes models of square 3-channel input; ${model.name} takes [${model.inputShape.join(', ')}]`);
    }
    this.size = h;
    this.batchSize = batchSize;
    this.flip = flip;
    this.channelOrder = channelOrder ?? (String(model.preprocessing.colorOrder).toUpperCase() === 'BGR' ? 'bgr' : 'rgb');
    this.calibration = calibration;
    const pre = model.preprocessing;
    this.#tables = [0, 1, 2].map((k) => {
      const mean = pre.mean[k];
      const std = pre.std[k];
      // The trainer's table, bit for bit, for the ArcFace normalization.
      if (mean === 127.5 && std === 127.5) return NORMALIZE_TABLE;
      const t = new Float32Array(256);
      for (let v = 0; v < 256; v++) t[v] = (v - mean) / std;
      return t;
    });
    this.#template = pre.alignment ? readPoints(pre.alignment.landmarks, 'template') : null;
  }

  /**
   * An embedder over a Backbone or a model file.
   *
   * @throws TypeError / RangeError for bad options; `IO_ERROR` / `CORRUPT_FILE` from loading the
   *   model or its calibration sidecar; `INVALID_ARGUMENT` for a Backbone on another device
   * @example const embedder = await FaceEmbedder.create({ model: IResNet.create('r50'), batchSize: 64 });
   */
  static async create(options: FaceEmbedderOptions): Promise<FaceEmbedder> {
    // Apply defaults
    if (!is.object(options)) throw invalidParameterError('options', 'an options object with a model', options);
    const opts = options as unknown as Record<string, unknown>;
    assertKnownOptions(opts, 'FaceEmbedder.create', ['model', 'device', 'threads', 'batchSize', 'flip', 'channelOrder', 'calibration']);
    const batchSize = opts.batchSize ?? 32;
    const flip = opts.flip ?? false;
    const channelOrder = opts.channelOrder as 'rgb' | 'bgr' | undefined; // default: the model's preprocessing
    const threads = opts.threads ?? 0;
    // Validate arguments
    const model = opts.model;
    if (!(model instanceof Backbone) && !is.string(model)) throw invalidParameterError('model', 'a Backbone or the path of a .safetensors or .onnx file', model);
    assertInteger(batchSize, 'batchSize', 1, 65536);
    assertBool(flip, 'flip');
    if (channelOrder !== undefined) assertOneOf(channelOrder, 'channelOrder', CHANNEL_ORDERS);
    assertInteger(threads, 'threads', 0, 4096);
    const cal = opts.calibration;
    if (cal !== undefined && cal !== null && !(cal instanceof ScoreCalibration)) throw invalidParameterError('calibration', 'a ScoreCalibration or null', cal);
    // Interpret options
    if (model instanceof Backbone) {
      if (opts.device !== undefined && resolveDevice(opts.device, 'device') !== model.device) {
        throw new FacecudaError('INVALID_ARGUMENT', `device is ${String(opts.device)} but the model is on ${model.device}`);
      }
      if (opts.threads !== undefined) throw invalidParameterError('threads', 'no value with a Backbone (threads apply to a model loaded from a file)', opts.threads);
      return new FaceEmbedder(model, false, batchSize, flip, channelOrder, cal ?? null);
    }
    const file = model as string;
    const lower = file.toLowerCase();
    const runtime = { device: (opts.device ?? 'cpu') as DeviceSpec, threads };
    let backbone: Backbone;
    if (lower.endsWith('.safetensors')) backbone = await Backbone.load(file, runtime);
    else if (lower.endsWith('.onnx')) backbone = await Backbone.loadOnnx(file, runtime);
    else throw outOfRangeError('model', 'a path ending in .safetensors or .onnx', file);
    try {
      let calibration: ScoreCalibration | null = cal ?? null;
      if (cal === undefined) {
        const sidecar = calibrationPath(file);
        const exists = await fsp.access(sidecar).then(() => true, () => false);
        if (exists) calibration = await ScoreCalibration.load(sidecar);
      }
      return new FaceEmbedder(backbone, true, batchSize, flip, channelOrder, calibration);
    } catch (err) {
      backbone.dispose();
      throw err;
    }
  }

  /**
   * Embeddings of aligned face crops (input-size images; others are resized with a warning).
   *
   * @param images encoded files (JPEG, PNG, …) or RawImages
   * @throws (as rejections) `CORRUPT_FILE` naming the image that cannot be decoded; TypeError for a
   *   bad image; `DISPOSED` after {@link dispose}
   * @example const { embeddings, norms } = await embedder.embed(pairs.images, { flip: true });
   */
  async embed(images: readonly FaceImage[], options?: EmbedCallOptions): Promise<FaceEmbeddings> {
    // Validate arguments
    this.#live();
    const flip = this.#flipOption(options, 'embed');
    this.#checkImages(images);
    // Interpret options
    return this.#serialize(() => this.#run(images.length, flip, (i) => this.#decode(images[i], i)));
  }

  /**
   * Aligns each face from its five landmarks to the model's template, then embeds it.
   *
   * @param images photos (encoded files or RawImages), any size
   * @param landmarks [n, 5, 2] flat (x, y in source pixels; eyes, nose tip, mouth corners, image-left first)
   * @throws (as rejections) `SHAPE_MISMATCH` when landmarks is not n·10 values; RangeError for degenerate landmarks;
   *   `NOT_IMPLEMENTED` when the model's input size has no ArcFace template; `CORRUPT_FILE` for an
   *   undecodable image
   * @example const r = await embedder.embedFaces(photos, Float32Array.from(detections.flatMap((d) => d.kps.flat())));
   */
  async embedFaces(images: readonly FaceImage[], landmarks: Float32Array | Float64Array | ArrayLike<number>, options?: EmbedCallOptions): Promise<FaceEmbeddings> {
    // Validate arguments
    this.#live();
    const flip = this.#flipOption(options, 'embedFaces');
    this.#checkImages(images);
    const template = this.#template;
    if (!template) throw new FacecudaError('NOT_IMPLEMENTED', `${this.model.name}'s input size ${this.size} has no ArcFace alignment template (sizes that are multiples of 112 or 128 have one)`);
    const per = template.length;
    const given = (landmarks as ArrayLike<unknown> | null)?.length;
    if (typeof given === 'number' && (ArrayBuffer.isView(landmarks) || typeof (landmarks as ArrayLike<unknown>)[0] === 'number') && given !== images.length * per) {
      throw new FacecudaError('SHAPE_MISMATCH', `landmarks has ${given} values; ${images.length} images of ${per / 2} points need ${images.length * per}`);
    }
    const points = readPoints(landmarks, 'landmarks');
    if (points.length !== images.length * per) {
      throw new FacecudaError('SHAPE_MISMATCH', `landmarks has ${points.length / 2} points; ${images.length} images of ${per / 2} points need ${(images.length * per) / 2}`);
    }
    const matrices = images.map((_, i) => {
      try {
        return similarityTransform(points.subarray(i * per, (i + 1) * per), template);
      } catch (err) {
        throw outOfRangeError(`landmarks of face ${i}`, `${per / 2} points that are not all the same`, Array.from(points.subarray(i * per, (i + 1) * per)));
      }
    });
    // Interpret options
    return this.#serialize(() => this.#run(images.length, flip, async (i) => {
      try {
        return await warpAffine(images[i], matrices[i], this.size);
      } catch (err) {
        if (err instanceof FacecudaError && err.code === 'CORRUPT_FILE') throw new FacecudaError('CORRUPT_FILE', `images[${i}]: ${err.message}`);
        throw err;
      }
    }));
  }

  /** Releases the model if the embedder loaded it (a Backbone passed in is left alone). Idempotent. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    if (this.#owned) this.model.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  // #region internals

  #live(): void {
    if (this.#disposed) throw new FacecudaError('DISPOSED', 'this FaceEmbedder has been disposed');
  }

  #flipOption(options: unknown, fn: string): boolean {
    const opts = optionsObject(options, 'options');
    assertKnownOptions(opts, fn, ['flip']);
    const flip = opts.flip ?? this.flip;
    assertBool(flip, 'flip');
    return flip;
  }

  #checkImages(images: unknown): asserts images is readonly FaceImage[] {
    if (!Array.isArray(images)) throw invalidParameterError('images', 'an array of encoded images (Uint8Array) or RawImages', images);
    images.forEach((img, i) => {
      if (!isUint8Array(img)) assertRawImage(img, `images[${i}]`);
    });
  }

  #serialize<T>(job: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(job, job);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  #warnResized(i: number, width: number, height: number): void {
    if (this.#warned) return;
    this.#warned = true;
    process.emitWarning(
      `FaceEmbedder: images are not ${this.size}×${this.size} (images[${i}] is ${width}×${height}); they are resized (bilinear), ` +
        'which may not match the face alignment the model expects (use embedFaces with landmarks for photos). This warning is shown once per embedder.',
      { type: 'FacecudaWarning', code: 'FACECUDA_IMAGE_RESIZED' },
    );
  }

  /** One input image as a size×size RGB RawImage. */
  async #decode(image: FaceImage, i: number): Promise<RawImage> {
    const size = this.size;
    const sharp = loadSharp();
    let img: RawImage;
    if (isUint8Array(image)) {
      try {
        const { data, info } = await sharp(Buffer.from(image.buffer, image.byteOffset, image.byteLength), { failOn: 'error' })
          .removeAlpha().toColourspace('srgb').raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
        if (info.channels < 1 || info.channels > 4) throw new Error(`${info.channels} channels after conversion to sRGB`);
        img = { width: info.width, height: info.height, channels: 3, data: toRgb(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), info.width * info.height, info.channels) };
      } catch (err) {
        throw new FacecudaError('CORRUPT_FILE', `Cannot decode images[${i}] (${image.byteLength} bytes): ${(err as Error).message}`);
      }
    } else {
      img = image;
    }
    if (img.width === size && img.height === size) return img;
    this.#warnResized(i, img.width, img.height);
    const data = await sharp(Buffer.from(img.data.buffer, img.data.byteOffset, img.data.byteLength), { raw: { width: img.width, height: img.height, channels: 3 } })
      .resize(size, size, { fit: 'fill', kernel: 'linear' }).raw().toBuffer();
    return { width: size, height: size, channels: 3, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  }

  /** Writes `img` into x at image slot k as CHW float32 in the model's channel order and normalization. */
  #normalize(img: RawImage, x: Float32Array, k: number, mirror: boolean): void {
    const size = this.size;
    const plane = size * size;
    const off = k * 3 * plane;
    const src = this.channelOrder === 'bgr' ? [2, 1, 0] : [0, 1, 2];
    const d = img.data;
    for (let c = 0; c < 3; c++) {
      const t = this.#tables[c];
      const s = src[c];
      const base = off + c * plane;
      for (let y = 0; y < size; y++) {
        const row = y * size;
        if (mirror) for (let xx = 0, p = (row + size - 1) * 3 + s; xx < size; xx++, p -= 3) x[base + row + xx] = t[d[p]];
        else for (let xx = 0, p = row * 3 + s; xx < size; xx++, p += 3) x[base + row + xx] = t[d[p]];
      }
    }
  }

  async #forward(x: Float32Array): Promise<Float32Array> {
    const y = await this.model.forward(x);
    try {
      return (await y.toArray()) as Float32Array;
    } finally {
      y.dispose();
    }
  }

  async #run(count: number, flip: boolean, load: (i: number) => Promise<RawImage>): Promise<FaceEmbeddings> {
    this.#live();
    const dim = this.dim;
    const embeddings = new Float32Array(count * dim);
    const norms = new Float32Array(count);
    const viewNorms = new Float32Array(count * 2);
    if (count === 0) return { embeddings, norms, viewNorms, dim, count };
    const plane = 3 * this.size * this.size;
    const bs = this.batchSize;
    const prepare = async (start: number): Promise<{ x: Float32Array; xf: Float32Array | null; n: number }> => {
      const n = Math.min(bs, count - start);
      const imgs = await Promise.all(Array.from({ length: n }, (_, k) => load(start + k)));
      const x = new Float32Array(n * plane);
      const xf = flip ? new Float32Array(n * plane) : null;
      imgs.forEach((img, k) => {
        this.#normalize(img, x, k, false);
        if (xf) this.#normalize(img, xf, k, true);
      });
      return { x, xf, n };
    };
    const model = this.model;
    const wasTraining = model.training;
    model.eval();
    const sum = new Float64Array(dim);
    let next: Promise<Awaited<ReturnType<typeof prepare>>> | null = prepare(0);
    try {
      for (let start = 0; start < count; start += bs) {
        const batch: Awaited<ReturnType<typeof prepare>> = await next!;
        next = start + bs < count ? prepare(start + bs) : null;
        next?.catch(() => undefined); // awaited on the next iteration; a failure there is reported then
        const y = await this.#forward(batch.x);
        const yf = batch.xf ? await this.#forward(batch.xf) : null;
        for (let k = 0; k < batch.n; k++) {
          let ss = 0;
          let so = 0;
          let sf = 0;
          for (let j = 0; j < dim; j++) {
            const o = y[k * dim + j];
            const f = yf ? yf[k * dim + j] : 0;
            const v = o + f;
            sum[j] = v;
            ss += v * v;
            so += o * o;
            sf += f * f;
          }
          viewNorms[2 * (start + k)] = Math.sqrt(so);
          viewNorms[2 * (start + k) + 1] = Math.sqrt(sf);
          const norm = Math.sqrt(ss);
          const inv = norm > 0 ? 1 / norm : 0;
          const row = (start + k) * dim;
          for (let j = 0; j < dim; j++) embeddings[row + j] = sum[j] * inv;
          norms[start + k] = norm;
        }
      }
    } finally {
      if (next) await next.catch(() => undefined);
      if (wasTraining && !this.#disposed) model.train();
    }
    return { embeddings, norms, viewNorms, dim, count };
  }

  // #endregion
}
