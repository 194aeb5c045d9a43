#!/usr/bin/env node
// The one list of native sources, by convention rather than by hand: CMakeLists.txt and binding.gyp
// both ask this script, so adding an op is dropping files into native/src/{cpu,cuda}/.
//
//   common      native/src/common/*.cc
//   cpu         native/src/cpu/*.cc, except the SIMD files below
//   cpu_avx2    native/src/cpu/*_avx2.cc     (compiled with -mavx2 -mfma -mf16c)
//   cpu_avx512  native/src/cpu/*_avx512.cc   (compiled with the AVX-512 F/BW/VL/DQ/BF16 flags)
//   cuda        native/src/cuda/*.cu and *.cc (nvcc present)
//   cuda_stub   native/src/cuda_stub/*.cc      (no nvcc)
//   binding     native/binding/*.cc           (the only code that includes napi.h)
//   tests       native/tests/*.cc             (the native op test harness)
//
// Usage: node scripts/sources.js <group> [--cmake]   (space-separated paths, or ';' for CMake)
'use strict';
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');

function list(dir, pred) {
  const abs = path.join(root, dir);
  if (!fs.existsSync(abs)) return [];
  return fs
    .readdirSync(abs)
    .filter(pred)
    .sort()
    .map((f) => `${dir}/${f}`);
}

const isSimd = (f) => /_(avx2|avx512)\.cc$/.test(f);
const groups = {
  common: () => list('native/src/common', (f) => f.endsWith('.cc')),
  cpu: () => list('native/src/cpu', (f) => f.endsWith('.cc') && !isSimd(f)),
  cpu_avx2: () => list('native/src/cpu', (f) => f.endsWith('_avx2.cc')),
  cpu_avx512: () => list('native/src/cpu', (f) => f.endsWith('_avx512.cc')),
  cuda: () => list('native/src/cuda', (f) => f.endsWith('.cu') || f.endsWith('.cc')),
  cuda_stub: () => list('native/src/cuda_stub', (f) => f.endsWith('.cc')),
  binding: () => list('native/binding', (f) => f.endsWith('.cc')),
  tests: () => list('native/tests', (f) => f.endsWith('.cc')),
};

module.exports = { groups: Object.fromEntries(Object.entries(groups).map(([k, f]) => [k, f])) };

if (require.main === module) {
  const group = process.argv[2];
  const cmake = process.argv.includes('--cmake');
  if (!groups[group]) {
    process.stderr.write(`Expected one of ${Object.keys(groups).join(', ')} for group but received ${group}\n`);
    process.exit(2);
  }
  process.stdout.write(groups[group]().join(cmake ? ';' : ' '));
}
