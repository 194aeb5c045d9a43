/**
 * The data loader's batch builder and its worker-thread entry.
 *
 * {@link BatchBuilder} turns a list of sample indices into a {@link Batch}: read the sample, decode it
 * (encoded bytes) or copy it (pixels), resize to size×size when needed, augment it with the key
 * (seed, epoch, sample index), and normalize it into the batch's NCHW float32 buffer at the sample's
 * slot. The same code runs in the main thread (`workers: 0`) and in every worker, and each sample's
 * bytes depend only on the source, the options and its key, so a batch is bitwise the same whatever
 * thread built it.
 *
 * When this file runs as a worker (workerData.tag === WORKER_TAG) it re-opens the source from its
 * descriptor ({@link openSource}), sets sharp to one libvips thread per image (`sharp.concurrency(1)`,
 * which is process-wide), and answers the loader's messages one batch at a time:
 *
 * - `{ type: 'batch', id, epoch, indices }` → `{ type: 'batch', id, images, labels, resized }`, the
 *   images' and labels' buffers transferred (no copy), or `{ type: 'error', id, error }` with the
 *   error's code, name, message and stack, from which the loader rebuilds the same FacecudaError.
 * - `{ type: 'close' }` → closes the source, answers `{ type: 'closed' }`.
 */
import { parentPort, workerData } from 'worker_threads';
import { FacecudaError } from '../errors';
import { augmentImage, isIdentityAugment, ResolvedAugment } from './augment';
import { ColorOrder, decodeImage, loadSharp, normalizeUnchecked, resizeImage } from './image';
import { openSource } from './sources';
import type { RawImage, Sample, SampleSource, SourceDescriptor } from './types';

/** Marks the workerData of a loader worker. */
export const WORKER_TAG = 'facecuda.data-loader';

/** What a builder needs besides the source; structured-cloneable. */
export interface BuilderConfig {
  size: number;
  colorOrder: ColorOrder;
  augment: ResolvedAugment;
  seed: number;
  /** The main thread's source's class count (0 = unknown: labels are only checked to be ≥ 0). */
  numClasses: number;
  /** Samples of a batch read and decoded at once. */
  concurrency: number;
}

/** The first resize a batch saw (for the loader's one warning). */
export interface ResizeNote {
  index: number;
  width: number;
  height: number;
}

export interface BuiltBatch {
  images: Float32Array;
  labels: Int32Array;
  resized: ResizeNote | null;
}

/** A serialized error, as a worker posts it. */
export interface ErrorRecord {
  code?: string;
  name: string;
  message: string;
  stack?: string;
}

export function serializeError(err: unknown): ErrorRecord {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return { code: typeof code === 'string' ? code : undefined, name: err.name, message: err.message, stack: err.stack };
  }
  return { name: 'Error', message: String(err) };
}

function isUint8Array(v: unknown): v is Uint8Array {
  return ArrayBuffer.isView(v) && Object.prototype.toString.call(v) === '[object Uint8Array]';
}

/** Builds batches from a source. */
export class BatchBuilder {
  private readonly identity: boolean;
  private readonly plane: number;
  private readonly pathOf: ((i: number) => string) | null;

  constructor(readonly source: SampleSource, readonly config: BuilderConfig) {
    this.identity = isIdentityAugment(config.augment);
    this.plane = config.size * config.size;
    const p = (source as { path?: unknown }).path;
    this.pathOf = typeof p === 'function' ? (i: number) => String(p.call(source, i)) : null;
  }

  async build(epoch: number, indices: Int32Array): Promise<BuiltBatch> {
    const n = indices.length;
    const images = new Float32Array(n * 3 * this.plane);
    const labels = new Int32Array(n);
    let resized: ResizeNote | null = null;
    let next = 0;
    const run = async (): Promise<void> => {
      while (next < n) {
        const slot = next++;
        const note = await this.sample(epoch, indices[slot], images, slot, labels);
        if (note && (!resized || note.index < resized.index)) resized = note;
      }
    };
    const lanes: Promise<void>[] = [];
    for (let k = 0; k < Math.min(this.config.concurrency, n); k++) lanes.push(run());
    // Every lane settles before the batch does, so no work outlives a failed batch.
    const settled = await Promise.allSettled(lanes);
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) throw failed.reason;
    return { images, labels, resized };
  }

  private where(index: number): string {
    if (!this.pathOf) return `sample ${index}`;
    try {
      return `sample ${index} (${this.pathOf(index)})`;
    } catch {
      return `sample ${index}`;
    }
  }

  private async sample(epoch: number, index: number, images: Float32Array, slot: number, labels: Int32Array): Promise<ResizeNote | null> {
    const { size, seed, augment, colorOrder } = this.config;
    const s: Sample = await this.source.get(index);
    const label = s.label;
    const classes = this.config.numClasses;
    if (!Number.isInteger(label) || label < 0 || (classes > 0 && label >= classes)) {
      throw new FacecudaError('CORRUPT_FILE', `The label of ${this.where(index)} is ${label}, outside [0, ${classes > 0 ? classes : '∞'})`);
    }
    let img: RawImage;
    let note: ResizeNote | null = null;
    if (s.encoded !== undefined) {
      if (!isUint8Array(s.encoded)) throw new FacecudaError('INTERNAL', `The source gave ${this.where(index)} with encoded bytes that are not a Uint8Array`);
      try {
        const d = await decodeImage(s.encoded, { size });
        if (d.resized) note = { index, width: d.sourceWidth, height: d.sourceHeight };
        img = d;
      } catch (err) {
        if (err instanceof FacecudaError && err.code === 'CORRUPT_FILE') {
          throw new FacecudaError('CORRUPT_FILE', `Cannot decode ${this.where(index)}: ${err.message}`);
        }
        throw err;
      }
    } else if (s.pixels !== undefined) {
      const p = s.pixels;
      if (!p || !isUint8Array(p.data) || p.data.length !== p.width * p.height * 3) {
        throw new FacecudaError('INTERNAL', `The source gave ${this.where(index)} with pixels that are not a width·height·3 Uint8Array`);
      }
      if (p.width !== size || p.height !== size) {
        note = { index, width: p.width, height: p.height };
        img = resizeImage(p, size, size, 'bilinear');
      } else {
        // A copy: augmentations work in place, and the source may hand out shared pixels.
        img = { width: size, height: size, channels: 3, data: this.identity ? p.data : p.data.slice() };
      }
    } else {
      throw new FacecudaError('INTERNAL', `The source gave ${this.where(index)} with neither encoded bytes nor pixels`);
    }
    if (!this.identity) img = augmentImage(img, augment, { seed, epoch, index });
    normalizeUnchecked(img, images, slot * 3 * this.plane, false, colorOrder === 'BGR');
    labels[slot] = label;
    return note;
  }
}

/** The data a loader passes to its workers. */
export interface WorkerInit {
  tag: typeof WORKER_TAG;
  descriptor: SourceDescriptor;
  /** The main thread's source size: a re-opened source of another size is an error. */
  expectedSize: number;
  config: BuilderConfig;
}

export type ToWorker = { type: 'batch'; id: number; epoch: number; indices: Int32Array } | { type: 'close' };
export type FromWorker =
  | { type: 'batch'; id: number; images: Float32Array; labels: Int32Array; resized: ResizeNote | null }
  | { type: 'error'; id: number; error: ErrorRecord }
  | { type: 'closed' };

function runWorker(init: WorkerInit): void {
  const port = parentPort!;
  try {
    const sharp = loadSharp();
    sharp.concurrency(1);
    sharp.cache(false);
  } catch {
    // Without sharp, pixel sources still work; decoding fails with its own error.
  }
  const opened: Promise<BatchBuilder> = (async () => {
    const source = await openSource(init.descriptor);
    if (source.size !== init.expectedSize) {
      await source.close();
      throw new FacecudaError('IO_ERROR', `The data source re-opened in a loader worker has ${source.size} samples, the loader's has ${init.expectedSize} (did it change on disk?)`);
    }
    return new BatchBuilder(source, init.config);
  })();
  opened.catch(() => undefined);
  // One batch at a time, in arrival order; 'close' does not wait for the batches queued before it
  // (the loader discards them).
  let queue: Promise<void> = Promise.resolve();
  let closing = false;
  port.on('message', (msg: ToWorker) => {
    if (msg.type === 'close') {
      closing = true;
      void (async () => {
        try {
          await (await opened).source.close();
        } catch {
          // The source never opened, or closing failed: nothing more to release.
        }
        port.postMessage({ type: 'closed' } satisfies FromWorker);
      })();
      return;
    }
    queue = queue.then(async () => {
      if (closing) return;
      try {
        const builder = await opened;
        const b = await builder.build(msg.epoch, msg.indices);
        const reply: FromWorker = { type: 'batch', id: msg.id, images: b.images, labels: b.labels, resized: b.resized };
        port.postMessage(reply, [b.images.buffer as ArrayBuffer, b.labels.buffer as ArrayBuffer]);
      } catch (err) {
        port.postMessage({ type: 'error', id: msg.id, error: serializeError(err) } satisfies FromWorker);
      }
    });
  });
}

if (parentPort && (workerData as Partial<WorkerInit> | null)?.tag === WORKER_TAG) runWorker(workerData as WorkerInit);
