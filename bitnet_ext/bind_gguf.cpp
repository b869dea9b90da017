// Bindings of the GGUF reader and writer (cpp/include/bitnet/gguf.h). python/bitnet/gguf.py
// builds the public API on these:
//   GGUFError                 gguf::FormatError (a ValueError); gguf::IoError -> OSError(errno)
//   gguf_types()              [(id, name, block_size, type_size)] of every known ggml type
//   gguf_tensor_nbytes(type, shape, what)
//   GGUFHandle.open(path) / .parse(buffer, name): a parsed file; metadata() converts values to
//     Python objects in C++ (fast for 100k-entry vocabularies); tensor_data(i) is a read-only
//     uint8 view whose base keeps the mapping alive.
//   GGUFStreamWriter: the streaming writer; metadata values arrive with an explicit type string
//     ("u32", "array[string]", "array[array[i32]]") chosen by the Python layer.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bitnet/common.h"
#include "bitnet/gguf.h"
#include "bitnet/packed_weights.h"

namespace py = pybind11;
namespace gg = bitnet::gguf;
using bitnet::str_cat;

namespace {

using FilePtr = std::shared_ptr<const gg::File>;

// The Python object of a parsed file (pybind11 holders cannot point to const).
struct Handle {
  FilePtr f;
};

// ------------------------------------------------------------------ Value -> Python
py::object to_py(const gg::Value& v);

py::object scalar_to_py(const gg::Value& v) {
  switch (v.type) {
    case gg::ValueType::boolean:
      return py::bool_(v.u != 0);
    case gg::ValueType::u8:
    case gg::ValueType::u16:
    case gg::ValueType::u32:
    case gg::ValueType::u64:
      return py::reinterpret_steal<py::object>(PyLong_FromUnsignedLongLong(v.u));
    case gg::ValueType::i8:
    case gg::ValueType::i16:
    case gg::ValueType::i32:
    case gg::ValueType::i64:
      return py::reinterpret_steal<py::object>(PyLong_FromLongLong(v.i));
    case gg::ValueType::f32:
    case gg::ValueType::f64:
      return py::float_(v.f);
    default:
      return to_py(v);
  }
}

// Strings that are valid UTF-8 become str, others bytes (GGUF does not promise UTF-8 values).
py::object string_to_py(std::string_view s) {
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), Py_ssize_t(s.size()), "strict");
  if (o) return py::reinterpret_steal<py::object>(o);
  PyErr_Clear();
  return py::bytes(s.data(), s.size());
}

py::object to_py(const gg::Value& v) {
  if (v.type == gg::ValueType::string) return string_to_py(v.s);
  if (v.type != gg::ValueType::array) return scalar_to_py(v);
  const size_t n = v.size();
  py::list out(n);
  if (v.elem_type == gg::ValueType::string) {
    for (size_t k = 0; k < n; ++k) {
      py::object o = string_to_py(v.string_at(k));
      PyList_SET_ITEM(out.ptr(), Py_ssize_t(k), o.release().ptr());
    }
  } else if (v.elem_type == gg::ValueType::array) {
    for (size_t k = 0; k < n; ++k) {
      py::object o = to_py(v.items[k]);
      PyList_SET_ITEM(out.ptr(), Py_ssize_t(k), o.release().ptr());
    }
  } else {
    for (size_t k = 0; k < n; ++k) {
      py::object o = scalar_to_py(v.element(k));
      PyList_SET_ITEM(out.ptr(), Py_ssize_t(k), o.release().ptr());
    }
  }
  return std::move(out);
}

// ------------------------------------------------------------------ Python -> Value
// A type string "array[array[u8]]" as the chain [array, array, u8].
std::vector<gg::ValueType> parse_type_string(const std::string& key, const std::string& type) {
  std::vector<gg::ValueType> chain;
  std::string s = type;
  while (s.size() > 7 && s.compare(0, 6, "array[") == 0 && s.back() == ']') {
    chain.push_back(gg::ValueType::array);
    s = s.substr(6, s.size() - 7);
  }
  gg::ValueType t;
  if (!gg::parse_value_type(s, &t) || t == gg::ValueType::array)
    throw py::value_error(str_cat("key '", key, "': unknown metadata type '", type,
                                  "'; expected u8, i8, u16, i16, u32, i32, u64, i64, f32, f64, "
                                  "bool, string or array[<type>]"));
  chain.push_back(t);
  return chain;
}

std::string type_of(const py::handle& o) { return py::str(py::type::of(o).attr("__name__")); }

// Where a value sits, for messages: "key 'k'" then "[i]" per array level. Built on the stack and
// formatted only on an error, so converting a 280k-entry list costs no string formatting.
struct Where {
  const Where* parent;
  const std::string* key;  // set at the root only
  Py_ssize_t index;
  std::string str() const {
    return parent ? str_cat(parent->str(), "[", index, "]") : str_cat("key '", *key, "'");
  }
};

[[noreturn]] void bad_value(const Where& where, const py::handle& o, gg::ValueType t) {
  std::string repr = py::repr(o);
  if (repr.size() > 60) repr = repr.substr(0, 57) + "...";
  throw py::type_error(str_cat(where.str(), ": expected a value for ", gg::value_type_name(t),
                               ", got ", type_of(o), " ", repr));
}

gg::Value from_py(const py::handle& o, const gg::ValueType* chain, size_t depth,
                  const Where& where);

gg::Value scalar_from_py(const py::handle& o, gg::ValueType t, const Where& where) {
  try {
    switch (t) {
      case gg::ValueType::boolean: {
        if (PyBool_Check(o.ptr()) || type_of(o) == "bool_" || type_of(o) == "bool")
          return gg::Value::unsigned_(t, py::cast<bool>(o) ? 1 : 0);
        bad_value(where, o, t);
      }
      case gg::ValueType::f32:
      case gg::ValueType::f64: {
        if (!PyFloat_CheckExact(o.ptr()) &&
            (PyBool_Check(o.ptr()) || PyUnicode_Check(o.ptr()) || PyBytes_Check(o.ptr()) ||
             !PyNumber_Check(o.ptr()) || type_of(o) == "bool_" || type_of(o) == "bool"))
          bad_value(where, o, t);
        const double d = PyFloat_AsDouble(o.ptr());
        if (d == -1.0 && PyErr_Occurred()) {
          PyErr_Clear();  // e.g. an int beyond the double range
          throw std::invalid_argument(str_cat("value ", std::string(py::str(o)),
                                              " is out of range for ", gg::value_type_name(t)));
        }
        return gg::Value::float_(t, d);
      }
      case gg::ValueType::string: {
        if (PyBytes_Check(o.ptr())) return gg::Value::string(std::string(py::cast<py::bytes>(o)));
        if (!PyUnicode_Check(o.ptr())) bad_value(where, o, t);
        Py_ssize_t n = 0;
        const char* p = PyUnicode_AsUTF8AndSize(o.ptr(), &n);
        if (!p) {
          PyErr_Clear();
          throw py::value_error(
              str_cat(where.str(), ": the string is not valid Unicode (a lone surrogate?)"));
        }
        return gg::Value::string(std::string(p, size_t(n)));
      }
      default:
        break;
    }
    // Integers: Python int or anything with __index__ (numpy integers), but not bool.
    if (!PyLong_CheckExact(o.ptr()) && (PyBool_Check(o.ptr()) || PyFloat_Check(o.ptr()) ||
                                        type_of(o) == "bool_" || type_of(o) == "bool"))
      bad_value(where, o, t);
    PyObject* idx = PyNumber_Index(o.ptr());
    if (!idx) {
      PyErr_Clear();
      bad_value(where, o, t);
    }
    py::object num = py::reinterpret_steal<py::object>(idx);
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(num.ptr(), &overflow);
    if (overflow == 0) {
      if (t == gg::ValueType::u8 || t == gg::ValueType::u16 || t == gg::ValueType::u32 ||
          t == gg::ValueType::u64) {
        if (v < 0)
          throw std::invalid_argument(
              str_cat("value ", v, " is out of range for ", gg::value_type_name(t)));
        return gg::Value::unsigned_(t, uint64_t(v));
      }
      return gg::Value::signed_(t, v);
    }
    if (overflow > 0 && t == gg::ValueType::u64) {
      const unsigned long long u = PyLong_AsUnsignedLongLong(num.ptr());
      if (!PyErr_Occurred()) return gg::Value::unsigned_(t, u);
      PyErr_Clear();
    }
    throw std::invalid_argument(str_cat("value ", std::string(py::str(num)),
                                        " is out of range for ", gg::value_type_name(t)));
  } catch (const std::invalid_argument& e) {
    std::string msg = e.what();
    if (msg.rfind("gguf: ", 0) == 0) msg = msg.substr(6);
    throw py::value_error(str_cat(where.str(), ": ", msg));
  }
}

// The numpy dtype (kind, itemsize) that stores elements of `t` exactly.
bool dtype_matches(const py::array& a, gg::ValueType t) {
  const char kind = a.dtype().kind();
  const auto size = a.itemsize();
  switch (t) {
    case gg::ValueType::u8:
    case gg::ValueType::u16:
    case gg::ValueType::u32:
    case gg::ValueType::u64:
      return kind == 'u' && size == gg::value_type_size(t);
    case gg::ValueType::i8:
    case gg::ValueType::i16:
    case gg::ValueType::i32:
    case gg::ValueType::i64:
      return kind == 'i' && size == gg::value_type_size(t);
    case gg::ValueType::f32:
    case gg::ValueType::f64:
      return kind == 'f' && size == gg::value_type_size(t);
    case gg::ValueType::boolean:
      return kind == 'b' && size == 1;
    default:
      return false;
  }
}

gg::Value from_py(const py::handle& o, const gg::ValueType* chain, size_t depth,
                  const Where& where) {
  const gg::ValueType t = chain[0];
  if (t != gg::ValueType::array) return scalar_from_py(o, t, where);
  const gg::ValueType elem = chain[1];
  if (PyUnicode_Check(o.ptr()) || PyBytes_Check(o.ptr()) || PyDict_Check(o.ptr()) ||
      !PySequence_Check(o.ptr()))
    bad_value(where, o, t);
  // Fast path: a contiguous 1-D numpy array whose dtype stores the element type exactly.
  if (py::isinstance<py::array>(o) && elem != gg::ValueType::array &&
      elem != gg::ValueType::string) {
    py::array a = py::reinterpret_borrow<py::array>(o);
    if (a.ndim() == 1 && dtype_matches(a, elem) && (a.flags() & py::array::c_style)) {
      const auto* p = static_cast<const uint8_t*>(a.data());
      return gg::Value::packed_array(elem, std::vector<uint8_t>(p, p + a.nbytes()));
    }
  }
  py::object seq = py::reinterpret_steal<py::object>(
      PySequence_Fast(o.ptr(), "a GGUF array value must be a sequence"));
  if (!seq) throw py::error_already_set();
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq.ptr());
  PyObject** items = PySequence_Fast_ITEMS(seq.ptr());
  if (elem == gg::ValueType::string) {  // straight into the packed form (a vocabulary)
    gg::Value out = gg::Value::array(elem, {});
    out.str_ends.reserve(size_t(n));
    for (Py_ssize_t k = 0; k < n; ++k) {
      const gg::Value v = scalar_from_py(items[k], elem, Where{&where, nullptr, k});
      out.push_string(v.s.data(), v.s.size());
    }
    return out;
  }
  std::vector<gg::Value> values;
  values.reserve(size_t(n));
  for (Py_ssize_t k = 0; k < n; ++k)
    values.push_back(from_py(items[k], chain + 1, depth + 1, Where{&where, nullptr, k}));
  return gg::Value::array(elem, std::move(values));
}

gg::Value value_from_py(const std::string& key, const py::handle& o, const std::string& type) {
  const std::vector<gg::ValueType> chain = parse_type_string(key, type);
  if (chain.size() > 17)
    throw py::value_error(str_cat("key '", key, "': arrays nested deeper than 16 levels"));
  return from_py(o, chain.data(), 0, Where{nullptr, &key, 0});
}

// ------------------------------------------------------------------ tensor views
// A capsule owning a copy of the mapping's shared_ptr: the base object of every view.
py::capsule owner_capsule(const std::shared_ptr<const void>& owner) {
  auto* keep = new std::shared_ptr<const void>(owner);
  return py::capsule(keep, [](void* p) { delete static_cast<std::shared_ptr<const void>*>(p); });
}

py::array tensor_view(const FilePtr& f, size_t index) {
  if (index >= f->tensors().size())
    throw py::index_error(str_cat(f->path(), ": tensor index ", index, " out of range"));
  const gg::TensorInfo& t = f->tensors()[index];
  py::array a(py::dtype("uint8"), {py::ssize_t(t.nbytes)}, {py::ssize_t(1)}, t.data,
              owner_capsule(f->owner()));
  a.attr("setflags")(py::arg("write") = false);
  return a;
}

py::list tensor_infos(const FilePtr& f) {
  py::list out;
  for (const gg::TensorInfo& t : f->tensors()) {
    py::tuple shape(t.shape.size());
    for (size_t d = 0; d < t.shape.size(); ++d) shape[d] = py::int_(t.shape[d]);
    out.append(py::make_tuple(t.name, shape, gg::type_name(t.type), uint32_t(t.type),
                              f->data_offset() + t.offset, t.nbytes));
  }
  return out;
}

py::list metadata_list(const FilePtr& f) {
  py::list out;
  for (const auto& kv : f->metadata())
    out.append(py::make_tuple(kv.first, to_py(kv.second), kv.second.type_string()));
  return out;
}

std::vector<int64_t> shape_from_py(const py::sequence& shape) {
  std::vector<int64_t> out;
  for (const auto& d : shape) out.push_back(py::cast<int64_t>(d));
  return out;
}

}  // namespace

void bind_gguf(py::module_& m) {
  py::register_exception<gg::FormatError>(m, "GGUFError", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const gg::IoError& e) {
      py::object args = py::make_tuple(e.error, e.what());
      PyErr_SetObject(PyExc_OSError, args.ptr());
    }
  });

  m.def("gguf_types", [] {
    py::list out;
    for (uint32_t id = 0; id < 256; ++id)
      if (const gg::TypeTraits* tr = gg::type_traits(id))
        out.append(py::make_tuple(id, tr->name, tr->block_size, tr->type_size));
    return out;
  });
  m.def(
      "gguf_tensor_nbytes",
      [](const std::string& type, const py::sequence& shape, const std::string& what) {
        return gg::tensor_nbytes(gg::parse_type(type), shape_from_py(shape), what);
      },
      py::arg("type"), py::arg("shape"), py::arg("what") = "tensor");

  py::class_<Handle>(m, "GGUFHandle")
      .def_static(
          "open",
          [](const std::string& path) {
            py::gil_scoped_release nogil;
            return Handle{gg::File::open(path)};
          },
          py::arg("path"))
      .def_static(
          "parse",
          [](const py::buffer& data, const std::string& name) {
            auto info = std::make_shared<py::buffer_info>(data.request());
            if (info->ndim != 1 || info->itemsize != 1 || info->strides[0] != 1)
              throw py::value_error("GGUFHandle.parse: data must be a contiguous byte buffer");
            const auto* ptr = static_cast<const uint8_t*>(info->ptr);
            const auto size = size_t(info->size);
            std::shared_ptr<const void> keep(ptr, [info](const void*) mutable {
              py::gil_scoped_acquire gil;
              info.reset();
            });
            py::gil_scoped_release nogil;
            return Handle{gg::File::parse(std::move(keep), ptr, size, name)};
          },
          py::arg("data"), py::arg("name") = "<buffer>")
      .def_property_readonly("path", [](const Handle& h) { return h.f->path(); })
      .def_property_readonly("version", [](const Handle& h) { return h.f->version(); })
      .def_property_readonly("alignment", [](const Handle& h) { return h.f->alignment(); })
      .def_property_readonly("data_offset", [](const Handle& h) { return h.f->data_offset(); })
      .def_property_readonly("size", [](const Handle& h) { return h.f->size(); })
      .def("metadata", [](const Handle& h) { return metadata_list(h.f); })
      .def("tensors", [](const Handle& h) { return tensor_infos(h.f); })
      .def(
          "tensor_data", [](const Handle& h, size_t index) { return tensor_view(h.f, index); },
          py::arg("index"));

  py::class_<gg::Writer>(m, "GGUFStreamWriter")
      .def(py::init<std::string, uint32_t>(), py::arg("path"), py::arg("alignment") = 32)
      .def(
          "add_metadata",
          [](gg::Writer& w, const std::string& key, const py::handle& value,
             const std::string& type) { w.add_metadata(key, value_from_py(key, value, type)); },
          py::arg("key"), py::arg("value"), py::arg("type"))
      .def(
          "add_tensor",
          [](gg::Writer& w, const std::string& name, const py::sequence& shape,
             const std::string& type) {
            w.add_tensor(name, shape_from_py(shape), gg::parse_type(type));
          },
          py::arg("name"), py::arg("shape"), py::arg("type"))
      .def("write_header", &gg::Writer::write_header, py::call_guard<py::gil_scoped_release>())
      .def(
          "write_tensor_data",
          [](gg::Writer& w, const py::buffer& data) {
            py::buffer_info info = data.request();
            bool contiguous = true;
            py::ssize_t expect = info.itemsize;
            for (py::ssize_t d = info.ndim; d-- > 0;) {
              if (info.shape[d] > 1 && info.strides[d] != expect) contiguous = false;
              expect *= info.shape[d];
            }
            if (!contiguous)
              throw py::value_error(str_cat(
                  w.path(), ": tensor '",
                  w.n_written() < w.n_tensors() ? w.tensor_name(w.n_written()) : std::string("?"),
                  "': data must be C-contiguous"));
            const size_t nbytes = size_t(info.size) * size_t(info.itemsize);
            py::gil_scoped_release nogil;
            return w.write_tensor_data(info.ptr, nbytes);
          },
          py::arg("data"))
      .def(
          "write_packed",
          [](gg::Writer& w, const bitnet::PackedWeights& p) {
            py::gil_scoped_release nogil;
            return w.write_tensor_data(p.data(), size_t(p.nbytes()));
          },
          py::arg("packed"))
      .def("commit", &gg::Writer::commit, py::call_guard<py::gil_scoped_release>())
      .def("abort", &gg::Writer::abort)
      .def("tensor_nbytes", &gg::Writer::tensor_nbytes, py::arg("index"))
      .def("tensor_name", &gg::Writer::tensor_name, py::arg("index"))
      .def_property_readonly("path", &gg::Writer::path)
      .def_property_readonly("n_tensors", &gg::Writer::n_tensors)
      .def_property_readonly("n_written", &gg::Writer::n_written);
}
