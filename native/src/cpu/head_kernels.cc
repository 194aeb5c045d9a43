// @file head_kernels.cc
// @brief The CPU implementation of fc::heads::Kernels (head_kernels.h): the element passes of the
// fused margin head, multi-threaded on the global pool, with AVX-512 row kernels
// (head_kernels_avx512.cc, chosen by fc::simd_level()) and portable ones.
//
// Threading and determinism: the element passes run over fixed column blocks of kBlock classes
// (tasks dealt by the ThreadPool); every reduction (row max/Σexp, Σ_j G·c per row, Σ_i G·c and Σ_i G
// per column) is computed per block in a fixed order and merged in block order, so results do not
// depend on the thread count or scheduling; sgemm is deterministic in the same sense. The SIMD levels
// round differently (FMA, lane order); each is deterministic.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common/margin_math.h"
#include "facecuda/cpu_info.h"
#include "facecuda/error.h"
#include "common/head_kernels.h"
#include "facecuda/heads.h"
#include "facecuda/threadpool.h"

namespace fc {

namespace head_avx512 {  // head_kernels_avx512.cc (compiled with the AVX-512 flags)
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

// ---- row kernels (portable; head_kernels_avx512.cc has the same contract)

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

}  // namespace


namespace heads {

namespace {

class CpuKernels final : public Kernels {
 public:
  CpuKernels(GemmPrecision precision, int max_threads) : max_threads_(max_threads) {
    gemm_.precision = precision == GemmPrecision::TF32 ? GemmPrecision::F32 : precision;  // TF32: fp32
    gemm_.max_threads = max_threads;
  }

  void row_norms(const float* v, int64_t rows, int64_t D, float* vhat, float* inv, uint8_t* small,
                 double* host_norm) override {
    const int64_t per = 16;
    run((rows + per - 1) / per, [&](int64_t t, int) {
      for (int64_t i = t * per; i < std::min(rows, (t + 1) * per); ++i) {
        const float* vi = v + i * D;
        const double n = std::sqrt(sumsq(vi, D));
        host_norm[i] = n;
        if (!std::isfinite(n)) continue;
        const double iv = 1.0 / std::max(n, kNormEps);
        inv[i] = static_cast<float>(iv);
        small[i] = n < kNormEps;
        if (vhat) {
          float* h = vhat + i * D;
          for (int64_t k = 0; k < D; ++k) h[k] = static_cast<float>(vi[k] * iv);
        }
      }
    });
  }

  void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
            const float* B, int64_t ldb, float beta, float* C, int64_t ldc) override {
    sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, gemm_);
  }

  void gather_rows(const float* src, const std::vector<int64_t>& idx, int64_t D, float* dst) override {
    const int64_t n = static_cast<int64_t>(idx.size());
    run((n + kBlock - 1) / kBlock, [&](int64_t b, int) {
      for (int64_t r = b * kBlock; r < std::min(n, (b + 1) * kBlock); ++r)
        std::memcpy(dst + r * D, src + idx[r] * D, static_cast<size_t>(D) * 4);
    });
  }

  void scatter_rows(const float* src, const std::vector<int64_t>& idx, int64_t D, float* dst, bool accumulate) override {
    const int64_t n = static_cast<int64_t>(idx.size());
    run((n + kBlock - 1) / kBlock, [&](int64_t b, int) {
      for (int64_t r = b * kBlock; r < std::min(n, (b + 1) * kBlock); ++r) {
        float* d = dst + idx[r] * D;
        const float* s = src + r * D;
        if (accumulate)
          for (int64_t k = 0; k < D; ++k) d[k] += s[k];
        else
          std::memcpy(d, s, static_cast<size_t>(D) * 4);
      }
    });
  }

  void fill_zero(void* dst, size_t bytes) override {
    const size_t per = size_t(4) << 20;
    const int64_t tasks = static_cast<int64_t>((bytes + per - 1) / per);
    run(tasks, [&](int64_t t, int) {
      const size_t a = static_cast<size_t>(t) * per, e = std::min(bytes, a + per);
      std::memset(static_cast<char*>(dst) + a, 0, e - a);
    });
  }

  void add_inplace(float* dst, const float* src, int64_t n) override {
    const int64_t per = int64_t(1) << 20;
    run((n + per - 1) / per, [&](int64_t t, int) {
      for (int64_t k = t * per; k < std::min(n, (t + 1) * per); ++k) dst[k] += src[k];
    });
  }

  void subcenter_max(const float* raw, const float* winv, int64_t B, int64_t n, int64_t K, float* cos,
                     uint8_t* amax) override {
    run(B, [&](int64_t i, int) {
      const float* ri = raw + i * n * K;
      for (int64_t c = 0; c < n; ++c) {
        float best = ri[c * K] * winv[c * K];
        int64_t bk = 0;
        for (int64_t k = 1; k < K; ++k) {
          const float v = ri[c * K + k] * winv[c * K + k];
          if (v > best) {
            best = v;
            bk = k;
          }
        }
        cos[i * n + c] = best;
        amax[i * n + c] = static_cast<uint8_t>(bk);
      }
    });
  }

  void subcenter_expand(const float* g, const uint8_t* amax, const float* winv, int64_t B, int64_t n, int64_t K,
                        float* raw, double* colsum) override {
    // Column blocks; rows in order inside each, so colsum is deterministic.
    run((n + kBlock - 1) / kBlock, [&](int64_t b, int) {
      const int64_t c0 = b * kBlock, c1 = std::min(n, c0 + kBlock);
      for (int64_t r = c0 * K; r < c1 * K; ++r) colsum[r] = 0.0;
      for (int64_t i = 0; i < B; ++i) {
        float* ri = raw + i * n * K;
        for (int64_t c = c0; c < c1; ++c) {
          const int64_t k = amax[i * n + c];
          const float gi = g[i * n + c];
          const float cosv = ri[c * K + k] * winv[c * K + k];
          colsum[c * K + k] += static_cast<double>(gi) * cosv;
          for (int64_t q = 0; q < K; ++q) ri[c * K + q] = 0.0f;
          ri[c * K + k] = gi * winv[c * K + k];
        }
      }
    });
  }

  void forward_chunk(float* cb, const float* wv, const float* bias, int64_t B, int64_t n, int64_t j0,
                     const RowTable& rows, const ElementConfig& cfg, ChunkRowStats& out) override {
    const int64_t nb = (n + kBlock - 1) / kBlock;
    part_a_.resize(static_cast<size_t>(nb * B));
    part_b_.resize(static_cast<size_t>(nb * B));
    ensure_tmp();
    const float* wones = ones(n);
    const RowKernels& rk = row_kernels();
    const bool plain = !cfg.has_bias && !cfg.clamp_all;
    run(nb, [&](int64_t b, int th) {
      float* z = tmp_[th].data();
      const int64_t a0 = b * kBlock, a1 = std::min(n, a0 + kBlock), len = a1 - a0;
      const float* w = (wv ? wv : wones) + a0;
      for (int64_t i = 0; i < B; ++i) {
        float* ci = cb + i * n + a0;
        const float s = rows.scale[i];
        if (plain) {
          rk.scale_logits(ci, w, len, s, z);
        } else {
          for (int64_t j = 0; j < len; ++j) {
            float v = ci[j] * w[j];
            if (cfg.has_bias) v += bias[a0 + j];
            if (cfg.clamp_all) v = v < cfg.lo ? cfg.lo : (v > cfg.hi ? cfg.hi : v);
            ci[j] = v;
            z[j] = s * v;
          }
        }
        const int64_t t = rows.target[i] - j0 - a0;
        if (rows.target[i] >= 0 && t >= 0 && t < len) {
          double d = 0;
          const double c = ci[t];
          const double psi = margin::margin_psi_eval(rows.fn[i], c, &d);
          out.target_cos[i] = c;
          out.target_dpsi[i] = d;
          out.target_z[i] = static_cast<float>(static_cast<double>(s) * psi);
          z[t] = out.target_z[i];
        }
        float m = 0;
        double sum = 0;
        rk.max_expsum(z, len, &m, &sum);
        part_a_[b * B + i] = m;
        part_b_[b * B + i] = sum;
      }
    });
    for (int64_t i = 0; i < B; ++i) {
      double m = -std::numeric_limits<double>::infinity();
      for (int64_t b = 0; b < nb; ++b) m = std::max(m, part_a_[b * B + i]);
      double sum = 0;
      for (int64_t b = 0; b < nb; ++b) sum += part_b_[b * B + i] * std::exp(part_a_[b * B + i] - m);
      out.max[i] = static_cast<float>(m);
      out.sum[i] = sum;
    }
  }

  void backward_chunk(float* cb, const float* wv, int64_t B, int64_t n, int64_t j0, const RowTable& rows,
                      const ElementConfig& cfg, const float* row_max, const float* inv_sum, const float* gscale,
                      const double* target_g, double* colsum, double* host_rowsum, float* dbias,
                      bool bias_assign) override {
    const int64_t nb = (n + kBlock - 1) / kBlock;
    part_a_.resize(static_cast<size_t>(nb * B));
    ensure_tmp();
    const float* wones = ones(n);
    const RowKernels& rk = row_kernels();
    run(nb, [&](int64_t b, int th) {
      float* e = tmp_[th].data();
      float* db = dbias ? tmp2_[th].data() : nullptr;
      const int64_t a0 = b * kBlock, a1 = std::min(n, a0 + kBlock), len = a1 - a0;
      const float* w = (wv ? wv : wones) + a0;
      double* cs = colsum + a0;
      for (int64_t j = 0; j < len; ++j) cs[j] = 0.0;
      if (db)
        for (int64_t j = 0; j < len; ++j) db[j] = 0.0f;
      for (int64_t i = 0; i < B; ++i) {
        float* ci = cb + i * n + a0;
        rk.exp_scaled(ci, len, rows.scale[i], row_max[i], inv_sum[i] * gscale[i], e);  // G_ij off the target
        if (cfg.clamp_all)
          for (int64_t j = 0; j < len; ++j)
            if (ci[j] <= cfg.lo || ci[j] >= cfg.hi) e[j] = 0.0f;
        const int64_t t = rows.target[i] - j0 - a0;
        if (rows.target[i] >= 0 && t >= 0 && t < len) e[t] = static_cast<float>(target_g[i]);
        if (db)
          for (int64_t j = 0; j < len; ++j) db[j] += e[j];
        part_a_[b * B + i] = rk.grad_acc(ci, e, w, cs, len);
      }
      if (db) {
        float* out = dbias + a0;
        for (int64_t j = 0; j < len; ++j) out[j] = bias_assign ? db[j] : out[j] + db[j];
      }
    });
    for (int64_t i = 0; i < B; ++i)
      for (int64_t b = 0; b < nb; ++b) host_rowsum[i] += part_a_[b * B + i];
  }

  void weight_grad_project(float* dw, const float* w, const float* winv, const uint8_t* small, const double* colsum,
                           int64_t n, int64_t D) override {
    run((n + kBlock - 1) / kBlock, [&](int64_t b, int) {
      for (int64_t j = b * kBlock; j < std::min(n, (b + 1) * kBlock); ++j) {
        if (small[j]) continue;
        const double iv = winv[j];
        const float f = static_cast<float>(colsum[j] * iv * iv);
        const float* wj = w + j * D;
        float* dj = dw + j * D;
        for (int64_t k = 0; k < D; ++k) dj[k] -= f * wj[k];
      }
    });
  }

  void weight_grad(const float* g, const float* xhat, int64_t B, int64_t n, int64_t D, float beta, const float* w,
                   const float* winv, const uint8_t* small, const double* colsum, bool project, float* dw) override {
    GemmOptions o = gemm_;
    if (project) {
      coef_.resize(static_cast<size_t>(n));
      for (int64_t j = 0; j < n; ++j) {
        const double iv = winv[j];
        coef_[j] = small[j] ? 0.0f : -static_cast<float>(colsum[j] * iv * iv);
      }
      o.row_scale = coef_.data();
      o.row_src = w;
      o.row_src_ld = D;
    }
    sgemm(true, false, n, D, B, 1.0f, g, n, xhat, D, beta, dw, D, o);
  }

  void dx_final(const float* dxhat, const float* xhat, const float* xinv, const double* a, int64_t B, int64_t D,
                float* dx) override {
    run(B, [&](int64_t i, int) {
      const float s = xinv ? xinv[i] : 1.0f;
      const float ai = static_cast<float>(a[i]);
      const float* g = dxhat + i * D;
      const float* h = xhat + i * D;
      float* o = dx + i * D;
      for (int64_t k = 0; k < D; ++k) o[k] = s * g[k] + ai * h[k];
    });
  }

  void scale_columns(float* out, const float* wv, const float* bias, const float* host_scale, int64_t B,
                     int64_t n) override {
    run(B, [&](int64_t i, int) {
      float* o = out + i * n;
      const float s = host_scale[i];
      for (int64_t j = 0; j < n; ++j) {
        float v = wv ? o[j] * wv[j] : o[j];
        v *= s;
        o[j] = bias ? v + bias[j] : v;
      }
    });
  }

  void target_cosines(const float* xhat, const float* w, const float* winv, const std::vector<int32_t>& target,
                      int64_t D, int64_t K, double* host_out) override {
    const int64_t B = static_cast<int64_t>(target.size());
    run(B, [&](int64_t i, int) {
      if (target[i] < 0) {
        host_out[i] = std::numeric_limits<double>::quiet_NaN();
        return;
      }
      double best = -std::numeric_limits<double>::infinity();
      for (int64_t k = 0; k < K; ++k) {
        const int64_t r = target[i] * K + k;
        double dot = 0;
        for (int64_t q = 0; q < D; ++q) dot += static_cast<double>(xhat[i * D + q]) * w[r * D + q];
        best = std::max(best, dot * winv[r]);
      }
      host_out[i] = best;
    });
  }

  double center_diff(const float* x, const std::vector<int32_t>& labels, const float* centers, int64_t D,
                     float* diff) override {
    const int64_t B = static_cast<int64_t>(labels.size());
    std::vector<double> part(static_cast<size_t>(B));
    run(B, [&](int64_t i, int) {
      const float* c = centers + static_cast<int64_t>(labels[i]) * D;
      double acc = 0;
      for (int64_t k = 0; k < D; ++k) {
        const float d = x[i * D + k] - c[k];
        diff[i * D + k] = d;
        acc += static_cast<double>(d) * d;
      }
      part[i] = acc;
    });
    double total = 0;
    for (double v : part) total += v;
    return total;
  }

  void center_update(const float* diff, const std::vector<int32_t>& classes,
                     const std::vector<std::vector<int32_t>>& rows_of, const std::vector<double>& coef, int64_t D,
                     float* centers) override {
    run(static_cast<int64_t>(classes.size()), [&](int64_t q, int) {
      float* c = centers + static_cast<int64_t>(classes[q]) * D;
      for (int64_t k = 0; k < D; ++k) {
        double acc = 0;
        for (int32_t i : rows_of[q]) acc += diff[static_cast<int64_t>(i) * D + k];
        c[k] = static_cast<float>(c[k] + coef[q] * acc);
      }
    });
  }

  void scale_copy(const float* x, float a, int64_t n, float* y) override {
    const int64_t per = int64_t(1) << 20;
    run((n + per - 1) / per, [&](int64_t t, int) {
      for (int64_t k = t * per; k < std::min(n, (t + 1) * per); ++k) y[k] = a * x[k];
    });
  }

 private:
  template <typename F>
  void run(int64_t tasks, F&& fn) {
    if (tasks <= 0) return;
    ThreadPool::global().run(tasks, fn, max_threads_);
  }
  void ensure_tmp() {
    const int T = ThreadPool::global().threads_for(max_threads_);
    if (static_cast<int>(tmp_.size()) < T) {
      tmp_.resize(static_cast<size_t>(T));
      tmp2_.resize(static_cast<size_t>(T));
    }
    for (auto& v : tmp_) v.resize(kBlock);
    for (auto& v : tmp2_) v.resize(kBlock);
  }
  const float* ones(int64_t n) {
    if (static_cast<int64_t>(ones_.size()) < n) ones_.assign(static_cast<size_t>(n), 1.0f);
    return ones_.data();
  }

  GemmOptions gemm_;
  int max_threads_ = 0;
  std::vector<double> part_a_, part_b_;
  std::vector<std::vector<float>> tmp_, tmp2_;
  std::vector<float> ones_, coef_;
};

}  // namespace

std::unique_ptr<Kernels> make_cpu_kernels(GemmPrecision precision, int max_threads) {
  return std::unique_ptr<Kernels>(new CpuKernels(precision, max_threads));
}

}  // namespace heads
}  // namespace fc
