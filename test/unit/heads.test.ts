import * as fs from 'fs';
import * as path from 'path';

import {
  AdaFaceHead, ArcFaceHead, CenterLoss, CombinedMarginHead, combineShardStats, CosFaceHead, ElasticFaceHead, FacecudaError,
  MarginHead, NormFaceHead, SoftmaxHead, SphereFaceHead, Tensor,
} from '../../lib';
import { randomFloats, rng, SEED } from '../helpers';

interface FixtureCase {
  name: string;
  head: 'NormFaceHead' | 'CosFaceHead' | 'ArcFaceHead' | 'CombinedMarginHead';
  options: Record<string, unknown>;
  B: number;
  C: number;
  D: number;
  x: number[];
  w: number[];
  labels: number[];
  loss: number;
  gradX: number[];
  gradW: number[];
}

/** One training step of a version-2 case (the top level of a case is its step 0). */
interface FixtureStep {
  x: number[];
  labels: number[];
  loss: number;
  gradX: number[];
  gradW?: number[];
  gradBias?: number[];
  margins?: number[];
  sampled?: number[];
  state?: Record<string, number>;
}

interface FixtureShard {
  classStart: number;
  numLocalClasses: number;
  rowMax: number[];
  rowSumExp: number[];
  targetLogit: (number | null)[];
  gradX: number[];
  gradW: number[];
}

/** A version-2 case (`extendedCases`): any head, optionally several steps, shards or a center loss. */
interface ExtendedCase extends FixtureStep {
  name: string;
  head: string;
  options: Record<string, unknown>;
  note?: string;
  B: number;
  C: number;
  D: number;
  K?: number;
  w?: number[];
  bias?: number[];
  steps?: FixtureStep[];
  shards?: FixtureShard[];
  centers?: number[];
  centersAfter?: number[];
}

const fixturePath = path.resolve(__dirname, '..', 'fixtures', 'heads.json');
const fixtures: { cases: FixtureCase[]; extendedCases?: ExtendedCase[] } | null = fs.existsSync(fixturePath)
  ? JSON.parse(fs.readFileSync(fixturePath, 'utf8'))
  : null;

const HEADS: Record<string, new (o: never) => MarginHead> = {
  SoftmaxHead, NormFaceHead, SphereFaceHead, CosFaceHead, ArcFaceHead, CombinedMarginHead, AdaFaceHead, ElasticFaceHead,
};

function makeHead(kind: string, options: Record<string, unknown>): MarginHead {
  const Ctor = HEADS[kind];
  if (!Ctor) throw new Error(`unknown head ${kind}`);
  return new Ctor({ device: 'cpu', ...options } as never);
}

// fp32 cosines carry ~1e-7 relative error; the scale s (≤ 64) multiplies it inside the exponentials,
// so probabilities and gradients are good to about 64·1e-7·(a few) relative to their largest entry.
// 2e-4 of the largest magnitude leaves a margin of ~10 and still catches any formula error (≥ 1e-2).
function expectClose(got: ArrayLike<number>, want: readonly number[], what: string, tol = 2e-4): void {
  expect(got.length).toBe(want.length);
  const scale = Math.max(1e-30, ...want.map(Math.abs));
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]) / scale);
  if (!(worst <= tol)) throw new Error(`${what}: max error ${worst} of the largest magnitude ${scale}`);
}

// Loss: float32 logits of magnitude ≤ 64 carry ~1e-5 absolute error; 1e-4 relative (at least 1e-4
// absolute) is 10× that and far below any formula error.
function expectLoss(got: number, want: number, what = 'loss'): void {
  if (!(Math.abs(got - want) <= 1e-4 * Math.max(1, Math.abs(want)))) throw new Error(`${what}: ${got} vs ${want}`);
}

async function values(t: Tensor): Promise<Float32Array> {
  return (await t.toArray()) as Float32Array;
}

(fixtures ? describe : describe.skip)('heads match the independent float64 reference (test/fixtures/heads.json)', () => {
  for (const c of fixtures?.cases ?? []) {
    for (const maxChunkBytes of [undefined, 4 * c.B * 2]) {
      it(`${c.name}${maxChunkBytes ? ' (chunked, 2 classes per chunk)' : ''}`, async () => {
        const head = makeHead(c.head, { embeddingSize: c.D, numClasses: c.C, ...c.options, ...(maxChunkBytes ? { maxChunkBytes } : {}) });
        await head.setWeight(Float32Array.from(c.w));
        const { loss } = await head.forward(Float32Array.from(c.x), Int32Array.from(c.labels));
        expect(Math.abs(loss - c.loss)).toBeLessThanOrEqual(1e-4 * Math.max(1, Math.abs(c.loss)));
        const { gradEmbeddings, gradWeight } = await head.backward();
        expect(gradEmbeddings.shape).toEqual([c.B, c.D]);
        expect(gradWeight.shape).toEqual([c.C, c.D]);
        expectClose((await gradEmbeddings.toArray()) as Float32Array, c.gradX, 'gradEmbeddings');
        expectClose((await gradWeight.toArray()) as Float32Array, c.gradW, 'gradWeight');
        if (maxChunkBytes) expect(head.lastChunkBytes()).toBeLessThanOrEqual(maxChunkBytes);
        head.dispose();
      });
    }
  }
});

/** Runs the steps of an extended case on one head (state carries over; W stays as set). */
async function runSteps(head: MarginHead, c: ExtendedCase, rows: number): Promise<void> {
  await head.setWeight(Float32Array.from(c.w ?? []));
  if (c.bias) await (head as SoftmaxHead).setBias(Float32Array.from(c.bias));
  const steps: FixtureStep[] = c.steps ?? [c];
  for (const [t, st] of steps.entries()) {
    const at = steps.length > 1 ? ` (step ${t})` : '';
    const r = await head.forward(Float32Array.from(st.x), Int32Array.from(st.labels));
    expectLoss(r.loss, st.loss, `loss${at}`);
    if (st.margins) expectClose(await (head as ElasticFaceHead).lastMargins(), st.margins, `margins${at}`, 1e-12);
    if (st.sampled) expect(Array.from(await head.sampledClasses())).toEqual(st.sampled);
    if (st.state) {
      const s = (await head.state()) as unknown as Record<string, number>;
      for (const [k, v] of Object.entries(st.state)) {
        // The EMA statistics average feature norms computed from float32 data: 1e-6 relative.
        if (!(Math.abs(s[k] - v) <= 1e-6 * Math.max(1, Math.abs(v)))) throw new Error(`state.${k}${at}: ${s[k]} vs ${v}`);
      }
    }
    const g = await head.backward();
    expect(g.gradEmbeddings.shape).toEqual([st.labels.length, c.D]);
    expect(g.gradWeight.shape).toEqual([rows, c.D]);
    expectClose(await values(g.gradEmbeddings), st.gradX, `gradEmbeddings${at}`);
    if (st.gradW) expectClose(await values(g.gradWeight), st.gradW, `gradWeight${at}`);
    if (st.gradBias) expectClose(await values(g.gradBias!), st.gradBias, `gradBias${at}`);
  }
}

async function runShards(c: ExtendedCase): Promise<void> {
  const K = c.K ?? 1;
  const x = Float32Array.from(c.x);
  const labels = Int32Array.from(c.labels);
  const heads = c.shards!.map((sh) =>
    makeHead(c.head, { embeddingSize: c.D, numClasses: c.C, ...c.options, classStart: sh.classStart, numLocalClasses: sh.numLocalClasses }),
  );
  const stats = [];
  for (const [r, sh] of c.shards!.entries()) {
    const rows = sh.numLocalClasses * K;
    await heads[r].setWeight(Float32Array.from(c.w!.slice(sh.classStart * K * c.D, sh.classStart * K * c.D + rows * c.D)));
    const f = await heads[r].forward(x, labels);
    expect(Number.isNaN(f.loss)).toBe(true);
    for (let i = 0; i < c.B; i++) {
      // Logits ≤ 64 in float32: rowMax to 1e-4 absolute; Σexp relative 1e-3 (exponentials amplify 1e-5).
      expect(Math.abs(f.rowMax[i] - sh.rowMax[i])).toBeLessThanOrEqual(1e-4 * Math.max(1, Math.abs(sh.rowMax[i])));
      expect(Math.abs(f.rowSumExp[i] - sh.rowSumExp[i])).toBeLessThanOrEqual(1e-3 * sh.rowSumExp[i]);
      const tl = sh.targetLogit[i];
      if (tl === null) expect(Number.isNaN(f.targetLogit[i])).toBe(true);
      else expect(Math.abs(f.targetLogit[i] - tl)).toBeLessThanOrEqual(1e-4 * Math.max(1, Math.abs(tl)));
    }
    stats.push(f);
  }
  const global = combineShardStats(stats);
  expectLoss(global.loss, c.loss, 'combined loss');
  const sumX = new Float64Array(c.B * c.D);
  const catW: number[] = [];
  for (const [r, sh] of c.shards!.entries()) {
    const g = await heads[r].backward({ rowMax: global.rowMax, rowSumExp: global.rowSumExp });
    const gx = await values(g.gradEmbeddings);
    const gw = await values(g.gradWeight);
    expectClose(gx, sh.gradX, `shard ${r} gradEmbeddings`);
    expectClose(gw, sh.gradW, `shard ${r} gradWeight`);
    gx.forEach((v, i) => (sumX[i] += v));
    catW.push(...gw);
    heads[r].dispose();
  }
  expectClose(sumX, c.gradX, 'Σ shards gradEmbeddings');
  expectClose(catW, c.gradW!, 'concatenated gradWeight');
}

async function runCenterLoss(c: ExtendedCase): Promise<void> {
  const center = new CenterLoss({ embeddingSize: c.D, numClasses: c.C, device: 'cpu', ...(c.options as object) } as never);
  await center.setCenters(Float32Array.from(c.centers!));
  const { loss } = await center.forward(Float32Array.from(c.x), Int32Array.from(c.labels));
  // A sum of squares of float32 differences: 1e-5 relative.
  expect(Math.abs(loss - c.loss)).toBeLessThanOrEqual(1e-5 * Math.abs(c.loss));
  const { gradEmbeddings } = await center.backward();
  expectClose(await values(gradEmbeddings), c.gradX, 'gradEmbeddings', 1e-5);
  if (c.centersAfter) expectClose(await center.getCenters(), c.centersAfter, 'centers after the update', 1e-5);
  center.dispose();
}

(fixtures?.extendedCases ? describe : describe.skip)('extended heads match the float64 reference (extendedCases)', () => {
  for (const c of fixtures?.extendedCases ?? []) {
    const known = c.head === 'CenterLoss' || c.head in HEADS;
    if (!known) {
      it.skip(`${c.name}: skipped, unknown head '${c.head}' in the fixture file`, () => undefined);
      continue;
    }
    const label = `${c.head} ${c.name}`;
    if (c.head === 'CenterLoss') {
      it(label, () => runCenterLoss(c));
      continue;
    }
    const K = c.K ?? ((c.options.subCenters as number | undefined) ?? 1);
    const chunked = [undefined, 4 * c.B * 2 * (K > 1 ? 2 + K : 1)];
    for (const maxChunkBytes of chunked) {
      it(`${label}${maxChunkBytes ? ' (chunked)' : ''}`, async () => {
        const head = makeHead(c.head, { embeddingSize: c.D, numClasses: c.C, ...c.options, ...(maxChunkBytes ? { maxChunkBytes } : {}) });
        await runSteps(head, c, c.C * K);
        if (maxChunkBytes) expect(head.lastChunkBytes()).toBeLessThanOrEqual(maxChunkBytes);
        head.dispose();
      });
    }
    if (c.shards) it(`${label}: sharded`, () => runShards(c));
  }
});

describe('head API', () => {
  const r = rng(SEED ^ 0xa5a5);
  beforeAll(() => console.log(`heads tests: seed ${SEED}`));

  it('initializes weights N(0, 0.01) deterministically from the seed', async () => {
    const a = new ArcFaceHead({ embeddingSize: 64, numClasses: 500, device: 'cpu', seed: 7 });
    const b = new ArcFaceHead({ embeddingSize: 64, numClasses: 500, device: 'cpu', seed: 7 });
    const c = new ArcFaceHead({ embeddingSize: 64, numClasses: 500, device: 'cpu', seed: 8 });
    const wa = await a.getWeight();
    expect(wa.length).toBe(500 * 64);
    expect(await b.getWeight()).toEqual(wa);
    expect(await c.getWeight()).not.toEqual(wa);
    let s = 0;
    let s2 = 0;
    for (const v of wa) {
      s += v;
      s2 += v * v;
    }
    const mean = s / wa.length;
    const std = Math.sqrt(s2 / wa.length - mean * mean);
    // 32000 draws: the sample mean is within ~4 standard errors (4·0.01/√32000 ≈ 2.2e-4) of 0.
    expect(Math.abs(mean)).toBeLessThan(2.5e-4);
    expect(Math.abs(std - 0.01)).toBeLessThan(3e-4);
  });

  it('setWeight / getWeight round-trip; logits are s·cos without margin', async () => {
    const [B, C, D] = [3, 7, 5];
    const head = new CosFaceHead({ embeddingSize: D, numClasses: C, device: 'cpu', scale: 30 });
    const w = randomFloats(C * D, r);
    await head.setWeight(w);
    expect(await head.getWeight()).toEqual(w);
    const x = randomFloats(B * D, r);
    const z = (await (await head.logits(x)).toArray()) as Float32Array;
    const norm = (v: Float32Array, i: number): number => Math.hypot(...v.subarray(i * D, i * D + D));
    for (let i = 0; i < B; i++) {
      for (let j = 0; j < C; j++) {
        let dot = 0;
        for (let k = 0; k < D; k++) dot += x[i * D + k] * w[j * D + k];
        expect(z[i * C + j]).toBeCloseTo((30 * dot) / (norm(x, i) * norm(w, j)), 4);
      }
    }
  });

  it('a step along -grad lowers the loss (gradients point the right way)', async () => {
    const [B, C, D] = [16, 40, 24];
    const head = new ArcFaceHead({ embeddingSize: D, numClasses: C, device: 'cpu', scale: 16, margin: 0.3 });
    await head.setWeight(randomFloats(C * D, r));
    const x = randomFloats(B * D, r);
    const labels = Int32Array.from({ length: B }, () => Math.floor(r() * C));
    const { loss: l0 } = await head.forward(x, labels);
    const { gradEmbeddings } = await head.backward();
    const g = (await gradEmbeddings.toArray()) as Float32Array;
    const x1 = x.map((v, i) => v - 0.05 * g[i]);
    const { loss: l1 } = await head.forward(x1, labels);
    expect(l1).toBeLessThan(l0);
  });

  it('rejects bad options with the standard messages', () => {
    expect(() => new ArcFaceHead({ embeddingSize: 8, numClasses: 10, device: 'cpu', s: 64 } as never)).toThrow(
      /'scale' \(the paper's 's' is spelled out in facecuda\)/,
    );
    expect(() => new ArcFaceHead({ embeddingSize: 8, numClasses: 1, device: 'cpu' })).toThrow(RangeError);
    expect(() => new ArcFaceHead({ embeddingSize: 0, numClasses: 10, device: 'cpu' })).toThrow(
      /^Expected an integer between 1 and 65536 for embeddingSize but received 0 of type number$/,
    );
    expect(() => new CosFaceHead({ embeddingSize: 8, numClasses: 10, device: 'cpu', margin: -0.1 })).toThrow(RangeError);
    expect(() => new ArcFaceHead({ embeddingSize: 8, numClasses: 10, device: 'cpu', gradient: 'approx' as 'exact' })).toThrow(TypeError);
    expect(() => new ArcFaceHead({ embeddingSize: 8, numClasses: 10, device: 'cpu', scale: NaN })).toThrow(TypeError);
    expect(() => new NormFaceHead({ numClasses: 10, device: 'cpu' } as never)).toThrow(/for embeddingSize/);
  });

  it('rejects bad inputs with codes, never a crash', async () => {
    const [C, D] = [10, 4];
    const head = new NormFaceHead({ embeddingSize: D, numClasses: C, device: 'cpu' });
    const x = randomFloats(2 * D, r);
    await expect(head.forward(x, [1])).rejects.toMatchObject({ code: 'SHAPE_MISMATCH', message: 'labels length 1 does not match batch 2' });
    await expect(head.forward(x, [1, 10])).rejects.toThrow(/^Expected an integer in \[0, 10\) for labels\[1\] but received 10 of type number$/);
    await expect(head.forward(x, [1, -1])).rejects.toMatchObject({ code: 'OUT_OF_RANGE' });
    await expect(head.forward(x, [1, 2.5])).rejects.toThrow(TypeError);
    await expect(head.forward(randomFloats(2 * D + 1, r), [1, 2])).rejects.toMatchObject({ code: 'SHAPE_MISMATCH' });
    await expect(head.forward(new Float32Array(0), [])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    const bad = x.slice();
    bad[5] = NaN;
    await expect(head.forward(bad, [1, 2])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    bad[5] = Infinity;
    await expect(head.forward(bad, [1, 2])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    const w = randomFloats(C * D, r);
    w[7] = NaN;
    await head.setWeight(w);
    await expect(head.forward(x, [1, 2])).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(head.setWeight(randomFloats(C * D - 1, r))).rejects.toMatchObject({ code: 'SHAPE_MISMATCH' });
    const fresh = new NormFaceHead({ embeddingSize: D, numClasses: C, device: 'cpu' });
    await expect(fresh.backward()).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    const t = Tensor.from(x, [2, D], { device: 'cpu' });
    t.dispose();
    await expect(fresh.forward(t, [1, 2])).rejects.toMatchObject({ code: 'DISPOSED' });
    fresh.dispose();
    await expect(fresh.forward(x, [1, 2])).rejects.toMatchObject({ code: 'DISPOSED' });
  });

  it('an explicit CUDA device never falls back', () => {
    let err: unknown;
    let head: ArcFaceHead | undefined;
    try {
      head = new ArcFaceHead({ embeddingSize: 8, numClasses: 10, device: 'cuda' });
    } catch (e) {
      err = e;
    }
    if (head) {
      expect(head.device).toBe('cuda:0'); // a GPU machine
      head.dispose();
      return;
    }
    expect(err).toBeInstanceOf(FacecudaError);
    expect((err as FacecudaError).code).toBe('CUDA_UNAVAILABLE');
  });
});
