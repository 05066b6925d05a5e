// Embedding, Linear, BatchNorm1d, ReLU, Sigmoid and Sequential: initialisation, forward, and the
// hyper-parameters print(model) shows. The differentiable work is done by ink ops and the fused
// ops in nn/functional.cpp.
#include "nn/layers.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "nn/functional.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace ink::nn {

namespace {

const char* python_bool(bool value) {
  return value ? "True" : "False";
}

Generator& generator_or_default(Generator* generator) {
  return generator ? *generator : default_generator();
}

}  // namespace

// ---- Embedding ----

Embedding::Embedding(int64_t num_embeddings, int64_t embedding_dim,
                     std::optional<int64_t> padding_idx, Generator* generator)
    : UnaryModule("Embedding"),
      num_embeddings_(num_embeddings),
      embedding_dim_(embedding_dim),
      padding_idx_(padding_idx) {
  INK_CHECK(num_embeddings > 0 && embedding_dim > 0,
            "Embedding: num_embeddings and embedding_dim must be positive, got {} and {}",
            num_embeddings, embedding_dim);
  if (padding_idx_) {
    INK_CHECK(*padding_idx_ >= -num_embeddings && *padding_idx_ < num_embeddings,
              "Embedding: padding_idx {} must be within num_embeddings {}", *padding_idx_,
              num_embeddings);
    if (*padding_idx_ < 0) *padding_idx_ += num_embeddings;
  }
  Tensor w = empty({num_embeddings, embedding_dim});
  Generator& gen = generator_or_default(generator);
  float* data = w.data();
  for (int64_t i = 0; i < w.numel(); ++i) data[i] = gen.normal();
  if (padding_idx_) {
    std::fill_n(data + *padding_idx_ * embedding_dim, embedding_dim, 0.0f);
  }
  weight = register_parameter("weight", w);
}

Tensor Embedding::forward(const Tensor& indices) {
  INK_CHECK(indices.defined() && indices.dtype() == DType::Int64,
            "Embedding: indices must be an Int64 tensor, got {}",
            indices.defined() ? dtype_name(indices.dtype()) : "an undefined tensor");
  return embedding(weight, indices, padding_idx_);
}

std::string Embedding::extra_repr() const {
  std::string out = fmt::format("{}, {}", num_embeddings_, embedding_dim_);
  if (padding_idx_) out += fmt::format(", padding_idx={}", *padding_idx_);
  return out;
}

// ---- Linear ----

Linear::Linear(int64_t in_features, int64_t out_features, bool with_bias, Generator* generator)
    : UnaryModule("Linear"), in_features_(in_features), out_features_(out_features) {
  INK_CHECK(in_features > 0 && out_features > 0,
            "Linear: in_features and out_features must be positive, got {} and {}", in_features,
            out_features);
  Generator& gen = generator_or_default(generator);
  const float bound = static_cast<float>(1.0 / std::sqrt(static_cast<double>(in_features)));
  auto init = [&](const Shape& shape) {
    Tensor t = empty(shape);
    float* data = t.data();
    for (int64_t i = 0; i < t.numel(); ++i) data[i] = gen.uniform(-bound, bound);
    return t;
  };
  weight = register_parameter("weight", init({out_features, in_features}));
  bias = register_parameter("bias", with_bias ? init({out_features}) : Tensor());
}

Tensor Linear::forward(const Tensor& input) {
  INK_CHECK(input.defined() && input.dim() >= 1 && input.size(-1) == in_features_,
            "Linear: expected input of shape [*, {}], got {}", in_features_,
            input.defined() ? shape_str(input.shape()) : std::string("an undefined tensor"));
  return linear(input, weight, bias);
}

std::string Linear::extra_repr() const {
  return fmt::format("in_features={}, out_features={}, bias={}", in_features_, out_features_,
                     python_bool(bias.defined()));
}

// ---- BatchNorm1d ----

BatchNorm1d::BatchNorm1d(int64_t num_features, double eps, double momentum, bool affine)
    : BatchNorm1d(num_features, eps, std::nullopt, affine) {
  momentum_ = momentum;
}

BatchNorm1d::BatchNorm1d(int64_t num_features, double eps, std::nullopt_t, bool affine)
    : UnaryModule("BatchNorm1d"), num_features_(num_features), eps_(eps), affine_(affine) {
  INK_CHECK(num_features > 0, "BatchNorm1d: num_features must be positive, got {}", num_features);
  weight = register_parameter("weight", affine ? ones({num_features}) : Tensor());
  bias = register_parameter("bias", affine ? zeros({num_features}) : Tensor());
  running_mean = register_buffer("running_mean", zeros({num_features}));
  running_var = register_buffer("running_var", ones({num_features}));
  num_batches_tracked = register_buffer("num_batches_tracked", zeros({}, DType::Int64));
}

Tensor BatchNorm1d::forward(const Tensor& input) {
  INK_CHECK(input.defined() && input.dim() == 2 && input.size(1) == num_features_,
            "BatchNorm1d: expected input of shape [B, {}], got {}", num_features_,
            input.defined() ? shape_str(input.shape()) : std::string("an undefined tensor"));
  if (is_training()) {
    INK_CHECK(input.size(0) > 1,
              "BatchNorm1d: expected more than 1 value per channel when training, got input of "
              "shape {}",
              shape_str(input.shape()));
  }
  const bool training = is_training();
  const int64_t batches = std::as_const(num_batches_tracked).data_i64()[0] + (training ? 1 : 0);
  // PyTorch's exponential_average_factor: the momentum, or 1 / n for the cumulative average.
  const double factor = momentum_ ? *momentum_ : 1.0 / static_cast<double>(batches);
  Tensor output = functional::batch_norm(input, running_mean, running_var, weight, bias, training,
                                         factor, eps_);
  // Counted once the batch was used, so that an input the op refuses (a wrong dtype) leaves the
  // count as it was, like the running statistics.
  if (training) num_batches_tracked.data_i64()[0] = batches;
  return output;
}

std::string BatchNorm1d::extra_repr() const {
  return fmt::format("{}, eps={}, momentum={}, affine={}, track_running_stats=True", num_features_,
                     python_float_repr(eps_),
                     momentum_ ? python_float_repr(*momentum_) : std::string("None"),
                     python_bool(affine_));
}

// ---- ReLU, Sigmoid ----

Tensor ReLU::forward(const Tensor& input) {
  return relu(input);
}

Tensor Sigmoid::forward(const Tensor& input) {
  return sigmoid(input);
}

// ---- Sequential ----

Sequential::Sequential(const std::vector<std::shared_ptr<UnaryModule>>& modules) : Sequential() {
  for (const auto& module : modules) push_back(module);
}

void Sequential::push_back(std::shared_ptr<UnaryModule> module) {
  INK_CHECK(module != nullptr, "Sequential: cannot add a null module at index {}", modules_.size());
  register_module(std::to_string(modules_.size()), module);
  modules_.push_back(std::move(module));
}

Tensor Sequential::forward(const Tensor& input) {
  Tensor x = input;
  for (const auto& module : modules_) x = module->forward(x);
  return x;
}

const std::shared_ptr<UnaryModule>& Sequential::operator[](size_t index) const {
  INK_CHECK(index < modules_.size(), "Sequential: index {} is out of range for {} modules", index,
            modules_.size());
  return modules_[index];
}

void Sequential::check_type(bool ok, size_t index) const {
  INK_CHECK(ok, "Sequential: module {} is a {}, not the requested type", index,
            modules_[index]->type_name());
}

}  // namespace ink::nn
