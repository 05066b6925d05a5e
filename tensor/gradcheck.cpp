// gradcheck: analytic gradients (from backward) against central finite differences, in double.
#include "tensor/gradcheck.h"

#include <cmath>

#include "tensor/autograd.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace ink {

namespace {

// sum(out * w) in double, so the finite difference is not drowned by rounding.
double weighted_sum(const Tensor& out, const std::vector<double>& w) {
  const std::vector<double> values = out.to_vector_f64();
  double acc = 0.0;
  for (size_t i = 0; i < values.size(); ++i) acc += values[i] * w[i];
  return acc;
}

// A leaf copy of x in `dtype` (floating inputs only), with x's requires_grad.
Tensor working_copy(const Tensor& x, DType dtype) {
  if (!is_floating(x.dtype())) return x;
  NoGradGuard no_grad;
  Tensor copy = x.detach().to(dtype).clone().detach();
  if (x.requires_grad()) copy.set_requires_grad(true);
  return copy;
}

// Reads and writes element e of a floating tensor as a double.
double get_element(const Tensor& t, int64_t e) {
  return t.dtype() == DType::Float64 ? t.data_f64()[e] : static_cast<double>(t.data()[e]);
}
void set_element(Tensor& t, int64_t e, double value) {
  if (t.dtype() == DType::Float64) {
    t.data_f64()[e] = value;
  } else {
    t.data()[e] = static_cast<float>(value);
  }
}

}  // namespace

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& options) {
  INK_CHECK(is_floating(options.dtype),
            "gradcheck: options.dtype must be Float32 or Float64, got {}",
            dtype_name(options.dtype));
  GradcheckResult result;
  std::vector<Tensor> work;
  for (const Tensor& x : inputs) {
    INK_CHECK(x.defined(), "gradcheck: an input is undefined");
    if (x.requires_grad()) {
      INK_CHECK(x.is_leaf(), "gradcheck: inputs that require grad must be leaves");
    }
    work.push_back(working_copy(x, options.dtype));
  }

  // A fixed random weighting of the outputs, so that every output element contributes.
  Tensor out = f(work);
  INK_CHECK(out.defined() && is_floating(out.dtype()),
            "gradcheck: the function must return a Float32 or Float64 tensor");
  Generator gen(20240611);
  const Tensor w32 = uniform(out.shape(), 0.5f, 1.5f, &gen);
  const std::vector<double> w = w32.to_vector_f64();
  if (!out.requires_grad()) {
    result.message = "gradcheck: the output does not require grad (no input reaches it)";
    return result;
  }
  sum(mul(out, w32.to(out.dtype()))).backward();

  bool any_nonzero = false;
  bool any_checked = false;
  for (size_t i = 0; i < work.size() && result.message.empty(); ++i) {
    Tensor x = work[i];
    if (!x.requires_grad()) continue;
    any_checked = true;
    Tensor analytic = x.grad();
    if (!analytic.defined()) analytic = zeros(x.shape(), x.dtype());
    NoGradGuard no_grad;
    for (int64_t e = 0; e < x.numel(); ++e) {
      const double original = get_element(x, e);
      set_element(x, e, original + options.eps);
      const double plus = weighted_sum(f(work), w);
      set_element(x, e, original - options.eps);
      const double minus = weighted_sum(f(work), w);
      set_element(x, e, original);
      const double numeric = (plus - minus) / (2.0 * options.eps);
      const double a = get_element(analytic, e);
      if (a != 0.0) any_nonzero = true;
      if (!(std::fabs(a - numeric) <= options.atol + options.rtol * std::fabs(numeric))) {
        result.input_index = static_cast<int64_t>(i);
        result.element_index = e;
        result.analytic = a;
        result.numeric = numeric;
        result.message = fmt::format(
            "gradcheck: input {} (shape {}), element {}: analytic gradient {:.9g} != numeric "
            "{:.9g} (relative error {:.2g}, in {})",
            i, shape_str(x.shape()), e, a, numeric,
            std::fabs(a - numeric) / std::max(std::fabs(numeric), 1e-300), dtype_name(x.dtype()));
        break;
      }
    }
  }

  if (!result.message.empty()) return result;
  if (!any_checked) {
    result.message = "gradcheck: no input requires grad, so nothing was checked";
    return result;
  }
  if (options.require_nonzero && !any_nonzero) {
    result.message =
        "gradcheck: every analytic gradient is exactly zero, so the check would pass vacuously";
    return result;
  }
  result.ok = true;
  return result;
}

}  // namespace ink
