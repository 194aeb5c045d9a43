/**
 * `npx facecuda demo`: the main job end to end on built-in synthetic data, with no download.
 *
 * 1. SyntheticFaces renders a training set (identities × samples, with pose, lighting, expression,
 *    occlusion and quality nuisance) and, from identities never seen in training, verification
 *    pairs (half of them cross-quality: an "ID photo" against a degraded "selfie") and a 1:N
 *    gallery (one ID photo per held-out identity) with degraded probes.
 * 2. A small IResNet-18 (reduced width) with a margin head (ArcFace by default, `--loss adaface`)
 *    trains with SGD (momentum 0.9, weight decay 5e-4 except BatchNorm/PReLU/biases, gradient
 *    clipping 5), a linear warm-up then polynomial decay, horizontal flips, on the CPU or the GPU.
 * 3. It reports: training time, 10-fold verification accuracy on the held-out pairs (SPEC §10.2,
 *    flip TTA) with TAR at FAR 1e-3, cross-quality accuracy, 1:N top-1 on the held-out gallery, and
 *    the same verification for a linear method on raw pixels (PCA + LDA, "Fisherfaces") to show the
 *    task is not trivial; writes the model (safetensors) and a JSON report.
 *
 * `--compare arcface,adaface` trains one model per head on the same data and reports them side by
 * side (the cross-quality pairs are the eKYC case).
 */
import { promises as fsp } from 'fs';
import * as os from 'os';
import * as path from 'path';

import { IResNet } from './backbones/model';
import { linearPixelBaseline, tarAtFar, verificationAccuracy } from './data/baseline';
import { DataLoader } from './data/loader';
import { SyntheticFaces } from './data/synthetic';
import type { RawImage } from './data/types';
import { resolveDevice } from './device';
import { atomicWriteFile } from './fsutil';
import { AdaFaceHead, ArcFaceHead, MarginHead } from './heads';
import { clipGradNorm, headParams, paramGroups, SGD } from './optim';
import { PolyWarmupLR } from './schedule';
import { embedImages, splitPairs } from './train/embed';
import { Trainer } from './train/trainer';

/** Options of {@link runDemo}. */
export interface DemoOptions {
  /** 'auto' (default: CUDA when usable, else the CPU), 'cpu', 'cuda'. */
  device?: string;
  /** The head: 'arcface' (default) or 'adaface'. */
  loss?: 'arcface' | 'adaface';
  /** Train one model per head and compare them (e.g. ['arcface', 'adaface']). */
  compare?: ('arcface' | 'adaface')[];
  /** Where the model and the report go (default ./facecuda-demo). */
  output?: string;
  seed?: number;
  /** Training identities × samples per identity (defaults 256 × 24). */
  identities?: number;
  samplesPerIdentity?: number;
  /** Held-out identities for verification and 1:N (default 100) and verification pairs (default 1200). */
  heldOutIdentities?: number;
  pairs?: number;
  epochs?: number;
  /** Side of the images and of the model input (default 56: the demo budget is 5 minutes on 2 CPU cores; 112 is the recipe size). */
  size?: number;
  /** Stop starting epochs after this many seconds of a model's training (default 220; the demo's budget is 5 minutes). */
  maxSeconds?: number;
  /** The head's scale and margin (defaults 32 and 0.3: a small training set converges faster than with arcface_torch's 64 and 0.5). */
  scale?: number;
  margin?: number;
  /** Backbone width: IResNet-18 at this base width (default 16), embedding size (default 128). */
  baseWidth?: number;
  embeddingSize?: number;
  /** Peak learning rate (default 0.1). */
  lr?: number;
  /** A progress line on stderr. */
  progress?: boolean;
  /** Called with human-readable progress messages. */
  log?: (line: string) => void;
}

/** One trained model's results. */
export interface DemoModelResult {
  loss: string;
  seconds: number;
  iterations: number;
  finalLoss: number;
  verification: { accuracy: number; accuracyStd: number; tarAtFar1e3: number };
  crossQuality: { accuracy: number; accuracyStd: number };
  identification: { top1: number; gallery: number; probes: number };
  model: string;
}

/** What the demo reports (`--json` prints it). */
export interface DemoResult {
  seconds: number;
  device: string;
  verification: { accuracy: number; accuracyStd: number; tarAtFar1e3: number };
  identification: { top1: number };
  crossQuality: { accuracy: number; accuracyStd: number };
  baseline: { method: string; accuracy: number; accuracyStd: number };
  model: string;
  report: string;
  models: DemoModelResult[];
  data: { identities: number; samplesPerIdentity: number; heldOutIdentities: number; pairs: number; size: number };
}

/** Top-1 identification: each probe's nearest gallery embedding (cosine) has its identity. */
function top1(gallery: Float32Array, galleryIds: Int32Array, probes: Float32Array, probeIds: Int32Array, dim: number): number {
  let hits = 0;
  const G = galleryIds.length;
  for (let p = 0; p < probeIds.length; p++) {
    let best = -Infinity;
    let who = -1;
    for (let g = 0; g < G; g++) {
      let s = 0;
      for (let j = 0; j < dim; j++) s += probes[p * dim + j] * gallery[g * dim + j];
      if (s > best) {
        best = s;
        who = galleryIds[g];
      }
    }
    if (who === probeIds[p]) hits++;
  }
  return probeIds.length ? hits / probeIds.length : 0;
}

/**
 * Runs the demo.
 *
 * @example const r = await runDemo({ device: 'cpu' }); console.log(r.verification.accuracy);
 */
export async function runDemo(options: DemoOptions = {}): Promise<DemoResult> {
  const started = Date.now();
  const log = options.log ?? (() => undefined);
  const seed = options.seed ?? 7;
  const size = options.size ?? 56;
  const identities = options.identities ?? 256;
  const samplesPerIdentity = options.samplesPerIdentity ?? 24;
  const heldOut = options.heldOutIdentities ?? 100;
  const pairCount = options.pairs ?? 1200;
  const epochs = options.epochs ?? 8;
  const maxSeconds = options.maxSeconds ?? 220;
  const device = resolveDevice(options.device ?? 'auto', 'device');
  const losses = options.compare && options.compare.length ? options.compare : [options.loss ?? 'arcface'];
  const output = path.resolve(options.output ?? 'facecuda-demo');
  await fsp.mkdir(output, { recursive: true });

  // Data: training identities [0, identities), held-out identities after them.
  const train = new SyntheticFaces({ seed, identities, samplesPerIdentity, size });
  const held = new SyntheticFaces({ seed, identities: heldOut, samplesPerIdentity: 8, size, firstIdentity: identities });
  const pairs = held.pairs({ count: pairCount, seed: seed + 1 });
  const cross = held.pairs({ count: pairCount, seed: seed + 2, crossQuality: true });
  // 1:N: one high-quality image per held-out identity as the gallery; degraded samples as probes.
  const galleryImages: RawImage[] = [];
  const galleryIds = new Int32Array(heldOut);
  const probeImages: RawImage[] = [];
  const probeIds: number[] = [];
  for (let k = 0; k < heldOut; k++) {
    galleryImages.push(held.render(k, 0, { quality: 1 }));
    galleryIds[k] = k;
    for (let j = 1; j <= 3; j++) {
      probeImages.push(held.render(k, j));
      probeIds.push(k);
    }
  }
  log(`data: ${identities} training identities × ${samplesPerIdentity} samples (${size}×${size}), ${heldOut} held-out identities, ${pairCount} pairs`);

  // Baseline: a linear method on raw pixels, trained on a subset of the training identities.
  const baseTrain: RawImage[] = [];
  const baseLabels: number[] = [];
  const baseIds = Math.min(identities, 128);
  for (let k = 0; k < baseIds; k++) {
    for (let j = 0; j < Math.min(samplesPerIdentity, 12); j++) {
      baseTrain.push(train.render(k, j));
      baseLabels.push(k);
    }
  }
  const baseline = linearPixelBaseline({ train: { images: baseTrain, labels: Int32Array.from(baseLabels) }, pairs });
  log(`baseline (PCA + LDA on raw pixels): ${(100 * baseline.accuracy).toFixed(2)}%`);

  const models: DemoModelResult[] = [];
  for (const loss of losses) {
    const t0 = Date.now();
    const emb = options.embeddingSize ?? 128;
    const scale = options.scale ?? 32;
    const margin = options.margin ?? 0.3;
    const model = IResNet.create('r18', { baseWidth: options.baseWidth ?? 16, embeddingSize: emb, inputSize: size, device, seed });
    const head: MarginHead =
      loss === 'adaface'
        ? new AdaFaceHead({ embeddingSize: emb, numClasses: identities, device, seed, scale, margin })
        : new ArcFaceHead({ embeddingSize: emb, numClasses: identities, device, seed, scale, margin });
    const loader = new DataLoader(train, {
      batchSize: 64, seed, shuffle: true, dropLast: true, size, workers: Math.max(1, Math.min(2, os.availableParallelism() - 1)),
      augment: { flip: 0.5 },
    });
    try {
      const params = await model.parameters();
      const hp = await head.parameters();
      const groups = [...paramGroups(params), { params: headParams(hp) }];
      const lr = options.lr ?? 0.1;
      const optimizer = new SGD(groups, { lr, momentum: 0.9, weightDecay: 5e-4 });
      const steps = epochs * loader.batchesPerEpoch;
      const schedule = new PolyWarmupLR({ base: lr, totalSteps: steps, warmupSteps: Math.min(loader.batchesPerEpoch, Math.floor(steps / 4)) });
      const trainer = new Trainer({
        model, head, optimizer, schedule, progress: options.progress,
        clipGradients: () => clipGradNorm(params, 5),
        data: loader,
      });
      const deadline = t0 + maxSeconds * 1000; // per model: --compare trains each for the same budget
      trainer.on('step', () => undefined);
      let last = NaN;
      for (let e = 0; e < epochs && Date.now() < deadline; e++) {
        const r = await trainer.fit({ epochs: e + 1 });
        last = r.lastLoss;
        log(`[${loss}] epoch ${e + 1}/${epochs}: loss ${last.toFixed(3)} (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
        if (r.stopped !== 'done') throw new Error(`training stopped: ${r.stopped} ${r.diagnosis ?? ''}`);
      }
      const trainSeconds = (Date.now() - t0) / 1000;
      // Evaluation on held-out identities.
      const ev = await embedImages(model, pairs.images);
      const [p1, p2] = splitPairs(ev.data, ev.dim, pairs.issame.length);
      const acc = verificationAccuracy(p1, p2, ev.dim, pairs.issame);
      const tar = tarAtFar(p1, p2, ev.dim, pairs.issame, 1e-3);
      const cv = await embedImages(model, cross.images);
      const [c1, c2] = splitPairs(cv.data, cv.dim, cross.issame.length);
      const cacc = verificationAccuracy(c1, c2, cv.dim, cross.issame);
      const g = await embedImages(model, galleryImages);
      const pr = await embedImages(model, probeImages);
      const t1 = top1(g.data, galleryIds, pr.data, Int32Array.from(probeIds), g.dim);
      const file = path.join(output, `model-${loss}.safetensors`);
      await model.save(file, { license: 'CC0-1.0 (synthetic demo data)', provenance: `facecuda demo, ${loss}, seed ${seed}` });
      models.push({
        loss, seconds: trainSeconds, iterations: trainer.iteration, finalLoss: last,
        verification: { accuracy: acc.accuracy, accuracyStd: acc.std, tarAtFar1e3: tar },
        crossQuality: { accuracy: cacc.accuracy, accuracyStd: cacc.std },
        identification: { top1: t1, gallery: heldOut, probes: probeIds.length },
        model: file,
      });
      for (const p of params) {
        p.value.dispose();
        p.grad?.dispose();
      }
    } finally {
      await loader.close();
      model.dispose();
      head.dispose();
    }
  }
  const main = models[0];
  const report = path.join(output, 'report.json');
  const result: DemoResult = {
    seconds: (Date.now() - started) / 1000,
    device,
    verification: main.verification,
    identification: { top1: main.identification.top1 },
    crossQuality: main.crossQuality,
    baseline: { method: 'PCA + LDA on raw pixels (linear)', accuracy: baseline.accuracy, accuracyStd: baseline.std },
    model: main.model,
    report,
    models,
    data: { identities, samplesPerIdentity, heldOutIdentities: heldOut, pairs: pairCount, size },
  };
  await atomicWriteFile(report, Buffer.from(JSON.stringify(result, null, 2) + '\n'));
  return result;
}
