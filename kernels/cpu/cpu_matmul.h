// Dense float32 matmuls for the CPU backend's layer projections (§6) and their gradients, split
// over the thread pool by rows of the result; the result is rounded to the storage dtype, as a
// layer storing it in that dtype would.
#ifndef ATTNBENCH_KERNELS_CPU_CPU_MATMUL_H_
#define ATTNBENCH_KERNELS_CPU_CPU_MATMUL_H_

#include <cstdint>

#include "kernels/cpu/thread_pool.h"
#include "kernels/spec/problem.h"
#include "kernels/stop_check.h"

namespace attnbench {

// c[m, n] = RoundToDType(sum_k a[m, k] * b[k, n]); all row-major. Once `stop` says so, returns
// with c partly written.
void MatMulRounded(ThreadPool& pool, const float* a, const float* b, float* c, int64_t m, int64_t k,
                   int64_t n, DType dtype, const StopCheck* stop = nullptr);

// The same with a stored transposed, a [k, m]: c = a^T b, what a weight's gradient is (X^T dQ,
// O^T dY). A product with b transposed (dY W_o^T) takes W_o^T from the caller instead: b is
// streamed row by row, a read one element at a time, so only a may be strided.
void MatMulTransposedARounded(ThreadPool& pool, const float* a, const float* b, float* c, int64_t m,
                              int64_t k, int64_t n, DType dtype, const StopCheck* stop = nullptr);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_CPU_CPU_MATMUL_H_
