// Every error status Run can return, each for the reason the API gives: INVALID_ARGUMENT,
// FAILED_PRECONDITION, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED and CANCELLED (mid-run, promptly,
// with the device freed for the next request).
#include <chrono>
#include <limits>
#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/test_util.h"

namespace attnbench::server {
namespace {

namespace pb = ::attnbench::v1;

using ::testing::HasSubstr;
using testing::InProcessServer;
using testing::MetricValue;
using testing::SmallRequest;

grpc::Status CallRun(InProcessServer& server, const pb::RunRequest& request,
                     pb::RunResponse* response = nullptr) {
  grpc::ClientContext context;
  pb::RunResponse local;
  return server.stub().Run(&context, request, response != nullptr ? response : &local);
}

void ExpectStatus(const grpc::Status& status, grpc::StatusCode code, const std::string& text) {
  EXPECT_EQ(status.error_code(), code) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr(text));
}

class ErrorsTest : public ::testing::Test {
 protected:
  static InProcessServer& server() {
    static auto* s = [] {
      ServerOptions options;
      options.max_iterations = 1000;
      options.max_duration_seconds = 30;
      return new InProcessServer(options);
    }();
    return *s;
  }
};

TEST_F(ErrorsTest, InvalidSpecFieldsNamed) {
  pb::RunRequest r = SmallRequest();
  r.mutable_spec()->set_batch_size(0);
  ExpectStatus(CallRun(server(), r), grpc::StatusCode::INVALID_ARGUMENT, "batch_size");

  r = SmallRequest();
  r.mutable_spec()->mutable_layout()->mutable_gqa()->set_num_query_heads(6);
  r.mutable_spec()->mutable_layout()->mutable_gqa()->set_num_kv_heads(4);
  ExpectStatus(CallRun(server(), r), grpc::StatusCode::INVALID_ARGUMENT, "num_kv_heads");

  r = SmallRequest();
  r.mutable_spec()->set_dtype(static_cast<pb::DType>(99));
  ExpectStatus(CallRun(server(), r), grpc::StatusCode::INVALID_ARGUMENT, "spec.dtype");

  r = SmallRequest();
  r.mutable_spec()->clear_layout();
  ExpectStatus(CallRun(server(), r), grpc::StatusCode::INVALID_ARGUMENT, "layout");
}

TEST_F(ErrorsTest, UnknownBackendListsKnownNames) {
  pb::RunRequest r = SmallRequest();
  r.set_backend("flash9");
  const grpc::Status s = CallRun(server(), r);
  ExpectStatus(s, grpc::StatusCode::INVALID_ARGUMENT, "flash9");
  EXPECT_THAT(s.error_message(), HasSubstr("cpu_reference"));
}

TEST_F(ErrorsTest, DeviceIndexOutOfRange) {
  pb::RunRequest r = SmallRequest();
  r.set_device_index(1);
  ExpectStatus(CallRun(server(), r), grpc::StatusCode::INVALID_ARGUMENT, "device_index");
  r.set_device_index(-1);
  ExpectStatus(CallRun(server(), r), grpc::StatusCode::INVALID_ARGUMENT, "device_index");
  r.set_device_index(0);
  EXPECT_TRUE(CallRun(server(), r).ok());
}

TEST_F(ErrorsTest, MeasurementAndCheckSettingsOverLimitsOrInvalid) {
  pb::RunRequest r = SmallRequest();
  r.mutable_measurement()->set_max_iterations(1001);
  ExpectStatus(CallRun(server(), r), grpc::StatusCode::INVALID_ARGUMENT, "--max_iterations=1000");

  r = SmallRequest();
  r.mutable_measurement()->set_max_duration_seconds(31);
  ExpectStatus(CallRun(server(), r), grpc::StatusCode::INVALID_ARGUMENT,
               "measurement.max_duration_seconds");

  r = SmallRequest();
  r.mutable_measurement()->set_min_iterations(0);
  ExpectStatus(CallRun(server(), r), grpc::StatusCode::INVALID_ARGUMENT,
               "measurement.min_iterations");

  r = SmallRequest();
  r.mutable_check()->set_max_sampled_rows(-3);
  ExpectStatus(CallRun(server(), r), grpc::StatusCode::INVALID_ARGUMENT, "check.max_sampled_rows");
}

TEST_F(ErrorsTest, Fp8IsAPrefillDtypeOnEveryBackend) {
  // §1b defines FP8 inputs for the prefill forward at core scope: anything else is refused as
  // invalid, on every backend and before any runs.
  pb::RunRequest r = SmallRequest();
  r.mutable_spec()->set_phase(pb::PHASE_BACKWARD);
  r.mutable_spec()->set_dtype(pb::DTYPE_FLOAT8_E4M3);
  for (const char* backend : {"cpu_reference", "auto"}) {
    r.set_backend(backend);
    ExpectStatus(CallRun(server(), r), grpc::StatusCode::INVALID_ARGUMENT,
                 "spec.dtype DTYPE_FLOAT8_E4M3 is defined for PHASE_PREFILL at SCOPE_CORE");
  }
  r.mutable_spec()->set_phase(pb::PHASE_PREFILL);
  r.mutable_spec()->set_output_dtype(pb::DTYPE_FLOAT16);
  ExpectStatus(CallRun(server(), r), grpc::StatusCode::INVALID_ARGUMENT,
               "spec.output_dtype (float16) must be bfloat16");
  r.mutable_spec()->clear_output_dtype();
  r.mutable_spec()->mutable_float8()->add_key_scales(0.0f);
  ExpectStatus(CallRun(server(), r), grpc::StatusCode::INVALID_ARGUMENT,
               "spec.float8.key_scales[0] (0) must be finite, > 0");
  r.mutable_spec()->mutable_float8()->add_key_scales(1.0f);
  ExpectStatus(CallRun(server(), r), grpc::StatusCode::INVALID_ARGUMENT,
               "spec.float8.key_scales has 2 scales; SCALE_GRANULARITY_TENSOR needs 1");
  r.mutable_spec()->set_dtype(pb::DTYPE_BFLOAT16);
  ExpectStatus(CallRun(server(), r), grpc::StatusCode::INVALID_ARGUMENT,
               "spec.float8 is only valid with spec.dtype DTYPE_FLOAT8_E4M3");
}

TEST_F(ErrorsTest, CudaGraphsArePreconditionFailureOnCpu) {
  pb::RunRequest r = SmallRequest();
  r.mutable_measurement()->set_use_cuda_graph(true);
  ExpectStatus(CallRun(server(), r), grpc::StatusCode::FAILED_PRECONDITION, "use_cuda_graph");
}

TEST(ResourceTest, RequestOverMaxRequestBytes) {
  ServerOptions options;
  options.max_request_bytes = 4096;
  InProcessServer server(options);
  const grpc::Status s = CallRun(server, SmallRequest());
  ExpectStatus(s, grpc::StatusCode::RESOURCE_EXHAUSTED, "--max_request_bytes=4096");
  EXPECT_THAT(s.error_message(), HasSubstr("estimates"));
}

TEST(ResourceTest, InlineOutputTooLargeSaysStreamRun) {
  ServerOptions options;
  options.max_inline_output_bytes = 1024;
  InProcessServer server(options);
  pb::RunRequest r = SmallRequest(32, 2, 16);  // 32 * 2 * 16 * 4 = 4096 bytes
  r.set_return_output(true);
  const grpc::Status s = CallRun(server, r);
  ExpectStatus(s, grpc::StatusCode::RESOURCE_EXHAUSTED, "StreamRun");
  EXPECT_THAT(s.error_message(), HasSubstr("4096 bytes"));
  // Without return_output the same request runs.
  r.set_return_output(false);
  EXPECT_TRUE(CallRun(server, r).ok());
  // And 1024 bytes exactly fit.
  r = SmallRequest(8, 2, 16);
  r.set_return_output(true);
  pb::RunResponse response;
  ASSERT_TRUE(CallRun(server, r, &response).ok());
  EXPECT_EQ(response.result().output().data().size(), 1024u);
}

TEST(ResourceTest, HugeShapesRefusedWithoutCrashing) {
  InProcessServer server;
  const int64_t sizes[] = {int64_t{1} << 40, std::numeric_limits<int64_t>::max(), -5};
  for (int64_t size : sizes) {
    pb::RunRequest r = SmallRequest();
    r.mutable_spec()->set_seq_len_kv(size);
    r.mutable_spec()->set_seq_len_q(size);
    const grpc::Status s = CallRun(server, r);
    EXPECT_FALSE(s.ok()) << size;
    EXPECT_THAT(s.error_code(), ::testing::AnyOf(grpc::StatusCode::INVALID_ARGUMENT,
                                                 grpc::StatusCode::RESOURCE_EXHAUSTED))
        << size << ": " << s.error_message();
  }
  pb::RunRequest r = SmallRequest();
  r.mutable_spec()->set_batch_size(std::numeric_limits<int64_t>::max());
  r.mutable_spec()->set_head_dim_qk(std::numeric_limits<int32_t>::max());
  EXPECT_FALSE(CallRun(server, r).ok());
}

// Many iterations of a workload of a few milliseconds: far longer than the deadline.
pb::RunRequest LongRequest() {
  pb::RunRequest r = SmallRequest(128, 4, 32);
  r.mutable_measurement()->set_min_iterations(100000);
  r.mutable_measurement()->set_max_iterations(100000);
  r.mutable_measurement()->set_max_duration_seconds(600);
  r.mutable_check()->set_mode(pb::CHECK_MODE_OFF);
  return r;
}

// The handler records its status just after the client may have seen its own; give it a moment.
double EventualMetric(InProcessServer& server, const std::string& code) {
  double value = -1;
  for (int i = 0; i < 200 && value < 1; ++i) {
    value = MetricValue(server.metrics(), "attnbench_requests_total",
                        {{"method", "Run"}, {"code", code}});
    if (value < 1) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return value;
}

// A follow-up request that finds the device free proves the abandoned run stopped.
void ExpectDeviceFreed(InProcessServer& server) {
  pb::RunResponse response;
  ASSERT_TRUE(CallRun(server, SmallRequest(8, 1, 8), &response).ok());
  EXPECT_LT(response.result().queue_ms(), 500);
}

TEST(InterruptTest, DeadlineStopsMidRunPromptly) {
  InProcessServer server;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(300));
  pb::RunResponse response;
  const auto start = std::chrono::steady_clock::now();
  const grpc::Status s = server.stub().Run(&context, LongRequest(), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  ExpectDeviceFreed(server);
  // The server itself saw the deadline (not only the client).
  EXPECT_EQ(EventualMetric(server, "DEADLINE_EXCEEDED"), 1);
}

TEST(InterruptTest, CancelStopsMidRunPromptly) {
  InProcessServer server;
  grpc::ClientContext context;
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    context.TryCancel();
  });
  pb::RunResponse response;
  const auto start = std::chrono::steady_clock::now();
  const grpc::Status s = server.stub().Run(&context, LongRequest(), &response);
  canceller.join();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  ExpectDeviceFreed(server);
  EXPECT_EQ(EventualMetric(server, "CANCELLED"), 1);
}

}  // namespace
}  // namespace attnbench::server
