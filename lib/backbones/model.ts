/**
 * Backbone models: an architecture of {@link ./arch} executed by the native engine, forward and
 * backward, with its parameters, gradients and BatchNorm statistics owned natively.
 *
 * | entry point | models |
 * |---|---|
 * | {@link Backbone.create} | 'r18', 'r34', 'r50', 'r100', 'r200', 'mbf', 'mbf_large' (arcface_torch get_model names) |
 * | {@link IResNet.create} | IResNet by depth or name (SPEC §8.1) |
 * | {@link MobileFaceNet.create} | MobileFaceNet (SPEC §8.2) |
 * | {@link Backbone.fromArch} | any {@link BackboneArch} graph of the same node kinds |
 * | {@link Backbone.load} | a safetensors file written by {@link Backbone.save} |
 *
 * Semantics follow PyTorch: in training mode (the default) BatchNorm normalizes with the batch
 * statistics and updates running_mean / running_var (momentum 0.1, unbiased variance) and
 * num_batches_tracked, and Dropout draws a fresh mask per forward; in eval mode BatchNorm uses the
 * running statistics and Dropout is the identity. `backward` differentiates the last forward;
 * parameter gradients ACCUMULATE until {@link Backbone.zeroGrad}. IResNet's `features.weight` is
 * frozen (a parameter without a gradient).
 *
 * Parameters start from the arch's init specs (N(0, 0.1²) convs for IResNet, kaiming for
 * MobileFaceNet, PyTorch's Linear defaults, BatchNorm 1/0, PReLU 0.25), drawn by a counter-based
 * generator from `seed`: the same seed gives the same weights on every machine.
 *
 * Every call is one job on the device's queue: a whole forward or backward runs natively without
 * returning to JavaScript between layers. The executor runs on the CPU for now; a CUDA device is
 * refused with `NOT_IMPLEMENTED`.
 *
 * @example
 * const model = IResNet.create('r50', { seed: 1 });
 * const emb = await model.eval().forward(x);           // x [N, 3, 112, 112] normalized as (v/255 − 0.5)/0.5
 * await model.save('r50.safetensors', { license: 'MIT', provenance: 'my run 42' });
 * const again = await Backbone.load('r50.safetensors');
 */
import { addon } from '../binding';
import { resolveDevice, DeviceName, DeviceSpec } from '../device';
import { FacecudaError, invalidParameterError, outOfRangeError, withCallSite } from '../errors';
import { ImportedTensor, OnnxModel, parseOnnx, readOnnx, recognizeOnnx } from '../onnx/import';
import { translateOnnx } from '../onnx/translate';
import { readSafetensors, readSafetensorsHeader, writeSafetensors } from '../safetensors';
import { version } from '../system';
import { Tensor, tensorArg } from '../tensor';
import { assertBool, assertInteger, assertKnownOptions, assertString, is, optionsObject } from '../validate';
import {
  AnyArchNode, ArchNode, ArchOp, BACKBONE_NAMES, BackboneArch, arcfacePreprocessing, backboneArch, foldBatchNorms, BackboneName, IResNetDepth, InitSpec, Preprocessing,
  TensorSpec, inferShapes, iresnetArch, mobileFaceNetArch, parameterCount as archParameterCount, stateDictTensors, ZOO_BACKBONE_NAMES, ZooArchOptions, ZooBackboneName,
} from './arch';
import type { Binding } from '../binding';

// #region native contract (the addon's NativeModel; typed here, next to its only user)

/** One tensor of the native description. */
interface NativeTensorDesc {
  name: string;
  shape: number[];
  dtype: 'float32' | 'int64';
  buffer: boolean;
  trainable: boolean;
  init: { kind: 'constant' | 'normal' | 'uniform'; a: number; b: number };
}

/** One node of the native description (only its kind's attributes are read). */
interface NativeNodeDesc {
  kind: AnyArchNode['op'];
  id: string;
  inputs: number[];
  channels?: number;
  height?: number;
  width?: number;
  inC?: number;
  outC?: number;
  kernel?: number;
  stride?: number;
  padding?: number;
  groups?: number;
  features?: number;
  eps?: number;
  momentum?: number;
  frozenWeight?: boolean;
  p?: number;
  weight?: number;
  bias?: number;
  runningMean?: number;
  runningVar?: number;
  numBatchesTracked?: number;
  // second backbone batch (SPEC-BACKBONES §9): native/include/facecuda/model.h's NodeDesc
  asymmetricPadding?: number[];
  form?: 'torch' | 'keras';
  layout?: 'last' | 'channels';
  dim?: number;
  heads?: number;
  scale?: number;
  count?: number;
  tokens?: number;
  hiddenDim?: number;
  temperature?: number;
  mode?: 'token' | 'mean' | 'flatten';
  index?: number;
  start?: number;
  length?: number;
  ratio?: number;
}

interface NativeModelDesc {
  tensors: NativeTensorDesc[];
  nodes: NativeNodeDesc[];
  output: number;
}

interface NativeModel {
  setParameter(index: number | string, value: Float32Array | BigInt64Array | Binding.NativeTensor): Promise<void>;
  getParameter(index: number | string): Promise<Float32Array | BigInt64Array>;
  parameters(): Promise<{ value: Binding.NativeTensor; grad: Binding.NativeTensor | null }[]>;
  forward(x: Binding.NativeTensor): Promise<Binding.NativeTensor>;
  backward(gradOutput: Binding.NativeTensor, wantInputGrad: boolean): Promise<Binding.NativeTensor | null>;
  zeroGrad(): Promise<void>;
  setTraining(training: boolean): Promise<void>;
  state(): Promise<{ step: number; training: boolean; capacity: number }>;
  setStep(step: number): Promise<void>;
  dispose(): void;
}

type NativeModelClass = new (
  desc: NativeModelDesc,
  options: { device: string; seed: number; threads: number; precision: BackbonePrecision; foldBatchNorm: boolean },
) => NativeModel;

function nativeModelClass(): NativeModelClass {
  const cls = (addon() as unknown as { NativeModel?: NativeModelClass }).NativeModel;
  if (typeof cls !== 'function') {
    throw new FacecudaError('ADDON_LOAD_FAILED', 'the loaded native addon has no NativeModel: rebuild it (npm run build:native)');
  }
  return cls;
}

// #endregion

// #region public types

/** Options of {@link Backbone.create}, {@link IResNet.create} and {@link MobileFaceNet.create}. */
export interface BackboneOptions {
  /** Size of the embedding (default 512). */
  embeddingSize?: number;
  /** IResNet only: dropout probability before fc, in [0, 1) (default 0). */
  dropout?: number;
  /** IResNet only: side of the square input, [16, 1024] (default 112; see iresnetArch). */
  inputSize?: number;
  /** IResNet only: stem and layer1 width, [1, 1024] (default 64; stages baseWidth·[1, 2, 4, 8]; see iresnetArch). */
  baseWidth?: number;
  /**
   * EdgeNeXt/EdgeFace and the transformers only: stochastic depth rate in [0, 1), growing linearly over
   * the blocks (default 0: no drop-path nodes). Seeded per node and step in training, identity in eval.
   */
  dropPathRate?: number;
  /** 'cpu' (the default) or 'cuda' / 'cuda:N'. */
  device?: DeviceSpec;
  /** Seed of the parameter init and of Dropout's masks (default 0). */
  seed?: number;
  /** CPU threads (default 0 = the whole pool). */
  threads?: number;
  /** See {@link BackboneRuntimeOptions.precision}. */
  precision?: BackbonePrecision;
  /** See {@link BackboneRuntimeOptions.foldBatchNorm}. */
  foldBatchNorm?: boolean;
}

/**
 * Arithmetic of the convolutions and Linear layers: 'fp32' (default); 'bf16' (bf16 operands, fp32
 * accumulation; activations, master weights and BatchNorm statistics stay fp32); 'fp16' (fp16
 * operands and, on CUDA, fp16 convolution outputs, fp32 accumulation: values beyond ±65504 become
 * ±Inf and small gradients underflow, so train it with a {@link GradScaler}; on the CPU it is an
 * emulation for testing, slower than fp32); 'tf32' (CUDA tensor cores; refused on the CPU).
 */
export type BackbonePrecision = 'fp32' | 'tf32' | 'bf16' | 'fp16';

/** Options of {@link Backbone.fromArch}, {@link Backbone.load} and {@link Backbone.loadOnnx}. */
export interface BackboneRuntimeOptions {
  /** 'cpu' (the default) or 'cuda' / 'cuda:N'. */
  device?: DeviceSpec;
  /** Seed of the parameter init and of Dropout's masks (default 0). */
  seed?: number;
  /** CPU threads (default 0 = the whole pool). */
  threads?: number;
  /** Default 'fp32'. */
  precision?: BackbonePrecision;
  /**
   * In eval mode, fold each conv/linear → BatchNorm pair into the layer (default true): one pass
   * instead of two, same results within float rounding. Gradients after an eval forward stay those
   * of the unfolded graph.
   */
  foldBatchNorm?: boolean;
}

/** One entry of {@link Backbone.parameters}. */
export interface BackboneParameter {
  /** The PyTorch state-dict key, e.g. 'layer1.0.conv1.weight'. */
  name: string;
  /** The model's own tensor (shared storage: updating it in place updates the model). */
  value: Tensor;
  /** Its accumulated gradient (shared storage), or null for buffers and frozen parameters. */
  grad: Tensor | null;
  /** Whether an optimizer should update it. */
  trainable: boolean;
  /** 'parameter', or 'buffer' (BatchNorm running statistics, only with `includeBuffers`). */
  kind: 'parameter' | 'buffer';
}

/** Options of {@link Backbone.save}. */
export interface SaveOptions {
  /** The weights' licence, recorded as `license` (default: the model's, 'unspecified' for a new one). */
  license?: string;
  /** Where the weights come from, recorded as `provenance` (default: the model's). */
  provenance?: string;
  /** More string metadata (keys must not start with 'facecuda.'). */
  metadata?: Record<string, string>;
}

/** A value {@link Backbone.loadStateDict} accepts for one tensor. */
export type StateDictValue = Tensor | Float32Array | BigInt64Array | { shape: readonly number[]; data: Float32Array | BigInt64Array };

/** What {@link Backbone.loadStateDict} reports. */
export interface LoadStateDictResult {
  /** Tensors of the model not in the map (they keep their values). */
  missing: string[];
  /** Names in the map that the model does not have (ignored). */
  unexpected: string[];
}

// #endregion

// #region helpers

/** Metadata keys that {@link Backbone.save} writes. */
const META = {
  version: 'facecuda.version',
  architecture: 'facecuda.architecture',
  config: 'facecuda.config',
  preprocessing: 'facecuda.preprocessing',
  reference: 'facecuda.reference',
  graph: 'facecuda.graph',
  license: 'license',
  provenance: 'provenance',
} as const;

function nativeInit(init: InitSpec): NativeTensorDesc['init'] {
  switch (init.kind) {
    case 'constant':
      return { kind: 'constant', a: init.value, b: 0 };
    case 'normal':
      return { kind: 'normal', a: init.mean, b: init.std };
    case 'uniform':
      return { kind: 'uniform', a: init.low, b: init.high };
    case 'kaimingNormal':
      return { kind: 'normal', a: 0, b: init.std };
    case 'kaimingUniform':
      return { kind: 'uniform', a: -init.bound, b: init.bound };
  }
}

/** The node ops the native executor runs: every {@link ArchOp} (SPEC-BACKBONES §9 included). */
const NATIVE_OPS: ReadonlySet<ArchOp> = new Set<ArchOp>([
  'input', 'conv2d', 'batchnorm2d', 'batchnorm1d', 'prelu', 'relu', 'dropout', 'linear', 'flatten', 'add',
  'relu6', 'hardsigmoid', 'hardswish', 'silu', 'sigmoid', 'gelu', 'globalavgpool', 'mul', 'layernorm', 'layerscale',
  'attention', 'xca', 'totokens', 'tomap', 'prependtokens', 'posembed', 'fourierposembed', 'tokenpool', 'tokenmask',
  'droppath', 'concat', 'slice', 'average',
]);

/**
 * Refuses, before the addon sees it, a graph with a node the native executor cannot run: an op
 * outside {@link NATIVE_OPS} (a hand-made or loaded graph), or token masking at a ratio above 0 (a
 * training-time augmentation of insightface's ViT; the presets use 0).
 *
 * The assertion narrows to `BackboneArch` for the typing of the members that only handle the first
 * batch's ops (ONNX export checks its ops itself at run time).
 *
 * @throws {FacecudaError} `NOT_IMPLEMENTED` naming the node, its op and the model.
 */
function assertNativeSupport(arch: BackboneArch<AnyArchNode>): asserts arch is BackboneArch {
  for (const node of arch.nodes) {
    let what: string | null = null;
    if (!NATIVE_OPS.has(node.op)) what = `op '${String(node.op)}'`;
    else if (node.op === 'tokenmask' && node.ratio !== 0) what = `op 'tokenmask' with ratio ${node.ratio}`;
    if (what !== null) {
      throw new FacecudaError('NOT_IMPLEMENTED', `model '${arch.name}': ${what} (node '${node.id}') is not supported by the native executor`);
    }
  }
}

/** The native description of an arch (tensors in state-dict order, nodes by index). */
function describe(arch: BackboneArch<AnyArchNode>): NativeModelDesc {
  const specs = stateDictTensors(arch);
  const tensorIndex = new Map(specs.map((t, i) => [t.name, i]));
  const nodeIndex = new Map(arch.nodes.map((n, i) => [n.id, i]));
  const tensors: NativeTensorDesc[] = specs.map((t) => ({
    name: t.name,
    shape: [...t.shape],
    dtype: t.dtype,
    buffer: t.kind === 'buffer',
    trainable: t.trainable,
    init: nativeInit(t.init),
  }));
  const nodes = arch.nodes.map((node): NativeNodeDesc => {
    const d: NativeNodeDesc = { kind: node.op, id: node.id, inputs: node.inputs.map((id) => nodeIndex.get(id) as number) };
    const role = (r: string): number | undefined => {
      const t = node.tensors.find((s) => s.role === r);
      return t ? tensorIndex.get(t.name) : undefined;
    };
    switch (node.op) {
      case 'input':
        Object.assign(d, { channels: node.channels, height: node.height, width: node.width });
        break;
      case 'conv2d':
        Object.assign(d, { inC: node.inC, outC: node.outC, kernel: node.kernel, stride: node.stride, padding: node.padding, groups: node.groups });
        if (node.asymmetricPadding !== undefined) d.asymmetricPadding = [...node.asymmetricPadding];
        break;
      case 'batchnorm1d':
      case 'batchnorm2d':
        Object.assign(d, {
          features: node.features, eps: node.eps, momentum: node.momentum, frozenWeight: node.frozenWeight,
          runningMean: role('running_mean'), runningVar: role('running_var'), numBatchesTracked: role('num_batches_tracked'),
        });
        break;
      case 'prelu':
        d.channels = node.channels;
        break;
      case 'dropout':
        d.p = node.p;
        break;
      case 'linear':
        Object.assign(d, { inC: node.in, outC: node.out });
        break;
      case 'hardsigmoid':
        d.form = node.form;
        break;
      case 'layernorm':
        Object.assign(d, { features: node.features, eps: node.eps, layout: node.layout });
        break;
      case 'layerscale':
        Object.assign(d, { channels: node.channels, layout: node.layout, weight: role(node.tensors[0].role) });
        break;
      case 'attention':
        Object.assign(d, { dim: node.dim, heads: node.heads, scale: node.scale });
        break;
      case 'xca':
        Object.assign(d, { dim: node.dim, heads: node.heads, weight: role('temperature') });
        break;
      case 'tomap':
        Object.assign(d, { height: node.height, width: node.width });
        break;
      case 'prependtokens':
        Object.assign(d, { count: node.count, dim: node.dim, weight: role('cls_token'), bias: role('dist_token') });
        break;
      case 'posembed':
        Object.assign(d, { tokens: node.tokens, dim: node.dim, weight: role('pos_embed') });
        break;
      case 'fourierposembed':
        Object.assign(d, { dim: node.dim, hiddenDim: node.hiddenDim, temperature: node.temperature });
        break;
      case 'tokenpool':
        Object.assign(d, { mode: node.mode, index: node.index });
        break;
      case 'tokenmask':
        Object.assign(d, { ratio: node.ratio, dim: node.dim, weight: role('mask_token') });
        break;
      case 'droppath':
        d.p = node.p;
        break;
      case 'slice':
        Object.assign(d, { start: node.start, length: node.length });
        break;
      default:
        break;
    }
    d.weight ??= role('weight');
    d.bias ??= role('bias');
    return d;
  });
  return { tensors, nodes, output: nodeIndex.get(arch.output) as number };
}

/** Typed-array checks that hold across realms (arrays the addon creates belong to the main realm). */
function isF32(v: unknown): v is Float32Array {
  return Object.prototype.toString.call(v) === '[object Float32Array]';
}
function isI64(v: unknown): v is BigInt64Array {
  return Object.prototype.toString.call(v) === '[object BigInt64Array]';
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

type Runtime = Required<Omit<BackboneRuntimeOptions, 'device'>> & { device: DeviceName };

const RUNTIME_KEYS = ['device', 'seed', 'threads', 'precision', 'foldBatchNorm'] as const;

function runtimeOptions(options: unknown, fn: string, extra: readonly string[] = []): Runtime {
  const opts = optionsObject(options, 'options');
  assertKnownOptions(opts, fn, [...RUNTIME_KEYS, ...extra]);
  const seed = opts.seed ?? 0;
  const threads = opts.threads ?? 0;
  const precision = opts.precision ?? 'fp32';
  const foldBatchNorm = opts.foldBatchNorm ?? true;
  assertInteger(seed, 'seed', 0);
  assertInteger(threads, 'threads', 0, 4096);
  if (!is.string(precision)) throw invalidParameterError('precision', "one of 'fp32', 'tf32', 'bf16', 'fp16'", precision);
  if (!is.inArray(precision, ['fp32', 'tf32', 'bf16', 'fp16'])) throw outOfRangeError('precision', "one of 'fp32', 'tf32', 'bf16', 'fp16'", precision);
  assertBool(foldBatchNorm, 'foldBatchNorm');
  const device = resolveDevice(opts.device ?? 'cpu', 'device');
  if (precision === 'tf32' && device === 'cpu') throw invalidParameterError('precision', "'fp32', 'bf16' or 'fp16' on the CPU (tf32 is a CUDA tensor-core mode)", precision);
  return { device, seed, threads, precision: precision as BackbonePrecision, foldBatchNorm };
}

function corrupt(path: string, message: string): FacecudaError {
  return new FacecudaError('CORRUPT_FILE', `${path}: ${message}`);
}

function parseJson(path: string, key: string, text: string | undefined): unknown {
  if (text === undefined) throw corrupt(path, `metadata has no '${key}' (not a facecuda backbone checkpoint; read its tensors with loadStateDict)`);
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw corrupt(path, `metadata '${key}' is not valid JSON`);
  }
}

/**
 * Whether a checkpoint must carry the whole graph: a custom graph, a folded one, or one whose
 * preprocessing is not what its builder gives (an imported model that normalizes differently).
 */
function needsGraph(arch: BackboneArch): boolean {
  const config = arch.config as { family?: string };
  if (config.family !== 'iresnet' && config.family !== 'mobilefacenet') return true;
  if (arch.folds && arch.folds.length > 0) return true;
  return JSON.stringify(arch.preprocessing) !== JSON.stringify(arcfacePreprocessing(arch.preprocessing.inputSize));
}

/** Rebuilds an arch from a checkpoint's metadata. */
function archFromMetadata(path: string, metadata: Record<string, string>): BackboneArch {
  const name = metadata[META.architecture];
  if (name === undefined) throw corrupt(path, `metadata has no '${META.architecture}' (not a facecuda backbone checkpoint; read its tensors with loadStateDict)`);
  const config = parseJson(path, META.config, metadata[META.config]) as Record<string, unknown>;
  if (!is.object(config)) throw corrupt(path, `metadata '${META.config}' is not an object`);
  let arch: BackboneArch;
  try {
    if (metadata[META.graph] !== undefined) {
      // A custom, folded or re-normalized graph: the graph itself is the truth.
      arch = parseJson(path, META.graph, metadata[META.graph]) as BackboneArch;
      if (!is.object(arch) || !Array.isArray(arch.nodes) || typeof arch.output !== 'string') throw new Error('not a graph');
      inferShapes(arch);
    } else if (config.family === 'iresnet') {
      arch = iresnetArch(config.depth as IResNetDepth, {
        embeddingSize: config.embeddingSize as number, dropout: config.dropout as number, inputSize: config.inputSize as number,
        ...(config.baseWidth !== undefined ? { baseWidth: config.baseWidth as number } : {}), // absent: 64, the reference's
      });
    } else if (config.family === 'mobilefacenet') {
      arch = mobileFaceNetArch({ embeddingSize: config.embeddingSize as number, blocks: config.blocks as number[], scale: config.scale as number });
    } else {
      arch = parseJson(path, META.graph, metadata[META.graph]) as BackboneArch;
      if (!is.object(arch) || !Array.isArray(arch.nodes) || typeof arch.output !== 'string') throw new Error('not a graph');
      inferShapes(arch);
    }
  } catch (e) {
    throw corrupt(path, `metadata '${META.config}' does not describe a valid architecture (${(e as Error).message})`);
  }
  if (arch.name !== name) throw corrupt(path, `architecture '${name}' does not match its configuration (which builds '${arch.name}')`);
  const pre = metadata[META.preprocessing];
  if (pre !== undefined && JSON.stringify(parseJson(path, META.preprocessing, pre)) !== JSON.stringify(arch.preprocessing)) {
    throw corrupt(path, `metadata '${META.preprocessing}' disagrees with the preprocessing of ${name} (${JSON.stringify(arch.preprocessing)})`);
  }
  return arch;
}

// #endregion

/**
 * A backbone model: an architecture, its parameters and buffers, on a device.
 *
 * @example
 * const model = Backbone.create('r18', { seed: 7 });
 * const y = await model.forward(x);                 // [N, 512]
 * await model.backward(gradY);                      // accumulates parameter gradients
 * for (const p of await model.parameters()) if (p.grad) { ... }  // optimizer step in place
 */
export class Backbone {
  /** The graph this model executes. */
  readonly arch: BackboneArch;
  readonly device: DeviceName;
  /** Seed of the init and of Dropout's masks. */
  readonly seed: number;
  /** Arithmetic of the convolutions and Linear layers. */
  readonly precision: BackbonePrecision;
  /** The preprocessing the model expects (also recorded in saved files). */
  readonly preprocessing: Preprocessing;
  /** Licence of the weights ('unspecified' unless set or loaded). */
  license: string;
  /** Where the weights come from. */
  provenance: string;
  readonly #native: NativeModel;
  readonly #specs: TensorSpec[];
  readonly #index: Map<string, number>;
  #training = true;
  #disposed = false;

  /** @internal Use {@link Backbone.create}, {@link Backbone.fromArch} or {@link Backbone.load}. */
  protected constructor(arch: BackboneArch, rt: Runtime) {
    assertNativeSupport(arch);
    const { device, seed, threads, precision, foldBatchNorm } = rt;
    this.arch = arch;
    this.device = device;
    this.seed = seed;
    this.precision = precision;
    this.preprocessing = arch.preprocessing;
    this.license = 'unspecified';
    this.provenance = `initialized by facecuda ${version()} (seed ${seed})`;
    this.#specs = stateDictTensors(arch);
    this.#index = new Map(this.#specs.map((t, i) => [t.name, i]));
    const Native = nativeModelClass();
    this.#native = new Native(describe(arch), { device, seed, threads, precision, foldBatchNorm });
  }

  /**
   * A new model by its arcface_torch name, initialized from `seed`.
   *
   * @throws TypeError / RangeError for bad options; `NOT_IMPLEMENTED` for a CUDA device
   * @example const mbf = Backbone.create('mbf', { embeddingSize: 512, seed: 1 });
   */
  static create(name: BackboneName | ZooBackboneName, options?: BackboneOptions): Backbone {
    // Validate arguments
    if (!is.string(name)) throw invalidParameterError('name', `one of ${BACKBONE_NAMES.map((n) => `'${n}'`).join(', ')}`, name);
    if (is.inArray(name, ZOO_BACKBONE_NAMES)) {
      // Second-batch backbones (SPEC-BACKBONES): embeddingSize, and dropPathRate for the EdgeNeXt and transformer presets.
      const zooOpts = optionsObject(options, 'options');
      assertKnownOptions(zooOpts, 'Backbone.create', ['embeddingSize', 'dropPathRate', ...RUNTIME_KEYS]);
      const zooRt = runtimeOptions(Object.fromEntries(RUNTIME_KEYS.filter((k) => zooOpts[k] !== undefined).map((k) => [k, zooOpts[k]])), 'Backbone.create');
      const archOpts = Object.fromEntries((['embeddingSize', 'dropPathRate'] as const).filter((k) => zooOpts[k] !== undefined).map((k) => [k, zooOpts[k]]));
      const zooArch = backboneArch(name, archOpts as ZooArchOptions);
      assertNativeSupport(zooArch);
      return new Backbone(zooArch, zooRt);
    }
    if (!is.inArray(name, BACKBONE_NAMES)) throw outOfRangeError('name', `one of ${BACKBONE_NAMES.map((n) => `'${n}'`).join(', ')}`, name);
    const opts = optionsObject(options, 'options');
    assertKnownOptions(opts, 'Backbone.create', ['embeddingSize', 'dropout', 'inputSize', 'baseWidth', ...RUNTIME_KEYS]);
    const { embeddingSize, dropout, inputSize, baseWidth } = opts as BackboneOptions;
    const rt = runtimeOptions(Object.fromEntries(RUNTIME_KEYS.filter((k) => opts[k] !== undefined).map((k) => [k, opts[k]])), 'Backbone.create');

    // Interpret options
    let arch: BackboneArch;
    if (name === 'mbf' || name === 'mbf_large') {
      const iresnetOnly = (['dropout', 'inputSize', 'baseWidth'] as const).find((k) => opts[k] !== undefined);
      if (iresnetOnly !== undefined) {
        throw invalidParameterError(iresnetOnly, 'no value (an IResNet-only option; MobileFaceNet has none of dropout, inputSize, baseWidth)', opts[iresnetOnly]);
      }
      arch = name === 'mbf' ? mobileFaceNetArch({ embeddingSize }) : mobileFaceNetArch({ embeddingSize, blocks: [2, 8, 12, 4], scale: 4 });
    } else {
      const depth = Number(name.slice(1)) as IResNetDepth;
      arch = iresnetArch(depth, { ...(embeddingSize !== undefined ? { embeddingSize } : {}), ...(dropout !== undefined ? { dropout } : {}), ...(inputSize !== undefined ? { inputSize } : {}), ...(baseWidth !== undefined ? { baseWidth } : {}) });
    }
    return new Backbone(arch, rt);
  }

  /**
   * A model of any graph made of the arch node kinds (validated by inferShapes and natively).
   *
   * @throws `SHAPE_MISMATCH` / `INVALID_ARGUMENT` for an inconsistent graph
   * @example const model = Backbone.fromArch(myArch, { seed: 3 });
   */
  static fromArch(arch: BackboneArch | BackboneArch<AnyArchNode>, options?: BackboneRuntimeOptions): Backbone {
    if (!is.object(arch) || !Array.isArray((arch as BackboneArch).nodes)) throw invalidParameterError('arch', 'a BackboneArch', arch);
    const rt = runtimeOptions(options, 'Backbone.fromArch');
    inferShapes(arch);
    assertNativeSupport(arch);
    return new Backbone(arch, rt);
  }

  /**
   * Loads a file written by {@link Backbone.save}: rebuilds the architecture from the metadata,
   * checks that the file holds exactly its tensors with their shapes and dtypes, and loads them.
   *
   * @throws `IO_ERROR` when the file cannot be read; `CORRUPT_FILE` for a malformed file, missing or
   *   invalid metadata, a missing or unexpected tensor, or a wrong dtype; `SHAPE_MISMATCH` for a
   *   tensor of the wrong shape
   * @example const model = await Backbone.load('r50.safetensors', { device: 'cpu' });
   */
  static async load(path: string, options?: BackboneRuntimeOptions): Promise<Backbone> {
    assertString(path, 'path');
    const rt = runtimeOptions(options, 'Backbone.load');
    const header = await readSafetensorsHeader(path);
    const arch = archFromMetadata(path, header.metadata);
    const specs = stateDictTensors(arch);
    for (const spec of specs) {
      const t = header.tensors.get(spec.name);
      if (!t) throw corrupt(path, `tensor '${spec.name}' of ${arch.name} is missing`);
      if (t.tensorDType !== spec.dtype) throw corrupt(path, `tensor '${spec.name}' has dtype ${t.dtype}, expected ${spec.dtype === 'float32' ? 'F32' : 'I64'}`);
      if (!sameShape(t.shape, spec.shape)) {
        throw new FacecudaError('SHAPE_MISMATCH', `${path}: tensor '${spec.name}' has shape [${t.shape.join(', ')}], expected [${spec.shape.join(', ')}] for ${arch.name}`);
      }
    }
    if (header.tensors.size !== specs.length) {
      const known = new Set(specs.map((s) => s.name));
      const extra = [...header.tensors.keys()].filter((n) => !known.has(n));
      throw corrupt(path, `unexpected tensor${extra.length > 1 ? 's' : ''} for ${arch.name}: ${extra.slice(0, 5).map((n) => `'${n}'`).join(', ')}${extra.length > 5 ? ', …' : ''}`);
    }
    const model = new Backbone(arch, rt);
    try {
      // Read on the host; setParameter copies to the model's device.
      const { tensors, metadata } = await readSafetensors(path, { device: 'cpu' });
      try {
        await Promise.all(specs.map((s, i) => model.#native.setParameter(i, tensorArg(tensors.get(s.name), s.name))));
      } finally {
        for (const t of tensors.values()) t.dispose();
      }
      model.license = metadata[META.license] ?? 'unspecified';
      model.provenance = metadata[META.provenance] ?? `loaded from ${path}`;
    } catch (e) {
      model.dispose();
      throw e;
    }
    return model;
  }

  /**
   * Imports an ONNX model of IResNet or MobileFaceNet: as PyTorch exports it from arcface_torch
   * (BatchNorm folded or not) or as insightface ships it (e.g. `w600k_r50.onnx`, whose convolutions
   * carry their BatchNorms as biases). The graph is recognised structurally ({@link recognizeOnnx});
   * folded layers become convolutions with a bias ({@link foldBatchNorms}), and a normalization the
   * graph applies to its own input (insightface's Sub/Mul prefix) becomes the model's
   * `preprocessing` (mean/std) instead of a layer, so `forward` takes the normalized input as
   * for every backbone. The model comes back in eval mode (an ONNX graph is an inference graph).
   *
   * Any other graph (MobileNetV3, EfficientNet, GhostNet/GhostFaceNets, EdgeNeXt/EdgeFace,
   * ViT/DeiT, insightface ViT, as PyTorch exports them) is translated layer by layer
   * ({@link translateOnnx}): the model is named `onnx:<graph name>`, its tensors keep the export's
   * state-dict names where the file has them, and `save` writes the graph with the weights. When
   * those tensors are exactly one preset's (timm ViT/DeiT, insightface ViT, EdgeNeXt/EdgeFace
   * exports; not CNN exports, whose BatchNorms are folded) and the preset with them gives the same
   * embeddings, the preset itself is returned (its name, e.g. 'edgeface_s_gamma_05').
   *
   * @param source a path, or the file's bytes
   * @throws `IO_ERROR` when the file cannot be read; `CORRUPT_FILE` for a malformed protobuf;
   *   `NOT_IMPLEMENTED` naming the first node that has no facecuda layer, with what was expected
   * @example
   * const model = await Backbone.loadOnnx('w600k_r50.onnx');
   * model.preprocessing.mean; // [127.5, 127.5, 127.5]
   * const emb = await model.forward(x);
   */
  static async loadOnnx(source: string | Uint8Array, options?: BackboneRuntimeOptions): Promise<Backbone> {
    const site = new Error();
    // Validate arguments
    if (!is.string(source) && !(ArrayBuffer.isView(source) && Object.prototype.toString.call(source) === '[object Uint8Array]')) {
      throw invalidParameterError('source', 'a path or a Uint8Array holding an ONNX file', source);
    }
    const rt = runtimeOptions(options, 'loadOnnx');
    // Interpret options
    const onnx = is.string(source) ? await withCallSite(readOnnx(source), site) : parseOnnx(source);
    let rec: ReturnType<typeof recognizeOnnx>;
    try {
      rec = recognizeOnnx(onnx);
    } catch (e) {
      if (!(e instanceof FacecudaError) || e.code !== 'NOT_IMPLEMENTED') throw e;
      // Not an IResNet/MobileFaceNet graph: translate it layer by layer (the second backbone batch).
      const t = translateOnnx(onnx);
      const model = await Backbone.#imported(onnx, t.arch as unknown as BackboneArch, t.tensors, rt, site);
      return (await Backbone.#asPreset(model, t.tensors, rt, site)) ?? model;
    }
    let arch = rec.folds.length > 0 ? foldBatchNorms(rec.arch, rec.folds) : rec.arch;
    if (rec.inputNormalization) {
      const { mean, std } = rec.inputNormalization;
      arch = Object.freeze({
        ...arch,
        preprocessing: Object.freeze({ ...arch.preprocessing, mean: Object.freeze([...mean] as [number, number, number]), std: Object.freeze([...std] as [number, number, number]) }),
      });
    }
    return Backbone.#imported(onnx, arch, rec.tensors, rt, site);
  }

  /**
   * A translated graph that is one of the second batch's presets under another name: when its tensors
   * are exactly a preset's (names and shapes; mask_token, which no inference graph uses, may be
   * missing and stays at its init) and the preset with those tensors gives the same embeddings on a
   * fixed input (1e-5 of the largest), the preset model (its name, its training graph, a checkpoint
   * without the graph); else null. Exports with folded BatchNorms never match (their names differ).
   */
  static async #asPreset(model: Backbone, tensors: Map<string, ImportedTensor>, rt: Runtime, site: Error): Promise<Backbone | null> {
    const E = model.embeddingSize;
    const have = new Map([...tensors].map(([k, v]) => [k, v.shape.join()]));
    for (const name of ZOO_BACKBONE_NAMES) {
      const arch = backboneArch(name, { embeddingSize: E } as ZooArchOptions);
      if (arch.inputShape.join() !== model.inputShape.join()) continue;
      const specs = stateDictTensors(arch).filter((t) => t.dtype === 'float32' && t.role !== 'mask_token');
      if (specs.length !== have.size || !specs.every((t) => have.get(t.name) === t.shape.join())) continue;
      const preset = new Backbone(arch as unknown as BackboneArch, rt);
      let same = false;
      try {
        await withCallSite(preset.loadStateDict(tensors, { strict: false }), site);
        preset.license = model.license;
        preset.provenance = `${model.provenance}, recognised as ${name}`;
        preset.eval();
        const [c, h, w] = arch.inputShape;
        const x = Tensor.from(Float32Array.from({ length: 2 * c * h * w }, (_, i) => Math.sin(0.0173 * i) * Math.cos(0.00071 * i)), [2, c, h, w], { device: model.device });
        try {
          const a = (await (await preset.forward(x)).toArray()) as Float32Array;
          const b = (await (await model.forward(x)).toArray()) as Float32Array;
          let scale = 1e-30;
          let diff = 0;
          for (let i = 0; i < b.length; i++) {
            scale = Math.max(scale, Math.abs(b[i]));
            diff = Math.max(diff, Math.abs(a[i] - b[i]));
          }
          same = diff <= 1e-5 * scale;
        } finally {
          x.dispose();
        }
      } finally {
        if (!same) preset.dispose();
      }
      if (same) {
        model.dispose();
        return preset;
      }
    }
    return null;
  }

  /** A model of an imported graph: its tensors loaded, license and provenance from the file, in eval mode. */
  static async #imported(onnx: OnnxModel, arch: BackboneArch, tensors: Map<string, ImportedTensor>, rt: Runtime, site: Error): Promise<Backbone> {
    const model = new Backbone(arch, rt);
    try {
      await withCallSite(model.loadStateDict(tensors), site);
    } catch (e) {
      model.dispose();
      throw e;
    }
    const meta = new Map(onnx.metadataProps.map((e) => [e.key, e.value]));
    model.license = meta.get('license') ?? 'unspecified';
    const producer = onnx.producerName ? ` (${onnx.producerName}${onnx.producerVersion ? ` ${onnx.producerVersion}` : ''})` : '';
    model.provenance = `imported from ${onnx.source}${producer}`;
    return model.eval();
  }

  /** The arcface_torch name ('r50', 'mbf', …). */
  get name(): string {
    return this.arch.name;
  }

  get embeddingSize(): number {
    return this.arch.embeddingSize;
  }

  /** Per-sample input shape [3, H, W]. */
  get inputShape(): readonly number[] {
    return this.arch.inputShape;
  }

  /** True in training mode (the default), false after {@link eval}. */
  get training(): boolean {
    return this.#training;
  }

  #live(): NativeModel {
    if (this.#disposed) throw new FacecudaError('DISPOSED', `this ${this.arch.name} model has been disposed`);
    return this.#native;
  }

  /**
   * The number of parameter elements as PyTorch counts them (frozen ones included, buffers not).
   * @example IResNet.create('r18').parameterCount(); // 24025600
   */
  parameterCount(): number {
    return archParameterCount(this.arch);
  }

  /**
   * Embeddings for a batch. In training mode BatchNorm uses (and updates) batch statistics, which
   * needs at least 2 values per channel (a batch of 1 through IResNet's features BatchNorm1d
   * throws; use eval()).
   *
   * @param x [N, 3, H, W] float32: a Tensor on the model's device or a Float32Array of N·3·H·W values
   * @returns [N, embeddingSize], a new tensor
   * @throws `SHAPE_MISMATCH` for a wrong shape; TypeError for a wrong type; `INVALID_ARGUMENT` for a
   *   batch of 1 in training mode where a BatchNorm would see a single value per channel
   * @example const emb = await model.eval().forward(Tensor.from(pixels, [1, 3, 112, 112]));
   */
  async forward(x: Tensor | Float32Array): Promise<Tensor> {
    const site = new Error();
    // Validate arguments
    const native = this.#live();
    const xt = this.#inputTensor(x);
    try {
      return new Tensor(await withCallSite(native.forward(tensorArg(xt, 'x')), site));
    } finally {
      if (xt !== x) xt.dispose();
    }
  }

  #inputTensor(x: Tensor | Float32Array): Tensor {
    const per = numel(this.arch.inputShape);
    if (isF32(x)) {
      if (x.length === 0 || x.length % per !== 0) {
        throw new FacecudaError('SHAPE_MISMATCH', `x has ${x.length} values, not a positive multiple of ${per} (one [${this.arch.inputShape.join(', ')}] image)`);
      }
      return Tensor.from(x, [x.length / per, ...this.arch.inputShape], { device: this.device });
    }
    if (!(x instanceof Tensor)) throw invalidParameterError('x', 'a Tensor or a Float32Array', x);
    if (x.dtype !== 'float32') throw invalidParameterError('x', 'a float32 Tensor', x.describe());
    if (x.device !== this.device) throw new FacecudaError('INVALID_ARGUMENT', `x is on ${x.device} but the model is on ${this.device}`);
    return x;
  }

  /**
   * Backward of the last forward for the gradient of a loss with respect to its output. Parameter
   * gradients are ADDED to the model's (zero them with {@link zeroGrad}).
   *
   * @param gradOut [N, embeddingSize] (the last forward's output shape), a Tensor or Float32Array
   * @param options `inputGrad: true` to get dL/dx (default false: not computed)
   * @returns dL/dx [N, 3, H, W] with `inputGrad`, else null
   * @throws `INVALID_ARGUMENT` without a forward; `SHAPE_MISMATCH` for a wrong shape
   * @example const dx = await model.backward(dy, { inputGrad: true });
   */
  async backward(gradOut: Tensor | Float32Array, options?: { inputGrad?: boolean }): Promise<Tensor | null> {
    const site = new Error();
    // Apply defaults
    const opts = optionsObject(options, 'options');
    assertKnownOptions(opts, 'backward', ['inputGrad']);
    const inputGrad = opts.inputGrad ?? false;
    // Validate arguments
    assertBool(inputGrad, 'inputGrad');
    const native = this.#live();
    let gt: Tensor;
    if (isF32(gradOut)) {
      const e = this.arch.embeddingSize;
      if (gradOut.length === 0 || gradOut.length % e !== 0) {
        throw new FacecudaError('SHAPE_MISMATCH', `gradOut has ${gradOut.length} values, not a positive multiple of ${e}`);
      }
      gt = Tensor.from(gradOut, [gradOut.length / e, e], { device: this.device });
    } else if (gradOut instanceof Tensor) {
      gt = gradOut;
    } else {
      throw invalidParameterError('gradOut', 'a Tensor or a Float32Array', gradOut);
    }
    // Interpret options
    try {
      const r = await withCallSite(native.backward(tensorArg(gt, 'gradOut'), inputGrad), site);
      return r ? new Tensor(r) : null;
    } finally {
      if (gt !== gradOut) gt.dispose();
    }
  }

  /** Training mode (the default): batch statistics, running-statistics updates, Dropout. */
  train(): this {
    void this.#live().setTraining(true).catch(() => undefined);
    this.#training = true;
    return this;
  }

  /** Eval mode: running statistics, Dropout off, no state changes. */
  eval(): this {
    void this.#live().setTraining(false).catch(() => undefined);
    this.#training = false;
    return this;
  }

  /** Sets every parameter gradient to 0. */
  async zeroGrad(): Promise<void> {
    const site = new Error();
    await withCallSite(this.#live().zeroGrad(), site);
  }

  /** Dropout's step counter (advanced by every training forward) and the activation capacity. */
  async state(): Promise<{ step: number; capacity: number }> {
    const site = new Error();
    const s = await withCallSite(this.#live().state(), site);
    return { step: s.step, capacity: s.capacity };
  }

  /**
   * Sets the Dropout step counter (the next training forward draws its masks from this step): what a
   * checkpoint restores so a resumed run draws the masks the uninterrupted one would have.
   */
  async setStep(step: number): Promise<void> {
    const site = new Error();
    assertInteger(step, 'step', 0);
    await withCallSite(this.#live().setStep(step), site);
  }

  /**
   * The model's tensors in state-dict order with their gradients, sharing the model's storage (an
   * optimizer updates `value` in place from `grad`). Buffers (BatchNorm running statistics) only
   * with `includeBuffers`. Dispose the tensors when done: while a view of a weight is alive, every
   * eval-mode forward folds BatchNorm into the layers again (the view may have been written), which
   * costs a pass over the weights per forward.
   *
   * @example
   * for (const p of await model.parameters()) if (p.grad) sgdStep(p.value, p.grad);
   */
  async parameters(options?: { includeBuffers?: boolean }): Promise<BackboneParameter[]> {
    const site = new Error();
    const opts = optionsObject(options, 'options');
    assertKnownOptions(opts, 'parameters', ['includeBuffers']);
    const includeBuffers = opts.includeBuffers ?? false;
    assertBool(includeBuffers, 'includeBuffers');
    const raw = await withCallSite(this.#live().parameters(), site);
    const out: BackboneParameter[] = [];
    raw.forEach((r, i) => {
      const spec = this.#specs[i];
      if (spec.kind === 'buffer' && !includeBuffers) {
        r.value.dispose();
        if (r.grad) r.grad.dispose();
        return;
      }
      out.push({ name: spec.name, value: new Tensor(r.value), grad: r.grad ? new Tensor(r.grad) : null, trainable: spec.trainable, kind: spec.kind });
    });
    return out;
  }

  /**
   * A copy of one tensor's values by state-dict name (BigInt64Array for num_batches_tracked).
   * @throws `INVALID_ARGUMENT` for an unknown name
   * @example const rm = await model.getParameter('bn1.running_mean');
   */
  async getParameter(name: string): Promise<Float32Array | BigInt64Array> {
    const site = new Error();
    assertString(name, 'name');
    const i = this.#index.get(name);
    if (i === undefined) throw new FacecudaError('INVALID_ARGUMENT', `${this.arch.name} has no tensor named '${name}'`);
    return withCallSite(this.#live().getParameter(i), site);
  }

  /**
   * Copies tensors into the model by state-dict name, e.g. PyTorch weights or the output of
   * `recognizeOnnx` (unfolded). Everything is checked before anything is copied. A missing
   * `num_batches_tracked` is never an error (ONNX does not store it).
   *
   * @param state name → Tensor, Float32Array (BigInt64Array for num_batches_tracked) or { shape, data }
   * @param options `strict` (default true): missing or unexpected names are errors
   * @throws `SHAPE_MISMATCH` for a wrong shape or size; `INVALID_ARGUMENT` in strict mode for a
   *   missing or unexpected name; TypeError for a wrong value type
   * @example await model.loadStateDict(recognizeOnnx(onnx).tensors);
   */
  async loadStateDict(state: Map<string, StateDictValue> | Record<string, StateDictValue>, options?: { strict?: boolean }): Promise<LoadStateDictResult> {
    const site = new Error();
    const opts = optionsObject(options, 'options');
    assertKnownOptions(opts, 'loadStateDict', ['strict']);
    const strict = opts.strict ?? true;
    assertBool(strict, 'strict');
    if (!(state instanceof Map) && !is.object(state)) throw invalidParameterError('state', 'a Map or an object of tensors', state);
    const entries: [string, StateDictValue][] = state instanceof Map ? [...state.entries()] : Object.entries(state);
    const native = this.#live();

    // Validate arguments
    const unexpected: string[] = [];
    const jobs: [number, Float32Array | BigInt64Array | Binding.NativeTensor][] = [];
    const seen = new Set<string>();
    for (const [name, v] of entries) {
      const i = this.#index.get(name);
      if (i === undefined) {
        unexpected.push(name);
        continue;
      }
      seen.add(name);
      const spec = this.#specs[i];
      const isType = spec.dtype === 'float32' ? isF32 : isI64;
      const typeName = spec.dtype === 'float32' ? 'Float32Array' : 'BigInt64Array';
      if (v instanceof Tensor) {
        if (v.dtype !== spec.dtype) throw invalidParameterError(name, `a ${spec.dtype} tensor`, v.describe());
        if (!sameShape(v.shape, spec.shape)) {
          throw new FacecudaError('SHAPE_MISMATCH', `'${name}' has shape [${v.shape.join(', ')}], expected [${spec.shape.join(', ')}]`);
        }
        jobs.push([i, tensorArg(v, name)]);
        continue;
      }
      let data: unknown = v;
      if (is.object(v) && !ArrayBuffer.isView(v)) {
        const o = v as { shape?: unknown; data?: unknown };
        if (!Array.isArray(o.shape)) throw invalidParameterError(name, 'a Tensor, a typed array or { shape, data }', v);
        if (!sameShape(o.shape as number[], spec.shape)) {
          throw new FacecudaError('SHAPE_MISMATCH', `'${name}' has shape [${(o.shape as number[]).join(', ')}], expected [${spec.shape.join(', ')}]`);
        }
        data = o.data;
      }
      if (!isType(data)) throw invalidParameterError(name, `a ${typeName} (or a Tensor)`, data);
      if (data.length !== numel(spec.shape)) {
        throw new FacecudaError('SHAPE_MISMATCH', `'${name}' has ${data.length} values, expected ${numel(spec.shape)} for shape [${spec.shape.join(', ')}]`);
      }
      jobs.push([i, data]);
    }
    const missing = this.#specs.filter((s) => !seen.has(s.name)).map((s) => s.name);
    if (strict) {
      const required = missing.filter((n) => !n.endsWith('.num_batches_tracked'));
      const list = (a: string[]): string => a.slice(0, 5).map((n) => `'${n}'`).join(', ') + (a.length > 5 ? `, … (${a.length} in all)` : '');
      if (required.length) throw new FacecudaError('INVALID_ARGUMENT', `state dict for ${this.arch.name} is missing ${list(required)}`);
      if (unexpected.length) throw new FacecudaError('INVALID_ARGUMENT', `state dict for ${this.arch.name} has unexpected ${list(unexpected)}`);
    }

    // Interpret options
    await withCallSite(Promise.all(jobs.map(([i, d]) => native.setParameter(i, d))), site);
    return { missing, unexpected };
  }

  /**
   * Writes the model to a safetensors file (atomically): every tensor under its state-dict name,
   * buffers included, plus metadata: facecuda.version, facecuda.architecture, facecuda.config and
   * facecuda.preprocessing (JSON), facecuda.reference, license and provenance (and facecuda.graph,
   * the whole graph as JSON, for a custom arch). {@link Backbone.load} reads it back.
   *
   * @throws `IO_ERROR` when the file cannot be written; TypeError for bad options
   * @example await model.save('r50.safetensors', { license: 'MIT', provenance: 'trained on X, run 42' });
   */
  async save(path: string, options?: SaveOptions): Promise<void> {
    const site = new Error();
    // Apply defaults
    assertString(path, 'path');
    const opts = optionsObject(options, 'options');
    assertKnownOptions(opts, 'save', ['license', 'provenance', 'metadata']);
    const license = opts.license ?? this.license;
    const provenance = opts.provenance ?? this.provenance;
    const extra = optionsObject(opts.metadata, 'options.metadata');
    // Validate arguments
    assertString(license, 'license');
    assertString(provenance, 'provenance');
    for (const [k, v] of Object.entries(extra)) {
      if (k.startsWith('facecuda.')) throw invalidParameterError(`metadata.${k}`, "a key that does not start with 'facecuda.'", k);
      assertString(v, `metadata.${k}`);
    }
    // Interpret options
    const config = this.arch.config as { family?: string };
    const metadata: Record<string, string> = {
      ...(extra as Record<string, string>),
      format: 'pt',
      [META.version]: version(),
      [META.architecture]: this.arch.name,
      [META.config]: JSON.stringify(this.arch.config),
      [META.preprocessing]: JSON.stringify(this.preprocessing),
      [META.reference]: this.arch.reference,
      [META.license]: license,
      [META.provenance]: provenance,
    };
    if (needsGraph(this.arch)) metadata[META.graph] = JSON.stringify(this.arch);
    const raw = await withCallSite(this.#live().parameters(), site);
    const tensors = new Map<string, Tensor>();
    raw.forEach((r, i) => {
      tensors.set(this.#specs[i].name, new Tensor(r.value));
      if (r.grad) r.grad.dispose();
    });
    try {
      await withCallSite(writeSafetensors(path, tensors, metadata), site);
    } finally {
      for (const t of tensors.values()) t.dispose();
    }
  }

  /** Releases the native model (after queued work). Idempotent; later calls throw `DISPOSED`. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.#native.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** IResNet conveniences (SPEC §8.1). */
export const IResNet = {
  /**
   * @param depth 18, 34, 50, 100, 200 or 'r18' … 'r200'
   * @example const r50 = IResNet.create('r50', { embeddingSize: 512, seed: 1 });
   */
  create(depth: IResNetDepth | 'r18' | 'r34' | 'r50' | 'r100' | 'r200', options?: BackboneOptions): Backbone {
    const name = typeof depth === 'number' ? (`r${depth}` as BackboneName) : depth;
    if (!is.inArray(name, ['r18', 'r34', 'r50', 'r100', 'r200'])) throw outOfRangeError('depth', "one of 18, 34, 50, 100, 200 or 'r18' … 'r200'", depth);
    return Backbone.create(name, options);
  },
  /** {@link Backbone.load}, checking that the file holds an IResNet. */
  async load(path: string, options?: BackboneRuntimeOptions): Promise<Backbone> {
    const m = await Backbone.load(path, options);
    if ((m.arch.config as { family: string }).family !== 'iresnet') {
      m.dispose();
      throw new FacecudaError('INVALID_ARGUMENT', `${path} holds ${m.arch.name}, not an IResNet`);
    }
    return m;
  },
};

/** MobileFaceNet conveniences (SPEC §8.2). */
export const MobileFaceNet = {
  /**
   * @param options embeddingSize, device, seed, threads; `large: true` for mbf_large
   * @example const mbf = MobileFaceNet.create({ embeddingSize: 512 });
   */
  create(options?: Omit<BackboneOptions, 'dropout' | 'inputSize' | 'baseWidth'> & { large?: boolean }): Backbone {
    const opts = optionsObject(options, 'options');
    const { large, ...rest } = opts as { large?: boolean };
    if (large !== undefined) assertBool(large, 'large');
    return Backbone.create(large ? 'mbf_large' : 'mbf', rest as BackboneOptions);
  },
  /** {@link Backbone.load}, checking that the file holds a MobileFaceNet. */
  async load(path: string, options?: BackboneRuntimeOptions): Promise<Backbone> {
    const m = await Backbone.load(path, options);
    if ((m.arch.config as { family: string }).family !== 'mobilefacenet') {
      m.dispose();
      throw new FacecudaError('INVALID_ARGUMENT', `${path} holds ${m.arch.name}, not a MobileFaceNet`);
    }
    return m;
  },
};

/**
 * {@link Backbone.loadOnnx}: an ONNX backbone (IResNet/MobileFaceNet from arcface_torch or the
 * insightface model zoo, or any graph of the second backbone batch as PyTorch exports it) as a
 * Backbone in eval mode.
 *
 * @example
 * const model = await loadOnnx('w600k_r50.onnx', { device: 'cpu' });
 * const emb = await model.forward(x); // [N, 512]
 */
export function loadOnnx(source: string | Uint8Array, options?: BackboneRuntimeOptions): Promise<Backbone> {
  return Backbone.loadOnnx(source, options);
}
