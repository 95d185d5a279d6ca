#include "server/metrics.h"

#include <vector>

namespace attnbench::server {
namespace {

// Request latency spans a millisecond GetCapabilities to sweeps of many minutes.
const std::vector<double>& RequestBuckets() {
  static const auto* buckets =
      new std::vector<double>{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                              2.5,   5,      10,    30,   60,    120,  300, 600,  1800};
  return *buckets;
}

// Kernel medians span microseconds (decode on a GPU) to seconds (long prefill on the CPU).
const std::vector<double>& KernelBuckets() {
  static const auto* buckets = new std::vector<double>{
      1e-6, 2.5e-6, 5e-6,   1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3,
      5e-3, 1e-2,   2.5e-2, 5e-2, 0.1,    0.25, 0.5,  1,      2.5,  5,    10};
  return *buckets;
}

}  // namespace

const char* GrpcCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      break;
  }
  // Keeps the label set finite even for a code this list does not know.
  return "UNKNOWN";
}

Metrics::Metrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      requests_(prometheus::BuildCounter()
                    .Name("attnbench_requests_total")
                    .Help("RPCs finished, by method and gRPC status code.")
                    .Register(*registry_)),
      request_duration_(prometheus::BuildHistogram()
                            .Name("attnbench_request_duration_seconds")
                            .Help("Time from receiving an RPC to its final status, by method.")
                            .Register(*registry_)),
      runs_(prometheus::BuildCounter()
                .Name("attnbench_runs_total")
                .Help("Workloads measured successfully, by backend and head layout.")
                .Register(*registry_)),
      kernel_time_(prometheus::BuildHistogram()
                       .Name("attnbench_kernel_time_seconds")
                       .Help("Median kernel time of each measured workload, by backend.")
                       .Register(*registry_)) {
  prometheus::BuildGauge()
      .Name("attnbench_build_info")
      .Help("Always 1; the labels describe the running build.")
      .Register(*registry_)
      .Add({{"version", ATTNBENCH_VERSION}})
      .Set(1);
}

void Metrics::RecordRequest(absl::string_view method, grpc::StatusCode code, double seconds) {
  requests_.Add({{"method", std::string(method)}, {"code", GrpcCodeName(code)}}).Increment();
  request_duration_.Add({{"method", std::string(method)}}, RequestBuckets()).Observe(seconds);
}

void Metrics::RecordRun(const std::string& backend, const std::string& layout,
                        double median_seconds) {
  runs_.Add({{"backend", backend}, {"layout", layout}}).Increment();
  kernel_time_.Add({{"backend", backend}}, KernelBuckets()).Observe(median_seconds);
}

}  // namespace attnbench::server
