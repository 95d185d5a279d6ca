// Entry points of the CUDA attention kernels, one per kernel family (each in its own .cu file).
// Host code calls these with AttentionArgs whose pointers are device memory; they enqueue on
// `stream` and return the launch status without synchronizing. Plain CUDA runtime types only.
#ifndef ATTNBENCH_KERNELS_CUDA_FLASH_LAUNCH_H_
#define ATTNBENCH_KERNELS_CUDA_FLASH_LAUNCH_H_

#include <cuda_runtime.h>

#include <string>

#include "kernels/cuda/common/attention_args.h"

namespace attnbench::cuda {

// reference_attention.cu: one query row at a time in float32, every storage type, every mask and
// modifier. Simple and obviously right; the fast paths are checked against it.
cudaError_t LaunchReferenceAttention(const AttentionArgs& args, cudaStream_t stream);

// flash_attention.cu: the fused FlashAttention-style forward on tensor cores (sm_80 and newer).
// Empty when the kernel can run `args` on a device of compute capability `cc_major.cc_minor`,
// otherwise why not ("dtype float32: the fused kernel needs float16 or bfloat16").
std::string FlashUnsupportedReason(const AttentionArgs& args, int cc_major, int cc_minor);
cudaError_t LaunchFlashAttention(const AttentionArgs& args, cudaStream_t stream);
// The kernel LaunchFlashAttention runs for `args` on such a device, with its tile configuration
// ("hopper wgmma+tma D=128 Br=128 Bc=128 stages=2"), for results to say what was timed.
std::string FlashKernelName(const AttentionArgs& args, int cc_major, int cc_minor);

// flash_hopper.cu: the same forward on Hopper's wgmma and TMA, for the requests HopperRuns
// accepts (LaunchFlashAttention routes them there by itself; callers outside bench/ never need
// these two).
bool HopperRuns(const AttentionArgs& args, int cc_major, int cc_minor);
std::string HopperKernelName(const AttentionArgs& args);
// kPersistent: one block per multiprocessor looping over the query tiles; kPerTile: one block
// per tile; kAuto: persistent where every tile has the same work and the loop is short (no mask,
// S_kv <= 2048: +4-14% at S = 1k, D = 128 on an H100; at 4k the two measured within noise), per
// tile otherwise (a static split of causal tiles over persistent blocks was 5-20% slower).
// bench/flash_dev compares the forced grids (bench/flash_dev/NOTES.md, Hopper round).
enum class HopperGrid { kAuto, kPerTile, kPersistent };
cudaError_t LaunchHopperAttention(const AttentionArgs& args, cudaStream_t stream,
                                  HopperGrid grid = HopperGrid::kAuto);

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_FLASH_LAUNCH_H_
