// ONNX import of the second backbone batch: small-width PyTorch exports (test/fixtures/zoo-onnx,
// written by gen_zoo_onnx.py from the independent torch reference, formula weights, opset 17,
// dynamic batch) loaded with loadOnnx and run by facecuda, against onnxruntime-node running the
// same file on the same fresh random input. Embeddings must agree within 1e-4 of their largest
// magnitude. Each file is also checked for the layers its export form must become (the attention
// pattern one attention layer, GELU's Erf products one GELU, the TF "same" Pad a padded conv, …).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { Backbone, FacecudaError, loadOnnx, Tensor } from '../../lib';
import { parseOnnx } from '../../lib/onnx/import';
import { decodeOnnxModel, encodeOnnxModel } from '../../lib/onnx/proto';
import { translateOnnx } from '../../lib/onnx/translate';
import { maxRel, randomFloats, rng, runOnnxruntime, SEED } from '../helpers';

const DIR = path.join(__dirname, '..', 'fixtures', 'zoo-onnx');

/** Per fixture: layer kinds that must appear (op → count), and ones that must not. */
const EXPECT: Record<string, { has: Record<string, number>; not?: string[]; check?: (nodes: readonly Record<string, unknown>[]) => void }> = {
  mnv3_timm: { has: { hardswish: 8, hardsigmoid: 4, relu: 9, mul: 4, globalavgpool: 4, batchnorm1d: 1 } },
  mnv3_cava: { has: { prelu: 11, hardsigmoid: 4, relu: 4, mul: 4 } },
  effnet_timm: { has: { silu: 16, sigmoid: 5, mul: 5 } },
  effnet_cava: { has: { prelu: 11, sigmoid: 5, relu: 5 } },
  ghostfacenet: {
    has: { prelu: 14, concat: 10, hardsigmoid: 2 },
    not: ['linear'],
    check: (nodes) => {
      const keras = nodes.filter((n) => n.op === 'hardsigmoid').map((n) => n.form);
      expect(keras).toEqual(['keras', 'keras']);
      // TF "same" padding: the stride-2 convs pad (0, 1) (k 3) or (1, 2) (k 5) after the Pad is folded in
      const pads = nodes.filter((n) => n.asymmetricPadding).map((n) => (n.asymmetricPadding as number[]).join());
      expect(pads.length).toBeGreaterThan(0);
      expect(pads.every((p) => p === '0,1,0,1' || p === '1,2,1,2')).toBe(true);
    },
  },
  ghostnet: { has: { relu: 14, concat: 10, hardsigmoid: 2, linear: 1 }, check: (nodes) => expect(nodes.filter((n) => n.op === 'hardsigmoid').every((n) => n.form === 'torch')).toBe(true) },
  edgenext: {
    // the run-time Fourier table is recognised (§6.3) and imported as fourierposembed with its projection
    has: { xca: 3, gelu: 7, fourierposembed: 1, layerscale: 10, slice: 9 },
    not: ['attention', 'posembed'],
    // the permute → LN → permute sandwiches (stem, downsamples) become channels LayerNorms
    check: (nodes) => expect(nodes.filter((n) => n.op === 'layernorm' && n.layout === 'channels').length).toBe(4),
  },
  edgeface: { has: { xca: 3, gelu: 7, linear: 42, fourierposembed: 1 } },
  vit_timm: { has: { attention: 2, gelu: 2, prependtokens: 1, posembed: 1, tokenpool: 1 }, check: (nodes) => expect(nodes.find((n) => n.op === 'attention')?.scale).toBeCloseTo(1 / Math.sqrt(8), 6) },
  deit_distilled: { has: { attention: 2, average: 1, tokenpool: 2 }, check: (nodes) => expect(nodes.find((n) => n.op === 'prependtokens')?.count).toBe(2) },
  if_vit: { has: { attention: 2, relu6: 2, batchnorm1d: 2 }, not: ['prependtokens'], check: (nodes) => expect(nodes.find((n) => n.op === 'tokenpool')?.mode).toBe('flatten') },
};

describe('ONNX import of the second backbone batch (PyTorch exports) matches onnxruntime-node', () => {
  const r = rng(SEED ^ 0x200c);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'facecuda-zoo-onnx-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  for (const [name, want] of Object.entries(EXPECT)) {
    it(`${name}: loadOnnx vs onnxruntime on the same file and input`, async () => {
      const file = path.join(DIR, `${name}.onnx`);
      const model = await loadOnnx(file);
      expect(model.training).toBe(false);
      expect(model.arch.name.startsWith('onnx:')).toBe(true);
      const nodes = model.arch.nodes as unknown as readonly Record<string, unknown>[];
      const ops = new Map<string, number>();
      for (const n of nodes) ops.set(n.op as string, (ops.get(n.op as string) ?? 0) + 1);
      for (const [op, k] of Object.entries(want.has)) expect([op, ops.get(op) ?? 0]).toEqual([op, k]);
      for (const op of want.not ?? []) expect([op, ops.get(op) ?? 0]).toEqual([op, 0]);
      want.check?.(nodes);

      const N = 3;
      const x = randomFloats(N * 3 * 112 * 112, r);
      const ours = (await (await model.forward(Tensor.from(x, [N, 3, 112, 112]))).toArray()) as Float32Array;
      const theirs = runOnnxruntime(file, x, N, dir);
      expect(ours.length).toBe(N * 32);
      expect(maxRel(ours, theirs)).toBeLessThanOrEqual(1e-4);
      model.dispose();
    }, 60_000);
  }

  it('an imported graph saves with its graph and loads back bit-identical; it also trains (backward)', async () => {
    const model = await loadOnnx(path.join(DIR, 'edgeface.onnx'));
    const N = 2;
    const x = Tensor.from(randomFloats(N * 3 * 112 * 112, r), [N, 3, 112, 112]);
    const y = (await (await model.forward(x)).toArray()) as Float32Array;
    const file = path.join(dir, 'edgeface.safetensors');
    await model.save(file);
    const back = await Backbone.load(file);
    back.eval();
    const y2 = (await (await back.forward(x)).toArray()) as Float32Array;
    expect(Buffer.from(y2.buffer).equals(Buffer.from(y.buffer))).toBe(true);
    expect(back.parameterCount()).toBe(model.parameterCount());
    // training mode: forward, backward, every parameter gets a finite gradient
    back.train();
    const out = await back.forward(x);
    const g = Tensor.from(randomFloats(N * 32, r), [N, 32]);
    await back.backward(g);
    let nonzero = 0;
    for (const p of await back.parameters()) {
      if (!p.grad) continue;
      const v = (await p.grad.toArray()) as Float32Array;
      expect(v.every(Number.isFinite)).toBe(true);
      if (v.some((e) => e !== 0)) nonzero++;
    }
    expect(nonzero).toBeGreaterThan(50);
    out.dispose();
    model.dispose();
    back.dispose();
  }, 60_000);

  it('refuses an operator it does not import, naming the node and the operator', () => {
    const bytes = fs.readFileSync(path.join(DIR, 'vit_timm.onnx'));
    const proto = decodeOnnxModel(bytes, 'vit_timm.onnx');
    const k = proto.graph!.node.findIndex((n) => n.opType === 'Erf');
    proto.graph!.node[k].opType = 'Tan';
    const m = parseOnnx(encodeOnnxModel(proto), 'edited.onnx');
    let err: unknown;
    try {
      translateOnnx(m);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FacecudaError);
    expect((err as FacecudaError).code).toBe('NOT_IMPLEMENTED');
    expect((err as Error).message).toContain(`node ${k} '${proto.graph!.node[k].name}' (Tan)`);
    expect((err as Error).message).toContain("'Tan' is not an operator facecuda imports");
  });

  it('refuses a softmax over the wrong axis and an unknown element-wise form, saying what was expected', async () => {
    const proto = decodeOnnxModel(fs.readFileSync(path.join(DIR, 'if_vit.onnx')), 'if_vit.onnx');
    const sm = proto.graph!.node.find((n) => n.opType === 'Softmax')!;
    sm.attribute = sm.attribute.map((a) => (a.name === 'axis' ? { ...a, i: 2 } : a));
    await expect(loadOnnx(encodeOnnxModel(proto))).rejects.toMatchObject({ code: 'NOT_IMPLEMENTED', message: expect.stringContaining('Softmax is supported only over the last axis') });

    // ReLU6 = Clip(0, 6); Clip(0, 5) is no facecuda activation
    const p2 = decodeOnnxModel(fs.readFileSync(path.join(DIR, 'if_vit.onnx')), 'if_vit.onnx');
    const clip = p2.graph!.node.find((n) => n.opType === 'Clip')!;
    const maxName = clip.input[2];
    const holder = p2.graph!.node.find((n) => n.output[0] === maxName);
    const init = p2.graph!.initializer.find((t) => t.name === maxName);
    const t = holder ? holder.attribute[0].t! : init!;
    t.rawData = new Uint8Array(new Float32Array([5]).buffer);
    t.floatData = new Float32Array(0);
    await expect(loadOnnx(encodeOnnxModel(p2))).rejects.toMatchObject({ code: 'NOT_IMPLEMENTED', message: expect.stringMatching(/clip\(.*hi=5.*not one of facecuda's activations/) });
  });
});

// A full-size export of a preset imports AS that preset (its name, a checkpoint without the graph):
// exported here by bench/peers/torch_zoo_onnx.py from the independent torch reference with the formula
// weights, when a Python with torch is around (FACECUDA_PYTHON, python3 or /usr/bin/python3); skipped
// and said so otherwise.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const harness = require('../../bench/harness') as { runPeer(script: string, req: unknown, o: unknown): { skipped?: boolean; reason?: string; files?: Record<string, string>; errors?: Record<string, string> } };
// eslint-disable-next-line @typescript-eslint/no-require-imports
const zooValues = require('../../bench/zoo_values.cjs') as { zooState(arch: unknown, specs: unknown): Map<string, Float32Array | BigInt64Array>; inputX(n: number): Float32Array };

describe('a full-size PyTorch export of a preset is recognised as that preset', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'facecuda-zoo-preset-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const peer = harness.runPeer(path.join(__dirname, '..', '..', 'bench', 'peers', 'torch_zoo_onnx.py'),
    { models: ['edgeface_s_gamma_05'], outDir: dir, opset: 17 }, { requires: ['torch'], timeoutMs: 300_000 });
  const file = peer.files?.edgeface_s_gamma_05;
  if (!file) it(`is skipped: ${peer.reason ?? JSON.stringify(peer.errors)}`, () => expect(file).toBeUndefined());
  (file ? it : it.skip)('edgeface_s_gamma_05: imported as the preset, equal to Backbone.create with the same weights', async () => {
    const { stateDictTensors } = await import('../../lib/backbones/arch');
    const imported = await loadOnnx(file as string);
    const reference = Backbone.create('edgeface_s_gamma_05');
    try {
      expect(imported.name).toBe('edgeface_s_gamma_05');
      expect(imported.provenance).toContain('recognised as edgeface_s_gamma_05');
      await reference.loadStateDict(zooValues.zooState(reference.arch, stateDictTensors(reference.arch)));
      reference.eval();
      const x = Tensor.from(zooValues.inputX(2), [2, 3, 112, 112]);
      const a = (await (await imported.forward(x)).toArray()) as Float32Array;
      const b = (await (await reference.forward(x)).toArray()) as Float32Array;
      expect(maxRel(a, b)).toBeLessThan(1e-5);
      // a recognised preset saves without its graph and loads back by name
      const saved = path.join(dir, 'edgeface.safetensors');
      await imported.save(saved);
      const back = await Backbone.load(saved);
      expect(back.name).toBe('edgeface_s_gamma_05');
      back.dispose();
    } finally {
      imported.dispose();
      reference.dispose();
    }
  }, 300_000);
});
