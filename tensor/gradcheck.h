// gradcheck: compares the analytic gradients of a function with central finite differences,
// like torch.autograd.gradcheck, and says which input and element disagree.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace ink {

// The check runs in double precision by default, as PyTorch's does: every floating input is
// converted to Float64 first, so the central difference with eps = 1e-6 is accurate to about
// 1e-9 and the tolerances can be tight. A backward that is 0.5% (even 0.05%) wrong then fails.
struct GradcheckOptions {
  DType dtype = DType::Float64;  // Float32 runs the old single-precision check (set eps ~1e-3)
  double eps = 1e-6;             // finite-difference step
  double atol = 1e-6;            // |analytic - numeric| <= atol + rtol * |numeric|
  double rtol = 1e-4;
  // Refuse to pass when every analytic gradient is exactly zero (a vacuous check).
  bool require_nonzero = true;
};

struct GradcheckResult {
  bool ok = false;
  std::string message;  // empty when ok; otherwise what failed, with both numbers
  int64_t input_index = -1;
  int64_t element_index = -1;
  double analytic = 0.0;
  double numeric = 0.0;
  explicit operator bool() const { return ok; }
};

// f maps the inputs to any tensor; the check differentiates sum(f(inputs) * w) for a fixed
// random weighting w, so every output element matters. Inputs that require grad are checked.
// f is called on copies of the inputs converted to options.dtype (Int64 inputs stay as they
// are), so the caller's tensors and their gradients are never touched; f must therefore build
// its result from the inputs it is given. Constants it captures may stay Float32 where ops
// promote (elementwise ops); ops that do not (matmul, linear, conv2d, cat, the fused ops) throw
// their dtype error, so pass such a tensor as an input that does not require grad: it is
// converted like the others. There is no silent single-precision retry.
GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& options = {});

}  // namespace ink
