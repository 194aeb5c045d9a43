/**
 * Fused margin-softmax heads (SPEC §1–§7): embeddings times class weights, the margin on the target
 * logit, scale, softmax cross entropy (mean over the batch) and the gradients, in one native op that
 * never holds more than one chunk of logits. On the CPU and on CUDA.
 *
 * | class | logits | SPEC |
 * |---|---|---|
 * | {@link SoftmaxHead} | W·x + b (no normalization) | §1.1 |
 * | {@link NormFaceHead} | s·cos θ | §1.2 |
 * | {@link SphereFaceHead} | ‖x‖·cos θ; target ‖x‖·(λ·cos θ + ψ_m(θ))/(1 + λ), λ annealed | §2 |
 * | {@link CosFaceHead} | target s·(cos θ − m) | §3 |
 * | {@link ArcFaceHead} | target s·cos(θ + m), th/mm fallback, easy margin, straight-through | §3 |
 * | {@link CombinedMarginHead} | target s·(cos(m1·θ + m2) − m3) | §2.4, §3 |
 * | {@link AdaFaceHead} | feature-norm adaptive margins, EMA batch statistics | §4 |
 * | {@link ElasticFaceHead} | per-row margins m + σ·N(0, 1), arc or cos, "plus" pairing | §5 |
 * | {@link CenterLoss} | λ/(2B)·Σ‖x_i − c_{y_i}‖², an auxiliary loss | §6 |
 *
 * Every normalized head (Norm, Cos, Arc, Combined, Ada, Elastic) also takes `subCenters` (§7.1),
 * `sampleRate` (Partial FC, §7.2) and a sharded mode (`classStart`, `numLocalClasses`, §7.3) whose
 * forward statistics {@link combineShardStats} merges into the global softmax.
 *
 * Weights start as N(0, 0.01²) from `seed` (the Softmax bias at 0); replace them with `setWeight`.
 *
 * @example
 * const head = new ArcFaceHead({ embeddingSize: 512, numClasses: 93431, device: 'cuda' });
 * await head.setWeight(w);                         // [numClasses, embeddingSize]
 * const { loss } = await head.forward(x, labels);  // x [B, 512], labels [B]
 * const { gradEmbeddings, gradWeight } = await head.backward();
 */
import { addon } from './binding';
import { resolveDevice, DeviceName, DeviceSpec } from './device';
import { FacecudaError, invalidParameterError, outOfRangeError, withCallSite } from './errors';
import { Tensor, tensorArg } from './tensor';
import { assertBool, assertInteger, assertKnownOptions, assertNumber, assertOneOf, is, optionsObject } from './validate';
import type { Binding } from './binding';

// #region public types

/**
 * GEMM precision of a head (accumulation is fp32 always; 'tf32' runs as 'fp32' on the CPU; 'fp16'
 * rounds the GEMM inputs to fp16, emulated on the CPU: train it with loss scaling, see GradScaler).
 */
export type HeadPrecision = 'fp32' | 'tf32' | 'bf16' | 'fp16';

/** Options every head takes. */
export interface HeadOptions {
  /** D, the embedding size (e.g. 512). */
  embeddingSize: number;
  /** C, the number of identities (at least 2). Labels are integers in [0, C). */
  numClasses: number;
  /** 'cpu', 'cuda', 'cuda:N' or 'auto' (default). An explicit CUDA device never falls back. */
  device?: DeviceSpec;
  /** GEMM precision, default 'fp32'. */
  precision?: HeadPrecision;
  /** Largest chunk of logits the head holds at once, in bytes (default 256 MiB). */
  maxChunkBytes?: number;
  /** CPU threads (default 0 = the whole pool). */
  threads?: number;
  /** Seed of the weight init, and of ElasticFace's margins and Partial FC's sampling (default 0). */
  seed?: number;
}

/** Options of the normalized heads: sub-centers, Partial FC sampling and the sharded mode. */
export interface NormalizedHeadOptions extends HeadOptions {
  /** K sub-centers per class (default 1): W has numLocalClasses·K rows, row c·K + k (§7.1). */
  subCenters?: number;
  /**
   * Partial FC (§7.2): each training forward uses floor(sampleRate·numLocalClasses) classes, every
   * positive class always included (only the positives when that count is smaller). Rows not sampled
   * get exactly zero gradient. Default 1 (every class).
   */
  sampleRate?: number;
  /** Sharded mode (§7.3): the first class this head holds (default 0). */
  classStart?: number;
  /** Sharded mode: how many classes this head holds (default numClasses − classStart). */
  numLocalClasses?: number;
}

/**
 * What {@link MarginHead.forward} resolves to. The row statistics are always included (B entries
 * each, cheap next to the GEMMs); a sharded head needs them for {@link combineShardStats}.
 */
export interface HeadForwardResult {
  /** Mean loss over the batch; NaN on a sharded head (combine the shards' statistics instead). */
  loss: number;
  /** Each row's max logit over this head's (sampled) classes. */
  rowMax: Float32Array;
  /** Each row's Σ_j exp(z_ij − rowMax_i) over the same classes. */
  rowSumExp: Float64Array;
  /** Each row's target logit (with the margin), NaN where the target class is not on this head. */
  targetLogit: Float32Array;
}

/** Options of {@link MarginHead.backward}. */
export interface BackwardOptions {
  /** Add into gradWeight/gradBias (+=) instead of overwriting them (default false). */
  accumulate?: boolean;
  /** Sharded mode (required there, rejected elsewhere): the global per-row max over every shard. */
  rowMax?: Float32Array | Float64Array | readonly number[];
  /** Sharded mode: the global per-row Σexp relative to `rowMax`. */
  rowSumExp?: Float32Array | Float64Array | readonly number[];
  /**
   * Mixed-precision loss scaling: the gradients of `lossScale · mean loss` (default 1), so small
   * fp16 gradients do not flush to zero. {@link GradScaler} picks it and unscales before the step.
   */
  lossScale?: number;
}

/**
 * The result of {@link MarginHead.backward}: d(mean loss)/dx [B, D], d(mean loss)/dW [rows, D]
 * (and d/db [numLocalClasses] for {@link SoftmaxHead}). The tensors share the head's buffers: they
 * stay valid until the next `backward()` overwrites them.
 */
export interface HeadGradients {
  gradEmbeddings: Tensor;
  gradWeight: Tensor;
  gradBias?: Tensor;
}

/**
 * Handles on the head's own parameters and gradients (the same storage, no copies): an optimizer
 * updates `weight` (and `bias`) in place from `gradWeight` (and `gradBias`).
 */
export interface HeadParameters {
  weight: Tensor;
  gradWeight: Tensor;
  bias?: Tensor;
  gradBias?: Tensor;
}

/** The state every head keeps: training forwards so far. */
export interface HeadState {
  step: number;
}
/** AdaFace's state: the EMA of the batch mean and std of the feature norms. */
export interface AdaFaceState extends HeadState {
  batchMean: number;
  batchStd: number;
}
/** SphereFace's state: λ is derived from the step (λ of the last training forward, read only). */
export interface SphereFaceState extends HeadState {
  lambda: number;
}

/** What {@link combineShardStats} takes from each shard (its forward result). */
export interface ShardStats {
  rowMax: ArrayLike<number>;
  rowSumExp: ArrayLike<number>;
  targetLogit: ArrayLike<number>;
}

/** The global softmax statistics of a sharded batch. */
export interface CombinedShardStats {
  rowMax: Float32Array;
  rowSumExp: Float64Array;
  /** The mean loss over the batch (what an unsharded head reports). */
  loss: number;
}

// #endregion

const NATIVE = Symbol('facecuda.head');
const COMMON = ['embeddingSize', 'numClasses', 'device', 'precision', 'maxChunkBytes', 'threads', 'seed'] as const;
const NORMALIZED = ['subCenters', 'sampleRate', 'classStart', 'numLocalClasses'] as const;

type MarginOptions = Omit<Binding.NativeMarginHeadOptions, 'embeddingSize' | 'numClasses' | 'device'>;
type Settable<S> = Partial<Omit<S, 'lambda'>>;

interface HeadSpec {
  type: string;
  /** The head's own option names. */
  extra: readonly string[];
  /** Accepts subCenters, sampleRate and the sharded mode. */
  normalized: boolean;
  /** State keys beyond `step` that state() reports and setState() accepts (lambda: read only). */
  stateKeys: readonly ('batchMean' | 'batchStd' | 'lambda')[];
  /** Validates the head's own options; returns the native parameters and the options resolved with defaults. */
  margin: (o: Record<string, unknown>) => [MarginOptions, Record<string, unknown>];
}

// #region shared argument handling

function isF32(v: unknown): v is Float32Array {
  return Object.prototype.toString.call(v) === '[object Float32Array]';
}

/** Rows of x [B, D]: a Float32Array of B·D values or a float32 Tensor [B, D] on `device`. */
function batchRows(x: unknown, D: number, device: DeviceName): number {
  // Validate arguments
  if (x instanceof Tensor) {
    if (x.dtype !== 'float32') throw invalidParameterError('x', 'a float32 Tensor', x.dtype);
    if (x.device !== device) throw invalidParameterError('x', `a Tensor on ${device}`, x.device);
    if (x.rank !== 2 || x.shape[1] !== D) {
      throw new FacecudaError('SHAPE_MISMATCH', `Expected x of shape [B, ${D}] but received [${x.shape.join(', ')}]`);
    }
    if (x.shape[0] === 0) throw new FacecudaError('INVALID_ARGUMENT', 'Expected at least one row for x but received an empty batch');
    return x.shape[0];
  }
  if (!isF32(x)) throw invalidParameterError('x', 'a Float32Array or a Tensor', x);
  if (x.length === 0) throw new FacecudaError('INVALID_ARGUMENT', 'Expected at least one row for x but received an empty batch');
  if (x.length % D !== 0) {
    throw new FacecudaError('SHAPE_MISMATCH', `x has ${x.length} values, not a multiple of embeddingSize ${D}`);
  }
  return x.length / D;
}

/** Labels: an Int32Array or an array of integers, one per row, each in [0, numClasses). */
function checkLabels(labels: unknown, rows: number, numClasses: number): Int32Array {
  const isInt32 = Object.prototype.toString.call(labels) === '[object Int32Array]';
  if (!isInt32 && !Array.isArray(labels)) throw invalidParameterError('labels', 'an Int32Array or an array of integers', labels);
  if (!isInt32) {
    (labels as unknown[]).forEach((v, i) => {
      if (!is.integer(v)) throw invalidParameterError(`labels[${i}]`, 'an integer', v);
    });
  }
  const lab = isInt32 ? (labels as Int32Array) : Int32Array.from(labels as number[]);
  if (lab.length !== rows) throw new FacecudaError('SHAPE_MISMATCH', `labels length ${lab.length} does not match batch ${rows}`);
  // Integers outside the int32 range were wrapped by Int32Array.from: check the originals.
  const src = labels as ArrayLike<number>;
  for (let i = 0; i < lab.length; i++) {
    if (src[i] < 0 || src[i] >= numClasses) throw outOfRangeError(`labels[${i}]`, `an integer in [0, ${numClasses})`, src[i]);
  }
  return lab;
}

/** A float32 tensor argument: a Float32Array of `size` values, or a Tensor on `device` of that shape. */
function paramArg(v: unknown, shape: readonly number[], device: DeviceName, name: string): Float32Array | Binding.NativeTensor {
  const size = shape.reduce((a, b) => a * b, 1);
  if (v instanceof Tensor) {
    if (v.dtype !== 'float32') throw invalidParameterError(name, 'a float32 Tensor', v.dtype);
    if (v.device !== device) throw invalidParameterError(name, `a Tensor on ${device}`, v.device);
    if (v.size !== size || v.shape.join() !== shape.join()) {
      throw new FacecudaError('SHAPE_MISMATCH', `Expected ${name} of shape [${shape.join(', ')}] but received [${v.shape.join(', ')}]`);
    }
    return tensorArg(v, name);
  }
  if (!isF32(v)) throw invalidParameterError(name, 'a Float32Array or a Tensor', v);
  if (v.length !== size) {
    throw new FacecudaError('SHAPE_MISMATCH', `Expected ${size} values (shape [${shape.join(', ')}]) for ${name} but received ${v.length}`);
  }
  return v;
}

function toInputTensor(x: Float32Array | Tensor, rows: number, D: number, device: DeviceName): Tensor {
  return x instanceof Tensor ? x : Tensor.from(x, [rows, D], { device });
}

function rowStats(v: unknown, name: string, Ctor: Float32ArrayConstructor | Float64ArrayConstructor): Float32Array | Float64Array {
  if (Array.isArray(v)) {
    v.forEach((e, i) => {
      if (typeof e !== 'number') throw invalidParameterError(`${name}[${i}]`, 'a number', e);
    });
    return Ctor.from(v as number[]);
  }
  const tag = Object.prototype.toString.call(v);
  if (tag !== '[object Float32Array]' && tag !== '[object Float64Array]') {
    throw invalidParameterError(name, 'a Float32Array, a Float64Array or an array of numbers', v);
  }
  return Ctor.from(v as Float32Array | Float64Array);
}

// #endregion

/**
 * The shared contract of every margin head. Use one of the subclasses.
 *
 * Calls run on the head's device queue in program order and return promises. The gradient tensors
 * that {@link backward} returns and the handles of {@link parameters} share the head's buffers (the
 * training loop reads them in place, with no copies).
 */
export abstract class MarginHead<S extends HeadState = HeadState> {
  /** D. */
  readonly embeddingSize: number;
  /** C, the global class count (labels are in [0, C)). */
  readonly numClasses: number;
  /** The first class this head holds (0 unless sharded). */
  readonly classStart: number;
  /** The classes this head holds (C unless sharded). */
  readonly numLocalClasses: number;
  /** K, sub-centers per class. */
  readonly subCenters: number;
  /** Partial FC sample rate (1 = every class). */
  readonly sampleRate: number;
  /** True when the head holds a strict subset of the classes (its loss is then NaN). */
  readonly sharded: boolean;
  /** 'cpu' or 'cuda:N'. */
  readonly device: DeviceName;
  /** @internal */
  readonly [NATIVE]: Binding.NativeMarginHead;
  readonly #hyper: Record<string, unknown>;
  readonly #stateKeys: HeadSpec['stateKeys'];
  #training = true;
  #lastBatch = -1;

  /** @internal */
  protected constructor(spec: HeadSpec, options: unknown) {
    // Apply defaults
    const opts = optionsObject(options, 'options');
    if (!spec.normalized) {
      for (const key of NORMALIZED) {
        if (opts[key] !== undefined) {
          throw invalidParameterError(
            `${spec.type} option '${key}'`,
            'no value: sub-centers, Partial FC sampling and shards are options of the normalized heads only ' +
              '(NormFace, CosFace, ArcFace, CombinedMargin, AdaFace, ElasticFace)',
            opts[key],
          );
        }
      }
    }
    assertKnownOptions(opts, spec.type, [...COMMON, ...(spec.normalized ? NORMALIZED : []), ...spec.extra]);
    const precision = opts.precision ?? 'fp32';
    const maxChunkBytes = opts.maxChunkBytes ?? 256 * 2 ** 20;
    const threads = opts.threads ?? 0;
    const seed = opts.seed ?? 0;
    const subCenters = opts.subCenters ?? 1;
    const sampleRate = opts.sampleRate ?? 1;
    const classStart = opts.classStart ?? 0;

    // Validate arguments
    assertInteger(opts.embeddingSize, 'embeddingSize', 1, 65536);
    assertInteger(opts.numClasses, 'numClasses', 2, 2 ** 31 - 1);
    assertOneOf(precision, 'precision', ['fp32', 'tf32', 'bf16', 'fp16'] as const);
    assertInteger(maxChunkBytes, 'maxChunkBytes', 4, Number.MAX_SAFE_INTEGER);
    assertInteger(threads, 'threads', 0, 1024);
    assertInteger(seed, 'seed', 0, 2 ** 53 - 1);
    assertInteger(subCenters, 'subCenters', 1, 255);
    assertNumber(sampleRate, 'sampleRate', 0, 1);
    assertInteger(classStart, 'classStart', 0, opts.numClasses - 1);
    const numLocalClasses = opts.numLocalClasses ?? opts.numClasses - classStart;
    assertInteger(numLocalClasses, 'numLocalClasses', 1, opts.numClasses - classStart);
    const [margin, resolved] = spec.margin(opts);

    // Interpret options
    this.embeddingSize = opts.embeddingSize;
    this.numClasses = opts.numClasses;
    this.classStart = classStart;
    this.numLocalClasses = numLocalClasses;
    this.subCenters = subCenters;
    this.sampleRate = sampleRate;
    this.sharded = numLocalClasses !== opts.numClasses;
    if (this.sharded && margin.elasticPlus) {
      throw new FacecudaError('NOT_IMPLEMENTED', `${spec.type} with plus: true in sharded mode (the pairing needs every row's target cosine on one shard)`);
    }
    this.device = resolveDevice(opts.device);
    this.#stateKeys = spec.stateKeys;
    this.#hyper = {
      type: spec.type, embeddingSize: this.embeddingSize, numClasses: this.numClasses, ...resolved, precision, maxChunkBytes, seed,
      ...(spec.normalized ? { subCenters, sampleRate, ...(this.sharded ? { classStart, numLocalClasses } : {}) } : {}),
    };
    const A = addon();
    this[NATIVE] = new A.NativeMarginHead({
      ...margin,
      embeddingSize: this.embeddingSize,
      numClasses: this.numClasses,
      device: this.device,
      precision,
      maxChunkBytes,
      threads,
      seed,
      subCenters,
      sampleRate,
      classStart,
      numLocalClasses: this.sharded ? numLocalClasses : 0,
    });
    // Queued before anything the caller does next, so no call can see uninitialized weights.
    void this[NATIVE].initNormal(0.01, seed).catch(() => undefined);
  }

  /** Rows of the weight matrix: numLocalClasses·subCenters. */
  get weightRows(): number {
    return this.numLocalClasses * this.subCenters;
  }

  /** True in training mode (the default), false after {@link eval}. */
  get training(): boolean {
    return this.#training;
  }

  /**
   * The options this head was built with, defaults filled in, plus its `type` (for checkpoints and
   * logs): `new ArcFaceHead({ ...rest, device })` with `{ type, ...rest } = head.hyperparams()` builds
   * the same head. `device` and `threads` are left out (they belong to the machine, not the model).
   * @example console.log(head.hyperparams()); // { type: 'ArcFaceHead', embeddingSize: 512, ..., margin: 0.5 }
   */
  hyperparams(): Record<string, unknown> {
    return { ...this.#hyper };
  }

  /**
   * Replaces the class weights: row-major [numLocalClasses·subCenters, embeddingSize] (row c·K + k
   * is sub-center k of local class c).
   * @throws `SHAPE_MISMATCH` for a wrong size, TypeError for a wrong type, `DISPOSED`
   * @example await head.setWeight(Float32Array.from({ length: head.weightRows * head.embeddingSize }, Math.random));
   */
  async setWeight(w: Float32Array | Tensor): Promise<void> {
    const site = new Error();
    const arg = paramArg(w, [this.weightRows, this.embeddingSize], this.device, 'w');
    await withCallSite(this[NATIVE].setWeight(arg), site);
  }

  /**
   * A copy of the class weights, row-major [numLocalClasses·subCenters, embeddingSize].
   * @example const w = await head.getWeight();
   */
  async getWeight(): Promise<Float32Array> {
    const site = new Error();
    return withCallSite(this[NATIVE].getWeight(), site);
  }

  /**
   * Mean loss of the batch, with each row's softmax statistics. In training mode it advances the
   * step counter (AdaFace EMA, SphereFace λ, ElasticFace draws, Partial FC sample) and keeps what
   * {@link backward} needs; in eval mode it uses every class, the mean ElasticFace margin and the
   * current AdaFace EMA / SphereFace λ, and changes no state.
   *
   * @param x embeddings [B, D] (raw; the head normalizes them), a Float32Array or a float32 Tensor
   * @param labels global class of each row, integers in [0, numClasses)
   * @throws `SHAPE_MISMATCH` for sizes that disagree, RangeError (`OUT_OF_RANGE`) for a label outside
   *   [0, C), TypeError for a non-integer label, `INVALID_ARGUMENT` for NaN/Inf in x or W or B = 0
   * @example const { loss } = await head.forward(x, new Int32Array([3, 17]));
   */
  async forward(x: Float32Array | Tensor, labels: Int32Array | readonly number[]): Promise<HeadForwardResult> {
    const site = new Error();
    // Validate arguments
    const native = this[NATIVE];
    const rows = batchRows(x, this.embeddingSize, this.device);
    const lab = checkLabels(labels, rows, this.numClasses);

    // Interpret options
    const xt = toInputTensor(x, rows, this.embeddingSize, this.device);
    const lt = Tensor.from(lab, [rows], { device: this.device, dtype: 'int32' });
    try {
      const promise = native.forward(tensorArg(xt, 'x'), tensorArg(lt, 'labels'));
      this.#lastBatch = rows;
      const r = await withCallSite(promise, site);
      return { loss: r.loss, rowMax: r.rowMax, rowSumExp: r.rowSumExp, targetLogit: r.targetLogit };
    } finally {
      if (xt !== x) xt.dispose();
      lt.dispose();
    }
  }

  /**
   * Gradients of the last training forward's mean loss. gradEmbeddings is always written; gradWeight
   * (and gradBias) are overwritten, or added to with `accumulate: true`. With Partial FC the rows not
   * sampled are 0 (or keep their value when accumulating). A sharded head needs the global
   * `rowMax`/`rowSumExp` of {@link combineShardStats}; the full gradient is then the concatenation of
   * the shards' gradWeight rows and the sum of their gradEmbeddings.
   *
   * @throws `INVALID_ARGUMENT` without a training forward since the last backward (or in eval mode),
   *   for a sharded head without the global statistics, or for statistics on an unsharded head
   * @example const { gradEmbeddings, gradWeight } = await head.backward({ accumulate: true });
   */
  async backward(options?: BackwardOptions): Promise<HeadGradients> {
    const site = new Error();
    // Apply defaults
    const opts = optionsObject(options, 'options');
    assertKnownOptions(opts, 'backward', ['accumulate', 'rowMax', 'rowSumExp', 'lossScale']);
    const accumulate = opts.accumulate ?? false;
    const lossScale = opts.lossScale ?? 1;

    // Validate arguments
    assertBool(accumulate, 'accumulate');
    assertNumber(lossScale, 'lossScale', Number.MIN_VALUE, 3.4e38);
    const native = this[NATIVE];
    let rowMax: Float32Array | undefined;
    let rowSumExp: Float64Array | undefined;
    const given = opts.rowMax !== undefined || opts.rowSumExp !== undefined;
    if (this.sharded) {
      if (opts.rowMax === undefined || opts.rowSumExp === undefined) {
        throw new FacecudaError(
          'INVALID_ARGUMENT',
          'a sharded head needs { rowMax, rowSumExp }: the global statistics of every row (combineShardStats of every shard\'s forward)',
        );
      }
      rowMax = rowStats(opts.rowMax, 'rowMax', Float32Array) as Float32Array;
      rowSumExp = rowStats(opts.rowSumExp, 'rowSumExp', Float64Array) as Float64Array;
      for (const [name, a] of [['rowMax', rowMax], ['rowSumExp', rowSumExp]] as const) {
        if (this.#lastBatch >= 0 && a.length !== this.#lastBatch) {
          throw new FacecudaError('SHAPE_MISMATCH', `${name} length ${a.length} does not match batch ${this.#lastBatch}`);
        }
      }
    } else if (given) {
      throw new FacecudaError('INVALID_ARGUMENT', 'rowMax and rowSumExp are for sharded heads only (this head holds every class)');
    }

    // Interpret options
    const g = await withCallSite(native.backward(accumulate, rowMax, rowSumExp, lossScale === 1 ? undefined : lossScale), site);
    const out: HeadGradients = { gradEmbeddings: new Tensor(g.gradEmbeddings), gradWeight: new Tensor(g.gradWeight) };
    if (g.gradBias) out.gradBias = new Tensor(g.gradBias);
    return out;
  }

  /**
   * Logits without margin, for inference [B, numLocalClasses]: s·cos θ (SphereFace ‖x‖·cos θ;
   * Softmax W·x + b; sub-centers: the max over each class's sub-centers).
   * @example const z = await head.logits(x);
   */
  async logits(x: Float32Array | Tensor): Promise<Tensor> {
    const site = new Error();
    const native = this[NATIVE];
    const rows = batchRows(x, this.embeddingSize, this.device);
    const xt = toInputTensor(x, rows, this.embeddingSize, this.device);
    try {
      return new Tensor(await withCallSite(native.logits(tensorArg(xt, 'x')), site));
    } finally {
      if (xt !== x) xt.dispose();
    }
  }

  /**
   * Eval mode: forward gives the loss only (every class, no state change); backward is refused.
   * @example const { loss } = await head.eval().forward(x, labels);
   */
  eval(): this {
    void this[NATIVE].setTraining(false).catch(() => undefined);
    this.#training = false;
    return this;
  }

  /** Training mode (the default). */
  train(): this {
    void this[NATIVE].setTraining(true).catch(() => undefined);
    this.#training = true;
    return this;
  }

  /**
   * Handles on the head's weight and gradient (and the Softmax bias): the same storage, for an
   * optimizer that updates in place. gradWeight is zero until the first backward.
   * @example const { weight, gradWeight } = await head.parameters();
   */
  async parameters(): Promise<HeadParameters> {
    const site = new Error();
    const p = await withCallSite(this[NATIVE].parameters(), site);
    if (!p.gradWeight) throw new FacecudaError('INTERNAL', 'the head has no weight gradient buffer');
    const out: HeadParameters = { weight: new Tensor(p.weight), gradWeight: new Tensor(p.gradWeight) };
    if (p.bias) out.bias = new Tensor(p.bias);
    if (p.gradBias) out.gradBias = new Tensor(p.gradBias);
    return out;
  }

  /**
   * The local class indices (ascending, in [0, numLocalClasses)) the last training forward used:
   * with Partial FC the sample, otherwise every class.
   * @example const sampled = await head.sampledClasses();
   */
  async sampledClasses(): Promise<Int32Array> {
    const site = new Error();
    return withCallSite(this[NATIVE].sampledClasses(), site);
  }

  /**
   * The head's training state (for checkpoints): `step` (training forwards so far), plus AdaFace's
   * `batchMean`/`batchStd` and SphereFace's `lambda` (λ of the last training forward, = λ(step)).
   * @example const { step } = await head.state();
   */
  async state(): Promise<S> {
    const site = new Error();
    const s = await withCallSite(this[NATIVE].state(), site);
    const out: Record<string, number> = { step: s.step };
    for (const k of this.#stateKeys) out[k] = s[k];
    return out as unknown as S;
  }

  /**
   * Restores state from a checkpoint. The given fields replace the current ones; `lambda` is derived
   * from `step` and cannot be set.
   * @example await head.setState({ step: 1000 });
   */
  async setState(state: Settable<S>): Promise<void> {
    const site = new Error();
    // Validate arguments
    if (!is.object(state)) throw invalidParameterError('state', 'a state object', state);
    const s = state as Record<string, unknown>;
    if (s.lambda !== undefined) {
      throw invalidParameterError('state.lambda', 'no value (λ is derived from step: set step instead)', s.lambda);
    }
    const settable = this.#stateKeys.filter((k) => k !== 'lambda');
    assertKnownOptions(s, 'state', ['step', ...settable]);
    if (s.step !== undefined) assertInteger(s.step, 'state.step', 0, Number.MAX_SAFE_INTEGER);
    if (s.batchMean !== undefined) assertNumber(s.batchMean, 'state.batchMean');
    if (s.batchStd !== undefined) assertNumber(s.batchStd, 'state.batchStd', 0);
    await withCallSite(this[NATIVE].setState(s as { step?: number; batchMean?: number; batchStd?: number }), site);
  }

  /** Bytes of the largest logits chunk the last forward/backward held (read after awaiting it). */
  lastChunkBytes(): number {
    return this[NATIVE].lastChunkBytes();
  }

  /** Frees the weights, gradients and workspaces (after queued work). Later calls throw `DISPOSED`. */
  dispose(): void {
    this[NATIVE].dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

// #region heads

function scaleOf(o: Record<string, unknown>): number {
  const s = o.scale ?? 64;
  assertNumber(s, 'scale', 1e-3, 1e4);
  return s;
}

/**
 * Plain softmax: z = W·x + b on raw embeddings (no normalization, no margin), with a bias.
 * @example const head = new SoftmaxHead({ embeddingSize: 512, numClasses: 10572, device: 'cpu' });
 */
export class SoftmaxHead extends MarginHead {
  constructor(options: HeadOptions) {
    super({ type: 'SoftmaxHead', extra: [], normalized: false, stateKeys: [], margin: () => [{ kind: 7 }, {}] }, options);
  }

  /**
   * Replaces the bias [numClasses].
   * @example await head.setBias(new Float32Array(head.numClasses));
   */
  async setBias(b: Float32Array | Tensor): Promise<void> {
    const site = new Error();
    const arg = paramArg(b, [this.numLocalClasses], this.device, 'b');
    await withCallSite(this[NATIVE].setBias(arg), site);
  }

  /** A copy of the bias [numClasses]. */
  async getBias(): Promise<Float32Array> {
    const site = new Error();
    return withCallSite(this[NATIVE].getBias(), site);
  }

  /** As {@link MarginHead.backward}, with gradBias [numClasses]. */
  override async backward(options?: BackwardOptions): Promise<Required<HeadGradients>> {
    return (await super.backward(options)) as Required<HeadGradients>;
  }

  /** As {@link MarginHead.parameters}, with bias and gradBias. */
  override async parameters(): Promise<Required<HeadParameters>> {
    return (await super.parameters()) as Required<HeadParameters>;
  }
}

/**
 * NormFace: s·cos θ, no margin.
 * @example const head = new NormFaceHead({ embeddingSize: 512, numClasses: 1000, device: 'cpu', scale: 30 });
 */
export class NormFaceHead extends MarginHead {
  constructor(options: NormalizedHeadOptions & { scale?: number }) {
    super({ type: 'NormFaceHead', extra: ['scale'], normalized: true, stateKeys: [], margin: (o) => [{ kind: 0, scale: scaleOf(o) }, { scale: scaleOf(o) }] }, options);
  }
}

/** SphereFace's λ annealing: λ = max(base·(1 + gamma·iteration)^(−power), min). */
export interface SphereFaceLambda {
  base?: number;
  gamma?: number;
  power?: number;
  min?: number;
}

/**
 * SphereFace (A-Softmax, §2): raw features, normalized weights; logits ‖x‖·cos θ, target
 * ‖x‖·(λ·cos θ + ψ_m(θ))/(1 + λ) with the piecewise ψ of integer margin m (default 4) and the Caffe λ
 * annealing (base 1000, gamma 0.12, power 1, min 5; iteration = step + 1). True gradient.
 * @example const head = new SphereFaceHead({ embeddingSize: 512, numClasses: 10572, device: 'cpu', lambda: { min: 5 } });
 */
export class SphereFaceHead extends MarginHead<SphereFaceState> {
  constructor(options: HeadOptions & { margin?: number; lambda?: SphereFaceLambda }) {
    super(
      {
        type: 'SphereFaceHead',
        extra: ['margin', 'lambda'],
        normalized: false,
        stateKeys: ['lambda'],
        margin: (o) => {
          const m = o.margin ?? 4;
          assertInteger(m, 'margin', 1, 16);
          const l = optionsObject(o.lambda, 'lambda');
          assertKnownOptions(l, 'SphereFaceHead lambda', ['base', 'gamma', 'power', 'min']);
          const base = l.base ?? 1000;
          const gamma = l.gamma ?? 0.12;
          const power = l.power ?? 1;
          const min = l.min ?? 5;
          assertNumber(base, 'lambda.base', Number.MIN_VALUE, 1e12);
          assertNumber(gamma, 'lambda.gamma', 0, 1e6);
          assertNumber(power, 'lambda.power', 0, 100);
          assertNumber(min, 'lambda.min', 0, 1e12);
          return [
            { kind: 6, m1: m, sphereBase: base, sphereGamma: gamma, spherePower: power, sphereMin: min },
            { margin: m, lambda: { base, gamma, power, min } },
          ];
        },
      },
      options,
    );
  }
}

/**
 * CosFace: s·(cos θ − m) on the target (default s 64, m 0.35).
 * @example const head = new CosFaceHead({ embeddingSize: 512, numClasses: 1000, device: 'cpu', margin: 0.4 });
 */
export class CosFaceHead extends MarginHead {
  constructor(options: NormalizedHeadOptions & { scale?: number; margin?: number }) {
    super(
      {
        type: 'CosFaceHead',
        extra: ['scale', 'margin'],
        normalized: true,
        stateKeys: [],
        margin: (o) => {
          const m = o.margin ?? 0.35;
          assertNumber(m, 'margin', 0, 2);
          return [{ kind: 1, scale: scaleOf(o), m3: m }, { scale: scaleOf(o), margin: m }];
        },
      },
      options,
    );
  }
}

/**
 * ArcFace: s·cos(θ + m) on the target (default s 64, m 0.5), exact gradient, with the th/mm fallback
 * that keeps the target logit monotone. `{ fallback: false, gradient: 'straight-through' }`
 * reproduces arcface_torch.
 * @example const head = new ArcFaceHead({ embeddingSize: 512, numClasses: 93431, device: 'cpu' });
 */
export class ArcFaceHead extends MarginHead {
  constructor(
    options: NormalizedHeadOptions & { scale?: number; margin?: number; easyMargin?: boolean; fallback?: boolean; gradient?: 'exact' | 'straight-through' },
  ) {
    super(
      {
        type: 'ArcFaceHead',
        extra: ['scale', 'margin', 'easyMargin', 'fallback', 'gradient'],
        normalized: true,
        stateKeys: [],
        margin: (o) => {
          const m = o.margin ?? 0.5;
          const easy = o.easyMargin ?? false;
          const fallback = o.fallback ?? true;
          const gradient = o.gradient ?? 'exact';
          assertNumber(m, 'margin', 0, Math.PI / 2);
          assertBool(easy, 'easyMargin');
          assertBool(fallback, 'fallback');
          assertOneOf(gradient, 'gradient', ['exact', 'straight-through'] as const);
          return [
            { kind: 2, scale: scaleOf(o), m2: m, easyMargin: easy, fallback, straightThrough: gradient === 'straight-through' },
            { scale: scaleOf(o), margin: m, easyMargin: easy, fallback, gradient },
          ];
        },
      },
      options,
    );
  }
}

/**
 * Combined margin: s·(cos(m1·θ + m2) − m3) on the target, true gradient (the mxnet form).
 * @example const head = new CombinedMarginHead({ embeddingSize: 512, numClasses: 1000, device: 'cpu', m1: 1, m2: 0.3, m3: 0.2 });
 */
export class CombinedMarginHead extends MarginHead {
  constructor(options: NormalizedHeadOptions & { scale?: number; m1?: number; m2?: number; m3?: number }) {
    super(
      {
        type: 'CombinedMarginHead',
        extra: ['scale', 'm1', 'm2', 'm3'],
        normalized: true,
        stateKeys: [],
        margin: (o) => {
          const m1 = o.m1 ?? 1;
          const m2 = o.m2 ?? 0;
          const m3 = o.m3 ?? 0;
          assertNumber(m1, 'm1', 0.1, 10);
          assertNumber(m2, 'm2', 0, Math.PI / 2);
          assertNumber(m3, 'm3', 0, 2);
          return [{ kind: 3, scale: scaleOf(o), m1, m2, m3 }, { scale: scaleOf(o), m1, m2, m3 }];
        },
      },
      options,
    );
  }
}

/**
 * AdaFace (§4): margins adapted to each row's feature norm n = clip(‖x‖, 0.001, 100) through the EMA
 * batch statistics (updated before use in every training forward; a batch of one leaves the std
 * unchanged): ŝ = clip(h·(n − batchMean)/(batchStd + eps), −1, 1), target cos(θ − m·ŝ) − m·(1 + ŝ),
 * every cosine clamped to ±(1 − eps). Defaults m 0.4, h 0.333, s 64, tAlpha 0.01, eps 1e-3.
 * @example const head = new AdaFaceHead({ embeddingSize: 512, numClasses: 85742, device: 'cpu' });
 */
export class AdaFaceHead extends MarginHead<AdaFaceState> {
  constructor(options: NormalizedHeadOptions & { scale?: number; margin?: number; h?: number; tAlpha?: number; eps?: number }) {
    super(
      {
        type: 'AdaFaceHead',
        extra: ['scale', 'margin', 'h', 'tAlpha', 'eps'],
        normalized: true,
        stateKeys: ['batchMean', 'batchStd'],
        margin: (o) => {
          const m = o.margin ?? 0.4;
          const h = o.h ?? 0.333;
          const tAlpha = o.tAlpha ?? 0.01;
          const eps = o.eps ?? 1e-3;
          assertNumber(m, 'margin', 0, Math.PI / 2);
          assertNumber(h, 'h', 0, 100);
          assertNumber(tAlpha, 'tAlpha', 0, 1);
          assertNumber(eps, 'eps', 1e-9, 0.1);
          return [
            { kind: 4, scale: scaleOf(o), m2: m, adaH: h, adaTAlpha: tAlpha, adaEps: eps },
            { scale: scaleOf(o), margin: m, h, tAlpha, eps },
          ];
        },
      },
      options,
    );
  }
}

/** ElasticFace's defaults per kind and variant (SPEC §00, §5). */
const ELASTIC_DEFAULTS = {
  arc: { margin: 0.5, std: 0.05, plusStd: 0.0175 },
  cos: { margin: 0.35, std: 0.05, plusStd: 0.02 },
} as const;

/**
 * ElasticFace (§5): per-row margins m_i = margin + std·N(0, 1), drawn in every training forward from a
 * counter-based generator keyed by (seed, step, row), so the CPU and CUDA draw the same margins.
 * `kind: 'arc'` (default; margin 0.5, std 0.05) puts cos(θ + m_i) on the target, `'cos'` (margin 0.35,
 * std 0.05) cos θ − m_i. `plus: true` pairs the sorted margins with the target cosines (largest cosine,
 * smallest margin; std defaults 0.0175 arc / 0.02 cos). Eval uses the mean margin.
 * @example const head = new ElasticFaceHead({ embeddingSize: 512, numClasses: 85742, device: 'cpu', kind: 'cos', plus: true });
 */
export class ElasticFaceHead extends MarginHead {
  constructor(options: NormalizedHeadOptions & { scale?: number; kind?: 'arc' | 'cos'; margin?: number; std?: number; plus?: boolean }) {
    super(
      {
        type: 'ElasticFaceHead',
        extra: ['scale', 'kind', 'margin', 'std', 'plus'],
        normalized: true,
        stateKeys: [],
        margin: (o) => {
          const kind = o.kind ?? 'arc';
          assertOneOf(kind, 'kind', ['arc', 'cos'] as const);
          const plus = o.plus ?? false;
          assertBool(plus, 'plus');
          const d = ELASTIC_DEFAULTS[kind];
          const m = o.margin ?? d.margin;
          const std = o.std ?? (plus ? d.plusStd : d.std);
          assertNumber(m, 'margin', 0, kind === 'arc' ? Math.PI / 2 : 2);
          assertNumber(std, 'std', 0, 1);
          return [
            { kind: 5, scale: scaleOf(o), m2: m, elasticStd: std, elasticCos: kind === 'cos', elasticPlus: plus },
            { scale: scaleOf(o), kind, margin: m, std, plus },
          ];
        },
      },
      options,
    );
  }

  /**
   * The per-row margins of the last forward (B entries; all `margin` in eval mode).
   * @example const m = await head.lastMargins();
   */
  async lastMargins(): Promise<Float64Array> {
    const site = new Error();
    return withCallSite(this[NATIVE].lastMargins(), site);
  }
}

// #endregion

/**
 * Merges the forward statistics of the shards of one batch (SPEC §7.3, what the all-reduces of a
 * distributed softmax compute): M_i = max_r rowMax_r,i, S_i = Σ_r rowSumExp_r,i·exp(rowMax_r,i − M_i),
 * loss = mean_i(M_i + log S_i − targetLogit_i), the target logit coming from the one shard that holds
 * row i's class. Pass `rowMax` and `rowSumExp` to every shard's backward.
 *
 * @throws `SHAPE_MISMATCH` when the shards disagree on the batch size, `INVALID_ARGUMENT` when a row's
 *   class is on no shard or on more than one
 * @example
 * const stats = await Promise.all(shards.map((h) => h.forward(x, labels)));
 * const { rowMax, rowSumExp, loss } = combineShardStats(stats);
 * const grads = await Promise.all(shards.map((h) => h.backward({ rowMax, rowSumExp })));
 */
export function combineShardStats(shards: readonly ShardStats[]): CombinedShardStats {
  // Validate arguments
  if (!Array.isArray(shards) || shards.length === 0) throw invalidParameterError('shards', 'a non-empty array of forward results', shards);
  shards.forEach((s, r) => {
    if (!is.object(s)) throw invalidParameterError(`shards[${r}]`, 'a forward result { rowMax, rowSumExp, targetLogit }', s);
    for (const k of ['rowMax', 'rowSumExp', 'targetLogit'] as const) {
      const v = (s as unknown as Record<string, unknown>)[k];
      if (!ArrayBuffer.isView(v) && !Array.isArray(v)) throw invalidParameterError(`shards[${r}].${k}`, 'an array of numbers', v);
    }
  });
  const B = shards[0].rowMax.length;
  shards.forEach((s, r) => {
    for (const k of ['rowMax', 'rowSumExp', 'targetLogit'] as const) {
      if (s[k].length !== B) throw new FacecudaError('SHAPE_MISMATCH', `shards[${r}].${k} has ${s[k].length} entries but shards[0].rowMax has ${B}`);
    }
  });

  // Interpret options
  const rowMax = new Float32Array(B);
  const rowSumExp = new Float64Array(B);
  let total = 0;
  for (let i = 0; i < B; i++) {
    let M = -Infinity;
    let owner = -1;
    for (let r = 0; r < shards.length; r++) {
      M = Math.max(M, shards[r].rowMax[i]);
      if (!Number.isNaN(shards[r].targetLogit[i])) {
        if (owner >= 0) throw new FacecudaError('INVALID_ARGUMENT', `row ${i} has a target logit on shards ${owner} and ${r}: the shards overlap`);
        owner = r;
      }
    }
    if (owner < 0) throw new FacecudaError('INVALID_ARGUMENT', `row ${i} has no target logit on any shard: its class is on none of them`);
    if (!Number.isFinite(M)) throw new FacecudaError('INVALID_ARGUMENT', `row ${i} has no finite rowMax on any shard`);
    let S = 0;
    for (let r = 0; r < shards.length; r++) {
      const s = shards[r].rowSumExp[i];
      if (s > 0) S += s * Math.exp(shards[r].rowMax[i] - M);
    }
    rowMax[i] = M;
    rowSumExp[i] = S;
    total += M + Math.log(S) - shards[owner].targetLogit[i];
  }
  return { rowMax, rowSumExp, loss: total / B };
}

/** Options of {@link CenterLoss}. */
export interface CenterLossOptions {
  embeddingSize: number;
  /** C, at least 1. */
  numClasses: number;
  /** Loss weight λ (default 0.003). */
  lambda?: number;
  /** Center update rate α in [0, 1] (default 0.5). */
  alpha?: number;
  device?: DeviceSpec;
}

/**
 * Center loss (§6), an auxiliary loss to add to any head's: L = λ/(2B)·Σ‖x_i − c_{y_i}‖²,
 * ∂L/∂x_i = λ(x_i − c_{y_i})/B, and after each backward the Caffe center update
 * c_j ← c_j − α·Σ_{i: y_i = j}(c_j − x_i)/(1 + n_j). Centers start at 0.
 * @example
 * const center = new CenterLoss({ embeddingSize: 512, numClasses: 10572, device: 'cpu' });
 * const { loss } = await center.forward(x, labels);
 * const { gradEmbeddings } = await center.backward();
 */
export class CenterLoss {
  readonly embeddingSize: number;
  readonly numClasses: number;
  readonly lambda: number;
  readonly alpha: number;
  readonly device: DeviceName;
  readonly #native: Binding.NativeCenterLoss;

  constructor(options: CenterLossOptions) {
    // Apply defaults
    const opts = optionsObject(options, 'options');
    assertKnownOptions(opts, 'CenterLoss', ['embeddingSize', 'numClasses', 'lambda', 'alpha', 'device']);
    const lambda = opts.lambda ?? 0.003;
    const alpha = opts.alpha ?? 0.5;

    // Validate arguments
    assertInteger(opts.embeddingSize, 'embeddingSize', 1, 65536);
    assertInteger(opts.numClasses, 'numClasses', 1, 2 ** 31 - 1);
    assertNumber(lambda, 'lambda', 0, 1e6);
    assertNumber(alpha, 'alpha', 0, 1);

    // Interpret options
    this.embeddingSize = opts.embeddingSize;
    this.numClasses = opts.numClasses;
    this.lambda = lambda;
    this.alpha = alpha;
    this.device = resolveDevice(opts.device);
    this.#native = new (addon().NativeCenterLoss)({
      embeddingSize: this.embeddingSize, numClasses: this.numClasses, lambda, alpha, device: this.device,
    });
  }

  /** Replaces the centers: row-major [numClasses, embeddingSize]. */
  async setCenters(c: Float32Array | Tensor): Promise<void> {
    const site = new Error();
    const arg = paramArg(c, [this.numClasses, this.embeddingSize], this.device, 'c');
    await withCallSite(this.#native.setCenters(arg), site);
  }

  /** A copy of the centers [numClasses, embeddingSize]. */
  async getCenters(): Promise<Float32Array> {
    const site = new Error();
    return withCallSite(this.#native.getCenters(), site);
  }

  /**
   * The center loss of the batch; keeps what {@link backward} needs.
   * @throws as {@link MarginHead.forward}
   */
  async forward(x: Float32Array | Tensor, labels: Int32Array | readonly number[]): Promise<{ loss: number }> {
    const site = new Error();
    const native = this.#native;
    const rows = batchRows(x, this.embeddingSize, this.device);
    const lab = checkLabels(labels, rows, this.numClasses);
    const xt = toInputTensor(x, rows, this.embeddingSize, this.device);
    const lt = Tensor.from(lab, [rows], { device: this.device, dtype: 'int32' });
    try {
      return { loss: await withCallSite(native.forward(tensorArg(xt, 'x'), tensorArg(lt, 'labels')), site) };
    } finally {
      if (xt !== x) xt.dispose();
      lt.dispose();
    }
  }

  /**
   * d(loss)/dx [B, D] of the last forward (a tensor shared with the loss: valid until the next
   * backward), then the center update unless `updateCenters: false`.
   */
  async backward(options?: { updateCenters?: boolean }): Promise<{ gradEmbeddings: Tensor }> {
    const site = new Error();
    const opts = optionsObject(options, 'options');
    assertKnownOptions(opts, 'backward', ['updateCenters']);
    const update = opts.updateCenters ?? true;
    assertBool(update, 'updateCenters');
    return { gradEmbeddings: new Tensor(await withCallSite(this.#native.backward(update), site)) };
  }

  /** Frees the centers and buffers (after queued work). Later calls throw `DISPOSED`. */
  dispose(): void {
    this.#native.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
