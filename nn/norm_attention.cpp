// GroupNorm, LayerNorm, SiLU, GELU, Dropout, Identity and Attention: initialisation, forward and
// the hyper-parameters print(model) shows. The differentiable work is done by the fused ops
// (tensor/ops/nn_ops.cpp); the attention weights an AttentionObserver asks for are recomputed
// here in plain loops.
#include "nn/norm_attention.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "tensor/autograd.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace ink::nn {

namespace {
std::string shape_or_undefined(const Tensor& t) {
  return t.defined() ? shape_str(t.shape()) : std::string("an undefined tensor");
}

thread_local AttentionObserver* current_observer = nullptr;

// P = softmax_k(q . k / sqrt(d)) over the valid keys, in double, as plain loops: only for looking
// at (the fused op keeps its own copy for the backward and does not hand it out).
//   q [B, h, L, d], k [B, h, Lc, d] (contiguous), key_mask [B, Lc], [B, L, Lc] or undefined
//   -> [R, h, L, Lc] Float32 for the first R rows (R = B when negative), 0 at masked keys, a
//   zero row when every key is masked.
Tensor softmax_weights(const Tensor& q, const Tensor& k, const Tensor& key_mask,
                       int64_t rows = -1) {
  const int64_t B = q.size(0), H = q.size(1), L = q.size(2), d = q.size(3), Lc = k.size(2);
  const int64_t R = rows < 0 ? B : std::min(rows, B);
  const bool per_query = key_mask.defined() && key_mask.dim() == 3;
  std::vector<uint8_t> valid(static_cast<size_t>(per_query ? B * L * Lc : B * Lc), 1);
  if (key_mask.defined()) {
    INK_CHECK(
        (key_mask.dim() == 2 && key_mask.size(0) == B && key_mask.size(1) == Lc) ||
            (per_query && key_mask.size(0) == B && key_mask.size(1) == L && key_mask.size(2) == Lc),
        "Attention: key_mask must be [{}, {}] or [{}, {}, {}], got {}", B, Lc, B, L, Lc,
        shape_str(key_mask.shape()));
    if (key_mask.dtype() == DType::Int64) {
      const int64_t* m = key_mask.data_i64();
      for (size_t i = 0; i < valid.size(); ++i) valid[i] = m[i] != 0;
    } else {
      INK_CHECK(key_mask.dtype() == DType::Float32,
                "Attention: key_mask must be Float32 or Int64, got {}",
                dtype_name(key_mask.dtype()));
      const float* m = key_mask.data();
      for (size_t i = 0; i < valid.size(); ++i) valid[i] = m[i] != 0.0f;
    }
  }
  Tensor out = empty({R, H, L, Lc});
  const float* qp = q.data();
  const float* kp = k.data();
  float* o = out.data();
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  std::vector<double> scores(static_cast<size_t>(Lc));
  for (int64_t b = 0; b < R; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const float* kh = kp + (b * H + h) * Lc * d;
      for (int64_t i = 0; i < L; ++i) {
        const uint8_t* ok = valid.data() + (per_query ? (b * L + i) * Lc : b * Lc);
        const float* qi = qp + ((b * H + h) * L + i) * d;
        double peak = -INFINITY;
        for (int64_t j = 0; j < Lc; ++j) {
          if (!ok[j]) continue;
          double dot = 0.0;
          for (int64_t c = 0; c < d; ++c) dot += static_cast<double>(qi[c]) * kh[j * d + c];
          scores[j] = dot * scale;
          peak = std::max(peak, scores[j]);
        }
        double total = 0.0;
        for (int64_t j = 0; j < Lc; ++j) {
          scores[j] = ok[j] ? std::exp(scores[j] - peak) : 0.0;
          total += scores[j];
        }
        float* row = o + ((b * H + h) * L + i) * Lc;
        for (int64_t j = 0; j < Lc; ++j) {
          row[j] = total > 0.0 ? static_cast<float>(scores[j] / total) : 0.0f;
        }
      }
    }
  }
  return out;
}
}  // namespace

AttentionObserverScope::AttentionObserverScope(AttentionObserver* observer)
    : previous_(std::exchange(current_observer, observer)) {}

AttentionObserverScope::~AttentionObserverScope() {
  current_observer = previous_;
}

AttentionObserver* AttentionObserverScope::current() {
  return current_observer;
}

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

Tensor GroupNorm::forward_silu(const Tensor& input) {
  INK_CHECK(input.defined() && input.dim() >= 2 && input.size(1) == num_channels_,
            "GroupNorm: expected input of shape [B, {}, *], got {}", num_channels_,
            shape_or_undefined(input));
  return group_norm_silu(input, num_groups_, weight, bias, eps_);
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

namespace {
void check_attention_inputs(const Tensor& x, const Tensor& context, int64_t query_dim,
                            int64_t context_dim) {
  INK_CHECK(x.defined() && x.dim() == 3 && x.size(2) == query_dim,
            "Attention: expected x of shape [B, L, {}], got {}", query_dim, shape_or_undefined(x));
  INK_CHECK(context.dim() == 3 && context.size(2) == context_dim && context.size(0) == x.size(0),
            "Attention: expected context of shape [{}, Lc, {}] for x {}, got {}", x.size(0),
            context_dim, shape_str(x.shape()), shape_str(context.shape()));
}
}  // namespace

Tensor Attention::forward(const Tensor& x, const Tensor& context_in, const Tensor& key_mask) {
  const Tensor& context = context_in.defined() ? context_in : x;
  check_attention_inputs(x, context, query_dim_, context_dim_);
  const int64_t B = x.size(0), L = x.size(1), Lc = context.size(1), d = query_dim_ / heads_;
  // [B, L, dim] -> [B, heads, L, d]
  auto split_heads = [&](const Tensor& t, int64_t length) {
    return permute(reshape(t, {B, length, heads_, d}), {0, 2, 1, 3});
  };
  const Tensor q = split_heads(to_q->forward(x), L);
  const Tensor k = split_heads(to_k->forward(context), Lc);
  const Tensor v = split_heads(to_v->forward(context), Lc);
  const Tensor heads_out = scaled_dot_product_attention(q, k, v, key_mask);  // [B, heads, L, d]
  if (AttentionObserver* observer = current_observer) {
    if (const int64_t rows = observer->rows_wanted(*this, B); rows > 0) {
      const NoGradGuard no_grad;
      observer->record(*this, softmax_weights(q.detach(), k.detach(), key_mask, rows));
    }
  }
  return to_out->forward(reshape(permute(heads_out, {0, 2, 1, 3}), {B, L, query_dim_}));
}

Tensor Attention::attention_weights(const Tensor& x, const Tensor& context_in,
                                    const Tensor& key_mask) {
  const NoGradGuard no_grad;
  const Tensor& context = context_in.defined() ? context_in : x;
  check_attention_inputs(x, context, query_dim_, context_dim_);
  const int64_t B = x.size(0), L = x.size(1), Lc = context.size(1), d = query_dim_ / heads_;
  auto split_heads = [&](const Tensor& t, int64_t length) {
    return permute(reshape(t, {B, length, heads_, d}), {0, 2, 1, 3});
  };
  return softmax_weights(split_heads(to_q->forward(x), L), split_heads(to_k->forward(context), Lc),
                         key_mask);
}

}  // namespace ink::nn
