// spec.kv_compression inside a run (docs/variants.md §5b): after the original problem has been
// measured, each method's compressed problem is built on the host, prepared, measured and checked
// on the same backend and device while the run still holds its lease; once the device is free,
// the method's output error against the float64 references and its KvCompressionResult. The math
// is kernels/compress's; this is only the orchestration and the counting for the work limit.
#ifndef ATTNBENCH_SERVER_KV_COMPRESSION_RUN_H_
#define ATTNBENCH_SERVER_KV_COMPRESSION_RUN_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "attnbench/v1/attnbench.pb.h"
#include "kernels/backend.h"
#include "kernels/compress/kv_compression.h"
#include "kernels/reference/check.h"
#include "kernels/spec/counting.h"
#include "server/harness.h"
#include "server/request_check.h"
#include "server/work_limit.h"

namespace attnbench::server {

struct CompressedRun {
  CompressedKv kv;
  std::vector<double> samples_ms;
  WorkCounts work;
  std::optional<CorrectnessReport> check;  // when the request's check is on
  double compression_ms = 0;
  double preparation_ms = 0;
  std::string kernel;
  DeviceDescription device;
};

// Compresses `inputs` (the original run's, as it read them) by `method`, then prepares, measures
// (request.measurement) and, when request.check is on, checks the compressed problem on
// backend's device_index. Call with the device's lease held.
absl::StatusOr<CompressedRun> RunCompressedMethod(Backend& backend, int device_index,
                                                  const CheckedRequest& request,
                                                  const AttentionInputs& inputs,
                                                  CompressionMethod method,
                                                  const InterruptCheck& interrupted);

// The method's output error (on the rows request.check compares, or would) and every field of
// its KvCompressionResult. Host work only: call after the lease is given back.
absl::Status CompressedResultToProto(const CheckedRequest& request, const AttentionInputs& inputs,
                                     const CompressedRun& run,
                                     ::attnbench::v1::KvCompressionResult* out);

// What spec.kv_compression adds to the request's work (§7, work_limit.h): every method's
// compressed run, which has the original's kept pairs and FLOPs, on the device (device_once);
// on the host (check) the compression (CompressionHostFlops), each method's check as the
// original's, and its output error (two float64 oracles over the check's rows).
void AddKvCompressionWork(const WorkCounts& counts, const CheckPlan& check, int64_t rows_total,
                          const Problem& problem, RequestWork* work);

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_KV_COMPRESSION_RUN_H_
