// Reading the paged, quantized decode cache of kv_cache_args.h on the device: where a token
// lives and its elements dequantized, exactly as KvCacheStore::Read does on the host.
#ifndef ATTNBENCH_KERNELS_CUDA_COMMON_KV_CACHE_CUH_
#define ATTNBENCH_KERNELS_CUDA_COMMON_KV_CACHE_CUH_

#include <cstdint>

#include "kernels/cuda/common/kv_cache_args.h"

namespace attnbench::cuda {

// The stored row and format of token j of sequence b, head `head`.
struct CacheRow {
  int64_t row = 0;  // slot * H_kv + head
  CacheCode code = CacheCode::kNative;
};

__device__ __forceinline__ CacheRow LocateCacheRow(const KvCacheArgs& c, int64_t b, int64_t j,
                                                   int head) {
  const int64_t page = c.page_table[b * c.pages_per_sequence + j / c.page_size];
  CacheRow r;
  r.row = (page * c.page_size + j % c.page_size) * c.heads_kv + head;
  for (int s = 0; s < c.num_segments; ++s) {
    if (j < c.segment_ends[s]) {
      r.code = c.segment_codes[s];
      break;
    }
  }
  return r;
}

// Element d of the row, dequantized.
__device__ __forceinline__ float CachedElement(const KvCachePool& p, const CacheRow& r, int d) {
  switch (r.code) {
    case CacheCode::kInt8:
      return static_cast<float>(p.int8[r.row * p.dim + d]) * p.scales8[r.row];
    case CacheCode::kInt4: {
      const int packed = (p.dim + 1) / 2;
      const int nibble = (p.int4[r.row * packed + d / 2] >> (4 * (d % 2))) & 0xf;
      return static_cast<float>(nibble >= 8 ? nibble - 16 : nibble) * p.scales4[r.row];
    }
    default:
      return p.native[r.row * p.dim + d];
  }
}

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_COMMON_KV_CACHE_CUH_
