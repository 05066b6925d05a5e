// Indexing ops the models need: index_select (gather rows by Int64 ids), where and masked_fill
// (select by a mask, with broadcasting), and repeat (tile a tensor).
//
// Legend for index_select: x viewed as [outer, D, inner] around `dim` (D = x.size(dim)),
//   N = number of indices; the output is [outer, N, inner].
// A mask is a Float32 or Int64 tensor; an element is "true" when it is nonzero.
#include <algorithm>
#include <vector>

#include "tensor/ops/ops_internal.h"

namespace ink {

using namespace detail;

namespace {

// Calls fn(out_index, offsets) for every element of `out_shape` in row-major order, where
// offsets[k] is the element's offset in input k (read as broadcast to out_shape).
template <class Fn>
void for_each_broadcast_element(const Shape& out_shape,
                                const std::vector<std::vector<int64_t>>& strides, Fn&& fn) {
  const size_t rank = out_shape.size(), inputs = strides.size();
  const int64_t n = shape_numel(out_shape);
  std::vector<int64_t> index(rank, 0), offsets(inputs, 0);
  for (int64_t i = 0; i < n; ++i) {
    fn(i, offsets);
    // Odometer step: bump the last dim, carrying into the ones before it.
    for (size_t d = rank; d-- > 0;) {
      ++index[d];
      for (size_t k = 0; k < inputs; ++k) offsets[k] += strides[k][d];
      if (index[d] < out_shape[d]) break;
      for (size_t k = 0; k < inputs; ++k) offsets[k] -= strides[k][d] * index[d];
      index[d] = 0;
    }
  }
}

void check_mask(const Tensor& mask, const char* op) {
  check_defined(mask, op);
  INK_CHECK(is_floating(mask.dtype()) || mask.dtype() == DType::Int64,
            "{}: mask must be Float32, Float64 or Int64 (nonzero = true), got {} with shape {}", op,
            dtype_name(mask.dtype()), shape_str(mask.shape()));
}

// The mask as one bool per element of out_shape (broadcast).
std::vector<char> mask_as_bools(const Tensor& mask, const Shape& out_shape) {
  std::vector<char> bools(static_cast<size_t>(shape_numel(out_shape)));
  const auto strides = broadcast_strides(mask.shape(), out_shape);
  if (mask.dtype() == DType::Int64) {
    const int64_t* m = mask.data_i64();
    for_each_broadcast_element(out_shape, {strides}, [&](int64_t i, const auto& off) {
      bools[static_cast<size_t>(i)] = m[off[0]] != 0;
    });
  } else {
    dispatch_floating(mask.dtype(), "mask", [&](auto t) {
      const auto* m = mask.data_ptr<decltype(t)>();
      for_each_broadcast_element(out_shape, {strides}, [&](int64_t i, const auto& off) {
        bools[static_cast<size_t>(i)] = m[off[0]] != 0;
      });
    });
  }
  return bools;
}

// g where the mask is `keep`, 0 elsewhere, summed back to `shape` (the input's, before
// broadcasting).
Tensor masked_grad(const Tensor& g, const std::vector<char>& mask, bool keep, const Shape& shape) {
  Tensor out = empty(g.shape(), g.dtype());
  dispatch_floating(g.dtype(), "masked_grad", [&](auto t) {
    using T = decltype(t);
    const T* src = g.data_ptr<T>();
    T* dst = out.data_ptr<T>();
    for (size_t i = 0; i < mask.size(); ++i) dst[i] = (mask[i] != 0) == keep ? src[i] : T(0);
  });
  return out.shape() == shape ? out : sum_to(out, shape);
}

}  // namespace

// ---- index_select ----
Tensor index_select(const Tensor& x, int64_t dim, const Tensor& indices) {
  check_float(x, "index_select");
  check_defined(indices, "index_select");
  INK_CHECK(indices.dtype() == DType::Int64 && indices.dim() == 1,
            "index_select: indices must be a 1-D Int64 tensor, got {} with shape {}",
            dtype_name(indices.dtype()), shape_str(indices.shape()));
  INK_CHECK(x.dim() >= 1, "index_select: x must have at least one dim, got {}",
            shape_str(x.shape()));
  dim = normalize_dim(dim, x.dim(), "index_select");
  const int64_t D = x.size(dim), N = indices.numel();
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= x.size(d);
  for (int64_t d = dim + 1; d < x.dim(); ++d) inner *= x.size(d);
  const int64_t* ids = indices.data_i64();
  for (int64_t i = 0; i < N; ++i) {
    INK_CHECK(ids[i] >= 0 && ids[i] < D,
              "index_select: index {} at position {} is out of range for dim {} of x {} (size {})",
              ids[i], i, dim, shape_str(x.shape()), D);
  }
  Shape out_shape = x.shape();
  out_shape[dim] = N;
  const DType dtype = x.dtype();
  Tensor out = empty(out_shape, dtype);
  dispatch_floating(dtype, "index_select", [&](auto t) {
    using T = decltype(t);
    const T* src = x.data_ptr<T>();
    T* dst = out.data_ptr<T>();
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t i = 0; i < N; ++i) {
        std::copy_n(src + (o * D + ids[i]) * inner, inner, dst + (o * N + i) * inner);
      }
    }
  });
  // dx[o, ids[i], :] += dy[o, i, :]  (a repeated index sums its gradients)
  return record_op(out, "index_select", {x, indices},
                   [ids = SavedTensor(indices), x_shape = x.shape(), dtype, outer, D, N, inner](
                       const Tensor& g, const GradMask&) {
                     Tensor gx = zeros(x_shape, dtype);
                     const int64_t* pi = ids.get().data_i64();
                     dispatch_floating(dtype, "index_select", [&](auto t) {
                       using T = decltype(t);
                       const T* pg = g.data_ptr<T>();
                       T* px = gx.data_ptr<T>();
                       for (int64_t o = 0; o < outer; ++o) {
                         for (int64_t i = 0; i < N; ++i) {
                           T* row = px + (o * D + pi[i]) * inner;
                           const T* from = pg + (o * N + i) * inner;
                           for (int64_t r = 0; r < inner; ++r) row[r] += from[r];
                         }
                       }
                     });
                     return std::vector<Tensor>{gx, Tensor()};
                   });
}

// ---- where ----
Tensor where(const Tensor& mask, const Tensor& a, const Tensor& b) {
  check_mask(mask, "where");
  check_float(a, "where");
  check_float(b, "where");
  check_same_dtype(a, b, "where");
  const Shape out_shape =
      broadcast_shapes(broadcast_shapes(mask.shape(), a.shape(), "where"), b.shape(), "where");
  check_shape(out_shape, "where");
  std::vector<char> m = mask_as_bools(mask, out_shape);
  Tensor out = empty(out_shape, a.dtype());
  dispatch_floating(a.dtype(), "where", [&](auto t) {
    using T = decltype(t);
    const T* pa = a.data_ptr<T>();
    const T* pb = b.data_ptr<T>();
    T* po = out.data_ptr<T>();
    for_each_broadcast_element(
        out_shape,
        {broadcast_strides(a.shape(), out_shape), broadcast_strides(b.shape(), out_shape)},
        [&](int64_t i, const auto& off) {
          po[i] = m[static_cast<size_t>(i)] ? pa[off[0]] : pb[off[1]];
        });
  });
  // da = dy where mask, db = dy where not mask (each summed back over its broadcast dims)
  return record_op(out, "where", {mask, a, b},
                   [m = std::move(m), a_shape = a.shape(), b_shape = b.shape()](
                       const Tensor& g, const GradMask& needs) {
                     return std::vector<Tensor>{
                         Tensor(), needs[1] ? masked_grad(g, m, true, a_shape) : Tensor(),
                         needs[2] ? masked_grad(g, m, false, b_shape) : Tensor()};
                   });
}

// ---- masked_fill ----
Tensor masked_fill(const Tensor& x, const Tensor& mask, float value) {
  check_float(x, "masked_fill");
  check_mask(mask, "masked_fill");
  const Shape both = broadcast_shapes(x.shape(), mask.shape(), "masked_fill");
  INK_CHECK(both == x.shape(), "masked_fill: mask {} does not broadcast to x {}",
            shape_str(mask.shape()), shape_str(x.shape()));
  std::vector<char> m = mask_as_bools(mask, x.shape());
  Tensor out = empty(x.shape(), x.dtype());
  dispatch_floating(x.dtype(), "masked_fill", [&](auto t) {
    using T = decltype(t);
    const T* src = x.data_ptr<T>();
    T* dst = out.data_ptr<T>();
    for (size_t i = 0; i < m.size(); ++i) dst[i] = m[i] ? static_cast<T>(value) : src[i];
  });
  // dx = dy where the mask is false, 0 where it was filled
  return record_op(out, "masked_fill", {x, mask},
                   [m = std::move(m), x_shape = x.shape()](const Tensor& g, const GradMask&) {
                     return std::vector<Tensor>{masked_grad(g, m, false, x_shape), Tensor()};
                   });
}

// ---- repeat ----
Tensor repeat(const Tensor& x, const std::vector<int64_t>& repeats) {
  check_float(x, "repeat");
  const int64_t rank = static_cast<int64_t>(repeats.size());
  INK_CHECK(rank >= x.dim(),
            "repeat: {} repeats for x {}; the number of repeats must be at least x's rank {}", rank,
            shape_str(x.shape()), x.dim());
  Shape in_shape(static_cast<size_t>(rank - x.dim()), 1);  // x with leading 1s to `rank` dims
  in_shape.insert(in_shape.end(), x.shape().begin(), x.shape().end());
  Shape out_shape(static_cast<size_t>(rank));
  for (int64_t d = 0; d < rank; ++d) {
    INK_CHECK(repeats[d] >= 0, "repeat: repeats must be >= 0, got {} for x {}",
              fmt::join(repeats, ", "), shape_str(x.shape()));
    out_shape[d] = in_shape[d] * repeats[d];
  }
  check_shape(out_shape, "repeat");
  // Output element (i_0, ..., i_r) reads x at (i_0 % s_0, ..., i_r % s_r).
  const auto in_strides = contiguous_strides(in_shape);
  std::vector<int64_t> offsets(static_cast<size_t>(shape_numel(out_shape)));
  for (size_t i = 0; i < offsets.size(); ++i) {
    int64_t rest = static_cast<int64_t>(i), offset = 0;
    for (int64_t d = rank - 1; d >= 0; --d) {
      offset += (rest % out_shape[d]) % in_shape[d] * in_strides[d];
      rest /= out_shape[d];
    }
    offsets[i] = offset;
  }
  const DType dtype = x.dtype();
  Tensor out = empty(out_shape, dtype);
  dispatch_floating(dtype, "repeat", [&](auto t) {
    using T = decltype(t);
    const T* src = x.data_ptr<T>();
    T* dst = out.data_ptr<T>();
    for (size_t i = 0; i < offsets.size(); ++i) dst[i] = src[offsets[i]];
  });
  // dx = the sum of dy over every tile (each output element adds into the element it copied)
  return record_op(
      out, "repeat", {x},
      [offsets = std::move(offsets), x_shape = x.shape(), dtype](const Tensor& g, const GradMask&) {
        Tensor gx = zeros(x_shape, dtype);
        dispatch_floating(dtype, "repeat", [&](auto t) {
          using T = decltype(t);
          const T* pg = g.data_ptr<T>();
          T* px = gx.data_ptr<T>();
          for (size_t i = 0; i < offsets.size(); ++i) px[offsets[i]] += pg[i];
        });
        return std::vector<Tensor>{gx};
      });
}

}  // namespace ink
