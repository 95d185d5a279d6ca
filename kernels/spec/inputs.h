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
// tensor_id: query 0, key 1, value 2, grad_output 3, x 4, w_q 5, w_k 6, w_v 7, w_o 8, 9 for the
// page table, and 10 and 11 for the bases of the KV spectrum (below). factor is spec.input_scale
// for query, key, value, grad_output and x, and 1 / sqrt(fan_in) for the weights (fan_in: their
// first dimension; no input_scale). At layer scope a tensor the client sent (spec.inputs.x,
// .w_q, .w_k, .w_v, .w_o) replaces its draw.
// grad_output (dO, shape [B, S_q, H_out, D_v]; at layer scope dY, [B, S, d_model]) is drawn for
// PHASE_BACKWARD only, unless the client sent spec.inputs.grad_output.
//
// With spec.kv_spectrum (decay, optional rank), K and V are drawn instead with a decaying
// singular-value spectrum. Per batch b, K's [S_kv, n] matrix of concatenated heads (n = H_kv *
// D_qk, column c = h * D_qk + d; V likewise with D_v) is
//
//   r      = min(n, rank (when set), r_decay),  r_decay = the number of k >= 0 with w_k >= 1e-4
//   w_0 = 1, w_{k+1} = w_k * decay                                  (double, in that order)
//   norm   = 1 / sqrt(w_0^2 + w_1^2 + ... + w_{r-1}^2)               (summed in increasing k)
//   a_k    = w_k * z(tensor 1 (V: 2), (b * S_kv + s) * r + k)
//   acc    = sum over k = 0 .. r-1, in that order, of a_k * z(tensor 10 (V: 11), k * n + c)
//   value  = RoundToDType(float(input_scale * norm * acc), spec.dtype)
//
// so K = Z diag(w) U^T up to the factor: Z and U are independent Gaussian matrices, nearly
// orthogonal, and the singular values fall by `decay` from one to the next. Every element has
// variance input_scale^2, like an ordinary input. Bounded by construction: |value| <=
// input_scale * SpectrumLargestAbs(decay, r) (each |z| <= LargestAbsStandardNormal()), which
// validation checks against the dtype as it checks input_scale alone.
//
// DTYPE_FLOAT8_E4M3 (§1b, kernels/spec/float8.h): Q, K and V are drawn as for DTYPE_FLOAT32
// (value = float(z * factor), unrounded), then quantized to e4m3 codes under the given scales or
// ones derived from each tensor's (or head's) largest magnitude. Codes a client sent take the given
// scales, or 1.
//
// A generated page table (spec.kv_cache.paging.page_table empty) is a Fisher-Yates shuffle of
// the identity over n = batch * ceil(S_kv / page_size) pages: for t = n-1 down to 1,
// (w0, w1, ...) = Philox4x32-10((t & 0xffffffff, t >> 32, 9, 0), key), j = (w1 * 2^32 + w0) mod
// (t + 1), swap(perm[t], perm[j]). Entry [b * pages_per_sequence + p] is the physical page of
// logical page p of sequence b.
#ifndef ATTNBENCH_KERNELS_SPEC_INPUTS_H_
#define ATTNBENCH_KERNELS_SPEC_INPUTS_H_

#include <cstdint>
#include <optional>
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
  kTensorKeyBasis = 10,    // U of K's spectrum (spec.kv_spectrum)
  kTensorValueBasis = 11,  // U of V's spectrum
};

// r of the spectrum recipe for a matrix of n columns.
int64_t SpectrumRank(const KvSpectrum& spectrum, int64_t n);

// The largest |value| / input_scale the spectrum recipe can produce with rank r, whatever the
// seed: LargestAbsStandardNormal()^2 * norm * (w_0 + ... + w_{r-1}), at most
// LargestAbsStandardNormal()^2 * sqrt(r).
double SpectrumLargestAbs(double decay, int64_t r);

// K (tensor_id kTensorKey, basis kTensorKeyBasis) or V (kTensorValue, kTensorValueBasis) of shape
// [B, S_kv, H_kv, D] by the spectrum recipe.
FloatTensor GenerateSpectrumTensor(uint64_t seed, uint32_t tensor_id, uint32_t basis_id,
                                   const Shape& shape, const KvSpectrum& spectrum, double factor,
                                   DType dtype);

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
// (grad_output, [B, S_q, H_out, D_v]; dY [B, S, d_model] at layer scope): the client's when given,
// otherwise generated, whether or not Q, K, V are the client's; empty in every other phase.
absl::StatusOr<AttentionInputs> GenerateInputs(const Problem& problem);

// Whether the client sent Q, K and V (spec.inputs.query, .key and .value) instead of drawing them.
bool HasClientCoreInputs(const Problem& problem);

// DTYPE_FLOAT8_E4M3 with drawn Q, K, V: the float32 values before quantization (no scales), which
// the check's quantization error compares with (§1b). nullopt for every other problem, and when
// the client sent Q, K, V (nothing unquantized exists then).
std::optional<AttentionInputs> UnquantizedInputs(const Problem& problem);

// The generated page table of `num_pages` pages (see above).
std::vector<int32_t> GeneratePageTable(uint64_t seed, int64_t num_pages);

// The page table a paged decode problem uses: the client's, or the generated one.
std::vector<int32_t> PageTableFor(const Problem& problem);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_SPEC_INPUTS_H_
