// The data pipeline (lib/data/{image,folder,sources,worker,loader}.ts): decoding, folder and list
// sources, the loader's order, determinism across worker counts, resume, warnings and errors. Worker
// threads run here from the TypeScript sources (the loader's .ts bootstrap) and, in one test, from
// JavaScript compiled with tsc, the way the package runs.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { FacecudaError } from '../../lib/errors';
import { decodeImage } from '../../lib/data/image';
import { ImageFolder, ImageList } from '../../lib/data/folder';
import { DataLoader, measureLoader } from '../../lib/data/loader';
import { openSource } from '../../lib/data/sources';
import type { Batch, Sample, SampleSource, SourceDescriptor } from '../../lib/data/types';
import { SEED, rng } from '../helpers';

const root = path.resolve(__dirname, '..', '..');

/** A source of rendered pixels: sample i has label i % numClasses and bytes that encode i. */
class PixelSource implements SampleSource {
  readonly numClasses: number;
  constructor(readonly size: number, readonly side = 8, numClasses = 5) {
    this.numClasses = numClasses;
  }
  pixels(i: number): Uint8Array {
    const d = new Uint8Array(this.side * this.side * 3);
    for (let j = 0; j < d.length; j++) d[j] = (i * 31 + j * 7) & 255;
    return d;
  }
  async get(i: number): Promise<Sample> {
    return { label: i % this.numClasses, pixels: { width: this.side, height: this.side, channels: 3, data: this.pixels(i) } };
  }
  describe(): SourceDescriptor {
    return { kind: 'synthetic', options: {} };
  }
  async close(): Promise<void> {}
}

async function collect(it: AsyncIterable<Batch>): Promise<Batch[]> {
  const out: Batch[] = [];
  for await (const b of it) out.push(b);
  return out;
}

function noiseImage(w: number, h: number, r: () => number, channels = 3): { data: Buffer; raw: { width: number; height: number; channels: 3 | 1 } } {
  const data = Buffer.alloc(w * h * channels);
  for (let i = 0; i < data.length; i++) data[i] = Math.floor(r() * 256);
  return { data, raw: { width: w, height: h, channels: channels as 3 | 1 } };
}

async function writeImage(file: string, w: number, h: number, r: () => number): Promise<void> {
  const { data, raw } = noiseImage(w, h, r);
  const s = sharp(data, { raw });
  await (file.toLowerCase().endsWith('.png') ? s.png() : s.jpeg({ quality: 90 })).toFile(file);
}

/** root/<class>/<n>.png|jpg: `perClass` images per class, size×size. */
async function makeFolder(dir: string, classes: string[], perClass: number, size: number, r: () => number): Promise<void> {
  for (const c of classes) {
    fs.mkdirSync(path.join(dir, c), { recursive: true });
    for (let k = 0; k < perClass; k++) await writeImage(path.join(dir, c, `${k}.${k % 2 ? 'jpg' : 'png'}`), size, size, r);
  }
}

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'facecuda-data-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe(`decoding (seed ${SEED})`, () => {
  const r = rng(SEED);

  it('decodes a PNG exactly and a JPEG closely, RGB or BGR', async () => {
    const { data, raw } = noiseImage(112, 112, r);
    const png = await sharp(data, { raw }).png().toBuffer();
    const img = await decodeImage(png);
    expect([img.width, img.height, img.channels, img.resized]).toEqual([112, 112, 3, false]);
    expect(Buffer.from(img.data).equals(data)).toBe(true);
    const bgr = await decodeImage(png, { colorOrder: 'BGR' });
    expect([bgr.data[0], bgr.data[1], bgr.data[2]]).toEqual([data[2], data[1], data[0]]);
    // A smooth image survives JPEG at quality 95 within a few levels.
    const smooth = Buffer.alloc(112 * 112 * 3);
    for (let p = 0; p < 112 * 112; p++) smooth.set([p % 112 * 2, Math.floor(p / 112) * 2, 100], 3 * p);
    const jpg = await sharp(smooth, { raw }).jpeg({ quality: 95 }).toBuffer();
    const dj = await decodeImage(new Uint8Array(jpg));
    let maxErr = 0;
    for (let i = 0; i < smooth.length; i++) maxErr = Math.max(maxErr, Math.abs(dj.data[i] - smooth[i]));
    expect(maxErr).toBeLessThan(12);
  });

  it('resizes other sizes and says so; grey and alpha images give three channels', async () => {
    const { data, raw } = noiseImage(100, 90, r);
    const img = await decodeImage(await sharp(data, { raw }).png().toBuffer(), { size: 64 });
    expect([img.width, img.height, img.data.length, img.resized, img.sourceWidth, img.sourceHeight]).toEqual([64, 64, 64 * 64 * 3, true, 100, 90]);
    const grey = noiseImage(20, 20, r, 1);
    const g = await decodeImage(await sharp(grey.data, { raw: grey.raw }).png().toBuffer(), { size: 20 });
    expect(g.data.length).toBe(1200);
    expect([g.data[0], g.data[1], g.data[2]]).toEqual([grey.data[0], grey.data[0], grey.data[0]]);
    const rgba = Buffer.alloc(20 * 20 * 4, 77);
    const a = await decodeImage(await sharp(rgba, { raw: { width: 20, height: 20, channels: 4 } }).png().toBuffer(), { size: 20 });
    expect(a.data.length).toBe(1200);
  });

  it('corrupt bytes are CORRUPT_FILE', async () => {
    const jpg = await sharp(noiseImage(32, 32, r).data, { raw: { width: 32, height: 32, channels: 3 } }).jpeg().toBuffer();
    for (const bad of [Buffer.from('not an image at all'), jpg.subarray(0, jpg.length >> 1)]) {
      await expect(decodeImage(bad)).rejects.toMatchObject({ code: 'CORRUPT_FILE' });
    }
    await expect(decodeImage('x' as never)).rejects.toThrow(TypeError);
  });
});

describe('folder and list sources', () => {
  let dir: string;
  beforeAll(async () => {
    dir = path.join(tmp, 'folder');
    await makeFolder(dir, ['bob', 'alice', 'carol'], 3, 16, rng(SEED + 1));
    fs.mkdirSync(path.join(dir, 'alice', 'more'));
    await writeImage(path.join(dir, 'alice', 'more', 'x.PNG'), 16, 16, rng(SEED + 2));
    fs.writeFileSync(path.join(dir, 'alice', 'notes.txt'), 'ignored');
  });

  it('ImageFolder: sorted class names are labels; jpg/jpeg/png, any case, recursively', async () => {
    const src = await ImageFolder.open(dir);
    expect(src.classes).toEqual(['alice', 'bob', 'carol']);
    expect([src.size, src.numClasses]).toEqual([10, 3]);
    expect(path.relative(dir, src.path(0))).toBe(path.join('alice', '0.png'));
    expect(path.relative(dir, src.path(3))).toBe(path.join('alice', 'more', 'x.PNG'));
    const labels = await Promise.all(Array.from({ length: 10 }, async (_, i) => (await src.get(i)).label));
    expect(labels).toEqual([0, 0, 0, 0, 1, 1, 1, 2, 2, 2]);
    const s = await src.get(4);
    expect(Buffer.from(s.encoded!).equals(fs.readFileSync(path.join(dir, 'bob', '0.png')))).toBe(true);
    const again = await openSource(src.describe());
    expect(again.size).toBe(10);
    await expect(ImageFolder.open(path.join(tmp, 'nope'))).rejects.toMatchObject({ code: 'IO_ERROR' });
    fs.mkdirSync(path.join(tmp, 'empty-class', 'dave'), { recursive: true });
    await expect(ImageFolder.open(path.join(tmp, 'empty-class'))).rejects.toThrow(/dave/);
  });

  it('ImageList: "path label" lines, paths with spaces, comments, root defaults to the list folder', async () => {
    fs.copyFileSync(path.join(dir, 'bob', '1.jpg'), path.join(dir, 'with space.jpg'));
    const list = path.join(dir, 'train.txt');
    fs.writeFileSync(list, '# a comment\nalice/0.png 4\n\nwith space.jpg 0\r\nbob/2.png\t7\n');
    const src = await ImageList.open(list);
    expect([src.size, src.numClasses]).toEqual([3, 8]);
    expect((await src.get(1)).label).toBe(0);
    expect(Buffer.from((await src.get(1)).encoded!).equals(fs.readFileSync(path.join(dir, 'bob', '1.jpg')))).toBe(true);
    expect(src.describe()).toEqual({ kind: 'list', path: list });
    const other = path.join(tmp, 'list2.txt');
    fs.writeFileSync(other, 'alice/0.png 1\n');
    const rooted = await ImageList.open(other, dir);
    expect(rooted.describe()).toEqual({ kind: 'list', path: other, root: dir });
    expect((await (await openSource(rooted.describe())).get(0)).label).toBe(1);
    fs.writeFileSync(other, 'alice/0.png 1\nalice/1.jpg -3\n');
    await expect(ImageList.open(other, dir)).rejects.toThrow(/line 2/);
    fs.writeFileSync(other, 'alice/missing.png 1\n');
    await expect((await ImageList.open(other, dir)).get(0)).rejects.toMatchObject({ code: 'IO_ERROR' });
  });

  it('openSource rejects unknown kinds', async () => {
    await expect(openSource({ kind: 'zip' } as never)).rejects.toThrow(TypeError);
  });
});

describe(`DataLoader order (seed ${SEED})`, () => {
  it('every sample exactly once per epoch, minus the dropped tail; labels and pixels follow the indices', async () => {
    const src = new PixelSource(103);
    for (const dropLast of [true, false]) {
      const loader = new DataLoader(src, { batchSize: 10, workers: 0, seed: SEED, dropLast, augment: {}, size: 8 });
      expect(loader.batchesPerEpoch).toBe(dropLast ? 10 : 11);
      const batches = await collect(loader.epoch(0));
      expect(batches.length).toBe(loader.batchesPerEpoch);
      const seen = batches.flatMap((b) => Array.from(b.indices));
      expect(seen.length).toBe(dropLast ? 100 : 103);
      expect(new Set(seen).size).toBe(seen.length);
      expect(seen).toEqual(Array.from(loader.permutation(0)).slice(0, seen.length));
      if (!dropLast) expect(batches[10].size).toBe(3);
      for (const b of batches) {
        expect(b.images.length).toBe(b.size * 3 * 8 * 8);
        expect(Array.from(b.labels)).toEqual(Array.from(b.indices, (i) => i % 5));
      }
    }
  });

  it('images are the normalized pixels (resized to size), NCHW', async () => {
    const src = new PixelSource(4, 6);
    const loader = new DataLoader(src, { batchSize: 4, workers: 0, shuffle: false, augment: {}, size: 6 });
    const [b] = await collect(loader.epoch(0));
    expect(Array.from(b.indices)).toEqual([0, 1, 2, 3]);
    const px = src.pixels(2);
    for (let c = 0; c < 3; c++) {
      for (let p = 0; p < 36; p++) expect(b.images[2 * 108 + c * 36 + p]).toBe(Math.fround((px[p * 3 + c] / 255 - 0.5) / 0.5));
    }
    const bgr = await collect(new DataLoader(src, { batchSize: 4, workers: 0, shuffle: false, augment: {}, size: 6, colorOrder: 'BGR' }).epoch(0));
    expect(bgr[0].images.subarray(2 * 108, 2 * 108 + 36)).toEqual(b.images.subarray(2 * 108 + 72, 2 * 108 + 108));
  });

  it('same seed → same order; other epochs and seeds → other orders; shuffle false → index order', async () => {
    const src = new PixelSource(64);
    const a = new DataLoader(src, { batchSize: 8, workers: 0, seed: SEED, size: 8 });
    const b = new DataLoader(src, { batchSize: 8, workers: 0, seed: SEED, size: 8 });
    expect(b.permutation(3)).toEqual(a.permutation(3));
    expect(a.permutation(4)).not.toEqual(a.permutation(3));
    expect(new DataLoader(src, { batchSize: 8, workers: 0, seed: SEED + 1 }).permutation(3)).not.toEqual(a.permutation(3));
    expect(Array.from(new DataLoader(src, { batchSize: 8, workers: 0, shuffle: false }).permutation(9))).toEqual(Array.from({ length: 64 }, (_, i) => i));
    const e1 = await collect(a.epoch(1));
    const e1b = await collect(b.epoch(1));
    const e2 = await collect(a.epoch(2));
    expect(e1b.map((x) => Array.from(x.indices))).toEqual(e1.map((x) => Array.from(x.indices)));
    expect(e1b.map((x) => Buffer.from(x.images.buffer).toString('base64'))).toEqual(e1.map((x) => Buffer.from(x.images.buffer).toString('base64')));
    expect(e2.map((x) => Array.from(x.indices))).not.toEqual(e1.map((x) => Array.from(x.indices)));
  });

  it('resume with startAt gives exactly the rest of the uninterrupted sequence; position follows', async () => {
    const src = new PixelSource(50, 8);
    const opts = { batchSize: 6, workers: 0, seed: SEED, size: 8, augment: { flip: 0.5, erase: { p: 0.5 }, colorJitter: { brightness: 0.3 } } };
    const full = new DataLoader(src, opts);
    const all = await collect(full.epoch(2));
    expect(full.position).toEqual({ epoch: 2, batch: 8 });
    // Interrupted after 3 batches (the position a trainer would checkpoint).
    const first = new DataLoader(src, opts);
    let saved = first.position;
    for await (const b of first.epoch(2)) {
      saved = first.position;
      expect(b.indices).toEqual(all[saved.batch - 1].indices);
      if (saved.batch === 3) break;
    }
    expect(saved).toEqual({ epoch: 2, batch: 3 });
    const resumed = new DataLoader(src, opts);
    resumed.startAt(saved.epoch, saved.batch);
    expect(resumed.position).toEqual(saved);
    const rest = await collect(resumed.epoch(2));
    expect(rest.length).toBe(5);
    rest.forEach((b, k) => {
      expect(b.indices).toEqual(all[3 + k].indices);
      expect(b.images).toEqual(all[3 + k].images);
    });
    // startAt applies once: the next epoch starts at 0.
    expect((await collect(resumed.epoch(3))).length).toBe(8);
    expect(() => resumed.startAt(0, 9)).toThrow(RangeError);
  });

  it('prefetch depth does not change the batches', async () => {
    const src = new PixelSource(40, 8);
    const opts = { batchSize: 4, workers: 0, seed: SEED, size: 8, augment: { flip: 0.5, crop: true } };
    const a = await collect(new DataLoader(src, { ...opts, prefetch: 1 }).epoch(0));
    const b = await collect(new DataLoader(src, { ...opts, prefetch: 7 }).epoch(0));
    expect(b.map((x) => x.images)).toEqual(a.map((x) => x.images));
  });

  it('validates options (unknown names with hints, ranges)', () => {
    const src = new PixelSource(10);
    expect(() => new DataLoader(src, { batchSize: 4, num_workers: 2 } as never)).toThrow(/'workers'/);
    expect(() => new DataLoader(src, {} as never)).toThrow(/batchSize/);
    expect(() => new DataLoader(src, { batchSize: 0 })).toThrow(RangeError);
    expect(() => new DataLoader(src, { batchSize: 2, seed: -1 })).toThrow(RangeError);
    expect(() => new DataLoader(src, { batchSize: 2, augment: { flip: 2 } })).toThrow(RangeError);
    expect(() => new DataLoader({} as never, { batchSize: 2 })).toThrow(TypeError);
    expect(new DataLoader(src, { batchSize: 2 }).workers).toBeGreaterThanOrEqual(1);
  });
});

describe(`DataLoader with worker threads (seed ${SEED})`, () => {
  let dir: string;
  let folder: ImageFolder;
  const augment = {
    flip: 0.5, crop: { scale: [0.5, 1] as [number, number] }, colorJitter: { brightness: 0.3, contrast: 0.3, saturation: 0.3 },
    lowRes: { p: 0.3 }, erase: { p: 0.5, value: 'random' as const },
  };
  beforeAll(async () => {
    dir = path.join(tmp, 'workers');
    await makeFolder(dir, ['a', 'b', 'c', 'd'], 9, 32, rng(SEED + 3));
    folder = await ImageFolder.open(dir);
  });

  it('batches are bitwise identical for 0, 1 and 2 workers', async () => {
    const results: string[][] = [];
    for (const workers of [0, 1, 2]) {
      const loader = new DataLoader(folder, { batchSize: 5, workers, seed: SEED, size: 32, augment });
      try {
        const batches = [...(await collect(loader.epoch(0))), ...(await collect(loader.epoch(1)))];
        expect(batches.length).toBe(14);
        results.push(batches.map((b) => `${b.indices.join(',')}|${b.labels.join(',')}|${Buffer.from(b.images.buffer, b.images.byteOffset, b.images.byteLength).toString('base64')}`));
      } finally {
        await loader.close();
      }
    }
    expect(results[1]).toEqual(results[0]);
    expect(results[2]).toEqual(results[0]);
  });

  it('a corrupt file rejects the iteration with its FacecudaError code and message, as in the main thread', async () => {
    const bad = path.join(tmp, 'bad');
    await makeFolder(bad, ['x', 'y'], 4, 16, rng(SEED + 4));
    fs.writeFileSync(path.join(bad, 'y', '2.png'), Buffer.from('definitely not a png'));
    const src = await ImageFolder.open(bad);
    const errors: Array<{ code: string; message: string; isFacecuda: boolean }> = [];
    for (const workers of [0, 1]) {
      const loader = new DataLoader(src, { batchSize: 8, workers, shuffle: false, size: 16 });
      try {
        await collect(loader.epoch(0));
        errors.push({ code: 'none', message: '', isFacecuda: false });
      } catch (e) {
        errors.push({ code: (e as FacecudaError).code, message: (e as Error).message, isFacecuda: e instanceof FacecudaError });
      } finally {
        await loader.close();
      }
    }
    expect(errors[0].code).toBe('CORRUPT_FILE');
    expect(errors[0].message).toContain(path.join(bad, 'y', '2.png'));
    expect(errors[1]).toEqual(errors[0]);
    expect(errors[1].isFacecuda).toBe(true);
  });

  it('warns once when images are not size×size', async () => {
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      const loader = new DataLoader(folder, { batchSize: 6, workers: 1, size: 24, augment: {} });
      try {
        const batches = await collect(loader.epoch(0));
        expect(batches[0].images.length).toBe(6 * 3 * 24 * 24);
      } finally {
        await loader.close();
      }
      const calls = warn.mock.calls.filter((c) => String(c[0]).includes('not 24×24'));
      expect(calls.length).toBe(1);
      expect(String(calls[0][0])).toMatch(/is 32×32/);
    } finally {
      warn.mockRestore();
    }
  });

  it('close() terminates the workers; a closed loader refuses new epochs', async () => {
    const loader = new DataLoader(folder, { batchSize: 4, workers: 2, size: 32 });
    for await (const b of loader.epoch(0)) {
      expect(b.size).toBe(4);
      break; // leaves batches in flight
    }
    await loader.close();
    await loader.close();
    expect(() => loader.epoch(1)).toThrow(expect.objectContaining({ code: 'DISPOSED' }));
    // Closed during an epoch: the next batch is DISPOSED.
    const other = new DataLoader(folder, { batchSize: 4, workers: 1, size: 32 });
    const it = other.epoch(0);
    expect((await it.next()).done).toBe(false);
    await other.close();
    await expect(it.next()).rejects.toMatchObject({ code: 'DISPOSED' });
  });

  it('measureLoader reports a throughput', async () => {
    const t = await measureLoader(folder, { batchSize: 6, workers: 1, size: 32 }, { batches: 3, warmup: 1 });
    expect(t.images).toBe(18);
    expect(t.imagesPerSecond).toBeGreaterThan(0);
  });

  it('workers run from compiled JavaScript (tsc output) and match the main thread', async () => {
    // Compile the data modules into a folder under node_modules/.cache (so `sharp` resolves from the
    // repository), then run a loader with 2 workers in a fresh node process.
    const out = path.join(root, 'node_modules', '.cache', `facecuda-data-test-${process.pid}`);
    const files = ['loader', 'worker', 'folder', 'sources', 'image', 'augment', 'types'].map((f) => path.join(root, 'lib', 'data', `${f}.ts`));
    try {
      const tsc = spawnSync(process.execPath, [
        require.resolve('typescript/bin/tsc'), '--outDir', out, '--rootDir', path.join(root, 'lib'), '--module', 'commonjs', '--target', 'ES2022',
        '--esModuleInterop', '--skipLibCheck', '--strict', '--types', 'node', ...files,
      ], { encoding: 'utf8', cwd: root, timeout: 120_000 });
      expect(tsc.stdout + tsc.stderr).toBe('');
      const script = `
        const { DataLoader } = require(${JSON.stringify(path.join(out, 'data', 'loader.js'))});
        const { ImageFolder } = require(${JSON.stringify(path.join(out, 'data', 'folder.js'))});
        (async () => {
          const src = await ImageFolder.open(${JSON.stringify(dir)});
          const loader = new DataLoader(src, { batchSize: 5, workers: 2, seed: ${SEED}, size: 32, augment: ${JSON.stringify(augment)} });
          const out = [];
          for await (const b of loader.epoch(1)) out.push(b.indices.join(',') + '|' + Buffer.from(b.images.buffer, b.images.byteOffset, b.images.byteLength).toString('base64'));
          await loader.close();
          console.log(JSON.stringify(out));
        })().catch((e) => { console.error(e); process.exit(3); });`;
      const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', cwd: root, timeout: 120_000, maxBuffer: 1 << 28 });
      expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
      const fromDist = JSON.parse(r.stdout) as string[];
      const main = new DataLoader(folder, { batchSize: 5, workers: 0, seed: SEED, size: 32, augment });
      const here = (await collect(main.epoch(1))).map((b) => `${b.indices.join(',')}|${Buffer.from(b.images.buffer, b.images.byteOffset, b.images.byteLength).toString('base64')}`);
      expect(fromDist).toEqual(here);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });
});

// The other engineers' sources, when they exist in this tree.
const haveSynthetic = fs.existsSync(path.join(root, 'lib', 'data', 'synthetic.ts'));
(haveSynthetic ? describe : describe.skip)('DataLoader over SyntheticFaces', () => {
  it('renders, augments and normalizes the same batches in the main thread and in a worker', async () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { SyntheticFaces } = require('../../lib/data/synthetic') as { SyntheticFaces: new (o: Record<string, unknown>) => SampleSource };
    const src = new SyntheticFaces({ seed: SEED, identities: 3, samplesPerIdentity: 3 });
    const got: string[][] = [];
    for (const workers of [0, 1]) {
      const loader = new DataLoader(src, { batchSize: 4, workers, seed: SEED, augment: { flip: 0.5, erase: true } });
      try {
        const batches = await collect(loader.epoch(0));
        expect(batches.length).toBe(2);
        for (const b of batches) {
          expect(b.images.length).toBe(4 * 3 * 112 * 112);
          expect(b.images.every((v) => v >= -1 && v <= 1)).toBe(true);
          expect(Array.from(b.labels)).toEqual(Array.from(b.indices, (i) => Math.floor(i / 3)));
        }
        got.push(batches.map((b) => Buffer.from(b.images.buffer, b.images.byteOffset, b.images.byteLength).toString('base64')));
      } finally {
        await loader.close();
      }
    }
    expect(got[1]).toEqual(got[0]);
    await src.close();
  });
});

const haveRecordIO = fs.existsSync(path.join(root, 'lib', 'data', 'recordio.ts'));
(haveRecordIO ? describe : describe.skip)('DataLoader over RecordIO', () => {
  it('decodes a pack the same in the main thread and in a worker', async () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const rec = require('../../lib/data/recordio') as {
      packImages(prefix: string, samples: Iterable<{ label: number; encoded: Uint8Array }>): Promise<{ size: number; recPath: string }>;
      RecordIO: { open(p: string): Promise<SampleSource> };
    };
    const r = rng(SEED + 5);
    const samples: Array<{ label: number; encoded: Uint8Array }> = [];
    for (let i = 0; i < 8; i++) {
      const { data, raw } = noiseImage(24, 24, r);
      samples.push({ label: Math.floor(i / 4), encoded: new Uint8Array(await sharp(data, { raw }).jpeg().toBuffer()) });
    }
    const prefix = path.join(tmp, 'pack', 'train');
    fs.mkdirSync(path.dirname(prefix), { recursive: true });
    const { recPath } = await rec.packImages(prefix, samples);
    const src = await rec.RecordIO.open(recPath);
    expect(src.size).toBe(8);
    const got: string[][] = [];
    for (const workers of [0, 1]) {
      const loader = new DataLoader(src, { batchSize: 4, workers, seed: SEED, size: 24, augment: { flip: 0.5 } });
      try {
        const batches = await collect(loader.epoch(0));
        for (const b of batches) expect(Array.from(b.labels)).toEqual(Array.from(b.indices, (i) => Math.floor(i / 4)));
        got.push(batches.map((b) => Buffer.from(b.images.buffer, b.images.byteOffset, b.images.byteLength).toString('base64')));
      } finally {
        await loader.close();
      }
    }
    expect(got[1]).toEqual(got[0]);
    await src.close();
  });
});
