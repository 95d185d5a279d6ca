// Prometheus metrics of the service (docs/metrics.md lists them): requests by method and code,
// request/queue-wait/run-time histograms, queue depth and in-flight work per device, device busy
// time, runs and kernel time by backend/layout/dtype, achieved TFLOP/s and fraction of the ceiling,
// rejections by reason, per-tenant usage, draining and device health, build info. Label values come
// from finite sets only (method names, gRPC code names, registered backends and devices, layout and
// dtype names, configured tenants with every other tenant as "other", fixed reasons), so the number
// of series stays bounded whatever clients send.
#ifndef ATTNBENCH_SERVER_METRICS_H_
#define ATTNBENCH_SERVER_METRICS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
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
  // Tenants named in the tokens file or --tenant_weights; any other tenant is labelled "other".
  explicit Metrics(std::vector<std::string> known_tenants = {}, bool cuda_build = false);
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // What an Exposer serves.
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

  // method: "Run", "StreamRun", "Sweep" or "GetCapabilities".
  void RecordRequest(absl::string_view method, grpc::StatusCode code, double seconds);
  // One successfully measured run.
  void RecordRun(const std::string& backend, const std::string& layout, const std::string& dtype,
                 double median_seconds, double achieved_tflops, double peak_fraction);
  // reason: one of the fixed set in docs/metrics.md.
  void RecordRejection(absl::string_view reason);

  // Scheduler hooks, per device ("cpu:0", "cuda:1").
  void SetQueueDepth(const std::string& device, int depth);
  void SetInFlight(const std::string& device, int running);
  void ObserveQueueWait(const std::string& device, double seconds);
  // A run released its device after holding it `seconds`.
  void ObserveHold(const std::string& device, double seconds);
  void SetDeviceUp(const std::string& device, bool up);

  // Per tenant (label: the tenant if known, else "other").
  void AddTenantLoad(const std::string& tenant, int delta);
  void RecordTenantUsage(const std::string& tenant, double device_seconds);
  const std::string& TenantLabel(const std::string& tenant) const;

  void SetDraining(bool draining);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  absl::flat_hash_set<std::string> known_tenants_;
  prometheus::Family<prometheus::Counter>& requests_;
  prometheus::Family<prometheus::Histogram>& request_duration_;
  prometheus::Family<prometheus::Histogram>& queue_wait_;
  prometheus::Family<prometheus::Histogram>& run_duration_;
  prometheus::Family<prometheus::Gauge>& queue_depth_;
  prometheus::Family<prometheus::Gauge>& in_flight_;
  prometheus::Family<prometheus::Counter>& busy_seconds_;
  prometheus::Family<prometheus::Counter>& runs_;
  prometheus::Family<prometheus::Histogram>& kernel_time_;
  prometheus::Family<prometheus::Histogram>& achieved_tflops_;
  prometheus::Family<prometheus::Histogram>& peak_fraction_;
  prometheus::Family<prometheus::Counter>& rejections_;
  prometheus::Family<prometheus::Counter>& tenant_runs_;
  prometheus::Family<prometheus::Counter>& tenant_device_seconds_;
  prometheus::Family<prometheus::Gauge>& tenant_queue_depth_;
  prometheus::Family<prometheus::Gauge>& device_up_;
  prometheus::Gauge& draining_;
};

// "OK", "INVALID_ARGUMENT", ...: the canonical names of gRPC status codes.
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_METRICS_H_
