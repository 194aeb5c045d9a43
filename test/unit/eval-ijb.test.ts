// IJB-B/C 1:1 (SPEC §10.3): the meta readers, media-then-template aggregation in its four modes, pair
// scores and TAR@FAR against test/fixtures/gen_eval.py, through a tiny IJB layout written to a temp
// dir and a fake embedder; fresh random layouts against the reference when python3 with numpy runs.
import { execFileSync } from 'child_process';
import { promises as fsp } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { FacecudaError } from '../../lib/errors';
import { evaluateIjb, readIjbFaces, readIjbLandmarks, readIjbPairs, type IjbEmbedderLike, type IjbResult } from '../../lib/eval';
import { hasPython, rng, SEED } from '../helpers';

const GEN = path.join(__dirname, '..', 'fixtures', 'gen_eval.py');
const NUMPY = hasPython('numpy');

interface IjbReq {
  kind: 'ijb'; dim: number; names: string[]; templates: number[]; medias: number[]; faceness: string[];
  landmarks: number[][]; emb: string; norms: string; pairs: number[][];
}
const f32 = (b64: string): Float32Array => {
  const b = Buffer.from(b64, 'base64');
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
};
const b64 = (a: Float32Array): string => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');

let dir: string;
beforeAll(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'facecuda-ijb-'));
});
afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

/** Writes the IJB layout of a request; image files hold "img <row>". */
async function writeLayout(root: string, req: IjbReq, name = 'ijbc'): Promise<void> {
  await fsp.mkdir(path.join(root, 'meta'), { recursive: true });
  await fsp.mkdir(path.join(root, 'loose_crop'), { recursive: true });
  const n = req.names.length;
  await fsp.writeFile(path.join(root, 'meta', `${name}_face_tid_mid.txt`), req.names.map((f, i) => `${f} ${req.templates[i]} ${req.medias[i]}\n`).join(''));
  await fsp.writeFile(path.join(root, 'meta', `${name}_name_5pts_score.txt`), req.names.map((f, i) => `${f} ${req.landmarks[i].join(' ')} ${req.faceness[i]}\r\n`).join(''));
  await fsp.writeFile(path.join(root, 'meta', `${name}_template_pair_label.txt`), req.pairs.map((p) => `${p[0]} ${p[1]} ${p[2]}\n`).join(''));
  for (let i = 0; i < n; i++) await fsp.writeFile(path.join(root, 'loose_crop', req.names[i]), `img ${i}`);
}

/** A fake embedder returning the request's embeddings for the image with that row, checking landmarks. */
function fakeEmbedder(req: IjbReq, log: { flips: boolean[]; batches: number[] }): IjbEmbedderLike {
  const emb = f32(req.emb);
  const norms = f32(req.norms);
  const D = req.dim;
  return {
    async embedFaces(images, landmarks, { flip }) {
      log.flips.push(flip);
      log.batches.push(images.length);
      const n = images.length;
      if (landmarks.length !== n * 10) throw new Error('landmarks length');
      const e = new Float32Array(n * D);
      const nr = new Float32Array(n);
      images.forEach((im, i) => {
        const row = Number(Buffer.from(im).toString().split(' ')[1]);
        for (let j = 0; j < 10; j++) if (landmarks[i * 10 + j] !== Math.fround(req.landmarks[row][j])) throw new Error(`landmark ${row},${j}`);
        e.set(emb.subarray(row * D, (row + 1) * D), i * D);
        nr[i] = norms[row];
      });
      return { embeddings: e, norms: nr, dim: D };
    },
  };
}

function compare(got: IjbResult, want: any, where: string): void {
  expect(got.scores.length).toBe(want.scores.length);
  want.scores.forEach((s: number, i: number) => {
    if (!(Math.abs(got.scores[i] - s) <= 1e-12)) throw new Error(`${where} score ${i}: ${got.scores[i]} vs ${s}`);
  });
  for (const [k, w] of Object.entries<Record<string, number | null>>(want.tarAtFar)) {
    for (const [f, v] of Object.entries(w)) {
      const g = (got.tarAtFar as any)[k][f];
      if (v === null ? Number.isFinite(g) : !(Math.abs(g - v) <= 1e-9 * Math.max(1, Math.abs(v)))) throw new Error(`${where} tarAtFar ${k}.${f}: ${g} vs ${v}`);
    }
  }
  expect(got.roc.fpr.length).toBe(want.roc.fpr.length);
  expect(got.auc).toBeCloseTo(want.auc, 12);
  if (want.eer !== null) expect(got.eer).toBeCloseTo(want.eer, 12);
}

async function runAllModes(req: IjbReq, expected: any, root: string): Promise<void> {
  await writeLayout(root, req);
  for (const useNormScore of [true, false]) {
    for (const useDetectorScore of [true, false]) {
      const log = { flips: [] as boolean[], batches: [] as number[] };
      const got = await evaluateIjb({ embedder: fakeEmbedder(req, log), root, name: 'IJBC', batchSize: 5, useNormScore, useDetectorScore });
      expect(log.flips.every((f) => f)).toBe(true);
      expect(log.batches.reduce((a, b) => a + b)).toBe(req.names.length);
      expect(got.images).toBe(req.names.length);
      compare(got, expected[`norm${+useNormScore}_det${+useDetectorScore}`], `norm${+useNormScore} det${+useDetectorScore}`);
    }
  }
}

describe('evaluateIjb vs gen_eval.py', () => {
  test('ijb.json: 12 templates of 4 subjects, medias of 1-3 images, rows shuffled, all four modes', async () => {
    const { request, expected } = JSON.parse(await fsp.readFile(path.join(__dirname, '..', 'fixtures', 'eval', 'ijb.json'), 'utf8'));
    await runAllModes(request, expected, path.join(dir, 'fixture'));
    // The modes differ (the options are not ignored).
    expect(expected.norm1_det1.scores).not.toEqual(expected.norm0_det0.scores);
  });

  (NUMPY ? test : test.skip)('fresh random layouts', async () => {
    const r = rng(SEED ^ 0x1cb);
    console.log(`eval-ijb fresh-data seed ${SEED}`);
    const D = 3 + Math.floor(r() * 20);
    const n = 30 + Math.floor(r() * 60);
    const T = 5 + Math.floor(r() * 10);
    const templates = Array.from({ length: n }, (_, i) => 1 + (i < T ? i : Math.floor(r() * T)) * 3);
    const medias = Array.from({ length: n }, () => 900 + Math.floor(r() * 12));
    const emb = new Float32Array(n * D);
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let d = 0; d < D; d++) {
        const v = Math.sin(templates[i] * (d + 1)) + 0.7 * (r() - 0.5);
        emb[i * D + d] = v;
        s += v * v;
      }
      for (let d = 0; d < D; d++) emb[i * D + d] /= Math.sqrt(s);
    }
    const norms = Float32Array.from({ length: n }, () => 1 + 30 * r());
    const tids = [...new Set(templates)];
    const pairs: number[][] = [];
    for (let a = 0; a < tids.length; a++) for (let b = a + 1; b < tids.length; b++) pairs.push([tids[a], tids[b], r() < 0.3 ? 1 : 0]);
    const req: IjbReq = {
      kind: 'ijb', dim: D, names: Array.from({ length: n }, (_, i) => `${i + 1}.jpg`), templates, medias,
      faceness: Array.from({ length: n }, () => (0.3 + 0.7 * r()).toFixed(5)),
      landmarks: Array.from({ length: n }, () => Array.from({ length: 10 }, () => Math.round(r() * 11200) / 100)),
      emb: b64(emb), norms: b64(norms), pairs,
    };
    const want = JSON.parse(execFileSync('python3', [GEN, '--stdin'], { input: JSON.stringify(req), maxBuffer: 1 << 28 }).toString());
    await runAllModes(req, want, path.join(dir, 'fresh'));
  });
});

describe('IJB meta readers and errors', () => {
  test('readers parse the three layouts; malformed lines are CORRUPT_FILE naming file and line', async () => {
    const d = path.join(dir, 'readers');
    await fsp.mkdir(d, { recursive: true });
    const f = (name: string, text: string): Promise<string> => fsp.writeFile(path.join(d, name), text).then(() => path.join(d, name));
    const faces = await readIjbFaces(await f('a.txt', '1.jpg 1 69544\n2.jpg 1 69545\n\n'));
    expect(faces.names).toEqual(['1.jpg', '2.jpg']);
    expect(Array.from(faces.medias)).toEqual([69544, 69545]);
    const pairs = await readIjbPairs(await f('p.txt', '1 11065 1\r\n1 11066 0\n2 3 1'));
    expect(Array.from(pairs.t2)).toEqual([11065, 11066, 3]);
    expect(Array.from(pairs.labels)).toEqual([1, 0, 1]);
    const lm = await readIjbLandmarks(await f('l.txt', '1.jpg 1 2 3 4 5 6 7 8 9 10.5 0.99\n'));
    expect(Array.from(lm.landmarks)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10.5]);
    expect(lm.faceness[0]).toBe(0.99);
    const bad: [() => Promise<unknown>, RegExp][] = [
      [async () => readIjbPairs(await f('p1.txt', '1 2 1\n1 2\n')), /p1.txt' line 2: 2 fields/],
      [async () => readIjbPairs(await f('p2.txt', '1 2 1\n1 x 0\n')), /p2.txt' line 2: template 2 'x'/],
      [async () => readIjbPairs(await f('p3.txt', '1 2 3\n')), /line 1: the label 3/],
      [async () => readIjbPairs(await f('p4.txt', '1 99999999999 1\n')), /line 1/],
      [async () => readIjbFaces(await f('a1.txt', '1.jpg 1\n')), /a1.txt' line 1: 2 fields/],
      [async () => readIjbLandmarks(await f('l1.txt', '1.jpg 1 2 3 4 5 6 7 8 9 nan 0.9\n')), /line 1: landmark coordinate 10/],
    ];
    for (const [fn, re] of bad) {
      const e = await fn().then(() => null, (x) => x);
      expect(e).toBeInstanceOf(FacecudaError);
      expect((e as FacecudaError).code).toBe('CORRUPT_FILE');
      expect(String(e.message)).toMatch(re);
    }
    await expect(readIjbFaces(path.join(d, 'missing.txt'))).rejects.toMatchObject({ code: 'IO_ERROR' });
  });

  test('evaluateIjb: mismatched meta files, unknown templates, missing images, bad options', async () => {
    const root = path.join(dir, 'bad');
    const req: IjbReq = {
      kind: 'ijb', dim: 2, names: ['1.jpg', '2.jpg'], templates: [1, 2], medias: [5, 6], faceness: ['0.9', '0.8'],
      landmarks: [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]],
      emb: b64(Float32Array.of(1, 0, 0, 1)), norms: b64(Float32Array.of(2, 3)), pairs: [[1, 2, 0], [1, 1, 1]],
    };
    await writeLayout(root, req);
    const embedder = fakeEmbedder(req, { flips: [], batches: [] });
    const ok = await evaluateIjb({ embedder, root, name: 'IJBC', flip: false });
    expect(Array.from(ok.scores)).toEqual([0, 1]);
    await fsp.writeFile(path.join(root, 'meta', 'ijbc_template_pair_label.txt'), '1 7 1\n');
    await expect(evaluateIjb({ embedder, root, name: 'IJBC' })).rejects.toThrow(/template 7, which has no images/);
    await writeLayout(root, { ...req, names: ['1.jpg', '3.jpg'] });
    await fsp.writeFile(path.join(root, 'meta', 'ijbc_face_tid_mid.txt'), '1.jpg 1 5\n2.jpg 2 6\n');
    await expect(evaluateIjb({ embedder, root, name: 'IJBC' })).rejects.toThrow(/'3.jpg' where/);
    await writeLayout(root, req);
    await fsp.rm(path.join(root, 'loose_crop', '2.jpg'));
    await expect(evaluateIjb({ embedder, root, name: 'IJBC' })).rejects.toMatchObject({ code: 'IO_ERROR' });
    await expect(evaluateIjb({ embedder, root, name: 'IJBA' as 'IJBC' })).rejects.toThrow(/options.name/);
    await expect(evaluateIjb({ embedder: {} as IjbEmbedderLike, root, name: 'IJBC' })).rejects.toThrow(/options.embedder/);
    await expect(evaluateIjb({ embedder, root, name: 'IJBC', useDetectorScores: true } as never)).rejects.toThrow(/useDetectorScore/);
  });
});
