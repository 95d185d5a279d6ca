// The compiled-expression cache's counters (kernels/registry.h ExpressionCacheCounters: hits,
// misses, failures, NVRTC seconds, entries) as Prometheus families, read at each scrape like
// ProcessMetrics: the cache lives below the gRPC layer and keeps its own counts, so nothing has
// to push them. docs/metrics.md lists the names.
#ifndef ATTNBENCH_SERVER_EXPRESSION_CACHE_METRICS_H_
#define ATTNBENCH_SERVER_EXPRESSION_CACHE_METRICS_H_

#include <functional>
#include <utility>
#include <vector>

#include "kernels/registry.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace attnbench::server {

class ExpressionCacheMetrics : public prometheus::Collectable {
 public:
  using Source = std::function<ExpressionCacheCounters()>;
  // `source` is read at every scrape; the default is the process's cache.
  explicit ExpressionCacheMetrics(Source source = ExpressionCacheCountersNow)
      : source_(std::move(source)) {}

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  Source source_;
};

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_EXPRESSION_CACHE_METRICS_H_
