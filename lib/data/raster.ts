/**
 * A tiny anti-aliased rasterizer for the synthetic face generator ({@link ./synthetic}).
 *
 * Everything is drawn into one reused float RGB buffer (HWC, values 0–255) with the painter's
 * algorithm: `dst += coverage·alpha·(colour − dst)`. Shapes are affine images of the unit disc or the
 * unit square, given in "face coordinates" and mapped to pixels by the current face→pixel transform
 * (rotation, scale, translation of the whole head). Coverage is analytic: the signed pixel distance to
 * the edge is approximated by (r − 1)/|∇r| (exact for circles, first order for ellipses), and
 * coverage = clamp(0.5 − d/width), width = max(1, softness) pixels. Each shape touches only its
 * bounding box, and nothing allocates per pixel or per shape, so a 112×112 face takes well under a
 * millisecond in plain JavaScript.
 *
 * Not exported from the package: it is an implementation detail of SyntheticFaces.
 */

// Math's functions as module constants: inside a vm context (Jest) every global lookup in a hot
// loop goes through the context's interceptors and costs ~10×.
const { abs, ceil, cos, exp, floor, hypot, max, min, round, sin, sqrt } = Math;

/** How a second disc B (in A's unit coordinates) combines with disc A. */
export const enum Op {
  /** A alone. */
  None = 0,
  /** A minus B: crescents, rings, brows, lids, hairlines. */
  Minus = 1,
  /** A and B: an iris clipped by the eye opening. */
  And = 2,
}

export class Raster {
  readonly width: number;
  readonly height: number;
  /** width·height·3 floats, HWC RGB, nominally 0–255 (may leave that range until {@link toBytes}). */
  readonly px: Float32Array;
  /** width·height head mask in [0, 1]: where the lighting pass uses the head's pseudo-normals. */
  readonly mask: Float32Array;
  /** Scratch, width·height·3. */
  readonly tmp: Float32Array;
  readonly #xi: Int32Array;
  readonly #xw: Float32Array;
  // Face → pixel transform: x' = a·x + b·y + c, y' = d·x + e·y + f.
  private a = 1;
  private b = 0;
  private c = 0;
  private d = 0;
  private e = 1;
  private f = 0;

  constructor(width: number, height: number) {
    this.width = width;
    this.height = height;
    this.px = new Float32Array(width * height * 3);
    this.mask = new Float32Array(width * height);
    this.tmp = new Float32Array(width * height * 3);
    this.#xi = new Int32Array(width);
    this.#xw = new Float32Array(width);
  }

  /** Sets the face → pixel transform. */
  setTransform(a: number, b: number, c: number, d: number, e: number, f: number): void {
    this.a = a;
    this.b = b;
    this.c = c;
    this.d = d;
    this.e = e;
    this.f = f;
  }

  /** Maps a face point to pixels (x). */
  mapX(x: number, y: number): number {
    return this.a * x + this.b * y + this.c;
  }

  /** Maps a face point to pixels (y). */
  mapY(x: number, y: number): number {
    return this.d * x + this.e * y + this.f;
  }

  /**
   * Fills with a linear gradient: t = 0.5 + gx·(x/width − 0.5) + gy·(y/height − 0.5), clamped to
   * [0, 1], from colour 0 (t = 0) to colour 1 (t = 1). Clears the head mask.
   */
  gradient(r0: number, g0: number, b0: number, r1: number, g1: number, b1: number, gx: number, gy: number): void {
    const { width: w, height: h, px, mask } = this;
    mask.fill(0);
    const ux = gx / w;
    const uy = gy / h;
    let i = 0;
    for (let y = 0; y < h; y++) {
      const ty = 0.5 + (y + 0.5 - 0.5 * h) * uy;
      for (let x = 0; x < w; x++, i += 3) {
        let t = ty + (x + 0.5 - 0.5 * w) * ux;
        t = t < 0 ? 0 : t > 1 ? 1 : t;
        px[i] = r0 + (r1 - r0) * t;
        px[i + 1] = g0 + (g1 - g0) * t;
        px[i + 2] = b0 + (b1 - b0) * t;
      }
    }
  }

  /**
   * Draws the affine image of the unit disc A — centre (cx, cy), radii (rx, ry), rotated by `angle`
   * (radians), all in face coordinates — optionally combined with a disc B given in A's unit
   * coordinates (centre (bx, by), radii (brx, bry)). `soft` widens the edge to that many pixels.
   * `maskValue` ≥ 0 also paints the head mask with that value.
   */
  disc(
    cx: number, cy: number, rx: number, ry: number, angle: number,
    cr: number, cg: number, cb: number, alpha: number, soft = 0,
    op: Op = Op.None, bx = 0, by = 0, brx = 1, bry = 1, maskValue = -1,
  ): void {
    if (alpha <= 0 || rx <= 0 || ry <= 0) return;
    const ca = cos(angle);
    const sa = sin(angle);
    // L = G · R(angle) · diag(rx, ry): unit → pixel.
    const l00 = (this.a * ca + this.b * sa) * rx;
    const l01 = (-this.a * sa + this.b * ca) * ry;
    const l10 = (this.d * ca + this.e * sa) * rx;
    const l11 = (-this.d * sa + this.e * ca) * ry;
    const det = l00 * l11 - l01 * l10;
    if (abs(det) < 1e-9) return;
    // J = L⁻¹: pixel → unit. Rows are ∇u and ∇v.
    const j00 = l11 / det;
    const j01 = -l01 / det;
    const j10 = -l10 / det;
    const j11 = l00 / det;
    const pcx = this.a * cx + this.b * cy + this.c;
    const pcy = this.d * cx + this.e * cy + this.f;
    const sw = soft > 1 ? soft : 1;
    const pad = 0.5 * sw + 1;
    const ex = sqrt(l00 * l00 + l01 * l01);
    const ey = sqrt(l10 * l10 + l11 * l11);
    const w = this.width;
    const x0 = max(0, floor(pcx - ex - pad));
    const x1 = min(w - 1, ceil(pcx + ex + pad));
    const y0 = max(0, floor(pcy - ey - pad));
    const y1 = min(this.height - 1, ceil(pcy + ey + pad));
    if (x0 > x1 || y0 > y1) return;
    // Fast paths: r < rin is fully inside A, r > rout fully outside (Frobenius norm bounds |∇r|).
    const jn = sqrt(j00 * j00 + j01 * j01 + j10 * j10 + j11 * j11);
    const rin = 1 - pad * jn;
    const rin2 = rin > 0 ? rin * rin : -1;
    const rout = 1 + pad * jn;
    const rout2 = rout * rout;
    const ibrx = 1 / brx;
    const ibry = 1 / bry;
    const isw = 1 / sw;
    const px = this.px;
    const mask = this.mask;
    const paintMask = maskValue >= 0;
    for (let y = y0; y <= y1; y++) {
      const dy = y + 0.5 - pcy;
      let i = y * w + x0;
      for (let x = x0; x <= x1; x++, i++) {
        const dx = x + 0.5 - pcx;
        const u = j00 * dx + j01 * dy;
        const v = j10 * dx + j11 * dy;
        const r2 = u * u + v * v;
        if (r2 >= rout2) continue;
        let cov: number;
        if (r2 <= rin2) {
          cov = 1;
        } else {
          const r = sqrt(r2);
          const gx = u * j00 + v * j10;
          const gy = u * j01 + v * j11;
          const g = sqrt(gx * gx + gy * gy);
          const dist = g > 1e-12 ? ((r - 1) * r) / g : -1e9;
          cov = 0.5 - dist * isw;
          if (cov <= 0) continue;
          if (cov > 1) cov = 1;
        }
        if (op !== Op.None) {
          const ub = (u - bx) * ibrx;
          const vb = (v - by) * ibry;
          const rb2 = ub * ub + vb * vb;
          let covB: number;
          const rb = sqrt(rb2);
          const gx = ub * ibrx * j00 + vb * ibry * j10;
          const gy = ub * ibrx * j01 + vb * ibry * j11;
          const g = sqrt(gx * gx + gy * gy);
          const dist = g > 1e-12 ? ((rb - 1) * rb) / g : -1e9;
          covB = 0.5 - dist * isw;
          covB = covB < 0 ? 0 : covB > 1 ? 1 : covB;
          cov = op === Op.Minus ? cov * (1 - covB) : cov * covB;
          if (cov <= 0) continue;
        }
        const k = cov * alpha;
        const p = i * 3;
        px[p] += k * (cr - px[p]);
        px[p + 1] += k * (cg - px[p + 1]);
        px[p + 2] += k * (cb - px[p + 2]);
        if (paintMask) mask[i] += cov * (maskValue - mask[i]);
      }
    }
  }

  /** Draws the affine image of the unit square: centre (cx, cy), half-sizes (hx, hy), rotated by `angle`. */
  box(
    cx: number, cy: number, hx: number, hy: number, angle: number,
    cr: number, cg: number, cb: number, alpha: number, soft = 0,
  ): void {
    if (alpha <= 0 || hx <= 0 || hy <= 0) return;
    const ca = cos(angle);
    const sa = sin(angle);
    const l00 = (this.a * ca + this.b * sa) * hx;
    const l01 = (-this.a * sa + this.b * ca) * hy;
    const l10 = (this.d * ca + this.e * sa) * hx;
    const l11 = (-this.d * sa + this.e * ca) * hy;
    const det = l00 * l11 - l01 * l10;
    if (abs(det) < 1e-9) return;
    const j00 = l11 / det;
    const j01 = -l01 / det;
    const j10 = -l10 / det;
    const j11 = l00 / det;
    const pcx = this.a * cx + this.b * cy + this.c;
    const pcy = this.d * cx + this.e * cy + this.f;
    const sw = soft > 1 ? soft : 1;
    const pad = 0.5 * sw + 1;
    const ex = abs(l00) + abs(l01);
    const ey = abs(l10) + abs(l11);
    const w = this.width;
    const x0 = max(0, floor(pcx - ex - pad));
    const x1 = min(w - 1, ceil(pcx + ex + pad));
    const y0 = max(0, floor(pcy - ey - pad));
    const y1 = min(this.height - 1, ceil(pcy + ey + pad));
    // Pixel distance to the edges |u| = 1 and |v| = 1: (|u| − 1)/|∇u|.
    const su = 1 / (sqrt(j00 * j00 + j01 * j01) * sw);
    const sv = 1 / (sqrt(j10 * j10 + j11 * j11) * sw);
    const px = this.px;
    for (let y = y0; y <= y1; y++) {
      const dy = y + 0.5 - pcy;
      let i = y * w + x0;
      for (let x = x0; x <= x1; x++, i++) {
        const dx = x + 0.5 - pcx;
        const u = abs(j00 * dx + j01 * dy);
        const v = abs(j10 * dx + j11 * dy);
        let cu = 0.5 - (u - 1) * su;
        if (cu <= 0) continue;
        let cv = 0.5 - (v - 1) * sv;
        if (cv <= 0) continue;
        if (cu > 1) cu = 1;
        if (cv > 1) cv = 1;
        const k = cu * cv * alpha;
        const p = i * 3;
        px[p] += k * (cr - px[p]);
        px[p + 1] += k * (cg - px[p + 1]);
        px[p + 2] += k * (cb - px[p + 2]);
      }
    }
  }

  /**
   * The lighting pass. Inside the head mask, the normal is that of an ellipsoid over the face ellipse
   * (centre (cx, cy), radii (rx, ry), face coordinates; clamped to the rim outside it); elsewhere it
   * faces the camera. Shade = ambient + diffuse·max(0, (n·l + wrap)/(1 + wrap)), with `l` the light
   * direction in face coordinates (unit), then channel gains (exposure × white balance). The
   * background also gets a linear fall-off of strength `bgSlope` along the light's image direction.
   */
  shade(
    cx: number, cy: number, rx: number, ry: number,
    lx: number, ly: number, lz: number, ambient: number, diffuse: number, wrap: number,
    gr: number, gg: number, gb: number, bgSlope: number,
  ): void {
    const { width: w, height: h, px, mask } = this;
    // Pixel → face: inverse of the linear part [a b; d e].
    const det = this.a * this.e - this.b * this.d;
    const i00 = this.e / det;
    const i01 = -this.b / det;
    const i10 = -this.d / det;
    const i11 = this.a / det;
    const irx = 1 / rx;
    const iry = 1 / ry;
    const iw = 1 / (1 + wrap);
    const flat = ambient + diffuse * max(0, (lz + wrap) * iw);
    // Light direction in pixel space, for the background fall-off.
    const plx = this.a * lx + this.b * ly;
    const ply = this.d * lx + this.e * ly;
    const pn = hypot(plx, ply) || 1;
    const bsx = (-bgSlope * plx) / pn / w;
    const bsy = (-bgSlope * ply) / pn / h;
    let i = 0;
    for (let y = 0; y < h; y++) {
      const dy = y + 0.5 - this.f;
      for (let x = 0; x < w; x++, i++) {
        const m = mask[i];
        let s = flat * (1 + (x + 0.5 - 0.5 * w) * bsx + (y + 0.5 - 0.5 * h) * bsy);
        if (m > 0) {
          const dx = x + 0.5 - this.c;
          const u = ((i00 * dx + i01 * dy) - cx) * irx;
          const v = ((i10 * dx + i11 * dy) - cy) * iry;
          const r2 = u * u + v * v;
          let nd: number;
          if (r2 < 1) {
            nd = u * lx + v * ly + sqrt(1 - r2) * lz;
          } else {
            const ir = 1 / sqrt(r2);
            nd = (u * lx + v * ly) * ir;
          }
          const sf = ambient + diffuse * max(0, (nd + wrap) * iw);
          s += m * (sf - s);
        }
        const p = i * 3;
        px[p] *= s * gr;
        px[p + 1] *= s * gg;
        px[p + 2] *= s * gb;
      }
    }
  }

  /**
   * Separable blur of {@link px} with the normalized kernel `kernel` (odd length, symmetric),
   * clamping at the borders.
   */
  blur(kernel: Float32Array): void {
    const { width: w, height: h, px, tmp } = this;
    const r = (kernel.length - 1) >> 1;
    // Horizontal: px → tmp (border taps clamp; the interior runs without clamping).
    for (let y = 0; y < h; y++) {
      const row = y * w;
      for (let x = 0; x < w; x++) {
        let s0 = 0;
        let s1 = 0;
        let s2 = 0;
        if (x >= r && x < w - r) {
          let q = (row + x - r) * 3;
          for (let k = 0; k <= 2 * r; k++, q += 3) {
            const kv = kernel[k];
            s0 += kv * px[q];
            s1 += kv * px[q + 1];
            s2 += kv * px[q + 2];
          }
        } else {
          for (let k = -r; k <= r; k++) {
            let xx = x + k;
            xx = xx < 0 ? 0 : xx >= w ? w - 1 : xx;
            const q = (row + xx) * 3;
            const kv = kernel[k + r];
            s0 += kv * px[q];
            s1 += kv * px[q + 1];
            s2 += kv * px[q + 2];
          }
        }
        const p = (row + x) * 3;
        tmp[p] = s0;
        tmp[p + 1] = s1;
        tmp[p + 2] = s2;
      }
    }
    // Vertical: tmp → px (interior rows without clamping).
    const stride = w * 3;
    for (let y = 0; y < h; y++) {
      const o = y * stride;
      if (y >= r && y < h - r) {
        const base = o - r * stride;
        for (let i = 0; i < stride; i++) {
          let s = 0;
          for (let k = 0, q = base + i; k <= 2 * r; k++, q += stride) s += kernel[k] * tmp[q];
          px[o + i] = s;
        }
      } else {
        for (let i = 0; i < stride; i++) {
          let s = 0;
          for (let k = -r; k <= r; k++) {
            let yy = y + k;
            yy = yy < 0 ? 0 : yy >= h ? h - 1 : yy;
            s += kernel[k + r] * tmp[yy * stride + i];
          }
          px[o + i] = s;
        }
      }
    }
  }

  /**
   * Down-samples by `factor` ≥ 1 (box average onto an m×m grid, m = round(width/factor)) and
   * up-samples back with bilinear interpolation: the loss of detail of a low-resolution capture.
   */
  resample(factor: number): void {
    const { width: w, height: h, px, tmp } = this;
    const mw = max(2, round(w / factor));
    const mh = max(2, round(h / factor));
    const fx = w / mw;
    const fy = h / mh;
    // Box average into tmp[0 .. mw·mh·3).
    for (let ty = 0; ty < mh; ty++) {
      const ya = floor(ty * fy);
      const yb = max(ya + 1, min(h, floor((ty + 1) * fy)));
      for (let tx = 0; tx < mw; tx++) {
        const xa = floor(tx * fx);
        const xb = max(xa + 1, min(w, floor((tx + 1) * fx)));
        let s0 = 0;
        let s1 = 0;
        let s2 = 0;
        for (let y = ya; y < yb; y++) {
          for (let x = xa; x < xb; x++) {
            const q = (y * w + x) * 3;
            s0 += px[q];
            s1 += px[q + 1];
            s2 += px[q + 2];
          }
        }
        const n = 1 / ((yb - ya) * (xb - xa));
        const p = (ty * mw + tx) * 3;
        tmp[p] = s0 * n;
        tmp[p + 1] = s1 * n;
        tmp[p + 2] = s2 * n;
      }
    }
    // Bilinear back to w×h (pixel centres aligned); column taps computed once.
    const xi = this.#xi;
    const xw = this.#xw;
    for (let x = 0; x < w; x++) {
      let sx = (x + 0.5) / fx - 0.5;
      sx = sx < 0 ? 0 : sx > mw - 1 ? mw - 1 : sx;
      const x0 = min(mw - 2, floor(sx));
      xi[x] = x0 * 3;
      xw[x] = sx - x0;
    }
    for (let y = 0; y < h; y++) {
      let sy = (y + 0.5) / fy - 0.5;
      sy = sy < 0 ? 0 : sy > mh - 1 ? mh - 1 : sy;
      const y0 = min(mh - 2, floor(sy));
      const wy = sy - y0;
      const r0 = y0 * mw * 3;
      const r1 = r0 + mw * 3;
      let p = y * w * 3;
      for (let x = 0; x < w; x++, p += 3) {
        const wx = xw[x];
        const q0 = r0 + xi[x];
        const q1 = r1 + xi[x];
        const a0 = tmp[q0] + wx * (tmp[q0 + 3] - tmp[q0]);
        const b0 = tmp[q1] + wx * (tmp[q1 + 3] - tmp[q1]);
        px[p] = a0 + wy * (b0 - a0);
        const a1 = tmp[q0 + 1] + wx * (tmp[q0 + 4] - tmp[q0 + 1]);
        const b1 = tmp[q1 + 1] + wx * (tmp[q1 + 4] - tmp[q1 + 1]);
        px[p + 1] = a1 + wy * (b1 - a1);
        const a2 = tmp[q0 + 2] + wx * (tmp[q0 + 5] - tmp[q0 + 2]);
        const b2 = tmp[q1 + 2] + wx * (tmp[q1 + 5] - tmp[q1 + 2]);
        px[p + 2] = a2 + wy * (b2 - a2);
      }
    }
  }

  /**
   * JPEG-like damage: in each 8×8 block, detail (pixel − block mean) is scaled by (1 − strength) and
   * quantized with step `step`; chroma is averaged over 2×2 cells (4:2:0 subsampling) when `chroma`.
   */
  blockify(strength: number, step: number, chroma: boolean): void {
    const { width: w, height: h, px } = this;
    const stride = w * 3;
    if (chroma) {
      for (let y = 0; y + 1 < h; y += 2) {
        for (let x = 0; x + 1 < w; x += 2) {
          const o0 = y * stride + x * 3;
          const o2 = o0 + stride;
          // Mean chroma (R − Y, B − Y) of the 2×2 cell, kept at each pixel's own luma.
          const l0 = 0.299 * px[o0] + 0.587 * px[o0 + 1] + 0.114 * px[o0 + 2];
          const l1 = 0.299 * px[o0 + 3] + 0.587 * px[o0 + 4] + 0.114 * px[o0 + 5];
          const l2 = 0.299 * px[o2] + 0.587 * px[o2 + 1] + 0.114 * px[o2 + 2];
          const l3 = 0.299 * px[o2 + 3] + 0.587 * px[o2 + 4] + 0.114 * px[o2 + 5];
          const cr = 0.25 * (px[o0] + px[o0 + 3] + px[o2] + px[o2 + 3] - l0 - l1 - l2 - l3);
          const cb = 0.25 * (px[o0 + 2] + px[o0 + 5] + px[o2 + 2] + px[o2 + 5] - l0 - l1 - l2 - l3);
          const g = (-0.299 * cr - 0.114 * cb) / 0.587;
          px[o0] = l0 + cr; px[o0 + 1] = l0 + g; px[o0 + 2] = l0 + cb;
          px[o0 + 3] = l1 + cr; px[o0 + 4] = l1 + g; px[o0 + 5] = l1 + cb;
          px[o2] = l2 + cr; px[o2 + 1] = l2 + g; px[o2 + 2] = l2 + cb;
          px[o2 + 3] = l3 + cr; px[o2 + 4] = l3 + g; px[o2 + 5] = l3 + cb;
        }
      }
    }
    const keep = 1 - strength;
    const istep = step > 0 ? 1 / step : 0;
    for (let by = 0; by < h; by += 8) {
      const ye = min(h, by + 8);
      for (let bx = 0; bx < w; bx += 8) {
        const xe = min(w, bx + 8);
        const n = (ye - by) * (xe - bx);
        for (let c = 0; c < 3; c++) {
          let s = 0;
          for (let y = by; y < ye; y++) for (let p = y * stride + bx * 3 + c, e = y * stride + xe * 3; p < e; p += 3) s += px[p];
          const mean = s / n;
          const qm = step > 0 ? round(mean * istep * 0.5) * step * 2 : mean;
          for (let y = by; y < ye; y++) {
            for (let p = y * stride + bx * 3 + c, e = y * stride + xe * 3; p < e; p += 3) {
              const dv = (px[p] - mean) * keep;
              px[p] = qm + (step > 0 ? round(dv * istep) * step : dv);
            }
          }
        }
      }
    }
  }

  /** Rounds and clamps {@link px} into a new HWC uint8 array. */
  toBytes(): Uint8Array {
    const px = this.px;
    const out = new Uint8Array(px.length);
    for (let i = 0; i < px.length; i++) {
      const v = px[i] + 0.5;
      out[i] = v <= 0 ? 0 : v >= 255 ? 255 : v | 0;
    }
    return out;
  }
}

/** A normalized Gaussian kernel with standard deviation `sigma` pixels, radius ceil(2σ) (at least 1). */
export function gaussianKernel(sigma: number): Float32Array {
  const r = max(1, ceil(2 * sigma));
  const k = new Float32Array(2 * r + 1);
  let s = 0;
  for (let i = -r; i <= r; i++) {
    const v = exp(-(i * i) / (2 * sigma * sigma));
    k[i + r] = v;
    s += v;
  }
  for (let i = 0; i < k.length; i++) k[i] /= s;
  return k;
}
