#include "kernels/cpu/cpu_kv_source.h"

#include <algorithm>
#include <functional>

namespace attnbench {

ContiguousKv::ContiguousKv(const float* keys, const float* values, int64_t seq_kv, int num_kv_heads,
                           int64_t dim_qk, int64_t dim_v)
    : keys_(keys),
      values_(values),
      seq_kv_(seq_kv),
      num_kv_heads_(num_kv_heads),
      dim_qk_(dim_qk),
      dim_v_(dim_v) {}

void ContiguousKv::LoadKeys(int64_t b, int kv_head, int64_t j0, int64_t j1, float* kt,
                            int64_t ld) const {
  for (int64_t j = j0; j < j1; ++j) {
    const float* k = keys_ + ((b * seq_kv_ + j) * num_kv_heads_ + kv_head) * dim_qk_;
    for (int64_t d = 0; d < dim_qk_; ++d) kt[d * ld + (j - j0)] = k[d];
  }
}

void ContiguousKv::LoadValues(int64_t b, int kv_head, int64_t j0, int64_t j1, float* v) const {
  for (int64_t j = j0; j < j1; ++j) {
    const float* src = values_ + ((b * seq_kv_ + j) * num_kv_heads_ + kv_head) * dim_v_;
    std::copy(src, src + dim_v_, v + (j - j0) * dim_v_);
  }
}

PagedKvCache::PagedKvCache(const Problem& problem, const std::vector<float>& keys,
                           const std::vector<float>& values, int num_kv_heads, ThreadPool* pool)
    : store_(
          problem, keys, values, num_kv_heads,
          pool == nullptr ? KvCacheStore::ParallelFor()
                          : [pool](int64_t items, const std::function<void(int64_t)>& body) {
                              pool->ParallelFor(items, [&](int64_t item, int) { body(item); });
                            }) {}

void PagedKvCache::LoadKeys(int64_t b, int kv_head, int64_t j0, int64_t j1, float* kt,
                            int64_t ld) const {
  for (int64_t j = j0; j < j1; ++j) {
    store_.Read(store_.keys(), store_.FormatOf(j), store_.Slot(b, j), kv_head, kt + (j - j0), ld);
  }
}

void PagedKvCache::LoadValues(int64_t b, int kv_head, int64_t j0, int64_t j1, float* v) const {
  const int64_t dim = store_.values().dim;
  for (int64_t j = j0; j < j1; ++j) {
    store_.Read(store_.values(), store_.FormatOf(j), store_.Slot(b, j), kv_head, v + (j - j0) * dim,
                1);
  }
}

}  // namespace attnbench
