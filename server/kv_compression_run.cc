#include "server/kv_compression_run.h"

#include <algorithm>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/convert.h"
#include "server/measurement.h"
#include "server/stats.h"
#include "server/throughput.h"

namespace attnbench::server {
namespace {

namespace pb = ::attnbench::v1;

absl::Status WithMethod(const absl::Status& s, CompressionMethod method) {
  return absl::Status(s.code(), absl::StrCat("spec.kv_compression (", CompressionMethodName(method),
                                             "): ", s.message()));
}

}  // namespace

absl::StatusOr<CompressedRun> RunCompressedMethod(Backend& backend, int device_index,
                                                  const CheckedRequest& request,
                                                  const AttentionInputs& inputs,
                                                  CompressionMethod method,
                                                  const InterruptCheck& interrupted) {
  CompressedRun run;
  const absl::Time compress_start = absl::Now();
  absl::StatusOr<CompressedKv> kv = CompressKv(request.problem, inputs, method);
  if (!kv.ok()) return kv.status();
  run.compression_ms = absl::ToDoubleMilliseconds(absl::Now() - compress_start);
  run.kv = *std::move(kv);
  const Problem& problem = run.kv.problem;
  if (absl::Status s = backend.CheckSupported(problem); !s.ok()) return WithMethod(s, method);
  absl::StatusOr<WorkCounts> work = CountWork(problem);
  if (!work.ok()) return work.status();
  run.work = *work;
  if (absl::Status s = interrupted(); !s.ok()) return s;

  const absl::Time prepare_start = absl::Now();
  absl::StatusOr<std::unique_ptr<Workload>> prepared = backend.Prepare(problem, device_index);
  run.preparation_ms = absl::ToDoubleMilliseconds(absl::Now() - prepare_start);
  if (!prepared.ok()) return WithMethod(prepared.status(), method);
  std::unique_ptr<Workload> workload = *std::move(prepared);
  if (workload == nullptr) return absl::InternalError("backend returned no workload");
  absl::StatusOr<std::vector<double>> samples =
      MeasureWorkload(*workload, request.measurement, interrupted);
  if (!samples.ok()) return samples.status();
  for (double s : *samples) run.samples_ms.push_back(s * 1e3);
  if (request.check.enabled) {
    absl::StatusOr<FloatTensor> output = workload->Output();
    if (!output.ok()) return output.status();
    absl::StatusOr<CorrectnessReport> report = CheckOutput(
        problem, workload->Inputs(), *output, CheckOptionsOf(request.check, request.problem.seed));
    if (!report.ok()) return report.status();
    run.check = *std::move(report);
  }
  run.kernel = workload->KernelName();
  run.device = workload->Device();
  return run;
}

absl::Status CompressedResultToProto(const CheckedRequest& request, const AttentionInputs& inputs,
                                     const CompressedRun& run, pb::KvCompressionResult* out) {
  absl::StatusOr<OutputErrorReport> error = CompressedOutputError(
      request.problem, inputs, run.kv, CheckOptionsOf(request.check, request.problem.seed));
  if (!error.ok()) return error.status();
  out->set_method(CompressionMethodName(run.kv.method));
  out->set_kv_heads(run.kv.groups);
  out->set_key_error(run.kv.key_error);
  out->set_value_error(run.kv.value_error);
  out->set_output_error(error->relative_error);
  out->set_output_rows_compared(error->rows);
  const TimingStats stats = ComputeStats(run.samples_ms);
  TimingToProto(stats, run.samples_ms, request.measurement.return_samples, out->mutable_timing());
  WorkCountsToProto(run.work, out->mutable_work());
  *out->mutable_throughput() = ComputeThroughput(run.work, stats.median / 1e3, run.device);
  if (run.check.has_value()) CorrectnessToProto(*run.check, out->mutable_correctness());
  out->set_compression_ms(run.compression_ms);
  out->set_preparation_ms(run.preparation_ms);
  out->set_kernel(run.kernel);
  return absl::OkStatus();
}

void AddKvCompressionWork(const WorkCounts& counts, const CheckPlan& check, int64_t rows_total,
                          const Problem& problem, RequestWork* work) {
  const double methods = static_cast<double>(std::size(kCompressionMethods));
  work->device_once += methods * work->per_iteration * work->iterations;
  // The output error's rows are the check's, compared whether or not the check is on.
  CheckPlan rows = check;
  rows.enabled = true;
  const RequestWork error = EstimateRequestWork(counts, MeasurementPlan(), rows, rows_total);
  work->check += CompressionHostFlops(problem) + methods * (work->check + 2 * error.check);
}

}  // namespace attnbench::server
