// nn::Conv2d: parameters, PyTorch's default initialisation, and forward through ink::conv2d.
#include "nn/conv.h"

#include <cmath>

#include "tensor/error.h"
#include "tensor/ops.h"

namespace ink::nn {

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride,
               int64_t padding, bool with_bias, Generator* generator)
    : UnaryModule("Conv2d"),
      in_channels_(in_channels),
      out_channels_(out_channels),
      kernel_size_(kernel_size),
      stride_(stride),
      padding_(padding) {
  INK_CHECK(in_channels > 0 && out_channels > 0,
            "Conv2d: in_channels and out_channels must be positive, got {} and {}", in_channels,
            out_channels);
  INK_CHECK(kernel_size > 0 && stride > 0 && padding >= 0,
            "Conv2d: kernel_size and stride must be positive and padding >= 0, got kernel_size={}, "
            "stride={}, padding={}",
            kernel_size, stride, padding);
  Generator& gen = generator != nullptr ? *generator : default_generator();
  const double fan_in = static_cast<double>(in_channels * kernel_size * kernel_size);
  const auto bound = static_cast<float>(1.0 / std::sqrt(fan_in));
  auto init = [&](const Shape& shape) {
    Tensor t = empty(shape);
    float* data = t.data();
    for (int64_t i = 0; i < t.numel(); ++i) data[i] = gen.uniform(-bound, bound);
    return t;
  };
  weight =
      register_parameter("weight", init({out_channels, in_channels, kernel_size, kernel_size}));
  bias = register_parameter("bias", with_bias ? init({out_channels}) : Tensor());
}

void Conv2d::check_input(const Tensor& input) const {
  INK_CHECK(input.defined() && input.dim() == 4 && input.size(1) == in_channels_,
            "Conv2d: expected input of shape [B, {}, H, W], got {}", in_channels_,
            input.defined() ? shape_str(input.shape()) : std::string("an undefined tensor"));
}

Tensor Conv2d::forward(const Tensor& input) {
  check_input(input);
  return conv2d(input, weight, bias, stride_, padding_);
}

Tensor Conv2d::forward_upsampled(const Tensor& input) {
  check_input(input);
  if (kernel_size_ == 3 && stride_ == 1 && padding_ == 1)
    return upsample_conv2d(input, weight, bias);
  return conv2d(upsample_nearest2d(input, 2), weight, bias, stride_, padding_);
}

std::string Conv2d::extra_repr() const {
  std::string repr = fmt::format("{}, {}, kernel_size=({}, {}), stride=({}, {})", in_channels_,
                                 out_channels_, kernel_size_, kernel_size_, stride_, stride_);
  if (padding_ != 0) repr += fmt::format(", padding=({}, {})", padding_, padding_);
  if (!bias.defined()) repr += ", bias=False";
  return repr;
}

}  // namespace ink::nn
