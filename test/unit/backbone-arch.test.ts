// The backbone layer graphs (lib/backbones/arch.ts) against three sources: the SPEC §8.1/§8.2 tables
// (to their printed precision), an independent count by the spec's own counter
// (test/fixtures/backbone-counts.json, written by test/fixtures/gen_backbone_counts.py), and
// arcface_torch's state-dict keys (iresnet.py, mobilefacenet.py) spelled out here by hand.
import * as fs from 'fs';
import * as path from 'path';
import { FacecudaError } from '../../lib/errors';
import {
  ARCFACE_TEMPLATE_112, alignmentTemplate, ArchNode, BackboneArch, backboneArch, BACKBONE_NAMES, Conv2dNode, convOutputSize, inferShapes,
  iresnetArch, IRESNET_LAYERS, macs, mobileFaceNetArch, mobileFaceNetLargeArch, outputShape, parameterCount, stateDictTensors, summarize,
  TensorSpec, trainableParameterCount,
} from '../../lib/backbones/arch';

// #region helpers

type ModelName = (typeof BACKBONE_NAMES)[number];

const byName = (arch: BackboneArch): Map<string, TensorSpec> => new Map(stateDictTensors(arch).map((t) => [t.name, t]));
const keys = (arch: BackboneArch): string[] => stateDictTensors(arch).map((t) => t.name);
const node = (arch: BackboneArch, id: string): ArchNode => {
  const n = arch.nodes.find((x) => x.id === id);
  if (!n) throw new Error(`no node '${id}' in ${arch.name}`);
  return n;
};
const convs = (arch: BackboneArch): Conv2dNode[] => arch.nodes.filter((n): n is Conv2dNode => n.op === 'conv2d');
const bnKeys = (m: string): string[] => ['weight', 'bias', 'running_mean', 'running_var', 'num_batches_tracked'].map((r) => `${m}.${r}`);

/** The shape of the last node whose id starts with `prefix` (a stage's output). */
function lastShapeUnder(arch: BackboneArch, shapes: Map<string, readonly number[]>, prefix: string): readonly number[] {
  const last = [...arch.nodes].reverse().find((n) => n.id.startsWith(prefix));
  if (!last) throw new Error(`no node under '${prefix}'`);
  return shapes.get(last.id) as readonly number[];
}

const ARCHS: Record<ModelName, BackboneArch> = Object.fromEntries(BACKBONE_NAMES.map((n) => [n, backboneArch(n)])) as Record<ModelName, BackboneArch>;

// #endregion

describe('SPEC §8.1/§8.2 tables (to the printed precision)', () => {
  // [params M, trainable M, conv+fc MACs G, fp32 size MB (params·4 / 2^20, as the SPEC column)]
  const SPEC: Record<ModelName, [string, string, string, string]> = {
    r18: ['24.026', '24.025', '2.610', '91.7'],
    r34: ['34.139', '34.139', '4.460', '130.2'],
    r50: ['43.591', '43.590', '6.309', '166.3'],
    r100: ['65.156', '65.156', '12.090', '248.6'],
    r200: ['118.834', '118.833', '23.419', '453.3'],
    mbf: ['2.060', '2.060', '0.438', '7.86'],
    mbf_large: ['6.315', '6.315', '1.816', '24.09'], // size: not in the SPEC, recorded for completeness
  };

  it.each(BACKBONE_NAMES)('%s: parameters, trainable parameters, MACs and size', (name) => {
    const arch = ARCHS[name];
    const [p, t, g, mb] = SPEC[name];
    expect((parameterCount(arch) / 1e6).toFixed(3)).toBe(p);
    expect((trainableParameterCount(arch) / 1e6).toFixed(3)).toBe(t);
    expect((macs(arch) / 1e9).toFixed(3)).toBe(g);
    expect(((parameterCount(arch) * 4) / 2 ** 20).toFixed(mb.split('.')[1].length)).toBe(mb);
  });

  it('exact totals (the numbers behind the table)', () => {
    expect(parameterCount(ARCHS.r50)).toBe(43_590_848);
    expect(trainableParameterCount(ARCHS.r50)).toBe(43_590_848 - 512);
    expect(macs(ARCHS.r50)).toBe(6_309_330_944);
    expect(parameterCount(ARCHS.mbf)).toBe(2_059_520);
    expect(macs(ARCHS.mbf)).toBe(437_520_896);
  });

  it('only IResNet has a frozen parameter: features.weight', () => {
    for (const name of BACKBONE_NAMES) {
      const frozen = stateDictTensors(ARCHS[name]).filter((t) => t.kind === 'parameter' && !t.trainable).map((t) => t.name);
      expect(frozen).toEqual(name.startsWith('r') ? ['features.weight'] : []);
    }
  });
});

const fixturePath = path.resolve(__dirname, '..', 'fixtures', 'backbone-counts.json');
const fixture = JSON.parse(fs.readFileSync(fixturePath, 'utf8')) as {
  inputSize: number;
  embeddingSize: number;
  models: Record<ModelName, {
    params: number; trainableParams: number; bnRunningStats: number; macs: number;
    layers: { conv2d: number; batchnorm: number; prelu: number; linear: number };
    stateDictKeys: number; stageOutputs: number[][]; convOutputs: number[][];
  }>;
};

describe('the independent counter (test/fixtures/backbone-counts.json)', () => {
  it('covers every model at the default size', () => {
    expect(Object.keys(fixture.models).sort()).toEqual([...BACKBONE_NAMES].sort());
    expect(fixture.inputSize).toBe(112);
    expect(fixture.embeddingSize).toBe(512);
  });

  it.each(BACKBONE_NAMES)('%s: exact counts, layers, keys, stage outputs and every conv output size', (name) => {
    const arch = ARCHS[name];
    const want = fixture.models[name];
    const bns = arch.nodes.filter((n) => n.op === 'batchnorm2d' || n.op === 'batchnorm1d').length;
    expect(parameterCount(arch)).toBe(want.params);
    expect(trainableParameterCount(arch)).toBe(want.trainableParams);
    // includeBuffers adds running_mean + running_var (the counter's buffers) and one num_batches_tracked per BN.
    expect(parameterCount(arch, { includeBuffers: true }) - parameterCount(arch)).toBe(want.bnRunningStats + bns);
    expect(macs(arch)).toBe(want.macs);
    const count = (op: ArchNode['op']): number => arch.nodes.filter((n) => n.op === op).length;
    expect({ conv2d: count('conv2d'), batchnorm: bns, prelu: count('prelu'), linear: count('linear') }).toEqual(want.layers);
    expect(stateDictTensors(arch).length).toBe(want.stateDictKeys);

    const shapes = inferShapes(arch);
    const stagePrefixes = name.startsWith('r') ? ['layer1.', 'layer2.', 'layer3.', 'layer4.'] : ['layers.1.', 'layers.3.', 'layers.5.', 'layers.7.'];
    expect(stagePrefixes.map((p) => lastShapeUnder(arch, shapes, p).slice(1))).toEqual(want.stageOutputs);
    // The counter visits the convolutions in the same order as the graph (block, then downsample).
    expect(convs(arch).map((c) => (shapes.get(c.id) as number[]).slice(2))).toEqual(want.convOutputs);
  });
});

describe('shape inference', () => {
  it.each(BACKBONE_NAMES)('%s: [N, 3, 112, 112] → [N, 512] for several N', (name) => {
    for (const n of [1, 2, 7, 256]) expect(outputShape(ARCHS[name], [n, 3, 112, 112])).toEqual([n, 512]);
    expect(outputShape(ARCHS[name])).toEqual([1, 512]);
  });

  it('embeddingSize, dropout and inputSize reach the graph', () => {
    const a = iresnetArch(18, { embeddingSize: 128, dropout: 0.4 });
    expect(outputShape(a, [3, 3, 112, 112])).toEqual([3, 128]);
    expect(byName(a).get('fc.weight')?.shape).toEqual([128, 25088]);
    expect(byName(a).get('features.running_var')?.shape).toEqual([128]);
    expect(node(a, 'dropout')).toMatchObject({ op: 'dropout', p: 0.4, module: 'dropout' });
    expect(node(iresnetArch(18), 'dropout')).toMatchObject({ p: 0 });

    const big = iresnetArch(50, { inputSize: 224 });
    const shapes = inferShapes(big, [2, 3, 224, 224]);
    expect(shapes.get('layer4.2.add')).toEqual([2, 512, 14, 14]);
    expect(node(big, 'fc')).toMatchObject({ in: 512 * 14 * 14, out: 512 });
    expect(outputShape(big, [2, 3, 224, 224])).toEqual([2, 512]);
    expect(big.preprocessing.inputSize).toBe(224);
    // ⌈size/16⌉ at the end, for sizes that are not multiples of 16 too.
    expect(inferShapes(iresnetArch(18, { inputSize: 100 })).get('layer4.1.add')).toEqual([1, 512, 7, 7]);

    const m = mobileFaceNetArch({ embeddingSize: 256 });
    expect(outputShape(m, [5, 3, 112, 112])).toEqual([5, 256]);
    expect(byName(m).get('features.layers.2.weight')?.shape).toEqual([256, 512]);
    expect(mobileFaceNetLargeArch({ embeddingSize: 128 }).embeddingSize).toBe(128);
  });

  it('a mismatched input is a SHAPE_MISMATCH naming the first node that does not fit', () => {
    const r50 = ARCHS.r50;
    const mismatch = (fn: () => unknown, re: RegExp): void => {
      let caught: unknown;
      try { fn(); } catch (e) { caught = e; }
      expect(caught).toBeInstanceOf(FacecudaError);
      expect((caught as FacecudaError).code).toBe('SHAPE_MISMATCH');
      expect((caught as Error).message).toMatch(re);
    };
    mismatch(() => inferShapes(r50, [2, 3, 224, 224]), /^node 'fc' \(linear\) expects \[N, 25088\] but receives \[2, 100352\]$/);
    mismatch(() => inferShapes(r50, [2, 1, 112, 112]), /^node 'input' \(input\) expects \[N, 3, H, W\]/);
    mismatch(() => inferShapes(ARCHS.mbf, [1, 3, 64, 64]), /^node 'features\.layers\.0\.layers\.0' \(conv2d\)/);
    // A tampered copy of the graph: inference re-checks every node instead of trusting the builder.
    const tampered = { ...r50, nodes: r50.nodes.map((n) => (n.id === 'layer2.0.conv1' ? { ...n, inC: 65 } : n)) } as BackboneArch;
    mismatch(() => inferShapes(tampered), /^node 'layer2\.0\.conv1' \(conv2d\) expects \[N, 65, H, W\] but receives \[1, 64, 56, 56\]$/);
    const badAdd = { ...r50, nodes: r50.nodes.map((n) => (n.id === 'layer1.1.add' ? { ...n, inputs: ['layer1.1.bn3', 'layer1.0.bn1'] } : n)) } as BackboneArch;
    mismatch(() => inferShapes(badAdd), /^node 'layer1\.1\.add' \(add\)/);
    const forward = { ...r50, nodes: r50.nodes.map((n) => (n.id === 'conv1' ? { ...n, inputs: ['bn1'] } : n)) } as BackboneArch;
    mismatch(() => inferShapes(forward), /^node 'conv1' reads 'bn1', which is not an earlier node$/);
  });

  it('rejects a malformed input shape', () => {
    expect(() => inferShapes(ARCHS.r18, [3, 112, 112])).toThrow(TypeError);
    expect(() => inferShapes(ARCHS.r18, [0, 3, 112, 112])).toThrow(/^Expected an integer between 1 and \d+ for inputShape\[0\] but received 0 of type number$/);
    expect(() => inferShapes(ARCHS.r18, [1.5, 3, 112, 112])).toThrow(TypeError);
  });

  it('the graph is topological, ids are unique, module nodes own their key prefix', () => {
    for (const name of BACKBONE_NAMES) {
      const arch = ARCHS[name];
      const seen = new Set<string>();
      expect(arch.nodes[0].op).toBe('input');
      for (const n of arch.nodes) {
        for (const i of n.inputs) expect(seen.has(i)).toBe(true);
        expect(seen.has(n.id)).toBe(false);
        seen.add(n.id);
        if (n.module !== null) expect(n.module).toBe(n.id);
        for (const t of n.tensors) expect(t.name).toBe(`${n.module}.${t.role}`);
        expect(n.inputs.length).toBe(n.op === 'input' ? 0 : n.op === 'add' ? 2 : 1);
      }
      expect(arch.output).toBe(arch.nodes[arch.nodes.length - 1].id);
    }
  });
});

describe('IResNet layout (SPEC §8.1)', () => {
  it.each([18, 34, 50, 100, 200] as const)('r%d: 112 → 56 → 28 → 14 → 7, stride on conv2, downsample only on each first block', (depth) => {
    const arch = iresnetArch(depth);
    const shapes = inferShapes(arch);
    expect(shapes.get('prelu')).toEqual([1, 64, 112, 112]);
    const layers = IRESNET_LAYERS[depth];
    [64, 128, 256, 512].forEach((width, s) => {
      const size = 56 >> s;
      for (let b = 0; b < layers[s]; b++) {
        const p = `layer${s + 1}.${b}`;
        expect(node(arch, `${p}.conv1`)).toMatchObject({ kernel: 3, stride: 1, padding: 1, groups: 1, outC: width });
        expect(node(arch, `${p}.conv2`)).toMatchObject({ kernel: 3, stride: b === 0 ? 2 : 1, padding: 1, outC: width });
        expect(shapes.get(`${p}.add`)).toEqual([1, width, size, size]);
        const add = node(arch, `${p}.add`);
        const hasDownsample = arch.nodes.some((n) => n.id.startsWith(`${p}.downsample.`));
        expect(hasDownsample).toBe(b === 0);
        const prev = b > 0 ? `layer${s + 1}.${b - 1}.add` : s > 0 ? `layer${s}.${layers[s - 1] - 1}.add` : 'prelu';
        expect(add.inputs).toEqual([`${p}.bn3`, b === 0 ? `${p}.downsample.1` : prev]);
        if (b === 0) {
          expect(node(arch, `${p}.downsample.0`)).toMatchObject({ kernel: 1, stride: 2, padding: 0, inC: s === 0 ? 64 : width / 2, outC: width });
          expect(node(arch, `${p}.downsample.0`).inputs).toEqual([prev]);
        }
        expect(node(arch, `${p}.bn1`).inputs).toEqual([prev]);
      }
    });
    // No activation after an add: every reader of an add is a BatchNorm or another add's shortcut.
    const addIds = new Set(arch.nodes.filter((n) => n.op === 'add').map((n) => n.id));
    for (const n of arch.nodes) {
      if (n.inputs.some((i) => addIds.has(i))) expect(['batchnorm2d', 'add', 'conv2d']).toContain(n.op);
      if (n.op === 'prelu') expect(addIds.has(n.inputs[0])).toBe(false);
    }
    // The head: bn2 → flatten (function) → dropout → fc → features.
    const tail = arch.nodes.slice(-5).map((n) => [n.id, n.op, n.module]);
    expect(tail).toEqual([
      ['bn2', 'batchnorm2d', 'bn2'], ['flatten', 'flatten', null], ['dropout', 'dropout', 'dropout'],
      ['fc', 'linear', 'fc'], ['features', 'batchnorm1d', 'features'],
    ]);
    expect(shapes.get('flatten')).toEqual([1, 25088]);
    expect(node(arch, 'fc')).toMatchObject({ in: 25088, out: 512, bias: true });
    expect(node(arch, 'features')).toMatchObject({ features: 512, eps: 1e-5, momentum: 0.1, affine: true, frozenWeight: true });
    expect(arch.nodes.filter((n) => 'frozenWeight' in n && n.frozenWeight).map((n) => n.id)).toEqual(['features']);
  });

  it('every conv output size follows ⌊(H + 2p − k)/s⌋ + 1 from its input', () => {
    for (const name of BACKBONE_NAMES) {
      const arch = ARCHS[name];
      const shapes = inferShapes(arch);
      for (const c of convs(arch)) {
        const [, inC, h, w] = shapes.get(c.inputs[0]) as number[];
        expect(inC).toBe(c.inC);
        expect(shapes.get(c.id)).toEqual([1, c.outC, convOutputSize(h, c.kernel, c.stride, c.padding), convOutputSize(w, c.kernel, c.stride, c.padding)]);
        expect(c.bias).toBe(false);
      }
    }
  });

  it('state-dict keys: exact names and order (arcface_torch iresnet.py)', () => {
    const k = keys(ARCHS.r50);
    expect(k.slice(0, 7)).toEqual(['conv1.weight', ...bnKeys('bn1'), 'prelu.weight']);
    expect(k.slice(7, 7 + 24)).toEqual([
      ...bnKeys('layer1.0.bn1'), 'layer1.0.conv1.weight', ...bnKeys('layer1.0.bn2'), 'layer1.0.prelu.weight',
      'layer1.0.conv2.weight', ...bnKeys('layer1.0.bn3'), 'layer1.0.downsample.0.weight', ...bnKeys('layer1.0.downsample.1'),
    ]);
    expect(k.slice(31, 31 + 18)).toEqual([
      ...bnKeys('layer1.1.bn1'), 'layer1.1.conv1.weight', ...bnKeys('layer1.1.bn2'), 'layer1.1.prelu.weight',
      'layer1.1.conv2.weight', ...bnKeys('layer1.1.bn3'),
    ]);
    expect(k.slice(-12)).toEqual([...bnKeys('bn2'), 'fc.weight', 'fc.bias', ...bnKeys('features')]);
    expect(k).toContain('layer3.13.bn3.running_var');
    expect(k).not.toContain('layer3.14.bn1.weight');
    expect(k).not.toContain('layer1.1.downsample.0.weight');
    expect(k).not.toContain('dropout.weight');
  });

  it.each([[18, 8], [34, 16], [50, 24], [100, 49], [200, 98]] as const)('r%d: 43 + 18·%d keys, none duplicated', (depth, blocks) => {
    const k = keys(iresnetArch(depth));
    expect(k.length).toBe(43 + 18 * blocks);
    expect(new Set(k).size).toBe(k.length);
    expect(k.filter((x) => x.includes('.downsample.')).length).toBe(4 * 6);
    expect(k.filter((x) => x.endsWith('.num_batches_tracked')).length).toBe(3 * blocks + 4 + 3);
  });

  it('tensor shapes, dtypes and kinds', () => {
    const t = byName(ARCHS.r50);
    const shape = (n: string): readonly number[] | undefined => t.get(n)?.shape;
    expect(shape('conv1.weight')).toEqual([64, 3, 3, 3]);
    expect(shape('prelu.weight')).toEqual([64]);
    expect(shape('layer1.0.bn1.weight')).toEqual([64]);
    expect(shape('layer2.0.bn1.weight')).toEqual([64]); // bn1 sees the block input (inplanes)
    expect(shape('layer2.0.conv1.weight')).toEqual([128, 64, 3, 3]);
    expect(shape('layer2.0.conv2.weight')).toEqual([128, 128, 3, 3]);
    expect(shape('layer2.0.downsample.0.weight')).toEqual([128, 64, 1, 1]);
    expect(shape('layer4.2.bn3.running_mean')).toEqual([512]);
    expect(shape('fc.weight')).toEqual([512, 25088]);
    expect(shape('fc.bias')).toEqual([512]);
    expect(t.get('features.num_batches_tracked')).toMatchObject({ shape: [], dtype: 'int64', kind: 'buffer', trainable: false });
    expect(t.get('bn1.running_var')).toMatchObject({ dtype: 'float32', kind: 'buffer', trainable: false });
    expect(t.get('features.weight')).toMatchObject({ kind: 'parameter', trainable: false });
    expect(t.get('features.bias')).toMatchObject({ kind: 'parameter', trainable: true });
  });

  it('initialization (iresnet.py: conv N(0, 0.1), BN 1/0, fc PyTorch default, features weight 1 frozen)', () => {
    const all = stateDictTensors(ARCHS.r34);
    const t = byName(ARCHS.r34);
    for (const x of all) {
      if (x.name.endsWith('.weight') && x.shape.length === 4) expect(x.init).toEqual({ kind: 'normal', mean: 0, std: 0.1 });
      if (x.role === 'running_mean' || x.role === 'num_batches_tracked') expect(x.init).toEqual({ kind: 'constant', value: 0 });
      if (x.role === 'running_var') expect(x.init).toEqual({ kind: 'constant', value: 1 });
    }
    expect(t.get('layer1.0.downsample.0.weight')?.init).toEqual({ kind: 'normal', mean: 0, std: 0.1 });
    expect(t.get('layer3.2.bn2.weight')?.init).toEqual({ kind: 'constant', value: 1 }); // zero_init_residual off
    expect(t.get('layer3.2.bn2.bias')?.init).toEqual({ kind: 'constant', value: 0 });
    expect(t.get('layer3.2.prelu.weight')?.init).toEqual({ kind: 'constant', value: 0.25 });
    const bound = 1 / Math.sqrt(25088);
    const w = t.get('fc.weight')?.init;
    expect(w).toMatchObject({ kind: 'kaimingUniform', mode: 'fan_in', fan: 25088 });
    if (w?.kind !== 'kaimingUniform') throw new Error('fc.weight');
    expect(w.a).toBeCloseTo(Math.sqrt(5), 15);
    expect(w.bound).toBeCloseTo(bound, 15);
    expect(t.get('fc.bias')?.init).toEqual({ kind: 'uniform', low: -bound, high: bound });
    expect(t.get('features.weight')?.init).toEqual({ kind: 'constant', value: 1 });
    expect(t.get('features.bias')?.init).toEqual({ kind: 'constant', value: 0 });
  });

  it('per-node summary: the fc and stem rows', () => {
    const rows = summarize(ARCHS.r18);
    expect(rows.find((r) => r.id === 'fc')).toEqual({ id: 'fc', op: 'linear', module: 'fc', outputShape: [512], params: 25088 * 512 + 512, macs: 25088 * 512 });
    expect(rows.find((r) => r.id === 'conv1')).toMatchObject({ outputShape: [64, 112, 112], params: 1728, macs: 1728 * 112 * 112 });
    expect(rows.find((r) => r.id === 'features')).toMatchObject({ params: 1024, macs: 0 });
    expect(rows.reduce((a, r) => a + r.params, 0)).toBe(parameterCount(ARCHS.r18));
  });
});

describe('MobileFaceNet layout (SPEC §8.2)', () => {
  it('mbf: stage sizes, widths and groups', () => {
    const arch = ARCHS.mbf;
    const shapes = inferShapes(arch);
    expect(shapes.get('layers.0.layers.2')).toEqual([1, 128, 56, 56]);
    expect(node(arch, 'layers.1.layers.0')).toMatchObject({ inC: 128, outC: 128, kernel: 3, stride: 1, padding: 1, groups: 64 });
    expect(node(arch, 'layers.2.layers.1.layers.0')).toMatchObject({ inC: 128, outC: 128, stride: 2, groups: 128 });
    expect(shapes.get('layers.2.layers.2.layers.1')).toEqual([1, 128, 28, 28]);
    expect(node(arch, 'layers.4.layers.0.layers.0')).toMatchObject({ inC: 128, outC: 256, kernel: 1 });
    expect(node(arch, 'layers.4.layers.2.layers.0')).toMatchObject({ inC: 256, outC: 256, kernel: 1 });
    expect(shapes.get('layers.4.layers.2.layers.1')).toEqual([1, 256, 14, 14]);
    expect(node(arch, 'layers.6.layers.1.layers.0')).toMatchObject({ inC: 512, outC: 512, stride: 2, groups: 512 });
    expect(shapes.get('layers.6.layers.2.layers.1')).toEqual([1, 256, 7, 7]);
    expect(node(arch, 'layers.7.layers.1.layers.1.layers.0')).toMatchObject({ inC: 256, outC: 256, groups: 256 });
    expect(node(arch, 'conv_sep.layers.0')).toMatchObject({ inC: 256, outC: 512, kernel: 1 });
    expect(node(arch, 'features.layers.0.layers.0')).toMatchObject({ inC: 512, outC: 512, kernel: 7, stride: 1, padding: 0, groups: 512 });
    expect(shapes.get('features.layers.0.layers.1')).toEqual([1, 512, 1, 1]);
    expect(node(arch, 'features.layers.1')).toMatchObject({ op: 'flatten', module: 'features.layers.1' });
    expect(node(arch, 'features.layers.2')).toMatchObject({ op: 'linear', in: 512, out: 512, bias: false });
    expect(node(arch, 'features.layers.3')).toMatchObject({ op: 'batchnorm1d', features: 512, affine: true, frozenWeight: false });
    // Residual blocks add their input; the strided DepthWise blocks do not.
    const adds = arch.nodes.filter((n) => n.op === 'add').map((n) => n.id);
    expect(adds.length).toBe(4 + 6 + 2);
    expect(adds.every((id) => /^layers\.[357]\.layers\.\d+\.add$/.test(id))).toBe(true);
    expect(node(arch, 'layers.3.layers.0.add').inputs).toEqual(['layers.3.layers.0.layers.2.layers.1', 'layers.2.layers.2.layers.1']);
    expect(node(arch, 'layers.3.layers.1.add').inputs).toEqual(['layers.3.layers.1.layers.2.layers.1', 'layers.3.layers.0.add']);
  });

  it('mbf state-dict keys (arcface_torch mobilefacenet.py)', () => {
    const k = keys(ARCHS.mbf);
    const t = byName(ARCHS.mbf);
    const block = (m: string): string[] => [`${m}.layers.0.weight`, ...bnKeys(`${m}.layers.1`), `${m}.layers.2.weight`];
    expect(k.slice(0, 14)).toEqual([...block('layers.0'), ...block('layers.1')]);
    expect(k.slice(14, 34)).toEqual([
      ...block('layers.2.layers.0'), ...block('layers.2.layers.1'), 'layers.2.layers.2.layers.0.weight', ...bnKeys('layers.2.layers.2.layers.1'),
    ]);
    expect(k.slice(-19)).toEqual([
      ...block('conv_sep'), 'features.layers.0.layers.0.weight', ...bnKeys('features.layers.0.layers.1'), 'features.layers.2.weight',
      ...bnKeys('features.layers.3'),
    ]);
    expect(k.length).toBe(333);
    expect(new Set(k).size).toBe(k.length);
    expect(k).toContain('layers.3.layers.3.layers.2.layers.1.running_var');
    expect(k).not.toContain('layers.3.layers.4.layers.0.layers.0.weight');
    expect(k).toContain('layers.7.layers.1.layers.2.layers.0.weight');
    expect(k).not.toContain('layers.7.layers.2.layers.0.layers.0.weight');
    expect(k).not.toContain('features.layers.2.bias');
    expect(t.get('layers.0.layers.0.weight')?.shape).toEqual([128, 3, 3, 3]);
    expect(t.get('layers.1.layers.0.weight')?.shape).toEqual([128, 2, 3, 3]);
    expect(t.get('layers.2.layers.1.layers.0.weight')?.shape).toEqual([128, 1, 3, 3]);
    expect(t.get('layers.6.layers.0.layers.0.weight')?.shape).toEqual([512, 256, 1, 1]);
    expect(t.get('layers.6.layers.2.layers.0.weight')?.shape).toEqual([256, 512, 1, 1]);
    expect(t.get('conv_sep.layers.2.weight')?.shape).toEqual([512]);
    expect(t.get('features.layers.0.layers.0.weight')?.shape).toEqual([512, 1, 7, 7]);
    expect(t.get('features.layers.2.weight')?.shape).toEqual([512, 512]);
  });

  it('mbf_large: Residual first stage (groups 128), widths 256/512, 606 keys', () => {
    const arch = ARCHS.mbf_large;
    const k = keys(arch);
    const t = byName(arch);
    expect(arch.config).toMatchObject({ blocks: [2, 8, 12, 4], scale: 4 });
    expect(k.length).toBe(606);
    expect(new Set(k).size).toBe(k.length);
    expect(t.get('layers.0.layers.0.weight')?.shape).toEqual([256, 3, 3, 3]);
    expect(t.get('layers.1.layers.1.layers.0.layers.0.weight')?.shape).toEqual([128, 256, 1, 1]);
    expect(t.get('layers.1.layers.1.layers.1.layers.0.weight')?.shape).toEqual([128, 1, 3, 3]);
    expect(k).not.toContain('layers.1.layers.2.layers.0.layers.0.weight');
    expect(k).toContain('layers.3.layers.7.layers.2.layers.1.weight');
    expect(k).toContain('layers.5.layers.11.layers.0.layers.2.weight');
    expect(t.get('layers.4.layers.2.layers.0.weight')?.shape).toEqual([512, 256, 1, 1]);
    expect(t.get('conv_sep.layers.0.weight')?.shape).toEqual([512, 512, 1, 1]);
    expect(arch.nodes.filter((n) => n.op === 'add').length).toBe(2 + 8 + 12 + 4);
  });

  it('custom blocks and scale; names', () => {
    expect(ARCHS.mbf.name).toBe('mbf');
    expect(mobileFaceNetArch({ blocks: [2, 8, 12, 4], scale: 4 }).name).toBe('mbf_large');
    const small = mobileFaceNetArch({ blocks: [1, 1, 1, 1], scale: 1 });
    expect(small.name).toBe('mbf_b1-1-1-1_s1');
    expect(outputShape(small, [2, 3, 112, 112])).toEqual([2, 512]);
    const none = mobileFaceNetArch({ blocks: [0, 0, 0, 0] });
    expect(none.nodes.filter((n) => n.op === 'add').length).toBe(0);
    expect(outputShape(none)).toEqual([1, 512]);
  });

  it('initialization (kaiming_normal fan_out relu for conv and linear, BN 1/0, PReLU 0.25)', () => {
    const t = byName(ARCHS.mbf);
    const kn = (fan: number): object => ({ kind: 'kaimingNormal', mode: 'fan_out', nonlinearity: 'relu', fan, gain: Math.SQRT2, std: Math.SQRT2 / Math.sqrt(fan) });
    expect(t.get('layers.0.layers.0.weight')?.init).toEqual(kn(128 * 9));
    expect(t.get('layers.2.layers.1.layers.0.weight')?.init).toEqual(kn(128 * 9)); // PyTorch's fan_out ignores groups
    expect(t.get('features.layers.0.layers.0.weight')?.init).toEqual(kn(512 * 49));
    expect(t.get('features.layers.2.weight')?.init).toEqual(kn(512));
    for (const x of stateDictTensors(ARCHS.mbf)) {
      if (x.shape.length === 4) expect(x.init.kind).toBe('kaimingNormal');
      if (x.role === 'bias') expect(x.init).toEqual({ kind: 'constant', value: 0 });
    }
    expect(t.get('layers.5.layers.0.layers.0.layers.1.weight')?.init).toEqual({ kind: 'constant', value: 1 });
    expect(t.get('features.layers.3.weight')?.init).toEqual({ kind: 'constant', value: 1 });
    expect(t.get('conv_sep.layers.2.weight')?.init).toEqual({ kind: 'constant', value: 0.25 });
  });
});

describe('preprocessing record', () => {
  it.each(BACKBONE_NAMES)('%s: 112, RGB, NCHW, (v/255 − 0.5)/0.5, the ArcFace template', (name) => {
    const p = ARCHS[name].preprocessing;
    expect(p).toMatchObject({ inputSize: 112, layout: 'NCHW', colorOrder: 'RGB', valueRange: [0, 255], mean: [127.5, 127.5, 127.5], std: [127.5, 127.5, 127.5] });
    for (const v of [0, 1, 64, 127.5, 200, 255]) expect((v - p.mean[0]) / p.std[0]).toBeCloseTo((v / 255 - 0.5) / 0.5, 14);
    expect(p.alignment).toEqual({
      name: 'arcface', size: 112, transform: 'similarity', order: ['leftEye', 'rightEye', 'nose', 'leftMouth', 'rightMouth'],
      landmarks: [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    });
  });

  it('the template at other sizes (insightface estimate_norm: ×size/112, or ×size/128 and +8·size/128 in x)', () => {
    expect(alignmentTemplate(224).landmarks.map(([x, y]) => [x / 2, y / 2])).toEqual(ARCFACE_TEMPLATE_112.map(([x, y]) => [x, y]));
    const t128 = alignmentTemplate(128).landmarks;
    ARCFACE_TEMPLATE_112.forEach(([x, y], i) => {
      expect(t128[i][0]).toBeCloseTo(x + 8, 12);
      expect(t128[i][1]).toBeCloseTo(y, 12);
    });
    expect(() => alignmentTemplate(100)).toThrow(/^Expected a multiple of 112 or 128 for size but received 100 of type number$/);
    expect(() => alignmentTemplate(100)).toThrow(RangeError);
    expect(iresnetArch(18, { inputSize: 100 }).preprocessing.alignment).toBeNull();
    expect(iresnetArch(18, { inputSize: 224 }).preprocessing.alignment?.size).toBe(224);
  });
});

describe('arguments', () => {
  it('iresnetArch', () => {
    expect(() => iresnetArch(51 as never)).toThrow(/^Expected one of 18, 34, 50, 100, 200 for depth but received 51 of type number$/);
    expect(() => iresnetArch(51 as never)).toThrow(RangeError);
    expect(() => iresnetArch('50' as never)).toThrow(TypeError);
    expect(() => iresnetArch(50, { embedding_size: 128 } as never)).toThrow(/'embeddingSize'/);
    expect(() => iresnetArch(50, { num_features: 128 } as never)).toThrow(TypeError);
    expect(() => iresnetArch(50, { embeddingSize: 0 })).toThrow(RangeError);
    expect(() => iresnetArch(50, { embeddingSize: 12.5 })).toThrow(TypeError);
    expect(() => iresnetArch(50, { dropout: 1 })).toThrow(/^Expected a number in \[0, 1\) for dropout but received 1 of type number$/);
    expect(() => iresnetArch(50, { dropout: -0.1 })).toThrow(RangeError);
    expect(() => iresnetArch(50, { inputSize: 8 })).toThrow(RangeError);
    expect(() => iresnetArch(50, 'x' as never)).toThrow(TypeError);
  });

  it('mobileFaceNetArch, backboneArch, parameterCount', () => {
    expect(() => mobileFaceNetArch({ blocks: [1, 2, 3] })).toThrow(/^Expected an array of 4 integers for blocks but received \[1, 2, 3\]/);
    expect(() => mobileFaceNetArch({ blocks: [1, 2, 3, -1] })).toThrow(RangeError);
    expect(() => mobileFaceNetArch({ scale: 0 })).toThrow(RangeError);
    expect(() => mobileFaceNetArch({ inputSize: 112 } as never)).toThrow(TypeError);
    expect(() => mobileFaceNetLargeArch({ scale: 2 } as never)).toThrow(TypeError);
    expect(() => backboneArch('r101' as never)).toThrow(/^Expected one of 'r18', 'r34', 'r50', 'r100', 'r200', 'mbf', 'mbf_large' for name/);
    expect(() => backboneArch(50 as never)).toThrow(TypeError);
    expect(backboneArch('r50', { embeddingSize: 256 }).embeddingSize).toBe(256);
    expect(() => parameterCount(ARCHS.r18, { includeBuffer: true } as never)).toThrow(/'includeBuffers'/);
    expect(() => parameterCount(ARCHS.r18, { includeBuffers: 1 } as never)).toThrow(TypeError);
  });

  it('the graph is frozen', () => {
    const a = iresnetArch(18);
    expect(Object.isFrozen(a)).toBe(true);
    expect(Object.isFrozen(a.nodes[1])).toBe(true);
    expect(Object.isFrozen(a.nodes[1].tensors[0].shape)).toBe(true);
    expect(() => { (a.nodes as ArchNode[]).push(a.nodes[0]); }).toThrow(TypeError);
    expect(() => { (a.config as { embeddingSize: number }).embeddingSize = 3; }).toThrow(TypeError);
  });

  it('configs are JSON-serializable and record everything a checkpoint needs', () => {
    expect(JSON.parse(JSON.stringify(ARCHS.r100.config))).toEqual({ family: 'iresnet', depth: 100, layers: [3, 13, 30, 3], embeddingSize: 512, dropout: 0, inputSize: 112 });
    expect(JSON.parse(JSON.stringify(ARCHS.mbf.config))).toEqual({ family: 'mobilefacenet', blocks: [1, 4, 6, 2], scale: 2, embeddingSize: 512, inputSize: 112 });
    expect(ARCHS.r100.reference).toMatch(/arcface_torch\/backbones\/iresnet\.py$/);
    expect(ARCHS.mbf.reference).toMatch(/arcface_torch\/backbones\/mobilefacenet\.py$/);
  });
});
