// Finite inputs (docs/variants.md §8): the rules that keep NaN and infinity out of everything a
// backend reads, checked by ValidateProblem before any backend does work. A non-finite input
// would not reliably come back as a non-finite output (a row whose scores are all NaN looks fully
// masked to a running max that skips NaN), so it is refused at the door instead.
#ifndef ATTNBENCH_KERNELS_SPEC_FINITE_INPUTS_H_
#define ATTNBENCH_KERNELS_SPEC_FINITE_INPUTS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "kernels/spec/problem.h"

namespace attnbench {

// OK when every element of the client tensor, decoded in its dtype, is finite; else
// INVALID_ARGUMENT naming `path` and the first bad element by flat index, BSHD coordinates and
// kind: "spec.inputs.query: element 1234 [b=0, s=3, h=1, d=7] is NaN; inputs must be finite".
// The tensor's dtype, shape and byte size must already be checked against each other.
absl::Status CheckFiniteClientTensor(const std::string& path, const HostTensor& tensor);

// OK when generated inputs of dtype scaled by input_scale stay finite: LargestAbsStandardNormal()
// times input_scale must not exceed the dtype's largest finite value (float32's for fp8 e4m3,
// which saturates rather than overflows but is generated through a float). The bound does not
// depend on the seed or the shape, so a scale is accepted or refused before anything is drawn.
// INVALID_ARGUMENT naming spec.input_scale and the largest scale the dtype allows otherwise.
absl::Status CheckInputScaleFits(double input_scale, DType dtype);

// The same rule for K and V drawn with spec.kv_spectrum (inputs.h): input_scale times
// SpectrumLargestAbs(decay, rank) must not exceed the dtype's largest finite value (float32's
// for fp8). Depends on the spectrum's rank, and through it on H_kv * D, but not on the seed.
// INVALID_ARGUMENT naming spec.input_scale and spec.kv_spectrum otherwise.
absl::Status CheckSpectrumScaleFits(double input_scale, double decay, int64_t rank, DType dtype);

// Bounds of the spectrum generator's cost, checked by validation: the basis U (rank x n doubles)
// is held whole, and each generated element costs rank multiply-adds.
inline constexpr int64_t kMaxSpectrumBasisElements = int64_t{1} << 24;
inline constexpr int64_t kMaxSpectrumMultiplyAdds = int64_t{1} << 34;

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_SPEC_FINITE_INPUTS_H_
