// Binding of the frozen BitLinear tape op (bitnet/autograd_frozen.h) into bitnet._ext.autograd:
//   bitlinear_frozen(x, w) -> Tensor   y[M, N] = bitlinear(x[M, K], w: PackedWeights [N, K])
// The forward is the inference path (bit-exact with bitnet.ops.bitlinear); the backward gives x
// its straight-through gradient dy @ (s_w * T) and the packed weights nothing. Compute runs with
// the GIL released.
#include <pybind11/pybind11.h>

#include <memory>

#include "bitnet/autograd_frozen.h"
#include "bitnet/packed_weights.h"

namespace py = pybind11;
namespace ag = bitnet::autograd;

void bind_autograd_frozen(py::module_& m) {
  m.def(
      "bitlinear_frozen",
      [](const ag::Tensor& x, std::shared_ptr<bitnet::PackedWeights> w) {
        return ag::bitlinear_frozen(x, std::move(w));
      },
      py::arg("x"), py::arg("w"), py::call_guard<py::gil_scoped_release>(),
      "BitLinear on frozen packed ternary weights w (bitnet.ops.PackedWeights [N, K]):\n"
      "y[M, N] computed by the inference kernels (int8 activations per token), bit for bit\n"
      "bitnet.ops.bitlinear(x, w). Backward: dx += dy @ (s_w * T) (straight-through); w gets no\n"
      "gradient and is never copied to fp32 between calls.");
}
