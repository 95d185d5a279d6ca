// The launch of cuda_flash's kernels compiled with NVRTC for client expressions (flash_rtc.h): the
// same host-side steps as the precompiled launches (launchers.h), then cudaLaunchKernel on the
// loaded kernel with the parameters its template declares.
#include <cuda.h>
#include <cuda_runtime.h>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/flash/configs.h"
#include "kernels/cuda/flash/flash.h"
#include "kernels/cuda/flash/kernel_sm80.cuh"
#include "kernels/cuda/flash/launchers.h"

namespace attnbench::cuda::flash {

int RtcSmemBytes(const RtcInstance& instance) {
  if (instance.tile < 0) return 0;
  if (instance.route == FlashRoute::kSm90) return Sm90SmemBytes(kSm90Tiles[instance.tile]);
  if (instance.route == FlashRoute::kSm80) return Sm80SmemBytes(kSm80Tiles[instance.tile]);
  return 0;
}

cudaError_t LaunchRtc(cudaKernel_t kernel, const RtcInstance& instance, const AttentionArgs& args,
                      cudaStream_t stream) {
  if (kernel == nullptr || instance.tile < 0 || args.expressions == nullptr ||
      args.head_map == nullptr || (args.mask == MaskCode::kBlock && args.block_bitmap == nullptr) ||
      ((args.modifiers & kModifierRope) != 0 && args.rope_cos_sin == nullptr) ||
      ((args.modifiers & kModifierAlibi) != 0 && args.alibi_slopes == nullptr)) {
    return cudaErrorInvalidValue;
  }
  const void* func = reinterpret_cast<const void*>(kernel);
  const int smem = RtcSmemBytes(instance);
  if (instance.route == FlashRoute::kSm90) {
    Sm90Launch launch;
    if (cudaError_t e = PrepareSm90(args, stream, Sm90Grid::kAuto, instance.tile_lists, &launch);
        e != cudaSuccess) {
      return e;
    }
    if (launch.tile != instance.tile) return cudaErrorInvalidValue;
    CUtensorMap q, k, v;
    if (!Sm90TensorMaps(launch.tile, launch.args, &q, &k, &v)) return cudaErrorInvalidValue;
    // Sm90ForwardKernel(map_q, map_k, map_v, args): the maps are __grid_constant__ parameters.
    void* params[] = {&q, &k, &v, &launch.args};
    return cudaLaunchKernel(func, dim3(launch.blocks), dim3(kSm90Threads), params, smem, stream);
  }
  if (instance.route == FlashRoute::kSm80) {
    AttentionArgs a = args;
    FlashFlags flags = Sm80Flags(a);
    // FlashForwardKernel(args, flags).
    void* params[] = {&a, &flags};
    return cudaLaunchKernel(func, Sm80Grid(a, instance.tile),
                            dim3(32 * kSm80Tiles[instance.tile].warps), params, smem, stream);
  }
  return cudaErrorNotSupported;
}

}  // namespace attnbench::cuda::flash
