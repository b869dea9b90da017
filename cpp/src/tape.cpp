// The tape, tensors and the caching pool behind them (bitnet/tape.h).
#include "bitnet/tape.h"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>

#include "bitnet/common.h"

namespace bitnet::autograd {

// ------------------------------------------------------------------ caching pool
namespace {

// Buffers are 64-byte aligned and rounded up to 64 bytes; a freed buffer goes to the free list
// of its rounded size and is handed out again for the next request of that size. Training steps
// repeat the same shapes, so after the first step every allocation is a free-list pop.
class Pool {
 public:
  void* alloc(size_t bytes) {
    const size_t size = round(bytes);
    {
      std::lock_guard<std::mutex> lk(mu_);
      auto it = free_.find(size);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached_ -= int64_t(size);
        note_use(size);
        return p;
      }
    }
    void* p = std::aligned_alloc(64, size);
    if (!p) {  // release the cache and try once more before giving up
      release();
      p = std::aligned_alloc(64, size);
      if (!p) throw std::bad_alloc();
    }
    std::lock_guard<std::mutex> lk(mu_);
    note_use(size);
    return p;
  }
  void free(void* p, size_t bytes) {
    if (!p) return;
    const size_t size = round(bytes);
    std::lock_guard<std::mutex> lk(mu_);
    free_[size].push_back(p);
    in_use_ -= int64_t(size);
    cached_ += int64_t(size);
  }
  void release() {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& [size, list] : free_)
      for (void* p : list) std::free(p);
    free_.clear();
    cached_ = 0;
  }
  PoolStats stats() {
    std::lock_guard<std::mutex> lk(mu_);
    return PoolStats{in_use_, cached_, peak_};
  }
  void reset_peak() {
    std::lock_guard<std::mutex> lk(mu_);
    peak_ = in_use_;
  }

 private:
  static size_t round(size_t bytes) { return (std::max<size_t>(bytes, 1) + 63) / 64 * 64; }
  void note_use(size_t size) {
    in_use_ += int64_t(size);
    if (in_use_ > peak_) peak_ = in_use_;
  }
  std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  int64_t in_use_ = 0, cached_ = 0, peak_ = 0;
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: tensors may outlive static destruction
  return *p;
}

}  // namespace

struct TensorImpl {
  std::vector<int64_t> shape;
  int64_t numel = 0;
  float* data = nullptr;
  float* grad = nullptr;
  bool requires_grad = false;

  TensorImpl() = default;
  TensorImpl(const TensorImpl&) = delete;
  TensorImpl& operator=(const TensorImpl&) = delete;
  ~TensorImpl() {
    pool().free(data, bytes());
    pool().free(grad, bytes());
  }
  size_t bytes() const { return size_t(numel) * sizeof(float); }
};

// ------------------------------------------------------------------ Tensor
namespace {
int64_t checked_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    check_arg(d >= 0, "Tensor: negative dimension in shape");
    check_arg(d == 0 || n <= (int64_t(1) << 40) / d, "Tensor: shape is too large");
    n *= d;
  }
  return n;
}
}  // namespace

Tensor Tensor::empty(const std::vector<int64_t>& shape, bool requires_grad) {
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->numel = checked_numel(shape);
  impl->data = impl->numel ? static_cast<float*>(pool().alloc(impl->bytes())) : nullptr;
  impl->requires_grad = requires_grad;
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const std::vector<int64_t>& shape, bool requires_grad) {
  Tensor t = empty(shape, requires_grad);
  if (t.numel()) std::memset(t.data(), 0, t.impl_->bytes());
  return t;
}

Tensor Tensor::from_data(const float* data, const std::vector<int64_t>& shape, bool requires_grad) {
  Tensor t = empty(shape, requires_grad);
  if (t.numel()) std::memcpy(t.data(), data, t.impl_->bytes());
  return t;
}

const std::vector<int64_t>& Tensor::shape() const { return impl_->shape; }
int64_t Tensor::dim() const { return int64_t(impl_->shape.size()); }
int64_t Tensor::size(int64_t i) const {
  const int64_t d = dim();
  const int64_t j = i < 0 ? i + d : i;
  check_arg(j >= 0 && j < d, "Tensor::size: dimension ", i, " out of range for shape ",
            shape_str());
  return impl_->shape[size_t(j)];
}
int64_t Tensor::numel() const { return impl_->numel; }
std::string Tensor::shape_str() const {
  std::string s = "[";
  for (size_t i = 0; i < impl_->shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(impl_->shape[i]);
  return s + "]";
}
float* Tensor::data() { return impl_->data; }
const float* Tensor::data() const { return impl_->data; }
bool Tensor::requires_grad() const { return impl_->requires_grad; }
void Tensor::set_requires_grad(bool on) { impl_->requires_grad = on; }

float* Tensor::grad() {
  if (!impl_->grad && impl_->numel) {
    impl_->grad = static_cast<float*>(pool().alloc(impl_->bytes()));
    std::memset(impl_->grad, 0, impl_->bytes());
  }
  return impl_->grad;
}
const float* Tensor::grad_if_any() const { return impl_->grad; }
void Tensor::zero_grad() {
  pool().free(impl_->grad, impl_->bytes());
  impl_->grad = nullptr;
}

// ------------------------------------------------------------------ tape
namespace {

struct Node {
  const char* op;
  Tensor out;
  std::function<void(const float*)> backward;
};

thread_local std::vector<Node> t_tape;
thread_local bool t_grad_enabled = true;

}  // namespace

bool grad_enabled() { return t_grad_enabled; }
void set_grad_enabled(bool on) { t_grad_enabled = on; }

bool should_record(std::initializer_list<const Tensor*> inputs) {
  if (!t_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t && needs_grad(*t)) return true;
  return false;
}

void record(const char* op, Tensor& out, std::function<void(const float* grad_out)> backward) {
  out.set_requires_grad(true);
  t_tape.push_back(Node{op, out, std::move(backward)});
}

void backward(const Tensor& loss) {
  check_arg(loss.defined(), "backward: the loss tensor is undefined");
  check_arg(loss.numel() == 1, "backward: the loss must have one element, got shape ",
            loss.shape_str());
  const float one = 1.0f;
  backward(loss, &one);
}

void backward(const Tensor& loss, const float* grad_root) {
  check_arg(loss.defined(), "backward: the root tensor is undefined");
  check_arg(loss.requires_grad(),
            "backward: the loss does not require a gradient (no parameter with requires_grad "
            "took part in computing it, or it was computed with gradients disabled)");
  bool found = false;
  for (const Node& n : t_tape) found = found || n.out.same(loss);
  check_arg(found,
            "backward: the loss was not produced by an op on this thread's tape (was "
            "backward already called, or the tape cleared?)");
  Tensor seed = loss;
  float* g0 = seed.grad();
  for (int64_t i = 0; i < seed.numel(); ++i) g0[i] += grad_root[i];
  // The tape is moved out first so that a backward closure that records (it must not) or throws
  // leaves the thread's tape empty and consistent.
  std::vector<Node> nodes;
  nodes.swap(t_tape);
  NoGradGuard no_grad;
  try {
    while (!nodes.empty()) {
      Node& n = nodes.back();
      const float* g = n.out.grad_if_any();
      if (g) n.backward(g);
      // The output's gradient is complete once its own node ran (every consumer was recorded
      // later, so ran earlier): free it, and the activations the node saved.
      n.out.zero_grad();
      nodes.pop_back();
    }
  } catch (...) {
    nodes.clear();
    throw;
  }
}

void clear_tape() { t_tape.clear(); }
int64_t tape_size() { return int64_t(t_tape.size()); }
std::vector<std::string> tape_ops() {
  std::vector<std::string> out;
  out.reserve(t_tape.size());
  for (const Node& n : t_tape) out.emplace_back(n.op);
  return out;
}

PoolStats pool_stats() { return pool().stats(); }
void reset_peak() { pool().reset_peak(); }
void release_cached_memory() { pool().release(); }

}  // namespace bitnet::autograd
