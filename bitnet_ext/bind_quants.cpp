// Bindings of ggml's Q8_0 / Q4_0 block quantization (bitnet/ggml_quants.h) and of the fp16
// conversions it relies on. Inputs are validated here (dtype, rank, contiguity, sizes) so the
// core only sees well-formed buffers; the compute runs with the GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <string>
#include <vector>

#include "bitnet/formats.h"
#include "bitnet/ggml_quants.h"

namespace py = pybind11;
using bitnet::GgmlQuant;
using bitnet::SrcType;

namespace {

std::string shape_str(const py::array& a) { return py::str(a.attr("shape")).cast<std::string>(); }

// quantize: x is a C-contiguous numpy array of rank >= 1 whose last axis holds the rows:
// float32, float16, or uint16 carrying bfloat16 bits (bf16 = true). Returns uint8
// [*x.shape[:-1], k / 32 * block_bytes], the GGUF tensor bytes.
py::array_t<uint8_t> ggml_quantize(const py::array& x, const std::string& type, bool bf16) {
  const GgmlQuant t = bitnet::parse_ggml_quant(type);
  const std::string what = std::string("quantize_blocks(") + bitnet::ggml_quant_name(t) + "): x";
  SrcType src;
  const char kind = x.dtype().kind();
  const py::ssize_t item = x.itemsize();
  if (bf16) {
    if (kind != 'u' || item != 2)
      throw py::type_error(what + ": bfloat16 data must be passed as uint16 bits, got " +
                           py::str(x.dtype()).cast<std::string>());
    src = SrcType::bf16;
  } else if (kind == 'f' && item == 4) {
    src = SrcType::f32;
  } else if (kind == 'f' && item == 2) {
    src = SrcType::f16;
  } else {
    throw py::type_error(what + ": expected float32, float16 or bfloat16, got " +
                         py::str(x.dtype()).cast<std::string>());
  }
  if (x.ndim() < 1) throw py::value_error(what + ": expected an array of rank >= 1, got a scalar");
  if (!(x.flags() & py::array::c_style))
    throw py::value_error(what + ": array is not C-contiguous");
  if (x.size() == 0) throw py::value_error(what + ": array is empty (shape " + shape_str(x) + ")");
  const int64_t k = x.shape(x.ndim() - 1);
  const int64_t rows = int64_t(x.size()) / k;
  if (k % bitnet::kGgmlBlockValues != 0)
    throw py::value_error(what + ": shape " + shape_str(x) + ": the row length " +
                          std::to_string(k) + " is not a multiple of 32 (the " +
                          bitnet::ggml_quant_name(t) + " block size)");
  std::vector<py::ssize_t> shape(x.shape(), x.shape() + x.ndim());
  shape.back() = py::ssize_t(bitnet::ggml_quant_row_bytes(t, k));
  py::array_t<uint8_t> out(shape);
  const void* src_ptr = x.data();
  uint8_t* dst = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    bitnet::ggml_quantize(t, src_ptr, src, rows, k, dst);
  }
  return out;
}

// dequantize: data is any contiguous byte buffer of exactly rows * row_bytes bytes.
py::array_t<float> ggml_dequantize(const py::buffer& data, const std::string& type, int64_t rows,
                                   int64_t k) {
  const GgmlQuant t = bitnet::parse_ggml_quant(type);
  const std::string what = std::string("dequantize_blocks(") + bitnet::ggml_quant_name(t) + ")";
  if (rows <= 0 || k <= 0)
    throw py::value_error(what + ": shape [" + std::to_string(rows) + ", " + std::to_string(k) +
                          "] must be non-empty");
  if (k % bitnet::kGgmlBlockValues != 0)
    throw py::value_error(what + ": row length " + std::to_string(k) +
                          " is not a multiple of 32 (the block size)");
  const int64_t rb = bitnet::ggml_quant_row_bytes(t, k);
  py::buffer_info info = data.request();
  if (info.ndim != 1 || info.itemsize != 1 || info.strides[0] != 1)
    throw py::value_error(what + ": data must be a contiguous 1-D byte buffer");
  if (rows > int64_t(1) << 40 || int64_t(info.size) != rows * rb)
    throw py::value_error(what + ": shape [" + std::to_string(rows) + ", " + std::to_string(k) +
                          "] needs " + std::to_string(rows) + " x " + std::to_string(rb) +
                          " bytes, got " + std::to_string(info.size));
  py::array_t<float> out({rows, k});
  const auto* in = static_cast<const uint8_t*>(info.ptr);
  float* y = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    bitnet::ggml_dequantize(t, in, rows, k, y);
  }
  return out;
}

py::array_t<uint16_t> fp32_to_fp16_bits(const py::array_t<float, py::array::c_style>& x) {
  py::array_t<uint16_t> out(x.size());
  const float* in = x.data();
  uint16_t* o = out.mutable_data();
  const py::ssize_t n = x.size();
  {
    py::gil_scoped_release nogil;
    for (py::ssize_t i = 0; i < n; ++i) o[i] = bitnet::fp32_to_fp16(in[i]);
  }
  return out;
}

py::array_t<float> fp16_bits_to_fp32(const py::array_t<uint16_t, py::array::c_style>& h) {
  py::array_t<float> out(h.size());
  const uint16_t* in = h.data();
  float* o = out.mutable_data();
  const py::ssize_t n = h.size();
  {
    py::gil_scoped_release nogil;
    for (py::ssize_t i = 0; i < n; ++i) o[i] = bitnet::fp16_to_fp32(in[i]);
  }
  return out;
}

}  // namespace

void bind_quants(py::module_& m) {
  m.def("ggml_quantize", &ggml_quantize, py::arg("x"), py::arg("type"), py::arg("bf16") = false,
        "Quantizes x (float32 / float16 / bfloat16 bits as uint16 with bf16=True, last axis = "
        "rows of a multiple of 32) into ggml Q8_0 or Q4_0 blocks; returns uint8 "
        "[*x.shape[:-1], k / 32 * block_bytes].");
  m.def("ggml_dequantize", &ggml_dequantize, py::arg("data"), py::arg("type"), py::arg("rows"),
        py::arg("k"),
        "Dequantizes rows * k values of ggml Q8_0 / Q4_0 bytes into float32 [rows, k].");
  m.def("ggml_block_bytes", [](const std::string& type) {
    return bitnet::ggml_quant_block_bytes(bitnet::parse_ggml_quant(type));
  });
  m.def("fp32_to_fp16", &fp32_to_fp16_bits, py::arg("x"),
        "IEEE fp16 bits (round to nearest even) of every float32 of x, flattened (uint16).");
  m.def("fp16_to_fp32", &fp16_bits_to_fp32, py::arg("h"),
        "float32 values of the fp16 bit patterns h (uint16), flattened.");
}
