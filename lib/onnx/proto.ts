/**
 * A small, strict protobuf wire-format decoder and encoder for exactly the ONNX messages that
 * backbone import needs. No protobuf library: the wire format is small and the ONNX subset fixed.
 *
 * Field numbers, from the ONNX schema `onnx/onnx.in.proto` (proto2; the generated `onnx/onnx.proto3`
 * has the same numbers), onnx/onnx at commit 004aa57f442055b51af980769883b544ac4f87f2:
 *
 * | message | fields read and written |
 * |---|---|
 * | ModelProto | ir_version 1, producer_name 2, producer_version 3, graph 7, opset_import 8, metadata_props 14 |
 * | OperatorSetIdProto | domain 1, version 2 |
 * | StringStringEntryProto | key 1, value 2 |
 * | GraphProto | node 1, name 2, initializer 5, input 11, output 12, value_info 13 |
 * | NodeProto | input 1, output 2, name 3, op_type 4, attribute 5, domain 7 |
 * | AttributeProto | name 1, f 2, i 3, s 4, t 5, floats 7, ints 8, strings 9, type 20 |
 * | TensorProto | dims 1, data_type 2, float_data 4, int32_data 5, int64_data 7, name 8, raw_data 9, external_data 13, data_location 14 |
 * | ValueInfoProto | name 1, type 2 |
 * | TypeProto | tensor_type 1 (TypeProto.Tensor: elem_type 1, shape 2) |
 * | TensorShapeProto | dim 1 (Dimension: dim_value 1, dim_param 2) |
 *
 * Every other field (doc_string, domain/model_version of a model, segment, string_data, graph
 * attributes, sparse tensors, training info, …) is skipped by its wire type, as protobuf does for
 * unknown fields, so newer files still parse.
 *
 * Decoding is strict; every failure is a `CORRUPT_FILE` {@link FacecudaError} naming the source,
 * the byte offset and the message field being read:
 * - a field or value that runs past the end of its message (truncation), a length beyond the buffer;
 * - a varint longer than 10 bytes, or a 10th byte carrying more than the 64th bit;
 * - field number 0, wire types 3 and 4 (groups, never used by ONNX) and 6, 7 (undefined);
 * - a known field with the wrong wire type (a string sent as a varint, …), packed data whose length
 *   is not a multiple of the element size, strings that are not valid UTF-8;
 * - a singular embedded message (ModelProto.graph, AttributeProto.t, ValueInfoProto.type, …) that
 *   appears twice. Protobuf would merge the two; no ONNX writer emits that, so it is treated as
 *   corruption. Repeated scalar singular fields keep the last value, as protobuf does.
 * A tensor whose data lives in an external file (data_location EXTERNAL or external_data entries)
 * is refused with `NOT_IMPLEMENTED`.
 *
 * Repeated numeric fields are read packed or unpacked (both are valid protobuf). The encoder writes
 * what ONNX's own (proto2) serializer writes: fields in field-number order; TensorProto's
 * float_data/int32_data/int64_data packed (declared `[packed = true]`), dims, AttributeProto.floats
 * and ints unpacked (proto2's default); zero/empty scalar fields left out, except the attribute
 * value field its `type` selects (always written, as onnx.helper does), ir_version and
 * TensorProto.data_type (always written), and dim_value of a set dimension (a oneof member).
 *
 * int64 fields are JavaScript numbers: exact within ±2^53, the nearest double beyond (such values
 * only occur as sentinels like INT64_MAX; dims are checked by the importer). Bytes fields and
 * raw_data are views into the decoded buffer, not copies. Assumes a little-endian host.
 */
import { endianness } from 'os';
import { FacecudaError } from '../errors';

// ---------------------------------------------------------------------------------------------
// Message types (ONNX field names in camelCase)

/** OperatorSetIdProto. */
export interface OnnxOpsetId {
  domain: string;
  version: number;
}

/** StringStringEntryProto. */
export interface OnnxStringEntry {
  key: string;
  value: string;
}

/** TensorProto (the fields facecuda reads). */
export interface OnnxTensor {
  /** The shape; [] for a scalar. */
  dims: number[];
  /** TensorProto.DataType: 1 FLOAT, 6 INT32, 7 INT64, 10 FLOAT16, 11 DOUBLE, … */
  dataType: number;
  floatData: Float32Array;
  int32Data: Int32Array;
  int64Data: number[];
  name: string;
  /** raw_data (little-endian, row-major), or null when absent; a view into the decoded buffer. */
  rawData: Uint8Array | null;
}

/** TensorShapeProto.Dimension: one of dim_value and dim_param, or neither (unknown). */
export interface OnnxDim {
  dimValue: number | null;
  dimParam: string | null;
}

/** TypeProto.Tensor. */
export interface OnnxTensorType {
  elemType: number;
  /** null when the shape is absent (unknown rank). */
  shape: OnnxDim[] | null;
}

/** TypeProto (tensor types only; sequence and map types decode as tensorType null). */
export interface OnnxType {
  tensorType: OnnxTensorType | null;
}

/** ValueInfoProto. */
export interface OnnxValueInfo {
  name: string;
  type: OnnxType | null;
}

/** AttributeProto.AttributeType values. */
export const ATTRIBUTE_TYPE = {
  UNDEFINED: 0, FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, GRAPH: 5, FLOATS: 6, INTS: 7, STRINGS: 8,
  TENSORS: 9, GRAPHS: 10, SPARSE_TENSOR: 11, SPARSE_TENSORS: 12,
} as const;

/** TensorProto.DataType values used here. */
export const DATA_TYPE = { FLOAT: 1, UINT8: 2, INT8: 3, INT32: 6, INT64: 7, STRING: 8, BOOL: 9, FLOAT16: 10, DOUBLE: 11 } as const;

/** AttributeProto (the fields facecuda reads). */
export interface OnnxAttribute {
  name: string;
  /** AttributeProto.AttributeType ({@link ATTRIBUTE_TYPE}). */
  type: number;
  f: number;
  i: number;
  /** Bytes (UTF-8 text by convention); a view into the decoded buffer. */
  s: Uint8Array;
  t: OnnxTensor | null;
  floats: number[];
  ints: number[];
  strings: Uint8Array[];
}

/** NodeProto. */
export interface OnnxNode {
  input: string[];
  output: string[];
  name: string;
  opType: string;
  domain: string;
  attribute: OnnxAttribute[];
}

/** GraphProto. */
export interface OnnxGraph {
  node: OnnxNode[];
  name: string;
  initializer: OnnxTensor[];
  input: OnnxValueInfo[];
  output: OnnxValueInfo[];
  valueInfo: OnnxValueInfo[];
}

/** ModelProto. */
export interface OnnxModelProto {
  irVersion: number;
  opsetImport: OnnxOpsetId[];
  producerName: string;
  producerVersion: string;
  /** null when the file has no graph. */
  graph: OnnxGraph | null;
  metadataProps: OnnxStringEntry[];
}

// ---------------------------------------------------------------------------------------------
// Constructors with the protobuf defaults

export function emptyTensor(): OnnxTensor {
  return { dims: [], dataType: 0, floatData: new Float32Array(0), int32Data: new Int32Array(0), int64Data: [], name: '', rawData: null };
}

export function emptyAttribute(): OnnxAttribute {
  return { name: '', type: 0, f: 0, i: 0, s: new Uint8Array(0), t: null, floats: [], ints: [], strings: [] };
}

export function emptyNode(): OnnxNode {
  return { input: [], output: [], name: '', opType: '', domain: '', attribute: [] };
}

export function emptyGraph(): OnnxGraph {
  return { node: [], name: '', initializer: [], input: [], output: [], valueInfo: [] };
}

export function emptyModel(): OnnxModelProto {
  return { irVersion: 0, opsetImport: [], producerName: '', producerVersion: '', graph: null, metadataProps: [] };
}

// ---------------------------------------------------------------------------------------------
// Wire format

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;
const WIRE_NAMES = ['varint', '64-bit', 'length-delimited', 'start-group', 'end-group', '32-bit', 'undefined (6)', 'undefined (7)'];

const TWO32 = 4294967296;
const UTF8 = new TextDecoder('utf-8', { fatal: true });
const UTF8_ENCODER = new TextEncoder();

function assertLittleEndian(): void {
  if (endianness() !== 'LE') throw new FacecudaError('NOT_IMPLEMENTED', 'ONNX parsing needs a little-endian host');
}

/** Reads one message region [pos, end) of a buffer; offsets are absolute in the buffer. */
class Reader {
  pos = 0;
  private readonly view: DataView;

  constructor(readonly buf: Uint8Array, readonly source: string) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  fail(at: number, where: string, problem: string): FacecudaError {
    return new FacecudaError('CORRUPT_FILE', `Corrupt ${this.source}: at byte ${at}, reading ${where}: ${problem}`);
  }

  /** A varint as an int64 (two's complement); exact within ±2^53. */
  varint(end: number, where: string): number {
    const start = this.pos;
    let lo = 0;
    let hi = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= end) throw this.fail(start, where, `the varint runs past the end of its message (byte ${end})`);
      const b = this.buf[this.pos++];
      if (i < 4) lo |= (b & 0x7f) << (7 * i);
      else if (i === 4) {
        lo |= (b & 0x0f) << 28;
        hi |= (b & 0x70) >> 4;
      } else {
        if (i === 9 && b > 1) throw this.fail(start, where, 'the varint does not fit in 64 bits');
        hi |= (b & 0x7f) << (7 * i - 32);
      }
      if ((b & 0x80) === 0) {
        lo >>>= 0;
        hi >>>= 0;
        if (hi & 0x80000000) return -((~hi >>> 0) * TWO32 + (~lo >>> 0) + 1);
        return hi * TWO32 + lo;
      }
    }
    throw this.fail(start, where, 'the varint is longer than 10 bytes');
  }

  /** A length prefix, checked against the end of the enclosing message. */
  length(end: number, where: string): number {
    const at = this.pos;
    const n = this.varint(end, where);
    if (n < 0 || n > end - this.pos) {
      throw this.fail(at, where, `length ${n} runs past the end of its message (${Math.max(0, end - this.pos)} bytes left)`);
    }
    return n;
  }

  fixed32Float(end: number, where: string): number {
    if (end - this.pos < 4) throw this.fail(this.pos, where, 'the 32-bit value runs past the end of its message');
    const v = this.view.getFloat32(this.pos, true);
    this.pos += 4;
    return v;
  }

  bytes(end: number, where: string): Uint8Array {
    const n = this.length(end, where);
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  string(end: number, where: string): string {
    const at = this.pos;
    const b = this.bytes(end, where);
    try {
      return UTF8.decode(b);
    } catch {
      throw this.fail(at, where, 'the string is not valid UTF-8');
    }
  }

  /** Skips a field of an unknown number by its wire type. */
  skip(wire: number, end: number, where: string): void {
    const at = this.pos;
    switch (wire) {
      case WIRE_VARINT:
        this.varint(end, where);
        return;
      case WIRE_I64:
        if (end - this.pos < 8) throw this.fail(at, where, 'the 64-bit value runs past the end of its message');
        this.pos += 8;
        return;
      case WIRE_LEN: {
        const n = this.length(end, where); // read before adding: `this.pos += this.length()` would use the old pos
        this.pos += n;
        return;
      }
      case WIRE_I32:
        if (end - this.pos < 4) throw this.fail(at, where, 'the 32-bit value runs past the end of its message');
        this.pos += 4;
        return;
      default:
        throw this.fail(at, where, `wire type ${wire} (${WIRE_NAMES[wire]}) is not supported`);
    }
  }

  /** Reads every field of the message [pos, end), calling `field` for each; `field` returns false for an unknown number. */
  message(end: number, name: string, field: (no: number, wire: number, where: string) => boolean): void {
    while (this.pos < end) {
      const at = this.pos;
      const tag = this.varint(end, `a field tag of ${name}`);
      if (tag < 0 || tag >= TWO32) throw this.fail(at, name, `field tag ${tag} is out of range`);
      const no = Math.floor(tag / 8);
      const wire = tag % 8;
      if (no === 0) throw this.fail(at, name, 'field number 0 is not allowed');
      if (wire === 3 || wire === 4 || wire > 5) throw this.fail(at, `${name} field ${no}`, `wire type ${wire} (${WIRE_NAMES[wire]}) is not supported`);
      const where = `${name} field ${no}`;
      if (!field(no, wire, where)) this.skip(wire, end, where);
    }
  }

  expect(wire: number, expected: number, where: string, at: number): void {
    if (wire !== expected) throw this.fail(at, where, `wire type ${wire} (${WIRE_NAMES[wire]}), expected ${WIRE_NAMES[expected]}`);
  }

  /** A sub-message: its length, then `body(end)`; the body must end exactly at its end. */
  sub<T>(end: number, where: string, wire: number, body: (subEnd: number) => T): T {
    this.expect(wire, WIRE_LEN, where, this.pos);
    const n = this.length(end, where);
    const subEnd = this.pos + n;
    const out = body(subEnd);
    if (this.pos !== subEnd) throw this.fail(this.pos, where, 'the message does not end at its length'); // cannot happen; defensive
    return out;
  }

  /** Repeated varints, packed or not, appended to `out`. */
  repeatedVarint(end: number, wire: number, where: string, out: (v: number) => void): void {
    if (wire === WIRE_VARINT) {
      out(this.varint(end, where));
      return;
    }
    this.expect(wire, WIRE_LEN, where, this.pos);
    const n = this.length(end, where);
    const stop = this.pos + n;
    while (this.pos < stop) out(this.varint(stop, where));
  }

  /** Repeated floats, packed (one chunk) or not (one value). */
  repeatedFloat(end: number, wire: number, where: string, out: FloatCollector): void {
    if (wire === WIRE_I32) {
      out.push(this.fixed32Float(end, where));
      return;
    }
    const at = this.pos;
    this.expect(wire, WIRE_LEN, where, at);
    const n = this.length(end, where);
    if (n % 4 !== 0) throw this.fail(at, where, `packed floats of ${n} bytes, not a multiple of 4`);
    const bytes = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    out.chunk(bytes);
  }
}

/** Collects repeated floats in order from packed chunks and single values. */
class FloatCollector {
  private parts: Float32Array[] = [];
  private singles: number[] = [];

  push(v: number): void {
    this.singles.push(v);
  }

  chunk(bytes: Uint8Array): void {
    this.flush();
    const copy = new Uint8Array(bytes.length);
    copy.set(bytes);
    this.parts.push(new Float32Array(copy.buffer, 0, bytes.length / 4));
  }

  private flush(): void {
    if (this.singles.length) this.parts.push(Float32Array.from(this.singles));
    this.singles = [];
  }

  result(): Float32Array {
    this.flush();
    if (this.parts.length === 1) return this.parts[0];
    const n = this.parts.reduce((a, p) => a + p.length, 0);
    const out = new Float32Array(n);
    let o = 0;
    for (const p of this.parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }

  get empty(): boolean {
    return this.parts.length === 0 && this.singles.length === 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Decoders, one per message

function decodeOpset(r: Reader, end: number, ctx: string): OnnxOpsetId {
  const m: OnnxOpsetId = { domain: '', version: 0 };
  r.message(end, ctx, (no, wire) => {
    const at = r.pos;
    if (no === 1) { r.expect(wire, WIRE_LEN, `${ctx}.domain`, at); m.domain = r.string(end, `${ctx}.domain`); return true; }
    if (no === 2) { r.expect(wire, WIRE_VARINT, `${ctx}.version`, at); m.version = r.varint(end, `${ctx}.version`); return true; }
    return false;
  });
  return m;
}

function decodeEntry(r: Reader, end: number, ctx: string): OnnxStringEntry {
  const m: OnnxStringEntry = { key: '', value: '' };
  r.message(end, ctx, (no, wire) => {
    const at = r.pos;
    if (no === 1) { r.expect(wire, WIRE_LEN, `${ctx}.key`, at); m.key = r.string(end, `${ctx}.key`); return true; }
    if (no === 2) { r.expect(wire, WIRE_LEN, `${ctx}.value`, at); m.value = r.string(end, `${ctx}.value`); return true; }
    return false;
  });
  return m;
}

function decodeTensor(r: Reader, end: number, ctx: string): OnnxTensor {
  const m = emptyTensor();
  const floats = new FloatCollector();
  const int32: number[] = [];
  let external = false;
  let location = 0;
  const start = r.pos;
  r.message(end, ctx, (no, wire) => {
    const at = r.pos;
    switch (no) {
      case 1: r.repeatedVarint(end, wire, `${ctx}.dims`, (v) => m.dims.push(v)); return true;
      case 2: r.expect(wire, WIRE_VARINT, `${ctx}.data_type`, at); m.dataType = r.varint(end, `${ctx}.data_type`); return true;
      case 4: r.repeatedFloat(end, wire, `${ctx}.float_data`, floats); return true;
      case 5: r.repeatedVarint(end, wire, `${ctx}.int32_data`, (v) => int32.push(v)); return true;
      case 7: r.repeatedVarint(end, wire, `${ctx}.int64_data`, (v) => m.int64Data.push(v)); return true;
      case 8: r.expect(wire, WIRE_LEN, `${ctx}.name`, at); m.name = r.string(end, `${ctx}.name`); return true;
      case 9: r.expect(wire, WIRE_LEN, `${ctx}.raw_data`, at); m.rawData = r.bytes(end, `${ctx}.raw_data`); return true;
      case 13: r.expect(wire, WIRE_LEN, `${ctx}.external_data`, at); r.bytes(end, `${ctx}.external_data`); external = true; return true;
      case 14: r.expect(wire, WIRE_VARINT, `${ctx}.data_location`, at); location = r.varint(end, `${ctx}.data_location`); return true;
      default: return false;
    }
  });
  if (external || location === 1) {
    throw new FacecudaError(
      'NOT_IMPLEMENTED',
      `${r.source}: tensor '${m.name}' (${ctx}, at byte ${start}) stores its data in an external file; ONNX external data is not supported (re-save the model with its tensors inside the .onnx file)`,
    );
  }
  if (!floats.empty) m.floatData = floats.result();
  if (int32.length) m.int32Data = Int32Array.from(int32); // int32 values arrive sign-extended; Int32Array keeps the low 32 bits
  return m;
}

function decodeDim(r: Reader, end: number, ctx: string): OnnxDim {
  const m: OnnxDim = { dimValue: null, dimParam: null };
  r.message(end, ctx, (no, wire) => {
    const at = r.pos;
    if (no === 1) { r.expect(wire, WIRE_VARINT, `${ctx}.dim_value`, at); m.dimValue = r.varint(end, `${ctx}.dim_value`); m.dimParam = null; return true; }
    if (no === 2) { r.expect(wire, WIRE_LEN, `${ctx}.dim_param`, at); m.dimParam = r.string(end, `${ctx}.dim_param`); m.dimValue = null; return true; }
    return false;
  });
  return m;
}

function decodeShape(r: Reader, end: number, ctx: string): OnnxDim[] {
  const dims: OnnxDim[] = [];
  r.message(end, ctx, (no, wire, where) => {
    if (no !== 1) return false;
    const c = `${ctx}.dim[${dims.length}]`;
    dims.push(r.sub(end, where, wire, (e) => decodeDim(r, e, c)));
    return true;
  });
  return dims;
}

function decodeTensorType(r: Reader, end: number, ctx: string): OnnxTensorType {
  const m: OnnxTensorType = { elemType: 0, shape: null };
  r.message(end, ctx, (no, wire) => {
    const at = r.pos;
    if (no === 1) { r.expect(wire, WIRE_VARINT, `${ctx}.elem_type`, at); m.elemType = r.varint(end, `${ctx}.elem_type`); return true; }
    if (no === 2) {
      if (m.shape) throw r.fail(at, `${ctx}.shape`, 'the field appears twice');
      m.shape = r.sub(end, `${ctx}.shape`, wire, (e) => decodeShape(r, e, `${ctx}.shape`));
      return true;
    }
    return false;
  });
  return m;
}

function decodeType(r: Reader, end: number, ctx: string): OnnxType {
  const m: OnnxType = { tensorType: null };
  r.message(end, ctx, (no, wire) => {
    const at = r.pos;
    if (no !== 1) return false;
    if (m.tensorType) throw r.fail(at, `${ctx}.tensor_type`, 'the field appears twice');
    m.tensorType = r.sub(end, `${ctx}.tensor_type`, wire, (e) => decodeTensorType(r, e, `${ctx}.tensor_type`));
    return true;
  });
  return m;
}

function decodeValueInfo(r: Reader, end: number, ctx: string): OnnxValueInfo {
  const m: OnnxValueInfo = { name: '', type: null };
  r.message(end, ctx, (no, wire) => {
    const at = r.pos;
    if (no === 1) { r.expect(wire, WIRE_LEN, `${ctx}.name`, at); m.name = r.string(end, `${ctx}.name`); return true; }
    if (no === 2) {
      if (m.type) throw r.fail(at, `${ctx}.type`, 'the field appears twice');
      m.type = r.sub(end, `${ctx}.type`, wire, (e) => decodeType(r, e, `${ctx}.type`));
      return true;
    }
    return false;
  });
  return m;
}

function decodeAttribute(r: Reader, end: number, ctx: string): OnnxAttribute {
  const m = emptyAttribute();
  const floats = new FloatCollector();
  r.message(end, ctx, (no, wire) => {
    const at = r.pos;
    switch (no) {
      case 1: r.expect(wire, WIRE_LEN, `${ctx}.name`, at); m.name = r.string(end, `${ctx}.name`); return true;
      case 2: r.expect(wire, WIRE_I32, `${ctx}.f`, at); m.f = r.fixed32Float(end, `${ctx}.f`); return true;
      case 3: r.expect(wire, WIRE_VARINT, `${ctx}.i`, at); m.i = r.varint(end, `${ctx}.i`); return true;
      case 4: r.expect(wire, WIRE_LEN, `${ctx}.s`, at); m.s = r.bytes(end, `${ctx}.s`); return true;
      case 5:
        if (m.t) throw r.fail(at, `${ctx}.t`, 'the field appears twice');
        m.t = r.sub(end, `${ctx}.t`, wire, (e) => decodeTensor(r, e, `${ctx}.t`));
        return true;
      case 7: r.repeatedFloat(end, wire, `${ctx}.floats`, floats); return true;
      case 8: r.repeatedVarint(end, wire, `${ctx}.ints`, (v) => m.ints.push(v)); return true;
      case 9: r.expect(wire, WIRE_LEN, `${ctx}.strings`, at); m.strings.push(r.bytes(end, `${ctx}.strings`)); return true;
      case 20: r.expect(wire, WIRE_VARINT, `${ctx}.type`, at); m.type = r.varint(end, `${ctx}.type`); return true;
      default: return false;
    }
  });
  if (!floats.empty) m.floats = Array.from(floats.result());
  return m;
}

function decodeNode(r: Reader, end: number, ctx: string): OnnxNode {
  const m = emptyNode();
  r.message(end, ctx, (no, wire) => {
    const at = r.pos;
    switch (no) {
      case 1: r.expect(wire, WIRE_LEN, `${ctx}.input`, at); m.input.push(r.string(end, `${ctx}.input[${m.input.length}]`)); return true;
      case 2: r.expect(wire, WIRE_LEN, `${ctx}.output`, at); m.output.push(r.string(end, `${ctx}.output[${m.output.length}]`)); return true;
      case 3: r.expect(wire, WIRE_LEN, `${ctx}.name`, at); m.name = r.string(end, `${ctx}.name`); return true;
      case 4: r.expect(wire, WIRE_LEN, `${ctx}.op_type`, at); m.opType = r.string(end, `${ctx}.op_type`); return true;
      case 5: {
        const c = `${ctx}.attribute[${m.attribute.length}]`;
        m.attribute.push(r.sub(end, c, wire, (e) => decodeAttribute(r, e, c)));
        return true;
      }
      case 7: r.expect(wire, WIRE_LEN, `${ctx}.domain`, at); m.domain = r.string(end, `${ctx}.domain`); return true;
      default: return false;
    }
  });
  return m;
}

function decodeGraph(r: Reader, end: number, ctx: string): OnnxGraph {
  const m = emptyGraph();
  r.message(end, ctx, (no, wire) => {
    const at = r.pos;
    switch (no) {
      case 1: {
        const c = `${ctx}.node[${m.node.length}]`;
        m.node.push(r.sub(end, c, wire, (e) => decodeNode(r, e, c)));
        return true;
      }
      case 2: r.expect(wire, WIRE_LEN, `${ctx}.name`, at); m.name = r.string(end, `${ctx}.name`); return true;
      case 5: {
        const c = `${ctx}.initializer[${m.initializer.length}]`;
        m.initializer.push(r.sub(end, c, wire, (e) => decodeTensor(r, e, c)));
        return true;
      }
      case 11: case 12: case 13: {
        const list = no === 11 ? m.input : no === 12 ? m.output : m.valueInfo;
        const c = `${ctx}.${no === 11 ? 'input' : no === 12 ? 'output' : 'value_info'}[${list.length}]`;
        list.push(r.sub(end, c, wire, (e) => decodeValueInfo(r, e, c)));
        return true;
      }
      default: return false;
    }
  });
  return m;
}

/**
 * Decodes a serialized ONNX ModelProto (wire format only; the graph's meaning is checked by the
 * importer).
 *
 * @param source how errors name the data, e.g. `ONNX file 'model.onnx'`.
 * @throws FacecudaError `CORRUPT_FILE` for malformed protobuf (the byte offset and field are named);
 *   `NOT_IMPLEMENTED` for tensors with external data.
 * @example
 * const model = decodeOnnxModel(await fs.promises.readFile('w600k_r50.onnx'), "ONNX file 'w600k_r50.onnx'");
 * model.graph?.node[0].opType; // 'Conv'
 */
export function decodeOnnxModel(buffer: Uint8Array, source = 'ONNX buffer'): OnnxModelProto {
  assertLittleEndian();
  const r = new Reader(buffer, source);
  const end = buffer.length;
  const m = emptyModel();
  const ctx = 'ModelProto';
  r.message(end, ctx, (no, wire) => {
    const at = r.pos;
    switch (no) {
      case 1: r.expect(wire, WIRE_VARINT, `${ctx}.ir_version`, at); m.irVersion = r.varint(end, `${ctx}.ir_version`); return true;
      case 2: r.expect(wire, WIRE_LEN, `${ctx}.producer_name`, at); m.producerName = r.string(end, `${ctx}.producer_name`); return true;
      case 3: r.expect(wire, WIRE_LEN, `${ctx}.producer_version`, at); m.producerVersion = r.string(end, `${ctx}.producer_version`); return true;
      case 7:
        if (m.graph) throw r.fail(at, `${ctx}.graph`, 'the field appears twice');
        m.graph = r.sub(end, `${ctx}.graph`, wire, (e) => decodeGraph(r, e, 'GraphProto'));
        return true;
      case 8: {
        const c = `${ctx}.opset_import[${m.opsetImport.length}]`;
        m.opsetImport.push(r.sub(end, c, wire, (e) => decodeOpset(r, e, c)));
        return true;
      }
      case 14: {
        const c = `${ctx}.metadata_props[${m.metadataProps.length}]`;
        m.metadataProps.push(r.sub(end, c, wire, (e) => decodeEntry(r, e, c)));
        return true;
      }
      default: return false;
    }
  });
  return m;
}

// ---------------------------------------------------------------------------------------------
// Encoder

/** Accumulates bytes as a list of chunks; large byte arrays are referenced, not copied. */
class Writer {
  private parts: Uint8Array[] = [];
  private cur = new Uint8Array(1024);
  private n = 0;
  private static readonly f32 = new Float32Array(1);
  private static readonly f32b = new Uint8Array(Writer.f32.buffer);

  private ensure(k: number): void {
    if (this.n + k <= this.cur.length) return;
    this.flush();
    this.cur = new Uint8Array(Math.max(4096, k));
  }

  private flush(): void {
    if (this.n) this.parts.push(this.cur.subarray(0, this.n));
    this.cur = this.cur.subarray(this.n);
    this.n = 0;
  }

  /** A varint of an int64 value (negative numbers as 10-byte two's complement). */
  varint(v: number): void {
    this.ensure(10);
    if (v >= 0 && v <= Number.MAX_SAFE_INTEGER) {
      while (v >= 128) {
        this.cur[this.n++] = (v % 128) | 0x80;
        v = Math.floor(v / 128);
      }
      this.cur[this.n++] = v;
    } else {
      const max = (1n << 63n) - 1n;
      let b = BigInt(Number.isFinite(v) ? v : v > 0 ? Number.MAX_VALUE : -Number.MAX_VALUE);
      if (b > max) b = max;
      if (b < -max - 1n) b = -max - 1n;
      let u = BigInt.asUintN(64, b);
      while (u >= 128n) {
        this.cur[this.n++] = Number(u & 127n) | 0x80;
        u >>= 7n;
      }
      this.cur[this.n++] = Number(u);
    }
  }

  tag(no: number, wire: number): void {
    this.varint(no * 8 + wire);
  }

  float(v: number): void {
    this.ensure(4);
    Writer.f32[0] = v;
    this.cur.set(Writer.f32b, this.n);
    this.n += 4;
  }

  raw(bytes: Uint8Array): void {
    if (bytes.length > 512) {
      this.flush();
      this.parts.push(bytes);
    } else {
      this.ensure(bytes.length);
      this.cur.set(bytes, this.n);
      this.n += bytes.length;
    }
  }

  append(w: Writer): void {
    const chunks = w.chunks();
    for (const c of chunks) this.raw(c);
  }

  chunks(): Uint8Array[] {
    this.flush();
    return this.parts;
  }

  size(): number {
    return this.chunks().reduce((a, c) => a + c.length, 0);
  }

  // Field helpers
  fieldVarint(no: number, v: number): void {
    this.tag(no, WIRE_VARINT);
    this.varint(v);
  }

  fieldBytes(no: number, b: Uint8Array): void {
    this.tag(no, WIRE_LEN);
    this.varint(b.length);
    this.raw(b);
  }

  fieldString(no: number, s: string): void {
    this.fieldBytes(no, UTF8_ENCODER.encode(s));
  }

  fieldFloat(no: number, v: number): void {
    this.tag(no, WIRE_I32);
    this.float(v);
  }

  fieldMessage(no: number, body: (w: Writer) => void): void {
    const w = new Writer();
    body(w);
    const size = w.size();
    this.tag(no, WIRE_LEN);
    this.varint(size);
    this.append(w);
  }
}

function encodeTensor(w: Writer, t: OnnxTensor): void {
  for (const d of t.dims) w.fieldVarint(1, d);
  w.fieldVarint(2, t.dataType);
  if (t.floatData.length) {
    const f = t.floatData;
    w.fieldBytes(4, new Uint8Array(f.buffer, f.byteOffset, f.byteLength));
  }
  if (t.int32Data.length) {
    const p = new Writer();
    for (const v of t.int32Data) p.varint(v);
    w.tag(5, WIRE_LEN);
    w.varint(p.size());
    w.append(p);
  }
  if (t.int64Data.length) {
    const p = new Writer();
    for (const v of t.int64Data) p.varint(v);
    w.tag(7, WIRE_LEN);
    w.varint(p.size());
    w.append(p);
  }
  if (t.name) w.fieldString(8, t.name);
  if (t.rawData) w.fieldBytes(9, t.rawData);
}

function encodeAttribute(w: Writer, a: OnnxAttribute): void {
  if (a.name) w.fieldString(1, a.name);
  if (a.type === ATTRIBUTE_TYPE.FLOAT || a.f !== 0 || Object.is(a.f, -0)) w.fieldFloat(2, a.f);
  if (a.type === ATTRIBUTE_TYPE.INT || a.i !== 0) w.fieldVarint(3, a.i);
  if (a.type === ATTRIBUTE_TYPE.STRING || a.s.length) w.fieldBytes(4, a.s);
  if (a.t) w.fieldMessage(5, (m) => encodeTensor(m, a.t as OnnxTensor));
  for (const f of a.floats) w.fieldFloat(7, f);
  for (const i of a.ints) w.fieldVarint(8, i);
  for (const s of a.strings) w.fieldBytes(9, s);
  if (a.type) w.fieldVarint(20, a.type);
}

function encodeValueInfo(w: Writer, v: OnnxValueInfo): void {
  if (v.name) w.fieldString(1, v.name);
  if (v.type) {
    const type = v.type;
    w.fieldMessage(2, (tw) => {
      if (!type.tensorType) return;
      const tt = type.tensorType;
      tw.fieldMessage(1, (ttw) => {
        if (tt.elemType) ttw.fieldVarint(1, tt.elemType);
        if (tt.shape) {
          const shape = tt.shape;
          ttw.fieldMessage(2, (sw) => {
            for (const d of shape) {
              sw.fieldMessage(1, (dw) => {
                if (d.dimValue !== null) dw.fieldVarint(1, d.dimValue);
                else if (d.dimParam !== null) dw.fieldString(2, d.dimParam);
              });
            }
          });
        }
      });
    });
  }
}

function encodeNode(w: Writer, n: OnnxNode): void {
  for (const s of n.input) w.fieldString(1, s);
  for (const s of n.output) w.fieldString(2, s);
  if (n.name) w.fieldString(3, n.name);
  if (n.opType) w.fieldString(4, n.opType);
  for (const a of n.attribute) w.fieldMessage(5, (m) => encodeAttribute(m, a));
  if (n.domain) w.fieldString(7, n.domain);
}

function encodeGraph(w: Writer, g: OnnxGraph): void {
  for (const n of g.node) w.fieldMessage(1, (m) => encodeNode(m, n));
  if (g.name) w.fieldString(2, g.name);
  for (const t of g.initializer) w.fieldMessage(5, (m) => encodeTensor(m, t));
  for (const v of g.input) w.fieldMessage(11, (m) => encodeValueInfo(m, v));
  for (const v of g.output) w.fieldMessage(12, (m) => encodeValueInfo(m, v));
  for (const v of g.valueInfo) w.fieldMessage(13, (m) => encodeValueInfo(m, v));
}

/**
 * Serializes a ModelProto (the fields of {@link OnnxModelProto}) in the wire format ONNX's own
 * serializer produces (see the module notes).
 *
 * @example
 * await fs.promises.writeFile('model.onnx', encodeOnnxModel(model));
 */
export function encodeOnnxModel(model: OnnxModelProto): Uint8Array {
  assertLittleEndian();
  const w = new Writer();
  w.fieldVarint(1, model.irVersion);
  if (model.producerName) w.fieldString(2, model.producerName);
  if (model.producerVersion) w.fieldString(3, model.producerVersion);
  if (model.graph) {
    const g = model.graph;
    w.fieldMessage(7, (m) => encodeGraph(m, g));
  }
  for (const o of model.opsetImport) {
    w.fieldMessage(8, (m) => {
      if (o.domain) m.fieldString(1, o.domain);
      if (o.version) m.fieldVarint(2, o.version);
    });
  }
  for (const e of model.metadataProps) {
    w.fieldMessage(14, (m) => {
      if (e.key) m.fieldString(1, e.key);
      if (e.value) m.fieldString(2, e.value);
    });
  }
  const chunks = w.chunks();
  const total = chunks.reduce((a, c) => a + c.length, 0);
  const out = new Uint8Array(total);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}
