// fp16 mixed precision with dynamic loss scaling, on the CPU's fp16 emulation (fp16-rounded GEMM
// operands, fp32 sums): the fp16 GEMM against a float64 product of independently fp16-rounded
// operands; why scaling matters (a backward of tiny gradients flushes to zero unscaled and survives
// scaled); the head's lossScale; the unscale pass and its overflow check; the GradScaler rule; a
// Trainer that starts with a scale so large that the gradients overflow, skips those steps without
// touching the weights, backs off, and then trains.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { Backbone, IResNet } from '../../lib/backbones/model';
import type { Batch } from '../../lib/data/types';
import { ArcFaceHead } from '../../lib/heads';
import { gemm } from '../../lib/ops';
import { headParams, paramGroups, scaleGradients, SGD } from '../../lib/optim';
import { PolyWarmupLR } from '../../lib/schedule';
import { GradScaler } from '../../lib/train/scaler';
import { LoaderLike, Trainer } from '../../lib/train/trainer';
import { Tensor } from '../../lib/tensor';
import { SEED, randomFloats, rng } from '../helpers';

/** fp16 round to nearest even, derived from the definition (11 significant bits, subnormal quantum 2^-24). */
function f16(x: number): number {
  if (!Number.isFinite(x) || x === 0) return x;
  const ax = Math.abs(x);
  const e = Math.max(Math.floor(Math.log2(ax)), -14);
  const q = 2 ** (e - 10);
  const t = ax / q;
  let r = Math.floor(t);
  const frac = t - r;
  if (frac > 0.5 || (frac === 0.5 && r % 2 === 1)) r += 1;
  const v = r * q;
  return Math.sign(x) * (v > 65504 ? Infinity : v);
}

beforeAll(() => console.log(`amp tests: seed ${SEED}`));

test('the fp16 reference rounding itself: known values', () => {
  expect(f16(65504)).toBe(65504);
  expect(f16(65519)).toBe(65504);
  expect(f16(65520)).toBe(Infinity);
  expect(f16(2 ** -24)).toBe(2 ** -24);
  expect(f16(2 ** -25)).toBe(0);
  expect(f16(3 * 2 ** -26)).toBe(2 ** -24);
  expect(f16(1 + 2 ** -11)).toBe(1);
  expect(f16(1 + 3 * 2 ** -11)).toBe(1 + 2 ** -9);
});

test('fp16 GEMM = float64 product of fp16-rounded operands (magnitudes over the whole fp16 range)', async () => {
  const r = rng(SEED + 1);
  const M = 9, N = 23, K = 37;
  // Log-uniform magnitudes from 2^-26 to 2^12 with random signs: subnormal, normal and coarse values.
  const logu = (n: number) => Float32Array.from({ length: n }, () => (r() < 0.5 ? -1 : 1) * 2 ** (-26 + 38 * r()));
  const a = logu(M * K), b = randomFloats(K * N, r);
  const ta = Tensor.from(a, [M, K]), tb = Tensor.from(b, [K, N]);
  const c = await gemm(ta, tb, { precision: 'fp16' });
  const got = (await c.toArray()) as Float32Array;
  let worst = 0, flushed = 0;
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0, m = 0, s32 = 0;
      for (let k = 0; k < K; k++) {
        s += f16(a[i * K + k]) * f16(b[k * N + j]);
        s32 += a[i * K + k] * b[k * N + j];
        m += Math.abs(f16(a[i * K + k]) * f16(b[k * N + j]));
      }
      worst = Math.max(worst, Math.abs(got[i * N + j] - s) / (m + 1e-30));
      if (Math.abs(s - s32) > 1e-4 * Math.abs(s32)) flushed++;
    }
  }
  expect(worst).toBeLessThan((2 * K + 16) * 2 ** -24);
  expect(flushed).toBeGreaterThan(0); // the rounding is visible: fp16 is not fp32
  // An operand beyond 65504 is Inf in fp16.
  const big = await gemm(Tensor.from(Float32Array.of(7e4), [1, 1]), Tensor.from(Float32Array.of(1), [1, 1]), { precision: 'fp16' });
  expect(((await big.toArray()) as Float32Array)[0]).toBe(Infinity);
  for (const t of [ta, tb, c, big]) t.dispose();
});

test('why loss scaling: tiny gradients flush to zero in an fp16 backward unscaled, and survive scaled', async () => {
  // 32x32 and 4 images: at 16x16 with 2 images the last stages' train-mode BatchNorm normalizes over
  // 2 values and the gradients become too ill-conditioned to compare fp16 with fp32.
  const opts = { baseWidth: 4, inputSize: 32, embeddingSize: 8, seed: 7 } as const;
  const m16 = IResNet.create('r18', { ...opts, precision: 'fp16' });
  const m32 = IResNet.create('r18', opts);
  const r = rng(SEED + 2);
  const x = randomFloats(4 * 3 * 32 * 32, r);
  const dy = randomFloats(4 * 8, r, -1e-9, 1e-9); // far below fp16's smallest subnormal (6e-8)
  const grads = async (m: Backbone, g: Float32Array) => {
    const y = await m.forward(Tensor.from(x, [4, 3, 32, 32]));
    await m.zeroGrad();
    await m.backward(g);
    y.dispose();
    const ps = await m.parameters();
    const conv = ps.find((p) => p.name === 'conv1.weight');
    const out = (await conv?.grad?.toArray()) as Float32Array;
    for (const p of ps) {
      p.value.dispose();
      p.grad?.dispose();
    }
    return out;
  };
  const ref = await grads(m32, dy);
  const unscaled = await grads(m16, dy);
  const S = 2 ** 24;
  const scaled = await grads(m16, dy.map((v) => v * S));
  const norm = (v: Float32Array) => Math.sqrt(v.reduce((s, e) => s + e * e, 0));
  expect(norm(ref)).toBeGreaterThan(0);
  expect(norm(unscaled)).toBe(0); // every product of a flushed operand is 0
  const back = scaled.map((v) => v / S);
  let dot = 0;
  for (let i = 0; i < ref.length; i++) dot += ref[i] * back[i];
  expect(dot / (norm(ref) * norm(back))).toBeGreaterThan(0.99); // fp16 operands: close, not equal
  m16.dispose();
  m32.dispose();
});

test("the head's lossScale multiplies every gradient (exactly for a power of two)", async () => {
  const r = rng(SEED + 3);
  const B = 6, D = 12, C = 9;
  const x = randomFloats(B * D, r);
  const labels = Int32Array.from({ length: B }, () => Math.floor(r() * C));
  const head = new ArcFaceHead({ embeddingSize: D, numClasses: C, seed: 5, device: 'cpu' });
  const run = async (lossScale?: number) => {
    await head.forward(x, labels);
    const g = await head.backward(lossScale === undefined ? undefined : { lossScale });
    return [(await g.gradEmbeddings.toArray()) as Float32Array, (await g.gradWeight.toArray()) as Float32Array];
  };
  const [e1, w1] = await run();
  const [e2, w2] = await run(1024);
  const [e3, w3] = await run(3);
  for (let i = 0; i < e1.length; i++) expect(e2[i]).toBe(e1[i] * 1024);
  for (let i = 0; i < w1.length; i++) expect(w2[i]).toBe(w1[i] * 1024);
  // Relative to the largest entry: the factor 3·s/B is rounded once in float32 and the sums cancel.
  const rel = (a: Float32Array, b: Float32Array) =>
    Math.max(...Array.from(a, (v, i) => Math.abs(v - 3 * b[i]))) / Math.max(...Array.from(b, (v) => Math.abs(3 * v)));
  expect(rel(w3, w1)).toBeLessThan(1e-6);
  expect(rel(e3, e1)).toBeLessThan(1e-6);
  expect(rel(w1, w1.map((v) => v * 1.001))).toBeGreaterThan(1e-4); // the check can fail
  await head.forward(x, labels);
  await expect(head.backward({ lossScale: 0 })).rejects.toThrow(/lossScale/);
  await expect(head.backward({ lossScale: NaN })).rejects.toThrow(/lossScale/);
  head.dispose();
});

test('scaleGradients: g·factor in place, or nothing written and skipped on a NaN/Inf', async () => {
  const r = rng(SEED + 4);
  const a = randomFloats(70000, r), b = randomFloats(33, r);
  const mk = (v: Float32Array, name: string) => ({ name, value: Tensor.from(v, [v.length]), grad: Tensor.from(v, [v.length]) });
  const p = [mk(a, 'a'), mk(b, 'b')];
  const res = await scaleGradients(p, 1 / 256);
  expect(res.skipped).toBe(false);
  const ga = (await p[0].grad.toArray()) as Float32Array;
  for (let i = 0; i < a.length; i += 97) expect(ga[i]).toBe(a[i] / 256);
  let ss = 0;
  for (const v of [...a, ...b]) ss += (v / 256) ** 2;
  expect(res.gradNorm).toBeCloseTo(Math.sqrt(ss), 9);
  const bad = Float32Array.from(b);
  bad[5] = Infinity;
  const q = [mk(a, 'a'), mk(bad, 'b')];
  const res2 = await scaleGradients(q, 0.5);
  expect(res2.skipped).toBe(true);
  expect(res2.reason).toMatch(/'b'/);
  expect(Array.from((await q[0].grad.toArray()) as Float32Array).slice(0, 50)).toEqual(Array.from(a.slice(0, 50)));
  await expect(scaleGradients(p, 0)).rejects.toThrow(/factor/);
  for (const e of [...p, ...q]) {
    e.value.dispose();
    e.grad.dispose();
  }
});

test('GradScaler: back off on overflow, grow after growthInterval finite steps, state round trip', () => {
  const s = new GradScaler({ initScale: 1024, growthInterval: 3 });
  expect(s.update(true)).toEqual({ previous: 1024, scale: 512, change: 'backed off' });
  expect(s.update(false).change).toBe('kept');
  expect(s.update(false).change).toBe('kept');
  expect(s.update(false)).toEqual({ previous: 512, scale: 1024, change: 'grew' });
  s.update(false);
  const t = new GradScaler();
  expect(t.scale).toBe(65536);
  t.loadState(s.state());
  expect(t.state()).toEqual({ scale: 1024, growthTracker: 1 });
  expect(() => new GradScaler({ backoffFactor: 1 })).toThrow(/backoffFactor/);
  expect(() => new GradScaler({ growthInterval: 0 })).toThrow(/growthInterval/);
  expect(() => new GradScaler({ initscale: 2 } as never)).toThrow(/initscale/);
});

test('Trainer in fp16: an overflowing loss scale skips steps without touching the weights, backs off, then trains', async () => {
  const SIZE = 16, CLASSES = 4, B = 8;
  const model = IResNet.create('r18', { baseWidth: 4, inputSize: SIZE, embeddingSize: 8, seed: 3, precision: 'fp16' });
  const head = new ArcFaceHead({ embeddingSize: 8, numClasses: CLASSES, seed: 3, scale: 16, margin: 0.2, device: 'cpu', precision: 'fp16' });
  const params = await model.parameters();
  const hp = await head.parameters();
  const optimizer = new SGD([...paramGroups(params), { params: headParams(hp) }], { lr: 0.05, momentum: 0.9, weightDecay: 5e-4 });
  // Class c: a fixed random image plus noise.
  const r = rng(SEED + 5);
  const templates = Array.from({ length: CLASSES }, () => randomFloats(3 * SIZE * SIZE, r));
  const batch = (): Batch => {
    const labels = Int32Array.from({ length: B }, (_, i) => i % CLASSES);
    const images = new Float32Array(B * 3 * SIZE * SIZE);
    labels.forEach((c, i) => templates[c].forEach((v, k) => (images[i * 3 * SIZE * SIZE + k] = v + 0.3 * (r() - 0.5))));
    return { images, labels, size: B } as unknown as Batch;
  };
  const data: LoaderLike = {
    batchesPerEpoch: 40,
    async *epoch() {
      for (let i = 0; i < 40; i++) yield batch();
    },
    startAt() {},
  };
  const scaler = new GradScaler({ initScale: 2 ** 26, growthInterval: 1000 });
  const trainer = new Trainer({
    model, head, optimizer, data, lossScaler: scaler, maxConsecutiveSkips: 3,
    schedule: new PolyWarmupLR({ base: 0.05, totalSteps: 40, warmupSteps: 0 }),
  });
  expect(new Trainer({ model, head, optimizer, data, schedule: new PolyWarmupLR({ base: 0.1, totalSteps: 1, warmupSteps: 0 }) }).scaler?.scale).toBe(65536);
  const before = (await hp.weight.toArray()) as Float32Array;
  const conv0 = (await params.find((p) => p.name === 'conv1.weight')?.value.toArray()) as Float32Array;
  // One overflowing step by hand: nothing moves.
  const first = await trainer.step(batch());
  expect(first.skipped).toBe(true);
  expect((await hp.weight.toArray()) as Float32Array).toEqual(before);
  expect((await params.find((p) => p.name === 'conv1.weight')?.value.toArray()) as Float32Array).toEqual(conv0);
  expect(trainer.consecutiveSkips).toBe(0);
  expect(scaler.scale).toBe(2 ** 25);
  trainer.iteration = 0;
  const steps: { skipped: boolean; reason?: string; loss: number; lossScale?: number; nextLossScale?: number }[] = [];
  trainer.on('step', (s) => steps.push(s));
  const fit = await trainer.fit({ epochs: 1 });
  expect(fit.stopped).toBe('done'); // overflow skips are not divergence
  const skipped = steps.filter((s) => s.skipped);
  expect(skipped.length).toBeGreaterThan(3);
  expect(skipped[0].reason).toContain(`fp16 overflow at loss scale ${2 ** 25}`);
  expect(skipped[0].nextLossScale).toBe(2 ** 24);
  // The skipped steps are all at the start; the weights did not move during them.
  const firstGood = steps.findIndex((s) => !s.skipped);
  expect(firstGood).toBe(skipped.length);
  expect(steps[firstGood].lossScale).toBe(2 ** (25 - skipped.length));
  expect(steps[firstGood].lossScale as number).toBeLessThan(65504 * 64);
  const good = steps.slice(firstGood);
  expect(good.every((s) => !s.skipped)).toBe(true);
  const k = Math.min(4, Math.floor(good.length / 2));
  const mean = (a: typeof good) => a.reduce((s, e) => s + e.loss, 0) / a.length;
  expect(mean(good.slice(-k))).toBeLessThan(mean(good.slice(0, k)));
  const after = (await hp.weight.toArray()) as Float32Array;
  expect(after).not.toEqual(before);
  // The scaler's state travels in the checkpoint.
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'facecuda-amp-')), 'ck.safetensors');
  await trainer.save(file);
  const other = new GradScaler();
  const resumed = new Trainer({ model, head, optimizer, data, lossScaler: other, schedule: new PolyWarmupLR({ base: 0.1, totalSteps: 1, warmupSteps: 0 }) });
  await resumed.load(file);
  expect(other.state()).toEqual(scaler.state());
  fs.rmSync(path.dirname(file), { recursive: true, force: true });
  for (const p of params) {
    p.value.dispose();
    p.grad?.dispose();
  }
  model.dispose();
  head.dispose();
}, 60000);
