/**
 * Optimizers: SGD (momentum, Nesterov, dampening) and AdamW, as ONE fused native job per step over
 * every parameter of every group (CPU thread pool or CUDA kernels), with global-norm gradient
 * clipping, a finite check and sparse row updates for Partial FC heads.
 *
 * Semantics (the engine's exact formulas are in native/include/facecuda/optim.h):
 * - SGD (torch.optim.SGD): d = g·clip + wd·p; with momentum, buf ← d on a parameter's first step,
 *   else buf ← momentum·buf + (1 − dampening)·d; p ← p − lr·(nesterov ? d + momentum·buf : buf)
 *   (without momentum p ← p − lr·d).
 * - AdamW (torch.optim.AdamW, amsgrad off): p ← p·(1 − lr·wd); m ← β1·m + (1 − β1)·g;
 *   v ← β2·v + (1 − β2)·g²; p ← p − lr/(1 − β1^t) · m / (sqrt(v)/sqrt(1 − β2^t) + eps), t = the
 *   parameter's step count.
 * - Clipping (torch.nn.utils.clip_grad_norm_): a group with `clipNorm` computes its own global norm
 *   sqrt(Σ g²) (double, fixed order) and scales its gradients by min(1, clipNorm/(norm + 1e-6)) on
 *   the fly (the gradient tensors themselves are left unchanged by a step; {@link clipGradNorm}
 *   scales them in place). arcface_torch: `clipNorm: 5` on the backbone group, none on the head.
 * - Finite check: when any gradient holds NaN or ±Inf the step is skipped — no weight, gradient or
 *   state is written and step counts do not advance — and the result says which parameter.
 * - Arithmetic in double per element, stored values rounded to float32 once: the CPU and CUDA give
 *   the same bits, and the CPU's result does not depend on the thread count.
 * - Sparse rows (Partial FC, SPEC §00): `step({ lr, sparse: { [name]: rows } })` updates only the
 *   listed rows (first dimension) of that parameter and of its state — weight decay and momentum
 *   included; every other row is left exactly as it is (the original Partial FC / arcface_torch v1
 *   semantics: only the sampled sub-weight is an optimizer parameter that step). Only those rows'
 *   gradients enter the norm and the finite check. State rows start at 0 (see optim.h for the first
 *   step of a row).
 *
 * @example
 * const groups = paramGroups(await model.parameters());          // BN, PReLU, biases: no decay
 * groups[0].clipNorm = 5;                                          // clip the backbone (arcface_torch)
 * groups.push({ params: headParams(await head.parameters()) });
 * const opt = new SGD(groups, { lr: 0.1, momentum: 0.9, weightDecay: 5e-4 });
 * const sched = new PolyWarmupLR({ base: 0.1, totalSteps, warmupSteps: 0 });
 * const { skipped, gradNorm } = await opt.step({ lr: sched.lrAt(step) });
 */
import { addon, Binding } from './binding';
import { FacecudaError, invalidParameterError, outOfRangeError, withCallSite } from './errors';
import type { HeadParameters } from './heads';
import { Tensor, tensorArg } from './tensor';
import { assertBool, assertKnownOptions, assertNumber, is, optionsObject } from './validate';

/** A parameter as optimizers see it: {@link Backbone.parameters} entries fit as they are. */
export interface OptimParam {
  /** Unique name (state and sparse rows are keyed by it). */
  name: string;
  /** The float32 parameter, updated in place. */
  value: Tensor;
  /** Its gradient (same element count), or null: the parameter is not updated. */
  grad: Tensor | null;
  /** false: not updated (Backbone's frozen parameters). Default true. */
  trainable?: boolean;
  /** 'buffer' entries are not updated. */
  kind?: 'parameter' | 'buffer';
}

/** A group of parameters sharing options. */
export interface ParamGroup {
  params: readonly OptimParam[];
  /** Weight decay of the group (default: the optimizer's). */
  weightDecay?: number;
  /** Multiplies the step's lr for this group (default 1). */
  lrScale?: number;
  /** Clip this group's gradients to this global L2 norm (its own norm; default: no clipping). */
  clipNorm?: number;
}

/** What {@link Optimizer.step} reports. */
export interface OptimStepResult {
  /** True when a gradient was not finite: nothing was written. */
  skipped: boolean;
  /** Why the step was skipped, naming the parameter. */
  reason?: string;
  /** sqrt(Σ g²) over every updated parameter (sparse: the listed rows), before clipping. */
  gradNorm: number;
  /** The same per group (NaN or Infinity where not finite). */
  groupNorms: number[];
  /** The clip scale applied per group (1: none). */
  clipScales: number[];
}

/** Options of {@link Optimizer.step}. */
export interface OptimStepOptions {
  /** The base learning rate of this step (a schedule's lrAt(step)); groups scale it by lrScale. */
  lr: number;
  /** Sparse updates: parameter name → the rows (first dimension) to update this step (any order, unique). */
  sparse?: Readonly<Record<string, Int32Array | readonly number[]>>;
  /** CPU threads (default 0 = the whole pool). Ignored on CUDA. */
  threads?: number;
}

/** One parameter's saved state. */
export interface ParamState {
  name: string;
  /** Steps taken by this parameter (AdamW's t; SGD's first-step rule). */
  step: number;
  shape: number[];
  /** SGD: { momentumBuffer } (with momentum); AdamW: { expAvg, expAvgSq }. */
  buffers: Record<string, Float32Array>;
}

/** A checkpoint of an optimizer's state: {@link Optimizer.state} / {@link Optimizer.loadState}. */
export interface OptimizerState {
  type: 'SGD' | 'AdamW';
  /** Steps taken (not counting skipped ones). */
  step: number;
  params: ParamState[];
}

/** @internal The hyper-parameters of a native step (Binding.OptimStepConfig). */
export type NativeHyper = Binding.OptimHyper;
type NativeTensorHandle = ReturnType<typeof tensorArg>;
const optimAddon = (): Binding.Addon => addon();

interface Entry {
  p: OptimParam;
  group: number;
  wd: number;
  lrScale: number;
  step: number;
  buffers: Tensor[];
}

const BUFFER_NAMES: Record<'SGD' | 'AdamW', string[]> = { SGD: ['momentumBuffer'], AdamW: ['expAvg', 'expAvgSq'] };

function checkGroups(groups: unknown): ParamGroup[] {
  if (!Array.isArray(groups) || groups.length === 0) throw invalidParameterError('groups', 'a non-empty array of parameter groups', groups);
  groups.forEach((g: unknown, i: number) => {
    if (!is.object(g)) throw invalidParameterError(`groups[${i}]`, 'a parameter group object', g);
    assertKnownOptions(g, `groups[${i}]`, ['params', 'weightDecay', 'lrScale', 'clipNorm']);
    if (!Array.isArray(g.params)) throw invalidParameterError(`groups[${i}].params`, 'an array of parameters', g.params);
    if (g.weightDecay !== undefined) assertNumber(g.weightDecay, `groups[${i}].weightDecay`, 0);
    if (g.lrScale !== undefined) assertNumber(g.lrScale, `groups[${i}].lrScale`, 0);
    if (g.clipNorm !== undefined) {
      assertNumber(g.clipNorm, `groups[${i}].clipNorm`);
      if (!(g.clipNorm > 0)) throw outOfRangeError(`groups[${i}].clipNorm`, 'a number > 0', g.clipNorm);
    }
  });
  return groups as ParamGroup[];
}

/** The rows of a sparse update: sorted, unique, in [0, rows). */
function sparseRows(v: unknown, name: string, rows: number): Int32Array {
  let a: Int32Array;
  if (v instanceof Int32Array) a = Int32Array.from(v);
  else if (Array.isArray(v)) {
    v.forEach((r: unknown, i: number) => {
      if (!is.integer(r)) throw invalidParameterError(`${name}[${i}]`, 'an integer row index', r);
    });
    a = Int32Array.from(v as number[]);
  } else throw invalidParameterError(name, 'an Int32Array or an array of row indices', v);
  a.sort();
  for (let i = 0; i < a.length; i++) {
    if (a[i] < 0 || a[i] >= rows) throw outOfRangeError(name, `row indices in [0, ${rows})`, a[i]);
    if (i > 0 && a[i] === a[i - 1]) throw invalidParameterError(name, 'unique row indices', a[i]);
  }
  return a;
}

/**
 * Base of {@link SGD} and {@link AdamW}: parameter groups, per-parameter state on the parameters'
 * device, one fused native job per step, checkpointing.
 */
export abstract class Optimizer {
  readonly #entries: Entry[] = [];
  readonly #byName = new Map<string, Entry>();
  readonly #groups: ParamGroup[];
  readonly #clipGroups: number[] = []; // group index → clip group index (−1: none)
  readonly #device: string;
  #step = 0;
  #disposed = false;

  /** @internal */
  protected constructor(
    groups: readonly ParamGroup[],
    defaultWeightDecay: number,
    private readonly kind: 'SGD' | 'AdamW',
    private readonly numBuffers: number,
  ) {
    this.#groups = checkGroups(groups);
    let device: string | undefined;
    let clip = 0;
    this.#groups.forEach((g, gi) => {
      this.#clipGroups.push(g.clipNorm !== undefined ? clip++ : -1);
      g.params.forEach((p: unknown, pi: number) => {
        const where = `groups[${gi}].params[${pi}]`;
        if (!is.object(p)) throw invalidParameterError(where, 'a parameter { name, value, grad }', p);
        if (!is.string(p.name) || p.name === '') throw invalidParameterError(`${where}.name`, 'a non-empty string', p.name);
        if (p.kind === 'buffer' || p.trainable === false || p.grad === null || p.grad === undefined) return;
        const v = tensorArg(p.value, `${where}.value`);
        const gr = tensorArg(p.grad, `${where}.grad`);
        if (v.dtype !== 'float32' || gr.dtype !== 'float32') throw invalidParameterError(where, 'float32 value and grad', `${v.dtype}/${gr.dtype}`);
        const n = v.shape.reduce((a, b) => a * b, 1);
        if (gr.shape.reduce((a, b) => a * b, 1) !== n) {
          throw new FacecudaError('SHAPE_MISMATCH', `${where} ('${p.name}'): grad [${gr.shape.join(', ')}] does not match value [${v.shape.join(', ')}]`);
        }
        device ??= v.device;
        if (v.device !== device || gr.device !== device) {
          throw new FacecudaError('INVALID_ARGUMENT', `${where} ('${p.name}') is on ${v.device}/${gr.device} but other parameters are on ${device}`);
        }
        if (this.#byName.has(p.name)) throw invalidParameterError(`${where}.name`, 'a name not used by another parameter', p.name);
        const e: Entry = { p: p as unknown as OptimParam, group: gi, wd: g.weightDecay ?? defaultWeightDecay, lrScale: g.lrScale ?? 1, step: 0, buffers: [] };
        this.#entries.push(e);
        this.#byName.set(p.name, e);
      });
    });
    this.#device = device ?? 'cpu';
  }

  /** @internal The hyper-parameters of the native step. */
  protected abstract hyper(): NativeHyper;

  /** Steps taken (skipped steps not counted). */
  get stepCount(): number {
    return this.#step;
  }

  /** Names of the parameters this optimizer updates, in order. */
  get paramNames(): string[] {
    return this.#entries.map((e) => e.p.name);
  }

  #live(): void {
    if (this.#disposed) throw new FacecudaError('DISPOSED', `this ${this.kind} optimizer has been disposed`);
  }

  #ensureBuffers(): void {
    for (const e of this.#entries) {
      while (e.buffers.length < this.numBuffers) e.buffers.push(Tensor.zeros(e.p.value.shape, { device: this.#device as 'cpu' }));
    }
  }

  /**
   * One optimizer step over every parameter with a gradient, as one native job. A NaN or ±Inf
   * gradient skips the whole step (nothing written, counts unchanged); `reason` names the parameter.
   *
   * @throws TypeError / RangeError for bad options; `DISPOSED` after dispose
   * @example const { skipped, gradNorm } = await opt.step({ lr: sched.lrAt(it) });
   */
  async step(options: OptimStepOptions): Promise<OptimStepResult> {
    const site = new Error();
    this.#live();
    // Apply defaults
    const o = optionsObject(options, 'options');
    assertKnownOptions(o, 'step', ['lr', 'sparse', 'threads']);
    const threads = o.threads ?? 0;
    // Validate arguments
    assertNumber(o.lr, 'lr', 0);
    assertNumber(threads, 'threads', 0, 1024);
    if (!Number.isInteger(threads)) throw invalidParameterError('threads', 'an integer', threads);
    const sparse: { item: number; rows: Int32Array }[] = [];
    if (o.sparse !== undefined) {
      if (!is.object(o.sparse)) throw invalidParameterError('sparse', 'an object mapping parameter names to rows', o.sparse);
      for (const [name, rows] of Object.entries(o.sparse)) {
        const e = this.#byName.get(name);
        if (!e) throw invalidParameterError('sparse', `names of parameters this optimizer updates (${this.#entries.length} known)`, name);
        const shape = e.p.value.shape;
        if (shape.length === 0) throw invalidParameterError(`sparse['${name}']`, 'a parameter of rank >= 1', `[${shape.join(', ')}]`);
        sparse.push({ item: this.#entries.indexOf(e), rows: sparseRows(rows, `sparse['${name}']`, shape[0]) });
      }
    }
    // Interpret options
    return withCallSite(this.#run(o.lr, threads, sparse, false), site);
  }

  async #run(lr: number, threads: number, sparse: { item: number; rows: Int32Array }[], clipOnly: boolean): Promise<OptimStepResult> {
    this.#ensureBuffers();
    const tensors: NativeTensorHandle[] = [];
    const meta = new Float64Array(this.#entries.length * 8);
    this.#entries.forEach((e, i) => {
      const base = tensors.length;
      tensors.push(tensorArg(e.p.value, `'${e.p.name}'.value`), tensorArg(e.p.grad, `'${e.p.name}'.grad`));
      for (const b of e.buffers) tensors.push(tensorArg(b, `'${e.p.name}' state`));
      meta.set([base, base + 1, e.buffers.length > 0 ? base + 2 : -1, e.buffers.length > 1 ? base + 3 : -1,
        lr * e.lrScale, e.wd, e.step + 1, this.#clipGroups[e.group]], i * 8);
    });
    const clipNorms = Float64Array.from(this.#groups.filter((g) => g.clipNorm !== undefined).map((g) => g.clipNorm as number));
    const hyper = this.hyper();
    const config = { ...hyper, algo: clipOnly ? 2 : hyper.algo, threads, clipNorms, items: meta, sparse };
    const r = await optimAddon().optimStep(config, ...tensors);
    const groupSums = this.#groups.map(() => 0);
    this.#entries.forEach((e, i) => (groupSums[e.group] += r.itemSumSq[i]));
    const result: OptimStepResult = {
      skipped: r.skipped,
      gradNorm: r.gradNorm,
      groupNorms: groupSums.map(Math.sqrt),
      clipScales: this.#clipGroups.map((c) => (c >= 0 ? r.groupScales[c] : 1)),
    };
    if (r.skipped) {
      result.reason = `non-finite gradient (NaN or Inf) in '${this.#entries[r.nonFiniteItem]?.p.name}'`;
    } else {
      this.#step++;
      for (const e of this.#entries) e.step++;
    }
    return result;
  }

  /**
   * A copy of the state (buffers as host Float32Arrays, step counts) for a checkpoint; loading it
   * into a fresh optimizer over the same parameters continues bitwise as if uninterrupted.
   */
  async state(): Promise<OptimizerState> {
    const site = new Error();
    this.#live();
    const names = BUFFER_NAMES[this.kind];
    const params: ParamState[] = [];
    for (const e of this.#entries) {
      const buffers: Record<string, Float32Array> = {};
      for (let k = 0; k < e.buffers.length; k++) buffers[names[k]] = (await withCallSite(e.buffers[k].toArray(), site)) as Float32Array;
      params.push({ name: e.p.name, step: e.step, shape: e.p.value.shape, buffers });
    }
    return { type: this.kind, step: this.#step, params };
  }

  /**
   * Restores {@link state}. Every saved parameter must be one this optimizer updates, with the same
   * shape; parameters missing from the state start fresh (step 0, zero buffers).
   *
   * @throws TypeError / RangeError / `SHAPE_MISMATCH` for a state that does not fit
   */
  loadState(state: OptimizerState): void {
    this.#live();
    // Validate arguments
    if (!is.object(state)) throw invalidParameterError('state', 'an optimizer state object', state);
    if (state.type !== this.kind) throw invalidParameterError('state.type', `'${this.kind}'`, state.type);
    if (!is.integer(state.step) || state.step < 0) throw invalidParameterError('state.step', 'an integer >= 0', state.step);
    if (!Array.isArray(state.params)) throw invalidParameterError('state.params', 'an array', state.params);
    const names = BUFFER_NAMES[this.kind].slice(0, this.numBuffers);
    const seen = new Set<string>();
    const plan: { e: Entry; step: number; data: Float32Array[] }[] = [];
    state.params.forEach((ps: unknown, i: number) => {
      if (!is.object(ps)) throw invalidParameterError(`state.params[${i}]`, 'a parameter state', ps);
      const e = is.string(ps.name) ? this.#byName.get(ps.name) : undefined;
      if (!e) throw invalidParameterError(`state.params[${i}].name`, 'the name of a parameter this optimizer updates', ps.name);
      if (seen.has(e.p.name)) throw invalidParameterError(`state.params[${i}].name`, 'a name not listed twice', ps.name);
      seen.add(e.p.name);
      if (!is.integer(ps.step) || ps.step < 0) throw invalidParameterError(`state.params[${i}].step`, 'an integer >= 0', ps.step);
      const n = e.p.value.size;
      const bufs = ps.buffers as Record<string, unknown>;
      if (!is.object(bufs)) throw invalidParameterError(`state.params[${i}].buffers`, 'an object of Float32Arrays', bufs);
      const data = names.map((b) => {
        const d = bufs[b] as Float32Array;
        if (Object.prototype.toString.call(d) !== '[object Float32Array]') throw invalidParameterError(`state.params[${i}].buffers.${b}`, 'a Float32Array', d);
        if (d.length !== n) throw new FacecudaError('SHAPE_MISMATCH', `state of '${e.p.name}': ${b} has ${d.length} values but the parameter has ${n}`);
        return d;
      });
      plan.push({ e, step: ps.step, data });
    });
    // Interpret options
    for (const e of this.#entries) {
      for (const b of e.buffers) b.dispose();
      e.buffers = [];
      e.step = 0;
    }
    this.#ensureBuffers();
    for (const { e, step, data } of plan) {
      e.step = step;
      for (const b of e.buffers) b.dispose();
      e.buffers = data.map((d) => Tensor.from(d, e.p.value.shape, { device: this.#device as 'cpu' }));
    }
    this.#step = state.step;
  }

  /**
   * Multiplies every gradient this optimizer would read by `factor` in place, in one native job
   * (GradScaler's unscale: factor = 1 / loss scale). A NaN or ±Inf gradient writes nothing and comes
   * back as `skipped` with the parameter named (the loss scaler's "found inf").
   *
   * @example const { skipped } = await opt.scaleGradients(1 / scaler.scale);
   */
  async scaleGradients(factor: number): Promise<{ skipped: boolean; reason?: string; gradNorm: number }> {
    this.#live();
    return scaleGradients(this.#entries.map((e) => e.p), factor);
  }

  /** Frees the state buffers. Later calls throw DISPOSED. */
  dispose(): void {
    if (this.#disposed) return;
    for (const e of this.#entries) for (const b of e.buffers) b.dispose();
    this.#disposed = true;
  }
}

/** Options of {@link SGD}. */
export interface SGDOptions {
  /** Default lr: documentation only — every step passes its lr. */
  lr?: number;
  momentum?: number;
  nesterov?: boolean;
  weightDecay?: number;
  dampening?: number;
}

/**
 * SGD with momentum, PyTorch semantics (see the module comment). arcface_torch: momentum 0.9,
 * weightDecay 5e-4, lr 0.1.
 *
 * @throws TypeError / RangeError for bad options (nesterov needs momentum > 0 and dampening 0)
 * @example const opt = new SGD(paramGroups(await model.parameters()), { lr: 0.1, momentum: 0.9, weightDecay: 5e-4 });
 */
export class SGD extends Optimizer {
  readonly lr: number;
  readonly momentum: number;
  readonly nesterov: boolean;
  readonly weightDecay: number;
  readonly dampening: number;

  constructor(groups: readonly ParamGroup[], options: SGDOptions) {
    // Apply defaults
    const o = optionsObject(options, 'options');
    assertKnownOptions(o, 'SGD', ['lr', 'momentum', 'nesterov', 'weightDecay', 'dampening'], { weight_decay: 'weightDecay' });
    const momentum = o.momentum ?? 0;
    const nesterov = o.nesterov ?? false;
    const weightDecay = o.weightDecay ?? 0;
    const dampening = o.dampening ?? 0;
    // Validate arguments
    assertNumber(o.lr, 'lr', 0);
    assertNumber(momentum, 'momentum', 0);
    assertBool(nesterov, 'nesterov');
    assertNumber(weightDecay, 'weightDecay', 0);
    assertNumber(dampening, 'dampening');
    if (nesterov && (momentum <= 0 || dampening !== 0)) {
      throw outOfRangeError('nesterov', 'false unless momentum > 0 and dampening is 0', nesterov);
    }
    // Interpret options
    super(groups, weightDecay, 'SGD', momentum > 0 ? 1 : 0);
    this.lr = o.lr;
    this.momentum = momentum;
    this.nesterov = nesterov;
    this.weightDecay = weightDecay;
    this.dampening = dampening;
  }

  /** @internal */
  protected hyper(): NativeHyper {
    return { algo: 0, momentum: this.momentum, dampening: this.dampening, nesterov: this.nesterov };
  }
}

/** Options of {@link AdamW}. */
export interface AdamWOptions {
  lr?: number;
  betas?: readonly [number, number];
  eps?: number;
  weightDecay?: number;
}

/**
 * AdamW (decoupled weight decay), torch.optim.AdamW semantics without amsgrad. arcface_torch's
 * alternative: lr 1e-3, weightDecay 0.1.
 *
 * @throws TypeError / RangeError for bad options
 * @example const opt = new AdamW([{ params }], { lr: 1e-3, weightDecay: 0.1 });
 */
export class AdamW extends Optimizer {
  readonly lr: number;
  readonly betas: readonly [number, number];
  readonly eps: number;
  readonly weightDecay: number;

  constructor(groups: readonly ParamGroup[], options: AdamWOptions) {
    // Apply defaults
    const o = optionsObject(options, 'options');
    assertKnownOptions(o, 'AdamW', ['lr', 'betas', 'eps', 'weightDecay'], { weight_decay: 'weightDecay' });
    const betas = o.betas ?? [0.9, 0.999];
    const eps = o.eps ?? 1e-8;
    const weightDecay = o.weightDecay ?? 0.01;
    // Validate arguments
    assertNumber(o.lr, 'lr', 0);
    if (!Array.isArray(betas) || betas.length !== 2) throw invalidParameterError('betas', 'an array of two numbers', betas);
    betas.forEach((b: unknown, i: number) => {
      assertNumber(b, `betas[${i}]`, 0, 1);
      if (b === 1) throw outOfRangeError(`betas[${i}]`, 'a number in [0, 1)', b);
    });
    assertNumber(eps, 'eps', 0);
    assertNumber(weightDecay, 'weightDecay', 0);
    // Interpret options
    super(groups, weightDecay, 'AdamW', 2);
    this.lr = o.lr;
    this.betas = Object.freeze([betas[0], betas[1]]) as readonly [number, number];
    this.eps = eps;
    this.weightDecay = weightDecay;
  }

  /** @internal */
  protected hyper(): NativeHyper {
    return { algo: 1, beta1: this.betas[0], beta2: this.betas[1], eps: this.eps };
  }
}

/** Options of {@link paramGroups}. */
export interface ParamGroupsOptions {
  /**
   * Which parameters get no weight decay. Default: every parameter with fewer than 2 dimensions —
   * BatchNorm weights and biases, PReLU slopes and all biases (names alone cannot tell
   * MobileFaceNet's BatchNorm and PReLU tensors from its convolutions).
   */
  noDecay?: (name: string, param: OptimParam) => boolean;
  /** Weight decay of the decayed group (default: the optimizer's). */
  weightDecay?: number;
}

/**
 * Splits parameters into [decayed, not decayed (weightDecay 0)] groups. Buffers, frozen parameters
 * and parameters without a gradient are left out.
 *
 * @example const opt = new SGD(paramGroups(await model.parameters()), { lr: 0.1, momentum: 0.9, weightDecay: 5e-4 });
 */
export function paramGroups(params: readonly OptimParam[], options?: ParamGroupsOptions): [ParamGroup, ParamGroup] {
  // Apply defaults
  const o = optionsObject(options, 'options');
  assertKnownOptions(o, 'paramGroups', ['noDecay', 'weightDecay']);
  const noDecay = (o.noDecay ?? ((_: string, p: OptimParam) => p.value.shape.length < 2)) as (name: string, p: OptimParam) => boolean;
  // Validate arguments
  if (!Array.isArray(params)) throw invalidParameterError('params', 'an array of parameters', params);
  if (typeof noDecay !== 'function') throw invalidParameterError('noDecay', 'a function (name, param) => boolean', noDecay);
  if (o.weightDecay !== undefined) assertNumber(o.weightDecay, 'weightDecay', 0);
  // Interpret options
  const decay: OptimParam[] = [];
  const plain: OptimParam[] = [];
  for (const p of params) {
    if (p.kind === 'buffer' || p.trainable === false || !p.grad) continue;
    (noDecay(p.name, p) ? plain : decay).push(p);
  }
  const g0: ParamGroup = { params: decay };
  if (o.weightDecay !== undefined) g0.weightDecay = o.weightDecay as number;
  return [g0, { params: plain, weightDecay: 0 }];
}

/**
 * A head's parameters as optimizer parameters: `<prefix>.weight` (and `<prefix>.bias`).
 * @example groups.push({ params: headParams(await head.parameters()) });
 */
export function headParams(p: HeadParameters, prefix = 'head'): OptimParam[] {
  if (!is.object(p)) throw invalidParameterError('p', 'the result of head.parameters()', p);
  const out: OptimParam[] = [{ name: `${prefix}.weight`, value: p.weight, grad: p.gradWeight }];
  if (p.bias && p.gradBias) out.push({ name: `${prefix}.bias`, value: p.bias, grad: p.gradBias });
  return out;
}

/**
 * The weight rows of sampled classes with K sub-centers per class (class-major rows c·K + k), for
 * a sparse update of a Partial FC head: `sparse: { 'head.weight': sampledRows(await head.sampledClasses(), K) }`.
 */
export function sampledRows(classes: Int32Array | readonly number[], subCenters = 1): Int32Array {
  if (!(classes instanceof Int32Array) && !Array.isArray(classes)) throw invalidParameterError('classes', 'an Int32Array or an array of class indices', classes);
  if (!is.integer(subCenters) || subCenters < 1) throw invalidParameterError('subCenters', 'an integer >= 1', subCenters);
  const out = new Int32Array(classes.length * subCenters);
  for (let i = 0; i < classes.length; i++) for (let k = 0; k < subCenters; k++) out[i * subCenters + k] = classes[i] * subCenters + k;
  return out;
}

/**
 * torch.nn.utils.clip_grad_norm_: the global L2 norm of the gradients (double, fixed order) and, when
 * it exceeds `maxNorm`, every gradient scaled in place by maxNorm/(norm + 1e-6) — one native job.
 * A non-finite norm scales nothing (`skipped`).
 *
 * @example const { norm } = await clipGradNorm(await model.parameters(), 5);
 */
export async function clipGradNorm(
  params: readonly OptimParam[],
  maxNorm: number,
): Promise<{ norm: number; scale: number; skipped: boolean }> {
  const site = new Error();
  // Validate arguments
  if (!Array.isArray(params)) throw invalidParameterError('params', 'an array of parameters', params);
  assertNumber(maxNorm, 'maxNorm');
  if (!(maxNorm > 0)) throw outOfRangeError('maxNorm', 'a number > 0', maxNorm);
  const grads = params.filter((p) => p && p.kind !== 'buffer' && p.trainable !== false && p.grad).map((p, i) => tensorArg(p.grad, `params[${i}].grad`));
  if (grads.length === 0) return { norm: 0, scale: 1, skipped: false };
  const device = grads[0].device;
  for (const g of grads) if (g.device !== device) throw new FacecudaError('INVALID_ARGUMENT', `gradients on ${device} and ${g.device}`);
  // Interpret options
  const meta = new Float64Array(grads.length * 8);
  grads.forEach((_, i) => meta.set([-1, i, -1, -1, 0, 0, 1, 0], i * 8));
  const r = await withCallSite(optimAddon().optimStep({ algo: 2, clipNorms: Float64Array.of(maxNorm), items: meta, sparse: [] }, ...grads), site);
  return { norm: r.gradNorm, scale: r.groupScales[0], skipped: r.skipped };
}

/**
 * g ← g·factor for every gradient of `params`, in place, as one native job, after a finite check: a
 * NaN or ±Inf gradient writes nothing and is reported as `skipped` (naming the parameter). The
 * returned norm is that of the multiplied gradients. Mixed precision: GradScaler unscales with
 * factor = 1 / loss scale.
 *
 * @example const { skipped, gradNorm } = await scaleGradients(await model.parameters(), 1 / 1024);
 */
export async function scaleGradients(
  params: readonly OptimParam[],
  factor: number,
): Promise<{ skipped: boolean; reason?: string; gradNorm: number }> {
  const site = new Error();
  // Validate arguments
  if (!Array.isArray(params)) throw invalidParameterError('params', 'an array of parameters', params);
  assertNumber(factor, 'factor');
  if (!(factor > 0)) throw outOfRangeError('factor', 'a number > 0', factor);
  const live = params.filter((p) => p && p.kind !== 'buffer' && p.trainable !== false && p.grad);
  const grads = live.map((p, i) => tensorArg(p.grad, `params[${i}].grad`));
  if (grads.length === 0) return { skipped: false, gradNorm: 0 };
  const device = grads[0].device;
  for (const g of grads) if (g.device !== device) throw new FacecudaError('INVALID_ARGUMENT', `gradients on ${device} and ${g.device}`);
  // Interpret options
  const meta = new Float64Array(grads.length * 8);
  grads.forEach((_, i) => meta.set([-1, i, -1, -1, 0, 0, 1, -1], i * 8));
  const r = await withCallSite(
    optimAddon().optimStep({ algo: 2, gradScale: factor, clipNorms: new Float64Array(0), items: meta, sparse: [] }, ...grads),
    site,
  );
  return r.skipped
    ? { skipped: true, reason: `non-finite gradient (NaN or Inf) in '${live[r.nonFiniteItem]?.name}'`, gradNorm: r.gradNorm }
    : { skipped: false, gradNorm: r.gradNorm };
}
