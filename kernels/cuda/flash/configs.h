// The dispatch tables of cuda_flash, one per axis, in one place: which head-dim pairs are
// compiled and with which tiles, for the Hopper kernel (sm_90a) and the mma.sync kernel (sm_80
// and newer), and which storage types. The launchers instantiate exactly these rows, the support
// allow-lists (support.h) and GetCapabilities read them, and kernel names are made from them.
// Plain C++ (constexpr), so host code, device code and tests share it.
#ifndef ATTNBENCH_KERNELS_CUDA_FLASH_CONFIGS_H_
#define ATTNBENCH_KERNELS_CUDA_FLASH_CONFIGS_H_

#include <cstddef>

#include "kernels/cuda/common/attention_args.h"

namespace attnbench::cuda::flash {

// Masks the Hopper kernel runs from lists of kept K/V tiles built once per problem from the spec's
// tile coverage (kernels/spec/tile_plan.h), testing pairs only in partly kept tiles with the
// mask's device predicate; the interval masks (none, causal, window) need no list.
constexpr bool UsesTileLists(MaskCode mask) { return mask == MaskCode::kBlock; }
// Whether the Hopper kernel that runs `a` walks tile lists: a block-sparse mask, or a client
// mask_mod (lists built from its tile classes intersected with the mask's coverage; flash_rtc.h).
constexpr bool Sm90WalksTileLists(const AttentionArgs& a) {
  return UsesTileLists(a.mask) || (a.modifiers & kModifierMaskMod) != 0;
}
// Masks that keep one contiguous key interval per query row: their tile policy needs no lists.
constexpr bool IsIntervalMask(MaskCode mask) {
  return mask == MaskCode::kNone || mask == MaskCode::kCausal || mask == MaskCode::kWindow;
}

// Storage types both fused kernels compile for.
inline constexpr Storage kFlashStorages[] = {Storage::kFloat16, Storage::kBFloat16};

// Hopper tiles: 128 query rows (two consumer warpgroups of 64) against K/V tiles of block_kv keys,
// `stages` K/V buffers deep. K/V tiles shrink as the head dims grow so the consumers' registers
// (O: D_v / 2, S: block_kv / 2, P: block_kv / 4 per thread) stay under 240, and shared memory
// (Q + stages x (K + V) at 2 bytes an element) under 227 KB. Ordered by cost: a request runs on
// the first row whose dims hold both of its own (smaller dims zero-padded by the TMA loads).
struct Sm90Tile {
  int dim_qk;
  int dim_v;
  int block_kv;
  int stages;
};
inline constexpr Sm90Tile kSm90Tiles[] = {
    {16, 16, 128, 3},    //   29 KB (32-byte swizzle: the SQA paper's head dim)
    {32, 32, 128, 3},    //   57 KB (64-byte swizzle)
    {64, 64, 128, 3},    //  112 KB
    {96, 96, 128, 3},    //  168 KB (64-byte swizzle: 96 is not a multiple of 64 elements)
    {128, 128, 128, 2},  //  160 KB
    {192, 128, 128, 2},  //  208 KB
    {192, 192, 96, 2},   //  192 KB
    {256, 256, 64, 2},   //  192 KB
};
inline constexpr int kNumSm90Tiles = sizeof(kSm90Tiles) / sizeof(kSm90Tiles[0]);
inline constexpr int kSm90BlockQ = 128;
inline constexpr int kSm90Threads = 384;  // a producer and two consumer warpgroups
// How the Hopper kernel evaluates the softcap's tanh: two scores per tanh.approx.f16x2 (true) or
// one per tanh.approx.f32 (false). Chosen by measurement (bench/flash_dev/NOTES.md, softcap).
inline constexpr bool kSm90PackedTanh = false;
// Of every 4 column groups of a score tile, how many take the softmax's exp2 on the FMA pipes
// (common/poly_exp2.cuh) instead of the MUFU, by tile row and softcap (whose tanh also loads the
// MUFU). Pays where the MUFU, not the tensor cores, bounds a tile; chosen by measurement
// (bench/flash_dev/NOTES.md, "exp2 on the FMA pipes").
constexpr int Sm90PolyExp2Of4(const Sm90Tile& tile, bool softcap) {
  (void)tile;
  (void)softcap;
  return 0;
}

// mma.sync tiles (flash/mainloop_sm80.cuh, FlashConfig): 128 query rows as `warps` warps of
// m_tiles x 16 rows; Q fragments kept in registers where they fit (D = 64); `tiles_in_y` lays
// query tiles along the grid's y (heaviest causal tiles of all heads first: measured faster for
// causal masks at D = 64 only). Same ordering rule as kSm90Tiles. Tuned on an H100
// (bench/flash_dev/NOTES.md).
struct Sm80Tile {
  int dim_qk;
  int dim_v;
  int warps;
  int m_tiles;
  int block_kv;
  bool q_in_regs;
  int min_blocks;
  bool tiles_in_y;
  bool common_build;  // also compiled without the general paths (flash/launch_sm80.cu)
};
inline constexpr Sm80Tile kSm80Tiles[] = {
    {16, 16, 4, 2, 64, true, 2, false, false},    {32, 32, 4, 2, 64, true, 2, false, false},
    {64, 64, 4, 2, 64, true, 2, true, true},      {96, 96, 4, 2, 64, false, 2, false, true},
    {128, 128, 4, 2, 64, false, 2, false, true},  {192, 128, 8, 1, 64, false, 1, false, false},
    {192, 192, 8, 1, 64, false, 1, false, false}, {256, 256, 8, 1, 32, false, 1, false, false},
};
inline constexpr int kNumSm80Tiles = sizeof(kSm80Tiles) / sizeof(kSm80Tiles[0]);
inline constexpr int kSm80BlockQ = 128;

// Dynamic shared memory of one block (the kernels' configs static_assert the same numbers).
// Hopper: Q + stages x (K + V) tiles of 2-byte elements, 8 bytes per mbarrier (3 + 4 per stage),
// and 1024 bytes to align the base for the 128-byte swizzle.
constexpr int Sm90SmemBytes(const Sm90Tile& t) {
  return kSm90BlockQ * t.dim_qk * 2 + t.stages * t.block_kv * (t.dim_qk + t.dim_v) * 2 +
         8 * (3 + 4 * t.stages) + 1024;
}
// mma.sync: the Q tile (also staging O) and two K and V stages, rows padded by 8 elements.
constexpr int Sm80SmemBytes(const Sm80Tile& t) {
  const int q_stride = (t.dim_qk > t.dim_v ? t.dim_qk : t.dim_v) + 8;
  return (kSm80BlockQ * q_stride + 2 * t.block_kv * (t.dim_qk + 8) +
          2 * t.block_kv * (t.dim_v + 8)) *
         2;
}

// Index of the first row of `tiles` holding both dims, or -1.
template <typename Tile, size_t kN>
constexpr int PickTile(const Tile (&tiles)[kN], int dim_qk, int dim_v) {
  for (size_t i = 0; i < kN; ++i) {
    if (dim_qk <= tiles[i].dim_qk && dim_v <= tiles[i].dim_v) return static_cast<int>(i);
  }
  return -1;
}

}  // namespace attnbench::cuda::flash

#endif  // ATTNBENCH_KERNELS_CUDA_FLASH_CONFIGS_H_
