// Learning-rate schedules (lib/schedule.ts) against their formulas at chosen steps and at every
// boundary; PolyWarmupLR also against a step-by-step re-enactment of arcface_torch's chained
// PolynomialLRWarmup (SPEC §9.1: get_lr returns the group lr at step 0 and beyond total, base·l/w
// during warmup, else the group lr times the ratio of consecutive decay factors).
import {
  ARCFACE_TORCH_V1_MILESTONES, CosineLR, fromEpochs, MultiStepLR, PolyWarmupLR, SEED_MILESTONE_EPOCHS,
} from '../../lib';

/** The reference scheduler as a loop: lr after `steps` scheduler steps (last_epoch = steps). */
function chainedPoly(base: number, w: number, t: number, p: number, steps: number): number[] {
  const out: number[] = [];
  let lr = base; // the optimizer's initial lr; last_epoch 0 returns it unchanged
  for (let l = 0; l <= steps; l++) {
    if (l === 0 || l > t) {
      // group lr unchanged
    } else if (l <= w) {
      lr = (base * l) / w;
    } else {
      lr *= Math.pow((1 - (l - w) / (t - w)) / (1 - (l - 1 - w) / (t - w)), p);
    }
    out.push(lr);
  }
  return out;
}

describe('PolyWarmupLR', () => {
  test('step-0 quirk, warmup, decay, end (formula at boundaries)', () => {
    const s = new PolyWarmupLR({ base: 0.1, totalSteps: 1000, warmupSteps: 100 });
    expect(s.lrAt(0)).toBe(0.1); // quirk: the full base lr at the first iteration, inside the warmup
    expect(s.lrAt(1)).toBeCloseTo(0.001, 15);
    expect(s.lrAt(50)).toBeCloseTo(0.05, 15);
    expect(s.lrAt(100)).toBe(0.1);
    expect(s.lrAt(101)).toBeCloseTo(0.1 * (1 - 1 / 900), 15);
    expect(s.lrAt(550)).toBeCloseTo(0.05, 15);
    expect(s.lrAt(999)).toBeCloseTo(0.1 / 900, 15);
    expect(s.lrAt(1000)).toBe(0);
    expect(s.lrAt(5000)).toBe(0);
  });

  test.each([
    [0.1, 0, 500, 1],
    [0.1, 37, 500, 1],
    [0.4, 20, 300, 2],
    [0.6, 40, 250, 0.5],
    [0.1, -25, 400, 1], // the 3millions config's negative warmup
  ])('base %p warmup %p total %p power %p equals the chained reference at every step', (base, w, t, p) => {
    const s = new PolyWarmupLR({ base, totalSteps: t, warmupSteps: w, power: p });
    const ref = chainedPoly(base, w, t, p, t + 20);
    ref.forEach((lr, l) => expect(Math.abs(s.lrAt(l) - lr)).toBeLessThanOrEqual(1e-12 * base));
  });

  test('negative warmup equals warmup 0', () => {
    const a = new PolyWarmupLR({ base: 0.1, totalSteps: 300, warmupSteps: -30 });
    const b = new PolyWarmupLR({ base: 0.1, totalSteps: 300, warmupSteps: 0 });
    for (const l of [0, 1, 2, 150, 299, 300, 301]) expect(a.lrAt(l)).toBeCloseTo(b.lrAt(l), 15);
  });

  test('fromEpochs: train_v2 step counts (MS1MV3, 8 GPUs × 128 → 5058 steps/epoch)', () => {
    const s = fromEpochs(5058).polyWarmup({ base: 0.1, totalEpochs: 20, warmupEpochs: 2 });
    expect(s.totalSteps).toBe(101160);
    expect(s.warmupSteps).toBe(10116);
    expect(s.lrAt(10116)).toBe(0.1);
    expect(s.lrAt(101160)).toBe(0);
    expect(fromEpochs(100).polyWarmup({ base: 0.1, totalEpochs: 30, warmupEpochs: -1 }).warmupSteps).toBe(-100);
  });

  test('argument errors', () => {
    expect(() => new PolyWarmupLR({ base: 0.1, totalSteps: 100 } as never)).toThrow(/Expected an integer for warmupSteps/);
    expect(() => new PolyWarmupLR({ base: 0.1, totalSteps: 100, warmupSteps: 100 })).toThrow(RangeError);
    expect(() => new PolyWarmupLR({ base: -1, totalSteps: 100, warmupSteps: 0 })).toThrow(RangeError);
    expect(() => new PolyWarmupLR({ base: 0.1, totalSteps: 1.5, warmupSteps: 0 })).toThrow(TypeError);
    expect(() => new PolyWarmupLR({ base: 0.1, totalSteps: 100, warmup: 0 } as never)).toThrow(/Expected a known option/);
    const s = new PolyWarmupLR({ base: 0.1, totalSteps: 100, warmupSteps: 0 });
    expect(() => s.lrAt(-1)).toThrow(expect.objectContaining({ code: 'OUT_OF_RANGE' }));
    expect(() => s.lrAt(0.5)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});

describe('MultiStepLR', () => {
  test('decay from the milestone step on', () => {
    const s = new MultiStepLR({ base: 0.1, milestones: [2000, 1000] });
    expect(s.milestones).toEqual([1000, 2000]);
    expect(s.lrAt(0)).toBe(0.1);
    expect(s.lrAt(999)).toBe(0.1);
    expect(s.lrAt(1000)).toBeCloseTo(0.01, 17);
    expect(s.lrAt(1999)).toBeCloseTo(0.01, 17);
    expect(s.lrAt(2000)).toBeCloseTo(0.001, 17);
    expect(s.lrAt(10 ** 9)).toBeCloseTo(0.001, 17);
    expect(new MultiStepLR({ base: 1, milestones: [5, 5], gamma: 0.5 }).lrAt(5)).toBe(0.25); // repeats count twice
  });

  test('seed recipe: ×0.1 at epochs 20, 28, 32', () => {
    expect(SEED_MILESTONE_EPOCHS).toEqual([20, 28, 32]);
    const spe = 1234;
    const s = fromEpochs(spe).multiStep({ base: 0.1 });
    expect(s.milestones).toEqual([20 * spe, 28 * spe, 32 * spe]);
    expect(s.lrAt(20 * spe - 1)).toBe(0.1);
    expect(s.lrAt(20 * spe)).toBeCloseTo(0.01, 17);
    expect(s.lrAt(28 * spe)).toBeCloseTo(0.001, 17);
    expect(s.lrAt(32 * spe)).toBeCloseTo(0.0001, 17);
    const v1 = fromEpochs(10).multiStep({ base: 0.2, milestones: ARCFACE_TORCH_V1_MILESTONES.ms1mv3.milestones });
    expect(v1.milestones).toEqual([100, 160, 220]);
  });

  test('argument errors', () => {
    expect(() => new MultiStepLR({ base: 0.1, milestones: [1.5] })).toThrow(/Expected an integer for milestones\[0\]/);
    expect(() => new MultiStepLR({ base: 0.1, milestones: 3 as never })).toThrow(TypeError);
    expect(() => new MultiStepLR({ base: 0.1, milestones: [], gamma: -1 })).toThrow(RangeError);
    expect(() => fromEpochs(0)).toThrow(RangeError);
  });
});

describe('CosineLR', () => {
  test('formula with warmup, at boundaries', () => {
    const s = new CosineLR({ base: 1e-3, totalSteps: 1000, warmupSteps: 100, minLr: 1e-5 });
    expect(s.lrAt(0)).toBeCloseTo(1e-5, 18);
    expect(s.lrAt(99)).toBeCloseTo(1e-3, 18);
    expect(s.lrAt(100)).toBeCloseTo(1e-3, 18);
    expect(s.lrAt(550)).toBeCloseTo(1e-5 + (1e-3 - 1e-5) / 2, 15);
    for (const l of [101, 333, 777, 999]) {
      expect(s.lrAt(l)).toBeCloseTo(1e-5 + ((1e-3 - 1e-5) * (1 + Math.cos((Math.PI * (l - 100)) / 900))) / 2, 15);
    }
    expect(s.lrAt(1000)).toBe(1e-5);
    expect(s.lrAt(12345)).toBe(1e-5);
    const plain = new CosineLR({ base: 0.1, totalSteps: 10 });
    expect(plain.lrAt(0)).toBe(0.1);
    expect(plain.lrAt(5)).toBeCloseTo(0.05, 15);
    expect(fromEpochs(10).cosine({ base: 0.1, totalEpochs: 3, warmupEpochs: 0.5 }).warmupSteps).toBe(5);
  });

  test('argument errors', () => {
    expect(() => new CosineLR({ base: 0.1, totalSteps: 10, warmupSteps: 10 })).toThrow(RangeError);
    expect(() => new CosineLR({ base: 0.1, totalSteps: 10, minLr: 0.2 })).toThrow(RangeError);
    expect(() => new CosineLR({ base: 0.1, totalSteps: 0 })).toThrow(RangeError);
  });
});
