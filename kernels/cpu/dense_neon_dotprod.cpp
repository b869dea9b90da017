// NEON + dot-product kernels of the dense matrices (compiled with -march=armv8.2-a+dotprod):
// dense_neon.cpp built a second time with sdot for the int8 block dot products (4 byte products
// per int32 lane in one instruction). Only the quantized kernels of this namespace are used (the
// float ones equal NEON's; see the table in cpp/src/dense.cpp).
#define BITNET_DENSE_NEON_NS neon_dotprod
#define BITNET_DENSE_NEON_DOTPROD 1
#include "dense_neon.cpp"
