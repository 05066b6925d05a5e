// Convolution layers for image models: nn::Conv2d (PyTorch's torch.nn.Conv2d, square kernels).
#pragma once

#include <cstdint>
#include <string>

#include "nn/module.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

namespace ink::nn {

// What this object represents: a 2-D convolution layer over [B, in_channels, H, W] inputs, with
// PyTorch's parameter names and default initialisation: weight [out, in, k, k] and bias [out]
// ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in * k * k (what kaiming_uniform_(a=sqrt(5))
// amounts to), weight drawn first. Without bias, `bias` stays undefined (and is not in the
// state_dict). Zero padding on every side; groups = 1, dilation = 1.
class Conv2d : public UnaryModule {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride = 1,
         int64_t padding = 0, bool bias = true, Generator* generator = nullptr);

  Tensor forward(const Tensor& input) override;
  // forward(upsample_nearest2d(input, 2)). A 3x3 convolution with stride 1 and padding 1 (the
  // U-Net's upsampling) runs at the input's resolution as upsample_conv2d: 16 instead of 36
  // multiply-adds per output pixel, and only the input kept for backward.
  Tensor forward_upsampled(const Tensor& input);
  // As PyTorch prints it: "3, 16, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)", with
  // ", bias=False" when there is no bias and no padding entry when it is 0.
  std::string extra_repr() const override;

  int64_t in_channels() const { return in_channels_; }
  int64_t out_channels() const { return out_channels_; }
  int64_t kernel_size() const { return kernel_size_; }
  int64_t stride() const { return stride_; }
  int64_t padding() const { return padding_; }

  Tensor weight;  // [out_channels, in_channels, kernel_size, kernel_size]
  Tensor bias;    // [out_channels], or undefined

 private:
  void check_input(const Tensor& input) const;  // [B, in_channels, H, W], else ink::Error

  int64_t in_channels_, out_channels_, kernel_size_, stride_, padding_;
};

}  // namespace ink::nn
