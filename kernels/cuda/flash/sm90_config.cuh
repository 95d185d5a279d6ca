// The Hopper kernel's compile-time shape, declared as a type before any code (in the manner of
// ThunderKittens): tile sizes from one row of kSm90Tiles (configs.h), the shared-memory layout of
// the Q, K and V tiles and of the mbarriers, the swizzle each operand uses, and how the 384
// threads split their registers between the producer and the two consumer warpgroups.
#ifndef ATTNBENCH_KERNELS_CUDA_FLASH_SM90_CONFIG_CUH_
#define ATTNBENCH_KERNELS_CUDA_FLASH_SM90_CONFIG_CUH_

#include <cstdint>

#include "kernels/cuda/flash/configs.h"

namespace attnbench::cuda::flash {

// How a [rows][dim] tile of 16-bit elements sits in shared memory for TMA and wgmma: dim / kPanel
// column panels, each [rows][kPanel] with rows of kSwizzleBytes swizzled in the pattern TMA
// writes and wgmma reads: 128-byte rows where dim is a multiple of 64 elements, 64-byte rows where
// it is a multiple of 32, else 32-byte rows (the widest swizzle whose rows tile the dim exactly).
template <int kDim>
struct PanelLayout {
  static constexpr int kSwizzleBytes = kDim % 64 == 0 ? 128 : kDim % 32 == 0 ? 64 : 32;
  static constexpr int kPanel = kSwizzleBytes / 2;  // elements per panel row
  static constexpr int kPanels = kDim / kPanel;
  // wgmma descriptor swizzle mode (bits 62-63): 1 = 128-byte, 2 = 64-byte, 3 = 32-byte.
  static constexpr uint64_t kDescriptorMode =
      kSwizzleBytes == 128 ? 1 : kSwizzleBytes == 64 ? 2 : 3;
  // Bytes between 8-row groups: the descriptors' stride byte offset.
  static constexpr uint32_t kGroupBytes = 8 * kSwizzleBytes;
  static_assert(kDim % 16 == 0, "panels of 16, 32 or 64 elements (whole wgmma k-steps)");

  // Byte offset of element (row, col) within a tile of kRows rows, swizzled: the 16-byte chunk
  // index within a row is XORed with the row's position in its swizzle atom (of 8, 4 or 2
  // chunks: address bits 4-6, 4-5 or 4 XOR bits 7-9, 7-8 or 7).
  template <int kRows>
  __host__ __device__ static constexpr uint32_t Offset(int row, int col) {
    const uint32_t linear = static_cast<uint32_t>((col / kPanel) * kRows * kSwizzleBytes +
                                                  row * kSwizzleBytes + (col % kPanel) * 2);
    return linear ^ ((linear >> 3) & static_cast<uint32_t>(kSwizzleBytes - 16));
  }
};

template <int kTile, bool kRope>
struct Sm90Config {
  static constexpr Sm90Tile kShape = kSm90Tiles[kTile];
  static constexpr int kDqk = kShape.dim_qk;
  static constexpr int kDv = kShape.dim_v;
  static constexpr int kBc = kShape.block_kv;
  static constexpr int kStages = kShape.stages;

  static constexpr int kConsumers = 2;         // warpgroups of 64 query rows
  static constexpr int kBr = 64 * kConsumers;  // query rows per block
  static constexpr int kThreads = 128 * (kConsumers + 1);
  static_assert(kBr == kSm90BlockQ, "block lists are built for kSm90BlockQ rows");

  using QK = PanelLayout<kDqk>;
  using V = PanelLayout<kDv>;
  static constexpr int kQBytes = kBr * kDqk * 2;
  static constexpr int kKBytes = kBc * kDqk * 2;  // one stage
  static constexpr int kVBytes = kBc * kDv * 2;   // one stage
  static constexpr int kKOffset = kQBytes;
  static constexpr int kVOffset = kKOffset + kStages * kKBytes;
  static constexpr int kBarrierOffset = kVOffset + kStages * kVBytes;
  // q_full, q_empty, q_raw; per stage k_full, v_full, k_empty, v_empty.
  static constexpr int kNumBarriers = 3 + 4 * kStages;
  // +1024: the dynamic shared memory base is aligned up to the 1024 bytes the swizzle needs.
  static constexpr int kSmemBytes = kBarrierOffset + 8 * kNumBarriers + 1024;
  static_assert(kSmemBytes == Sm90SmemBytes(kShape), "configs.h counts the same bytes");
  static_assert(kSmemBytes <= 227 * 1024, "over the 227 KB a block may opt into");
  static_assert(kBc % 16 == 0 && kBc <= 128,
                "K/V tiles of whole k-steps, at most 32 columns a thread");

  // Registers per thread after setmaxnreg. Producer: one thread issues TMA (24 would do); under
  // RoPE three of its warps rotate Q tiles in shared memory and need more. setmaxnreg only
  // moves registers the block already holds: launch_bounds(384, 1) gives each thread 168 at
  // entry, so 128 * producer + 256 * consumer must stay within 384 * 168 (an increase the pool
  // cannot cover waits forever: 64 / 224 hung every RoPE launch on an H100).
  static constexpr int kEntryRegs = 168;
  static constexpr int kProducerRegs = kRope ? 56 : 24;
  static constexpr int kConsumerRegs = kRope ? 224 : 240;
  static_assert(128 * kProducerRegs + 256 * kConsumerRegs <= kThreads * kEntryRegs,
                "setmaxnreg can only redistribute the registers held at entry");
  // RoPE: producer warps 1-3 rotate Q (warp 0 issues the copies).
  static constexpr int kRopeThreads = 96;
};

}  // namespace attnbench::cuda::flash

#endif  // ATTNBENCH_KERNELS_CUDA_FLASH_SM90_CONFIG_CUH_
