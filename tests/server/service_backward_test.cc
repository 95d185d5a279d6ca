// PHASE_BACKWARD through the service, on a fake backend whose gradients are known patterns:
// backward_timing and grad_output reach the kernels (and are refused on other phases), Run returns
// dQ, dK, dV inline next to O when all four fit max_inline_output_bytes together, StreamRun sends
// them as chunks "output", "dq", "dk", "dv" in that order, the work limit counts a training step
// above the backward alone, the gradient check is refused before running while this server cannot
// do it (and its report, whatever it holds, is turned into Correctness.tensors when it can), and
// Sweep (spread over devices too) runs backward points.
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/spec/counting.h"
#include "kernels/spec/shapes.h"
#include "server/convert.h"
#include "server/gradient_check.h"
#include "server/work_limit.h"
#include "tests/server/fake_backward_backend.h"
#include "tests/server/test_util.h"

namespace attnbench::server {
namespace {

namespace pb = ::attnbench::v1;

using ::testing::ElementsAre;
using testing::FakeBackwardBackend;
using testing::FakeBackwardLog;
using testing::FakeBackwardOptions;
using testing::FakeTensor;
using testing::FakeTensorKind;
using testing::FastMeasurement;
using ::testing::HasSubstr;
using testing::InProcessServer;
using testing::kFakeBackwardName;

// Q [2, 6, 4, 8], K [2, 10, 2, 8], V [2, 10, 2, 4], O [2, 6, 4, 4] in float16: every tensor a
// different shape, so a swapped one shows.
const Shape kQ = {2, 6, 4, 8};
const Shape kK = {2, 10, 2, 8};
const Shape kV = {2, 10, 2, 4};
const Shape kO = {2, 6, 4, 4};
constexpr uint64_t kOutputBytes = 2 * 6 * 4 * 4 * 2;                   // 384
constexpr uint64_t kGradientBytes = (2 * 6 * 4 * 8 + 2 * 10 * 2 * 8 +  // dQ, dK
                                     2 * 10 * 2 * 4) *                 // dV
                                    2;                                 // 1728
constexpr uint64_t kReturnedBytes = kOutputBytes + kGradientBytes;     // 2112

pb::RunRequest BackwardRequest() {
  pb::RunRequest r;
  r.set_backend(kFakeBackwardName);
  pb::AttentionSpec& spec = *r.mutable_spec();
  spec.set_batch_size(2);
  spec.set_seq_len_q(6);
  spec.set_seq_len_kv(10);
  spec.set_head_dim_qk(8);
  spec.set_head_dim_v(4);
  spec.mutable_layout()->mutable_gqa()->set_num_query_heads(4);
  spec.mutable_layout()->mutable_gqa()->set_num_kv_heads(2);
  spec.mutable_mask()->mutable_causal();
  spec.set_dtype(pb::DTYPE_FLOAT16);
  spec.set_phase(pb::PHASE_BACKWARD);
  spec.set_seed(3);
  *r.mutable_measurement() = FastMeasurement(2);
  r.mutable_check()->set_mode(pb::CHECK_MODE_OFF);
  return r;
}

std::unique_ptr<InProcessServer> FakeServer(FakeBackwardLog* log,
                                            ServerOptions options = ServerOptions(),
                                            FakeBackwardOptions fake = FakeBackwardOptions()) {
  BackendList backends;
  backends.push_back(std::make_unique<FakeBackwardBackend>(log, std::move(fake)));
  return std::make_unique<InProcessServer>(options, std::move(backends));
}

grpc::Status CallRun(InProcessServer& server, const pb::RunRequest& request,
                     pb::RunResponse* response) {
  grpc::ClientContext context;
  return server.stub().Run(&context, request, response);
}

std::string Bytes(FakeTensorKind kind, const Shape& shape) {
  return EncodeTensor(FakeTensor(kind, shape, DType::kFloat16));
}

void ExpectTensor(const pb::Tensor& t, FakeTensorKind kind, const Shape& shape, const char* name) {
  SCOPED_TRACE(name);
  EXPECT_EQ(t.dtype(), pb::DTYPE_FLOAT16);
  EXPECT_EQ(std::vector<int64_t>(t.shape().begin(), t.shape().end()), shape);
  EXPECT_EQ(t.data(), Bytes(kind, shape));
}

TEST(BackwardServiceTest, RunReturnsGradientsInlineWithTheOutput) {
  FakeBackwardLog log;
  auto server = FakeServer(&log);
  pb::RunRequest request = BackwardRequest();
  request.set_return_output(true);
  pb::RunResponse response;
  const grpc::Status s = CallRun(*server, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const pb::RunResult& result = response.result();
  ExpectTensor(result.output(), FakeTensorKind::kOutput, kO, "output");
  ExpectTensor(result.dq(), FakeTensorKind::kDq, kQ, "dq");
  ExpectTensor(result.dk(), FakeTensorKind::kDk, kK, "dk");
  ExpectTensor(result.dv(), FakeTensorKind::kDv, kV, "dv");
  // The summary stays about O.
  const OutputSummary o = SummarizeTensor(FakeTensor(FakeTensorKind::kOutput, kO, DType::kFloat16));
  EXPECT_EQ(result.output_summary().num_elements(), NumElements(kO));
  EXPECT_EQ(result.output_summary().checksum(), o.checksum);
  EXPECT_FALSE(result.correctness().checked());
  EXPECT_EQ(result.spec().phase(), pb::PHASE_BACKWARD);
  // Unset timing: the backward alone, echoed, and so told to the kernels.
  EXPECT_EQ(result.measurement().backward_timing(), pb::BACKWARD_TIMING_BACKWARD_ONLY);
  const std::vector<Problem> prepared = log.Prepared();
  ASSERT_EQ(prepared.size(), 1u);
  EXPECT_EQ(prepared[0].phase, Phase::kBackward);
  EXPECT_FALSE(prepared[0].training_step);
  EXPECT_FALSE(prepared[0].grad_output.has_value());
  // Counting is the kernels' (2.5x the forward for backward); the result reports it as counted.
  const absl::StatusOr<WorkCounts> counts = CountWork(prepared[0]);
  ASSERT_TRUE(counts.ok());
  EXPECT_EQ(result.work().flops(), counts->flops);

  // Without return_output: no tensor at all.
  request.set_return_output(false);
  ASSERT_TRUE(CallRun(*server, request, &response).ok());
  EXPECT_FALSE(response.result().has_output() || response.result().has_dq() ||
               response.result().has_dk() || response.result().has_dv());
}

TEST(BackwardServiceTest, TimingChoiceReachesTheKernelsAndIsEchoed) {
  FakeBackwardLog log;
  auto server = FakeServer(&log);
  for (const pb::BackwardTiming timing :
       {pb::BACKWARD_TIMING_BACKWARD_ONLY, pb::BACKWARD_TIMING_TRAINING_STEP}) {
    pb::RunRequest request = BackwardRequest();
    request.mutable_measurement()->set_backward_timing(timing);
    pb::RunResponse response;
    const grpc::Status s = CallRun(*server, request, &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(response.result().measurement().backward_timing(), timing);
  }
  const std::vector<Problem> prepared = log.Prepared();
  ASSERT_EQ(prepared.size(), 2u);
  EXPECT_FALSE(prepared[0].training_step);
  EXPECT_TRUE(prepared[1].training_step);
}

// measurement.deterministic reaches the kernels as Problem::deterministic and is echoed; a backend
// that does not list the phase as deterministic refuses it by name, before preparing anything.
TEST(BackwardServiceTest, DeterministicReachesTheKernelsAndIsRefusedWhereNotDeclared) {
  FakeBackwardLog log;
  auto server = FakeServer(&log);
  pb::RunRequest prefill = BackwardRequest();
  prefill.mutable_spec()->set_phase(pb::PHASE_PREFILL);
  prefill.mutable_measurement()->set_deterministic(true);
  pb::RunResponse response;
  grpc::Status s = CallRun(*server, prefill, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(response.result().measurement().deterministic());
  ASSERT_EQ(log.Prepared().size(), 1u);
  EXPECT_TRUE(log.Prepared()[0].deterministic);

  pb::RunRequest backward = BackwardRequest();
  backward.mutable_measurement()->set_deterministic(true);
  s = CallRun(*server, backward, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("does not run spec.phase=PHASE_BACKWARD "
                                           "deterministically (measurement.deterministic"));
  EXPECT_EQ(log.Prepared().size(), 1u);

  backward.mutable_measurement()->set_deterministic(false);
  s = CallRun(*server, backward, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(response.result().measurement().deterministic());
  ASSERT_EQ(log.Prepared().size(), 2u);
  EXPECT_FALSE(log.Prepared()[1].deterministic);
}

TEST(BackwardServiceTest, BackwardOnlySettingsRefusedOnOtherPhases) {
  FakeBackwardLog log;
  auto server = FakeServer(&log);
  pb::RunRequest prefill = BackwardRequest();
  prefill.mutable_spec()->set_phase(pb::PHASE_PREFILL);
  pb::RunResponse response;
  ASSERT_TRUE(CallRun(*server, prefill, &response).ok());
  // A forward result carries no backward timing.
  EXPECT_EQ(response.result().measurement().backward_timing(), pb::BACKWARD_TIMING_UNSPECIFIED);

  for (const auto& [timing, name] :
       {std::make_pair(pb::BACKWARD_TIMING_BACKWARD_ONLY, "BACKWARD_TIMING_BACKWARD_ONLY"),
        std::make_pair(pb::BACKWARD_TIMING_TRAINING_STEP, "BACKWARD_TIMING_TRAINING_STEP")}) {
    pb::RunRequest request = prefill;
    request.mutable_measurement()->set_backward_timing(timing);
    const grpc::Status s = CallRun(*server, request, &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(s.error_message(),
              std::string("measurement.backward_timing = ") + name +
                  ": only valid with spec.phase = PHASE_BACKWARD (spec.phase is PHASE_PREFILL)");
  }
  pb::RunRequest unknown = BackwardRequest();
  unknown.mutable_measurement()->set_backward_timing(static_cast<pb::BackwardTiming>(5));
  grpc::Status s = CallRun(*server, unknown, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "measurement.backward_timing = 5: unknown enum value");

  pb::RunRequest with_grad = prefill;
  pb::Tensor* d_o = with_grad.mutable_spec()->mutable_inputs()->mutable_grad_output();
  d_o->set_dtype(pb::DTYPE_FLOAT16);
  for (int64_t d : kO) d_o->add_shape(d);
  d_o->set_data(Bytes(FakeTensorKind::kDv, kO));
  s = CallRun(*server, with_grad, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(),
            "spec.inputs.grad_output is only valid with spec.phase = PHASE_BACKWARD");
  // Only the plain prefill ran.
  EXPECT_EQ(log.Prepared().size(), 1u);
}

TEST(BackwardServiceTest, ClientGradOutputReachesTheKernelsAndIsEchoedWithoutItsBytes) {
  FakeBackwardLog log;
  auto server = FakeServer(&log);
  pb::RunRequest request = BackwardRequest();
  pb::Tensor* d_o = request.mutable_spec()->mutable_inputs()->mutable_grad_output();
  d_o->set_dtype(pb::DTYPE_FLOAT16);
  for (int64_t d : kO) d_o->add_shape(d);
  d_o->set_data(Bytes(FakeTensorKind::kDv, kO));
  pb::RunResponse response;
  const grpc::Status s = CallRun(*server, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const std::vector<Problem> prepared = log.Prepared();
  ASSERT_EQ(prepared.size(), 1u);
  ASSERT_TRUE(prepared[0].grad_output.has_value());
  EXPECT_EQ(prepared[0].grad_output->dtype, DType::kFloat16);
  EXPECT_EQ(prepared[0].grad_output->shape, kO);
  EXPECT_EQ(prepared[0].grad_output->data, d_o->data());
  const pb::Tensor& echo = response.result().spec().inputs().grad_output();
  EXPECT_EQ(echo.dtype(), pb::DTYPE_FLOAT16);
  EXPECT_THAT(echo.shape(), ElementsAre(2, 6, 4, 4));
  EXPECT_TRUE(echo.data().empty());
  EXPECT_FALSE(response.result().spec().inputs().has_query());
}

TEST(BackwardServiceTest, InlineLimitCountsTheGradientsWithTheOutput) {
  FakeBackwardLog log;
  ServerOptions options;
  options.max_inline_output_bytes = kReturnedBytes;
  auto at_limit = FakeServer(&log, options);
  pb::RunRequest request = BackwardRequest();
  request.set_return_output(true);
  pb::RunResponse response;
  grpc::Status s = CallRun(*at_limit, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(response.result().has_dv());

  // One byte less: refused before anything runs, though O alone (384 bytes) would fit.
  FakeBackwardLog refused_log;
  options.max_inline_output_bytes = kReturnedBytes - 1;
  auto below = FakeServer(&refused_log, options);
  s = CallRun(*below, request, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(s.error_message(),
            "return_output: the output, dQ, dK and dV are 2112 bytes together, over "
            "--max_inline_output_bytes=2111; use StreamRun to receive them in chunks");
  EXPECT_TRUE(refused_log.Prepared().empty());
  EXPECT_EQ(refused_log.Iterations(), 0);

  // A forward run of the same spec returns O alone and fits.
  pb::RunRequest prefill = request;
  prefill.mutable_spec()->set_phase(pb::PHASE_PREFILL);
  s = CallRun(*below, prefill, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(response.result().has_output());
  EXPECT_FALSE(response.result().has_dq());
}

struct Streamed {
  std::vector<pb::TensorChunk> chunks;
  int results = 0;
  bool result_last = false;
  pb::RunResult result;
  grpc::Status status;
};

Streamed StreamRun(InProcessServer& server, const pb::RunRequest& request) {
  Streamed out;
  grpc::ClientContext context;
  auto reader = server.stub().StreamRun(&context, request);
  pb::StreamRunResponse message;
  while (reader->Read(&message)) {
    if (message.has_chunk()) out.chunks.push_back(message.chunk());
    if (message.has_result()) {
      ++out.results;
      out.result = message.result();
    }
    out.result_last = message.has_result();
  }
  out.status = reader->Finish();
  return out;
}

TEST(BackwardServiceTest, StreamRunSendsOutputThenDqDkDvInChunks) {
  FakeBackwardLog log;
  ServerOptions options;
  options.stream_chunk_bytes = 300;
  options.max_inline_output_bytes = 100;  // StreamRun is not bound by the inline limit
  auto server = FakeServer(&log, options);
  pb::RunRequest request = BackwardRequest();
  request.set_return_output(true);
  request.mutable_measurement()->set_backward_timing(pb::BACKWARD_TIMING_TRAINING_STEP);
  const Streamed streamed = StreamRun(*server, request);
  ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
  ASSERT_EQ(streamed.results, 1);
  EXPECT_TRUE(streamed.result_last);

  struct Expected {
    const char* name;
    FakeTensorKind kind;
    Shape shape;
  };
  const Expected expected[] = {{"output", FakeTensorKind::kOutput, kO},
                               {"dq", FakeTensorKind::kDq, kQ},
                               {"dk", FakeTensorKind::kDk, kK},
                               {"dv", FakeTensorKind::kDv, kV}};
  size_t next = 0;
  for (const Expected& e : expected) {
    SCOPED_TRACE(e.name);
    const std::string want = Bytes(e.kind, e.shape);
    std::string got;
    while (next < streamed.chunks.size() && streamed.chunks[next].name() == e.name) {
      const pb::TensorChunk& c = streamed.chunks[next++];
      EXPECT_EQ(c.dtype(), pb::DTYPE_FLOAT16);
      EXPECT_EQ(std::vector<int64_t>(c.shape().begin(), c.shape().end()), e.shape);
      EXPECT_EQ(c.total_bytes(), want.size());
      EXPECT_EQ(c.offset_bytes(), got.size());
      EXPECT_LE(c.data().size(), 300u);
      EXPECT_FALSE(c.data().empty());
      got += c.data();
    }
    EXPECT_EQ(got, want);
  }
  // Nothing else, and each tensor's chunks contiguous: every chunk was consumed in that order.
  EXPECT_EQ(next, streamed.chunks.size());
  // 384, 768, 640, 320 bytes in chunks of 300: 2 + 3 + 3 + 2.
  EXPECT_EQ(streamed.chunks.size(), 10u);
  const pb::RunResult& result = streamed.result;
  EXPECT_FALSE(result.has_output() || result.has_dq() || result.has_dk() || result.has_dv());
  EXPECT_EQ(result.measurement().backward_timing(), pb::BACKWARD_TIMING_TRAINING_STEP);
  ASSERT_EQ(log.Prepared().size(), 1u);
  EXPECT_TRUE(log.Prepared()[0].training_step);

  // Without return_output: the result alone.
  request.set_return_output(false);
  const Streamed bare = StreamRun(*server, request);
  ASSERT_TRUE(bare.status.ok());
  EXPECT_TRUE(bare.chunks.empty());
  EXPECT_EQ(bare.results, 1);
}

TEST(BackwardServiceTest, CheckedRunReportsEveryGradientTheCheckCompared) {
  struct Seen {
    int calls = 0;
    CheckOptions options;
    GradientTensors gradients;
    bool training_step = false;
  } seen;
  const ScopedBackwardCheckForTesting check(
      [&seen](const Problem& problem, const AttentionInputs&, const GradientTensors& gradients,
              const CheckOptions& options) -> absl::StatusOr<CorrectnessReport> {
        ++seen.calls;
        seen.options = options;
        seen.gradients = gradients;
        seen.training_step = problem.training_step;
        CorrectnessReport r;
        r.rows_checked = 20;
        r.rows_total = 40;
        r.max_abs_error = 0.5;
        r.relative_error = 0.03;
        r.tolerance = 0.01;
        r.passed = false;
        r.tensors = {{"dq", 12, 48, 0.125, 0.002, 0.01, 0, true},
                     {"dk", 20, 40, 0.5, 0.03, 0.01, 0, false},
                     {"dv", 20, 40, 0.25, 0.004, 0.01, 0, true}};
        return r;
      });
  FakeBackwardLog log;
  auto server = FakeServer(&log);
  pb::RunRequest request = BackwardRequest();
  request.mutable_check()->set_mode(pb::CHECK_MODE_FULL);
  request.mutable_check()->set_max_sampled_rows(77);
  request.mutable_measurement()->set_backward_timing(pb::BACKWARD_TIMING_TRAINING_STEP);
  request.set_return_output(true);
  pb::RunResponse response;
  const grpc::Status s = CallRun(*server, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();

  ASSERT_EQ(seen.calls, 1);
  EXPECT_TRUE(seen.options.full);
  EXPECT_EQ(seen.options.max_rows, 77);
  EXPECT_EQ(seen.options.seed, 3u);
  EXPECT_TRUE(seen.training_step);
  EXPECT_EQ(seen.gradients.dq.values, FakeTensor(FakeTensorKind::kDq, kQ, DType::kFloat16).values);
  EXPECT_EQ(seen.gradients.dk.shape, kK);
  EXPECT_EQ(seen.gradients.dv.shape, kV);

  const pb::Correctness& c = response.result().correctness();
  EXPECT_TRUE(c.checked());
  EXPECT_FALSE(c.passed());
  EXPECT_EQ(c.relative_error(), 0.03);
  EXPECT_EQ(c.rows_checked(), 20);
  ASSERT_EQ(c.tensors_size(), 3);
  EXPECT_EQ(c.tensors(0).name(), "dq");
  EXPECT_EQ(c.tensors(0).rows_total(), 48);
  EXPECT_TRUE(c.tensors(0).passed());
  EXPECT_EQ(c.tensors(1).name(), "dk");
  EXPECT_FALSE(c.tensors(1).passed());
  EXPECT_EQ(c.tensors(2).name(), "dv");
  EXPECT_EQ(c.tensors(2).max_abs_error(), 0.25);
  // The check does not take the tensors' place in the response.
  ExpectTensor(response.result().dk(), FakeTensorKind::kDk, kK, "dk");
}

TEST(BackwardServiceTest, ACheckReportMissingAGradientIsAnInternalError) {
  const ScopedBackwardCheckForTesting check(
      [](const Problem&, const AttentionInputs&, const GradientTensors&,
         const CheckOptions&) -> absl::StatusOr<CorrectnessReport> {
        CorrectnessReport r;
        r.passed = true;
        r.tensors = {{"dq", 1, 1, 0, 0, 0.01, 0, true}, {"dk", 1, 1, 0, 0, 0.01, 0, true}};
        return r;
      });
  FakeBackwardLog log;
  auto server = FakeServer(&log);
  pb::RunRequest request = BackwardRequest();
  request.mutable_check()->set_mode(pb::CHECK_MODE_AUTO);
  pb::RunResponse response;
  const grpc::Status s = CallRun(*server, request, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(s.error_message(), "the gradient check reported tensors [dq, dk], without dv");
}

// A forward run's check lists O as its one tensor, with the summary's own numbers.
TEST(ForwardCorrectnessTest, TheOutputIsTheOneTensorOfAForwardCheck) {
  InProcessServer server;  // cpu_reference
  pb::RunRequest request = testing::SmallRequest();
  request.mutable_check()->set_mode(pb::CHECK_MODE_FULL);
  pb::RunResponse response;
  const grpc::Status s = CallRun(server, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const pb::Correctness& c = response.result().correctness();
  ASSERT_TRUE(c.checked());
  ASSERT_EQ(c.tensors_size(), 1);
  const pb::TensorCheck& o = c.tensors(0);
  EXPECT_EQ(o.name(), "output");
  EXPECT_EQ(o.rows_checked(), c.rows_checked());
  EXPECT_EQ(o.rows_total(), c.rows_total());
  EXPECT_EQ(o.relative_error(), c.relative_error());
  EXPECT_EQ(o.max_abs_error(), c.max_abs_error());
  EXPECT_EQ(o.tolerance(), c.tolerance());
  EXPECT_EQ(o.passed(), c.passed());
  EXPECT_TRUE(o.passed());
  EXPECT_EQ(o.non_finite_elements(), 0);
}

TEST(BackwardServiceTest, GradientsBreakingTheApiPromiseAreInternalErrors) {
  FakeBackwardLog log;
  FakeBackwardOptions fake;
  fake.short_dk = true;
  auto server = FakeServer(&log, ServerOptions(), fake);
  pb::RunResponse response;
  grpc::Status s = CallRun(*server, BackwardRequest(), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INTERNAL);
  EXPECT_EQ(s.error_message(),
            "backend fake_backward returned dk of shape [2, 9, 2, 8], float16, 288 values; "
            "expected [2, 10, 2, 8], float16");

  FakeBackwardOptions failing;
  failing.gradients_status = absl::DataLossError("gradients lost");
  auto failing_server = FakeServer(&log, ServerOptions(), failing);
  s = CallRun(*failing_server, BackwardRequest(), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_EQ(s.error_message(), "gradients lost");
}

TEST(BackwardServiceTest, WorkLimitCountsATrainingStepAboveTheBackwardAlone) {
  // The limit is exactly what the backward alone counts: it runs, the training step is refused.
  pb::RunRequest request = BackwardRequest();
  const Problem problem = NormalizeProblem(*ProblemFromProto(request.spec()));
  const absl::StatusOr<WorkCounts> counts = CountWork(problem);
  const absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
  ASSERT_TRUE(counts.ok() && shapes.ok());
  MeasurementPlan plan;
  plan.warmup_iterations = 1;
  plan.min_iterations = plan.max_iterations = 2;
  CheckPlan off;
  off.enabled = false;
  Problem as_step = problem;
  as_step.training_step = true;
  const RequestWork alone = EstimateBackwardRequestWork(problem, *counts, *shapes, plan, off);
  const RequestWork step = EstimateBackwardRequestWork(as_step, *counts, *shapes, plan, off);
  ASSERT_GT(step.device(), alone.device());

  FakeBackwardLog log;
  ServerOptions options;
  options.max_request_flops_cpu = alone.device();
  auto server = FakeServer(&log, options);
  pb::RunResponse response;
  grpc::Status s = CallRun(*server, request, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  request.mutable_measurement()->set_backward_timing(pb::BACKWARD_TIMING_TRAINING_STEP);
  s = CallRun(*server, request, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("--max_request_flops_cpu="));
  EXPECT_THAT(s.error_message(), HasSubstr("3 iterations of "));
  EXPECT_EQ(log.Prepared().size(), 1u);
}

struct Swept {
  std::vector<pb::SweepResponse> responses;
  grpc::Status status;
};

Swept Sweep(InProcessServer& server, const pb::SweepRequest& request) {
  Swept out;
  grpc::ClientContext context;
  auto reader = server.stub().Sweep(&context, request);
  pb::SweepResponse response;
  while (reader->Read(&response)) out.responses.push_back(response);
  out.status = reader->Finish();
  return out;
}

TEST(BackwardServiceTest, SweepRunsBackwardPointsNextToForwardOnes) {
  FakeBackwardLog log;
  auto server = FakeServer(&log);
  pb::SweepRequest sweep;
  *sweep.mutable_base() = BackwardRequest();
  sweep.mutable_base()->set_return_output(true);
  auto* phase = sweep.add_axes()->mutable_phase();
  phase->add_values(pb::PHASE_PREFILL);
  phase->add_values(pb::PHASE_BACKWARD);
  const Swept swept = Sweep(*server, sweep);
  ASSERT_TRUE(swept.status.ok()) << swept.status.error_message();
  ASSERT_EQ(swept.responses.size(), 2u);
  const pb::RunResult& forward = swept.responses[0].result();
  const pb::RunResult& backward = swept.responses[1].result();
  EXPECT_EQ(forward.spec().phase(), pb::PHASE_PREFILL);
  EXPECT_EQ(forward.measurement().backward_timing(), pb::BACKWARD_TIMING_UNSPECIFIED);
  EXPECT_TRUE(forward.has_output());
  EXPECT_FALSE(forward.has_dq());
  EXPECT_EQ(backward.spec().phase(), pb::PHASE_BACKWARD);
  EXPECT_EQ(backward.measurement().backward_timing(), pb::BACKWARD_TIMING_BACKWARD_ONLY);
  ExpectTensor(backward.dq(), FakeTensorKind::kDq, kQ, "dq");
  ExpectTensor(backward.dk(), FakeTensorKind::kDk, kK, "dk");
  ExpectTensor(backward.dv(), FakeTensorKind::kDv, kV, "dv");
}

TEST(BackwardServiceTest, SweepBaseBackwardTimingRefusedAtForwardPointsBeforeAnyRuns) {
  FakeBackwardLog log;
  auto server = FakeServer(&log);
  pb::SweepRequest sweep;
  *sweep.mutable_base() = BackwardRequest();
  sweep.mutable_base()->mutable_measurement()->set_backward_timing(
      pb::BACKWARD_TIMING_TRAINING_STEP);
  auto* phase = sweep.add_axes()->mutable_phase();
  phase->add_values(pb::PHASE_BACKWARD);
  phase->add_values(pb::PHASE_PREFILL);
  const Swept swept = Sweep(*server, sweep);
  EXPECT_EQ(swept.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(swept.status.error_message(),
            "sweep point 1 (axes[0].phase=PHASE_PREFILL): base.measurement.backward_timing = "
            "BACKWARD_TIMING_TRAINING_STEP: only valid with spec.phase = PHASE_BACKWARD "
            "(spec.phase is PHASE_PREFILL)");
  EXPECT_TRUE(swept.responses.empty());
  EXPECT_TRUE(log.Prepared().empty());
}

TEST(BackwardServiceTest, SpreadSweepRunsTrainingStepPoints) {
  FakeBackwardLog log;
  FakeBackwardOptions fake;
  fake.devices = 2;
  auto server = FakeServer(&log, ServerOptions(), fake);
  pb::SweepRequest sweep;
  *sweep.mutable_base() = BackwardRequest();
  sweep.mutable_base()->set_return_output(true);
  sweep.mutable_base()->mutable_measurement()->set_backward_timing(
      pb::BACKWARD_TIMING_TRAINING_STEP);
  sweep.set_spread_devices(true);
  auto* seq = sweep.add_axes()->mutable_seq_len_kv();
  for (int64_t s : {8, 10, 12, 14}) seq->add_values(s);
  const Swept swept = Sweep(*server, sweep);
  ASSERT_TRUE(swept.status.ok()) << swept.status.error_message();
  ASSERT_EQ(swept.responses.size(), 4u);
  std::vector<bool> seen(4, false);
  for (const pb::SweepResponse& r : swept.responses) {
    ASSERT_TRUE(r.has_result()) << r.error().message();
    const int i = r.point_index();
    seen[i] = true;
    const int64_t s_kv = 8 + 2 * i;
    EXPECT_EQ(r.result().measurement().backward_timing(), pb::BACKWARD_TIMING_TRAINING_STEP);
    ExpectTensor(r.result().dk(), FakeTensorKind::kDk, {2, s_kv, 2, 8}, "dk");
    ExpectTensor(r.result().dv(), FakeTensorKind::kDv, {2, s_kv, 2, 4}, "dv");
    ExpectTensor(r.result().dq(), FakeTensorKind::kDq, kQ, "dq");
  }
  EXPECT_EQ(seen, std::vector<bool>(4, true));
  const std::vector<Problem> prepared = log.Prepared();
  ASSERT_EQ(prepared.size(), 4u);
  for (const Problem& p : prepared) EXPECT_TRUE(p.training_step);
}

}  // namespace
}  // namespace attnbench::server
