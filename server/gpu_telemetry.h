// GPU telemetry read through NVML at each scrape, under the DCGM exporter's metric names
// (DCGM_FI_DEV_GPU_UTIL, DCGM_FI_DEV_FB_USED, ...) and labels (gpu, UUID, device, modelName), so
// dashboards built for the DCGM exporter map over. NVML (libnvidia-ml.so.1, shipped with the
// driver) is loaded at run time: on a machine without it, Create() returns null and nothing is
// exported. A query NVML cannot answer for a device (an older GPU, a lost device) leaves that
// series out for that scrape.
#ifndef ATTNBENCH_SERVER_GPU_TELEMETRY_H_
#define ATTNBENCH_SERVER_GPU_TELEMETRY_H_

#include <memory>
#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace attnbench::server {

class GpuTelemetry : public prometheus::Collectable {
 public:
  // Null when NVML cannot be loaded or initialized.
  static std::shared_ptr<GpuTelemetry> Create();
  ~GpuTelemetry() override;

  int device_count() const;
  std::vector<prometheus::MetricFamily> Collect() const override;

  struct Nvml;  // the resolved entry points

 private:
  explicit GpuTelemetry(std::unique_ptr<Nvml> nvml);
  std::unique_ptr<Nvml> nvml_;
};

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_GPU_TELEMETRY_H_
