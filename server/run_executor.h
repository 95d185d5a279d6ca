// Runs one checked request end to end: picks the backend and device, refuses what would not fit,
// waits its turn for the device, prepares, measures, checks and summarizes the output, and builds
// the RunResult. Shared by Run, StreamRun and every Sweep point.
#ifndef ATTNBENCH_SERVER_RUN_EXECUTOR_H_
#define ATTNBENCH_SERVER_RUN_EXECUTOR_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "attnbench/v1/attnbench.pb.h"
#include "kernels/spec/tensors.h"
#include "server/backend_select.h"
#include "server/harness.h"
#include "server/metrics.h"
#include "server/options.h"
#include "server/request_check.h"
#include "server/scheduler.h"

namespace attnbench::server {

// Where the output tensor (and for PHASE_BACKWARD its gradients: dQ, dK, dV, or at layer scope dX
// and the weight gradients) goes when the request asks for it.
enum class OutputDelivery {
  // In RunResult.output (and .dq, .dk, .dv or .dx, .dw_q, ...), refused over
  // max_inline_output_bytes counting all of
  // them together (Run, Sweep points).
  kInline,
  kStream,  // returned apart for the caller to send as chunks (StreamRun)
};

// Who a run is for and until when: the scheduler's tenant, weight and deadline.
struct Caller {
  std::string tenant = "default";
  double weight = 1;
  absl::Time deadline = absl::InfiniteFuture();
};

struct RunOutcome {
  ::attnbench::v1::RunResult result;
  // The output, for kStream delivery of a request with return_output.
  std::optional<FloatTensor> output;
  // The gradients (GradientSlotsOf), for kStream delivery of a PHASE_BACKWARD request with
  // return_output.
  std::optional<GradientTensors> gradients;
};

class RunExecutor {
 public:
  // Borrows everything; metrics may be null.
  RunExecutor(const BackendList* backends, Scheduler* scheduler, Metrics* metrics,
              const ServerOptions* options)
      : backends_(backends), scheduler_(scheduler), metrics_(metrics), options_(options) {}

  // `received` is when the request arrived, for RunResult.wall_ms.
  absl::StatusOr<RunOutcome> Execute(const CheckedRequest& request, const Caller& caller,
                                     OutputDelivery delivery, const InterruptCheck& interrupted,
                                     absl::Time received);

 private:
  absl::Status NoteDeviceHealth(absl::Status status, const std::string& device);

  const BackendList* backends_;
  Scheduler* scheduler_;
  Metrics* metrics_;
  const ServerOptions* options_;
};

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_RUN_EXECUTOR_H_
