// What a CUDA decode kernel reads instead of AttentionArgs::k and ::v when the decode cache is
// paged or quantized (docs/variants.md §5): the pools of kernels/spec/kv_cache_store.h uploaded
// as they are (rows slot * H_kv + head, a slot being physical page * page_size + offset), the
// page table and the token ranges of each format. Keys in the cache are already rotated by RoPE.
// DeviceKvCache (backend/device_kv_cache.h) builds it. Plain C++ like attention_args.h.
#ifndef ATTNBENCH_KERNELS_CUDA_COMMON_KV_CACHE_ARGS_H_
#define ATTNBENCH_KERNELS_CUDA_COMMON_KV_CACHE_ARGS_H_

#include <cstdint>

namespace attnbench::cuda {

// The stored format of a token range, as the kernels see it.
enum class CacheCode : int32_t { kNative = 0, kInt8 = 1, kInt4 = 2 };

// One tensor (keys or values): the arrays of the formats the cache uses, null for the others.
struct KvCachePool {
  const float* native = nullptr;   // [slot][head][dim]
  // The native rows again in the run's storage dtype (AttentionArgs::storage), [slot][head][dim]:
  // what cuda_flash's decode kernel reads, so a native cache costs its stored width. Null unless
  // DeviceKvCache was made with NativeRows::kStorage (then `native` is null instead).
  const void* stored = nullptr;
  const int8_t* int8 = nullptr;    // [slot][head][dim]
  const uint8_t* int4 = nullptr;   // [slot][head][(dim + 1) / 2], element 2e in the low nibble
  const float* scales8 = nullptr;  // [slot][head]
  const float* scales4 = nullptr;  // [slot][head]
  int32_t dim = 0;
};

struct KvCacheArgs {
  KvCachePool keys;
  KvCachePool values;
  int32_t heads_kv = 0;
  // Token j of sequence b is in slot page_table[b * pages_per_sequence + j / page_size] *
  // page_size + j % page_size. A cache that is not paged has one page per sequence.
  const int32_t* page_table = nullptr;
  int64_t page_size = 0;
  int64_t pages_per_sequence = 0;
  // Token ranges in increasing order: range r ends (exclusive) at segment_ends[r] and is stored
  // as segment_codes[r]; the last ends at S_kv.
  const int64_t* segment_ends = nullptr;
  const CacheCode* segment_codes = nullptr;
  int32_t num_segments = 0;
};

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_COMMON_KV_CACHE_ARGS_H_
