#include "kernels/cuda/backend/device_kv_cache.h"

#include <algorithm>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/cache_format.h"
#include "kernels/spec/kv_cache_store.h"
#include "kernels/spec/modifiers.h"

namespace attnbench::cuda {
namespace {

CacheCode CodeOf(CacheFormat format) {
  switch (format) {
    case CacheFormat::kInt8:
      return CacheCode::kInt8;
    case CacheFormat::kInt4:
      return CacheCode::kInt4;
    default:
      return CacheCode::kNative;
  }
}

// Splits `items` over the host's cores: the cache of a long decode takes seconds on one thread.
void ParallelOverCores(int64_t items, const std::function<void(int64_t)>& body) {
  const int64_t workers = std::clamp<int64_t>(std::thread::hardware_concurrency(), 1, 32);
  std::vector<std::thread> threads;
  for (int64_t w = 0; w < std::min(workers, items); ++w) {
    threads.emplace_back([&, w] {
      for (int64_t item = w; item < items; item += workers) body(item);
    });
  }
  for (std::thread& t : threads) t.join();
}

// Uploads `v` (when not empty) into a buffer kept in `buffers` and returns its device address.
template <typename T>
absl::StatusOr<const T*> Keep(const std::vector<T>& v, const std::string& what,
                              std::vector<DeviceBuffer>& buffers) {
  if (v.empty()) return static_cast<const T*>(nullptr);
  absl::StatusOr<DeviceBuffer> b = DeviceBuffer::Upload(v.data(), v.size() * sizeof(T), what);
  if (!b.ok()) return b.status();
  buffers.push_back(*std::move(b));
  return buffers.back().as<T>();
}

// The native rows encoded in `dtype` (round to nearest even, as every stored tensor), chunks
// encoded concurrently: a long cache holds hundreds of millions of elements.
std::string EncodeRows(const std::vector<float>& rows, DType dtype) {
  const size_t width = static_cast<size_t>(DTypeBytes(dtype));
  std::string out(rows.size() * width, '\0');
  constexpr size_t kChunk = size_t{1} << 20;
  const int64_t chunks = static_cast<int64_t>((rows.size() + kChunk - 1) / kChunk);
  ParallelOverCores(chunks, [&](int64_t c) {
    const size_t begin = static_cast<size_t>(c) * kChunk;
    const size_t end = std::min(rows.size(), begin + kChunk);
    std::string part;
    part.reserve((end - begin) * width);
    for (size_t e = begin; e < end; ++e) AppendEncoded(rows[e], dtype, &part);
    std::copy(part.begin(), part.end(), out.begin() + static_cast<std::ptrdiff_t>(begin * width));
  });
  return out;
}

absl::StatusOr<KvCachePool> UploadPool(const KvCacheStore::Pool& pool, const char* name,
                                       DeviceKvCache::NativeRows native_rows, DType dtype,
                                       std::vector<DeviceBuffer>& buffers) {
  KvCachePool p;
  p.dim = static_cast<int32_t>(pool.dim);
  if (native_rows == DeviceKvCache::NativeRows::kStorage && !pool.native.empty()) {
    const std::string encoded = EncodeRows(pool.native, dtype);
    absl::StatusOr<DeviceBuffer> b = DeviceBuffer::Upload(
        encoded.data(), encoded.size(), absl::StrCat("the decode cache's native ", name));
    if (!b.ok()) return b.status();
    buffers.push_back(*std::move(b));
    p.stored = buffers.back().get();
  }
  static const std::vector<float> kNone;
  absl::StatusOr<const float*> native =
      Keep(native_rows == DeviceKvCache::NativeRows::kFloat ? pool.native : kNone,
           absl::StrCat("the decode cache's native ", name), buffers);
  if (!native.ok()) return native.status();
  absl::StatusOr<const int8_t*> int8 =
      Keep(pool.int8, absl::StrCat("the decode cache's int8 ", name), buffers);
  if (!int8.ok()) return int8.status();
  absl::StatusOr<const uint8_t*> int4 =
      Keep(pool.int4, absl::StrCat("the decode cache's int4 ", name), buffers);
  if (!int4.ok()) return int4.status();
  absl::StatusOr<const float*> scales8 =
      Keep(pool.scales8, absl::StrCat("the decode cache's int8 ", name, " scales"), buffers);
  if (!scales8.ok()) return scales8.status();
  absl::StatusOr<const float*> scales4 =
      Keep(pool.scales4, absl::StrCat("the decode cache's int4 ", name, " scales"), buffers);
  if (!scales4.ok()) return scales4.status();
  p.native = *native;
  p.int8 = *int8;
  p.int4 = *int4;
  p.scales8 = *scales8;
  p.scales4 = *scales4;
  return p;
}

}  // namespace

bool DeviceKvCache::Needed(const Problem& problem) {
  return problem.phase == Phase::kDecode &&
         (problem.kv_cache.paged || CoarsestCacheFormat(problem) != CacheFormat::kNative);
}

uint64_t DeviceKvCache::EstimateBytes(const Problem& problem, const ProblemShapes& shapes) {
  const uint64_t segments = CacheSegments(problem).size();
  return KvCacheStore::BytesFor(problem, shapes.heads.num_kv_heads) +
         segments * (sizeof(int64_t) + sizeof(CacheCode));
}

absl::StatusOr<std::unique_ptr<DeviceKvCache>> DeviceKvCache::Create(
    const Problem& problem, const ProblemShapes& shapes, const AttentionInputs& inputs,
    NativeRows native) {
  std::unique_ptr<DeviceKvCache> c(new DeviceKvCache());
  // The cache holds keys after RoPE, as the prefill that filled it left them.
  const std::vector<float>* keys = &inputs.key.values;
  std::vector<float> rotated;
  if (problem.rope.enabled) {
    const std::vector<double> inv_freq =
        RopeInverseFrequencies(problem.rope.theta.value_or(10000.0),
                               problem.rope.rotary_dims.value_or(problem.head_dim_qk));
    rotated.resize(keys->size());
    const int64_t rows = shapes.batch * shapes.seq_kv;
    constexpr int64_t kRowsPerItem = 64;
    ParallelOverCores((rows + kRowsPerItem - 1) / kRowsPerItem, [&](int64_t item) {
      RotateKeyRows(inv_freq, shapes.seq_kv, shapes.heads.num_kv_heads, shapes.dim_qk,
                    item * kRowsPerItem, std::min(rows, (item + 1) * kRowsPerItem),
                    inputs.key.values.data(), rotated.data());
    });
    keys = &rotated;
  }
  const KvCacheStore store(problem, *keys, inputs.value.values, shapes.heads.num_kv_heads,
                           ParallelOverCores);
  KvCacheArgs& a = c->args_;
  absl::StatusOr<KvCachePool> k = UploadPool(store.keys(), "keys", native, problem.dtype, c->buffers_);
  if (!k.ok()) return k.status();
  absl::StatusOr<KvCachePool> v = UploadPool(store.values(), "values", native, problem.dtype, c->buffers_);
  if (!v.ok()) return v.status();
  a.keys = *k;
  a.values = *v;
  a.heads_kv = shapes.heads.num_kv_heads;
  a.page_size = store.page_size();
  a.pages_per_sequence = store.pages_per_sequence();
  absl::StatusOr<const int32_t*> table =
      Keep(store.page_table(), "the decode cache's page table", c->buffers_);
  if (!table.ok()) return table.status();
  a.page_table = *table;
  std::vector<int64_t> ends;
  std::vector<CacheCode> codes;
  for (const CacheSegment& s : store.segments()) {
    ends.push_back(s.end);
    codes.push_back(CodeOf(s.format));
  }
  absl::StatusOr<const int64_t*> device_ends =
      Keep(ends, "the decode cache's format ranges", c->buffers_);
  if (!device_ends.ok()) return device_ends.status();
  absl::StatusOr<const CacheCode*> device_codes =
      Keep(codes, "the decode cache's format codes", c->buffers_);
  if (!device_codes.ok()) return device_codes.status();
  a.segment_ends = *device_ends;
  a.segment_codes = *device_codes;
  a.num_segments = static_cast<int32_t>(ends.size());
  return c;
}

}  // namespace attnbench::cuda
