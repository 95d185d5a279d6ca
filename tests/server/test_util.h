// Shared by the server tests: small specs that run in milliseconds on cpu_reference, fast
// measurement settings, and an in-process server with a stub to call it.
#ifndef ATTNBENCH_TESTS_SERVER_TEST_UTIL_H_
#define ATTNBENCH_TESTS_SERVER_TEST_UTIL_H_

#include <memory>

#include "attnbench/v1/attnbench.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/auth.h"
#include "server/backend_select.h"
#include "server/metrics.h"
#include "server/options.h"
#include "server/service.h"

namespace attnbench::server::testing {

namespace pb = ::attnbench::v1;

// B=1, S_q=S_kv=seq, MHA with `heads` heads of dim `dim`, float32.
pb::AttentionSpec SmallSpec(int64_t seq = 32, int heads = 2, int dim = 16);
// One warm-up and exactly `iterations` warm-cache timed iterations: fast and deterministic.
pb::MeasurementSettings FastMeasurement(int iterations = 3);
pb::RunRequest SmallRequest(int64_t seq = 32, int heads = 2, int dim = 16);

// A service on an in-process channel. Backends default to the registry's (cpu_reference).
class InProcessServer {
 public:
  explicit InProcessServer(ServerOptions options = ServerOptions(), BackendList backends = {},
                           std::shared_ptr<const Authenticator> authenticator = nullptr);
  ~InProcessServer();
  pb::AttnBench::Stub& stub() { return *stub_; }
  // The stub's channel, for calls outside the generated stub (raw bytes).
  std::shared_ptr<grpc::Channel> channel() { return channel_; }
  Metrics& metrics() { return *metrics_; }
  const ServerOptions& options() const { return options_; }

 private:
  ServerOptions options_;
  std::shared_ptr<Metrics> metrics_;
  std::unique_ptr<AttnBenchService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::AttnBench::Stub> stub_;
};

// Value of a counter or gauge series in the registry; -1 when absent.
double MetricValue(const Metrics& metrics, const std::string& name,
                   const std::map<std::string, std::string>& labels);

}  // namespace attnbench::server::testing

#endif  // ATTNBENCH_TESTS_SERVER_TEST_UTIL_H_
