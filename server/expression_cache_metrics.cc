#include "server/expression_cache_metrics.h"

#include "server/metric_family.h"

namespace attnbench::server {

std::vector<prometheus::MetricFamily> ExpressionCacheMetrics::Collect() const {
  using prometheus::MetricType;
  const ExpressionCacheCounters c = source_();
  return {
      SingleValueFamily(
          "attnbench_expression_cache_hits_total",
          "score_mod/mask_mod compilations answered from the cache of compiled images.",
          MetricType::Counter, static_cast<double>(c.hits)),
      SingleValueFamily("attnbench_expression_cache_misses_total",
                        "score_mod/mask_mod compilations that ran NVRTC (failed ones included).",
                        MetricType::Counter, static_cast<double>(c.misses)),
      SingleValueFamily(
          "attnbench_expression_compile_failures_total",
          "NVRTC compilations of score_mod/mask_mod that failed (or NVRTC was missing).",
          MetricType::Counter, static_cast<double>(c.failures)),
      SingleValueFamily("attnbench_expression_compile_seconds_total",
                        "Seconds spent in NVRTC compiling score_mod/mask_mod, summed over misses.",
                        MetricType::Counter, c.compile_seconds),
      SingleValueFamily("attnbench_expression_cache_evictions_total",
                        "Compiled score_mod/mask_mod images dropped from the full cache.",
                        MetricType::Counter, static_cast<double>(c.evictions)),
      SingleValueFamily("attnbench_expression_cache_entries",
                        "Compiled score_mod/mask_mod images cached.", MetricType::Gauge,
                        static_cast<double>(c.entries)),
  };
}

}  // namespace attnbench::server
