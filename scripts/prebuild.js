#!/usr/bin/env node
// `npm run prebuild`: the binary that ships in the npm package, prebuilds/linux-x64/facecuda.glibc.node,
// plus prebuilds/linux-x64/facecuda.json, the requirements the loader checks (lib/binding.ts) and
// `facecuda info` reports.
//
// One file serves CPU-only and GPU machines: the CPU backend dispatches SIMD at run time, the CUDA
// backend is compiled for sm_75, sm_80, sm_86, sm_89 and sm_90 (real) plus compute_90 PTX so newer
// GPUs JIT, cudart is linked statically, and cuBLAS/cuDNN are opened at run time (never linked). The
// file is stripped. Build machine: this repository's CI class (Debian 12, glibc 2.36); the binary's
// real glibc floor is measured from its symbol versions and recorded.
//
// Options:
//   --archs="75-real;..."  CUDA architectures (default below; env FACECUDA_PREBUILD_ARCHS)
//   --from-build           do not compile: package <build-dir>/Release/facecuda.node as it is (the
//                          developer/CI path: `npm install` already built it for sm_90; the packaging
//                          test uses this so CI does not compile the CUDA sources a second time)
//   --build-dir=DIR        with --from-build: the build folder (default build/; gpu-check uses build-gpu/)
//   --out=DIR              write DIR/linux-x64/... instead of prebuilds/linux-x64/...
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const root = path.resolve(__dirname, '..');
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const a = args.find((x) => x.startsWith(`--${name}=`));
  return a ? a.slice(name.length + 3) : dflt;
};
const DEFAULT_ARCHS = '75-real;80-real;86-real;89-real;90-real;90-virtual';
const MIN_DRIVER = { cuda13: 'R580', linux: '580.65.06' }; // CUDA 13.0 GA minimum Linux driver

function log(msg) {
  process.stdout.write(`prebuild: ${msg}\n`);
}

function run(cmd, argv, env) {
  log(`$ ${[cmd, ...argv].join(' ')}`);
  const r = spawnSync(cmd, argv, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } });
  if (r.status !== 0) throw new Error(`${cmd} failed (${r.error ? r.error.message : `exit status ${r.status}`})`);
}

function capture(cmd, argv) {
  const r = spawnSync(cmd, argv, { encoding: 'utf8', maxBuffer: 64 << 20 });
  return r.status === 0 ? r.stdout : null;
}

/** The highest GLIBC_x.y symbol version the file needs (objdump -T), or null without binutils. */
function glibcFloor(file) {
  const out = capture('objdump', ['-T', file]);
  if (!out) return null;
  let best = null;
  for (const m of out.matchAll(/GLIBC_(\d+)\.(\d+)(?:\.(\d+))?/g)) {
    const v = [Number(m[1]), Number(m[2]), Number(m[3] || 0)];
    if (!best || v[0] > best[0] || (v[0] === best[0] && (v[1] > best[1] || (v[1] === best[1] && v[2] > best[2])))) best = v;
  }
  return best ? best.slice(0, best[2] ? 3 : 2).join('.') : null;
}

function neededLibs(file) {
  const out = capture('readelf', ['-d', file]);
  return out ? [...out.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]) : null;
}

function nvccVersion() {
  const out = capture('nvcc', ['--version']) || capture('/usr/local/cuda/bin/nvcc', ['--version']);
  const m = out && /release (\d+\.\d+), V([\d.]+)/.exec(out);
  return m ? { release: m[1], version: m[2] } : null;
}

function gitCommit() {
  const out = capture('git', ['-C', root, 'rev-parse', 'HEAD']);
  return out ? out.trim() : null;
}

function main() {
  const fromBuild = args.includes('--from-build');
  const outRoot = path.resolve(opt('out', path.join(root, 'prebuilds')));
  const dir = path.join(outRoot, `${process.platform}-${process.arch}`);
  const dest = path.join(dir, 'facecuda.glibc.node');
  let built;
  let archs;
  const t0 = Date.now();
  const fromDir = path.resolve(opt('build-dir', path.join(root, 'build')));
  if (fromBuild) {
    built = path.join(fromDir, 'Release', 'facecuda.node');
    if (!fs.existsSync(built)) throw new Error(`${built} does not exist: run npm run compile first`);
    // The architectures the local build used, from its CMake cache.
    const cache = path.join(fromDir, 'CMakeCache.txt');
    const m = fs.existsSync(cache) && /^FACECUDA_CUDA_ARCHS:STRING=(.*)$/m.exec(fs.readFileSync(cache, 'utf8'));
    archs = m ? m[1].trim() : null;
  } else {
    archs = opt('archs', process.env.FACECUDA_PREBUILD_ARCHS || DEFAULT_ARCHS);
    const buildDir = path.join(root, 'build-prebuild');
    const cmakeJs = require.resolve('cmake-js/bin/cmake-js');
    const jobs = String(process.env.FACECUDA_BUILD_JOBS || os.cpus().length);
    run(process.execPath, [cmakeJs, 'compile', '-O', buildDir, '--CDFACECUDA_CUDA=ON', `--CDFACECUDA_CUDA_ARCHS=${archs}`,
      '--CDFACECUDA_BUILD_TESTS=OFF', '-p', jobs], { FACECUDA_CUDA_ARCHS: archs });
    built = path.join(buildDir, 'Release', 'facecuda.node');
  }
  fs.mkdirSync(dir, { recursive: true });
  const tmp = `${dest}.tmp-${process.pid}`;
  fs.copyFileSync(built, tmp);
  const stripped = spawnSync('strip', ['--strip-unneeded', tmp]).status === 0;
  if (!stripped) log('strip is not available: the binary is not stripped');
  fs.renameSync(tmp, dest);
  const size = fs.statSync(dest).size;
  const nvcc = nvccVersion();
  const requirements = {
    file: path.basename(dest),
    platform: `${process.platform}-${process.arch}`,
    libc: 'glibc',
    glibc: glibcFloor(dest),
    needed: neededLibs(dest),
    nodeApi: 8,
    node: '>=20',
    cuda: {
      runtime: nvcc ? nvcc.release : null,
      toolkit: nvcc ? nvcc.version : null,
      cudart: 'static',
      architectures: archs ? archs.split(';') : 'unknown (no build/CMakeCache.txt)',
      minDriver: nvcc && Number(nvcc.release.split('.')[0]) >= 13 ? MIN_DRIVER : null,
      dynamicallyOpened: ['libcublas.so.13 (or .12)', 'libcudnn.so.9'],
    },
    stripped,
    bytes: size,
    built: new Date().toISOString(),
    commit: gitCommit(),
    buildHost: { glibc: process.report.getReport().header.glibcVersionRuntime, node: process.version },
    source: fromBuild ? `${path.relative(root, built)} (packaged as built)` : 'scripts/prebuild.js',
  };
  const jsonTmp = path.join(dir, `facecuda.json.tmp-${process.pid}`);
  fs.writeFileSync(jsonTmp, JSON.stringify(requirements, null, 2) + '\n');
  fs.renameSync(jsonTmp, path.join(dir, 'facecuda.json'));
  log(`${path.relative(root, dest)}: ${(size / 1048576).toFixed(1)} MiB${stripped ? ' (stripped)' : ''}, needs glibc >= ${requirements.glibc}, ` +
    `CUDA ${requirements.cuda.runtime || '-'} (${archs || 'unknown archs'}) in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
}

try {
  main();
} catch (e) {
  process.stderr.write(`prebuild: ${e.message}\n`);
  process.exit(1);
}
