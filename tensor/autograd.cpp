// The autograd engine: recording ops, saved tensors, the backward pass, grad mode and anomaly
// detection.
#include "tensor/autograd.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <unordered_map>
#include <unordered_set>

#include "tensor/error.h"
#include "tensor/ops.h"

namespace ink {

namespace {
thread_local bool t_grad_enabled = true;
// The op whose backward is running on this thread (null outside backward): anomaly detection
// and SavedTensor's error name it.
thread_local const char* t_backward_op = nullptr;
std::atomic<bool> g_detect_anomaly{false};
std::atomic<int64_t> g_live_nodes{0};

template <class T>
bool all_finite(const T* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(p[i])) return false;
  }
  return true;
}

bool all_finite(const Tensor& t) {
  if (t.dtype() == DType::Float32) return all_finite(t.data(), t.numel());
  if (t.dtype() == DType::Float64) return all_finite(t.data_f64(), t.numel());
  return true;
}

// Sets t_backward_op for the lifetime of one backward call, also when it throws.
class BackwardScope {
 public:
  explicit BackwardScope(const char* op) : previous_(t_backward_op) { t_backward_op = op; }
  ~BackwardScope() { t_backward_op = previous_; }
  BackwardScope(const BackwardScope&) = delete;
  BackwardScope& operator=(const BackwardScope&) = delete;

 private:
  const char* previous_;
};
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
  g_detect_anomaly.store(enabled);
}
bool is_anomaly_detection_enabled() {
  return g_detect_anomaly.load();
}

int64_t live_node_count() {
  return g_live_nodes.load();
}

// ---- SavedTensor ----

SavedTensor::SavedTensor(const Tensor& tensor) {
  if (!tensor.defined()) return;
  version_ = tensor.version();
  const TensorImpl& impl = *tensor.impl();
  if (impl.storage->recompute()) {
    recompute_ = impl.storage->recompute();
    storage_ = impl.storage;
    offset_ = impl.offset;
    shape_ = impl.shape;
    dtype_ = impl.dtype;
  } else {
    tensor_ = tensor.detach();
  }
}

namespace {

void check_saved_version(uint64_t now, uint64_t saved) {
  INK_CHECK(now == saved,
            "{}: a tensor saved for backward was modified in place (version {}, saved at version "
            "{}); its gradient would be wrong. Write into a copy (clone()), or run backward first",
            t_backward_op ? t_backward_op : "SavedTensor", now, saved);
}

}  // namespace

const Tensor SavedTensor::get() const {
  if (recompute_) {
    std::shared_ptr<Storage> storage = storage_.lock();
    if (storage) {
      check_saved_version(storage->version(), version_);
    } else {
      INK_CHECK(recompute_->released.load(std::memory_order_acquire),
                "{}: a recomputable tensor is neither alive nor released (a bug in autograd)",
                t_backward_op ? t_backward_op : "SavedTensor");
      check_saved_version(recompute_->final_version.load(std::memory_order_relaxed), version_);
      const Tensor remade = recompute_->remake();
      if (remade.shape() == shape_ && offset_ == 0) return remade;
      storage = remade.impl()->storage;
    }
    return Tensor(std::make_shared<TensorImpl>(std::move(storage), offset_, shape_, dtype_));
  }
  INK_CHECK(tensor_.defined(), "{}: a tensor needed by backward was not saved (a bug in that op)",
            t_backward_op ? t_backward_op : "SavedTensor");
  check_saved_version(tensor_.version(), version_);
  return tensor_;
}

void make_recomputable(const Tensor& output, std::function<Tensor()> remake) {
  if (!output.defined() || !output.requires_grad() || !output.grad_fn()) return;
  auto recompute = std::make_shared<Recompute>();
  recompute->remake = std::move(remake);
  output.impl()->storage->set_recompute(std::move(recompute));
}

// ---- Node ----

Node::Node(const char* op_name_, std::vector<Edge> edges_, Shape output_shape_,
           BackwardFn backward_)
    : op_name(op_name_),
      edges(std::move(edges_)),
      output_shape(std::move(output_shape_)),
      backward(std::move(backward_)) {
  std::vector<bool> mask(edges.size());
  for (size_t i = 0; i < edges.size(); ++i) mask[i] = edges[i].node != nullptr;
  needs = GradMask(std::move(mask));
  ++g_live_nodes;
}

std::shared_ptr<Node> Node::accumulator_for(const std::shared_ptr<TensorImpl>& leaf) {
  if (auto existing = leaf->grad_accumulator.lock()) return existing;
  auto node = std::make_shared<Node>("AccumulateGrad", std::vector<Edge>{}, leaf->shape, nullptr);
  node->leaf = leaf;
  leaf->grad_accumulator = node;
  return node;
}

Node::~Node() {
  // Freeing a chain of 100,000 ops by plain shared_ptr destruction would recurse once per op
  // and overflow the stack. Instead, whenever this node holds the last reference to the next
  // node, move that node onto a local stack and dismantle it here.
  std::vector<std::shared_ptr<Node>> pending;
  auto harvest = [&pending](Node& node) {
    node.backward = nullptr;  // drop saved tensors first
    for (Edge& edge : node.edges) {
      if (edge.node && edge.node.use_count() == 1) pending.push_back(std::move(edge.node));
    }
    node.edges.clear();
  };
  harvest(*this);
  while (!pending.empty()) {
    std::shared_ptr<Node> node = std::move(pending.back());
    pending.pop_back();
    harvest(*node);
  }  // `node` is destroyed here with no edges left, so its destructor does not recurse
  --g_live_nodes;
}

void Node::release() {
  backward = nullptr;
  edges.clear();
  released = true;
}

// ---- record_op ----

Tensor record_op(Tensor output, const char* op_name, const std::vector<Tensor>& inputs,
                 BackwardFn backward) {
  if (g_detect_anomaly.load(std::memory_order_relaxed) && t_backward_op == nullptr &&
      !all_finite(output)) {
    INK_FAIL(
        "detect_anomaly: op {} produced a non-finite value (NaN or Inf) in its output of "
        "shape {}",
        op_name, shape_str(output.shape()));
  }
  if (!t_grad_enabled) return output;
  bool any_requires_grad = false;
  for (const Tensor& t : inputs) any_requires_grad |= t.defined() && t.requires_grad();
  if (!any_requires_grad) return output;

  std::vector<Node::Edge> edges(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& input = inputs[i];
    if (!input.defined()) continue;
    Node::Edge& edge = edges[i];
    edge.defined = true;
    edge.shape = input.shape();
    edge.dtype = input.dtype();
    if (!input.requires_grad()) {
      edge.name = input.name();
    } else if (input.grad_fn()) {
      edge.node = input.grad_fn();
    } else {
      edge.node = Node::accumulator_for(input.impl_ptr());
    }
  }
  TensorImpl* impl = output.impl();
  impl->grad_fn =
      std::make_shared<Node>(op_name, std::move(edges), output.shape(), std::move(backward));
  impl->requires_grad = true;
  return output;
}

// ---- the backward pass ----

namespace {

// Reverse-postorder of the graph below `root`, found without recursion: every node comes
// before the nodes its edges point at. The result holds strong references, so nodes released
// during backward stay valid until the end.
std::vector<std::shared_ptr<Node>> topological_order(const std::shared_ptr<Node>& root) {
  std::vector<std::shared_ptr<Node>> postorder;
  std::unordered_set<Node*> visited;
  struct Frame {
    std::shared_ptr<Node> node;
    size_t next_edge;
  };
  std::vector<Frame> stack;
  stack.push_back({root, 0});
  visited.insert(root.get());
  while (!stack.empty()) {
    Frame& frame = stack.back();
    if (frame.next_edge < frame.node->edges.size()) {
      const std::shared_ptr<Node>& next = frame.node->edges[frame.next_edge++].node;
      if (next && visited.insert(next.get()).second) {
        stack.push_back({next, 0});  // invalidates `frame`; the loop re-reads it
      }
      continue;
    }
    postorder.push_back(std::move(frame.node));
    stack.pop_back();
  }
  return {postorder.rbegin(), postorder.rend()};
}

// Leaves accumulate: grad += incoming (the first gradient is copied, never aliased).
template <class T>
void accumulate(T* __restrict dst, const T* __restrict src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

void accumulate_into_leaf(TensorImpl& leaf, const Tensor& grad) {
  if (!leaf.grad) {
    leaf.grad = grad.clone().detach().impl_ptr();  // never alias a gradient another op holds
    return;
  }
  Tensor dst(leaf.grad);
  INK_CHECK(dst.dtype() == grad.dtype() && dst.shape() == grad.shape(),
            "backward: the accumulated gradient {} {} does not match the new one {} {}",
            dtype_name(dst.dtype()), shape_str(dst.shape()), dtype_name(grad.dtype()),
            shape_str(grad.shape()));
  if (dst.dtype() == DType::Float64) {
    accumulate(dst.data_f64(), grad.data_f64(), leaf.numel);
  } else {
    accumulate(dst.data(), grad.data(), leaf.numel);
  }
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
    INK_CHECK(gradient.shape() == root.shape() && gradient.dtype() == root.dtype(),
              "backward: gradient of shape {} ({}) does not match the output's shape {}",
              shape_str(gradient.shape()), dtype_name(gradient.dtype()), shape_str(root.shape()));
    seed = gradient;
  } else {
    INK_CHECK(root.numel() == 1,
              "backward: a gradient can be implied only for a scalar output, but the output has "
              "shape {}; pass a gradient of that shape",
              shape_str(root.shape()));
    seed = ones_like(root);
  }

  NoGradGuard no_grad;  // backward closures compute with ops but never record them
  const std::shared_ptr<Node> root_node =
      root.grad_fn() ? root.grad_fn() : Node::accumulator_for(root.impl_ptr());
  const auto order = topological_order(root_node);
  std::unordered_map<Node*, Tensor> pending;  // the gradients arriving at each node, summed
  pending.emplace(root_node.get(), seed);

  for (const auto& node_ptr : order) {
    Node& node = *node_ptr;
    auto found = pending.find(&node);
    if (found == pending.end()) continue;  // no gradient reached this node
    Tensor grad = std::move(found->second);
    pending.erase(found);

    if (node.is_accumulator()) {
      accumulate_into_leaf(*node.leaf, grad);
      continue;
    }
    INK_CHECK(!node.released,
              "backward: the graph through op {} was already freed by an earlier backward; pass "
              "retain_graph=true to that backward to run backward twice",
              node.op_name);
    std::vector<Tensor> input_grads;
    {
      BackwardScope scope(node.op_name);
      input_grads = node.backward(grad, node.needs);
    }
    INK_CHECK(input_grads.size() == node.edges.size(),
              "backward: op {} returned {} gradients for {} inputs (a bug in that op)",
              node.op_name, input_grads.size(), node.edges.size());
    for (size_t i = 0; i < node.edges.size(); ++i) {
      const Node::Edge& edge = node.edges[i];
      if (!edge.node || !input_grads[i].defined()) continue;
      Tensor& g = input_grads[i];
      if (g.dtype() != edge.dtype) g = g.to(edge.dtype);  // after type promotion
      INK_CHECK(g.shape() == edge.shape,
                "backward: op {} returned a gradient of shape {} for input {} of shape {} (a bug "
                "in that op)",
                node.op_name, shape_str(g.shape()), i, shape_str(edge.shape));
      if (g_detect_anomaly.load(std::memory_order_relaxed) && !all_finite(g)) {
        INK_FAIL(
            "detect_anomaly: the backward of op {} produced a non-finite gradient for its "
            "input {} of shape {}",
            node.op_name, i, shape_str(edge.shape));
      }
      auto [slot, inserted] = pending.try_emplace(edge.node.get(), g);
      if (!inserted) slot->second = add(slot->second, g);
    }
    if (!retain_graph) node.release();
  }
}

}  // namespace ink
