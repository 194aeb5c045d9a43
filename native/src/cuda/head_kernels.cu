// @file head_kernels.cu
// @brief fc::heads::Kernels on CUDA: the device passes of the fused margin head and the center loss
// (the contract is native/src/common/head_kernels.h; this file adds only how).
//
// Layout of the work
// - Element passes over a [B, n] chunk (forward_chunk, backward_chunk) are memory-bound: each walks
//   the chunk once, in place. A block is kThreads = 256 threads over a column tile of kTile = 2048
//   columns; thread t owns the quads (4 consecutive floats) t and t + 256 of the tile in every row.
//   With n % 4 == 0 and 16-byte aligned pointers a quad is one float4 load/store; otherwise four
//   scalar ones. The arithmetic is the same on both paths (same element -> thread mapping, same
//   order), so the two give the same bits.
// - forward_chunk: 3 kernels. (1) One thread per row evaluates ψ(c_t), ψ'(c_t) in double for rows
//   whose target lies in the chunk (margin_psi_eval stays out of the bandwidth kernel, where its
//   registers would cost occupancy). (2) Grid (tiles, rows): applies wv, bias and the clamp in place,
//   builds the logits (the target's is the z_t of (1)), and writes the tile's max and Σexp (exp in
//   float, summed per thread in float over its 8 entries, then across the block in double) to
//   per-(row, tile) partials. (3) One warp per row merges the partials:
//   max = max_b m_b, Σ = Σ_b s_b·exp(m_b − max) in double.
// - backward_chunk: grid (tiles, row groups of RB rows). A thread walks the RB rows of its group in
//   order for its 8 columns: G, G·c (double) into per-column accumulators (and Σ G for dbias), the
//   row's Σ_j G·c per warp into per-(row, tile, warp) partials, cb <- G·wv. Two merge kernels then
//   sum the column partials over the groups in group order and the row partials over (tile, warp) in
//   order. RB is a function of (B, n) only: the largest of 64, 32, ... 4 that still gives >= 512
//   blocks, so a pass has enough parallelism and the results never depend on the device. Each thread
//   loads row i + 1 before it processes row i (two rows of loads in flight).
// - subcenter_expand: the same row groups, one thread per raw column c·K + k; subcenter_max one thread
//   per (row, class).
// - Row passes (row_norms, gathers, projections, dx, center loss, target cosines): one warp per row,
//   lanes over quads of the row, grid-stride over rows; row reductions are lane-sequential, then a
//   butterfly (xor) shuffle tree, whose result is the same in every lane.
// Determinism: no atomics anywhere; every reduction has a fixed order that depends on the sizes only.
// Memory: device scratch (uploads, results, partials) is held in members, grown on demand from the
// caching allocator, never shrunk. Partials: forward B·tiles·12 bytes; backward groups·n·8 (·2 with
// dbias) + B·tiles·8·8 bytes (about 10 MB at B = 512, n = 131072).
// Host <-> device: every pass that needs host inputs packs them into one upload (copy_h2d, which
// synchronizes the stream); passes with host outputs end with one copy_d2h. Everything else is
// asynchronous on the device's stream.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "common/head_kernels.h"
#include "cuda/common.cuh"
#include "facecuda/cuda.h"
#include "facecuda/error.h"
#include "facecuda/heads.h"
#include "facecuda/tensor.h"

namespace fc {
namespace heads {

namespace {

static_assert(std::is_trivially_copyable<Fn>::value, "MarginFn<double> is uploaded to the device as plain bytes");

using cuda::detail::grid_for;

// ---- launch geometry

constexpr int kThreads = 256;                 // every kernel of this file
constexpr int kWarps = kThreads / 32;         // warps per block
constexpr int kQuads = 2;                     // quads per thread per row in the tile passes
constexpr int64_t kTile = int64_t(kThreads) * kQuads * 4;  // 2048 columns per tile
constexpr int64_t kMinBlocks = 512;           // the backward passes' grid target (see the file comment)
constexpr unsigned kMaxGridY = 65535;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Blocks for one warp per row over `rows` rows (grid-stride beyond the cap).
inline unsigned warp_grid(int64_t rows) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(ceil_div(rows, kWarps), 65535 * 8)));
}

// Rows per group in the backward passes: the largest of 64, 32, ..., 4 for which the grid
// (col_blocks x groups) still has kMinBlocks blocks; at least ceil(B / 65535) (grid.y limit).
inline int64_t rows_per_group(int64_t B, int64_t col_blocks) {
  int64_t rb = 64;
  while (rb > 4 && col_blocks * ceil_div(B, rb) < kMinBlocks) rb /= 2;
  return std::max<int64_t>(rb, ceil_div(B, kMaxGridY));
}

// ---- device helpers

// Butterfly reductions: every lane ends with the same value (the pairs are combined commutatively).
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block reductions for blockDim.x == kThreads; sh holds kWarps + 1 entries. Callable repeatedly.
__device__ __forceinline__ float block_max(float v, float* sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_max(v);
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float x = lane < kWarps ? sh[lane] : -INFINITY;
    x = warp_max(x);
    if (lane == 0) sh[kWarps] = x;
  }
  __syncthreads();
  const float r = sh[kWarps];
  __syncthreads();
  return r;
}

__device__ __forceinline__ double block_sum(double v, double* sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  if (warp == 0) {
    double x = lane < kWarps ? sh[lane] : 0.0;
    x = warp_sum(x);
    if (lane == 0) sh[kWarps] = x;
  }
  __syncthreads();
  const double r = sh[kWarps];
  __syncthreads();
  return r;
}

// One warp per row, grid-stride: the warp's first row and the number of warps in the grid.
__device__ __forceinline__ int64_t warp_index() {
  return static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
}
__device__ __forceinline__ int64_t warp_count() { return static_cast<int64_t>(gridDim.x) * kWarps; }

// Entries of the quad starting at column j < n that exist (1..4).
__device__ __forceinline__ int64_t quad_valid(int64_t n, int64_t j) { return n - j < 4 ? n - j : 4; }

// A quad: p[0..valid) with valid in 1..4. kVec: p is 16-byte aligned and valid == 4 (one float4).
// Loads fill the missing entries with `fill`.
template <bool kVec>
__device__ __forceinline__ void load4(const float* p, int64_t valid, float fill, float (&v)[4]) {
  if (kVec) {
    const float4 q = *reinterpret_cast<const float4*>(p);
    v[0] = q.x, v[1] = q.y, v[2] = q.z, v[3] = q.w;
  } else {
#pragma unroll
    for (int e = 0; e < 4; ++e) v[e] = e < valid ? p[e] : fill;
  }
}

template <bool kVec>
__device__ __forceinline__ void store4(float* p, int64_t valid, const float (&v)[4]) {
  if (kVec) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
#pragma unroll
    for (int e = 0; e < 4; ++e)
      if (e < valid) p[e] = v[e];
  }
}

// The forward's element op on one raw dot: c = raw·wv (+ bias), then the clamp of clamp_all. Each
// step rounded on its own (no contraction), as the CPU does, and identical wherever it is applied.
struct ElemParams {
  const float* wv;    // null: cb already holds cosines
  const float* bias;  // null: no bias
  bool clamp;
  float lo, hi;
};

__device__ __forceinline__ float elem_cos(float raw, float w, float b, const ElemParams& p) {
  float c = p.wv ? __fmul_rn(raw, w) : raw;
  if (p.bias) c = __fadd_rn(c, b);
  if (p.clamp) c = c < p.lo ? p.lo : (c > p.hi ? p.hi : c);
  return c;
}

// ---- forward_chunk

struct FwdRow {
  Fn fn;         // ψ of the row
  float scale;   // s_i
  int64_t tcol;  // the target's column in this chunk, or −1 when it is not in [0, n)
};

struct FwdOut {  // device results, copied back in one piece
  double* sum;    // [B] Σexp of the row over the chunk
  double* tcos;   // [B] c_t     (rows with tcol >= 0)
  double* tdpsi;  // [B] ψ'(c_t) (rows with tcol >= 0)
  float* max;     // [B] max logit of the row over the chunk
  float* tz;      // [B] z_t     (rows with tcol >= 0)
};

// One thread per row: the target's c_t, ψ'(c_t) and z_t = float(s_i·ψ(c_t)), before the tile pass
// rewrites cb in place (the tile pass recomputes the same c_t with the same operations).
__global__ void forward_target_kernel(const float* cb, int64_t B, int64_t n, const FwdRow* rows, ElemParams p,
                                      FwdOut out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= B) return;
  const int64_t t = rows[i].tcol;
  if (t < 0) return;
  const float c = elem_cos(cb[i * n + t], p.wv ? p.wv[t] : 1.0f, p.bias ? p.bias[t] : 0.0f, p);
  double d = 0;
  const double psi = margin::margin_psi_eval(rows[i].fn, static_cast<double>(c), &d);
  out.tcos[i] = c;
  out.tdpsi[i] = d;
  out.tz[i] = static_cast<float>(static_cast<double>(rows[i].scale) * psi);
}

// Grid (tiles, min(B, 65535)); rows grid-stride over y. cb [B, n] rewritten with c; per (row, tile):
// part_max = the tile's max logit, part_sum = Σ exp(z − part_max) over the tile.
template <bool kVec>
__global__ void __launch_bounds__(kThreads)
    forward_tile_kernel(float* cb, int64_t B, int64_t n, const FwdRow* rows, ElemParams p, const float* tz,
                        float* part_max, double* part_sum) {
  __shared__ float sh_max[kWarps + 1];
  __shared__ double sh_sum[kWarps + 1];
  const int64_t tile = blockIdx.x, tiles = gridDim.x;
  const int64_t j_first = tile * kTile + static_cast<int64_t>(threadIdx.x) * 4;
  // The thread's columns are the same in every row: load wv and bias once.
  float w[kQuads][4], b[kQuads][4];
#pragma unroll
  for (int q = 0; q < kQuads; ++q) {
    const int64_t j = j_first + q * kThreads * 4;
    const int64_t valid = j < n ? quad_valid(n, j) : 0;
    if (p.wv && valid) load4<kVec>(p.wv + j, valid, 1.0f, w[q]);
    else w[q][0] = w[q][1] = w[q][2] = w[q][3] = 1.0f;
    if (p.bias && valid) load4<kVec>(p.bias + j, valid, 0.0f, b[q]);
    else b[q][0] = b[q][1] = b[q][2] = b[q][3] = 0.0f;
  }
  for (int64_t i = blockIdx.y; i < B; i += gridDim.y) {
    float* row = cb + i * n;
    const float s = rows[i].scale;
    const int64_t tcol = rows[i].tcol;
    float z[kQuads][4];
    float m = -INFINITY;
#pragma unroll
    for (int q = 0; q < kQuads; ++q) {
      const int64_t j = j_first + q * kThreads * 4;
      z[q][0] = z[q][1] = z[q][2] = z[q][3] = -INFINITY;
      if (j >= n) continue;
      const int64_t valid = quad_valid(n, j);
      float c[4];
      load4<kVec>(row + j, valid, 0.0f, c);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        if (e >= valid) continue;
        c[e] = elem_cos(c[e], w[q][e], b[q][e], p);
        z[q][e] = j + e == tcol ? tz[i] : __fmul_rn(s, c[e]);
        m = fmaxf(m, z[q][e]);
      }
      store4<kVec>(row + j, valid, c);
    }
    m = block_max(m, sh_max);
    float local = 0.0f;  // at most 8 terms, each <= 1
#pragma unroll
    for (int q = 0; q < kQuads; ++q)
#pragma unroll
      for (int e = 0; e < 4; ++e) local += expf(z[q][e] - m);  // exp(−inf) = 0 for missing columns
    const double sum = block_sum(static_cast<double>(local), sh_sum);
    if (threadIdx.x == 0) {
      part_max[i * tiles + tile] = m;
      part_sum[i * tiles + tile] = sum;
    }
  }
}

// One warp per row: the chunk's max and Σexp from the row's tile partials, in tile order per lane.
__global__ void forward_merge_kernel(const float* part_max, const double* part_sum, int64_t B, int64_t tiles,
                                     FwdOut out) {
  const int lane = threadIdx.x & 31;
  const int64_t step = static_cast<int64_t>(gridDim.x) * kWarps;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); i < B; i += step) {
    const float* pm = part_max + i * tiles;
    const double* ps = part_sum + i * tiles;
    float m = -INFINITY;
    for (int64_t t = lane; t < tiles; t += 32) m = fmaxf(m, pm[t]);
    m = warp_max(m);
    double s = 0.0;
    for (int64_t t = lane; t < tiles; t += 32) s += ps[t] * exp(static_cast<double>(pm[t]) - static_cast<double>(m));
    s = warp_sum(s);
    if (lane == 0) {
      out.max[i] = m;
      out.sum[i] = s;
    }
  }
}

// ---- backward_chunk

struct BwdRow {
  double target_g;  // G at the target
  float scale;      // s_i
  float max;        // the row's max logit
  float coef;       // inv_sum_i · gscale_i
  float pad_;
  int64_t tcol;     // the target's column in this chunk, or −1
};

// Grid (tiles, groups). Rows [y·rb, min(B, (y + 1)·rb)) in order. Writes cb <- G·wv, and
//   part_col[y, j]  = Σ_{rows of the group} G_ij·c_ij        (double)
//   part_bias[y, j] = Σ_{rows of the group} G_ij             (kBias)
//   part_row[(i·tiles + tile)·kWarps + warp] = Σ_{the warp's columns} G_ij·c_ij
// Launch bounds (256, 3): at most 85 registers, 3 blocks per SM, no spills in any variant (4 blocks
// would cap at 64 and spill the dbias ones).
template <bool kVec, bool kBias>
__global__ void __launch_bounds__(kThreads, 3)
    backward_tile_kernel(float* cb, const float* wv, int64_t B, int64_t n, int64_t rb, const BwdRow* rows,
                         bool clamp, float lo, float hi, double* part_col, double* part_bias, double* part_row) {
  const int64_t tile = blockIdx.x, tiles = gridDim.x;
  const int64_t i0 = static_cast<int64_t>(blockIdx.y) * rb, i1 = i0 + rb < B ? i0 + rb : B;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t j_first = tile * kTile + static_cast<int64_t>(threadIdx.x) * 4;
  float w[kQuads][4];
  double col[kQuads][4], bsum[kQuads][4];
#pragma unroll
  for (int q = 0; q < kQuads; ++q) {
    const int64_t j = j_first + q * kThreads * 4;
    const int64_t valid = j < n ? quad_valid(n, j) : 0;
    if (wv && valid) load4<kVec>(wv + j, valid, 1.0f, w[q]);
    else w[q][0] = w[q][1] = w[q][2] = w[q][3] = 1.0f;
#pragma unroll
    for (int e = 0; e < 4; ++e) col[q][e] = bsum[q][e] = 0.0;
  }
  // Software pipelining: row i + 1 is loaded before row i is processed and stored, so each thread has
  // two rows of loads in flight (the rows never alias).
  float next[kQuads][4] = {};
  auto load_row = [&](int64_t i) {
#pragma unroll
    for (int q = 0; q < kQuads; ++q) {
      const int64_t j = j_first + q * kThreads * 4;
      if (j < n) load4<kVec>(cb + i * n + j, quad_valid(n, j), 0.0f, next[q]);
    }
  };
  if (i0 < i1) load_row(i0);
  for (int64_t i = i0; i < i1; ++i) {
    float* row = cb + i * n;
    const BwdRow r = rows[i];
    float cur[kQuads][4];
#pragma unroll
    for (int q = 0; q < kQuads; ++q)
#pragma unroll
      for (int e = 0; e < 4; ++e) cur[q][e] = next[q][e];
    if (i + 1 < i1) load_row(i + 1);
    double racc = 0.0;
#pragma unroll
    for (int q = 0; q < kQuads; ++q) {
      const int64_t j = j_first + q * kThreads * 4;
      if (j >= n) continue;
      const int64_t valid = quad_valid(n, j);
      const float* c = cur[q];
      float g[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        g[e] = 0.0f;
        if (e >= valid) continue;
        float G;
        if (j + e == r.tcol) {
          G = static_cast<float>(r.target_g);
        } else {
          G = __fmul_rn(expf(__fmul_rn(r.scale, c[e]) - r.max), r.coef);
          if (clamp && (c[e] <= lo || c[e] >= hi)) G = 0.0f;
        }
        const double gc = static_cast<double>(G) * static_cast<double>(c[e]);
        racc += gc;
        col[q][e] += gc;
        if (kBias) bsum[q][e] += G;
        g[e] = wv ? __fmul_rn(G, w[q][e]) : G;
      }
      store4<kVec>(row + j, valid, g);
    }
    racc = warp_sum(racc);
    if (lane == 0) part_row[(i * tiles + tile) * kWarps + warp] = racc;
  }
#pragma unroll
  for (int q = 0; q < kQuads; ++q) {
    const int64_t j = j_first + q * kThreads * 4;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if (j + e >= n) continue;
      part_col[blockIdx.y * n + j + e] = col[q][e];
      if (kBias) part_bias[blockIdx.y * n + j + e] = bsum[q][e];
    }
  }
}

// colsum[j] = Σ_g part_col[g, j] in group order; dbias[j] (= or +=) Σ_g part_bias[g, j] when part_bias.
__global__ void column_merge_kernel(const double* part_col, const double* part_bias, int64_t groups, int64_t n,
                                    double* colsum, float* dbias, bool assign) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < n; j += step) {
    double s = 0.0;
    for (int64_t g = 0; g < groups; ++g) s += part_col[g * n + j];
    colsum[j] = s;
    if (part_bias) {
      double b = 0.0;
      for (int64_t g = 0; g < groups; ++g) b += part_bias[g * n + j];
      dbias[j] = assign ? static_cast<float>(b) : static_cast<float>(static_cast<double>(dbias[j]) + b);
    }
  }
}

// One warp per row: out[i] = Σ_k part[i·per_row + k] (lane-strided, then the butterfly).
__global__ void row_merge_kernel(const double* part, int64_t rows, int64_t per_row, double* out) {
  const int lane = threadIdx.x & 31;
  const int64_t step = static_cast<int64_t>(gridDim.x) * kWarps;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); i < rows; i += step) {
    double s = 0.0;
    for (int64_t k = lane; k < per_row; k += 32) s += part[i * per_row + k];
    s = warp_sum(s);
    if (lane == 0) out[i] = s;
  }
}

// ---- sub-centers

// One thread per (i, c): the max over the K sub-center cosines raw·winv (the first k on ties).
__global__ void subcenter_max_kernel(const float* raw, const float* winv, int64_t B, int64_t n, int64_t K, float* cos,
                                     uint8_t* amax) {
  const int64_t total = B * n, step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += step) {
    const int64_t i = idx / n, c = idx - i * n;
    const float* r = raw + (i * n + c) * K;
    const float* w = winv + c * K;
    float best = __fmul_rn(r[0], w[0]);
    int a = 0;
    for (int64_t k = 1; k < K; ++k) {
      const float v = __fmul_rn(r[k], w[k]);
      if (v > best) best = v, a = static_cast<int>(k);
    }
    cos[idx] = best;
    amax[idx] = static_cast<uint8_t>(a);
  }
}

// Grid (column blocks over n·K, groups). One thread per raw column r = c·K + k walks the group's rows
// in order: part[y, r] = Σ_{i: amax[i,c] = k} G[i,c]·raw[i,r]·winv[r]; raw <- G·winv at the arg-max, 0
// elsewhere.
__global__ void subcenter_expand_kernel(const float* g, const uint8_t* amax, const float* winv, int64_t B, int64_t n,
                                        int64_t K, int64_t rb, float* raw, double* part) {
  const int64_t nk = n * K;
  const int64_t i0 = static_cast<int64_t>(blockIdx.y) * rb, i1 = i0 + rb < B ? i0 + rb : B;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; r < nk; r += step) {
    const int64_t c = r / K;
    const int k = static_cast<int>(r - c * K);
    const float w = winv[r];
    double acc = 0.0;
    for (int64_t i = i0; i < i1; ++i) {
      float* p = raw + i * nk + r;
      const float G = g[i * n + c];
      if (amax[i * n + c] == k) {
        acc += static_cast<double>(G) * static_cast<double>(__fmul_rn(*p, w));
        *p = __fmul_rn(G, w);
      } else {
        *p = 0.0f;
      }
    }
    part[blockIdx.y * nk + r] = acc;
  }
}

// ---- row passes (one warp per row; lane l takes the quads l, l + 32, ... of the row)

template <bool kVec>
__global__ void row_norms_kernel(const float* v, int64_t rows, int64_t D, double eps, float* vhat, float* inv,
                                 uint8_t* small, double* norm) {
  const int lane = threadIdx.x & 31;
  for (int64_t i = warp_index(); i < rows; i += warp_count()) {
    const float* x = v + i * D;
    double ss = 0.0;
    for (int64_t j = lane * 4; j < D; j += 32 * 4) {
      const int64_t valid = quad_valid(D, j);
      float a[4];
      load4<kVec>(x + j, valid, 0.0f, a);
#pragma unroll
      for (int e = 0; e < 4; ++e) ss += static_cast<double>(a[e]) * static_cast<double>(a[e]);
    }
    ss = warp_sum(ss);
    const double nr = sqrt(ss);
    const double iv = 1.0 / fmax(nr, eps);
    if (lane == 0) {
      if (inv) inv[i] = static_cast<float>(iv);
      if (small) small[i] = nr < eps;
      if (norm) norm[i] = nr;
    }
    if (vhat) {
      float* h = vhat + i * D;
      for (int64_t j = lane * 4; j < D; j += 32 * 4) {
        const int64_t valid = quad_valid(D, j);
        float a[4];
        load4<kVec>(x + j, valid, 0.0f, a);
#pragma unroll
        for (int e = 0; e < 4; ++e) a[e] = static_cast<float>(static_cast<double>(a[e]) * iv);
        store4<kVec>(h + j, valid, a);
      }
    }
  }
}

// dst[to(r)] (= or +=) src[from(r)]: gather from = idx[r], to = r; scatter from = r, to = idx[r].
template <bool kVec, bool kAccum>
__global__ void copy_rows_kernel(const float* src, const int64_t* idx, int64_t count, int64_t D, bool scatter,
                                 float* dst) {
  const int lane = threadIdx.x & 31;
  for (int64_t r = warp_index(); r < count; r += warp_count()) {
    const float* s = src + (scatter ? r : idx[r]) * D;
    float* d = dst + (scatter ? idx[r] : r) * D;
    for (int64_t j = lane * 4; j < D; j += 32 * 4) {
      const int64_t valid = quad_valid(D, j);
      float a[4];
      load4<kVec>(s + j, valid, 0.0f, a);
      if (kAccum) {
        float o[4];
        load4<kVec>(d + j, valid, 0.0f, o);
#pragma unroll
        for (int e = 0; e < 4; ++e) a[e] = o[e] + a[e];
      }
      store4<kVec>(d + j, valid, a);
    }
  }
}

template <bool kVec>
__global__ void weight_grad_project_kernel(float* dw, const float* w, const float* winv, const uint8_t* small,
                                           const double* colsum, int64_t n, int64_t D) {
  const int lane = threadIdx.x & 31;
  for (int64_t r = warp_index(); r < n; r += warp_count()) {
    if (small[r]) continue;
    const double iv = winv[r];
    const float f = static_cast<float>(colsum[r] * iv * iv);
    const float* wr = w + r * D;
    float* dr = dw + r * D;
    for (int64_t j = lane * 4; j < D; j += 32 * 4) {
      const int64_t valid = quad_valid(D, j);
      float a[4], o[4];
      load4<kVec>(wr + j, valid, 0.0f, a);
      load4<kVec>(dr + j, valid, 0.0f, o);
#pragma unroll
      for (int e = 0; e < 4; ++e) o[e] -= f * a[e];
      store4<kVec>(dr + j, valid, o);
    }
  }
}

template <bool kVec>
__global__ void dx_final_kernel(const float* dxhat, const float* xhat, const float* xinv, const double* a, int64_t B,
                                int64_t D, float* dx) {
  const int lane = threadIdx.x & 31;
  for (int64_t i = warp_index(); i < B; i += warp_count()) {
    const float s = xinv ? xinv[i] : 1.0f;
    const float ai = static_cast<float>(a[i]);
    for (int64_t j = lane * 4; j < D; j += 32 * 4) {
      const int64_t valid = quad_valid(D, j);
      float g[4], h[4];
      load4<kVec>(dxhat + i * D + j, valid, 0.0f, g);
      load4<kVec>(xhat + i * D + j, valid, 0.0f, h);
#pragma unroll
      for (int e = 0; e < 4; ++e) g[e] = s * g[e] + ai * h[e];
      store4<kVec>(dx + i * D + j, valid, g);
    }
  }
}

// out[i] = max_k (x̂_i · w_{t·K+k}) · winv_{t·K+k} in double, t = target[i] (rows with t < 0 skipped).
__global__ void target_cosines_kernel(const float* xhat, const float* w, const float* winv, const int32_t* target,
                                      int64_t B, int64_t D, int64_t K, double* out) {
  const int lane = threadIdx.x & 31;
  for (int64_t i = warp_index(); i < B; i += warp_count()) {
    const int64_t t = target[i];
    if (t < 0) continue;
    const float* x = xhat + i * D;
    double best = -INFINITY;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t r = t * K + k;
      const float* wr = w + r * D;
      double dot = 0.0;
      for (int64_t j = lane; j < D; j += 32) dot += static_cast<double>(x[j]) * static_cast<double>(wr[j]);
      dot = warp_sum(dot) * static_cast<double>(winv[r]);
      best = dot > best ? dot : best;
    }
    if (lane == 0) out[i] = best;
  }
}

// diff_i = x_i − c_{y_i}; row_ss[i] = ‖diff_i‖² (double).
__global__ void center_diff_kernel(const float* x, const int32_t* labels, const float* centers, int64_t B, int64_t D,
                                   float* diff, double* row_ss) {
  const int lane = threadIdx.x & 31;
  for (int64_t i = warp_index(); i < B; i += warp_count()) {
    const float* c = centers + static_cast<int64_t>(labels[i]) * D;
    double ss = 0.0;
    for (int64_t j = lane; j < D; j += 32) {
      const float d = x[i * D + j] - c[j];
      diff[i * D + j] = d;
      ss += static_cast<double>(d) * static_cast<double>(d);
    }
    ss = warp_sum(ss);
    if (lane == 0) row_ss[i] = ss;
  }
}

// One block per present class p (grid-stride): c_{classes[p]} += coef[p]·Σ_{o in [off[p], off[p+1])} diff_{rows[o]},
// the rows summed in order, per column, in double.
__global__ void center_update_kernel(const float* diff, const int32_t* classes, const int32_t* offsets,
                                     const int32_t* rows, const double* coef, int64_t P, int64_t D, float* centers) {
  for (int64_t p = blockIdx.x; p < P; p += gridDim.x) {
    float* c = centers + static_cast<int64_t>(classes[p]) * D;
    const int32_t o0 = offsets[p], o1 = offsets[p + 1];
    const double cf = coef[p];
    for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
      double acc = 0.0;
      for (int32_t o = o0; o < o1; ++o) acc += diff[static_cast<int64_t>(rows[o]) * D + j];
      c[j] = static_cast<float>(static_cast<double>(c[j]) + cf * acc);
    }
  }
}

// ---- elementwise

__global__ void add_inplace_kernel(float* dst, const float* src, int64_t n) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n; k += step) dst[k] += src[k];
}

__global__ void scale_copy_kernel(const float* x, float a, int64_t n, float* y) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n; k += step) y[k] = a * x[k];
}

// Grid (column blocks, min(B, 65535)): out[i, j] = s_i·(out[i, j]·wv[j]) (+ bias[j]).
__global__ void scale_columns_kernel(float* out, const float* wv, const float* bias, const float* scale, int64_t B,
                                     int64_t n) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.y; i < B; i += gridDim.y) {
    const float s = scale[i];
    float* o = out + i * n;
    for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < n; j += step) {
      float v = wv ? __fmul_rn(o[j], wv[j]) : o[j];
      v = __fmul_rn(s, v);
      if (bias) v = __fadd_rn(v, bias[j]);
      o[j] = v;
    }
  }
}

// ---- host side

// A device buffer that only grows (from the caching allocator; stream order makes reuse safe).
class Scratch {
 public:
  void* get(const Device& d, size_t bytes) {
    bytes = std::max<size_t>(bytes, 256);
    if (bytes > cap_) {
      t_ = Tensor();  // back to the pool first: the new block may reuse it
      const size_t want = std::max(bytes, cap_ + cap_ / 2);
      t_ = Tensor::empty({static_cast<int64_t>(want)}, DType::U8, d);
      cap_ = want;
    }
    return t_.data();
  }
  template <typename T>
  T* get_as(const Device& d, size_t count) {
    return static_cast<T*>(get(d, count * sizeof(T)));
  }

 private:
  Tensor t_;
  size_t cap_ = 0;
};

// Byte offsets of arrays packed into one buffer (each section 16-byte aligned).
class Layout {
 public:
  template <typename T>
  size_t add(size_t count) {
    const size_t off = (bytes_ + 15) & ~size_t(15);
    bytes_ = off + count * sizeof(T);
    return off;
  }
  size_t bytes() const { return bytes_; }

 private:
  size_t bytes_ = 0;
};

template <typename T>
T* at(void* base, size_t off) {
  return reinterpret_cast<T*>(static_cast<unsigned char*>(base) + off);
}

cuda::MathMode math_mode(GemmPrecision p) {
  switch (p) {
    case GemmPrecision::F32: return cuda::MathMode::F32;
    case GemmPrecision::TF32: return cuda::MathMode::TF32;
    case GemmPrecision::BF16: return cuda::MathMode::BF16;
    case GemmPrecision::F16: return cuda::MathMode::F16;
  }
  fail(Code::InvalidArgument, str("Expected GEMM precision F32 (0), BF16 (1), TF32 (2) or F16 (3) but received ",
                                  static_cast<int>(p)));
}

// The target's column in the chunk [j0, j0 + n), or −1.
inline int64_t target_col(int32_t target, int64_t j0, int64_t n) {
  const int64_t t = static_cast<int64_t>(target) - j0;
  return target >= 0 && t >= 0 && t < n ? t : -1;
}

class CudaKernels final : public Kernels {
 public:
  CudaKernels(const Device& device, GemmPrecision precision)
      : device_(device), dev_(device.index), mode_(math_mode(precision)) {}

  void row_norms(const float* v, int64_t rows, int64_t D, float* vhat, float* inv, uint8_t* small,
                 double* host_norm) override {
    if (rows <= 0) return;
    cudaStream_t s = cuda::detail::stream(dev_);
    double* norm = host_norm ? res_.get_as<double>(device_, static_cast<size_t>(rows)) : nullptr;
    cuda::detail::DeviceGuard g(dev_);
    const bool vec = D % 4 == 0 && aligned16(v) && (!vhat || aligned16(vhat));
    const double eps = kNormEps;
    if (vec) row_norms_kernel<true><<<warp_grid(rows), kThreads, 0, s>>>(v, rows, D, eps, vhat, inv, small, norm);
    else row_norms_kernel<false><<<warp_grid(rows), kThreads, 0, s>>>(v, rows, D, eps, vhat, inv, small, norm);
    FC_LAUNCH_CHECK("row_norms_kernel", "rows=", rows, " D=", D);
    if (host_norm) cuda::copy_d2h(dev_, host_norm, norm, static_cast<size_t>(rows) * sizeof(double));
  }

  void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
            const float* B, int64_t ldb, float beta, float* C, int64_t ldc) override {
    cuda::sgemm(dev_, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, mode_);
  }

  void gather_rows(const float* src, const std::vector<int64_t>& idx, int64_t D, float* dst) override {
    copy_rows(src, idx, D, dst, false, false);
  }

  void scatter_rows(const float* src, const std::vector<int64_t>& idx, int64_t D, float* dst,
                    bool accumulate) override {
    copy_rows(src, idx, D, dst, true, accumulate);
  }

  void fill_zero(void* dst, size_t bytes) override { cuda::memset_zero(dev_, dst, bytes); }

  void add_inplace(float* dst, const float* src, int64_t n) override {
    if (n <= 0) return;
    cudaStream_t s = cuda::detail::stream(dev_);
    cuda::detail::DeviceGuard g(dev_);
    add_inplace_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(dst, src, n);
    FC_LAUNCH_CHECK("add_inplace_kernel", "n=", n);
  }

  void subcenter_max(const float* raw, const float* winv, int64_t B, int64_t n, int64_t K, float* cos,
                     uint8_t* amax) override {
    if (B <= 0 || n <= 0) return;
    cudaStream_t s = cuda::detail::stream(dev_);
    cuda::detail::DeviceGuard g(dev_);
    subcenter_max_kernel<<<grid_for(B * n, kThreads), kThreads, 0, s>>>(raw, winv, B, n, K, cos, amax);
    FC_LAUNCH_CHECK("subcenter_max_kernel", "B=", B, " n=", n, " K=", K);
  }

  void subcenter_expand(const float* g, const uint8_t* amax, const float* winv, int64_t B, int64_t n, int64_t K,
                        float* raw, double* colsum) override {
    if (B <= 0 || n <= 0) return;
    const int64_t nk = n * K;
    const unsigned col_blocks = grid_for(nk, kThreads);
    const int64_t rb = rows_per_group(B, col_blocks);
    const int64_t groups = ceil_div(B, rb);
    cudaStream_t s = cuda::detail::stream(dev_);
    double* part = part_a_.get_as<double>(device_, static_cast<size_t>(groups * nk));
    cuda::detail::DeviceGuard guard(dev_);
    subcenter_expand_kernel<<<dim3(col_blocks, static_cast<unsigned>(groups)), kThreads, 0, s>>>(g, amax, winv, B, n,
                                                                                                 K, rb, raw, part);
    FC_LAUNCH_CHECK("subcenter_expand_kernel", "B=", B, " n=", n, " K=", K, " groups=", groups);
    column_merge_kernel<<<grid_for(nk, kThreads), kThreads, 0, s>>>(part, nullptr, groups, nk, colsum, nullptr, true);
    FC_LAUNCH_CHECK("column_merge_kernel", "groups=", groups, " n=", nk);
  }

  void forward_chunk(float* cb, const float* wv, const float* bias, int64_t B, int64_t n, int64_t j0,
                     const RowTable& rows, const ElementConfig& cfg, ChunkRowStats& out) override {
    if (B <= 0 || n <= 0) return;
    // Upload the per-row table.
    fwd_rows_.resize(static_cast<size_t>(B));
    for (int64_t i = 0; i < B; ++i) {
      FwdRow& r = fwd_rows_[static_cast<size_t>(i)];
      r.fn = rows.fn[static_cast<size_t>(i)];
      r.scale = rows.scale[static_cast<size_t>(i)];
      r.tcol = target_col(rows.target[static_cast<size_t>(i)], j0, n);
    }
    FwdRow* drows = up_.get_as<FwdRow>(device_, static_cast<size_t>(B));
    cuda::copy_h2d(dev_, drows, fwd_rows_.data(), static_cast<size_t>(B) * sizeof(FwdRow));
    // Results (copied back in one piece) and partials.
    Layout lay;
    const size_t o_sum = lay.add<double>(B), o_tcos = lay.add<double>(B), o_tdpsi = lay.add<double>(B);
    const size_t o_max = lay.add<float>(B), o_tz = lay.add<float>(B);
    void* res = res_.get(device_, lay.bytes());
    const FwdOut fo{at<double>(res, o_sum), at<double>(res, o_tcos), at<double>(res, o_tdpsi), at<float>(res, o_max),
                    at<float>(res, o_tz)};
    const int64_t tiles = ceil_div(n, kTile);
    float* part_max = part_a_.get_as<float>(device_, static_cast<size_t>(B * tiles));
    double* part_sum = part_b_.get_as<double>(device_, static_cast<size_t>(B * tiles));

    cudaStream_t s = cuda::detail::stream(dev_);
    cuda::detail::DeviceGuard g(dev_);
    const ElemParams p{wv, cfg.has_bias ? bias : nullptr, cfg.clamp_all, cfg.lo, cfg.hi};
    forward_target_kernel<<<static_cast<unsigned>(ceil_div(B, 128)), 128, 0, s>>>(cb, B, n, drows, p, fo);
    FC_LAUNCH_CHECK("forward_target_kernel", "B=", B, " n=", n);
    const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(std::min<int64_t>(B, kMaxGridY)));
    const bool vec = n % 4 == 0 && aligned16(cb) && (!p.wv || aligned16(p.wv)) && (!p.bias || aligned16(p.bias));
    if (vec) forward_tile_kernel<true><<<grid, kThreads, 0, s>>>(cb, B, n, drows, p, fo.tz, part_max, part_sum);
    else forward_tile_kernel<false><<<grid, kThreads, 0, s>>>(cb, B, n, drows, p, fo.tz, part_max, part_sum);
    FC_LAUNCH_CHECK("forward_tile_kernel", "B=", B, " n=", n, " tiles=", tiles, " vec=", vec);
    forward_merge_kernel<<<warp_grid(B), kThreads, 0, s>>>(part_max, part_sum, B, tiles, fo);
    FC_LAUNCH_CHECK("forward_merge_kernel", "B=", B, " tiles=", tiles);

    res_host_.resize(lay.bytes());
    cuda::copy_d2h(dev_, res_host_.data(), res, lay.bytes());
    void* h = res_host_.data();
    for (int64_t i = 0; i < B; ++i) {
      const size_t k = static_cast<size_t>(i);
      out.max[k] = at<float>(h, o_max)[i];
      out.sum[k] = at<double>(h, o_sum)[i];
      if (fwd_rows_[k].tcol < 0) continue;
      out.target_cos[k] = at<double>(h, o_tcos)[i];
      out.target_dpsi[k] = at<double>(h, o_tdpsi)[i];
      out.target_z[k] = at<float>(h, o_tz)[i];
    }
  }

  void backward_chunk(float* cb, const float* wv, int64_t B, int64_t n, int64_t j0, const RowTable& rows,
                      const ElementConfig& cfg, const float* row_max, const float* inv_sum, const float* gscale,
                      const double* target_g, double* colsum, double* host_rowsum, float* dbias,
                      bool bias_assign) override {
    if (B <= 0 || n <= 0) return;
    bwd_rows_.resize(static_cast<size_t>(B));
    for (int64_t i = 0; i < B; ++i) {
      BwdRow& r = bwd_rows_[static_cast<size_t>(i)];
      r.target_g = target_g[i];
      r.scale = rows.scale[static_cast<size_t>(i)];
      r.max = row_max[i];
      r.coef = inv_sum[i] * gscale[i];
      r.pad_ = 0.0f;
      r.tcol = target_col(rows.target[static_cast<size_t>(i)], j0, n);
    }
    BwdRow* drows = up_.get_as<BwdRow>(device_, static_cast<size_t>(B));
    cuda::copy_h2d(dev_, drows, bwd_rows_.data(), static_cast<size_t>(B) * sizeof(BwdRow));

    const int64_t tiles = ceil_div(n, kTile);
    const int64_t rb = rows_per_group(B, tiles);
    const int64_t groups = ceil_div(B, rb);
    double* part_col = part_a_.get_as<double>(device_, static_cast<size_t>(groups * n));
    double* part_bias = dbias ? part_b_.get_as<double>(device_, static_cast<size_t>(groups * n)) : nullptr;
    double* part_row = part_c_.get_as<double>(device_, static_cast<size_t>(B * tiles * kWarps));
    double* rowsum = res_.get_as<double>(device_, static_cast<size_t>(B));

    cudaStream_t s = cuda::detail::stream(dev_);
    cuda::detail::DeviceGuard g(dev_);
    const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(groups));
    const bool vec = n % 4 == 0 && aligned16(cb) && (!wv || aligned16(wv));
    const bool clamp = cfg.clamp_all;
    if (vec && dbias)
      backward_tile_kernel<true, true><<<grid, kThreads, 0, s>>>(cb, wv, B, n, rb, drows, clamp, cfg.lo, cfg.hi,
                                                                 part_col, part_bias, part_row);
    else if (vec)
      backward_tile_kernel<true, false><<<grid, kThreads, 0, s>>>(cb, wv, B, n, rb, drows, clamp, cfg.lo, cfg.hi,
                                                                  part_col, part_bias, part_row);
    else if (dbias)
      backward_tile_kernel<false, true><<<grid, kThreads, 0, s>>>(cb, wv, B, n, rb, drows, clamp, cfg.lo, cfg.hi,
                                                                  part_col, part_bias, part_row);
    else
      backward_tile_kernel<false, false><<<grid, kThreads, 0, s>>>(cb, wv, B, n, rb, drows, clamp, cfg.lo, cfg.hi,
                                                                   part_col, part_bias, part_row);
    FC_LAUNCH_CHECK("backward_tile_kernel", "B=", B, " n=", n, " tiles=", tiles, " groups=", groups, " vec=", vec);
    column_merge_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(part_col, part_bias, groups, n, colsum, dbias,
                                                                   bias_assign);
    FC_LAUNCH_CHECK("column_merge_kernel", "groups=", groups, " n=", n);
    row_merge_kernel<<<warp_grid(B), kThreads, 0, s>>>(part_row, B, tiles * kWarps, rowsum);
    FC_LAUNCH_CHECK("row_merge_kernel", "B=", B, " per_row=", tiles * kWarps);

    row_host_.resize(static_cast<size_t>(B));
    cuda::copy_d2h(dev_, row_host_.data(), rowsum, static_cast<size_t>(B) * sizeof(double));
    for (int64_t i = 0; i < B; ++i) host_rowsum[i] += row_host_[static_cast<size_t>(i)];
  }

  void weight_grad_project(float* dw, const float* w, const float* winv, const uint8_t* small, const double* colsum,
                           int64_t n, int64_t D) override {
    if (n <= 0 || D <= 0) return;
    cudaStream_t s = cuda::detail::stream(dev_);
    cuda::detail::DeviceGuard g(dev_);
    if (D % 4 == 0 && aligned16(dw) && aligned16(w))
      weight_grad_project_kernel<true><<<warp_grid(n), kThreads, 0, s>>>(dw, w, winv, small, colsum, n, D);
    else
      weight_grad_project_kernel<false><<<warp_grid(n), kThreads, 0, s>>>(dw, w, winv, small, colsum, n, D);
    FC_LAUNCH_CHECK("weight_grad_project_kernel", "n=", n, " D=", D);
  }

  void dx_final(const float* dxhat, const float* xhat, const float* xinv, const double* a, int64_t B, int64_t D,
                float* dx) override {
    if (B <= 0 || D <= 0) return;
    double* da = up_.get_as<double>(device_, static_cast<size_t>(B));
    cuda::copy_h2d(dev_, da, a, static_cast<size_t>(B) * sizeof(double));
    cudaStream_t s = cuda::detail::stream(dev_);
    cuda::detail::DeviceGuard g(dev_);
    if (D % 4 == 0 && aligned16(dxhat) && aligned16(xhat) && aligned16(dx))
      dx_final_kernel<true><<<warp_grid(B), kThreads, 0, s>>>(dxhat, xhat, xinv, da, B, D, dx);
    else
      dx_final_kernel<false><<<warp_grid(B), kThreads, 0, s>>>(dxhat, xhat, xinv, da, B, D, dx);
    FC_LAUNCH_CHECK("dx_final_kernel", "B=", B, " D=", D);
  }

  void scale_columns(float* out, const float* wv, const float* bias, const float* host_scale, int64_t B,
                     int64_t n) override {
    if (B <= 0 || n <= 0) return;
    float* ds = up_.get_as<float>(device_, static_cast<size_t>(B));
    cuda::copy_h2d(dev_, ds, host_scale, static_cast<size_t>(B) * sizeof(float));
    cudaStream_t s = cuda::detail::stream(dev_);
    cuda::detail::DeviceGuard g(dev_);
    const unsigned gx = static_cast<unsigned>(std::min<int64_t>(ceil_div(n, kThreads), 4096));
    const dim3 grid(gx, static_cast<unsigned>(std::min<int64_t>(B, kMaxGridY)));
    scale_columns_kernel<<<grid, kThreads, 0, s>>>(out, wv, bias, ds, B, n);
    FC_LAUNCH_CHECK("scale_columns_kernel", "B=", B, " n=", n);
  }

  void target_cosines(const float* xhat, const float* w, const float* winv, const std::vector<int32_t>& target,
                      int64_t D, int64_t K, double* host_out) override {
    const int64_t B = static_cast<int64_t>(target.size());
    if (B <= 0) return;
    int32_t* dt = up_.get_as<int32_t>(device_, static_cast<size_t>(B));
    cuda::copy_h2d(dev_, dt, target.data(), static_cast<size_t>(B) * sizeof(int32_t));
    double* dout = res_.get_as<double>(device_, static_cast<size_t>(B));
    cudaStream_t s = cuda::detail::stream(dev_);
    {
      cuda::detail::DeviceGuard g(dev_);
      target_cosines_kernel<<<warp_grid(B), kThreads, 0, s>>>(xhat, w, winv, dt, B, D, K, dout);
      FC_LAUNCH_CHECK("target_cosines_kernel", "B=", B, " D=", D, " K=", K);
    }
    cuda::copy_d2h(dev_, host_out, dout, static_cast<size_t>(B) * sizeof(double));
    for (int64_t i = 0; i < B; ++i)
      if (target[static_cast<size_t>(i)] < 0) host_out[i] = std::numeric_limits<double>::quiet_NaN();
  }

  double center_diff(const float* x, const std::vector<int32_t>& labels, const float* centers, int64_t D,
                     float* diff) override {
    const int64_t B = static_cast<int64_t>(labels.size());
    if (B <= 0) return 0.0;
    int32_t* dl = up_.get_as<int32_t>(device_, static_cast<size_t>(B));
    cuda::copy_h2d(dev_, dl, labels.data(), static_cast<size_t>(B) * sizeof(int32_t));
    double* dss = res_.get_as<double>(device_, static_cast<size_t>(B));
    cudaStream_t s = cuda::detail::stream(dev_);
    {
      cuda::detail::DeviceGuard g(dev_);
      center_diff_kernel<<<warp_grid(B), kThreads, 0, s>>>(x, dl, centers, B, D, diff, dss);
      FC_LAUNCH_CHECK("center_diff_kernel", "B=", B, " D=", D);
    }
    row_host_.resize(static_cast<size_t>(B));
    cuda::copy_d2h(dev_, row_host_.data(), dss, static_cast<size_t>(B) * sizeof(double));
    double total = 0.0;
    for (double v : row_host_) total += v;
    return total;
  }

  void center_update(const float* diff, const std::vector<int32_t>& classes,
                     const std::vector<std::vector<int32_t>>& rows_of, const std::vector<double>& coef, int64_t D,
                     float* centers) override {
    const int64_t P = static_cast<int64_t>(classes.size());
    if (P <= 0 || D <= 0) return;
    // CSR: offsets[P + 1] into the concatenated row lists.
    std::vector<int32_t> offsets(static_cast<size_t>(P + 1), 0), flat;
    for (int64_t p = 0; p < P; ++p) {
      const std::vector<int32_t>& r = rows_of[static_cast<size_t>(p)];
      flat.insert(flat.end(), r.begin(), r.end());
      offsets[static_cast<size_t>(p + 1)] = static_cast<int32_t>(flat.size());
    }
    Layout lay;
    const size_t o_cls = lay.add<int32_t>(P), o_off = lay.add<int32_t>(P + 1), o_rows = lay.add<int32_t>(flat.size());
    const size_t o_coef = lay.add<double>(P);
    up_host_.assign(lay.bytes(), 0);
    void* h = up_host_.data();
    std::memcpy(at<int32_t>(h, o_cls), classes.data(), static_cast<size_t>(P) * sizeof(int32_t));
    std::memcpy(at<int32_t>(h, o_off), offsets.data(), offsets.size() * sizeof(int32_t));
    if (!flat.empty()) std::memcpy(at<int32_t>(h, o_rows), flat.data(), flat.size() * sizeof(int32_t));
    std::memcpy(at<double>(h, o_coef), coef.data(), static_cast<size_t>(P) * sizeof(double));
    void* d = up_.get(device_, lay.bytes());
    cuda::copy_h2d(dev_, d, h, lay.bytes());
    cudaStream_t s = cuda::detail::stream(dev_);
    cuda::detail::DeviceGuard g(dev_);
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(P, 65535));
    center_update_kernel<<<blocks, 128, 0, s>>>(diff, at<int32_t>(d, o_cls), at<int32_t>(d, o_off),
                                                at<int32_t>(d, o_rows), at<double>(d, o_coef), P, D, centers);
    FC_LAUNCH_CHECK("center_update_kernel", "classes=", P, " D=", D);
  }

  void scale_copy(const float* x, float a, int64_t n, float* y) override {
    if (n <= 0) return;
    cudaStream_t s = cuda::detail::stream(dev_);
    cuda::detail::DeviceGuard g(dev_);
    scale_copy_kernel<<<grid_for(n, kThreads), kThreads, 0, s>>>(x, a, n, y);
    FC_LAUNCH_CHECK("scale_copy_kernel", "n=", n);
  }

 private:
  void copy_rows(const float* src, const std::vector<int64_t>& idx, int64_t D, float* dst, bool scatter, bool accum) {
    const int64_t count = static_cast<int64_t>(idx.size());
    if (count <= 0 || D <= 0) return;
    int64_t* di = up_.get_as<int64_t>(device_, static_cast<size_t>(count));
    cuda::copy_h2d(dev_, di, idx.data(), static_cast<size_t>(count) * sizeof(int64_t));
    cudaStream_t s = cuda::detail::stream(dev_);
    cuda::detail::DeviceGuard g(dev_);
    const bool vec = D % 4 == 0 && aligned16(src) && aligned16(dst);
    const unsigned grid = warp_grid(count);
    if (vec && accum) copy_rows_kernel<true, true><<<grid, kThreads, 0, s>>>(src, di, count, D, scatter, dst);
    else if (vec) copy_rows_kernel<true, false><<<grid, kThreads, 0, s>>>(src, di, count, D, scatter, dst);
    else if (accum) copy_rows_kernel<false, true><<<grid, kThreads, 0, s>>>(src, di, count, D, scatter, dst);
    else copy_rows_kernel<false, false><<<grid, kThreads, 0, s>>>(src, di, count, D, scatter, dst);
    FC_LAUNCH_CHECK("copy_rows_kernel", scatter ? "scatter" : "gather", " rows=", count, " D=", D);
  }

  Device device_;
  int dev_;
  cuda::MathMode mode_;
  // Device scratch: up_ host inputs, res_ results for the host, part_* reduction partials.
  Scratch up_, res_, part_a_, part_b_, part_c_;
  // Host staging.
  std::vector<FwdRow> fwd_rows_;
  std::vector<BwdRow> bwd_rows_;
  std::vector<unsigned char> up_host_, res_host_;
  std::vector<double> row_host_;
};

}  // namespace

std::unique_ptr<Kernels> make_cuda_kernels(const Device& device, GemmPrecision precision) {
  FC_CHECK(device.is_cuda(), InvalidArgument, "Expected a CUDA device for the CUDA head kernels but received ",
           device.str());
  cuda::require_device(device.index);
  return std::make_unique<CudaKernels>(device, precision);
}

}  // namespace heads
}  // namespace fc
