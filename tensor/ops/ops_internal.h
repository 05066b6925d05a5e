// Helpers shared by the op files: dtype checks, the broadcasting iterator and parallel maps.
// Internal to ink::tensor.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "tensor/autograd.h"
#include "tensor/error.h"
#include "tensor/ops.h"
#include "tensor/parallel.h"

namespace ink::detail {

// Elementwise work is split across threads only above this many elements: below it the cost
// of waking a thread is larger than the work.
inline constexpr int64_t kElementwiseGrain = int64_t{1} << 16;

inline void check_defined(const Tensor& t, const char* op) {
  INK_CHECK(t.defined(), "{}: the input tensor is undefined", op);
}

// Differentiable ops take Float32 tensors, and Float64 ones too (for gradcheck in double).
inline void check_float(const Tensor& t, const char* op) {
  check_defined(t, op);
  INK_CHECK(is_floating(t.dtype()),
            "{}: expected a Float32 tensor, got {} with shape {} (Float64 is accepted too)", op,
            dtype_name(t.dtype()), shape_str(t.shape()));
}

// Both operands of an op without type promotion must have the same floating dtype.
inline void check_same_dtype(const Tensor& a, const Tensor& b, const char* op) {
  INK_CHECK(a.dtype() == b.dtype(), "{}: dtypes differ: {} {} and {} {}", op, dtype_name(a.dtype()),
            shape_str(a.shape()), dtype_name(b.dtype()), shape_str(b.shape()));
}

// Calls fn(T{}) with T = float for Float32 and T = double for Float64: the one place where an
// op's templated kernel is instantiated for each floating dtype.
template <class Fn>
decltype(auto) dispatch_floating(DType dtype, const char* op, Fn&& fn) {
  if (dtype == DType::Float64) return fn(double{});
  INK_CHECK(dtype == DType::Float32, "{}: expected a Float32 or Float64 tensor, got {}", op,
            dtype_name(dtype));
  return fn(float{});
}

// The DType of element type T.
template <class T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, double>) {
    return DType::Float64;
  } else {
    static_assert(std::is_same_v<T, float>);
    return DType::Float32;
  }
}

// Strides of `in` when read as if broadcast to `out` (0 along broadcast dims), padded on the
// left to out's rank.
std::vector<int64_t> broadcast_strides(const Shape& in, const Shape& out);

// Calls fn(out_begin, a_offset, a_step, b_offset, b_step, count) for each run of `count`
// consecutive output elements along the last dim, where input element j of the run is at
// a_offset + j * a_step (a_step is 0 or 1). Runs are processed in parallel for large outputs.
template <class Fn>
void for_each_broadcast_row(const Shape& out_shape, const std::vector<int64_t>& a_strides,
                            const std::vector<int64_t>& b_strides, Fn&& fn) {
  const int64_t rank = static_cast<int64_t>(out_shape.size());
  if (rank == 0) {
    fn(int64_t{0}, int64_t{0}, int64_t{0}, int64_t{0}, int64_t{0}, int64_t{1});
    return;
  }
  const int64_t inner = out_shape[rank - 1];
  if (inner == 0) return;
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < rank; ++d) rows *= out_shape[d];
  const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / inner);
  parallel_for(0, rows, grain, [&](int64_t row_begin, int64_t row_end) {
    for (int64_t row = row_begin; row < row_end; ++row) {
      int64_t a_off = 0, b_off = 0, rest = row;
      for (int64_t d = rank - 2; d >= 0; --d) {
        const int64_t idx = rest % out_shape[d];
        rest /= out_shape[d];
        a_off += idx * a_strides[d];
        b_off += idx * b_strides[d];
      }
      fn(row * inner, a_off, a_strides[rank - 1], b_off, b_strides[rank - 1], inner);
    }
  });
}

// out[i] = f(in[i]) over n elements, in parallel for large n.
template <class T, class F>
void map_unary(const T* in, T* out, int64_t n, F f) {
  parallel_for(0, n, kElementwiseGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) out[i] = f(in[i]);
  });
}

// out[i] = f(a[i], b[i]) over n elements, in parallel for large n.
template <class T, class F>
void map_binary(const T* a, const T* b, T* out, int64_t n, F f) {
  parallel_for(0, n, kElementwiseGrain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) out[i] = f(a[i], b[i]);
  });
}

// The first element of t, untyped (for byte copies that work for every dtype).
inline const void* raw_data(const Tensor& t) {
  return static_cast<const char*>(std::as_const(*t.impl()->storage).data()) +
         t.impl()->offset * dtype_size(t.dtype());
}
// The same for writing: counts as a write (bumps the version), as Tensor::data() does.
inline void* raw_data(Tensor& t) {
  t.bump_version();
  return static_cast<char*>(t.impl()->storage->data()) + t.impl()->offset * dtype_size(t.dtype());
}

// The shape with one size inferred from -1 (reshape/view rules).
Shape infer_shape(const Shape& requested, int64_t numel, const Shape& from, const char* op);

// A tensor that shares x's storage with a new shape (used by reshape, squeeze, unsqueeze).
Tensor alias_with_shape(const Tensor& x, const Shape& shape);

}  // namespace ink::detail
