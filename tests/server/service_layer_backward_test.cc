// PHASE_BACKWARD at SCOPE_LAYER through the service on cpu_reference: Run returns Y and the five
// gradients (dX, dW_q, dW_k, dW_v, dW_o) inline, in their fields, and its check reports and passes
// each against the float64 reference; StreamRun sends them as chunks after "output" in that
// order, byte for byte what Run returns; a training step is timed and split; a dY of the core's
// shape is refused naming the field; the inline limit and the work limit count the layer.
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "kernels/spec/counting.h"
#include "kernels/spec/shapes.h"
#include "server/convert.h"
#include "server/measurement.h"
#include "server/work_limit.h"
#include "tests/server/test_util.h"

namespace attnbench::server {
namespace {

namespace pb = ::attnbench::v1;

using testing::FastMeasurement;
using ::testing::HasSubstr;
using testing::InProcessServer;

// B = 2, S = 11, d_model = 20, SQA (baseline 8; 4 query heads, 2 kv heads) of D_qk = 8, D_v = 6,
// causal, RoPE, bfloat16.
pb::RunRequest LayerBackwardRequest() {
  pb::RunRequest request;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(
      R"pb(batch_size: 2
           seq_len_q: 11
           seq_len_kv: 11
           head_dim_qk: 8
           head_dim_v: 6
           layout { sqa { baseline_heads: 8 num_query_heads: 4 num_kv_heads: 2 } }
           mask { causal {} }
           rope {}
           scope: SCOPE_LAYER
           d_model: 20
           phase: PHASE_BACKWARD
           dtype: DTYPE_BFLOAT16
           seed: 5)pb",
      request.mutable_spec()));
  *request.mutable_measurement() = FastMeasurement(2);
  request.mutable_check()->set_mode(pb::CHECK_MODE_FULL);
  request.set_backend("cpu_reference");
  request.set_return_output(true);
  return request;
}

struct Expected {
  const char* name;
  Shape shape;
};
// Y, then the gradients in the order StreamRun sends them.
const Expected kTensors[] = {{"output", {2, 11, 20}}, {"dx", {2, 11, 20}},   {"dw_q", {20, 4 * 8}},
                             {"dw_k", {20, 2 * 8}},   {"dw_v", {20, 2 * 6}}, {"dw_o", {4 * 6, 20}}};
constexpr uint64_t kReturnedBytes =
    2 * (2 * 11 * 20 + 2 * 11 * 20 + 20 * 32 + 20 * 16 + 20 * 12 + 24 * 20);

// RunResult's Tensor field of that name (what a client reads), by the proto's own reflection.
const pb::Tensor& Field(const pb::RunResult& r, const std::string& name) {
  const google::protobuf::FieldDescriptor* field = r.GetDescriptor()->FindFieldByName(name);
  EXPECT_NE(field, nullptr) << name;
  return static_cast<const pb::Tensor&>(r.GetReflection()->GetMessage(r, field));
}

grpc::Status CallRun(InProcessServer& server, const pb::RunRequest& request,
                     pb::RunResponse* response) {
  grpc::ClientContext context;
  return server.stub().Run(&context, request, response);
}

TEST(LayerBackwardServiceTest, RunReturnsTheFiveGradientsAndPassesTheirCheck) {
  InProcessServer server;
  for (pb::BackwardTiming timing :
       {pb::BACKWARD_TIMING_BACKWARD_ONLY, pb::BACKWARD_TIMING_TRAINING_STEP}) {
    SCOPED_TRACE(pb::BackwardTiming_Name(timing));
    pb::RunRequest request = LayerBackwardRequest();
    request.mutable_measurement()->set_backward_timing(timing);
    pb::RunResponse response;
    const grpc::Status s = CallRun(server, request, &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    const pb::RunResult& r = response.result();
    EXPECT_EQ(r.measurement().backward_timing(), timing);
    for (const Expected& e : kTensors) {
      const pb::Tensor& t = Field(r, e.name);
      EXPECT_EQ(std::vector<int64_t>(t.shape().begin(), t.shape().end()), e.shape) << e.name;
      EXPECT_EQ(t.dtype(), pb::DTYPE_BFLOAT16) << e.name;
      EXPECT_EQ(t.data().size(), 2 * NumElements(e.shape)) << e.name;
    }
    EXPECT_FALSE(r.has_dq() || r.has_dk() || r.has_dv());
    const pb::Correctness& c = r.correctness();
    EXPECT_TRUE(c.checked());
    EXPECT_TRUE(c.passed()) << c.relative_error();
    ASSERT_EQ(c.tensors_size(), 5);
    for (int k = 0; k < 5; ++k) {
      EXPECT_EQ(c.tensors(k).name(), kTensors[k + 1].name);
      EXPECT_TRUE(c.tensors(k).passed()) << c.tensors(k).name();
      EXPECT_GT(c.tensors(k).relative_error(), 0) << "bfloat16 gradients equal to float64?";
      EXPECT_EQ(c.tensors(k).rows_checked(), c.tensors(k).rows_total());
    }
    // §7: the core's backward (2.5x, a step 3.5x) and twice (three times) the projections.
    const Problem problem = NormalizeProblem(*ProblemFromProto(request.spec()));
    const double projections = LayerProjectionFlops(*ShapesOf(problem));
    const bool step = timing == pb::BACKWARD_TIMING_TRAINING_STEP;
    EXPECT_DOUBLE_EQ(r.work().projection_flops(), (step ? 3 : 2) * projections);
    ASSERT_TRUE(r.has_layer_timing());
    EXPECT_EQ(r.layer_timing().core().count(), 2);
    EXPECT_GT(r.layer_timing().projections().min_ms(), 0);
  }
}

TEST(LayerBackwardServiceTest, StreamRunSendsOutputThenTheGradientsAsRunReturnsThem) {
  ServerOptions options;
  options.stream_chunk_bytes = 500;
  InProcessServer server(options);
  const pb::RunRequest request = LayerBackwardRequest();
  pb::RunResponse inline_response;
  ASSERT_TRUE(CallRun(server, request, &inline_response).ok());

  grpc::ClientContext context;
  auto reader = server.stub().StreamRun(&context, request);
  pb::StreamRunResponse message;
  std::vector<std::string> order;
  std::vector<std::string> bytes;
  bool result_last = false;
  while (reader->Read(&message)) {
    result_last = message.has_result();
    if (!message.has_chunk()) continue;
    const pb::TensorChunk& chunk = message.chunk();
    if (order.empty() || order.back() != chunk.name()) {
      order.push_back(chunk.name());
      bytes.emplace_back();
    }
    EXPECT_EQ(chunk.offset_bytes(), bytes.back().size());
    bytes.back() += chunk.data();
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_TRUE(result_last);
  ASSERT_EQ(order.size(), std::size(kTensors));
  for (size_t k = 0; k < order.size(); ++k) {
    EXPECT_EQ(order[k], kTensors[k].name);
    // The CPU backend is deterministic: the stream holds what Run returned inline.
    EXPECT_EQ(bytes[k], Field(inline_response.result(), order[k]).data()) << order[k];
  }
}

TEST(LayerBackwardServiceTest, GradOutputOfTheCoresShapeIsRefusedNamingTheField) {
  InProcessServer server;
  pb::RunRequest request = LayerBackwardRequest();
  pb::Tensor* dy = request.mutable_spec()->mutable_inputs()->mutable_grad_output();
  dy->set_dtype(pb::DTYPE_BFLOAT16);
  for (int64_t d : {2, 11, 4, 6}) dy->add_shape(d);  // dO [B, S, H_out, D_v], not dY
  dy->set_data(std::string(2 * 11 * 4 * 6 * 2, '\0'));
  pb::RunResponse response;
  const grpc::Status s = CallRun(server, request, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(),
              HasSubstr("spec.inputs.grad_output.shape [2, 11, 4, 6] must be [2, 11, 20]"));
}

TEST(LayerBackwardServiceTest, InlineLimitCountsTheLayersGradients) {
  ServerOptions options;
  options.max_inline_output_bytes = kReturnedBytes;
  InProcessServer at_limit(options);
  pb::RunResponse response;
  grpc::Status s = CallRun(at_limit, LayerBackwardRequest(), &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  options.max_inline_output_bytes = kReturnedBytes - 1;
  InProcessServer below(options);
  s = CallRun(below, LayerBackwardRequest(), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("the output, dX, dW_q, dW_k, dW_v and dW_o are " +
                                           std::to_string(kReturnedBytes) + " bytes together"));
}

TEST(LayerBackwardServiceTest, WorkLimitCountsTheProjectionsAndTheWholeCheck) {
  const pb::RunRequest request = LayerBackwardRequest();
  const Problem layer = NormalizeProblem(*ProblemFromProto(request.spec()));
  const Problem core = CoreProblemOfLayer(layer);
  const absl::StatusOr<WorkCounts> layer_counts = CountWork(layer);
  const absl::StatusOr<WorkCounts> core_counts = CountWork(core);
  const absl::StatusOr<ProblemShapes> layer_shapes = ShapesOf(layer);
  const absl::StatusOr<ProblemShapes> core_shapes = ShapesOf(core);
  ASSERT_TRUE(layer_counts.ok() && core_counts.ok() && layer_shapes.ok() && core_shapes.ok());
  MeasurementPlan plan;
  plan.warmup_iterations = 1;
  plan.min_iterations = plan.max_iterations = 2;
  CheckPlan check;
  check.enabled = true;
  check.max_sampled_rows = 1;
  const RequestWork l =
      EstimateBackwardRequestWork(layer, *layer_counts, *layer_shapes, plan, check);
  const RequestWork c = EstimateBackwardRequestWork(core, *core_counts, *core_shapes, plan, check);
  const double projections = LayerProjectionFlops(*layer_shapes);
  EXPECT_DOUBLE_EQ(l.per_iteration, c.per_iteration + 2 * projections);
  EXPECT_DOUBLE_EQ(l.device_once, c.device_once + projections);
  EXPECT_GT(l.check, c.check);  // whole, with the projections, whatever the sampling

  // A limit the layer's work just exceeds refuses it before it runs.
  ServerOptions options;
  options.max_request_flops_cpu = l.device() + l.check - 1;
  InProcessServer server(options);
  pb::RunRequest limited = request;
  limited.mutable_check()->set_mode(pb::CHECK_MODE_AUTO);
  limited.mutable_check()->set_max_sampled_rows(1);
  pb::RunResponse response;
  const grpc::Status s = CallRun(server, limited, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("--max_request_flops_cpu="));
}

}  // namespace
}  // namespace attnbench::server
