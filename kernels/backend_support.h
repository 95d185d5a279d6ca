// The one check of a problem against a backend's allow-lists (BackendSupport: dtypes, phases,
// scopes, the backward at layer scope, layouts, masks, modifiers, decode cache formats and
// paging). Every backend's
// CheckSupported starts here, so a variant a backend does not list is refused by name instead of
// being run as something else, and GetCapabilities reports exactly what is checked.
#ifndef ATTNBENCH_KERNELS_BACKEND_SUPPORT_H_
#define ATTNBENCH_KERNELS_BACKEND_SUPPORT_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "kernels/backend.h"
#include "kernels/spec/problem.h"

namespace attnbench {

// OK when every axis of the normalized problem is in `support`'s lists; otherwise
// FAILED_PRECONDITION "backend <name> does not support <proto field>=<value> (supports: ...)".
absl::Status CheckSupport(const BackendSupport& support, const Problem& problem,
                          absl::string_view backend);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_BACKEND_SUPPORT_H_
