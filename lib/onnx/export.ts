/**
 * Builds an ONNX graph from a backbone arch and its tensors, laid out as torch.onnx.export lays out
 * arcface_torch models in eval mode: Conv (with the following BatchNorm folded in, by default),
 * BatchNormalization, PRelu (slopes [C, 1, 1], as the exporter unsqueezes them), Add, Flatten, Gemm
 * (transB = 1); dropout left out; initializers named like the exporter's (`onnx::Conv_123`).
 *
 * It exists so that tests can make ONNX files of every arch without PyTorch (this importer's tests
 * now, onnxruntime parity later). Folding is done in float64.
 */
import { ArchNode, BASE_ARCH_OPS, BackboneArch, BatchNorm1dNode, BatchNorm2dNode } from '../backbones/arch';
import { FacecudaError } from '../errors';
import { ATTRIBUTE_TYPE, DATA_TYPE, emptyAttribute, OnnxAttribute, OnnxModelProto, OnnxNode, OnnxTensor } from './proto';

/** Options of {@link archToOnnx}. */
export interface ArchToOnnxOptions {
  /** Fold every conv→BatchNorm2d pair into a Conv with a bias (default true, as torch.onnx.export in eval mode). */
  foldBatchNorm?: boolean;
  /** Conv ids whose BatchNorm stays unfolded even with foldBatchNorm (to build mixed files). */
  keepUnfolded?: readonly string[];
  /** Also fold the linear→BatchNorm1d pair into the Gemm (default false). */
  foldLinearBatchNorm?: boolean;
  /** Shape of the PRelu slopes: 'C11' [C, 1, 1] (default, PyTorch), 'C' [C], '1C11' [1, C, 1, 1]. */
  preluSlopeShape?: 'C11' | 'C' | '1C11';
  /** Put Sub(mean) → Mul(1/std) before the first conv (per channel). */
  inputNormalization?: { mean: readonly number[]; std: readonly number[] };
  /** The linear layer as 'gemm' (default) or 'matmul' (MatMul + Add). */
  linear?: 'gemm' | 'matmul';
  /** The flatten as 'flatten' (default) or 'reshape' (Reshape to [0, -1]). */
  flatten?: 'flatten' | 'reshape';
  /** BatchNormalization epsilon written (default: the arch's). */
  epsilon?: number;
  /** Opset version (default 13). */
  opsetVersion?: number;
  /** Batch dimension of the input and output: a number, or a name (default 'batch'). */
  batch?: number | string;
}

function floatTensor(name: string, dims: number[], data: Float32Array): OnnxTensor {
  const raw = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return { dims, dataType: DATA_TYPE.FLOAT, floatData: new Float32Array(0), int32Data: new Int32Array(0), int64Data: [], name, rawData: raw };
}

function ints(name: string, values: number[]): OnnxAttribute {
  return { ...emptyAttribute(), name, type: ATTRIBUTE_TYPE.INTS, ints: values };
}

function int(name: string, value: number): OnnxAttribute {
  return { ...emptyAttribute(), name, type: ATTRIBUTE_TYPE.INT, i: value };
}

function float(name: string, value: number): OnnxAttribute {
  return { ...emptyAttribute(), name, type: ATTRIBUTE_TYPE.FLOAT, f: value };
}

/**
 * An ONNX model of `arch` with the given tensors (state-dict names → float32 data, every float
 * tensor of the arch; `num_batches_tracked` is not needed).
 *
 * @returns the model, and the tensors as the file holds them (folded layers' weight and bias under
 *   the layer's names, with no entries for their BatchNorms), for comparison with an importer.
 * @example
 * const { model } = archToOnnx(iresnetArch(18), tensors);
 * await fs.promises.writeFile('r18.onnx', encodeOnnxModel(model));
 */
export function archToOnnx(
  arch: BackboneArch,
  tensors: ReadonlyMap<string, Float32Array>,
  options: ArchToOnnxOptions = {},
): { model: OnnxModelProto; fileTensors: Map<string, Float32Array> } {
  // The exporter writes the first batch's ops (IResNet, MobileFaceNet); a graph of the second batch
  // (SPEC-BACKBONES: activations, LayerNorm, attention, tokens, ...) is refused, naming the node.
  const unsupported = (arch.nodes as readonly { id: string; op: string }[]).find((n) => !BASE_ARCH_OPS.includes(n.op as ArchNode['op']));
  if (unsupported) {
    throw new FacecudaError('NOT_IMPLEMENTED', `ONNX export of op '${unsupported.op}' (node '${unsupported.id}' of '${arch.name}') is not supported yet`);
  }
  const fold = options.foldBatchNorm ?? true;
  const keep = new Set(options.keepUnfolded ?? []);
  const slopeShape = options.preluSlopeShape ?? 'C11';
  const batch = options.batch ?? 'batch';
  const nodes: OnnxNode[] = [];
  const initializers: OnnxTensor[] = [];
  const fileTensors = new Map<string, Float32Array>();
  let counter = 0;
  const valueOf = new Map<string, string>();
  const get = (name: string): Float32Array => {
    const t = tensors.get(name);
    if (!t) throw new FacecudaError('INVALID_ARGUMENT', `archToOnnx: tensor '${name}' is missing`);
    return t;
  };
  const init = (op: string, dims: number[], data: Float32Array): string => {
    const name = `onnx::${op}_${counter++}`;
    initializers.push(floatTensor(name, dims, data));
    return name;
  };
  const node = (opType: string, id: string, input: string[], attribute: OnnxAttribute[] = []): string => {
    const out = `/${id.replace(/\./g, '/')}/${opType}_output_0`;
    nodes.push({ input, output: [out], name: `/${id.replace(/\./g, '/')}/${opType}`, opType, domain: '', attribute });
    return out;
  };
  const next = (n: ArchNode): ArchNode | undefined => arch.nodes.find((m) => m.inputs[0] === n.id && (m.op === 'batchnorm2d' || m.op === 'batchnorm1d'));
  const eps = (bn: BatchNorm2dNode | BatchNorm1dNode): number => options.epsilon ?? bn.eps;
  const folded = new Set<string>();
  const foldInto = (layer: string, bn: BatchNorm2dNode | BatchNorm1dNode, weight: Float32Array, bias: Float32Array | null, outC: number) => {
    const g = get(`${bn.id}.weight`);
    const b = get(`${bn.id}.bias`);
    const mean = get(`${bn.id}.running_mean`);
    const variance = get(`${bn.id}.running_var`);
    const per = weight.length / outC;
    const w = new Float32Array(weight.length);
    const c = new Float32Array(outC);
    for (let o = 0; o < outC; o++) {
      const s = g[o] / Math.sqrt(variance[o] + bn.eps);
      for (let k = 0; k < per; k++) w[o * per + k] = weight[o * per + k] * s;
      c[o] = b[o] + ((bias ? bias[o] : 0) - mean[o]) * s;
    }
    folded.add(bn.id);
    fileTensors.set(`${layer}.weight`, w);
    fileTensors.set(`${layer}.bias`, c);
    return { w, c };
  };

  let x = 'input.1';
  if (options.inputNormalization) {
    const { mean, std } = options.inputNormalization;
    x = node('Sub', 'normalize.sub', [x, init('Sub', [1, 3, 1, 1], Float32Array.from(mean))]);
    x = node('Mul', 'normalize.mul', [x, init('Mul', [1, 3, 1, 1], Float32Array.from(std, (s) => 1 / s))]);
  }
  valueOf.set('input', x);
  for (const n of arch.nodes) {
    const src = (k = 0): string => valueOf.get(n.inputs[k]) as string;
    switch (n.op) {
      case 'input':
        break;
      case 'conv2d': {
        const wShape = [n.outC, n.inC / n.groups, n.kernel, n.kernel];
        const bn = next(n) as BatchNorm2dNode | undefined;
        const attrs = [
          ints('dilations', [1, 1]), int('group', n.groups), ints('kernel_shape', [n.kernel, n.kernel]),
          ints('pads', [n.padding, n.padding, n.padding, n.padding]), ints('strides', [n.stride, n.stride]),
        ];
        const convBias = n.bias ? get(`${n.id}.bias`) : null;  // a folded graph's (foldBatchNorms)
        if (fold && bn && !keep.has(n.id)) {
          const { w, c } = foldInto(n.id, bn, get(`${n.id}.weight`), convBias, n.outC);
          const out = node('Conv', n.id, [src(), init('Conv', wShape, w), init('Conv', [n.outC], c)], attrs);
          valueOf.set(n.id, out);
          valueOf.set(bn.id, out);
        } else {
          fileTensors.set(`${n.id}.weight`, get(`${n.id}.weight`));
          const ins = [src(), init('Conv', wShape, get(`${n.id}.weight`))];
          if (convBias) {
            fileTensors.set(`${n.id}.bias`, convBias);
            ins.push(init('Conv', [n.outC], convBias));
          }
          valueOf.set(n.id, node('Conv', n.id, ins, attrs));
        }
        break;
      }
      case 'batchnorm2d':
      case 'batchnorm1d': {
        if (folded.has(n.id)) break;
        const ins = [src()];
        for (const role of ['weight', 'bias', 'running_mean', 'running_var']) {
          fileTensors.set(`${n.id}.${role}`, get(`${n.id}.${role}`));
          ins.push(init('BatchNormalization', [n.features], get(`${n.id}.${role}`)));
        }
        valueOf.set(n.id, node('BatchNormalization', n.id, ins, [float('epsilon', eps(n)), float('momentum', 1 - n.momentum)]));
        break;
      }
      case 'prelu': {
        const dims = slopeShape === 'C' ? [n.channels] : slopeShape === 'C11' ? [n.channels, 1, 1] : [1, n.channels, 1, 1];
        fileTensors.set(`${n.id}.weight`, get(`${n.id}.weight`));
        valueOf.set(n.id, node('PRelu', n.id, [src(), init('PRelu', dims, get(`${n.id}.weight`))]));
        break;
      }
      case 'relu':
        valueOf.set(n.id, node('Relu', n.id, [src()]));
        break;
      case 'dropout':
        valueOf.set(n.id, src());
        break;
      case 'flatten':
        if (options.flatten === 'reshape') {
          const shape: OnnxTensor = {
            dims: [2], dataType: DATA_TYPE.INT64, floatData: new Float32Array(0), int32Data: new Int32Array(0), int64Data: [0, -1],
            name: `onnx::Reshape_${counter++}`, rawData: null,
          };
          initializers.push(shape);
          valueOf.set(n.id, node('Reshape', n.id, [src(), shape.name]));
        } else {
          valueOf.set(n.id, node('Flatten', n.id, [src()], [int('axis', 1)]));
        }
        break;
      case 'linear': {
        const bn = next(n) as BatchNorm1dNode | undefined;
        let w = get(`${n.id}.weight`);
        let b = n.bias ? get(`${n.id}.bias`) : null;
        if (options.foldLinearBatchNorm && bn) {
          const f = foldInto(n.id, bn, w, b, n.out);
          w = f.w;
          b = f.c;
        } else {
          fileTensors.set(`${n.id}.weight`, w);
          if (b) fileTensors.set(`${n.id}.bias`, b);
        }
        let out: string;
        if (options.linear === 'matmul') {
          const wt = new Float32Array(w.length);
          for (let o = 0; o < n.out; o++) for (let k = 0; k < n.in; k++) wt[k * n.out + o] = w[o * n.in + k];
          out = node('MatMul', n.id, [src(), init('MatMul', [n.in, n.out], wt)]);
          if (b) out = node('Add', `${n.id}.bias`, [out, init('Add', [n.out], b)]);
        } else {
          const ins = [src(), init('Gemm', [n.out, n.in], w)];
          if (b) ins.push(init('Gemm', [n.out], b));
          out = node('Gemm', n.id, ins, [float('alpha', 1), float('beta', 1), int('transB', 1)]);
        }
        valueOf.set(n.id, out);
        if (bn && folded.has(bn.id)) valueOf.set(bn.id, out);
        break;
      }
      case 'add':
        valueOf.set(n.id, node('Add', n.id, [src(0), src(1)]));
        break;
      default: {
        const never: never = n;
        throw new FacecudaError('INTERNAL', `archToOnnx: unknown op ${(never as ArchNode).op}`);
      }
    }
  }
  // The embedding: rename the last node's output.
  const last = valueOf.get(arch.output) as string;
  const lastNode = nodes.find((m) => m.output[0] === last) as OnnxNode;
  lastNode.output[0] = 'embedding';
  const [c, h, w] = arch.inputShape;
  const dim = (d: number | string) => (typeof d === 'number' ? { dimValue: d, dimParam: null } : { dimValue: null, dimParam: d });
  const model: OnnxModelProto = {
    irVersion: 8,
    opsetImport: [{ domain: '', version: options.opsetVersion ?? 13 }],
    producerName: 'facecuda archToOnnx',
    producerVersion: '1',
    graph: {
      node: nodes,
      name: arch.name,
      initializer: initializers,
      input: [{ name: 'input.1', type: { tensorType: { elemType: DATA_TYPE.FLOAT, shape: [dim(batch), dim(c), dim(h), dim(w)] } } }],
      output: [{ name: 'embedding', type: { tensorType: { elemType: DATA_TYPE.FLOAT, shape: [dim(batch), dim(arch.embeddingSize)] } } }],
      valueInfo: [],
    },
    metadataProps: [],
  };
  return { model, fileTensors };
}
