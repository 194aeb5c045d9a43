// Face alignment: the least-squares similarity against an independent float64 Umeyama (explicit 2×2
// SVD), the libvips warp against a bilinear reference warp written here, and recovery of a face that
// a known similarity moved: landmarks back on the template to sub-pixel accuracy.
import { loadSharp } from '../../lib/data/image';
import type { RawImage } from '../../lib/data/types';
import { AffineMatrix, alignFace, applyAffine, ARCFACE_TEMPLATE_112, invertAffine, similarityTransform } from '../../lib/embed';
import { FacecudaError } from '../../lib/errors';
import { SEED, rng } from '../helpers';

// #region references

/** Normal deviate (Box–Muller). */
function gauss(r: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
}

/** A random similarity [[s cos θ, −s sin θ, tx], [s sin θ, s cos θ, ty]]. */
function randomSimilarity(r: () => number, sLo: number, sHi: number, tLo: number, tHi: number): AffineMatrix {
  const s = sLo + (sHi - sLo) * r();
  const th = (r() * 2 - 1) * Math.PI;
  const tx = tLo + (tHi - tLo) * r();
  const ty = tLo + (tHi - tLo) * r();
  return [[s * Math.cos(th), -s * Math.sin(th), tx], [s * Math.sin(th), s * Math.cos(th), ty]];
}

/**
 * Umeyama (1991): R = U·diag(1, det(UVᵀ))·Vᵀ from the SVD of the cross-covariance Σ = (1/n) Σ q pᵀ,
 * c = tr(D·S)/σ²_p, t = μ_q − c·R·μ_p. The 2×2 SVD by one Jacobi rotation of ΣᵀΣ.
 */
function umeyama(src: number[][], dst: number[][]): number[][] {
  const n = src.length;
  const mp = [0, 0];
  const mq = [0, 0];
  for (let i = 0; i < n; i++) for (let k = 0; k < 2; k++) {
    mp[k] += src[i][k] / n;
    mq[k] += dst[i][k] / n;
  }
  const S = [[0, 0], [0, 0]];
  let varP = 0;
  for (let i = 0; i < n; i++) {
    const p = [src[i][0] - mp[0], src[i][1] - mp[1]];
    const q = [dst[i][0] - mq[0], dst[i][1] - mq[1]];
    varP += (p[0] ** 2 + p[1] ** 2) / n;
    for (let r = 0; r < 2; r++) for (let c = 0; c < 2; c++) S[r][c] += (q[r] * p[c]) / n;
  }
  // V diagonalizes SᵀS.
  const A = [[S[0][0] ** 2 + S[1][0] ** 2, S[0][0] * S[0][1] + S[1][0] * S[1][1]], [0, S[0][1] ** 2 + S[1][1] ** 2]];
  A[1][0] = A[0][1];
  const phi = 0.5 * Math.atan2(2 * A[0][1], A[0][0] - A[1][1]);
  const V = [[Math.cos(phi), -Math.sin(phi)], [Math.sin(phi), Math.cos(phi)]];
  // Columns of S·V are σ_k u_k.
  const SV = [[S[0][0] * V[0][0] + S[0][1] * V[1][0], S[0][0] * V[0][1] + S[0][1] * V[1][1]], [S[1][0] * V[0][0] + S[1][1] * V[1][0], S[1][0] * V[0][1] + S[1][1] * V[1][1]]];
  const sig = [Math.hypot(SV[0][0], SV[1][0]), Math.hypot(SV[0][1], SV[1][1])];
  const U = [[SV[0][0] / sig[0], SV[0][1] / sig[1]], [SV[1][0] / sig[0], SV[1][1] / sig[1]]];
  const detUV = (U[0][0] * U[1][1] - U[0][1] * U[1][0]) * (V[0][0] * V[1][1] - V[0][1] * V[1][0]);
  const d = [1, detUV < 0 ? -1 : 1];
  const R = [[0, 0], [0, 0]];
  for (let r = 0; r < 2; r++) for (let c = 0; c < 2; c++) R[r][c] = U[r][0] * d[0] * V[c][0] + U[r][1] * d[1] * V[c][1];
  const scale = (sig[0] * d[0] + sig[1] * d[1]) / varP;
  const t = [mq[0] - scale * (R[0][0] * mp[0] + R[0][1] * mp[1]), mq[1] - scale * (R[1][0] * mp[0] + R[1][1] * mp[1])];
  return [[scale * R[0][0], scale * R[0][1], t[0]], [scale * R[1][0], scale * R[1][1], t[1]]];
}

/** Bilinear warp, output (X, Y) ← src at M⁻¹(X, Y), pixel-index coordinates, 0 outside (cv2 BORDER_CONSTANT). Float result. */
function warpReference(src: RawImage, m: AffineMatrix, width: number, height: number): Float64Array {
  const [[a, b, tx], [c, d, ty]] = m;
  const det = a * d - b * c;
  const out = new Float64Array(width * height * 3);
  const px = (x: number, y: number, ch: number): number => (x < 0 || y < 0 || x >= src.width || y >= src.height ? 0 : src.data[(y * src.width + x) * 3 + ch]);
  for (let Y = 0; Y < height; Y++) {
    for (let X = 0; X < width; X++) {
      const u = X - tx;
      const v = Y - ty;
      const x = (d * u - b * v) / det;
      const y = (-c * u + a * v) / det;
      if (x <= -1 || y <= -1 || x >= src.width || y >= src.height) continue; // all four neighbours outside: 0
      const x0 = Math.floor(x);
      const y0 = Math.floor(y);
      const fx = x - x0;
      const fy = y - y0;
      for (let ch = 0; ch < 3; ch++) {
        out[(Y * width + X) * 3 + ch] = (1 - fx) * (1 - fy) * px(x0, y0, ch) + fx * (1 - fy) * px(x0 + 1, y0, ch)
          + (1 - fx) * fy * px(x0, y0 + 1, ch) + fx * fy * px(x0 + 1, y0 + 1, ch);
      }
    }
  }
  return out;
}

function toBytes(f: Float64Array): Uint8Array {
  return Uint8Array.from(f, (v) => Math.min(255, Math.max(0, Math.round(v))));
}

function noiseImage(r: () => number, width: number, height: number): RawImage {
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < data.length; i++) data[i] = Math.floor(r() * 256);
  return { width, height, channels: 3, data };
}

/** A canonical face: grey 200, a dark Gaussian blob (σ 4 px) at each template landmark, colour tints per channel. */
function templateFace(): RawImage {
  const size = 112;
  const data = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      let dark = 0;
      for (const [lx, ly] of ARCFACE_TEMPLATE_112) dark += Math.exp(-((x - lx) ** 2 + (y - ly) ** 2) / (2 * 4 ** 2));
      for (let ch = 0; ch < 3; ch++) data[(y * size + x) * 3 + ch] = Math.round(200 - 160 * Math.min(1, dark) - 20 * ch);
    }
  }
  return { width: size, height: size, channels: 3, data };
}

/** Centroid of the darkness (180 − green) within radius 7 of each template point, and its mass. */
function blobCentroids(img: RawImage): [number, number, number][] {
  return ARCFACE_TEMPLATE_112.map(([lx, ly]) => {
    let sw = 0;
    let sx = 0;
    let sy = 0;
    for (let y = Math.floor(ly - 7); y <= Math.ceil(ly + 7); y++) {
      for (let x = Math.floor(lx - 7); x <= Math.ceil(lx + 7); x++) {
        if ((x - lx) ** 2 + (y - ly) ** 2 > 49) continue;
        const w = Math.max(0, 180 - img.data[(y * img.width + x) * 3 + 1]);
        sw += w;
        sx += w * x;
        sy += w * y;
      }
    }
    return [sx / sw, sy / sw, sw];
  });
}

function maxMatrixDiff(a: AffineMatrix | number[][], b: AffineMatrix | number[][]): number {
  let m = 0;
  for (let r = 0; r < 2; r++) for (let c = 0; c < 3; c++) m = Math.max(m, Math.abs(a[r][c] - b[r][c]) / Math.max(1, Math.abs(b[r][c])));
  return m;
}

// #endregion

describe(`similarityTransform (seed ${SEED})`, () => {
  const r = rng(SEED);
  const template = ARCFACE_TEMPLATE_112.map(([x, y]) => [x, y]);

  test('recovers a known similarity from exact points to 1e-6', () => {
    for (let trial = 0; trial < 50; trial++) {
      const S = randomSimilarity(r, 0.2, 6, -500, 500); // template → photo
      const landmarks = template.map((p) => applyAffine(S, p));
      const M = similarityTransform(landmarks);
      expect(maxMatrixDiff(M, invertAffine(S))).toBeLessThan(1e-6);
      // flat Float32Array input, as detectors give it: same transform within float32 rounding of the points
      const flat = Float32Array.from(landmarks.flat());
      expect(maxMatrixDiff(similarityTransform(flat), M)).toBeLessThan(1e-4);
    }
  });

  test('matches an independent float64 Umeyama on noisy points (and never reflects)', () => {
    for (let trial = 0; trial < 50; trial++) {
      const S = randomSimilarity(r, 0.3, 4, 0, 400);
      let src = template.map((p) => applyAffine(S, p)).map(([x, y]) => [x + 3 * gauss(r), y + 3 * gauss(r)]);
      if (trial % 5 === 0) src = src.map(([x, y]) => [-x, y]); // a mirrored face: the best rotation, not a reflection
      const M = similarityTransform(src, template);
      const ref = umeyama(src, template);
      expect(maxMatrixDiff(M, ref)).toBeLessThan(1e-9);
      expect(M[0][0] * M[1][1] - M[0][1] * M[1][0]).toBeGreaterThan(0);
      expect(M[0][0]).toBeCloseTo(M[1][1], 12);
      expect(M[0][1]).toBeCloseTo(-M[1][0], 12);
    }
  });

  test('rejects bad points naming the argument', () => {
    expect(() => similarityTransform('x' as never)).toThrow(/^Expected an array of \[x, y\] points or a typed array of x, y values for src but received "x" of type string$/);
    expect(() => similarityTransform([[1, 2], [3, 4]])).toThrow(RangeError);
    expect(() => similarityTransform([[1, 2], [3, 4]])).toThrow(/dst length/);
    expect(() => similarityTransform(template.map(() => [5, 5]))).toThrow(/^Expected points that are not all the same for src/);
    expect(() => similarityTransform([[1, 2], [3, NaN], [0, 0], [1, 1], [2, 2]])).toThrow(/src value 3/);
    expect(() => similarityTransform([[1, 2], [3], [0, 0], [1, 1], [2, 2]])).toThrow(/^Expected an \[x, y\] pair of numbers for src\[1\]/);
  });
});

describe(`alignFace (seed ${SEED})`, () => {
  const r = rng(SEED ^ 0x5a5a);

  test('the libvips warp equals a bilinear reference warp (border 0), crops partly outside the image included', async () => {
    for (let trial = 0; trial < 12; trial++) {
      const W = 60 + Math.floor(r() * 200);
      const H = 60 + Math.floor(r() * 200);
      const src = noiseImage(r, W, H);
      // Landmarks of a face somewhere in (or partly outside) the photo, 0.3× to 3× the template's size.
      const S = randomSimilarity(r, 0.3, 3, -30, Math.min(W, H));
      const landmarks = ARCFACE_TEMPLATE_112.map((p) => applyAffine(S, p));
      const face = await alignFace(src, landmarks);
      const ref = warpReference(src, face.matrix, 112, 112);
      let worst = 0;
      let sum = 0;
      for (let i = 0; i < ref.length; i++) {
        const e = Math.abs(face.data[i] - ref[i]);
        worst = Math.max(worst, e);
        sum += e;
      }
      // libvips interpolates 8-bit images with fixed-point weights and rounds: within one level.
      expect(worst).toBeLessThanOrEqual(1.01);
      expect(sum / ref.length).toBeLessThan(0.5);
    }
  });

  test('an encoded PNG (RGB or grey) gives the same crop as its pixels; a face outside the image gives black', async () => {
    const src = noiseImage(r, 150, 130);
    const png = new Uint8Array(await loadSharp()(Buffer.from(src.data), { raw: { width: 150, height: 130, channels: 3 } }).png().toBuffer());
    const landmarks = ARCFACE_TEMPLATE_112.map((p) => applyAffine(randomSimilarity(r, 0.6, 1.2, 0, 40), p));
    const a = await alignFace(src, landmarks);
    const b = await alignFace(png, landmarks);
    expect(Buffer.compare(Buffer.from(a.data), Buffer.from(b.data))).toBe(0);
    // A greyscale PNG: one channel expanded to three, as decodeImage does.
    const grey = new Uint8Array(150 * 130);
    for (let i = 0; i < grey.length; i++) grey[i] = src.data[3 * i];
    const greyPng = new Uint8Array(await loadSharp()(Buffer.from(grey), { raw: { width: 150, height: 130, channels: 1 } }).png().toBuffer());
    const greyRgb: RawImage = { width: 150, height: 130, channels: 3, data: Uint8Array.from({ length: grey.length * 3 }, (_, i) => grey[Math.floor(i / 3)]) };
    const c1 = await alignFace(greyPng, landmarks);
    const c3 = await alignFace(greyRgb, landmarks);
    expect(Buffer.compare(Buffer.from(c1.data), Buffer.from(c3.data))).toBe(0);
    const away = ARCFACE_TEMPLATE_112.map(([x, y]) => [x + 1000, y + 1000]);
    const black = await alignFace(src, away);
    expect(black.data.every((v) => v === 0)).toBe(true);
  });

  test('a face moved by a known similarity is recovered: landmarks within 0.5 px of the template', async () => {
    const face = templateFace();
    const base = blobCentroids(face);
    for (let trial = 0; trial < 4; trial++) {
      // Put the face into a 420×400 photo at 0.8×–2.5×, any rotation (all of it inside).
      const S = randomSimilarity(r, 0.8, 2.5, 0, 0);
      const centre = applyAffine(S, [56, 56]);
      const M: AffineMatrix = [[S[0][0], S[0][1], 210 - centre[0]], [S[1][0], S[1][1], 200 - centre[1]]];
      const photo: RawImage = { width: 420, height: 400, channels: 3, data: toBytes(warpReference(face, M, 420, 400)) };
      const landmarks = Float32Array.from(ARCFACE_TEMPLATE_112.flatMap((p) => applyAffine(M, p)));
      const aligned = await alignFace(photo, landmarks, { size: 112 });
      expect(maxMatrixDiff(aligned.matrix, invertAffine(M))).toBeLessThan(1e-4); // float32 landmarks
      const found = blobCentroids(aligned);
      found.forEach(([x, y, mass], i) => {
        const [tx, ty] = ARCFACE_TEMPLATE_112[i];
        expect(Math.abs(mass / base[i][2] - 1)).toBeLessThan(0.1); // the blob is there, not a black crop
        expect(Math.hypot(x - tx, y - ty)).toBeLessThan(0.5);
        // and as close as the same measurement on the original face, up to resampling blur
        expect(Math.hypot(x - base[i][0], y - base[i][1])).toBeLessThan(0.25);
      });
      // The interior matches the original up to two bilinear resamplings (the border blends with the
      // black around the face square in the photo).
      let diff = 0;
      let n = 0;
      for (let y = 4; y < 108; y++) {
        for (let x = 4; x < 108; x++) {
          for (let ch = 0; ch < 3; ch++) diff += Math.abs(aligned.data[(y * 112 + x) * 3 + ch] - face.data[(y * 112 + x) * 3 + ch]);
          n += 3;
        }
      }
      expect(diff / n).toBeLessThan(1.5);
    }
  });

  test('size 224 uses the template scaled by 2', async () => {
    const face = templateFace();
    const big = await alignFace(face, ARCFACE_TEMPLATE_112, { size: 224 });
    expect(big.width).toBe(224);
    expect(maxMatrixDiff(big.matrix, [[2, 0, 0], [0, 2, 0]])).toBeLessThan(1e-9);
  });

  test('bad input is an error naming the argument; undecodable bytes are CORRUPT_FILE', async () => {
    await expect(alignFace(new Uint8Array([1, 2, 3, 4, 5]), ARCFACE_TEMPLATE_112)).rejects.toMatchObject({ code: 'CORRUPT_FILE' });
    await expect(alignFace(new Uint8Array([1, 2, 3]), ARCFACE_TEMPLATE_112)).rejects.toBeInstanceOf(FacecudaError);
    await expect(alignFace({ width: 2, height: 2, channels: 3, data: new Uint8Array(5) } as RawImage, ARCFACE_TEMPLATE_112)).rejects.toThrow(/image.data length/);
    await expect(alignFace(templateFace(), [[1, 2]])).rejects.toThrow(/^Expected 5 points \(as many as the template\) for landmarks length/);
    await expect(alignFace(templateFace(), ARCFACE_TEMPLATE_112, { size: 100 })).rejects.toThrow(RangeError);
    await expect(alignFace(templateFace(), ARCFACE_TEMPLATE_112, { sise: 112 } as never)).rejects.toThrow(/alignFace option 'sise'/);
  });
});
