// Where the CPU attention kernel reads keys and values from, one key block at a time: plain BSHD
// buffers (prefill), or the decode KV cache laid out in pages through a page table and stored
// native, int8 or int4 per token range (SAQ bands; kernels/spec/kv_cache_store.h says exactly
// how), dequantized as it is read.
#ifndef ATTNBENCH_KERNELS_CPU_CPU_KV_SOURCE_H_
#define ATTNBENCH_KERNELS_CPU_CPU_KV_SOURCE_H_

#include <cstdint>
#include <vector>

#include "kernels/cpu/thread_pool.h"
#include "kernels/spec/cache_format.h"
#include "kernels/spec/kv_cache_store.h"
#include "kernels/spec/problem.h"

namespace attnbench {

class KvSource {
 public:
  virtual ~KvSource() = default;
  // Keys j in [j0, j1) of (b, kv head), RoPE applied, transposed: kt[d * ld + (j - j0)].
  virtual void LoadKeys(int64_t b, int kv_head, int64_t j0, int64_t j1, float* kt,
                        int64_t ld) const = 0;
  // Values j in [j0, j1) of (b, kv head), row-major: v[(j - j0) * D_v + d].
  virtual void LoadValues(int64_t b, int kv_head, int64_t j0, int64_t j1, float* v) const = 0;
};

// Keys and values in BSHD buffers owned by the caller (keys already rotated when RoPE is on).
class ContiguousKv : public KvSource {
 public:
  ContiguousKv(const float* keys, const float* values, int64_t seq_kv, int num_kv_heads,
               int64_t dim_qk, int64_t dim_v);
  void LoadKeys(int64_t b, int kv_head, int64_t j0, int64_t j1, float* kt,
                int64_t ld) const override;
  void LoadValues(int64_t b, int kv_head, int64_t j0, int64_t j1, float* v) const override;

 private:
  const float* keys_;
  const float* values_;
  int64_t seq_kv_;
  int num_kv_heads_;
  int64_t dim_qk_;
  int64_t dim_v_;
};

// The decode cache (KvCacheStore: pages through a page table, native, int8 or int4 per token
// range), read one key block at a time and dequantized as it is read.
class PagedKvCache : public KvSource {
 public:
  // keys [B, S_kv, H_kv, D_qk] (already rotated), values [B, S_kv, H_kv, D_v]. Filled on `pool`
  // when given (a long cache takes seconds to quantize on one thread).
  PagedKvCache(const Problem& problem, const std::vector<float>& keys,
               const std::vector<float>& values, int num_kv_heads, ThreadPool* pool = nullptr);
  void LoadKeys(int64_t b, int kv_head, int64_t j0, int64_t j1, float* kt,
                int64_t ld) const override;
  void LoadValues(int64_t b, int kv_head, int64_t j0, int64_t j1, float* v) const override;

  // The stored row of token slot `physical_slot` (physical page * page_size + offset in page),
  // dequantized as the token at that slot is stored: what a kernel reading the physical memory
  // would see. For tests that the layout really follows the page table.
  void ReadPhysical(bool keys, int64_t physical_slot, CacheFormat format, int head,
                    float* out) const {
    store_.Read(keys ? store_.keys() : store_.values(), format, physical_slot, head, out, 1);
  }

  // Host bytes the cache of this problem occupies (for EstimateBytes).
  static uint64_t BytesFor(const Problem& problem, int num_kv_heads) {
    return KvCacheStore::BytesFor(problem, num_kv_heads);
  }

 private:
  KvCacheStore store_;
};

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_CPU_CPU_KV_SOURCE_H_
