// The Hopper kernel's launch: the TMA encoder and maps, the grid rule, and the dispatch of a
// request to its tile row (each row's instantiations live in sm90_tile<N>.cu).
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/launch_support.h"
#include "kernels/cuda/flash/configs.h"
#include "kernels/cuda/flash/launch_sm90.cuh"
#include "kernels/cuda/flash/launchers.h"

namespace attnbench::cuda::flash {

PFN_cuTensorMapEncodeTiled_v12000 EncodeTiledFn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult found;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      return static_cast<PFN_cuTensorMapEncodeTiled_v12000>(nullptr);
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(ptr);
  }();
  return fn;
}

bool EncodeMap(CUtensorMap* map, const void* base, Storage storage, int batch, int64_t seq,
               int heads, int dim, int panel, int rows, int swizzle_bytes) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = EncodeTiledFn();
  if (encode == nullptr) return false;
  const cuuint64_t sizes[4] = {static_cast<cuuint64_t>(dim), static_cast<cuuint64_t>(heads),
                               static_cast<cuuint64_t>(seq), static_cast<cuuint64_t>(batch)};
  const cuuint64_t row_bytes = static_cast<cuuint64_t>(dim) * 2;
  const cuuint64_t strides[3] = {row_bytes, row_bytes * heads, row_bytes * heads * seq};
  const cuuint32_t box[4] = {static_cast<cuuint32_t>(panel), 1, static_cast<cuuint32_t>(rows), 1};
  const cuuint32_t element_strides[4] = {1, 1, 1, 1};
  const CUtensorMapDataType type = storage == Storage::kBFloat16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                                                 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  const CUtensorMapSwizzle swizzle = swizzle_bytes == 128  ? CU_TENSOR_MAP_SWIZZLE_128B
                                     : swizzle_bytes == 64 ? CU_TENSOR_MAP_SWIZZLE_64B
                                                           : CU_TENSOR_MAP_SWIZZLE_32B;
  return encode(map, type, 4, const_cast<void*>(base), sizes, strides, box, element_strides,
                CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// Defined (instantiated) in sm90_tile<N>.cu: this file only takes their addresses.
extern template cudaError_t LaunchSm90Tile<0>(const AttentionArgs&, cudaStream_t, bool);
extern template cudaError_t LaunchSm90Tile<1>(const AttentionArgs&, cudaStream_t, bool);
extern template cudaError_t LaunchSm90Tile<2>(const AttentionArgs&, cudaStream_t, bool);
extern template cudaError_t LaunchSm90Tile<3>(const AttentionArgs&, cudaStream_t, bool);
extern template cudaError_t LaunchSm90Tile<4>(const AttentionArgs&, cudaStream_t, bool);
extern template cudaError_t LaunchSm90Tile<5>(const AttentionArgs&, cudaStream_t, bool);
extern template cudaError_t LaunchSm90Tile<6>(const AttentionArgs&, cudaStream_t, bool);
extern template cudaError_t LaunchSm90Tile<7>(const AttentionArgs&, cudaStream_t, bool);
static_assert(kNumSm90Tiles == 8, "one sm90_tile<N>.cu and one extern template per tile row");

namespace {

using TileLauncher = cudaError_t (*)(const AttentionArgs&, cudaStream_t, bool);

template <size_t... kTiles>
constexpr std::array<TileLauncher, sizeof...(kTiles)> TileLaunchers(
    std::index_sequence<kTiles...>) {
  return {&LaunchSm90Tile<static_cast<int>(kTiles)>...};
}
// One entry per row of kSm90Tiles, in order.
constexpr auto kTileLaunchers = TileLaunchers(std::make_index_sequence<kNumSm90Tiles>());

}  // namespace

cudaError_t Sm90Blocks(const AttentionArgs& args, bool persistent, unsigned* blocks) {
  const int64_t items = (args.seq_q + kSm90BlockQ - 1) / kSm90BlockQ * args.heads_out * args.batch;
  int64_t n = items;
  if (persistent) {
    int sms = 0;
    if (cudaError_t e = CachedDeviceAttribute<cudaDevAttrMultiProcessorCount>(&sms);
        e != cudaSuccess) {
      return e;
    }
    n = std::min<int64_t>(items, sms);
    // An item order balances the work of exactly the grid it was built for.
    if (args.item_order != nullptr) {
      if (args.item_order_blocks <= 0 || args.item_order_blocks > items) {
        return cudaErrorInvalidValue;
      }
      n = args.item_order_blocks;
    }
  }
  if (n <= 0 || n > 0x7fffffff) return cudaErrorInvalidConfiguration;
  *blocks = static_cast<unsigned>(n);
  return cudaSuccess;
}

cudaError_t PrepareSm90(const AttentionArgs& args, cudaStream_t stream, Sm90Grid grid,
                        bool tile_lists, Sm90Launch* launch) {
  const int tile = PickTile(kSm90Tiles, args.dim_qk, args.dim_v);
  if (tile < 0) return cudaErrorNotSupported;
  if (tile_lists &&
      (args.block_tiles == nullptr || args.block_tile_offsets == nullptr ||
       args.block_tile_q != kSm90BlockQ || args.block_tile_kv != kSm90Tiles[tile].block_kv)) {
    return cudaErrorInvalidValue;  // the lists this kernel walks were not built for its tiles
  }
  launch->tile = tile;
  // Persistent where every item has the same short work, or where a balanced item order was
  // built for the block lists; per tile otherwise (launchers.h).
  launch->persistent = grid == Sm90Grid::kPersistent ||
                       (grid == Sm90Grid::kAuto &&
                        ((args.mask == MaskCode::kNone && !tile_lists && args.seq_kv <= 2048) ||
                         args.item_order != nullptr));
  launch->args = args;
  if ((args.modifiers & kModifierRope) != 0) {
    // RoPE: K rotated once into the workspace, then the kernel reads it as K (and rotates Q).
    if (args.workspace == nullptr) return cudaErrorInvalidValue;
    if (cudaError_t e = RotateKeys(args, args.workspace, stream); e != cudaSuccess) return e;
    launch->args.k = args.workspace;
  }
  return Sm90Blocks(launch->args, launch->persistent, &launch->blocks);
}

cudaError_t LaunchSm90(const AttentionArgs& args, cudaStream_t stream, Sm90Grid grid) {
  Sm90Launch launch;
  if (cudaError_t e = PrepareSm90(args, stream, grid, UsesTileLists(args.mask), &launch);
      e != cudaSuccess) {
    return e;
  }
  return kTileLaunchers[launch.tile](launch.args, stream, launch.persistent);
}

namespace {

using MapsGetter = const sm90_detail::TensorMaps* (*)(const AttentionArgs&);
template <size_t... kTiles>
constexpr std::array<MapsGetter, sizeof...(kTiles)> MapsGetters(std::index_sequence<kTiles...>) {
  // The maps depend on the tile's shape only, not on RoPE (which changes registers).
  return {&sm90_detail::MapsFor<Sm90Config<static_cast<int>(kTiles), false>>...};
}
constexpr auto kMapsGetters = MapsGetters(std::make_index_sequence<kNumSm90Tiles>());

}  // namespace

bool Sm90TensorMaps(int tile, const AttentionArgs& args, CUtensorMap* q, CUtensorMap* k,
                    CUtensorMap* v) {
  if (tile < 0 || tile >= kNumSm90Tiles) return false;
  const sm90_detail::TensorMaps* maps = kMapsGetters[tile](args);
  if (maps == nullptr) return false;
  *q = maps->map_q;
  *k = maps->map_k;
  *v = maps->map_v;
  return true;
}

// Whether this binary carries sm_90a code for the kernel (a build for other targets has only the
// empty body compiled for them).
bool HasSm90Code() {
  static const bool has = [] {
    cudaFuncAttributes attr{};
    auto kernel =
        Sm90ForwardKernel<__nv_bfloat16, Sm90Config<0, false>, Sm90Policy<kModsNone, false, false>>;
    return cudaFuncGetAttributes(&attr, kernel) == cudaSuccess && attr.binaryVersion == 90;
  }();
  return has;
}

bool HasTmaEncoder() { return EncodeTiledFn() != nullptr; }

}  // namespace attnbench::cuda::flash
