#include "kernels/compress/symmetric_eigen.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace attnbench {
namespace {

// Both steps read and write the matrix V of the textbook algorithm column by column; v holds it
// transposed (V(i, j) = v[j * n + i]) so that those runs are contiguous, which makes the
// decomposition several times faster at the widths compression uses.

// Householder reduction of the symmetric v (n x n; overwritten with the accumulated orthogonal
// transform V, transposed) to tridiagonal form: diagonal d, subdiagonal e (e[0] = 0).
void Tridiagonalize(int64_t n, std::vector<double>& v, std::vector<double>& d,
                    std::vector<double>& e) {
  auto V = [&](int64_t i, int64_t j) -> double& { return v[j * n + i]; };
  for (int64_t j = 0; j < n; ++j) d[j] = V(n - 1, j);
  for (int64_t i = n - 1; i > 0; --i) {
    double scale = 0.0;
    double h = 0.0;
    for (int64_t k = 0; k < i; ++k) scale += std::fabs(d[k]);
    if (scale == 0.0) {
      e[i] = d[i - 1];
      for (int64_t j = 0; j < i; ++j) {
        d[j] = V(i - 1, j);
        V(i, j) = 0.0;
        V(j, i) = 0.0;
      }
    } else {
      for (int64_t k = 0; k < i; ++k) {
        d[k] /= scale;
        h += d[k] * d[k];
      }
      double f = d[i - 1];
      double g = std::sqrt(h);
      if (f > 0) g = -g;
      e[i] = scale * g;
      h -= f * g;
      d[i - 1] = f - g;
      for (int64_t j = 0; j < i; ++j) e[j] = 0.0;
      for (int64_t j = 0; j < i; ++j) {
        f = d[j];
        V(j, i) = f;
        g = e[j] + V(j, j) * f;
        for (int64_t k = j + 1; k <= i - 1; ++k) {
          g += V(k, j) * d[k];
          e[k] += V(k, j) * f;
        }
        e[j] = g;
      }
      f = 0.0;
      for (int64_t j = 0; j < i; ++j) {
        e[j] /= h;
        f += e[j] * d[j];
      }
      const double hh = f / (h + h);
      for (int64_t j = 0; j < i; ++j) e[j] -= hh * d[j];
      for (int64_t j = 0; j < i; ++j) {
        f = d[j];
        g = e[j];
        for (int64_t k = j; k <= i - 1; ++k) V(k, j) -= (f * e[k] + g * d[k]);
        d[j] = V(i - 1, j);
        V(i, j) = 0.0;
      }
    }
    d[i] = h;
  }
  // Accumulate the transformations.
  for (int64_t i = 0; i < n - 1; ++i) {
    V(n - 1, i) = V(i, i);
    V(i, i) = 1.0;
    const double h = d[i + 1];
    if (h != 0.0) {
      for (int64_t k = 0; k <= i; ++k) d[k] = V(k, i + 1) / h;
      for (int64_t j = 0; j <= i; ++j) {
        double g = 0.0;
        for (int64_t k = 0; k <= i; ++k) g += V(k, i + 1) * V(k, j);
        for (int64_t k = 0; k <= i; ++k) V(k, j) -= g * d[k];
      }
    }
    for (int64_t k = 0; k <= i; ++k) V(k, i + 1) = 0.0;
  }
  for (int64_t j = 0; j < n; ++j) {
    d[j] = V(n - 1, j);
    V(n - 1, j) = 0.0;
  }
  V(n - 1, n - 1) = 1.0;
  e[0] = 0.0;
}

// Implicit QL with shifts on the tridiagonal (d, e), rotating V's columns (v's rows) along.
absl::Status DiagonalizeTridiagonal(int64_t n, std::vector<double>& v, std::vector<double>& d,
                                    std::vector<double>& e) {
  auto V = [&](int64_t i, int64_t j) -> double& { return v[j * n + i]; };
  constexpr int kMaxIterations = 64;  // per eigenvalue; QL needs 2 or 3 on average
  for (int64_t i = 1; i < n; ++i) e[i - 1] = e[i];
  e[n - 1] = 0.0;
  double f = 0.0;
  double tst1 = 0.0;
  const double eps = std::ldexp(1.0, -52);
  for (int64_t l = 0; l < n; ++l) {
    tst1 = std::max(tst1, std::fabs(d[l]) + std::fabs(e[l]));
    int64_t m = l;
    while (m < n - 1 && std::fabs(e[m]) > eps * tst1) ++m;
    if (m > l) {
      int iterations = 0;
      do {
        if (++iterations > kMaxIterations) {
          return absl::InternalError(
              absl::StrCat("symmetric eigensolver: no convergence for eigenvalue ", l, " of ", n));
        }
        double g = d[l];
        double p = (d[l + 1] - g) / (2.0 * e[l]);
        double r = std::hypot(p, 1.0);
        if (p < 0) r = -r;
        d[l] = e[l] / (p + r);
        d[l + 1] = e[l] * (p + r);
        const double dl1 = d[l + 1];
        double h = g - d[l];
        for (int64_t i = l + 2; i < n; ++i) d[i] -= h;
        f += h;
        p = d[m];
        double c = 1.0, c2 = 1.0, c3 = 1.0;
        const double el1 = e[l + 1];
        double s = 0.0, s2 = 0.0;
        for (int64_t i = m - 1; i >= l; --i) {
          c3 = c2;
          c2 = c;
          s2 = s;
          g = c * e[i];
          h = c * p;
          r = std::hypot(p, e[i]);
          e[i + 1] = s * r;
          s = e[i] / r;
          c = p / r;
          p = c * d[i] - s * g;
          d[i + 1] = h + s * (c * g + s * d[i]);
          for (int64_t k = 0; k < n; ++k) {
            h = V(k, i + 1);
            V(k, i + 1) = s * V(k, i) + c * h;
            V(k, i) = c * V(k, i) - s * h;
          }
        }
        p = -s * s2 * c3 * el1 * e[l] / dl1;
        e[l] = s * p;
        d[l] = c * p;
      } while (std::fabs(e[l]) > eps * tst1);
    }
    d[l] += f;
    e[l] = 0.0;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SymmetricEigenResult> SymmetricEigen(const std::vector<double>& matrix, int64_t n) {
  if (n <= 0 || static_cast<int64_t>(matrix.size()) != n * n) {
    return absl::InvalidArgumentError(
        absl::StrCat("symmetric eigensolver: ", matrix.size(), " values for n = ", n));
  }
  std::vector<double> v(n * n);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j <= i; ++j) {
      const double x = matrix[i * n + j];
      if (!std::isfinite(x)) {
        return absl::InvalidArgumentError(
            absl::StrCat("symmetric eigensolver: element [", i, ", ", j, "] is not finite"));
      }
      v[i * n + j] = v[j * n + i] = x;
    }
  }
  std::vector<double> d(n), e(n);
  Tridiagonalize(n, v, d, e);
  if (absl::Status s = DiagonalizeTridiagonal(n, v, d, e); !s.ok()) return s;

  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return d[a] > d[b]; });
  SymmetricEigenResult out;
  out.n = n;
  out.values.resize(n);
  out.vectors.resize(n * n);
  for (int64_t k = 0; k < n; ++k) {
    out.values[k] = d[order[k]];
    for (int64_t i = 0; i < n; ++i) out.vectors[i * n + k] = v[order[k] * n + i];
  }
  return out;
}

}  // namespace attnbench
