// 1:1 decisions: verify's cosine against float64, calibrateThreshold against a brute-force search over
// every candidate threshold on fresh random scores with ties, and ScoreCalibration's estimate
// ((k + 1)/(n + 1), monotone, bounded, conservative when compressed), JSON round trip and sidecar.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { calibrateThreshold, calibrationPath, nextUp, ScoreCalibration, verify } from '../../lib/embed';
import { SEED, rng } from '../helpers';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'facecuda-verify-'));

/** Scores with ties: genuine around 0.6, impostors around 0.1, quantized to 1/q. */
function randomScores(r: () => number, n: number, q: number): { scores: Float64Array; labels: boolean[] } {
  const scores = new Float64Array(n);
  const labels: boolean[] = [];
  for (let i = 0; i < n; i++) {
    const g = r() < 0.3;
    labels.push(g);
    const v = (g ? 0.6 : 0.1) + 0.25 * (r() + r() + r() - 1.5);
    scores[i] = Math.round(v * q) / q;
  }
  return { scores, labels };
}

/** The smallest threshold t (over every score, every nextUp(score) and −∞) with #{imp ≥ t}/n ≤ far. */
function bruteForce(scores: ArrayLike<number>, labels: boolean[], far: number): { threshold: number; tar: number; far: number } {
  const imp: number[] = [];
  const gen: number[] = [];
  for (let i = 0; i < scores.length; i++) (labels[i] ? gen : imp).push(scores[i]);
  const candidates = [-Infinity, ...Array.from(scores), ...Array.from(scores, (s) => nextUp(s))].sort((a, b) => a - b);
  for (const t of candidates) {
    const fa = imp.filter((s) => s >= t).length / imp.length;
    if (fa <= far) return { threshold: t, far: fa, tar: gen.filter((s) => s >= t).length / gen.length };
  }
  throw new Error('unreachable');
}

describe(`verify (seed ${SEED})`, () => {
  const r = rng(SEED);

  test('cosine of raw or unit vectors against float64; match iff score ≥ threshold', () => {
    for (let trial = 0; trial < 20; trial++) {
      const d = 1 + Math.floor(r() * 600);
      const a = Float32Array.from({ length: d }, () => r() * 2 - 1);
      const b = Float32Array.from({ length: d }, () => r() * 2 - 1);
      let dot = 0;
      let na = 0;
      let nb = 0;
      for (let i = 0; i < d; i++) {
        dot += a[i] * b[i];
        na += a[i] * a[i];
        nb += b[i] * b[i];
      }
      const ref = dot / Math.sqrt(na * nb);
      const { score, match } = verify(a, b, { threshold: 0 });
      expect(Math.abs(score - ref)).toBeLessThan(1e-12);
      expect(match).toBe(ref >= 0);
      const scaled = Float64Array.from(a, (v) => v * 7.5);
      expect(verify(scaled, Array.from(b), { threshold: 0 }).score).toBeCloseTo(ref, 12);
      expect(verify(a, b, { threshold: score }).match).toBe(true);
      expect(verify(a, b, { threshold: nextUp(score) }).match).toBe(false);
    }
  });

  test('with a calibration it reports the false-match rate; errors name the argument', async () => {
    const cal = await ScoreCalibration.fit([0.1, 0.2, 0.3, 0.9], [0, 0, 0, 1]);
    const v = verify([1, 0], [1, 0], { threshold: 0.5, calibration: cal });
    expect(v).toEqual({ score: 1, match: true, falseMatchRate: 1 / 4 });
    expect(() => verify([1, 0], [1, 0, 0], { threshold: 0 })).toThrow(expect.objectContaining({ code: 'SHAPE_MISMATCH' }) as never);
    expect(() => verify([0, 0], [1, 0], { threshold: 0 })).toThrow(/^Expected a vector with a non-zero norm for a/);
    expect(() => verify([1, NaN], [1, 0], { threshold: 0 })).toThrow(/^Expected a finite number for a\[1\]/);
    expect(() => verify('x' as never, [1], { threshold: 0 })).toThrow(TypeError);
    expect(() => verify([1], [1], {} as never)).toThrow(/^Expected a number for threshold but received undefined/);
    expect(() => verify([1], [1], { threshold: 0, treshold: 1 } as never)).toThrow(/verify option 'treshold'/);
  });
});

describe(`calibrateThreshold (seed ${SEED})`, () => {
  const r = rng(SEED ^ 0x1234);

  test('equals a brute-force search on fresh random scores with ties, for many targets', async () => {
    for (let trial = 0; trial < 8; trial++) {
      const n = 50 + Math.floor(r() * 400);
      const { scores, labels } = randomScores(r, n, trial % 2 ? 40 : 1e6);
      const nImp = labels.filter((l) => !l).length;
      const targets = [0, 1, r(), r() * 0.05, 1 / nImp, 3 / nImp, (3 / nImp) * (1 - 1e-12), 0.5];
      for (const far of targets) {
        const got = await calibrateThreshold(trial % 3 ? Float32Array.from(scores) : scores, trial % 2 ? labels : labels.map(Number), { far });
        const ref = bruteForce(trial % 3 ? Float32Array.from(scores) : scores, labels, far);
        expect(got.threshold).toBe(ref.threshold);
        expect(got.far).toBe(ref.far);
        expect(got.tar).toBe(ref.tar);
        expect(got.far).toBeLessThanOrEqual(far);
        expect(got.impostorCount).toBe(nImp);
      }
    }
  });

  test('conventions: inclusive acceptance, the threshold just above the (K+1)-th impostor, −∞ for far = 1', async () => {
    const scores = [0.9, 0.8, 0.8, 0.5, 0.3, 0.7];
    const labels = [1, 0, 0, 0, 0, 1];
    // 4 impostors: far 0.25 allows 1 acceptance, but 0.8 is shared by two → nothing at 0.8 is allowed
    const a = await calibrateThreshold(scores, labels, { far: 0.25 });
    expect(a).toEqual({ threshold: nextUp(0.8), tar: 0.5, far: 0, genuineCount: 2, impostorCount: 4 });
    const b = await calibrateThreshold(scores, labels, { far: 0.5 }); // two acceptances allowed: 0.8 and 0.8
    expect(b).toEqual({ threshold: nextUp(0.5), tar: 1, far: 0.5, genuineCount: 2, impostorCount: 4 });
    expect((await calibrateThreshold(scores, labels, { far: 1 })).threshold).toBe(-Infinity);
    expect((await calibrateThreshold(scores, labels, { far: 0 })).threshold).toBe(nextUp(0.8));
  });

  test('400 000 scores: sorted in slices (merge path), same as a plain sort; the event loop keeps turning', async () => {
    const n = 400_000; // more than one slice of 2^18
    const scores = new Float64Array(n);
    const labels = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      labels[i] = r() < 0.01 ? 1 : 0;
      scores[i] = labels[i] ? 0.5 + r() * 0.5 : r() * 0.7;
    }
    let ticks = 0;
    const timer = setInterval(() => ticks++, 0);
    const got = await calibrateThreshold(scores, labels, { far: 1e-4 });
    clearInterval(timer);
    const imp = Float64Array.from(scores.filter((_, i) => !labels[i])).sort();
    const k = Math.floor(1e-4 * imp.length + 1e-9);
    expect(got.threshold).toBe(nextUp(imp[imp.length - 1 - k]));
    expect(got.far).toBeLessThanOrEqual(1e-4);
    expect(ticks).toBeGreaterThan(0);
  });

  test('bad arguments', async () => {
    await expect(calibrateThreshold([0.1, 0.2], [true], { far: 0.1 })).rejects.toMatchObject({ code: 'SHAPE_MISMATCH' });
    await expect(calibrateThreshold([0.1, 0.2], [true, true], { far: 0.1 })).rejects.toThrow(/impostor/);
    await expect(calibrateThreshold([0.1, 0.2], [false, false], { far: 0.1 })).rejects.toThrow(/genuine/);
    await expect(calibrateThreshold([0.1, 0.2], [true, 2], { far: 0.1 })).rejects.toThrow(/^Expected a boolean or 0\/1 for labels\[1\]/);
    await expect(calibrateThreshold([0.1, 0.2], [true, false], { far: 2 })).rejects.toThrow(RangeError);
    await expect(calibrateThreshold([0.1, 0.2], [true, false], {} as never)).rejects.toThrow(/for far/);
  });
});

describe(`ScoreCalibration (seed ${SEED})`, () => {
  const r = rng(SEED ^ 0x777);

  test('falseMatchRate = (k + 1)/(n + 1): monotone, in [1/(n + 1), 1]; thresholdFor = calibrateThreshold', async () => {
    const { scores, labels } = randomScores(r, 3000, 200);
    const cal = await ScoreCalibration.fit(scores, labels);
    const imp = Array.from(scores).filter((_, i) => !labels[i]);
    const gen = Array.from(scores).filter((_, i) => labels[i]);
    const n = imp.length;
    expect(cal.impostorCount).toBe(n);
    expect(cal.genuineCount).toBe(gen.length);
    let prev = Infinity;
    for (let s = -1; s <= 1.5; s += 0.005) {
      const k = imp.filter((v) => v >= s).length;
      const fmr = cal.falseMatchRate(s);
      expect(fmr).toBe((k + 1) / (n + 1));
      expect(fmr).toBeLessThanOrEqual(prev);
      expect(fmr).toBeGreaterThanOrEqual(1 / (n + 1));
      expect(fmr).toBeLessThanOrEqual(1);
      expect(cal.impostorAcceptRate(s)).toBe(k / n);
      expect(cal.genuineAcceptRate(s)).toBe(gen.filter((v) => v >= s).length / gen.length);
      prev = fmr;
    }
    expect(cal.falseMatchRate(10)).toBe(1 / (n + 1));
    for (const far of [0, 1e-3, 0.01, 0.2, 1]) expect(cal.thresholdFor(far)).toBe((await calibrateThreshold(scores, labels, { far })).threshold);
  });

  test('compressed storage is conservative: impostor counts never under-, genuine never over-estimated', async () => {
    const { scores, labels } = randomScores(r, 20000, 1e4);
    const cal = await ScoreCalibration.fit(scores, labels, { maxExact: 300, maxKnots: 50 });
    const json = cal.toJSON();
    expect(json.impostor.top.length).toBe(300);
    expect(json.impostor.knots.length).toBeLessThanOrEqual(50);
    const imp = Array.from(scores).filter((_, i) => !labels[i]).sort((a, b) => a - b);
    const gen = Array.from(scores).filter((_, i) => labels[i]);
    const top300 = imp[imp.length - 300];
    let prev = Infinity;
    for (let s = -0.5; s <= 1.2; s += 0.004) {
      const k = imp.filter((v) => v >= s).length;
      const est = Math.round(cal.impostorAcceptRate(s) * imp.length);
      expect(est).toBeGreaterThanOrEqual(k);
      if (s > top300) expect(est).toBe(k); // exact where the small rates are
      expect(cal.falseMatchRate(s)).toBeLessThanOrEqual(prev);
      prev = cal.falseMatchRate(s);
      expect(Math.round(cal.genuineAcceptRate(s) * gen.length)).toBeLessThanOrEqual(gen.filter((v) => v >= s).length);
    }
    // its thresholds still meet the target on the data
    for (const far of [1e-3, 0.05, 0.3]) {
      const t = cal.thresholdFor(far);
      expect(imp.filter((v) => v >= t).length / imp.length).toBeLessThanOrEqual(far);
    }
  });

  test('JSON round trip and the sidecar file; corrupt files are CORRUPT_FILE', async () => {
    const { scores, labels } = randomScores(r, 2000, 1e6);
    const cal = await ScoreCalibration.fit(scores, labels, { maxExact: 100, maxKnots: 20, description: 'test set' });
    const back = ScoreCalibration.fromJSON(JSON.parse(JSON.stringify(cal)));
    expect(back.toJSON()).toEqual(cal.toJSON());
    for (let i = 0; i < 200; i++) {
      const s = r() * 1.4 - 0.3;
      expect(back.falseMatchRate(s)).toBe(cal.falseMatchRate(s));
      expect(back.genuineAcceptRate(s)).toBe(cal.genuineAcceptRate(s));
    }
    expect(calibrationPath('/m/r50.safetensors')).toBe('/m/r50.calibration.json');
    expect(calibrationPath('/m/r50.calibration.json')).toBe('/m/r50.calibration.json');
    const file = await cal.save(path.join(tmp, 'r50.onnx'));
    expect(file).toBe(path.join(tmp, 'r50.calibration.json'));
    expect(fs.readdirSync(tmp).filter((f) => f.includes('.tmp-'))).toEqual([]);
    expect((await ScoreCalibration.load(path.join(tmp, 'r50.safetensors'))).toJSON()).toEqual(cal.toJSON());
    const impostorsOnly = await ScoreCalibration.fit([0.1, 0.2], [false, false]);
    expect(impostorsOnly.genuineAcceptRate(0)).toBeNaN();
    expect(ScoreCalibration.fromJSON(impostorsOnly.toJSON()).toJSON().genuine).toBeNull();

    fs.writeFileSync(path.join(tmp, 'bad.calibration.json'), '{"kind":"facecuda.score-calibration"');
    await expect(ScoreCalibration.load(path.join(tmp, 'bad.calibration.json'))).rejects.toMatchObject({ code: 'CORRUPT_FILE' });
    const j = cal.toJSON();
    const unsorted = { ...j, impostor: { ...j.impostor, top: [...j.impostor.top].reverse() } };
    expect(() => ScoreCalibration.fromJSON(unsorted)).toThrow(/top is not ascending/);
    expect(() => ScoreCalibration.fromJSON({ ...j, version: 2 })).toThrow(/version 2/);
    expect(() => ScoreCalibration.fromJSON({ ...j, impostor: { ...j.impostor, count: 5 } })).toThrow(expect.objectContaining({ code: 'CORRUPT_FILE' }) as never);
    await expect(ScoreCalibration.load(path.join(tmp, 'none.safetensors'))).rejects.toMatchObject({ code: 'IO_ERROR' });
    await expect(ScoreCalibration.fit([0.1], [true])).rejects.toThrow(/impostor/);
    await expect(ScoreCalibration.fit([0.1], [false], { maxExact: 0 })).rejects.toThrow(RangeError);
  });
});
