// Shape helpers: printing, element counts, dim normalisation and broadcasting.
#include "tensor/shape.h"

#include <limits>

#include "tensor/error.h"

namespace ink {

std::string shape_str(const Shape& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) {
    INK_CHECK(s >= 0, "shape {}: sizes must be non-negative", shape_str(shape));
    if (s != 0 && n > std::numeric_limits<int64_t>::max() / s) {
      INK_FAIL("shape {}: element count overflows int64", shape_str(shape));
    }
    n *= s;
  }
  return n;
}

void check_shape(const Shape& shape, const char* op) {
  INK_CHECK(static_cast<int64_t>(shape.size()) <= kMaxRank,
            "{}: shape {} has rank {}, which exceeds the maximum rank of {}", op, shape_str(shape),
            shape.size(), kMaxRank);
  for (int64_t s : shape) {
    INK_CHECK(s >= 0, "{}: shape {} has a negative size", op, shape_str(shape));
  }
  shape_numel(shape);
}

int64_t normalize_dim(int64_t dim, int64_t rank, const char* op) {
  // A scalar accepts dim 0 and -1, as PyTorch does.
  const int64_t r = rank == 0 ? 1 : rank;
  INK_CHECK(dim >= -r && dim < r, "{}: dim {} is out of range for a tensor of rank {}", op, dim,
            rank);
  return dim < 0 ? dim + r : dim;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    const int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    const int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    INK_CHECK(da == db || da == 1 || db == 1,
              "{}: shapes {} and {} cannot be broadcast ({} vs {} at dim {})", op, shape_str(a),
              shape_str(b), da, db, i);
    out[i] = da == 1 ? db : da;
  }
  return out;
}

std::vector<int64_t> contiguous_strides(const Shape& shape) {
  std::vector<int64_t> strides(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

}  // namespace ink
