/**
 * Per-iteration learning-rate schedules. Every schedule is a pure function of the 0-based global
 * iteration `step` (the number of optimizer steps taken before this one): `lrAt(step)`. Nothing is
 * stateful, so resuming from a checkpoint only needs the step count.
 *
 * | schedule | lr(step) |
 * |---|---|
 * | {@link MultiStepLR} | base·gamma^k, k = number of milestones ≤ step (PyTorch MultiStepLR, milestones in steps) |
 * | {@link CosineLR} | linear warmup base·(step+1)/warmup for step < warmup, then minLr + (base − minLr)·(1 + cos(π·(step − warmup)/(total − warmup)))/2, minLr from total on |
 * | {@link PolyWarmupLR} | arcface_torch PolynomialLRWarmup (SPEC §9.1), including its step-0 quirk |
 *
 * @example
 * const e = fromEpochs(5058);                        // MS1MV3, 8 GPUs × 128
 * const sched = e.polyWarmup({ base: 0.1, totalEpochs: 20, warmupEpochs: 0 });
 * const { skipped } = await opt.step({ lr: sched.lrAt(step) });
 */
import { invalidParameterError, outOfRangeError } from './errors';
import { assertInteger, assertKnownOptions, assertNumber, optionsObject } from './validate';

/** A learning-rate schedule: the lr of iteration `step` (0-based). */
export interface LrSchedule {
  lrAt(step: number): number;
}

function assertStep(step: unknown): asserts step is number {
  assertInteger(step, 'step', 0);
}

/**
 * Step decay: `lr(step) = base · gamma^k` where k is the number of milestones ≤ step (PyTorch
 * MultiStepLR semantics with milestones counted in iterations: the decay applies from the milestone
 * iteration itself on). Milestones are sorted; repeated milestones apply gamma once per repeat, as
 * PyTorch's Counter does.
 *
 * @throws TypeError / RangeError for bad options
 * @example new MultiStepLR({ base: 0.1, milestones: [1000, 2000] }).lrAt(1000) // 0.01
 */
export class MultiStepLR implements LrSchedule {
  readonly base: number;
  readonly milestones: readonly number[];
  readonly gamma: number;

  constructor(options: { base: number; milestones: readonly number[]; gamma?: number }) {
    // Apply defaults
    const o = optionsObject(options, 'options');
    assertKnownOptions(o, 'MultiStepLR', ['base', 'milestones', 'gamma']);
    const gamma = o.gamma ?? 0.1;

    // Validate arguments
    assertNumber(o.base, 'base', 0);
    assertNumber(gamma, 'gamma', 0);
    if (!Array.isArray(o.milestones)) throw invalidParameterError('milestones', 'an array of step numbers', o.milestones);
    o.milestones.forEach((m: unknown, i: number) => assertInteger(m, `milestones[${i}]`, 0));

    // Interpret options
    this.base = o.base;
    this.gamma = gamma;
    this.milestones = Object.freeze((o.milestones as number[]).slice().sort((a, b) => a - b));
  }

  lrAt(step: number): number {
    assertStep(step);
    let k = 0;
    for (const m of this.milestones) if (m <= step) k++;
    return this.base * Math.pow(this.gamma, k);
  }
}

/**
 * Cosine decay with an optional linear warmup:
 * - `step < warmupSteps`: `base · (step + 1) / warmupSteps` (never 0; base at step warmupSteps − 1),
 * - `warmupSteps ≤ step < totalSteps`: `minLr + (base − minLr) · (1 + cos(π · (step − warmupSteps) / (totalSteps − warmupSteps))) / 2`,
 * - `step ≥ totalSteps`: `minLr`.
 *
 * @throws TypeError / RangeError for bad options (warmupSteps must be < totalSteps)
 * @example new CosineLR({ base: 1e-3, totalSteps: 10000, warmupSteps: 500, minLr: 1e-6 })
 */
export class CosineLR implements LrSchedule {
  readonly base: number;
  readonly totalSteps: number;
  readonly minLr: number;
  readonly warmupSteps: number;

  constructor(options: { base: number; totalSteps: number; minLr?: number; warmupSteps?: number }) {
    // Apply defaults
    const o = optionsObject(options, 'options');
    assertKnownOptions(o, 'CosineLR', ['base', 'totalSteps', 'minLr', 'warmupSteps']);
    const minLr = o.minLr ?? 0;
    const warmupSteps = o.warmupSteps ?? 0;

    // Validate arguments
    assertNumber(o.base, 'base', 0);
    assertInteger(o.totalSteps, 'totalSteps', 1);
    assertNumber(minLr, 'minLr', 0, o.base);
    assertInteger(warmupSteps, 'warmupSteps', 0, o.totalSteps - 1);

    // Interpret options
    this.base = o.base;
    this.totalSteps = o.totalSteps;
    this.minLr = minLr;
    this.warmupSteps = warmupSteps;
  }

  lrAt(step: number): number {
    assertStep(step);
    const w = this.warmupSteps;
    if (step < w) return (this.base * (step + 1)) / w;
    if (step >= this.totalSteps) return this.minLr;
    const progress = (step - w) / (this.totalSteps - w);
    return this.minLr + ((this.base - this.minLr) * (1 + Math.cos(Math.PI * progress))) / 2;
  }
}

/**
 * arcface_torch's PolynomialLRWarmup (SPEC §9.1), stepped once per iteration, with l = step, w =
 * warmupSteps, t = totalSteps, p = power:
 * - `l = 0`: **base** (the quirk: PyTorch's scheduler returns the optimizer's initial lr at
 *   last_epoch 0, so the very first iteration runs at the full base lr even during warmup),
 * - `1 ≤ l ≤ w`: `base · l / w` (linear warmup),
 * - `w < l ≤ t`: `base · ((t − l) / (t − max(w, 0)))^p` (the telescoped product of the reference's
 *   chained factors `((1 − (l − w)/(t − w)) / (1 − (l − 1 − w)/(t − w)))^p` starting from the lr at
 *   max(w, 0); for w ≥ 0 this is `base · (1 − (l − w)/(t − w))^p`),
 * - `l > t`: 0 (the reference keeps the last lr, which is 0 at l = t).
 *
 * Negative warmup (the 3millions config's warmup_epoch = −1): the warmup branch never runs and the
 * chained factors telescope from lr(0) = base, so the schedule equals warmupSteps = 0:
 * `base · ((t − l)/t)^p`. (The reference computes the chain in floating point, one multiply per
 * iteration; the closed form here differs from it only by that rounding, ~1e-16 relative per step.)
 *
 * @throws TypeError / RangeError for bad options (warmupSteps must be < totalSteps)
 * @example new PolyWarmupLR({ base: 0.1, totalSteps: 101160, warmupSteps: 0 }).lrAt(50580) // 0.05
 */
export class PolyWarmupLR implements LrSchedule {
  readonly base: number;
  readonly totalSteps: number;
  readonly warmupSteps: number;
  readonly power: number;

  constructor(options: { base: number; totalSteps: number; warmupSteps: number; power?: number }) {
    // Apply defaults
    const o = optionsObject(options, 'options');
    assertKnownOptions(o, 'PolyWarmupLR', ['base', 'totalSteps', 'warmupSteps', 'power']);
    const power = o.power ?? 1;

    // Validate arguments
    assertNumber(o.base, 'base', 0);
    assertInteger(o.totalSteps, 'totalSteps', 1);
    if (o.warmupSteps === undefined) throw invalidParameterError('warmupSteps', 'an integer', undefined);
    assertInteger(o.warmupSteps, 'warmupSteps', Number.MIN_SAFE_INTEGER, o.totalSteps - 1);
    assertNumber(power, 'power', 0);

    // Interpret options
    this.base = o.base;
    this.totalSteps = o.totalSteps;
    this.warmupSteps = o.warmupSteps;
    this.power = power;
  }

  lrAt(step: number): number {
    assertStep(step);
    const { base, totalSteps: t, warmupSteps: w, power } = this;
    if (step === 0) return base;
    if (step <= w) return (base * step) / w;
    if (step > t) return 0;
    return base * Math.pow((t - step) / (t - Math.max(w, 0)), power);
  }
}

/** facecuda's seed recipe: step decay ×0.1 at epochs 20, 28 and 32. */
export const SEED_MILESTONE_EPOCHS: readonly number[] = Object.freeze([20, 28, 32]);

/**
 * The older arcface_torch recipe (v1 train.py, 2021 configs; SPEC §9.2): step decay ×0.1 at these
 * epochs, no warmup.
 */
export const ARCFACE_TORCH_V1_MILESTONES: Readonly<Record<'ms1mv3' | 'glint360k' | 'ms1mv2', { milestones: readonly number[]; epochs: number }>> =
  Object.freeze({
    ms1mv3: Object.freeze({ milestones: Object.freeze([10, 16, 22]), epochs: 25 }),
    glint360k: Object.freeze({ milestones: Object.freeze([8, 12, 15, 18]), epochs: 20 }),
    ms1mv2: Object.freeze({ milestones: Object.freeze([8, 14]), epochs: 16 }),
  });

/** Schedules with their lengths in epochs (converted to iterations with `stepsPerEpoch`). */
export interface EpochSchedules {
  readonly stepsPerEpoch: number;
  /** MultiStepLR with milestones in epochs (default: the seed recipe, {@link SEED_MILESTONE_EPOCHS}). */
  multiStep(options: { base: number; milestones?: readonly number[]; gamma?: number }): MultiStepLR;
  /** CosineLR over `totalEpochs`, warmup `warmupEpochs` (may be fractional: rounded down to steps). */
  cosine(options: { base: number; totalEpochs: number; minLr?: number; warmupEpochs?: number }): CosineLR;
  /**
   * PolyWarmupLR as train_v2.py builds it: totalSteps = stepsPerEpoch·totalEpochs,
   * warmupSteps = stepsPerEpoch·warmupEpochs (warmupEpochs may be negative, as in the 3millions config).
   */
  polyWarmup(options: { base: number; totalEpochs: number; warmupEpochs?: number; power?: number }): PolyWarmupLR;
}

/**
 * Helpers that take epochs: `stepsPerEpoch` is num_images // (batch · world_size) as in train_v2.py.
 *
 * @example fromEpochs(5058).multiStep({ base: 0.1 }).lrAt(20 * 5058) // 0.01 (seed recipe)
 */
export function fromEpochs(stepsPerEpoch: number): EpochSchedules {
  assertInteger(stepsPerEpoch, 'stepsPerEpoch', 1);
  const toSteps = (epochs: number): number => Math.floor(epochs * stepsPerEpoch);
  const epochsArg = (v: unknown, name: string, min: number): number => {
    assertNumber(v, name, min);
    if (!Number.isSafeInteger(toSteps(v))) throw outOfRangeError(name, 'an epoch count whose step count is a safe integer', v);
    return v;
  };
  return Object.freeze({
    stepsPerEpoch,
    multiStep(options: { base: number; milestones?: readonly number[]; gamma?: number }): MultiStepLR {
      const o = optionsObject(options, 'options');
      assertKnownOptions(o, 'multiStep', ['base', 'milestones', 'gamma']);
      const ms = o.milestones ?? SEED_MILESTONE_EPOCHS;
      if (!Array.isArray(ms)) throw invalidParameterError('milestones', 'an array of epochs', ms);
      const steps = ms.map((m: unknown, i: number) => toSteps(epochsArg(m, `milestones[${i}]`, 0)));
      return new MultiStepLR({ base: o.base as number, milestones: steps, gamma: o.gamma as number | undefined });
    },
    cosine(options: { base: number; totalEpochs: number; minLr?: number; warmupEpochs?: number }): CosineLR {
      const o = optionsObject(options, 'options');
      assertKnownOptions(o, 'cosine', ['base', 'totalEpochs', 'minLr', 'warmupEpochs']);
      const total = toSteps(epochsArg(o.totalEpochs, 'totalEpochs', 0));
      const warm = toSteps(epochsArg(o.warmupEpochs ?? 0, 'warmupEpochs', 0));
      return new CosineLR({ base: o.base as number, totalSteps: total, minLr: o.minLr as number | undefined, warmupSteps: warm });
    },
    polyWarmup(options: { base: number; totalEpochs: number; warmupEpochs?: number; power?: number }): PolyWarmupLR {
      const o = optionsObject(options, 'options');
      assertKnownOptions(o, 'polyWarmup', ['base', 'totalEpochs', 'warmupEpochs', 'power']);
      const total = toSteps(epochsArg(o.totalEpochs, 'totalEpochs', 0));
      const warm = toSteps(epochsArg(o.warmupEpochs ?? 0, 'warmupEpochs', -Number.MAX_SAFE_INTEGER));
      return new PolyWarmupLR({ base: o.base as number, totalSteps: total, warmupSteps: warm, power: o.power as number | undefined });
    },
  });
}
