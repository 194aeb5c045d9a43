// Shared benchmark helpers: timing with warm-up and repetitions (median and spread), the header
// that names the machine and the build, aligned tables, and peers (Python scripts spawned with a JSON
// request, answering JSON) that are skipped with a printed reason when they cannot run.
'use strict';
const { spawnSync } = require('child_process');
const os = require('os');

const now = () => Number(process.hrtime.bigint()) / 1e9;

/** Order statistics of a list of seconds: median, min, max, quartiles (linear interpolation). */
function stats(times) {
  const s = [...times].sort((a, b) => a - b);
  const q = (p) => {
    if (!s.length) return NaN;
    const x = p * (s.length - 1);
    const lo = Math.floor(x);
    const hi = Math.ceil(x);
    return s[lo] + (s[hi] - s[lo]) * (x - lo);
  };
  return { reps: s.length, median: q(0.5), min: s[0], max: s[s.length - 1], q1: q(0.25), q3: q(0.75) };
}

/**
 * Times `fn` (sync or async): untimed warm-up calls (at least `warmup` and for at least
 * `warmupSeconds`: allocators and page mappings need a few rounds to settle), then at least `minReps`
 * timed calls and until `minSeconds` have passed (at most `maxReps`). Returns stats() plus the times.
 */
async function measure(fn, { warmup = 2, warmupSeconds = 0, minReps = 5, minSeconds = 1, maxReps = 500 } = {}) {
  const w0 = now();
  for (let i = 0; i < warmup || (now() - w0 < warmupSeconds && i < maxReps); i++) await fn();
  const times = [];
  const start = now();
  while (times.length < maxReps && (times.length < minReps || now() - start < minSeconds)) {
    const t0 = now();
    await fn();
    times.push(now() - t0);
  }
  return { ...stats(times), times };
}

/** Prints the device/build header: CPU, SIMD level, GEMM kernel, threads, addon, CUDA. */
function printHeader(title, info, extra = []) {
  const lines = [
    `${title}`,
    `  cpu     ${info.cpu.model} (${info.cpu.logicalCores} logical cores, pool ${info.cpu.threads} threads)`,
    `  simd    ${info.cpu.simd}; sgemm kernel ${info.cpu.gemmKernel}; bf16 ${info.cpu.gemmKernelBf16}`,
    `  addon   ${info.addon.path} (${info.addon.how}; built with ${info.addon.build.tool}, ${info.addon.build.compiler})`,
    `  cuda    ${info.cuda.available ? info.cuda.devices.map((d) => d.name).join(', ') : `unavailable: ${info.cuda.reason}`}`,
    `  host    ${os.hostname()} ${os.platform()}-${os.arch()}, node ${process.version}, facecuda ${info.version}`,
    ...extra.map((l) => `  ${l}`),
  ];
  process.stdout.write(`${lines.join('\n')}\n\n`);
}

/** Prints rows (arrays of cells) under headers, right-aligning numbers. */
function printTable(headers, rows) {
  const cells = [headers, ...rows].map((r) => r.map((c) => (c === undefined || c === null ? '-' : String(c))));
  const width = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] || '').length)));
  const numeric = (s) => /^[-+]?[0-9.,]+(e[-+]?\d+)?%?x?$/.test(s);
  const line = (r) => r.map((c, i) => (numeric(c) ? c.padStart(width[i]) : c.padEnd(width[i]))).join('  ').trimEnd();
  process.stdout.write(`${line(cells[0])}\n${width.map((w) => '-'.repeat(w)).join('  ')}\n`);
  for (const r of cells.slice(1)) process.stdout.write(`${line(r)}\n`);
  process.stdout.write('\n');
}

const fixed = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '-');
const pct = (x) => (Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : '-');

/**
 * Runs a peer script: `python script` with `request` as JSON on stdin and `env` added (keys with
 * value undefined are removed from the environment). The interpreter is `python` when given, else
 * the first of $FACECUDA_PYTHON, python3 and /usr/bin/python3 that imports every module in
 * `requires` (a pyenv python3 may lack a Debian-packaged torch that the system one has). Returns the
 * parsed JSON, or { skipped: true, reason } when no interpreter has the peer's modules or the peer fails.
 */
function runPeer(script, request, { env = {}, requires = [], timeoutMs = 30 * 60 * 1000, python = null } = {}) {
  const childEnv = { ...process.env };
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete childEnv[k];
    else childEnv[k] = String(v);
  }
  const candidates = python ? [python] : [process.env.FACECUDA_PYTHON, 'python3', '/usr/bin/python3'].filter(Boolean);
  const reasons = [];
  let chosen = null;
  for (const py of [...new Set(candidates)]) {
    let ok = true;
    for (const mod of requires) {
      const probe = spawnSync(py, ['-c', `import ${mod}`], { env: childEnv, encoding: 'utf8' });
      if (probe.error) {
        reasons.push(`${py} not runnable: ${probe.error.message}`);
        ok = false;
        break;
      }
      if (probe.status !== 0) {
        const last = (probe.stderr || '').trim().split('\n').pop();
        reasons.push(`${py} cannot import ${mod}: ${last}`);
        ok = false;
        break;
      }
    }
    if (ok) {
      chosen = py;
      break;
    }
  }
  if (!chosen) return { skipped: true, reason: reasons.join('; ') };
  python = chosen;
  const r = spawnSync(python, [script], {
    input: JSON.stringify(request),
    env: childEnv,
    encoding: 'utf8',
    timeout: timeoutMs,
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.error) return { skipped: true, reason: `${python} ${script}: ${r.error.message}` };
  if (r.status !== 0) {
    const last = (r.stderr || '').trim().split('\n').slice(-3).join(' | ');
    return { skipped: true, reason: `${script} exited with ${r.status}: ${last}` };
  }
  try {
    return { ...JSON.parse(r.stdout), python };  // callers pass `python` back to reuse the interpreter
  } catch (e) {
    return { skipped: true, reason: `${script} printed no JSON (${e.message})` };
  }
}

/** Deterministic float32 data in [-1, 1) (xorshift32): cheap, so large operands do not dominate. */
function randomF32(n, seed) {
  const out = new Float32Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = (x >>> 0) / 2147483648 - 1;
  }
  return out;
}

/** True when `name` passes the runner's filters (none = all); filters are substrings. */
function selected(name, filters) {
  if (!filters || !filters.length) return true;
  return filters.some((f) => name.includes(f));
}

module.exports = { randomF32, now, stats, measure, printHeader, printTable, runPeer, fixed, pct, selected };
