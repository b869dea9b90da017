// Bindings of the tape ops rmsnorm, rope and attention (bitnet/autograd_ops.h) into
// bitnet._ext.autograd:
//   rmsnorm(x, w=None, eps=1e-5) -> Tensor            x [M, C], w [C] or None (no weight)
//   rope(x, T, H, D, theta=10000.0, pos0=0) -> Tensor  NEOX RoPE on x [B * T, H * D]
//   attention(q, k, v, B, T, Hq, Hkv, D) -> Tensor     causal GQA, q [B * T, Hq * D],
//                                                      k, v [B * T, Hkv * D]
// Compute runs with the GIL released; bad shapes raise ValueError.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>

#include "autograd_util.h"
#include "bitnet/autograd_ops.h"

namespace py = pybind11;
namespace ag = bitnet::autograd;

void bind_autograd_attention(py::module_& m) {
  m.def(
      "rmsnorm",
      [](const ag::Tensor& x, const std::optional<ag::Tensor>& w, float eps) {
        return ag::rmsnorm(x, w ? *w : ag::Tensor(), eps);
      },
      py::arg("x"), py::arg("w") = py::none(), py::arg("eps") = 1e-5f,
      py::call_guard<py::gil_scoped_release>(),
      "RMSNorm over each row of x [M, C]: y = x / sqrt(mean(x^2) + eps) * w (w [C], or None for\n"
      "no weight); the same fp32 arithmetic as inference (bitnet._ext.nn.rmsnorm).");
  m.def("rope", &ag::rope, py::arg("x"), py::arg("T"), py::arg("H"), py::arg("D"),
        py::arg("theta") = 10000.0f, py::arg("pos0") = 0, py::call_guard<py::gil_scoped_release>(),
        "NEOX rotary embedding on x [B * T, H * D] (pairs i, i + D/2; D even): row b * T + t\n"
        "sits at position pos0 + t, angle = pos * theta^(-2i / D); as inference's rope_neox.");
  m.def("attention", &ag::attention, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("B"),
        py::arg("T"), py::arg("Hq"), py::arg("Hkv"), py::arg("D"),
        py::call_guard<py::gil_scoped_release>(),
        "Causal grouped-query self-attention, scale 1 / sqrt(D): q [B * T, Hq * D],\n"
        "k, v [B * T, Hkv * D] (query head h reads kv head h / (Hq / Hkv)) -> [B * T, Hq * D].");
}
