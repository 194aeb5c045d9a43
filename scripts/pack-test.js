#!/usr/bin/env node
// `npm run pack:test`: the package as users get it. Packs the repository with `npm pack`, installs the
// tarball into an empty temporary project with `npm install <tarball>` and NO compiler on PATH (PATH
// holds only node and sh), then, in that project:
//   - checks the tarball's contents (dist JS + types, prebuilds with their requirements file, README,
//     LICENSE; no TypeScript sources, native sources, tests or source maps);
//   - `facecuda info`: the prebuild is the addon that loaded, and the CPU fallback reason is printed;
//   - a CommonJS script: one ArcFace head training step with SGD, embeddings from a tiny IResNet through
//     FaceEmbedder, a FaceIndex search, all on the CPU, each checked against a plain-JS expectation;
//   - an ES-module script importing the same names;
//   - a type check of both an .mts (import) and a .cts (require) file with module/moduleResolution
//     node16, against the installed package's `exports` types.
// Without a prebuild it first packages the local build (scripts/prebuild.js --from-build).
// Prints "pack-test: N passed, N failed" and exits non-zero on any failure.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const root = path.resolve(__dirname, '..');
let passed = 0;
let failed = 0;
const keep = process.argv.includes('--keep');

function check(name, ok, detail) {
  if (ok) passed++;
  else failed++;
  process.stdout.write(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? `: ${detail}` : ''}\n`);
  return ok;
}

function run(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, { encoding: 'utf8', maxBuffer: 64 << 20, timeout: 600_000, ...opts });
  return { status: r.status, out: `${r.stdout || ''}${r.stderr || ''}`, error: r.error };
}

function npmCli() {
  const candidates = [
    path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js'),
    process.env.npm_execpath,
  ].filter(Boolean);
  for (const c of candidates) if (c.endsWith('.js') && fs.existsSync(c)) return c;
  const which = run('sh', ['-c', 'command -v npm']);
  if (which.status === 0) {
    const real = fs.realpathSync(which.out.trim());
    if (real.endsWith('.js')) return real;
  }
  throw new Error('cannot find npm-cli.js');
}

function ensurePrebuild() {
  const pre = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, 'facecuda.glibc.node');
  const local = path.join(root, 'build', 'Release', 'facecuda.node');
  const mtime = (p) => (fs.existsSync(p) ? fs.statSync(p).mtimeMs : -1);
  if (mtime(pre) >= 0 && mtime(pre) >= mtime(local)) return;
  const r = run(process.execPath, [path.join(root, 'scripts', 'prebuild.js'), '--from-build'], { cwd: root });
  process.stdout.write(r.out);
  if (r.status !== 0) throw new Error('scripts/prebuild.js --from-build failed');
}

const CJS_CHECK = String.raw`
const fc = require('facecuda');
const assert = require('assert');
(async () => {
  const info = await fc.system.info();
  assert.ok(/prebuilds[\\/]linux-x64[\\/]facecuda\.glibc\.node$/.test(info.addon.path), 'the prebuild loaded: ' + info.addon.path);
  // One ArcFace step: the loss is finite and positive, SGD moves the weight against the gradient.
  const D = 16, C = 10, B = 8;
  let seed = 12345;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
  const head = new fc.ArcFaceHead({ embeddingSize: D, numClasses: C, device: 'cpu', seed: 1 });
  const x = Float32Array.from({ length: B * D }, rnd);
  const labels = Int32Array.from({ length: B }, (_, i) => i % C);
  const hp = await head.parameters();
  const w0 = await hp.weight.toArray();
  const { loss } = await head.forward(x, labels);
  assert.ok(Number.isFinite(loss) && loss > 0, 'loss ' + loss);
  await head.backward();
  const g = await hp.gradWeight.toArray();
  const opt = new fc.SGD([{ params: fc.headParams(hp) }], { lr: 0.1 });
  await opt.step({ lr: 0.1 });
  const w1 = await hp.weight.toArray();
  let maxErr = 0;
  for (let i = 0; i < w0.length; i++) maxErr = Math.max(maxErr, Math.abs(w1[i] - (w0[i] - 0.1 * g[i])));
  assert.ok(maxErr < 1e-6, 'SGD step error ' + maxErr);
  // Embeddings from a tiny IResNet: unit rows.
  const model = fc.IResNet.create('r18', { baseWidth: 4, embeddingSize: 8, inputSize: 32, seed: 2 });
  const embedder = await fc.FaceEmbedder.create({ model });
  const img = (k) => ({ width: 32, height: 32, channels: 3, data: Uint8Array.from({ length: 32 * 32 * 3 }, (_, i) => (i * (k + 3) * 7) % 256) });
  const emb = await embedder.embed([img(0), img(1), img(2)]);
  assert.strictEqual(emb.dim, 8);
  for (let r = 0; r < 3; r++) {
    let n = 0;
    for (let j = 0; j < 8; j++) n += emb.embeddings[r * 8 + j] ** 2;
    assert.ok(Math.abs(n - 1) < 1e-4, 'unit row ' + n);
  }
  // Exact search: each embedding finds itself first.
  const index = new fc.FaceIndex({ dim: 8 });
  index.add([10, 11, 12], emb.embeddings);
  const res = await index.search(emb.embeddings, 1);
  assert.deepStrictEqual(Array.from(res.ids, Number), [10, 11, 12]);
  console.log('cjs ok: loss ' + loss.toFixed(4) + ', embeddings ' + emb.dim + '-d, search top-1 ' + Array.from(res.ids, Number).join(','));
})().catch((e) => { console.error(e); process.exit(1); });
`;

const ESM_CHECK = `
import { ArcFaceHead, FaceIndex, FaceEmbedder, system } from 'facecuda';
import fc from 'facecuda';
if (typeof ArcFaceHead !== 'function' || fc.ArcFaceHead !== ArcFaceHead || typeof FaceIndex !== 'function' || typeof FaceEmbedder !== 'function') process.exit(1);
const i = await system.info();
console.log('esm ok: ' + i.platform);
`;

const TYPES_MTS = `
import { ArcFaceHead, FaceIndex, type HeadPrecision } from 'facecuda';
const h: ArcFaceHead = new ArcFaceHead({ embeddingSize: 4, numClasses: 3 });
const n: number = new FaceIndex({ dim: 4 }).size;
const s: HeadPrecision = 'fp16';
// @ts-expect-error a wrong option type is a type error
new ArcFaceHead({ embeddingSize: '4', numClasses: 3 });
export { h, n, s };
`;

const TYPES_CTS = `
import fc = require('facecuda');
const h: fc.ArcFaceHead = new fc.ArcFaceHead({ embeddingSize: 4, numClasses: 3 });
// @ts-expect-error a missing required option is a type error
new fc.ArcFaceHead({ numClasses: 3 });
export = h;
`;

function main() {
  ensurePrebuild();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'facecuda-pack-'));
  const npm = npmCli();
  try {
    // 1. npm pack (scripts skipped: dist/ and prebuilds/ are already built).
    const packed = run(process.execPath, [npm, 'pack', '--json', '--ignore-scripts', '--pack-destination', tmp], { cwd: root });
    const jsonStart = packed.out.indexOf('[');
    const meta = packed.status === 0 && jsonStart >= 0 ? JSON.parse(packed.out.slice(jsonStart, packed.out.lastIndexOf(']') + 1))[0] : null;
    if (!check('npm pack', meta !== null, meta ? `${meta.filename}, ${(meta.size / 1048576).toFixed(1)} MiB packed, ${(meta.unpackedSize / 1048576).toFixed(1)} MiB unpacked` : packed.out.slice(-2000))) return;
    const files = meta.files.map((f) => f.path);
    const need = ['package.json', 'README.md', 'LICENSE', 'dist/index.js', 'dist/index.mjs', 'dist/index.d.ts', 'dist/index.d.mts', 'dist/cli.js',
      'prebuilds/linux-x64/facecuda.glibc.node', 'prebuilds/linux-x64/facecuda.json'];
    const missing = need.filter((f) => !files.includes(f));
    check('tarball holds dist, types, prebuilds, README and LICENSE', missing.length === 0, missing.length ? `missing ${missing.join(', ')}` : `${files.length} files`);
    const extra = files.filter((f) => /^(lib|native|test|scripts)\//.test(f) || f.endsWith('.map') || f.endsWith('.ts') && !f.endsWith('.d.ts') && !f.endsWith('.d.mts'));
    check('no sources, tests or source maps in the tarball', extra.length === 0, extra.slice(0, 5).join(', '));
    check('unpacked size under 100 MB', meta.unpackedSize < 100e6, `${(meta.unpackedSize / 1e6).toFixed(1)} MB`);

    // 2. An empty project; PATH with node and sh only (no cc, c++, make, cmake, nvcc).
    const proj = path.join(tmp, 'app');
    fs.mkdirSync(proj);
    fs.writeFileSync(path.join(proj, 'package.json'), JSON.stringify({ name: 'facecuda-pack-test', version: '1.0.0', private: true }, null, 2));
    const bin = path.join(tmp, 'bin');
    fs.mkdirSync(bin);
    fs.symlinkSync(process.execPath, path.join(bin, 'node'));
    fs.symlinkSync('/bin/sh', path.join(bin, 'sh'));
    const env = { ...process.env, PATH: bin, npm_config_update_notifier: 'false' };
    for (const k of Object.keys(env)) if (/^(FACECUDA_ADDON|npm_lifecycle|npm_package|INIT_CWD)/.test(k)) delete env[k];
    const compilers = run('/bin/sh', ['-c', 'for c in cc gcc c++ g++ make cmake nvcc; do command -v $c && exit 1; done; exit 0'], { env });
    check('no compiler on PATH', compilers.status === 0, compilers.out.trim());
    const inst = run(process.execPath, [npm, 'install', path.join(tmp, meta.filename), '--no-audit', '--no-fund'], { cwd: proj, env });
    if (!check('npm install <tarball>', inst.status === 0, inst.status === 0 ? '' : inst.out.slice(-3000))) return;
    const installed = JSON.parse(fs.readFileSync(path.join(proj, 'node_modules', 'facecuda', 'package.json'), 'utf8'));
    check('the installed package has no install-time scripts', !['preinstall', 'install', 'postinstall'].some((k) => installed.scripts && installed.scripts[k]),
      JSON.stringify(installed.scripts && { preinstall: installed.scripts.preinstall, install: installed.scripts.install, postinstall: installed.scripts.postinstall }));

    // 3. facecuda info from the installed package.
    const cli = path.join(proj, 'node_modules', '.bin', 'facecuda');
    const info = run(process.execPath, [cli, 'info'], { cwd: proj, env });
    process.stdout.write(info.out.split('\n').map((l) => `     | ${l}`).join('\n') + '\n');
    check('facecuda info reports the prebuild', info.status === 0 && /node_modules\/facecuda\/prebuilds\/linux-x64\/facecuda\.glibc\.node/.test(info.out) && /prebuild needs glibc >= /.test(info.out));
    check('facecuda info reports the CPU fallback reason', /cuda {6}unavailable: .+/.test(info.out) && /using the CPU backend/.test(info.out) || /cuda {6}available/.test(info.out));

    // 4. CommonJS and ES-module use.
    fs.writeFileSync(path.join(proj, 'check.cjs'), CJS_CHECK);
    fs.writeFileSync(path.join(proj, 'check.mjs'), ESM_CHECK);
    const cjs = run(process.execPath, ['check.cjs'], { cwd: proj, env });
    check('require: head step, embedding, search on the CPU', cjs.status === 0, cjs.out.trim().split('\n').slice(-3).join(' | '));
    const esm = run(process.execPath, ['check.mjs'], { cwd: proj, env });
    check('import: the same names through the ES-module entry', esm.status === 0, esm.out.trim().split('\n').slice(-2).join(' | '));

    // 5. Types for import (.mts) and require (.cts).
    fs.writeFileSync(path.join(proj, 'types.mts'), TYPES_MTS);
    fs.writeFileSync(path.join(proj, 'types.cts'), TYPES_CTS);
    fs.writeFileSync(path.join(proj, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { module: 'node16', moduleResolution: 'node16', target: 'es2022', strict: true, noEmit: true,
        typeRoots: [path.join(root, 'node_modules', '@types')], types: ['node'] },
      files: ['types.mts', 'types.cts'],
    }, null, 2));
    const tsc = run(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: proj, env });
    check('types resolve for import and require (node16)', tsc.status === 0, tsc.out.trim().slice(0, 2000));
  } finally {
    if (!keep) fs.rmSync(tmp, { recursive: true, force: true });
    else process.stdout.write(`kept ${tmp}\n`);
  }
}

try {
  main();
} catch (e) {
  check('pack-test', false, e.message);
}
process.stdout.write(`pack-test: ${passed} passed, ${failed} failed\n`);
process.exit(failed ? 1 : 0);
