#include "server/request_check.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "server/convert.h"

namespace attnbench::server {

absl::StatusOr<CheckedRequest> CheckRunRequest(const ::attnbench::v1::RunRequest& request,
                                               const BackendList& backends,
                                               const ServerOptions& options) {
  CheckedRequest out;
  absl::StatusOr<Problem> problem = ProblemFromProto(request.spec());
  if (!problem.ok()) return problem.status();
  out.problem = NormalizeProblem(*problem);
  if (absl::Status s = ValidateProblem(out.problem); !s.ok()) return s;

  if (absl::Status s = CheckBackendName(backends, request.backend()); !s.ok()) return s;
  out.backend = request.backend();

  if (request.has_device_index()) {
    const int index = request.device_index();
    // The exact range depends on the backend chosen (SelectBackend checks it); this catches
    // indexes no backend could have.
    size_t most = 0;
    for (const auto& b : backends) {
      if (IsAutoBackend(out.backend) || b->Name() == out.backend) {
        most = std::max(most, b->Devices().size());
      }
    }
    if (index < 0 || static_cast<size_t>(index) >= most) {
      return absl::InvalidArgumentError(
          absl::StrCat("device_index = ", index, ": out of range [0, ", most, ") for backend ",
                       IsAutoBackend(out.backend) ? "auto" : out.backend));
    }
    out.device_index = index;
  }

  absl::StatusOr<MeasurementPlan> measurement = ResolveMeasurement(request.measurement(), options);
  if (!measurement.ok()) return measurement.status();
  out.measurement = *measurement;
  // backward_timing belongs to PHASE_BACKWARD: refused on any other phase rather than ignored, and
  // unset there meaning the backward alone. The kernels read it as Problem.training_step.
  if (out.problem.phase == Phase::kBackward) {
    if (out.measurement.backward_timing == BackwardTiming::kUnspecified) {
      out.measurement.backward_timing = BackwardTiming::kBackwardOnly;
    }
    out.problem.training_step = out.measurement.backward_timing == BackwardTiming::kTrainingStep;
  } else if (out.measurement.backward_timing != BackwardTiming::kUnspecified) {
    return absl::InvalidArgumentError(
        absl::StrCat("measurement.backward_timing = ",
                     pb::BackwardTiming_Name(request.measurement().backward_timing()),
                     ": only valid with spec.phase = PHASE_BACKWARD (spec.phase is ",
                     pb::Phase_Name(PhaseToProto(out.problem.phase)), ")"));
  }
  // A support check's business (Problem.deterministic): a backend that does not run the phase so
  // refuses, and `auto` passes it over.
  out.problem.deterministic = out.measurement.deterministic;
  absl::StatusOr<CheckPlan> check = ResolveCheck(request.check());
  if (!check.ok()) return check.status();
  out.check = *check;
  out.return_output = request.return_output();
  if (request.priority() < kMinPriority || request.priority() > kMaxPriority) {
    return absl::InvalidArgumentError(absl::StrCat("priority = ", request.priority(),
                                                   ": must be in [", kMinPriority, ", ",
                                                   kMaxPriority, "]"));
  }
  out.priority = request.priority();
  return out;
}

}  // namespace attnbench::server
