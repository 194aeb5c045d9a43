/**
 * MXNet RecordIO (`.rec` + `.idx`): the packs MS1MV2/MS1MV3/Glint360K/WebFace are distributed in
 * (SPEC §9.3). Reader ({@link RecordIO}, a {@link SampleSource}) and writer ({@link RecordIOWriter},
 * {@link packImages}).
 *
 * The layout (dmlc-core recordio.h/.cc, mxnet recordio.py):
 *
 * - A physical record: u32 magic 0xCED7230A (bytes 0A 23 D7 CE), u32 lrec = cflag << 29 | length,
 *   `length` bytes, zero padding to a multiple of 4. cflag 0 = a whole record, 1/2/3 = the first,
 *   a middle, the last part of a record split where its bytes held the magic word at a 4-aligned
 *   offset: the writer drops that word and the reader puts it back between consecutive parts.
 * - `.idx`: text, one `<key>\t<byte offset of the record's first magic>\n` per record, in write order.
 * - A logical record: IRHeader 'IfQQ' (24 bytes: u32 flag, f32 label, u64 id, u64 id2); flag > 0 means
 *   `flag` float32 labels follow (and the header label is 0); then the encoded image.
 * - InsightFace packs: key 0 is a meta record with labels [N+1, N+1+K] (N images at keys 1..N, K
 *   identity records at keys N+1..N+K, each with labels [first key, end key) of its images and no
 *   image bytes). InsightFace's RecBuilder writes the meta record LAST in the file, so only the
 *   `.idx` says where it is. A `property` file "K,H,W" sits next to the `.rec`.
 *
 * Which records are samples: arcface_torch MXFaceDataset's rule. If key 0 is a meta record, the
 * images are keys 1 .. label[0] − 1; otherwise (im2rec output, shuffled packs) every `.idx` key, in
 * `.idx` order. One deviation: a key-0 record is taken as a meta record only if it has float labels
 * (flag ≥ 2) AND no image bytes; MXFaceDataset also takes a key-0 image with a label array for one,
 * and would then read garbage ranges.
 *
 * Float labels above 2^24. Labels are float32, which cannot hold every integer above 16,777,216: the
 * meta record of a pack with more than 2^24 images or keys stores N+1 and N+1+K rounded. When a meta
 * label is above 2^24 the reader resolves the exact key from the integer `.idx` keys: among the keys
 * that round to the stored value, the image range ends where the first identity record (no image
 * bytes, labels[0] = 1, which is exact) sits, and the identity range ends after the last of the
 * consecutive identity keys that follow. {@link RecordIO.numClasses} is the `numClasses` option when
 * given, else `property`'s (exact text), else the number of identity keys (exact), else 0 (unknown:
 * an im2rec pack with no `property` file and no option).
 *
 * Sample labels are the header label (flag 0) or labels[0], truncated to an integer as arcface_torch's
 * `torch.tensor(label, dtype=torch.long)` does; class ids are far below 2^24 in every public pack.
 *
 * I/O: the `.rec` is never loaded whole (packs are 100+ GB): each record is read with positional
 * reads on one fs.promises FileHandle (one read for a record up to 16 KiB, concurrent reads are
 * fine). The `.idx` is parsed in chunks into two Float64Arrays. Anything malformed is a
 * FacecudaError `CORRUPT_FILE` naming the file, the key and the byte offset (also set as the error's
 * `key` and `byteOffset` properties); a file that cannot be opened or read is `IO_ERROR`. The reader
 * checks: the magic, the part sequence (0 | 1, 2*, 3), that a non-final part's length is a multiple
 * of 4, that every record lies inside the file, that the IRHeader and its labels fit, `.idx` syntax,
 * duplicate keys and offsets that are not a multiple of 4 or beyond the file. It does not check the
 * padding bytes (dmlc-core does not either).
 *
 * The writer writes what InsightFace's RecBuilder writes (test/fixtures/gen_recordio.py is an
 * independent Python writer that the tests compare with byte for byte): images at keys 1..N with
 * IRHeader(flag 0, label, id = key, id2 = 0) (or flag = number of labels for a label array), then one
 * identity record per class 0..K−1 (flag 2, labels [start, end), id = key, id2 = 0; a class without
 * images gets an empty range at the position it would have), then the meta record IRHeader(2,
 * [N+1, N+1+K], id 0, id2 1) last; `.idx` lines in write order (1..N+K, then 0); `property`
 * "K,H,W\n". With `meta: false` it writes an im2rec-style pack instead: images at keys 0..N−1, no
 * identity or meta records. Files go to temporary names, are fsynced, then renamed (.rec, .idx,
 * property, in that order).
 *
 * This module assumes a little-endian host (the only kind facecuda builds for).
 */
import { randomBytes } from 'crypto';
import { promises as fsp } from 'fs';
import type { FileHandle } from 'fs/promises';
import { dirname, join } from 'path';
import { FacecudaError, invalidParameterError, outOfRangeError } from '../errors';
import { ioError, writeAll } from '../fsutil';
import { assertInteger, assertKnownOptions, assertString, is, optionsObject } from '../validate';
import type { Sample, SampleSource, SourceDescriptor } from './types';

// ---------------------------------------------------------------------------------------------
// Constants

/** The RecordIO magic word (on disk, little-endian: 0A 23 D7 CE). */
export const RECORDIO_MAGIC = 0xced7230a;
const MAGIC_BYTES = Uint8Array.of(0x0a, 0x23, 0xd7, 0xce);
/** Records (and parts) are shorter than 2^29 bytes: the length field has 29 bits. */
export const RECORDIO_MAX_LENGTH = 2 ** 29 - 1;
/** Size of the MXNet IRHeader ('IfQQ'). */
export const IRHEADER_SIZE = 24;
const F32_EXACT = 2 ** 24;
/** One read covers a whole record up to this size; larger records take a second read. */
const FIRST_READ = 16 * 1024;
const IDX_CHUNK = 4 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Types

/** The MXNet image-record header. */
export interface IRHeader {
  /** 0 for a scalar label, else the number of float32 labels that precede the image bytes. */
  readonly flag: number;
  /** The scalar label (float32; 0 when flag > 0). */
  readonly label: number;
  readonly id: bigint;
  readonly id2: bigint;
}

/** A logical record, as {@link RecordIO.readKey} returns it. */
export interface RecordIORecord {
  readonly key: number;
  /** Byte offset of the record's first magic word in the `.rec`. */
  readonly offset: number;
  readonly header: IRHeader;
  /** The float32 labels when header.flag > 0. */
  readonly labels?: Float32Array;
  /** The bytes after the header and labels (the encoded image; empty for meta/identity records). */
  readonly payload: Uint8Array;
}

/** The InsightFace meta record, as key ranges [start, end). */
export interface RecordIOMeta {
  readonly imageKeys: readonly [number, number];
  readonly identityKeys: readonly [number, number];
}

/** The `property` file: "numClasses,height,width". */
export interface RecordIOProperty {
  readonly numClasses: number;
  readonly height: number;
  readonly width: number;
}

/** A sample of a RecordIO pack. */
export interface RecordIOSample extends Sample {
  readonly label: number;
  readonly encoded: Uint8Array;
  /** The record's key in the `.idx`. */
  readonly key: number;
  /** IRHeader id (exact below 2^53; {@link RecordIO.readKey} gives the exact bigint). */
  readonly id: number;
  /** The float32 labels when the record has a label array (face2rec2 stores [label, aligned]). */
  readonly labels?: Float32Array;
}

export interface RecordIOOpenOptions {
  /** Number of classes when the pack has neither a `property` file nor a meta record. */
  numClasses?: number;
}

export interface RecordIOWriterOptions {
  /** Number of classes K (default: largest label + 1). Labels must be below it. */
  numClasses?: number;
  /** Image size for the `property` file: a number or [height, width] (default 112). */
  imageSize?: number | readonly [number, number];
  /** Write identity and meta records (InsightFace layout, default true); false: im2rec layout. */
  meta?: boolean;
}

// ---------------------------------------------------------------------------------------------
// Errors and paths

function corrupt(path: string, message: string, key?: number, offset?: number): FacecudaError {
  const where = [key !== undefined ? `key ${key}` : '', offset !== undefined ? `byte offset ${offset}` : ''].filter(Boolean).join(' at ');
  const e = new FacecudaError('CORRUPT_FILE', `Corrupt RecordIO file '${path}'${where ? ` (${where})` : ''}: ${message}`);
  if (key !== undefined) Object.defineProperty(e, 'key', { value: key, enumerable: false });
  if (offset !== undefined) Object.defineProperty(e, 'byteOffset', { value: offset, enumerable: false });
  return e;
}

/** 'dir/train' or 'dir/train.rec' (or .idx) → the three paths. */
function packPaths(prefixOrRec: string): { rec: string; idx: string; property: string } {
  const base = /\.(rec|idx)$/.test(prefixOrRec) ? prefixOrRec.slice(0, -4) : prefixOrRec;
  return { rec: `${base}.rec`, idx: `${base}.idx`, property: join(dirname(base), 'property') };
}

async function readFully(fh: FileHandle, into: Uint8Array, position: number): Promise<number> {
  let done = 0;
  while (done < into.length) {
    const { bytesRead } = await fh.read(into, done, into.length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

// ---------------------------------------------------------------------------------------------
// The .idx

interface Index {
  keys: Float64Array;
  offsets: Float64Array;
  /** key → position when keys are not strictly increasing (null: binary search / identity). */
  map: Map<number, number> | null;
  /** keys[i] === i for every i. */
  identity: boolean;
}

/** Parses a `.idx` file in chunks: lines "<key>\t<offset>", blank lines ignored. */
async function readIndex(idxPath: string, recPath: string, recSize: number): Promise<Index> {
  let fh: FileHandle;
  try {
    fh = await fsp.open(idxPath, 'r');
  } catch (err) {
    throw ioError('open RecordIO index', idxPath, err);
  }
  const fail = (line: number, what: string): FacecudaError =>
    new FacecudaError('CORRUPT_FILE', `Corrupt RecordIO index '${idxPath}' (line ${line}): ${what}`);
  let keys = new Float64Array(1024);
  let offsets = new Float64Array(1024);
  let n = 0;
  try {
    const size = (await fh.stat()).size;
    const buf = new Uint8Array(Math.min(IDX_CHUNK, Math.max(size, 1)));
    // Line state: field 0 = key, 1 = offset; 'state' 0 = before digits, 1 = in digits, 2 = after digits.
    let field = 0;
    let state = 0;
    let value = 0;
    let key = 0;
    let line = 1;
    let pos = 0;
    const endLine = (): void => {
      if (field === 0 && state === 0) return; // blank line
      if (field === 0 || state === 0) throw fail(line, 'expected "<key>\\t<offset>"');
      if (value % 4 !== 0) throw fail(line, `offset ${value} of key ${key} is not a multiple of 4 (records are 4-byte aligned)`);
      if (value + 8 > recSize) throw fail(line, `offset ${value} of key ${key} is beyond the end of '${recPath}' (${recSize} bytes)`);
      if (n === keys.length) {
        const k2 = new Float64Array(n * 2);
        k2.set(keys);
        keys = k2;
        const o2 = new Float64Array(n * 2);
        o2.set(offsets);
        offsets = o2;
      }
      keys[n] = key;
      offsets[n] = value;
      n++;
    };
    while (pos < size) {
      const got = await readFully(fh, buf.subarray(0, Math.min(buf.length, size - pos)), pos);
      if (got === 0) break;
      for (let i = 0; i < got; i++) {
        const c = buf[i];
        if (c >= 0x30 && c <= 0x39) {
          if (state === 2) throw fail(line, 'unexpected digit after a number');
          state = 1;
          value = value * 10 + (c - 0x30);
          if (value > Number.MAX_SAFE_INTEGER) throw fail(line, 'number too large');
        } else if (c === 0x09 || c === 0x20 || c === 0x0d) {
          if (state === 1) state = 2;
          if (c === 0x09 && field === 0 && state === 2) {
            key = value;
            value = 0;
            field = 1;
            state = 0;
          }
        } else if (c === 0x0a) {
          endLine();
          field = 0;
          state = 0;
          value = 0;
          line++;
        } else {
          throw fail(line, `unexpected byte 0x${c.toString(16).padStart(2, '0')}`);
        }
      }
      pos += got;
    }
    endLine();
  } catch (err) {
    throw err instanceof FacecudaError ? err : ioError('read RecordIO index', idxPath, err);
  } finally {
    await fh.close().catch(() => undefined);
  }
  keys = keys.slice(0, n);
  offsets = offsets.slice(0, n);
  let identity = true;
  let increasing = true;
  for (let i = 0; i < n; i++) {
    if (keys[i] !== i) identity = false;
    if (i > 0 && !(keys[i] > keys[i - 1])) increasing = false;
  }
  let map: Map<number, number> | null = null;
  if (!increasing) {
    map = new Map();
    for (let i = 0; i < n; i++) {
      if (map.has(keys[i])) {
        throw new FacecudaError('CORRUPT_FILE', `Corrupt RecordIO index '${idxPath}': key ${keys[i]} appears twice (lines ${map.get(keys[i])! + 1} and ${i + 1})`);
      }
      map.set(keys[i], i);
    }
  }
  return { keys, offsets, map, identity };
}

function findKey(index: Index, key: number): number {
  if (index.identity) return key >= 0 && key < index.keys.length && Number.isInteger(key) ? key : -1;
  if (index.map) return index.map.get(key) ?? -1;
  let lo = 0;
  let hi = index.keys.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const k = index.keys[mid];
    if (k === key) return mid;
    if (k < key) lo = mid + 1;
    else hi = mid - 1;
  }
  return -1;
}

// ---------------------------------------------------------------------------------------------
// Record decoding

/** Splits a logical record into header, labels and payload. */
function unpack(bytes: Uint8Array, fail: (msg: string) => FacecudaError): { header: IRHeader; labels?: Float32Array; payload: Uint8Array } {
  if (bytes.length < IRHEADER_SIZE) throw fail(`the record has ${bytes.length} bytes, fewer than the ${IRHEADER_SIZE}-byte IRHeader`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const flag = dv.getUint32(0, true);
  const header: IRHeader = { flag, label: dv.getFloat32(4, true), id: dv.getBigUint64(8, true), id2: dv.getBigUint64(16, true) };
  if (flag === 0) return { header, payload: bytes.subarray(IRHEADER_SIZE) };
  const need = IRHEADER_SIZE + flag * 4;
  if (need > bytes.length) throw fail(`IRHeader flag ${flag} announces ${flag} float32 labels (${flag * 4} bytes) but only ${bytes.length - IRHEADER_SIZE} bytes follow the header`);
  const labels = new Float32Array(flag);
  for (let i = 0; i < flag; i++) labels[i] = dv.getFloat32(IRHEADER_SIZE + 4 * i, true);
  return { header, labels, payload: bytes.subarray(need) };
}

// ---------------------------------------------------------------------------------------------
// The reader

/**
 * A RecordIO pack opened for random access.
 *
 * @example
 * const rec = await RecordIO.open('faces_emore/train');
 * console.log(rec.size, rec.numClasses, rec.header);
 * const { label, encoded } = await rec.get(0);
 * await rec.close();
 */
export class RecordIO implements SampleSource {
  /** Path of the `.rec` file. */
  readonly path: string;
  readonly idxPath: string;
  /** Number of image records (samples). */
  readonly size: number;
  readonly numClasses: number;
  /** The meta record's ranges, or null when the pack has none. */
  readonly header: RecordIOMeta | null;
  /** The `property` file, or null when absent. */
  readonly property: RecordIOProperty | null;
  /** Size of the `.rec` in bytes. */
  readonly byteLength: number;
  #fh: FileHandle | null;
  readonly #index: Index;
  /** First image key when the meta record selects keys (images are keys first .. first+size−1). */
  readonly #firstImageKey: number;

  private constructor(
    path: string, idxPath: string, fh: FileHandle, byteLength: number, index: Index,
    meta: RecordIOMeta | null, property: RecordIOProperty | null, numClasses: number,
  ) {
    this.path = path;
    this.idxPath = idxPath;
    this.#fh = fh;
    this.byteLength = byteLength;
    this.#index = index;
    this.header = meta;
    this.property = property;
    this.numClasses = numClasses;
    this.size = meta ? meta.imageKeys[1] - meta.imageKeys[0] : index.keys.length;
    this.#firstImageKey = meta ? meta.imageKeys[0] : -1;
  }

  /**
   * Opens a pack: `prefix` ('dir/train') or the `.rec` path; the `.idx` is the same name with `.idx`,
   * and a `property` file in the same folder is read if present.
   *
   * @throws TypeError for bad arguments; `IO_ERROR` when a file cannot be opened or read;
   *   `CORRUPT_FILE` for a malformed `.idx`, `property` or meta record
   */
  static async open(prefixOrRecPath: string, options?: RecordIOOpenOptions): Promise<RecordIO> {
    // Validate arguments
    assertString(prefixOrRecPath, 'prefixOrRecPath');
    if (prefixOrRecPath.length === 0) throw invalidParameterError('prefixOrRecPath', 'a non-empty path', prefixOrRecPath);
    const opts = optionsObject(options, 'options');
    assertKnownOptions(opts, 'RecordIO.open', ['numClasses']);
    if (opts.numClasses !== undefined) assertInteger(opts.numClasses, 'numClasses', 0);

    // Interpret options
    const paths = packPaths(prefixOrRecPath);
    let fh: FileHandle;
    try {
      fh = await fsp.open(paths.rec, 'r');
    } catch (err) {
      throw ioError('open RecordIO file', paths.rec, err);
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new FacecudaError('IO_ERROR', `Cannot read RecordIO file '${paths.rec}': it is not a regular file`);
      const index = await readIndex(paths.idx, paths.rec, st.size);
      const property = await readProperty(paths.property);
      const probe = new RecordIO(paths.rec, paths.idx, fh, st.size, index, null, property, 0);
      const meta = await probe.#readMeta();
      const numClasses = (opts.numClasses as number | undefined) ?? property?.numClasses ?? (meta ? meta.identityKeys[1] - meta.identityKeys[0] : 0);
      return new RecordIO(paths.rec, paths.idx, fh, st.size, index, meta, property, numClasses);
    } catch (err) {
      await fh.close().catch(() => undefined);
      throw err;
    }
  }

  /** Number of records in the `.idx` (images, identity and meta records). */
  get keyCount(): number {
    return this.#index.keys.length;
  }

  /** Every `.idx` key, in `.idx` order. */
  keys(): Float64Array {
    return this.#index.keys.slice();
  }

  /** Whether the `.idx` has this key. */
  hasKey(key: number): boolean {
    return findKey(this.#index, key) >= 0;
  }

  /** The record key of sample i. */
  keyOf(i: number): number {
    assertInteger(i, 'i', 0);
    if (i >= this.size) throw outOfRangeError('i', `an integer between 0 and ${this.size - 1}`, i);
    return this.#firstImageKey >= 0 ? this.#firstImageKey + i : this.#index.keys[i];
  }

  /**
   * Sample i (i in [0, size)): the label as an integer, the encoded image, the key and id.
   *
   * @throws RangeError for i out of range; `CORRUPT_FILE` for a malformed record or a non-finite label
   */
  async get(i: number): Promise<RecordIOSample> {
    const key = this.keyOf(i);
    if (this.#firstImageKey >= 0 && !this.hasKey(key)) {
      throw corrupt(this.path, `the meta record says sample ${i} is key ${key}, but the .idx has no such key`, key);
    }
    const rec = await this.readKey(key);
    const raw = rec.header.flag === 0 ? rec.header.label : rec.labels![0];
    if (!Number.isFinite(raw)) throw corrupt(this.path, `the label ${raw} is not finite`, key, rec.offset);
    const label = Math.trunc(raw);
    const id = Number(rec.header.id);
    return rec.labels ? { label, encoded: rec.payload, key, id, labels: rec.labels } : { label, encoded: rec.payload, key, id };
  }

  /**
   * A record by key: its IRHeader, its float labels (if any) and the bytes after them.
   *
   * @throws TypeError for a bad key; RangeError for a key not in the `.idx`; `CORRUPT_FILE` when the
   *   record is malformed
   */
  async readKey(key: number): Promise<RecordIORecord> {
    const { bytes, offset } = await this.#readRecordBytes(key);
    const { header, labels, payload } = unpack(bytes, (m) => corrupt(this.path, m, key, offset));
    return labels ? { key, offset, header, labels, payload } : { key, offset, header, payload };
  }

  /** The logical record bytes of a key (IRHeader + labels + payload), multi-part records joined. */
  async readRecordBytes(key: number): Promise<Uint8Array> {
    return (await this.#readRecordBytes(key)).bytes;
  }

  describe(): SourceDescriptor {
    return { kind: 'recordio', path: this.path };
  }

  async close(): Promise<void> {
    const fh = this.#fh;
    this.#fh = null;
    if (fh) await fh.close().catch(() => undefined);
  }

  async #readRecordBytes(key: number): Promise<{ bytes: Uint8Array; offset: number }> {
    assertInteger(key, 'key', 0);
    const pos = findKey(this.#index, key);
    if (pos < 0) throw outOfRangeError('key', 'a key of the .idx', key);
    const fh = this.#fh;
    if (!fh) throw new FacecudaError('DISPOSED', `RecordIO '${this.path}' is closed`);
    const start = this.#index.offsets[pos];
    const parts: Uint8Array[] = [];
    let at = start;
    let total = 0;
    for (let part = 0; ; part++) {
      if (at + 8 > this.byteLength) throw corrupt(this.path, `truncated: a record header at byte ${at} runs past the end of the file (${this.byteLength} bytes)`, key, start);
      // One read for the header and (usually) the whole part.
      const first = new Uint8Array(Math.min(FIRST_READ, this.byteLength - at));
      let got: number;
      try {
        got = await readFully(fh, first, at);
      } catch (err) {
        throw ioError('read RecordIO file', this.path, err);
      }
      if (got < 8) throw corrupt(this.path, `truncated: the file ends inside the record header at byte ${at}`, key, start);
      const dv = new DataView(first.buffer, 0, 8);
      const magic = dv.getUint32(0, true);
      if (magic !== RECORDIO_MAGIC) {
        throw corrupt(this.path, `bad magic 0x${magic.toString(16).padStart(8, '0')} at byte ${at} (expected 0xced7230a)`, key, start);
      }
      const lrec = dv.getUint32(4, true);
      const cflag = lrec >>> 29;
      const length = lrec & RECORDIO_MAX_LENGTH;
      if (part === 0 ? cflag !== 0 && cflag !== 1 : cflag !== 2 && cflag !== 3) {
        const expected = part === 0 ? '0 (whole) or 1 (first part)' : '2 (middle part) or 3 (last part)';
        throw corrupt(this.path, `part ${part} at byte ${at} has cflag ${cflag}, expected ${expected}`, key, start);
      }
      const last = cflag === 0 || cflag === 3;
      if (!last && length % 4 !== 0) throw corrupt(this.path, `a non-final part at byte ${at} has length ${length}, not a multiple of 4`, key, start);
      const padded = (length + 3) & ~3;
      if (at + 8 + padded > this.byteLength) {
        throw corrupt(this.path, `truncated: the part at byte ${at} needs ${padded} bytes but the file ends ${this.byteLength - at - 8} bytes later`, key, start);
      }
      let data: Uint8Array;
      if (got >= 8 + length) {
        data = first.subarray(8, 8 + length);
      } else {
        data = new Uint8Array(length);
        data.set(first.subarray(8, got));
        let rest: number;
        try {
          rest = await readFully(fh, data.subarray(got - 8), at + got);
        } catch (err) {
          throw ioError('read RecordIO file', this.path, err);
        }
        if (rest < length - (got - 8)) throw corrupt(this.path, `truncated: the file ended while reading the part at byte ${at}`, key, start);
      }
      parts.push(data);
      total += length;
      at += 8 + padded;
      if (last) break;
      total += 4;
      if (total > 2 ** 31) throw corrupt(this.path, 'a multi-part record grows beyond 2 GiB', key, start);
    }
    if (parts.length === 1) return { bytes: parts[0], offset: start };
    const out = new Uint8Array(total);
    let o = 0;
    for (let p = 0; p < parts.length; p++) {
      if (p > 0) {
        out.set(MAGIC_BYTES, o);
        o += 4;
      }
      out.set(parts[p], o);
      o += parts[p].length;
    }
    return { bytes: out, offset: start };
  }

  /** The meta record's ranges (exact keys), or null (MXFaceDataset's rule, see the module notes). */
  async #readMeta(): Promise<RecordIOMeta | null> {
    if (!this.hasKey(0)) return null;
    const rec = await this.readKey(0);
    if (rec.header.flag < 2 || rec.payload.length !== 0) return null;
    const [a, b] = [rec.labels![0], rec.labels![1]];
    const bad = (m: string): FacecudaError => corrupt(this.path, `meta record: ${m}`, 0, rec.offset);
    if (!Number.isInteger(a) || !Number.isInteger(b) || a < 1 || b < a) throw bad(`labels [${a}, ${b}] are not key ranges (need integers 1 ≤ label[0] ≤ label[1])`);
    const imageEnd = a <= F32_EXACT ? a : await this.#resolveImageEnd(a, bad);
    let identityEnd: number;
    if (b <= F32_EXACT) {
      identityEnd = b;
    } else {
      identityEnd = imageEnd;
      while (this.hasKey(identityEnd)) identityEnd++;
      if (Math.fround(identityEnd) !== b) throw bad(`label[1] ${b} does not match the ${identityEnd - imageEnd} identity keys of the .idx after key ${imageEnd}`);
    }
    if (identityEnd < imageEnd) throw bad(`label[1] ${identityEnd} is below label[0] ${imageEnd}`);
    if (imageEnd > 1 && (!this.hasKey(1) || !this.hasKey(imageEnd - 1))) {
      throw bad(`the images are keys 1..${imageEnd - 1} but the .idx lacks key ${this.hasKey(1) ? imageEnd - 1 : 1}`);
    }
    return { imageKeys: [1, imageEnd], identityKeys: [imageEnd, identityEnd] };
  }

  /** Exact N+1 for a float32 label[0] above 2^24 (see the module notes). */
  async #resolveImageEnd(a: number, bad: (m: string) => FacecudaError): Promise<number> {
    const ulp = 2 ** (Math.floor(Math.log2(a)) - 23);
    for (let c = a - ulp / 2; c <= a + ulp / 2; c++) {
      if (Math.fround(c) !== a) continue;
      if (this.hasKey(c)) {
        const r = await this.readKey(c);
        if (r.header.flag >= 2 && r.payload.length === 0 && r.labels![0] === 1) return c;
      } else if (this.hasKey(c - 1)) {
        // No identity records: the images end at the last key.
        const r = await this.readKey(c - 1);
        if (r.payload.length > 0) return c;
      }
    }
    throw bad(`cannot find the end of the image keys near the float32 value ${a} (no identity record with labels[0] = 1 among the keys that round to it)`);
  }
}

async function readProperty(path: string): Promise<RecordIOProperty | null> {
  let text: string;
  try {
    text = await fsp.readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw ioError('read RecordIO property file', path, err);
  }
  const m = /^\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*$/.exec(text);
  if (!m) throw new FacecudaError('CORRUPT_FILE', `Corrupt RecordIO property file '${path}': expected "numClasses,height,width", got ${JSON.stringify(text.slice(0, 80))}`);
  return { numClasses: Number(m[1]), height: Number(m[2]), width: Number(m[3]) };
}

// ---------------------------------------------------------------------------------------------
// The writer

/** Encodes one logical record as physical record(s), splitting at aligned magic words. */
export function encodeRecord(payload: Uint8Array): Uint8Array {
  if (payload.length > RECORDIO_MAX_LENGTH) throw outOfRangeError('record length', `at most ${RECORDIO_MAX_LENGTH} bytes`, payload.length);
  const buf = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  const cuts: number[] = [];
  for (let from = 0; ;) {
    const p = buf.indexOf(MAGIC_BYTES, from);
    if (p < 0) break;
    if (p % 4 === 0) {
      cuts.push(p);
      from = p + 4;
    } else {
      from = p + 1;
    }
  }
  const L = payload.length;
  const out = new Uint8Array(8 * (cuts.length + 1) + L - 4 * cuts.length + ((4 - (L % 4)) % 4));
  const dv = new DataView(out.buffer);
  let o = 0;
  let start = 0;
  const emit = (cflag: number, end: number): void => {
    dv.setUint32(o, RECORDIO_MAGIC, true);
    dv.setUint32(o + 4, ((cflag << 29) | (end - start)) >>> 0, true);
    out.set(payload.subarray(start, end), o + 8);
    o += 8 + (end - start);
  };
  for (let c = 0; c < cuts.length; c++) {
    emit(c === 0 ? 1 : 2, cuts[c]);
    start = cuts[c] + 4;
  }
  emit(cuts.length > 0 ? 3 : 0, L);
  return out; // the padding is already zero
}

/** Packs an IRHeader, labels and payload into a logical record (mxnet recordio.pack). */
export function packRecord(label: number | ArrayLike<number>, payload: Uint8Array, id: number | bigint = 0, id2: number | bigint = 0): Uint8Array {
  const labels = typeof label === 'number' ? null : Array.from(label);
  const nl = labels ? labels.length : 0;
  const out = new Uint8Array(IRHEADER_SIZE + 4 * nl + payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, nl, true);
  dv.setFloat32(4, labels ? 0 : (label as number), true);
  dv.setBigUint64(8, BigInt(id), true);
  dv.setBigUint64(16, BigInt(id2), true);
  for (let i = 0; i < nl; i++) dv.setFloat32(IRHEADER_SIZE + 4 * i, labels![i], true);
  out.set(payload, IRHEADER_SIZE + 4 * nl);
  return out;
}

const WRITE_BUFFER = 1 << 20;

/**
 * Writes a RecordIO pack in InsightFace's layout (see the module notes).
 *
 * @example
 * const w = await RecordIOWriter.create('out/train', { imageSize: 112 });
 * for (const { label, jpeg } of images) await w.append(label, jpeg); // labels grouped, non-decreasing
 * await w.close();
 */
export class RecordIOWriter {
  readonly recPath: string;
  readonly idxPath: string;
  readonly propertyPath: string;
  readonly #tmp: { rec: string; idx: string; property: string };
  readonly #numClasses: number | undefined;
  readonly #imageSize: readonly [number, number];
  readonly #meta: boolean;
  #fh: FileHandle | null;
  #pos = 0;
  #buf = new Uint8Array(WRITE_BUFFER);
  #bufLen = 0;
  #offsets = new Float64Array(1024);
  #count = 0;
  /** Number of images with class < c, for c = 0..maxLabel+1 (classStart[c] = first image index of class ≥ c). */
  #classStart: number[] = [0];
  #lastClass = -1;
  #maxClass = -1;
  #chain: Promise<unknown> = Promise.resolve();
  #failed: unknown = null;
  #closed = false;

  private constructor(paths: { rec: string; idx: string; property: string }, fh: FileHandle, tmp: { rec: string; idx: string; property: string }, numClasses: number | undefined, imageSize: readonly [number, number], meta: boolean) {
    this.recPath = paths.rec;
    this.idxPath = paths.idx;
    this.propertyPath = paths.property;
    this.#fh = fh;
    this.#tmp = tmp;
    this.#numClasses = numClasses;
    this.#imageSize = imageSize;
    this.#meta = meta;
  }

  /**
   * Starts a pack at `prefix` ('dir/train' → dir/train.rec, dir/train.idx, dir/property).
   *
   * @throws TypeError / RangeError for bad arguments; `IO_ERROR` when the file cannot be created
   */
  static async create(prefix: string, options?: RecordIOWriterOptions): Promise<RecordIOWriter> {
    // Validate arguments
    assertString(prefix, 'prefix');
    if (prefix.length === 0) throw invalidParameterError('prefix', 'a non-empty path', prefix);
    const opts = optionsObject(options, 'options');
    assertKnownOptions(opts, 'RecordIOWriter.create', ['numClasses', 'imageSize', 'meta']);
    if (opts.numClasses !== undefined) assertInteger(opts.numClasses, 'numClasses', 0, F32_EXACT);
    let imageSize: [number, number] = [112, 112];
    if (opts.imageSize !== undefined) {
      if (is.integer(opts.imageSize)) imageSize = [opts.imageSize, opts.imageSize];
      else if (Array.isArray(opts.imageSize) && opts.imageSize.length === 2 && opts.imageSize.every(is.integer)) imageSize = [opts.imageSize[0], opts.imageSize[1]];
      else throw invalidParameterError('imageSize', 'an integer or [height, width]', opts.imageSize);
      if (imageSize[0] < 1 || imageSize[1] < 1) throw outOfRangeError('imageSize', 'positive sizes', opts.imageSize);
    }
    if (opts.meta !== undefined && !is.bool(opts.meta)) throw invalidParameterError('meta', 'a boolean', opts.meta);

    // Interpret options
    const paths = packPaths(prefix);
    const suffix = `.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
    const tmp = { rec: paths.rec + suffix, idx: paths.idx + suffix, property: paths.property + suffix };
    let fh: FileHandle;
    try {
      fh = await fsp.open(tmp.rec, 'wx');
    } catch (err) {
      throw ioError('create', tmp.rec, err);
    }
    return new RecordIOWriter(paths, fh, tmp, opts.numClasses as number | undefined, imageSize, opts.meta !== false);
  }

  /** Number of images appended so far. */
  get count(): number {
    return this.#count;
  }

  /**
   * Appends an image record. `label` is the class id (stored as the scalar header label) or a label
   * array whose first element is the class id (stored as float32 labels, flag = length). With the
   * meta layout, class ids must be non-decreasing (images grouped by identity, as RecBuilder writes
   * them). Calls are serialized; returns the record's key.
   *
   * @throws TypeError / RangeError for a bad label or payload; `IO_ERROR` on a write failure
   */
  async append(label: number | ArrayLike<number>, encoded: Uint8Array): Promise<number> {
    // Validate arguments
    let cls: number;
    if (typeof label === 'number') {
      cls = label;
    } else if (is.typedArray(label) || Array.isArray(label)) {
      const arr = label as ArrayLike<number>;
      if (arr.length < 1) throw invalidParameterError('label', 'a class id or a non-empty label array', label);
      for (let i = 0; i < arr.length; i++) if (!is.number(arr[i])) throw invalidParameterError(`label[${i}]`, 'a finite number', arr[i]);
      cls = arr[0];
    } else {
      throw invalidParameterError('label', 'a class id or a label array', label);
    }
    if (!is.integer(cls) || cls < 0 || cls > F32_EXACT) throw outOfRangeError('label', `a class id: an integer between 0 and ${F32_EXACT}`, cls);
    if (!(encoded instanceof Uint8Array)) throw invalidParameterError('encoded', 'a Uint8Array', encoded);
    if (this.#numClasses !== undefined && cls >= this.#numClasses) throw outOfRangeError('label', `a class id below numClasses ${this.#numClasses}`, cls);
    if (this.#meta && cls < this.#lastClass) {
      throw outOfRangeError('label', `a class id ≥ ${this.#lastClass} (images must be grouped by class in non-decreasing order for the identity records)`, cls);
    }
    if (this.#closed) throw new FacecudaError('DISPOSED', `RecordIOWriter '${this.recPath}' is closed`);
    if (cls > this.#maxClass) this.#maxClass = cls;
    if (this.#meta) {
      while (this.#lastClass < cls) {
        this.#lastClass++;
        this.#classStart[this.#lastClass] = this.#count;
      }
    }
    const key = this.#meta ? this.#count + 1 : this.#count;
    const index = this.#count++;
    const record = encodeRecord(packRecord(typeof label === 'number' ? label : Array.from(label), encoded, key, 0));
    return this.#enqueue(async () => {
      this.#setOffset(index, this.#pos);
      await this.#write(record);
      return key;
    });
  }

  /**
   * Writes the identity and meta records, the `.idx` and `property`, then renames the files into
   * place. Idempotent after success.
   *
   * @throws `IO_ERROR` on a write failure (the temporary files are then removed)
   */
  async close(): Promise<void> {
    if (this.#closed) return this.#chain.then(() => undefined);
    this.#closed = true;
    await this.#enqueue(async () => {
      const n = this.#count;
      const K = this.#numClasses ?? this.#maxClass + 1;
      const lines: string[] = [];
      const flushIdx = async (fh: FileHandle): Promise<void> => {
        if (lines.length === 0) return;
        await writeAll(fh, Buffer.from(lines.join(''), 'latin1'));
        lines.length = 0;
      };
      if (this.#meta) {
        // Identity records: class c covers images [classStart[c], classStart[c+1]) → keys + 1.
        while (this.#lastClass < K) {
          this.#lastClass++;
          this.#classStart[this.#lastClass] = n;
        }
        const idOffsets = new Float64Array(K);
        for (let c = 0; c < K; c++) {
          idOffsets[c] = this.#pos;
          const key = n + 1 + c;
          await this.#write(encodeRecord(packRecord([this.#classStart[c] + 1, this.#classStart[c + 1] + 1], new Uint8Array(0), key, 0)));
        }
        const metaOffset = this.#pos;
        await this.#write(encodeRecord(packRecord([n + 1, n + 1 + K], new Uint8Array(0), 0, 1)));
        await this.#finishRec();
        const idx = await this.#openTmp(this.#tmp.idx);
        try {
          for (let i = 0; i < n; i++) {
            lines.push(`${i + 1}\t${this.#offsets[i]}\n`);
            if (lines.length >= 65536) await flushIdx(idx);
          }
          for (let c = 0; c < K; c++) {
            lines.push(`${n + 1 + c}\t${idOffsets[c]}\n`);
            if (lines.length >= 65536) await flushIdx(idx);
          }
          lines.push(`0\t${metaOffset}\n`);
          await flushIdx(idx);
          await idx.sync();
        } finally {
          await idx.close();
        }
      } else {
        await this.#finishRec();
        const idx = await this.#openTmp(this.#tmp.idx);
        try {
          for (let i = 0; i < n; i++) {
            lines.push(`${i}\t${this.#offsets[i]}\n`);
            if (lines.length >= 65536) await flushIdx(idx);
          }
          await flushIdx(idx);
          await idx.sync();
        } finally {
          await idx.close();
        }
      }
      const prop = await this.#openTmp(this.#tmp.property);
      try {
        await writeAll(prop, Buffer.from(`${K},${this.#imageSize[0]},${this.#imageSize[1]}\n`, 'latin1'));
        await prop.sync();
      } finally {
        await prop.close();
      }
      for (const which of ['rec', 'idx', 'property'] as const) {
        const to = which === 'rec' ? this.recPath : which === 'idx' ? this.idxPath : this.propertyPath;
        try {
          await fsp.rename(this.#tmp[which], to);
        } catch (err) {
          throw ioError('rename into place', to, err);
        }
      }
      try {
        const dir = await fsp.open(dirname(this.recPath), 'r');
        await dir.sync().catch(() => undefined);
        await dir.close();
      } catch {
        // best effort
      }
    });
  }

  /** Abandons the pack: closes and removes the temporary files. */
  async abort(): Promise<void> {
    this.#closed = true;
    await this.#chain.catch(() => undefined);
    if (this.#fh) await this.#fh.close().catch(() => undefined);
    this.#fh = null;
    for (const p of Object.values(this.#tmp)) await fsp.unlink(p).catch(() => undefined);
  }

  #enqueue<T>(fn: () => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => {
      if (this.#failed) throw this.#failed;
      try {
        return await fn();
      } catch (err) {
        this.#failed = err;
        if (this.#fh) await this.#fh.close().catch(() => undefined);
        this.#fh = null;
        for (const p of Object.values(this.#tmp)) await fsp.unlink(p).catch(() => undefined);
        throw err;
      }
    };
    const p = this.#chain.then(run, run);
    this.#chain = p.catch(() => undefined);
    return p;
  }

  #setOffset(i: number, offset: number): void {
    if (i >= this.#offsets.length) {
      const o = new Float64Array(this.#offsets.length * 2);
      o.set(this.#offsets);
      this.#offsets = o;
    }
    this.#offsets[i] = offset;
  }

  async #write(bytes: Uint8Array): Promise<void> {
    this.#pos += bytes.length;
    if (this.#bufLen + bytes.length > this.#buf.length) await this.#flush();
    if (bytes.length >= this.#buf.length) {
      await this.#writeFh(bytes);
      return;
    }
    this.#buf.set(bytes, this.#bufLen);
    this.#bufLen += bytes.length;
  }

  async #flush(): Promise<void> {
    if (this.#bufLen === 0) return;
    const n = this.#bufLen;
    this.#bufLen = 0;
    await this.#writeFh(this.#buf.subarray(0, n));
  }

  async #writeFh(bytes: Uint8Array): Promise<void> {
    try {
      await writeAll(this.#fh!, bytes);
    } catch (err) {
      throw ioError('write', this.#tmp.rec, err);
    }
  }

  async #finishRec(): Promise<void> {
    await this.#flush();
    try {
      await this.#fh!.sync();
      await this.#fh!.close();
      this.#fh = null;
    } catch (err) {
      throw ioError('write', this.#tmp.rec, err);
    }
  }

  async #openTmp(path: string): Promise<FileHandle> {
    try {
      return await fsp.open(path, 'wx');
    } catch (err) {
      throw ioError('create', path, err);
    }
  }
}

/**
 * Writes every sample of an (async) iterable to a new pack and returns its counts.
 *
 * @example
 * await packImages('out/train', (async function* () { yield { label: 0, encoded: jpeg }; })());
 */
export async function packImages(
  prefix: string,
  samples: AsyncIterable<{ label: number | ArrayLike<number>; encoded: Uint8Array }> | Iterable<{ label: number | ArrayLike<number>; encoded: Uint8Array }>,
  options?: RecordIOWriterOptions,
): Promise<{ size: number; recPath: string }> {
  const w = await RecordIOWriter.create(prefix, options);
  try {
    for await (const s of samples) {
      if (!is.object(s)) throw invalidParameterError('sample', 'an object { label, encoded }', s);
      await w.append(s.label, s.encoded);
    }
    await w.close();
  } catch (err) {
    await w.abort();
    throw err;
  }
  return { size: w.count, recPath: w.recPath };
}
