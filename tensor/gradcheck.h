// gradcheck: compares the analytic gradients of a function with central finite differences,
// like torch.autograd.gradcheck, and says which input and element disagree.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace ink {

struct GradcheckOptions {
  float eps = 1e-3f;   // finite-difference step (float32 arithmetic, so not too small)
  float atol = 1e-3f;  // |analytic - numeric| <= atol + rtol * |numeric|
  float rtol = 1e-2f;
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
// random weighting w, so every output element matters. Inputs that require grad are
// checked; their data is perturbed in place and restored.
GradcheckResult gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& options = {});

}  // namespace ink
