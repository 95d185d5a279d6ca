// cuda_flash's route: the device as the allow-lists see it, the kernel that runs a request and
// its name, the block-list tiles it needs, and the launch.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <vector>

#include "kernels/cuda/common/launch_support.h"
#include "kernels/cuda/common/score_mods.cuh"
#include "kernels/cuda/flash/backward_configs.h"
#include "kernels/cuda/flash/configs.h"
#include "kernels/cuda/flash/flash.h"
#include "kernels/cuda/flash/item_order.h"
#include "kernels/cuda/flash/launchers.h"
#include "kernels/cuda/flash/support.h"

namespace attnbench::cuda::flash {
namespace {

std::string PolicyText(const AttentionArgs& args) {
  std::string out;
  const int mods = ScoreModsOf(args);
  if ((mods & kModsAlibi) != 0) out += (args.modifiers & kModifierAlibi) ? " +alibi" : " +scale";
  if ((mods & kModsSoftcap) != 0) out += " +softcap";
  if ((args.modifiers & kModifierRope) != 0) out += " +rope";
  if (Sm90WalksTileLists(args)) out += " +tile-list";
  return out;
}

// Client expressions, compiled with NVRTC (flash_rtc.h).
std::string ExpressionText(const AttentionArgs& args) {
  std::string out;
  if ((args.modifiers & kModifierScoreMod) != 0) out += " +score_mod";
  if ((args.modifiers & kModifierMaskMod) != 0) out += " +mask_mod";
  if (!out.empty()) out += " (nvrtc)";
  return out;
}

}  // namespace

FlashDevice DeviceOf(int cc_major, int cc_minor, int smem_optin_bytes) {
  FlashDevice d;
  d.cc_major = cc_major;
  d.cc_minor = cc_minor;
  d.smem_optin_bytes = smem_optin_bytes;
  d.sm90_code = cc_major == 9 && cc_minor == 0 && HasSm90Code();
  d.tma = HasTmaEncoder();
  return d;
}

FlashDevice CurrentDevice() {
  int major = 0, minor = 0, smem = 0;
  if (CachedDeviceAttribute<cudaDevAttrComputeCapabilityMajor>(&major) != cudaSuccess ||
      CachedDeviceAttribute<cudaDevAttrComputeCapabilityMinor>(&minor) != cudaSuccess ||
      CachedDeviceAttribute<cudaDevAttrMaxSharedMemoryPerBlockOptin>(&smem) != cudaSuccess) {
    return FlashDevice{};
  }
  return DeviceOf(major, minor, smem);
}

std::string KernelName(const AttentionArgs& args, const FlashDevice& device) {
  switch (RouteOf(args, device)) {
    case FlashRoute::kSm90: {
      const Sm90Tile& t = kSm90Tiles[PickTile(kSm90Tiles, args.dim_qk, args.dim_v)];
      return Sm90AllowList().name + " D=" + std::to_string(t.dim_qk) + "/" +
             std::to_string(t.dim_v) + " Br=" + std::to_string(kSm90BlockQ) +
             " Bc=" + std::to_string(t.block_kv) + " stages=" + std::to_string(t.stages) +
             PolicyText(args) + ExpressionText(args);
    }
    case FlashRoute::kSm80: {
      const Sm80Tile& t = kSm80Tiles[PickTile(kSm80Tiles, args.dim_qk, args.dim_v)];
      return Sm80AllowList().name + " D=" + std::to_string(t.dim_qk) + "/" +
             std::to_string(t.dim_v) +
             (Sm80CommonBuild(args) ? " (common-case build)" : " (general build)") +
             ExpressionText(args);
    }
    case FlashRoute::kNone:
      break;
  }
  return "";
}

ListTiles BlockListTiles(const AttentionArgs& args, const FlashDevice& device) {
  if (!Sm90WalksTileLists(args) || RouteOf(args, device) != FlashRoute::kSm90) return {};
  return {kSm90BlockQ, kSm90Tiles[PickTile(kSm90Tiles, args.dim_qk, args.dim_v)].block_kv};
}

std::vector<int32_t> ItemOrderFor(const AttentionArgs& args, const std::vector<int64_t>& offsets,
                                  int sms) {
  if (!Sm90WalksTileLists(args) || sms <= 0 || offsets.empty()) return {};
  const std::vector<int64_t> work = TileListWork(args, offsets, kSm90BlockQ);
  if (work.empty() || work.size() > 0x7fffffffu) return {};
  int64_t total = 0;
  for (int64_t w : work) total += w - 1;  // kept tiles (work counts one more per item)
  if (total >= static_cast<int64_t>(kOrderedMaxTiles) * static_cast<int64_t>(work.size())) {
    return {};
  }
  return BalancedItemOrder(work, static_cast<int>(std::min<size_t>(work.size(), sms)));
}

RtcInstance RtcInstanceOf(const AttentionArgs& args, FlashRoute route, bool score_mod,
                          bool mask_mod) {
  RtcInstance i;
  i.route = route;
  i.storage = args.storage;
  i.score_mod = score_mod;
  i.mask_mod = mask_mod;
  if (route == FlashRoute::kSm90) {
    i.tile = PickTile(kSm90Tiles, args.dim_qk, args.dim_v);
    i.mods = ScoreModsOf(args);
    i.rope = (args.modifiers & kModifierRope) != 0;
    i.tile_lists = UsesTileLists(args.mask) || mask_mod;
    i.tile_q = kSm90BlockQ;
    if (i.tile >= 0) i.tile_kv = kSm90Tiles[i.tile].block_kv;
  } else if (route == FlashRoute::kSm80) {
    i.tile = PickTile(kSm80Tiles, args.dim_qk, args.dim_v);
    i.tile_q = kSm80BlockQ;
    if (i.tile >= 0) i.tile_kv = kSm80Tiles[i.tile].block_kv;
  }
  return i;
}

size_t WorkspaceBytes(const AttentionArgs& args, const FlashDevice& device) {
  if ((args.modifiers & kModifierRope) == 0 || RouteOf(args, device) != FlashRoute::kSm90) return 0;
  return RopeKeysBytes(args);
}

namespace {

// The device tables a launch reads, present.
bool TablesPresent(const AttentionArgs& args) {
  return args.head_map != nullptr &&
         (args.mask != MaskCode::kBlock || args.block_bitmap != nullptr) &&
         ((args.modifiers & kModifierRope) == 0 || args.rope_cos_sin != nullptr) &&
         ((args.modifiers & kModifierAlibi) == 0 || args.alibi_slopes != nullptr);
}

}  // namespace

std::string BackwardKernelName(const AttentionArgs& args, const FlashDevice& device) {
  if (!Sm80BackwardRefusal(args, device).empty()) return "";
  const Sm80BackwardTile& t =
      kSm80BackwardTiles[PickTile(kSm80BackwardTiles, args.dim_qk, args.dim_v)];
  std::string policy;
  const int mods = ScoreModsOf(args);
  if ((mods & kModsAlibi) != 0) policy += (args.modifiers & kModifierAlibi) ? " +alibi" : " +scale";
  if ((mods & kModsSoftcap) != 0) policy += " +softcap";
  if ((args.modifiers & kModifierRope) != 0) policy += " +rope";
  return Sm80BackwardAllowList().name + " D=" + std::to_string(t.dim_qk) + "/" +
         std::to_string(t.dim_v) + " Br=" + std::to_string(t.block_q) +
         " Bc=" + std::to_string(Sm80BackwardBlockKv(t)) + policy + " (dQ by atomics)";
}

size_t BackwardWorkspaceBytes(const AttentionArgs& args) {
  return Sm80BackwardWorkspaceBytes(args);
}

cudaError_t LaunchForwardSaving(const AttentionArgs& args, const BackwardArgs& g,
                                cudaStream_t stream) {
  if (!TablesPresent(args)) return cudaErrorInvalidValue;
  if (!Sm80BackwardRefusal(args, CurrentDevice()).empty()) return cudaErrorNotSupported;
  return LaunchSm80ForwardSaving(args, g, stream);
}

cudaError_t LaunchBackward(const AttentionArgs& args, const BackwardArgs& g, void* workspace,
                           cudaStream_t stream) {
  if (!TablesPresent(args)) return cudaErrorInvalidValue;
  if (!Sm80BackwardRefusal(args, CurrentDevice()).empty()) return cudaErrorNotSupported;
  return LaunchSm80Backward(args, g, workspace, stream);
}

cudaError_t Launch(const AttentionArgs& args, cudaStream_t stream) {
  if (args.head_map == nullptr || (args.mask == MaskCode::kBlock && args.block_bitmap == nullptr) ||
      ((args.modifiers & kModifierRope) != 0 && args.rope_cos_sin == nullptr) ||
      ((args.modifiers & kModifierAlibi) != 0 && args.alibi_slopes == nullptr)) {
    return cudaErrorInvalidValue;
  }
  // Client expressions run only in the kernels compiled for them (flash_rtc_launch.h).
  if ((args.modifiers & (kModifierScoreMod | kModifierMaskMod)) != 0) return cudaErrorNotSupported;
  switch (RouteOf(args, CurrentDevice())) {
    case FlashRoute::kSm90:
      return LaunchSm90(args, stream);
    case FlashRoute::kSm80:
      return LaunchSm80(args, stream);
    case FlashRoute::kNone:
      break;
  }
  return cudaErrorNotSupported;
}

}  // namespace attnbench::cuda::flash
