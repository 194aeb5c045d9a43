/**
 * The training data loader (SPEC §9.1: arcface_torch's DistributedSampler(shuffle, seed) with
 * drop_last, its transforms, and a background prefetcher), over any {@link SampleSource}.
 *
 * Order: epoch e visits the samples in {@link epochPermutation}(size, seed, e) — Fisher–Yates driven
 * by a counter-based generator, a pure function of (seed, e) — or in index order when `shuffle` is
 * false; consecutive runs of `batchSize` make the batches, and with `dropLast` (default) the tail
 * shorter than a batch is skipped. The order does not reproduce PyTorch's generator.
 *
 * Augmentation: each sample's draws are keyed by (seed, epoch, sample index) (see ./augment), so a
 * batch is bitwise the same for any number of workers, any prefetch depth and after a resume.
 *
 * Threads: with `workers` ≥ 1, worker threads (./worker) re-open the source from `source.describe()`
 * (./sources), then read, decode, augment and normalize whole batches, whose buffers are transferred
 * back (no copy). The loader keeps `prefetch` batches per worker in flight (PyTorch's
 * prefetch_factor), so while the consumer trains on one batch the next ones are being built.
 * `workers: 0` builds batches in the calling thread (still `prefetch` batches ahead: sharp decodes
 * on libuv's thread pool). Note that sharp's decodes in every thread share libuv's pool, of
 * UV_THREADPOOL_SIZE threads (default 4): set it in the environment, before the process starts, to at
 * least the number of workers when decoding is the bottleneck.
 *
 * Worker entry (how a worker finds its code): the loader starts `worker.js` next to its own file. From
 * the compiled package (dist/) that is plain JavaScript. When the loader itself runs from TypeScript
 * sources (under jest/ts-jest: its file ends in .ts), the worker starts from a small bootstrap that
 * registers a `.ts` require hook compiling each file with the `typescript` package's transpileModule
 * (no type check) and then requires worker.ts; this needs the `typescript` dev dependency only in
 * that case.
 *
 * Errors: an error while building a batch (a corrupt file, an unreadable path) rejects the iteration
 * with a FacecudaError of the same code and message, in whichever thread it happened. A worker that
 * dies rejects its pending batches with `INTERNAL` and is replaced on the next batch.
 *
 * Resume: {@link DataLoader.position} is { epoch, batch }: the epoch being read and how many of its
 * batches were yielded. A trainer saves it with its checkpoint and calls
 * {@link DataLoader.startAt}(epoch, batch) before `loader.epoch(epoch)` to continue exactly there.
 *
 * @example
 * const source = await ImageFolder.open('/data/faces');
 * const loader = new DataLoader(source, { batchSize: 128, seed: 2048, augment: { flip: 0.5 } });
 * for (let e = 0; e < 20; e++) {
 *   for await (const batch of loader.epoch(e)) train(batch.images, batch.labels);
 * }
 * await loader.close();
 */
import * as os from 'os';
import * as path from 'path';
import { Worker } from 'worker_threads';
import { FacecudaError, FacecudaRangeError, FacecudaTypeError, invalidParameterError, outOfRangeError } from '../errors';
import { assertBool, assertInteger, assertKnownOptions, assertOneOf, is, optionsObject } from '../validate';
import { ARCFACE_AUGMENT, AugmentOptions, assertSeed, epochPermutation, ResolvedAugment, resolveAugment } from './augment';
import { COLOR_ORDERS, ColorOrder } from './image';
import type { Batch, SampleSource, SourceDescriptor } from './types';
import { BatchBuilder, BuilderConfig, BuiltBatch, ErrorRecord, FromWorker, ResizeNote, ToWorker, WORKER_TAG, WorkerInit } from './worker';

export interface DataLoaderOptions {
  /** Samples per batch (required). */
  batchSize: number;
  /** Shuffle every epoch (default true). */
  shuffle?: boolean;
  /** Seed of the order and of the augmentations (default 0; arcface_torch uses 2048). */
  seed?: number;
  /** Skip the last, incomplete batch of an epoch (default true). */
  dropLast?: boolean;
  /** Worker threads (default os.availableParallelism() − 1, at least 1; 0 = the calling thread). */
  workers?: number;
  /** Batches in flight per worker (with 0 workers: in all) (default 2). */
  prefetch?: number;
  /** Augmentations (default {@link ARCFACE_AUGMENT}, a horizontal flip with p 0.5; {} for none). */
  augment?: AugmentOptions;
  /** Image side (default 112). */
  size?: number;
  /** Channel order of the batch (default 'RGB'). */
  colorOrder?: ColorOrder;
  /** Samples of a batch decoded at once, per thread (default 4). */
  concurrency?: number;
}

/** Where an iteration stands: epoch, and batches of it already yielded. */
export interface LoaderPosition {
  epoch: number;
  batch: number;
}

const LOADER_OPTIONS = ['batchSize', 'shuffle', 'seed', 'dropLast', 'workers', 'prefetch', 'augment', 'size', 'colorOrder', 'concurrency'];

/** The default worker count: one per core but one, at least one. */
export function defaultWorkers(): number {
  const cores = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  return Math.max(1, cores - 1);
}

/** Rebuilds, in this thread, the error a worker posted: same code, message and class. */
export function deserializeError(e: ErrorRecord): Error {
  let err: Error;
  if (e.code === 'INVALID_ARGUMENT' && e.name === 'TypeError') err = new FacecudaTypeError(e.message);
  else if (e.code === 'OUT_OF_RANGE' && e.name === 'RangeError') err = new FacecudaRangeError(e.message);
  else if (e.code) err = new FacecudaError(e.code, e.message);
  else err = new FacecudaError('INTERNAL', e.message);
  if (e.stack) err.stack = `${e.stack}\n    at (data loader worker)`;
  return err;
}

// A worker started from TypeScript sources: a `.ts` require hook, then the entry.
const TS_BOOTSTRAP = `
const { workerData } = require('worker_threads');
const fs = require('fs');
const path = require('path');
const Module = require('module');
let ts;
try {
  ts = require(require.resolve('typescript', { paths: [path.dirname(workerData.entry), process.cwd()] }));
} catch (e) {
  throw new Error('facecuda DataLoader: workers started from TypeScript sources need the typescript package: ' + e.message);
}
Module._extensions['.ts'] = function (module, filename) {
  const out = ts.transpileModule(fs.readFileSync(filename, 'utf8'), {
    fileName: filename,
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true, inlineSourceMap: true },
  });
  module._compile(out.outputText, filename);
};
require(workerData.entry);
`;

function startWorker(init: WorkerInit): Worker {
  const ext = path.extname(__filename);
  const entry = path.join(__dirname, `worker${ext}`);
  if (ext === '.ts') return new Worker(TS_BOOTSTRAP, { eval: true, workerData: { ...init, entry } });
  return new Worker(entry, { workerData: init });
}

interface Pending {
  resolve: (b: BuiltBatch) => void;
  reject: (e: Error) => void;
}

/** One worker thread and its batches in flight. */
class WorkerSlot {
  readonly worker: Worker;
  readonly pending = new Map<number, Pending>();
  dead = false;
  private closeRequested = false;
  private closing: (() => void) | null = null;

  constructor(init: WorkerInit) {
    this.worker = startWorker(init);
    this.worker.on('message', (msg: FromWorker) => this.onMessage(msg));
    this.worker.on('error', (err: Error) => this.fail(err));
    this.worker.on('exit', (code) => {
      this.fail(new FacecudaError('INTERNAL', `A data loader worker exited (code ${code}) with ${this.pending.size} batch(es) in flight`));
      if (this.closing) this.closing();
    });
    this.worker.unref();
  }

  private onMessage(msg: FromWorker): void {
    if (msg.type === 'closed') {
      if (this.closing) this.closing();
      return;
    }
    const p = this.pending.get(msg.id);
    if (!p) return;
    this.pending.delete(msg.id);
    if (msg.type === 'error') p.reject(deserializeError(msg.error));
    else p.resolve({ images: msg.images, labels: msg.labels, resized: msg.resized });
    if (this.pending.size === 0) this.worker.unref();
  }

  private fail(err: Error): void {
    this.dead = true;
    if (this.pending.size === 0) return;
    const e = this.closeRequested
      ? new FacecudaError('DISPOSED', 'The DataLoader was closed with batches in flight')
      : err instanceof FacecudaError ? err : new FacecudaError('INTERNAL', `A data loader worker failed: ${err.message}`);
    if (!(err instanceof FacecudaError) && err.stack) e.stack = err.stack;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  submit(id: number, epoch: number, indices: Int32Array): Promise<BuiltBatch> {
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.ref();
      this.worker.postMessage({ type: 'batch', id, epoch, indices } satisfies ToWorker);
    });
  }

  /** Asks the worker to close its source (up to 2 s), then terminates it. */
  async close(): Promise<void> {
    this.closeRequested = true;
    if (!this.dead) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 2000);
        this.closing = () => {
          clearTimeout(timer);
          resolve();
        };
        this.worker.ref();
        this.worker.postMessage({ type: 'close' } satisfies ToWorker);
      });
    }
    this.dead = true;
    await this.worker.terminate();
  }
}

/**
 * Batches from a {@link SampleSource}: shuffled per epoch, augmented, normalized, built ahead of
 * the consumer in worker threads. See the module comment.
 *
 * @example
 * const loader = new DataLoader(await RecordIO.open('faces_emore/train'), { batchSize: 128, seed: 1, workers: 4, augment: { flip: 0.5 } });
 * for await (const batch of loader.epoch(0)) await trainer.step(batch);
 */
export class DataLoader {
  readonly source: SampleSource;
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly seed: number;
  readonly dropLast: boolean;
  readonly workers: number;
  readonly prefetch: number;
  readonly size: number;
  readonly colorOrder: ColorOrder;
  /** The resolved augmentations. */
  readonly augment: Readonly<ResolvedAugment>;
  /** Batches an epoch yields. */
  readonly batchesPerEpoch: number;

  private readonly config: BuilderConfig;
  private readonly descriptor: SourceDescriptor | null;
  private builder: BatchBuilder | null = null;
  private slots: WorkerSlot[] = [];
  private nextId = 1;
  private pos: LoaderPosition = { epoch: 0, batch: 0 };
  private resume: LoaderPosition | null = null;
  private warned = false;
  private closed = false;
  private permCache: { epoch: number; perm: Int32Array } | null = null;

  constructor(source: SampleSource, options: DataLoaderOptions) {
    // Apply defaults
    const opts = optionsObject(options, 'DataLoader options');
    assertKnownOptions(opts, 'DataLoader', LOADER_OPTIONS, { batch_size: 'batchSize', drop_last: 'dropLast', num_workers: 'workers', prefetch_factor: 'prefetch' });
    const shuffle = opts.shuffle ?? true;
    const seed = opts.seed ?? 0;
    const dropLast = opts.dropLast ?? true;
    const workers = opts.workers ?? defaultWorkers();
    const prefetch = opts.prefetch ?? 2;
    const size = opts.size ?? 112;
    const colorOrder = opts.colorOrder ?? 'RGB';
    const concurrency = opts.concurrency ?? 4;
    // Validate arguments
    if (!is.object(source) || typeof (source as SampleSource).get !== 'function' || typeof (source as SampleSource).describe !== 'function') {
      throw invalidParameterError('source', 'a SampleSource (size, numClasses, get, describe, close)', source);
    }
    assertInteger(source.size, 'source.size', 0);
    assertInteger(source.numClasses, 'source.numClasses', 0);
    if (opts.batchSize === undefined) throw invalidParameterError('batchSize', 'a positive integer', undefined);
    assertInteger(opts.batchSize, 'batchSize', 1, 1 << 20);
    assertBool(shuffle, 'shuffle');
    assertSeed(seed, 'seed');
    assertBool(dropLast, 'dropLast');
    assertInteger(workers, 'workers', 0, 1024);
    assertInteger(prefetch, 'prefetch', 1, 1024);
    assertInteger(size, 'size', 1, 4096);
    assertOneOf(colorOrder, 'colorOrder', COLOR_ORDERS);
    assertInteger(concurrency, 'concurrency', 1, 1024);
    const augment = resolveAugment((opts.augment ?? ARCFACE_AUGMENT) as AugmentOptions);
    let descriptor: SourceDescriptor | null = null;
    if (workers > 0) {
      descriptor = source.describe();
      if (!is.object(descriptor)) throw invalidParameterError('source.describe()', 'a source descriptor', descriptor);
    }
    // Interpret options
    this.source = source;
    this.batchSize = opts.batchSize;
    this.shuffle = shuffle;
    this.seed = seed;
    this.dropLast = dropLast;
    this.workers = workers;
    this.prefetch = prefetch;
    this.size = size;
    this.colorOrder = colorOrder;
    this.augment = augment;
    this.descriptor = descriptor;
    this.config = { size, colorOrder, augment, seed, numClasses: source.numClasses, concurrency };
    this.batchesPerEpoch = dropLast ? Math.floor(source.size / this.batchSize) : Math.ceil(source.size / this.batchSize);
  }

  /** Where the iteration stands: the epoch, and the number of its batches already yielded. */
  get position(): LoaderPosition {
    return { ...this.pos };
  }

  /** Makes the next `epoch(epoch)` start at batch `batchIndex` (0 ≤ batchIndex ≤ batchesPerEpoch). */
  startAt(epoch: number, batchIndex: number): void {
    assertInteger(epoch, 'epoch', 0, 0xffffffff);
    assertInteger(batchIndex, 'batchIndex', 0, this.batchesPerEpoch);
    this.resume = { epoch, batch: batchIndex };
    this.pos = { epoch, batch: batchIndex };
  }

  /** The sample order of an epoch (before batching and dropping the tail). */
  permutation(epoch: number): Int32Array {
    assertInteger(epoch, 'epoch', 0, 0xffffffff);
    return this.order(epoch).slice();
  }

  /** The sample indices of batch `batchIndex` of an epoch. */
  batchIndices(epoch: number, batchIndex: number): Int32Array {
    assertInteger(epoch, 'epoch', 0, 0xffffffff);
    assertInteger(batchIndex, 'batchIndex', 0, Math.max(0, this.batchesPerEpoch - 1));
    const perm = this.order(epoch);
    return perm.slice(batchIndex * this.batchSize, Math.min(perm.length, (batchIndex + 1) * this.batchSize));
  }

  /** The epoch's order, cached for the last epoch asked (not to be modified). */
  private order(epoch: number): Int32Array {
    if (this.permCache && this.permCache.epoch === epoch) return this.permCache.perm;
    let perm: Int32Array;
    if (this.shuffle) perm = epochPermutation(this.source.size, this.seed, epoch);
    else {
      perm = new Int32Array(this.source.size);
      for (let i = 0; i < perm.length; i++) perm[i] = i;
    }
    this.permCache = { epoch, perm };
    return perm;
  }

  /**
   * The batches of epoch `e`, in order, from batch 0 (or from where {@link startAt} said).
   * Breaking out of the loop discards the batches built ahead.
   */
  epoch(e: number): AsyncIterableIterator<Batch> {
    // Validate arguments
    assertInteger(e, 'epoch', 0, 0xffffffff);
    if (this.closed) throw new FacecudaError('DISPOSED', 'The DataLoader is closed');
    // Interpret options
    let start = 0;
    if (this.resume && this.resume.epoch === e) start = this.resume.batch;
    this.resume = null;
    this.pos = { epoch: e, batch: start };
    return this.iterate(e, start);
  }

  private async *iterate(e: number, start: number): AsyncGenerator<Batch> {
    const nb = this.batchesPerEpoch;
    const perm = this.order(e);
    const depth = this.prefetch * Math.max(1, this.workers);
    const inflight = new Map<number, Promise<BuiltBatch>>();
    let dispatched = start;
    const indicesOf = (b: number): Int32Array => perm.slice(b * this.batchSize, Math.min(perm.length, (b + 1) * this.batchSize));
    const fill = (): void => {
      while (dispatched < nb && inflight.size < depth && !this.closed) {
        const p = this.submit(e, indicesOf(dispatched));
        p.catch(() => undefined); // awaited in order below; a batch abandoned by a break must not be unhandled
        inflight.set(dispatched, p);
        dispatched++;
      }
    };
    try {
      fill();
      for (let b = start; b < nb; b++) {
        if (this.closed) throw new FacecudaError('DISPOSED', 'The DataLoader was closed during an epoch');
        const built = await inflight.get(b)!;
        inflight.delete(b);
        if (built.resized) this.warnResized(built.resized);
        const indices = indicesOf(b);
        this.pos = { epoch: e, batch: b + 1 };
        fill();
        yield { images: built.images, labels: built.labels, indices, size: indices.length };
      }
    } finally {
      inflight.clear();
    }
  }

  private submit(epoch: number, indices: Int32Array): Promise<BuiltBatch> {
    if (this.workers === 0) {
      if (!this.builder) this.builder = new BatchBuilder(this.source, this.config);
      return this.builder.build(epoch, indices);
    }
    // The live worker with the fewest batches in flight; dead ones are replaced.
    for (let i = 0; i < this.workers; i++) {
      const s = this.slots[i];
      if (!s || s.dead) {
        if (s) void s.close().catch(() => undefined);
        this.slots[i] = new WorkerSlot({ tag: WORKER_TAG, descriptor: this.descriptor!, expectedSize: this.source.size, config: this.config });
      }
    }
    let best = this.slots[0];
    for (const s of this.slots) if (s.pending.size < best.pending.size) best = s;
    return best.submit(this.nextId++, epoch, indices);
  }

  private warnResized(note: ResizeNote): void {
    if (this.warned) return;
    this.warned = true;
    process.emitWarning(
      `DataLoader: images are not ${this.size}×${this.size} (sample ${note.index} is ${note.width}×${note.height}); they are resized ` +
        '(bilinear), which costs time per image and may not match the face alignment the model expects. This warning is shown once per loader.',
      { type: 'FacecudaWarning', code: 'FACECUDA_IMAGE_RESIZED' },
    );
  }

  /** Terminates the workers (each closes its copy of the source first). Idempotent. The source itself stays open. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const slots = this.slots;
    this.slots = [];
    await Promise.all(slots.map((s) => s.close()));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** Result of {@link measureLoader}. */
export interface LoaderThroughput {
  /** Images per second over the measured batches (after the warm-up ones). */
  imagesPerSecond: number;
  images: number;
  seconds: number;
  batches: number;
  workers: number;
}

/**
 * Measures a loader's throughput: images/s over `batches` batches after `warmup` batches (which
 * include starting the workers), with a consumer that does nothing. Epochs continue as needed.
 *
 * @example
 * const src = await ImageFolder.open('/data/faces');
 * for (const workers of [1, 2]) console.log(workers, await measureLoader(src, { batchSize: 128, workers }));
 */
export async function measureLoader(
  source: SampleSource, options: DataLoaderOptions, measure: { batches?: number; warmup?: number } = {},
): Promise<LoaderThroughput> {
  const batches = measure.batches ?? 20;
  const warmup = measure.warmup ?? 2;
  assertInteger(batches, 'batches', 1);
  assertInteger(warmup, 'warmup', 0);
  const loader = new DataLoader(source, options);
  if (loader.batchesPerEpoch === 0) throw outOfRangeError('source.size', `at least batchSize = ${loader.batchSize}`, source.size);
  let seen = 0;
  let images = 0;
  let t0 = performance.now();
  try {
    for (let e = 0; seen < warmup + batches; e++) {
      for await (const b of loader.epoch(e)) {
        seen++;
        if (seen === warmup) t0 = performance.now();
        else if (seen > warmup) images += b.size;
        if (seen >= warmup + batches) break;
      }
    }
  } finally {
    await loader.close();
  }
  const seconds = (performance.now() - t0) / 1000;
  return { imagesPerSecond: images / seconds, images, seconds, batches, workers: loader.workers };
}
