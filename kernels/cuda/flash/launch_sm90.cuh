// Host side of the Hopper kernel for one tile row of kSm90Tiles: its TMA tensor maps (encoded
// once per input set), the choice of policy instantiation (score modifiers x RoPE x block list),
// the grid, and the launch. Each sm90_tile<N>.cu instantiates LaunchSm90Tile<N>, so the tile
// rows compile in parallel and one file's cost is visible at a glance.
#ifndef ATTNBENCH_KERNELS_CUDA_FLASH_LAUNCH_SM90_CUH_
#define ATTNBENCH_KERNELS_CUDA_FLASH_LAUNCH_SM90_CUH_

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/launch_support.h"
#include "kernels/cuda/common/score_mods.cuh"
#include "kernels/cuda/flash/configs.h"
#include "kernels/cuda/flash/kernel_sm90.cuh"
#include "kernels/cuda/flash/sm90_config.cuh"

namespace attnbench::cuda::flash {

// cuTensorMapEncodeTiled from the driver, found through the runtime so that nothing links
// libcuda directly (the server must start on machines without a driver). Null when missing.
PFN_cuTensorMapEncodeTiled_v12000 EncodeTiledFn();

// A BSHD tensor [batch, seq, heads, dim] as a 4-d TMA map (dim, heads, seq, batch) read in boxes
// of `panel` elements x 1 head x `rows` positions, swizzled by `swizzle_bytes` (128, 64 or 32).
// Rows past `seq` and columns past `dim` read as zeros: the tile edges and padded head dims need
// it.
bool EncodeMap(CUtensorMap* map, const void* base, Storage storage, int batch, int64_t seq,
               int heads, int dim, int panel, int rows, int swizzle_bytes);

// The grid of a launch (launchers.h, Sm90Blocks): one block per work item, or (persistent) one per
// multiprocessor looping over the items, or as many as args' item order was built for.
cudaError_t Sm90Blocks(const AttentionArgs& args, bool persistent, unsigned* blocks);

// cuda_flash's entry point for tile row kTile (sm90_tile<kTile>.cu).
template <int kTile>
cudaError_t LaunchSm90Tile(const AttentionArgs& args, cudaStream_t stream, bool persistent);

// ---- implementation ---------------------------------------------------------------------------

namespace sm90_detail {

// The Q, K and V maps of one launch and what they were encoded from.
struct TensorMaps {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  Storage storage = Storage::kFloat16;
  int batch = 0, heads_q = 0, heads_kv = 0, dim_qk = 0, dim_v = 0;
  int64_t seq_q = 0, seq_kv = 0;
  CUtensorMap map_q, map_k, map_v;

  bool Matches(const AttentionArgs& a) const {
    return q == a.q && k == a.k && v == a.v && storage == a.storage && batch == a.batch &&
           heads_q == a.heads_q && heads_kv == a.heads_kv && seq_q == a.seq_q &&
           seq_kv == a.seq_kv && dim_qk == a.dim_qk && dim_v == a.dim_v;
  }
};

// The maps for `args`, encoded once per input set: a timed loop launches the same few input sets
// (up to 4 rotated copies) again and again, and encoding three maps is host work that would sit
// inside the timed region. Per thread (each device runs on its own worker), per tile row. The
// entries live on the heap: static TLS is carved out of every thread's stack in the process, and
// 4 KB per tile row and RoPE flag (64 KB with 8 rows) overflowed the 100 KB stacks of the metrics
// server's civetweb workers (a segfault on every scrape, tests/server/binary_test.cc).
template <typename Cfg>
const TensorMaps* MapsFor(const AttentionArgs& args) {
  constexpr int kEntries = 8;
  thread_local std::unique_ptr<std::array<TensorMaps, kEntries>> cache;
  thread_local int next = 0;
  if (cache == nullptr) cache = std::make_unique<std::array<TensorMaps, kEntries>>();
  for (const TensorMaps& m : *cache) {
    if (m.q != nullptr && m.Matches(args)) return &m;
  }
  TensorMaps& m = (*cache)[next];
  next = (next + 1) % kEntries;
  m.q = nullptr;  // invalid until every map is encoded
  using QK = typename Cfg::QK;
  using V = typename Cfg::V;
  if (!EncodeMap(&m.map_q, args.q, args.storage, args.batch, args.seq_q, args.heads_q, args.dim_qk,
                 QK::kPanel, Cfg::kBr, QK::kSwizzleBytes) ||
      !EncodeMap(&m.map_k, args.k, args.storage, args.batch, args.seq_kv, args.heads_kv,
                 args.dim_qk, QK::kPanel, Cfg::kBc, QK::kSwizzleBytes) ||
      !EncodeMap(&m.map_v, args.v, args.storage, args.batch, args.seq_kv, args.heads_kv, args.dim_v,
                 V::kPanel, Cfg::kBc, V::kSwizzleBytes)) {
    return nullptr;
  }
  m.k = args.k;
  m.v = args.v;
  m.storage = args.storage;
  m.batch = args.batch;
  m.heads_q = args.heads_q;
  m.heads_kv = args.heads_kv;
  m.dim_qk = args.dim_qk;
  m.dim_v = args.dim_v;
  m.seq_q = args.seq_q;
  m.seq_kv = args.seq_kv;
  m.q = args.q;
  return &m;
}

// Launches the kernel of tile row kTile compiled with Policy (an Sm90Policy) on args. Also what
// bench/flash_dev calls to time a policy the route does not pick.
template <typename T, int kTile, typename Policy>
cudaError_t LaunchPolicy(const AttentionArgs& args, cudaStream_t stream, bool persistent) {
  using Cfg = Sm90Config<kTile, Policy::kRope>;
  const TensorMaps* maps = MapsFor<Cfg>(args);
  if (maps == nullptr) return cudaErrorInvalidValue;
  auto kernel = Sm90ForwardKernel<T, Cfg, Policy>;
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (err != cudaSuccess) return err;
  static_assert(Cfg::kBr == kSm90BlockQ && Cfg::kThreads == kSm90Threads, "Sm90Blocks' grid");
  unsigned blocks = 0;
  if (cudaError_t e = Sm90Blocks(args, persistent, &blocks); e != cudaSuccess) return e;
  kernel<<<dim3(blocks), Cfg::kThreads, Cfg::kSmemBytes, stream>>>(maps->map_q, maps->map_k,
                                                                   maps->map_v, args);
  return cudaGetLastError();
}

template <typename T, int kTile, int kMods>
cudaError_t LaunchMods(const AttentionArgs& args, cudaStream_t stream, bool persistent) {
  const bool rope = (args.modifiers & kModifierRope) != 0;
  const bool block = UsesTileLists(args.mask);
  if (rope) {
    return block ? LaunchPolicy<T, kTile, Sm90Policy<kMods, true, true>>(args, stream, persistent)
                 : LaunchPolicy<T, kTile, Sm90Policy<kMods, true, false>>(args, stream, persistent);
  }
  return block ? LaunchPolicy<T, kTile, Sm90Policy<kMods, false, true>>(args, stream, persistent)
               : LaunchPolicy<T, kTile, Sm90Policy<kMods, false, false>>(args, stream, persistent);
}

template <typename T, int kTile>
cudaError_t LaunchStorage(const AttentionArgs& args, cudaStream_t stream, bool persistent) {
  switch (ScoreModsOf(args)) {
    case kModsNone:
      return LaunchMods<T, kTile, kModsNone>(args, stream, persistent);
    case kModsAlibi:
      return LaunchMods<T, kTile, kModsAlibi>(args, stream, persistent);
    case kModsSoftcap:
      return LaunchMods<T, kTile, kModsSoftcap>(args, stream, persistent);
    default:
      return LaunchMods<T, kTile, kModsAlibi | kModsSoftcap>(args, stream, persistent);
  }
}

}  // namespace sm90_detail

template <int kTile>
cudaError_t LaunchSm90Tile(const AttentionArgs& args, cudaStream_t stream, bool persistent) {
  if (args.storage == Storage::kBFloat16) {
    return sm90_detail::LaunchStorage<__nv_bfloat16, kTile>(args, stream, persistent);
  }
  return sm90_detail::LaunchStorage<__half, kTile>(args, stream, persistent);
}

}  // namespace attnbench::cuda::flash

#endif  // ATTNBENCH_KERNELS_CUDA_FLASH_LAUNCH_SM90_CUH_
