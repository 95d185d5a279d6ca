// Generated inputs (§8): the same standard-normal tensors on every backend and in any client that
// implements this recipe. The recipe, exactly:
//
//   key     = (seed & 0xffffffff, seed >> 32)                        (spec.seed)
//   counter = (index & 0xffffffff, index >> 32, tensor_id, 0)        index: row-major element index
//   (w0, w1, w2, w3) = Philox4x32-10(counter, key)
//   u1 = (w0 + 0.5) / 2^32,  u2 = (w1 + 0.5) / 2^32
//   z  = sqrt(-2 ln u1) * cos(2 pi u2)                               computed in double
//   value = RoundToDType(float(z * factor), spec.dtype)
//
// tensor_id: query 0, key 1, value 2, grad_output 3, x 4, w_q 5, w_k 6, w_v 7, w_o 8, and 9 for
// the page table. factor is spec.input_scale for query, key, value, grad_output and x, and
// 1 / sqrt(fan_in) for the weights (fan_in: their first dimension; no input_scale). At layer
// scope a tensor the client sent (spec.inputs.x, .w_q, .w_k, .w_v, .w_o) replaces its draw.
// grad_output (dO, shape [B, S_q, H_out, D_v]) is drawn for PHASE_BACKWARD only, unless the
// client sent spec.inputs.grad_output.
//
// A generated page table (spec.kv_cache.paging.page_table empty) is a Fisher-Yates shuffle of
// the identity over n = batch * ceil(S_kv / page_size) pages: for t = n-1 down to 1,
// (w0, w1, ...) = Philox4x32-10((t & 0xffffffff, t >> 32, 9, 0), key), j = (w1 * 2^32 + w0) mod
// (t + 1), swap(perm[t], perm[j]). Entry [b * pages_per_sequence + p] is the physical page of
// logical page p of sequence b.
#ifndef ATTNBENCH_KERNELS_SPEC_INPUTS_H_
#define ATTNBENCH_KERNELS_SPEC_INPUTS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/spec/problem.h"
#include "kernels/spec/shapes.h"
#include "kernels/spec/tensors.h"

namespace attnbench {

enum TensorId : uint32_t {
  kTensorQuery = 0,
  kTensorKey = 1,
  kTensorValue = 2,
  kTensorGradOutput = 3,
  kTensorX = 4,
  kTensorWq = 5,
  kTensorWk = 6,
  kTensorWv = 7,
  kTensorWo = 8,
  kTensorPageTable = 9,
};

// z of the recipe above for one element (before the factor and rounding).
double StandardNormal(uint64_t seed, uint32_t tensor_id, uint64_t index);

// The largest |z| the recipe can produce, whatever the seed: u1 is at least 2^-33 (w0 = 0) and
// |cos| at most 1, so |z| <= sqrt(-2 ln 2^-33) = sqrt(66 ln 2), about 6.7637, computed here as
// StandardNormal computes it.
double LargestAbsStandardNormal();

// A generated tensor: every element of `shape` by the recipe, times factor, rounded to dtype.
// Runs on several threads for large tensors; the result does not depend on how many.
FloatTensor GenerateTensor(uint64_t seed, uint32_t tensor_id, const Shape& shape, double factor,
                           DType dtype);

// The inputs of a normalized, valid problem: the client's Q, K, V when given (decoded from their
// bytes), otherwise generated ones; at layer scope X and the four weights instead (Q, K, V are
// then left empty: they are computed from X inside the layer). For PHASE_BACKWARD also dO
// (grad_output, [B, S_q, H_out, D_v]): the client's when given, otherwise generated, whether or
// not Q, K, V are the client's; empty in every other phase.
absl::StatusOr<AttentionInputs> GenerateInputs(const Problem& problem);

// The generated page table of `num_pages` pages (see above).
std::vector<int32_t> GeneratePageTable(uint64_t seed, int64_t num_pages);

// The page table a paged decode problem uses: the client's, or the generated one.
std::vector<int32_t> PageTableFor(const Problem& problem);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_SPEC_INPUTS_H_
