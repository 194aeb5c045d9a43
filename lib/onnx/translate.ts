/**
 * ONNX import, the general half: translate an exported inference graph, node by node, into a
 * facecuda {@link BackboneArch} of the native executor's layers (SPEC-BACKBONES §9), with the
 * file's weights under state-dict-like names. This is how the second backbone batch (MobileNetV3,
 * EfficientNet, GhostNet/GhostFaceNets, EdgeNeXt/EdgeFace, ViT/DeiT, insightface ViT) comes in from
 * PyTorch exports, timm-style and insightface-style alike; IResNet and MobileFaceNet keep their
 * structural recognizer ({@link ./import}) and come here only when it does not fit.
 *
 * How a graph is read:
 *
 * 1. **Constants and the shape arithmetic.** Initializers and `Constant` nodes are constants, and
 *    so is everything computed only from constants and from the *shapes* of values (`Shape`,
 *    `Gather`, `Concat`, `Range`, `Sin`, `Where`, `Expand`, even a `Conv` of a constant: the
 *    Fourier table of EdgeNeXt). A dynamic-batch export computes shapes from the batch size, so
 *    every constant is evaluated twice, for a batch of 1 and of 2 (float64): what agrees is
 *    batch-independent; a Reshape target's entry that is 1 and then 2 is the batch axis.
 * 2. **Values.** Each runtime value is one of: a layer output with its per-sample layout (an NCHW
 *    map, tokens [T, D], a vector, NHWC, or a transposed view that costs nothing until it is used);
 *    a pending element-wise expression of one value (c·x^p·Π factors: affine, clip, sigmoid, erf),
 *    which becomes one activation layer when it is used (x·clip((x+3)/6, 0, 1) → hard-swish,
 *    0.5·x·(1 + erf(x/√2)) → GELU, x·σ(x) → SiLU, clip(0.2x + 0.5, 0, 1) → the Keras
 *    hard-sigmoid, …, whatever order the exporter wrote the products in); or a step of an
 *    attention computation followed symbolically by axis labels (qkv reshaped to [N, T, 3, h, d],
 *    permuted, split into q/k/v, scaled, L2-normalized, multiplied, softmaxed, multiplied again,
 *    permuted back), which becomes one `attention` (softmax(s·QKᵀ)V, any split of the scale
 *    between q, kᵀ and the scores) or `xca` (EdgeNeXt's cross-covariance attention, temperature
 *    [h, 1, 1]) layer when it is reshaped back to tokens.
 * 3. **Layers.** Conv (+ a preceding zero Pad: TF-"same" padding), BatchNormalization, PRelu,
 *    MatMul/Gemm (+ a bias Add), LayerNormalization (over the last axis; a Transpose → LN →
 *    Transpose sandwich on a map becomes a channels LayerNorm), ReduceMean/GlobalAveragePool,
 *    residual Add, gating Mul (squeeze-excitation), per-channel Mul by a constant (layer scale),
 *    Add of a constant [T, D] (positional embedding; the folded Fourier encoding too), Concat of
 *    class/distillation tokens, Gather of a token, channel Concat/Slice (ghost modules, EdgeNeXt's
 *    split cascade), Flatten/Reshape, and the averaged two heads of DeiT.
 *
 * What is not supported is refused with `NOT_IMPLEMENTED` naming the node (index, name, op_type)
 * and what was expected. Runtime tensors must keep the batch on axis 0.
 *
 * Differences from the original module structure: an exported graph has BatchNorms folded into
 * convolutions (convs with a bias). An EdgeNeXt Fourier encoding, which an export computes at run
 * time from constants, is recognised when the constant is a 1×1 conv (`<module>.token_projection`)
 * of exactly the §6.3 table of the tokens' map, and becomes `fourierposembed` again with its
 * projection as a parameter; any other constant added to tokens becomes a fixed `posembed` table.
 * Tensors keep the export's names (initializer names, else the module scope of the node name), so a
 * timm ViT/DeiT, insightface ViT or EdgeNeXt/EdgeFace export carries exactly its preset's state dict
 * (Backbone.loadOnnx then returns the preset itself, after checking its embeddings).
 */
import {
  AnyArchNode, BackboneArch, GraphBuilder, InitSpec, Preprocessing, WeightInit, ZooConfig, arcfacePreprocessing, deepFreeze, inferShapes,
} from '../backbones/arch';
import {
  ImportedTensor, OnnxModel, attr, attrFloat, attrInt, attrInts, constantValue, corrupt, describeNode, toFloat32, toIntegers, unsupported, validateModel,
} from './import';
import { DATA_TYPE, OnnxModelProto, OnnxNode, OnnxTensor } from './proto';

// #region public types

/** What {@link translateOnnx} returns. */
export interface TranslatedOnnx {
  /** The graph, named `onnx:<graph name>`, family 'onnx'. */
  arch: BackboneArch<AnyArchNode>;
  /** Every tensor of the arch by name (parameters and BatchNorm statistics; not num_batches_tracked). */
  tensors: Map<string, ImportedTensor>;
  /** What was folded, assumed or approximated. */
  notes: string[];
}

// #endregion

// #region constants: n-d arrays evaluated for a batch of 1 and of 2

interface Nd {
  dims: number[];
  /** Float initializers stay Float32Array (no copy of a large model's weights); computed values are arrays. */
  data: number[] | Float32Array;
  int: boolean;
}

interface ConstVal {
  kind: 'const';
  /** For a batch of 1. */
  a: Nd;
  /** For a batch of 2. */
  b: Nd;
  /**
   * Set on a Conv evaluated on constants (and kept through Reshape/Transpose/Flatten): its input (first
   * sample), weight and bias initializer names. An EdgeNeXt Fourier encoding arrives this way.
   */
  origin?: { input: Nd; weight: string; bias: string | null };
}

const count = (dims: readonly number[]): number => dims.reduce((x, y) => x * y, 1);
const strides = (dims: readonly number[]): number[] => {
  const s = new Array<number>(dims.length).fill(1);
  for (let i = dims.length - 2; i >= 0; i--) s[i] = s[i + 1] * dims[i + 1];
  return s;
};
const nd = (dims: number[], data: number[] | Float32Array, int: boolean): Nd => ({ dims, data, int });
const normAxis = (axis: number, rank: number): number => (axis < 0 ? axis + rank : axis);
const sameNd = (x: Nd, y: Nd): boolean =>
  x === y || (x.dims.join() === y.dims.join() && (x.data as number[]).every((v, i) => v === y.data[i] || (Number.isNaN(v) && Number.isNaN(y.data[i]))));

function broadcastDims(a: readonly number[], b: readonly number[], fail: () => never): number[] {
  const r = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    const x = a[a.length - r + i] ?? 1;
    const y = b[b.length - r + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) fail();
    out.push(x === 1 ? y : x);
  }
  return out;
}

/** Element index map of `dims` broadcast to `out`. */
function broadcastIndex(dims: readonly number[], out: readonly number[]): (flat: number) => number {
  const r = out.length;
  const padded = [...new Array<number>(r - dims.length).fill(1), ...dims];
  const src = strides(padded);
  const dst = strides(out);
  return (flat) => {
    let idx = 0;
    for (let i = 0; i < r; i++) {
      const c = Math.floor(flat / dst[i]) % out[i];
      if (padded[i] !== 1) idx += c * src[i];
    }
    return idx;
  };
}

function binary(x: Nd, y: Nd, f: (p: number, q: number) => number, int: boolean, fail: () => never): Nd {
  const dims = broadcastDims(x.dims, y.dims, fail);
  const ix = broadcastIndex(x.dims, dims);
  const iy = broadcastIndex(y.dims, dims);
  const n = count(dims);
  const data = new Array<number>(n);
  for (let i = 0; i < n; i++) data[i] = f(x.data[ix(i)], y.data[iy(i)]);
  return nd(dims, data, int);
}

function transposeNd(x: Nd, perm: readonly number[]): Nd {
  const dims = perm.map((p) => x.dims[p]);
  const s = strides(x.dims);
  const d = strides(dims);
  const n = count(dims);
  const data = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    let idx = 0;
    for (let k = 0; k < dims.length; k++) idx += (Math.floor(i / d[k]) % dims[k]) * s[perm[k]];
    data[i] = x.data[idx];
  }
  return nd(dims, data, x.int);
}

/** Gather along one axis: x[..., idx[j], ...] for every index j (already in range). */
function take(v: Nd, axis: number, idx: Nd): Nd {
  const outer = count(v.dims.slice(0, axis));
  const inner = count(v.dims.slice(axis + 1));
  const n = v.dims[axis];
  const data: number[] = [];
  for (let o = 0; o < outer; o++) {
    for (const j of idx.data) {
      for (let k = 0; k < inner; k++) data.push(v.data[(o * n + j) * inner + k]);
    }
  }
  return nd([...v.dims.slice(0, axis), ...idx.dims, ...v.dims.slice(axis + 1)], data, v.int);
}

/** The dims a Shape node outputs for a value of shape `dims` (its optional start/end attributes). */
function shapeRange(node: OnnxNode, dims: readonly number[]): number[] {
  const start = attr(node, 'start') ? normAxis(attrInt(node, 'start', 0), dims.length) : 0;
  const end = attr(node, 'end') ? normAxis(attrInt(node, 'end', dims.length), dims.length) : dims.length;
  return dims.slice(start, end);
}

/** ONNX Reshape's target resolution (0 copies, −1 infers; allowzero 0). */
function reshapeTarget(input: readonly number[], target: readonly number[], fail: (why: string) => never): number[] {
  const out = target.map((t, i) => (t === 0 ? input[i] : t));
  const known = out.filter((t) => t !== -1).reduce((a, b) => a * b, 1);
  const minus = out.filter((t) => t === -1).length;
  if (minus > 1) fail('more than one −1 in the target shape');
  const total = count(input);
  if (minus === 1) {
    if (known === 0 || total % known !== 0) fail(`cannot infer the −1 of [${target}] from ${total} elements`);
    out[out.indexOf(-1)] = total / known;
  }
  if (count(out) !== total) fail(`[${input}] has ${total} elements, [${out}] ${count(out)}`);
  return out;
}

// #endregion

// #region runtime values

/**
 * Per-sample layouts of a layer output (ONNX shape without the batch → the executor's shape):
 * map [C,H,W] → [C,H,W]; tokens [T,D] → [T,D]; vector [F] → [F]; nhwc [H,W,C] → tokens [H·W, C];
 * nct [C, H·W] → the map [C,H,W]; ndt [D,T] → tokens [T,D]; gate [C,1,1] or [C,1] → a vector [C];
 * padded [C, H+pt+pb, W+pl+pr] → the unpadded map (zero padding pending for a Conv).
 */
type Layout = 'map' | 'tokens' | 'vector' | 'nhwc' | 'nct' | 'ndt' | 'gate' | 'padded';

interface DataVal {
  kind: 'data';
  /** The arch node producing it. */
  id: string;
  layout: Layout;
  /** The per-sample ONNX shape (without the batch axis). */
  shape: number[];
  /** [top, bottom, left, right] for 'padded'. */
  pads?: number[];
}

type Factor =
  | { f: 'lin'; a: number; b: number }
  | { f: 'clip'; a: number; b: number; lo: number; hi: number }
  | { f: 'sig' }
  | { f: 'erf'; k: number; a: number; b: number };

/** coef · base^pow · Π factors (each a function of base), pending until used. */
interface ExprVal {
  kind: 'expr';
  base: DataVal;
  coef: number;
  pow: number;
  factors: Factor[];
  /** The ONNX node that made it (for errors). */
  at: number;
  done?: DataVal;
}

/** One step of a symbolic attention: axis labels N (batch), T (token), S (q/k/v), H (head), E (head feature). */
interface AttnVal {
  kind: 'attn';
  stage: 'qkv' | 'part' | 'scores' | 'probs' | 'out';
  src: DataVal;
  labels: string[];
  heads: number;
  headDim: number;
  /** 0 q, 1 k, 2 v ('part'). */
  which: number;
  scale: number;
  /** 'part': L2-normalized over its last axis (XCA's q̂, k̂). */
  normalized: boolean;
  /** scores/probs/out: cross-covariance (E×E) rather than token (T×T) attention. */
  xca: boolean;
  /** XCA temperature [heads] (scores multiplied by a constant [h,1,1]). */
  temperature: number[] | null;
  /** The temperature's initializer name (it names the XCA module: `<module>.temperature`). */
  temperatureName?: string;
}

/** ‖part‖ over its last axis, in steps: x·x → Σ → √ (or ReduceL2), clamped below by Clip. */
interface NormVal {
  kind: 'norm';
  of: AttnVal;
  stage: 'sq' | 'sum' | 'l2';
}

type Val = ConstVal | DataVal | ExprVal | AttnVal | NormVal;

// #endregion

// #region tensors

function numbers(t: OnnxTensor, where: string, source: string): Nd {
  const dims = [...t.dims];
  switch (t.dataType) {
    case DATA_TYPE.FLOAT:
    case DATA_TYPE.FLOAT16:
    case DATA_TYPE.DOUBLE:
      return nd(dims, toFloat32(t, where, source), false);
    case DATA_TYPE.INT64:
    case DATA_TYPE.INT32:
      return nd(dims, toIntegers(t, where, source), true);
    case DATA_TYPE.BOOL:
    case DATA_TYPE.UINT8:
    case DATA_TYPE.INT8: {
      const n = count(dims);
      const raw = t.rawData;
      const data = raw ? Array.from(raw.subarray(0, n), (v) => (t.dataType === DATA_TYPE.INT8 && v > 127 ? v - 256 : v)) : Array.from(t.int32Data.subarray(0, n));
      return nd(dims, data, true);
    }
    default:
      throw unsupported(source, `${where} has data type ${t.dataType}; expected a float, integer or bool tensor`);
  }
}

// #endregion

/**
 * EdgeNeXt's Fourier table (SPEC-BACKBONES §6.3), [2·hidden, H, W] row-major, float64: the y-part
 * (hidden channels) then the x-part; channel c is sin (c even) or cos (c odd) of
 * (2π·(i + 1)/(n + 1e-6)) / temperature^(2·⌊c/2⌋/hidden) with i the row (y) or column (x) index.
 */
function fourierTable(hidden: number, h: number, w: number, temperature: number): number[] {
  const out = new Array<number>(2 * hidden * h * w);
  for (let part = 0; part < 2; part++) {
    for (let c = 0; c < hidden; c++) {
      const tau = temperature ** ((2 * Math.floor(c / 2)) / hidden);
      for (let y = 0; y < h; y++) {
        for (let z = 0; z < w; z++) {
          const i = part === 0 ? y : z;
          const n = part === 0 ? h : w;
          const a = ((i + 1) / (n + 1e-6)) * 2 * Math.PI / tau;
          out[((part * hidden + c) * h + y) * w + z] = c % 2 === 0 ? Math.sin(a) : Math.cos(a);
        }
      }
    }
  }
  return out;
}

const CLOSE = (x: number, y: number): boolean => Math.abs(x - y) <= 1e-6 * Math.max(1, Math.abs(y));

/** Weight inits are irrelevant (every tensor comes from the file); the builder wants some. */
const FROM_FILE: WeightInit = {
  conv: () => ({ kind: 'constant', value: 0 }),
  linearWeight: () => ({ kind: 'constant', value: 0 }),
  linearBias: () => ({ kind: 'constant', value: 0 }),
};
const ZERO: InitSpec = { kind: 'constant', value: 0 };

class Translator {
  readonly vals = new Map<string, Val>();
  readonly tensors = new Map<string, ImportedTensor>();
  readonly notes: string[] = [];
  readonly consumers = new Map<string, number[]>();
  readonly skip = new Set<number>();
  readonly used = new Set<string>();
  g!: GraphBuilder;
  private at = 0;

  constructor(readonly m: OnnxModel) {
    m.graph.node.forEach((n, i) => {
      for (const name of n.input) if (name) this.consumers.set(name, [...(this.consumers.get(name) ?? []), i]);
    });
  }

  // #region errors and naming

  fail(message: string): never {
    const node = this.m.graph.node[this.at];
    throw unsupported(this.m.source, `${node ? describeNode(this.at, node) + ': ' : ''}${message}`);
  }

  /** A module path from a PyTorch export's scoped node name (`/stages/stages.1/blocks/blocks.1/xca/qkv/MatMul` → stages.1.blocks.1.xca.qkv). */
  scope(i: number): string {
    const node = this.m.graph.node[i];
    if (!node.name.startsWith('/')) return node.name.replace(/[^\w.]/g, '_') || `n${i}`;
    const parts: string[] = [];
    for (const seg of node.name.split('/').filter(Boolean).slice(0, -1)) {
      const last = parts[parts.length - 1];
      if (last !== undefined && seg.startsWith(last + '.')) parts[parts.length - 1] = seg;
      else parts.push(seg);
    }
    return parts.join('.') || `n${i}`;
  }

  unique(base: string): string {
    let name = base;
    for (let k = 2; this.used.has(name); k++) name = `${base}_${k}`;
    this.used.add(name);
    return name;
  }

  /** The module of a layer: its weight initializer's own name when it is a state-dict key, else the node's scope. */
  module(i: number, weightInput?: string): string {
    if (weightInput && /^[A-Za-z_][\w.]*\.weight$/.test(weightInput) && !weightInput.startsWith('onnx::')) {
      return this.unique(weightInput.slice(0, -'.weight'.length));
    }
    return this.unique(this.scope(i));
  }

  id(i: number, op: string): string {
    return this.unique(`${this.scope(i)}.${op}`);
  }

  put(name: string, shape: number[], data: ArrayLike<number>): void {
    if (count(shape) !== data.length) throw new Error(`internal: ${name} [${shape}] given ${data.length} values`);
    this.tensors.set(name, { dtype: 'float32', shape, data: data instanceof Float32Array ? data : Float32Array.from(data) });
  }

  // #endregion

  // #region value access

  val(name: string): Val {
    const v = this.vals.get(name);
    if (!v) this.fail(`reads '${name}', which has no value`);
    return v;
  }

  isConst(name: string): boolean {
    return name === '' || this.vals.get(name)?.kind === 'const';
  }

  konst(name: string, what: string): ConstVal {
    const v = this.val(name);
    if (v.kind !== 'const') this.fail(`${what} must be a constant`);
    return v;
  }

  /** A constant that does not depend on the batch (a batch-expanded one gives its first sample, leading dim 1). */
  perSample(k: ConstVal, what: string): Nd {
    if (sameNd(k.a, k.b)) return k.a;
    const { a, b } = k;
    if (a.dims.length > 0 && a.dims[0] === 1 && b.dims[0] === 2 && a.dims.slice(1).join() === b.dims.slice(1).join()) {
      const n = a.data.length;
      if (a.data.every((v, i) => v === b.data[i] && v === b.data[n + i])) return a;
    }
    return this.fail(`${what} depends on the batch size`);
  }

  scalar(name: string, what: string): number {
    const x = this.perSample(this.konst(name, what), what);
    if (x.data.length === 0) this.fail(`${what} is empty`);
    if (!x.data.every((v) => v === x.data[0])) this.fail(`${what} must be a scalar (got shape [${x.dims}])`);
    return x.data[0];
  }

  ints(name: string, what: string): number[] {
    return Array.from(this.perSample(this.konst(name, what), what).data);
  }

  data(name: string, what = 'the input'): DataVal {
    const v = this.val(name);
    if (v.kind === 'expr') return this.materialize(v);
    if (v.kind === 'data') {
      if (v.layout === 'padded') this.fail(`${what} is a zero-padded map, which only a Conv can take`);
      return v;
    }
    return this.fail(`${what} must be a runtime tensor (it is ${v.kind === 'const' ? 'a constant' : 'a step of an attention computation'})`);
  }

  /** The layer (arch node) with this id. */
  nodeOf(id: string): AnyArchNode | undefined {
    return this.g.nodes.find((a) => a.id === id);
  }

  // #endregion

  // #region element-wise expressions

  expr(v: Val): ExprVal | null {
    if (v.kind === 'expr') return v;
    if (v.kind === 'data' && v.layout !== 'padded') return { kind: 'expr', base: v, coef: 1, pow: 1, factors: [], at: this.at };
    return null;
  }

  /** Folds `coef` into the single factor (so that an additive constant can be applied). */
  private single(e: ExprVal): Factor | null {
    if (e.pow === 0 && e.factors.length === 1) {
      const f = e.factors[0];
      if (f.f === 'lin' || f.f === 'erf') return { ...f, a: f.a * e.coef, b: f.b * e.coef };
    }
    if (e.pow === 1 && e.factors.length === 0) return { f: 'lin', a: e.coef, b: 0 };
    return null;
  }

  private with(e: ExprVal, change: Partial<ExprVal>): ExprVal {
    return { kind: 'expr', base: e.base, coef: e.coef, pow: e.pow, factors: e.factors, at: this.at, ...change };
  }

  addScalar(e: ExprVal, c: number): ExprVal {
    const f = this.single(e);
    if (!f || (f.f !== 'lin' && f.f !== 'erf')) return this.fail('adds a constant to an expression that is not affine');
    return this.with(e, { coef: 1, pow: 0, factors: [{ ...f, b: f.b + c }] });
  }

  clip(e: ExprVal, lo: number, hi: number): ExprVal {
    const f = this.single(e);
    if (!f || f.f !== 'lin') return this.fail('clips an expression that is not affine');
    return this.with(e, { coef: 1, pow: 0, factors: [{ f: 'clip', a: f.a, b: f.b, lo, hi }] });
  }

  plain(e: ExprVal, what: string): void {
    if (!(e.pow === 1 && e.coef === 1 && e.factors.length === 0)) this.fail(`${what} of an expression (only of a layer's output)`);
  }

  /** The layer an expression stands for, emitted once. */
  materialize(e: ExprVal): DataVal {
    if (e.done) return e.done;
    const saved = this.at;
    this.at = e.at;
    const x = e.base;
    const node = this.classify(e);
    this.at = saved;
    if (node === 'identity') return (e.done = x);
    const from = x.id;
    if (node.op === 'scale') {
      const shape = this.g.shape(from);
      const layout = x.layout === 'map' || x.layout === 'nct' ? 'channels' : 'last';
      const c = layout === 'channels' ? shape[0] : shape[shape.length - 1];
      const module = this.unique(`${this.scope(e.at)}.scale`);
      const id = this.g.layerScale(this.unique(`${module}.op`), module, 'gamma', from, layout, 1);
      this.put(`${module}.gamma`, [c], new Array<number>(c).fill(node.value));
      return (e.done = { ...x, id });
    }
    let id: string;
    if (node.op === 'average') id = this.g.average(this.id(e.at, 'average'), node.inputs);
    else if (node.op === 'hardsigmoid') id = this.g.hardSigmoid(this.id(e.at, 'hardsigmoid'), from, node.form);
    else id = this.g.same(node.op, this.id(e.at, node.op), from);
    return (e.done = { ...x, id });
  }

  private classify(e: ExprVal):
    | 'identity'
    | { op: 'relu' | 'relu6' | 'hardswish' | 'silu' | 'sigmoid' | 'gelu' }
    | { op: 'hardsigmoid'; form: 'torch' | 'keras' }
    | { op: 'average'; inputs: string[] }
    | { op: 'scale'; value: number } {
    const { coef, pow, factors } = e;
    if (pow === 1 && factors.length === 0 && CLOSE(coef, 1)) return 'identity';
    if (pow === 1 && factors.length === 0 && CLOSE(coef, 0.5)) {
      const n = this.nodeOf(e.base.id);
      if (n && n.op === 'add') return { op: 'average', inputs: [...n.inputs] };
    }
    if (pow === 1 && factors.length === 0) return { op: 'scale', value: coef };
    if (factors.length === 1) {
      const f = factors[0];
      const isClip = (a: number, b: number, lo: number, hi: number): boolean =>
        f.f === 'clip' && CLOSE(f.a * coef, a) && CLOSE(f.b * coef, b) && CLOSE(f.lo, lo) && (hi === Infinity ? f.hi === Infinity || f.hi > 3.4e38 : CLOSE(f.hi, hi));
      if (pow === 0 && CLOSE(coef, 1)) {
        if (isClip(1, 0, 0, Infinity)) return { op: 'relu' };
        if (isClip(1, 0, 0, 6)) return { op: 'relu6' };
        if (isClip(1 / 6, 0.5, 0, 1)) return { op: 'hardsigmoid', form: 'torch' };
        if (isClip(0.2, 0.5, 0, 1)) return { op: 'hardsigmoid', form: 'keras' };
        if (f.f === 'sig') return { op: 'sigmoid' };
      }
      if (pow === 1) {
        if (CLOSE(coef, 1) && isClip(1 / 6, 0.5, 0, 1)) return { op: 'hardswish' };
        if (CLOSE(coef, 1) && f.f === 'sig') return { op: 'silu' };
        if (f.f === 'erf' && CLOSE(f.k, Math.SQRT1_2) && CLOSE(coef * f.a, 0.5) && CLOSE(coef * f.b, 0.5)) return { op: 'gelu' };
      }
    }
    const text = `${coef}·x^${pow}${factors.map((f) => ` · ${f.f}(${Object.entries(f).filter(([k]) => k !== 'f').map(([k, v]) => `${k}=${v}`).join(', ')})`).join('')}`;
    return this.fail(`the element-wise expression ${text} is not one of facecuda's activations (ReLU, ReLU6, hard-sigmoid, hard-swish, SiLU, sigmoid, GELU)`);
  }

  // #endregion

  // #region driving

  run(): TranslatedOnnx {
    const { graph, source } = this.m;
    for (const t of graph.initializer) {
      const v = numbers(t, `initializer '${t.name}'`, source);
      this.vals.set(t.name, { kind: 'const', a: v, b: v });
    }
    const inputs = graph.input.filter((v) => !this.vals.has(v.name));
    if (inputs.length !== 1) throw unsupported(source, `the graph has ${inputs.length} runtime inputs; expected one image batch [N, 3, H, W]`);
    const input = inputs[0];
    const dims = input.type?.tensorType?.shape?.map((d) => d.dimValue) ?? null;
    if (!dims || dims.length !== 4 || dims[1] !== 3 || !dims[2] || dims[2] !== dims[3]) {
      throw unsupported(source, `graph input '${input.name}' has shape [${dims?.map((d) => d ?? '?').join(', ') ?? 'unknown'}]; expected [N, 3, S, S] with a fixed S`);
    }
    const size = dims[2];
    this.g = new GraphBuilder(FROM_FILE, 3, size);
    this.used.add('input');
    this.vals.set(input.name, { kind: 'data', id: 'input', layout: 'map', shape: [3, size, size] });

    graph.node.forEach((node, i) => {
      if (this.skip.has(i)) return;
      this.at = i;
      this.step(node, i);
    });
    this.at = graph.node.length;
    if (graph.output.length !== 1) throw unsupported(source, `the graph has ${graph.output.length} outputs; expected one embedding`);
    const out = this.data(graph.output[0].name, `graph output '${graph.output[0].name}'`);
    if (out.layout !== 'vector') this.fail(`the graph output has per-sample shape [${out.shape}]; expected an embedding [E]`);

    // Drop the layers nothing uses (shape-only reads, superseded adds), keeping the order.
    const live = new Set<string>([out.id]);
    for (let k = this.g.nodes.length - 1; k >= 0; k--) {
      const n = this.g.nodes[k];
      if (live.has(n.id)) for (const p of n.inputs) live.add(p);
    }
    const nodes = this.g.nodes.filter((n) => live.has(n.id));
    const names = new Set(nodes.flatMap((n) => n.tensors.map((t) => t.name)));
    for (const k of [...this.tensors.keys()]) if (!names.has(k)) this.tensors.delete(k);
    const graphName = graph.name || 'graph';
    const config: ZooConfig = { family: 'onnx', variant: graphName, embeddingSize: out.shape[0], inputSize: size };
    const preprocessing: Preprocessing = arcfacePreprocessing(size);
    const arch = deepFreeze({
      name: `onnx:${graphName}`,
      config,
      reference: `imported from ${source}`,
      nodes,
      output: out.id,
      inputShape: [3, size, size] as const,
      embeddingSize: out.shape[0],
      preprocessing,
    }) as BackboneArch<AnyArchNode>;
    inferShapes(arch);
    for (const n of nodes) for (const t of n.tensors) {
      if (!this.tensors.has(t.name) && t.dtype === 'float32') throw new Error(`internal: no value for ${t.name}`);
    }
    return { arch, tensors: this.tensors, notes: this.notes };
  }

  private step(node: OnnxNode, i: number): void {
    const op = node.domain === '' || node.domain === 'ai.onnx' ? node.opType : `${node.domain}::${node.opType}`;
    const ins = node.input;
    const out = node.output[0];
    if (op === 'Constant') {
      const v = numbers(constantValue(node, i, this.m.source), `${describeNode(i, node)}`, this.m.source);
      this.vals.set(out, { kind: 'const', a: v, b: v });
      return;
    }
    if (op === 'Identity' || op === 'Dropout') {
      this.vals.set(out, this.val(ins[0]));
      return;
    }
    if (op === 'Shape') {
      const v = this.val(ins[0]);
      if (v.kind === 'const') return this.constStep(node, op);
      // batch 1 and batch 2 (the module notes)
      const shape = this.onnxShape(v);
      const s = shapeRange(node, [1, ...shape]);
      const t = shapeRange(node, [2, ...shape]);
      this.vals.set(out, { kind: 'const', a: nd([s.length], s, true), b: nd([t.length], t, true) });
      return;
    }
    // Everything computed from constants only is a constant.
    if (ins.every((n) => this.isConst(n))) return this.constStep(node, op);
    this.dataStep(node, op, i);
  }

  /** The full per-sample ONNX shape of a runtime value. */
  private onnxShape(v: Val): number[] {
    if (v.kind === 'data') return v.shape;
    if (v.kind === 'expr') return v.base.shape;
    return this.fail('reads the shape of a step of an attention computation');
  }

  // #endregion

  // #region constant evaluation

  private constStep(node: OnnxNode, op: string): void {
    const ins = node.input.map((n) => (n === '' ? null : (this.vals.get(n) as ConstVal)));
    const ra = this.evalConst(node, op, ins.map((v) => v?.a ?? null));
    const rb = this.evalConst(node, op, ins.map((v) => v?.b ?? null));
    let origin: ConstVal['origin'];
    if (op === 'Conv' && ins[0]) {
      const x = ins[0].a;
      origin = { input: nd(x.dims.slice(1), x.data.slice(0, count(x.dims.slice(1))), false), weight: node.input[1], bias: node.input[2] || null };
    } else if (['Reshape', 'Transpose', 'Flatten', 'Identity'].includes(op)) {
      origin = ins[0]?.origin;
    }
    node.output.forEach((name, k) => {
      if (name) this.vals.set(name, { kind: 'const', a: ra[k], b: rb[k], ...(origin ? { origin } : {}) });
    });
  }

  private evalConst(node: OnnxNode, op: string, x: (Nd | null)[]): Nd[] {
    const need = (k: number): Nd => x[k] ?? this.fail(`input ${k} is missing`);
    const bad = (): never => this.fail('the operands do not broadcast');
    const a0 = (): Nd => need(0);
    const arith = (f: (p: number, q: number) => number, int?: boolean): Nd[] => {
      const p = need(0);
      const q = need(1);
      return [binary(p, q, f, int ?? (p.int && q.int), bad)];
    };
    const unary = (f: (v: number) => number): Nd[] => [nd([...a0().dims], a0().data.map(f), a0().int)];
    switch (op) {
      case 'Add': return arith((p, q) => p + q);
      case 'Sub': return arith((p, q) => p - q);
      case 'Mul': return arith((p, q) => p * q);
      case 'Div': return need(0).int && need(1).int ? arith((p, q) => Math.trunc(p / q)) : arith((p, q) => p / q);
      case 'Pow': return arith((p, q) => p ** q, need(0).int);
      case 'Max': return arith(Math.max);
      case 'Min': return arith(Math.min);
      case 'Equal': return arith((p, q) => (p === q ? 1 : 0), true);
      case 'Less': return arith((p, q) => (p < q ? 1 : 0), true);
      case 'Greater': return arith((p, q) => (p > q ? 1 : 0), true);
      case 'Mod': return arith((p, q) => p - Math.floor(p / q) * q);
      case 'Shape': {
        const d = shapeRange(node, a0().dims);
        return [nd([d.length], d, true)];
      }
      case 'Size': return [nd([], [count(a0().dims)], true)];
      case 'Sqrt': return unary(Math.sqrt);
      case 'Sin': return unary(Math.sin);
      case 'Cos': return unary(Math.cos);
      case 'Neg': return unary((v) => -v);
      case 'Floor': return unary(Math.floor);
      case 'Ceil': return unary(Math.ceil);
      case 'Abs': return unary(Math.abs);
      case 'Exp': return unary(Math.exp);
      case 'Reciprocal': return unary((v) => 1 / v);
      case 'Not': return unary((v) => (v ? 0 : 1));
      case 'Cast': {
        const to = attrInt(node, 'to', 1);
        const int = ![DATA_TYPE.FLOAT, DATA_TYPE.FLOAT16, DATA_TYPE.DOUBLE, 16].includes(to as 1);
        const v = a0();
        const data = to === DATA_TYPE.BOOL ? v.data.map((d) => (d ? 1 : 0)) : int ? v.data.map(Math.trunc) : to === DATA_TYPE.FLOAT ? v.data.map(Math.fround) : v.data;
        return [nd([...v.dims], data, int)];
      }
      case 'Where': {
        const c = need(0);
        const t = need(1);
        const f = need(2);
        const dims = broadcastDims(broadcastDims(c.dims, t.dims, bad), f.dims, bad);
        const [ic, it, iF] = [broadcastIndex(c.dims, dims), broadcastIndex(t.dims, dims), broadcastIndex(f.dims, dims)];
        return [nd(dims, Array.from({ length: count(dims) }, (_, k) => (c.data[ic(k)] ? t.data[it(k)] : f.data[iF(k)])), t.int && f.int)];
      }
      case 'Range': {
        const [s, l, d] = [need(0).data[0], need(1).data[0], need(2).data[0]];
        const n = Math.max(0, Math.ceil((l - s) / d));
        return [nd([n], Array.from({ length: n }, (_, k) => s + k * d), need(0).int)];
      }
      case 'ConstantOfShape': {
        const dims = Array.from(need(0).data);
        const value = attr(node, 'value')?.t;
        const v = value ? numbers(value, 'ConstantOfShape value', this.m.source) : nd([1], [0], false);
        return [nd(dims, new Array<number>(count(dims)).fill(v.data[0]), v.int)];
      }
      case 'Expand': {
        const v = a0();
        const dims = broadcastDims(v.dims, Array.from(need(1).data), bad);
        const ix = broadcastIndex(v.dims, dims);
        return [nd(dims, Array.from({ length: count(dims) }, (_, k) => v.data[ix(k)]), v.int)];
      }
      case 'Reshape': {
        const v = a0();
        return [nd(reshapeTarget(v.dims, Array.from(need(1).data), (w) => this.fail(w)), v.data, v.int)];
      }
      case 'Flatten': {
        const v = a0();
        const axis = normAxis(attrInt(node, 'axis', 1), v.dims.length);
        return [nd([count(v.dims.slice(0, axis)), count(v.dims.slice(axis))], v.data, v.int)];
      }
      case 'Transpose': {
        const v = a0();
        const perm = attrInts(node, 'perm') ?? v.dims.map((_, k) => v.dims.length - 1 - k);
        return [transposeNd(v, perm)];
      }
      case 'Unsqueeze': {
        const v = a0();
        const given = x[1]?.data ?? attrInts(node, 'axes') ?? [];
        const axes = given.map((a) => normAxis(a, v.dims.length + given.length));
        const dims = [...v.dims];
        for (const a of [...axes].sort((p, q) => p - q)) dims.splice(a, 0, 1);
        return [nd(dims, v.data, v.int)];
      }
      case 'Squeeze': {
        const v = a0();
        const given = x[1]?.data ?? attrInts(node, 'axes');
        const axes = given ? given.map((a) => normAxis(a, v.dims.length)) : v.dims.map((d, k) => (d === 1 ? k : -1)).filter((k) => k >= 0);
        return [nd(v.dims.filter((_, k) => !axes.includes(k)), v.data, v.int)];
      }
      case 'Concat': {
        const parts = x.filter((p): p is Nd => p !== null);
        const axis = normAxis(attrInt(node, 'axis', 0), parts[0].dims.length);
        const outer = count(parts[0].dims.slice(0, axis));
        const dims = [...parts[0].dims];
        dims[axis] = parts.reduce((s, p) => s + p.dims[axis], 0);
        const data: number[] = [];
        for (let o = 0; o < outer; o++) {
          for (const p of parts) {
            const inner = count(p.dims.slice(axis));
            for (let k = 0; k < inner; k++) data.push(p.data[o * inner + k]);
          }
        }
        return [nd(dims, data, parts.every((p) => p.int))];
      }
      case 'Gather': {
        const v = a0();
        const idx = need(1);
        const axis = normAxis(attrInt(node, 'axis', 0), v.dims.length);
        const n = v.dims[axis];
        const fixed = Array.from(idx.data, (raw) => {
          const j = raw < 0 ? raw + n : raw;
          if (j < 0 || j >= n) this.fail(`index ${raw} is out of range for an axis of ${n}`);
          return j;
        });
        return [take(v, axis, nd([...idx.dims], fixed, true))];
      }
      case 'Slice': {
        const v = a0();
        const r = v.dims.length;
        const starts = need(1).data;
        const ends = need(2).data;
        const axes = (x[3]?.data ?? starts.map((_, k) => k)).map((a) => normAxis(a, r));
        const steps = x[4]?.data ?? starts.map(() => 1);
        let cur = v;
        axes.forEach((axis, k) => {
          const n = cur.dims[axis];
          const step = steps[k];
          if (step === 0) this.fail('a Slice step of 0');
          const clampIdx = (p: number, lo: number, hi: number): number => Math.min(Math.max(p < 0 ? p + n : p, lo), hi);
          const s = step > 0 ? clampIdx(starts[k], 0, n) : clampIdx(starts[k], -1, n - 1);
          const e = step > 0 ? clampIdx(ends[k], 0, n) : clampIdx(ends[k], -1, n - 1);
          const picks: number[] = [];
          for (let j = s; step > 0 ? j < e : j > e; j += step) picks.push(j);
          cur = take(cur, axis, nd([picks.length], picks, true));
        });
        return [cur];
      }
      case 'Split': {
        const v = a0();
        const axis = normAxis(attrInt(node, 'axis', 0), v.dims.length);
        const sizes = x[1] ? Array.from(x[1].data) : attrInts(node, 'split') ?? new Array<number>(node.output.length).fill(v.dims[axis] / node.output.length);
        let start = 0;
        return sizes.map((len) => {
          const picks = Array.from({ length: len }, (_, k) => start + k);
          start += len;
          return take(v, axis, nd([len], picks, true));
        });
      }
      case 'Conv': {
        const xv = a0();
        const w = need(1);
        const b = x[2];
        const [nb, ci, h, wd] = xv.dims;
        const [co, cig, kh, kw] = w.dims;
        const group = attrInt(node, 'group', 1);
        const [sh, sw] = attrInts(node, 'strides') ?? [1, 1];
        const pads = attrInts(node, 'pads') ?? [0, 0, 0, 0];
        if (ci !== cig * group) this.fail('the weight does not fit the input channels');
        const ho = Math.floor((h + pads[0] + pads[2] - kh) / sh) + 1;
        const wo = Math.floor((wd + pads[1] + pads[3] - kw) / sw) + 1;
        const data = new Array<number>(nb * co * ho * wo).fill(0);
        const cog = co / group;
        for (let n = 0; n < nb; n++) for (let o = 0; o < co; o++) {
          const gi = Math.floor(o / cog);
          for (let y = 0; y < ho; y++) for (let z = 0; z < wo; z++) {
            let s = b ? b.data[o] : 0;
            for (let c = 0; c < cig; c++) for (let p = 0; p < kh; p++) for (let q = 0; q < kw; q++) {
              const iy = y * sh - pads[0] + p;
              const iz = z * sw - pads[1] + q;
              if (iy < 0 || iy >= h || iz < 0 || iz >= wd) continue;
              s += w.data[((o * cig + c) * kh + p) * kw + q] * xv.data[((n * ci + gi * cig + c) * h + iy) * wd + iz];
            }
            data[((n * co + o) * ho + y) * wo + z] = s;
          }
        }
        return [nd([nb, co, ho, wo], data, false)];
      }
      default:
        return this.fail(`'${op}' on constants is not supported`);
    }
  }

  // #endregion

  // #region runtime nodes

  private dataStep(node: OnnxNode, op: string, i: number): void {
    const ins = node.input;
    const out = node.output[0];
    const set = (v: Val): void => void this.vals.set(out, v);
    switch (op) {
      case 'Conv': return set(this.conv(node, i));
      case 'Pad': return set(this.pad(node));
      case 'BatchNormalization': return set(this.batchNorm(node, i));
      case 'PRelu': {
        const x = this.data(ins[0]);
        if (x.layout !== 'map' && x.layout !== 'vector') this.fail('PRelu on a value that is not a map or a vector');
        const slope = this.perSample(this.konst(ins[1], 'the slope'), 'the slope').data;
        const c = x.shape[0];
        if (slope.length !== c && slope.length !== 1) this.fail(`the slope has ${slope.length} values; expected ${c} (one per channel) or 1`);
        const module = this.module(i, ins[1]);
        const id = this.g.prelu(module, x.id);
        this.put(`${module}.weight`, [c], slope.length === 1 ? new Array<number>(c).fill(slope[0]) : slope);
        return set({ ...x, id });
      }
      case 'HardSwish': {
        const x = this.data(ins[0]);
        return set({ ...x, id: this.g.same('hardswish', this.id(i, 'hardswish'), x.id) });
      }
      case 'Relu': case 'Sigmoid': case 'HardSigmoid': case 'Clip': case 'Erf': {
        const v0 = this.val(ins[0]);
        if (op === 'Clip' && v0.kind === 'norm') {
          const lo = ins[1] ? this.scalar(ins[1], 'the minimum') : attrFloat(node, 'min', -Infinity);
          const hi = ins[2] ? this.scalar(ins[2], 'the maximum') : attr(node, 'max') ? attrFloat(node, 'max', Infinity) : Infinity;
          if (!(lo > 0 && lo <= 1e-6 && hi === Infinity)) this.fail('clamps a norm other than from below by a tiny epsilon');
          return set(v0);
        }
        const e = this.expr(v0) ?? this.fail('the input must be a runtime tensor');
        if (op === 'Relu') return set(this.clip(e, 0, Infinity));
        if (op === 'HardSigmoid') {
          const lin = this.addScalar(this.with(e, { coef: e.coef * attrFloat(node, 'alpha', 0.2) }), attrFloat(node, 'beta', 0.5));
          return set(this.clip(lin, 0, 1));
        }
        if (op === 'Clip') {
          const lo = ins[1] ? this.scalar(ins[1], 'the minimum') : attr(node, 'min') ? attrFloat(node, 'min', -Infinity) : -Infinity;
          const hi = ins[2] ? this.scalar(ins[2], 'the maximum') : attr(node, 'max') ? attrFloat(node, 'max', Infinity) : Infinity;
          return set(this.clip(e, lo, hi));
        }
        if (op === 'Sigmoid') {
          this.plain(e, 'a sigmoid');
          return set(this.with(e, { coef: 1, pow: 0, factors: [{ f: 'sig' }] }));
        }
        const f = this.single(e);
        if (!f || f.f !== 'lin' || f.b !== 0) this.fail('Erf of an expression other than c·x');
        return set(this.with(e, { coef: 1, pow: 0, factors: [{ f: 'erf', k: f.a, a: 1, b: 0 }] }));
      }
      case 'Add': case 'Sub': case 'Mul': case 'Div': return set(this.arith(node, op, i));
      case 'MatMul': case 'Gemm': return set(this.matmul(node, op, i));
      case 'LayerNormalization': return set(this.layerNorm(node, i));
      case 'GlobalAveragePool': {
        const x = this.data(ins[0]);
        if (x.layout !== 'map') this.fail('GlobalAveragePool of a value that is not an NCHW map');
        return set({ kind: 'data', id: this.g.globalAvgPool(this.id(i, 'gap'), x.id), layout: 'map', shape: [x.shape[0], 1, 1] });
      }
      case 'ReduceMean': return set(this.reduceMean(node, i));
      case 'ReduceSum': case 'ReduceL2': {
        const v = this.val(ins[0]);
        const axes = ins[1] ? this.ints(ins[1], 'the axes') : attrInts(node, 'axes');
        if (op === 'ReduceSum' && v.kind === 'norm' && v.stage === 'sq' && axes?.length === 1 && normAxis(axes[0], 4) === 3) return set({ ...v, stage: 'sum' });
        if (op === 'ReduceL2' && v.kind === 'attn' && v.stage === 'part' && axes?.length === 1 && normAxis(axes[0], 4) === 3) return set({ kind: 'norm', of: v, stage: 'l2' });
        return this.fail(`${op} is supported only as the L2 norm of q or k over their last axis (XCA)`);
      }
      case 'Sqrt': {
        const v = this.val(ins[0]);
        if (v.kind === 'norm' && v.stage === 'sum') return set({ ...v, stage: 'l2' });
        return this.fail('Sqrt is supported only in an L2 norm (XCA)');
      }
      case 'Expand': {
        const v = this.val(ins[0]);
        if (v.kind === 'norm') return set(v);
        return this.fail('Expand of a runtime tensor is not supported');
      }
      case 'Softmax': {
        const v = this.val(ins[0]);
        const axis = attrInt(node, 'axis', -1);
        if (v.kind !== 'attn' || v.stage !== 'scores' || normAxis(axis, 4) !== 3) this.fail('Softmax is supported only over the last axis of attention scores');
        return set({ ...v, stage: 'probs' });
      }
      case 'Flatten': {
        const x = this.data(ins[0]);
        const axis = normAxis(attrInt(node, 'axis', 1), x.shape.length + 1);
        if (axis === 1) return set(this.flatten(x, i));
        if (axis === 2 && x.layout === 'map') return set({ ...x, layout: 'nct', shape: [x.shape[0], x.shape[1] * x.shape[2]] });
        return this.fail(`Flatten with axis ${axis} of a [N, ${x.shape}] value`);
      }
      case 'Reshape': return set(this.reshape(node, i));
      case 'Transpose': return set(this.transpose(node, i));
      case 'Unsqueeze': case 'Squeeze': return set(this.squeeze(node, op));
      case 'Gather': return set(this.gather(node, i));
      case 'Split': {
        const v = this.val(ins[0]);
        const axis = normAxis(attrInt(node, 'axis', 0), v.kind === 'attn' ? v.labels.length : this.onnxShape(v).length + 1);
        const sizes = ins[1] ? this.ints(ins[1], 'the split sizes') : attrInts(node, 'split');
        if (v.kind === 'attn' && v.stage === 'qkv' && v.labels[axis] === 'S' && node.output.length === 3 && (!sizes || sizes.every((s) => s === 1))) {
          node.output.forEach((name, which) => this.vals.set(name, { ...v, stage: 'part', which }));
          return;
        }
        const x = this.data(ins[0]);
        if (x.layout !== 'map' || axis !== 1) this.fail('Split is supported along the channels of a map (or of q, k, v)');
        const lens = sizes ?? new Array<number>(node.output.length).fill(x.shape[0] / node.output.length);
        let start = 0;
        node.output.forEach((name, k) => {
          const id = this.g.slice(this.id(i, `slice${k}`), x.id, start, lens[k]);
          this.vals.set(name, { ...x, id, shape: [lens[k], x.shape[1], x.shape[2]] });
          start += lens[k];
        });
        return;
      }
      case 'Slice': return set(this.slice(node, i));
      case 'Concat': return set(this.concat(node, i));
      default:
        return this.fail(`'${op}' is not an operator facecuda imports on runtime tensors`);
    }
  }

  private conv(node: OnnxNode, i: number): DataVal {
    const [xi, wi, bi] = node.input;
    const v = this.val(xi);
    const x = v.kind === 'data' && v.layout === 'padded' ? v : this.data(xi);
    if (x.layout !== 'map' && x.layout !== 'padded') this.fail('Conv of a value that is not an NCHW map');
    const w = this.perSample(this.konst(wi, 'the weight'), 'the weight');
    if (w.dims.length !== 4) this.fail(`the weight has shape [${w.dims}]; expected a 2-D convolution's [O, I/groups, k, k]`);
    const [outC, inPerGroup, kh, kw] = w.dims;
    const groups = attrInt(node, 'group', 1);
    const dil = attrInts(node, 'dilations') ?? [1, 1];
    const strides = attrInts(node, 'strides') ?? [1, 1];
    const autoPad = attr(node, 'auto_pad') ? Buffer.from(attr(node, 'auto_pad')!.s).toString() : 'NOTSET';
    if (kh !== kw) this.fail(`a ${kh}×${kw} kernel; facecuda's convolutions are square`);
    if (dil.some((d) => d !== 1)) this.fail(`dilations [${dil}]; expected 1`);
    if (strides[0] !== strides[1]) this.fail(`strides [${strides}]; expected equal strides`);
    if (autoPad !== 'NOTSET' && autoPad !== 'VALID') this.fail(`auto_pad ${autoPad} is not supported (export with explicit pads)`);
    const c = x.shape[0];
    if (inPerGroup * groups !== c) this.fail(`the weight expects ${inPerGroup * groups} input channels; the input has ${c}`);
    const p = attrInts(node, 'pads') ?? [0, 0, 0, 0]; // [top, left, bottom, right]
    let pads = [p[0], p[2], p[1], p[3]];
    if (x.layout === 'padded') pads = pads.map((q, k) => q + (x.pads as number[])[k]);
    const symmetric = pads.every((q) => q === pads[0]);
    const module = this.module(i, wi);
    const bias = bi ? this.perSample(this.konst(bi, 'the bias'), 'the bias').data : null;
    const id = this.g.conv(module, x.id, outC, kh, strides[0], symmetric ? pads[0] : 0, groups, {
      bias: bias !== null, ...(symmetric ? {} : { asymmetricPadding: pads as [number, number, number, number] }),
    });
    this.put(`${module}.weight`, w.dims, w.data);
    if (bias) this.put(`${module}.bias`, [outC], bias);
    return { kind: 'data', id, layout: 'map', shape: [...this.g.shape(id)] };
  }

  private pad(node: OnnxNode): DataVal {
    const x = this.data(node.input[0]);
    const mode = attr(node, 'mode') ? Buffer.from(attr(node, 'mode')!.s).toString() : 'constant';
    const pads = node.input[1] ? this.ints(node.input[1], 'the pads') : attrInts(node, 'pads') ?? [];
    const value = node.input[2] ? this.scalar(node.input[2], 'the pad value') : 0;
    if (x.layout !== 'map' || mode !== 'constant' || value !== 0 || pads.length !== 8) this.fail('Pad is supported only as zero padding of an NCHW map before a Conv');
    if ([0, 1, 4, 5].some((k) => pads[k] !== 0) || pads.some((q) => q < 0)) this.fail(`pads [${pads}] change the batch or channel axes or crop`);
    const cons = this.consumers.get(node.output[0]) ?? [];
    if (cons.length !== 1 || this.m.graph.node[cons[0]].opType !== 'Conv') this.fail('a zero Pad must feed exactly one Conv');
    const tb = [pads[2], pads[6], pads[3], pads[7]];
    return { ...x, layout: 'padded', shape: [x.shape[0], x.shape[1] + tb[0] + tb[1], x.shape[2] + tb[2] + tb[3]], pads: tb };
  }

  private batchNorm(node: OnnxNode, i: number): DataVal {
    const x = this.data(node.input[0]);
    if (x.layout !== 'map' && x.layout !== 'vector') this.fail('BatchNormalization of a value that is not a map or a vector');
    const [scale, bias, mean, variance] = node.input.slice(1, 5).map((n, k) => this.perSample(this.konst(n, `input ${k + 1}`), `input ${k + 1}`).data);
    const op = x.layout === 'map' ? 'batchnorm2d' : 'batchnorm1d';
    const module = this.module(i, node.input[1]);
    const id = this.g.batchNorm(op, module, x.id, false, attrFloat(node, 'epsilon', 1e-5));
    const c = x.shape[0];
    this.put(`${module}.weight`, [c], scale);
    this.put(`${module}.bias`, [c], bias);
    this.put(`${module}.running_mean`, [c], mean);
    this.put(`${module}.running_var`, [c], variance);
    return { ...x, id };
  }

  private layerNorm(node: OnnxNode, i: number): DataVal {
    const x = this.data(node.input[0]);
    const axis = attrInt(node, 'axis', -1);
    if (normAxis(axis, x.shape.length + 1) !== x.shape.length) this.fail(`LayerNormalization over axis ${axis}; expected the last axis`);
    if (x.layout !== 'tokens' && x.layout !== 'nhwc' && x.layout !== 'vector') this.fail(`LayerNormalization of a [N, ${x.shape}] value`);
    return { ...x, id: this.layerNormLayer(node, i, x.id, 'last') };
  }

  /** A LayerNorm layer from a LayerNormalization node (its scale, optional bias and epsilon). */
  private layerNormLayer(ln: OnnxNode, i: number, from: string, layout: 'last' | 'channels'): string {
    const w = this.perSample(this.konst(ln.input[1], 'the scale'), 'the scale').data;
    const b = ln.input[2] ? this.perSample(this.konst(ln.input[2], 'the bias'), 'the bias').data : new Array<number>(w.length).fill(0);
    const module = this.module(i, ln.input[1]);
    const id = this.g.layerNorm(module, from, layout, attrFloat(ln, 'epsilon', 1e-5));
    this.put(`${module}.weight`, [w.length], w);
    this.put(`${module}.bias`, [b.length], b);
    return id;
  }

  /** A channels LayerNorm for Transpose(0,2,3,1) → LayerNormalization → Transpose(0,3,1,2) on a map. */
  private channelsLayerNorm(x: DataVal, transpose: OnnxNode, i: number): DataVal | null {
    const next = (name: string): number | null => {
      const c = this.consumers.get(name) ?? [];
      return c.length === 1 && !this.m.graph.output.some((o) => o.name === name) ? c[0] : null;
    };
    const li = next(transpose.output[0]);
    if (li === null) return null;
    const ln = this.m.graph.node[li];
    if (ln.opType !== 'LayerNormalization' || ![-1, 3].includes(attrInt(ln, 'axis', -1)) || ln.output.length !== 1) return null;
    const ti = next(ln.output[0]);
    if (ti === null) return null;
    const back = this.m.graph.node[ti];
    if (back.opType !== 'Transpose' || (attrInts(back, 'perm') ?? []).join() !== '0,3,1,2') return null;
    if (!this.isConst(ln.input[1]) || (ln.input[2] && !this.isConst(ln.input[2]))) return null;
    this.at = li;
    const id = this.layerNormLayer(ln, li, x.id, 'channels');
    this.skip.add(li);
    this.skip.add(ti);
    this.vals.set(back.output[0], { ...x, id });
    this.at = i;
    // The first Transpose's own output is read only by the LayerNormalization just consumed: a
    // placeholder id that no layer has (a read of it would fail in the builder, not go wrong silently).
    return { ...x, layout: 'nhwc', shape: [x.shape[1], x.shape[2], x.shape[0]], id: '(consumed)' };
  }

  private reduceMean(node: OnnxNode, i: number): DataVal {
    const x = this.data(node.input[0]);
    const axes = (node.input[1] ? this.ints(node.input[1], 'the axes') : attrInts(node, 'axes') ?? []).map((a) => normAxis(a, x.shape.length + 1)).sort();
    const keep = attrInt(node, 'keepdims', 1) === 1;
    if (x.layout === 'map' && axes.join() === '2,3') {
      const id = this.g.globalAvgPool(this.id(i, 'gap'), x.id);
      const pooled: DataVal = { kind: 'data', id, layout: 'map', shape: [x.shape[0], 1, 1] };
      return keep ? pooled : { kind: 'data', id: this.g.flatten(this.id(i, 'flatten'), null, id), layout: 'vector', shape: [x.shape[0]] };
    }
    if (x.layout === 'tokens' && axes.join() === '1' && !keep) {
      return { kind: 'data', id: this.g.tokenPool(this.id(i, 'mean'), x.id, 'mean', 0), layout: 'vector', shape: [x.shape[1]] };
    }
    return this.fail(`ReduceMean over axes [${axes}] of a [N, ${x.shape}] value (supported: the spatial axes of a map, the tokens)`);
  }

  private flatten(x: DataVal, i: number): DataVal {
    if (x.layout === 'vector') return x;
    const n = count(x.shape);
    if (x.layout === 'map' || x.layout === 'nct') return { kind: 'data', id: this.g.flatten(this.id(i, 'flatten'), null, x.id), layout: 'vector', shape: [n] };
    if (x.layout === 'gate') return { ...x, layout: 'vector', shape: [n] };
    if (x.layout === 'tokens') return { kind: 'data', id: this.g.tokenPool(this.id(i, 'flatten'), x.id, 'flatten'), layout: 'vector', shape: [n] };
    return this.fail(`flattening a [N, ${x.shape}] ${x.layout} value`);
  }

  private arith(node: OnnxNode, op: 'Add' | 'Sub' | 'Mul' | 'Div', i: number): Val {
    const [p, q] = node.input;
    const pc = this.isConst(p);
    const qc = this.isConst(q);
    const vp = this.val(p);
    const vq = this.val(q);
    // symbolic attention and norms
    if (vp.kind === 'attn' || vq.kind === 'attn' || vp.kind === 'norm' || vq.kind === 'norm') return this.attnArith(op, vp, vq, [p, q]);
    if (pc || qc) {
      const cname = pc ? p : q;
      const other = pc ? vq : vp;
      const k = this.perSample(this.konst(cname, 'the constant operand'), 'the constant operand');
      const e = this.expr(other) ?? this.fail('an operand must be a runtime tensor');
      const shape = this.onnxShape(other);
      const last = shape[shape.length - 1];
      const allEqual = k.data.length > 0 && k.data.every((v) => v === k.data[0]);
      // a bias or a per-channel scale keeps its own tensor even when its values happen to be equal
      const biasLike = op === 'Add' && this.biasTarget(other) && k.data.length === last;
      const channelLike = op === 'Mul' && k.data.length > 1 && this.perChannel(e.base, k);
      const isScalar = k.data.length === 1 || (allEqual && !biasLike && !channelLike);
      if (isScalar) {
        const c = k.data[0];
        if (op === 'Mul') return this.with(e, { coef: e.coef * c });
        if (op === 'Div') {
          if (pc) this.fail('divides a constant by a tensor');
          return this.with(e, { coef: e.coef / c });
        }
        if (op === 'Sub' && pc) this.fail('subtracts a tensor from a constant');
        return this.addScalar(e, op === 'Sub' ? -c : c);
      }
      const x = this.data(pc ? q : p);
      if (op === 'Add') return this.addConstant(x, k, i, this.konst(cname, 'the constant operand').origin);
      if (op === 'Mul') return this.layerScale(x, k, i, cname);
      return this.fail(`${op} of a runtime tensor and a non-scalar constant (only Add (bias, positional embedding) and Mul (layer scale) are supported)`);
    }
    // two runtime operands
    if (op === 'Mul') {
      const ep = this.expr(vp);
      const eq = this.expr(vq);
      if (ep && eq && ep.base.id === eq.base.id && ep.base.layout === eq.base.layout) {
        return this.with(ep, { coef: ep.coef * eq.coef, pow: ep.pow + eq.pow, factors: [...ep.factors, ...eq.factors] });
      }
      const x = this.data(p);
      const y = this.data(q);
      const [big, gate] = count(x.shape) >= count(y.shape) ? [x, y] : [y, x];
      if (big.shape.join() === gate.shape.join()) return { ...big, id: this.g.mul(this.id(i, 'mul'), big.id, gate.id) };
      if (big.layout === 'map' && (gate.layout === 'map' || gate.layout === 'gate') && gate.shape[0] === big.shape[0] && count(gate.shape) === gate.shape[0]) {
        return { ...big, id: this.g.mul(this.id(i, 'mul'), big.id, gate.id) };
      }
      return this.fail(`multiplies [N, ${x.shape}] by [N, ${y.shape}] (supported: equal shapes, or a map by a per-channel gate)`);
    }
    if (op === 'Add') {
      const x = this.data(p);
      const y = this.data(q);
      if (x.shape.join() !== y.shape.join() || x.layout !== y.layout) this.fail(`adds [N, ${x.shape}] (${x.layout}) and [N, ${y.shape}] (${y.layout})`);
      return { ...x, id: this.g.add(this.id(i, 'add'), x.id, y.id) };
    }
    return this.fail(`${op} of two runtime tensors is not supported`);
  }

  /** True when `v` is a linear layer without a bias yet (the Add is its bias). */
  private biasTarget(v: Val): boolean {
    if (v.kind !== 'data') return false;
    const n = this.nodeOf(v.id);
    return !!n && n.op === 'linear' && !n.bias;
  }

  /**
   * An EdgeNeXt Fourier positional encoding: a 1×1 conv (weight `<module>.token_projection.weight`)
   * of exactly the SPEC-BACKBONES §6.3 table of the tokens' map, added to those tokens. Returns the
   * `fourierposembed` + add it becomes (its projection a parameter again), or null.
   */
  private fourier(x: DataVal, origin: NonNullable<ConstVal['origin']>, i: number): DataVal | null {
    const named = /^([A-Za-z_][\w.]*)\.token_projection\.weight$/.exec(origin.weight);
    const tokenNode = this.nodeOf(x.id);
    if (!named || !tokenNode || tokenNode.op !== 'totokens' || x.layout !== 'tokens') return null;
    const [c2, h, w] = origin.input.dims;
    const hidden = c2 / 2;
    const map = tokenNode.inputs[0];
    const [, mh, mw] = this.g.shape(map);
    if (origin.input.dims.length !== 3 || !Number.isInteger(hidden) || h !== mh || w !== mw) return null;
    const want = fourierTable(hidden, h, w, 10000);
    for (let j = 0; j < want.length; j++) if (Math.abs(want[j] - origin.input.data[j]) > 1e-5) return null;
    const weight = this.perSample(this.konst(origin.weight, 'the projection weight'), 'the projection weight');
    const dim = weight.dims[0];
    if (weight.dims.join() !== [dim, c2, 1, 1].join() || dim !== x.shape[1]) return null;
    const bias = origin.bias ? this.perSample(this.konst(origin.bias, 'the projection bias'), 'the projection bias').data : new Array<number>(dim).fill(0);
    const module = named[1];
    if (this.used.has(module) || this.tensors.has(`${module}.token_projection.weight`)) return null;
    this.used.add(module);
    const pos = this.g.fourierPosEmbed(module, map, dim, hidden, 10000);
    this.put(`${module}.token_projection.weight`, weight.dims, weight.data);
    this.put(`${module}.token_projection.bias`, [dim], bias);
    this.notes.push(`${module}: the Fourier positional encoding computed in the graph is the §6.3 table (hidden ${hidden}); imported as fourierposembed`);
    return { ...x, id: this.g.add(this.id(i, 'pos_add'), x.id, pos) };
  }

  private addConstant(x: DataVal, k: Nd, i: number, origin?: ConstVal['origin']): DataVal {
    if (origin) {
      const f = this.fourier(x, origin, i);
      if (f) return f;
    }
    const node = this.nodeOf(x.id);
    const last = x.shape[x.shape.length - 1];
    if (node && node.op === 'linear' && !node.bias && k.data.length === last && k.dims.slice(0, -1).every((d) => d === 1)) {
      // the bias of the MatMul before: rebuild the linear with a bias
      const module = node.module as string;
      const weight = this.tensors.get(`${module}.weight`) as ImportedTensor;
      const idx = this.g.nodes.indexOf(node);
      const rebuilt = { ...node, bias: true, tensors: [...node.tensors, { ...node.tensors[0], name: `${module}.bias`, role: 'bias' as const, shape: [last], init: ZERO }] };
      this.g.nodes[idx] = rebuilt as AnyArchNode;
      this.put(`${module}.weight`, weight.shape, weight.data);
      this.put(`${module}.bias`, [last], k.data);
      return x;
    }
    const per = k.dims.length > x.shape.length ? k.dims.slice(k.dims.length - x.shape.length) : k.dims;
    if ((x.layout === 'tokens' || x.layout === 'nhwc') && k.dims.slice(0, k.dims.length - x.shape.length).every((d) => d === 1) && per.join() === x.shape.join()) {
      const id = this.g.posEmbed(this.unique('pos_embed'), x.id, ZERO);
      const [t, d] = this.g.shape(id);
      this.put('pos_embed', [1, t, d], k.data);
      return { ...x, id };
    }
    return this.fail(`adds a constant of shape [${k.dims}] to a [N, ${x.shape}] value (supported: a linear layer's bias [${last}], a positional embedding of the value's shape)`);
  }

  /** 'last' or 'channels' when `k` scales `x` per channel, else null. */
  private perChannel(x: DataVal, k: Nd): 'last' | 'channels' | null {
    const c = k.data.length;
    if ((x.layout === 'tokens' || x.layout === 'nhwc' || x.layout === 'vector') && c === x.shape[x.shape.length - 1] && k.dims.slice(0, -1).every((d) => d === 1)) return 'last';
    if (x.layout === 'map' && k.dims.length >= 3 && c === x.shape[0] && k.dims.slice(-2).every((d) => d === 1) && k.dims.slice(0, -3).every((d) => d === 1)) return 'channels';
    return null;
  }

  private layerScale(x: DataVal, k: Nd, i: number, cname: string): DataVal {
    const c = k.data.length;
    const layout = this.perChannel(x, k);
    if (!layout) this.fail(`multiplies a [N, ${x.shape}] value by a constant of shape [${k.dims}] (supported: a scalar, or a per-channel scale)`);
    // the tensor keeps the file's name (`<module>.gamma` / `.gamma_xca`, EdgeNeXt's) when it has one
    const named = /^[A-Za-z_][\w.]*\.(gamma|gamma_xca)$/.exec(cname);
    const role = named ? (named[1] as 'gamma' | 'gamma_xca') : 'gamma';
    const module = named && !this.tensors.has(cname) ? cname.slice(0, -role.length - 1) : this.unique(this.scope(i));
    const id = this.g.layerScale(this.unique(`${module}.${role}.scale`), module, role, x.id, layout, 1);
    this.put(`${module}.${role}`, [c], k.data);
    return { ...x, id };
  }

  private matmul(node: OnnxNode, op: 'MatMul' | 'Gemm', i: number): Val {
    const [p, q, r] = node.input;
    const vp = this.val(p);
    const vq = this.val(q);
    if (vp.kind === 'attn' && vq.kind === 'attn') return this.attnMatmul(vp, vq);
    if (!this.isConst(q)) this.fail(`${op} of two runtime tensors outside an attention`);
    const x = this.data(p);
    if (x.layout !== 'tokens' && x.layout !== 'nhwc' && x.layout !== 'vector') this.fail(`${op} of a [N, ${x.shape}] value (expected a vector or tokens)`);
    const w = this.perSample(this.konst(q, 'the weight'), 'the weight');
    if (w.dims.length !== 2) this.fail(`the weight has shape [${w.dims}]; expected a matrix`);
    const transB = op === 'Gemm' && attrInt(node, 'transB', 0) === 1;
    if (op === 'Gemm' && (attrInt(node, 'transA', 0) !== 0 || x.layout !== 'vector')) this.fail('Gemm with transA or of a non-vector input');
    const [k, n] = transB ? [w.dims[1], w.dims[0]] : w.dims;
    const inF = x.shape[x.shape.length - 1];
    if (k !== inF) this.fail(`the weight has ${k} input features; the value has ${inF}`);
    const alpha = op === 'Gemm' ? attrFloat(node, 'alpha', 1) : 1;
    const beta = op === 'Gemm' ? attrFloat(node, 'beta', 1) : 1;
    // [out, in] as the linear layer stores it (a Gemm with transB is that already)
    let weight: Float32Array;
    if (transB && alpha === 1 && w.data instanceof Float32Array) {
      weight = w.data;
    } else {
      weight = new Float32Array(n * k);
      const src = w.data;
      for (let j = 0; j < k; j++) {
        const row = j * n;
        for (let o = 0; o < n; o++) weight[o * k + j] = transB ? alpha * src[o * k + j] : alpha * src[row + o];
      }
    }
    let bias: number[] | null = null;
    if (op === 'Gemm' && r) {
      const b = this.perSample(this.konst(r, 'the bias'), 'the bias');
      if (b.data.length !== n && b.data.length !== 1) this.fail(`the bias has ${b.data.length} values; expected ${n}`);
      bias = b.data.length === 1 ? new Array<number>(n).fill(beta * b.data[0]) : Array.from(b.data, (v) => beta * v);
    }
    const module = this.module(i, transB && !q.startsWith('onnx::') ? q : undefined);
    const id = this.g.linear(module, x.id, n, bias !== null);
    this.put(`${module}.weight`, [n, k], weight);
    if (bias) this.put(`${module}.bias`, [n], bias);
    const shape = [...x.shape.slice(0, -1), n];
    return { ...x, id, shape };
  }

  private reshape(node: OnnxNode, i: number): Val {
    const v = this.val(node.input[0]);
    const target = this.konst(node.input[1], 'the target shape');
    const full = (shape: number[], batch: number): number[] => [batch, ...shape];
    const resolve = (input: number[], t: Nd): number[] => reshapeTarget(input, Array.from(t.data), (w) => this.fail(w));
    if (v.kind === 'attn') return this.attnReshape(v, target);
    const x = this.data(node.input[0]);
    const a = resolve(full(x.shape, 1), target.a);
    const b = resolve(full(x.shape, 2), target.b);
    if (a[0] !== 1 || b[0] !== 2 || a.slice(1).join() !== b.slice(1).join()) this.fail('the reshape moves the batch axis (expected it kept first)');
    const to = a.slice(1);
    if (to.join() === x.shape.join()) return x;
    const { layout, shape } = x;
    if (to.length === 1) return this.flatten(x, i);
    if (layout === 'map' && to.length === 2 && to[0] === shape[0]) return { ...x, layout: 'nct', shape: to };
    if (layout === 'nct' && to.length === 3 && to[0] === shape[0] && to[1] * to[2] === shape[1]) {
      const [, h, w] = this.g.shape(x.id);
      if (h === to[1] && w === to[2]) return { ...x, layout: 'map', shape: to };
    }
    if (layout === 'ndt' && to.length === 3 && to[0] === shape[0] && to[1] * to[2] === shape[1]) {
      return { kind: 'data', id: this.g.toMap(this.id(i, 'tomap'), x.id, to[1], to[2]), layout: 'map', shape: to };
    }
    if ((layout === 'tokens' || layout === 'nhwc') && to.length === 4 && to[1] === 3 && to[2] * to[3] * 3 === shape[shape.length - 1]) {
      const t = count(shape.slice(0, -1));
      if (to[0] !== t) this.fail(`reshapes [N, ${shape}] to [N, ${to}]`);
      const stored = layout === 'nhwc' ? { ...x, layout: 'tokens' as const, shape: [t, shape[shape.length - 1]] } : x;
      return { kind: 'attn', stage: 'qkv', src: stored, labels: ['N', 'T', 'S', 'H', 'E'], heads: to[2], headDim: to[3], which: -1, scale: 1, normalized: false, xca: false, temperature: null };
    }
    if (layout === 'vector' && to.length >= 2 && to[0] === shape[0] && to.slice(1).every((d) => d === 1)) return { ...x, layout: 'gate', shape: to };
    if (layout === 'gate' && to.every((d, k) => k === 0 || d === 1) && to[0] === shape[0]) return { ...x, shape: to };
    return this.fail(`reshapes a [N, ${shape}] ${layout} value to [N, ${to}]`);
  }

  private transpose(node: OnnxNode, i: number): Val {
    const v = this.val(node.input[0]);
    const perm = attrInts(node, 'perm');
    if (v.kind === 'attn') {
      const p = perm ?? v.labels.map((_, k) => v.labels.length - 1 - k);
      if (p.length !== v.labels.length) this.fail('the permutation does not fit the value');
      return { ...v, labels: p.map((k) => v.labels[k]) };
    }
    const x = this.data(node.input[0]);
    const p = (perm ?? [...x.shape, 0].map((_, k) => x.shape.length - k)).join();
    if (p === [...x.shape, 0].map((_, k) => k).join()) return x;
    if (x.layout === 'map' && p === '0,2,3,1') {
      const fused = this.channelsLayerNorm(x, node, i);
      if (fused) return fused;
      return { kind: 'data', id: this.g.toTokens(this.id(i, 'totokens'), x.id), layout: 'nhwc', shape: [x.shape[1], x.shape[2], x.shape[0]] };
    }
    if (x.layout === 'nhwc' && p === '0,3,1,2') {
      const [h, w, c] = x.shape;
      return { kind: 'data', id: this.g.toMap(this.id(i, 'tomap'), x.id, h, w), layout: 'map', shape: [c, h, w] };
    }
    if (x.layout === 'nct' && p === '0,2,1') {
      return { kind: 'data', id: this.g.toTokens(this.id(i, 'totokens'), x.id), layout: 'tokens', shape: [x.shape[1], x.shape[0]] };
    }
    if (x.layout === 'tokens' && p === '0,2,1') return { ...x, layout: 'ndt', shape: [x.shape[1], x.shape[0]] };
    if (x.layout === 'ndt' && p === '0,2,1') return { ...x, layout: 'tokens', shape: [x.shape[1], x.shape[0]] };
    return this.fail(`transposes a [N, ${x.shape}] ${x.layout} value by [${p}]`);
  }

  private squeeze(node: OnnxNode, op: 'Unsqueeze' | 'Squeeze'): Val {
    const v = this.val(node.input[0]);
    const axes = node.input[1] ? this.ints(node.input[1], 'the axes') : attrInts(node, 'axes') ?? [];
    if (v.kind === 'attn') {
      if (op === 'Squeeze' && v.stage === 'part' && axes.length === 1 && v.labels[normAxis(axes[0], v.labels.length)] === 'S') {
        return { ...v, labels: v.labels.filter((_, k) => k !== normAxis(axes[0], v.labels.length)) };
      }
      return this.fail(`${op} of a step of an attention computation`);
    }
    if (v.kind === 'norm') return v;
    const x = this.data(node.input[0]);
    const rank = x.shape.length + 1;
    if (op === 'Unsqueeze') {
      const outRank = rank + axes.length;
      const ax = axes.map((a) => normAxis(a, outRank));
      if ((x.layout === 'vector' || x.layout === 'gate') && ax.every((a) => a >= 2)) {
        const full = [-1, ...x.shape];
        for (const a of [...ax].sort((p, q) => p - q)) full.splice(a, 0, 1);
        const shape = full.slice(1);
        if (shape[0] === x.shape[0] && shape.slice(1).every((d) => d === 1)) return { ...x, layout: 'gate', shape };
      }
      return this.fail(`Unsqueeze of a [N, ${x.shape}] value at [${axes}]`);
    }
    const ax = axes.map((a) => normAxis(a, rank));
    if ((x.layout === 'gate' || x.layout === 'map') && ax.every((a) => a >= 2 && x.shape[a - 1] === 1)) {
      const shape = x.shape.filter((_, k) => !ax.includes(k + 1));
      if (shape.length === 1) return x.layout === 'map' ? this.flatten(x, this.at) : { ...x, layout: 'vector', shape };
      return { ...x, layout: 'gate', shape };
    }
    return this.fail(`Squeeze of a [N, ${x.shape}] value at [${axes}]`);
  }

  private gather(node: OnnxNode, i: number): Val {
    const v = this.val(node.input[0]);
    const axis = attrInt(node, 'axis', 0);
    const idx = this.perSample(this.konst(node.input[1], 'the indices'), 'the indices');
    if (v.kind === 'attn') {
      const a = normAxis(axis, v.labels.length);
      if (v.stage === 'qkv' && v.labels[a] === 'S' && idx.dims.length === 0) {
        return { ...v, stage: 'part', which: idx.data[0], labels: v.labels.filter((_, k) => k !== a) };
      }
      return this.fail('Gather of a step of an attention computation (expected q, k or v picked from qkv)');
    }
    const x = this.data(node.input[0]);
    if (x.layout === 'tokens' && normAxis(axis, 3) === 1 && idx.dims.length === 0) {
      const t = idx.data[0] < 0 ? idx.data[0] + x.shape[0] : idx.data[0];
      return { kind: 'data', id: this.g.tokenPool(this.id(i, `token${t}`), x.id, 'token', t), layout: 'vector', shape: [x.shape[1]] };
    }
    return this.fail(`Gather along axis ${axis} of a [N, ${x.shape}] value (supported: one token of [N, T, D])`);
  }

  private slice(node: OnnxNode, i: number): Val {
    const x = this.data(node.input[0]);
    const starts = this.ints(node.input[1], 'the starts');
    const ends = this.ints(node.input[2], 'the ends');
    const axes = node.input[3] ? this.ints(node.input[3], 'the axes') : starts.map((_, k) => k);
    const steps = node.input[4] ? this.ints(node.input[4], 'the steps') : starts.map(() => 1);
    const rank = x.shape.length + 1;
    let cur = x;
    axes.forEach((raw, k) => {
      const axis = normAxis(raw, rank);
      const n = axis === 0 ? Infinity : cur.shape[axis - 1];
      const clampIdx = (p: number): number => Math.min(Math.max(p < 0 ? p + n : p, 0), n);
      const s = clampIdx(starts[k]);
      const e = clampIdx(ends[k]);
      if (axis === 0) {
        if (s === 0 && e === Infinity && steps[k] === 1) return;
        this.fail('slices the batch axis');
      }
      if (s === 0 && e === n && steps[k] === 1) return;
      if (cur.layout !== 'map' || axis !== 1 || steps[k] !== 1 || e <= s) this.fail(`slices [${s}, ${e}) step ${steps[k]} of axis ${axis} of a [N, ${cur.shape}] ${cur.layout} value (supported: channels of a map)`);
      cur = { ...cur, id: this.g.slice(this.id(i, 'slice'), cur.id, s, e - s), shape: [e - s, cur.shape[1], cur.shape[2]] };
    });
    return cur;
  }

  private concat(node: OnnxNode, i: number): Val {
    const axis = attrInt(node, 'axis', 0);
    const ins = node.input.filter(Boolean);
    const consts = ins.filter((n) => this.isConst(n));
    if (consts.length > 0) {
      // class (and distillation) tokens before the patch tokens
      const x = this.data(ins[ins.length - 1]);
      if (!(x.layout === 'tokens' && normAxis(axis, 3) === 1 && consts.length === ins.length - 1 && consts.length <= 2)) {
        this.fail('Concat of constants and runtime tensors (supported: 1 or 2 learned tokens before tokens [N, T, D])');
      }
      const d = x.shape[1];
      const toks = consts.map((n, k) => {
        const t = this.perSample(this.konst(n, `token ${k}`), `token ${k}`);
        if (t.data.length !== d) this.fail(`token ${k} has ${t.data.length} values; expected ${d}`);
        return t.data;
      });
      const id = this.g.prependTokens(this.unique(this.id(i, 'tokens')), x.id, toks.length as 1 | 2, [ZERO, ZERO]);
      this.put('cls_token', [1, 1, d], toks[0]);
      if (toks.length === 2) this.put('dist_token', [1, 1, d], toks[1]);
      return { ...x, id, shape: [x.shape[0] + toks.length, d] };
    }
    const xs = ins.map((n) => this.data(n));
    if (!xs.every((x) => x.layout === 'map') || normAxis(axis, 4) !== 1) this.fail('Concat of runtime tensors is supported along the channels of maps');
    const id = this.g.concat(this.id(i, 'concat'), xs.map((x) => x.id));
    return { kind: 'data', id, layout: 'map', shape: [...this.g.shape(id)] };
  }

  // #endregion

  // #region attention

  private attnArith(op: string, p: Val, q: Val, names: string[]): Val {
    if (op === 'Mul' && p.kind === 'attn' && q.kind === 'attn' && p === q && p.stage === 'part') return { kind: 'norm', of: p, stage: 'sq' };
    if (op === 'Div' && p.kind === 'attn' && q.kind === 'norm' && q.stage === 'l2' && q.of === p && p.stage === 'part') return { ...p, normalized: true };
    const [a, k] = p.kind === 'attn' ? [p, q] : [q as AttnVal, p];
    if (a.kind !== 'attn' || k.kind !== 'const') return this.fail(`${op} in an attention computation other than a scale or an L2 normalization`);
    const c = this.perSample(k, 'the scale');
    const isScalar = c.data.every((v) => v === c.data[0]);
    if ((op === 'Mul' || (op === 'Div' && p === a)) && isScalar) {
      const s = op === 'Mul' ? c.data[0] : 1 / c.data[0];
      if (a.stage === 'part' || a.stage === 'scores') return { ...a, scale: a.scale * s };
    }
    if (op === 'Mul' && a.stage === 'scores' && a.xca && c.data.length === a.heads && count(c.dims) === a.heads && c.dims[c.dims.length - 3] === a.heads) {
      return { ...a, temperature: Array.from(c.data), temperatureName: names[p === a ? 1 : 0] };
    }
    return this.fail(`${op} of a step of an attention computation by a constant of shape [${c.dims}]`);
  }

  private attnMatmul(x: AttnVal, y: AttnVal): AttnVal {
    if (x.src !== y.src && x.src.id !== y.src.id) this.fail('multiplies steps of two different attention computations');
    const [b0, b1] = [x.labels.slice(0, 2).join(), y.labels.slice(0, 2).join()];
    if (b0 !== 'N,H' || b1 !== 'N,H') this.fail(`an attention product over axes [${x.labels}] × [${y.labels}] (expected batch and head first)`);
    if (x.stage === 'part' && y.stage === 'part' && x.which === 0 && y.which === 1 && x.labels[3] === y.labels[2]) {
      const contracted = x.labels[3];
      const xca = contracted === 'T';
      if (xca && !(x.normalized && y.normalized)) this.fail('a cross-covariance attention without L2-normalized q and k');
      if (!xca && contracted !== 'E') this.fail('q·kᵀ contracts neither the head features nor the tokens');
      return { ...x, stage: 'scores', labels: ['N', 'H', x.labels[2], y.labels[3]], scale: x.scale * y.scale, xca };
    }
    if (x.stage === 'probs' && y.stage === 'part' && y.which === 2 && x.labels[3] === y.labels[2] && y.scale === 1) {
      if (!x.xca && y.labels.join() !== 'N,H,T,E') this.fail(`attention probabilities times v over [${y.labels}]`);
      if (x.xca && y.labels.join() !== 'N,H,E,T') this.fail(`cross-covariance probabilities times v over [${y.labels}]`);
      return { ...x, stage: 'out', labels: ['N', 'H', x.labels[2], y.labels[3]] };
    }
    return this.fail(`an attention product of ${x.stage} (${x.which}) [${x.labels}] and ${y.stage} (${y.which}) [${y.labels}] in an order facecuda does not know`);
  }

  private attnReshape(v: AttnVal, target: ConstVal): DataVal {
    const t = this.perSample({ kind: 'const', a: nd([target.a.data.length], target.a.data.slice(1), true), b: nd([target.b.data.length], target.b.data.slice(1), true) }, 'the target shape');
    if (v.stage !== 'out' || v.labels.join() !== 'N,T,H,E') this.fail(`reshapes a ${v.stage} step of an attention computation with axes [${v.labels}]`);
    const [tokens, qkvWidth] = this.g.shape(v.src.id);
    const dim = v.heads * v.headDim;
    if (t.data.length !== 2 || !(t.data[0] === tokens || t.data[0] === -1 || t.data[0] === 0) || !(t.data[1] === dim || t.data[1] === -1)) this.fail(`reshapes the attention output to [N, ${t.data}]; expected [N, ${tokens}, ${dim}]`);
    if (qkvWidth !== 3 * dim) this.fail(`qkv has ${qkvWidth} features; expected ${3 * dim}`);
    const named = v.temperatureName && /^[A-Za-z_][\w.]*\.temperature$/.test(v.temperatureName) ? v.temperatureName.slice(0, -'.temperature'.length) : null;
    const module = this.unique(named ?? this.scope(this.at));
    let id: string;
    if (v.xca) {
      if (!v.temperature) this.fail('a cross-covariance attention without a temperature');
      if (Math.abs(v.scale - 1) > 1e-6) this.fail(`a cross-covariance attention with an extra scale ${v.scale}`);
      id = this.g.xca(module, v.src.id, dim, v.heads);
      this.put(`${module}.temperature`, [v.heads, 1, 1], v.temperature);
    } else {
      if (v.temperature) this.fail('a per-head temperature on token attention');
      id = this.g.attention(module, v.src.id, dim, v.heads, v.scale);
    }
    return { kind: 'data', id, layout: 'tokens', shape: [tokens, dim] };
  }

  // #endregion
}

/**
 * Translates an ONNX inference graph into a facecuda backbone graph and its tensors (see the module
 * notes). Validates the model first when it was not read by parseOnnx/readOnnx.
 *
 * @throws `CORRUPT_FILE` for an invalid graph; `NOT_IMPLEMENTED` naming the first node that has no
 *   facecuda equivalent, with what was expected
 * @example
 * const t = translateOnnx(parseOnnx(bytes, 'vit.onnx'));
 * const model = Backbone.fromArch(t.arch); await model.loadStateDict(t.tensors);
 */
export function translateOnnx(model: OnnxModel | OnnxModelProto): TranslatedOnnx {
  const given = (model as Partial<OnnxModel>).source;
  const source = typeof given === 'string' ? given : 'ONNX model';
  if (typeof given !== 'string') validateModel(model, source);
  const m: OnnxModel = { ...(model as OnnxModel), source };
  if (!m.graph) throw corrupt(source, 'ModelProto.graph is missing');
  return new Translator(m).run();
}
