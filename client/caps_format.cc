// `attnbench caps`: the capabilities as text (per backend its devices, allow-lists, kernels and
// limitations) or CSV.
#include "client/caps_format.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/names.h"

namespace attnbench::client {
namespace {

std::string DTypes(const v1::BackendCapabilities& backend) {
  std::vector<std::string> names;
  for (int dtype : backend.dtypes()) names.push_back(DTypeName(static_cast<v1::DType>(dtype)));
  return absl::StrJoin(names, " ");
}

std::string Phases(const v1::BackendCapabilities& backend) {
  std::vector<std::string> names;
  for (int phase : backend.phases()) names.push_back(PhaseName(static_cast<v1::Phase>(phase)));
  return absl::StrJoin(names, " ");
}

// The phases a request with --deterministic may ask of the backend.
std::string DeterministicPhases(const v1::BackendCapabilities& backend) {
  std::vector<std::string> names;
  for (int phase : backend.deterministic_phases()) {
    names.push_back(PhaseName(static_cast<v1::Phase>(phase)));
  }
  return names.empty() ? "none" : absl::StrJoin(names, " ");
}

std::string Scopes(const v1::BackendCapabilities& backend) {
  std::vector<std::string> names;
  for (int scope : backend.scopes()) names.push_back(ScopeName(static_cast<v1::Scope>(scope)));
  return absl::StrJoin(names, " ");
}

std::string CacheFormats(const v1::BackendCapabilities& backend) {
  std::vector<std::string> names;
  for (int format : backend.cache_formats()) {
    names.push_back(CacheFormatName(static_cast<v1::CacheFormat>(format)));
  }
  return absl::StrJoin(names, " ");
}

std::string OrAny(const std::string& list) { return list.empty() ? "-" : list; }

// One kernel of a backend with several, on one line: its allow-lists in the order a request is
// matched against them (compute capability, dtype, phase, mask, modifiers, head dims), then its
// requirements in words on the lines below. Empty lists read as the proto defines them: no
// compute capability or head-dim pair means any, no modifier means none allowed.
std::string KernelLines(const v1::KernelSupport& k) {
  std::vector<std::string> dtypes, phases, dims;
  for (int dtype : k.dtypes()) dtypes.push_back(DTypeName(static_cast<v1::DType>(dtype)));
  for (int phase : k.phases()) phases.push_back(PhaseName(static_cast<v1::Phase>(phase)));
  for (const v1::HeadDimPair& d : k.head_dims()) dims.push_back(absl::StrCat(d.qk(), "/", d.v()));
  std::string out = absl::StrCat(
      "  kernel    ", k.name(), ": sm ",
      k.compute_capabilities().empty() ? "any" : absl::StrJoin(k.compute_capabilities(), " "), "; ",
      OrAny(absl::StrJoin(dtypes, " ")), "; ", OrAny(absl::StrJoin(phases, " ")), "; masks ",
      OrAny(absl::StrJoin(k.masks(), " ")), "; modifiers ",
      k.modifiers().empty() ? "none" : absl::StrJoin(k.modifiers(), " "), "; head dims ",
      dims.empty() ? "any" : absl::StrJoin(dims, " "), "\n");
  for (const std::string& r : k.requirements()) {
    absl::StrAppend(&out, "            requires ", r, "\n");
  }
  return out;
}

std::string DeviceLine(const v1::DeviceInfo& d) {
  std::string line = absl::StrFormat("#%d %s (%s", d.index(), d.name(), d.kind());
  if (d.compute_units() > 0) absl::StrAppend(&line, ", ", d.compute_units(), " compute units");
  if (d.memory_bytes() > 0) {
    absl::StrAppend(&line,
                    absl::StrFormat(", %.1f GiB", d.memory_bytes() / (1024.0 * 1024 * 1024)));
  }
  if (!d.compute_capability().empty()) absl::StrAppend(&line, ", sm ", d.compute_capability());
  if (d.peak_tflops() > 0) {
    absl::StrAppend(&line, absl::StrFormat(", %.3f TFLOP/s", d.peak_tflops()));
  }
  if (d.peak_gbps() > 0) absl::StrAppend(&line, absl::StrFormat(", %.1f GB/s", d.peak_gbps()));
  return line + ")";
}

}  // namespace

std::string FormatCapabilitiesText(const v1::GetCapabilitiesResponse& caps) {
  std::string out = absl::StrCat("server ", caps.server_version(), "\n");
  const v1::ServerLimits& l = caps.limits();
  absl::StrAppend(&out, "limits: max_request_bytes=", l.max_request_bytes(),
                  " max_inline_output_bytes=", l.max_inline_output_bytes(),
                  " max_message_bytes=", l.max_message_bytes(),
                  " max_sweep_points=", l.max_sweep_points(),
                  " max_iterations=", l.max_iterations(),
                  " max_duration_seconds=", l.max_duration_seconds(), "\n");
  for (const v1::BackendCapabilities& b : caps.backends()) {
    absl::StrAppend(&out, "\nbackend ", b.name(), ": ", b.description(), "\n");
    for (const v1::DeviceInfo& device : b.devices()) {
      absl::StrAppend(&out, "  device    ", DeviceLine(device), "\n");
    }
    absl::StrAppend(&out, "  dtypes    ", OrAny(DTypes(b)), "\n");
    absl::StrAppend(&out, "  phases    ", OrAny(Phases(b)),
                    " (deterministic: ", DeterministicPhases(b), ")\n");
    absl::StrAppend(&out, "  scopes    ", OrAny(Scopes(b)),
                    b.layer_backward() ? " (backward at layer scope too)" : "", "\n");
    absl::StrAppend(&out, "  layouts   ", OrAny(absl::StrJoin(b.layouts(), " ")), "\n");
    absl::StrAppend(&out, "  masks     ", OrAny(absl::StrJoin(b.masks(), " ")), "\n");
    absl::StrAppend(&out, "  modifiers ", OrAny(absl::StrJoin(b.modifiers(), " ")), "\n");
    absl::StrAppend(&out, "  kv cache  ", OrAny(CacheFormats(b)),
                    b.paged_kv_cache() ? ", paged" : "", "\n");
    absl::StrAppend(&out, "  head dims ",
                    b.head_dims().empty() ? "any" : absl::StrJoin(b.head_dims(), " "), "\n");
    // Most specific first, as a request is matched against them.
    for (const v1::KernelSupport& kernel : b.kernels()) absl::StrAppend(&out, KernelLines(kernel));
    for (const std::string& limitation : b.limitations()) {
      absl::StrAppend(&out, "  limit     ", limitation, "\n");
    }
  }
  return out;
}

std::string FormatCapabilitiesCsv(const v1::GetCapabilitiesResponse& caps) {
  std::string out =
      "backend,device_index,device_name,device_kind,compute_units,memory_bytes,peak_tflops,"
      "peak_gbps,dtypes,phases,scopes,layouts,masks,modifiers,kernels\n";
  for (const v1::BackendCapabilities& b : caps.backends()) {
    // Kernel names may hold spaces ("hopper wgmma+tma"): ';' separates them.
    std::vector<std::string> kernels;
    for (const v1::KernelSupport& k : b.kernels()) kernels.push_back(k.name());
    const std::string lists =
        absl::StrJoin({DTypes(b), Phases(b), Scopes(b), absl::StrJoin(b.layouts(), " "),
                       absl::StrJoin(b.masks(), " "), absl::StrJoin(b.modifiers(), " "),
                       absl::StrJoin(kernels, ";")},
                      ",");
    if (b.devices().empty()) {
      absl::StrAppend(&out, b.name(), ",,,,,,,,", lists, "\n");
      continue;
    }
    for (const v1::DeviceInfo& d : b.devices()) {
      absl::StrAppend(&out, b.name(), ",", d.index(), ",", d.name(), ",", d.kind(), ",",
                      d.compute_units(), ",", d.memory_bytes(), ",",
                      absl::StrFormat("%.6g", d.peak_tflops()), ",",
                      absl::StrFormat("%.6g", d.peak_gbps()), ",", lists, "\n");
    }
  }
  return out;
}

}  // namespace attnbench::client
