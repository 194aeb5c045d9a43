// Deterministic weights, inputs and gradients for the second backbone batch (SPEC-BACKBONES), shared
// by the reference-fixture test (test/unit/backbone-zoo-reference.test.ts) and the zoo benchmark
// (bench/backbone_zoo.js). The same formulas are implemented independently in Python by
// test/fixtures/gen_backbone_zoo_torch.py, so both sides build bitwise the same float32 values
// without shipping any weights:
//
//   u(i, name) = hash32((i + 0x9E3779B9·(len(name) + 1)) mod 2^32)/2^31 − 1 ∈ [−1, 1), i the flat
//   (row-major) element index, hash32 the integer mixer x ^= x >> 16; x *= 0x7feb352d;
//   x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16 (mod 2^32; Math.imul here, uint64 masks in numpy);
//   per tensor, by the kind of layer that owns it:
//     conv / linear weight        2·u/√fan_in, fan_in = product of shape[1:]
//     conv / linear bias          0.1·u
//     BatchNorm / LayerNorm γ, β  1 + 0.2·u, 0.1·u
//     running_mean, running_var   0.1·u, 1.2 + 0.5·u;  num_batches_tracked 0
//     PReLU slope                 0.25 + 0.1·u
//     cls / dist / mask token, pos_embed   0.5·u
//     XCA temperature             1 + 0.3·u
//     layer scale gamma(_xca)     0.5 + 0.2·u
//   every value rounded to float32 once. Input x[i] = u(i, 'input') over [N, 3, 112, 112]; upstream
//   gradient g[i] = u(i, 'grad_y') over [N, E]; projection r[i] = sin(0.2718·i + 0.9) (float64).
// (A sinusoid of the flat index would make every weight matrix rank 2 and train-mode BatchNorm over a
// small batch ill-conditioned; the hash gives full-rank weights.)
'use strict';

/** The kind (value rule) of every tensor of an arch, keyed by state-dict name. */
function zooKinds(arch) {
  const kinds = new Map();
  for (const node of arch.nodes) {
    for (const t of node.tensors) {
      let kind;
      switch (t.role) {
        case 'weight':
          if (node.op === 'batchnorm1d' || node.op === 'batchnorm2d' || node.op === 'layernorm') kind = 'norm_weight';
          else if (node.op === 'prelu') kind = 'prelu';
          else kind = 'weight';
          break;
        case 'bias':
          kind = node.op === 'batchnorm1d' || node.op === 'batchnorm2d' || node.op === 'layernorm' ? 'norm_bias' : 'bias';
          break;
        case 'cls_token':
        case 'dist_token':
        case 'mask_token':
        case 'pos_embed':
          kind = 'token';
          break;
        case 'gamma_xca':
          kind = 'gamma';
          break;
        default:
          kind = t.role; // running_mean, running_var, num_batches_tracked, temperature, gamma
      }
      kinds.set(t.name, kind);
    }
  }
  return kinds;
}

/** u(i, name) of the header: an exact 32-bit integer hash of (i, len(name)) mapped to [−1, 1). */
function hashU(i, len) {
  let x = (i + Math.imul(0x9e3779b9 | 0, len + 1)) >>> 0;
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x7feb352d) >>> 0;
  x = (x ^ (x >>> 15)) >>> 0;
  x = Math.imul(x, 0x846ca68b) >>> 0;
  x = (x ^ (x >>> 16)) >>> 0;
  return x / 2147483648 - 1;
}

function valueOf(kind, u, fanIn) {
  switch (kind) {
    case 'weight': return (2 * u) / Math.sqrt(fanIn);
    case 'bias': return 0.1 * u;
    case 'norm_weight': return 1 + 0.2 * u;
    case 'norm_bias': return 0.1 * u;
    case 'running_mean': return 0.1 * u;
    case 'running_var': return 1.2 + 0.5 * u;
    case 'prelu': return 0.25 + 0.1 * u;
    case 'token': return 0.5 * u;
    case 'temperature': return 1 + 0.3 * u;
    case 'gamma': return 0.5 + 0.2 * u;
    default: throw new Error(`zoo_values: no value rule for kind '${kind}'`);
  }
}

/** The formula values of one tensor spec ({ name, shape, dtype }) of `kind`. */
function tensorValues(spec, kind) {
  const n = spec.shape.reduce((a, b) => a * b, 1);
  if (kind === 'num_batches_tracked') return new BigInt64Array(Math.max(1, n));
  const fanIn = spec.shape.slice(1).reduce((a, b) => a * b, 1);
  const out = new Float32Array(n);
  const len = spec.name.length;
  for (let i = 0; i < n; i++) out[i] = valueOf(kind, hashU(i, len), fanIn);
  return out;
}

/** state-dict name → values for every tensor of `arch` (specs from stateDictTensors(arch)). */
function zooState(arch, specs) {
  const kinds = zooKinds(arch);
  const state = new Map();
  for (const s of specs) state.set(s.name, tensorValues(s, kinds.get(s.name)));
  return state;
}

function inputX(n) {
  const x = new Float32Array(n * 3 * 112 * 112);
  for (let i = 0; i < x.length; i++) x[i] = hashU(i, 'input'.length);
  return x;
}

function gradY(n, e) {
  const g = new Float32Array(n * e);
  for (let i = 0; i < g.length; i++) g[i] = hashU(i, 'grad_y'.length);
  return g;
}

/**
 * [Σ v[i]·r[i], ‖v‖] in float64, r[i] = sin(0.2718·i + 0.9). r is stepped by a rotation (sin and cos
 * of the next angle from the current ones) and re-anchored with Math.sin/Math.cos every 256 elements,
 * so it stays within ~1e-13 of the direct formula at a fraction of the cost.
 */
function projectNorm(v) {
  const a = 0.2718;
  const ca = Math.cos(a);
  const sa = Math.sin(a);
  let p = 0;
  let s = 0;
  let sn = 0;
  let cs = 1;
  for (let i = 0; i < v.length; i++) {
    if ((i & 255) === 0) {
      sn = Math.sin(a * i + 0.9);
      cs = Math.cos(a * i + 0.9);
    }
    p += v[i] * sn;
    s += v[i] * v[i];
    const next = sn * ca + cs * sa;
    cs = cs * ca - sn * sa;
    sn = next;
  }
  return [p, Math.sqrt(s)];
}

module.exports = { hashU, zooKinds, zooState, tensorValues, inputX, gradY, projectNorm };
