// @file margin_head.cc
// @brief fc::MarginHead and fc::CenterLoss: the orchestration of the fused head, written once for
// both backends on top of the device passes of head_kernels.h (CPU: native/src/cpu/head_kernels.cc,
// CUDA: native/src/cuda/head_kernels.cu).
//
// One training step (SPEC §1.3 and the kind-specific sections):
//   forward:  validate → x̂ and ‖x‖ (row_norms) → labels to local/active indices (shards, Partial FC
//             sampling with the positives always kept, gathered sub-weight) → ‖w‖ of the active rows
//             → the per-row table (margin function, scale, target; AdaFace EMA and margins,
//             ElasticFace draws, SphereFace λ) → per class chunk: GEMM x̂·Wᵀ (K > 1: then the max over
//             sub-centers) and the fused element pass (winv, bias, clamp, margin, scale, max/Σexp),
//             merged across chunks with an online log-sum-exp → loss.
//   backward: target entries of G from the saved row statistics → per chunk (recomputed when there
//             is more than one): the fused element pass G = (s/B)(p − Y)·ψ' (and its column/row sums
//             with the cosines), GEMMs dX̂ += G'·W and dW = G'ᵀ·X̂ (G' = G·diag(winv)), the projection of
//             dW through the weight normalization → dX through the embedding normalization (SphereFace
//             adds the ‖x‖ term).
// Notation in the code: R = rows of W (num_local·K), Ca = active classes (sampled, or all local),
// Ra = Ca·K active rows; "active index" = position in the sorted sampled set.
//
// Where facecuda departs from a reference, it says so here and in heads.h: the angular clamp
// (kCosClampEps), AdaFace with a batch of one (EMA std unchanged), ElasticFace-plus pairing (the
// intended one, SPEC §5), the combined margin's true gradient, Partial FC's sparse semantics.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "common/head_kernels.h"
#include "common/margin_math.h"
#include "facecuda/error.h"
#include "facecuda/heads.h"

namespace fc {

using heads::ChunkRowStats;
using heads::ElementConfig;
using heads::Kernels;
using heads::RowTable;

namespace {

// Scratch that grows and never shrinks (uninitialized), on the head's device.
struct DevBuf {
  Tensor t;
  void* get(const Device& d, size_t bytes) {
    if (!t.defined() || t.nbytes() < bytes) {
      t = Tensor();
      t = Tensor::empty({static_cast<int64_t>(std::max<size_t>(bytes, 1))}, DType::U8, d);
    }
    return t.data();
  }
  float* f(const Device& d, int64_t n) { return static_cast<float*>(get(d, static_cast<size_t>(n) * 4)); }
  double* f64(const Device& d, int64_t n) { return static_cast<double*>(get(d, static_cast<size_t>(n) * 8)); }
  uint8_t* u8(const Device& d, int64_t n) { return static_cast<uint8_t*>(get(d, static_cast<size_t>(n))); }
};

std::unique_ptr<Kernels> make_kernels(const Device& device, GemmPrecision precision, int max_threads) {
  if (device.is_cuda()) return heads::make_cuda_kernels(device, precision);
  return heads::make_cpu_kernels(precision, max_threads);
}

bool normalized_kind(MarginKind k) { return k != MarginKind::Softmax && k != MarginKind::Sphere; }

void check_tensor(const Tensor& x, const char* name, DType dtype, const Device& device) {
  FC_CHECK(x.defined(), InvalidArgument, "Expected a defined tensor for ", name);
  FC_CHECK(x.device() == device, InvalidArgument, "Expected ", name, " on ", device.str(), " but received ",
           x.describe());
  FC_CHECK(x.dtype() == dtype, InvalidArgument, "Expected a ", dtype_name(dtype), " tensor for ", name,
           " but received ", x.describe());
  FC_CHECK(x.is_contiguous(), InvalidArgument, "Expected a contiguous tensor for ", name, " but received ",
           x.describe());
}

// Labels to a host vector, validated against [0, C).
std::vector<int32_t> host_labels(const Tensor& labels, int64_t B, int64_t C) {
  FC_CHECK(labels.defined(), InvalidArgument, "Expected a defined tensor for labels");
  FC_CHECK(labels.dtype() == DType::I32, InvalidArgument, "Expected an int32 tensor for labels but received ",
           labels.describe());
  FC_CHECK(labels.rank() == 1 && labels.size(0) == B, ShapeMismatch, "Expected labels of shape [", B,
           "] (one per row of x) but received ", labels.describe());
  FC_CHECK(labels.is_contiguous(), InvalidArgument, "Expected a contiguous tensor for labels but received ",
           labels.describe());
  std::vector<int32_t> lab(static_cast<size_t>(B));
  labels.copy_to_host(lab.data());
  for (int64_t i = 0; i < B; ++i)
    FC_CHECK(lab[i] >= 0 && lab[i] < C, OutOfRange, "Expected labels in [0, ", C, ") but received ", lab[i],
             " at row ", i);
  return lab;
}

}  // namespace

double sphere_lambda(const MarginParams& p, int64_t iteration) {
  const double l = p.sphere_base * std::pow(1.0 + p.sphere_gamma * static_cast<double>(iteration), -p.sphere_power);
  return std::max(l, p.sphere_min);
}

struct MarginHead::Impl {
  int64_t D = 0, C = 0, Cl = 0, K = 1, R = 0;
  MarginParams margin;
  HeadOptions options;
  Device device;
  std::unique_ptr<Kernels> k;
  heads::Fn base_fn;
  ElementConfig cfg;
  bool sharded = false;
  Tensor W, dW, bias, dbias, dX;

  // Training state.
  bool training = true;
  int64_t step = 0;
  double ema_mean = 20.0, ema_std = 100.0;

  // Per forward.
  bool have_forward = false;
  int64_t B = 0, Ca = 0, chunk = 0;
  bool sampling = false;  // this forward used a sampled subset (Wsub)
  size_t last_chunk_bytes = 0;
  std::vector<int32_t> labels;        // global
  std::vector<int64_t> active;        // sorted local class indices of the active set
  std::vector<double> margins;        // ElasticFace
  std::vector<double> xnorm;          // host ‖x_i‖
  RowTable rows;
  std::vector<float> run_max;         // merged over chunks
  std::vector<double> run_sum;
  std::vector<double> tcos, tdpsi;    // target cosine and ψ'
  std::vector<float> tz;              // target logit
  std::vector<uint8_t> has_target;
  DevBuf xhat, xinv, xsmall, winv, wsmall, cb, raw, amax, colsum, dxhat, wsub, dwsub;

  const float* active_w() { return sampling ? static_cast<float*>(wsub.t.data()) : W.data_as<float>(); }

  // ---- forward pieces

  // x̂ (or the copy of x for Softmax), inverse norms and the NaN/Inf check.
  void embed(const Tensor& x, int64_t rows_n, float* xh, float* xi, uint8_t* xs, std::vector<double>& norms) {
    norms.assign(static_cast<size_t>(rows_n), 0.0);
    const bool normalize = margin.kind != MarginKind::Softmax;
    k->row_norms(x.data_as<float>(), rows_n, D, normalize ? xh : nullptr, xi, xs, norms.data());
    for (int64_t i = 0; i < rows_n; ++i)
      FC_CHECK(std::isfinite(norms[i]), InvalidArgument, "Expected finite values in x but found NaN or Inf at row ", i);
    if (!normalize) k->scale_copy(x.data_as<float>(), 1.0f, rows_n * D, xh);
  }

  // winv/wsmall of `rows_n` rows at w and the NaN/Inf check, naming the class of the first bad row.
  void weight_norms(const float* w, int64_t rows_n, float* wi, uint8_t* ws, const std::vector<int64_t>* classes) {
    std::vector<double> nrm(static_cast<size_t>(rows_n));
    k->row_norms(w, rows_n, D, nullptr, wi, ws, nrm.data());
    for (int64_t r = 0; r < rows_n; ++r) {
      if (std::isfinite(nrm[r])) continue;
      const int64_t local = classes ? (*classes)[r / K] : r / K;
      fail(Code::InvalidArgument, str("Expected finite values in weight but found NaN or Inf at class ",
                                       local + options.class_start,
                                       K > 1 ? " (sub-center " + std::to_string(r % K) + ")" : std::string()));
    }
  }

  // The per-column factor the element passes apply to active classes from j0 (K = 1): winv, or none
  // for Softmax, whose weights are not normalized (winv then serves only the NaN/Inf check).
  const float* column_scale(int64_t j0) {
    return margin.kind == MarginKind::Softmax ? nullptr : winv.f(device, 1) + j0;
  }

  // The active class set (Partial FC) for a training forward at `step_used`.
  void choose_active(const std::vector<int32_t>& local, int64_t step_used) {
    active.clear();
    sampling = training && options.sample_rate < 1.0;
    if (!sampling) {
      active.resize(static_cast<size_t>(Cl));
      std::iota(active.begin(), active.end(), int64_t(0));
      return;
    }
    std::vector<int64_t> pos;
    for (int32_t y : local)
      if (y >= 0) pos.push_back(y);
    std::sort(pos.begin(), pos.end());
    pos.erase(std::unique(pos.begin(), pos.end()), pos.end());
    const int64_t num_sample = static_cast<int64_t>(std::floor(options.sample_rate * static_cast<double>(Cl)));
    if (num_sample <= static_cast<int64_t>(pos.size())) {
      active = pos;
    } else {
      const uint64_t key = margin::rng_key(options.seed, margin::kStreamSample, static_cast<uint64_t>(step_used));
      std::vector<double> u(static_cast<size_t>(Cl));
      for (int64_t j = 0; j < Cl; ++j) u[j] = margin::rng_uniform(key, static_cast<uint64_t>(j));
      for (int64_t p : pos) u[p] = 2.0;
      std::vector<int64_t> idx(static_cast<size_t>(Cl));
      std::iota(idx.begin(), idx.end(), int64_t(0));
      std::nth_element(idx.begin(), idx.begin() + (num_sample - 1), idx.end(), [&](int64_t a, int64_t b) {
        return u[a] != u[b] ? u[a] > u[b] : a < b;
      });
      active.assign(idx.begin(), idx.begin() + num_sample);
      std::sort(active.begin(), active.end());
    }
    if (active.size() == static_cast<size_t>(Cl)) {  // everything sampled: no gather needed
      sampling = false;
      return;
    }
    // Gather the K rows of every active class.
    std::vector<int64_t> rows_idx;
    rows_idx.reserve(active.size() * static_cast<size_t>(K));
    for (int64_t c : active)
      for (int64_t q = 0; q < K; ++q) rows_idx.push_back(c * K + q);
    const int64_t Ra = static_cast<int64_t>(rows_idx.size());
    k->gather_rows(W.data_as<float>(), rows_idx, D, wsub.f(device, Ra * D));
  }

  // The per-row table for this forward.
  void build_rows(const std::vector<int32_t>& local, int64_t step_used) {
    rows.fn.assign(static_cast<size_t>(B), base_fn);
    rows.scale.assign(static_cast<size_t>(B), static_cast<float>(margin.scale));
    rows.target.assign(static_cast<size_t>(B), -1);
    for (int64_t i = 0; i < B; ++i) {
      if (local[i] < 0) continue;
      if (!sampling) {
        rows.target[i] = local[i];
      } else {
        auto it = std::lower_bound(active.begin(), active.end(), static_cast<int64_t>(local[i]));
        rows.target[i] = static_cast<int32_t>(it - active.begin());  // positives are always active
      }
    }
    margins.clear();
    switch (margin.kind) {
      case MarginKind::Ada: {
        std::vector<double> n(static_cast<size_t>(B));
        for (int64_t i = 0; i < B; ++i) n[i] = std::min(std::max(xnorm[i], 0.001), 100.0);
        if (training && B >= 2) {
          double mu = 0;
          for (double v : n) mu += v;
          mu /= static_cast<double>(B);
          double var = 0;
          for (double v : n) var += (v - mu) * (v - mu);
          const double sd = std::sqrt(var / static_cast<double>(B - 1));
          const double a = margin.ada_t_alpha;
          ema_mean = a * mu + (1 - a) * ema_mean;
          ema_std = a * sd + (1 - a) * ema_std;
        }
        const double m = margin.m2, eps = margin.ada_eps;
        for (int64_t i = 0; i < B; ++i) {
          double sh = margin.ada_h * (n[i] - ema_mean) / (ema_std + eps);
          sh = std::min(1.0, std::max(-1.0, sh));
          rows.fn[i] = margin::make_margin_fn<double>(margin::kAda, 1.0, -m * sh, m * (1.0 + sh), false, false, false, eps);
        }
        break;
      }
      case MarginKind::Elastic: {
        margins.assign(static_cast<size_t>(B), margin.m2);
        if (training) {
          const uint64_t key = margin::rng_key(options.seed, margin::kStreamElastic, static_cast<uint64_t>(step_used));
          for (int64_t i = 0; i < B; ++i) margins[i] = margin.m2 + margin.elastic_std * margin::rng_normal(key, i);
          if (margin.elastic_plus) {
            // The intended pairing (SPEC §5): the largest target cosine gets the smallest margin.
            std::vector<double> ct(static_cast<size_t>(B));
            k->target_cosines(xhat.f(device, B * D), active_w(), winv.f(device, 1), rows.target, D, K, ct.data());
            std::vector<int64_t> order(static_cast<size_t>(B));
            std::iota(order.begin(), order.end(), int64_t(0));
            std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return ct[a] > ct[b]; });
            std::vector<double> sorted = margins;
            std::sort(sorted.begin(), sorted.end());
            for (int64_t r = 0; r < B; ++r) margins[order[r]] = sorted[r];
          }
        }
        for (int64_t i = 0; i < B; ++i)
          rows.fn[i] = margin.elastic_cos
                           ? margin::make_margin_fn<double>(margin::kCos, 1.0, 0.0, margins[i], false, false, false, kCosClampEps)
                           : margin::make_margin_fn<double>(margin::kArc, 1.0, margins[i], 0.0, false, false, false, kCosClampEps);
        break;
      }
      case MarginKind::Sphere: {
        const double lambda = sphere_lambda(margin, training ? step_used + 1 : step);
        for (int64_t i = 0; i < B; ++i) {
          rows.fn[i].lambda = lambda;
          rows.scale[i] = static_cast<float>(xnorm[i]);
        }
        break;
      }
      case MarginKind::Softmax:
        for (int64_t i = 0; i < B; ++i) rows.scale[i] = 1.0f;
        break;
      default:
        break;
    }
  }

  int64_t choose_chunk(int64_t classes) const {
    const size_t per_class = static_cast<size_t>(B) * (K > 1 ? 4 + 4 * static_cast<size_t>(K) + 1 : 4);
    if (per_class * static_cast<size_t>(classes) <= options.max_chunk_bytes) return classes;
    return std::max<int64_t>(1, static_cast<int64_t>(options.max_chunk_bytes / per_class));
  }

  // Cosines of active classes [j0, j0 + n) into the chunk buffer (raw dots when K = 1; winv is applied by
  // the element pass). Returns the wv the element pass must apply (null when already applied).
  const float* chunk_cosines(int64_t j0, int64_t n, float* c) {
    const float* w = active_w() + j0 * K * D;
    const float* wi = winv.f(device, 1) + j0 * K;
    const float* xh = xhat.f(device, B * D);
    if (K == 1) {
      k->gemm(false, true, B, n, D, 1.0f, xh, D, w, D, 0.0f, c, n);
      return column_scale(j0);
    }
    float* r = raw.f(device, B * chunk * K);
    k->gemm(false, true, B, n * K, D, 1.0f, xh, D, w, D, 0.0f, r, n * K);
    k->subcenter_max(r, wi, B, n, K, c, amax.u8(device, B * chunk));
    return nullptr;
  }

  ForwardStats run_forward(const Tensor& x, const Tensor& labels_t) {
    have_forward = false;
    check_tensor(x, "x", DType::F32, device);
    FC_CHECK(x.rank() == 2, ShapeMismatch, "Expected a 2-D [batch, ", D, "] tensor for x but received ", x.describe());
    FC_CHECK(x.size(1) == D, ShapeMismatch, "Expected x with ", D, " columns (the embedding size) but received ",
             x.describe());
    FC_CHECK(x.size(0) >= 1, InvalidArgument, "Expected a batch of at least 1 row for x but received ", x.describe());
    B = x.size(0);
    labels = host_labels(labels_t, B, C);
    embed(x, B, xhat.f(device, B * D), xinv.f(device, B), xsmall.u8(device, B), xnorm);

    const int64_t step_used = step;
    std::vector<int32_t> local(static_cast<size_t>(B));
    for (int64_t i = 0; i < B; ++i) {
      const int64_t l = labels[i] - options.class_start;
      local[i] = l >= 0 && l < Cl ? static_cast<int32_t>(l) : -1;
    }
    choose_active(local, step_used);
    Ca = static_cast<int64_t>(active.size());
    const int64_t Ra = Ca * K;
    weight_norms(active_w(), Ra, winv.f(device, Ra), wsmall.u8(device, Ra), sampling ? &active : nullptr);
    build_rows(local, step_used);
    if (training) ++step;  // after validation: a rejected batch does not advance the schedules

    chunk = choose_chunk(Ca);
    last_chunk_bytes = static_cast<size_t>(B) * static_cast<size_t>(chunk) * (K > 1 ? 5 + 4 * K : 4);
    float* c = cb.f(device, B * chunk);
    colsum.f64(device, chunk * K);
    ChunkRowStats st;
    st.max.resize(static_cast<size_t>(B));
    st.sum.resize(static_cast<size_t>(B));
    tcos.assign(static_cast<size_t>(B), 0.0);
    tdpsi.assign(static_cast<size_t>(B), 0.0);
    tz.assign(static_cast<size_t>(B), std::numeric_limits<float>::quiet_NaN());
    st.target_cos = tcos;
    st.target_dpsi = tdpsi;
    st.target_z = tz;
    run_max.assign(static_cast<size_t>(B), -std::numeric_limits<float>::infinity());
    run_sum.assign(static_cast<size_t>(B), 0.0);
    const float* b = margin.kind == MarginKind::Softmax ? bias.data_as<float>() : nullptr;
    for (int64_t j0 = 0; j0 < Ca; j0 += chunk) {
      const int64_t n = std::min(chunk, Ca - j0);
      const float* wv = chunk_cosines(j0, n, c);
      k->forward_chunk(c, wv, b ? b + j0 : nullptr, B, n, j0, rows, cfg, st);
      for (int64_t i = 0; i < B; ++i) {  // online log-sum-exp merge, chunk order
        const double m = std::max<double>(run_max[i], st.max[i]);
        run_sum[i] = (j0 == 0 ? 0.0 : run_sum[i] * std::exp(static_cast<double>(run_max[i]) - m)) +
                     st.sum[i] * std::exp(static_cast<double>(st.max[i]) - m);
        run_max[i] = static_cast<float>(m);
      }
    }
    tcos = st.target_cos;
    tdpsi = st.target_dpsi;
    tz = st.target_z;
    has_target.assign(static_cast<size_t>(B), 0);
    for (int64_t i = 0; i < B; ++i) has_target[i] = rows.target[i] >= 0;

    ForwardStats out;
    out.row_max = run_max;
    out.row_sum = run_sum;
    out.target_logit = tz;
    if (sharded) {
      out.loss = std::numeric_limits<double>::quiet_NaN();
    } else {
      double loss = 0;
      for (int64_t i = 0; i < B; ++i) loss += static_cast<double>(run_max[i]) + std::log(run_sum[i]) - tz[i];
      out.loss = loss / static_cast<double>(B);
    }
    have_forward = training;
    return out;
  }

  // ---- backward

  void run_backward(bool accumulate, const float* gmax, const double* gsum, double loss_scale) {
    FC_CHECK(have_forward, InvalidArgument,
             training ? "backward() needs a forward() since the last backward()"
                      : "backward() is not available in eval mode: call train() before the forward");
    FC_CHECK(!sharded || (gmax && gsum), InvalidArgument,
             "a sharded head's backward needs the global rowMax and rowSumExp of every row (combine the shards' "
             "forward statistics)");
    FC_CHECK(std::isfinite(loss_scale) && loss_scale > 0, InvalidArgument,
             "Expected a finite loss_scale > 0 but received ", loss_scale);
    have_forward = false;
    const float* M = gmax ? gmax : run_max.data();
    const double* S = gsum ? gsum : run_sum.data();
    for (int64_t i = 0; i < B; ++i)
      FC_CHECK(std::isfinite(M[i]) && std::isfinite(S[i]) && S[i] > 0, InvalidArgument,
               "Expected a finite rowMax and a positive rowSumExp at row ", i, " but received ", M[i], " and ", S[i]);
    std::vector<float> inv_sum(static_cast<size_t>(B)), gscale(static_cast<size_t>(B));
    std::vector<double> target_g(static_cast<size_t>(B), 0.0), pt(static_cast<size_t>(B), 0.0);
    for (int64_t i = 0; i < B; ++i) {
      inv_sum[i] = static_cast<float>(1.0 / S[i]);
      // d(loss_scale · mean loss): every gradient below is linear in these two factors.
      gscale[i] = static_cast<float>(loss_scale * static_cast<double>(rows.scale[i]) / static_cast<double>(B));
      if (!has_target[i]) continue;
      const double lse = static_cast<double>(M[i]) + std::log(S[i]);
      pt[i] = std::exp(static_cast<double>(tz[i]) - lse);
      target_g[i] = loss_scale * static_cast<double>(rows.scale[i]) / static_cast<double>(B) * (pt[i] - 1.0) * tdpsi[i];
    }
    const bool normalized = margin.kind != MarginKind::Softmax;
    const int64_t Ra = Ca * K;
    float* c = cb.f(device, B * chunk);
    float* dxh = dxhat.f(device, B * D);
    const float* xh = xhat.f(device, B * D);
    const float* wa = active_w();
    float* dwa = sampling ? dwsub.f(device, Ra * D) : dW.data_as<float>();
    const float beta_w = accumulate && !sampling ? 1.0f : 0.0f;
    double* cs = colsum.f64(device, chunk * K);
    std::vector<double> r(static_cast<size_t>(B), 0.0);
    float* db = margin.kind == MarginKind::Softmax ? dbias.data_as<float>() : nullptr;
    const std::vector<float> ones(chunk < Ca ? static_cast<size_t>(B) : 0, 1.0f);  // row scales of a recompute
    for (int64_t j0 = 0; j0 < Ca; j0 += chunk) {
      const int64_t n = std::min(chunk, Ca - j0);
      const float* wv = K == 1 ? column_scale(j0) : nullptr;
      if (chunk < Ca) {  // recompute this chunk's cosines (a single chunk is kept from the forward)
        const float* apply = chunk_cosines(j0, n, c);
        if (apply || db) k->scale_columns(c, apply, db ? bias.data_as<float>() + j0 : nullptr, ones.data(), B, n);
      }
      k->backward_chunk(c, wv, B, n, j0, rows, cfg, M, inv_sum.data(), gscale.data(), target_g.data(), cs, r.data(),
                        db ? db + j0 : nullptr, !accumulate);
      float* g = c;  // G·diag(winv) [B, n] (K = 1)
      int64_t nr = n;
      if (K > 1) {
        g = raw.f(device, B * chunk * K);
        k->subcenter_expand(c, amax.u8(device, B * chunk), winv.f(device, 1) + j0 * K, B, n, K, g, cs);
        nr = n * K;
      }
      k->gemm(false, false, B, D, nr, 1.0f, g, nr, wa + j0 * K * D, D, j0 == 0 ? 0.0f : 1.0f, dxh, D);
      k->weight_grad(g, xh, B, nr, D, beta_w, wa + j0 * K * D, winv.f(device, 1) + j0 * K,
                     wsmall.u8(device, 1) + j0 * K, cs, normalized, dwa + j0 * K * D);
    }
    if (sampling) {
      std::vector<int64_t> rows_idx;
      rows_idx.reserve(static_cast<size_t>(Ra));
      for (int64_t cl : active)
        for (int64_t q = 0; q < K; ++q) rows_idx.push_back(cl * K + q);
      if (!accumulate) k->fill_zero(dW.data(), dW.nbytes());
      k->scatter_rows(dwa, rows_idx, D, dW.data_as<float>(), accumulate);
    }
    // dX = xinv·dX̂ + a·x̂ with a_i = −xinv_i·r_i (the projection through the normalization), plus for
    // SphereFace the ‖x‖ term q_i = Σ_j δ_ij·z_ij/‖x_i‖ (SPEC §2.3).
    std::vector<double> a(static_cast<size_t>(B), 0.0);
    if (normalized) {
      std::vector<uint8_t> small(static_cast<size_t>(B));
      for (int64_t i = 0; i < B; ++i) small[i] = xnorm[i] < kNormEps;
      for (int64_t i = 0; i < B; ++i) {
        const double xi = 1.0 / std::max(xnorm[i], kNormEps);
        if (!small[i]) a[i] = -xi * r[i];
        if (margin.kind == MarginKind::Sphere && rows.scale[i] > 0) {
          const double s = rows.scale[i];
          double q = r[i];
          if (has_target[i]) {
            const double gt = target_g[i];
            q -= gt * tcos[i];
            q /= s;
            q += loss_scale * (pt[i] - 1.0) / static_cast<double>(B) * static_cast<double>(tz[i]) / s;
          } else {
            q /= s;
          }
          a[i] += q;
        }
      }
    }
    if (!dX.defined() || dX.size(0) != B) dX = Tensor::empty({B, D}, DType::F32, device);
    k->dx_final(dxh, xh, normalized ? xinv.f(device, B) : nullptr, a.data(), B, D, dX.data_as<float>());
  }
};

MarginHead::MarginHead(int64_t embedding_size, int64_t num_classes, const MarginParams& margin,
                       const HeadOptions& options, const Device& device)
    : impl_(new Impl) {
  FC_CHECK(embedding_size >= 1, InvalidArgument, "Expected embedding_size >= 1 but received ", embedding_size);
  FC_CHECK(num_classes >= 2, InvalidArgument, "Expected num_classes >= 2 but received ", num_classes);
  const int kind = static_cast<int>(margin.kind);
  FC_CHECK(kind >= 0 && kind <= 7, InvalidArgument, "Expected a margin kind in [0, 7] but received ", kind);
  FC_CHECK(std::isfinite(margin.scale) && margin.scale > 0, InvalidArgument, "Expected scale > 0 but received ",
           margin.scale);
  FC_CHECK(std::isfinite(margin.m1) && std::isfinite(margin.m2) && std::isfinite(margin.m3), InvalidArgument,
           "Expected finite margins m1, m2, m3 but received ", margin.m1, ", ", margin.m2, ", ", margin.m3);
  FC_CHECK(options.max_threads >= 0, InvalidArgument, "Expected max_threads >= 0 but received ", options.max_threads);
  FC_CHECK(options.max_chunk_bytes >= 4, InvalidArgument, "Expected max_chunk_bytes >= 4 but received ",
           options.max_chunk_bytes);
  const int prec = static_cast<int>(options.precision);
  FC_CHECK(prec >= 0 && prec <= 3, InvalidArgument,
           "Expected precision F32 (0), BF16 (1), TF32 (2) or F16 (3) but received ",
           prec);
  FC_CHECK(options.sub_centers >= 1 && options.sub_centers <= 255, InvalidArgument,
           "Expected sub_centers in [1, 255] but received ", options.sub_centers);
  FC_CHECK(options.sample_rate >= 0 && options.sample_rate <= 1, InvalidArgument,
           "Expected sample_rate in [0, 1] but received ", options.sample_rate);
  const int64_t local = options.num_local == 0 ? num_classes : options.num_local;
  FC_CHECK(options.class_start >= 0 && local >= 1 && options.class_start + local <= num_classes, OutOfRange,
           "Expected a shard [class_start, class_start + num_local) inside [0, ", num_classes, ") but received [",
           options.class_start, ", ", options.class_start + local, ")");
  if (!normalized_kind(margin.kind))
    FC_CHECK(options.sub_centers == 1 && options.sample_rate == 1.0 && local == num_classes, InvalidArgument,
             margin.kind == MarginKind::Softmax ? "SoftmaxHead" : "SphereFaceHead",
             " supports neither sub-centers, sampling nor shards (normalized heads only)");
  if (margin.kind == MarginKind::Sphere) {
    FC_CHECK(margin.m1 >= 1 && margin.m1 <= 16 && margin.m1 == std::floor(margin.m1), InvalidArgument,
             "Expected an integer SphereFace margin in [1, 16] but received ", margin.m1);
    FC_CHECK(margin.sphere_base > 0 && margin.sphere_gamma >= 0 && margin.sphere_min >= 0, InvalidArgument,
             "Expected lambda base > 0, gamma >= 0, min >= 0");
  }
  if (margin.kind == MarginKind::Ada)
    FC_CHECK(margin.ada_eps > 0 && margin.ada_eps < 0.5 && margin.ada_t_alpha >= 0 && margin.ada_t_alpha <= 1,
             InvalidArgument, "Expected AdaFace eps in (0, 0.5) and tAlpha in [0, 1] but received ", margin.ada_eps,
             " and ", margin.ada_t_alpha);
  if (margin.kind == MarginKind::Elastic)
    FC_CHECK(!(margin.elastic_plus && local != num_classes), NotImplemented,
             "ElasticFace plus in sharded mode (the pairing needs every row's target cosine on one shard)");
  Impl& m = *impl_;
  m.D = embedding_size;
  m.C = num_classes;
  m.Cl = local;
  m.K = options.sub_centers;
  m.R = m.Cl * m.K;
  m.sharded = local != num_classes;
  m.margin = margin;
  m.options = options;
  m.options.num_local = local;
  m.device = device;
  m.k = make_kernels(device, options.precision, options.max_threads);
  const int fk = margin.kind == MarginKind::Sphere ? margin::kSphere
                 : margin.kind == MarginKind::Softmax || margin.kind == MarginKind::Elastic || margin.kind == MarginKind::Ada
                     ? margin::kNorm
                     : kind;
  m.base_fn = margin::make_margin_fn<double>(fk, margin.m1, margin.m2, margin.m3, margin.easy_margin, margin.fallback,
                                             margin.straight_through, kCosClampEps);
  if (margin.kind == MarginKind::Ada) {
    m.cfg.clamp_all = true;
    m.cfg.lo = static_cast<float>(-1.0 + margin.ada_eps);
    m.cfg.hi = static_cast<float>(1.0 - margin.ada_eps);
  }
  m.cfg.has_bias = margin.kind == MarginKind::Softmax;
  m.W = Tensor::empty({m.R, m.D}, DType::F32, device);
  m.k->fill_zero(m.W.data(), m.W.nbytes());
  m.dW = Tensor::empty({m.R, m.D}, DType::F32, device);
  m.k->fill_zero(m.dW.data(), m.dW.nbytes());
  if (margin.kind == MarginKind::Softmax) {
    m.bias = Tensor::empty({m.Cl}, DType::F32, device);
    m.k->fill_zero(m.bias.data(), m.bias.nbytes());
    m.dbias = Tensor::empty({m.Cl}, DType::F32, device);
    m.k->fill_zero(m.dbias.data(), m.dbias.nbytes());
  }
}

MarginHead::~MarginHead() = default;

int64_t MarginHead::embedding_size() const { return impl_->D; }
int64_t MarginHead::num_classes() const { return impl_->C; }
int64_t MarginHead::num_local_classes() const { return impl_->Cl; }
int64_t MarginHead::weight_rows() const { return impl_->R; }
const MarginParams& MarginHead::margin() const { return impl_->margin; }
const HeadOptions& MarginHead::options() const { return impl_->options; }
const Device& MarginHead::device() const { return impl_->device; }
Tensor& MarginHead::weight() { return impl_->W; }
Tensor& MarginHead::bias() { return impl_->bias; }
const Tensor& MarginHead::grad_weight() const { return impl_->dW; }
const Tensor& MarginHead::grad_bias() const { return impl_->dbias; }
const Tensor& MarginHead::grad_embeddings() const { return impl_->dX; }
size_t MarginHead::last_chunk_bytes() const { return impl_->last_chunk_bytes; }
const std::vector<int64_t>& MarginHead::sampled_classes() const { return impl_->active; }
const std::vector<double>& MarginHead::last_margins() const { return impl_->margins; }
bool MarginHead::training() const { return impl_->training; }

void MarginHead::set_training(bool training) {
  impl_->training = training;
  impl_->have_forward = false;
}

HeadState MarginHead::state() const {
  HeadState s;
  s.step = impl_->step;
  s.batch_mean = impl_->ema_mean;
  s.batch_std = impl_->ema_std;
  s.lambda = impl_->margin.kind == MarginKind::Sphere ? sphere_lambda(impl_->margin, impl_->step) : 0.0;
  return s;
}

void MarginHead::set_state(const HeadState& s) {
  FC_CHECK(s.step >= 0, InvalidArgument, "Expected step >= 0 but received ", s.step);
  FC_CHECK(std::isfinite(s.batch_mean) && std::isfinite(s.batch_std), InvalidArgument,
           "Expected finite batchMean and batchStd but received ", s.batch_mean, " and ", s.batch_std);
  impl_->step = s.step;
  impl_->ema_mean = s.batch_mean;
  impl_->ema_std = s.batch_std;
  impl_->have_forward = false;
}

double MarginHead::forward(const Tensor& x, const Tensor& labels) { return impl_->run_forward(x, labels).loss; }

ForwardStats MarginHead::forward_stats(const Tensor& x, const Tensor& labels) { return impl_->run_forward(x, labels); }

void MarginHead::backward(bool accumulate, const float* global_row_max, const double* global_row_sum,
                          double loss_scale) {
  impl_->run_backward(accumulate, global_row_max, global_row_sum, loss_scale);
}

Tensor MarginHead::logits(const Tensor& x) {
  Impl& m = *impl_;
  check_tensor(x, "x", DType::F32, m.device);
  FC_CHECK(x.rank() == 2, ShapeMismatch, "Expected a 2-D [batch, ", m.D, "] tensor for x but received ", x.describe());
  FC_CHECK(x.size(1) == m.D, ShapeMismatch, "Expected x with ", m.D, " columns (the embedding size) but received ",
           x.describe());
  FC_CHECK(x.size(0) >= 1, InvalidArgument, "Expected a batch of at least 1 row for x but received ", x.describe());
  const int64_t B = x.size(0);
  // Separate buffers: the forward state (x̂, norms, winv) stays valid for a pending backward.
  DevBuf xh, xi, xs, wi, ws, rawb, am;
  std::vector<double> norms;
  m.embed(x, B, xh.f(m.device, B * m.D), xi.f(m.device, B), xs.u8(m.device, B), norms);
  m.weight_norms(m.W.data_as<float>(), m.R, wi.f(m.device, m.R), ws.u8(m.device, m.R), nullptr);
  Tensor out = Tensor::empty({B, m.Cl}, DType::F32, m.device);
  float* o = out.data_as<float>();
  std::vector<float> scale(static_cast<size_t>(B), static_cast<float>(m.margin.scale));
  if (m.margin.kind == MarginKind::Sphere)
    for (int64_t i = 0; i < B; ++i) scale[i] = static_cast<float>(norms[i]);
  if (m.margin.kind == MarginKind::Softmax) std::fill(scale.begin(), scale.end(), 1.0f);
  const float* b = m.margin.kind == MarginKind::Softmax ? m.bias.data_as<float>() : nullptr;
  if (m.K == 1) {
    m.k->gemm(false, true, B, m.Cl, m.D, 1.0f, xh.f(m.device, 1), m.D, m.W.data_as<float>(), m.D, 0.0f, o, m.Cl);
    m.k->scale_columns(o, b ? nullptr : wi.f(m.device, 1), b, scale.data(), B, m.Cl);  // Softmax: no winv
  } else {
    float* r = rawb.f(m.device, B * m.R);
    m.k->gemm(false, true, B, m.R, m.D, 1.0f, xh.f(m.device, 1), m.D, m.W.data_as<float>(), m.D, 0.0f, r, m.R);
    m.k->subcenter_max(r, wi.f(m.device, 1), B, m.Cl, m.K, o, am.u8(m.device, B * m.Cl));
    m.k->scale_columns(o, nullptr, nullptr, scale.data(), B, m.Cl);
  }
  return out;
}

double margin_psi(const MarginParams& p, double c, double* dpsi) {
  const margin::MarginFn<double> f = margin::make_margin_fn<double>(static_cast<int>(p.kind), p.m1, p.m2, p.m3,
                                                                    p.easy_margin, p.fallback, p.straight_through,
                                                                    kCosClampEps);
  return margin::margin_psi_eval(f, c, dpsi);
}

// ---- CenterLoss

struct CenterLoss::Impl {
  int64_t D = 0, C = 0;
  double lambda = 0, alpha = 0;
  Device device;
  std::unique_ptr<Kernels> k;
  Tensor centers, dX;
  DevBuf diff;
  std::vector<int32_t> labels;
  int64_t B = 0;
  bool have_forward = false;
};

CenterLoss::CenterLoss(int64_t embedding_size, int64_t num_classes, double lambda, double alpha, const Device& device)
    : impl_(new Impl) {
  FC_CHECK(embedding_size >= 1, InvalidArgument, "Expected embedding_size >= 1 but received ", embedding_size);
  FC_CHECK(num_classes >= 1, InvalidArgument, "Expected num_classes >= 1 but received ", num_classes);
  FC_CHECK(std::isfinite(lambda) && lambda >= 0, InvalidArgument, "Expected lambda >= 0 but received ", lambda);
  FC_CHECK(std::isfinite(alpha) && alpha >= 0 && alpha <= 1, InvalidArgument, "Expected alpha in [0, 1] but received ",
           alpha);
  Impl& m = *impl_;
  m.D = embedding_size;
  m.C = num_classes;
  m.lambda = lambda;
  m.alpha = alpha;
  m.device = device;
  m.k = make_kernels(device, GemmPrecision::F32, 0);
  m.centers = Tensor::empty({m.C, m.D}, DType::F32, device);
  m.k->fill_zero(m.centers.data(), m.centers.nbytes());
}

CenterLoss::~CenterLoss() = default;
Tensor& CenterLoss::centers() { return impl_->centers; }
const Tensor& CenterLoss::grad_embeddings() const { return impl_->dX; }

double CenterLoss::forward(const Tensor& x, const Tensor& labels) {
  Impl& m = *impl_;
  m.have_forward = false;
  check_tensor(x, "x", DType::F32, m.device);
  FC_CHECK(x.rank() == 2 && x.size(1) == m.D && x.size(0) >= 1, ShapeMismatch, "Expected x of shape [B >= 1, ", m.D,
           "] but received ", x.describe());
  m.B = x.size(0);
  m.labels = host_labels(labels, m.B, m.C);
  std::vector<double> norms(static_cast<size_t>(m.B));
  DevBuf inv, small;
  m.k->row_norms(x.data_as<float>(), m.B, m.D, nullptr, inv.f(m.device, m.B), small.u8(m.device, m.B), norms.data());
  for (int64_t i = 0; i < m.B; ++i)
    FC_CHECK(std::isfinite(norms[i]), InvalidArgument, "Expected finite values in x but found NaN or Inf at row ", i);
  const double ss = m.k->center_diff(x.data_as<float>(), m.labels, m.centers.data_as<float>(), m.D,
                                     m.diff.f(m.device, m.B * m.D));
  FC_CHECK(std::isfinite(ss), InvalidArgument, "Expected finite centers but the loss is not finite");
  m.have_forward = true;
  return m.lambda / (2.0 * static_cast<double>(m.B)) * ss;
}

void CenterLoss::backward(bool update_centers) {
  Impl& m = *impl_;
  FC_CHECK(m.have_forward, InvalidArgument, "backward() needs a forward() since the last backward()");
  m.have_forward = false;
  if (!m.dX.defined() || m.dX.size(0) != m.B) m.dX = Tensor::empty({m.B, m.D}, DType::F32, m.device);
  float* diff = m.diff.f(m.device, m.B * m.D);
  m.k->scale_copy(diff, static_cast<float>(m.lambda / static_cast<double>(m.B)), m.B * m.D, m.dX.data_as<float>());
  if (!update_centers || m.alpha == 0) return;
  // c_j ← c_j − α·Σ_{i: y_i = j}(c_j − x_i)/(1 + n_j) = c_j + α/(1 + n_j)·Σ diff_i.
  std::vector<int32_t> classes(m.labels);
  std::sort(classes.begin(), classes.end());
  classes.erase(std::unique(classes.begin(), classes.end()), classes.end());
  std::vector<std::vector<int32_t>> rows_of(classes.size());
  for (int64_t i = 0; i < m.B; ++i) {
    const size_t q = static_cast<size_t>(std::lower_bound(classes.begin(), classes.end(), m.labels[i]) - classes.begin());
    rows_of[q].push_back(static_cast<int32_t>(i));
  }
  std::vector<double> coef(classes.size());
  for (size_t q = 0; q < classes.size(); ++q) coef[q] = m.alpha / (1.0 + static_cast<double>(rows_of[q].size()));
  m.k->center_update(diff, classes, rows_of, coef, m.D, m.centers.data_as<float>());
}

}  // namespace fc
