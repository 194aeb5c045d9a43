#!/usr/bin/env node
// @file gpu-check.js
// @brief `npm run gpu:check`: builds everything for a GPU machine here, then runs the GPU checks
// there, in two phases, because the GPU machine has no compiler toolchain for us, no npm registry and
// possibly no Node.js. CommonJS, Node built-ins only.
//
// Phase 1, on a build machine (nvcc + CMake + node_modules; no GPU needed):
//
//   node scripts/gpu-check.js --prepare [DIR]        (DIR defaults to .gpu-carry/, gitignored)
//
//   builds the addon and facecuda_tests for FACECUDA_CUDA_ARCHS (default "90-real;90-virtual") with
//   cmake-js into build-gpu/, and fills DIR with what the GPU machine needs at run time:
//     facecuda.node, facecuda_tests    stripped binaries (cudart static; cuBLAS/cuDNN opened at run time)
//     dist/, package.json              the compiled library (bench/run.js needs dist/)
//     gpu-tests/                       lib/ and test/ compiled to JavaScript (no TypeScript needed there)
//     jest.tar.xz                      jest and its dependency closure (node_modules/), unpacked on use
//     facecuda-<version>.tgz           the package as users get it (`npm pack` of a staged copy: dist/
//                                      with types and the ESM entry, and build-gpu's addon, stripped,
//                                      as prebuilds/linux-x64/facecuda.glibc.node + facecuda.json)
//     node.xz                          this machine's node binary (shared/scripts/pack-node.sh), if found
//     manifest.json                    git commit, toolchain, architectures, file sizes
//   and prints the sizes: the working tree plus DIR must stay under the 64 MiB a device run carries.
//   Options: --no-node (do not pack node), --skip-build (reuse build-gpu/).
//
// Phase 2, on the GPU machine, from the repository root (the default):
//
//   node scripts/gpu-check.js [--carry DIR] [--out DIR] [--deadline SECONDS] [--skip STEP,...] [--no-lib-env]
//
//   1. finds the artifacts (DIR, else build-gpu/ or build/ and dist/ of a local build), unpacks jest,
//      links dist/ into the repository when it is missing (bench/run.js loads ../dist);
//   2. facts: nvidia-smi, python3 (its nvidia/*/lib directories, torch, CUDA and cuDNN versions), git;
//   3. asks facecuda itself (system.info with libraries) where cuBLAS/cuDNN are, first with the
//      environment as given ("self_discovery": does the dlopen search find the pip libraries on its
//      own?), then exports LD_LIBRARY_PATH and FACECUDA_CUDA_LIB_DIRS with the nvidia/*/lib
//      directories for every later child (unless --no-lib-env; it only affects children);
//   4. runs, each with a timeout: the tarball checks (step tarball: the carried facecuda-*.tgz unpacked
//      as node_modules/facecuda of a temporary project, then, with the environment as given and no
//      FACECUDA_ADDON: the prebuild loads, CUDA is available and chosen by 'auto', cuBLAS/cuDNN are
//      found (and where), GEMM fp32/fp16 and an ArcFaceHead forward+backward match the CPU, an fp16
//      IResNet r18 forward is finite; no image module is loaded), `facecuda_tests --cuda-only --json`
//      (step native-cuda), `facecuda_tests --mode test --json` (step native-full), the GPU jest
//      suites (test/gpu/*.test.js compiled; step jest) and `node bench/run.js --device cuda --json`
//      (step bench). --skip takes step names: tarball, native-cuda, native-full, jest, bench;
//   5. writes <out>/gpu-check-<host>-<time>.json (every fact, each step's status, parsed results and
//      figures, timestamps, the git commit) and the full log next to it, and prints a summary.
//   <out> is $FACECUDA_GPU_CHECK_OUT, else bench/results/. Exit status: 0 all passed, 1 something
//   failed or timed out, 2 the artifacts are missing. It never waits forever: every child has a
//   timeout, and no step starts after the deadline (default 540 s, to fit a 600 s device call).
//   Children run in their own process group and are killed with it on timeout or interruption.
//
// Device call (files come back from $OUT; carry the prepared folder):
//   bash -c 'set -e; c=.gpu-carry; (xz -dc $c/node.xz || python3 -c "import lzma,sys;
//            sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())" $c/node.xz) > $c/node; chmod +x $c/node;
//            export PATH=$PWD/$c:$PATH; FACECUDA_GPU_CHECK_OUT=$OUT node scripts/gpu-check.js'
//   with carry [".gpu-carry"] (timeout_s 600: the checks stop starting steps after 540 s).
'use strict';
const cp = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const root = path.resolve(__dirname, '..');
const MiB = 1024 * 1024;
const DEVICE_TREE_LIMIT = 64 * MiB;
const DEVICE_COMMAND = "bash -c 'set -e; c=.gpu-carry; (xz -dc $c/node.xz || python3 -c \"import lzma,sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())\" $c/node.xz) > $c/node; chmod +x $c/node; export PATH=$PWD/$c:$PATH; FACECUDA_GPU_CHECK_OUT=$OUT node scripts/gpu-check.js'";

// ---- arguments

function parseArgs(argv) {
  const o = { prepare: false, carry: null, out: null, deadline: 540, skip: new Set(), libEnv: true, packNode: true, build: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--prepare') {
      o.prepare = true;
      if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) o.carry = argv[++i];
    } else if (a === '--carry') o.carry = next();
    else if (a === '--out') o.out = next();
    else if (a === '--deadline') o.deadline = Number(next());
    else if (a === '--skip') next().split(',').filter(Boolean).forEach((s) => o.skip.add(s));
    else if (a === '--no-lib-env') o.libEnv = false;
    else if (a === '--no-node') o.packNode = false;
    else if (a === '--skip-build') o.build = false;
    else if (a === '--help' || a === '-h') o.help = true;
    else throw new Error(`unknown argument ${a} (see the header of scripts/gpu-check.js)`);
  }
  if (!Number.isFinite(o.deadline) || o.deadline <= 0) throw new Error(`Expected a positive number of seconds for --deadline but received ${o.deadline}`);
  return o;
}

// ---- logging and children

const logLines = [];
function log(msg) {
  const line = `gpu-check: ${msg}`;
  process.stdout.write(`${line}\n`);
  logLines.push(line);
}

const running = new Set();
function killGroup(child, signal) {
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  }
}
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    for (const c of running) killGroup(c, 'SIGKILL');
    process.exit(130);
  });
}
process.on('exit', () => {
  for (const c of running) killGroup(c, 'SIGKILL');
});

// Runs a child with a timeout, streaming its output (prefixed) and keeping it for the log.
// Resolves to { status, signal, timedOut, seconds, output, error }.
function runChild(name, cmd, args, { env, timeoutS, cwd, quiet } = {}) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    log(`[${name}] $ ${[cmd, ...args].map((x) => (/[\s'"]/.test(x) ? JSON.stringify(x) : x)).join(' ')}  (timeout ${Math.round(timeoutS)} s)`);
    let child;
    try {
      child = cp.spawn(cmd, args, { cwd: cwd || root, env: env || process.env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      resolve({ status: null, signal: null, timedOut: false, seconds: 0, output: '', error: e.message });
      return;
    }
    running.add(child);
    let output = '';
    let partial = '';
    const onData = (buf) => {
      const s = buf.toString();
      output += s;
      if (output.length > 4 * MiB) output = output.slice(-2 * MiB);
      partial += s;
      const lines = partial.split('\n');
      partial = lines.pop();
      for (const l of lines) {
        logLines.push(`[${name}] ${l}`);
        if (!quiet) process.stdout.write(`[${name}] ${l}\n`);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    let timedOut = false;
    let killer = null;
    const timer = setTimeout(() => {
      timedOut = true;
      log(`[${name}] timed out after ${Math.round(timeoutS)} s: killing its process group`);
      killGroup(child, 'SIGTERM');
      killer = setTimeout(() => killGroup(child, 'SIGKILL'), 5000);
    }, Math.max(1, timeoutS) * 1000);
    let spawnError = null;
    child.on('error', (e) => {
      spawnError = e.message;
    });
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      if (killer) clearTimeout(killer);
      running.delete(child);
      if (partial) {
        logLines.push(`[${name}] ${partial}`);
        if (!quiet) process.stdout.write(`[${name}] ${partial}\n`);
      }
      resolve({ status, signal, timedOut, seconds: (Date.now() - t0) / 1000, output, error: spawnError });
    });
  });
}

function runSync(cmd, args, timeoutS, opts = {}) {
  const r = cp.spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutS * 1000, cwd: opts.cwd || root, env: opts.env || process.env, maxBuffer: 64 * MiB });
  return { ok: !r.error && r.status === 0, stdout: r.stdout || '', stderr: r.stderr || '', error: r.error ? r.error.message : null, status: r.status };
}

function which(bin) {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, bin);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch {
      // next
    }
  }
  return null;
}

function readJson(file) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return null;
  }
}

function fileSize(p) {
  try {
    return fs.statSync(p).size;
  } catch {
    return 0;
  }
}

function dirSize(p) {
  let total = 0;
  let st;
  try {
    st = fs.lstatSync(p);
  } catch {
    return 0;
  }
  if (st.isSymbolicLink()) return 0;
  if (!st.isDirectory()) return st.size;
  for (const e of fs.readdirSync(p)) total += dirSize(path.join(p, e));
  return total;
}

function mib(bytes) {
  return `${(bytes / MiB).toFixed(1)} MiB`;
}

function gitInfo() {
  const head = runSync('git', ['rev-parse', 'HEAD'], 20);
  if (!head.ok) return null;
  const dirty = runSync('git', ['status', '--porcelain'], 20);  // untracked files count: new sources
  return { commit: head.stdout.trim(), dirty: dirty.ok ? dirty.stdout.trim().length > 0 : null };
}

// ============================================================================================
// Phase 1: --prepare
// ============================================================================================

function findNvcc() {
  const c = [which('nvcc')];
  for (const e of ['CUDA_HOME', 'CUDA_PATH']) if (process.env[e]) c.push(path.join(process.env[e], 'bin', 'nvcc'));
  c.push('/usr/local/cuda/bin/nvcc');
  return c.find((p) => p && fs.existsSync(p)) || null;
}

function resolveFrom(request) {
  try {
    return require.resolve(request, { paths: [root] });
  } catch {
    return null;
  }
}

// The directories of `start` and of everything it depends on (dependencies + optionalDependencies),
// resolved the way Node resolves them, relative to the repository root.
function dependencyClosure(start) {
  const seen = new Map();
  const resolvePkg = (name, fromDir) => {
    for (let d = fromDir; ; d = path.dirname(d)) {
      const p = path.join(d, 'node_modules', name);
      if (fs.existsSync(path.join(p, 'package.json'))) return p;
      if (path.dirname(d) === d || d === root) return null;
    }
  };
  const visit = (dir) => {
    const real = fs.realpathSync(dir);
    if (seen.has(real)) return;
    seen.set(real, dir);
    const pj = readJson(path.join(dir, 'package.json')) || {};
    for (const n of Object.keys({ ...(pj.dependencies || {}), ...(pj.optionalDependencies || {}) })) {
      const p = resolvePkg(n, dir);
      if (p) visit(p);
    }
  };
  const first = resolvePkg(start, root);
  if (!first) return null;
  visit(first);
  return [...seen.values()].map((d) => path.relative(root, d));
}

// Every file of the given package directories, excluding their nested node_modules (those are
// packages of their own, listed when needed).
function packageFiles(pkgDirs) {
  const files = [];
  const walk = (rel) => {
    for (const e of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
      if (e.name === 'node_modules') continue;
      const r = path.join(rel, e.name);
      if (e.isDirectory()) walk(r);
      else if (e.isFile() || e.isSymbolicLink()) files.push(r);
    }
  };
  for (const d of pkgDirs) walk(d);
  return files;
}

function findPackNode() {
  const c = [process.env.FACECUDA_PACK_NODE, path.join(root, 'shared', 'scripts', 'pack-node.sh'),
    path.join(root, '..', 'shared', 'scripts', 'pack-node.sh'), '/work/shared/scripts/pack-node.sh'];
  return c.find((p) => p && fs.existsSync(p)) || null;
}

// npm's own CLI script, run with this node (as scripts/pack-test.js does), else `npm` on PATH.
function npmCommand() {
  const c = [path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js'), process.env.npm_execpath];
  for (const p of c) if (p && p.endsWith('.js') && fs.existsSync(p)) return [process.execPath, [p]];
  const npm = which('npm');
  return npm ? [npm, []] : null;
}

function npmPackJson(output) {
  const start = output.indexOf('[');
  const end = output.lastIndexOf(']');
  if (start < 0 || end < start) return null;
  try {
    return JSON.parse(output.slice(start, end + 1))[0] || null;
  } catch {
    return null;
  }
}

// Stages the package (npm's file list of the repository, minus dist/ and prebuilds/, which are made
// here: the library compiled with its types and ES-module entry, and build-gpu's addon as
// prebuilds/<platform>/facecuda.glibc.node with its facecuda.json, both by scripts/prebuild.js
// --from-build --build-dir), then `npm pack`s it into the carry folder.
async function packTarball(carry, buildDir, tsc) {
  const npm = npmCommand();
  if (!npm) throw new Error('npm was not found');
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'facecuda-gpu-pkg-'));
  try {
    // 1. What npm packs from the repository (package.json `files`), except the built folders.
    const list = runSync(npm[0], [...npm[1], 'pack', '--dry-run', '--json', '--ignore-scripts'], 300);
    const meta = list.ok ? npmPackJson(list.stdout) : null;
    if (!meta) throw new Error(`npm pack --dry-run failed: ${(list.error || list.stderr || list.stdout).slice(-500)}`);
    for (const f of meta.files.map((x) => x.path)) {
      if (/^(dist|prebuilds)\//.test(f)) continue;
      fs.mkdirSync(path.join(stage, path.dirname(f)), { recursive: true });
      fs.copyFileSync(path.join(root, f), path.join(stage, f));
    }
    // 2. dist/: JavaScript and types (source maps are not packed), cli.js executable, the ESM entry
    //    (the same text scripts/build.js writes).
    const dist = path.join(stage, 'dist');
    const r = await runChild('tsc-package', process.execPath, [tsc, '-p', 'tsconfig.json', '--outDir', dist, '--sourceMap', 'false', '--declarationMap', 'false'], { timeoutS: 600 });
    if (r.status !== 0) throw new Error('tsc (package dist) failed');
    if (fs.existsSync(path.join(dist, 'cli.js'))) fs.chmodSync(path.join(dist, 'cli.js'), 0o755);
    require('./build.js').writeEsmEntry(dist);
    // 3. prebuilds/<platform>/: build-gpu's addon, stripped, and its requirements (scripts/prebuild.js).
    const pb = runSync(process.execPath, [path.join(root, 'scripts', 'prebuild.js'), '--from-build', `--build-dir=${buildDir}`, `--out=${path.join(stage, 'prebuilds')}`], 300);
    if (!pb.ok) throw new Error(`scripts/prebuild.js failed: ${(pb.error || pb.stderr || pb.stdout).slice(-500)}`);
    const requirements = JSON.parse(fs.readFileSync(path.join(stage, 'prebuilds', `${process.platform}-${process.arch}`, 'facecuda.json'), 'utf8'));
    // 4. npm pack into the carry folder.
    const packed = runSync(npm[0], [...npm[1], 'pack', '--json', '--ignore-scripts', '--pack-destination', carry], 300, { cwd: stage });
    const pm = packed.ok ? npmPackJson(packed.stdout) : null;
    if (!pm || !fs.existsSync(path.join(carry, pm.filename))) throw new Error(`npm pack failed: ${(packed.error || packed.stderr || packed.stdout).slice(-500)}`);
    const files = pm.files.map((x) => x.path);
    const need = ['package.json', 'dist/index.js', 'dist/index.mjs', `prebuilds/${process.platform}-${process.arch}/facecuda.glibc.node`, `prebuilds/${process.platform}-${process.arch}/facecuda.json`];
    const missing = need.filter((f) => !files.includes(f));
    if (missing.length) throw new Error(`the tarball lacks ${missing.join(', ')}`);
    return { file: pm.filename, bytes: fileSize(path.join(carry, pm.filename)), unpacked_bytes: pm.unpackedSize, entries: files.length, shasum: pm.shasum, prebuild: requirements };
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
}

async function prepare(o) {
  const carry = path.resolve(o.carry || path.join(root, '.gpu-carry'));
  const fail = (msg) => {
    log(`prepare failed: ${msg}`);
    process.exit(2);
  };
  const nvcc = findNvcc();
  if (!nvcc) fail('nvcc was not found (PATH, CUDA_HOME, /usr/local/cuda/bin): the GPU build needs it');
  if (!which('cmake')) fail('cmake was not found');
  const cmakeJs = resolveFrom('cmake-js/bin/cmake-js');
  const tsc = resolveFrom('typescript/bin/tsc');
  if (!cmakeJs || !tsc) fail('cmake-js and typescript must be installed (npm ci)');
  const archs = process.env.FACECUDA_CUDA_ARCHS || '90-real;90-virtual';
  const buildDir = path.join(root, 'build-gpu');
  const long = 3600;

  // Keep a packed node across runs (packing takes about a minute); everything else is rebuilt.
  fs.mkdirSync(carry, { recursive: true });
  for (const e of fs.readdirSync(carry)) if (e !== 'node.xz') fs.rmSync(path.join(carry, e), { recursive: true, force: true });

  if (o.build) {
    const jobs = String(Math.max(1, os.cpus().length));
    const r = await runChild('build', process.execPath, [cmakeJs, 'compile', '--out', buildDir, '--parallel', jobs,
      '--CDFACECUDA_CUDA=ON', `--CDFACECUDA_CUDA_ARCHS=${archs}`, '--CDFACECUDA_BUILD_TESTS=ON'], { timeoutS: long });
    if (r.status !== 0) fail(`the CUDA build failed (${r.timedOut ? 'timed out' : `exit ${r.status}`})`);
  }
  const addon = path.join(buildDir, 'Release', 'facecuda.node');
  const tests = path.join(buildDir, 'Release', 'facecuda_tests');
  for (const f of [addon, tests]) if (!fs.existsSync(f)) fail(`${f} is missing after the build`);
  for (const [src, name] of [[addon, 'facecuda.node'], [tests, 'facecuda_tests']]) {
    const dst = path.join(carry, name);
    fs.copyFileSync(src, dst);
    fs.chmodSync(dst, 0o755);
    const s = runSync('strip', [name === 'facecuda.node' ? '--strip-unneeded' : '--strip-all', dst], 120);
    if (!s.ok) log(`strip ${name} failed (${s.error || s.stderr.trim()}); carrying it unstripped`);
  }

  // The library (dist/) and the tests compiled to JavaScript.
  let r = await runChild('tsc', process.execPath, [tsc, '-p', 'tsconfig.json', '--outDir', path.join(carry, 'dist'),
    '--declaration', 'false', '--declarationMap', 'false', '--sourceMap', 'false'], { timeoutS: 600 });
  if (r.status !== 0) fail('tsc (lib) failed');
  r = await runChild('tsc', process.execPath, [tsc, '-p', path.join('test', 'tsconfig.json'), '--noEmit', 'false',
    '--outDir', path.join(carry, 'gpu-tests'), '--declaration', 'false', '--declarationMap', 'false', '--sourceMap', 'false'],
  { timeoutS: 600 });
  if (r.status !== 0) fail('tsc (tests) failed');
  // lib/ reads <package root>/package.json (its version): the root of dist/ is the carry folder, the
  // root of gpu-tests/lib is gpu-tests/.
  fs.copyFileSync(path.join(root, 'package.json'), path.join(carry, 'package.json'));
  fs.copyFileSync(path.join(root, 'package.json'), path.join(carry, 'gpu-tests', 'package.json'));

  // jest and its dependency closure, packed (JavaScript compresses about 6:1).
  const closure = dependencyClosure('jest');
  if (!closure) {
    log('jest is not installed: the GPU jest suites will not be carried');
  } else {
    const list = path.join(os.tmpdir(), `facecuda-jest-files-${process.pid}.txt`);
    const files = packageFiles(closure);
    fs.writeFileSync(list, `${files.join('\n')}\n`);
    const t = runSync('tar', ['-C', root, '-cJf', path.join(carry, 'jest.tar.xz'), '-T', list], 900, { env: { ...process.env, XZ_OPT: '-6 -T0' } });
    fs.rmSync(list, { force: true });
    if (!t.ok) fail(`packing jest failed: ${t.error || t.stderr}`);
    log(`jest: ${closure.length} packages, ${files.length} files`);
  }

  // The package as users get it: a staged copy of the package with the GPU build as its prebuild,
  // packed by npm (facecuda-<version>.tgz). A failure here is loud but not fatal: phase 2 then skips
  // its tarball step with the reason.
  let tarball = null;
  try {
    tarball = await packTarball(carry, buildDir, tsc);
    log(`tarball: ${tarball.file}, ${mib(tarball.bytes)} packed, ${mib(tarball.unpacked_bytes)} unpacked, ${tarball.entries} files`);
  } catch (e) {
    log(`WARNING: the package tarball was not produced (${e.message}); phase 2 will skip its tarball step`);
    for (const f of fs.readdirSync(carry)) if (/^facecuda-.*\.tgz$/.test(f)) fs.rmSync(path.join(carry, f), { force: true });
  }

  // node for a GPU machine without Node.js.
  const nodeXz = path.join(carry, 'node.xz');
  if (o.packNode) {
    const packer = findPackNode();
    const fresh = fs.existsSync(nodeXz) && fs.statSync(nodeXz).mtimeMs > fs.statSync(process.execPath).mtimeMs;
    if (fresh) log('node.xz is up to date');
    else if (!packer) log('pack-node.sh not found (set FACECUDA_PACK_NODE): node is not carried; the GPU machine must have node');
    else {
      const p = await runChild('pack-node', 'bash', [packer, carry], { timeoutS: 900 });
      if (p.status !== 0) log('packing node failed: the GPU machine must have node');
    }
  } else {
    fs.rmSync(nodeXz, { force: true });
  }

  const nvccVersion = (runSync(nvcc, ['--version'], 60).stdout.match(/release [^\n]*/) || [''])[0];
  const files = {};
  let total = 0;
  for (const e of fs.readdirSync(carry)) {
    const s = dirSize(path.join(carry, e));
    files[e] = s;
    total += s;
  }
  const git = gitInfo();
  const manifest = {
    created: new Date().toISOString(),
    git,
    node: process.version,
    nvcc: nvccVersion,
    cuda_archs: archs,
    tarball,
    files,
    total_bytes: total,
  };
  fs.writeFileSync(path.join(carry, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);

  // What a device call would carry: the working tree (tracked + untracked, not ignored) + this folder.
  let tree = 0;
  const ls = runSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], 60);
  if (ls.ok) for (const f of ls.stdout.split('\0')) if (f) tree += fileSize(path.join(root, f));
  log(`carry folder ${carry}:`);
  for (const [k, v] of Object.entries(files).sort((a, b) => b[1] - a[1])) log(`  ${k.padEnd(18)} ${mib(v)}`);
  log(`  total              ${mib(total)}; working tree ${mib(tree)}; together ${mib(total + tree)} of the ${mib(DEVICE_TREE_LIMIT)} a device run carries`);
  if (total + tree > DEVICE_TREE_LIMIT) log('WARNING: too large for a device run: use --no-node on a GPU machine that has node');
  log('device command (carry [".gpu-carry"], timeout_s 600):');
  log(`  ${DEVICE_COMMAND}`);
  return 0;
}

// ============================================================================================
// Phase 2: the checks
// ============================================================================================

const PY_PROBE = `
import json, os, sys
out = {"executable": sys.executable, "version": sys.version.split()[0], "nvidia_lib_dirs": []}
try:
    import nvidia
    for base in list(nvidia.__path__):
        for sub in sorted(os.listdir(base)):
            d = os.path.join(base, sub, "lib")
            if os.path.isdir(d) and any(".so" in f for f in os.listdir(d)):
                out["nvidia_lib_dirs"].append(d)
except Exception as e:
    out["nvidia_error"] = repr(e)
try:
    import torch
    t = {"version": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
         "cuda_available": torch.cuda.is_available()}
    if t["cuda_available"]:
        t["device"] = torch.cuda.get_device_name(0)
    out["torch"] = t
except Exception as e:
    out["torch_error"] = repr(e)
print("GPU_CHECK_JSON " + json.dumps(out))
`;

// nvidia/*/lib directories by scanning (when python3 cannot tell): the same prefixes the addon scans.
function scanNvidiaDirs() {
  const prefixes = [process.env.VIRTUAL_ENV, process.env.CONDA_PREFIX];
  const py = which('python3') || which('python');
  if (py) {
    prefixes.push(path.dirname(path.dirname(py)));
    try {
      prefixes.push(path.dirname(path.dirname(fs.realpathSync(py))));
    } catch {
      // dangling link
    }
  }
  prefixes.push(path.join(os.homedir(), '.local'), '/usr/local', '/usr');
  const dirs = [];
  for (const p of prefixes.filter(Boolean)) {
    let libs = [];
    try {
      libs = fs.readdirSync(path.join(p, 'lib')).filter((d) => d.startsWith('python3'));
    } catch {
      continue;
    }
    for (const l of libs) {
      for (const sp of ['site-packages', 'dist-packages']) {
        const nv = path.join(p, 'lib', l, sp, 'nvidia');
        let subs = [];
        try {
          subs = fs.readdirSync(nv);
        } catch {
          continue;
        }
        for (const s of subs) {
          const d = path.join(nv, s, 'lib');
          if (fs.existsSync(d) && !dirs.includes(d)) dirs.push(d);
        }
      }
    }
  }
  return dirs;
}

// The tarball check, run by node in a temporary project whose node_modules/facecuda is the carried
// tarball, unpacked: the package exactly as `npm install facecuda-<version>.tgz` lays it out (it has no
// install scripts). It loads the package by name, never its image modules (sharp is not installed
// there), runs each check on its own (one failing does not stop the others), writes
// { checks: [{ name, status, detail, seconds }], ... } to argv[2] and exits 1 when a check failed.
const TARBALL_CHECK = String.raw`
'use strict';
const fs = require('fs');
const path = require('path');
const out = { checks: [] };
const save = () => fs.writeFileSync(process.argv[2], JSON.stringify(out, null, 2));
let cudaOk = false;
async function check(name, fn, { needsCuda = false } = {}) {
  const t0 = Date.now();
  let status = 'passed';
  let detail = '';
  if (needsCuda && !cudaOk) {
    status = 'skipped';
    detail = 'CUDA is unavailable (see the check "cuda available")';
  } else {
    try {
      const r = await fn();
      if (r && r.ok === false) status = 'failed';
      detail = r && r.detail !== undefined ? r.detail : '';
    } catch (e) {
      status = 'failed';
      detail = String((e && e.stack) || e).split('\n').slice(0, 4).join(' | ');
    }
  }
  const c = { name, status, detail, seconds: (Date.now() - t0) / 1000 };
  out.checks.push(c);
  console.log((status === 'passed' ? 'ok   ' : status === 'skipped' ? 'skip ' : 'FAIL ') + name + (detail ? ': ' + detail : ''));
  save();
  return c;
}
let seed = 20240611;
const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
const randn = (n, scale = 1) => Float32Array.from({ length: n }, () => rnd() * scale);
// max |a - b| / max |b|: the error relative to the reference's magnitude.
function relErr(a, b) {
  let d = 0;
  let m = 0;
  for (let i = 0; i < b.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return m > 0 ? d / m : d;
}
const fmt = (x) => (typeof x === 'number' ? x.toExponential(2) : String(x));

(async () => {
  const pkgDir = path.dirname(require.resolve('facecuda/package.json'));
  out.package = { dir: pkgDir, version: require('facecuda/package.json').version };
  let fc;
  await check('require facecuda (no image modules)', () => {
    fc = require('facecuda');
    const sharpLoaded = Object.keys(require.cache).filter((k) => /[\\/]node_modules[\\/](sharp|@img)[\\/]/.test(k));
    let sharpInstalled = true;
    try {
      require.resolve('sharp', { paths: [pkgDir] });
    } catch {
      sharpInstalled = false;
    }
    return { ok: sharpLoaded.length === 0, detail: sharpLoaded.length ? 'sharp was loaded eagerly: ' + sharpLoaded[0] : 'sharp not loaded (installed: ' + sharpInstalled + ')' };
  });
  if (!fc) {
    save();
    process.exitCode = 1;
    return;
  }
  let info;
  await check('system.info({ libraries: true })', async () => {
    info = await fc.system.info({ libraries: true });
    out.info = info;
    return { detail: 'facecuda ' + (info.version || out.package.version) + ', addon ' + info.addon.how };
  });
  const want = path.join(pkgDir, 'prebuilds', process.platform + '-' + process.arch, 'facecuda.glibc.node');
  await check('the addon is the tarball prebuild', () => {
    const got = info.addon.path;
    const same = fs.existsSync(got) && fs.realpathSync(got) === fs.realpathSync(want);
    return { ok: same, detail: got + (same ? '' : ' (expected ' + want + ')') + (info.addon.requirements ? ', built for ' + JSON.stringify(info.addon.requirements.cuda.architectures) : '') };
  });
  const cuda = (info && info.cuda) || {};
  cudaOk = cuda.available === true;
  await check('cuda available', () => {
    const d = (cuda.devices || [])[0];
    return { ok: cudaOk && !!d, detail: cudaOk && d ? d.name + ' (sm ' + d.computeCapability + '), driver ' + cuda.driverVersion + ', runtime ' + cuda.runtimeVersion + ', archs ' + cuda.compiledArchs : 'unavailable: ' + cuda.reason };
  });
  for (const lib of ['cublas', 'cudnn']) {
    await check(lib + ' found', () => {
      const l = (cuda.libraries || []).find((x) => x.name === lib);
      if (!l) return { ok: false, detail: 'not reported by system.info' };
      if (!l.found) return { ok: false, detail: l.error };
      const pip = /[\\/](site|dist)-packages[\\/]nvidia[\\/]/.test(l.path);
      return { detail: l.version + ' at ' + l.path + (pip ? ' (the Python environment: site-packages/nvidia)' : ' (not from a Python environment)') };
    });
  }
  await check('cuda selected automatically', () => {
    const dev = fc.resolveDevice('auto');
    const t = fc.Tensor.from(new Float32Array([1, 2, 3, 4]), [2, 2]);
    const td = t.device;
    t.dispose();
    const head = new fc.ArcFaceHead({ embeddingSize: 4, numClasses: 3 });
    const hd = head.device;
    head.dispose();
    const ok = dev === 'cuda:0' && td === 'cuda:0' && hd === 'cuda:0';
    return { ok, detail: "resolveDevice('auto') " + dev + ', Tensor.from ' + td + ', new ArcFaceHead ' + hd + (ok ? '' : ' (auto reason: ' + fc.autoDeviceReason() + ')') };
  }, { needsCuda: true });

  // GEMM: cuBLAS against facecuda's CPU GEMM on the same inputs.
  const M = 96, K = 160, N = 72;
  const A = randn(M * K);
  const B = randn(K * N);
  for (const [precision, tol] of [['fp32', 1e-4], ['fp16', 3e-3]]) {
    await check('gemm ' + precision + ' cuda vs cpu [' + M + 'x' + K + ']x[' + K + 'x' + N + ']', async () => {
      const run = async (device) => {
        const a = fc.Tensor.from(A, [M, K], { device });
        const b = fc.Tensor.from(B, [K, N], { device });
        const c = await fc.gemm(a, b, { precision });
        const v = await c.toArray();
        a.dispose();
        b.dispose();
        c.dispose();
        return v;
      };
      const ref = await run('cpu');
      const got = await run('cuda');
      const e = relErr(got, ref);
      let finite = true;
      for (const v of got) if (!Number.isFinite(v)) finite = false;
      return { ok: finite && e <= tol, detail: 'max error / max |ref| ' + fmt(e) + ' (tolerance ' + fmt(tol) + ', CPU ' + precision + ' reference)' + (finite ? '' : ', non-finite values') };
    }, { needsCuda: true });
  }

  // ArcFaceHead: one forward + backward on both devices with the same weights.
  await check('ArcFaceHead forward+backward cuda vs cpu (1e-3)', async () => {
    const D = 64, C = 1000, Bn = 32;
    const W = randn(C * D, 0.05);
    const x = randn(Bn * D);
    const labels = Int32Array.from({ length: Bn }, (_, i) => (i * 37) % C);
    const run = async (device) => {
      const head = new fc.ArcFaceHead({ embeddingSize: D, numClasses: C, device });
      await head.setWeight(W);
      const f = await head.forward(x, labels);
      const g = await head.backward();
      const r = { loss: f.loss, gx: await g.gradEmbeddings.toArray(), gw: await g.gradWeight.toArray() };
      head.dispose();
      return r;
    };
    const cpu = await run('cpu');
    const gpu = await run('cuda');
    const eLoss = Math.abs(gpu.loss - cpu.loss) / Math.abs(cpu.loss);
    const eGx = relErr(gpu.gx, cpu.gx);
    const eGw = relErr(gpu.gw, cpu.gw);
    const ok = [eLoss, eGx, eGw].every((e) => Number.isFinite(e) && e <= 1e-3);
    return { ok, detail: 'loss ' + cpu.loss.toFixed(5) + ' vs ' + gpu.loss.toFixed(5) + ' (rel ' + fmt(eLoss) + '), gradEmbeddings ' + fmt(eGx) + ', gradWeight ' + fmt(eGw) };
  }, { needsCuda: true });

  // IResNet r18 (narrow) in fp16 on CUDA: finite embeddings of the right shape.
  await check("IResNet r18 fp16 forward on cuda (baseWidth 8, 64-d, 112 px)", async () => {
    const opts = { baseWidth: 8, embeddingSize: 64, inputSize: 112, seed: 3 };
    const model = fc.IResNet.create('r18', { ...opts, device: 'cuda', precision: 'fp16' });
    model.eval();
    const n = 2;
    const input = randn(n * 3 * 112 * 112);
    const y = await model.forward(input);
    const shape = y.shape.slice();
    const v = await y.toArray();
    y.dispose();
    model.dispose();
    let bad = 0;
    for (const z of v) if (!Number.isFinite(z)) bad++;
    let cos = '';
    try {
      const ref = fc.IResNet.create('r18', { ...opts, device: 'cpu' });
      ref.eval();
      const r = await ref.forward(input);
      const rv = await r.toArray();
      r.dispose();
      ref.dispose();
      let dot = 0, na = 0, nb = 0;
      for (let i = 0; i < 64; i++) { dot += v[i] * rv[i]; na += v[i] * v[i]; nb += rv[i] * rv[i]; }
      cos = ', cosine to the CPU fp32 embedding ' + (dot / Math.sqrt(na * nb)).toFixed(5);
    } catch (e) {
      cos = ', CPU reference failed: ' + String(e && e.message || e).slice(0, 200);
    }
    const ok = bad === 0 && shape.length === 2 && shape[0] === n && shape[1] === 64;
    return { ok, detail: 'output [' + shape.join(', ') + '], ' + bad + ' non-finite' + cos };
  }, { needsCuda: true });

  out.passed = out.checks.filter((c) => c.status === 'passed').length;
  out.failed = out.checks.filter((c) => c.status === 'failed').length;
  out.skipped = out.checks.filter((c) => c.status === 'skipped').length;
  save();
  console.log('tarball-check: ' + out.passed + ' passed, ' + out.failed + ' failed, ' + out.skipped + ' skipped');
  process.exitCode = out.failed || out.skipped ? 1 : 0;
})().catch((e) => {
  console.error(e);
  out.error = String((e && e.stack) || e);
  save();
  process.exitCode = 1;
});
`;

// Step `tarball`: the carried facecuda-<version>.tgz unpacked as node_modules/facecuda of a temporary
// project, then TARBALL_CHECK run there with the environment as given (no FACECUDA_ADDON, no library
// environment added: the package must find its prebuild and cuBLAS/cuDNN by itself, as for a user).
async function tarballStep({ o, carry, tmp, left, summary, step }) {
  const name = 'tarball';
  const skipped = (reason) => {
    summary.steps.push({ name, status: 'skipped', reason });
    log(`[${name}] skipped: ${reason}`);
  };
  if (o.skip.has(name)) {
    summary.steps.push({ name, status: 'skipped', reason: '--skip' });
    return;
  }
  let tgz = null;
  try {
    const found = fs.readdirSync(carry).filter((f) => /^facecuda-.*\.tgz$/.test(f)).sort();
    if (found.length) tgz = path.join(carry, found[found.length - 1]);
  } catch {
    // no carry folder
  }
  if (!tgz) {
    skipped(`no facecuda-*.tgz in ${carry} (run --prepare on a build machine)`);
    return;
  }
  if (left() - 15 < 30) {
    skipped(`deadline (${Math.round(left())} s left)`);
    return;
  }
  const app = path.join(tmp, 'tarball-app');
  const nm = path.join(app, 'node_modules');
  fs.mkdirSync(nm, { recursive: true });
  fs.writeFileSync(path.join(app, 'package.json'), `${JSON.stringify({ name: 'facecuda-tarball-check', version: '1.0.0', private: true }, null, 2)}\n`);
  let r = await runChild('unpack-tarball', 'tar', ['-xzf', tgz, '-C', nm], { timeoutS: Math.min(120, left() - 15) });
  const py = which('python3');
  if (r.status !== 0 && py) {
    r = await runChild('unpack-tarball', py, ['-c', 'import sys, tarfile; tarfile.open(sys.argv[1], "r:gz").extractall(sys.argv[2])', tgz, nm],
      { timeoutS: Math.min(120, left() - 15) });
  }
  const pkg = path.join(nm, 'facecuda');
  if (r.status === 0 && fs.existsSync(path.join(nm, 'package'))) fs.renameSync(path.join(nm, 'package'), pkg);
  if (!fs.existsSync(path.join(pkg, 'package.json'))) {
    summary.steps.push({ name, status: 'failed', tarball: tgz, error: `unpacking ${path.basename(tgz)} failed`, output_tail: (r.error || r.output || '').slice(-3000) });
    log(`[${name}] unpacking ${tgz} failed`);
    return;
  }
  const script = path.join(app, 'tarball-check.cjs');
  fs.writeFileSync(script, TARBALL_CHECK);
  const jsonFile = path.join(tmp, 'tarball.json');
  const env = { ...process.env };
  for (const k of ['FACECUDA_ADDON', 'NODE_PATH', 'NODE_OPTIONS']) delete env[k];
  await step(name, process.execPath, [script, jsonFile], {
    timeoutS: 240,
    cwd: app,
    env,
    jsonFile,
    parse: (j) => (j && Array.isArray(j.checks)
      ? {
        passed: j.checks.filter((c) => c.status === 'passed').length,
        failed: j.checks.filter((c) => c.status === 'failed').length,
        skipped: j.checks.filter((c) => c.status === 'skipped').length,
        checks: j.checks,
        failures: j.checks.filter((c) => c.status === 'failed').map((c) => `${c.name}: ${c.detail}`),
      }
      : null),
    extra: {
      tarball: tgz,
      tarball_bytes: fileSize(tgz),
      environment: 'as given: FACECUDA_ADDON, NODE_PATH and NODE_OPTIONS removed; no LD_LIBRARY_PATH or FACECUDA_CUDA_LIB_DIRS added',
    },
  });
}

function parseTaggedJson(output, tag) {
  const line = output.split('\n').reverse().find((l) => l.startsWith(`${tag} `));
  if (!line) return null;
  try {
    return JSON.parse(line.slice(tag.length + 1));
  } catch {
    return null;
  }
}

// The harness' JSON, summarized whatever its exact layout: finds the case records (objects with a
// status and op/params/name) and counts them by status.
function summarizeHarness(json) {
  if (!json) return null;
  const cases = [];
  const visit = (v) => {
    if (Array.isArray(v)) v.forEach(visit);
    else if (v && typeof v === 'object') {
      if (typeof v.status === 'string' && (v.op !== undefined || v.name !== undefined || v.params !== undefined)) cases.push(v);
      else Object.values(v).forEach(visit);
    }
  };
  visit(json);
  const count = { passed: 0, failed: 0, skipped: 0, other: 0 };
  for (const c of cases) {
    const s = c.status.toLowerCase();
    if (s.startsWith('pass') || s === 'ok') count.passed++;
    else if (s.startsWith('fail') || s === 'error') count.failed++;
    else if (s.startsWith('skip')) count.skipped++;
    else count.other++;
  }
  const failures = cases.filter((c) => /^(fail|error)/i.test(c.status)).map((c) => `${c.op || c.name || ''} ${c.params || ''}: ${c.detail || ''}`.trim());
  return { ...count, cases: cases.length, failures: failures.slice(0, 50) };
}

function summarizeJest(json) {
  if (!json) return null;
  const failures = [];
  for (const f of json.testResults || []) {
    for (const a of f.assertionResults || []) {
      if (a.status === 'failed') failures.push(`${a.fullName}: ${(a.failureMessages || []).join(' ').slice(0, 2000)}`);
    }
    if (f.status === 'failed' && !(f.assertionResults || []).length) failures.push(`${f.name}: ${(f.message || '').slice(0, 2000)}`);
  }
  return {
    passed: json.numPassedTests || 0,
    failed: (json.numFailedTests || 0) + (json.numRuntimeErrorTestSuites || 0),
    skipped: (json.numPendingTests || 0) + (json.numTodoTests || 0),
    suites: json.numTotalTestSuites || 0,
    failures: failures.slice(0, 50),
  };
}

function lastLine(output, re) {
  const lines = output.split('\n').filter((l) => re.test(l));
  return lines.length ? lines[lines.length - 1].trim() : null;
}

async function check(o) {
  const started = new Date();
  const deadline = Date.now() + o.deadline * 1000;
  const left = () => (deadline - Date.now()) / 1000;
  const stamp = started.toISOString().replace(/[:.]/g, '-');
  const outDir = path.resolve(o.out || process.env.FACECUDA_GPU_CHECK_OUT || path.join(root, 'bench', 'results'));
  fs.mkdirSync(outDir, { recursive: true });
  const host = os.hostname().replace(/[^A-Za-z0-9._-]/g, '_');
  const summaryFile = path.join(outDir, `gpu-check-${host}-${stamp}.json`);
  const logFile = path.join(outDir, `gpu-check-${host}-${stamp}.log`);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'facecuda-gpu-check-'));
  const summary = {
    tool: 'facecuda gpu:check',
    started: started.toISOString(),
    host: { hostname: os.hostname(), platform: `${process.platform}-${process.arch}`, cpus: os.cpus().length, memory_bytes: os.totalmem(), node: process.version, node_path: process.execPath },
    steps: [],
  };

  // 1. artifacts
  const carry = path.resolve(o.carry || process.env.FACECUDA_GPU_CARRY || path.join(root, '.gpu-carry'));
  const first = (...c) => c.find((p) => p && fs.existsSync(p)) || null;
  const art = {
    carry: fs.existsSync(carry) ? carry : null,
    tests: first(path.join(carry, 'facecuda_tests'), path.join(root, 'build-gpu', 'Release', 'facecuda_tests'), path.join(root, 'build', 'Release', 'facecuda_tests')),
    addon: first(path.join(carry, 'facecuda.node'), path.join(root, 'build-gpu', 'Release', 'facecuda.node'), path.join(root, 'build', 'Release', 'facecuda.node')),
    dist: first(path.join(carry, 'dist', 'index.js'), path.join(root, 'dist', 'index.js')),
    gpuTests: first(path.join(carry, 'gpu-tests', 'test', 'gpu')),
    jest: null,
  };
  const manifest = art.carry ? readJson(path.join(carry, 'manifest.json')) : null;
  summary.carry = { dir: art.carry, manifest };
  summary.git = gitInfo() || (manifest && manifest.git) || null;
  if (summary.git) summary.git.source = gitInfo() ? 'git' : 'carry manifest';
  if (art.carry && fs.existsSync(path.join(carry, 'jest.tar.xz')) && !fs.existsSync(path.join(carry, 'node_modules', 'jest'))) {
    let r = await runChild('unpack-jest', 'tar', ['-C', carry, '-xJf', path.join(carry, 'jest.tar.xz')], { timeoutS: Math.min(180, left()) });
    const py = which('python3');
    if (r.status !== 0 && py) {  // no xz on this machine: Python's tarfile reads .tar.xz by itself
      r = await runChild('unpack-jest', py, ['-c', 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])',
        path.join(carry, 'jest.tar.xz'), carry], { timeoutS: Math.min(180, left()) });
    }
    if (r.status !== 0) log('unpacking jest failed: the jest step will be skipped');
  }
  art.jest = first(path.join(carry, 'node_modules', 'jest', 'bin', 'jest.js'), path.join(root, 'node_modules', 'jest', 'bin', 'jest.js'));
  // bench/run.js loads ../dist: give the repository a dist/ when it has none.
  if (art.dist && !fs.existsSync(path.join(root, 'dist')) && art.dist.startsWith(carry)) {
    try {
      fs.symlinkSync(path.join(carry, 'dist'), path.join(root, 'dist'), 'dir');
      log(`linked dist/ -> ${path.join(carry, 'dist')}`);
    } catch (e) {
      log(`could not link dist/: ${e.message}`);
    }
  }
  summary.artifacts = art;
  log(`artifacts: ${JSON.stringify(art)}`);
  if (!art.tests && !art.addon) {
    log('no facecuda_tests and no addon: run `node scripts/gpu-check.js --prepare` on a build machine and carry .gpu-carry/');
    summary.ok = false;
    summary.error = 'artifacts missing';
    fs.writeFileSync(summaryFile, `${JSON.stringify(summary, null, 2)}\n`);
    return 2;
  }

  // 2. facts about the machine
  const smi = which('nvidia-smi');
  if (smi) {
    const r = runSync(smi, ['--query-gpu=index,name,driver_version,memory.total,compute_cap,pci.bus_id', '--format=csv,noheader'], 30);
    summary.nvidia_smi = r.ok
      ? r.stdout.trim().split('\n').map((l) => {
        const [index, name, driver, memory, cc, bus] = l.split(',').map((x) => x.trim());
        return { index: Number(index), name, driver, memory, compute_cap: cc, pci_bus_id: bus };
      })
      : { error: r.error || r.stderr.trim() };
  } else {
    summary.nvidia_smi = { error: 'nvidia-smi not on PATH' };
  }
  const py = which('python3') || which('python');
  let nvidiaDirs = [];
  if (py) {
    const r = await runChild('python', py, ['-c', PY_PROBE], { timeoutS: Math.min(90, left()), quiet: true });
    summary.python = parseTaggedJson(r.output, 'GPU_CHECK_JSON') || { executable: py, error: (r.error || r.output).slice(-2000) };
    nvidiaDirs = (summary.python && summary.python.nvidia_lib_dirs) || [];
  } else {
    summary.python = { error: 'no python3 on PATH' };
  }
  if (!nvidiaDirs.length) nvidiaDirs = scanNvidiaDirs();
  log(`nvidia library directories: ${nvidiaDirs.join(', ') || 'none found'}`);

  // 3. what facecuda finds by itself, then the environment for the children
  const baseEnv = { ...process.env };
  if (art.addon) baseEnv.FACECUDA_ADDON = art.addon;
  const infoScript = 'const fc=require(process.argv[1]);fc.system.info({libraries:true}).then((i)=>{console.log("GPU_CHECK_JSON "+JSON.stringify(i));},(e)=>{console.log("GPU_CHECK_JSON "+JSON.stringify({error:String(e&&e.stack||e)}));process.exitCode=1;});';
  const facecudaInfo = async (name, env) => {
    if (!art.dist) return { error: 'dist/ not available' };
    const r = await runChild(name, process.execPath, ['-e', infoScript, art.dist], { env, timeoutS: Math.min(120, left()), quiet: true });
    return parseTaggedJson(r.output, 'GPU_CHECK_JSON') || { error: (r.error || r.output || `exit ${r.status}`).slice(-2000) };
  };
  const self = await facecudaInfo('info-self', baseEnv);
  summary.self_discovery = self.cuda ? { libraries: self.cuda.libraries, available: self.cuda.available, reason: self.cuda.reason } : self;
  const env = { ...baseEnv };
  if (o.libEnv && nvidiaDirs.length) {
    env.LD_LIBRARY_PATH = [...nvidiaDirs, ...(process.env.LD_LIBRARY_PATH || '').split(':').filter(Boolean)].join(':');
    if (!env.FACECUDA_CUDA_LIB_DIRS) env.FACECUDA_CUDA_LIB_DIRS = nvidiaDirs.join(':');
  }
  summary.library_env = { LD_LIBRARY_PATH: env.LD_LIBRARY_PATH || null, FACECUDA_CUDA_LIB_DIRS: env.FACECUDA_CUDA_LIB_DIRS || null, FACECUDA_ADDON: env.FACECUDA_ADDON || null };
  summary.facecuda = await facecudaInfo('info', env);

  // 4. the steps
  const step = async (name, cmd, args, { timeoutS, jsonFile, parse, cwd, quiet, env: stepEnv, extra }) => {
    if (o.skip.has(name)) {
      summary.steps.push({ name, status: 'skipped', reason: '--skip' });
      return;
    }
    const budget = Math.min(timeoutS, left() - 15);
    if (budget < 20) {
      summary.steps.push({ name, status: 'skipped', reason: `deadline (${Math.round(left())} s left)` });
      log(`[${name}] skipped: the deadline is near`);
      return;
    }
    const r = await runChild(name, cmd, args, { env: stepEnv || env, timeoutS: budget, cwd, quiet });
    if (quiet) {
      const closing = lastLine(r.output, /\d+ passed, \d+ failed/);
      if (closing) log(`[${name}] ${closing} (full output in the log file)`);
    }
    const json = jsonFile ? readJson(jsonFile) : null;
    const parsed = parse ? parse(json, r.output) : null;
    let status = r.timedOut ? 'timeout' : r.status === 0 ? 'passed' : 'failed';
    if (r.error) status = 'error';
    summary.steps.push({
      name,
      command: [cmd, ...args].join(' '),
      status,
      exit: r.status,
      signal: r.signal,
      seconds: Math.round(r.seconds * 10) / 10,
      error: r.error || undefined,
      closing_line: lastLine(r.output, /\d+ passed, \d+ failed/),
      summary: parsed,
      result: json,
      ...(extra || {}),
      output_tail: status === 'passed' ? undefined : r.output.slice(-6000),
    });
  };

  await tarballStep({ o, carry, tmp, left, summary, step });

  if (art.tests) {
    const f1 = path.join(tmp, 'native-cuda.json');
    await step('native-cuda', art.tests, ['--cuda-only', '--json', f1], { timeoutS: 300, jsonFile: f1, parse: (j) => summarizeHarness(j) });
    const f2 = path.join(tmp, 'native-full.json');
    await step('native-full', art.tests, ['--mode', 'test', '--json', f2], { timeoutS: 420, jsonFile: f2, parse: (j) => summarizeHarness(j), quiet: true });
  } else {
    summary.steps.push({ name: 'native-cuda', status: 'skipped', reason: 'facecuda_tests not found' });
  }

  const gpuDir = art.gpuTests || null;
  const gpuFiles = gpuDir ? fs.readdirSync(gpuDir).filter((f) => f.endsWith('.test.js')) : [];
  if (art.jest && gpuFiles.length) {
    const f3 = path.join(tmp, 'jest.json');
    const config = { rootDir: gpuDir, testEnvironment: 'node', transform: {}, testMatch: ['<rootDir>/*.test.js'], testTimeout: 300000 };
    await step('jest', process.execPath, [art.jest, '--config', JSON.stringify(config), '--runInBand', '--ci', '--json', '--outputFile', f3],
      { timeoutS: 300, jsonFile: f3, parse: (j) => summarizeJest(j) });
  } else {
    summary.steps.push({ name: 'jest', status: 'skipped', reason: !gpuFiles.length ? 'no compiled test/gpu/*.test.js (run --prepare)' : 'jest not available' });
  }

  const benchRun = path.join(root, 'bench', 'run.js');
  if (fs.existsSync(benchRun) && fs.existsSync(path.join(root, 'dist', 'index.js'))) {
    const f4 = path.join(tmp, 'bench-cuda.json');
    await step('bench', process.execPath, [benchRun, '--device', 'cuda', '--json', f4], {
      timeoutS: 300,
      jsonFile: f4,
      parse: (j) => (j ? { records: (j.results || []).length } : null),
    });
  } else {
    summary.steps.push({ name: 'bench', status: 'skipped', reason: 'bench/run.js or dist/ missing' });
  }

  // 5. summary
  summary.finished = new Date().toISOString();
  summary.seconds = Math.round((Date.now() - started.getTime()) / 100) / 10;
  summary.ok = summary.steps.every((s) => s.status === 'passed' || (s.status === 'skipped' && s.reason === '--skip'));
  fs.writeFileSync(summaryFile, `${JSON.stringify(summary, null, 2)}\n`);
  fs.rmSync(tmp, { recursive: true, force: true });

  const cuda = (summary.facecuda && summary.facecuda.cuda) || {};
  const dev = (cuda.devices || [])[0];
  const lines = [''];
  lines.push('==== facecuda gpu:check summary');
  lines.push(`device:   ${dev ? `${dev.name} (sm ${dev.computeCapability}, ${dev.multiprocessors} SMs, ${mib(dev.totalMemory || 0)})` : `none: ${cuda.reason || (summary.facecuda && summary.facecuda.error) || 'unknown'}`}`);
  const smiDriver = Array.isArray(summary.nvidia_smi) && summary.nvidia_smi[0] ? ` (nvidia-smi ${summary.nvidia_smi[0].driver})` : '';
  lines.push(`driver:   ${cuda.driverVersion || 'none'}${smiDriver}  runtime: ${cuda.runtimeVersion || '?'}  archs: ${cuda.compiledArchs || '?'}`);
  const selfLibs = (summary.self_discovery && summary.self_discovery.libraries) || [];
  for (const l of cuda.libraries || []) {
    const s = selfLibs.find((x) => x.name === l.name);
    const by = l.found && s ? (s.found ? 'found by its own search too' : 'NOT found by its own search, only with the library env') : '';
    lines.push(`${(l.name + ':').padEnd(10)}${l.found ? `${l.version} ${l.path}` : `not found: ${l.error}`}${by ? ` (${by})` : ''}`);
  }
  if (summary.python && summary.python.torch) {
    const t = summary.python.torch;
    lines.push(`torch:    ${t.version} (CUDA ${t.cuda}, cuDNN ${t.cudnn})`);
  }
  for (const s of summary.steps) {
    const sm = s.summary && typeof s.summary.passed === 'number' ? ` ${s.summary.passed} passed, ${s.summary.failed} failed, ${s.summary.skipped} skipped` : '';
    const extra = s.summary && typeof s.summary.records === 'number' ? ` ${s.summary.records} records` : '';
    lines.push(`${s.name.padEnd(12)}${s.status.toUpperCase()}${sm}${extra}${s.seconds !== undefined ? ` (${s.seconds} s)` : ''}${s.reason ? `: ${s.reason}` : ''}${!s.reason && s.error ? `: ${s.error}` : ''}`);
    if (s.summary && Array.isArray(s.summary.checks)) {
      for (const c of s.summary.checks) lines.push(`    ${c.status === 'passed' ? 'ok  ' : c.status === 'skipped' ? 'skip' : 'FAIL'} ${c.name}${c.detail ? `: ${String(c.detail).split('\n')[0].slice(0, 300)}` : ''}`);
      continue;
    }
    for (const f of (s.summary && s.summary.failures) || []) lines.push(`    ${f.split('\n')[0].slice(0, 300)}`);
  }
  lines.push(`result:   ${summary.ok ? 'ALL PASSED' : 'FAILURES'}  (${summary.seconds} s)`);
  lines.push(`written:  ${summaryFile}`);
  for (const l of lines) log(l);
  fs.writeFileSync(logFile, `${logLines.join('\n')}\n`);
  return summary.ok ? 0 : 1;
}

async function main() {
  let o;
  try {
    o = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`gpu-check: ${e.message}\n`);
    return 2;
  }
  if (o.help) {
    const header = fs.readFileSync(__filename, 'utf8').split('\n').filter((l) => l.startsWith('//')).map((l) => l.slice(3));
    process.stdout.write(`${header.join('\n')}\n`);
    return 0;
  }
  return o.prepare ? prepare(o) : check(o);
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    process.stderr.write(`gpu-check: ${e && e.stack ? e.stack : e}\n`);
    process.exitCode = 2;
  },
);
