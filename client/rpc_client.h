// The attnbench.v1 calls the CLI makes, and grpc.health.v1 Check, over one channel (plaintext,
// TLS or mutual TLS, with an optional bearer token on every call), with gRPC statuses converted to
// absl::Status (same codes, same messages). The channel balances calls with round_robin, so a
// target that resolves to several servers (dns:/// of a headless Service, ipv4:a:p,b:p) spreads
// concurrent calls over all of them.
#ifndef ATTNBENCH_CLIENT_RPC_CLIENT_H_
#define ATTNBENCH_CLIENT_RPC_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "attnbench/v1/attnbench.grpc.pb.h"
#include "attnbench/v1/attnbench.pb.h"
#include "client/tensor_files.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace attnbench::client {

// How to reach the server. The PEM texts are contents, not paths.
struct ConnectionSettings {
  std::optional<double> deadline_seconds;  // of every call, when set
  bool tls = false;
  std::string tls_root_certs;  // CAs to verify the server with; empty: the system's roots
  std::string tls_cert_chain;  // client certificate for mutual TLS (with tls_private_key)
  std::string tls_private_key;
  std::string token;   // sent as `authorization: Bearer <token>` when not empty
  std::string tenant;  // sent as `x-attnbench-tenant` when not empty
};

// The service config of every channel: round_robin over every address the target resolves to
// (gRPC's default, pick_first, would send every call to the first one).
inline constexpr char kRoundRobinServiceConfig[] =
    R"({"loadBalancingConfig":[{"round_robin":{}}]})";

// Cancels the calls registered with it, from any thread: those in flight at Cancel() and any
// started after it. Lets one failed part of a fanned-out sweep stop the others.
class CallCanceller {
 public:
  void Cancel();
  bool cancelled() const;

 private:
  friend class RpcClient;
  // False (and nothing registered) when already cancelled.
  bool Register(grpc::ClientContext* context);
  void Unregister(grpc::ClientContext* context);

  mutable std::mutex mu_;
  bool cancelled_ = false;
  std::set<grpc::ClientContext*> live_;
};

class RpcClient {
 public:
  // `target` is any gRPC target: "host:port", "dns:///host:port", "ipv4:10.0.0.1:50051,
  // 10.0.0.2:50051", "unix:/path". Connecting is lazy: an unreachable server fails the first
  // call with UNAVAILABLE.
  RpcClient(const std::string& target, ConnectionSettings settings);

  absl::StatusOr<v1::RunResponse> Run(const v1::RunRequest& request);

  // Calls StreamRun and writes each tensor of `files` ("output", "dq", ...) to its file, chunk by
  // chunk in order (tensors not listed are skipped); returns the result and describes what was
  // written in `written`, in the order of `files`. Fails (DATA_LOSS) if a listed tensor's chunks
  // do not tile it exactly, a listed tensor never came, or chunks follow the result.
  absl::StatusOr<v1::RunResult> StreamRunToFiles(const v1::RunRequest& request,
                                                 std::vector<TensorFile> files,
                                                 std::vector<WrittenTensor>* written);

  // Calls Sweep and hands each response to `on_response` as it arrives. With a `canceller`,
  // CANCELLED once it is cancelled. Safe to call from several threads at once.
  absl::Status Sweep(const v1::SweepRequest& request,
                     const std::function<void(const v1::SweepResponse&)>& on_response,
                     CallCanceller* canceller = nullptr);

  absl::StatusOr<v1::GetCapabilitiesResponse> GetCapabilities();

  // Connects now and waits until the first server is reachable, then `settle_seconds` more so
  // that the other addresses of the target, which connect in parallel, are reachable too:
  // round_robin picks only among connected servers, so calls started at once would otherwise all
  // go to whichever connected first. False if none connected within `timeout_seconds`.
  bool WaitForServers(double timeout_seconds, double settle_seconds);

  // grpc.health.v1 Check of `service` ("" for the server as a whole).
  absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> CheckHealth(
      const std::string& service);

 private:
  void PrepareContext(grpc::ClientContext* context) const;

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::AttnBench::Stub> stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_stub_;
  std::optional<double> deadline_seconds_;
  std::string authorization_;  // "Bearer <token>", or empty
  std::string tenant_;
};

}  // namespace attnbench::client

#endif  // ATTNBENCH_CLIENT_RPC_CLIENT_H_
