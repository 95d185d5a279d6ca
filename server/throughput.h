// Throughput and roofline position of a run: achieved rates from the analytic work (§7) and the
// median kernel time, as fractions of the device's measured ceilings.
#ifndef ATTNBENCH_SERVER_THROUGHPUT_H_
#define ATTNBENCH_SERVER_THROUGHPUT_H_

#include "attnbench/v1/attnbench.pb.h"
#include "kernels/backend.h"
#include "kernels/spec/counting.h"

namespace attnbench::server {

// All zeros when median_seconds is not positive; fractions and memory_bound stay zero/false when
// the device's ceilings are unknown (zero).
::attnbench::v1::Throughput ComputeThroughput(const WorkCounts& work, double median_seconds,
                                              const DeviceDescription& device);

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_THROUGHPUT_H_
