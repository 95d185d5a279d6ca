// cpu_reference: the forward pass of every variant on the CPU, in float32 math with a streaming
// (online) softmax over key blocks, so memory stays O(S * D) and long sequences run;
// multi-threaded over batch x heads. PHASE_BACKWARD (core scope, not float8) runs
// cpu_backward_workload.h. Times with the steady clock.
#ifndef ATTNBENCH_KERNELS_CPU_CPU_BACKEND_H_
#define ATTNBENCH_KERNELS_CPU_CPU_BACKEND_H_

#include <memory>

#include "kernels/backend.h"

namespace attnbench {

inline constexpr char kCpuReferenceBackend[] = "cpu_reference";

std::unique_ptr<Backend> MakeCpuReferenceBackend(int num_threads);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_CPU_CPU_BACKEND_H_
