// The autograd engine: graph nodes, saved tensors, the backward pass, and grad mode.
//
// Each differentiable op computes its result and, when grad mode is on and an input requires
// grad, attaches a Node whose backward closure maps the output's gradient to its inputs'
// gradients (see ops/*.cpp, where every forward has its backward right below it).
//
// A Node does not own its inputs. Its edges point at the nodes that produced them (or, for a
// leaf that requires grad, at the leaf's gradient accumulator), and it keeps only the tensors
// its backward captured explicitly as SavedTensor. So `add` keeps nothing alive but its edges,
// and an intermediate result is freed as soon as no handle and no backward needs it.
// A Node never holds its own output, so graphs have no reference cycles.
//
// Reading order: GradMask, SavedTensor, Node, record_op, then run_backward in autograd.cpp.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace ink {

// What this object represents: which inputs of a recorded op need a gradient. needs[i] is true
// when input i requires grad (directly, or through the ops that produced it). A backward must
// skip the inputs whose entry is false and return an undefined Tensor for them.
class GradMask {
 public:
  GradMask() = default;
  explicit GradMask(std::vector<bool> needs) : needs_(std::move(needs)) {}
  // False for an index past the end, so `needs[2]` is safe on an op called without a bias.
  bool operator[](size_t i) const { return i < needs_.size() && needs_[i]; }
  size_t size() const { return needs_.size(); }

 private:
  std::vector<bool> needs_;
};

// Maps the gradient of an op's output to one gradient per input, computing only those that
// `needs` asks for (the others stay undefined).
using BackwardFn =
    std::function<std::vector<Tensor>(const Tensor& grad_output, const GradMask& needs)>;

// What this object represents: a tensor that a backward closure needs, saved at record time.
// It holds a detached handle (no graph, so no reference cycles) and the version of the storage
// when it was saved. get() checks that version: if the data was written since (any non-const
// data() call, on this tensor or any view of its storage), the gradient would silently be wrong,
// so get() throws an ink::Error naming the op instead, as PyTorch does.
//
// A tensor whose storage carries a Recompute (see tensor.h) is saved by a weak reference only:
// get() returns the storage while something else keeps it alive, and otherwise remakes it.
class SavedTensor {
 public:
  SavedTensor() = default;  // nothing saved; defined() is false
  explicit SavedTensor(const Tensor& tensor);

  bool defined() const { return tensor_.defined() || recompute_ != nullptr; }
  // The saved tensor; throws when it was modified in place after it was saved. Returned as a
  // const value on purpose: `get().data()` must pick the reading overload, which does not count
  // as a write (see Tensor::data).
  const Tensor get() const;  // NOLINT(readability-const-return-type)

 private:
  Tensor tensor_;
  uint64_t version_ = 0;
  // Only for a recomputable storage (tensor_ is then undefined):
  std::shared_ptr<Recompute> recompute_;
  std::weak_ptr<Storage> storage_;
  int64_t offset_ = 0;
  Shape shape_;
  DType dtype_ = DType::Float32;
};

// What this object represents: one recorded op in the graph (or a leaf's gradient accumulator).
struct Node {
  // One edge per input of the op, in the order of the inputs.
  struct Edge {
    // The node that produced the input, or the leaf's accumulator; null when the input needs
    // no gradient (data, a detached tensor, an Int64 index tensor).
    std::shared_ptr<Node> node;
    Shape shape;                   // the input's shape: checks the returned gradient, labels to_dot
    std::string name;              // the name of an input without a node (to_dot's grey boxes)
    DType dtype = DType::Float32;  // the input's dtype: a gradient is converted to it
    bool defined = false;          // false for an undefined input (an absent optional argument)
  };

  Node(const char* op_name, std::vector<Edge> edges, Shape output_shape, BackwardFn backward);
  // A gradient accumulator: the node through which gradients reach `leaf`. Like PyTorch's
  // AccumulateGrad, it holds the leaf, and the leaf remembers it (weakly) so that every op
  // using the leaf shares one accumulator.
  static std::shared_ptr<Node> accumulator_for(const std::shared_ptr<TensorImpl>& leaf);

  ~Node();  // dismantles long chains iteratively, so deep graphs free without recursion
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  bool is_accumulator() const { return leaf != nullptr; }
  // Drops the saved tensors and the edges; a second backward through this node then fails
  // with a clear error.
  void release();

  const char* op_name;
  std::vector<Edge> edges;
  GradMask needs;      // needs[i] == (edges[i].node != nullptr)
  Shape output_shape;  // the shape of the gradient this node receives
  BackwardFn backward;
  std::shared_ptr<TensorImpl> leaf;  // set for an accumulator only
  bool released = false;
};

// Wraps `output` as the result of op `op_name` on `inputs`. When grad mode is enabled and any
// input requires grad, the output gets a Node with `backward` and requires grad itself.
// This is the one function every op (and any user-defined op) calls to join the graph.
// `inputs` only gives the edges: the node keeps no reference to them. Whatever the backward
// needs must be captured as SavedTensor (or plain values such as shapes).
Tensor record_op(Tensor output, const char* op_name, const std::vector<Tensor>& inputs,
                 BackwardFn backward);

// Marks the output of an op that was just recorded as recomputable (see Recompute in tensor.h):
// a SavedTensor of it then keeps only a weak reference, and `remake` runs when a backward needs
// the values after the output is gone. `remake` must return the same bits (the same kernel on
// inputs it captured as SavedTensor). Does nothing when the op was not recorded, so inference
// keeps nothing extra alive. Worth it only for ops that are cheap next to their consumers and
// whose inputs are kept anyway (a norm's input, an upsampling's smaller input).
void make_recomputable(const Tensor& output, std::function<Tensor()> remake);

// True when ops record the graph (the default). Thread-local, like PyTorch.
bool is_grad_enabled();

// Disables graph recording for its lifetime, like torch.no_grad(). It is independent of a
// Module's train()/eval() mode, which changes layer behaviour instead. Thread-local.
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// When enabled, every recorded op checks its output (forward) and its input gradients
// (backward) for NaN or Inf and throws ink::Error naming the first op that produced one.
// Costs a pass over every tensor; meant for debugging. The flag is process-wide (atomic).
void set_detect_anomaly(bool enabled);
bool is_anomaly_detection_enabled();

// Runs backward from `root` with `gradient` (see Tensor::backward).
void run_backward(const Tensor& root, const Tensor& gradient, bool retain_graph);

// Counts Node objects alive in this process (for leak and lifetime tests).
int64_t live_node_count();

}  // namespace ink
