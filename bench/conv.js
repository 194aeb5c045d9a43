// Convolution microbenchmark: `node bench/run.js conv [shape-filter...] [--quick] [--json f]`.
//
// IResNet-50's 3×3 stride-1 convolutions (CPU, forward, batch 32 and 1): the "winograd" algorithm
// (F(4×4, 3×3), native/src/cpu/conv_winograd.cc) against "im2col-gemm" (ExecOptions::allow_winograd =
// false) on the same tensors: median ms, effective GFLOP/s (direct-convolution FLOPs
// 2·N·Cout·OH·OW·Cin·9 over the time) and the speedup, then the r50 total over these layers weighted by
// their count in the model (ms per face). There is no JS binding for a single conv2d, so the timing is
// the native harness's perf mode (`facecuda_tests --mode perf --filter "layer.conv2d.winograd perf"`,
// cases in native/tests/winograd_cases.cc); the binary is build/Release/facecuda_tests, or the one
// FACECUDA_TESTS_BIN names.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const h = require('./harness');

function testsBinary() {
  if (process.env.FACECUDA_TESTS_BIN) return process.env.FACECUDA_TESTS_BIN;
  return path.join(__dirname, '..', 'build', 'Release', 'facecuda_tests');
}

async function run(opts = {}) {
  if (opts.device && opts.device !== 'cpu') {
    // The CUDA convolutions are cuDNN's; they are measured inside the backbone benchmark.
    process.stdout.write('conv: CPU only (the CUDA convolutions are measured by the backbone benchmark); nothing to run on cuda\n');
    return [];
  }
  const bin = testsBinary();
  if (!fs.existsSync(bin)) {
    process.stdout.write(`conv: skipped (${bin} does not exist: build the native tests with CMake)\n`);
    return [];
  }
  const json = path.join(os.tmpdir(), `facecuda-conv-bench-${process.pid}.json`);
  // Shape filters (anything other than the benchmark's own name) narrow the cases.
  const shapeFilters = (opts.filter || []).filter((f) => !'conv'.includes(f));
  const filter = opts.quick ? 'layer.conv2d.winograd perf l3 ' : 'layer.conv2d.winograd perf';
  const r = spawnSync(bin, ['--mode', 'perf', '--filter', filter, '--seed', '1', '--json', json], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  if (r.error) throw r.error;
  if (r.status !== 0 || !fs.existsSync(json)) {
    throw new Error(`conv: ${bin} exited with ${r.status}:\n${r.stdout}\n${r.stderr}`);
  }
  const out = JSON.parse(fs.readFileSync(json, 'utf8'));
  fs.unlinkSync(json);
  const header = r.stdout.split('\n').find((l) => l.startsWith('cpu:')) || '';
  process.stdout.write(
    `conv: r50 3×3 stride-1 convolutions, CPU forward, winograd F(4×4,3×3) vs im2col-gemm\n` +
      `  ${header}\n  binary  ${bin}\n` +
      `  timing  median of 5 (batch 32) or 21 (batch 1) calls after 1 warm-up, both algorithms on the same tensors\n\n`,
  );
  const records = [];
  const rows = [];
  const totals = {};
  for (const c of out.cases) {
    if (c.mode !== 'perf' || c.status !== 'ok') continue;
    const m = /^perf (.*) N=(\d+) x(\d+)$/.exec(c.params);
    if (!m) continue;
    const [, name, N, count] = m;
    if (shapeFilters.length && !h.selected(name, shapeFilters)) continue;
    const f = c.figures;
    const algo = c.detail.split(' ')[0];
    records.push({ shape: name, N: Number(N), count: Number(count), algorithm: algo, ...f });
    rows.push([
      name,
      N,
      count,
      algo,
      h.fixed(f.chosen_ms, 3),
      h.fixed(f.chosen_gflops),
      h.fixed(f.gemm_ms, 3),
      h.fixed(f.gemm_gflops),
      `${h.fixed(f.speedup, 2)}x`,
    ]);
    const t = (totals[N] = totals[N] || { chosen: 0, gemm: 0, N: Number(N) });
    t.chosen += f.chosen_ms * Number(count);
    t.gemm += f.gemm_ms * Number(count);
  }
  h.printTable(['shape', 'N', 'count', 'chosen', 'chosen ms', 'GFLOP/s', 'im2col ms', 'GFLOP/s', 'speedup'], rows);
  for (const t of Object.values(totals)) {
    process.stdout.write(
      `r50 3×3 s1 convs at N=${t.N}: ${h.fixed(t.chosen / t.N, 2)} ms/face with the default choice vs ` +
        `${h.fixed(t.gemm / t.N, 2)} ms/face im2col-gemm only (${h.fixed(t.gemm / t.chosen, 2)}x)\n`,
    );
    records.push({ shape: 'r50-3x3s1-total', N: t.N, chosenMsPerFace: t.chosen / t.N, gemmMsPerFace: t.gemm / t.N });
  }
  return records;
}

module.exports = { run };
