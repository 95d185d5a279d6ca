// Serializes work on each device: requests for one device never overlap in time, so one request's
// kernels never share the device with another's and timings stay clean. Waiters are served in
// arrival order (a FIFO queue), and a waiter whose request is cancelled leaves the queue.
#ifndef ATTNBENCH_SERVER_DEVICE_LOCK_H_
#define ATTNBENCH_SERVER_DEVICE_LOCK_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/harness.h"

namespace attnbench::server {

class DeviceScheduler {
 public:
  // Holds one device until destroyed (or moved from).
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&& other) noexcept;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease();

   private:
    friend class DeviceScheduler;
    Lease(DeviceScheduler* owner, std::string device, uint64_t ticket)
        : owner_(owner), device_(std::move(device)), ticket_(ticket) {}
    void Release();
    DeviceScheduler* owner_ = nullptr;
    std::string device_;
    uint64_t ticket_ = 0;
  };

  DeviceScheduler() = default;
  DeviceScheduler(const DeviceScheduler&) = delete;
  DeviceScheduler& operator=(const DeviceScheduler&) = delete;

  // Waits for `device` ("cpu:0", "cuda:1") behind every earlier caller for the same device,
  // checking `interrupted` while waiting; returns its status if it stops being OK.
  absl::StatusOr<Lease> Acquire(const std::string& device, const InterruptCheck& interrupted);

  // Requests holding or waiting for the device.
  int QueueLength(const std::string& device) const;

 private:
  struct Queue {
    std::deque<uint64_t> tickets;  // front() holds the device
  };
  void Release(const std::string& device, uint64_t ticket);

  mutable absl::Mutex mu_;
  uint64_t next_ticket_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<std::string, std::unique_ptr<Queue>> queues_ ABSL_GUARDED_BY(mu_);
};

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_DEVICE_LOCK_H_
