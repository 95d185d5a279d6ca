// How a decode KV cache stores its tokens (§5): which format each token range uses (a single
// format, or SAQ age bands counted from the newest token back) and how many bytes a
// (token, head) row takes in each format. Shared by counting (min_bytes) and the backends.
#ifndef ATTNBENCH_KERNELS_SPEC_CACHE_FORMAT_H_
#define ATTNBENCH_KERNELS_SPEC_CACHE_FORMAT_H_

#include <cstdint>
#include <vector>

#include "kernels/spec/problem.h"

namespace attnbench {

// Tokens [begin, end) of every sequence's cache, stored in `format` (never kUnspecified).
struct CacheSegment {
  int64_t begin = 0;
  int64_t end = 0;
  CacheFormat format = CacheFormat::kNative;
};

// Segments covering [0, S_kv) in increasing token order. Without SAQ bands: one segment in
// kv_cache.format (native when unspecified). With bands: band 0 holds the newest num_tokens
// tokens (ending at S_kv), band 1 the ones before, and so on; an unset num_tokens takes the rest;
// tokens older than every band stay native.
std::vector<CacheSegment> CacheSegments(const Problem& problem);

// Stored bytes of one (token, head) row of `dim` elements: native at the dtype's width; int8 one
// byte per element plus a float32 scale; int4 two elements per byte (rounded up) plus the scale.
int64_t CacheRowBytes(CacheFormat format, int64_t dim, DType dtype);

// The widest quantization any token of the cache uses (kNative when none).
CacheFormat CoarsestCacheFormat(const Problem& problem);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_SPEC_CACHE_FORMAT_H_
