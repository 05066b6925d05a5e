// The autograd engine: recording ops, the backward pass, grad mode and anomaly detection.
#include "tensor/autograd.h"

#include <cmath>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "tensor/error.h"
#include "tensor/ops.h"

namespace ink {

namespace {
thread_local bool t_grad_enabled = true;
// Set while backward closures run, so anomaly detection blames the op whose backward it is.
thread_local bool t_in_backward = false;
bool g_detect_anomaly = false;

bool all_finite(const Tensor& t) {
  if (t.dtype() != DType::Float32) return true;
  const float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (!std::isfinite(p[i])) return false;
  }
  return true;
}
}  // namespace

bool is_grad_enabled() {
  return t_grad_enabled;
}

NoGradGuard::NoGradGuard() : previous_(t_grad_enabled) {
  t_grad_enabled = false;
}
NoGradGuard::~NoGradGuard() {
  t_grad_enabled = previous_;
}

void set_detect_anomaly(bool enabled) {
  g_detect_anomaly = enabled;
}
bool is_anomaly_detection_enabled() {
  return g_detect_anomaly;
}

Node::Node(const char* op_name_, std::vector<Tensor> inputs_, BackwardFn backward_)
    : op_name(op_name_), inputs(std::move(inputs_)), backward(std::move(backward_)) {}

Node::~Node() {
  // Freeing a chain of 100,000 ops by plain shared_ptr destruction would recurse once per op
  // and overflow the stack. Instead, whenever this node holds the last reference to an input
  // whose node would die with it, move that node onto a local stack and dismantle it here.
  std::vector<std::shared_ptr<Node>> pending;
  auto harvest = [&pending](Node& node) {
    node.backward = nullptr;  // drop saved tensors first, so inputs hold the last references
    for (Tensor& input : node.inputs) {
      if (!input.defined()) continue;
      TensorImpl* impl = input.impl();
      if (input.impl_ptr().use_count() == 1 && impl->grad_fn && impl->grad_fn.use_count() == 1) {
        pending.push_back(std::move(impl->grad_fn));
      }
    }
    node.inputs.clear();
  };
  harvest(*this);
  while (!pending.empty()) {
    std::shared_ptr<Node> node = std::move(pending.back());
    pending.pop_back();
    harvest(*node);
  }  // `node` is destroyed here with no inputs left, so its destructor does not recurse
}

void Node::release() {
  backward = nullptr;
  inputs.clear();
  released = true;
}

Tensor record_op(Tensor output, const char* op_name, std::vector<Tensor> inputs,
                 BackwardFn backward) {
  if (g_detect_anomaly && !t_in_backward && !all_finite(output)) {
    INK_FAIL(
        "detect_anomaly: op {} produced a non-finite value (NaN or Inf) in its output of "
        "shape {}",
        op_name, shape_str(output.shape()));
  }
  if (!t_grad_enabled) return output;
  bool any_requires_grad = false;
  for (const Tensor& t : inputs) any_requires_grad |= t.defined() && t.requires_grad();
  if (!any_requires_grad) return output;
  TensorImpl* impl = output.impl();
  impl->grad_fn = std::make_shared<Node>(op_name, std::move(inputs), std::move(backward));
  impl->requires_grad = true;
  return output;
}

namespace {

// Reverse-postorder of the graph below `root`, found without recursion. The result holds
// strong references, so nodes freed by release() during backward stay valid until the end.
std::vector<std::shared_ptr<TensorImpl>> topological_order(const Tensor& root) {
  std::vector<std::shared_ptr<TensorImpl>> postorder;
  std::unordered_set<TensorImpl*> visited;
  struct Frame {
    std::shared_ptr<TensorImpl> tensor;
    size_t next_input;
  };
  std::vector<Frame> stack;
  stack.push_back({root.impl_ptr(), 0});
  visited.insert(root.impl());
  while (!stack.empty()) {
    Frame& frame = stack.back();
    const auto& node = frame.tensor->grad_fn;
    if (node && frame.next_input < node->inputs.size()) {
      const Tensor& input = node->inputs[frame.next_input++];
      if (input.defined() && input.requires_grad() && visited.insert(input.impl()).second) {
        stack.push_back({input.impl_ptr(), 0});  // invalidates `frame`; the loop re-reads it
      }
      continue;
    }
    postorder.push_back(std::move(frame.tensor));
    stack.pop_back();
  }
  return {postorder.rbegin(), postorder.rend()};
}

void accumulate_into_leaf(TensorImpl& leaf, const Tensor& grad) {
  if (!leaf.grad) {
    leaf.grad = grad.clone().detach().impl_ptr();  // never alias a gradient another op holds
    return;
  }
  float* __restrict dst = Tensor(leaf.grad).data();
  const float* __restrict src = grad.data();
  for (int64_t i = 0; i < leaf.numel; ++i) dst[i] += src[i];
}

}  // namespace

void run_backward(const Tensor& root, const Tensor& gradient, bool retain_graph) {
  INK_CHECK(root.defined(), "backward: the tensor is undefined");
  INK_CHECK(root.requires_grad(),
            "backward: the tensor of shape {} does not require grad and has no grad_fn (was it "
            "computed under NoGradGuard, or detached?)",
            shape_str(root.shape()));
  Tensor seed;
  if (gradient.defined()) {
    INK_CHECK(gradient.shape() == root.shape() && gradient.dtype() == DType::Float32,
              "backward: gradient of shape {} ({}) does not match the output's shape {}",
              shape_str(gradient.shape()), dtype_name(gradient.dtype()), shape_str(root.shape()));
    seed = gradient;
  } else {
    INK_CHECK(root.numel() == 1,
              "backward: a gradient can be implied only for a scalar output, but the output has "
              "shape {}; pass a gradient of that shape",
              shape_str(root.shape()));
    seed = ones(root.shape());
  }

  NoGradGuard no_grad;  // backward closures compute with ops but never record them
  const auto order = topological_order(root);
  std::unordered_map<TensorImpl*, Tensor> pending;  // gradients summed per tensor
  pending.emplace(root.impl(), seed);

  for (const auto& tensor : order) {
    auto found = pending.find(tensor.get());
    if (found == pending.end()) continue;  // no gradient reached this tensor
    Tensor grad = std::move(found->second);
    pending.erase(found);

    if (!tensor->grad_fn) {
      accumulate_into_leaf(*tensor, grad);
      continue;
    }
    Node& node = *tensor->grad_fn;
    INK_CHECK(!node.released,
              "backward: the graph through op {} was already freed by an earlier backward; pass "
              "retain_graph=true to that backward to run backward twice",
              node.op_name);
    t_in_backward = true;
    std::vector<Tensor> input_grads;
    try {
      input_grads = node.backward(grad);
    } catch (...) {
      t_in_backward = false;
      throw;
    }
    t_in_backward = false;
    INK_CHECK(input_grads.size() == node.inputs.size(),
              "backward: op {} returned {} gradients for {} inputs (a bug in that op)",
              node.op_name, input_grads.size(), node.inputs.size());
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      if (!node.needs_grad(i) || !input_grads[i].defined()) continue;
      const Tensor& input = node.inputs[i];
      Tensor& g = input_grads[i];
      INK_CHECK(g.shape() == input.shape(),
                "backward: op {} returned a gradient of shape {} for input {} of shape {} (a bug "
                "in that op)",
                node.op_name, shape_str(g.shape()), i, shape_str(input.shape()));
      if (g_detect_anomaly && !all_finite(g)) {
        INK_FAIL(
            "detect_anomaly: the backward of op {} produced a non-finite gradient for its "
            "input {} of shape {}",
            node.op_name, i, shape_str(input.shape()));
      }
      auto [slot, inserted] = pending.try_emplace(input.impl(), g);
      if (!inserted) slot->second = add(slot->second, g);
    }
    if (!retain_graph) node.release();
  }
}

}  // namespace ink
