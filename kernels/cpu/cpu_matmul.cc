#include "kernels/cpu/cpu_matmul.h"

#include <algorithm>

#include "kernels/spec/dtype.h"

namespace attnbench {
namespace {

// c[m, n] = RoundToDType(sum_k a(r, kk) * b[k, n]) with a(r, kk) = a[r * row_stride + kk *
// col_stride]: a row-major (k, 1) or transposed (1, m).
void MatMulStrided(ThreadPool& pool, const float* a, int64_t row_stride, int64_t col_stride,
                   const float* b, float* c, int64_t m, int64_t k, int64_t n, DType dtype,
                   const StopCheck* stop) {
  constexpr int64_t kRows = 8;
  // Column chunks keep a slab of b in cache while a few rows of a stream past it.
  constexpr int64_t kCols = 256;
  pool.ParallelFor((m + kRows - 1) / kRows, [&](int64_t item, int) {
    const int64_t r0 = item * kRows, r1 = std::min(m, r0 + kRows);
    std::fill(c + r0 * n, c + r1 * n, 0.0f);
    for (int64_t n0 = 0; n0 < n; n0 += kCols) {
      // A slab is kRows x k x kCols multiply-adds: milliseconds even for a wide layer.
      if (ShouldStop(stop)) return;
      const int64_t n1 = std::min(n, n0 + kCols);
      for (int64_t r = r0; r < r1; ++r) {
        float* crow = c + r * n;
        for (int64_t kk = 0; kk < k; ++kk) {
          const float ar = a[r * row_stride + kk * col_stride];
          const float* brow = b + kk * n;
          for (int64_t col = n0; col < n1; ++col) crow[col] += ar * brow[col];
        }
      }
    }
    if (dtype != DType::kFloat32) {
      for (int64_t idx = r0 * n; idx < r1 * n; ++idx) c[idx] = RoundToDType(c[idx], dtype);
    }
  });
}

}  // namespace

void MatMulRounded(ThreadPool& pool, const float* a, const float* b, float* c, int64_t m, int64_t k,
                   int64_t n, DType dtype, const StopCheck* stop) {
  MatMulStrided(pool, a, k, 1, b, c, m, k, n, dtype, stop);
}

void MatMulTransposedARounded(ThreadPool& pool, const float* a, const float* b, float* c, int64_t m,
                              int64_t k, int64_t n, DType dtype, const StopCheck* stop) {
  MatMulStrided(pool, a, 1, m, b, c, m, k, n, dtype, stop);
}

}  // namespace attnbench
