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
enum class MaskCode : int32_t { kNone = 0, kCausal = 1, kWindow = 2, kBlock = 3 };

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
};

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_COMMON_ATTENTION_ARGS_H_
