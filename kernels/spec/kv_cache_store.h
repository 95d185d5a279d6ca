// The decode KV cache of §5 as it is stored: physical pages of page_size tokens addressed through
// a page table per sequence, each token's (token, head) rows in the format of its token range
// (native, int8 or int4: SAQ bands). Built once from the keys (after RoPE, as a decode cache
// holds them) and the values; every backend reads the same bytes, the CPU directly and the CUDA
// backends after uploading the pools, so the quantization is written once.
//
// Quantization, exactly: each (token, head) row x gets scale = max|x| / Q with Q = 127 (int8) or
// 7 (int4), stored as float32; elements are q = clamp(nearbyint(x / scale), -Q, Q) (all zero when
// max|x| = 0) and read back as q * scale. int4 packs element 2e in the low nibble of byte e and
// element 2e+1 in the high nibble (two's complement). Native rows are kept as float (the values
// the inputs hold: the dtype's values, keys rotated in float).
#ifndef ATTNBENCH_KERNELS_SPEC_KV_CACHE_STORE_H_
#define ATTNBENCH_KERNELS_SPEC_KV_CACHE_STORE_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "kernels/spec/cache_format.h"
#include "kernels/spec/problem.h"

namespace attnbench {

class KvCacheStore {
 public:
  // One tensor (keys or values) of the cache in every format any token uses; rows are indexed
  // slot * H_kv + head, a slot being physical page * page_size + offset in the page.
  struct Pool {
    int64_t dim = 0;
    std::vector<float> native;   // [slot][head][dim]
    std::vector<int8_t> int8;    // [slot][head][dim]
    std::vector<uint8_t> int4;   // [slot][head][(dim + 1) / 2]
    std::vector<float> scales8;  // [slot][head]
    std::vector<float> scales4;  // [slot][head]
  };

  // Runs body(item) for every item in [0, items), possibly concurrently.
  using ParallelFor = std::function<void(int64_t items, const std::function<void(int64_t)>& body)>;

  // keys [B, S_kv, H_kv, D_qk] (already rotated), values [B, S_kv, H_kv, D_v]. `parallel_for`,
  // when given, fills token chunks concurrently (a long cache takes seconds on one thread).
  KvCacheStore(const Problem& problem, const std::vector<float>& keys,
               const std::vector<float>& values, int num_kv_heads,
               const ParallelFor& parallel_for = nullptr);

  // Host bytes the pools of this problem's cache occupy.
  static uint64_t BytesFor(const Problem& problem, int num_kv_heads);

  // The slot of token j of sequence b, through the page table.
  int64_t Slot(int64_t b, int64_t j) const;
  // The format token j is stored in.
  CacheFormat FormatOf(int64_t j) const;
  // The dequantized row of (slot, head) of `pool` stored in `format`, into out[k * stride].
  void Read(const Pool& pool, CacheFormat format, int64_t slot, int head, float* out,
            int64_t stride) const;

  const Pool& keys() const { return keys_; }
  const Pool& values() const { return values_; }
  int64_t seq_kv() const { return seq_kv_; }
  int num_kv_heads() const { return num_kv_heads_; }
  int64_t page_size() const { return page_size_; }
  int64_t pages_per_sequence() const { return pages_per_sequence_; }
  // [B][pages_per_sequence] physical pages (one page per sequence, in order, without paging).
  const std::vector<int32_t>& page_table() const { return page_table_; }
  const std::vector<CacheSegment>& segments() const { return segments_; }

 private:
  void Store(Pool& pool, CacheFormat format, int64_t slot, int head, const float* x);

  int64_t seq_kv_;
  int num_kv_heads_;
  int64_t page_size_ = 0;
  int64_t pages_per_sequence_ = 0;
  std::vector<int32_t> page_table_;
  std::vector<CacheSegment> segments_;
  Pool keys_;
  Pool values_;
};

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_SPEC_KV_CACHE_STORE_H_
