// The differentiable ops. Each is implemented in ops/*.cpp with its backward right below its
// forward. Binary arithmetic follows NumPy broadcasting; gradients of broadcast inputs are
// reduced back to the input's shape by sum_to().
#pragma once

#include <optional>
#include <vector>

#include "tensor/tensor.h"
// group_norm, layer_norm, silu, gelu, softmax, log_softmax, dropout, attention (ops/nn_ops.cpp)
#include "tensor/nn_ops.h"

namespace ink {

// ---- elementwise arithmetic (broadcasting) ----
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, float b);
Tensor sub(const Tensor& a, float b);
Tensor mul(const Tensor& a, float b);
Tensor div(const Tensor& a, float b);
Tensor rsub(float a, const Tensor& b);  // a - b
Tensor rdiv(float a, const Tensor& b);  // a / b

Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);
Tensor operator+(const Tensor& a, float b);
Tensor operator-(const Tensor& a, float b);
Tensor operator*(const Tensor& a, float b);
Tensor operator/(const Tensor& a, float b);
Tensor operator+(float a, const Tensor& b);
Tensor operator-(float a, const Tensor& b);
Tensor operator*(float a, const Tensor& b);
Tensor operator/(float a, const Tensor& b);
Tensor operator-(const Tensor& a);

// ---- elementwise functions ----
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor pow(const Tensor& x, float exponent);
Tensor relu(const Tensor& x);
Tensor sigmoid(const Tensor& x);  // stable for large |x|: finite value and gradient at +-1000
Tensor tanh(const Tensor& x);
Tensor sin(const Tensor& x);
Tensor cos(const Tensor& x);
// Clamps to [min, max]; either bound may be absent. The gradient passes where min <= x <= max.
Tensor clamp(const Tensor& x, std::optional<float> min, std::optional<float> max);

// ---- matrix products ----
// 2-D [M, K] x [K, N] -> [M, N]; batched 3-D [B, M, K] x [B, K, N] -> [B, M, N];
// and 3-D x 2-D [B, M, K] x [K, N] -> [B, M, N]. More generally the leading (batch) dims of
// the two operands must be equal, or one operand is 2-D and is broadcast over the other's batch.
// The batch of products is split across threads by entry (results do not depend on the count).
Tensor matmul(const Tensor& a, const Tensor& b);
// op(a) x op(b) where op transposes the last two dims when asked, without copying: e.g.
// matmul(q, k, false, true) is q k^T for q [B, T, D] and k [B, T, D]. Same batch rules.
Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b);
// y = x W^T + b, as torch.nn.functional.linear: x [*, in], weight [out, in], bias [out] or
// undefined. Computed without materialising W^T.
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// ---- shape ops ----
// reshape/view share storage; one size may be -1 (inferred).
Tensor reshape(const Tensor& x, const Shape& shape);
Tensor view(const Tensor& x, const Shape& shape);
Tensor flatten(const Tensor& x, int64_t start_dim = 0, int64_t end_dim = -1);
Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1);      // copies
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);  // copies
Tensor unsqueeze(const Tensor& x, int64_t dim);
Tensor squeeze(const Tensor& x, int64_t dim);  // a no-op when that size is not 1, as PyTorch
Tensor cat(const std::vector<Tensor>& tensors, int64_t dim);
// The slice [start, start + length) of x along dim (a copy, like transpose; any dtype).
// start may be negative (counted from the end). The backward pads the gradient with zeros.
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
// Consecutive slices of split_size along dim (the last one may be smaller), as torch.split.
std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim = 0);
// Slices of the given sizes along dim; the sizes must add up to x.size(dim).
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim = 0);
// `chunks` slices of ceil(size / chunks) along dim, as torch.chunk (it may return fewer).
std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim = 0);
// Broadcasts x to `shape` (materialised copy); the backward is sum_to.
Tensor expand(const Tensor& x, const Shape& shape);

// ---- reductions ----
Tensor sum(const Tensor& x);
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
// Max along one dim. values is differentiable (the gradient goes to the first argmax);
// indices is an Int64 tensor.
struct MaxResult {
  Tensor values;
  Tensor indices;
};
MaxResult max(const Tensor& x, int64_t dim, bool keepdim = false);
// Sums `grad` over broadcast dims so that it has `shape` (the inverse of broadcasting).
Tensor sum_to(const Tensor& grad, const Shape& shape);

// ---- indexing ----
// Rows of weight [V, D] picked by Int64 `indices` of any shape -> [*indices.shape, D].
// The backward scatter-adds, so repeated ids sum; the padding row (if given) gets no gradient.
// An index outside [0, V) is an ink::Error.
Tensor embedding(const Tensor& weight, const Tensor& indices,
                 std::optional<int64_t> padding_idx = std::nullopt);

// ---- fused ops (kernels in tensor/kernels/) ----
// Batch normalisation of input [B, C] over the batch, as torch.nn.functional.batch_norm.
//   training: normalises with the batch mean and the biased batch variance. When running_mean /
//     running_var (Float32 buffers) are given they are updated in place with
//       running = (1 - momentum) * running + momentum * batch_statistic,
//     using the unbiased variance (var * B / (B - 1)) for running_var, as PyTorch does.
//     Needs B > 1. The backward is the full batch-statistics gradient.
//   eval: normalises with running_mean / running_var (both required); B may be 1.
// weight (gamma) and bias (beta) are [C], or both undefined for no affine transform.
Tensor batch_norm(const Tensor& input, const Tensor& running_mean, const Tensor& running_var,
                  const Tensor& weight, const Tensor& bias, bool training, double momentum = 0.1,
                  double eps = 1e-5);
// mean((input - target)^2) over all elements, as torch.nn.functional.mse_loss with reduction
// "mean". The shapes must be equal (no broadcasting). Returns a scalar (shape []).
Tensor mse_loss(const Tensor& input, const Tensor& target);

// ---- convolution and resampling (NCHW, as PyTorch; tensor/ops/conv.cpp) ----
// 2-D cross-correlation: x [B, C, H, W], weight [O, C / groups, kH, kW], bias [O] or undefined
// -> [B, O, HO, WO] with HO = (H + 2 padding - dilation (kH - 1) - 1) / stride + 1 (and WO
// likewise), zero padding on every side. groups > 1 is an ink::Error for now.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
              int64_t stride = 1, int64_t padding = 0, int64_t dilation = 1, int64_t groups = 1);
// Nearest-neighbour upsampling of [B, C, H, W] by an integer factor -> [B, C, H s, W s].
Tensor upsample_nearest2d(const Tensor& x, int64_t scale = 2);
// conv2d(upsample_nearest2d(x, 2), weight, bias, 1, 1) for a 3x3 weight [O, C, 3, 3], computed
// at x's resolution as four 2x2 convolutions, one per output pixel phase (16 instead of 36
// multiply-adds per output pixel and channel; tensor/kernels/resample_2d.h) -> [B, O, 2H, 2W].
// Equal to the composition up to rounding (the 3x3 taps are summed before they multiply).
Tensor upsample_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
// Average over non-overlapping kernel x kernel windows (stride = kernel, no padding, rows and
// columns past the last whole window dropped, as PyTorch) -> [B, C, H / k, W / k].
Tensor avg_pool2d(const Tensor& x, int64_t kernel = 2);

// ---- selection (tensor/ops/indexing.cpp) ----
// Slices of x along `dim` picked by the 1-D Int64 `indices` (repeats allowed; their gradients
// sum). An index outside [0, x.size(dim)) is an ink::Error.
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& indices);
// Elementwise mask ? a : b over the broadcast of the three shapes. The mask is Float32 or Int64,
// nonzero meaning true; it gets no gradient.
Tensor where(const Tensor& mask, const Tensor& a, const Tensor& b);
// x with `value` wherever the mask (broadcast to x's shape) is nonzero.
Tensor masked_fill(const Tensor& x, const Tensor& mask, float value);
// Tiles x: repeats[d] copies along dim d, as torch.Tensor.repeat (more repeats than dims adds
// leading dims).
Tensor repeat(const Tensor& x, const std::vector<int64_t>& repeats);

// ---- non-differentiable helpers ----
// True when both tensors have the same shape and every element is within
// atol + rtol * |b| (NaNs never match).
bool allclose(const Tensor& a, const Tensor& b, float rtol = 1e-5f, float atol = 1e-8f);

}  // namespace ink
