// Binding of bitnet::sgemm (cpp/include/bitnet/sgemm.h) into bitnet._ext.autograd, for tests and
// benchmarks:
//   sgemm(a, b, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, c=None) -> numpy float32
// computes alpha * op(a) @ op(b) + beta * c. a, b (and c) are 2-D float32 arrays whose rows may be
// strided (views of bigger arrays: the row stride becomes lda / ldb / ldc) but whose elements
// within a row are contiguous. With c given, the result is written into c (which must be
// writable, [M, N]) and c is returned; without c, a new [M, N] array is returned and beta must be
// 0. Compute runs with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "bitnet/common.h"
#include "bitnet/sgemm.h"

namespace py = pybind11;

namespace {

// A 2-D float32 matrix view: data, shape and row stride in elements.
struct MatView {
  float* data;
  int64_t rows, cols, ld;
};

MatView matrix_view(const py::handle& obj, const char* what, bool writable) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string("sgemm: ") + what + ": expected a numpy float32 array, got " +
                         py::str(py::type::of(obj)).cast<std::string>());
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (a.dtype().kind() != 'f' || a.itemsize() != 4)
    throw py::type_error(std::string("sgemm: ") + what + ": expected dtype float32, got " +
                         py::str(a.dtype()).cast<std::string>());
  bitnet::check_arg(a.ndim() == 2, "sgemm: ", what, ": expected a 2-D array, got ", a.ndim(),
                    " dimensions");
  const int64_t rows = a.shape(0), cols = a.shape(1);
  // Strides only matter along dimensions of size > 1 (and not at all for an empty array).
  const bool empty = rows == 0 || cols == 0;
  const py::ssize_t f = sizeof(float);
  const bool inner_ok = empty || cols == 1 || a.strides(1) == f;
  const bool outer_ok = empty || rows == 1 || (a.strides(0) % f == 0 && a.strides(0) / f >= cols);
  bitnet::check_arg(inner_ok && outer_ok, "sgemm: ", what,
                    ": rows must be contiguous and not overlap (strides ", a.strides(0), ", ",
                    a.strides(1), " bytes for shape [", rows, ", ", cols, "])");
  if (writable) bitnet::check_arg(a.writeable(), "sgemm: ", what, ": array is read-only");
  const int64_t ld = empty || rows == 1 ? std::max<int64_t>(cols, 1) : a.strides(0) / f;
  return {static_cast<float*>(const_cast<void*>(a.data())), rows, cols, ld};
}

}  // namespace

void bind_sgemm(py::module_& m) {
  m.def(
      "sgemm",
      [](const py::handle& a, const py::handle& b, bool trans_a, bool trans_b, float alpha,
         float beta, const py::object& c) -> py::object {
        const MatView va = matrix_view(a, "a", false), vb = matrix_view(b, "b", false);
        const int64_t M = trans_a ? va.cols : va.rows, K = trans_a ? va.rows : va.cols;
        const int64_t Kb = trans_b ? vb.cols : vb.rows, N = trans_b ? vb.rows : vb.cols;
        bitnet::check_arg(K == Kb, "sgemm: inner dimensions differ: op(a) is [", M, ", ", K,
                          "] and op(b) is [", Kb, ", ", N,
                          "] (trans_a=", trans_a ? "True" : "False",
                          ", trans_b=", trans_b ? "True" : "False", ")");
        py::object out = c;
        if (c.is_none()) {
          bitnet::check_arg(beta == 0.0f, "sgemm: beta=", beta, " needs c");
          out = py::array_t<float>({M, N});
        }
        const MatView vc = matrix_view(out, "c", true);
        bitnet::check_arg(vc.rows == M && vc.cols == N, "sgemm: c has shape [", vc.rows, ", ",
                          vc.cols, "], expected [", M, ", ", N, "]");
        {
          py::gil_scoped_release release;
          bitnet::sgemm(trans_a, trans_b, M, N, K, alpha, va.data, va.ld, vb.data, vb.ld, beta,
                        vc.data, vc.ld);
        }
        return out;
      },
      py::arg("a"), py::arg("b"), py::arg("trans_a") = false, py::arg("trans_b") = false,
      py::arg("alpha") = 1.0f, py::arg("beta") = 0.0f, py::arg("c") = py::none(),
      "alpha * op(a) @ op(b) + beta * c in fp32 (bitnet::sgemm); op(x) = x.T when trans_x. "
      "Rows of a, b, c may be strided (unit inner stride). With c, the result is written into c "
      "and c is returned; without c, beta must be 0. Releases the GIL while computing.");
}
