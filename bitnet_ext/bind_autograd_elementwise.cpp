// Bindings of the elementwise tape ops and the loss (bitnet/autograd_ops.h) into
// bitnet._ext.autograd:
//   add(a, b) -> Tensor                     a + b (same shapes)
//   mul(a, b) -> Tensor                     a * b (same shapes)
//   scale(a, s) -> Tensor                   a * s
//   gated(gate, up, act="relu2") -> Tensor  act(gate) * up, act "relu2" | "silu" (or "swish")
//   dropout(x, p, seed) -> Tensor           inverted dropout, mask from xoshiro256**(seed)
//   cross_entropy(logits, targets, ignore_index=-100) -> Tensor   mean over counted rows
// Compute runs with the GIL released.
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "autograd_util.h"
#include "bitnet/autograd_ops.h"
#include "bitnet/nn.h"

namespace py = pybind11;
namespace ag = bitnet::autograd;

void bind_autograd_elementwise(py::module_& m) {
  m.def("add", &ag::add, py::arg("a"), py::arg("b"), py::call_guard<py::gil_scoped_release>(),
        "Elementwise a + b (same shapes).");
  m.def("mul", &ag::mul, py::arg("a"), py::arg("b"), py::call_guard<py::gil_scoped_release>(),
        "Elementwise a * b (same shapes).");
  m.def("scale", &ag::scale, py::arg("a"), py::arg("s"), py::call_guard<py::gil_scoped_release>(),
        "a * s for a float s.");
  m.def(
      "gated",
      [](const ag::Tensor& gate, const ag::Tensor& up, const std::string& act) {
        const bitnet::nn::Activation a = bitnet::nn::parse_activation(act);
        py::gil_scoped_release nogil;
        return ag::gated(gate, up, a);
      },
      py::arg("gate"), py::arg("up"), py::arg("act") = "relu2",
      "Gated FFN activation act(gate) * up on [M, F] tensors; act is 'relu2' (relu(g)^2) or\n"
      "'silu' (g * sigmoid(g)). The forward equals inference's nn::gated_activation bit for bit.");
  m.def("dropout", &ag::dropout, py::arg("x"), py::arg("p"), py::arg("seed"),
        py::call_guard<py::gil_scoped_release>(),
        "Inverted dropout: element i (flat order) is kept iff the i-th draw u_i of\n"
        "xoshiro256**(seed) (53-bit uniform double in [0, 1)) is >= p, and kept values are\n"
        "scaled by 1 / (1 - p). 0 <= p < 1; p == 0 or gradients disabled return x itself.");
  m.def(
      "cross_entropy",
      [](const ag::Tensor& logits, const py::handle& targets, int32_t ignore_index) {
        std::vector<int32_t> t = bitnet_ext::int32_ids(targets, "cross_entropy: targets");
        py::gil_scoped_release nogil;
        return ag::cross_entropy(logits, t, ignore_index);
      },
      py::arg("logits"), py::arg("targets"), py::arg("ignore_index") = -100,
      "Mean softmax cross-entropy of logits [N, V] over the rows whose target != ignore_index\n"
      "(targets: a 1-D integer array or list of N ids in [0, V)). Returns a one-element\n"
      "tensor; 0 when every row is ignored.");
}
