// Until kernels/reference provides the float64 gradient check, the seam refuses. To wire it in,
// replace the two marked lines: BackwardCheckAvailable then returns OK and CheckBackwardRun the
// kernels' check, e.g. `return ::attnbench::CheckGradients(problem, inputs, gradients, options);`.
#include "server/gradient_check.h"

#include <cassert>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace attnbench::server {
namespace {

ABSL_CONST_INIT absl::Mutex override_mu(absl::kConstInit);
BackwardCheckFn* override_check ABSL_GUARDED_BY(override_mu) = nullptr;

absl::Status NotBuiltIn() {
  return absl::UnimplementedError(
      "check.mode: this server cannot yet compare dQ, dK and dV with the float64 reference; set "
      "check.mode = CHECK_MODE_OFF to measure a PHASE_BACKWARD run unchecked");
}

}  // namespace

absl::Status BackwardCheckAvailable() {
  {
    absl::MutexLock lock(&override_mu);
    if (override_check != nullptr) return absl::OkStatus();
  }
  return NotBuiltIn();  // wiring: return absl::OkStatus();
}

absl::StatusOr<CorrectnessReport> CheckBackwardRun(const Problem& problem,
                                                   const AttentionInputs& inputs,
                                                   const GradientTensors& gradients,
                                                   const CheckOptions& options) {
  BackwardCheckFn check;
  {
    absl::MutexLock lock(&override_mu);
    if (override_check != nullptr) check = *override_check;
  }
  if (check) return check(problem, inputs, gradients, options);
  return NotBuiltIn();  // wiring: return the kernels' float64 gradient check
}

ScopedBackwardCheckForTesting::ScopedBackwardCheckForTesting(BackwardCheckFn check) {
  absl::MutexLock lock(&override_mu);
  assert(override_check == nullptr && "one ScopedBackwardCheckForTesting at a time");
  override_check = new BackwardCheckFn(std::move(check));
}

ScopedBackwardCheckForTesting::~ScopedBackwardCheckForTesting() {
  absl::MutexLock lock(&override_mu);
  delete override_check;
  override_check = nullptr;
}

}  // namespace attnbench::server
