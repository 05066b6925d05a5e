// gradcheck: analytic gradients (from backward) against central finite differences.
#include "tensor/gradcheck.h"

#include <cmath>

#include "tensor/autograd.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace ink {

namespace {
// sum(out * w) in double, so the finite difference is not drowned by float rounding.
double weighted_sum(const Tensor& out, const Tensor& w) {
  const float* po = out.data();
  const float* pw = w.data();
  double acc = 0.0;
  for (int64_t i = 0; i < out.numel(); ++i) acc += static_cast<double>(po[i]) * pw[i];
  return acc;
}
}  // namespace

GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& options) {
  GradcheckResult result;
  std::vector<Tensor> saved_grads;
  for (const Tensor& x : inputs) {
    INK_CHECK(x.defined(), "gradcheck: an input is undefined");
    saved_grads.push_back(x.grad());
    if (x.requires_grad()) {
      INK_CHECK(x.is_leaf(), "gradcheck: inputs that require grad must be leaves");
      Tensor(x).set_grad(Tensor());
    }
  }

  // A fixed random weighting of the outputs, so that every output element contributes.
  Tensor out = f(inputs);
  INK_CHECK(out.defined() && out.dtype() == DType::Float32,
            "gradcheck: the function must return a Float32 tensor");
  Generator gen(20240611);
  const Tensor w = uniform(out.shape(), 0.5f, 1.5f, &gen);
  if (!out.requires_grad()) {
    result.message = "gradcheck: the output does not require grad (no input reaches it)";
    return result;
  }
  sum(mul(out, w)).backward();

  bool any_nonzero = false;
  bool any_checked = false;
  for (size_t i = 0; i < inputs.size() && result.message.empty(); ++i) {
    Tensor x = inputs[i];
    if (!x.requires_grad()) continue;
    any_checked = true;
    Tensor analytic = x.grad();
    if (!analytic.defined()) analytic = zeros(x.shape());
    float* px = x.data();
    const float* pa = analytic.data();
    NoGradGuard no_grad;
    for (int64_t e = 0; e < x.numel(); ++e) {
      const float original = px[e];
      px[e] = original + options.eps;
      const double plus = weighted_sum(f(inputs), w);
      px[e] = original - options.eps;
      const double minus = weighted_sum(f(inputs), w);
      px[e] = original;
      const double numeric = (plus - minus) / (2.0 * options.eps);
      const double a = pa[e];
      if (a != 0.0) any_nonzero = true;
      if (!(std::fabs(a - numeric) <= options.atol + options.rtol * std::fabs(numeric))) {
        result.input_index = static_cast<int64_t>(i);
        result.element_index = e;
        result.analytic = a;
        result.numeric = numeric;
        result.message = fmt::format(
            "gradcheck: input {} (shape {}), element {}: analytic gradient {:.6g} != numeric "
            "{:.6g}",
            i, shape_str(x.shape()), e, a, numeric);
        break;
      }
    }
  }

  for (size_t i = 0; i < inputs.size(); ++i) {
    if (inputs[i].requires_grad()) Tensor(inputs[i]).set_grad(saved_grads[i]);
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
