// KV-head compression (docs/variants.md §5b, AttentionSpec.kv_compression): turns a problem with
// H_kv KV heads into one with G = target_kv_heads, whose groups of g = H_kv / G consecutive heads
// each become one head of the same width, and measures what that costs in accuracy.
//
// For each group and each of K (after RoPE, so RoPE stays exact) and V, a method picks a
// compression matrix C (g*D x D) and per-head expansions B_m (D x D) with X_m ~ (X C) B_m for the
// group's concatenated cache X = [X_0 .. X_{g-1}]:
//   pca        C = U, the top-D eigenvectors of X^T X (its principal directions, uncentred),
//              B_m = U_m^T (U_m: head m's D rows of U): the best rank-D fit of the group (Yu et al.
//              2024, "Effectively Compress KV Heads for LLM").
//   mean_pool  C = the mean of the group's heads, B_m = I: the usual MHA-to-GQA conversion.
// Keys are compressed after RoPE and B_m is absorbed into the query side (q'_h = RoPE(q_h) B_m^T,
// the compressed problem runs with RoPE off and the original scale): q'_h . k_c = q_h . k_rec
// exactly. Values' B_m is applied to the compressed problem's output (o_h = o_c,h B_m), where a
// layer would fold it into W_o. The compressed problem is an ordinary GQA problem with client
// tensors Q', K_c, V_c, so every backend runs it without new kernels. Plain C++ over the spec and
// the float64 reference.
#ifndef ATTNBENCH_KERNELS_COMPRESS_KV_COMPRESSION_H_
#define ATTNBENCH_KERNELS_COMPRESS_KV_COMPRESSION_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/reference/check.h"
#include "kernels/spec/problem.h"
#include "kernels/spec/tensors.h"

namespace attnbench {

enum class CompressionMethod { kPca, kMeanPool };
// In the order results report them.
inline constexpr CompressionMethod kCompressionMethods[] = {CompressionMethod::kPca,
                                                            CompressionMethod::kMeanPool};
// "pca", "mean_pool" (KvCompressionResult.method).
const char* CompressionMethodName(CompressionMethod method);

// Widest concatenated group g * D (or g * D_v) compressed: the eigensolver is O(width^3) and the
// Gram matrix O(B * S_kv * width^2): the eigensolver alone takes some 6 s of one core at this
// width (0.7 s at 512), per group and per K and V.
inline constexpr int64_t kMaxCompressedGroupWidth = 1024;

// OK when the problem's groups are within kMaxCompressedGroupWidth; RESOURCE_EXHAUSTED naming
// spec.kv_compression.target_kv_heads otherwise. The problem is normalized and valid.
absl::Status CheckCompressionCost(const Problem& problem);

// Host FLOPs of CompressKv for every method together (Gram matrices, eigensolver, projections,
// the query transform), for the server's work limit.
double CompressionHostFlops(const Problem& problem);

// One group's maps for K or V (width w = g * dim).
struct GroupMaps {
  std::vector<double> compress;             // C, row-major w x dim
  std::vector<std::vector<double>> expand;  // B_m for m < g, each row-major dim x dim
};

struct CompressedKv {
  CompressionMethod method = CompressionMethod::kPca;
  int groups = 0;      // G
  int group_size = 0;  // g
  // Normalized and valid: GQA(H_out, G), RoPE off, the original scale, client tensors Q', K_c,
  // V_c; no kv_spectrum or kv_compression.
  Problem problem;
  // Q', K_c, V_c as the compressed problem's client tensors decode (rounded to the dtype).
  AttentionInputs inputs;
  std::vector<GroupMaps> key_maps;    // per group
  std::vector<GroupMaps> value_maps;  // per group
  // ||X - X_rec|| / ||X|| over the whole K (after RoPE) and V, X_rec from the stored K_c, V_c.
  double key_error = 0;
  double value_error = 0;
};

// Compresses a normalized, valid problem with kv_compression enabled, whose inputs are those
// GenerateInputs returns for it. INVALID_ARGUMENT when the compressed tensors do not fit the
// dtype (the compressed problem's own validation, prefixed with the method).
absl::StatusOr<CompressedKv> CompressKv(const Problem& problem, const AttentionInputs& inputs,
                                        CompressionMethod method);

// O_c of the compressed problem's output row (its D_v values, the same row index as the
// original's, Reference64::Row numbering) mapped back to the original value space: o_c B_m of
// the row's head.
std::vector<double> ExpandOutputRow(const CompressedKv& compressed, const Problem& problem,
                                    int64_t row, const std::vector<double>& compressed_row);

struct OutputErrorReport {
  double relative_error = 0;  // ||O_c mapped back - O|| / ||O|| (absolute when ||O|| = 0)
  int64_t rows = 0;
};

// The method's output error: the float64 references of the original and the compressed problem
// on the rows CheckedRows(options) picks.
absl::StatusOr<OutputErrorReport> CompressedOutputError(const Problem& problem,
                                                        const AttentionInputs& inputs,
                                                        const CompressedKv& compressed,
                                                        const CheckOptions& options);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_COMPRESS_KV_COMPRESSION_H_
