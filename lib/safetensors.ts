/**
 * safetensors: read and write the Hugging Face tensor file format.
 *
 * The format, as the reference implementation (huggingface/safetensors, `safetensors/src/tensor.rs`)
 * reads and writes it:
 *
 * - 8 bytes: N, the header length, an unsigned 64-bit little-endian integer. N ≤ 100,000,000.
 * - N bytes: the header, a UTF-8 JSON object. `"__metadata__"` (optional) maps strings to strings;
 *   every other key is a tensor name mapping to `{"dtype", "shape", "data_offsets": [begin, end]}`,
 *   offsets relative to the first byte after the header.
 * - The data: each tensor's bytes, little-endian and row-major. Sorted by `begin`, the tensors'
 *   ranges are contiguous from 0 (no gap, no overlap) and end exactly at the end of the file.
 *
 * What facecuda writes (byte for byte what the reference writes, see `test/fixtures/gen_safetensors.py`):
 *
 * - Compact JSON (no spaces, non-ASCII written raw), `__metadata__` first, then the tensors in data
 *   order; padded with spaces to a multiple of 8 bytes, so the data starts 8-byte aligned.
 * - Tensor order: by descending dtype rank in the reference's `Dtype` enum (its order is increasing
 *   alignment: BOOL < F4 < … < U8 < I8 < F8_* < I16 < U16 < F16 < BF16 < I32 < U32 < F32 < C64 <
 *   F64 < I64 < U64), then by name compared as UTF-8 bytes. Every tensor then starts at a multiple
 *   of its element size, so a reader can view it in place.
 * - Metadata keys sorted by their UTF-8 bytes. The reference keeps them in a Rust HashMap, whose
 *   order is arbitrary; sorting makes equal inputs give equal bytes. An absent `metadata` argument
 *   writes no `__metadata__`; `{}` writes `"__metadata__":{}` (as the reference does for Some({})).
 *
 * What facecuda checks when reading (each failure is `CORRUPT_FILE`, naming the file, the tensor and
 * the problem): the reference's checks, plus a few the reference skips (marked *).
 *
 * - The file is at least 8 bytes; N ≤ 100,000,000 and 8 + N ≤ the file size.
 * - The header is valid UTF-8 (a byte-order mark is not skipped), starts with `{`*, and is one JSON
 *   object followed only by JSON whitespace (the padding). Duplicate keys* at any level are errors
 *   (the reference keeps the last one silently).
 * - `__metadata__` is an object of strings (or null, read as absent).
 * - Each tensor entry has exactly the three fields* (the reference ignores unknown fields), a known
 *   dtype, a shape of non-negative integers (no `2.0`, no `-1`), data_offsets of two non-negative
 *   integers with begin ≤ end, and end − begin = numel × element size (whole bytes). Integers above
 *   2^53 − 1 are rejected.
 * - Sorted by offsets, the ranges start at 0, leave no gap and do not overlap, and 8 + N + the last
 *   end equals the file size (a truncated file fails here).
 *
 * Dtypes: every dtype the reference knows is accepted and validated. The six that a facecuda
 * {@link Tensor} can hold map as F32 ↔ float32, F16 ↔ float16, BF16 ↔ bfloat16 (both as raw
 * Uint16Array words), I32 ↔ int32, I64 ↔ int64 and U8 ↔ uint8. {@link readSafetensors} refuses the
 * others (F64, I16, I8, BOOL, …) with `NOT_IMPLEMENTED` naming the tensor (skip them with the
 * `names` option); {@link parseSafetensors} returns every dtype as a raw typed array, and
 * {@link writeSafetensors} writes every dtype from a `{ dtype, shape, data }` object.
 *
 * I/O is asynchronous (fs.promises). {@link readSafetensors} reads the header, then the tensors'
 * bytes straight into fresh buffers (neighbouring tensors together, up to 16 MiB a read; a larger
 * tensor in a read of its own), and views each tensor in place when
 * its offset is aligned to its element size (always, for files written in the reference's order);
 * an unaligned tensor is copied once more. {@link writeSafetensors} writes to
 * `path + '.tmp-<pid>-<random>'`, fsyncs, then renames over `path`; on any failure the temporary file
 * is removed and an existing file at `path` is untouched.
 *
 * This module assumes a little-endian host (the only kind facecuda builds for).
 */
import { promises as fsp } from 'fs';
import type { FileHandle } from 'fs/promises';
import { endianness } from 'os';
import { dirname } from 'path';
import { DeviceSpec, resolveDevice } from './device';
import { FacecudaError, FacecudaRangeError, invalidParameterError } from './errors';
import { ioError, temporaryName, writeAll } from './fsutil';
import { DType, MAX_RANK, Tensor } from './tensor';
import { assertKnownOptions, assertString, is, optionsObject } from './validate';

// ---------------------------------------------------------------------------------------------
// Dtypes

/** The dtypes of the safetensors format, in the reference's enum order (increasing alignment). */
export const SAFETENSORS_DTYPES = [
  'BOOL', 'F4', 'F6_E2M3', 'F6_E3M2', 'U8', 'I8', 'F8_E5M2', 'F8_E4M3', 'F8_E8M0',
  'I16', 'U16', 'F16', 'BF16', 'I32', 'U32', 'F32', 'C64', 'F64', 'I64', 'U64',
] as const;
export type SafetensorsDType = (typeof SAFETENSORS_DTYPES)[number];

const BITS: Readonly<Record<SafetensorsDType, number>> = {
  BOOL: 8, F4: 4, F6_E2M3: 6, F6_E3M2: 6, U8: 8, I8: 8, F8_E5M2: 8, F8_E4M3: 8, F8_E8M0: 8,
  I16: 16, U16: 16, F16: 16, BF16: 16, I32: 32, U32: 32, F32: 32, C64: 64, F64: 64, I64: 64, U64: 64,
};

const RANK: ReadonlyMap<string, number> = new Map(SAFETENSORS_DTYPES.map((d, i) => [d, i]));

/** safetensors dtype → facecuda Tensor dtype, for the six a Tensor can hold. */
const TO_TENSOR: Readonly<Partial<Record<SafetensorsDType, DType>>> = {
  F32: 'float32', F16: 'float16', BF16: 'bfloat16', I32: 'int32', I64: 'int64', U8: 'uint8',
};
/** facecuda Tensor dtype → safetensors dtype. */
const FROM_TENSOR: Readonly<Record<DType, SafetensorsDType>> = {
  float32: 'F32', float16: 'F16', bfloat16: 'BF16', int32: 'I32', int64: 'I64', uint8: 'U8',
};

/** A tensor's values as a typed array; 16-bit floats are raw words, BOOL and 8-bit floats raw bytes. */
export type SafetensorsArray =
  | Float64Array | Float32Array | Uint16Array | Int16Array | Int8Array | Uint8Array
  | Int32Array | Uint32Array | BigInt64Array | BigUint64Array;

interface ArrayKind {
  /** Object.prototype.toString tag (realm-independent). */
  tag: string;
  bytes: number;
  make: (buffer: ArrayBufferLike, byteOffset: number, byteLength: number) => SafetensorsArray;
}

function kind(tag: string, bytes: number, C: { new (b: ArrayBufferLike, o: number, n: number): SafetensorsArray }): ArrayKind {
  return { tag: `[object ${tag}]`, bytes, make: (b, o, n) => new C(b, o, n / bytes) };
}

const U8 = kind('Uint8Array', 1, Uint8Array);
const ARRAY_KIND: Readonly<Record<SafetensorsDType, ArrayKind>> = {
  BOOL: U8, F4: U8, F6_E2M3: U8, F6_E3M2: U8, U8, I8: kind('Int8Array', 1, Int8Array),
  F8_E5M2: U8, F8_E4M3: U8, F8_E8M0: U8,
  I16: kind('Int16Array', 2, Int16Array), U16: kind('Uint16Array', 2, Uint16Array),
  F16: kind('Uint16Array', 2, Uint16Array), BF16: kind('Uint16Array', 2, Uint16Array),
  I32: kind('Int32Array', 4, Int32Array), U32: kind('Uint32Array', 4, Uint32Array),
  F32: kind('Float32Array', 4, Float32Array), C64: kind('Float32Array', 4, Float32Array),
  F64: kind('Float64Array', 8, Float64Array), I64: kind('BigInt64Array', 8, BigInt64Array),
  U64: kind('BigUint64Array', 8, BigUint64Array),
};

/** The reference rejects longer headers, reading and writing. */
export const MAX_HEADER_LENGTH = 100_000_000;
const BATCH_BYTES = 16 * 1024 * 1024;
const MAX_JSON_DEPTH = 32;

function assertLittleEndian(): void {
  if (endianness() !== 'LE') throw new FacecudaError('NOT_IMPLEMENTED', 'safetensors I/O needs a little-endian host');
}

// ---------------------------------------------------------------------------------------------
// Public types

/** One tensor's entry in a safetensors header. */
export interface SafetensorsTensorInfo {
  name: string;
  /** The file's dtype, e.g. `'F32'`. */
  dtype: SafetensorsDType;
  /** The facecuda dtype it maps to, or null when a Tensor cannot hold it (F64, I16, BOOL, …). */
  tensorDType: DType | null;
  shape: number[];
  /** [begin, end), relative to the first byte after the header. */
  dataOffsets: [number, number];
  byteLength: number;
}

/** What {@link readSafetensorsHeader} returns: everything but the tensor data. */
export interface SafetensorsHeader {
  /** N, the JSON header's length in bytes (padding included). */
  headerLength: number;
  /** 8 + N: the file offset of the data. */
  dataStart: number;
  /** Size of the whole file (or buffer) in bytes. */
  fileSize: number;
  /** `__metadata__`, or `{}` when absent. */
  metadata: Record<string, string>;
  /** The tensors in data (offset) order. */
  tensors: Map<string, SafetensorsTensorInfo>;
}

/** A tensor parsed by {@link parseSafetensors}. */
export interface SafetensorsEntry extends SafetensorsTensorInfo {
  /**
   * The values: a view into the parsed buffer when the tensor's offset is aligned to its element
   * size, otherwise a copy. Float64Array (F64), Float32Array (F32; C64 as re, im pairs),
   * Uint16Array (F16 and BF16 raw words, U16), Int16Array, Int8Array, Int32Array, Uint32Array,
   * BigInt64Array, BigUint64Array, Uint8Array (U8, BOOL, 8-bit floats, packed F4/F6 bytes).
   */
  data: SafetensorsArray;
}

export interface ParsedSafetensors extends SafetensorsHeader {
  tensors: Map<string, SafetensorsEntry>;
}

/** A tensor given to {@link writeSafetensors} as plain data. */
export interface RawTensor {
  /** A facecuda dtype (`'float32'`, …) or any safetensors dtype (`'F64'`, `'BOOL'`, …). */
  dtype: DType | SafetensorsDType;
  shape: readonly number[];
  /**
   * The values, row-major: the dtype's typed array (see {@link SafetensorsEntry.data}) or a
   * Uint8Array of the raw little-endian bytes. Read only while the file is written.
   */
  data: ArrayBufferView;
}

export interface ReadSafetensorsOptions {
  /** Where the tensors are created (default: as {@link Tensor.from}, `'auto'`). */
  device?: DeviceSpec;
  /** Read only these tensors (the result keeps this order); every name must be in the file. */
  names?: readonly string[];
}

export interface ReadSafetensorsResult {
  /** The tensors, in data order (or in the order of `options.names`). */
  tensors: Map<string, Tensor>;
  /** `__metadata__`, or `{}` when absent. */
  metadata: Record<string, string>;
}

// ---------------------------------------------------------------------------------------------
// Errors

function corrupt(source: string, message: string): FacecudaError {
  return new FacecudaError('CORRUPT_FILE', `Corrupt ${source}: ${message}`);
}

function fileSource(path: string): string {
  return `safetensors file '${path}'`;
}

function quote(s: string): string {
  return JSON.stringify(s.length > 80 ? s.slice(0, 80) + '…' : s);
}

// ---------------------------------------------------------------------------------------------
// A strict JSON parser for the header: JSON.parse would keep the last of duplicate keys, lose
// integers above 2^53 and accept 2.0 as a dimension. Objects become Maps (no prototype keys).

class JsonNumber {
  constructor(readonly text: string) {}
}
type Json = null | boolean | string | JsonNumber | Json[] | Map<string, Json>;

const SIMPLE_ESCAPES: ReadonlyMap<string, string> = new Map([
  ['"', '"'], ['\\', '\\'], ['/', '/'], ['b', '\b'], ['f', '\f'], ['n', '\n'], ['r', '\r'], ['t', '\t'],
]);

const NUMBER_RE = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

class HeaderParser {
  private pos = 0;
  constructor(private readonly s: string, private readonly fail: (message: string) => never) {}

  document(): Map<string, Json> {
    const root = this.value(0);
    this.ws();
    if (this.pos < this.s.length) this.error(`unexpected ${this.here()} after the header object`);
    return root as Map<string, Json>;
  }

  private error(message: string): never {
    return this.fail(`header is not valid JSON: ${message} (character ${this.pos} of the header)`);
  }

  private here(): string {
    return this.pos < this.s.length ? `character ${JSON.stringify(this.s[this.pos])}` : 'end of the header';
  }

  private ws(): void {
    const s = this.s;
    let p = this.pos;
    for (;;) {
      const c = s.charCodeAt(p);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) p++;
      else break;
    }
    this.pos = p;
  }

  private value(depth: number): Json {
    this.ws();
    const c = this.s.charCodeAt(this.pos);
    if (c === 0x7b) return this.object(depth);
    if (c === 0x5b) return this.array(depth);
    if (c === 0x22) return this.string();
    if (c === 0x2d || (c >= 0x30 && c <= 0x39)) return this.number();
    for (const [word, v] of [['true', true], ['false', false], ['null', null]] as const) {
      if (this.s.startsWith(word, this.pos)) {
        this.pos += word.length;
        return v;
      }
    }
    return this.error(`unexpected ${this.here()}`);
  }

  private object(depth: number): Map<string, Json> {
    if (depth >= MAX_JSON_DEPTH) this.error(`nested deeper than ${MAX_JSON_DEPTH} levels`);
    const out = new Map<string, Json>();
    this.pos++;
    this.ws();
    if (this.s.charCodeAt(this.pos) === 0x7d) {
      this.pos++;
      return out;
    }
    for (;;) {
      this.ws();
      if (this.s.charCodeAt(this.pos) !== 0x22) this.error(`expected a string key but found ${this.here()}`);
      const keyAt = this.pos;
      const key = this.string();
      if (out.has(key)) {
        this.pos = keyAt;
        this.error(`duplicate key ${quote(key)}`);
      }
      this.ws();
      if (this.s.charCodeAt(this.pos) !== 0x3a) this.error(`expected ':' but found ${this.here()}`);
      this.pos++;
      out.set(key, this.value(depth + 1));
      this.ws();
      const c = this.s.charCodeAt(this.pos);
      this.pos++;
      if (c === 0x2c) continue;
      if (c === 0x7d) return out;
      this.pos--;
      this.error(`expected ',' or '}' but found ${this.here()}`);
    }
  }

  private array(depth: number): Json[] {
    if (depth >= MAX_JSON_DEPTH) this.error(`nested deeper than ${MAX_JSON_DEPTH} levels`);
    const out: Json[] = [];
    this.pos++;
    this.ws();
    if (this.s.charCodeAt(this.pos) === 0x5d) {
      this.pos++;
      return out;
    }
    for (;;) {
      out.push(this.value(depth + 1));
      this.ws();
      const c = this.s.charCodeAt(this.pos);
      this.pos++;
      if (c === 0x2c) continue;
      if (c === 0x5d) return out;
      this.pos--;
      this.error(`expected ',' or ']' but found ${this.here()}`);
    }
  }

  private string(): string {
    const s = this.s;
    let p = ++this.pos;
    let start = p;
    let out = '';
    for (;;) {
      if (p >= s.length) {
        this.pos = p;
        this.error('unterminated string');
      }
      const c = s.charCodeAt(p);
      if (c === 0x22) {
        this.pos = p + 1;
        return out + s.slice(start, p);
      }
      if (c < 0x20) {
        this.pos = p;
        this.error('control character in a string');
      }
      if (c !== 0x5c) {
        p++;
        continue;
      }
      out += s.slice(start, p);
      const e = s[p + 1];
      const simple = e === undefined ? undefined : SIMPLE_ESCAPES.get(e);
      if (simple !== undefined) {
        out += simple;
        p += 2;
      } else if (e === 'u') {
        const unit = this.hex4(p + 2);
        p += 6;
        if (unit >= 0xd800 && unit <= 0xdbff) {
          const low = s.startsWith('\\u', p) ? this.hex4(p + 2) : -1;
          if (low < 0xdc00 || low > 0xdfff) {
            this.pos = p;
            this.error('lone surrogate in a \\u escape');
          }
          out += String.fromCharCode(unit, low);
          p += 6;
        } else if (unit >= 0xdc00 && unit <= 0xdfff) {
          this.pos = p - 6;
          this.error('lone surrogate in a \\u escape');
        } else {
          out += String.fromCharCode(unit);
        }
      } else {
        this.pos = p;
        this.error('invalid escape in a string');
      }
      start = p;
    }
  }

  private hex4(at: number): number {
    const h = this.s.slice(at, at + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(h)) {
      this.pos = at;
      this.error('invalid \\u escape');
    }
    return parseInt(h, 16);
  }

  private number(): JsonNumber {
    NUMBER_RE.lastIndex = this.pos;
    const m = NUMBER_RE.exec(this.s);
    if (!m) return this.error(`invalid number at ${this.here()}`);
    this.pos += m[0].length;
    return new JsonNumber(m[0]);
  }
}

function showJson(v: Json): string {
  if (v === null) return 'null';
  if (typeof v === 'boolean') return String(v);
  if (typeof v === 'string') return quote(v);
  if (v instanceof JsonNumber) return v.text;
  if (Array.isArray(v)) return `[${v.slice(0, 8).map(showJson).join(', ')}${v.length > 8 ? ', …' : ''}]`;
  return v.size === 0 ? '{}' : '{…}';
}

/** A non-negative integer up to 2^53 − 1 written without fraction or exponent, else undefined. */
function jsonIndex(v: Json): number | undefined {
  if (!(v instanceof JsonNumber) || !/^(0|[1-9][0-9]*)$/.test(v.text)) return undefined;
  const n = Number(v.text);
  return Number.isSafeInteger(n) ? n : undefined;
}

// ---------------------------------------------------------------------------------------------
// Header parsing and validation (shared by the file and the buffer readers)

/** Checks the first 8 bytes against the total size; returns N. */
function headerLength(first8: Uint8Array, total: number, source: string): number {
  if (total < 8) throw corrupt(source, `it is ${total} bytes long, shorter than the 8-byte header length`);
  const n = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_LENGTH)) {
    throw corrupt(source, `the header length ${n} exceeds the ${MAX_HEADER_LENGTH}-byte limit`);
  }
  if (8n + n > BigInt(total)) {
    throw corrupt(source, `the header length ${n} runs past the end of the file (${total} bytes: 8 + header must fit)`);
  }
  return Number(n);
}

const ENTRY_FIELDS = ['dtype', 'shape', 'data_offsets'] as const;

/** Parses and validates the JSON header bytes; `total` is the size of the whole file. */
function parseHeader(headerBytes: Uint8Array, total: number, source: string): SafetensorsHeader {
  const n = headerBytes.length;
  const fail: (message: string) => never = (message) => {
    throw corrupt(source, message);
  };
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    return fail('the header is not valid UTF-8');
  }
  if (text.charCodeAt(0) !== 0x7b) {
    return fail(`the header does not start with '{' (it starts with ${n === 0 ? 'nothing: the header is empty' : JSON.stringify(text.slice(0, 16))})`);
  }
  const root = new HeaderParser(text, fail).document();

  // Metadata: a string → string object.
  const metadata: Record<string, string> = {};
  const meta = root.get('__metadata__');
  if (meta !== undefined && meta !== null) {
    if (!(meta instanceof Map)) fail(`__metadata__ must be an object of strings, but it is ${showJson(meta)}`);
    for (const [k, v] of meta as Map<string, Json>) {
      if (typeof v !== 'string') fail(`__metadata__ ${quote(k)} must be a string, but it is ${showJson(v)}`);
      Object.defineProperty(metadata, k, { value: v, enumerable: true, writable: true, configurable: true });
    }
  }

  // Tensor entries.
  const infos: SafetensorsTensorInfo[] = [];
  for (const [name, entry] of root) {
    if (name === '__metadata__') continue;
    const what = `tensor ${quote(name)}`;
    if (!(entry instanceof Map)) fail(`${what} must be an object with dtype, shape and data_offsets, but it is ${showJson(entry)}`);
    const fields = entry as Map<string, Json>;
    for (const f of ENTRY_FIELDS) if (!fields.has(f)) fail(`${what} has no '${f}' field`);
    for (const f of fields.keys()) {
      if (!(ENTRY_FIELDS as readonly string[]).includes(f)) fail(`${what} has an unexpected field ${quote(f)} (only dtype, shape and data_offsets are allowed)`);
    }
    const dtype = fields.get('dtype') as Json;
    if (typeof dtype !== 'string' || !RANK.has(dtype)) {
      fail(`${what} has an unknown dtype ${showJson(dtype)} (known: ${SAFETENSORS_DTYPES.join(', ')})`);
    }
    const dt = dtype as SafetensorsDType;
    const shapeJson = fields.get('shape') as Json;
    const shape = Array.isArray(shapeJson) ? shapeJson.map(jsonIndex) : undefined;
    if (!shape || shape.some((d) => d === undefined)) {
      fail(`${what} has shape ${showJson(shapeJson)}; a shape must be an array of non-negative integers`);
    }
    const offJson = fields.get('data_offsets') as Json;
    const offs = Array.isArray(offJson) && offJson.length === 2 ? offJson.map(jsonIndex) : undefined;
    if (!offs || offs[0] === undefined || offs[1] === undefined) {
      fail(`${what} has data_offsets ${showJson(offJson)}; data_offsets must be [begin, end], two non-negative integers`);
    }
    const [begin, end] = offs as [number, number];
    if (end < begin) fail(`${what} has data_offsets [${begin}, ${end}] with end before begin`);
    const dims = shape as number[];
    const bits = dims.reduce((a, d) => a * BigInt(d), 1n) * BigInt(BITS[dt]);
    if (bits % 8n !== 0n) fail(`${what} (${dt} [${dims.join(', ')}]) is not a whole number of bytes`);
    const bytes = bits / 8n;
    if (BigInt(end - begin) !== bytes) {
      fail(`${what} has data_offsets [${begin}, ${end}] holding ${end - begin} bytes, but ${dt} [${dims.join(', ')}] needs ${bytes}`);
    }
    infos.push({ name, dtype: dt, tensorDType: TO_TENSOR[dt] ?? null, shape: dims, dataOffsets: [begin, end], byteLength: end - begin });
  }

  // Layout: sorted by offsets, contiguous from 0, covering the rest of the file exactly.
  infos.sort((a, b) => a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1]);
  let at = 0;
  let prev: SafetensorsTensorInfo | undefined;
  for (const t of infos) {
    const [begin, end] = t.dataOffsets;
    if (begin < at) {
      fail(`tensor ${quote(t.name)} [${begin}, ${end}] overlaps tensor ${quote(prev!.name)} [${prev!.dataOffsets[0]}, ${prev!.dataOffsets[1]}]`);
    }
    if (begin > at) {
      fail(`there is a gap of ${begin - at} bytes before tensor ${quote(t.name)} [${begin}, ${end}] (the data before it ends at ${at})`);
    }
    at = end;
    prev = t;
  }
  const expected = 8 + n + at;
  if (expected > total) {
    fail(`the tensor data ends at byte ${expected} but the file has only ${total} bytes (truncated?)`);
  }
  if (expected < total) fail(`there are ${total - expected} unexpected bytes after the last tensor's data`);

  return { headerLength: n, dataStart: 8 + n, fileSize: total, metadata, tensors: new Map(infos.map((t) => [t.name, t])) };
}

// ---------------------------------------------------------------------------------------------
// Reading

/** Views a tensor's bytes (at `byteOffset` in `buffer`) as its dtype's typed array; copies them when the offset is unaligned. */
function asArray(dtype: SafetensorsDType, buffer: ArrayBufferLike, byteOffset: number, byteLength: number): SafetensorsArray {
  const k = ARRAY_KIND[dtype];
  if (byteOffset % k.bytes === 0) return k.make(buffer, byteOffset, byteLength);
  const copy = new Uint8Array(byteLength);
  copy.set(new Uint8Array(buffer, byteOffset, byteLength));
  return k.make(copy.buffer, 0, byteLength);
}

/**
 * Parses a whole safetensors file held in memory. The tensors' `data` are views into `buffer`
 * (copies for unaligned tensors), in every dtype of the format.
 *
 * @throws FacecudaError `CORRUPT_FILE` for anything malformed (see the module notes)
 * @example
 * const { tensors, metadata } = parseSafetensors(await fs.promises.readFile('model.safetensors'));
 * const w = tensors.get('fc.weight'); // { dtype: 'F32', shape: [512, 25088], data: Float32Array, … }
 */
export function parseSafetensors(buffer: Uint8Array): ParsedSafetensors {
  // Validate arguments
  if (Object.prototype.toString.call(buffer) !== '[object Uint8Array]') {
    throw invalidParameterError('buffer', 'a Uint8Array (or Buffer)', buffer);
  }
  assertLittleEndian();
  const source = 'safetensors buffer';
  const n = headerLength(buffer.subarray(0, 8), buffer.length, source);
  const header = parseHeader(buffer.subarray(8, 8 + n), buffer.length, source);
  const tensors = new Map<string, SafetensorsEntry>();
  for (const [name, info] of header.tensors) {
    const data = asArray(info.dtype, buffer.buffer, buffer.byteOffset + header.dataStart + info.dataOffsets[0], info.byteLength);
    tensors.set(name, { ...info, data });
  }
  return { ...header, tensors };
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

async function openForReading(path: string): Promise<{ fh: FileHandle; size: number }> {
  let fh: FileHandle;
  try {
    fh = await fsp.open(path, 'r');
  } catch (err) {
    throw ioError('open safetensors file', path, err);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new FacecudaError('IO_ERROR', `Cannot read safetensors file '${path}': it is not a regular file`);
    return { fh, size: st.size };
  } catch (err) {
    await fh.close().catch(() => undefined);
    throw err instanceof FacecudaError ? err : ioError('read safetensors file', path, err);
  }
}

async function readHeaderFrom(fh: FileHandle, size: number, path: string): Promise<SafetensorsHeader> {
  const source = fileSource(path);
  const first8 = new Uint8Array(8);
  let got: number;
  try {
    got = size < 8 ? size : await readFully(fh, first8, 0);
  } catch (err) {
    throw ioError('read safetensors file', path, err);
  }
  if (got < 8) throw corrupt(source, `it is ${got} bytes long, shorter than the 8-byte header length`);
  const n = headerLength(first8, size, source);
  const headerBytes = new Uint8Array(n);
  try {
    got = await readFully(fh, headerBytes, 8);
  } catch (err) {
    throw ioError('read safetensors file', path, err);
  }
  if (got < n) throw corrupt(source, `the file ended after ${8 + got} bytes while reading the ${n}-byte header`);
  return parseHeader(headerBytes, size, source);
}

/**
 * Reads a safetensors file's header only — names, dtypes, shapes, offsets and metadata — without
 * reading the tensor data, however large the file. The whole layout is validated against the
 * file's size.
 *
 * @throws FacecudaError `IO_ERROR` when the file cannot be opened or read; `CORRUPT_FILE` when it is malformed
 * @example
 * const h = await readSafetensorsHeader('model.safetensors');
 * for (const [name, t] of h.tensors) console.log(name, t.dtype, t.shape);
 */
export async function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  assertString(path, 'path');
  const { fh, size } = await openForReading(path);
  try {
    return await readHeaderFrom(fh, size, path);
  } finally {
    await fh.close().catch(() => undefined);
  }
}

/**
 * Reads tensors and metadata from a safetensors file into facecuda Tensors.
 *
 * Only F32, F16, BF16, I32, I64 and U8 tensors of rank ≤ 5 can become Tensors; a file holding
 * others can still be read with `names` listing the tensors wanted (or with {@link parseSafetensors}).
 *
 * @param path the file
 * @param options `device` for the new tensors; `names` to read only some tensors
 * @throws TypeError for bad arguments or a name not in the file; `IO_ERROR` when the file cannot be
 *   opened or read; `CORRUPT_FILE` when it is malformed; `NOT_IMPLEMENTED` for a requested tensor
 *   whose dtype or rank a Tensor cannot hold; `CUDA_UNAVAILABLE` for an unusable CUDA device
 * @example
 * const { tensors, metadata } = await readSafetensors('model.safetensors', { device: 'cpu' });
 * console.log(metadata.architecture, tensors.get('conv1.weight')?.shape);
 */
export async function readSafetensors(path: string, options?: ReadSafetensorsOptions): Promise<ReadSafetensorsResult> {
  // Apply defaults
  const opts = optionsObject(options, 'options');
  assertKnownOptions(opts, 'readSafetensors', ['device', 'names']);
  // Validate arguments
  assertString(path, 'path');
  let names: string[] | undefined;
  if (opts.names !== undefined) {
    if (!Array.isArray(opts.names) || !opts.names.every(is.string)) {
      throw invalidParameterError('options.names', 'an array of tensor names (strings)', opts.names);
    }
    names = [...new Set(opts.names as string[])];
  }
  // Interpret options
  const device = resolveDevice(opts.device, 'options.device');
  assertLittleEndian();

  const { fh, size } = await openForReading(path);
  const created: Tensor[] = [];
  try {
    const header = await readHeaderFrom(fh, size, path);
    const wanted = names ?? [...header.tensors.keys()];
    const infos: SafetensorsTensorInfo[] = [];
    for (const name of wanted) {
      const info = header.tensors.get(name);
      if (!info) {
        const list = [...header.tensors.keys()].slice(0, 10).map(quote).join(', ');
        throw invalidParameterError('options.names', `names of tensors in '${path}' (${header.tensors.size} tensors: ${list}${header.tensors.size > 10 ? ', …' : ''})`, name);
      }
      if (info.tensorDType === null) {
        throw new FacecudaError('NOT_IMPLEMENTED', `Cannot read tensor ${quote(name)} of '${path}' into a Tensor: its dtype ${info.dtype} has no facecuda dtype (supported: F32, F16, BF16, I32, I64, U8); leave it out with options.names or use parseSafetensors`);
      }
      if (info.shape.length > MAX_RANK) {
        throw new FacecudaError('NOT_IMPLEMENTED', `Cannot read tensor ${quote(name)} of '${path}' into a Tensor: it has ${info.shape.length} dimensions and facecuda tensors have at most ${MAX_RANK}`);
      }
      infos.push(info);
    }

    // Read in data order, batching tensors that follow each other in the file, and create each
    // tensor from a view of its batch (Tensor.from copies it into the engine).
    const byName = new Map<string, Tensor>();
    const ordered = [...infos].sort((a, b) => a.dataOffsets[0] - b.dataOffsets[0]);
    for (let i = 0; i < ordered.length; ) {
      let j = i + 1;
      const begin = ordered[i].dataOffsets[0];
      let end = ordered[i].dataOffsets[1];
      while (j < ordered.length && ordered[j].dataOffsets[0] === end && ordered[j].dataOffsets[1] - begin <= BATCH_BYTES) {
        end = ordered[j].dataOffsets[1];
        j++;
      }
      const batch = new Uint8Array(end - begin);
      let got: number;
      try {
        got = batch.length === 0 ? 0 : await readFully(fh, batch, header.dataStart + begin);
      } catch (err) {
        throw ioError('read safetensors file', path, err);
      }
      if (got < batch.length) {
        throw corrupt(fileSource(path), `the file ended at byte ${header.dataStart + begin + got} while reading tensor ${quote(ordered[i].name)} (it changed while being read?)`);
      }
      for (let k = i; k < j; k++) {
        const t = ordered[k];
        const data = asArray(t.dtype, batch.buffer, t.dataOffsets[0] - begin, t.byteLength);
        const tensor = Tensor.from(data as Float32Array, t.shape, { device, dtype: t.tensorDType! });
        created.push(tensor);
        byName.set(t.name, tensor);
      }
      i = j;
    }
    const tensors = new Map<string, Tensor>(infos.map((t) => [t.name, byName.get(t.name)!]));
    return { tensors, metadata: header.metadata };
  } catch (err) {
    for (const t of created) t.dispose();
    throw err;
  } finally {
    await fh.close().catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------------------------
// Writing

interface Planned {
  name: string;
  /** The name's UTF-8 bytes: the reference orders names as byte strings. */
  key: Buffer;
  dtype: SafetensorsDType;
  shape: number[];
  byteLength: number;
  value: Tensor | RawTensor;
}

const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

function utf8Compare(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function plan(name: string, value: unknown): Planned {
  const label = `tensors[${quote(name)}]`;
  if (name === '__metadata__') throw invalidParameterError('tensor name', "a name other than '__metadata__' (reserved for metadata)", name);
  if (LONE_SURROGATE.test(name)) throw invalidParameterError('tensor name', 'a well-formed string (no lone surrogates)', name);
  if (value instanceof Tensor) {
    if (value.disposed) throw new FacecudaError('DISPOSED', `${label} (${value.describe()}) has been disposed`);
    const dtype = FROM_TENSOR[value.dtype];
    return { name, key: Buffer.from(name, 'utf8'), dtype, shape: value.shape, byteLength: (value.size * BITS[dtype]) / 8, value };
  }
  if (!is.object(value) || !('dtype' in value) || !('shape' in value) || !('data' in value)) {
    throw invalidParameterError(label, 'a Tensor or a { dtype, shape, data } object', value);
  }
  const rawDtype = value.dtype;
  const dtype = (typeof rawDtype === 'string' && (FROM_TENSOR as Record<string, SafetensorsDType>)[rawDtype]) || rawDtype;
  if (typeof dtype !== 'string' || !RANK.has(dtype)) {
    throw invalidParameterError(`${label}.dtype`, `a facecuda dtype (${Object.keys(FROM_TENSOR).join(', ')}) or a safetensors dtype (${SAFETENSORS_DTYPES.join(', ')})`, rawDtype);
  }
  const shape = value.shape;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw invalidParameterError(`${label}.shape`, 'an array of non-negative integers', shape);
  }
  const dt = dtype as SafetensorsDType;
  const bits = (shape as number[]).reduce((a, d) => a * BigInt(d), 1n) * BigInt(BITS[dt]);
  if (bits % 8n !== 0n || bits / 8n > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new FacecudaRangeError(`${label}: ${dt} [${shape.join(', ')}] is not a whole number of bytes below 2^53`);
  }
  return { name, key: Buffer.from(name, 'utf8'), dtype: dt, shape: (shape as number[]).slice(), byteLength: Number(bits / 8n), value: value as unknown as RawTensor };
}

/** The bytes of one planned tensor (reads the Tensor, or the raw object's `data`, now). */
async function bytesOf(p: Planned): Promise<Uint8Array> {
  const label = `tensors[${quote(p.name)}]`;
  let data: unknown;
  if (p.value instanceof Tensor) {
    data = await p.value.toArray();
  } else {
    data = p.value.data;
    const tag = Object.prototype.toString.call(data);
    const natural = ARRAY_KIND[p.dtype].tag;
    if (!is.typedArray(data) || (tag !== natural && tag !== '[object Uint8Array]')) {
      throw invalidParameterError(`${label}.data`, `a ${natural.slice(8, -1)} or a Uint8Array of raw bytes for dtype ${p.dtype}`, data);
    }
  }
  const view = data as ArrayBufferView;
  if (view.byteLength !== p.byteLength) {
    throw new FacecudaError('SHAPE_MISMATCH', `${label}.data has ${view.byteLength} bytes but ${p.dtype} [${p.shape.join(', ')}] needs ${p.byteLength}`);
  }
  // A zero-size array may sit on a detached buffer (the addon returns one for empty tensors).
  if (view.byteLength === 0) return new Uint8Array(0);
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

/**
 * Writes tensors and metadata to a safetensors file, atomically: the bytes go to
 * `path + '.tmp-<pid>-<random>'`, which is fsynced and then renamed over `path`. On any failure
 * (a bad tensor found midway, a full disk, a missing directory) the temporary file is removed and
 * whatever was at `path` is left untouched. The output is byte for byte what the reference
 * implementation writes (see the module notes on ordering and padding).
 *
 * Each tensor's data is fetched only when its turn comes (`toArray()` for a Tensor, `data` for a
 * raw object), so at most one tensor's host copy is alive at a time.
 *
 * @param path the file to create or replace
 * @param tensors name → Tensor or `{ dtype, shape, data }` (as a plain object or a Map)
 * @param metadata optional string → string map, stored as `__metadata__`
 * @throws TypeError / RangeError for bad arguments; `SHAPE_MISMATCH` when raw data does not match its
 *   shape; `DISPOSED` for a disposed Tensor; `IO_ERROR` when the file cannot be written; errors thrown
 *   while reading a raw object's `data` propagate unchanged
 * @example
 * await writeSafetensors('model.safetensors', { 'fc.weight': w, step: { dtype: 'I64', shape: [], data: new BigInt64Array([100n]) } },
 *   { architecture: 'iresnet50', format: 'pt' });
 */
export async function writeSafetensors(
  path: string,
  tensors: Record<string, Tensor | RawTensor> | Map<string, Tensor | RawTensor>,
  metadata?: Record<string, string>,
): Promise<void> {
  // Validate arguments
  assertString(path, 'path');
  if (path.length === 0) throw invalidParameterError('path', 'a non-empty path', path);
  let entries: [string, unknown][];
  if (tensors instanceof Map) {
    entries = [...tensors.entries()];
    for (const [k] of entries) if (typeof k !== 'string') throw invalidParameterError('tensor name', 'a string', k);
  } else if (is.object(tensors)) {
    entries = Object.entries(tensors);
  } else {
    throw invalidParameterError('tensors', 'an object or a Map of name → Tensor or { dtype, shape, data }', tensors);
  }
  let metaEntries: [string, string][] | undefined;
  if (metadata !== undefined) {
    if (!is.object(metadata)) throw invalidParameterError('metadata', 'an object of strings', metadata);
    metaEntries = Object.entries(metadata);
    for (const [k, v] of metaEntries) {
      if (typeof v !== 'string') throw invalidParameterError(`metadata[${quote(k)}]`, 'a string', v);
      if (LONE_SURROGATE.test(k) || LONE_SURROGATE.test(v)) throw invalidParameterError(`metadata[${quote(k)}]`, 'a well-formed string (no lone surrogates)', v);
    }
    metaEntries.sort((a, b) => utf8Compare(a[0], b[0]));
  }
  assertLittleEndian();

  // Interpret options: layout and header.
  const planned = entries.map(([name, value]) => plan(name, value));
  planned.sort((a, b) => RANK.get(b.dtype)! - RANK.get(a.dtype)! || Buffer.compare(a.key, b.key));
  const parts: string[] = [];
  if (metaEntries) parts.push(`"__metadata__":{${metaEntries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`);
  let offset = 0;
  for (const p of planned) {
    parts.push(`${JSON.stringify(p.name)}:{"dtype":"${p.dtype}","shape":[${p.shape.join(',')}],"data_offsets":[${offset},${offset + p.byteLength}]}`);
    offset += p.byteLength;
  }
  const json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const n = Math.ceil(json.length / 8) * 8;
  if (n > MAX_HEADER_LENGTH) {
    throw new FacecudaRangeError(`The safetensors header would be ${n} bytes, over the ${MAX_HEADER_LENGTH}-byte limit readers enforce (too many tensors or too much metadata)`);
  }
  const head = Buffer.alloc(8 + n, 0x20);
  head.writeBigUInt64LE(BigInt(n), 0);
  json.copy(head, 8);

  // Write to a temporary name, fsync, rename.
  const tmp = temporaryName(path);
  let fh: FileHandle | undefined;
  try {
    fh = await fsp.open(tmp, 'wx');
  } catch (err) {
    throw ioError('create', tmp, err);
  }
  try {
    try {
      await writeAll(fh, head);
    } catch (err) {
      throw ioError('write', tmp, err);
    }
    for (const p of planned) {
      const bytes = await bytesOf(p);
      try {
        await writeAll(fh, bytes);
      } catch (err) {
        throw ioError('write', tmp, err);
      }
    }
    try {
      await fh.sync();
      await fh.close();
      fh = undefined;
      await fsp.rename(tmp, path);
    } catch (err) {
      throw ioError(fh ? 'write' : 'rename into place', fh ? tmp : path, err);
    }
  } catch (err) {
    if (fh) await fh.close().catch(() => undefined);
    await fsp.unlink(tmp).catch(() => undefined);
    throw err;
  }
  // Make the rename durable (best effort: not every file system lets a directory be fsynced).
  try {
    const dir = await fsp.open(dirname(path), 'r');
    await dir.sync().catch(() => undefined);
    await dir.close();
  } catch {
    // ignore
  }
}
