// Device-side pieces every CUDA attention kernel shares, so the reference, the fused kernels and
// the unfused softmax agree on one definition of docs/variants.md: storage (storage.cuh), the mask
// predicate, tile coverage and key intervals (mask.cuh), RoPE and the score modifiers
// (score_mods.cuh). Include the piece you need; this header gathers them.
#ifndef ATTNBENCH_KERNELS_CUDA_COMMON_ATTENTION_DEVICE_CUH_
#define ATTNBENCH_KERNELS_CUDA_COMMON_ATTENTION_DEVICE_CUH_

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/mask.cuh"
#include "kernels/cuda/common/score_mods.cuh"
#include "kernels/cuda/common/storage.cuh"

#endif  // ATTNBENCH_KERNELS_CUDA_COMMON_ATTENTION_DEVICE_CUH_
