// GPU suite for FaceIndex: the CUDA index against the CPU index on the same rows and queries (the
// CPU index is itself checked against a float64 brute force in test/unit/search.test.ts). Runs when
// a CUDA device is usable and prints why it is skipped otherwise; without one, the CUDA_UNAVAILABLE
// error path is what is checked.
import { FaceIndex, SearchResult } from '../../lib/search';
import { gpuStatus, randomFloats, rng, SEED } from '../helpers';

const gpu = gpuStatus();
if (!gpu.available) console.log(`GPU search tests skipped: ${gpu.reason}`);

// Same fp32 inputs; the scores differ only in summation order (cuBLAS / the scan kernel vs our CPU
// kernels): 1e-5 absolute at D = 128 with unit vectors. f16 storage with Q > 8 rounds the queries
// to fp16 for the tensor-core GEMM as well: 2e-3.
function expectSame(got: SearchResult, want: SearchResult, tol: number): void {
  expect(got.ids.length).toBe(want.ids.length);
  let mismatched = 0;
  for (let i = 0; i < want.ids.length; i++) {
    expect(Math.abs(got.scores[i] - want.scores[i])).toBeLessThanOrEqual(tol);
    if (got.ids[i] !== want.ids[i]) mismatched++;
  }
  // Ids may swap only between near-tied neighbours.
  expect(mismatched).toBeLessThanOrEqual(Math.ceil(want.ids.length * 0.01));
}

(gpu.available ? describe : describe.skip)('CUDA FaceIndex matches the CPU index', () => {
  const r = rng(SEED ^ 0x9ea4c4);
  const D = 128;
  const N = 20000;
  const rows = randomFloats(N * D, r);
  const ids = Array.from({ length: N }, (_, i) => i * 3 + 1);

  test.each([
    ['f32', 1, 10], ['f32', 8, 100], ['f32', 64, 10], ['f32', 300, 1024],
    ['f16', 1, 10], ['f16', 5, 50], ['f16', 200, 10],
  ] as const)('%s Q=%i k=%i', async (storage, Q, k) => {
    const cpu = new FaceIndex({ dim: D, storage, device: 'cpu' });
    const dev = new FaceIndex({ dim: D, storage, device: 'cuda' });
    cpu.add(ids, rows);
    dev.add(ids, rows);
    const q = randomFloats(Q * D, r);
    const tol = storage === 'f16' && Q > 8 ? 2e-3 : 1e-5;
    expectSame(await dev.search(q, k, { aggregate: 'none' }), await cpu.search(q, k, { aggregate: 'none' }), tol);
    const filter = ids.filter(() => r() < 0.05);
    expectSame(await dev.search(q, k, { filter }), await cpu.search(q, k, { filter }), tol);
    // A mutation invalidates the device copy.
    cpu.remove(ids.slice(0, 5000));
    dev.remove(ids.slice(0, 5000));
    expectSame(await dev.search(q, k), await cpu.search(q, k), tol);
    cpu.dispose();
    dev.dispose();
  });

  test('k above the CUDA limit is a RangeError', async () => {
    const dev = new FaceIndex({ dim: 4, device: 'cuda' });
    await expect(dev.search(new Float32Array(4).fill(1), 1025)).rejects.toThrow(RangeError);
    dev.dispose();
  });
});

(gpu.available ? describe.skip : describe)('without a usable GPU', () => {
  test('device cuda is CUDA_UNAVAILABLE', () => {
    expect(() => new FaceIndex({ dim: 8, device: 'cuda' })).toThrow(expect.objectContaining({ code: 'CUDA_UNAVAILABLE' }));
  });
});
