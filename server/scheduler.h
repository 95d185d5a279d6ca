// Decides which request runs next on which device, fairly between tenants.
//
// Each device ("cpu:0", "cuda:1") is one worker slot: at most one request holds it at a time, so
// one request's kernels never share the device with another's and timings stay clean. A request
// names the devices it may run on (one when pinned, every device of its backend otherwise) and
// gets whichever of them frees first.
//
// Between tenants the scheduler is weighted fair queueing on device time (start-time fair
// queueing, the continuous form of weighted deficit round robin): each tenant has a virtual time,
// advanced by the device-seconds it used divided by its weight, and a free device goes to the
// waiting tenant with the smallest virtual time. A tenant that was idle re-enters at the smallest
// virtual time among active tenants, so idling never banks credit. Within a tenant, higher
// RunRequest.priority first, then arrival order.
//
// Admission limits (per tenant: requests queued or running, device-seconds per sliding window;
// server-wide: requests queued or running) answer RESOURCE_EXHAUSTED naming the limit and when to
// retry. A waiter whose deadline passes, or whose client cancels, leaves the queue and never
// starts.
#ifndef ATTNBENCH_SERVER_SCHEDULER_H_
#define ATTNBENCH_SERVER_SCHEDULER_H_

#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/harness.h"
#include "server/metrics.h"
#include "server/options.h"

namespace attnbench::server {

// What one request asks of the scheduler.
struct WorkTicket {
  std::vector<std::string> devices;  // any one of these, in order of preference; not empty
  std::string tenant = "default";
  double weight = 1;  // > 0
  int priority = 0;   // higher first, within the tenant
  absl::Time deadline = absl::InfiniteFuture();
};

class Scheduler {
 public:
  // Holds one device until destroyed (or moved from); then charges the tenant for the time held.
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&& other) noexcept;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease();

    const std::string& device() const { return device_; }
    absl::Duration queue_wait() const { return queue_wait_; }

   private:
    friend class Scheduler;
    Scheduler* owner_ = nullptr;
    uint64_t id_ = 0;
    std::string device_;
    absl::Duration queue_wait_;
    void Release();
  };

  // metrics may be null.
  explicit Scheduler(SchedulerLimits limits = {}, Metrics* metrics = nullptr);
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Waits for a device of ticket.devices, checking `interrupted` while waiting and returning its
  // status if it stops being OK; DEADLINE_EXCEEDED once ticket.deadline passes in the queue;
  // RESOURCE_EXHAUSTED at once when a limit is reached.
  absl::StatusOr<Lease> Acquire(const WorkTicket& ticket, const InterruptCheck& interrupted);

  // Requests waiting that `device` could take.
  int QueueDepth(const std::string& device) const;
  // Requests queued or running for `tenant`.
  int TenantLoad(const std::string& tenant) const;
  const SchedulerLimits& limits() const { return limits_; }

 private:
  struct Waiter {
    uint64_t id;
    WorkTicket ticket;
    absl::Time arrived;
    std::string granted;  // the device, once granted
  };
  struct Tenant {
    double weight = 1;
    double virtual_time = 0;
    int queued = 0;
    int running = 0;
    double average_hold_seconds = 0;                  // smoothed; what a grant charges up front
    std::deque<std::pair<absl::Time, double>> usage;  // (end, device-seconds), in the window
    double usage_sum = 0;
  };
  struct Holder {
    std::string tenant;
    std::string device;
    absl::Time granted;
    double charged_seconds;  // charged to the tenant's virtual time at grant
  };

  absl::Status Admit(const WorkTicket& ticket, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Dispatch(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Grant(std::list<Waiter>::iterator waiter, const std::string& device, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Withdraw(std::list<Waiter>::iterator waiter, const char* reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Release(uint64_t id);
  Tenant& Activate(const WorkTicket& ticket) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ForgetIfIdle(const std::string& tenant, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int DepthLocked(const std::string& device) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void PublishDepths() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const SchedulerLimits limits_;
  Metrics* const metrics_;
  mutable absl::Mutex mu_;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::list<Waiter> waiters_ ABSL_GUARDED_BY(mu_);  // arrival order
  absl::flat_hash_map<std::string, Tenant> tenants_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Holder> holders_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, bool> busy_ ABSL_GUARDED_BY(mu_);  // every device seen
  int total_load_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_SCHEDULER_H_
