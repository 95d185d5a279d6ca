// Philox4x32-10 against the Random123 known-answer vectors, and the §8 input recipe: exact
// values from the documented formula, determinism, rough N(0, 1) moments, scales, client
// tensors, and generated page tables.
#include <algorithm>
#include <cmath>
#include <optional>
#include <set>

#include "gtest/gtest.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/inputs.h"
#include "kernels/spec/philox.h"
#include "tests/kernels/test_util.h"

namespace attnbench {
namespace {

TEST(PhiloxTest, Random123KnownAnswers) {
  EXPECT_EQ(Philox4x32_10({0, 0, 0, 0}, {0, 0}),
            (PhiloxCounter{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(
      Philox4x32_10({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}),
      (PhiloxCounter{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(
      Philox4x32_10({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}),
      (PhiloxCounter{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(PhiloxTest, SeedSplitsIntoKeyWords) {
  EXPECT_EQ(PhiloxKeyFromSeed(0x0123456789abcdefull), (PhiloxKey{0x89abcdef, 0x01234567}));
}

TEST(InputsTest, FollowsTheDocumentedRecipe) {
  const uint64_t seed = 0x1122334455667788ull;
  const uint64_t index = (uint64_t{3} << 32) + 17;
  const PhiloxCounter w = Philox4x32_10({17, 3, kTensorValue, 0}, {0x55667788, 0x11223344});
  const double u1 = (w[0] + 0.5) / 4294967296.0, u2 = (w[1] + 0.5) / 4294967296.0;
  const double z = std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2);
  EXPECT_DOUBLE_EQ(StandardNormal(seed, kTensorValue, index), z);

  const FloatTensor t = GenerateTensor(seed, kTensorKey, {5}, 2.0, DType::kBFloat16);
  for (int k = 0; k < 5; ++k) {
    EXPECT_EQ(t.values[k],
              RoundToDType(static_cast<float>(StandardNormal(seed, kTensorKey, k) * 2.0),
                           DType::kBFloat16));
  }
}

TEST(InputsTest, StandardNormalMoments) {
  const FloatTensor t = GenerateTensor(42, kTensorQuery, {400000}, 1.0, DType::kFloat32);
  double sum = 0, sum2 = 0, sum4 = 0;
  for (float v : t.values) {
    sum += v;
    sum2 += v * v;
    sum4 += static_cast<double>(v) * v * v * v;
  }
  const double n = static_cast<double>(t.values.size());
  EXPECT_NEAR(sum / n, 0.0, 0.01);
  EXPECT_NEAR(sum2 / n, 1.0, 0.01);
  EXPECT_NEAR(sum4 / n, 3.0, 0.05);  // normal kurtosis, not a uniform's 1.8
}

TEST(InputsTest, DeterministicAndDistinctPerTensorAndSeed) {
  Problem p = testing::SmallProblem();
  p = NormalizeProblem(p);
  const absl::StatusOr<AttentionInputs> a = GenerateInputs(p);
  const absl::StatusOr<AttentionInputs> b = GenerateInputs(p);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->query.values, b->query.values);
  EXPECT_EQ(a->query.shape, (std::vector<int64_t>{2, 16, 4, 8}));
  EXPECT_NE(a->query.values, a->key.values);
  p.seed += 1;
  EXPECT_NE(GenerateInputs(p)->query.values, a->query.values);
  EXPECT_TRUE(a->x.values.empty());
}

TEST(InputsTest, ScalesAndRounds) {
  Problem p = testing::SmallProblem();
  p.seq_len_q = p.seq_len_kv = 512;
  p.head_dim_qk = 64;
  p.input_scale = 3.0;
  p.dtype = DType::kFloat8E4M3;
  const absl::StatusOr<AttentionInputs> in = GenerateInputs(NormalizeProblem(p));
  ASSERT_TRUE(in.ok());
  // FP8 (§1b): e4m3 codes under a scale derived from the float32 draws, amax / 448.
  const std::optional<AttentionInputs> drawn = UnquantizedInputs(NormalizeProblem(p));
  ASSERT_TRUE(drawn.has_value());
  float amax = 0;
  for (float v : drawn->value.values) amax = std::max(amax, std::fabs(v));
  ASSERT_EQ(in->value.scales.size(), 1u);
  EXPECT_EQ(in->value.scales[0], amax / 448.0f);
  double sum2 = 0;
  float largest_code = 0;
  for (size_t k = 0; k < in->value.values.size(); ++k) {
    const float code = in->value.values[k];
    EXPECT_EQ(RoundToDType(code, DType::kFloat8E4M3), code);
    EXPECT_EQ(code, RoundToDType(drawn->value.values[k] / in->value.scales[0], DType::kFloat8E4M3));
    largest_code = std::max(largest_code, std::fabs(code));
    const double v = code * in->value.scales[0];
    sum2 += v * v;
  }
  EXPECT_EQ(largest_code, 448.0f);
  EXPECT_NEAR(std::sqrt(sum2 / in->value.values.size()), 3.0, 0.05);
}

TEST(InputsTest, LayerWeightsAreScaledByFanIn) {
  Problem p = testing::SmallProblem();
  p.scope = Scope::kLayer;
  p.d_model = 256;
  p.input_scale = 2.0;
  const absl::StatusOr<AttentionInputs> in = GenerateInputs(NormalizeProblem(p));
  ASSERT_TRUE(in.ok());
  EXPECT_TRUE(in->query.values.empty());
  EXPECT_EQ(in->x.shape, (std::vector<int64_t>{2, 16, 256}));
  EXPECT_EQ(in->w_q.shape, (std::vector<int64_t>{256, 32}));
  EXPECT_EQ(in->w_o.shape, (std::vector<int64_t>{32, 256}));
  auto rms = [](const FloatTensor& t) {
    double s = 0;
    for (float v : t.values) s += v * v;
    return std::sqrt(s / t.values.size());
  };
  EXPECT_NEAR(rms(in->x), 2.0, 0.05);
  EXPECT_NEAR(rms(in->w_q), 1.0 / 16, 0.004);  // 1 / sqrt(256)
  EXPECT_NEAR(rms(in->w_o), 1.0 / std::sqrt(32.0), 0.008);
  EXPECT_EQ(in->w_k.values[5], static_cast<float>(StandardNormal(p.seed, kTensorWk, 5) / 16.0));
}

TEST(InputsTest, UsesClientTensors) {
  Problem p = testing::SmallProblem();
  p.batch_size = 1;
  p.seq_len_q = p.seq_len_kv = 2;
  p.head_dim_qk = 2;
  p.layout.num_heads = 1;
  p.dtype = DType::kFloat16;
  auto tensor = [&](std::vector<float> values) {
    FloatTensor f;
    f.dtype = DType::kFloat16;
    f.values = values;
    HostTensor h;
    h.dtype = DType::kFloat16;
    h.shape = {1, 2, 1, 2};
    h.data = EncodeTensor(f);
    return h;
  };
  p.query = tensor({1, 2, 3, 4});
  p.key = tensor({-1, 0.5, 0.25, 8});
  p.value = tensor({0, 0, 1, 65504});
  const Problem n = NormalizeProblem(p);
  ASSERT_TRUE(ValidateProblem(n).ok());
  const absl::StatusOr<AttentionInputs> in = GenerateInputs(n);
  ASSERT_TRUE(in.ok());
  EXPECT_EQ(in->query.values, (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(in->key.values, (std::vector<float>{-1, 0.5, 0.25, 8}));
  EXPECT_EQ(in->value.values, (std::vector<float>{0, 0, 1, 65504}));
  EXPECT_EQ(in->value.dtype, DType::kFloat16);
}

TEST(InputsTest, LayerTakesTheClientsXOrWeightsAndDrawsTheRest) {
  Problem p = testing::SmallProblem();
  p.batch_size = 1;
  p.seq_len_q = p.seq_len_kv = 2;
  p.head_dim_qk = 2;
  p.layout.num_heads = 1;
  p.dtype = DType::kBFloat16;
  p.scope = Scope::kLayer;
  p.d_model = 2;
  auto tensor = [&](std::vector<int64_t> shape, std::vector<float> values) {
    FloatTensor f;
    f.dtype = DType::kBFloat16;
    f.values = values;
    HostTensor h;
    h.dtype = DType::kBFloat16;
    h.shape = shape;
    h.data = EncodeTensor(f);
    return h;
  };
  p.x = tensor({1, 2, 2}, {1, -2, 0.5, 3});
  Problem x_only = NormalizeProblem(p);
  ASSERT_TRUE(ValidateProblem(x_only).ok()) << ValidateProblem(x_only);
  absl::StatusOr<AttentionInputs> in = GenerateInputs(x_only);
  ASSERT_TRUE(in.ok());
  EXPECT_EQ(in->x.values, (std::vector<float>{1, -2, 0.5, 3}));
  EXPECT_EQ(in->w_v.values[3],
            RoundToDType(static_cast<float>(StandardNormal(p.seed, kTensorWv, 3) / std::sqrt(2.0)),
                         DType::kBFloat16));

  p.x.reset();
  p.w_q = tensor({2, 2}, {1, 0, 0, 1});
  p.w_k = tensor({2, 2}, {2, 0, 0, 2});
  p.w_v = tensor({2, 2}, {0, 1, 1, 0});
  p.w_o = tensor({2, 2}, {-1, 0, 0, -1});
  p.input_scale = 4.0;
  const Problem weights_only = NormalizeProblem(p);
  ASSERT_TRUE(ValidateProblem(weights_only).ok()) << ValidateProblem(weights_only);
  in = GenerateInputs(weights_only);
  ASSERT_TRUE(in.ok());
  EXPECT_EQ(in->w_k.values, (std::vector<float>{2, 0, 0, 2}));
  EXPECT_EQ(in->w_o.values, (std::vector<float>{-1, 0, 0, -1}));
  EXPECT_EQ(in->x.values[1],
            RoundToDType(static_cast<float>(StandardNormal(p.seed, kTensorX, 1) * 4.0),
                         DType::kBFloat16));
  EXPECT_TRUE(in->query.values.empty());
}

TEST(InputsTest, GradOutputOnlyForBackwardGeneratedAsTensorThreeOrTheClients) {
  Problem p = testing::SmallProblem();  // O: [2, 16, 4, 8]
  p.layout.kind = LayoutKind::kGqa;
  p.layout.num_query_heads = 4;
  p.layout.num_kv_heads = 2;
  p.head_dim_v = 3;
  p.dtype = DType::kBFloat16;
  p.input_scale = 0.5;
  const absl::StatusOr<AttentionInputs> prefill = GenerateInputs(NormalizeProblem(p));
  ASSERT_TRUE(prefill.ok());
  EXPECT_TRUE(prefill->grad_output.values.empty());
  p.phase = Phase::kBackward;
  const absl::StatusOr<AttentionInputs> in = GenerateInputs(NormalizeProblem(p));
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_EQ(in->grad_output.shape, (std::vector<int64_t>{2, 16, 4, 3}));
  EXPECT_EQ(in->grad_output.dtype, DType::kBFloat16);
  ASSERT_EQ(in->grad_output.values.size(), 2u * 16 * 4 * 3);
  for (uint64_t k : {0, 17, 383}) {
    EXPECT_EQ(in->grad_output.values[k],
              RoundToDType(static_cast<float>(StandardNormal(7, kTensorGradOutput, k) * 0.5),
                           DType::kBFloat16))
        << k;
  }
  // Q, K, V are those of the forward: the backward draws dO on its own stream.
  EXPECT_EQ(in->query.values, prefill->query.values);
  EXPECT_EQ(in->value.values, prefill->value.values);
  // The client's dO replaces it, with Q, K, V still generated.
  FloatTensor mine = in->grad_output;
  for (float& v : mine.values) v = RoundToDType(v * -3.0f, DType::kBFloat16);
  HostTensor host;
  host.dtype = DType::kBFloat16;
  host.shape = mine.shape;
  host.data = EncodeTensor(mine);
  p.grad_output = host;
  const Problem n = NormalizeProblem(p);
  ASSERT_TRUE(ValidateProblem(n).ok()) << ValidateProblem(n);
  const absl::StatusOr<AttentionInputs> client = GenerateInputs(n);
  ASSERT_TRUE(client.ok());
  EXPECT_EQ(client->grad_output.values, mine.values);
  EXPECT_EQ(client->query.values, in->query.values);
}

TEST(InputsTest, GeneratedPageTableIsASeededPermutation) {
  const std::vector<int32_t> table = GeneratePageTable(9, 1000);
  std::set<int32_t> seen(table.begin(), table.end());
  EXPECT_EQ(seen.size(), 1000u);
  EXPECT_EQ(*seen.begin(), 0);
  EXPECT_EQ(*seen.rbegin(), 999);
  EXPECT_EQ(GeneratePageTable(9, 1000), table);
  EXPECT_NE(GeneratePageTable(10, 1000), table);
  int fixed = 0;
  for (int k = 0; k < 1000; ++k) fixed += table[k] == k;
  EXPECT_LT(fixed, 10);  // a shuffle, not the identity
  // The first swap (t = 1) is decided by step 1's words, per the documented recipe.
  const std::vector<int32_t> two = GeneratePageTable(9, 2);
  const PhiloxCounter w = Philox4x32_10({1, 0, kTensorPageTable, 0}, PhiloxKeyFromSeed(9));
  const uint64_t r = (static_cast<uint64_t>(w[1]) << 32) | w[0];
  EXPECT_EQ(two, r % 2 == 0 ? (std::vector<int32_t>{1, 0}) : (std::vector<int32_t>{0, 1}));

  Problem p = testing::SmallProblem();
  p.phase = Phase::kDecode;
  p.kv_cache.paged = true;
  p.kv_cache.page_size_tokens = 5;  // 16 tokens: 4 pages per sequence, 8 in all
  EXPECT_EQ(PageTableFor(p), GeneratePageTable(p.seed, 8));
  p.kv_cache.page_table = {7, 6, 5, 4, 3, 2, 1, 0};
  EXPECT_EQ(PageTableFor(p), p.kv_cache.page_table);
}

}  // namespace
}  // namespace attnbench
