// @file model.cc
// @brief fc::Model (facecuda/model.h): the graph executor over the CPU layer ops. Forward walks the
// nodes in order, each writing its own output buffer; backward walks them in reverse, each node's
// gradient being complete when it is reached (every consumer comes later in the order), and sends
// it to the node's inputs: written into an input's gradient by its first contribution, added by the
// others (a block input feeds both the residual branch and the shortcut).
#include "facecuda/model.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <utility>

#include "common/margin_math.h"
#include "facecuda/cuda.h"
#include "facecuda/error.h"
#include "facecuda/layers_attn.h"
#include "facecuda/layers_ext.h"

namespace fc {

namespace {

// The layer options of a BatchNorm node.
nn::BatchNormOptions bn_options(const NodeDesc& nd) {
  nn::BatchNormOptions o;
  o.eps = nd.eps;
  o.momentum = nd.momentum;
  o.freeze_gamma = nd.frozen_weight;
  return o;
}

// Stream of the parameter init in margin_math.h's generator (1 ElasticFace, 2 Partial FC,
// 3 Dropout): key = margin::rng_key(seed, kInitStream, tensor index), element i from it.
constexpr uint64_t kInitStream = 4;

int64_t numel_of(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string node_label(const NodeDesc& n, size_t i) {
  return str("node ", i, " '", n.id, "' (",
             n.kind == NodeKind::Activation ? nn::activation_name(n.act) : node_kind_name(n.kind), ")");
}

// Nodes whose output is a view of their input (no buffer of their own; the backward passes the
// gradient through).
bool is_view_node(const NodeDesc& n) {
  return n.kind == NodeKind::Flatten || n.kind == NodeKind::TokenMask ||
         (n.kind == NodeKind::TokenPool && n.pool_mode == 2);
}

// The number of inputs a kind takes (-1: one or more).
int inputs_of(NodeKind k) {
  switch (k) {
    case NodeKind::Input: return 0;
    case NodeKind::Add:
    case NodeKind::Mul: return 2;
    case NodeKind::Concat:
    case NodeKind::Average: return -1;
    default: return 1;
  }
}

void fill_init(Tensor& t, const InitDesc& init, uint64_t seed, uint64_t index) {
  const int64_t n = t.numel();
  if (t.dtype() == DType::I64) {
    int64_t* p = t.data_as<int64_t>();
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<int64_t>(init.a);
    return;
  }
  float* p = t.data_as<float>();
  const uint64_t key = margin::rng_key(seed, kInitStream, index);
  switch (init.kind) {
    case InitDesc::Constant:
      for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(init.a);
      break;
    case InitDesc::Normal:
      for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(init.a + init.b * margin::rng_normal(key, static_cast<uint64_t>(i)));
      break;
    case InitDesc::Uniform:
      for (int64_t i = 0; i < n; ++i) {
        p[i] = static_cast<float>(init.a + (init.b - init.a) * margin::rng_uniform(key, static_cast<uint64_t>(i)));
      }
      break;
  }
}

// Device-aware copies and fills of whole contiguous tensors.
void copy_bytes(const Device& dst_dev, void* dst, const Device& src_dev, const void* src, size_t bytes) {
  if (bytes == 0) return;
  if (dst_dev.is_cpu() && src_dev.is_cpu()) {
    std::memcpy(dst, src, bytes);
  } else if (dst_dev.is_cpu()) {
    cuda::copy_d2h(src_dev.index, dst, src, bytes);
  } else if (src_dev.is_cpu()) {
    cuda::copy_h2d(dst_dev.index, dst, src, bytes);
  } else {
    FC_CHECK(dst_dev == src_dev, InvalidArgument, "Expected both tensors on one device but received ", src_dev.str(),
             " and ", dst_dev.str());
    cuda::copy_d2d(dst_dev.index, dst, src, bytes);
  }
}

// dst = src (same numel and dtype; dst contiguous; src any layout, on any device).
void copy_into(const Tensor& dst, const Tensor& src) {
  if (src.is_contiguous()) {
    copy_bytes(dst.device(), dst.data(), src.device(), src.data(), dst.nbytes());
  } else if (src.device() == dst.device() && src.dtype() == DType::F32 && src.shape() == dst.shape()) {
    nn::strided_copy(src, dst);  // on the device itself (a strided CUDA view cannot go through the host)
  } else {
    Tensor c = src.to(src.device());  // a contiguous copy
    copy_bytes(dst.device(), dst.data(), c.device(), c.data(), dst.nbytes());
  }
}

void zero_fill(const Tensor& t) {
  if (!t.defined() || t.nbytes() == 0) return;
  if (t.device().is_cpu()) std::memset(t.data(), 0, t.nbytes());
  else cuda::memset_zero(t.device().index, t.data(), t.nbytes());
}

// Checks tensor `idx` of node `label`: present (unless optional), float32, of shape `want`.
void check_tensor(const ModelDesc& d, int idx, const char* role, const std::vector<int64_t>& want, bool optional,
                  const std::string& label) {
  if (idx < 0) {
    FC_CHECK(optional, InvalidArgument, label, " needs a ", role, " tensor");
    return;
  }
  FC_CHECK(static_cast<size_t>(idx) < d.tensors.size(), InvalidArgument, label, ": ", role, " tensor index ", idx,
           " is out of range (", d.tensors.size(), " tensors)");
  const TensorDesc& t = d.tensors[idx];
  FC_CHECK(t.dtype == DType::F32, InvalidArgument, label, ": Expected ", t.name, " to be float32");
  FC_CHECK(t.shape == want, ShapeMismatch, label, ": Expected ", t.name, " of shape ", shape_str(want),
           " but received ", shape_str(t.shape));
}

}  // namespace

bool node_kind_from_name(const std::string& name, NodeKind* out, nn::Activation* act) {
  static const std::pair<const char*, NodeKind> kinds[] = {
      {"input", NodeKind::Input},
      {"conv2d", NodeKind::Conv2d},
      {"batchnorm2d", NodeKind::BatchNorm2d},
      {"batchnorm1d", NodeKind::BatchNorm1d},
      {"prelu", NodeKind::PReLU},
      {"relu", NodeKind::ReLU},
      {"dropout", NodeKind::Dropout},
      {"linear", NodeKind::Linear},
      {"flatten", NodeKind::Flatten},
      {"add", NodeKind::Add},
      {"globalavgpool", NodeKind::GlobalAvgPool},
      {"mul", NodeKind::Mul},
      {"layernorm", NodeKind::LayerNorm},
      {"layerscale", NodeKind::LayerScale},
      {"attention", NodeKind::Attention},
      {"xca", NodeKind::Xca},
      {"totokens", NodeKind::ToTokens},
      {"tomap", NodeKind::ToMap},
      {"prependtokens", NodeKind::PrependTokens},
      {"posembed", NodeKind::PosEmbed},
      {"fourierposembed", NodeKind::FourierPosEmbed},
      {"tokenpool", NodeKind::TokenPool},
      {"tokenmask", NodeKind::TokenMask},
      {"droppath", NodeKind::DropPath},
      {"concat", NodeKind::Concat},
      {"slice", NodeKind::Slice},
      {"average", NodeKind::Average}};
  for (const auto& k : kinds) {
    if (name == k.first) {
      *out = k.second;
      return true;
    }
  }
  static const std::pair<const char*, nn::Activation> acts[] = {
      {"relu6", nn::Activation::kReLU6}, {"hardswish", nn::Activation::kHardSwish}, {"silu", nn::Activation::kSiLU},
      {"sigmoid", nn::Activation::kSigmoid}, {"gelu", nn::Activation::kGELU},
      {"hardsigmoid", nn::Activation::kHardSigmoid}};
  for (const auto& a : acts) {
    if (name == a.first) {
      *out = NodeKind::Activation;
      if (act) *act = a.second;
      return true;
    }
  }
  return false;
}

const char* node_kind_name(NodeKind k) {
  switch (k) {
    case NodeKind::Input: return "input";
    case NodeKind::Conv2d: return "conv2d";
    case NodeKind::BatchNorm2d: return "batchnorm2d";
    case NodeKind::BatchNorm1d: return "batchnorm1d";
    case NodeKind::PReLU: return "prelu";
    case NodeKind::ReLU: return "relu";
    case NodeKind::Dropout: return "dropout";
    case NodeKind::Linear: return "linear";
    case NodeKind::Flatten: return "flatten";
    case NodeKind::Add: return "add";
    case NodeKind::Activation: return "activation";
    case NodeKind::GlobalAvgPool: return "globalavgpool";
    case NodeKind::Mul: return "mul";
    case NodeKind::LayerNorm: return "layernorm";
    case NodeKind::LayerScale: return "layerscale";
    case NodeKind::Attention: return "attention";
    case NodeKind::Xca: return "xca";
    case NodeKind::ToTokens: return "totokens";
    case NodeKind::ToMap: return "tomap";
    case NodeKind::PrependTokens: return "prependtokens";
    case NodeKind::PosEmbed: return "posembed";
    case NodeKind::FourierPosEmbed: return "fourierposembed";
    case NodeKind::TokenPool: return "tokenpool";
    case NodeKind::TokenMask: return "tokenmask";
    case NodeKind::DropPath: return "droppath";
    case NodeKind::Concat: return "concat";
    case NodeKind::Slice: return "slice";
    case NodeKind::Average: return "average";
  }
  return "unknown";
}

void Model::validate(const ModelDesc& d) {
  FC_CHECK(!d.nodes.empty() && d.nodes[0].kind == NodeKind::Input, InvalidArgument,
           "Expected node 0 to be the input node");
  FC_CHECK(d.output >= 0 && static_cast<size_t>(d.output) < d.nodes.size(), InvalidArgument, "Expected an output node in [0, ",
           d.nodes.size(), ") but received ", d.output);
  for (size_t t = 0; t < d.tensors.size(); ++t) {
    const TensorDesc& td = d.tensors[t];
    FC_CHECK(!td.name.empty(), InvalidArgument, "tensor ", t, " has no name");
    FC_CHECK(td.shape.size() <= static_cast<size_t>(kMaxRank), InvalidArgument, "tensor '", td.name, "' has rank ",
             td.shape.size(), " (at most ", kMaxRank, ")");
    for (int64_t s : td.shape) FC_CHECK(s >= 1, ShapeMismatch, "tensor '", td.name, "' has shape ", shape_str(td.shape));
    FC_CHECK(td.dtype == DType::F32 || (td.dtype == DType::I64 && td.buffer), InvalidArgument, "tensor '", td.name,
             "': Expected float32 (or an int64 buffer) but received ", dtype_name(td.dtype));
    FC_CHECK(td.init.kind != InitDesc::Normal || (std::isfinite(td.init.b) && td.init.b >= 0), InvalidArgument,
             "tensor '", td.name, "': Expected a finite std >= 0 for its normal init but received ", td.init.b);
  }
  std::vector<int> uses(d.tensors.size(), 0);
  for (size_t i = 0; i < d.nodes.size(); ++i) {
    const NodeDesc& n = d.nodes[i];
    const std::string label = node_label(n, i);
    const int want_inputs = inputs_of(n.kind);
    FC_CHECK(i == 0 || n.kind != NodeKind::Input, InvalidArgument, label, ": only node 0 may be the input");
    if (want_inputs < 0) {
      FC_CHECK(!n.inputs.empty(), InvalidArgument, label, ": Expected at least 1 input but received none");
    } else {
      FC_CHECK(n.inputs.size() == static_cast<size_t>(want_inputs), InvalidArgument, label, ": Expected ",
               want_inputs, " inputs but received ", n.inputs.size());
    }
    for (int j : n.inputs) {
      FC_CHECK(j >= 0 && static_cast<size_t>(j) < i, InvalidArgument, label, " reads node ", j,
               ", which is not an earlier node");
    }
    for (int idx : {n.weight, n.bias, n.running_mean, n.running_var, n.num_batches_tracked}) {
      if (idx < 0) continue;
      FC_CHECK(static_cast<size_t>(idx) < d.tensors.size(), InvalidArgument, label, ": tensor index ", idx,
               " is out of range (", d.tensors.size(), " tensors)");
      FC_CHECK(++uses[idx] == 1, InvalidArgument, label, ": tensor '", d.tensors[idx].name,
               "' is already used by another node");
    }
    switch (n.kind) {
      case NodeKind::Input:
        FC_CHECK(n.channels >= 1 && n.height >= 0 && n.width >= 0, InvalidArgument, label,
                 ": Expected channels >= 1 and sizes >= 0");
        break;
      case NodeKind::Conv2d:
        FC_CHECK(n.in_c >= 1 && n.out_c >= 1 && n.kernel >= 1 && n.stride >= 1 && n.padding >= 0 && n.groups >= 1,
                 InvalidArgument, label, ": Expected positive channels, kernel, stride and groups, and padding >= 0");
        FC_CHECK(n.in_c % n.groups == 0 && n.out_c % n.groups == 0, InvalidArgument, label, ": channels ", n.in_c, "→",
                 n.out_c, " are not divisible by groups ", n.groups);
        check_tensor(d, n.weight, "weight", {n.out_c, n.in_c / n.groups, n.kernel, n.kernel}, false, label);
        check_tensor(d, n.bias, "bias", {n.out_c}, true, label);
        FC_CHECK(!n.asymmetric || (n.pad_t >= 0 && n.pad_b >= 0 && n.pad_l >= 0 && n.pad_r >= 0), InvalidArgument,
                 label, ": Expected asymmetric paddings >= 0");
        break;
      case NodeKind::BatchNorm2d:
      case NodeKind::BatchNorm1d:
        FC_CHECK(n.features >= 1, InvalidArgument, label, ": Expected features >= 1");
        FC_CHECK(n.eps > 0 && std::isfinite(n.eps), InvalidArgument, label, ": Expected eps > 0 but received ", n.eps);
        FC_CHECK(n.momentum >= 0 && n.momentum <= 1, InvalidArgument, label, ": Expected momentum in [0, 1] but received ",
                 n.momentum);
        FC_CHECK((n.weight < 0) == (n.bias < 0), InvalidArgument, label, ": Expected both weight and bias, or neither");
        FC_CHECK((n.running_mean < 0) == (n.running_var < 0), InvalidArgument, label,
                 ": Expected both running_mean and running_var, or neither");
        check_tensor(d, n.weight, "weight", {n.features}, true, label);
        check_tensor(d, n.bias, "bias", {n.features}, true, label);
        check_tensor(d, n.running_mean, "running_mean", {n.features}, true, label);
        check_tensor(d, n.running_var, "running_var", {n.features}, true, label);
        if (n.num_batches_tracked >= 0) {
          const TensorDesc& t = d.tensors[n.num_batches_tracked];
          FC_CHECK(t.dtype == DType::I64 && t.shape.empty(), InvalidArgument, label, ": Expected ", t.name,
                   " to be an int64 scalar");
        }
        break;
      case NodeKind::PReLU:
        FC_CHECK(n.channels >= 1, InvalidArgument, label, ": Expected channels >= 1");
        FC_CHECK(n.weight >= 0, InvalidArgument, label, " needs a weight tensor");
        check_tensor(d, n.weight, "weight", {d.tensors[n.weight].shape == std::vector<int64_t>{1} ? 1 : n.channels}, false,
                     label);
        break;
      case NodeKind::Dropout:
        FC_CHECK(n.p >= 0 && n.p <= 1, InvalidArgument, label, ": Expected p in [0, 1] but received ", n.p);
        break;
      case NodeKind::Linear:
        FC_CHECK(n.in_c >= 1 && n.out_c >= 1, InvalidArgument, label, ": Expected positive in and out features");
        check_tensor(d, n.weight, "weight", {n.out_c, n.in_c}, false, label);
        check_tensor(d, n.bias, "bias", {n.out_c}, true, label);
        break;
      case NodeKind::LayerNorm:
        FC_CHECK(n.features >= 1 && n.eps > 0 && std::isfinite(n.eps), InvalidArgument, label,
                 ": Expected features >= 1 and eps > 0");
        check_tensor(d, n.weight, "weight", {n.features}, true, label);
        check_tensor(d, n.bias, "bias", {n.features}, true, label);
        break;
      case NodeKind::LayerScale:
        FC_CHECK(n.channels >= 1, InvalidArgument, label, ": Expected channels >= 1");
        check_tensor(d, n.weight, "gamma", {n.channels}, false, label);
        break;
      case NodeKind::Attention:
      case NodeKind::Xca:
        FC_CHECK(n.dim >= 1 && n.heads >= 1 && n.dim % n.heads == 0, InvalidArgument, label,
                 ": Expected dim >= 1 divisible by heads >= 1 but received dim ", n.dim, ", heads ", n.heads);
        if (n.kind == NodeKind::Attention) {
          FC_CHECK(n.scale > 0 && std::isfinite(n.scale), InvalidArgument, label,
                   ": Expected a finite scale > 0 but received ", n.scale);
        } else {
          check_tensor(d, n.weight, "temperature", {n.heads, 1, 1}, false, label);
        }
        break;
      case NodeKind::ToMap:
        FC_CHECK(n.height >= 1 && n.width >= 1, InvalidArgument, label, ": Expected height and width >= 1");
        break;
      case NodeKind::PrependTokens:
        FC_CHECK((n.count == 1 || n.count == 2) && n.dim >= 1, InvalidArgument, label,
                 ": Expected count 1 or 2 and dim >= 1");
        check_tensor(d, n.weight, "cls_token", {1, 1, n.dim}, false, label);
        FC_CHECK((n.bias >= 0) == (n.count == 2), InvalidArgument, label, ": Expected a dist_token exactly when count is 2");
        check_tensor(d, n.bias, "dist_token", {1, 1, n.dim}, true, label);
        break;
      case NodeKind::PosEmbed:
        FC_CHECK(n.tokens >= 1 && n.dim >= 1, InvalidArgument, label, ": Expected tokens and dim >= 1");
        check_tensor(d, n.weight, "pos_embed", {1, n.tokens, n.dim}, false, label);
        break;
      case NodeKind::FourierPosEmbed:
        FC_CHECK(n.dim >= 1 && n.hidden >= 1 && n.temperature > 0 && std::isfinite(n.temperature), InvalidArgument,
                 label, ": Expected dim and hidden >= 1 and a temperature > 0");
        check_tensor(d, n.weight, "weight", {n.dim, 2 * n.hidden, 1, 1}, false, label);
        check_tensor(d, n.bias, "bias", {n.dim}, true, label);
        break;
      case NodeKind::TokenPool:
        FC_CHECK(n.pool_mode >= 0 && n.pool_mode <= 2 && n.index >= 0, InvalidArgument, label,
                 ": Expected mode token, mean or flatten and index >= 0");
        break;
      case NodeKind::TokenMask:
        // Token masking is a training-time augmentation of insightface's ViT; at ratio 0 (every
        // preset here) it is the identity, and that is all the executor runs.
        FC_CHECK(n.ratio == 0, NotImplemented, label, ": token masking with ratio ", n.ratio,
                 " is not supported (ratio 0 only)");
        check_tensor(d, n.weight, "mask_token", {1, 1, n.dim}, true, label);
        break;
      case NodeKind::DropPath:
        FC_CHECK(n.p >= 0 && n.p < 1, InvalidArgument, label, ": Expected p in [0, 1) but received ", n.p);
        break;
      case NodeKind::Slice:
        FC_CHECK(n.start >= 0 && n.length >= 1, InvalidArgument, label, ": Expected start >= 0 and length >= 1");
        break;
      case NodeKind::ReLU:
      case NodeKind::Flatten:
      case NodeKind::Add:
      case NodeKind::Activation:
      case NodeKind::GlobalAvgPool:
      case NodeKind::Mul:
      case NodeKind::ToTokens:
      case NodeKind::Concat:
      case NodeKind::Average:
        break;
    }
    const bool has_weight = n.kind == NodeKind::Conv2d || n.kind == NodeKind::Linear || n.kind == NodeKind::PReLU ||
                            n.kind == NodeKind::BatchNorm1d || n.kind == NodeKind::BatchNorm2d ||
                            n.kind == NodeKind::LayerNorm || n.kind == NodeKind::LayerScale ||
                            n.kind == NodeKind::Xca || n.kind == NodeKind::PrependTokens ||
                            n.kind == NodeKind::PosEmbed || n.kind == NodeKind::FourierPosEmbed ||
                            n.kind == NodeKind::TokenMask;
    if (!has_weight) FC_CHECK(n.weight < 0 && n.bias < 0, InvalidArgument, label, " takes no tensors");
    if (n.kind != NodeKind::BatchNorm1d && n.kind != NodeKind::BatchNorm2d) {
      FC_CHECK(n.running_mean < 0 && n.running_var < 0 && n.num_batches_tracked < 0, InvalidArgument, label,
               " takes no running statistics");
    }
  }
}

Model::Model(ModelDesc desc, const Device& device, const ModelOptions& options)
    : desc_(std::move(desc)), device_(device), options_(options) {
  validate(desc_);
  // F16 on the CPU emulates the CUDA path (fp16-rounded GEMM operands, fp32 sums): slower than fp32,
  // but it reproduces fp16 overflow and underflow, so loss scaling can be tested anywhere.
  FC_CHECK(options_.precision == GemmPrecision::F32 || options_.precision == GemmPrecision::BF16 ||
               options_.precision == GemmPrecision::F16 ||
               (options_.precision == GemmPrecision::TF32 && device_.is_cuda()),
           InvalidArgument, "Expected precision fp32, bf16 or fp16 (tf32: CUDA only) for a model on ", device_.str());
  if (device_.is_cuda()) cuda::require_device(device_.index);
  ex_.max_threads = options_.max_threads;
  ex_.precision = options_.precision;
  tensors_.resize(desc_.tensors.size());
  grads_.resize(desc_.tensors.size());
  for (size_t t = 0; t < desc_.tensors.size(); ++t) {
    const TensorDesc& td = desc_.tensors[t];
    // Drawn on the host (the generator is host code), then moved; counters stay on the host.
    Tensor host = Tensor::empty(td.shape, td.dtype, Device::cpu());
    fill_init(host, td.init, options_.seed, t);
    tensors_[t] = td.dtype == DType::I64 || device_.is_cpu() ? host : host.to(device_);
    if (!td.buffer && td.trainable) {
      grads_[t] = Tensor::empty(td.shape, td.dtype, device_);
      zero_fill(grads_[t]);
    }
  }
  const size_t nn_ = desc_.nodes.size();
  shapes_.assign(nn_, {});
  act_buf_.assign(nn_, Tensor());
  act_.assign(nn_, Tensor());
  grad_buf_.assign(nn_, Tensor());
  scratch_buf_.assign(nn_, Tensor());
  node_grad_.assign(nn_, Tensor());
  grad_set_.assign(nn_, 0);
  save_mean_.assign(nn_, Tensor());
  save_invstd_.assign(nn_, Tensor());
  aux_.assign(nn_, {});
  probs_saved_.assign(nn_, 0);
  table_.assign(nn_, Tensor());
  table_hw_.assign(nn_, {0, 0});
  for (size_t i = 0; i < nn_; ++i) {
    const NodeDesc& n = desc_.nodes[i];
    if (n.kind == NodeKind::BatchNorm1d || n.kind == NodeKind::BatchNorm2d) {
      save_mean_[i] = Tensor::empty({n.features}, DType::F32, device_);
      save_invstd_[i] = Tensor::empty({n.features}, DType::F32, device_);
    }
  }
  plan_folds();
}

void Model::load_tensor(size_t i, const void* host, size_t bytes) {
  FC_CHECK(i < tensors_.size(), InvalidArgument, "Expected a tensor index in [0, ", tensors_.size(), ") but received ", i);
  const Tensor& dst = tensors_[i];
  FC_CHECK(bytes == dst.nbytes(), ShapeMismatch, "Expected ", dst.nbytes(), " bytes for '", desc_.tensors[i].name, "' (",
           dst.describe(), ") but received ", bytes);
  folds_valid_ = false;
  copy_bytes(dst.device(), dst.data(), Device::cpu(), host, bytes);
}

void Model::load_tensor(size_t i, const Tensor& src) {
  FC_CHECK(i < tensors_.size(), InvalidArgument, "Expected a tensor index in [0, ", tensors_.size(), ") but received ", i);
  const Tensor& dst = tensors_[i];
  FC_CHECK(src.defined() && src.dtype() == dst.dtype(), InvalidArgument, "Expected a ", dtype_name(dst.dtype()),
           " tensor for '", desc_.tensors[i].name, "' but received ", src.defined() ? src.describe() : "an undefined one");
  FC_CHECK(src.shape() == dst.shape(), ShapeMismatch, "Expected '", desc_.tensors[i].name, "' of shape ",
           shape_str(dst.shape()), " but received ", shape_str(src.shape()));
  folds_valid_ = false;
  if (src.storage() == dst.storage() && src.offset() == dst.offset()) return;  // the model's own tensor
  copy_into(dst, src);
}

void Model::plan_folds() {
  const size_t nn_ = desc_.nodes.size();
  fold_bn_.assign(nn_, -1);
  folded_in_.assign(nn_, -1);
  fold_w_.assign(nn_, Tensor());
  fold_b_.assign(nn_, Tensor());
  prelu_of_bn_.assign(nn_, -1);
  bn_of_prelu_.assign(nn_, -1);
  std::vector<int> readers(nn_, 0);
  for (const NodeDesc& n : desc_.nodes) {
    for (int j : n.inputs) ++readers[j];
  }
  for (size_t k = 1; k < nn_; ++k) {
    const NodeDesc& pr = desc_.nodes[k];
    if (pr.kind != NodeKind::PReLU) continue;
    const int j = pr.inputs[0];
    const NodeKind bk = desc_.nodes[j].kind;
    if ((bk != NodeKind::BatchNorm1d && bk != NodeKind::BatchNorm2d) || readers[j] != 1 || desc_.output == j) continue;
    prelu_of_bn_[j] = static_cast<int>(k);
    bn_of_prelu_[k] = j;
  }
  act_of_conv_.assign(nn_, -1);
  conv_of_act_.assign(nn_, -1);
  conv_epilogue_.assign(nn_, 0);
  if (!options_.fold_batch_norm) return;
  for (size_t j = 1; j < nn_; ++j) {
    const NodeDesc& bn = desc_.nodes[j];
    if ((bn.kind != NodeKind::BatchNorm1d && bn.kind != NodeKind::BatchNorm2d) || bn.running_mean < 0) continue;
    const int i = bn.inputs[0];
    const NodeDesc& layer = desc_.nodes[i];
    if (layer.kind != NodeKind::Conv2d && layer.kind != NodeKind::Linear) continue;
    if (readers[i] != 1 || desc_.output == i) continue;
    fold_bn_[i] = static_cast<int>(j);
    folded_in_[j] = i;
  }
  // conv (→ folded BatchNorm) → ReLU / ReLU6 / hard-swish / SiLU, the activation the only reader:
  // the conv applies it in its epilogue (CPU; the 1×1 kernel while the tile is in registers).
  if (device_.is_cuda()) return;
  for (size_t k = 1; k < nn_; ++k) {
    const NodeDesc& a = desc_.nodes[k];
    int epi = 0;
    if (a.kind == NodeKind::ReLU) epi = 1;
    if (a.kind == NodeKind::Activation) {
      epi = a.act == nn::Activation::kReLU6 ? 2 : a.act == nn::Activation::kHardSwish ? 3 : a.act == nn::Activation::kSiLU ? 4 : 0;
    }
    if (epi == 0) continue;
    const int src = a.inputs[0];
    const int i = folded_in_[src] >= 0 ? folded_in_[src] : src;
    if (desc_.nodes[i].kind != NodeKind::Conv2d || readers[src] != 1 || desc_.output == src) continue;
    if (i != src && fold_bn_[i] != src) continue;
    act_of_conv_[i] = static_cast<int>(k);
    conv_of_act_[k] = i;
    conv_epilogue_[i] = epi;
  }
}

void Model::refresh_folds() {
  // Views handed out (parameters()) may be written at any time: fold again while any exist.
  bool shared = false;
  for (size_t i = 1; i < desc_.nodes.size() && !shared; ++i) {
    if (fold_bn_[i] < 0) continue;
    const NodeDesc& l = desc_.nodes[i];
    const NodeDesc& bn = desc_.nodes[fold_bn_[i]];
    for (int t : {l.weight, l.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var}) {
      if (t >= 0 && tensors_[t].storage().use_count() > 1) shared = true;
    }
  }
  if (folds_valid_ && !shared) return;
  const Tensor none;
  for (size_t i = 1; i < desc_.nodes.size(); ++i) {
    if (fold_bn_[i] < 0) continue;
    const NodeDesc& l = desc_.nodes[i];
    const NodeDesc& bn = desc_.nodes[fold_bn_[i]];
    const Tensor& w = tensors_[l.weight];
    if (!fold_w_[i].defined()) {
      fold_w_[i] = Tensor::empty(w.shape(), DType::F32, device_);
      fold_b_[i] = Tensor::empty({w.size(0)}, DType::F32, device_);
    }
    nn::fold_batch_norm(w, l.bias >= 0 ? tensors_[l.bias] : none, bn.weight >= 0 ? tensors_[bn.weight] : none,
                        bn.bias >= 0 ? tensors_[bn.bias] : none, tensors_[bn.running_mean], tensors_[bn.running_var],
                        bn.eps, fold_w_[i], fold_b_[i]);
  }
  folds_valid_ = true;
}

void Model::recompute_folded_outputs() {
  const Tensor none;
  for (size_t i = 1; i < desc_.nodes.size(); ++i) {
    if (act_of_conv_[i] >= 0) {
      // the fused activation's input was never written: the conv's own output, or its folded BatchNorm's
      const NodeDesc& nd = desc_.nodes[i];
      const Tensor& in = act_[nd.inputs[0]];
      if (fold_bn_[i] >= 0) {
        conv_forward(i, in, fold_w_[i], fold_b_[i], act_[fold_bn_[i]]);
      } else {
        conv_forward(i, in, tensors_[nd.weight], nd.bias >= 0 ? tensors_[nd.bias] : none, act_[i]);
      }
    }
    if (fold_bn_[i] < 0) continue;
    const NodeDesc& nd = desc_.nodes[i];
    const Tensor& in = act_[nd.inputs[0]];
    const Tensor& b = nd.bias >= 0 ? tensors_[nd.bias] : none;
    if (nd.kind == NodeKind::Conv2d) {
      conv_forward(i, in, tensors_[nd.weight], b, act_[i]);
    } else {
      linear_forward(i, in, tensors_[nd.weight], b, act_[i]);
    }
  }
}

int Model::index_of(const std::string& name) const {
  for (size_t t = 0; t < desc_.tensors.size(); ++t) {
    if (desc_.tensors[t].name == name) return static_cast<int>(t);
  }
  return -1;
}

std::vector<std::vector<int64_t>> Model::infer_shapes(const std::vector<int64_t>& xs) const {
  const NodeDesc& in = desc_.nodes[0];
  std::string want = str("[N, ", in.channels, ", ", in.height ? str(in.height) : std::string("H"), ", ",
                         in.width ? str(in.width) : std::string("W"), "]");
  FC_CHECK(xs.size() == 4 && xs[0] >= 1 && xs[1] == in.channels && (in.height == 0 || xs[2] == in.height) &&
               (in.width == 0 || xs[3] == in.width) && xs[2] >= 1 && xs[3] >= 1,
           ShapeMismatch, "Expected x of shape ", want, " with N >= 1 but received ", shape_str(xs));
  std::vector<std::vector<int64_t>> s(desc_.nodes.size());
  s[0] = xs;
  for (size_t i = 1; i < desc_.nodes.size(); ++i) {
    const NodeDesc& n = desc_.nodes[i];
    const std::vector<int64_t>& a = s[n.inputs[0]];
    auto mismatch = [&](const std::string& expected) {
      fail(Code::ShapeMismatch, str(node_label(n, i), " expects ", expected, " but receives ", shape_str(a), " (input x ",
                                    shape_str(xs), ")"));
    };
    switch (n.kind) {
      case NodeKind::Conv2d: {
        if (a.size() != 4 || a[1] != n.in_c) mismatch(str("[N, ", n.in_c, ", H, W]"));
        const int64_t ph = n.asymmetric ? n.pad_t + n.pad_b : 2 * n.padding;
        const int64_t pw = n.asymmetric ? n.pad_l + n.pad_r : 2 * n.padding;
        if (a[2] + ph < n.kernel || a[3] + pw < n.kernel) {
          mismatch(str("a map of at least ", n.kernel - std::min(ph, pw), " pixels"));
        }
        s[i] = {a[0], n.out_c, (a[2] + ph - n.kernel) / n.stride + 1, (a[3] + pw - n.kernel) / n.stride + 1};
        break;
      }
      case NodeKind::BatchNorm2d:
        if (a.size() != 4 || a[1] != n.features) mismatch(str("[N, ", n.features, ", H, W]"));
        s[i] = a;
        break;
      case NodeKind::BatchNorm1d:
        if (a.size() != 2 || a[1] != n.features) mismatch(str("[N, ", n.features, "]"));
        s[i] = a;
        break;
      case NodeKind::PReLU:
        if (a.size() < 2 || a[1] != n.channels) mismatch(str("[N, ", n.channels, ", ...]"));
        s[i] = a;
        break;
      case NodeKind::ReLU:
      case NodeKind::Dropout:
        s[i] = a;
        break;
      case NodeKind::Flatten: {
        int64_t f = 1;
        for (size_t k = 1; k < a.size(); ++k) f *= a[k];
        s[i] = {a[0], f};
        break;
      }
      case NodeKind::Linear:
        // Over the last axis: [N, in] or tokens [N, T, in].
        if (a.size() < 2 || a.size() > 3 || a.back() != n.in_c) mismatch(str("[N, ", n.in_c, "] or [N, T, ", n.in_c, "]"));
        s[i] = a;
        s[i].back() = n.out_c;
        break;
      case NodeKind::Activation:
      case NodeKind::DropPath:
        s[i] = a;
        break;
      case NodeKind::TokenMask:
        if (a.size() != 3 || (n.dim && a[2] != n.dim)) mismatch(str("[N, T, ", n.dim, "]"));
        s[i] = a;
        break;
      case NodeKind::GlobalAvgPool:
        if (a.size() != 4) mismatch("[N, C, H, W]");
        s[i] = {a[0], a[1], 1, 1};
        break;
      case NodeKind::Mul: {
        const std::vector<int64_t>& b = s[n.inputs[1]];
        if (a.size() != 4) mismatch("a map [N, C, H, W]");
        if (!((b.size() == 4 && b[2] == 1 && b[3] == 1) || b.size() == 2) || b[0] != a[0] || b[1] != a[1]) {
          fail(Code::ShapeMismatch, str(node_label(n, i), " multiplies ", shape_str(a), " by a gate ", shape_str(b),
                                        "; expected [N, C, 1, 1] or [N, C] with ", a[1], " channels"));
        }
        s[i] = a;
        break;
      }
      case NodeKind::LayerNorm:
      case NodeKind::LayerScale: {
        const int64_t c = n.kind == NodeKind::LayerNorm ? n.features : n.channels;
        if (n.channels_layout ? (a.size() < 3 || a[1] != c) : a.back() != c) {
          mismatch(n.channels_layout ? str("[N, ", c, ", H, W]") : str("[N, ..., ", c, "]"));
        }
        s[i] = a;
        break;
      }
      case NodeKind::Attention:
      case NodeKind::Xca:
        if (a.size() != 3 || a[2] != 3 * n.dim) mismatch(str("[N, T, ", 3 * n.dim, "] (q, k, v)"));
        s[i] = {a[0], a[1], n.dim};
        break;
      case NodeKind::ToTokens:
        if (a.size() != 4) mismatch("[N, C, H, W]");
        s[i] = {a[0], a[2] * a[3], a[1]};
        break;
      case NodeKind::ToMap:
        if (a.size() != 3 || a[1] != n.height * n.width) mismatch(str("[N, ", n.height * n.width, ", C]"));
        s[i] = {a[0], a[2], n.height, n.width};
        break;
      case NodeKind::PrependTokens:
        if (a.size() != 3 || a[2] != n.dim) mismatch(str("[N, T, ", n.dim, "]"));
        s[i] = {a[0], a[1] + n.count, a[2]};
        break;
      case NodeKind::PosEmbed:
        if (a.size() != 3 || a[1] != n.tokens || a[2] != n.dim) {
          mismatch(str("[N, ", n.tokens, ", ", n.dim, "] (the token count of the input size the model was built for)"));
        }
        s[i] = a;
        break;
      case NodeKind::FourierPosEmbed:
        if (a.size() != 4) mismatch("[N, C, H, W]");
        s[i] = {a[0], a[2] * a[3], n.dim};
        break;
      case NodeKind::TokenPool:
        if (a.size() != 3 || (n.pool_mode != 2 && n.index >= a[1])) mismatch(str("[N, T, D] with T > ", n.index));
        s[i] = n.pool_mode == 2 ? std::vector<int64_t>{a[0], a[1] * a[2]} : std::vector<int64_t>{a[0], a[2]};
        break;
      case NodeKind::Concat: {
        if (a.size() != 4) mismatch("[N, C, H, W]");
        int64_t c = 0;
        for (int j : n.inputs) {
          const std::vector<int64_t>& b = s[j];
          if (b.size() != 4 || b[0] != a[0] || b[2] != a[2] || b[3] != a[3]) {
            fail(Code::ShapeMismatch, str(node_label(n, i), " concatenates ", shape_str(a), " and ", shape_str(b),
                                          " (maps of one size)"));
          }
          c += b[1];
        }
        s[i] = {a[0], c, a[2], a[3]};
        break;
      }
      case NodeKind::Slice:
        if (a.size() != 4 || n.start + n.length > a[1]) mismatch(str("[N, C, H, W] with C >= ", n.start + n.length));
        s[i] = {a[0], n.length, a[2], a[3]};
        break;
      case NodeKind::Average:
        for (int j : n.inputs) {
          if (s[j] != a) fail(Code::ShapeMismatch, str(node_label(n, i), " averages ", shape_str(a), " and ", shape_str(s[j])));
        }
        s[i] = a;
        break;
      case NodeKind::Add: {
        const std::vector<int64_t>& b = s[n.inputs[1]];
        if (a != b) {
          fail(Code::ShapeMismatch, str(node_label(n, i), " adds ", shape_str(a), " and ", shape_str(b)));
        }
        s[i] = a;
        break;
      }
      case NodeKind::Input:
        break;
    }
  }
  return s;
}

void Model::ensure_capacity(const std::vector<std::vector<int64_t>>& shapes) {
  const int64_t n = shapes[0][0];
  bool same_samples = capacity_ > 0;
  for (size_t i = 1; i < shapes.size() && same_samples; ++i) {
    if (!act_buf_[i].defined()) continue;
    std::vector<int64_t> have = act_buf_[i].shape();
    same_samples = have.size() == shapes[i].size() && std::equal(have.begin() + 1, have.end(), shapes[i].begin() + 1);
  }
  if (same_samples && n <= capacity_) return;
  const int64_t cap = same_samples ? n : std::max(n, capacity_);
  // Drop the old buffers first, so that peak memory is one set.
  for (auto& t : act_buf_) t = Tensor();
  for (auto& t : grad_buf_) t = Tensor();
  for (auto& t : scratch_buf_) t = Tensor();
  for (size_t i = 1; i < shapes.size(); ++i) {
    if (is_view_node(desc_.nodes[i])) continue;  // a view of its input
    std::vector<int64_t> s = shapes[i];
    s[0] = cap;
    act_buf_[i] = Tensor::empty(s, DType::F32, device_);
  }
  capacity_ = cap;
}

void Model::ensure_grad_buffers() {
  for (size_t i = 1; i < desc_.nodes.size(); ++i) {
    if (grad_buf_[i].defined()) continue;
    std::vector<int64_t> s = shapes_[i];
    s[0] = capacity_;
    grad_buf_[i] = Tensor::empty(s, DType::F32, device_);
  }
}

Tensor Model::slice(const Tensor& buf, int64_t n) const { return buf.size(0) == n ? buf : buf.narrow(0, 0, n); }

Tensor Model::scratch_for(size_t j) {
  if (j == 0) return Tensor::empty(shapes_[0], DType::F32, device_);
  if (!scratch_buf_[j].defined()) {
    std::vector<int64_t> s = shapes_[j];
    s[0] = capacity_;
    scratch_buf_[j] = Tensor::empty(s, DType::F32, device_);
  }
  return slice(scratch_buf_[j], shapes_[j][0]);
}

void Model::accumulate_into(size_t j, const Tensor& g) {
  if (!node_grad_[j].defined()) return;  // the input's gradient, not wanted
  if (grad_set_[j]) {
    nn::add(node_grad_[j], g.reshape(shapes_[j]), node_grad_[j], ex_);
  } else {
    copy_into(node_grad_[j], g);
    grad_set_[j] = 1;
  }
}

nn::DropoutParams Model::dropout_params(size_t node) const {
  nn::DropoutParams d;
  d.p = desc_.nodes[node].p;
  // One mask per dropout node: the node index is mixed into the seed (node 0 is the input, so every
  // dropout node gets a seed different from the model's).
  d.seed = options_.seed ^ margin::mix64(static_cast<uint64_t>(node));
  d.step = last_step_;
  return d;
}

// ---- the node ops of the second backbone batch

Tensor Model::aux(size_t i, size_t k, const std::vector<int64_t>& shape) {
  if (aux_[i].size() <= k) aux_[i].resize(k + 1);
  const int64_t n = numel_of(shape);
  Tensor& buf = aux_[i][k];
  if (!buf.defined() || buf.numel() < n) buf = Tensor::empty({std::max<int64_t>(n, 1)}, DType::F32, device_);
  return buf.narrow(0, 0, n).reshape(shape);
}

Tensor Model::dx_begin(size_t j, bool* first) {
  *first = false;
  if (!node_grad_[j].defined()) return Tensor();
  *first = !grad_set_[j];
  return *first ? node_grad_[j] : scratch_for(j);
}

void Model::dx_end(size_t j, bool first, const Tensor& dx) {
  if (!dx.defined()) return;
  if (first) grad_set_[j] = 1;
  else nn::add(node_grad_[j], dx.reshape(shapes_[j]), node_grad_[j], ex_);
}

Model::DxSink Model::dx_sink(size_t j, bool covers_all) {
  DxSink s;
  if (!node_grad_[j].defined()) return s;
  s.t = node_grad_[j];
  s.accumulate = grad_set_[j] != 0;
  if (!grad_set_[j] && !covers_all) {
    zero_fill(s.t);
    s.accumulate = true;
  }
  grad_set_[j] = 1;
  return s;
}

void Model::conv_forward(size_t i, const Tensor& in, const Tensor& w, const Tensor& b, const Tensor& y, int epilogue) {
  const NodeDesc& nd = desc_.nodes[i];
  if (!nd.asymmetric) {
    nn::Conv2dParams p(nd.stride, nd.padding, nd.groups);
    p.epilogue = epilogue;
    nn::conv2d_forward(in, w, b, y, p, ex_);
    return;
  }
  // Asymmetric ("same") padding: x copied into the interior of a zeroed buffer, then an unpadded conv.
  const std::vector<int64_t> xs = in.shape();
  const Tensor xp = aux(i, 0, {xs[0], xs[1], xs[2] + nd.pad_t + nd.pad_b, xs[3] + nd.pad_l + nd.pad_r});
  zero_fill(xp);
  nn::strided_copy(in, xp.narrow(2, nd.pad_t, xs[2]).narrow(3, nd.pad_l, xs[3]), 1.0f, false, ex_);
  nn::Conv2dParams p(nd.stride, 0, nd.groups);
  p.epilogue = epilogue;
  nn::conv2d_forward(xp, w, b, y, p, ex_);
}

void Model::linear_forward(size_t i, const Tensor& in, const Tensor& w, const Tensor& b, const Tensor& y) {
  const NodeDesc& nd = desc_.nodes[i];
  const int64_t rows = in.numel() / nd.in_c;
  nn::linear_forward(in.reshape({rows, nd.in_c}), w, b, y.reshape({rows, nd.out_c}), ex_);
}

namespace {

// The head split of a qkv projection [N, T, 3·C] (C = H·D, timm's reshape(N, T, 3, H, D)) as a
// [3, N, H, T, D] view, and of an attention output [N, T, C] as [N, H, T, D].
Tensor qkv_heads(const Tensor& t, int64_t heads) {
  const int64_t N = t.size(0), T = t.size(1), D = t.size(2) / (3 * heads);
  return t.reshape({N, T, 3, heads, D}).transpose(0, 2).transpose(1, 2).transpose(2, 3);
}
Tensor out_heads(const Tensor& t, int64_t heads) {
  const int64_t N = t.size(0), T = t.size(1), D = t.size(2) / heads;
  return t.reshape({N, T, heads, D}).transpose(1, 2);
}

nn::ChannelLayout layout_of(const NodeDesc& nd) {
  return nd.channels_layout ? nn::ChannelLayout::kNCHW : nn::ChannelLayout::kTokens;
}

}  // namespace

// Attention / XCA forward from act_[input]: q, k, v split into aux 0 ([3, N, H, T, D]), the core's
// output in aux 1, then merged into act_[i]. Saved for the backward: attention P (aux 2, only when
// `save`), XCA's norms (aux 2, 3) and P (aux 4, always: D×D per head).
void Model::attention_core(size_t i, bool save) {
  const NodeDesc& nd = desc_.nodes[i];
  const Tensor& in = act_[nd.inputs[0]];
  const int64_t N = in.size(0), T = in.size(1), H = nd.heads, D = nd.dim / nd.heads;
  const Tensor qkv = aux(i, 0, {3, N, H, T, D});
  nn::strided_copy(qkv_heads(in, H), qkv, 1.0f, false, ex_);
  const Tensor q = qkv.narrow(0, 0, 1).reshape({N, H, T, D});
  const Tensor k = qkv.narrow(0, 1, 1).reshape({N, H, T, D});
  const Tensor v = qkv.narrow(0, 2, 1).reshape({N, H, T, D});
  const Tensor out = aux(i, 1, {N, H, T, D});
  if (nd.kind == NodeKind::Attention) {
    const Tensor probs = save ? aux(i, 2, {N, H, T, T}) : Tensor();
    nn::attention_forward(q, k, v, out, probs, static_cast<float>(nd.scale), ex_);
    probs_saved_[i] = save;
  } else {
    nn::xca_forward(q, k, v, tensors_[nd.weight].reshape({H}), out, aux(i, 2, {N, H, D}), aux(i, 3, {N, H, D}),
                    aux(i, 4, {N, H, D, D}), ex_);
  }
  nn::strided_copy(out, out_heads(act_[i], H), 1.0f, false, ex_);
}

// The constant sin/cos table of EdgeNeXt's positional encoding (SPEC-BACKBONES §6.3) for an H×W map,
// [1, 2·hidden, H, W], computed in double on the host and cached per node.
const Tensor& Model::fourier_table(size_t i, int64_t h, int64_t w) {
  if (table_[i].defined() && table_hw_[i] == std::make_pair(h, w)) return table_[i];
  const NodeDesc& nd = desc_.nodes[i];
  const int64_t F = nd.hidden;
  std::vector<float> t(static_cast<size_t>(2 * F * h * w));
  const double two_pi = 2.0 * 3.14159265358979323846;
  for (int64_t c = 0; c < 2 * F; ++c) {
    const int64_t cc = c % F;  // channel within its half (y: rows, x: columns)
    const double tau = std::pow(nd.temperature, 2.0 * static_cast<double>(cc / 2) / static_cast<double>(F));
    for (int64_t r = 0; r < h; ++r) {
      for (int64_t q = 0; q < w; ++q) {
        const double pos = c < F ? two_pi * static_cast<double>(r + 1) / (static_cast<double>(h) + 1e-6)
                                 : two_pi * static_cast<double>(q + 1) / (static_cast<double>(w) + 1e-6);
        t[static_cast<size_t>((c * h + r) * w + q)] = static_cast<float>(cc % 2 == 0 ? std::sin(pos / tau) : std::cos(pos / tau));
      }
    }
  }
  Tensor host = Tensor::from_host(t.data(), t.size() * sizeof(float), {1, 2 * F, h, w}, DType::F32, Device::cpu());
  table_[i] = device_.is_cpu() ? host : host.to(device_);
  table_hw_[i] = {h, w};
  return table_[i];
}

void Model::forward_ext(size_t i, const Tensor& in, const Tensor& y) {
  const NodeDesc& nd = desc_.nodes[i];
  const Tensor none;
  const Tensor& w = nd.weight >= 0 ? tensors_[nd.weight] : none;
  const Tensor& b = nd.bias >= 0 ? tensors_[nd.bias] : none;
  const int64_t N = in.size(0);
  switch (nd.kind) {
    case NodeKind::Activation:
      nn::activation_forward(nd.act, in, y, ex_);
      break;
    case NodeKind::GlobalAvgPool:
      nn::global_avg_pool_forward(in, y.reshape({N, in.size(1)}), ex_);
      break;
    case NodeKind::Mul:
      nn::channel_mul_forward(in, act_[nd.inputs[1]].reshape({N, in.size(1)}), y, ex_);
      break;
    case NodeKind::LayerNorm: {
      const int64_t R = nn::layer_norm_rows(in.shape(), layout_of(nd));
      nn::layer_norm_forward(in, w, b, y, aux(i, 0, {R}), aux(i, 1, {R}), nd.eps, layout_of(nd), ex_);
      break;
    }
    case NodeKind::LayerScale:
      nn::layer_scale_forward(in, w, y, layout_of(nd), ex_);
      break;
    case NodeKind::Attention:
    case NodeKind::Xca:
      attention_core(i, training_);
      break;
    case NodeKind::ToTokens:
      nn::strided_copy(in.reshape({N, in.size(1), in.size(2) * in.size(3)}).transpose(1, 2), y, 1.0f, false, ex_);
      break;
    case NodeKind::ToMap:
      nn::strided_copy(in, y.reshape({N, in.size(2), in.size(1)}).transpose(1, 2), 1.0f, false, ex_);
      break;
    case NodeKind::PrependTokens: {
      const int64_t T = in.size(1), D = in.size(2);
      nn::strided_copy(in, y.narrow(1, nd.count, T), 1.0f, false, ex_);
      nn::strided_copy(w.expand({N, 1, D}), y.narrow(1, 0, 1), 1.0f, false, ex_);
      if (nd.count == 2) nn::strided_copy(b.expand({N, 1, D}), y.narrow(1, 1, 1), 1.0f, false, ex_);
      break;
    }
    case NodeKind::PosEmbed:
      nn::strided_copy(in, y, 1.0f, false, ex_);
      nn::strided_copy(w.expand({N, nd.tokens, nd.dim}), y, 1.0f, true, ex_);
      break;
    case NodeKind::FourierPosEmbed: {
      const int64_t h = in.size(2), wd = in.size(3);
      const Tensor& table = fourier_table(i, h, wd);
      const Tensor p = aux(i, 0, {1, nd.dim, h, wd});
      nn::conv2d_forward(table, w, b, p, nn::Conv2dParams(1, 0, 1), ex_);
      nn::strided_copy(p.reshape({1, nd.dim, h * wd}).transpose(1, 2).expand({N, h * wd, nd.dim}), y, 1.0f, false, ex_);
      break;
    }
    case NodeKind::TokenPool: {
      const int64_t T = in.size(1), D = in.size(2);
      if (nd.pool_mode == 0) {
        nn::strided_copy(in.narrow(1, nd.index, 1), y.reshape({N, 1, D}), 1.0f, false, ex_);
      } else {
        // mean over tokens index..T−1: as a GAP of the [N, D, T'] transpose
        const int64_t t = T - nd.index;
        const Tensor tr = aux(i, 0, {N, D, t});
        nn::strided_copy(in.narrow(1, nd.index, t).transpose(1, 2), tr, 1.0f, false, ex_);
        nn::global_avg_pool_forward(tr, y, ex_);
      }
      break;
    }
    case NodeKind::DropPath:
      nn::drop_path_forward(in, y, dropout_params(i), training_, ex_);
      break;
    case NodeKind::Concat: {
      int64_t off = 0;
      for (int j : nd.inputs) {
        const Tensor& x = act_[j];
        nn::strided_copy(x, y.narrow(1, off, x.size(1)), 1.0f, false, ex_);
        off += x.size(1);
      }
      break;
    }
    case NodeKind::Slice:
      nn::strided_copy(in.narrow(1, nd.start, nd.length), y, 1.0f, false, ex_);
      break;
    case NodeKind::Average: {
      const float a = static_cast<float>(1.0 / static_cast<double>(nd.inputs.size()));
      for (size_t k = 0; k < nd.inputs.size(); ++k) nn::strided_copy(act_[nd.inputs[k]], y, a, k > 0, ex_);
      break;
    }
    default:
      fail(Code::Internal, str(node_label(nd, i), " has no forward"));
  }
}

void Model::backward_ext(size_t i, const Tensor& g) {
  const NodeDesc& nd = desc_.nodes[i];
  const size_t j = nd.inputs[0];
  const Tensor& x = act_[j];
  const Tensor none;
  const Tensor& w = nd.weight >= 0 ? tensors_[nd.weight] : none;
  const Tensor& dw = nd.weight >= 0 ? grads_[nd.weight] : none;
  const Tensor& db = nd.bias >= 0 ? grads_[nd.bias] : none;
  const int64_t N = g.size(0);
  bool first = false;
  switch (nd.kind) {
    case NodeKind::Activation: {
      const Tensor dx = dx_begin(j, &first);
      if (dx.defined()) nn::activation_backward(nd.act, g, x, dx, ex_);
      dx_end(j, first, dx);
      break;
    }
    case NodeKind::GlobalAvgPool: {
      const DxSink sink = dx_sink(j, true);
      if (sink.t.defined()) nn::global_avg_pool_backward(g.reshape({N, x.size(1)}), sink.t, sink.accumulate, ex_);
      break;
    }
    case NodeKind::Mul: {
      const size_t jg = nd.inputs[1];
      const Tensor gate = act_[jg].reshape({N, x.size(1)});
      bool first_g = false;
      const Tensor dx = dx_begin(j, &first);
      const Tensor dg = dx_begin(jg, &first_g);
      nn::channel_mul_backward(g, x, gate, dx, dg.defined() ? dg.reshape({N, x.size(1)}) : dg, ex_);
      dx_end(j, first, dx);
      dx_end(jg, first_g, dg);
      break;
    }
    case NodeKind::LayerNorm: {
      const int64_t R = nn::layer_norm_rows(x.shape(), layout_of(nd));
      const Tensor dx = dx_begin(j, &first);
      nn::layer_norm_backward(g, x, w, aux(i, 0, {R}), aux(i, 1, {R}), dx, dw, db, layout_of(nd), ex_);
      dx_end(j, first, dx);
      break;
    }
    case NodeKind::LayerScale: {
      const Tensor dx = dx_begin(j, &first);
      nn::layer_scale_backward(g, x, w, dx, dw, layout_of(nd), ex_);
      dx_end(j, first, dx);
      break;
    }
    case NodeKind::Attention:
    case NodeKind::Xca: {
      const int64_t T = x.size(1), H = nd.heads, D = nd.dim / nd.heads;
      // An eval forward kept no P: run the core again, saving it.
      if (nd.kind == NodeKind::Attention && !probs_saved_[i]) attention_core(i, true);
      const Tensor qkv = aux(i, 0, {3, N, H, T, D});
      const Tensor q = qkv.narrow(0, 0, 1).reshape({N, H, T, D});
      const Tensor k = qkv.narrow(0, 1, 1).reshape({N, H, T, D});
      const Tensor v = qkv.narrow(0, 2, 1).reshape({N, H, T, D});
      const size_t base = nd.kind == NodeKind::Attention ? 3 : 5;
      const Tensor gout = aux(i, base, {N, H, T, D});
      nn::strided_copy(out_heads(g, H), gout, 1.0f, false, ex_);
      const bool want_dx = node_grad_[j].defined();
      const Tensor dqkv = want_dx ? aux(i, base + 1, {3, N, H, T, D}) : Tensor();
      const Tensor dq = want_dx ? dqkv.narrow(0, 0, 1).reshape({N, H, T, D}) : Tensor();
      const Tensor dk = want_dx ? dqkv.narrow(0, 1, 1).reshape({N, H, T, D}) : Tensor();
      const Tensor dv = want_dx ? dqkv.narrow(0, 2, 1).reshape({N, H, T, D}) : Tensor();
      if (nd.kind == NodeKind::Attention) {
        nn::attention_backward(gout, q, k, v, aux(i, 2, {N, H, T, T}), dq, dk, dv, static_cast<float>(nd.scale), ex_);
      } else {
        nn::xca_backward(gout, q, k, v, w.reshape({H}), aux(i, 2, {N, H, D}), aux(i, 3, {N, H, D}),
                         aux(i, 4, {N, H, D, D}), dq, dk, dv, dw.defined() ? dw.reshape({H}) : dw, ex_);
      }
      if (want_dx) {
        const DxSink sink = dx_sink(j, true);
        nn::strided_copy(dqkv, qkv_heads(sink.t, H), 1.0f, sink.accumulate, ex_);
      }
      break;
    }
    case NodeKind::ToTokens: {
      const DxSink sink = dx_sink(j, true);
      if (sink.t.defined()) {
        nn::strided_copy(g, sink.t.reshape({N, x.size(1), x.size(2) * x.size(3)}).transpose(1, 2), 1.0f,
                         sink.accumulate, ex_);
      }
      break;
    }
    case NodeKind::ToMap: {
      const DxSink sink = dx_sink(j, true);
      if (sink.t.defined()) {
        nn::strided_copy(g.reshape({N, x.size(2), x.size(1)}).transpose(1, 2), sink.t, 1.0f, sink.accumulate, ex_);
      }
      break;
    }
    case NodeKind::PrependTokens: {
      const int64_t T = x.size(1);
      if (dw.defined()) nn::sum_batch(g.narrow(1, 0, 1), dw, true, ex_);
      if (db.defined()) nn::sum_batch(g.narrow(1, 1, 1), db, true, ex_);
      const DxSink sink = dx_sink(j, true);
      if (sink.t.defined()) nn::strided_copy(g.narrow(1, nd.count, T), sink.t, 1.0f, sink.accumulate, ex_);
      break;
    }
    case NodeKind::PosEmbed:
      if (dw.defined()) nn::sum_batch(g, dw, true, ex_);
      accumulate_into(j, g);
      break;
    case NodeKind::FourierPosEmbed: {
      // No gradient reaches the input (read for its size only); the 1×1 conv learns from the table.
      const int64_t h = x.size(2), wd = x.size(3);
      const Tensor gsum = aux(i, 1, {h * wd, nd.dim});
      nn::sum_batch(g, gsum, false, ex_);
      const Tensor gp = aux(i, 2, {1, nd.dim, h, wd});
      nn::strided_copy(gsum.transpose(0, 1), gp.reshape({nd.dim, h * wd}), 1.0f, false, ex_);
      if (dw.defined()) nn::conv2d_backward_filter(fourier_table(i, h, wd), gp, dw, nn::Conv2dParams(1, 0, 1), ex_);
      if (db.defined()) nn::conv2d_backward_bias(gp, db, ex_);
      break;
    }
    case NodeKind::TokenPool: {
      if (nd.pool_mode == 2) {
        accumulate_into(j, g);
        break;
      }
      const int64_t T = x.size(1), D = x.size(2);
      const DxSink sink = dx_sink(j, false);
      if (!sink.t.defined()) break;
      if (nd.pool_mode == 0) {
        nn::strided_copy(g.reshape({N, 1, D}), sink.t.narrow(1, nd.index, 1), 1.0f, true, ex_);
      } else {
        const int64_t t = T - nd.index;
        const Tensor tr = aux(i, 1, {N, D, t});
        nn::global_avg_pool_backward(g, tr, false, ex_);
        nn::strided_copy(tr, sink.t.narrow(1, nd.index, t).transpose(1, 2), 1.0f, true, ex_);
      }
      break;
    }
    case NodeKind::DropPath: {
      const Tensor dx = dx_begin(j, &first);
      if (dx.defined()) nn::drop_path_backward(g, dx, dropout_params(i), last_training_, ex_);
      dx_end(j, first, dx);
      break;
    }
    case NodeKind::Concat: {
      int64_t off = 0;
      for (int jj : nd.inputs) {
        const int64_t c = shapes_[jj][1];
        const DxSink sink = dx_sink(jj, true);
        if (sink.t.defined()) nn::strided_copy(g.narrow(1, off, c), sink.t, 1.0f, sink.accumulate, ex_);
        off += c;
      }
      break;
    }
    case NodeKind::Slice: {
      const DxSink sink = dx_sink(j, nd.start == 0 && nd.length == x.size(1));
      if (sink.t.defined()) nn::strided_copy(g, sink.t.narrow(1, nd.start, nd.length), 1.0f, sink.accumulate, ex_);
      break;
    }
    case NodeKind::Average: {
      const float a = static_cast<float>(1.0 / static_cast<double>(nd.inputs.size()));
      for (int jj : nd.inputs) {
        const DxSink sink = dx_sink(jj, true);
        if (sink.t.defined()) nn::strided_copy(g, sink.t, a, sink.accumulate, ex_);
      }
      break;
    }
    default:
      fail(Code::Internal, str(node_label(nd, i), " has no backward"));
  }
}

namespace {
// FACECUDA_PROFILE=1: a developer aid. Each CPU forward prints, to stderr, the time per node kind
// (convolutions split by kernel size and depthwise or not), largest first. Off by default; never on
// a CUDA model (its layers are asynchronous).
bool profile_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("FACECUDA_PROFILE");
    return v != nullptr && v[0] != '\0' && v[0] != '0';
  }();
  return on;
}

std::string profile_key(const NodeDesc& nd) {
  if (nd.kind == NodeKind::Activation) return nn::activation_name(nd.act);
  if (nd.kind != NodeKind::Conv2d) return node_kind_name(nd.kind);
  const bool dw = nd.groups > 1 && nd.groups == nd.in_c;
  return std::string(dw ? "conv dw " : nd.groups > 1 ? "conv grouped " : "conv ") + std::to_string(nd.kernel) + "x" +
         std::to_string(nd.kernel) + " s" + std::to_string(nd.stride);
}
}  // namespace

Tensor Model::forward(const Tensor& x) {
  // Validate arguments
  FC_CHECK(x.defined(), InvalidArgument, "Expected a tensor for x");
  FC_CHECK(x.dtype() == DType::F32, InvalidArgument, "Expected a float32 x but received ", x.describe());
  FC_CHECK(x.device() == device_, InvalidArgument, "Expected x on ", device_.str(), " but received ", x.describe());
  FC_CHECK(x.is_contiguous(), InvalidArgument, "Expected a contiguous x but received ", x.describe());
  std::vector<std::vector<int64_t>> shapes = infer_shapes(x.shape());
  const int64_t n = shapes[0][0];
  for (size_t i = 1; i < desc_.nodes.size(); ++i) {
    const NodeDesc& nd = desc_.nodes[i];
    bool bn = nd.kind == NodeKind::BatchNorm1d || nd.kind == NodeKind::BatchNorm2d;
    if (!bn || !(training_ || nd.running_mean < 0)) continue;
    int64_t m = numel_of(shapes[i]) / nd.features;
    FC_CHECK(m > 1, InvalidArgument, node_label(nd, i), " needs more than 1 value per channel in training mode but receives ",
             shape_str(shapes[i]), ": use a batch of at least 2, or eval()");
  }

  // Run
  ensure_capacity(shapes);
  shapes_ = shapes;
  have_forward_ = false;  // until this forward completes
  input_ = x;
  act_[0] = x;
  last_training_ = training_;
  last_step_ = step_;
  const bool fold = !training_ && options_.fold_batch_norm;
  if (fold) refresh_folds();
  if (training_) folds_valid_ = false;  // the running statistics move
  last_folded_ = fold;
  last_fold_mode_ = fold;
  const bool profile = profile_enabled() && !device_.is_cuda();
  std::map<std::string, double> profile_ms;
  auto t_prev = std::chrono::steady_clock::now();
  for (size_t i = 1; i < desc_.nodes.size(); ++i) {
    const NodeDesc& nd = desc_.nodes[i];
    if (profile && i > 1) {
      const auto t = std::chrono::steady_clock::now();
      profile_ms[profile_key(desc_.nodes[i - 1])] += std::chrono::duration<double, std::milli>(t - t_prev).count();
      t_prev = t;
    }
    const Tensor& in = act_[nd.inputs[0]];
    if (is_view_node(nd)) {
      act_[i] = nd.kind == NodeKind::TokenMask ? in : nn::flatten(in);
      continue;
    }
    act_[i] = slice(act_buf_[i], n);
    if (fold && folded_in_[i] >= 0) continue;  // its layer wrote act_[i] already
    if (fold && conv_of_act_[i] >= 0) continue;  // its conv applied it (epilogue)
    if (fused(i, fold)) continue;               // its PReLU computes both (act_[i] stays unwritten)
    // A folded layer writes its BatchNorm's output directly (its own output is recomputed only if a
    // backward needs it).
    const bool folded_layer = fold && fold_bn_[i] >= 0;
    const int fused_act = fold ? act_of_conv_[i] : -1;
    const Tensor& y = fused_act >= 0 ? (act_[fused_act] = slice(act_buf_[fused_act], n))
                      : folded_layer ? (act_[fold_bn_[i]] = slice(act_buf_[fold_bn_[i]], n))
                                     : act_[i];
    const Tensor none;
    const Tensor& w = folded_layer ? fold_w_[i] : nd.weight >= 0 ? tensors_[nd.weight] : none;
    const Tensor& b = folded_layer ? fold_b_[i] : nd.bias >= 0 ? tensors_[nd.bias] : none;
    switch (nd.kind) {
      case NodeKind::Conv2d:
        conv_forward(i, in, w, b, y, fused_act >= 0 ? conv_epilogue_[i] : 0);
        break;
      case NodeKind::BatchNorm1d:
      case NodeKind::BatchNorm2d: {
        const nn::BatchNormOptions o = bn_options(nd);
        const Tensor& rm = nd.running_mean >= 0 ? tensors_[nd.running_mean] : none;
        const Tensor& rv = nd.running_var >= 0 ? tensors_[nd.running_var] : none;
        if (training_ || !rm.defined()) {
          nn::batch_norm_forward_train(in, w, b, training_ ? rm : none, training_ ? rv : none, y, save_mean_[i],
                                       save_invstd_[i], o, ex_);
          if (training_ && nd.num_batches_tracked >= 0) ++*tensors_[nd.num_batches_tracked].data_as<int64_t>();
        } else {
          nn::batch_norm_forward_eval(in, w, b, rm, rv, y, o, ex_);
        }
        break;
      }
      case NodeKind::PReLU: {
        const int j = bn_of_prelu_[i];
        if (j < 0 || !fused(static_cast<size_t>(j), fold)) {
          nn::prelu_forward(in, w, y, ex_);
          break;
        }
        const NodeDesc& bn = desc_.nodes[j];
        const nn::BatchNormOptions o = bn_options(bn);
        const Tensor& bx = act_[bn.inputs[0]];
        const Tensor& gamma = bn.weight >= 0 ? tensors_[bn.weight] : none;
        const Tensor& beta = bn.bias >= 0 ? tensors_[bn.bias] : none;
        const Tensor& rm = bn.running_mean >= 0 ? tensors_[bn.running_mean] : none;
        const Tensor& rv = bn.running_var >= 0 ? tensors_[bn.running_var] : none;
        if (training_ || !rm.defined()) {
          nn::batch_norm_prelu_forward_train(bx, gamma, beta, w, training_ ? rm : none, training_ ? rv : none, y,
                                             save_mean_[j], save_invstd_[j], o, ex_);
          if (training_ && bn.num_batches_tracked >= 0) ++*tensors_[bn.num_batches_tracked].data_as<int64_t>();
        } else {
          nn::batch_norm_prelu_forward_eval(bx, gamma, beta, w, rm, rv, y, o, ex_);
        }
        break;
      }
      case NodeKind::ReLU:
        nn::relu_forward(in, y, ex_);
        break;
      case NodeKind::Dropout:
        nn::dropout_forward(in, y, dropout_params(i), training_, ex_);
        break;
      case NodeKind::Linear:
        linear_forward(i, in, w, b, y);
        break;
      case NodeKind::Add:
        nn::add(in, act_[nd.inputs[1]], y, ex_);
        break;
      case NodeKind::Input:
      case NodeKind::Flatten:
        break;
      default:
        forward_ext(i, in, y);
        break;
    }
  }
  if (profile && desc_.nodes.size() > 1) {
    profile_ms[profile_key(desc_.nodes.back())] +=
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_prev).count();
    std::vector<std::pair<double, std::string>> rows;
    double total = 0;
    for (const auto& [k, v] : profile_ms) rows.emplace_back(v, k), total += v;
    std::sort(rows.rbegin(), rows.rend());
    std::fprintf(stderr, "facecuda profile: forward N=%lld %.2f ms\n", static_cast<long long>(n), total);
    for (const auto& [v, k] : rows) std::fprintf(stderr, "  %-22s %9.2f ms %5.1f%%\n", k.c_str(), v, 100 * v / total);
  }
  if (training_) ++step_;
  have_forward_ = true;
  const Tensor& out = act_[desc_.output];
  Tensor result = Tensor::empty(out.shape(), DType::F32, device_);
  copy_into(result, out);
  return result;
}

Tensor Model::backward(const Tensor& dy, bool want_input_grad) {
  // Validate arguments
  FC_CHECK(have_forward_, InvalidArgument, "backward() needs a completed forward() first");
  FC_CHECK(dy.defined(), InvalidArgument, "Expected a tensor for the output gradient");
  FC_CHECK(dy.dtype() == DType::F32 && dy.device() == device_, InvalidArgument, "Expected a float32 output gradient on ",
           device_.str(), " but received ", dy.describe());
  FC_CHECK(dy.shape() == shapes_[desc_.output], ShapeMismatch, "Expected an output gradient of shape ",
           shape_str(shapes_[desc_.output]), " (the last forward's output) but received ", shape_str(dy.shape()));

  // Run
  if (last_folded_) {
    recompute_folded_outputs();  // the BatchNorm backwards read their unfolded inputs
    last_folded_ = false;
  }
  ensure_grad_buffers();
  const int64_t n = shapes_[0][0];
  std::fill(grad_set_.begin(), grad_set_.end(), 0);
  for (size_t i = 1; i < desc_.nodes.size(); ++i) node_grad_[i] = slice(grad_buf_[i], n);
  Tensor dx_input = want_input_grad ? Tensor::empty(shapes_[0], DType::F32, device_) : Tensor();
  node_grad_[0] = dx_input;
  {
    copy_into(node_grad_[desc_.output], dy);  // handles a strided dy
    grad_set_[desc_.output] = 1;
  }
  const Tensor none;
  for (size_t i = desc_.nodes.size() - 1; i >= 1; --i) {
    if (!grad_set_[i]) continue;  // does not reach the output
    const NodeDesc& nd = desc_.nodes[i];
    const Tensor& g = node_grad_[i];
    // A fused BatchNorm → PReLU pair is differentiated at the PReLU, back to the BatchNorm's input.
    const int fused_bn = nd.kind == NodeKind::PReLU && bn_of_prelu_[i] >= 0 &&
                                 fused(static_cast<size_t>(bn_of_prelu_[i]), last_fold_mode_)
                             ? bn_of_prelu_[i]
                             : -1;
    const size_t j = fused_bn >= 0 ? desc_.nodes[fused_bn].inputs[0] : nd.inputs[0];
    const Tensor& x = act_[j];
    const bool want_dx = node_grad_[j].defined();
    // Where this node's dx goes: the input's gradient itself on the first contribution, else a
    // scratch buffer that is then added to it.
    const bool first = want_dx && !grad_set_[j];
    Tensor dx = !want_dx ? Tensor() : first ? node_grad_[j] : scratch_for(j);
    const Tensor& w = nd.weight >= 0 ? tensors_[nd.weight] : none;
    const Tensor& dw = nd.weight >= 0 ? grads_[nd.weight] : none;
    const Tensor& db = nd.bias >= 0 ? grads_[nd.bias] : none;
    bool wrote_dx = false;
    switch (nd.kind) {
      case NodeKind::Conv2d: {
        if (db.defined()) nn::conv2d_backward_bias(g, db, ex_);
        if (nd.asymmetric) {
          // The forward padded x into aux 0 and ran an unpadded conv: differentiate that conv, then
          // take the interior of the padded input's gradient.
          const nn::Conv2dParams p(nd.stride, 0, nd.groups);
          const std::vector<int64_t>& xs = shapes_[j];
          const std::vector<int64_t> ps = {xs[0], xs[1], xs[2] + nd.pad_t + nd.pad_b, xs[3] + nd.pad_l + nd.pad_r};
          const Tensor xp = aux(i, 0, ps);
          if (dw.defined()) nn::conv2d_backward_filter(xp, g, dw, p, ex_);
          if (want_dx) {
            const Tensor dxp = aux(i, 1, ps);
            nn::conv2d_backward_data(g, w, dxp, p, false, ex_);
            const DxSink sink = dx_sink(j, true);
            nn::strided_copy(dxp.narrow(2, nd.pad_t, xs[2]).narrow(3, nd.pad_l, xs[3]), sink.t, 1.0f, sink.accumulate,
                             ex_);
          }
          break;
        }
        nn::Conv2dParams p(nd.stride, nd.padding, nd.groups);
        if (dw.defined()) nn::conv2d_backward_filter(x, g, dw, p, ex_);
        if (want_dx) {
          nn::conv2d_backward_data(g, w, node_grad_[j], p, !first, ex_);  // accumulates in place
          grad_set_[j] = 1;
        }
        break;
      }
      case NodeKind::BatchNorm1d:
      case NodeKind::BatchNorm2d: {
        const nn::BatchNormOptions o = bn_options(nd);
        const Tensor& dgamma = nd.frozen_weight ? none : dw;
        if (last_training_ || nd.running_mean < 0) {
          nn::batch_norm_backward_train(g, x, w, save_mean_[i], save_invstd_[i], dx, dgamma, db, o, ex_);
        } else {
          nn::batch_norm_backward_eval(g, x, w, tensors_[nd.running_mean], tensors_[nd.running_var], dx, dgamma, db, o,
                                       ex_);
        }
        wrote_dx = want_dx;
        break;
      }
      case NodeKind::PReLU: {
        if (fused_bn < 0) {
          nn::prelu_backward(g, x, w, dx, dw, ex_);
          wrote_dx = want_dx;
          break;
        }
        const NodeDesc& bn = desc_.nodes[fused_bn];
        const nn::BatchNormOptions o = bn_options(bn);
        const Tensor& gamma = bn.weight >= 0 ? tensors_[bn.weight] : none;
        const Tensor& beta = bn.bias >= 0 ? tensors_[bn.bias] : none;
        const Tensor& dgamma = bn.weight >= 0 && !bn.frozen_weight ? grads_[bn.weight] : none;
        const Tensor& dbeta = bn.bias >= 0 ? grads_[bn.bias] : none;
        if (last_training_ || bn.running_mean < 0) {
          nn::batch_norm_prelu_backward_train(g, x, gamma, beta, w, save_mean_[fused_bn], save_invstd_[fused_bn], dx,
                                              dgamma, dbeta, dw, o, ex_);
        } else {
          nn::batch_norm_prelu_backward_eval(g, x, gamma, beta, w, tensors_[bn.running_mean], tensors_[bn.running_var],
                                             dx, dgamma, dbeta, dw, o, ex_);
        }
        wrote_dx = want_dx;
        break;
      }
      case NodeKind::ReLU:
        if (want_dx) nn::relu_backward(g, act_[i], dx, ex_);
        wrote_dx = want_dx;
        break;
      case NodeKind::Dropout:
        if (want_dx) nn::dropout_backward(g, dx, dropout_params(i), last_training_, ex_);
        wrote_dx = want_dx;
        break;
      case NodeKind::Linear: {
        // Tokens [N, T, in] run as [N·T, in].
        const int64_t in_c = shapes_[j].back();
        const int64_t rows = x.numel() / in_c;
        nn::linear_backward(g.reshape({rows, nd.out_c}), x.reshape({rows, in_c}), w,
                            dx.defined() ? dx.reshape({rows, in_c}) : dx, dw, db, ex_);
        wrote_dx = want_dx;
        break;
      }
      case NodeKind::Flatten:
      case NodeKind::TokenMask:
        accumulate_into(j, g);
        break;
      case NodeKind::Add:
        accumulate_into(j, g);
        accumulate_into(nd.inputs[1], g);
        break;
      case NodeKind::Input:
        break;
      default:
        backward_ext(i, g);
        break;
    }
    if (wrote_dx) {
      if (first) grad_set_[j] = 1;
      else nn::add(node_grad_[j], dx, node_grad_[j], ex_);
    }
  }
  if (want_input_grad && !grad_set_[0]) zero_fill(dx_input);
  node_grad_[0] = Tensor();
  return dx_input;
}

void Model::zero_grad() {
  for (Tensor& g : grads_) zero_fill(g);
}

}  // namespace fc
