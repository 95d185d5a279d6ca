#include "server/service.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "kernels/spec/gradients.h"
#include "kernels/spec/shapes.h"
#include "kernels/spec/tensors.h"
#include "server/convert.h"
#include "server/log.h"
#include "server/raw_methods.h"
#include "server/request_check.h"
#include "server/sweep_grid.h"

namespace attnbench::server {
namespace {

namespace pb = ::attnbench::v1;

// absl and gRPC share the canonical code numbering.
// Messages are cut to kMaxStatusMessage bytes: a trailer too large for the client would break
// its connection, whatever a message ends up quoting.
constexpr size_t kMaxStatusMessage = 1024;

grpc::Status ToGrpc(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  std::string message(status.message());
  if (message.size() > kMaxStatusMessage) {
    message.resize(kMaxStatusMessage - 3);
    message += "...";
  }
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::move(message));
}

absl::Status WithPrefix(const absl::Status& status, absl::string_view prefix) {
  return absl::Status(status.code(), absl::StrCat(prefix, status.message()));
}

// gRPC cancels a call when its deadline passes on gRPC's own clock; context->deadline(), converted
// to the system clock, was seen up to 7 ms later than that cancellation on a loaded 2-core host.
// A cancellation this close to the deadline is the deadline, not the client (e2e_load counts them
// apart, as the deadline_in_queue and cancelled_in_queue rejections).
constexpr std::chrono::milliseconds kDeadlineClockSlack(50);

// Between iterations and points: has the client gone, or its deadline passed?
InterruptCheck FromContext(grpc::ServerContext* context) {
  return [context]() -> absl::Status {
    const auto now = std::chrono::system_clock::now();
    if (context->deadline() <= now) {
      return absl::DeadlineExceededError("deadline exceeded before the run finished");
    }
    if (context->IsCancelled()) {
      if (context->deadline() <= now + kDeadlineClockSlack) {
        return absl::DeadlineExceededError("deadline exceeded before the run finished");
      }
      return absl::CancelledError("cancelled by the client");
    }
    return absl::OkStatus();
  };
}

// The scheduler's view of the caller: its tenant and weight, and the RPC's deadline.
Caller CallerOf(const Principal& principal, const grpc::ServerContext& context) {
  Caller caller;
  caller.tenant = principal.tenant;
  caller.weight = principal.weight;
  const auto deadline = context.deadline();
  // gRPC reports "no deadline" as a time_point far in the future.
  if (deadline < std::chrono::system_clock::now() + std::chrono::hours(24 * 365 * 100)) {
    caller.deadline = absl::FromChrono(deadline);
  }
  return caller;
}

// Authenticates one RPC's caller, and records its outcome in metrics and the log. The log line
// names the method, the tenant once known, the code and the status message, which never holds
// credentials (server/auth.h) or tensor data.
class RequestScope {
 public:
  RequestScope(Metrics* metrics, absl::string_view method)
      : metrics_(metrics), method_(method), start_(absl::Now()) {}
  // The caller, or the UNAUTHENTICATED / PERMISSION_DENIED / INVALID_ARGUMENT to answer with.
  absl::StatusOr<Principal> Authenticate(const Authenticator& authenticator,
                                         const grpc::ServerContext& context) {
    absl::StatusOr<Principal> principal = authenticator.Authenticate(context);
    if (principal.ok()) tenant_ = principal->tenant;
    return principal;
  }
  grpc::Status Finish(grpc::Status status) {
    const double seconds = absl::ToDoubleSeconds(absl::Now() - start_);
    if (metrics_ != nullptr) metrics_->RecordRequest(method_, status.error_code(), seconds);
    const std::string who = tenant_.empty() ? "" : absl::StrCat(" tenant=", tenant_);
    if (status.ok()) {
      ATTNBENCH_LOG(kDebug) << method_ << who << " OK in " << seconds << " s";
    } else {
      ATTNBENCH_LOG(kInfo) << method_ << who << " " << GrpcCodeName(status.error_code()) << " in "
                           << seconds << " s: " << status.error_message();
    }
    return status;
  }

 private:
  Metrics* metrics_;
  absl::string_view method_;
  absl::Time start_;
  std::string tenant_;
};

// The frame of every RPC: authenticate the caller, parse `bytes` as a Request, hand both to
// `handle(principal, request)`, and finish whatever comes back on the method's scope.
template <typename Request, typename Handle>
grpc::Status Serve(Metrics* metrics, const Authenticator& authenticator, absl::string_view method,
                   const grpc::ServerContext& context, const grpc::ByteBuffer& bytes,
                   Handle handle) {
  RequestScope scope(metrics, method);
  absl::StatusOr<Principal> principal = scope.Authenticate(authenticator, context);
  if (!principal.ok()) return scope.Finish(ToGrpc(principal.status()));
  Request request;
  if (absl::Status s = ParseRequest(method, bytes, &request); !s.ok()) {
    return scope.Finish(ToGrpc(s));
  }
  return scope.Finish(handle(*principal, request));
}

}  // namespace

AttnBenchService::AttnBenchService(BackendList backends, ServerOptions options,
                                   std::shared_ptr<Metrics> metrics,
                                   std::shared_ptr<const Authenticator> authenticator)
    : backends_(std::move(backends)),
      options_(options),
      metrics_(std::move(metrics)),
      authenticator_(authenticator != nullptr ? std::move(authenticator)
                                              : std::make_shared<const Authenticator>()),
      scheduler_(options_.scheduling, metrics_.get()),
      executor_(&backends_, &scheduler_, metrics_.get(), &options_) {
  AddMethod(RawRequestUnaryMethod(MethodPath("Run"), this, &AttnBenchService::Run));
  AddMethod(
      RawRequestServerStreamingMethod(MethodPath("StreamRun"), this, &AttnBenchService::StreamRun));
  AddMethod(RawRequestServerStreamingMethod(MethodPath("Sweep"), this, &AttnBenchService::Sweep));
  AddMethod(RawRequestUnaryMethod(MethodPath("GetCapabilities"), this,
                                  &AttnBenchService::GetCapabilities));
}

const char* AttnBenchService::MethodPath(const std::string& method) {
  return method_paths_
      .emplace_back(absl::StrCat("/", pb::AttnBench::service_full_name(), "/", method))
      .c_str();
}

grpc::Status AttnBenchService::Run(grpc::ServerContext* context, const grpc::ByteBuffer* bytes,
                                   pb::RunResponse* response) {
  return Serve<pb::RunRequest>(metrics_.get(), *authenticator_, "Run", *context, *bytes,
                               [&](const Principal& principal, const pb::RunRequest& request) {
                                 return DoRun(context, principal, request, response);
                               });
}

grpc::Status AttnBenchService::DoRun(grpc::ServerContext* context, const Principal& principal,
                                     const pb::RunRequest& request, pb::RunResponse* response) {
  const absl::Time received = absl::Now();
  absl::StatusOr<CheckedRequest> checked = CheckRunRequest(request, backends_, options_);
  if (!checked.ok()) return ToGrpc(checked.status());
  absl::StatusOr<RunOutcome> outcome =
      executor_.Execute(*checked, CallerOf(principal, *context), OutputDelivery::kInline,
                        FromContext(context), received);
  if (!outcome.ok()) return ToGrpc(outcome.status());
  *response->mutable_result() = std::move(outcome->result);
  return grpc::Status::OK;
}

bool AttnBenchService::WriteTensorChunks(const std::string& name, const FloatTensor& tensor,
                                         grpc::ServerWriter<pb::StreamRunResponse>* writer) {
  const std::string bytes = EncodeTensor(tensor);
  const size_t chunk = static_cast<size_t>(std::max(1, options_.stream_chunk_bytes));
  pb::StreamRunResponse message;
  pb::TensorChunk* piece = message.mutable_chunk();
  piece->set_name(name);
  piece->set_dtype(DTypeToProto(tensor.dtype));
  for (int64_t d : tensor.shape) piece->add_shape(d);
  piece->set_total_bytes(bytes.size());
  for (size_t offset = 0; offset < bytes.size(); offset += chunk) {
    piece->set_offset_bytes(offset);
    piece->set_data(bytes.substr(offset, chunk));
    if (!writer->Write(message)) return false;
  }
  return true;
}

grpc::Status AttnBenchService::StreamRun(grpc::ServerContext* context,
                                         const grpc::ByteBuffer* bytes,
                                         grpc::ServerWriter<pb::StreamRunResponse>* writer) {
  return Serve<pb::RunRequest>(metrics_.get(), *authenticator_, "StreamRun", *context, *bytes,
                               [&](const Principal& principal, const pb::RunRequest& request) {
                                 return DoStreamRun(context, principal, request, writer);
                               });
}

grpc::Status AttnBenchService::DoStreamRun(grpc::ServerContext* context, const Principal& principal,
                                           const pb::RunRequest& request,
                                           grpc::ServerWriter<pb::StreamRunResponse>* writer) {
  const absl::Time received = absl::Now();
  absl::StatusOr<CheckedRequest> checked = CheckRunRequest(request, backends_, options_);
  if (!checked.ok()) return ToGrpc(checked.status());
  absl::StatusOr<RunOutcome> outcome =
      executor_.Execute(*checked, CallerOf(principal, *context), OutputDelivery::kStream,
                        FromContext(context), received);
  if (!outcome.ok()) return ToGrpc(outcome.status());

  // "output", then for PHASE_BACKWARD its gradients in GradientSlotsOf's order ("dq", "dk",
  // "dv"; at layer scope "dx", "dw_q", "dw_k", "dw_v", "dw_o"), each tensor's chunks in order.
  std::vector<std::pair<const char*, const FloatTensor*>> tensors;
  if (outcome->output.has_value()) tensors.emplace_back("output", &*outcome->output);
  if (outcome->gradients.has_value()) {
    absl::StatusOr<ProblemShapes> shapes = ShapesOf(checked->problem);
    if (!shapes.ok()) return ToGrpc(shapes.status());
    for (const GradientSlot& slot : GradientSlotsOf(*shapes)) {
      tensors.emplace_back(slot.name, &((*outcome->gradients).*slot.tensor));
    }
  }
  for (const auto& [name, tensor] : tensors) {
    if (!WriteTensorChunks(name, *tensor, writer)) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "client stopped reading the stream");
    }
  }
  pb::StreamRunResponse last;
  *last.mutable_result() = std::move(outcome->result);
  last.mutable_result()->set_wall_ms(absl::ToDoubleMilliseconds(absl::Now() - received));
  if (!writer->Write(last)) {
    return grpc::Status(grpc::StatusCode::CANCELLED, "client stopped reading the stream");
  }
  return grpc::Status::OK;
}

grpc::Status AttnBenchService::Sweep(grpc::ServerContext* context, const grpc::ByteBuffer* bytes,
                                     grpc::ServerWriter<pb::SweepResponse>* writer) {
  return Serve<pb::SweepRequest>(metrics_.get(), *authenticator_, "Sweep", *context, *bytes,
                                 [&](const Principal& principal, const pb::SweepRequest& request) {
                                   return DoSweep(context, principal, request, writer);
                                 });
}

grpc::Status AttnBenchService::DoSweep(grpc::ServerContext* context, const Principal& principal,
                                       const pb::SweepRequest& request,
                                       grpc::ServerWriter<pb::SweepResponse>* writer) {
  absl::StatusOr<int> total = CountSweepPoints(request, options_.max_sweep_points);
  if (!total.ok()) return ToGrpc(total.status());

  // Every point is checked before any runs, so a typo in the grid costs no device time.
  for (int i = 0; i < *total; ++i) {
    absl::StatusOr<CheckedRequest> checked =
        CheckRunRequest(SweepPointRequest(request, i), backends_, options_);
    if (!checked.ok()) {
      return ToGrpc(WithPrefix(
          checked.status(),
          absl::StrCat("sweep point ", i, " (", DescribeSweepPoint(request, i), "): base.")));
    }
  }

  const Caller caller = CallerOf(principal, *context);
  int parallel = 1;
  if (request.spread_devices() && !request.base().has_device_index()) {
    for (const auto& backend : backends_) {
      parallel = std::max(parallel, static_cast<int>(backend->Devices().size()));
    }
  }
  return RunSweepPoints(context, caller, request, *total, std::min(parallel, *total), writer);
}

grpc::Status AttnBenchService::RunSweepPoints(grpc::ServerContext* context, const Caller& caller,
                                              const pb::SweepRequest& request, int total,
                                              int parallel,
                                              grpc::ServerWriter<pb::SweepResponse>* writer) {
  absl::Mutex mu;  // guards the writer and everything below
  int next = 0;
  int completed = 0;
  absl::Status failure;  // the first error that ends the sweep
  const InterruptCheck client = FromContext(context);
  // A point also stops at its next iteration boundary once another point ended the sweep.
  const InterruptCheck interrupted = [&]() -> absl::Status {
    if (absl::Status s = client(); !s.ok()) return s;
    absl::MutexLock lock(&mu);
    if (!failure.ok()) return absl::CancelledError("another sweep point failed");
    return absl::OkStatus();
  };
  auto worker = [&]() {
    while (true) {
      int i;
      {
        absl::MutexLock lock(&mu);
        if (!failure.ok() || next >= total) return;
        i = next++;
      }
      if (absl::Status s = client(); !s.ok()) {
        absl::MutexLock lock(&mu);
        if (failure.ok()) {
          failure = WithPrefix(s, absl::StrCat("sweep stopped before point ", i, ": "));
        }
        return;
      }
      const absl::Time received = absl::Now();
      absl::StatusOr<CheckedRequest> checked =
          CheckRunRequest(SweepPointRequest(request, i), backends_, options_);
      absl::StatusOr<RunOutcome> outcome =
          checked.ok()
              ? executor_.Execute(*checked, caller, OutputDelivery::kInline, interrupted, received)
              : absl::StatusOr<RunOutcome>(checked.status());
      absl::MutexLock lock(&mu);
      if (!failure.ok()) return;  // the sweep already ended; this point is not reported
      pb::SweepResponse response;
      response.set_point_index(i);
      response.set_total_points(total);
      response.set_completed_points(++completed);
      if (outcome.ok()) {
        *response.mutable_result() = std::move(outcome->result);
      } else {
        const absl::Status& s = outcome.status();
        const bool interrupted_now = s.code() == absl::StatusCode::kCancelled ||
                                     s.code() == absl::StatusCode::kDeadlineExceeded;
        if (!request.continue_on_error() || interrupted_now) {
          failure = WithPrefix(
              s, absl::StrCat("sweep point ", i, " (", DescribeSweepPoint(request, i), "): "));
          return;
        }
        response.mutable_error()->set_code(static_cast<int>(s.code()));
        response.mutable_error()->set_message(std::string(s.message()));
      }
      if (!writer->Write(response)) {
        failure = absl::CancelledError("client stopped reading the stream");
        return;
      }
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(parallel - 1);
  for (int t = 1; t < parallel; ++t) threads.emplace_back(worker);
  worker();
  for (std::thread& t : threads) t.join();
  return ToGrpc(failure);
}

grpc::Status AttnBenchService::GetCapabilities(grpc::ServerContext* context,
                                               const grpc::ByteBuffer* bytes,
                                               pb::GetCapabilitiesResponse* response) {
  // GetCapabilitiesRequest has no fields yet, but its bytes must still parse.
  return Serve<pb::GetCapabilitiesRequest>(
      metrics_.get(), *authenticator_, "GetCapabilities", *context, *bytes,
      [&](const Principal&, const pb::GetCapabilitiesRequest&) {
        response->set_server_version(ATTNBENCH_VERSION);
        for (const auto& backend : backends_) {
          pb::BackendCapabilities* caps = response->add_backends();
          caps->set_name(backend->Name());
          caps->set_description(backend->Description());
          for (const DeviceDescription& device : backend->Devices()) {
            DeviceToProto(device, caps->add_devices());
          }
          SupportToProto(backend->Support(), caps);
        }
        pb::ServerLimits* limits = response->mutable_limits();
        limits->set_max_request_bytes(options_.max_request_bytes);
        limits->set_max_inline_output_bytes(options_.max_inline_output_bytes);
        limits->set_max_sweep_points(options_.max_sweep_points);
        limits->set_max_iterations(options_.max_iterations);
        limits->set_max_duration_seconds(options_.max_duration_seconds);
        limits->set_max_message_bytes(options_.max_message_bytes);
        const SchedulerLimits& scheduling = options_.scheduling;
        limits->set_max_queued_per_tenant(scheduling.max_queued_per_tenant);
        limits->set_max_queued_total(scheduling.max_queued_total);
        limits->set_tenant_device_seconds_per_window(scheduling.tenant_device_seconds_per_window);
        limits->set_tenant_window_seconds(absl::ToDoubleSeconds(scheduling.tenant_window));
        limits->set_max_request_flops_cpu(options_.max_request_flops_cpu);
        limits->set_max_request_flops_gpu(options_.max_request_flops_gpu);
        return grpc::Status::OK;
      });
}

}  // namespace attnbench::server
