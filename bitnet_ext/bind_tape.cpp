// Bindings of the autograd tape (cpp/include/bitnet/tape.h) as the submodule bitnet._ext.autograd:
//   Tensor(array float32, requires_grad=False)   a copy of a C-contiguous float32 array
//   Tensor.zeros(shape, requires_grad=False)
//   .shape, .numel, .requires_grad (settable), .numpy() (a view, no copy), .grad (a copy, or
//   None; assigning an array of the same shape sets it), .zero_grad(), .item()
//   backward(loss), backward_with(root, grad), set_grad_enabled(on), is_grad_enabled(),
//   clear_tape(), tape_size(), tape_ops(), pool_stats() -> dict, reset_peak(),
//   release_cached_memory()
// The ops (bitnet/autograd_ops.h) and optimizers are registered into the same submodule by the
// bind_autograd_*.cpp / bind_optim.cpp / bind_sgemm.cpp files. Compute runs with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <string>
#include <vector>

#include "autograd_util.h"
#include "bitnet/tape.h"

namespace py = pybind11;
namespace ag = bitnet::autograd;
using ag::Tensor;

void bind_autograd_linear(py::module_& m);
void bind_autograd_attention(py::module_& m);
void bind_autograd_elementwise(py::module_& m);
void bind_autograd_frozen(py::module_& m);
void bind_optim(py::module_& m);
void bind_sgemm(py::module_& m);

namespace {

py::array_t<float> contiguous_f32(const py::handle& obj, const char* what) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(what) + ": expected a numpy float32 array, got " +
                         py::str(py::type::of(obj)).cast<std::string>());
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (a.dtype().kind() != 'f' || a.itemsize() != 4)
    throw py::type_error(std::string(what) + ": expected dtype float32, got " +
                         py::str(a.dtype()).cast<std::string>());
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(what) + ": array is not C-contiguous");
  return py::reinterpret_borrow<py::array_t<float>>(a);
}

std::vector<int64_t> array_shape(const py::array& a) {
  return std::vector<int64_t>(a.shape(), a.shape() + a.ndim());
}

}  // namespace

void bind_tape(py::module_& parent) {
  py::module_ m = parent.def_submodule("autograd", "reverse-mode autograd tape (bitnet/tape.h)");

  py::class_<Tensor>(m, "Tensor", "A dense fp32 tensor with an optional gradient.")
      .def(py::init([](const py::handle& array, bool requires_grad) {
             auto a = contiguous_f32(array, "Tensor");
             return Tensor::from_data(a.data(), array_shape(a), requires_grad);
           }),
           py::arg("array"), py::arg("requires_grad") = false)
      .def_static(
          "zeros",
          [](const std::vector<int64_t>& shape, bool requires_grad) {
            return Tensor::zeros(shape, requires_grad);
          },
          py::arg("shape"), py::arg("requires_grad") = false)
      .def_property_readonly("shape",
                             [](const Tensor& t) {
                               py::tuple s(t.shape().size());
                               for (size_t i = 0; i < t.shape().size(); ++i) s[i] = t.shape()[i];
                               return s;
                             })
      .def_property_readonly("numel", &Tensor::numel)
      .def_property("requires_grad", &Tensor::requires_grad, &Tensor::set_requires_grad)
      .def("numpy", &bitnet_ext::tensor_view,
           "A float32 numpy view of the data (no copy; writes go to the tensor).")
      .def_property(
          "grad",
          [](const Tensor& t) -> py::object {
            const float* g = t.grad_if_any();
            if (!g) return py::none();
            std::vector<py::ssize_t> shape(t.shape().begin(), t.shape().end());
            py::array_t<float> out(shape);
            if (t.numel()) std::memcpy(out.mutable_data(), g, size_t(t.numel()) * 4);
            return std::move(out);
          },
          [](Tensor& t, const py::object& value) {
            if (value.is_none()) {
              t.zero_grad();
              return;
            }
            auto a = contiguous_f32(value, "Tensor.grad");
            if (array_shape(a) != t.shape())
              throw py::value_error("Tensor.grad: expected shape " + t.shape_str() + ", got " +
                                    py::str(a.attr("shape")).cast<std::string>());
            if (t.numel()) std::memcpy(t.grad(), a.data(), size_t(t.numel()) * 4);
          },
          "The gradient as a float32 copy, or None. Assign an array to set it, None to clear.")
      .def("zero_grad", &Tensor::zero_grad, "Drops the gradient (the next one starts at zero).")
      .def("item",
           [](const Tensor& t) {
             if (t.numel() != 1)
               throw py::value_error("Tensor.item: expected one element, got shape " +
                                     t.shape_str());
             return double(t.data()[0]);
           })
      .def("__repr__", [](const Tensor& t) {
        return "Tensor(shape=" + t.shape_str() +
               (t.requires_grad() ? ", requires_grad=True)" : ")");
      });

  m.def(
      "backward",
      [](const Tensor& loss) {
        py::gil_scoped_release nogil;
        ag::backward(loss);
      },
      py::arg("loss"), "Runs the tape backwards from a one-element loss, then clears it.");
  m.def(
      "backward_with",
      [](const Tensor& root, const py::handle& grad) {
        auto g = contiguous_f32(grad, "backward_with: grad");
        if (array_shape(g) != root.shape())
          throw py::value_error("backward_with: grad has shape " +
                                py::str(g.attr("shape")).cast<std::string>() +
                                ", the root tensor " + root.shape_str());
        py::gil_scoped_release nogil;
        ag::backward(root, g.data());
      },
      py::arg("root"), py::arg("grad"),
      "Runs the tape backwards from `root` seeded with `grad` (same shape), then clears it.");
  m.def("set_grad_enabled", &ag::set_grad_enabled, py::arg("on"));
  m.def("is_grad_enabled", &ag::grad_enabled);
  m.def("clear_tape", &ag::clear_tape);
  m.def("tape_size", &ag::tape_size);
  m.def("tape_ops", &ag::tape_ops);
  m.def("pool_stats", [] {
    const ag::PoolStats s = ag::pool_stats();
    py::dict d;
    d["in_use"] = s.in_use;
    d["cached"] = s.cached;
    d["peak"] = s.peak;
    return d;
  });
  m.def("reset_peak", &ag::reset_peak);
  m.def("release_cached_memory", &ag::release_cached_memory);

  bind_autograd_linear(m);
  bind_autograd_attention(m);
  bind_autograd_elementwise(m);
  bind_autograd_frozen(m);
  bind_optim(m);
  bind_sgemm(m);
}
