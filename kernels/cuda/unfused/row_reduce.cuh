// Block-wide reductions over one score row, shared by the unfused forward's softmax
// (unfused_softmax.cu) and its backward's score gradients (unfused_backward.cu): every thread of
// the block gets the identical result, combined from per-warp partials in a fixed order.
#ifndef ATTNBENCH_KERNELS_CUDA_UNFUSED_ROW_REDUCE_CUH_
#define ATTNBENCH_KERNELS_CUDA_UNFUSED_ROW_REDUCE_CUH_

namespace attnbench::cuda {

// Threads per block of the row kernels, and their warps.
inline constexpr int kRowThreads = 256;
inline constexpr int kRowWarps = kRowThreads / 32;

// `partial` holds kRowWarps floats (shared memory) and may be reused after return; every thread
// of a kRowThreads block must call.
__device__ __forceinline__ float BlockMax(float x, float* partial) {
  for (int delta = 16; delta > 0; delta /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, delta));
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = x;
  __syncthreads();
  float r = partial[0];
  for (int w = 1; w < kRowWarps; ++w) r = fmaxf(r, partial[w]);
  __syncthreads();
  return r;
}

__device__ __forceinline__ float BlockSum(float x, float* partial) {
  for (int delta = 16; delta > 0; delta /= 2) x += __shfl_xor_sync(0xffffffffu, x, delta);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = x;
  __syncthreads();
  float r = partial[0];
  for (int w = 1; w < kRowWarps; ++w) r += partial[w];
  __syncthreads();
  return r;
}

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_UNFUSED_ROW_REDUCE_CUH_
