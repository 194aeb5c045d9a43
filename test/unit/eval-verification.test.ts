// The §10.2 verification protocol and its extensions against test/fixtures/gen_eval.py (a brute-force
// numpy reference: 400 and 4000 full threshold passes, sklearn's roc_curve restated), on committed
// fixtures and, when python3 with numpy runs here, on fresh seeded data each run.
import { execFileSync } from 'child_process';
import { promises as fsp } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { FacecudaError } from '../../lib/errors';
import { encodeBinPack } from '../../lib/data/binpack';
import {
  evaluateVerification, loadVerificationBin, verificationMetrics, verificationMetricsFromDistances, type EmbedderLike, type VerificationMetrics,
} from '../../lib/eval';
import { npMean, npStd, npSum } from '../../lib/eval/numeric';
import { hasPython, rng, SEED } from '../helpers';

const FIX = path.join(__dirname, '..', 'fixtures', 'eval');
const GEN = path.join(__dirname, '..', 'fixtures', 'gen_eval.py');
const NUMPY = hasPython('numpy');

interface Req { emb1: string; emb2: string; dim: number; issame: boolean[]; groups?: string[]; norms?: string }
const f32 = (b64: string): Float32Array => {
  const b = Buffer.from(b64, 'base64');
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
};
const b64 = (a: Float32Array): string => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');

function loadFixture(name: string): { request: Req; expected: any } {
  return JSON.parse(require('fs').readFileSync(path.join(FIX, name), 'utf8'));
}

/** JSON-ish comparison: numbers within tol (relative to max(1, |want|)), null = NaN/±Infinity. */
function close(got: unknown, want: unknown, tol: number, where = ''): void {
  if (want === null) {
    if (typeof got === 'number' && !Number.isFinite(got)) return;
    throw new Error(`${where}: expected NaN/Infinity (null), got ${got}`);
  }
  if (typeof want === 'number') {
    if (typeof got !== 'number' || !(Math.abs(got - want) <= tol * Math.max(1, Math.abs(want)))) throw new Error(`${where}: got ${got}, want ${want}`);
    return;
  }
  if (Array.isArray(want)) {
    if (!Array.isArray(got) || got.length !== want.length) throw new Error(`${where}: length ${(got as unknown[])?.length} vs ${want.length}`);
    want.forEach((w, i) => close(got[i], w, tol, `${where}[${i}]`));
    return;
  }
  if (want && typeof want === 'object') {
    for (const [k, w] of Object.entries(want)) close((got as Record<string, unknown>)[k], w, tol, `${where}.${k}`);
    return;
  }
  if (got !== want) throw new Error(`${where}: got ${String(got)}, want ${String(want)}`);
}

function metricsOf(req: Req): VerificationMetrics {
  return verificationMetrics(f32(req.emb1), f32(req.emb2), req.issame, {
    dim: req.dim, ...(req.groups ? { groups: req.groups } : {}), ...(req.norms ? { norms: f32(req.norms) } : {}),
  });
}

function expectMatches(got: VerificationMetrics, want: any): void {
  // Accuracies come from integer counts: exact.
  expect(got.foldAccuracies).toEqual(want.foldAccuracies);
  expect(got.foldThresholds).toEqual(want.foldThresholds);
  expect(got.accuracy).toBe(want.accuracy);
  expect(got.accuracyStd).toBe(want.accuracyStd);
  expect(got.threshold).toBe(want.threshold);
  const { dist, foldAccuracies, foldThresholds, ...rest } = want;
  close(got, rest, 1e-9, 'metrics');
}

describe('numpy-order sums', () => {
  test('npSum/npMean/npStd equal a float64 sum within rounding, pairwise order on long arrays', () => {
    const r = rng(SEED);
    for (const n of [0, 1, 7, 8, 9, 10, 127, 128, 129, 1000]) {
      const a = Float64Array.from({ length: n }, () => r() * 2 - 1);
      const plain = a.reduce((x, y) => x + y, 0);
      expect(Math.abs(npSum(a) - plain)).toBeLessThan(1e-12);
      if (n) expect(Math.abs(npStd(a) - Math.sqrt(a.reduce((x, y) => x + (y - npMean(a)) ** 2, 0) / n))).toBeLessThan(1e-12);
    }
    // A case where the order matters: 1e16 and ones.
    const a = Float64Array.from({ length: 16 }, (_, i) => (i === 0 ? 1e16 : 1));
    expect(npSum(a)).toBe(((1e16 + 1) + (1 + 1)) + ((1 + 1) + (1 + 1)) + 8); // r0..r7 = a0..a7, +a8..a15
  });
});

describe('verificationMetrics vs gen_eval.py (committed fixtures)', () => {
  test('verification.json: 503 pairs (folds of 51 and 50), D=8, raw norms 1..30, a zero row, three groups', () => {
    const { request, expected } = loadFixture('verification.json');
    const got = metricsOf(request);
    expectMatches(got, expected);
    expect(Object.keys(got.groups!)).toEqual(['A', 'B', 'C']);
    expect(got.roc.thresholds[0]).toBe(Infinity);
    // Structure we built in: group A (less noise) is easier than C.
    expect(got.groups!.A.auc).toBeGreaterThan(got.groups!.C.auc);
  });

  test('ties.json: integer vectors in 7 directions (equal distances, distances on grid points)', () => {
    const { request, expected } = loadFixture('ties.json');
    expectMatches(metricsOf(request), expected);
  });
});

(NUMPY ? describe : describe.skip)('verificationMetrics vs gen_eval.py on fresh data', () => {
  test('random sizes, dims, noise, groups and norms', () => {
    const r = rng(SEED ^ 0x5eed);
    console.log(`eval-verification fresh-data seed ${SEED}`);
    for (let trial = 0; trial < 3; trial++) {
      const P = 10 + Math.floor(r() * 250);
      const D = 1 + Math.floor(r() * 140);
      const e1 = new Float32Array(P * D);
      const e2 = new Float32Array(P * D);
      const issame: boolean[] = [];
      const groups: string[] = [];
      const noise = 0.2 + r() * 1.5;
      for (let k = 0; k < P; k++) {
        const s = r() < 0.5;
        issame.push(s);
        groups.push(['x', 'y'][Math.floor(r() * 2)]);
        const scale1 = 0.1 + 20 * r();
        const scale2 = 0.1 + 20 * r();
        for (let d = 0; d < D; d++) {
          const base = r() * 2 - 1;
          e1[k * D + d] = scale1 * (base + noise * (r() - 0.5));
          e2[k * D + d] = scale2 * ((s ? base : r() * 2 - 1) + noise * (r() - 0.5));
        }
      }
      if (trial === 1) e2.fill(0, 0, D); // a zero row
      // Quantize sometimes: many exact ties.
      if (trial === 2) for (const e of [e1, e2]) for (let i = 0; i < e.length; i++) e[i] = Math.round(e[i]);
      const req: Req = { emb1: b64(e1), emb2: b64(e2), dim: D, issame, groups };
      const want = JSON.parse(execFileSync('python3', [GEN, '--stdin'], { input: JSON.stringify(req), maxBuffer: 1 << 28 }).toString());
      expectMatches(metricsOf(req), want);
    }
  });
});

describe('verificationMetrics: semantics and arguments', () => {
  test('accuracy is invariant to the raw norms; perfect separation gives 1 and AUC 1', () => {
    const r = rng(SEED + 1);
    const P = 60;
    const D = 4;
    const e1 = new Float32Array(P * D);
    const e2 = new Float32Array(P * D);
    const issame = Array.from({ length: P }, (_, k) => k % 2 === 0);
    for (let k = 0; k < P; k++) {
      const dir = k % 2 === 0 ? [1, 0, 0, 0] : [0, 1, 0, 0];
      for (let d = 0; d < D; d++) {
        e1[k * D + d] = (d === 0 ? 1 : 0) * (1 + 9 * r()) + 1e-3 * r();
        e2[k * D + d] = dir[d] * (1 + 9 * r()) + 1e-3 * r();
      }
    }
    const m = verificationMetrics(e1, e2, issame);
    expect(m.accuracy).toBe(1);
    expect(m.accuracyStd).toBe(0);
    expect(m.auc).toBeCloseTo(1, 12);
    expect(m.eer).toBeCloseTo(0, 12);
    expect(m.tarAtFar['1e-3'].tar).toBe(1);
    expect(m.histogram.genuine.reduce((a, b) => a + b)).toBe(30);
    expect(m.histogram.impostor.reduce((a, b) => a + b)).toBe(30);
    // scale invariance
    const m2 = verificationMetrics(e1.map((x) => x * 3), e2, issame);
    expect(m2.accuracy).toBe(m.accuracy);
    expect(m2.xnorm).toBeGreaterThan(m.xnorm);
  });

  test('verificationMetricsFromDistances gives the same metrics from the distances', () => {
    const { request, expected } = loadFixture('verification.json');
    const full = metricsOf(request);
    // Distances back from the cosine scores of the ROC are not exact; recompute them in float64 instead.
    const e1 = f32(request.emb1);
    const e2 = f32(request.emb2);
    const D = request.dim;
    const P = request.issame.length;
    const dist = new Float64Array(P);
    for (let k = 0; k < P; k++) {
      const n1 = Math.hypot(...e1.subarray(k * D, (k + 1) * D)) || 1;
      const n2 = Math.hypot(...e2.subarray(k * D, (k + 1) * D)) || 1;
      for (let d = 0; d < D; d++) dist[k] += (e1[k * D + d] / n1 - e2[k * D + d] / n2) ** 2;
    }
    const m = verificationMetricsFromDistances(dist, request.issame, { groups: request.groups, xnorm: 3 });
    expect(m.foldAccuracies).toEqual(expected.foldAccuracies);
    expect(m.xnorm).toBe(3);
    expect(Math.abs(m.auc - full.auc)).toBeLessThan(1e-12);
    expect(Object.keys(m.groups!)).toEqual(['A', 'B', 'C']);
    expect(() => verificationMetricsFromDistances(dist.subarray(1), request.issame)).toThrow(/dist/);
    expect(() => verificationMetricsFromDistances(Float64Array.of(NaN, ...dist.subarray(1)), request.issame)).toThrow(/dist\[0\]/);
  });

  test('P = 12000, D = 512 takes well under a second', () => {
    const r = rng(SEED + 9);
    const P = 12000;
    const D = 512;
    const e1 = Float32Array.from({ length: P * D }, () => r() - 0.5);
    const e2 = Float32Array.from({ length: P * D }, () => r() - 0.5);
    const issame = Array.from({ length: P }, (_, k) => k % 2 === 0);
    for (let k = 0; k < P; k += 2) for (let d = 0; d < D; d++) e2[k * D + d] += e1[k * D + d];
    const t0 = performance.now();
    const m = verificationMetrics(e1, e2, issame);
    const ms = performance.now() - t0;
    console.log(`verificationMetrics P=12000 D=512: ${ms.toFixed(0)} ms`);
    expect(m.accuracy).toBeGreaterThan(0.9);
    expect(ms).toBeLessThan(1000);
  });

  test('dim inference and argument errors name the argument', () => {
    const e = new Float32Array(20 * 3).fill(1);
    const same = Array.from({ length: 20 }, (_, i) => i % 2 === 0);
    expect(verificationMetrics(e, e, same).pairs).toBe(20);
    expect(() => verificationMetrics(e, e, same.slice(0, 9))).toThrow(RangeError);
    expect(() => verificationMetrics(e, e, same.slice(0, 9))).toThrow(/issame/);
    expect(() => verificationMetrics(e, e.subarray(3), same)).toThrow(/embeddings2/);
    expect(() => verificationMetrics(e, e, same, { dim: 4 })).toThrow(/embeddings1/);
    expect(() => verificationMetrics([1] as unknown as Float32Array, e, same)).toThrow(TypeError);
    expect(() => verificationMetrics(e, e, same.map((s) => (s ? 1 : 0)) as unknown as boolean[])).toThrow(/issame\[0\]/);
    expect(() => verificationMetrics(e, e, same, { groups: ['a'] })).toThrow(/options.groups/);
    expect(() => verificationMetrics(e, e, same, { grups: [] } as never)).toThrow(/grups/);
    const bad = e.slice();
    bad[5] = NaN;
    expect(() => verificationMetrics(bad, e, same)).toThrow(/embeddings1 row 1/);
  });
});

describe('loadVerificationBin and evaluateVerification', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'facecuda-eval-'));
  });
  afterAll(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });

  test('reads every fixture encoding (py2 str, bytes, numpy arrays)', async () => {
    const F = path.join(__dirname, '..', 'fixtures');
    for (const f of ['legacy.bin', 'py3_proto2.bin', 'py3_proto4.bin', 'numpy_proto2.bin', 'numpy_proto5.bin', 'numpy1_proto2.bin']) {
      const p = await loadVerificationBin(path.join(F, f));
      expect(p.images.length).toBe(2 * p.issame.length);
      expect(p.images.every((im) => im instanceof Uint8Array)).toBe(true);
    }
  });

  test('hostile packs: huge declared lengths, wrong opcodes, no pairs, not a tuple → CORRUPT_FILE, no big allocation', async () => {
    const cases: [string, number[]][] = [
      ['BINSTRING of 2^31-1 bytes in a 20-byte file', [0x80, 2, 0x5d, 0x28, 0x54, 0xff, 0xff, 0xff, 0x7f, 0x41, 0x65]],
      ['BINBYTES8 of 2^63 bytes', [0x80, 4, 0x5d, 0x8e, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x61]],
      ['BYTEARRAY8 of 2^40 bytes', [0x80, 5, 0x96, 0, 0, 0, 0, 0, 1, 0, 0]],
      ['FRAME past the end', [0x80, 4, 0x95, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x2e]],
      ['negative BINSTRING length', [0x80, 2, 0x54, 0xfe, 0xff, 0xff, 0xff]],
      ['an empty dict (an opcode packs never use)', [0x80, 2, 0x7d, 0x2e]],
      ['REDUCE of an int', [0x80, 2, 0x4b, 1, 0x29, 0x52, 0x2e]],
      ['a bare list', [0x80, 2, 0x5d, 0x2e]],
      ['no pairs', [0x80, 2, 0x5d, 0x5d, 0x86, 0x2e]],
      ['empty file', []],
    ];
    for (const [what, bytes] of cases) {
      const f = path.join(dir, 'hostile.bin');
      await fsp.writeFile(f, Buffer.from(bytes));
      const before = process.memoryUsage().rss;
      const err = await loadVerificationBin(f).then(() => null, (e) => e);
      if (!(err instanceof FacecudaError) || err.code !== 'CORRUPT_FILE') throw new Error(`${what}: ${err}`);
      expect(process.memoryUsage().rss - before).toBeLessThan(256 * 2 ** 20);
    }
    await expect(loadVerificationBin(42 as unknown as string)).rejects.toThrow(TypeError);
  });

  test('evaluateVerification with a fake embedder: pairs split 0::2/1::2, flip passed, XNorm from viewNorms', async () => {
    const r = rng(SEED + 2);
    const P = 40;
    const D = 6;
    const issame = Array.from({ length: P }, () => r() < 0.5);
    // Image k's "file" carries its index; the fake embedder maps it to a vector.
    const images = Array.from({ length: 2 * P }, (_, k) => Uint8Array.of(k & 0xff, k >> 8, 0xd8));
    const raw = new Float32Array(2 * P * D);
    for (let k = 0; k < P; k++) {
      for (let d = 0; d < D; d++) {
        const base = r() * 2 - 1;
        raw[2 * k * D + d] = base + 0.3 * r();
        raw[(2 * k + 1) * D + d] = (issame[k] ? base : r() * 2 - 1) + 0.3 * r();
      }
    }
    const calls: boolean[] = [];
    const embedder: EmbedderLike = {
      async embed(imgs, { flip }) {
        calls.push(flip);
        const n = imgs.length;
        const embeddings = new Float32Array(n * D);
        const norms = new Float32Array(n);
        const viewNorms = new Float32Array(2 * n);
        imgs.forEach((im, i) => {
          const k = im[0] | (im[1] << 8);
          const v = raw.subarray(k * D, (k + 1) * D);
          const nrm = Math.hypot(...v);
          norms[i] = nrm;
          viewNorms[2 * i] = 10 + k;
          viewNorms[2 * i + 1] = flip ? 20 + k : 0;
          for (let d = 0; d < D; d++) embeddings[i * D + d] = v[d] / nrm;
        });
        return { embeddings, norms, dim: D, viewNorms };
      },
    };
    const f = path.join(dir, 'pack.bin');
    await fsp.writeFile(f, encodeBinPack(images, issame));
    const progress: number[] = [];
    const m = await evaluateVerification(embedder, f, { batchSize: 7, onProgress: (done) => progress.push(done) });
    expect(calls.every((c) => c)).toBe(true);
    expect(calls.length).toBe(Math.ceil((2 * P) / 7));
    expect(progress[progress.length - 1]).toBe(2 * P);
    const e1 = new Float32Array(P * D);
    const e2 = new Float32Array(P * D);
    for (let k = 0; k < P; k++) {
      e1.set(raw.subarray(2 * k * D, (2 * k + 1) * D), k * D);
      e2.set(raw.subarray((2 * k + 1) * D, (2 * k + 2) * D), k * D);
    }
    const direct = verificationMetrics(e1, e2, issame);
    expect(m.accuracy).toBe(direct.accuracy);
    expect(m.auc).toBeCloseTo(direct.auc, 12);
    // XNorm over both views: mean of (10 + k) and (20 + k), k < 2P.
    expect(m.xnorm).toBeCloseTo(15 + (2 * P - 1) / 2, 10);
    const noFlip = await evaluateVerification(embedder, { images, issame }, { flip: false });
    expect(noFlip.flip).toBe(false);
    expect(noFlip.xnorm).toBeCloseTo(10 + (2 * P - 1) / 2, 10);
    await expect(evaluateVerification({} as EmbedderLike, f)).rejects.toThrow(/embedder/);
    await expect(evaluateVerification(embedder, { images: images.slice(1), issame })).rejects.toThrow(/pack.images/);
    const liar: EmbedderLike = { embed: async (imgs) => ({ embeddings: new Float32Array(imgs.length), norms: new Float32Array(1), dim: 1 }) };
    await expect(evaluateVerification(liar, { images, issame }, { batchSize: 5 })).rejects.toThrow(/result.norms/);
  });
});
