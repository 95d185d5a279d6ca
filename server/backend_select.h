// Which backend runs a request: a named one, or under "auto" (or empty) the highest-priority
// backend whose CheckSupported accepts the problem. Refusals say why for every backend, so a
// client can tell a typo from an unsupported feature.
#ifndef ATTNBENCH_SERVER_BACKEND_SELECT_H_
#define ATTNBENCH_SERVER_BACKEND_SELECT_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/backend.h"

namespace attnbench::server {

using BackendList = std::vector<std::unique_ptr<Backend>>;

// "auto" or "" asks the server to choose.
bool IsAutoBackend(absl::string_view name);

// OK for "auto", "" and registered names; INVALID_ARGUMENT listing the known names otherwise.
absl::Status CheckBackendName(const BackendList& backends, absl::string_view name);

// The backend to run `problem` (normalized and valid) on. A named backend that cannot run it
// returns its own FAILED_PRECONDITION; under auto, FAILED_PRECONDITION with each backend's
// reason when none can. device_index, when set, must exist on the backend chosen.
absl::StatusOr<Backend*> SelectBackend(const BackendList& backends, absl::string_view name,
                                       const Problem& problem, std::optional<int> device_index);

// The scheduler key of a device: "<kind>:<index>", e.g. "cpu:0", shared by every backend on it.
std::string DeviceKey(const DeviceDescription& device);

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_BACKEND_SELECT_H_
