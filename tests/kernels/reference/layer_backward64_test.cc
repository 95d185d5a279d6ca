// The layer's float64 backward oracle (layer_backward64) against central finite differences of
// the layer's scalar loss L = sum(Y * dY), Y from the forward oracle (reference64 at layer scope),
// in every element of X and of each weight, on tiny layers of every head-map family with and
// without RoPE, causal and not; and the layer check (CheckGradients at layer scope) passing the
// oracle's own gradients and failing each tensor it is given wrong.
#include "kernels/reference/layer_backward64.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/reference/gradient_check.h"
#include "kernels/reference/reference64.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/inputs.h"

namespace attnbench {
namespace {

// B = 2, S = 5, d_model = 6, D_qk = 4, D_v = 3, GQA 4/2, float32, layer-scope PHASE_BACKWARD.
Problem TinyLayer() {
  Problem p;
  p.batch_size = 2;
  p.seq_len_q = p.seq_len_kv = 5;
  p.head_dim_qk = 4;
  p.head_dim_v = 3;
  p.layout.kind = LayoutKind::kGqa;
  p.layout.num_query_heads = 4;
  p.layout.num_kv_heads = 2;
  p.scope = Scope::kLayer;
  p.d_model = 6;
  p.dtype = DType::kFloat32;
  p.phase = Phase::kBackward;
  p.seed = 17;
  return p;
}

// L = sum over Y of Y * dY, Y from the forward oracle.
double Loss(const Problem& p, const AttentionInputs& in) {
  absl::StatusOr<Reference64> oracle = Reference64::Create(p, in);
  EXPECT_TRUE(oracle.ok()) << oracle.status();
  const ProblemShapes& s = oracle->shapes();
  double loss = 0;
  for (int64_t row = 0; row < s.rows_total; ++row) {
    const std::vector<double> y = oracle->Row(row);
    for (int64_t c = 0; c < s.d_model; ++c)
      loss += y[c] * in.grad_output.values[row * s.d_model + c];
  }
  return loss;
}

// Central differences of L in every element of `tensor` (one of in's) against `grad`. The layer
// stores Q, K, V and O in float32 on the way, which makes L a staircase at float32's resolution
// (steps of ~1e-7 relative): the step is taken large enough (1/64) that their noise, divided by
// it, stays near 1e-5, while its truncation error (step^2 / 6 times L''') stays near 1e-4; a
// missing term of a gradient (a head's share, a rotation, a transpose) is O(1).
void ExpectMatchesFiniteDifferences(const Problem& p, AttentionInputs& in, FloatTensor& tensor,
                                    const std::vector<double>& grad, const std::string& context) {
  ASSERT_EQ(tensor.values.size(), grad.size()) << context;
  constexpr float kStep = 1.0f / 64;
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
  EXPECT_LE(worst, 2e-3 * largest)
      << context << ": element " << worst_at << " differs by " << worst << " (gradient "
      << grad[worst_at] << ", largest |gradient| " << largest << ")";
}

struct Case {
  std::string name;
  std::function<void(Problem&)> edit;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::vector<Case> Cases() {
  return {
      {"gqa", [](Problem&) {}},
      {"mha_causal_rope",
       [](Problem& p) {
         p.layout = {};
         p.layout.kind = LayoutKind::kMha;
         p.layout.num_heads = 2;
         p.mask.kind = MaskKind::kCausal;
         p.rope.enabled = true;
       }},
      {"sqa_softcap",
       [](Problem& p) {
         p.layout = {};
         p.layout.kind = LayoutKind::kSqa;
         p.layout.baseline_heads = 8;
         p.layout.num_query_heads = 4;
         p.layout.num_kv_heads = 2;
         p.softcap = {true, 2.0};
       }},
      {"gqkva_alibi_causal",
       [](Problem& p) {
         p.layout = {};
         p.layout.kind = LayoutKind::kGqkva;
         p.layout.query_groups = 2;
         p.layout.kv_groups = 3;
         p.alibi.enabled = true;
         p.mask.kind = MaskKind::kCausal;
       }},
  };
}

class LayerBackward64FiniteDifferenceTest : public ::testing::TestWithParam<Case> {};

TEST_P(LayerBackward64FiniteDifferenceTest, GradientsAreTheLossDerivatives) {
  Problem raw = TinyLayer();
  GetParam().edit(raw);
  const Problem p = NormalizeProblem(raw);
  ASSERT_TRUE(ValidateProblem(p).ok()) << ValidateProblem(p);
  absl::StatusOr<AttentionInputs> in = GenerateInputs(p);
  ASSERT_TRUE(in.ok()) << in.status();
  absl::StatusOr<LayerGradients64> g = LayerBackward64(p, *in, 3);
  ASSERT_TRUE(g.ok()) << g.status();
  const std::string name = GetParam().name;
  ExpectMatchesFiniteDifferences(p, *in, in->x, g->dx, name + " dX");
  ExpectMatchesFiniteDifferences(p, *in, in->w_q, g->dw_q, name + " dW_q");
  ExpectMatchesFiniteDifferences(p, *in, in->w_k, g->dw_k, name + " dW_k");
  ExpectMatchesFiniteDifferences(p, *in, in->w_v, g->dw_v, name + " dW_v");
  ExpectMatchesFiniteDifferences(p, *in, in->w_o, g->dw_o, name + " dW_o");
}

INSTANTIATE_TEST_SUITE_P(Variants, LayerBackward64FiniteDifferenceTest,
                         ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name;
                         });

TEST(LayerBackward64Test, DoesNotDependOnTheThreadCount) {
  const Problem p = NormalizeProblem(TinyLayer());
  absl::StatusOr<AttentionInputs> in = GenerateInputs(p);
  ASSERT_TRUE(in.ok());
  absl::StatusOr<LayerGradients64> one = LayerBackward64(p, *in, 1);
  absl::StatusOr<LayerGradients64> four = LayerBackward64(p, *in, 4);
  ASSERT_TRUE(one.ok() && four.ok());
  EXPECT_EQ(one->dx, four->dx);
  EXPECT_EQ(one->dw_q, four->dw_q);
  EXPECT_EQ(one->dw_k, four->dw_k);
  EXPECT_EQ(one->dw_v, four->dw_v);
  EXPECT_EQ(one->dw_o, four->dw_o);
}

TEST(LayerBackward64Test, RefusesWhatItDoesNotCompute) {
  Problem core = TinyLayer();
  core.scope = Scope::kCore;
  core.d_model.reset();
  core = NormalizeProblem(core);
  absl::StatusOr<AttentionInputs> in = GenerateInputs(core);
  ASSERT_TRUE(in.ok());
  EXPECT_EQ(LayerBackward64(core, *in, 1).status().code(), absl::StatusCode::kInvalidArgument);

  const Problem layer = NormalizeProblem(TinyLayer());
  absl::StatusOr<AttentionInputs> layer_in = GenerateInputs(layer);
  ASSERT_TRUE(layer_in.ok());
  layer_in->grad_output.values.pop_back();
  const absl::Status s = LayerBackward64(layer, *layer_in, 1).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("grad_output"), std::string::npos) << s;
}

// The oracle's own gradients, stored in the dtype, as a backend would return them.
GradientTensors Stored(const Problem& p, const LayerGradients64& g) {
  const ProblemShapes s = *ShapesOf(p);
  auto tensor = [&](const std::vector<double>& values, const Shape& shape) {
    FloatTensor t;
    t.dtype = p.dtype;
    t.shape = shape;
    for (double v : values) t.values.push_back(RoundToDType(static_cast<float>(v), p.dtype));
    return t;
  };
  GradientTensors out;
  out.dx = tensor(g.dx, s.x);
  out.dw_q = tensor(g.dw_q, s.w_q);
  out.dw_k = tensor(g.dw_k, s.w_k);
  out.dw_v = tensor(g.dw_v, s.w_v);
  out.dw_o = tensor(g.dw_o, s.w_o);
  return out;
}

TEST(LayerGradientCheckTest, PassesTheOraclesGradientsAndFailsEachWrongOne) {
  for (DType dtype : {DType::kFloat32, DType::kBFloat16}) {
    Problem raw = TinyLayer();
    raw.dtype = dtype;
    const Problem p = NormalizeProblem(raw);
    absl::StatusOr<AttentionInputs> in = GenerateInputs(p);
    ASSERT_TRUE(in.ok());
    absl::StatusOr<LayerGradients64> g = LayerBackward64(p, *in, 2);
    ASSERT_TRUE(g.ok());
    const GradientTensors right = Stored(p, *g);
    CheckOptions options;
    options.max_rows = 1;  // a layer is checked whole whatever the sampling asks
    absl::StatusOr<CorrectnessReport> report = CheckGradients(p, *in, right, options);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_TRUE(report->passed) << DTypeName(dtype) << " " << report->relative_error;
    const std::vector<std::string> names = {"dx", "dw_q", "dw_k", "dw_v", "dw_o"};
    ASSERT_EQ(report->tensors.size(), names.size());
    for (size_t k = 0; k < names.size(); ++k) {
      EXPECT_EQ(report->tensors[k].name, names[k]);
      EXPECT_EQ(report->tensors[k].rows_checked, report->tensors[k].rows_total);
    }
    EXPECT_EQ(report->tensors[0].rows_total, 2 * 5);      // dX: B * S rows
    EXPECT_EQ(report->tensors[4].rows_total, 4 * 3);  // dW_o: H_out * D_v rows
    // Each gradient wrong on its own (one element's sign flipped, the largest): only it fails.
    FloatTensor GradientTensors::*members[] = {&GradientTensors::dx, &GradientTensors::dw_q,
                                               &GradientTensors::dw_k, &GradientTensors::dw_v,
                                               &GradientTensors::dw_o};
    for (size_t k = 0; k < names.size(); ++k) {
      GradientTensors wrong = right;
      std::vector<float>& v = (wrong.*members[k]).values;
      auto largest = std::max_element(v.begin(), v.end(),
                                      [](float a, float b) { return std::fabs(a) < std::fabs(b); });
      *largest = -*largest;
      absl::StatusOr<CorrectnessReport> bad = CheckGradients(p, *in, wrong, options);
      ASSERT_TRUE(bad.ok());
      EXPECT_FALSE(bad->passed) << names[k];
      for (size_t j = 0; j < names.size(); ++j) {
        EXPECT_EQ(bad->tensors[j].passed, j != k) << names[k] << " wrong, " << names[j];
      }
    }
    // A gradient of the core's shape where the layer's belongs is refused, not compared.
    GradientTensors misshapen = right;
    misshapen.dw_k.shape = {1};
    EXPECT_EQ(CheckGradients(p, *in, misshapen, options).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

TEST(LayerGradientCheckTest, CostCountsTheWholeLayer) {
  const Problem p = NormalizeProblem(TinyLayer());
  absl::StatusOr<WorkCounts> counts = CountWork(p);
  ASSERT_TRUE(counts.ok());
  CheckOptions sampled;
  sampled.max_rows = 1;
  CheckOptions full;
  full.full = true;
  const GradientCheckCost a = EstimateGradientCheckCost(p, *counts, sampled);
  const GradientCheckCost b = EstimateGradientCheckCost(p, *counts, full);
  EXPECT_DOUBLE_EQ(a.flops, b.flops);  // the layer's check is whole either way
  EXPECT_GT(a.flops, 3 * LayerProjectionFlops(*ShapesOf(p)));
}

}  // namespace
}  // namespace attnbench
