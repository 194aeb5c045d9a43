/**
 * The training loop (SPEC §9): a backbone, a margin head, an optimizer over both, a per-iteration
 * learning-rate schedule and a data loader; verification on held-out pairs (§10.2); checkpoints
 * that resume exactly.
 *
 * One step: x → backbone → embeddings → head (loss) → head.backward (dL/dx and dL/dW) →
 * backbone.backward → optimizer (gradient clipping per group, e.g. 5 on the backbone as
 * arcface_torch) at the schedule's learning rate for this iteration.
 *
 * A non-finite loss or gradient never reaches the weights: the step is skipped (nothing is updated,
 * the iteration still advances so the data and the schedule move on) and logged; after
 * `maxConsecutiveSkips` skips in a row the run stops with a diagnosis and a checkpoint of the last
 * good state (the weights are untouched by the skipped steps).
 *
 * fp16 (a backbone or head with precision 'fp16'): dynamic loss scaling (./scaler.ts). The head's
 * backward scales every gradient by the current loss scale, one native pass unscales them and checks
 * they are finite, and an overflow skips the step (logged with the scale) and halves the scale.
 * Such skips do not count towards `maxConsecutiveSkips` until the scale falls below its minimum.
 *
 * Events (EventEmitter): 'step' (StepResult), 'epoch' ({ epoch, seconds, meanLoss }),
 * 'verify' ({ iteration, results }), 'checkpoint' ({ path, iteration }), 'skip' (StepResult).
 *
 * @example
 * const trainer = new Trainer({ model, head, optimizer, schedule, data: loader, validation: [lfwLike] });
 * trainer.on('step', (s) => console.log(s.iteration, s.loss));
 * await trainer.fit({ epochs: 2 });
 */
import { EventEmitter } from 'events';
import { promises as fsp } from 'fs';
import * as path from 'path';

import type { Backbone } from '../backbones/model';
import type { Batch, RawImage } from '../data/types';
import { FacecudaError } from '../errors';
import type { MarginHead } from '../heads';
import { Tensor } from '../tensor';
import { readCheckpoint, writeCheckpoint } from './checkpoint';
import { GradScaler, type GradScalerState } from './scaler';
import { sampledRows } from '../optim';
import { embedImages, splitPairs } from './embed';

/** What the trainer needs of an optimizer (lib/optim.ts's SGD and AdamW). */
export interface OptimizerLike {
  step(options: { lr: number; sparse?: Record<string, Int32Array> }): Promise<{ skipped: boolean; reason?: string; gradNorm?: number }>;
  state(): unknown;
  loadState(state: unknown): unknown;
  /** g ← g·factor over every gradient it reads, with a finite check (needed for loss scaling). */
  scaleGradients?(factor: number): Promise<{ skipped: boolean; reason?: string; gradNorm: number }>;
}

/** What the trainer needs of a schedule (lib/schedule.ts). */
export interface ScheduleLike {
  lrAt(iteration: number): number;
}

/** What the trainer needs of a data loader (lib/data/loader.ts's DataLoader). */
export interface LoaderLike {
  readonly batchesPerEpoch: number;
  /** The batches of epoch `e` (from where startAt said, when it named this epoch). */
  epoch(e: number): AsyncIterable<Batch>;
  /** Makes the next epoch(e) start at batch `batch` (resume). */
  startAt(epoch: number, batch: number): void;
}

/** A verification set: pairs of images, 2P images, images[2k] and images[2k+1] are pair k. */
export interface VerificationSet {
  name: string;
  images: readonly RawImage[];
  issame: readonly boolean[];
}

/** One verification result (SPEC §10.2). */
export interface VerificationResult {
  accuracy: number;
  std: number;
  tarAtFar1e3: number;
  xnorm: number;
}

/** A verification function (lib/data/baseline.ts's verificationAccuracy / tarAtFar). */
export interface Verifier {
  accuracy(e1: Float32Array, e2: Float32Array, dim: number, issame: readonly boolean[]): { accuracy: number; std: number };
  tarAtFar(e1: Float32Array, e2: Float32Array, dim: number, issame: readonly boolean[], far: number): number;
}

/** Options of {@link Trainer}. */
export interface TrainerOptions {
  model: Backbone;
  head: MarginHead;
  optimizer: OptimizerLike;
  schedule: ScheduleLike;
  data: LoaderLike;
  validation?: VerificationSet[];
  verifier?: Verifier;
  /** Verify every N iterations (default: at the end of every epoch only). */
  verifyEvery?: number;
  /** Stop after this many consecutive skipped steps (default 5). */
  maxConsecutiveSkips?: number;
  /** Append a JSON line every N steps to this file (default: no log file). */
  logFile?: string;
  logEvery?: number;
  /** Write a checkpoint to `checkpoint.path` every `checkpoint.every` iterations and at the end. */
  checkpoint?: { path: string; every?: number };
  /** A terminal progress line on stderr (default: when stderr is a TTY). */
  progress?: boolean;
  /** Save a checkpoint and stop cleanly on SIGINT during fit (default false; the CLI sets it). */
  handleSignals?: boolean;
  /** Free-form data stored in checkpoints (e.g. the CLI config). */
  extra?: unknown;
  /**
   * Runs between the backward and the optimizer step, e.g. arcface_torch's
   * `clip_grad_norm_(backbone.parameters(), 5)`: `() => clipGradNorm(backboneParams, 5)` (one norm
   * over the whole backbone). A `skipped` result (non-finite norm) skips the step.
   */
  clipGradients?: () => Promise<{ skipped: boolean; norm: number }>;
  /**
   * Dynamic loss scaling: a {@link GradScaler}, or false for none. Default: a new GradScaler() when
   * the backbone or the head computes in 'fp16', none otherwise (bf16 needs none: it has fp32's
   * range).
   */
  lossScaler?: GradScaler | false;
  /**
   * Partial FC: the optimizer parameter name of the head's weight; when the head samples classes
   * (sampleRate < 1) only the sampled rows are updated (default 'head.weight').
   */
  headWeightName?: string;
}

/** What one step did. */
export interface StepResult {
  iteration: number;
  epoch: number;
  loss: number;
  lr: number;
  skipped: boolean;
  reason?: string;
  gradNorm?: number;
  /** fp16: the loss scale this step used, and the next one's after an overflow. */
  lossScale?: number;
  nextLossScale?: number;
  samples: number;
  seconds: number;
}

/** What {@link Trainer.fit} resolves to. */
export interface FitResult {
  iterations: number;
  epochs: number;
  seconds: number;
  lastLoss: number;
  stopped: 'done' | 'interrupted' | 'diverged';
  diagnosis?: string;
  verification: Record<string, VerificationResult>;
  best: Record<string, number>;
}

function finite(x: Float32Array): boolean {
  for (let i = 0; i < x.length; i++) if (!Number.isFinite(x[i])) return false;
  return true;
}

/**
 * The training loop over a backbone, a margin head, an optimizer, a schedule and a data loader (see
 * the module comment for one step, skips, checkpoints and fp16 loss scaling).
 *
 * @example
 * const trainer = new Trainer({ model, head, optimizer, schedule, data: loader, checkpoint: { path: 'run/ck.safetensors', every: 1000 } });
 * trainer.on('step', (s) => s.iteration % 100 === 0 && console.log(s.iteration, s.loss));
 * const { verification } = await trainer.fit({ epochs: 20 });
 */
export class Trainer extends EventEmitter {
  readonly model: Backbone;
  readonly head: MarginHead;
  readonly optimizer: OptimizerLike;
  readonly schedule: ScheduleLike;
  readonly data: LoaderLike;
  /** Iterations done (the next step uses the schedule's lr at this value). */
  iteration = 0;
  /** The epoch in progress and the next batch in it. */
  epoch = 0;
  batchInEpoch = 0;
  consecutiveSkips = 0;
  /** Best verification accuracy per set. */
  best: Record<string, number> = {};
  /** Dynamic loss scaling (fp16), or null. */
  readonly scaler: GradScaler | null;
  readonly #opts: TrainerOptions;
  #lastLosses: number[] = [];
  #interrupt = false;

  constructor(options: TrainerOptions) {
    super();
    for (const k of ['model', 'head', 'optimizer', 'schedule', 'data'] as const) {
      if (!options || options[k] === undefined || options[k] === null) {
        throw new TypeError(`Expected options.${k} for Trainer`);
      }
    }
    this.model = options.model;
    this.head = options.head;
    this.optimizer = options.optimizer;
    this.schedule = options.schedule;
    this.data = options.data;
    this.#opts = options;
    const fp16 = options.model.precision === 'fp16' || options.head.hyperparams().precision === 'fp16';
    this.scaler = options.lossScaler === false ? null : (options.lossScaler ?? (fp16 ? new GradScaler() : null));
    if (this.scaler && typeof options.optimizer.scaleGradients !== 'function') {
      throw new TypeError('Expected an optimizer with scaleGradients(factor) for loss scaling (lib/optim.ts SGD/AdamW have it)');
    }
    if ((options.validation?.length ?? 0) > 0 && !options.verifier) {
      throw new TypeError('Expected options.verifier with options.validation (e.g. lib/data/baseline verificationAccuracy/tarAtFar)');
    }
  }

  /**
   * One training step on `batch`. Returns what happened; the weights change only when the loss and
   * every gradient are finite.
   */
  async step(batch: Batch): Promise<StepResult> {
    const t0 = process.hrtime.bigint();
    const lr = this.schedule.lrAt(this.iteration);
    const model = this.model;
    const size = model.inputShape;
    const result: StepResult = { iteration: this.iteration, epoch: this.epoch, loss: NaN, lr, skipped: false, samples: batch.size, seconds: 0 };
    model.train();
    this.head.train();
    const x = Tensor.from(batch.images, [batch.size, ...size], { device: model.device });
    let emb: Tensor | null = null;
    try {
      emb = await model.forward(x);
      const { loss } = await this.head.forward(emb, batch.labels);
      result.loss = loss;
      if (!Number.isFinite(loss)) {
        result.skipped = true;
        result.reason = `loss is ${loss}`;
      } else {
        const scaler = this.scaler;
        const lossScale = scaler ? scaler.scale : 1;
        const { gradEmbeddings } = await this.head.backward(scaler ? { lossScale } : undefined);
        await model.zeroGrad();
        await model.backward(gradEmbeddings);
        let overflow: { skipped: boolean; reason?: string } | null = null;
        if (scaler) {
          // Unscale in place (exact: the scale is a power of two times initScale) and check finiteness.
          overflow = await (this.optimizer.scaleGradients as NonNullable<OptimizerLike['scaleGradients']>)(1 / lossScale);
          const u = scaler.update(overflow.skipped);
          result.lossScale = lossScale;
          if (overflow.skipped) result.nextLossScale = u.scale;
        }
        const clip = !overflow?.skipped && this.#opts.clipGradients ? await this.#opts.clipGradients() : null;
        if (overflow?.skipped) {
          result.skipped = true;
          result.reason = `fp16 overflow at loss scale ${lossScale}: ${overflow.reason ?? 'non-finite gradient'}; loss scale -> ${result.nextLossScale}`;
        } else if (clip?.skipped) {
          result.skipped = true;
          result.reason = `the backbone's gradient norm is ${clip.norm}`;
          result.gradNorm = clip.norm;
        } else {
          const hyper = this.head.hyperparams() as { sampleRate?: number; subCenters?: number };
          let sparse: Record<string, Int32Array> | undefined;
          if ((hyper.sampleRate ?? 1) < 1) {
            const rows = sampledRows(await this.head.sampledClasses(), hyper.subCenters ?? 1);
            sparse = { [this.#opts.headWeightName ?? 'head.weight']: rows };
          }
          const r = await this.optimizer.step({ lr, ...(sparse ? { sparse } : {}) });
          result.gradNorm = clip ? clip.norm : r.gradNorm;
          if (r.skipped) {
            result.skipped = true;
            result.reason = r.reason ?? 'non-finite gradients';
          }
        }
      }
    } catch (e) {
      // NaN/Inf inside the forward (the head refuses non-finite embeddings): a skipped step, not a crash.
      if (e instanceof FacecudaError && e.code === 'INVALID_ARGUMENT' && /NaN|Inf|finite/i.test(e.message)) {
        result.skipped = true;
        result.reason = e.message;
      } else {
        throw e;
      }
    } finally {
      x.dispose();
      emb?.dispose();
    }
    this.iteration++;
    // An fp16 overflow the scaler has backed off from is the scaler's business, not divergence,
    // unless the scale has fallen below its minimum.
    const scalerSkip = result.nextLossScale !== undefined && !this.scaler?.belowMinimum;
    this.consecutiveSkips = result.skipped && !scalerSkip ? this.consecutiveSkips + 1 : scalerSkip ? this.consecutiveSkips : 0;
    result.seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    if (result.skipped) this.emit('skip', result);
    this.emit('step', result);
    return result;
  }

  /** Verification on every set (SPEC §10.2: flip TTA, 10-fold accuracy, TAR at FAR 1e-3). */
  async verify(): Promise<Record<string, VerificationResult>> {
    const out: Record<string, VerificationResult> = {};
    const verifier = this.#opts.verifier;
    for (const set of this.#opts.validation ?? []) {
      if (!verifier) break;
      const { data, dim, xnorm } = await embedImages(this.model, set.images);
      const [e1, e2] = splitPairs(data, dim, set.issame.length);
      const { accuracy, std } = verifier.accuracy(e1, e2, dim, set.issame);
      const tar = verifier.tarAtFar(e1, e2, dim, set.issame, 1e-3);
      out[set.name] = { accuracy, std, tarAtFar1e3: tar, xnorm };
      this.best[set.name] = Math.max(this.best[set.name] ?? 0, accuracy);
    }
    this.emit('verify', { iteration: this.iteration, results: out });
    return out;
  }

  /** Trains until `epochs` epochs are complete (counting from epoch 0, so a resumed run continues). */
  async fit(options: { epochs: number }): Promise<FitResult> {
    const epochs = options.epochs;
    if (!Number.isInteger(epochs) || epochs < 0) throw new RangeError(`Expected epochs to be a non-negative integer but received ${String(epochs)}`);
    const o = this.#opts;
    const started = Date.now();
    const maxSkips = o.maxConsecutiveSkips ?? 5;
    const progress = o.progress ?? Boolean(process.stderr.isTTY);
    const onSignal = () => {
      this.#interrupt = true;
    };
    if (o.handleSignals) process.once('SIGINT', onSignal);
    let stopped: FitResult['stopped'] = 'done';
    let diagnosis: string | undefined;
    let verification: Record<string, VerificationResult> = {};
    let lastLoss = NaN;
    try {
      outer: for (; this.epoch < epochs; this.epoch++, this.batchInEpoch = 0) {
        const t0 = Date.now();
        let sum = 0;
        let count = 0;
        if (this.batchInEpoch > 0) this.data.startAt(this.epoch, this.batchInEpoch);
        for await (const batch of this.data.epoch(this.epoch)) {
          const r = await this.step(batch);
          this.batchInEpoch++;
          if (!r.skipped) {
            sum += r.loss;
            count++;
            lastLoss = r.loss;
          }
          this.#lastLosses.push(r.loss);
          if (this.#lastLosses.length > 50) this.#lastLosses.shift();
          if (o.logFile && (this.iteration % (o.logEvery ?? 10) === 0 || r.skipped)) await this.#log(r);
          if (progress) this.#progressLine(r, epochs, started);
          if (r.skipped && this.consecutiveSkips >= maxSkips) {
            stopped = 'diverged';
            diagnosis = this.#diagnose(r, batch);
            break outer;
          }
          if (o.checkpoint?.every && this.iteration % o.checkpoint.every === 0) await this.save(o.checkpoint.path);
          if (o.verifyEvery && this.iteration % o.verifyEvery === 0) verification = await this.verify();
          if (this.#interrupt) {
            stopped = 'interrupted';
            break outer;
          }
        }
        this.emit('epoch', { epoch: this.epoch, seconds: (Date.now() - t0) / 1000, meanLoss: count ? sum / count : NaN });
        if (!o.verifyEvery && (o.validation?.length ?? 0) > 0) verification = await this.verify();
      }
    } finally {
      if (o.handleSignals) process.removeListener('SIGINT', onSignal);
      if (progress) process.stderr.write('\n');
    }
    if (o.checkpoint) await this.save(o.checkpoint.path);
    if (stopped === 'diverged' && o.logFile) await fsp.appendFile(o.logFile, JSON.stringify({ stopped, diagnosis }) + '\n');
    return {
      iterations: this.iteration, epochs: this.epoch, seconds: (Date.now() - started) / 1000, lastLoss,
      stopped, diagnosis, verification, best: { ...this.best },
    };
  }

  /** Writes a checkpoint of everything a resume needs (atomically). */
  async save(file: string): Promise<void> {
    const model = new Map<string, Tensor>();
    const params = await this.model.parameters({ includeBuffers: true });
    const head = new Map<string, Tensor>();
    const hp = await this.head.parameters();
    try {
      for (const p of params) model.set(p.name, p.value);
      head.set('weight', hp.weight);
      if (hp.bias) head.set('bias', hp.bias);
      const headState = (await this.head.state()) as unknown as Record<string, number>;
      const { step } = await this.model.state();
      await fsp.mkdir(path.dirname(path.resolve(file)), { recursive: true });
      await writeCheckpoint(file, {
        model, head, optimizerState: await this.optimizer.state(),
        meta: {
          iteration: this.iteration, epoch: this.epoch, batchInEpoch: this.batchInEpoch, consecutiveSkips: this.consecutiveSkips,
          best: this.best, modelStep: step, headState, extra: this.#opts.extra,
          ...(this.scaler ? { lossScaler: this.scaler.state() } : {}),
        },
      });
    } finally {
      for (const p of params) {
        p.value.dispose();
        p.grad?.dispose();
      }
      for (const t of [hp.weight, hp.gradWeight, hp.bias, hp.gradBias]) t?.dispose();
    }
    this.emit('checkpoint', { path: file, iteration: this.iteration });
  }

  /** Restores a checkpoint written by {@link save} into this trainer's objects. */
  async load(file: string): Promise<void> {
    const ck = await readCheckpoint(file);
    try {
      await this.model.loadStateDict(ck.model);
      const w = ck.head.get('weight');
      if (!w) throw new FacecudaError('CORRUPT_FILE', `${file}: no head/weight`);
      await this.head.setWeight(w);
      const b = ck.head.get('bias');
      if (b && 'setBias' in this.head) await (this.head as unknown as { setBias(t: Tensor): Promise<void> }).setBias(b);
      const { lambda: _lambda, ...headState } = ck.meta.headState as Record<string, number>;
      void _lambda;
      await this.head.setState(headState as never);
      await this.model.setStep(ck.meta.modelStep);
      await this.optimizer.loadState(ck.optimizerState);
      this.iteration = ck.meta.iteration;
      this.epoch = ck.meta.epoch;
      this.batchInEpoch = ck.meta.batchInEpoch;
      this.consecutiveSkips = ck.meta.consecutiveSkips;
      this.best = { ...ck.meta.best };
      if (ck.meta.lossScaler && this.scaler) this.scaler.loadState(ck.meta.lossScaler as GradScalerState);
    } finally {
      ck.dispose();
    }
  }

  async #log(r: StepResult): Promise<void> {
    const line = {
      time: new Date().toISOString(), iteration: r.iteration, epoch: r.epoch, loss: r.loss, lr: r.lr,
      samplesPerSecond: r.samples / r.seconds, gradNorm: r.gradNorm ?? null, ...(r.lossScale !== undefined ? { lossScale: r.lossScale } : {}),
      ...(r.skipped ? { skipped: true, reason: r.reason } : {}),
    };
    await fsp.appendFile(this.#opts.logFile as string, JSON.stringify(line) + '\n');
  }

  #progressLine(r: StepResult, epochs: number, started: number): void {
    const per = this.data.batchesPerEpoch;
    const done = this.epoch * per + this.batchInEpoch;
    const total = epochs * per;
    const elapsed = (Date.now() - started) / 1000;
    const eta = done > 0 ? (elapsed / done) * (total - done) : 0;
    const width = 24;
    const filled = Math.round((width * done) / Math.max(total, 1));
    const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
    process.stderr.write(
      `\r[${bar}] epoch ${this.epoch + 1}/${epochs} step ${this.batchInEpoch}/${per} ` +
        `${(r.samples / r.seconds).toFixed(1)} samples/s loss ${r.loss.toFixed(4)} lr ${r.lr.toExponential(2)} ETA ${Math.round(eta)}s   `,
    );
  }

  #diagnose(r: StepResult, batch: Batch): string {
    const finiteLosses = this.#lastLosses.filter(Number.isFinite);
    const rising = finiteLosses.length >= 4 && finiteLosses[finiteLosses.length - 1] > 2 * finiteLosses[0];
    const why: string[] = [`${this.consecutiveSkips} consecutive steps skipped (last: ${r.reason ?? 'unknown'}) at iteration ${r.iteration}, lr ${r.lr}`];
    if (!finite(batch.images)) why.push('bad data: the batch holds NaN/Inf pixels');
    else if (rising) why.push(`the loss rose from ${finiteLosses[0].toFixed(3)} to ${finiteLosses[finiteLosses.length - 1].toFixed(3)} before diverging: the learning rate is likely too high`);
    else if (/fp16 overflow/i.test(r.reason ?? '')) why.push(`fp16 gradients overflow even at loss scale ${r.lossScale} (below the scaler's minimum ${this.scaler?.minScale}): lower the learning rate, clip harder, or train in bf16`);
    else if (/gradient|overflow/i.test(r.reason ?? '')) why.push('gradients overflowed: lower the learning rate, clip harder, or use bf16 instead of fp16');
    else why.push('the loss became non-finite: check the learning rate and the data');
    why.push(`the weights are those of the last good step (skipped steps never change them)${this.#opts.checkpoint ? `; checkpoint: ${this.#opts.checkpoint.path}` : ''}`);
    return why.join('; ');
  }
}
