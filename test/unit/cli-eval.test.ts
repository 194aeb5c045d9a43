// facecuda eval / embed / search from the command line (dist/cli.js): a tiny IResNet saved as
// safetensors, a synthetic .bin pack; eval prints insightface's table and writes report.json and
// report.html whose accuracy equals the library's evaluateVerification on the same pack; embed writes
// unit embeddings equal to FaceEmbedder's; search finds each query's own gallery entry first.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { IResNet } from '../../lib/backbones/model';
import { encodeJpeg, writeSyntheticBinPack } from '../../lib/data/synthetic-packs';
import { SyntheticFaces } from '../../lib/data/synthetic';
import { FaceEmbedder } from '../../lib/embed';
import { evaluateVerification } from '../../lib/eval';
import { SEED } from '../helpers';

const cli = path.resolve(__dirname, '../../dist/cli.js');
let tmp: string;
let model: string;
let pack: string;
const run = (args: string[]) => {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 300_000 });
  return { status: r.status, out: r.stdout, err: r.stderr };
};

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'facecuda-cli-eval-'));
  model = path.join(tmp, 'tiny.safetensors');
  const m = IResNet.create('r18', { baseWidth: 4, embeddingSize: 16, seed: SEED % 1000 });
  await m.save(model);
  m.dispose();
  pack = path.join(tmp, 'synth.bin');
  const faces = new SyntheticFaces({ seed: SEED % 997, identities: 12, samplesPerIdentity: 1 });
  await writeSyntheticBinPack(faces.pairs({ count: 40, seed: 3 }), pack);
}, 120_000);

afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const built = fs.existsSync(cli);
const maybe = built ? test : test.skip;
if (!built) console.log('cli tests skipped: dist/ is not built (npm run build:ts)');

maybe('eval: the insightface table, report.json and report.html; the same accuracy as the library', async () => {
  const out = path.join(tmp, 'report');
  const r = run(['eval', '--model', model, '--bin', pack, '--output', out]);
  expect(r.err).toBe('');
  expect(r.status).toBe(0);
  expect(r.out).toMatch(/\[synth\]XNorm: \d+\.\d+/);
  expect(r.out).toMatch(/\[synth\]Accuracy-Flip: \d\.\d{5}\+-\d\.\d{5}/);
  const report = JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8'));
  const html = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
  expect(html).toContain('<svg');
  const embedder = await FaceEmbedder.create({ model });
  const lib = await evaluateVerification(embedder, pack, { flip: true });
  embedder.dispose();
  expect(report.results.synth.accuracy).toBe(lib.accuracy);
  expect(report.results.synth.pairs).toBe(40);
  expect(r.out).toContain(`Accuracy-Flip: ${lib.accuracy.toFixed(5)}`);
  const bad = run(['eval', '--model', model]);
  expect(bad.status).not.toBe(0);
  expect(bad.err).toMatch(/--bin/);
}, 300_000);

maybe('embed writes unit embeddings equal to FaceEmbedder; search finds each query first', async () => {
  const faces = new SyntheticFaces({ seed: SEED % 991, identities: 3, samplesPerIdentity: 1 });
  const files: string[] = [];
  for (let i = 0; i < 3; i++) {
    const f = path.join(tmp, `face${i}.jpg`);
    fs.writeFileSync(f, await encodeJpeg((await faces.get(i)).pixels as never, 95));
    files.push(f);
  }
  const out = path.join(tmp, 'emb.json');
  const r = run(['embed', '--model', model, '--out', out, ...files]);
  expect(r.status).toBe(0);
  const j = JSON.parse(fs.readFileSync(out, 'utf8'));
  expect(j.dim).toBe(16);
  const embedder = await FaceEmbedder.create({ model });
  const lib = await embedder.embed(files.map((f) => new Uint8Array(fs.readFileSync(f))));
  embedder.dispose();
  j.embeddings.forEach((row: { file: string; embedding: number[] }, i: number) => {
    expect(row.file).toBe(files[i]);
    row.embedding.forEach((v, d) => expect(v).toBe(lib.embeddings[i * 16 + d]));
  });
  const s = run(['search', '--gallery', out, '--queries', out, '--k', '2', '--json']);
  expect(s.err).toBe('');
  expect(s.status).toBe(0);
  const res = JSON.parse(s.out);
  res.queries.forEach((q: { matches: { id: number; file?: string; score: number }[] }, i: number) => {
    expect(q.matches[0].id).toBe(i);
    expect(q.matches[0].score).toBeCloseTo(1, 5);
  });
}, 300_000);
