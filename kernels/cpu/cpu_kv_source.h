// Where the CPU attention kernel reads keys and values from, one key block at a time: plain BSHD
// buffers (prefill), or the decode KV cache laid out in pages through a page table and stored
// native, int8 or int4 per token range (SAQ bands), dequantized as it is read.
//
// Quantization, exactly: each (token, head) row x of the cache (keys after RoPE, as a decode
// cache holds them; values as given) gets scale = max|x| / Q with Q = 127 (int8) or 7 (int4),
// stored as float32; elements are q = clamp(nearbyint(x / scale), -Q, Q) (all zero when
// max|x| = 0) and read back as q * scale. int4 packs element 2e in the low nibble of byte e and
// element 2e+1 in the high nibble (two's complement).
#ifndef ATTNBENCH_KERNELS_CPU_CPU_KV_SOURCE_H_
#define ATTNBENCH_KERNELS_CPU_CPU_KV_SOURCE_H_

#include <cstdint>
#include <vector>

#include "kernels/spec/cache_format.h"
#include "kernels/spec/problem.h"
#include "kernels/cpu/thread_pool.h"

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

// The decode cache: physical pages of page_size tokens; logical page p of sequence b lives in
// physical page page_table[b * pages_per_sequence + p]. Without paging, one page per sequence
// in order. Each token slot holds its (token, head) rows in the format of its token range.
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
    Read(keys ? keys_ : values_, format, physical_slot, head, out, 1);
  }

  // Host bytes the cache of this problem occupies (for EstimateBytes).
  static uint64_t BytesFor(const Problem& problem, int num_kv_heads);

 private:
  // One tensor (keys or values) of the cache in every format any token uses.
  struct Pool {
    int64_t dim = 0;
    std::vector<float> native;   // [slot][head][dim]
    std::vector<int8_t> int8;    // [slot][head][dim]
    std::vector<uint8_t> int4;   // [slot][head][(dim + 1) / 2]
    std::vector<float> scales8;  // [slot][head]
    std::vector<float> scales4;  // [slot][head]
  };
  void Store(Pool& pool, CacheFormat format, int64_t slot, int head, const float* x);
  // Dequantized row of (slot, head) into out[k * stride], k < dim.
  void Read(const Pool& pool, CacheFormat format, int64_t slot, int head, float* out,
            int64_t stride) const;
  int64_t Slot(int64_t b, int64_t j) const;
  CacheFormat FormatOf(int64_t j) const;

  int64_t seq_kv_;
  int num_kv_heads_;
  int64_t page_size_;
  int64_t pages_per_sequence_;
  std::vector<int32_t> page_table_;
  std::vector<CacheSegment> segments_;
  Pool keys_;
  Pool values_;
};

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_CPU_CPU_KV_SOURCE_H_
