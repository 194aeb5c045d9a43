/**
 * Tensor: an n-dimensional array (rank 0 to 5) on the CPU or a CUDA device.
 *
 * Data is copied in at creation and out with {@link Tensor.toArray}; the storage is reference
 * counted in the engine and freed by {@link Tensor.dispose} (or, as a safety net, when the
 * object is garbage collected — GPU memory is invisible to V8's GC, so dispose explicitly).
 * Operations queue on the tensor's device in program order and return promises.
 */
import { addon, Binding } from './binding';
import { resolveDevice, DeviceName, DeviceSpec } from './device';
import { FacecudaError, invalidParameterError, outOfRangeError, withCallSite } from './errors';
import { assertKnownOptions, assertOneOf, optionsObject } from './validate';

/** Element types. float16 and bfloat16 are stored and returned as raw 16-bit words (Uint16Array). */
export type DType = Binding.DTypeName;
export const DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16', 'int32', 'int64', 'uint8'];

/** What `toArray()` returns for each dtype. */
export type ArrayFor<D extends DType> = D extends 'float32'
  ? Float32Array
  : D extends 'int32'
    ? Int32Array
    : D extends 'int64'
      ? BigInt64Array
      : D extends 'uint8'
        ? Uint8Array
        : Uint16Array;

export type TensorData = Float32Array | Uint16Array | Int32Array | BigInt64Array | Uint8Array | number[];

export interface TensorOptions {
  /** Where the tensor lives (default `'auto'`, see {@link resolveDevice}). */
  device?: DeviceSpec;
  /** Element type; inferred from a typed array, `'float32'` for a number array. */
  dtype?: DType;
}

export const MAX_RANK = 5;

const NATIVE = Symbol('facecuda.native');

function typedArrayDType(data: ArrayBufferView): DType | undefined {
  const tag = Object.prototype.toString.call(data); // realm-independent (jest runs tests in another realm)
  switch (tag) {
    case '[object Float32Array]': return 'float32';
    case '[object Int32Array]': return 'int32';
    case '[object BigInt64Array]': return 'int64';
    case '[object Uint8Array]': return 'uint8';
    case '[object Uint16Array]': return undefined; // float16 or bfloat16: must be named
    default: return undefined;
  }
}

/** Rounds float32 values to bfloat16 words (round to nearest even). */
export function toBfloat16(values: Float32Array): Uint16Array {
  const u = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < u.length; i++) {
    const x = u[i];
    if ((x & 0x7fffffff) > 0x7f800000) out[i] = (x >>> 16) | 0x40;
    else out[i] = ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
  }
  return out;
}

/** Rounds float32 values to IEEE half words (round to nearest even; overflow to Inf). */
export function toFloat16(values: Float32Array): Uint16Array {
  const u = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < u.length; i++) {
    const x = u[i];
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let man = x & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (man ? 0x200 | (man >>> 13) : 0);
      continue;
    }
    const e = exp - 127 + 15;
    if (e >= 0x1f) {
      out[i] = sign | 0x7c00;
    } else if (e <= 0) {
      if (e < -10) {
        out[i] = sign;
      } else {
        man |= 0x800000;
        const shift = 14 - e;
        let half = man >>> shift;
        const rem = man & ((1 << shift) - 1);
        const mid = 1 << (shift - 1);
        if (rem > mid || (rem === mid && half & 1)) half++;
        out[i] = sign | half;
      }
    } else {
      let half = sign | (e << 10) | (man >>> 13);
      const rem = man & 0x1fff;
      if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
      out[i] = half;
    }
  }
  return out;
}

function checkShape(shape: unknown): number[] {
  if (!Array.isArray(shape)) throw invalidParameterError('shape', 'an array of non-negative integers', shape);
  if (shape.length > MAX_RANK) throw outOfRangeError('shape', `at most ${MAX_RANK} dimensions`, shape);
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isInteger(d)) throw invalidParameterError('shape', 'an array of non-negative integers', shape);
    if (d < 0) throw outOfRangeError('shape', 'an array of non-negative integers', shape);
  }
  return shape.slice() as number[];
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function convertData(data: TensorData, dtype: DType): Binding.NativeArray {
  if (Array.isArray(data)) {
    const isFloat = dtype === 'float32' || dtype === 'float16' || dtype === 'bfloat16';
    const range: Partial<Record<DType, [number, number]>> = { int32: [-2147483648, 2147483647], uint8: [0, 255], int64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER] };
    for (const v of data) {
      if (typeof v !== 'number' || (!isFloat && !Number.isInteger(v))) {
        throw invalidParameterError('data', isFloat ? 'an array of numbers' : `an array of integers for dtype '${dtype}'`, data);
      }
      const r = range[dtype];
      if (r && (v < r[0] || v > r[1])) throw outOfRangeError('data', `values between ${r[0]} and ${r[1]} for dtype '${dtype}'`, v);
    }
    switch (dtype) {
      case 'float32': return Float32Array.from(data);
      case 'float16': return toFloat16(Float32Array.from(data));
      case 'bfloat16': return toBfloat16(Float32Array.from(data));
      case 'int32': return Int32Array.from(data);
      case 'int64': return BigInt64Array.from(data.map((v) => BigInt(v)));
      case 'uint8': return Uint8Array.from(data);
    }
  }
  const inferred = typedArrayDType(data);
  const tag = Object.prototype.toString.call(data);
  if (tag === '[object Uint16Array]' && (dtype === 'float16' || dtype === 'bfloat16')) return data as Uint16Array;
  if (tag === '[object Float32Array]' && dtype === 'float16') return toFloat16(data as Float32Array);
  if (tag === '[object Float32Array]' && dtype === 'bfloat16') return toBfloat16(data as Float32Array);
  if (inferred !== dtype) {
    const expected = dtype === 'float16' || dtype === 'bfloat16' ? 'a Uint16Array (raw words) or a Float32Array' : `a ${ARRAY_NAME[dtype]}`;
    throw invalidParameterError('data', `${expected} for dtype '${dtype}'`, data);
  }
  return data as Binding.NativeArray;
}

const ARRAY_NAME: Record<DType, string> = {
  float32: 'Float32Array',
  float16: 'Uint16Array',
  bfloat16: 'Uint16Array',
  int32: 'Int32Array',
  int64: 'BigInt64Array',
  uint8: 'Uint8Array',
};

/**
 * An n-dimensional array on a device.
 *
 * @example
 * const t = Tensor.from(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3], { device: 'cpu' });
 * console.log(t.shape, t.dtype, t.device); // [2, 3] 'float32' 'cpu'
 * const values = await t.toArray();        // Float32Array [1, 2, 3, 4, 5, 6]
 * t.dispose();
 */
export class Tensor {
  /** @internal */
  [NATIVE]: Binding.NativeTensor;
  readonly #shape: readonly number[];
  readonly #dtype: DType;
  readonly #device: DeviceName;

  /** @internal Use {@link Tensor.from} or {@link Tensor.zeros}. */
  constructor(native: Binding.NativeTensor) {
    this[NATIVE] = native;
    this.#shape = Object.freeze(native.shape.slice());
    this.#dtype = native.dtype;
    this.#device = native.device as DeviceName;
  }

  /**
   * A tensor holding a copy of `data` with the given shape.
   *
   * @param data values in row-major order: a typed array matching the dtype, or numbers
   * @param shape dimensions (rank 0..5); their product must equal the number of values
   * @throws TypeError / RangeError for bad arguments; `SHAPE_MISMATCH` when sizes differ;
   *   `CUDA_UNAVAILABLE` for an explicit CUDA device that cannot be used
   * @example const x = Tensor.from([1, 2, 3, 4], [2, 2]);
   */
  static from(data: TensorData, shape: readonly number[], options?: TensorOptions): Tensor {
    // Apply defaults
    const opts = optionsObject(options, 'options');
    assertKnownOptions(opts, 'Tensor.from', ['device', 'dtype']);
    // Validate arguments
    if (!Array.isArray(data) && !ArrayBuffer.isView(data)) throw invalidParameterError('data', 'a typed array or an array of numbers', data);
    const dims = checkShape(shape);
    if (opts.dtype !== undefined) assertOneOf(opts.dtype, 'dtype', DTYPES);
    const dtype: DType = (opts.dtype as DType | undefined) ?? (Array.isArray(data) ? 'float32' : typedArrayDType(data) ?? 'float16');
    if (!Array.isArray(data) && opts.dtype === undefined && typedArrayDType(data) === undefined) {
      throw invalidParameterError('data', "a Float32Array, Int32Array, BigInt64Array or Uint8Array (a Uint16Array needs dtype 'float16' or 'bfloat16')", data);
    }
    const length = Array.isArray(data) ? data.length : (data as { length: number }).length;
    if (length !== numel(dims)) {
      throw new FacecudaError('SHAPE_MISMATCH', `data has ${length} values but shape [${dims.join(', ')}] needs ${numel(dims)}`);
    }
    // Interpret options
    const device = resolveDevice(opts.device);
    const native = convertData(data, dtype);
    return new Tensor(addon().tensorFromData(native, dims, dtype, device));
  }

  /**
   * A tensor of zeros.
   * @example const z = Tensor.zeros([4, 512], { dtype: 'float32', device: 'cpu' });
   */
  static zeros(shape: readonly number[], options?: TensorOptions): Tensor {
    const opts = optionsObject(options, 'options');
    assertKnownOptions(opts, 'Tensor.zeros', ['device', 'dtype']);
    const dims = checkShape(shape);
    if (opts.dtype !== undefined) assertOneOf(opts.dtype, 'dtype', DTYPES);
    const dtype = (opts.dtype as DType | undefined) ?? 'float32';
    return new Tensor(addon().tensorZeros(dims, dtype, resolveDevice(opts.device)));
  }

  /** Dimensions, e.g. `[512, 512]`. */
  get shape(): number[] {
    return this.#shape.slice();
  }
  /** Number of dimensions. */
  get rank(): number {
    return this.#shape.length;
  }
  /** Number of elements. */
  get size(): number {
    return numel(this.#shape);
  }
  get dtype(): DType {
    return this.#dtype;
  }
  /** `'cpu'` or `'cuda:N'`. */
  get device(): DeviceName {
    return this.#device;
  }
  get disposed(): boolean {
    return this[NATIVE].disposed;
  }

  /** @internal The native handle; throws DISPOSED after dispose(). */
  native(): Binding.NativeTensor {
    if (this[NATIVE].disposed) throw new FacecudaError('DISPOSED', `this ${this.describe()} tensor has been disposed`);
    return this[NATIVE];
  }

  /**
   * Copies the values to a new typed array (after every operation queued before this call).
   * @throws FacecudaError `DISPOSED` after {@link Tensor.dispose}
   */
  toArray(): Promise<Float32Array | Uint16Array | Int32Array | BigInt64Array | Uint8Array> {
    const site = new Error();
    const native = this.native();
    return withCallSite(native.toArray(), site);
  }

  /**
   * A copy of this tensor on another device.
   * @example const g = await t.to('cuda');
   */
  async to(device: DeviceSpec): Promise<Tensor> {
    const site = new Error();
    const native = this.native();
    const target = resolveDevice(device);
    return new Tensor(await withCallSite(native.to(target), site));
  }

  /** A view with a new shape and the same number of elements (shares storage). */
  reshape(shape: readonly number[]): Tensor {
    const dims = checkShape(shape);
    if (numel(dims) !== this.size) {
      throw new FacecudaError('SHAPE_MISMATCH', `cannot reshape [${this.#shape.join(', ')}] (${this.size} values) to [${dims.join(', ')}] (${numel(dims)} values)`);
    }
    return new Tensor(this.native().reshape(dims));
  }

  /** Releases the storage (after queued work that uses it). Idempotent; later use throws `DISPOSED`. */
  dispose(): void {
    this[NATIVE].dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** e.g. "float32[2, 3] on cpu" */
  describe(): string {
    return `${this.#dtype}[${this.#shape.join(', ')}] on ${this.#device}`;
  }

  toString(): string {
    return `Tensor(${this.describe()}${this.disposed ? ', disposed' : ''})`;
  }
}

/** Unwraps a Tensor argument: TypeError for anything else, DISPOSED for a disposed tensor. */
export function tensorArg(v: unknown, name: string): Binding.NativeTensor {
  if (!(typeof v === 'object' && v !== null && NATIVE in v)) throw invalidParameterError(name, 'a Tensor', v);
  const t = v as Tensor;
  if (t[NATIVE].disposed) throw new FacecudaError('DISPOSED', `${name} (${t.describe()}) has been disposed`);
  return t[NATIVE];
}
