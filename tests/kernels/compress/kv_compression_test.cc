// KV-head compression's math: PCA reconstructs a group of rank <= D exactly (with RoPE too, the
// keys being low-rank after rotation), mean-pooling is exact on identical heads, PCA beats
// mean-pooling on a decaying spectrum, the compressed problem is the GQA problem §5b describes,
// and the cost bound refuses groups too wide for the eigensolver.
#include "kernels/compress/kv_compression.h"

#include <cmath>
#include <functional>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/inputs.h"
#include "kernels/spec/modifiers.h"
#include "kernels/spec/shapes.h"
#include "tests/kernels/test_util.h"

namespace attnbench {
namespace {

// MHA with 4 heads of D = 8 over S_kv = 24 keys, compressed to 2 KV heads (g = 2, width 16).
Problem Base() {
  Problem p = testing::SmallProblem();
  p.seq_len_kv = 24;
  p.kv_compression = {true, 2};
  return NormalizeProblem(p);
}

HostTensor ToHost(const FloatTensor& t) { return {t.dtype, t.shape, EncodeTensor(t)}; }

// Fills K and V of [B, S_kv, H, D] from fn(tensor, b, s, h, d) and sends them with a generated Q.
Problem WithClientKv(Problem p, const std::function<double(int, int64_t, int64_t, int, int)>& fn) {
  const ProblemShapes s = *ShapesOf(p);
  FloatTensor q = GenerateTensor(p.seed, kTensorQuery, s.query, 1.0, p.dtype);
  FloatTensor kv[2];
  for (int t = 0; t < 2; ++t) {
    kv[t].dtype = p.dtype;
    kv[t].shape = t == 0 ? s.key : s.value;
    kv[t].values.resize(NumElements(kv[t].shape));
    const int64_t heads = kv[t].shape[2], dim = kv[t].shape[3];
    for (int64_t b = 0; b < s.batch; ++b) {
      for (int64_t j = 0; j < s.seq_kv; ++j) {
        for (int h = 0; h < heads; ++h) {
          float* row = &kv[t].values[((b * s.seq_kv + j) * heads + h) * dim];
          for (int d = 0; d < dim; ++d) row[d] = static_cast<float>(fn(t, b, j, h, d));
          if (t == 0 && p.rope.enabled) {
            // fn gives the keys after RoPE; the client sends them before it.
            std::vector<double> x(row, row + dim);
            ApplyRopeTranspose(x.data(), j,
                               RopeInverseFrequencies(*p.rope.theta, *p.rope.rotary_dims));
            for (int d = 0; d < dim; ++d) row[d] = static_cast<float>(x[d]);
          }
        }
      }
    }
  }
  p.query = ToHost(q);
  p.key = ToHost(kv[0]);
  p.value = ToHost(kv[1]);
  return p;
}

// A group matrix of rank <= D: every head of group j at token (b, s) mixes the same D latent
// values z(b, s, j, :) through a fixed per-head matrix.
double LowRank(int t, int64_t b, int64_t s, int h, int d) {
  const int group = h / 2;
  double x = 0;
  for (int e = 0; e < 8; ++e) {
    const double z =
        StandardNormal(99, 20 + t, static_cast<uint64_t>(((b * 64 + s) * 4 + group) * 8 + e));
    const double m = StandardNormal(98, 30 + t, static_cast<uint64_t>((h * 8 + d) * 8 + e));
    x += z * m;
  }
  return x / 3;
}

struct Outcome {
  CompressedKv kv;
  OutputErrorReport output;
};

Outcome Compress(const Problem& p, CompressionMethod method) {
  EXPECT_TRUE(ValidateProblem(p).ok()) << ValidateProblem(p);
  absl::StatusOr<AttentionInputs> in = GenerateInputs(p);
  EXPECT_TRUE(in.ok()) << in.status();
  absl::StatusOr<CompressedKv> kv = CompressKv(p, *in, method);
  EXPECT_TRUE(kv.ok()) << kv.status();
  CheckOptions all;
  all.full = true;
  absl::StatusOr<OutputErrorReport> out = CompressedOutputError(p, *in, *kv, all);
  EXPECT_TRUE(out.ok()) << out.status();
  return {*std::move(kv), *out};
}

TEST(KvCompressionTest, PcaIsExactOnRankAtMostDGroups) {
  const Problem p = WithClientKv(Base(), LowRank);
  const Outcome pca = Compress(p, CompressionMethod::kPca);
  EXPECT_LT(pca.kv.key_error, 1e-6);
  EXPECT_LT(pca.kv.value_error, 1e-6);
  EXPECT_LT(pca.output.relative_error, 1e-6);
  EXPECT_EQ(pca.output.rows, 2 * 4 * 16);
  // Mean-pooling the same heads loses most of them.
  const Outcome mean = Compress(p, CompressionMethod::kMeanPool);
  EXPECT_GT(mean.kv.key_error, 0.3);
  EXPECT_GT(mean.output.relative_error, 100 * pca.output.relative_error);
}

TEST(KvCompressionTest, PcaCompressesKeysAfterRope) {
  Problem base = Base();
  base.rope.enabled = true;
  base = NormalizeProblem(base);
  base.seq_len_q = 5;  // bottom-right aligned queries: positions 19..23
  base.mask.kind = MaskKind::kCausal;
  const Problem p = WithClientKv(base, LowRank);
  const Outcome pca = Compress(p, CompressionMethod::kPca);
  EXPECT_LT(pca.kv.key_error, 1e-6);
  EXPECT_LT(pca.output.relative_error, 1e-6);
  EXPECT_FALSE(pca.kv.problem.rope.enabled);
  EXPECT_DOUBLE_EQ(*pca.kv.problem.scale, *p.scale);
}

TEST(KvCompressionTest, MeanPoolIsExactOnIdenticalHeads) {
  // Heads 2j and 2j + 1 equal: the mean is each of them.
  const Problem p = WithClientKv(Base(), [](int t, int64_t b, int64_t s, int h, int d) {
    return StandardNormal(5, 40 + t, static_cast<uint64_t>(((b * 64 + s) * 4 + h / 2) * 8 + d));
  });
  const Outcome mean = Compress(p, CompressionMethod::kMeanPool);
  EXPECT_EQ(mean.kv.key_error, 0);
  EXPECT_EQ(mean.kv.value_error, 0);
  EXPECT_LT(mean.output.relative_error, 1e-6);
  // The mean-pool query is the original one.
  const std::vector<float> q = *DecodeValues(p.query->data, p.dtype);
  EXPECT_EQ(mean.kv.inputs.query.values, q);  // H_out = H_q for MHA
}

TEST(KvCompressionTest, PcaBeatsMeanPoolOnADecayingSpectrum) {
  Problem p = testing::SmallProblem();
  p.layout.num_heads = 8;
  p.head_dim_qk = 16;
  p.seq_len_q = p.seq_len_kv = 64;
  p.kv_spectrum = {true, 0.8, std::nullopt};
  p.kv_compression = {true, 2};
  p = NormalizeProblem(p);
  const Outcome pca = Compress(p, CompressionMethod::kPca);
  const Outcome mean = Compress(p, CompressionMethod::kMeanPool);
  EXPECT_LT(pca.kv.key_error, 0.5 * mean.kv.key_error);
  EXPECT_LT(pca.kv.value_error, 0.5 * mean.kv.value_error);
  EXPECT_LT(pca.output.relative_error, mean.output.relative_error);
  EXPECT_GT(pca.kv.key_error, 0);  // a spectrum of rank > D is not fit exactly
}

TEST(KvCompressionTest, CompressedProblemIsGqaOverTheTargetHeads) {
  Problem p = testing::SmallProblem();
  p.layout = {};
  p.layout.kind = LayoutKind::kGqa;
  p.layout.num_query_heads = 8;
  p.layout.num_kv_heads = 4;
  p.head_dim_v = 4;
  p.phase = Phase::kDecode;
  p.seq_len_q = 2;
  p.kv_cache.paged = true;
  p.kv_cache.page_size_tokens = 4;
  p.alibi.enabled = true;
  p.kv_compression = {true, 1};
  p = NormalizeProblem(p);
  const Outcome pca = Compress(p, CompressionMethod::kPca);
  const Problem& c = pca.kv.problem;
  EXPECT_EQ(c.layout.kind, LayoutKind::kGqa);
  EXPECT_EQ(c.layout.num_query_heads, 8);
  EXPECT_EQ(c.layout.num_kv_heads, 1);
  EXPECT_FALSE(c.kv_compression.enabled);
  EXPECT_TRUE(c.alibi.enabled);
  EXPECT_TRUE(c.kv_cache.paged);
  EXPECT_EQ(c.key->shape, (std::vector<int64_t>{2, 16, 1, 8}));
  EXPECT_EQ(c.value->shape, (std::vector<int64_t>{2, 16, 1, 4}));
  EXPECT_EQ(c.query->shape, (std::vector<int64_t>{2, 2, 8, 8}));
  EXPECT_EQ(pca.kv.group_size, 4);
  // Four random heads into one: a real loss, below mean-pooling's.
  const Outcome mean = Compress(p, CompressionMethod::kMeanPool);
  EXPECT_GT(pca.kv.key_error, 0.1);
  EXPECT_LT(pca.kv.key_error, mean.kv.key_error);
}

TEST(KvCompressionTest, CostBoundRefusesWideGroups) {
  Problem p = testing::SmallProblem();
  p.layout.num_heads = 16;
  p.head_dim_qk = 128;
  p.kv_compression = {true, 2};  // g = 8, width 1024: the bound
  p = NormalizeProblem(p);
  EXPECT_TRUE(CheckCompressionCost(p).ok());
  p.kv_compression.target_kv_heads = 1;  // width 2048
  const absl::Status s = CheckCompressionCost(p);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("spec.kv_compression.target_kv_heads (1)"), std::string::npos) << s;
  EXPECT_GT(CompressionHostFlops(p), 0);
}

TEST(KvCompressionTest, MethodNames) {
  EXPECT_STREQ(CompressionMethodName(CompressionMethod::kPca), "pca");
  EXPECT_STREQ(CompressionMethodName(CompressionMethod::kMeanPool), "mean_pool");
}

}  // namespace
}  // namespace attnbench
