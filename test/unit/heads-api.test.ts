// The head API beyond the fixtures: argument checks for every head, eval mode, gradient accumulation,
// Partial FC, sharded vs unsharded equality, sub-centers, AdaFace's EMA, SphereFace's λ schedule,
// ElasticFace's draws, CenterLoss against a float64 re-derivation, and parameters() sharing storage.
// Inputs are fresh random data every run (the seed is printed; FACECUDA_TEST_SEED reproduces a run).
import {
  AdaFaceHead, ArcFaceHead, CenterLoss, CombinedMarginHead, combineShardStats, CosFaceHead, ElasticFaceHead, FacecudaError,
  MarginHead, NormFaceHead, SoftmaxHead, SphereFaceHead, Tensor,
} from '../../lib';
import { randomFloats, rng, SEED } from '../helpers';

const r = rng(SEED ^ 0x5eed1e55);
beforeAll(() => console.log(`heads-api tests: seed ${SEED}`));

type AnyHeadCtor = new (o: never) => MarginHead;
const ALL_HEADS: [string, AnyHeadCtor][] = [
  ['SoftmaxHead', SoftmaxHead], ['NormFaceHead', NormFaceHead], ['SphereFaceHead', SphereFaceHead], ['CosFaceHead', CosFaceHead],
  ['ArcFaceHead', ArcFaceHead], ['CombinedMarginHead', CombinedMarginHead], ['AdaFaceHead', AdaFaceHead], ['ElasticFaceHead', ElasticFaceHead],
];

function make<T extends MarginHead>(Ctor: new (o: never) => T, options: Record<string, unknown>): T {
  return new Ctor({ device: 'cpu', ...options } as never);
}

function randomLabels(B: number, C: number): Int32Array {
  return Int32Array.from({ length: B }, () => Math.floor(r() * C));
}

/** Random rows whose norms spread over [lo, hi] (log-uniform), so normalization matters. */
function randomRows(B: number, D: number, lo = 0.5, hi = 20): Float32Array {
  const x = randomFloats(B * D, r);
  for (let i = 0; i < B; i++) {
    const row = x.subarray(i * D, i * D + D);
    const n = Math.hypot(...row) || 1;
    const target = lo * Math.pow(hi / lo, r());
    for (let k = 0; k < D; k++) row[k] = Math.fround((row[k] * target) / n);
  }
  return x;
}

async function f32(t: Tensor): Promise<Float32Array> {
  return (await t.toArray()) as Float32Array;
}

/** max |a − b| relative to max |b|; fails with the worst index. */
function expectNear(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string): void {
  expect(got.length).toBe(want.length);
  let scale = 1e-30;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]));
  let worst = 0;
  let at = -1;
  for (let i = 0; i < want.length; i++) {
    const e = Math.abs(got[i] - want[i]) / scale;
    if (!(e <= worst)) {
      worst = e;
      at = i;
    }
  }
  if (!(worst <= tol)) throw new Error(`${what}: error ${worst} (> ${tol}) of the largest magnitude ${scale} at ${at}: ${got[at]} vs ${want[at]}`);
}

async function rejection(p: Promise<unknown> | (() => unknown)): Promise<FacecudaError> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    return e as FacecudaError;
  }
  throw new Error('expected a rejection');
}

describe('bad input, for every head', () => {
  const [C, D] = [10, 4];
  for (const [name, Ctor] of ALL_HEADS) {
    it(`${name}: labels, shapes, non-finite values, empty batch, disposal`, async () => {
      const head = make(Ctor, { embeddingSize: D, numClasses: C });
      await head.setWeight(randomFloats(C * D, r));
      const x = randomRows(2, D);
      await expect(head.forward(x, [1])).rejects.toMatchObject({ code: 'SHAPE_MISMATCH', message: 'labels length 1 does not match batch 2' });
      await expect(head.forward(x, [1, 10])).rejects.toThrow(/^Expected an integer in \[0, 10\) for labels\[1\] but received 10 of type number$/);
      await expect(head.forward(x, [-1, 1])).rejects.toMatchObject({ code: 'OUT_OF_RANGE', name: 'RangeError' });
      await expect(head.forward(x, [1, 2.5])).rejects.toThrow(/^Expected an integer for labels\[1\] but received 2.5 of type number$/);
      await expect(head.forward(x, [1, NaN])).rejects.toThrow(TypeError);
      await expect(head.forward(x, 'ab' as never)).rejects.toThrow(/for labels/);
      await expect(head.forward(x, new Int32Array([1, C]))).rejects.toMatchObject({ code: 'OUT_OF_RANGE' });
      // D mismatch: a flat array that is no multiple of D, and a tensor of the wrong width.
      await expect(head.forward(randomRows(3, D).subarray(1), [1, 2])).rejects.toMatchObject({ code: 'SHAPE_MISMATCH' });
      const wide = Tensor.from(randomFloats(2 * (D + 1), r), [2, D + 1], { device: 'cpu' });
      await expect(head.forward(wide, [1, 2])).rejects.toMatchObject({ code: 'SHAPE_MISMATCH', message: `Expected x of shape [B, ${D}] but received [2, ${D + 1}]` });
      await expect(head.forward(new Float64Array(2 * D) as never, [1, 2])).rejects.toThrow(TypeError);
      // B = 0
      await expect(head.forward(new Float32Array(0), [])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      await expect(head.forward(Tensor.zeros([0, D], { device: 'cpu' }), [])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      // NaN / Inf in x: the native check names the row.
      for (const bad of [NaN, Infinity, -Infinity]) {
        const xb = x.slice();
        xb[D + 1] = bad;
        const e = await rejection(head.forward(xb, [1, 2]));
        expect(e).toMatchObject({ code: 'INVALID_ARGUMENT' });
        expect(e.message).toMatch(/row 1/);
      }
      // W: wrong size, then NaN.
      await expect(head.setWeight(randomFloats(C * D - 1, r))).rejects.toMatchObject({ code: 'SHAPE_MISMATCH' });
      await expect(head.setWeight(Tensor.from(randomFloats(C * D, r), [D, C], { device: 'cpu' }))).rejects.toMatchObject({ code: 'SHAPE_MISMATCH' });
      await expect(head.setWeight([1, 2] as never)).rejects.toThrow(TypeError);
      const w = randomFloats(C * D, r);
      w[3 * D + 2] = NaN;
      await head.setWeight(w);
      const e = await rejection(head.forward(x, [1, 2]));
      expect(e).toMatchObject({ code: 'INVALID_ARGUMENT' });
      expect(e.message).toMatch(/class 3/);
      // backward without a forward (the failed forwards do not count)
      await expect(head.backward()).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      await expect(head.backward({ accumulate: 1 } as never)).rejects.toThrow(/^Expected a boolean for accumulate/);
      await expect(head.backward({ acumulate: true } as never)).rejects.toThrow(/known option/);
      await expect(head.backward({ rowMax: [0, 0], rowSumExp: [1, 1] })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      // state
      await expect(head.setState({ step: -1 })).rejects.toMatchObject({ name: 'RangeError' });
      await expect(head.setState({ step: 1.5 })).rejects.toThrow(TypeError);
      await expect(head.setState({ lambda: 3 } as never)).rejects.toThrow(/state\.lambda/);
      // a disposed input tensor
      const t = Tensor.from(x, [2, D], { device: 'cpu' });
      t.dispose();
      await expect(head.forward(t, [1, 2])).rejects.toMatchObject({ code: 'DISPOSED' });
      // a disposed head
      head.dispose();
      head.dispose(); // idempotent
      for (const call of [
        () => head.forward(x, [1, 2]), () => head.backward(), () => head.getWeight(), () => head.setWeight(randomFloats(C * D, r)),
        () => head.logits(x), () => head.state(), () => head.parameters(), () => head.sampledClasses(),
      ]) {
        await expect(call()).rejects.toMatchObject({ code: 'DISPOSED' });
      }
      expect(() => head.eval()).toThrow(expect.objectContaining({ code: 'DISPOSED' }));
      expect(() => head.lastChunkBytes()).toThrow(expect.objectContaining({ code: 'DISPOSED' }));
    });

    it(`${name}: options`, () => {
      expect(() => make(Ctor, { embeddingSize: D, numClasses: 1 })).toThrow(
        /^Expected an integer between 2 and 2147483647 for numClasses but received 1 of type number$/,
      );
      expect(() => make(Ctor, { embeddingSize: D, numClasses: 1.5 })).toThrow(TypeError);
      expect(() => make(Ctor, { numClasses: C })).toThrow(/for embeddingSize/);
      expect(() => make(Ctor, { embeddingSize: D, numClasses: C, foo: 1 })).toThrow(new RegExp(`^Expected a known option: one of .* for ${name} option 'foo'`));
      expect(() => make(Ctor, { embeddingSize: D, numClasses: C, precision: 'fp8' })).toThrow(TypeError);
      expect(() => make(Ctor, { embeddingSize: D, numClasses: C, maxChunkBytes: 0 })).toThrow(RangeError);
      expect(() => make(Ctor, { embeddingSize: D, numClasses: C, device: 'tpu' })).toThrow(TypeError);
      expect(() => new Ctor(42 as never)).toThrow(/an options object/);
      const normalized = !['SoftmaxHead', 'SphereFaceHead'].includes(name);
      for (const opt of [{ subCenters: 2 }, { sampleRate: 0.5 }, { classStart: 0, numLocalClasses: 5 }]) {
        if (normalized) make(Ctor, { embeddingSize: D, numClasses: C, ...opt }).dispose();
        else expect(() => make(Ctor, { embeddingSize: D, numClasses: C, ...opt })).toThrow(/options of the normalized heads only/);
      }
      if (normalized) {
        expect(() => make(Ctor, { embeddingSize: D, numClasses: C, sampleRate: 1.5 })).toThrow(RangeError);
        expect(() => make(Ctor, { embeddingSize: D, numClasses: C, subCenters: 0 })).toThrow(RangeError);
        expect(() => make(Ctor, { embeddingSize: D, numClasses: C, classStart: 8, numLocalClasses: 3 })).toThrow(
          /^Expected an integer between 1 and 2 for numLocalClasses but received 3 of type number$/,
        );
        expect(() => make(Ctor, { embeddingSize: D, numClasses: C, classStart: 10 })).toThrow(RangeError);
      }
    });
  }

  it('head-specific options', () => {
    const base = { embeddingSize: 4, numClasses: 10 };
    expect(() => make(ArcFaceHead, { ...base, s: 64 })).toThrow(/'scale' \(the paper's 's' is spelled out in facecuda\)/);
    expect(() => make(ArcFaceHead, { ...base, gradient: 'approx' })).toThrow(TypeError);
    expect(() => make(CosFaceHead, { ...base, margin: -0.1 })).toThrow(RangeError);
    expect(() => make(SphereFaceHead, { ...base, margin: 2.5 })).toThrow(/^Expected an integer for margin/);
    expect(() => make(SphereFaceHead, { ...base, margin: 0 })).toThrow(RangeError);
    expect(() => make(SphereFaceHead, { ...base, scale: 30 })).toThrow(/known option/);
    expect(() => make(SphereFaceHead, { ...base, lambda: { start: 5 } })).toThrow(/SphereFaceHead lambda option 'start'/);
    expect(() => make(SphereFaceHead, { ...base, lambda: { base: 0 } })).toThrow(RangeError);
    expect(() => make(SoftmaxHead, { ...base, scale: 30 })).toThrow(/known option/);
    expect(() => make(AdaFaceHead, { ...base, t_alpha: 0.1 })).toThrow(/'tAlpha'/);
    expect(() => make(AdaFaceHead, { ...base, tAlpha: 2 })).toThrow(RangeError);
    expect(() => make(AdaFaceHead, { ...base, eps: 0 })).toThrow(RangeError);
    expect(() => make(ElasticFaceHead, { ...base, kind: 'sphere' })).toThrow(/^Expected one of 'arc', 'cos' for kind/);
    expect(() => make(ElasticFaceHead, { ...base, std: -1 })).toThrow(RangeError);
    expect(() => make(ElasticFaceHead, { ...base, plus: true, classStart: 0, numLocalClasses: 5 })).toThrow(
      expect.objectContaining({ code: 'NOT_IMPLEMENTED' }),
    );
    const el = make(ElasticFaceHead, { ...base, kind: 'cos', plus: true });
    expect(el.hyperparams()).toMatchObject({ type: 'ElasticFaceHead', kind: 'cos', margin: 0.35, std: 0.02, plus: true, scale: 64 });
    el.dispose();
    const ea = make(ElasticFaceHead, base);
    expect(ea.hyperparams()).toMatchObject({ kind: 'arc', margin: 0.5, std: 0.05, plus: false });
    ea.dispose();
    const eap = make(ElasticFaceHead, { ...base, plus: true });
    expect(eap.hyperparams()).toMatchObject({ margin: 0.5, std: 0.0175 });
    eap.dispose();
    const sp = make(SphereFaceHead, { ...base, lambda: { min: 2 } });
    expect(sp.hyperparams()).toEqual({
      type: 'SphereFaceHead', embeddingSize: 4, numClasses: 10, margin: 4, lambda: { base: 1000, gamma: 0.12, power: 1, min: 2 },
      precision: 'fp32', maxChunkBytes: 256 * 2 ** 20, seed: 0,
    });
    sp.dispose();
    const ada = make(AdaFaceHead, base);
    expect(ada.hyperparams()).toMatchObject({ margin: 0.4, h: 0.333, scale: 64, tAlpha: 0.01, eps: 1e-3, subCenters: 1, sampleRate: 1 });
    ada.dispose();
  });

  it('hyperparams() round-trips: the same options build the same head', async () => {
    const [B, C, D] = [4, 12, 6];
    const heads: MarginHead[] = [
      make(ArcFaceHead, { embeddingSize: D, numClasses: C, margin: 0.3, scale: 20, gradient: 'straight-through', subCenters: 2, seed: 3 }),
      make(CosFaceHead, { embeddingSize: D, numClasses: C, classStart: 4, numLocalClasses: 5 }),
      make(CombinedMarginHead, { embeddingSize: D, numClasses: C, m1: 0.9, m2: 0.2, m3: 0.1 }),
      make(SoftmaxHead, { embeddingSize: D, numClasses: C }),
      make(SphereFaceHead, { embeddingSize: D, numClasses: C, margin: 3 }),
      make(AdaFaceHead, { embeddingSize: D, numClasses: C, h: 0.5 }),
      make(ElasticFaceHead, { embeddingSize: D, numClasses: C, kind: 'cos', seed: 8 }),
    ];
    for (const h of heads) {
      const { type, ...rest } = h.hyperparams();
      const Ctor = ALL_HEADS.find(([n]) => n === type)![1];
      const twin = make(Ctor, rest);
      expect(twin.hyperparams()).toEqual(h.hyperparams());
      // Same seed → same initial weights; same options → same loss.
      const w = await h.getWeight();
      expect(await twin.getWeight()).toEqual(w);
      const x = randomRows(B, D);
      const y = Int32Array.from({ length: B }, () => h.classStart + Math.floor(r() * h.numLocalClasses));
      const [a, b] = [await h.forward(x, y), await twin.forward(x, y)];
      expect(Array.from(b.rowMax)).toEqual(Array.from(a.rowMax));
      expect(Object.is(b.loss, a.loss)).toBe(true);
      h.dispose();
      twin.dispose();
    }
  });

  it('an explicit CUDA device never falls back', () => {
    for (const [, Ctor] of ALL_HEADS) {
      let err: unknown;
      let head: MarginHead | undefined;
      try {
        head = make(Ctor, { embeddingSize: 8, numClasses: 10, device: 'cuda' });
      } catch (e) {
        err = e;
      }
      if (head) {
        head.dispose(); // a GPU machine: the head was made on CUDA
        expect(head.device).toBe('cuda:0');
      } else {
        expect(err).toMatchObject({ code: 'CUDA_UNAVAILABLE' });
      }
    }
  });
});

describe('eval mode', () => {
  for (const [name, Ctor, extra] of [
    ['NormFaceHead', NormFaceHead, { scale: 30 }],
    ['CosFaceHead', CosFaceHead, {}],
    ['ArcFaceHead', ArcFaceHead, { scale: 32 }],
  ] as [string, AnyHeadCtor, Record<string, unknown>][]) {
    it(`${name}: the eval loss equals the training loss; no backward, no step in eval`, async () => {
      const [B, C, D] = [9, 31, 16];
      const head = make(Ctor, { embeddingSize: D, numClasses: C, ...extra });
      await head.setWeight(randomRows(C, D, 0.05, 3));
      const x = randomRows(B, D);
      const y = randomLabels(B, C);
      expect(head.training).toBe(true);
      const train = await head.forward(x, y);
      expect(head.eval()).toBe(head);
      expect(head.training).toBe(false);
      const ev = await head.forward(x, y);
      expect(ev.loss).toBe(train.loss);
      expect(Array.from(ev.rowMax)).toEqual(Array.from(train.rowMax));
      expect((await head.state()).step).toBe(1);
      await expect(head.backward()).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/eval mode/) });
      head.train();
      expect(head.training).toBe(true);
      await expect(head.backward()).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' }); // the eval forward does not count
      await head.forward(x, y);
      const g = await head.backward();
      expect(g.gradEmbeddings.shape).toEqual([B, D]);
      expect((await head.state()).step).toBe(2);
      head.dispose();
    });
  }

  it('ElasticFace in eval uses the mean margin; AdaFace in eval leaves its EMA alone', async () => {
    const [B, C, D] = [6, 12, 8];
    const el = make(ElasticFaceHead, { embeddingSize: D, numClasses: C, margin: 0.45, seed: 3 });
    const cos = make(ArcFaceHead, { embeddingSize: D, numClasses: C, margin: 0.45 });
    const w = randomRows(C, D, 0.1, 2);
    await el.setWeight(w);
    await cos.setWeight(w);
    const x = randomRows(B, D);
    const y = randomLabels(B, C);
    el.eval();
    cos.eval();
    const a = await el.forward(x, y);
    expect(Array.from(await el.lastMargins())).toEqual(new Array(B).fill(0.45));
    // ElasticFace-Arc with every margin = m is ArcFace with m and no fallback.
    const arcNoFallback = make(ArcFaceHead, { embeddingSize: D, numClasses: C, margin: 0.45, fallback: false });
    await arcNoFallback.setWeight(w);
    expect(Math.abs(a.loss - (await arcNoFallback.forward(x, y)).loss)).toBeLessThanOrEqual(1e-6 * Math.max(1, a.loss));
    const ada = make(AdaFaceHead, { embeddingSize: D, numClasses: C });
    await ada.setWeight(w);
    ada.eval();
    await ada.forward(x, y);
    expect(await ada.state()).toEqual({ step: 0, batchMean: 20, batchStd: 100 });
    for (const h of [el, cos, arcNoFallback, ada]) h.dispose();
  });
});

describe('gradient accumulation', () => {
  for (const [name, Ctor, extra] of [
    ['ArcFaceHead', ArcFaceHead, { scale: 16, margin: 0.3 }],
    ['SoftmaxHead', SoftmaxHead, {}],
    ['ArcFaceHead K=2', ArcFaceHead, { scale: 16, subCenters: 2 }],
  ] as [string, AnyHeadCtor, Record<string, unknown>][]) {
    it(`${name}: two backwards of one batch with accumulate give 2× the gradient`, async () => {
      const [B, C, D] = [7, 19, 12];
      const head = make(Ctor, { embeddingSize: D, numClasses: C, ...extra });
      const K = head.subCenters;
      await head.setWeight(randomRows(C * K, D, 0.05, 2).map((v) => v * 0.1));
      if (head instanceof SoftmaxHead) await head.setBias(randomFloats(C, r));
      const x = randomRows(B, D, 0.1, 2);
      const y = randomLabels(B, C);
      await head.forward(x, y);
      const g1 = await head.backward();
      const w1 = await f32(g1.gradWeight);
      const x1 = await f32(g1.gradEmbeddings);
      const b1 = g1.gradBias ? await f32(g1.gradBias) : undefined;
      expect(w1.some((v) => v !== 0)).toBe(true);
      await head.forward(x, y);
      const g2 = await head.backward({ accumulate: true });
      expectNear(await f32(g2.gradWeight), w1.map((v) => 2 * v), 1e-6, 'accumulated gradWeight');
      expectNear(await f32(g2.gradEmbeddings), x1, 1e-6, 'gradEmbeddings (written, not accumulated)');
      if (b1) expectNear(await f32(g2.gradBias!), b1.map((v) => 2 * v), 1e-6, 'accumulated gradBias');
      // Without accumulate the next backward overwrites.
      await head.forward(x, y);
      const g3 = await head.backward({ accumulate: false });
      expectNear(await f32(g3.gradWeight), w1, 1e-6, 'overwritten gradWeight');
      head.dispose();
    });
  }
});

describe('Partial FC (sampleRate)', () => {
  it('the sample holds every positive, has floor(r·C) classes, and only sampled rows get gradient', async () => {
    const [B, C, D, rate] = [6, 40, 8, 0.25];
    const head = make(ArcFaceHead, { embeddingSize: D, numClasses: C, sampleRate: rate, seed: 9, scale: 16 });
    const w = randomRows(C, D, 0.1, 2);
    await head.setWeight(w);
    let previous: Int32Array | undefined;
    let changed = false;
    for (let step = 0; step < 4; step++) {
      const y = randomLabels(B, C);
      await head.forward(randomRows(B, D), y);
      const sampled = await head.sampledClasses();
      const positives = new Set(y);
      expect(sampled.length).toBe(Math.max(Math.floor(rate * C), positives.size));
      for (const p of positives) expect(sampled).toContain(p);
      for (let i = 1; i < sampled.length; i++) expect(sampled[i]).toBeGreaterThan(sampled[i - 1]);
      if (previous && Array.from(previous).join() !== Array.from(sampled).join()) changed = true;
      previous = sampled;
      const gw = await f32((await head.backward()).gradWeight);
      const inSample = new Set(sampled);
      for (let c = 0; c < C; c++) {
        const row = gw.subarray(c * D, c * D + D);
        if (!inSample.has(c)) expect(row.every((v) => v === 0)).toBe(true);
      }
      expect(Array.from(sampled).some((c) => gw.subarray(c * D, c * D + D).some((v) => v !== 0))).toBe(true);
    }
    expect(changed).toBe(true); // the draw depends on the step
    expect(await head.getWeight()).toEqual(w); // the head never changes W itself
    head.dispose();
  });

  it('with accumulate, rows outside the new sample keep their values; sampled rows add', async () => {
    const [B, C, D, rate] = [5, 30, 6, 0.3];
    const opts = { embeddingSize: D, numClasses: C, sampleRate: rate, seed: 4, scale: 16 };
    const head = make(CosFaceHead, opts);
    const w = randomRows(C, D, 0.1, 2);
    await head.setWeight(w);
    const [x1, y1, x2, y2] = [randomRows(B, D), randomLabels(B, C), randomRows(B, D), randomLabels(B, C)];
    await head.forward(x1, y1);
    const g1 = await f32((await head.backward()).gradWeight);
    await head.forward(x2, y2);
    const s2 = new Set(await head.sampledClasses());
    const acc = await f32((await head.backward({ accumulate: true })).gradWeight);
    // The second step alone: a fresh head at step 1 draws the same sample.
    const alone = make(CosFaceHead, opts);
    await alone.setWeight(w);
    await alone.setState({ step: 1 });
    await alone.forward(x2, y2);
    expect(new Set(await alone.sampledClasses())).toEqual(s2);
    const g2 = await f32((await alone.backward()).gradWeight);
    for (let c = 0; c < C; c++) {
      for (let k = 0; k < D; k++) {
        const i = c * D + k;
        if (!s2.has(c)) expect(acc[i]).toBe(g1[i]);
        else expect(Math.abs(acc[i] - (g1[i] + g2[i]))).toBeLessThanOrEqual(1e-6 * (Math.abs(g1[i]) + Math.abs(g2[i])) + 1e-12);
      }
    }
    head.dispose();
    alone.dispose();
  });

  it('eval uses every class: the loss equals a head without sampling', async () => {
    const [B, C, D] = [4, 25, 8];
    const sampledHead = make(ArcFaceHead, { embeddingSize: D, numClasses: C, sampleRate: 0.2, scale: 20 });
    const full = make(ArcFaceHead, { embeddingSize: D, numClasses: C, scale: 20 });
    const w = randomRows(C, D, 0.1, 2);
    await sampledHead.setWeight(w);
    await full.setWeight(w);
    const x = randomRows(B, D);
    const y = randomLabels(B, C);
    const a = await sampledHead.eval().forward(x, y);
    expect((await sampledHead.sampledClasses()).length).toBe(C);
    expect(a.loss).toBe((await full.forward(x, y)).loss);
    sampledHead.dispose();
    full.dispose();
  });
});

describe('sharded mode', () => {
  /** PFC's split of C classes over W ranks (SPEC §7.2). */
  function shardsOf(C: number, W: number): { classStart: number; numLocalClasses: number }[] {
    return Array.from({ length: W }, (_, rank) => ({
      numLocalClasses: Math.floor(C / W) + (rank < C % W ? 1 : 0),
      classStart: Math.floor(C / W) * rank + Math.min(rank, C % W),
    }));
  }

  for (const [name, Ctor, extra] of [
    ['ArcFaceHead', ArcFaceHead, { scale: 32, margin: 0.4 }],
    ['CosFaceHead K=2', CosFaceHead, { scale: 24, subCenters: 2 }],
    ['AdaFaceHead', AdaFaceHead, { scale: 16 }],
  ] as [string, AnyHeadCtor, Record<string, unknown>][]) {
    it(`${name}: 3 shards with combineShardStats equal the unsharded head`, async () => {
      const [B, C, D] = [12, 23, 16];
      const full = make(Ctor, { embeddingSize: D, numClasses: C, ...extra });
      const K = full.subCenters;
      const w = randomRows(C * K, D, 0.05, 3);
      await full.setWeight(w);
      const x = randomRows(B, D);
      const y = randomLabels(B, C);
      const ref = await full.forward(x, y);
      const refG = await full.backward();
      const refX = await f32(refG.gradEmbeddings);
      const refW = await f32(refG.gradWeight);

      const parts = shardsOf(C, 3);
      expect(parts.map((p) => p.numLocalClasses)).toEqual([8, 8, 7]);
      const heads = parts.map((p) => make(Ctor, { embeddingSize: D, numClasses: C, ...extra, ...p }));
      const stats = [];
      for (const [i, h] of heads.entries()) {
        expect(h.sharded).toBe(true);
        expect(h.weightRows).toBe(parts[i].numLocalClasses * K);
        await h.setWeight(w.slice(parts[i].classStart * K * D, (parts[i].classStart + parts[i].numLocalClasses) * K * D));
        const f = await h.forward(x, y);
        expect(Number.isNaN(f.loss)).toBe(true);
        for (let row = 0; row < B; row++) {
          const owns = y[row] >= parts[i].classStart && y[row] < parts[i].classStart + parts[i].numLocalClasses;
          expect(Number.isNaN(f.targetLogit[row])).toBe(!owns);
        }
        stats.push(f);
      }
      const g = combineShardStats(stats);
      // Float32 logits ≤ 32: the merged statistics agree to ~1e-6 relative.
      expect(Math.abs(g.loss - ref.loss)).toBeLessThanOrEqual(1e-5 * Math.max(1, ref.loss));
      expectNear(g.rowMax, ref.rowMax, 1e-6, 'rowMax');
      expectNear(g.rowSumExp, ref.rowSumExp, 1e-5, 'rowSumExp');
      await expect(heads[0].backward()).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/sharded head needs/) });
      await expect(heads[0].backward({ rowMax: g.rowMax.subarray(1), rowSumExp: g.rowSumExp.subarray(1) })).rejects.toMatchObject({
        code: 'SHAPE_MISMATCH',
      });
      const sumX = new Float64Array(B * D);
      const catW: number[] = [];
      for (const h of heads) {
        const gr = await h.backward({ rowMax: g.rowMax, rowSumExp: Array.from(g.rowSumExp) });
        (await f32(gr.gradEmbeddings)).forEach((v, i) => (sumX[i] += v));
        catW.push(...(await f32(gr.gradWeight)));
        h.dispose();
      }
      // Same formulas, other summation order: 1e-5 of the largest entry.
      expectNear(sumX, refX, 1e-5, 'Σ shard gradEmbeddings');
      expectNear(catW, refW, 1e-5, 'concatenated gradWeight');
      full.dispose();
    });
  }

  it('combineShardStats rejects rows with no owner or two, and shape mismatches', () => {
    const a = { rowMax: [1, 2], rowSumExp: [1, 1], targetLogit: [1, NaN] };
    const b = { rowMax: [0, 3], rowSumExp: [2, 1], targetLogit: [NaN, NaN] };
    const c = { rowMax: [0, 3], rowSumExp: [2, 1], targetLogit: [0.5, 3] };
    expect(() => combineShardStats([a, b])).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/row 1 has no target logit/) }));
    expect(() => combineShardStats([a, c])).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/row 0 .* shards 0 and 1/) }));
    expect(() => combineShardStats([a, { ...b, rowSumExp: [1] }])).toThrow(expect.objectContaining({ code: 'SHAPE_MISMATCH' }));
    expect(() => combineShardStats([])).toThrow(TypeError);
    expect(() => combineShardStats([{ rowMax: 1 } as never])).toThrow(TypeError);
    // float64 re-derivation: M = max, S = Σ S_r·exp(M_r − M), loss = mean(M + log S − t)
    const d = { rowMax: [0, 2.5], rowSumExp: [2, 1.5], targetLogit: [NaN, 2.5] };
    const out = combineShardStats([a, d]);
    expect(Array.from(out.rowMax)).toEqual([1, 2.5]);
    expect(out.rowSumExp[0]).toBeCloseTo(1 + 2 * Math.exp(-1), 14);
    expect(out.rowSumExp[1]).toBeCloseTo(Math.exp(-0.5) + 1.5, 14);
    expect(out.loss).toBeCloseTo((1 + Math.log(1 + 2 * Math.exp(-1)) - 1 + (2.5 + Math.log(Math.exp(-0.5) + 1.5) - 2.5)) / 2, 14);
  });
});

describe('sub-centers', () => {
  it('shapes: W [C·K, D], gradWeight [C·K, D], logits [B, C] = s·max_k cos', async () => {
    const [B, C, K, D, s] = [5, 7, 3, 6, 10];
    const head = make(NormFaceHead, { embeddingSize: D, numClasses: C, subCenters: K, scale: s });
    expect(head.weightRows).toBe(C * K);
    expect((await head.getWeight()).length).toBe(C * K * D);
    await expect(head.setWeight(randomFloats(C * D, r))).rejects.toMatchObject({ code: 'SHAPE_MISMATCH' });
    const w = randomRows(C * K, D, 0.1, 2);
    await head.setWeight(w);
    const x = randomRows(B, D);
    const z = await f32(await head.logits(x));
    expect(z.length).toBe(B * C);
    const norm = (v: Float32Array, i: number): number => Math.hypot(...v.subarray(i * D, i * D + D));
    for (let i = 0; i < B; i++) {
      for (let c = 0; c < C; c++) {
        let best = -Infinity;
        for (let k = 0; k < K; k++) {
          let dot = 0;
          for (let q = 0; q < D; q++) dot += x[i * D + q] * w[(c * K + k) * D + q];
          best = Math.max(best, dot / (norm(x, i) * norm(w, c * K + k)));
        }
        expect(Math.abs(z[i * C + c] - s * best)).toBeLessThanOrEqual(1e-5 * s);
      }
    }
    await head.forward(x, randomLabels(B, C));
    const g = await head.backward();
    expect(g.gradWeight.shape).toEqual([C * K, D]);
    expect(g.gradEmbeddings.shape).toEqual([B, D]);
    head.dispose();
  });

  it('K copies of each class weight give the K = 1 loss, and their gradients sum to the K = 1 gradient', async () => {
    const [B, C, D, K] = [6, 9, 8, 2];
    const w = randomRows(C, D, 0.1, 2);
    const wk = new Float32Array(C * K * D);
    for (let c = 0; c < C; c++) for (let k = 0; k < K; k++) wk.set(w.subarray(c * D, c * D + D), (c * K + k) * D);
    const one = make(ArcFaceHead, { embeddingSize: D, numClasses: C, scale: 16 });
    const two = make(ArcFaceHead, { embeddingSize: D, numClasses: C, scale: 16, subCenters: K });
    await one.setWeight(w);
    await two.setWeight(wk);
    const x = randomRows(B, D);
    const y = randomLabels(B, C);
    const l1 = (await one.forward(x, y)).loss;
    const l2 = (await two.forward(x, y)).loss;
    expect(Math.abs(l1 - l2)).toBeLessThanOrEqual(1e-6 * Math.max(1, l1));
    const g1 = await f32((await one.backward()).gradWeight);
    const g2 = await f32((await two.backward()).gradWeight);
    const summed = new Float32Array(C * D);
    for (let c = 0; c < C; c++) for (let k = 0; k < K; k++) for (let q = 0; q < D; q++) summed[c * D + q] += g2[(c * K + k) * D + q];
    expectNear(summed, g1, 1e-5, 'Σ_k gradWeight');
    one.dispose();
    two.dispose();
  });
});

describe('AdaFace EMA', () => {
  it('batchMean/batchStd after several steps match a float64 re-derivation', async () => {
    const [C, D, tAlpha] = [10, 16, 0.1];
    const head = make(AdaFaceHead, { embeddingSize: D, numClasses: C, tAlpha });
    await head.setWeight(randomRows(C, D, 0.1, 2));
    let mean = 20;
    let std = 100;
    expect(await head.state()).toEqual({ step: 0, batchMean: 20, batchStd: 100 });
    for (let step = 0; step < 6; step++) {
      const B = 3 + Math.floor(r() * 10);
      const x = randomRows(B, D, 0.0005, 200); // some norms below 0.001 and above 100: clipped
      await head.forward(x, randomLabels(B, C));
      await head.backward();
      const n = Array.from({ length: B }, (_, i) => {
        let s = 0;
        for (let k = 0; k < D; k++) s += x[i * D + k] * x[i * D + k];
        return Math.min(Math.max(Math.sqrt(s), 0.001), 100);
      });
      const mu = n.reduce((a, b) => a + b, 0) / B;
      const sd = Math.sqrt(n.reduce((a, b) => a + (b - mu) * (b - mu), 0) / (B - 1));
      mean = tAlpha * mu + (1 - tAlpha) * mean;
      std = tAlpha * sd + (1 - tAlpha) * std;
      const s = await head.state();
      expect(s.step).toBe(step + 1);
      // Norms of float32 rows summed in float32 or wider: 1e-6 relative.
      expect(Math.abs(s.batchMean - mean)).toBeLessThanOrEqual(1e-6 * mean);
      expect(Math.abs(s.batchStd - std)).toBeLessThanOrEqual(1e-6 * std);
    }
    await head.setState({ batchMean: 33.5, batchStd: 7.25 });
    expect(await head.state()).toEqual({ step: 6, batchMean: 33.5, batchStd: 7.25 });
    await expect(head.setState({ batchStd: -1 })).rejects.toThrow(RangeError);
    await expect(head.setState({ batchMean: NaN })).rejects.toThrow(TypeError);
    head.dispose();
  });

  it('state() of the other heads reports only the step', async () => {
    const head = make(ArcFaceHead, { embeddingSize: 4, numClasses: 5 });
    expect(await head.state()).toEqual({ step: 0 });
    await expect(head.setState({ batchMean: 1 } as never)).rejects.toThrow(/known option/);
    head.dispose();
  });
});

describe('SphereFace λ schedule', () => {
  it('λ(iteration) matches SPEC §13 through setState({ step }) and state().lambda', async () => {
    const head = make(SphereFaceHead, { embeddingSize: 6, numClasses: 5 });
    const lambda = (it: number): number => Math.max(1000 / (1 + 0.12 * it), 5);
    for (const [iter, spec] of [[1, 892.857], [10, 454.545], [100, 76.923], [1000, 8.264]]) {
      await head.setState({ step: iter });
      const s = await head.state();
      expect(s.step).toBe(iter);
      expect(Math.abs(s.lambda - spec)).toBeLessThan(5e-4); // SPEC rounds to 3 decimals
      expect(Math.abs(s.lambda - lambda(iter))).toBeLessThanOrEqual(1e-12 * lambda(iter));
    }
    await head.setState({ step: 5000 });
    expect((await head.state()).lambda).toBe(5); // the floor
    // A training forward from step 0 uses iteration 1 and leaves step 1, λ 892.857.
    await head.setState({ step: 0 });
    await head.forward(randomRows(3, 6), randomLabels(3, 5));
    const s = await head.state();
    expect(s.step).toBe(1);
    expect(s.lambda).toBeCloseTo(1000 / 1.12, 9);
    head.dispose();
    const custom = make(SphereFaceHead, { embeddingSize: 6, numClasses: 5, lambda: { base: 100, gamma: 1, power: 2, min: 0.5 } });
    await custom.setState({ step: 3 });
    expect((await custom.state()).lambda).toBeCloseTo(100 / 16, 12);
    await custom.setState({ step: 99 });
    expect((await custom.state()).lambda).toBe(0.5);
    custom.dispose();
  });
});

describe('ElasticFace draws', () => {
  it('same seed and step: the same margins; another step or seed: others', async () => {
    const [B, C, D] = [16, 11, 8];
    const w = randomRows(C, D, 0.1, 2);
    const x = randomRows(B, D);
    const y = randomLabels(B, C);
    const mk = async (seed: number): Promise<ElasticFaceHead> => {
      const h = make(ElasticFaceHead, { embeddingSize: D, numClasses: C, seed });
      await h.setWeight(w);
      return h;
    };
    const [a, b, c] = await Promise.all([mk(17), mk(17), mk(18)]);
    await a.forward(x, y);
    await b.forward(x, y);
    await c.forward(x, y);
    const m0 = await a.lastMargins();
    expect(m0.length).toBe(B);
    expect(Array.from(await b.lastMargins())).toEqual(Array.from(m0));
    expect(Array.from(await c.lastMargins())).not.toEqual(Array.from(m0));
    await a.forward(x, y); // step 1
    const m1 = await a.lastMargins();
    expect(Array.from(m1)).not.toEqual(Array.from(m0));
    await a.setState({ step: 0 });
    await a.forward(x, y);
    expect(Array.from(await a.lastMargins())).toEqual(Array.from(m0));
    for (const h of [a, b, c]) h.dispose();
  });

  it('over a large batch the margins have mean ≈ margin and std ≈ std', async () => {
    const [B, C, D] = [8192, 3, 4];
    for (const [kind, margin, std] of [['arc', 0.5, 0.05], ['cos', 0.35, 0.05]] as const) {
      const h = make(ElasticFaceHead, { embeddingSize: D, numClasses: C, kind, seed: Math.floor(r() * 1e9) });
      await h.setWeight(randomRows(C, D));
      await h.forward(randomRows(B, D), randomLabels(B, C));
      const m = await h.lastMargins();
      const mean = m.reduce((s, v) => s + v, 0) / B;
      const sd = Math.sqrt(m.reduce((s, v) => s + (v - mean) * (v - mean), 0) / (B - 1));
      // 5 standard errors: σ/√B for the mean, σ/√(2B) for the std.
      expect(Math.abs(mean - margin)).toBeLessThan((5 * std) / Math.sqrt(B));
      expect(Math.abs(sd - std)).toBeLessThan((5 * std) / Math.sqrt(2 * B));
      h.dispose();
    }
  });

  it('plus: the same draws, paired so that a larger target cosine gets a smaller margin', async () => {
    const [B, C, D] = [40, 13, 8];
    const w = randomRows(C, D, 0.1, 2);
    const x = randomRows(B, D);
    const y = randomLabels(B, C);
    const plain = make(ElasticFaceHead, { embeddingSize: D, numClasses: C, seed: 5, std: 0.0175 });
    const plus = make(ElasticFaceHead, { embeddingSize: D, numClasses: C, seed: 5, plus: true });
    await plain.setWeight(w);
    await plus.setWeight(w);
    await plain.forward(x, y);
    await plus.forward(x, y);
    const mp = Array.from(await plain.lastMargins());
    const mq = Array.from(await plus.lastMargins());
    expect([...mq].sort((p, q) => p - q)).toEqual([...mp].sort((p, q) => p - q));
    const cosT = Array.from({ length: B }, (_, i) => {
      let dot = 0;
      let nx = 0;
      let nw = 0;
      for (let k = 0; k < D; k++) {
        dot += x[i * D + k] * w[y[i] * D + k];
        nx += x[i * D + k] ** 2;
        nw += w[y[i] * D + k] ** 2;
      }
      return dot / Math.sqrt(nx * nw);
    });
    for (let i = 0; i < B; i++) {
      for (let j = 0; j < B; j++) {
        if (cosT[i] > cosT[j] + 1e-5) expect(mq[i]).toBeLessThanOrEqual(mq[j]);
      }
    }
    plain.dispose();
    plus.dispose();
  });
});

describe('CenterLoss', () => {
  it('loss, gradient and the center update (repeated labels, an absent class) match a float64 re-derivation', async () => {
    const [B, C, D, lambda, alpha] = [12, 5, 8, 0.02, 0.4];
    const center = new CenterLoss({ embeddingSize: D, numClasses: C, lambda, alpha, device: 'cpu' });
    expect(Array.from(await center.getCenters()).every((v) => v === 0)).toBe(true); // centers start at 0
    const cen = randomFloats(C * D, r, -2, 2);
    await center.setCenters(cen);
    const x = randomFloats(B * D, r, -3, 3);
    const y = Int32Array.from({ length: B }, () => Math.floor(r() * (C - 1))); // class C − 1 absent
    y[0] = y[1] = y[2] = 1; // class 1 at least three times
    let ss = 0;
    const gx = new Float64Array(B * D);
    for (let i = 0; i < B; i++) {
      for (let k = 0; k < D; k++) {
        const d = x[i * D + k] - cen[y[i] * D + k];
        ss += d * d;
        gx[i * D + k] = (lambda * d) / B;
      }
    }
    const after = Float64Array.from(cen);
    for (let j = 0; j < C; j++) {
      const rows = Array.from(y.keys()).filter((i) => y[i] === j);
      for (let k = 0; k < D; k++) {
        const sum = rows.reduce((s, i) => s + (cen[j * D + k] - x[i * D + k]), 0);
        after[j * D + k] = cen[j * D + k] - (alpha * sum) / (1 + rows.length);
      }
    }
    const { loss } = await center.forward(x, y);
    // float32 differences squared and summed: 1e-6 relative.
    expect(Math.abs(loss - (lambda / (2 * B)) * ss)).toBeLessThanOrEqual(1e-6 * loss);
    const { gradEmbeddings } = await center.backward();
    expect(gradEmbeddings.shape).toEqual([B, D]);
    expectNear(await f32(gradEmbeddings), gx, 1e-6, 'gradEmbeddings');
    const got = await center.getCenters();
    expectNear(got, after, 1e-6, 'centers after the update');
    for (let k = 0; k < D; k++) expect(got[(C - 1) * D + k]).toBe(cen[(C - 1) * D + k]); // absent class untouched
    // updateCenters: false leaves the centers alone.
    await center.forward(x, y);
    await center.backward({ updateCenters: false });
    expect(await center.getCenters()).toEqual(got);
    center.dispose();
  });

  it('bad input', async () => {
    expect(() => new CenterLoss({ embeddingSize: 4, numClasses: 3, device: 'cpu', alpha: 2 })).toThrow(RangeError);
    expect(() => new CenterLoss({ embeddingSize: 4, numClasses: 0, device: 'cpu' })).toThrow(RangeError);
    expect(() => new CenterLoss({ embeddingSize: 4, numClasses: 3, device: 'cpu', lamda: 1 } as never)).toThrow(/known option/);
    const center = new CenterLoss({ embeddingSize: 4, numClasses: 3, device: 'cpu' });
    const x = randomFloats(8, r);
    await expect(center.forward(x, [0, 3])).rejects.toMatchObject({ code: 'OUT_OF_RANGE' });
    await expect(center.forward(x, [0])).rejects.toMatchObject({ code: 'SHAPE_MISMATCH' });
    await expect(center.forward(new Float32Array(0), [])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    const bad = x.slice();
    bad[2] = NaN;
    await expect(center.forward(bad, [0, 1])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(center.backward()).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(center.setCenters(new Float32Array(11))).rejects.toMatchObject({ code: 'SHAPE_MISMATCH' });
    await expect(center.backward({ update: false } as never)).rejects.toThrow(/known option/);
    center.dispose();
    await expect(center.forward(x, [0, 1])).rejects.toMatchObject({ code: 'DISPOSED' });
    await expect(center.getCenters()).rejects.toMatchObject({ code: 'DISPOSED' });
  });
});

describe('parameters() and the Softmax bias', () => {
  it('parameters share storage with the head: getWeight, setWeight and backward all show through', async () => {
    const [B, C, D] = [4, 9, 6];
    const head = make(ArcFaceHead, { embeddingSize: D, numClasses: C, scale: 16 });
    const p = await head.parameters();
    expect(p.weight.shape).toEqual([C, D]);
    expect(p.gradWeight.shape).toEqual([C, D]);
    expect(p.bias).toBeUndefined();
    expect(Array.from(await f32(p.gradWeight)).every((v) => v === 0)).toBe(true);
    expect(await f32(p.weight)).toEqual(await head.getWeight());
    const w = randomRows(C, D, 0.1, 2);
    await head.setWeight(w);
    expect(await f32(p.weight)).toEqual(w);
    await head.forward(randomRows(B, D), randomLabels(B, C));
    const g = await head.backward();
    expect(await f32(p.gradWeight)).toEqual(await f32(g.gradWeight));
    // An in-place update through the handle is the head's weight (what an optimizer does).
    const w2 = randomRows(C, D, 0.1, 2);
    const t = Tensor.from(w2, [C, D], { device: 'cpu' });
    await head.setWeight(t);
    expect(await f32(p.weight)).toEqual(w2);
    p.weight.dispose(); // dropping a handle leaves the head intact
    expect(await head.getWeight()).toEqual(w2);
    head.dispose();
  });

  it('SoftmaxHead: bias round trip, logits = W·x + b, parameters include the bias', async () => {
    const [B, C, D] = [3, 6, 5];
    const head = make(SoftmaxHead, { embeddingSize: D, numClasses: C });
    expect(Array.from(await head.getBias()).every((v) => v === 0)).toBe(true); // the bias starts at 0
    const w = randomFloats(C * D, r);
    const b = randomFloats(C, r);
    await head.setWeight(w);
    await head.setBias(b);
    expect(await head.getBias()).toEqual(b);
    await expect(head.setBias(new Float32Array(C + 1))).rejects.toMatchObject({ code: 'SHAPE_MISMATCH' });
    const x = randomFloats(B * D, r);
    const z = await f32(await head.logits(x));
    for (let i = 0; i < B; i++) {
      for (let j = 0; j < C; j++) {
        let dot = b[j];
        for (let k = 0; k < D; k++) dot += x[i * D + k] * w[j * D + k];
        expect(Math.abs(z[i * C + j] - dot)).toBeLessThanOrEqual(1e-5 * (1 + Math.abs(dot)));
      }
    }
    const p = await head.parameters();
    expect(p.bias.shape).toEqual([C]);
    expect(await f32(p.bias)).toEqual(b);
    await head.forward(x, randomLabels(B, C));
    const g = await head.backward();
    expect(g.gradBias.shape).toEqual([C]);
    const gb = await f32(g.gradBias);
    expect(await f32(p.gradBias)).toEqual(gb);
    // Rows of (P − Y)/B sum to 0, so the bias gradient sums to 0.
    expect(Math.abs(gb.reduce((s, v) => s + v, 0))).toBeLessThan(1e-6);
    head.dispose();
  });
});
