/**
 * The one typed contract with the native addon, and the loader that finds it. No other module
 * requires the .node file.
 *
 * Search order (first that loads wins; every attempt is recorded for `facecuda info`):
 *  1. FACECUDA_ADDON: an explicit file; when set, nothing else is tried.
 *  2. build/Release/facecuda.node (a local build) and prebuilds/linux-x64/facecuda.glibc.node:
 *     when both exist, the newer file is tried first.
 */
import * as fs from 'fs';
import * as path from 'path';

import { FacecudaError } from './errors';

/* eslint-disable @typescript-eslint/no-namespace */
export declare namespace Binding {
  type DTypeName = 'float32' | 'float16' | 'bfloat16' | 'int32' | 'int64' | 'uint8';
  type NativeArray = Float32Array | Uint16Array | Int32Array | BigInt64Array | Uint8Array;

  interface NativeTensor {
    readonly shape: number[];
    readonly dtype: DTypeName;
    readonly device: string;
    readonly disposed: boolean;
    dispose(): void;
    toArray(): Promise<NativeArray>;
    to(device: string): Promise<NativeTensor>;
    reshape(shape: number[]): NativeTensor;
  }

  interface CpuInfo {
    model: string;
    logicalCores: number;
    threads: number;
    simd: 'avx512' | 'avx2' | 'portable';
    features: string[];
    gemmKernel: string;
    gemmKernelBf16: string;
    /** Host bytes cached for reuse (blocks of 1 MiB and more). */
    cachedBytes: number;
  }

  interface BuildInfo {
    cuda: boolean;
    tool: string;
    napiVersion: number;
    compiler: string;
  }

  interface CudaDevice {
    index: number;
    name: string;
    totalMemory: number;
    freeMemory: number;
    computeCapability: string;
    multiprocessors: number;
    pciBusId: string;
  }

  interface CudaStatus {
    compiled: boolean;
    available: boolean;
    reason: string;
    runtimeVersion: number;
    driverVersion: number;
    compiledArchs: string;
    devices: CudaDevice[];
  }

  interface LibraryInfo {
    name: string;
    found: boolean;
    path: string;
    version: string;
    error: string;
    tried: string[];
  }

  interface MemoryStats {
    allocated: number;
    reserved: number;
    peakAllocated: number;
    limit: number;
    numAllocs: number;
    numDriverAllocs: number;
  }

  /** What a forward reports: the mean loss (NaN on a sharded head) and B entries per array. */
  interface NativeForwardStats {
    loss: number;
    rowMax: Float32Array;
    rowSumExp: Float64Array;
    /** NaN where the row's target class is not on this head. */
    targetLogit: Float32Array;
  }

  interface NativeHeadState {
    step: number;
    batchMean: number;
    batchStd: number;
    lambda: number;
  }

  /** The options object of `new NativeMarginHead(...)`; a missing key takes the engine default. */
  interface NativeMarginHeadOptions {
    embeddingSize: number;
    numClasses: number;
    /** fc::MarginKind: Norm 0, Cos 1, Arc 2, Combined 3, Ada 4, Elastic 5, Sphere 6, Softmax 7. */
    kind: number;
    device: string;
    scale?: number;
    m1?: number;
    m2?: number;
    m3?: number;
    easyMargin?: boolean;
    fallback?: boolean;
    straightThrough?: boolean;
    adaH?: number;
    adaTAlpha?: number;
    adaEps?: number;
    elasticStd?: number;
    elasticCos?: boolean;
    elasticPlus?: boolean;
    sphereBase?: number;
    sphereGamma?: number;
    spherePower?: number;
    sphereMin?: number;
    precision?: 'fp32' | 'tf32' | 'bf16' | 'fp16';
    maxChunkBytes?: number;
    threads?: number;
    subCenters?: number;
    sampleRate?: number;
    seed?: number;
    classStart?: number;
    /** 0 or missing: every class (not sharded). */
    numLocalClasses?: number;
  }

  interface NativeMarginHead {
    initNormal(std: number, seed: number): Promise<void>;
    setWeight(w: Float32Array | NativeTensor): Promise<void>;
    getWeight(): Promise<Float32Array>;
    setBias(b: Float32Array | NativeTensor): Promise<void>;
    getBias(): Promise<Float32Array>;
    forward(x: NativeTensor, labels: NativeTensor): Promise<NativeForwardStats>;
    backward(accumulate: boolean, rowMax?: Float32Array, rowSumExp?: Float64Array, lossScale?: number): Promise<{
      gradEmbeddings: NativeTensor;
      gradWeight: NativeTensor;
      gradBias?: NativeTensor;
    }>;
    parameters(): Promise<{ weight: NativeTensor; gradWeight?: NativeTensor; bias?: NativeTensor; gradBias?: NativeTensor }>;
    logits(x: NativeTensor): Promise<NativeTensor>;
    setTraining(training: boolean): Promise<void>;
    sampledClasses(): Promise<Int32Array>;
    lastMargins(): Promise<Float64Array>;
    state(): Promise<NativeHeadState>;
    setState(state: { step?: number; batchMean?: number; batchStd?: number }): Promise<void>;
    lastChunkBytes(): number;
    dispose(): void;
  }

  interface NativeCenterLoss {
    setCenters(c: Float32Array | NativeTensor): Promise<void>;
    getCenters(): Promise<Float32Array>;
    forward(x: NativeTensor, labels: NativeTensor): Promise<number>;
    backward(updateCenters: boolean): Promise<NativeTensor>;
    dispose(): void;
  }

  /** The hyper-parameters of native/binding/optim.cc's optimStep (algo 0 SGD, 1 AdamW, 2 clip/scale only). */
  interface OptimHyper {
    algo: number;
    momentum?: number;
    dampening?: number;
    nesterov?: boolean;
    beta1?: number;
    beta2?: number;
    eps?: number;
  }

  interface OptimStepResult {
    skipped: boolean;
    nonFiniteItem: number;
    gradNorm: number;
    groupNorms: Float64Array;
    groupScales: Float64Array;
    itemSumSq: Float64Array;
  }

  /** native/binding/search.cc: one FaceIndex's rows (lib/search/index.ts validates every argument). */
  interface NativeSearchIndex {
    add(ids: Float64Array, vectors: Float32Array): number;
    addRaw(ids: Float64Array, rows: Uint8Array): number;
    remove(ids: Float64Array): number;
    update(id: number, vector: Float32Array): void;
    contains(id: number): boolean;
    stats(): { size: number; numIds: number; maxRowsPerId: number };
    search(q: Float32Array, Q: number, k: number, filter: Float64Array | undefined, aggregate: 'max' | 'mean' | 'none'): Promise<{ ids: Float64Array; scores: Float32Array; k: number }>;
    searchRange(q: Float32Array, Q: number, minScore: number, filter: Float64Array | undefined, aggregate: 'max' | 'mean' | 'none'): Promise<{ offsets: Float64Array; ids: Float64Array; scores: Float32Array }>;
    exportRows(): Promise<{ ids: Float64Array; rows: Buffer }>;
    dispose(): void;
  }

  interface Addon {
    /** One fused optimizer step (or clip / unscale pass) over tensors named by index in `items`. */
    optimStep(
      config: OptimHyper & { threads?: number; gradScale?: number; clipNorms: Float64Array; items: Float64Array; sparse: { item: number; rows: Int32Array }[] },
      ...tensors: NativeTensor[]
    ): Promise<OptimStepResult>;
    NativeSearchIndex: new (dim: number, storage: 'f32' | 'f16', device: string) => NativeSearchIndex;
    NativeMarginHead: new (options: NativeMarginHeadOptions) => NativeMarginHead;
    NativeCenterLoss: new (options: { embeddingSize: number; numClasses: number; lambda: number; alpha: number; device: string }) => NativeCenterLoss;
    init(errorClass: typeof FacecudaError): void;
    tensorFromData(data: NativeArray, shape: number[], dtype: DTypeName, device: string): NativeTensor;
    tensorZeros(shape: number[], dtype: DTypeName, device: string): NativeTensor;
    gemm(a: NativeTensor, b: NativeTensor, c: NativeTensor | null, transA: boolean, transB: boolean, alpha: number,
      beta: number, precision: 'fp32' | 'tf32' | 'bf16' | 'fp16', threads: number): Promise<NativeTensor>;
    info(): { cpu: CpuInfo; build: BuildInfo };
    cudaStatus(): CudaStatus;
    cudaLibraries(): Promise<LibraryInfo[]>;
    fmaPeak(threads: number, seconds: number): Promise<number>;
    memoryStats(device: string): MemoryStats;
    setMemoryLimit(device: string, bytes: number): void;
    resetPeakMemory(device: string): void;
    emptyCache(device: string): Promise<number>;
    synchronize(device: string): Promise<void>;
  }
}

/** How the addon was found: the file, the rule that chose it, and every attempt. */
export interface AddonLoadInfo {
  path: string;
  how: string;
  tried: { path: string; error?: string }[];
  /** The prebuild's recorded requirements (prebuilds/<platform>/facecuda.json), when it has them. */
  requirements?: PrebuildRequirements;
}

/** What scripts/prebuild.js records next to the binary. */
export interface PrebuildRequirements {
  glibc: string | null;
  cuda: { runtime: string | null; architectures: string[] | string; minDriver: { cuda13: string; linux: string } | null };
  bytes: number;
  built: string;
  commit: string | null;
  [key: string]: unknown;
}

function readRequirements(file: string): PrebuildRequirements | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(path.dirname(file), 'facecuda.json'), 'utf8')) as PrebuildRequirements;
  } catch {
    return undefined;
  }
}

/** "2.35" ≥ "2.34": compares dotted versions numerically. */
function versionAtLeast(have: string, need: string): boolean {
  const a = have.split('.').map(Number);
  const b = need.split('.').map(Number);
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) > (b[i] ?? 0);
  }
  return true;
}

/** Why this system cannot run a binary with these requirements (glibc too old), or null. */
function unmetRequirement(req: PrebuildRequirements | undefined): string | null {
  if (!req?.glibc) return null;
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  const have = header?.glibcVersionRuntime;
  if (!have) return `the prebuild needs glibc >= ${req.glibc} but this system has no glibc (musl?)`;
  return versionAtLeast(have, req.glibc) ? null : `the prebuild needs glibc >= ${req.glibc} but this system has glibc ${have}`;
}

export const packageRoot = path.resolve(__dirname, '..');

let loaded: { addon: Binding.Addon; info: AddonLoadInfo } | undefined;

function candidates(): { path: string; how: string }[] {
  const explicit = process.env.FACECUDA_ADDON;
  if (explicit) return [{ path: path.resolve(explicit), how: 'FACECUDA_ADDON environment variable' }];
  const local = path.join(packageRoot, 'build', 'Release', 'facecuda.node');
  const prebuilt = path.join(packageRoot, 'prebuilds', `${process.platform}-${process.arch}`, 'facecuda.glibc.node');
  const mtime = (p: string): number => {
    try {
      return fs.statSync(p).mtimeMs;
    } catch {
      return -1;
    }
  };
  const l = mtime(local);
  const p = mtime(prebuilt);
  if (l >= 0 && p >= 0) {
    return l >= p
      ? [{ path: local, how: 'local build (newer than the prebuild)' }, { path: prebuilt, how: 'prebuild (local build failed to load)' }]
      : [{ path: prebuilt, how: 'prebuild (newer than the local build)' }, { path: local, how: 'local build (prebuild failed to load)' }];
  }
  return [
    { path: local, how: 'local build' },
    { path: prebuilt, how: 'prebuild' },
  ];
}

/** Loads the addon once and hands it the FacecudaError class. Throws ADDON_LOAD_FAILED with every attempt. */
export function addon(): Binding.Addon {
  if (loaded) return loaded.addon;
  const tried: { path: string; error?: string }[] = [];
  for (const c of candidates()) {
    if (!fs.existsSync(c.path)) {
      tried.push({ path: c.path, error: 'not found' });
      continue;
    }
    const requirements = c.how.startsWith('prebuild') ? readRequirements(c.path) : undefined;
    const unmet = unmetRequirement(requirements);
    if (unmet) {
      tried.push({ path: c.path, error: unmet });
      continue;
    }
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const mod = require(c.path) as Binding.Addon;
      mod.init(FacecudaError);
      tried.push({ path: c.path });
      loaded = { addon: mod, info: { path: c.path, how: c.how, tried, ...(requirements ? { requirements } : {}) } };
      return mod;
    } catch (e) {
      tried.push({ path: c.path, error: e instanceof Error ? e.message : String(e) });
    }
  }
  const lines = tried.map((t) => `  ${t.path}: ${t.error}`).join('\n');
  throw new FacecudaError(
    'ADDON_LOAD_FAILED',
    `facecuda could not load its native addon for ${process.platform}-${process.arch} (Node-API ${process.versions.napi}). Tried:\n${lines}\n` +
      'Build it with `npm run compile` (needs CMake or node-gyp and a C++ compiler), or set FACECUDA_ADDON to a facecuda.node file.',
  );
}

/** Where the addon came from (loads it if needed). */
export function addonLoadInfo(): AddonLoadInfo {
  addon();
  return loaded!.info;
}
