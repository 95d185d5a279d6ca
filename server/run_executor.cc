#include "server/run_executor.h"

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "kernels/reference/check.h"
#include "kernels/spec/counting.h"
#include "kernels/spec/gradients.h"
#include "kernels/spec/shapes.h"
#include "server/convert.h"
#include "server/gradient_check.h"
#include "server/harness.h"
#include "server/kv_compression_run.h"
#include "server/log.h"
#include "server/stats.h"
#include "server/throughput.h"
#include "server/work_limit.h"

namespace attnbench::server {
namespace {

namespace pb = ::attnbench::v1;

// `gradients`: whether the gradients come too, a layer's (`layer`) or the core's.
absl::Status InlineTooLarge(uint64_t bytes, uint64_t limit, bool gradients, bool layer) {
  const char* what = !gradients ? "the output is "
                     : layer    ? "the output, dX, dW_q, dW_k, dW_v and dW_o are "
                                : "the output, dQ, dK and dV are ";
  return absl::ResourceExhaustedError(
      absl::StrCat("return_output: ", what, bytes, " bytes", gradients ? " together" : "",
                   ", over --max_inline_output_bytes=", limit, "; use StreamRun to receive ",
                   gradients ? "them" : "it", " in chunks"));
}

uint64_t StoredBytes(const Shape& shape, DType dtype) {
  return static_cast<uint64_t>(NumElements(shape)) * static_cast<uint64_t>(DTypeBytes(dtype));
}

uint64_t StoredBytes(const FloatTensor& tensor) {
  return static_cast<uint64_t>(tensor.values.size()) *
         static_cast<uint64_t>(DTypeBytes(tensor.dtype));
}

// What return_output sends: O (Y), and for PHASE_BACKWARD its gradients too (GradientSlotsOf),
// at the stored width.
uint64_t ReturnedBytes(const Problem& problem, const ProblemShapes& shapes) {
  uint64_t bytes = StoredBytes(shapes.output, problem.output_dtype);
  if (problem.phase == Phase::kBackward) {
    for (const GradientSlot& slot : GradientSlotsOf(shapes)) {
      bytes += StoredBytes(slot.shape, problem.dtype);
    }
  }
  return bytes;
}

// A backend's gradients hold to the API's promise (GradientSlotsOf's shapes in the dtype, every
// value there) before any reaches a client or the check; INTERNAL naming the backend otherwise.
absl::Status CheckGradientShapes(const GradientTensors& gradients, const ProblemShapes& shapes,
                                 DType dtype, absl::string_view backend) {
  for (const GradientSlot& slot : GradientSlotsOf(shapes)) {
    const FloatTensor& t = gradients.*slot.tensor;
    if (t.shape != slot.shape || t.dtype != dtype ||
        static_cast<int64_t>(t.values.size()) != NumElements(slot.shape)) {
      return absl::InternalError(absl::StrCat(
          "backend ", backend, " returned ", slot.name, " of shape [", absl::StrJoin(t.shape, ", "),
          "], ", DTypeName(t.dtype), ", ", t.values.size(), " values; expected [",
          absl::StrJoin(slot.shape, ", "), "], ", DTypeName(dtype)));
    }
  }
  return absl::OkStatus();
}

// The gradient check's report names every gradient of the problem (CheckBackwardRun's
// contract: GradientSlotsOf's), so a client always finds them; INTERNAL otherwise.
absl::Status CheckGradientReport(const CorrectnessReport& report, const ProblemShapes& shapes) {
  std::vector<std::string> names;
  for (const TensorCheckReport& t : report.tensors) names.push_back(t.name);
  for (const GradientSlot& slot : GradientSlotsOf(shapes)) {
    const char* wanted = slot.name;
    if (std::find(names.begin(), names.end(), wanted) == names.end()) {
      return absl::InternalError(absl::StrCat("the gradient check reported tensors [",
                                              absl::StrJoin(names, ", "), "], without ", wanted));
    }
  }
  return absl::OkStatus();
}

// A forward check's one tensor, O, as Correctness.tensors lists it, from the report's own fields.
TensorCheckReport OutputTensorCheck(const CorrectnessReport& report) {
  TensorCheckReport out;
  out.name = "output";
  out.rows_checked = report.rows_checked;
  out.rows_total = report.rows_total;
  out.max_abs_error = report.max_abs_error;
  out.relative_error = report.relative_error;
  out.tolerance = report.tolerance;
  out.non_finite_elements = report.non_finite_elements;
  out.passed = report.passed;
  return out;
}

// The devices a request may run on: the one it named, else every device of the backend, so the
// scheduler hands it whichever frees first.
std::vector<std::string> EligibleDevices(const std::vector<DeviceDescription>& devices,
                                         std::optional<int> requested) {
  std::vector<std::string> keys;
  for (int i = 0; i < static_cast<int>(devices.size()); ++i) {
    if (!requested.has_value() || *requested == i) keys.push_back(DeviceKey(devices[i]));
  }
  return keys;
}

int DeviceIndexOf(const std::vector<DeviceDescription>& devices, const std::string& key) {
  for (int i = 0; i < static_cast<int>(devices.size()); ++i) {
    if (DeviceKey(devices[i]) == key) return i;
  }
  return -1;
}

}  // namespace

absl::Status RunExecutor::NoteDeviceHealth(absl::Status status, const std::string& device) {
  // INTERNAL from a backend is a device fault (a CUDA launch or sticky error), not a bad request.
  if (metrics_ != nullptr && status.code() == absl::StatusCode::kInternal) {
    metrics_->SetDeviceUp(device, false);
  }
  return status;
}

absl::StatusOr<RunOutcome> RunExecutor::Execute(const CheckedRequest& request, const Caller& caller,
                                                OutputDelivery delivery,
                                                const InterruptCheck& interrupted,
                                                absl::Time received) {
  const Problem& problem = request.problem;
  absl::StatusOr<Backend*> chosen =
      SelectBackend(*backends_, request.backend, problem, request.device_index);
  if (!chosen.ok()) return chosen.status();
  Backend& backend = **chosen;

  if (request.measurement.use_cuda_graph && !backend.Support().cuda_graphs) {
    // Refusing beats timing something other than what was asked.
    return absl::FailedPreconditionError(absl::StrCat(
        "measurement.use_cuda_graph: backend ", backend.Name(), " cannot replay CUDA graphs"));
  }

  const uint64_t estimate = backend.EstimateBytes(problem);
  if (estimate > options_->max_request_bytes) {
    if (metrics_ != nullptr) metrics_->RecordRejection("too_large");
    return absl::ResourceExhaustedError(
        absl::StrCat("spec: backend ", backend.Name(), " estimates ", estimate,
                     " bytes of device memory for this request, over --max_request_bytes=",
                     options_->max_request_bytes));
  }
  // Counting can be slow for a huge probabilistic mask; it comes after the cheap refusals.
  absl::StatusOr<WorkCounts> work = CountWork(problem);
  if (!work.ok()) return work.status();

  absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
  if (!shapes.ok()) return shapes.status();
  const bool backward = problem.phase == Phase::kBackward;
  const std::vector<DeviceDescription> devices = backend.Devices();
  RequestWork estimate_work =
      backward
          ? EstimateBackwardRequestWork(problem, *work, *shapes, request.measurement, request.check)
          : EstimateRequestWork(*work, request.measurement, request.check, shapes->rows_total,
                                SplitsQuantizationError(problem) ? 2 : 1);
  const bool compress = problem.kv_compression.enabled;
  if (compress) {
    if (absl::Status s = CheckCompressionCost(problem); !s.ok()) {
      if (metrics_ != nullptr) metrics_->RecordRejection("too_much_work");
      return s;
    }
    AddKvCompressionWork(*work, request.check, shapes->rows_total, problem, &estimate_work);
  }
  if (absl::Status s = CheckWorkLimit(estimate_work, backend.Name(),
                                      devices.empty() ? "" : devices.front().kind, *options_);
      !s.ok()) {
    if (metrics_ != nullptr) metrics_->RecordRejection("too_much_work");
    return s;
  }
  if (request.return_output && delivery == OutputDelivery::kInline) {
    // Refused before running, so a client learns to use StreamRun without waiting for a run.
    const uint64_t bytes = ReturnedBytes(problem, *shapes);
    if (bytes > options_->max_inline_output_bytes) {
      return InlineTooLarge(bytes, options_->max_inline_output_bytes, backward, shapes->layer);
    }
  }
  if (backward && request.check.enabled) {
    // Refused before running too, so nobody waits for a run whose check cannot happen.
    if (absl::Status s = BackwardCheckAvailable(); !s.ok()) return s;
  }

  WorkTicket ticket;
  ticket.devices = EligibleDevices(devices, request.device_index);
  if (ticket.devices.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("device_index = ", request.device_index.value_or(0), ": backend ",
                     backend.Name(), " has ", devices.size(), " device(s)"));
  }
  ticket.tenant = caller.tenant;
  ticket.weight = caller.weight;
  ticket.priority = request.priority;
  ticket.deadline = caller.deadline;
  absl::StatusOr<Scheduler::Lease> lease = scheduler_->Acquire(ticket, interrupted);
  if (!lease.ok()) return lease.status();
  const double queue_ms = absl::ToDoubleMilliseconds(lease->queue_wait());
  const std::string device_key = lease->device();
  const int device_index = DeviceIndexOf(devices, device_key);
  if (absl::Status s = interrupted(); !s.ok()) return s;

  ATTNBENCH_LOG(kDebug) << "run on " << backend.Name() << " " << device_key << " after " << queue_ms
                        << " ms in queue";
  // Declared after the lease so it is destroyed first: device memory is freed before the next
  // request may start on the device.
  const absl::Time prepare_start = absl::Now();
  absl::StatusOr<std::unique_ptr<Workload>> prepared = backend.Prepare(problem, device_index);
  const double preparation_ms = absl::ToDoubleMilliseconds(absl::Now() - prepare_start);
  if (!prepared.ok()) return NoteDeviceHealth(prepared.status(), device_key);
  std::unique_ptr<Workload> workload = *std::move(prepared);
  if (workload == nullptr) return absl::InternalError("backend returned no workload");

  const int clock_before = workload->CurrentClockMhz();
  std::vector<LayerSplit> layer_splits;
  absl::StatusOr<std::vector<double>> samples =
      MeasureWorkload(*workload, request.measurement, interrupted, &layer_splits);
  if (!samples.ok()) return NoteDeviceHealth(samples.status(), device_key);
  const int clock_after = workload->CurrentClockMhz();

  absl::StatusOr<FloatTensor> output = workload->Output();
  if (!output.ok()) return output.status();
  std::optional<GradientTensors> gradients;
  if (backward) {
    absl::StatusOr<GradientTensors> computed = workload->Gradients();
    if (!computed.ok()) return computed.status();
    if (absl::Status s = CheckGradientShapes(*computed, *shapes, problem.dtype, backend.Name());
        !s.ok()) {
      return s;
    }
    gradients = *std::move(computed);
  }

  RunOutcome outcome;
  pb::RunResult& result = outcome.result;
  if (request.check.enabled) {
    if (absl::Status s = interrupted(); !s.ok()) return s;
    const CheckOptions check_options = CheckOptionsOf(request.check, problem.seed);
    // Forward runs compare O; backward runs dQ, dK, dV (O is summarized, not checked).
    absl::StatusOr<CorrectnessReport> report =
        backward ? CheckBackwardRun(problem, workload->Inputs(), *gradients, check_options)
                 : CheckOutput(problem, workload->Inputs(), *output, check_options);
    if (!report.ok()) return report.status();
    if (backward) {
      if (absl::Status s = CheckGradientReport(*report, *shapes); !s.ok()) return s;
    } else if (report->tensors.empty()) {
      report->tensors.push_back(OutputTensorCheck(*report));
    }
    CorrectnessToProto(*report, result.mutable_correctness());
  }
  const DeviceDescription device = workload->Device();
  result.set_kernel(workload->KernelName());
  result.set_preparation_ms(preparation_ms);
  result.set_mask_preparation_ms(workload->MaskPreparationSeconds() * 1e3);
  result.set_expression_compile_ms(workload->ExpressionCompileSeconds() * 1e3);
  // spec.kv_compression: the compressed problems run on the same device, one after the other,
  // from the inputs the original read (kept past its workload, which frees its memory first).
  std::optional<AttentionInputs> original_inputs;
  std::vector<CompressedRun> compressed;
  if (compress) original_inputs = workload->Inputs();
  // §1b: the echo holds the FP8 scales the run used, derived ones included.
  Problem echoed = problem;
  if (problem.dtype == DType::kFloat8E4M3) {
    const AttentionInputs& in = workload->Inputs();
    echoed.float8.query_scales = in.query.scales;
    echoed.float8.key_scales = in.key.scales;
    echoed.float8.value_scales = in.value.scales;
  }
  workload.reset();
  if (compress) {
    for (CompressionMethod method : kCompressionMethods) {
      if (absl::Status s = interrupted(); !s.ok()) return s;
      absl::StatusOr<CompressedRun> run = RunCompressedMethod(
          backend, device_index, request, *original_inputs, method, interrupted);
      if (!run.ok()) return NoteDeviceHealth(run.status(), device_key);
      compressed.push_back(*std::move(run));
    }
  }
  *lease = Scheduler::Lease();  // the device is free; what is left is host-side work
  for (const CompressedRun& run : compressed) {
    if (absl::Status s = interrupted(); !s.ok()) return s;
    if (absl::Status s =
            CompressedResultToProto(request, *original_inputs, run, result.add_kv_compression());
        !s.ok()) {
      return s;
    }
  }

  std::vector<double> samples_ms;
  samples_ms.reserve(samples->size());
  for (double s : *samples) samples_ms.push_back(s * 1e3);
  const TimingStats stats = ComputeStats(samples_ms);

  *result.mutable_spec() = ProblemToProto(echoed);
  result.set_backend(backend.Name());
  DeviceToProto(device, result.mutable_device());
  result.mutable_device()->set_sm_clock_mhz_before(clock_before);
  result.mutable_device()->set_sm_clock_mhz_after(clock_after);
  *result.mutable_measurement() = MeasurementToProto(request.measurement);
  TimingToProto(stats, samples_ms, request.measurement.return_samples, result.mutable_timing());
  if (!layer_splits.empty()) {
    std::vector<double> projections_ms, core_ms;
    for (const LayerSplit& split : layer_splits) {
      projections_ms.push_back(split.projections_seconds * 1e3);
      core_ms.push_back(split.core_seconds * 1e3);
    }
    pb::LayerTiming* layer = result.mutable_layer_timing();
    TimingToProto(ComputeStats(projections_ms), projections_ms, request.measurement.return_samples,
                  layer->mutable_projections());
    TimingToProto(ComputeStats(core_ms), core_ms, request.measurement.return_samples,
                  layer->mutable_core());
  }
  WorkCountsToProto(*work, result.mutable_work());
  *result.mutable_throughput() = ComputeThroughput(*work, stats.median / 1e3, device);
  OutputSummaryToProto(SummarizeTensor(*output), result.mutable_output_summary());
  HeadMapToProto(shapes->heads.map, result.mutable_head_map());
  result.set_queue_ms(queue_ms);

  if (request.return_output) {
    if (delivery == OutputDelivery::kInline) {
      uint64_t bytes = StoredBytes(*output);
      const std::vector<GradientSlot> slots = GradientSlotsOf(*shapes);
      if (gradients.has_value()) {
        for (const GradientSlot& slot : slots) bytes += StoredBytes((*gradients).*slot.tensor);
      }
      if (bytes > options_->max_inline_output_bytes) {
        return InlineTooLarge(bytes, options_->max_inline_output_bytes, gradients.has_value(),
                              shapes->layer);
      }
      TensorToProto(*output, result.mutable_output());
      if (gradients.has_value()) {
        for (const GradientSlot& slot : slots) {
          TensorToProto((*gradients).*slot.tensor, MutableGradientField(&result, slot.name));
        }
      }
    } else {
      outcome.output = *std::move(output);
      outcome.gradients = std::move(gradients);
    }
  }
  result.set_server(options_->server_name);
  result.set_tenant(caller.tenant);
  if (metrics_ != nullptr) {
    metrics_->SetDeviceUp(device_key, true);
    metrics_->RecordRun(backend.Name(), LayoutName(problem.layout.kind), DTypeName(problem.dtype),
                        stats.median / 1e3, result.throughput().achieved_tflops(),
                        result.throughput().fraction_of_peak_flops());
  }
  result.set_wall_ms(absl::ToDoubleMilliseconds(absl::Now() - received));
  return outcome;
}

}  // namespace attnbench::server
