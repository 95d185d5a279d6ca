// attnbench.v1.AttnBench over gRPC's synchronous API: each RPC first authenticates its caller
// (server/auth.h), then parses its request bytes (server/raw_methods.h: INVALID_ARGUMENT, not
// gRPC's INTERNAL, for bytes that do not parse), checks the request, runs it through RunExecutor,
// and maps absl::Status codes to gRPC ones one to one.
#ifndef ATTNBENCH_SERVER_SERVICE_H_
#define ATTNBENCH_SERVER_SERVICE_H_

#include <deque>
#include <memory>
#include <string>

#include "attnbench/v1/attnbench.grpc.pb.h"
#include "kernels/spec/tensors.h"
#include "server/auth.h"
#include "server/backend_select.h"
#include "server/metrics.h"
#include "server/options.h"
#include "server/run_executor.h"
#include "server/scheduler.h"

namespace attnbench::server {

// Registers every method of attnbench.v1.AttnBench (the generated AttnBench::Service is not a base:
// its handlers parse requests before any code of ours runs).
class AttnBenchService final : public grpc::Service {
 public:
  // metrics may be null (no metrics recorded); authenticator may be null (no credentials
  // checked, tenants from x-attnbench-tenant).
  AttnBenchService(BackendList backends, ServerOptions options, std::shared_ptr<Metrics> metrics,
                   std::shared_ptr<const Authenticator> authenticator = nullptr);

  const BackendList& backends() const { return backends_; }
  const Scheduler& scheduler() const { return scheduler_; }

 private:
  // The RPCs, as gRPC calls them: each authenticates, parses `bytes` and hands the request on.
  grpc::Status Run(grpc::ServerContext* context, const grpc::ByteBuffer* bytes,
                   ::attnbench::v1::RunResponse* response);
  grpc::Status StreamRun(grpc::ServerContext* context, const grpc::ByteBuffer* bytes,
                         grpc::ServerWriter<::attnbench::v1::StreamRunResponse>* writer);
  grpc::Status Sweep(grpc::ServerContext* context, const grpc::ByteBuffer* bytes,
                     grpc::ServerWriter<::attnbench::v1::SweepResponse>* writer);
  grpc::Status GetCapabilities(grpc::ServerContext* context, const grpc::ByteBuffer* bytes,
                               ::attnbench::v1::GetCapabilitiesResponse* response);
  // "/attnbench.v1.AttnBench/<method>", kept for as long as gRPC holds the method.
  const char* MethodPath(const std::string& method);

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
  // Sends `tensor` as TensorChunks named `name` of at most --stream_chunk_bytes each, in order;
  // false once the client stops reading.
  bool WriteTensorChunks(const std::string& name, const FloatTensor& tensor,
                         grpc::ServerWriter<::attnbench::v1::StreamRunResponse>* writer);
  // Runs and streams the points of a checked sweep, up to `parallel` at once (more than one only
  // with SweepRequest.spread_devices), each point stopping the sweep on error unless
  // continue_on_error.
  grpc::Status RunSweepPoints(grpc::ServerContext* context, const Caller& caller,
                              const ::attnbench::v1::SweepRequest& request, int total, int parallel,
                              grpc::ServerWriter<::attnbench::v1::SweepResponse>* writer);

  std::deque<std::string> method_paths_;  // a deque never moves what it holds
  const BackendList backends_;
  const ServerOptions options_;
  std::shared_ptr<Metrics> metrics_;
  std::shared_ptr<const Authenticator> authenticator_;
  Scheduler scheduler_;
  RunExecutor executor_;
};

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_SERVICE_H_
