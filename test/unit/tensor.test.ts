import { autoDeviceReason, cudaStatus, FacecudaError, resolveDevice, Tensor, toBfloat16, toFloat16 } from '../../lib';
import { randomFloats, rng, SEED } from '../helpers';

beforeAll(() => {
  // Printed so that a failure can be replayed with FACECUDA_TEST_SEED.
  console.log(`tensor tests: seed ${SEED}`);
});

describe('Tensor on the CPU', () => {
  const r = rng(SEED);

  it('round-trips every dtype with fresh random data', async () => {
    const n = 2 * 3 * 5 * 7;
    const shape = [2, 3, 5, 7];
    const f32 = randomFloats(n, r, -1e3, 1e3);
    const i32 = Int32Array.from({ length: n }, () => Math.floor((r() - 0.5) * 2 ** 31));
    const i64 = BigInt64Array.from({ length: n }, () => BigInt(Math.floor((r() - 0.5) * 2 ** 52)) * 1024n);
    const u8 = Uint8Array.from({ length: n }, () => Math.floor(r() * 256));
    const words = Uint16Array.from({ length: n }, () => Math.floor(r() * 65536));
    const cases: [ArrayBufferView, 'float32' | 'int32' | 'int64' | 'uint8' | 'float16' | 'bfloat16'][] = [
      [f32, 'float32'], [i32, 'int32'], [i64, 'int64'], [u8, 'uint8'], [words, 'float16'], [words, 'bfloat16'],
    ];
    for (const [data, dtype] of cases) {
      const t = Tensor.from(data as Float32Array, shape, { device: 'cpu', dtype });
      expect(t.shape).toEqual(shape);
      expect(t.dtype).toBe(dtype);
      expect(t.device).toBe('cpu');
      const back = await t.toArray();
      expect(ArrayBuffer.isView(back)).toBe(true);
      expect(Array.from(back as ArrayLike<number | bigint>)).toEqual(Array.from(data as unknown as ArrayLike<number | bigint>));
      t.dispose();
    }
  });

  it('copies the data at creation (later writes to the source do not leak in)', async () => {
    const src = randomFloats(16, r);
    const keep = src.slice();
    const t = Tensor.from(src, [4, 4], { device: 'cpu' });
    src.fill(7);
    expect(await t.toArray()).toEqual(keep);
  });

  it('accepts rank 0..5 and number arrays', async () => {
    expect(await Tensor.from([3.5], [], { device: 'cpu' }).toArray()).toEqual(new Float32Array([3.5]));
    const five = Tensor.from(randomFloats(32, r), [2, 2, 2, 2, 2], { device: 'cpu' });
    expect(five.rank).toBe(5);
    const ints = Tensor.from([1, -2, 3], [3], { device: 'cpu', dtype: 'int32' });
    expect(Array.from((await ints.toArray()) as Int32Array)).toEqual([1, -2, 3]);
    const empty = Tensor.from(new Float32Array(0), [0, 4], { device: 'cpu' });
    const none = await empty.toArray();
    expect(none.length).toBe(0);
    // A usable (not detached) buffer: views and copies of it work.
    expect(Array.from(none as Float32Array)).toEqual([]);
    expect(new Uint8Array(none.buffer, 0, 0).length).toBe(0);
  });

  it('converts float32 values to float16 and bfloat16 words with round-to-nearest-even', () => {
    const v = new Float32Array([1, -2, 0.1, 65504, 1e-8, Infinity, NaN, 1 + 2 ** -11, 1 + 3 * 2 ** -11]);
    const h = toFloat16(v);
    expect(h[0]).toBe(0x3c00);
    expect(h[1]).toBe(0xc000);
    expect(h[2]).toBe(0x2e66);
    expect(h[3]).toBe(0x7bff);
    expect(h[4]).toBe(0x0000);
    expect(h[5]).toBe(0x7c00);
    expect(h[6] & 0x7c00).toBe(0x7c00);
    expect(h[6] & 0x3ff).not.toBe(0);
    expect(h[7]).toBe(0x3c00); // tie → even
    expect(h[8]).toBe(0x3c02); // tie → even (up)
    const b = toBfloat16(new Float32Array([1, -2, 3.14159, 1 + 2 ** -8]));
    expect(Array.from(b)).toEqual([0x3f80, 0xc000, 0x4049, 0x3f80]);
  });

  it('reshape makes a view with the same values; zeros are zeros', async () => {
    const data = randomFloats(24, r);
    const t = Tensor.from(data, [2, 3, 4], { device: 'cpu' });
    const v = t.reshape([6, 4]);
    expect(v.shape).toEqual([6, 4]);
    expect(await v.toArray()).toEqual(data);
    const z = Tensor.zeros([3, 5], { device: 'cpu', dtype: 'int32' });
    expect(Array.from((await z.toArray()) as Int32Array)).toEqual(new Array(15).fill(0));
    expect(() => t.reshape([5, 5])).toThrow(expect.objectContaining({ code: 'SHAPE_MISMATCH' }));
  });

  it('t.to("cpu") copies', async () => {
    const data = randomFloats(10, r);
    const t = Tensor.from(data, [10], { device: 'cpu' });
    const u = await t.to('cpu');
    t.dispose();
    expect(await u.toArray()).toEqual(data);
  });
});

describe('Tensor argument checks', () => {
  it('rejects bad data, shapes and options with the standard message', () => {
    expect(() => Tensor.from('abc' as unknown as Float32Array, [3])).toThrow(TypeError);
    expect(() => Tensor.from(new Float32Array(6), [2, -3], { device: 'cpu' })).toThrow(RangeError);
    expect(() => Tensor.from(new Float32Array(6), [2, 3.5], { device: 'cpu' })).toThrow(TypeError);
    expect(() => Tensor.from(new Float32Array(64), [2, 2, 2, 2, 2, 2], { device: 'cpu' })).toThrow(RangeError);
    expect(() => Tensor.from(new Float32Array(6), [2, 4], { device: 'cpu' })).toThrow(
      expect.objectContaining({ code: 'SHAPE_MISMATCH', message: 'data has 6 values but shape [2, 4] needs 8' }),
    );
    expect(() => Tensor.from(new Float64Array(4) as unknown as Float32Array, [4], { device: 'cpu' })).toThrow(TypeError);
    expect(() => Tensor.from(new Uint16Array(4), [4], { device: 'cpu' })).toThrow(/needs dtype 'float16' or 'bfloat16'/);
    expect(() => Tensor.from(new Int32Array(4), [4], { device: 'cpu', dtype: 'float32' })).toThrow(
      /^Expected a Float32Array for dtype 'float32' for data but received Int32Array\(4\) of type object$/,
    );
    expect(() => Tensor.from(new Float32Array(4), [4], { device: 'gpu' as 'cpu' })).toThrow(
      /^Expected 'cpu', 'cuda', 'cuda:N' or 'auto' for device but received "gpu" of type string$/,
    );
    expect(() => Tensor.from(new Float32Array(4), [4], { devise: 'cpu' } as never)).toThrow(/option 'devise'/);
    expect(() => Tensor.from([1, 2.5], [2], { device: 'cpu', dtype: 'int32' })).toThrow(TypeError);
    expect(() => Tensor.from([1, 300], [2], { device: 'cpu', dtype: 'uint8' })).toThrow(RangeError);
  });

  it('use after dispose throws DISPOSED; dispose is idempotent', async () => {
    const t = Tensor.from(new Float32Array(4), [2, 2], { device: 'cpu' });
    t.dispose();
    t.dispose();
    expect(t.disposed).toBe(true);
    expect(() => t.toArray()).toThrow(expect.objectContaining({ code: 'DISPOSED' }));
    await expect(t.to('cpu')).rejects.toMatchObject({ code: 'DISPOSED' });
    expect(() => t.reshape([4])).toThrow(FacecudaError);
    expect(String(t)).toBe('Tensor(float32[2, 2] on cpu, disposed)');
  });
});

describe('devices', () => {
  const status = cudaStatus();

  it('reports CUDA status with a reason when unavailable', () => {
    expect(typeof status.available).toBe('boolean');
    if (!status.available) expect(status.reason.length).toBeGreaterThan(10);
  });

  it("an explicit 'cuda' never falls back silently", () => {
    if (status.available) return;
    for (const spec of ['cuda', 'cuda:0', 'cuda:3'] as const) {
      let err: unknown;
      try {
        Tensor.from(new Float32Array(4), [4], { device: spec });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(FacecudaError);
      expect((err as FacecudaError).code).toBe('CUDA_UNAVAILABLE');
      expect((err as FacecudaError).message).toContain(status.reason);
    }
  });

  it("'auto' falls back to the CPU and records why", () => {
    const saved = process.env.FACECUDA_DEVICE;
    delete process.env.FACECUDA_DEVICE;
    try {
      const d = resolveDevice('auto');
      if (status.available) {
        expect(d).toBe('cuda:0');
        expect(autoDeviceReason()).toBeUndefined();
      } else {
        expect(d).toBe('cpu');
        expect(autoDeviceReason()).toBe(status.reason);
        expect(Tensor.from(new Float32Array(2), [2]).device).toBe('cpu');
      }
    } finally {
      if (saved === undefined) delete process.env.FACECUDA_DEVICE;
      else process.env.FACECUDA_DEVICE = saved;
    }
  });

  it('FACECUDA_DEVICE replaces auto and omitted devices, never an explicit one', () => {
    const saved = process.env.FACECUDA_DEVICE;
    try {
      process.env.FACECUDA_DEVICE = 'cpu';
      expect(resolveDevice(undefined)).toBe('cpu');
      expect(resolveDevice('auto')).toBe('cpu');
      process.env.FACECUDA_DEVICE = 'tpu';
      expect(() => resolveDevice('auto')).toThrow(/for FACECUDA_DEVICE/);
      expect(resolveDevice('cpu')).toBe('cpu');
      if (!status.available) {
        process.env.FACECUDA_DEVICE = 'cuda:0';
        expect(() => resolveDevice()).toThrow(expect.objectContaining({ code: 'CUDA_UNAVAILABLE' }));
      }
    } finally {
      if (saved === undefined) delete process.env.FACECUDA_DEVICE;
      else process.env.FACECUDA_DEVICE = saved;
    }
  });
});
