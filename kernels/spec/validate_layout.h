// Validation of a head layout alone (§2), shared by ValidateProblem and ResolveHeads so that a
// layout ResolveHeads accepts is exactly one ValidateProblem accepts.
#ifndef ATTNBENCH_KERNELS_SPEC_VALIDATE_LAYOUT_H_
#define ATTNBENCH_KERNELS_SPEC_VALIDATE_LAYOUT_H_

#include "absl/status/status.h"
#include "kernels/spec/problem.h"

namespace attnbench {

// Upper bound on every head count (query, key/value, output), so head products stay small.
inline constexpr int kMaxHeads = 1 << 16;

// INVALID_ARGUMENT naming the proto path ("spec.layout.gqa.num_kv_heads") and the rule broken.
absl::Status ValidateLayout(const HeadLayout& layout);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_SPEC_VALIDATE_LAYOUT_H_
