#include "server/scheduler.h"

#include <algorithm>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace attnbench::server {
namespace {

// How often a waiter wakes to see whether its request was cancelled.
constexpr absl::Duration kInterruptPoll = absl::Milliseconds(20);
// Weight of the newest hold in a tenant's smoothed hold time.
constexpr double kHoldSmoothing = 0.25;

struct Granted {
  const std::string* device;
  bool operator()() const { return !device->empty(); }
};

std::string Seconds(absl::Duration d) {
  return absl::StrFormat("%.1f s", absl::ToDoubleSeconds(std::max(d, absl::ZeroDuration())));
}

}  // namespace

Scheduler::Lease::Lease(Lease&& other) noexcept
    : owner_(std::exchange(other.owner_, nullptr)),
      id_(other.id_),
      device_(std::move(other.device_)),
      queue_wait_(other.queue_wait_) {}

Scheduler::Lease& Scheduler::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Release();
    owner_ = std::exchange(other.owner_, nullptr);
    id_ = other.id_;
    device_ = std::move(other.device_);
    queue_wait_ = other.queue_wait_;
  }
  return *this;
}

Scheduler::Lease::~Lease() { Release(); }

void Scheduler::Lease::Release() {
  if (owner_ != nullptr) std::exchange(owner_, nullptr)->Release(id_);
}

Scheduler::Scheduler(SchedulerLimits limits, Metrics* metrics)
    : limits_(limits), metrics_(metrics) {}

absl::Status Scheduler::Admit(const WorkTicket& ticket, absl::Time now) {
  if (ticket.devices.empty()) return absl::InternalError("scheduler: a ticket names no device");
  if (!(ticket.weight > 0)) {
    return absl::PermissionDeniedError(absl::StrCat("tenant '", ticket.tenant, "' has weight 0"));
  }
  if (limits_.max_queued_total > 0 && total_load_ >= limits_.max_queued_total) {
    if (metrics_ != nullptr) metrics_->RecordRejection("queue_full");
    return absl::ResourceExhaustedError(absl::StrCat(
        "the server has ", total_load_,
        " requests queued or running, the limit --max_queued_total=", limits_.max_queued_total,
        "; retry after some finish"));
  }
  auto it = tenants_.find(ticket.tenant);
  if (it == tenants_.end()) return absl::OkStatus();
  Tenant& tenant = it->second;
  const int load = tenant.queued + tenant.running;
  if (limits_.max_queued_per_tenant > 0 && load >= limits_.max_queued_per_tenant) {
    if (metrics_ != nullptr) metrics_->RecordRejection("tenant_queue_limit");
    const double wait = tenant.average_hold_seconds * std::max(1, tenant.running);
    return absl::ResourceExhaustedError(
        absl::StrCat("tenant '", ticket.tenant, "' has ", load,
                     " requests queued or running, the limit --max_queued_per_tenant=",
                     limits_.max_queued_per_tenant, "; retry after one finishes (about ",
                     Seconds(absl::Seconds(wait)), ")"));
  }
  const double quota = limits_.tenant_device_seconds_per_window;
  if (quota > 0) {
    while (!tenant.usage.empty() && tenant.usage.front().first <= now - limits_.tenant_window) {
      tenant.usage_sum -= tenant.usage.front().second;
      tenant.usage.pop_front();
    }
    if (tenant.usage_sum >= quota) {
      // Retry when enough of the oldest usage has left the window to go below the quota.
      double sum = tenant.usage_sum;
      absl::Time retry = now;
      for (const auto& [end, seconds] : tenant.usage) {
        sum -= seconds;
        retry = end + limits_.tenant_window;
        if (sum < quota) break;
      }
      if (metrics_ != nullptr) metrics_->RecordRejection("tenant_device_seconds");
      return absl::ResourceExhaustedError(
          absl::StrFormat("tenant '%s' used %.2f device-seconds in the last %s, the limit "
                          "--tenant_device_seconds_per_window=%g; retry in %s",
                          ticket.tenant, tenant.usage_sum, Seconds(limits_.tenant_window), quota,
                          Seconds(retry - now)));
    }
  }
  return absl::OkStatus();
}

Scheduler::Tenant& Scheduler::Activate(const WorkTicket& ticket) {
  Tenant& tenant = tenants_[ticket.tenant];
  tenant.weight = ticket.weight;
  if (tenant.queued + tenant.running == 0) {
    // Re-entering at the front of the active tenants: idle time earns no credit.
    double floor = std::numeric_limits<double>::infinity();
    for (const auto& [name, other] : tenants_) {
      if (other.queued + other.running > 0) floor = std::min(floor, other.virtual_time);
    }
    if (floor != std::numeric_limits<double>::infinity()) {
      tenant.virtual_time = std::max(tenant.virtual_time, floor);
    }
  }
  return tenant;
}

void Scheduler::ForgetIfIdle(const std::string& name, absl::Time now) {
  auto it = tenants_.find(name);
  if (it == tenants_.end()) return;
  Tenant& tenant = it->second;
  while (!tenant.usage.empty() && tenant.usage.front().first <= now - limits_.tenant_window) {
    tenant.usage_sum -= tenant.usage.front().second;
    tenant.usage.pop_front();
  }
  // Bounded memory whatever tenant names clients send: an idle tenant with no usage to remember
  // is dropped; it would re-enter at the active floor anyway.
  if (tenant.queued + tenant.running == 0 && tenant.usage.empty()) tenants_.erase(it);
}

absl::StatusOr<Scheduler::Lease> Scheduler::Acquire(const WorkTicket& ticket,
                                                    const InterruptCheck& interrupted) {
  absl::MutexLock lock(&mu_);
  const absl::Time arrived = absl::Now();
  if (absl::Status s = Admit(ticket, arrived); !s.ok()) return s;
  Tenant& tenant = Activate(ticket);
  ++tenant.queued;
  ++total_load_;
  if (metrics_ != nullptr) metrics_->AddTenantLoad(ticket.tenant, 1);
  for (const std::string& device : ticket.devices) busy_.try_emplace(device, false);
  const uint64_t id = next_id_++;
  waiters_.push_back(Waiter{id, ticket, arrived, ""});
  auto self = std::prev(waiters_.end());
  Dispatch(arrived);
  PublishDepths();

  const Granted granted{&self->granted};
  while (!granted()) {
    const absl::Time now = absl::Now();
    if (now >= ticket.deadline) {
      Withdraw(self, "deadline_in_queue");
      return absl::DeadlineExceededError(absl::StrCat("deadline passed after ",
                                                      Seconds(now - arrived),
                                                      " in the queue; the request never started"));
    }
    if (mu_.AwaitWithTimeout(absl::Condition(&granted),
                             std::min(kInterruptPoll, ticket.deadline - now))) {
      break;
    }
    mu_.Unlock();
    const absl::Status status = interrupted();
    mu_.Lock();
    if (!status.ok() && !granted()) {
      Withdraw(self, status.code() == absl::StatusCode::kDeadlineExceeded ? "deadline_in_queue"
                                                                          : "cancelled_in_queue");
      return status;
    }
  }
  Lease lease;
  lease.owner_ = this;
  lease.id_ = id;
  lease.device_ = self->granted;
  lease.queue_wait_ = absl::Now() - arrived;
  if (metrics_ != nullptr) {
    metrics_->ObserveQueueWait(lease.device_, absl::ToDoubleSeconds(lease.queue_wait_));
  }
  waiters_.erase(self);
  return lease;
}

void Scheduler::Withdraw(std::list<Waiter>::iterator waiter, const char* reason) {
  const std::string name = waiter->ticket.tenant;
  Tenant& tenant = tenants_[name];
  --tenant.queued;
  --total_load_;
  if (metrics_ != nullptr) {
    metrics_->AddTenantLoad(name, -1);
    metrics_->RecordRejection(reason);
  }
  waiters_.erase(waiter);
  ForgetIfIdle(name, absl::Now());
  PublishDepths();
}

void Scheduler::Dispatch(absl::Time now) {
  for (auto& [device, busy] : busy_) {
    if (busy) continue;
    // The waiting tenant with the smallest virtual time, and its best waiter for this device.
    auto best = waiters_.end();
    double best_time = 0;
    for (auto it = waiters_.begin(); it != waiters_.end(); ++it) {
      if (!it->granted.empty() || it->ticket.deadline <= now) continue;  // expired never start
      const auto& devices = it->ticket.devices;
      if (std::find(devices.begin(), devices.end(), device) == devices.end()) continue;
      const double time = tenants_[it->ticket.tenant].virtual_time;
      if (best == waiters_.end() || time < best_time ||
          (time == best_time && it->ticket.tenant == best->ticket.tenant &&
           it->ticket.priority > best->ticket.priority)) {
        best = it;
        best_time = time;
      }
    }
    if (best != waiters_.end()) Grant(best, device, now);
  }
}

void Scheduler::Grant(std::list<Waiter>::iterator waiter, const std::string& device,
                      absl::Time now) {
  Tenant& tenant = tenants_[waiter->ticket.tenant];
  --tenant.queued;
  ++tenant.running;
  // Charge the expected hold now, so a tenant cannot take every free device before its first
  // run ends; Release corrects it to the time actually held.
  const double charge = tenant.average_hold_seconds;
  tenant.virtual_time += charge / tenant.weight;
  holders_[waiter->id] = Holder{waiter->ticket.tenant, device, now, charge};
  busy_[device] = true;
  waiter->granted = device;
  if (metrics_ != nullptr) metrics_->SetInFlight(device, 1);
}

void Scheduler::Release(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = holders_.find(id);
  if (it == holders_.end()) return;
  const Holder holder = it->second;
  holders_.erase(it);
  const absl::Time now = absl::Now();
  const double held = absl::ToDoubleSeconds(now - holder.granted);
  Tenant& tenant = tenants_[holder.tenant];
  --tenant.running;
  --total_load_;
  tenant.virtual_time += (held - holder.charged_seconds) / tenant.weight;
  tenant.average_hold_seconds =
      tenant.average_hold_seconds == 0
          ? held
          : (1 - kHoldSmoothing) * tenant.average_hold_seconds + kHoldSmoothing * held;
  tenant.usage.emplace_back(now, held);
  tenant.usage_sum += held;
  busy_[holder.device] = false;
  if (metrics_ != nullptr) {
    metrics_->SetInFlight(holder.device, 0);
    metrics_->ObserveHold(holder.device, held);
    metrics_->RecordTenantUsage(holder.tenant, held);
    metrics_->AddTenantLoad(holder.tenant, -1);
  }
  ForgetIfIdle(holder.tenant, now);
  Dispatch(now);
  PublishDepths();
}

int Scheduler::DepthLocked(const std::string& device) const {
  int depth = 0;
  for (const Waiter& w : waiters_) {
    const auto& devices = w.ticket.devices;
    if (w.granted.empty() && std::find(devices.begin(), devices.end(), device) != devices.end()) {
      ++depth;
    }
  }
  return depth;
}

void Scheduler::PublishDepths() {
  if (metrics_ == nullptr) return;
  for (const auto& [device, busy] : busy_) metrics_->SetQueueDepth(device, DepthLocked(device));
}

int Scheduler::QueueDepth(const std::string& device) const {
  absl::MutexLock lock(&mu_);
  return DepthLocked(device);
}

int Scheduler::TenantLoad(const std::string& tenant) const {
  absl::MutexLock lock(&mu_);
  auto it = tenants_.find(tenant);
  return it == tenants_.end() ? 0 : it->second.queued + it->second.running;
}

}  // namespace attnbench::server
