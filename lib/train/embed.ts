/**
 * Embeddings of raw images with a backbone, as the verification protocol computes them (SPEC §10.2):
 * each image normalized as (v/255 − 0.5)/0.5, the model in eval mode, and with flip test-time
 * augmentation the raw embeddings of the image and of its horizontal mirror summed before the L2
 * normalization.
 */
import type { Backbone } from '../backbones/model';
import { FacecudaError } from '../errors';
import { Tensor } from '../tensor';
import { normalizeUnchecked } from '../data/image';
import type { RawImage } from '../data/types';

/** Options of {@link embedImages}. */
export interface EmbedOptions {
  /** Images per forward (default 64). */
  batchSize?: number;
  /** Sum the embeddings of the image and its mirror (default true: §10.2's "Accuracy-Flip"). */
  flip?: boolean;
  /** L2-normalize the result (default true). */
  normalize?: boolean;
}

/** What {@link embedImages} returns. */
export interface Embeddings {
  /** [n, D] row-major. */
  readonly data: Float32Array;
  readonly count: number;
  readonly dim: number;
  /** Mean L2 norm of the raw embeddings (both the originals and the mirrors): §10.2's XNorm. */
  readonly xnorm: number;
}

/** Pair embeddings [2P, dim] (images 2k and 2k+1 are pair k) → the two sides [P, dim] each. */
export function splitPairs(data: Float32Array, dim: number, P: number): [Float32Array, Float32Array] {
  const e1 = new Float32Array(P * dim);
  const e2 = new Float32Array(P * dim);
  for (let k = 0; k < P; k++) {
    e1.set(data.subarray(2 * k * dim, (2 * k + 1) * dim), k * dim);
    e2.set(data.subarray((2 * k + 1) * dim, (2 * k + 2) * dim), k * dim);
  }
  return [e1, e2];
}

/**
 * Embeds `images` (all of the model's input size) with `model` in eval mode; the model's mode is
 * restored afterwards.
 *
 * @example const { data, dim } = await embedImages(model, pairs.images);
 */
export async function embedImages(model: Backbone, images: readonly RawImage[], options: EmbedOptions = {}): Promise<Embeddings> {
  const batchSize = options.batchSize ?? 64;
  const flip = options.flip ?? true;
  const normalize = options.normalize ?? true;
  const [c, h, w] = model.inputShape as [number, number, number];
  const dim = model.embeddingSize;
  for (const [i, img] of images.entries()) {
    if (img.width !== w || img.height !== h || c !== 3) {
      throw new FacecudaError('SHAPE_MISMATCH', `images[${i}] is ${img.width}×${img.height}; the model takes ${w}×${h}`);
    }
  }
  const wasTraining = model.training;
  model.eval();
  const out = new Float32Array(images.length * dim);
  let normSum = 0;
  let normCount = 0;
  try {
    const passes = flip ? [false, true] : [false];
    for (let start = 0; start < images.length; start += batchSize) {
      const n = Math.min(batchSize, images.length - start);
      for (const mirror of passes) {
        const x = new Float32Array(n * 3 * h * w);
        for (let k = 0; k < n; k++) normalizeUnchecked(images[start + k], x, k * 3 * h * w, mirror, false);
        const xt = Tensor.from(x, [n, 3, h, w], { device: model.device });
        const yt = await model.forward(xt);
        const y = (await yt.toArray()) as Float32Array;
        xt.dispose();
        yt.dispose();
        for (let k = 0; k < n; k++) {
          let s = 0;
          for (let j = 0; j < dim; j++) {
            const v = y[k * dim + j];
            s += v * v;
            out[(start + k) * dim + j] += v;
          }
          normSum += Math.sqrt(s);
          normCount++;
        }
      }
    }
  } finally {
    if (wasTraining) model.train();
  }
  if (normalize) {
    for (let i = 0; i < images.length; i++) {
      let s = 0;
      for (let j = 0; j < dim; j++) s += out[i * dim + j] ** 2;
      const inv = s > 0 ? 1 / Math.sqrt(s) : 0;
      for (let j = 0; j < dim; j++) out[i * dim + j] *= inv;
    }
  }
  return { data: out, count: images.length, dim, xnorm: normCount ? normSum / normCount : 0 };
}
