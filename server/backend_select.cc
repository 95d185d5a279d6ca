#include "server/backend_select.h"

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace attnbench::server {
namespace {

// A client's backend name as an error message quotes it: escaped and cut short, because a status
// message travels in an HTTP/2 trailer that clients refuse beyond 8-16 KiB (and with it, in gRPC
// 1.51, the other calls on the connection).
std::string Quoted(absl::string_view name) {
  constexpr size_t kShown = 64;
  std::string out = absl::StrCat("\"", absl::CHexEscape(name.substr(0, kShown)), "\"");
  if (name.size() > kShown) absl::StrAppend(&out, "... (", name.size(), " bytes)");
  return out;
}

std::vector<std::string> Names(const BackendList& backends) {
  std::vector<std::string> names;
  for (const auto& b : backends) names.push_back(b->Name());
  return names;
}

bool HasDevice(const Backend& backend, std::optional<int> device_index) {
  const int count = static_cast<int>(backend.Devices().size());
  if (!device_index.has_value()) return count > 0;
  return *device_index >= 0 && *device_index < count;
}

}  // namespace

bool IsAutoBackend(absl::string_view name) { return name.empty() || name == "auto"; }

absl::Status CheckBackendName(const BackendList& backends, absl::string_view name) {
  if (IsAutoBackend(name)) return absl::OkStatus();
  for (const auto& b : backends) {
    if (b->Name() == name) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat("backend: unknown backend ", Quoted(name),
                                                 "; known: auto, ",
                                                 absl::StrJoin(Names(backends), ", ")));
}

absl::StatusOr<Backend*> SelectBackend(const BackendList& backends, absl::string_view name,
                                       const Problem& problem, std::optional<int> device_index) {
  if (absl::Status s = CheckBackendName(backends, name); !s.ok()) return s;
  if (!IsAutoBackend(name)) {
    for (const auto& b : backends) {
      if (b->Name() != name) continue;
      if (!HasDevice(*b, device_index)) {
        return absl::InvalidArgumentError(absl::StrCat("device_index: backend ", name, " has ",
                                                       b->Devices().size(), " device(s), no index ",
                                                       device_index.value_or(0)));
      }
      if (absl::Status s = b->CheckSupported(problem); !s.ok()) return s;
      return b.get();
    }
  }
  // Stable sort keeps registry order among equal priorities, so auto is deterministic.
  std::vector<Backend*> order;
  for (const auto& b : backends) order.push_back(b.get());
  std::stable_sort(order.begin(), order.end(), [](const Backend* a, const Backend* b) {
    return a->Support().auto_priority > b->Support().auto_priority;
  });
  std::vector<std::string> reasons;
  for (Backend* b : order) {
    if (!HasDevice(*b, device_index)) {
      reasons.push_back(absl::StrCat(b->Name(), ": no device ", device_index.value_or(0)));
      continue;
    }
    absl::Status s = b->CheckSupported(problem);
    if (s.ok()) return b;
    reasons.push_back(absl::StrCat(b->Name(), ": ", s.message()));
  }
  if (device_index.has_value() && std::none_of(order.begin(), order.end(), [&](const Backend* b) {
        return HasDevice(*b, device_index);
      })) {
    return absl::InvalidArgumentError(
        absl::StrCat("device_index: no backend has device ", *device_index));
  }
  return absl::FailedPreconditionError(
      absl::StrCat("no backend supports this spec (", absl::StrJoin(reasons, "; "), ")"));
}

std::string DeviceKey(const DeviceDescription& device) {
  return absl::StrCat(device.kind, ":", device.index);
}

}  // namespace attnbench::server
