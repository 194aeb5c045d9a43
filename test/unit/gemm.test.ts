import { gemm, Tensor } from '../../lib';
import { gemmRef, randomFloats, rng, SEED } from '../helpers';

// Errors are judged against |alpha|·Σ|a·b| + |beta·c| (the scale of the terms summed): fp32 rounding
// of a K-term dot product is bounded by about K·2^-24 times that scale; 4·K·2^-24 leaves room for
// the reference's own rounding and is still far below any indexing or transpose bug (errors of O(1)).
function check(got: Float32Array, ref: { value: Float64Array; scale: Float64Array }, K: number): void {
  const tol = 4 * Math.max(K, 1) * 2 ** -24;
  let worst = 0;
  for (let i = 0; i < got.length; i++) {
    const err = Math.abs(got[i] - ref.value[i]) / (ref.scale[i] + 1e-30);
    if (!(err <= tol)) throw new Error(`element ${i}: got ${got[i]}, want ${ref.value[i]} (rel ${err} > ${tol})`);
    worst = Math.max(worst, err);
  }
  expect(worst).toBeLessThanOrEqual(tol);
}

describe('gemm on the CPU (JS API)', () => {
  const r = rng(SEED ^ 0x9e3779b9);
  beforeAll(() => console.log(`gemm tests: seed ${SEED}`));

  const shapes: [number, number, number][] = [
    [1, 1, 1], [1, 37, 13], [29, 1, 7], [3, 5, 1], [17, 31, 61], [64, 96, 128], [127, 65, 257],
  ];
  for (const [M, N, K] of shapes) {
    for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
      it(`M=${M} N=${N} K=${K} transA=${ta} transB=${tb}`, async () => {
        const A = randomFloats(M * K, r);
        const B = randomFloats(K * N, r);
        const C = randomFloats(M * N, r);
        const alpha = 0.5 + r();
        const beta = r() < 0.5 ? 0 : -0.75;
        const a = Tensor.from(A, ta ? [K, M] : [M, K], { device: 'cpu' });
        const b = Tensor.from(B, tb ? [N, K] : [K, N], { device: 'cpu' });
        const c = Tensor.from(C, [M, N], { device: 'cpu' });
        const out = await gemm(a, b, { transA: ta, transB: tb, alpha, beta, c: beta ? c : undefined });
        expect(out.shape).toEqual([M, N]);
        check((await out.toArray()) as Float32Array, gemmRef(ta, tb, M, N, K, alpha, A, B, beta, C), K);
        expect(await c.toArray()).toEqual(C); // c is an input, never modified
      });
    }
  }

  it('bf16 precision matches a reference on bf16-rounded inputs', async () => {
    const [M, N, K] = [33, 47, 300];
    const A = randomFloats(M * K, r);
    const B = randomFloats(K * N, r);
    const round = (x: Float32Array): Float32Array => {
      const u = new Uint32Array(x.slice().buffer);
      for (let i = 0; i < u.length; i++) u[i] = ((u[i] + 0x7fff + ((u[i] >>> 16) & 1)) >>> 16) << 16;
      return new Float32Array(u.buffer);
    };
    const out = await gemm(Tensor.from(A, [M, K], { device: 'cpu' }), Tensor.from(B, [K, N], { device: 'cpu' }), { precision: 'bf16' });
    check((await out.toArray()) as Float32Array, gemmRef(false, false, M, N, K, 1, round(A), round(B), 0, null), K);
  });

  it('is deterministic: the same inputs give the same bits', async () => {
    const [M, N, K] = [200, 300, 500];
    const a = Tensor.from(randomFloats(M * K, r), [M, K], { device: 'cpu' });
    const b = Tensor.from(randomFloats(K * N, r), [K, N], { device: 'cpu' });
    const x = await (await gemm(a, b)).toArray();
    for (let i = 0; i < 3; i++) expect(await (await gemm(a, b)).toArray()).toEqual(x);
  });

  it('validates arguments', async () => {
    const a = Tensor.from(randomFloats(6, r), [2, 3], { device: 'cpu' });
    const b = Tensor.from(randomFloats(8, r), [4, 2], { device: 'cpu' });
    expect(() => gemm(a, b)).toThrow(expect.objectContaining({ code: 'SHAPE_MISMATCH', message: 'inner dimensions differ: op(a) is [2, 3] and op(b) is [4, 2]' }));
    expect(() => gemm(a, {} as Tensor)).toThrow(/^Expected a Tensor for b but received Object of type object$/);
    expect(() => gemm(a, b, { transA: 1 as unknown as boolean })).toThrow(TypeError);
    expect(() => gemm(a, b, { precision: 'fp8' as 'fp32' })).toThrow(/for precision/);
    expect(() => gemm(a, b, { threads: -1 })).toThrow(RangeError);
    expect(() => gemm(a, b, { beta: 1, transA: true, transB: true })).toThrow(/^Expected a Tensor of shape \[3, 4\] when beta is non-zero for c/);
    expect(() => gemm(a, b, { Alpha: 2 } as never)).toThrow(/'alpha' \(option names are case-sensitive\)/);
    const v = Tensor.from(randomFloats(6, r), [6], { device: 'cpu' });
    expect(() => gemm(v, b)).toThrow(/a 2-D tensor for a/);
    const i = Tensor.from(new Int32Array(6), [2, 3], { device: 'cpu' });
    expect(() => gemm(i, b, { transB: true })).toThrow(/a float32 tensor for a/);
    b.dispose();
    expect(() => gemm(a, b)).toThrow(expect.objectContaining({ code: 'DISPOSED' }));
  });

  it('keeps the event loop responsive while a large GEMM runs', async () => {
    const n = 1536;
    const a = Tensor.from(randomFloats(n * n, r), [n, n], { device: 'cpu' });
    const b = Tensor.from(randomFloats(n * n, r), [n, n], { device: 'cpu' });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 2);
    const t0 = process.hrtime.bigint();
    // Several back-to-back GEMMs so the work lasts long enough to observe, even on a fast machine.
    const jobs = [gemm(a, b), gemm(a, b), gemm(a, b), gemm(a, b)];
    // The JS thread returned at once: the calls only queued work.
    const submitMs = Number(process.hrtime.bigint() - t0) / 1e6;
    const outs = await Promise.all(jobs);
    const totalMs = Number(process.hrtime.bigint() - t0) / 1e6;
    clearInterval(timer);
    expect(submitMs).toBeLessThan(totalMs / 4);
    // A blocked loop would see at most a tick or two; a free one ticks about every 2 ms.
    expect(ticks).toBeGreaterThanOrEqual(Math.min(20, Math.floor(totalMs / 10)));
    for (const o of outs) o.dispose();
  });

  it('runs queued work in order: a dispose after a gemm does not disturb it', async () => {
    const a = Tensor.from(randomFloats(64 * 64, r), [64, 64], { device: 'cpu' });
    const A = (await a.toArray()) as Float32Array;
    const p = gemm(a, a);
    a.dispose();
    const out = (await (await p).toArray()) as Float32Array;
    check(out, gemmRef(false, false, 64, 64, 64, 1, A, A, 0, null), 64);
  });
});
