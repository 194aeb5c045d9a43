/**
 * Exact 1:N search over a gallery of face embeddings: {@link FaceIndex} and {@link mergeTopK}.
 *
 * Scores are inner products computed in fp32, which for unit vectors is the cosine similarity.
 * Results are best first (higher score, then smaller id) and exact: every row is scored, no
 * approximation. On the CPU a vectorized scan serves few queries and a blocked GEMM batches of them;
 * on CUDA the gallery stays resident on the device. Searches run off the JS main thread.
 *
 * Ids are unsigned safe integers (0 … 2^53 − 1), for example your own database keys. Several
 * embeddings may share one id (multi-image enrolment); searches then score the identity by its best
 * embedding (`aggregate: 'max'`, the default), by the normalized mean of its embeddings
 * (`aggregate: 'mean'`), or return rows (`aggregate: 'none'`, where an id can appear more than once).
 *
 * Vectors are L2-normalized on the way in (`normalize: true`, the default), so scores are cosines
 * whatever the embedder returned; pass `normalize: false` to store and search vectors as they are.
 *
 * @example
 * const index = new FaceIndex({ dim: 512, storage: 'f16' });
 * index.add([1001, 1002], embeddings);              // Float32Array [2·512] or an array of rows
 * const { ids, scores } = await index.search(probe, 5);
 * await index.save('gallery.fcx', { key });         // 32-byte key: AES-256-GCM
 * const again = await FaceIndex.load('gallery.fcx', { key });
 */
import { randomBytes } from 'crypto';
import { promises as fsp } from 'fs';

import { addon, Binding } from '../binding';
import { resolveDevice, DeviceName } from '../device';
import { FacecudaError, invalidParameterError, outOfRangeError, withCallSite } from '../errors';
import { atomicWriteFile, ioError } from '../fsutil';
import { assertBool, assertInteger, assertKnownOptions, assertNumber, assertOneOf, is, optionsObject } from '../validate';
import * as fmt from './format';
import type { RangeSearchResult, SearchResult } from './types';

export { mergeTopK } from './merge';
import { isTyped } from './merge';
export type { RangeSearchResult, SearchResult } from './types';

/** How the rows of one id are scored. */
export type Aggregate = 'max' | 'mean' | 'none';
export type IndexStorage = 'f32' | 'f16';

export interface FaceIndexOptions {
  /** Embedding size (1 … 65536). */
  dim: number;
  /** 'cpu' (default), 'cuda', 'cuda:N' or 'auto'. An explicit CUDA device never falls back. */
  device?: 'cpu' | 'cuda' | `cuda:${number}` | 'auto';
  /** Row storage: 'f32' (default) or 'f16' (IEEE half: half the memory and bandwidth; ~1e-3 score error). */
  storage?: IndexStorage;
  /** L2-normalize added vectors and queries (default true). */
  normalize?: boolean;
}

export interface SearchOptions {
  /** Only these ids may appear in the results (a tenant, a watch list). */
  filter?: ArrayLike<number> | Iterable<number>;
  /** Scoring of ids with several rows: 'max' (default), 'mean' or 'none' (rows). */
  aggregate?: Aggregate;
}

/** Largest k on the CPU (the CUDA path takes k ≤ 1024). */
export const MAX_K = 16384;
const MAX_K_CUDA = 1024;
const MAX_ID = Number.MAX_SAFE_INTEGER;

type NativeSearchIndex = Binding.NativeSearchIndex;

function nativeClass(): Binding.Addon['NativeSearchIndex'] {
  return addon().NativeSearchIndex;
}

// #region argument conversion

function toIds(v: unknown, name: string): Float64Array {
  let arr: ArrayLike<unknown>;
  if (Array.isArray(v) || (is.typedArray(v) && !isTyped(v, 'BigInt64Array') && !isTyped(v, 'BigUint64Array'))) {
    arr = v as ArrayLike<unknown>;
  } else if (typeof v === 'number') {
    arr = [v];
  } else {
    throw invalidParameterError(name, 'an array of integer ids (or one id)', v);
  }
  const out = new Float64Array(arr.length);
  for (let i = 0; i < arr.length; i++) {
    const x = arr[i];
    if (!is.integer(x)) throw invalidParameterError(`${name}[${i}]`, 'an integer id', x);
    if (x < 0 || x > MAX_ID) throw outOfRangeError(`${name}[${i}]`, `an integer id between 0 and ${MAX_ID}`, x);
    out[i] = x;
  }
  return out;
}

/** Rows of `dim` floats from a flat Float32Array/number[] or an array of rows, copied; checks finiteness. */
function toRows(v: unknown, dim: number, name: string, rows?: number): { data: Float32Array; n: number } {
  let data: Float32Array;
  if (isTyped(v, 'Float32Array') || isTyped(v, 'Float64Array')) {
    const t = v as Float32Array | Float64Array;
    if (t.length % dim !== 0) throw invalidParameterError(name, `a length that is a multiple of dim=${dim}`, v);
    data = Float32Array.from(t);
  } else if (Array.isArray(v) && v.length > 0 && (Array.isArray(v[0]) || ArrayBuffer.isView(v[0]))) {
    data = new Float32Array(v.length * dim);
    v.forEach((row: unknown, i: number) => {
      if (!(Array.isArray(row) || isTyped(row, 'Float32Array') || isTyped(row, 'Float64Array')) || (row as ArrayLike<number>).length !== dim) {
        throw invalidParameterError(`${name}[${i}]`, `a row of ${dim} numbers`, row);
      }
      for (let d = 0; d < dim; d++) data[i * dim + d] = (row as ArrayLike<number>)[d];
    });
  } else if (Array.isArray(v)) {
    if (v.length % dim !== 0) throw invalidParameterError(name, `a length that is a multiple of dim=${dim}`, v);
    data = new Float32Array(v.length);
    for (let i = 0; i < v.length; i++) {
      if (typeof v[i] !== 'number') throw invalidParameterError(`${name}[${i}]`, 'a number', v[i]);
      data[i] = v[i] as number;
    }
  } else {
    throw invalidParameterError(name, 'a Float32Array of n·dim values or an array of rows', v);
  }
  const n = data.length / dim;
  if (rows !== undefined && n !== rows) {
    throw new FacecudaError('SHAPE_MISMATCH', `Expected ${rows} rows of ${dim} values for ${name} but received ${n}`);
  }
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) {
      throw invalidParameterError(`${name}[${Math.floor(i / dim)}][${i % dim}]`, 'a finite number', data[i]);
    }
  }
  return { data, n };
}

function normalizeRows(data: Float32Array, dim: number, name: string): void {
  for (let r = 0; r * dim < data.length; r++) {
    let s = 0;
    for (let d = 0; d < dim; d++) s += data[r * dim + d] * data[r * dim + d];
    if (!(s > 0)) throw invalidParameterError(`${name}[${r}]`, 'a vector with a non-zero norm (normalize is on)', 'a zero vector');
    const inv = 1 / Math.sqrt(s);
    for (let d = 0; d < dim; d++) data[r * dim + d] *= inv;
  }
}

function toKey(v: unknown, name: string): Uint8Array {
  if (!isTyped(v, 'Uint8Array')) throw invalidParameterError(name, 'a 32-byte Uint8Array or Buffer (AES-256 key)', v);
  if ((v as Uint8Array).length !== 32) throw outOfRangeError(`${name}.length`, 'exactly 32 bytes', (v as Uint8Array).length);
  return v as Uint8Array;
}

// #endregion

/**
 * An exact inner-product (cosine) index over face embeddings. See the module documentation.
 *
 * @example
 * const index = new FaceIndex({ dim: 512, storage: 'f16' });
 * index.add([101, 102], galleryEmbeddings);            // [2, 512], one row per id (repeat ids to enrol more images)
 * const { ids, scores } = await index.search(probe, 5); // best first, ties by id
 * await index.save('gallery.fidx', { key });           // AES-256-GCM with a 32-byte key
 */
export class FaceIndex {
  readonly dim: number;
  readonly storage: IndexStorage;
  readonly device: DeviceName;
  readonly normalize: boolean;
  #native: NativeSearchIndex | undefined;

  /**
   * @throws TypeError / RangeError for bad options; `CUDA_UNAVAILABLE` for an unusable CUDA device
   */
  constructor(options: FaceIndexOptions) {
    // Apply defaults
    const o = optionsObject(options, 'options');
    assertKnownOptions(o, 'FaceIndex', ['dim', 'device', 'storage', 'normalize']);
    const storage = o.storage ?? 'f32';
    const normalize = o.normalize ?? true;

    // Validate arguments
    assertInteger(o.dim, 'options.dim', 1, 65536);
    assertOneOf(storage, 'options.storage', ['f32', 'f16'] as const);
    assertBool(normalize, 'options.normalize');

    // Interpret options
    this.dim = o.dim;
    this.storage = storage;
    this.normalize = normalize;
    this.device = resolveDevice(o.device ?? 'cpu', 'options.device');
    const Native = nativeClass();
    this.#native = new Native(this.dim, this.storage, this.device);
  }

  #live(): NativeSearchIndex {
    if (!this.#native) throw new FacecudaError('DISPOSED', 'this FaceIndex has been disposed');
    return this.#native;
  }

  /** Number of rows (embeddings) in the index. */
  get size(): number {
    return this.#live().stats().size;
  }

  /** Number of distinct ids. */
  get identities(): number {
    return this.#live().stats().numIds;
  }

  /** Whether `id` has at least one row. */
  has(id: number): boolean {
    assertInteger(id, 'id', 0, MAX_ID);
    return this.#live().contains(id);
  }

  /**
   * Adds one row per id: `vectors` is a Float32Array of ids.length·dim values or an array of rows.
   * Repeating an id (in this call or across calls) enrols several embeddings for one identity.
   * Nothing is added when any argument is invalid.
   *
   * @throws TypeError / RangeError (ids, non-finite values, zero vectors with normalize on);
   *   `SHAPE_MISMATCH` when the row count differs from ids.length
   */
  add(ids: ArrayLike<number> | number, vectors: Float32Array | ArrayLike<number> | ArrayLike<ArrayLike<number>>): void {
    // Validate arguments
    const native = this.#live();
    const idArr = toIds(ids, 'ids');
    const { data } = toRows(vectors, this.dim, 'vectors', idArr.length);

    // Interpret options
    if (this.normalize) normalizeRows(data, this.dim, 'vectors');
    native.add(idArr, data);
  }

  /** Removes every row of each id (unknown ids are ignored); returns the number of rows removed. */
  remove(ids: ArrayLike<number> | number): number {
    const native = this.#live();
    return native.remove(toIds(ids, 'ids'));
  }

  /**
   * Replaces all rows of `id` with one vector.
   *
   * @throws `OUT_OF_RANGE` when id is not in the index
   */
  update(id: number, vector: Float32Array | ArrayLike<number>): void {
    const native = this.#live();
    assertInteger(id, 'id', 0, MAX_ID);
    const { data } = toRows(vector, this.dim, 'vector', 1);
    if (this.normalize) normalizeRows(data, this.dim, 'vector');
    native.update(id, data);
  }

  #searchArgs(queries: unknown, options: unknown): { q: Float32Array; Q: number; filter?: Float64Array; aggregate: Aggregate } {
    const o = optionsObject(options, 'options');
    assertKnownOptions(o, 'search', ['filter', 'aggregate']);
    const aggregate = o.aggregate ?? 'max';
    assertOneOf(aggregate, 'options.aggregate', ['max', 'mean', 'none'] as const);
    let filter: Float64Array | undefined;
    if (o.filter !== undefined) {
      const f = o.filter;
      if (f instanceof Set) filter = toIds([...f], 'options.filter');
      else filter = toIds(f, 'options.filter');
    }
    const { data, n } = toRows(queries, this.dim, 'queries');
    if (this.normalize) normalizeRows(data, this.dim, 'queries');
    return { q: data, Q: n, filter, aggregate };
  }

  /**
   * The k best entries for each query: `{ ids, scores, k }`, row q at `[q·k, (q + 1)·k)`, best first
   * (higher score, then smaller id); slots past the available count hold id -1 and score -Infinity.
   *
   * @param queries Float32Array of Q·dim values, or an array of rows
   * @param k 1 … 16384 (CUDA: 1 … 1024)
   * @throws TypeError / RangeError for bad arguments
   */
  search(queries: Float32Array | ArrayLike<number> | ArrayLike<ArrayLike<number>>, k: number, options?: SearchOptions): Promise<SearchResult> {
    const site = new Error();
    try {
      // Validate arguments
      const native = this.#live();
      assertInteger(k, 'k', 1, this.device === 'cpu' ? MAX_K : MAX_K_CUDA);
      const a = this.#searchArgs(queries, options);

      // Interpret options
      return withCallSite(native.search(a.q, a.Q, k, a.filter, a.aggregate), site);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * Every entry with score ≥ minScore, for each query, best first: `{ offsets, ids, scores }`.
   * Runs on the CPU (the host copy of the rows) whatever the device.
   *
   * @throws TypeError / RangeError for bad arguments; `OUT_OF_RANGE` when more than 2^28 entries match
   */
  searchRange(queries: Float32Array | ArrayLike<number> | ArrayLike<ArrayLike<number>>, minScore: number, options?: SearchOptions): Promise<RangeSearchResult> {
    const site = new Error();
    try {
      const native = this.#live();
      assertNumber(minScore, 'minScore');
      const a = this.#searchArgs(queries, options);
      return withCallSite(native.searchRange(a.q, a.Q, minScore, a.filter, a.aggregate), site);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * Writes the index to `path` atomically (a temporary file, fsync, rename). With `key` (32 bytes)
   * the ids and vectors are encrypted and authenticated with AES-256-GCM. Only live rows are
   * written: removed embeddings do not survive in the file. Format: lib/search/format.ts.
   *
   * @throws `IO_ERROR`; TypeError / RangeError for a bad key
   */
  async save(path: string, options?: { key?: Uint8Array }): Promise<void> {
    // Validate arguments
    const o = optionsObject(options, 'options');
    assertKnownOptions(o, 'save', ['key']);
    if (!is.string(path) || path.length === 0) throw invalidParameterError('path', 'a file path', path);
    const key = o.key === undefined ? undefined : toKey(o.key, 'options.key');
    const native = this.#live();

    // Interpret options
    const { ids, rows } = await native.exportRows();
    const n = ids.length;
    const h: fmt.Header = {
      encrypted: key !== undefined,
      dim: this.dim,
      storage: this.storage,
      n,
      chunk: key ? fmt.DEFAULT_CHUNK : 0,
      salt: key ? randomBytes(8) : Buffer.alloc(8),
      normalize: this.normalize,
    };
    const header = fmt.writeHeader(h);
    const payload = Buffer.alloc(fmt.payloadBytes(h));
    for (let i = 0; i < n; i++) payload.writeBigUInt64LE(BigInt(ids[i]), i * 8);
    payload.set(rows, n * 8);
    rows.fill(0);
    const file = Buffer.alloc(fmt.fileBytes(h));
    header.copy(file, 0);
    if (key) {
      await fmt.encryptInto(await fmt.importKey(key), h, header, payload, file, fmt.HEADER_BYTES);
    } else {
      payload.copy(file, fmt.HEADER_BYTES);
    }
    payload.fill(0); // do not leave a plaintext copy of the embeddings to the GC
    const body = file.subarray(0, file.length - fmt.CHECKSUM_BYTES);
    (await fmt.sha256(body)).copy(file, file.length - fmt.CHECKSUM_BYTES);
    await atomicWriteFile(path, file);
  }

  /**
   * Reads an index written by {@link FaceIndex.save}. The stored rows are used as they are (no
   * re-normalization); `device` defaults to 'cpu'.
   *
   * @throws `CORRUPT_FILE` for a damaged, truncated or tampered file or a wrong key; `IO_ERROR`;
   *   INVALID_ARGUMENT when the file is encrypted and no key is given (or a key is given for a plain file)
   */
  static async load(path: string, options?: { key?: Uint8Array; device?: FaceIndexOptions['device'] }): Promise<FaceIndex> {
    // Validate arguments
    const o = optionsObject(options, 'options');
    assertKnownOptions(o, 'load', ['key', 'device']);
    if (!is.string(path) || path.length === 0) throw invalidParameterError('path', 'a file path', path);
    const key = o.key === undefined ? undefined : toKey(o.key, 'options.key');

    // Interpret options
    const file = await readWhole(path);
    const h = fmt.readHeader(file, path);
    if (file.length !== fmt.fileBytes(h)) {
      throw fmt.corrupt(path, `${file.length} bytes where the header describes ${fmt.fileBytes(h)} (truncated or extended)`);
    }
    const body = file.subarray(0, file.length - fmt.CHECKSUM_BYTES);
    if (!(await fmt.sha256(body)).equals(file.subarray(file.length - fmt.CHECKSUM_BYTES))) {
      throw fmt.corrupt(path, 'checksum mismatch (the file is damaged)');
    }
    if (h.encrypted && !key) throw invalidParameterError('options.key', `the 32-byte key: '${path}' is encrypted`, undefined);
    if (!h.encrypted && key) throw invalidParameterError('options.key', `no key: '${path}' is not encrypted`, '(a key)');
    const header = file.subarray(0, fmt.HEADER_BYTES);
    const payload = key
      ? await fmt.decrypt(await fmt.importKey(key), h, header, file.subarray(fmt.HEADER_BYTES, file.length - fmt.CHECKSUM_BYTES), path)
      : file.subarray(fmt.HEADER_BYTES, fmt.HEADER_BYTES + fmt.payloadBytes(h));
    const ids = new Float64Array(h.n);
    for (let i = 0; i < h.n; i++) {
      const id = payload.readBigUInt64LE(i * 8);
      if (id > BigInt(MAX_ID)) throw fmt.corrupt(path, `row ${i} has id ${id} above 2^53 - 1`);
      ids[i] = Number(id);
    }
    const index = new FaceIndex({ dim: h.dim, storage: h.storage, normalize: h.normalize, device: o.device as FaceIndexOptions['device'] });
    const rows = new Uint8Array(payload.buffer, payload.byteOffset + h.n * 8, payload.length - h.n * 8);
    try {
      index.#live().addRaw(ids, rows);
    } catch (e) {
      index.dispose();
      if (e instanceof FacecudaError && (e.code === 'CORRUPT_FILE' || e.code === 'INVALID_ARGUMENT')) throw fmt.corrupt(path, e.message);
      throw e;
    } finally {
      if (key) payload.fill(0);
    }
    return index;
  }

  /** Frees the rows (and the device copy); later calls throw DISPOSED. Searches in flight finish. */
  dispose(): void {
    if (this.#native) {
      this.#native.dispose();
      this.#native = undefined;
    }
  }
}

/** Reads a whole file with positioned reads (fs.readFile stops at 2 GiB). */
async function readWhole(path: string): Promise<Buffer> {
  let fh;
  try {
    fh = await fsp.open(path, 'r');
  } catch (err) {
    throw ioError('open', path, err);
  }
  try {
    const { size } = await fh.stat();
    const buf = Buffer.alloc(size);
    let off = 0;
    while (off < size) {
      const { bytesRead } = await fh.read(buf, off, Math.min(size - off, 1 << 30), off);
      if (bytesRead === 0) break;
      off += bytesRead;
    }
    return off === size ? buf : buf.subarray(0, off);
  } catch (err) {
    throw ioError('read', path, err);
  } finally {
    await fh.close().catch(() => undefined);
  }
}
