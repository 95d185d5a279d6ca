// The CUDA devices of this machine as attnbench sees them: described and measured once per
// process (a cuBLAS bf16 GEMM for the arithmetic ceiling, a device-to-device copy for the
// bandwidth ceiling), an L2 flush for cold timings, and the SM clock read through NVML, which is
// loaded at run time so a machine without the driver still runs the CPU service.
#ifndef ATTNBENCH_KERNELS_CUDA_BACKEND_CUDA_DEVICE_H_
#define ATTNBENCH_KERNELS_CUDA_BACKEND_CUDA_DEVICE_H_

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/backend.h"

namespace attnbench::cuda {

struct CudaDeviceInfo {
  DeviceDescription description;  // kind "cuda", peak_tflops and peak_gbps measured
  uint64_t l2_bytes = 0;
  int cc_major = 0;
  int cc_minor = 0;
  int smem_optin_bytes = 0;  // dynamic shared memory one block may opt into
};

// Every visible device (empty without a driver or device), measured on the first call.
const std::vector<CudaDeviceInfo>& CudaDevices();

// Evicts the L2 of the current device by writing a buffer twice its size on `stream`, outside
// any timed region. The buffer is allocated once per device on first use.
absl::Status FlushL2(int device, cudaStream_t stream);

// The SM clock of `device` in MHz now, or 0 when NVML is unavailable.
int SmClockMhz(int device);

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_BACKEND_CUDA_DEVICE_H_
