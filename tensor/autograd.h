// The autograd engine: graph nodes, the backward pass, and grad mode.
//
// Each differentiable op computes its result and, when grad mode is on and an input requires
// grad, attaches a Node whose backward closure maps the output's gradient to its inputs'
// gradients (see ops/*.cpp, where every forward has its backward right below it).
// A Node holds its inputs (the graph's edges) and whatever its closure saved, never its own
// output, so graphs have no reference cycles.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tensor/tensor.h"

namespace ink {

// Maps the gradient of an op's output to one gradient per input. An entry may be left
// undefined when that input does not need a gradient (check Node::needs_grad(i)).
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_output)>;

// What this object represents: one recorded op in the graph.
struct Node {
  Node(const char* op_name, std::vector<Tensor> inputs, BackwardFn backward);
  ~Node();  // dismantles long chains iteratively, so deep graphs free without recursion
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  bool needs_grad(size_t i) const { return inputs[i].defined() && inputs[i].requires_grad(); }
  // Drops the saved state; a second backward through this node then fails with a clear error.
  void release();

  const char* op_name;
  std::vector<Tensor> inputs;
  BackwardFn backward;
  bool released = false;
};

// Wraps `output` as the result of op `op_name` on `inputs`. When grad mode is enabled and any
// input requires grad, the output gets a Node with `backward` and requires grad itself.
// This is the one function every op (and any user-defined op) calls to join the graph.
Tensor record_op(Tensor output, const char* op_name, std::vector<Tensor> inputs,
                 BackwardFn backward);

// True when ops record the graph (the default). Thread-local, like PyTorch.
bool is_grad_enabled();

// Disables graph recording for its lifetime, like torch.no_grad(). It is independent of a
// Module's train()/eval() mode, which changes layer behaviour instead.
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
// Costs a pass over every tensor; meant for debugging.
void set_detect_anomaly(bool enabled);
bool is_anomaly_detection_enabled();

// Runs backward from `root` with `gradient` (see Tensor::backward).
void run_backward(const Tensor& root, const Tensor& gradient, bool retain_graph);

}  // namespace ink
