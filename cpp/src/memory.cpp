#include "bitnet/memory.h"

#include <cstdlib>
#include <new>

#include "bitnet/common.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace bitnet {

std::shared_ptr<uint8_t> alloc_buffer(int64_t bytes) {
  constexpr int64_t kHuge = int64_t(2) << 20;
  const int64_t align = bytes >= kHuge ? kHuge : 64;
  const size_t size = size_t(round_up(bytes > 0 ? bytes : 1, align));
  void* p = std::aligned_alloc(size_t(align), size);
  if (!p) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (align == kHuge) madvise(p, size, MADV_HUGEPAGE);  // advice only: failure is harmless
#endif
  return std::shared_ptr<uint8_t>(static_cast<uint8_t*>(p), [](uint8_t* q) { std::free(q); });
}

}  // namespace bitnet
