// Work counts (§7) against hand-worked values, KeptPairs against brute force for every mask, the
// closed forms at S = 1e6, and overflow.
#include "kernels/spec/counting.h"

#include <chrono>

#include "gtest/gtest.h"
#include "kernels/spec/mask.h"
#include "tests/kernels/test_util.h"

namespace attnbench {
namespace {

Problem Base(int64_t sq, int64_t skv) {
  Problem p = testing::SmallProblem();  // B = 2, 4 heads, D = 8
  p.seq_len_q = sq;
  p.seq_len_kv = skv;
  return p;
}

WorkCounts Count(const Problem& p) {
  const Problem n = NormalizeProblem(p);
  EXPECT_TRUE(ValidateProblem(n).ok()) << ValidateProblem(n);
  absl::StatusOr<WorkCounts> w = CountWork(n);
  EXPECT_TRUE(w.ok()) << w.status();
  return w.ok() ? *w : WorkCounts{};
}

TEST(CountingTest, CausalSquare) {
  Problem p = Base(4, 4);
  p.mask.kind = MaskKind::kCausal;
  EXPECT_EQ(KeptPairs(NormalizeProblem(p), 0, 0), 10u);
  const WorkCounts w = Count(p);
  EXPECT_EQ(w.kept_pairs, 2u * 4 * 10);
  EXPECT_DOUBLE_EQ(w.flops, 2.0 * 2 * 4 * 10 * (8 + 8));
  EXPECT_DOUBLE_EQ(w.flops_flash_convention, 4.0 * 2 * 4 * 4 * 4 * 8 / 2);
  EXPECT_EQ(w.exponentials, 80u);
  EXPECT_EQ(w.projection_flops, 0);
  EXPECT_EQ(w.min_bytes, 4u * (4 * 2 * 4 * 4 * 8));  // Q, K, V, O of 256 floats each
}

TEST(CountingTest, NoneAndRectangularCausal) {
  Problem p = Base(2, 5);
  EXPECT_EQ(Count(p).kept_pairs, 2u * 4 * 10);
  EXPECT_DOUBLE_EQ(Count(p).flops_flash_convention, 4.0 * 2 * 4 * 2 * 5 * 8);
  p.mask.kind = MaskKind::kCausal;
  // Queries at positions 3 and 4: 4 + 5 keys.
  EXPECT_EQ(KeptPairs(NormalizeProblem(p), 0, 0), 9u);
  p = Base(5, 2);
  p.mask.kind = MaskKind::kCausal;
  // Queries at -3 .. 1: 0, 0, 0, 1, 2.
  EXPECT_EQ(KeptPairs(NormalizeProblem(p), 1, 3), 3u);
}

TEST(CountingTest, SlidingWindow) {
  Problem p = Base(4, 4);
  p.mask.kind = MaskKind::kSlidingWindow;
  p.mask.left_tokens = 1;
  p.mask.right_tokens = 0;
  EXPECT_EQ(KeptPairs(NormalizeProblem(p), 0, 0), 7u);  // 1 + 2 + 2 + 2
  p.mask.left_tokens.reset();
  p.mask.right_tokens = 1;
  EXPECT_EQ(KeptPairs(NormalizeProblem(p), 0, 0), 13u);  // 2 + 3 + 4 + 4
  p.mask.right_tokens.reset();
  EXPECT_EQ(KeptPairs(NormalizeProblem(p), 0, 0), 16u);
  p.mask.left_tokens = 0;
  p.mask.right_tokens = 0;
  EXPECT_EQ(KeptPairs(NormalizeProblem(p), 0, 0), 4u);  // the diagonal
  // Flash convention halves only for the causal mask.
  EXPECT_DOUBLE_EQ(Count(p).flops_flash_convention, 4.0 * 2 * 4 * 4 * 4 * 8);
}

TEST(CountingTest, BlockSparse) {
  Problem p = Base(8, 8);
  p.mask.kind = MaskKind::kBlockSparse;
  p.mask.query_block_tokens = 4;
  p.mask.kv_block_tokens = 4;
  p.mask.blocks = {{0, 0}, {1, 1}, {0, 0}};  // duplicates count once
  EXPECT_EQ(KeptPairs(NormalizeProblem(p), 0, 0), 32u);
  p.mask.intersect_causal = true;
  EXPECT_EQ(KeptPairs(NormalizeProblem(p), 0, 0), 20u);  // two 4x4 lower triangles
  p.mask.blocks = {{1, 0}, {0, 1}};
  EXPECT_EQ(KeptPairs(NormalizeProblem(p), 0, 0), 16u);  // (1, 0) whole, (0, 1) hidden
  // A ragged last block: S = 10 in blocks of 4 leaves a 2-token block.
  p = Base(10, 10);
  p.mask.kind = MaskKind::kBlockSparse;
  p.mask.query_block_tokens = 4;
  p.mask.kv_block_tokens = 4;
  p.mask.blocks = {{2, 0}, {2, 2}};
  EXPECT_EQ(KeptPairs(NormalizeProblem(p), 0, 0), 2u * 4 + 2 * 2);
}

TEST(CountingTest, GqkvaAndSqaHeads) {
  Problem p = Base(4, 4);
  p.layout = {};
  p.layout.kind = LayoutKind::kGqkva;
  p.layout.query_groups = 2;
  p.layout.kv_groups = 3;
  p.mask.kind = MaskKind::kCausal;
  const WorkCounts w = Count(p);
  EXPECT_EQ(w.kept_pairs, 2u * 6 * 10);  // H_out = 6
  EXPECT_DOUBLE_EQ(w.flops, 2.0 * 2 * 6 * 10 * 16);
  // Q: 2 query heads, K and V: 3, O: 6 heads; 4 tokens x 8 dims x B = 2 each.
  EXPECT_EQ(w.min_bytes, 4u * 2 * 4 * 8 * (2 + 3 + 3 + 6));
}

TEST(CountingTest, LayerProjections) {
  Problem p = Base(4, 4);
  p.layout = {};
  p.layout.kind = LayoutKind::kSqa;
  p.layout.baseline_heads = 8;
  p.layout.num_query_heads = 4;
  p.layout.num_kv_heads = 2;
  p.head_dim_v = 6;
  p.scope = Scope::kLayer;
  p.d_model = 16;
  p.dtype = DType::kBFloat16;
  const WorkCounts w = Count(p);
  // 2 * B * S * d_model * (H_q D_qk + H_kv D_qk + H_kv D_v) + 2 * B * S * H_out D_v * d_model
  const double tokens = 2 * 4;
  EXPECT_DOUBLE_EQ(w.projection_flops,
                   2 * tokens * 16 * (4 * 8 + 2 * 8 + 2 * 6) + 2 * tokens * 4 * 6 * 16);
  EXPECT_DOUBLE_EQ(w.flops, 2.0 * 2 * 4 * 16 * (8 + 6));
  // X, W_q, W_k, W_v, W_o, Y in bf16.
  EXPECT_EQ(w.min_bytes, 2u * (8 * 16 + 16 * 32 + 16 * 16 + 16 * 12 + 24 * 16 + 8 * 16));
}

// A layer's backward: the core's backward, twice the projections (dX and dW of each), and the
// bytes of X, the weights, dY, the saved Q, K, V, O, log-sum-exp, dX and the weight gradients.
TEST(CountingTest, LayerBackwardAndTrainingStep) {
  Problem p = Base(4, 4);
  p.layout = {};
  p.layout.kind = LayoutKind::kSqa;
  p.layout.baseline_heads = 8;
  p.layout.num_query_heads = 4;
  p.layout.num_kv_heads = 2;
  p.head_dim_v = 6;
  p.scope = Scope::kLayer;
  p.d_model = 16;
  p.dtype = DType::kBFloat16;
  const WorkCounts fwd = Count(p);
  p.phase = Phase::kBackward;
  const WorkCounts bwd = Count(p);
  p.training_step = true;
  const WorkCounts step = Count(p);
  const double tokens = 2 * 4;
  const double projections = 2 * tokens * 16 * (4 * 8 + 2 * 8 + 2 * 6) + 2 * tokens * 4 * 6 * 16;
  EXPECT_DOUBLE_EQ(fwd.projection_flops, projections);
  EXPECT_DOUBLE_EQ(bwd.projection_flops, 2 * projections);
  EXPECT_DOUBLE_EQ(step.projection_flops, 3 * projections);
  EXPECT_DOUBLE_EQ(bwd.flops, 2.5 * fwd.flops);
  EXPECT_DOUBLE_EQ(step.flops, 3.5 * fwd.flops);
  EXPECT_EQ(bwd.exponentials, fwd.exponentials);
  EXPECT_EQ(step.exponentials, 2 * fwd.exponentials);
  const uint64_t x = 8 * 16, weights = 16 * 32 + 16 * 16 + 16 * 12 + 24 * 16, y = 8 * 16;
  const uint64_t q = 8 * 4 * 8, k = 8 * 2 * 8, v = 8 * 2 * 6, o = 8 * 4 * 6;
  const uint64_t lse = 4 * 2 * 4 * 4;  // float32, B x H_out x S
  EXPECT_EQ(fwd.min_bytes, 2 * (x + weights + y));
  EXPECT_EQ(bwd.min_bytes, 2 * (x + weights + y + q + k + v + o) + lse + 2 * (x + weights));
  EXPECT_EQ(step.min_bytes, bwd.min_bytes + 2 * (x + weights + y) + 2 * (q + k + v + o) + lse);
}

TEST(CountingTest, BackwardIsTwoAndAHalfForwardAndAStepThreeAndAHalf) {
  Problem p = Base(4, 4);
  p.mask.kind = MaskKind::kCausal;
  const WorkCounts fwd = Count(p);
  p.phase = Phase::kBackward;
  const WorkCounts bwd = Count(p);
  p.training_step = true;
  const WorkCounts step = Count(p);
  EXPECT_EQ(bwd.kept_pairs, fwd.kept_pairs);
  EXPECT_EQ(step.kept_pairs, fwd.kept_pairs);
  EXPECT_DOUBLE_EQ(bwd.flops, 2.5 * fwd.flops);
  EXPECT_DOUBLE_EQ(bwd.flops_flash_convention, 2.5 * fwd.flops_flash_convention);
  EXPECT_DOUBLE_EQ(step.flops, 3.5 * fwd.flops);
  EXPECT_DOUBLE_EQ(step.flops_flash_convention, 3.5 * fwd.flops_flash_convention);
  // P recomputed once in the backward; the step's forward computes it too.
  EXPECT_EQ(bwd.exponentials, fwd.exponentials);
  EXPECT_EQ(step.exponentials, 2 * fwd.exponentials);
}

TEST(CountingTest, BackwardBytes) {
  // GQA 4/2 in bf16, S_q = 3, S_kv = 5, D_qk = 8, D_v = 6, B = 2: every tensor a different size.
  Problem p = Base(3, 5);
  p.layout.kind = LayoutKind::kGqa;
  p.layout.num_query_heads = 4;
  p.layout.num_kv_heads = 2;
  p.head_dim_v = 6;
  p.dtype = DType::kBFloat16;
  p.phase = Phase::kBackward;
  const uint64_t q = 2 * 3 * 4 * 8, k = 2 * 5 * 2 * 8, v = 2 * 5 * 2 * 6, o = 2 * 3 * 4 * 6;
  const uint64_t lse = 4 * (2 * 4 * 3);  // float32, one per (b, h, i)
  // Reads Q, K, V, O, dO and the log-sum-exp; writes dQ, dK, dV.
  const uint64_t backward = 2 * (q + k + v + o + o) + lse + 2 * (q + k + v);
  EXPECT_EQ(Count(p).min_bytes, backward);
  // A step's forward reads Q, K, V and writes O and the log-sum-exp first.
  p.training_step = true;
  EXPECT_EQ(Count(p).min_bytes, backward + 2 * (q + k + v + o) + lse);
}

TEST(CountingTest, DecodeCacheBytesAtStoredWidth) {
  Problem p = Base(2, 100);
  p.layout = {};
  p.layout.kind = LayoutKind::kGqa;
  p.layout.num_query_heads = 4;
  p.layout.num_kv_heads = 2;
  p.head_dim_qk = 8;
  p.head_dim_v = 5;
  p.phase = Phase::kDecode;
  p.dtype = DType::kFloat16;
  const uint64_t qo = 2u * 2 * 2 * 4 * (8 + 5);  // Q and O in fp16: B * S_q * H * D * 2 bytes
  const uint64_t rows = 2 * 100 * 2;             // (b, token, kv head)
  EXPECT_EQ(Count(p).min_bytes, qo + rows * 2 * (8 + 5));
  p.kv_cache.format = CacheFormat::kInt8;
  EXPECT_EQ(Count(p).min_bytes, qo + rows * ((8 + 4) + (5 + 4)));
  p.kv_cache.format = CacheFormat::kInt4;
  EXPECT_EQ(Count(p).min_bytes, qo + rows * ((4 + 4) + (3 + 4)));
  p.kv_cache.format = CacheFormat::kUnspecified;
  p.kv_cache.saq_bands = {
      {10, CacheFormat::kNative}, {30, CacheFormat::kInt8}, {std::nullopt, CacheFormat::kInt4}};
  EXPECT_EQ(Count(p).min_bytes, qo + 2 * 2 * (10 * 2 * 13 + 30 * (12 + 9) + 60 * (8 + 7)));
  // Bands that stop short leave the oldest tokens native.
  p.kv_cache.saq_bands = {{10, CacheFormat::kInt4}};
  EXPECT_EQ(Count(p).min_bytes, qo + 2 * 2 * (10 * (8 + 7) + 90 * 2 * 13));
  // A paged cache also reads its page table: an int32 per page, ceil(100 / 16) = 7 a sequence.
  p.kv_cache.saq_bands.clear();
  p.kv_cache.paged = true;
  p.kv_cache.page_size_tokens = 16;
  EXPECT_EQ(Count(p).min_bytes, qo + rows * 2 * (8 + 5) + 2 * 7 * 4);
}

TEST(CountingTest, KeptPairsMatchBruteForce) {
  std::vector<Problem> problems;
  for (auto [sq, skv] :
       {std::pair<int64_t, int64_t>{37, 53}, {53, 37}, {40, 40}, {3, 61}, {150, 211}}) {
    Problem c = Base(sq, skv);
    c.mask.kind = MaskKind::kCausal;
    problems.push_back(c);
    Problem w = Base(sq, skv);
    w.mask.kind = MaskKind::kSlidingWindow;
    w.mask.left_tokens = 7;
    w.mask.right_tokens = 3;
    problems.push_back(w);
    w.mask.right_tokens.reset();
    problems.push_back(w);
    w.mask.left_tokens.reset();
    w.mask.right_tokens = 0;
    problems.push_back(w);
    Problem bs = Base(sq, skv);
    bs.mask.kind = MaskKind::kBlockSparse;
    bs.mask.query_block_tokens = 6;
    bs.mask.kv_block_tokens = 7;
    bs.mask.blocks = {{0, 0}, {0, 5}, {0, 1}};
    bs.mask.intersect_causal = true;
    problems.push_back(bs);
    bs.mask.intersect_causal = false;
    problems.push_back(bs);
    Problem pr = Base(sq, skv);
    pr.mask.kind = MaskKind::kProbabilisticBlockSparse;
    pr.mask.query_block_tokens = 5;
    pr.mask.kv_block_tokens = 3;
    pr.mask.c_coefficient = 0.8;
    pr.mask.alpha = 0.7;
    pr.mask.seed = 99;
    problems.push_back(pr);
  }
  for (const Problem& raw : problems) {
    const Problem p = NormalizeProblem(raw);
    ASSERT_TRUE(ValidateProblem(p).ok()) << ValidateProblem(p);
    const MaskEvaluator eval(p);
    uint64_t total = 0;
    for (int64_t b = 0; b < p.batch_size; ++b) {
      for (int h = 0; h < 4; ++h) {
        uint64_t n = 0;
        for (int64_t i = 0; i < p.seq_len_q; ++i) {
          for (int64_t j = 0; j < p.seq_len_kv; ++j) n += eval.Keeps(b, h, i, j);
        }
        ASSERT_EQ(KeptPairs(p, b, h), n) << MaskName(p.mask.kind) << " " << p.seq_len_q << "x"
                                         << p.seq_len_kv << " b" << b << " h" << h;
        // The coverage count every mask falls back to agrees too.
        ASSERT_EQ(KeptPairsFromCoverage(p, b, h), n) << MaskName(p.mask.kind);
        total += n;
      }
    }
    EXPECT_EQ(CountWork(p)->kept_pairs, total);
  }
}

TEST(CountingTest, MillionTokensInClosedForm) {
  Problem p = Base(1000000, 1000000);
  p.batch_size = 1;
  p.mask.kind = MaskKind::kCausal;
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(KeptPairs(NormalizeProblem(p), 0, 0), 500000500000u);
  p.mask.kind = MaskKind::kSlidingWindow;
  p.mask.left_tokens = 999;
  p.mask.right_tokens = 0;
  // Rows 0..998 see i + 1 keys, the rest 1000.
  EXPECT_EQ(KeptPairs(NormalizeProblem(p), 0, 0), 999u * 1000 / 2 + (1000000u - 999) * 1000);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 0.1);
}

// Found by tests/fuzz: 2^30 sequences of 16 tokens pass every size rule, and counting their
// probabilistic mask block by block kept a server thread busy for hours before any memory limit.
TEST(CountingTest, ProbabilisticDrawsOverTheLimitAreRefusedAtOnce) {
  Problem p = Base(16, 16);
  p.batch_size = int64_t{1} << 30;
  p.layout.num_heads = 1;
  p.head_dim_qk = 1;
  p.mask.kind = MaskKind::kProbabilisticBlockSparse;
  p.mask.query_block_tokens = 8;
  p.mask.kv_block_tokens = 8;
  p.mask.c_coefficient = 0.5;
  p.mask.alpha = 1.0;
  const Problem n = NormalizeProblem(p);
  ASSERT_TRUE(ValidateProblem(n).ok()) << ValidateProblem(n);
  const auto start = std::chrono::steady_clock::now();
  const absl::StatusOr<WorkCounts> w = CountWork(n);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 1.0);
  ASSERT_EQ(w.status().code(), absl::StatusCode::kResourceExhausted) << w.status();
  EXPECT_NE(w.status().message().find("spec.mask.probabilistic_block_sparse"), std::string::npos)
      << w.status();
  // The same mask over 1024 sequences is counted as before.
  p.batch_size = int64_t{1} << 10;
  EXPECT_TRUE(CountWork(NormalizeProblem(p)).ok());
}

TEST(CountingTest, OverflowIsInvalidArgument) {
  Problem p = Base(int64_t{1} << 39, int64_t{1} << 39);  // 2^78 pairs
  p.batch_size = 1;
  p.layout.num_heads = 1;
  p.head_dim_qk = 1;
  const Problem n = NormalizeProblem(p);
  ASSERT_TRUE(ValidateProblem(n).ok()) << ValidateProblem(n);
  EXPECT_EQ(CountWork(n).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace attnbench
