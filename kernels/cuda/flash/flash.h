// Entry points of cuda_flash, the fused attention forward, for host code: which kernel runs a
// request on a device (support.h decides, from allow-lists), its name with the tile
// configuration, the block-list tiles it needs built, and the launch. Plain CUDA runtime types.
#ifndef ATTNBENCH_KERNELS_CUDA_FLASH_FLASH_H_
#define ATTNBENCH_KERNELS_CUDA_FLASH_FLASH_H_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/backward_args.h"
#include "kernels/cuda/flash/support.h"

namespace attnbench::cuda::flash {

// The current device as support.h sees it (compute capability, sm_90a code in this binary, the
// TMA encoder, shared memory), queried once per device.
FlashDevice CurrentDevice();
// The same for a device of compute capability cc_major.cc_minor with this binary and driver (the
// backends ask before selecting a device).
FlashDevice DeviceOf(int cc_major, int cc_minor, int smem_optin_bytes);

// The kernel that runs `args` on `device`, with its tile configuration and policies, e.g.
// "hopper wgmma+tma D=128/128 Br=128 Bc=128 stages=2 +alibi +rope"; "" when none does.
std::string KernelName(const AttentionArgs& args, const FlashDevice& device);

// Block-sparse masks on the Hopper kernel walk precomputed lists of kept K/V tiles
// (AttentionArgs::block_tiles): the tile size (query rows, keys) to build them for, or {0, 0}
// when the kernel that runs `args` needs none.
struct ListTiles {
  int query = 0;
  int kv = 0;
};
ListTiles BlockListTiles(const AttentionArgs& args, const FlashDevice& device);

// For the lists BlockListTiles asked for (host copy of their offsets): the item order a
// persistent grid of `sms` blocks takes them in (AttentionArgs::item_order, item_order_blocks =
// min(items, sms)), or empty when the kernel runs them better in natural order on a grid of one
// block per item. The rule: lists averaging under kOrderedMaxTiles kept tiles an item, where each
// block's fill and epilogue weigh most (bench/flash_dev/NOTES.md, block lists).
inline constexpr int kOrderedMaxTiles = 16;
std::vector<int32_t> ItemOrderFor(const AttentionArgs& args, const std::vector<int64_t>& offsets,
                                  int sms);

// Device scratch (AttentionArgs::workspace) the kernel that runs `args` needs: under RoPE on the
// Hopper kernel, K rotated once per problem (launchers.h, RotateKeys); 0 otherwise.
size_t WorkspaceBytes(const AttentionArgs& args, const FlashDevice& device);

// The kernel instance cuda_flash compiles with NVRTC for a request with client expressions
// (flash_rtc.h): the route's kernel template with these parameters.
struct RtcInstance {
  FlashRoute route = FlashRoute::kNone;
  Storage storage = Storage::kFloat16;
  int tile = -1;            // the row of kSm90Tiles / kSm80Tiles
  int mods = 0;             // Hopper: ScoreModBits (the sm_80 general build reads them per launch)
  bool rope = false;        // Hopper: RoPE policy
  bool tile_lists = false;  // Hopper: walks tile lists (a block-sparse mask, or a mask_mod)
  bool score_mod = false;
  bool mask_mod = false;
  // The tile size the mask_mod is classified for: (query rows, keys) of the route's tiles.
  int tile_q = 0;
  int tile_kv = 0;
};
RtcInstance RtcInstanceOf(const AttentionArgs& args, FlashRoute route, bool score_mod,
                          bool mask_mod);
// The dynamic shared memory its kernel takes (cudaFuncSetAttribute before the first launch).
int RtcSmemBytes(const RtcInstance& instance);
// Launches `kernel`, the instance's NVRTC build loaded with the runtime's library API, on `args`
// (with AttentionArgs::expressions set) with the grid, block, dynamic shared memory and parameters
// LaunchSm90 / LaunchSm80 give the precompiled kernel it stands for (launchers.h: PrepareSm90,
// Sm80Grid), on `stream`.
cudaError_t LaunchRtc(cudaKernel_t kernel, const RtcInstance& instance, const AttentionArgs& args,
                      cudaStream_t stream);

// Launches the kernel RouteOf picks on `stream` (no synchronization). cudaErrorNotSupported when
// no kernel runs args; cudaErrorInvalidValue when a table it needs is missing.
cudaError_t Launch(const AttentionArgs& args, cudaStream_t stream);

// PHASE_BACKWARD: the mma.sync backward (support.h Sm80BackwardRefusal decides; launchers.h
// LaunchSm80Backward). Independent of FlashBackwardEnabled(), which only says whether the backend
// declares it. The kernel's name with its tiles, e.g. "mma.sync backward D=64/64 Br=64 Bc=64
// +rope", "" when it does not run args; the device bytes of its workspace (the float32 dQ
// accumulator); the forward that keeps the log-sum-exp and float32 O in g (and writes args.o);
// and the backward, `workspace` holding BackwardWorkspaceBytes. Both launches enqueue on `stream`:
// cudaErrorNotSupported when the backward does not run args on the current device,
// cudaErrorInvalidValue when a table or buffer it needs is missing.
std::string BackwardKernelName(const AttentionArgs& args, const FlashDevice& device);
size_t BackwardWorkspaceBytes(const AttentionArgs& args);
cudaError_t LaunchForwardSaving(const AttentionArgs& args, const BackwardArgs& g,
                                cudaStream_t stream);
cudaError_t LaunchBackward(const AttentionArgs& args, const BackwardArgs& g, void* workspace,
                           cudaStream_t stream);

}  // namespace attnbench::cuda::flash

#endif  // ATTNBENCH_KERNELS_CUDA_FLASH_FLASH_H_
