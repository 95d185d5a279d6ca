#include "server/device_lock.h"

#include <algorithm>
#include <utility>

#include "absl/time/time.h"

namespace attnbench::server {
namespace {

// How often a waiter wakes to see whether its request was cancelled.
constexpr absl::Duration kInterruptPoll = absl::Milliseconds(20);

struct AtFront {
  const std::deque<uint64_t>* tickets;
  uint64_t ticket;
  bool Holds() const { return !tickets->empty() && tickets->front() == ticket; }
};

}  // namespace

DeviceScheduler::Lease::Lease(Lease&& other) noexcept
    : owner_(std::exchange(other.owner_, nullptr)),
      device_(std::move(other.device_)),
      ticket_(other.ticket_) {}

DeviceScheduler::Lease& DeviceScheduler::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Release();
    owner_ = std::exchange(other.owner_, nullptr);
    device_ = std::move(other.device_);
    ticket_ = other.ticket_;
  }
  return *this;
}

DeviceScheduler::Lease::~Lease() { Release(); }

void DeviceScheduler::Lease::Release() {
  if (owner_ != nullptr) std::exchange(owner_, nullptr)->Release(device_, ticket_);
}

absl::StatusOr<DeviceScheduler::Lease> DeviceScheduler::Acquire(const std::string& device,
                                                                const InterruptCheck& interrupted) {
  absl::MutexLock lock(&mu_);
  std::unique_ptr<Queue>& slot = queues_[device];
  if (slot == nullptr) slot = std::make_unique<Queue>();
  Queue* queue = slot.get();  // queues are never erased, so the pointer stays valid
  const uint64_t ticket = next_ticket_++;
  queue->tickets.push_back(ticket);
  const AtFront at_front{&queue->tickets, ticket};
  const absl::Condition holds(&at_front, &AtFront::Holds);
  while (!mu_.AwaitWithTimeout(holds, kInterruptPoll)) {
    mu_.Unlock();
    absl::Status status = interrupted();
    mu_.Lock();
    if (!status.ok() && !at_front.Holds()) {
      auto it = std::find(queue->tickets.begin(), queue->tickets.end(), ticket);
      if (it != queue->tickets.end()) queue->tickets.erase(it);
      return status;
    }
  }
  return Lease(this, device, ticket);
}

void DeviceScheduler::Release(const std::string& device, uint64_t ticket) {
  absl::MutexLock lock(&mu_);
  auto it = queues_.find(device);
  if (it == queues_.end()) return;
  std::deque<uint64_t>& tickets = it->second->tickets;
  auto pos = std::find(tickets.begin(), tickets.end(), ticket);
  if (pos != tickets.end()) tickets.erase(pos);
  // Unlocking re-evaluates every waiter's condition, so the next ticket wakes.
}

int DeviceScheduler::QueueLength(const std::string& device) const {
  absl::MutexLock lock(&mu_);
  auto it = queues_.find(device);
  return it == queues_.end() ? 0 : static_cast<int>(it->second->tickets.size());
}

}  // namespace attnbench::server
