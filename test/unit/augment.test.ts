// Augmentations, the counter-based generator, the resampler and the normalization (lib/data/augment.ts,
// lib/data/image.ts): invariants that hold for any key, checked over many keys.
import {
  ARCFACE_AUGMENT, CounterRng, STREAMS, adjustBrightness, adjustContrast, adjustSaturation, augmentImage, cropParams, epochPermutation,
  eraseParams, hflip, isIdentityAugment, resolveAugment,
} from '../../lib/data/augment';
import { NORMALIZE_TABLE, normalizeInto, resampleRegion, resizeImage } from '../../lib/data/image';
import type { RawImage } from '../../lib/data/types';
import { SEED, rng } from '../helpers';

function randomImage(w: number, h: number, r: () => number): RawImage {
  const data = new Uint8Array(w * h * 3);
  for (let i = 0; i < data.length; i++) data[i] = Math.floor(r() * 256);
  return { width: w, height: h, channels: 3, data };
}

function copy(img: RawImage): RawImage {
  return { ...img, data: img.data.slice() };
}

const ALL_ON = resolveAugment({
  flip: 0.5, crop: { scale: [0.5, 1] }, colorJitter: { brightness: 0.4, contrast: 0.4, saturation: 0.4 }, grayscale: 0.2,
  lowRes: { p: 0.5 }, erase: { p: 0.5, value: 'random' },
});

describe(`counter-based generator (seed ${SEED})`, () => {
  it('is a pure function of (key, counter)', () => {
    const a = new CounterRng({ seed: 2048, epoch: 3, index: 17, stream: 2 });
    const b = new CounterRng({ seed: 2048, epoch: 3, index: 17, stream: 2 });
    const xs = Array.from({ length: 100 }, () => a.nextU32());
    expect(Array.from({ length: 100 }, () => b.nextU32())).toEqual(xs);
    expect(a.at(5)).toBe(xs[5]);
    for (const other of [{ seed: 2049 }, { epoch: 4 }, { index: 18 }, { stream: 3 }, { seed: 2048 + 2 ** 32 }]) {
      const c = new CounterRng({ seed: 2048, epoch: 3, index: 17, stream: 2, ...other });
      const ys = Array.from({ length: 100 }, () => c.nextU32());
      expect(ys).not.toEqual(xs);
    }
  });

  it('is roughly uniform (bucket counts within 5 sigma)', () => {
    // 16 buckets, 64k draws across many keys: expected 4096 per bucket, sigma ≈ 62.
    const counts = new Array(16).fill(0);
    for (let index = 0; index < 4096; index++) {
      const r = new CounterRng({ seed: SEED, epoch: 0, index });
      for (let k = 0; k < 16; k++) counts[Math.floor(r.next() * 16)]++;
    }
    for (const c of counts) expect(Math.abs(c - 4096)).toBeLessThan(5 * 62);
    const r = new CounterRng({ seed: SEED, epoch: 1, index: 2 });
    for (let i = 0; i < 1000; i++) {
      const u = r.next53();
      expect(u >= 0 && u < 1).toBe(true);
      const k = r.int(3, 7);
      expect(k >= 3 && k <= 7 && Number.isInteger(k)).toBe(true);
    }
  });

  it('epoch permutations are permutations, reproducible, and differ by epoch and seed', () => {
    const n = 1000;
    const p = epochPermutation(n, SEED, 0);
    expect(Array.from(p).sort((a, b) => a - b)).toEqual(Array.from({ length: n }, (_, i) => i));
    expect(epochPermutation(n, SEED, 0)).toEqual(p);
    expect(epochPermutation(n, SEED, 1)).not.toEqual(p);
    expect(epochPermutation(n, SEED + 1, 0)).not.toEqual(p);
    expect(epochPermutation(0, SEED, 0).length).toBe(0);
    expect(Array.from(epochPermutation(1, SEED, 0))).toEqual([0]);
  });
});

describe(`augmentations (seed ${SEED})`, () => {
  const r = rng(SEED);

  it('flip twice is the identity, and flip mirrors columns', () => {
    const img = randomImage(7, 5, r);
    const orig = copy(img);
    hflip(img);
    for (let y = 0; y < 5; y++) {
      for (let x = 0; x < 7; x++) {
        for (let c = 0; c < 3; c++) expect(img.data[(y * 7 + x) * 3 + c]).toBe(orig.data[(y * 7 + 6 - x) * 3 + c]);
      }
    }
    hflip(img);
    expect(img.data).toEqual(orig.data);
  });

  it('p = 0 (or no options) leaves the image unchanged', () => {
    const none = resolveAugment({
      flip: 0, crop: { p: 0 }, colorJitter: { p: 0, brightness: 1 }, grayscale: 0, lowRes: { p: 0 }, erase: { p: 0 },
    });
    expect(isIdentityAugment(none)).toBe(true);
    expect(isIdentityAugment(resolveAugment({}))).toBe(true);
    expect(isIdentityAugment(resolveAugment(ARCFACE_AUGMENT))).toBe(false);
    for (let index = 0; index < 20; index++) {
      const img = randomImage(16, 16, r);
      const out = augmentImage(copy(img), none, { seed: SEED, epoch: 0, index });
      expect(out.data).toEqual(img.data);
    }
  });

  it('p = 1 always applies (flip)', () => {
    const img = randomImage(9, 4, r);
    const flipped = hflip(copy(img));
    const out = augmentImage(copy(img), resolveAugment({ flip: 1 }), { seed: SEED, epoch: 0, index: 5 });
    expect(out.data).toEqual(flipped.data);
  });

  it('the same key gives the same bytes; another epoch gives other bytes', () => {
    const img = randomImage(32, 32, r);
    let differ = 0;
    for (let index = 0; index < 20; index++) {
      const a = augmentImage(copy(img), ALL_ON, { seed: SEED, epoch: 2, index });
      const b = augmentImage(copy(img), ALL_ON, { seed: SEED, epoch: 2, index });
      expect(b.data).toEqual(a.data);
      expect(a.width).toBe(32);
      expect(a.height).toBe(32);
      const c = augmentImage(copy(img), ALL_ON, { seed: SEED, epoch: 3, index });
      if (Buffer.compare(Buffer.from(a.data), Buffer.from(c.data)) !== 0) differ++;
    }
    expect(differ).toBeGreaterThan(15);
  });

  it('random resized crop: rectangles inside the image, area and ratio in range, output at the input size', () => {
    const scale: [number, number] = [0.3, 0.9];
    const ratio: [number, number] = [3 / 4, 4 / 3];
    for (let index = 0; index < 500; index++) {
      const g = new CounterRng({ seed: SEED, epoch: 0, index, stream: STREAMS.crop });
      const { x, y, w, h } = cropParams(112, 96, g, scale, ratio);
      expect(x >= 0 && y >= 0 && w > 0 && h > 0 && x + w <= 112 && y + h <= 96).toBe(true);
      // w and h are rounded from the drawn area and ratio: allow the rounding (±0.5 px per side).
      const area = (w * h) / (112 * 96);
      expect(area).toBeGreaterThanOrEqual(((Math.sqrt(scale[0] * 112 * 96) - 1) ** 2) / (112 * 96) - 1e-9);
      expect(area).toBeLessThanOrEqual(((Math.sqrt(scale[1] * 112 * 96) + 1) ** 2) / (112 * 96) + 1e-9);
    }
    // Impossible areas fall back to the centre crop with the ratio clamped.
    const g = new CounterRng({ seed: SEED, epoch: 0, index: 0, stream: STREAMS.crop });
    expect(cropParams(100, 50, g, [1, 1], [1, 1])).toEqual({ x: 25, y: 0, w: 50, h: 50 });
    const img = randomImage(40, 30, r);
    const out = augmentImage(img, resolveAugment({ crop: true }), { seed: SEED, epoch: 0, index: 1 });
    expect([out.width, out.height, out.data.length]).toEqual([40, 30, 40 * 30 * 3]);
  });

  it('random erasing: area within range, h < H and w < W, exactly the rectangle filled', () => {
    const scale: [number, number] = [0.02, 0.33];
    for (let index = 0; index < 300; index++) {
      const g = new CounterRng({ seed: SEED, epoch: 1, index, stream: STREAMS.erase });
      const rect = eraseParams(112, 112, g, scale, [0.3, 3.3]);
      if (!rect) continue;
      expect(rect.h < 112 && rect.w < 112 && rect.x >= 0 && rect.y >= 0 && rect.x + rect.w <= 112 && rect.y + rect.h <= 112).toBe(true);
      const area = (rect.w * rect.h) / (112 * 112);
      expect(area).toBeGreaterThanOrEqual(((Math.sqrt(scale[0]) * 112 - 1) ** 2) / (112 * 112) - 1e-9);
      expect(area).toBeLessThanOrEqual(((Math.sqrt(scale[1]) * 112 + 1) ** 2) / (112 * 112) + 1e-9);
    }
    // Against a known rectangle: recompute the draw with the same key.
    const opts = resolveAugment({ erase: { p: 1, value: [1, 2, 3] } });
    let erasedSome = false;
    for (let index = 0; index < 20; index++) {
      const img: RawImage = { width: 50, height: 40, channels: 3, data: new Uint8Array(50 * 40 * 3).fill(200) };
      augmentImage(img, opts, { seed: SEED, epoch: 0, index });
      const g = new CounterRng({ seed: SEED, epoch: 0, index, stream: STREAMS.erase });
      expect(g.chance(1)).toBe(true);
      const rect = eraseParams(50, 40, g, opts.erase!.scale, opts.erase!.ratio);
      let filled = 0;
      let wrong = 0;
      for (let p = 0; p < 50 * 40; p++) {
        const x = p % 50;
        const y = Math.floor(p / 50);
        const inside = !!rect && x >= rect.x && x < rect.x + rect.w && y >= rect.y && y < rect.y + rect.h;
        const want = inside ? [1, 2, 3] : [200, 200, 200];
        if (img.data[3 * p] !== want[0] || img.data[3 * p + 1] !== want[1] || img.data[3 * p + 2] !== want[2]) wrong++;
        if (inside) filled++;
      }
      expect(wrong).toBe(0);
      expect(filled).toBe(rect ? rect.w * rect.h : 0);
      if (filled > 0) erasedSome = true;
    }
    expect(erasedSome).toBe(true);
    // No rectangle fits an image too small for the scale: nothing is erased.
    const g = new CounterRng({ seed: SEED, epoch: 0, index: 0 });
    expect(eraseParams(2, 2, g, [0.9, 1], [1, 1])).toBeNull();
  });

  it('colour jitter: factor 1 is the identity, saturation 0 gives grey, brightness scales', () => {
    const img = randomImage(12, 12, r);
    for (const fn of [adjustBrightness, adjustContrast, adjustSaturation]) {
      const c = copy(img);
      fn(c, 1);
      expect(c.data).toEqual(img.data);
    }
    const g = copy(img);
    adjustSaturation(g, 0);
    for (let p = 0; p < 144; p++) {
      expect(g.data[3 * p]).toBe(g.data[3 * p + 1]);
      expect(g.data[3 * p]).toBe(g.data[3 * p + 2]);
    }
    const b = copy(img);
    adjustBrightness(b, 0.5);
    for (let i = 0; i < b.data.length; i++) expect(b.data[i]).toBe(Math.floor(img.data[i] * 0.5));
    const k = copy(img);
    adjustContrast(k, 0);
    expect(new Set(k.data).size).toBe(1);
  });

  it('low resolution keeps the size; scale [1, 1] changes nothing', () => {
    const img = randomImage(112, 112, r);
    const out = augmentImage(copy(img), resolveAugment({ lowRes: { scale: [0.25, 0.5] } }), { seed: SEED, epoch: 0, index: 3 });
    expect([out.width, out.height]).toEqual([112, 112]);
    expect(out.data).not.toEqual(img.data);
    const same = augmentImage(copy(img), resolveAugment({ lowRes: { scale: [1, 1] } }), { seed: SEED, epoch: 0, index: 3 });
    expect(same.data).toEqual(img.data);
  });

  it('rejects bad options with the usual messages', () => {
    expect(() => resolveAugment({ flip: 1.5 })).toThrow(RangeError);
    expect(() => resolveAugment({ Flip: 0.5 } as never)).toThrow(/'flip' \(option names are case-sensitive\)/);
    expect(() => resolveAugment({ crop: { scale: [0.9, 0.1] } })).toThrow(/min ≤ max/);
    expect(() => resolveAugment({ erase: { value: 'noise' as never } })).toThrow(TypeError);
    expect(() => resolveAugment({ lowRes: { filters: ['cubic' as never] } })).toThrow(TypeError);
  });
});

describe('resampling and normalization', () => {
  const r = rng(SEED + 1);

  it('a constant image stays constant at any size and filter', () => {
    const img: RawImage = { width: 37, height: 23, channels: 3, data: new Uint8Array(37 * 23 * 3) };
    for (let p = 0; p < 37 * 23; p++) img.data.set([10, 128, 250], 3 * p);
    for (const f of ['nearest', 'bilinear', 'area'] as const) {
      for (const [w, h] of [[112, 112], [5, 9], [37, 23], [200, 3]]) {
        const out = resizeImage(img, w, h, f);
        let wrong = 0;
        for (let p = 0; p < w * h; p++) if (out.data[3 * p] !== 10 || out.data[3 * p + 1] !== 128 || out.data[3 * p + 2] !== 250) wrong++;
        expect({ f, w, h, wrong }).toEqual({ f, w, h, wrong: 0 });
      }
    }
  });

  it('area halving averages 2×2 blocks; the identity region copies', () => {
    const img = randomImage(8, 6, r);
    const half = resizeImage(img, 4, 3, 'area');
    for (let y = 0; y < 3; y++) {
      for (let x = 0; x < 4; x++) {
        for (let c = 0; c < 3; c++) {
          const at = (yy: number, xx: number): number => img.data[(yy * 8 + xx) * 3 + c];
          const mean = (at(2 * y, 2 * x) + at(2 * y, 2 * x + 1) + at(2 * y + 1, 2 * x) + at(2 * y + 1, 2 * x + 1)) / 4;
          expect(Math.abs(half.data[(y * 4 + x) * 3 + c] - mean)).toBeLessThanOrEqual(0.5 + 1e-9);
        }
      }
    }
    expect(resampleRegion(img, 0, 0, 8, 6, 8, 6, 'bilinear').data).toEqual(img.data);
    const crop = resampleRegion(img, 2, 1, 4, 3, 4, 3, 'bilinear');
    for (let y = 0; y < 3; y++) for (let x = 0; x < 4; x++) expect(crop.data[(y * 4 + x) * 3]).toBe(img.data[((y + 1) * 8 + x + 2) * 3]);
  });

  it('normalizeInto writes CHW (v/255 − 0.5)/0.5, flipped and BGR on request', () => {
    const img = randomImage(5, 4, r);
    const plane = 20;
    const out = new Float32Array(7 + 3 * plane).fill(NaN);
    normalizeInto(img, out, 7);
    expect(Number.isNaN(out[6])).toBe(true);
    for (let y = 0; y < 4; y++) {
      for (let x = 0; x < 5; x++) {
        for (let c = 0; c < 3; c++) {
          expect(out[7 + c * plane + y * 5 + x]).toBe(Math.fround((img.data[(y * 5 + x) * 3 + c] / 255 - 0.5) / 0.5));
        }
      }
    }
    const f = new Float32Array(3 * plane);
    normalizeInto(img, f, 0, { flip: true, colorOrder: 'BGR' });
    for (let y = 0; y < 4; y++) {
      for (let x = 0; x < 5; x++) {
        for (let c = 0; c < 3; c++) expect(f[(2 - c) * plane + y * 5 + (4 - x)]).toBe(NORMALIZE_TABLE[img.data[(y * 5 + x) * 3 + c]]);
      }
    }
    expect(NORMALIZE_TABLE[0]).toBe(-1);
    expect(NORMALIZE_TABLE[255]).toBe(1);
    expect(() => normalizeInto(img, new Float32Array(10), 0)).toThrow(RangeError);
    expect(() => normalizeInto(img, new Float64Array(60) as never, 0)).toThrow(TypeError);
  });
});
