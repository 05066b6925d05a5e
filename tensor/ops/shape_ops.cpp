// Shape ops: reshape/view (share storage), transpose/permute (copy), squeeze/unsqueeze,
// cat and expand. Each backward maps the gradient back to the input's layout.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "tensor/ops/ops_internal.h"

namespace ink {

namespace detail {

Shape infer_shape(const Shape& requested, int64_t numel, const Shape& from, const char* op) {
  Shape shape = requested;
  int64_t known = 1;
  int64_t infer_at = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      INK_CHECK(infer_at < 0, "{}: only one dim can be -1, got shape {}", op, shape_str(requested));
      infer_at = static_cast<int64_t>(i);
    } else {
      INK_CHECK(shape[i] >= 0, "{}: invalid size {} in shape {}", op, shape[i],
                shape_str(requested));
      known *= shape[i];
    }
  }
  if (infer_at >= 0) {
    INK_CHECK(known != 0 && numel % known == 0,
              "{}: shape {} is invalid for an input of shape {} ({} elements)", op,
              shape_str(requested), shape_str(from), numel);
    shape[infer_at] = numel / known;
  }
  check_shape(shape, op);
  INK_CHECK(shape_numel(shape) == numel,
            "{}: shape {} is invalid for an input of shape {} ({} elements)", op,
            shape_str(requested), shape_str(from), numel);
  return shape;
}

Tensor alias_with_shape(const Tensor& x, const Shape& shape) {
  const TensorImpl& t = *x.impl();
  return Tensor(std::make_shared<TensorImpl>(t.storage, t.offset, shape, t.dtype));
}

}  // namespace detail

using namespace detail;

// ---- reshape / view ----
Tensor reshape(const Tensor& x, const Shape& shape) {
  check_defined(x, "reshape");
  Tensor out = alias_with_shape(x, infer_shape(shape, x.numel(), x.shape(), "reshape"));
  // the gradient is reshaped back
  return record_op(out, "reshape", {x}, [s = x.shape()](const Tensor& g, const GradMask&) {
    return std::vector<Tensor>{reshape(g, s)};
  });
}

Tensor view(const Tensor& x, const Shape& shape) {
  check_defined(x, "view");
  infer_shape(shape, x.numel(), x.shape(), "view");  // for the error message naming view
  return reshape(x, shape);
}

Tensor flatten(const Tensor& x, int64_t start_dim, int64_t end_dim) {
  check_defined(x, "flatten");
  const int64_t rank = x.dim();
  if (rank == 0) return reshape(x, {1});
  start_dim = normalize_dim(start_dim, rank, "flatten");
  end_dim = normalize_dim(end_dim, rank, "flatten");
  INK_CHECK(start_dim <= end_dim, "flatten: start_dim {} must not come after end_dim {}", start_dim,
            end_dim);
  Shape shape;
  for (int64_t d = 0; d < start_dim; ++d) shape.push_back(x.size(d));
  int64_t merged = 1;
  for (int64_t d = start_dim; d <= end_dim; ++d) merged *= x.size(d);
  shape.push_back(merged);
  for (int64_t d = end_dim + 1; d < rank; ++d) shape.push_back(x.size(d));
  return reshape(x, shape);
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  check_defined(x, "unsqueeze");
  const int64_t rank = x.dim();
  INK_CHECK(dim >= -(rank + 1) && dim <= rank,
            "unsqueeze: dim {} is out of range for a tensor of rank {} (expected [{}, {}])", dim,
            rank, -(rank + 1), rank);
  if (dim < 0) dim += rank + 1;
  Shape shape = x.shape();
  shape.insert(shape.begin() + dim, 1);
  check_shape(shape, "unsqueeze");
  return reshape(x, shape);
}

Tensor squeeze(const Tensor& x, int64_t dim) {
  check_defined(x, "squeeze");
  if (x.dim() == 0) return x;
  dim = normalize_dim(dim, x.dim(), "squeeze");
  if (x.size(dim) != 1) return x;
  Shape shape = x.shape();
  shape.erase(shape.begin() + dim);
  return reshape(x, shape);
}

// ---- permute / transpose ----
namespace {

// out = x with dims reordered by perm (out dim i is x dim perm[i]); a copy.
Tensor permute_copy(const Tensor& x, const std::vector<int64_t>& perm) {
  const Shape& in_shape = x.shape();
  const int64_t rank = x.dim();
  Shape out_shape(rank);
  const auto in_strides = contiguous_strides(in_shape);
  std::vector<int64_t> strides(rank);  // stride in x for each out dim
  for (int64_t i = 0; i < rank; ++i) {
    out_shape[i] = in_shape[perm[i]];
    strides[i] = in_strides[perm[i]];
  }
  Tensor out = empty(out_shape, x.dtype());
  const std::vector<int64_t> unused(rank, 0);
  dispatch_floating(x.dtype(), "permute", [&](auto zero) {
    using T = decltype(zero);
    const T* src = x.data_ptr<T>();
    T* dst = out.data_ptr<T>();
    for_each_broadcast_row(out_shape, strides, unused,
                           [&](int64_t o, int64_t ia, int64_t step, int64_t, int64_t, int64_t n) {
                             const T* s = src + ia;
                             for (int64_t j = 0; j < n; ++j) dst[o + j] = s[j * step];
                           });
  });
  return out;
}

std::vector<int64_t> checked_permutation(const std::vector<int64_t>& dims, int64_t rank,
                                         const char* op) {
  INK_CHECK(static_cast<int64_t>(dims.size()) == rank,
            "{}: got {} dims [{}] for a tensor of rank {}", op, dims.size(), fmt::join(dims, ", "),
            rank);
  std::vector<int64_t> perm(rank);
  std::vector<bool> seen(rank, false);
  for (int64_t i = 0; i < rank; ++i) {
    perm[i] = normalize_dim(dims[i], rank, op);
    INK_CHECK(!seen[perm[i]], "{}: dim {} repeats in [{}]", op, perm[i], fmt::join(dims, ", "));
    seen[perm[i]] = true;
  }
  return perm;
}

}  // namespace

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  check_float(x, "permute");
  const auto perm = checked_permutation(dims, x.dim(), "permute");
  Tensor out = permute_copy(x, perm);
  // the gradient is permuted back by the inverse permutation
  std::vector<int64_t> inverse(perm.size());
  for (size_t i = 0; i < perm.size(); ++i) inverse[perm[i]] = static_cast<int64_t>(i);
  return record_op(out, "permute", {x}, [inverse](const Tensor& g, const GradMask&) {
    return std::vector<Tensor>{permute_copy(g, inverse)};
  });
}

Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1) {
  check_float(x, "transpose");
  const int64_t rank = x.dim();
  dim0 = normalize_dim(dim0, rank, "transpose");
  dim1 = normalize_dim(dim1, rank, "transpose");
  std::vector<int64_t> perm(rank);
  std::iota(perm.begin(), perm.end(), 0);
  if (rank > 0) std::swap(perm[dim0], perm[dim1]);
  return permute(x, perm);
}

// ---- cat ----
Tensor cat(const std::vector<Tensor>& tensors, int64_t dim) {
  INK_CHECK(!tensors.empty(), "cat: expected a non-empty list of tensors");
  for (const auto& t : tensors) {
    check_float(t, "cat");
    check_same_dtype(tensors[0], t, "cat");
  }
  const DType dtype = tensors[0].dtype();
  const size_t element = dtype_size(dtype);
  const Shape& first = tensors[0].shape();
  INK_CHECK(!first.empty(), "cat: zero-dimensional tensors cannot be concatenated");
  dim = normalize_dim(dim, static_cast<int64_t>(first.size()), "cat");
  Shape out_shape = first;
  out_shape[dim] = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Shape& s = tensors[i].shape();
    bool compatible = s.size() == first.size();
    for (size_t d = 0; compatible && d < s.size(); ++d) {
      compatible = static_cast<int64_t>(d) == dim || s[d] == first[d];
    }
    INK_CHECK(compatible,
              "cat: tensor {} has shape {}, which does not match shape {} of tensor 0 except "
              "along dim {}",
              i, shape_str(s), shape_str(first), dim);
    out_shape[dim] += s[dim];
  }
  Tensor out = empty(out_shape, dtype);
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= out_shape[d];
  for (size_t d = dim + 1; d < out_shape.size(); ++d) inner *= out_shape[d];
  const int64_t out_row = out_shape[dim] * inner;
  std::vector<int64_t> sizes;  // each input's size along dim
  int64_t at = 0;
  for (const auto& t : tensors) {
    const int64_t chunk = t.size(dim) * inner;
    const char* src = static_cast<const char*>(raw_data(t));
    char* dst = static_cast<char*>(raw_data(out));
    for (int64_t o = 0; o < outer; ++o) {
      std::memcpy(dst + (o * out_row + at) * element, src + o * chunk * element, element * chunk);
    }
    at += chunk;
    sizes.push_back(t.size(dim));
  }
  // each input's gradient is its slice of the output gradient
  return record_op(out, "cat", tensors,
                   [sizes, dim, outer, inner](const Tensor& g, const GradMask& needs) {
                     std::vector<Tensor> grads(sizes.size());
                     const int64_t g_row = g.size(dim) * inner;
                     int64_t offset = 0;
                     for (size_t i = 0; i < sizes.size(); ++i) {
                       const int64_t chunk = sizes[i] * inner;
                       if (needs[i]) {
                         Shape s = g.shape();
                         s[dim] = sizes[i];
                         Tensor piece = empty(s, g.dtype());
                         const size_t bytes = dtype_size(g.dtype());  // per element
                         char* dst = static_cast<char*>(raw_data(piece));
                         const char* src = static_cast<const char*>(raw_data(g));
                         for (int64_t o = 0; o < outer; ++o) {
                           std::memcpy(dst + o * chunk * bytes, src + (o * g_row + offset) * bytes,
                                       bytes * chunk);
                         }
                         grads[i] = piece;
                       }
                       offset += chunk;
                     }
                     return grads;
                   });
}

// ---- narrow / split / chunk ----
namespace {

// Copies the [start, start + length) slice along a dim: x viewed as [outer, size, inner].
void copy_slice(const char* src, int64_t src_size, char* dst, int64_t dst_size, int64_t offset,
                int64_t length, int64_t outer, int64_t inner, size_t element, bool into_dst) {
  const size_t bytes = static_cast<size_t>(length * inner) * element;
  for (int64_t o = 0; o < outer; ++o) {
    if (into_dst) {  // dst[o, offset + l, i] = src[o, l, i]
      std::memcpy(dst + (o * dst_size + offset) * inner * element,
                  src + o * src_size * inner * element, bytes);
    } else {  // dst[o, l, i] = src[o, offset + l, i]
      std::memcpy(dst + o * dst_size * inner * element,
                  src + (o * src_size + offset) * inner * element, bytes);
    }
  }
}

}  // namespace

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  check_defined(x, "narrow");
  INK_CHECK(x.dim() > 0, "narrow: expected a tensor with at least one dim, got a scalar");
  dim = normalize_dim(dim, x.dim(), "narrow");
  const Shape& s = x.shape();
  const int64_t size = s[dim];
  if (start < 0) start += size;
  INK_CHECK(start >= 0 && length >= 0 && start + length <= size,
            "narrow: the slice [{}, {}) is out of range for dim {} of size {} (shape {})", start,
            start + length, dim, size, shape_str(s));
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= s[d];
  for (size_t d = dim + 1; d < s.size(); ++d) inner *= s[d];
  Shape out_shape = s;
  out_shape[dim] = length;
  Tensor out = empty(out_shape, x.dtype());
  const size_t element = dtype_size(x.dtype());
  copy_slice(static_cast<const char*>(raw_data(x)), size, static_cast<char*>(raw_data(out)), length,
             start, length, outer, inner, element, /*into_dst=*/false);
  // the gradient is the output's gradient placed at the slice, zeros elsewhere
  return record_op(
      out, "narrow", {x}, [s, size, start, length, outer, inner](const Tensor& g, const GradMask&) {
        Tensor gx = zeros(s, g.dtype());
        copy_slice(static_cast<const char*>(raw_data(g)), length, static_cast<char*>(raw_data(gx)),
                   size, start, length, outer, inner, dtype_size(g.dtype()), /*into_dst=*/true);
        return std::vector<Tensor>{gx};
      });
}

std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim) {
  check_defined(x, "split");
  INK_CHECK(x.dim() > 0, "split: expected a tensor with at least one dim, got a scalar");
  dim = normalize_dim(dim, x.dim(), "split");
  int64_t total = 0;
  for (int64_t size : sizes) {
    INK_CHECK(size >= 0, "split: sizes must be non-negative, got [{}]", fmt::join(sizes, ", "));
    total += size;
  }
  INK_CHECK(total == x.size(dim),
            "split: sizes [{}] add up to {}, but dim {} of shape {} has size {}",
            fmt::join(sizes, ", "), total, dim, shape_str(x.shape()), x.size(dim));
  std::vector<Tensor> pieces;
  int64_t start = 0;
  for (int64_t size : sizes) {
    pieces.push_back(narrow(x, dim, start, size));
    start += size;
  }
  return pieces;
}

std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim) {
  check_defined(x, "split");
  INK_CHECK(x.dim() > 0, "split: expected a tensor with at least one dim, got a scalar");
  INK_CHECK(split_size > 0, "split: split_size must be positive, got {}", split_size);
  const int64_t size = x.size(dim);
  std::vector<int64_t> sizes;
  for (int64_t at = 0; at < size; at += split_size)
    sizes.push_back(std::min(split_size, size - at));
  if (sizes.empty()) sizes.push_back(0);  // an empty dim gives one empty piece, as PyTorch
  return split(x, sizes, dim);
}

std::vector<Tensor> chunk(const Tensor& x, int64_t chunks, int64_t dim) {
  check_defined(x, "chunk");
  INK_CHECK(chunks > 0, "chunk: chunks must be positive, got {}", chunks);
  INK_CHECK(x.dim() > 0, "chunk: expected a tensor with at least one dim, got a scalar");
  const int64_t size = x.size(dim);
  return split(x, std::max<int64_t>(1, (size + chunks - 1) / chunks), dim);
}

// ---- expand ----
Tensor expand(const Tensor& x, const Shape& shape) {
  check_float(x, "expand");
  check_shape(shape, "expand");
  const Shape b = broadcast_shapes(x.shape(), shape, "expand");
  INK_CHECK(b == shape, "expand: shape {} cannot be expanded to {}", shape_str(x.shape()),
            shape_str(shape));
  Tensor out = empty(shape, x.dtype());
  const auto strides = broadcast_strides(x.shape(), shape);
  const std::vector<int64_t> unused(shape.size(), 0);
  dispatch_floating(x.dtype(), "expand", [&](auto zero) {
    using T = decltype(zero);
    const T* src = x.data_ptr<T>();
    T* dst = out.data_ptr<T>();
    for_each_broadcast_row(shape, strides, unused,
                           [&](int64_t o, int64_t ia, int64_t step, int64_t, int64_t, int64_t n) {
                             for (int64_t j = 0; j < n; ++j) dst[o + j] = src[ia + j * step];
                           });
  });
  // the gradient of a broadcast is the sum over the broadcast dims
  return record_op(out, "expand", {x}, [s = x.shape()](const Tensor& g, const GradMask&) {
    return std::vector<Tensor>{sum_to(g, s)};
  });
}

}  // namespace ink

namespace ink {

// ---- clone: a deep copy that stays in the graph ----
Tensor Tensor::clone() const {
  detail::check_defined(*this, "clone");
  Tensor out = empty(shape(), dtype());
  std::memcpy(
      out.impl()->storage->data(),
      static_cast<const char*>(impl()->storage->data()) + impl()->offset * dtype_size(dtype()),
      static_cast<size_t>(numel()) * dtype_size(dtype()));
  // d clone(x)/dx = 1
  return record_op(out, "clone", {*this},
                   [](const Tensor& g, const GradMask&) { return std::vector<Tensor>{g}; });
}

}  // namespace ink

namespace ink {

// ---- to: a dtype conversion that stays in the graph ----
Tensor Tensor::to(DType target) const {
  detail::check_defined(*this, "to");
  if (dtype() == target) return *this;
  INK_CHECK(is_floating(dtype()) && is_floating(target),
            "to: only Float32 <-> Float64 conversions are supported, got {} to {}",
            dtype_name(dtype()), dtype_name(target));
  Tensor out = empty(shape(), target);
  const int64_t n = numel();
  if (target == DType::Float64) {
    const float* src = data();
    double* dst = out.data_f64();
    for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
  } else {
    const double* src = data_f64();
    float* dst = out.data();
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
  }
  // d to(x)/dx = 1: the gradient is converted back to x's dtype
  return record_op(out, "to", {*this}, [from = dtype()](const Tensor& g, const GradMask&) {
    return std::vector<Tensor>{g.to(from)};
  });
}

}  // namespace ink
