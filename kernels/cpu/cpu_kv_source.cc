#include "kernels/cpu/cpu_kv_source.h"

#include <algorithm>
#include <cmath>

#include "kernels/spec/inputs.h"

namespace attnbench {
namespace {

int QuantLevels(CacheFormat format) { return format == CacheFormat::kInt4 ? 7 : 127; }

bool Uses(const std::vector<CacheSegment>& segments, CacheFormat format) {
  return std::any_of(segments.begin(), segments.end(),
                     [&](const CacheSegment& s) { return s.format == format; });
}

}  // namespace

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
    : seq_kv_(problem.seq_len_kv), num_kv_heads_(num_kv_heads), segments_(CacheSegments(problem)) {
  const int64_t batch = problem.batch_size;
  if (problem.kv_cache.paged) {
    page_size_ = problem.kv_cache.page_size_tokens;
    pages_per_sequence_ = (seq_kv_ + page_size_ - 1) / page_size_;
    page_table_ = PageTableFor(problem);
  } else {
    page_size_ = seq_kv_;
    pages_per_sequence_ = 1;
    page_table_.resize(batch);
    for (int64_t b = 0; b < batch; ++b) page_table_[b] = static_cast<int32_t>(b);
  }
  const int64_t slots = batch * pages_per_sequence_ * page_size_;
  keys_.dim = problem.head_dim_qk;
  values_.dim = problem.head_dim_v.value_or(problem.head_dim_qk);
  for (Pool* pool : {&keys_, &values_}) {
    const int64_t rows = slots * num_kv_heads_;
    if (Uses(segments_, CacheFormat::kNative)) pool->native.resize(rows * pool->dim);
    if (Uses(segments_, CacheFormat::kInt8)) {
      pool->int8.resize(rows * pool->dim);
      pool->scales8.resize(rows);
    }
    if (Uses(segments_, CacheFormat::kInt4)) {
      pool->int4.resize(rows * ((pool->dim + 1) / 2));
      pool->scales4.resize(rows);
    }
  }
  // Every (b, token) writes its own slot, so chunks of tokens can be stored concurrently.
  constexpr int64_t kTokensPerItem = 256;
  const int64_t chunks = (seq_kv_ + kTokensPerItem - 1) / kTokensPerItem;
  auto store = [&](int64_t item, int) {
    const int64_t b = item / chunks;
    const int64_t j0 = (item % chunks) * kTokensPerItem;
    for (int64_t j = j0; j < std::min(seq_kv_, j0 + kTokensPerItem); ++j) {
      const CacheFormat format = FormatOf(j);
      const int64_t slot = Slot(b, j);
      for (int h = 0; h < num_kv_heads_; ++h) {
        const int64_t row = (b * seq_kv_ + j) * num_kv_heads_ + h;
        Store(keys_, format, slot, h, &keys[row * keys_.dim]);
        Store(values_, format, slot, h, &values[row * values_.dim]);
      }
    }
  };
  if (pool != nullptr) {
    pool->ParallelFor(batch * chunks, store);
  } else {
    for (int64_t item = 0; item < batch * chunks; ++item) store(item, 0);
  }
}

uint64_t PagedKvCache::BytesFor(const Problem& problem, int num_kv_heads) {
  const int64_t page =
      problem.kv_cache.paged ? problem.kv_cache.page_size_tokens : problem.seq_len_kv;
  const int64_t rows =
      problem.batch_size * ((problem.seq_len_kv + page - 1) / page) * page * num_kv_heads;
  const std::vector<CacheSegment> segments = CacheSegments(problem);
  uint64_t per_row = 0;
  for (int64_t dim : {static_cast<int64_t>(problem.head_dim_qk),
                      static_cast<int64_t>(problem.head_dim_v.value_or(problem.head_dim_qk))}) {
    if (Uses(segments, CacheFormat::kNative)) per_row += 4 * dim;
    if (Uses(segments, CacheFormat::kInt8)) per_row += dim + 4;
    if (Uses(segments, CacheFormat::kInt4)) per_row += (dim + 1) / 2 + 4;
  }
  return per_row * rows;
}

int64_t PagedKvCache::Slot(int64_t b, int64_t j) const {
  const int64_t physical = page_table_[b * pages_per_sequence_ + j / page_size_];
  return physical * page_size_ + j % page_size_;
}

CacheFormat PagedKvCache::FormatOf(int64_t j) const {
  for (const CacheSegment& s : segments_) {
    if (j < s.end) return s.format;
  }
  return CacheFormat::kNative;
}

void PagedKvCache::Store(Pool& pool, CacheFormat format, int64_t slot, int head, const float* x) {
  const int64_t row = slot * num_kv_heads_ + head;
  const int64_t dim = pool.dim;
  if (format == CacheFormat::kNative || format == CacheFormat::kUnspecified) {
    std::copy(x, x + dim, &pool.native[row * dim]);
    return;
  }
  const int levels = QuantLevels(format);
  float amax = 0;
  for (int64_t d = 0; d < dim; ++d) amax = std::max(amax, std::fabs(x[d]));
  const float scale = amax / static_cast<float>(levels);
  auto quantize = [&](float v) {
    if (scale == 0) return 0;
    const float q = std::nearbyint(v / scale);
    return static_cast<int>(std::clamp(q, -static_cast<float>(levels), static_cast<float>(levels)));
  };
  if (format == CacheFormat::kInt8) {
    pool.scales8[row] = scale;
    for (int64_t d = 0; d < dim; ++d)
      pool.int8[row * dim + d] = static_cast<int8_t>(quantize(x[d]));
    return;
  }
  pool.scales4[row] = scale;
  const int64_t packed = (dim + 1) / 2;
  for (int64_t e = 0; e < packed; ++e) {
    const int lo = quantize(x[2 * e]);
    const int hi = 2 * e + 1 < dim ? quantize(x[2 * e + 1]) : 0;
    pool.int4[row * packed + e] = static_cast<uint8_t>((lo & 0xf) | ((hi & 0xf) << 4));
  }
}

void PagedKvCache::Read(const Pool& pool, CacheFormat format, int64_t slot, int head, float* out,
                        int64_t stride) const {
  const int64_t row = slot * num_kv_heads_ + head;
  const int64_t dim = pool.dim;
  if (format == CacheFormat::kNative || format == CacheFormat::kUnspecified) {
    const float* src = &pool.native[row * dim];
    for (int64_t d = 0; d < dim; ++d) out[d * stride] = src[d];
  } else if (format == CacheFormat::kInt8) {
    const float scale = pool.scales8[row];
    const int8_t* src = &pool.int8[row * dim];
    for (int64_t d = 0; d < dim; ++d) out[d * stride] = static_cast<float>(src[d]) * scale;
  } else {
    const float scale = pool.scales4[row];
    const int64_t packed = (dim + 1) / 2;
    const uint8_t* src = &pool.int4[row * packed];
    for (int64_t d = 0; d < dim; ++d) {
      const int nibble = (src[d / 2] >> (4 * (d % 2))) & 0xf;
      const int q = nibble >= 8 ? nibble - 16 : nibble;  // sign-extend the 4-bit value
      out[d * stride] = static_cast<float>(q) * scale;
    }
  }
}

void PagedKvCache::LoadKeys(int64_t b, int kv_head, int64_t j0, int64_t j1, float* kt,
                            int64_t ld) const {
  for (int64_t j = j0; j < j1; ++j) {
    Read(keys_, FormatOf(j), Slot(b, j), kv_head, kt + (j - j0), ld);
  }
}

void PagedKvCache::LoadValues(int64_t b, int kv_head, int64_t j0, int64_t j1, float* v) const {
  for (int64_t j = j0; j < j1; ++j) {
    Read(values_, FormatOf(j), Slot(b, j), kv_head, v + (j - j0) * values_.dim, 1);
  }
}

}  // namespace attnbench
