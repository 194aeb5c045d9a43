// @file search.cu
// @brief Exact inner-product top-k on a CUDA device (contract in facecuda/search.h).
//
// The gallery lives on the device (DeviceGallery). A search walks it in tiles of rows:
//   - scores of a tile: cuBLAS GemmEx (fp32 or fp16 operands, fp32 accumulate and output) for more
//     than kScanMaxQueries queries, else scan_scores_kernel, a bandwidth-bound pass that reads every
//     row once (16-byte vector loads) for all queries;
//   - select_kernel: one block per (query, slice of kSlice columns of the tile) keeps that slice's
//     running top-k in a state array that persists across tiles; it admits only scores >= the current
//     k-th best into shared memory and re-sorts (bitonic) only when something was admitted.
// A tile holds at most kTileFloats scores (32 MiB: it stays in L2), so the Q x N score matrix is never
// written out; the extra traffic per tile is one write and one read of the tile, in L2.
//   - merge_kernel: per query, the states of all slices (P x k) -> the final k, rows mapped to ids.
// Order: score desc, then id asc (ids are looked up only when scores are equal); empty slots are
// row -1 / -inf, reported as id -1. NaN scores never pass the >= threshold test.
//
// Everything runs on the device's stream, on its queue thread; copy_d2h at the end synchronizes.
#include <cuda_fp16.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <vector>

#include "cuda/common.cuh"
#include "cuda/cublas_api.h"
#include "facecuda/cuda.h"
#include "facecuda/error.h"
#include "facecuda/search.h"

namespace fc {
namespace search {

namespace {

namespace cd = fc::cuda::detail;
namespace blas = fc::cuda::blas;

constexpr int kSelBuf = 4096;        // shared entries of a select block (the list plus candidates)
constexpr int kSelThreads = 512;
constexpr int64_t kSlice = 4096;     // tile columns per select block
constexpr int64_t kTileFloats = int64_t(8) << 20;
constexpr int kScanThreads = 256;

// Device memory from the caching allocator, returned to it when the search ends (stream-ordered).
struct DevBuf {
  int dev;
  void* p = nullptr;
  DevBuf(int d, size_t bytes) : dev(d) {
    if (bytes) p = cuda::device_alloc(d, bytes);
  }
  ~DevBuf() {
    if (p) cuda::device_free(dev, p);
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

// ---- CUDA kernels

__device__ __forceinline__ int64_t id_of(int32_t row, const int64_t* ids) { return row < 0 ? LLONG_MAX : ids[row]; }

// a ahead of b in the result order.
__device__ __forceinline__ bool ahead(float sa, int32_t ra, float sb, int32_t rb, const int64_t* ids) {
  if (sa != sb) return sa > sb;
  return id_of(ra, ids) < id_of(rb, ids);
}

// Sorts ss/sr[0, m) (m a power of two) best first; the whole block calls it.
__device__ void bitonic_sort(float* ss, int32_t* sr, int m, const int64_t* ids) {
  for (int size = 2; size <= m; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int t = threadIdx.x; t < (m >> 1); t += blockDim.x) {
        const int i = 2 * stride * (t / stride) + (t % stride);
        const int j = i + stride;
        const bool up = (i & size) == 0;
        const bool swap = up ? ahead(ss[j], sr[j], ss[i], sr[i], ids) : ahead(ss[i], sr[i], ss[j], sr[j], ids);
        if (swap) {
          const float fs = ss[i];
          ss[i] = ss[j];
          ss[j] = fs;
          const int32_t fr = sr[i];
          sr[i] = sr[j];
          sr[j] = fr;
        }
      }
      __syncthreads();
    }
  }
}

// Merges candidates into the block's sorted list ss/sr[0, k). get(i) yields candidate i of [0, total)
// as (score, row) with row < 0 meaning "skip". Processes them in segments of kSelBuf - k.
template <typename Get>
__device__ void merge_into(float* ss, int32_t* sr, int k, int64_t total, const int64_t* ids, int* cnt, Get get) {
  const int64_t cap = kSelBuf - k;
  for (int64_t seg = 0; seg < total; seg += cap) {
    if (threadIdx.x == 0) *cnt = 0;
    __syncthreads();
    const float thr = ss[k - 1];  // -inf until the list is full: everything passes
    const int64_t end = min(total, seg + cap);
    for (int64_t i = seg + threadIdx.x; i < end; i += blockDim.x) {
      float s;
      int32_t r;
      get(i, &s, &r);
      if (r >= 0 && s >= thr) {
        const int p = atomicAdd(cnt, 1);
        ss[k + p] = s;
        sr[k + p] = r;
      }
    }
    __syncthreads();
    const int n = k + *cnt;
    if (*cnt > 0) {
      int m = 1;
      while (m < n) m <<= 1;
      for (int i = n + threadIdx.x; i < m; i += blockDim.x) {
        ss[i] = -INFINITY;
        sr[i] = -1;
      }
      __syncthreads();
      bitonic_sort(ss, sr, m, ids);
    }
    __syncthreads();
  }
}

// st_s / st_r: (Q, P, k) running lists, initialized to -inf / -1.
__global__ void init_state_kernel(float* st_s, int32_t* st_r, int64_t n) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    st_s[i] = -INFINITY;
    st_r[i] = -1;
  }
}

// s: (qt, cols) scores of gallery rows [row0, row0 + cols) for queries [q0, q0 + qt), row stride lds.
// Block (x = slice, y = query) merges its slice into state (q0 + y, x).
__global__ void select_kernel(const float* s, int64_t lds, int64_t cols, int64_t row0, const int64_t* ids,
                              const uint64_t* allow, float* st_s, int32_t* st_r, int P, int k, int64_t q0) {
  __shared__ float ss[kSelBuf];
  __shared__ int32_t sr[kSelBuf];
  __shared__ int cnt;
  const int64_t slice0 = static_cast<int64_t>(blockIdx.x) * kSlice;
  const int64_t ncols = min(kSlice, cols - slice0);
  if (ncols <= 0) return;
  const int64_t st = ((q0 + blockIdx.y) * P + blockIdx.x) * static_cast<int64_t>(k);
  for (int i = threadIdx.x; i < k; i += blockDim.x) {
    ss[i] = st_s[st + i];
    sr[i] = st_r[st + i];
  }
  __syncthreads();
  const float* srow = s + static_cast<int64_t>(blockIdx.y) * lds + slice0;
  merge_into(ss, sr, k, ncols, ids, &cnt, [&](int64_t i, float* v, int32_t* r) {
    const int64_t row = row0 + slice0 + i;
    *v = srow[i];
    *r = (allow == nullptr || ((allow[row >> 6] >> (row & 63)) & 1u)) ? static_cast<int32_t>(row) : -1;
  });
  for (int i = threadIdx.x; i < k; i += blockDim.x) {
    st_s[st + i] = ss[i];
    st_r[st + i] = sr[i];
  }
}

// Block q: the P lists of query q -> the final k (out_s, out_id: (Q, k)).
__global__ void merge_kernel(const float* st_s, const int32_t* st_r, int P, int k, const int64_t* ids, float* out_s,
                             int64_t* out_id) {
  __shared__ float ss[kSelBuf];
  __shared__ int32_t sr[kSelBuf];
  __shared__ int cnt;
  for (int i = threadIdx.x; i < k; i += blockDim.x) {
    ss[i] = -INFINITY;
    sr[i] = -1;
  }
  __syncthreads();
  const int64_t base = static_cast<int64_t>(blockIdx.x) * P * k;
  merge_into(ss, sr, k, static_cast<int64_t>(P) * k, ids, &cnt, [&](int64_t i, float* v, int32_t* r) {
    *v = st_s[base + i];
    *r = st_r[base + i];
  });
  for (int i = threadIdx.x; i < k; i += blockDim.x) {
    out_s[static_cast<int64_t>(blockIdx.x) * k + i] = ss[i];
    out_id[static_cast<int64_t>(blockIdx.x) * k + i] = sr[i] < 0 ? -1 : ids[sr[i]];
  }
}

// Dot products of one row chunk: 4 floats (f32) or 8 halves (f16) per 16-byte load.
__device__ __forceinline__ void load_chunk(const float* g, int64_t c, float* v) {
  const float4 x = __ldg(reinterpret_cast<const float4*>(g) + c);
  v[0] = x.x;
  v[1] = x.y;
  v[2] = x.z;
  v[3] = x.w;
}
__device__ __forceinline__ void load_chunk(const __half* g, int64_t c, float* v) {
  const uint4 x = __ldg(reinterpret_cast<const uint4*>(g) + c);
  const __half2* h = reinterpret_cast<const __half2*>(&x);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 f = __half22float2(h[j]);
    v[2 * j] = f.x;
    v[2 * j + 1] = f.y;
  }
}
__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }

// s[q * cols + i] = dot(query q, row row0 + i) for q < nq (<= kScanMaxQueries), i < cols: one warp
// per row, lanes over 16-byte chunks when `vec` (dim a multiple of the chunk), else over elements.
template <typename T>
__global__ void scan_scores_kernel(const T* g, int64_t row0, int64_t cols, int dim, const float* q, int nq, bool vec,
                                   float* s) {
  constexpr int W = 16 / sizeof(T);  // elements per chunk
  const int lane = threadIdx.x & 31;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t warps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (int64_t i = warp; i < cols; i += warps) {
    const T* row = g + (row0 + i) * dim;
    float acc[kScanMaxQueries];
#pragma unroll
    for (int j = 0; j < kScanMaxQueries; ++j) acc[j] = 0.0f;
    if (vec) {
      for (int64_t c = lane; c < dim / W; c += 32) {
        float v[W];
        load_chunk(row, c, v);
#pragma unroll
        for (int j = 0; j < kScanMaxQueries; ++j) {
          if (j < nq) {
            const float* qp = q + static_cast<int64_t>(j) * dim + c * W;
#pragma unroll
            for (int e = 0; e < W; ++e) acc[j] = fmaf(v[e], __ldg(qp + e), acc[j]);
          }
        }
      }
    } else {
      for (int d = lane; d < dim; d += 32) {
        const float v = to_f(row[d]);
#pragma unroll
        for (int j = 0; j < kScanMaxQueries; ++j)
          if (j < nq) acc[j] = fmaf(v, __ldg(q + static_cast<int64_t>(j) * dim + d), acc[j]);
      }
    }
#pragma unroll
    for (int j = 0; j < kScanMaxQueries; ++j) {
      float a = acc[j];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffffu, a, o);
      if (lane == 0 && j < nq) s[static_cast<int64_t>(j) * cols + i] = a;
    }
  }
}

__global__ void to_half_kernel(const float* x, __half* y, int64_t n) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) y[i] = __float2half_rn(x[i]);
}

int multiprocessors(int device) {
  const auto& st = cuda::status();
  for (const auto& d : st.devices)
    if (d.index == device) return std::max(1, d.multiprocessors);
  return 132;
}

}  // namespace

// ---- DeviceGallery

DeviceGallery::DeviceGallery(int device, const Store& s)
    : device_(device), n_(s.n), dim_(s.dim), storage_(s.storage) {
  cuda::require_device(device);
  FC_CHECK(s.n < INT32_MAX, OutOfRange, "Expected fewer than 2^31 rows for a CUDA index but received ", s.n);
  if (n_ == 0) return;
  const size_t bytes = static_cast<size_t>(n_) * s.row_bytes();
  data_ = cuda::device_alloc(device, bytes);
  try {
    ids_ = static_cast<int64_t*>(cuda::device_alloc(device, static_cast<size_t>(n_) * sizeof(int64_t)));
    cuda::copy_h2d(device, data_, storage_ == Storage::F32 ? static_cast<const void*>(s.f32.data())
                                                           : static_cast<const void*>(s.f16.data()), bytes);
    cuda::copy_h2d(device, ids_, s.ids.data(), static_cast<size_t>(n_) * sizeof(int64_t));
  } catch (...) {
    cuda::device_free(device, data_);
    if (ids_) cuda::device_free(device, ids_);
    throw;
  }
}

DeviceGallery::~DeviceGallery() {
  try {
    if (data_) cuda::device_free(device_, data_);
    if (ids_) cuda::device_free(device_, ids_);
  } catch (...) {
  }
}

// ---- top-k

void topk_cuda(const DeviceGallery& g, const float* queries, int64_t Q, int64_t k, int64_t* out_ids,
               float* out_scores, const uint64_t* allow) {
  GalleryView v;
  v.dim = g.dim();
  v.storage = g.storage();
  v.n = g.n();
  v.data = g.data();
  v.ids = g.ids();
  check_search_args(v, queries, Q, k, kMaxKCuda);
  const int dev = g.device();
  cuda::require_device(dev);
  if (Q == 0) return;
  const int64_t n = g.n(), D = g.dim();
  if (n == 0) {
    for (int64_t i = 0; i < Q * k; ++i) {
      out_ids[i] = -1;
      out_scores[i] = -INFINITY;
    }
    return;
  }
  cudaStream_t s = cd::stream(dev);
  cd::DeviceGuard guard(dev);
  const bool f16 = g.storage() == Storage::F16;
  const bool scan = Q <= kScanMaxQueries;

  // Queries (and their fp16 copy for the fp16 GEMM), the allow bitmap.
  DevBuf dq(dev, static_cast<size_t>(Q * D) * sizeof(float));
  cuda::copy_h2d(dev, dq.p, queries, static_cast<size_t>(Q * D) * sizeof(float));
  DevBuf dqh(dev, (!scan && f16) ? static_cast<size_t>(Q * D) * sizeof(__half) : 0);
  if (dqh.p) {
    to_half_kernel<<<cd::grid_for(Q * D, 256), 256, 0, s>>>(dq.as<float>(), dqh.as<__half>(), Q * D);
    FC_LAUNCH_CHECK("to_half_kernel", Q * D);
  }
  DevBuf dallow(dev, allow ? static_cast<size_t>((n + 63) / 64) * sizeof(uint64_t) : 0);
  if (allow) cuda::copy_h2d(dev, dallow.p, allow, static_cast<size_t>((n + 63) / 64) * sizeof(uint64_t));

  // Tiling: qt queries x nt rows of scores at a time (nt a multiple of kSlice unless it is all of n).
  const int64_t qt = scan ? Q : std::min<int64_t>(Q, 1024);
  int64_t nt = std::max<int64_t>(kSlice, kTileFloats / qt / kSlice * kSlice);
  if (nt >= n) nt = n;
  const int P = static_cast<int>((nt + kSlice - 1) / kSlice);
  DevBuf dsc(dev, static_cast<size_t>(qt * nt) * sizeof(float));
  DevBuf st_s(dev, static_cast<size_t>(Q * P * k) * sizeof(float));
  DevBuf st_r(dev, static_cast<size_t>(Q * P * k) * sizeof(int32_t));
  init_state_kernel<<<cd::grid_for(Q * P * k, 256), 256, 0, s>>>(st_s.as<float>(), st_r.as<int32_t>(), Q * P * k);
  FC_LAUNCH_CHECK("init_state_kernel", Q, "x", P, "x", k);

  const blas::Api* api = scan ? nullptr : &blas::api();
  blas::Handle h = scan ? nullptr : blas::handle(dev);
  const int sms = multiprocessors(dev);
  for (int64_t q0 = 0; q0 < Q; q0 += qt) {
    const int64_t mq = std::min(qt, Q - q0);
    for (int64_t r0 = 0; r0 < n; r0 += nt) {
      const int64_t cols = std::min(nt, n - r0);
      if (scan) {
        const int64_t chunk = f16 ? 8 : 4;
        const bool vec = D % chunk == 0;
        const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(sms * 16, (cols * 32 + kScanThreads - 1) / kScanThreads));
        if (f16)
          scan_scores_kernel<__half><<<blocks, kScanThreads, 0, s>>>(static_cast<const __half*>(g.data()), r0, cols,
                                                                     static_cast<int>(D), dq.as<float>(), static_cast<int>(mq), vec,
                                                                     dsc.as<float>());
        else
          scan_scores_kernel<float><<<blocks, kScanThreads, 0, s>>>(static_cast<const float*>(g.data()), r0, cols,
                                                                    static_cast<int>(D), dq.as<float>(), static_cast<int>(mq), vec,
                                                                    dsc.as<float>());
        FC_LAUNCH_CHECK("scan_scores_kernel", "rows ", r0, "+", cols, " dim=", D, " Q=", mq);
      } else {
        // Row-major S (mq x cols) = Qblk * Gtile^T, i.e. column-major S^T = Gtile^T(op T) * Qblk^T.
        const float one = 1.0f, zero = 0.0f;
        const size_t esz = f16 ? sizeof(__half) : sizeof(float);
        const void* A = static_cast<const char*>(g.data()) + static_cast<size_t>(r0 * D) * esz;
        const void* B = f16 ? static_cast<const void*>(dqh.as<__half>() + q0 * D) : static_cast<const void*>(dq.as<float>() + q0 * D);
        const cudaDataType_t t = f16 ? CUDA_R_16F : CUDA_R_32F;
        blas::Status st = api->gemm_ex(h, blas::kOpT, blas::kOpN, static_cast<int>(cols), static_cast<int>(mq),
                                       static_cast<int>(D), &one, A, t, static_cast<int>(D), B, t, static_cast<int>(D), &zero,
                                       dsc.p, CUDA_R_32F, static_cast<int>(cols), blas::kCompute32F, blas::kGemmDefault);
        if (st != blas::kStatusSuccess)
          blas::throw_status(st, "cublasGemmEx", str("search tile rows ", r0, "+", cols, " queries ", q0, "+", mq, " dim=", D));
      }
      const dim3 grid(static_cast<unsigned>((cols + kSlice - 1) / kSlice), static_cast<unsigned>(mq));
      select_kernel<<<grid, kSelThreads, 0, s>>>(dsc.as<float>(), cols, cols, r0, g.ids(), dallow.as<uint64_t>(),
                                                 st_s.as<float>(), st_r.as<int32_t>(), P, static_cast<int>(k), q0);
      FC_LAUNCH_CHECK("select_kernel", "rows ", r0, "+", cols, " queries ", q0, "+", mq, " k=", k);
    }
  }
  DevBuf os(dev, static_cast<size_t>(Q * k) * sizeof(float));
  DevBuf oi(dev, static_cast<size_t>(Q * k) * sizeof(int64_t));
  merge_kernel<<<static_cast<unsigned>(Q), kSelThreads, 0, s>>>(st_s.as<float>(), st_r.as<int32_t>(), P, static_cast<int>(k),
                                                                g.ids(), os.as<float>(), oi.as<int64_t>());
  FC_LAUNCH_CHECK("merge_kernel", "Q=", Q, " P=", P, " k=", k);
  cuda::copy_d2h(dev, out_scores, os.p, static_cast<size_t>(Q * k) * sizeof(float));
  cuda::copy_d2h(dev, out_ids, oi.p, static_cast<size_t>(Q * k) * sizeof(int64_t));
}

}  // namespace search
}  // namespace fc
