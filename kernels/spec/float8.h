// FP8 e4m3 inputs (docs/variants.md §1b): a tensor's scales, derived from its values or given in
// spec.float8, and the quantization of float32 values to e4m3 codes under them. A quantized
// FloatTensor holds the codes (each exactly an e4m3 value) and FloatTensor::scales; element
// [b, s, h, d] stands for code * scales[h] (per head) or code * scales[0] (per tensor).
#ifndef ATTNBENCH_KERNELS_SPEC_FLOAT8_H_
#define ATTNBENCH_KERNELS_SPEC_FLOAT8_H_

#include <cstdint>
#include <vector>

#include "kernels/spec/problem.h"
#include "kernels/spec/tensors.h"

namespace attnbench {

// The largest finite e4m3 value.
constexpr float kFloat8LargestCode = 448.0f;
// The largest scale validation accepts: 448 times it stays finite in float32 (3.4028e38 / 448).
constexpr float kFloat8LargestScale = 7.5e35f;

// The scale derived from values whose largest magnitude is amax: float32(amax / 448), so the
// largest value maps to the largest code; 1 when amax is 0.
float DerivedFloat8Scale(float amax);

// float32 values of a BSHD tensor quantized to e4m3: code = e4m3(float32(x / scale)), rounded to
// nearest even and saturating at +-448, with scale its tensor's or its head's: `given` when not
// empty (one scale, or one per head), else derived from the values (DerivedFloat8Scale of the
// largest |x| of the tensor or head). The result's dtype is DTYPE_FLOAT8_E4M3.
FloatTensor QuantizeFloat8(const FloatTensor& values, ScaleGranularity granularity,
                           const std::vector<float>& given);

// Codes a client sent, with their scales: `given`, or 1 when none were given (the codes are then
// the values themselves; one scale per head for SCALE_GRANULARITY_HEAD).
void AttachFloat8Scales(ScaleGranularity granularity, const std::vector<float>& given,
                        FloatTensor* codes);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_SPEC_FLOAT8_H_
