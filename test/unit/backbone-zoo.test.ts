// The second backbone batch's graphs (lib/backbones/arch-zoo.ts, SPEC-BACKBONES.md): exact parameter
// counts of every preset (SPEC-BACKBONES §1–§7), MACs, BN buffers and per-block parameters against the
// spec's own counter (../shared/docs/backbones-count.py, run with `python3 backbones-count.py rows`;
// its numbers are copied below), shape inference to [N, 512], summaries, the state-dict names the
// checkpoints need, the new ops' shape checks, what Backbone refuses (token masking above 0, unknown
// ops, a ViT at another input size) and the executor's TF-'same' asymmetric padding.
import {
  AnyArchNode, BackboneArch, backboneArch, Conv2dNode, deitArch, edgeNeXtArch, efficientNetArch, ghostNetArch, HardSigmoidNode, inferShapes,
  insightfaceVitArch, macs, makeDivisible, mobileNetV3Arch, outputShape, parameterCount, stateDictTensors, summarize, tfSamePadding,
  trainableParameterCount, vitArch, ZOO_BACKBONE_NAMES, ZooBackboneName,
} from '../../lib/backbones/arch';
import { Backbone } from '../../lib/backbones/model';
import { FacecudaError } from '../../lib/errors';
import { archToOnnx } from '../../lib/onnx/export';
import { Tensor } from '../../lib/tensor';
import { maxRel } from '../helpers';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const zoo = require('../../bench/zoo_values.cjs') as { zooState(arch: unknown, specs: unknown): Map<string, Float32Array | BigInt64Array> };

// #region expectations

/** Parameters of every preset at 112×112 → 512 (SPEC-BACKBONES §1, the list). */
const PARAMS: Record<ZooBackboneName, number> = {
  mobilenetv3_large: 3_513_456,
  mobilenetv3_large_cavaface: 3_199_200,
  efficientnet_b0: 4_729_212,
  efficientnet_b0_cavaface: 4_067_964,
  'ghostfacenet_v1_1.3_1': 4_060_260,
  'ghostnet_1.0_gdc': 3_212_932,
  edgenext_small: 5_437_992,
  edgeface_s_gamma_05: 3_652_520,
  vit_s: 21_641_600,
  vit_b: 85_750_016,
  deit_s: 21_641_600,
  deit_s_distilled: 21_839_488,
  if_vit_s: 76_023_296,
  if_vit_b: 113_833_472,
};

/**
 * backbones-count.py: exact MACs, BN running-statistics elements (2·C per BatchNorm) and, for the
 * CNNs and EdgeNeXt, the parameters of each row of its per-block tables (stem, blocks, last conv, head).
 */
const COUNTER: Record<ZooBackboneName, { macs: number; buffers: number; rows?: number[] }> = {
  mobilenetv3_large: { macs: 214619520, buffers: 27344, rows: [464, 464, 3440, 4440, 10328, 20992, 20992, 32080, 34760, 31992, 31992, 214424, 386120, 429224, 797360, 797360, 155520, 541504] },
  mobilenetv3_large_cavaface: { macs: 210855872, buffers: 25552, rows: [480, 480, 3568, 4584, 10472, 21232, 21232, 32560, 35160, 32360, 32360, 215384, 387464, 430568, 799280, 799280, 83456, 289280] },
  efficientnet_b0: { macs: 385252832, buffers: 45600, rows: [928, 1448, 6004, 10710, 15350, 31290, 37130, 102900, 102900, 126004, 208572, 208572, 262492, 587952, 587952, 587952, 717232, 412160, 721664] },
  efficientnet_b0_cavaface: { macs: 372779744, buffers: 42528, rows: [960, 1480, 6196, 10998, 15638, 31770, 37610, 103860, 103860, 126964, 209916, 209916, 263836, 590256, 590256, 590256, 719536, 165376, 289280] },
  'ghostfacenet_v1_1.3_1': { macs: 211909644, buffers: 28552, rows: [600, 680, 3980, 3842, 14564, 22336, 36972, 29666, 27436, 27436, 295024, 518036, 604156, 270296, 1050920, 270296, 368548, 140104, 375368] },
  'ghostnet_1.0_gdc': { macs: 139180272, buffers: 24912, rows: [464, 464, 2564, 2352, 9636, 13672, 22920, 17820, 16436, 16436, 175792, 306992, 362840, 160880, 622880, 160880, 622880, 155520, 541504] },
  edgenext_small: { macs: 230690448, buffers: 0, rows: [2448, 19296, 19296, 19296, 18624, 76992, 76992, 118760, 61792, 214080, 214080, 214080, 214080, 214080, 214080, 214080, 214080, 310688, 195184, 766688, 766688, 1115840, 156768] },
  edgeface_s_gamma_05: { macs: 152897808, buffers: 0, rows: [2448, 12384, 12384, 12384, 18624, 49344, 49344, 81896, 61792, 137280, 137280, 137280, 137280, 137280, 137280, 137280, 137280, 208288, 195184, 489440, 489440, 746176, 125152] },
  vit_s: { macs: 4555342848, buffers: 0 },
  vit_b: { macs: 17476749312, buffers: 0 },
  deit_s: { macs: 4555342848, buffers: 0 },
  deit_s_distilled: { macs: 4580413440, buffers: 0 },
  if_vit_s: { macs: 5746548736, buffers: 2048 },
  if_vit_b: { macs: 11437170688, buffers: 2048 },
};

/** Which counter row a tensor belongs to (rows in order of first appearance). */
function rowOf(name: ZooBackboneName, tensor: string): string {
  const m = (re: RegExp): string | undefined => re.exec(tensor)?.[1];
  switch (name) {
    case 'mobilenetv3_large':
      return m(/^(blocks\.\d+\.\d+|output_layer)\./) ?? 'stem';
    case 'mobilenetv3_large_cavaface':
      return m(/^(features\.\d+|conv|output_layer)\./) ?? 'other';
    case 'efficientnet_b0':
      return m(/^(blocks\.\d+\.\d+|output_layer)\./) ?? (/^(conv_head|bn2)\./.test(tensor) ? 'conv_head' : 'stem');
    case 'efficientnet_b0_cavaface':
      return m(/^(features\.init_block|features\.stage\d+\.unit\d+|features\.final_block|output)\./) ?? 'other';
    case 'ghostfacenet_v1_1.3_1':
    case 'ghostnet_1.0_gdc':
      return m(/^(blocks\.\d+\.\d+|output_layer)\./) ?? 'stem';
    default:
      return m(/^(?:model\.)?(stem|stages\.\d+\.downsample|stages\.\d+\.blocks\.\d+|head)\./) ?? 'other';
  }
}

const ARCHS = Object.fromEntries(ZOO_BACKBONE_NAMES.map((n) => [n, backboneArch(n)])) as Record<ZooBackboneName, BackboneArch<AnyArchNode>>;
const names = (a: BackboneArch<AnyArchNode>): Set<string> => new Set(stateDictTensors(a).map((t) => t.name));
const node = (a: BackboneArch<AnyArchNode>, id: string): AnyArchNode => {
  const n = a.nodes.find((x) => x.id === id);
  if (!n) throw new Error(`no node '${id}' in ${a.name}`);
  return n;
};
const codeOf = (fn: () => unknown): [string | undefined, string] => {
  try {
    fn();
  } catch (e) {
    return [(e as FacecudaError).code, (e as Error).message];
  }
  return [undefined, ''];
};

// #endregion

describe('parameter counts (SPEC-BACKBONES §1)', () => {
  it('the builders', () => {
    expect(parameterCount(mobileNetV3Arch('large', { preset: 'A' }))).toBe(3_513_456);
    expect(parameterCount(mobileNetV3Arch('large'))).toBe(3_513_456);
    expect(parameterCount(mobileNetV3Arch('large', { preset: 'B' }))).toBe(3_199_200);
    expect(parameterCount(efficientNetArch('b0', { preset: 'A' }))).toBe(4_729_212);
    expect(parameterCount(efficientNetArch('b0', { preset: 'B' }))).toBe(4_067_964);
    expect(parameterCount(ghostNetArch('v1-1.3-1'))).toBe(4_060_260);
    expect(parameterCount(ghostNetArch('ghostnet-1.0-gdc'))).toBe(3_212_932);
    expect(parameterCount(edgeNeXtArch('s'))).toBe(5_437_992);
    expect(parameterCount(edgeNeXtArch('s', { lowRank: true }))).toBe(3_652_520);
    expect(parameterCount(vitArch('s', { patch: 8 }))).toBe(21_641_600);
    expect(parameterCount(vitArch('b', { patch: 8 }))).toBe(85_750_016);
    expect(parameterCount(deitArch('s'))).toBe(21_839_488);
    expect(parameterCount(deitArch('s', { distilled: false }))).toBe(21_641_600);
    expect(parameterCount(insightfaceVitArch('s'))).toBe(76_023_296);
    expect(parameterCount(insightfaceVitArch('b'))).toBe(113_833_472);
    // Other counts of the spec's counter: ViT-S/16 at 112 (§7.2), EdgeFace-S with a full-rank head would be 3,684,136.
    expect(parameterCount(vitArch('s', { patch: 16 }))).toBe(21_806_336);
  });

  it.each(ZOO_BACKBONE_NAMES)('%s: parameters, trainable parameters, MACs and BN buffers as backbones-count.py', (name) => {
    const a = ARCHS[name];
    expect(a.name).toBe(name);
    expect(parameterCount(a)).toBe(PARAMS[name]);
    expect(trainableParameterCount(a)).toBe(PARAMS[name]);
    expect(macs(a)).toBe(COUNTER[name].macs);
    const running = stateDictTensors(a).filter((t) => t.role === 'running_mean' || t.role === 'running_var').reduce((s, t) => s + t.shape[0], 0);
    expect(running).toBe(COUNTER[name].buffers);
    const bns = a.nodes.filter((n) => n.op === 'batchnorm1d' || n.op === 'batchnorm2d').length;
    expect(parameterCount(a, { includeBuffers: true })).toBe(PARAMS[name] + running + bns);
  });

  it.each(ZOO_BACKBONE_NAMES.filter((n) => COUNTER[n].rows))('%s: per-block parameters as the counter rows', (name) => {
    const sums = new Map<string, number>();
    for (const t of stateDictTensors(ARCHS[name])) {
      if (t.kind !== 'parameter') continue;
      const r = rowOf(name, t.name);
      sums.set(r, (sums.get(r) ?? 0) + t.shape.reduce((x, y) => x * y, 1));
    }
    expect([...sums.values()]).toEqual(COUNTER[name].rows);
  });
});

describe('shapes and summaries', () => {
  it.each(ZOO_BACKBONE_NAMES)('%s: [N, 3, 112, 112] → [N, 512]; summarize agrees with the totals', (name) => {
    const a = ARCHS[name];
    expect(outputShape(a)).toEqual([1, 512]);
    expect(outputShape(a, [3, 3, 112, 112])).toEqual([3, 512]);
    const rows = summarize(a);
    expect(rows.length).toBe(a.nodes.length);
    expect(rows.reduce((s, r) => s + r.params, 0)).toBe(parameterCount(a));
    expect(rows.reduce((s, r) => s + r.macs, 0)).toBe(macs(a));
    expect(macs(a)).toBeGreaterThan(0);
    for (const r of rows) expect(r.macs).toBeGreaterThanOrEqual(0);
    expect(rows[rows.length - 1].outputShape).toEqual([512]);
    // Unique, JSON-serializable, frozen.
    expect(names(a).size).toBe(stateDictTensors(a).length);
    expect(JSON.parse(JSON.stringify(a.config))).toEqual(a.config);
    expect(Object.isFrozen(a.nodes)).toBe(true);
  });

  it('stage outputs: S1 CNNs end at 7×7, EdgeNeXt at 3×3, ViT/8 has 197 tokens, insightface 144', () => {
    const last = (a: BackboneArch<AnyArchNode>, id: string): readonly number[] => inferShapes(a).get(id) as readonly number[];
    expect(last(ARCHS.mobilenetv3_large, 'blocks.6.0.bn1.act')).toEqual([1, 960, 7, 7]);
    expect(last(ARCHS.efficientnet_b0, 'bn2.act')).toEqual([1, 1280, 7, 7]);
    expect(last(ARCHS['ghostfacenet_v1_1.3_1'], 'blocks.9.0.act1')).toEqual([1, 664, 7, 7]);
    expect(last(ARCHS.edgenext_small, 'stages.3.blocks.2.add')).toEqual([1, 304, 3, 3]);
    expect(last(ARCHS.edgenext_small, 'stages.2.blocks.8.cat')).toEqual([1, 160, 7, 7]);
    expect(last(ARCHS.vit_s, 'pos_embed')).toEqual([1, 197, 384]);
    expect(last(ARCHS.deit_s_distilled, 'pos_embed')).toEqual([1, 198, 384]);
    expect(last(ARCHS.if_vit_s, 'flatten')).toEqual([1, 144 * 512]);
  });

  it('a ViT with 8×8 patches refuses another input size, naming it', () => {
    const [code, message] = codeOf(() => inferShapes(ARCHS.vit_s, [1, 3, 120, 120]));
    expect(code).toBe('SHAPE_MISMATCH');
    expect(message).toMatch(/node 'pos_embed' \(posembed\) expects \[N, 197, 384\] \(the model's 112×112 input; this input is 120×120\) but receives \[1, 226, 384\]/);
    expect(codeOf(() => outputShape(ARCHS.vit_b, [2, 3, 96, 96]))[0]).toBe('SHAPE_MISMATCH');
    // The GDC CNNs: a larger map no longer fits the 7×7 GDC into the flattened Linear.
    expect(codeOf(() => outputShape(ARCHS.mobilenetv3_large, [1, 3, 128, 128]))[0]).toBe('SHAPE_MISMATCH');
  });

  it('the new ops re-check their inputs on a tampered graph', () => {
    const tamper = (a: BackboneArch<AnyArchNode>, id: string, patch: Record<string, unknown>): BackboneArch<AnyArchNode> =>
      ({ ...a, nodes: a.nodes.map((n) => (n.id === id ? ({ ...n, ...patch } as AnyArchNode) : n)) });
    const v = ARCHS.vit_s;
    expect(codeOf(() => inferShapes(tamper(v, 'blocks.0.attn', { dim: 380 })))[1]).toMatch(/^node 'blocks\.0\.attn' \(attention\) expects dim 380 divisible by 6 heads/);
    expect(codeOf(() => inferShapes(tamper(v, 'blocks.0.norm1', { features: 383 })))[1]).toMatch(/^node 'blocks\.0\.norm1' \(layernorm\) expects \[N, \.\.\., 383\]/);
    expect(codeOf(() => inferShapes(tamper(v, 'pool', { index: 197 })))[0]).toBe('SHAPE_MISMATCH');
    const e = ARCHS.edgenext_small;
    expect(codeOf(() => inferShapes(tamper(e, 'stages.1.blocks.0.to_map', { height: 13 })))[1]).toMatch(/\(tomap\) expects \[N, 182, C\]/);
    expect(codeOf(() => inferShapes(tamper(e, 'stages.2.blocks.8.chunk.2', { start: 110 })))[1]).toMatch(/\(slice\) expects a map of at least 162 channels/);
    const m = ARCHS.mobilenetv3_large;
    expect(codeOf(() => inferShapes(tamper(m, 'blocks.2.0.se.mul', { inputs: ['blocks.2.0.bn2.act', 'blocks.2.0.se.conv_reduce'] })))[1]).toMatch(/\(mul\) expects a gate of/);
  });
});

describe('layers and names the checkpoints need', () => {
  it('make_divisible and TF-same padding', () => {
    expect([makeDivisible(16 * 4), makeDivisible(24 * 3), makeDivisible(80 * 2.5), makeDivisible(80 * 2.3), makeDivisible(120 * 0.25), makeDivisible(624 * 0.25, 4)]).toEqual([64, 72, 200, 184, 32, 156]);
    expect(makeDivisible(512 * 1.3, 4)).toBe(664);
    expect(tfSamePadding(112, 3, 2)).toEqual([0, 1]);
    expect(tfSamePadding(56, 5, 2)).toEqual([1, 2]);
    expect(tfSamePadding(14, 3, 1)).toEqual([1, 1]);
  });

  it('MobileNetV3: timm keys (A), cavaface keys (B), SE gates', () => {
    const a = names(ARCHS.mobilenetv3_large);
    for (const k of ['conv_stem.weight', 'bn1.running_var', 'blocks.0.0.conv_dw.weight', 'blocks.0.0.conv_pw.weight', 'blocks.2.0.se.conv_reduce.bias', 'blocks.2.0.se.conv_expand.weight',
      'blocks.5.2.conv_pwl.weight', 'blocks.5.2.bn3.num_batches_tracked', 'blocks.6.0.conv.weight', 'output_layer.conv_6_dw.conv.weight', 'output_layer.linear.weight', 'output_layer.bn.bias']) expect(a).toContain(k);
    expect(stateDictTensors(ARCHS.mobilenetv3_large).find((t) => t.name === 'blocks.2.0.se.conv_reduce.weight')?.shape).toEqual([24, 72, 1, 1]);
    expect((node(ARCHS.mobilenetv3_large, 'blocks.2.0.se.gate') as HardSigmoidNode).form).toBe('torch');
    expect(node(ARCHS.mobilenetv3_large, 'blocks.0.0.add').op).toBe('add'); // the first DS block's residual
    const b = names(ARCHS.mobilenetv3_large_cavaface);
    for (const k of ['features.0.0.weight', 'features.0.2.weight', 'features.4.conv.5.fc.0.weight', 'features.4.conv.5.fc.2.bias', 'features.4.conv.6.weight', 'conv.0.weight', 'output_layer.bn.running_mean']) expect(b).toContain(k);
    // cavaface: SE between the depthwise BN and its PReLU.
    const order = ARCHS.mobilenetv3_large_cavaface.nodes.map((n) => n.id);
    expect(order.indexOf('features.4.conv.4')).toBeLessThan(order.indexOf('features.4.conv.5.mul'));
    expect(order.indexOf('features.4.conv.5.mul')).toBeLessThan(order.indexOf('features.4.conv.6'));
  });

  it('EfficientNet-B0: SiLU/sigmoid SE from the block input (A), cavaface stages (B)', () => {
    const a = ARCHS.efficientnet_b0;
    expect(node(a, 'blocks.1.0.se.act1').op).toBe('silu');
    expect(node(a, 'blocks.1.0.se.gate').op).toBe('sigmoid');
    expect(stateDictTensors(a).find((t) => t.name === 'blocks.1.0.se.conv_reduce.weight')?.shape).toEqual([4, 96, 1, 1]);
    expect(a.nodes.some((n) => n.id === 'blocks.0.0.add')).toBe(false); // 32 → 16: no residual
    const b = names(ARCHS.efficientnet_b0_cavaface);
    for (const k of ['features.init_block.conv.conv.weight', 'features.stage1.unit1.se.conv1.weight', 'features.stage4.unit6.conv3.bn.running_var', 'features.stage5.unit5.conv2.activ.weight',
      'features.final_block.conv.weight', 'output.conv_6_dw.conv.weight', 'output.linear.weight']) expect(b).toContain(k);
  });

  it('GhostFaceNets: TF-same asymmetric padding on stride-2 convs, Keras hard-sigmoid, PReLU in SE, biased GDC conv', () => {
    const g = ARCHS['ghostfacenet_v1_1.3_1'];
    const strided = g.nodes.filter((n): n is Conv2dNode => n.op === 'conv2d' && n.stride === 2);
    expect(strided.length).toBe(8);
    for (const c of strided) expect(c.asymmetricPadding).toEqual(c.kernel === 3 ? [0, 1, 0, 1] : [1, 2, 1, 2]);
    expect((node(g, 'blocks.3.0.se.gate') as HardSigmoidNode).form).toBe('keras');
    expect(names(g)).toContain('blocks.3.0.se.act1.weight');
    expect(names(g)).toContain('output_layer.conv.bias');
    expect(g.preprocessing.std).toEqual([128, 128, 128]);
    const plain = ARCHS['ghostnet_1.0_gdc'];
    expect(plain.nodes.some((n) => n.op === 'conv2d' && n.asymmetricPadding)).toBe(false);
    expect((node(plain, 'blocks.3.0.se.gate') as HardSigmoidNode).form).toBe('torch');
    expect(node(plain, 'blocks.3.0.se.act1').op).toBe('relu');
    expect(inferShapes(g).get('blocks.1.0.conv_dw')).toEqual([1, 64, 56, 56]);
  });

  it('EdgeNeXt / EdgeFace: split cascade, XCA, Fourier encoding, layer scales, LoRaLin names', () => {
    const e = ARCHS.edgenext_small;
    const sh = inferShapes(e);
    expect([0, 1, 2].map((k) => (sh.get(`stages.2.blocks.8.chunk.${k}`) as number[])[1])).toEqual([54, 54, 52]);
    expect(sh.get('stages.1.blocks.2.pos_embd')).toEqual([1, 196, 96]);
    expect(e.nodes.filter((n) => n.op === 'fourierposembed').length).toBe(1);
    const t = new Map(stateDictTensors(e).map((x) => [x.name, x]));
    expect(t.get('stages.3.blocks.2.xca.temperature')?.shape).toEqual([8, 1, 1]);
    expect(t.get('stages.3.blocks.2.gamma_xca')?.init).toEqual({ kind: 'constant', value: 1e-6 });
    expect(t.get('stages.1.blocks.2.pos_embd.token_projection.weight')?.shape).toEqual([96, 64, 1, 1]);
    expect(t.get('stages.2.blocks.8.convs.1.bias')?.shape).toEqual([54]);
    for (const k of ['stem.0.weight', 'stem.1.weight', 'stages.1.downsample.0.bias', 'stages.1.downsample.1.weight', 'stages.0.blocks.0.conv_dw.bias', 'stages.0.blocks.0.mlp.fc1.weight', 'stages.0.blocks.0.gamma', 'head.norm.weight', 'head.fc.weight']) expect(t.has(k)).toBe(true);
    const f = new Map(stateDictTensors(ARCHS.edgeface_s_gamma_05).map((x) => [x.name, x]));
    expect(f.get('model.stages.3.blocks.2.xca.qkv.linear1.weight')?.shape).toEqual([152, 304]);
    expect(f.has('model.stages.3.blocks.2.xca.qkv.linear1.bias')).toBe(false);
    expect(f.get('model.stages.3.blocks.2.xca.qkv.linear2.bias')?.shape).toEqual([912]);
    expect(f.get('model.head.fc.linear1.weight')?.shape).toEqual([152, 304]);
    expect(f.get('model.stages.1.blocks.2.pos_embd.token_projection.weight')?.shape).toEqual([96, 64, 1, 1]); // stays a conv
    expect(macs(edgeNeXtArch('s', { lowRank: true, rankRatio: 0.5 }))).toBe(152897808);
  });

  it('ViT / DeiT / insightface ViT names, tokens and heads', () => {
    const v = new Map(stateDictTensors(ARCHS.vit_s).map((x) => [x.name, x]));
    expect(v.get('cls_token')?.shape).toEqual([1, 1, 384]);
    expect(v.get('pos_embed')?.shape).toEqual([1, 197, 384]);
    expect(v.get('patch_embed.proj.weight')?.shape).toEqual([384, 3, 8, 8]);
    expect(v.get('blocks.11.attn.qkv.bias')?.shape).toEqual([1152]);
    expect(v.get('head.weight')?.shape).toEqual([512, 384]);
    const d = new Map(stateDictTensors(ARCHS.deit_s_distilled).map((x) => [x.name, x]));
    expect(d.get('dist_token')?.shape).toEqual([1, 1, 384]);
    expect(d.get('head_dist.bias')?.shape).toEqual([512]);
    expect(ARCHS.deit_s_distilled.output).toBe('head_average');
    const i = new Map(stateDictTensors(ARCHS.if_vit_s).map((x) => [x.name, x]));
    expect(i.has('blocks.0.attn.qkv.bias')).toBe(false);
    expect(i.get('mask_token')?.shape).toEqual([1, 1, 512]);
    expect(i.get('feature.0.weight')?.shape).toEqual([512, 73728]);
    expect(node(ARCHS.if_vit_s, 'feature.1')).toMatchObject({ op: 'batchnorm1d', eps: 2e-5 });
    expect(node(ARCHS.if_vit_s, 'blocks.0.mlp.act').op).toBe('relu6');
    expect(node(ARCHS.if_vit_s, 'blocks.0.norm1')).toMatchObject({ op: 'layernorm', eps: 1e-5, layout: 'last' });
    expect(node(ARCHS.vit_s, 'blocks.0.norm1')).toMatchObject({ eps: 1e-6 });
    expect(node(ARCHS.vit_s, 'blocks.0.attn')).toMatchObject({ op: 'attention', dim: 384, heads: 6, scale: 1 / 8 });
    expect(ARCHS.if_vit_b.nodes.filter((n) => n.op === 'attention').length).toBe(24);
  });

  it('drop path nodes with linearly growing rates', () => {
    const v = vitArch('s', { dropPathRate: 0.1 });
    const rates = v.nodes.filter((n) => n.op === 'droppath').map((n) => (n as { p: number }).p);
    expect(rates.length).toBe(22); // block 0 has rate 0: no node
    expect(rates[rates.length - 1]).toBeCloseTo(0.1, 12);
    expect(parameterCount(v)).toBe(21_641_600);
    expect(outputShape(v)).toEqual([1, 512]);
    expect(edgeNeXtArch('s', { dropPathRate: 0.1 }).nodes.some((n) => n.op === 'droppath')).toBe(true);
    expect(ARCHS.vit_s.nodes.some((n) => n.op === 'droppath')).toBe(false);
  });

  it('arguments', () => {
    expect(() => mobileNetV3Arch('small' as never)).toThrow(RangeError);
    expect(() => mobileNetV3Arch('large', { preset: 'C' as never })).toThrow(RangeError);
    expect(() => efficientNetArch('b0', { bogus: 1 } as never)).toThrow(TypeError);
    expect(() => ghostNetArch('v2' as never)).toThrow(RangeError);
    expect(() => vitArch('s', { patch: 9 as never })).toThrow(RangeError);
    expect(() => edgeNeXtArch('s', { rankRatio: 0.5 })).toThrow(TypeError);
    expect(() => insightfaceVitArch('l' as never)).toThrow(RangeError);
    expect(() => backboneArch('vit_l' as never)).toThrow(/second-batch backbones: 'mobilenetv3_large'/);
    expect(parameterCount(vitArch('s', { embeddingSize: 256 }))).toBe(21_641_600 - 256 * 385);
    expect(outputShape(ghostNetArch('v1-1.3-1', { embeddingSize: 128 }))).toEqual([1, 128]);
  });
});

describe('Backbone: what the native executor refuses, and the asymmetric padding it runs', () => {
  it('token masking above ratio 0 and ops it does not know are NOT_IMPLEMENTED, naming the node', () => {
    const g = insightfaceVitArch('s');
    const masked = { ...g, nodes: g.nodes.map((n) => (n.op === 'tokenmask' ? { ...n, ratio: 0.1 } : n)) } as BackboneArch<AnyArchNode>;
    expect(codeOf(() => Backbone.fromArch(masked))).toEqual(['NOT_IMPLEMENTED', "model 'if_vit_s': op 'tokenmask' with ratio 0.1 (node 'mask') is not supported by the native executor"]);
    const odd = { ...g, nodes: g.nodes.map((n) => (n.id === 'blocks.0.mlp.act' ? { ...n, op: 'swish2' } : n)) } as unknown as BackboneArch<AnyArchNode>;
    expect(codeOf(() => Backbone.fromArch(odd))).toEqual(['NOT_IMPLEMENTED', "node 'blocks.0.mlp.act': unknown op 'swish2'"]);
  });

  it('ONNX export of a second-batch graph is NOT_IMPLEMENTED, naming the first op it cannot write', () => {
    expect(codeOf(() => archToOnnx(vitArch('s') as unknown as BackboneArch, new Map()))).toEqual(['NOT_IMPLEMENTED', "ONNX export of op 'totokens' (node 'patch_embed.flatten' of 'vit_s') is not supported yet"]);
  });

  it('a ViT built for 112×112 refuses another input size with SHAPE_MISMATCH', async () => {
    const m = Backbone.create('deit_s', { seed: 1 });
    try {
      await expect(m.forward(new Float32Array(2 * 3 * 96 * 96))).rejects.toMatchObject({ code: 'SHAPE_MISMATCH' });
    } finally {
      m.dispose();
    }
  });

  it("TF-'same' asymmetric padding (GhostFaceNets' stride-2 convs) matches a float64 direct convolution", async () => {
    // A depthwise 3×3 stride-2 conv on 7×6 with padding [top 0, bottom 1, left 1, right 1] (rows and
    // columns padded differently, and the two sides of a row differently).
    const [C, H, W, K, S] = [3, 7, 6, 3, 2];
    const pads = [0, 1, 1, 1] as const;
    const conv = ghostNetArch('v1-1.3-1').nodes.find((n) => n.op === 'conv2d' && n.asymmetricPadding) as Conv2dNode;
    const tiny: BackboneArch<AnyArchNode> = {
      ...ghostNetArch('v1-1.3-1'), name: 'tiny_same', inputShape: [C, H, W] as unknown as readonly [number, number, number],
      nodes: [
        { id: 'input', op: 'input', inputs: [], module: null, tensors: [], channels: C, height: H, width: W },
        { ...conv, id: 'c', module: 'c', inputs: ['input'], inC: C, outC: C, groups: C, kernel: K, stride: S, padding: 0, asymmetricPadding: pads, tensors: [{ ...conv.tensors[0], name: 'c.weight', shape: [C, 1, K, K] }] },
      ],
      output: 'c',
    };
    const m = Backbone.fromArch(tiny, { seed: 5 });
    try {
      const x = Float32Array.from({ length: 2 * C * H * W }, (_, i) => Math.sin(1.3 * i + 0.2));
      const w = await m.getParameter('c.weight') as Float32Array;
      const y = await (await m.forward(Tensor.from(x, [2, C, H, W]))).toArray() as Float32Array;
      const OH = Math.floor((H + pads[0] + pads[1] - K) / S) + 1;
      const OW = Math.floor((W + pads[2] + pads[3] - K) / S) + 1;
      expect(y.length).toBe(2 * C * OH * OW);
      for (let n = 0; n < 2; n++) for (let c = 0; c < C; c++) for (let oy = 0; oy < OH; oy++) for (let ox = 0; ox < OW; ox++) {
        let acc = 0;
        for (let ky = 0; ky < K; ky++) for (let kx = 0; kx < K; kx++) {
          const iy = oy * S + ky - pads[0];
          const ix = ox * S + kx - pads[2];
          if (iy >= 0 && iy < H && ix >= 0 && ix < W) acc += x[((n * C + c) * H + iy) * W + ix] * w[(c * K + ky) * K + kx];
        }
        expect(Math.abs(y[((n * C + c) * OH + oy) * OW + ox] - acc)).toBeLessThan(1e-5 * (1 + Math.abs(acc)));
      }
      // The gradient reaches the input only inside the padding: backward of Σ y·1.
      const dx = await m.backward(Tensor.from(new Float32Array(2 * C * OH * OW).fill(1), [2, C, OH, OW]), { inputGrad: true });
      const d = await (dx as NonNullable<typeof dx>).toArray() as Float32Array;
      for (let c = 0; c < C; c++) for (let iy = 0; iy < H; iy++) for (let ix = 0; ix < W; ix++) {
        let acc = 0;
        for (let oy = 0; oy < OH; oy++) for (let ox = 0; ox < OW; ox++) {
          const ky = iy + pads[0] - oy * S;
          const kx = ix + pads[2] - ox * S;
          if (ky >= 0 && ky < K && kx >= 0 && kx < K) acc += w[(c * K + ky) * K + kx];
        }
        expect(Math.abs(d[(c * H + iy) * W + ix] - acc)).toBeLessThan(1e-5 * (1 + Math.abs(acc)));
      }
    } finally {
      m.dispose();
    }
  });
});

describe('drop path: seeded in training, identity in eval (EdgeNeXt-S, rate 0.2)', () => {
  it('eval equals the rate-0 model; training draws per step, reproducibly, and differs from the rate-0 model', async () => {
    const a = Backbone.create('edgenext_small', { seed: 9, dropPathRate: 0.2 });
    const b = Backbone.create('edgenext_small', { seed: 9 });
    try {
      expect(a.arch.nodes.filter((n) => (n as { op: string }).op === 'droppath').length).toBeGreaterThan(0);
      // Same weights, with layer scales of 0.5 rather than the init's 1e-6 (so a dropped branch shows).
      for (const m of [a, b]) await m.loadStateDict(zoo.zooState(m.arch, stateDictTensors(m.arch)));
      const N = 4;
      const x = Tensor.from(Float32Array.from({ length: N * 3 * 112 * 112 }, (_, i) => Math.sin(0.37 * i)), [N, 3, 112, 112]);
      a.eval();
      b.eval();
      const ya = (await (await a.forward(x)).toArray()) as Float32Array;
      const yb = (await (await b.forward(x)).toArray()) as Float32Array;
      expect(Array.from(ya)).toEqual(Array.from(yb));
      a.train();
      b.train();
      await a.setStep(5);
      const t5 = (await (await a.forward(x)).toArray()) as Float32Array;
      const t6 = (await (await a.forward(x)).toArray()) as Float32Array;
      await a.setStep(5);
      const t5again = (await (await a.forward(x)).toArray()) as Float32Array;
      const plain = (await (await b.forward(x)).toArray()) as Float32Array;
      expect(Array.from(t5again)).toEqual(Array.from(t5));
      const diff = (p: Float32Array, q: Float32Array): number => p.reduce((m, v, i) => Math.max(m, Math.abs(v - q[i])), 0);
      expect(diff(t5, t6)).toBeGreaterThan(1e-3);
      expect(diff(t5, plain)).toBeGreaterThan(1e-3);
    } finally {
      a.dispose();
      b.dispose();
    }
  }, 60_000);
});

describe('eval-mode fusion: conv (+ folded BatchNorm) + activation in one pass (CPU)', () => {
  // With foldBatchNorm (the default) an eval forward runs conv → BN → ReLU/ReLU6/hard-swish/SiLU as
  // one convolution with a fused epilogue; foldBatchNorm: false runs every layer on its own. Same
  // weights and input: outputs, dL/dx and every parameter gradient (the backward after a fused
  // forward recomputes the skipped intermediate outputs) must agree. The gradients get 2e-2: folded
  // and unfolded BatchNorms round the pre-activations differently (~1e-6), so a ReLU whose input lies
  // within that of 0 can switch sides and change dL/dx locally (GhostNet, all ReLU: usually ~1e-6,
  // but up to 6.6e-3 on some inputs); a missing recompute gives errors of order 1.
  for (const name of ['mobilenetv3_large', 'efficientnet_b0', 'ghostnet_1.0_gdc'] as const) {
    it(`${name}: fused and unfused eval forward + backward agree`, async () => {
      const fused = Backbone.create(name, { seed: 4 });
      const plain = Backbone.create(name, { seed: 4, foldBatchNorm: false });
      try {
        for (const m of [fused, plain]) {
          await m.loadStateDict(zoo.zooState(m.arch, stateDictTensors(m.arch)));
          m.eval();
        }
        const N = 2;
        const seed = (Date.now() & 0xffff) + 1;
        const x = Tensor.from(Float32Array.from({ length: N * 3 * 112 * 112 }, (_, i) => Math.sin(0.0137 * i * seed + seed)), [N, 3, 112, 112]);
        const g = Tensor.from(Float32Array.from({ length: N * 512 }, (_, i) => Math.cos(0.71 * i + seed)), [N, 512]);
        const rel = maxRel;
        const yf = (await (await fused.forward(x)).toArray()) as Float32Array;
        const yp = (await (await plain.forward(x)).toArray()) as Float32Array;
        expect(rel(yf, yp)).toBeLessThan(1e-4);
        const dxf = (await (await fused.backward(g, { inputGrad: true }))!.toArray()) as Float32Array;
        const dxp = (await (await plain.backward(g, { inputGrad: true }))!.toArray()) as Float32Array;
        expect(rel(dxf, dxp)).toBeLessThan(2e-2);
        const pf = await fused.parameters();
        const pp = await plain.parameters();
        let checked = 0;
        for (let k = 0; k < pf.length; k++) {
          if (!pf[k].grad || !pp[k].grad) continue;
          const a = (await pf[k].grad!.toArray()) as Float32Array;
          const b = (await pp[k].grad!.toArray()) as Float32Array;
          if (b.every((v) => v === 0)) continue;
          expect([pf[k].name, rel(a, b) < 2e-2]).toEqual([pf[k].name, true]);
          checked++;
        }
        expect(checked).toBeGreaterThan(50);
      } finally {
        fused.dispose();
        plain.dispose();
      }
    }, 120_000);
  }
});
