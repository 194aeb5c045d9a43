/**
 * Machine, build and backend facts (`facecuda info`), the CPU FMA peak probe and CUDA memory
 * controls.
 */
import * as fs from 'fs';
import * as path from 'path';

import { addon, addonLoadInfo, Binding, packageRoot, PrebuildRequirements } from './binding';
import { cudaStatus, resolveDevice } from './device';
import { FacecudaError, invalidParameterError, withCallSite } from './errors';
import { assertInteger, assertKnownOptions, assertNumber, optionsObject } from './validate';

export interface SystemInfo {
  version: string;
  node: string;
  platform: string;
  addon: { path: string; how: string; tried: { path: string; error?: string }[]; build: Binding.BuildInfo; requirements?: PrebuildRequirements };
  cpu: Binding.CpuInfo;
  cuda: Binding.CudaStatus & { libraries?: Binding.LibraryInfo[] };
}

/** The package version from package.json. */
export function version(): string {
  const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

/**
 * Everything `facecuda info` prints. With `libraries: true` it also opens cuBLAS, cuBLASLt and cuDNN
 * (when the CUDA backend is built) and reports where they were found or looked for.
 *
 * @example const i = await info({ libraries: true }); console.log(i.cuda.available, i.cuda.reason);
 */
export async function info(options?: { libraries?: boolean }): Promise<SystemInfo> {
  const opts = optionsObject(options, 'options');
  assertKnownOptions(opts, 'info', ['libraries']);
  const a = addon();
  const load = addonLoadInfo();
  const base = a.info();
  const cuda: SystemInfo['cuda'] = { ...cudaStatus() };
  if (opts.libraries) cuda.libraries = await a.cudaLibraries();
  return {
    version: version(),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    addon: { path: load.path, how: load.how, tried: load.tried, build: base.build, ...(load.requirements ? { requirements: load.requirements } : {}) },
    cpu: base.cpu,
    cuda,
  };
}

/**
 * Measures the peak fp32 FMA rate of this CPU (FLOP/s) with a register-only loop at the widest SIMD
 * level, on `threads` threads (0 = all) for about `seconds` seconds. The floor for GEMM benchmarks.
 */
export function fmaPeak(options?: { threads?: number; seconds?: number }): Promise<number> {
  const site = new Error();
  const opts = optionsObject(options, 'options');
  assertKnownOptions(opts, 'fmaPeak', ['threads', 'seconds']);
  const threads = opts.threads ?? 0;
  const seconds = opts.seconds ?? 0.2;
  assertInteger(threads, 'threads', 0, 1024);
  assertNumber(seconds, 'seconds', 0.001, 60);
  return withCallSite(addon().fmaPeak(threads, seconds), site);
}

function cudaDevice(device: unknown): string {
  const d = resolveDevice(device ?? 'cuda');
  if (d === 'cpu') throw invalidParameterError('device', 'a CUDA device', device);
  return d;
}

/** CUDA caching-allocator statistics in bytes: allocated, reserved, peakAllocated, limit. */
export function memoryStats(device?: string): Binding.MemoryStats {
  return addon().memoryStats(cudaDevice(device));
}

/** Caps the bytes the allocator may hold on `device` (0 = no cap). Also FACECUDA_CUDA_MEMORY_LIMIT. */
export function setMemoryLimit(bytes: number, device?: string): void {
  assertInteger(bytes, 'bytes', 0);
  addon().setMemoryLimit(cudaDevice(device), bytes);
}

/** Resets `peakAllocated` to the current allocation. */
export function resetPeakMemory(device?: string): void {
  addon().resetPeakMemory(cudaDevice(device));
}

/**
 * Returns cached, unused memory once the work queued on `device` is done; resolves to the bytes
 * released. CUDA: the caching allocator's free blocks go back to the driver. CPU: host blocks of
 * 1 MiB and more that were kept for reuse (FACECUDA_CPU_CACHE_LIMIT, default 1 GiB) are freed.
 */
export function emptyCache(device: string = 'cuda'): Promise<number> {
  const d = resolveDevice(device);
  return addon().emptyCache(d);
}

/** Resolves when everything queued on `device` before this call has finished. */
export function synchronize(device: string = 'cpu'): Promise<void> {
  return addon().synchronize(resolveDevice(device));
}

/** Number of CPU worker threads (FACECUDA_NUM_THREADS or the hardware thread count). */
export function cpuThreads(): number {
  return addon().info().cpu.threads;
}

export { FacecudaError };
