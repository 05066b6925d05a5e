// Elementwise ops: arithmetic with NumPy broadcasting, and unary functions.
// Every forward has its backward right below it, with the maths in one comment line.
#include <cmath>

#include "tensor/ops/ops_internal.h"

namespace ink {

namespace detail {
std::vector<int64_t> broadcast_strides(const Shape& in, const Shape& out) {
  const size_t pad = out.size() - in.size();
  std::vector<int64_t> strides(out.size(), 0);
  const auto in_strides = contiguous_strides(in);
  for (size_t d = 0; d < in.size(); ++d) strides[pad + d] = in[d] == 1 ? 0 : in_strides[d];
  return strides;
}
}  // namespace detail

using namespace detail;

namespace {

// Applies f elementwise over the broadcast of a and b. Float32 with Float64 computes in Float64
// (type promotion, as PyTorch; the engine converts each gradient back to its input's dtype).
template <class F>
Tensor broadcast_binary(const Tensor& a_in, const Tensor& b_in, const char* op, F f) {
  check_float(a_in, op);
  check_float(b_in, op);
  const Shape out_shape = broadcast_shapes(a_in.shape(), b_in.shape(), op);
  const DType dtype = a_in.dtype() == b_in.dtype() ? a_in.dtype() : DType::Float64;
  const Tensor a = a_in.dtype() == dtype ? a_in : a_in.detach().to(dtype);
  const Tensor b = b_in.dtype() == dtype ? b_in : b_in.detach().to(dtype);
  Tensor out = empty(out_shape, dtype);
  dispatch_floating(dtype, op, [&](auto zero) {
    using T = decltype(zero);
    const T* pa = a.data_ptr<T>();
    const T* pb = b.data_ptr<T>();
    T* po = out.data_ptr<T>();
    if (a.shape() == b.shape()) {
      map_binary(pa, pb, po, out.numel(), f);
      return;
    }
    const auto sa = broadcast_strides(a.shape(), out_shape);
    const auto sb = broadcast_strides(b.shape(), out_shape);
    for_each_broadcast_row(
        out_shape, sa, sb,
        [&](int64_t o, int64_t ia, int64_t da, int64_t ib, int64_t db, int64_t n) {
          T* dst = po + o;
          const T* x = pa + ia;
          const T* y = pb + ib;
          // Specialised loops let the compiler vectorise the common cases.
          if (da == 1 && db == 1) {
            for (int64_t j = 0; j < n; ++j) dst[j] = f(x[j], y[j]);
          } else if (da == 1) {
            for (int64_t j = 0; j < n; ++j) dst[j] = f(x[j], y[0]);
          } else if (db == 1) {
            for (int64_t j = 0; j < n; ++j) dst[j] = f(x[0], y[j]);
          } else {
            for (int64_t j = 0; j < n; ++j) dst[j] = f(x[0], y[0]);
          }
        });
  });
  return out;
}

// out = f(x) elementwise, in x's dtype. f is a generic lambda, instantiated for float and double.
template <class F>
Tensor unary(const Tensor& x, const char* op, F f) {
  check_float(x, op);
  Tensor out = empty(x.shape(), x.dtype());
  dispatch_floating(x.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    map_unary(x.data_ptr<T>(), out.data_ptr<T>(), x.numel(), f);
  });
  return out;
}

// gx = f(g, s) elementwise, for the backward of a unary op that saved s (its input or output).
template <class F>
Tensor unary_backward(const Tensor& g, const Tensor& s, const char* op, F f) {
  check_same_dtype(g, s, op);
  Tensor gx = empty(g.shape(), g.dtype());
  dispatch_floating(g.dtype(), op, [&](auto zero) {
    using T = decltype(zero);
    map_binary(g.data_ptr<T>(), s.data_ptr<T>(), gx.data_ptr<T>(), g.numel(), f);
  });
  return gx;
}

}  // namespace

// ---- add ----
Tensor add(const Tensor& a, const Tensor& b) {
  Tensor out = broadcast_binary(a, b, "add", [](auto x, auto y) { return x + y; });
  // d(a+b)/da = 1, d(a+b)/db = 1
  return record_op(out, "add", {a, b},
                   [sa = a.shape(), sb = b.shape()](const Tensor& g, const GradMask& needs) {
                     return std::vector<Tensor>{needs[0] ? sum_to(g, sa) : Tensor(),
                                                needs[1] ? sum_to(g, sb) : Tensor()};
                   });
}

// ---- sub ----
Tensor sub(const Tensor& a, const Tensor& b) {
  Tensor out = broadcast_binary(a, b, "sub", [](auto x, auto y) { return x - y; });
  // d(a-b)/da = 1, d(a-b)/db = -1
  return record_op(out, "sub", {a, b},
                   [sa = a.shape(), sb = b.shape()](const Tensor& g, const GradMask& needs) {
                     return std::vector<Tensor>{needs[0] ? sum_to(g, sa) : Tensor(),
                                                needs[1] ? sum_to(neg(g), sb) : Tensor()};
                   });
}

// ---- mul ----
Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = broadcast_binary(a, b, "mul", [](auto x, auto y) { return x * y; });
  // d(a*b)/da = b, d(a*b)/db = a
  // Each factor is saved only when the other one needs a gradient.
  return record_op(
      out, "mul", {a, b},
      [sa = a.shape(), sb = b.shape(), a = b.requires_grad() ? SavedTensor(a) : SavedTensor(),
       b = a.requires_grad() ? SavedTensor(b) : SavedTensor()](const Tensor& g,
                                                               const GradMask& needs) {
        return std::vector<Tensor>{needs[0] ? sum_to(mul(g, b.get()), sa) : Tensor(),
                                   needs[1] ? sum_to(mul(g, a.get()), sb) : Tensor()};
      });
}

// ---- div ----
Tensor div(const Tensor& a, const Tensor& b) {
  Tensor out = broadcast_binary(a, b, "div", [](auto x, auto y) { return x / y; });
  // d(a/b)/da = 1/b, d(a/b)/db = -a/b^2
  return record_op(out, "div", {a, b},
                   [sa = a.shape(), a = b.requires_grad() ? SavedTensor(a) : SavedTensor(),
                    b = SavedTensor(b)](const Tensor& g, const GradMask& needs) {
                     const Tensor& vb = b.get();
                     Tensor ga = needs[0] ? sum_to(div(g, vb), sa) : Tensor();
                     Tensor gb = needs[1]
                                     ? sum_to(neg(div(mul(g, a.get()), mul(vb, vb))), vb.shape())
                                     : Tensor();
                     return std::vector<Tensor>{ga, gb};
                   });
}

// ---- ops with a scalar ----
Tensor add(const Tensor& a, float s) {
  Tensor out = unary(a, "add", [s](auto x) { return x + s; });
  // d(a+s)/da = 1
  return record_op(out, "add_scalar", {a},
                   [](const Tensor& g, const GradMask&) { return std::vector<Tensor>{g}; });
}

Tensor sub(const Tensor& a, float s) {
  return add(a, -s);
}

Tensor mul(const Tensor& a, float s) {
  Tensor out = unary(a, "mul", [s](auto x) { return x * s; });
  // d(a*s)/da = s
  return record_op(out, "mul_scalar", {a}, [s](const Tensor& g, const GradMask&) {
    return std::vector<Tensor>{mul(g, s)};
  });
}

Tensor div(const Tensor& a, float s) {
  Tensor out = unary(a, "div", [s](auto x) { return x / s; });
  // d(a/s)/da = 1/s
  return record_op(out, "div_scalar", {a}, [s](const Tensor& g, const GradMask&) {
    return std::vector<Tensor>{div(g, s)};
  });
}

Tensor rsub(float s, const Tensor& b) {
  return add(neg(b), s);
}

Tensor rdiv(float s, const Tensor& b) {
  Tensor out = unary(b, "rdiv", [s](auto x) { return s / x; });
  // d(s/b)/db = -s/b^2
  return record_op(out, "rdiv_scalar", {b},
                   [s, b = SavedTensor(b)](const Tensor& g, const GradMask&) {
                     const Tensor& vb = b.get();
                     return std::vector<Tensor>{div(mul(g, -s), mul(vb, vb))};
                   });
}

Tensor operator+(const Tensor& a, const Tensor& b) {
  return add(a, b);
}
Tensor operator-(const Tensor& a, const Tensor& b) {
  return sub(a, b);
}
Tensor operator*(const Tensor& a, const Tensor& b) {
  return mul(a, b);
}
Tensor operator/(const Tensor& a, const Tensor& b) {
  return div(a, b);
}
Tensor operator+(const Tensor& a, float b) {
  return add(a, b);
}
Tensor operator-(const Tensor& a, float b) {
  return sub(a, b);
}
Tensor operator*(const Tensor& a, float b) {
  return mul(a, b);
}
Tensor operator/(const Tensor& a, float b) {
  return div(a, b);
}
Tensor operator+(float a, const Tensor& b) {
  return add(b, a);
}
Tensor operator-(float a, const Tensor& b) {
  return rsub(a, b);
}
Tensor operator*(float a, const Tensor& b) {
  return mul(b, a);
}
Tensor operator/(float a, const Tensor& b) {
  return rdiv(a, b);
}
Tensor operator-(const Tensor& a) {
  return neg(a);
}

// ---- neg ----
Tensor neg(const Tensor& x) {
  Tensor out = unary(x, "neg", [](auto v) { return -v; });
  // d(-x)/dx = -1
  return record_op(out, "neg", {x},
                   [](const Tensor& g, const GradMask&) { return std::vector<Tensor>{neg(g)}; });
}

// ---- exp ----
Tensor exp(const Tensor& x) {
  Tensor out = unary(x, "exp", [](auto v) { return std::exp(v); });
  // d/dx exp(x) = exp(x)
  return record_op(out, "exp", {x}, [y = SavedTensor(out)](const Tensor& g, const GradMask&) {
    return std::vector<Tensor>{mul(g, y.get())};
  });
}

// ---- log ----
Tensor log(const Tensor& x) {
  Tensor out = unary(x, "log", [](auto v) { return std::log(v); });
  // d/dx log(x) = 1/x
  return record_op(out, "log", {x}, [x = SavedTensor(x)](const Tensor& g, const GradMask&) {
    return std::vector<Tensor>{div(g, x.get())};
  });
}

// ---- sqrt ----
Tensor sqrt(const Tensor& x) {
  Tensor out = unary(x, "sqrt", [](auto v) { return std::sqrt(v); });
  // d/dx sqrt(x) = 1 / (2 sqrt(x))
  return record_op(out, "sqrt", {x}, [y = SavedTensor(out)](const Tensor& g, const GradMask&) {
    return std::vector<Tensor>{div(g, mul(y.get(), 2.0f))};
  });
}

// ---- pow by a scalar ----
Tensor pow(const Tensor& x, float e) {
  Tensor out = unary(x, "pow", [e](auto v) { return static_cast<decltype(v)>(std::pow(v, e)); });
  // d/dx x^e = e * x^(e-1)
  return record_op(out, "pow", {x}, [e, x = SavedTensor(x)](const Tensor& g, const GradMask&) {
    Tensor d = unary(x.get(), "pow_backward",
                     [e](auto v) { return static_cast<decltype(v)>(e * std::pow(v, e - 1.0f)); });
    return std::vector<Tensor>{mul(g, d)};
  });
}

// ---- sin / cos ----
Tensor sin(const Tensor& x) {
  Tensor out = unary(x, "sin", [](auto v) { return std::sin(v); });
  // d/dx sin(x) = cos(x)
  return record_op(out, "sin", {x}, [x = SavedTensor(x)](const Tensor& g, const GradMask&) {
    return std::vector<Tensor>{unary_backward(g, x.get(), "sin_backward",
                                              [](auto gv, auto xv) { return gv * std::cos(xv); })};
  });
}

Tensor cos(const Tensor& x) {
  Tensor out = unary(x, "cos", [](auto v) { return std::cos(v); });
  // d/dx cos(x) = -sin(x)
  return record_op(out, "cos", {x}, [x = SavedTensor(x)](const Tensor& g, const GradMask&) {
    return std::vector<Tensor>{unary_backward(g, x.get(), "cos_backward",
                                              [](auto gv, auto xv) { return -gv * std::sin(xv); })};
  });
}

// ---- relu ----
Tensor relu(const Tensor& x) {
  Tensor out = unary(x, "relu", [](auto v) { return v > 0 ? v : decltype(v){0}; });
  // d/dx relu(x) = 1 if x > 0 else 0
  return record_op(out, "relu", {x}, [y = SavedTensor(out)](const Tensor& g, const GradMask&) {
    return std::vector<Tensor>{unary_backward(g, y.get(), "relu_backward", [](auto gv, auto yv) {
      return yv > 0 ? gv : decltype(gv){0};
    })};
  });
}

// ---- sigmoid ----
namespace {
// Never evaluates exp of a large positive number, so +-1000 give 1 and 0 exactly, not NaN.
template <class T>
T stable_sigmoid(T v) {
  if (v >= 0) return T{1} / (T{1} + std::exp(-v));
  const T e = std::exp(v);
  return e / (T{1} + e);
}
}  // namespace

Tensor sigmoid(const Tensor& x) {
  Tensor out = unary(x, "sigmoid", [](auto v) { return stable_sigmoid(v); });
  // d/dx sigmoid = s * (1 - s)
  return record_op(out, "sigmoid", {x}, [s = SavedTensor(out)](const Tensor& g, const GradMask&) {
    return std::vector<Tensor>{unary_backward(g, s.get(), "sigmoid_backward", [](auto gv, auto sv) {
      return gv * sv * (decltype(sv){1} - sv);
    })};
  });
}

// ---- tanh ----
Tensor tanh(const Tensor& x) {
  Tensor out = unary(x, "tanh", [](auto v) { return std::tanh(v); });
  // d/dx tanh = 1 - tanh^2
  return record_op(out, "tanh", {x}, [t = SavedTensor(out)](const Tensor& g, const GradMask&) {
    return std::vector<Tensor>{unary_backward(g, t.get(), "tanh_backward", [](auto gv, auto tv) {
      return gv * (decltype(tv){1} - tv * tv);
    })};
  });
}

// ---- clamp ----
Tensor clamp(const Tensor& x, std::optional<float> min, std::optional<float> max) {
  INK_CHECK(min || max, "clamp: at least one of min and max must be given");
  INK_CHECK(!(min && max) || *min <= *max, "clamp: min ({}) must not exceed max ({})",
            min.value_or(0.0f), max.value_or(0.0f));
  const float lo = min.value_or(-INFINITY);
  const float hi = max.value_or(INFINITY);
  Tensor out = unary(x, "clamp", [lo, hi](auto v) {
    using T = decltype(v);
    return v < lo ? static_cast<T>(lo) : (v > hi ? static_cast<T>(hi) : v);
  });
  // d/dx clamp(x) = 1 where lo <= x <= hi, else 0
  return record_op(
      out, "clamp", {x}, [lo, hi, x = SavedTensor(x)](const Tensor& g, const GradMask&) {
        return std::vector<Tensor>{unary_backward(
            g, x.get(), "clamp_backward",
            [lo, hi](auto gv, auto xv) { return xv >= lo && xv <= hi ? gv : decltype(gv){0}; })};
      });
}

bool allclose(const Tensor& a, const Tensor& b, float rtol, float atol) {
  check_float(a, "allclose");
  check_float(b, "allclose");
  if (a.shape() != b.shape()) return false;
  if (a.dtype() == DType::Float32 && b.dtype() == DType::Float32) {
    const float* pa = a.data();
    const float* pb = b.data();
    for (int64_t i = 0; i < a.numel(); ++i) {
      if (!(std::fabs(pa[i] - pb[i]) <= atol + rtol * std::fabs(pb[i]))) return false;
    }
    return true;
  }
  const std::vector<double> va = a.to_vector_f64(), vb = b.to_vector_f64();
  for (size_t i = 0; i < va.size(); ++i) {
    if (!(std::fabs(va[i] - vb[i]) <= atol + rtol * std::fabs(vb[i]))) return false;
  }
  return true;
}

}  // namespace ink
