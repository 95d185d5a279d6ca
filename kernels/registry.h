// The backends this build and machine offer: the CPU reference always, the CUDA backends when
// compiled in and a device is present. The server owns what this returns.
#ifndef ATTNBENCH_KERNELS_REGISTRY_H_
#define ATTNBENCH_KERNELS_REGISTRY_H_

#include <memory>
#include <vector>

#include "kernels/backend.h"

namespace attnbench {

struct RegistryOptions {
  int cpu_threads = 0;  // 0: all hardware threads
};

std::vector<std::unique_ptr<Backend>> CreateBackends(const RegistryOptions& options);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_REGISTRY_H_
