#include "server/scheduler.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/test_util.h"

namespace attnbench::server {
namespace {

using Clock = std::chrono::steady_clock;
using ::testing::HasSubstr;
using testing::MetricValue;

absl::Status Go() { return absl::OkStatus(); }

WorkTicket Ticket(const std::string& tenant, double weight = 1, int priority = 0,
                  std::vector<std::string> devices = {"cpu:0"}) {
  WorkTicket t;
  t.tenant = tenant;
  t.weight = weight;
  t.priority = priority;
  t.devices = std::move(devices);
  return t;
}

void WaitForDepth(const Scheduler& s, const std::string& device, int depth) {
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (s.QueueDepth(device) < depth && absl::Now() < give_up)
    absl::SleepFor(absl::Milliseconds(1));
  ASSERT_GE(s.QueueDepth(device), depth);
}

// Queues one waiter per ticket in order behind a held device, then frees it; each waiter, once
// granted, records its tenant and holds the device for `hold`. Returns the grant order.
std::vector<std::string> GrantOrder(Scheduler& s, const std::vector<WorkTicket>& tickets,
                                    absl::Duration hold) {
  absl::StatusOr<Scheduler::Lease> blocker = s.Acquire(Ticket("blocker"), Go);
  EXPECT_TRUE(blocker.ok());
  absl::Mutex mu;
  std::vector<std::string> order;
  std::vector<std::thread> threads;
  for (size_t i = 0; i < tickets.size(); ++i) {
    threads.emplace_back([&, i] {
      absl::StatusOr<Scheduler::Lease> lease = s.Acquire(tickets[i], Go);
      ASSERT_TRUE(lease.ok()) << lease.status();
      {
        absl::MutexLock lock(&mu);
        order.push_back(tickets[i].tenant + ":" + std::to_string(tickets[i].priority));
      }
      absl::SleepFor(hold);
    });
    WaitForDepth(s, "cpu:0", static_cast<int>(i) + 1);
  }
  *blocker = Scheduler::Lease();
  for (auto& t : threads) t.join();
  return order;
}

TEST(SchedulerTest, HoldersNeverOverlap) {
  Scheduler scheduler;
  absl::Mutex mu;
  std::vector<std::pair<Clock::time_point, Clock::time_point>> intervals;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5; ++i) {
        auto lease = scheduler.Acquire(Ticket(t % 2 ? "a" : "b"), Go);
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
  EXPECT_EQ(scheduler.QueueDepth("cpu:0"), 0);
  EXPECT_EQ(scheduler.TenantLoad("a"), 0);
}

TEST(SchedulerTest, EqualTenantsAlternateWhateverTheArrivalOrder) {
  Scheduler scheduler;
  std::vector<WorkTicket> tickets;
  for (int i = 0; i < 6; ++i) tickets.push_back(Ticket("a"));
  for (int i = 0; i < 6; ++i) tickets.push_back(Ticket("b"));
  const std::vector<std::string> order = GrantOrder(scheduler, tickets, absl::Milliseconds(4));
  ASSERT_EQ(order.size(), 12u);
  // Tenant b arrived after all of a's work, yet gets every other turn from the second on.
  const int b_in_first_half =
      static_cast<int>(std::count(order.begin(), order.begin() + 6, std::string("b:0")));
  EXPECT_GE(b_in_first_half, 2) << ::testing::PrintToString(order);
}

TEST(SchedulerTest, WeightsSplitDeviceTime) {
  Scheduler scheduler;
  std::vector<WorkTicket> tickets;
  for (int i = 0; i < 12; ++i) tickets.push_back(Ticket("heavy", 3));
  for (int i = 0; i < 12; ++i) tickets.push_back(Ticket("light", 1));
  const std::vector<std::string> order = GrantOrder(scheduler, tickets, absl::Milliseconds(4));
  ASSERT_EQ(order.size(), 24u);
  // While both wait, heavy (weight 3) gets about three turns for each of light's.
  const int light =
      static_cast<int>(std::count(order.begin(), order.begin() + 12, std::string("light:0")));
  EXPECT_GE(light, 2) << ::testing::PrintToString(order);
  EXPECT_LE(light, 5) << ::testing::PrintToString(order);
}

TEST(SchedulerTest, PriorityOrdersOnlyWithinATenant) {
  Scheduler scheduler;
  const std::vector<std::string> order = GrantOrder(
      scheduler, {Ticket("a", 1, 0), Ticket("a", 1, 0), Ticket("a", 1, 7)}, absl::Milliseconds(1));
  EXPECT_EQ(order, (std::vector<std::string>{"a:7", "a:0", "a:0"}));
}

TEST(SchedulerTest, DeadlinePassingInTheQueueNeverStarts) {
  auto metrics = std::make_shared<Metrics>();
  Scheduler scheduler({}, metrics.get());
  absl::StatusOr<Scheduler::Lease> holder = scheduler.Acquire(Ticket("a"), Go);
  ASSERT_TRUE(holder.ok());
  WorkTicket late = Ticket("b");
  late.deadline = absl::Now() + absl::Milliseconds(60);
  const absl::Time start = absl::Now();
  absl::StatusOr<Scheduler::Lease> lease = scheduler.Acquire(late, Go);
  EXPECT_EQ(lease.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(lease.status().message(), HasSubstr("never started"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_EQ(scheduler.QueueDepth("cpu:0"), 0);
  EXPECT_EQ(scheduler.TenantLoad("b"), 0);
  EXPECT_EQ(MetricValue(*metrics, "attnbench_rejections_total", {{"reason", "deadline_in_queue"}}),
            1);
}

TEST(SchedulerTest, CancelledWaiterLeavesTheQueue) {
  Scheduler scheduler;
  absl::StatusOr<Scheduler::Lease> holder = scheduler.Acquire(Ticket("a"), Go);
  ASSERT_TRUE(holder.ok());
  std::atomic<bool> cancel{false};
  std::thread waiter([&] {
    absl::StatusOr<Scheduler::Lease> lease = scheduler.Acquire(Ticket("b"), [&]() -> absl::Status {
      return cancel ? absl::CancelledError("gone") : absl::OkStatus();
    });
    EXPECT_EQ(lease.status().code(), absl::StatusCode::kCancelled);
  });
  WaitForDepth(scheduler, "cpu:0", 1);
  cancel = true;
  waiter.join();
  EXPECT_EQ(scheduler.QueueDepth("cpu:0"), 0);
  *holder = Scheduler::Lease();
  // The device is free again for the next caller.
  EXPECT_TRUE(scheduler.Acquire(Ticket("c"), Go).ok());
}

TEST(SchedulerTest, PerTenantLimitNamesTheFlag) {
  SchedulerLimits limits;
  limits.max_queued_per_tenant = 2;
  Scheduler scheduler(limits);
  absl::StatusOr<Scheduler::Lease> first = scheduler.Acquire(Ticket("a"), Go);
  ASSERT_TRUE(first.ok());
  std::thread second([&] { EXPECT_TRUE(scheduler.Acquire(Ticket("a"), Go).ok()); });
  WaitForDepth(scheduler, "cpu:0", 1);
  absl::StatusOr<Scheduler::Lease> third = scheduler.Acquire(Ticket("a"), Go);
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(third.status().message(), HasSubstr("--max_queued_per_tenant=2"));
  EXPECT_THAT(third.status().message(), HasSubstr("retry"));
  // Another tenant is not held back by a's limit.
  std::thread other([&] { EXPECT_TRUE(scheduler.Acquire(Ticket("b"), Go).ok()); });
  WaitForDepth(scheduler, "cpu:0", 2);
  *first = Scheduler::Lease();
  second.join();
  other.join();
}

TEST(SchedulerTest, ServerWideLimit) {
  SchedulerLimits limits;
  limits.max_queued_total = 1;
  Scheduler scheduler(limits);
  absl::StatusOr<Scheduler::Lease> first = scheduler.Acquire(Ticket("a"), Go);
  ASSERT_TRUE(first.ok());
  absl::StatusOr<Scheduler::Lease> second = scheduler.Acquire(Ticket("b"), Go);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(second.status().message(), HasSubstr("--max_queued_total=1"));
}

TEST(SchedulerTest, DeviceSecondsQuotaSaysWhenToRetry) {
  SchedulerLimits limits;
  limits.tenant_device_seconds_per_window = 0.02;
  limits.tenant_window = absl::Seconds(30);
  Scheduler scheduler(limits);
  {
    absl::StatusOr<Scheduler::Lease> lease = scheduler.Acquire(Ticket("a"), Go);
    ASSERT_TRUE(lease.ok());
    absl::SleepFor(absl::Milliseconds(40));
  }
  absl::StatusOr<Scheduler::Lease> again = scheduler.Acquire(Ticket("a"), Go);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(again.status().message(), HasSubstr("--tenant_device_seconds_per_window=0.02"));
  EXPECT_THAT(again.status().message(), HasSubstr("retry in 3"));  // ~30 s from now
  EXPECT_TRUE(scheduler.Acquire(Ticket("b"), Go).ok());
}

TEST(SchedulerTest, UnpinnedWorkTakesWhicheverDeviceFreesFirst) {
  Scheduler scheduler;
  const std::vector<std::string> both = {"cuda:0", "cuda:1"};
  absl::StatusOr<Scheduler::Lease> zero = scheduler.Acquire(Ticket("a", 1, 0, {"cuda:0"}), Go);
  absl::StatusOr<Scheduler::Lease> one = scheduler.Acquire(Ticket("a", 1, 0, {"cuda:1"}), Go);
  ASSERT_TRUE(zero.ok() && one.ok());
  std::string got;
  std::thread waiter([&] {
    absl::StatusOr<Scheduler::Lease> lease = scheduler.Acquire(Ticket("b", 1, 0, both), Go);
    ASSERT_TRUE(lease.ok());
    got = lease->device();
  });
  WaitForDepth(scheduler, "cuda:0", 1);
  EXPECT_EQ(scheduler.QueueDepth("cuda:1"), 1);
  *one = Scheduler::Lease();
  waiter.join();
  EXPECT_EQ(got, "cuda:1");
  // A free device is granted at once, without waiting for the busy one.
  absl::StatusOr<Scheduler::Lease> now = scheduler.Acquire(Ticket("c", 1, 0, both), Go);
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(now->device(), "cuda:1");
}

TEST(SchedulerTest, MetricsFollowTheQueue) {
  auto metrics = std::make_shared<Metrics>(std::vector<std::string>{"alice"});
  Scheduler scheduler({}, metrics.get());
  absl::StatusOr<Scheduler::Lease> holder = scheduler.Acquire(Ticket("alice"), Go);
  ASSERT_TRUE(holder.ok());
  EXPECT_EQ(MetricValue(*metrics, "attnbench_in_flight", {{"device", "cpu:0"}}), 1);
  std::thread waiter([&] { EXPECT_TRUE(scheduler.Acquire(Ticket("mallory"), Go).ok()); });
  WaitForDepth(scheduler, "cpu:0", 1);
  EXPECT_EQ(MetricValue(*metrics, "attnbench_queue_depth", {{"device", "cpu:0"}}), 1);
  EXPECT_EQ(MetricValue(*metrics, "attnbench_tenant_queue_depth", {{"tenant", "alice"}}), 1);
  // An unconfigured tenant is counted under "other", never under its own name.
  EXPECT_EQ(MetricValue(*metrics, "attnbench_tenant_queue_depth", {{"tenant", "other"}}), 1);
  *holder = Scheduler::Lease();
  waiter.join();
  EXPECT_EQ(MetricValue(*metrics, "attnbench_queue_depth", {{"device", "cpu:0"}}), 0);
  EXPECT_EQ(MetricValue(*metrics, "attnbench_in_flight", {{"device", "cpu:0"}}), 0);
  EXPECT_EQ(MetricValue(*metrics, "attnbench_tenant_runs_total", {{"tenant", "alice"}}), 1);
  EXPECT_EQ(MetricValue(*metrics, "attnbench_tenant_runs_total", {{"tenant", "other"}}), 1);
  EXPECT_EQ(MetricValue(*metrics, "attnbench_run_duration_seconds", {{"device", "cpu:0"}}), 2);
  EXPECT_EQ(MetricValue(*metrics, "attnbench_tenant_queue_depth", {{"tenant", "other"}}), 0);
}

}  // namespace
}  // namespace attnbench::server
