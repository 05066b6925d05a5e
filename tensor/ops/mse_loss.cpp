// mse_loss: mean((input - target)^2) as one fused op (kernels in
// tensor/kernels/mse_loss_kernels.*).
#include "tensor/kernels/mse_loss_kernels.h"
#include "tensor/ops/ops_internal.h"

namespace ink {

using namespace detail;

Tensor mse_loss(const Tensor& input, const Tensor& target) {
  INK_CHECK(input.defined() && target.defined(), "mse_loss: input and target must be defined");
  INK_CHECK(input.shape() == target.shape(),
            "mse_loss: input shape {} and target shape {} must be equal", shape_str(input.shape()),
            shape_str(target.shape()));
  INK_CHECK(is_floating(input.dtype()) && input.dtype() == target.dtype(),
            "mse_loss: input and target must be Float32, got {} and {}", dtype_name(input.dtype()),
            dtype_name(target.dtype()));
  const int64_t n = input.numel();
  const double loss = dispatch_floating(input.dtype(), "mse_loss", [&](auto zero) {
    using T = decltype(zero);
    return kernels::mse_loss_forward(input.data_ptr<T>(), target.data_ptr<T>(), n);
  });
  Tensor output = full({}, loss, input.dtype());

  // d/dinput mean((a - b)^2) = 2 (a - b) / n; d/dtarget is its negative.
  return record_op(output, "mse_loss", {input, target},
                   [a_saved = SavedTensor(input), b_saved = SavedTensor(target), n](
                       const Tensor& grad_output, const GradMask& needs) {
                     const Tensor& va = a_saved.get();
                     const Tensor& vb = b_saved.get();
                     Tensor da = needs[0] ? empty(va.shape(), va.dtype()) : Tensor();
                     Tensor db = needs[1] ? empty(vb.shape(), vb.dtype()) : Tensor();
                     dispatch_floating(va.dtype(), "mse_loss_backward", [&](auto zero) {
                       using T = decltype(zero);
                       const T scale =
                           T{2} * static_cast<T>(grad_output.item_f64()) / static_cast<T>(n);
                       kernels::mse_loss_backward(va.data_ptr<T>(), vb.data_ptr<T>(), n, scale,
                                                  needs[0] ? da.data_ptr<T>() : nullptr,
                                                  needs[1] ? db.data_ptr<T>() : nullptr);
                     });
                     return std::vector<Tensor>{da, db};
                   });
}

}  // namespace ink
