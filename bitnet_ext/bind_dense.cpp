// Bindings of the dense (embedding / LM head) matrices, bitnet/dense.h: _ext.DenseMatrix over a
// byte buffer in one of f32, f16, bf16, q8_0, q4_0, with .row(r) and .matmul(x). Inputs are
// validated here (dtype, rank, contiguity, shape); the compute runs with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <string>

#include "bitnet/dense.h"
#include "bitnet/gguf.h"

namespace py = pybind11;
using bitnet::DenseMatrix;

namespace {

std::string shape_str(const py::array& a) { return py::str(a.attr("shape")).cast<std::string>(); }

// The type name as the bindings print it ("q8_0").
std::string type_str(const DenseMatrix& d) { return bitnet::gguf::type_name(d.type()); }

// A C-contiguous float32 array of rank `ndim` (exact dtype; no silent conversion of the input).
py::array_t<float> float_array(const py::handle& obj, const std::string& what, int ndim) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(what + ": expected a numpy float32 array, got " +
                         py::str(py::type::of(obj)).cast<std::string>());
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (a.dtype().kind() != 'f' || a.itemsize() != 4)
    throw py::type_error(what + ": expected dtype float32, got " +
                         py::str(a.dtype()).cast<std::string>());
  if (a.ndim() != ndim)
    throw py::value_error(what + ": expected a " + std::to_string(ndim) + "-D array, got shape " +
                          shape_str(a));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(what + ": array is not C-contiguous; pass np.ascontiguousarray(...)");
  return py::reinterpret_borrow<py::array_t<float>>(a);
}

std::shared_ptr<DenseMatrix> make_dense(const std::string& type, int64_t rows, int64_t cols,
                                        const py::buffer& data, const std::string& name) {
  const bitnet::gguf::GgmlType t = bitnet::gguf::parse_type(type);
  // The buffer export is held for as long as the matrix lives, so the exporter cannot resize or
  // free the memory underneath it.
  auto info = std::make_shared<py::buffer_info>(data.request());
  const std::string what = "DenseMatrix '" + name + "': data";
  if (info->itemsize != 1)
    throw py::type_error(what + ": expected a byte buffer (uint8), got items of " +
                         std::to_string(info->itemsize) + " bytes");
  py::ssize_t expect = 1;
  for (py::ssize_t i = info->ndim - 1; i >= 0; --i) {
    if (info->shape[size_t(i)] > 1 && info->strides[size_t(i)] != expect)
      throw py::value_error(what + ": buffer is not C-contiguous");
    expect *= info->shape[size_t(i)];
  }
  const auto* ptr = static_cast<const uint8_t*>(info->ptr);
  const int64_t size = int64_t(info->size);
  std::shared_ptr<const void> keep(ptr, [info](const void*) mutable {
    py::gil_scoped_acquire gil;
    info.reset();
  });
  return DenseMatrix::view(t, rows, cols, ptr, size, std::move(keep), name);
}

py::array_t<float> row(const DenseMatrix& d, int64_t r) {
  py::array_t<float> out(d.cols());
  float* o = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    d.row(r, o);
  }
  return out;
}

py::array_t<float> matmul(const DenseMatrix& d, const py::handle& x_obj,
                          const py::object& out_obj) {
  const std::string what = d.describe() + ".matmul";
  auto x = float_array(x_obj, what + ": x", 2);
  const int64_t M = x.shape(0), K = x.shape(1), N = d.rows();
  if (M == 0 || K != d.cols())
    throw py::value_error(what + ": x has shape " + shape_str(x) + ", expected [M >= 1, " +
                          std::to_string(d.cols()) + "]");
  py::array_t<float> out;
  if (out_obj.is_none()) {
    out = py::array_t<float>({M, N});
  } else {
    out = float_array(out_obj, what + ": out", 2);
    if (out.shape(0) != M || out.shape(1) != N)
      throw py::value_error(what + ": out has shape " + shape_str(out) + ", expected [" +
                            std::to_string(M) + ", " + std::to_string(N) + "]");
    if (!out.writeable()) throw py::value_error(what + ": out is read-only");
    const auto* xb = reinterpret_cast<const char*>(x.data());
    const auto* ob = reinterpret_cast<const char*>(out.data());
    if (ob < xb + x.nbytes() && xb < ob + out.nbytes())
      throw py::value_error(what + ": out overlaps x");
  }
  const float* xp = x.data();
  float* y = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    d.matmul(xp, M, y, N);
  }
  return out;
}

}  // namespace

void bind_dense(py::module_& m) {
  py::class_<DenseMatrix, std::shared_ptr<DenseMatrix>>(
      m, "DenseMatrix",
      "A [rows, cols] matrix in a stored ggml type (f32, f16, bf16, q8_0, q4_0), read in place "
      "from a byte buffer (kept alive): the token embedding / LM head.")
      .def(py::init(&make_dense), py::arg("type"), py::arg("rows"), py::arg("cols"),
           py::arg("data"), py::arg("name") = "dense",
           "type: ggml type name; data: C-contiguous bytes, exactly rows * row_bytes.")
      .def_property_readonly("type", &type_str)
      .def_property_readonly("rows", &DenseMatrix::rows)
      .def_property_readonly("cols", &DenseMatrix::cols)
      .def_property_readonly(
          "shape", [](const DenseMatrix& d) { return py::make_tuple(d.rows(), d.cols()); })
      .def_property_readonly("row_bytes", &DenseMatrix::row_bytes)
      .def_property_readonly("nbytes",
                             [](const DenseMatrix& d) { return d.rows() * d.row_bytes(); })
      .def_property_readonly("name", &DenseMatrix::name)
      .def("row", &row, py::arg("r"), "Row r dequantized to float32 [cols] (exact).")
      .def("matmul", &matmul, py::arg("x"), py::arg("out") = py::none(),
           "x float32 [M, cols] -> x @ W^T float32 [M, rows] (into `out` if given).")
      .def("__repr__", [](const DenseMatrix& d) { return "<" + d.describe() + ">"; });
}
