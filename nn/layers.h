// The layers of the text-to-image model, with PyTorch's semantics, default initialisation,
// parameter names and print(model) text: Embedding, Linear, BatchNorm1d, ReLU, Sigmoid and
// Sequential.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nn/module.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

namespace ink::nn {

// What this object represents: a lookup table, torch.nn.Embedding. forward maps Int64 indices
// of any shape to rows of `weight`: [*] -> [*, embedding_dim]. The padding row (if any) starts
// at zero and never receives a gradient, so it stays zero in training. An index outside
// [0, num_embeddings) is an ink::Error.
class Embedding : public UnaryModule {
 public:
  // weight ~ N(0, 1) from `generator` (default_generator() when null). A negative padding_idx
  // counts from the end, as in PyTorch.
  Embedding(int64_t num_embeddings, int64_t embedding_dim,
            std::optional<int64_t> padding_idx = std::nullopt, Generator* generator = nullptr);

  Tensor forward(const Tensor& indices) override;
  std::string extra_repr() const override;

  int64_t num_embeddings() const { return num_embeddings_; }
  int64_t embedding_dim() const { return embedding_dim_; }
  std::optional<int64_t> padding_idx() const { return padding_idx_; }

  Tensor weight;  // [num_embeddings, embedding_dim]

 private:
  int64_t num_embeddings_;
  int64_t embedding_dim_;
  std::optional<int64_t> padding_idx_;
};

// What this object represents: an affine map y = x W^T + b, torch.nn.Linear. forward maps
// [*, in_features] -> [*, out_features].
class Linear : public UnaryModule {
 public:
  // weight and bias ~ U(-1/sqrt(in_features), 1/sqrt(in_features)), which is what PyTorch's
  // kaiming_uniform_(a=sqrt(5)) default amounts to. Without bias, `bias` stays undefined.
  Linear(int64_t in_features, int64_t out_features, bool bias = true,
         Generator* generator = nullptr);

  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }

  Tensor weight;  // [out_features, in_features]
  Tensor bias;    // [out_features], or undefined

 private:
  int64_t in_features_;
  int64_t out_features_;
};

// What this object represents: batch normalisation over the batch of an input [B, C],
// torch.nn.BatchNorm1d (always tracking running statistics). In training mode it normalises with
// the batch statistics and updates running_mean, running_var (with the unbiased variance) and
// num_batches_tracked; training needs B > 1. In eval mode it uses the running statistics, and
// B = 1 is fine. Training-mode forward and backward are one fused op (F::batch_norm).
// num_batches_tracked is PyTorch's: an Int64 scalar counting training-mode forwards (with or
// without grad mode; eval forwards do not count), saved in the state_dict. With momentum
// std::nullopt (PyTorch's momentum=None) the running statistics are the cumulative average of
// all batches: batch n is weighted 1 / n, n = num_batches_tracked after counting it.
// Unlike PyTorch, which counts before it checks the input, a call that fails changes nothing.
class BatchNorm1d : public UnaryModule {
 public:
  explicit BatchNorm1d(int64_t num_features, double eps = 1e-5, double momentum = 0.1,
                       bool affine = true);
  BatchNorm1d(int64_t num_features, double eps, std::nullopt_t cumulative_average,
              bool affine = true);

  Tensor forward(const Tensor& input) override;
  std::string extra_repr() const override;

  int64_t num_features() const { return num_features_; }
  double eps() const { return eps_; }
  // The momentum; std::nullopt for the cumulative average.
  std::optional<double> momentum() const { return momentum_; }
  bool affine() const { return affine_; }

  Tensor weight;               // [C], ones (undefined without affine)
  Tensor bias;                 // [C], zeros (undefined without affine)
  Tensor running_mean;         // [C], zeros
  Tensor running_var;          // [C], ones
  Tensor num_batches_tracked;  // [] Int64, training forward passes so far

 private:
  int64_t num_features_;
  double eps_;
  std::optional<double> momentum_;
  bool affine_;
};

// What this object represents: max(x, 0) elementwise, torch.nn.ReLU.
class ReLU : public UnaryModule {
 public:
  ReLU() : UnaryModule("ReLU") {}
  Tensor forward(const Tensor& input) override;
};

// What this object represents: 1 / (1 + exp(-x)) elementwise, torch.nn.Sigmoid.
class Sigmoid : public UnaryModule {
 public:
  Sigmoid() : UnaryModule("Sigmoid") {}
  Tensor forward(const Tensor& input) override;
};

// What this object represents: a chain of one-input modules applied in order,
// torch.nn.Sequential. The children are named "0", "1", ... in the order they were added, also
// those without parameters, so a parameter's name records its position
// ("decoder.3.weight").
class Sequential : public UnaryModule {
 public:
  Sequential() : UnaryModule("Sequential") {}
  explicit Sequential(const std::vector<std::shared_ptr<UnaryModule>>& modules);
  // std::make_shared<Sequential>(std::make_shared<Linear>(96, 256), std::make_shared<ReLU>())
  template <typename First, typename... Rest>
  explicit Sequential(std::shared_ptr<First> first, std::shared_ptr<Rest>... rest) : Sequential() {
    push_back(std::move(first));
    (push_back(std::move(rest)), ...);
  }

  // Appends `module` as child str(size()).
  void push_back(std::shared_ptr<UnaryModule> module);
  // Runs each child on the previous child's output.
  Tensor forward(const Tensor& input) override;

  size_t size() const { return modules_.size(); }
  // The child at `index`; throws ink::Error when out of range.
  const std::shared_ptr<UnaryModule>& operator[](size_t index) const;
  // The child at `index` as its own type; throws ink::Error when it is not a ModuleType.
  template <typename ModuleType>
  std::shared_ptr<ModuleType> at(size_t index) const {
    auto typed = std::dynamic_pointer_cast<ModuleType>((*this)[index]);
    check_type(typed != nullptr, index);
    return typed;
  }

 private:
  void check_type(bool ok, size_t index) const;
  std::vector<std::shared_ptr<UnaryModule>> modules_;
};

}  // namespace ink::nn
