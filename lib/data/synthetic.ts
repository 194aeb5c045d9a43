/**
 * SyntheticFaces: a procedural data set of face-like 112×112 RGB images with real identity structure
 * and real nuisance, deterministic from a seed — the built-in data of `facecuda demo` and of tests
 * that need faces without downloading any.
 *
 * - **Identity** k is a pure function of (seed, k) ({@link SyntheticFaces.identity}; label l of a
 *   source is identity firstIdentity + l, so disjoint label ranges give held-out identities): about forty
 *   independent parameters — face outline (cheek ellipse, jaw width, chin), skin tone and undertone,
 *   eye spacing/height/size/shape/tilt, iris colour, brow position/length/thickness/arch, nose
 *   length/width/nostrils, mouth position/width/lip thickness/lip colour, hair colour, hairline,
 *   parting, volume and length, ears, beard, cheek colour, moles and freckles. Identities are drawn
 *   from the same distributions, so they are similar, yet far apart in parameter space.
 * - **Sample** j of identity k adds nuisance, a pure function of (seed, k, j)
 *   ({@link SyntheticFaces.nuisance}): in-plane rotation, scale and shift of the head, a small yaw
 *   and pitch (features slide and foreshorten across the face), expression (smile, open mouth, brow
 *   raise, squint, blink, gaze), a light direction over a pseudo-3D head with ambient/diffuse
 *   strength, exposure and white balance, background colours and gradient, clothing, small hair
 *   changes, occlusions with small probabilities (glasses, sunglasses, a mask band), and capture
 *   quality.
 * - **Quality** q ∈ [0, 1] (1 = clean) drives the degradation: Gaussian blur, down-sampling and
 *   bilinear up-sampling, sensor noise, and JPEG-like 8×8 block damage with 4:2:0 chroma, each with
 *   a per-sample share of the damage (1 − q).
 *
 * `difficulty` scales the nuisance ranges and the quality distribution ('easy' | 'default' | 'hard').
 * How hard each is for a linear method on raw pixels ({@link ./baseline} linearPixelBaseline, PCA 128
 * → LDA 64, trained on 200 identities × 20 samples, 1000 pairs of 100 held-out identities, seed 1):
 * easy 95.1 %, default 80.7 % (cross-quality pairs 82.6 %), hard 70.0 %.
 * Rendering is plain JavaScript with analytic anti-aliasing ({@link ./raster}); one instance reuses
 * one set of buffers, so a render allocates only its output.
 */
import { FacecudaError, invalidParameterError, outOfRangeError } from '../errors';
import { assertBool, assertInteger, assertKnownOptions, assertNumber, assertOneOf, optionsObject } from '../validate';
import { gaussianKernel, Op, Raster } from './raster';
import type { RawImage, Sample, SampleSource, SourceDescriptor } from './types';

export type SyntheticDifficulty = 'easy' | 'default' | 'hard';

/** Options of {@link SyntheticFaces}. */
export interface SyntheticFacesOptions {
  /** Seed of the whole data set (an integer in [0, 2³²)). */
  seed: number;
  /** Number of identities (classes). */
  identities: number;
  /** Samples per identity. */
  samplesPerIdentity: number;
  /** Image side in pixels (default 112; the face layout follows the ArcFace 112×112 template). */
  size?: number;
  /** Nuisance and quality ranges (default 'default'). */
  difficulty?: SyntheticDifficulty;
  /** The identity of label 0: labels 0.. map to identities firstIdentity.. (default 0). Disjoint ranges give held-out identities. */
  firstIdentity?: number;
}

/** Options of {@link SyntheticFaces.render}. */
export interface RenderOptions {
  /** Capture quality in [0, 1] (1 = no degradation); default: drawn per sample from the difficulty's range. */
  quality?: number;
  /** An "ID photo": no pose, expression, occlusion or lighting nuisance, plain background (default false). */
  frontal?: boolean;
}

/** Options of {@link SyntheticFaces.pairs}. */
export interface PairsOptions {
  /** Number of pairs P (even, ≥ 2): P/2 same-identity and P/2 different-identity pairs. */
  count: number;
  /** Seed of the pair draw (default 0). */
  seed?: number;
  /** Image 2k is an ID photo (frontal, quality 1), image 2k+1 a degraded "selfie" (default false). */
  crossQuality?: boolean;
}

/** A verification set in the layout of the .bin packs (SPEC §10.1): images[2k], images[2k+1] are pair k. */
export interface SyntheticPairs {
  images: RawImage[];
  issame: boolean[];
  /** The label (identity − firstIdentity) of each image (2P). */
  labels: Int32Array;
  /** The sample index of each image (2P): image i is render(labels[i], samples[i], …). */
  samples: Int32Array;
}

type RGB = [number, number, number];

/** The identity parameters (face coordinates: template pixels, origin at the image centre, y down). */
export interface FaceIdentity {
  skin: RGB;
  /** Skin darkness in [0, 1]. */
  skinTone: number;
  faceRx: number;
  faceRy: number;
  faceCy: number;
  jawRx: number;
  chinY: number;
  eyeY: number;
  eyeDx: number;
  eyeRx: number;
  eyeRy: number;
  eyeTilt: number;
  irisColor: RGB;
  irisSize: number;
  lidDark: number;
  browGap: number;
  browLen: number;
  browThick: number;
  browArch: number;
  browTilt: number;
  browColor: RGB;
  noseY: number;
  noseW: number;
  nostril: number;
  noseShadow: number;
  mouthY: number;
  mouthW: number;
  upperLip: number;
  lowerLip: number;
  lipColor: RGB;
  hairColor: RGB;
  /** Hairline height (face y); higher (more negative) = higher forehead. */
  hairline: number;
  hairPart: number;
  hairTilt: number;
  hairVolume: number;
  /** Hair length below the ears (0 = short). */
  hairLength: number;
  bald: boolean;
  earSize: number;
  beard: number;
  moustache: number;
  blush: number;
  moles: { x: number; y: number; r: number }[];
  freckles: number;
  freckleSeed: number;
}

/** The per-sample nuisance. */
export interface FaceNuisance {
  /** In-plane rotation (radians). */
  rotation: number;
  scale: number;
  shiftX: number;
  shiftY: number;
  /** Yaw in [-1, 1]·range (features slide horizontally, the far side foreshortens). */
  yaw: number;
  pitch: number;
  smile: number;
  mouthOpen: number;
  browRaise: number;
  squint: number;
  blink: boolean;
  gazeX: number;
  gazeY: number;
  light: [number, number, number];
  ambient: number;
  diffuse: number;
  gain: RGB;
  bgSlope: number;
  background: [RGB, RGB];
  bgDirection: [number, number];
  clothing: RGB;
  hairJitter: number;
  glasses: number;
  sunglasses: boolean;
  mask: boolean;
  maskColor: RGB;
  quality: number;
  /** Shares of the quality damage: blur, down-sampling, noise, compression. */
  damage: [number, number, number, number];
  noiseSeed: number;
}

/** The nuisance ranges of a difficulty. */
export interface Preset {
  rotation: number;
  scale: number;
  shift: number;
  yaw: number;
  pitch: number;
  expression: number;
  light: number;
  pGlasses: number;
  pSunglasses: number;
  pMask: number;
  /** Quality range of an ordinary sample, and of a "selfie" in cross-quality pairs. */
  quality: [number, number];
  selfie: [number, number];
}

const DEG = Math.PI / 180;

/** Nuisance ranges per difficulty (rotation: max |angle|; scale: max |s − 1|; shift: max px; …). */
export const SYNTHETIC_PRESETS: Readonly<Record<SyntheticDifficulty, Readonly<Preset>>> = {
  easy: {
    rotation: 6 * DEG, scale: 0.06, shift: 3, yaw: 0.2, pitch: 0.1, expression: 0.5, light: 0.6,
    pGlasses: 0.03, pSunglasses: 0, pMask: 0, quality: [0.75, 1], selfie: [0.6, 0.85],
  },
  default: {
    rotation: 14 * DEG, scale: 0.14, shift: 8, yaw: 0.4, pitch: 0.25, expression: 1, light: 1.2,
    pGlasses: 0.08, pSunglasses: 0.02, pMask: 0.04, quality: [0.35, 1], selfie: [0.3, 0.65],
  },
  hard: {
    rotation: 20 * DEG, scale: 0.2, shift: 11, yaw: 0.5, pitch: 0.3, expression: 1, light: 1.5,
    pGlasses: 0.15, pSunglasses: 0.05, pMask: 0.1, quality: [0.1, 1], selfie: [0.1, 0.45],
  },
};

// ---- deterministic randomness

/** A 32-bit integer hash of a sequence of integers (murmur3-style mixing). */
export function hashInts(...values: number[]): number {
  let h = 0x811c9dc5;
  for (const v of values) {
    let k = Math.imul(v | 0, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
    // The high part of values ≥ 2³² (seeds may be any safe integer).
    const hi = Math.floor(v / 4294967296) | 0;
    if (hi !== 0) h ^= Math.imul(hi, 0x85ebca6b);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** mulberry32 with a few conveniences. */
class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }
  /** Symmetric, roughly normal in [-1, 1] (mean of three uniforms, rescaled). */
  sym(): number {
    return (this.next() + this.next() + this.next()) / 1.5 - 1;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  u32(): number {
    return Math.floor(this.next() * 4294967296) >>> 0;
  }
  /** Index drawn with the given weights. */
  weighted(weights: readonly number[]): number {
    let total = 0;
    for (const w of weights) total += w;
    let x = this.next() * total;
    for (let i = 0; i < weights.length; i++) {
      x -= weights[i];
      if (x < 0) return i;
    }
    return weights.length - 1;
  }
}

// ---- palettes

const HAIR: { c: RGB; w: number }[] = [
  { c: [22, 18, 16], w: 4 }, // black
  { c: [55, 37, 26], w: 4 }, // dark brown
  { c: [100, 68, 42], w: 3 }, // brown
  { c: [140, 66, 32], w: 1 }, // auburn
  { c: [196, 160, 98], w: 1.5 }, // blonde
  { c: [226, 204, 156], w: 0.7 }, // light blonde
  { c: [128, 124, 120], w: 1 }, // grey
  { c: [212, 208, 200], w: 0.6 }, // white
];
const IRIS: { c: RGB; w: number }[] = [
  { c: [48, 30, 20], w: 4 }, // dark brown
  { c: [96, 58, 30], w: 3 }, // brown
  { c: [118, 98, 52], w: 1.5 }, // hazel
  { c: [78, 116, 70], w: 1 }, // green
  { c: [72, 112, 166], w: 1.5 }, // blue
  { c: [118, 128, 138], w: 1 }, // grey
];
const SKIN_LIGHT: RGB = [238, 204, 178];
const SKIN_DARK: RGB = [88, 56, 40];

function lerp(a: number, b: number, t: number): number {
  return a + (b - a) * t;
}

function mixRGB(a: RGB, b: RGB, t: number): RGB {
  return [lerp(a[0], b[0], t), lerp(a[1], b[1], t), lerp(a[2], b[2], t)];
}

function jitterRGB(c: RGB, r: Rng, amount: number): RGB {
  const k = 1 + 0.12 * r.sym() * (amount / 12);
  return [c[0] * k + amount * r.sym(), c[1] * k + amount * r.sym(), c[2] * k + amount * r.sym()];
}

function scaleRGB(c: RGB, k: number): RGB {
  return [c[0] * k, c[1] * k, c[2] * k];
}

const KNOWN_OPTIONS = ['seed', 'identities', 'samplesPerIdentity', 'size', 'difficulty', 'firstIdentity'] as const;
const DIFFICULTIES: readonly SyntheticDifficulty[] = ['easy', 'default', 'hard'];

/**
 * Procedural faces with identity structure and nuisance; a {@link SampleSource}.
 *
 * @example
 * const train = new SyntheticFaces({ seed: 1, identities: 500, samplesPerIdentity: 20 });
 * const { label, pixels } = await train.get(0);             // identity-major: sample i → (i / 20, i % 20)
 * const test = new SyntheticFaces({ seed: 1, identities: 100, samplesPerIdentity: 1, firstIdentity: 500 });
 * const { images, issame } = test.pairs({ count: 1000, seed: 7, crossQuality: true });
 */
export class SyntheticFaces implements SampleSource {
  /** Number of samples: identities × samplesPerIdentity. */
  readonly size: number;
  readonly numClasses: number;
  readonly seed: number;
  readonly samplesPerIdentity: number;
  readonly imageSize: number;
  readonly difficulty: SyntheticDifficulty;
  readonly firstIdentity: number;
  readonly #preset: Preset;
  readonly #raster: Raster;
  #closed = false;

  constructor(options: SyntheticFacesOptions) {
    const o = optionsObject(options, 'options');
    assertKnownOptions(o, 'SyntheticFaces', KNOWN_OPTIONS);
    // Apply defaults
    const size = o.size ?? 112;
    const difficulty = o.difficulty ?? 'default';
    const firstIdentity = o.firstIdentity ?? 0;
    // Validate arguments
    assertInteger(o.seed, 'options.seed', 0, 2 ** 32 - 1);
    assertInteger(o.identities, 'options.identities', 1, 2 ** 31 - 1);
    assertInteger(o.samplesPerIdentity, 'options.samplesPerIdentity', 1, 2 ** 31 - 1);
    assertInteger(size, 'options.size', 16, 1024);
    assertOneOf(difficulty, 'options.difficulty', DIFFICULTIES);
    assertInteger(firstIdentity, 'options.firstIdentity', 0, 2 ** 31 - 1);
    if (o.identities * o.samplesPerIdentity > 2 ** 31 - 1) {
      throw outOfRangeError('options.identities × options.samplesPerIdentity', 'at most 2147483647 samples', o.identities * o.samplesPerIdentity);
    }
    if (firstIdentity + o.identities > 2 ** 31) {
      throw outOfRangeError('options.firstIdentity + options.identities', 'at most 2147483648', firstIdentity + o.identities);
    }
    // Interpret options
    this.seed = o.seed;
    this.numClasses = o.identities;
    this.samplesPerIdentity = o.samplesPerIdentity;
    this.size = o.identities * o.samplesPerIdentity;
    this.imageSize = size;
    this.difficulty = difficulty;
    this.firstIdentity = firstIdentity;
    this.#preset = SYNTHETIC_PRESETS[difficulty];
    this.#raster = new Raster(size, size);
  }

  /** Sample i (identity-major): label ⌊i / samplesPerIdentity⌋, identity firstIdentity + label, sample i mod samplesPerIdentity. */
  async get(i: number): Promise<Sample> {
    if (this.#closed) throw new FacecudaError('DISPOSED', 'SyntheticFaces: get() after close()');
    assertInteger(i, 'index', 0, this.size - 1);
    const label = Math.floor(i / this.samplesPerIdentity);
    const sample = i - label * this.samplesPerIdentity;
    return { label, pixels: this.render(label, sample) };
  }

  describe(): SourceDescriptor {
    return {
      kind: 'synthetic',
      options: {
        seed: this.seed,
        identities: this.numClasses,
        samplesPerIdentity: this.samplesPerIdentity,
        size: this.imageSize,
        difficulty: this.difficulty,
        firstIdentity: this.firstIdentity,
      },
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
  }

  /**
   * The parameters of the identity with label `label` ∈ [0, numClasses): a pure function of (seed,
   * firstIdentity + label), so sources with the same seed agree on every identity they share.
   */
  identity(label: number): FaceIdentity {
    assertInteger(label, 'label', 0, this.numClasses - 1);
    return drawIdentity(new Rng(hashInts(this.seed, this.firstIdentity + label, 0x1d)));
  }

  /**
   * The nuisance of sample `sample` (any integer in [0, 2³¹)) of label `label`: a pure function of
   * (seed, firstIdentity + label, sample, difficulty, options).
   */
  nuisance(label: number, sample: number, options?: RenderOptions): FaceNuisance {
    const o = optionsObject(options, 'options');
    assertKnownOptions(o, 'render', ['quality', 'frontal']);
    // Validate arguments
    assertInteger(label, 'label', 0, this.numClasses - 1);
    assertInteger(sample, 'sample', 0, 2 ** 31 - 1);
    if (o.quality !== undefined) assertNumber(o.quality, 'options.quality', 0, 1);
    if (o.frontal !== undefined) assertBool(o.frontal, 'options.frontal');
    // Interpret options
    const r = new Rng(hashInts(this.seed, this.firstIdentity + label, sample, 0x5a));
    const n = drawNuisance(r, this.#preset, o.frontal === true);
    if (o.quality !== undefined) n.quality = o.quality;
    return n;
  }

  /**
   * Renders sample `sample` (any integer in [0, 2³¹), not only < samplesPerIdentity) of the identity
   * with label `label` ∈ [0, numClasses) as an imageSize² HWC RGB image. Pure: the same (seed,
   * firstIdentity + label, sample, difficulty, options) gives the same bytes.
   */
  render(label: number, sample: number, options?: RenderOptions): RawImage {
    const n = this.nuisance(label, sample, options);
    const id = this.identity(label);
    paint(this.#raster, id, n, this.imageSize);
    return { width: this.imageSize, height: this.imageSize, channels: 3, data: this.#raster.toBytes() };
  }

  /**
   * A held-out verification set over this source's identities: P pairs, half same-identity, half
   * different-identity (the other identity drawn uniformly from the rest), same and different
   * alternating in random order within each two consecutive pairs (so every 10-fold block is
   * balanced). The images are fresh samples (sample indices ≥ 2³⁰). With `crossQuality`,
   * images[2k] is a frontal quality-1 "ID photo" and images[2k+1] a degraded "selfie".
   */
  pairs(options: PairsOptions): SyntheticPairs {
    const o = optionsObject(options, 'options');
    assertKnownOptions(o, 'pairs', ['count', 'seed', 'crossQuality']);
    // Apply defaults
    const seed = o.seed ?? 0;
    const crossQuality = o.crossQuality ?? false;
    // Validate arguments
    assertInteger(o.count, 'options.count', 2, 2 ** 24);
    if (o.count % 2 !== 0) throw outOfRangeError('options.count', 'an even integer', o.count);
    assertInteger(seed, 'options.seed', 0, 2 ** 32 - 1);
    assertBool(crossQuality, 'options.crossQuality');
    if (this.numClasses < 2) throw outOfRangeError('identities', 'at least 2 identities for pairs()', this.numClasses);
    // Interpret options
    const P = o.count;
    const images: RawImage[] = new Array(2 * P);
    const issame: boolean[] = new Array(P);
    const labels = new Int32Array(2 * P);
    const samples = new Int32Array(2 * P);
    const order = new Rng(hashInts(this.seed, this.firstIdentity, seed, 0x9a125));
    for (let k = 0; k < P; k += 2) {
      const sameFirst = order.chance(0.5);
      issame[k] = sameFirst;
      issame[k + 1] = !sameFirst;
    }
    const C = this.numClasses;
    const [qlo, qhi] = this.#preset.selfie;
    for (let k = 0; k < P; k++) {
      const r = new Rng(hashInts(this.seed, this.firstIdentity, seed, k, 0x9a1));
      const a = r.int(C);
      const b = issame[k] ? a : (a + 1 + r.int(C - 1)) % C;
      const ja = 0x40000000 + (r.u32() & 0x3fffffff);
      let jb = 0x40000000 + (r.u32() & 0x3fffffff);
      if (jb === ja) jb ^= 1;
      labels[2 * k] = a;
      labels[2 * k + 1] = b;
      samples[2 * k] = ja;
      samples[2 * k + 1] = jb;
      if (crossQuality) {
        images[2 * k] = this.render(a, ja, { frontal: true, quality: 1 });
        images[2 * k + 1] = this.render(b, jb, { quality: r.uniform(qlo, qhi) });
      } else {
        images[2 * k] = this.render(a, ja);
        images[2 * k + 1] = this.render(b, jb);
      }
    }
    return { images, issame, labels, samples };
  }
}

// ---- parameters

function drawIdentity(r: Rng): FaceIdentity {
  // Skin: darkness t, with red/yellow undertone.
  const skinTone = Math.min(1, Math.max(0, r.next() ** 1.2));
  const base = mixRGB(SKIN_LIGHT, SKIN_DARK, skinTone);
  const under = r.sym();
  const skin: RGB = [base[0] + 10 * under + 6 * r.sym(), base[1] + 4 * r.sym(), base[2] - 8 * under + 6 * r.sym()];
  const faceRx = r.uniform(33, 41);
  const faceRy = r.uniform(40, 48);
  const faceCy = r.uniform(-10, -5);
  const mouthY = r.uniform(29, 37);
  const chinY = mouthY + r.uniform(11, 17);
  const jawRx = faceRx * r.uniform(0.68, 0.95);
  const hairIdx = r.weighted(HAIR.map((h) => h.w));
  const hairColor = jitterRGB(HAIR[hairIdx].c, r, 10);
  const bald = r.chance(0.07);
  const irisColor = jitterRGB(IRIS[r.weighted(IRIS.map((h) => h.w))].c, r, 10);
  const browColor = mixRGB(hairColor, [30, 22, 18], r.uniform(0.2, 0.7));
  const lipRed = r.uniform(0, 1);
  const lipColor: RGB = [skin[0] * lerp(0.78, 0.9, lipRed) + 10, skin[1] * lerp(0.6, 0.48, lipRed), skin[2] * lerp(0.62, 0.52, lipRed)];
  const eyeRx = r.uniform(5.2, 8.4);
  const nMoles = r.weighted([4, 3, 2, 1]);
  const moles: { x: number; y: number; r: number }[] = [];
  for (let m = 0; m < nMoles; m++) {
    const a = r.uniform(0, 2 * Math.PI);
    const rr = Math.sqrt(r.uniform(0.1, 0.8));
    moles.push({ x: Math.cos(a) * rr * faceRx * 0.85, y: faceCy + 10 + Math.sin(a) * rr * faceRy * 0.8, r: r.uniform(0.8, 1.8) });
  }
  const male = r.chance(0.5);
  return {
    skin,
    skinTone,
    faceRx,
    faceRy,
    faceCy,
    jawRx,
    chinY,
    eyeY: r.uniform(-8, 0),
    eyeDx: r.uniform(14.5, 20),
    eyeRx,
    eyeRy: eyeRx * r.uniform(0.32, 0.6),
    eyeTilt: r.uniform(-0.16, 0.16),
    irisColor,
    irisSize: r.uniform(0.42, 0.62),
    lidDark: r.uniform(0.4, 1),
    browGap: r.uniform(6.5, 11.5),
    browLen: r.uniform(7, 12),
    browThick: r.uniform(1.1, 3.4),
    browArch: r.uniform(0, 1),
    browTilt: r.uniform(-0.18, 0.22),
    browColor,
    noseY: r.uniform(11, 20),
    noseW: r.uniform(4, 8),
    nostril: r.uniform(1.1, 2.2),
    noseShadow: r.uniform(0.15, 0.45),
    mouthY,
    mouthW: r.uniform(9, 16),
    upperLip: r.uniform(1.2, 3.2),
    lowerLip: r.uniform(1.8, 4.6),
    lipColor,
    hairColor,
    hairline: bald ? r.uniform(-70, -58) : r.uniform(-48, -22),
    hairPart: r.uniform(-12, 12),
    hairTilt: r.uniform(-0.3, 0.3),
    hairVolume: bald ? r.uniform(1, 3) : r.uniform(2, 13),
    hairLength: bald || r.chance(0.45) ? 0 : r.uniform(8, 70),
    bald,
    earSize: r.uniform(0.8, 1.25),
    beard: male && r.chance(0.35) ? r.uniform(0.25, 0.9) : 0,
    moustache: male && r.chance(0.3) ? r.uniform(0.3, 0.9) : 0,
    blush: r.uniform(0, 0.35),
    moles,
    freckles: r.chance(0.15) ? r.int(25) + 8 : 0,
    freckleSeed: r.u32(),
  };
}

function drawNuisance(r: Rng, p: Preset, frontal: boolean): FaceNuisance {
  // Lighting direction: mostly frontal, from above on average.
  const az = r.uniform(-Math.PI, Math.PI);
  const tilt = p.light * r.uniform(0, 0.9);
  const lx0 = Math.sin(tilt) * Math.cos(az);
  const ly0 = Math.sin(tilt) * Math.sin(az) - 0.15;
  const lz0 = Math.cos(tilt);
  const ln = Math.hypot(lx0, ly0, lz0);
  const bgA: RGB = [r.uniform(20, 235), r.uniform(20, 235), r.uniform(20, 235)];
  const bgB: RGB = mixRGB(bgA, [r.uniform(20, 235), r.uniform(20, 235), r.uniform(20, 235)], r.uniform(0, 0.8));
  // Damage shares: squared uniforms over their maximum, so one or two kinds dominate a sample.
  const damageRaw = [r.next() ** 2, r.next() ** 2, r.next() ** 2, r.next() ** 2];
  const dmax = Math.max(...damageRaw);
  const smileOn = r.chance(0.5 * p.expression);
  const openOn = r.chance(0.25 * p.expression);
  const wb = 0.1 * p.light;
  const exposure = r.uniform(1 - 0.3 * p.light, 1 + 0.15 * p.light);
  const glassesOn = r.chance(p.pGlasses);
  const n: FaceNuisance = {
    rotation: p.rotation * r.uniform(-1, 1),
    scale: 1 + p.scale * r.uniform(-1, 1),
    shiftX: p.shift * r.uniform(-1, 1),
    shiftY: p.shift * r.uniform(-1, 1),
    yaw: p.yaw * r.uniform(-1, 1),
    pitch: p.pitch * r.sym(),
    smile: smileOn ? r.uniform(0.2, 1) : 0,
    mouthOpen: openOn ? r.uniform(0.2, 1) : 0,
    browRaise: p.expression * r.uniform(-0.4, 1) * (r.chance(0.4) ? 1 : 0.2),
    squint: p.expression * (r.chance(0.2) ? r.uniform(0, 0.5) : 0),
    blink: r.chance(0.04 * p.expression),
    gazeX: 0.35 * r.sym(),
    gazeY: 0.2 * r.sym(),
    light: [lx0 / ln, ly0 / ln, lz0 / ln],
    ambient: r.uniform(0.35, 0.6),
    diffuse: r.uniform(0.45, 0.8),
    gain: [exposure * (1 + wb * r.sym()), exposure, exposure * (1 + wb * r.sym())],
    bgSlope: r.uniform(0, 0.4),
    background: [bgA, bgB],
    bgDirection: [r.sym() * 1.5, r.sym() * 1.5],
    clothing: [r.uniform(15, 230), r.uniform(15, 230), r.uniform(15, 230)],
    hairJitter: r.sym(),
    glasses: glassesOn ? r.uniform(0, 1) : -1,
    sunglasses: r.chance(p.pSunglasses),
    mask: r.chance(p.pMask),
    maskColor: r.chance(0.5) ? [r.uniform(180, 240), r.uniform(200, 240), r.uniform(210, 250)] : [r.uniform(20, 200), r.uniform(20, 200), r.uniform(20, 200)],
    quality: p.quality[1] - (p.quality[1] - p.quality[0]) * r.next() ** 1.3,
    damage: [damageRaw[0] / dmax, damageRaw[1] / dmax, damageRaw[2] / dmax, damageRaw[3] / dmax],
    noiseSeed: r.u32(),
  };
  if (frontal) {
    n.rotation = 0;
    n.scale = 1;
    n.shiftX = 0;
    n.shiftY = 0;
    n.yaw = 0;
    n.pitch = 0;
    n.smile = 0;
    n.mouthOpen = 0;
    n.browRaise = 0;
    n.squint = 0;
    n.blink = false;
    n.gazeX = 0;
    n.gazeY = 0;
    n.light = [0, -0.15 / Math.hypot(0.15, 1), 1 / Math.hypot(0.15, 1)];
    n.ambient = 0.5;
    n.diffuse = 0.6;
    n.gain = [1, 1, 1];
    n.bgSlope = 0;
    n.background = [[205, 212, 222], [205, 212, 222]];
    n.hairJitter = 0;
    n.glasses = -1;
    n.sunglasses = false;
    n.mask = false;
    n.quality = 1;
  }
  return n;
}

// ---- painting

const INK: RGB = [20, 14, 12];

function paint(R: Raster, id: FaceIdentity, n: FaceNuisance, size: number): void {
  // Face → pixel: rotate and scale about the template centre, then shift; all in 112-space, then to `size`.
  const k = (size / 112) * n.scale;
  const ca = Math.cos(n.rotation) * k;
  const sa = Math.sin(n.rotation) * k;
  const cx = size / 2 + n.shiftX * (size / 112);
  const cy = size / 2 + n.shiftY * (size / 112);
  R.setTransform(ca, -sa, cx, sa, ca, cy);

  const yaw = n.yaw;
  const pitch = n.pitch;
  // Pose: a feature at face x with depth z slides by yaw·z and foreshortens on the far side.
  const X = (x: number, z: number): number => x * (1 - 0.12 * Math.abs(yaw)) + yaw * z;
  const Y = (y: number, z: number): number => y * (1 - 0.1 * Math.abs(pitch)) + pitch * z;
  const W = (x: number): number => Math.max(0.5, 1 - (0.45 * yaw * x) / id.faceRx);

  const skin = id.skin;
  const skinDark = scaleRGB(skin, 0.8);
  const bg = n.background;
  R.gradient(bg[0][0], bg[0][1], bg[0][2], bg[1][0], bg[1][1], bg[1][2], n.bgDirection[0], n.bgDirection[1]);

  const headX = X(0, -4);
  const rx = id.faceRx * (1 - 0.1 * Math.abs(yaw));
  const vol = Math.max(0.5, id.hairVolume * (1 + 0.12 * n.hairJitter));
  const hair = id.hairColor;

  // Hair behind the head (long hair falls to the shoulders).
  if (!id.bald) {
    R.disc(headX, id.faceCy - 2, rx + vol, id.faceRy + vol, 0, hair[0], hair[1], hair[2], 1, 0, Op.None, 0, 0, 1, 1, 1);
    if (id.hairLength > 0) {
      const len = id.hairLength;
      R.box(headX, id.faceCy + len / 2, rx + vol * 0.8, len / 2 + 4, 0, hair[0], hair[1], hair[2], 1, 1.5);
    }
  }
  // Neck and clothing.
  R.box(headX * 0.5, id.chinY + 12, id.jawRx * 0.62, 20, 0, skinDark[0], skinDark[1], skinDark[2], 1, 1);
  const cl = n.clothing;
  R.disc(headX * 0.3, id.chinY + 44, 62, 30, 0, cl[0], cl[1], cl[2], 1, 1);
  // Ears (the near ear widens, the far one hides behind the cheek).
  const earY = Y(id.eyeY + 8, 0);
  for (const side of [-1, 1]) {
    const ex = headX + side * (rx - 1.5);
    const er = 4.5 * id.earSize * (1 + 0.5 * side * yaw);
    R.disc(ex, earY, er, 8.5 * id.earSize, side * 0.15, skin[0], skin[1], skin[2], 1, 0, Op.None, 0, 0, 1, 1, 1);
    R.disc(ex + side * er * 0.2, earY, er * 0.5, 5 * id.earSize, side * 0.15, skinDark[0], skinDark[1], skinDark[2], 0.5, 1.5);
  }
  // Face: cheek ellipse ∪ jaw ellipse.
  R.disc(headX, id.faceCy, rx, id.faceRy, 0, skin[0], skin[1], skin[2], 1, 0, Op.None, 0, 0, 1, 1, 1);
  const jawCy = (id.faceCy + id.chinY) / 2 + 6;
  const jawRy = id.chinY - jawCy;
  R.disc(X(0, 2), jawCy, id.jawRx * (1 - 0.1 * Math.abs(yaw)), jawRy, 0, skin[0], skin[1], skin[2], 1, 0, Op.None, 0, 0, 1, 1, 1);
  // Beard: the jaw region below the mouth corners, soft-edged.
  if (id.beard > 0) {
    const bc = scaleRGB(id.hairColor, 0.85);
    const a = id.beard;
    R.disc(X(0, 2), jawCy + 2, id.jawRx * 1.02, jawRy + 1, 0, bc[0], bc[1], bc[2], a, 3, Op.Minus, 0, -0.75, 0.95, 0.95);
  }
  // Cheeks.
  if (id.blush > 0.05) {
    for (const side of [-1, 1]) {
      R.disc(X(side * (id.eyeDx + 2), 6), Y(id.eyeY + 13, 6), 7 * W(side * id.eyeDx), 5, 0, skin[0] * 1.05, skin[1] * 0.75, skin[2] * 0.75, id.blush, 6);
    }
  }
  // Freckles.
  if (id.freckles > 0) {
    const fr = new Rng(id.freckleSeed);
    const fc = scaleRGB(skin, 0.72);
    for (let f = 0; f < id.freckles; f++) {
      const fx = fr.uniform(-1, 1) * (id.eyeDx + 6);
      const fy = id.eyeY + fr.uniform(5, 16);
      R.disc(X(fx, 8), Y(fy, 8), 0.8, 0.8, 0, fc[0], fc[1], fc[2], fr.uniform(0.3, 0.7));
    }
  }
  // Moles.
  for (const m of id.moles) {
    R.disc(X(m.x, 4), Y(m.y, 4), m.r * W(m.x), m.r, 0, 70, 45, 35, 0.85);
  }

  // Eyes.
  const squint = n.blink ? 0.85 : Math.min(0.8, n.squint + 0.35 * n.smile);
  for (const side of [-1, 1]) {
    const ex = X(side * id.eyeDx, 6);
    const ey = Y(id.eyeY, 6);
    const w = W(side * id.eyeDx);
    const erx = id.eyeRx * w;
    const ery = id.eyeRy * (1 - squint);
    const tilt = -side * id.eyeTilt;
    // Socket shadow and lid crease.
    R.disc(ex, ey - 1, erx * 1.35, id.eyeRy * 1.8 + 1, tilt, skinDark[0], skinDark[1], skinDark[2], 0.35, 3);
    // Sclera, iris and pupil clipped by the opening, highlight.
    if (ery > 0.4) {
      R.disc(ex, ey, erx, ery, tilt, 236, 232, 226, 1);
      const ir = id.eyeRx * id.irisSize;
      const ix = ex + n.gazeX * erx * 0.4;
      const iy = ey + n.gazeY * ery * 0.4;
      // The sclera in the iris's unit coordinates (both share the tilt; the offset is small).
      const c = Math.cos(tilt);
      const s = Math.sin(tilt);
      const ox = ((ex - ix) * c + (ey - iy) * s) / (ir * w);
      const oy = (-(ex - ix) * s + (ey - iy) * c) / ir;
      const ic = id.irisColor;
      R.disc(ix, iy, ir * w, ir, tilt, ic[0], ic[1], ic[2], 1, 0, Op.And, ox, oy, erx / (ir * w), ery / ir);
      const pr = 0.42;
      R.disc(ix, iy, ir * w * pr, ir * pr, tilt, 12, 10, 10, 1, 0, Op.And, ox / pr, oy / pr, erx / (ir * w * pr), ery / (ir * pr));
      R.disc(ix - n.light[0] * ir * 0.4 + ir * 0.2, iy - ir * 0.35, 0.8, 0.8, 0, 250, 250, 250, 0.8);
    }
    // Upper lid line: the top of the eye ellipse minus a lowered copy.
    const ld = id.lidDark;
    R.disc(ex, ey, erx * 1.05, Math.max(1, ery) + 0.9, tilt, lerp(skin[0] * 0.6, INK[0], ld), lerp(skin[1] * 0.6, INK[1], ld), lerp(skin[2] * 0.6, INK[2], ld), 0.9, 0, Op.Minus, 0, 0.35, 1.1, 1);
    // Brow: an arched crescent.
    const raise = 2.5 * n.browRaise;
    const bx = X(side * (id.eyeDx + 1), 7);
    const by = Y(id.eyeY - id.browGap - raise, 7);
    const blen = id.browLen * w;
    const bh = id.browThick + 2 + 4 * id.browArch;
    const bc = id.browColor;
    const btilt = side * id.browTilt;
    R.disc(bx, by + bh * 0.5, blen, bh, btilt, bc[0], bc[1], bc[2], 0.92, 0, Op.Minus, 0, id.browThick / bh, 1.04, 1);
  }

  // Nose: side shadow on the unlit side, tip highlight, nostrils, under-shadow.
  const nx = X(0, 14);
  const ny = Y(id.noseY, 14);
  const shadeSide = n.light[0] >= 0 ? -1 : 1;
  R.disc(nx + shadeSide * id.noseW * 0.7, Y(id.noseY - 8, 12), 2.2, 10, 0, skinDark[0] * 0.9, skinDark[1] * 0.9, skinDark[2] * 0.9, id.noseShadow, 3);
  R.disc(nx, ny + 2, id.noseW * 0.9, 3, 0, skinDark[0], skinDark[1], skinDark[2], 0.45, 2.5);
  R.disc(nx, ny - 1.5, id.noseW * 0.45, 2.4, 0, Math.min(255, skin[0] * 1.12), Math.min(255, skin[1] * 1.12), Math.min(255, skin[2] * 1.12), 0.45, 2);
  for (const side of [-1, 1]) {
    R.disc(nx + side * id.noseW * 0.45, ny + 1.5, id.nostril * 1.3, id.nostril * 0.8, side * 0.4, 55, 32, 28, 0.75, 0.8);
  }
  if (id.moustache > 0) {
    const mc = scaleRGB(id.hairColor, 0.8);
    R.disc(X(0, 8), Y((id.noseY + id.mouthY) / 2 + 1, 8), id.mouthW * 0.95, 2.6, 0, mc[0], mc[1], mc[2], id.moustache, 1.5);
  }

  // Mouth: opening, lips, and the smile line.
  const mx = X(0, 7);
  const my = Y(id.mouthY, 7);
  const mw = id.mouthW * (1 + 0.25 * n.smile) * (1 - 0.15 * Math.abs(yaw));
  const open = 5 * n.mouthOpen;
  const lc = id.lipColor;
  R.disc(mx, my - open * 0.1 - id.upperLip * 0.5, mw, id.upperLip + 0.5, 0, lc[0] * 0.92, lc[1] * 0.92, lc[2] * 0.92, 1, 0.8);
  R.disc(mx, my + open * 0.6 + id.lowerLip * 0.4, mw * 0.85, id.lowerLip, 0, lc[0], lc[1], lc[2], 1, 0.8);
  if (open > 0.3) {
    R.disc(mx, my + open * 0.25, mw * 0.8, open * 0.55, 0, 60, 20, 22, 1, 0.8);
    R.disc(mx, my - open * 0.1, mw * 0.6, Math.min(1.6, open * 0.25), 0, 235, 230, 215, 0.9);
  }
  const curve = 1 + 4 * n.smile;
  R.disc(mx, my - curve + 0.8 + open * 0.1, mw * 1.02, curve, 0, 70, 30, 30, 0.85, 0, Op.Minus, 0, -0.9 / curve, 1.03, 1);

  // Hair over the forehead: a cap around the head minus the face window under the hairline.
  {
    const capCy = id.faceCy - 2;
    const capRx = rx + vol;
    const capRy = id.faceRy + vol;
    const hairline = id.hairline + 1.5 * n.hairJitter;
    const winRy = 60;
    const winRx = rx * 0.9;
    const winCx = headX + id.hairPart * 0.3;
    const winCy = hairline + winRy;
    R.disc(headX, capCy, capRx, capRy, id.hairTilt * 0.3, hair[0], hair[1], hair[2], 1, 0.6, Op.Minus, (winCx - headX) / capRx, (winCy - capCy) / capRy, winRx / capRx, winRy / capRy, 1);
    // A parting line.
    if (!id.bald && hairline < -30) {
      const hd = scaleRGB(hair, 0.7);
      R.disc(headX + id.hairPart, capCy - capRy * 0.7, 0.8, 8, id.hairTilt, hd[0], hd[1], hd[2], 0.6, 1);
    }
  }

  // Occlusions.
  if (n.glasses >= 0 || n.sunglasses) {
    const frame: RGB = n.glasses < 0.5 ? [25, 22, 20] : [150, 110, 60];
    for (const side of [-1, 1]) {
      const gx = X(side * id.eyeDx, 9);
      const gy = Y(id.eyeY + 1, 9);
      const w = W(side * id.eyeDx);
      const grx = 10.5 * w;
      const gry = 8;
      if (n.sunglasses) R.disc(gx, gy, grx, gry, 0, 25, 25, 30, 0.9);
      R.disc(gx, gy, grx, gry, 0, frame[0], frame[1], frame[2], 1, 0, Op.Minus, 0, 0, 0.86, 0.82);
    }
    R.box(X(0, 10), Y(id.eyeY - 1, 10), 4.5, 0.9, 0, frame[0], frame[1], frame[2], 1);
  }
  if (n.mask) {
    const mc = n.maskColor;
    const top = Y(id.noseY - 4, 12);
    const bottom = id.chinY + 3;
    R.disc(X(0, 8), (top + bottom) / 2 + 3, id.jawRx * 1.08, (bottom - top) / 2 + 3, 0, mc[0], mc[1], mc[2], 1, 0.6, Op.Minus, 0, -1.75, 2, 1);
    R.box(X(0, 8), top + 2, rx * 0.9, 4, 0, mc[0], mc[1], mc[2], 1, 0.6);
  }

  // Lighting, exposure and white balance.
  R.shade(headX, id.faceCy + 8, rx * 1.05, id.faceRy * 1.15, n.light[0], n.light[1], n.light[2], n.ambient, n.diffuse, 0.3, n.gain[0], n.gain[1], n.gain[2], n.bgSlope);

  // Capture quality.
  const d = 1 - n.quality;
  if (d > 0.01) {
    const [sBlur, sDown, sNoise, sJpeg] = n.damage;
    const blur = 2.2 * d * sBlur * (size / 112);
    const down = 1 + 2.8 * d * sDown;
    if (down > 1.15) R.resample(down * (size / 112));
    if (blur > 0.35) R.blur(gaussianKernel(blur));
    const sigma = 14 * d * sNoise;
    if (sigma > 0.5) addNoise(R.px, sigma, n.noiseSeed);
    const jpeg = d * sJpeg;
    if (jpeg > 0.1) R.blockify(Math.min(0.85, jpeg), 2 + 14 * jpeg, jpeg > 0.25);
  }
}

/** Sensor noise: luminance plus chroma, roughly Gaussian (sum of two uniforms), from an xorshift stream. */
function addNoise(px: Float32Array, sigma: number, seed: number): void {
  let s = seed | 1;
  const k = sigma * 2.449 / 4294967296; // the sum of two U(-½, ½)·2^32 has std 2^32/√6
  for (let i = 0; i < px.length; i += 3) {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    const a = s;
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    const l = (a + s) * k * 0.8;
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    const c = s * k * 0.5;
    px[i] += l + c;
    px[i + 1] += l;
    px[i + 2] += l - c;
  }
}

/** Re-opens a source from {@link SyntheticFaces.describe}'s options. */
export function openSynthetic(options: Record<string, unknown>): SyntheticFaces {
  if (!options || typeof options !== 'object') throw invalidParameterError('options', 'an options object', options);
  return new SyntheticFaces(options as unknown as SyntheticFacesOptions);
}
