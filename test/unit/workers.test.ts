// Worker threads: each env gets its own completion channel; terminating a worker with native work
// in flight must not crash the process (late completions are dropped, never delivered to a dead env).
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

const root = path.resolve(__dirname, '..', '..');
const dist = path.join(root, 'dist', 'index.js');

const script = `
const { Worker } = require('worker_threads');
const dist = ${JSON.stringify(dist)};
const body = (n) => \`
  const { parentPort } = require('worker_threads');
  const fc = require(\${JSON.stringify(dist)});
  const a = fc.Tensor.from(new Float32Array(\${n} * \${n}).fill(1), [\${n}, \${n}], { device: 'cpu' });
  const jobs = []; for (let i = 0; i < 6; i++) jobs.push(fc.gemm(a, a));
  const head = new fc.CosFaceHead({ embeddingSize: 32, numClasses: 20000, device: 'cpu' });
  head.forward(new Float32Array(32 * 8).fill(0.5), [1, 2, 3, 4, 5, 6, 7, 8]).then(() => head.backward());
  jobs[0].then((c) => c.toArray()).then((v) => parentPort.postMessage(v[0]));
\`;
(async () => {
  for (let i = 0; i < 3; i++) {
    const w = new Worker(body(64), { eval: true });
    const v = await new Promise((res, rej) => { w.on('message', res); w.on('error', rej); });
    if (v !== 64) throw new Error('worker computed ' + v);
    await w.terminate();
  }
  for (const wait of [0, 50, 200]) {
    const w = new Worker(body(1536), { eval: true });
    await new Promise((r) => setTimeout(r, wait));
    await w.terminate(); // native work still in flight
  }
  const fc = require(dist);
  const a = fc.Tensor.from(new Float32Array(16).fill(2), [4, 4], { device: 'cpu' });
  const c = await fc.gemm(a, a);
  console.log('main ok', (await c.toArray())[0]);
})().catch((e) => { console.error(e); process.exit(3); });
`;

(fs.existsSync(dist) ? describe : describe.skip)('worker threads', () => {
  it('terminating workers with work in flight never crashes the process', () => {
    for (let round = 0; round < 3; round++) {
      const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 120_000 });
      expect({ status: r.status, signal: r.signal, stderr: r.stderr }).toEqual({ status: 0, signal: null, stderr: '' });
      expect(r.stdout).toContain('main ok 16');
    }
  });
});
