/**
 * `facecuda train --config file.json`: a training configuration with the field names of
 * arcface_torch's configs (SPEC §9.1, §9.2), validated strictly (an unknown field is an error that
 * names it), with arcface_torch's defaults (configs/base.py).
 *
 * | field | default | meaning |
 * |---|---|---|
 * | network | 'r50' | 'r18', 'r34', 'r50', 'r100', 'r200', 'mbf', 'mbf_large' |
 * | embedding_size | 512 | |
 * | loss | — | 'arcface' (m 0.5), 'cosface' (m 0.4), 'adaface', 'combined': overrides margin_list |
 * | margin_list | [1.0, 0.5, 0.0] | arcface_torch CombinedMarginLoss (m1, m2, m3); (1, 0.5, 0) is ArcFace, (1, 0, 0.4) CosFace |
 * | sample_rate | 1.0 | Partial FC |
 * | batch_size | 128 | |
 * | optimizer | 'sgd' | 'sgd' or 'adamw' |
 * | lr | 0.1 | base learning rate (not rescaled by the batch size, as train_v2) |
 * | momentum | 0.9 | SGD |
 * | weight_decay | 5e-4 | BatchNorm, PReLU and biases excluded |
 * | num_epoch | 20 | |
 * | warmup_epoch | 0 | linear warm-up, then polynomial (power 1) decay to 0 (PolynomialLRWarmup) |
 * | lr_steps | — | epochs of ×0.1 decays (multi-step instead of polynomial; the seed recipe: [20, 28, 32]) |
 * | rec | — | a RecordIO prefix ('…/train'), an image folder, or 'synthetic' |
 * | val_targets | [] | `.bin` verification packs (paths, or names looked up next to rec) |
 * | fp16 | false | mixed precision on a GPU, as arcface_torch: fp16 with dynamic loss scaling (the CPU ignores it) |
 * | amp_dtype | 'fp16' | facecuda: the mixed-precision type when fp16 is true, 'fp16' (loss scaling) or 'bf16' (none needed) |
 * | output | 'work_dirs/facecuda' | checkpoints, logs and the final model |
 * | seed | 2048 | |
 * | num_workers | 2 | data-loader worker threads |
 * | frequent | 10 | log every N steps |
 * | verbose | 2000 | verify every N steps |
 * | device | 'auto' | facecuda device |
 * | input_size | 112 | IResNet only |
 * | synthetic | {} | SyntheticFaces options when rec is 'synthetic' |
 */
import { FacecudaError } from '../errors';

/** A resolved training configuration (arcface_torch names). */
export interface TrainConfig {
  network: 'r18' | 'r34' | 'r50' | 'r100' | 'r200' | 'mbf' | 'mbf_large';
  embedding_size: number;
  loss: 'arcface' | 'cosface' | 'adaface' | 'combined';
  margin_list: [number, number, number];
  sample_rate: number;
  batch_size: number;
  optimizer: 'sgd' | 'adamw';
  lr: number;
  momentum: number;
  weight_decay: number;
  num_epoch: number;
  warmup_epoch: number;
  lr_steps: number[] | null;
  rec: string;
  val_targets: string[];
  fp16: boolean;
  output: string;
  seed: number;
  num_workers: number;
  frequent: number;
  verbose: number;
  device: string;
  input_size: number;
  synthetic: Record<string, unknown>;
  base_width: number;
  amp_dtype: 'fp16' | 'bf16';
}

export const CONFIG_DEFAULTS: Omit<TrainConfig, 'rec'> = {
  network: 'r50',
  embedding_size: 512,
  loss: 'arcface',
  margin_list: [1.0, 0.5, 0.0],
  sample_rate: 1.0,
  batch_size: 128,
  optimizer: 'sgd',
  lr: 0.1,
  momentum: 0.9,
  weight_decay: 5e-4,
  num_epoch: 20,
  warmup_epoch: 0,
  lr_steps: null,
  val_targets: [],
  fp16: false,
  output: 'work_dirs/facecuda',
  seed: 2048,
  num_workers: 2,
  frequent: 10,
  verbose: 2000,
  device: 'auto',
  input_size: 112,
  synthetic: {},
  base_width: 64,
  amp_dtype: 'fp16',
};

const NETWORKS = ['r18', 'r34', 'r50', 'r100', 'r200', 'mbf', 'mbf_large'] as const;
const LOSSES = ['arcface', 'cosface', 'adaface', 'combined'] as const;

function bad(field: string, expected: string, got: unknown): FacecudaError {
  return new FacecudaError('INVALID_ARGUMENT', `config field '${field}': expected ${expected} but received ${JSON.stringify(got)}`);
}

function num(o: Record<string, unknown>, k: string, lo: number, hi: number, integer = false): number {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isFinite(v) || (integer && !Number.isInteger(v)) || v < lo || v > hi) {
    throw bad(k, `${integer ? 'an integer' : 'a number'} in [${lo}, ${hi}]`, v);
  }
  return v;
}

/**
 * Validates a parsed config object and fills the defaults. `loss` picks the margins (arcface:
 * [1, 0.5, 0], cosface: [1, 0, 0.4]); without it, margin_list decides (and `loss` is derived).
 *
 * @throws `INVALID_ARGUMENT` naming the first unknown or invalid field
 * @example resolveConfig({ network: 'r18', rec: 'synthetic', num_epoch: 2 });
 */
export function resolveConfig(raw: unknown): TrainConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw bad('(root)', 'a JSON object', raw);
  const given = raw as Record<string, unknown>;
  const known = new Set([...Object.keys(CONFIG_DEFAULTS), 'rec']);
  for (const k of Object.keys(given)) {
    if (!known.has(k)) throw new FacecudaError('INVALID_ARGUMENT', `config field '${k}' is unknown (known: ${[...known].sort().join(', ')})`);
  }
  const o: Record<string, unknown> = { ...CONFIG_DEFAULTS, ...given };
  if (typeof o.rec !== 'string' || !o.rec) throw bad('rec', "a RecordIO prefix, an image folder or 'synthetic'", o.rec);
  if (!NETWORKS.includes(o.network as (typeof NETWORKS)[number])) throw bad('network', NETWORKS.join(' | '), o.network);
  if (!['sgd', 'adamw'].includes(o.optimizer as string)) throw bad('optimizer', "'sgd' or 'adamw'", o.optimizer);
  let margins = o.margin_list as unknown;
  if (!Array.isArray(margins) || margins.length !== 3 || !margins.every((m) => typeof m === 'number' && Number.isFinite(m))) {
    throw bad('margin_list', 'three numbers [m1, m2, m3]', margins);
  }
  let loss = o.loss as string;
  if (!LOSSES.includes(loss as (typeof LOSSES)[number])) throw bad('loss', LOSSES.join(' | '), loss);
  if ('loss' in given) {
    if (loss === 'arcface') margins = [1, 0.5, 0];
    else if (loss === 'cosface') margins = [1, 0, 0.4];
  } else {
    const [m1, m2, m3] = margins as number[];
    loss = m1 === 1 && m3 === 0 && m2 > 0 ? 'arcface' : m1 === 1 && m2 === 0 && m3 > 0 ? 'cosface' : 'combined';
  }
  const lrSteps = o.lr_steps;
  if (lrSteps !== null && (!Array.isArray(lrSteps) || !lrSteps.every((e) => Number.isInteger(e) && e >= 0))) {
    throw bad('lr_steps', 'null or an array of epoch numbers', lrSteps);
  }
  const vt = o.val_targets;
  if (!Array.isArray(vt) || !vt.every((v) => typeof v === 'string')) throw bad('val_targets', 'an array of .bin paths or names', vt);
  for (const k of ['fp16'] as const) if (typeof o[k] !== 'boolean') throw bad(k, 'a boolean', o[k]);
  if (o.amp_dtype !== 'fp16' && o.amp_dtype !== 'bf16') throw bad('amp_dtype', "'fp16' or 'bf16'", o.amp_dtype);
  for (const k of ['output', 'device'] as const) if (typeof o[k] !== 'string') throw bad(k, 'a string', o[k]);
  if (o.synthetic === null || typeof o.synthetic !== 'object' || Array.isArray(o.synthetic)) throw bad('synthetic', 'an object of SyntheticFaces options', o.synthetic);
  return {
    network: o.network as TrainConfig['network'],
    embedding_size: num(o, 'embedding_size', 1, 65536, true),
    loss: loss as TrainConfig['loss'],
    margin_list: margins as [number, number, number],
    sample_rate: num(o, 'sample_rate', 1e-6, 1),
    batch_size: num(o, 'batch_size', 2, 1 << 16, true),
    optimizer: o.optimizer as TrainConfig['optimizer'],
    lr: num(o, 'lr', 0, 100),
    momentum: num(o, 'momentum', 0, 1),
    weight_decay: num(o, 'weight_decay', 0, 10),
    num_epoch: num(o, 'num_epoch', 0, 100000, true),
    warmup_epoch: num(o, 'warmup_epoch', -1, 100000),
    lr_steps: lrSteps as number[] | null,
    rec: o.rec,
    val_targets: vt as string[],
    fp16: o.fp16 as boolean,
    output: o.output as string,
    seed: num(o, 'seed', 0, Number.MAX_SAFE_INTEGER, true),
    num_workers: num(o, 'num_workers', 0, 256, true),
    frequent: num(o, 'frequent', 1, 1e9, true),
    verbose: num(o, 'verbose', 1, 1e12, true),
    device: o.device as string,
    input_size: num(o, 'input_size', 16, 1024, true),
    synthetic: o.synthetic as Record<string, unknown>,
    base_width: num(o, 'base_width', 1, 1024, true),
    amp_dtype: o.amp_dtype as TrainConfig['amp_dtype'],
  };
}
