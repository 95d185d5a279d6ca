// The generic rounding of dtype.h: any binary format rounded in double with frexp, nearbyint and
// ldexp, obviously right but slow. dtype.h's fp16 and bf16 functions take bit-level fast paths
// instead; these stay the definition those must match bit for bit, and dtype_test compares the
// two on every boundary. Not for other callers: the results are the same, only slower.
#ifndef ATTNBENCH_KERNELS_SPEC_DTYPE_GENERIC_H_
#define ATTNBENCH_KERNELS_SPEC_DTYPE_GENERIC_H_

#include <cstdint>

#include "kernels/spec/problem.h"

namespace attnbench::dtype_generic {

// As attnbench::RoundToDType, FloatToHalfBits, HalfBitsToFloat and FloatToBFloat16Bits.
float RoundToDType(float x, DType dtype);
uint16_t FloatToHalfBits(float x);
float HalfBitsToFloat(uint16_t bits);
uint16_t FloatToBFloat16Bits(float x);

}  // namespace attnbench::dtype_generic

#endif  // ATTNBENCH_KERNELS_SPEC_DTYPE_GENERIC_H_
