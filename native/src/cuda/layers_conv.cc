// @file layers_conv.cc
// @brief Conv2d on CUDA through cuDNN 9's legacy convolution API (common/layers_cuda.h): forward,
// backward-data and backward-filter, NCHW float32, any stride, padding and groups (dilation 1).
//
// - Layout: NCHW tensors and KCRS filters, as the engine stores them (no transposes). NHWC is the
//   measured-fastest layout for tensor-core convolutions on Hopper; it is left for when a GPU is
//   available to measure the transposes against the gain.
// - Algorithm: chosen once per (device, direction, shapes, stride, padding, groups, precision,
//   workspace limit) by cudnnFind*AlgorithmEx (a benchmark on the call's own buffers; the output is
//   a scratch tensor whenever the call accumulates, so the search never touches the caller's sums),
//   then cached in a mutex-guarded map for the life of the process. The search offers the largest
//   workspace any algorithm of the direction asks for within the limit (ExecOptions::
//   max_workspace_bytes, 0 = 256 MiB), or none when that allocation fails; from its results (fastest
//   first) the first deterministic algorithm that succeeded is taken, else the first that succeeded,
//   so an algorithm whose workspace does not fit is never chosen. The workspace of each call comes
//   from the device's caching allocator.
// - Precision (ExecOptions::precision): F32 runs with CUDNN_FMA_MATH on the descriptor, which keeps
//   cuDNN off tensor-core TF32 whatever NVIDIA_TF32_OVERRIDE says (CUDNN_DEFAULT_MATH would allow
//   TF32 for fp32 data on Ampere and newer); results reporting tensor-op math are skipped. TF32 allows
//   tensor-op math (CUDNN_TENSOR_OP_MATH; never _ALLOW_CONVERSION, which may down-convert to fp16) and
//   runs with the math type the search reports. BF16 casts the two inputs to bf16 scratch (round to
//   nearest even), runs the all-bf16 configuration with fp32 compute (cuDNN's PSEUDO_BFLOAT16 config:
//   the legacy API has no bf16-in/fp32-out convolution) into a bf16 scratch output, and widens that
//   into the fp32 output (added for accumulate and backward-filter). F16 does the same with fp16
//   copies (PSEUDO_HALF config: fp16 data, fp32 compute); values beyond ±65504 become ±Inf, which is
//   what dynamic loss scaling (lib/train/scaler.ts) detects and backs off from.
// - Accumulation: backward-data with accumulate and backward-filter use beta = 1 (F32/TF32), the
//   forward and plain backward-data beta = 0. The forward bias is a separate kernel after the
//   convolution.
// - Errors: every cuDNN status becomes CUDNN_ERROR through dnn::throw_status with the call and the
//   shapes; allocations throw OUT_OF_MEMORY; dimensions beyond cuDNN's int range are INVALID_ARGUMENT.
// Descriptors are created per call (microseconds, host only) and destroyed by RAII.
#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>

#include "common/layers_cuda.h"
#include "cuda/cudnn_api.h"
#include "cuda/dynlib.h"
#include "cuda/internal.h"
#include "cuda/layers_internal.h"
#include "facecuda/cuda.h"
#include "facecuda/error.h"
#include "facecuda/layers.h"
#include "facecuda/tensor.h"

namespace fc {
namespace cuda {
namespace dnn {

namespace {

template <typename Fn>
void load(void* lib, const char* name, Fn* out, std::string* missing) {
  std::string err;
  void* p = dyn::find_symbol(lib, name, &err);
  if (!p && missing->empty()) *missing = str(name, " (", err, ")");
  *out = reinterpret_cast<Fn>(p);
}

}  // namespace

const ConvApi& conv_api() {
  const Api& a = api();  // CUDA_UNAVAILABLE when cuDNN is not usable
  static std::once_flag once;
  static ConvApi* c = nullptr;  // never destroyed
  static std::string missing;
  std::call_once(once, [&] {
    ConvApi* t = new ConvApi();
    load(a.lib, "cudnnCreateTensorDescriptor", &t->create_tensor, &missing);
    load(a.lib, "cudnnSetTensor4dDescriptor", &t->set_tensor_4d, &missing);
    load(a.lib, "cudnnDestroyTensorDescriptor", &t->destroy_tensor, &missing);
    load(a.lib, "cudnnCreateFilterDescriptor", &t->create_filter, &missing);
    load(a.lib, "cudnnSetFilter4dDescriptor", &t->set_filter_4d, &missing);
    load(a.lib, "cudnnDestroyFilterDescriptor", &t->destroy_filter, &missing);
    load(a.lib, "cudnnCreateConvolutionDescriptor", &t->create_conv, &missing);
    load(a.lib, "cudnnSetConvolution2dDescriptor", &t->set_conv_2d, &missing);
    load(a.lib, "cudnnSetConvolutionGroupCount", &t->set_group_count, &missing);
    load(a.lib, "cudnnSetConvolutionMathType", &t->set_math_type, &missing);
    load(a.lib, "cudnnDestroyConvolutionDescriptor", &t->destroy_conv, &missing);
    load(a.lib, "cudnnFindConvolutionForwardAlgorithmEx", &t->find_fwd, &missing);
    load(a.lib, "cudnnFindConvolutionBackwardDataAlgorithmEx", &t->find_bwd_data, &missing);
    load(a.lib, "cudnnFindConvolutionBackwardFilterAlgorithmEx", &t->find_bwd_filter, &missing);
    load(a.lib, "cudnnGetConvolutionForwardWorkspaceSize", &t->fwd_workspace, &missing);
    load(a.lib, "cudnnGetConvolutionBackwardDataWorkspaceSize", &t->bwd_data_workspace, &missing);
    load(a.lib, "cudnnGetConvolutionBackwardFilterWorkspaceSize", &t->bwd_filter_workspace, &missing);
    load(a.lib, "cudnnConvolutionForward", &t->conv_fwd, &missing);
    load(a.lib, "cudnnConvolutionBackwardData", &t->conv_bwd_data, &missing);
    load(a.lib, "cudnnConvolutionBackwardFilter", &t->conv_bwd_filter, &missing);
    c = t;
  });
  if (!missing.empty()) {
    fail(Code::CudaUnavailable, str("cuDNN's convolution API is not usable: the loaded libcudnn lacks ", missing));
  }
  return *c;
}

}  // namespace dnn
}  // namespace cuda

namespace nn {
namespace cuda_nn {

namespace {

namespace dnn = fc::cuda::dnn;

constexpr size_t kDefaultWorkspace = size_t(256) << 20;

enum class Dir : int { Forward = 0, BackwardData = 1, BackwardFilter = 2 };
// Algorithms per direction (cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t ..._COUNT).
constexpr int kAlgoCount[3] = {8, 6, 7};
const char* const kDirName[3] = {"forward", "backward-data", "backward-filter"};

// The convolution as cuDNN sees it; every field is part of the algorithm cache key.
struct ConvKey {
  int device, dir, precision;
  int n, c, h, w, k, cg, kh, kw, oh, ow, sh, sw, ph, pw, groups;
  size_t limit;
  bool operator==(const ConvKey& o) const {
    return device == o.device && dir == o.dir && precision == o.precision && n == o.n && c == o.c && h == o.h &&
           w == o.w && k == o.k && cg == o.cg && kh == o.kh && kw == o.kw && oh == o.oh && ow == o.ow && sh == o.sh &&
           sw == o.sw && ph == o.ph && pw == o.pw && groups == o.groups && limit == o.limit;
  }
  std::string str() const {
    return fc::str("cuda:", device, " ", kDirName[dir], " x [", n, ", ", c, ", ", h, ", ", w, "] w [", k, ", ", cg, ", ",
                   kh, ", ", kw, "] y [", n, ", ", k, ", ", oh, ", ", ow, "] stride ", sh, "x", sw, " pad ", ph, "x", pw,
                   " groups ", groups, " precision ", precision);
  }
};

struct ConvKeyHash {
  size_t operator()(const ConvKey& k) const {
    const int64_t f[] = {k.device, k.dir, k.precision, k.n,  k.c,  k.h,  k.w,  k.k,      k.cg, k.kh,
                         k.kw,     k.oh,  k.ow,        k.sh, k.sw, k.ph, k.pw, k.groups, static_cast<int64_t>(k.limit)};
    size_t h = 1469598103934665603ull;
    for (int64_t v : f) h = (h ^ std::hash<int64_t>()(v)) * 1099511628211ull;
    return h;
  }
};

struct Choice {
  int algo;
  dnn::MathType math;
  size_t workspace;
};

struct AlgoCache {
  std::mutex mu;
  std::unordered_map<ConvKey, Choice, ConvKeyHash> map;
};
AlgoCache& algo_cache() {
  static AlgoCache* c = new AlgoCache();  // never destroyed (read until exit)
  return *c;
}

int to_int(int64_t v, const char* what) {
  FC_CHECK(v >= 0 && v <= INT_MAX, InvalidArgument, "Expected ", what, " <= ", INT_MAX,
           " for a cuDNN convolution but received ", v);
  return static_cast<int>(v);
}

// x (N, C, H, W), w (K, C/G, KH, KW), y (N, K, OH, OW) shapes and parameters.
ConvKey make_key(int device, Dir dir, const Tensor& x_like, const Tensor& w_like, const Tensor& y_like,
                 const Conv2dParams& p, const ExecOptions& ex) {
  ConvKey k{};
  k.device = device;
  k.dir = static_cast<int>(dir);
  k.precision = static_cast<int>(ex.precision);
  k.n = to_int(x_like.size(0), "N");
  k.c = to_int(x_like.size(1), "Cin");
  k.h = to_int(x_like.size(2), "H");
  k.w = to_int(x_like.size(3), "W");
  k.k = to_int(w_like.size(0), "Cout");
  k.cg = to_int(w_like.size(1), "Cin/groups");
  k.kh = to_int(w_like.size(2), "KH");
  k.kw = to_int(w_like.size(3), "KW");
  k.oh = to_int(y_like.size(2), "OH");
  k.ow = to_int(y_like.size(3), "OW");
  k.sh = to_int(p.stride_h, "stride_h");
  k.sw = to_int(p.stride_w, "stride_w");
  k.ph = to_int(p.pad_h, "pad_h");
  k.pw = to_int(p.pad_w, "pad_w");
  k.groups = to_int(p.groups, "groups");
  // cuDNN's legacy tensors index with int: every tensor of the call below 2^31 elements.
  for (const Tensor* t : {&x_like, &w_like, &y_like}) to_int(t->numel(), "the elements of a convolution tensor");
  k.limit = ex.max_workspace_bytes ? ex.max_workspace_bytes : kDefaultWorkspace;
  return k;
}

void check(dnn::Status st, const char* call, const ConvKey& k) {
  if (st != dnn::kStatusSuccess) dnn::throw_status(st, call, k.str());
}

// The descriptors of one call (RAII).
class Descs {
 public:
  Descs(const ConvKey& k, dnn::DataType type, dnn::MathType math) : api_(dnn::conv_api()) {
    check(api_.create_tensor(&x_), "cudnnCreateTensorDescriptor", k);
    check(api_.create_tensor(&y_), "cudnnCreateTensorDescriptor", k);
    check(api_.create_filter(&w_), "cudnnCreateFilterDescriptor", k);
    check(api_.create_conv(&conv_), "cudnnCreateConvolutionDescriptor", k);
    check(api_.set_tensor_4d(x_, dnn::kTensorNCHW, type, k.n, k.c, k.h, k.w), "cudnnSetTensor4dDescriptor", k);
    check(api_.set_tensor_4d(y_, dnn::kTensorNCHW, type, k.n, k.k, k.oh, k.ow), "cudnnSetTensor4dDescriptor", k);
    check(api_.set_filter_4d(w_, type, dnn::kTensorNCHW, k.k, k.cg, k.kh, k.kw), "cudnnSetFilter4dDescriptor", k);
    check(api_.set_conv_2d(conv_, k.ph, k.pw, k.sh, k.sw, 1, 1, dnn::kCrossCorrelation, dnn::kDataFloat),
          "cudnnSetConvolution2dDescriptor", k);
    check(api_.set_group_count(conv_, k.groups), "cudnnSetConvolutionGroupCount", k);
    math_type(math, k);
  }
  ~Descs() {
    // Destroy statuses are ignored: nothing can be done about them, and a destructor must not throw.
    if (conv_) api_.destroy_conv(conv_);
    if (w_) api_.destroy_filter(w_);
    if (y_) api_.destroy_tensor(y_);
    if (x_) api_.destroy_tensor(x_);
  }
  Descs(const Descs&) = delete;
  Descs& operator=(const Descs&) = delete;
  void math_type(dnn::MathType m, const ConvKey& k) {
    check(api_.set_math_type(conv_, m), "cudnnSetConvolutionMathType", k);
  }
  dnn::TensorDesc x() const { return x_; }
  dnn::TensorDesc y() const { return y_; }
  dnn::FilterDesc w() const { return w_; }
  dnn::ConvDesc conv() const { return conv_; }
  const dnn::ConvApi& api() const { return api_; }

 private:
  const dnn::ConvApi& api_;
  dnn::TensorDesc x_ = nullptr, y_ = nullptr;
  dnn::FilterDesc w_ = nullptr;
  dnn::ConvDesc conv_ = nullptr;
};

// The math type the search runs with (see the file comment).
dnn::MathType search_math(GemmPrecision p) { return p == GemmPrecision::F32 ? dnn::kFmaMath : dnn::kTensorOpMath; }

// Device scratch of `bytes` bytes (none for 0).
Tensor device_bytes(int dev, size_t bytes) {
  return bytes ? Tensor::empty({static_cast<int64_t>(bytes)}, DType::U8, Device::cuda(dev)) : Tensor();
}
void* ptr(const Tensor& t) { return t.defined() ? t.data() : nullptr; }

// The operands of one call after the precision step: device pointers in the call's data type.
struct Operands {
  const void* in0;  // x (forward, filter) or w (data)
  const void* in1;  // w (forward) or dy (data, filter)
  void* out;        // y, dx or dw (or a bf16 scratch)
};

// Workspace size of algorithm `algo` of the direction, or SIZE_MAX when cuDNN refuses it.
size_t workspace_of(const Descs& d, dnn::Handle h, Dir dir, int algo) {
  size_t bytes = 0;
  dnn::Status st = dnn::kStatusSuccess;
  switch (dir) {
    case Dir::Forward: st = d.api().fwd_workspace(h, d.x(), d.w(), d.conv(), d.y(), algo, &bytes); break;
    case Dir::BackwardData: st = d.api().bwd_data_workspace(h, d.w(), d.y(), d.conv(), d.x(), algo, &bytes); break;
    case Dir::BackwardFilter:
      st = d.api().bwd_filter_workspace(h, d.x(), d.y(), d.conv(), d.w(), algo, &bytes);
      break;
  }
  return st == dnn::kStatusSuccess ? bytes : SIZE_MAX;
}

// Runs the direction's cudnnFind*AlgorithmEx on `o` (o.out may be overwritten).
int find(const Descs& d, dnn::Handle h, Dir dir, const Operands& o, void* ws, size_t ws_bytes, dnn::AlgoPerf* perf,
         const ConvKey& k) {
  int returned = 0;
  dnn::Status st = dnn::kStatusSuccess;
  const char* call = "";
  switch (dir) {
    case Dir::Forward:
      call = "cudnnFindConvolutionForwardAlgorithmEx";
      st = d.api().find_fwd(h, d.x(), o.in0, d.w(), o.in1, d.conv(), d.y(), o.out, dnn::kMaxAlgos, &returned, perf,
                            ws, ws_bytes);
      break;
    case Dir::BackwardData:
      call = "cudnnFindConvolutionBackwardDataAlgorithmEx";
      st = d.api().find_bwd_data(h, d.w(), o.in0, d.y(), o.in1, d.conv(), d.x(), o.out, dnn::kMaxAlgos, &returned,
                                 perf, ws, ws_bytes);
      break;
    case Dir::BackwardFilter:
      call = "cudnnFindConvolutionBackwardFilterAlgorithmEx";
      st = d.api().find_bwd_filter(h, d.x(), o.in0, d.y(), o.in1, d.conv(), d.w(), o.out, dnn::kMaxAlgos, &returned,
                                   perf, ws, ws_bytes);
      break;
  }
  check(st, call, k);
  return std::max(0, std::min(returned, dnn::kMaxAlgos));
}

// The cached choice for `k`, searching on first use (see the file comment). `o` are the call's
// operands with an output the search may overwrite.
Choice choose(const ConvKey& k, const Descs& d, dnn::Handle h, Dir dir, const Operands& o, GemmPrecision prec) {
  AlgoCache& cache = algo_cache();
  {
    std::lock_guard<std::mutex> lock(cache.mu);
    auto it = cache.map.find(k);
    if (it != cache.map.end()) return it->second;
  }
  // The largest workspace an algorithm asks for within the limit.
  size_t ws_bytes = 0;
  for (int a = 0; a < kAlgoCount[k.dir]; ++a) {
    const size_t b = workspace_of(d, h, dir, a);
    if (b != SIZE_MAX && b <= k.limit) ws_bytes = std::max(ws_bytes, b);
  }
  Tensor ws;
  try {
    ws = device_bytes(k.device, ws_bytes);
  } catch (const Error& e) {
    if (e.code() != Code::OutOfMemory) throw;
    ws_bytes = 0;  // search among the algorithms that need no workspace
  }
  dnn::AlgoPerf perf[dnn::kMaxAlgos] = {};
  const int n = find(d, h, dir, o, ptr(ws), ws_bytes, perf, k);
  int pick = -1;
  for (int pass = 0; pass < 2 && pick < 0; ++pass) {
    for (int i = 0; i < n && pick < 0; ++i) {
      const dnn::AlgoPerf& r = perf[i];
      if (r.status != dnn::kStatusSuccess || r.memory > ws_bytes) continue;
      const bool tensor_op = r.math_type == dnn::kTensorOpMath || r.math_type == dnn::kTensorOpMathAllowConversion;
      if (prec == GemmPrecision::F32 && tensor_op) continue;
      if (prec != GemmPrecision::F32 && r.math_type == dnn::kTensorOpMathAllowConversion) continue;
      if (pass == 0 && r.determinism != dnn::kDeterministic) continue;
      pick = i;
    }
  }
  FC_CHECK(pick >= 0, CudnnError, "cuDNN found no usable ", kDirName[k.dir], " convolution algorithm within a ",
           fc::cuda::detail::format_bytes(ws_bytes), " workspace (", n, " results) [", k.str(), "]");
  const Choice c{perf[pick].algo, prec == GemmPrecision::F32 ? dnn::kFmaMath : perf[pick].math_type,
                 perf[pick].memory};
  std::lock_guard<std::mutex> lock(cache.mu);
  cache.map.emplace(k, c);
  return c;
}

// One convolution of direction `dir`: x_like/w_like/y_like are the tensors in the roles of x, w and
// y (for backward-data: dx, w, dy; for backward-filter: x, dw, dy); `out` is the written one.
void run_conv(Dir dir, const Tensor& x_like, const Tensor& w_like, const Tensor& y_like, const Tensor& out,
              bool accumulate, const Conv2dParams& p, const ExecOptions& ex) {
  const int dev = x_like.device().index;
  const ConvKey k = make_key(dev, dir, x_like, w_like, y_like, p, ex);
  if (k.n == 0) return;  // no images: nothing to write (dw accumulates nothing)
  cudaStream_t s = fc::cuda::detail::stream(dev);
  dnn::Handle h = dnn::handle(dev);  // bound to the device stream
  fc::cuda::detail::DeviceGuard guard(dev);
  const bool half = ex.precision == GemmPrecision::F16;
  const bool lowp = half || ex.precision == GemmPrecision::BF16;  // 16-bit copies, fp32 compute
  Descs d(k, half ? dnn::kDataHalf : lowp ? dnn::kDataBFloat16 : dnn::kDataFloat, search_math(ex.precision));

  // The two inputs of the direction, in the call's data type.
  const Tensor& in0 = dir == Dir::BackwardData ? w_like : x_like;
  const Tensor& in1 = dir == Dir::Forward ? w_like : y_like;
  Tensor in0_b, in1_b, out_b;
  Operands o{in0.data(), in1.data(), out.data()};
  if (lowp) {
    const DType t = half ? DType::F16 : DType::BF16;
    in0_b = Tensor::empty(in0.shape(), t, in0.device());
    in1_b = Tensor::empty(in1.shape(), t, in1.device());
    out_b = Tensor::empty(out.shape(), t, out.device());
    detail::cast_to_16bit(in0.data_as<float>(), in0_b.data(), in0.numel(), half, s);
    detail::cast_to_16bit(in1.data_as<float>(), in1_b.data(), in1.numel(), half, s);
    o = Operands{in0_b.data(), in1_b.data(), out_b.data()};
  }
  // The search writes its output: a scratch one when the call keeps (adds to) the output's contents.
  const bool keeps = accumulate && !lowp;
  Operands search = o;
  Tensor search_out;
  {
    std::unique_lock<std::mutex> lock(algo_cache().mu);
    const bool cached = algo_cache().map.count(k) != 0;
    lock.unlock();
    if (!cached && keeps) {
      search_out = Tensor::empty(out.shape(), DType::F32, out.device());
      search.out = search_out.data();
    }
  }
  const Choice c = choose(k, d, h, dir, search, ex.precision);
  search_out = Tensor();
  d.math_type(c.math, k);
  Tensor ws = device_bytes(dev, c.workspace);
  const float one = 1.0f, zero = 0.0f;
  const float* beta = keeps ? &one : &zero;
  const dnn::ConvApi& api = d.api();
  switch (dir) {
    case Dir::Forward:
      check(api.conv_fwd(h, &one, d.x(), o.in0, d.w(), o.in1, d.conv(), c.algo, ptr(ws), c.workspace, beta, d.y(),
                         o.out),
            "cudnnConvolutionForward", k);
      break;
    case Dir::BackwardData:
      check(api.conv_bwd_data(h, &one, d.w(), o.in0, d.y(), o.in1, d.conv(), c.algo, ptr(ws), c.workspace, beta,
                              d.x(), o.out),
            "cudnnConvolutionBackwardData", k);
      break;
    case Dir::BackwardFilter:
      check(api.conv_bwd_filter(h, &one, d.x(), o.in0, d.y(), o.in1, d.conv(), c.algo, ptr(ws), c.workspace, beta,
                                d.w(), o.out),
            "cudnnConvolutionBackwardFilter", k);
      break;
  }
  if (lowp) detail::widen_16bit(out_b.data(), out.data_as<float>(), out.numel(), half, accumulate, s);
}

}  // namespace

void conv2d_forward(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& y, const Conv2dParams& p,
                    const ExecOptions& ex) {
  run_conv(Dir::Forward, x, w, y, y, false, p, ex);
  if (bias.defined() && x.size(0) > 0) {
    detail::add_channel_bias(y.data_as<float>(), bias.data_as<float>(), y.size(0), y.size(1), y.size(2) * y.size(3),
                             fc::cuda::detail::stream(x.device().index));
  }
}

void conv2d_backward_data(const Tensor& dy, const Tensor& w, const Tensor& dx, const Conv2dParams& p, bool accumulate,
                          const ExecOptions& ex) {
  run_conv(Dir::BackwardData, dx, w, dy, dx, accumulate, p, ex);
}

void conv2d_backward_filter(const Tensor& x, const Tensor& dy, const Tensor& dw, const Conv2dParams& p,
                            const ExecOptions& ex) {
  run_conv(Dir::BackwardFilter, x, dw, dy, dw, true, p, ex);
}

}  // namespace cuda_nn
}  // namespace nn
}  // namespace fc
