// Translation between attnbench.v1 messages and kernels' plain C++ types. The kernels layer knows
// no protobuf, so every field crosses here, by name: specs in (with unknown enum values refused),
// normalized specs and every kind of result out.
#ifndef ATTNBENCH_SERVER_CONVERT_H_
#define ATTNBENCH_SERVER_CONVERT_H_

#include <vector>

#include "absl/status/statusor.h"
#include "attnbench/v1/attnbench.pb.h"
#include "kernels/backend.h"
#include "kernels/reference/check.h"
#include "kernels/spec/counting.h"
#include "kernels/spec/problem.h"
#include "kernels/spec/tensors.h"
#include "server/stats.h"

namespace attnbench::server {

namespace pb = ::attnbench::v1;

// Enums. FromProto refuses values outside the proto's enum (proto3 keeps unknown numbers) with
// INVALID_ARGUMENT naming `field`; UNSPECIFIED maps to kUnspecified.
absl::StatusOr<DType> DTypeFromProto(int value, absl::string_view field);
absl::StatusOr<Phase> PhaseFromProto(int value, absl::string_view field);
absl::StatusOr<Scope> ScopeFromProto(int value, absl::string_view field);
absl::StatusOr<AlibiSchedule> AlibiScheduleFromProto(int value, absl::string_view field);
absl::StatusOr<CacheFormat> CacheFormatFromProto(int value, absl::string_view field);
pb::DType DTypeToProto(DType dtype);
pb::Phase PhaseToProto(Phase phase);
pb::Scope ScopeToProto(Scope scope);
pb::AlibiSchedule AlibiScheduleToProto(AlibiSchedule schedule);
pb::CacheFormat CacheFormatToProto(CacheFormat format);

// AttentionSpec -> Problem, field by field; presence of a sub-message (rope, alibi, softcap,
// paging, inputs, each of inputs' tensors grad_output included) becomes `enabled`/`paged`/an
// engaged optional. Fails only on unknown enum values; every other rule is ValidateProblem's
// (and CheckRunRequest's for what involves measurement settings: Problem.training_step comes
// from MeasurementSettings.backward_timing, which is not part of the spec).
absl::StatusOr<Problem> ProblemFromProto(const pb::AttentionSpec& spec);

// Problem -> AttentionSpec. Results echo the normalized spec without the client's input bytes
// (dtype and shape only), because sending megabytes of inputs back helps nobody; round trips
// that need the bytes pass include_input_data.
pb::AttentionSpec ProblemToProto(const Problem& problem, bool include_input_data = false);

// Results.
void WorkCountsToProto(const WorkCounts& counts, pb::WorkCounts* out);
// Every field, and one TensorCheck per report.tensors entry, in order, whatever its name.
void CorrectnessToProto(const CorrectnessReport& report, pb::Correctness* out);
void TensorCheckToProto(const TensorCheckReport& report, pb::TensorCheck* out);
void OutputSummaryToProto(const OutputSummary& summary, pb::OutputSummary* out);
void DeviceToProto(const DeviceDescription& device, pb::DeviceInfo* out);
void SupportToProto(const BackendSupport& support, pb::BackendCapabilities* out);
void HeadMapToProto(const std::vector<HeadPair>& map,
                    google::protobuf::RepeatedPtrField<pb::HeadLayout::HeadPair>* out);
void TimingToProto(const TimingStats& stats, const std::vector<double>& samples_ms,
                   bool include_samples, pb::TimingStats* out);
// Encodes the values as little-endian elements of tensor.dtype.
void TensorToProto(const FloatTensor& tensor, pb::Tensor* out);
// The RunResult field of a gradient by its GradientSlot name ("dq", ..., "dw_o"); null for any
// other name.
pb::Tensor* MutableGradientField(pb::RunResult* result, absl::string_view name);

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_CONVERT_H_
