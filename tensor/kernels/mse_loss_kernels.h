// Mean squared error kernels: the loss and its gradient, as plain functions over raw pointers.
//
// Legend: n = number of elements. input, target, dinput, dtarget: [n] (any shape, flattened).
// The loss sums in double in a fixed order. Instantiated for float and double (gradcheck).
// tests/test_fused_home.cpp checks them against a naive version.
#pragma once

#include <cstdint>

namespace ink::kernels {

// mean((input - target)^2), accumulated in double.
template <class T>
double mse_loss_forward(const T* input, const T* target, int64_t n);

// dinput = scale * (input - target), dtarget = -dinput, with scale = 2 * dloss / n.
// Either output may be nullptr (not needed).
template <class T>
void mse_loss_backward(const T* input, const T* target, int64_t n, T scale, T* dinput, T* dtarget);

}  // namespace ink::kernels
