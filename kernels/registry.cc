#include "kernels/registry.h"

#include "kernels/cpu_backend.h"

namespace attnbench {

std::vector<std::unique_ptr<Backend>> CreateBackends(const RegistryOptions& options) {
  std::vector<std::unique_ptr<Backend>> backends;
  backends.push_back(MakeCpuReferenceBackend(options.cpu_threads));
  // CUDA backends register here once they exist: guarded by ATTNBENCH_HAVE_CUDA (a compile
  // definition of this library when CMake finds nvcc) and by a device being present at run time.
  return backends;
}

}  // namespace attnbench
