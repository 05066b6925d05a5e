// The normalisation, activation and attention layers of the diffusion U-Net (issue 10), with
// PyTorch's semantics, default initialisation, state_dict names and print(model) text:
// GroupNorm, LayerNorm, SiLU, GELU, Dropout, Identity and Attention; and AttentionObserver, an
// opt-in look at Attention's softmax weights (the attention view of `inkgrad serve`).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "nn/layers.h"
#include "nn/module.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

namespace ink::nn {

// What this object represents: group normalisation, torch.nn.GroupNorm. forward normalises an
// input [B, C, *] over each group of C / groups channels and every position, then applies a
// per-channel affine. groups must divide channels.
class GroupNorm : public UnaryModule {
 public:
  // weight = ones, bias = zeros (PyTorch's default, affine=True).
  GroupNorm(int64_t num_groups, int64_t num_channels, double eps = 1e-5);

  Tensor forward(const Tensor& input) override;
  // silu(forward(input)) as one op (group_norm_silu): the same values, and far less memory kept
  // for backward when a convolution follows.
  Tensor forward_silu(const Tensor& input);
  std::string extra_repr() const override;

  int64_t num_groups() const { return num_groups_; }
  int64_t num_channels() const { return num_channels_; }
  double eps() const { return eps_; }

  Tensor weight;  // [C], ones
  Tensor bias;    // [C], zeros

 private:
  int64_t num_groups_;
  int64_t num_channels_;
  double eps_;
};

// What this object represents: layer normalisation over the last dim, torch.nn.LayerNorm with a
// one-element normalized_shape: [*, dim] -> [*, dim].
class LayerNorm : public UnaryModule {
 public:
  // weight = ones, bias = zeros (elementwise_affine=True).
  explicit LayerNorm(int64_t dim, double eps = 1e-5);

  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;

  int64_t dim() const { return dim_; }
  double eps() const { return eps_; }

  Tensor weight;  // [dim], ones
  Tensor bias;    // [dim], zeros

 private:
  int64_t dim_;
  double eps_;
};

// What this object represents: x * sigmoid(x) elementwise, torch.nn.SiLU.
class SiLU : public UnaryModule {
 public:
  SiLU() : UnaryModule("SiLU") {}
  Tensor forward(const Tensor& input) override;
};

// What this object represents: x * Phi(x) elementwise (the exact erf form), torch.nn.GELU().
class GELU : public UnaryModule {
 public:
  GELU() : UnaryModule("GELU") {}
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override { return "approximate='none'"; }
};

// What this object represents: torch.nn.Dropout. In training mode each element is zeroed with
// probability p and the rest are scaled by 1 / (1 - p); in eval mode it is the identity. The
// random draws come from `generator` (default_generator() when null), which must outlive the
// layer.
class Dropout : public UnaryModule {
 public:
  explicit Dropout(double p = 0.5, Generator* generator = nullptr);
  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;
  double p() const { return p_; }

 private:
  double p_;
  Generator* generator_;
};

// What this object represents: the identity, torch.nn.Identity (a placeholder in a Sequential or
// a skip connection without a projection).
class Identity : public UnaryModule {
 public:
  Identity() : UnaryModule("Identity") {}
  Tensor forward(const Tensor& input) override { return input; }
};

// What this object represents: multi-head scaled dot-product attention with separate
// projections, as in Stable Diffusion's CrossAttention: queries from x, keys and values from a
// context (x itself for self-attention), padding keys masked out.
//   x [B, L, query_dim], context [B, Lc, context_dim], key_mask [B, Lc] (nonzero = valid),
//   [B, L, Lc] (a mask for each query) or undefined -> [B, L, query_dim].
// The feature dim is split into `heads` heads of query_dim / heads ([B, L, dim] ->
// [B, heads, L, d]). A query whose context keys are all masked gets a zero attention output
// (then to_out's bias), never NaN.
class Attention : public Module {
 public:
  Attention(int64_t query_dim, int64_t context_dim, int64_t heads, Generator* generator = nullptr);

  // An undefined context means self-attention (context = x).
  Tensor forward(const Tensor& x, const Tensor& context = Tensor(),
                 const Tensor& key_mask = Tensor());
  Tensor operator()(const Tensor& x, const Tensor& context = Tensor(),
                    const Tensor& key_mask = Tensor()) {
    return forward(x, context, key_mask);
  }

  int64_t query_dim() const { return query_dim_; }
  int64_t context_dim() const { return context_dim_; }
  int64_t heads() const { return heads_; }

  // The softmax weights forward would use for these inputs: [B, heads, L, Lc], each query's
  // probabilities over the context keys (0 at masked keys; a query whose keys are all masked
  // gets zeros), computed in double from the same projections. No graph is recorded. For
  // looking at what attends where; forward computes the same only for an AttentionObserver on
  // this thread that watches the layer.
  Tensor attention_weights(const Tensor& x, const Tensor& context = Tensor(),
                           const Tensor& key_mask = Tensor());

  std::shared_ptr<Linear> to_q;    // query_dim -> query_dim
  std::shared_ptr<Linear> to_k;    // context_dim -> query_dim
  std::shared_ptr<Linear> to_v;    // context_dim -> query_dim
  std::shared_ptr<Linear> to_out;  // query_dim -> query_dim

 private:
  int64_t query_dim_;
  int64_t context_dim_;
  int64_t heads_;
};

// What this object represents: a listener for the attention weights of Attention layers, for
// visualisation (the cross-attention maps of a generation). While one is installed on a thread
// (AttentionObserverScope), each Attention::forward on that thread asks rows_wanted(layer, B);
// for R > 0 it also computes the softmax weights of its first R batch rows, [R, heads, L, Lc]
// (as attention_weights does), and passes them to record(layer, weights). forward's own result
// is unchanged, and without an observer it does no extra work beyond one thread-local read. Per
// thread, so several threads may sample one model at once, each with its own observer (or none).
class AttentionObserver {
 public:
  virtual ~AttentionObserver() = default;
  // How many leading rows of a batch of B to record for `layer`: 0 (not watched) to B.
  virtual int64_t rows_wanted(const Attention& layer, int64_t batch) const = 0;
  // weights: [R, heads, L, Lc] Float32, a fresh tensor the observer may keep.
  virtual void record(const Attention& layer, const Tensor& weights) = 0;
};

// Installs `observer` (which must outlive the scope; null: none) on this thread and restores the
// previous one when it ends.
class AttentionObserverScope {
 public:
  explicit AttentionObserverScope(AttentionObserver* observer);
  ~AttentionObserverScope();
  AttentionObserverScope(const AttentionObserverScope&) = delete;
  AttentionObserverScope& operator=(const AttentionObserverScope&) = delete;
  // The observer installed on this thread, or null.
  static AttentionObserver* current();

 private:
  AttentionObserver* previous_;
};

}  // namespace ink::nn
