// group_norm, layer_norm, silu, gelu, softmax, log_softmax, dropout and
// scaled_dot_product_attention: each forward calls one fused kernel and saves what its backward
// needs (the mean and rstd; the output; the attention weights), and the backward right below it
// calls the matching fused backward kernel. Float32 runs the fast kernels, Float64 the naive
// reference kernels (the same formulas, in double), so gradcheck runs in double.
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "tensor/autograd.h"
#include "tensor/error.h"
#include "tensor/kernels/activation_kernels.h"
#include "tensor/kernels/attention_kernels.h"
#include "tensor/kernels/norm_kernels.h"
#include "tensor/kernels/softmax_kernels.h"
#include "tensor/nn_ops.h"
#include "tensor/ops.h"

namespace ink {

namespace {

// ---- dtype plumbing ----

bool floating_dtype(DType dtype) {
  return dtype == DType::Float32 || dtype == DType::Float64;
}

void check_floating(const Tensor& t, const char* op, const char* what) {
  INK_CHECK(t.defined(), "{}: {} is undefined", op, what);
  INK_CHECK(floating_dtype(t.dtype()), "{}: {} must be Float32 or Float64, got {} with shape {}",
            op, what, dtype_name(t.dtype()), shape_str(t.shape()));
}

// An optional parameter (weight, bias): undefined, or `expected` with x's dtype.
void check_param(const Tensor& p, const Tensor& x, int64_t expected, const char* op,
                 const char* what) {
  if (!p.defined()) return;
  INK_CHECK(p.dim() == 1 && p.size(0) == expected,
            "{}: {} must have shape [{}] for input {}, got {}", op, what, expected,
            shape_str(x.shape()), shape_str(p.shape()));
  INK_CHECK(p.dtype() == x.dtype(), "{}: {} is {} but the input is {}", op, what,
            dtype_name(p.dtype()), dtype_name(x.dtype()));
}

// Runs fn(T{}) with T = float or double, as x's dtype says.
template <class Fn>
decltype(auto) with_dtype(DType dtype, Fn&& fn) {
  if (dtype == DType::Float64) return fn(double{});
  return fn(float{});
}

// Read through a const handle (no version bump); write through a mutable one.
template <class T>
const T* read(const Tensor& t) {
  if (!t.defined()) return nullptr;
  if constexpr (std::is_same_v<T, float>) {
    return t.data();
  } else {
    return t.data_f64();
  }
}
template <class T>
T* write(Tensor& t) {
  if (!t.defined()) return nullptr;
  if constexpr (std::is_same_v<T, float>) {
    return t.data();
  } else {
    return t.data_f64();
  }
}

int64_t product(const Shape& shape, size_t begin, size_t end) {
  int64_t n = 1;
  for (size_t i = begin; i < end; ++i) n *= shape[i];
  return n;
}

// The fast float kernel or the naive one in double, picked by overload.
#define INK_UNARY_KERNELS(name)                                              \
  void name##_fwd(const float* x, float* y, int64_t n) {                     \
    kernels::name##_forward(x, y, n);                                        \
  }                                                                          \
  void name##_fwd(const double* x, double* y, int64_t n) {                   \
    kernels::name##_forward_naive(x, y, n);                                  \
  }                                                                          \
  void name##_bwd(const float* x, const float* g, float* dx, int64_t n) {    \
    kernels::name##_backward(x, g, dx, n);                                   \
  }                                                                          \
  void name##_bwd(const double* x, const double* g, double* dx, int64_t n) { \
    kernels::name##_backward_naive(x, g, dx, n);                             \
  }
INK_UNARY_KERNELS(silu)
INK_UNARY_KERNELS(gelu)
#undef INK_UNARY_KERNELS

void softmax_fwd(bool log, const float* x, float* y, int64_t o, int64_t d, int64_t i) {
  log ? kernels::log_softmax_forward(x, y, o, d, i) : kernels::softmax_forward(x, y, o, d, i);
}
void softmax_fwd(bool log, const double* x, double* y, int64_t o, int64_t d, int64_t i) {
  log ? kernels::log_softmax_forward_naive(x, y, o, d, i)
      : kernels::softmax_forward_naive(x, y, o, d, i);
}
void softmax_bwd(bool log, const float* y, const float* g, float* dx, int64_t o, int64_t d,
                 int64_t i) {
  log ? kernels::log_softmax_backward(y, g, dx, o, d, i)
      : kernels::softmax_backward(y, g, dx, o, d, i);
}
void softmax_bwd(bool log, const double* y, const double* g, double* dx, int64_t o, int64_t d,
                 int64_t i) {
  log ? kernels::log_softmax_backward_naive(y, g, dx, o, d, i)
      : kernels::softmax_backward_naive(y, g, dx, o, d, i);
}

void group_norm_fwd(const float* x, const float* w, const float* b, float* y, float* mean,
                    float* rstd, int64_t B, int64_t C, int64_t S, int64_t G, double eps) {
  kernels::group_norm_forward(x, w, b, y, mean, rstd, B, C, S, G, eps);
}
void group_norm_fwd(const double* x, const double* w, const double* b, double* y, double* mean,
                    double* rstd, int64_t B, int64_t C, int64_t S, int64_t G, double eps) {
  kernels::group_norm_forward_naive(x, w, b, y, mean, rstd, B, C, S, G, eps);
}
void group_norm_bwd(const float* g, const float* x, const float* w, const float* mean,
                    const float* rstd, float* dx, float* dw, float* db, int64_t B, int64_t C,
                    int64_t S, int64_t G) {
  kernels::group_norm_backward(g, x, w, mean, rstd, dx, dw, db, B, C, S, G);
}
void group_norm_apl(const float* x, const float* w, const float* b, const float* mean,
                    const float* rstd, float* y, int64_t B, int64_t C, int64_t S, int64_t G) {
  kernels::group_norm_apply(x, w, b, mean, rstd, y, B, C, S, G);
}
void group_norm_apl(const double* x, const double* w, const double* b, const double* mean,
                    const double* rstd, double* y, int64_t B, int64_t C, int64_t S, int64_t G) {
  kernels::group_norm_apply_naive(x, w, b, mean, rstd, y, B, C, S, G);
}
void group_norm_bwd(const double* g, const double* x, const double* w, const double* mean,
                    const double* rstd, double* dx, double* dw, double* db, int64_t B, int64_t C,
                    int64_t S, int64_t G) {
  kernels::group_norm_backward_naive(g, x, w, mean, rstd, dx, dw, db, B, C, S, G);
}

void layer_norm_fwd(const float* x, const float* w, const float* b, float* y, float* mean,
                    float* rstd, int64_t N, int64_t D, double eps) {
  kernels::layer_norm_forward(x, w, b, y, mean, rstd, N, D, eps);
}
void layer_norm_fwd(const double* x, const double* w, const double* b, double* y, double* mean,
                    double* rstd, int64_t N, int64_t D, double eps) {
  kernels::layer_norm_forward_naive(x, w, b, y, mean, rstd, N, D, eps);
}
void layer_norm_bwd(const float* g, const float* x, const float* w, const float* mean,
                    const float* rstd, float* dx, float* dw, float* db, int64_t N, int64_t D) {
  kernels::layer_norm_backward(g, x, w, mean, rstd, dx, dw, db, N, D);
}
void layer_norm_bwd(const double* g, const double* x, const double* w, const double* mean,
                    const double* rstd, double* dx, double* dw, double* db, int64_t N, int64_t D) {
  kernels::layer_norm_backward_naive(g, x, w, mean, rstd, dx, dw, db, N, D);
}

void attention_fwd(const float* q, const float* k, const float* v, const uint8_t* valid, float* out,
                   float* weights, int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D,
                   bool per_query) {
  kernels::attention_forward(q, k, v, valid, out, weights, B, H, Lq, Lk, D, per_query);
}
void attention_fwd(const double* q, const double* k, const double* v, const uint8_t* valid,
                   double* out, double* weights, int64_t B, int64_t H, int64_t Lq, int64_t Lk,
                   int64_t D, bool per_query) {
  kernels::attention_forward_naive(q, k, v, valid, out, weights, B, H, Lq, Lk, D, per_query);
}
void attention_bwd(const float* g, const float* q, const float* k, const float* v,
                   const float* weights, float* dq, float* dk, float* dv, int64_t B, int64_t H,
                   int64_t Lq, int64_t Lk, int64_t D) {
  kernels::attention_backward(g, q, k, v, weights, dq, dk, dv, B, H, Lq, Lk, D);
}
void attention_bwd(const double* g, const double* q, const double* k, const double* v,
                   const double* weights, double* dq, double* dk, double* dv, int64_t B, int64_t H,
                   int64_t Lq, int64_t Lk, int64_t D) {
  kernels::attention_backward_naive(g, q, k, v, weights, dq, dk, dv, B, H, Lq, Lk, D);
}

// An undefined tensor when `needed` is false, else an uninitialised one of that shape.
Tensor empty_if(bool needed, const Shape& shape, DType dtype) {
  return needed ? empty(shape, dtype) : Tensor();
}

}  // namespace

// ---- group_norm ----

namespace {

struct GroupNormDims {
  int64_t B, C, S;  // batch, channels, positions per channel
};

// The checks group_norm and group_norm_silu share; the messages name `op`.
GroupNormDims check_group_norm_args(const char* op, const Tensor& x, int64_t groups,
                                    const Tensor& weight, const Tensor& bias, double eps) {
  check_floating(x, op, "the input");
  INK_CHECK(x.dim() >= 2 && x.dim() <= 5, "{}: expected an input [B, C, *] of rank 2 to 5, got {}",
            op, shape_str(x.shape()));
  const int64_t C = x.size(1);
  INK_CHECK(groups > 0 && C % groups == 0,
            "{}: input {} has {} channels, which {} groups do not divide", op, shape_str(x.shape()),
            C, groups);
  INK_CHECK(eps > 0.0, "{}: eps must be positive, got {}", op, eps);
  check_param(weight, x, C, op, "weight");
  check_param(bias, x, C, op, "bias");
  return {x.size(0), C, product(x.shape(), 2, x.shape().size())};
}

}  // namespace

Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& weight, const Tensor& bias,
                  double eps) {
  // Plain variables, not a structured binding: lambdas capture them below, which clang 14
  // (Debian 12's, which CI's fuzz build uses) refuses for bindings.
  const GroupNormDims dims = check_group_norm_args("group_norm", x, groups, weight, bias, eps);
  const int64_t B = dims.B, C = dims.C, S = dims.S;
  const DType dt = x.dtype();
  Tensor out = empty(x.shape(), dt);
  Tensor mean = empty({B, groups}, dt), rstd = empty({B, groups}, dt);  // [B, G] each
  with_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    group_norm_fwd(read<T>(x), read<T>(weight), read<T>(bias), write<T>(out), write<T>(mean),
                   write<T>(rstd), B, C, S, groups, eps);
  });
  // dx = rstd * (dxhat - mean_g(dxhat) - xhat * mean_g(dxhat * xhat)), dxhat = g * weight;
  // dweight = sum_{B,*}(g * xhat); dbias = sum_{B,*}(g)
  return record_op(
      out, "group_norm", {x, weight, bias},
      [xs = SavedTensor(x), ws = SavedTensor(weight), ms = SavedTensor(mean),
       rs = SavedTensor(rstd), B, C, S, groups](const Tensor& g, const GradMask& needs) {
        const Tensor& xv = xs.get();
        const Tensor w = ws.defined() ? ws.get() : Tensor();
        Tensor dx = empty_if(needs[0], xv.shape(), xv.dtype());
        Tensor dw = empty_if(needs[1], {C}, xv.dtype());
        Tensor db = empty_if(needs[2], {C}, xv.dtype());
        with_dtype(xv.dtype(), [&](auto tag) {
          using T = decltype(tag);
          group_norm_bwd(read<T>(g), read<T>(xv), read<T>(w), read<T>(ms.get()), read<T>(rs.get()),
                         write<T>(dx), write<T>(dw), write<T>(db), B, C, S, groups);
        });
        return std::vector<Tensor>{dx, dw, db};
      });
}

// ---- layer_norm ----

namespace {

// layer_norm's values into a new tensor, with the row statistics written to mean and rstd.
template <class T>
Tensor layer_norm_values(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& mean,
                         Tensor& rstd, int64_t N, int64_t D, double eps) {
  Tensor out = empty(x.shape(), x.dtype());
  layer_norm_fwd(read<T>(x), read<T>(weight), read<T>(bias), write<T>(out), write<T>(mean),
                 write<T>(rstd), N, D, eps);
  return out;
}

}  // namespace

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  check_floating(x, "layer_norm", "the input");
  INK_CHECK(x.dim() >= 1 && x.dim() <= 5,
            "layer_norm: expected an input [*, D] of rank 1 to 5, got {}", shape_str(x.shape()));
  INK_CHECK(eps > 0.0, "layer_norm: eps must be positive, got {}", eps);
  const int64_t D = x.size(-1), N = x.numel() / std::max<int64_t>(D, 1);
  check_param(weight, x, D, "layer_norm", "weight");
  check_param(bias, x, D, "layer_norm", "bias");
  const DType dt = x.dtype();
  Tensor mean = empty({N}, dt), rstd = empty({N}, dt);  // [N] each
  Tensor out = with_dtype(dt, [&](auto tag) {
    return layer_norm_values<decltype(tag)>(x, weight, bias, mean, rstd, N, D, eps);
  });
  // dx = rstd * (dxhat - mean_D(dxhat) - xhat * mean_D(dxhat * xhat)), dxhat = g * weight;
  // dweight = sum_N(g * xhat); dbias = sum_N(g)
  const SavedTensor xs(x), ws(weight), bs(bias);
  Tensor result = record_op(out, "layer_norm", {x, weight, bias},
                            [xs, ws, ms = SavedTensor(mean), rs = SavedTensor(rstd), N, D](
                                const Tensor& g, const GradMask& needs) {
                              const Tensor xv = xs.get();
                              const Tensor w = ws.defined() ? ws.get() : Tensor();
                              Tensor dx = empty_if(needs[0], xv.shape(), xv.dtype());
                              Tensor dw = empty_if(needs[1], {D}, xv.dtype());
                              Tensor db = empty_if(needs[2], {D}, xv.dtype());
                              with_dtype(xv.dtype(), [&](auto tag) {
                                using T = decltype(tag);
                                layer_norm_bwd(read<T>(g), read<T>(xv), read<T>(w),
                                               read<T>(ms.get()), read<T>(rs.get()), write<T>(dx),
                                               write<T>(dw), write<T>(db), N, D);
                              });
                              return std::vector<Tensor>{dx, dw, db};
                            });
  // The linear layers after a norm save its output; it can be remade from x, which the norm's
  // own backward keeps anyway.
  make_recomputable(result, [xs, ws, bs, N, D, eps]() {
    const Tensor xv = xs.get();
    const Tensor w = ws.defined() ? ws.get() : Tensor();
    const Tensor b = bs.defined() ? bs.get() : Tensor();
    Tensor scratch_mean = empty({N}, xv.dtype()), scratch_rstd = empty({N}, xv.dtype());
    return with_dtype(xv.dtype(), [&](auto tag) {
      return layer_norm_values<decltype(tag)>(xv, w, b, scratch_mean, scratch_rstd, N, D, eps);
    });
  });
  return result;
}

// ---- silu ----

Tensor silu(const Tensor& x) {
  check_floating(x, "silu", "the input");
  Tensor out = empty(x.shape(), x.dtype());
  with_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    silu_fwd(read<T>(x), write<T>(out), x.numel());
  });
  // d/dx silu = s * (1 + x * (1 - s)), s = sigmoid(x)
  return record_op(out, "silu", {x}, [xs = SavedTensor(x)](const Tensor& g, const GradMask&) {
    const Tensor& xv = xs.get();
    Tensor dx = empty(xv.shape(), xv.dtype());
    with_dtype(xv.dtype(), [&](auto tag) {
      using T = decltype(tag);
      silu_bwd(read<T>(xv), read<T>(g), write<T>(dx), xv.numel());
    });
    return std::vector<Tensor>{dx};
  });
}

// ---- group_norm_silu ----

namespace {

// silu(group_norm(x)) into a new tensor, with the group statistics written to mean and rstd.
template <class T>
Tensor group_norm_silu_values(const Tensor& x, const Tensor& weight, const Tensor& bias,
                              Tensor& mean, Tensor& rstd, int64_t B, int64_t C, int64_t S,
                              int64_t groups, double eps) {
  Tensor out = empty(x.shape(), x.dtype());
  T* y = write<T>(out);
  group_norm_fwd(read<T>(x), read<T>(weight), read<T>(bias), y, write<T>(mean), write<T>(rstd), B,
                 C, S, groups, eps);
  silu_fwd(static_cast<const T*>(y), y, x.numel());  // in place
  return out;
}

// silu(group_norm(x)) again from the statistics the forward wrote (the same bits, one pass less).
template <class T>
Tensor group_norm_silu_remade(const Tensor& x, const Tensor& weight, const Tensor& bias,
                              const Tensor& mean, const Tensor& rstd, int64_t B, int64_t C,
                              int64_t S, int64_t groups) {
  Tensor out = empty(x.shape(), x.dtype());
  T* y = write<T>(out);
  group_norm_apl(read<T>(x), read<T>(weight), read<T>(bias), read<T>(mean), read<T>(rstd), y, B, C,
                 S, groups);
  silu_fwd(static_cast<const T*>(y), y, x.numel());  // in place
  return out;
}

}  // namespace

Tensor group_norm_silu(const Tensor& x, int64_t groups, const Tensor& weight, const Tensor& bias,
                       double eps) {
  const GroupNormDims dims = check_group_norm_args("group_norm_silu", x, groups, weight, bias, eps);
  const int64_t B = dims.B, C = dims.C, S = dims.S;
  const DType dt = x.dtype();
  Tensor mean = empty({B, groups}, dt), rstd = empty({B, groups}, dt);  // [B, G] each
  Tensor out = with_dtype(dt, [&](auto tag) {
    return group_norm_silu_values<decltype(tag)>(x, weight, bias, mean, rstd, B, C, S, groups, eps);
  });
  // The backward remakes n = group_norm(x) from x and the statistics (the same bits), then
  // dn = g * silu'(n) and the group_norm backward of dn: the normalised values are never kept.
  const SavedTensor xs(x), ws(weight), bs(bias), ms(mean), rs(rstd);
  Tensor result =
      record_op(out, "group_norm_silu", {x, weight, bias},
                [xs, ws, ms, rs, bs, B, C, S, groups](const Tensor& g, const GradMask& needs) {
                  const Tensor xv = xs.get();
                  const Tensor w = ws.defined() ? ws.get() : Tensor();
                  const Tensor b = bs.defined() ? bs.get() : Tensor();
                  Tensor dx = empty_if(needs[0], xv.shape(), xv.dtype());
                  Tensor dw = empty_if(needs[1], {C}, xv.dtype());
                  Tensor db = empty_if(needs[2], {C}, xv.dtype());
                  with_dtype(xv.dtype(), [&](auto tag) {
                    using T = decltype(tag);
                    // dn goes into dx's buffer when there is one (the group_norm backward
                    // kernels allow dx == dy): one activation-sized buffer less at the peak.
                    Tensor dn = needs[0] ? dx : empty(xv.shape(), xv.dtype());
                    const Tensor mean_v = ms.get(), rstd_v = rs.get();
                    T* n = write<T>(dn);
                    group_norm_apl(read<T>(xv), read<T>(w), read<T>(b), read<T>(mean_v),
                                   read<T>(rstd_v), n, B, C, S, groups);
                    silu_bwd(static_cast<const T*>(n), read<T>(g), n, xv.numel());  // dn, in place
                    group_norm_bwd(static_cast<const T*>(n), read<T>(xv), read<T>(w),
                                   read<T>(mean_v), read<T>(rstd_v), write<T>(dx), write<T>(dw),
                                   write<T>(db), B, C, S, groups);
                  });
                  return std::vector<Tensor>{dx, dw, db};
                });
  // The output can be remade from x, so the op that consumes it (a convolution saving its
  // input) need not keep it alive.
  make_recomputable(result, [xs, ws, bs, ms, rs, B, C, S, groups]() {
    const Tensor xv = xs.get();
    const Tensor w = ws.defined() ? ws.get() : Tensor();
    const Tensor b = bs.defined() ? bs.get() : Tensor();
    return with_dtype(xv.dtype(), [&](auto tag) {
      return group_norm_silu_remade<decltype(tag)>(xv, w, b, ms.get(), rs.get(), B, C, S, groups);
    });
  });
  return result;
}

// ---- gelu ----

Tensor gelu(const Tensor& x) {
  check_floating(x, "gelu", "the input");
  Tensor out = empty(x.shape(), x.dtype());
  with_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    gelu_fwd(read<T>(x), write<T>(out), x.numel());
  });
  // d/dx gelu = Phi(x) + x * phi(x), phi the standard normal density
  return record_op(out, "gelu", {x}, [xs = SavedTensor(x)](const Tensor& g, const GradMask&) {
    const Tensor& xv = xs.get();
    Tensor dx = empty(xv.shape(), xv.dtype());
    with_dtype(xv.dtype(), [&](auto tag) {
      using T = decltype(tag);
      gelu_bwd(read<T>(xv), read<T>(g), write<T>(dx), xv.numel());
    });
    return std::vector<Tensor>{dx};
  });
}

// ---- softmax and log_softmax ----

namespace {
Tensor softmax_op(const Tensor& x, int64_t dim, bool log) {
  const char* op = log ? "log_softmax" : "softmax";
  check_floating(x, op, "the input");
  const int64_t rank = x.dim();
  INK_CHECK(rank >= 1 && dim >= -rank && dim < rank, "{}: dim {} is out of range for input {}", op,
            dim, shape_str(x.shape()));
  const size_t d = static_cast<size_t>(dim < 0 ? dim + rank : dim);
  const int64_t outer = product(x.shape(), 0, d), D = x.shape()[d],
                inner = product(x.shape(), d + 1, x.shape().size());
  Tensor out = empty(x.shape(), x.dtype());
  with_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    softmax_fwd(log, read<T>(x), write<T>(out), outer, D, inner);
  });
  // softmax: dx = y * (g - sum_dim(g * y));  log_softmax: dx = g - exp(y) * sum_dim(g)
  return record_op(out, op, {x},
                   [ys = SavedTensor(out), log, outer, D, inner](const Tensor& g, const GradMask&) {
                     const Tensor& y = ys.get();
                     Tensor dx = empty(y.shape(), y.dtype());
                     with_dtype(y.dtype(), [&](auto tag) {
                       using T = decltype(tag);
                       softmax_bwd(log, read<T>(y), read<T>(g), write<T>(dx), outer, D, inner);
                     });
                     return std::vector<Tensor>{dx};
                   });
}
}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) {
  return softmax_op(x, dim, false);
}

Tensor log_softmax(const Tensor& x, int64_t dim) {
  return softmax_op(x, dim, true);
}

// ---- dropout ----

Tensor dropout(const Tensor& x, double p, Generator& gen, bool training) {
  check_floating(x, "dropout", "the input");
  INK_CHECK(p >= 0.0 && p <= 1.0, "dropout: probability has to be between 0 and 1, but got {}", p);
  if (!training || p == 0.0) return x;
  // mask = 0 (dropped) or 1 / (1 - p) (kept), drawn in element order so a seed fixes it.
  Tensor mask = empty(x.shape(), x.dtype());
  Tensor out = empty(x.shape(), x.dtype());
  with_dtype(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T keep = p < 1.0 ? static_cast<T>(1.0 / (1.0 - p)) : T(0);
    T* m = write<T>(mask);
    T* o = write<T>(out);
    const T* xv = read<T>(x);
    for (int64_t i = 0; i < x.numel(); ++i) {
      m[i] = gen.uniform_double() < p ? T(0) : keep;
      o[i] = xv[i] * m[i];
    }
  });
  // d/dx (x * mask) = mask
  return record_op(out, "dropout", {x}, [ms = SavedTensor(mask)](const Tensor& g, const GradMask&) {
    return std::vector<Tensor>{mul(g, ms.get())};
  });
}

// ---- scaled_dot_product_attention ----

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const Tensor& key_mask) {
  const char* op = "scaled_dot_product_attention";
  check_floating(q, op, "q");
  check_floating(k, op, "k");
  check_floating(v, op, "v");
  INK_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
            "{}: expected q [B, h, Lq, d], k and v [B, h, Lk, d], got q {}, k {}, v {}", op,
            shape_str(q.shape()), shape_str(k.shape()), shape_str(v.shape()));
  const int64_t B = q.size(0), H = q.size(1), Lq = q.size(2), D = q.size(3), Lk = k.size(2);
  INK_CHECK(k.size(0) == B && k.size(1) == H && k.size(3) == D && v.shape() == k.shape(),
            "{}: q {}, k {} and v {} do not match (expected k and v [{}, {}, Lk, {}])", op,
            shape_str(q.shape()), shape_str(k.shape()), shape_str(v.shape()), B, H, D);
  INK_CHECK(k.dtype() == q.dtype() && v.dtype() == q.dtype(), "{}: q, k and v are {}, {} and {}",
            op, dtype_name(q.dtype()), dtype_name(k.dtype()), dtype_name(v.dtype()));
  std::vector<uint8_t> valid;
  const bool per_query = key_mask.defined() && key_mask.dim() == 3;
  if (key_mask.defined()) {
    INK_CHECK((key_mask.dim() == 2 && key_mask.size(0) == B && key_mask.size(1) == Lk) ||
                  (per_query && key_mask.size(0) == B && key_mask.size(1) == Lq &&
                   key_mask.size(2) == Lk),
              "{}: key_mask must be [{}, {}] or [{}, {}, {}] for q {} and k {}, got {}", op, B, Lk,
              B, Lq, Lk, shape_str(q.shape()), shape_str(k.shape()), shape_str(key_mask.shape()));
    valid.resize(static_cast<size_t>(key_mask.numel()));
    if (key_mask.dtype() == DType::Int64) {
      const int64_t* m = key_mask.data_i64();
      for (size_t i = 0; i < valid.size(); ++i) valid[i] = m[i] != 0;
    } else if (key_mask.dtype() == DType::Float32) {
      const float* m = read<float>(key_mask);
      for (size_t i = 0; i < valid.size(); ++i) valid[i] = m[i] != 0.0f;
    } else {
      INK_FAIL("{}: key_mask must be Float32 or Int64, got {}", op, dtype_name(key_mask.dtype()));
    }
  }
  const DType dt = q.dtype();
  Tensor out = empty(q.shape(), dt);
  Tensor weights = empty({B, H, Lk, Lq}, dt);  // P^T: the probabilities, 0 at masked keys
  with_dtype(dt, [&](auto tag) {
    using T = decltype(tag);
    attention_fwd(read<T>(q), read<T>(k), read<T>(v), valid.empty() ? nullptr : valid.data(),
                  write<T>(out), write<T>(weights), B, H, Lq, Lk, D, per_query);
  });
  // dv = P^T g;  dS = P * (g v^T - rowsum(g v^T * P));  dq = dS k / sqrt(d);  dk = dS^T q / sqrt(d)
  // P is not kept: backward runs the forward kernel again for it (the same bits), which costs
  // little next to the convolutions and saves [B, h, Lq, Lk] per attention until backward.
  return record_op(
      out, op, {q, k, v},
      [qs = SavedTensor(q), ks = SavedTensor(k), vs = SavedTensor(v), valid = std::move(valid),
       per_query, B, H, Lq, Lk, D](const Tensor& g, const GradMask& needs) {
        const Tensor qv = qs.get();
        const Tensor kv = ks.get();
        const Tensor vv = vs.get();
        Tensor dq = empty_if(needs[0], qv.shape(), qv.dtype());
        Tensor dk = empty_if(needs[1], kv.shape(), kv.dtype());
        Tensor dv = empty_if(needs[2], kv.shape(), kv.dtype());
        with_dtype(qv.dtype(), [&](auto tag) {
          using T = decltype(tag);
          Tensor probs = empty({B, H, Lk, Lq}, qv.dtype());
          {
            Tensor scratch_out = empty(qv.shape(), qv.dtype());
            attention_fwd(read<T>(qv), read<T>(kv), read<T>(vv),
                          valid.empty() ? nullptr : valid.data(), write<T>(scratch_out),
                          write<T>(probs), B, H, Lq, Lk, D, per_query);
          }
          attention_bwd(read<T>(g), read<T>(qv), read<T>(kv), read<T>(vv), read<T>(probs),
                        write<T>(dq), write<T>(dk), write<T>(dv), B, H, Lq, Lk, D);
        });
        return std::vector<Tensor>{dq, dk, dv};
      });
}

}  // namespace ink
