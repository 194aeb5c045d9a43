// GEMM benchmark: `node bench/run.js gemm [shape-filter...] [--device cpu|cuda] [--quick] [--json f]`.
//
// CPU: facecuda's SGEMM through the public API (fc.gemm, async through the CPU work queue, a fresh
// output tensor per call) at 1 thread and at all pool threads, against
//   - the measured FMA peak of this machine at the same thread count (fc.system.fmaPeak), and
//   - numpy (OpenBLAS) in the same run (bench/peers/numpy_gemm.py, spawned per shape right after our
//     timing, with OPENBLAS_NUM_THREADS set to the thread count and OPENBLAS_CORETYPE /
//     OPENBLAS_L2_SIZE removed, so OpenBLAS picks its kernel for this CPU).
// The goal checked at the end: 2048^3 with all threads >= 85% of numpy and >= 70% of the FMA peak.
//
// CUDA (--device cuda): the same shapes through fc.gemm on 'cuda' in fp32 and tf32, against
// torch.matmul (bench/peers/torch_gemm.py) when torch with CUDA is importable.
'use strict';
const path = require('path');
const h = require('./harness');

const BATCH = 8;
const SHAPES = [
  { name: 'square-512', M: 512, N: 512, K: 512 },
  { name: 'square-1024', M: 1024, N: 1024, K: 1024 },
  { name: 'square-2048', M: 2048, N: 2048, K: 2048 },
  { name: 'square-2048-tAtB', M: 2048, N: 2048, K: 2048, transA: true, transB: true },
  // Margin-softmax head: B = 512 embeddings of D = 512 against a shard of C = 16384 classes.
  { name: 'head-logits', M: 512, N: 16384, K: 512, transB: true }, // logits = X W^T
  { name: 'head-dW', M: 16384, N: 512, K: 512, transA: true }, // dW = dlogits^T X
  { name: 'head-dX', M: 512, N: 512, K: 16384 }, // dX = dlogits W
  // IResNet 3x3 convolutions as im2col GEMMs: out channels x (in channels * 9) x (H * W * batch 8).
  { name: 'conv-56x56', M: 64, N: 56 * 56 * BATCH, K: 64 * 9 },
  { name: 'conv-28x28', M: 128, N: 28 * 28 * BATCH, K: 128 * 9 },
  { name: 'conv-7x7', M: 512, N: 7 * 7 * BATCH, K: 512 * 9 },
  // One face embedding against a 93k-identity gallery: the GEMV path (memory-bound).
  { name: 'gemv-search', M: 1, N: 93431, K: 512, transB: true },
  { name: 'square-2048-bf16', M: 2048, N: 2048, K: 2048, precision: 'bf16' },
];
const QUICK = new Set(['square-512', 'square-2048', 'head-logits', 'conv-56x56']);
const GOAL = { shape: 'square-2048', numpy: 0.85, peak: 0.7 };

const randomF32 = h.randomF32;

function pickShapes(opts) {
  let shapes = SHAPES.filter((s) => !opts.quick || QUICK.has(s.name));
  // The runner passes its filters through; those naming a shape select shapes (others, such as the
  // benchmark name 'gemm', select this file and leave every shape in).
  const filters = (opts.filter || []).filter((f) => SHAPES.some((s) => s.name.includes(f)));
  if (filters.length) shapes = shapes.filter((s) => h.selected(s.name, filters));
  return shapes;
}

function makeOperands(fc, s, device) {
  const [ar, ac] = s.transA ? [s.K, s.M] : [s.M, s.K];
  const [br, bc] = s.transB ? [s.N, s.K] : [s.K, s.N];
  const a = fc.Tensor.from(randomF32(ar * ac, 12345), [ar, ac], { device });
  const b = fc.Tensor.from(randomF32(br * bc, 67890), [br, bc], { device });
  return { a, b };
}

const dims = (s) => `${s.M}x${s.N}x${s.K}`;
const trans = (s) => `${s.transA ? 'T' : 'N'}${s.transB ? 'T' : 'N'}`;
const peerShape = (s) => ({ M: s.M, N: s.N, K: s.K, transA: !!s.transA, transB: !!s.transB });
// The fields every result record starts with.
const shapeFields = (s, precision) => ({ shape: s.name, ...peerShape(s), precision });

async function timeOurs(fc, s, device, precision, threads, timing) {
  const { a, b } = makeOperands(fc, s, device);
  const gopts = { transA: !!s.transA, transB: !!s.transB, precision, threads };
  try {
    const m = await h.measure(async () => {
      const c = await fc.gemm(a, b, gopts);
      c.dispose();
    }, timing);
    return m;
  } finally {
    a.dispose();
    b.dispose();
  }
}

async function runCpu(fc, info, shapes, opts) {
  const all = info.cpu.threads;
  const threadCounts = all > 1 ? [1, all] : [1];
  // Warm-up by count as well as time: with glibc, the first ~12 calls that return a fresh 16 MB
  // output fault in new pages (~50 ms per 16 MB in a VM) before the allocator settles on reusing
  // freed blocks; outputs over 32 MB are mmapped (and faulted in) on every call.
  const timing = opts.quick
    ? { warmup: 15, warmupSeconds: 0.2, minReps: 3, minSeconds: 0.3 }
    : { warmup: 15, warmupSeconds: 1.0, minReps: 5, minSeconds: 1.0 };
  const peerTiming = { ...timing };
  const peerEnv = (t) => ({
    OPENBLAS_CORETYPE: undefined,
    OPENBLAS_L2_SIZE: undefined,
    OPENBLAS_NUM_THREADS: t,
    OMP_NUM_THREADS: t,
    MKL_NUM_THREADS: t,
  });
  const peerScript = path.join(__dirname, 'peers', 'numpy_gemm.py');
  // Probe the peer once; afterwards every shape spawns it (numpy reads the thread count at import).
  const probe = h.runPeer(peerScript, { shapes: [] }, { env: peerEnv(1), requires: ['numpy'] });
  const peerReason = probe.skipped ? probe.reason : null;
  h.printHeader('gemm: CPU SGEMM (fc.gemm, fresh output per call) vs FMA peak and numpy', info, [
    `timing  median of >= ${timing.minReps} calls and >= ${timing.minSeconds}s after >= ${timing.warmup} calls and ` +
      `${timing.warmupSeconds}s of warm-up; spread = min..max`,
    peerReason
      ? `peer    numpy: skipped (${peerReason})`
      : `peer    numpy ${probe.version}, ${probe.blas}: np.matmul(a, b), a fresh output per call like fc.gemm; ` +
        'OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset, OPENBLAS_NUM_THREADS = threads',
  ]);

  const records = [];
  for (const T of threadCounts) {
    const peak = await fc.system.fmaPeak({ threads: T, seconds: opts.quick ? 0.2 : 0.5 });
    process.stdout.write(`threads=${T}: measured FMA peak ${h.fixed(peak / 1e9)} GFLOP/s\n`);
    const rows = [];
    for (const s of shapes) {
      const precision = s.precision || 'fp32';
      const flops = 2 * s.M * s.N * s.K;
      const m = await timeOurs(fc, s, 'cpu', precision, T, timing);
      const gflops = flops / m.median / 1e9;
      let np = null;
      let npReason = peerReason;
      if (!npReason && precision !== 'fp32') npReason = `numpy has no ${precision} GEMM`;
      if (!npReason) {
        const r = h.runPeer(peerScript, { shapes: [peerShape(s)], freshOutput: true, ...peerTiming }, { env: peerEnv(T), python: probe.python });
        if (r.skipped) npReason = r.reason;
        else np = r.results[0];
      }
      const rec = {
        ...shapeFields(s, precision),
        device: 'cpu',
        threads: T,
        kernel: precision === 'bf16' ? info.cpu.gemmKernelBf16 : info.cpu.gemmKernel,
        reps: m.reps,
        medianSeconds: m.median,
        minSeconds: m.min,
        maxSeconds: m.max,
        gflops,
        gflopsMin: flops / m.max / 1e9,
        gflopsMax: flops / m.min / 1e9,
        peakGflops: peak / 1e9,
        peakFraction: gflops / (peak / 1e9),
        numpyGflops: np ? np.gflops : null,
        numpyRatio: np ? gflops / np.gflops : null,
        numpySkipped: np ? null : npReason,
      };
      records.push(rec);
      rows.push([
        s.name,
        dims(s),
        trans(s),
        precision,
        h.fixed(gflops),
        `${h.fixed(rec.gflopsMin)}..${h.fixed(rec.gflopsMax)}`,
        h.pct(rec.peakFraction),
        np ? h.fixed(np.gflops) : '-',
        np ? `${h.fixed(rec.numpyRatio, 2)}x` : '-',
      ]);
    }
    process.stdout.write(`\n`);
    h.printTable(['shape', 'MxNxK', 'op', 'prec', 'GFLOP/s', 'min..max', 'of peak', 'numpy', 'ours/numpy'], rows);
  }

  // The goal of the issue: 2048^3, all threads.
  const g = records.find((r) => r.shape === GOAL.shape && r.threads === threadCounts[threadCounts.length - 1]);
  if (g) {
    const okPeak = g.peakFraction >= GOAL.peak;
    const okNumpy = g.numpyRatio === null ? null : g.numpyRatio >= GOAL.numpy;
    process.stdout.write(
      `goal ${GOAL.shape} at ${g.threads} threads: ${h.fixed(g.gflops)} GFLOP/s = ${h.pct(g.peakFraction)} of the FMA peak ` +
        `(goal >= ${h.pct(GOAL.peak)}: ${okPeak ? 'met' : 'NOT met'}); ` +
        (g.numpyRatio === null
          ? `numpy comparison skipped (${g.numpySkipped})\n`
          : `${h.fixed(g.numpyRatio, 2)}x numpy (goal >= ${GOAL.numpy}: ${okNumpy ? 'met' : 'NOT met'})\n`),
    );
  }
  return records;
}

async function runCuda(fc, info, shapes, opts) {
  const timing = opts.quick ? { warmup: 2, minReps: 5, minSeconds: 0.3 } : { warmup: 3, minReps: 10, minSeconds: 1.0 };
  if (!info.cuda.available) {
    process.stdout.write(`gemm --device cuda: skipped (${info.cuda.reason})\n`);
    return [];
  }
  const peerScript = path.join(__dirname, 'peers', 'torch_gemm.py');
  const probe = h.runPeer(peerScript, { shapes: [] }, { requires: ['torch'] });
  const peerReason = probe.skipped ? probe.reason : probe.cuda ? null : `torch ${probe.version} sees no CUDA device`;
  const gpu = info.cuda.devices[0];
  h.printHeader(`gemm: CUDA SGEMM (fc.gemm on cuda:0 = ${gpu.name}) vs torch.matmul`, info, [
    `timing  median of >= ${timing.minReps} calls (queue round trip + output allocation included) after ${timing.warmup} warm-up`,
    peerReason ? `peer    torch: skipped (${peerReason})` : `peer    torch ${probe.version} on ${probe.device}`,
  ]);
  const records = [];
  const rows = [];
  for (const s of shapes) {
    for (const precision of ['fp32', 'tf32']) {
      if (s.precision && s.precision !== precision) continue;
      const flops = 2 * s.M * s.N * s.K;
      const m = await timeOurs(fc, s, 'cuda', precision, 0, timing);
      const gflops = flops / m.median / 1e9;
      let tp = null;
      let tReason = peerReason;
      if (!tReason) {
        const r = h.runPeer(peerScript, { shapes: [peerShape(s)], precision, warmup: timing.warmup, minReps: timing.minReps, minSeconds: timing.minSeconds }, { python: probe.python });
        if (r.skipped) tReason = r.reason;
        else tp = r.results[0];
      }
      records.push({
        ...shapeFields(s, precision),
        device: 'cuda:0',
        gpu: gpu.name,
        reps: m.reps,
        medianSeconds: m.median,
        minSeconds: m.min,
        maxSeconds: m.max,
        gflops,
        torchGflops: tp ? tp.gflops : null,
        torchRatio: tp ? gflops / tp.gflops : null,
        torchSkipped: tp ? null : tReason,
      });
      rows.push([
        s.name,
        dims(s),
        trans(s),
        precision,
        h.fixed(gflops),
        `${h.fixed(flops / m.max / 1e9)}..${h.fixed(flops / m.min / 1e9)}`,
        tp ? h.fixed(tp.gflops) : '-',
        tp ? `${h.fixed(gflops / tp.gflops, 2)}x` : '-',
      ]);
    }
  }
  h.printTable(['shape', 'MxNxK', 'op', 'prec', 'GFLOP/s', 'min..max', 'torch', 'ours/torch'], rows);
  return records;
}

async function run(opts = {}) {
  // eslint-disable-next-line global-require
  const fc = require('../dist/index.js');
  const info = await fc.system.info();
  const shapes = pickShapes(opts);
  if ((opts.device || 'cpu') === 'cuda') return runCuda(fc, info, shapes, opts);
  return runCpu(fc, info, shapes, opts);
}

module.exports = { run, SHAPES };
