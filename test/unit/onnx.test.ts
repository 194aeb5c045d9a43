// ONNX import: the protobuf decoder/encoder (lib/onnx/proto.ts) against an independently written
// fixture (test/fixtures/gen_onnx.py), corruption handling, and recognition of IResNet and
// MobileFaceNet graphs built by lib/onnx/export.ts from the arch graphs with random weights.
import { promises as fsp } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { BackboneArch, foldBatchNorms, iresnetArch, mobileFaceNetArch, stateDictTensors } from '../../lib/backbones/arch';
import { loadOnnx } from '../../lib/backbones/model';
import { FacecudaError } from '../../lib/errors';
import { archToOnnx } from '../../lib/onnx/export';
import { OnnxModel, parseOnnx, readOnnx, recognizeOnnx, RecognizedOnnx } from '../../lib/onnx/import';
import { ATTRIBUTE_TYPE, decodeOnnxModel, encodeOnnxModel, OnnxModelProto, OnnxNode } from '../../lib/onnx/proto';
import { rng, SEED } from '../helpers';

const FIXTURE = path.join(__dirname, '..', 'fixtures', 'tiny.onnx');
let dir: string;
let tiny: Uint8Array;

beforeAll(async () => {
  console.log(`onnx tests: seed ${SEED}`);
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'facecuda-onnx-'));
  tiny = new Uint8Array(await fsp.readFile(FIXTURE));
});

afterAll(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

// ----------------------------------------------------------------------------------------------
// Helpers

/** gen_onnx.py's closed form: ((i*37 + seed) mod 101 − 50)/64. */
function values(n: number, seed: number): number[] {
  return Array.from({ length: n }, (_, i) => (((i * 37 + seed) % 101) - 50) / 64);
}

/** Random float tensors for every float tensor of an arch (BN variances positive). */
function randomTensors(arch: BackboneArch, seed: number): Map<string, Float32Array> {
  const r = rng(seed);
  const out = new Map<string, Float32Array>();
  for (const t of stateDictTensors(arch)) {
    if (t.dtype !== 'float32') continue;
    const n = t.shape.reduce((a, b) => a * b, 1);
    const a = new Float32Array(n);
    if (t.role === 'running_var') for (let i = 0; i < n; i++) a[i] = 0.5 + r();
    else if (t.role === 'weight' && t.shape.length === 1) for (let i = 0; i < n; i++) a[i] = 0.5 + r(); // BN scale, PReLU slope
    else for (let i = 0; i < n; i++) a[i] = r() - 0.5;
    out.set(t.name, a);
  }
  return out;
}

/** Encode → parse (a full trip through the wire format). */
function roundTrip(model: OnnxModelProto, source = 'test model'): OnnxModel {
  return parseOnnx(encodeOnnxModel(model), source);
}

function expectTensorsEqual(got: RecognizedOnnx, want: Map<string, Float32Array>): void {
  expect([...got.tensors.keys()].sort()).toEqual([...want.keys()].sort());
  for (const [name, data] of want) {
    const t = got.tensors.get(name);
    expect(t).toBeDefined();
    const g = (t as { data: Float32Array }).data;
    expect(g.length).toBe(data.length);
    let same = true;
    for (let i = 0; i < g.length; i++) if (g[i] !== data[i]) { same = false; break; }
    if (!same) throw new Error(`tensor ${name} differs`);
  }
}

function errorOf(fn: () => unknown): FacecudaError {
  try {
    fn();
  } catch (e) {
    if (e instanceof FacecudaError) return e;
    throw e;
  }
  throw new Error('expected an error');
}

/** A model with one extra node appended after the node that writes `after` (its output feeds the next reader). */
function insertAfter(model: OnnxModelProto, after: string, extra: OnnxNode): OnnxModelProto {
  const g = model.graph!;
  const idx = g.node.findIndex((n) => n.output.includes(after));
  const renamed = `${after}__pre`;
  const nodes = g.node.map((n) => ({ ...n, output: n.output.map((o) => (o === after ? renamed : o)) }));
  nodes.splice(idx + 1, 0, { ...extra, input: [renamed, ...extra.input.slice(1)], output: [after] });
  return { ...model, graph: { ...g, node: nodes } };
}

const node = (opType: string, name: string, input: string[] = [], output: string[] = []): OnnxNode =>
  ({ input, output, name, opType, domain: '', attribute: [] });

// ----------------------------------------------------------------------------------------------
// The independent fixture

describe('tiny.onnx (written by gen_onnx.py)', () => {
  test('every field decodes to what the script wrote', () => {
    const m = decodeOnnxModel(tiny, 'tiny.onnx');
    expect(m.irVersion).toBe(8);
    expect(m.producerName).toBe('gen_onnx.py');
    expect(m.producerVersion).toBe('1.0');
    expect(m.opsetImport).toEqual([{ domain: '', version: 13 }, { domain: 'ai.onnx.ml', version: 3 }]);
    expect(m.metadataProps).toEqual([{ key: 'author', value: 'facecuda tests' }, { key: 'note', value: 'conv→bn→prelu→add→flatten→gemm' }]);
    const g = m.graph!;
    expect(g.name).toBe('tiny');
    expect(g.node.map((n) => [n.name, n.opType, n.domain, n.input, n.output])).toEqual([
      ['conv', 'Conv', '', ['x', 'conv.weight'], ['c']],
      ['bn', 'BatchNormalization', '', ['c', 'bn.scale', 'bn.bias', 'bn.mean', 'bn.var'], ['b']],
      ['prelu', 'PRelu', '', ['b', 'prelu.slope'], ['p']],
      ['add', 'Add', '', ['p', 'c'], ['a']],
      ['flatten', 'Flatten', '', ['a'], ['f']],
      ['bias_const', 'Constant', '', [], ['fc.bias']],
      ['fc', 'Gemm', '', ['f', 'fc.weight', 'fc.bias'], ['y']],
      ['k_float', 'Constant', '', [], ['k_float']],
      ['k_int', 'Constant', '', [], ['k_int']],
      ['k_string', 'Constant', '', [], ['k_string']],
      ['k_floats', 'Constant', '', [], ['k_floats']],
      ['k_ints', 'Constant', '', [], ['k_ints']],
      ['k_strings', 'Constant', '', [], ['k_strings']],
    ]);
    const conv = g.node[0].attribute;
    expect(conv.map((a) => [a.name, a.type, a.ints])).toEqual([
      ['dilations', ATTRIBUTE_TYPE.INTS, [1, 1]], ['group', ATTRIBUTE_TYPE.INT, []], ['kernel_shape', ATTRIBUTE_TYPE.INTS, [3, 3]],
      ['pads', ATTRIBUTE_TYPE.INTS, [1, 1, 1, 1]], ['strides', ATTRIBUTE_TYPE.INTS, [1, 1]],
    ]);
    expect(conv[1].i).toBe(1);
    expect(g.node[1].attribute.map((a) => [a.name, a.type, a.f])).toEqual([['epsilon', 1, Math.fround(1e-5)], ['momentum', 1, Math.fround(0.9)]]);
    expect(g.node[4].attribute[0]).toMatchObject({ name: 'axis', type: ATTRIBUTE_TYPE.INT, i: 1 });
    expect(g.node[6].attribute.map((a) => [a.name, a.f, a.i])).toEqual([['alpha', 1, 0], ['beta', 1, 0], ['transB', 0, 1]]);
    const at = (k: number) => g.node[k].attribute[0];
    expect(at(7)).toMatchObject({ name: 'value_float', type: ATTRIBUTE_TYPE.FLOAT, f: -0.375 });
    expect(at(8)).toMatchObject({ name: 'value_int', type: ATTRIBUTE_TYPE.INT, i: -3 });
    expect(at(9).type).toBe(ATTRIBUTE_TYPE.STRING);
    expect(Buffer.from(at(9).s).toString('utf8')).toBe('héllo');
    expect(at(10)).toMatchObject({ name: 'value_floats', type: ATTRIBUTE_TYPE.FLOATS, floats: [0.5, -2, 1024] });
    expect(at(11)).toMatchObject({ name: 'value_ints', type: ATTRIBUTE_TYPE.INTS, ints: [7, -1, 2 ** 33] });
    expect(at(12).type).toBe(ATTRIBUTE_TYPE.STRINGS);
    expect(at(12).strings.map((s) => Buffer.from(s).toString())).toEqual(['a', '', 'xyz']);
    // The Constant's tensor attribute (raw_data).
    const t = at(5).t!;
    expect(at(5)).toMatchObject({ name: 'value', type: ATTRIBUTE_TYPE.TENSOR });
    expect([t.name, t.dims, t.dataType]).toEqual(['fc.bias.value', [2], 1]);
    expect(Array.from(new Float32Array(Uint8Array.from(t.rawData!).buffer))).toEqual(values(2, 8));

    // Initializers: raw_data, float_data, int32_data, int64_data.
    const init = new Map(g.initializer.map((x) => [x.name, x]));
    expect(g.initializer.map((x) => [x.name, x.dims, x.dataType])).toEqual([
      ['conv.weight', [4, 3, 3, 3], 1], ['bn.scale', [4], 1], ['bn.bias', [4], 1], ['bn.mean', [4], 1], ['bn.var', [4], 1],
      ['prelu.slope', [4, 1, 1], 1], ['fc.weight', [2, 64], 1], ['unused.int32', [3], 6], ['unused.int64', [2, 2], 7],
    ]);
    const raw = (name: string) => Array.from(new Float32Array(Uint8Array.from(init.get(name)!.rawData!).buffer));
    expect(raw('conv.weight')).toEqual(values(108, 1));
    expect(raw('fc.weight')).toEqual(values(128, 7));
    expect(Array.from(init.get('bn.scale')!.floatData)).toEqual(values(4, 2).map((v) => 1 + v / 4));
    expect(Array.from(init.get('bn.bias')!.floatData)).toEqual(values(4, 3));
    expect(Array.from(init.get('bn.mean')!.floatData)).toEqual(values(4, 4));
    expect(Array.from(init.get('bn.var')!.floatData)).toEqual(values(4, 5).map((v) => 1 + Math.abs(v)));
    expect(Array.from(init.get('prelu.slope')!.floatData)).toEqual(values(4, 6).map((v) => 0.25 + v / 8));
    expect(Array.from(init.get('unused.int32')!.int32Data)).toEqual([-7, 0, 2147483647]);
    expect(init.get('unused.int64')!.int64Data).toEqual([-1, 0, 2 ** 40, -(2 ** 53) + 1]);
    expect(init.get('conv.weight')!.floatData.length).toBe(0);
    expect(init.get('bn.scale')!.rawData).toBeNull();

    // Value infos: dim_param and dim_value.
    const dims = (v: { type: unknown }) => (v as { type: { tensorType: { shape: { dimValue: number | null; dimParam: string | null }[] } } })
      .type.tensorType.shape.map((d) => d.dimValue ?? d.dimParam);
    expect(g.input.map((v) => [v.name, v.type!.tensorType!.elemType, dims(v)])).toEqual([['x', 1, ['N', 3, 4, 4]]]);
    expect(g.output.map((v) => [v.name, dims(v)])).toEqual([['y', ['N', 2]]]);
    expect(g.valueInfo.map((v) => [v.name, dims(v)])).toEqual([['c', ['N', 4, 4, 4]], ['f', ['N', 64]]]);
  });

  test('our encoder reproduces the file byte for byte', () => {
    const again = encodeOnnxModel(decodeOnnxModel(tiny));
    expect(Buffer.compare(Buffer.from(again), Buffer.from(tiny))).toBe(0);
  });

  test('it is a valid model but not a backbone: recognition names the first unexpected node', () => {
    const m = parseOnnx(tiny, 'tiny.onnx');
    const e = errorOf(() => recognizeOnnx(m));
    expect(e.code).toBe('NOT_IMPLEMENTED');
    // The stem is 3→4, not 3→64: the Conv is named with what was expected.
    expect(e.message).toMatch(/tiny\.onnx.*node 0 'conv' \(Conv\).*expected/);
  });

  test('unknown fields are skipped, at the top level and nested', () => {
    // ModelProto.doc_string (6) before everything and an unknown field 99 (varint) after.
    const doc = Buffer.from([0x32, 3, 0x61, 0x62, 0x63]);
    const unknown = Buffer.from([0x98, 0x06, 0x2a]); // tag (99 << 3 | 0) = 792 → 0x98 0x06
    const fixed64 = Buffer.from([0x99, 0x06, 1, 2, 3, 4, 5, 6, 7, 8]); // field 99, wire type 1
    const fixed32 = Buffer.from([0x9d, 0x06, 1, 2, 3, 4]); // field 99, wire type 5
    const withUnknown = Buffer.concat([doc, Buffer.from(tiny), unknown, fixed64, fixed32]);
    expect(decodeOnnxModel(withUnknown)).toEqual(decodeOnnxModel(tiny));
    // Nested: a GraphProto with doc_string (10) and a node with doc_string (6).
    const nodeBytes = Buffer.from([0x22, 3, 0x41, 0x64, 0x64, 0x32, 2, 0x68, 0x69]); // op_type 'Add', doc_string 'hi'
    const graphBytes = Buffer.concat([Buffer.from([0x0a, nodeBytes.length]), nodeBytes, Buffer.from([0x52, 1, 0x7a, 0x12, 1, 0x67])]);
    const model = Buffer.concat([Buffer.from([0x08, 7, 0x3a, graphBytes.length]), graphBytes]);
    const m = decodeOnnxModel(model);
    expect(m.irVersion).toBe(7);
    expect(m.graph!.name).toBe('g');
    expect(m.graph!.node).toEqual([{ input: [], output: [], name: '', opType: 'Add', domain: '', attribute: [] }]);
  });

  test('every prefix truncation is CORRUPT_FILE or a clean recognition error', () => {
    const codes = new Map<string, number>();
    for (let n = 0; n < tiny.length; n++) {
      const e = errorOf(() => recognizeOnnx(parseOnnx(tiny.subarray(0, n), `prefix ${n}`)));
      expect(['CORRUPT_FILE', 'NOT_IMPLEMENTED']).toContain(e.code);
      codes.set(e.code, (codes.get(e.code) ?? 0) + 1);
      if (e.code === 'CORRUPT_FILE') expect(e.message).toMatch(new RegExp(`^Corrupt prefix ${n}: `));
    }
    // Cuts inside the graph or before opset_import cannot give a valid model.
    expect(codes.get('CORRUPT_FILE')).toBeGreaterThan(tiny.length * 0.9);
  });

  test('random byte flips never crash or hang', () => {
    const r = rng(SEED ^ 0x5eed);
    const t0 = Date.now();
    const outcomes = new Map<string, number>();
    for (let k = 0; k < 3000; k++) {
      const b = Uint8Array.from(tiny);
      const flips = 1 + Math.floor(r() * 4);
      for (let f = 0; f < flips; f++) b[Math.floor(r() * b.length)] ^= 1 + Math.floor(r() * 255);
      let outcome = 'ok';
      try {
        recognizeOnnx(parseOnnx(b, 'flipped'));
      } catch (e) {
        if (!(e instanceof FacecudaError)) throw new Error(`flip case ${k}: ${(e as Error).stack}`);
        outcome = e.code;
      }
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    }
    expect(Date.now() - t0).toBeLessThan(20000);
    expect([...outcomes.keys()].every((c) => ['CORRUPT_FILE', 'NOT_IMPLEMENTED'].includes(c))).toBe(true);
  });
});

// ----------------------------------------------------------------------------------------------
// Wire format

describe('protobuf wire format', () => {
  const model = (graphBytes: number[]): Uint8Array => Uint8Array.from([0x08, 8, 0x3a, graphBytes.length, ...graphBytes]);

  test('round trip of every field, including negative and large int64 values', () => {
    const m: OnnxModelProto = {
      irVersion: 9,
      opsetImport: [{ domain: '', version: 17 }, { domain: 'com.example', version: 1 }],
      producerName: 'pytörch',
      producerVersion: '2.4',
      graph: {
        node: [{
          input: ['x', '', 'w'], output: ['y'], name: 'n0', opType: 'Custom', domain: 'com.example',
          attribute: [
            { name: 'f', type: 1, f: -1.5, i: 0, s: new Uint8Array(0), t: null, floats: [], ints: [], strings: [] },
            { name: 'i', type: 2, f: 0, i: -(2 ** 40), s: new Uint8Array(0), t: null, floats: [], ints: [], strings: [] },
            { name: 'z', type: 2, f: 0, i: 0, s: new Uint8Array(0), t: null, floats: [], ints: [], strings: [] },
            { name: 's', type: 3, f: 0, i: 0, s: Uint8Array.from([0, 255, 7]), t: null, floats: [], ints: [], strings: [] },
            { name: 'fs', type: 6, f: 0, i: 0, s: new Uint8Array(0), t: null, floats: [0.25, -3], ints: [], strings: [] },
            { name: 'is', type: 7, f: 0, i: 0, s: new Uint8Array(0), t: null, floats: [], ints: [0, -1, 2 ** 53 - 1, -(2 ** 53) + 1, 127, 128], strings: [] },
            { name: 'ss', type: 8, f: 0, i: 0, s: new Uint8Array(0), t: null, floats: [], ints: [], strings: [Uint8Array.from([1]), new Uint8Array(0)] },
            {
              name: 't', type: 4, f: 0, i: 0, s: new Uint8Array(0), floats: [], ints: [], strings: [],
              t: { dims: [2, 0], dataType: 7, floatData: new Float32Array(0), int32Data: new Int32Array(0), int64Data: [], name: '', rawData: new Uint8Array(0) },
            },
          ],
        }],
        name: 'g',
        initializer: [
          { dims: [3], dataType: 1, floatData: Float32Array.from([1, -2, 3.5]), int32Data: new Int32Array(0), int64Data: [], name: 'a', rawData: null },
          { dims: [2], dataType: 6, floatData: new Float32Array(0), int32Data: Int32Array.from([-2147483648, 5]), int64Data: [], name: 'b', rawData: null },
          { dims: [], dataType: 7, floatData: new Float32Array(0), int32Data: new Int32Array(0), int64Data: [-5], name: 'c', rawData: null },
        ],
        input: [{ name: 'x', type: { tensorType: { elemType: 1, shape: [{ dimValue: 0, dimParam: null }, { dimValue: null, dimParam: 'n' }, { dimValue: null, dimParam: null }] } } }],
        output: [{ name: 'y', type: { tensorType: { elemType: 1, shape: null } } }],
        valueInfo: [{ name: 'v', type: null }, { name: 'u', type: { tensorType: null } }],
      },
      metadataProps: [{ key: 'k', value: '' }],
    };
    const bytes = encodeOnnxModel(m);
    expect(decodeOnnxModel(bytes)).toEqual(m);
    expect(Buffer.compare(Buffer.from(encodeOnnxModel(decodeOnnxModel(bytes))), Buffer.from(bytes))).toBe(0);
  });

  test('packed and unpacked repeated fields read the same', () => {
    // TensorProto with dims packed [2, 3] vs unpacked; float_data unpacked (wire type 5).
    const packedDims = [0x0a, 2, 2, 3, 0x10, 1, 0x25, 0, 0, 0x80, 0x3f, 0x25, 0, 0, 0, 0x40];
    const g = [0x2a, packedDims.length, ...packedDims];
    const m = decodeOnnxModel(model(g));
    expect(m.graph!.initializer[0].dims).toEqual([2, 3]);
    expect(Array.from(m.graph!.initializer[0].floatData)).toEqual([1, 2]);
  });

  const corruptCases: [string, number[], RegExp][] = [
    ['truncated varint', [0x08, 0x80], /at byte 0, reading a field tag|at byte 1, reading ModelProto.ir_version: the varint runs past/],
    ['varint longer than 10 bytes', [0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], /at byte 1, reading ModelProto.ir_version: the varint (is longer than 10 bytes|does not fit in 64 bits)/],
    ['length beyond the buffer', [0x12, 0x05, 0x61], /at byte 1, reading ModelProto.producer_name: length 5 runs past the end of its message \(1 bytes left\)/],
    ['start-group wire type', [0x0b], /at byte 0, reading ModelProto field 1: wire type 3 \(start-group\) is not supported/],
    ['end-group wire type', [0x3c], /at byte 0, reading ModelProto field 7: wire type 4 \(end-group\)/],
    ['field number 0', [0x00, 0x01], /field number 0/],
    ['wrong wire type for a string', [0x10, 0x01], /ModelProto.producer_name: wire type 0 \(varint\), expected length-delimited/],
    ['invalid UTF-8', [0x12, 0x02, 0xc3, 0x28], /ModelProto.producer_name: the string is not valid UTF-8/],
    ['nested length beyond the message', [0x3a, 0x04, 0x0a, 0x05, 0x00, 0x00], /at byte 3, reading GraphProto.node\[0\]: length 5 runs past/],
    ['graph twice', [0x3a, 0x00, 0x3a, 0x00], /ModelProto.graph: the field appears twice/],
    ['packed floats not a multiple of 4', [0x3a, 0x05, 0x2a, 0x03, 0x22, 0x01, 0x00], /initializer\[0\].float_data: packed floats of 1 bytes/],
  ];
  test.each(corruptCases)('%s → CORRUPT_FILE with offset and field', (_name, bytes, re) => {
    const e = errorOf(() => decodeOnnxModel(Uint8Array.from(bytes), 'ONNX file \'x.onnx\''));
    expect(e.code).toBe('CORRUPT_FILE');
    expect(e.message).toMatch(/^Corrupt ONNX file 'x\.onnx': at byte \d+/);
    expect(e.message).toMatch(re);
  });

  test('external data is refused with NOT_IMPLEMENTED naming the tensor', () => {
    // TensorProto { name 'w' (8), external_data (13) { key 'location' } , data_location (14) = 1 }
    const entry = [0x0a, 8, ...Buffer.from('location')];
    const t = [0x42, 1, 0x77, 0x6a, entry.length, ...entry, 0x70, 1];
    const e = errorOf(() => decodeOnnxModel(model([0x2a, t.length, ...t]), 'ONNX file \'ext.onnx\''));
    expect(e.code).toBe('NOT_IMPLEMENTED');
    expect(e.message).toMatch(/ONNX file 'ext\.onnx': tensor 'w' .*external file; ONNX external data is not supported/);
  });

  test('graph-level checks: undefined inputs, wrong data sizes, missing graph', () => {
    const base = decodeOnnxModel(tiny);
    const g = base.graph!;
    const e1 = errorOf(() => parseOnnx(encodeOnnxModel({ ...base, graph: { ...g, node: [{ ...g.node[0], input: ['nope', 'conv.weight'] }, ...g.node.slice(1)] } }), 'm'));
    expect(e1.code).toBe('CORRUPT_FILE');
    expect(e1.message).toMatch(/node 0 'conv' \(Conv\) reads 'nope', which no graph input, initializer or earlier node defines/);
    const bad = { ...g.initializer[0], dims: [4, 3, 3, 2] };
    const e2 = errorOf(() => parseOnnx(encodeOnnxModel({ ...base, graph: { ...g, initializer: [bad, ...g.initializer.slice(1)] } }), 'm'));
    expect(e2.message).toMatch(/initializer 0 'conv.weight': raw_data has 432 bytes, but shape \[4, 3, 3, 2\] of FLOAT needs 288/);
    const e3 = errorOf(() => parseOnnx(encodeOnnxModel({ ...base, graph: null }), 'm'));
    expect(e3.message).toMatch(/ModelProto.graph is missing/);
    const e4 = errorOf(() => parseOnnx(encodeOnnxModel({ ...base, graph: { ...g, node: [...g.node.slice(1), g.node[0]] } }), 'm'));
    expect(e4.message).toMatch(/node 0 'bn' \(BatchNormalization\) reads 'c'/);
  });

  test('readOnnx: IO_ERROR for a missing file, CORRUPT_FILE naming the path', async () => {
    await expect(readOnnx(path.join(dir, 'missing.onnx'))).rejects.toMatchObject({ code: 'IO_ERROR', message: expect.stringMatching(/Cannot open ONNX file '.*missing\.onnx'/) });
    const p = path.join(dir, 'cut.onnx');
    await fsp.writeFile(p, tiny.subarray(0, 100));
    await expect(readOnnx(p)).rejects.toMatchObject({ code: 'CORRUPT_FILE', message: expect.stringMatching(/^Corrupt ONNX file '.*cut\.onnx': at byte \d+, reading/) });
    await expect(readOnnx(dir)).rejects.toMatchObject({ code: 'IO_ERROR' });
  });
});

// ----------------------------------------------------------------------------------------------
// Recognition

describe('recognition: IResNet-18 (real topology, random weights)', () => {
  const arch = iresnetArch(18);
  let weights: Map<string, Float32Array>;
  beforeAll(() => {
    weights = randomTensors(arch, SEED);
  });

  test('folded export (as torch.onnx.export / w600k_r50.onnx), through a file', async () => {
    const { model, fileTensors } = archToOnnx(arch, weights);
    const p = path.join(dir, 'r18.onnx');
    await fsp.writeFile(p, encodeOnnxModel(model));
    const rec = recognizeOnnx(await readOnnx(p));
    expect(rec.arch.name).toBe('r18');
    expect(rec.arch.embeddingSize).toBe(512);
    expect(rec.folded).toBe(true);
    expect(rec.inputNormalization).toBeNull();
    expect(rec.tensors.get('conv1.bias')?.shape).toEqual([64]);
    expect(rec.tensors.has('bn1.weight')).toBe(false);
    expect(rec.tensors.has('layer1.0.bn1.running_mean')).toBe(true); // pre-activation BN: not foldable
    expect(rec.tensors.has('features.running_var')).toBe(true);
    expect(rec.folds.length).toBe(arch.nodes.filter((n) => n.op === 'conv2d').length);
    expectTensorsEqual(rec, fileTensors);
    for (const t of rec.tensors.values()) expect(t.data.length).toBe(t.shape.reduce((a, b) => a * b, 1));
  });

  test('a reduced-width IResNet (baseWidth 4, 32×32) is recognised with its width and input size', () => {
    const small = iresnetArch(18, { baseWidth: 4, inputSize: 32, embeddingSize: 16 });
    const w = randomTensors(small, SEED + 1);
    for (const fold of [true, false]) {
      const rec = recognizeOnnx(parseOnnx(encodeOnnxModel(archToOnnx(small, w, { foldBatchNorm: fold, batch: 'N' }).model)));
      expect(rec.arch.config).toEqual(small.config);
      expect(rec.arch.inputShape).toEqual([3, 32, 32]);
      expect(rec.tensors.get('layer4.1.conv2.weight')?.shape).toEqual([32, 32, 3, 3]);
    }
  });

  test('unfolded export maps every tensor to its state-dict name', () => {
    const { model } = archToOnnx(arch, weights, { foldBatchNorm: false, preluSlopeShape: 'C' });
    const rec = recognizeOnnx(roundTrip(model));
    expect(rec.folded).toBe(false);
    expect(rec.folds).toEqual([]);
    const want = new Map([...weights].filter(([k]) => !k.endsWith('num_batches_tracked')));
    expectTensorsEqual(rec, want);
    expect(rec.nodeMap.get('layer4.1.conv2')).toBeDefined();
  });

  test('a symbolic input shape: the input size comes from fc (512·7² inputs → 112)', () => {
    const { model } = archToOnnx(arch, weights, { batch: 'N' });
    model.graph!.input[0].type!.tensorType!.shape = [
      { dimValue: null, dimParam: 'N' }, { dimValue: 3, dimParam: null }, { dimValue: null, dimParam: 'H' }, { dimValue: null, dimParam: 'W' },
    ];
    const rec = recognizeOnnx(roundTrip(model));
    expect(rec.arch.config).toMatchObject({ family: 'iresnet', depth: 18, inputSize: 112, embeddingSize: 512 });
  });

  test('an extra PRelu after a residual add (a supported op where none belongs)', () => {
    const { model } = archToOnnx(arch, weights);
    const add = model.graph!.node.find((n) => n.name === '/layer1/1/add/Add')!.output[0];
    const m = insertAfter(model, add, { ...node('PRelu', 'extra_prelu', ['x', 'onnx::PRelu_2'], []) });
    const idx = m.graph!.node.findIndex((n) => n.name === 'extra_prelu');
    const e = errorOf(() => recognizeOnnx(roundTrip(m)));
    expect(e.code).toBe('NOT_IMPLEMENTED');
    expect(e.message).toMatch(new RegExp(`node ${idx} 'extra_prelu' \\(PRelu\\) reads '.*' where a BatchNormalization for layer2\\.0\\.bn1 \\(64 features\\) was expected`));
  });

  test('a wrong number of residual blocks', () => {
    const { model } = archToOnnx(arch, weights);
    // Turn layer4.1's residual Add into a Mul: 7 residual Adds are left.
    const g = model.graph!;
    g.node = g.node.map((n) => (n.name === '/layer4/1/add/Add' ? { ...n, opType: 'Mul' } : n));
    const e = errorOf(() => recognizeOnnx(roundTrip(model)));
    expect(e.message).toMatch(/7 residual Adds; expected those of IResNet-18\/34\/50\/100\/200: 8\/16\/24\/49\/98/);
  });
});

describe('recognition: variants on MobileFaceNet and small graphs', () => {
  const mbf = mobileFaceNetArch();
  let w: Map<string, Float32Array>;
  beforeAll(() => {
    w = randomTensors(mbf, SEED + 1);
  });

  test.each([['folded', true], ['unfolded', false]] as const)('mbf %s', (_n, fold) => {
    const { model, fileTensors } = archToOnnx(mbf, w, { foldBatchNorm: fold });
    const rec = recognizeOnnx(roundTrip(model));
    expect(rec.arch.name).toBe('mbf');
    expect(rec.folded).toBe(fold);
    expectTensorsEqual(rec, fileTensors);
  });

  test.each([['C'], ['C11'], ['1C11']] as const)('PRelu slopes of shape %s all map to [C]', (shape) => {
    const { model } = archToOnnx(mbf, w, { preluSlopeShape: shape });
    const rec = recognizeOnnx(roundTrip(model));
    expect(rec.tensors.get('layers.0.layers.2.weight')?.shape).toEqual([128]);
    expect(Array.from(rec.tensors.get('layers.0.layers.2.weight')!.data)).toEqual(Array.from(w.get('layers.0.layers.2.weight')!));
  });

  test('custom blocks and scale, a folded linear→BatchNorm1d, MatMul + Add and Reshape', () => {
    const arch = mobileFaceNetArch({ blocks: [2, 1, 3, 1], scale: 1, embeddingSize: 128 });
    const t = randomTensors(arch, SEED + 2);
    const { model, fileTensors } = archToOnnx(arch, t, { foldLinearBatchNorm: true, linear: 'matmul', flatten: 'reshape' });
    const rec = recognizeOnnx(roundTrip(model));
    expect(rec.arch.config).toMatchObject({ family: 'mobilefacenet', blocks: [2, 1, 3, 1], scale: 1, embeddingSize: 128 });
    expect(rec.folds).toContainEqual({ layer: 'features.layers.2', batchNorm: 'features.layers.3' });
    expectTensorsEqual(rec, fileTensors);
  });

  test('input normalization prefix (Sub mean, Mul 1/std) is recorded', () => {
    const { model } = archToOnnx(mbf, w, { inputNormalization: { mean: [127.5, 127.5, 127.5], std: [128, 128, 128] } });
    const rec = recognizeOnnx(roundTrip(model));
    expect(rec.inputNormalization!.mean.map((v) => Math.round(v * 1e4) / 1e4)).toEqual([127.5, 127.5, 127.5]);
    expect(rec.inputNormalization!.std.map((v) => Math.round(v * 1e4) / 1e4)).toEqual([128, 128, 128]);
    expect(rec.notes.some((n) => /Sub.*input normalization/.test(n))).toBe(true);
  });

  test('a partly folded file is folded completely (float64), with a note', () => {
    const { model } = archToOnnx(mbf, w, { keepUnfolded: ['layers.0.layers.0', 'conv_sep.layers.0'] });
    const rec = recognizeOnnx(roundTrip(model));
    const full = archToOnnx(mbf, w).fileTensors;
    expect(rec.folded).toBe(true);
    expect(rec.notes.some((n) => /2 of \d+ conv→BatchNorm pairs were not folded in the file/.test(n))).toBe(true);
    expect([...rec.tensors.keys()].sort()).toEqual([...full.keys()].sort());
    // Both fold in float64 from the same float32 inputs and round once: equal up to the last ulp
    // (the importer takes epsilon from the file, a float32 attribute, the exporter from the arch).
    let worst = 0;
    for (const [name, data] of full) {
      const got = rec.tensors.get(name)!.data;
      for (let i = 0; i < data.length; i++) worst = Math.max(worst, Math.abs(got[i] - data[i]) / Math.max(1, Math.abs(data[i])));
    }
    expect(worst).toBeLessThan(1e-6);
  });

  test('a conv bias before an unfolded BN is absorbed into running_mean; another epsilon into running_var', () => {
    const { model } = archToOnnx(mbf, w, { foldBatchNorm: false, epsilon: 2e-5 });
    const g = model.graph!;
    // Give the stem Conv a bias of 0.5.
    const stem = g.node.find((n) => n.opType === 'Conv')!;
    const bias = new Float32Array(128).fill(0.5);
    g.initializer.push({ dims: [128], dataType: 1, floatData: bias, int32Data: new Int32Array(0), int64Data: [], name: 'stem.bias', rawData: null });
    stem.input.push('stem.bias');
    const rec = recognizeOnnx(roundTrip(model));
    expect(rec.folded).toBe(false);
    const mean = rec.tensors.get('layers.0.layers.1.running_mean')!.data;
    expect(mean[3]).toBeCloseTo(w.get('layers.0.layers.1.running_mean')![3] - 0.5, 6);
    const v = rec.tensors.get('layers.0.layers.1.running_var')!.data;
    expect(v[3]).toBeCloseTo(w.get('layers.0.layers.1.running_var')![3] + 1e-5, 6);
    expect(rec.notes.some((n) => /bias of layers\.0\.layers\.0 is absorbed/.test(n))).toBe(true);
  });

  test('Identity and inference Dropout nodes pass through', () => {
    const { model } = archToOnnx(mbf, w);
    const flat = model.graph!.node.find((n) => n.opType === 'Flatten')!.output[0];
    const prelu = model.graph!.node.find((n) => n.opType === 'PRelu')!.output[0];
    let m = insertAfter(model, flat, node('Dropout', 'drop', ['x'], []));
    m = insertAfter(m, prelu, node('Identity', 'ident', ['x'], []));
    const rec = recognizeOnnx(roundTrip(m));
    expect(rec.arch.name).toBe('mbf');
  });

  describe('refusals name the first unsupported or unexpected node', () => {
    test('an unsupported op (Softmax after the embedding)', () => {
      const { model } = archToOnnx(mbf, w);
      const m = insertAfter(model, 'embedding', node('Softmax', 'softmax_head', ['x'], []));
      const idx = m.graph!.node.findIndex((n) => n.opType === 'Softmax');
      const e = errorOf(() => recognizeOnnx(roundTrip(m, "ONNX file 'soft.onnx'")));
      expect(e.code).toBe('NOT_IMPLEMENTED');
      expect(e.message).toBe(
        `Cannot import ONNX file 'soft.onnx': node ${idx} 'softmax_head' (Softmax) is not supported: an IResNet or MobileFaceNet export is made of ` +
        'Conv, BatchNormalization, PRelu, Add, Sub, Mul, Div, Flatten, Reshape, Gemm, MatMul (plus Constant, Identity, Dropout) in the default domain',
      );
    });

    test('a node of another domain', () => {
      const { model } = archToOnnx(mbf, w);
      const m = insertAfter(model, 'embedding', { ...node('Conv', 'ms_conv', ['x'], []), domain: 'com.microsoft' });
      expect(errorOf(() => recognizeOnnx(roundTrip(m))).message).toMatch(/node \d+ 'ms_conv' \(com\.microsoft::Conv\) is not supported/);
    });

    test('a conv with other pads', () => {
      const { model } = archToOnnx(mbf, w);
      const conv = model.graph!.node.filter((n) => n.opType === 'Conv')[1];
      conv.attribute = conv.attribute.map((a) => (a.name === 'pads' ? { ...a, ints: [0, 0, 0, 0] } : a));
      const e = errorOf(() => recognizeOnnx(roundTrip(model)));
      expect(e.message).toMatch(/node 2 '\/layers\/1\/layers\/0\/Conv' \(Conv\) has pads \[0, 0, 0, 0\]; a Conv for layers\.1\.layers\.0 \(3×3, 128→128, stride 1, pad 1, groups 64\) was expected/);
    });

    test('a conv without bias and without BN', () => {
      const { model } = archToOnnx(mbf, w);
      const conv = model.graph!.node.filter((n) => n.opType === 'Conv')[0];
      conv.input = conv.input.slice(0, 2);
      const e = errorOf(() => recognizeOnnx(roundTrip(model)));
      expect(e.message).toMatch(/node 1 '\/layers\/0\/layers\/2\/PRelu' \(PRelu\) reads '.*' where a BatchNormalization for layers\.0\.layers\.1 \(128 features\) was expected/);
    });

  });
});

describe('recognition: depth from the structure', () => {
  test('IResNet-34 (constant weights: only the structure matters here)', () => {
    const arch = iresnetArch(34, { embeddingSize: 128 });
    const t = new Map<string, Float32Array>();
    for (const spec of stateDictTensors(arch)) {
      if (spec.dtype !== 'float32') continue;
      t.set(spec.name, new Float32Array(spec.shape.reduce((a, b) => a * b, 1)).fill(spec.role === 'running_var' || spec.role === 'weight' ? 1 : 0));
    }
    const { model } = archToOnnx(arch, t, { foldBatchNorm: false });
    const rec = recognizeOnnx(roundTrip(model));
    expect(rec.arch.name).toBe('r34');
    expect(rec.arch.config).toMatchObject({ depth: 34, layers: [3, 4, 6, 3], embeddingSize: 128 });
    expect(rec.tensors.get('layer3.5.conv2.weight')?.shape).toEqual([256, 256, 3, 3]);
  });
});

describe('foldBatchNorms and loadOnnx: errors', () => {
  test('foldBatchNorms refuses pairs that are not a layer and its only BatchNorm reader', () => {
    const arch = iresnetArch(18);
    const cases: [{ layer: string; batchNorm: string }, RegExp][] = [
      [{ layer: 'layer1.0.bn1', batchNorm: 'layer1.0.bn2' }, /'layer1.0.bn1' is not a conv2d or linear node/],
      [{ layer: 'layer1.0.conv1', batchNorm: 'layer1.0.prelu' }, /is not a BatchNorm node/],
      [{ layer: 'layer1.0.conv1', batchNorm: 'layer1.0.bn3' }, /'layer1.0.bn3' reads 'layer1.0.conv2', not 'layer1.0.conv1'/],
    ];
    for (const [pair, re] of cases) {
      let err: unknown;
      try {
        foldBatchNorms(arch, [pair]);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(FacecudaError);
      expect((err as FacecudaError).code).toBe('INVALID_ARGUMENT');
      expect((err as Error).message).toMatch(re);
    }
    const folded = foldBatchNorms(arch, [{ layer: 'layer1.0.conv1', batchNorm: 'layer1.0.bn2' }]);
    expect(folded.nodes.length).toBe(arch.nodes.length - 1);
    expect(folded.nodes.find((n) => n.id === 'layer1.0.prelu')?.inputs).toEqual(['layer1.0.conv1']);
    expect(stateDictTensors(folded).some((t) => t.name === 'layer1.0.conv1.bias')).toBe(true);
    expect(stateDictTensors(folded).some((t) => t.name.startsWith('layer1.0.bn2.'))).toBe(false);
  });

  test('loadOnnx: a bad source type, corrupt bytes and a non-backbone graph', async () => {
    await expect(loadOnnx(42 as unknown as string)).rejects.toThrow(TypeError);
    await expect(loadOnnx(Uint8Array.of(0x0a, 0xff, 0xff))).rejects.toMatchObject({ code: 'CORRUPT_FILE' });
    await expect(loadOnnx(tiny)).rejects.toMatchObject({ code: 'NOT_IMPLEMENTED', message: expect.stringMatching(/node/) });
    await expect(loadOnnx(path.join(dir, 'missing.onnx'))).rejects.toMatchObject({ code: 'IO_ERROR' });
  });
});
