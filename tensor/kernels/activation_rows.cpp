// Chooses the row-primitive table for this CPU (see activation_rows.h). The CPU check runs here,
// in a file compiled for the baseline instruction set, before any AVX code can execute.
#include "tensor/kernels/activation_rows.h"

namespace ink::kernels::rows {

// INK_ROWS_X86 is defined by tensor/CMakeLists.txt when it compiles the AVX2 and AVX-512 files.
const RowKernels* row_kernels_avx512() {
#ifdef INK_ROWS_X86
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
  if (ok) return &row_kernels_avx512_unchecked();
#endif
  return nullptr;
}

const RowKernels* row_kernels_avx2() {
#ifdef INK_ROWS_X86
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (ok) return &row_kernels_avx2_unchecked();
#endif
  return nullptr;
}

std::vector<const RowKernels*> available_row_kernels() {
  std::vector<const RowKernels*> sets;
  if (const RowKernels* k = row_kernels_avx512()) sets.push_back(k);
  if (const RowKernels* k = row_kernels_avx2()) sets.push_back(k);
  sets.push_back(&row_kernels_generic());
  return sets;
}

const RowKernels& best_row_kernels() {
  static const RowKernels& best = *available_row_kernels().front();
  return best;
}

}  // namespace ink::kernels::rows
