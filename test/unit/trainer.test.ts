// The training loop on the CPU: a short run lowers the loss and raises held-out verification; a
// resumed run reproduces the uninterrupted one bit for bit; non-finite steps never reach the weights
// and a run that keeps diverging stops with a diagnosis; a checkpoint write killed mid-way leaves the
// previous checkpoint intact; the config parser names unknown fields.
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { IResNet } from '../../lib/backbones/model';
import { verifier } from '../../lib/data/baseline';
import { DataLoader } from '../../lib/data/loader';
import type { RawImage, Sample, SampleSource } from '../../lib/data/types';
import { ArcFaceHead } from '../../lib/heads';
import { clipGradNorm, headParams, paramGroups, SGD } from '../../lib/optim';
import { PolyWarmupLR } from '../../lib/schedule';
import { readCheckpoint, writeCheckpoint } from '../../lib/train/checkpoint';
import { resolveConfig } from '../../lib/train/config';
import { LoaderLike, Trainer } from '../../lib/train/trainer';
import { Tensor } from '../../lib/tensor';
import { SEED, rng } from '../helpers';

const SIZE = 32;
const CLASSES = 6;

/** Class c: a fixed random template plus per-sample noise (learnable, not trivial at init). */
class Blobs implements SampleSource {
  readonly size: number;
  readonly numClasses = CLASSES;
  readonly #templates: Uint8Array[];
  constructor(readonly perClass: number, readonly seed: number, first = 0) {
    this.size = CLASSES * perClass;
    this.#templates = Array.from({ length: CLASSES }, (_, c) => {
      const r = rng(seed * 101 + c + first * 7919);
      return Uint8Array.from({ length: SIZE * SIZE * 3 }, () => Math.floor(256 * r()));
    });
  }
  image(c: number, j: number): RawImage {
    // Nuisance the network has to learn to ignore: per-sample brightness, contrast and a colour cast,
    // plus pixel noise (an untrained network's features are dominated by them).
    const r = rng(this.seed * 7 + c * 1000 + j);
    const t = this.#templates[c];
    const gain = 0.5 + r();
    const shift = [0, 1, 2].map(() => 140 * (r() - 0.5));
    const data = Uint8Array.from(t, (v, i) => Math.max(0, Math.min(255, (v - 128) * gain + 128 + shift[i % 3] + Math.round(90 * (r() - 0.5)))));
    return { width: SIZE, height: SIZE, channels: 3, data };
  }
  async get(i: number): Promise<Sample> {
    return { label: i % CLASSES, pixels: this.image(i % CLASSES, Math.floor(i / CLASSES)) };
  }
  describe(): never {
    throw new Error('in-process only');
  }
  async close(): Promise<void> {}
}

async function setup(seed = 3) {
  const model = IResNet.create('r18', { baseWidth: 4, inputSize: SIZE, embeddingSize: 16, seed });
  const head = new ArcFaceHead({ embeddingSize: 16, numClasses: CLASSES, seed, scale: 16, margin: 0.2, device: 'cpu' });
  const params = await model.parameters();
  const hp = await head.parameters();
  const optimizer = new SGD([...paramGroups(params), { params: headParams(hp) }], { lr: 0.05, momentum: 0.9, weightDecay: 5e-4 });
  const loader = new DataLoader(new Blobs(8, 11), { batchSize: 12, seed: 5, workers: 0, size: SIZE, augment: { flip: 0.5 } });
  const schedule = new PolyWarmupLR({ base: 0.05, totalSteps: 40, warmupSteps: 4 });
  const dispose = async () => {
    for (const p of params) {
      p.value.dispose();
      p.grad?.dispose();
    }
    await loader.close();
    model.dispose();
    head.dispose();
  };
  return { model, head, params, optimizer, loader, schedule, dispose };
}

let tmp: string;
beforeAll(() => {
  console.log(`trainer tests: seed ${SEED}`);
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'facecuda-trainer-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('Trainer', () => {
  test('a short run lowers the loss and raises verification on held-out samples', async () => {
    const s = await setup();
    // Held-out samples of the same classes (new noise): pairs of same / different class.
    const held = new Blobs(8, 11);
    const images: RawImage[] = [];
    const issame: boolean[] = [];
    const r = rng(SEED);
    for (let k = 0; k < 60; k++) {
      const a = Math.floor(r() * CLASSES);
      const same = k % 2 === 0;
      const b = same ? a : (a + 1 + Math.floor(r() * (CLASSES - 1))) % CLASSES;
      images.push(held.image(a, 100 + k), held.image(b, 200 + k));
      issame.push(same);
    }
    const trainer = new Trainer({
      model: s.model, head: s.head, optimizer: s.optimizer, schedule: s.schedule, data: s.loader, verifier,
      validation: [{ name: 'held', images, issame }], clipGradients: () => clipGradNorm(s.params, 5), progress: false,
    });
    const before = (await trainer.verify()).held.accuracy;
    const losses: number[] = [];
    trainer.on('step', (st) => losses.push(st.loss));
    const res = await trainer.fit({ epochs: 10 });
    console.log(`held-out verification ${before} → ${res.verification.held.accuracy}`);
    expect(res.stopped).toBe('done');
    expect(res.iterations).toBe(40);
    const first = losses.slice(0, 4).reduce((a, b) => a + b) / 4;
    const last = losses.slice(-4).reduce((a, b) => a + b) / 4;
    expect(last).toBeLessThan(0.6 * first);
    expect(res.verification.held.accuracy).toBeGreaterThan(before);
    expect(res.verification.held.accuracy).toBeGreaterThan(0.9);
    await s.dispose();
  }, 120_000);

  test('resume from a checkpoint reproduces the uninterrupted run exactly (CPU)', async () => {
    const a = await setup();
    const fileA = path.join(tmp, 'run-a.safetensors');
    const file = path.join(tmp, 'ck6.safetensors');
    const ta = new Trainer({
      model: a.model, head: a.head, optimizer: a.optimizer, schedule: a.schedule, data: a.loader, progress: false,
      clipGradients: () => clipGradNorm(a.params, 5), checkpoint: { path: fileA, every: 6 },
    });
    const lossesA: number[] = [];
    ta.on('step', (st) => lossesA.push(st.loss));
    // Iteration 6 is in the middle of epoch 1 (4 batches per epoch): the data position matters too.
    ta.on('checkpoint', ({ iteration }) => {
      if (iteration === 6) fs.copyFileSync(fileA, file);
    });
    await ta.fit({ epochs: 3 });
    expect(lossesA.length).toBe(12);
    // A fresh set of objects (another init seed: everything must come from the checkpoint).
    const b = await setup(99);
    const tb = new Trainer({ model: b.model, head: b.head, optimizer: b.optimizer, schedule: b.schedule, data: b.loader, progress: false, clipGradients: () => clipGradNorm(b.params, 5) });
    await tb.load(file);
    expect(tb.iteration).toBe(6);
    const lossesB: number[] = [];
    tb.on('step', (st) => lossesB.push(st.loss));
    await tb.fit({ epochs: 3 }); // to iteration 12
    expect(lossesB).toEqual(lossesA.slice(6, 12));
    await a.dispose();
    await b.dispose();
  }, 120_000);

  test('non-finite losses are skipped without touching the weights; repeated ones stop the run with a diagnosis', async () => {
    const s = await setup();
    const good = s.loader;
    let poison = false;
    const data: LoaderLike = {
      batchesPerEpoch: good.batchesPerEpoch,
      startAt: (e, b) => good.startAt(e, b),
      async *epoch(e: number) {
        for await (const batch of good.epoch(e)) {
          yield poison ? { ...batch, images: batch.images.map((v, i) => (i === 7 ? NaN : v)) } : batch;
        }
      },
    };
    const file = path.join(tmp, 'diverged.safetensors');
    const trainer = new Trainer({ model: s.model, head: s.head, optimizer: s.optimizer, schedule: s.schedule, data, progress: false, maxConsecutiveSkips: 3, checkpoint: { path: file } });
    await trainer.fit({ epochs: 1 });
    const before = (await s.model.getParameter('conv1.weight')) as Float32Array;
    poison = true;
    const skips: string[] = [];
    trainer.on('skip', (st) => skips.push(st.reason ?? ''));
    const res = await trainer.fit({ epochs: 5 });
    expect(res.stopped).toBe('diverged');
    expect(skips.length).toBe(3);
    expect(res.diagnosis).toMatch(/3 consecutive steps skipped/);
    expect(res.diagnosis).toMatch(/NaN\/Inf pixels/);
    const after = (await s.model.getParameter('conv1.weight')) as Float32Array;
    expect(Buffer.from(after.buffer).equals(Buffer.from(before.buffer))).toBe(true);
    const ck = await readCheckpoint(file);
    expect(ck.meta.consecutiveSkips).toBe(3);
    ck.dispose();
    await s.dispose();
  }, 120_000);

  test('a checkpoint write killed mid-way leaves the previous checkpoint intact', async () => {
    const file = path.join(tmp, 'atomic.safetensors');
    const small = new Map([['w', Tensor.from(Float32Array.of(1, 2, 3), [3])]]);
    await writeCheckpoint(file, { model: small, head: new Map(), optimizerState: { step: 1 }, meta: { iteration: 1, epoch: 0, batchInEpoch: 1, consecutiveSkips: 0, best: {}, modelStep: 1, headState: { step: 1 } } });
    const before = fs.readFileSync(file);
    // A child writes a large checkpoint to the same path; it is killed once its temporary file exists.
    const script = `
      const { writeCheckpoint } = require(${JSON.stringify(path.resolve(__dirname, '../../dist/train/checkpoint.js'))});
      const { Tensor } = require(${JSON.stringify(path.resolve(__dirname, '../../dist/tensor.js'))});
      const big = new Map();
      for (let i = 0; i < 64; i++) big.set('w' + i, Tensor.from(new Float32Array(1 << 22), [1 << 22]));
      writeCheckpoint(process.argv[1], { model: big, head: new Map(), optimizerState: {}, meta: { iteration: 2, epoch: 0, batchInEpoch: 2, consecutiveSkips: 0, best: {}, modelStep: 2, headState: { step: 2 } } });
    `;
    if (!fs.existsSync(path.resolve(__dirname, '../../dist/train/checkpoint.js'))) {
      console.log('skipped: dist/ is not built (npm run build:ts)');
      return;
    }
    const child = spawn(process.execPath, ['-e', script, file], { stdio: 'ignore' });
    const t0 = Date.now();
    let sawTemp = false;
    while (Date.now() - t0 < 30_000) {
      if (fs.readdirSync(tmp).some((n) => n.startsWith('atomic.safetensors.tmp-'))) {
        sawTemp = true;
        break;
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    child.kill('SIGKILL');
    await new Promise((r) => child.on('exit', r));
    expect(sawTemp).toBe(true);
    expect(fs.readFileSync(file).equals(before)).toBe(true);
    const ck = await readCheckpoint(file);
    expect(ck.meta.iteration).toBe(1);
    ck.dispose();
    for (const t of small.values()) t.dispose();
  }, 60_000);
});

describe('train config', () => {
  test('arcface_torch names, defaults, and unknown fields rejected by name', () => {
    const c = resolveConfig({ network: 'r18', rec: 'synthetic', margin_list: [1, 0, 0.4], num_epoch: 2 });
    expect(c.loss).toBe('cosface');
    expect(c.momentum).toBe(0.9);
    expect(c.weight_decay).toBe(5e-4);
    expect(resolveConfig({ rec: 'x', loss: 'arcface' }).margin_list).toEqual([1, 0.5, 0]);
    expect(() => resolveConfig({ rec: 'x', learning_rate: 0.1 })).toThrow(/config field 'learning_rate' is unknown/);
    expect(() => resolveConfig({ rec: 'x', network: 'r42' })).toThrow(/config field 'network'/);
    expect(() => resolveConfig({ network: 'r18' })).toThrow(/config field 'rec'/);
  });
});

describe('runTraining (facecuda train)', () => {
  test('a synthetic config trains, verifies, checkpoints, writes the model; resume continues from the checkpoint', async () => {
    const { runTraining } = await import('../../lib/train/run');
    const output = path.join(tmp, 'run');
    const config = {
      network: 'r18', base_width: 4, input_size: 32, embedding_size: 16, rec: 'synthetic', loss: 'cosface',
      synthetic: { identities: 8, samplesPerIdentity: 8 }, batch_size: 16, num_epoch: 1, val_targets: ['synthetic'],
      output, num_workers: 0, verbose: 2, frequent: 1, lr: 0.02, device: 'cpu',
    };
    const lines: string[] = [];
    const r = await runTraining(config, { log: (l) => lines.push(l) });
    expect(r.stopped).toBe('done');
    expect(r.iterations).toBe(4);
    expect(lines.some((l) => /\[synthetic\]\[2\] XNorm .* Accuracy-Flip/.test(l))).toBe(true);
    const log = fs.readFileSync(path.join(output, 'train.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(log.length).toBe(4);
    expect(log.every((l) => Number.isFinite(l.loss) && l.lr >= 0)).toBe(true);
    const m = await IResNet.load(r.model);
    expect(m.embeddingSize).toBe(16);
    m.dispose();
    // Resume with more epochs: starts at iteration 4 from the checkpoint.
    const r2 = await runTraining({ ...config, num_epoch: 2, val_targets: [] }, { resume: r.checkpoint, log: (l) => lines.push(l) });
    expect(lines.some((l) => /resumed from .* at iteration 4/.test(l))).toBe(true);
    expect(r2.iterations).toBe(8);
    await expect(runTraining({ ...config, learning_rate: 1 })).rejects.toThrow(/config field 'learning_rate' is unknown/);
  }, 180_000);
});

describe('Ctrl-C', () => {
  test('SIGINT during facecuda train saves a checkpoint and exits cleanly', async () => {
    const cli = path.resolve(__dirname, '../../dist/cli.js');
    if (!fs.existsSync(cli)) {
      console.log('skipped: dist/ is not built (npm run build:ts)');
      return;
    }
    const output = path.join(tmp, 'sigint');
    const cfg = path.join(tmp, 'sigint.json');
    fs.writeFileSync(cfg, JSON.stringify({
      network: 'r18', base_width: 4, input_size: 32, embedding_size: 16, rec: 'synthetic', synthetic: { identities: 8, samplesPerIdentity: 64 },
      batch_size: 16, num_epoch: 50, output, num_workers: 0, frequent: 1, lr: 0.01, device: 'cpu',
    }));
    const child = spawn(process.execPath, [cli, 'train', '--config', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    // Wait for a few logged steps, then interrupt.
    const log = path.join(output, 'train.jsonl');
    const t0 = Date.now();
    while (Date.now() - t0 < 60_000 && !(fs.existsSync(log) && fs.readFileSync(log, 'utf8').split('\n').length > 3)) {
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill('SIGINT');
    const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    expect(code).toBe(0);
    expect(out).toMatch(/training interrupted after \d+ iterations/);
    const ck = await readCheckpoint(path.join(output, 'checkpoint.safetensors'));
    expect(ck.meta.iteration).toBeGreaterThanOrEqual(3);
    expect(ck.meta.iteration).toBeLessThan(50 * 32);
    ck.dispose();
  }, 120_000);
});
