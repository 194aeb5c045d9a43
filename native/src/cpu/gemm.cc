// @file gemm.cc
// @brief fc::sgemm: argument validation, run-time level dispatch, the packed cache-blocked driver
// (GotoBLAS/BLIS loop nest), the M == 1 / N == 1 GEMV path, threading, the portable kernels, the
// bf16 packing, measure_fma_peak and sgemm_kernel_name.
//
// Loop nest of one task (a rectangle of C; a task never splits K):
//   for jc in its columns step nc        op(B) block kc x nc, packed thread-private (L2/L3)
//     for pc in 0..K step kc              pc == 0 applies beta; later blocks add to C
//       for ic in its rows step mc        op(A) block mc x kc, packed thread-private (L2)
//         pack op(A)[ic:ic+mc, pc:pc+kc] into mr-tall micro-panels
//         for jr in 0..nc step nr         one B micro-panel (kc x nr), reused by the whole ir loop
//           for ir in 0..mc step mr       micro-kernel: an mr x nr tile of C in registers, A micro-
//                                         panels streaming from the L2-resident A block
// B panels come one of three ways (BSource): the whole kc x nc block packed before the ic loop
// (row-major B: long sequential row reads), packed chunk by chunk during the first ic block right
// before use (trans_b: the transposing pack's output is consumed while hot), or read in place by
// the kernel without packing (fp32, row-major B, tasks of <= 128 rows, where a packed panel would
// serve too few A panels to repay the copy; im2col-shaped convolutions).
//
// Threads: C is cut into tm x tn rectangles (tm * tn = threads used), choosing the split that packs
// least; each thread packs its own panels, so a call is one ThreadPool::run. Every C element is one
// micro-kernel FMA chain over k inside a kc block, blocks added in order pc = 0, kc, 2kc, ..., and kc
// depends only on K and the cache sizes. So results are bitwise identical run to run AND for any
// thread count; the path (GEMV or packed) depends on the shape only.
#include "facecuda/gemm.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/gemm_internal.h"
#include "facecuda/cpu_info.h"
#include "facecuda/error.h"
#include "facecuda/threadpool.h"

namespace fc {
namespace gemm {

uint16_t to_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest, ties to even
  return static_cast<uint16_t>(u >> 16);
}

float round_to_f16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint32_t a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) return x;  // Inf and NaN stay
  if (a < 0x38800000u) {           // below 2^-14: the fp16 subnormal grid, a quantum of 2^-24
    return static_cast<float>(std::nearbyint(static_cast<double>(x) * 16777216.0) / 16777216.0);
  }
  u += 0xfffu + ((u >> 13) & 1u);  // keep 10 mantissa bits, round to nearest, ties to even
  u &= 0xffffe000u;
  float r;
  std::memcpy(&r, &u, 4);
  return std::fabs(r) > 65504.0f ? std::copysign(std::numeric_limits<float>::infinity(), x) : r;
}

namespace {

inline float from_bf16(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// ---- portable kernels (plain C++; the compiler vectorizes them for the baseline ISA)

constexpr int kPortMR = 6, kPortNR = 8;

void micro_portable(int64_t kc, const void* ap_, const void* bp_, int64_t ldbp, float* c, int64_t ldc, int m,
                    int n, float alpha, float beta) {
  const float* ap = static_cast<const float*>(ap_);
  const float* bp = static_cast<const float*>(bp_);
  float acc[kPortMR][kPortNR] = {};
  for (int64_t k = 0; k < kc; ++k) {
    for (int i = 0; i < kPortMR; ++i) {
      const float a = ap[i];
      for (int j = 0; j < kPortNR; ++j) acc[i][j] += a * bp[j];
    }
    ap += kPortMR;
    bp += ldbp;
  }
  for (int i = 0; i < m; ++i) {
    float* cr = c + i * ldc;
    if (beta == 0.0f) {
      for (int j = 0; j < n; ++j) cr[j] = alpha * acc[i][j];
    } else {
      for (int j = 0; j < n; ++j) cr[j] = alpha * acc[i][j] + beta * cr[j];
    }
  }
}

void dot_portable(int64_t K, const float* x, const float* a, int64_t lda, int64_t rows, float* y,
                  int64_t incy, float alpha, float beta) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* ar = a + r * lda;
    float acc[8] = {};
    int64_t k = 0;
    for (; k + 8 <= K; k += 8)
      for (int j = 0; j < 8; ++j) acc[j] += x[k + j] * ar[k + j];
    for (int j = 0; k < K; ++k, ++j) acc[j] += x[k] * ar[k];
    const float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    float* yr = y + r * incy;
    *yr = beta == 0.0f ? alpha * s : alpha * s + beta * *yr;
  }
}

void axpy_portable(int64_t K, const float* x, const float* a, int64_t lda, int64_t cols, float* y,
                   int64_t incy, float alpha, float beta) {
  constexpr int64_t kChunk = 256;
  float acc[kChunk];
  for (int64_t j0 = 0; j0 < cols; j0 += kChunk) {
    const int64_t w = std::min(kChunk, cols - j0);
    for (int64_t j = 0; j < w; ++j) acc[j] = 0.0f;
    for (int64_t k = 0; k < K; ++k) {
      const float xv = x[k];
      const float* ak = a + k * lda + j0;
      for (int64_t j = 0; j < w; ++j) acc[j] += xv * ak[j];
    }
    for (int64_t j = 0; j < w; ++j) {
      float* yj = y + (j0 + j) * incy;
      *yj = beta == 0.0f ? alpha * acc[j] : alpha * acc[j] + beta * *yj;
    }
  }
}

double fma_loop_portable(int64_t iters, float* sink) {
  // 8 independent chains of 4 lanes (one SSE register each); mul + add, the baseline has no FMA.
  float acc[8][4];
  for (int i = 0; i < 8; ++i)
    for (int l = 0; l < 4; ++l) acc[i][l] = static_cast<float>(i + l);
  const float b = 0.999999f, c = 1e-3f;  // converges to 1000: no overflow, no denormals
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < 8; ++i)
      for (int l = 0; l < 4; ++l) acc[i][l] = acc[i][l] * b + c;
  float s = 0;
  for (int i = 0; i < 8; ++i)
    for (int l = 0; l < 4; ++l) s += acc[i][l];
  *sink = s;
  return static_cast<double>(iters) * 8 * 4 * 2;
}

// ---- packing (layouts in gemm_internal.h)

enum class PackMode { F32, F32Rounded, F16Rounded, Bf16Pairs };

// Packs `on` outer indices (rows of op(A) or columns of op(B)) starting at o0, k in [k0, k0 + kn),
// into w-wide micro-panels. Element (o, k) is src[o * ld + k] when k_contig, else src[k * ld + o].
void pack_panels(const float* src, int64_t ld, bool k_contig, int64_t o0, int64_t on, int64_t k0,
                 int64_t kn, int w, PackMode mode, void* dst) {
  if (mode == PackMode::Bf16Pairs) {
    const int64_t kp = round_up(kn, 2);
    uint16_t* d = static_cast<uint16_t*>(dst);
    for (int64_t p0 = 0; p0 < on; p0 += w, d += w * kp) {
      const int rows = static_cast<int>(std::min<int64_t>(w, on - p0));
      for (int64_t k = 0; k < kp; ++k) {
        uint16_t* dk = d + (k >> 1) * 2 * w + (k & 1);
        if (k >= kn) {
          for (int r = 0; r < w; ++r) dk[2 * r] = 0;
          continue;
        }
        if (k_contig) {
          const float* s = src + (o0 + p0) * ld + k0 + k;
          for (int r = 0; r < rows; ++r) dk[2 * r] = to_bf16(s[r * ld]);
        } else {
          const float* s = src + (k0 + k) * ld + o0 + p0;
          for (int r = 0; r < rows; ++r) dk[2 * r] = to_bf16(s[r]);
        }
        for (int r = rows; r < w; ++r) dk[2 * r] = 0;
      }
    }
    return;
  }
  const bool round = mode == PackMode::F32Rounded;
  float* d = static_cast<float*>(dst);
  for (int64_t p0 = 0; p0 < on; p0 += w, d += w * kn) {
    const int rows = static_cast<int>(std::min<int64_t>(w, on - p0));
    if (k_contig) {
      // Transposing copy, 8 k at a time so each source row is read in 32-byte runs.
      int64_t k = 0;
      for (; k + 8 <= kn; k += 8) {
        for (int r = 0; r < rows; ++r) {
          const float* s = src + (o0 + p0 + r) * ld + k0 + k;
          for (int kk = 0; kk < 8; ++kk) d[(k + kk) * w + r] = s[kk];
        }
      }
      for (; k < kn; ++k) {
        for (int r = 0; r < rows; ++r) d[k * w + r] = src[(o0 + p0 + r) * ld + k0 + k];
      }
      if (rows < w)
        for (k = 0; k < kn; ++k)
          for (int r = rows; r < w; ++r) d[k * w + r] = 0.0f;
    } else {
      for (int64_t k = 0; k < kn; ++k) {
        const float* s = src + (k0 + k) * ld + o0 + p0;
        float* dk = d + k * w;
        for (int r = 0; r < rows; ++r) dk[r] = s[r];
        for (int r = rows; r < w; ++r) dk[r] = 0.0f;
      }
    }
    if (round)
      for (int64_t e = 0; e < w * kn; ++e) d[e] = from_bf16(to_bf16(d[e]));
    else if (mode == PackMode::F16Rounded)
      for (int64_t e = 0; e < w * kn; ++e) d[e] = round_to_f16(d[e]);
  }
}

// Thread-private, 64-byte aligned scratch, grown on demand and kept for the next call.
class Scratch {
 public:
  ~Scratch() { std::free(p_); }
  void* get(size_t bytes) {
    if (bytes > cap_) {
      std::free(p_);
      p_ = nullptr;
      cap_ = 0;
      size_t want = static_cast<size_t>(round_up(static_cast<int64_t>(bytes), 4096));
      p_ = std::aligned_alloc(64, want);
      if (!p_) fail(Code::OutOfMemory, str("sgemm: could not allocate ", want, " bytes of packing scratch"));
      cap_ = want;
    }
    return p_;
  }

 private:
  void* p_ = nullptr;
  size_t cap_ = 0;
};

thread_local Scratch tl_pack_a, tl_pack_b;

struct Problem {
  bool ta, tb;
  int64_t M, N, K;
  float alpha;
  const float* A;
  int64_t lda;
  const float* B;
  int64_t ldb;
  float beta;
  float* C;
  int64_t ldc;
  // Row epilogue (GemmOptions::row_scale / row_src): C[i, :] += es[i]·esrc[i·eld + :]; null = none.
  const float* es = nullptr;
  const float* esrc = nullptr;
  int64_t eld = 0;
};

// The row epilogue on C[r0:r1, c0:c1].
void apply_epilogue(const Problem& pb, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
  if (!pb.es) return;
  for (int64_t i = r0; i < r1; ++i) {
    const float e = pb.es[i];
    if (e == 0.0f) continue;
    float* cr = pb.C + i * pb.ldc;
    const float* sr = pb.esrc + i * pb.eld;
    for (int64_t j = c0; j < c1; ++j) cr[j] += e * sr[j];
  }
}

struct Plan {
  MicroKernel kern;
  PackFn pack;  // the set's vectorized packer for `mode`, or null for pack_panels
  int mr, nr;
  PackMode mode;
  size_t esize;  // bytes per packed element
  int64_t mc, kc, nc;
  int64_t nchunk;  // columns of B packed at a time during the first row block (multiple of nr)
};

// The kc actually used for K: the cache kc, balanced so the last block is not a sliver (a pure
// function of K and the blocking, which keeps results thread-count independent).
int64_t balanced_kc(int64_t K, int64_t kc) {
  if (K <= kc) return K;
  return round_up(ceil_div(K, ceil_div(K, kc)), 4);
}

// How a task gets its B micro-panels.
enum class BSource {
  Whole,    // pack the kc x nc block, then run all row blocks over it
  Chunked,  // pack chunk by chunk during the first row block, right before use (still hot in L1/L2)
  Direct,   // no packing: the fp32 kernel reads full nr-wide panels of row-major op(B) in place
};

// Rows of C at or below which a task reads op(B) in place: each B panel then serves so few A panels
// that copying it costs more than the kernel's strided reads (measured on Zen 5, 64..128-row im2col
// shapes). Needs fp32 and !trans_b.
constexpr int64_t kDirectBRows = 128;

// Computes C[r0:r1, c0:c1] completely (all of K).
void run_rect(const Plan& pl, const Problem& pb, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
  const int64_t kc = balanced_kc(pb.K, pl.kc);
  const int64_t kc_pad = round_up(kc, 2);
  const int64_t rows = r1 - r0, cols = c1 - c0;
  const int64_t mc = std::min(round_up(ceil_div(rows, ceil_div(rows, pl.mc)), pl.mr), round_up(rows, pl.mr));
  const int64_t nc = std::min(pl.nc, round_up(cols, pl.nr));
  // Transposing B packs (trans_b) gain most from packing next to their use; plain row copies of a
  // non-transposed B read long sequential rows best when the whole block is packed at once.
  const BSource bsrc = (pl.mode == PackMode::F32 && !pb.tb && rows <= kDirectBRows) ? BSource::Direct
                       : pb.tb                                                   ? BSource::Chunked
                                                                                 : BSource::Whole;
  char* abuf = static_cast<char*>(tl_pack_a.get(static_cast<size_t>(mc * kc_pad) * pl.esize));
  char* bbuf = static_cast<char*>(tl_pack_b.get(static_cast<size_t>(nc * kc_pad) * pl.esize));
  auto pack = [&](const float* src, int64_t ld, bool k_contig, int64_t o0, int64_t on, int64_t k0, int64_t kn, int w,
                  void* dst) {
    if (pl.pack) {
      pl.pack(src, ld, k_contig, o0, on, k0, kn, w, dst);
    } else {
      pack_panels(src, ld, k_contig, o0, on, k0, kn, w, pl.mode, dst);
    }
  };
  const int64_t ldbp_packed = pl.mode == PackMode::Bf16Pairs ? 2 * pl.nr : pl.nr;
  for (int64_t jc = c0; jc < c1; jc += nc) {
    const int64_t ncur = std::min(nc, c1 - jc);
    for (int64_t pc = 0; pc < pb.K; pc += kc) {
      const int64_t kcur = std::min(kc, pb.K - pc);
      const int64_t kpad = pl.mode == PackMode::Bf16Pairs ? round_up(kcur, 2) : kcur;
      const size_t bpanel = static_cast<size_t>(kpad * pl.nr) * pl.esize;
      const size_t apanel = static_cast<size_t>(kpad * pl.mr) * pl.esize;
      const float beta = pc == 0 ? pb.beta : 1.0f;
      const int64_t full = ncur / pl.nr * pl.nr;  // columns in full nr-wide panels
      if (bsrc == BSource::Whole) pack(pb.B, pb.ldb, pb.tb, jc, ncur, pc, kcur, pl.nr, bbuf);
      if (bsrc == BSource::Direct && full < ncur) {  // the ragged last panel is packed (zero-padded)
        pack(pb.B, pb.ldb, false, jc + full, ncur - full, pc, kcur, pl.nr, bbuf + (full / pl.nr) * bpanel);
      }
      for (int64_t ic = r0; ic < r1; ic += mc) {
        const int64_t mcur = std::min(mc, r1 - ic);
        pack(pb.A, pb.lda, !pb.ta, ic, mcur, pc, kcur, pl.mr, abuf);
        for (int64_t j0 = 0; j0 < ncur; j0 += pl.nchunk) {
          const int64_t j1 = std::min(ncur, j0 + pl.nchunk);
          if (bsrc == BSource::Chunked && ic == r0)
            pack(pb.B, pb.ldb, pb.tb, jc + j0, j1 - j0, pc, kcur, pl.nr, bbuf + (j0 / pl.nr) * bpanel);
          for (int64_t jr = j0; jr < j1; jr += pl.nr) {
            const int n = static_cast<int>(std::min<int64_t>(pl.nr, ncur - jr));
            const bool in_place = bsrc == BSource::Direct && jr < full;
            const void* bp = in_place ? static_cast<const void*>(pb.B + pc * pb.ldb + jc + jr)
                                      : static_cast<const void*>(bbuf + (jr / pl.nr) * bpanel);
            const int64_t ldbp = in_place ? pb.ldb : ldbp_packed;
            float* cc = pb.C + ic * pb.ldc + jc + jr;
            const char* ap = abuf;
            for (int64_t ir = 0; ir < mcur; ir += pl.mr, ap += apanel) {
              const int m = static_cast<int>(std::min<int64_t>(pl.mr, mcur - ir));
              pl.kern(kcur, ap, bp, ldbp, cc + ir * pb.ldc, pb.ldc, m, n, pb.alpha, beta);
            }
          }
          // The tile is final after the last K block: the epilogue runs while it is in cache.
          if (pc + kcur >= pb.K) apply_epilogue(pb, ic, ic + mcur, jc + j0, jc + j1);
        }
      }
    }
  }
}

// Work below which an extra thread costs more (wake-up, cold caches) than it saves.
constexpr double kMinFlopsPerThread = 4.0e6;

void run_packed(const KernelSet& ks, Rounding rounding, bool native, const Problem& pb, int max_threads) {
  Plan pl;
  pl.kern = native ? ks.bf16 : ks.f32;
  pl.mr = native ? ks.bf16_mr : ks.mr;
  pl.nr = native ? ks.bf16_nr : ks.nr;
  pl.mode = native                            ? PackMode::Bf16Pairs
            : rounding == Rounding::Bf16 ? PackMode::F32Rounded
            : rounding == Rounding::F16  ? PackMode::F16Rounded
                                         : PackMode::F32;
  pl.esize = native ? 2 : 4;
  pl.pack = pl.mode == PackMode::F32 ? ks.pack_f32 : (pl.mode == PackMode::Bf16Pairs ? ks.pack_bf16 : nullptr);
  const Blocking bk = blocking_for(ks, native);
  pl.mc = bk.mc;
  pl.kc = bk.kc;
  pl.nc = bk.nc;
  pl.nchunk = round_up(256, pl.nr);

  ThreadPool& pool = ThreadPool::global();
  const double flops = 2.0 * static_cast<double>(pb.M) * static_cast<double>(pb.N) * static_cast<double>(pb.K);
  int T = pool.threads_for(max_threads);
  T = static_cast<int>(std::max(1.0, std::min<double>(T, flops / kMinFlopsPerThread)));

  // Split C into tm x tn rectangles; estimate each split's per-thread time in flop units, counting
  // a packed element as ~16 flops (packing runs far below the FMA rate), and keep the cheapest.
  int best_tm = 1;
  double best_cost = -1;
  for (int tm = 1; tm <= T; ++tm) {
    if (T % tm) continue;
    const int tn = T / tm;
    const int64_t rp = round_up(ceil_div(pb.M, tm), pl.mr), cp = round_up(ceil_div(pb.N, tn), pl.nr);
    if ((tm > 1 && rp * (tm - 1) >= pb.M) || (tn > 1 && cp * (tn - 1) >= pb.N)) continue;  // idle threads
    const double cost = 2.0 * rp * cp * pb.K + 16.0 * (static_cast<double>(pb.K) * cp +
                                                       static_cast<double>(rp) * pb.K * ceil_div(cp, pl.nc));
    if (best_cost < 0 || cost < best_cost) best_cost = cost, best_tm = tm;
  }
  if (best_cost < 0) T = 1, best_tm = 1;  // no split fits: run on one thread
  const int tm = best_tm, tn = T / best_tm;
  const int64_t rp = round_up(ceil_div(pb.M, tm), pl.mr), cp = round_up(ceil_div(pb.N, tn), pl.nr);
  auto task = [&](int64_t t, int) {
    const int64_t r0 = (t / tn) * rp, c0 = (t % tn) * cp;
    const int64_t r1 = std::min(pb.M, r0 + rp), c1 = std::min(pb.N, c0 + cp);
    if (r0 < r1 && c0 < c1) run_rect(pl, pb, r0, r1, c0, c1);
  };
  if (T == 1) {
    task(0, 0);
  } else {
    pool.run(T, task, T);
  }
}

// M == 1 or N == 1 (fp32): matrix-vector products, no packing. The vector operand is gathered into
// a contiguous copy when strided; outputs are split between threads (each output is computed whole
// by one thread, so this path is deterministic too).
void run_gemv(const KernelSet& ks, const Problem& pb, int max_threads) {
  const int64_t K = pb.K;
  const float* x;
  int64_t incx;
  const float* mat;
  int64_t ld, outs, incy;
  bool dot_form;
  if (pb.M == 1) {  // y = C row 0 (length N); x = op(A) row 0
    x = pb.A;
    incx = pb.ta ? pb.lda : 1;
    mat = pb.B;
    ld = pb.ldb;
    dot_form = pb.tb;  // op(B)(k, j) = B[j * ldb + k]: rows of B dotted with x
    outs = pb.N;
    incy = 1;
  } else {  // N == 1: y = C column 0 (length M); x = op(B) column 0
    x = pb.B;
    incx = pb.tb ? 1 : pb.ldb;
    mat = pb.A;
    ld = pb.lda;
    dot_form = !pb.ta;  // op(A)(i, k) = A[i * lda + k]
    outs = pb.M;
    incy = pb.ldc;
  }
  std::vector<float> xcopy;
  if (incx != 1) {
    xcopy.resize(static_cast<size_t>(K));
    for (int64_t k = 0; k < K; ++k) xcopy[static_cast<size_t>(k)] = x[k * incx];
    x = xcopy.data();
  }
  ThreadPool& pool = ThreadPool::global();
  const double work = 2.0 * static_cast<double>(K) * static_cast<double>(outs);
  int T = pool.threads_for(max_threads);
  T = static_cast<int>(std::max(1.0, std::min<double>(T, work / kMinFlopsPerThread)));
  const int64_t chunk = round_up(ceil_div(outs, T), 64);
  auto task = [&](int64_t t, int) {
    const int64_t o0 = t * chunk, o1 = std::min(outs, o0 + chunk);
    if (o0 >= o1) return;
    if (dot_form) {
      ks.gemv_dot(K, x, mat + o0 * ld, ld, o1 - o0, pb.C + o0 * incy, incy, pb.alpha, pb.beta);
    } else {
      ks.gemv_axpy(K, x, mat + o0, ld, o1 - o0, pb.C + o0 * incy, incy, pb.alpha, pb.beta);
    }
  };
  const int64_t tasks = ceil_div(outs, chunk);
  if (T == 1 || tasks == 1) {
    for (int64_t t = 0; t < tasks; ++t) task(t, 0);
  } else {
    pool.run(tasks, task, T);
  }
}

// C = beta * C (alpha == 0 or K == 0); beta == 0 writes zeros without reading C.
void scale_c(const Problem& pb) {
  for (int64_t i = 0; i < pb.M; ++i) {
    float* cr = pb.C + i * pb.ldc;
    if (pb.beta == 0.0f) {
      for (int64_t j = 0; j < pb.N; ++j) cr[j] = 0.0f;
    } else if (pb.beta != 1.0f) {
      for (int64_t j = 0; j < pb.N; ++j) cr[j] *= pb.beta;
    }
  }
}

void validate(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
              int64_t ldb, const float* C, int64_t ldc, int precision, int max_threads) {
  check_gemm_args(ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
  FC_CHECK(precision == 0 || precision == 1 || precision == 3, InvalidArgument,
           "Expected precision F32 (0), BF16 (1) or F16 (3) but received ", precision);
  FC_CHECK(max_threads >= 0, InvalidArgument, "Expected max_threads >= 0 (0 = all) but received ", max_threads);
}

// rounding: operands rounded to bf16 or fp16 while packing (fp32 products and sums); native: BF16 with
// the set's bf16 kernel instead of rounded fp32.
void run_sgemm(const KernelSet& ks, const Problem& pb, Rounding rounding, bool native, int max_threads) {
  if (pb.M == 0 || pb.N == 0) return;
  if (pb.K == 0 || pb.alpha == 0.0f) {
    scale_c(pb);
    apply_epilogue(pb, 0, pb.M, 0, pb.N);
    return;
  }
  if (rounding == Rounding::None && (pb.M == 1 || pb.N == 1)) {
    run_gemv(ks, pb, max_threads);
    apply_epilogue(pb, 0, pb.M, 0, pb.N);
    return;
  }
  run_packed(ks, rounding, native, pb, max_threads);
}

Level current_level() {
  switch (simd_level()) {
    case SimdLevel::Avx512: return Level::Avx512;
    case SimdLevel::Avx2: return Level::Avx2;
    default: return Level::Portable;
  }
}

const KernelSet& current_kernels() {
  const KernelSet* ks = kernels_for(current_level());
  return ks ? *ks : kernels_portable();
}

// Cache sizes from sysconf (defaults when the C library does not know: 0 or -1) and the tuning
// override, read once: sysconf may run cpuid, which traps in virtual machines.
struct CacheParams {
  int64_t l1 = 32 << 10, l2 = 1 << 20;
  long long mc = 0, kc = 0, nc = 0;  // FACECUDA_GEMM_BLOCKING="mc,kc,nc" (tuning aid), 0 = unset
};

int64_t cache_bytes(int name, int64_t fallback, int64_t lo, int64_t hi) {
  long v = sysconf(name);
  if (v <= 0) return fallback;
  return std::min<int64_t>(std::max<int64_t>(v, lo), hi);
}

const CacheParams& cache_params() {
  static const CacheParams p = [] {
    CacheParams c;
    c.l1 = cache_bytes(_SC_LEVEL1_DCACHE_SIZE, 32 << 10, 16 << 10, 256 << 10);
    c.l2 = cache_bytes(_SC_LEVEL2_CACHE_SIZE, 1 << 20, 256 << 10, 4 << 20);
    if (const char* env = std::getenv("FACECUDA_GEMM_BLOCKING")) {
      long long m = 0, k = 0, n = 0;
      if (std::sscanf(env, "%lld,%lld,%lld", &m, &k, &n) == 3 && m > 0 && k > 0 && n > 0) c.mc = m, c.kc = k, c.nc = n;
    }
    return c;
  }();
  return p;
}

}  // namespace

Blocking blocking_for(const KernelSet& ks, bool native_bf16) {
  const CacheParams& cp = cache_params();
  const int mr = native_bf16 ? ks.bf16_mr : ks.mr;
  const int nr = native_bf16 ? ks.bf16_nr : ks.nr;
  const int64_t esize = native_bf16 ? 2 : 4;
  Blocking b;
  // kc: a long kc means fewer passes over C (each C tile is read and written once per kc block) and
  // fewer kernel calls; the micro-panels then stream from L2, which has the bandwidth for the 14x32
  // tile (~3 cache lines per 28 FMAs). Sweeps on Zen 5 (48 KiB L1d, 1 MiB L2) at 2048^3 rose from
  // 183 (kc 384) to 188 (512), 197 (768) and 201 GFLOP/s (1024) on one thread, 372 -> 393 on two.
  // The rule: an A micro-panel of ~1.2 x L1d, in steps of 128 (1024 on Zen 5, 640 for 32 KiB).
  b.kc = std::max<int64_t>(256, std::min<int64_t>(1024, (cp.l1 * 12 / 10) / (mr * esize) / 128 * 128));
  // mc: the packed A block (mc x kc) takes half of L2 (126 rows on Zen 5).
  b.mc = std::max<int64_t>(mr, (cp.l2 / 2) / (b.kc * esize) / mr * mr);
  // nc: the packed B block (kc x nc, 4 MiB at 512 x 2048) is read once per mc rows, from L2/L3.
  b.nc = round_up(2048, nr);
  if (cp.mc > 0) {
    b.mc = round_up(cp.mc, mr);
    b.kc = round_up(cp.kc, 2);
    b.nc = round_up(cp.nc, nr);
  }
  return b;
}

const KernelSet& kernels_portable() {
  static const KernelSet ks = {
      "portable 6x8",                                     // name
      "portable 6x8 (bf16 emulated: bf16-rounded fp32)",  // bf16_emul_name
      kPortMR,                                            // mr
      kPortNR,                                            // nr
      micro_portable,                                     // f32
      nullptr,                                            // bf16_name: no native bf16
      0,                                                  // bf16_mr
      0,                                                  // bf16_nr
      nullptr,                                            // bf16
      nullptr,                                            // pack_f32: pack_panels
      nullptr,                                            // pack_bf16
      dot_portable,                                       // gemv_dot
      axpy_portable,                                      // gemv_axpy
      fma_loop_portable,                                  // fma_loop
  };
  return ks;
}

const KernelSet* kernels_for(Level level) {
  const CpuInfo& c = cpu_info();
  const bool avx2 = c.avx2 && c.fma && c.f16c;
  switch (level) {
    case Level::Avx512:
      return avx2 && c.avx512f && c.avx512bw && c.avx512vl && c.avx512dq ? &kernels_avx512() : nullptr;
    case Level::Avx2:
      return avx2 ? &kernels_avx2() : nullptr;
    default:
      return &kernels_portable();
  }
}

bool native_bf16(Level level) {
  const KernelSet* ks = kernels_for(level);
  return ks && ks->bf16 && cpu_info().avx512_bf16;
}

void sgemm_level(Level level, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                 const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
                 int precision, int max_threads, const GemmOptions* epilogue) {
  validate(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, precision, max_threads);
  if (epilogue && (epilogue->row_scale || epilogue->row_src))
    FC_CHECK(epilogue->row_scale && epilogue->row_src && epilogue->row_src_ld >= N, InvalidArgument,
             "Expected both row_scale and row_src, with row_src_ld >= N (", N, ") but received row_src_ld ",
             epilogue->row_src_ld);
  const KernelSet* ks = kernels_for(level);
  FC_CHECK(ks != nullptr, InvalidArgument, "Expected a SIMD level this CPU supports but received level ",
           static_cast<int>(level));
  Problem pb{trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc};
  if (epilogue && epilogue->row_scale) {
    pb.es = epilogue->row_scale;
    pb.esrc = epilogue->row_src;
    pb.eld = epilogue->row_src_ld;
  }
  const Rounding rounding = precision == 1 ? Rounding::Bf16 : precision == 3 ? Rounding::F16 : Rounding::None;
  run_sgemm(*ks, pb, rounding, rounding == Rounding::Bf16 && native_bf16(level), max_threads);
}

}  // namespace gemm

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc, const GemmOptions& opts) {
  const int p = static_cast<int>(opts.precision);
  FC_CHECK(p >= 0 && p <= 3, InvalidArgument,
           "Expected precision F32 (0), BF16 (1), TF32 (2) or F16 (3) but received ", p);
  // TF32 runs as fp32 on the CPU; F16 rounds the operands to fp16 (overflow to Inf, subnormals kept),
  // which emulates tensor-core fp16 GEMMs with fp32 accumulation.
  gemm::sgemm_level(gemm::current_level(), trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc,
                    p == 2 ? 0 : p, opts.max_threads, &opts);
}

const char* sgemm_kernel_name(GemmPrecision p) {
  const gemm::KernelSet& ks = gemm::current_kernels();
  if (p == GemmPrecision::BF16) return gemm::native_bf16(gemm::current_level()) ? ks.bf16_name : ks.bf16_emul_name;
  if (p == GemmPrecision::F16) return "fp16 emulated: fp16-rounded operands, fp32 products and sums";
  return ks.name;
}

double measure_fma_peak(int threads, double seconds) {
  FC_CHECK(threads >= 0, InvalidArgument, "Expected threads >= 0 (0 = all) but received ", threads);
  FC_CHECK(std::isfinite(seconds) && seconds > 0 && seconds <= 60, InvalidArgument,
           "Expected seconds in (0, 60] but received ", seconds);
  const gemm::KernelSet& ks = gemm::current_kernels();
  using clock = std::chrono::steady_clock;
  float sink = 0;
  // Calibrate on this thread: grow the iteration count until one run takes >= 20 ms.
  int64_t iters = 1 << 14;
  double per_iter = 0;
  for (;;) {
    const auto t0 = clock::now();
    ks.fma_loop(iters, &sink);
    const double s = std::chrono::duration<double>(clock::now() - t0).count();
    if (s >= 0.02 || iters >= (int64_t{1} << 40)) {
      per_iter = s / static_cast<double>(iters);
      break;
    }
    iters *= 4;
  }
  iters = std::max<int64_t>(1024, static_cast<int64_t>(seconds / std::max(per_iter, 1e-12)));
  ThreadPool& pool = ThreadPool::global();
  const int T = pool.threads_for(threads);
  std::vector<double> flops(static_cast<size_t>(T), 0.0);
  std::vector<float> sinks(static_cast<size_t>(T), 0.0f);
  const auto t0 = clock::now();
  pool.run(
      T, [&](int64_t t, int) { flops[static_cast<size_t>(t)] = ks.fma_loop(iters, &sinks[static_cast<size_t>(t)]); },
      T);
  const double wall = std::chrono::duration<double>(clock::now() - t0).count();
  double total = 0;
  for (double f : flops) total += f;
  return total / wall;
}

}  // namespace fc
