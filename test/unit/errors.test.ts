import { FacecudaError, FacecudaRangeError, FacecudaTypeError } from '../../lib';
import { invalidParameterError, invalidParameterMessage, outOfRangeError } from '../../lib/errors';
import { assertInteger, assertKnownOptions, assertNumber, assertOneOf } from '../../lib/validate';

describe('FacecudaError', () => {
  it('carries a stable code and is an Error', () => {
    const e = new FacecudaError('CORRUPT_FILE', 'bad header at byte 12');
    expect(e).toBeInstanceOf(Error);
    expect(e).toBeInstanceOf(FacecudaError);
    expect(e.code).toBe('CORRUPT_FILE');
    expect(e.name).toBe('FacecudaError');
    expect(e.message).toBe('bad header at byte 12');
  });

  it('argument errors are TypeError/RangeError and FacecudaError at once', () => {
    const t = invalidParameterError('scale', 'a finite number', 'x');
    expect(t).toBeInstanceOf(TypeError);
    expect(t).toBeInstanceOf(FacecudaTypeError);
    expect(t).toBeInstanceOf(FacecudaError);
    expect(t.code).toBe('INVALID_ARGUMENT');
    const r = outOfRangeError('margin', 'a number between 0 and 1', 3);
    expect(r).toBeInstanceOf(RangeError);
    expect(r).toBeInstanceOf(FacecudaRangeError);
    expect(r).toBeInstanceOf(FacecudaError);
    expect(r.code).toBe('OUT_OF_RANGE');
    expect(new Error('plain')).not.toBeInstanceOf(FacecudaError);
    expect({ code: 'INVALID_ARGUMENT' }).not.toBeInstanceOf(FacecudaError);
  });

  it('uses one message format naming the argument, the expectation and the value', () => {
    expect(invalidParameterMessage('k', 'an integer', 2.5)).toBe('Expected an integer for k but received 2.5 of type number');
    expect(invalidParameterMessage('device', "'cpu' or 'cuda'", 'gpu')).toBe(
      `Expected 'cpu' or 'cuda' for device but received "gpu" of type string`,
    );
    expect(invalidParameterMessage('opts', 'an object', null)).toBe('Expected an object for opts but received null of type null');
  });
});

describe('validate', () => {
  it('throws TypeError for wrong types and RangeError for out-of-range values', () => {
    expect(() => assertInteger(1.5, 'k', 1, 10)).toThrow(TypeError);
    expect(() => assertInteger(1.5, 'k', 1, 10)).toThrow(/^Expected an integer for k but received 1.5 of type number$/);
    expect(() => assertInteger(0, 'k', 1, 10)).toThrow(RangeError);
    expect(() => assertInteger(0, 'k', 1, 10)).toThrow(/^Expected an integer between 1 and 10 for k but received 0 of type number$/);
    expect(() => assertInteger(NaN, 'k')).toThrow(TypeError);
    expect(() => assertNumber(Infinity, 's')).toThrow(TypeError);
    expect(() => assertNumber(-1, 's', 0)).toThrow(RangeError);
    expect(() => assertOneOf('fp64', 'precision', ['fp32', 'bf16'])).toThrow(
      /^Expected one of 'fp32', 'bf16' for precision but received "fp64" of type string$/,
    );
    expect(() => assertInteger(5, 'k', 1, 10)).not.toThrow();
  });

  it('rejects misspelled options and names the intended one', () => {
    expect(() => assertKnownOptions({ Device: 'cpu' }, 'Tensor.from', ['device', 'dtype'])).toThrow(/'device' \(option names are case-sensitive\)/);
    expect(() => assertKnownOptions({ s: 64 }, 'ArcFaceHead', ['scale', 'margin'])).toThrow(
      /^Expected a known option: 'scale' \(the paper's 's' is spelled out in facecuda\) for ArcFaceHead option 's' but received 64 of type number$/,
    );
    expect(() => assertKnownOptions({ scal: 64 }, 'ArcFaceHead', ['scale', 'margin'])).toThrow(/one of 'scale', 'margin'/);
  });
});
