// Everything about a RunRequest that can be judged before touching a device: the spec converted,
// normalized and validated, the backend name known, the device index plausible, measurement and
// check settings complete and within the server's limits. Run, StreamRun and every Sweep point
// go through here, so a sweep can refuse a bad grid before running any point.
#ifndef ATTNBENCH_SERVER_REQUEST_CHECK_H_
#define ATTNBENCH_SERVER_REQUEST_CHECK_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "attnbench/v1/attnbench.pb.h"
#include "kernels/spec/problem.h"
#include "server/backend_select.h"
#include "server/measurement.h"
#include "server/options.h"

namespace attnbench::server {

struct CheckedRequest {
  Problem problem;      // normalized and valid
  std::string backend;  // as asked: "auto", "" or a registered name
  std::optional<int> device_index;
  MeasurementPlan measurement;
  CheckPlan check;
  bool return_output = false;
  int priority = 0;  // among the tenant's own requests, higher first
};

inline constexpr int kMinPriority = 0;
inline constexpr int kMaxPriority = 9;

// INVALID_ARGUMENT naming the offending field by its path in RunRequest. Also the rules that tie
// the spec to the measurement settings: measurement.backward_timing and spec.inputs.grad_output
// only with PHASE_BACKWARD, where the timing (unset: BACKWARD_ONLY) becomes
// problem.training_step and measurement.backward_timing.
absl::StatusOr<CheckedRequest> CheckRunRequest(const ::attnbench::v1::RunRequest& request,
                                               const BackendList& backends,
                                               const ServerOptions& options);

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_REQUEST_CHECK_H_
