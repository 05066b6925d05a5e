// Reductions: sum and mean (all elements or along dims), max along a dim, and sum_to, the one
// helper that undoes broadcasting for every gradient.
// Legend: a reduction along one dim views the input as [outer, R, inner] and produces
// [outer, inner]. Results never depend on the thread count: threads split the outer*inner
// outputs (by rows and blocks of columns, so dim 0 is parallel too), and a full sum adds
// fixed-size chunks in a fixed order.
#include <algorithm>
#include <cmath>
#include <set>

#include "tensor/ops/ops_internal.h"

namespace ink {

using namespace detail;

namespace {

// Columns per task when a reduction keeps an inner dim: enough work per task, and a block of
// the output that stays in L1 while the R rows are added into it.
constexpr int64_t kColumnBlock = 512;

// out[o, i] = sum_r in[o, r, i], each output summed over r in order (r = 0, 1, ..., R - 1).
// Tasks are (o, block of columns) pairs, so a reduction over dim 0 (outer = 1, the bias
// gradient) is split across threads by columns too. The split never changes the order of any
// sum, so the result is the same at every thread count.
template <class T>
void reduce_sum_dim(const T* in, T* out, int64_t outer, int64_t R, int64_t inner) {
  if (outer == 0 || inner == 0) return;
  if (R == 0) {  // an empty sum
    std::fill(out, out + outer * inner, T(0));
    return;
  }
  if (inner == 1) {  // contiguous rows: one running sum per output
    const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, R));
    parallel_for(0, outer, grain, [&](int64_t lo, int64_t hi) {
      for (int64_t o = lo; o < hi; ++o) {
        const T* __restrict src = in + o * R;
        T acc = 0;
        for (int64_t r = 0; r < R; ++r) acc += src[r];
        out[o] = acc;
      }
    });
    return;
  }
  const int64_t block = std::min(inner, kColumnBlock);
  const int64_t blocks = (inner + block - 1) / block;
  const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(1, R * block));
  parallel_for(0, outer * blocks, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t o = task / blocks;
      const int64_t begin = (task % blocks) * block;
      const int64_t width = std::min(block, inner - begin);
      T* __restrict dst = out + o * inner + begin;
      const T* __restrict src = in + o * R * inner + begin;
      std::copy(src, src + width, dst);
      for (int64_t r = 1; r < R; ++r) {
        const T* __restrict row = src + r * inner;
        for (int64_t i = 0; i < width; ++i) dst[i] += row[i];
      }
    }
  });
}

// Sums along one dim, keeping it with size 1.
Tensor sum_one_dim_keep(const Tensor& x, int64_t dim) {
  const Shape& s = x.shape();
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= s[d];
  for (size_t d = dim + 1; d < s.size(); ++d) inner *= s[d];
  Shape out_shape = s;
  out_shape[dim] = 1;
  Tensor out = empty(out_shape, x.dtype());
  dispatch_floating(x.dtype(), "sum", [&](auto zero) {
    using T = decltype(zero);
    reduce_sum_dim(x.data_ptr<T>(), out.data_ptr<T>(), outer, s[dim], inner);
  });
  return out;
}

// Sums every element, in chunks of fixed size accumulated in double, combined in order.
template <class T>
double sum_all(const T* p, int64_t n) {
  constexpr int64_t kChunk = 8192;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(chunks, 0.0);
  parallel_for(0, chunks, 8, [&](int64_t lo, int64_t hi) {
    for (int64_t c = lo; c < hi; ++c) {
      const int64_t end = std::min(n, (c + 1) * kChunk);
      double acc = 0.0;
      for (int64_t i = c * kChunk; i < end; ++i) acc += p[i];
      partial[c] = acc;
    }
  });
  double total = 0.0;
  for (double v : partial) total += v;
  return total;
}

std::vector<int64_t> normalized_dims(const std::vector<int64_t>& dims, int64_t rank,
                                     const char* op) {
  std::set<int64_t> unique;
  for (int64_t d : dims) {
    const int64_t nd = normalize_dim(d, rank, op);
    INK_CHECK(unique.insert(nd).second, "{}: dim {} appears more than once in [{}]", op, nd,
              fmt::join(dims, ", "));
  }
  return {unique.begin(), unique.end()};
}

Shape reduced_shape(const Shape& s, const std::vector<int64_t>& dims, bool keepdim) {
  Shape out;
  for (int64_t d = 0; d < static_cast<int64_t>(s.size()); ++d) {
    const bool reduced = std::find(dims.begin(), dims.end(), d) != dims.end();
    if (!reduced)
      out.push_back(s[d]);
    else if (keepdim)
      out.push_back(1);
  }
  return out;
}

}  // namespace

// ---- sum ----
Tensor sum(const Tensor& x) {
  check_float(x, "sum");
  const double total = dispatch_floating(x.dtype(), "sum", [&](auto zero) {
    return sum_all(x.data_ptr<decltype(zero)>(), x.numel());
  });
  Tensor out = full({}, total, x.dtype());  // rounded to float once, for Float32
  // d(sum x)/dx = 1 everywhere
  return record_op(out, "sum", {x}, [s = x.shape()](const Tensor& g, const GradMask&) {
    return std::vector<Tensor>{full(s, g.item_f64(), g.dtype())};
  });
}

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  check_float(x, "sum");
  if (dims.empty()) return sum(x);  // as torch.sum(x, dim=[]) reduces everything
  const auto nd = normalized_dims(dims, x.dim(), "sum");
  Tensor out = x.detach();
  if (x.dim() > 0) {
    for (int64_t d : nd) out = sum_one_dim_keep(out, d);
  } else {
    out = x.clone().detach();
  }
  out = detail::alias_with_shape(out, reduced_shape(x.shape(), nd, keepdim));
  // the gradient is broadcast back along the summed dims
  return record_op(
      out, "sum_dim", {x},
      [s = x.shape(), keep = reduced_shape(x.shape(), nd, true)](const Tensor& g, const GradMask&) {
        return std::vector<Tensor>{expand(reshape(g, keep), s)};
      });
}

// ---- mean ----
Tensor mean(const Tensor& x) {
  check_float(x, "mean");
  INK_CHECK(x.numel() > 0, "mean: the input of shape {} has no elements", shape_str(x.shape()));
  return div(sum(x), static_cast<float>(x.numel()));
}

Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  check_float(x, "mean");
  if (dims.empty()) return mean(x);
  int64_t count = 1;
  for (int64_t d : normalized_dims(dims, x.dim(), "mean")) count *= x.dim() == 0 ? 1 : x.size(d);
  INK_CHECK(count > 0, "mean: reducing dims [{}] of shape {} averages zero elements",
            fmt::join(dims, ", "), shape_str(x.shape()));
  return div(sum(x, dims, keepdim), static_cast<float>(count));
}

// ---- max along a dim ----
MaxResult max(const Tensor& x, int64_t dim, bool keepdim) {
  check_float(x, "max");
  INK_CHECK(x.dim() > 0, "max: expected a tensor with at least one dim, got a scalar");
  dim = normalize_dim(dim, x.dim(), "max");
  const Shape& s = x.shape();
  INK_CHECK(s[dim] > 0, "max: cannot take the max over dim {} of size 0 (shape {})", dim,
            shape_str(s));
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < dim; ++d) outer *= s[d];
  for (size_t d = dim + 1; d < s.size(); ++d) inner *= s[d];
  const int64_t R = s[dim];
  const Shape out_shape = reduced_shape(s, {dim}, keepdim);
  Tensor values = empty(out_shape, x.dtype());
  Tensor indices = empty(out_shape, DType::Int64);
  int64_t* pi = indices.data_i64();
  dispatch_floating(x.dtype(), "max", [&](auto zero) {
    using T = decltype(zero);
    const T* in = x.data_ptr<T>();
    T* pv = values.data_ptr<T>();
    for (int64_t o = 0; o < outer; ++o) {
      for (int64_t i = 0; i < inner; ++i) {
        int64_t best = 0;
        T best_v = in[o * R * inner + i];
        for (int64_t r = 1; r < R && !std::isnan(best_v); ++r) {
          const T v = in[(o * R + r) * inner + i];
          if (v > best_v || std::isnan(v)) {  // NaN propagates, as in PyTorch
            best_v = v;
            best = r;
          }
        }
        pv[o * inner + i] = best_v;
        pi[o * inner + i] = best;
      }
    }
  });
  // d max / dx = 1 at the argmax, 0 elsewhere
  values =
      record_op(values, "max", {x},
                [idx = SavedTensor(indices), s, outer, R, inner](const Tensor& g, const GradMask&) {
                  Tensor gx = zeros(s, g.dtype());
                  const int64_t* arg = idx.get().data_i64();
                  dispatch_floating(g.dtype(), "max_backward", [&](auto zero) {
                    using T = decltype(zero);
                    T* dst = gx.data_ptr<T>();
                    const T* src = g.data_ptr<T>();
                    for (int64_t o = 0; o < outer; ++o) {
                      for (int64_t i = 0; i < inner; ++i) {
                        dst[(o * R + arg[o * inner + i]) * inner + i] = src[o * inner + i];
                      }
                    }
                  });
                  return std::vector<Tensor>{gx};
                });
  return {values, indices};
}

// ---- sum_to: the inverse of broadcasting ----
Tensor sum_to(const Tensor& grad, const Shape& shape) {
  check_float(grad, "sum_to");
  if (grad.shape() == shape) return grad;
  const Shape& gs = grad.shape();
  INK_CHECK(gs.size() >= shape.size(), "sum_to: shape {} cannot be reduced to {}", shape_str(gs),
            shape_str(shape));
  const size_t lead = gs.size() - shape.size();
  std::vector<int64_t> dims;
  for (size_t d = 0; d < gs.size(); ++d) {
    if (d < lead) {
      dims.push_back(static_cast<int64_t>(d));
    } else if (shape[d - lead] == 1 && gs[d] != 1) {
      dims.push_back(static_cast<int64_t>(d));
    } else {
      INK_CHECK(shape[d - lead] == gs[d], "sum_to: shape {} cannot be reduced to {}", shape_str(gs),
                shape_str(shape));
    }
  }
  if (dims.empty()) return reshape(grad, shape);
  return reshape(sum(grad, dims, /*keepdim=*/true), shape);
}

}  // namespace ink
