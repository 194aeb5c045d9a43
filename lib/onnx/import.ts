/**
 * ONNX import, the parsing and recognition half: read an ONNX file, check it, and recognise an
 * IResNet (r18/34/50/100/200) or MobileFaceNet graph as PyTorch exports it from arcface_torch (and
 * as insightface ships it, e.g. `w600k_r50.onnx`), mapping its initializers to the state-dict names
 * of {@link BackboneArch}. Executing the model is the native engine's job.
 *
 * Recognition works on the graph's structure, never on initializer or node names (exports name
 * them `onnx::Conv_123`, `input.4`, …):
 *
 * 1. Aliases: `Identity` and inference `Dropout` nodes pass their input through. `Constant` nodes and
 *    initializers are constants.
 * 2. Every other node must be one of Conv, BatchNormalization, PRelu, Add, Sub, Mul, Div, Flatten,
 *    Reshape, Gemm, MatMul in the default domain; the first that is not is named in the error.
 * 3. Input normalization: a chain of Sub/Mul/Div/Add with a constant per-channel (or scalar) operand
 *    right after the image input is folded into one affine map per channel and reported as
 *    `inputNormalization` { mean, std } (the graph computes (x − mean)/std itself).
 * 4. The family and configuration come from the structure: the first Conv (3×3, stride 1 →
 *    IResNet, its outputs the base width, 64 as released; stride 2 → MobileFaceNet with scale =
 *    outputs/64), the number of residual
 *    Adds (IResNet 8/16/24/49/98 → r18/34/50/100/200; MobileFaceNet: Adds between the strided
 *    convolutions give the blocks per stage), the embedding size from the final linear layer and the
 *    input size from the graph input (or fc's input features).
 * 5. The arch graph ({@link iresnetArch}, {@link mobileFaceNetArch}) is then walked in order, and each
 *    layer is matched to the ONNX node that consumes the value its input was matched to: conv →
 *    Conv (kernel, stride, pads, groups, dilations and the weight shape checked), BatchNorm →
 *    BatchNormalization (or nothing when folded, see below), PReLU → PRelu (slopes [C], [C,1,1],
 *    [1,C,1,1] or a single shared slope), add → Add of the two matched values, flatten → Flatten
 *    (axis 1) or Reshape to [0 or −1, F or −1], linear → Gemm (transB 0 or 1, alpha, beta) or MatMul
 *    (+ Add of a constant bias), dropout → nothing. A node that does not fit is named with what was
 *    expected; a node left over when the walk is done is named as unexpected; the last layer must
 *    be the graph's only output.
 *
 * BatchNorm folding: a Conv with a bias and no BatchNormalization after it is a folded conv→BN pair
 * (torch.onnx.export in eval mode folds them; insightface's w600k_r50.onnx has no BN after any
 * conv). When any conv pair is folded, every conv pair is returned folded (pairs the file kept are
 * folded here, in float64) and {@link RecognizedOnnx.folded} is true: the tensors then hold
 * `<conv>.weight` and `<conv>.bias` and none of those BatchNorms' tensors. Likewise a Gemm/MatMul with
 * a bias and no BatchNormalization after it is a folded linear→BatchNorm1d pair (listed in `folds`).
 * Unfolded pairs keep the BN tensors; a bias on an unfolded Conv/Gemm is absorbed exactly into the BN
 * (running_mean −= bias), and a BatchNormalization epsilon other than the arch's 1e-5 is absorbed
 * exactly into running_var (+= eps − 1e-5). Each such change is listed in `notes`.
 *
 * Errors: unreadable file → `IO_ERROR`; malformed protobuf or an invalid ONNX graph (undefined
 * inputs, duplicate outputs, data of the wrong size) → `CORRUPT_FILE`; a valid graph that is not a
 * recognised backbone, external data, unsupported dtypes → `NOT_IMPLEMENTED`. Messages name the
 * file, and the node (index, name, op_type) or tensor concerned.
 */
import { promises as fsp } from 'fs';
import type { FileHandle } from 'fs/promises';
import {
  ArchNode, BackboneArch, BatchNorm1dNode, BatchNorm2dNode, Conv2dNode, IRESNET_LAYERS, IResNetDepth, iresnetArch,
  LinearNode, mobileFaceNetArch, PReluNode,
} from '../backbones/arch';
import { FacecudaError } from '../errors';
import { assertString, is } from '../validate';
import {
  DATA_TYPE, decodeOnnxModel, OnnxAttribute, OnnxGraph, OnnxModelProto, OnnxNode, OnnxTensor,
} from './proto';

// #region public types

/** A decoded and checked ONNX model. */
export interface OnnxModel extends OnnxModelProto {
  graph: OnnxGraph;
  /** How errors name it, e.g. `ONNX file 'model.onnx'`. */
  source: string;
}

/** A parameter or buffer of the recognised model under its arch (state-dict) name. */
export interface ImportedTensor {
  dtype: 'float32';
  shape: number[];
  data: Float32Array;
}

/** A layer followed by a BatchNorm that the returned tensors fold together. */
export interface FoldedPair {
  /** The conv2d or linear node id (its tensors: weight and bias). */
  layer: string;
  /** The batchnorm2d or batchnorm1d node id (absent from the tensors). */
  batchNorm: string;
}

/** What {@link recognizeOnnx} returns. */
export interface RecognizedOnnx {
  /** The recognised architecture (its graph, configuration and preprocessing). */
  arch: BackboneArch;
  /**
   * The tensors by state-dict name: every float tensor of the arch, except `num_batches_tracked`
   * (ONNX does not store it) and the BatchNorms of folded pairs; plus `<layer>.bias` for each folded
   * layer. Data may be views into the model's buffer.
   */
  tensors: Map<string, ImportedTensor>;
  /** True when the conv→BatchNorm pairs are folded (every one of them; see the module notes). */
  folded: boolean;
  /** Every folded pair, conv→BN2d and linear→BN1d. */
  folds: FoldedPair[];
  /** Per-channel normalization the graph applies to its input before the first conv: y = (x − mean)/std; null when none. */
  inputNormalization: { mean: [number, number, number]; std: [number, number, number] } | null;
  /** The arch node id → the ONNX node index it was matched to (folded BNs and dropout are absent). */
  nodeMap: Map<string, number>;
  /** What was adjusted or assumed (absorbed biases and epsilons, folding done here, …). */
  notes: string[];
}

// #endregion

// #region errors and small helpers

/** @internal (shared with translate.ts) */
export function corrupt(source: string, message: string): FacecudaError {
  return new FacecudaError('CORRUPT_FILE', `Corrupt ${source}: ${message}`);
}

/** @internal (shared with translate.ts) */
export function unsupported(source: string, message: string): FacecudaError {
  return new FacecudaError('NOT_IMPLEMENTED', `Cannot import ${source}: ${message}`);
}

function ioError(action: string, path: string, err: unknown): FacecudaError {
  const detail = err instanceof Error ? err.message : String(err);
  const e = new FacecudaError('IO_ERROR', `Cannot ${action} '${path}': ${detail}`);
  Object.defineProperty(e, 'cause', { value: err, enumerable: false, writable: true, configurable: true });
  return e;
}

/** @internal (shared with translate.ts) */
export function describeNode(index: number, node: OnnxNode): string {
  return `node ${index} '${node.name || '(unnamed)'}' (${node.domain ? node.domain + '::' : ''}${node.opType})`;
}

const DEFAULT_DOMAINS = ['', 'ai.onnx'];
const ELEMENT_BYTES: Readonly<Record<number, number>> = { 1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2 };
const INT32_DATA_TYPES = [2, 3, 4, 5, 6, 9, 10, 16];
const DATA_TYPE_NAMES: Readonly<Record<number, string>> = {
  0: 'UNDEFINED', 1: 'FLOAT', 2: 'UINT8', 3: 'INT8', 4: 'UINT16', 5: 'INT16', 6: 'INT32', 7: 'INT64', 8: 'STRING', 9: 'BOOL',
  10: 'FLOAT16', 11: 'DOUBLE', 12: 'UINT32', 13: 'UINT64', 14: 'COMPLEX64', 15: 'COMPLEX128', 16: 'BFLOAT16',
};
/** Largest accepted element count of one tensor (2^31 − 1: also the protobuf size limit). */
const MAX_ELEMENTS = 2 ** 31 - 1;

function elementCount(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

function shapeText(dims: readonly number[]): string {
  return `[${dims.join(', ')}]`;
}

// #endregion

// #region reading and checking

/**
 * Checks what the wire format cannot: the graph exists, every tensor's data matches its dims and
 * data type, the nodes are in topological order with unique outputs, attributes are named and typed.
 */
/** @internal (shared with translate.ts) */
export function validateModel(model: OnnxModelProto, source: string): asserts model is OnnxModel {
  if (model.irVersion <= 0) throw corrupt(source, 'ModelProto.ir_version is missing');
  const g = model.graph;
  if (!g) throw corrupt(source, 'ModelProto.graph is missing');
  if (!model.opsetImport.some((o) => DEFAULT_DOMAINS.includes(o.domain))) {
    throw corrupt(source, 'ModelProto.opset_import has no entry for the default ONNX domain');
  }
  const defined = new Set<string>();
  g.initializer.forEach((t, i) => {
    const where = `initializer ${i} '${t.name}'`;
    if (!t.name) throw corrupt(source, `initializer ${i} has no name`);
    if (defined.has(t.name)) throw corrupt(source, `${where} is defined twice`);
    checkTensorData(t, where, source);
    defined.add(t.name);
  });
  for (const v of g.input) {
    if (!v.name) throw corrupt(source, 'a graph input has no name');
    defined.add(v.name);
  }
  const outputs = new Set<string>();
  g.node.forEach((node, i) => {
    if (!node.opType) throw corrupt(source, `${describeNode(i, node)} has no op_type`);
    for (const name of node.input) {
      if (name !== '' && !defined.has(name) && !outputs.has(name)) {
        throw corrupt(source, `${describeNode(i, node)} reads '${name}', which no graph input, initializer or earlier node defines`);
      }
    }
    const attrNames = new Set<string>();
    node.attribute.forEach((a, j) => {
      if (!a.name) throw corrupt(source, `${describeNode(i, node)}: attribute ${j} has no name`);
      if (attrNames.has(a.name)) throw corrupt(source, `${describeNode(i, node)}: attribute '${a.name}' appears twice`);
      if (a.type < 1 || a.type > 12) throw corrupt(source, `${describeNode(i, node)}: attribute '${a.name}' has type ${a.type}, not an AttributeType`);
      if (a.t) checkTensorData(a.t, `${describeNode(i, node)}: attribute '${a.name}'`, source);
      attrNames.add(a.name);
    });
    for (const name of node.output) {
      if (name === '') continue;
      if (outputs.has(name) || defined.has(name)) throw corrupt(source, `${describeNode(i, node)} writes '${name}', which is already defined`);
      outputs.add(name);
    }
  });
  if (g.output.length === 0) throw corrupt(source, 'the graph has no output');
  for (const v of g.output) {
    if (!outputs.has(v.name) && !defined.has(v.name)) throw corrupt(source, `graph output '${v.name}' is not produced by any node`);
  }
}

function checkTensorData(t: OnnxTensor, where: string, source: string): void {
  for (const d of t.dims) {
    if (!Number.isSafeInteger(d) || d < 0) throw corrupt(source, `${where} has dimension ${d}`);
  }
  const n = elementCount(t.dims);
  if (n > MAX_ELEMENTS) throw corrupt(source, `${where} has ${n} elements (shape ${shapeText(t.dims)})`);
  const bytes = ELEMENT_BYTES[t.dataType];
  if (t.dataType === 0 || t.dataType > 23) throw corrupt(source, `${where} has data type ${t.dataType}`);
  if (bytes === undefined) return; // STRING, complex and 8/4-bit types: not read by the importer
  const sources = [t.rawData !== null, t.floatData.length > 0, t.int32Data.length > 0, t.int64Data.length > 0].filter(Boolean).length;
  if (sources > 1) throw corrupt(source, `${where} stores its data in more than one field`);
  let got: number;
  let field: string;
  if (t.rawData !== null) {
    if (t.rawData.length !== n * bytes) {
      throw corrupt(source, `${where}: raw_data has ${t.rawData.length} bytes, but shape ${shapeText(t.dims)} of ${DATA_TYPE_NAMES[t.dataType]} needs ${n * bytes}`);
    }
    return;
  } else if (t.floatData.length) {
    got = t.floatData.length;
    field = 'float_data';
    if (t.dataType !== DATA_TYPE.FLOAT) throw corrupt(source, `${where} has float_data but data type ${DATA_TYPE_NAMES[t.dataType]}`);
  } else if (t.int32Data.length) {
    got = t.int32Data.length;
    field = 'int32_data';
    if (!INT32_DATA_TYPES.includes(t.dataType)) throw corrupt(source, `${where} has int32_data but data type ${DATA_TYPE_NAMES[t.dataType]}`);
  } else if (t.int64Data.length) {
    got = t.int64Data.length;
    field = 'int64_data';
    if (t.dataType !== DATA_TYPE.INT64) throw corrupt(source, `${where} has int64_data but data type ${DATA_TYPE_NAMES[t.dataType]}`);
  } else {
    got = 0;
    field = 'data';
  }
  if (got !== n) throw corrupt(source, `${where}: ${field} has ${got} values, but shape ${shapeText(t.dims)} needs ${n}`);
}

/**
 * Decodes and checks an ONNX model held in memory.
 *
 * @throws FacecudaError `CORRUPT_FILE` for malformed data; `NOT_IMPLEMENTED` for external data.
 * @example
 * const model = parseOnnx(await fs.promises.readFile('w600k_r50.onnx'));
 */
export function parseOnnx(buffer: Uint8Array, source = 'ONNX buffer'): OnnxModel {
  if (Object.prototype.toString.call(buffer) !== '[object Uint8Array]') {
    throw new FacecudaError('INVALID_ARGUMENT', `Expected a Uint8Array (or Buffer) for buffer but received ${typeof buffer}`);
  }
  const model = decodeOnnxModel(buffer, source) as OnnxModelProto & { source?: string };
  validateModel(model, source);
  model.source = source;
  return model;
}

/**
 * Reads, decodes and checks an ONNX file. The whole file is read into memory (ONNX files without
 * external data are below 2 GiB); tensor data are views into it.
 *
 * @throws FacecudaError `IO_ERROR` when the file cannot be read; `CORRUPT_FILE` when it is malformed
 *   (byte offset and field named); `NOT_IMPLEMENTED` for external data or a file over 2 GiB.
 * @example
 * const model = await readOnnx('w600k_r50.onnx');
 * const { arch, tensors, folded } = recognizeOnnx(model); // arch.name 'r50', folded true
 */
export async function readOnnx(path: string): Promise<OnnxModel> {
  assertString(path, 'path');
  const source = `ONNX file '${path}'`;
  let fh: FileHandle;
  try {
    fh = await fsp.open(path, 'r');
  } catch (err) {
    throw ioError('open ONNX file', path, err);
  }
  let buffer: Buffer;
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new FacecudaError('IO_ERROR', `Cannot read ONNX file '${path}': it is not a regular file`);
    if (st.size >= 2 ** 31) {
      throw new FacecudaError('NOT_IMPLEMENTED', `Cannot import ${source}: it is ${st.size} bytes; protobuf files are below 2 GiB (larger models keep their tensors as external data, which is not supported)`);
    }
    buffer = await fh.readFile();
  } catch (err) {
    throw err instanceof FacecudaError ? err : ioError('read ONNX file', path, err);
  } finally {
    await fh.close().catch(() => undefined);
  }
  return parseOnnx(new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength), source);
}

// #endregion

// #region tensor values

function float16ToFloat32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

/** A tensor's values as float32 (FLOAT, FLOAT16 and DOUBLE data; views when FLOAT raw data is aligned). */
/** @internal (shared with translate.ts) */
export function toFloat32(t: OnnxTensor, where: string, source: string): Float32Array {
  const n = elementCount(t.dims);
  const raw = t.rawData;
  switch (t.dataType) {
    case DATA_TYPE.FLOAT: {
      if (raw) {
        if (raw.byteOffset % 4 === 0) return new Float32Array(raw.buffer, raw.byteOffset, n);
        const copy = new Uint8Array(raw.length);
        copy.set(raw);
        return new Float32Array(copy.buffer, 0, n);
      }
      return t.floatData.length ? t.floatData : new Float32Array(n);
    }
    case DATA_TYPE.FLOAT16: {
      const out = new Float32Array(n);
      if (raw) {
        const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
        for (let i = 0; i < n; i++) out[i] = float16ToFloat32(dv.getUint16(2 * i, true));
      } else {
        for (let i = 0; i < n && i < t.int32Data.length; i++) out[i] = float16ToFloat32(t.int32Data[i] & 0xffff);
      }
      return out;
    }
    case DATA_TYPE.DOUBLE: {
      const out = new Float32Array(n);
      if (raw) {
        const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
        for (let i = 0; i < n; i++) out[i] = dv.getFloat64(8 * i, true);
      }
      return out;
    }
    default:
      throw unsupported(source, `${where} has data type ${DATA_TYPE_NAMES[t.dataType] ?? t.dataType}; expected FLOAT, FLOAT16 or DOUBLE`);
  }
}

/** A tensor's values as integers (INT64 or INT32). */
/** @internal (shared with translate.ts) */
export function toIntegers(t: OnnxTensor, where: string, source: string): number[] {
  const n = elementCount(t.dims);
  const raw = t.rawData;
  if (t.dataType === DATA_TYPE.INT64) {
    if (!raw) return t.int64Data.slice();
    const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    return Array.from({ length: n }, (_, i) => Number(dv.getBigInt64(8 * i, true)));
  }
  if (t.dataType === DATA_TYPE.INT32) {
    if (!raw) return Array.from(t.int32Data);
    const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    return Array.from({ length: n }, (_, i) => dv.getInt32(4 * i, true));
  }
  throw unsupported(source, `${where} has data type ${DATA_TYPE_NAMES[t.dataType] ?? t.dataType}; expected INT64 or INT32`);
}

// #endregion

// #region graph view

interface Constant {
  tensor: OnnxTensor;
  /** 'initializer' or the Constant node's description. */
  origin: string;
}

const LAYER_OPS = ['Conv', 'BatchNormalization', 'PRelu', 'Add', 'Sub', 'Mul', 'Div', 'Flatten', 'Reshape', 'Gemm', 'MatMul'] as const;
const PASS_OPS = ['Identity', 'Dropout'];

/** The graph with aliases resolved, constants collected and consumers indexed. */
class GraphView {
  readonly constants = new Map<string, Constant>();
  readonly alias = new Map<string, string>();
  /** Node indices of layer nodes (not Constant, Identity, Dropout), in file order. */
  readonly layers: number[] = [];
  readonly consumers = new Map<string, number[]>();
  readonly claimed = new Set<number>();
  readonly image: string;
  readonly imageShape: (number | null)[] | null;
  readonly output: string;

  constructor(readonly model: OnnxModel, readonly notes: string[]) {
    const g = model.graph;
    const source = model.source;
    for (const t of g.initializer) this.constants.set(t.name, { tensor: t, origin: `initializer '${t.name}'` });
    g.node.forEach((node, i) => {
      if (!DEFAULT_DOMAINS.includes(node.domain) || !(LAYER_OPS as readonly string[]).concat(PASS_OPS, ['Constant']).includes(node.opType)) {
        throw unsupported(
          source,
          `${describeNode(i, node)} is not supported: an IResNet or MobileFaceNet export is made of ${LAYER_OPS.join(', ')} (plus Constant, Identity, Dropout) in the default domain`,
        );
      }
      if (node.opType === 'Constant') {
        this.constants.set(node.output[0], { tensor: constantValue(node, i, source), origin: describeNode(i, node) });
      } else if (node.opType === 'Identity') {
        this.alias.set(node.output[0], this.resolve(node.input[0]));
      } else if (node.opType === 'Dropout') {
        this.checkDropout(node, i);
        this.alias.set(node.output[0], this.resolve(node.input[0]));
      } else {
        this.layers.push(i);
        for (const name of node.input) {
          if (!name) continue;
          const r = this.resolve(name);
          if (this.constants.has(r)) continue;
          const list = this.consumers.get(r);
          if (list) list.push(i);
          else this.consumers.set(r, [i]);
        }
      }
    });

    const inputs = g.input.filter((v) => !this.constants.has(v.name));
    if (inputs.length !== 1) {
      throw unsupported(source, `the graph has ${inputs.length} inputs besides its initializers (${inputs.map((v) => `'${v.name}'`).join(', ')}); expected one image input`);
    }
    const input = inputs[0];
    this.image = input.name;
    const tt = input.type?.tensorType ?? null;
    if (tt && tt.elemType !== 0 && tt.elemType !== DATA_TYPE.FLOAT) {
      throw unsupported(source, `graph input '${input.name}' has element type ${DATA_TYPE_NAMES[tt.elemType] ?? tt.elemType}; expected FLOAT`);
    }
    this.imageShape = tt?.shape ? tt.shape.map((d) => d.dimValue) : null;
    if (this.imageShape && (this.imageShape.length !== 4 || (this.imageShape[1] !== null && this.imageShape[1] !== 3))) {
      throw unsupported(source, `graph input '${input.name}' has shape [${this.imageShape.map((d) => d ?? '?').join(', ')}]; expected [N, 3, H, W]`);
    }
    if (g.output.length !== 1) {
      throw unsupported(source, `the graph has ${g.output.length} outputs (${g.output.map((v) => `'${v.name}'`).join(', ')}); expected one, the embedding`);
    }
    this.output = this.resolve(g.output[0].name);
  }

  resolve(name: string): string {
    let n = name;
    for (let guard = 0; guard < 1_000_000; guard++) {
      const next = this.alias.get(n);
      if (next === undefined) return n;
      n = next;
    }
    return n;
  }

  node(i: number): OnnxNode {
    return this.model.graph.node[i];
  }

  constant(name: string | undefined): Constant | null {
    if (!name) return null;
    return this.constants.get(this.resolve(name)) ?? null;
  }

  private checkDropout(node: OnnxNode, i: number): void {
    const source = this.model.source;
    if (node.input[2]) {
      const mode = this.constant(node.input[2]);
      const values = mode ? (mode.tensor.rawData ? Array.from(mode.tensor.rawData) : Array.from(mode.tensor.int32Data)) : null;
      if (!values || values.some((v) => v !== 0)) {
        throw unsupported(source, `${describeNode(i, node)} may run in training mode; expected an inference export (training_mode absent or a constant false)`);
      }
    }
    if (node.output.length > 1 && node.output[1] !== '') {
      const mask = node.output[1];
      const used = this.model.graph.node.some((n) => n.input.includes(mask)) || this.model.graph.output.some((o) => o.name === mask);
      if (used) throw unsupported(source, `${describeNode(i, node)}: its mask output is used; expected an inference export`);
    }
    this.notes.push(`${describeNode(i, node)} is treated as identity (inference)`);
  }

  /** Unclaimed consumers of a value, in file order. */
  open(value: string): number[] {
    return (this.consumers.get(value) ?? []).filter((i) => !this.claimed.has(i));
  }
}

/** @internal (shared with translate.ts) */
export function constantValue(node: OnnxNode, i: number, source: string): OnnxTensor {
  if (node.attribute.length !== 1) throw unsupported(source, `${describeNode(i, node)} has ${node.attribute.length} attributes; expected exactly one value`);
  const a = node.attribute[0];
  const scalar = (dataType: number, dims: number[], floatData: number[], int64Data: number[]): OnnxTensor => ({
    dims, dataType, floatData: Float32Array.from(floatData), int32Data: new Int32Array(0), int64Data, name: node.output[0], rawData: null,
  });
  switch (a.name) {
    case 'value':
      if (!a.t) throw corrupt(source, `${describeNode(i, node)}: attribute 'value' has no tensor`);
      return a.t;
    case 'value_float': return scalar(DATA_TYPE.FLOAT, [], [a.f], []);
    case 'value_floats': return scalar(DATA_TYPE.FLOAT, [a.floats.length], a.floats, []);
    case 'value_int': return scalar(DATA_TYPE.INT64, [], [], [a.i]);
    case 'value_ints': return scalar(DATA_TYPE.INT64, [a.ints.length], [], a.ints);
    case 'value_string': return scalar(DATA_TYPE.STRING, [], [], []); // refused by toFloat32/toIntegers if used
    case 'value_strings': return scalar(DATA_TYPE.STRING, [a.strings.length], [], []);
    default:
      throw unsupported(source, `${describeNode(i, node)} has a '${a.name}' value; expected a numeric tensor`);
  }
}

/** @internal (shared with translate.ts) */
export function attr(node: OnnxNode, name: string): OnnxAttribute | undefined {
  return node.attribute.find((a) => a.name === name);
}

/** @internal (shared with translate.ts) */
export function attrInt(node: OnnxNode, name: string, dflt: number): number {
  const a = attr(node, name);
  return a ? a.i : dflt;
}

/** @internal (shared with translate.ts) */
export function attrFloat(node: OnnxNode, name: string, dflt: number): number {
  const a = attr(node, name);
  return a ? a.f : dflt;
}

/** @internal (shared with translate.ts) */
export function attrInts(node: OnnxNode, name: string): number[] | null {
  const a = attr(node, name);
  return a ? a.ints : null;
}

/** @internal (shared with translate.ts) */
export function attrString(node: OnnxNode, name: string): string | null {
  const a = attr(node, name);
  return a ? Buffer.from(a.s).toString('utf8') : null;
}

// #endregion

// #region recognition

interface LayerMatch {
  /** ONNX node index. */
  index: number;
  weight?: Float32Array;
  bias?: Float32Array | null;
  /** BatchNormalization: scale, B, mean, var, epsilon. */
  bn?: { scale: Float32Array; b: Float32Array; mean: Float32Array; variance: Float32Array; eps: number };
}

/** Recognition state for one model. */
class Matcher {
  readonly source: string;
  readonly valueOf = new Map<string, string>();
  readonly matches = new Map<string, LayerMatch>();
  /** BN ids whose preceding layer (conv or linear id) is folded in the file. */
  readonly foldedInFile = new Map<string, string>();

  constructor(readonly view: GraphView, readonly arch: BackboneArch, readonly notes: string[]) {
    this.source = view.model.source;
  }

  fail(message: string): FacecudaError {
    return unsupported(this.source, message);
  }

  where(index: number): string {
    return describeNode(index, this.view.node(index));
  }

  /** The unclaimed consumer of `value` with one of `ops`; an error naming what is there otherwise. */
  consumer(value: string, ops: readonly string[], expectation: string, filter?: (i: number) => boolean): number {
    const open = this.view.open(value);
    const hit = open.find((i) => ops.includes(this.view.node(i).opType) && (!filter || filter(i)));
    if (hit !== undefined) return hit;
    if (open.length) throw this.fail(`${this.where(open[0])} reads '${value}' where ${expectation} was expected`);
    if (value === this.view.output) throw this.fail(`the graph ends at '${value}' where ${expectation} was expected to follow`);
    throw this.fail(`nothing reads '${value}' where ${expectation} was expected`);
  }

  /** A constant input of a node as float32 with its dims. */
  constInput(index: number, k: number, role: string): { data: Float32Array; dims: number[] } {
    const node = this.view.node(index);
    const c = this.view.constant(node.input[k]);
    if (!c) throw this.fail(`${this.where(index)}: input ${k} ('${node.input[k] ?? ''}', the ${role}) is not a constant; expected an initializer or Constant`);
    return { data: toFloat32(c.tensor, `${this.where(index)} ${role} '${c.tensor.name || node.input[k]}'`, this.source), dims: c.tensor.dims };
  }

  optionalConst(index: number, k: number, role: string): { data: Float32Array; dims: number[] } | null {
    const node = this.view.node(index);
    return node.input[k] ? this.constInput(index, k, role) : null;
  }

  claim(index: number, archId: string): void {
    this.view.claimed.add(index);
    this.matches.set(archId, { index });
  }

  expectShape(index: number, role: string, dims: readonly number[], expected: readonly number[], archId: string): void {
    if (dims.join() !== expected.join()) {
      throw this.fail(`${this.where(index)}: the ${role} has shape ${shapeText(dims)}; ${archId} expects ${shapeText(expected)}`);
    }
  }

  run(): void {
    for (const node of this.arch.nodes) this.step(node);
    const last = this.valueOf.get(this.arch.output) as string;
    // Every layer node must be claimed, in file order the first that is not is named.
    const left = this.view.layers.find((i) => !this.view.claimed.has(i));
    if (left !== undefined) {
      throw this.fail(`${this.where(left)} is unexpected: it is not part of the ${this.arch.name} graph (matched up to '${last}')`);
    }
    if (last !== this.view.output) {
      throw this.fail(`the graph output is '${this.view.output}', but the ${this.arch.name} embedding is '${last}'`);
    }
  }

  private src(node: ArchNode, k = 0): string {
    const v = this.valueOf.get(node.inputs[k]);
    if (v === undefined) throw new FacecudaError('INTERNAL', `onnx import: arch node '${node.inputs[k]}' unmatched`);
    return v;
  }

  private step(node: ArchNode): void {
    switch (node.op) {
      case 'input':
        return; // set by the caller
      case 'conv2d':
        return this.conv(node);
      case 'batchnorm2d':
      case 'batchnorm1d':
        return this.batchNorm(node);
      case 'prelu':
        return this.prelu(node);
      case 'dropout':
        this.valueOf.set(node.id, this.src(node));
        return;
      case 'flatten':
        return this.flatten(node);
      case 'linear':
        return this.linear(node);
      case 'add':
        return this.add(node);
      case 'relu':
        throw this.fail(`the arch has a ReLU (${node.id}), which ONNX import does not handle`);
      default: {
        const never: never = node;
        throw new FacecudaError('INTERNAL', `onnx import: unknown op ${(never as ArchNode).op}`);
      }
    }
  }

  private conv(node: Conv2dNode): void {
    const expectation = `a Conv for ${node.id} (${node.kernel}×${node.kernel}, ${node.inC}→${node.outC}, stride ${node.stride}, pad ${node.padding}, groups ${node.groups})`;
    const i = this.consumer(this.src(node), ['Conv'], expectation, (j) => this.view.node(j).input[0] !== undefined && this.view.resolve(this.view.node(j).input[0]) === this.src(node));
    const n = this.view.node(i);
    const w = this.constInput(i, 1, 'weight');
    this.expectShape(i, 'weight', w.dims, [node.outC, node.inC / node.groups, node.kernel, node.kernel], node.id);
    const k = attrInts(n, 'kernel_shape');
    const strides = attrInts(n, 'strides') ?? [1, 1];
    const pads = attrInts(n, 'pads') ?? [0, 0, 0, 0];
    const dil = attrInts(n, 'dilations') ?? [1, 1];
    const group = attrInt(n, 'group', 1);
    const autoPad = attrString(n, 'auto_pad') ?? 'NOTSET';
    const problems: string[] = [];
    if (k && k.join() !== `${node.kernel},${node.kernel}`) problems.push(`kernel_shape ${shapeText(k)}`);
    if (strides.join() !== `${node.stride},${node.stride}`) problems.push(`strides ${shapeText(strides)}`);
    if (!(autoPad === 'NOTSET' || (autoPad === 'VALID' && node.padding === 0))) problems.push(`auto_pad ${autoPad}`);
    else if (autoPad === 'NOTSET' && pads.join() !== Array(4).fill(node.padding).join()) problems.push(`pads ${shapeText(pads)}`);
    if (dil.some((d) => d !== 1)) problems.push(`dilations ${shapeText(dil)}`);
    if (group !== node.groups) problems.push(`group ${group}`);
    if (n.input.length !== 2 && n.input.length !== 3) problems.push(`${n.input.length} inputs`);
    if (problems.length) throw this.fail(`${this.where(i)} has ${problems.join(', ')}; ${expectation} was expected`);
    const b = this.optionalConst(i, 2, 'bias');
    if (b && elementCount(b.dims) !== node.outC) this.expectShape(i, 'bias', b.dims, [node.outC], node.id);
    this.claim(i, node.id);
    this.matches.set(node.id, { index: i, weight: w.data, bias: b ? b.data : null });
    this.valueOf.set(node.id, this.view.resolve(n.output[0]));
  }

  private batchNorm(node: BatchNorm2dNode | BatchNorm1dNode): void {
    const value = this.src(node);
    const prev = this.arch.nodes.find((a) => a.id === node.inputs[0]) as ArchNode;
    const prevMatch = this.matches.get(prev.id);
    const hasBn = this.view.open(value).some((j) => this.view.node(j).opType === 'BatchNormalization');
    if (!hasBn && (prev.op === 'conv2d' || prev.op === 'linear') && prevMatch?.bias) {
      // Folded in the file: the layer's bias carries the BN.
      this.foldedInFile.set(node.id, prev.id);
      this.valueOf.set(node.id, value);
      return;
    }
    const expectation = `a BatchNormalization for ${node.id} (${node.features} features)`;
    const i = this.consumer(value, ['BatchNormalization'], expectation);
    const n = this.view.node(i);
    const outs = n.output.filter((o) => o !== '');
    if (outs.length !== 1 || attrInt(n, 'training_mode', 0) !== 0) {
      throw this.fail(`${this.where(i)} computes batch statistics (training mode); expected an inference BatchNormalization`);
    }
    if (attrInt(n, 'spatial', 1) !== 1) throw this.fail(`${this.where(i)} has spatial=0; expected per-channel statistics`);
    const get = (k: number, role: string): Float32Array => {
      const c = this.constInput(i, k, role);
      if (elementCount(c.dims) !== node.features) this.expectShape(i, role, c.dims, [node.features], node.id);
      return c.data;
    };
    const bn = { scale: get(1, 'scale'), b: get(2, 'bias'), mean: get(3, 'mean'), variance: get(4, 'variance'), eps: attrFloat(n, 'epsilon', 1e-5) };
    this.claim(i, node.id);
    this.matches.set(node.id, { index: i, bn });
    this.valueOf.set(node.id, this.view.resolve(n.output[0]));
  }

  private prelu(node: PReluNode): void {
    const expectation = `a PRelu for ${node.id} (${node.channels} channels)`;
    const value = this.src(node);
    const i = this.consumer(value, ['PRelu'], expectation, (j) => this.view.resolve(this.view.node(j).input[0]) === value);
    const n = this.view.node(i);
    const s = this.constInput(i, 1, 'slope');
    const c = node.channels;
    const okShapes = [[c], [c, 1, 1], [1, c, 1, 1], [c, 1]].map((d) => d.join());
    let slope: Float32Array;
    if (okShapes.includes(s.dims.join())) slope = s.data;
    else if (elementCount(s.dims) === 1) {
      slope = new Float32Array(c).fill(s.data[0]);
      this.notes.push(`${this.where(i)}: one shared slope, expanded to ${c} channels for ${node.id}`);
    } else {
      throw this.fail(`${this.where(i)}: the slope has shape ${shapeText(s.dims)}; ${node.id} expects [${c}], [${c}, 1, 1] or [1, ${c}, 1, 1]`);
    }
    this.claim(i, node.id);
    this.matches.set(node.id, { index: i, weight: slope });
    this.valueOf.set(node.id, this.view.resolve(n.output[0]));
  }

  private flatten(node: ArchNode): void {
    const value = this.src(node);
    const features = this.arch.nodes.find((a) => a.op === 'linear') as LinearNode;
    const expectation = `a Flatten (axis 1) for ${node.id}`;
    const i = this.consumer(value, ['Flatten', 'Reshape'], expectation);
    const n = this.view.node(i);
    if (n.opType === 'Flatten') {
      const axis = attrInt(n, 'axis', 1);
      if (axis !== 1) throw this.fail(`${this.where(i)} has axis ${axis}; ${expectation} was expected`);
    } else {
      const c = this.view.constant(n.input[1]);
      if (!c) throw this.fail(`${this.where(i)}: its shape input is not a constant; ${expectation} was expected`);
      const shape = toIntegers(c.tensor, `${this.where(i)} shape`, this.source);
      const f = features.in;
      const ok = shape.length === 2 && ((shape[0] === 0 && (shape[1] === -1 || shape[1] === f)) || (shape[0] === -1 && shape[1] === f));
      if (!ok) throw this.fail(`${this.where(i)} reshapes to ${shapeText(shape)}; expected [0, -1], [0, ${f}] or [-1, ${f}] for ${node.id}`);
    }
    this.claim(i, node.id);
    this.valueOf.set(node.id, this.view.resolve(n.output[0]));
  }

  private linear(node: LinearNode): void {
    const value = this.src(node);
    const expectation = `a Gemm or MatMul for ${node.id} (${node.in}→${node.out})`;
    const i = this.consumer(value, ['Gemm', 'MatMul'], expectation);
    const n = this.view.node(i);
    let weight: Float32Array;
    let bias: Float32Array | null = null;
    let out = this.view.resolve(n.output[0]);
    const transpose = (w: Float32Array, rows: number, cols: number): Float32Array => {
      const t = new Float32Array(w.length);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = w[r * cols + c];
      return t;
    };
    if (n.opType === 'Gemm') {
      if (attrInt(n, 'transA', 0) !== 0) throw this.fail(`${this.where(i)} has transA=1; ${expectation} was expected`);
      const transB = attrInt(n, 'transB', 0);
      const alpha = attrFloat(n, 'alpha', 1);
      const beta = attrFloat(n, 'beta', 1);
      const w = this.constInput(i, 1, 'weight');
      this.expectShape(i, 'weight', w.dims, transB ? [node.out, node.in] : [node.in, node.out], node.id);
      weight = transB ? w.data : transpose(w.data, node.in, node.out);
      if (alpha !== 1) weight = weight.map((v) => v * alpha);
      const c = this.optionalConst(i, 2, 'bias');
      if (c) {
        if (elementCount(c.dims) !== node.out) this.expectShape(i, 'bias', c.dims, [node.out], node.id);
        bias = beta !== 1 ? c.data.map((v) => v * beta) : c.data;
      }
      this.claim(i, node.id);
    } else {
      const w = this.constInput(i, 1, 'weight');
      this.expectShape(i, 'weight', w.dims, [node.in, node.out], node.id);
      weight = transpose(w.data, node.in, node.out);
      this.claim(i, node.id);
      // An Add of a constant [out] right after is the bias.
      const adds = this.view.open(out).filter((j) => this.view.node(j).opType === 'Add');
      for (const j of adds) {
        const a = this.view.node(j);
        const k = this.view.resolve(a.input[0]) === out ? 1 : 0;
        const c = this.view.constant(a.input[k]);
        if (c && elementCount(c.tensor.dims) === node.out) {
          bias = toFloat32(c.tensor, `${this.where(j)} bias`, this.source);
          this.view.claimed.add(j);
          out = this.view.resolve(a.output[0]);
          break;
        }
      }
    }
    this.matches.set(node.id, { index: i, weight, bias });
    this.valueOf.set(node.id, out);
  }

  private add(node: ArchNode): void {
    const a = this.src(node, 0);
    const b = this.src(node, 1);
    const expectation = `an Add of '${a}' and '${b}' for ${node.id}`;
    const i = this.consumer(a, ['Add'], expectation, (j) => {
      const ins = this.view.node(j).input.map((x) => this.view.resolve(x));
      return ins.length === 2 && ((ins[0] === a && ins[1] === b) || (ins[0] === b && ins[1] === a));
    });
    this.claim(i, node.id);
    this.valueOf.set(node.id, this.view.resolve(this.view.node(i).output[0]));
  }
}

/** Folds y = BN(W x + b) into W' x + b' in float64. */
function foldPair(weight: Float32Array, bias: Float32Array | null, bn: NonNullable<LayerMatch['bn']>, outC: number): { weight: Float32Array; bias: Float32Array } {
  const per = weight.length / outC;
  const w = new Float32Array(weight.length);
  const b = new Float32Array(outC);
  for (let o = 0; o < outC; o++) {
    const s = bn.scale[o] / Math.sqrt(bn.variance[o] + bn.eps);
    for (let k = 0; k < per; k++) w[o * per + k] = weight[o * per + k] * s;
    b[o] = bn.b[o] + ((bias ? bias[o] : 0) - bn.mean[o]) * s;
  }
  return { weight: w, bias: b };
}

/** The input-normalization prefix: Sub/Mul/Div/Add with per-channel constants right after the image input. */
function normalizationPrefix(view: GraphView, notes: string[]): { value: string; norm: RecognizedOnnx['inputNormalization'] } {
  const source = view.model.source;
  let value = view.image;
  const a = [1, 1, 1];
  const b = [0, 0, 0];
  let any = false;
  for (;;) {
    const open = view.open(value);
    if (open.length !== 1) break;
    const i = open[0];
    const node = view.node(i);
    if (!['Sub', 'Mul', 'Div', 'Add'].includes(node.opType)) break;
    const first = view.resolve(node.input[0]) === value;
    const other = view.constant(node.input[first ? 1 : 0]);
    if (!other) throw unsupported(source, `${describeNode(i, node)} combines the input with a non-constant; expected a constant per-channel normalization`);
    if (!first && (node.opType === 'Sub' || node.opType === 'Div')) {
      throw unsupported(source, `${describeNode(i, node)} computes constant ${node.opType === 'Sub' ? '−' : '/'} input; expected (input − mean) or input / std`);
    }
    const dims = other.tensor.dims;
    const okDims = elementCount(dims) === 1 || (elementCount(dims) === 3 && [[3], [3, 1, 1], [1, 3, 1, 1]].some((d) => d.join() === dims.join()));
    if (!okDims) throw unsupported(source, `${describeNode(i, node)}: the constant has shape ${shapeText(dims)}; expected a scalar or one value per channel`);
    const c = toFloat32(other.tensor, describeNode(i, node), source);
    for (let ch = 0; ch < 3; ch++) {
      const v = c.length === 1 ? c[0] : c[ch];
      if (node.opType === 'Sub') b[ch] -= v;
      else if (node.opType === 'Add') b[ch] += v;
      else {
        const m = node.opType === 'Mul' ? v : 1 / v;
        a[ch] *= m;
        b[ch] *= m;
      }
    }
    view.claimed.add(i);
    notes.push(`${describeNode(i, node)} is input normalization`);
    any = true;
    value = view.resolve(node.output[0]);
  }
  if (!any) return { value, norm: null };
  if (a.some((v) => v === 0 || !Number.isFinite(v)) || b.some((v) => !Number.isFinite(v))) {
    throw unsupported(source, 'the input normalization scales a channel by 0 or a non-finite number');
  }
  const mean = [0, 1, 2].map((ch) => -b[ch] / a[ch]) as [number, number, number];
  const std = [0, 1, 2].map((ch) => 1 / a[ch]) as [number, number, number];
  return { value, norm: { mean, std } };
}

/** The family and configuration, from the structure. */
function identifyArch(view: GraphView, start: string): BackboneArch {
  const source = view.model.source;
  const open = view.open(start);
  const first = open.find((i) => view.node(i).opType === 'Conv');
  if (first === undefined) {
    const what = open.length ? describeNode(open[0], view.node(open[0])) : 'nothing';
    throw unsupported(source, `the image input is read by ${what}; expected the stem Conv (3×3, 3→64 stride 1 for IResNet, 3→64·scale stride 2 for MobileFaceNet)`);
  }
  const conv = view.node(first);
  const w = view.constant(conv.input[1]);
  if (!w || w.tensor.dims.length !== 4) throw unsupported(source, `${describeNode(first, conv)}: the weight is not a constant 4-D tensor`);
  const [outC, inC, kh] = w.tensor.dims;
  const stride = (attrInts(conv, 'strides') ?? [1, 1])[0];
  if (inC !== 3 || kh !== 3) throw unsupported(source, `${describeNode(first, conv)} has weight ${shapeText(w.tensor.dims)}; expected a 3×3 stem over 3 channels`);

  // Residual Adds: both inputs computed (not constants).
  const residualAdds = view.layers.filter((i) => {
    const n = view.node(i);
    return n.opType === 'Add' && n.input.length === 2 && n.input.every((x) => !view.constant(x));
  });
  const gemm = [...view.layers].reverse().find((i) => ['Gemm', 'MatMul'].includes(view.node(i).opType));
  if (gemm === undefined) throw unsupported(source, 'the graph has no Gemm or MatMul; expected the final linear layer (fc)');
  const gw = view.constant(view.node(gemm).input[1]);
  if (!gw || gw.tensor.dims.length !== 2) throw unsupported(source, `${describeNode(gemm, view.node(gemm))}: the weight is not a constant matrix`);
  const transB = view.node(gemm).opType === 'Gemm' && attrInt(view.node(gemm), 'transB', 0) !== 0;
  const [fcIn, embeddingSize] = transB ? [gw.tensor.dims[1], gw.tensor.dims[0]] : gw.tensor.dims;

  if (stride === 1 && outC >= 1 && outC <= 1024) {
    // IResNet; a stem other than 64 is a reduced- or widened-width one (iresnetArch's baseWidth).
    const counts = Object.entries(IRESNET_LAYERS).map(([d, l]) => [Number(d), l.reduce((x, y) => x + y, 0)] as const);
    const hit = counts.find(([, c]) => c === residualAdds.length);
    if (!hit) {
      const stem = outC === 64 ? 'the graph looks like an IResNet but' : `${describeNode(first, conv)} starts an IResNet of base width ${outC}, but the graph`;
      throw unsupported(source, `${stem} has ${residualAdds.length} residual Adds; expected those of IResNet-${counts.map(([d]) => d).join('/')}: ${counts.map(([, c]) => c).join('/')}`);
    }
    let inputSize: number;
    const shape = view.imageShape;
    if (shape && shape[2] !== null && shape[3] !== null) {
      if (shape[2] !== shape[3]) throw unsupported(source, `the input is ${shape[2]}×${shape[3]}; expected a square image`);
      inputSize = shape[2] as number;
    } else {
      const last = 8 * outC;
      const k = Math.round(Math.sqrt(fcIn / last));
      if (k * k * last !== fcIn) throw unsupported(source, `fc has ${fcIn} inputs, not ${last}·k² for a k×k final map`);
      inputSize = 16 * k;
    }
    if (!is.integer(inputSize) || inputSize < 16 || inputSize > 1024) throw unsupported(source, `the input size ${inputSize} is outside 16–1024`);
    return iresnetArch(hit[0] as IResNetDepth, { embeddingSize, inputSize, ...(outC !== 64 ? { baseWidth: outC } : {}) });
  }
  if (stride === 2 && outC % 64 === 0) {
    const scale = outC / 64;
    // Stage boundaries: the strided convs (stem, layers.2, layers.4, layers.6) in file order.
    const strided = view.layers.filter((i) => view.node(i).opType === 'Conv' && (attrInts(view.node(i), 'strides') ?? [1, 1])[0] === 2);
    if (strided.length !== 4) throw unsupported(source, `the graph looks like a MobileFaceNet but has ${strided.length} strided Convs; expected 4`);
    const between = (lo: number, hi: number): number => residualAdds.filter((i) => i > lo && i < hi).length;
    const blocks = [
      between(strided[0], strided[1]), between(strided[1], strided[2]), between(strided[2], strided[3]), between(strided[3], Infinity),
    ];
    if (blocks[0] === 0) blocks[0] = 1; // mbf's layers.1 is a plain ConvBlock when blocks[0] = 1
    if (view.imageShape && view.imageShape[2] !== null && view.imageShape[2] !== 112) {
      throw unsupported(source, `the input is ${view.imageShape[2]} pixels; MobileFaceNet takes 112×112`);
    }
    if (scale > 16) throw unsupported(source, `the stem has ${outC} channels (scale ${scale}); expected scale 1–16`);
    return mobileFaceNetArch({ blocks, scale, embeddingSize });
  }
  throw unsupported(source, `${describeNode(first, conv)} has ${outC} outputs and stride ${stride}; expected stride 1 (IResNet) or 64·scale with stride 2 (MobileFaceNet)`);
}

/**
 * Recognises an IResNet or MobileFaceNet in a decoded ONNX model and maps its initializers to the
 * arch's state-dict names (see the module notes for the rules).
 *
 * @throws FacecudaError `NOT_IMPLEMENTED` naming the first unsupported or unexpected node and what was
 *   expected; `CORRUPT_FILE` for an invalid model.
 * @example
 * const { arch, tensors, folded, inputNormalization } = recognizeOnnx(await readOnnx('w600k_r50.onnx'));
 * arch.name;                         // 'r50'
 * tensors.get('conv1.bias')?.shape;  // [64] (folded)
 */
export function recognizeOnnx(model: OnnxModel | OnnxModelProto): RecognizedOnnx {
  // Validate arguments
  const given = (model as Partial<OnnxModel>).source;
  const source = typeof given === 'string' ? given : 'ONNX model';
  if (typeof given !== 'string') validateModel(model, source); // parseOnnx/readOnnx results are already checked
  const m: OnnxModel = { ...(model as OnnxModel), source };

  const notes: string[] = [];
  const view = new GraphView(m, notes);
  const { value: start, norm } = normalizationPrefix(view, notes);
  const arch = identifyArch(view, start);
  const matcher = new Matcher(view, arch, notes);
  matcher.valueOf.set('input', start);
  matcher.run();

  // Folding: all conv pairs folded as soon as one is.
  const convPairs: { conv: Conv2dNode; bn: BatchNorm2dNode }[] = [];
  const linearPairs: { linear: LinearNode; bn: BatchNorm1dNode }[] = [];
  for (const n of arch.nodes) {
    if (n.op !== 'batchnorm2d' && n.op !== 'batchnorm1d') continue;
    const prev = arch.nodes.find((a) => a.id === n.inputs[0]) as ArchNode;
    if (n.op === 'batchnorm2d' && prev.op === 'conv2d') convPairs.push({ conv: prev, bn: n });
    if (n.op === 'batchnorm1d' && prev.op === 'linear') linearPairs.push({ linear: prev, bn: n });
  }
  const foldedConvs = convPairs.filter((p) => matcher.foldedInFile.has(p.bn.id)).length;
  const folded = foldedConvs > 0;
  if (folded && foldedConvs < convPairs.length) {
    notes.push(`${convPairs.length - foldedConvs} of ${convPairs.length} conv→BatchNorm pairs were not folded in the file and were folded here`);
  }

  const tensors = new Map<string, ImportedTensor>();
  const put = (name: string, shape: readonly number[], data: Float32Array): void => {
    tensors.set(name, { dtype: 'float32', shape: [...shape], data });
  };
  const folds: FoldedPair[] = [];
  const foldedBn = new Set<string>();
  const foldLayer = (layerId: string, bnId: string, outC: number, weightShape: readonly number[]): void => {
    const lm = matcher.matches.get(layerId) as LayerMatch;
    if (matcher.foldedInFile.has(bnId)) {
      put(`${layerId}.weight`, weightShape, lm.weight as Float32Array);
      put(`${layerId}.bias`, [outC], lm.bias as Float32Array);
    } else {
      const bn = (matcher.matches.get(bnId) as LayerMatch).bn as NonNullable<LayerMatch['bn']>;
      const f = foldPair(lm.weight as Float32Array, lm.bias ?? null, bn, outC);
      put(`${layerId}.weight`, weightShape, f.weight);
      put(`${layerId}.bias`, [outC], f.bias);
    }
    folds.push({ layer: layerId, batchNorm: bnId });
    foldedBn.add(bnId);
  };
  if (folded) for (const p of convPairs) foldLayer(p.conv.id, p.bn.id, p.conv.outC, [p.conv.outC, p.conv.inC / p.conv.groups, p.conv.kernel, p.conv.kernel]);
  for (const p of linearPairs) if (matcher.foldedInFile.has(p.bn.id)) foldLayer(p.linear.id, p.bn.id, p.linear.out, [p.linear.out, p.linear.in]);

  // BN whose preceding layer has a bias but is not folded: absorb the bias.
  const absorbed = new Map<string, Float32Array>();
  for (const n of arch.nodes) {
    if (foldedBn.has(n.id)) continue;
    const lm = matcher.matches.get(n.id);
    switch (n.op) {
      case 'conv2d': {
        if (tensors.has(`${n.id}.weight`)) break;
        put(`${n.id}.weight`, [n.outC, n.inC / n.groups, n.kernel, n.kernel], lm?.weight as Float32Array);
        if (lm?.bias) absorbed.set(n.id, lm.bias);
        break;
      }
      case 'linear': {
        if (tensors.has(`${n.id}.weight`)) break;
        put(`${n.id}.weight`, [n.out, n.in], lm?.weight as Float32Array);
        if (n.bias) {
          if (lm?.bias) put(`${n.id}.bias`, [n.out], lm.bias);
          else {
            put(`${n.id}.bias`, [n.out], new Float32Array(n.out));
            notes.push(`${n.id} has no bias in the file; zeros are used`);
          }
        } else if (lm?.bias) absorbed.set(n.id, lm.bias);
        break;
      }
      case 'batchnorm2d':
      case 'batchnorm1d': {
        const bn = (lm as LayerMatch).bn as NonNullable<LayerMatch['bn']>;
        let mean = bn.mean;
        let variance = bn.variance;
        const prevBias = absorbed.get(n.inputs[0]);
        if (prevBias) {
          mean = mean.map((v, c) => v - prevBias[c]);
          notes.push(`the bias of ${n.inputs[0]} is absorbed into ${n.id}.running_mean`);
        }
        if (Math.abs(bn.eps - n.eps) > 1e-12) {
          const d = bn.eps - n.eps;
          variance = variance.map((v) => v + d);
          notes.push(`${n.id}: epsilon ${bn.eps} in the file; running_var adjusted by ${d} for the arch's ${n.eps}`);
        }
        put(`${n.id}.weight`, [n.features], bn.scale);
        put(`${n.id}.bias`, [n.features], bn.b);
        put(`${n.id}.running_mean`, [n.features], mean);
        put(`${n.id}.running_var`, [n.features], variance);
        break;
      }
      case 'prelu':
        put(`${n.id}.weight`, [n.channels], lm?.weight as Float32Array);
        break;
      default:
        break;
    }
  }
  notes.push('num_batches_tracked is not stored in ONNX and is left out');

  const nodeMap = new Map<string, number>();
  for (const [id, lm] of matcher.matches) nodeMap.set(id, lm.index);
  return { arch, tensors, folded, folds, inputNormalization: norm, nodeMap, notes };
}

// #endregion
