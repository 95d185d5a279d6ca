// Runaway work (issue #4) through the service: a run over --max_request_flops_cpu is refused
// before it queues (RESOURCE_EXHAUSTED naming the flag and both numbers, counted as a rejection)
// while one exactly at the limit runs; and a deadline or a cancel stops a CPU run inside a single
// iteration of many seconds, freeing the device for the next request at once.
#include <chrono>
#include <thread>

#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/spec/counting.h"
#include "kernels/registry.h"
#include "kernels/spec/shapes.h"
#include "server/request_check.h"
#include "server/work_limit.h"
#include "tests/server/test_util.h"

namespace attnbench::server {
namespace {

namespace pb = ::attnbench::v1;

using ::testing::HasSubstr;
using testing::InProcessServer;
using testing::MetricValue;
using testing::SmallRequest;

// The work the server counts for `request`, from the same functions it uses.
double CountedWork(const pb::RunRequest& request, const InProcessServer& server,
                   const BackendList& backends) {
  absl::StatusOr<CheckedRequest> checked = CheckRunRequest(request, backends, server.options());
  EXPECT_TRUE(checked.ok()) << checked.status();
  absl::StatusOr<WorkCounts> counts = CountWork(checked->problem);
  absl::StatusOr<ProblemShapes> shapes = ShapesOf(checked->problem);
  EXPECT_TRUE(counts.ok() && shapes.ok());
  const RequestWork work =
      EstimateRequestWork(*counts, checked->measurement, checked->check, shapes->rows_total);
  return work.device() + work.check;
}

ServerOptions WithCpuLimit(double flops) {
  ServerOptions options;
  options.max_request_flops_cpu = flops;
  return options;
}

TEST(WorkLimitServiceTest, RefusedOverTheLimitBeforeQueueingAndRunAtIt) {
  const pb::RunRequest request = SmallRequest(64, 2, 16);
  double work = 0;
  {
    InProcessServer probe;
    work = CountedWork(request, probe, CreateBackends(RegistryOptions{2}));
  }
  ASSERT_GT(work, 0);

  InProcessServer at_limit(WithCpuLimit(work));
  {
    grpc::ClientContext context;
    pb::RunResponse response;
    const grpc::Status s = at_limit.stub().Run(&context, request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
  }

  InProcessServer under(WithCpuLimit(work * (1 - 1e-6)));
  grpc::ClientContext context;
  pb::RunResponse response;
  const grpc::Status s = under.stub().Run(&context, request, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("--max_request_flops_cpu="));
  EXPECT_THAT(s.error_message(), HasSubstr(absl::StrFormat("%.3g FLOPs", work)));
  EXPECT_THAT(s.error_message(),
              HasSubstr(absl::StrFormat("--max_request_flops_cpu=%.3g", work * (1 - 1e-6))));
  EXPECT_EQ(
      MetricValue(under.metrics(), "attnbench_rejections_total", {{"reason", "too_much_work"}}), 1);
  // Refused before queueing: the device never saw it.
  EXPECT_EQ(MetricValue(under.metrics(), "attnbench_requests_total",
                        {{"method", "Run"}, {"code", "RESOURCE_EXHAUSTED"}}),
            1);
}

TEST(WorkLimitServiceTest, SweepPointsAreLimitedOneByOne) {
  pb::SweepRequest sweep;
  *sweep.mutable_base() = SmallRequest(32, 1, 8);
  pb::SweepAxis* axis = sweep.add_axes();
  axis->mutable_seq_len()->add_values(32);
  axis->mutable_seq_len()->add_values(256);
  sweep.set_continue_on_error(true);
  const pb::RunRequest big = SmallRequest(256, 1, 8);
  double small_work = 0, big_work = 0;
  {
    InProcessServer probe;
    const BackendList backends = CreateBackends(RegistryOptions{2});
    small_work = CountedWork(SmallRequest(32, 1, 8), probe, backends);
    big_work = CountedWork(big, probe, backends);
  }
  ASSERT_LT(small_work, big_work);
  InProcessServer server(WithCpuLimit((small_work + big_work) / 2));
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReader<pb::SweepResponse>> reader =
      server.stub().Sweep(&context, sweep);
  pb::SweepResponse point;
  int ok = 0, refused = 0;
  while (reader->Read(&point)) {
    if (point.has_result()) ++ok;
    if (point.has_error()) {
      EXPECT_EQ(point.error().code(), static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED));
      EXPECT_THAT(point.error().message(), HasSubstr("--max_request_flops_cpu"));
      ++refused;
    }
  }
  EXPECT_TRUE(reader->Finish().ok());
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(refused, 1);
}

// One iteration of many seconds on the CPU backend (4096 x 1M score entries at head dim 1; ~40 s
// on one idle core), far under the default limit: only stopping inside it ends the run sooner.
pb::RunRequest OneLongIteration() {
  pb::RunRequest r = SmallRequest(4096, 1, 1);
  r.mutable_spec()->set_seq_len_kv(int64_t{1} << 20);
  pb::MeasurementSettings* m = r.mutable_measurement();
  m->set_warmup_iterations(0);
  m->set_min_iterations(1);
  m->set_max_iterations(1);
  r.mutable_check()->set_mode(pb::CHECK_MODE_OFF);
  return r;
}

// The device is free once a tiny run finds no queue; without stopping inside the iteration it
// would wait for the rest of it (many seconds).
void ExpectDeviceFreedPromptly(InProcessServer& server) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
  pb::RunResponse response;
  const grpc::Status s = server.stub().Run(&context, SmallRequest(8, 1, 8), &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_LT(response.result().queue_ms(), 1000);
}

// The server records its status once the stopped run returns; wait for it, bounded.
double EventualMetric(InProcessServer& server, const std::string& code) {
  double value = -1;
  for (int i = 0; i < 500 && value < 1; ++i) {
    value = MetricValue(server.metrics(), "attnbench_requests_total",
                        {{"method", "Run"}, {"code", code}});
    if (value < 1) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return value;
}

// One CPU thread: the test keeps one core busy, not both, for the tests running beside it.
BackendList OneThreadCpu() { return CreateBackends(RegistryOptions{1}); }

TEST(StopWithinIterationTest, DeadlineStopsALongCpuIteration) {
  InProcessServer server(ServerOptions(), OneThreadCpu());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(1000));
  pb::RunResponse response;
  const grpc::Status s = server.stub().Run(&context, OneLongIteration(), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
  ExpectDeviceFreedPromptly(server);
  // The server itself stopped on the deadline (not only the client's timer).
  EXPECT_EQ(EventualMetric(server, "DEADLINE_EXCEEDED"), 1);
}

TEST(StopWithinIterationTest, CancelStopsALongCpuIteration) {
  InProcessServer server(ServerOptions(), OneThreadCpu());
  grpc::ClientContext context;
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(1000));
    context.TryCancel();
  });
  pb::RunResponse response;
  const grpc::Status s = server.stub().Run(&context, OneLongIteration(), &response);
  canceller.join();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::CANCELLED) << s.error_message();
  ExpectDeviceFreedPromptly(server);
  EXPECT_EQ(EventualMetric(server, "CANCELLED"), 1);
}

}  // namespace
}  // namespace attnbench::server
