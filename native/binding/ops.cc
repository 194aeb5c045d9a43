// @file ops.cc
// @brief Compute ops exposed to JS. Each validates cheaply, queues its work and returns a Promise.
#include "addon.h"
#include "facecuda/cuda.h"
#include "facecuda/gemm.h"

namespace fcb {

namespace {

// gemm(a, b, c | null, transA, transB, alpha, beta, precision: 'fp32'|'tf32'|'bf16'|'fp16', threads)
//   → Promise<NativeTensor> holding alpha * op(a) op(b) + beta * c (c itself is not modified).
Napi::Value Gemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    TensorRef a = arg_tensor(info, 0, "a");
    TensorRef b = arg_tensor(info, 1, "b");
    bool has_c = !info[2].IsNull() && !info[2].IsUndefined();
    TensorRef c;
    if (has_c) c = arg_tensor(info, 2, "c");
    bool ta = arg_bool(info, 3, "transA");
    bool tb = arg_bool(info, 4, "transB");
    float alpha = static_cast<float>(arg_number(info, 5, "alpha"));
    float beta = static_cast<float>(arg_number(info, 6, "beta"));
    std::string prec = arg_string(info, 7, "precision");
    int threads = static_cast<int>(arg_number(info, 8, "threads"));

    FC_CHECK(a.shape.size() == 2 && b.shape.size() == 2, InvalidArgument, "Expected 2-D tensors for a and b but received ",
             fc::shape_str(a.shape), " and ", fc::shape_str(b.shape));
    FC_CHECK(a.dtype == fc::DType::F32 && b.dtype == fc::DType::F32, InvalidArgument,
             "Expected float32 tensors for a and b but received ", fc::dtype_name(a.dtype), " and ", fc::dtype_name(b.dtype));
    FC_CHECK(a.device == b.device, InvalidArgument, "Expected a and b on one device but received ", a.device.str(), " and ",
             b.device.str());
    int64_t M = ta ? a.shape[1] : a.shape[0];
    int64_t K = ta ? a.shape[0] : a.shape[1];
    int64_t Kb = tb ? b.shape[1] : b.shape[0];
    int64_t N = tb ? b.shape[0] : b.shape[1];
    FC_CHECK(K == Kb, ShapeMismatch, "inner dimensions differ: op(a) is [", M, ", ", K, "] and op(b) is [", Kb, ", ", N, "]");
    if (has_c) {
      FC_CHECK(c.shape.size() == 2 && c.shape[0] == M && c.shape[1] == N, ShapeMismatch, "Expected c of shape [", M, ", ",
               N, "] but received ", fc::shape_str(c.shape));
      FC_CHECK(c.dtype == fc::DType::F32 && c.device == a.device, InvalidArgument, "Expected c as a float32 tensor on ",
               a.device.str());
    }
    FC_CHECK(prec == "fp32" || prec == "tf32" || prec == "bf16" || prec == "fp16", InvalidArgument,
             "Expected 'fp32', 'tf32', 'bf16' or 'fp16' for precision but received '", prec, "'");

    auto out = std::make_shared<Slot>();
    auto sa = a.slot, sb = b.slot, sc = c.slot;
    fc::Device dev = a.device;
    auto job = std::make_unique<Job>(env);
    job->work = [=]() {
      const fc::Tensor& A = sa->get();
      const fc::Tensor& B = sb->get();
      fc::Tensor C;
      if (has_c && beta != 0.0f) C = sc->get().to(dev);  // a private copy: c stays unchanged
      else C = fc::Tensor::empty({M, N}, fc::DType::F32, dev);
      float be = (has_c && beta != 0.0f) ? beta : 0.0f;
      FC_CHECK(A.is_contiguous() && B.is_contiguous(), InvalidArgument, "gemm needs contiguous a and b");
      int64_t lda = A.size(1), ldb = B.size(1);
      if (dev.is_cpu()) {
        fc::GemmOptions o;
        o.precision = prec == "bf16"   ? fc::GemmPrecision::BF16
                      : prec == "fp16" ? fc::GemmPrecision::F16
                                       : fc::GemmPrecision::F32;  // tf32 = fp32 on CPUs
        o.max_threads = threads;
        fc::sgemm(ta, tb, M, N, K, alpha, A.data_as<float>(), lda, B.data_as<float>(), ldb, be, C.data_as<float>(), N, o);
      } else {
        fc::cuda::MathMode mode = prec == "bf16"   ? fc::cuda::MathMode::BF16
                                  : prec == "fp16" ? fc::cuda::MathMode::F16
                                  : prec == "tf32" ? fc::cuda::MathMode::TF32
                                                   : fc::cuda::MathMode::F32;
        fc::cuda::sgemm(dev.index, ta, tb, M, N, K, alpha, A.data_as<float>(), lda, B.data_as<float>(), ldb, be,
                        C.data_as<float>(), N, mode);
        fc::cuda::synchronize(dev.index);
      }
      out->tensor = C;
    };
    std::vector<int64_t> shape{M, N};
    job->build = [out, shape, dev](Napi::Env env) -> Napi::Value { return wrap_tensor(env, out, shape, fc::DType::F32, dev); };
    return schedule(env, dev, std::move(job));
  } catch (...) {
    rethrow_as_js(env);
  }
}

}  // namespace

void register_ops(Napi::Env env, Napi::Object exports) {
  exports.Set("gemm", Napi::Function::New(env, Gemm, "gemm"));
}

}  // namespace fcb
