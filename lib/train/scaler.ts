/**
 * Dynamic loss scaling for fp16 training (torch.cuda.amp.GradScaler's rule).
 *
 * fp16 holds magnitudes from 6e-8 (subnormal) to 65504. A margin head's gradients are tiny (softmax
 * probabilities over many classes, divided by the batch), so they flush to zero in fp16 GEMM inputs;
 * multiplying the loss by a large scale S before the backward lifts them into range. Every step:
 *
 *   1. backward of S·loss (MarginHead.backward({ lossScale: S })), so every gradient is S× too;
 *   2. unscale: g ← g / S in place (one native pass), which also checks that every gradient is finite;
 *   3. a non-finite gradient means S was too large: the step is skipped (nothing written), logged,
 *      and S ← S·backoffFactor; otherwise the optimizer steps, and after `growthInterval` finite steps
 *      in a row S ← S·growthFactor.
 *
 * Defaults are PyTorch's: initScale 2^16, growthFactor 2, backoffFactor 0.5, growthInterval 2000.
 * The scale is a power of two times the initial scale, so multiplying and dividing by it is exact
 * in float32 (no rounding is added by scaling itself).
 *
 * @example
 * const scaler = new GradScaler();
 * const { gradEmbeddings } = await head.backward({ lossScale: scaler.scale });
 * await model.backward(gradEmbeddings);
 * const { skipped } = await optimizer.scaleGradients(1 / scaler.scale);
 * if (!skipped) await optimizer.step({ lr });
 * scaler.update(skipped);
 */
import { invalidParameterError, outOfRangeError } from '../errors';
import { assertKnownOptions, assertNumber, is, optionsObject } from '../validate';

/** Options of {@link GradScaler}. */
export interface GradScalerOptions {
  /** The first loss scale (default 65536 = 2^16). */
  initScale?: number;
  /** Multiplies the scale after `growthInterval` finite steps in a row (default 2). */
  growthFactor?: number;
  /** Multiplies the scale after a step with a non-finite gradient (default 0.5). */
  backoffFactor?: number;
  /** Finite steps in a row before the scale grows (default 2000). */
  growthInterval?: number;
  /**
   * Below this scale an overflow is no longer blamed on the scale: the trainer counts such skips
   * towards its divergence stop (default 2^-14; PyTorch has no floor).
   */
  minScale?: number;
}

/** A checkpoint of {@link GradScaler}. */
export interface GradScalerState {
  scale: number;
  growthTracker: number;
}

/** What {@link GradScaler.update} did. */
export interface ScaleUpdate {
  /** The scale the step used. */
  previous: number;
  /** The scale of the next step. */
  scale: number;
  change: 'grew' | 'backed off' | 'kept';
}

/**
 * Dynamic loss scale for fp16 training (see the module comment); the Trainer makes one for fp16
 * models.
 *
 * @example
 * const trainer = new Trainer({ model, head, optimizer, schedule, data, lossScaler: new GradScaler({ initScale: 2 ** 12 }) });
 */
export class GradScaler {
  readonly growthFactor: number;
  readonly backoffFactor: number;
  readonly growthInterval: number;
  readonly minScale: number;
  #scale: number;
  #tracker = 0;

  constructor(options?: GradScalerOptions) {
    // Apply defaults
    const o = optionsObject(options, 'options');
    assertKnownOptions(o, 'GradScaler', ['initScale', 'growthFactor', 'backoffFactor', 'growthInterval', 'minScale']);
    const initScale = o.initScale ?? 65536;
    const growthFactor = o.growthFactor ?? 2;
    const backoffFactor = o.backoffFactor ?? 0.5;
    const growthInterval = o.growthInterval ?? 2000;
    const minScale = o.minScale ?? 2 ** -14;
    // Validate arguments
    assertNumber(initScale, 'initScale', Number.MIN_VALUE, 3.4e38);
    assertNumber(growthFactor, 'growthFactor');
    if (!(growthFactor > 1)) throw outOfRangeError('growthFactor', 'a number > 1', growthFactor);
    assertNumber(backoffFactor, 'backoffFactor');
    if (!(backoffFactor > 0 && backoffFactor < 1)) throw outOfRangeError('backoffFactor', 'a number in (0, 1)', backoffFactor);
    if (!is.integer(growthInterval) || growthInterval < 1) throw invalidParameterError('growthInterval', 'an integer >= 1', growthInterval);
    assertNumber(minScale, 'minScale', 0, 3.4e38);
    this.#scale = initScale;
    this.growthFactor = growthFactor;
    this.backoffFactor = backoffFactor;
    this.growthInterval = growthInterval;
    this.minScale = minScale;
  }

  /** The loss scale of the next step. */
  get scale(): number {
    return this.#scale;
  }

  /** Finite steps in a row since the last change of the scale. */
  get growthTracker(): number {
    return this.#tracker;
  }

  /** True when the scale has backed off below {@link GradScalerOptions.minScale}. */
  get belowMinimum(): boolean {
    return this.#scale < this.minScale;
  }

  /** Moves the scale after a step: `foundInf` is whether the unscale found a non-finite gradient. */
  update(foundInf: boolean): ScaleUpdate {
    if (typeof foundInf !== 'boolean') throw invalidParameterError('foundInf', 'a boolean', foundInf);
    const previous = this.#scale;
    if (foundInf) {
      this.#scale = Math.max(previous * this.backoffFactor, Number.MIN_VALUE);
      this.#tracker = 0;
      return { previous, scale: this.#scale, change: 'backed off' };
    }
    this.#tracker++;
    if (this.#tracker >= this.growthInterval) {
      const grown = previous * this.growthFactor;
      this.#tracker = 0;
      // Never grow into a scale float32 cannot hold (the native backward multiplies by it).
      if (Number.isFinite(grown) && grown <= 3.4e38) {
        this.#scale = grown;
        return { previous, scale: grown, change: 'grew' };
      }
    }
    return { previous, scale: previous, change: 'kept' };
  }

  /** For checkpoints. */
  state(): GradScalerState {
    return { scale: this.#scale, growthTracker: this.#tracker };
  }

  /** Restores {@link state}. */
  loadState(state: GradScalerState): void {
    if (!is.object(state)) throw invalidParameterError('state', 'a GradScaler state object', state);
    assertNumber(state.scale, 'state.scale', Number.MIN_VALUE, 3.4e38);
    if (!is.integer(state.growthTracker) || state.growthTracker < 0) {
      throw invalidParameterError('state.growthTracker', 'an integer >= 0', state.growthTracker);
    }
    this.#scale = state.scale;
    this.#tracker = state.growthTracker;
  }
}
