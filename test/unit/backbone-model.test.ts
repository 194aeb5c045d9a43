// The backbone executor (lib/backbones/model.ts over native fc::Model): a tiny hand-built graph of
// every node kind against a float64 interpreter written here (forward, BatchNorm running statistics,
// eval mode), the whole model's backward against float64 central finite differences, one SGD step
// against its first-order prediction; IResNet-18 and MobileFaceNet shapes and counts; safetensors
// round trips and clear errors for corrupt or mismatched files.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ArchNode, BackboneArch, InitSpec, TensorSpec, inferShapes, stateDictTensors } from '../../lib/backbones/arch';
import { Backbone, IResNet, MobileFaceNet } from '../../lib/backbones/model';
import { FacecudaError } from '../../lib/errors';
import { readSafetensors, writeSafetensors } from '../../lib/safetensors';
import { Tensor } from '../../lib/tensor';
import { SEED, gpuStatus, maxRel, randomFloats, rng } from '../helpers';

const cudaAvailable = (): boolean => gpuStatus().available;

// #region a tiny graph of every node kind

function tspec(module: string, role: TensorSpec['role'], shape: number[], init: InitSpec, kind: 'parameter' | 'buffer' = 'parameter', trainable = kind === 'parameter'): TensorSpec {
  return { name: `${module}.${role}`, role, shape, dtype: role === 'num_batches_tracked' ? 'int64' : 'float32', kind, trainable, init };
}
const normal = (std: number): InitSpec => ({ kind: 'normal', mean: 0, std });
const constant = (value: number): InitSpec => ({ kind: 'constant', value });

function conv(id: string, from: string, inC: number, outC: number, kernel: number, stride: number, padding: number, groups = 1): ArchNode {
  return {
    id, op: 'conv2d', inputs: [from], module: id, inC, outC, kernel, stride, padding, groups, bias: false,
    tensors: [tspec(id, 'weight', [outC, inC / groups, kernel, kernel], normal(0.4))],
  };
}
function bn(id: string, from: string, features: number, op: 'batchnorm2d' | 'batchnorm1d' = 'batchnorm2d', frozenWeight = false): ArchNode {
  return {
    id, op, inputs: [from], module: id, features, eps: 1e-5, momentum: 0.1, affine: true, frozenWeight,
    tensors: [
      tspec(id, 'weight', [features], { kind: 'uniform', low: 0.5, high: 1.5 }, 'parameter', !frozenWeight),
      tspec(id, 'bias', [features], { kind: 'uniform', low: -0.3, high: 0.3 }),
      tspec(id, 'running_mean', [features], constant(0), 'buffer'),
      tspec(id, 'running_var', [features], constant(1), 'buffer'),
      tspec(id, 'num_batches_tracked', [], constant(0), 'buffer'),
    ],
  } as ArchNode;
}

/** input [2, 5, 5] → conv → BN → PReLU → conv s2 → BN (+ conv1×1 s2 → BN shortcut) → add → depthwise conv → ReLU → flatten → dropout → linear → BN1d (frozen weight). */
function tinyArch(): BackboneArch {
  const nodes: ArchNode[] = [
    { id: 'input', op: 'input', inputs: [], module: null, tensors: [], channels: 2, height: 5, width: 5 },
    conv('conv1', 'input', 2, 3, 3, 1, 1),
    bn('bn1', 'conv1', 3),
    { id: 'prelu', op: 'prelu', inputs: ['bn1'], module: 'prelu', channels: 3, tensors: [tspec('prelu', 'weight', [3], { kind: 'uniform', low: 0.1, high: 0.4 })] },
    conv('conv2', 'prelu', 3, 4, 3, 2, 1),
    bn('bn2', 'conv2', 4),
    conv('downsample.0', 'input', 2, 4, 1, 2, 0),
    bn('downsample.1', 'downsample.0', 4),
    { id: 'add', op: 'add', inputs: ['bn2', 'downsample.1'], module: null, tensors: [] },
    conv('dw', 'add', 4, 4, 3, 1, 1, 4),
    { id: 'relu', op: 'relu', inputs: ['dw'], module: null, tensors: [] },
    { id: 'flatten', op: 'flatten', inputs: ['relu'], module: null, tensors: [] },
    { id: 'dropout', op: 'dropout', inputs: ['flatten'], module: 'dropout', tensors: [], p: 0 },
    {
      id: 'fc', op: 'linear', inputs: ['dropout'], module: 'fc', in: 36, out: 5, bias: true,
      tensors: [tspec('fc', 'weight', [5, 36], { kind: 'uniform', low: -0.3, high: 0.3 }), tspec('fc', 'bias', [5], { kind: 'uniform', low: -0.1, high: 0.1 })],
    },
    bn('features', 'fc', 5, 'batchnorm1d', true),
  ];
  const arch = {
    name: 'tiny',
    config: { family: 'custom' },
    reference: 'test/unit/backbone-model.test.ts',
    nodes,
    output: 'features',
    inputShape: [2, 5, 5],
    embeddingSize: 5,
    preprocessing: { inputSize: 5, layout: 'NCHW', colorOrder: 'RGB', valueRange: [0, 255], mean: [127.5, 127.5, 127.5], std: [127.5, 127.5, 127.5], alignment: null },
  } as unknown as BackboneArch;
  inferShapes(arch, [3, 2, 5, 5]);
  return arch;
}

// #endregion

// #region float64 interpreter (direct loops, independent of the engine)

interface F64 {
  shape: number[];
  v: Float64Array;
}
type Params = Map<string, Float64Array>;

function refForward(arch: BackboneArch, p: Params, x: F64, training: boolean): F64 {
  const out = new Map<string, F64>();
  for (const node of arch.nodes) {
    const get = (i: number): F64 => out.get(node.inputs[i]) as F64;
    const t = (role: string): Float64Array => p.get(`${node.module}.${role}`) as Float64Array;
    let y: F64;
    switch (node.op) {
      case 'input':
        y = x;
        break;
      case 'conv2d': {
        const a = get(0);
        const [N, C, H, W] = a.shape;
        const { outC, kernel: K, stride: S, padding: P, groups: G } = node;
        const OH = Math.floor((H + 2 * P - K) / S) + 1;
        const OW = Math.floor((W + 2 * P - K) / S) + 1;
        const w = t('weight');
        const cg = C / G;
        const og = outC / G;
        const v = new Float64Array(N * outC * OH * OW);
        for (let n = 0; n < N; n++) for (let o = 0; o < outC; o++) for (let oh = 0; oh < OH; oh++) for (let ow = 0; ow < OW; ow++) {
          const g = Math.floor(o / og);
          let s = 0;
          for (let c = 0; c < cg; c++) for (let kh = 0; kh < K; kh++) for (let kw = 0; kw < K; kw++) {
            const ih = oh * S - P + kh;
            const iw = ow * S - P + kw;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
            s += a.v[((n * C + g * cg + c) * H + ih) * W + iw] * w[((o * cg + c) * K + kh) * K + kw];
          }
          v[((n * outC + o) * OH + oh) * OW + ow] = s;
        }
        y = { shape: [N, outC, OH, OW], v };
        break;
      }
      case 'batchnorm1d':
      case 'batchnorm2d': {
        const a = get(0);
        const [N, C] = a.shape;
        const L = a.v.length / (N * C);
        const v = new Float64Array(a.v.length);
        const gamma = t('weight');
        const beta = t('bias');
        for (let c = 0; c < C; c++) {
          let mean: number;
          let variance: number;
          if (training) {
            let s = 0;
            for (let n = 0; n < N; n++) for (let l = 0; l < L; l++) s += a.v[(n * C + c) * L + l];
            mean = s / (N * L);
            let q = 0;
            for (let n = 0; n < N; n++) for (let l = 0; l < L; l++) q += (a.v[(n * C + c) * L + l] - mean) ** 2;
            variance = q / (N * L);
          } else {
            mean = t('running_mean')[c];
            variance = t('running_var')[c];
          }
          const inv = 1 / Math.sqrt(variance + node.eps);
          for (let n = 0; n < N; n++) for (let l = 0; l < L; l++) {
            const i = (n * C + c) * L + l;
            v[i] = (a.v[i] - mean) * inv * gamma[c] + beta[c];
          }
        }
        y = { shape: a.shape, v };
        break;
      }
      case 'prelu': {
        const a = get(0);
        const [N, C] = a.shape;
        const L = a.v.length / (N * C);
        const alpha = t('weight');
        y = { shape: a.shape, v: a.v.map((val, i) => (val > 0 ? val : alpha[Math.floor(i / L) % C] * val)) };
        break;
      }
      case 'relu':
        y = { shape: get(0).shape, v: get(0).v.map((val) => Math.max(val, 0)) };
        break;
      case 'dropout':
        if (training && node.p > 0) throw new Error('the reference runs dropout with p = 0 only');
        y = get(0);
        break;
      case 'flatten': {
        const a = get(0);
        y = { shape: [a.shape[0], a.v.length / a.shape[0]], v: a.v };
        break;
      }
      case 'linear': {
        const a = get(0);
        const N = a.shape[0];
        const w = t('weight');
        const b = node.bias ? t('bias') : null;
        const v = new Float64Array(N * node.out);
        for (let n = 0; n < N; n++) for (let o = 0; o < node.out; o++) {
          let s = b ? b[o] : 0;
          for (let i = 0; i < node.in; i++) s += a.v[n * node.in + i] * w[o * node.in + i];
          v[n * node.out + o] = s;
        }
        y = { shape: [N, node.out], v };
        break;
      }
      case 'add': {
        const a = get(0);
        const b = get(1);
        y = { shape: a.shape, v: a.v.map((val, i) => val + b.v[i]) };
        break;
      }
    }
    out.set(node.id, y);
  }
  return out.get(arch.output) as F64;
}

async function readParams(model: Backbone): Promise<Params> {
  const p: Params = new Map();
  for (const spec of stateDictTensors(model.arch)) {
    if (spec.dtype !== 'float32') continue;
    p.set(spec.name, Float64Array.from((await model.getParameter(spec.name)) as Float32Array));
  }
  return p;
}

const dot = (a: Float64Array, b: ArrayLike<number>): number => a.reduce((s, v, i) => s + v * b[i], 0);

// #endregion

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'facecuda-backbone-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe(`tiny graph vs float64 reference (seed ${SEED})`, () => {
  const arch = tinyArch();
  const N = 3;

  test('training forward and the whole backward (input grad, parameter grads) vs finite differences', async () => {
    const r = rng(SEED);
    const model = Backbone.fromArch(arch, { seed: SEED % 1000 });
    const x = randomFloats(N * 50, r);
    const g = randomFloats(N * 5, r);
    const y = await model.forward(x);
    expect(y.shape).toEqual([N, 5]);
    await model.zeroGrad();
    const dx = (await model.backward(g, { inputGrad: true })) as Tensor;
    expect(dx.shape).toEqual([N, 2, 5, 5]);

    const p = await readParams(model);
    const x64: F64 = { shape: [N, 2, 5, 5], v: Float64Array.from(x) };
    const yRef = refForward(arch, p, x64, true);
    const yv = (await y.toArray()) as Float32Array;
    const yScale = Math.max(...yRef.v.map(Math.abs));
    // Output: float32 rounding through ~20 reduction terms per layer and four BatchNorms.
    yRef.v.forEach((v, i) => expect(Math.abs(yv[i] - v)).toBeLessThan(1e-4 * yScale + 1e-5));

    const loss = (pp: Params, xx: F64): number => dot(refForward(arch, pp, xx, true).v, g);
    const h = 1e-5;
    // Central differences in float64 have error ~h²·f''' + ε/h ≈ 1e-10; the bound is float32 rounding
    // of the native backward relative to the gradient's scale.
    const dxv = (await dx.toArray()) as Float32Array;
    const fd = new Float64Array(x64.v.length);
    for (let i = 0; i < x64.v.length; i++) {
      const xp = Float64Array.from(x64.v);
      xp[i] += h;
      const xm = Float64Array.from(x64.v);
      xm[i] -= h;
      fd[i] = (loss(p, { shape: x64.shape, v: xp }) - loss(p, { shape: x64.shape, v: xm })) / (2 * h);
    }
    const dxScale = Math.max(...fd.map(Math.abs));
    fd.forEach((v, i) => expect(Math.abs(dxv[i] - v)).toBeLessThan(2e-4 * dxScale + 1e-6));

    const params = await model.parameters();
    expect(params.find((q) => q.name === 'features.weight')?.grad).toBeNull();
    expect(params.find((q) => q.name === 'features.weight')?.trainable).toBe(false);
    expect(params.some((q) => q.name.endsWith('running_mean'))).toBe(false);
    // A gradient that is 0 in exact arithmetic (fc.bias, right before a training BatchNorm1d, which
    // removes any per-feature shift) comes out as float32 rounding of sums of O(global) terms.
    const grads = new Map<string, Float32Array>();
    for (const q of params) if (q.grad) grads.set(q.name, (await q.grad.toArray()) as Float32Array);
    const global = Math.max(...[...grads.values()].map((a) => Math.max(...Array.from(a, Math.abs))));
    // The terms of that sum are O(invstd·|g|) of the features BatchNorm1d (its input varies little
    // over a batch of 3, so invstd can be large): a floor of 64·u·N·max invstd·max|g|.
    const z = refForward({ ...arch, nodes: arch.nodes.slice(0, -1), output: 'fc' } as BackboneArch, p, x64, true);
    let invMax = 0;
    for (let c = 0; c < 5; c++) {
      const col = [0, 1, 2].map((n) => z.v[n * 5 + c]);
      const mean = col.reduce((a, b) => a + b, 0) / N;
      invMax = Math.max(invMax, 1 / Math.sqrt(col.reduce((a, b) => a + (b - mean) ** 2, 0) / N + 1e-5));
    }
    const floor = 64 * 2 ** -24 * N * invMax * Math.max(...Array.from(g, Math.abs));
    for (const q of params) {
      if (!q.grad) continue;
      const gv = grads.get(q.name) as Float32Array;
      const base = p.get(q.name) as Float64Array;
      const picks = new Set<number>([0, base.length - 1, Math.floor(r() * base.length), Math.floor(r() * base.length)]);
      const scale = Math.max(1e-3, ...Array.from(gv, Math.abs));
      for (const i of picks) {
        const plus = new Map(p);
        plus.set(q.name, Float64Array.from(base, (v, k) => (k === i ? v + h : v)));
        const minus = new Map(p);
        minus.set(q.name, Float64Array.from(base, (v, k) => (k === i ? v - h : v)));
        const want = (loss(plus, x64) - loss(minus, x64)) / (2 * h);
        expect({ name: q.name, i, err: Math.abs(gv[i] - want) < 2e-4 * scale + 1e-6 * global + floor ? 0 : [gv[i], want] }).toEqual({ name: q.name, i, err: 0 });
      }
    }

    // Gradients accumulate: a second backward doubles them; zeroGrad clears them.
    const before = (await params[0].grad?.toArray()) as Float32Array;
    await model.backward(g);
    const twice = (await params[0].grad?.toArray()) as Float32Array;
    before.forEach((v, i) => expect(twice[i]).toBeCloseTo(2 * v, 5));
    await model.zeroGrad();
    expect(Array.from((await params[0].grad?.toArray()) as Float32Array).every((v) => v === 0)).toBe(true);
    model.dispose();
  });

  test('BatchNorm running statistics after k training steps, then eval mode uses them', async () => {
    const r = rng(SEED + 1);
    const model = Backbone.fromArch(arch, { seed: 5 });
    const p = await readParams(model);
    const k = 3;
    const m = 0.1;
    const rm = new Float64Array(3);
    const rv = new Float64Array(3).fill(1);
    for (let step = 0; step < k; step++) {
      const x = randomFloats(N * 50, r);
      await model.forward(x);
      // bn1 reads conv1(x): its batch statistics in float64, M = N·5·5 values per channel.
      const c1 = refForward({ ...arch, nodes: arch.nodes.slice(0, 2), output: 'conv1' } as BackboneArch, p, { shape: [N, 2, 5, 5], v: Float64Array.from(x) }, true);
      const M = N * 25;
      for (let c = 0; c < 3; c++) {
        let s = 0;
        for (let n = 0; n < N; n++) for (let l = 0; l < 25; l++) s += c1.v[(n * 3 + c) * 25 + l];
        const mean = s / M;
        let q = 0;
        for (let n = 0; n < N; n++) for (let l = 0; l < 25; l++) q += (c1.v[(n * 3 + c) * 25 + l] - mean) ** 2;
        rm[c] = (1 - m) * rm[c] + m * mean;
        rv[c] = (1 - m) * rv[c] + m * (q / (M - 1));
      }
    }
    const gotMean = (await model.getParameter('bn1.running_mean')) as Float32Array;
    const gotVar = (await model.getParameter('bn1.running_var')) as Float32Array;
    rm.forEach((v, c) => expect(Math.abs(gotMean[c] - v)).toBeLessThan(1e-5 * (1 + Math.abs(v))));
    rv.forEach((v, c) => expect(Math.abs(gotVar[c] - v)).toBeLessThan(1e-5 * (1 + Math.abs(v))));
    expect(await model.getParameter('bn1.num_batches_tracked')).toEqual(new BigInt64Array([BigInt(k)]));

    // Eval: the running statistics, no state change, a batch of 1 is fine.
    const p2 = await readParams(model);
    model.eval();
    const x1 = randomFloats(50, r);
    const y = (await (await model.forward(x1)).toArray()) as Float32Array;
    const yRef = refForward(arch, p2, { shape: [1, 2, 5, 5], v: Float64Array.from(x1) }, false);
    const scale = Math.max(...yRef.v.map(Math.abs));
    yRef.v.forEach((v, i) => expect(Math.abs(y[i] - v)).toBeLessThan(1e-4 * scale + 1e-5));
    expect(await model.getParameter('bn1.num_batches_tracked')).toEqual(new BigInt64Array([BigInt(k)]));
    expect(await model.getParameter('bn1.running_mean')).toEqual(gotMean);
    expect((await model.state()).step).toBe(k);

    // Train mode with a batch of 1: BatchNorm1d sees one value per channel.
    model.train();
    await expect(model.forward(x1)).rejects.toThrow(/features.*more than 1 value per channel.*eval\(\)/);
    model.dispose();
  });

  test('one SGD step lowers the loss as predicted to first order', async () => {
    const r = rng(SEED + 2);
    const model = Backbone.fromArch(arch, { seed: 9 });
    const x = randomFloats(N * 50, r);
    const g = randomFloats(N * 5, r);
    const lossOf = async (): Promise<number> => dot(Float64Array.from((await (await model.forward(x)).toArray()) as Float32Array), g);
    const l0 = await lossOf();
    await model.zeroGrad();
    await model.backward(g);
    const ps = (await model.parameters()).filter((q) => q.grad);
    const ws = await Promise.all(ps.map(async (q) => (await q.value.toArray()) as Float32Array));
    const gs = await Promise.all(ps.map(async (q) => (await (q.grad as Tensor).toArray()) as Float32Array));
    const norm2 = gs.reduce((s, gr) => s + gr.reduce((t, v) => t + v * v, 0), 0);
    // A step of length 1e-3 in parameter space: the first-order change is −1e-3·‖∇L‖, the
    // second-order one O(1e-6·curvature) (large through the training BatchNorms of a batch of 3).
    const lr = 1e-3 / Math.sqrt(norm2);
    const predicted = -lr * norm2;
    const update = new Map<string, Float32Array>();
    ps.forEach((q, k) => update.set(q.name, ws[k].map((v, i) => v - lr * gs[k][i])));
    await model.loadStateDict(update, { strict: false });
    const l1 = await lossOf();
    expect(predicted).toBeLessThan(0);
    // Second-order terms: O(lr²·‖g‖²·curvature); 10% of the first-order change at this lr.
    expect(Math.abs(l1 - l0 - predicted)).toBeLessThan(0.1 * Math.abs(predicted));
    model.dispose();
  });

  test('same seed, same weights; another seed, other weights', async () => {
    const a = Backbone.fromArch(arch, { seed: 1 });
    const b = Backbone.fromArch(arch, { seed: 1 });
    const c = Backbone.fromArch(arch, { seed: 2 });
    const wa = await a.getParameter('conv1.weight');
    expect(await b.getParameter('conv1.weight')).toEqual(wa);
    expect(await c.getParameter('conv1.weight')).not.toEqual(wa);
    expect(Array.from(await a.getParameter('bn1.weight') as Float32Array).every((v) => v >= 0.5 && v <= 1.5)).toBe(true);
    for (const m of [a, b, c]) m.dispose();
  });
});

describe('eval-mode BatchNorm folding', () => {
  test('folded and unfolded eval agree (forward, input and parameter gradients); reloaded weights are folded again', async () => {
    const r = rng(SEED + 21);
    const opts = { baseWidth: 4, inputSize: 32, embeddingSize: 16, seed: 21 };
    const folded = IResNet.create('r18', opts);
    const plain = IResNet.create('r18', { ...opts, foldBatchNorm: false });
    // Non-trivial statistics everywhere (0/1 would hide a wrong fold).
    const state = new Map<string, Float32Array>();
    for (const p of await folded.parameters({ includeBuffers: true })) {
      if (p.value.dtype !== 'float32') continue;
      const n = p.value.shape.reduce((a, b) => a * b, 1);
      if (p.name.endsWith('running_var')) state.set(p.name, Float32Array.from({ length: n }, () => 0.3 + r()));
      else if (p.name.endsWith('running_mean') || (p.name.endsWith('.bias') && p.value.rank === 1)) state.set(p.name, randomFloats(n, r, -0.3, 0.3));
      else if (p.name.endsWith('.weight') && p.value.rank === 1) state.set(p.name, Float32Array.from({ length: n }, () => 0.6 + 0.8 * r()));
      p.value.dispose();
      p.grad?.dispose();
    }
    for (const m of [folded, plain]) {
      await m.loadStateDict(state, { strict: false });
      m.eval();
    }
    const N = 3;
    const x = randomFloats(N * 3 * 32 * 32, r);
    const g = randomFloats(N * 16, r);
    const run = async (m: Backbone) => {
      await m.zeroGrad();
      const y = (await (await m.forward(x)).toArray()) as Float32Array;
      const dx = (await (await m.backward(g, { inputGrad: true }))!.toArray()) as Float32Array;
      const grads = new Map<string, Float32Array>();
      for (const p of await m.parameters()) {
        if (p.grad) grads.set(p.name, (await p.grad.toArray()) as Float32Array);
        p.value.dispose();
        p.grad?.dispose();
      }
      return { y, dx, grads };
    };
    const a = await run(folded);
    const b = await run(plain);
    expect(maxRel(a.y, b.y)).toBeLessThan(1e-5);
    expect(maxRel(a.dx, b.dx)).toBeLessThan(1e-5);
    for (const [name, gb] of b.grads) expect([name, maxRel(a.grads.get(name) as Float32Array, gb) < 1e-4]).toEqual([name, true]);

    // New weights in eval mode (setParameter) are folded again before the next forward.
    const w = randomFloats(4 * 4 * 9, r, -0.5, 0.5);
    for (const m of [folded, plain]) await m.loadStateDict({ 'layer1.0.conv1.weight': w }, { strict: false });
    const y2a = (await (await folded.forward(x)).toArray()) as Float32Array;
    const y2b = (await (await plain.forward(x)).toArray()) as Float32Array;
    expect(maxRel(y2a, y2b)).toBeLessThan(1e-5);
    expect(maxRel(y2a, a.y)).toBeGreaterThan(1e-3);
    // Training forwards move the running statistics; the next eval forward folds the new ones.
    for (const m of [folded, plain]) {
      m.train();
      await m.forward(x);
      m.eval();
    }
    expect(maxRel((await (await folded.forward(x)).toArray()) as Float32Array, (await (await plain.forward(x)).toArray()) as Float32Array)).toBeLessThan(1e-5);
    folded.dispose();
    plain.dispose();
  });
});

describe('IResNet and MobileFaceNet', () => {
  test('IResNet-18: 24.026 M parameters, forward [N, 512]', async () => {
    const model = IResNet.create(18, { seed: 3 });
    expect(model.name).toBe('r18');
    expect(model.parameterCount()).toBe(24025600);
    expect((model.parameterCount() / 1e6).toFixed(3)).toBe('24.026');
    const x = randomFloats(2 * 3 * 112 * 112, rng(SEED + 3));
    const y = await model.forward(x);
    expect(y.shape).toEqual([2, 512]);
    const v = (await y.toArray()) as Float32Array;
    expect(v.every(Number.isFinite)).toBe(true);
    // features is a BatchNorm1d in training mode with weight 1, bias 0: each column has mean 0.
    for (let j = 0; j < 4; j++) expect(Math.abs(v[j] + v[512 + j])).toBeLessThan(1e-3);
    model.dispose();
  });

  test('MobileFaceNet: 2.06 M parameters; save → load gives bitwise equal outputs', async () => {
    const model = MobileFaceNet.create({ seed: 4 });
    expect(model.parameterCount()).toBe(2059520);
    const r = rng(SEED + 4);
    await model.forward(randomFloats(2 * 3 * 112 * 112, r)); // moves the running statistics
    model.eval();
    const x = randomFloats(3 * 112 * 112, r);
    const y = (await (await model.forward(x)).toArray()) as Float32Array;
    expect(y.length).toBe(512);
    const file = path.join(tmp, 'mbf.safetensors');
    await model.save(file, { license: 'MIT', provenance: 'unit test' });
    const { metadata } = await readSafetensors(file, { names: ['conv_sep.layers.0.weight'] });
    expect(metadata['facecuda.architecture']).toBe('mbf');
    expect(JSON.parse(metadata['facecuda.config']).family).toBe('mobilefacenet');
    expect(JSON.parse(metadata['facecuda.preprocessing']).inputSize).toBe(112);
    expect(metadata.license).toBe('MIT');
    expect(metadata.provenance).toBe('unit test');
    const loaded = await MobileFaceNet.load(file);
    expect(loaded.license).toBe('MIT');
    loaded.eval();
    const y2 = (await (await loaded.forward(x)).toArray()) as Float32Array;
    expect(Buffer.from(y2.buffer).equals(Buffer.from(y.buffer))).toBe(true);
    expect(await loaded.getParameter('layers.0.layers.1.num_batches_tracked')).toEqual(new BigInt64Array([1n]));
    await expect(IResNet.load(file)).rejects.toThrow(/not an IResNet/);
    model.dispose();
    loaded.dispose();
  });
});

describe('checkpoints: clear errors', () => {
  const arch = tinyArch();
  let good: string;
  beforeAll(async () => {
    good = path.join(tmp, 'tiny.safetensors');
    const m = Backbone.fromArch(arch, { seed: 11 });
    await m.save(good);
    m.dispose();
  });

  test('a custom graph round-trips through its metadata', async () => {
    const m = await Backbone.load(good);
    expect(m.name).toBe('tiny');
    const ref = Backbone.fromArch(arch, { seed: 11 });
    expect(await m.getParameter('fc.weight')).toEqual(await ref.getParameter('fc.weight'));
    m.dispose();
    ref.dispose();
  });

  async function rewrite(file: string, edit: (t: Map<string, Tensor>, meta: Record<string, string>) => void): Promise<string> {
    const { tensors, metadata } = await readSafetensors(good, { device: 'cpu' });
    edit(tensors, metadata);
    await writeSafetensors(file, tensors, metadata);
    return file;
  }

  test('truncated file → CORRUPT_FILE', async () => {
    const bytes = fs.readFileSync(good);
    const file = path.join(tmp, 'truncated.safetensors');
    fs.writeFileSync(file, bytes.subarray(0, bytes.length - 7));
    await expect(Backbone.load(file)).rejects.toMatchObject({ code: 'CORRUPT_FILE' });
  });

  test('no metadata → CORRUPT_FILE naming the key', async () => {
    const { tensors } = await readSafetensors(good, { device: 'cpu' });
    const file = path.join(tmp, 'nometa.safetensors');
    await writeSafetensors(file, tensors);
    await expect(Backbone.load(file)).rejects.toThrow(/facecuda\.architecture/);
    await expect(Backbone.load(file)).rejects.toMatchObject({ code: 'CORRUPT_FILE' });
  });

  test('missing, unexpected, mis-shaped and mis-typed tensors', async () => {
    const missing = await rewrite(path.join(tmp, 'missing.safetensors'), (t) => t.delete('bn2.running_var'));
    await expect(Backbone.load(missing)).rejects.toThrow(/'bn2.running_var' of tiny is missing/);
    const extra = await rewrite(path.join(tmp, 'extra.safetensors'), (t) => t.set('head.weight', Tensor.from([1, 2], [2])));
    await expect(Backbone.load(extra)).rejects.toThrow(/unexpected tensor.*'head.weight'/);
    const shaped = await rewrite(path.join(tmp, 'shaped.safetensors'), (t) => t.set('fc.weight', Tensor.from(new Float32Array(36 * 5), [36, 5])));
    const e = await Backbone.load(shaped).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(FacecudaError);
    expect(e).toMatchObject({ code: 'SHAPE_MISMATCH' });
    expect((e as Error).message).toMatch(/'fc.weight' has shape \[36, 5\], expected \[5, 36\]/);
    const typed = await rewrite(path.join(tmp, 'typed.safetensors'), (t) => t.set('fc.bias', Tensor.from(new Int32Array(5), [5])));
    await expect(Backbone.load(typed)).rejects.toThrow(/'fc.bias' has dtype I32, expected F32/);
    const badConfig = await rewrite(path.join(tmp, 'config.safetensors'), (_t, m) => {
      m['facecuda.architecture'] = 'r18';
      m['facecuda.config'] = '{"family":"iresnet","depth":19}';
    });
    await expect(Backbone.load(badConfig)).rejects.toMatchObject({ code: 'CORRUPT_FILE' });
  });

  test('loadStateDict checks names and shapes before copying anything', async () => {
    const m = Backbone.fromArch(arch, { seed: 1 });
    const before = await m.getParameter('conv1.weight');
    await expect(m.loadStateDict({ 'conv1.weight': new Float32Array(3) }, { strict: false })).rejects.toMatchObject({ code: 'SHAPE_MISMATCH' });
    await expect(m.loadStateDict({ 'conv1.weight': new Float32Array(54) })).rejects.toThrow(/missing 'bn1.weight'/);
    expect(await m.getParameter('conv1.weight')).toEqual(before);
    const res = await m.loadStateDict({ 'conv1.weight': { shape: [3, 2, 3, 3], data: new Float32Array(54).fill(0.5) }, nope: new Float32Array(1) }, { strict: false });
    expect(res.unexpected).toEqual(['nope']);
    expect(res.missing).toContain('bn1.weight');
    expect(Array.from(await m.getParameter('conv1.weight') as Float32Array).every((v) => v === 0.5)).toBe(true);
    m.dispose();
  });
});

describe('argument errors', () => {
  test('CUDA without a GPU, bad precision, wrong input shape, backward without forward, disposed', async () => {
    if (!cudaAvailable()) {
      expect(() => IResNet.create('r18', { device: 'cuda' })).toThrow(expect.objectContaining({ code: 'CUDA_UNAVAILABLE' }));
      expect(() => MobileFaceNet.create({ device: 'cuda:0' })).toThrow(expect.objectContaining({ code: 'CUDA_UNAVAILABLE' }));
    }
    expect(() => IResNet.create('r18', { precision: 'tf32' })).toThrow(/tf32 is a CUDA tensor-core mode/);
    expect(() => IResNet.create('r18', { precision: 'fp8' as 'bf16' })).toThrow(RangeError);
    expect(() => IResNet.create('r18', { foldBatchNorm: 1 as unknown as boolean })).toThrow(TypeError);
    const m = Backbone.fromArch(tinyArch(), { seed: 1 });
    await expect(m.backward(new Float32Array(10))).rejects.toThrow(/needs a completed forward/);
    await expect(m.forward(new Float32Array(49))).rejects.toMatchObject({ code: 'SHAPE_MISMATCH' });
    await expect(m.forward(Tensor.from(new Float32Array(2 * 2 * 6 * 6), [2, 2, 6, 6]))).rejects.toThrow(/Expected x of shape \[N, 2, 5, 5\]/);
    await m.forward(new Float32Array(100));
    await expect(m.backward(new Float32Array(15))).rejects.toThrow(/Expected an output gradient of shape \[2, 5\]/);
    expect(() => Backbone.create('r19' as 'r18')).toThrow(RangeError);
    m.dispose();
    await expect(m.forward(new Float32Array(100))).rejects.toMatchObject({ code: 'DISPOSED' });
  });
});
