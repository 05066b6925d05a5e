// The embedding gather: rows of a [V, D] table picked by Int64 ids of any shape.
// Legend: V = rows of the table (vocabulary), D = embedding width, P = number of ids.
#include <cstring>

#include "tensor/ops/ops_internal.h"

namespace ink {

using namespace detail;

Tensor embedding(const Tensor& weight, const Tensor& indices, std::optional<int64_t> padding_idx) {
  check_float(weight, "embedding");
  check_defined(indices, "embedding");
  INK_CHECK(weight.dim() == 2, "embedding: weight must be 2-D [num_embeddings, dim], got {}",
            shape_str(weight.shape()));
  INK_CHECK(indices.dtype() == DType::Int64,
            "embedding: indices must be an Int64 tensor, got {} with shape {}",
            dtype_name(indices.dtype()), shape_str(indices.shape()));
  const int64_t V = weight.size(0), D = weight.size(1), P = indices.numel();
  if (padding_idx) {
    INK_CHECK(*padding_idx >= -V && *padding_idx < V,
              "embedding: padding_idx {} is out of range for a table of {} rows", *padding_idx, V);
    if (*padding_idx < 0) *padding_idx += V;
  }
  Shape out_shape = indices.shape();
  out_shape.push_back(D);
  check_shape(out_shape, "embedding");
  const int64_t* ids = indices.data_i64();
  for (int64_t p = 0; p < P; ++p) {
    INK_CHECK(ids[p] >= 0 && ids[p] < V,
              "embedding: index {} at position {} is out of range for a table of {} rows", ids[p],
              p, V);
  }
  Tensor out = empty(out_shape);
  const float* table = weight.data();
  float* dst = out.data();
  for (int64_t p = 0; p < P; ++p) std::memcpy(dst + p * D, table + ids[p] * D, sizeof(float) * D);

  // d out[p] / d weight[ids[p]] = 1: scatter-add, so repeated ids sum; padding gets nothing
  return record_op(
      out, "embedding", {weight, indices},
      [ids = SavedTensor(indices), V, D, P, padding_idx](const Tensor& g, const GradMask&) {
        Tensor gw = zeros({V, D});
        float* dw = gw.data();
        const float* src = g.data();
        const int64_t* pi = ids.get().data_i64();
        for (int64_t p = 0; p < P; ++p) {
          if (padding_idx && pi[p] == *padding_idx) continue;
          float* row = dw + pi[p] * D;
          for (int64_t d = 0; d < D; ++d) row[d] += src[p * D + d];
        }
        return std::vector<Tensor>{gw, Tensor()};
      });
}

}  // namespace ink
