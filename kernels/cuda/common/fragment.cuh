// The accumulator fragment of a tensor-core tile as one thread sees it, shared by the sm_80
// (mma.m16n8k16) and Hopper (wgmma m64nN) kernels, whose float accumulators have the same
// per-thread layout: a thread holds two rows r = 0, 1 (row g and g + 8 of its warp's 16, g =
// lane / 4) and, in each 8-column group n, the columns 2 (lane % 4) + e, e = 0, 1. Element
// (n, 2 r + e) is at FragAt(s, n, 2 r + e), whether the kernel keeps the fragment as float[N][4]
// (sm_80, one per 8-column group) or as the flat float[4 N] the wgmma wrappers take.
#ifndef ATTNBENCH_KERNELS_CUDA_COMMON_FRAGMENT_CUH_
#define ATTNBENCH_KERNELS_CUDA_COMMON_FRAGMENT_CUH_

namespace attnbench::cuda {

template <int kN8>
__device__ __forceinline__ float& FragAt(float (&s)[kN8][4], int n, int i) {
  return s[n][i];
}
template <int kN>
__device__ __forceinline__ float& FragAt(float (&s)[kN], int n, int i) {
  return s[4 * n + i];
}

// Max and sum over the quad of threads that share a row.
__device__ __forceinline__ float QuadMax(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float QuadSum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_COMMON_FRAGMENT_CUH_
