// Host side of cuda_flash's backward on mma.sync (backward_sm80.cuh): the forward that keeps what
// the backward reads (the sm_80 forward kernel's saving build, kernel_sm80.cuh kSave), the float32
// dQ accumulator's size, and the backward's four steps in order on one stream. Every
// instantiation is listed here: the saving forward for the forward tiles the backward's head dims
// reach (kSm80Tiles' first rows), the backward for each row of kSm80BackwardTiles, in bf16 and
// fp16.
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/backward_args.h"
#include "kernels/cuda/common/backward_row_terms.cuh"
#include "kernels/cuda/common/launch_support.h"
#include "kernels/cuda/flash/backward_configs.h"
#include "kernels/cuda/flash/backward_sm80.cuh"
#include "kernels/cuda/flash/configs.h"
#include "kernels/cuda/flash/kernel_sm80.cuh"
#include "kernels/cuda/flash/launchers.h"

namespace attnbench::cuda::flash {
namespace {

// The forward tiles the saving build is compiled for: kSm80Tiles' rows up to the one holding the
// backward's largest tile, so every head-dim pair the backward holds lands on one of them.
constexpr int kSavingForwardTiles =
    PickTile(kSm80Tiles, kSm80BackwardTiles[kNumSm80BackwardTiles - 1].dim_qk,
             kSm80BackwardTiles[kNumSm80BackwardTiles - 1].dim_v) +
    1;
static_assert(kSavingForwardTiles > 0, "the saving forward reaches every backward head dim");

bool RowsAligned16(const void* base, int heads, int dim) {
  return Aligned16(base) && dim % 8 == 0 && (static_cast<int64_t>(heads) * dim * 2) % 16 == 0;
}

constexpr int kRowThreads = 256;  // the row-terms and dq kernels: a warp per row
constexpr int64_t kMaxRowBlocks = 65535;

unsigned RowBlocks(int64_t rows) {
  return static_cast<unsigned>(std::min<int64_t>((rows + 7) / 8, kMaxRowBlocks));
}

template <typename T, int kTile>
cudaError_t LaunchSavingTile(const AttentionArgs& args, const BackwardArgs& g,
                             cudaStream_t stream) {
  using Cfg = Sm80Config<kTile>;
  FlashFlags flags = Sm80Flags(args);
  flags.lse = g.lse;
  flags.out_f32 = g.out;
  auto kernel = FlashForwardKernel<T, Cfg, true, NoExpressions, true>;
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (err != cudaSuccess) return err;
  kernel<<<Sm80Grid(args, kTile), Cfg::kThreads, Cfg::kSmemBytes, stream>>>(args, flags);
  return cudaGetLastError();
}

template <int kTile>
cudaError_t LaunchSaving(const AttentionArgs& args, const BackwardArgs& g, cudaStream_t stream) {
  if (args.storage == Storage::kBFloat16) {
    return LaunchSavingTile<__nv_bfloat16, kTile>(args, g, stream);
  }
  return LaunchSavingTile<__half, kTile>(args, g, stream);
}

template <typename T, int kTile>
cudaError_t LaunchBackwardTile(const AttentionArgs& args, const BackwardArgs& g, float* acc,
                               cudaStream_t stream) {
  using Cfg = Sm80BackwardConfig<kTile>;
  static_assert(Cfg::kSmemBytes == Sm80BackwardSmemBytes(kSm80BackwardTiles[kTile]),
                "backward_configs.h counts the same bytes");
  const bool rope = (args.modifiers & kModifierRope) != 0;
  FlashBackwardParams p;
  p.dq_accum = acc;
  p.forward_block_kv = kSm80Tiles[PickTile(kSm80Tiles, args.dim_qk, args.dim_v)].block_kv;
  p.async_q = !rope && RowsAligned16(args.q, args.heads_q, args.dim_qk);
  p.async_k = !rope && RowsAligned16(args.k, args.heads_kv, args.dim_qk);
  p.async_v = RowsAligned16(args.v, args.heads_kv, args.dim_v);
  p.async_do = RowsAligned16(g.grad_out, args.heads_out, args.dim_v);

  const int64_t output_rows = static_cast<int64_t>(args.batch) * args.heads_out * args.seq_q;
  const int64_t query_rows = static_cast<int64_t>(args.batch) * args.seq_q * args.heads_q;
  cudaError_t err = cudaMemsetAsync(acc, 0, Sm80BackwardWorkspaceBytes(args), stream);
  if (err != cudaSuccess) return err;
  BackwardRowTermsKernel<T, kRowThreads / 32>
      <<<RowBlocks(output_rows), kRowThreads, 0, stream>>>(args, g);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  auto kernel = FlashBackwardKernel<T, Cfg>;
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>((args.seq_kv + Cfg::kBc - 1) / Cfg::kBc),
                  static_cast<unsigned>(args.heads_kv), static_cast<unsigned>(args.batch));
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(args, g, p);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  FlashBackwardDqKernel<T><<<RowBlocks(query_rows), kRowThreads, 0, stream>>>(args, g, acc);
  return cudaGetLastError();
}

template <int kTile>
cudaError_t LaunchBackwardRow(const AttentionArgs& args, const BackwardArgs& g, float* acc,
                              cudaStream_t stream) {
  if (args.storage == Storage::kBFloat16) {
    return LaunchBackwardTile<__nv_bfloat16, kTile>(args, g, acc, stream);
  }
  return LaunchBackwardTile<__half, kTile>(args, g, acc, stream);
}

using SavingLauncher = cudaError_t (*)(const AttentionArgs&, const BackwardArgs&, cudaStream_t);
template <size_t... kTiles>
constexpr std::array<SavingLauncher, sizeof...(kTiles)> SavingLaunchers(
    std::index_sequence<kTiles...>) {
  return {&LaunchSaving<static_cast<int>(kTiles)>...};
}
constexpr auto kSavingLaunchers = SavingLaunchers(std::make_index_sequence<kSavingForwardTiles>());

using BackwardLauncher = cudaError_t (*)(const AttentionArgs&, const BackwardArgs&, float*,
                                         cudaStream_t);
template <size_t... kTiles>
constexpr std::array<BackwardLauncher, sizeof...(kTiles)> BackwardLaunchers(
    std::index_sequence<kTiles...>) {
  return {&LaunchBackwardRow<static_cast<int>(kTiles)>...};
}
constexpr auto kBackwardLaunchers =
    BackwardLaunchers(std::make_index_sequence<kNumSm80BackwardTiles>());

bool BackwardArgsComplete(const BackwardArgs& g) {
  return g.grad_out != nullptr && g.out != nullptr && g.lse != nullptr && g.row_terms != nullptr &&
         g.dq != nullptr && g.dk != nullptr && g.dv != nullptr && g.query_head_offsets != nullptr &&
         g.query_heads != nullptr && g.kv_head_offsets != nullptr && g.kv_heads != nullptr;
}

}  // namespace

size_t Sm80BackwardWorkspaceBytes(const AttentionArgs& args) {
  return static_cast<size_t>(args.batch) * static_cast<size_t>(args.seq_q) *
         static_cast<size_t>(args.heads_q) * static_cast<size_t>(args.dim_qk) * sizeof(float);
}

cudaError_t LaunchSm80ForwardSaving(const AttentionArgs& args, const BackwardArgs& g,
                                    cudaStream_t stream) {
  const int tile = PickTile(kSm80Tiles, args.dim_qk, args.dim_v);
  if (tile < 0 || tile >= kSavingForwardTiles) return cudaErrorNotSupported;
  if (g.lse == nullptr || g.out == nullptr) return cudaErrorInvalidValue;
  return kSavingLaunchers[tile](args, g, stream);
}

cudaError_t LaunchSm80Backward(const AttentionArgs& args, const BackwardArgs& g, void* workspace,
                               cudaStream_t stream) {
  const int tile = PickTile(kSm80BackwardTiles, args.dim_qk, args.dim_v);
  const int forward_tile = PickTile(kSm80Tiles, args.dim_qk, args.dim_v);
  if (tile < 0 || forward_tile < 0) return cudaErrorNotSupported;
  if (!BackwardArgsComplete(g) || workspace == nullptr) return cudaErrorInvalidValue;
  return kBackwardLaunchers[tile](args, g, static_cast<float*>(workspace), stream);
}

}  // namespace attnbench::cuda::flash
