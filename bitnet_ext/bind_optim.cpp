// Bindings of the optimizers (bitnet/optim.h) into bitnet._ext.autograd:
//   AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, decay_mask=None)
//   SGD(params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False)
//     .step(), .zero_grad(), .lr / .weight_decay (settable), .params, .get_state(), .set_state(s)
//     AdamW state: [(step: int, m: ndarray, v: ndarray)] (arrays float32, each parameter's shape)
//     SGD state:   [momentum_buffer: ndarray | None]
//   clip_grad_norm(params, max_norm) -> float (the total L2 norm before clipping)
// step(), zero_grad() and clip_grad_norm() run with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bitnet/optim.h"

namespace py = pybind11;
namespace opt = bitnet::optim;
using bitnet::autograd::Tensor;

namespace {

// A float32 copy of data[numel(t)] shaped like t.
py::array_t<float> array_like(const Tensor& t, const std::vector<float>& data) {
  std::vector<py::ssize_t> shape(t.shape().begin(), t.shape().end());
  py::array_t<float> a(shape);
  if (t.numel()) {
    if (data.empty()) {
      std::memset(a.mutable_data(), 0, size_t(t.numel()) * sizeof(float));
    } else {
      std::memcpy(a.mutable_data(), data.data(), size_t(t.numel()) * sizeof(float));
    }
  }
  return a;
}

// The values of `obj`, which must be a float32 numpy array of t's shape; `what` names it.
std::vector<float> values_like(const py::handle& obj, const Tensor& t, const std::string& what) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(what + ": expected a numpy float32 array, got " +
                         py::str(py::type::of(obj)).cast<std::string>());
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (a.dtype().kind() != 'f' || a.itemsize() != 4)
    throw py::type_error(what + ": expected dtype float32, got " +
                         py::str(a.dtype()).cast<std::string>());
  const std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
  if (shape != t.shape())
    throw py::value_error(what + ": expected shape " + t.shape_str() + " (the parameter's), got " +
                          py::str(a.attr("shape")).cast<std::string>());
  auto c = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(a);
  return std::vector<float>(c.data(), c.data() + c.size());
}

py::list params_list(const std::vector<Tensor>& params) {
  py::list out;
  for (const Tensor& t : params) out.append(py::cast(t));
  return out;
}

}  // namespace

void bind_optim(py::module_& m) {
  py::class_<opt::AdamW>(m, "AdamW",
                         "torch.optim.AdamW (non-amsgrad, single-tensor) over tape tensors.")
      .def(py::init([](std::vector<Tensor> params, double lr, std::pair<double, double> betas,
                       double eps, double weight_decay,
                       std::optional<std::vector<bool>> decay_mask) {
             opt::AdamWOptions o;
             o.lr = lr;
             o.beta1 = betas.first;
             o.beta2 = betas.second;
             o.eps = eps;
             o.weight_decay = weight_decay;
             return new opt::AdamW(std::move(params), o,
                                   decay_mask ? std::move(*decay_mask) : std::vector<bool>{});
           }),
           py::arg("params"), py::arg("lr") = 1e-3, py::arg("betas") = std::make_pair(0.9, 0.999),
           py::arg("eps") = 1e-8, py::arg("weight_decay") = 1e-2,
           py::arg("decay_mask") = py::none(),
           "params: list of Tensors (distinct). decay_mask: one bool per parameter (False: no\n"
           "weight decay), or None to decay every parameter.")
      .def("step", &opt::AdamW::step, py::call_guard<py::gil_scoped_release>(),
           "One update of every parameter that has a gradient (the others are skipped and "
           "keep their step count).")
      .def("zero_grad", &opt::AdamW::zero_grad, py::call_guard<py::gil_scoped_release>(),
           "Drops the gradient of every parameter.")
      .def_property("lr", &opt::AdamW::lr, &opt::AdamW::set_lr)
      .def_property("weight_decay", &opt::AdamW::weight_decay, &opt::AdamW::set_weight_decay)
      .def_property_readonly(
          "betas",
          [](const opt::AdamW& o) { return std::make_pair(o.options().beta1, o.options().beta2); })
      .def_property_readonly("eps", [](const opt::AdamW& o) { return o.options().eps; })
      .def_property_readonly("decay_mask", &opt::AdamW::decay_mask)
      .def_property_readonly("params", [](const opt::AdamW& o) { return params_list(o.params()); })
      .def(
          "get_state",
          [](const opt::AdamW& o) {
            py::list out;
            for (size_t i = 0; i < o.params().size(); ++i) {
              const opt::AdamWParamState& s = o.state()[i];
              const Tensor& p = o.params()[i];
              out.append(py::make_tuple(s.step, array_like(p, s.m), array_like(p, s.v)));
            }
            return out;
          },
          "Per parameter (step, m, v): copies, float32, in the parameter's shape (zeros before "
          "its first step).")
      .def(
          "set_state",
          [](opt::AdamW& o, const py::sequence& state) {
            const size_t n = o.params().size();
            if (py::len(state) != n)
              throw py::value_error("AdamW.set_state: got " + std::to_string(py::len(state)) +
                                    " entries for " + std::to_string(n) + " params");
            std::vector<opt::AdamWParamState> st(n);
            for (size_t i = 0; i < n; ++i) {
              const std::string what = "AdamW.set_state: entry " + std::to_string(i);
              py::object e = state[i];
              if (!py::isinstance<py::sequence>(e) || py::len(e) != 3)
                throw py::type_error(what + ": expected a (step, m, v) tuple");
              py::sequence t = py::reinterpret_borrow<py::sequence>(e);
              st[i].step = t[0].cast<int64_t>();
              st[i].m = values_like(t[1], o.params()[i], what + " m");
              st[i].v = values_like(t[2], o.params()[i], what + " v");
            }
            py::gil_scoped_release nogil;
            o.set_state(std::move(st));
          },
          py::arg("state"),
          "Restores get_state()'s list (validated entirely first: one (step, m, v) per parameter, "
          "float32 arrays of its shape, step >= 0, v >= 0).");

  py::class_<opt::SGD>(m, "SGD", "torch.optim.SGD (single-tensor) over tape tensors.")
      .def(py::init([](std::vector<Tensor> params, double lr, double momentum, double dampening,
                       double weight_decay, bool nesterov) {
             opt::SGDOptions o;
             o.lr = lr;
             o.momentum = momentum;
             o.dampening = dampening;
             o.weight_decay = weight_decay;
             o.nesterov = nesterov;
             return new opt::SGD(std::move(params), o);
           }),
           py::arg("params"), py::arg("lr") = 1e-3, py::arg("momentum") = 0.0,
           py::arg("dampening") = 0.0, py::arg("weight_decay") = 0.0, py::arg("nesterov") = false)
      .def("step", &opt::SGD::step, py::call_guard<py::gil_scoped_release>())
      .def("zero_grad", &opt::SGD::zero_grad, py::call_guard<py::gil_scoped_release>())
      .def_property("lr", &opt::SGD::lr, &opt::SGD::set_lr)
      .def_property("weight_decay", &opt::SGD::weight_decay, &opt::SGD::set_weight_decay)
      .def_property_readonly("momentum", &opt::SGD::momentum)
      .def_property_readonly("params", [](const opt::SGD& o) { return params_list(o.params()); })
      .def(
          "get_state",
          [](const opt::SGD& o) {
            py::list out;
            for (size_t i = 0; i < o.params().size(); ++i) {
              const std::vector<float>& b = o.state()[i].momentum_buffer;
              if (b.empty()) {
                out.append(py::none());
              } else {
                out.append(array_like(o.params()[i], b));
              }
            }
            return out;
          },
          "Per parameter its momentum buffer (a float32 copy) or None before its first step.")
      .def(
          "set_state",
          [](opt::SGD& o, const py::sequence& state) {
            const size_t n = o.params().size();
            if (py::len(state) != n)
              throw py::value_error("SGD.set_state: got " + std::to_string(py::len(state)) +
                                    " entries for " + std::to_string(n) + " params");
            std::vector<opt::SGDParamState> st(n);
            for (size_t i = 0; i < n; ++i) {
              py::object e = state[i];
              if (e.is_none()) continue;
              st[i].momentum_buffer =
                  values_like(e, o.params()[i], "SGD.set_state: entry " + std::to_string(i));
            }
            py::gil_scoped_release nogil;
            o.set_state(std::move(st));
          },
          py::arg("state"),
          "Restores get_state()'s list (arrays of each parameter's shape or None).");

  m.def("clip_grad_norm", &opt::clip_grad_norm, py::arg("params"), py::arg("max_norm"),
        py::call_guard<py::gil_scoped_release>(),
        "torch.nn.utils.clip_grad_norm_ (L2): scales every gradient by max_norm / (total + 1e-6)\n"
        "when that is < 1 and returns the total norm (computed in double). A non-finite total is\n"
        "returned without touching the gradients.");
}
