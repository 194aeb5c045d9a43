// @file model.h
// @brief fc::Model: executes a backbone graph (lib/backbones/arch.ts: IResNet, MobileFaceNet, the
// second batch of SPEC-BACKBONES — MobileNetV3, EfficientNet, GhostNet, EdgeNeXt/EdgeFace, ViT, DeiT,
// insightface ViT — or any graph of the same node kinds) forward and backward with the layer ops of
// facecuda/layers.h, layers_ext.h and layers_attn.h.
//
// Second-batch nodes: tokens are [N, T, C] (channels last), maps [N, C, H, W]. Linear applies over the
// last axis ([N, in] or [N, T, in] as [N·T, in]). Attention/XCA nodes take the qkv projection
// [N, T, 3·C], split it into heads [3, N, H, T, D] by one strided copy (timm's reshape/permute), run
// the core and merge the heads back; attention keeps P for the backward only in training mode (a
// backward after an eval forward recomputes it). Drop path draws per sample from (seed ^ node, step)
// in training and is the identity in eval. A conv with asymmetric padding copies its input into a
// zero-padded buffer and runs unpadded. The Fourier positional encoding's table is a constant built
// on the host per map size; only its 1×1 projection learns. Token masking runs at ratio 0 only.
//
// A model is built from a ModelDesc: its tensors (parameters and buffers, each with a state-dict
// name, a shape and an init) and its nodes in execution (topological) order, node 0 the input. The
// model owns every parameter, every parameter gradient and every activation buffer:
//   - activations: one buffer per node (flatten is a view of its input), sized for the largest
//     batch seen so far and reused; a smaller batch runs on a leading slice of the same buffers.
//   - gradients: one buffer per node, allocated by the first backward at that capacity.
// Every node keeps its own output, so a backward reads the original inputs of every layer (no
// in-place forward).
//
// Semantics (PyTorch's):
//   - forward(x) in training mode: BatchNorm uses the batch statistics and updates running_mean /
//     running_var (momentum, unbiased variance) and num_batches_tracked; Dropout draws a mask from
//     (seed, node, step) and the step counter advances once per training forward. In eval mode:
//     running statistics, Dropout is the identity, no state changes.
//   - backward(dy) differentiates the last forward (in the mode it ran in). Parameter gradients
//     ACCUMULATE (+=) until zero_grad(); the input gradient is returned only when asked for.
//   - A BatchNorm with frozen_weight (IResNet's `features`) never gets a weight gradient; its weight
//     is a parameter without a gradient.
//   - A BatchNorm read only by a PReLU runs fused with it (nn::batch_norm_prelu_*: one pass; the
//     backward recomputes the BatchNorm output from its input and statistics), except in eval mode
//     when the BatchNorm is folded into its layer.
//   - Eval-mode BatchNorm folding (ModelOptions::fold_batch_norm, default on): in eval mode a
//     BatchNorm whose input is a conv2d or linear node read by nothing else is folded into that
//     layer (w·s, beta + (b − mean)·s, s = gamma/√(var + eps), computed in double by
//     nn::fold_batch_norm), so the layer writes the normalized output in one pass. The folded
//     weights are cached and rebuilt when the parameters may have changed: after set_training,
//     load_tensor, any call of the mutable tensor(i), and on every eval forward while a parameter's
//     storage is shared with a view outside the model (its reference count is above one). A
//     backward after a folded eval forward first recomputes the unfolded layer outputs it needs, so
//     gradients are those of the unfolded graph.
// Devices: CPU and CUDA (the layer ops dispatch on the tensors' device). Parameters, gradients and
// activations live on the model's device; the int64 num_batches_tracked counters live in host
// memory on every device (bookkeeping no kernel reads; a CUDA training step would otherwise wait on
// a device round trip per BatchNorm).
// Threads: every call runs on the caller's thread (the binding calls it on the device's queue
// thread, one job per forward/backward) and uses fc::ThreadPool through the CPU layer ops.
// Errors: fc::Error (INVALID_ARGUMENT, SHAPE_MISMATCH, CUDA_UNAVAILABLE / OUT_OF_MEMORY from the
// device) with a message naming the node or tensor; validation runs before anything is written.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "facecuda/device.h"
#include "facecuda/layers.h"
#include "facecuda/layers_ext.h"
#include "facecuda/tensor.h"

namespace fc {

enum class NodeKind {
  Input, Conv2d, BatchNorm2d, BatchNorm1d, PReLU, ReLU, Dropout, Linear, Flatten, Add,
  // The second backbone batch (SPEC-BACKBONES §9; lib/backbones/arch.ts's ZooArchNode):
  Activation, GlobalAvgPool, Mul, LayerNorm, LayerScale, Attention, Xca, ToTokens, ToMap, PrependTokens,
  PosEmbed, FourierPosEmbed, TokenPool, TokenMask, DropPath, Concat, Slice, Average
};

// arch.ts's op names: "input", "conv2d", "batchnorm2d", "batchnorm1d", "prelu", "relu", "dropout",
// "linear", "flatten", "add", the activations "relu6", "hardswish", "silu", "sigmoid", "gelu" and
// "hardsigmoid" (all NodeKind::Activation: `act` says which; hardsigmoid's form is the binding's to
// set), "globalavgpool", "mul", "layernorm", "layerscale", "attention", "xca", "totokens", "tomap",
// "prependtokens", "posembed", "fourierposembed", "tokenpool", "tokenmask", "droppath", "concat",
// "slice", "average"; false for anything else.
bool node_kind_from_name(const std::string& name, NodeKind* out, nn::Activation* act = nullptr);
const char* node_kind_name(NodeKind k);

// How a tensor starts. Values come from a counter-based generator: element i of tensor t is a pure
// function of (seed, t, i), so the init does not depend on threads or on the other tensors.
struct InitDesc {
  enum Kind { Constant, Normal, Uniform } kind = Constant;
  double a = 0;  // Constant: the value; Normal: the mean; Uniform: the low bound
  double b = 0;  // Normal: the standard deviation; Uniform: the high bound
};

struct TensorDesc {
  std::string name;            // the state-dict key, e.g. "layer1.0.bn1.running_mean"
  std::vector<int64_t> shape;  // PyTorch's shape; [] for num_batches_tracked
  DType dtype = DType::F32;    // F32, or I64 (num_batches_tracked)
  bool buffer = false;         // a BatchNorm buffer (no gradient) rather than a parameter
  bool trainable = true;       // parameters only: false for a frozen weight (no gradient)
  InitDesc init;
};

// One node. Only the attributes of its kind are read; tensor indices are into ModelDesc::tensors
// (-1: none).
struct NodeDesc {
  NodeKind kind = NodeKind::Input;
  std::string id;           // for messages, e.g. "layer1.0.conv1"
  std::vector<int> inputs;  // indices of earlier nodes (add: [residual, shortcut])
  // input: channels, height, width (height/width 0 = any size the graph accepts)
  int64_t channels = 0, height = 0, width = 0;
  // conv2d: in_c → out_c, square kernel; linear: in_c → out_c
  int64_t in_c = 0, out_c = 0, kernel = 1, stride = 1, padding = 0, groups = 1;
  // batchnorm: features, eps, momentum, frozen weight (affine when weight/bias are given)
  int64_t features = 0;
  double eps = 1e-5, momentum = 0.1;
  bool frozen_weight = false;
  // dropout, droppath
  double p = 0;
  // conv2d: asymmetric zero padding (top, bottom, left, right) instead of `padding` when asymmetric
  // (TF "same" padding of Keras-trained weights)
  bool asymmetric = false;
  int64_t pad_t = 0, pad_b = 0, pad_l = 0, pad_r = 0;
  // activation
  nn::Activation act = nn::Activation::kReLU6;
  // layernorm, layerscale: over the channels of an NCHW map (else the last axis)
  bool channels_layout = false;
  // attention, xca: dim (3·dim inputs → dim outputs), heads; attention: the QKᵀ scale.
  // prependtokens: dim, count (1 class token, 2 with the distillation token); posembed: tokens, dim;
  // fourierposembed: dim, hidden (channels per axis of the table), temperature
  int64_t dim = 0, heads = 0, count = 0, tokens = 0, hidden = 0;
  double scale = 0, temperature = 10000;
  // tokenpool: 0 token `index`, 1 mean of tokens index.., 2 flatten; slice: start, length (channels)
  int pool_mode = 0;
  int64_t index = 0, start = 0, length = 0;
  // tokenmask: the mask ratio (only 0, the identity, runs)
  double ratio = 0;
  // tensors. Besides the obvious owners: layerscale weight = gamma; xca weight = temperature
  // [heads, 1, 1]; prependtokens weight = cls_token, bias = dist_token; posembed weight = pos_embed;
  // tokenmask weight = mask_token; fourierposembed weight/bias = token_projection's.
  int weight = -1, bias = -1, running_mean = -1, running_var = -1, num_batches_tracked = -1;
};

struct ModelDesc {
  std::vector<TensorDesc> tensors;
  std::vector<NodeDesc> nodes;  // nodes[0] is the input
  int output = -1;              // the node whose output forward() returns
};

struct ModelOptions {
  uint64_t seed = 0;  // parameter init and Dropout masks
  int max_threads = 0;  // 0 = the whole pool
  // Convolutions and Linear layers: F32, TF32 (CUDA tensor cores) or BF16 (bf16 operands, fp32
  // accumulation and fp32 activations; master weights and BatchNorm statistics stay fp32).
  GemmPrecision precision = GemmPrecision::F32;
  bool fold_batch_norm = true;  // eval mode: fold conv/linear → BatchNorm pairs (see above)
};

class Model {
 public:
  // Validates the description (kinds, input references, tensor shapes against the attributes, the
  // output node) and initializes every tensor from its InitDesc (drawn on the host, then copied to
  // the device).
  Model(ModelDesc desc, const Device& device, const ModelOptions& options = ModelOptions());

  // The checks of the constructor alone (cheap; the binding runs them on the JS thread).
  static void validate(const ModelDesc& desc);

  // y = model(x), x float32 [N, C, H, W] contiguous on the model's device. Returns a new tensor
  // (not a view of the model's buffers), so later calls never change it.
  Tensor forward(const Tensor& x);

  // Backward of the last forward for the upstream gradient dy (the output's shape). Parameter
  // gradients accumulate; returns dL/dx (a new tensor) when want_input_grad, else an undefined Tensor.
  Tensor backward(const Tensor& dy, bool want_input_grad);

  void zero_grad();
  void set_training(bool training) {
    training_ = training;
    folds_valid_ = false;
  }
  bool training() const { return training_; }

  // Dropout's step counter: the next training forward uses step(); it then advances by one.
  uint64_t step() const { return step_; }
  void set_step(uint64_t step) { step_ = step; }
  uint64_t seed() const { return options_.seed; }

  size_t num_tensors() const { return tensors_.size(); }
  const TensorDesc& tensor_desc(size_t i) const { return desc_.tensors.at(i); }
  // The model's own storage: updating it in place updates the model (mutable access drops the
  // eval folding cache; read through tensor_view to keep it).
  Tensor& tensor(size_t i) {
    folds_valid_ = false;
    return tensors_.at(i);
  }
  const Tensor& tensor_view(size_t i) const { return tensors_.at(i); }
  // Copies new contents into tensor i: `bytes` of host memory (exactly its size), or a tensor of its
  // dtype and shape on any device. Throws INVALID_ARGUMENT / SHAPE_MISMATCH otherwise.
  void load_tensor(size_t i, const void* host, size_t bytes);
  void load_tensor(size_t i, const Tensor& src);
  // The gradient of tensor i, or an undefined Tensor for buffers and frozen parameters.
  Tensor& grad(size_t i) { return grads_.at(i); }
  // Index of a tensor by name, or -1.
  int index_of(const std::string& name) const;

  const Device& device() const { return device_; }
  const ModelDesc& desc() const { return desc_; }
  // Batch capacity of the activation buffers (0 before the first forward).
  int64_t capacity() const { return capacity_; }
  // Output shape of node i for the last forward's batch (empty before the first forward).
  const std::vector<int64_t>& node_shape(size_t i) const { return shapes_.at(i); }

 private:
  std::vector<std::vector<int64_t>> infer_shapes(const std::vector<int64_t>& x_shape) const;
  void ensure_capacity(const std::vector<std::vector<int64_t>>& shapes);
  void ensure_grad_buffers();
  Tensor slice(const Tensor& buf, int64_t n) const;
  // Adds `g` to node j's gradient, or writes it there when it has none yet in this backward.
  void accumulate_into(size_t j, const Tensor& g);
  Tensor scratch_for(size_t j);
  nn::DropoutParams dropout_params(size_t node) const;
  // Per-node saved state (LayerNorm statistics, attention's head-split q/k/v and probabilities, ...):
  // aux(i, k, shape) is buffer k of node i viewed as `shape`, grown (never shrunk) as needed. A
  // forward's buffers keep their contents until the next forward.
  Tensor aux(size_t i, size_t k, const std::vector<int64_t>& shape);
  // Input j's gradient in a backward: dx_begin gives the tensor to write (j's own gradient on the
  // first contribution, else scratch; undefined when j's gradient is not wanted), dx_end adds the
  // scratch in. dx_sink is for ops that add into a part of it: the tensor, and whether to accumulate
  // (zero-filled first when the op covers only part of it).
  Tensor dx_begin(size_t j, bool* first);
  void dx_end(size_t j, bool first, const Tensor& dx);
  struct DxSink {
    Tensor t;
    bool accumulate = false;
  };
  DxSink dx_sink(size_t j, bool covers_all);
  // The node ops of the second batch (model.cc).
  void conv_forward(size_t i, const Tensor& in, const Tensor& w, const Tensor& b, const Tensor& y, int epilogue = 0);
  void linear_forward(size_t i, const Tensor& in, const Tensor& w, const Tensor& b, const Tensor& y);
  void forward_ext(size_t i, const Tensor& in, const Tensor& y);
  void backward_ext(size_t i, const Tensor& g);
  void attention_core(size_t i, bool save);
  const Tensor& fourier_table(size_t i, int64_t h, int64_t w);
  // Eval folding: which pairs fold (constructor), rebuilding the folded weights when needed, and
  // the unfolded outputs a backward after a folded forward needs.
  void plan_folds();
  void refresh_folds();
  void recompute_folded_outputs();

  ModelDesc desc_;
  Device device_;
  ModelOptions options_;
  nn::ExecOptions ex_;
  bool training_ = true;
  uint64_t step_ = 0;

  std::vector<Tensor> tensors_, grads_;

  // Per node: output buffer (capacity batch), its slice for the current batch, per-sample shape.
  int64_t capacity_ = 0;
  std::vector<std::vector<int64_t>> shapes_;  // for the last forward's batch
  std::vector<Tensor> act_buf_, act_;
  std::vector<Tensor> save_mean_, save_invstd_;  // BatchNorm (per node; undefined elsewhere)
  std::vector<Tensor> grad_buf_, scratch_buf_;
  std::vector<Tensor> node_grad_;  // the current backward's views
  std::vector<char> grad_set_;
  Tensor input_;  // the last forward's x (conv1's backward reads it)
  std::vector<int> fold_bn_;    // per conv/linear node: the BatchNorm node folded into it in eval, or -1
  std::vector<int> folded_in_;  // per BatchNorm node: the layer it is folded into, or -1
  // Eval-mode conv → activation fusion (CPU, with the folds): per conv node the activation node it
  // computes too (or -1), per activation node the conv that computes it (or -1), and the epilogue.
  std::vector<int> act_of_conv_, conv_of_act_, conv_epilogue_;
  std::vector<Tensor> fold_w_, fold_b_;  // per folded layer: the folded weight and bias
  bool folds_valid_ = false;
  bool last_folded_ = false;     // the last forward ran the folded graph (cleared once recomputed)
  bool last_fold_mode_ = false;  // the last forward ran the folded graph (kept for its backward)
  // BatchNorm → PReLU pairs run as one fused op (nn::batch_norm_prelu_*) whenever the BatchNorm is
  // not folded into its layer in that forward: per BatchNorm node its PReLU, per PReLU node its
  // BatchNorm (-1: none).
  std::vector<int> prelu_of_bn_, bn_of_prelu_;
  bool fused(size_t bn, bool fold_mode) const {
    return prelu_of_bn_[bn] >= 0 && !(fold_mode && folded_in_[bn] >= 0);
  }
  std::vector<std::vector<Tensor>> aux_;
  std::vector<char> probs_saved_;   // attention: the last forward kept P (training) for its backward
  std::vector<Tensor> table_;       // fourierposembed: the constant table for table_hw_
  std::vector<std::pair<int64_t, int64_t>> table_hw_;
  bool have_forward_ = false;
  bool last_training_ = false;
  uint64_t last_step_ = 0;
};

}  // namespace fc
