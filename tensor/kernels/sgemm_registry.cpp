// The sgemm family's registry and the default kernel.
#include <string>
#include <vector>

#include "tensor/error.h"
#include "tensor/kernels/sgemm.h"
#include "tensor/kernels/sgemm_packed.h"

namespace ink::kernels {

const std::vector<SgemmKernel>& sgemm_kernels() {
  static const std::vector<SgemmKernel> kernels = {
      {"naive", &sgemm_naive},
      {"blocked", &sgemm_blocked},
      {"packed", &sgemm_packed},
      {"packed_mt", &sgemm_packed_mt},
  };
  return kernels;
}

SgemmFn sgemm_kernel(const std::string& name) {
  std::vector<std::string> names;
  for (const auto& k : sgemm_kernels()) {
    if (k.name == name) return k.fn;
    names.push_back(k.name);
  }
  INK_FAIL("sgemm_kernel: unknown kernel \"{}\" (known: {})", name, fmt::join(names, ", "));
}

void sgemm(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha,
           const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
           int64_t ldc) {
  sgemm_packed_mt(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

const char* sgemm_isa() {
  return packed::best_microkernel().isa;
}

}  // namespace ink::kernels
