// Storage types of the CUDA kernels: the C++ type of each Storage, conversions to and from float,
// and element offsets of BSHD rows. Math is float32 whatever the storage (docs/variants.md §1).
#ifndef ATTNBENCH_KERNELS_CUDA_COMMON_STORAGE_CUH_
#define ATTNBENCH_KERNELS_CUDA_COMMON_STORAGE_CUH_

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/common/attention_args.h"

namespace attnbench::cuda {

template <Storage S>
struct StorageTraits;
template <>
struct StorageTraits<Storage::kFloat32> {
  using T = float;
};
template <>
struct StorageTraits<Storage::kFloat16> {
  using T = __half;
};
template <>
struct StorageTraits<Storage::kBFloat16> {
  using T = __nv_bfloat16;
};

__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(__half x) { return __half2float(x); }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T FromFloat(float x);
template <>
__device__ __forceinline__ float FromFloat<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Element offsets of BSHD rows.
__device__ __forceinline__ int64_t RowOffset(int64_t b, int64_t seq, int64_t pos, int64_t heads,
                                             int64_t head, int64_t dim) {
  return ((b * seq + pos) * heads + head) * dim;
}

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_COMMON_STORAGE_CUH_
