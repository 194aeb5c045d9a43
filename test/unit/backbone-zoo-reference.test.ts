// Every second-batch backbone (SPEC-BACKBONES: MobileNetV3, EfficientNet, GhostNet, EdgeNeXt/EdgeFace,
// ViT, DeiT, insightface ViT) run whole, forward and backward, against an independent PyTorch
// implementation: test/fixtures/backbone-zoo.json, written by test/fixtures/gen_backbone_zoo_torch.py
// (plain torch.nn modules written from the spec, float64 from float32 values). Both sides build the
// same weights, input and upstream gradient from the formulas of bench/zoo_values.cjs, so the fixture
// holds no weights: per model the state-dict names/shapes/kinds, the eval and train outputs [2, 512],
// and a projection and norm of dL/dx and of every parameter's gradient (L = Σ y·g, train mode).
//
// What each check would catch: the names/shapes set equality, a wrong or missing checkpoint key; the
// eval output, the BN running statistics path (and eval folding); the train output, batch statistics;
// the gradients, any backward formula or routing error (a projection on a fixed random direction is
// as sensitive as the whole vector, the norm checks its scale).
//
// Tolerances: our fp32 against the float64 reference. Outputs: |Δ| <= 2e-3·max|y_ref| + 1e-5 per
// element (torch's own float32 lands within 2.5e-4). Gradients: relative 5e-3 of the norm (1e-2 of
// it for the projection), raised to 4x the deviation of torch's own float32 run for that tensor
// where the tensor is ill-conditioned (see gradError). A wrong op is off by O(1).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Worker } from 'worker_threads';

import { backboneArch, stateDictTensors, ZOO_BACKBONE_NAMES, ZooBackboneName } from '../../lib/backbones/arch';
import { Backbone } from '../../lib/backbones/model';
import { readSafetensors, writeSafetensors } from '../../lib/safetensors';
import { Tensor } from '../../lib/tensor';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const zoo = require('../../bench/zoo_values.cjs') as {
  zooKinds(arch: unknown): Map<string, string>;
  zooState(arch: unknown, specs: unknown): Map<string, Float32Array | BigInt64Array>;
  inputX(n: number): Float32Array;
  gradY(n: number, e: number): Float32Array;
  projectNorm(v: ArrayLike<number>): [number, number];
};

interface FixtureModel {
  tensors: [string, number[], string][];
  eval_y: number[];
  train_y: number[];
  grad_x: [number, number];
  grads: Record<string, [number, number]>;
  /** torch float32 against the reference: per tensor [|Δproj|, |Δnorm|] (absolute). */
  f32_deviation: { grad_x_abs: [number, number]; grads_abs: Record<string, [number, number]> };
}
interface Fixture {
  batch: number;
  models: Record<string, FixtureModel>;
}

/**
 * The formula values and the projections of up to 114 M numbers run in a worker thread: inside
 * jest's module sandbox, loops over typed arrays run some 10–50x slower than in plain Node (typed
 * arrays and Math come from the sandbox's context), which made this suite take minutes.
 */
class ZooWorker {
  readonly #w = new Worker(`
    const { parentPort } = require('worker_threads');
    const zoo = require(${JSON.stringify(path.join(__dirname, '..', '..', 'bench', 'zoo_values.cjs'))});
    parentPort.on('message', ({ id, op, arg }) => {
      if (op === 'state') {
        const out = arg.map(([spec, kind]) => zoo.tensorValues(spec, kind));
        parentPort.postMessage({ id, out }, out.map((v) => v.buffer));
      } else {
        parentPort.postMessage({ id, out: arg.map((v) => zoo.projectNorm(v)) });
      }
    });`, { eval: true });
  #next = 0;
  #call<T>(op: string, arg: unknown): Promise<T> {
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      const on = (m: { id: number; out: T }): void => {
        if (m.id !== id) return;
        this.#w.off('message', on);
        resolve(m.out);
      };
      this.#w.on('message', on);
      this.#w.once('error', reject);
      this.#w.postMessage({ id, op, arg });
    });
  }
  async state(arch: Parameters<typeof stateDictTensors>[0]): Promise<Map<string, Float32Array | BigInt64Array>> {
    const kinds = zoo.zooKinds(arch);
    const specs = stateDictTensors(arch).map((t) => [{ name: t.name, shape: [...t.shape] }, kinds.get(t.name)] as const);
    const values = await this.#call<(Float32Array | BigInt64Array)[]>('state', specs);
    return new Map(specs.map(([spec], i) => [spec.name, values[i]]));
  }
  projectNorm(vs: Float32Array[]): Promise<[number, number][]> {
    return this.#call('project', vs);
  }
  terminate(): Promise<number> {
    return this.#w.terminate();
  }
}

const FIXTURE = path.join(__dirname, '..', 'fixtures', 'backbone-zoo.json');
const fixture = JSON.parse(fs.readFileSync(FIXTURE, 'utf8')) as Fixture;
const N = fixture.batch;

function outputError(got: Float32Array, ref: number[]): number {
  const scale = ref.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
  let worst = 0;
  for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(got[i] - ref[i]) / (2e-3 * scale + 1e-5));
  return worst;
}

/**
 * Worst of |Δproj| / bound and |Δnorm| / bound (<= 1 passes) for one gradient, with
 *   bound_norm = max(5e-3·‖ref‖, 4·d_norm) + floor,  bound_proj = max(1e-2·‖ref‖, 4·d_proj) + 2·floor,
 * d = how far torch's own float32 run of the same model lands from the float64 reference for this
 * tensor (the fixture's f32_deviation: a correct float32 implementation, so its deviation measures the
 * tensor's conditioning), and floor = 1e-5 of the model's largest gradient norm for gradients that
 * are exactly 0 in the reference (a BatchNorm bias feeding a batch-statistics BatchNorm). An error
 * vector of norm b projects onto the random direction r with a spread of about b/√2, hence the
 * projection's bound of twice the norm's.
 */
function gradError([p, n]: [number, number], ref: [number, number], f32: [number, number] | undefined, floor: number): number {
  const [dp, dn] = f32 ?? [0, 0];
  const bn = Math.max(5e-3 * ref[1], 4 * dn) + floor;
  const bp = Math.max(1e-2 * ref[1], 4 * dp) + 2 * floor;
  return Math.max(Math.abs(p - ref[0]) / bp, Math.abs(n - ref[1]) / bn);
}

describe('second-batch backbones against the PyTorch reference (test/fixtures/backbone-zoo.json)', () => {
  it('covers every preset', () => {
    expect(Object.keys(fixture.models).sort()).toEqual([...ZOO_BACKBONE_NAMES].sort());
  });

  it.each([...ZOO_BACKBONE_NAMES])('%s: names, shapes and kinds of the state dict', (name) => {
    const arch = backboneArch(name as ZooBackboneName);
    const kinds = zoo.zooKinds(arch);
    const ours = stateDictTensors(arch).map((t) => `${t.name} [${t.shape.join(',')}] ${kinds.get(t.name)}`).sort();
    const theirs = fixture.models[name].tensors.map(([n, s, k]) => `${n} [${s.join(',')}] ${k}`).sort();
    expect(ours).toEqual(theirs);
  });

  let worker: ZooWorker;
  beforeAll(() => {
    worker = new ZooWorker();
  });
  afterAll(async () => {
    await worker.terminate();
  });

  it.each([...ZOO_BACKBONE_NAMES])('%s: eval and train outputs, dL/dx and every parameter gradient', async (name) => {
    const ref = fixture.models[name];
    const m = Backbone.create(name as ZooBackboneName, { seed: 3 });
    try {
      const arch = m.arch;
      await m.loadStateDict(await worker.state(arch));
      const E = arch.embeddingSize;
      const x = Tensor.from(zoo.inputX(N), [N, 3, 112, 112]);
      m.eval();
      const ye = (await (await m.forward(x)).toArray()) as Float32Array;
      m.train();
      const yt = (await (await m.forward(x)).toArray()) as Float32Array;
      const dx = await m.backward(Tensor.from(zoo.gradY(N, E), [N, E]), { inputGrad: true });
      const names: string[] = [];
      const grads: Float32Array[] = [(await (dx as Tensor).toArray()) as Float32Array];
      for (const p of await m.parameters()) {
        if (p.grad) {
          names.push(p.name);
          grads.push((await p.grad.toArray()) as Float32Array);
          p.grad.dispose();
        }
        p.value.dispose();
      }
      const pn = await worker.projectNorm(grads);
      const errors: Record<string, number> = {
        eval_y: outputError(ye, ref.eval_y),
        train_y: outputError(yt, ref.train_y),
        grad_x: gradError(pn[0], ref.grad_x, ref.f32_deviation.grad_x_abs, 0),
      };
      // every parameter gradient; the worst is reported
      const floor = 1e-5 * Math.max(...Object.values(ref.grads).map(([, n]) => n));
      expect([...names].sort()).toEqual(Object.keys(ref.grads).sort());
      let worstGrad = 0;
      let worstName = '';
      names.forEach((n, i) => {
        const e = gradError(pn[i + 1], ref.grads[n], ref.f32_deviation.grads_abs[n], floor);
        if (!(e <= worstGrad)) [worstGrad, worstName] = [e, n];
      });
      errors[`grad ${worstName}`] = worstGrad;
      for (const [what, e] of Object.entries(errors)) {
        if (!(e <= 1)) throw new Error(`${name}: ${what} is ${e.toFixed(2)}x its tolerance (${JSON.stringify(errors)})`);
      }
    } finally {
      m.dispose();
    }
  }, 400_000);

  // The published checkpoints use exactly the reference's state-dict keys (EdgeFace: `model.` prefix
  // and LoRaLin `linear1`/`linear2`; insightface ViT: arcface_torch's names): a state dict under those
  // keys, converted to safetensors, loads strictly with nothing missing or unexpected.
  it.each(['edgeface_s_gamma_05', 'if_vit_s'] as const)('%s: a checkpoint under the reference keys, as safetensors, loads directly', async (name) => {
    const ref = fixture.models[name];
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'facecuda-zoo-'));
    const m = Backbone.create(name, { seed: 4 });
    try {
      const values = await worker.state(m.arch);
      const file = path.join(dir, `${name}.safetensors`);
      const raw = new Map(ref.tensors.map(([key, shape]) => {
        const v = values.get(key) as Float32Array | BigInt64Array;
        const int64 = Object.prototype.toString.call(v) === '[object BigInt64Array]'; // another realm's array (the worker's)
        return [key, { dtype: int64 ? 'int64' : 'float32', shape, data: v }] as const;
      }));
      await writeSafetensors(file, raw);
      const { tensors } = await readSafetensors(file);
      const r = await m.loadStateDict(tensors, { strict: true });
      expect([r.missing, r.unexpected]).toEqual([[], []]);
      for (const t of tensors.values()) t.dispose();
      m.eval();
      const y = (await (await m.forward(Tensor.from(zoo.inputX(N), [N, 3, 112, 112]))).toArray()) as Float32Array;
      expect(outputError(y, ref.eval_y)).toBeLessThanOrEqual(1);
    } finally {
      m.dispose();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
