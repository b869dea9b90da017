// Bindings of the tape ops linear, bitlinear and embedding (bitnet/autograd_ops.h) into
// bitnet._ext.autograd:
//   linear(x, w) -> Tensor                       y[M, N] = x[M, K] @ w[N, K]^T
//   bitlinear(x, w, lambda_=1.0) -> Tensor       BitLinear with the STE, warm-up mix lambda_
//   embedding(table, ids) -> Tensor              out[n, E] = table[ids[n]]; ids: 1-D integers
// Compute runs with the GIL released.
#include <pybind11/pybind11.h>

#include <vector>

#include "autograd_util.h"
#include "bitnet/autograd_ops.h"

namespace py = pybind11;
namespace ag = bitnet::autograd;

void bind_autograd_linear(py::module_& m) {
  m.def("linear", &ag::linear, py::arg("x"), py::arg("w"), py::call_guard<py::gil_scoped_release>(),
        "Dense linear without bias: y[M, N] = x[M, K] @ w[N, K]^T.");
  m.def("bitlinear", &ag::bitlinear, py::arg("x"), py::arg("w"), py::arg("lambda_") = 1.0f,
        py::call_guard<py::gil_scoped_release>(),
        "BitLinear with the straight-through estimator: y = x_eff @ w_eff^T with\n"
        "w_eff = w + lambda_ * (wq - w), x_eff = x + lambda_ * (xq - x) (docs/formats.md 1);\n"
        "lambda_ in [0, 1], 1 runs the int8 x ternary inference kernels.");
  m.def(
      "embedding",
      [](const ag::Tensor& table, const py::handle& ids) {
        std::vector<int32_t> v = bitnet_ext::int32_ids(ids, "embedding: ids");
        py::gil_scoped_release nogil;
        return ag::embedding(table, v);
      },
      py::arg("table"), py::arg("ids"),
      "Row gather out[n, E] = table[ids[n]] from a table [V, E]; ids is a 1-D integer array or "
      "list, every id in [0, V).");
}
