// The symmetric eigensolver against matrices with known decompositions and, on random symmetric
// matrices, against its defining identities (A V = V diag(values), V^T V = I, descending order).
#include "kernels/compress/symmetric_eigen.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/spec/inputs.h"

namespace attnbench {
namespace {

std::vector<double> RandomSymmetric(int64_t n, uint64_t seed) {
  std::vector<double> a(n * n);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j <= i; ++j) {
      a[i * n + j] = a[j * n + i] = StandardNormal(seed, 0, static_cast<uint64_t>(i * n + j));
    }
  }
  return a;
}

// max |A V - V diag(values)| and max |V^T V - I|.
void ExpectDecomposes(const std::vector<double>& a, const SymmetricEigenResult& r, double tol) {
  const int64_t n = r.n;
  double residual = 0, orthogonality = 0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < n; ++k) {
      double av = 0, vtv = 0;
      for (int64_t j = 0; j < n; ++j) {
        av += a[i * n + j] * r.vectors[j * n + k];
        vtv += r.vectors[j * n + i] * r.vectors[j * n + k];
      }
      residual = std::max(residual, std::fabs(av - r.vectors[i * n + k] * r.values[k]));
      orthogonality = std::max(orthogonality, std::fabs(vtv - (i == k ? 1.0 : 0.0)));
    }
  }
  EXPECT_LT(residual, tol);
  EXPECT_LT(orthogonality, tol);
  for (int64_t k = 1; k < n; ++k) EXPECT_GE(r.values[k - 1], r.values[k]);
}

TEST(SymmetricEigenTest, TwoByTwo) {
  const std::vector<double> a = {2, 1, 1, 2};
  absl::StatusOr<SymmetricEigenResult> r = SymmetricEigen(a, 2);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NEAR(r->values[0], 3, 1e-14);
  EXPECT_NEAR(r->values[1], 1, 1e-14);
  // (1, 1) / sqrt(2) up to sign.
  EXPECT_NEAR(std::fabs(r->vectors[0]), std::sqrt(0.5), 1e-14);
  EXPECT_NEAR(r->vectors[0], r->vectors[2], 1e-14);
  ExpectDecomposes(a, *r, 1e-13);
}

TEST(SymmetricEigenTest, DiagonalIsSortedDescending) {
  const std::vector<double> a = {1, 0, 0, 0, -4, 0, 0, 0, 7};
  absl::StatusOr<SymmetricEigenResult> r = SymmetricEigen(a, 3);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->values, (std::vector<double>{7, 1, -4}));
  EXPECT_NEAR(std::fabs(r->vectors[2 * 3 + 0]), 1, 1e-15);  // e_2 first
  ExpectDecomposes(a, *r, 1e-14);
}

TEST(SymmetricEigenTest, RankDeficientAndRepeated) {
  // u u^T + v v^T with orthonormal u, v in R^4: eigenvalues 1, 1, 0, 0.
  const double s = 0.5;
  const std::vector<double> u = {s, s, s, s}, v = {s, -s, s, -s};
  std::vector<double> a(16);
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4; ++j) a[i * 4 + j] = u[i] * u[j] + v[i] * v[j];
  }
  absl::StatusOr<SymmetricEigenResult> r = SymmetricEigen(a, 4);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NEAR(r->values[0], 1, 1e-14);
  EXPECT_NEAR(r->values[1], 1, 1e-14);
  EXPECT_NEAR(r->values[2], 0, 1e-14);
  EXPECT_NEAR(r->values[3], 0, 1e-14);
  ExpectDecomposes(a, *r, 1e-13);

  const std::vector<double> zero(25, 0.0);
  r = SymmetricEigen(zero, 5);
  ASSERT_TRUE(r.ok()) << r.status();
  ExpectDecomposes(zero, *r, 1e-15);
}

TEST(SymmetricEigenTest, RandomMatrices) {
  for (int64_t n : {1, 3, 17, 64, 130}) {
    const std::vector<double> a = RandomSymmetric(n, 42 + n);
    absl::StatusOr<SymmetricEigenResult> r = SymmetricEigen(a, n);
    ASSERT_TRUE(r.ok()) << r.status();
    double trace = 0, sum = 0;
    for (int64_t i = 0; i < n; ++i) trace += a[i * n + i];
    for (double x : r->values) sum += x;
    EXPECT_NEAR(trace, sum, 1e-10 * n);
    SCOPED_TRACE(n);
    ExpectDecomposes(a, *r, 1e-10 * n);
  }
}

TEST(SymmetricEigenTest, RefusesBadInput) {
  EXPECT_EQ(SymmetricEigen({1, 2, 3}, 2).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SymmetricEigen({}, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SymmetricEigen({1, 0, std::nan(""), 1}, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace attnbench
