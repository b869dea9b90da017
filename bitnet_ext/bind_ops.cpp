// Bindings of the tensor-level ops: quantizers, packed formats, bitlinear, threads, dispatch and
// machine probes. Inputs are validated here (dtype, rank, contiguity, shape) so that the C++ core
// only ever sees well-formed buffers; the compute runs with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <string>

#include "bitnet/bitlinear.h"
#include "bitnet/common.h"
#include "bitnet/formats.h"
#include "bitnet/packed_weights.h"
#include "bitnet/probe.h"
#include "bitnet/quant.h"
#include "bitnet/threadpool.h"
#include "cpu_features.h"
#include "kernels.h"

namespace py = pybind11;
using bitnet::Format;
using bitnet::PackedWeights;

namespace {

std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// Checks a numpy array's dtype, rank and C-contiguity; `what` names the argument in messages.
template <typename T>
py::array_t<T> checked(const py::handle& obj, const char* what, int ndim, const char* dtype) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(std::string(what) + ": expected a numpy array, got " +
                         py::str(py::type::of(obj)).cast<std::string>());
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (!py::isinstance<py::array_t<T>>(a) || a.dtype().kind() != py::dtype::of<T>().kind() ||
      a.itemsize() != py::ssize_t(sizeof(T)))
    throw py::type_error(std::string(what) + ": expected dtype " + dtype + ", got " +
                         dtype_name(a));
  if (ndim > 0 && a.ndim() != ndim)
    throw py::value_error(std::string(what) + ": expected a " + std::to_string(ndim) +
                          "-D array, got shape " + py::str(a.attr("shape")).cast<std::string>());
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(what) +
                          ": array is not C-contiguous; pass np.ascontiguousarray(...)");
  if (a.size() == 0)
    throw py::value_error(std::string(what) + ": array is empty (shape " +
                          py::str(a.attr("shape")).cast<std::string>() + ")");
  return py::reinterpret_borrow<py::array_t<T>>(a);
}

py::tuple quantize_weights(const py::handle& w_obj) {
  auto w = checked<float>(w_obj, "quantize_weights: w", 0, "float32");
  std::vector<py::ssize_t> shape(w.shape(), w.shape() + w.ndim());
  py::array_t<int8_t> t(shape);
  float scale;
  {
    py::gil_scoped_release nogil;
    scale = bitnet::quantize_weights(w.data(), w.size(), t.mutable_data());
  }
  return py::make_tuple(t, scale);
}

py::tuple quantize_activations(const py::handle& x_obj) {
  auto x = checked<float>(x_obj, "quantize_activations: x", 2, "float32");
  const int64_t M = x.shape(0), K = x.shape(1);
  py::array_t<int8_t> q({M, K});
  py::array_t<float> s({M});
  {
    py::gil_scoped_release nogil;
    bitnet::quantize_activations(x.data(), M, K, q.mutable_data(), K, s.mutable_data(), nullptr);
  }
  return py::make_tuple(q, s);
}

std::shared_ptr<PackedWeights> pack(const py::handle& t_obj, const std::string& fmt, double scale) {
  const Format f = bitnet::parse_format(fmt);
  auto t = checked<int8_t>(t_obj, "pack: t", 2, "int8");
  std::shared_ptr<PackedWeights> p;
  {
    py::gil_scoped_release nogil;
    p = PackedWeights::pack(f, t.data(), t.shape(0), t.shape(1), float(scale));
  }
  return p;
}

py::tuple unpack(const PackedWeights& p) {
  py::array_t<int8_t> t({p.rows(), p.cols()});
  float scale;
  {
    py::gil_scoped_release nogil;
    if (p.format() == Format::native) {
      bitnet::unpack_ternary(Format::native, p.data(), p.rows(), p.cols(), t.mutable_data());
      scale = p.scale();
    } else {
      scale = bitnet::unpack_ternary(p.format(), p.data(), p.rows(), p.cols(), t.mutable_data());
    }
  }
  return py::make_tuple(t, scale);
}

std::shared_ptr<PackedWeights> from_bytes(const py::buffer& data, const std::string& fmt,
                                          std::pair<int64_t, int64_t> shape, double scale) {
  const Format f = bitnet::parse_format(fmt);
  // The buffer export (Py_buffer) is held for as long as the view lives, so the exporter cannot
  // resize or free the memory underneath it (a bytearray then raises BufferError on resize).
  auto info = std::make_shared<py::buffer_info>(data.request());
  if (info->ndim != 1 || info->itemsize != 1 || info->strides[0] != 1)
    throw py::value_error("from_bytes: data must be a contiguous 1-D byte buffer");
  const auto* ptr = static_cast<const uint8_t*>(info->ptr);
  const int64_t size = int64_t(info->size);
  std::shared_ptr<const void> keep(ptr, [info](const void*) mutable {
    py::gil_scoped_acquire gil;
    info.reset();
  });
  return PackedWeights::view(f, shape.first, shape.second, ptr, size, std::move(keep),
                             float(scale));
}

py::array_t<float> bitlinear(const py::handle& x_obj, const PackedWeights& w,
                             const py::object& out_obj) {
  auto x = checked<float>(x_obj, "bitlinear: x", 2, "float32");
  const int64_t M = x.shape(0), K = x.shape(1), N = w.rows();
  if (K != w.cols())
    throw py::value_error("bitlinear: x has shape [" + std::to_string(M) + ", " +
                          std::to_string(K) + "] but the weights are [" + std::to_string(N) + ", " +
                          std::to_string(w.cols()) + "]; expected x of shape [M, " +
                          std::to_string(w.cols()) + "]");
  py::array_t<float> out;
  if (out_obj.is_none()) {
    out = py::array_t<float>({M, N});
  } else {
    out = checked<float>(out_obj, "bitlinear: out", 2, "float32");
    if (out.shape(0) != M || out.shape(1) != N)
      throw py::value_error("bitlinear: out has shape [" + std::to_string(out.shape(0)) + ", " +
                            std::to_string(out.shape(1)) + "], expected [" + std::to_string(M) +
                            ", " + std::to_string(N) + "]");
    if (!out.writeable()) throw py::value_error("bitlinear: out is read-only");
    const auto* xb = reinterpret_cast<const char*>(x.data());
    const auto* ob = reinterpret_cast<const char*>(out.data());
    if (ob < xb + x.nbytes() && xb < ob + out.nbytes())
      throw py::value_error("bitlinear: out overlaps x");
  }
  float* y = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    bitnet::bitlinear(x.data(), M, K, w, y, N);
  }
  return out;
}

std::vector<std::string> available_isas() {
  std::vector<std::string> out;
  for (int i = 0; i <= int(bitnet::kernels::Isa::neon_dotprod); ++i)
    if (bitnet::kernels::table_for(bitnet::kernels::Isa(i)))
      out.emplace_back(bitnet::kernels::isa_name(bitnet::kernels::Isa(i)));
  return out;
}

}  // namespace

void bind_ops(py::module_& m) {
  m.def(
      "cpu_features", [] { return bitnet::kernels::cpu_features().names(); },
      "Names of the SIMD features this CPU and OS support.");
  m.def(
      "active_isa", [] { return std::string(bitnet::kernels::active().name); },
      "The kernel ISA in use (after the BITNET_MAX_ISA cap).");
  m.def("available_isas", &available_isas, "ISAs compiled in and runnable on this CPU.");
  m.def(
      "reload_dispatch", [] { return std::string(bitnet::kernels::reload().name); },
      "Re-read BITNET_MAX_ISA and choose the kernels again; returns the active ISA.");
  m.def("set_num_threads", &bitnet::set_num_threads, py::arg("n"));
  m.def("get_num_threads", &bitnet::get_num_threads);
  m.def("physical_core_count", &bitnet::physical_core_count);

  m.def("quantize_weights", &quantize_weights, py::arg("w"));
  m.def("quantize_activations", &quantize_activations, py::arg("x"));

  py::class_<PackedWeights, std::shared_ptr<PackedWeights>>(m, "PackedWeights")
      .def_property_readonly("format",
                             [](const PackedWeights& p) { return bitnet::format_name(p.format()); })
      .def_property_readonly(
          "shape", [](const PackedWeights& p) { return py::make_tuple(p.rows(), p.cols()); })
      .def_property_readonly("scale", &PackedWeights::scale)
      .def_property_readonly("nbytes", &PackedWeights::nbytes)
      .def("tobytes",
           [](const PackedWeights& p) {
             return py::bytes(reinterpret_cast<const char*>(p.data()), size_t(p.nbytes()));
           })
      .def("prepare", [](const PackedWeights& p) {
        py::gil_scoped_release nogil;
        p.kernel();
      });
  m.def("pack", &pack, py::arg("t"), py::arg("fmt"), py::arg("scale"));
  m.def("unpack", &unpack, py::arg("packed"));
  m.def("from_bytes", &from_bytes, py::arg("data"), py::arg("fmt"), py::arg("shape"),
        py::arg("scale") = 1.0);
  m.def("format_row_multiple",
        [](const std::string& f) { return bitnet::format_row_multiple(bitnet::parse_format(f)); });
  m.def("packed_nbytes", [](const std::string& f, int64_t n, int64_t k) {
    return bitnet::packed_nbytes(bitnet::parse_format(f), n, k);
  });
  m.def("bitlinear", &bitlinear, py::arg("x"), py::arg("packed"), py::arg("out") = py::none());

  m.def("measure_read_bandwidth", &bitnet::measure_read_bandwidth, py::arg("bytes"),
        py::arg("threads"), py::arg("repeats") = 5, py::call_guard<py::gil_scoped_release>());
  m.def("measure_int8_peak", &bitnet::measure_int8_peak, py::arg("threads"),
        py::arg("seconds") = 0.2, py::arg("repeats") = 5, py::call_guard<py::gil_scoped_release>());
}
