#include "kernels/spec/kv_cache_store.h"

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

int64_t PageSize(const Problem& problem) {
  return problem.kv_cache.paged ? problem.kv_cache.page_size_tokens : problem.seq_len_kv;
}

}  // namespace

KvCacheStore::KvCacheStore(const Problem& problem, const std::vector<float>& keys,
                           const std::vector<float>& values, int num_kv_heads,
                           const ParallelFor& parallel_for)
    : seq_kv_(problem.seq_len_kv), num_kv_heads_(num_kv_heads), segments_(CacheSegments(problem)) {
  const int64_t batch = problem.batch_size;
  page_size_ = PageSize(problem);
  pages_per_sequence_ = (seq_kv_ + page_size_ - 1) / page_size_;
  if (problem.kv_cache.paged) {
    page_table_ = PageTableFor(problem);
  } else {
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
  auto store = [&](int64_t item) {
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
  if (parallel_for) {
    parallel_for(batch * chunks, store);
  } else {
    for (int64_t item = 0; item < batch * chunks; ++item) store(item);
  }
}

uint64_t KvCacheStore::BytesFor(const Problem& problem, int num_kv_heads) {
  const int64_t page = PageSize(problem);
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
  return per_row * rows +
         sizeof(int32_t) * problem.batch_size * ((problem.seq_len_kv + page - 1) / page);
}

int64_t KvCacheStore::Slot(int64_t b, int64_t j) const {
  const int64_t physical = page_table_[b * pages_per_sequence_ + j / page_size_];
  return physical * page_size_ + j % page_size_;
}

CacheFormat KvCacheStore::FormatOf(int64_t j) const {
  for (const CacheSegment& s : segments_) {
    if (j < s.end) return s.format;
  }
  return CacheFormat::kNative;
}

void KvCacheStore::Store(Pool& pool, CacheFormat format, int64_t slot, int head, const float* x) {
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

void KvCacheStore::Read(const Pool& pool, CacheFormat format, int64_t slot, int head, float* out,
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

}  // namespace attnbench
