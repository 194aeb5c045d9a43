/**
 * Training checkpoints: one safetensors file holding everything a run needs to continue exactly.
 *
 * Layout:
 * - tensors `model/<state-dict key>` (every parameter and buffer of the backbone, host copies),
 *   `head/weight` (and `head/bias`), and `state/<path>` for every typed array found in the
 *   optimizer's state (momentum buffers, Adam moments, …);
 * - metadata `facecuda.checkpoint` (JSON): the trainer's position (iteration, epoch, batch in the
 *   epoch, consecutive skips, best verification), the head's state (step, AdaFace EMA), the
 *   backbone's Dropout step, the optimizer state's non-array fields with a placeholder
 *   `{ "$tensor": "state/<path>" }` where each array was, and free-form `extra` (the CLI's config).
 *
 * Writing is atomic (writeSafetensors: temporary name, fsync, rename), so an interrupted write leaves
 * the previous checkpoint intact. Nothing in a checkpoint depends on the device: tensors are host
 * copies, so a run checkpointed on a GPU resumes on the CPU and the other way round.
 */
import { FacecudaError } from '../errors';
import { readSafetensors, writeSafetensors } from '../safetensors';
import { Tensor } from '../tensor';

/** Metadata key of the checkpoint's JSON. */
export const CHECKPOINT_KEY = 'facecuda.checkpoint';

/** Typed arrays a state may hold. */
type Arr = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;

function isArr(v: unknown): v is Arr {
  if (!ArrayBuffer.isView(v)) return false;
  const tag = Object.prototype.toString.call(v);
  return ['[object Float32Array]', '[object Float64Array]', '[object Int32Array]', '[object BigInt64Array]', '[object Uint8Array]'].includes(tag);
}

/**
 * Splits a state object into JSON (typed arrays replaced by `{ $tensor: name }`) and the arrays
 * (float64 arrays are stored as float32 only if they round-trip; otherwise refused).
 */
export function packState(state: unknown, prefix: string, tensors: Map<string, Tensor>): unknown {
  const walk = (v: unknown, path: string): unknown => {
    if (isArr(v)) {
      const name = `${prefix}/${path}`;
      let t: Tensor;
      const tag = Object.prototype.toString.call(v);
      if (tag === '[object Float64Array]') {
        const f = Float32Array.from(v as Float64Array);
        if (!f.every((x, i) => x === (v as Float64Array)[i])) {
          throw new FacecudaError('INVALID_ARGUMENT', `state '${path}' is a Float64Array that float32 cannot hold exactly`);
        }
        t = Tensor.from(f, [f.length], { device: 'cpu' });
      } else if (tag === '[object BigInt64Array]') {
        t = Tensor.from(v as BigInt64Array, [v.length], { device: 'cpu', dtype: 'int64' });
      } else if (tag === '[object Int32Array]') {
        t = Tensor.from(v as Int32Array, [v.length], { device: 'cpu', dtype: 'int32' });
      } else if (tag === '[object Uint8Array]') {
        t = Tensor.from(v as Uint8Array, [v.length], { device: 'cpu', dtype: 'uint8' });
      } else {
        t = Tensor.from(v as Float32Array, [v.length], { device: 'cpu' });
      }
      tensors.set(name, t);
      return { $tensor: name, $type: tag.slice(8, -1) };
    }
    if (Array.isArray(v)) return v.map((x, i) => walk(x, `${path}.${i}`));
    if (v !== null && typeof v === 'object') {
      const o: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v as Record<string, unknown>)) o[k] = walk(x, path ? `${path}.${k}` : k);
      return o;
    }
    if (typeof v === 'number' && !Number.isFinite(v)) return { $number: String(v) };
    return v;
  };
  return walk(state, '');
}

/** The inverse of {@link packState}. */
export async function unpackState(json: unknown, tensors: Map<string, Tensor>, source: string): Promise<unknown> {
  const walk = async (v: unknown): Promise<unknown> => {
    if (Array.isArray(v)) return Promise.all(v.map(walk));
    if (v !== null && typeof v === 'object') {
      const o = v as Record<string, unknown>;
      if (typeof o.$tensor === 'string') {
        const t = tensors.get(o.$tensor);
        if (!t) throw new FacecudaError('CORRUPT_FILE', `${source}: tensor '${o.$tensor}' named by the state is missing`);
        const a = await t.toArray();
        if (o.$type === 'Float64Array') return Float64Array.from(a as Float32Array);
        return a;
      }
      if (typeof o.$number === 'string') return Number(o.$number);
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(o)) out[k] = await walk(x);
      return out;
    }
    return v;
  };
  return walk(json);
}

/** What a checkpoint holds besides the tensors. */
export interface CheckpointMeta {
  version: 1;
  iteration: number;
  epoch: number;
  batchInEpoch: number;
  consecutiveSkips: number;
  best: Record<string, number>;
  modelStep: number;
  headState: Record<string, number>;
  optimizer: unknown;
  extra?: unknown;
  /** fp16 runs: the GradScaler's scale and growth tracker. */
  lossScaler?: { scale: number; growthTracker: number };
}

/** Writes a checkpoint atomically. */
export async function writeCheckpoint(
  path: string,
  parts: { model: Map<string, Tensor>; head: Map<string, Tensor>; optimizerState: unknown; meta: Omit<CheckpointMeta, 'optimizer' | 'version'> },
): Promise<void> {
  const tensors = new Map<string, Tensor>();
  for (const [k, t] of parts.model) tensors.set(`model/${k}`, t);
  for (const [k, t] of parts.head) tensors.set(`head/${k}`, t);
  const owned = new Map<string, Tensor>();
  const optimizer = packState(parts.optimizerState, 'state', owned);
  for (const [k, t] of owned) tensors.set(k, t);
  const meta: CheckpointMeta = { version: 1, ...parts.meta, optimizer };
  try {
    await writeSafetensors(path, tensors, { format: 'facecuda-checkpoint', [CHECKPOINT_KEY]: JSON.stringify(meta) });
  } finally {
    for (const t of owned.values()) t.dispose();
  }
}

/** Reads a checkpoint: the tensors by part, the metadata, and the optimizer state unpacked. */
export async function readCheckpoint(path: string): Promise<{
  model: Map<string, Tensor>;
  head: Map<string, Tensor>;
  optimizerState: unknown;
  meta: CheckpointMeta;
  dispose: () => void;
}> {
  const { tensors, metadata } = await readSafetensors(path, { device: 'cpu' });
  const dispose = () => {
    for (const t of tensors.values()) t.dispose();
  };
  try {
    const text = metadata[CHECKPOINT_KEY];
    if (text === undefined) throw new FacecudaError('CORRUPT_FILE', `${path}: not a facecuda checkpoint (no '${CHECKPOINT_KEY}' metadata)`);
    let meta: CheckpointMeta;
    try {
      meta = JSON.parse(text) as CheckpointMeta;
    } catch {
      throw new FacecudaError('CORRUPT_FILE', `${path}: '${CHECKPOINT_KEY}' is not valid JSON`);
    }
    if (meta.version !== 1 || !Number.isInteger(meta.iteration)) throw new FacecudaError('CORRUPT_FILE', `${path}: unsupported checkpoint version ${String(meta.version)}`);
    const model = new Map<string, Tensor>();
    const head = new Map<string, Tensor>();
    for (const [k, t] of tensors) {
      if (k.startsWith('model/')) model.set(k.slice(6), t);
      else if (k.startsWith('head/')) head.set(k.slice(5), t);
    }
    const optimizerState = await unpackState(meta.optimizer, tensors, path);
    return { model, head, optimizerState, meta, dispose };
  } catch (e) {
    dispose();
    throw e;
  }
}
