// Backbone benchmark: `npm run bench -- backbone [shape-filter...] [--device cpu|cuda] [--quick] [--json f]`.
//
// --device cuda (see the CUDA region below): IResNet-50 and -100 training steps (forward + backward of
// a fixed random dL/dy, no optimizer) at batch 128 and 256, and eval inference at batch 256, for every
// precision Backbone.create accepts (fp32, tf32, bf16; without a `precision` option, the default):
// median ms, samples/s, achieved TFLOP/s against 3·2·MACs·N (training) or 2·MACs·N (inference), MACs
// from arch.ts macs(), and the fraction of the dense datasheet peak of the precision; beside each row
// PyTorch eager on the same GPU (bench/peers/torch_backbone.py, an independent IResNet: strict fp32,
// TF32, autocast bf16 for training / fp16 for inference, NCHW or channels_last, the faster) and the
// ratio ours/torch in samples/s. Rows that throw NOT_IMPLEMENTED or run out of memory are skipped
// with the reason; the section keeps to FACECUDA_BENCH_BACKBONE_SECONDS (default 120 s, 60 with
// --quick), the peer included. Without CUDA it prints why and returns no rows.
//
// CPU:
// Inference (eval mode, BatchNorm folded) of IResNet-50 and MobileFaceNet at batch 1 and 32 on
// 112×112 inputs, plus r50 at batch 32 with precision 'bf16' (against the same fp32 onnxruntime): median
// ms per face, achieved GFLOP/s against 2·MACs (conv + fc) and the fraction of the measured FMA
// peak, side by side with onnxruntime-node running the same weights in the same run (our model
// exported to ONNX with BatchNorm folded, as insightface ships its models; onnxruntime with as many
// intra-op threads as our pool). Then one r18 training step (forward + backward, batch 32) in
// samples/s. The issue quotes onnxruntime (Python, 2 threads) at 52.7 ms/face for r50 at batch 32
// and 57.5 ms at batch 1 on this machine class; those are printed for reference, never as measured.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const h = require('./harness');

const SHAPES = [
  { name: 'r50-b1', model: 'r50', N: 1 },
  { name: 'r50-b32', model: 'r50', N: 32 },
  // bf16 GEMM operands (fp32 accumulation and activations): the issue's stretch goal, 1.5x onnxruntime fp32.
  { name: 'r50-b32-bf16', model: 'r50', N: 32, precision: 'bf16' },
  { name: 'mbf-b1', model: 'mbf', N: 1 },
  { name: 'mbf-b32', model: 'mbf', N: 32 },
];
const QUOTED = { 'r50-b32': 52.7, 'r50-b1': 57.5 };

function loadOrt() {
  try {
    return { ort: require('onnxruntime-node') };
  } catch (e) {
    return { reason: `onnxruntime-node is not installed (${e.message.split('\n')[0]})` };
  }
}

async function run(opts) {
  const fc = require('../dist/index.js');
  const { archToOnnx } = require('../dist/onnx/export.js');
  const { encodeOnnxModel } = require('../dist/onnx/proto.js');
  const info = await fc.system.info();
  if (opts.device && opts.device !== 'cpu') return runCuda(fc, info, opts);
  let shapes = SHAPES.filter((s) => !opts.quick || s.N === 1);
  const filters = (opts.filter || []).filter((f) => SHAPES.some((s) => s.name.includes(f)));
  if (filters.length) shapes = shapes.filter((s) => h.selected(s.name, filters));
  const T = info.cpu.threads;
  const peak = await fc.system.fmaPeak({ threads: T, seconds: 0.5 });
  const { ort, reason } = loadOrt();
  const timing = opts.quick ? { warmup: 1, minReps: 3, minSeconds: 0.5 } : { warmup: 2, minReps: 5, minSeconds: 3 };
  h.printHeader('backbone: CPU inference (eval, 112×112) and an r18 training step', info, [
    `timing  median of >= ${timing.minReps} batches and >= ${timing.minSeconds}s after ${timing.warmup} warm-up batches`,
    `floor   2·MACs (conv + fc) at the measured FMA peak: ${h.fixed(peak / 1e9)} GFLOP/s on ${T} threads`,
    ort ? `peer    onnxruntime-node (same weights, BN folded, ${T} intra-op threads), same run` : `peer    onnxruntime-node: skipped (${reason})`,
  ]);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'facecuda-bench-'));
  const rows = [];
  const records = [];
  const models = new Map();
  try {
    for (const s of shapes) {
      const key = `${s.model}/${s.precision || 'fp32'}`;
      if (!models.has(key)) {
        // The same seed gives the same weights at every precision; onnxruntime runs them in fp32.
        const m = fc.Backbone.create(s.model, { device: 'cpu', seed: 1, ...(s.precision ? { precision: s.precision } : {}) });
        m.eval();
        const state = new Map();
        for (const p of await m.parameters({ includeBuffers: true })) {
          if (p.value.dtype === 'float32') state.set(p.name, await p.value.toArray());
          // Live views of the weights make every eval forward fold BatchNorm again (model.h).
          p.value.dispose();
          if (p.grad) p.grad.dispose();
        }
        const file = path.join(dir, `${s.model}.onnx`);
        fs.writeFileSync(file, encodeOnnxModel(archToOnnx(m.arch, state).model));
        const session = ort ? await ort.InferenceSession.create(file, { intraOpNumThreads: T, interOpNumThreads: 1 }) : null;
        models.set(key, { m, session, macs: fc.macs(m.arch) });
      }
      const { m, session, macs } = models.get(key);
      const x = h.randomF32(s.N * 3 * 112 * 112, 11 + s.N);
      const xt = fc.Tensor.from(x, [s.N, 3, 112, 112], { device: 'cpu' });
      const ours = await h.measure(async () => {
        const y = await m.forward(xt);
        y.dispose();
      }, timing);
      let peer = null;
      if (session) {
        const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', x, [s.N, 3, 112, 112]) };
        peer = await h.measure(async () => {
          await session.run(feeds);
        }, timing);
      }
      xt.dispose();
      const flops = 2 * macs * s.N;
      const rec = {
        shape: s.name, model: s.model, batch: s.N, threads: T, precision: s.precision || 'fp32',
        msPerFace: (ours.median * 1e3) / s.N, medianSeconds: ours.median,
        gflops: flops / ours.median / 1e9, fractionOfPeak: flops / ours.median / peak,
        ortMsPerFace: peer ? (peer.median * 1e3) / s.N : null,
        speedupVsOrt: peer ? peer.median / ours.median : null,
        ortSkipped: peer ? null : reason,
        quotedOrtMsPerFace: QUOTED[s.name] ?? null,
      };
      records.push(rec);
      rows.push([
        s.name, `${h.fixed(rec.msPerFace, 2)} ms`, h.fixed(rec.gflops), h.pct(rec.fractionOfPeak),
        peer ? `${h.fixed(rec.ortMsPerFace, 2)} ms` : '-', peer ? `${h.fixed(rec.speedupVsOrt, 2)}x` : '-',
        QUOTED[s.name] ? `${QUOTED[s.name]} ms` : '-',
      ]);
      process.stdout.write(`  ${s.name}: ${h.fixed(rec.msPerFace, 2)} ms/face` + (peer ? `, onnxruntime ${h.fixed(rec.ortMsPerFace, 2)} ms/face` : '') + '\n');
    }
    // One r18 training step at batch 32.
    if (!filters.length || filters.some((f) => 'r18-train-b32'.includes(f))) {
      const m = fc.Backbone.create('r18', { device: 'cpu', seed: 2 });
      m.train();
      const N = opts.quick ? 8 : 32;
      const xt = fc.Tensor.from(h.randomF32(N * 3 * 112 * 112, 5), [N, 3, 112, 112], { device: 'cpu' });
      const g = fc.Tensor.from(h.randomF32(N * 512, 6), [N, 512], { device: 'cpu' });
      const t = await h.measure(async () => {
        const y = await m.forward(xt);
        y.dispose();
        await m.backward(g);
      }, { warmup: 1, minReps: 3, minSeconds: opts.quick ? 0.5 : 3 });
      const flops = 3 * 2 * fc.macs(m.arch) * N;
      const rec = { shape: `r18-train-b${N}`, model: 'r18', batch: N, samplesPerSecond: N / t.median, medianSeconds: t.median, gflops: flops / t.median / 1e9, fractionOfPeak: flops / t.median / peak };
      records.push(rec);
      rows.push([rec.shape, `${h.fixed(rec.samplesPerSecond, 2)} samples/s`, h.fixed(rec.gflops), h.pct(rec.fractionOfPeak), '-', '-', '-']);
      m.dispose();
      xt.dispose();
      g.dispose();
    }
  } finally {
    for (const { m } of models.values()) m.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  h.printTable(['shape', 'ours', 'GFLOP/s', 'of peak', 'onnxruntime', 'vs ort', 'ort quoted'], rows);
  return records;
}

// #region CUDA: r50 / r100 training steps and batch-256 inference, side by side with PyTorch

const CUDA_ROWS = [
  { name: 'r50-train-b128', model: 'r50', mode: 'train', N: 128 },
  { name: 'r50-train-b256', model: 'r50', mode: 'train', N: 256 },
  { name: 'r100-train-b128', model: 'r100', mode: 'train', N: 128 },
  { name: 'r100-train-b256', model: 'r100', mode: 'train', N: 256 },
  { name: 'r50-infer-b256', model: 'r50', mode: 'infer', N: 256 },
  { name: 'r100-infer-b256', model: 'r100', mode: 'infer', N: 256 },
];
const CUDA_QUICK = new Set(['r50-train-b128', 'r50-infer-b256']);
// Our precisions, in the order they run; each is tried as `precision` of Backbone.create and left out
// when the model rejects it (fp32 then runs without the option: the model's default).
const OUR_PRECISIONS = ['fp32', 'tf32', 'bf16'];
// The peer's variants (bench/peers/torch_backbone.py) that each of our precisions is compared with;
// the ratio is against the fastest of them that ran. Mixed precision: autocast bf16 for training (NCHW
// and channels_last), fp16 for inference (autocast and .half(), both channels_last).
const PEER_VARIANTS = {
  train: { fp32: ['fp32'], tf32: ['tf32'], bf16: ['amp_bf16', 'amp_bf16_cl'] },
  infer: { fp32: ['fp32'], tf32: ['tf32'], bf16: ['amp_fp16_cl', 'half_cl'] },
};

/** Dense datasheet peaks (PERF-ANCHORS.md §0.1) of the GEMM/conv precision, FLOP/s, by GPU name. */
function datasheetPeak(gpu) {
  const n = String(gpu || '');
  if (/H100.*PCIe/i.test(n)) return { name: 'H100 PCIe', fp32: 51.2e12, tf32: 378e12, bf16: 756e12 };
  if (/H100|H200|H800/i.test(n)) return { name: 'H100/H200 SXM', fp32: 66.9e12, tf32: 494.7e12, bf16: 989.4e12 };
  if (/A100/i.test(n)) return { name: 'A100', fp32: 19.5e12, tf32: 156e12, bf16: 312e12 };
  return null;
}

/** The peak class of a peer variant: strict fp32, TF32, or 16-bit tensor cores. */
function peerPrecision(variant) {
  const base = variant.replace(/_cl$/, '');
  return base === 'fp32' ? 'fp32' : base === 'tf32' ? 'tf32' : 'bf16';
}

function errorText(e) {
  const msg = String((e && e.message) || e).split('\n')[0];
  return `${e && e.code ? `${e.code}: ` : ''}${msg}`.slice(0, 240);
}

/** Why a row is skipped rather than failed: the executor is missing, or the device is full. */
function skipKind(e) {
  const code = e && e.code;
  if (code === 'NOT_IMPLEMENTED') return 'not implemented';
  if (code === 'OUT_OF_MEMORY' || /out of memory/i.test(String(e && e.message))) return 'out of memory';
  return null;
}

/** An option the model does not know (or a value it refuses) for `precision`. */
function rejectsPrecision(e) {
  return e && (e.code === 'INVALID_ARGUMENT' || e.code === 'OUT_OF_RANGE') && /precision/.test(String(e.message));
}

/**
 * Which of our precisions Backbone.create accepts on `device` (probed with a small r18): returns
 * { unavailable, accepted: [{ precision, options, label }], rejected: { precision: reason } }, where
 * `unavailable` (the reason) is set when no precision can be created at all (NOT_IMPLEMENTED).
 */
async function probeOurs(fc, device) {
  const out = { unavailable: null, accepted: [], rejected: {} };
  const errors = {};
  const tryCreate = (key, options) => {
    try {
      fc.Backbone.create('r18', { device, seed: 1, ...options }).dispose();
      return true;
    } catch (e) {
      errors[key] = e;
      out.rejected[key] = errorText(e);
      return false;
    }
  };
  for (const precision of OUR_PRECISIONS) {
    if (tryCreate(precision, { precision })) out.accepted.push({ precision, options: { precision }, label: precision });
  }
  // No precision option at all: fp32 runs as the model's default.
  if (!out.accepted.some((a) => a.precision === 'fp32') && rejectsPrecision(errors.fp32) && tryCreate('default', {})) {
    out.accepted.unshift({ precision: 'fp32', options: {}, label: 'default' });
  }
  if (!out.accepted.length) {
    const e = Object.values(errors).find((x) => skipKind(x) === 'not implemented') || Object.values(errors)[0];
    out.unavailable = errorText(e);
  }
  await fc.system.emptyCache(device).catch(() => 0);
  return out;
}

/**
 * Times one row of ours: the first step (which builds plans and workspaces) on its own, then the
 * rest of `warmup`, then `reps` timed steps, each ended by system.synchronize. Fewer timed steps
 * when the time budget would not hold them (at least 3); skipped when even that would not fit.
 */
async function timeOurs(fc, device, model, row, xt, gt, plan, left) {
  const train = row.mode === 'train';
  const step = async () => {
    const y = await model.forward(xt);
    if (train) await model.backward(gt);
    await fc.system.synchronize(device);
    y.dispose();
  };
  let t = h.now();
  await step();
  const first = h.now() - t;
  if (first * (plan.warmup + 3) > left()) {
    return { skipped: `the first step took ${h.fixed(first, 2)} s; the time budget left (${h.fixed(left(), 0)} s) does not hold ${plan.warmup} warm-up + 3 timed steps` };
  }
  let last = first;
  for (let i = 1; i < plan.warmup; i++) {
    t = h.now();
    await step();
    last = h.now() - t;
  }
  const reps = Math.max(3, Math.min(plan.reps, Math.floor((left() - 2) / Math.max(last, 1e-4))));
  try {
    fc.system.resetPeakMemory(device);
  } catch {
    // statistics are optional
  }
  const times = [];
  for (let i = 0; i < reps; i++) {
    t = h.now();
    await step();
    times.push(h.now() - t);
  }
  let peakBytes = null;
  try {
    peakBytes = fc.system.memoryStats(device).peakAllocated;
  } catch {
    // statistics are optional
  }
  return { ...h.stats(times), first, peakBytes };
}

async function runCuda(fc, info, opts) {
  const device = opts.device;
  if (!info.cuda.available) {
    process.stdout.write(`backbone: CUDA is not available (${info.cuda.reason}); nothing to run on ${device}\n`);
    return [];
  }
  const records = [];
  try {
    return await runCudaRows(fc, info, opts, records);
  } catch (e) {
    // Never take the other benchmarks down: report what ran and why the rest did not.
    process.stdout.write(`backbone: the CUDA section stopped early: ${errorText(e)}\n`);
    records.push({ shape: 'cuda-section', device, error: errorText(e) });
    return records;
  }
}

async function runCudaRows(fc, info, opts, records) {
  const device = opts.device;
  const t0 = h.now();
  const budget = Number(process.env.FACECUDA_BENCH_BACKBONE_SECONDS) || (opts.quick ? 60 : 120);
  const left = () => budget - (h.now() - t0);
  let rows = CUDA_ROWS.filter((r) => !opts.quick || CUDA_QUICK.has(r.name));
  const filters = (opts.filter || []).filter((f) => CUDA_ROWS.some((r) => r.name.includes(f)));
  if (filters.length) rows = rows.filter((r) => h.selected(r.name, filters));
  const plan = opts.quick ? { warmup: 2, reps: 5 } : { warmup: 3, reps: 10 };
  const gpu = info.cuda.devices && info.cuda.devices[0] ? info.cuda.devices[0].name : device;
  const peak = datasheetPeak(gpu);
  const macs = new Map(['r50', 'r100'].map((m) => [m, fc.macs(fc.backboneArch(m))]));
  const params = new Map(['r50', 'r100'].map((m) => [m, fc.parameterCount(fc.backboneArch(m))]));
  const flopsOf = (row) => (row.mode === 'train' ? 3 : 1) * 2 * macs.get(row.model) * row.N;

  const ours = await probeOurs(fc, device);
  // The peer runs our precisions (tf32 only when our model takes it) and always mixed precision;
  // when ours does not run at all, its fp32 and mixed figures stand alone as the baseline.
  const ourPrecisions = ours.unavailable ? ['fp32', 'bf16'] : ours.accepted.map((a) => a.precision);
  const peerPrecisions = ourPrecisions.includes('bf16') || ours.unavailable ? ourPrecisions : [...ourPrecisions, 'bf16'];

  // The peer first, in one process (torch starts once), with its share of the budget.
  const peerScript = path.join(__dirname, 'peers', 'torch_backbone.py');
  const cases = [];
  for (const row of rows) {
    for (const p of peerPrecisions) {
      for (const variant of PEER_VARIANTS[row.mode][p]) cases.push({ model: row.model, mode: row.mode, batch: row.N, variant });
    }
  }
  const peerBudget = Math.max(20, 0.45 * budget);
  const peerRun = h.runPeer(peerScript, { device: 'cuda', cases, ...plan, inferWarmup: plan.warmup, inferReps: plan.reps, budgetSeconds: peerBudget },
    { requires: ['torch'], timeoutMs: (peerBudget + 90) * 1000 });
  const peerReason = peerRun.skipped ? peerRun.reason : peerRun.error || null;
  const peerResults = peerReason ? [] : peerRun.results || [];
  const peerFor = (row, precision) => {
    const got = PEER_VARIANTS[row.mode][precision]
      .map((v) => peerResults.find((r) => r.model === row.model && r.mode === row.mode && r.batch === row.N && r.variant === v))
      .filter(Boolean);
    const ran = got.filter((r) => !r.skipped).sort((a, b) => a.medianSeconds - b.medianSeconds);
    return { best: ran[0] || null, skipped: got.filter((r) => r.skipped).map((r) => `${r.variant}: ${r.skipped}`) };
  };

  const usesDefault = ours.accepted.some((a) => a.label === 'default');
  let precisionLine;
  if (ours.unavailable) precisionLine = `ours    skipped: ${ours.unavailable}`;
  else if (usesDefault) precisionLine = `ours    no precision option (${ours.rejected.fp32}): the fp32 rows run the model's default; no mixed-precision rows`;
  else {
    const rejected = Object.entries(ours.rejected);
    precisionLine = `ours    precision ${ours.accepted.map((a) => a.label).join(', ')}` + (rejected.length ? `; not accepted: ${rejected.map(([p, r]) => `${p} (${r})`).join('; ')}` : '');
  }
  h.printHeader(`backbone: IResNet training steps and inference on ${gpu} (112×112, embedding 512)`, info, [
    `rows    train = forward + backward of a fixed random dL/dy [N, 512] (no optimizer, no input grad); infer = eval forward`,
    `timing  median of ${plan.reps} steps after ${plan.warmup} warm-up steps, each synchronized (fewer when the ${budget} s budget, FACECUDA_BENCH_BACKBONE_SECONDS, runs short)`,
    `flops   train 3·2·MACs·N, infer 2·MACs·N (MACs = conv + fc from arch.ts macs(): r50 ${h.fixed(macs.get('r50') / 1e9, 3)} G, r100 ${h.fixed(macs.get('r100') / 1e9, 3)} G)`,
    peak
      ? `floor   dense datasheet peak of the precision (${peak.name}: fp32 ${peak.fp32 / 1e12}, tf32 ${peak.tf32 / 1e12}, bf16/fp16 ${peak.bf16 / 1e12} TFLOP/s)`
      : `floor   no datasheet peak known for ${gpu}: fractions not printed`,
    precisionLine,
    peerReason
      ? `peer    PyTorch: skipped (${peerReason})`
      : `peer    PyTorch ${peerRun.torch} (CUDA ${peerRun.cuda}, cuDNN ${peerRun.cudnn}) on ${peerRun.device}, eager, cudnn.benchmark; ` +
        'fp32 = allow_tf32 off, tf32 = on, mixed = autocast bf16 (train) / fp16 (infer) or .half(), fastest of NCHW and channels_last ' +
        `(${h.fixed(peerRun.seconds, 0)} s)`,
  ]);
  for (const m of ['r50', 'r100']) {
    const pr = peerResults.find((r) => r.model === m && r.params);
    if (pr && pr.params !== params.get(m)) process.stdout.write(`warning: the peer's ${m} has ${pr.params} parameters, ours ${params.get(m)}: not the same architecture\n`);
  }

  // Ours, one model per (architecture, precision), reused across its rows.
  const inputs = new Map();
  const input = (N) => {
    if (!inputs.has(N)) {
      inputs.set(N, {
        x: fc.Tensor.from(h.randomF32(N * 3 * 112 * 112, 11 + N), [N, 3, 112, 112], { device }),
        g: fc.Tensor.from(h.randomF32(N * 512, 13 + N), [N, 512], { device }),
      });
    }
    return inputs.get(N);
  };
  const measured = new Map();  // `${row.name}/${precision}` → result
  try {
    if (!ours.unavailable) {
      for (const modelName of ['r50', 'r100']) {
        const mine = rows.filter((r) => r.model === modelName);
        if (!mine.length) continue;
        for (const a of ours.accepted) {
          let model = null;
          for (const row of mine) {
            const key = `${row.name}/${a.precision}`;
            if (left() <= 0) {
              measured.set(key, { skipped: `time budget of ${budget} s spent` });
              continue;
            }
            try {
              if (!model) model = fc.Backbone.create(modelName, { device, seed: 1, ...a.options });
              if (row.mode === 'train') model.train();
              else model.eval();
              const { x, g } = input(row.N);
              const r = await timeOurs(fc, device, model, row, x, g, plan, left);
              measured.set(key, r);
              process.stdout.write(`  ${row.name} ${a.label}: ` + (r.skipped ? `skipped (${r.skipped})` : `${h.fixed(r.median * 1e3, 1)} ms, ${h.fixed(row.N / r.median, 0)} samples/s`) + '\n');
            } catch (e) {
              const kind = skipKind(e);
              measured.set(key, kind ? { skipped: `${kind}: ${errorText(e)}` } : { error: errorText(e) });
              process.stdout.write(`  ${row.name} ${a.label}: ${kind ? 'skipped' : 'error'} (${errorText(e)})\n`);
              if (model) model.dispose();  // start the next row from a fresh model
              model = null;
              await fc.system.emptyCache(device).catch(() => 0);
            }
          }
          if (model) model.dispose();
          await fc.system.emptyCache(device).catch(() => 0);
        }
      }
    }
  } finally {
    for (const { x, g } of inputs.values()) {
      x.dispose();
      g.dispose();
    }
  }

  // The table: one line per row and precision (ours), with the matching peer beside it.
  const table = [];
  // Mixed precision always gets its rows: the peer's figures stand even where ours did not run.
  const labels = ours.unavailable ? [{ precision: 'fp32', label: 'fp32' }, { precision: 'bf16', label: 'bf16' }] : [...ours.accepted];
  if (!labels.some((a) => a.precision === 'bf16')) labels.push({ precision: 'bf16', label: 'bf16', missing: `precision 'bf16' not accepted (${ours.rejected.bf16})` });
  for (const row of rows) {
    const flops = flopsOf(row);
    for (const a of labels) {
      const m = measured.get(`${row.name}/${a.precision}`) || { skipped: ours.unavailable || a.missing || 'not run' };
      const { best: p, skipped: peerSkipped } = peerReason ? { best: null, skipped: [] } : peerFor(row, a.precision);
      const ok = m && !m.skipped && !m.error;
      const peakOf = (prec) => (peak ? peak[prec] : null);
      const rec = {
        shape: row.name, model: row.model, mode: row.mode, batch: row.N, device, gpu, precision: a.precision,
        precisionOption: a.label === 'default' ? null : a.precision,
        flopsPerStep: flops, flopsCount: row.mode === 'train' ? '3·2·MACs·N' : '2·MACs·N',
        medianSeconds: ok ? m.median : null, minSeconds: ok ? m.min : null, maxSeconds: ok ? m.max : null, reps: ok ? m.reps : null,
        firstStepSeconds: ok ? m.first : null,
        samplesPerSecond: ok ? row.N / m.median : null,
        tflops: ok ? flops / m.median / 1e12 : null,
        fractionOfPeak: ok && peakOf(a.precision) ? flops / m.median / peakOf(a.precision) : null,
        peakBytes: ok ? m.peakBytes : null,
        skipped: m.skipped || null, error: m.error || null,
        torchVariant: p ? p.variant : null, torchVersion: peerReason ? null : peerRun.torch, torchCudnn: peerReason ? null : peerRun.cudnn,
        torchSeconds: p ? p.medianSeconds : null, torchSamplesPerSecond: p ? p.samplesPerSecond : null,
        torchTflops: p ? flops / p.medianSeconds / 1e12 : null,
        torchFractionOfPeak: p && peakOf(peerPrecision(p.variant)) ? flops / p.medianSeconds / peakOf(peerPrecision(p.variant)) : null,
        torchPeakBytes: p ? p.peakBytes : null,
        torchSkipped: peerReason || (p ? null : peerSkipped.join('; ') || 'not run'),
        ratioVsTorch: ok && p ? p.medianSeconds / m.median : null,  // ours samples/s ÷ peer samples/s
      };
      records.push(rec);
      table.push([
        row.name, a.label,
        ok ? `${h.fixed(m.median * 1e3, 1)} ms` : m.skipped ? 'skipped' : 'error',
        ok ? h.fixed(rec.samplesPerSecond, 0) : '-', ok ? h.fixed(rec.tflops, 1) : '-', ok ? h.pct(rec.fractionOfPeak) : '-',
        ok && m.peakBytes != null ? `${h.fixed(m.peakBytes / 2 ** 30, 1)} GiB` : '-',
        p ? p.variant : '-', p ? `${h.fixed(p.medianSeconds * 1e3, 1)} ms` : '-', p ? h.fixed(p.samplesPerSecond, 0) : '-',
        p ? h.fixed(rec.torchTflops, 1) : '-', p ? h.pct(rec.torchFractionOfPeak) : '-',
        p && p.peakBytes != null ? `${h.fixed(p.peakBytes / 2 ** 30, 1)} GiB` : '-',
        rec.ratioVsTorch != null ? `${h.fixed(rec.ratioVsTorch, 2)}x` : '-',
      ]);
    }
  }
  h.printTable(['shape', 'ours', 'median', 'samples/s', 'TFLOP/s', 'of floor', 'mem', 'torch', 'median', 'samples/s', 'TFLOP/s', 'of floor', 'mem', 'ours/torch'], table);
  if (ours.unavailable) process.stdout.write(`ours: every row skipped: ${ours.unavailable}\n`);
  for (const rec of records) {
    if (ours.unavailable) break;
    if (rec.skipped || rec.error) process.stdout.write(`${rec.shape} ${rec.precisionOption || 'default'}: ${rec.skipped ? `skipped: ${rec.skipped}` : `error: ${rec.error}`}\n`);
    else if (rec.torchSkipped && !peerReason) process.stdout.write(`${rec.shape} ${rec.precision}: torch ${rec.torchSkipped}\n`);
  }
  if (peerReason) process.stdout.write(`peer: PyTorch skipped: ${peerReason}\n`);
  process.stdout.write(`backbone: CUDA section took ${h.fixed(h.now() - t0, 0)} s (budget ${budget} s)\n`);
  return records;
}

// #endregion
module.exports = { run, probeOurs, timeOurs, errorText, skipKind };
