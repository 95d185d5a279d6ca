// What each kernel of cuda_flash runs, declared as allow-lists and checked in one function per
// kernel. A request runs on the first kernel that accepts it (the Hopper kernel, then mma.sync);
// anything neither accepts is refused with the reason. The lists are what GetCapabilities reports
// (BackendCapabilities.kernels) and what the host support test walks, so a mask, modifier, dtype
// or head dim a kernel does not name can never reach it. Plain C++: no device needed.
#ifndef ATTNBENCH_KERNELS_CUDA_FLASH_SUPPORT_H_
#define ATTNBENCH_KERNELS_CUDA_FLASH_SUPPORT_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda/common/attention_args.h"

namespace attnbench::cuda::flash {

// The device a kernel would run on, as far as support depends on it.
struct FlashDevice {
  int cc_major = 0;
  int cc_minor = 0;
  bool sm90_code = false;    // the binary carries sm_90a code for the Hopper kernel
  bool tma = false;          // the driver's tensor-map encoder was found
  int smem_optin_bytes = 0;  // dynamic shared memory a block may opt into
};

// A kernel's allow-lists.
struct KernelAllowList {
  std::string name;  // the prefix of the kernel names results carry
  int cc_major = 0;  // compute capability: exactly this one, or (cc_minimum) at least
  int cc_minor = 0;
  bool cc_minimum = false;
  std::vector<Storage> storages;
  std::vector<MaskCode> masks;
  uint32_t modifiers = 0;                      // kModifier* bits it implements, in any combination
  std::vector<std::pair<int, int>> head_dims;  // compiled (D_qk, D_v) tiles, from configs.h
  std::vector<std::string> requirements;       // the further conditions, in words
  // The phases it computes: the forward (prefill and decode) or, when set, PHASE_BACKWARD only,
  // or PHASE_DECODE only (the decode kernel, decode.h).
  bool backward = false;
  bool decode = false;
};

const KernelAllowList& Sm90AllowList();
const KernelAllowList& Sm80AllowList();

// cuda_flash's backward (PHASE_BACKWARD) on mma.sync, sm_80 and newer (backward_sm80.cuh), and
// the forward it starts from (the mma.sync kernel's saving build). Whether cuda_flash declares
// it at all is FlashBackwardEnabled() (kFlashBackwardEnabled in support.cc, the one switch):
// when false, the backend lists no backward and refuses PHASE_BACKWARD as before, while the
// list, the refusal below and the launchers stay usable (the GPU test runs the kernel directly).
bool FlashBackwardEnabled();
const KernelAllowList& Sm80BackwardAllowList();
// "" when the backward (and its forward) run `args` on `device`, otherwise why not.
std::string Sm80BackwardRefusal(const AttentionArgs& args, const FlashDevice& device);

// "" when the kernel runs `args` on `device`, otherwise why not. Judged on sizes when the
// pointers are null (support checks run before device memory exists); pointers, when set, must
// meet the kernel's alignment too.
std::string Sm90Refusal(const AttentionArgs& args, const FlashDevice& device);
std::string Sm80Refusal(const AttentionArgs& args, const FlashDevice& device);

enum class FlashRoute { kNone, kSm90, kSm80 };
FlashRoute RouteOf(const AttentionArgs& args, const FlashDevice& device);
// "" when some kernel runs args; else every kernel's reason.
std::string FlashRefusal(const AttentionArgs& args, const FlashDevice& device);

}  // namespace attnbench::cuda::flash

#endif  // ATTNBENCH_KERNELS_CUDA_FLASH_SUPPORT_H_
