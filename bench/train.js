// Training benchmark: `npm run bench -- train [filter...] [--device cpu|cuda] [--quick] [--json f]`.
//
// CPU:
//   - data loader images/s (render or decode + flip/crop/jitter/erasing augment + normalize), with
//     1 worker and with every core's worth: SyntheticFaces (rendered) and JPEG files (sharp decode);
//   - training samples/s of one whole Trainer step (forward, ArcFace head, backward, clip_grad_norm 5,
//     SGD momentum 0.9 + weight decay) for the demo model (IResNet-18 at base width 16, 128-d) and
//     for r18 (full width, 512-d) at batch 64, 1 000 classes; FLOP/s against 3·2·MACs per sample.
// CUDA (--device cuda): r50 + ArcFace (93 431 classes, s 64, m 0.5) training samples/s at batch 128
//   and 256 with mixed precision, bf16 and fp16 (ours: precision 'bf16' / 'fp16' with GradScaler;
//   peer: arcface_torch-style step under autocast bf16 / fp16 + torch GradScaler, channels_last,
//   bench/peers/torch_train.py) in the same run, and the ratio.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const h = require('./harness');

async function trainStep(fc, { network, baseWidth, embedding, classes, batch, device, precision, size = 112 }) {
  const model = fc.IResNet.create(network, { embeddingSize: embedding, device, seed: 1, inputSize: size, ...(baseWidth ? { baseWidth } : {}), ...(precision ? { precision } : {}) });
  const head = new fc.ArcFaceHead({ embeddingSize: embedding, numClasses: classes, device, seed: 1, ...(precision && precision !== 'fp32' ? { precision } : {}) });
  const params = await model.parameters();
  const hp = await head.parameters();
  const opt = new fc.SGD([...fc.paramGroups(params), { params: fc.headParams(hp) }], { lr: 0.1, momentum: 0.9, weightDecay: 5e-4 });
  const x = fc.Tensor.from(h.randomF32(batch * 3 * size * size, 3), [batch, 3, size, size], { device });
  const labels = Int32Array.from({ length: batch }, (_, i) => (i * 7919) % classes);
  // fp16: dynamic loss scaling as arcface_torch (scale the loss, unscale, clip, step, update).
  const scaler = precision === 'fp16' ? new fc.GradScaler() : null;
  const step = async () => {
    const emb = await model.forward(x);
    await head.forward(emb, labels);
    const { gradEmbeddings } = await head.backward(scaler ? { lossScale: scaler.scale } : undefined);
    await model.zeroGrad();
    await model.backward(gradEmbeddings);
    const overflow = scaler ? (await opt.scaleGradients(1 / scaler.scale)).skipped : false;
    if (scaler) scaler.update(overflow);
    if (!overflow) {
      await fc.clipGradNorm(params, 5);
      await opt.step({ lr: 0.01 });
    }
    emb.dispose();
    if (device !== 'cpu') await fc.system.synchronize(device);
  };
  const dispose = () => {
    for (const p of params) {
      p.value.dispose();
      if (p.grad) p.grad.dispose();
    }
    x.dispose();
    model.dispose();
    head.dispose();
  };
  return { step, dispose, macs: fc.macs(model.arch) };
}

async function runCpu(fc, info, opts) {
  const records = [];
  const rows = [];
  const cores = info.cpu.logicalCores;
  const peak = await fc.system.fmaPeak({ threads: info.cpu.threads, seconds: 0.5 });
  h.printHeader('train: data loader and CPU training step', info, [
    'timing  loader: images/s over 20 batches of 64 after 2 (workers started); step: median of >= 3 steps after 1',
    `floor   3·2·MACs per sample at the measured FMA peak ${h.fixed(peak / 1e9)} GFLOP/s`,
  ]);
  // Filters other than the benchmark's own name select rows ('loader', 'demo', 'r18').
  const filters = (opts.filter || []).filter((f) => !'train'.includes(f));
  // Loader: synthetic (render) and JPEG folder (decode).
  if (h.selected('loader', filters)) {
    const synth = new fc.SyntheticFaces({ seed: 1, identities: 64, samplesPerIdentity: 32 });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'facecuda-bench-train-'));
    try {
      const sharp = require('sharp');
      for (let k = 0; k < 16; k++) {
        fs.mkdirSync(path.join(dir, `id${k}`));
        for (let j = 0; j < 16; j++) {
          const img = synth.render(k, j);
          await sharp(Buffer.from(img.data), { raw: { width: img.width, height: img.height, channels: 3 } }).jpeg({ quality: 95 }).toFile(path.join(dir, `id${k}`, `${j}.jpg`));
        }
      }
      const folder = await fc.ImageFolder.open(dir);
      const augment = { flip: 0.5, crop: { p: 0.5 }, colorJitter: { p: 0.5 }, erase: { p: 0.3 } };
      for (const [name, source] of [['synthetic', synth], ['jpeg', folder]]) {
        for (const workers of [...new Set([1, Math.max(1, cores)])]) {
          let r;
          try {
            r = await fc.measureLoader(source, { batchSize: 64, workers, augment }, { batches: opts.quick ? 5 : 20, warmup: 2 });
          } catch (e) {
            r = await fc.measureLoader(source, { batchSize: 64, workers }, { batches: opts.quick ? 5 : 20, warmup: 2 });
            r.note = `augment options refused (${e.message.split('\n')[0]}); flip only`;
          }
          const rec = { shape: `loader-${name}-w${workers}`, imagesPerSecond: r.imagesPerSecond, workers, note: r.note || null };
          records.push(rec);
          rows.push([rec.shape, `${h.fixed(r.imagesPerSecond)} images/s`, '-', '-', r.note || '']);
        }
      }
      await folder.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
  const models = [
    { name: 'demo-r18w16-56px-b64', network: 'r18', baseWidth: 16, embedding: 128, classes: 256, batch: 64, size: 56 },
    { name: 'r18-b64', network: 'r18', embedding: 512, classes: 1000, batch: opts.quick ? 16 : 64 },
  ];
  for (const m of models) {
    if (!h.selected(m.name, filters)) continue;
    const t = await trainStep(fc, { ...m, device: 'cpu' });
    const r = await h.measure(t.step, { warmup: 1, minReps: 3, minSeconds: opts.quick ? 0.5 : 4 });
    const flops = 3 * 2 * t.macs * m.batch;
    const rec = { shape: m.name, batch: m.batch, samplesPerSecond: m.batch / r.median, medianSeconds: r.median, gflops: flops / r.median / 1e9, fractionOfPeak: flops / r.median / peak };
    records.push(rec);
    rows.push([m.name, `${h.fixed(rec.samplesPerSecond)} samples/s`, h.fixed(rec.gflops), h.pct(rec.fractionOfPeak), '']);
    t.dispose();
  }
  h.printTable(['shape', 'ours', 'GFLOP/s', 'of peak', 'note'], rows);
  return records;
}

async function runCuda(fc, info, opts) {
  if (!info.cuda.available) {
    process.stdout.write(`train: CUDA is not available (${info.cuda.reason}); nothing to run on cuda\n`);
    return [];
  }
  const device = 'cuda';
  const batches = opts.quick ? [128] : [128, 256];
  const classes = 93431;
  h.printHeader('train: r50 + ArcFace training step on CUDA (mixed precision) vs PyTorch', info, [
    'timing  median of >= 5 steps after 3, synchronized; peer: CUDA events',
  ]);
  const peer = h.runPeer(path.join(__dirname, 'peers', 'torch_train.py'), {
    device: 'cuda', warmup: 3, iters: opts.quick ? 5 : 10,
    cases: ['bf16', 'fp16'].flatMap((dtype) => batches.map((batch) => ({ network: 'r50', batch, classes, amp: true, dtype, cl: true }))),
  }, { requires: ['torch'], timeoutMs: 240_000 });
  const records = [];
  const rows = [];
  for (const [dtype, batch] of ['bf16', 'fp16'].flatMap((d) => batches.map((b) => [d, b]))) {
    let ours = null;
    let note = '';
    try {
      const t = await trainStep(fc, { network: 'r50', embedding: 512, classes, batch, device, precision: dtype });
      const r = await h.measure(t.step, { warmup: 3, minReps: 5, minSeconds: 2 });
      ours = batch / r.median;
      t.dispose();
    } catch (e) {
      note = `${e.code || ''} ${e.message.split('\n')[0]}`.trim();
    }
    const p = peer.results ? peer.results.find((x) => x.batch === batch && x.dtype === dtype) : null;
    const theirs = p && !p.error ? p.samplesPerSecond : null;
    const rec = { shape: `r50-arcface-b${batch}-${dtype}`, batch, samplesPerSecond: ours, torchSamplesPerSecond: theirs, ratio: ours && theirs ? ours / theirs : null, note: note || (peer.skipped ? peer.reason : p && p.error) || null };
    records.push(rec);
    rows.push([rec.shape, ours ? `${h.fixed(ours)} samples/s` : '-', theirs ? `${h.fixed(theirs)} samples/s` : '-', rec.ratio ? `${h.fixed(rec.ratio, 2)}x` : '-', rec.note || '']);
  }
  h.printTable(['shape', 'ours', 'pytorch', 'ours/torch', 'note'], rows);
  return records;
}

async function run(opts) {
  const fc = require('../dist/index.js');
  const info = await fc.system.info();
  return opts.device && opts.device !== 'cpu' ? runCuda(fc, info, opts) : runCpu(fc, info, opts);
}

module.exports = { run };
