// The conv2d family's registry and the default kernel.
#include <string>
#include <vector>

#include "tensor/error.h"
#include "tensor/kernels/conv2d.h"

namespace ink::kernels {

const std::vector<Conv2dKernel>& conv2d_kernels() {
  static const std::vector<Conv2dKernel> kernels = {
      {"naive", &conv2d_forward_naive<float>, &conv2d_backward_input_naive<float>,
       &conv2d_backward_weight_naive<float>},
      {"im2col", &conv2d_forward_im2col, &conv2d_backward_input_im2col,
       &conv2d_backward_weight_im2col},
      {"grouped", &conv2d_forward_grouped, &conv2d_backward_input_grouped,
       &conv2d_backward_weight_grouped},
      {"shifted", &conv2d_forward_shifted, &conv2d_backward_input_shifted,
       &conv2d_backward_weight_shifted},
  };
  return kernels;
}

const Conv2dKernel& conv2d_kernel(const std::string& name) {
  std::vector<std::string> names;
  for (const auto& k : conv2d_kernels()) {
    if (k.name == name) return k;
    names.push_back(k.name);
  }
  INK_FAIL("conv2d_kernel: unknown kernel \"{}\" (known: {})", name, fmt::join(names, ", "));
}

const Conv2dKernel& conv2d_default_kernel() {
  static const Conv2dKernel& best = conv2d_kernel("shifted");
  return best;
}

}  // namespace ink::kernels
