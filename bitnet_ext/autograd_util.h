// Helpers shared by the autograd binding files (bind_tape.cpp, bind_autograd_*.cpp).
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <string>
#include <vector>

#include "bitnet/tape.h"

namespace bitnet_ext {

namespace py = pybind11;

// A numpy view of t's data (no copy): the array keeps the tensor's buffer alive.
inline py::array tensor_view(const bitnet::autograd::Tensor& t) {
  auto keep = new std::shared_ptr<bitnet::autograd::TensorImpl>(t.impl());
  py::capsule base(
      keep, [](void* p) { delete static_cast<std::shared_ptr<bitnet::autograd::TensorImpl>*>(p); });
  std::vector<py::ssize_t> shape(t.shape().begin(), t.shape().end()), strides(shape.size());
  py::ssize_t stride = sizeof(float);
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= shape[i];
  }
  auto& tt = const_cast<bitnet::autograd::Tensor&>(t);
  return py::array(py::dtype::of<float>(), shape, strides, tt.data(), base);
}

// A 1-D integer sequence (numpy array of any integer dtype, or a list of ints) as int32 values;
// `what` names the argument in errors. Range checks are the op's job.
inline std::vector<int32_t> int32_ids(const py::handle& obj, const char* what) {
  py::array a = py::array::ensure(obj);
  if (!a || (a.size() > 0 && a.dtype().kind() != 'i' && a.dtype().kind() != 'u'))
    throw py::type_error(std::string(what) + ": expected a 1-D sequence of integers");
  if (a.ndim() != 1)
    throw py::value_error(std::string(what) + ": expected a 1-D array, got shape " +
                          py::str(a.attr("shape")).cast<std::string>());
  auto v = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(a);
  std::vector<int32_t> out(size_t(v.size()));
  for (py::ssize_t i = 0; i < v.size(); ++i) {
    const int64_t x = v.data()[i];
    if (x < INT32_MIN || x > INT32_MAX)
      throw py::value_error(std::string(what) + "[" + std::to_string(i) +
                            "] = " + std::to_string(x) + " does not fit in int32");
    out[size_t(i)] = int32_t(x);
  }
  return out;
}

}  // namespace bitnet_ext
