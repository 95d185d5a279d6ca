// Fan-out of one sweep over several servers. The grid is split along its first axis with more
// than one value into one sub-sweep per value; the sub-sweeps run at once over one round_robin
// channel, so on different replicas, and their streams merge back into the whole grid's point
// indices. The grid is row-major with the last axis fastest and every axis before the split one
// has a single value, so a point's global index is
//   value index on the split axis * (product of the later axes' sizes) + its sub-sweep index.
#ifndef ATTNBENCH_CLIENT_FAN_OUT_H_
#define ATTNBENCH_CLIENT_FAN_OUT_H_

#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "attnbench/v1/attnbench.pb.h"
#include "client/rpc_client.h"

namespace attnbench::client {

// Number of values on an axis (0 when no axis case is set).
int AxisSize(const v1::SweepAxis& axis);

// `axis` with only its value number `index` left.
v1::SweepAxis AxisWithValue(const v1::SweepAxis& axis, int index);

// One sub-sweep: the request with the split axis reduced to one value, and the global indices
// [first_point, first_point + points) it covers.
struct SweepPart {
  v1::SweepRequest request;
  int first_point = 0;
  int points = 0;
};

struct SweepSplit {
  std::vector<SweepPart> parts;  // in grid order
  int total_points = 0;
};

// Splits `request` along its first axis with more than one value (a grid of single-valued axes
// is one part). InvalidArgument without axes, with an empty axis, or for a grid over 2^30 points.
absl::StatusOr<SweepSplit> SplitSweep(const v1::SweepRequest& request);

// Runs one sub-sweep, handing each streamed response to `on_response` and ending with the call's
// status; CANCELLED once `canceller` is cancelled. RpcClient::Sweep is one.
using SweepCall = std::function<absl::Status(
    const v1::SweepRequest& request,
    const std::function<void(const v1::SweepResponse&)>& on_response, CallCanceller* canceller)>;

// Runs the parts of `split`, at most `concurrency` (>= 1) at once, each as soon as a slot frees
// (so later parts go wherever round_robin points next). `on_response` gets every response one at
// a time, never concurrently, with point_index, total_points and completed_points rewritten to
// the whole grid's. The first failed call (or a stream that breaks the grid: an index outside its
// part, a repeated point, points missing at the end) stops new parts, cancels the running ones
// and is returned; DATA_LOSS for a broken stream.
absl::Status FanOutSweep(const SweepSplit& split, int concurrency, const SweepCall& call,
                         const std::function<void(const v1::SweepResponse&)>& on_response);

}  // namespace attnbench::client

#endif  // ATTNBENCH_CLIENT_FAN_OUT_H_
