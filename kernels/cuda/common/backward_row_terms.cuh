// The first step of every CUDA backward that keeps the forward's O (docs/variants.md §5): the row
// term D_i = <dO_i, O_i> of every (b, h, i) output row, which each dS_ij = P_ij (dP_ij - D_i)
// subtracts. One kernel for cuda_reference's backward and cuda_flash's fused one.
#ifndef ATTNBENCH_KERNELS_CUDA_COMMON_BACKWARD_ROW_TERMS_CUH_
#define ATTNBENCH_KERNELS_CUDA_COMMON_BACKWARD_ROW_TERMS_CUH_

#include <cstdint>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/backward_args.h"
#include "kernels/cuda/common/storage.cuh"

namespace attnbench::cuda {

// A warp per row, kWarps warps a block, grid-stride over the B * H_out * S_q rows; dO in the
// storage type, O in float32 (BackwardArgs::out). The loop bound is warp-uniform, so the
// shuffles see every lane. Writes row_terms[(b H_out + h) S_q + i].
template <typename T, int kWarps>
__global__ void __launch_bounds__(32 * kWarps)
    BackwardRowTermsKernel(const __grid_constant__ AttentionArgs a,
                           const __grid_constant__ BackwardArgs g) {
  const T* dout = static_cast<const T*>(g.grad_out);
  const int lane = threadIdx.x % 32;
  const int64_t rows = static_cast<int64_t>(a.batch) * a.heads_out * a.seq_q;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32; row < rows;
       row += static_cast<int64_t>(gridDim.x) * kWarps) {
    const int64_t i = row % a.seq_q;
    const int64_t bh = row / a.seq_q;
    const int h = static_cast<int>(bh % a.heads_out);
    const int b = static_cast<int>(bh / a.heads_out);
    const int64_t offset = RowOffset(b, a.seq_q, i, a.heads_out, h, a.dim_v);
    float sum = 0.0f;
    for (int d = lane; d < a.dim_v; d += 32) sum += ToFloat(dout[offset + d]) * g.out[offset + d];
#pragma unroll
    for (int delta = 16; delta > 0; delta /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, delta);
    if (lane == 0) g.row_terms[row] = sum;
  }
}

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_COMMON_BACKWARD_ROW_TERMS_CUH_
