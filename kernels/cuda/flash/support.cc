#include "kernels/cuda/flash/support.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "kernels/cuda/flash/backward_configs.h"
#include "kernels/cuda/flash/configs.h"

namespace attnbench::cuda::flash {
namespace {

// THE switch of cuda_flash's PHASE_BACKWARD: whether its allow-lists (and so the backend's
// capabilities, CheckSupported and `auto`) declare the mma.sync backward. Set to false to ship
// the kernel undeclared (it still compiles, and the GPU test still runs it through its launchers).
constexpr bool kFlashBackwardEnabled = true;

template <typename Tile, size_t kN>
std::vector<std::pair<int, int>> DimsOf(const Tile (&tiles)[kN]) {
  std::vector<std::pair<int, int>> dims;
  for (const Tile& t : tiles) dims.emplace_back(t.dim_qk, t.dim_v);
  return dims;
}

std::string CcText(int major, int minor) {
  return std::to_string(major) + "." + std::to_string(minor);
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

constexpr char kExpressionRequirement[] =
    "score_mod / mask_mod: the kernel compiled with them by NVRTC when the run is prepared "
    "(libnvrtc and the CUDA toolkit's headers needed: CUDA_HOME; cached per process, "
    "RunResult.expression_compile_ms)";

const char* StorageText(Storage s) {
  switch (s) {
    case Storage::kFloat32:
      return "float32";
    case Storage::kFloat16:
      return "float16";
    case Storage::kBFloat16:
      return "bfloat16";
  }
  return "an unknown storage type";
}

const char* MaskText(MaskCode m) {
  switch (m) {
    case MaskCode::kNone:
      return "none";
    case MaskCode::kCausal:
      return "causal";
    case MaskCode::kWindow:
      return "sliding_window";
    case MaskCode::kBlock:
      return "block_sparse";
    case MaskCode::kUnknown:
      break;
  }
  return "an unknown mask";
}

// The checks every kernel's allow-list makes: compute capability, storage, mask, modifiers, head
// dims, sizes. "" when all pass.
std::string ListRefusal(const KernelAllowList& list, const AttentionArgs& a, const FlashDevice& d,
                        int* tile) {
  const bool cc_ok = list.cc_minimum
                         ? (d.cc_major > list.cc_major ||
                            (d.cc_major == list.cc_major && d.cc_minor >= list.cc_minor))
                         : (d.cc_major == list.cc_major && d.cc_minor == list.cc_minor);
  if (!cc_ok) {
    return "compute capability " + CcText(d.cc_major, d.cc_minor) + ": needs " +
           CcText(list.cc_major, list.cc_minor) + (list.cc_minimum ? " or newer" : "");
  }
  if (std::find(list.storages.begin(), list.storages.end(), a.storage) == list.storages.end()) {
    return std::string("spec.dtype ") + StorageText(a.storage) + ": runs float16 and bfloat16 only";
  }
  if (std::find(list.masks.begin(), list.masks.end(), a.mask) == list.masks.end()) {
    return std::string("spec.mask ") + MaskText(a.mask) + " is not implemented";
  }
  if ((a.modifiers & ~list.modifiers) != 0) {
    return "a score modifier of the spec (spec.rope / spec.alibi / spec.softcap / "
           "spec.score_mod / spec.mask_mod) it does not implement (modifier bits " +
           std::to_string(a.modifiers & ~list.modifiers) + ")";
  }
  if (a.batch <= 0 || a.seq_q <= 0 || a.seq_kv <= 0 || a.heads_q <= 0 || a.heads_kv <= 0 ||
      a.heads_out <= 0 || a.dim_qk <= 0 || a.dim_v <= 0) {
    return "empty problem";
  }
  *tile = -1;
  for (size_t i = 0; i < list.head_dims.size(); ++i) {
    if (a.dim_qk <= list.head_dims[i].first && a.dim_v <= list.head_dims[i].second) {
      *tile = static_cast<int>(i);
      break;
    }
  }
  if (*tile < 0) {
    return "spec.head_dim_qk / head_dim_v " + std::to_string(a.dim_qk) + "/" +
           std::to_string(a.dim_v) + ": no compiled tile holds them";
  }
  if ((a.modifiers & kModifierRope) != 0 &&
      (a.rope_dims <= 0 || a.rope_dims % 2 != 0 || a.rope_dims > a.dim_qk)) {
    return "spec.rope.rotary_dims must be even and within D_qk";
  }
  return "";
}

}  // namespace

const KernelAllowList& Sm90AllowList() {
  static const KernelAllowList* list = [] {
    auto* l = new KernelAllowList;
    l->name = "hopper wgmma+tma";
    l->cc_major = 9;
    l->cc_minor = 0;
    l->storages = {Storage::kFloat16, Storage::kBFloat16};
    l->masks = {MaskCode::kNone, MaskCode::kCausal, MaskCode::kWindow, MaskCode::kBlock};
    l->modifiers =
        kModifierRope | kModifierAlibi | kModifierSoftcap | kModifierScoreMod | kModifierMaskMod;
    l->head_dims = DimsOf(kSm90Tiles);
    l->requirements = {
        "head dims multiples of 8 (TMA row strides of 16 bytes); smaller dims run zero-padded "
        "on the first tile that holds them",
        "RoPE: rotary dims a multiple of 8",
        "Q, K, V and O 16-byte aligned; S_q and S_kv below 2^31", kExpressionRequirement,
        "mask_mod: tiles classified on the GPU before timing (every pair), walked as tile lists: "
        "empty tiles skipped, full ones not tested per pair"};
    return l;
  }();
  return *list;
}

const KernelAllowList& Sm80AllowList() {
  static const KernelAllowList* list = [] {
    auto* l = new KernelAllowList;
    l->name = "mma.sync";
    l->cc_major = 8;
    l->cc_minor = 0;
    l->cc_minimum = true;
    l->storages = {Storage::kFloat16, Storage::kBFloat16};
    l->masks = {MaskCode::kNone, MaskCode::kCausal, MaskCode::kWindow, MaskCode::kBlock};
    l->modifiers =
        kModifierRope | kModifierAlibi | kModifierSoftcap | kModifierScoreMod | kModifierMaskMod;
    l->head_dims = DimsOf(kSm80Tiles);
    l->requirements = {
        "any head dims up to the largest tile (zero-padded to the first tile that "
        "holds them); any alignment",
        kExpressionRequirement,
        "mask_mod: tiles classified on the GPU before timing (every pair): empty tiles skipped, "
        "full ones not tested per pair; runs on the general build"};
    return l;
  }();
  return *list;
}

bool FlashBackwardEnabled() { return kFlashBackwardEnabled; }

const KernelAllowList& Sm80BackwardAllowList() {
  static const KernelAllowList* list = [] {
    auto* l = new KernelAllowList;
    l->name = "mma.sync backward";
    l->cc_major = 8;
    l->cc_minor = 0;
    l->cc_minimum = true;
    l->storages = {Storage::kFloat16, Storage::kBFloat16};
    l->masks = {MaskCode::kNone, MaskCode::kCausal, MaskCode::kWindow, MaskCode::kBlock};
    // The built-ins, whose derivatives the kernel takes (no client score_mod / mask_mod).
    l->modifiers = kModifierRope | kModifierAlibi | kModifierSoftcap;
    l->head_dims = DimsOf(kSm80BackwardTiles);
    l->backward = true;
    l->requirements = {
        "any head dims up to the largest tile (zero-padded to the first tile that holds them); "
        "any alignment",
        "the forward kept for it runs on the mma.sync kernel (its saving build: log-sum-exp and "
        "float32 O, the softcap's tanh exact) on every device, Hopper included",
        "dQ summed in float32 with atomics: not bit-for-bit deterministic across runs"};
    return l;
  }();
  return *list;
}

std::string Sm80BackwardRefusal(const AttentionArgs& a, const FlashDevice& d) {
  int tile = -1;
  if (std::string why = ListRefusal(Sm80BackwardAllowList(), a, d, &tile); !why.empty()) {
    return why;
  }
  if (a.batch > 65535 || a.heads_kv > 65535) {
    return "spec.batch_size or the key/value heads above 65535 (grid y/z limit)";
  }
  if (Sm80BackwardSmemBytes(kSm80BackwardTiles[tile]) > d.smem_optin_bytes) {
    return "spec.head_dim_qk / head_dim_v need " +
           std::to_string(Sm80BackwardSmemBytes(kSm80BackwardTiles[tile]) / 1024) +
           " KB of shared memory per block, above the device's " +
           std::to_string(d.smem_optin_bytes / 1024) + " KB";
  }
  const int64_t kv_tiles = (a.seq_kv + Sm80BackwardBlockKv(kSm80BackwardTiles[tile]) - 1) /
                           Sm80BackwardBlockKv(kSm80BackwardTiles[tile]);
  if (kv_tiles > 0x7fffffff) return "spec.seq_len_kv too large for the grid";
  if (std::string why = Sm80Refusal(a, d); !why.empty()) return "its forward: " + why;
  return "";
}

std::string Sm90Refusal(const AttentionArgs& a, const FlashDevice& d) {
  int tile = -1;
  if (std::string why = ListRefusal(Sm90AllowList(), a, d, &tile); !why.empty()) return why;
  if (!IsIntervalMask(a.mask) && !UsesTileLists(a.mask)) {
    return std::string("spec.mask ") + MaskText(a.mask) +
           ": the Hopper kernel has no tile policy for it";
  }
  if (!d.sm90_code) return "this build carries no sm_90a code";
  if (!d.tma) return "the driver's tensor-map encoder is missing";
  if (a.dim_qk % 8 != 0 || a.dim_v % 8 != 0) {
    return "spec.head_dim_qk / head_dim_v " + std::to_string(a.dim_qk) + "/" +
           std::to_string(a.dim_v) + ": TMA needs multiples of 8";
  }
  if ((a.modifiers & kModifierRope) != 0 && a.rope_dims % 8 != 0) {
    return "spec.rope.rotary_dims " + std::to_string(a.rope_dims) +
           ": the fused rotation needs a multiple of 8";
  }
  if (a.seq_q >= (int64_t{1} << 31) || a.seq_kv >= (int64_t{1} << 31)) {
    return "spec.seq_len_q or seq_len_kv at or above 2^31 (TMA coordinates are 32-bit)";
  }
  const int64_t items = (a.seq_q + kSm90BlockQ - 1) / kSm90BlockQ * a.heads_out * a.batch;
  if (items > 0x7fffffff) return "more than 2^31 - 1 query tiles";
  for (const void* p : {a.q, a.k, a.v, static_cast<const void*>(a.o)}) {
    if (p != nullptr && !Aligned16(p)) return "a tensor not 16-byte aligned (TMA)";
  }
  if (Sm90SmemBytes(kSm90Tiles[tile]) > d.smem_optin_bytes) {
    return "spec.head_dim_qk / head_dim_v need " +
           std::to_string(Sm90SmemBytes(kSm90Tiles[tile]) / 1024) +
           " KB of shared memory per block, above the device's " +
           std::to_string(d.smem_optin_bytes / 1024) + " KB";
  }
  if (UsesTileLists(a.mask) && a.block_tiles != nullptr &&
      (a.block_tile_q != kSm90BlockQ || a.block_tile_kv != kSm90Tiles[tile].block_kv)) {
    return "block lists built for other tiles";
  }
  return "";
}

std::string Sm80Refusal(const AttentionArgs& a, const FlashDevice& d) {
  int tile = -1;
  if (std::string why = ListRefusal(Sm80AllowList(), a, d, &tile); !why.empty()) return why;
  if (a.batch > 65535 || a.heads_out > 65535) {
    return "spec.batch_size or the output heads above 65535 (grid y/z limit)";
  }
  if (Sm80SmemBytes(kSm80Tiles[tile]) > d.smem_optin_bytes) {
    return "spec.head_dim_qk / head_dim_v need " +
           std::to_string(Sm80SmemBytes(kSm80Tiles[tile]) / 1024) +
           " KB of shared memory per block, above the device's " +
           std::to_string(d.smem_optin_bytes / 1024) + " KB";
  }
  const int64_t qtiles = (a.seq_q + kSm80BlockQ - 1) / kSm80BlockQ;
  if (qtiles > 0x7fffffff) return "spec.seq_len_q too large for the grid";
  if (kSm80Tiles[tile].tiles_in_y && qtiles > 65535) {
    return "spec.seq_len_q above 65535 query tiles of 128 rows (grid y limit)";
  }
  return "";
}

FlashRoute RouteOf(const AttentionArgs& args, const FlashDevice& device) {
  if (Sm90Refusal(args, device).empty()) return FlashRoute::kSm90;
  if (Sm80Refusal(args, device).empty()) return FlashRoute::kSm80;
  return FlashRoute::kNone;
}

std::string FlashRefusal(const AttentionArgs& args, const FlashDevice& device) {
  const std::string sm90 = Sm90Refusal(args, device);
  if (sm90.empty()) return "";
  const std::string sm80 = Sm80Refusal(args, device);
  if (sm80.empty()) return "";
  return Sm90AllowList().name + ": " + sm90 + "; " + Sm80AllowList().name + ": " + sm80;
}

}  // namespace attnbench::cuda::flash
