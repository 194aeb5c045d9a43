// facecuda's backbones against onnxruntime-node, an independent engine, on the same weights:
//   1. our model (random weights and BatchNorm statistics, eval mode) exported to ONNX with the
//      BatchNorms folded, as insightface ships its models, then run by onnxruntime;
//   2. the same ONNX file unfolded, imported with readOnnx + recognizeOnnx into a fresh model.
// Embeddings must agree within 1e-4 of their largest magnitude (fp32 on both sides, different
// summation orders and, with folding, different rounding of the folded weights).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { Backbone, loadOnnx, readOnnx, recognizeOnnx, Tensor } from '../../lib';
import { archToOnnx } from '../../lib/onnx/export';
import { encodeOnnxModel } from '../../lib/onnx/proto';
import { maxRel, randomFloats, rng, runOnnxruntime, SEED } from '../helpers';

async function randomizeStatistics(model: Backbone, r: () => number): Promise<Map<string, Float32Array>> {
  // Every float tensor, BatchNorm statistics included, drawn fresh (the init's 0/1 statistics would
  // hide a wrong BatchNorm formula).
  const state = new Map<string, Float32Array>();
  for (const p of await model.parameters({ includeBuffers: true })) {
    if (p.value.dtype !== 'float32') continue;
    const n = p.value.shape.reduce((a, b) => a * b, 1);
    let v: Float32Array;
    if (p.name.endsWith('running_var')) v = Float32Array.from({ length: n }, () => 0.5 + r());
    else if (p.name.endsWith('running_mean')) v = randomFloats(n, r).map((x) => 0.1 * x);
    else if (p.name.endsWith('.weight') && p.value.rank === 1) v = Float32Array.from({ length: n }, () => 0.75 + 0.5 * r());
    else v = (await p.value.toArray()) as Float32Array;  // conv/linear weights: the seeded init
    state.set(p.name, v);
  }
  await model.loadStateDict(state, { strict: false });
  return state;
}

describe('backbones match onnxruntime-node on the same weights', () => {
  const r = rng(SEED ^ 0x0e11);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'facecuda-ort-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  for (const name of ['mbf', 'r18'] as const) {
    it(`${name}: folded export run by onnxruntime, and unfolded import`, async () => {
      const model = Backbone.create(name, { device: 'cpu', seed: 5 });
      model.eval();
      const state = await randomizeStatistics(model, r);
      const N = 2;
      const x = randomFloats(N * 3 * 112 * 112, r);
      const ours = (await (await model.forward(Tensor.from(x, [N, 3, 112, 112]))).toArray()) as Float32Array;
      expect(ours.length).toBe(N * 512);

      const file = path.join(dir, `${name}.onnx`);
      await fs.promises.writeFile(file, encodeOnnxModel(archToOnnx(model.arch, state).model));
      const theirs = runOnnxruntime(file, x, N, dir);
      expect(theirs.length).toBe(ours.length);
      expect(maxRel(ours, theirs)).toBeLessThanOrEqual(1e-4);

      // The unfolded file through our importer into a fresh model.
      const unfolded = path.join(dir, `${name}-unfolded.onnx`);
      await fs.promises.writeFile(unfolded, encodeOnnxModel(archToOnnx(model.arch, state, { foldBatchNorm: false }).model));
      const rec = recognizeOnnx(await readOnnx(unfolded));
      expect(rec.folded).toBe(false);
      expect(rec.arch.name).toBe(model.arch.name);
      const imported = Backbone.fromArch(rec.arch, { device: 'cpu' });
      imported.eval();
      const map = new Map<string, Float32Array>();
      for (const [k, v] of rec.tensors) map.set(k, v.data);
      await imported.loadStateDict(map, { strict: false });
      const again = (await (await imported.forward(Tensor.from(x, [N, 3, 112, 112]))).toArray()) as Float32Array;
      expect(maxRel(again, theirs)).toBeLessThanOrEqual(1e-4);

      // loadOnnx on the folded file: convolutions with biases, no BatchNorm2d pairs left.
      const loaded = await loadOnnx(file, { device: 'cpu' });
      expect(loaded.training).toBe(false);
      expect(loaded.arch.folds?.length).toBeGreaterThan(0);
      const viaLoad = (await (await loaded.forward(Tensor.from(x, [N, 3, 112, 112]))).toArray()) as Float32Array;
      expect(maxRel(viaLoad, theirs)).toBeLessThanOrEqual(1e-4);
      // save → load keeps the folded graph (it is not what the builder makes).
      const saved = path.join(dir, `${name}-folded.safetensors`);
      await loaded.save(saved);
      const back = await Backbone.load(saved);
      back.eval();
      const viaSaved = (await (await back.forward(Tensor.from(x, [N, 3, 112, 112]))).toArray()) as Float32Array;
      expect(Buffer.from(viaSaved.buffer).equals(Buffer.from(viaLoad.buffer))).toBe(true);
      // …and exporting the folded graph again writes Convs with their biases.
      const foldedState = new Map<string, Float32Array>();
      for (const p of await back.parameters({ includeBuffers: true })) {
        if (p.value.dtype === 'float32') foldedState.set(p.name, (await p.value.toArray()) as Float32Array);
      }
      const again2 = path.join(dir, `${name}-refolded.onnx`);
      await fs.promises.writeFile(again2, encodeOnnxModel(archToOnnx(back.arch, foldedState).model));
      expect(maxRel(runOnnxruntime(again2, x, N, dir), theirs)).toBeLessThanOrEqual(1e-4);
      model.dispose();
      imported.dispose();
      loaded.dispose();
      back.dispose();
    }, 120_000);
  }

  it('r18 packaged as insightface ships it: raw-pixel input with a Sub/Mul prefix, every BatchNorm folded (linear too)', async () => {
    const model = Backbone.create('r18', { device: 'cpu', seed: 9 });
    model.eval();
    const state = await randomizeStatistics(model, r);
    // insightface's packaging: the graph takes raw pixels and normalizes them itself (Sub, Mul).
    const proto = archToOnnx(model.arch, state, { foldLinearBatchNorm: true, inputNormalization: { mean: [127.5, 127.5, 127.5], std: [127.5, 127.5, 127.5] } }).model;
    const file = path.join(dir, 'r18-insightface.onnx');
    await fs.promises.writeFile(file, encodeOnnxModel(proto));
    const N = 3;
    const pixels = Float32Array.from({ length: N * 3 * 112 * 112 }, () => Math.floor(256 * r()));
    const theirs = runOnnxruntime(file, pixels, N, dir);

    const loaded = await loadOnnx(await fs.promises.readFile(file));
    expect(loaded.preprocessing.mean).toEqual([127.5, 127.5, 127.5]);
    // 1/fround(1/127.5): the Mul constant is stored as float32.
    for (const v of loaded.preprocessing.std) expect(v).toBeCloseTo(127.5, 4);
    expect(loaded.arch.folds?.some((f) => f.layer === 'fc' && f.batchNorm === 'features')).toBe(true);
    expect(loaded.arch.nodes.some((n) => n.op === 'batchnorm1d')).toBe(false);
    // Our forward takes the normalized input, as the model's preprocessing says.
    const pre = loaded.preprocessing;
    const plane = 112 * 112;
    const x = pixels.map((v, i) => {
      const c = Math.floor(i / plane) % 3;
      return (v - pre.mean[c]) / pre.std[c];
    });
    const ours = (await (await loaded.forward(Tensor.from(x, [N, 3, 112, 112]))).toArray()) as Float32Array;
    expect(maxRel(ours, theirs)).toBeLessThanOrEqual(1e-4);
    loaded.dispose();
    model.dispose();
  }, 120_000);
});
