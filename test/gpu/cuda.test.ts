// GPU suite: runs when a CUDA device is usable and prints why it is skipped otherwise.
import { FacecudaError, gemm, system, Tensor } from '../../lib';
import { gemmRef, gpuStatus, randomFloats, rng, SEED } from '../helpers';

const gpu = gpuStatus();
if (!gpu.available) console.log(`GPU tests skipped: ${gpu.reason}`);

(gpu.available ? describe : describe.skip)('CUDA backend', () => {
  const r = rng(SEED ^ 0x51);

  it('round-trips tensors host → device → host, and between devices', async () => {
    const data = randomFloats(1000, r);
    const t = Tensor.from(data, [10, 100], { device: 'cuda' });
    expect(t.device).toBe('cuda:0');
    expect(await t.toArray()).toEqual(data);
    const back = await t.to('cpu');
    expect(back.device).toBe('cpu');
    expect(await back.toArray()).toEqual(data);
    const again = await back.to('cuda:0');
    expect(await again.toArray()).toEqual(data);
    const i64 = BigInt64Array.from({ length: 17 }, (_, i) => BigInt(i) * 123456789n);
    expect(await Tensor.from(i64, [17], { device: 'cuda' }).toArray()).toEqual(i64);
  });

  it('gemm on CUDA matches the CPU (fp32) and a float64 reference (tf32, bf16, fp16)', async () => {
    for (const [M, N, K, ta, tb] of [[1, 1, 1, false, false], [37, 61, 129, true, false], [256, 512, 300, false, true], [512, 93, 512, true, true]] as const) {
      const A = randomFloats(M * K, r);
      const B = randomFloats(K * N, r);
      const ref = gemmRef(ta, tb, M, N, K, 1.25, A, B, 0, null);
      const ga = Tensor.from(A, ta ? [K, M] : [M, K], { device: 'cuda' });
      const gb = Tensor.from(B, tb ? [N, K] : [K, N], { device: 'cuda' });
      for (const [precision, tol] of [['fp32', 4 * K * 2 ** -24], ['tf32', 4 * 2 ** -10], ['bf16', 4 * 2 ** -7], ['fp16', 4 * 2 ** -10]] as const) {
        const got = (await (await gemm(ga, gb, { transA: ta, transB: tb, alpha: 1.25, precision })).toArray()) as Float32Array;
        for (let i = 0; i < got.length; i++) {
          const e = Math.abs(got[i] - ref.value[i]) / (ref.scale[i] + 1e-30);
          if (!(e <= tol)) throw new Error(`${precision} M=${M} N=${N} K=${K}: element ${i} rel ${e} > ${tol}`);
        }
      }
    }
  });

  it('tracks memory and enforces the cap with OUT_OF_MEMORY, never a crash', async () => {
    await system.emptyCache('cuda:0');
    const before = system.memoryStats('cuda:0');
    const t = Tensor.zeros([1024, 1024], { device: 'cuda' });
    await t.toArray();
    const during = system.memoryStats('cuda:0');
    expect(during.allocated - before.allocated).toBeGreaterThanOrEqual(4 * 1024 * 1024);
    expect(during.peakAllocated).toBeGreaterThanOrEqual(during.allocated);
    t.dispose();
    await system.synchronize('cuda:0');
    system.setMemoryLimit(64 * 1024 * 1024, 'cuda:0');
    try {
      const big = Tensor.zeros([128, 1024, 1024], { device: 'cuda' });
      await expect(big.toArray()).rejects.toMatchObject({ code: 'OUT_OF_MEMORY' });
    } finally {
      system.setMemoryLimit(0, 'cuda:0');
    }
    const released = await system.emptyCache('cuda:0');
    expect(released).toBeGreaterThanOrEqual(0);
    expect(system.memoryStats('cuda:0').reserved).toBeLessThanOrEqual(during.reserved);
  });

  it('reports a CUDA device beyond the count as CUDA_UNAVAILABLE', () => {
    expect(() => Tensor.from(new Float32Array(1), [1], { device: 'cuda:999' })).toThrow(FacecudaError);
  });
});
