// `attnbench health`: grpc.health.v1 Check, for container health checks (the Dockerfile's
// HEALTHCHECK) and exec probes where native gRPC probes cannot be used (TLS). Prints the serving
// status and exits 0 only for SERVING; 1 for any other status or a failed call.
#include "absl/flags/flag.h"
#include "client/command_common.h"
#include "client/commands.h"

namespace attnbench::client {
namespace {

// A health check must not hang: without --deadline_seconds the call gets this long.
constexpr double kDefaultHealthDeadlineSeconds = 5;

}  // namespace

int HealthCommand(std::ostream& out, std::ostream& err) {
  if (!absl::GetFlag(FLAGS_deadline_seconds).has_value()) {
    absl::SetFlag(&FLAGS_deadline_seconds, kDefaultHealthDeadlineSeconds);
  }
  absl::StatusOr<std::unique_ptr<RpcClient>> client = ClientFromFlags();
  if (!client.ok()) return ReportUsageError(Subcommand::kHealth, client.status(), err);
  absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> status =
      (*client)->CheckHealth(absl::GetFlag(FLAGS_service));
  if (!status.ok()) return ReportFailure(status.status(), err);
  out << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(*status) << "\n";
  return *status == grpc::health::v1::HealthCheckResponse::SERVING ? kExitOk : kExitFailure;
}

}  // namespace attnbench::client
