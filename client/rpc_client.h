// The attnbench.v1 calls the CLI makes, over one channel (plaintext, TLS or mutual TLS, with an
// optional bearer token on every call), with gRPC statuses converted to absl::Status (same codes,
// same messages).
#ifndef ATTNBENCH_CLIENT_RPC_CLIENT_H_
#define ATTNBENCH_CLIENT_RPC_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "attnbench/v1/attnbench.grpc.pb.h"
#include "attnbench/v1/attnbench.pb.h"

namespace attnbench::client {

// What StreamRunToFile wrote.
struct WrittenTensor {
  v1::DType dtype = v1::DTYPE_UNSPECIFIED;
  std::vector<int64_t> shape;
  uint64_t bytes = 0;
};

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

class RpcClient {
 public:
  // `target` is any gRPC target ("localhost:50051", "dns:///host:port"). Connecting is lazy: an
  // unreachable server fails the first call with UNAVAILABLE.
  RpcClient(const std::string& target, ConnectionSettings settings);

  absl::StatusOr<v1::RunResponse> Run(const v1::RunRequest& request);

  // Calls StreamRun and writes the "output" tensor's chunks, in order, to `path`; returns the
  // result and describes what was written in `written`. Fails if the chunks do not tile the
  // tensor exactly or no output came.
  absl::StatusOr<v1::RunResult> StreamRunToFile(const v1::RunRequest& request,
                                                const std::string& path, WrittenTensor* written);

  // Calls Sweep and hands each response to `on_response` as it arrives.
  absl::Status Sweep(const v1::SweepRequest& request,
                     const std::function<void(const v1::SweepResponse&)>& on_response);

  absl::StatusOr<v1::GetCapabilitiesResponse> GetCapabilities();

 private:
  void PrepareContext(grpc::ClientContext* context) const;

  std::unique_ptr<v1::AttnBench::Stub> stub_;
  std::optional<double> deadline_seconds_;
  std::string authorization_;  // "Bearer <token>", or empty
  std::string tenant_;
};

}  // namespace attnbench::client

#endif  // ATTNBENCH_CLIENT_RPC_CLIENT_H_
