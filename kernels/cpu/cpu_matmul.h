// Dense float32 matmul for the CPU backend's layer projections (§6), split over the thread pool
// by rows; the result is rounded to the storage dtype, as a layer storing it in that dtype would.
#ifndef ATTNBENCH_KERNELS_CPU_CPU_MATMUL_H_
#define ATTNBENCH_KERNELS_CPU_CPU_MATMUL_H_

#include <cstdint>

#include "kernels/spec/problem.h"
#include "kernels/stop_check.h"
#include "kernels/cpu/thread_pool.h"

namespace attnbench {

// c[m, n] = RoundToDType(sum_k a[m, k] * b[k, n]); all row-major. Once `stop` says so, returns
// with c partly written.
void MatMulRounded(ThreadPool& pool, const float* a, const float* b, float* c, int64_t m, int64_t k,
                   int64_t n, DType dtype, const StopCheck* stop = nullptr);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_CPU_CPU_MATMUL_H_
