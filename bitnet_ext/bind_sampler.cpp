// Bindings of the token sampler (bitnet/sampler.h): SamplerParams, Sampler and its RNG. Arrays are
// validated here (dtype, rank, length, contiguity) so the core only sees well-formed buffers; the
// sampling runs with the GIL released. python/bitnet/sampling.py is the public wrapper.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <mutex>
#include <string>

#include "bitnet/sampler.h"

namespace py = pybind11;
using bitnet::Sampler;
using bitnet::SamplerParams;

namespace {

std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }
std::string shape_str(const py::array& a) { return py::str(a.attr("shape")).cast<std::string>(); }

// A Sampler is not thread-safe and its calls run without the GIL, so each Python object carries
// a mutex that serialises calls from several Python threads.
struct PySampler {
  PySampler(const SamplerParams& p, int64_t vocab_size) : sampler(p, vocab_size) {}
  Sampler sampler;
  std::mutex mu;
};

const float* check_logits(const py::array& logits, int64_t vocab) {
  if (logits.dtype().kind() != 'f' || logits.itemsize() != 4)
    throw py::value_error("sampler: logits must be float32, got " + dtype_str(logits));
  if (logits.ndim() != 1 || logits.shape(0) != vocab)
    throw py::value_error("sampler: logits must have shape (" + std::to_string(vocab) +
                          ",) (the vocabulary size), got " + shape_str(logits));
  if (!(logits.flags() & py::array::c_style))
    throw py::value_error("sampler: logits must be C-contiguous");
  return static_cast<const float*>(logits.data());
}

const int32_t* check_history(const py::array& history) {
  if (history.dtype().kind() != 'i' || history.itemsize() != 4)
    throw py::value_error("sampler: history must be int32, got " + dtype_str(history));
  if (history.ndim() != 1)
    throw py::value_error("sampler: history must be 1-D, got shape " + shape_str(history));
  if (!(history.flags() & py::array::c_style))
    throw py::value_error("sampler: history must be C-contiguous");
  return static_cast<const int32_t*>(history.data());
}

int32_t sample(PySampler& s, const py::array& logits, const py::array& history) {
  const float* l = check_logits(logits, s.sampler.vocab_size());
  const int32_t* h = check_history(history);
  const int64_t n = history.shape(0);
  py::gil_scoped_release nogil;
  std::lock_guard<std::mutex> lock(s.mu);
  return s.sampler.sample(l, h, n);
}

int32_t sample_at(PySampler& s, const py::array& logits, const py::array& history, double u) {
  const float* l = check_logits(logits, s.sampler.vocab_size());
  const int32_t* h = check_history(history);
  const int64_t n = history.shape(0);
  py::gil_scoped_release nogil;
  std::lock_guard<std::mutex> lock(s.mu);
  return s.sampler.sample_at(l, h, n, u);
}

py::array_t<float> distribution(PySampler& s, const py::array& logits, const py::array& history) {
  const float* l = check_logits(logits, s.sampler.vocab_size());
  const int32_t* h = check_history(history);
  const int64_t n = history.shape(0);
  py::array_t<float> probs(s.sampler.vocab_size());
  float* out = probs.mutable_data();
  {
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(s.mu);
    s.sampler.distribution(l, h, n, out);
  }
  return probs;
}

}  // namespace

void bind_sampler(py::module_& m) {
  py::class_<SamplerParams>(m, "SamplerParams",
                            "Sampler settings (C++ bitnet::SamplerParams; floats are float32).")
      .def(py::init<>())
      .def_readwrite("temperature", &SamplerParams::temperature)
      .def_readwrite("top_k", &SamplerParams::top_k)
      .def_readwrite("top_p", &SamplerParams::top_p)
      .def_readwrite("min_p", &SamplerParams::min_p)
      .def_readwrite("repetition_penalty", &SamplerParams::repetition_penalty)
      .def_readwrite("frequency_penalty", &SamplerParams::frequency_penalty)
      .def_readwrite("presence_penalty", &SamplerParams::presence_penalty)
      .def_readwrite("penalty_last_n", &SamplerParams::penalty_last_n)
      .def_readwrite("seed", &SamplerParams::seed);

  m.def("validate_sampler_params", &bitnet::validate_sampler_params, py::arg("params"),
        "Raises ValueError naming the first invalid field of params.");

  m.def(
      "sampler_exp",
      [](const py::array_t<double, py::array::c_style | py::array::forcecast>& d) {
        py::array_t<double> out(d.size());
        const double* in = d.data();
        double* o = out.mutable_data();
        const py::ssize_t n = d.size();
        for (py::ssize_t i = 0; i < n; ++i) o[i] = bitnet::exp_nonpositive(in[i]);
        return out;
      },
      py::arg("d"),
      "exp_nonpositive (the sampler's portable exp, d <= 0) of every element of d, flattened.");

  py::class_<bitnet::Xoshiro256ss>(
      m, "SamplerRng", "The sampler's RNG: xoshiro256** seeded by SplitMix64 (for tests).")
      .def(py::init<uint64_t>(), py::arg("seed") = 0)
      .def("reseed", &bitnet::Xoshiro256ss::reseed, py::arg("seed"))
      .def("next_u64", &bitnet::Xoshiro256ss::next)
      .def("next_double", &bitnet::Xoshiro256ss::next_double);

  py::class_<PySampler>(m, "Sampler", "Token sampler of one sequence (bitnet::Sampler).")
      .def(py::init<const SamplerParams&, int64_t>(), py::arg("params"), py::arg("vocab_size"))
      .def(
          "reseed",
          [](PySampler& s, uint64_t seed) {
            std::lock_guard<std::mutex> lock(s.mu);
            s.sampler.reseed(seed);
          },
          py::arg("seed"), "Restarts the RNG stream as if constructed with this seed.")
      .def("sample", &sample, py::arg("logits"), py::arg("history"),
           "Samples a token id from float32 logits [V] given int32 history ids.")
      .def("sample_at", &sample_at, py::arg("logits"), py::arg("history"), py::arg("u"),
           "The token sample() returns when its uniform draw is u in [0, 1) (no RNG).")
      .def("distribution", &distribution, py::arg("logits"), py::arg("history"),
           "The float32 [V] distribution sample() draws from.")
      .def_property_readonly("vocab_size",
                             [](const PySampler& s) { return s.sampler.vocab_size(); })
      .def_property_readonly("params", [](const PySampler& s) { return s.sampler.params(); });
}
