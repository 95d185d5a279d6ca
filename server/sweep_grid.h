// The grid of a SweepRequest: how many points it has (refusing empty, unset or conflicting axes
// and grids over the server's limit) and the RunRequest of each point, in row-major order with
// the last axis fastest.
#ifndef ATTNBENCH_SERVER_SWEEP_GRID_H_
#define ATTNBENCH_SERVER_SWEEP_GRID_H_

#include <string>

#include "absl/status/statusor.h"
#include "attnbench/v1/attnbench.pb.h"

namespace attnbench::server {

// INVALID_ARGUMENT naming the axis ("axes[2]") for an axis with no values or none of its oneof
// set, two axes setting the same field, or more than max_points points.
absl::StatusOr<int> CountSweepPoints(const ::attnbench::v1::SweepRequest& sweep, int max_points);

// The base request with point `index`'s value from every axis. index in [0, CountSweepPoints).
::attnbench::v1::RunRequest SweepPointRequest(const ::attnbench::v1::SweepRequest& sweep,
                                              int index);

// The values a point takes, for error messages: "axes[0].seq_len=128, axes[1].dtype=DTYPE_FLOAT16".
std::string DescribeSweepPoint(const ::attnbench::v1::SweepRequest& sweep, int index);

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_SWEEP_GRID_H_
