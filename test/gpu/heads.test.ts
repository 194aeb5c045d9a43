// GPU suite for the margin heads: every head and option on CUDA against the same head on the CPU
// (same weights, same inputs, same seeds). Runs when a CUDA device is usable and prints why it is
// skipped otherwise. The CPU heads are themselves checked against the float64 fixtures
// (test/unit/heads.test.ts), so agreement here ties the CUDA kernels to the reference.
import {
  AdaFaceHead, ArcFaceHead, CenterLoss, CombinedMarginHead, CosFaceHead, ElasticFaceHead, MarginHead, NormFaceHead,
  SoftmaxHead, SphereFaceHead, combineShardStats, system, DeviceSpec,
} from '../../lib';
import { gpuStatus, maxRel, randomFloats, rng, SEED } from '../helpers';

const gpu = gpuStatus();
if (!gpu.available) console.log(`GPU head tests skipped: ${gpu.reason}`);

type Make = (device: DeviceSpec, extra?: Record<string, unknown>) => MarginHead;

// fp32 on both sides: the GEMMs accumulate in a different order (cuBLAS vs our packed kernel) and
// exp differs by a few ulp, amplified by s = 64 inside the softmax: 1e-3 of the largest gradient
// (and 1e-4 relative on the loss) leaves a wide margin over that and still catches any wrong term.
// TF32/BF16 GEMMs round the inputs to 10/7 mantissa bits: 3e-2 of the largest gradient.
const TOL = { fp32: 1e-3, tf32: 3e-2, bf16: 3e-2, fp16: 3e-2 } as const;

(gpu.available ? describe : describe.skip)('CUDA heads match the CPU heads', () => {
  const r = rng(SEED ^ 0x6ead);
  const D = 64;
  const C = 1000;
  const B = 48;
  const base = { embeddingSize: D, numClasses: C };
  const cases: Array<[string, Make]> = [
    ['SoftmaxHead', (device) => new SoftmaxHead({ ...base, device })],
    ['NormFaceHead', (device, e) => new NormFaceHead({ ...base, device, ...e })],
    ['SphereFaceHead', (device) => new SphereFaceHead({ ...base, device })],
    ['CosFaceHead', (device, e) => new CosFaceHead({ ...base, device, ...e })],
    ['ArcFaceHead', (device, e) => new ArcFaceHead({ ...base, device, ...e })],
    ['ArcFaceHead arcface_torch', (device, e) => new ArcFaceHead({ ...base, device, fallback: false, gradient: 'straight-through', ...e })],
    ['CombinedMarginHead', (device, e) => new CombinedMarginHead({ ...base, device, m1: 0.9, m2: 0.4, m3: 0.15, ...e })],
    ['AdaFaceHead', (device, e) => new AdaFaceHead({ ...base, device, ...e })],
    ['ElasticFaceHead arc', (device, e) => new ElasticFaceHead({ ...base, device, seed: 3, ...e })],
    ['ElasticFaceHead cos plus', (device, e) => new ElasticFaceHead({ ...base, device, kind: 'cos', plus: true, seed: 3, ...e })],
    ['ArcFaceHead K=3', (device, e) => new ArcFaceHead({ ...base, device, subCenters: 3, ...e })],
    ['CosFaceHead sampleRate 0.3', (device, e) => new CosFaceHead({ ...base, device, sampleRate: 0.3, seed: 9, ...e })],
  ];

  for (const [name, make] of cases) {
    for (const chunked of [false, true]) {
      it(`${name}${chunked ? ' (chunked)' : ''}: two steps, loss and gradients`, async () => {
        const extra = chunked ? { maxChunkBytes: B * 4 * 97 } : {};
        const cpu = make('cpu', extra);
        const dev = make('cuda', extra);
        const rows = cpu.hyperparams().subCenters ? C * Number(cpu.hyperparams().subCenters) : C;
        const w = randomFloats(rows * D, r);
        await cpu.setWeight(w);
        await dev.setWeight(w);
        if (cpu instanceof SoftmaxHead && dev instanceof SoftmaxHead) {
          const b = randomFloats(C, r);
          await cpu.setBias(b);
          await dev.setBias(b);
        }
        for (let step = 0; step < 2; step++) {
          const x = randomFloats(B * D, r).map((v, i) => v * (0.5 + (Math.floor(i / D) % 7)));
          const labels = Int32Array.from({ length: B }, () => Math.floor(r() * C));
          const a = await cpu.forward(x, labels);
          const b = await dev.forward(x, labels);
          expect(Math.abs(a.loss - b.loss)).toBeLessThanOrEqual(1e-4 * Math.max(1, Math.abs(a.loss)));
          const ga = await cpu.backward();
          const gb = await dev.backward();
          expect(gb.gradEmbeddings.device).toBe('cuda:0');
          const ex = maxRel((await gb.gradEmbeddings.toArray()) as Float32Array, (await ga.gradEmbeddings.toArray()) as Float32Array);
          const ew = maxRel((await gb.gradWeight.toArray()) as Float32Array, (await ga.gradWeight.toArray()) as Float32Array);
          if (!(ex <= TOL.fp32 && ew <= TOL.fp32)) throw new Error(`${name} step ${step}: dx ${ex}, dW ${ew}`);
        }
        if (cpu instanceof ElasticFaceHead && dev instanceof ElasticFaceHead) {
          // The counter-based generator draws the same margins on both devices.
          expect(Array.from(await dev.lastMargins())).toEqual(Array.from(await cpu.lastMargins()));
        }
        expect(Array.from(await dev.sampledClasses())).toEqual(Array.from(await cpu.sampledClasses()));
        cpu.dispose();
        dev.dispose();
      });
    }
  }

  it('tf32, bf16 and fp16 GEMMs stay close to fp32 (fp16 with a loss scale, unscaled)', async () => {
    const w = randomFloats(C * D, r);
    const x = randomFloats(B * D, r);
    const labels = Int32Array.from({ length: B }, () => Math.floor(r() * C));
    const ref = new ArcFaceHead({ ...base, device: 'cpu' });
    await ref.setWeight(w);
    const lr = (await ref.forward(x, labels)).loss;
    const gr = (await (await ref.backward()).gradWeight.toArray()) as Float32Array;
    for (const precision of ['tf32', 'bf16', 'fp16'] as const) {
      const h = new ArcFaceHead({ ...base, device: 'cuda', precision });
      await h.setWeight(w);
      const l = (await h.forward(x, labels)).loss;
      expect(Math.abs(l - lr)).toBeLessThanOrEqual(2e-2 * Math.max(1, Math.abs(lr)));
      const S = precision === 'fp16' ? 1024 : 1;
      const g = ((await (await h.backward({ lossScale: S })).gradWeight.toArray()) as Float32Array).map((v) => v / S);
      expect(maxRel(g, gr)).toBeLessThanOrEqual(TOL[precision]);
      h.dispose();
    }
    ref.dispose();
  });

  it('shards on CUDA combine to the unsharded CPU head', async () => {
    const w = randomFloats(C * D, r);
    const x = randomFloats(B * D, r);
    const labels = Int32Array.from({ length: B }, () => Math.floor(r() * C));
    const ref = new ArcFaceHead({ ...base, device: 'cpu' });
    await ref.setWeight(w);
    const lr = (await ref.forward(x, labels)).loss;
    const gr = await ref.backward();
    const bounds = [0, 333, 700, C];
    const shards = [];
    const stats = [];
    for (let s = 0; s < 3; s++) {
      const h = new ArcFaceHead({ ...base, device: 'cuda', classStart: bounds[s], numLocalClasses: bounds[s + 1] - bounds[s] });
      await h.setWeight(w.subarray(bounds[s] * D, bounds[s + 1] * D));
      stats.push(await h.forward(x, labels));
      shards.push(h);
    }
    const g = combineShardStats(stats);
    expect(Math.abs(g.loss - lr)).toBeLessThanOrEqual(1e-4 * Math.max(1, Math.abs(lr)));
    const dx = new Float32Array(B * D);
    const dw: number[] = [];
    for (const h of shards) {
      const gs = await h.backward({ rowMax: g.rowMax, rowSumExp: g.rowSumExp });
      ((await gs.gradEmbeddings.toArray()) as Float32Array).forEach((v, i) => (dx[i] += v));
      dw.push(...((await gs.gradWeight.toArray()) as Float32Array));
      h.dispose();
    }
    expect(maxRel(dx, (await gr.gradEmbeddings.toArray()) as Float32Array)).toBeLessThanOrEqual(TOL.fp32);
    expect(maxRel(dw, (await gr.gradWeight.toArray()) as Float32Array)).toBeLessThanOrEqual(TOL.fp32);
    ref.dispose();
  });

  it('CenterLoss on CUDA matches the CPU, centers included', async () => {
    const centers = randomFloats(C * D, r);
    const x = randomFloats(B * D, r);
    const labels = Int32Array.from({ length: B }, (_, i) => (i * 7) % 13);
    const out = [];
    for (const device of ['cpu', 'cuda'] as const) {
      const cl = new CenterLoss({ embeddingSize: D, numClasses: C, device });
      await cl.setCenters(centers);
      const { loss } = await cl.forward(x, labels);
      const { gradEmbeddings } = await cl.backward();
      out.push({ loss, g: (await gradEmbeddings.toArray()) as Float32Array, c: await cl.getCenters() });
      cl.dispose();
    }
    expect(Math.abs(out[0].loss - out[1].loss)).toBeLessThanOrEqual(1e-6 * Math.abs(out[0].loss));
    expect(maxRel(out[1].g, out[0].g)).toBeLessThanOrEqual(1e-5);
    expect(maxRel(out[1].c, out[0].c)).toBeLessThanOrEqual(1e-5);
  });

  it('a big head stays inside its chunk budget on the device', async () => {
    const big = new ArcFaceHead({ embeddingSize: 512, numClasses: 93431, device: 'cuda', maxChunkBytes: 64 * 2 ** 20 });
    const x = randomFloats(512 * 512, r);
    const labels = Int32Array.from({ length: 512 }, (_, i) => (i * 7919) % 93431);
    await big.forward(x, labels);
    await big.backward();
    await system.synchronize('cuda');
    system.resetPeakMemory('cuda');
    const before = system.memoryStats('cuda').allocated;
    const { loss } = await big.forward(x, labels);
    await big.backward();
    await system.synchronize('cuda');
    expect(Number.isFinite(loss)).toBe(true);
    expect(big.lastChunkBytes()).toBeLessThanOrEqual(64 * 2 ** 20);
    // Nothing beyond the scratch the head already held (and the small per-step uploads).
    expect(system.memoryStats('cuda').peakAllocated - before).toBeLessThanOrEqual(16 * 2 ** 20);
    big.dispose();
  });
});
