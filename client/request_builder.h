// Builds attnbench.v1 RunRequest and SweepRequest messages from the CLI's flags (client/flags.h).
// An unset flag leaves its proto field unset, so the server's default applies (and is echoed in
// the result). Every error is a usage error: InvalidArgument whose message starts with the
// offending flag ("--layout: ..."). Semantic checks (divisibility, ranges) are the server's.
#ifndef ATTNBENCH_CLIENT_REQUEST_BUILDER_H_
#define ATTNBENCH_CLIENT_REQUEST_BUILDER_H_

#include "absl/status/statusor.h"
#include "attnbench/v1/attnbench.pb.h"

namespace attnbench::client {

// The request of `attnbench run`. Sets return_output when --output is given,
// spec.inputs.grad_output from the file --grad_output names (read here; its size must match dO's
// shape from the flags), and spec.score_mod, spec.mask_mod and spec.aux from --score_mod,
// --mask_mod and the files --aux names (client/aux_files.h), in the order given. The
// expressions are sent as written: the server parses and checks them against the shape.
absl::StatusOr<v1::RunRequest> RunRequestFromFlags();

// The request of `attnbench sweep`: the base request from the workload flags plus one axis per
// --sweep_* flag, in the order backend, layout, mask, dtype, phase, batch, seq_len, seq_len_q,
// seq_len_kv, head_dim (the last varies fastest). At least one axis is required. The expression
// flags set the base, so every point shares them.
absl::StatusOr<v1::SweepRequest> SweepRequestFromFlags();

}  // namespace attnbench::client

#endif  // ATTNBENCH_CLIENT_REQUEST_BUILDER_H_
