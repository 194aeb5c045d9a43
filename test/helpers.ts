// Shared test helpers: seeded random data (a fresh seed per run, printed so failures reproduce) and
// float64 references written independently of the engine.
import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

const envSeed = process.env.FACECUDA_TEST_SEED;
export const SEED = envSeed ? Number(envSeed) : (Date.now() ^ (process.pid << 8)) >>> 0;

/** mulberry32: small, fast, good enough for test data. */
export function rng(seed: number = SEED): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randomFloats(n: number, r: () => number, lo = -1, hi = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + (hi - lo) * r();
  return a;
}

/** float64 reference: alpha * op(A) op(B) + beta * C, row-major. Also returns |alpha| |op(A)| |op(B)| + |beta C| for error bounds. */
export function gemmRef(
  ta: boolean, tb: boolean, M: number, N: number, K: number, alpha: number,
  A: Float32Array, B: Float32Array, beta: number, C: Float32Array | null,
): { value: Float64Array; scale: Float64Array } {
  const value = new Float64Array(M * N);
  const scale = new Float64Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      let m = 0;
      for (let k = 0; k < K; k++) {
        const a = ta ? A[k * M + i] : A[i * K + k];
        const b = tb ? B[j * K + k] : B[k * N + j];
        s += a * b;
        m += Math.abs(a * b);
      }
      const c = C && beta !== 0 ? C[i * N + j] : 0;
      value[i * N + j] = alpha * s + beta * c;
      scale[i * N + j] = Math.abs(alpha) * m + Math.abs(beta * c);
    }
  }
  return { value, scale };
}

export function gpuStatus(): { available: boolean; reason: string } {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { cudaStatus } = require('../lib/device') as typeof import('../lib/device');
  const s = cudaStatus();
  return { available: s.available, reason: s.reason };
}

export function hasPython(module: string): boolean {
  try {
    execFileSync('python3', ['-c', `import ${module}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * Error of `got` against `want` as a fraction of the largest |want|: max |got − want| / max |want|
 * (Infinity when the lengths differ; NaN anywhere makes comparisons with it fail).
 */
export function maxRel(got: ArrayLike<number>, want: ArrayLike<number>): number {
  if (got.length !== want.length) return Infinity;
  let m = 1e-30;
  let e = 0;
  for (let i = 0; i < want.length; i++) {
    m = Math.max(m, Math.abs(want[i]));
    e = Math.max(e, Math.abs(got[i] - want[i]));
  }
  return e / m;
}

// onnxruntime runs in a child process: inside jest its addon's typed arrays come from another realm
// and fail onnxruntime-common's own `instanceof Float32Array` checks.
const ORT_RUNNER = `
const fs = require('fs');
const ort = require(${JSON.stringify(require.resolve('onnxruntime-node'))});
const [model, input, output, n, size] = process.argv.slice(1);
(async () => {
  const session = await ort.InferenceSession.create(model, { intraOpNumThreads: 2 });
  const b = fs.readFileSync(input);
  const x = new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
  const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', x, [Number(n), 3, Number(size), Number(size)]) });
  const y = out[session.outputNames[0]].data;
  fs.writeFileSync(output, Buffer.from(y.buffer, y.byteOffset, y.byteLength));
})().catch((e) => { console.error(e); process.exit(2); });
`;

/** The first output of an ONNX model run by onnxruntime-node on x [n, 3, size, size] (in a child process; files in `dir`). */
export function runOnnxruntime(model: string, x: Float32Array, n: number, dir: string, size = 112): Float32Array {
  const input = path.join(dir, 'x.bin');
  const output = path.join(dir, 'y.bin');
  fs.writeFileSync(input, Buffer.from(x.buffer, x.byteOffset, x.byteLength));
  const r = spawnSync(process.execPath, ['-e', ORT_RUNNER, model, input, output, String(n), String(size)], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`onnxruntime failed (${r.status}): ${r.stderr}`);
  const b = fs.readFileSync(output);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}
