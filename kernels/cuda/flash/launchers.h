// The launchers of cuda_flash's two kernels, beneath flash.h's route: what flash.cu dispatches to
// and what bench/flash_dev calls directly to time one kernel or grid against another.
#ifndef ATTNBENCH_KERNELS_CUDA_FLASH_LAUNCHERS_H_
#define ATTNBENCH_KERNELS_CUDA_FLASH_LAUNCHERS_H_

#include <cuda.h>
#include <cuda_runtime.h>

#include <cstddef>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/backward_args.h"

namespace attnbench::cuda::flash {

// The Hopper kernel (launch_sm90.cu). kPersistent: one block per multiprocessor looping over the
// query tiles; kPerTile: one block per tile; kAuto: persistent where every tile has the same work
// and the loop is short (no mask, S_kv <= 2048: +4-14% at S = 1k, D = 128 on an H100; at 4k the
// two measured within noise) and where args carry a balanced item order (block lists: flash.h,
// ItemOrderFor), per tile otherwise (a static split of causal tiles over persistent blocks was
// 5-20% slower). bench/flash_dev/NOTES.md.
enum class Sm90Grid { kAuto, kPerTile, kPersistent };
cudaError_t LaunchSm90(const AttentionArgs& args, cudaStream_t stream,
                       Sm90Grid grid = Sm90Grid::kAuto);
// Its RoPE pre-pass (rope_keys.cu): K [B, S_kv, H_kv, D_qk] rotated by args.rope_cos_sin into
// `out`, RopeKeysBytes(args) bytes in K's layout, on `stream`. LaunchSm90 runs it under RoPE
// before the attention kernel, into args.workspace.
size_t RopeKeysBytes(const AttentionArgs& args);
cudaError_t RotateKeys(const AttentionArgs& args, void* out, cudaStream_t stream);
// What LaunchSm90 does before the kernel, shared with cuda_flash's NVRTC builds (flash_rtc.h) so
// that both launch the same grid: the tile row, persistent or not, the grid (blocks of
// kSm90Threads threads with Sm90SmemBytes of the row's dynamic shared memory) and the arguments
// the kernel takes (under RoPE K rotated into the workspace, a pre-pass this enqueues).
// `tile_lists`: the kernel walks args' tile lists (UsesTileLists(args.mask), or a mask_mod's).
struct Sm90Launch {
  int tile = -1;
  bool persistent = false;
  unsigned blocks = 0;
  AttentionArgs args;
};
cudaError_t PrepareSm90(const AttentionArgs& args, cudaStream_t stream, Sm90Grid grid,
                        bool tile_lists, Sm90Launch* launch);
// The Q, K and V tensor maps of tile row `tile` for args (encoded once per input set); false when
// the encoder is missing or refuses them.
bool Sm90TensorMaps(int tile, const AttentionArgs& args, CUtensorMap* q, CUtensorMap* k,
                    CUtensorMap* v);
// Whether this binary carries sm_90a code for it, and whether the driver's TMA encoder exists.
bool HasSm90Code();
bool HasTmaEncoder();

// The mma.sync kernel (launch_sm80.cu), and whether it runs args on its common-case build.
cudaError_t LaunchSm80(const AttentionArgs& args, cudaStream_t stream);
bool Sm80CommonBuild(const AttentionArgs& args);
// Its launch, shared with cuda_flash's NVRTC builds: the grid of tile row `tile` (blocks of
// 32 * kSm80Tiles[tile].warps threads with Sm80SmemBytes of dynamic shared memory) and the
// per-launch flags (kernel_sm80.cuh) it takes beside args.
struct FlashFlags;
dim3 Sm80Grid(const AttentionArgs& args, int tile);
FlashFlags Sm80Flags(const AttentionArgs& args);

// cuda_flash's backward on mma.sync (launch_backward_sm80.cu, backward_sm80.cuh). The forward it
// starts from: the mma.sync forward's saving build, writing O to args.o as usual and also the
// log-sum-exp and O in float32 to g.lse and g.out. The backward: D, then dQ, dK, dV into g from
// args (Q, K, V) and g (dO, O, the log-sum-exp, the inverted head map), with `workspace` holding
// Sm80BackwardWorkspaceBytes (the float32 dQ accumulator, cleared by the launch). Both enqueue on
// `stream`; cudaErrorNotSupported for head dims no tile holds, cudaErrorInvalidValue for a
// missing pointer. The caller checks support (support.h, Sm80BackwardRefusal).
cudaError_t LaunchSm80ForwardSaving(const AttentionArgs& args, const BackwardArgs& g,
                                    cudaStream_t stream);
size_t Sm80BackwardWorkspaceBytes(const AttentionArgs& args);
cudaError_t LaunchSm80Backward(const AttentionArgs& args, const BackwardArgs& g, void* workspace,
                               cudaStream_t stream);

}  // namespace attnbench::cuda::flash

#endif  // ATTNBENCH_KERNELS_CUDA_FLASH_LAUNCHERS_H_
