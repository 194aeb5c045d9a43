// safetensors: reader, writer, byte-exact agreement with an independent writer
// (test/fixtures/gen_safetensors.py), corruption handling and atomic writes.
import { promises as fsp } from 'fs';
import * as os from 'os';
import * as path from 'path';
import {
  FacecudaError, MAX_HEADER_LENGTH, parseSafetensors, readSafetensors, readSafetensorsHeader, RawTensor, SAFETENSORS_DTYPES,
  SafetensorsDType, Tensor, writeSafetensors,
} from '../../lib';
import { rng, SEED } from '../helpers';

const FIXTURE = path.join(__dirname, '..', 'fixtures', 'tiny.safetensors');
let dir: string;
let counter = 0;
const tmpFile = (name = 'f'): string => path.join(dir, `${name}-${counter++}.safetensors`);

beforeAll(async () => {
  // Printed so that a failure can be replayed with FACECUDA_TEST_SEED.
  console.log(`safetensors tests: seed ${SEED}`);
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'facecuda-st-'));
});

afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

// ----------------------------------------------------------------------------------------------
// Helpers

/** A file: u64 LE header length, the header text padded with spaces to 8, then the data. */
function build(header: string | object, data: Uint8Array = new Uint8Array(0), pad = true): Uint8Array {
  let text = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  if (pad && text.length % 8) text = Buffer.concat([text, Buffer.alloc(8 - (text.length % 8), 0x20)]);
  const out = Buffer.alloc(8 + text.length + data.length);
  out.writeBigUInt64LE(BigInt(text.length), 0);
  text.copy(out, 8);
  Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(out, 8 + text.length);
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

function catchSync(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  return undefined;
}

async function catchAsync(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  return undefined;
}

function expectCode(err: unknown, code: string, message?: RegExp): void {
  if (!(err instanceof FacecudaError)) throw new Error(`expected a FacecudaError ${code} but got ${err instanceof Error ? err.stack : String(err)}`);
  expect(err.code).toBe(code);
  if (message) expect(err.message).toMatch(message);
}

/** Checks a buffer is CORRUPT_FILE through all three readers (buffer, header-only file, full file). */
async function expectCorrupt(bytes: Uint8Array, message?: RegExp): Promise<void> {
  expectCode(catchSync(() => parseSafetensors(bytes)), 'CORRUPT_FILE', message);
  const file = tmpFile('corrupt');
  await fsp.writeFile(file, bytes);
  const e1 = await catchAsync(readSafetensorsHeader(file));
  expectCode(e1, 'CORRUPT_FILE', message);
  expect((e1 as Error).message).toContain(file);
  expectCode(await catchAsync(readSafetensors(file, { device: 'cpu' })), 'CORRUPT_FILE', message);
  await fsp.unlink(file);
}

/** Names of temporary files (ours) in a folder. */
async function leftovers(folder: string): Promise<string[]> {
  return (await fsp.readdir(folder)).filter((f) => f.includes('.tmp-'));
}

function randomBytes(n: number, r: () => number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(r() * 256);
  return out;
}

/**
 * A typed array's values as a plain array. Zero-length arrays from `Tensor.toArray()` sit on a
 * detached ArrayBuffer (the addon hands out an external buffer with no memory), which Array.from
 * refuses, so they are special-cased.
 */
function plain(a: ArrayBufferView): (number | bigint)[] {
  return a.byteLength === 0 ? [] : Array.from(a as unknown as ArrayLike<number | bigint>);
}

/** The bytes of a typed array (empty for a zero-length one, see {@link plain}). */
function bytesOf(a: ArrayBufferView): Buffer {
  return a.byteLength === 0 ? Buffer.alloc(0) : Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** A tensor's values as a plain array. */
async function values(t: Tensor): Promise<(number | bigint)[]> {
  return plain((await t.toArray()) as ArrayBufferView);
}

const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

// ----------------------------------------------------------------------------------------------
// The fixture: written by gen_safetensors.py (numpy and the standard library only)

describe('the fixture from the independent Python writer', () => {
  // What gen_safetensors.py puts in the file, recomputed here.
  const f32 = (xs: number[]): number[] => xs.map(Math.fround);
  const expected: Record<string, { dtype: SafetensorsDType; shape: number[]; values: (number | bigint)[] }> = {
    'layer.2.weight': { dtype: 'F32', shape: [2, 3], values: [0, 1, 2, 3, 4, 5].map((i) => (i - 2.5) * 0.5) },
    'layer.10.weight': { dtype: 'F32', shape: [3, 1, 2], values: [0, 1, 2, 3, 4, 5].map((i) => i * 0.25 - 1) },
    'Layer.bias': { dtype: 'F32', shape: [3], values: f32([1.5, -0, 1e-3]) },
    scalar: { dtype: 'F32', shape: [], values: [42.5] },
    empty: { dtype: 'F32', shape: [0, 3], values: [] },
    'été.中': { dtype: 'F32', shape: [1], values: [-7] },
    f64: { dtype: 'F64', shape: [3], values: [1 / 3, 2 / 3, 3 / 3] },
    f16: { dtype: 'F16', shape: [5], values: [0x0000, 0x3c00, 0xc000, 0x3800, 0x7bff] },
    bf16: { dtype: 'BF16', shape: [2, 2], values: [0x3f80, 0xbf80, 0x3f00, 0x4040] },
    i64: { dtype: 'I64', shape: [4], values: [-(2n ** 62n), -1n, 0n, 2n ** 53n + 1n] },
    i32: { dtype: 'I32', shape: [2, 2], values: [-(2 ** 31), -1, 0, 2 ** 31 - 1] },
    i16: { dtype: 'I16', shape: [3], values: [-(2 ** 15), 7, 2 ** 15 - 1] },
    i8: { dtype: 'I8', shape: [4], values: [-128, -1, 0, 127] },
    u8: { dtype: 'U8', shape: [3], values: [0, 128, 255] },
    'u8.empty': { dtype: 'U8', shape: [0], values: [] },
    mask: { dtype: 'BOOL', shape: [3], values: [1, 0, 1] },
  };
  const expectedMetadata = {
    format: 'pt',
    'facecuda.architecture': 'iresnet50',
    'facecuda.preprocessing': '{"size": [112, 112], "colour": "RGB", "mean": 0.5, "std": 0.5}',
    note: 'quotes " backslash \\ tab \t newline \n and café',
    controls: 'nul \u0000 us \u001f del \u007f ls \u2028 slash / emoji \u{1F600}',
  };
  // The reference's order: descending dtype alignment rank, then name as UTF-8 bytes.
  const expectedOrder = ['i64', 'f64', 'Layer.bias', 'empty', 'layer.10.weight', 'layer.2.weight', 'scalar', 'été.中', 'i32', 'bf16', 'f16', 'i16', 'i8', 'u8', 'u8.empty', 'mask'];
  let bytes: Uint8Array;

  beforeAll(async () => {
    bytes = new Uint8Array(await fsp.readFile(FIXTURE));
  });

  it('parseSafetensors reads every tensor and the metadata', () => {
    const p = parseSafetensors(bytes);
    expect(p.metadata).toEqual(expectedMetadata);
    expect([...p.tensors.keys()]).toEqual(expectedOrder);
    expect(p.dataStart).toBe(8 + p.headerLength);
    expect(p.headerLength % 8).toBe(0);
    expect(p.fileSize).toBe(bytes.length);
    for (const [name, e] of Object.entries(expected)) {
      const t = p.tensors.get(name)!;
      expect(t.dtype).toBe(e.dtype);
      expect(t.shape).toEqual(e.shape);
      expect(t.byteLength).toBe(t.dataOffsets[1] - t.dataOffsets[0]);
      expect(Array.from(t.data as ArrayLike<number | bigint>)).toEqual(e.values);
      // Aligned in the file, so the arrays are views of the buffer, not copies.
      expect(t.data.buffer).toBe(bytes.buffer);
    }
    // -0 survives as a bit pattern.
    expect(Object.is((p.tensors.get('Layer.bias')!.data as Float32Array)[1], -0)).toBe(true);
    expect(p.tensors.get('f64')!.data).toBeInstanceOf(Float64Array);
    expect(p.tensors.get('i16')!.data).toBeInstanceOf(Int16Array);
    expect(p.tensors.get('i8')!.data).toBeInstanceOf(Int8Array);
    expect(p.tensors.get('mask')!.tensorDType).toBeNull();
    expect(p.tensors.get('bf16')!.tensorDType).toBe('bfloat16');
  });

  it('readSafetensorsHeader gives the same layout without the data', async () => {
    const h = await readSafetensorsHeader(FIXTURE);
    const p = parseSafetensors(bytes);
    expect(h.metadata).toEqual(expectedMetadata);
    expect(h.headerLength).toBe(p.headerLength);
    expect(h.fileSize).toBe(bytes.length);
    expect([...h.tensors.keys()]).toEqual(expectedOrder);
    for (const [name, info] of h.tensors) {
      const { data, ...rest } = p.tensors.get(name)!;
      expect(data).toBeDefined();
      expect(info).toEqual(rest);
    }
  });

  it('readSafetensors makes Tensors of the supported dtypes and refuses the others by name', async () => {
    const supported = Object.keys(expected).filter((k) => ['F32', 'F16', 'BF16', 'I32', 'I64', 'U8'].includes(expected[k].dtype));
    const { tensors, metadata } = await readSafetensors(FIXTURE, { device: 'cpu', names: supported });
    expect(metadata).toEqual(expectedMetadata);
    expect([...tensors.keys()]).toEqual(supported); // the order asked for
    const dtypeOf: Record<string, string> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16', I32: 'int32', I64: 'int64', U8: 'uint8' };
    for (const [name, t] of tensors) {
      expect(t.device).toBe('cpu');
      expect(t.dtype).toBe(dtypeOf[expected[name].dtype]);
      expect(t.shape).toEqual(expected[name].shape);
      expect(await values(t)).toEqual(expected[name].values);
      t.dispose();
    }
    const err = await catchAsync(readSafetensors(FIXTURE, { device: 'cpu' }));
    expectCode(err, 'NOT_IMPLEMENTED', /tensor "f64".*F64/);
    expect((err as Error).message).toContain(FIXTURE);
  });

  it('writeSafetensors reproduces the file byte for byte (raw data, Tensors, any input order)', async () => {
    const p = parseSafetensors(bytes);
    // 1. Raw arrays, given in reverse order, metadata keys in another order.
    const reversed = new Map([...p.tensors].reverse().map(([k, t]) => [k, { dtype: t.dtype, shape: t.shape, data: t.data } as RawTensor]));
    const meta = Object.fromEntries(Object.entries(p.metadata).reverse());
    const out1 = tmpFile('repro');
    await writeSafetensors(out1, reversed, meta);
    expect(Buffer.compare(await fsp.readFile(out1), Buffer.from(bytes))).toBe(0);

    // 2. Supported dtypes as Tensors (facecuda dtype names), the rest as raw bytes, in a plain object.
    const mixed: Record<string, Tensor | RawTensor> = {};
    for (const [name, t] of p.tensors) {
      if (t.tensorDType) mixed[name] = Tensor.from(t.data as Float32Array, t.shape, { device: 'cpu', dtype: t.tensorDType });
      else mixed[name] = { dtype: t.dtype, shape: t.shape, data: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) };
    }
    const out2 = tmpFile('repro');
    await writeSafetensors(out2, mixed, { ...p.metadata });
    expect(Buffer.compare(await fsp.readFile(out2), Buffer.from(bytes))).toBe(0);
    for (const v of Object.values(mixed)) if (v instanceof Tensor) v.dispose();
  });
});

// ----------------------------------------------------------------------------------------------
// Layout rules checked on small hand-computed files

describe('layout', () => {
  it('an empty file is {} padded with six spaces; metadata alone is padded too', async () => {
    const f = tmpFile();
    await writeSafetensors(f, {});
    expect(Buffer.from(await fsp.readFile(f))).toEqual(Buffer.concat([Buffer.from([8, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{}      ')]));
    await writeSafetensors(f, {}, { framework: 'pt' });
    const text = '{"__metadata__":{"framework":"pt"}}';
    const got = await fsp.readFile(f);
    expect(got.readBigUInt64LE(0)).toBe(40n);
    expect(got.subarray(8).toString()).toBe(text + ' '.repeat(40 - text.length));
    expect((await readSafetensors(f)).metadata).toEqual({ framework: 'pt' });
    expect((await readSafetensors(f)).tensors.size).toBe(0);
  });

  it('one F32 tensor: compact JSON, spaces to a multiple of 8, then the little-endian data', async () => {
    const f = tmpFile();
    const values = new Float32Array([0, 1, 2, 3, 4, 5]);
    await writeSafetensors(f, { attn0: { dtype: 'float32', shape: [1, 1, 2, 3], data: values } });
    const text = '{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}';
    const got = await fsp.readFile(f);
    const n = Math.ceil(text.length / 8) * 8;
    expect(got.readBigUInt64LE(0)).toBe(BigInt(n));
    expect(got.subarray(8, 8 + n).toString()).toBe(text.padEnd(n, ' '));
    expect(Buffer.compare(got.subarray(8 + n), Buffer.from(values.buffer))).toBe(0);
  });

  it('orders by descending dtype alignment, then by name as UTF-8 bytes; every offset is aligned', async () => {
    const r = rng(SEED ^ 0x51);
    const names = ['b', 'a', 'B', 'é', '\u{1F600}', '\uFF5E', 'a.10', 'a.9', ''];
    const dtypes = [...SAFETENSORS_DTYPES].filter((d) => !['F4', 'F6_E2M3', 'F6_E3M2'].includes(d));
    const tensors: Record<string, RawTensor> = {};
    for (let i = 0; i < 30; i++) {
      const dtype = dtypes[Math.floor(r() * dtypes.length)];
      const name = `${names[i % names.length]}${i >= names.length ? i : ''}`;
      const shape = [Math.floor(r() * 4), 1 + Math.floor(r() * 3)];
      const bytes = (numel(shape) * (dtype === 'C64' || dtype.endsWith('64') ? 8 : dtype.endsWith('32') ? 4 : dtype.endsWith('16') ? 2 : 1));
      tensors[name] = { dtype, shape, data: randomBytes(bytes, r) };
    }
    const f = tmpFile();
    await writeSafetensors(f, tensors);
    const h = await readSafetensorsHeader(f);
    const order = [...h.tensors.values()];
    const rank = (d: string): number => SAFETENSORS_DTYPES.indexOf(d as SafetensorsDType);
    for (let i = 1; i < order.length; i++) {
      const a = order[i - 1];
      const b = order[i];
      const byDtype = rank(b.dtype) - rank(a.dtype);
      expect(byDtype).toBeLessThanOrEqual(0);
      if (byDtype === 0) expect(Buffer.compare(Buffer.from(a.name), Buffer.from(b.name))).toBeLessThan(0);
    }
    for (const t of order) {
      const size = t.shape.length ? t.byteLength / numel(t.shape) : t.byteLength;
      if (numel(t.shape) > 0) expect((h.dataStart + t.dataOffsets[0]) % size).toBe(0);
    }
    // And the bytes come back.
    const p = parseSafetensors(new Uint8Array(await fsp.readFile(f)));
    for (const [name, t] of Object.entries(tensors)) {
      const got = p.tensors.get(name)!;
      expect(Buffer.compare(Buffer.from(got.data.buffer, got.data.byteOffset, got.data.byteLength), Buffer.from(t.data as Uint8Array))).toBe(0);
    }
  });
});

// ----------------------------------------------------------------------------------------------
// Round trips

describe('round trip', () => {
  const r = rng(SEED ^ 0x2f);
  const shapes = [[], [0], [1], [7], [3, 0, 2], [3, 5], [2, 3, 5, 7], [1, 1, 1, 1, 1], [13, 1, 3]];

  function randomData(dtype: string, n: number): Float32Array | Uint16Array | Int32Array | BigInt64Array | Uint8Array {
    switch (dtype) {
      case 'float32': return new Float32Array(randomBytes(4 * n, r).buffer); // any bit pattern: NaN payloads, -0, denormals
      case 'float16': case 'bfloat16': return new Uint16Array(randomBytes(2 * n, r).buffer);
      case 'int32': return new Int32Array(randomBytes(4 * n, r).buffer);
      case 'int64': return new BigInt64Array(randomBytes(8 * n, r).buffer);
      default: return randomBytes(n, r);
    }
  }

  it('every facecuda dtype, odd shapes, scalars and zero-size tensors, through Tensors', async () => {
    const originals = new Map<string, { dtype: string; shape: number[]; data: ArrayBufferView }>();
    const tensors = new Map<string, Tensor>();
    for (const dtype of ['float32', 'float16', 'bfloat16', 'int32', 'int64', 'uint8'] as const) {
      for (const shape of shapes) {
        const name = `${dtype}/${shape.join('x') || 'scalar'}`;
        const data = randomData(dtype, numel(shape));
        originals.set(name, { dtype, shape, data });
        tensors.set(name, Tensor.from(data as Float32Array, shape, { device: 'cpu', dtype }));
      }
    }
    const f = tmpFile('roundtrip');
    await writeSafetensors(f, tensors, { seed: String(SEED) });
    const back = await readSafetensors(f, { device: 'cpu' });
    expect(back.metadata).toEqual({ seed: String(SEED) });
    expect(back.tensors.size).toBe(originals.size);
    for (const [name, o] of originals) {
      const t = back.tensors.get(name)!;
      expect(t.dtype).toBe(o.dtype);
      expect(t.shape).toEqual(o.shape);
      const got = (await t.toArray()) as ArrayBufferView;
      // Compare bytes, so NaN payloads and -0 count.
      expect(Buffer.compare(bytesOf(got), bytesOf(o.data))).toBe(0);
      t.dispose();
    }
    for (const t of tensors.values()) t.dispose();
  });

  it('every safetensors dtype through raw arrays and parseSafetensors', async () => {
    const bytesPer: Record<string, number> = { C64: 8, F64: 8, I64: 8, U64: 8, I32: 4, U32: 4, F32: 4, I16: 2, U16: 2, F16: 2, BF16: 2 };
    const tensors: Record<string, RawTensor> = {};
    const wanted = new Map<string, Uint8Array>();
    for (const dtype of SAFETENSORS_DTYPES) {
      for (const shape of [[], [0], [2, 3], [4, 2]]) {
        const bits = dtype === 'F4' ? 4 : dtype === 'F6_E2M3' || dtype === 'F6_E3M2' ? 6 : 8 * (bytesPer[dtype] ?? 1);
        if ((numel(shape) * bits) % 8) continue; // not whole bytes: the writer refuses, tested below
        const bytes = randomBytes((numel(shape) * bits) / 8, r);
        const name = `${dtype}:${shape.join('x')}`;
        tensors[name] = { dtype, shape, data: bytes };
        wanted.set(name, bytes);
      }
    }
    const f = tmpFile();
    await writeSafetensors(f, tensors);
    const p = parseSafetensors(new Uint8Array(await fsp.readFile(f)));
    for (const [name, bytes] of wanted) {
      const t = p.tensors.get(name)!;
      expect(t.shape).toEqual(tensors[name].shape);
      expect(Buffer.compare(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength), Buffer.from(bytes))).toBe(0);
    }
    const k = (name: string): string => Object.prototype.toString.call(p.tensors.get(name)!.data);
    expect(k('C64:2x3')).toBe('[object Float32Array]');
    expect(p.tensors.get('C64:2x3')!.data.length).toBe(12); // re, im pairs
    expect(k('U64:2x3')).toBe('[object BigUint64Array]');
    expect(k('U32:2x3')).toBe('[object Uint32Array]');
    expect(k('F8_E4M3:2x3')).toBe('[object Uint8Array]');
    expect(k('F4:2x3')).toBe('[object Uint8Array]');
    expect(p.tensors.get('F4:2x3')!.data.length).toBe(3);
    // Writing an F4 tensor of odd size is refused (not whole bytes).
    const e = await catchAsync(writeSafetensors(tmpFile(), { x: { dtype: 'F4', shape: [3], data: new Uint8Array(2) } }));
    expectCode(e, 'OUT_OF_RANGE', /whole number of bytes/);
  });

  it('metadata round trip: unicode, empty strings, prototype-like keys', async () => {
    const metadata: Record<string, string> = {
      '': 'empty key',
      empty: '',
      unicode: 'naïve café 中文 \u{1F600} \u2028 \u0000 \u001f \u007f',
      json: JSON.stringify({ mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5], colour: 'RGB', template: [[38.29, 51.69]] }),
      constructor: 'not a function',
      'a"b\\c': 'quoted key',
    };
    Object.defineProperty(metadata, '__proto__', { value: 'proto', enumerable: true, configurable: true, writable: true });
    const f = tmpFile();
    await writeSafetensors(f, { x: { dtype: 'uint8', shape: [1], data: new Uint8Array([9]) } }, metadata);
    const { metadata: back, tensors } = await readSafetensors(f, { device: 'cpu' });
    expect(Object.keys(back).sort()).toEqual(Object.keys(metadata).sort());
    for (const k of Object.keys(metadata)) expect(back[k]).toBe(metadata[k]);
    expect(Object.getPrototypeOf(back)).toBe(Object.prototype);
    tensors.get('x')!.dispose();
    // No metadata argument: no __metadata__ in the file, {} when read.
    await writeSafetensors(f, {});
    expect((await fsp.readFile(f)).toString()).not.toContain('__metadata__');
    expect((await readSafetensorsHeader(f)).metadata).toEqual({});
  });

  it('reads tensors at unaligned offsets (written by another tool) by copying them', async () => {
    // U8 [3] first, then F32 [2] at offset 3 and I64 [1] at offset 11: legal, but not aligned.
    const data = new Uint8Array(3 + 8 + 8);
    data.set([1, 2, 3]);
    new DataView(data.buffer).setFloat32(3, 1.5, true);
    new DataView(data.buffer).setFloat32(7, -2.25, true);
    new DataView(data.buffer).setBigInt64(11, -5n, true);
    const bytes = build({
      u: { dtype: 'U8', shape: [3], data_offsets: [0, 3] },
      f: { dtype: 'F32', shape: [2], data_offsets: [3, 11] },
      i: { dtype: 'I64', shape: [1], data_offsets: [11, 19] },
    }, data);
    const f = tmpFile();
    await fsp.writeFile(f, bytes);
    const { tensors } = await readSafetensors(f, { device: 'cpu' });
    expect(await values(tensors.get('f')!)).toEqual([1.5, -2.25]);
    expect(Array.from((await tensors.get('i')!.toArray()) as BigInt64Array)).toEqual([-5n]);
    expect(await values(tensors.get('u')!)).toEqual([1, 2, 3]);
    for (const t of tensors.values()) t.dispose();
    // The buffer parser, also from a buffer that itself starts at an odd offset.
    const shifted = new Uint8Array(bytes.length + 1);
    shifted.set(bytes, 1);
    for (const b of [bytes, shifted.subarray(1)]) {
      const p = parseSafetensors(b);
      expect(Array.from(p.tensors.get('f')!.data as Float32Array)).toEqual([1.5, -2.25]);
      expect(Array.from(p.tensors.get('i')!.data as BigInt64Array)).toEqual([-5n]);
    }
  });

  it('readSafetensors reads many tensors in batches and a file larger than one batch', async () => {
    const r2 = rng(SEED ^ 0x77);
    const big = new Float32Array(5 * 1024 * 1024 + 3); // 20 MiB: over one 16 MiB batch
    for (let i = 0; i < big.length; i += 4099) big[i] = r2();
    const tensors: Record<string, RawTensor> = { big: { dtype: 'F32', shape: [big.length], data: big } };
    for (let i = 0; i < 200; i++) tensors[`small.${i}`] = { dtype: 'I32', shape: [i % 5], data: Int32Array.from({ length: i % 5 }, (_, j) => i * 10 + j) };
    const f = tmpFile();
    await writeSafetensors(f, tensors);
    const back = await readSafetensors(f, { device: 'cpu' });
    expect(back.tensors.size).toBe(201);
    expect(Buffer.compare(Buffer.from((await back.tensors.get('big')!.toArray()).buffer), Buffer.from(big.buffer))).toBe(0);
    for (let i = 0; i < 200; i++) expect(await values(back.tensors.get(`small.${i}`)!)).toEqual(Array.from({ length: i % 5 }, (_, j) => i * 10 + j));
    for (const t of back.tensors.values()) t.dispose();
  });

  it('reads the header of a huge (sparse) file without reading its data; offsets beyond 2^32', async () => {
    const n = 2 ** 32 + 8; // U8 [2^32 + 8]: 4 GiB of data, never read
    const header = build({ __metadata__: { kind: 'sparse' }, huge: { dtype: 'U8', shape: [n], data_offsets: [0, n] } });
    const f = tmpFile('sparse');
    const fh = await fsp.open(f, 'w');
    try {
      await fh.write(header, 0, header.length, 0);
      await fh.truncate(header.length + n);
    } finally {
      await fh.close();
    }
    const h = await readSafetensorsHeader(f);
    expect(h.fileSize).toBe(header.length + n);
    expect(h.tensors.get('huge')).toMatchObject({ dtype: 'U8', shape: [n], dataOffsets: [0, n], byteLength: n });
    const none = await readSafetensors(f, { names: [] });
    expect(none.tensors.size).toBe(0);
    expect(none.metadata).toEqual({ kind: 'sparse' });
    await fsp.unlink(f);
  });
});

// ----------------------------------------------------------------------------------------------
// Corruption: every failure is CORRUPT_FILE with a message naming what is wrong, never a crash

describe('corrupt files', () => {
  let fixture: Uint8Array;
  beforeAll(async () => {
    fixture = new Uint8Array(await fsp.readFile(FIXTURE));
  });

  it('every proper prefix of the fixture (truncation at every offset)', async () => {
    const n = Number(Buffer.from(fixture).readBigUInt64LE(0));
    for (let len = 0; len < fixture.length; len++) {
      const prefix = fixture.slice(0, len);
      const err = catchSync(() => parseSafetensors(prefix));
      expectCode(err, 'CORRUPT_FILE');
      if (len < 8) expect((err as Error).message).toMatch(/shorter than the 8-byte header length/);
      else if (len < 8 + n) expect((err as Error).message).toMatch(/runs past the end of the file/);
      else expect((err as Error).message).toMatch(/truncated/);
    }
  });

  it('every proper prefix of a small file, as a file, through both file readers', async () => {
    const small = build({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'U8', shape: [3], data_offsets: [8, 11] } }, new Uint8Array(11));
    expect(() => parseSafetensors(small)).not.toThrow();
    const f = tmpFile('prefix');
    for (let len = 0; len < small.length; len++) {
      await fsp.writeFile(f, small.subarray(0, len));
      expectCode(await catchAsync(readSafetensorsHeader(f)), 'CORRUPT_FILE');
      expectCode(await catchAsync(readSafetensors(f, { device: 'cpu' })), 'CORRUPT_FILE');
    }
  });

  it('trailing bytes after the last tensor', async () => {
    const longer = new Uint8Array(fixture.length + 3);
    longer.set(fixture);
    await expectCorrupt(longer, /3 unexpected bytes after the last tensor/);
  });

  it('flipped bytes anywhere in the length or header: CORRUPT_FILE or a valid parse, never a crash', () => {
    const n = Number(Buffer.from(fixture).readBigUInt64LE(0));
    let corrupt = 0;
    let valid = 0;
    for (let pos = 0; pos < 8 + n; pos++) {
      for (const mask of [0x01, 0x20, 0x80, 0xff]) {
        const b = fixture.slice();
        b[pos] ^= mask;
        const err = catchSync(() => parseSafetensors(b));
        if (err === undefined) valid++;
        else {
          expectCode(err, 'CORRUPT_FILE');
          corrupt++;
        }
      }
    }
    // Flipping a letter inside a name or a metadata value leaves a valid file; most flips do not.
    expect(corrupt).toBeGreaterThan(valid);
  });

  it('random garbage in the header, seeded', () => {
    const r = rng(SEED ^ 0x99);
    const n = Number(Buffer.from(fixture).readBigUInt64LE(0));
    for (let trial = 0; trial < 2000; trial++) {
      const b = fixture.slice();
      const count = 1 + Math.floor(r() * 8);
      for (let k = 0; k < count; k++) b[8 + Math.floor(r() * n)] = Math.floor(r() * 256);
      const err = catchSync(() => parseSafetensors(b));
      if (err !== undefined) expectCode(err, 'CORRUPT_FILE');
    }
  });

  const F32x2 = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };
  const eight = new Uint8Array(8);
  const cases: [string, Uint8Array, RegExp][] = [
    ['header length 2^64 - 1', (() => { const b = build({}); new DataView(b.buffer).setBigUint64(0, 2n ** 64n - 1n, true); return b; })(), /exceeds the 100000000-byte limit/],
    ['header length just over the limit', (() => { const b = build({}); new DataView(b.buffer).setBigUint64(0, BigInt(MAX_HEADER_LENGTH + 1), true); return b; })(), /exceeds the 100000000-byte limit/],
    ['header length past the end of the file', (() => { const b = build({}); new DataView(b.buffer).setBigUint64(0, 9n, true); return b; })(), /runs past the end of the file/],
    ['empty header', build('', undefined, false), /does not start with '\{'/],
    ['header starting with a space', build(' {}'), /does not start with '\{'/],
    ['header starting with a byte-order mark', build('\uFEFF{}'), /does not start with '\{'/],
    ['header that is an array', build('[]'), /does not start with '\{'/],
    ['invalid UTF-8', (() => { const b = build('{"__metadata__":{"k":"vvvv"}}'); b[8 + 24] = 0xff; return b; })(), /not valid UTF-8/],
    ['truncated JSON', build('{"a":'), /not valid JSON/],
    ['trailing comma', build('{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},}', eight), /not valid JSON.*expected a string key/],
    ['text after the object', build('{} x'), /not valid JSON.*after the header object/],
    ['NUL padding', build('{}\0\0\0\0\0\0', undefined, false), /not valid JSON/],
    ['single quotes', build("{'a':1}"), /not valid JSON/],
    ['control character in a string', build('{"a\tb":1}'), /control character/],
    ['lone surrogate escape', build('{"__metadata__":{"k":"\\ud800"}}'), /lone surrogate/],
    ['bad escape', build('{"__metadata__":{"k":"\\x41"}}'), /invalid escape/],
    ['deep nesting', build(`{"a":${'['.repeat(100000)}${']'.repeat(100000)}}`), /nested deeper than/],
    ['duplicate tensor key', build(`{"a":${JSON.stringify(F32x2)},"a":${JSON.stringify(F32x2)}}`, eight), /duplicate key "a"/],
    ['duplicate __metadata__', build('{"__metadata__":{},"__metadata__":{}}'), /duplicate key "__metadata__"/],
    ['duplicate field in an entry', build('{"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}}', eight), /duplicate key "dtype"/],
    ['duplicate metadata key', build('{"__metadata__":{"k":"1","k":"2"}}'), /duplicate key "k"/],
    ['entry that is not an object', build({ a: [1, 2] }), /tensor "a" must be an object/],
    ['missing shape', build({ a: { dtype: 'F32', data_offsets: [0, 8] } }, eight), /tensor "a" has no 'shape' field/],
    ['missing dtype', build({ a: { shape: [2], data_offsets: [0, 8] } }, eight), /tensor "a" has no 'dtype' field/],
    ['missing data_offsets', build({ a: { dtype: 'F32', shape: [2] } }, eight), /tensor "a" has no 'data_offsets' field/],
    ['extra field', build({ a: { ...F32x2, stride: [1] } }, eight), /tensor "a" has an unexpected field "stride"/],
    ['unknown dtype', build({ a: { ...F32x2, dtype: 'F128' } }, eight), /tensor "a" has an unknown dtype "F128"/],
    ['lower-case dtype', build({ a: { ...F32x2, dtype: 'f32' } }, eight), /unknown dtype "f32"/],
    ['dtype not a string', build({ a: { ...F32x2, dtype: 4 } }, eight), /unknown dtype 4/],
    ['negative dimension', build({ a: { ...F32x2, shape: [-2] } }, eight), /tensor "a" has shape \[-2\]/],
    ['fractional dimension', build('{"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}', eight), /shape \[2\.0\]/],
    ['exponent dimension', build('{"a":{"dtype":"F32","shape":[2e0],"data_offsets":[0,8]}}', eight), /shape \[2e0\]/],
    ['string dimension', build({ a: { ...F32x2, shape: ['2'] } }, eight), /shape \["2"\]/],
    ['shape not an array', build({ a: { ...F32x2, shape: 2 } }, eight), /shape 2;/],
    ['dimension above 2^53', build('{"a":{"dtype":"U8","shape":[9007199254740993],"data_offsets":[0,8]}}', eight), /shape \[9007199254740993\]/],
    ['three offsets', build({ a: { ...F32x2, data_offsets: [0, 8, 8] } }, eight), /tensor "a" has data_offsets \[0, 8, 8\]/],
    ['negative offset', build({ a: { ...F32x2, data_offsets: [-8, 0] } }, eight), /data_offsets \[-8, 0\]/],
    ['end before begin', build({ a: { dtype: 'F32', shape: [0], data_offsets: [8, 0] } }, eight), /end before begin/],
    ['wrong byte size', build({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, eight), /tensor "a" has data_offsets \[0, 8\] holding 8 bytes, but F32 \[3\] needs 12/],
    ['wrong byte size for the dtype', build({ a: { dtype: 'F64', shape: [2], data_offsets: [0, 8] } }, eight), /F64 \[2\] needs 16/],
    ['sub-byte dtype of odd size', build({ a: { dtype: 'F4', shape: [3], data_offsets: [0, 2] } }, new Uint8Array(2)), /not a whole number of bytes/],
    ['overflowing element count', build({ a: { dtype: 'F32', shape: [2 ** 40, 2 ** 40], data_offsets: [0, 8] } }, eight), /needs 4835703278458516698824704/],
    ['overlapping tensors', build({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, eight), /tensor "b" \[4, 8\] overlaps tensor "a" \[0, 8\]/],
    ['identical ranges', build({ a: F32x2, b: F32x2 }, eight), /overlaps/],
    ['gap between tensors', build({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } }, new Uint8Array(12)), /gap of 4 bytes before tensor "b"/],
    ['first tensor not at 0', build({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, eight), /gap of 4 bytes before tensor "a"/],
    ['offsets past the end of the file', build({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, eight), /tensor data ends at byte \d+ but the file has only \d+ bytes/],
    ['offset above 2^53', build('{"a":{"dtype":"U8","shape":[0],"data_offsets":[9007199254740993,9007199254740993]}}'), /data_offsets \[9007199254740993, 9007199254740993\]/],
    ['metadata value a number', build({ __metadata__: { epoch: 3 } }), /__metadata__ "epoch" must be a string, but it is 3/],
    ['metadata value null', build({ __metadata__: { k: null } }), /__metadata__ "k" must be a string, but it is null/],
    ['metadata value an object', build({ __metadata__: { k: { a: '1' } } }), /__metadata__ "k" must be a string/],
    ['metadata an array', build({ __metadata__: ['a'] }), /__metadata__ must be an object of strings/],
    ['metadata a string', build({ __metadata__: 'pt' }), /__metadata__ must be an object of strings/],
  ];
  it.each(cases)('%s', async (_name, bytes, message) => {
    await expectCorrupt(bytes, message);
  });

  it('accepts what the format allows: __metadata__ null, whitespace around tokens, keys in any order', () => {
    const p = parseSafetensors(build('{ "__metadata__" : null ,\n\t"b":{"data_offsets":[4,8],"shape":[1],"dtype":"F32"}, "a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}\r\n', eight));
    expect(p.metadata).toEqual({});
    expect([...p.tensors.keys()]).toEqual(['a', 'b']);
  });

  it('messages name the file and the tensor', async () => {
    const f = tmpFile('named');
    await fsp.writeFile(f, build({ 'conv1.weight': { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, eight));
    const err = await catchAsync(readSafetensors(f));
    expectCode(err, 'CORRUPT_FILE');
    expect((err as Error).message).toBe(`Corrupt safetensors file '${f}': tensor "conv1.weight" has data_offsets [0, 8] holding 8 bytes, but F32 [3] needs 12`);
  });
});

// ----------------------------------------------------------------------------------------------
// File system errors and arguments

describe('errors', () => {
  it('IO_ERROR with the path for a missing file or a directory', async () => {
    const missing = path.join(dir, 'does-not-exist.safetensors');
    for (const p of [readSafetensors(missing), readSafetensorsHeader(missing)]) {
      const err = await catchAsync(p);
      expectCode(err, 'IO_ERROR', /ENOENT/);
      expect((err as Error).message).toContain(missing);
      expect(((err as Error).cause as NodeJS.ErrnoException).code).toBe('ENOENT');
    }
    expectCode(await catchAsync(readSafetensors(dir)), 'IO_ERROR', /not a regular file/);
  });

  it('argument checks: TypeError with the style message', async () => {
    const f = tmpFile();
    await writeSafetensors(f, { a: { dtype: 'U8', shape: [1], data: new Uint8Array(1) } });
    const type = async (p: Promise<unknown>, re: RegExp): Promise<void> => {
      const e = await catchAsync(p);
      expect(e).toBeInstanceOf(TypeError);
      expectCode(e, 'INVALID_ARGUMENT', re);
    };
    await type(readSafetensors(f, { name: ['a'] } as never), /option 'name'/);
    await type(readSafetensors(f, { names: 'a' } as never), /Expected an array of tensor names \(strings\) for options.names but received "a"/);
    await type(readSafetensors(f, { names: ['b'] }), /Expected names of tensors in .* for options.names but received "b"/);
    await type(readSafetensors(f, { device: 'gpu' as never }), /for options.device/);
    await type(readSafetensors(42 as never), /for path/);
    await type(writeSafetensors(f, [] as never), /for tensors/);
    await type(writeSafetensors(f, { a: new Float32Array(2) as never }), /Expected a Tensor or a \{ dtype, shape, data \} object for tensors\["a"\]/);
    await type(writeSafetensors(f, { a: { dtype: 'float64', shape: [1], data: new Float64Array(1) } as never }), /for tensors\["a"\].dtype/);
    await type(writeSafetensors(f, { a: { dtype: 'F32', shape: [-1], data: new Float32Array(1) } }), /non-negative integers for tensors\["a"\].shape/);
    await type(writeSafetensors(f, { a: { dtype: 'F32', shape: [1.5], data: new Float32Array(1) } }), /tensors\["a"\].shape/);
    await type(writeSafetensors(f, { a: { dtype: 'F32', shape: [2], data: new Int32Array(2) } }), /Expected a Float32Array or a Uint8Array of raw bytes for dtype F32 for tensors\["a"\].data/);
    await type(writeSafetensors(f, { __metadata__: { dtype: 'U8', shape: [0], data: new Uint8Array(0) } }), /reserved for metadata/);
    await type(writeSafetensors(f, { ['\ud800']: { dtype: 'U8', shape: [0], data: new Uint8Array(0) } }), /lone surrogates/);
    await type(writeSafetensors(f, {}, { epoch: 3 as never }), /Expected a string for metadata\["epoch"\]/);
    await type(writeSafetensors(f, {}, 'pt' as never), /for metadata/);
    await type(writeSafetensors(f, new Map([[1 as never, { dtype: 'U8', shape: [0], data: new Uint8Array(0) }]])), /for tensor name/);
    // None of these touched the file.
    expect(parseSafetensors(new Uint8Array(await fsp.readFile(f))).tensors.get('a')!.shape).toEqual([1]);
    expect(await leftovers(dir)).toEqual([]);
    // Buffer argument.
    expect(catchSync(() => parseSafetensors(new Uint16Array(8) as never))).toBeInstanceOf(TypeError);
  });

  it('a file with tensors a Tensor cannot hold: NOT_IMPLEMENTED unless left out with names', async () => {
    const f = tmpFile();
    await writeSafetensors(f, {
      d: { dtype: 'F64', shape: [2], data: new Float64Array([1, 2]) },
      six: { dtype: 'U8', shape: [1, 1, 1, 1, 1, 2], data: new Uint8Array(2) },
      ok: { dtype: 'float32', shape: [2], data: new Float32Array([3, 4]) },
    });
    expectCode(await catchAsync(readSafetensors(f, { names: ['ok', 'd'] })), 'NOT_IMPLEMENTED', /tensor "d".*F64.*options.names/);
    expectCode(await catchAsync(readSafetensors(f, { names: ['six'] })), 'NOT_IMPLEMENTED', /6 dimensions/);
    const { tensors } = await readSafetensors(f, { names: ['ok'], device: 'cpu' });
    expect(await values(tensors.get('ok')!)).toEqual([3, 4]);
    tensors.get('ok')!.dispose();
  });
});

// ----------------------------------------------------------------------------------------------
// Atomic writes

describe('atomic write', () => {
  const original = (): Record<string, RawTensor> => ({ keep: { dtype: 'I32', shape: [3], data: new Int32Array([7, 8, 9]) } });

  async function withExisting(test: (file: string, before: Buffer) => Promise<void>): Promise<void> {
    const sub = await fsp.mkdtemp(path.join(dir, 'atomic-'));
    const file = path.join(sub, 'model.safetensors');
    await writeSafetensors(file, original(), { version: '1' });
    const before = await fsp.readFile(file);
    await test(file, before);
    expect(Buffer.compare(await fsp.readFile(file), before)).toBe(0);
    expect(await fsp.readdir(sub)).toEqual(['model.safetensors']);
  }

  it('a data accessor that throws midway leaves the old file and no temporary file', async () => {
    await withExisting(async (file) => {
      let reads = 0;
      const bad = {
        dtype: 'F32' as const,
        shape: [2],
        get data(): Float32Array {
          reads++;
          throw new Error('sensor unplugged');
        },
      };
      // 'a' (F32) is written first, then 'b' throws: the header and a tensor are already in the temp file.
      const tensors = { a: { dtype: 'F32', shape: [1024], data: new Float32Array(1024) } as RawTensor, b: bad };
      await expect(writeSafetensors(file, tensors, { version: '2' })).rejects.toThrow('sensor unplugged');
      expect(reads).toBe(1);
    });
  });

  it('data of the wrong size midway: SHAPE_MISMATCH, old file intact', async () => {
    await withExisting(async (file) => {
      const tensors: Record<string, RawTensor> = {
        a: { dtype: 'F64', shape: [4], data: new Float64Array(4) },
        b: { dtype: 'F32', shape: [4], data: new Float32Array(3) },
      };
      expectCode(await catchAsync(writeSafetensors(file, tensors)), 'SHAPE_MISMATCH', /tensors\["b"\].data has 12 bytes but F32 \[4\] needs 16/);
    });
  });

  it('a Tensor disposed before the write: DISPOSED, old file intact', async () => {
    await withExisting(async (file) => {
      const t = Tensor.from([1, 2], [2], { device: 'cpu' });
      t.dispose();
      expectCode(await catchAsync(writeSafetensors(file, { t })), 'DISPOSED', /tensors\["t"\]/);
    });
  });

  it('a folder that does not exist: IO_ERROR, nothing created', async () => {
    const file = path.join(dir, 'no-such-folder', 'model.safetensors');
    const err = await catchAsync(writeSafetensors(file, original()));
    expectCode(err, 'IO_ERROR', /ENOENT/);
    expect((err as Error).message).toContain(path.join(dir, 'no-such-folder'));
    await expect(fsp.stat(path.dirname(file))).rejects.toThrow();
  });

  it('a target that is a directory: IO_ERROR at the rename, the directory and its contents untouched', async () => {
    const sub = await fsp.mkdtemp(path.join(dir, 'target-dir-'));
    const target = path.join(sub, 'model.safetensors');
    await fsp.mkdir(target);
    await fsp.writeFile(path.join(target, 'inside'), 'x');
    expectCode(await catchAsync(writeSafetensors(target, original())), 'IO_ERROR', /rename/);
    expect(await fsp.readdir(sub)).toEqual(['model.safetensors']);
    expect(await fsp.readdir(target)).toEqual(['inside']);
  });

  it('a successful write replaces the old file completely and leaves no temporary file', async () => {
    const sub = await fsp.mkdtemp(path.join(dir, 'replace-'));
    const file = path.join(sub, 'model.safetensors');
    await writeSafetensors(file, { big: { dtype: 'U8', shape: [4096], data: new Uint8Array(4096).fill(1) } });
    await writeSafetensors(file, original(), { version: '2' });
    const { tensors, metadata } = await readSafetensors(file, { device: 'cpu' });
    expect(metadata).toEqual({ version: '2' });
    expect([...tensors.keys()]).toEqual(['keep']);
    expect(await values(tensors.get('keep')!)).toEqual([7, 8, 9]);
    tensors.get('keep')!.dispose();
    expect(await fsp.readdir(sub)).toEqual(['model.safetensors']);
  });
});
