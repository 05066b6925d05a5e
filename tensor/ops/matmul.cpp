// Matrix products: matmul (2-D, batched 3-D, 3-D x 2-D) and linear (x W^T + b).
// Legend: B = batch, M = rows of the left operand, K = shared dim, N = columns of the right.
// All products go through kernels::sgemm; the backward uses its transposed layouts, so no
// transposed copy is ever materialised.
#include "tensor/kernels/sgemm.h"
#include "tensor/ops/ops_internal.h"

namespace ink {

using namespace detail;
using kernels::Trans;

namespace {

// C[b] = A[b] * B[b] for each of `batch` matrices (a_stride/b_stride 0 broadcast an operand).
void batched_nn(int64_t batch, int64_t M, int64_t N, int64_t K, const float* A, int64_t a_stride,
                const float* B, int64_t b_stride, float* C) {
  for (int64_t b = 0; b < batch; ++b) {
    kernels::sgemm(Trans::N, Trans::N, M, N, K, 1.0f, A + b * a_stride, K, B + b * b_stride, N,
                   0.0f, C + b * M * N, N);
  }
}

Tensor matmul_2d(const Tensor& a, const Tensor& b) {
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  Tensor out = empty({M, N});
  batched_nn(1, M, N, K, a.data(), 0, b.data(), 0, out.data());
  // dA = dC B^T [M, K];  dB = A^T dC [K, N]
  // dA needs only B and dB only A, so each operand is saved only when the other needs a gradient.
  return record_op(out, "matmul", {a, b},
                   [a = b.requires_grad() ? SavedTensor(a) : SavedTensor(),
                    b = a.requires_grad() ? SavedTensor(b) : SavedTensor(), M, K,
                    N](const Tensor& g, const GradMask& needs) {
                     Tensor ga, gb;
                     if (needs[0]) {
                       ga = empty({M, K});
                       kernels::sgemm(Trans::N, Trans::T, M, K, N, 1.0f, g.data(), N,
                                      b.get().data(), N, 0.0f, ga.data(), K);
                     }
                     if (needs[1]) {
                       gb = empty({K, N});
                       kernels::sgemm(Trans::T, Trans::N, K, N, M, 1.0f, a.get().data(), K,
                                      g.data(), N, 0.0f, gb.data(), N);
                     }
                     return std::vector<Tensor>{ga, gb};
                   });
}

Tensor matmul_3d(const Tensor& a, const Tensor& b) {
  const int64_t B = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2);
  Tensor out = empty({B, M, N});
  batched_nn(B, M, N, K, a.data(), M * K, b.data(), K * N, out.data());
  // per batch: dA = dC B^T, dB = A^T dC
  return record_op(out, "bmm", {a, b},
                   [a = b.requires_grad() ? SavedTensor(a) : SavedTensor(),
                    b = a.requires_grad() ? SavedTensor(b) : SavedTensor(), B, M, K,
                    N](const Tensor& g, const GradMask& needs) {
                     Tensor ga, gb;
                     if (needs[0]) {
                       ga = empty({B, M, K});
                       const float* pb = b.get().data();
                       for (int64_t i = 0; i < B; ++i) {
                         kernels::sgemm(Trans::N, Trans::T, M, K, N, 1.0f, g.data() + i * M * N, N,
                                        pb + i * K * N, N, 0.0f, ga.data() + i * M * K, K);
                       }
                     }
                     if (needs[1]) {
                       gb = empty({B, K, N});
                       const float* pa = a.get().data();
                       for (int64_t i = 0; i < B; ++i) {
                         kernels::sgemm(Trans::T, Trans::N, K, N, M, 1.0f, pa + i * M * K, K,
                                        g.data() + i * M * N, N, 0.0f, gb.data() + i * K * N, N);
                       }
                     }
                     return std::vector<Tensor>{ga, gb};
                   });
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  check_float(a, "matmul");
  check_float(b, "matmul");
  const auto& sa = a.shape();
  const auto& sb = b.shape();
  if (sa.size() == 2 && sb.size() == 2) {
    INK_CHECK(sa[1] == sb[0], "matmul: shapes {} and {} cannot be multiplied ({} != {})",
              shape_str(sa), shape_str(sb), sa[1], sb[0]);
    return matmul_2d(a, b);
  }
  if (sa.size() == 3 && sb.size() == 3) {
    INK_CHECK(sa[0] == sb[0], "matmul: batch sizes differ in shapes {} and {} ({} != {})",
              shape_str(sa), shape_str(sb), sa[0], sb[0]);
    INK_CHECK(sa[2] == sb[1], "matmul: shapes {} and {} cannot be multiplied ({} != {})",
              shape_str(sa), shape_str(sb), sa[2], sb[1]);
    return matmul_3d(a, b);
  }
  if (sa.size() == 3 && sb.size() == 2) {
    INK_CHECK(sa[2] == sb[0], "matmul: shapes {} and {} cannot be multiplied ({} != {})",
              shape_str(sa), shape_str(sb), sa[2], sb[0]);
    // [B, M, K] x [K, N] is one [B*M, K] x [K, N] product.
    return reshape(matmul_2d(reshape(a, {sa[0] * sa[1], sa[2]}), b), {sa[0], sa[1], sb[1]});
  }
  INK_FAIL(
      "matmul: expected 2-D or 3-D operands (2-D x 2-D, 3-D x 3-D or 3-D x 2-D), got shapes "
      "{} and {}",
      shape_str(sa), shape_str(sb));
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_float(x, "linear");
  check_float(weight, "linear");
  INK_CHECK(weight.dim() == 2, "linear: weight must be 2-D [out_features, in_features], got {}",
            shape_str(weight.shape()));
  INK_CHECK(x.dim() >= 1, "linear: input must have at least one dim, got a scalar");
  const int64_t out_features = weight.size(0), in_features = weight.size(1);
  INK_CHECK(x.size(-1) == in_features,
            "linear: input {} and weight {} cannot be multiplied (input features {} != weight "
            "in_features {})",
            shape_str(x.shape()), shape_str(weight.shape()), x.size(-1), in_features);
  if (bias.defined()) {
    check_float(bias, "linear");
    INK_CHECK(bias.shape() == Shape{out_features},
              "linear: bias shape {} does not match out_features {} of weight {}",
              shape_str(bias.shape()), out_features, shape_str(weight.shape()));
  }
  const int64_t rows = x.numel() / in_features;
  Shape out_shape = x.shape();
  out_shape.back() = out_features;
  Tensor out = empty(out_shape);
  float* y = out.data();
  float beta = 0.0f;
  if (bias.defined()) {  // start from the bias rows and accumulate the product onto them
    const float* pb = bias.data();
    for (int64_t r = 0; r < rows; ++r) std::copy(pb, pb + out_features, y + r * out_features);
    beta = 1.0f;
  }
  // y [R, out] = x [R, in] * W^T
  kernels::sgemm(Trans::N, Trans::T, rows, out_features, in_features, 1.0f, x.data(), in_features,
                 weight.data(), in_features, beta, y, out_features);

  std::vector<Tensor> inputs = {x, weight};
  if (bias.defined()) inputs.push_back(bias);
  // dx = dy W;  dW = dy^T x;  db = sum of dy over rows
  return record_op(
      out, "linear", std::move(inputs),
      [x_shape = x.shape(), x = weight.requires_grad() ? SavedTensor(x) : SavedTensor(),
       w = x.requires_grad() ? SavedTensor(weight) : SavedTensor(), has_bias = bias.defined(), rows,
       in_features, out_features](const Tensor& g, const GradMask& needs) {
        std::vector<Tensor> grads(has_bias ? 3 : 2);
        if (needs[0]) {  // the first layer's input usually needs no gradient
          grads[0] = empty(x_shape);
          kernels::sgemm(Trans::N, Trans::N, rows, in_features, out_features, 1.0f, g.data(),
                         out_features, w.get().data(), in_features, 0.0f, grads[0].data(),
                         in_features);
        }
        if (needs[1]) {
          grads[1] = empty({out_features, in_features});
          kernels::sgemm(Trans::T, Trans::N, out_features, in_features, rows, 1.0f, g.data(),
                         out_features, x.get().data(), in_features, 0.0f, grads[1].data(),
                         in_features);
        }
        if (needs[2]) grads[2] = sum_to(g, {out_features});
        return grads;
      });
}

}  // namespace ink
