// Eigen-decomposition of a real symmetric matrix in float64, for the principal components of
// KV-head compression (kv_compression.h): Householder reduction to tridiagonal form, then the
// implicit QL algorithm with shifts (the EISPACK tred2 / tql2 pair, as in JAMA). O(n^3) for the
// whole decomposition, which the Gram matrices of compression (n = g * D, bounded by
// kMaxCompressedGroupWidth) keep to seconds.
#ifndef ATTNBENCH_KERNELS_COMPRESS_SYMMETRIC_EIGEN_H_
#define ATTNBENCH_KERNELS_COMPRESS_SYMMETRIC_EIGEN_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace attnbench {

struct SymmetricEigenResult {
  int64_t n = 0;
  // Eigenvalues in descending order.
  std::vector<double> values;
  // Row-major n x n: column k is the unit eigenvector of values[k].
  std::vector<double> vectors;
};

// `matrix` is row-major n x n and symmetric (only its lower triangle is read). INVALID_ARGUMENT
// for a size mismatch or a non-finite element; INTERNAL if QL fails to converge (it does within
// a few iterations per eigenvalue on finite input).
absl::StatusOr<SymmetricEigenResult> SymmetricEigen(const std::vector<double>& matrix, int64_t n);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_COMPRESS_SYMMETRIC_EIGEN_H_
