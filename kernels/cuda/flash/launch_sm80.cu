// Host side of the mma.sync kernel (kernel_sm80.cuh): the per-launch flags (which tensors may use
// 16-byte cp.async, which build runs), the tile row of kSm80Tiles a request runs on, and the
// launch. Every instantiation is listed in kTileLaunchers below, so the compile cost of this file
// (CI builds it for sm_80 and sm_90a on 2 cores) is visible at a glance.
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <utility>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/launch_support.h"
#include "kernels/cuda/common/score_mods.cuh"
#include "kernels/cuda/flash/configs.h"
#include "kernels/cuda/flash/kernel_sm80.cuh"
#include "kernels/cuda/flash/launchers.h"

namespace attnbench::cuda::flash {
namespace {

// cp.async moves 16 bytes: every row of the tensor must start 16-byte aligned.
bool RowsAligned16(const void* base, int heads, int dim) {
  return Aligned16(base) && dim % 8 == 0 && (static_cast<int64_t>(heads) * dim * 2) % 16 == 0;
}

}  // namespace

FlashFlags Sm80Flags(const AttentionArgs& args) {
  FlashFlags flags;
  const bool rope = (args.modifiers & kModifierRope) != 0;
  flags.async_q = !rope && RowsAligned16(args.q, args.heads_q, args.dim_qk);
  flags.async_k = !rope && RowsAligned16(args.k, args.heads_kv, args.dim_qk);
  flags.async_v = RowsAligned16(args.v, args.heads_kv, args.dim_v);
  flags.vector_o = RowsAligned16(args.o, args.heads_out, args.dim_v);
  flags.mods = ScoreModsOf(args);
  return flags;
}

dim3 Sm80Grid(const AttentionArgs& args, int tile) {
  const int64_t qtiles = (args.seq_q + kSm80BlockQ - 1) / kSm80BlockQ;
  return kSm80Tiles[tile].tiles_in_y ? FlashGrid<true>(args, qtiles)
                                     : FlashGrid<false>(args, qtiles);
}

namespace {

// Whether the request fits the kernel's common-case build (kGeneral = false): every load through
// cp.async (aligned rows, no RoPE), no score modifiers, an interval mask (none, causal, window).
bool CommonBuildOk(const AttentionArgs& args, const FlashFlags& flags) {
  return flags.async_q && flags.async_k && flags.async_v && flags.mods == kModsNone &&
         IsIntervalMask(args.mask) &&
         (args.modifiers & (kModifierScoreMod | kModifierMaskMod)) == 0;
}

template <typename T, int kTile>
cudaError_t LaunchTileStorage(const AttentionArgs& args, cudaStream_t stream) {
  using Cfg = Sm80Config<kTile>;
  static_assert(Cfg::kBr == kSm80BlockQ && Cfg::kThreads == 32 * kSm80Tiles[kTile].warps,
                "Sm80Grid's grid");
  const FlashFlags flags = Sm80Flags(args);
  auto kernel = FlashForwardKernel<T, Cfg, true>;
  if constexpr (kSm80Tiles[kTile].common_build) {
    if (CommonBuildOk(args, flags)) kernel = FlashForwardKernel<T, Cfg, false>;
  }
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (err != cudaSuccess) return err;
  const dim3 grid = Sm80Grid(args, kTile);
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(args, flags);
  return cudaGetLastError();
}

template <int kTile>
cudaError_t LaunchTile(const AttentionArgs& args, cudaStream_t stream) {
  static_assert(Sm80Config<kTile>::kSmemBytes == Sm80SmemBytes(kSm80Tiles[kTile]),
                "configs.h counts the same bytes");
  if (args.storage == Storage::kBFloat16)
    return LaunchTileStorage<__nv_bfloat16, kTile>(args, stream);
  return LaunchTileStorage<__half, kTile>(args, stream);
}

using TileLauncher = cudaError_t (*)(const AttentionArgs&, cudaStream_t);
template <size_t... kTiles>
constexpr std::array<TileLauncher, sizeof...(kTiles)> TileLaunchers(
    std::index_sequence<kTiles...>) {
  return {&LaunchTile<static_cast<int>(kTiles)>...};
}
// One entry per row of kSm80Tiles: (bf16, fp16) x (general build, and the common-case build
// where the row says so).
constexpr auto kTileLaunchers = TileLaunchers(std::make_index_sequence<kNumSm80Tiles>());

}  // namespace

bool Sm80CommonBuild(const AttentionArgs& args) {
  const int tile = PickTile(kSm80Tiles, args.dim_qk, args.dim_v);
  return tile >= 0 && kSm80Tiles[tile].common_build && CommonBuildOk(args, Sm80Flags(args));
}

cudaError_t LaunchSm80(const AttentionArgs& args, cudaStream_t stream) {
  const int tile = PickTile(kSm80Tiles, args.dim_qk, args.dim_v);
  if (tile < 0) return cudaErrorNotSupported;
  return kTileLaunchers[tile](args, stream);
}

}  // namespace attnbench::cuda::flash
