// Reverse-mode automatic differentiation on a tape (training and LoRA fine-tuning).
//
// A Tensor is a dense, row-major, contiguous fp32 array with an optional gradient of the same
// shape. Ops (bitnet/autograd_ops.h) compute their output eagerly and, when gradients are enabled
// and an input requires one, append a Node to the calling thread's tape: a closure that reads the
// output's gradient and accumulates into the inputs' gradients. backward(loss) replays the nodes
// in reverse order and then drops them, which releases every activation they saved.
//
// Memory: tensor buffers come from a caching pool keyed by size, so the activations of step n+1
// reuse the buffers released after the backward pass of step n (no page faults, no allocator
// traffic in steady state). Parameters, their gradients and optimizer state are ordinary tensors
// that the caller keeps alive; they persist across steps.
//
// Gradient contract for op writers (see autograd_ops.h):
//   * accumulate, never overwrite: `float* g = t.grad();` gives a zero-initialised buffer on first
//     use, then `g[i] += ...`;
//   * a node runs only when its output received a gradient (out.has_grad());
//   * inputs that do not require a gradient are skipped (needs_grad(t)).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace bitnet::autograd {

struct TensorImpl;

class Tensor {
 public:
  Tensor() = default;

  // A tensor of `shape` (every dim >= 0) with zeroed contents / unspecified contents.
  static Tensor zeros(const std::vector<int64_t>& shape, bool requires_grad = false);
  static Tensor empty(const std::vector<int64_t>& shape, bool requires_grad = false);
  // A copy of data[numel(shape)].
  static Tensor from_data(const float* data, const std::vector<int64_t>& shape,
                          bool requires_grad = false);

  bool defined() const { return impl_ != nullptr; }
  const std::vector<int64_t>& shape() const;
  int64_t dim() const;
  int64_t size(int64_t i) const;  // negative i counts from the end
  int64_t numel() const;
  // "[2, 3]": the shape for error messages.
  std::string shape_str() const;

  float* data();
  const float* data() const;

  bool requires_grad() const;
  void set_requires_grad(bool on);
  // The gradient buffer [numel]: allocated and zeroed on first use.
  float* grad();
  // nullptr when no gradient has been accumulated since the last zero_grad().
  const float* grad_if_any() const;
  bool has_grad() const { return grad_if_any() != nullptr; }
  // Frees the gradient (the next grad() starts from zeros).
  void zero_grad();

  // Same buffer (identity of the underlying storage).
  bool same(const Tensor& o) const { return impl_ == o.impl_; }
  const std::shared_ptr<TensorImpl>& impl() const { return impl_; }

 private:
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<TensorImpl> impl_;
};

// True when `t` is defined and requires a gradient: an op's backward computes that input's
// gradient only then.
inline bool needs_grad(const Tensor& t) { return t.defined() && t.requires_grad(); }

// Gradient mode of the calling thread (default on). Ops record nodes only when it is on.
bool grad_enabled();
void set_grad_enabled(bool on);

// RAII: gradients off in a scope (evaluation), restored on exit.
class NoGradGuard {
 public:
  NoGradGuard() : prev_(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(prev_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool prev_;
};

// True when an op with these inputs must record a node: grad mode on and any input requires a
// gradient. Ops call this once, and mark their output requires_grad accordingly.
bool should_record(std::initializer_list<const Tensor*> inputs);

// Appends a node to the calling thread's tape. `op` names it in errors and in tape_ops();
// `out` is the op's output (its gradient is what backward reads); `backward` is called at most
// once, with the output's gradient buffer; it captures whatever it saved (tensors by value keep
// their buffers alive until the tape releases the node). Sets out.requires_grad.
void record(const char* op, Tensor& out, std::function<void(const float* grad_out)> backward);

// Reverse pass from `loss` (a tensor with one element), seeded with d loss / d loss = 1:
// runs every node recorded on this thread's tape in reverse order, accumulating into the
// gradients of every tensor that requires one, then clears the tape (releasing saved
// activations and the gradients of intermediate tensors the caller no longer holds).
// Throws std::invalid_argument if loss is not a scalar or was not produced on the tape.
void backward(const Tensor& loss);
// The same from any tensor `root` produced on the tape, seeded with grad_root[root.numel()]
// (tests use it to check an op's backward against a given upstream gradient).
void backward(const Tensor& root, const float* grad_root);

// Drops every recorded node without running it (e.g. after an evaluation pass with grad on).
void clear_tape();
// Number of nodes on this thread's tape, and their op names in recording order.
int64_t tape_size();
std::vector<std::string> tape_ops();

// The caching pool: bytes currently handed out to live tensors, bytes cached for reuse, the peak
// of handed-out bytes since the last reset, and a release of every cached buffer.
struct PoolStats {
  int64_t in_use = 0, cached = 0, peak = 0;
};
PoolStats pool_stats();
void reset_peak();
void release_cached_memory();

}  // namespace bitnet::autograd
