// Lets a caller abandon a long computation from outside (a cancelled request, a passed deadline):
// the CPU backend polls ShouldStop() between small pieces of one iteration (a key block, a slab of
// a matmul) from any of its threads and returns early once it says true. The caller's predicate
// may be slow or take locks, so it runs at most once per interval, from one thread at a time, and
// once it said true the answer sticks.
#ifndef ATTNBENCH_KERNELS_STOP_CHECK_H_
#define ATTNBENCH_KERNELS_STOP_CHECK_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <utility>

namespace attnbench {

class StopCheck {
 public:
  explicit StopCheck(std::function<bool()> should_stop,
                     std::chrono::nanoseconds interval = std::chrono::milliseconds(10))
      : should_stop_(std::move(should_stop)), interval_ns_(interval.count()) {}
  StopCheck(const StopCheck&) = delete;
  StopCheck& operator=(const StopCheck&) = delete;

  // Thread-safe; between predicate calls, an atomic load and a clock read.
  bool ShouldStop() const {
    if (stopped()) return true;
    const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::steady_clock::now().time_since_epoch())
                            .count();
    int64_t due = next_poll_ns_.load(std::memory_order_relaxed);
    if (now < due) return false;
    // The thread that moves the due time asks; the others carry on until the next interval.
    if (!next_poll_ns_.compare_exchange_strong(due, now + interval_ns_,
                                               std::memory_order_relaxed)) {
      return stopped();
    }
    if (!should_stop_()) return false;
    stopped_.store(true, std::memory_order_relaxed);
    return true;
  }
  // Whether ShouldStop has said true.
  bool stopped() const { return stopped_.load(std::memory_order_relaxed); }

 private:
  const std::function<bool()> should_stop_;
  const int64_t interval_ns_;
  mutable std::atomic<int64_t> next_poll_ns_{0};
  mutable std::atomic<bool> stopped_{false};
};

// For code that may have no check to poll.
inline bool ShouldStop(const StopCheck* stop) { return stop != nullptr && stop->ShouldStop(); }

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_STOP_CHECK_H_
