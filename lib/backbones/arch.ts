/**
 * Architecture descriptions of the backbones: a declarative layer graph of each model, with the
 * PyTorch state-dict name, shape and initialization of every tensor, and the preprocessing the model
 * expects. Pure TypeScript, no native code; native execution, safetensors and ONNX import consume it.
 *
 * | builder | models | SPEC | reference |
 * |---|---|---|---|
 * | {@link iresnetArch} | r18, r34, r50, r100, r200 | §8.1 | arcface_torch backbones/iresnet.py |
 * | {@link mobileFaceNetArch} | mbf (blocks 1,4,6,2, scale 2) | §8.2 | arcface_torch backbones/mobilefacenet.py |
 * | {@link mobileFaceNetLargeArch} | mbf_large (blocks 2,8,12,4, scale 4) | §8.2 | the same file, get_mbf_large |
 * | mobileNetV3Arch, efficientNetArch, ghostNetArch, edgeNeXtArch, vitArch, deitArch, insightfaceVitArch | {@link ZOO_BACKBONE_NAMES} | SPEC-BACKBONES §3–§7 | lib/backbones/arch-zoo.ts (re-exported here) |
 *
 * The second batch adds node kinds (SPEC-BACKBONES §9; {@link ZooArchNode}): activations (relu6,
 * hardsigmoid with its torch/keras `form`, hardswish, silu, sigmoid, gelu), globalavgpool, mul
 * (SE apply), layernorm (`layout` 'last' over token features or 'channels' over C of NCHW maps),
 * layerscale, attention and xca (the attention cores between ordinary qkv/proj linear nodes),
 * totokens/tomap, prependtokens (class/distillation tokens), posembed, fourierposembed, tokenpool,
 * tokenmask, droppath, concat/slice (channels) and average, plus explicit asymmetric conv padding
 * (`asymmetricPadding` [top, bottom, left, right], for TF/Keras "same"). Linear layers apply over
 * the last dimension, so they also run per token. Graphs of those kinds are typed
 * `BackboneArch<AnyArchNode>`; `BackboneArch` (= `BackboneArch<ArchNode>`) keeps the first batch's ops.
 *
 * A graph is a list of nodes in execution (topological) order. `nodes[0]` is the input; every other
 * node names the nodes it reads in `inputs`; `output` is the embedding. A node that is a PyTorch
 * module carries its module path in `module`, and its tensors are named `<module>.<role>`, exactly
 * the keys of the reference model's `state_dict()` (so weights move between the two). Walking the
 * nodes in order and listing their tensors gives the keys in the reference's state_dict order
 * ({@link stateDictTensors}).
 *
 * Shapes in the graph are per sample: [C, H, W] for feature maps, [F] for vectors. The functions
 * that take a batch ({@link inferShapes}, {@link outputShape}) prepend N.
 *
 * Counting conventions (SPEC §8.1, §8.2; SPEC-BACKBONES.md §0):
 * - parameters are what PyTorch's `sum(p.numel() for p in model.parameters())` counts, including
 *   IResNet's frozen `features.weight`; BatchNorm `running_mean`, `running_var` and
 *   `num_batches_tracked` are buffers, counted only with `includeBuffers`;
 * - MACs are the multiply-accumulates of convolutions and linear layers for one sample at the
 *   model's input size (BN, PReLU, adds and dropout are not counted), which is what arcface_torch's
 *   flops.py (ptflops) prints as "GFLOPs"; for the second batch also the two attention matmuls
 *   (2·T²·D; XCA 2·T·C·C/heads) and the Fourier encoding's 1×1 projection (SPEC-BACKBONES §0).
 *
 * @example
 * import { iresnetArch, parameterCount, macs, outputShape, stateDictTensors } from './backbones/arch';
 * const r50 = iresnetArch(50);
 * parameterCount(r50);                     // 43590848
 * macs(r50);                               // 6309330944
 * outputShape(r50, [32, 3, 112, 112]);     // [32, 512]
 * stateDictTensors(r50)[0];                // { name: 'conv1.weight', shape: [64, 3, 3, 3], ... }
 */
import { FacecudaError, invalidParameterError, outOfRangeError } from '../errors';
import { assertInteger, assertKnownOptions, assertNumber, COMMON_ALIASES, is, optionsObject } from '../validate';
import { ZOO_BACKBONE_NAMES, ZooArchOptions, zooBackboneArch, ZooBackboneName } from './arch-zoo';

// The second backbone batch's builders (SPEC-BACKBONES), defined in arch-zoo.ts.
export {
  CnnPresetOptions, deitArch, DeitArchOptions, edgeNeXtArch, EdgeNeXtArchOptions, efficientNetArch, ghostNetArch, GhostNetVariant,
  insightfaceVitArch, InsightfaceVitArchOptions, makeDivisible, mobileNetV3Arch, vitArch, VitArchOptions, ZOO_BACKBONE_NAMES, ZooArchOptions,
  zooBackboneArch, ZooBackboneName,
} from './arch-zoo';

// #region public types

/** The operations a backbone graph is made of. */
export type ArchOp =
  | 'input'
  | 'conv2d'
  | 'batchnorm2d'
  | 'batchnorm1d'
  | 'prelu'
  | 'relu'
  | 'dropout'
  | 'linear'
  | 'flatten'
  | 'add'
  // second backbone batch (SPEC-BACKBONES §9)
  | 'relu6'
  | 'hardsigmoid'
  | 'hardswish'
  | 'silu'
  | 'sigmoid'
  | 'gelu'
  | 'globalavgpool'
  | 'mul'
  | 'layernorm'
  | 'layerscale'
  | 'attention'
  | 'xca'
  | 'totokens'
  | 'tomap'
  | 'prependtokens'
  | 'posembed'
  | 'fourierposembed'
  | 'tokenpool'
  | 'tokenmask'
  | 'droppath'
  | 'concat'
  | 'slice'
  | 'average';

/** The ops of the first backbone batch (IResNet, MobileFaceNet); every other {@link ArchOp} is newer. */
export const BASE_ARCH_OPS: readonly ArchOp[] = Object.freeze(['input', 'conv2d', 'batchnorm2d', 'batchnorm1d', 'prelu', 'relu', 'dropout', 'linear', 'flatten', 'add']);

/** What a tensor is to its layer; the last segment of its state-dict key. */
export type TensorRole =
  | 'weight'
  | 'bias'
  | 'running_mean'
  | 'running_var'
  | 'num_batches_tracked'
  // layer scale (EdgeNeXt `gamma`, `gamma_xca`), XCA `temperature`, ViT tokens and positional embedding
  | 'gamma'
  | 'gamma_xca'
  | 'temperature'
  | 'cls_token'
  | 'dist_token'
  | 'pos_embed'
  | 'mask_token';

/**
 * How a tensor is initialized, with every derived number already resolved (a consumer samples it
 * without re-deriving fans or gains).
 *
 * - `constant`: every element is `value`.
 * - `normal`: N(mean, std²).
 * - `uniform`: U(low, high).
 * - `kaimingNormal`: N(0, std²) with std = gain/√fan, gain = √2 for ReLU (PyTorch
 *   `kaiming_normal_(w, mode, nonlinearity='relu')`). PyTorch's fan_out of a conv weight
 *   [out, in/groups, k, k] is out·k² whatever the groups.
 * - `kaimingUniform`: U(−bound, bound) with bound = gain·√(3/fan), gain = √(2/(1 + a²)); with
 *   a = √5 (PyTorch's default for Linear and Conv weights) bound = 1/√fan_in.
 */
export type InitSpec =
  | { readonly kind: 'constant'; readonly value: number }
  | { readonly kind: 'normal'; readonly mean: number; readonly std: number }
  | { readonly kind: 'uniform'; readonly low: number; readonly high: number }
  | {
      readonly kind: 'kaimingNormal';
      readonly mode: 'fan_in' | 'fan_out';
      readonly nonlinearity: 'relu';
      readonly fan: number;
      readonly gain: number;
      readonly std: number;
    }
  | {
      readonly kind: 'kaimingUniform';
      readonly mode: 'fan_in' | 'fan_out';
      readonly a: number;
      readonly fan: number;
      readonly gain: number;
      readonly bound: number;
    };

/** One tensor of the model: a parameter or a buffer, under its PyTorch state-dict key. */
export interface TensorSpec {
  /** The state-dict key, e.g. 'layer1.0.bn1.running_mean'. */
  readonly name: string;
  /** Its role in the layer (the key's last segment). */
  readonly role: TensorRole;
  /** PyTorch's shape: conv weights [out, in/groups, k, k], linear weights [out, in], scalars []. */
  readonly shape: readonly number[];
  /** float32, except `num_batches_tracked` (int64, a scalar). */
  readonly dtype: 'float32' | 'int64';
  /** A parameter (in `model.parameters()`) or a buffer (BatchNorm running statistics). */
  readonly kind: 'parameter' | 'buffer';
  /** Whether the optimizer updates it: false for buffers and for frozen parameters. */
  readonly trainable: boolean;
  /** How it starts. */
  readonly init: InitSpec;
}

/** Fields every node has. */
interface NodeBase<Op extends ArchOp> {
  /** Unique in the graph: the module path for module nodes, otherwise a path-like name ('layer1.0.add'). */
  readonly id: string;
  readonly op: Op;
  /** The ids of the nodes this one reads, in argument order. */
  readonly inputs: readonly string[];
  /** The PyTorch module path (the tensors' key prefix), or null where the reference uses a function (add, torch.flatten). */
  readonly module: string | null;
  /** The tensors this node owns, in the reference's state_dict order (parameters, then buffers). */
  readonly tensors: readonly TensorSpec[];
}

/** The image input, [3, H, W] per sample. */
export interface InputNode extends NodeBase<'input'> {
  readonly channels: number;
  readonly height: number;
  readonly width: number;
}

/**
 * 2-D convolution with a square kernel, stride and zero padding. The builders' convolutions have no
 * bias; a folded graph's do ({@link foldBatchNorms}: the bias carries the BatchNorm).
 */
export interface Conv2dNode extends NodeBase<'conv2d'> {
  readonly inC: number;
  readonly outC: number;
  readonly kernel: number;
  readonly stride: number;
  /** Symmetric zero padding on every side (PyTorch `padding`); ignored when `asymmetricPadding` is present. */
  readonly padding: number;
  readonly groups: number;
  readonly bias: boolean;
  /**
   * Explicit zero padding [top, bottom, left, right], for TensorFlow/Keras "same" convolutions
   * (SPEC-BACKBONES §0, §5.2: before ⌊P/2⌋, after ⌈P/2⌉): output ⌊(H + top + bottom − k)/s⌋ + 1.
   * Present only where the padding is not symmetric; the builders resolve "same" to numbers for
   * the model's input size (see {@link tfSamePadding}), so the executor never derives it.
   */
  readonly asymmetricPadding?: readonly [number, number, number, number];
}

/** Attributes shared by both BatchNorm kinds. */
export interface BatchNormAttributes {
  readonly features: number;
  /** Added to the variance (1e-5 in both models). */
  readonly eps: number;
  /** PyTorch convention: running = (1 − momentum)·running + momentum·batch (0.1). */
  readonly momentum: number;
  /** Whether it has weight and bias. */
  readonly affine: boolean;
  /** The weight stays at its initial value (requires_grad=False), as IResNet's `features.weight`. */
  readonly frozenWeight: boolean;
}

/** BatchNorm over [N, C, H, W] (statistics per channel). */
export interface BatchNorm2dNode extends NodeBase<'batchnorm2d'>, BatchNormAttributes {}

/** BatchNorm over [N, F] (statistics per feature). */
export interface BatchNorm1dNode extends NodeBase<'batchnorm1d'>, BatchNormAttributes {}

/** PReLU with one slope per channel (dimension 1). */
export interface PReluNode extends NodeBase<'prelu'> {
  readonly channels: number;
}

/** ReLU (no parameters). Neither model uses it; here for the later backbones. */
export type ReluNode = NodeBase<'relu'>;

/** Dropout with probability p in training, identity in eval. p = 0 is kept as a node, as in the reference. */
export interface DropoutNode extends NodeBase<'dropout'> {
  readonly p: number;
}

/** y = x·Wᵀ (+ b), W [out, in], over the last dimension: a vector [in] or every token of [T, in]. */
export interface LinearNode extends NodeBase<'linear'> {
  readonly in: number;
  readonly out: number;
  readonly bias: boolean;
}

/** [N, C, H, W] → [N, C·H·W] in C-major order (torch.flatten(x, 1)). */
export type FlattenNode = NodeBase<'flatten'>;

/**
 * Residual add: `inputs` is [the residual branch's last node, the shortcut], equal shapes, no
 * activation after it.
 */
export interface AddNode extends NodeBase<'add'> {
  readonly inputs: readonly [string, string];
}

/**
 * Element-wise activations without parameters (SPEC-BACKBONES §9.1–9.6): ReLU6 min(max(x, 0), 6);
 * hard-swish x·clamp((x+3)/6, 0, 1); SiLU x·σ(x); sigmoid σ(x); GELU x·Φ(x) (exact erf form).
 */
export type ActivationNode = NodeBase<'relu6' | 'hardswish' | 'silu' | 'sigmoid' | 'gelu'>;

/**
 * Hard-sigmoid: `form` 'torch' clamp((x+3)/6, 0, 1) (PyTorch/timm/cavaface); 'keras' clamp(0.2x + 0.5, 0, 1)
 * (TF/Keras, GhostFaceNets). Different functions (§9.2).
 */
export interface HardSigmoidNode extends NodeBase<'hardsigmoid'> {
  readonly form: 'torch' | 'keras';
}

/** Global average pool over H, W: [C, H, W] → [C, 1, 1] (keepdim, as nn.AdaptiveAvgPool2d(1)). */
export type GlobalAvgPoolNode = NodeBase<'globalavgpool'>;

/**
 * y = x ⊙ g, `inputs` = [x, g]: g of x's shape, or a per-channel gate [C, 1, 1] or [C] broadcast over
 * H, W of a map x [C, H, W] (the squeeze-excitation apply, §9.7).
 */
export interface MulNode extends NodeBase<'mul'> {
  readonly inputs: readonly [string, string];
}

/**
 * LayerNorm with affine weight and bias [features] (§9.9). `layout` 'last': over the last dimension
 * (token features [T, C], or a vector [C]); 'channels': over C of a map [C, H, W] at every position
 * (timm LayerNorm2d).
 */
export interface LayerNormNode extends NodeBase<'layernorm'> {
  readonly features: number;
  readonly eps: number;
  readonly layout: 'last' | 'channels';
}

/** Per-channel learnable scale y = γ ⊙ x (EdgeNeXt `gamma`, `gamma_xca`; §9.14), with the layout of {@link LayerNormNode}. */
export interface LayerScaleNode extends NodeBase<'layerscale'> {
  readonly channels: number;
  readonly layout: 'last' | 'channels';
}

/**
 * Multi-head self-attention core (§9.10): input the qkv projection [T, 3·dim] (q, k, v blocks of dim,
 * each split into `heads` heads of dim/heads), output the concatenated heads [T, dim] before the
 * output projection. softmax(scale·QKᵀ)V per head, softmax in fp32. The qkv and output projections
 * are ordinary `linear` nodes (their bias flags are `qkvBias`/`projBias` of the model), so a
 * low-rank (LoRaLin) projection needs no new op.
 */
export interface AttentionNode extends NodeBase<'attention'> {
  readonly dim: number;
  readonly heads: number;
  /** Multiplies QKᵀ: (dim/heads)^−½ for timm/insightface ViTs. */
  readonly scale: number;
}

/**
 * EdgeNeXt's cross-covariance ("transposed") attention core (§9.11): input qkv [T, 3·dim], output
 * [T, dim]; per head q, k L2-normalized over the tokens, A = softmax(τ_h·q̂k̂ᵀ) (d×d), out = A·v. Owns
 * the learnable temperature τ [heads, 1, 1] (`<module>.temperature`).
 */
export interface XcaNode extends NodeBase<'xca'> {
  readonly dim: number;
  readonly heads: number;
}

/** [C, H, W] → [H·W, C] (flatten(2).transpose(1, 2); tokens in row-major pixel order). */
export type ToTokensNode = NodeBase<'totokens'>;

/** [H·W, C] → [C, H, W], the inverse of {@link ToTokensNode}. */
export interface ToMapNode extends NodeBase<'tomap'> {
  readonly height: number;
  readonly width: number;
}

/**
 * Prepends learned tokens to the sequence: [T, D] → [T + count, D]; owns `cls_token` [1, 1, D] and,
 * with count 2, `dist_token` [1, 1, D] (DeiT distillation), in that order.
 */
export interface PrependTokensNode extends NodeBase<'prependtokens'> {
  readonly count: 1 | 2;
  readonly dim: number;
}

/** Adds the learned positional embedding `pos_embed` [1, tokens, dim]. */
export interface PosEmbedNode extends NodeBase<'posembed'> {
  readonly tokens: number;
  readonly dim: number;
}

/**
 * EdgeNeXt's Fourier positional encoding (§6.3): reads a map [C, H, W] only for its H, W and outputs
 * [H·W, dim] = a constant 2·hiddenDim-channel sin/cos table projected by a 1×1 conv
 * (`<module>.token_projection.weight` [dim, 2·hiddenDim, 1, 1] and `.bias`).
 */
export interface FourierPosEmbedNode extends NodeBase<'fourierposembed'> {
  readonly dim: number;
  readonly hiddenDim: number;
  readonly temperature: number;
}

/**
 * Token pooling [T, D] → a vector: 'token' takes token `index` (the class token 0, DeiT's
 * distillation token 1); 'mean' averages tokens `index`..T−1; 'flatten' gives [T·D] (insightface).
 */
export interface TokenPoolNode extends NodeBase<'tokenpool'> {
  readonly mode: 'token' | 'mean' | 'flatten';
  readonly index: number;
}

/**
 * insightface ViT token masking (§9.18), placed where the mask tokens are re-inserted (after the
 * final norm); owns `mask_token` [1, 1, dim]. With `ratio` 0 (the graphs here) it is the identity;
 * the parameter exists in the reference state dict either way.
 */
export interface TokenMaskNode extends NodeBase<'tokenmask'> {
  readonly ratio: number;
  readonly dim: number;
}

/** Stochastic depth (§9.15): per sample keep with 1 − p and rescale by 1/(1 − p) in training; identity in eval. */
export interface DropPathNode extends NodeBase<'droppath'> {
  readonly p: number;
}

/** Concatenation of maps [Cᵢ, H, W] along channels. */
export type ConcatNode = NodeBase<'concat'>;

/** Channels start..start+length−1 of a map [C, H, W]. */
export interface SliceNode extends NodeBase<'slice'> {
  readonly start: number;
  readonly length: number;
}

/** Element-wise mean of its inputs (equal shapes): DeiT-distilled's (head + head_dist)/2. */
export type AverageNode = NodeBase<'average'>;

/**
 * A node of the first backbone batch (IResNet, MobileFaceNet; the ops of {@link BASE_ARCH_OPS}):
 * what the native executor, ONNX import/export and checkpoints handle today.
 */
export type ArchNode =
  | InputNode
  | Conv2dNode
  | BatchNorm2dNode
  | BatchNorm1dNode
  | PReluNode
  | ReluNode
  | DropoutNode
  | LinearNode
  | FlattenNode
  | AddNode;

/** The node kinds of the second backbone batch (SPEC-BACKBONES §9). */
export type ZooArchNode =
  | ActivationNode
  | HardSigmoidNode
  | GlobalAvgPoolNode
  | MulNode
  | LayerNormNode
  | LayerScaleNode
  | AttentionNode
  | XcaNode
  | ToTokensNode
  | ToMapNode
  | PrependTokensNode
  | PosEmbedNode
  | FourierPosEmbedNode
  | TokenPoolNode
  | TokenMaskNode
  | DropPathNode
  | ConcatNode
  | SliceNode
  | AverageNode;

/** Any node of a backbone graph (discriminated by `op`): {@link ArchNode} or {@link ZooArchNode}. */
export type AnyArchNode = ArchNode | ZooArchNode;

/** The point order of the 5-point alignment template (image coordinates, x to the right). */
export const LANDMARK_ORDER = ['leftEye', 'rightEye', 'nose', 'leftMouth', 'rightMouth'] as const;

/** A 5-point alignment template: where the aligned crop puts each landmark. */
export interface AlignmentTemplate {
  readonly name: 'arcface';
  /** Side of the square crop in pixels. */
  readonly size: number;
  /** The transform fitted from detected landmarks to the template: a similarity (rotation, uniform scale, translation). */
  readonly transform: 'similarity';
  /** The points in {@link LANDMARK_ORDER}: eyes, nose tip, mouth corners, image-left first. */
  readonly order: typeof LANDMARK_ORDER;
  /** [x, y] in crop pixels, one pair per point. */
  readonly landmarks: readonly (readonly [number, number])[];
}

/**
 * What the model expects as input: an aligned square RGB crop with values in [0, 255], normalized
 * per channel as (v − mean)/std, i.e. (v/255 − 0.5)/0.5 ∈ [−1, 1].
 */
export interface Preprocessing {
  /** Side of the square input in pixels. */
  readonly inputSize: number;
  readonly layout: 'NCHW';
  readonly colorOrder: 'RGB';
  /** The range of the raw pixel values that mean/std apply to. */
  readonly valueRange: readonly [0, 255];
  /** Per channel (R, G, B): 0.5·255. */
  readonly mean: readonly [number, number, number];
  /** Per channel (R, G, B): 0.5·255. */
  readonly std: readonly [number, number, number];
  /** The 5-point template for this crop size, or null where insightface defines none (sizes not a multiple of 112 or 128). */
  readonly alignment: AlignmentTemplate | null;
}

/** The IResNet depths of SPEC §8.1. */
export type IResNetDepth = 18 | 34 | 50 | 100 | 200;

/** Options of {@link iresnetArch}. */
export interface IResNetArchOptions {
  /** Size of the embedding (default 512): fc's outputs and the features BatchNorm1d. */
  embeddingSize?: number;
  /** Dropout probability before fc, in [0, 1) (default 0, as train_v2). */
  dropout?: number;
  /**
   * Side of the square input (default 112), an integer in [16, 1024]. The final map is ⌈size/16⌉²
   * and fc's input is 512 times that; arcface_torch hard-codes 7·7 (sizes 97–112), so other sizes
   * give an fc.weight of another shape than the reference's.
   */
  inputSize?: number;
  /**
   * Width of the stem and of layer1 (default 64, the reference's), an integer in [1, 1024]: stage
   * widths baseWidth·[1, 2, 4, 8] and fc's input 8·baseWidth·⌈inputSize/16⌉². A reduced width gives
   * small models of the same graph (tests against an independent implementation); the reference has
   * only 64.
   */
  baseWidth?: number;
}

/** Options of {@link mobileFaceNetArch}. */
export interface MobileFaceNetArchOptions {
  /** Size of the embedding (default 512). */
  embeddingSize?: number;
  /** Blocks of the four stages (default [1, 4, 6, 2]; mbf_large [2, 8, 12, 4]). */
  blocks?: readonly [number, number, number, number] | readonly number[];
  /** Width multiplier: stage widths 64·scale, 64·scale, 128·scale, 128·scale (default 2; mbf_large 4). */
  scale?: number;
}

/** The resolved configuration of an IResNet graph (JSON-serializable; recorded in checkpoints). */
export interface IResNetConfig {
  readonly family: 'iresnet';
  readonly depth: IResNetDepth;
  /** Blocks per stage. */
  readonly layers: readonly [number, number, number, number];
  readonly embeddingSize: number;
  readonly dropout: number;
  readonly inputSize: number;
  /** Stem and layer1 width; present only when not the reference's 64 (absent means 64). */
  readonly baseWidth?: number;
}

/** The resolved configuration of a MobileFaceNet graph. */
export interface MobileFaceNetConfig {
  readonly family: 'mobilefacenet';
  readonly blocks: readonly [number, number, number, number];
  readonly scale: number;
  readonly embeddingSize: number;
  readonly inputSize: 112;
}

/**
 * The resolved configuration of a second-batch backbone (SPEC-BACKBONES; built by lib/backbones/arch-zoo.ts).
 * `preset` tells the face variant apart ('A' timm blocks + GDC, 'B' cavaface; see the builders).
 */
export interface ZooConfig {
  readonly family: 'mobilenetv3' | 'efficientnet' | 'ghostnet' | 'edgenext' | 'vit' | 'deit' | 'if_vit' | 'onnx';
  readonly variant: string;
  readonly preset?: string;
  readonly embeddingSize: number;
  readonly inputSize: number;
  /** Every other option the builder resolved (JSON values only). */
  readonly options?: Readonly<Record<string, string | number | boolean>>;
}

/**
 * A backbone's architecture: the graph, its configuration and its preprocessing. `N` is the node
 * type: {@link ArchNode} (the default) for graphs of the first batch's ops, {@link AnyArchNode} for
 * graphs that may use the newer ops (the builders of arch-zoo.ts); the analysis functions here take
 * either, while consumers that handle only the first batch's ops (ONNX export/import) take the default.
 */
export interface BackboneArch<N extends AnyArchNode = ArchNode> {
  /** arcface_torch's `get_model` name ('r50', 'mbf', 'mbf_large'), or a descriptive one for custom MobileFaceNets. */
  readonly name: string;
  readonly config: IResNetConfig | MobileFaceNetConfig | ZooConfig;
  /** Where the layout and the state-dict keys come from. */
  readonly reference: string;
  /** The nodes in execution order; `nodes[0]` is the input. */
  readonly nodes: readonly N[];
  /** The id of the node whose output is the embedding. */
  readonly output: string;
  /** Per-sample input shape [3, H, W]. */
  readonly inputShape: readonly [number, number, number];
  readonly embeddingSize: number;
  readonly preprocessing: Preprocessing;
  /**
   * The BatchNorms that {@link foldBatchNorms} folded into their preceding layers (absent or empty
   * for the graph the builder makes). Such a graph is an inference graph of the model: it is saved
   * with its whole graph, since the builder's configuration no longer describes it.
   */
  readonly folds?: readonly { readonly layer: string; readonly batchNorm: string }[];
}

/** Options of {@link parameterCount}. */
export interface ParameterCountOptions {
  /** Also count the BatchNorm buffers: running_mean, running_var and num_batches_tracked (one element each). Default false. */
  includeBuffers?: boolean;
}

/** One row of {@link summarize}: a node with its per-sample output shape, parameters and MACs. */
export interface NodeSummary {
  readonly id: string;
  readonly op: ArchOp;
  readonly module: string | null;
  /** Per sample (no N). */
  readonly outputShape: readonly number[];
  /** Parameter elements this node owns (buffers excluded). */
  readonly params: number;
  /** Multiply-accumulates for one sample (conv, linear, the attention matmuls and the Fourier projection; else 0). */
  readonly macs: number;
}

// #endregion

// #region constants

/** Blocks per stage of each IResNet depth (arcface_torch iresnet.py: iresnet18 … iresnet200). */
export const IRESNET_LAYERS: Readonly<Record<IResNetDepth, readonly [number, number, number, number]>> = Object.freeze({
  18: Object.freeze([2, 2, 2, 2] as const),
  34: Object.freeze([3, 4, 6, 3] as const),
  50: Object.freeze([3, 4, 14, 3] as const),
  100: Object.freeze([3, 13, 30, 3] as const),
  200: Object.freeze([6, 26, 60, 6] as const),
});

const IRESNET_DEPTHS: readonly IResNetDepth[] = [18, 34, 50, 100, 200];

/** Stage widths of IResNet (the planes of layer1..layer4). */
const IRESNET_WIDTHS = [64, 128, 256, 512] as const;

/** mbf's defaults (arcface_torch get_mbf). */
export const MBF_BLOCKS: readonly [number, number, number, number] = Object.freeze([1, 4, 6, 2] as const);
export const MBF_SCALE = 2;
/** mbf_large's defaults (arcface_torch get_mbf_large). */
export const MBF_LARGE_BLOCKS: readonly [number, number, number, number] = Object.freeze([2, 8, 12, 4] as const);
export const MBF_LARGE_SCALE = 4;

/** BatchNorm constants of both models (PyTorch defaults; iresnet.py passes eps=1e-05 explicitly). */
const BN_EPS = 1e-5;
const BN_MOMENTUM = 0.1;
/** PyTorch's PReLU init. */
const PRELU_INIT = 0.25;
/** IResNet's conv init: nn.init.normal_(w, 0, 0.1). */
const IRESNET_CONV_STD = 0.1;

/**
 * insightface's ArcFace 5-point template for a 112×112 crop (`arcface_dst`, formerly `arcface_src`,
 * in python-package/insightface/utils/face_align.py), in {@link LANDMARK_ORDER}.
 */
export const ARCFACE_TEMPLATE_112: readonly (readonly [number, number])[] = Object.freeze([
  Object.freeze([38.2946, 51.6963] as const),
  Object.freeze([73.5318, 51.5014] as const),
  Object.freeze([56.0252, 71.7366] as const),
  Object.freeze([41.5493, 92.3655] as const),
  Object.freeze([70.7299, 92.2041] as const),
]);

const ARCFACE_MEAN = 0.5 * 255;
const ARCFACE_STD = 0.5 * 255;

/** Where the graphs come from (SPEC §0: IF @ 7fadd420). */
const IRESNET_REFERENCE = 'deepinsight/insightface recognition/arcface_torch/backbones/iresnet.py';
const MBF_REFERENCE = 'deepinsight/insightface recognition/arcface_torch/backbones/mobilefacenet.py';

// #endregion

// #region helpers shared with consumers

/**
 * TensorFlow/Keras "same" padding along one axis: [before, after] = [⌊P/2⌋, ⌈P/2⌉] with
 * P = max((⌈size/stride⌉ − 1)·stride + kernel − size, 0); the output is ⌈size/stride⌉.
 *
 * @example
 * tfSamePadding(112, 3, 2); // [0, 1]
 * tfSamePadding(56, 5, 2);  // [1, 2]
 */
export function tfSamePadding(size: number, kernel: number, stride: number): readonly [number, number] {
  const total = Math.max((Math.ceil(size / stride) - 1) * stride + kernel - size, 0);
  return [Math.floor(total / 2), total - Math.floor(total / 2)];
}

/**
 * PyTorch's output size of a convolution along one axis: ⌊(size + 2·padding − kernel)/stride⌋ + 1
 * (no dilation). Zero or negative means the kernel does not fit.
 *
 * @example
 * convOutputSize(112, 3, 2, 1); // 56
 * convOutputSize(7, 7, 1, 0);   // 1
 */
export function convOutputSize(size: number, kernel: number, stride: number, padding: number): number {
  return Math.floor((size + 2 * padding - kernel) / stride) + 1;
}

/**
 * insightface's ArcFace template for a square crop of `size` pixels (face_align.estimate_norm): for a
 * multiple of 112 the 112 template scaled by size/112; otherwise, for a multiple of 128, scaled by
 * size/128 and shifted right by 8·size/128.
 *
 * @throws {RangeError} when `size` is not a positive multiple of 112 or 128.
 * @example
 * alignmentTemplate(112).landmarks[0]; // [38.2946, 51.6963]
 * alignmentTemplate(224).landmarks[0]; // [76.5892, 103.3926]
 * alignmentTemplate(128).landmarks[0]; // [46.2946, 51.6963]
 */
export function alignmentTemplate(size: number): AlignmentTemplate {
  // Validate arguments
  assertInteger(size, 'size', 1);
  let ratio: number;
  let shiftX: number;
  if (size % 112 === 0) {
    ratio = size / 112;
    shiftX = 0;
  } else if (size % 128 === 0) {
    ratio = size / 128;
    shiftX = 8 * ratio;
  } else {
    throw outOfRangeError('size', 'a multiple of 112 or 128', size);
  }
  // Interpret options
  const landmarks = ARCFACE_TEMPLATE_112.map(([x, y]) => Object.freeze([x * ratio + shiftX, y * ratio] as const));
  return Object.freeze({ name: 'arcface', size, transform: 'similarity', order: LANDMARK_ORDER, landmarks: Object.freeze(landmarks) });
}

/**
 * The arcface_torch preprocessing for a square crop of `inputSize`: RGB, NCHW, (v/255 − 0.5)/0.5, and
 * the ArcFace template at that size (null where insightface defines none).
 *
 * @example
 * arcfacePreprocessing(112).mean; // [127.5, 127.5, 127.5]
 */
export function arcfacePreprocessing(inputSize: number): Preprocessing {
  assertInteger(inputSize, 'inputSize', 1);
  const alignment = inputSize % 112 === 0 || inputSize % 128 === 0 ? alignmentTemplate(inputSize) : null;
  return Object.freeze({
    inputSize,
    layout: 'NCHW',
    colorOrder: 'RGB',
    valueRange: Object.freeze([0, 255] as const),
    mean: Object.freeze([ARCFACE_MEAN, ARCFACE_MEAN, ARCFACE_MEAN] as const),
    std: Object.freeze([ARCFACE_STD, ARCFACE_STD, ARCFACE_STD] as const),
    alignment,
  });
}

// #endregion

// #region graph builder (internal)

/** How a builder initializes convolution and linear weights. @internal (exported for arch-zoo.ts) */
export interface WeightInit {
  conv(outC: number, inPerGroup: number, kernel: number): InitSpec;
  /** A conv bias (default: 0). */
  convBias?(outC: number, inPerGroup: number, kernel: number): InitSpec;
  linearWeight(inF: number, outF: number): InitSpec;
  linearBias(inF: number, outF: number): InitSpec;
}

/** @internal */
export function constant(value: number): InitSpec {
  return { kind: 'constant', value };
}

/** PyTorch kaiming_normal_(mode='fan_out', nonlinearity='relu'): fan_out = size(0)·receptive field. */
/** @internal */
export function kaimingNormalFanOut(fanOut: number): InitSpec {
  const gain = Math.SQRT2;
  return { kind: 'kaimingNormal', mode: 'fan_out', nonlinearity: 'relu', fan: fanOut, gain, std: gain / Math.sqrt(fanOut) };
}

/** PyTorch's default Linear weight init: kaiming_uniform_(a=√5), fan_in: bound 1/√fan_in. */
/** @internal */
export function kaimingUniformDefault(fanIn: number): InitSpec {
  const a = Math.sqrt(5);
  const gain = Math.sqrt(2 / (1 + a * a));
  return { kind: 'kaimingUniform', mode: 'fan_in', a, fan: fanIn, gain, bound: gain * Math.sqrt(3 / fanIn) };
}

/** PyTorch's default Linear bias init: U(−1/√fan_in, 1/√fan_in). */
/** @internal */
export function linearDefaultBias(fanIn: number): InitSpec {
  const bound = 1 / Math.sqrt(fanIn);
  return { kind: 'uniform', low: -bound, high: bound };
}

/** iresnet.py: every Conv2d N(0, 0.1); fc keeps nn.Linear's defaults. */
const IRESNET_INIT: WeightInit = {
  conv: () => ({ kind: 'normal', mean: 0, std: IRESNET_CONV_STD }),
  linearWeight: (inF) => kaimingUniformDefault(inF),
  linearBias: (inF) => linearDefaultBias(inF),
};

/** mobilefacenet.py _initialize_weights: kaiming_normal fan_out relu for Conv2d and Linear, biases 0. */
const MBF_INIT: WeightInit = {
  conv: (outC, _inPerGroup, kernel) => kaimingNormalFanOut(outC * kernel * kernel),
  linearWeight: (_inF, outF) => kaimingNormalFanOut(outF),
  linearBias: () => constant(0),
};

/** @internal */
export function internal(message: string): FacecudaError {
  return new FacecudaError('INTERNAL', `backbone graph: ${message}`);
}

/**
 * Appends nodes while tracking each node's per-sample output shape, so that builders can size the
 * layers that depend on it (fc's input). {@link inferShapes} re-derives every shape from the finished
 * graph independently.
 */
export class GraphBuilder {
  readonly nodes: AnyArchNode[] = [];
  private readonly shapes = new Map<string, readonly number[]>();
  private readonly tensorNames = new Set<string>();

  /** @internal (exported for lib/backbones/arch-zoo.ts only) */
  constructor(readonly init: WeightInit, channels: number, size: number) {
    this.push({ id: 'input', op: 'input', inputs: [], module: null, tensors: [], channels, height: size, width: size }, [channels, size, size]);
  }

  shape(id: string): readonly number[] {
    const s = this.shapes.get(id);
    if (!s) throw internal(`unknown node '${id}'`);
    return s;
  }

  conv(
    module: string, from: string, outC: number, kernel: number, stride: number, padding: number, groups = 1,
    extra: { bias?: boolean; asymmetricPadding?: readonly [number, number, number, number] } = {},
  ): string {
    const [inC, h, w] = this.shape(from);
    if (inC % groups !== 0 || outC % groups !== 0) throw internal(`${module}: channels ${inC}→${outC} not divisible by groups ${groups}`);
    const pads = extra.asymmetricPadding;
    const ho = pads ? Math.floor((h + pads[0] + pads[1] - kernel) / stride) + 1 : convOutputSize(h, kernel, stride, padding);
    const wo = pads ? Math.floor((w + pads[2] + pads[3] - kernel) / stride) + 1 : convOutputSize(w, kernel, stride, padding);
    if (ho < 1 || wo < 1) throw internal(`${module}: a ${kernel}×${kernel} kernel does not fit a ${h}×${w} input`);
    const weightShape = [outC, inC / groups, kernel, kernel];
    const bias = extra.bias ?? false;
    const tensors = [this.tensor(module, 'weight', weightShape, 'parameter', true, this.init.conv(outC, inC / groups, kernel))];
    if (bias) tensors.push(this.tensor(module, 'bias', [outC], 'parameter', true, this.init.convBias?.(outC, inC / groups, kernel) ?? constant(0)));
    const node = { id: module, op: 'conv2d', inputs: [from], module, tensors, inC, outC, kernel, stride, padding, groups, bias } as const;
    return this.push(pads ? { ...node, asymmetricPadding: [...pads] as unknown as readonly [number, number, number, number] } : node, [outC, ho, wo]);
  }

  batchNorm(op: 'batchnorm2d' | 'batchnorm1d', module: string, from: string, frozenWeight = false, eps = BN_EPS): string {
    const shape = this.shape(from);
    const features = shape[0];
    const tensors = [
      this.tensor(module, 'weight', [features], 'parameter', !frozenWeight, constant(1)),
      this.tensor(module, 'bias', [features], 'parameter', true, constant(0)),
      this.tensor(module, 'running_mean', [features], 'buffer', false, constant(0)),
      this.tensor(module, 'running_var', [features], 'buffer', false, constant(1)),
      this.tensor(module, 'num_batches_tracked', [], 'buffer', false, constant(0)),
    ];
    const attrs: BatchNormAttributes = { features, eps, momentum: BN_MOMENTUM, affine: true, frozenWeight };
    return this.push({ id: module, op, inputs: [from], module, tensors, ...attrs } as ArchNode, shape);
  }

  prelu(module: string, from: string): string {
    const shape = this.shape(from);
    const channels = shape[0];
    const tensors = [this.tensor(module, 'weight', [channels], 'parameter', true, constant(PRELU_INIT))];
    return this.push({ id: module, op: 'prelu', inputs: [from], module, tensors, channels }, shape);
  }

  flatten(id: string, module: string | null, from: string): string {
    const shape = this.shape(from);
    return this.push({ id, op: 'flatten', inputs: [from], module, tensors: [] }, [shape.reduce((a, b) => a * b, 1)]);
  }

  dropout(module: string, from: string, p: number): string {
    return this.push({ id: module, op: 'dropout', inputs: [from], module, tensors: [], p }, this.shape(from));
  }

  linear(module: string, from: string, out: number, bias: boolean): string {
    const shape = this.shape(from);
    const inF = shape[shape.length - 1];
    if (shape.length > 2) throw internal(`${module}: a linear layer on a [${shape}] input`);
    const tensors = [this.tensor(module, 'weight', [out, inF], 'parameter', true, this.init.linearWeight(inF, out))];
    if (bias) tensors.push(this.tensor(module, 'bias', [out], 'parameter', true, this.init.linearBias(inF, out)));
    return this.push({ id: module, op: 'linear', inputs: [from], module, tensors, in: inF, out, bias }, [...shape.slice(0, -1), out]);
  }

  /** A node without tensors whose output has the input's shape (activations, drop path, token mask without tensor). */
  same(op: 'relu' | 'relu6' | 'hardswish' | 'silu' | 'sigmoid' | 'gelu', id: string, from: string, module: string | null = null): string {
    return this.push({ id, op, inputs: [from], module, tensors: [] } as AnyArchNode, this.shape(from));
  }

  hardSigmoid(id: string, from: string, form: 'torch' | 'keras', module: string | null = null): string {
    return this.push({ id, op: 'hardsigmoid', inputs: [from], module, tensors: [], form }, this.shape(from));
  }

  dropPath(id: string, from: string, p: number): string {
    return this.push({ id, op: 'droppath', inputs: [from], module: null, tensors: [], p }, this.shape(from));
  }

  globalAvgPool(id: string, from: string, module: string | null = null): string {
    const [c] = this.shape(from);
    return this.push({ id, op: 'globalavgpool', inputs: [from], module, tensors: [] }, [c, 1, 1]);
  }

  mul(id: string, x: string, gate: string): string {
    return this.push({ id, op: 'mul', inputs: [x, gate], module: null, tensors: [] }, this.shape(x));
  }

  layerNorm(module: string, from: string, layout: 'last' | 'channels', eps: number, id = module): string {
    const shape = this.shape(from);
    const features = layout === 'channels' ? shape[0] : shape[shape.length - 1];
    const tensors = [
      this.tensor(module, 'weight', [features], 'parameter', true, constant(1)),
      this.tensor(module, 'bias', [features], 'parameter', true, constant(0)),
    ];
    return this.push({ id, op: 'layernorm', inputs: [from], module, tensors, features, eps, layout }, shape);
  }

  /** Layer scale owning `<module>.<role>` (role 'gamma' or 'gamma_xca'). */
  layerScale(id: string, module: string, role: 'gamma' | 'gamma_xca', from: string, layout: 'last' | 'channels', init: number): string {
    const shape = this.shape(from);
    const channels = layout === 'channels' ? shape[0] : shape[shape.length - 1];
    const tensors = [this.tensor(module, role, [channels], 'parameter', true, constant(init))];
    return this.push({ id, op: 'layerscale', inputs: [from], module, tensors, channels, layout }, shape);
  }

  attention(module: string, from: string, dim: number, heads: number, scale: number): string {
    const [t] = this.shape(from);
    return this.push({ id: module, op: 'attention', inputs: [from], module, tensors: [], dim, heads, scale }, [t, dim]);
  }

  xca(module: string, from: string, dim: number, heads: number): string {
    const [t] = this.shape(from);
    const tensors = [this.tensor(module, 'temperature', [heads, 1, 1], 'parameter', true, constant(1))];
    return this.push({ id: module, op: 'xca', inputs: [from], module, tensors, dim, heads }, [t, dim]);
  }

  toTokens(id: string, from: string): string {
    const [c, h, w] = this.shape(from);
    return this.push({ id, op: 'totokens', inputs: [from], module: null, tensors: [] }, [h * w, c]);
  }

  toMap(id: string, from: string, height: number, width: number): string {
    const [, c] = this.shape(from);
    return this.push({ id, op: 'tomap', inputs: [from], module: null, tensors: [], height, width }, [c, height, width]);
  }

  /** Class token (and distillation token) under the top-level names `cls_token`, `dist_token`. */
  prependTokens(id: string, from: string, count: 1 | 2, init: readonly InitSpec[]): string {
    const [t, dim] = this.shape(from);
    const tensors = [this.tensor(null, 'cls_token', [1, 1, dim], 'parameter', true, init[0])];
    if (count === 2) tensors.push(this.tensor(null, 'dist_token', [1, 1, dim], 'parameter', true, init[1]));
    return this.push({ id, op: 'prependtokens', inputs: [from], module: null, tensors, count, dim }, [t + count, dim]);
  }

  posEmbed(id: string, from: string, init: InitSpec): string {
    const [tokens, dim] = this.shape(from);
    const tensors = [this.tensor(null, 'pos_embed', [1, tokens, dim], 'parameter', true, init)];
    return this.push({ id, op: 'posembed', inputs: [from], module: null, tensors, tokens, dim }, [tokens, dim]);
  }

  fourierPosEmbed(module: string, from: string, dim: number, hiddenDim = 32, temperature = 10000): string {
    const [, h, w] = this.shape(from);
    const tensors = [
      this.tensor(`${module}.token_projection`, 'weight', [dim, 2 * hiddenDim, 1, 1], 'parameter', true, this.init.conv(dim, 2 * hiddenDim, 1)),
      this.tensor(`${module}.token_projection`, 'bias', [dim], 'parameter', true, constant(0)),
    ];
    return this.push({ id: module, op: 'fourierposembed', inputs: [from], module, tensors, dim, hiddenDim, temperature }, [h * w, dim]);
  }

  tokenPool(id: string, from: string, mode: 'token' | 'mean' | 'flatten', index = 0): string {
    const [t, d] = this.shape(from);
    return this.push({ id, op: 'tokenpool', inputs: [from], module: null, tensors: [], mode, index }, mode === 'flatten' ? [t * d] : [d]);
  }

  tokenMask(id: string, from: string, ratio: number, init: InitSpec): string {
    const shape = this.shape(from);
    const dim = shape[1];
    const tensors = [this.tensor(null, 'mask_token', [1, 1, dim], 'parameter', true, init)];
    return this.push({ id, op: 'tokenmask', inputs: [from], module: null, tensors, ratio, dim }, shape);
  }

  concat(id: string, from: readonly string[]): string {
    const shapes = from.map((f) => this.shape(f));
    const c = shapes.reduce((a, s) => a + s[0], 0);
    return this.push({ id, op: 'concat', inputs: [...from], module: null, tensors: [] }, [c, shapes[0][1], shapes[0][2]]);
  }

  slice(id: string, from: string, start: number, length: number): string {
    const [, h, w] = this.shape(from);
    return this.push({ id, op: 'slice', inputs: [from], module: null, tensors: [], start, length }, [length, h, w]);
  }

  average(id: string, from: readonly string[]): string {
    return this.push({ id, op: 'average', inputs: [...from], module: null, tensors: [] }, this.shape(from[0]));
  }

  add(id: string, residual: string, shortcut: string): string {
    const a = this.shape(residual);
    const b = this.shape(shortcut);
    if (a.join() !== b.join()) throw internal(`${id}: adding [${a}] and [${b}]`);
    return this.push({ id, op: 'add', inputs: [residual, shortcut], module: null, tensors: [] }, a);
  }

  private tensor(module: string | null, role: TensorRole, shape: number[], kind: 'parameter' | 'buffer', trainable: boolean, init: InitSpec): TensorSpec {
    const name = module === null ? role : `${module}.${role}`;
    if (this.tensorNames.has(name)) throw internal(`duplicate tensor '${name}'`);
    this.tensorNames.add(name);
    const dtype = role === 'num_batches_tracked' ? 'int64' : 'float32';
    return { name, role, shape, dtype, kind, trainable, init };
  }

  private push(node: AnyArchNode, shape: readonly number[]): string {
    if (this.shapes.has(node.id)) throw internal(`duplicate node id '${node.id}'`);
    this.nodes.push(node);
    this.shapes.set(node.id, shape);
    return node.id;
  }
}

/** Freezes an object graph (plain objects and arrays) in place. @internal (exported for arch-zoo.ts) */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value as Record<string, unknown>)) deepFreeze(v);
  }
  return value;
}

// #endregion

// #region builders

const EMBEDDING_MAX = 65536;
const OPTION_ALIASES: Readonly<Record<string, string>> = { ...COMMON_ALIASES, num_features: 'embeddingSize', input_size: 'inputSize' };

/**
 * The IResNet graph of SPEC §8.1 (arcface_torch iresnet.py), with its state-dict keys.
 *
 * Stem conv3×3 3→64 (stride 1) → BN2d → PReLU; four stages of IBasicBlocks with widths 64, 128, 256,
 * 512 (64·[1, 2, 4, 8]; `baseWidth` replaces the 64), each stage's first block strided (layer1 too: 112 → 56 → 28 → 14 → 7) with a conv1×1 + BN
 * downsample shortcut; block = BN → conv3×3 → BN → PReLU → conv3×3 (stride here) → BN, plus the
 * shortcut, no activation after the add. Head: BN2d → flatten → dropout → fc (with bias) →
 * BatchNorm1d `features` whose weight is frozen at 1.
 *
 * Keys (block b of stage s): `conv1.weight`, `bn1.*`, `prelu.weight`, `layer{s}.{b}.bn1.*`,
 * `.conv1.weight`, `.bn2.*`, `.prelu.weight`, `.conv2.weight`, `.bn3.*`, and on block 0
 * `.downsample.0.weight`, `.downsample.1.*`; then `bn2.*`, `fc.weight`, `fc.bias`, `features.*`, where
 * BatchNorm `*` = weight, bias, running_mean, running_var, num_batches_tracked.
 *
 * @param depth 18, 34, 50, 100 or 200.
 * @throws {TypeError} for a wrong type or an unknown option; {RangeError} for a value out of range.
 * @example
 * const arch = iresnetArch(100, { embeddingSize: 512 });
 * arch.name;                               // 'r100'
 * parameterCount(arch);                    // 65156160
 * trainableParameterCount(arch);           // 65155648 (features.weight is frozen)
 */
export function iresnetArch(depth: IResNetDepth, options?: IResNetArchOptions): BackboneArch {
  // Apply defaults
  const opts = optionsObject(options, 'options');
  assertKnownOptions(opts, 'iresnetArch', ['embeddingSize', 'dropout', 'inputSize', 'baseWidth'], OPTION_ALIASES);
  const embeddingSize = opts.embeddingSize ?? 512;
  const dropout = opts.dropout ?? 0;
  const inputSize = opts.inputSize ?? 112;
  const baseWidth = opts.baseWidth ?? IRESNET_WIDTHS[0];

  // Validate arguments
  if (!is.number(depth)) throw invalidParameterError('depth', `one of ${IRESNET_DEPTHS.join(', ')}`, depth);
  if (!is.inArray(depth, IRESNET_DEPTHS)) throw outOfRangeError('depth', `one of ${IRESNET_DEPTHS.join(', ')}`, depth);
  assertInteger(embeddingSize, 'embeddingSize', 1, EMBEDDING_MAX);
  assertNumber(dropout, 'dropout', 0, 1);
  if (dropout >= 1) throw outOfRangeError('dropout', 'a number in [0, 1)', dropout);
  assertInteger(inputSize, 'inputSize', 16, 1024);
  assertInteger(baseWidth, 'baseWidth', 1, 1024);

  // Interpret options
  const layers = IRESNET_LAYERS[depth];
  const widths = IRESNET_WIDTHS.map((w) => (w / IRESNET_WIDTHS[0]) * baseWidth);
  const g = new GraphBuilder(IRESNET_INIT, 3, inputSize);
  let x = g.conv('conv1', 'input', baseWidth, 3, 1, 1);
  x = g.batchNorm('batchnorm2d', 'bn1', x);
  x = g.prelu('prelu', x);
  let inplanes = baseWidth;
  for (let s = 0; s < 4; s++) {
    const planes = widths[s];
    for (let b = 0; b < layers[s]; b++) {
      const stride = b === 0 ? 2 : 1; // every stage's first block is strided (arcface_torch _make_layer(stride=2))
      const p = `layer${s + 1}.${b}`;
      const blockIn = x;
      let y = g.batchNorm('batchnorm2d', `${p}.bn1`, blockIn);
      y = g.conv(`${p}.conv1`, y, planes, 3, 1, 1);
      y = g.batchNorm('batchnorm2d', `${p}.bn2`, y);
      y = g.prelu(`${p}.prelu`, y);
      y = g.conv(`${p}.conv2`, y, planes, 3, stride, 1); // the stride is on the second conv
      y = g.batchNorm('batchnorm2d', `${p}.bn3`, y);
      let shortcut = blockIn;
      if (stride !== 1 || inplanes !== planes) {
        shortcut = g.conv(`${p}.downsample.0`, blockIn, planes, 1, stride, 0);
        shortcut = g.batchNorm('batchnorm2d', `${p}.downsample.1`, shortcut);
      }
      x = g.add(`${p}.add`, y, shortcut);
      inplanes = planes;
    }
  }
  x = g.batchNorm('batchnorm2d', 'bn2', x);
  x = g.flatten('flatten', null, x); // torch.flatten(x, 1), a function in the reference
  x = g.dropout('dropout', x, dropout);
  x = g.linear('fc', x, embeddingSize, true);
  x = g.batchNorm('batchnorm1d', 'features', x, true);

  // baseWidth is recorded only when it differs from the reference's, so default configs stay as they were.
  const config: IResNetConfig = { family: 'iresnet', depth, layers, embeddingSize, dropout, inputSize, ...(baseWidth !== IRESNET_WIDTHS[0] ? { baseWidth } : {}) };
  return deepFreeze({
    name: `r${depth}`,
    config,
    reference: IRESNET_REFERENCE,
    nodes: g.nodes as ArchNode[],
    output: x,
    inputShape: [3, inputSize, inputSize] as const,
    embeddingSize,
    preprocessing: arcfacePreprocessing(inputSize),
  });
}

/**
 * The MobileFaceNet graph of SPEC §8.2 (arcface_torch mobilefacenet.py, "mbf"), with its state-dict
 * keys. With c = 64·scale:
 *
 * | index | module | layout |
 * |---|---|---|
 * | layers.0 | ConvBlock | conv3×3 3→c stride 2 (112 → 56) + BN + PReLU |
 * | layers.1 | ConvBlock, or Residual when blocks[0] ≠ 1 | 3×3 c→c groups 64; Residual(c, blocks[0], g=128) |
 * | layers.2 | DepthWise | c→c stride 2 (→ 28), g=128 |
 * | layers.3 | Residual | blocks[1] × DepthWise(c, g=128) |
 * | layers.4 | DepthWise | c→2c stride 2 (→ 14), g=256 |
 * | layers.5 | Residual | blocks[2] × DepthWise(2c, g=256) |
 * | layers.6 | DepthWise | 2c→2c stride 2 (→ 7), g=512 |
 * | layers.7 | Residual | blocks[3] × DepthWise(2c, g=256) |
 * | conv_sep | ConvBlock | 1×1 2c→512 |
 * | features | GDC | depthwise 7×7 conv 512 + BN, flatten, Linear 512→E (no bias), BatchNorm1d(E) |
 *
 * ConvBlock = `layers.0` conv, `layers.1` BN, `layers.2` PReLU; LinearBlock = conv + BN;
 * DepthWise(in, out, g) = `layers.0` ConvBlock 1×1 in→g, `layers.1` ConvBlock 3×3 depthwise g (the
 * stride), `layers.2` LinearBlock 1×1 g→out, plus the input when residual. Residual = `layers.{i}`
 * DepthWise blocks. So keys read e.g. `layers.2.layers.1.layers.0.weight` (the strided depthwise
 * conv of layers.2) and `layers.3.layers.0.layers.2.layers.1.running_var`.
 *
 * @throws {TypeError} for a wrong type or an unknown option; {RangeError} for a value out of range.
 * @example
 * const mbf = mobileFaceNetArch();
 * parameterCount(mbf);   // 2059520
 * macs(mbf);             // 437520896
 */
export function mobileFaceNetArch(options?: MobileFaceNetArchOptions): BackboneArch {
  // Apply defaults
  const opts = optionsObject(options, 'options');
  assertKnownOptions(opts, 'mobileFaceNetArch', ['embeddingSize', 'blocks', 'scale'], OPTION_ALIASES);
  const embeddingSize = opts.embeddingSize ?? 512;
  const blocksArg = opts.blocks ?? MBF_BLOCKS;
  const scale = opts.scale ?? MBF_SCALE;

  // Validate arguments
  assertInteger(embeddingSize, 'embeddingSize', 1, EMBEDDING_MAX);
  if (!Array.isArray(blocksArg) || blocksArg.length !== 4) throw invalidParameterError('blocks', 'an array of 4 integers', blocksArg);
  blocksArg.forEach((v: unknown, i: number) => assertInteger(v, `blocks[${i}]`, 0, 128));
  assertInteger(scale, 'scale', 1, 16);

  // Interpret options
  const blocks = Object.freeze([...(blocksArg as number[])]) as unknown as readonly [number, number, number, number];
  const c = 64 * scale;
  const g = new GraphBuilder(MBF_INIT, 3, 112);

  const convBlock = (m: string, from: string, out: number, k: number, s: number, p: number, groups = 1): string => {
    let y = g.conv(`${m}.layers.0`, from, out, k, s, p, groups);
    y = g.batchNorm('batchnorm2d', `${m}.layers.1`, y);
    return g.prelu(`${m}.layers.2`, y);
  };
  const linearBlock = (m: string, from: string, out: number, k: number, s: number, p: number, groups = 1): string => {
    const y = g.conv(`${m}.layers.0`, from, out, k, s, p, groups);
    return g.batchNorm('batchnorm2d', `${m}.layers.1`, y);
  };
  const depthWise = (m: string, from: string, out: number, stride: number, groups: number, residual: boolean): string => {
    let y = convBlock(`${m}.layers.0`, from, groups, 1, 1, 0);
    y = convBlock(`${m}.layers.1`, y, groups, 3, stride, 1, groups);
    y = linearBlock(`${m}.layers.2`, y, out, 1, 1, 0);
    return residual ? g.add(`${m}.add`, y, from) : y;
  };
  const residual = (m: string, from: string, ch: number, n: number, groups: number): string => {
    let y = from;
    for (let i = 0; i < n; i++) y = depthWise(`${m}.layers.${i}`, y, ch, 1, groups, true);
    return y;
  };

  let x = convBlock('layers.0', 'input', c, 3, 2, 1);
  x = blocks[0] === 1 ? convBlock('layers.1', x, c, 3, 1, 1, 64) : residual('layers.1', x, c, blocks[0], 128);
  x = depthWise('layers.2', x, c, 2, 128, false);
  x = residual('layers.3', x, c, blocks[1], 128);
  x = depthWise('layers.4', x, 2 * c, 2, 256, false);
  x = residual('layers.5', x, 2 * c, blocks[2], 256);
  x = depthWise('layers.6', x, 2 * c, 2, 512, false);
  x = residual('layers.7', x, 2 * c, blocks[3], 256);
  x = convBlock('conv_sep', x, 512, 1, 1, 0);
  // GDC: the reference hard-codes a 7×7 depthwise kernel over 512 channels.
  x = linearBlock('features.layers.0', x, 512, 7, 1, 0, 512);
  x = g.flatten('features.layers.1', 'features.layers.1', x);
  x = g.linear('features.layers.2', x, embeddingSize, false);
  x = g.batchNorm('batchnorm1d', 'features.layers.3', x);

  const isMbf = blocks.join() === MBF_BLOCKS.join() && scale === MBF_SCALE;
  const isLarge = blocks.join() === MBF_LARGE_BLOCKS.join() && scale === MBF_LARGE_SCALE;
  const name = isMbf ? 'mbf' : isLarge ? 'mbf_large' : `mbf_b${blocks.join('-')}_s${scale}`;
  const config: MobileFaceNetConfig = { family: 'mobilefacenet', blocks, scale, embeddingSize, inputSize: 112 };
  return deepFreeze({
    name,
    config,
    reference: MBF_REFERENCE,
    nodes: g.nodes as ArchNode[],
    output: x,
    inputShape: [3, 112, 112] as const,
    embeddingSize,
    preprocessing: arcfacePreprocessing(112),
  });
}

/**
 * mbf_large (arcface_torch get_mbf_large): {@link mobileFaceNetArch} with blocks [2, 8, 12, 4] and
 * scale 4.
 *
 * @example
 * parameterCount(mobileFaceNetLargeArch()); // 6314880
 */
export function mobileFaceNetLargeArch(options?: Pick<MobileFaceNetArchOptions, 'embeddingSize'>): BackboneArch {
  const opts = optionsObject(options, 'options');
  assertKnownOptions(opts, 'mobileFaceNetLargeArch', ['embeddingSize'], OPTION_ALIASES);
  return mobileFaceNetArch({ ...opts, blocks: MBF_LARGE_BLOCKS, scale: MBF_LARGE_SCALE });
}

/** The names {@link backboneArch} accepts (arcface_torch get_model names). */
export const BACKBONE_NAMES = ['r18', 'r34', 'r50', 'r100', 'r200', 'mbf', 'mbf_large'] as const;
export type BackboneName = (typeof BACKBONE_NAMES)[number];

/**
 * A backbone by its arcface_torch `get_model` name, or by a second-batch preset name
 * ({@link ZOO_BACKBONE_NAMES}: 'mobilenetv3_large', 'efficientnet_b0', 'ghostfacenet_v1_1.3_1',
 * 'edgeface_s_gamma_05', 'vit_s', 'deit_s_distilled', 'if_vit_s', …; see arch-zoo.ts). Note that
 * 'vit_s'/'vit_b' are timm's ViT-S/8 and ViT-B/8; insightface's get_model 'vit_s' is 'if_vit_s'.
 *
 * @example
 * backboneArch('r50', { embeddingSize: 256 }).embeddingSize; // 256
 * backboneArch('mbf').name;                                  // 'mbf'
 * parameterCount(backboneArch('vit_s'));                     // 21641600
 */
export function backboneArch(name: BackboneName, options?: IResNetArchOptions | MobileFaceNetArchOptions): BackboneArch;
export function backboneArch(name: ZooBackboneName, options?: ZooArchOptions): BackboneArch<AnyArchNode>;
export function backboneArch(name: BackboneName | ZooBackboneName, options?: IResNetArchOptions | MobileFaceNetArchOptions | ZooArchOptions): BackboneArch<AnyArchNode> {
  if (!is.string(name)) throw invalidParameterError('name', `one of ${BACKBONE_NAMES.map((n) => `'${n}'`).join(', ')}`, name);
  if (is.inArray(name, ZOO_BACKBONE_NAMES)) return zooBackboneArch(name, options as ZooArchOptions);
  if (!is.inArray(name, BACKBONE_NAMES)) {
    const e = outOfRangeError('name', `one of ${BACKBONE_NAMES.map((n) => `'${n}'`).join(', ')}`, name);
    e.message += ` (second-batch backbones: ${ZOO_BACKBONE_NAMES.map((n) => `'${n}'`).join(', ')})`;
    throw e;
  }
  if (name === 'mbf') return mobileFaceNetArch(options as MobileFaceNetArchOptions);
  if (name === 'mbf_large') return mobileFaceNetLargeArch(options as MobileFaceNetArchOptions);
  return iresnetArch(Number(name.slice(1)) as IResNetDepth, options as IResNetArchOptions);
}

// #endregion

// #region transforms

/**
 * The graph with each listed BatchNorm folded into the conv2d or linear layer right before it: the
 * BatchNorm node disappears (its readers read the layer), and the layer gains a bias when it has
 * none (`<module>.bias`, initialized to 0). With the weights folded as eval BatchNorm prescribes
 * (w·s, beta + (b − mean)·s with s = gamma/√(var + eps); what ONNX exporters store and what
 * recognizeOnnx returns for a folded file) the folded graph computes the original one in eval mode.
 * Training the folded graph trains another network (no batch statistics), which is allowed.
 *
 * @param pairs every { layer, batchNorm } to fold: the BatchNorm must read the layer, be its only
 *   reader, and have as many features as the layer has outputs.
 * @throws {FacecudaError} `INVALID_ARGUMENT` naming the first pair that cannot be folded.
 * @example
 * const folded = foldBatchNorms(iresnetArch(18), [{ layer: 'layer1.0.conv1', batchNorm: 'layer1.0.bn2' }]);
 * folded.nodes.find((n) => n.id === 'layer1.0.conv1'); // { op: 'conv2d', bias: true, ... }
 */
export function foldBatchNorms(arch: BackboneArch, pairs: readonly { readonly layer: string; readonly batchNorm: string }[]): BackboneArch {
  // Validate arguments
  if (!Array.isArray(pairs)) throw invalidParameterError('pairs', 'an array of { layer, batchNorm }', pairs);
  const byId = new Map(arch.nodes.map((n) => [n.id, n]));
  const readers = new Map<string, string[]>();
  for (const n of arch.nodes) for (const i of n.inputs) readers.set(i, [...(readers.get(i) ?? []), n.id]);
  const bnOf = new Map<string, string>();
  const layerOf = new Map<string, string>();
  pairs.forEach((pair, k) => {
    const bad = (why: string): FacecudaError =>
      new FacecudaError('INVALID_ARGUMENT', `pairs[${k}] (${JSON.stringify(pair)}) cannot be folded: ${why}`);
    if (!is.object(pair) || !is.string(pair.layer) || !is.string(pair.batchNorm)) throw invalidParameterError(`pairs[${k}]`, '{ layer, batchNorm } with string ids', pair);
    const layer = byId.get(pair.layer);
    const bn = byId.get(pair.batchNorm);
    if (!layer || (layer.op !== 'conv2d' && layer.op !== 'linear')) throw bad(`'${pair.layer}' is not a conv2d or linear node of ${arch.name}`);
    if (!bn || (bn.op !== 'batchnorm2d' && bn.op !== 'batchnorm1d')) throw bad(`'${pair.batchNorm}' is not a BatchNorm node of ${arch.name}`);
    if (bn.inputs[0] !== layer.id) throw bad(`'${bn.id}' reads '${bn.inputs[0]}', not '${layer.id}'`);
    const r = readers.get(layer.id) ?? [];
    if (r.length !== 1 || arch.output === layer.id) throw bad(`'${layer.id}' has other readers than '${bn.id}' (${r.join(', ')})`);
    if (bn.features !== (layer.op === 'conv2d' ? layer.outC : layer.out)) throw bad(`'${bn.id}' has ${bn.features} features for '${layer.id}'s outputs`);
    if (bnOf.has(layer.id) || layerOf.has(bn.id)) throw bad('listed twice');
    bnOf.set(layer.id, bn.id);
    layerOf.set(bn.id, layer.id);
  });

  // Interpret options
  const nodes: ArchNode[] = [];
  for (const n of arch.nodes) {
    if (layerOf.has(n.id)) continue;
    const inputs = n.inputs.map((i) => layerOf.get(i) ?? i);
    let node = { ...n, inputs } as ArchNode;
    if ((n.op === 'conv2d' || n.op === 'linear') && bnOf.has(n.id)) {
      const out = n.op === 'conv2d' ? n.outC : n.out;
      const tensors = n.bias
        ? n.tensors
        : [...n.tensors, Object.freeze({
          name: `${n.module ?? n.id}.bias`, role: 'bias', shape: Object.freeze([out]), dtype: 'float32', kind: 'parameter', trainable: true,
          init: Object.freeze({ kind: 'constant', value: 0 }),
        } as TensorSpec)];
      node = { ...node, bias: true, tensors: Object.freeze(tensors) } as ArchNode;
    }
    nodes.push(Object.freeze(node));
  }
  const folds = [...(arch.folds ?? []), ...pairs.map((p) => Object.freeze({ layer: p.layer, batchNorm: p.batchNorm }))];
  const folded: BackboneArch = Object.freeze({
    ...arch,
    nodes: Object.freeze(nodes),
    output: layerOf.get(arch.output) ?? arch.output,
    folds: Object.freeze(folds),
  });
  inferShapes(folded);
  return folded;
}

// #endregion

// #region analysis

function shapeMismatch(node: AnyArchNode, expected: string, actual: readonly number[]): FacecudaError {
  return new FacecudaError('SHAPE_MISMATCH', `node '${node.id}' (${node.op}) expects ${expected} but receives [${actual.join(', ')}]`);
}

/**
 * Shape inference through the whole graph, independent of the builders: checks every node against
 * its inputs (channels, groups, kernel fit, BatchNorm features, PReLU channels, linear inputs, equal
 * shapes at adds) and returns each node's output shape for a batch.
 *
 * @param inputShape [N, 3, H, W] (default [1, ...arch.inputShape]). Another H or W than the model's
 *   passes through the convolutions but fails at fc when the flattened size changes.
 * @returns node id → output shape, N first.
 * @throws {FacecudaError} code 'SHAPE_MISMATCH' naming the first node that does not fit.
 * @example
 * const shapes = inferShapes(iresnetArch(50), [8, 3, 112, 112]);
 * shapes.get('layer1.0.conv2'); // [8, 64, 56, 56]
 * shapes.get('features');       // [8, 512]
 */
export function inferShapes(arch: BackboneArch<AnyArchNode>, inputShape?: readonly number[]): Map<string, readonly number[]> {
  // Apply defaults
  const input = inputShape ?? [1, ...arch.inputShape];

  // Validate arguments
  if (!Array.isArray(input) || input.length !== 4) throw invalidParameterError('inputShape', 'an array [N, C, H, W]', input);
  input.forEach((v: unknown, i: number) => assertInteger(v, `inputShape[${i}]`, 1));

  // Interpret options
  const shapes = new Map<string, readonly number[]>();
  const get = (node: AnyArchNode, i: number): readonly number[] => {
    const s = shapes.get(node.inputs[i]);
    if (!s) throw new FacecudaError('SHAPE_MISMATCH', `node '${node.id}' reads '${node.inputs[i]}', which is not an earlier node`);
    return s;
  };
  for (const node of arch.nodes) {
    if (shapes.has(node.id)) throw new FacecudaError('SHAPE_MISMATCH', `node id '${node.id}' appears twice`);
    let out: readonly number[];
    switch (node.op) {
      case 'input': {
        if (input[1] !== node.channels) throw shapeMismatch(node, `[N, ${node.channels}, H, W]`, input);
        out = [...input];
        break;
      }
      case 'conv2d': {
        const s = get(node, 0);
        if (s.length !== 4 || s[1] !== node.inC) throw shapeMismatch(node, `[N, ${node.inC}, H, W]`, s);
        if (node.inC % node.groups !== 0 || node.outC % node.groups !== 0) {
          throw shapeMismatch(node, `channels divisible by groups ${node.groups}`, s);
        }
        const pads = node.asymmetricPadding;
        const ho = pads ? Math.floor((s[2] + pads[0] + pads[1] - node.kernel) / node.stride) + 1 : convOutputSize(s[2], node.kernel, node.stride, node.padding);
        const wo = pads ? Math.floor((s[3] + pads[2] + pads[3] - node.kernel) / node.stride) + 1 : convOutputSize(s[3], node.kernel, node.stride, node.padding);
        if (ho < 1 || wo < 1) throw shapeMismatch(node, `a map of at least ${node.kernel - 2 * node.padding} pixels`, s);
        out = [s[0], node.outC, ho, wo];
        break;
      }
      case 'batchnorm2d': {
        const s = get(node, 0);
        if (s.length !== 4 || s[1] !== node.features) throw shapeMismatch(node, `[N, ${node.features}, H, W]`, s);
        out = s;
        break;
      }
      case 'batchnorm1d': {
        const s = get(node, 0);
        if (s.length !== 2 || s[1] !== node.features) throw shapeMismatch(node, `[N, ${node.features}]`, s);
        out = s;
        break;
      }
      case 'prelu': {
        const s = get(node, 0);
        if (s.length < 2 || s[1] !== node.channels) throw shapeMismatch(node, `[N, ${node.channels}, ...]`, s);
        out = s;
        break;
      }
      case 'relu':
      case 'dropout':
      case 'relu6':
      case 'hardsigmoid':
      case 'hardswish':
      case 'silu':
      case 'sigmoid':
      case 'gelu':
      case 'droppath': {
        const s = get(node, 0);
        if (node.op === 'droppath' && !(node.p >= 0 && node.p < 1)) throw shapeMismatch(node, 'a drop probability in [0, 1)', s);
        out = s;
        break;
      }
      case 'globalavgpool': {
        const s = get(node, 0);
        if (s.length !== 4) throw shapeMismatch(node, '[N, C, H, W]', s);
        out = [s[0], s[1], 1, 1];
        break;
      }
      case 'mul': {
        const x = get(node, 0);
        const g = get(node, 1);
        const ok = x.join() === g.join()
          || (x.length === 4 && g[0] === x[0] && g[1] === x[1] && (g.length === 2 || (g.length === 4 && g[2] === 1 && g[3] === 1)));
        if (!ok) throw shapeMismatch(node, `a gate of [${x.join(', ')}], [${x[0]}, ${x[1]}, 1, 1] or [${x[0]}, ${x[1]}]`, g);
        out = x;
        break;
      }
      case 'layernorm':
      case 'layerscale': {
        const s = get(node, 0);
        const f = node.op === 'layernorm' ? node.features : node.channels;
        if (node.layout === 'channels' ? s.length !== 4 || s[1] !== f : s.length < 2 || s[s.length - 1] !== f) {
          throw shapeMismatch(node, node.layout === 'channels' ? `[N, ${f}, H, W]` : `[N, ..., ${f}]`, s);
        }
        out = s;
        break;
      }
      case 'attention':
      case 'xca': {
        const s = get(node, 0);
        if (node.dim % node.heads !== 0) throw shapeMismatch(node, `dim ${node.dim} divisible by ${node.heads} heads`, s);
        if (s.length !== 3 || s[2] !== 3 * node.dim) throw shapeMismatch(node, `qkv [N, T, ${3 * node.dim}]`, s);
        out = [s[0], s[1], node.dim];
        break;
      }
      case 'totokens': {
        const s = get(node, 0);
        if (s.length !== 4) throw shapeMismatch(node, '[N, C, H, W]', s);
        out = [s[0], s[2] * s[3], s[1]];
        break;
      }
      case 'tomap': {
        const s = get(node, 0);
        if (s.length !== 3 || s[1] !== node.height * node.width) throw shapeMismatch(node, `[N, ${node.height * node.width}, C] (${node.height}×${node.width} tokens)`, s);
        out = [s[0], s[2], node.height, node.width];
        break;
      }
      case 'prependtokens': {
        const s = get(node, 0);
        if (s.length !== 3 || s[2] !== node.dim) throw shapeMismatch(node, `[N, T, ${node.dim}]`, s);
        out = [s[0], s[1] + node.count, s[2]];
        break;
      }
      case 'posembed': {
        const s = get(node, 0);
        if (s.length !== 3 || s[1] !== node.tokens || s[2] !== node.dim) {
          const inp = arch.nodes[0].op === 'input' ? arch.nodes[0] : null;
          const sizes = inp ? ` (the model's ${inp.height}×${inp.width} input; this input is ${input[2]}×${input[3]})` : '';
          throw shapeMismatch(node, `[N, ${node.tokens}, ${node.dim}]${sizes}`, s);
        }
        out = s;
        break;
      }
      case 'fourierposembed': {
        const s = get(node, 0);
        if (s.length !== 4) throw shapeMismatch(node, '[N, C, H, W]', s);
        out = [s[0], s[2] * s[3], node.dim];
        break;
      }
      case 'tokenpool': {
        const s = get(node, 0);
        if (s.length !== 3 || node.index < 0 || node.index >= s[1]) throw shapeMismatch(node, `[N, T, D] with T > ${node.index}`, s);
        out = node.mode === 'flatten' ? [s[0], s[1] * s[2]] : [s[0], s[2]];
        break;
      }
      case 'tokenmask': {
        const s = get(node, 0);
        if (s.length !== 3 || s[2] !== node.dim) throw shapeMismatch(node, `[N, T, ${node.dim}]`, s);
        out = s;
        break;
      }
      case 'concat': {
        const parts = node.inputs.map((_, i) => get(node, i));
        const a = parts[0];
        for (const b of parts) {
          if (b.length !== 4 || a.length !== 4 || b[0] !== a[0] || b[2] !== a[2] || b[3] !== a[3]) throw shapeMismatch(node, `maps of [${a[0]}, C, ${a[2]}, ${a[3]}]`, b);
        }
        out = [a[0], parts.reduce((c, b) => c + b[1], 0), a[2], a[3]];
        break;
      }
      case 'slice': {
        const s = get(node, 0);
        if (s.length !== 4 || node.start < 0 || node.length < 1 || node.start + node.length > s[1]) {
          throw shapeMismatch(node, `a map of at least ${node.start + node.length} channels`, s);
        }
        out = [s[0], node.length, s[2], s[3]];
        break;
      }
      case 'average': {
        const a = get(node, 0);
        node.inputs.forEach((_, i) => {
          const b = get(node, i);
          if (a.join() !== b.join()) throw shapeMismatch(node, `inputs of [${a.join(', ')}]`, b);
        });
        out = a;
        break;
      }
      case 'flatten': {
        const s = get(node, 0);
        out = [s[0], s.slice(1).reduce((a, b) => a * b, 1)];
        break;
      }
      case 'linear': {
        const s = get(node, 0);
        if ((s.length !== 2 && s.length !== 3) || s[s.length - 1] !== node.in) throw shapeMismatch(node, s.length === 3 ? `[N, T, ${node.in}]` : `[N, ${node.in}]`, s);
        out = [...s.slice(0, -1), node.out];
        break;
      }
      case 'add': {
        const a = get(node, 0);
        const b = get(node, 1);
        if (a.join() !== b.join()) throw shapeMismatch(node, `a second input of [${a.join(', ')}]`, b);
        out = a;
        break;
      }
      default: {
        // A hand-made or loaded graph can name any op: an argument error, not an internal one.
        const never: never = node;
        const n = never as { id: string; op: unknown };
        throw new FacecudaError('NOT_IMPLEMENTED', `node '${n.id}': unknown op '${String(n.op)}'`);
      }
    }
    shapes.set(node.id, Object.freeze([...out]));
  }
  return shapes;
}

/**
 * The embedding shape for an input: [N, embeddingSize].
 *
 * @throws {FacecudaError} code 'SHAPE_MISMATCH' when the input does not fit the model.
 * @example
 * outputShape(mobileFaceNetArch(), [4, 3, 112, 112]); // [4, 512]
 */
export function outputShape(arch: BackboneArch<AnyArchNode>, inputShape?: readonly number[]): readonly number[] {
  const shape = inferShapes(arch, inputShape).get(arch.output);
  if (!shape) throw internal(`output node '${arch.output}' is not in the graph`);
  return shape;
}

/**
 * Every tensor of the model in the reference's `state_dict()` order: node by node, each node's
 * parameters then buffers.
 *
 * @example
 * stateDictTensors(iresnetArch(18)).map((t) => t.name).slice(0, 3); // ['conv1.weight', 'bn1.weight', 'bn1.bias']
 */
export function stateDictTensors(arch: BackboneArch<AnyArchNode>): TensorSpec[] {
  return arch.nodes.flatMap((n) => n.tensors);
}

function elements(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * The number of parameter elements (PyTorch's `sum(p.numel() for p in model.parameters())`),
 * frozen ones included; with `includeBuffers` also the BatchNorm buffers (running_mean, running_var,
 * and one element per num_batches_tracked).
 *
 * @example
 * parameterCount(iresnetArch(50));                            // 43590848
 * parameterCount(iresnetArch(50), { includeBuffers: true });  // 43629071 (+ 38144 running stats + 79 num_batches_tracked)
 */
export function parameterCount(arch: BackboneArch<AnyArchNode>, options?: ParameterCountOptions): number {
  const opts = optionsObject(options, 'options');
  assertKnownOptions(opts, 'parameterCount', ['includeBuffers']);
  const includeBuffers = opts.includeBuffers ?? false;
  if (!is.bool(includeBuffers)) throw invalidParameterError('includeBuffers', 'a boolean', includeBuffers);
  let n = 0;
  for (const t of stateDictTensors(arch)) if (t.kind === 'parameter' || includeBuffers) n += elements(t.shape);
  return n;
}

/**
 * The number of parameter elements the optimizer updates (IResNet's frozen `features.weight` is
 * left out).
 *
 * @example
 * trainableParameterCount(iresnetArch(50)); // 43590336
 */
export function trainableParameterCount(arch: BackboneArch<AnyArchNode>): number {
  let n = 0;
  for (const t of stateDictTensors(arch)) if (t.trainable) n += elements(t.shape);
  return n;
}

/**
 * Per node: output shape (per sample), parameter elements and MACs at the model's input size.
 *
 * @example
 * summarize(iresnetArch(18)).find((r) => r.id === 'fc'); // { op: 'linear', outputShape: [512], params: 12845568, macs: 12845056, ... }
 */
export function summarize(arch: BackboneArch<AnyArchNode>): NodeSummary[] {
  const shapes = inferShapes(arch);
  return arch.nodes.map((node) => {
    const outShape = (shapes.get(node.id) as readonly number[]).slice(1);
    let m = 0;
    if (node.op === 'conv2d') m = node.outC * (node.inC / node.groups) * node.kernel * node.kernel * outShape[1] * outShape[2];
    else if (node.op === 'linear') m = node.in * node.out * elements(outShape.slice(0, -1)); // per token
    else if (node.op === 'attention') m = 2 * outShape[0] * outShape[0] * node.dim; // QKᵀ and PV over all heads
    else if (node.op === 'xca') m = 2 * outShape[0] * node.dim * (node.dim / node.heads); // q̂k̂ᵀ (d×d per head) and A·v
    else if (node.op === 'fourierposembed') m = 2 * node.hiddenDim * node.dim * outShape[0]; // the 1×1 projection
    let params = 0;
    for (const t of node.tensors) if (t.kind === 'parameter') params += elements(t.shape);
    return { id: node.id, op: node.op, module: node.module, outputShape: outShape, params, macs: m };
  });
}

/**
 * Multiply-accumulates of all convolutions and linear layers for one sample at the model's input
 * size (SPEC §8.1/§8.2's "conv+fc MACs"; arcface_torch's flops.py "GFLOPs" up to BN/PReLU/add terms).
 *
 * @example
 * macs(iresnetArch(100)) / 1e9; // 12.0896…
 */
export function macs(arch: BackboneArch<AnyArchNode>): number {
  return summarize(arch).reduce((a, r) => a + r.macs, 0);
}

// #endregion
