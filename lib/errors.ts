/**
 * Errors thrown by facecuda. Every failure, in TypeScript or in the native engine, is a
 * {@link FacecudaError} with a stable string `code`. Argument errors are also `TypeError`s (wrong
 * type) or `RangeError`s (value out of range), so `instanceof TypeError` keeps working.
 */

/** Stable error codes. New codes may be added; existing ones never change meaning. */
export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'SHAPE_MISMATCH'
  | 'OUT_OF_RANGE'
  | 'DISPOSED'
  | 'OUT_OF_MEMORY'
  | 'CUDA_UNAVAILABLE'
  | 'CUDA_ERROR'
  | 'CUBLAS_ERROR'
  | 'CUDNN_ERROR'
  | 'IO_ERROR'
  | 'CORRUPT_FILE'
  | 'NOT_IMPLEMENTED'
  | 'ADDON_LOAD_FAILED'
  | 'INTERNAL';

const BRAND = Symbol.for('facecuda.error');

function brand(err: Error, code: string): void {
  Object.defineProperty(err, BRAND, { value: true, enumerable: false });
  Object.defineProperty(err, 'code', { value: code, enumerable: true, writable: false });
}

/**
 * The error class of facecuda.
 *
 * @example
 * try { await Tensor.from(new Float32Array(4), [2, 2], { device: 'cuda' }).toArray(); }
 * catch (e) { if (e instanceof FacecudaError && e.code === 'CUDA_UNAVAILABLE') console.log(e.message); }
 */
export class FacecudaError extends Error {
  declare readonly code: ErrorCode;

  constructor(code: ErrorCode | string, message: string) {
    super(message);
    this.name = 'FacecudaError';
    brand(this, code);
  }

  /** True for every error facecuda throws, including its TypeErrors and RangeErrors, across realms. */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
  }
}

/**
 * A wrong argument type. `code` is 'INVALID_ARGUMENT'; also `instanceof FacecudaError`.
 *
 * @example
 * try { new ArcFaceHead({ embeddingSize: '512' as never, numClasses: 10 }); }
 * catch (e) { if (e instanceof FacecudaTypeError) console.log(e.code, e.message); }
 */
export class FacecudaTypeError extends TypeError {
  declare readonly code: ErrorCode;
  constructor(message: string) {
    super(message);
    this.name = 'TypeError';
    brand(this, 'INVALID_ARGUMENT');
  }
}

/**
 * An argument value out of range. `code` is 'OUT_OF_RANGE'; also `instanceof FacecudaError`.
 *
 * @example
 * try { new ArcFaceHead({ embeddingSize: 0, numClasses: 10 }); }
 * catch (e) { if (e instanceof FacecudaRangeError) console.log(e.code); } // 'OUT_OF_RANGE'
 */
export class FacecudaRangeError extends RangeError {
  declare readonly code: ErrorCode;
  constructor(message: string) {
    super(message);
    this.name = 'RangeError';
    brand(this, 'OUT_OF_RANGE');
  }
}

function describeValue(actual: unknown): string {
  if (typeof actual === 'string') return JSON.stringify(actual.length > 40 ? actual.slice(0, 40) + '…' : actual);
  if (typeof actual === 'bigint') return `${actual}n`;
  if (Array.isArray(actual)) return `[${actual.slice(0, 6).map(describeValue).join(', ')}${actual.length > 6 ? ', …' : ''}]`;
  if (ArrayBuffer.isView(actual)) return `${actual.constructor.name}(${(actual as unknown as { length?: number }).length ?? actual.byteLength})`;
  if (typeof actual === 'function') return 'function';
  if (actual !== null && typeof actual === 'object') return (actual.constructor && actual.constructor.name) || 'object';
  return String(actual);
}

/** The one message format for argument errors: "Expected X for name but received Y of type T". */
export function invalidParameterMessage(name: string, expected: string, actual: unknown): string {
  const type = actual === null ? 'null' : typeof actual;
  return `Expected ${expected} for ${name} but received ${describeValue(actual)} of type ${type}`;
}

/** A TypeError for argument `name` (wrong type). */
export function invalidParameterError(name: string, expected: string, actual: unknown): FacecudaTypeError {
  return new FacecudaTypeError(invalidParameterMessage(name, expected, actual));
}

/** A RangeError for argument `name` (right type, value out of range). */
export function outOfRangeError(name: string, expected: string, actual: unknown): FacecudaRangeError {
  return new FacecudaRangeError(invalidParameterMessage(name, expected, actual));
}

/**
 * Re-raises a native rejection with the caller's stack: async native calls lose the JS call site,
 * so callers capture `new Error()` before the call and graft its frames here (sharp's nativeError).
 */
export function withCallSite<T>(promise: Promise<T>, site: Error): Promise<T> {
  return promise.catch((err: unknown) => {
    if (err instanceof Error && site.stack) {
      const frames = site.stack.split('\n').slice(1).join('\n');
      err.stack = `${err.name}: ${err.message}\n${frames}`;
    }
    throw err;
  });
}
