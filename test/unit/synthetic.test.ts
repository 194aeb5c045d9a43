// SyntheticFaces (determinism, identity structure, nuisance ranges, pairs layout) and the §10.2
// verification metrics (against a naive float64 re-implementation written here, and known cases).
// Random inputs use a fresh seed per run (printed; FACECUDA_TEST_SEED reproduces a run).
import {
  accuracyFromDistances, linearPixelBaseline, tarAtFar, tarAtFarStats, verificationAccuracy, verifier,
} from '../../lib/data/baseline';
import { SYNTHETIC_PRESETS, SyntheticFaces } from '../../lib/data/synthetic';
import type { RawImage } from '../../lib/data/types';
import { FacecudaError } from '../../lib/errors';
import { rng, SEED } from '../helpers';

const r = rng(SEED ^ 0x5f4ce5);
beforeAll(() => console.log(`synthetic tests: seed ${SEED}`));

function same(a: RawImage, b: RawImage): boolean {
  return a.width === b.width && a.height === b.height && Buffer.compare(Buffer.from(a.data), Buffer.from(b.data)) === 0;
}

function meanAbsDiff(a: RawImage, b: RawImage): number {
  let s = 0;
  for (let i = 0; i < a.data.length; i++) s += Math.abs(a.data[i] - b.data[i]);
  return s / a.data.length;
}

describe('SyntheticFaces', () => {
  const seed = (SEED % 100000) + 1;

  it('renders 112×112 HWC RGB by default, and other sizes', async () => {
    const src = new SyntheticFaces({ seed, identities: 3, samplesPerIdentity: 4 });
    expect(src.size).toBe(12);
    expect(src.numClasses).toBe(3);
    const { label, pixels } = await src.get(7);
    expect(label).toBe(1);
    expect(pixels).toBeDefined();
    expect([pixels!.width, pixels!.height, pixels!.channels, pixels!.data.length]).toEqual([112, 112, 3, 112 * 112 * 3]);
    expect(pixels!.data).toBeInstanceOf(Uint8Array);
    const small = new SyntheticFaces({ seed, identities: 3, samplesPerIdentity: 4, size: 64 }).render(0, 0);
    expect([small.width, small.height, small.data.length]).toEqual([64, 64, 64 * 64 * 3]);
  });

  it('is deterministic: same seed → identical bytes, different seed → different', async () => {
    const a = new SyntheticFaces({ seed, identities: 5, samplesPerIdentity: 3 });
    const b = new SyntheticFaces({ seed, identities: 5, samplesPerIdentity: 3 });
    const c = new SyntheticFaces({ seed: seed + 1, identities: 5, samplesPerIdentity: 3 });
    for (let i = 0; i < a.size; i++) {
      const pa = (await a.get(i)).pixels!;
      expect(same(pa, (await b.get(i)).pixels!)).toBe(true);
      expect(same(pa, (await c.get(i)).pixels!)).toBe(false);
      // Identity-major indexing; rendering again (after other renders) gives the same bytes.
      expect(same(pa, a.render(Math.floor(i / 3), i % 3))).toBe(true);
    }
    expect(same(a.render(0, 0), a.render(0, 1))).toBe(false);
    expect(same(a.render(0, 0), a.render(1, 0))).toBe(false);
  });

  it('identity k is a function of (seed, firstIdentity + label); describe() re-opens the same source', () => {
    const a = new SyntheticFaces({ seed, identities: 10, samplesPerIdentity: 2 });
    const b = new SyntheticFaces({ seed, identities: 4, samplesPerIdentity: 2, firstIdentity: 6 });
    expect(same(a.render(7, 11), b.render(1, 11))).toBe(true);
    expect(a.identity(7)).toEqual(b.identity(1));
    const d = b.describe();
    expect(d).toEqual({ kind: 'synthetic', options: { seed, identities: 4, samplesPerIdentity: 2, size: 112, difficulty: 'default', firstIdentity: 6 } });
    const re = new SyntheticFaces((d as { options: unknown }).options as never);
    expect(same(re.render(3, 5), b.render(3, 5))).toBe(true);
    // Difficulty changes the nuisance, not the identity.
    const hard = new SyntheticFaces({ seed, identities: 10, samplesPerIdentity: 2, difficulty: 'hard' });
    expect(hard.identity(3)).toEqual(a.identity(3));
  });

  it('nuisance stays inside the difficulty ranges', () => {
    for (const difficulty of ['easy', 'default', 'hard'] as const) {
      const p = SYNTHETIC_PRESETS[difficulty];
      const src = new SyntheticFaces({ seed, identities: 20, samplesPerIdentity: 10, difficulty });
      let glasses = 0;
      let lowQuality = 0;
      for (let k = 0; k < 20; k++) {
        for (let j = 0; j < 25; j++) {
          const n = src.nuisance(k, j);
          expect(Math.abs(n.rotation)).toBeLessThanOrEqual(p.rotation + 1e-12);
          expect(Math.abs(n.scale - 1)).toBeLessThanOrEqual(p.scale + 1e-12);
          expect(Math.max(Math.abs(n.shiftX), Math.abs(n.shiftY))).toBeLessThanOrEqual(p.shift + 1e-12);
          expect(Math.abs(n.yaw)).toBeLessThanOrEqual(p.yaw + 1e-12);
          expect(n.quality).toBeGreaterThanOrEqual(p.quality[0]);
          expect(n.quality).toBeLessThanOrEqual(p.quality[1]);
          expect(Math.hypot(...n.light)).toBeCloseTo(1, 12);
          expect(n.light[2]).toBeGreaterThan(0);
          for (const s of [n.smile, n.mouthOpen]) expect(s >= 0 && s <= 1).toBe(true);
          expect(Math.max(...n.damage)).toBeCloseTo(1, 12);
          if (n.glasses >= 0) glasses++;
          if (n.quality < 0.7) lowQuality++;
        }
      }
      // Occlusions are rare; degraded samples are common except on 'easy'.
      expect(glasses / 500).toBeLessThan(p.pGlasses * 2 + 0.03);
      if (difficulty !== 'easy') expect(lowQuality).toBeGreaterThan(50);
      else expect(lowQuality).toBe(0);
    }
  });

  it('frontal renders have no pose/expression/occlusion nuisance and identity parameters do not depend on the sample', () => {
    const src = new SyntheticFaces({ seed, identities: 8, samplesPerIdentity: 1, difficulty: 'hard' });
    for (let j = 0; j < 20; j++) {
      const n = src.nuisance(2, j, { frontal: true });
      expect([n.rotation, n.scale, n.shiftX, n.shiftY, n.yaw, n.pitch, n.smile, n.mouthOpen, n.quality]).toEqual([0, 1, 0, 0, 0, 0, 0, 0, 1]);
      expect(n.glasses < 0 && !n.sunglasses && !n.mask && !n.blink).toBe(true);
    }
    // Frontal quality-1 images of one identity differ only in clothing; two identities differ more.
    let maxSame = 0;
    let minDiff = Infinity;
    for (let k = 0; k < 8; k++) {
      const a = src.render(k, 1, { frontal: true });
      const b = src.render(k, 2, { frontal: true });
      maxSame = Math.max(maxSame, meanAbsDiff(a, b));
      for (let l = 0; l < k; l++) minDiff = Math.min(minDiff, meanAbsDiff(a, src.render(l, 1, { frontal: true })));
    }
    expect(maxSame).toBeLessThan(minDiff);
  });

  it('lower quality means more degradation of the same capture', () => {
    const src = new SyntheticFaces({ seed, identities: 10, samplesPerIdentity: 1 });
    let mild = 0;
    let strong = 0;
    for (let k = 0; k < 10; k++) {
      const clean = src.render(k, 3, { quality: 1 });
      mild += meanAbsDiff(src.render(k, 3, { quality: 0.9 }), clean);
      strong += meanAbsDiff(src.render(k, 3, { quality: 0.1 }), clean);
    }
    expect(strong).toBeGreaterThan(2 * mild);
    expect(strong / 10).toBeGreaterThan(2);
  });

  it('pairs(): half same, balanced blocks, fresh samples, deterministic; crossQuality puts the ID photo first', () => {
    const src = new SyntheticFaces({ seed, identities: 12, samplesPerIdentity: 2, firstIdentity: 100 });
    const P = 20;
    const p = src.pairs({ count: P, seed: 3 });
    expect(p.images).toHaveLength(2 * P);
    expect(p.issame).toHaveLength(P);
    expect(p.issame.filter(Boolean)).toHaveLength(P / 2);
    for (let k = 0; k < P; k += 2) expect(p.issame[k]).not.toBe(p.issame[k + 1]);
    for (let k = 0; k < P; k++) {
      expect(p.labels[2 * k] === p.labels[2 * k + 1]).toBe(p.issame[k]);
      expect(p.samples[2 * k]).toBeGreaterThanOrEqual(2 ** 30);
      expect(p.samples[2 * k]).not.toBe(p.samples[2 * k + 1]);
      expect(same(p.images[2 * k], src.render(p.labels[2 * k], p.samples[2 * k]))).toBe(true);
    }
    const again = src.pairs({ count: P, seed: 3 });
    expect(again.issame).toEqual(p.issame);
    expect(again.images.every((im, i) => same(im, p.images[i]))).toBe(true);
    const other = src.pairs({ count: P, seed: 4 });
    expect(other.images.some((im, i) => !same(im, p.images[i]))).toBe(true);

    const c = src.pairs({ count: P, seed: 3, crossQuality: true });
    for (let k = 0; k < P; k++) {
      expect(same(c.images[2 * k], src.render(c.labels[2 * k], c.samples[2 * k], { frontal: true, quality: 1 }))).toBe(true);
      // The selfie is the ordinary sample at a quality from the preset's selfie range (≤ 0.65 on
      // 'default'): always visibly degraded, never the clean capture.
      const clean = src.render(c.labels[2 * k + 1], c.samples[2 * k + 1], { quality: 1 });
      expect(meanAbsDiff(c.images[2 * k + 1], clean)).toBeGreaterThan(0.5);
    }
  });

  it('has identity structure: a linear model fitted on other identities verifies held-out pairs above chance', () => {
    const train = new SyntheticFaces({ seed, identities: 30, samplesPerIdentity: 8, difficulty: 'easy' });
    const images: RawImage[] = [];
    const labels: number[] = [];
    for (let k = 0; k < 30; k++) for (let j = 0; j < 8; j++) { images.push(train.render(k, j)); labels.push(k); }
    const held = new SyntheticFaces({ seed, identities: 40, samplesPerIdentity: 1, difficulty: 'easy', firstIdentity: 30 });
    const pairs = held.pairs({ count: 200, seed: 1 });
    const res = linearPixelBaseline({ train: { images, labels: Int32Array.from(labels) }, pairs, pcaDims: 40 });
    expect(res.ldaDims).toBe(20);
    expect(res.accuracy).toBeGreaterThan(0.65);
    expect(res.method).toMatch(/PCA\(40\) \+ LDA\(20\)/);
  });

  it('rejects bad arguments with the standard messages', async () => {
    expect(() => new SyntheticFaces(undefined as never)).toThrow(TypeError);
    expect(() => new SyntheticFaces({ identities: 2, samplesPerIdentity: 2 } as never)).toThrow(/^Expected an integer for options.seed but received undefined of type undefined$/);
    expect(() => new SyntheticFaces({ seed: 1.5, identities: 2, samplesPerIdentity: 2 })).toThrow(TypeError);
    expect(() => new SyntheticFaces({ seed: 1, identities: 0, samplesPerIdentity: 2 })).toThrow(RangeError);
    expect(() => new SyntheticFaces({ seed: 1, identities: 2, samplesPerIdentity: 2, size: 8 })).toThrow(/Expected an integer between 16 and 1024 for options.size/);
    expect(() => new SyntheticFaces({ seed: 1, identities: 2, samplesPerIdentity: 2, difficulty: 'medium' as never })).toThrow(
      /Expected one of 'easy', 'default', 'hard' for options.difficulty but received "medium"/,
    );
    expect(() => new SyntheticFaces({ seed: 1, identities: 2, samplesPerIdentity: 2, Seed: 1 } as never)).toThrow(/'seed' \(option names are case-sensitive\)/);
    const src = new SyntheticFaces({ seed: 1, identities: 2, samplesPerIdentity: 2 });
    expect(() => src.render(2, 0)).toThrow(RangeError);
    expect(() => src.render(0, -1)).toThrow(RangeError);
    expect(() => src.render(0, 0, { quality: 1.5 })).toThrow(/Expected a number between 0 and 1 for options.quality/);
    expect(() => src.render(0, 0, { qualty: 1 } as never)).toThrow(TypeError);
    expect(() => src.pairs({ count: 3 })).toThrow(/Expected an even integer for options.count but received 3/);
    expect(() => new SyntheticFaces({ seed: 1, identities: 1, samplesPerIdentity: 2 }).pairs({ count: 2 })).toThrow(RangeError);
    await expect(src.get(4)).rejects.toThrow(RangeError);
    await src.close();
    await src.close();
    await expect(src.get(0)).rejects.toMatchObject({ code: 'DISPOSED' });
    await expect(src.get(0)).rejects.toBeInstanceOf(FacecudaError);
  });
});

// ---- verification metrics

/** Naive §10.2 calculate_roc in float64: 400 thresholds × every pair, written independently. */
function naiveAccuracy(e1: number[][], e2: number[][], issame: boolean[]): { accuracy: number; std: number; thresholds: number[] } {
  const n = issame.length;
  const norm = (v: number[]): number[] => {
    const s = Math.sqrt(v.reduce((a, x) => a + x * x, 0));
    return v.map((x) => (s > 0 ? x / s : 0));
  };
  const dist = e1.map((a, i) => {
    const u = norm(a);
    const w = norm(e2[i]);
    return u.reduce((acc, x, d) => acc + (x - w[d]) ** 2, 0);
  });
  const sizes = Array.from({ length: 10 }, (_, f) => Math.floor(n / 10) + (f < n % 10 ? 1 : 0));
  const accs: number[] = [];
  const thresholds: number[] = [];
  let start = 0;
  for (let f = 0; f < 10; f++) {
    const test = new Set(Array.from({ length: sizes[f] }, (_, i) => start + i));
    start += sizes[f];
    const acc = (thr: number, inTest: boolean): number => {
      let ok = 0;
      let cnt = 0;
      for (let i = 0; i < n; i++) {
        if (test.has(i) !== inTest) continue;
        cnt++;
        if ((dist[i] < thr) === issame[i]) ok++;
      }
      return ok / cnt;
    };
    let best = 0;
    let bestAcc = -1;
    for (let t = 0; t < 400; t++) {
      const a = acc(t * 0.01, false);
      if (a > bestAcc) {
        bestAcc = a;
        best = t * 0.01;
      }
    }
    thresholds.push(best);
    accs.push(acc(best, true));
  }
  const mean = accs.reduce((a, b) => a + b, 0) / 10;
  return { accuracy: mean, std: Math.sqrt(accs.reduce((a, b) => a + (b - mean) ** 2, 0) / 10), thresholds };
}

function randomPairs(n: number, dim: number, signal: number): { e1: number[][]; e2: number[][]; issame: boolean[] } {
  const e1: number[][] = [];
  const e2: number[][] = [];
  const issame: boolean[] = [];
  for (let i = 0; i < n; i++) {
    const s = r() < 0.5;
    const a = Array.from({ length: dim }, () => r() * 2 - 1);
    const b = s ? a.map((x) => x + (r() * 2 - 1) / signal) : Array.from({ length: dim }, () => r() * 2 - 1);
    e1.push(a);
    e2.push(b);
    issame.push(s);
  }
  return { e1, e2, issame };
}

describe('verificationAccuracy (SPEC §10.2)', () => {
  it('matches a naive float64 implementation, for both argument forms', () => {
    for (const [n, dim, signal] of [[20, 2, 1], [57, 3, 1.5], [233, 8, 2], [1000, 4, 0.8]] as const) {
      const { e1, e2, issame } = randomPairs(n, dim, signal);
      const want = naiveAccuracy(e1, e2, issame);
      const got = verificationAccuracy(e1, e2, issame);
      expect(got.accuracy).toBeCloseTo(want.accuracy, 12);
      expect(got.std).toBeCloseTo(want.std, 12);
      expect(got.foldThresholds).toEqual(want.thresholds);
      const flat1 = Float32Array.from(e1.flat());
      const flat2 = Float32Array.from(e2.flat());
      // Float32 inputs can move a distance across a threshold only in a measure-zero case; compare loosely.
      const f = verificationAccuracy(flat1, flat2, dim, issame);
      expect(Math.abs(f.accuracy - want.accuracy)).toBeLessThanOrEqual(1 / n + 1e-12);
      expect(verifier.accuracy(flat1, flat2, dim, issame).accuracy).toBe(f.accuracy);
    }
  });

  it('a hand-computed case: strict comparison, smallest threshold among ties, population std', () => {
    // 10 pairs, one per fold: same pairs at dist exactly 0.5, different at 2.0.
    const dist = Float64Array.from([0.5, 2, 0.5, 2, 0.5, 2, 0.5, 2, 0.5, 2]);
    const same = Uint8Array.from([1, 0, 1, 0, 1, 0, 1, 0, 1, 0]);
    const res = accuracyFromDistances(dist, same);
    // dist < 0.5 is false, so 0.50 misclassifies the same pairs; 0.51 is the smallest perfect threshold.
    expect(res.foldThresholds).toEqual(Array(10).fill(51 * 0.01));
    expect(res.accuracy).toBe(1);
    expect(res.std).toBe(0);
    // Fold 0 contains the only error-prone pair when one same pair sits far away: 9 folds perfect, one wrong.
    const d2 = Float64Array.from([3.5, 2, 0.5, 2, 0.5, 2, 0.5, 2, 0.5, 2]);
    const r2 = accuracyFromDistances(d2, same);
    expect(r2.foldAccuracies).toEqual([0, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
    expect(r2.accuracy).toBeCloseTo(0.9, 15);
    expect(r2.std).toBeCloseTo(Math.sqrt((0.81 + 9 * 0.01) / 10), 15); // population std of {0, 1×9}
  });

  it('perfectly separable → 1.0 (TAR as calculate_val has it); random → about 0.5', () => {
    const n = 2000;
    const e1: number[][] = [];
    const e2: number[][] = [];
    const issame: boolean[] = [];
    for (let i = 0; i < n; i++) {
      const s = i % 2 === 0;
      const a = [r() - 0.5, r() - 0.5, r() - 0.5, r() - 0.5];
      e1.push(a);
      e2.push(s ? a.map((x) => x * 2) : a.map((x) => -x)); // same: dist 0, different: dist 4 (excluded by t < 4)
      issame.push(s);
    }
    expect(verificationAccuracy(e1, e2, issame).accuracy).toBe(1);
    // calculate_val's quirk: no threshold < 4 accepts a different pair, so FAR never reaches 1e−3,
    // the threshold falls back to 0 and TAR is 0.
    expect(tarAtFar(e1, e2, issame)).toBe(0);
    // Different pairs spread over [0, 4): the FAR-1e−3 threshold lies above 0, where every same pair (dist 0) passes.
    const spread = e1.map((a, i) => (issame[i] ? e2[i] : [r() - 0.5, r() - 0.5, r() - 0.5, r() - 0.5]));
    expect(tarAtFar(e1, spread, issame, 1e-3)).toBe(1);
    const rnd = randomPairs(n, 16, 1e-9);
    const acc = verificationAccuracy(rnd.e1, rnd.e2, rnd.issame).accuracy;
    expect(acc).toBeGreaterThan(0.45);
    expect(acc).toBeLessThan(0.58);
  });

  it('tarAtFar follows calculate_val (interp1d slinear on far_train)', () => {
    // A naive re-implementation on random data with many pairs per fold.
    const { e1, e2, issame } = randomPairs(3000, 4, 1.2);
    const norm = (v: number[]): number[] => v.map((x) => x / Math.hypot(...v));
    const dist = e1.map((a, i) => norm(a).reduce((s, x, d) => s + (x - norm(e2[i])[d]) ** 2, 0));
    const target = 1e-2;
    const tars: number[] = [];
    for (let f = 0; f < 10; f++) {
      const inTest = (i: number): boolean => i >= f * 300 && i < (f + 1) * 300;
      const far = (thr: number, test: boolean): { val: number; far: number } => {
        let ta = 0, fa = 0, ns = 0, nd = 0;
        for (let i = 0; i < 3000; i++) {
          if (inTest(i) !== test) continue;
          if (issame[i]) { ns++; if (dist[i] < thr) ta++; } else { nd++; if (dist[i] < thr) fa++; }
        }
        return { val: ta / ns, far: fa / nd };
      };
      const x = Array.from({ length: 4000 }, (_, t) => far(t * 0.001, false).far);
      let thr = 0;
      if (Math.max(...x) >= target) {
        let m = 0;
        for (let t = 0; t <= 3998; t++) if (x[t] <= target) m = t;
        thr = x[m + 1] > x[m] ? m * 0.001 + ((target - x[m]) / (x[m + 1] - x[m])) * 0.001 : (m + 1) * 0.001;
      }
      tars.push(far(thr, true).val);
    }
    const want = tars.reduce((a, b) => a + b, 0) / 10;
    const got = tarAtFarStats(e1, e2, issame, target);
    expect(got.tar).toBeCloseTo(want, 12);
    expect(got.far).toBeLessThan(3 * target);
    expect(tarAtFar(e1, e2, issame, target)).toBe(got.tar);
  });

  it('rejects bad arguments', () => {
    const e = [[1, 0], [0, 1]];
    expect(() => verificationAccuracy(e, e, [true, false])).toThrow(/at least 10 pairs/);
    const { e1, e2, issame } = randomPairs(20, 2, 1);
    expect(() => verificationAccuracy(e1, e2.slice(1), issame)).toThrow(RangeError);
    expect(() => verificationAccuracy(e1, e2.map((v) => [...v, 0]), issame)).toThrow(/dimension 2/);
    expect(() => verificationAccuracy(new Float32Array(39), new Float32Array(40), 2, issame)).toThrow(RangeError);
    expect(() => verificationAccuracy('x' as never, e2, issame)).toThrow(TypeError);
    expect(() => tarAtFar(e1, e2, issame, 0)).toThrow(RangeError);
    expect(() => linearPixelBaseline({ train: { images: [], labels: [] }, pairs: { images: [], issame: [] } })).toThrow(RangeError);
  });
});
