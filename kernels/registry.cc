#include "kernels/registry.h"

#include <utility>

#include "kernels/cpu/cpu_backend.h"
#if ATTNBENCH_HAVE_CUDA
#include "kernels/cuda/backend/cuda_backend.h"
#include "kernels/cuda/expr/expression_module.h"
#endif

namespace attnbench {

std::vector<std::unique_ptr<Backend>> CreateBackends(const RegistryOptions& options) {
  std::vector<std::unique_ptr<Backend>> backends;
#if ATTNBENCH_HAVE_CUDA
  // Empty without a device, so a CUDA build still serves the CPU backend alone.
  for (std::unique_ptr<Backend>& b : MakeCudaBackends()) backends.push_back(std::move(b));
#endif
  backends.push_back(MakeCpuReferenceBackend(options.cpu_threads));
  return backends;
}

ExpressionCacheCounters ExpressionCacheCountersNow() {
  ExpressionCacheCounters c;
#if ATTNBENCH_HAVE_CUDA
  const cuda::ExpressionCacheStats s = cuda::SharedExpressionModuleCache().Stats();
  c.hits = s.hits;
  c.misses = s.misses;
  c.evictions = s.evictions;
  c.failures = s.failures;
  c.compile_seconds = s.compile_seconds;
  c.entries = s.entries;
#endif
  return c;
}

void SetExpressionCompileFailureLog(
    std::function<void(const absl::Status& status, const std::string& log)> log) {
#if ATTNBENCH_HAVE_CUDA
  cuda::SharedExpressionModuleCache().SetFailureLog(std::move(log));
#else
  (void)log;
#endif
}

}  // namespace attnbench
