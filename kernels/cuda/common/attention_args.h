// What every CUDA attention kernel reads: device pointers, sizes and the mask and score modifiers
// of docs/variants.md reduced to plain numbers and small device tables. DeviceProblem
// (device_problem.h) builds it on the host from a Problem; kernels take it by value. Plain C++
// with no Abseil, CUDA or protobuf types, so both .cc and .cu files include it cheaply.
#ifndef ATTNBENCH_KERNELS_CUDA_COMMON_ATTENTION_ARGS_H_
#define ATTNBENCH_KERNELS_CUDA_COMMON_ATTENTION_ARGS_H_

#include <cstdint>

namespace attnbench::cuda {

// How Q, K, V and O are stored. Math is float32 whatever the storage.
enum class Storage : int32_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// kBlock covers both block-sparse masks: the kept blocks are a bitmap drawn on the host (the
// probabilistic mask draws per (batch, output head), the explicit one shares one bitmap).
// kUnknown is what a mask no code stands for becomes (ShapeArgs): every kernel's allow-list
// refuses it.
enum class MaskCode : int32_t { kNone = 0, kCausal = 1, kWindow = 2, kBlock = 3, kUnknown = 4 };

// AttentionArgs::modifiers: bit 1 << m for each Modifier m (kernels/spec/modifiers.h) the problem
// enables; ShapeArgs static_asserts the numbering. A kernel refuses any bit its allow-list lacks.
inline constexpr uint32_t kModifierRope = 1u << 0;
inline constexpr uint32_t kModifierAlibi = 1u << 1;
inline constexpr uint32_t kModifierSoftcap = 1u << 2;
// Client expressions (§4b): only cuda_flash's NVRTC builds run them (flash/flash_rtc.h).
inline constexpr uint32_t kModifierScoreMod = 1u << 3;
inline constexpr uint32_t kModifierMaskMod = 1u << 4;

// Set in a block_tiles entry when the tile is only partly kept.
inline constexpr int32_t kTilePartial = -2147483647 - 1;  // the sign bit

struct AttentionArgs {
  // Row-major BSHD tensors of `storage`: Q [B, S_q, H_q, D_qk], K [B, S_kv, H_kv, D_qk],
  // V [B, S_kv, H_kv, D_v], O [B, S_q, H_out, D_v]. No padding between rows: the stride of a token
  // is heads * dim elements, so rows are 16-byte aligned only when heads * dim * bytes is.
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;
  Storage storage = Storage::kFloat16;

  int32_t batch = 0;
  int64_t seq_q = 0;
  int64_t seq_kv = 0;
  int32_t heads_q = 0;
  int32_t heads_kv = 0;
  int32_t heads_out = 0;
  int32_t dim_qk = 0;
  int32_t dim_v = 0;
  // Device array of heads_out (query head, kv head) pairs: head_map[2h], head_map[2h + 1].
  const int32_t* head_map = nullptr;
  float scale = 0;  // multiplies <q, k> before the modifiers

  // Mask (§3). Query i sits at key position i' = i + offset, offset = S_kv - S_q.
  MaskCode mask = MaskCode::kNone;
  int64_t offset = 0;
  // kWindow keeps i' - left <= j <= i' + right; a negative bound is unbounded on that side.
  int64_t window_left = -1;
  int64_t window_right = -1;
  // kBlock keeps (i, j) when bit (i / block_q, j / block_k) of its bitmap is set (and j <= i'
  // when block_causal). Bitmap bytes are 0 or 1, row-major [block_rows][block_cols]; with
  // block_per_head there is one bitmap per (b, h) at ((b * heads_out + h) * block_rows) rows.
  const uint8_t* block_bitmap = nullptr;
  int32_t block_q = 1;
  int32_t block_k = 1;
  int32_t block_rows = 0;
  int32_t block_cols = 0;
  bool block_per_head = false;
  bool block_causal = false;
  // The same mask as lists of kept K/V tiles for a kernel that walks them instead of testing
  // tiles (the Hopper fused kernel): for query tile qt of (b, h), tiles block_tiles[k] for k in
  // [block_tile_offsets[p], block_tile_offsets[p + 1]), p = (b * heads_out + h) * qtiles + qt
  // (p = qt when the lists are shared by every (b, h): !block_per_head), tiles of
  // block_tile_q x block_tile_kv pairs. An entry is the K/V tile index, with kTilePartial set when
  // some pair of the tile is hidden (the kernel then masks per element). Built once per problem
  // on the host (kernels/spec/tile_plan.h); null when no kernel needs them.
  const int32_t* block_tiles = nullptr;
  const int64_t* block_tile_offsets = nullptr;
  int32_t block_tile_q = 0;
  int32_t block_tile_kv = 0;

  // The order in which a grid takes work items (flash/item_order.h): when set, item
  // item_order[index] is worked where item `index` would be, and a persistent grid has exactly
  // item_order_blocks blocks (the order balances their work for that many). Null: natural order.
  const int32_t* item_order = nullptr;
  int32_t item_order_blocks = 0;

  // The score modifiers enabled (kModifier* bits), whatever the pointers below hold: support
  // checks run before any device memory exists.
  uint32_t modifiers = 0;

  // RoPE (§4.1) on q and k, rotate-half over the first rope_dims dimensions: element m pairs with
  // m + rope_dims / 2 at angle pos * inv_freq[m]. The table holds (cos, sin) evaluated in double
  // for every position a query (i') or key (j) takes: rope_cos_sin[2 * (pos * (rope_dims / 2) +
  // m)] = cos, [... + 1] = sin. When S_q > S_kv the first queries sit at negative positions; the
  // pointer then points into the table's allocation so those negative indices are valid too.
  // Null: no RoPE.
  const float* rope_cos_sin = nullptr;
  int32_t rope_dims = 0;

  // ALiBi (§4.2): s += alibi_slopes[h] * (j - i'). Null: no ALiBi.
  const float* alibi_slopes = nullptr;
  // Softcap (§4.3): s = softcap * tanh(s / softcap). Zero: none.
  float softcap = 0;

  // Client score_mod / mask_mod (§4b): a device ExpressionArgs (common/expr_hooks.cuh) that only
  // cuda_flash's NVRTC-built kernels read. Null otherwise.
  const void* expressions = nullptr;

  // Device scratch a kernel needs beside its inputs and output, at least the bytes its launcher
  // asks for (cuda_flash: flash::WorkspaceBytes, e.g. the Hopper kernel's RoPE-rotated K); the
  // launch refuses with cudaErrorInvalidValue when it is needed and null.
  void* workspace = nullptr;
};

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_COMMON_ATTENTION_ARGS_H_
