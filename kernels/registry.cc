#include "kernels/registry.h"

#include <utility>

#include "kernels/cpu/cpu_backend.h"
#if ATTNBENCH_HAVE_CUDA
#include "kernels/cuda/backend/cuda_backend.h"
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

}  // namespace attnbench
