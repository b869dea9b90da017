// bitnet._ext.cuda: the CUDA backend's status and per-kernel test entry points (upload numpy
// inputs, run one kernel, download the result), present in every build. Built without CUDA, the
// submodule reports available() == False with reason() "built without CUDA ..." and every entry
// point raises RuntimeError with that reason; built with CUDA on a machine without a usable
// device, the entry points that need the GPU raise RuntimeError(reason()) the same way.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#ifdef BITNET_HAVE_CUDA
#include "act_quant.cuh"
#include "attention.cuh"
#include "bitnet/cuda.h"
#include "bitnet/nn.h"
#include "gemm_w2a8.cuh"
#include "gemv_w2a8.cuh"
#include "head.cuh"
#include "relu2_mul.cuh"
#include "rmsnorm.cuh"
#include "rope.cuh"
#include "sampling.cuh"
#include "w2_layout.cuh"
#endif

namespace py = pybind11;

namespace {

// Every entry point of the submodule, in both builds (tests check they all exist).
const char* const kEntryPoints[] = {
    "w2g_from_ternary", "w2g_from_k256", "q8g_from_q8_0", "act_quant", "gemv_w2a8",
    "gemm_w2a8",        "rmsnorm",       "rope_neox",     "attention", "relu2_mul",
    "head_f16",         "head_q8_0",     "argmax",        "topk",      "sample_topk"};

#ifdef BITNET_HAVE_CUDA

namespace cu = bitnet::cuda;

std::string reason() { return cu::available() ? std::string() : cu::unavailable_reason(); }

void require_device() {
  if (!cu::available()) throw std::runtime_error("bitnet CUDA backend: " + reason());
}

std::string shape_str(const py::array& a) { return py::str(a.attr("shape")).cast<std::string>(); }

// A C-contiguous array of exactly dtype T and rank ndim (no silent conversion).
template <typename T>
py::array_t<T> arr(const py::handle& obj, const std::string& what, int ndim) {
  if (!py::isinstance<py::array>(obj))
    throw py::type_error(what + ": expected a numpy array, got " +
                         py::str(py::type::of(obj)).cast<std::string>());
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (!a.dtype().is(py::dtype::of<T>()))
    throw py::type_error(what + ": expected dtype " +
                         py::str(py::dtype::of<T>()).cast<std::string>() + ", got " +
                         py::str(a.dtype()).cast<std::string>());
  if (a.ndim() != ndim)
    throw py::value_error(what + ": expected a " + std::to_string(ndim) + "-D array, got shape " +
                          shape_str(a));
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(what + ": array is not C-contiguous; pass np.ascontiguousarray(...)");
  if (a.size() == 0) throw py::value_error(what + ": array is empty, shape " + shape_str(a));
  return py::reinterpret_borrow<py::array_t<T>>(a);
}

template <typename T>
cu::DeviceBuffer upload(const py::array_t<T>& a) {
  cu::DeviceBuffer b(size_t(a.nbytes()));
  b.upload(a.data(), size_t(a.nbytes()));
  return b;
}

template <typename T>
cu::DeviceBuffer upload(const std::vector<T>& v) {
  cu::DeviceBuffer b(v.size() * sizeof(T));
  b.upload(v.data(), v.size() * sizeof(T));
  return b;
}

cu::DeviceBuffer bad_flag() {
  const int32_t init = INT32_MAX;
  cu::DeviceBuffer b(sizeof(int32_t));
  b.upload(&init, sizeof init);
  return b;
}

int32_t read_flag(const cu::DeviceBuffer& b) {
  int32_t v = 0;
  b.download(&v, sizeof v);
  return v;
}

// ------------------------------------------------------------------ layouts (host only)
py::array_t<uint32_t> w2g_from_ternary(const py::handle& t_obj) {
  auto t = arr<int8_t>(t_obj, "w2g_from_ternary: t", 2);
  const int64_t N = t.shape(0), K = t.shape(1);
  py::array_t<uint32_t> out({N, cu::w2g_row_words(K)});
  uint32_t* o = out.mutable_data();
  try {
    py::gil_scoped_release nogil;
    cu::w2g_from_ternary(t.data(), N, K, o);
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
  return out;
}

py::array_t<uint32_t> w2g_from_k256(const py::handle& data_obj, int64_t N, int64_t K) {
  auto d = arr<uint8_t>(data_obj, "w2g_from_k256: data", 1);
  if (N < 1 || K < 1) throw py::value_error("w2g_from_k256: N and K must be >= 1");
  const int64_t need = N * ((K + 255) / 256) * 64;
  if (d.size() != need)
    throw py::value_error("w2g_from_k256: " + std::to_string(d.size()) + " bytes, expected " +
                          std::to_string(need) + " for [" + std::to_string(N) + ", " +
                          std::to_string(K) + "]");
  py::array_t<uint32_t> out({N, cu::w2g_row_words(K)});
  uint32_t* o = out.mutable_data();
  try {
    py::gil_scoped_release nogil;
    cu::w2g_from_k256(d.data(), N, K, o);
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
  return out;
}

py::tuple q8g_from_q8_0(const py::handle& data_obj, int64_t rows, int64_t cols) {
  auto d = arr<uint8_t>(data_obj, "q8g_from_q8_0: data", 1);
  if (rows < 1 || cols < 32 || cols % 32 != 0)
    throw py::value_error("q8g_from_q8_0: bad shape [" + std::to_string(rows) + ", " +
                          std::to_string(cols) + "] (cols must be a positive multiple of 32)");
  if (d.size() != rows * (cols / 32) * 34)
    throw py::value_error("q8g_from_q8_0: " + std::to_string(d.size()) + " bytes, expected " +
                          std::to_string(rows * (cols / 32) * 34));
  py::array_t<int8_t> qs({rows, cols});
  py::array_t<float> sc({rows, cols / 32});
  try {
    cu::q8g_from_q8_0(d.data(), rows, cols, qs.mutable_data(), sc.mutable_data());
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
  return py::make_tuple(qs, sc);
}

// ------------------------------------------------------------------ kernels
py::tuple act_quant(const py::handle& x_obj, std::optional<int64_t> k_pad_opt) {
  require_device();
  auto x = arr<float>(x_obj, "act_quant: x", 2);
  const int64_t M = x.shape(0), K = x.shape(1);
  const int64_t k_pad = k_pad_opt.value_or(cu::w2g_kpad(K));
  if (k_pad < K)
    throw py::value_error("act_quant: k_pad " + std::to_string(k_pad) + " < K " +
                          std::to_string(K));
  py::array_t<int8_t> q({M, k_pad});
  py::array_t<float> s({M});
  py::array_t<int32_t> qs({M});
  int32_t bad;
  {
    py::gil_scoped_release nogil;
    auto dx = upload(x);
    cu::DeviceBuffer dq(size_t(M * k_pad)), ds(size_t(M) * 4), dsum(size_t(M) * 4);
    auto flag = bad_flag();
    cu::launch_act_quant(dx.as<float>(), K, M, K, dq.as<int8_t>(), k_pad, ds.as<float>(),
                         dsum.as<int32_t>(), flag.as<int32_t>(), nullptr);
    bad = read_flag(flag);
    dq.download(q.mutable_data(), dq.size());
    ds.download(s.mutable_data(), ds.size());
    dsum.download(qs.mutable_data(), dsum.size());
  }
  if (bad != INT32_MAX)
    throw py::value_error("act_quant: row " + std::to_string(bad) +
                          " of the input holds NaN or Inf");
  return py::make_tuple(q, s, qs);
}

// act_quant + GEMV or GEMM on the GPU: y [M, N] for x [M, K] and W2G weights [N, K].
py::array_t<float> w2a8(const py::handle& x_obj, const py::handle& w_obj, double scale, bool gemm) {
  require_device();
  const char* name = gemm ? "gemm_w2a8" : "gemv_w2a8";
  auto x = arr<float>(x_obj, std::string(name) + ": x", 2);
  auto w = arr<uint32_t>(w_obj, std::string(name) + ": w", 2);
  const int64_t M = x.shape(0), K = x.shape(1), N = w.shape(0);
  if (w.shape(1) != cu::w2g_row_words(K))
    throw py::value_error(std::string(name) + ": w has " + std::to_string(w.shape(1)) +
                          " words per row; K = " + std::to_string(K) + " needs " +
                          std::to_string(cu::w2g_row_words(K)) + " (w2g_from_ternary output)");
  const int64_t kp = cu::w2g_kpad(K);
  py::array_t<float> y({M, N});
  int32_t bad;
  {
    py::gil_scoped_release nogil;
    auto dx = upload(x);
    auto dw = upload(w);
    cu::DeviceBuffer dq(size_t(M * kp)), ds(size_t(M) * 4), dsum(size_t(M) * 4),
        dy(size_t(M * N) * 4);
    auto flag = bad_flag();
    cu::launch_act_quant(dx.as<float>(), K, M, K, dq.as<int8_t>(), kp, ds.as<float>(),
                         dsum.as<int32_t>(), flag.as<int32_t>(), nullptr);
    bad = read_flag(flag);
    if (bad == INT32_MAX) {
      if (gemm)
        cu::launch_gemm_w2a8(dw.as<uint32_t>(), N, K, dq.as<int8_t>(), ds.as<float>(), M,
                             float(scale), dy.as<float>(), N, nullptr);
      else
        cu::launch_gemv_w2a8(dw.as<uint32_t>(), N, K, dq.as<int8_t>(), ds.as<float>(),
                             dsum.as<int32_t>(), M, float(scale), dy.as<float>(), N, nullptr);
      dy.download(y.mutable_data(), dy.size());
    }
  }
  if (bad != INT32_MAX)
    throw py::value_error(std::string(name) + ": row " + std::to_string(bad) +
                          " of the input holds NaN or Inf");
  return y;
}

py::array_t<float> rmsnorm(const py::handle& x_obj, const py::handle& w_obj, double eps) {
  require_device();
  auto x = arr<float>(x_obj, "rmsnorm: x", 2);
  auto w = arr<float>(w_obj, "rmsnorm: w", 1);
  const int64_t M = x.shape(0), n = x.shape(1);
  if (w.shape(0) != n)
    throw py::value_error("rmsnorm: w has " + std::to_string(w.shape(0)) + " values, x rows " +
                          std::to_string(n));
  py::array_t<float> y({M, n});
  {
    py::gil_scoped_release nogil;
    auto dx = upload(x);
    auto dw = upload(w);
    cu::launch_rmsnorm(dx.as<float>(), n, M, n, dw.as<float>(), float(eps), dx.as<float>(), n,
                       nullptr);  // in place
    dx.download(y.mutable_data(), dx.size());
  }
  return y;
}

py::array_t<float> rope_neox(const py::handle& x_obj, const py::handle& pos_obj, double theta) {
  require_device();
  auto x = arr<float>(x_obj, "rope_neox: x", 3);
  const int64_t M = x.shape(0), H = x.shape(1), d = x.shape(2);
  auto pos = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(pos_obj);
  if (!pos || pos.ndim() != 1 || pos.shape(0) != M)
    throw py::value_error("rope_neox: pos must be a 1-D integer array of " + std::to_string(M) +
                          " positions");
  if (d % 2 != 0) throw py::value_error("rope_neox: head_dim " + std::to_string(d) + " is odd");
  std::vector<int32_t> p32(static_cast<size_t>(M));
  for (int64_t m = 0; m < M; ++m) {
    const int64_t p = pos.data()[m];
    if (p < 0 || p >= (int64_t(1) << 24))
      throw py::value_error("rope_neox: position " + std::to_string(p) + " (row " +
                            std::to_string(m) + ") out of range [0, 2^24)");
    p32[size_t(m)] = int32_t(p);
  }
  std::vector<float> inv(size_t(d / 2));
  try {
    bitnet::nn::rope_inv_freq(d, float(theta), inv.data());
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
  py::array_t<float> y({M, H, d});
  {
    py::gil_scoped_release nogil;
    auto dx = upload(x);
    auto dp = upload(p32);
    auto di = upload(inv);
    cu::launch_rope_neox(dx.as<float>(), H * d, M, H, d, dp.as<int32_t>(), di.as<float>(), nullptr);
    dx.download(y.mutable_data(), dx.size());
  }
  return y;
}

py::array_t<float> attention(const py::handle& q_obj, const py::handle& k_obj,
                             const py::handle& v_obj, int64_t n_past) {
  require_device();
  auto q = arr<float>(q_obj, "attention: q", 3);
  auto k = arr<float>(k_obj, "attention: k", 3);
  auto v = arr<float>(v_obj, "attention: v", 3);
  const int64_t M = q.shape(0), H = q.shape(1), d = q.shape(2), L = k.shape(0), Hkv = k.shape(1);
  if (k.shape(2) != d || v.shape(0) != L || v.shape(1) != Hkv || v.shape(2) != d)
    throw py::value_error("attention: k and v must both be [L, n_head_kv, head_dim]");
  if (H % Hkv != 0)
    throw py::value_error("attention: n_head " + std::to_string(H) +
                          " is not a multiple of n_head_kv " + std::to_string(Hkv));
  if (n_past < 0 || n_past + M > L)
    throw py::value_error("attention: n_past " + std::to_string(n_past) + " + " +
                          std::to_string(M) + " queries > " + std::to_string(L) + " keys");
  py::array_t<float> out({M, H, d});
  {
    py::gil_scoped_release nogil;
    auto dq = upload(q);
    auto dk = upload(k);
    auto dv = upload(v);
    cu::DeviceBuffer dout(size_t(q.nbytes()));
    cu::launch_attention(dq.as<float>(), dk.as<float>(), dv.as<float>(), dout.as<float>(), M,
                         n_past, H, Hkv, d, 1.0f / std::sqrt(float(d)), nullptr);
    dout.download(out.mutable_data(), dout.size());
  }
  return out;
}

py::array_t<float> relu2_mul(const py::handle& g_obj, const py::handle& u_obj) {
  require_device();
  auto g = arr<float>(g_obj, "relu2_mul: g", 2);
  auto u = arr<float>(u_obj, "relu2_mul: u", 2);
  const int64_t M = g.shape(0), n = g.shape(1);
  if (u.shape(0) != M || u.shape(1) != n)
    throw py::value_error("relu2_mul: g " + shape_str(g) + " and u " + shape_str(u) +
                          " must have the same shape");
  py::array_t<float> h({M, n});
  {
    py::gil_scoped_release nogil;
    auto dg = upload(g);
    auto du = upload(u);
    cu::launch_relu2_mul(dg.as<float>(), n, du.as<float>(), n, M, n, dg.as<float>(), n, nullptr);
    dg.download(h.mutable_data(), dg.size());
  }
  return h;
}

py::array_t<float> head_f16(const py::handle& x_obj, const py::handle& w_obj) {
  require_device();
  auto x = arr<float>(x_obj, "head_f16: x", 2);
  if (!py::isinstance<py::array>(w_obj) ||
      py::reinterpret_borrow<py::array>(w_obj).dtype().kind() != 'f' ||
      py::reinterpret_borrow<py::array>(w_obj).itemsize() != 2)
    throw py::type_error("head_f16: w must be a numpy float16 array");
  auto w = arr<uint16_t>(py::reinterpret_borrow<py::array>(w_obj).attr("view")("uint16"),
                         "head_f16: w", 2);
  const int64_t M = x.shape(0), cols = x.shape(1), rows = w.shape(0);
  if (w.shape(1) != cols)
    throw py::value_error("head_f16: w " + shape_str(w) + " does not match x " + shape_str(x));
  py::array_t<float> y({M, rows});
  {
    py::gil_scoped_release nogil;
    auto dx = upload(x);
    auto dw = upload(w);
    cu::DeviceBuffer dy(size_t(M * rows) * 4);
    cu::launch_head_f16(dw.as<uint16_t>(), rows, cols, dx.as<float>(), M, dy.as<float>(), rows,
                        nullptr);
    dy.download(y.mutable_data(), dy.size());
  }
  return y;
}

py::array_t<float> head_q8_0(const py::handle& x_obj, const py::handle& data_obj, int64_t rows,
                             int64_t cols) {
  require_device();
  auto x = arr<float>(x_obj, "head_q8_0: x", 2);
  if (x.shape(1) != cols)
    throw py::value_error("head_q8_0: x " + shape_str(x) + " does not have " +
                          std::to_string(cols) + " columns");
  py::tuple split = q8g_from_q8_0(data_obj, rows, cols);
  auto wq = split[0].cast<py::array_t<int8_t>>();
  auto wd = split[1].cast<py::array_t<float>>();
  const int64_t M = x.shape(0);
  py::array_t<float> y({M, rows});
  int32_t bad;
  {
    py::gil_scoped_release nogil;
    auto dx = upload(x);
    auto dwq = upload(wq);
    auto dwd = upload(wd);
    cu::DeviceBuffer dxq(size_t(M * cols)), dxd(size_t(M * (cols / 32)) * 4),
        dy(size_t(M * rows) * 4);
    auto flag = bad_flag();
    cu::launch_quantize_q8_0(dx.as<float>(), M, cols, dxq.as<int8_t>(), dxd.as<float>(),
                             flag.as<int32_t>(), nullptr);
    bad = read_flag(flag);
    if (bad == INT32_MAX) {
      cu::launch_head_q8_0(dwq.as<int8_t>(), dwd.as<float>(), rows, cols, dxq.as<int8_t>(),
                           dxd.as<float>(), M, dy.as<float>(), rows, nullptr);
      dy.download(y.mutable_data(), dy.size());
    }
  }
  if (bad != INT32_MAX)
    throw py::value_error("head_q8_0: row " + std::to_string(bad) +
                          " of x holds NaN or Inf (or a block too large for an fp16 scale)");
  return y;
}

void check_logits_status(const char* what, int32_t status) {
  if (status < 0)
    throw py::value_error(std::string(what) + ": logit " + std::to_string(-1 - int64_t(status)) +
                          " is NaN or +inf");
}

int32_t argmax(const py::handle& l_obj) {
  require_device();
  auto l = arr<float>(l_obj, "argmax: logits", 1);
  int32_t id;
  {
    py::gil_scoped_release nogil;
    auto dl = upload(l);
    cu::DeviceBuffer did(4);
    cu::launch_argmax(dl.as<float>(), l.shape(0), did.as<int32_t>(), nullptr);
    did.download(&id, 4);
  }
  check_logits_status("argmax", id);
  return id;
}

py::tuple topk(const py::handle& l_obj, int k) {
  require_device();
  auto l = arr<float>(l_obj, "topk: logits", 1);
  if (k < 1 || k > cu::kMaxTopK)
    throw py::value_error("topk: k = " + std::to_string(k) + " not in [1, " +
                          std::to_string(cu::kMaxTopK) + "]");
  std::vector<float> vals(static_cast<size_t>(k));
  std::vector<int32_t> ids(static_cast<size_t>(k));
  int32_t count;
  {
    py::gil_scoped_release nogil;
    auto dl = upload(l);
    cu::DeviceBuffer dv(size_t(k) * 4), di(size_t(k) * 4), dc(4);
    cu::launch_topk(dl.as<float>(), l.shape(0), k, dv.as<float>(), di.as<int32_t>(),
                    dc.as<int32_t>(), nullptr);
    dc.download(&count, 4);
    if (count > 0) {
      dv.download(vals.data(), size_t(count) * 4);
      di.download(ids.data(), size_t(count) * 4);
    }
  }
  check_logits_status("topk", count);
  py::array_t<float> v(count);
  py::array_t<int32_t> i(count);
  std::memcpy(v.mutable_data(), vals.data(), size_t(count) * 4);
  std::memcpy(i.mutable_data(), ids.data(), size_t(count) * 4);
  return py::make_tuple(v, i);
}

py::tuple sample_topk(const py::handle& l_obj, int k, double temperature, double u) {
  require_device();
  auto l = arr<float>(l_obj, "sample_topk: logits", 1);
  if (k < 1 || k > cu::kMaxTopK)
    throw py::value_error("sample_topk: k = " + std::to_string(k) + " not in [1, " +
                          std::to_string(cu::kMaxTopK) + "]");
  if (!(temperature > 0.0) || !(u >= 0.0 && u < 1.0))
    throw py::value_error("sample_topk: need temperature > 0 and u in [0, 1)");
  int32_t count, id;
  double prob;
  {
    py::gil_scoped_release nogil;
    auto dl = upload(l);
    cu::DeviceBuffer dv(size_t(k) * 4), di(size_t(k) * 4), dc(4), dout(4), dp(8);
    cu::launch_topk(dl.as<float>(), l.shape(0), k, dv.as<float>(), di.as<int32_t>(),
                    dc.as<int32_t>(), nullptr);
    dc.download(&count, 4);
    if (count > 0) {
      cu::launch_sample_topk(dv.as<float>(), di.as<int32_t>(), dc.as<int32_t>(), temperature, u,
                             dout.as<int32_t>(), dp.as<double>(), nullptr);
      dout.download(&id, 4);
      dp.download(&prob, 8);
    }
  }
  check_logits_status("sample_topk", count);
  if (count == 0) throw py::value_error("sample_topk: every logit is -inf");
  return py::make_tuple(id, prob);
}

void register_entry_points(py::module_& m) {
  m.def("built_with_cuda", [] { return true; });
  m.def(
      "available", [] { return cu::available(); },
      "True when a CUDA driver and device are usable.");
  m.def("reason", &reason, "Why available() is False ('' when it is True).");
  m.def("device_name", [] {
    require_device();
    return cu::device_info(0).name;
  });
  m.def("device_info", [] {
    require_device();
    const cu::DeviceInfo d = cu::device_info(0);
    py::dict r;
    r["name"] = d.name;
    r["compute_capability"] = py::make_tuple(d.cc_major, d.cc_minor);
    r["sm_count"] = d.sm_count;
    r["total_memory"] = d.total_memory;
    r["shared_memory_optin"] = d.shared_memory_optin;
    return r;
  });
  m.def("synchronize", [] {
    require_device();
    cu::synchronize();
  });
  m.def(
      "time_w2a8",
      [](int64_t M, int64_t N, int64_t K, bool gemm, int iters) {
        require_device();
        py::gil_scoped_release nogil;
        return cu::time_w2a8(M, N, K, gemm, iters);
      },
      py::arg("M"), py::arg("N"), py::arg("K"), py::arg("gemm") = false, py::arg("iters") = 50,
      "Per-launch microseconds (CUDA events) of the W2A8 GEMV (or GEMM) on random data.");
  m.def(
      "device_copy_bandwidth",
      [](int64_t bytes, int iters) {
        require_device();
        py::gil_scoped_release nogil;
        return cu::device_copy_bandwidth(bytes, iters);
      },
      py::arg("bytes") = int64_t(1) << 28, py::arg("iters") = 20,
      "Median device-to-device copy bandwidth in GB/s (read + write bytes).");
  m.def("w2g_from_ternary", &w2g_from_ternary, py::arg("t"),
        "t [N, K] int8 ternary -> W2G words [N, ceil(K/64)*4] uint32 (host; no GPU needed).");
  m.def("w2g_from_k256", &w2g_from_k256, py::arg("data"), py::arg("N"), py::arg("K"),
        "K256 bytes (PackedWeights 'native') -> W2G words (host; no GPU needed).");
  m.def("q8g_from_q8_0", &q8g_from_q8_0, py::arg("data"), py::arg("rows"), py::arg("cols"),
        "ggml Q8_0 bytes -> (qs int8 [rows, cols], d float32 [rows, cols/32]) (host).");
  m.def("act_quant", &act_quant, py::arg("x"), py::arg("k_pad") = py::none(),
        "x [M, K] float32 -> (q int8 [M, k_pad], s_x float32 [M], q_sum int32 [M]) on the GPU.");
  m.def(
      "gemv_w2a8",
      [](const py::handle& x, const py::handle& w, double s) { return w2a8(x, w, s, false); },
      py::arg("x"), py::arg("w"), py::arg("scale"),
      "act_quant + dp4a GEMV: y [M, N] = bitlinear of x [M, K] with W2G weights w and scale.");
  m.def(
      "gemm_w2a8",
      [](const py::handle& x, const py::handle& w, double s) { return w2a8(x, w, s, true); },
      py::arg("x"), py::arg("w"), py::arg("scale"),
      "act_quant + mma.sync int8 GEMM: same result as gemv_w2a8.");
  m.def("rmsnorm", &rmsnorm, py::arg("x"), py::arg("w"), py::arg("eps"));
  m.def("rope_neox", &rope_neox, py::arg("x"), py::arg("pos"), py::arg("theta"));
  m.def("attention", &attention, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("n_past") = 0);
  m.def("relu2_mul", &relu2_mul, py::arg("g"), py::arg("u"));
  m.def("head_f16", &head_f16, py::arg("x"), py::arg("w"));
  m.def("head_q8_0", &head_q8_0, py::arg("x"), py::arg("data"), py::arg("rows"), py::arg("cols"));
  m.def("argmax", &argmax, py::arg("logits"));
  m.def("topk", &topk, py::arg("logits"), py::arg("k"));
  m.def("sample_topk", &sample_topk, py::arg("logits"), py::arg("k"), py::arg("temperature"),
        py::arg("u"));
}

#else  // built without CUDA

constexpr const char* kNoCuda =
    "built without CUDA (rebuild with nvcc available and BITNET_CUDA=AUTO or ON)";

void register_entry_points(py::module_& m) {
  m.def("built_with_cuda", [] { return false; });
  m.def(
      "available", [] { return false; }, "True when a CUDA driver and device are usable.");
  m.def(
      "reason", [] { return std::string(kNoCuda); }, "Why available() is False.");
  for (const char* name :
       {"device_name", "device_info", "synchronize", "time_w2a8", "device_copy_bandwidth"})
    m.def(name, [](py::args, py::kwargs) -> py::object {
      throw std::runtime_error(std::string("bitnet CUDA backend: ") + kNoCuda);
    });
  for (const char* name : kEntryPoints)
    m.def(name, [](py::args, py::kwargs) -> py::object {
      throw std::runtime_error(std::string("bitnet CUDA backend: ") + kNoCuda);
    });
}

#endif

}  // namespace

void bind_cuda(py::module_& m) {
  py::module_ c = m.def_submodule("cuda", "CUDA backend: status and per-kernel test entry points");
  register_entry_points(c);
  py::tuple names(std::size(kEntryPoints));
  for (size_t i = 0; i < std::size(kEntryPoints); ++i) names[i] = kEntryPoints[i];
  c.attr("ENTRY_POINTS") = names;
}
