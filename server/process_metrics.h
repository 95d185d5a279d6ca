// The standard process_* metrics (the names client_golang and the Prometheus docs use), read from
// /proc/self at each scrape: CPU time, resident and virtual memory, open and maximum file
// descriptors, threads and start time. prometheus-cpp has no process collector of its own.
#ifndef ATTNBENCH_SERVER_PROCESS_METRICS_H_
#define ATTNBENCH_SERVER_PROCESS_METRICS_H_

#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace attnbench::server {

class ProcessMetrics : public prometheus::Collectable {
 public:
  // Families for the values /proc could give; none on a system without /proc.
  std::vector<prometheus::MetricFamily> Collect() const override;
};

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_PROCESS_METRICS_H_
