// The cuBLAS data type of a storage type, for every cuBLAS call on attention tensors
// (cuda_unfused's GEMMs, a layer's projections). Host code only.
#ifndef ATTNBENCH_KERNELS_CUDA_COMMON_CUBLAS_TYPE_H_
#define ATTNBENCH_KERNELS_CUDA_COMMON_CUBLAS_TYPE_H_

#include <library_types.h>

#include "kernels/cuda/common/attention_args.h"

namespace attnbench::cuda {

inline cudaDataType_t CublasType(Storage storage) {
  switch (storage) {
    case Storage::kFloat32:
      return CUDA_R_32F;
    case Storage::kFloat16:
      return CUDA_R_16F;
    case Storage::kBFloat16:
      return CUDA_R_16BF;
  }
  return CUDA_R_32F;
}

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_COMMON_CUBLAS_TYPE_H_
