// The differentiable ops of the U-Net's normalisation, activation and attention layers (issue 10),
// each one fused forward and one fused backward over the kernels in tensor/kernels/ (norm_*,
// softmax_*, attention_*, activation_*). Implemented in ops/nn_ops.cpp, every backward right
// below its forward. All accept Float32 (the fast vectorised kernels) and Float64 (the naive
// reference kernels, for gradcheck), inputs of rank up to 5.
#pragma once

#include <cstdint>

#include "tensor/random.h"
#include "tensor/tensor.h"

namespace ink {

// Group normalisation over x [B, C, *]: each of the `groups` groups of C / groups channels is
// normalised over its channels and positions, then y = xhat * weight[c] + bias[c]. weight and
// bias are [C] or undefined (no affine). groups must divide C.
Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& weight, const Tensor& bias,
                  double eps = 1e-5);

// Layer normalisation over the last dim of x [*, D]: y = xhat * weight + bias, weight and bias
// [D] or undefined.
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);

// x * sigmoid(x), elementwise.
Tensor silu(const Tensor& x);
// silu(group_norm(x, groups, weight, bias, eps)) as one op, the pre-activation of a ResBlock's
// convolutions. It keeps only x and the group statistics for backward, and its output can be
// remade from them (see Recompute in tensor.h), so a convolution that saves it costs no memory.
Tensor group_norm_silu(const Tensor& x, int64_t groups, const Tensor& weight, const Tensor& bias,
                       double eps = 1e-5);
// x * Phi(x) with Phi the standard normal CDF (the exact erf form, torch.nn.GELU()).
Tensor gelu(const Tensor& x);

// exp(x) / sum exp(x) along `dim` (negative counts from the end), shifted by the maximum so
// that +-1000 are exact. log_softmax returns the logarithm, computed without forming it.
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);

// In training mode zeroes each element with probability p (drawn in order from `gen`) and scales
// the rest by 1 / (1 - p); in eval mode (training false) or with p = 0 it returns x itself.
Tensor dropout(const Tensor& x, double p, Generator& gen, bool training);

// softmax(q k^T / sqrt(d)) v with masked keys left out, as one op with one backward.
//   q [B, h, Lq, d], k and v [B, h, Lk, d] -> [B, h, Lq, d].
//   key_mask [B, Lk], Float32 or Int64, nonzero = the key is valid; undefined = all valid; or
//   [B, Lq, Lk], a mask for each query (causal or block-diagonal patterns).
// A query row whose keys are all masked gets a zero output row and passes zero gradient (a
// defined result, never NaN). The key mask gets no gradient.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const Tensor& key_mask = Tensor());

}  // namespace ink
