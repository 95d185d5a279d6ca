#include "client/names.h"

#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace attnbench::client {
namespace {

template <typename Enum>
using NameTable = std::vector<std::pair<absl::string_view, Enum>>;

const NameTable<v1::DType>& DTypes() {
  static const auto* table = new NameTable<v1::DType>{{"fp32", v1::DTYPE_FLOAT32},
                                                      {"fp16", v1::DTYPE_FLOAT16},
                                                      {"bf16", v1::DTYPE_BFLOAT16},
                                                      {"fp8", v1::DTYPE_FLOAT8_E4M3}};
  return *table;
}

const NameTable<v1::Phase>& Phases() {
  static const auto* table = new NameTable<v1::Phase>{{"prefill", v1::PHASE_PREFILL},
                                                      {"decode", v1::PHASE_DECODE},
                                                      {"backward", v1::PHASE_BACKWARD}};
  return *table;
}

const NameTable<v1::Scope>& Scopes() {
  static const auto* table =
      new NameTable<v1::Scope>{{"core", v1::SCOPE_CORE}, {"layer", v1::SCOPE_LAYER}};
  return *table;
}

const NameTable<v1::CacheFormat>& CacheFormats() {
  static const auto* table = new NameTable<v1::CacheFormat>{{"native", v1::CACHE_FORMAT_NATIVE},
                                                            {"int8", v1::CACHE_FORMAT_INT8},
                                                            {"int4", v1::CACHE_FORMAT_INT4}};
  return *table;
}

const NameTable<v1::CacheMode>& CacheModes() {
  static const auto* table =
      new NameTable<v1::CacheMode>{{"cold", v1::CACHE_MODE_COLD}, {"warm", v1::CACHE_MODE_WARM}};
  return *table;
}

const NameTable<v1::CheckMode>& CheckModes() {
  static const auto* table = new NameTable<v1::CheckMode>{
      {"off", v1::CHECK_MODE_OFF}, {"auto", v1::CHECK_MODE_AUTO}, {"full", v1::CHECK_MODE_FULL}};
  return *table;
}

const NameTable<v1::AlibiSchedule>& AlibiSchedules() {
  static const auto* table = new NameTable<v1::AlibiSchedule>{
      {"geometric", v1::ALIBI_SCHEDULE_GEOMETRIC}, {"harmonic", v1::ALIBI_SCHEDULE_HARMONIC}};
  return *table;
}

const NameTable<v1::BackwardTiming>& BackwardTimings() {
  static const auto* table =
      new NameTable<v1::BackwardTiming>{{"backward_only", v1::BACKWARD_TIMING_BACKWARD_ONLY},
                                        {"training_step", v1::BACKWARD_TIMING_TRAINING_STEP}};
  return *table;
}

template <typename Enum>
std::string Names(const NameTable<Enum>& table) {
  return absl::StrJoin(
      table, "|", [](std::string* out, const auto& entry) { absl::StrAppend(out, entry.first); });
}

template <typename Enum>
absl::StatusOr<Enum> Parse(const NameTable<Enum>& table, absl::string_view what,
                           absl::string_view name) {
  for (const auto& [entry_name, value] : table) {
    if (entry_name == name) return value;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown ", what, " '", name, "' (expected ", Names(table), ")"));
}

template <typename Enum>
std::string Name(const NameTable<Enum>& table, Enum value) {
  for (const auto& [entry_name, entry_value] : table) {
    if (entry_value == value) return std::string(entry_name);
  }
  return "unspecified";
}

}  // namespace

absl::StatusOr<v1::DType> ParseDType(absl::string_view name) {
  return Parse(DTypes(), "dtype", name);
}
std::string DTypeName(v1::DType dtype) { return Name(DTypes(), dtype); }
absl::StatusOr<v1::Phase> ParsePhase(absl::string_view name) {
  return Parse(Phases(), "phase", name);
}
std::string PhaseName(v1::Phase phase) { return Name(Phases(), phase); }
absl::StatusOr<v1::Scope> ParseScope(absl::string_view name) {
  return Parse(Scopes(), "scope", name);
}
std::string ScopeName(v1::Scope scope) { return Name(Scopes(), scope); }
absl::StatusOr<v1::CacheFormat> ParseCacheFormat(absl::string_view name) {
  return Parse(CacheFormats(), "cache format", name);
}
std::string CacheFormatName(v1::CacheFormat format) { return Name(CacheFormats(), format); }
absl::StatusOr<v1::CacheMode> ParseCacheMode(absl::string_view name) {
  return Parse(CacheModes(), "cache mode", name);
}
absl::StatusOr<v1::CheckMode> ParseCheckMode(absl::string_view name) {
  return Parse(CheckModes(), "check mode", name);
}
absl::StatusOr<v1::AlibiSchedule> ParseAlibiSchedule(absl::string_view name) {
  return Parse(AlibiSchedules(), "ALiBi schedule", name);
}
absl::StatusOr<v1::BackwardTiming> ParseBackwardTiming(absl::string_view name) {
  return Parse(BackwardTimings(), "backward timing", name);
}
std::string BackwardTimingName(v1::BackwardTiming timing) {
  return Name(BackwardTimings(), timing);
}

std::string DTypeNames() { return Names(DTypes()); }
std::string PhaseNames() { return Names(Phases()); }
std::string ScopeNames() { return Names(Scopes()); }
std::string CacheFormatNames() { return Names(CacheFormats()); }
std::string CacheModeNames() { return Names(CacheModes()); }
std::string CheckModeNames() { return Names(CheckModes()); }
std::string AlibiScheduleNames() { return Names(AlibiSchedules()); }
std::string BackwardTimingNames() { return Names(BackwardTimings()); }

}  // namespace attnbench::client
