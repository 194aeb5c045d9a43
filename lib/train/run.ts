/**
 * `facecuda train --config file.json [--resume checkpoint]`: builds the objects a {@link TrainConfig}
 * describes (data source, loader, backbone, margin head, optimizer, schedule, verification sets) and
 * runs the {@link Trainer}, writing into `output/`:
 *   - `checkpoint.safetensors` every `verbose` steps, at the end and on Ctrl-C (atomic);
 *   - `train.jsonl`, a JSON line every `frequent` steps;
 *   - `model.safetensors`, the final backbone (with its architecture and preprocessing metadata).
 */
import { promises as fsp } from 'fs';
import * as path from 'path';

import { Backbone } from '../backbones/model';
import type { BackboneName } from '../backbones/arch';
import { verifier } from '../data/baseline';
import { readBinPack } from '../data/binpack';
import { ImageFolder } from '../data/folder';
import { decodeImage } from '../data/image';
import { DataLoader } from '../data/loader';
import { RecordIO } from '../data/recordio';
import { SyntheticFaces } from '../data/synthetic';
import type { RawImage, SampleSource } from '../data/types';
import { DeviceName, resolveDevice } from '../device';
import { FacecudaError } from '../errors';
import { AdaFaceHead, ArcFaceHead, CombinedMarginHead, CosFaceHead, MarginHead } from '../heads';
import { AdamW, clipGradNorm, headParams, Optimizer, paramGroups, SGD } from '../optim';
import { MultiStepLR, PolyWarmupLR } from '../schedule';
import { resolveConfig, TrainConfig } from './config';
import { FitResult, Trainer, VerificationSet } from './trainer';

async function openData(cfg: TrainConfig): Promise<SampleSource> {
  if (cfg.rec === 'synthetic') {
    return new SyntheticFaces({ seed: cfg.seed, identities: 256, samplesPerIdentity: 24, size: cfg.input_size, ...cfg.synthetic } as never);
  }
  const stat = await fsp.stat(cfg.rec).catch(() => null);
  if (stat && stat.isDirectory()) return ImageFolder.open(cfg.rec);
  return RecordIO.open(cfg.rec);
}

async function openVerification(cfg: TrainConfig, data: SampleSource, log: (s: string) => void): Promise<VerificationSet[]> {
  const sets: VerificationSet[] = [];
  for (const target of cfg.val_targets) {
    if (target === 'synthetic') {
      if (!(data instanceof SyntheticFaces)) throw new FacecudaError('INVALID_ARGUMENT', "val_targets 'synthetic' needs rec 'synthetic'");
      const held = new SyntheticFaces({ seed: cfg.seed, identities: 100, samplesPerIdentity: 8, size: cfg.input_size, firstIdentity: data.numClasses });
      const p = held.pairs({ count: 1200, seed: cfg.seed + 1 });
      sets.push({ name: 'synthetic', images: p.images, issame: p.issame });
      continue;
    }
    const file = target.endsWith('.bin') ? target : path.join(path.dirname(cfg.rec), `${target}.bin`);
    const pack = await readBinPack(file);
    const images: RawImage[] = [];
    for (const bytes of pack.images) images.push(await decodeImage(bytes, { size: cfg.input_size }));
    sets.push({ name: path.basename(file, '.bin'), images, issame: pack.issame });
    log(`verification set ${file}: ${pack.issame.length} pairs`);
  }
  return sets;
}

function makeHead(cfg: TrainConfig, numClasses: number, device: DeviceName, precision: 'fp32' | 'bf16' | 'fp16'): MarginHead {
  const common = { embeddingSize: cfg.embedding_size, numClasses, device, seed: cfg.seed, sampleRate: cfg.sample_rate, precision };
  const [m1, m2, m3] = cfg.margin_list;
  switch (cfg.loss) {
    case 'arcface':
      return new ArcFaceHead({ ...common, margin: m2 });
    case 'cosface':
      return new CosFaceHead({ ...common, margin: m3 });
    case 'adaface':
      return new AdaFaceHead(common);
    default:
      return new CombinedMarginHead({ ...common, m1, m2, m3 });
  }
}

/** What {@link runTraining} resolves to. */
export interface TrainRunResult extends FitResult {
  output: string;
  model: string;
  checkpoint: string;
}

/**
 * Runs a training configuration (an object, or the path of a JSON file).
 *
 * @example await runTraining({ network: 'r18', rec: 'synthetic', num_epoch: 1, output: 'runs/a' });
 */
export async function runTraining(
  config: unknown,
  options: { resume?: string; log?: (line: string) => void; progress?: boolean; handleSignals?: boolean } = {},
): Promise<TrainRunResult> {
  const log = options.log ?? (() => undefined);
  const raw = typeof config === 'string' ? (JSON.parse(await fsp.readFile(config, 'utf8')) as unknown) : config;
  const cfg = resolveConfig(raw);
  const device = resolveDevice(cfg.device, 'device');
  const output = path.resolve(cfg.output);
  await fsp.mkdir(output, { recursive: true });

  const data = await openData(cfg);
  const validation = await openVerification(cfg, data, log);
  const loader = new DataLoader(data, { batchSize: cfg.batch_size, seed: cfg.seed, workers: cfg.num_workers, size: cfg.input_size });
  const network = cfg.network as BackboneName;
  // arcface_torch's fp16: autocast + GradScaler. Here: fp16 GEMM/conv operands with dynamic loss
  // scaling (the Trainer adds a GradScaler for fp16 models), or bf16 with amp_dtype. The CPU trains
  // in fp32 (its fp16 is an emulation for tests, slower than fp32).
  const precision = cfg.fp16 && device !== 'cpu' ? cfg.amp_dtype : 'fp32';
  const model = Backbone.create(network, {
    embeddingSize: cfg.embedding_size, device, seed: cfg.seed, precision,
    ...(network.startsWith('r') ? { inputSize: cfg.input_size, ...(cfg.base_width !== 64 ? { baseWidth: cfg.base_width } : {}) } : {}),
  });
  const head = makeHead(cfg, data.numClasses, device, precision);
  const params = await model.parameters();
  const hp = await head.parameters();
  try {
    const groups = [...paramGroups(params), { params: headParams(hp) }];
    const optimizer: Optimizer =
      cfg.optimizer === 'adamw'
        ? new AdamW(groups, { lr: cfg.lr, weightDecay: cfg.weight_decay })
        : new SGD(groups, { lr: cfg.lr, momentum: cfg.momentum, weightDecay: cfg.weight_decay });
    const per = loader.batchesPerEpoch;
    const total = per * cfg.num_epoch;
    const schedule = cfg.lr_steps
      ? new MultiStepLR({ base: cfg.lr, milestones: cfg.lr_steps.map((e) => e * per), gamma: 0.1 })
      : new PolyWarmupLR({ base: cfg.lr, totalSteps: total, warmupSteps: Math.round(per * cfg.warmup_epoch) });
    const checkpoint = path.join(output, 'checkpoint.safetensors');
    const trainer = new Trainer({
      model, head, optimizer, schedule, data: loader, validation, verifier,
      verifyEvery: cfg.verbose, logFile: path.join(output, 'train.jsonl'), logEvery: cfg.frequent,
      checkpoint: { path: checkpoint, every: cfg.verbose }, progress: options.progress, handleSignals: options.handleSignals,
      extra: { config: cfg },
      // arcface_torch: clip_grad_norm_(backbone.parameters(), 5), one norm over the backbone; not the FC weights.
      clipGradients: () => clipGradNorm(params, 5),
    });
    trainer.on('verify', ({ iteration, results }) => {
      for (const [name, r] of Object.entries(results as Record<string, { accuracy: number; std: number; xnorm: number }>)) {
        log(`[${name}][${iteration}] XNorm ${r.xnorm.toFixed(3)} Accuracy-Flip ${(100 * r.accuracy).toFixed(2)}% ± ${(100 * r.std).toFixed(2)} (best ${(100 * trainer.best[name]).toFixed(2)}%)`);
      }
    });
    if (options.resume) {
      await trainer.load(options.resume);
      log(`resumed from ${options.resume} at iteration ${trainer.iteration} (epoch ${trainer.epoch}, batch ${trainer.batchInEpoch})`);
    }
    const result = await trainer.fit({ epochs: cfg.num_epoch });
    const modelFile = path.join(output, 'model.safetensors');
    await model.save(modelFile, { provenance: `facecuda train: ${cfg.network} ${cfg.loss} on ${cfg.rec}, ${result.iterations} iterations` });
    return { ...result, output, model: modelFile, checkpoint };
  } finally {
    for (const p of params) {
      p.value.dispose();
      p.grad?.dispose();
    }
    await loader.close();
    await data.close();
    model.dispose();
    head.dispose();
  }
}
