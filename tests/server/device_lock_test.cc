#include "server/device_lock.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace attnbench::server {
namespace {

using Clock = std::chrono::steady_clock;

absl::Status Go() { return absl::OkStatus(); }

void WaitForQueue(const DeviceScheduler& s, const std::string& device, int length) {
  while (s.QueueLength(device) < length) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

TEST(DeviceLockTest, HoldersNeverOverlap) {
  DeviceScheduler scheduler;
  absl::Mutex mu;
  std::vector<std::pair<Clock::time_point, Clock::time_point>> intervals;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        auto lease = scheduler.Acquire("cpu:0", Go);
        ASSERT_TRUE(lease.ok());
        const auto start = Clock::now();
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        const auto end = Clock::now();
        absl::MutexLock lock(&mu);
        intervals.emplace_back(start, end);
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_EQ(intervals.size(), 20u);
  std::sort(intervals.begin(), intervals.end());
  for (size_t i = 1; i < intervals.size(); ++i) {
    EXPECT_LE(intervals[i - 1].second, intervals[i].first) << "intervals " << i - 1 << ", " << i;
  }
  EXPECT_EQ(scheduler.QueueLength("cpu:0"), 0);
}

TEST(DeviceLockTest, WaitersServedInArrivalOrder) {
  DeviceScheduler scheduler;
  auto first = scheduler.Acquire("cuda:0", Go);
  ASSERT_TRUE(first.ok());
  absl::Mutex mu;
  std::vector<int> order;
  std::vector<std::thread> threads;
  for (int t = 0; t < 5; ++t) {
    threads.emplace_back([&, t] {
      auto lease = scheduler.Acquire("cuda:0", Go);
      ASSERT_TRUE(lease.ok());
      absl::MutexLock lock(&mu);
      order.push_back(t);
    });
    // Each thread is queued before the next starts, so arrival order is 0..4.
    WaitForQueue(scheduler, "cuda:0", t + 2);
  }
  *first = DeviceScheduler::Lease();
  for (auto& t : threads) t.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST(DeviceLockTest, CancelledWaiterLeavesQueue) {
  DeviceScheduler scheduler;
  auto holder = scheduler.Acquire("cpu:0", Go);
  ASSERT_TRUE(holder.ok());
  std::atomic<bool> cancel{false};
  absl::Status waited;
  std::thread waiter([&] {
    auto lease = scheduler.Acquire("cpu:0", [&]() -> absl::Status {
      return cancel.load() ? absl::CancelledError("client gone") : absl::OkStatus();
    });
    waited = lease.status();
  });
  WaitForQueue(scheduler, "cpu:0", 2);
  const auto cancelled_at = Clock::now();
  cancel = true;
  waiter.join();
  EXPECT_LT(Clock::now() - cancelled_at, std::chrono::milliseconds(500));
  EXPECT_EQ(waited.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(scheduler.QueueLength("cpu:0"), 1);
  // The abandoned ticket does not block the next waiter.
  *holder = DeviceScheduler::Lease();
  auto next = scheduler.Acquire("cpu:0", Go);
  EXPECT_TRUE(next.ok());
}

TEST(DeviceLockTest, DevicesAreIndependent) {
  DeviceScheduler scheduler;
  auto a = scheduler.Acquire("cuda:0", Go);
  ASSERT_TRUE(a.ok());
  const auto start = Clock::now();
  auto b = scheduler.Acquire("cuda:1", Go);
  ASSERT_TRUE(b.ok());
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(100));
  EXPECT_EQ(scheduler.QueueLength("cuda:0"), 1);
  EXPECT_EQ(scheduler.QueueLength("cuda:1"), 1);
}

TEST(DeviceLockTest, MovedLeaseReleasesOnce) {
  DeviceScheduler scheduler;
  {
    auto a = scheduler.Acquire("cpu:0", Go);
    ASSERT_TRUE(a.ok());
    DeviceScheduler::Lease moved = *std::move(a);
    EXPECT_EQ(scheduler.QueueLength("cpu:0"), 1);
  }
  EXPECT_EQ(scheduler.QueueLength("cpu:0"), 0);
}

}  // namespace
}  // namespace attnbench::server
