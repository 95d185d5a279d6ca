// The kernel headers cuda_flash's NVRTC builds compile (flash_rtc.h), embedded in the library at
// build time by embed_headers.cmake: every header of kernels/cuda/common and kernels/cuda/flash,
// by the include name the kernels use ("kernels/cuda/flash/kernel_sm90.cuh").
#ifndef ATTNBENCH_KERNELS_CUDA_FLASH_FLASH_RTC_EMBEDDED_H_
#define ATTNBENCH_KERNELS_CUDA_FLASH_FLASH_RTC_EMBEDDED_H_

namespace attnbench::cuda::flash {

struct EmbeddedHeader {
  const char* name;
  const char* text;
};
extern const EmbeddedHeader kEmbeddedHeaders[];
extern const int kNumEmbeddedHeaders;

}  // namespace attnbench::cuda::flash

#endif  // ATTNBENCH_KERNELS_CUDA_FLASH_FLASH_RTC_EMBEDDED_H_
