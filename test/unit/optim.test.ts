// Optimizers (lib/optim.ts over native/binding/optim.cc): SGD and AdamW steps against float64
// references written here (state carried in double, no rounding between steps), weight-decay
// exclusions, clipping (clipped and not), NaN/Inf gradients (skipped, nothing written), sparse rows,
// fresh random shapes per run, the state round trip (bitwise resume), thread-count independence,
// clipGradNorm and argument errors with codes. CPU tensors (the CUDA path is covered by the native
// harness's "cuda vs cpu" cases). Fresh random data per run: the seed is printed.
import {
  AdamW, clipGradNorm, FacecudaError, headParams, OptimParam, paramGroups, ParamGroup, sampledRows, SGD, Tensor,
} from '../../lib';
import { randomFloats, rng, SEED } from '../helpers';

const r = rng(SEED ^ 0x0971a1);
beforeAll(() => console.log(`optim tests: seed ${SEED}`));

const CHUNK = 1 << 16; // the engine's chunk: shapes above it span several chunks

interface HostParam {
  name: string;
  shape: number[];
  p: Float32Array;
  grads: Float32Array[]; // one per step
}

function randint(lo: number, hi: number): number {
  return lo + Math.floor(r() * (hi - lo + 1));
}

/** Fresh random shapes: empty, one element, ragged 2-D, conv-like 4-D, more than one chunk, 1-D. */
function randomShape(kind: number): number[] {
  switch (kind % 6) {
    case 0: return [0];
    case 1: return [1];
    case 2: return [randint(10, 300), randint(1, 9)];
    case 3: return [randint(1, 9), randint(1, 9), 3, 3];
    case 4: return [CHUNK + randint(10, 300)];
    default: return [randint(10, 300)];
  }
}

function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function makeHost(count: number, steps: number, names = 'p'): HostParam[] {
  return Array.from({ length: count }, (_, i) => {
    const shape = randomShape(i);
    const n = numel(shape);
    return { name: `${names}${i}`, shape, p: randomFloats(n, r), grads: Array.from({ length: steps }, () => randomFloats(n, r, -0.5, 0.5)) };
  });
}

function toParams(host: HostParam[]): OptimParam[] {
  return host.map((h) => ({ name: h.name, value: Tensor.from(h.p, h.shape), grad: Tensor.from(h.grads[0], h.shape) }));
}

function setGrads(params: OptimParam[], host: HostParam[], s: number): void {
  params.forEach((p, i) => {
    p.grad?.dispose();
    p.grad = Tensor.from(host[i].grads[s], host[i].shape);
  });
}

async function f32(t: Tensor): Promise<Float32Array> {
  return (await t.toArray()) as Float32Array;
}

// ---- float64 reference

interface RefOpts {
  kind: 'sgd' | 'adamw';
  lr: number;
  momentum?: number;
  dampening?: number;
  nesterov?: boolean;
  beta1?: number;
  beta2?: number;
  eps?: number;
}

class Ref {
  p: Float64Array[];
  m: Float64Array[];
  v: Float64Array[];
  t = 0;
  constructor(host: HostParam[]) {
    this.p = host.map((h) => Float64Array.from(h.p));
    this.m = host.map((h) => new Float64Array(h.p.length));
    this.v = host.map((h) => new Float64Array(h.p.length));
  }

  /** One step; wd[i], lrScale[i], clip group per param; rows: sparse rows per param (undefined: dense). */
  step(o: RefOpts, grads: Float32Array[], wd: number[], lrScale: number[], group: number[], clipNorms: number[],
    rows: (Int32Array | undefined)[] = [], rowSize: number[] = []): { norms: number[]; total: number } {
    this.t++;
    const listed = (i: number, j: number): boolean => !rows[i] || rows[i]!.includes(Math.floor(j / rowSize[i]));
    const sums = clipNorms.map(() => 0);
    let total = 0;
    grads.forEach((g, i) => {
      let s = 0;
      for (let j = 0; j < g.length; j++) if (listed(i, j)) s += g[j] * g[j];
      total += s;
      if (group[i] >= 0) sums[group[i]] += s;
    });
    const norms = sums.map(Math.sqrt);
    const scale = norms.map((n, k) => Math.min(1, clipNorms[k] / (n + 1e-6)));
    grads.forEach((g, i) => {
      const lr = o.lr * lrScale[i];
      const sc = group[i] >= 0 ? scale[group[i]] : 1;
      const p = this.p[i], m = this.m[i], v = this.v[i];
      for (let j = 0; j < g.length; j++) {
        if (!listed(i, j)) continue;
        const gj = g[j] * sc;
        if (o.kind === 'sgd') {
          let d = gj + wd[i] * p[j];
          const mom = o.momentum ?? 0;
          if (mom !== 0) {
            m[j] = this.t === 1 ? d : mom * m[j] + (1 - (o.dampening ?? 0)) * d;
            d = o.nesterov ? d + mom * m[j] : m[j];
          }
          p[j] -= lr * d;
        } else {
          const b1 = o.beta1 ?? 0.9, b2 = o.beta2 ?? 0.999, eps = o.eps ?? 1e-8;
          p[j] *= 1 - lr * wd[i];
          m[j] = b1 * m[j] + (1 - b1) * gj;
          v[j] = b2 * v[j] + (1 - b2) * gj * gj;
          const mh = m[j] / (1 - Math.pow(b1, this.t));
          const vh = v[j] / (1 - Math.pow(b2, this.t));
          p[j] -= (lr * mh) / (Math.sqrt(vh) + eps);
        }
      }
    });
    return { norms, total: Math.sqrt(total) };
  }
}

/**
 * Tolerance: the engine rounds p and its state to float32 after every step (2^-24 relative each) and
 * the reference does not, so a few fp32 ulps of |p| (≤ 1 here) accumulate per step.
 */
function expectClose(got: Float32Array, ref: Float64Array, steps: number, what: string): void {
  let worst = 0;
  let at = -1;
  for (let j = 0; j < got.length; j++) {
    const err = Math.abs(got[j] - ref[j]) - (1e-6 + 4e-6 * steps * Math.abs(ref[j]));
    if (err > worst) {
      worst = err;
      at = j;
    }
  }
  if (at >= 0) throw new Error(`${what}: element ${at} = ${got[at]}, reference ${ref[at]}`);
}

function bitsEqual(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

describe('SGD against float64', () => {
  const cases: [string, { momentum?: number; nesterov?: boolean; dampening?: number }][] = [
    ['plain', {}],
    ['momentum', { momentum: 0.9 }],
    ['nesterov', { momentum: 0.9, nesterov: true }],
    ['dampening', { momentum: 0.9, dampening: 0.1 }],
  ];
  test.each(cases)('%s, weight decay with exclusions, 3 steps, fresh shapes', async (_, o) => {
    const steps = 3;
    const host = makeHost(10, steps);
    const params = toParams(host);
    // paramGroups' default: rank < 2 → no decay; one extra group at half the lr.
    const [decay, plain] = paramGroups(params.slice(0, 8));
    const groups: ParamGroup[] = [decay, plain, { params: params.slice(8), lrScale: 0.5, weightDecay: 1e-3 }];
    const opt = new SGD(groups, { lr: 0.05, weightDecay: 5e-4, ...o });
    const wd = host.map((h, i) => (i >= 8 ? 1e-3 : h.shape.length < 2 ? 0 : 5e-4));
    const lrScale = host.map((_, i) => (i >= 8 ? 0.5 : 1));
    const ref = new Ref(host);
    for (let s = 0; s < steps; s++) {
      setGrads(params, host, s);
      const res = await opt.step({ lr: 0.05 });
      const rr = ref.step({ kind: 'sgd', lr: 0.05, ...o }, host.map((h) => h.grads[s]), wd, lrScale, host.map(() => -1), []);
      expect(res.skipped).toBe(false);
      expect(Math.abs(res.gradNorm - rr.total)).toBeLessThanOrEqual(1e-12 * rr.total);
      expect(res.clipScales).toEqual([1, 1, 1]);
    }
    expect(opt.stepCount).toBe(steps);
    for (let i = 0; i < host.length; i++) expectClose(await f32(params[i].value), ref.p[i], steps, `${host[i].name} [${host[i].shape}]`);
    if (o.momentum) {
      const st = await opt.state();
      st.params.forEach((ps) => expectClose(ps.buffers.momentumBuffer, ref.m[Number(ps.name.slice(1))], steps, `${ps.name} momentum`));
    }
    opt.dispose();
  });
});

test('AdamW against float64 over 5 steps (bias correction, decoupled decay)', async () => {
  const steps = 5;
  const host = makeHost(8, steps);
  const params = toParams(host);
  const groups = paramGroups(params);
  const opt = new AdamW(groups, { lr: 1e-3, weightDecay: 0.1, betas: [0.8, 0.99], eps: 1e-7 });
  const wd = host.map((h) => (h.shape.length < 2 ? 0 : 0.1));
  const ref = new Ref(host);
  for (let s = 0; s < steps; s++) {
    setGrads(params, host, s);
    expect((await opt.step({ lr: 1e-3 * (s + 1) })).skipped).toBe(false);
    ref.step({ kind: 'adamw', lr: 1e-3 * (s + 1), beta1: 0.8, beta2: 0.99, eps: 1e-7 }, host.map((h) => h.grads[s]), wd, host.map(() => 1), host.map(() => -1), []);
  }
  for (let i = 0; i < host.length; i++) expectClose(await f32(params[i].value), ref.p[i], steps, host[i].name);
  const st = await opt.state();
  expect(st.type).toBe('AdamW');
  expect(st.params.every((p) => p.step === steps)).toBe(true);
  st.params.forEach((ps) => {
    const i = Number(ps.name.slice(1)); // paramGroups reorders: decayed first
    expectClose(ps.buffers.expAvg, ref.m[i], steps, `${ps.name} expAvg`);
    expectClose(ps.buffers.expAvgSq, ref.v[i], steps, `${ps.name} expAvgSq`);
  });
  opt.dispose();
});

test('global-norm clipping per group: clipped, not clipped, and the reported norms', async () => {
  const host = makeHost(9, 2);
  const params = toParams(host);
  // Group 0 holds the multi-chunk tensor (norm ≫ 1): clipped to 1. Group 1: a huge max norm, not clipped.
  const groups: ParamGroup[] = [
    { params: params.slice(0, 6), clipNorm: 1 },
    { params: params.slice(6), clipNorm: 1e9 },
  ];
  const opt = new SGD(groups, { lr: 0.1, momentum: 0.9 });
  const ref = new Ref(host);
  const group = host.map((_, i) => (i < 6 ? 0 : 1));
  for (let s = 0; s < 2; s++) {
    setGrads(params, host, s);
    const before = await Promise.all(params.map((p) => f32(p.grad!)));
    const res = await opt.step({ lr: 0.1 });
    const rr = ref.step({ kind: 'sgd', lr: 0.1, momentum: 0.9 }, host.map((h) => h.grads[s]), host.map(() => 0), host.map(() => 1), group, [1, 1e9]);
    res.groupNorms.forEach((n, k) => expect(Math.abs(n - rr.norms[k])).toBeLessThanOrEqual(1e-12 * rr.norms[k]));
    expect(res.clipScales[0]).toBeCloseTo(1 / (rr.norms[0] + 1e-6), 14);
    expect(res.clipScales[1]).toBe(1);
    // A step never modifies the gradients (the scale is applied on the fly).
    const after = await Promise.all(params.map((p) => f32(p.grad!)));
    after.forEach((a, i) => expect(bitsEqual(a, before[i])).toBe(true));
  }
  for (let i = 0; i < host.length; i++) expectClose(await f32(params[i].value), ref.p[i], 2, host[i].name);
  opt.dispose();
});

test.each([NaN, Infinity, -Infinity])('a %p gradient skips the step: weights, state and counts untouched', async (bad) => {
  const host = makeHost(6, 2);
  const params = toParams(host);
  const opt = new SGD([{ params, clipNorm: 5 }], { lr: 0.1, momentum: 0.9, weightDecay: 5e-4 });
  await opt.step({ lr: 0.1 });
  const before = await Promise.all(params.map((p) => f32(p.value)));
  const stateBefore = await opt.state();
  host[4].grads[1][123] = bad;
  setGrads(params, host, 1);
  const res = await opt.step({ lr: 0.1 });
  expect(res.skipped).toBe(true);
  expect(res.reason).toMatch(/non-finite gradient \(NaN or Inf\) in 'p4'/);
  expect(Number.isFinite(res.gradNorm)).toBe(false);
  expect(opt.stepCount).toBe(1);
  const after = await Promise.all(params.map((p) => f32(p.value)));
  after.forEach((a, i) => expect(bitsEqual(a, before[i])).toBe(true));
  const stateAfter = await opt.state();
  stateAfter.params.forEach((ps, i) => {
    expect(ps.step).toBe(1);
    expect(bitsEqual(ps.buffers.momentumBuffer, stateBefore.params[i].buffers.momentumBuffer)).toBe(true);
  });
  opt.dispose();
});

test('sparse rows: only the listed rows of the weight and its momentum move (Partial FC)', async () => {
  const C = 50, K = 2, D = 7;
  const w: HostParam = { name: 'head.weight', shape: [C * K, D], p: randomFloats(C * K * D, r), grads: [randomFloats(C * K * D, r), randomFloats(C * K * D, r)] };
  const host = [w, ...makeHost(3, 2)];
  const params = toParams(host);
  const opt = new SGD([{ params }], { lr: 0.1, momentum: 0.9, weightDecay: 5e-4 });
  const classes = [[3, 17, 4, 40], [4, 0, 49]];
  const ref = new Ref(host);
  for (let s = 0; s < 2; s++) {
    setGrads(params, host, s);
    const rows = sampledRows(Int32Array.from(classes[s]), K); // any order: sorted by the optimizer
    const res = await opt.step({ lr: 0.1, sparse: { 'head.weight': rows } });
    const sorted = Int32Array.from(rows).sort();
    const rr = ref.step({ kind: 'sgd', lr: 0.1, momentum: 0.9 }, host.map((h) => h.grads[s]), host.map(() => 5e-4), host.map(() => 1),
      host.map(() => 0), [1e30], [sorted], [D]);
    expect(Math.abs(res.gradNorm - rr.total)).toBeLessThanOrEqual(1e-12 * rr.total);
  }
  // Rows never listed keep their bits (no decay, no momentum); listed rows follow the reference, whose
  // state rows start at 0 (row 0 is first listed at step 2: buf = 0.9·0 + d = d).
  const got = await f32(params[0].value);
  const listed = new Set(sampledRows(Int32Array.from([...classes[0], ...classes[1]]), K));
  for (let row = 0; row < C * K; row++) {
    const a = got.subarray(row * D, row * D + D);
    if (!listed.has(row)) expect(bitsEqual(a, w.p.subarray(row * D, row * D + D))).toBe(true);
  }
  for (let i = 0; i < host.length; i++) expectClose(await f32(params[i].value), ref.p[i], 2, host[i].name);
  const st = await opt.state();
  expectClose(st.params[0].buffers.momentumBuffer, ref.m[0], 2, 'head.weight momentum');
  // A NaN in an unlisted row does not skip the step.
  host[0].grads[1][1 * D] = NaN; // row 1 = class 0, sub-center 1
  setGrads(params, host, 1);
  expect((await opt.step({ lr: 0.1, sparse: { 'head.weight': [8, 9] } })).skipped).toBe(false);
  expect((await opt.step({ lr: 0.1, sparse: { 'head.weight': [1] } })).skipped).toBe(true);
  opt.dispose();
});

describe('state round trip: save after k steps, load into a fresh optimizer, the next step is bitwise equal', () => {
  const makers: [string, (g: ParamGroup[]) => SGD | AdamW][] = [
    ['SGD nesterov', (g) => new SGD(g, { lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 5e-4 })],
    ['AdamW', (g) => new AdamW(g, { lr: 1e-3 })],
  ];
  test.each(makers)('%s', async (_, make) => {
    const k = 3;
    const host = makeHost(7, k + 1);
    const a = toParams(host);
    const groups = (ps: OptimParam[]): ParamGroup[] => [{ params: ps.slice(0, 4), clipNorm: 2 }, { params: ps.slice(4), lrScale: 0.3 }];
    const optA = make(groups(a));
    for (let s = 0; s < k; s++) {
      setGrads(a, host, s);
      await optA.step({ lr: 0.1 });
    }
    const saved = await optA.state();
    // A fresh optimizer over copies of the current weights, with the state loaded.
    const bObjs: OptimParam[] = [];
    for (let i = 0; i < a.length; i++) {
      bObjs.push({ name: host[i].name, value: Tensor.from(await f32(a[i].value), host[i].shape), grad: Tensor.from(host[i].grads[k], host[i].shape) });
    }
    const optC = make(groups(bObjs));
    optC.loadState(saved);
    expect(optC.stepCount).toBe(k);
    expect(optC.paramNames).toEqual(host.map((h) => h.name));
    // Step k on both: the uninterrupted one and the resumed one.
    setGrads(a, host, k);
    await optA.step({ lr: 0.1 });
    await optC.step({ lr: 0.1 });
    for (let i = 0; i < host.length; i++) expect(bitsEqual(await f32(bObjs[i].value), await f32(a[i].value))).toBe(true);
    const sa = await optA.state();
    const sc = await optC.state();
    expect(sc.step).toBe(sa.step);
    sa.params.forEach((ps, i) => {
      expect(sc.params[i].step).toBe(ps.step);
      for (const key of Object.keys(ps.buffers)) expect(bitsEqual(sc.params[i].buffers[key], ps.buffers[key])).toBe(true);
    });
    optA.dispose();
    optC.dispose();
  });
});

test('the result does not depend on the CPU thread count (bitwise)', async () => {
  const host = makeHost(12, 2);
  const pa = toParams(host);
  const pb = toParams(host);
  const oa = new AdamW([{ params: pa, clipNorm: 1 }], { lr: 1e-2 });
  const ob = new AdamW([{ params: pb, clipNorm: 1 }], { lr: 1e-2 });
  for (let s = 0; s < 2; s++) {
    setGrads(pa, host, s);
    setGrads(pb, host, s);
    const ra = await oa.step({ lr: 1e-2, threads: 1 });
    const rb = await ob.step({ lr: 1e-2 });
    expect(ra.gradNorm).toBe(rb.gradNorm);
  }
  for (let i = 0; i < host.length; i++) expect(bitsEqual(await f32(pa[i].value), await f32(pb[i].value))).toBe(true);
  oa.dispose();
  ob.dispose();
});

test('clipGradNorm scales gradients in place like torch, and leaves them under the norm', async () => {
  const host = makeHost(6, 1);
  const params = toParams(host);
  let ss = 0;
  for (const h of host) for (const g of h.grads[0]) ss += g * g;
  const norm = Math.sqrt(ss);
  const small = await clipGradNorm(params, 1e9);
  expect(small.scale).toBe(1);
  expect(Math.abs(small.norm - norm)).toBeLessThanOrEqual(1e-12 * norm);
  for (let i = 0; i < host.length; i++) expect(bitsEqual(await f32(params[i].grad!), host[i].grads[0])).toBe(true);
  const res = await clipGradNorm(params, 0.5);
  const scale = 0.5 / (norm + 1e-6);
  expect(res.scale).toBeCloseTo(scale, 14);
  for (let i = 0; i < host.length; i++) {
    const g = await f32(params[i].grad!);
    // One rounding of g·scale to float32.
    let bad = -1;
    g.forEach((x, j) => {
      if (Math.abs(x - host[i].grads[0][j] * scale) > Math.abs(host[i].grads[0][j] * scale) * 2 ** -24) bad = j;
    });
    expect(bad).toBe(-1);
  }
  const again = await clipGradNorm(params, 0.5);
  expect(again.norm).toBeCloseTo(0.5, 5);
});

test('paramGroups: BN, PReLU and biases (rank < 2) get no decay; buffers, frozen and grad-less are left out', () => {
  const t = (shape: number[]): Tensor => Tensor.zeros(shape);
  const ps: OptimParam[] = [
    { name: 'conv1.weight', value: t([4, 3, 3, 3]), grad: t([4, 3, 3, 3]) },
    { name: 'bn1.weight', value: t([4]), grad: t([4]) },
    { name: 'bn1.bias', value: t([4]), grad: t([4]) },
    { name: 'prelu.weight', value: t([4]), grad: t([4]) },
    { name: 'fc.weight', value: t([2, 4]), grad: t([2, 4]) },
    { name: 'fc.bias', value: t([2]), grad: t([2]) },
    { name: 'bn1.running_mean', value: t([4]), grad: null, kind: 'buffer' },
    { name: 'features.weight', value: t([2]), grad: t([2]), trainable: false },
    { name: 'nograd', value: t([3, 3]), grad: null },
  ];
  const [d, n] = paramGroups(ps);
  expect(d.params.map((p) => p.name)).toEqual(['conv1.weight', 'fc.weight']);
  expect(n.params.map((p) => p.name)).toEqual(['bn1.weight', 'bn1.bias', 'prelu.weight', 'fc.bias']);
  expect(n.weightDecay).toBe(0);
  expect(d.weightDecay).toBeUndefined();
  const [d2] = paramGroups(ps, { noDecay: (name) => name.startsWith('fc'), weightDecay: 1e-4 });
  expect(d2.params.map((p) => p.name)).toEqual(['conv1.weight', 'bn1.weight', 'bn1.bias', 'prelu.weight']);
  expect(d2.weightDecay).toBe(1e-4);
  const hp = headParams({ weight: t([5, 2]), gradWeight: t([5, 2]) }, 'arc');
  expect(hp.map((p) => p.name)).toEqual(['arc.weight']);
  expect(Array.from(sampledRows([2, 0], 3))).toEqual([6, 7, 8, 0, 1, 2]);
});

describe('argument errors', () => {
  const p = (): OptimParam => ({ name: 'w', value: Tensor.zeros([4, 3]), grad: Tensor.zeros([4, 3]) });
  test('constructors', () => {
    expect(() => new SGD([], { lr: 0.1 })).toThrow(/Expected a non-empty array of parameter groups for groups/);
    expect(() => new SGD([{ params: [p()] }], {} as never)).toThrow(TypeError);
    expect(() => new SGD([{ params: [p()] }], { lr: -1 })).toThrow(RangeError);
    expect(() => new SGD([{ params: [p()] }], { lr: 0.1, weight_decay: 1 } as never)).toThrow(/'weightDecay'/);
    expect(() => new SGD([{ params: [p()] }], { lr: 0.1, nesterov: true })).toThrow(/Expected false unless momentum > 0 and dampening is 0 for nesterov/);
    expect(() => new SGD([{ params: [p()], clipNorm: 0 }], { lr: 0.1 })).toThrow(RangeError);
    expect(() => new SGD([{ params: [p(), p()] }], { lr: 0.1 })).toThrow(/a name not used by another parameter/);
    expect(() => new SGD([{ params: [p()], lr: 1 } as never], { lr: 0.1 })).toThrow(/Expected a known option/);
    expect(() => new AdamW([{ params: [p()] }], { lr: 1e-3, betas: [0.9, 1] })).toThrow(RangeError);
    expect(() => new AdamW([{ params: [{ name: 'x', value: Tensor.zeros([3]), grad: Tensor.zeros([4]) }] }], { lr: 1e-3 })).toThrow(
      expect.objectContaining({ code: 'SHAPE_MISMATCH' }),
    );
    expect(() => new SGD([{ params: [{ name: 'x', value: Tensor.zeros([3], { dtype: 'int32' }), grad: Tensor.zeros([3]) }] }], { lr: 1 })).toThrow(TypeError);
  });
  test('step and loadState', async () => {
    const opt = new SGD([{ params: [p()] }], { lr: 0.1, momentum: 0.9 });
    await expect(opt.step({ lr: NaN })).rejects.toThrow(/Expected a finite number for lr/);
    await expect(opt.step({ lr: 0.1, sparse: { nope: [0] } })).rejects.toThrow(TypeError);
    await expect(opt.step({ lr: 0.1, sparse: { w: [4] } })).rejects.toThrow(expect.objectContaining({ code: 'OUT_OF_RANGE' }));
    await expect(opt.step({ lr: 0.1, sparse: { w: [1, 1] } })).rejects.toThrow(/unique row indices/);
    await expect(opt.step({ lr: 0.1, sparse: { w: [0.5] } })).rejects.toThrow(/an integer row index/);
    expect(() => opt.loadState({ type: 'AdamW', step: 0, params: [] })).toThrow(/Expected 'SGD' for state.type/);
    expect(() => opt.loadState({ type: 'SGD', step: 1, params: [{ name: 'w', step: 1, shape: [4, 3], buffers: { momentumBuffer: new Float32Array(5) } }] })).toThrow(
      expect.objectContaining({ code: 'SHAPE_MISMATCH' }),
    );
    expect(() => opt.loadState({ type: 'SGD', step: 1, params: [{ name: 'v', step: 1, shape: [4, 3], buffers: {} }] })).toThrow(TypeError);
    opt.dispose();
    await expect(opt.step({ lr: 0.1 })).rejects.toThrow(expect.objectContaining({ code: 'DISPOSED' }));
    await expect(clipGradNorm([p()], 0)).rejects.toThrow(RangeError);
    const err = await opt.step({ lr: 0.1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FacecudaError);
  });
});
