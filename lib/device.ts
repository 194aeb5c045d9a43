/**
 * Device selection. `'cpu'`, `'cuda'` (= `'cuda:0'`), `'cuda:N'` or `'auto'`.
 *
 * - An explicit CUDA device never falls back: when CUDA cannot be used the call fails with
 *   `CUDA_UNAVAILABLE` and the precise reason (no driver, no device, driver too old, ...).
 * - `'auto'` picks `cuda:0` when it is usable and the CPU otherwise, and records why
 *   ({@link autoDeviceReason}).
 * - `FACECUDA_DEVICE` (same syntax) replaces `'auto'` and an omitted device, so a deployment can pin
 *   a device without code changes; an explicit `'cpu'` or `'cuda:N'` in code is never overridden.
 */
import { addon, Binding } from './binding';
import { FacecudaError, invalidParameterError } from './errors';

/** A device name as accepted by every `device` option. */
export type DeviceSpec = 'cpu' | 'cuda' | `cuda:${number}` | 'auto';
/** A resolved device: `'cpu'` or `'cuda:N'`. */
export type DeviceName = 'cpu' | `cuda:${number}`;

const DEVICE_RE = /^(cpu|auto|cuda|cuda:(0|[1-9][0-9]{0,2}))$/;

let autoReason: string | undefined;

/** The cached CUDA probe (first call initializes the CUDA runtime; fast without a driver). */
export function cudaStatus(): Binding.CudaStatus {
  return addon().cudaStatus();
}

/** True when `'cuda'` can be used. */
export function cudaAvailable(): boolean {
  return cudaStatus().available;
}

/** Why the last `'auto'` resolution chose the CPU, or undefined when it chose CUDA / never ran. */
export function autoDeviceReason(): string | undefined {
  return autoReason;
}

function parse(spec: unknown, name: string): DeviceSpec {
  if (typeof spec !== 'string' || !DEVICE_RE.test(spec)) {
    throw invalidParameterError(name, "'cpu', 'cuda', 'cuda:N' or 'auto'", spec);
  }
  return spec as DeviceSpec;
}

/**
 * Resolves a device option to `'cpu'` or `'cuda:N'`.
 *
 * @throws FacecudaError `CUDA_UNAVAILABLE` for an explicit CUDA device that cannot be used.
 * @example resolveDevice('auto') // 'cuda:0' on a GPU machine, 'cpu' elsewhere
 */
export function resolveDevice(spec?: unknown, name = 'device'): DeviceName {
  // Apply defaults
  let s: DeviceSpec = spec === undefined ? 'auto' : parse(spec, name);
  if (s === 'auto' && process.env.FACECUDA_DEVICE) s = parse(process.env.FACECUDA_DEVICE, 'FACECUDA_DEVICE');

  // Interpret options
  if (s === 'cpu') return 'cpu';
  const status = cudaStatus();
  if (s === 'auto') {
    if (status.available) {
      autoReason = undefined;
      return 'cuda:0';
    }
    autoReason = status.reason;
    return 'cpu';
  }
  const index = s === 'cuda' ? 0 : Number(s.slice(5));
  if (!status.available) {
    throw new FacecudaError('CUDA_UNAVAILABLE', `${name} '${s}' was requested but CUDA is unavailable: ${status.reason}`);
  }
  if (index >= status.devices.length) {
    throw new FacecudaError(
      'CUDA_UNAVAILABLE',
      `${name} '${s}' was requested but only ${status.devices.length} CUDA device(s) exist (cuda:0..cuda:${status.devices.length - 1})`,
    );
  }
  return `cuda:${index}`;
}
