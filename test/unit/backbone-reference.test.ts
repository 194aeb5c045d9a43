// A whole IResNet-18 at reduced width (baseWidth 4, input 32×32, embedding 16, batch 4) against an
// independent PyTorch implementation: test/fixtures/iresnet18-w4.safetensors, written by
// test/fixtures/gen_iresnet_torch.py (torch, float64, from float32 weights and inputs; see
// test/fixtures/README.md). Checked: the training-mode output, dL/dx and every parameter gradient
// of L = sum(y·g), the BatchNorm buffers after that forward, the eval-mode output and dL/dx from a
// fresh load; then, in eval mode (deterministic), one SGD step changes L by −η·‖∇L‖² to first
// order, a wrong gradient is caught by the same check, and so does a randomly preconditioned step
// for a fresh upstream gradient (new each run, from SEED). Also: the baseWidth option itself (graph,
// validation, checkpoint round trip).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { iresnetArch, stateDictTensors, trainableParameterCount } from '../../lib/backbones/arch';
import { Backbone, IResNet } from '../../lib/backbones/model';
import { parseSafetensors } from '../../lib/safetensors';
import { Tensor } from '../../lib/tensor';
import { SEED, randomFloats, rng } from '../helpers';

// #region the fixture

const FIXTURE = path.join(__dirname, '..', 'fixtures', 'iresnet18-w4.safetensors');
const file = parseSafetensors(fs.readFileSync(FIXTURE));
const CONFIG = JSON.parse(file.metadata.config) as { depth: number; baseWidth: number; inputSize: number; embeddingSize: number; batch: number };
const OPTIONS = { baseWidth: CONFIG.baseWidth, inputSize: CONFIG.inputSize, embeddingSize: CONFIG.embeddingSize } as const;

function f32(name: string): Float32Array {
  const e = file.tensors.get(name);
  if (!e || e.dtype !== 'F32') throw new Error(`fixture has no F32 tensor '${name}'`);
  return e.data as Float32Array;
}

/** The model's state dict as the fixture holds it (`state.<key>`). */
function fixtureState(): Map<string, Float32Array | BigInt64Array> {
  const m = new Map<string, Float32Array | BigInt64Array>();
  for (const [name, e] of file.tensors) if (name.startsWith('state.')) m.set(name.slice('state.'.length), e.data as Float32Array | BigInt64Array);
  return m;
}

const X = f32('x');
const G = f32('g');

// #endregion

// #region comparison

/**
 * The engine computes in float32 and the reference in float64. Each tensor passes when
 * max|a − b| ≤ RTOL·max|b| + FLOOR·S, S the largest |value| of its group (all parameter gradients
 * together; otherwise the tensor itself).
 *
 * RTOL = 1e-4 relative to the tensor's largest value: float32 rounding (6e-8) grows through ~20
 * layers, sums of up to 4·16·16·36 products, and training-mode BatchNorm, whose normalization by
 * small batch variances (16 values per channel in layer4, 4 per feature in the BatchNorm1d)
 * amplifies relative errors. Measured: ≤ 6e-6 relative for every gradient, ≤ 2e-6 for outputs and
 * dL/dx, ≤ 1e-7 for running statistics, so RTOL leaves a margin of 15 or more while a real mistake
 * (a wrong index, a missing term, a swapped tensor) is O(1).
 *
 * FLOOR = 1e-6 of the group's scale is for the 14 gradients that are exactly 0 in exact arithmetic:
 * in training mode a per-channel shift of the residual stream (every bn3.bias and
 * downsample.1.bias, the head's bn2.bias, fc.bias) is removed by the next training-mode BatchNorm,
 * so the float32 result is the residue of a cancellation of ~1e3 terms of the gradients' magnitude
 * (measured ≤ 7.2e-6 against a scale S ≈ 60, i.e. ≤ 1.2e-7·S).
 */
const RTOL = 1e-4;
const FLOOR = 1e-6;

interface Mismatch {
  name: string;
  maxError: number;
  bound: number;
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/** null when `actual` matches `expected` (see RTOL, FLOOR); `groupScale` defaults to max|expected|. */
function mismatch(name: string, actual: Float32Array, expected: Float32Array, groupScale?: number): Mismatch | null {
  if (actual.length !== expected.length) return { name: `${name} (length ${actual.length}, expected ${expected.length})`, maxError: Infinity, bound: 0 };
  let err = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    err = Number.isNaN(d) ? Infinity : Math.max(err, d);
  }
  const scale = maxAbs(expected);
  const bound = RTOL * scale + FLOOR * (groupScale ?? scale);
  return err <= bound ? null : { name, maxError: err, bound };
}

async function values(t: Tensor | null): Promise<Float32Array> {
  if (!t) throw new Error('no tensor');
  return (await t.toArray()) as Float32Array;
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

// #endregion

async function loaded(): Promise<Backbone> {
  const model = IResNet.create('r18', OPTIONS);
  const r = await model.loadStateDict(fixtureState());
  expect(r).toEqual({ missing: [], unexpected: [] });
  return model;
}

describe('IResNet-18 (baseWidth 4) against the PyTorch reference', () => {
  test('the fixture describes this model', () => {
    expect(CONFIG).toMatchObject({ depth: 18, baseWidth: 4, inputSize: 32, embeddingSize: 16, batch: 4 });
    const specs = stateDictTensors(iresnetArch(18, OPTIONS));
    const state = fixtureState();
    expect([...state.keys()].sort()).toEqual(specs.map((s) => s.name).sort());
    for (const s of specs) expect([s.name, file.tensors.get(`state.${s.name}`)?.shape]).toEqual([s.name, [...s.shape]]);
    expect(file.tensors.get('x')?.shape).toEqual([CONFIG.batch, 3, 32, 32]);
    expect(file.tensors.get('g')?.shape).toEqual([CONFIG.batch, 16]);
  });

  test('training mode: output, dL/dx and every parameter gradient', async () => {
    const model = await loaded();
    const y = await model.forward(X);
    expect(y.shape).toEqual([CONFIG.batch, 16]);
    const gx = await model.backward(G, { inputGrad: true });
    const bad: Mismatch[] = [];
    const push = (m: Mismatch | null): void => void (m && bad.push(m));
    push(mismatch('y', await values(y), f32('train.y')));
    push(mismatch('grad_x', await values(gx), f32('train.grad_x')));
    const params = await model.parameters();
    const withGrad = params.filter((p) => p.grad);
    // Every parameter PyTorch differentiates, and no other (features.weight is frozen).
    expect(withGrad.map((p) => p.name).sort()).toEqual([...file.tensors.keys()].filter((n) => n.startsWith('train.grad.')).map((n) => n.slice('train.grad.'.length)).sort());
    expect(params.find((p) => p.name === 'features.weight')?.grad).toBeNull();
    const gradScale = Math.max(...withGrad.map((p) => maxAbs(f32(`train.grad.${p.name}`))));
    // The gradients that vanish in exact arithmetic (see FLOOR) are exactly those the reasoning names.
    const zero = withGrad.filter((p) => maxAbs(f32(`train.grad.${p.name}`)) < 1e-12 * gradScale).map((p) => p.name);
    expect(zero).toEqual(withGrad.map((p) => p.name).filter((n) => /^layer\d\.\d\.(bn3|downsample\.1)\.bias$|^(bn2|fc)\.bias$/.test(n)));
    expect(zero).toHaveLength(14);
    for (const p of withGrad) push(mismatch(`grad ${p.name}`, await values(p.grad), f32(`train.grad.${p.name}`), gradScale));
    expect(bad).toEqual([]);
    model.dispose();
  });

  test('training mode: running statistics and num_batches_tracked after the forward', async () => {
    const model = await loaded();
    await model.forward(X);
    const bad: Mismatch[] = [];
    let n = 0;
    for (const [name, e] of file.tensors) {
      if (!name.startsWith('train.after.')) continue;
      const key = name.slice('train.after.'.length);
      const v = await model.getParameter(key);
      if (e.dtype === 'I64') expect([key, Array.from(v as BigInt64Array)]).toEqual([key, [4n]]);
      else {
        const m = mismatch(key, v as Float32Array, e.data as Float32Array);
        if (m) bad.push(m);
      }
      n++;
    }
    // 3 buffers of each of the 31 BatchNorms (stem, 3 per block × 8, 4 downsamples, bn2, features).
    expect(n).toBe(3 * 31);
    expect(bad).toEqual([]);
    model.dispose();
  });

  test('eval mode from a fresh load: output and dL/dx', async () => {
    const model = (await loaded()).eval();
    const y = await values(await model.forward(X));
    const gx = await values(await model.backward(G, { inputGrad: true }));
    expect([mismatch('y', y, f32('eval.y')), mismatch('grad_x', gx, f32('eval.grad_x'))]).toEqual([null, null]);
    // Eval mode leaves the running statistics alone.
    expect(await model.getParameter('layer3.0.bn2.running_var')).toEqual(f32('state.layer3.0.bn2.running_var'));
    model.dispose();
  });
});

describe('IResNet-18 (baseWidth 4): first-order change of the loss', () => {
  // Eval mode (running statistics, no dropout) makes L(w) a deterministic function of the weights.
  let model: Backbone;
  let names: string[];
  let w0: Float32Array[];
  let grads: Float32Array[];
  let l0: number;

  const lossOf = async (g: Float32Array = G): Promise<number> => dot(await values(await model.forward(X)), g);

  /** Loads w0 + step (rounded to float32) and returns L there with the step actually taken. */
  async function lossAt(step: (k: number, i: number) => number, g: Float32Array = G): Promise<{ loss: number; taken: Float64Array[] }> {
    const update = new Map<string, Float32Array>();
    const taken: Float64Array[] = [];
    names.forEach((name, k) => {
      const w = w0[k].map((v, i) => v + step(k, i));
      update.set(name, w);
      taken.push(Float64Array.from(w, (v, i) => v - w0[k][i]));
    });
    await model.loadStateDict(update, { strict: false });
    const loss = await lossOf(g);
    await model.loadStateDict(new Map(names.map((n, k) => [n, w0[k]])), { strict: false });
    return { loss, taken };
  }

  const inner = (a: ArrayLike<number>[], b: ArrayLike<number>[]): number => a.reduce((s, ak, k) => s + dot(ak, b[k]), 0);

  beforeAll(async () => {
    model = (await loaded()).eval();
    l0 = await lossOf();
    await model.zeroGrad();
    await model.backward(G);
    const ps = (await model.parameters()).filter((p) => p.trainable);
    names = ps.map((p) => p.name);
    w0 = await Promise.all(ps.map(async (p) => Float32Array.from(await values(p.value))));
    grads = await Promise.all(ps.map(async (p) => Float32Array.from(await values(p.grad))));
  });

  afterAll(() => model.dispose());

  // SGD: a step of length ε = η·‖∇L‖ ∈ [5e-4, 2e-3] in parameter space changes L by −ε·‖∇L‖ ≈ −0.3
  // to −1 to first order; the second-order term and float32 noise in L (~1e-5) measured together
  // ~1e-4 of that, so TOL = 1e-2 leaves a margin of ~100, while the wrong gradients below miss their
  // own prediction by 18% and 58% (fixed by the fixture: eval mode, the fixture's g).
  const TOL = 1e-2;

  test('one SGD step on all trainable parameters changes L by −η·‖∇L‖²', async () => {
    const r = rng(SEED + 11);
    const norm2 = inner(grads, grads);
    // All trainable parameters and only them (features.weight is frozen).
    const arch = iresnetArch(18, OPTIONS);
    expect(names).toEqual(stateDictTensors(arch).filter((t) => t.trainable).map((t) => t.name));
    expect(w0.reduce((n, w) => n + w.length, 0)).toBe(trainableParameterCount(arch));
    expect(names).not.toContain('features.weight');
    const eps = 5e-4 + 1.5e-3 * r(); // fresh each run
    const lr = eps / Math.sqrt(norm2);
    const { loss, taken } = await lossAt((k, i) => -lr * grads[k][i]);
    const predicted = -lr * norm2;
    // The step actually taken differs from −lr·∇L only by float32 rounding of the weights.
    expect(Math.abs(inner(grads, taken) - predicted)).toBeLessThan(1e-3 * Math.abs(predicted));
    expect(predicted).toBeLessThan(0);
    const rel = Math.abs(loss - l0 - predicted) / Math.abs(predicted);
    expect({ eps, rel: rel < TOL ? 'ok' : rel }).toEqual({ eps, rel: 'ok' });
  });

  test('the same check rejects a wrong gradient', async () => {
    // Wrong backward passes that a model could plausibly have: the largest gradient tensor with its
    // sign flipped, and two same-shaped tensors' gradients swapped (the pair that differ the most).
    const norms = grads.map((g) => dot(g, g));
    const big = norms.indexOf(Math.max(...norms));
    let pair: [number, number] = [-1, -1];
    let best = 0;
    for (let a = 0; a < grads.length; a++) {
      for (let b = a + 1; b < grads.length; b++) {
        if (grads[a].length !== grads[b].length || w0[a].length !== w0[b].length) continue;
        let d = 0;
        for (let i = 0; i < grads[a].length; i++) d += (grads[a][i] - grads[b][i]) ** 2;
        if (d > best) [best, pair] = [d, [a, b]];
      }
    }
    expect(pair[0]).toBeGreaterThanOrEqual(0);
    const wrong: Float32Array[][] = [
      grads.map((g, k) => (k === big ? g.map((v) => -v) : g)),
      grads.map((g, k) => (k === pair[0] ? grads[pair[1]] : k === pair[1] ? grads[pair[0]] : g)),
    ];
    for (const d of wrong) {
      const norm2 = inner(d, d);
      const lr = 1e-3 / Math.sqrt(norm2);
      const { loss } = await lossAt((k, i) => -lr * d[k][i]);
      // What a model with this gradient would predict, against what happens.
      const rel = Math.abs(loss - l0 + lr * norm2) / (lr * norm2);
      expect(rel).toBeGreaterThan(10 * TOL);
    }
  });

  test('fresh randomness: a randomly preconditioned SGD step for a fresh g changes L by −η·∇Lᵀ·D·∇L', async () => {
    const r = rng(SEED + 12);
    // A new upstream gradient g (the fixture's is not reused) and a new positive diagonal D, both
    // from this run's SEED: the step w ← w − η·D·∇L (D_ii ∈ [0, 2)) weights every component of the
    // gradient at random, yet ∇Lᵀ·D·∇L ≈ ‖∇L‖² never nears 0 as ⟨∇L, v⟩ does for a random v (~1/√n).
    const g = randomFloats(G.length, r);
    const l0g = await lossOf(g);
    await model.zeroGrad();
    await model.backward(g);
    const ps = (await model.parameters()).filter((p) => p.trainable);
    const gr = await Promise.all(ps.map(async (p) => Float32Array.from(await values(p.grad))));
    const dir = gr.map((gk) => gk.map((v) => v * 2 * r()));
    // Shorter steps than the SGD test's: with a random g the curvature term measured up to ~2·ε
    // relative (vs ~0.1·ε with the fixture's g); float32 noise stays ≤ 2e-4 relative.
    const eps = 2.5e-4 + 7.5e-4 * r();
    const lr = eps / Math.sqrt(inner(dir, dir));
    const { loss, taken } = await lossAt((k, i) => -lr * dir[k][i], g);
    const predicted = -lr * inner(gr, dir);
    expect(Math.abs(inner(gr, taken) - predicted)).toBeLessThan(1e-3 * Math.abs(predicted));
    const rel = Math.abs(loss - l0g - predicted) / Math.abs(predicted);
    expect({ seed: SEED, eps, rel: rel < TOL ? 'ok' : rel }).toEqual({ seed: SEED, eps, rel: 'ok' });
  });
});

describe('the baseWidth option', () => {
  test('stage widths baseWidth·[1, 2, 4, 8], fc input 8·baseWidth·⌈size/16⌉²', () => {
    const arch = iresnetArch(18, { baseWidth: 4, inputSize: 32, embeddingSize: 16 });
    const shape = (name: string): readonly number[] | undefined => stateDictTensors(arch).find((t) => t.name === name)?.shape;
    expect(shape('conv1.weight')).toEqual([4, 3, 3, 3]);
    expect(shape('layer1.0.conv2.weight')).toEqual([4, 4, 3, 3]);
    expect(shape('layer2.0.downsample.0.weight')).toEqual([8, 4, 1, 1]);
    expect(shape('layer4.1.conv1.weight')).toEqual([32, 32, 3, 3]);
    expect(shape('fc.weight')).toEqual([16, 32 * 2 * 2]);
    expect(arch.config).toMatchObject({ baseWidth: 4 });
    expect(arch.name).toBe('r18');
    // The default is the reference's 64, and then the config does not mention it.
    expect('baseWidth' in iresnetArch(18).config).toBe(false);
    expect(stateDictTensors(iresnetArch(18, { baseWidth: 64 }))).toEqual(stateDictTensors(iresnetArch(18)));
  });

  test('an integer in [1, 1024]; errors name the option', () => {
    expect(() => iresnetArch(18, { baseWidth: 0 })).toThrow(RangeError);
    expect(() => iresnetArch(18, { baseWidth: 1025 })).toThrow(/baseWidth/);
    expect(() => iresnetArch(18, { baseWidth: 2.5 })).toThrow(TypeError);
    expect(() => iresnetArch(18, { baseWidth: '8' as never })).toThrow(/Expected an integer for baseWidth/);
    expect(() => Backbone.create('mbf', { baseWidth: 8 })).toThrow(/baseWidth/);
    expect(() => IResNet.create('r18', { basewidth: 8 } as never)).toThrow(/'baseWidth' \(option names are case-sensitive\)/);
  });

  test('a checkpoint keeps baseWidth', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'facecuda-basewidth-'));
    try {
      const model = (await loaded()).eval();
      const file1 = path.join(tmp, 'r18-w4.safetensors');
      await model.save(file1);
      const again = await IResNet.load(file1);
      expect(again.arch.config).toEqual(model.arch.config);
      expect((again.arch.config as { baseWidth?: number }).baseWidth).toBe(4);
      const y = await values(await again.eval().forward(X));
      expect(mismatch('y after load', y, f32('eval.y'))).toBeNull();
      model.dispose();
      again.dispose();
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
