// Storage dtypes as values: rounding a float to what fp16, bf16 or fp8 e4m3 can hold (round to
// nearest, ties to even) and encoding/decoding little-endian bytes. Every backend, the reference
// and the server use these so that "the value stored in dtype" means one thing everywhere. fp16
// and bf16 are rounded on the float's bits; dtype_generic.h keeps the generic rounding in double
// that they match bit for bit.
#ifndef ATTNBENCH_KERNELS_SPEC_DTYPE_H_
#define ATTNBENCH_KERNELS_SPEC_DTYPE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/spec/problem.h"

namespace attnbench {

// The value nearest to x that dtype can represent (ties to even). fp16 and bf16 overflow to
// infinity; fp8 e4m3 (OCP "e4m3fn": no infinity, largest finite 448) saturates to +-448,
// infinities included. NaN stays NaN. kFloat32 and kUnspecified return x unchanged.
float RoundToDType(float x, DType dtype);

// Bit patterns of the rounded value.
uint16_t FloatToHalfBits(float x);
float HalfBitsToFloat(uint16_t bits);
uint16_t FloatToBFloat16Bits(float x);
float BFloat16BitsToFloat(uint16_t bits);
uint8_t FloatToFloat8E4M3Bits(float x);
float Float8E4M3BitsToFloat(uint8_t bits);

// Appends the little-endian encoding of RoundToDType(x, dtype) to out.
void AppendEncoded(float x, DType dtype, std::string* out);

// Writes the same encoding to out[0 .. n) and returns n: DTypeBytes(dtype), or 4 for
// kUnspecified (written as float32).
int EncodeElement(float x, DType dtype, unsigned char* out);

// The value of the little-endian element of dtype (not kUnspecified) at `bytes`.
float DecodeElement(const unsigned char* bytes, DType dtype);

// The largest finite value dtype holds: 65504 (fp16), about 3.39e38 (bf16), FLT_MAX (fp32 and
// kUnspecified), 448 (fp8 e4m3, which saturates there instead of overflowing).
double LargestFiniteValue(DType dtype);

// Decodes `data` as little-endian elements of dtype. INVALID_ARGUMENT when the size is not a
// multiple of the element width or the dtype is unspecified.
absl::StatusOr<std::vector<float>> DecodeValues(const std::string& data, DType dtype);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_SPEC_DTYPE_H_
