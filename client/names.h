// The CLI's short names for the proto's enums ("fp16", "decode", "int8", ...), in both directions.
// One table per enum, so that parsing, printing and --help never disagree.
#ifndef ATTNBENCH_CLIENT_NAMES_H_
#define ATTNBENCH_CLIENT_NAMES_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "attnbench/v1/attnbench.pb.h"

namespace attnbench::client {

// Each Parse* returns InvalidArgument listing the accepted names; each *Name returns the short
// name, or "unspecified" for the zero value.
absl::StatusOr<v1::DType> ParseDType(absl::string_view name);
std::string DTypeName(v1::DType dtype);
absl::StatusOr<v1::Phase> ParsePhase(absl::string_view name);
std::string PhaseName(v1::Phase phase);
absl::StatusOr<v1::Scope> ParseScope(absl::string_view name);
std::string ScopeName(v1::Scope scope);
absl::StatusOr<v1::CacheFormat> ParseCacheFormat(absl::string_view name);
std::string CacheFormatName(v1::CacheFormat format);
absl::StatusOr<v1::CacheMode> ParseCacheMode(absl::string_view name);
absl::StatusOr<v1::CheckMode> ParseCheckMode(absl::string_view name);
absl::StatusOr<v1::AlibiSchedule> ParseAlibiSchedule(absl::string_view name);
absl::StatusOr<v1::BackwardTiming> ParseBackwardTiming(absl::string_view name);
std::string BackwardTimingName(v1::BackwardTiming timing);

// The accepted names of an enum, joined with '|' (for --help and error messages).
std::string DTypeNames();
std::string PhaseNames();
std::string ScopeNames();
std::string CacheFormatNames();
std::string CacheModeNames();
std::string CheckModeNames();
std::string AlibiScheduleNames();
std::string BackwardTimingNames();

}  // namespace attnbench::client

#endif  // ATTNBENCH_CLIENT_NAMES_H_
