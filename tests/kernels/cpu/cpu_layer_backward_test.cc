// cpu_reference's PHASE_BACKWARD at layer scope against the layer's float64 oracle
// (layer_backward64, itself checked against finite differences in layer_backward64_test.cc):
// dX and the four weight gradients on odd sizes (S not a multiple of any tile, d_model, D_qk and
// D_v all different) for MHA, GQA and SQA, with and without RoPE, causal and not, in float32,
// bfloat16 and float16. Plus the workload's contract: the layer check passing, a client's dY,
// determinism over thread counts, training step against backward only, the time split, the
// memory estimate against what is allocated, and what the backend's allow-list declares.
#include <malloc.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "kernels/backend_support.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/reference/gradient_check.h"
#include "kernels/reference/layer_backward64.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/inputs.h"
#include "tests/kernels/gradient_util.h"
#include "tests/kernels/test_util.h"

namespace attnbench {
namespace {

// B = 2, S = 37, d_model = 44, D_qk = 40, D_v = 24, GQA 6/3, float32, layer-scope backward.
Problem OddLayer() {
  Problem p = testing::OddGqaProblem();
  p.seq_len_kv = p.seq_len_q;
  p.scope = Scope::kLayer;
  p.d_model = 44;
  p.phase = Phase::kBackward;
  return p;
}

IterationOptions NoFlush() {
  IterationOptions o;
  o.flush_cache = false;
  return o;
}

struct LayerRun {
  Problem problem;
  std::unique_ptr<Workload> workload;
  GradientTensors gradients;
  FloatTensor output;
  std::optional<LayerSplit> split;
  double seconds = 0;
};

LayerRun RunLayer(const Problem& raw, int threads = 2) {
  LayerRun r;
  r.problem = NormalizeProblem(raw);
  const absl::Status valid = ValidateProblem(r.problem);
  EXPECT_TRUE(valid.ok()) << valid;
  std::unique_ptr<Backend> backend = MakeCpuReferenceBackend(threads);
  const absl::Status supported = backend->CheckSupported(r.problem);
  EXPECT_TRUE(supported.ok()) << supported;
  absl::StatusOr<std::unique_ptr<Workload>> w = backend->Prepare(r.problem, 0);
  EXPECT_TRUE(w.ok()) << w.status();
  if (!w.ok()) return r;
  r.workload = *std::move(w);
  EXPECT_TRUE(r.workload->BeforeIteration(NoFlush()).ok());
  absl::StatusOr<double> seconds = r.workload->RunTimed();
  EXPECT_TRUE(seconds.ok() && *seconds > 0) << seconds.status();
  if (seconds.ok()) r.seconds = *seconds;
  absl::StatusOr<GradientTensors> g = r.workload->Gradients();
  EXPECT_TRUE(g.ok()) << g.status();
  if (g.ok()) r.gradients = *std::move(g);
  absl::StatusOr<FloatTensor> out = r.workload->Output();
  EXPECT_TRUE(out.ok()) << out.status();
  if (out.ok()) r.output = *std::move(out);
  r.split = r.workload->LastLayerSplit();
  return r;
}

// Each gradient's relative L2 error against the oracle. Every one is a float32 sum rounded once to
// the dtype, from intermediates (Q, K, V, O, dO, dQ, dK, dV) that the backend and the oracle each
// round to the dtype. In float32 the two differ by float32's accumulation noise (measured over
// these cases: at most 1e-6). In 16 bits the final rounding alone is about u / sqrt(3) relative
// (u = 2^-11 for float16, 2^-9 for bfloat16: 2.8e-4 and 1.1e-3), plus intermediates that round to
// neighbouring values where float32 and double sums straddle a rounding boundary (measured: at
// most 2.2e-4 for float16, 1.7e-3 for bfloat16). The bounds are three to five times those.
double Bound(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return 1e-3;
    case DType::kBFloat16:
      return 5e-3;
    default:
      return 5e-6;
  }
}

void ExpectGradientsClose(const LayerRun& r, const std::string& context) {
  absl::StatusOr<LayerGradients64> ref = LayerBackward64(r.problem, r.workload->Inputs(), 2);
  ASSERT_TRUE(ref.ok()) << ref.status();
  const struct {
    const char* name;
    const FloatTensor& got;
    const std::vector<double>& want;
  } tensors[] = {{"dX", r.gradients.dx, ref->dx},
                 {"dW_q", r.gradients.dw_q, ref->dw_q},
                 {"dW_k", r.gradients.dw_k, ref->dw_k},
                 {"dW_v", r.gradients.dw_v, ref->dw_v},
                 {"dW_o", r.gradients.dw_o, ref->dw_o}};
  for (const auto& t : tensors) {
    ASSERT_EQ(t.got.values.size(), t.want.size()) << context << " " << t.name;
    double largest = 0;
    for (double v : t.want) largest = std::max(largest, std::fabs(v));
    ASSERT_GT(largest, 0) << context << " " << t.name << ": an all-zero gradient tests nothing";
    const double err = testing::RelativeError(t.got.values, t.want);
    EXPECT_LE(err, Bound(r.problem.dtype)) << context << " " << t.name;
    ::testing::Test::RecordProperty(context + "_" + t.name, absl::StrFormat("%.3g", err));
  }
  // And the check a server runs on it passes, naming the five.
  CheckOptions options;
  absl::StatusOr<CorrectnessReport> report =
      CheckGradients(r.problem, r.workload->Inputs(), r.gradients, options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->passed) << context << ": relative error " << report->relative_error;
  ASSERT_EQ(report->tensors.size(), 5u);
  EXPECT_EQ(report->tensors[0].name, "dx");
}

struct Case {
  std::string name;
  std::function<void(Problem&)> edit;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

void Mha(Problem& p) {
  p.layout = {};
  p.layout.kind = LayoutKind::kMha;
  p.layout.num_heads = 4;
}
void Sqa(Problem& p) {
  p.layout = {};
  p.layout.kind = LayoutKind::kSqa;
  p.layout.baseline_heads = 8;
  p.layout.num_query_heads = 4;
  p.layout.num_kv_heads = 2;
}
void RopeCausal(Problem& p) {
  p.rope.enabled = true;
  p.mask.kind = MaskKind::kCausal;
}

std::vector<Case> Cases() {
  std::vector<Case> c = {
      {"gqa", [](Problem&) {}},
      {"gqa_rope_causal", RopeCausal},
      {"mha", Mha},
      {"mha_rope",
       [](Problem& p) {
         Mha(p);
         p.rope.enabled = true;
       }},
      {"sqa_causal",
       [](Problem& p) {
         Sqa(p);
         p.mask.kind = MaskKind::kCausal;
       }},
      {"sqa_rope_causal_dv_differs",
       [](Problem& p) {
         Sqa(p);
         RopeCausal(p);
         p.head_dim_v = 17;
       }},
  };
  for (DType d : {DType::kBFloat16, DType::kFloat16}) {
    const std::string name = DTypeName(d);
    c.push_back({name + "_gqa_rope_causal", [d](Problem& p) {
                   p.dtype = d;
                   RopeCausal(p);
                 }});
    c.push_back({name + "_mha", [d](Problem& p) {
                   p.dtype = d;
                   Mha(p);
                 }});
    c.push_back({name + "_sqa_rope", [d](Problem& p) {
                   p.dtype = d;
                   Sqa(p);
                   p.rope.enabled = true;
                 }});
  }
  return c;
}

class CpuLayerBackwardVsOracleTest : public ::testing::TestWithParam<Case> {};

TEST_P(CpuLayerBackwardVsOracleTest, EveryGradientMatches) {
  Problem p = OddLayer();
  GetParam().edit(p);
  const LayerRun r = RunLayer(p);
  ASSERT_NE(r.workload, nullptr);
  ExpectGradientsClose(r, GetParam().name);
  // Only the layer's gradients: dQ, dK, dV are the core's, which a layer does not return.
  EXPECT_TRUE(r.gradients.dq.values.empty());
  EXPECT_EQ(r.output.shape, (Shape{2, 37, 44}));
}

INSTANTIATE_TEST_SUITE_P(Variants, CpuLayerBackwardVsOracleTest, ::testing::ValuesIn(Cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name;
                         });

// dY doubled doubles every gradient exactly (a power of two commutes with every rounding), so a
// client's dY is the one used, in Y's shape.
TEST(CpuLayerBackwardTest, UsesTheClientsGradOutput) {
  Problem p = OddLayer();
  RopeCausal(p);
  const LayerRun generated = RunLayer(p);
  ASSERT_NE(generated.workload, nullptr);
  FloatTensor dy = generated.workload->Inputs().grad_output;
  ASSERT_EQ(dy.shape, (Shape{2, 37, 44}));
  for (float& v : dy.values) v *= 2;
  p.grad_output = testing::ToHost(dy);
  const LayerRun client = RunLayer(p);
  ASSERT_NE(client.workload, nullptr);
  for (FloatTensor GradientTensors::*m :
       {&GradientTensors::dx, &GradientTensors::dw_q, &GradientTensors::dw_k,
        &GradientTensors::dw_v, &GradientTensors::dw_o}) {
    const std::vector<float>& a = (generated.gradients.*m).values;
    const std::vector<float>& b = (client.gradients.*m).values;
    ASSERT_EQ(a.size(), b.size());
    for (size_t k = 0; k < a.size(); ++k) ASSERT_EQ(2 * a[k], b[k]) << k;
  }
  EXPECT_EQ(generated.output.values, client.output.values);  // Y does not read dY
}

TEST(CpuLayerBackwardTest, DeterministicOverThreadCountsAndTrainingStepMatches) {
  Problem p = OddLayer();
  Sqa(p);
  RopeCausal(p);
  const LayerRun one = RunLayer(p, 1);
  const LayerRun three = RunLayer(p, 3);
  Problem step = p;
  step.training_step = true;
  const LayerRun stepped = RunLayer(step, 2);
  for (FloatTensor GradientTensors::*m :
       {&GradientTensors::dx, &GradientTensors::dw_q, &GradientTensors::dw_k,
        &GradientTensors::dw_v, &GradientTensors::dw_o}) {
    EXPECT_EQ((one.gradients.*m).values, (three.gradients.*m).values);
    EXPECT_EQ((one.gradients.*m).values, (stepped.gradients.*m).values);
  }
  EXPECT_EQ(one.output.values, stepped.output.values);
}

// The split covers the timed iteration: projections and core both measured, adding up to no more
// than the total; a training step times the forward too, so its core and projections are both
// longer than the backward alone's on a shape where each part takes milliseconds.
TEST(CpuLayerBackwardTest, SplitsEachIterationBetweenProjectionsAndCore) {
  Problem p = OddLayer();
  p.seq_len_q = p.seq_len_kv = 300;
  p.d_model = 256;
  for (bool step : {false, true}) {
    p.training_step = step;
    const LayerRun r = RunLayer(p);
    ASSERT_TRUE(r.split.has_value()) << step;
    EXPECT_GT(r.split->projections_seconds, 0) << step;
    EXPECT_GT(r.split->core_seconds, 0) << step;
    EXPECT_LE(r.split->projections_seconds + r.split->core_seconds, r.seconds) << step;
  }
}

uint64_t HeapBytes() {
  const struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

TEST(CpuLayerBackwardTest, EstimateCoversWhatTheWorkloadAllocates) {
  Problem raw = OddLayer();
  raw.seq_len_q = raw.seq_len_kv = 400;
  raw.d_model = 256;
  raw.head_dim_qk = 64;
  raw.head_dim_v = 64;
  raw.rope.enabled = true;
  const Problem p = NormalizeProblem(raw);
  std::unique_ptr<Backend> backend = MakeCpuReferenceBackend(2);
  const uint64_t estimate = backend->EstimateBytes(p);
  const uint64_t before = HeapBytes();
  {
    absl::StatusOr<std::unique_ptr<Workload>> w = backend->Prepare(p, 0);
    ASSERT_TRUE(w.ok()) << w.status();
    ASSERT_TRUE((*w)->BeforeIteration(NoFlush()).ok());
    ASSERT_TRUE((*w)->RunTimed().ok());
    const absl::StatusOr<GradientTensors> g = (*w)->Gradients();
    const absl::StatusOr<FloatTensor> o = (*w)->Output();
    ASSERT_TRUE(g.ok() && o.ok());
    const uint64_t held = HeapBytes() - before;
    EXPECT_LE(held, estimate);
    EXPECT_GE(held, estimate / 2) << "the estimate is far above what is allocated";
  }
  // The core's backward of the same shapes holds none of the layer's tensors.
  Problem core = CoreProblemOfLayer(p);
  EXPECT_LT(backend->EstimateBytes(core), estimate);
}

// A stop asked before the work ends the iteration as CANCELLED with nothing handed out; the
// untimed forward of a backward-only run stops too, and the next BeforeIteration redoes it.
TEST(CpuLayerBackwardTest, StopsWhenAsked) {
  const StopCheck at_once([] { return true; });
  IterationOptions stopped = NoFlush();
  stopped.stop = &at_once;
  std::unique_ptr<Backend> backend = MakeCpuReferenceBackend(2);
  Problem step = OddLayer();
  step.training_step = true;
  step = NormalizeProblem(step);
  absl::StatusOr<std::unique_ptr<Workload>> w = backend->Prepare(step, 0);
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE((*w)->BeforeIteration(stopped).ok());  // a step has no untimed forward
  EXPECT_EQ((*w)->RunTimed().status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ((*w)->Gradients().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*w)->Output().status().code(), absl::StatusCode::kFailedPrecondition);

  const Problem alone = NormalizeProblem(OddLayer());
  absl::StatusOr<std::unique_ptr<Workload>> b = backend->Prepare(alone, 0);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ((*b)->BeforeIteration(stopped).code(), absl::StatusCode::kCancelled);
  ASSERT_TRUE((*b)->BeforeIteration(NoFlush()).ok());
  ASSERT_TRUE((*b)->RunTimed().ok());
  const LayerRun fresh = RunLayer(alone);
  EXPECT_EQ((*b)->Gradients()->dx.values, fresh.gradients.dx.values);
  EXPECT_EQ((*b)->Output()->values, fresh.output.values);
}

TEST(CpuLayerBackwardTest, TheAllowListDeclaresItAndOnlyItsListDoes) {
  std::unique_ptr<Backend> backend = MakeCpuReferenceBackend(1);
  BackendSupport support = backend->Support();
  EXPECT_TRUE(support.layer_backward);
  const Problem p = NormalizeProblem(OddLayer());
  EXPECT_TRUE(CheckSupport(support, p, "cpu_reference").ok());
  // The same lists without the declaration refuse it by name, as every CUDA backend's do.
  support.layer_backward = false;
  const absl::Status s = CheckSupport(support, p, "other");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message(),
            "backend other does not support spec.phase=PHASE_BACKWARD with "
            "spec.scope=SCOPE_LAYER (its backward is core scope only: dQ, dK, dV)");
  // ... and nothing else: the layer's forward and the core's backward still pass.
  Problem forward = p;
  forward.phase = Phase::kPrefill;
  EXPECT_TRUE(CheckSupport(support, forward, "other").ok());
  EXPECT_TRUE(CheckSupport(support, CoreProblemOfLayer(p), "other").ok());
  // float8 is not a layer's dtype at all (§1b).
  Problem fp8 = OddLayer();
  fp8.dtype = DType::kFloat8E4M3;
  EXPECT_EQ(ValidateProblem(NormalizeProblem(fp8)).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace attnbench
