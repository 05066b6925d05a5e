// Tensor: the value type of inkgrad. A Tensor is a cheap handle: copies share the same data
// and the same autograd identity, like torch.Tensor in Python. Use clone() for a deep copy.
//
// Storage is row-major and contiguous. A view (reshape, view, squeeze, unsqueeze, detach)
// shares the storage of its base; transpose and permute copy, which keeps every kernel simple.
// dtype is Float32 for values and Int64 for index tensors (token ids). Float64 exists so that
// gradcheck can run in double precision, as PyTorch's does; every differentiable op accepts it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor/random.h"
#include "tensor/shape.h"

namespace ink {

enum class DType : uint8_t { Float32, Int64, Float64 };
const char* dtype_name(DType dtype);
size_t dtype_size(DType dtype);
inline bool is_floating(DType dtype) {
  return dtype == DType::Float32 || dtype == DType::Float64;
}

struct Recompute;

// What this object represents: a block of 64-byte aligned memory. Freed blocks are kept in a
// cache keyed by size (sized from the peak of live storage; see tensor.cpp), so a training loop
// that makes the same tensors every step does not go back to the operating system. Storage may
// be made and freed on any thread. The cache is off under AddressSanitizer.
class Storage {
 public:
  explicit Storage(size_t nbytes);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() { return data_; }
  const void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }

  // The version counter shared by every view of this storage: bumped by each write through
  // Tensor (non-const data(), bump_version()), checked by SavedTensor in backward.
  uint64_t version() const { return version_.load(std::memory_order_relaxed); }
  void bump_version() { version_.fetch_add(1, std::memory_order_relaxed); }

  // How to remake this storage's contents once it is freed (activation recomputation; see
  // Recompute below). Null for ordinary storage.
  const std::shared_ptr<Recompute>& recompute() const { return recompute_; }
  void set_recompute(std::shared_ptr<Recompute> recompute) { recompute_ = std::move(recompute); }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  std::atomic<uint64_t> version_{0};
  std::shared_ptr<Recompute> recompute_;
};

// What the storage cache has done since the process started (all threads together).
struct StorageCacheStats {
  bool enabled = false;        // false under AddressSanitizer: every block goes to malloc
  int64_t hits = 0;            // allocations served from the cache
  int64_t misses = 0;          // allocations the cache could not serve
  int64_t os_allocations = 0;  // blocks obtained from the system allocator
  int64_t os_frees = 0;        // blocks given back to it
  size_t cached_bytes = 0;     // bytes held in the cache now, free for reuse
  size_t live_bytes = 0;       // bytes of storage in use now
  size_t peak_live_bytes = 0;  // the most ever in use at once
  size_t cap_bytes = 0;        // the most the cache will hold now: max(256 MiB, peak_live_bytes)
};
StorageCacheStats storage_cache_stats();
// Gives every cached block in the shared cache and the calling thread's back to the system.
void release_cached_storage();

struct Node;
struct TensorImpl;

// Counts TensorImpl objects alive in this process (for leak tests).
int64_t live_tensor_count();

class Tensor {
 public:
  Tensor() = default;  // an undefined tensor; defined() is false
  explicit Tensor(std::shared_ptr<TensorImpl> impl);

  bool defined() const { return impl_ != nullptr; }

  // ---- shape and type ----
  const Shape& shape() const;
  int64_t dim() const;
  int64_t size(int64_t dim) const;  // negative dims count from the end
  int64_t numel() const;
  DType dtype() const;

  // ---- raw data (contiguous, row-major). Throws if the dtype does not match. ----
  // The non-const accessors count as a write: they bump the storage's version, so a backward
  // that saved this tensor notices the change (see SavedTensor). Read through a const handle
  // (`std::as_const(t).data()`) when you only read.
  float* data();
  const float* data() const;
  int64_t* data_i64();
  const int64_t* data_i64() const;
  double* data_f64();
  const double* data_f64() const;
  // The same accessors by element type (float, double or int64_t), for templated kernels.
  template <class T>
  T* data_ptr();
  template <class T>
  const T* data_ptr() const;
  // The version of the storage (shared by every view of it): how many writes it has seen.
  uint64_t version() const;
  // Counts a write made without data() (e.g. through impl()->storage).
  void bump_version() const;

  float item() const;        // a one-element Float32 (or Float64, rounded) tensor's value
  double item_f64() const;   // a one-element Float32 or Float64 tensor's value
  int64_t item_i64() const;  // a one-element Int64 tensor's value
  std::vector<float> to_vector() const;       // Float32 (or Float64, rounded) values
  std::vector<double> to_vector_f64() const;  // Float32 or Float64 values
  std::vector<int64_t> to_vector_i64() const;
  std::string to_string() const;  // shape, dtype and (a summary of) the values

  // ---- autograd ----
  bool requires_grad() const;
  // Marks a leaf as needing a gradient. Returns *this (a handle to the same tensor).
  Tensor set_requires_grad(bool requires_grad = true);
  // The accumulated gradient of a leaf (undefined until a backward reaches it).
  Tensor grad() const;
  // Replaces the accumulated gradient (an undefined tensor clears it).
  void set_grad(const Tensor& grad);
  // Zeroes the accumulated gradient in place (keeps its buffer, so a loop allocates nothing).
  void zero_grad();
  bool is_leaf() const;                          // not produced by a recorded op
  const std::shared_ptr<Node>& grad_fn() const;  // the op that produced this tensor, if recorded

  // Runs reverse-mode autodiff from this tensor. A non-scalar needs an explicit gradient of its
  // shape. Leaves accumulate into grad(). The graph is freed unless retain_graph is true.
  void backward(const Tensor& gradient = Tensor(), bool retain_graph = false) const;

  // A new handle on the same storage that is cut from the graph and never requires grad.
  Tensor detach() const;
  // A deep copy of the data (recorded by autograd, gradient flows to *this).
  Tensor clone() const;
  // A copy converted to `dtype` (Float32 <-> Float64; recorded by autograd, the gradient is
  // converted back). Returns *this when the dtype already matches.
  Tensor to(DType dtype) const;

  // A name for leaves (parameters), shown by to_dot.
  const std::string& name() const;
  Tensor set_name(std::string name);

  // ---- common ops as methods (see ops.h for the full list) ----
  Tensor reshape(const Shape& shape) const;
  Tensor view(const Shape& shape) const;
  Tensor transpose(int64_t dim0, int64_t dim1) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze(int64_t dim) const;
  Tensor sum() const;
  Tensor sum(const std::vector<int64_t>& dims, bool keepdim = false) const;
  Tensor mean() const;
  Tensor mean(const std::vector<int64_t>& dims, bool keepdim = false) const;

  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// What this object represents: the state behind a Tensor handle. Internal to the library,
// but public so that kernels and tests can look inside.
struct TensorImpl {
  TensorImpl(std::shared_ptr<Storage> storage, int64_t offset, Shape shape, DType dtype);
  ~TensorImpl();
  TensorImpl(const TensorImpl&) = delete;
  TensorImpl& operator=(const TensorImpl&) = delete;

  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in elements, from the start of storage
  Shape shape;
  int64_t numel = 0;
  DType dtype = DType::Float32;
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;      // accumulated gradient (leaves only)
  std::shared_ptr<Node> grad_fn;         // the op that produced this tensor, if recorded
  std::weak_ptr<Node> grad_accumulator;  // a leaf's accumulator, while a graph uses it
  std::string name;
};

// What this object represents: a recipe that remakes an op's output from the op's inputs, so that
// the backward of a later op that needs that output does not keep it alive (activation
// recomputation, as in torch.utils.checkpoint, but per op). An op that is cheap next to its
// consumers (group_norm_silu before a convolution) attaches one to its output's storage; a
// SavedTensor of that storage then holds only a weak reference and, when the storage is gone by
// the time backward runs, calls `remake`. The storage's final version is kept here, so a write
// in place before the storage was freed is still caught.
struct Recompute {
  // Returns a contiguous tensor with the storage's whole contents, bit-identical to the original.
  std::function<Tensor()> remake;
  std::atomic<bool> released{false};  // the storage is freed
  std::atomic<uint64_t> final_version{0};
};

// ---- factories ----
Tensor empty(const Shape& shape, DType dtype = DType::Float32);  // uninitialised
Tensor zeros(const Shape& shape, DType dtype = DType::Float32);
Tensor ones(const Shape& shape);
Tensor full(const Shape& shape, float value);
Tensor full(const Shape& shape, double value, DType dtype);  // Float32 or Float64
Tensor scalar(float value);                                  // a rank-0 tensor
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
// Copies `values` into a new tensor; values.size() must equal the shape's element count.
Tensor from_vector(const std::vector<float>& values, const Shape& shape);
Tensor from_vector_i64(const std::vector<int64_t>& values, const Shape& shape);
// [start, start+step, ...) below end, as Float32.
Tensor arange(float start, float end, float step = 1.0f);
Tensor arange(int64_t end);  // 0, 1, ..., end-1 as Float32
// Standard normal / uniform [0, 1) samples; uses default_generator() when gen is null.
Tensor randn(const Shape& shape, Generator* gen = nullptr);
Tensor rand(const Shape& shape, Generator* gen = nullptr);
// Uniform in [low, high).
Tensor uniform(const Shape& shape, float low, float high, Generator* gen = nullptr);

}  // namespace ink
