/**
 * Architecture descriptions of the second backbone batch (SPEC-BACKBONES.md): the face variants
 * (112×112 aligned input → 512-d embedding) of MobileNetV3-L, EfficientNet-B0, GhostNet,
 * EdgeNeXt-S/EdgeFace, ViT-S/B, DeiT-S and insightface's ViT, as graphs of {@link ./arch} nodes.
 * Re-exported by lib/backbones/arch.ts.
 *
 * | builder | presets (name) | parameters | SPEC-BACKBONES | state-dict names |
 * |---|---|---|---|---|
 * | {@link mobileNetV3Arch} | 'A' mobilenetv3_large / 'B' mobilenetv3_large_cavaface | 3,513,456 / 3,199,200 | §3 | timm mobilenetv3 / cavaface backbone/mobilenetv3.py |
 * | {@link efficientNetArch} | 'A' efficientnet_b0 / 'B' efficientnet_b0_cavaface | 4,729,212 / 4,067,964 | §4 | timm efficientnet / cavaface backbone/efficientnet.py |
 * | {@link ghostNetArch} | 'v1-1.3-1' ghostfacenet_v1_1.3_1 / 'ghostnet-1.0-gdc' ghostnet_1.0_gdc | 4,060,260 / 3,212,932 | §5 | timm ghostnet (GhostFaceNets is Keras) |
 * | {@link edgeNeXtArch} | edgenext_small / lowRank: edgeface_s_gamma_05 | 5,437,992 / 3,652,520 | §6 | timm edgenext / EdgeFace (`model.` prefix, LoRaLin `linear1`/`linear2`) |
 * | {@link vitArch} | vit_s / vit_b (8×8 patches, class token) | 21,641,600 / 85,750,016 | §7.2 | timm vision_transformer |
 * | {@link deitArch} | deit_s_distilled / deit_s | 21,839,488 / 21,641,600 | §7.2 | timm deit |
 * | {@link insightfaceVitArch} | if_vit_s / if_vit_b (9×9 patches, flatten head) | 76,023,296 / 113,833,472 | §7.3 | arcface_torch backbones/vit.py |
 *
 * Face heads: the CNNs end in a GDC head (depthwise conv over the whole 7×7 map + BN, flatten,
 * Linear → 512 without bias, BatchNorm1d) under cavaface's GDC names (`output_layer.conv_6_dw.conv`,
 * `.conv_6_dw.bn`, `.linear`, `.bn`; cavaface EfficientNet: `output.*`); GhostFaceNets' head has a
 * 1×1 conv with bias instead of the Linear (`output_layer.conv`).
 *
 * Node order is execution order; for modules whose own parameters PyTorch lists before their
 * children (EdgeNeXt's `gamma`, `gamma_xca`; ViT's `cls_token`, `pos_embed`) {@link stateDictTensors}
 * gives the same keys in another order than the reference's state_dict — names and shapes match.
 *
 * Inits follow the references where InitSpec can say it (truncated normals with bounds ≥ 2σ are given
 * as the plain normal; timm's depthwise fan_out k²·C/groups is used for depthwise convs).
 */
import { FacecudaError, invalidParameterError, outOfRangeError } from '../errors';
import { assertInteger, assertKnownOptions, assertNumber, COMMON_ALIASES, is, optionsObject } from '../validate';
import {
  AnyArchNode, arcfacePreprocessing, BackboneArch, constant, deepFreeze, GraphBuilder, InitSpec, kaimingNormalFanOut, kaimingUniformDefault,
  linearDefaultBias, Preprocessing, tfSamePadding, WeightInit, ZooConfig,
} from './arch';

// #region public types

/** Options every builder here takes. */
export interface ZooArchOptions {
  /** Size of the embedding (default 512). */
  embeddingSize?: number;
}

/** Options of {@link mobileNetV3Arch} and {@link efficientNetArch}. */
export interface CnnPresetOptions extends ZooArchOptions {
  /** 'A' (default): timm blocks, stride-1 stem, GDC head; 'B': cavaface's PReLU variant with a 512-channel last conv. */
  preset?: 'A' | 'B';
}

/** Options of {@link edgeNeXtArch}. */
export interface EdgeNeXtArchOptions extends ZooArchOptions {
  /** EdgeFace low-rank linears (LoRaLin, rank max(2, ⌊γ·min(in, out)⌋)), the head included (default false). */
  lowRank?: boolean;
  /** γ of the low-rank linears (default 0.5, EdgeFace-S). */
  rankRatio?: number;
  /** Stochastic depth: the rate grows linearly over the 18 blocks from 0 to this (default 0: no droppath nodes). */
  dropPathRate?: number;
}

/** Options of {@link vitArch}. */
export interface VitArchOptions extends ZooArchOptions {
  /** Patch size (default 8: 14×14 = 196 patches on 112×112; 16 gives 7×7). */
  patch?: 8 | 16;
  /** Stochastic depth rate, linspace(0, rate, depth) over the blocks (default 0: no droppath nodes). */
  dropPathRate?: number;
}

/** Options of {@link deitArch}. */
export interface DeitArchOptions extends VitArchOptions {
  /** With the distillation token and a second head, averaged at inference (default true). */
  distilled?: boolean;
}

/** Options of {@link insightfaceVitArch}. */
export interface InsightfaceVitArchOptions extends ZooArchOptions {
  /** Stochastic depth rate, linspace(0, rate, depth) (default 0: no droppath nodes; the IF configs use 0.1 or 0.05). */
  dropPathRate?: number;
}

// #endregion

// #region helpers

const INPUT_SIZE = 112;
const EMBEDDING_MAX = 65536;
const ALIASES: Readonly<Record<string, string>> = { ...COMMON_ALIASES, num_features: 'embeddingSize' };
const LN_EPS_TIMM = 1e-6;
const LN_EPS_TORCH = 1e-5;
const IF_BN_EPS = 2e-5;

/** timm/cavaface make_divisible: max(d, ⌊(v + d/2)/d⌋·d), plus d when that is below 0.9·v. */
export function makeDivisible(v: number, divisor = 8): number {
  let n = Math.max(divisor, Math.floor((v + divisor / 2) / divisor) * divisor);
  if (n < 0.9 * v) n += divisor;
  return n;
}

function normal(std: number): InitSpec {
  return { kind: 'normal', mean: 0, std };
}

/** fan_out of a conv weight: k²·outC, or k² for a depthwise conv (one input channel per group). */
function convFanOut(outC: number, inPerGroup: number, kernel: number): number {
  return kernel * kernel * (inPerGroup === 1 ? 1 : outC);
}

/** timm _init_weight_goog: conv N(0, 2/fan_out); Linear U(±1/√out), bias 0. */
const TIMM_GOOG_INIT: WeightInit = {
  conv: (outC, inPerGroup, kernel) => kaimingNormalFanOut(convFanOut(outC, inPerGroup, kernel)),
  linearWeight: (_inF, outF) => ({ kind: 'uniform', low: -1 / Math.sqrt(outF), high: 1 / Math.sqrt(outF) }),
  linearBias: () => constant(0),
};

/** cavaface MobileNetV3: kaiming_normal(fan_out, relu) for Conv2d and Linear, biases 0. */
const CAVA_MNV3_INIT: WeightInit = {
  conv: (outC, _inPerGroup, kernel) => kaimingNormalFanOut(outC * kernel * kernel),
  linearWeight: (_inF, outF) => kaimingNormalFanOut(outF),
  linearBias: () => constant(0),
};

/** cavaface EfficientNet: conv kaiming_uniform_ (a = 0, fan_in) bias 0; Linear PyTorch defaults. */
const CAVA_EFF_INIT: WeightInit = {
  conv: (_outC, inPerGroup, kernel) => {
    const fan = inPerGroup * kernel * kernel;
    return { kind: 'kaimingUniform', mode: 'fan_in', a: 0, fan, gain: Math.SQRT2, bound: Math.SQRT2 * Math.sqrt(3 / fan) };
  },
  linearWeight: (inF) => kaimingUniformDefault(inF),
  linearBias: (inF) => linearDefaultBias(inF),
};

/** Transformers (timm ViT, insightface ViT, EdgeNeXt): Linear N(0, 0.02²), bias 0; convs PyTorch default (EdgeNeXt: N(0, 0.02²)). */
function transformerInit(convStd: number | null): WeightInit {
  return {
    conv: (_outC, inPerGroup, kernel) => (convStd === null ? kaimingUniformDefault(inPerGroup * kernel * kernel) : normal(convStd)),
    convBias: (_outC, inPerGroup, kernel) => (convStd === null ? linearDefaultBias(inPerGroup * kernel * kernel) : constant(0)),
    linearWeight: () => normal(0.02),
    linearBias: () => constant(0),
  };
}

function commonOptions(fn: string, options: unknown, extra: readonly string[]): Record<string, unknown> & { embeddingSize: number } {
  const opts = optionsObject(options, 'options');
  assertKnownOptions(opts, fn, ['embeddingSize', ...extra], ALIASES);
  const embeddingSize = opts.embeddingSize ?? 512;
  assertInteger(embeddingSize, 'embeddingSize', 1, EMBEDDING_MAX);
  return { ...opts, embeddingSize };
}

function dropPathRateOption(opts: Record<string, unknown>): number {
  const rate = opts.dropPathRate ?? 0;
  assertNumber(rate, 'dropPathRate', 0, 1);
  if (rate >= 1) throw outOfRangeError('dropPathRate', 'a number in [0, 1)', rate);
  return rate;
}

function finish(
  g: GraphBuilder, output: string, name: string, config: ZooConfig, reference: string, preprocessing: Preprocessing = arcfacePreprocessing(INPUT_SIZE),
): BackboneArch<AnyArchNode> {
  return deepFreeze({
    name,
    config,
    reference,
    nodes: g.nodes,
    output,
    inputShape: [3, INPUT_SIZE, INPUT_SIZE] as const,
    embeddingSize: config.embeddingSize,
    preprocessing,
  });
}

type Act = 'relu' | 'hardswish' | 'silu' | 'prelu' | 'relu6' | 'gelu';

/** An activation node `id` (PReLU owns `<id>.weight`). */
function act(g: GraphBuilder, kind: Act, id: string, from: string): string {
  return kind === 'prelu' ? g.prelu(id, from) : g.same(kind, id, from);
}

/**
 * The GDC head (SPEC-BACKBONES §2.2): depthwise k×k over the final map (no padding, no bias) + BN2d,
 * flatten, Linear C→E without bias, BatchNorm1d(E).
 */
function gdcHead(g: GraphBuilder, prefix: string, from: string, embeddingSize: number): string {
  const [c, h] = g.shape(from);
  let x = g.conv(`${prefix}.conv_6_dw.conv`, from, c, h, 1, 0, c);
  x = g.batchNorm('batchnorm2d', `${prefix}.conv_6_dw.bn`, x);
  x = g.flatten(`${prefix}.conv_6_flatten`, null, x);
  x = g.linear(`${prefix}.linear`, x, embeddingSize, false);
  return g.batchNorm('batchnorm1d', `${prefix}.bn`, x);
}

/** Squeeze-excitation from primitives: pool → reduce (+bias) → act → expand (+bias) → gate → x·gate. */
function seConv(
  g: GraphBuilder, m: string, from: string, rd: number, inner: Act, gate: 'hardsigmoid-torch' | 'hardsigmoid-keras' | 'sigmoid',
  names: { reduce: string; act: string; expand: string },
): string {
  const [c] = g.shape(from);
  let s = g.globalAvgPool(`${m}.pool`, from);
  s = g.conv(`${m}.${names.reduce}`, s, rd, 1, 1, 0, 1, { bias: true });
  s = act(g, inner, `${m}.${names.act}`, s);
  s = g.conv(`${m}.${names.expand}`, s, c, 1, 1, 0, 1, { bias: true });
  s = gate === 'sigmoid' ? g.same('sigmoid', `${m}.gate`, s) : g.hardSigmoid(`${m}.gate`, s, gate === 'hardsigmoid-torch' ? 'torch' : 'keras');
  return g.mul(`${m}.mul`, from, s);
}

function convBnAct(g: GraphBuilder, conv: string, bn: string, actId: string | null, kind: Act | null, from: string, out: number, k: number, s: number, groups = 1): string {
  let x = g.conv(conv, from, out, k, s, Math.floor(k / 2), groups);
  x = g.batchNorm('batchnorm2d', bn, x);
  return kind && actId ? act(g, kind, actId, x) : x;
}

// #endregion

// #region MobileNetV3-Large (SPEC-BACKBONES §3)

/** (block, k, expansion, out, se, act, stride) of timm's 'large' arch_def; timm stage of each block. */
const MNV3_LARGE: readonly (readonly ['ds' | 'ir', number, number, number, boolean, 're' | 'hs', number])[] = [
  ['ds', 3, 1, 16, false, 're', 1],
  ['ir', 3, 4, 24, false, 're', 2], ['ir', 3, 3, 24, false, 're', 1],
  ['ir', 5, 3, 40, true, 're', 2], ['ir', 5, 3, 40, true, 're', 1], ['ir', 5, 3, 40, true, 're', 1],
  ['ir', 3, 6, 80, false, 'hs', 2], ['ir', 3, 2.5, 80, false, 'hs', 1], ['ir', 3, 2.3, 80, false, 'hs', 1], ['ir', 3, 2.3, 80, false, 'hs', 1],
  ['ir', 3, 6, 112, true, 'hs', 1], ['ir', 3, 6, 112, true, 'hs', 1],
  ['ir', 5, 6, 160, true, 'hs', 2], ['ir', 5, 6, 160, true, 'hs', 1], ['ir', 5, 6, 160, true, 'hs', 1],
];
const MNV3_STAGES = [1, 2, 3, 4, 2, 3];

/** [stage, index] of each block of a stage-size list. */
function stageIndex(sizes: readonly number[]): [number, number][] {
  const out: [number, number][] = [];
  sizes.forEach((n, s) => { for (let i = 0; i < n; i++) out.push([s, i]); });
  return out;
}

/**
 * MobileNetV3-Large for faces (SPEC-BACKBONES §3). Preset 'A' (name 'mobilenetv3_large'): timm's
 * blocks and state-dict names (`conv_stem`, `bn1`, `blocks.{s}.{i}.conv_pw|bn1|conv_dw|bn2|se.conv_reduce|se.conv_expand|conv_pwl|bn3`,
 * `blocks.6.0.conv|bn1`), stem stride 1, SE rd = make_divisible(mid/4, 8) with ReLU and hard-sigmoid
 * (PyTorch form), last conv 160→960 + hard-swish, GDC head (`output_layer.*`): 3,513,456 parameters,
 * 214.62 M MACs. Preset 'B' ('mobilenetv3_large_cavaface', cavaface names `features.{i}.conv.{j}`,
 * `conv.{0,1,2}`, `output_layer.*`): PReLU everywhere, SE from Linear layers (`fc.0`, `fc.2`) placed
 * before the PReLU in expanding blocks, last conv 160→512: 3,199,200 parameters.
 *
 * @example
 * parameterCount(mobileNetV3Arch('large'));                   // 3513456
 * parameterCount(mobileNetV3Arch('large', { preset: 'B' }));  // 3199200
 */
export function mobileNetV3Arch(variant: 'large', options?: CnnPresetOptions): BackboneArch<AnyArchNode> {
  const opts = commonOptions('mobileNetV3Arch', options, ['preset']);
  if (variant !== 'large') throw (is.string(variant) ? outOfRangeError : invalidParameterError)('variant', "'large'", variant);
  const preset = opts.preset ?? 'A';
  if (preset !== 'A' && preset !== 'B') throw outOfRangeError('preset', "'A' or 'B'", preset);
  const E = opts.embeddingSize;

  if (preset === 'A') {
    const g = new GraphBuilder(TIMM_GOOG_INIT, 3, INPUT_SIZE);
    let x = convBnAct(g, 'conv_stem', 'bn1', 'bn1.act', 'hardswish', 'input', 16, 3, 1);
    const where = stageIndex(MNV3_STAGES);
    MNV3_LARGE.forEach(([bt, k, e, out, se, a], b) => {
      const s = MNV3_LARGE[b][6];
      const p = `blocks.${where[b][0]}.${where[b][1]}`;
      const [cin] = g.shape(x);
      const kind: Act = a === 're' ? 'relu' : 'hardswish';
      const mid = makeDivisible(cin * e);
      let y: string;
      if (bt === 'ds') {
        y = convBnAct(g, `${p}.conv_dw`, `${p}.bn1`, `${p}.bn1.act`, kind, x, cin, k, s, cin);
        if (se) y = seConv(g, `${p}.se`, y, makeDivisible(cin * 0.25), 'relu', 'hardsigmoid-torch', { reduce: 'conv_reduce', act: 'act1', expand: 'conv_expand' });
        y = convBnAct(g, `${p}.conv_pw`, `${p}.bn2`, null, null, y, out, 1, 1);
      } else {
        y = convBnAct(g, `${p}.conv_pw`, `${p}.bn1`, `${p}.bn1.act`, kind, x, mid, 1, 1);
        y = convBnAct(g, `${p}.conv_dw`, `${p}.bn2`, `${p}.bn2.act`, kind, y, mid, k, s, mid);
        if (se) y = seConv(g, `${p}.se`, y, makeDivisible(mid * 0.25), 'relu', 'hardsigmoid-torch', { reduce: 'conv_reduce', act: 'act1', expand: 'conv_expand' });
        y = convBnAct(g, `${p}.conv_pwl`, `${p}.bn3`, null, null, y, out, 1, 1);
      }
      x = s === 1 && cin === out ? g.add(`${p}.add`, y, x) : y;
    });
    x = convBnAct(g, 'blocks.6.0.conv', 'blocks.6.0.bn1', 'blocks.6.0.bn1.act', 'hardswish', x, 960, 1, 1);
    x = gdcHead(g, 'output_layer', x, E);
    return finish(g, x, 'mobilenetv3_large', { family: 'mobilenetv3', variant, preset, embeddingSize: E, inputSize: INPUT_SIZE },
      'huggingface/pytorch-image-models timm/models/mobilenetv3.py (blocks) + GDC head; SPEC-BACKBONES §3.2');
  }

  const g = new GraphBuilder(CAVA_MNV3_INIT, 3, INPUT_SIZE);
  let x = convBnAct(g, 'features.0.0', 'features.0.1', 'features.0.2', 'prelu', 'input', 16, 3, 1);
  const seLinear = (m: string, from: string, c: number): string => {
    const rd = makeDivisible(Math.floor(c / 4), 8);
    let s = g.globalAvgPool(`${m}.avg_pool`, from);
    s = g.flatten(`${m}.view`, null, s);
    s = g.linear(`${m}.fc.0`, s, rd, true);
    s = g.same('relu', `${m}.fc.1`, s);
    s = g.linear(`${m}.fc.2`, s, c, true);
    s = g.hardSigmoid(`${m}.fc.3`, s, 'torch');
    return g.mul(`${m}.mul`, from, s);
  };
  MNV3_LARGE.forEach(([, k, e, out, se, , s], b) => {
    const p = `features.${b + 1}.conv`;
    const [cin] = g.shape(x);
    const mid = makeDivisible(cin * e);
    let y: string;
    if (mid === cin) {
      y = convBnAct(g, `${p}.0`, `${p}.1`, `${p}.2`, 'prelu', x, mid, k, s, mid);
      if (se) y = seLinear(`${p}.3`, y, mid);
      y = convBnAct(g, `${p}.4`, `${p}.5`, null, null, y, out, 1, 1);
    } else {
      y = convBnAct(g, `${p}.0`, `${p}.1`, `${p}.2`, 'prelu', x, mid, 1, 1);
      y = convBnAct(g, `${p}.3`, `${p}.4`, null, null, y, mid, k, s, mid);
      if (se) y = seLinear(`${p}.5`, y, mid);
      y = g.prelu(`${p}.6`, y);
      y = convBnAct(g, `${p}.7`, `${p}.8`, null, null, y, out, 1, 1);
    }
    x = s === 1 && cin === out ? g.add(`features.${b + 1}.add`, y, x) : y;
  });
  x = convBnAct(g, 'conv.0', 'conv.1', 'conv.2', 'prelu', x, 512, 1, 1);
  x = gdcHead(g, 'output_layer', x, E);
  return finish(g, x, 'mobilenetv3_large_cavaface', { family: 'mobilenetv3', variant, preset, embeddingSize: E, inputSize: INPUT_SIZE },
    'cavalleria/cavaface backbone/mobilenetv3.py; SPEC-BACKBONES §3.3');
}

// #endregion

// #region EfficientNet-B0 (SPEC-BACKBONES §4)

/** (block, k, stride of the first block, expansion, out, repeats) of B0. */
const EFF_B0: readonly (readonly ['ds' | 'ir', number, number, number, number, number])[] = [
  ['ds', 3, 1, 1, 16, 1], ['ir', 3, 2, 6, 24, 2], ['ir', 5, 2, 6, 40, 2], ['ir', 3, 2, 6, 80, 3],
  ['ir', 5, 1, 6, 112, 3], ['ir', 5, 2, 6, 192, 4], ['ir', 3, 1, 6, 320, 1],
];

/**
 * EfficientNet-B0 for faces (SPEC-BACKBONES §4). Preset 'A' ('efficientnet_b0'): timm blocks and
 * names (`conv_stem`, `bn1`, `blocks.{s}.{i}.*`, `conv_head`, `bn2`), SiLU, SE rd = round(C_in/4)
 * with SiLU and sigmoid, stem stride 1, head conv 320→1280, GDC(1280): 4,729,212 parameters,
 * 385.25 M MACs. Preset 'B' ('efficientnet_b0_cavaface', names `features.init_block.conv.*`,
 * `features.stage{s}.unit{j}.*`, `features.final_block.*`, `output.*`): PReLU, SE inner ReLU, final
 * conv 320→512: 4,067,964 parameters.
 *
 * @example
 * parameterCount(efficientNetArch('b0'));                   // 4729212
 * parameterCount(efficientNetArch('b0', { preset: 'B' }));  // 4067964
 */
export function efficientNetArch(variant: 'b0', options?: CnnPresetOptions): BackboneArch<AnyArchNode> {
  const opts = commonOptions('efficientNetArch', options, ['preset']);
  if (variant !== 'b0') throw (is.string(variant) ? outOfRangeError : invalidParameterError)('variant', "'b0'", variant);
  const preset = opts.preset ?? 'A';
  if (preset !== 'A' && preset !== 'B') throw outOfRangeError('preset', "'A' or 'B'", preset);
  const E = opts.embeddingSize;

  if (preset === 'A') {
    const g = new GraphBuilder(TIMM_GOOG_INIT, 3, INPUT_SIZE);
    let x = convBnAct(g, 'conv_stem', 'bn1', 'bn1.act', 'silu', 'input', 32, 3, 1);
    const names = { reduce: 'conv_reduce', act: 'act1', expand: 'conv_expand' };
    EFF_B0.forEach(([bt, k, s0, e, out, r], st) => {
      for (let i = 0; i < r; i++) {
        const s = i === 0 ? s0 : 1;
        const p = `blocks.${st}.${i}`;
        const [cin] = g.shape(x);
        let y: string;
        if (bt === 'ds') {
          y = convBnAct(g, `${p}.conv_dw`, `${p}.bn1`, `${p}.bn1.act`, 'silu', x, cin, k, s, cin);
          y = seConv(g, `${p}.se`, y, Math.round(cin * 0.25), 'silu', 'sigmoid', names);
          y = convBnAct(g, `${p}.conv_pw`, `${p}.bn2`, null, null, y, out, 1, 1);
        } else {
          const mid = makeDivisible(cin * e);
          y = convBnAct(g, `${p}.conv_pw`, `${p}.bn1`, `${p}.bn1.act`, 'silu', x, mid, 1, 1);
          y = convBnAct(g, `${p}.conv_dw`, `${p}.bn2`, `${p}.bn2.act`, 'silu', y, mid, k, s, mid);
          y = seConv(g, `${p}.se`, y, Math.round((mid * 0.25) / e), 'silu', 'sigmoid', names);
          y = convBnAct(g, `${p}.conv_pwl`, `${p}.bn3`, null, null, y, out, 1, 1);
        }
        x = s === 1 && cin === out ? g.add(`${p}.add`, y, x) : y;
      }
    });
    x = convBnAct(g, 'conv_head', 'bn2', 'bn2.act', 'silu', x, 1280, 1, 1);
    x = gdcHead(g, 'output_layer', x, E);
    return finish(g, x, 'efficientnet_b0', { family: 'efficientnet', variant, preset, embeddingSize: E, inputSize: INPUT_SIZE },
      'huggingface/pytorch-image-models timm/models/efficientnet.py (blocks) + GDC head; SPEC-BACKBONES §4.2');
  }

  const g = new GraphBuilder(CAVA_EFF_INIT, 3, INPUT_SIZE);
  const block = (m: string, from: string, out: number, k: number, s: number, groups: number, withAct: boolean): string =>
    convBnAct(g, `${m}.conv`, `${m}.bn`, withAct ? `${m}.activ` : null, withAct ? 'prelu' : null, from, out, k, s, groups);
  const names = { reduce: 'conv1', act: 'activ', expand: 'conv2' };
  let x = block('features.init_block.conv', 'input', 32, 3, 1, 1, true);
  // cavaface groups B0's seven stages into five: (16), (24), (40), (80, 112), (192, 320).
  const cavaStages = [[0], [1], [2], [3, 4], [5, 6]];
  cavaStages.forEach((stages, si) => {
    let unit = 0;
    for (const st of stages) {
      const [bt, k, s0, e, out, r] = EFF_B0[st];
      for (let i = 0; i < r; i++) {
        const s = unit === 0 ? s0 : 1;
        const p = `features.stage${si + 1}.unit${++unit}`;
        const [cin] = g.shape(x);
        let y: string;
        if (bt === 'ds') {
          y = block(`${p}.dw_conv`, x, cin, k, s, cin, true);
          y = seConv(g, `${p}.se`, y, Math.floor(cin / 4), 'relu', 'sigmoid', names);
          y = block(`${p}.pw_conv`, y, out, 1, 1, 1, false);
        } else {
          const mid = cin * e;
          y = block(`${p}.conv1`, x, mid, 1, 1, 1, true);
          y = block(`${p}.conv2`, y, mid, k, s, mid, true);
          y = seConv(g, `${p}.se`, y, Math.floor(mid / (e * 4)), 'relu', 'sigmoid', names);
          y = block(`${p}.conv3`, y, out, 1, 1, 1, false);
        }
        x = s === 1 && cin === out ? g.add(`${p}.add`, y, x) : y;
      }
    }
  });
  x = block('features.final_block', x, 512, 1, 1, 1, true);
  x = gdcHead(g, 'output', x, E);
  return finish(g, x, 'efficientnet_b0_cavaface', { family: 'efficientnet', variant, preset, embeddingSize: E, inputSize: INPUT_SIZE },
    'cavalleria/cavaface backbone/efficientnet.py efficientnet(version="b0"); SPEC-BACKBONES §4.3');
}

// #endregion

// #region GhostNet (SPEC-BACKBONES §5)

/** (k, exp, out, se ratio, stride), grouped into timm's stages. */
const GHOST_STAGES: readonly (readonly (readonly [number, number, number, number, number])[])[] = [
  [[3, 16, 16, 0, 1]],
  [[3, 48, 24, 0, 2]],
  [[3, 72, 24, 0, 1]],
  [[5, 72, 40, 0.25, 2]],
  [[5, 120, 40, 0.25, 1]],
  [[3, 240, 80, 0, 2]],
  [[3, 200, 80, 0, 1], [3, 184, 80, 0, 1], [3, 184, 80, 0, 1], [3, 480, 112, 0.25, 1], [3, 672, 112, 0.25, 1]],
  [[5, 672, 160, 0.25, 2]],
  [[5, 960, 160, 0, 1], [5, 960, 160, 0.25, 1], [5, 960, 160, 0, 1], [5, 960, 160, 0.25, 1]],
];

/** The GhostNet presets of {@link ghostNetArch}. */
export type GhostNetVariant = 'v1-1.3-1' | 'ghostnet-1.0-gdc';
const GHOST_VARIANTS: readonly GhostNetVariant[] = ['v1-1.3-1', 'ghostnet-1.0-gdc'];

/**
 * GhostNet V1 for faces (SPEC-BACKBONES §5), timm state-dict names (`conv_stem`, `bn1`, `act1`,
 * `blocks.{s}.{i}.ghost1.primary_conv.{0,1,2}`, `.ghost1.cheap_operation.{0,1,2}`, `.conv_dw`, `.bn_dw`,
 * `.se.conv_reduce|act1|conv_expand`, `.ghost2.*`, `.shortcut.{0..3}`, `blocks.9.0.conv|bn1|act1`).
 *
 * - 'v1-1.3-1' ('ghostfacenet_v1_1.3_1', GhostFaceNetV1-1.3-1, §5.2): width 1.3, stem stride 1, last
 *   bottleneck expansion 512 (→ 664 channels), PReLU everywhere (SE too), Keras hard-sigmoid, TF-same
 *   (asymmetric) padding on the stride-2 convs, GDC head with a biased 1×1 conv
 *   (`output_layer.conv`): 4,060,260 parameters, 211.91 M MACs; preprocessing (v − 127.5)/128.
 * - 'ghostnet-1.0-gdc' ('ghostnet_1.0_gdc', §5.3): timm GhostNet-1.0 with ReLU, stem stride 1,
 *   PyTorch hard-sigmoid, GDC(960) head: 3,212,932 parameters.
 *
 * @example
 * parameterCount(ghostNetArch('v1-1.3-1')); // 4060260
 */
export function ghostNetArch(variant: GhostNetVariant, options?: ZooArchOptions): BackboneArch<AnyArchNode> {
  const opts = commonOptions('ghostNetArch', options, []);
  if (!is.string(variant)) throw invalidParameterError('variant', GHOST_VARIANTS.map((v) => `'${v}'`).join(' or '), variant);
  if (!is.inArray(variant, GHOST_VARIANTS)) throw outOfRangeError('variant', GHOST_VARIANTS.map((v) => `'${v}'`).join(' or '), variant);
  const E = opts.embeddingSize;
  const gfn = variant === 'v1-1.3-1';
  const width = gfn ? 1.3 : 1.0;
  const lastExp = gfn ? 512 : 960;
  const kind: Act = gfn ? 'prelu' : 'relu';
  const g = new GraphBuilder(TIMM_GOOG_INIT, 3, INPUT_SIZE);

  /** A conv k×k stride s with PyTorch padding, or TF-same for GhostFaceNets' stride-2 convs. */
  const conv = (m: string, from: string, out: number, k: number, s: number, groups = 1, bias = false): string => {
    const [, h, w] = g.shape(from);
    if (gfn && s > 1) {
      const [t, b] = tfSamePadding(h, k, s);
      const [l, r] = tfSamePadding(w, k, s);
      if (t !== b || l !== r) return g.conv(m, from, out, k, s, t, groups, { bias, asymmetricPadding: [t, b, l, r] });
      return g.conv(m, from, out, k, s, t, groups, { bias });
    }
    return g.conv(m, from, out, k, s, Math.floor(k / 2), groups, { bias });
  };
  const ghost = (m: string, from: string, out: number, withAct: boolean): string => {
    const init = Math.ceil(out / 2);
    let x1 = conv(`${m}.primary_conv.0`, from, init, 1, 1);
    x1 = g.batchNorm('batchnorm2d', `${m}.primary_conv.1`, x1);
    if (withAct) x1 = act(g, kind, `${m}.primary_conv.2`, x1);
    let x2 = conv(`${m}.cheap_operation.0`, x1, init, 3, 1, init);
    x2 = g.batchNorm('batchnorm2d', `${m}.cheap_operation.1`, x2);
    if (withAct) x2 = act(g, kind, `${m}.cheap_operation.2`, x2);
    const y = g.concat(`${m}.cat`, [x1, x2]);
    return 2 * init === out ? y : g.slice(`${m}.slice`, y, 0, out);
  };

  let x = conv('conv_stem', 'input', makeDivisible(16 * width, 4), 3, 1);
  x = g.batchNorm('batchnorm2d', 'bn1', x);
  x = act(g, kind, 'act1', x);
  const last = GHOST_STAGES.length - 1;
  GHOST_STAGES.forEach((stage, si) => {
    stage.forEach(([k, e0, o, se, s], i) => {
      const e = si === last && i === stage.length - 1 ? lastExp : e0;
      const p = `blocks.${si}.${i}`;
      const out = makeDivisible(o * width, 4);
      const mid = makeDivisible(e * width, 4);
      const [cin] = g.shape(x);
      let y = ghost(`${p}.ghost1`, x, mid, true);
      if (s > 1) {
        y = conv(`${p}.conv_dw`, y, mid, k, s, mid);
        y = g.batchNorm('batchnorm2d', `${p}.bn_dw`, y);
      }
      if (se > 0) {
        y = seConv(g, `${p}.se`, y, makeDivisible(mid * se, 4), kind, gfn ? 'hardsigmoid-keras' : 'hardsigmoid-torch',
          { reduce: 'conv_reduce', act: 'act1', expand: 'conv_expand' });
      }
      y = ghost(`${p}.ghost2`, y, out, false);
      let shortcut = x;
      if (!(cin === out && s === 1)) {
        shortcut = conv(`${p}.shortcut.0`, x, cin, k, s, cin);
        shortcut = g.batchNorm('batchnorm2d', `${p}.shortcut.1`, shortcut);
        shortcut = conv(`${p}.shortcut.2`, shortcut, out, 1, 1);
        shortcut = g.batchNorm('batchnorm2d', `${p}.shortcut.3`, shortcut);
      }
      x = g.add(`${p}.add`, y, shortcut);
    });
  });
  x = conv('blocks.9.0.conv', x, makeDivisible(lastExp * width, 4), 1, 1);
  x = g.batchNorm('batchnorm2d', 'blocks.9.0.bn1', x);
  x = act(g, kind, 'blocks.9.0.act1', x);

  if (!gfn) {
    x = gdcHead(g, 'output_layer', x, E);
    return finish(g, x, 'ghostnet_1.0_gdc', { family: 'ghostnet', variant, embeddingSize: E, inputSize: INPUT_SIZE },
      'huggingface/pytorch-image-models timm/models/ghostnet.py (width 1.0, stem stride 1) + GDC head; SPEC-BACKBONES §5.3');
  }
  // GhostFaceNets' S1 GDC: depthwise 7×7 + BN, 1×1 conv with bias → E, flatten, BatchNorm1d (scale).
  const [c, h] = g.shape(x);
  x = g.conv('output_layer.conv_6_dw.conv', x, c, h, 1, 0, c);
  x = g.batchNorm('batchnorm2d', 'output_layer.conv_6_dw.bn', x);
  x = g.conv('output_layer.conv', x, E, 1, 1, 0, 1, { bias: true });
  x = g.flatten('output_layer.flatten', null, x);
  x = g.batchNorm('batchnorm1d', 'output_layer.bn', x);
  const pre = arcfacePreprocessing(INPUT_SIZE);
  const preprocessing: Preprocessing = { ...pre, mean: [127.5, 127.5, 127.5], std: [128, 128, 128] };
  return finish(g, x, 'ghostfacenet_v1_1.3_1', { family: 'ghostnet', variant, embeddingSize: E, inputSize: INPUT_SIZE },
    'HamadYA/GhostFaceNets backbones/ghost_model.py @97f060c1 (width 1.3, S1, GDC); timm ghostnet names; SPEC-BACKBONES §5.2', preprocessing);
}

// #endregion

// #region EdgeNeXt-S / EdgeFace (SPEC-BACKBONES §6)

const EDGENEXT_S = { dims: [48, 96, 160, 304], depths: [3, 3, 9, 3], kernels: [3, 5, 7, 9], scales: [2, 2, 3, 4], heads: 8, posStage: 1 } as const;

/**
 * EdgeNeXt-S with a 512-d head (timm edgenext_small + reset_classifier(512); SPEC-BACKBONES §6):
 * stem conv 4×4/4 + LayerNorm2d, four stages (28, 14, 7, 3) of conv encoders (depthwise k×k with bias
 * → channels-last LN → Linear 4× → GELU → Linear → γ → + input) and one SDTA block in stages 2–4
 * (split depthwise cascade → tokens (+ Fourier positional encoding in stage 2) → + γ_xca·XCA(LN) →
 * LN → MLP → γ → + block input); head: global average pool → LayerNorm2d → Linear.
 * Names are timm's (`stem.0`, `stages.{i}.downsample.{0,1}`, `stages.{i}.blocks.{j}.conv_dw|norm|mlp.fc1|mlp.fc2|gamma`,
 * `.convs.{k}|pos_embd.token_projection|norm_xca|gamma_xca|xca.temperature|xca.qkv|xca.proj`, `head.norm`, `head.fc`).
 * Full rank ('edgenext_small'): 5,437,992 parameters, 230.69 M MACs. `lowRank` ('edgeface_s_gamma_05'):
 * EdgeFace's LoRaLin for every Linear, the head's too (`<linear>.linear1` without bias, `.linear2`),
 * under EdgeFace's `model.` prefix: 3,652,520 parameters, 152.90 M MACs.
 *
 * @example
 * parameterCount(edgeNeXtArch('s'));                     // 5437992
 * parameterCount(edgeNeXtArch('s', { lowRank: true }));  // 3652520
 */
export function edgeNeXtArch(variant: 's', options?: EdgeNeXtArchOptions): BackboneArch<AnyArchNode> {
  const opts = commonOptions('edgeNeXtArch', options, ['lowRank', 'rankRatio', 'dropPathRate']);
  if (variant !== 's') throw (is.string(variant) ? outOfRangeError : invalidParameterError)('variant', "'s'", variant);
  const lowRank = opts.lowRank ?? false;
  if (!is.bool(lowRank)) throw invalidParameterError('lowRank', 'a boolean', lowRank);
  const gamma = opts.rankRatio ?? 0.5;
  assertNumber(gamma, 'rankRatio', 0, 1);
  if (gamma <= 0) throw outOfRangeError('rankRatio', 'a number in (0, 1]', gamma);
  if (opts.rankRatio !== undefined && !lowRank) throw invalidParameterError('rankRatio', 'no value without lowRank', opts.rankRatio);
  const rate = dropPathRateOption(opts);
  const E = opts.embeddingSize;
  const { dims, depths, kernels, scales, heads, posStage } = EDGENEXT_S;
  const P = lowRank ? 'model.' : '';
  const g = new GraphBuilder(transformerInit(0.02), 3, INPUT_SIZE);
  const total = depths.reduce((a, b) => a + b, 0);
  let blockIndex = 0;

  const lin = (m: string, from: string, out: number, bias: boolean): string => {
    if (!lowRank) return g.linear(m, from, out, bias);
    const shape = g.shape(from);
    const r = Math.max(2, Math.floor(gamma * Math.min(shape[shape.length - 1], out)));
    const y = g.linear(`${m}.linear1`, from, r, false);
    return g.linear(`${m}.linear2`, y, out, bias);
  };
  const mlp = (p: string, from: string, d: number): string => {
    let y = g.layerNorm(`${p}.norm`, from, 'last', LN_EPS_TIMM);
    y = lin(`${p}.mlp.fc1`, y, 4 * d, true);
    y = g.same('gelu', `${p}.mlp.act`, y);
    y = lin(`${p}.mlp.fc2`, y, d, true);
    return g.layerScale(`${p}.gamma`, p, 'gamma', y, 'last', 1e-6);
  };
  const residual = (p: string, branch: string, shortcut: string): string => {
    const dp = rate * (blockIndex / Math.max(1, total - 1));
    const y = dp > 0 ? g.dropPath(`${p}.drop_path`, branch, dp) : branch;
    return g.add(`${p}.add`, y, shortcut);
  };

  let x = g.conv(`${P}stem.0`, 'input', dims[0], 4, 4, 0, 1, { bias: true });
  x = g.layerNorm(`${P}stem.1`, x, 'channels', LN_EPS_TIMM);
  for (let i = 0; i < 4; i++) {
    const d = dims[i];
    if (i > 0) {
      x = g.layerNorm(`${P}stages.${i}.downsample.0`, x, 'channels', LN_EPS_TIMM);
      x = g.conv(`${P}stages.${i}.downsample.1`, x, d, 2, 2, 0, 1, { bias: true });
    }
    for (let j = 0; j < depths[i]; j++, blockIndex++) {
      const p = `${P}stages.${i}.blocks.${j}`;
      const [, h, w] = g.shape(x);
      const sdta = i > 0 && j === depths[i] - 1;
      if (!sdta) {
        let y = g.conv(`${p}.conv_dw`, x, d, kernels[i], 1, Math.floor(kernels[i] / 2), d, { bias: true });
        y = g.toTokens(`${p}.to_tokens`, y);
        y = mlp(p, y, d);
        y = g.toMap(`${p}.to_map`, y, h, w);
        x = residual(p, y, x);
        continue;
      }
      // SDTA: split depthwise cascade (torch.chunk into n + 1 pieces; the last passes unchanged).
      const sc = scales[i];
      const width = Math.max(Math.ceil(d / sc), Math.floor(d / sc));
      const n = Math.max(1, sc - 1);
      const chunk = Math.ceil(d / (n + 1));
      const pieces: string[] = [];
      for (let k = 0; k <= n; k++) pieces.push(g.slice(`${p}.chunk.${k}`, x, k * chunk, Math.min(chunk, d - k * chunk)));
      const outs: string[] = [];
      let sp = '';
      for (let k = 0; k < n; k++) {
        const inp = k === 0 ? pieces[0] : g.add(`${p}.convs.${k}.add`, sp, pieces[k]);
        if (g.shape(inp)[0] !== width) throw new FacecudaError('INTERNAL', `edgeNeXtArch: chunk ${k} of ${p} has ${g.shape(inp)[0]} channels, not ${width}`);
        sp = g.conv(`${p}.convs.${k}`, inp, width, 3, 1, 1, width, { bias: true });
        outs.push(sp);
      }
      let t = g.concat(`${p}.cat`, [...outs, pieces[n]]);
      const mapOut = t;
      t = g.toTokens(`${p}.to_tokens`, t);
      if (i === posStage) {
        const pos = g.fourierPosEmbed(`${p}.pos_embd`, mapOut, d);
        t = g.add(`${p}.pos_add`, t, pos);
      }
      let a = g.layerNorm(`${p}.norm_xca`, t, 'last', LN_EPS_TIMM);
      a = lin(`${p}.xca.qkv`, a, 3 * d, true);
      a = g.xca(`${p}.xca`, a, d, heads);
      a = lin(`${p}.xca.proj`, a, d, true);
      a = g.layerScale(`${p}.gamma_xca`, p, 'gamma_xca', a, 'last', 1e-6);
      const dp = rate * (blockIndex / Math.max(1, total - 1));
      if (dp > 0) a = g.dropPath(`${p}.xca_drop_path`, a, dp);
      t = g.add(`${p}.xca_add`, a, t);
      let y = mlp(p, t, d);
      y = g.toMap(`${p}.to_map`, y, h, w);
      x = residual(p, y, x);
    }
  }
  x = g.globalAvgPool(`${P}head.global_pool`, x);
  x = g.layerNorm(`${P}head.norm`, x, 'channels', LN_EPS_TIMM);
  x = g.flatten(`${P}head.flatten`, null, x);
  x = lin(`${P}head.fc`, x, E, true);
  const name = lowRank ? (gamma === 0.5 ? 'edgeface_s_gamma_05' : `edgeface_s_gamma_${String(gamma).replace('.', '')}`) : 'edgenext_small';
  return finish(g, x, name, {
    family: 'edgenext', variant, embeddingSize: E, inputSize: INPUT_SIZE,
    options: { lowRank, ...(lowRank ? { rankRatio: gamma } : {}), dropPathRate: rate },
  }, lowRank ? 'otroshi/edgeface backbones/timmfr.py (timm edgenext_small + LoRaLin); SPEC-BACKBONES §6.2' : 'huggingface/pytorch-image-models timm/models/edgenext.py edgenext_small, 512-d head; SPEC-BACKBONES §6');
}

// #endregion

// #region Vision transformers (SPEC-BACKBONES §7)

function linspace(rate: number, depth: number): number[] {
  return Array.from({ length: depth }, (_, i) => (depth === 1 ? 0 : (rate * i) / (depth - 1)));
}

/** One pre-norm transformer block: x + MHSA(LN(x)), then x + MLP(LN(x)). */
function transformerBlock(
  g: GraphBuilder, p: string, from: string, dim: number, heads: number,
  o: { lnEps: number; qkvBias: boolean; mlpAct: Act; dropPath: number },
): string {
  let a = g.layerNorm(`${p}.norm1`, from, 'last', o.lnEps);
  a = g.linear(`${p}.attn.qkv`, a, 3 * dim, o.qkvBias);
  a = g.attention(`${p}.attn`, a, dim, heads, 1 / Math.sqrt(dim / heads));
  a = g.linear(`${p}.attn.proj`, a, dim, true);
  if (o.dropPath > 0) a = g.dropPath(`${p}.drop_path1`, a, o.dropPath);
  const x = g.add(`${p}.add1`, a, from);
  let m = g.layerNorm(`${p}.norm2`, x, 'last', o.lnEps);
  m = g.linear(`${p}.mlp.fc1`, m, 4 * dim, true);
  m = act(g, o.mlpAct, `${p}.mlp.act`, m);
  m = g.linear(`${p}.mlp.fc2`, m, dim, true);
  if (o.dropPath > 0) m = g.dropPath(`${p}.drop_path2`, m, o.dropPath);
  return g.add(`${p}.add2`, m, x);
}

const VIT_SIZES = { s: { dim: 384, heads: 6 }, b: { dim: 768, heads: 12 } } as const;

function timmVit(fn: string, size: 's' | 'b', options: unknown, deit: boolean): BackboneArch<AnyArchNode> {
  const opts = commonOptions(fn, options, deit ? ['patch', 'dropPathRate', 'distilled'] : ['patch', 'dropPathRate']);
  const sizes = deit ? ['s'] : ['s', 'b'];
  if (!is.string(size)) throw invalidParameterError('size', sizes.map((v) => `'${v}'`).join(' or '), size);
  if (!is.inArray(size, sizes)) throw outOfRangeError('size', sizes.map((v) => `'${v}'`).join(' or '), size);
  const patch = opts.patch ?? 8;
  if (patch !== 8 && patch !== 16) throw outOfRangeError('patch', '8 or 16', patch);
  const distilled = deit ? (opts.distilled ?? true) : false;
  if (!is.bool(distilled)) throw invalidParameterError('distilled', 'a boolean', distilled);
  const rate = dropPathRateOption(opts);
  const E = opts.embeddingSize;
  const { dim, heads } = VIT_SIZES[size];
  const depth = 12;
  const g = new GraphBuilder(transformerInit(null), 3, INPUT_SIZE);
  let x = g.conv('patch_embed.proj', 'input', dim, patch, patch, 0, 1, { bias: true });
  x = g.toTokens('patch_embed.flatten', x);
  x = g.prependTokens('tokens', x, distilled ? 2 : 1, [normal(1e-6), normal(0.02)]);
  x = g.posEmbed('pos_embed', x, normal(0.02));
  const dpr = linspace(rate, depth);
  for (let i = 0; i < depth; i++) x = transformerBlock(g, `blocks.${i}`, x, dim, heads, { lnEps: LN_EPS_TIMM, qkvBias: true, mlpAct: 'gelu', dropPath: dpr[i] });
  x = g.layerNorm('norm', x, 'last', LN_EPS_TIMM);
  let y = g.linear('head', g.tokenPool('pool', x, 'token', 0), E, true);
  if (distilled) {
    const yd = g.linear('head_dist', g.tokenPool('pool_dist', x, 'token', 1), E, true);
    y = g.average('head_average', [y, yd]);
  }
  const base = deit ? `deit_${size}` : `vit_${size}`;
  const name = `${base}${distilled ? '_distilled' : ''}${patch === 8 ? '' : `_p${patch}`}`;
  return finish(g, y, name, {
    family: deit ? 'deit' : 'vit', variant: size, embeddingSize: E, inputSize: INPUT_SIZE,
    options: { patch, dropPathRate: rate, ...(deit ? { distilled } : {}) },
  }, `huggingface/pytorch-image-models timm/models/${deit ? 'deit.py' : 'vision_transformer.py'} (patch ${patch} on 112, ${E}-d head); SPEC-BACKBONES §7.2`);
}

/**
 * ViT-S or ViT-B for faces (timm VisionTransformer with patch 8 on 112×112: 196 patches + a class
 * token; SPEC-BACKBONES §7.2): patch conv → tokens → class token → learned positional embedding → 12
 * pre-norm blocks (LN eps 1e−6, qkv with bias, GELU MLP ×4) → LN → class token → Linear D→512.
 * timm names (`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.{i}.norm1|attn.qkv|attn.proj|norm2|mlp.fc1|mlp.fc2`, `norm`, `head`).
 * 'vit_s' 21,641,600 and 'vit_b' 85,750,016 parameters. Needs a 112×112 input: another size
 * changes the token count and fails at `pos_embed` with SHAPE_MISMATCH.
 *
 * @example
 * parameterCount(vitArch('s')); // 21641600
 */
export function vitArch(size: 's' | 'b', options?: VitArchOptions): BackboneArch<AnyArchNode> {
  return timmVit('vitArch', size, options, false);
}

/**
 * DeiT-S for faces (SPEC-BACKBONES §7.2): the ViT-S/8 graph of {@link vitArch}; `distilled` (default)
 * adds the distillation token and `head_dist`, the embedding being the mean of both heads:
 * 'deit_s_distilled' 21,839,488 parameters, 'deit_s' ({ distilled: false }) 21,641,600.
 *
 * @example
 * parameterCount(deitArch('s')); // 21839488
 */
export function deitArch(size: 's', options?: DeitArchOptions): BackboneArch<AnyArchNode> {
  return timmVit('deitArch', size, options, true);
}

/**
 * insightface's ViT (arcface_torch backbones/vit.py; SPEC-BACKBONES §7.3), 'if_vit_s' (D 512, 12
 * blocks) or 'if_vit_b' (D 512, 24 blocks), 8 heads: patch conv 9×9/9 → 144 tokens (no class token)
 * → pos_embed → blocks (LN eps 1e−5, qkv without bias, ReLU6 MLP) → LN → (mask_token: identity at
 * ratio 0) → flatten 144·D → `feature.0` Linear → `feature.1` BN1d(eps 2e−5) → `feature.2` Linear →
 * `feature.3` BN1d: 76,023,296 / 113,833,472 parameters; insightface's state-dict names.
 *
 * @example
 * parameterCount(insightfaceVitArch('s')); // 76023296
 */
export function insightfaceVitArch(size: 's' | 'b', options?: InsightfaceVitArchOptions): BackboneArch<AnyArchNode> {
  const opts = commonOptions('insightfaceVitArch', options, ['dropPathRate']);
  if (!is.string(size)) throw invalidParameterError('size', "'s' or 'b'", size);
  if (size !== 's' && size !== 'b') throw outOfRangeError('size', "'s' or 'b'", size);
  const rate = dropPathRateOption(opts);
  const E = opts.embeddingSize;
  const dim = 512;
  const heads = 8;
  const depth = size === 's' ? 12 : 24;
  const g = new GraphBuilder(transformerInit(null), 3, INPUT_SIZE);
  let x = g.conv('patch_embed.proj', 'input', dim, 9, 9, 0, 1, { bias: true });
  x = g.toTokens('patch_embed.flatten', x);
  x = g.posEmbed('pos_embed', x, normal(0.02));
  const dpr = linspace(rate, depth);
  for (let i = 0; i < depth; i++) x = transformerBlock(g, `blocks.${i}`, x, dim, heads, { lnEps: LN_EPS_TORCH, qkvBias: false, mlpAct: 'relu6', dropPath: dpr[i] });
  x = g.layerNorm('norm', x, 'last', LN_EPS_TORCH);
  x = g.tokenMask('mask', x, 0, normal(0.02));
  x = g.tokenPool('flatten', x, 'flatten');
  x = g.linear('feature.0', x, dim, false);
  x = g.batchNorm('batchnorm1d', 'feature.1', x, false, IF_BN_EPS);
  x = g.linear('feature.2', x, E, false);
  x = g.batchNorm('batchnorm1d', 'feature.3', x, false, IF_BN_EPS);
  return finish(g, x, `if_vit_${size}`, { family: 'if_vit', variant: size, embeddingSize: E, inputSize: INPUT_SIZE, options: { dropPathRate: rate, maskRatio: 0 } },
    'deepinsight/insightface recognition/arcface_torch/backbones/vit.py; SPEC-BACKBONES §7.3');
}

// #endregion

// #region names

/** The names {@link zooBackboneArch} (and backboneArch) accept for the second backbone batch. */
export const ZOO_BACKBONE_NAMES = [
  'mobilenetv3_large', 'mobilenetv3_large_cavaface', 'efficientnet_b0', 'efficientnet_b0_cavaface',
  'ghostfacenet_v1_1.3_1', 'ghostnet_1.0_gdc', 'edgenext_small', 'edgeface_s_gamma_05',
  'vit_s', 'vit_b', 'deit_s', 'deit_s_distilled', 'if_vit_s', 'if_vit_b',
] as const;
export type ZooBackboneName = (typeof ZOO_BACKBONE_NAMES)[number];

/**
 * A second-batch backbone by its preset name (SPEC-BACKBONES; 'vit_s' is timm's ViT-S/8, insightface's
 * own vit_s is 'if_vit_s').
 *
 * @example
 * zooBackboneArch('edgeface_s_gamma_05').name; // 'edgeface_s_gamma_05'
 */
export function zooBackboneArch(name: ZooBackboneName, options?: ZooArchOptions): BackboneArch<AnyArchNode> {
  const list = ZOO_BACKBONE_NAMES.map((n) => `'${n}'`).join(', ');
  if (!is.string(name)) throw invalidParameterError('name', `one of ${list}`, name);
  if (!is.inArray(name, ZOO_BACKBONE_NAMES)) throw outOfRangeError('name', `one of ${list}`, name);
  const o = optionsObject(options, 'options');
  switch (name) {
    case 'mobilenetv3_large': return mobileNetV3Arch('large', { ...o, preset: 'A' });
    case 'mobilenetv3_large_cavaface': return mobileNetV3Arch('large', { ...o, preset: 'B' });
    case 'efficientnet_b0': return efficientNetArch('b0', { ...o, preset: 'A' });
    case 'efficientnet_b0_cavaface': return efficientNetArch('b0', { ...o, preset: 'B' });
    case 'ghostfacenet_v1_1.3_1': return ghostNetArch('v1-1.3-1', o);
    case 'ghostnet_1.0_gdc': return ghostNetArch('ghostnet-1.0-gdc', o);
    case 'edgenext_small': return edgeNeXtArch('s', o);
    case 'edgeface_s_gamma_05': return edgeNeXtArch('s', { ...o, lowRank: true });
    case 'vit_s': return vitArch('s', o);
    case 'vit_b': return vitArch('b', o);
    case 'deit_s': return deitArch('s', { ...o, distilled: false });
    case 'deit_s_distilled': return deitArch('s', { ...o, distilled: true });
    case 'if_vit_s': return insightfaceVitArch('s', o);
    case 'if_vit_b': return insightfaceVitArch('b', o);
  }
}

// #endregion
