// What cuda_flash's kernels compiled with a request's client expressions (flash/flash_rtc.h)
// read beside AttentionArgs: one struct in device memory at AttentionArgs::expressions, written by
// the host and read by the hooks (common/expr_hooks.cuh). Plain C++, for both .cc and .cu files.
#ifndef ATTNBENCH_KERNELS_CUDA_COMMON_EXPRESSION_ARGS_H_
#define ATTNBENCH_KERNELS_CUDA_COMMON_EXPRESSION_ARGS_H_

#include <cstdint>

namespace attnbench::cuda {

struct ExpressionArgs {
  const void* aux = nullptr;  // the AttnbenchAux table of the aux tensors (may be null: none)
  // The sm_80 kernel's mask_mod tile classes (the Hopper kernel walks tile lists instead): for
  // query tile qt of kSm80BlockQ rows and K/V tile kt of the kernel's kBc keys, byte
  // ((p * q_tiles + qt) * kv_tiles + kt), p = b * heads_out + h when per_head, else 0: 0 when
  // mask_mod keeps no pair of the tile, 1 some, 2 every pair. Null: every tile is tested.
  const uint8_t* mask_tiles = nullptr;
  int64_t q_tiles = 0;
  int64_t kv_tiles = 0;
  int32_t per_head = 0;
};

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_COMMON_EXPRESSION_ARGS_H_
