#!/usr/bin/env node
// Builds facecuda from a source checkout with the best toolchain present, then the TypeScript.
//
//   CMake >= 3.18 and nvcc  → cmake-js: CPU + CUDA backends (+ native test harness)
//   CMake without nvcc      → cmake-js: CPU backend (+ native test harness)
//   no CMake                → node-gyp from binding.gyp: CPU backend
//
// Runs as the package's `prepare` script (a fresh clone's `npm install`; never on a user's install of the package) and as `npm run compile` (not `build`: npm would run the `prebuild` script, the release binary, first).
// In an installed package (no native/ sources) it does nothing: prebuilds/ is used at run time.
//
// Options: --native-only, --ts-only, --cuda=auto|on|off (default auto; env FACECUDA_CUDA), --debug,
//          --tool=auto|cmake|node-gyp (default auto; env FACECUDA_BUILD_TOOL) to force a toolchain
// Env: FACECUDA_CUDA_ARCHS (e.g. "90-real;90-virtual"), FACECUDA_SKIP_NATIVE_BUILD=1, FACECUDA_BUILD_JOBS
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const root = path.resolve(__dirname, '..');
const args = process.argv.slice(2);
const has = (f) => args.includes(f);
const opt = (name, dflt) => {
  const a = args.find((x) => x.startsWith(`--${name}=`));
  return a ? a.slice(name.length + 3) : dflt;
};

function log(msg) {
  process.stdout.write(`facecuda: ${msg}\n`);
}

function run(cmd, argv, extraEnv) {
  log(`$ ${[cmd, ...argv].join(' ')}`);
  const r = spawnSync(cmd, argv, { cwd: root, stdio: 'inherit', env: { ...process.env, ...extraEnv } });
  if (r.error) return { ok: false, why: r.error.message };
  return { ok: r.status === 0, why: `exit status ${r.status}` };
}

function which(bin) {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    const p = path.join(dir, bin);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return null;
}

function cmakeVersion() {
  const cmake = which('cmake');
  if (!cmake) return null;
  const r = spawnSync(cmake, ['--version'], { encoding: 'utf8' });
  const m = /cmake version (\d+)\.(\d+)/.exec(r.stdout || '');
  if (!m) return null;
  return { major: Number(m[1]), minor: Number(m[2]), text: `${m[1]}.${m[2]}` };
}

function findNvcc() {
  const candidates = [which('nvcc')];
  for (const env of ['CUDA_HOME', 'CUDA_PATH']) if (process.env[env]) candidates.push(path.join(process.env[env], 'bin', 'nvcc'));
  candidates.push('/usr/local/cuda/bin/nvcc');
  return candidates.find((p) => p && fs.existsSync(p)) || null;
}

function resolveFrom(request) {
  try {
    return require.resolve(request, { paths: [root] });
  } catch {
    return null;
  }
}

function nodeGypBin() {
  if (process.env.npm_config_node_gyp && fs.existsSync(process.env.npm_config_node_gyp)) return process.env.npm_config_node_gyp;
  const local = resolveFrom('node-gyp/bin/node-gyp.js');
  if (local) return local;
  const bundled = path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
  return fs.existsSync(bundled) ? bundled : null;
}

function buildWithCmake(cuda) {
  const cmakeJs = resolveFrom('cmake-js/bin/cmake-js');
  if (!cmakeJs) return { ok: false, why: 'cmake-js is not installed (devDependency)' };
  const jobs = process.env.FACECUDA_BUILD_JOBS || String(Math.max(1, os.cpus().length));
  const argv = [cmakeJs, 'compile', '--parallel', jobs, `--CDFACECUDA_CUDA=${cuda ? 'ON' : 'OFF'}`];
  if (process.env.FACECUDA_CUDA_ARCHS) argv.push(`--CDFACECUDA_CUDA_ARCHS=${process.env.FACECUDA_CUDA_ARCHS}`);
  if (has('--debug')) argv.push('--debug');
  return run(process.execPath, argv);
}

function buildWithNodeGyp() {
  const gyp = nodeGypBin();
  if (!gyp) return { ok: false, why: 'node-gyp was not found' };
  const argv = [gyp, 'rebuild', '--jobs', String(Math.max(1, os.cpus().length))];
  if (has('--debug')) argv.push('--debug');
  return run(process.execPath, argv);
}

function buildNative() {
  if (process.env.FACECUDA_SKIP_NATIVE_BUILD === '1') {
    log('FACECUDA_SKIP_NATIVE_BUILD=1: skipping the native build');
    return;
  }
  const cudaWanted = (opt('cuda', process.env.FACECUDA_CUDA || 'auto') || 'auto').toLowerCase();
  const tool = (opt('tool', process.env.FACECUDA_BUILD_TOOL || 'auto') || 'auto').toLowerCase();
  if (!['auto', 'cmake', 'node-gyp'].includes(tool)) throw new Error(`Expected auto, cmake or node-gyp for --tool but received ${tool}`);
  const cmake = tool === 'node-gyp' ? null : cmakeVersion();
  if (tool === 'cmake' && !cmake) throw new Error('--tool=cmake but cmake was not found on PATH');
  const nvcc = cudaWanted === 'off' ? null : findNvcc();
  if (cudaWanted === 'on' && !nvcc) throw new Error('--cuda=on but nvcc was not found (PATH, CUDA_HOME, /usr/local/cuda/bin)');
  if (cmake && (cmake.major > 3 || (cmake.major === 3 && cmake.minor >= 18))) {
    if (nvcc) {
      log(`toolchain: CMake ${cmake.text} + nvcc (${nvcc}) → CPU + CUDA backends`);
      const r = buildWithCmake(true);
      if (r.ok) return;
      if (cudaWanted === 'on') throw new Error(`CUDA build failed (${r.why})`);
      log(`the CUDA build failed (${r.why}); building the CPU backend only`);
    } else {
      log(`toolchain: CMake ${cmake.text}, no nvcc → CPU backend only`);
    }
    const r = buildWithCmake(false);
    if (r.ok) return;
    log(`the CMake build failed (${r.why}); trying node-gyp`);
  } else {
    const why = tool === 'node-gyp' ? 'node-gyp requested' : cmake ? `CMake ${cmake.text} is older than 3.18` : 'no CMake';
    log(`toolchain: ${why} → node-gyp, CPU backend only`);
  }
  const g = buildWithNodeGyp();
  if (!g.ok) throw new Error(`node-gyp build failed (${g.why})`);
}

function buildTs() {
  const tsc = resolveFrom('typescript/bin/tsc');
  if (!tsc) throw new Error('typescript is not installed (devDependency); run npm install');
  const r = run(process.execPath, [tsc, '-p', 'tsconfig.json']);
  if (!r.ok) throw new Error(`TypeScript build failed (${r.why})`);
  const cli = path.join(root, 'dist', 'cli.js');
  if (fs.existsSync(cli)) fs.chmodSync(cli, 0o755);
  writeEsmEntry();
}

// dist/index.mjs and dist/index.d.mts: the ES-module entry of the `exports` map. The library is
// compiled to CommonJS (one copy of the module state: the addon handle, the device queues); the ESM
// entry re-exports its named exports, listed from the compiled module itself (which loads without the
// addon), so `import { ArcFaceHead } from 'facecuda'` and `require('facecuda')` see the same objects.
function writeEsmEntry(dist = path.join(root, 'dist')) {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(JSON.stringify(Object.keys(require(process.argv[1]))))', path.join(dist, 'index.js')], {
    encoding: 'utf8', env: { ...process.env, FACECUDA_ADDON: path.join(dist, 'no-addon-needed-to-list-exports') },
  });
  if (r.status !== 0) throw new Error(`listing dist/index.js exports failed: ${r.stderr}`);
  const names = JSON.parse(r.stdout).filter((n) => /^[A-Za-z_$][\w$]*$/.test(n) && n !== 'default' && n !== '__esModule');
  const js = [
    '// Generated by scripts/build.js: the ES-module entry, re-exporting the CommonJS build.',
    "import cjs from './index.js';",
    ...names.map((n) => `export const ${n} = cjs.${n};`),
    'export default cjs;',
    '',
  ].join('\n');
  const dts = ["// Generated by scripts/build.js: types of the ES-module entry.", "export * from './index.js';", "import * as facecuda from './index.js';", 'export default facecuda;', ''].join('\n');
  for (const [file, text] of [['index.mjs', js], ['index.d.mts', dts]]) {
    const tmp = path.join(dist, `${file}.tmp-${process.pid}`);
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, path.join(dist, file));
  }
}

function main() {
  if (!fs.existsSync(path.join(root, 'native')) || !fs.existsSync(path.join(root, 'lib'))) {
    // An installed package: prebuilt binaries and compiled JS ship inside it.
    return;
  }
  if (!has('--ts-only')) buildNative();
  if (!has('--native-only')) buildTs();
  log('build finished');
}

module.exports = { writeEsmEntry };

if (require.main === module) {
  try {
    main();
  } catch (e) {
    process.stderr.write(`facecuda: ${e.message}\n`);
    process.exit(1);
  }
}
