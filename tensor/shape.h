// Shapes: a tensor's sizes, outermost first (row-major). Helpers for printing, counting,
// normalising a negative dim, and the NumPy broadcasting rule.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ink {

using Shape = std::vector<int64_t>;

// The largest rank a tensor may have. 4 covers images (N, C, H, W) and attention (B, H, T, D).
inline constexpr int64_t kMaxRank = 4;

// "[64, 96]"; a scalar prints as "[]".
std::string shape_str(const Shape& shape);

// Product of the sizes (1 for a scalar). Throws if the count overflows int64.
int64_t shape_numel(const Shape& shape);

// Checks rank and sizes for a new tensor; `op` names the caller in the error.
void check_shape(const Shape& shape, const char* op);

// Maps dim in [-rank, rank) to [0, rank); throws ink::Error naming `op` otherwise.
int64_t normalize_dim(int64_t dim, int64_t rank, const char* op);

// NumPy broadcasting: align from the right; sizes must match or be 1.
// Throws "op: shapes [2, 3] and [4] cannot be broadcast (3 vs 4 at dim 1)".
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);

// Row-major strides of a contiguous tensor of this shape (in elements).
std::vector<int64_t> contiguous_strides(const Shape& shape);

}  // namespace ink
