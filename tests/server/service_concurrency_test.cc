// Requests for one device never overlap: cpu_reference wrapped so every workload records when it
// was prepared and when it was destroyed (the whole time it may touch the device), driven by
// concurrent Runs.
#include <algorithm>
#include <chrono>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "kernels/registry.h"
#include "tests/server/test_util.h"

namespace attnbench::server {
namespace {

namespace pb = ::attnbench::v1;

using testing::InProcessServer;
using testing::SmallRequest;
using Clock = std::chrono::steady_clock;

struct Intervals {
  absl::Mutex mu;
  std::vector<std::pair<Clock::time_point, Clock::time_point>> spans ABSL_GUARDED_BY(mu);
};

class RecordingWorkload : public Workload {
 public:
  RecordingWorkload(std::unique_ptr<Workload> inner, Intervals* intervals, Clock::time_point start)
      : inner_(std::move(inner)), intervals_(intervals), start_(start) {}
  ~RecordingWorkload() override {
    inner_.reset();
    absl::MutexLock lock(&intervals_->mu);
    intervals_->spans.emplace_back(start_, Clock::now());
  }
  absl::Status BeforeIteration(const IterationOptions& o) override {
    return inner_->BeforeIteration(o);
  }
  absl::StatusOr<double> RunTimed() override { return inner_->RunTimed(); }
  const AttentionInputs& Inputs() const override { return inner_->Inputs(); }
  absl::StatusOr<FloatTensor> Output() override { return inner_->Output(); }
  DeviceDescription Device() const override { return inner_->Device(); }

 private:
  std::unique_ptr<Workload> inner_;
  Intervals* intervals_;
  Clock::time_point start_;
};

class RecordingBackend : public Backend {
 public:
  RecordingBackend(std::unique_ptr<Backend> inner, Intervals* intervals)
      : inner_(std::move(inner)), intervals_(intervals) {}
  std::string Name() const override { return inner_->Name(); }
  std::string Description() const override { return inner_->Description(); }
  std::vector<DeviceDescription> Devices() const override { return inner_->Devices(); }
  BackendSupport Support() const override { return inner_->Support(); }
  absl::Status CheckSupported(const Problem& p) const override { return inner_->CheckSupported(p); }
  uint64_t EstimateBytes(const Problem& p) const override { return inner_->EstimateBytes(p); }
  absl::StatusOr<std::unique_ptr<Workload>> Prepare(const Problem& p, int device) override {
    const Clock::time_point start = Clock::now();
    auto inner = inner_->Prepare(p, device);
    if (!inner.ok()) return inner.status();
    return std::unique_ptr<Workload>(
        std::make_unique<RecordingWorkload>(*std::move(inner), intervals_, start));
  }

 private:
  std::unique_ptr<Backend> inner_;
  Intervals* intervals_;
};

// cpu_reference presented as two devices ("cpu:0", "cpu:1"), both backed by the host.
class TwoDeviceBackend : public RecordingBackend {
 public:
  using RecordingBackend::RecordingBackend;
  std::vector<DeviceDescription> Devices() const override {
    std::vector<DeviceDescription> devices = RecordingBackend::Devices();
    devices.push_back(devices.front());
    devices.back().index = 1;
    return devices;
  }
  absl::StatusOr<std::unique_ptr<Workload>> Prepare(const Problem& p, int device) override {
    if (device < 0 || device > 1) return absl::InvalidArgumentError("no such device");
    return RecordingBackend::Prepare(p, 0);
  }
};

TEST(ConcurrencyTest, SpreadSweepRunsPointsOnEveryDeviceAtOnce) {
  Intervals intervals;
  BackendList backends;
  for (auto& b : CreateBackends(RegistryOptions{1})) {
    backends.push_back(std::make_unique<TwoDeviceBackend>(std::move(b), &intervals));
  }
  InProcessServer server(ServerOptions(), std::move(backends));
  pb::SweepRequest sweep;
  *sweep.mutable_base() = SmallRequest(32, 2, 16);
  sweep.mutable_base()->mutable_measurement()->set_min_iterations(1);
  sweep.mutable_base()->mutable_measurement()->set_max_iterations(100000);
  sweep.mutable_base()->mutable_measurement()->set_max_duration_seconds(0.2);
  auto* seq = sweep.add_axes()->mutable_seq_len();
  for (int64_t s : {16, 24, 32, 40}) seq->add_values(s);
  sweep.set_spread_devices(true);

  grpc::ClientContext context;
  const auto start = Clock::now();
  auto reader = server.stub().Sweep(&context, sweep);
  pb::SweepResponse response;
  std::vector<int> seen;
  while (reader->Read(&response)) {
    ASSERT_TRUE(response.has_result()) << response.error().message();
    seen.push_back(response.point_index());
    EXPECT_EQ(response.completed_points(), static_cast<int>(seen.size()));
  }
  ASSERT_TRUE(reader->Finish().ok());
  const auto elapsed = Clock::now() - start;
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, (std::vector<int>{0, 1, 2, 3}));
  // Four 200 ms points on two devices: about 400 ms, not the 800 ms of one device.
  EXPECT_LT(elapsed, std::chrono::milliseconds(760));
  absl::MutexLock lock(&intervals.mu);
  ASSERT_EQ(intervals.spans.size(), 4u);
  std::sort(intervals.spans.begin(), intervals.spans.end());
  EXPECT_LT(intervals.spans[1].first, intervals.spans[0].second) << "no two points overlapped";
}

TEST(ConcurrencyTest, RunsOnOneDeviceNeverOverlap) {
  Intervals intervals;
  BackendList backends;
  for (auto& b : CreateBackends(RegistryOptions{1})) {
    backends.push_back(std::make_unique<RecordingBackend>(std::move(b), &intervals));
  }
  InProcessServer server(ServerOptions(), std::move(backends));

  // Each run holds the device for about 150 ms.
  pb::RunRequest request = SmallRequest(64, 2, 16);
  request.mutable_measurement()->set_min_iterations(1);
  request.mutable_measurement()->set_max_iterations(100000);
  request.mutable_measurement()->set_max_duration_seconds(0.15);

  constexpr int kClients = 3;
  std::vector<pb::RunResponse> responses(kClients);
  std::vector<grpc::Status> statuses(kClients);
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      grpc::ClientContext context;
      statuses[c] = server.stub().Run(&context, request, &responses[c]);
    });
  }
  for (auto& t : clients) t.join();

  double max_queue_ms = 0;
  for (int c = 0; c < kClients; ++c) {
    ASSERT_TRUE(statuses[c].ok()) << statuses[c].error_message();
    max_queue_ms = std::max(max_queue_ms, responses[c].result().queue_ms());
  }
  // The last in line waited for the two before it.
  EXPECT_GT(max_queue_ms, 250);

  absl::MutexLock lock(&intervals.mu);
  ASSERT_EQ(intervals.spans.size(), static_cast<size_t>(kClients));
  std::sort(intervals.spans.begin(), intervals.spans.end());
  for (size_t i = 1; i < intervals.spans.size(); ++i) {
    EXPECT_LE(intervals.spans[i - 1].second, intervals.spans[i].first)
        << "workloads " << i - 1 << " and " << i << " overlapped";
  }
}

TEST(ConcurrencyTest, WaiterInQueueHonoursItsDeadline) {
  InProcessServer server;
  // The holder measures for up to 10 s but is cancelled by its own 1.5 s deadline.
  pb::RunRequest holder = SmallRequest(64, 2, 16);
  holder.mutable_measurement()->set_min_iterations(100000);
  holder.mutable_measurement()->set_max_iterations(100000);
  holder.mutable_measurement()->set_max_duration_seconds(10);
  std::thread first([&] {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(1500));
    pb::RunResponse response;
    EXPECT_EQ(server.stub().Run(&context, holder, &response).error_code(),
              grpc::StatusCode::DEADLINE_EXCEEDED);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the holder has the device
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(200));
  pb::RunResponse response;
  const auto start = Clock::now();
  EXPECT_EQ(server.stub().Run(&context, SmallRequest(), &response).error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(800));
  first.join();
  // Both abandoned requests left the queue: the next one runs at once.
  grpc::ClientContext after;
  ASSERT_TRUE(server.stub().Run(&after, SmallRequest(), &response).ok());
  EXPECT_LT(response.result().queue_ms(), 300);
}

}  // namespace
}  // namespace attnbench::server
