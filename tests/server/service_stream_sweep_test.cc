// StreamRun (chunks reassemble into exactly what Run returns inline and what the backend's
// output encodes to) and Sweep (every point in row-major order, continue_on_error, grid
// validation before any point runs, cancellation between points).
#include <chrono>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/registry.h"
#include "server/convert.h"
#include "tests/server/test_util.h"

namespace attnbench::server {
namespace {

using testing::FastMeasurement;
using ::testing::HasSubstr;
using testing::InProcessServer;
using testing::SmallRequest;

ServerOptions SmallChunks() {
  ServerOptions options;
  options.stream_chunk_bytes = 1000;
  return options;
}

struct Streamed {
  std::vector<pb::TensorChunk> chunks;
  std::vector<pb::RunResult> results;
  int messages = 0;
  bool result_last = false;
  grpc::Status status;
};

Streamed StreamRun(InProcessServer& server, const pb::RunRequest& request) {
  Streamed out;
  grpc::ClientContext context;
  auto reader = server.stub().StreamRun(&context, request);
  pb::StreamRunResponse message;
  while (reader->Read(&message)) {
    ++out.messages;
    if (message.has_chunk()) out.chunks.push_back(message.chunk());
    if (message.has_result()) out.results.push_back(message.result());
    out.result_last = message.has_result();
  }
  out.status = reader->Finish();
  return out;
}

TEST(StreamRunTest, ChunksReassembleToInlineBytesAndBackendEncoding) {
  InProcessServer server(SmallChunks());
  pb::RunRequest request = SmallRequest(40, 3, 16);  // 40*3*16 fp16 = 3840 bytes: 4 chunks
  request.mutable_spec()->set_dtype(pb::DTYPE_FLOAT16);
  request.mutable_spec()->mutable_mask()->mutable_causal();
  request.set_return_output(true);

  const Streamed streamed = StreamRun(server, request);
  ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
  ASSERT_EQ(streamed.results.size(), 1u);
  EXPECT_TRUE(streamed.result_last);
  ASSERT_EQ(streamed.chunks.size(), 4u);
  std::string bytes;
  for (const pb::TensorChunk& c : streamed.chunks) {
    EXPECT_EQ(c.name(), "output");
    EXPECT_EQ(c.dtype(), pb::DTYPE_FLOAT16);
    EXPECT_THAT(c.shape(), ::testing::ElementsAre(1, 40, 3, 16));
    EXPECT_EQ(c.total_bytes(), 3840u);
    EXPECT_EQ(c.offset_bytes(), bytes.size());
    EXPECT_LE(c.data().size(), 1000u);
    bytes += c.data();
  }
  EXPECT_EQ(bytes.size(), 3840u);
  const pb::RunResult& result = streamed.results[0];
  EXPECT_FALSE(result.has_output());
  EXPECT_TRUE(result.correctness().passed());

  // Run inline, same seed: identical bytes.
  grpc::ClientContext context;
  pb::RunResponse inline_response;
  ASSERT_TRUE(server.stub().Run(&context, request, &inline_response).ok());
  EXPECT_EQ(inline_response.result().output().data(), bytes);
  EXPECT_EQ(inline_response.result().output_summary().checksum(),
            result.output_summary().checksum());

  // And what the backend's own output encodes to, computed here without the service.
  const Problem problem = NormalizeProblem(*ProblemFromProto(request.spec()));
  BackendList backends = CreateBackends(RegistryOptions{1});
  auto workload = backends[0]->Prepare(problem, 0);
  ASSERT_TRUE(workload.ok());
  ASSERT_TRUE((*workload)->RunTimed().ok());
  const absl::StatusOr<FloatTensor> output = (*workload)->Output();
  ASSERT_TRUE(output.ok());
  EXPECT_EQ(EncodeTensor(*output), bytes);
}

TEST(StreamRunTest, WithoutReturnOutputOnlyTheResult) {
  InProcessServer server(SmallChunks());
  const Streamed streamed = StreamRun(server, SmallRequest());
  ASSERT_TRUE(streamed.status.ok());
  EXPECT_EQ(streamed.messages, 1);
  EXPECT_EQ(streamed.results.size(), 1u);
}

TEST(StreamRunTest, OutputLargerThanInlineLimitStreams) {
  ServerOptions options = SmallChunks();
  options.max_inline_output_bytes = 100;
  InProcessServer server(options);
  pb::RunRequest request = SmallRequest(32, 2, 16);
  request.set_return_output(true);
  const Streamed streamed = StreamRun(server, request);
  ASSERT_TRUE(streamed.status.ok()) << streamed.status.error_message();
  EXPECT_EQ(streamed.chunks.size(), 5u);  // 4096 bytes in 1000-byte chunks
}

TEST(StreamRunTest, ErrorsEndTheStream) {
  InProcessServer server;
  pb::RunRequest request = SmallRequest();
  request.mutable_spec()->set_head_dim_qk(0);
  const Streamed streamed = StreamRun(server, request);
  EXPECT_EQ(streamed.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(streamed.messages, 0);
}

struct Swept {
  std::vector<pb::SweepResponse> responses;
  grpc::Status status;
};

Swept Sweep(InProcessServer& server, const pb::SweepRequest& request,
            std::chrono::milliseconds deadline = std::chrono::milliseconds(0)) {
  Swept out;
  grpc::ClientContext context;
  if (deadline.count() > 0) context.set_deadline(std::chrono::system_clock::now() + deadline);
  auto reader = server.stub().Sweep(&context, request);
  pb::SweepResponse response;
  while (reader->Read(&response)) out.responses.push_back(response);
  out.status = reader->Finish();
  return out;
}

pb::SweepRequest Grid() {
  pb::SweepRequest sweep;
  *sweep.mutable_base() = SmallRequest(16, 2, 8);
  auto* seq = sweep.add_axes()->mutable_seq_len();
  seq->add_values(8);
  seq->add_values(24);
  auto* dtype = sweep.add_axes()->mutable_dtype();
  dtype->add_values(pb::DTYPE_FLOAT32);
  dtype->add_values(pb::DTYPE_BFLOAT16);
  auto* layout = sweep.add_axes()->mutable_layout();
  layout->add_values()->mutable_mha()->set_num_heads(2);
  auto* gqa = layout->add_values()->mutable_gqa();
  gqa->set_num_query_heads(4);
  gqa->set_num_kv_heads(2);
  return sweep;
}

TEST(SweepTest, StreamsEveryPointInRowMajorOrder) {
  InProcessServer server;
  const Swept swept = Sweep(server, Grid());
  ASSERT_TRUE(swept.status.ok()) << swept.status.error_message();
  ASSERT_EQ(swept.responses.size(), 8u);
  for (int i = 0; i < 8; ++i) {
    const pb::SweepResponse& r = swept.responses[i];
    EXPECT_EQ(r.point_index(), i);
    EXPECT_EQ(r.total_points(), 8);
    EXPECT_EQ(r.completed_points(), i + 1);
    ASSERT_TRUE(r.has_result()) << r.error().message();
    const pb::AttentionSpec& spec = r.result().spec();
    EXPECT_EQ(spec.seq_len_q(), i / 4 == 0 ? 8 : 24) << i;
    EXPECT_EQ(spec.dtype(), (i / 2) % 2 == 0 ? pb::DTYPE_FLOAT32 : pb::DTYPE_BFLOAT16) << i;
    EXPECT_EQ(spec.layout().has_gqa(), i % 2 == 1) << i;
    EXPECT_TRUE(r.result().correctness().passed()) << i;
  }
}

// Batch axis [1, 65536] on a server taking at most 64 MiB a request: every large point is valid
// (the grid passes) but refused once it runs, when the backend estimates its memory.
pb::SweepRequest GridWithFailures() {
  pb::SweepRequest sweep;
  *sweep.mutable_base() = SmallRequest(8, 1, 8);
  sweep.mutable_base()->set_backend("cpu_reference");
  auto* seq = sweep.add_axes()->mutable_seq_len();
  seq->add_values(8);
  seq->add_values(16);
  auto* batch = sweep.add_axes()->mutable_batch_size();
  batch->add_values(1);
  batch->add_values(65536);
  return sweep;
}

ServerOptions SmallRequestsOnly() {
  ServerOptions options;
  options.max_request_bytes = uint64_t{64} << 20;
  return options;
}

TEST(SweepTest, ContinueOnErrorStreamsErrorsInPlace) {
  InProcessServer server(SmallRequestsOnly());
  pb::SweepRequest sweep = GridWithFailures();
  sweep.set_continue_on_error(true);
  const Swept swept = Sweep(server, sweep);
  ASSERT_TRUE(swept.status.ok()) << swept.status.error_message();
  ASSERT_EQ(swept.responses.size(), 4u);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(swept.responses[i].point_index(), i);
    EXPECT_EQ(swept.responses[i].completed_points(), i + 1);
    if (i % 2 == 0) {
      EXPECT_TRUE(swept.responses[i].has_result()) << i;
    } else {
      ASSERT_TRUE(swept.responses[i].has_error()) << i;
      EXPECT_EQ(swept.responses[i].error().code(),
                static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED));
      EXPECT_THAT(swept.responses[i].error().message(), HasSubstr("--max_request_bytes"));
    }
  }
}

TEST(SweepTest, WithoutContinueTheFirstFailureEndsTheRpc) {
  InProcessServer server(SmallRequestsOnly());
  const Swept swept = Sweep(server, GridWithFailures());
  EXPECT_EQ(swept.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(swept.status.error_message(), HasSubstr("sweep point 1"));
  ASSERT_EQ(swept.responses.size(), 1u);
  EXPECT_TRUE(swept.responses[0].has_result());
}

TEST(SweepTest, BadGridsRefusedBeforeAnyPointRuns) {
  ServerOptions options;
  options.max_sweep_points = 7;
  InProcessServer server(options);

  Swept swept = Sweep(server, Grid());  // 8 points
  EXPECT_EQ(swept.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(swept.status.error_message(), HasSubstr("--max_sweep_points"));
  EXPECT_TRUE(swept.responses.empty());

  pb::SweepRequest empty_axis = GridWithFailures();
  empty_axis.add_axes()->mutable_batch_size();
  swept = Sweep(server, empty_axis);
  EXPECT_EQ(swept.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(swept.status.error_message(), HasSubstr("axes[2]"));

  // The last point has an invalid head dim: nothing runs, the error names point 3 and the field.
  pb::SweepRequest bad_point;
  *bad_point.mutable_base() = SmallRequest(8, 1, 8);
  auto* dims = bad_point.add_axes()->mutable_head_dim();
  dims->add_values(8);
  dims->add_values(16);
  dims->add_values(32);
  dims->add_values(0);
  swept = Sweep(server, bad_point);
  EXPECT_EQ(swept.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(swept.status.error_message(), HasSubstr("sweep point 3"));
  EXPECT_THAT(swept.status.error_message(), HasSubstr("head_dim"));
  EXPECT_TRUE(swept.responses.empty());

  pb::SweepRequest bad_backend = GridWithFailures();
  bad_backend.add_axes()->mutable_backend()->add_values("nope");
  swept = Sweep(server, bad_backend);
  EXPECT_EQ(swept.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(swept.status.error_message(), HasSubstr("sweep point 0"));
  EXPECT_TRUE(swept.responses.empty());
}

TEST(SweepTest, DeadlineStopsBetweenAndWithinPoints) {
  InProcessServer server;
  pb::SweepRequest sweep;
  *sweep.mutable_base() = SmallRequest(64, 2, 16);
  // Each point measures for 100 ms; 50 points would take 5 s.
  sweep.mutable_base()->mutable_measurement()->set_min_iterations(1);
  sweep.mutable_base()->mutable_measurement()->set_max_iterations(100000);
  sweep.mutable_base()->mutable_measurement()->set_max_duration_seconds(0.1);
  sweep.set_continue_on_error(true);
  auto* batch = sweep.add_axes()->mutable_batch_size();
  for (int i = 0; i < 50; ++i) batch->add_values(1);
  const auto start = std::chrono::steady_clock::now();
  const Swept swept = Sweep(server, sweep, std::chrono::milliseconds(450));
  EXPECT_EQ(swept.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  EXPECT_GE(swept.responses.size(), 1u);
  EXPECT_LT(swept.responses.size(), 50u);
  for (const pb::SweepResponse& r : swept.responses) EXPECT_TRUE(r.has_result());
}

}  // namespace
}  // namespace attnbench::server
