// libFuzzer target for the safetensors reader: any input must either parse or throw ink::Error,
// and whatever parses must write back and read back to the same tensors.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "nn/safetensors.h"
#include "tensor/error.h"

namespace {

bool same_bytes(const ink::Tensor& a, const ink::Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  const size_t n = static_cast<size_t>(a.numel()) * ink::dtype_size(a.dtype());
  if (n == 0) return true;
  if (a.dtype() == ink::DType::Float32) return std::memcmp(a.data(), b.data(), n) == 0;
  return std::memcmp(a.data_i64(), b.data_i64(), n) == 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ink::SafetensorsFile file;
  try {
    file = ink::parse_safetensors({data, size}, "fuzz-input");
  } catch (const ink::Error&) {
    return 0;  // rejected with a message: the expected outcome for most inputs
  }
  // Accepted: the round trip must hold. Exceptions here are bugs, so they are not caught.
  const ink::SafetensorsFile again =
      ink::parse_safetensors(ink::serialize_safetensors(file.tensors, file.metadata), "rewrite");
  if (again.metadata != file.metadata || again.tensors.size() != file.tensors.size()) {
    __builtin_trap();
  }
  for (size_t i = 0; i < file.tensors.size(); ++i) {
    if (again.tensors[i].first != file.tensors[i].first ||
        !same_bytes(again.tensors[i].second, file.tensors[i].second)) {
      __builtin_trap();
    }
  }
  return 0;
}
