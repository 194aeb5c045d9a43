// facecuda's backbones against onnxruntime-node, an independent engine, on the same weights:
//   1. our model (random weights and BatchNorm statistics, eval mode) exported to ONNX with the
//      BatchNorms folded, as insightface ships its models, then run by onnxruntime;
//   2. the same ONNX file unfolded, imported with readOnnx + recognizeOnnx into a fresh model.
// Embeddings must agree within 1e-4 of their largest magnitude (fp32 on both sides, different
// summation orders and, with folding, different rounding of the folded weights).
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { Backbone, readOnnx, recognizeOnnx, Tensor } from '../../lib';
import { archToOnnx } from '../../lib/onnx/export';
import { encodeOnnxModel } from '../../lib/onnx/proto';
import { randomFloats, rng, SEED } from '../helpers';

// onnxruntime runs in a child process: inside jest its addon's typed arrays come from another realm
// and fail onnxruntime-common's own `instanceof Float32Array` checks.
const RUNNER = `
const fs = require('fs');
const ort = require(${JSON.stringify(require.resolve('onnxruntime-node'))});
const [model, input, output, n] = process.argv.slice(1);
(async () => {
  const session = await ort.InferenceSession.create(model, { intraOpNumThreads: 2 });
  const b = fs.readFileSync(input);
  const x = new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
  const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', x, [Number(n), 3, 112, 112]) });
  const y = out[session.outputNames[0]].data;
  fs.writeFileSync(output, Buffer.from(y.buffer, y.byteOffset, y.byteLength));
})().catch((e) => { console.error(e); process.exit(2); });
`;

function runOnnxruntime(model: string, x: Float32Array, n: number, dir: string): Float32Array {
  const input = path.join(dir, 'x.bin');
  const output = path.join(dir, 'y.bin');
  fs.writeFileSync(input, Buffer.from(x.buffer, x.byteOffset, x.byteLength));
  const r = spawnSync(process.execPath, ['-e', RUNNER, model, input, output, String(n)], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`onnxruntime failed (${r.status}): ${r.stderr}`);
  const b = fs.readFileSync(output);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

function maxRel(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let m = 1e-30;
  let e = 0;
  for (let i = 0; i < want.length; i++) {
    m = Math.max(m, Math.abs(want[i]));
    e = Math.max(e, Math.abs(got[i] - want[i]));
  }
  return e / m;
}

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
      model.dispose();
      imported.dispose();
    }, 120_000);
  }
});
