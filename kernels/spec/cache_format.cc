#include "kernels/spec/cache_format.h"

#include <algorithm>

namespace attnbench {

std::vector<CacheSegment> CacheSegments(const Problem& problem) {
  const int64_t s = problem.seq_len_kv;
  const KvCache& cache = problem.kv_cache;
  if (cache.saq_bands.empty()) {
    const CacheFormat f =
        cache.format == CacheFormat::kUnspecified ? CacheFormat::kNative : cache.format;
    return {{0, s, f}};
  }
  std::vector<CacheSegment> newest_first;
  int64_t end = s;
  for (const SaqBand& band : cache.saq_bands) {
    if (end <= 0) break;
    const int64_t n = band.num_tokens.has_value() ? std::min(*band.num_tokens, end) : end;
    newest_first.push_back({end - n, end, band.format});
    end -= n;
  }
  if (end > 0) newest_first.push_back({0, end, CacheFormat::kNative});
  std::reverse(newest_first.begin(), newest_first.end());
  return newest_first;
}

int64_t CacheRowBytes(CacheFormat format, int64_t dim, DType dtype) {
  switch (format) {
    case CacheFormat::kInt8:
      return dim + 4;
    case CacheFormat::kInt4:
      return (dim + 1) / 2 + 4;
    case CacheFormat::kNative:
    case CacheFormat::kUnspecified:
      break;
  }
  return dim * DTypeBytes(dtype);
}

CacheFormat CoarsestCacheFormat(const Problem& problem) {
  CacheFormat worst = CacheFormat::kNative;
  for (const CacheSegment& seg : CacheSegments(problem)) {
    if (seg.format == CacheFormat::kInt4) return CacheFormat::kInt4;
    if (seg.format == CacheFormat::kInt8) worst = CacheFormat::kInt8;
  }
  return worst;
}

}  // namespace attnbench
