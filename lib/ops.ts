/**
 * Basic compute ops. Each queues on the operands' device and returns a promise; the JS thread only
 * validates and submits.
 */
import { addon } from './binding';
import { FacecudaError, invalidParameterError, withCallSite } from './errors';
import { Tensor, tensorArg } from './tensor';
import { assertBool, assertInteger, assertKnownOptions, assertNumber, assertOneOf, optionsObject } from './validate';

/**
 * GEMM precision: fp32 everywhere; tf32 uses tensor cores on CUDA (fp32 on the CPU); bf16 / fp16
 * round the inputs to bfloat16 / float16 (fp16: beyond ±65504 is ±Inf); fp32 accumulation always.
 */
export type Precision = 'fp32' | 'tf32' | 'bf16' | 'fp16';

export interface GemmOptions {
  /** Use the transpose of `a` (default false). */
  transA?: boolean;
  /** Use the transpose of `b` (default false). */
  transB?: boolean;
  /** Scale of the product (default 1). */
  alpha?: number;
  /** Scale of `c` (default 0; needs `c` when non-zero). */
  beta?: number;
  /** Added term, shape [M, N]; not modified. */
  c?: Tensor;
  /** Default 'fp32'. */
  precision?: Precision;
  /** CPU threads to use (default 0 = all of the pool). Ignored on CUDA. */
  threads?: number;
}

/**
 * General matrix multiply: `alpha * op(a) · op(b) + beta * c` for 2-D float32 tensors on one device,
 * returning a new [M, N] tensor. The CPU path is facecuda's packed, multi-threaded SGEMM
 * (deterministic: same inputs and thread count, same bits); the CUDA path is cuBLAS.
 *
 * @throws TypeError / RangeError for bad options; `SHAPE_MISMATCH` for incompatible shapes
 * @example
 * const a = Tensor.from(new Float32Array(6).fill(1), [2, 3], { device: 'cpu' });
 * const b = Tensor.from(new Float32Array(12).fill(2), [3, 4], { device: 'cpu' });
 * const c = await gemm(a, b); // [2, 4], every value 6
 */
export function gemm(a: Tensor, b: Tensor, options?: GemmOptions): Promise<Tensor> {
  const site = new Error();
  // Apply defaults
  const opts = optionsObject(options, 'options');
  assertKnownOptions(opts, 'gemm', ['transA', 'transB', 'alpha', 'beta', 'c', 'precision', 'threads']);
  const transA = opts.transA ?? false;
  const transB = opts.transB ?? false;
  const alpha = opts.alpha ?? 1;
  const beta = opts.beta ?? 0;
  const precision = opts.precision ?? 'fp32';
  const threads = opts.threads ?? 0;

  // Validate arguments
  const na = tensorArg(a, 'a');
  const nb = tensorArg(b, 'b');
  const nc = opts.c === undefined ? null : tensorArg(opts.c, 'c');
  assertBool(transA, 'transA');
  assertBool(transB, 'transB');
  assertNumber(alpha, 'alpha');
  assertNumber(beta, 'beta');
  assertOneOf(precision, 'precision', ['fp32', 'tf32', 'bf16', 'fp16'] as const);
  assertInteger(threads, 'threads', 0, 1024);
  for (const [t, name] of [[na, 'a'], [nb, 'b']] as const) {
    if (t.shape.length !== 2) throw invalidParameterError(name, 'a 2-D tensor', `[${t.shape.join(', ')}]`);
    if (t.dtype !== 'float32') throw invalidParameterError(name, 'a float32 tensor', t.dtype);
  }
  if (na.device !== nb.device) throw new FacecudaError('INVALID_ARGUMENT', `a is on ${na.device} but b is on ${nb.device}`);
  const [M, K] = transA ? [na.shape[1], na.shape[0]] : [na.shape[0], na.shape[1]];
  const [Kb, N] = transB ? [nb.shape[1], nb.shape[0]] : [nb.shape[0], nb.shape[1]];
  if (K !== Kb) {
    throw new FacecudaError('SHAPE_MISMATCH', `inner dimensions differ: op(a) is [${M}, ${K}] and op(b) is [${Kb}, ${N}]`);
  }
  if (beta !== 0 && nc === null) throw invalidParameterError('c', `a Tensor of shape [${M}, ${N}] when beta is non-zero`, undefined);
  if (nc !== null) {
    if (nc.shape.length !== 2 || nc.shape[0] !== M || nc.shape[1] !== N) {
      throw new FacecudaError('SHAPE_MISMATCH', `Expected c of shape [${M}, ${N}] but received [${nc.shape.join(', ')}]`);
    }
    if (nc.dtype !== 'float32' || nc.device !== na.device) throw invalidParameterError('c', `a float32 tensor on ${na.device}`, nc.dtype);
  }

  // Interpret options
  return withCallSite(addon().gemm(na, nb, nc, transA, transB, alpha, beta, precision, threads), site).then((t) => new Tensor(t));
}
