// Aligned buffers for large read-mostly data (repacked weights, benchmark buffers).
#pragma once

#include <cstdint>
#include <memory>

namespace bitnet {

// A zero-initialised-or-not (unspecified contents) buffer of `bytes` bytes, 64-byte aligned.
// Buffers of 2 MiB and more are 2 MiB aligned and advised to use transparent huge pages
// (madvise(MADV_HUGEPAGE) on Linux): streaming hundreds of MB of weights through 4 KiB pages costs
// a TLB miss every 4 KiB, and the hardware prefetchers stop at every page boundary.
std::shared_ptr<uint8_t> alloc_buffer(int64_t bytes);

}  // namespace bitnet
