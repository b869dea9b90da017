// Optimizers for the tape's parameters (bitnet/tape.h): AdamW and SGD with PyTorch's semantics,
// and gradient clipping by global L2 norm.
//
// The optimizers hold handles to the parameter tensors (keeping them alive), read each one's
// gradient (Tensor::grad_if_any) and update its data in place. A parameter without a gradient
// is skipped entirely: its state (step count, moments) does not move, as in PyTorch.
//
// Arithmetic: hyper-parameters are doubles (Python floats); the per-step scalars are computed
// in double exactly as torch.optim computes them in Python, rounded to fp32 once where PyTorch's
// kernels round them, and the per-element update is fp32 in PyTorch's order (see optim.cpp), so
// trajectories match torch.optim on CPU to a few fp32 ulps per step. Every element's update
// depends on its own index only: the result does not depend on the thread count.
//
// Threading: each step() / clip_grad_norm() splits all parameters into ranges of 32k elements
// and runs them across the core's pool in one parallel_for (many small parameters share it).
// Not thread-safe: one optimizer is driven by one thread at a time.
#pragma once

#include <cstdint>
#include <vector>

#include "bitnet/tape.h"

namespace bitnet::optim {

using autograd::Tensor;

// ------------------------------------------------------------------ AdamW
struct AdamWOptions {
  double lr = 1e-3;            // >= 0
  double beta1 = 0.9;          // in [0, 1)
  double beta2 = 0.999;        // in [0, 1)
  double eps = 1e-8;           // >= 0
  double weight_decay = 1e-2;  // >= 0, decoupled (applied as p *= 1 - lr * weight_decay)
};

// One parameter's state. m and v ([numel] each) are empty until the parameter's first step,
// which is the same as zeros; step counts the steps this parameter took (1-based during a step).
struct AdamWParamState {
  int64_t step = 0;
  std::vector<float> m, v;
};

// torch.optim.AdamW (amsgrad=False, maximize=False, foreach=False, fused=False). Per step, for
// every parameter p with a gradient g (t = its own step count after the increment):
//   p = p * float(1 - lr * wd)                              (if wd != 0 and decay_mask[i])
//   m = m + float(1 - beta1) * (g - m)                      (torch's lerp_, fused; optim.cpp)
//   v = v * float(beta2) + (float(1 - beta2) * g) * g       (the last + fused)
//   denom = sqrt(v) / float(sqrt(1 - beta2^t)) + float(eps)
//   p = p + (float(-(lr / (1 - beta1^t))) * m) / denom
// all fp32, "fused" meaning one rounding for a * b + c as ATen's vectorized loops do.
class AdamW {
 public:
  // params: distinct defined tensors. decay_mask: empty (decay every parameter) or one flag per
  // parameter (false: no weight decay, e.g. norms and biases). Throws std::invalid_argument on
  // a bad option (naming it), an undefined or repeated parameter, or a mask of the wrong length.
  AdamW(std::vector<Tensor> params, const AdamWOptions& options, std::vector<bool> decay_mask = {});

  void step();
  // Frees the gradient of every parameter (Tensor::zero_grad).
  void zero_grad();

  double lr() const { return opt_.lr; }
  void set_lr(double lr);  // finite, >= 0; schedules call it before each step
  double weight_decay() const { return opt_.weight_decay; }
  void set_weight_decay(double wd);  // finite, >= 0
  const AdamWOptions& options() const { return opt_; }
  const std::vector<Tensor>& params() const { return params_; }
  const std::vector<bool>& decay_mask() const { return decay_; }

  // Checkpointing: the state of every parameter, in the order of params(). set_state replaces
  // it after validating it entirely (one entry per parameter; step >= 0; m and v both empty
  // with step == 0, or both [numel] with every v >= 0), so a failed call changes nothing.
  const std::vector<AdamWParamState>& state() const { return state_; }
  void set_state(std::vector<AdamWParamState> state);

 private:
  std::vector<Tensor> params_;
  AdamWOptions opt_;
  std::vector<bool> decay_;
  std::vector<AdamWParamState> state_;
};

// ------------------------------------------------------------------ SGD
struct SGDOptions {
  double lr = 1e-3;           // >= 0
  double momentum = 0.0;      // >= 0
  double dampening = 0.0;     // any finite value (torch's default 0)
  double weight_decay = 0.0;  // >= 0, L2 (added to the gradient)
  bool nesterov = false;      // requires momentum > 0 and dampening == 0
};

// One parameter's momentum buffer [numel]; empty until its first step with momentum != 0.
struct SGDParamState {
  std::vector<float> momentum_buffer;
};

// torch.optim.SGD (maximize=False, foreach=False). Per step, for every p with a gradient g:
//   d = g + float(wd) * p                                      (if wd != 0)
//   if momentum != 0:
//     buf = d on the parameter's first step,
//           else (buf * float(momentum)) + float(1 - dampening) * d
//     d = nesterov ? d + float(momentum) * buf : buf
//   p = p + float(-lr) * d
// in fp32, every "x + a * b" above fused (one rounding) as in ATen's vectorized add(alpha=).
class SGD {
 public:
  SGD(std::vector<Tensor> params, const SGDOptions& options);

  void step();
  void zero_grad();

  double lr() const { return opt_.lr; }
  void set_lr(double lr);
  double weight_decay() const { return opt_.weight_decay; }
  void set_weight_decay(double wd);
  double momentum() const { return opt_.momentum; }
  const SGDOptions& options() const { return opt_; }
  const std::vector<Tensor>& params() const { return params_; }

  // One entry per parameter; each buffer is empty or [numel]. Validated entirely first.
  const std::vector<SGDParamState>& state() const { return state_; }
  void set_state(std::vector<SGDParamState> state);

 private:
  std::vector<Tensor> params_;
  SGDOptions opt_;
  std::vector<SGDParamState> state_;
};

// ------------------------------------------------------------------ gradient clipping
// torch.nn.utils.clip_grad_norm_(params, max_norm) with norm_type 2: total = the L2 norm of all
// existing gradients together (parameters without a gradient are skipped); if
// coef = max_norm / (total + 1e-6) < 1, every gradient is multiplied by float(coef). Returns total.
// The squares are summed in double over fixed 32k-element ranges, combined in order (exact to
// ~1e-16 relative and independent of the thread count); PyTorch computes the norm in fp32 (per
// tensor, then the norm of the norms), so totals agree to ~1e-6 relative. Deviation: a
// non-finite total (a NaN or inf gradient) is returned without touching the gradients (PyTorch
// would multiply them by 0 or NaN); the caller should skip the step. max_norm: finite, >= 0.
double clip_grad_norm(const std::vector<Tensor>& params, double max_norm);

}  // namespace bitnet::optim
