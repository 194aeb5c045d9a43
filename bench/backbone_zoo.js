// Second-batch backbone benchmark (SPEC-BACKBONES): `npm run bench -- backbone_zoo [model-filter...] [--quick] [--json f]`.
//
// CPU inference (eval mode, BatchNorm folded, 112×112 → 512) of every preset at batch 1 and 32:
// median ms per face and achieved GFLOP/s against 2·MACs (arch.ts macs(), attention included), side
// by side with onnxruntime-node in the same run on the SAME model and weights: the independent PyTorch
// implementation of test/fixtures/gen_backbone_zoo_torch.py exported by torch.onnx.export
// (bench/peers/torch_zoo_onnx.py, opset 17, dynamic batch), both sides filled with the formula weights
// of bench/zoo_values.cjs. Each row also prints the largest difference between the two outputs
// relative to the largest output value (the parity of our executor with onnxruntime on that model),
// and the same for the torch export imported by facecuda's own ONNX importer (loadOnnx: `import
// parity`, the full-size check of lib/onnx/translate.ts).
// onnxruntime runs with as many intra-op threads as our pool. Then CPU training steps (forward +
// backward, batch 32) of the mobile models in samples/s.
//
// The peer needs a repository checkout and a Python with torch (FACECUDA_PYTHON, python3 or
// /usr/bin/python3); without it the rows print ours alone and say why. The section keeps to
// FACECUDA_BENCH_ZOO_SECONDS (default 1200 s; --quick: batch 1 of four models).
//
// --device cuda: training steps and inference at batch 128 against PyTorch on the same GPU (autocast,
// scaled_dot_product_attention for the ViTs; bench/peers/torch_zoo_gpu.py); see runCuda below
// (budget FACECUDA_BENCH_ZOO_SECONDS, default 150 s there).
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
  if (opts.device && opts.device !== 'cpu') return runCuda(fc, info, opts);
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
      // The same torch export imported by facecuda's ONNX importer (lib/onnx/translate.ts): its parity with onnxruntime.
      let imported = null;
      let importError = null;
      if (file) {
        try {
          imported = await fc.loadOnnx(file, { device: 'cpu' });
          process.stdout.write(`  ${name}: the torch export imports as '${imported.name}'\n`);
        } catch (e) {
          importError = `${e.code || ''} ${String(e.message).split('\n')[0]}`.slice(0, 200);
          process.stdout.write(`  ${name}: ONNX import failed: ${importError}\n`);
        }
      }
      const why = file ? null : peer.skipped ? peer.reason : (peer.errors && peer.errors[name]) || 'no ONNX file';
      try {
        for (const N of batches) {
          const x = zoo.inputX(N);
          const xt = fc.Tensor.from(x, [N, 3, 112, 112], { device: 'cpu' });
          // onnxruntime's intra-op threads spin for a while after its last run: let them go idle
          // before timing ours, so that neither side is timed against the other's busy threads.
          await new Promise((resolve) => setTimeout(resolve, 300));
          const ours = await h.measure(async () => {
            const y = await m.forward(xt);
            y.dispose();
          }, timing);
          const yOurs = await (await m.forward(xt)).toArray();
          xt.dispose();
          let theirs = null;
          let parity = null;
          let importParity = null;
          if (session) {
            const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', x, [N, 3, 112, 112]) };
            await new Promise((resolve) => setTimeout(resolve, 300));
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
            if (imported) {
              const xi = fc.Tensor.from(x, [N, 3, 112, 112], { device: 'cpu' });
              const yImp = await (await imported.forward(xi)).toArray();
              xi.dispose();
              let d2 = 0;
              for (let i = 0; i < yOrt.length; i++) d2 = Math.max(d2, Math.abs(yOrt[i] - yImp[i]));
              importParity = d2 / scale;
            }
          }
          const flops = 2 * macs * N;
          const rec = {
            shape: `${name}-b${N}`, model: name, batch: N, threads: T,
            msPerFace: (ours.median * 1e3) / N, medianSeconds: ours.median, spread: [ours.min, ours.max],
            gflops: flops / ours.median / 1e9, fractionOfPeak: flops / ours.median / peak,
            ortMsPerFace: theirs ? (theirs.median * 1e3) / N : null,
            speedupVsOrt: theirs ? theirs.median / ours.median : null,
            parityMaxRel: parity, importParityMaxRel: importParity, importedAs: imported ? imported.name : null, importError, ortSkipped: theirs ? null : why,
          };
          records.push(rec);
          rows.push([
            rec.shape, `${h.fixed(rec.msPerFace, 2)} ms`, h.fixed(rec.gflops), h.pct(rec.fractionOfPeak),
            theirs ? `${h.fixed(rec.ortMsPerFace, 2)} ms` : '-', theirs ? `${h.fixed(rec.speedupVsOrt, 2)}x` : '-',
            parity === null ? '-' : parity.toExponential(1),
            importParity === null ? '-' : importParity.toExponential(1),
          ]);
          process.stdout.write(`  ${rec.shape}: ${h.fixed(rec.msPerFace, 2)} ms/face` + (theirs ? `, onnxruntime ${h.fixed(rec.ortMsPerFace, 2)} ms/face (ours ${h.fixed(rec.speedupVsOrt, 2)}x), parity ${parity.toExponential(1)}` + (importParity === null ? '' : `, imported ONNX parity ${importParity.toExponential(1)}`) : `, onnxruntime skipped: ${why}`) + '\n');
        }
      } finally {
        m.dispose();
        if (imported) imported.dispose();
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
        rows.push([rec.shape, `${h.fixed(rec.samplesPerSecond, 1)} samples/s`, h.fixed(rec.gflops), h.pct(rec.fractionOfPeak), '-', '-', '-', '-']);
        process.stdout.write(`  ${rec.shape}: ${h.fixed(rec.samplesPerSecond, 1)} samples/s\n`);
        m.dispose();
        xt.dispose();
        g.dispose();
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  h.printTable(['shape', 'ours', 'GFLOP/s', 'of peak', 'onnxruntime', 'vs ort', 'parity', 'import parity'], rows);
  return records;
}


// #region CUDA: training samples/s and inference faces/s against PyTorch on the same GPU

const GPU_TRAIN = ['vit_s', 'mobilenetv3_large', 'efficientnet_b0', 'ghostfacenet_v1_1.3_1', 'edgeface_s_gamma_05', 'deit_s_distilled', 'if_vit_s'];
const GPU_BATCH = 128;
const CNN = /^(mobilenet|efficientnet|ghost)/;

/**
 * --device cuda: per model, a training step (forward + backward of a fixed dL/dy, no optimizer) of
 * the GPU_TRAIN models and an eval forward of every model, batch 128, ours at our fastest accepted
 * precision (bf16, else tf32, else fp32), PyTorch (bench/peers/torch_zoo_gpu.py: the independent
 * reference, autocast bf16 for training and fp16 for inference, SDPA for the ViTs, cudnn.benchmark,
 * NCHW and channels_last for the CNNs) in the same run; the ratio is against the peer's fastest variant.
 */
async function runCuda(fc, info, opts) {
  const bb = require('./backbone.js');
  const device = opts.device;
  if (!info.cuda.available) {
    process.stdout.write(`backbone_zoo: CUDA is not available (${info.cuda.reason}); nothing to run on ${device}\n`);
    return [];
  }
  const filters = (opts.filter || []).filter((f) => MODELS.some((m) => m.includes(f)));
  let models = opts.quick ? QUICK : MODELS;
  if (filters.length) models = models.filter((m) => h.selected(m, filters));
  // The goal rows first (training of ViT-S and the mobile models), so that a short budget keeps them.
  const rows = [
    ...GPU_TRAIN.filter((m) => models.includes(m)).map((m) => ({ model: m, mode: 'train' })),
    ...models.map((m) => ({ model: m, mode: 'infer' })),
  ];
  const budget = Number(process.env.FACECUDA_BENCH_ZOO_SECONDS || 150);
  const plan = opts.quick ? { warmup: 2, reps: 5 } : { warmup: 3, reps: 10 };
  const probe = await bb.probeOurs(fc, device);
  const pick = ['bf16', 'tf32', 'fp32'].map((p) => probe.accepted.find((a) => a.precision === p)).find(Boolean);
  const gpu = info.cuda.devices && info.cuda.devices[0] ? info.cuda.devices[0].name : device;
  // The peer first, in one process (torch starts once), with its share of the budget.
  const cases = [];
  for (const r of rows) {
    const variants = r.mode === 'train' ? ['amp_bf16'] : ['amp_fp16'];
    for (const v of variants) {
      cases.push({ model: r.model, mode: r.mode, batch: GPU_BATCH, variant: v });
      if (CNN.test(r.model)) cases.push({ model: r.model, mode: r.mode, batch: GPU_BATCH, variant: `${v}_cl` });
    }
  }
  const peerBudget = Math.max(30, 0.45 * budget);
  const peer = h.runPeer(path.join(__dirname, 'peers', 'torch_zoo_gpu.py'), { cases, ...plan, budgetSeconds: peerBudget },
    { requires: ['torch'], timeoutMs: (peerBudget + 120) * 1000 });
  const peerReason = peer.skipped ? peer.reason : peer.error || null;
  const peerResults = peerReason ? [] : peer.results || [];
  h.printHeader(`backbone_zoo: ${device} training and inference of the second backbone batch (batch ${GPU_BATCH}, 112×112 → 512)`, info, [
    `ours    ${pick ? `precision ${pick.label}` : `unavailable: ${probe.unavailable}`}; median of ${plan.reps} steps after ${plan.warmup} warm-up, each ended by a device synchronize`,
    peerReason ? `peer    PyTorch: skipped (${peerReason})`
      : `peer    PyTorch ${peer.torch} (CUDA ${peer.cuda}, cuDNN ${peer.cudnn}) on ${peer.device}: autocast bf16 (train) / fp16 (infer), ${peer.sdpa ? 'scaled_dot_product_attention' : 'explicit softmax attention (no SDPA in this torch)'}, fastest of NCHW/channels_last`,
  ]);
  const start = h.now();
  const left = () => budget - (h.now() - start);
  const records = [];
  const table = [];
  for (const r of rows) {
    const rec = { shape: `${r.model}-${r.mode}-b${GPU_BATCH}`, model: r.model, mode: r.mode, batch: GPU_BATCH, device, gpu, precision: pick ? pick.label : null };
    const theirs = peerResults.filter((p) => p.model === r.model && p.mode === r.mode && p.median).sort((a, b) => a.median - b.median)[0];
    if (theirs) Object.assign(rec, { peerVariant: theirs.variant, peerSeconds: theirs.median, peerPerSecond: GPU_BATCH / theirs.median, peerPeakBytes: theirs.peakBytes });
    if (!pick) rec.skipped = probe.unavailable;
    else if (left() < 5) rec.skipped = 'over the time budget';
    else {
      let m = null;
      let xt = null;
      let gt = null;
      try {
        m = fc.Backbone.create(r.model, { device, seed: 1, ...pick.options });
        if (r.mode === 'infer') m.eval();
        xt = fc.Tensor.from(h.randomF32(GPU_BATCH * 3 * 112 * 112, 7), [GPU_BATCH, 3, 112, 112], { device });
        gt = fc.Tensor.from(h.randomF32(GPU_BATCH * 512, 8), [GPU_BATCH, 512], { device });
        const t = await bb.timeOurs(fc, device, m, { mode: r.mode }, xt, gt, plan, left);
        if (t.skipped) rec.skipped = t.skipped;
        else {
          const flops = (r.mode === 'train' ? 3 : 1) * 2 * fc.macs(m.arch) * GPU_BATCH;
          Object.assign(rec, { seconds: t.median, perSecond: GPU_BATCH / t.median, spread: [t.min, t.max], peakBytes: t.peakBytes, tflops: flops / t.median / 1e12 });
          if (theirs) rec.speedupVsPeer = theirs.median / t.median;
        }
      } catch (e) {
        rec[bb.skipKind(e) ? 'skipped' : 'error'] = bb.errorText(e);
      } finally {
        if (xt) xt.dispose();
        if (gt) gt.dispose();
        if (m) m.dispose();
        await fc.system.emptyCache(device).catch(() => 0);
      }
    }
    records.push(rec);
    const unit = r.mode === 'train' ? 'samples/s' : 'faces/s';
    table.push([rec.shape, rec.perSecond ? `${h.fixed(rec.perSecond, 0)} ${unit}` : rec.skipped || rec.error || '-', rec.tflops ? h.fixed(rec.tflops, 1) : '-',
      theirs ? `${h.fixed(rec.peerPerSecond, 0)} ${unit} (${theirs.variant})` : '-', rec.speedupVsPeer ? `${h.fixed(rec.speedupVsPeer, 2)}x` : '-']);
    process.stdout.write(`  ${rec.shape}: ${rec.perSecond ? `${h.fixed(rec.perSecond, 0)} ${unit}` : rec.skipped || rec.error}` + (theirs ? `, PyTorch ${h.fixed(rec.peerPerSecond, 0)} ${unit}` : '') + '\n');
  }
  h.printTable(['shape', 'ours', 'TFLOP/s', 'PyTorch', 'vs PyTorch'], table);
  return records;
}

// #endregion

module.exports = { run };
