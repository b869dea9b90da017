// The compiled module bitnet._ext: bindings only; every binding file registers one area.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void bind_ops(py::module_& m);
void bind_gguf(py::module_& m);
void bind_quants(py::module_& m);
void bind_dense(py::module_& m);
void bind_model(py::module_& m);
void bind_sampler(py::module_& m);
void bind_tape(py::module_& m);
void bind_cuda(py::module_& m);  // bind_cuda.cpp: bitnet._ext.cuda (every build)

PYBIND11_MODULE(_ext, m) {
  m.doc() = "bitnet-ext C++ core (kernels, formats, GGUF, thread pool)";
  bind_ops(m);
  bind_gguf(m);
  bind_quants(m);
  bind_dense(m);
  bind_model(m);
  bind_sampler(m);
  bind_tape(m);
  bind_cuda(m);
}
