// Prometheus metrics of the service: requests by method and status code, request latency, runs
// by backend and layout, kernel time by backend, and build info. Label values come from finite
// sets only (method names, gRPC code names, registry backend names, layout names), so the number
// of series stays bounded whatever clients send.
#ifndef ATTNBENCH_SERVER_METRICS_H_
#define ATTNBENCH_SERVER_METRICS_H_

#include <memory>
#include <string>

#include "absl/strings/string_view.h"
#include "grpcpp/support/status.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace attnbench::server {

class Metrics {
 public:
  Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // What an Exposer serves.
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // method: "Run", "StreamRun", "Sweep" or "GetCapabilities".
  void RecordRequest(absl::string_view method, grpc::StatusCode code, double seconds);
  void RecordRun(const std::string& backend, const std::string& layout, double median_seconds);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& request_duration_;
  prometheus::Family<prometheus::Counter>& runs_;
  prometheus::Family<prometheus::Histogram>& kernel_time_;
};

// "OK", "INVALID_ARGUMENT", ...: the canonical names of gRPC status codes.
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_METRICS_H_
