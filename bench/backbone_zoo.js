// Second-batch backbone benchmark (SPEC-BACKBONES): `npm run bench -- backbone_zoo [model-filter...] [--quick] [--json f]`.
//
// CPU inference (eval mode, BatchNorm folded, 112×112 → 512) of every preset at batch 1 and 32:
// median ms per face and achieved GFLOP/s against 2·MACs (arch.ts macs(), attention included), side
// by side with onnxruntime-node in the same run on the SAME model and weights: the independent PyTorch
// implementation of test/fixtures/gen_backbone_zoo_torch.py exported by torch.onnx.export
// (bench/peers/torch_zoo_onnx.py, opset 17, dynamic batch), both sides filled with the formula weights
// of bench/zoo_values.cjs. Each row also prints the largest difference between the two outputs
// relative to the largest output value (the parity of our executor with onnxruntime on that model).
// onnxruntime runs with as many intra-op threads as our pool. Then CPU training steps (forward +
// backward, batch 32) of the mobile models in samples/s.
//
// The peer needs a repository checkout and a Python with torch (FACECUDA_PYTHON, python3 or
// /usr/bin/python3); without it the rows print ours alone and say why. The section keeps to
// FACECUDA_BENCH_ZOO_SECONDS (default 1200 s; --quick: batch 1 of four models).
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const h = require('./harness');
const zoo = require('./zoo_values.cjs');

const MODELS = [
  'mobilenetv3_large', 'mobilenetv3_large_cavaface', 'efficientnet_b0', 'efficientnet_b0_cavaface',
  'ghostfacenet_v1_1.3_1', 'ghostnet_1.0_gdc', 'edgenext_small', 'edgeface_s_gamma_05',
  'vit_s', 'deit_s_distilled', 'vit_b', 'deit_s', 'if_vit_s', 'if_vit_b',
];
const QUICK = ['mobilenetv3_large', 'ghostfacenet_v1_1.3_1', 'edgeface_s_gamma_05', 'vit_s'];
const TRAIN = ['mobilenetv3_large', 'efficientnet_b0', 'ghostfacenet_v1_1.3_1', 'edgeface_s_gamma_05'];

function loadOrt() {
  try {
    return { ort: require('onnxruntime-node') };
  } catch (e) {
    return { reason: `onnxruntime-node is not installed (${e.message.split('\n')[0]})` };
  }
}

async function loadFormulaWeights(fc, m) {
  const { stateDictTensors } = require('../dist/backbones/arch.js');
  await m.loadStateDict(zoo.zooState(m.arch, stateDictTensors(m.arch)));
}

async function run(opts) {
  const fc = require('../dist/index.js');
  const info = await fc.system.info();
  if (opts.device && opts.device !== 'cpu') {
    process.stdout.write('backbone_zoo: CPU only for now (the GPU rows of the second batch are not written yet)\n');
    return [];
  }
  const filters = (opts.filter || []).filter((f) => MODELS.some((m) => m.includes(f)));
  let models = opts.quick ? QUICK : MODELS;
  if (filters.length) models = models.filter((m) => h.selected(m, filters));
  const batches = opts.quick ? [1] : [1, 32];
  const budget = Number(process.env.FACECUDA_BENCH_ZOO_SECONDS || 1200);
  const T = info.cpu.threads;
  const peak = await fc.system.fmaPeak({ threads: T, seconds: 0.5 });
  const timing = opts.quick ? { warmup: 1, minReps: 3, minSeconds: 0.5 } : { warmup: 1, minReps: 3, minSeconds: 2 };
  const { ort, reason: ortReason } = loadOrt();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'facecuda-zoo-'));
  let peer = { skipped: true, reason: ortReason };
  if (ort) {
    peer = h.runPeer(path.join(__dirname, 'peers', 'torch_zoo_onnx.py'), { models, outDir: dir, opset: 17 }, { requires: ['torch'], timeoutMs: 20 * 60 * 1000 });
  }
  h.printHeader('backbone_zoo: CPU inference of the second backbone batch (eval, 112×112 → 512)', info, [
    `timing  median of >= ${timing.minReps} batches and >= ${timing.minSeconds}s after ${timing.warmup} warm-up batch; budget ${budget}s`,
    `floor   2·MACs at the measured FMA peak: ${h.fixed(peak / 1e9)} GFLOP/s on ${T} threads`,
    peer.skipped
      ? `peer    onnxruntime-node: skipped (${peer.reason})`
      : `peer    onnxruntime-node ${ort.env?.versions?.common ?? ''} on torch ${peer.torch} exports (opset ${peer.opset}), same weights, ${T} intra-op threads, same run`,
  ]);
  const start = h.now();
  const rows = [];
  const records = [];
  try {
    for (const name of models) {
      if (h.now() - start > budget) {
        process.stdout.write(`  ${name}: skipped (over the ${budget}s budget)\n`);
        continue;
      }
      const m = fc.Backbone.create(name, { device: 'cpu', seed: 1 });
      await loadFormulaWeights(fc, m);
      m.eval();
      const macs = fc.macs(m.arch);
      const file = peer.files && peer.files[name];
      const session = file ? await ort.InferenceSession.create(file, { intraOpNumThreads: T, interOpNumThreads: 1 }) : null;
      const why = file ? null : peer.skipped ? peer.reason : (peer.errors && peer.errors[name]) || 'no ONNX file';
      try {
        for (const N of batches) {
          const x = zoo.inputX(N);
          const xt = fc.Tensor.from(x, [N, 3, 112, 112], { device: 'cpu' });
          const ours = await h.measure(async () => {
            const y = await m.forward(xt);
            y.dispose();
          }, timing);
          const yOurs = await (await m.forward(xt)).toArray();
          xt.dispose();
          let theirs = null;
          let parity = null;
          if (session) {
            const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', x, [N, 3, 112, 112]) };
            theirs = await h.measure(async () => {
              await session.run(feeds);
            }, timing);
            const out = await session.run(feeds);
            const yOrt = out[session.outputNames[0]].data;
            let scale = 0;
            let diff = 0;
            for (let i = 0; i < yOrt.length; i++) {
              scale = Math.max(scale, Math.abs(yOrt[i]));
              diff = Math.max(diff, Math.abs(yOrt[i] - yOurs[i]));
            }
            parity = diff / scale;
          }
          const flops = 2 * macs * N;
          const rec = {
            shape: `${name}-b${N}`, model: name, batch: N, threads: T,
            msPerFace: (ours.median * 1e3) / N, medianSeconds: ours.median, spread: [ours.min, ours.max],
            gflops: flops / ours.median / 1e9, fractionOfPeak: flops / ours.median / peak,
            ortMsPerFace: theirs ? (theirs.median * 1e3) / N : null,
            speedupVsOrt: theirs ? theirs.median / ours.median : null,
            parityMaxRel: parity, ortSkipped: theirs ? null : why,
          };
          records.push(rec);
          rows.push([
            rec.shape, `${h.fixed(rec.msPerFace, 2)} ms`, h.fixed(rec.gflops), h.pct(rec.fractionOfPeak),
            theirs ? `${h.fixed(rec.ortMsPerFace, 2)} ms` : '-', theirs ? `${h.fixed(rec.speedupVsOrt, 2)}x` : '-',
            parity === null ? '-' : parity.toExponential(1),
          ]);
          process.stdout.write(`  ${rec.shape}: ${h.fixed(rec.msPerFace, 2)} ms/face` + (theirs ? `, onnxruntime ${h.fixed(rec.ortMsPerFace, 2)} ms/face (ours ${h.fixed(rec.speedupVsOrt, 2)}x), parity ${parity.toExponential(1)}` : `, onnxruntime skipped: ${why}`) + '\n');
        }
      } finally {
        m.dispose();
        if (session && session.release) await session.release();
      }
    }
    // Training steps of the mobile models (forward + backward of a fixed dL/dy, no optimizer).
    if (!opts.quick) {
      for (const name of TRAIN.filter((n) => models.includes(n))) {
        if (h.now() - start > budget) break;
        const N = 32;
        const m = fc.Backbone.create(name, { device: 'cpu', seed: 2 });
        await loadFormulaWeights(fc, m);
        m.train();
        const xt = fc.Tensor.from(zoo.inputX(N), [N, 3, 112, 112], { device: 'cpu' });
        const g = fc.Tensor.from(zoo.gradY(N, 512), [N, 512], { device: 'cpu' });
        const t = await h.measure(async () => {
          const y = await m.forward(xt);
          y.dispose();
          await m.backward(g);
        }, { warmup: 1, minReps: 3, minSeconds: 2 });
        const flops = 3 * 2 * fc.macs(m.arch) * N;
        const rec = { shape: `${name}-train-b${N}`, model: name, batch: N, samplesPerSecond: N / t.median, medianSeconds: t.median, gflops: flops / t.median / 1e9, fractionOfPeak: flops / t.median / peak };
        records.push(rec);
        rows.push([rec.shape, `${h.fixed(rec.samplesPerSecond, 1)} samples/s`, h.fixed(rec.gflops), h.pct(rec.fractionOfPeak), '-', '-', '-']);
        process.stdout.write(`  ${rec.shape}: ${h.fixed(rec.samplesPerSecond, 1)} samples/s\n`);
        m.dispose();
        xt.dispose();
        g.dispose();
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  h.printTable(['shape', 'ours', 'GFLOP/s', 'of peak', 'onnxruntime', 'vs ort', 'parity'], rows);
  return records;
}

module.exports = { run };
