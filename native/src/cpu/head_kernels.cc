// @file margin_head.cc
// @brief fc::MarginHead on the CPU: the fused normalize → cosine → margin ψ → scale → softmax-CE head
// of SPEC §1.3 with its backward, and fc::margin_psi.
//
// What is fused / never materialized:
//   - Ŵ (the normalized weight) is never built: the head keeps winv_j = 1/max(‖w_j‖, 1e-12) (O(C))
//     and folds it into the GEMM outputs (cosine columns) and into G (G·diag(winv) before the GEMMs).
//   - The [B, C] logits / probabilities are never stored: one buffer `cos_` of at most
//     max_chunk_bytes holds a class chunk's cosines, then (backward) that chunk's G·diag(winv).
//     When B·C·4 <= max_chunk_bytes there is one chunk and the forward keeps it for the backward;
//     otherwise the forward streams chunks with an online log-sum-exp and the backward recomputes each
//     chunk's cosines with the same GEMM (same bits: same chunk bounds, sgemm is deterministic).
// Buffers (all row-major f32 unless noted):
//   x̂ [B, D]; xinv [B] (double); winv [C]; per row: the max logit M_i (f32, an exact logit value),
//   1/S_i, the target logit z_t (f32), target cosine, ψ'(c_t) (double).
// Backward WRITES (=) grad_embeddings [B, D] and grad_weight [C, D]:
//   G_ij = (s/B)(p_ij − Y_ij), times ψ'(c_t) on the target;
//   ∂L/∂w_j = winv_j (Σ_i G_ij x̂_i − (Σ_i G_ij c_ij) ŵ_j)       (the GEMM G'ᵀ X̂ with G' = G·diag(winv))
//   ∂L/∂x_i = xinv_i ((G Ŵ)_i − (Σ_j G_ij c_ij) x̂_i)             (the GEMM G' W, summed over chunks)
//   The projection term is dropped when ‖v‖ < 1e-12 (F.normalize divides by eps there).
// Threading and determinism: the element passes run over fixed column blocks of kBlock classes
// (tasks dealt by the ThreadPool); every reduction (row max/sum-exp, Σ_j G c per row, Σ_i G c per
// column) is computed per block in a fixed order and merged in block order, so the results do not
// depend on the thread count or scheduling; sgemm is deterministic in the same sense. The row
// kernels (scale, max/Σexp, exp, G·c sums) have an AVX-512 version (margin_head_avx512.cc, chosen by
// fc::simd_level()); the SIMD levels round differently (FMA, lane order), each is deterministic.
// Contract notes: grad_embeddings() is an undefined Tensor until the first backward(); weight() must
// not change between forward() and backward() (the backward uses the forward's norms and cosines).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common/margin_math.h"
#include "facecuda/cpu_info.h"
#include "facecuda/error.h"
#include "facecuda/heads.h"
#include "facecuda/threadpool.h"

namespace fc {

namespace head_avx512 {  // margin_head_avx512.cc (compiled with the AVX-512 flags)
void scale_logits(float* c, const float* wv, int64_t n, float s, float* z);
void max_expsum(const float* z, int64_t n, float* m, double* sum);
void exp_scaled(const float* c, int64_t n, float s, float m, float inv, float* e);
double grad_acc(float* c, const float* e, const float* wv, double* cs, int64_t n);
}  // namespace head_avx512

namespace {

constexpr int64_t kBlock = 256;  // classes per element-pass task

// exp(x) for x <= 0 in float (max-subtracted logits), written so that g++ vectorizes the loops
// that call it: Cody–Waite reduction x = n·ln2 + r, |r| <= ln2/2, Cephes' degree-6 polynomial
// (about 1 ulp), 2^n by exponent bits. Returns 0 below −87 (e^−87 < 1.7e−38: negligible next to the
// row sum, which is >= 1).
inline float exp_nonpos(float x) {
  const float xc = x < -87.0f ? -87.0f : x;
  const float t = xc * 1.44269504088896341f;
  const float n = (t + 12582912.0f) - 12582912.0f;  // round to nearest (1.5·2^23 trick)
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return x < -87.0f ? 0.0f : p * scale;
}

// Σ v_k² in double with 8 independent lanes (vectorizable, no long dependency chain), combined in a
// fixed order.
double sumsq(const float* v, int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8)
    for (int l = 0; l < 8; ++l) acc[l] += static_cast<double>(v[k + l]) * v[k + l];
  for (; k < n; ++k) acc[0] += static_cast<double>(v[k]) * v[k];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// ---- row kernels (portable; margin_head_avx512.cc has the same contract)

void scale_logits_portable(float* c, const float* wv, int64_t n, float s, float* z) {
  for (int64_t j = 0; j < n; ++j) {
    c[j] *= wv[j];
    z[j] = s * c[j];
  }
}
void max_expsum_portable(const float* z, int64_t n, float* m, double* sum) {
  float mx = z[0];
  for (int64_t j = 1; j < n; ++j) mx = z[j] > mx ? z[j] : mx;
  double acc = 0;
  for (int64_t j = 0; j < n; ++j) acc += exp_nonpos(z[j] - mx);
  *m = mx;
  *sum = acc;
}
void exp_scaled_portable(const float* c, int64_t n, float s, float m, float inv, float* e) {
  for (int64_t j = 0; j < n; ++j) e[j] = exp_nonpos(s * c[j] - m) * inv;
}
double grad_acc_portable(float* c, const float* e, const float* wv, double* cs, int64_t n) {
  double rs = 0;
  for (int64_t j = 0; j < n; ++j) {
    const double g = static_cast<double>(e[j]) * c[j];
    rs += g;
    cs[j] += g;
    c[j] = e[j] * wv[j];
  }
  return rs;
}

struct RowKernels {
  void (*scale_logits)(float*, const float*, int64_t, float, float*);
  void (*max_expsum)(const float*, int64_t, float*, double*);
  void (*exp_scaled)(const float*, int64_t, float, float, float, float*);
  double (*grad_acc)(float*, const float*, const float*, double*, int64_t);
};

const RowKernels& row_kernels() {
  static const RowKernels k = simd_level() == SimdLevel::Avx512
                                  ? RowKernels{head_avx512::scale_logits, head_avx512::max_expsum,
                                               head_avx512::exp_scaled, head_avx512::grad_acc}
                                  : RowKernels{scale_logits_portable, max_expsum_portable, exp_scaled_portable,
                                               grad_acc_portable};
  return k;
}

// Growable uninitialized float buffer (a [B, C] chunk can be hundreds of MB: no zero-fill).
struct FloatBuf {
  std::unique_ptr<float[]> p;
  size_t cap = 0;
  float* get(size_t n) {
    if (n > cap) {
      p.reset();
      p.reset(new float[n]);
      cap = n;
    }
    return p.get();
  }
};

}  // namespace

struct MarginHead::Impl {
  int64_t D = 0, C = 0;
  MarginParams margin;
  HeadOptions options;
  Device device;
  margin::MarginFn<double> fn;
  Tensor W, dW, dX;

  // Per forward.
  bool have_forward = false;
  int64_t B = 0;
  int64_t chunk = 0;  // classes per chunk
  size_t last_chunk_bytes = 0;
  std::vector<int32_t> labels;
  std::vector<float> xhat;     // [B, D]
  std::vector<double> xinv;    // [B]
  std::vector<uint8_t> xsmall; // [B] ‖x_i‖ < eps: no projection term
  std::vector<float> winv;     // [C]
  std::vector<uint8_t> wsmall; // [C]
  std::vector<float> rowmax;   // [B] M_i
  std::vector<float> rowinvs;  // [B] 1/S_i
  std::vector<double> rowlse;  // [B] M_i + log S_i
  std::vector<float> zt;       // [B] target logit s·ψ(c_t) (f32, as used in the softmax)
  std::vector<double> ct;      // [B] target cosine
  std::vector<double> dpsi;    // [B] ψ'(c_t)
  FloatBuf cos_;               // [B, chunk]
  std::vector<double> part_a, part_b;  // [blocks, B] per-block partials
  std::vector<double> colsum;  // [chunk]
  std::vector<float> dxhat;    // [B, D]
  std::vector<std::vector<float>> tmp;  // per thread [kBlock]

  GemmOptions gemm_opts() const {
    GemmOptions g;
    g.precision = options.precision;
    g.max_threads = options.max_threads;
    return g;
  }
  ThreadPool& pool() const { return ThreadPool::global(); }
  int threads() const { return pool().threads_for(options.max_threads); }

  void check_x(const Tensor& x, const char* name) const {
    FC_CHECK(x.defined(), InvalidArgument, "Expected a defined tensor for ", name);
    FC_CHECK(x.device() == device, InvalidArgument, "Expected ", name, " on ", device.str(), " but received ",
             x.describe());
    FC_CHECK(x.dtype() == DType::F32, InvalidArgument, "Expected a float32 tensor for ", name, " but received ",
             x.describe());
    FC_CHECK(x.rank() == 2, ShapeMismatch, "Expected a 2-D [batch, ", D, "] tensor for ", name, " but received ",
             x.describe());
    FC_CHECK(x.size(1) == D, ShapeMismatch, "Expected ", name, " with ", D, " columns (the embedding size) but received ",
             x.describe());
    FC_CHECK(x.size(0) >= 1, InvalidArgument, "Expected a batch of at least 1 row for ", name, " but received ",
             x.describe());
    FC_CHECK(x.is_contiguous(), InvalidArgument, "Expected a contiguous tensor for ", name, " but received ",
             x.describe());
  }

  // x̂, 1/max(‖x‖, eps) and the NaN/Inf check of x (naming the first bad row).
  void normalize_x(const float* x, int64_t rows) {
    xhat.resize(static_cast<size_t>(rows * D));
    xinv.assign(static_cast<size_t>(rows), 0.0);
    xsmall.assign(static_cast<size_t>(rows), 0);
    std::vector<double> nrm(static_cast<size_t>(rows));
    const int64_t per = 16;
    pool().run((rows + per - 1) / per, [&](int64_t t, int) {
      for (int64_t i = t * per; i < std::min(rows, (t + 1) * per); ++i) {
        const float* xi = x + i * D;
        const double ss = sumsq(xi, D);
        nrm[i] = ss;
        if (!std::isfinite(ss)) continue;
        const double n = std::sqrt(ss);
        const double inv = 1.0 / std::max(n, kNormEps);
        xinv[i] = inv;
        xsmall[i] = n < kNormEps;
        float* h = xhat.data() + i * D;
        for (int64_t k = 0; k < D; ++k) h[k] = static_cast<float>(xi[k] * inv);
      }
    }, options.max_threads);
    for (int64_t i = 0; i < rows; ++i)
      FC_CHECK(std::isfinite(nrm[i]), InvalidArgument, "Expected finite values in x but found NaN or Inf at row ", i);
  }

  // winv_j = 1/max(‖w_j‖, eps) and the NaN/Inf check of W (naming the first bad class row).
  void weight_norms() {
    const float* w = W.data_as<float>();
    winv.resize(static_cast<size_t>(C));
    wsmall.assign(static_cast<size_t>(C), 0);
    std::vector<double> nrm(static_cast<size_t>(C));
    pool().run((C + kBlock - 1) / kBlock, [&](int64_t t, int) {
      for (int64_t j = t * kBlock; j < std::min(C, (t + 1) * kBlock); ++j) {
        const double ss = sumsq(w + j * D, D);
        nrm[j] = ss;
        const double n = std::sqrt(ss);
        winv[j] = static_cast<float>(1.0 / std::max(n, kNormEps));
        wsmall[j] = n < kNormEps;
      }
    }, options.max_threads);
    for (int64_t j = 0; j < C; ++j)
      FC_CHECK(std::isfinite(nrm[j]), InvalidArgument,
               "Expected finite values in weight but found NaN or Inf at class ", j);
  }

  // cos[:, 0:n] = (x̂ · W[j0:j0+n]ᵀ) · diag(winv) is done in two steps: the raw GEMM here, the winv
  // scaling inside the element passes (fused with the first read).
  void chunk_gemm(int64_t j0, int64_t n, float* cb) {
    sgemm(false, true, B, n, D, 1.0f, xhat.data(), D, W.data_as<float>() + j0 * D, D, 0.0f, cb, n, gemm_opts());
  }

  void ensure_tmp() {
    const int T = threads();
    if (static_cast<int>(tmp.size()) < T) tmp.resize(static_cast<size_t>(T));
    for (auto& v : tmp) v.resize(kBlock);
  }

  // Forward element pass over one chunk: scales the raw dots by winv (in place: cb holds c after),
  // builds the logits, and merges each row's (max, Σ exp) into (run_max, run_sum).
  void forward_chunk(int64_t j0, int64_t n, float* cb, bool first, std::vector<double>& run_max,
                     std::vector<double>& run_sum) {
    const int64_t nb = (n + kBlock - 1) / kBlock;
    part_a.resize(static_cast<size_t>(nb * B));
    part_b.resize(static_cast<size_t>(nb * B));
    const float s = static_cast<float>(margin.scale);
    ensure_tmp();
    const RowKernels& rk = row_kernels();
    pool().run(nb, [&](int64_t b, int th) {
      float* z = tmp[th].data();
      const int64_t a0 = b * kBlock, a1 = std::min(n, a0 + kBlock), len = a1 - a0;
      const float* wv = winv.data() + j0 + a0;
      for (int64_t i = 0; i < B; ++i) {
        float* ci = cb + i * n + a0;
        rk.scale_logits(ci, wv, len, s, z);
        const int64_t t = labels[i] - j0 - a0;
        if (t >= 0 && t < len) {
          double d = 0;
          const double c = ci[t];
          const double psi = margin::margin_psi_eval(fn, c, &d);
          ct[i] = c;
          dpsi[i] = d;
          zt[i] = static_cast<float>(margin.scale * psi);
          z[t] = zt[i];
        }
        float m = 0;
        double sum = 0;
        rk.max_expsum(z, len, &m, &sum);
        part_a[b * B + i] = m;
        part_b[b * B + i] = sum;
      }
    }, options.max_threads);
    // Merge blocks (fixed order) and chunks (chunk order), per row.
    for (int64_t i = 0; i < B; ++i) {
      double m = first ? -std::numeric_limits<double>::infinity() : run_max[i];
      for (int64_t b = 0; b < nb; ++b) m = std::max(m, part_a[b * B + i]);
      double sum = first ? 0.0 : run_sum[i] * std::exp(run_max[i] - m);
      for (int64_t b = 0; b < nb; ++b) sum += part_b[b * B + i] * std::exp(part_a[b * B + i] - m);
      run_max[i] = m;
      run_sum[i] = sum;
    }
  }

  // Backward element pass over one chunk whose cb holds c (winv applied): writes G·diag(winv) into
  // cb, colsum[j] = Σ_i G_ij c_ij and adds Σ_j G_ij c_ij into r (per row, in block order).
  void backward_chunk(int64_t j0, int64_t n, float* cb, std::vector<double>& r) {
    const int64_t nb = (n + kBlock - 1) / kBlock;
    part_a.resize(static_cast<size_t>(nb * B));
    colsum.resize(static_cast<size_t>(n));
    const float s = static_cast<float>(margin.scale);
    const double sB = margin.scale / static_cast<double>(B);
    const float sBf = static_cast<float>(sB);
    ensure_tmp();
    const RowKernels& rk = row_kernels();
    pool().run(nb, [&](int64_t b, int th) {
      float* e = tmp[th].data();
      const int64_t a0 = b * kBlock, a1 = std::min(n, a0 + kBlock), len = a1 - a0;
      const float* wv = winv.data() + j0 + a0;
      double* cs = colsum.data() + a0;
      for (int64_t j = 0; j < len; ++j) cs[j] = 0.0;
      for (int64_t i = 0; i < B; ++i) {
        float* ci = cb + i * n + a0;
        const float m = rowmax[i], inv = rowinvs[i] * sBf;
        rk.exp_scaled(ci, len, s, m, inv, e);  // G_ij off the target
        const int64_t t = labels[i] - j0 - a0;
        if (t >= 0 && t < len) {
          const double p = std::exp(static_cast<double>(zt[i]) - rowlse[i]);
          e[t] = static_cast<float>(sB * (p - 1.0) * dpsi[i]);
        }
        part_a[b * B + i] = rk.grad_acc(ci, e, wv, cs, len);
      }
    }, options.max_threads);
    for (int64_t i = 0; i < B; ++i)
      for (int64_t b = 0; b < nb; ++b) r[i] += part_a[b * B + i];
  }
};

MarginHead::MarginHead(int64_t embedding_size, int64_t num_classes, const MarginParams& margin,
                       const HeadOptions& options, const Device& device)
    : impl_(new Impl) {
  FC_CHECK(embedding_size >= 1, InvalidArgument, "Expected embedding_size >= 1 but received ", embedding_size);
  FC_CHECK(num_classes >= 2, InvalidArgument, "Expected num_classes >= 2 but received ", num_classes);
  const int kind = static_cast<int>(margin.kind);
  FC_CHECK(kind >= 0 && kind <= 3, InvalidArgument, "Expected margin kind Norm (0), Cos (1), Arc (2) or Combined (3) but received ",
           kind);
  FC_CHECK(std::isfinite(margin.scale) && margin.scale > 0, InvalidArgument, "Expected scale > 0 but received ",
           margin.scale);
  FC_CHECK(std::isfinite(margin.m1) && std::isfinite(margin.m2) && std::isfinite(margin.m3), InvalidArgument,
           "Expected finite margins m1, m2, m3 but received ", margin.m1, ", ", margin.m2, ", ", margin.m3);
  FC_CHECK(options.max_threads >= 0, InvalidArgument, "Expected max_threads >= 0 but received ", options.max_threads);
  FC_CHECK(options.max_chunk_bytes >= 4, InvalidArgument, "Expected max_chunk_bytes >= 4 but received ",
           options.max_chunk_bytes);
  FC_CHECK(options.precision == GemmPrecision::F32 || options.precision == GemmPrecision::BF16, InvalidArgument,
           "Expected precision F32 (0) or BF16 (1) but received ", static_cast<int>(options.precision));
  FC_CHECK(device.is_cpu(), NotImplemented, "the CUDA margin head is not implemented yet (", device.str(), ")");
  Impl& m = *impl_;
  m.D = embedding_size;
  m.C = num_classes;
  m.margin = margin;
  m.options = options;
  m.device = device;
  m.fn = margin::make_margin_fn<double>(kind, margin.m1, margin.m2, margin.m3, margin.easy_margin, margin.fallback,
                                        margin.straight_through, kCosClampEps);
  m.W = Tensor::empty({m.C, m.D}, DType::F32, device);
  std::memset(m.W.data(), 0, m.W.nbytes());
  m.dW = Tensor::empty({m.C, m.D}, DType::F32, device);
  std::memset(m.dW.data(), 0, m.dW.nbytes());
}

MarginHead::~MarginHead() = default;

int64_t MarginHead::embedding_size() const { return impl_->D; }
int64_t MarginHead::num_classes() const { return impl_->C; }
const MarginParams& MarginHead::margin() const { return impl_->margin; }
Tensor& MarginHead::weight() { return impl_->W; }
const Tensor& MarginHead::grad_weight() const { return impl_->dW; }
const Tensor& MarginHead::grad_embeddings() const { return impl_->dX; }
size_t MarginHead::last_chunk_bytes() const { return impl_->last_chunk_bytes; }

double MarginHead::forward(const Tensor& x, const Tensor& labels) {
  Impl& m = *impl_;
  m.have_forward = false;
  // ---- validation (the meta-function role)
  m.check_x(x, "x");
  const int64_t B = x.size(0);
  FC_CHECK(labels.defined(), InvalidArgument, "Expected a defined tensor for labels");
  FC_CHECK(labels.device() == m.device, InvalidArgument, "Expected labels on ", m.device.str(), " but received ",
           labels.describe());
  FC_CHECK(labels.dtype() == DType::I32, InvalidArgument, "Expected an int32 tensor for labels but received ",
           labels.describe());
  FC_CHECK(labels.rank() == 1 && labels.size(0) == B, ShapeMismatch, "Expected labels of shape [", B,
           "] (one per row of x) but received ", labels.describe());
  FC_CHECK(labels.is_contiguous(), InvalidArgument, "Expected a contiguous tensor for labels but received ",
           labels.describe());
  const int32_t* lab = labels.data_as<int32_t>();
  for (int64_t i = 0; i < B; ++i)
    FC_CHECK(lab[i] >= 0 && lab[i] < m.C, OutOfRange, "Expected labels in [0, ", m.C, ") but received ", lab[i],
             " at row ", i);
  m.B = B;
  m.labels.assign(lab, lab + B);
  m.normalize_x(x.data_as<float>(), B);
  m.weight_norms();

  // ---- chunking
  const size_t full = static_cast<size_t>(B) * static_cast<size_t>(m.C) * 4;
  m.chunk = full <= m.options.max_chunk_bytes
                ? m.C
                : std::max<int64_t>(1, static_cast<int64_t>(m.options.max_chunk_bytes / (4 * static_cast<size_t>(B))));
  m.last_chunk_bytes = static_cast<size_t>(B) * static_cast<size_t>(m.chunk) * 4;
  float* cb = m.cos_.get(static_cast<size_t>(B * m.chunk));

  m.ct.assign(static_cast<size_t>(B), 0.0);
  m.dpsi.assign(static_cast<size_t>(B), 0.0);
  m.zt.assign(static_cast<size_t>(B), 0.0f);
  std::vector<double> run_max(static_cast<size_t>(B)), run_sum(static_cast<size_t>(B));
  for (int64_t j0 = 0; j0 < m.C; j0 += m.chunk) {
    const int64_t n = std::min(m.chunk, m.C - j0);
    m.chunk_gemm(j0, n, cb);
    m.forward_chunk(j0, n, cb, j0 == 0, run_max, run_sum);
  }
  m.rowmax.resize(static_cast<size_t>(B));
  m.rowinvs.resize(static_cast<size_t>(B));
  m.rowlse.resize(static_cast<size_t>(B));
  double loss = 0;
  for (int64_t i = 0; i < B; ++i) {
    m.rowmax[i] = static_cast<float>(run_max[i]);  // exact: a float logit
    m.rowinvs[i] = static_cast<float>(1.0 / run_sum[i]);
    m.rowlse[i] = run_max[i] + std::log(run_sum[i]);
    loss += m.rowlse[i] - static_cast<double>(m.zt[i]);
  }
  m.have_forward = true;
  return loss / static_cast<double>(B);
}

void MarginHead::backward() {
  Impl& m = *impl_;
  FC_CHECK(m.have_forward, InvalidArgument, "backward() needs a forward() since the last backward()");
  m.have_forward = false;
  const int64_t B = m.B, D = m.D, C = m.C;
  float* cb = m.cos_.get(static_cast<size_t>(B * m.chunk));
  if (!m.dX.defined() || m.dX.size(0) != B) m.dX = Tensor::empty({B, D}, DType::F32, m.device);
  m.dxhat.resize(static_cast<size_t>(B * D));
  std::vector<double> r(static_cast<size_t>(B), 0.0);
  const float* w = m.W.data_as<float>();
  float* dw = m.dW.data_as<float>();
  const GemmOptions go = m.gemm_opts();
  for (int64_t j0 = 0; j0 < C; j0 += m.chunk) {
    const int64_t n = std::min(m.chunk, C - j0);
    if (m.chunk < C) {  // recompute this chunk's cosines (the single chunk is kept from forward)
      m.chunk_gemm(j0, n, cb);
      const float* wv = m.winv.data() + j0;
      m.pool().run(B, [&](int64_t i, int) {
        float* ci = cb + i * n;
        for (int64_t j = 0; j < n; ++j) ci[j] *= wv[j];
      }, m.options.max_threads);
    }
    m.backward_chunk(j0, n, cb, r);
    // dX̂ (+)= (G·diag(winv)) · W_chunk ; dW_chunk = (G·diag(winv))ᵀ · X̂
    sgemm(false, false, B, D, n, 1.0f, cb, n, w + j0 * D, D, j0 == 0 ? 0.0f : 1.0f, m.dxhat.data(), D, go);
    sgemm(true, false, n, D, B, 1.0f, cb, n, m.xhat.data(), D, 0.0f, dw + j0 * D, D, go);
    // dW_j −= winv_j · colsum_j · ŵ_j = (colsum_j · winv_j²) · w_j
    m.pool().run((n + kBlock - 1) / kBlock, [&](int64_t b, int) {
      for (int64_t j = b * kBlock; j < std::min(n, (b + 1) * kBlock); ++j) {
        if (m.wsmall[j0 + j]) continue;
        const double iv = m.winv[j0 + j];
        const float f = static_cast<float>(m.colsum[j] * iv * iv);
        const float* wj = w + (j0 + j) * D;
        float* dj = dw + (j0 + j) * D;
        for (int64_t k = 0; k < D; ++k) dj[k] -= f * wj[k];
      }
    }, m.options.max_threads);
  }
  // ∂L/∂x_i = xinv_i · (dX̂_i − r_i x̂_i)
  float* dx = m.dX.data_as<float>();
  m.pool().run(B, [&](int64_t i, int) {
    const float a = static_cast<float>(m.xinv[i]);
    const float rr = m.xsmall[i] ? 0.0f : static_cast<float>(r[i]);
    const float* g = m.dxhat.data() + i * D;
    const float* h = m.xhat.data() + i * D;
    for (int64_t k = 0; k < D; ++k) dx[i * D + k] = a * (g[k] - rr * h[k]);
  }, m.options.max_threads);
}

Tensor MarginHead::logits(const Tensor& x) {
  Impl& m = *impl_;
  m.check_x(x, "x");
  const int64_t B = x.size(0);
  // logits() leaves the forward state alone except for x̂ / norms, which backward needs: keep a copy.
  std::vector<float> keep_xhat;
  std::vector<double> keep_xinv;
  std::vector<uint8_t> keep_xsmall;
  keep_xhat.swap(m.xhat);
  keep_xinv.swap(m.xinv);
  keep_xsmall.swap(m.xsmall);
  struct Restore {
    Impl& m;
    std::vector<float>& a;
    std::vector<double>& b;
    std::vector<uint8_t>& c;
    ~Restore() {
      m.xhat.swap(a);
      m.xinv.swap(b);
      m.xsmall.swap(c);
    }
  } restore{m, keep_xhat, keep_xinv, keep_xsmall};
  m.normalize_x(x.data_as<float>(), B);
  std::vector<float> keep_winv = m.winv;  // backward uses the forward's norms
  std::vector<uint8_t> keep_wsmall = m.wsmall;
  try {
    m.weight_norms();
  } catch (...) {
    m.winv.swap(keep_winv);
    m.wsmall.swap(keep_wsmall);
    throw;
  }
  Tensor out = Tensor::empty({B, m.C}, DType::F32, m.device);
  float* o = out.data_as<float>();
  sgemm(false, true, B, m.C, m.D, 1.0f, m.xhat.data(), m.D, m.W.data_as<float>(), m.D, 0.0f, o, m.C, m.gemm_opts());
  const float s = static_cast<float>(m.margin.scale);
  m.pool().run(B, [&](int64_t i, int) {
    float* oi = o + i * m.C;
    for (int64_t j = 0; j < m.C; ++j) oi[j] = oi[j] * m.winv[j] * s;
  }, m.options.max_threads);
  m.winv.swap(keep_winv);
  m.wsmall.swap(keep_wsmall);
  return out;
}

double margin_psi(const MarginParams& p, double c, double* dpsi) {
  const margin::MarginFn<double> f = margin::make_margin_fn<double>(static_cast<int>(p.kind), p.m1, p.m2, p.m3,
                                                                    p.easy_margin, p.fallback, p.straight_through,
                                                                    kCosClampEps);
  return margin::margin_psi_eval(f, c, dpsi);
}

}  // namespace fc
