import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

import { system } from '../../lib';

const root = path.resolve(__dirname, '..', '..');
const cli = path.join(root, 'dist', 'cli.js');

describe('system info', () => {
  it('describes the package, addon, CPU and CUDA', async () => {
    const i = await system.info({ libraries: true });
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
    expect(i.version).toBe(pkg.version);
    expect(fs.existsSync(i.addon.path)).toBe(true);
    expect(i.addon.how.length).toBeGreaterThan(0);
    expect(i.cpu.logicalCores).toBeGreaterThanOrEqual(1);
    expect(['avx512', 'avx2', 'portable']).toContain(i.cpu.simd);
    expect(i.cpu.gemmKernel).toMatch(/avx512|avx2|portable/);
    expect(typeof i.cuda.available).toBe('boolean');
    if (!i.cuda.available) expect(i.cuda.reason).toMatch(/./);
    expect(Array.isArray(i.cuda.libraries)).toBe(true);
    for (const l of i.cuda.libraries!) {
      expect(['cublas', 'cublasLt', 'cudnn']).toContain(l.name);
      if (!l.found) expect(l.error.length).toBeGreaterThan(0);
    }
  });

  it('measures a positive FMA peak', async () => {
    const one = await system.fmaPeak({ threads: 1, seconds: 0.05 });
    expect(one).toBeGreaterThan(1e9);
  });
});

describe('facecuda CLI', () => {
  const haveCli = fs.existsSync(cli);
  (haveCli ? it : it.skip)('info --json prints the same facts as JSON', () => {
    const out = execFileSync(process.execPath, [cli, 'info', '--json'], { encoding: 'utf8', env: { ...process.env, FACECUDA_DEVICE: '' } });
    const j = JSON.parse(out);
    expect(j.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(j.cpu.model.length).toBeGreaterThan(0);
    expect(typeof j.cuda.available).toBe('boolean');
  });

  (haveCli ? it : it.skip)('info prints a human report that says why CUDA is unavailable', () => {
    const out = execFileSync(process.execPath, [cli, 'info'], { encoding: 'utf8' });
    expect(out).toMatch(/^facecuda \d+\.\d+\.\d+/);
    expect(out).toMatch(/\ncpu +/);
    expect(out).toMatch(/\ncuda +(available|unavailable: .+)/);
  });

  (haveCli ? it : it.skip)('rejects unknown commands with status 2', () => {
    const r = spawnSync(process.execPath, [cli, 'frobnicate'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/unknown command 'frobnicate'/);
  });
});

describe('host memory cache', () => {
  it('reuses freed large host blocks and returns them on emptyCache("cpu")', async () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { Tensor } = require('../../lib') as typeof import('../../lib');
    await system.emptyCache('cpu');
    const t = Tensor.zeros([1024, 1024], { device: 'cpu' }); // 4 MiB: a cached size class
    await t.toArray();
    t.dispose();
    await system.synchronize('cpu'); // the dispose is queued; wait for it
    const cached = (await system.info()).cpu.cachedBytes;
    expect(cached).toBeGreaterThanOrEqual(4 * 1024 * 1024);
    const released = await system.emptyCache('cpu');
    expect(released).toBe(cached);
    expect((await system.info()).cpu.cachedBytes).toBe(0);
  });
});
