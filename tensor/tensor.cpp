// Tensor handles, storage with a size-keyed block cache, and the tensor factories.
#include "tensor/tensor.h"

#include <algorithm>
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
  switch (dtype) {
    case DType::Float32:
      return "Float32";
    case DType::Int64:
      return "Int64";
    case DType::Float64:
      return "Float64";
  }
  return "unknown";
}
size_t dtype_size(DType dtype) {
  return dtype == DType::Float32 ? 4 : 8;
}

// ---------------------------------------------------------------------------------------------
// Storage: 64-byte aligned blocks, recycled through a cache keyed by the rounded size.
//
// The cache holds freed blocks up to a cap that follows the peak of live storage (never below
// kCacheFloor), so a training step, whose next step needs about the blocks the last one freed,
// finds them all however large its activations are; the process then holds at most about twice
// its peak of live tensors. Blocks up to kThreadCacheMaxBlock (the small tensors a step makes by
// the hundred) go to a per-thread cache first, which takes no lock; larger blocks, and small ones
// beyond a thread's share, go to one shared cache behind a mutex (their allocation and first
// write cost far more than the lock). A thread's blocks return to the shared cache when it ends.
// ---------------------------------------------------------------------------------------------
namespace {

constexpr size_t kAlignment = 64;
constexpr size_t kCacheFloor = size_t{256} << 20;
constexpr size_t kThreadCacheMaxBlock = size_t{1} << 20;
constexpr size_t kThreadCacheMaxBytes = size_t{64} << 20;  // small blocks held per thread

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

using FreeLists = std::unordered_map<size_t, std::vector<void*>>;  // rounded size -> blocks

// Counters and sizes shared by every thread (relaxed: they are statistics and a soft cap).
struct CacheCounters {
  std::atomic<int64_t> hits{0}, misses{0}, os_allocations{0}, os_frees{0};
  std::atomic<size_t> cached_bytes{0}, live_bytes{0}, peak_live_bytes{0};

  size_t cap() const {
    return std::max(kCacheFloor, peak_live_bytes.load(std::memory_order_relaxed));
  }
  // Reserves room for `bytes` more cached bytes; false when the cache is full.
  bool reserve(size_t bytes) {
    if (cached_bytes.fetch_add(bytes, std::memory_order_relaxed) + bytes <= cap()) return true;
    cached_bytes.fetch_sub(bytes, std::memory_order_relaxed);
    return false;
  }
};

CacheCounters& counters() {
  static CacheCounters* c = new CacheCounters();  // leaked, like the shared cache
  return *c;
}

void* os_allocate(size_t bytes) {
  void* p = std::aligned_alloc(kAlignment, bytes);
  if (p == nullptr) throw Error(fmt::format("Storage: out of memory allocating {} bytes", bytes));
  counters().os_allocations.fetch_add(1, std::memory_order_relaxed);
  return p;
}

void os_free(void* p) {
  std::free(p);
  counters().os_frees.fetch_add(1, std::memory_order_relaxed);
}

void* pop(FreeLists& lists, size_t bytes) {
  auto it = lists.find(bytes);
  if (it == lists.end() || it->second.empty()) return nullptr;
  void* p = it->second.back();
  it->second.pop_back();
  return p;
}

class SharedCache {
 public:
  void* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    return pop(free_, bytes);
  }
  void put(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    free_[bytes].push_back(p);
  }
  void put_all(FreeLists& lists) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& [bytes, blocks] : lists) {
      auto& dst = free_[bytes];
      dst.insert(dst.end(), blocks.begin(), blocks.end());
    }
    lists.clear();
  }
  // Frees every cached block; returns the bytes freed.
  size_t release_all() {
    std::lock_guard<std::mutex> lock(mutex_);
    size_t freed = 0;
    for (auto& [bytes, blocks] : free_) {
      for (void* p : blocks) os_free(p);
      freed += bytes * blocks.size();
    }
    free_.clear();
    return freed;
  }

 private:
  std::mutex mutex_;
  FreeLists free_;
};

SharedCache& shared_cache() {
  // Leaked on purpose: tensors in static objects may be destroyed after this cache would be.
  static SharedCache* cache = new SharedCache();
  return *cache;
}

// Small blocks freed on this thread, reused by it without a lock.
struct ThreadCache {
  FreeLists free;
  size_t bytes = 0;
  ~ThreadCache();
};
thread_local bool t_cache_gone = false;  // set once this thread's cache is destroyed
thread_local ThreadCache t_cache;

ThreadCache::~ThreadCache() {
  t_cache_gone = true;
  shared_cache().put_all(free);
}

void* allocate_block(size_t bytes) {
  CacheCounters& c = counters();
  const size_t live = c.live_bytes.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  size_t peak = c.peak_live_bytes.load(std::memory_order_relaxed);
  while (live > peak && !c.peak_live_bytes.compare_exchange_weak(peak, live)) {
  }
  void* p = nullptr;
  if (!kCacheDisabled) {
    if (bytes <= kThreadCacheMaxBlock && !t_cache_gone) {
      p = pop(t_cache.free, bytes);
      if (p != nullptr) t_cache.bytes -= bytes;
    }
    if (p == nullptr) p = shared_cache().take(bytes);
  }
  if (p != nullptr) {
    c.cached_bytes.fetch_sub(bytes, std::memory_order_relaxed);
    c.hits.fetch_add(1, std::memory_order_relaxed);
    return p;
  }
  c.misses.fetch_add(1, std::memory_order_relaxed);
  try {
    return os_allocate(bytes);
  } catch (...) {
    c.live_bytes.fetch_sub(bytes, std::memory_order_relaxed);
    throw;
  }
}

void release_block(void* p, size_t bytes) {
  CacheCounters& c = counters();
  c.live_bytes.fetch_sub(bytes, std::memory_order_relaxed);
  if (kCacheDisabled || !c.reserve(bytes)) return os_free(p);
  if (bytes <= kThreadCacheMaxBlock && !t_cache_gone &&
      t_cache.bytes + bytes <= kThreadCacheMaxBytes) {
    t_cache.free[bytes].push_back(p);
    t_cache.bytes += bytes;
    return;
  }
  shared_cache().put(p, bytes);
}

size_t rounded_size(size_t nbytes) {
  return std::max(kAlignment, (nbytes + kAlignment - 1) / kAlignment * kAlignment);
}

std::atomic<int64_t> g_live_tensors{0};

}  // namespace

Storage::Storage(size_t nbytes) : data_(allocate_block(rounded_size(nbytes))), nbytes_(nbytes) {}

Storage::~Storage() {
  if (recompute_) {
    recompute_->final_version.store(version(), std::memory_order_relaxed);
    recompute_->released.store(true, std::memory_order_release);
  }
  release_block(data_, rounded_size(nbytes_));
}

StorageCacheStats storage_cache_stats() {
  const CacheCounters& c = counters();
  StorageCacheStats s;
  s.enabled = !kCacheDisabled;
  s.hits = c.hits.load();
  s.misses = c.misses.load();
  s.os_allocations = c.os_allocations.load();
  s.os_frees = c.os_frees.load();
  s.cached_bytes = c.cached_bytes.load();
  s.live_bytes = c.live_bytes.load();
  s.peak_live_bytes = c.peak_live_bytes.load();
  s.cap_bytes = c.cap();
  return s;
}

void release_cached_storage() {
  size_t freed = 0;
  if (!t_cache_gone) {
    for (auto& [bytes, blocks] : t_cache.free) {
      for (void* p : blocks) os_free(p);
      freed += bytes * blocks.size();
    }
    t_cache.free.clear();
    t_cache.bytes = 0;
  }
  freed += shared_cache().release_all();
  counters().cached_bytes.fetch_sub(freed);
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
double* Tensor::data_f64() {
  const auto& t = checked(impl_, "data_f64");
  check_dtype(t, DType::Float64, "data_f64");
  t.storage->bump_version();
  return static_cast<double*>(t.storage->data()) + t.offset;
}
const double* Tensor::data_f64() const {
  const auto& t = checked(impl_, "data_f64");
  check_dtype(t, DType::Float64, "data_f64");
  return static_cast<const double*>(std::as_const(*t.storage).data()) + t.offset;
}
template <>
float* Tensor::data_ptr<float>() {
  return data();
}
template <>
const float* Tensor::data_ptr<float>() const {
  return data();
}
template <>
double* Tensor::data_ptr<double>() {
  return data_f64();
}
template <>
const double* Tensor::data_ptr<double>() const {
  return data_f64();
}
template <>
int64_t* Tensor::data_ptr<int64_t>() {
  return data_i64();
}
template <>
const int64_t* Tensor::data_ptr<int64_t>() const {
  return data_i64();
}

uint64_t Tensor::version() const {
  return checked(impl_, "version").storage->version();
}
void Tensor::bump_version() const {
  checked(impl_, "bump_version").storage->bump_version();
}

float Tensor::item() const {
  return static_cast<float>(item_f64());
}
double Tensor::item_f64() const {
  INK_CHECK(numel() == 1, "item: only a one-element tensor converts to a number, got shape {}",
            shape_str(shape()));
  INK_CHECK(is_floating(dtype()),
            "item: expected a Float32 or Float64 tensor, got {} with shape {} (use item_i64)",
            dtype_name(dtype()), shape_str(shape()));
  return dtype() == DType::Float32 ? static_cast<double>(data()[0]) : data_f64()[0];
}
int64_t Tensor::item_i64() const {
  INK_CHECK(numel() == 1, "item_i64: only a one-element tensor converts to a number, got shape {}",
            shape_str(shape()));
  INK_CHECK(dtype() == DType::Int64,
            "item_i64: expected an Int64 tensor, got {} with shape {} (use item)",
            dtype_name(dtype()), shape_str(shape()));
  return data_i64()[0];
}

std::vector<float> Tensor::to_vector() const {
  if (defined() && dtype() == DType::Float64) {
    const double* p = data_f64();
    std::vector<float> out(static_cast<size_t>(numel()));
    for (int64_t i = 0; i < numel(); ++i) out[i] = static_cast<float>(p[i]);
    return out;
  }
  const float* p = data();
  return std::vector<float>(p, p + numel());
}
std::vector<double> Tensor::to_vector_f64() const {
  if (defined() && dtype() == DType::Float32) {
    const float* p = data();
    return std::vector<double>(p, p + numel());
  }
  const double* p = data_f64();
  return std::vector<double>(p, p + numel());
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
    out += t.dtype() == DType::Int64 ? fmt::format("{}", t.data_i64()[0])
                                     : fmt::format("{:.4f}", t.to_vector_f64()[0]);
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
      out += t.dtype() == DType::Int64     ? fmt::format("{}", t.data_i64()[at])
             : t.dtype() == DType::Float32 ? fmt::format("{:.4f}", t.data()[at])
                                           : fmt::format("{:.4f}", t.data_f64()[at]);
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
  INK_CHECK(!requires_grad || is_floating(t.dtype),
            "set_requires_grad: only Float32 tensors can require gradients (and Float64 ones, "
            "for gradcheck), got {}",
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
  if (!t.grad) return;
  TensorImpl& g = *t.grad;
  g.storage->bump_version();
  const size_t element = dtype_size(g.dtype);
  std::memset(static_cast<char*>(g.storage->data()) + g.offset * element, 0, element * g.numel);
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

Tensor full(const Shape& shape, double value, DType dtype) {
  INK_CHECK(is_floating(dtype), "full: expected Float32 or Float64, got {}", dtype_name(dtype));
  if (dtype == DType::Float32) return full(shape, static_cast<float>(value));
  Tensor t = empty(shape, DType::Float64);
  std::fill_n(t.data_f64(), t.numel(), value);
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
  return t.dtype() == DType::Float64 ? full(t.shape(), 1.0, DType::Float64) : ones(t.shape());
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
  // Checked before the conversion: a count past int64's range would be undefined behaviour.
  constexpr double kMaxCount = static_cast<double>(int64_t{1} << 48);
  INK_CHECK(count <= kMaxCount,
            "arange: start={} end={} step={} would give {:.3g} elements (at most 2^48 are allowed)",
            start, end, step, count);
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
