// GPU suite for the backbones: IResNet-18 and MobileFaceNet on CUDA against the same weights on the
// CPU (the CPU executor is itself checked against a float64 interpreter and finite differences in
// test/unit/backbone-model.test.ts, so agreement here ties the CUDA executor to the reference).
// Weights cross devices through the public API: IResNet-18 by parameters() → loadStateDict,
// MobileFaceNet by save() → Backbone.load(…, { device: 'cuda' }). Checked: the copy is exact; the
// training-mode forward, dL/dx and every parameter gradient of one step (fp32, and tf32 when the
// model takes a `precision` option); BatchNorm running statistics and num_batches_tracked after the
// step; the eval-mode forward with those statistics; Dropout's masks (the same seed draws the same
// mask on both devices, a fresh one per forward); and INVALID_ARGUMENT for a CPU tensor handed to a
// CUDA model (input, gradient) and the reverse, while loadStateDict copies across devices. Runs when a CUDA device is usable and
// prints why it is skipped otherwise.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Backbone, BackboneArch, BackboneOptions, BackboneRuntimeOptions, IResNet, MobileFaceNet, Tensor } from '../../lib';
import { gpuStatus, maxRel, randomFloats, rng, SEED } from '../helpers';

const gpu = gpuStatus();
if (!gpu.available) console.log(`GPU backbone tests skipped: ${gpu.reason}`);

// Error of `got` against `want` as a fraction of the largest |want| (the heads suite's measure).
// fp32 on both sides: cuDNN/cuBLAS and our CPU kernels sum in different orders (a few ulp per dot
// product of up to 4 608 terms); ~20 layers of conv → BN → PReLU, with BN renormalizing in training
// mode, compound that to ~1e-5 of the largest value: 1e-3 (outputs, dx) and 2e-3 (parameter
// gradients, which sum over the batch and the map) leave a wide margin and still catch a wrong term,
// a wrong index or TF32 sneaking into "fp32" (cuDNN's default math mode allows it on Ampere+).
// TF32 rounds every conv/GEMM operand to 10 mantissa bits (2^-11 ≈ 5e-4 relative each); through the
// same depth that is ~5e-3: 3e-2 / 6e-2.
const TOL = {
  fp32: { out: 1e-3, grad: 2e-3, stats: 1e-4 },
  tf32: { out: 3e-2, grad: 6e-2, stats: 1e-2 },
  // fp16 keeps the same 11 significant bits as tf32 in the operands and also rounds each convolution's
  // output to fp16 (cuDNN's PSEUDO_HALF config): the same order of error, the same tolerance.
  fp16: { out: 3e-2, grad: 6e-2, stats: 1e-2 },
} as const;
type Precision = keyof typeof TOL;

type State = Map<string, Float32Array | BigInt64Array>;

function expectClose(what: string, got: ArrayLike<number>, want: ArrayLike<number>, tol: number): void {
  const e = maxRel(got, want);
  // NaN fails this comparison too.
  if (!(e <= tol)) throw new Error(`${what}: max error ${e.toExponential(2)} of the largest value, tolerance ${tol} (seed ${SEED})`);
}

async function f32(t: Tensor): Promise<Float32Array> {
  return (await t.toArray()) as Float32Array;
}

/** Every tensor of a model (buffers included) as host arrays. */
async function stateOf(model: Backbone): Promise<State> {
  const out: State = new Map();
  for (const p of await model.parameters({ includeBuffers: true })) {
    out.set(p.name, (await p.value.toArray()) as Float32Array | BigInt64Array);
    p.value.dispose();
    if (p.grad) p.grad.dispose();
  }
  return out;
}

/** Parameter gradients by name (only the parameters that have one). */
async function gradsOf(model: Backbone): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const p of await model.parameters()) {
    if (p.grad) out.set(p.name, await f32(p.grad));
    p.value.dispose();
    if (p.grad) p.grad.dispose();
  }
  return out;
}

/**
 * Moves BatchNorm and PReLU away from their trivial init (weight 1, bias 0, running 0/1, slope
 * 0.25), so that the comparisons exercise every term: 1-D weights (BN gammas; PReLU slopes, which
 * MobileFaceNet's names do not tell apart) uniform in [0.5, 1.5], IResNet's PReLU slopes in
 * [0.05, 0.45], 1-D biases in [-0.2, 0.2], running_mean in [-0.2, 0.2], running_var in [0.5, 2].
 * Frozen weights (IResNet's features.weight) keep their value.
 */
async function perturb(model: Backbone, r: () => number): Promise<void> {
  const state: Record<string, Float32Array> = {};
  for (const p of await model.parameters({ includeBuffers: true })) {
    const n = p.value.size;
    if (p.name.endsWith('.running_mean')) state[p.name] = randomFloats(n, r, -0.2, 0.2);
    else if (p.name.endsWith('.running_var')) state[p.name] = randomFloats(n, r, 0.5, 2);
    else if (p.kind === 'parameter' && p.trainable && p.value.rank === 1) {
      if (p.name.endsWith('.bias')) state[p.name] = randomFloats(n, r, -0.2, 0.2);
      else if (/prelu/.test(p.name)) state[p.name] = randomFloats(n, r, 0.05, 0.45);
      else state[p.name] = randomFloats(n, r, 0.5, 1.5);
    }
    p.value.dispose();
    if (p.grad) p.grad.dispose();
  }
  const res = await model.loadStateDict(state, { strict: false });
  expect(res.unexpected).toEqual([]);
}

/** True for an error that says the model does not take `precision` (an unknown option or value). */
function rejectsPrecision(e: unknown): boolean {
  const err = e as { code?: string; message?: string };
  return (err.code === 'INVALID_ARGUMENT' || err.code === 'OUT_OF_RANGE') && /precision/.test(String(err.message));
}

/**
 * Makes a CUDA model with `precision` (the option is optional in the API: for fp32 a model that does
 * not know it is made without it; for tf32 null is returned and the caller skips with a note).
 */
async function makeCuda(make: (options: BackboneOptions) => Backbone | Promise<Backbone>, precision: Precision): Promise<Backbone | null> {
  const options = { device: 'cuda', precision } as BackboneOptions;
  try {
    return await make(options);
  } catch (e) {
    if (!rejectsPrecision(e)) throw e;
    if (precision === 'fp32') return make({ device: 'cuda' });
    console.log(`backbone ${precision} not checked: the model does not take precision '${precision}' (${(e as Error).message})`);
    return null;
  }
}

/** One training step (forward, backward with dL/dx) and the eval forward after it, on either device. */
async function stepAndEval(model: Backbone, x: Float32Array, g: Float32Array, shape: number[]): Promise<{
  y: Float32Array; dx: Float32Array; grads: Map<string, Float32Array>; state: State; yEval: Float32Array;
}> {
  const device = model.device;
  const xt = Tensor.from(x, shape, { device });
  const gt = Tensor.from(g, [shape[0], model.embeddingSize], { device });
  model.train();
  await model.zeroGrad();
  const yt = await model.forward(xt);
  expect(yt.device).toBe(device);
  const dxt = await model.backward(gt, { inputGrad: true });
  expect(dxt).not.toBeNull();
  expect((dxt as Tensor).device).toBe(device);
  expect((dxt as Tensor).shape).toEqual(shape);
  const out = { y: await f32(yt), dx: await f32(dxt as Tensor), grads: await gradsOf(model), state: await stateOf(model) };
  model.eval();
  const ye = await model.forward(xt);
  const yEval = await f32(ye);
  model.train();
  for (const t of [xt, gt, yt, dxt as Tensor, ye]) t.dispose();
  return { ...out, yEval };
}

type Result = Awaited<ReturnType<typeof stepAndEval>>;

function compareStep(label: string, got: Result, want: Result, tol: (typeof TOL)[Precision]): void {
  expectClose(`${label} train forward`, got.y, want.y, tol.out);
  expectClose(`${label} dL/dx`, got.dx, want.dx, tol.out);
  expect([...got.grads.keys()]).toEqual([...want.grads.keys()]);
  for (const [name, w] of want.grads) expectClose(`${label} grad ${name}`, got.grads.get(name) as Float32Array, w, tol.grad);
  // BatchNorm running statistics after the step (momentum 0.1, unbiased variance) and the counter.
  let stats = 0;
  for (const [name, w] of want.state) {
    const v = got.state.get(name);
    if (name.endsWith('num_batches_tracked')) {
      expect(Array.from(v as BigInt64Array)).toEqual(Array.from(w as BigInt64Array));
      expect((w as BigInt64Array)[0]).toBe(1n);
      stats++;
    } else if (name.endsWith('running_mean') || name.endsWith('running_var')) {
      expectClose(`${label} ${name}`, v as Float32Array, w as Float32Array, tol.stats);
      stats++;
    }
  }
  expect(stats).toBeGreaterThan(0);
  expectClose(`${label} eval forward`, got.yEval, want.yEval, tol.out);
}

(gpu.available ? describe : describe.skip)('CUDA backbones match the CPU', () => {
  const r = rng(SEED ^ 0xbacb);
  const N = 4;
  const shape = [N, 3, 112, 112];
  let tmp = '';
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'facecuda-gpu-backbone-'));
  });
  afterAll(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  const models: Array<{
    name: string;
    make: (options: BackboneOptions) => Backbone;
    /** Copies the CPU model to a new CUDA model with `precision` (the way named in the title). */
    copy: (cpu: Backbone, precision: Precision) => Promise<Backbone | null>;
  }> = [
    {
      name: 'IResNet-18 (parameters → loadStateDict)',
      make: (o) => IResNet.create('r18', { seed: 11, ...o }),
      copy: async (cpu, precision) => {
        const dev = await makeCuda((o) => IResNet.create('r18', { seed: 99, ...o }), precision);
        if (dev) {
          const res = await dev.loadStateDict(await stateOf(cpu));
          expect(res.missing).toEqual([]);
          expect(res.unexpected).toEqual([]);
        }
        return dev;
      },
    },
    {
      name: 'MobileFaceNet (save → Backbone.load on cuda)',
      make: (o) => MobileFaceNet.create({ seed: 12, ...o }),
      copy: async (cpu, precision) => {
        const file = path.join(tmp, `mbf-${precision}.safetensors`);
        await cpu.save(file);
        // Backbone.load takes the runtime options: device, and precision if the model has it.
        return makeCuda((o) => Backbone.load(file, o as BackboneRuntimeOptions), precision);
      },
    },
  ];

  for (const spec of models) {
    it(`${spec.name}: fp32, tf32 and fp16 step, gradients, BN statistics and eval forward`, async () => {
      const cpu = spec.make({ device: 'cpu' });
      await perturb(cpu, r);
      const initial = await stateOf(cpu);
      const x = randomFloats(N * 3 * 112 * 112, r);
      const g = randomFloats(N * cpu.embeddingSize, r);
      // The copies first (from the CPU model's initial state), then the CPU reference step.
      const devs: Array<[Precision, Backbone | null]> = [];
      for (const precision of ['fp32', 'tf32', 'fp16'] as const) {
        const dev = await spec.copy(cpu, precision);
        if (dev) {
          expect(dev.device).toBe('cuda:0');
          // The copy is exact, buffers included.
          const got = await stateOf(dev);
          expect([...got.keys()]).toEqual([...initial.keys()]);
          for (const [name, v] of initial) {
            if (!(Array.from(got.get(name) as ArrayLike<number | bigint>).every((a, i) => a === v[i]))) throw new Error(`${name} differs after the copy`);
          }
        }
        devs.push([precision, dev]);
      }
      const want = await stepAndEval(cpu, x, g, shape);
      for (const [precision, dev] of devs) {
        if (!dev) continue;
        const got = await stepAndEval(dev, x, g, shape);
        compareStep(`${spec.name} ${precision}`, got, want, TOL[precision]);
        dev.dispose();
      }
      cpu.dispose();
    });
  }

  it('Dropout draws the same masks on both devices, a fresh one per forward', async () => {
    const p = 0.4;
    const arch = {
      name: 'dropout-probe', config: { family: 'custom' }, reference: 'test/gpu/backbone.test.ts', inputShape: [4, 8, 8], embeddingSize: 256,
      nodes: [
        { id: 'input', op: 'input', inputs: [], module: null, tensors: [], channels: 4, height: 8, width: 8 },
        { id: 'flatten', op: 'flatten', inputs: ['input'], module: null, tensors: [] },
        { id: 'dropout', op: 'dropout', inputs: ['flatten'], module: 'dropout', tensors: [], p },
      ],
      output: 'dropout',
      preprocessing: { inputSize: 8, layout: 'NCHW', colorOrder: 'RGB', valueRange: [0, 255], mean: [127.5, 127.5, 127.5], std: [127.5, 127.5, 127.5], alignment: null },
    } as unknown as BackboneArch;
    const ones = new Float32Array(8 * 256).fill(1);
    const masks: Float32Array[][] = [];
    for (const device of ['cpu', 'cuda'] as const) {
      const m = Backbone.fromArch(arch, { device, seed: 5 });
      const seen: Float32Array[] = [];
      for (let step = 0; step < 2; step++) {
        const y = await m.forward(ones);
        seen.push(await f32(y));
        const dx = await m.backward(ones, { inputGrad: true });
        // Backward applies the same mask (and scale, to rounding).
        expectClose(`dropout backward, step ${step}, ${device}`, await f32(dx as Tensor), seen[step], 1e-6);
        y.dispose();
        (dx as Tensor).dispose();
      }
      expect((await m.state()).step).toBe(2);
      m.dispose();
      masks.push(seen);
    }
    const [cpuMasks, cudaMasks] = masks;
    for (let step = 0; step < 2; step++) {
      const a = cpuMasks[step];
      const b = cudaMasks[step];
      const kept = a.filter((v) => v !== 0).length;
      // About 1 − p kept, each scaled by 1/(1 − p).
      expect(Math.abs(kept / a.length - (1 - p))).toBeLessThan(0.05);
      for (let i = 0; i < a.length; i++) {
        if ((a[i] === 0) !== (b[i] === 0) || Math.abs(a[i] - b[i]) > 1e-6) throw new Error(`step ${step}: mask differs at ${i}: cpu ${a[i]}, cuda ${b[i]}`);
      }
    }
    expect(Array.from(cpuMasks[0])).not.toEqual(Array.from(cpuMasks[1]));
  });

  it('IResNet-18 with dropout 0.4: the same training forward and fc gradient on both devices', async () => {
    // Batch 4: with 2, the features BatchNorm1d turns tiny differences between the two samples into ±1.
    const n = 4;
    const cpu = IResNet.create('r18', { seed: 13, dropout: 0.4, inputSize: 48, device: 'cpu' });
    const dev = await makeCuda((o) => IResNet.create('r18', { seed: 13, dropout: 0.4, inputSize: 48, ...o }), 'fp32') as Backbone;
    const x = randomFloats(n * 3 * 48 * 48, r);
    const g = randomFloats(n * 512, r);
    const out = [];
    for (const m of [cpu, dev]) {
      const xt = Tensor.from(x, [n, 3, 48, 48], { device: m.device });
      const gt = Tensor.from(g, [n, 512], { device: m.device });
      const y = await m.forward(xt);
      await m.backward(gt);
      const fcGrad = (await gradsOf(m)).get('fc.weight') as Float32Array;
      out.push({ y: await f32(y), fcGrad });
      for (const t of [xt, gt, y]) t.dispose();
      m.dispose();
    }
    expectClose('dropout r18 forward', out[1].y, out[0].y, TOL.fp32.out);
    expectClose('dropout r18 fc.weight grad', out[1].fcGrad, out[0].fcGrad, TOL.fp32.grad);
    // Dropped features leave zero columns in dL/dW of fc: the same ones on both devices.
    const zeroCols = (w: Float32Array): string => {
      const cols = w.length / 512;
      return Array.from({ length: cols }, (_, c) => (Array.from({ length: 512 }, (_, o) => w[o * cols + c]).every((v) => v === 0) ? '0' : '1')).join('');
    };
    expect(zeroCols(out[1].fcGrad)).toBe(zeroCols(out[0].fcGrad));
  });

  it('a CPU input or gradient handed to a CUDA model (and the reverse) is INVALID_ARGUMENT; state dicts copy across devices', async () => {
    const dev = await makeCuda((o) => IResNet.create('r18', { seed: 3, inputSize: 32, ...o }), 'fp32') as Backbone;
    const cpuModel = IResNet.create('r18', { seed: 3, inputSize: 32, device: 'cpu' });
    const x = randomFloats(2 * 3 * 32 * 32, r);
    const xCpu = Tensor.from(x, [2, 3, 32, 32], { device: 'cpu' });
    const xCuda = Tensor.from(x, [2, 3, 32, 32], { device: 'cuda' });
    const gCpu = Tensor.from(randomFloats(2 * 512, r), [2, 512], { device: 'cpu' });
    const wrongDevice = { code: 'INVALID_ARGUMENT', message: expect.stringMatching(/cpu/) };
    await expect(dev.forward(xCpu)).rejects.toMatchObject(wrongDevice);
    // A valid forward first, so that the gradient is refused for its device, not for a missing forward.
    (await dev.forward(xCuda)).dispose();
    await expect(dev.backward(gCpu)).rejects.toMatchObject(wrongDevice);
    const w = await cpuModel.getParameter('fc.bias');
    // loadStateDict copies across devices (a checkpoint read on the host into a CUDA model).
    const wCpu = Tensor.from(w as Float32Array, [512], { device: 'cpu' });
    await dev.loadStateDict({ 'fc.bias': wCpu }, { strict: false });
    expect(Buffer.from(((await dev.getParameter('fc.bias')) as Float32Array).buffer).equals(Buffer.from((w as Float32Array).buffer))).toBe(true);
    wCpu.dispose();
    await expect(cpuModel.forward(xCuda)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/cuda/) });
    for (const t of [xCpu, xCuda, gCpu]) t.dispose();
    dev.dispose();
    cpuModel.dispose();
  });
});
