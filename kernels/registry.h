// The backends this build and machine offer: the CPU reference always, the CUDA backends when
// compiled in and a device is present. The server owns what this returns. Also what the server
// reads of the CUDA backends' shared compiled-expression cache, without CUDA types.
#ifndef ATTNBENCH_KERNELS_REGISTRY_H_
#define ATTNBENCH_KERNELS_REGISTRY_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "kernels/backend.h"

namespace attnbench {

struct RegistryOptions {
  int cpu_threads = 0;  // 0: all hardware threads
};

std::vector<std::unique_ptr<Backend>> CreateBackends(const RegistryOptions& options);

// The cache of compiled score_mod / mask_mod images the CUDA backends share
// (kernels/cuda/expr/expression_module.h), as the server's metrics and log see it, without
// CUDA types. In a build without CUDA the counters stay zero and the log is never called.
struct ExpressionCacheCounters {
  uint64_t hits = 0, misses = 0, evictions = 0, failures = 0;  // failures are misses too
  double compile_seconds = 0;                                  // NVRTC time, summed over misses
  uint64_t entries = 0;
};
ExpressionCacheCounters ExpressionCacheCountersNow();
// Receives each failed compile's status and NVRTC log (kept from the client) on the thread that
// compiled; an empty function drops them.
void SetExpressionCompileFailureLog(
    std::function<void(const absl::Status& status, const std::string& log)> log);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_REGISTRY_H_
