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

// Achieved rates span a tiny CPU run to an H100's dense peak.
const std::vector<double>& TflopsBuckets() {
  static const auto* buckets = new std::vector<double>{
      0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 200, 300, 400, 500, 700, 1000};
  return *buckets;
}

const std::vector<double>& FractionBuckets() {
  static const auto* buckets =
      new std::vector<double>{0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2};
  return *buckets;
}

constexpr char kOtherTenant[] = "other";

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

Metrics::Metrics(std::vector<std::string> known_tenants, bool cuda_build)
    : registry_(std::make_shared<prometheus::Registry>()),
      known_tenants_(known_tenants.begin(), known_tenants.end()),
      requests_(prometheus::BuildCounter()
                    .Name("attnbench_requests_total")
                    .Help("RPCs finished, by method and gRPC status code.")
                    .Register(*registry_)),
      request_duration_(prometheus::BuildHistogram()
                            .Name("attnbench_request_duration_seconds")
                            .Help("Time from receiving an RPC to its final status, by method.")
                            .Register(*registry_)),
      queue_wait_(prometheus::BuildHistogram()
                      .Name("attnbench_queue_wait_seconds")
                      .Help("Time a run waited for its device, by device.")
                      .Register(*registry_)),
      run_duration_(prometheus::BuildHistogram()
                        .Name("attnbench_run_duration_seconds")
                        .Help("Time a run held its device (prepare, measure, check), by device.")
                        .Register(*registry_)),
      queue_depth_(prometheus::BuildGauge()
                       .Name("attnbench_queue_depth")
                       .Help("Runs waiting that the device could take.")
                       .Register(*registry_)),
      in_flight_(prometheus::BuildGauge()
                     .Name("attnbench_in_flight")
                     .Help("Runs holding the device (0 or 1).")
                     .Register(*registry_)),
      busy_seconds_(prometheus::BuildCounter()
                        .Name("attnbench_device_busy_seconds_total")
                        .Help("Time the device was held by runs.")
                        .Register(*registry_)),
      runs_(prometheus::BuildCounter()
                .Name("attnbench_runs_total")
                .Help("Workloads measured successfully, by backend, head layout and dtype.")
                .Register(*registry_)),
      kernel_time_(prometheus::BuildHistogram()
                       .Name("attnbench_kernel_time_seconds")
                       .Help("Median kernel time of each measured workload.")
                       .Register(*registry_)),
      achieved_tflops_(prometheus::BuildHistogram()
                           .Name("attnbench_achieved_tflops")
                           .Help("Achieved TFLOP/s of each measured workload, by backend.")
                           .Register(*registry_)),
      peak_fraction_(prometheus::BuildHistogram()
                         .Name("attnbench_peak_flops_fraction")
                         .Help("Achieved rate over the device's measured GEMM ceiling.")
                         .Register(*registry_)),
      rejections_(prometheus::BuildCounter()
                      .Name("attnbench_rejections_total")
                      .Help("Requests refused or dropped before running, by reason.")
                      .Register(*registry_)),
      tenant_runs_(prometheus::BuildCounter()
                       .Name("attnbench_tenant_runs_total")
                       .Help("Runs that held a device, per tenant.")
                       .Register(*registry_)),
      tenant_device_seconds_(prometheus::BuildCounter()
                                 .Name("attnbench_tenant_device_seconds_total")
                                 .Help("Device time used, per tenant.")
                                 .Register(*registry_)),
      tenant_queue_depth_(prometheus::BuildGauge()
                              .Name("attnbench_tenant_queue_depth")
                              .Help("Runs queued or running, per tenant.")
                              .Register(*registry_)),
      device_up_(prometheus::BuildGauge()
                     .Name("attnbench_device_up")
                     .Help("1 while the device answers; 0 once it failed.")
                     .Register(*registry_)),
      draining_(prometheus::BuildGauge()
                    .Name("attnbench_draining")
                    .Help("1 once SIGTERM started the drain.")
                    .Register(*registry_)
                    .Add({})) {
  prometheus::BuildGauge()
      .Name("attnbench_build_info")
      .Help("Always 1; the labels describe the running build.")
      .Register(*registry_)
      .Add({{"version", ATTNBENCH_VERSION}, {"cuda", cuda_build ? "yes" : "no"}})
      .Set(1);
  for (const std::string& tenant : known_tenants_) {
    tenant_queue_depth_.Add({{"tenant", tenant}});
  }
}

void Metrics::RecordRequest(absl::string_view method, grpc::StatusCode code, double seconds) {
  requests_.Add({{"method", std::string(method)}, {"code", GrpcCodeName(code)}}).Increment();
  request_duration_.Add({{"method", std::string(method)}}, RequestBuckets()).Observe(seconds);
}

void Metrics::RecordRun(const std::string& backend, const std::string& layout,
                        const std::string& dtype, double median_seconds, double achieved_tflops,
                        double peak_fraction) {
  const prometheus::Labels labels{{"backend", backend}, {"layout", layout}, {"dtype", dtype}};
  runs_.Add(labels).Increment();
  kernel_time_.Add(labels, KernelBuckets()).Observe(median_seconds);
  achieved_tflops_.Add({{"backend", backend}}, TflopsBuckets()).Observe(achieved_tflops);
  if (peak_fraction > 0) {
    peak_fraction_.Add({{"backend", backend}}, FractionBuckets()).Observe(peak_fraction);
  }
}

void Metrics::RecordRejection(absl::string_view reason) {
  rejections_.Add({{"reason", std::string(reason)}}).Increment();
}

void Metrics::SetQueueDepth(const std::string& device, int depth) {
  queue_depth_.Add({{"device", device}}).Set(depth);
}

void Metrics::SetInFlight(const std::string& device, int running) {
  in_flight_.Add({{"device", device}}).Set(running);
}

void Metrics::ObserveQueueWait(const std::string& device, double seconds) {
  queue_wait_.Add({{"device", device}}, RequestBuckets()).Observe(seconds);
}

void Metrics::ObserveHold(const std::string& device, double seconds) {
  run_duration_.Add({{"device", device}}, RequestBuckets()).Observe(seconds);
  busy_seconds_.Add({{"device", device}}).Increment(seconds);
}

void Metrics::SetDeviceUp(const std::string& device, bool up) {
  device_up_.Add({{"device", device}}).Set(up ? 1 : 0);
}

const std::string& Metrics::TenantLabel(const std::string& tenant) const {
  static const std::string* other = new std::string(kOtherTenant);
  auto it = known_tenants_.find(tenant);
  return it == known_tenants_.end() ? *other : *it;
}

void Metrics::AddTenantLoad(const std::string& tenant, int delta) {
  prometheus::Gauge& gauge = tenant_queue_depth_.Add({{"tenant", TenantLabel(tenant)}});
  if (delta >= 0) {
    gauge.Increment(delta);
  } else {
    gauge.Decrement(-delta);
  }
}

void Metrics::RecordTenantUsage(const std::string& tenant, double device_seconds) {
  const prometheus::Labels labels{{"tenant", TenantLabel(tenant)}};
  tenant_runs_.Add(labels).Increment();
  tenant_device_seconds_.Add(labels).Increment(device_seconds);
}

void Metrics::SetDraining(bool draining) { draining_.Set(draining ? 1 : 0); }

}  // namespace attnbench::server
