// GroupNorm, LayerNorm, SiLU, GELU, Dropout, Identity and Attention: initialisation, forward and
// the hyper-parameters print(model) shows. The differentiable work is done by the fused ops
// (tensor/ops/nn_ops.cpp).
#include "nn/norm_attention.h"

#include <fmt/format.h>

#include "tensor/error.h"
#include "tensor/ops.h"

namespace ink::nn {

namespace {
std::string shape_or_undefined(const Tensor& t) {
  return t.defined() ? shape_str(t.shape()) : std::string("an undefined tensor");
}
}  // namespace

// ---- GroupNorm ----

GroupNorm::GroupNorm(int64_t num_groups, int64_t num_channels, double eps)
    : UnaryModule("GroupNorm"), num_groups_(num_groups), num_channels_(num_channels), eps_(eps) {
  INK_CHECK(num_groups > 0 && num_channels > 0,
            "GroupNorm: num_groups and num_channels must be positive, got {} and {}", num_groups,
            num_channels);
  INK_CHECK(num_channels % num_groups == 0,
            "GroupNorm: num_channels {} is not divisible by num_groups {}", num_channels,
            num_groups);
  weight = register_parameter("weight", ones({num_channels}));
  bias = register_parameter("bias", zeros({num_channels}));
}

Tensor GroupNorm::forward(const Tensor& input) {
  INK_CHECK(input.defined() && input.dim() >= 2 && input.size(1) == num_channels_,
            "GroupNorm: expected input of shape [B, {}, *], got {}", num_channels_,
            shape_or_undefined(input));
  return group_norm(input, num_groups_, weight, bias, eps_);
}

std::string GroupNorm::extra_repr() const {
  return fmt::format("{}, {}, eps={}, affine=True", num_groups_, num_channels_,
                     python_float_repr(eps_));
}

// ---- LayerNorm ----

LayerNorm::LayerNorm(int64_t dim, double eps) : UnaryModule("LayerNorm"), dim_(dim), eps_(eps) {
  INK_CHECK(dim > 0, "LayerNorm: dim must be positive, got {}", dim);
  weight = register_parameter("weight", ones({dim}));
  bias = register_parameter("bias", zeros({dim}));
}

Tensor LayerNorm::forward(const Tensor& input) {
  INK_CHECK(input.defined() && input.dim() >= 1 && input.size(-1) == dim_,
            "LayerNorm: expected input of shape [*, {}], got {}", dim_, shape_or_undefined(input));
  return layer_norm(input, weight, bias, eps_);
}

std::string LayerNorm::extra_repr() const {
  return fmt::format("({},), eps={}, elementwise_affine=True", dim_, python_float_repr(eps_));
}

// ---- activations, dropout ----

Tensor SiLU::forward(const Tensor& input) {
  return silu(input);
}

Tensor GELU::forward(const Tensor& input) {
  return gelu(input);
}

Dropout::Dropout(double p, Generator* generator)
    : UnaryModule("Dropout"), p_(p), generator_(generator) {
  INK_CHECK(p >= 0.0 && p <= 1.0, "Dropout: probability has to be between 0 and 1, but got {}", p);
}

Tensor Dropout::forward(const Tensor& input) {
  return dropout(input, p_, generator_ ? *generator_ : default_generator(), is_training());
}

std::string Dropout::extra_repr() const {
  return fmt::format("p={}, inplace=False", python_float_repr(p_));
}

// ---- Attention ----

Attention::Attention(int64_t query_dim, int64_t context_dim, int64_t heads, Generator* generator)
    : Module("Attention"), query_dim_(query_dim), context_dim_(context_dim), heads_(heads) {
  INK_CHECK(query_dim > 0 && context_dim > 0 && heads > 0,
            "Attention: query_dim, context_dim and heads must be positive, got {}, {} and {}",
            query_dim, context_dim, heads);
  INK_CHECK(query_dim % heads == 0, "Attention: query_dim {} is not divisible by heads {}",
            query_dim, heads);
  to_q = register_module("to_q", std::make_shared<Linear>(query_dim, query_dim, true, generator));
  to_k = register_module("to_k", std::make_shared<Linear>(context_dim, query_dim, true, generator));
  to_v = register_module("to_v", std::make_shared<Linear>(context_dim, query_dim, true, generator));
  to_out =
      register_module("to_out", std::make_shared<Linear>(query_dim, query_dim, true, generator));
}

Tensor Attention::forward(const Tensor& x, const Tensor& context_in, const Tensor& key_mask) {
  const Tensor& context = context_in.defined() ? context_in : x;
  INK_CHECK(x.defined() && x.dim() == 3 && x.size(2) == query_dim_,
            "Attention: expected x of shape [B, L, {}], got {}", query_dim_, shape_or_undefined(x));
  INK_CHECK(context.dim() == 3 && context.size(2) == context_dim_ && context.size(0) == x.size(0),
            "Attention: expected context of shape [{}, Lc, {}] for x {}, got {}", x.size(0),
            context_dim_, shape_str(x.shape()), shape_str(context.shape()));
  const int64_t B = x.size(0), L = x.size(1), Lc = context.size(1), d = query_dim_ / heads_;
  // [B, L, dim] -> [B, heads, L, d]
  auto split_heads = [&](const Tensor& t, int64_t length) {
    return permute(reshape(t, {B, length, heads_, d}), {0, 2, 1, 3});
  };
  const Tensor q = split_heads(to_q->forward(x), L);
  const Tensor k = split_heads(to_k->forward(context), Lc);
  const Tensor v = split_heads(to_v->forward(context), Lc);
  const Tensor heads_out = scaled_dot_product_attention(q, k, v, key_mask);  // [B, heads, L, d]
  return to_out->forward(reshape(permute(heads_out, {0, 2, 1, 3}), {B, L, query_dim_}));
}

}  // namespace ink::nn
