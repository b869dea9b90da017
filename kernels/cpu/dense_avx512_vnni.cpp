// AVX-512 VNNI kernels of the dense matrices (compiled with the AVX-512 flags plus
// -mavx512vnni): dense_avx512.cpp built a second time with vpdpbusd for the int8 block dot
// products (one instruction instead of vpmaddubsw + vpmaddwd, and no int16 stage). Only the
// quantized kernels of this namespace are used (the float ones equal AVX-512's; see the table in
// cpp/src/dense.cpp).
#define BITNET_DENSE_AVX512_NS avx512_vnni
#define BITNET_DENSE_AVX512_VNNI 1
#include "dense_avx512.cpp"
