// Matrix products: matmul (2-D, batched, either operand transposed without a copy) and linear
// (x W^T + b).
// Legend: B = batch entries (the product of the leading dims), M = rows of op(A),
// K = the shared dim, N = columns of op(B). op(X) is X or X^T, read in place (Trans::T).
// Float32 products go through kernels::sgemm; Float64 ones (gradcheck) through the reference
// loop. The backward uses the transposed layouts too, so no transposed copy is ever made.
#include "tensor/kernels/gemm_reference.h"
#include "tensor/kernels/sgemm.h"
#include "tensor/ops/ops_internal.h"

namespace ink {

using namespace detail;
using kernels::Trans;

namespace {

// C = op(A) op(B) + beta C, in the element type of the pointers.
void gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
          const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  kernels::sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}
void gemm(Trans ta, Trans tb, int64_t M, int64_t N, int64_t K, const double* A, int64_t lda,
          const double* B, int64_t ldb, double beta, double* C, int64_t ldc) {
  kernels::gemm_reference<double>(ta, tb, M, N, K, 1.0, A, lda, B, ldb, beta, C, ldc);
}

Trans flip(Trans t) {
  return t == Trans::N ? Trans::T : Trans::N;
}

// One operand as the kernels see it: a base pointer, the element stride between batch entries
// (0 when a 2-D operand is broadcast over the batch), its layout and leading dim.
template <class T>
struct Operand {
  const T* data;
  int64_t batch_stride;
  Trans trans;
  int64_t ld;
  const T* at(int64_t b) const { return data + b * batch_stride; }
};

// Minimum work per thread when a batch of products is split across threads.
constexpr double kMinFlopsPerThread = 1.0e6;

// C[b] = op(X[b]) op(Y[b]) for b in [0, batch), C[b] at C + b * c_stride. Each product runs on
// one thread (the batch entries are split across threads), so the result does not depend on the
// thread count; kernels::sgemm runs single-threaded inside the parallel region and computes the
// same bits as outside it (it splits C, never K).
template <class T>
void batched_gemm(int64_t batch, int64_t M, int64_t N, int64_t K, const Operand<T>& X,
                  const Operand<T>& Y, T* C, int64_t c_stride, int64_t ldc) {
  if (batch == 1) {
    gemm(X.trans, Y.trans, M, N, K, X.at(0), X.ld, Y.at(0), Y.ld, T{0}, C, ldc);
    return;
  }
  const double flops = std::max(1.0, 2.0 * static_cast<double>(M) * N * K);
  const auto grain = static_cast<int64_t>(std::max(1.0, kMinFlopsPerThread / flops));
  parallel_for(0, batch, grain, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      gemm(X.trans, Y.trans, M, N, K, X.at(b), X.ld, Y.at(b), Y.ld, T{0}, C + b * c_stride, ldc);
    }
  });
}

// C = sum_b op(X[b]) op(Y[b]): the gradient of an operand broadcast over the batch. The batch
// is summed in order (beta = 1 after the first entry), each product on all threads.
template <class T>
void summed_gemm(int64_t batch, int64_t M, int64_t N, int64_t K, const Operand<T>& X,
                 const Operand<T>& Y, T* C, int64_t ldc) {
  if (batch == 0) std::fill(C, C + M * ldc, T{0});  // an empty batch: the sum is zero
  for (int64_t b = 0; b < batch; ++b) {
    gemm(X.trans, Y.trans, M, N, K, X.at(b), X.ld, Y.at(b), Y.ld, b == 0 ? T{0} : T{1}, C, ldc);
  }
}

// The shapes of one matmul call, checked.
struct MatmulShape {
  Shape out;
  int64_t batch = 1;  // product of the output's leading dims (1 when both operands are 2-D)
  int64_t M = 0, N = 0, K = 0;
  bool a_batched = false, b_batched = false;
  // [B, M, K] x [K, N] with A not transposed is one [B*M, K] x [K, N] product.
  bool folded = false;
};

std::string operand_str(const Shape& s, bool transposed) {
  return shape_str(s) + (transposed ? "^T" : "");
}

MatmulShape matmul_shape(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  const Shape& sa = a.shape();
  const Shape& sb = b.shape();
  INK_CHECK(sa.size() >= 2 && sb.size() >= 2,
            "matmul: expected 2-D or 3-D operands, or batches of matrices [*, M, K] and "
            "[*, K, N] (a 2-D operand is broadcast over the batch), got shapes {} and {}",
            shape_str(sa), shape_str(sb));
  check_same_dtype(a, b, "matmul");
  MatmulShape m;
  const int64_t ra = static_cast<int64_t>(sa.size()), rb = static_cast<int64_t>(sb.size());
  m.M = ta ? sa[ra - 1] : sa[ra - 2];
  const int64_t ka = ta ? sa[ra - 2] : sa[ra - 1];
  const int64_t kb = tb ? sb[rb - 1] : sb[rb - 2];
  m.N = tb ? sb[rb - 2] : sb[rb - 1];
  INK_CHECK(ka == kb, "matmul: shapes {} and {} cannot be multiplied ({} != {})",
            operand_str(sa, ta), operand_str(sb, tb), ka, kb);
  m.K = ka;
  const Shape batch_a(sa.begin(), sa.end() - 2), batch_b(sb.begin(), sb.end() - 2);
  m.a_batched = !batch_a.empty();
  m.b_batched = !batch_b.empty();
  if (m.a_batched && m.b_batched) {
    INK_CHECK(batch_a == batch_b, "matmul: batch sizes differ in shapes {} and {} ({} != {})",
              shape_str(sa), shape_str(sb),
              batch_a.size() == 1 ? std::to_string(batch_a[0]) : shape_str(batch_a),
              batch_b.size() == 1 ? std::to_string(batch_b[0]) : shape_str(batch_b));
  }
  m.out = m.a_batched ? batch_a : batch_b;
  m.batch = shape_numel(m.out);
  m.out.push_back(m.M);
  m.out.push_back(m.N);
  check_shape(m.out, "matmul");
  m.folded = m.a_batched && !m.b_batched && !ta;
  return m;
}

Tensor matmul_impl(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  check_float(a, "matmul");
  check_float(b, "matmul");
  MatmulShape m = matmul_shape(a, b, ta, tb);
  const DType dtype = a.dtype();
  const int64_t M = m.M, N = m.N, K = m.K;
  // Leading dims of A and B as stored, and the element strides between batch entries.
  const int64_t lda = ta ? M : K, ldb = tb ? K : N;
  const int64_t a_stride = m.a_batched ? M * K : 0, b_stride = m.b_batched ? K * N : 0;
  // A folded product runs as one 2-D product with M' = B * M rows.
  const int64_t batch = m.folded ? 1 : m.batch;
  const int64_t Mx = m.folded ? m.batch * M : M;
  const Trans trans_a = ta ? Trans::T : Trans::N, trans_b = tb ? Trans::T : Trans::N;

  Tensor out = empty(m.out, dtype);
  dispatch_floating(dtype, "matmul", [&](auto zero) {
    using T = decltype(zero);
    batched_gemm<T>(batch, Mx, N, K, {a.data_ptr<T>(), a_stride, trans_a, lda},
                    {b.data_ptr<T>(), b_stride, trans_b, ldb}, out.data_ptr<T>(), Mx * N, N);
  });

  // With C = op(A) op(B), per batch entry:
  //   dop(A) = dC op(B)^T  (so dA = dC op(B)^T, or op(B) dC^T when A is stored transposed)
  //   dop(B) = op(A)^T dC  (so dB = op(A)^T dC, or dC^T op(A) when B is stored transposed)
  // An operand broadcast over the batch sums its gradient over the batch entries.
  // Each operand is saved only when the other one needs a gradient.
  const bool batched_op = m.a_batched && m.b_batched;
  return record_op(out, batched_op ? "bmm" : "matmul", {a, b},
                   [a = b.requires_grad() ? SavedTensor(a) : SavedTensor(),
                    b = a.requires_grad() ? SavedTensor(b) : SavedTensor(), sa = a.shape(),
                    sb = b.shape(), batch, Mx, N, K, lda, ldb, a_stride, b_stride, trans_a, trans_b,
                    ta, tb](const Tensor& g, const GradMask& needs) {
                     Tensor ga, gb;
                     dispatch_floating(g.dtype(), "matmul_backward", [&](auto zero) {
                       using T = decltype(zero);
                       const T* pg = g.data_ptr<T>();
                       const int64_t g_stride = Mx * N;
                       const Operand<T> dC{pg, g_stride, Trans::N, N};
                       const Operand<T> dC_t{pg, g_stride, Trans::T, N};
                       if (needs[0]) {
                         ga = empty(sa, g.dtype());
                         const T* pb = b.get().template data_ptr<T>();
                         T* out_a = ga.template data_ptr<T>();
                         if (!ta) {  // dA [Mx, K] = dC [Mx, N] op(B)^T [N, K]
                           const Operand<T> B_t{pb, b_stride, flip(trans_b), ldb};
                           if (a_stride != 0 || batch == 1) {
                             batched_gemm<T>(batch, Mx, K, N, dC, B_t, out_a, Mx * K, K);
                           } else {
                             summed_gemm<T>(batch, Mx, K, N, dC, B_t, out_a, K);
                           }
                         } else {  // dA [K, M] = op(B) [K, N] dC^T [N, M]
                           const Operand<T> B{pb, b_stride, trans_b, ldb};
                           if (a_stride != 0 || batch == 1) {
                             batched_gemm<T>(batch, K, Mx, N, B, dC_t, out_a, K * Mx, Mx);
                           } else {
                             summed_gemm<T>(batch, K, Mx, N, B, dC_t, out_a, Mx);
                           }
                         }
                       }
                       if (needs[1]) {
                         gb = empty(sb, g.dtype());
                         const T* pa = a.get().template data_ptr<T>();
                         T* out_b = gb.template data_ptr<T>();
                         if (!tb) {  // dB [K, N] = op(A)^T [K, Mx] dC [Mx, N]
                           const Operand<T> A_t{pa, a_stride, flip(trans_a), lda};
                           if (b_stride != 0 || batch == 1) {
                             batched_gemm<T>(batch, K, N, Mx, A_t, dC, out_b, K * N, N);
                           } else {
                             summed_gemm<T>(batch, K, N, Mx, A_t, dC, out_b, N);
                           }
                         } else {  // dB [N, K] = dC^T [N, Mx] op(A) [Mx, K]
                           const Operand<T> A{pa, a_stride, trans_a, lda};
                           if (b_stride != 0 || batch == 1) {
                             batched_gemm<T>(batch, N, K, Mx, dC_t, A, out_b, N * K, K);
                           } else {
                             summed_gemm<T>(batch, N, K, Mx, dC_t, A, out_b, K);
                           }
                         }
                       }
                     });
                     return std::vector<Tensor>{ga, gb};
                   });
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  return matmul_impl(a, b, false, false);
}

Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b) {
  return matmul_impl(a, b, transpose_a, transpose_b);
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_float(x, "linear");
  check_float(weight, "linear");
  INK_CHECK(weight.dim() == 2, "linear: weight must be 2-D [out_features, in_features], got {}",
            shape_str(weight.shape()));
  INK_CHECK(x.dim() >= 1, "linear: input must have at least one dim, got a scalar");
  check_same_dtype(x, weight, "linear");
  const int64_t out_features = weight.size(0), in_features = weight.size(1);
  INK_CHECK(x.size(-1) == in_features,
            "linear: input {} and weight {} cannot be multiplied (input features {} != weight "
            "in_features {})",
            shape_str(x.shape()), shape_str(weight.shape()), x.size(-1), in_features);
  if (bias.defined()) {
    check_float(bias, "linear");
    check_same_dtype(x, bias, "linear");
    INK_CHECK(bias.shape() == Shape{out_features},
              "linear: bias shape {} does not match out_features {} of weight {}",
              shape_str(bias.shape()), out_features, shape_str(weight.shape()));
  }
  const int64_t rows = x.numel() / in_features;
  Shape out_shape = x.shape();
  out_shape.back() = out_features;
  Tensor out = empty(out_shape, x.dtype());
  dispatch_floating(x.dtype(), "linear", [&](auto zero) {
    using T = decltype(zero);
    T* y = out.data_ptr<T>();
    T beta = 0;
    if (bias.defined()) {  // start from the bias rows and accumulate the product onto them
      const T* pb = bias.data_ptr<T>();
      for (int64_t r = 0; r < rows; ++r) std::copy(pb, pb + out_features, y + r * out_features);
      beta = 1;
    }
    // y [R, out] = x [R, in] * W^T
    gemm(Trans::N, Trans::T, rows, out_features, in_features, x.data_ptr<T>(), in_features,
         weight.data_ptr<T>(), in_features, beta, y, out_features);
  });

  std::vector<Tensor> inputs = {x, weight};
  if (bias.defined()) inputs.push_back(bias);
  // dx = dy W;  dW = dy^T x;  db = sum of dy over rows
  return record_op(
      out, "linear", std::move(inputs),
      [x_shape = x.shape(), x = weight.requires_grad() ? SavedTensor(x) : SavedTensor(),
       w = x.requires_grad() ? SavedTensor(weight) : SavedTensor(), has_bias = bias.defined(), rows,
       in_features, out_features](const Tensor& g, const GradMask& needs) {
        std::vector<Tensor> grads(has_bias ? 3 : 2);
        dispatch_floating(g.dtype(), "linear_backward", [&](auto zero) {
          using T = decltype(zero);
          if (needs[0]) {  // the first layer's input usually needs no gradient
            grads[0] = empty(x_shape, g.dtype());
            gemm(Trans::N, Trans::N, rows, in_features, out_features, g.data_ptr<T>(), out_features,
                 w.get().template data_ptr<T>(), in_features, T{0}, grads[0].template data_ptr<T>(),
                 in_features);
          }
          if (needs[1]) {
            grads[1] = empty({out_features, in_features}, g.dtype());
            gemm(Trans::T, Trans::N, out_features, in_features, rows, g.data_ptr<T>(), out_features,
                 x.get().template data_ptr<T>(), in_features, T{0}, grads[1].template data_ptr<T>(),
                 in_features);
          }
        });
        if (needs[2]) grads[2] = sum_to(g, {out_features});
        return grads;
      });
}

}  // namespace ink
