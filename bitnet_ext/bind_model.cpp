// Bindings of the model (cpp/include/bitnet/model.h) as bitnet._ext.Model:
//   Model(path, n_ctx=0, n_seq=1)          loads a GGUF file (GIL released)
//   .config -> dict                        hyperparameters, storage types, cache size
//   .eval(tokens, seq=0, all_logits=False) -> float32 [T, V] or [1, V]
//   .eval_batch(tokens, seqs) -> float32 [B, V]   one token for each of B distinct sequences
//   .seq_len(seq), .reset(seq=-1), .truncate(seq, n)
// and, for the tests of the building blocks (cpp/include/bitnet/nn.h), bitnet._ext.nn:
//   rmsnorm(x [M, n], w [n], eps) -> y;  rope_neox(x [M, H, d], pos [M], theta) -> rotated copy;
//   attention(q [M, H, d], k [L, Hkv, d], v [L, Hkv, d], n_past) -> [M, H, d] (query m sits at
//   position n_past + m and sees keys 0 .. n_past + m);  gated_activation(g, u, act) -> h.
// Token arrays may be any integer numpy array (or sequence of ints), 1-D and non-empty; ids are
// range-checked here against the vocabulary (the error names the index) before they are narrowed
// to int32. Compute runs with the GIL released; the model serialises concurrent calls itself.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "bitnet/common.h"
#include "bitnet/model.h"
#include "bitnet/nn.h"

namespace py = pybind11;
using bitnet::Model;
using bitnet::str_cat;

namespace {

// A 1-D non-empty integer array from `obj`, as int32, every value in [0, limit).
std::vector<int32_t> int_vector(const py::handle& obj, const char* what, int64_t limit,
                                const char* limit_name) {
  py::array a = py::array::ensure(obj);
  if (!a) throw py::type_error(str_cat(what, ": expected a 1-D integer array"));
  if (a.ndim() != 1)
    throw py::value_error(str_cat(what, ": expected a 1-D array, got shape ",
                                  py::str(a.attr("shape")).cast<std::string>()));
  if (a.size() == 0) throw py::value_error(str_cat(what, " is empty"));
  const char kind = a.dtype().kind();
  if (kind != 'i' && kind != 'u')
    throw py::type_error(str_cat(what, ": expected an integer array, got dtype ",
                                 py::str(a.dtype()).cast<std::string>()));
  if (kind == 'u' && a.itemsize() == 8) {  // uint64 does not fit int64: compare unsigned
    auto u = py::array_t<uint64_t, py::array::c_style | py::array::forcecast>::ensure(a);
    for (py::ssize_t i = 0; i < u.size(); ++i)
      if (u.data()[i] >= uint64_t(limit))
        throw py::value_error(str_cat(what, "[", i, "] = ", u.data()[i], " is out of range [0, ",
                                      limit, ") (", limit_name, ")"));
  }
  auto v = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(a);
  std::vector<int32_t> out(static_cast<size_t>(v.size()));
  for (py::ssize_t i = 0; i < v.size(); ++i) {
    const int64_t x = v.data()[i];
    if (x < 0 || x >= limit)
      throw py::value_error(
          str_cat(what, "[", i, "] = ", x, " is out of range [0, ", limit, ") (", limit_name, ")"));
    out[size_t(i)] = int32_t(x);
  }
  return out;
}

// A C-contiguous float32 array of rank `ndim` (converted from other float dtypes is refused so a
// test cannot silently compare float64 inputs).
py::array_t<float> f32_array(const py::handle& obj, const char* what, int ndim) {
  py::array a = py::array::ensure(obj);
  if (!a || a.dtype().kind() != 'f' || a.itemsize() != 4)
    throw py::type_error(str_cat(what, ": expected a float32 numpy array"));
  if (a.ndim() != ndim)
    throw py::value_error(str_cat(what, ": expected ", ndim, " dimensions, got ", a.ndim()));
  return py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(a);
}

py::array_t<float> nn_rmsnorm(const py::handle& x_obj, const py::handle& w_obj, float eps) {
  auto x = f32_array(x_obj, "rmsnorm: x", 2);
  auto w = f32_array(w_obj, "rmsnorm: w", 1);
  const int64_t M = x.shape(0), n = x.shape(1);
  if (w.shape(0) != n || n == 0)
    throw py::value_error(str_cat("rmsnorm: w has ", w.shape(0), " values, x rows ", n));
  py::array_t<float> y({M, n});
  float* yp = y.mutable_data();
  {
    py::gil_scoped_release nogil;
    bitnet::nn::rmsnorm(x.data(), n, M, n, w.data(), eps, yp, n);
  }
  return y;
}

py::array_t<float> nn_rope(const py::handle& x_obj, const py::handle& pos_obj, float theta) {
  auto x = f32_array(x_obj, "rope_neox: x", 3);
  const int64_t M = x.shape(0), H = x.shape(1), d = x.shape(2);
  auto pos = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(pos_obj);
  if (!pos || pos.ndim() != 1 || pos.shape(0) != M)
    throw py::value_error(str_cat("rope_neox: pos must be 1-D with ", M, " entries"));
  py::array_t<float> y({M, H, d});
  float* yp = y.mutable_data();
  std::copy(x.data(), x.data() + M * H * d, yp);
  {
    py::gil_scoped_release nogil;
    std::vector<float> inv(static_cast<size_t>(d / 2 + 1));
    std::vector<float> c(static_cast<size_t>(M * d / 2)), s(static_cast<size_t>(M * d / 2));
    bitnet::nn::rope_inv_freq(d, theta, inv.data());
    bitnet::nn::rope_tables(pos.data(), M, d, inv.data(), c.data(), s.data());
    bitnet::nn::rope_neox(yp, H * d, M, H, d, c.data(), s.data());
  }
  return y;
}

py::array_t<float> nn_attention(const py::handle& q_obj, const py::handle& k_obj,
                                const py::handle& v_obj, int64_t n_past) {
  auto q = f32_array(q_obj, "attention: q", 3);
  auto k = f32_array(k_obj, "attention: k", 3);
  auto v = f32_array(v_obj, "attention: v", 3);
  const int64_t M = q.shape(0), H = q.shape(1), d = q.shape(2), L = k.shape(0), Hkv = k.shape(1);
  if (k.shape(2) != d || v.shape(0) != L || v.shape(1) != Hkv || v.shape(2) != d)
    throw py::value_error("attention: k and v must both be [L, n_head_kv, head_dim]");
  if (n_past < 0 || n_past + M > L)
    throw py::value_error(
        str_cat("attention: n_past ", n_past, " + ", M, " queries > ", L, " keys"));
  py::array_t<float> out({M, H, d});
  float* op = out.mutable_data();
  std::vector<bitnet::nn::AttentionQuery> qs(static_cast<size_t>(M));
  for (int64_t m = 0; m < M; ++m)
    qs[size_t(m)] = {q.data() + m * H * d, k.data(), v.data(), n_past + m + 1, op + m * H * d};
  const bitnet::nn::AttentionShape shape{H, Hkv, d, 1.0f / std::sqrt(float(d))};
  {
    py::gil_scoped_release nogil;
    bitnet::nn::attention(qs.data(), M, shape, L);
  }
  return out;
}

py::array_t<float> nn_gated(const py::handle& g_obj, const py::handle& u_obj,
                            const std::string& act) {
  auto g = f32_array(g_obj, "gated_activation: g", 2);
  auto u = f32_array(u_obj, "gated_activation: u", 2);
  const int64_t M = g.shape(0), n = g.shape(1);
  if (u.shape(0) != M || u.shape(1) != n || n == 0)
    throw py::value_error("gated_activation: g and u must have the same non-empty shape");
  const bitnet::nn::Activation a = bitnet::nn::parse_activation(act);
  py::array_t<float> h({M, n});
  float* hp = h.mutable_data();
  {
    py::gil_scoped_release nogil;
    bitnet::nn::gated_activation(a, g.data(), n, u.data(), n, M, n, hp, n);
  }
  return h;
}

py::dict config_dict(const Model& m) {
  const bitnet::ModelConfig& c = m.config();
  py::dict d;
  d["architecture"] = c.architecture;
  d["vocab_size"] = c.vocab_size;
  d["n_embd"] = c.n_embd;
  d["n_layer"] = c.n_layer;
  d["n_head"] = c.n_head;
  d["n_head_kv"] = c.n_head_kv;
  d["head_dim"] = c.head_dim;
  d["n_ff"] = c.n_ff;
  d["n_ctx_train"] = c.n_ctx_train;
  d["rope_theta"] = double(c.rope_theta);
  d["rms_eps"] = double(c.rms_eps);
  d["hidden_act"] = std::string(bitnet::nn::activation_name(c.hidden_act));
  d["weight_type"] = c.weight_type;
  d["head_type"] = c.head_type;
  d["tied"] = c.tied;
  d["file_size"] = c.file_size;
  d["n_ctx"] = m.n_ctx();
  d["n_seq"] = m.n_seq();
  return d;
}

py::array_t<float> eval(Model& m, const py::handle& tokens_obj, int64_t seq, bool all_logits) {
  const int64_t V = m.config().vocab_size;
  const std::vector<int32_t> tokens = int_vector(tokens_obj, "eval: tokens", V, "vocab_size");
  const int64_t T = int64_t(tokens.size());
  py::array_t<float> out({all_logits ? T : int64_t(1), V});
  float* y = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    m.eval(tokens.data(), T, seq, all_logits, y);
  }
  return out;
}

py::array_t<float> eval_batch(Model& m, const py::handle& tokens_obj, const py::handle& seqs_obj) {
  const int64_t V = m.config().vocab_size;
  const std::vector<int32_t> tokens = int_vector(tokens_obj, "eval_batch: tokens", V, "vocab_size");
  const std::vector<int32_t> seqs = int_vector(seqs_obj, "eval_batch: seqs", m.n_seq(), "n_seq");
  if (seqs.size() != tokens.size())
    throw py::value_error(str_cat("eval_batch: ", tokens.size(), " tokens but ", seqs.size(),
                                  " sequence ids; pass one token per sequence"));
  const int64_t B = int64_t(tokens.size());
  py::array_t<float> out({B, V});
  float* y = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    m.eval_batch(tokens.data(), seqs.data(), B, y);
  }
  return out;
}

}  // namespace

void bind_model(py::module_& m) {
  py::module_ nn = m.def_submodule("nn", "fp32 building blocks of the forward pass (tests)");
  nn.def("rmsnorm", &nn_rmsnorm, py::arg("x"), py::arg("w"), py::arg("eps"));
  nn.def("rope_neox", &nn_rope, py::arg("x"), py::arg("pos"), py::arg("theta"));
  nn.def("attention", &nn_attention, py::arg("q"), py::arg("k"), py::arg("v"),
         py::arg("n_past") = 0);
  nn.def("gated_activation", &nn_gated, py::arg("g"), py::arg("u"), py::arg("act"));

  py::class_<Model>(m, "Model", "A BitNet b1.58 GGUF model with a KV cache (bitnet/model.h).")
      .def(py::init([](const py::object& path, int64_t n_ctx, int64_t n_seq) {
             const std::string p = py::str(py::module_::import("os").attr("fspath")(path));
             py::gil_scoped_release nogil;
             return Model::load(p, n_ctx, n_seq);
           }),
           py::arg("path"), py::arg("n_ctx") = 0, py::arg("n_seq") = 1,
           "Loads a GGUF file; n_ctx 0 takes the file's context_length.")
      .def_property_readonly("config", &config_dict)
      .def("eval", &eval, py::arg("tokens"), py::arg("seq") = 0, py::arg("all_logits") = false,
           "Appends tokens to sequence `seq`; logits [T, V] (all_logits) or [1, V] (last token).")
      .def("eval_batch", &eval_batch, py::arg("tokens"), py::arg("seqs"),
           "One new token for each of several distinct sequences; logits [B, V].")
      .def("seq_len", &Model::seq_len, py::arg("seq") = 0)
      .def("reset", &Model::reset, py::arg("seq") = -1,
           "Forgets sequence `seq` (-1: every sequence).")
      .def("truncate", &Model::truncate, py::arg("seq"), py::arg("n"),
           "Keeps the first n tokens of sequence `seq`.")
      .def("__repr__", [](const Model& model) {
        const bitnet::ModelConfig& c = model.config();
        return str_cat("<bitnet._ext.Model ", c.architecture, " ", c.n_layer, " layers, n_embd ",
                       c.n_embd, ", vocab ", c.vocab_size, ", weights ", c.weight_type, ", head ",
                       c.head_type, ", n_ctx ", model.n_ctx(), ", n_seq ", model.n_seq(), ">");
      });
}
