// cuda_flash with a request's client expressions (score_mod / mask_mod, docs/variants.md §4b):
// the fused kernel of the route the allow-lists pick (Hopper or mma.sync), compiled at request
// time with NVRTC from the kernel headers embedded in the library at build time (no source tree
// needed at run time), with the emitted expression functions behind the kernel's hooks
// (common/expr_hooks.cuh). This unit writes the program (source, in-memory headers, the one
// instantiation's name expression, options) and its cache key; flash_rtc_launch.h loads and
// launches the image. Host code only, no device needed: the host tests compile it for sm_80 and
// sm_90a.
//
// The program: the kernel header of the route, the expression prelude and functions
// (kernels/expr/cuda_source.h), a hook type ClientExpressions calling them, and the name
// expression of the kernel instance for the request's storage, tile row and policies. Headers:
// every kernels/cuda/{common,flash} header (embedded), small stand-ins for <cuda.h> (the
// CUtensorMap type only), <cstdint> and <cstddef>, and the CUDA toolkit's include directory for
// cuda_fp16.h, cuda_bf16.h and CCCL's <cuda/ptx> (FlashRtcIncludeDirs).
#ifndef ATTNBENCH_KERNELS_CUDA_FLASH_FLASH_RTC_H_
#define ATTNBENCH_KERNELS_CUDA_FLASH_FLASH_RTC_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/expr/nvrtc_compiler.h"
#include "kernels/cuda/flash/flash.h"
#include "kernels/expr/program.h"

namespace attnbench::cuda::flash {

// "&attnbench::cuda::flash::Sm90ForwardKernel<...>" (or FlashForwardKernel) of the instance.
std::string RtcKernelExpression(const RtcInstance& instance);

// The kernel headers embedded at build time, as (include name, text), e.g.
// ("kernels/cuda/flash/kernel_sm90.cuh", "..."), and the stand-in system headers.
const std::vector<std::pair<std::string, std::string>>& FlashRtcHeaders();

// The directories NVRTC needs for the CUDA toolkit's headers: the first of $CUDA_HOME/include,
// $CUDA_PATH/include, the toolkit this library was built with, /usr/local/cuda/include that has
// cuda_fp16.h and CCCL's cuda/ptx (in it or its cccl/ subfolder), with that subfolder.
// FAILED_PRECONDITION naming the places looked at when none has them.
absl::StatusOr<std::vector<std::string>> FlashRtcIncludeDirs();

// The program for `instance` with `score_mod` and/or `mask_mod` (either may be null, not both),
// including -I for `include_dirs`.
NvrtcProgram FlashRtcProgram(const RtcInstance& instance, const expr::Program* score_mod,
                             const expr::Program* mask_mod,
                             const std::vector<std::string>& include_dirs);

// The cache key (kernels/cuda/expr/expression_module.h): the instance, the expressions as the
// expression modules key them, and the architecture.
std::string FlashRtcKey(const RtcInstance& instance, const expr::Program* score_mod,
                        const expr::Program* mask_mod, const std::string& arch);

}  // namespace attnbench::cuda::flash

#endif  // ATTNBENCH_KERNELS_CUDA_FLASH_FLASH_RTC_H_
