// A backend that "runs" PHASE_BACKWARD (and prefill) without computing attention, so the service's
// handling of gradients (delivery inline and in chunks, the byte limits, the echoes, the
// measurement settings reaching the kernels) is testable before any real backend has a backward
// pass. Its tensors are fixed patterns (FakeTensor) in the problem's dtype with the shapes the API
// promises: O [B, S_q, H_out, D_v] from Output, and dQ, dK, dV with the shapes of Q, K, V from
// Gradients. Prepare records every problem it is given.
#ifndef ATTNBENCH_TESTS_SERVER_FAKE_BACKWARD_BACKEND_H_
#define ATTNBENCH_TESTS_SERVER_FAKE_BACKWARD_BACKEND_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "kernels/backend.h"
#include "kernels/spec/shapes.h"
#include "kernels/spec/tensors.h"

namespace attnbench::server::testing {

inline constexpr char kFakeBackwardName[] = "fake_backward";

// Which pattern FakeTensor draws: one per tensor, so a swapped tensor shows.
enum class FakeTensorKind { kOutput, kDq, kDk, kDv };

// A deterministic pattern of multiples of 1/8 in [-0.625, 0.625], exact in every dtype.
FloatTensor FakeTensor(FakeTensorKind kind, const Shape& shape, DType dtype);

struct FakeBackwardOptions {
  int devices = 1;
  // Gradients returns dK one key row short (a backend breaking the API's promise).
  bool short_dk = false;
  // When not OK, what Gradients returns instead of the tensors.
  absl::Status gradients_status;
};

// What the fake saw: every problem Prepare was given, and how many iterations ran.
struct FakeBackwardLog {
  absl::Mutex mu;
  std::vector<Problem> prepared ABSL_GUARDED_BY(mu);
  int iterations ABSL_GUARDED_BY(mu) = 0;

  std::vector<Problem> Prepared() {
    absl::MutexLock lock(&mu);
    return prepared;
  }
  int Iterations() {
    absl::MutexLock lock(&mu);
    return iterations;
  }
};

// Devices "cpu" 0..devices-1 (so the work limit counts it as a CPU backend); float32, float16 and
// bfloat16, prefill and backward, core scope, every layout, masks none and causal.
class FakeBackwardBackend : public Backend {
 public:
  // `log` may be null; it must outlive the backend.
  explicit FakeBackwardBackend(FakeBackwardLog* log, FakeBackwardOptions options = {})
      : log_(log), options_(std::move(options)) {}

  std::string Name() const override { return kFakeBackwardName; }
  std::string Description() const override { return "fake backward for the server tests"; }
  std::vector<DeviceDescription> Devices() const override;
  BackendSupport Support() const override;
  absl::Status CheckSupported(const Problem& problem) const override;
  uint64_t EstimateBytes(const Problem& problem) const override;
  absl::StatusOr<std::unique_ptr<Workload>> Prepare(const Problem& problem,
                                                    int device_index) override;

 private:
  FakeBackwardLog* log_;
  FakeBackwardOptions options_;
};

}  // namespace attnbench::server::testing

#endif  // ATTNBENCH_TESTS_SERVER_FAKE_BACKWARD_BACKEND_H_
