// One-sample metric families for collectors that read their values at scrape time (the process
// metrics, the expression cache's): written once so each collector lists only its names.
#ifndef ATTNBENCH_SERVER_METRIC_FAMILY_H_
#define ATTNBENCH_SERVER_METRIC_FAMILY_H_

#include "prometheus/metric_family.h"
#include "prometheus/metric_type.h"

namespace attnbench::server {

// A family `name` with one unlabelled sample `value`, a counter or a gauge as `type` says.
prometheus::MetricFamily SingleValueFamily(const char* name, const char* help,
                                           prometheus::MetricType type, double value);

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_METRIC_FAMILY_H_
