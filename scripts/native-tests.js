#!/usr/bin/env node
// Runs the native op test harness.
//   node scripts/native-tests.js [--mode test|grad|perf|all] [harness args...]
//       uses build/Release/facecuda_tests (built by `npm install` / `npm run compile` with CMake)
//   node scripts/native-tests.js --sanitize [--mode ...]
//       configures build-sanitize/ with FACECUDA_SANITIZE=ON (AddressSanitizer + UBSan), builds the
//       harness there and runs it; any sanitizer report fails the run (halt_on_error)
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const root = path.resolve(__dirname, '..');
const args = process.argv.slice(2);
const sanitize = args.includes('--sanitize');
const rest = args.filter((a) => a !== '--sanitize');

function run(cmd, argv, env) {
  process.stdout.write(`$ ${cmd} ${argv.join(' ')}\n`);
  const r = spawnSync(cmd, argv, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } });
  if (r.error) throw r.error;
  return r.status;
}

let bin = path.join(root, 'build', 'Release', 'facecuda_tests');
if (sanitize) {
  const dir = path.join(root, 'build-sanitize');
  const cuda = process.env.FACECUDA_CUDA || 'AUTO';
  let s = run('cmake', ['-S', root, '-B', dir, '-DCMAKE_BUILD_TYPE=RelWithDebInfo', '-DFACECUDA_SANITIZE=ON', `-DFACECUDA_CUDA=${cuda}`]);
  if (s !== 0) process.exit(s);
  s = run('cmake', ['--build', dir, '--target', 'facecuda_tests', '-j', String(os.cpus().length)]);
  if (s !== 0) process.exit(s);
  bin = path.join(dir, 'Release', 'facecuda_tests');
}
if (!fs.existsSync(bin)) {
  process.stderr.write(`${bin} does not exist: build with CMake first (npm run compile)\n`);
  process.exit(1);
}
const modeArgs = rest.includes('--mode') ? rest : ['--mode', 'test', ...rest];
const env = sanitize
  ? {
      ASAN_OPTIONS: 'halt_on_error=1:abort_on_error=0:detect_leaks=1:exitcode=23',
      UBSAN_OPTIONS: 'halt_on_error=1:print_stacktrace=1:exitcode=24',
    }
  : {};
let status = run(bin, modeArgs, env);
if (status === 0 && !rest.includes('--mode')) status = run(bin, ['--mode', 'grad', ...rest], env);
process.exit(status);
