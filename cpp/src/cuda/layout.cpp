// Host repackers into the W2G layout (kernels/cuda/w2_layout.cuh).
#include <cstring>
#include <stdexcept>
#include <string>

#include "w2_layout.cuh"

namespace bitnet::cuda {

namespace {

// Sets the 2-bit code of value k (0 <= k < Kp) in a row of W2G words.
inline void put_code(uint32_t* row, int64_t k, uint32_t code) {
  const int64_t w = k / 16, j = k % 16, i = j / 4, b = j % 4;
  const int shift = int(8 * b + 2 * i);
  row[w] = (row[w] & ~(3u << shift)) | (code << shift);
}

// Every code 1 (t = 0): 0b01 at each of the 16 positions of a word.
constexpr uint32_t kAllZeroT = 0x55555555u;

}  // namespace

void w2g_from_ternary(const int8_t* t, int64_t N, int64_t K, uint32_t* out) {
  if (N < 1 || K < 1)
    throw std::invalid_argument("w2g_from_ternary: bad shape [" + std::to_string(N) + ", " +
                                std::to_string(K) + "]");
  const int64_t words = w2g_row_words(K);
  for (int64_t n = 0; n < N; ++n) {
    uint32_t* row = out + n * words;
    for (int64_t w = 0; w < words; ++w) row[w] = kAllZeroT;
    for (int64_t k = 0; k < K; ++k) {
      const int v = t[n * K + k];
      if (v < -1 || v > 1)
        throw std::invalid_argument("w2g_from_ternary: value " + std::to_string(v) +
                                    " at flat index " + std::to_string(n * K + k) +
                                    " is not in {-1, 0, 1}");
      put_code(row, k, uint32_t(v + 1));
    }
  }
}

void w2g_from_k256(const uint8_t* k256, int64_t N, int64_t K, uint32_t* out) {
  if (N < 1 || K < 1)
    throw std::invalid_argument("w2g_from_k256: bad shape [" + std::to_string(N) + ", " +
                                std::to_string(K) + "]");
  const int64_t nb = (K + 255) / 256, words = w2g_row_words(K);
  for (int64_t n = 0; n < N; ++n) {
    const uint8_t* src = k256 + n * nb * 64;
    uint32_t* row = out + n * words;
    for (int64_t w = 0; w < words; ++w) row[w] = kAllZeroT;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t b = k / 256, j = k % 256;
      const uint32_t code = (src[b * 64 + j % 64] >> (2 * (j / 64))) & 3u;
      if (code == 3)
        throw std::invalid_argument("w2g_from_k256: code 3 (not ternary) at row " +
                                    std::to_string(n) + ", column " + std::to_string(k));
      put_code(row, k, code);
    }
  }
}

}  // namespace bitnet::cuda
