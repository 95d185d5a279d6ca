// KvCacheStore: the stored decode cache every backend reads. The quantization must be the one
// kv_cache_store.h states (per-row symmetric scale, round to nearest, int4 nibble order), the SAQ
// bands must give each token the format of its age, and the page table must place each token.
#include "kernels/spec/kv_cache_store.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/spec/problem.h"

namespace attnbench {
namespace {

Problem DecodeProblem(int64_t seq_kv, int dim) {
  Problem p;
  p.batch_size = 2;
  p.seq_len_q = 1;
  p.seq_len_kv = seq_kv;
  p.head_dim_qk = dim;
  p.head_dim_v = dim;
  p.phase = Phase::kDecode;
  return p;
}

// Deterministic, non-trivial rows: mixed signs and magnitudes, no two rows alike.
std::vector<float> Rows(int64_t count) {
  std::vector<float> v(count);
  for (int64_t k = 0; k < count; ++k) v[k] = std::sin(0.37f * k + 0.1f) * (1 + (k % 7));
  return v;
}

TEST(KvCacheStoreTest, QuantizedRowsReadBackWithinHalfAStepOfTheirScale) {
  constexpr int kDim = 9;  // odd: the last int4 byte holds one element
  for (CacheFormat format : {CacheFormat::kInt8, CacheFormat::kInt4}) {
    Problem p = DecodeProblem(5, kDim);
    p.kv_cache.format = format;
    const std::vector<float> keys = Rows(2 * 5 * 2 * kDim), values = Rows(2 * 5 * 2 * kDim + 3);
    const KvCacheStore store(p, keys, values, 2);
    const float levels = format == CacheFormat::kInt4 ? 7 : 127;
    float out[kDim];
    for (int64_t b = 0; b < 2; ++b) {
      for (int64_t j = 0; j < 5; ++j) {
        for (int h = 0; h < 2; ++h) {
          const float* x = &keys[((b * 5 + j) * 2 + h) * kDim];
          float amax = 0;
          for (int d = 0; d < kDim; ++d) amax = std::max(amax, std::fabs(x[d]));
          const float scale = amax / levels;
          store.Read(store.keys(), format, store.Slot(b, j), h, out, 1);
          for (int d = 0; d < kDim; ++d) {
            // Exactly a multiple of the scale, and the nearest one.
            const float q = out[d] / scale;
            EXPECT_NEAR(q, std::nearbyint(q), 1e-3) << d;
            EXPECT_LE(std::fabs(out[d] - x[d]), 0.5f * scale * (1 + 1e-5f)) << d;
          }
        }
      }
    }
  }
}

TEST(KvCacheStoreTest, Int4PacksTheEvenElementInTheLowNibble) {
  Problem p = DecodeProblem(1, 3);
  p.batch_size = 1;
  p.kv_cache.format = CacheFormat::kInt4;
  // Row max 7 gives scale 1: elements are stored as themselves.
  const KvCacheStore store(p, {7, -3, 2}, {0, 0, 0}, 1);
  ASSERT_EQ(store.keys().int4.size(), 2u);
  EXPECT_EQ(store.keys().int4[0], static_cast<uint8_t>(0x7 | (0xd << 4)));  // 7, -3
  EXPECT_EQ(store.keys().int4[1], 0x2);
  EXPECT_EQ(store.keys().scales4[0], 1.0f);
  // An all-zero row has scale 0 and reads back as zeros.
  float out[3] = {1, 1, 1};
  store.Read(store.values(), CacheFormat::kInt4, 0, 0, out, 1);
  EXPECT_EQ(out[0], 0.0f);
  EXPECT_EQ(out[2], 0.0f);
}

TEST(KvCacheStoreTest, SaqBandsCountFromTheNewestToken) {
  Problem p = DecodeProblem(10, 4);
  p.kv_cache.saq_bands = {
      {3, CacheFormat::kNative}, {4, CacheFormat::kInt8}, {std::nullopt, CacheFormat::kInt4}};
  const KvCacheStore store(p, Rows(2 * 10 * 2 * 4), Rows(2 * 10 * 2 * 4), 2);
  for (int64_t j = 0; j < 10; ++j) {
    const CacheFormat want =
        j >= 7 ? CacheFormat::kNative : (j >= 3 ? CacheFormat::kInt8 : CacheFormat::kInt4);
    EXPECT_EQ(store.FormatOf(j), want) << j;
  }
  EXPECT_FALSE(store.keys().native.empty());
  EXPECT_FALSE(store.keys().int8.empty());
  EXPECT_FALSE(store.keys().int4.empty());
}

TEST(KvCacheStoreTest, PagesFollowTheTableAndTheEstimateCoversThePools) {
  Problem p = DecodeProblem(10, 4);
  p.kv_cache.paged = true;
  p.kv_cache.page_size_tokens = 4;  // 3 pages a sequence, the last one partly used
  p.kv_cache.page_table = {5, 0, 3, 1, 4, 2};
  p.kv_cache.format = CacheFormat::kInt8;
  const KvCacheStore store(p, Rows(2 * 10 * 2 * 4), Rows(2 * 10 * 2 * 4), 2);
  EXPECT_EQ(store.page_size(), 4);
  EXPECT_EQ(store.pages_per_sequence(), 3);
  EXPECT_EQ(store.Slot(0, 0), 5 * 4);
  EXPECT_EQ(store.Slot(0, 9), 3 * 4 + 1);
  EXPECT_EQ(store.Slot(1, 5), 4 * 4 + 1);
  const uint64_t pools = store.keys().int8.size() + store.values().int8.size() +
                         4 * (store.keys().scales8.size() + store.values().scales8.size());
  EXPECT_GE(KvCacheStore::BytesFor(p, 2), pools);
}

}  // namespace
}  // namespace attnbench
