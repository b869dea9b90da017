// Machine probes used by the benchmarks to state results against physical limits.
#pragma once

#include <cstdint>

namespace bitnet {

// Streaming read bandwidth in GB/s (1e9 bytes/s): `threads` threads each read their share of a
// `bytes`-byte buffer (first touched by the thread that reads it) `repeats` times; returns the
// median over repeats. Uses the active ISA's read kernel.
double measure_read_bandwidth(int64_t bytes, int threads, int repeats);

// int8 multiply-add peak in GMAC/s (1e9 int8 products per second) of the active ISA's
// multiply-add instruction (vpdpbusd, vpmaddubsw, sdot, ...) on `threads` threads, register
// operands only; median of `repeats` runs of about `seconds` each.
double measure_int8_peak(int threads, double seconds, int repeats);

}  // namespace bitnet
