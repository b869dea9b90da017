// Shared helpers of the C++ core: error reporting and small integer utilities.
//
// Contract: every check on user input throws std::invalid_argument (pybind11 maps it to Python's
// ValueError) with a message naming the argument, tensor or shape at fault. Internal invariant
// violations throw std::logic_error (RuntimeError in Python). Nothing in the core aborts.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

namespace bitnet {

namespace detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... Rest>
void append(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  append(os, rest...);
}
}  // namespace detail

// Concatenates its arguments with operator<< into one message.
template <typename... Args>
std::string str_cat(const Args&... args) {
  std::ostringstream os;
  detail::append(os, args...);
  return os.str();
}

// Throws std::invalid_argument(str_cat(args...)) unless `cond` holds.
template <typename... Args>
void check_arg(bool cond, const Args&... args) {
  if (!cond) throw std::invalid_argument(str_cat(args...));
}

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
constexpr int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

}  // namespace bitnet
