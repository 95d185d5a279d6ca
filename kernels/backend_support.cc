#include "kernels/backend_support.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/spec/modifiers.h"

namespace attnbench {
namespace {

// Enum values as the proto spells them, for messages that name the client's field values.
std::string ProtoName(DType d) {
  switch (d) {
    case DType::kFloat32:
      return "DTYPE_FLOAT32";
    case DType::kFloat16:
      return "DTYPE_FLOAT16";
    case DType::kBFloat16:
      return "DTYPE_BFLOAT16";
    case DType::kFloat8E4M3:
      return "DTYPE_FLOAT8_E4M3";
    case DType::kUnspecified:
      break;
  }
  return "DTYPE_UNSPECIFIED";
}
std::string ProtoName(Phase p) {
  switch (p) {
    case Phase::kPrefill:
      return "PHASE_PREFILL";
    case Phase::kDecode:
      return "PHASE_DECODE";
    case Phase::kBackward:
      return "PHASE_BACKWARD";
    case Phase::kUnspecified:
      break;
  }
  return "PHASE_UNSPECIFIED";
}
std::string ProtoName(Scope s) {
  switch (s) {
    case Scope::kCore:
      return "SCOPE_CORE";
    case Scope::kLayer:
      return "SCOPE_LAYER";
    case Scope::kUnspecified:
      break;
  }
  return "SCOPE_UNSPECIFIED";
}
std::string ProtoName(CacheFormat f) {
  switch (f) {
    case CacheFormat::kNative:
      return "CACHE_FORMAT_NATIVE";
    case CacheFormat::kInt8:
      return "CACHE_FORMAT_INT8";
    case CacheFormat::kInt4:
      return "CACHE_FORMAT_INT4";
    case CacheFormat::kUnspecified:
      break;
  }
  return "CACHE_FORMAT_UNSPECIFIED";
}
std::string ProtoName(LayoutKind k) { return LayoutName(k); }
std::string ProtoName(MaskKind k) { return MaskName(k); }
std::string ProtoName(Modifier m) { return ModifierName(m); }

template <typename T>
bool Holds(const std::vector<T>& list, const T& value) {
  return std::find(list.begin(), list.end(), value) != list.end();
}

template <typename T>
std::string Listed(const std::vector<T>& list) {
  std::vector<std::string> names;
  for (const T& v : list) names.push_back(ProtoName(v));
  return names.empty() ? "none" : absl::StrJoin(names, ", ");
}

// FAILED_PRECONDITION for `field`=`value` unless `list` holds it.
template <typename T>
absl::Status Require(const std::vector<T>& list, const T& value, absl::string_view backend,
                     absl::string_view field) {
  if (Holds(list, value)) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat("backend ", backend, " does not support ",
                                                    field, "=", ProtoName(value),
                                                    " (supports: ", Listed(list), ")"));
}

}  // namespace

absl::Status CheckSupport(const BackendSupport& support, const Problem& problem,
                          absl::string_view backend) {
  if (absl::Status s = Require(support.dtypes, problem.dtype, backend, "spec.dtype"); !s.ok()) {
    return s;
  }
  if (absl::Status s = Require(support.phases, problem.phase, backend, "spec.phase"); !s.ok()) {
    return s;
  }
  if (absl::Status s = Require(support.scopes, problem.scope, backend, "spec.scope"); !s.ok()) {
    return s;
  }
  if (absl::Status s = Require(support.layouts, problem.layout.kind, backend, "spec.layout");
      !s.ok()) {
    return s;
  }
  if (absl::Status s = Require(support.masks, problem.mask.kind, backend, "spec.mask"); !s.ok()) {
    return s;
  }
  for (Modifier m : ModifiersOf(problem)) {
    if (absl::Status s = Require(support.modifiers, m, backend, "spec modifier"); !s.ok()) {
      return s;
    }
  }
  if (problem.deterministic && !Holds(support.deterministic_phases, problem.phase)) {
    return absl::FailedPreconditionError(
        absl::StrCat("backend ", backend, " does not run spec.phase=", ProtoName(problem.phase),
                     " deterministically (measurement.deterministic; deterministic phases: ",
                     Listed(support.deterministic_phases), ")"));
  }
  if (problem.phase == Phase::kBackward && problem.scope == Scope::kLayer &&
      !support.layer_backward) {
    return absl::FailedPreconditionError(
        absl::StrCat("backend ", backend,
                     " does not support spec.phase=PHASE_BACKWARD with spec.scope=SCOPE_LAYER "
                     "(its backward is core scope only: dQ, dK, dV)"));
  }
  if (problem.phase == Phase::kDecode) {
    const KvCache& c = problem.kv_cache;
    if (c.paged && !support.paged_kv_cache) {
      return absl::FailedPreconditionError(absl::StrCat("backend ", backend,
                                                        " does not support a paged decode cache "
                                                        "(spec.kv_cache.paging)"));
    }
    // With SAQ bands the format lives in each band (the top-level one stays unspecified).
    if (c.saq_bands.empty()) {
      if (absl::Status s =
              Require(support.cache_formats, c.format, backend, "spec.kv_cache.format");
          !s.ok()) {
        return s;
      }
    }
    for (const SaqBand& band : c.saq_bands) {
      if (absl::Status s = Require(support.cache_formats, band.format, backend,
                                   "spec.kv_cache.saq_bands.format");
          !s.ok()) {
        return s;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace attnbench
