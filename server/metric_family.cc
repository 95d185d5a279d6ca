#include "server/metric_family.h"

namespace attnbench::server {

prometheus::MetricFamily SingleValueFamily(const char* name, const char* help,
                                           prometheus::MetricType type, double value) {
  prometheus::MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = type;
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(metric);
  return family;
}

}  // namespace attnbench::server
