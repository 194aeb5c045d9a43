// FaceEmbedder against a direct forward of the same backbone on pixels normalized here (float64
// (v/255 − 0.5)/0.5, or the model's own mean/std): no flip, flip TTA as the raw sum then L2
// normalization, batch-size invariance, BGR, encoded files, resizing with one warning, alignment
// from landmarks, model files with their preprocessing and calibration sidecar, and errors.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { iresnetArch } from '../../lib/backbones/arch';
import { Backbone, IResNet } from '../../lib/backbones/model';
import { loadSharp } from '../../lib/data/image';
import type { RawImage } from '../../lib/data/types';
import { AffineMatrix, alignFace, applyAffine, ARCFACE_TEMPLATE_112, FaceEmbedder, ScoreCalibration } from '../../lib/embed';
import { FacecudaError } from '../../lib/errors';
import { archToOnnx } from '../../lib/onnx/export';
import { encodeOnnxModel } from '../../lib/onnx/proto';
import { SEED, rng } from '../helpers';

const SIZE = 112;
const DIM = 32;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'facecuda-embed-'));

/** Smooth random images (a few random colour gradients and blobs): decodable, and not constant. */
function randomFace(r: () => number, width = SIZE, height = SIZE): RawImage {
  const data = new Uint8Array(width * height * 3);
  const blobs = Array.from({ length: 6 }, () => [r() * width, r() * height, 4 + r() * 20, r() * 255, r() * 255, r() * 255]);
  const base = [r() * 255, r() * 255, r() * 255];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      for (let ch = 0; ch < 3; ch++) {
        let v = base[ch] * (0.6 + 0.4 * (x / width));
        for (const [bx, by, s, ...col] of blobs) v += (col[ch] - v) * Math.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * s * s));
        data[(y * width + x) * 3 + ch] = Math.max(0, Math.min(255, Math.round(v + (r() - 0.5) * 20)));
      }
    }
  }
  return { width, height, channels: 3, data };
}

/** CHW float32 of one image, (v − mean)/std per model channel, optionally mirrored and BGR. */
function normalizeRef(img: RawImage, out: Float32Array, slot: number, opts: { mirror?: boolean; bgr?: boolean; mean?: number[]; std?: number[] } = {}): void {
  const { width: w, height: h, data } = img;
  const plane = w * h;
  for (let c = 0; c < 3; c++) {
    const src = opts.bgr ? 2 - c : c;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const sx = opts.mirror ? w - 1 - x : x;
        const v = data[(y * w + sx) * 3 + src];
        out[slot * 3 * plane + c * plane + y * w + x] = opts.mean ? (v - opts.mean[c]) / opts.std![c] : (v / 255 - 0.5) / 0.5;
      }
    }
  }
}

async function forwardRef(model: Backbone, images: RawImage[], opts: Parameters<typeof normalizeRef>[3] = {}): Promise<Float32Array> {
  const x = new Float32Array(images.length * 3 * SIZE * SIZE);
  images.forEach((img, i) => normalizeRef(img, x, i, opts));
  const y = await model.forward(x);
  const a = (await y.toArray()) as Float32Array;
  y.dispose();
  return a;
}

/** Unit rows and norms of raw rows (float64). */
function unitRows(raw: ArrayLike<number>, n: number): { e: Float64Array; norms: Float64Array } {
  const e = new Float64Array(n * DIM);
  const norms = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < DIM; j++) s += raw[i * DIM + j] ** 2;
    norms[i] = Math.sqrt(s);
    for (let j = 0; j < DIM; j++) e[i * DIM + j] = raw[i * DIM + j] / norms[i];
  }
  return { e, norms };
}

/** Max |a − b| / max(1, |b|). */
function maxRel(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]) / Math.max(1, Math.abs(b[i])));
  return m;
}

async function png(img: RawImage): Promise<Uint8Array> {
  return new Uint8Array(await loadSharp()(Buffer.from(img.data), { raw: { width: img.width, height: img.height, channels: 3 } }).png().toBuffer());
}

describe(`FaceEmbedder (seed ${SEED})`, () => {
  const r = rng(SEED);
  const model = IResNet.create('r18', { baseWidth: 4, embeddingSize: DIM, inputSize: SIZE, seed: SEED % 1000 }).eval();
  const images = Array.from({ length: 5 }, () => randomFace(r));
  afterAll(() => model.dispose());

  test('embed = a direct forward, L2-normalized; norms are the raw norms; batch size does not matter', async () => {
    const raw = await forwardRef(model, images);
    const ref = unitRows(raw, images.length);
    const embedder = await FaceEmbedder.create({ model });
    const got = await embedder.embed(images);
    expect(got.dim).toBe(DIM);
    expect(got.count).toBe(images.length);
    // float32 output of a float64 normalization of the same float32 forward
    expect(maxRel(got.embeddings, ref.e)).toBeLessThan(1e-6);
    expect(maxRel(got.norms, ref.norms)).toBeLessThan(1e-5);
    // batch size 3 (batches of 3, 2) against 32: the engine's forward is per sample in eval mode; a
    // different blocking of the convolutions may change the last bits only
    const small = await FaceEmbedder.create({ model, batchSize: 3 });
    const got2 = await small.embed(images);
    expect(maxRel(got2.embeddings, got.embeddings)).toBeLessThan(1e-5);
    expect(maxRel(got2.norms, got.norms)).toBeLessThan(1e-5);
    // no images: empty results
    expect(await embedder.embed([])).toEqual({ embeddings: new Float32Array(0), norms: new Float32Array(0), viewNorms: new Float32Array(0), dim: DIM, count: 0 });
    // viewNorms: [own norm, 0] without flip
    expect(maxRel(got.viewNorms.filter((_, i) => i % 2 === 0), ref.norms)).toBeLessThan(1e-5);
    expect(got.viewNorms.filter((_, i) => i % 2 === 1).every((v) => v === 0)).toBe(true);
  });

  test('flip TTA = normalize(forward(x) + forward(mirror(x))), norms of the sum', async () => {
    const a = await forwardRef(model, images);
    const b = await forwardRef(model, images, { mirror: true });
    const sum = Float64Array.from(a, (v, i) => v + b[i]);
    const ref = unitRows(sum, images.length);
    const embedder = await FaceEmbedder.create({ model, batchSize: 3, flip: true });
    const got = await embedder.embed(images);
    expect(maxRel(got.embeddings, ref.e)).toBeLessThan(1e-5);
    expect(maxRel(got.norms, ref.norms)).toBeLessThan(1e-5);
    // viewNorms: the raw norms of the image's and the mirror's embeddings (arcface_torch's XNorm averages them)
    expect(maxRel(got.viewNorms.filter((_, i) => i % 2 === 0), unitRows(a, images.length).norms)).toBeLessThan(1e-5);
    expect(maxRel(got.viewNorms.filter((_, i) => i % 2 === 1), unitRows(b, images.length).norms)).toBeLessThan(1e-5);
    // the mirror really is used: flip off differs
    const off = await embedder.embed(images, { flip: false });
    expect(maxRel(off.embeddings, got.embeddings)).toBeGreaterThan(1e-3);
  });

  test("channelOrder 'bgr' feeds B, G, R; encoded PNGs equal their pixels", async () => {
    const ref = unitRows(await forwardRef(model, images, { bgr: true }), images.length);
    const bgr = await FaceEmbedder.create({ model, channelOrder: 'bgr' });
    expect(maxRel((await bgr.embed(images)).embeddings, ref.e)).toBeLessThan(1e-5);
    const rgb = await FaceEmbedder.create({ model });
    const fromPng = await rgb.embed(await Promise.all(images.map(png)));
    const fromRaw = await rgb.embed(images);
    expect(Buffer.compare(Buffer.from(fromPng.embeddings.buffer), Buffer.from(fromRaw.embeddings.buffer))).toBe(0);
  });

  test('a wrong-size image is resized (sharp, bilinear) with one warning per embedder', async () => {
    const big = randomFace(r, 150, 130);
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      const embedder = await FaceEmbedder.create({ model });
      const got = await embedder.embed([images[0], big, big]);
      expect(warn).toHaveBeenCalledTimes(1);
      expect(String(warn.mock.calls[0][0])).toMatch(/images\[1\] is 150×130/);
      expect(warn.mock.calls[0][1]).toMatchObject({ code: 'FACECUDA_IMAGE_RESIZED' });
      const resized = await loadSharp()(Buffer.from(big.data), { raw: { width: 150, height: 130, channels: 3 } })
        .resize(SIZE, SIZE, { fit: 'fill', kernel: 'linear' }).raw().toBuffer();
      const ref = unitRows(await forwardRef(model, [{ width: SIZE, height: SIZE, channels: 3, data: new Uint8Array(resized) }]), 1);
      expect(maxRel(got.embeddings.subarray(DIM, 2 * DIM), ref.e)).toBeLessThan(1e-5);
      await embedder.embed([big]);
      expect(warn).toHaveBeenCalledTimes(1);
    } finally {
      warn.mockRestore();
    }
  });

  test('embedFaces aligns from landmarks: the same as alignFace then embed', async () => {
    const embedder = await FaceEmbedder.create({ model, flip: true });
    const photos: RawImage[] = [];
    const lms: number[] = [];
    for (const img of images.slice(0, 3)) {
      const s = 1 + r();
      const th = (r() - 0.5) * 1.2;
      const M: AffineMatrix = [[s * Math.cos(th), -s * Math.sin(th), 40 + 30 * r()], [s * Math.sin(th), s * Math.cos(th), 40 + 30 * r()]];
      // A photo: the crop warped by M with nearest sampling (the content does not matter here).
      const W = 300;
      const data = new Uint8Array(W * W * 3);
      const det = M[0][0] * M[1][1] - M[0][1] * M[1][0];
      for (let Y = 0; Y < W; Y++) {
        for (let X = 0; X < W; X++) {
          const u = X - M[0][2];
          const v = Y - M[1][2];
          const x = Math.round((M[1][1] * u - M[0][1] * v) / det);
          const y = Math.round((-M[1][0] * u + M[0][0] * v) / det);
          if (x >= 0 && y >= 0 && x < SIZE && y < SIZE) data.set(img.data.subarray((y * SIZE + x) * 3, (y * SIZE + x) * 3 + 3), (Y * W + X) * 3);
        }
      }
      photos.push({ width: W, height: W, channels: 3, data });
      for (const p of ARCFACE_TEMPLATE_112) lms.push(...applyAffine(M, p));
    }
    const landmarks = Float32Array.from(lms);
    const got = await embedder.embedFaces(await Promise.all(photos.map(png)), landmarks);
    const aligned = await Promise.all(photos.map((p, i) => alignFace(p, landmarks.subarray(i * 10, i * 10 + 10))));
    const ref = await embedder.embed(aligned);
    expect(Buffer.compare(Buffer.from(got.embeddings.buffer), Buffer.from(ref.embeddings.buffer))).toBe(0);
    expect(Buffer.compare(Buffer.from(got.norms.buffer), Buffer.from(ref.norms.buffer))).toBe(0);
    // The interface lib/eval declares.
    const asEval: {
      embed(images: Uint8Array[], o: { flip: boolean }): Promise<{ embeddings: Float32Array; norms: Float32Array; dim: number }>;
      embedFaces(images: Uint8Array[], landmarks: Float32Array, o: { flip: boolean }): Promise<{ embeddings: Float32Array; norms: Float32Array; dim: number }>;
    } = embedder;
    expect(typeof asEval.embedFaces).toBe('function');
    await expect(embedder.embedFaces(photos, landmarks.subarray(0, 25))).rejects.toMatchObject({ code: 'SHAPE_MISMATCH' });
    await expect(embedder.embedFaces([photos[0]], new Float32Array(10).fill(3))).rejects.toThrow(/landmarks of face 0/);
  });

  test("a model's own mean/std are used, also after save → FaceEmbedder.create(path); the calibration sidecar comes along", async () => {
    const base = iresnetArch(18, { baseWidth: 4, embeddingSize: DIM, inputSize: SIZE });
    const mean = [100, 110, 120];
    const std = [50, 60, 70];
    const arch = { ...base, preprocessing: { ...base.preprocessing, mean: mean as [number, number, number], std: std as [number, number, number] } };
    const custom = Backbone.fromArch(arch, { seed: 5 }).eval();
    try {
      const ref = unitRows(await forwardRef(custom, images, { mean, std }), images.length);
      const direct = await FaceEmbedder.create({ model: custom });
      expect(maxRel((await direct.embed(images)).embeddings, ref.e)).toBeLessThan(1e-5);
      const file = path.join(tmp, 'custom.safetensors');
      await custom.save(file);
      const cal = await ScoreCalibration.fit([0.1, 0.2, 0.9], [false, false, true]);
      expect(await cal.save(file)).toBe(path.join(tmp, 'custom.calibration.json'));
      const loaded = await FaceEmbedder.create({ model: file });
      try {
        expect(loaded.model.preprocessing.mean).toEqual(mean);
        expect(maxRel((await loaded.embed(images)).embeddings, ref.e)).toBeLessThan(1e-5);
        expect(loaded.calibration?.toJSON()).toEqual(cal.toJSON());
      } finally {
        loaded.dispose();
      }
      // the embedder owned the model it loaded
      await expect(loaded.embed(images)).rejects.toMatchObject({ code: 'DISPOSED' });
      expect(() => loaded.model.eval()).toThrow(/disposed/);
      // a Backbone passed in is left alone
      direct.dispose();
      expect(custom.training).toBe(false);
      await custom.forward(new Float32Array(3 * SIZE * SIZE));
    } finally {
      custom.dispose();
    }
  });

  test('an ONNX file with insightface\'s input normalization in the graph: the same embeddings', async () => {
    const weights = new Map<string, Float32Array>();
    for (const p of await model.parameters({ includeBuffers: true })) {
      if (p.value.dtype === 'float32') weights.set(p.name, (await p.value.toArray()) as Float32Array);
      p.value.dispose();
      p.grad?.dispose();
    }
    const file = path.join(tmp, 'tiny.onnx');
    fs.writeFileSync(file, encodeOnnxModel(archToOnnx(model.arch, weights, { inputNormalization: { mean: [127.5, 127.5, 127.5], std: [127.5, 127.5, 127.5] } }).model));
    const onnx = await FaceEmbedder.create({ model: file, flip: true });
    try {
      expect(onnx.model.preprocessing.mean).toEqual([127.5, 127.5, 127.5]);
      expect(onnx.calibration).toBeNull();
      const ref = await (await FaceEmbedder.create({ model, flip: true })).embed(images);
      const got = await onnx.embed(images);
      // BatchNorm folded into the convolutions (in float64, stored as float32): last-bits differences
      expect(maxRel(got.embeddings, ref.embeddings)).toBeLessThan(1e-4);
      expect(maxRel(got.norms, ref.norms)).toBeLessThan(1e-4);
    } finally {
      onnx.dispose();
    }
  });

  test('a model in training mode is embedded in eval mode and handed back in training mode', async () => {
    const m = IResNet.create('r18', { baseWidth: 4, embeddingSize: DIM, inputSize: SIZE, seed: 3 });
    try {
      const embedder = await FaceEmbedder.create({ model: m });
      const got = await embedder.embed(images.slice(0, 1)); // a batch of 1 would throw in training mode
      expect(m.training).toBe(true);
      m.eval();
      expect(maxRel(got.embeddings, unitRows(await forwardRef(m, images.slice(0, 1)), 1).e)).toBeLessThan(1e-6);
    } finally {
      m.dispose();
    }
  });

  test('errors: corrupt files are CORRUPT_FILE naming the image; bad options name the argument', async () => {
    const embedder = await FaceEmbedder.create({ model });
    const corrupt = (await png(images[0])).slice(0, 60);
    await expect(embedder.embed([images[0], corrupt])).rejects.toThrow(/images\[1\]/);
    await expect(embedder.embed([corrupt])).rejects.toMatchObject({ code: 'CORRUPT_FILE' });
    await expect(embedder.embed([corrupt])).rejects.toBeInstanceOf(FacecudaError);
    // the embedder still works after a failed call
    expect((await embedder.embed(images.slice(0, 1))).count).toBe(1);
    await expect(embedder.embed('x' as never)).rejects.toThrow(/^Expected an array of encoded images \(Uint8Array\) or RawImages for images but received "x"/);
    await expect(embedder.embed([{ width: 2, height: 2, channels: 3, data: new Uint8Array(3) }])).rejects.toThrow(/images\[0\].data length/);
    await expect(embedder.embed(images, { flip: 1 } as never)).rejects.toThrow(/^Expected a boolean for flip/);
    await expect(embedder.embed(images, { flipp: true } as never)).rejects.toThrow(/embed option 'flipp'/);
    await expect(FaceEmbedder.create(undefined as never)).rejects.toThrow(TypeError);
    await expect(FaceEmbedder.create({ model: 42 } as never)).rejects.toThrow(/for model/);
    await expect(FaceEmbedder.create({ model, batchSize: 0 })).rejects.toThrow(RangeError);
    await expect(FaceEmbedder.create({ model, channelOrder: 'BGR' } as never)).rejects.toThrow(/^Expected one of 'rgb', 'bgr' for channelOrder/);
    await expect(FaceEmbedder.create({ model: 'x.pt' })).rejects.toThrow(/\.safetensors or \.onnx/);
    await expect(FaceEmbedder.create({ model: path.join(tmp, 'missing.safetensors') })).rejects.toMatchObject({ code: 'IO_ERROR' });
  });
});
