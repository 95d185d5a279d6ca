// The float64 backward oracle (backward64) against central finite differences of the scalar loss
// L = sum(O * dO), O from the forward oracle (reference64), on tiny shapes: every layout, mask and
// modifier, S_q != S_kv and rows with every key hidden. Plus its NaN rows and that its group
// computation does not depend on the thread count.
#include "kernels/reference/backward64.h"

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/reference/reference64.h"
#include "kernels/spec/inputs.h"
#include "tests/kernels/gradient_util.h"
#include "tests/kernels/non_finite_util.h"

namespace attnbench {
namespace {

using testing::AsBackward;
using testing::FullOracleGradients;
using testing::OracleGradients;

// B = 2, S_q = 5, S_kv = 7, D_qk = 4, D_v = 3, GQA 4/2, float32, PHASE_BACKWARD.
Problem Tiny() {
  Problem p;
  p.batch_size = 2;
  p.seq_len_q = 5;
  p.seq_len_kv = 7;
  p.head_dim_qk = 4;
  p.head_dim_v = 3;
  p.layout.kind = LayoutKind::kGqa;
  p.layout.num_query_heads = 4;
  p.layout.num_kv_heads = 2;
  p.dtype = DType::kFloat32;
  p.phase = Phase::kBackward;
  p.seed = 91;
  return p;
}

// L = sum over O of O * dO, O from the forward oracle.
double Loss(const Problem& p, const AttentionInputs& in) {
  absl::StatusOr<Reference64> oracle = Reference64::Create(p, in);
  EXPECT_TRUE(oracle.ok()) << oracle.status();
  const ProblemShapes& s = oracle->shapes();
  const int64_t heads = s.heads.num_output_heads;
  double loss = 0;
  for (int64_t row = 0; row < s.rows_total; ++row) {
    const std::vector<double> o = oracle->Row(row);
    const int64_t i = row % s.seq_q, h = (row / s.seq_q) % heads, b = row / s.seq_q / heads;
    const float* g = &in.grad_output.values[((b * s.seq_q + i) * heads + h) * s.dim_v];
    for (int64_t d = 0; d < s.dim_v; ++d) loss += o[d] * g[d];
  }
  return loss;
}

// Central differences of L in every element of `tensor` (one of in's), against `grad`. The step
// is taken in float, as the inputs are stored, and the difference divided by the step the float
// arguments really differ by.
void ExpectMatchesFiniteDifferences(const Problem& p, AttentionInputs& in, FloatTensor& tensor,
                                    const std::vector<double>& grad, const std::string& context) {
  ASSERT_EQ(tensor.values.size(), grad.size()) << context;
  constexpr float kStep = 1.0f / 4096;
  double largest = 0;
  for (double g : grad) largest = std::max(largest, std::fabs(g));
  ASSERT_GT(largest, 0) << context << ": a gradient of all zeros tests nothing";
  double worst = 0;
  size_t worst_at = 0;
  for (size_t k = 0; k < tensor.values.size(); ++k) {
    const float x = tensor.values[k];
    const float up = x + kStep, down = x - kStep;
    tensor.values[k] = up;
    const double loss_up = Loss(p, in);
    tensor.values[k] = down;
    const double loss_down = Loss(p, in);
    tensor.values[k] = x;
    const double fd = (loss_up - loss_down) / (static_cast<double>(up) - static_cast<double>(down));
    const double err = std::fabs(fd - grad[k]);
    if (err > worst) {
      worst = err;
      worst_at = k;
    }
  }
  // The step's truncation error is ~kStep^2 / 6 times L's third derivative (~1e-8 here); a
  // missing term of the gradient (a softcap derivative, a head's share, a rotation) is O(1).
  EXPECT_LE(worst, 1e-6 * largest)
      << context << ": element " << worst_at << " differs by " << worst << " (gradient "
      << grad[worst_at] << ", largest |gradient| " << largest << ")";
}

struct Case {
  std::string name;
  std::function<void(Problem&)> edit;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

void Layout(Problem& p, LayoutKind kind) {
  p.layout = {};
  p.layout.kind = kind;
}

std::vector<Case> Cases() {
  std::vector<Case> c;
  c.push_back({"mha", [](Problem& p) {
                 Layout(p, LayoutKind::kMha);
                 p.layout.num_heads = 2;
               }});
  c.push_back({"mqa", [](Problem& p) {
                 Layout(p, LayoutKind::kMqa);
                 p.layout.num_heads = 3;
                 p.mask.kind = MaskKind::kCausal;
               }});
  c.push_back({"gqa_causal", [](Problem& p) { p.mask.kind = MaskKind::kCausal; }});
  c.push_back({"sqa", [](Problem& p) {
                 Layout(p, LayoutKind::kSqa);
                 p.layout.baseline_heads = 8;
                 p.layout.num_query_heads = 4;
                 p.layout.num_kv_heads = 2;
               }});
  c.push_back({"symmetric_sqa", [](Problem& p) {
                 Layout(p, LayoutKind::kSymmetricSqa);
                 p.layout.baseline_heads = 4;
               }});
  c.push_back({"extreme_sqa", [](Problem& p) {
                 Layout(p, LayoutKind::kExtremeSqa);
                 p.layout.baseline_heads = 8;
               }});
  c.push_back({"gqkva", [](Problem& p) {
                 Layout(p, LayoutKind::kGqkva);
                 p.layout.query_groups = 2;
                 p.layout.kv_groups = 3;
               }});
  c.push_back({"explicit_map", [](Problem& p) {
                 Layout(p, LayoutKind::kExplicit);
                 p.layout.num_query_heads = 3;
                 p.layout.num_kv_heads = 2;
                 // Query head 2 read twice, kv head 1 three times, query head 1 never.
                 p.layout.pairs = {{2, 0}, {0, 1}, {2, 1}, {0, 1}};
               }});
  c.push_back({"more_queries_than_keys_causal", [](Problem& p) {
                 p.seq_len_q = 7;
                 p.seq_len_kv = 4;  // queries 0..2 sit before every key: no gradient
                 p.mask.kind = MaskKind::kCausal;
               }});
  c.push_back({"window", [](Problem& p) {
                 p.mask.kind = MaskKind::kSlidingWindow;
                 p.mask.left_tokens = 2;
                 p.mask.right_tokens = 1;
               }});
  c.push_back({"block_sparse", [](Problem& p) {
                 p.mask.kind = MaskKind::kBlockSparse;
                 p.mask.query_block_tokens = 2;
                 p.mask.kv_block_tokens = 3;
                 p.mask.blocks = {{0, 0}, {0, 2}, {1, 1}, {2, 0}};  // query block 1 keeps keys 3..5
               }});
  c.push_back({"block_sparse_causal", [](Problem& p) {
                 p.mask.kind = MaskKind::kBlockSparse;
                 p.mask.query_block_tokens = 2;
                 p.mask.kv_block_tokens = 2;
                 p.mask.blocks = {{0, 1}, {0, 2}, {1, 3}, {2, 0}, {2, 3}};
                 p.mask.intersect_causal = true;
               }});
  c.push_back({"probabilistic", [](Problem& p) {
                 p.mask.kind = MaskKind::kProbabilisticBlockSparse;
                 p.mask.query_block_tokens = 2;
                 p.mask.kv_block_tokens = 2;
                 p.mask.c_coefficient = 0.7;
                 p.mask.alpha = 1.0;
                 p.mask.seed = 4;
               }});
  c.push_back({"rope", [](Problem& p) { p.rope = {true, 50.0, std::nullopt}; }});
  c.push_back({"rope_partial", [](Problem& p) {
                 p.head_dim_qk = 6;
                 p.rope = {true, 20.0, 4};
               }});
  c.push_back({"alibi_geometric", [](Problem& p) {
                 p.alibi = {true, AlibiSchedule::kGeometric, std::nullopt};
               }});
  c.push_back({"alibi_harmonic", [](Problem& p) {
                 p.alibi = {true, AlibiSchedule::kHarmonic, 0.6};
                 p.mask.kind = MaskKind::kCausal;
               }});
  c.push_back({"softcap", [](Problem& p) {
                 p.softcap = {true, 1.5};
                 p.input_scale = 2.5;  // scores well into tanh's curve
               }});
  c.push_back({"scale", [](Problem& p) { p.scale = 0.9; }});
  c.push_back({"all_modifiers_gqkva_window", [](Problem& p) {
                 Layout(p, LayoutKind::kGqkva);
                 p.layout.query_groups = 3;
                 p.layout.kv_groups = 2;
                 p.mask.kind = MaskKind::kSlidingWindow;
                 p.mask.left_tokens = 3;
                 p.mask.right_tokens = 0;
                 p.rope = {true, 30.0, 2};
                 p.alibi = {true, AlibiSchedule::kHarmonic, 0.4};
                 p.softcap = {true, 2.0};
                 p.input_scale = 2.0;
               }});
  return c;
}

class Backward64FiniteDifferenceTest : public ::testing::TestWithParam<Case> {};

TEST_P(Backward64FiniteDifferenceTest, GradientsAreTheLossDerivatives) {
  Problem raw = Tiny();
  GetParam().edit(raw);
  const Problem p = NormalizeProblem(raw);
  ASSERT_TRUE(ValidateProblem(p).ok()) << ValidateProblem(p);
  absl::StatusOr<AttentionInputs> in = GenerateInputs(p);
  ASSERT_TRUE(in.ok()) << in.status();
  const OracleGradients g = FullOracleGradients(p, *in);
  const std::string name = GetParam().name;
  ExpectMatchesFiniteDifferences(p, *in, in->query, g.dq, name + " dQ");
  ExpectMatchesFiniteDifferences(p, *in, in->key, g.dk, name + " dK");
  ExpectMatchesFiniteDifferences(p, *in, in->value, g.dv, name + " dV");
}

INSTANTIATE_TEST_SUITE_P(Variants, Backward64FiniteDifferenceTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name;
                         });

TEST(Backward64Test, RowsWithEveryKeyHiddenHaveExactlyZeroGradient) {
  Problem raw = Tiny();
  raw.seq_len_q = 7;
  raw.seq_len_kv = 4;
  raw.mask.kind = MaskKind::kCausal;
  const Problem p = NormalizeProblem(raw);
  const absl::StatusOr<AttentionInputs> in = GenerateInputs(p);
  ASSERT_TRUE(in.ok());
  const OracleGradients g = FullOracleGradients(p, *in);
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t i = 0; i < 7; ++i) {
      for (int qh = 0; qh < 4; ++qh) {
        for (int d = 0; d < 4; ++d) {
          const double v = g.dq[((b * 7 + i) * 4 + qh) * 4 + d];
          // Rows 0..2 keep no key; row 3 keeps one, whose P = 1 whatever q is.
          if (i <= 3) {
            EXPECT_EQ(v, 0.0) << b << " " << i << " " << qh;
          } else {
            EXPECT_NE(v, 0.0) << b << " " << i << " " << qh;
          }
        }
      }
    }
  }
}

TEST(Backward64Test, KeyValueGroupsDoNotDependOnTheThreadCount) {
  Problem raw = Tiny();
  raw.seq_len_q = 41;
  raw.seq_len_kv = 37;
  raw.mask.kind = MaskKind::kCausal;
  raw.rope.enabled = true;
  raw.softcap = {true, 3.0};
  const Problem p = NormalizeProblem(raw);
  const absl::StatusOr<AttentionInputs> in = GenerateInputs(p);
  ASSERT_TRUE(in.ok());
  absl::StatusOr<Backward64> oracle = Backward64::Create(p, *in);
  ASSERT_TRUE(oracle.ok());
  const Backward64::KeyValueGrads one = oracle->KeyValueGradGroup(1, 1, 1);
  const Backward64::KeyValueGrads three = oracle->KeyValueGradGroup(1, 1, 3);
  EXPECT_EQ(one.dk, three.dk);
  EXPECT_EQ(one.dv, three.dv);
  EXPECT_EQ(one.pairs, three.pairs);
  // Causal, queries at i' = i - 4: rows 4..40 keep 1..37 keys, 703 pairs per head; two heads
  // read kv head 1, and each pair is visited twice (row statistics, then gradients).
  EXPECT_EQ(one.pairs, 2u * 2 * 703);
}

TEST(Backward64Test, NaNScoreMakesItsRowsGradientsNaN) {
  const Problem p = NormalizeProblem(Tiny());  // no mask: query row i reaches every key
  absl::StatusOr<AttentionInputs> in = GenerateInputs(p);
  ASSERT_TRUE(in.ok());
  // Past validation (which refuses it), as a kernel bug or overflow could produce it.
  in->query.values[testing::FlatIndex(in->query.shape, 1, 3, 2, 1)] =
      std::numeric_limits<float>::quiet_NaN();
  const OracleGradients g = FullOracleGradients(p, *in);
  // dQ: only row (1, 3, query head 2); dK, dV: every key of (b = 1, kv head 1), which head 2
  // reads; nothing of batch 0 or kv head 0.
  for (int64_t i = 0; i < 5; ++i) {
    for (int qh = 0; qh < 4; ++qh) {
      EXPECT_EQ(std::isnan(g.dq[((1 * 5 + i) * 4 + qh) * 4]), i == 3 && qh == 2) << i << " " << qh;
    }
  }
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t j = 0; j < 7; ++j) {
      for (int kh = 0; kh < 2; ++kh) {
        const bool poisoned = b == 1 && kh == 1;
        EXPECT_EQ(std::isnan(g.dk[((b * 7 + j) * 2 + kh) * 4]), poisoned) << b << j << kh;
        EXPECT_EQ(std::isnan(g.dv[((b * 7 + j) * 2 + kh) * 3]), poisoned) << b << j << kh;
      }
    }
  }
}

TEST(Backward64Test, RefusesWhatItDoesNotCompute) {
  Problem p = NormalizeProblem(Tiny());
  absl::StatusOr<AttentionInputs> in = GenerateInputs(p);
  ASSERT_TRUE(in.ok());
  AttentionInputs no_grad = *in;
  no_grad.grad_output = {};
  EXPECT_EQ(Backward64::Create(p, no_grad).status().code(), absl::StatusCode::kInvalidArgument);
  Problem prefill = p;
  prefill.phase = Phase::kPrefill;
  EXPECT_EQ(Backward64::Create(prefill, *in).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace attnbench
