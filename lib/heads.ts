/**
 * Fused margin-softmax heads (SPEC §1.3, §3): L2-normalized embeddings times L2-normalized class
 * weights, the margin on the target cosine, scale, softmax cross entropy (mean over the batch) and
 * the gradients, in one native op that never materializes more than one chunk of logits.
 *
 * This release: NormFace, CosFace, ArcFace and the combined margin, on the CPU. The CUDA kernels,
 * AdaFace, ElasticFace, SphereFace, Softmax, Center loss, sub-centers, Partial FC and sharding are
 * the rest of the heads work.
 */
import { addon } from './binding';
import { resolveDevice, DeviceName, DeviceSpec } from './device';
import { FacecudaError, invalidParameterError, outOfRangeError, withCallSite } from './errors';
import { Tensor, tensorArg } from './tensor';
import { assertBool, assertInteger, assertKnownOptions, assertNumber, assertOneOf, optionsObject } from './validate';
import type { Binding } from './binding';

/** Options every head takes. */
export interface HeadOptions {
  /** D, the embedding size (e.g. 512). */
  embeddingSize: number;
  /** C, the number of identities (at least 2). */
  numClasses: number;
  /** Default 'auto' (CUDA heads are not implemented yet: use 'cpu'). */
  device?: DeviceSpec;
  /** GEMM precision, default 'fp32' (fp32 accumulation always; 'tf32' is fp32 on the CPU). */
  precision?: 'fp32' | 'tf32' | 'bf16';
  /** Largest chunk of cosines the head keeps at once, in bytes (default 256 MiB). */
  maxChunkBytes?: number;
  /** CPU threads (default 0 = the whole pool). */
  threads?: number;
  /** Seed of the N(0, 0.01) weight initialization (default 0). */
  seed?: number;
}

/** The result of {@link MarginHead.backward}: d(mean loss)/dx [B, D] and d(mean loss)/dW [C, D]. */
export interface HeadGradients {
  gradEmbeddings: Tensor;
  gradWeight: Tensor;
}

const COMMON = ['embeddingSize', 'numClasses', 'device', 'precision', 'maxChunkBytes', 'threads', 'seed'] as const;

interface Margin {
  kind: 0 | 1 | 2 | 3;
  scale: number;
  m1: number;
  m2: number;
  m3: number;
  easyMargin: boolean;
  fallback: boolean;
  straightThrough: boolean;
}

/**
 * The shared contract of the normalized margin heads.
 *
 * The gradient tensors that {@link backward} returns share the head's buffers: they stay valid until
 * the next `backward()` overwrites them (the training loop reads them in place, with no copies).
 */
export abstract class MarginHead {
  readonly embeddingSize: number;
  readonly numClasses: number;
  readonly device: DeviceName;
  readonly #native: Binding.NativeMarginHead;
  readonly #hyper: Record<string, unknown>;

  protected constructor(type: string, options: unknown, extra: readonly string[], margin: (o: Record<string, unknown>) => Margin) {
    // Apply defaults
    const opts = optionsObject(options, 'options');
    assertKnownOptions(opts, type, [...COMMON, ...extra]);
    const precision = opts.precision ?? 'fp32';
    const maxChunkBytes = opts.maxChunkBytes ?? 256 * 2 ** 20;
    const threads = opts.threads ?? 0;
    const seed = opts.seed ?? 0;

    // Validate arguments
    assertInteger(opts.embeddingSize, 'embeddingSize', 1, 65536);
    assertInteger(opts.numClasses, 'numClasses', 2, 2 ** 31 - 1);
    assertOneOf(precision, 'precision', ['fp32', 'tf32', 'bf16'] as const);
    assertInteger(maxChunkBytes, 'maxChunkBytes', 4, Number.MAX_SAFE_INTEGER);
    assertInteger(threads, 'threads', 0, 1024);
    assertInteger(seed, 'seed', 0, 2 ** 53 - 1);
    const m = margin(opts);

    // Interpret options
    this.embeddingSize = opts.embeddingSize;
    this.numClasses = opts.numClasses;
    this.device = resolveDevice(opts.device);
    if (this.device !== 'cpu') {
      throw new FacecudaError('NOT_IMPLEMENTED', `${type} on ${this.device}: the CUDA heads are not implemented yet; use device 'cpu'`);
    }
    this.#hyper = { type, ...m, precision, maxChunkBytes };
    const A = addon();
    this.#native = new A.NativeMarginHead(
      this.embeddingSize, this.numClasses, m.kind, m.scale, m.m1, m.m2, m.m3, m.easyMargin, m.fallback, m.straightThrough,
      precision, maxChunkBytes, threads, this.device,
    );
    // Queued before anything the caller does next, so no call can see uninitialized weights.
    void this.#native.initNormal(0.01, seed).catch(() => undefined);
  }

  /** The hyperparameters this head was built with (for checkpoints and logs). */
  hyperparams(): Record<string, unknown> {
    return { ...this.#hyper };
  }

  /**
   * Replaces the class weights: row-major [numClasses, embeddingSize].
   * @example await head.setWeight(new Float32Array(head.numClasses * head.embeddingSize).fill(0.1));
   */
  async setWeight(w: Float32Array | Tensor): Promise<void> {
    const site = new Error();
    const t = this.#asTensor(w, [this.numClasses, this.embeddingSize], 'w');
    try {
      await withCallSite(this.#native.setWeight(tensorArg(t, 'w')), site);
    } finally {
      if (t !== w) t.dispose();
    }
  }

  /** A copy of the class weights, row-major [numClasses, embeddingSize]. */
  getWeight(): Promise<Float32Array> {
    return withCallSite(this.#native.getWeight(), new Error());
  }

  /**
   * Mean margin-softmax cross entropy of the batch; keeps what {@link backward} needs.
   * @param x embeddings [B, D] (raw; the head normalizes them)
   * @param labels class of each row, integers in [0, numClasses)
   * @throws `SHAPE_MISMATCH` for sizes that disagree, `OUT_OF_RANGE` for a label outside [0, C),
   *   `INVALID_ARGUMENT` for NaN/Inf in x or W or an empty batch
   * @example const { loss } = await head.forward(x, new Int32Array([3, 17]));
   */
  async forward(x: Float32Array | Tensor, labels: Int32Array | readonly number[]): Promise<{ loss: number }> {
    const site = new Error();
    // Validate arguments
    const rows = this.#rows(x);
    const lab = this.#labels(labels, rows);
    const xt = this.#asTensor(x, [rows, this.embeddingSize], 'x');
    const lt = Tensor.from(lab, [rows], { device: this.device, dtype: 'int32' });
    try {
      const loss = await withCallSite(this.#native.forward(tensorArg(xt, 'x'), tensorArg(lt, 'labels')), site);
      return { loss };
    } finally {
      if (xt !== x) xt.dispose();
      lt.dispose();
    }
  }

  /** Gradients of the last forward's mean loss (shared with the head: valid until the next backward). */
  async backward(): Promise<HeadGradients> {
    const site = new Error();
    const g = await withCallSite(this.#native.backward(), site);
    return { gradEmbeddings: new Tensor(g.gradEmbeddings), gradWeight: new Tensor(g.gradWeight) };
  }

  /** Scaled cosines s·x̂·ŵᵀ [B, numClasses] without margin (inference). */
  async logits(x: Float32Array | Tensor): Promise<Tensor> {
    const site = new Error();
    const rows = this.#rows(x);
    const xt = this.#asTensor(x, [rows, this.embeddingSize], 'x');
    try {
      return new Tensor(await withCallSite(this.#native.logits(tensorArg(xt, 'x')), site));
    } finally {
      if (xt !== x) xt.dispose();
    }
  }

  /** Bytes of the largest cosine chunk the last forward/backward held (after awaiting it). */
  lastChunkBytes(): number {
    return this.#native.lastChunkBytes();
  }

  /** Frees the weights, gradients and workspaces (after queued work). Later calls throw DISPOSED. */
  dispose(): void {
    this.#native.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  #rows(x: Float32Array | Tensor): number {
    if (x instanceof Tensor) {
      if (x.rank !== 2 || x.shape[1] !== this.embeddingSize) {
        throw new FacecudaError('SHAPE_MISMATCH', `Expected x of shape [B, ${this.embeddingSize}] but received [${x.shape.join(', ')}]`);
      }
      return x.shape[0];
    }
    if (Object.prototype.toString.call(x) !== '[object Float32Array]') throw invalidParameterError('x', 'a Float32Array or a Tensor', x);
    if (x.length % this.embeddingSize !== 0) {
      throw new FacecudaError('SHAPE_MISMATCH', `x has ${x.length} values, not a multiple of embeddingSize ${this.embeddingSize}`);
    }
    return x.length / this.embeddingSize;
  }

  #labels(labels: Int32Array | readonly number[], rows: number): Int32Array {
    const isInt32 = Object.prototype.toString.call(labels) === '[object Int32Array]';
    if (!isInt32 && !Array.isArray(labels)) throw invalidParameterError('labels', 'an Int32Array or an array of integers', labels);
    const out = isInt32 ? (labels as Int32Array) : Int32Array.from(labels as number[]);
    if (!isInt32) {
      (labels as number[]).forEach((v, i) => {
        if (!Number.isInteger(v)) throw invalidParameterError(`labels[${i}]`, 'an integer', v);
      });
    }
    if (out.length !== rows) throw new FacecudaError('SHAPE_MISMATCH', `labels length ${out.length} does not match batch ${rows}`);
    for (let i = 0; i < out.length; i++) {
      if (out[i] < 0 || out[i] >= this.numClasses) throw outOfRangeError(`labels[${i}]`, `an integer in [0, ${this.numClasses})`, out[i]);
    }
    return out;
  }

  #asTensor(v: Float32Array | Tensor, shape: number[], name: string): Tensor {
    if (v instanceof Tensor) {
      if (v.device !== this.device) throw invalidParameterError(name, `a Tensor on ${this.device}`, v.device);
      return v;
    }
    if (Object.prototype.toString.call(v) !== '[object Float32Array]') throw invalidParameterError(name, 'a Float32Array or a Tensor', v);
    return Tensor.from(v, shape, { device: this.device });
  }
}

function scaleOf(o: Record<string, unknown>): number {
  const s = o.scale ?? 64;
  assertNumber(s, 'scale', 1e-3, 1e4);
  return s;
}

/**
 * NormFace: s·cos θ, no margin.
 * @example const head = new NormFaceHead({ embeddingSize: 512, numClasses: 1000, device: 'cpu', scale: 30 });
 */
export class NormFaceHead extends MarginHead {
  constructor(options: HeadOptions & { scale?: number }) {
    super('NormFaceHead', options, ['scale'], (o) => ({
      kind: 0, scale: scaleOf(o), m1: 1, m2: 0, m3: 0, easyMargin: false, fallback: false, straightThrough: false,
    }));
  }
}

/**
 * CosFace: s·(cos θ − m) on the target (default s 64, m 0.35).
 * @example const head = new CosFaceHead({ embeddingSize: 512, numClasses: 1000, device: 'cpu', margin: 0.4 });
 */
export class CosFaceHead extends MarginHead {
  constructor(options: HeadOptions & { scale?: number; margin?: number }) {
    super('CosFaceHead', options, ['scale', 'margin'], (o) => {
      const m = o.margin ?? 0.35;
      assertNumber(m, 'margin', 0, 2);
      return { kind: 1, scale: scaleOf(o), m1: 1, m2: 0, m3: m, easyMargin: false, fallback: false, straightThrough: false };
    });
  }
}

/**
 * ArcFace: s·cos(θ + m) on the target (default s 64, m 0.5), exact gradient, with the th/mm fallback
 * that keeps the target logit monotone. `{ fallback: false, gradient: 'straight-through' }`
 * reproduces arcface_torch.
 * @example const head = new ArcFaceHead({ embeddingSize: 512, numClasses: 93431, device: 'cpu' });
 */
export class ArcFaceHead extends MarginHead {
  constructor(options: HeadOptions & { scale?: number; margin?: number; easyMargin?: boolean; fallback?: boolean; gradient?: 'exact' | 'straight-through' }) {
    super('ArcFaceHead', options, ['scale', 'margin', 'easyMargin', 'fallback', 'gradient'], (o) => {
      const m = o.margin ?? 0.5;
      const easy = o.easyMargin ?? false;
      const fallback = o.fallback ?? true;
      const gradient = o.gradient ?? 'exact';
      assertNumber(m, 'margin', 0, Math.PI / 2);
      assertBool(easy, 'easyMargin');
      assertBool(fallback, 'fallback');
      assertOneOf(gradient, 'gradient', ['exact', 'straight-through'] as const);
      return { kind: 2, scale: scaleOf(o), m1: 1, m2: m, m3: 0, easyMargin: easy, fallback, straightThrough: gradient === 'straight-through' };
    });
  }
}

/**
 * Combined margin: s·(cos(m1·θ + m2) − m3) on the target, true gradient (the mxnet form).
 * @example const head = new CombinedMarginHead({ embeddingSize: 512, numClasses: 1000, device: 'cpu', m1: 1, m2: 0.3, m3: 0.2 });
 */
export class CombinedMarginHead extends MarginHead {
  constructor(options: HeadOptions & { scale?: number; m1?: number; m2?: number; m3?: number }) {
    super('CombinedMarginHead', options, ['scale', 'm1', 'm2', 'm3'], (o) => {
      const m1 = o.m1 ?? 1;
      const m2 = o.m2 ?? 0;
      const m3 = o.m3 ?? 0;
      assertNumber(m1, 'm1', 0.1, 10);
      assertNumber(m2, 'm2', 0, Math.PI / 2);
      assertNumber(m3, 'm3', 0, 2);
      return { kind: 3, scale: scaleOf(o), m1, m2, m3, easyMargin: false, fallback: false, straightThrough: false };
    });
  }
}
