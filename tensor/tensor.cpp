// Tensor handles, storage with a small size-keyed cache, and the tensor factories.
#include "tensor/tensor.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "tensor/autograd.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace ink {

const char* dtype_name(DType dtype) {
  return dtype == DType::Float32 ? "Float32" : "Int64";
}
size_t dtype_size(DType dtype) {
  return dtype == DType::Float32 ? 4 : 8;
}

// ---------------------------------------------------------------------------------------------
// Storage: 64-byte aligned blocks, recycled through a cache keyed by the rounded size.
// ---------------------------------------------------------------------------------------------
namespace {

constexpr size_t kAlignment = 64;
constexpr size_t kMaxCachedBytes = size_t{64} << 20;  // keep at most 64 MiB of free blocks

// Under AddressSanitizer every block goes straight back to malloc, so a use after free of
// tensor storage is reported instead of silently reading a recycled block.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kCacheDisabled = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kCacheDisabled = true;
#else
constexpr bool kCacheDisabled = false;
#endif
#else
constexpr bool kCacheDisabled = false;
#endif

class BlockCache {
 public:
  void* allocate(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.find(bytes);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached_bytes_ -= bytes;
        return p;
      }
    }
    void* p = std::aligned_alloc(kAlignment, bytes);
    if (p == nullptr) throw Error(fmt::format("Storage: out of memory allocating {} bytes", bytes));
    return p;
  }

  void release(void* p, size_t bytes) {
    if (kCacheDisabled) {
      std::free(p);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (cached_bytes_ + bytes <= kMaxCachedBytes) {
        free_[bytes].push_back(p);
        cached_bytes_ += bytes;
        return;
      }
    }
    std::free(p);
  }

  ~BlockCache() {
    for (auto& [bytes, blocks] : free_) {
      for (void* p : blocks) std::free(p);
    }
  }

 private:
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t cached_bytes_ = 0;
};

BlockCache& block_cache() {
  // Leaked on purpose: tensors in static objects may be destroyed after this cache would be.
  static BlockCache* cache = new BlockCache();
  return *cache;
}

size_t rounded_size(size_t nbytes) {
  return std::max(kAlignment, (nbytes + kAlignment - 1) / kAlignment * kAlignment);
}

std::atomic<int64_t> g_live_tensors{0};

}  // namespace

Storage::Storage(size_t nbytes)
    : data_(block_cache().allocate(rounded_size(nbytes))), nbytes_(nbytes) {}

Storage::~Storage() {
  block_cache().release(data_, rounded_size(nbytes_));
}

int64_t live_tensor_count() {
  return g_live_tensors.load();
}

TensorImpl::TensorImpl(std::shared_ptr<Storage> storage_, int64_t offset_, Shape shape_,
                       DType dtype_)
    : storage(std::move(storage_)),
      offset(offset_),
      shape(std::move(shape_)),
      numel(shape_numel(shape)),
      dtype(dtype_) {
  ++g_live_tensors;
}

TensorImpl::~TensorImpl() {
  --g_live_tensors;
}

// ---------------------------------------------------------------------------------------------
// Tensor
// ---------------------------------------------------------------------------------------------
namespace {
const TensorImpl& checked(const std::shared_ptr<TensorImpl>& impl, const char* what) {
  INK_CHECK(impl != nullptr, "{}: the tensor is undefined", what);
  return *impl;
}
}  // namespace

Tensor::Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

const Shape& Tensor::shape() const {
  return checked(impl_, "shape").shape;
}
int64_t Tensor::dim() const {
  return static_cast<int64_t>(shape().size());
}
int64_t Tensor::size(int64_t d) const {
  const auto& s = shape();
  d = normalize_dim(d, static_cast<int64_t>(s.size()), "size");
  INK_CHECK(!s.empty(), "size: a scalar has no dims");
  return s[d];
}
int64_t Tensor::numel() const {
  return checked(impl_, "numel").numel;
}
DType Tensor::dtype() const {
  return checked(impl_, "dtype").dtype;
}

namespace {
void check_dtype(const TensorImpl& t, DType want, const char* what) {
  INK_CHECK(t.dtype == want, "{}: expected a {} tensor, got {} with shape {}", what,
            dtype_name(want), dtype_name(t.dtype), shape_str(t.shape));
}
}  // namespace

float* Tensor::data() {
  const auto& t = checked(impl_, "data");
  check_dtype(t, DType::Float32, "data");
  t.storage->bump_version();
  return static_cast<float*>(t.storage->data()) + t.offset;
}
const float* Tensor::data() const {
  const auto& t = checked(impl_, "data");
  check_dtype(t, DType::Float32, "data");
  return static_cast<const float*>(std::as_const(*t.storage).data()) + t.offset;
}
int64_t* Tensor::data_i64() {
  const auto& t = checked(impl_, "data_i64");
  check_dtype(t, DType::Int64, "data_i64");
  t.storage->bump_version();
  return static_cast<int64_t*>(t.storage->data()) + t.offset;
}
const int64_t* Tensor::data_i64() const {
  const auto& t = checked(impl_, "data_i64");
  check_dtype(t, DType::Int64, "data_i64");
  return static_cast<const int64_t*>(std::as_const(*t.storage).data()) + t.offset;
}
uint64_t Tensor::version() const {
  return checked(impl_, "version").storage->version();
}
void Tensor::bump_version() const {
  checked(impl_, "bump_version").storage->bump_version();
}

float Tensor::item() const {
  INK_CHECK(numel() == 1, "item: only a one-element tensor converts to a number, got shape {}",
            shape_str(shape()));
  return data()[0];
}
int64_t Tensor::item_i64() const {
  INK_CHECK(numel() == 1, "item_i64: only a one-element tensor converts to a number, got shape {}",
            shape_str(shape()));
  return data_i64()[0];
}

std::vector<float> Tensor::to_vector() const {
  const float* p = data();
  return std::vector<float>(p, p + numel());
}
std::vector<int64_t> Tensor::to_vector_i64() const {
  const int64_t* p = data_i64();
  return std::vector<int64_t>(p, p + numel());
}

namespace {
// Prints nested brackets, eliding the middle of dims longer than 6 (like PyTorch's summary).
void format_values(std::string& out, const Tensor& t, int64_t dim, int64_t offset) {
  const Shape& s = t.shape();
  if (s.empty()) {
    out += t.dtype() == DType::Float32 ? fmt::format("{:.4f}", t.data()[0])
                                       : fmt::format("{}", t.data_i64()[0]);
    return;
  }
  const int64_t n = s[dim];
  int64_t stride = 1;
  for (size_t d = dim + 1; d < s.size(); ++d) stride *= s[d];
  out += '[';
  const bool elide = n > 6;
  for (int64_t i = 0; i < n; ++i) {
    if (elide && i == 3) {
      out += "..., ";
      i = n - 3;
    }
    if (dim + 1 == static_cast<int64_t>(s.size())) {
      const int64_t at = offset + i;
      out += t.dtype() == DType::Float32 ? fmt::format("{:.4f}", t.data()[at])
                                         : fmt::format("{}", t.data_i64()[at]);
    } else {
      format_values(out, t, dim + 1, offset + i * stride);
    }
    if (i + 1 < n) out += ", ";
  }
  out += ']';
}
}  // namespace

std::string Tensor::to_string() const {
  if (!defined()) return "Tensor(undefined)";
  std::string out = "tensor(";
  format_values(out, *this, 0, 0);
  out += fmt::format(", shape={}, dtype={}", shape_str(shape()), dtype_name(dtype()));
  if (impl_->grad_fn)
    out += fmt::format(", grad_fn={}", impl_->grad_fn->op_name);
  else if (impl_->requires_grad)
    out += ", requires_grad=true";
  out += ')';
  return out;
}

bool Tensor::requires_grad() const {
  return checked(impl_, "requires_grad").requires_grad;
}

Tensor Tensor::set_requires_grad(bool requires_grad) {
  auto& t = const_cast<TensorImpl&>(checked(impl_, "set_requires_grad"));
  INK_CHECK(t.grad_fn == nullptr,
            "set_requires_grad: only leaf tensors can change requires_grad (this one comes from "
            "op {})",
            t.grad_fn ? t.grad_fn->op_name : "");
  INK_CHECK(!requires_grad || t.dtype == DType::Float32,
            "set_requires_grad: only Float32 tensors can require gradients, got {}",
            dtype_name(t.dtype));
  t.requires_grad = requires_grad;
  return *this;
}

Tensor Tensor::grad() const {
  const auto& t = checked(impl_, "grad");
  return Tensor(t.grad);
}

void Tensor::set_grad(const Tensor& grad) {
  auto& t = const_cast<TensorImpl&>(checked(impl_, "set_grad"));
  if (grad.defined()) {
    INK_CHECK(grad.shape() == t.shape, "set_grad: gradient shape {} does not match tensor shape {}",
              shape_str(grad.shape()), shape_str(t.shape));
  }
  t.grad = grad.impl_ptr();
}

void Tensor::zero_grad() {
  const auto& t = checked(impl_, "zero_grad");
  if (t.grad) std::memset(Tensor(t.grad).data(), 0, sizeof(float) * t.grad->numel);
}

bool Tensor::is_leaf() const {
  return checked(impl_, "is_leaf").grad_fn == nullptr;
}

const std::shared_ptr<Node>& Tensor::grad_fn() const {
  return checked(impl_, "grad_fn").grad_fn;
}

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  run_backward(*this, gradient, retain_graph);
}

Tensor Tensor::detach() const {
  const auto& t = checked(impl_, "detach");
  return Tensor(std::make_shared<TensorImpl>(t.storage, t.offset, t.shape, t.dtype));
}

const std::string& Tensor::name() const {
  return checked(impl_, "name").name;
}

Tensor Tensor::set_name(std::string name) {
  const_cast<TensorImpl&>(checked(impl_, "set_name")).name = std::move(name);
  return *this;
}

Tensor Tensor::reshape(const Shape& s) const {
  return ink::reshape(*this, s);
}
Tensor Tensor::view(const Shape& s) const {
  return ink::view(*this, s);
}
Tensor Tensor::transpose(int64_t d0, int64_t d1) const {
  return ink::transpose(*this, d0, d1);
}
Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  return ink::permute(*this, dims);
}
Tensor Tensor::unsqueeze(int64_t d) const {
  return ink::unsqueeze(*this, d);
}
Tensor Tensor::squeeze(int64_t d) const {
  return ink::squeeze(*this, d);
}
Tensor Tensor::sum() const {
  return ink::sum(*this);
}
Tensor Tensor::sum(const std::vector<int64_t>& dims, bool keepdim) const {
  return ink::sum(*this, dims, keepdim);
}
Tensor Tensor::mean() const {
  return ink::mean(*this);
}
Tensor Tensor::mean(const std::vector<int64_t>& dims, bool keepdim) const {
  return ink::mean(*this, dims, keepdim);
}

// ---------------------------------------------------------------------------------------------
// Factories
// ---------------------------------------------------------------------------------------------
Tensor empty(const Shape& shape, DType dtype) {
  check_shape(shape, "empty");
  const int64_t n = shape_numel(shape);
  INK_CHECK(n <= (int64_t{1} << 40) / static_cast<int64_t>(dtype_size(dtype)),
            "empty: shape {} is too large ({} elements)", shape_str(shape), n);
  auto storage = std::make_shared<Storage>(static_cast<size_t>(n) * dtype_size(dtype));
  return Tensor(std::make_shared<TensorImpl>(std::move(storage), 0, shape, dtype));
}

Tensor zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  std::memset(t.impl()->storage->data(), 0, t.impl()->storage->nbytes());
  return t;
}

Tensor full(const Shape& shape, float value) {
  Tensor t = empty(shape);
  std::fill_n(t.data(), t.numel(), value);
  return t;
}

Tensor ones(const Shape& shape) {
  return full(shape, 1.0f);
}
Tensor scalar(float value) {
  return full({}, value);
}
Tensor zeros_like(const Tensor& t) {
  return zeros(t.shape(), t.dtype());
}
Tensor ones_like(const Tensor& t) {
  return ones(t.shape());
}

Tensor from_vector(const std::vector<float>& values, const Shape& shape) {
  check_shape(shape, "from_vector");
  INK_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape),
            "from_vector: {} values do not fill shape {} ({} elements)", values.size(),
            shape_str(shape), shape_numel(shape));
  Tensor t = empty(shape);
  std::copy(values.begin(), values.end(), t.data());
  return t;
}

Tensor from_vector_i64(const std::vector<int64_t>& values, const Shape& shape) {
  check_shape(shape, "from_vector_i64");
  INK_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape),
            "from_vector_i64: {} values do not fill shape {} ({} elements)", values.size(),
            shape_str(shape), shape_numel(shape));
  Tensor t = empty(shape, DType::Int64);
  std::copy(values.begin(), values.end(), t.data_i64());
  return t;
}

Tensor arange(float start, float end, float step) {
  INK_CHECK(step != 0.0f && std::isfinite(step) && std::isfinite(start) && std::isfinite(end),
            "arange: invalid range start={} end={} step={}", start, end, step);
  const double count = std::ceil((static_cast<double>(end) - start) / step);
  const int64_t n = count > 0 ? static_cast<int64_t>(count) : 0;
  Tensor t = empty({n});
  float* p = t.data();
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<float>(start + static_cast<double>(i) * step);
  return t;
}

Tensor arange(int64_t end) {
  INK_CHECK(end >= 0, "arange: end must be non-negative, got {}", end);
  return arange(0.0f, static_cast<float>(end), 1.0f);
}

Tensor randn(const Shape& shape, Generator* gen) {
  Generator& g = gen ? *gen : default_generator();
  Tensor t = empty(shape);
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = g.normal();
  return t;
}

Tensor rand(const Shape& shape, Generator* gen) {
  return uniform(shape, 0.0f, 1.0f, gen);
}

Tensor uniform(const Shape& shape, float low, float high, Generator* gen) {
  INK_CHECK(low <= high, "uniform: low ({}) must not exceed high ({})", low, high);
  Generator& g = gen ? *gen : default_generator();
  Tensor t = empty(shape);
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = g.uniform(low, high);
  return t;
}

}  // namespace ink
