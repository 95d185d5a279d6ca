// The seam wired to the kernels' float64 gradient check (kernels/reference/gradient_check.h);
// tests may swap in another check for the lifetime of a ScopedBackwardCheckForTesting.
#include "server/gradient_check.h"

#include <cassert>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "kernels/reference/gradient_check.h"

namespace attnbench::server {
namespace {

ABSL_CONST_INIT absl::Mutex override_mu(absl::kConstInit);
BackwardCheckFn* override_check ABSL_GUARDED_BY(override_mu) = nullptr;

}  // namespace

absl::Status BackwardCheckAvailable() { return absl::OkStatus(); }

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
  return ::attnbench::CheckGradients(problem, inputs, gradients, options);
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
