// attnbench.v1.AttnBench over gRPC's synchronous API: each RPC first authenticates its caller
// (server/auth.h), then checks its request, runs through RunExecutor, and maps absl::Status codes
// to gRPC ones one to one.
#ifndef ATTNBENCH_SERVER_SERVICE_H_
#define ATTNBENCH_SERVER_SERVICE_H_

#include <memory>

#include "attnbench/v1/attnbench.grpc.pb.h"
#include "server/auth.h"
#include "server/backend_select.h"
#include "server/metrics.h"
#include "server/options.h"
#include "server/run_executor.h"
#include "server/scheduler.h"

namespace attnbench::server {

class AttnBenchService final : public ::attnbench::v1::AttnBench::Service {
 public:
  // metrics may be null (no metrics recorded); authenticator may be null (no credentials
  // checked, tenants from x-attnbench-tenant).
  AttnBenchService(BackendList backends, ServerOptions options, std::shared_ptr<Metrics> metrics,
                   std::shared_ptr<const Authenticator> authenticator = nullptr);

  grpc::Status Run(grpc::ServerContext* context, const ::attnbench::v1::RunRequest* request,
                   ::attnbench::v1::RunResponse* response) override;
  grpc::Status StreamRun(grpc::ServerContext* context, const ::attnbench::v1::RunRequest* request,
                         grpc::ServerWriter<::attnbench::v1::StreamRunResponse>* writer) override;
  grpc::Status Sweep(grpc::ServerContext* context, const ::attnbench::v1::SweepRequest* request,
                     grpc::ServerWriter<::attnbench::v1::SweepResponse>* writer) override;
  grpc::Status GetCapabilities(grpc::ServerContext* context,
                               const ::attnbench::v1::GetCapabilitiesRequest* request,
                               ::attnbench::v1::GetCapabilitiesResponse* response) override;

  const BackendList& backends() const { return backends_; }
  const Scheduler& scheduler() const { return scheduler_; }

 private:
  // Each gets the authenticated caller (its tenant and weight, for per-tenant scheduling).
  grpc::Status DoRun(grpc::ServerContext* context, const Principal& principal,
                     const ::attnbench::v1::RunRequest& request,
                     ::attnbench::v1::RunResponse* response);
  grpc::Status DoStreamRun(grpc::ServerContext* context, const Principal& principal,
                           const ::attnbench::v1::RunRequest& request,
                           grpc::ServerWriter<::attnbench::v1::StreamRunResponse>* writer);
  grpc::Status DoSweep(grpc::ServerContext* context, const Principal& principal,
                       const ::attnbench::v1::SweepRequest& request,
                       grpc::ServerWriter<::attnbench::v1::SweepResponse>* writer);
  // Runs and streams the points of a checked sweep, up to `parallel` at once (more than one only
  // with SweepRequest.spread_devices), each point stopping the sweep on error unless
  // continue_on_error.
  grpc::Status RunSweepPoints(grpc::ServerContext* context, const Caller& caller,
                              const ::attnbench::v1::SweepRequest& request, int total, int parallel,
                              grpc::ServerWriter<::attnbench::v1::SweepResponse>* writer);

  const BackendList backends_;
  const ServerOptions options_;
  std::shared_ptr<Metrics> metrics_;
  std::shared_ptr<const Authenticator> authenticator_;
  Scheduler scheduler_;
  RunExecutor executor_;
};

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_SERVICE_H_
