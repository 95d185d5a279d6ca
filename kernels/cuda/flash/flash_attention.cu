// Host side of the fused FlashAttention-2 forward (flash_attention.cuh): which requests it can
// run (FlashUnsupportedReason), the choice of compiled configuration per head dim, the per-launch
// flags (which tensors may use 16-byte cp.async, whether scores need the modifier path), and
// LaunchFlashAttention. Every template instantiation is listed in kFlashConfigs below, so the
// compile cost of this file (CI builds it for sm_80 and sm_90a on 2 cores) is visible at a glance.
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/flash/flash_attention.cuh"
#include "kernels/cuda/flash/launch.h"
#include "kernels/cuda/common/launch_support.h"

namespace attnbench::cuda {
namespace {

// Compiled (D_qk, D_v) pairs and their tiles, tuned on an H100 (bench/flash_dev/flash_check.cu
// times alternatives). Query tiles are 128 rows: 4 warps of 32 rows up to D = 128 (two blocks an
// SM), 8 warps of 16 rows beyond, where the output accumulators (kM * kDv / 2 floats a thread)
// leave no registers for a second m-tile. K/V tiles shrink as the head dim grows for the same
// reason. Q fragments stay in registers only for D = 64. Ordered by cost: a request runs on the
// first pair that holds both of its dims.
// D = 64 alone runs its query tiles along the grid's y (heaviest causal tiles of all heads
// first): measured faster there for causal masks, not at D = 128 (bench/flash_dev/NOTES.md, v3).
//                                  D_qk D_v warps m-tiles Bc  Q in regs  min blocks/SM  tiles in y
using Config64 = flash::FlashConfig<64, 64, 4, 2, 64, true, 2, true>;
using Config96 = flash::FlashConfig<96, 96, 4, 2, 64, false, 2>;
using Config128 = flash::FlashConfig<128, 128, 4, 2, 64, false, 2>;
using Config192x128 = flash::FlashConfig<192, 128, 8, 1, 64, false, 1>;
using Config192 = flash::FlashConfig<192, 192, 8, 1, 64, false, 1>;
using Config256 = flash::FlashConfig<256, 256, 8, 1, 32, false, 1>;

struct ConfigInfo {
  int dim_qk;
  int dim_v;
  int smem_bytes;
  bool tiles_in_y;  // query tiles along the grid's y: at most 65535
};

constexpr ConfigInfo kFlashConfigs[] = {
    {Config64::kD, Config64::kDv, Config64::kSmemBytes, Config64::kTilesInY},
    {Config96::kD, Config96::kDv, Config96::kSmemBytes, Config96::kTilesInY},
    {Config128::kD, Config128::kDv, Config128::kSmemBytes, Config128::kTilesInY},
    {Config192x128::kD, Config192x128::kDv, Config192x128::kSmemBytes, Config192x128::kTilesInY},
    {Config192::kD, Config192::kDv, Config192::kSmemBytes, Config192::kTilesInY},
    {Config256::kD, Config256::kDv, Config256::kSmemBytes, Config256::kTilesInY},
};
constexpr int kNumConfigs = sizeof(kFlashConfigs) / sizeof(kFlashConfigs[0]);

// Index into kFlashConfigs of the cheapest pair holding both dims, or -1.
int PickConfig(int dim_qk, int dim_v) {
  for (int i = 0; i < kNumConfigs; ++i) {
    if (dim_qk <= kFlashConfigs[i].dim_qk && dim_v <= kFlashConfigs[i].dim_v) return i;
  }
  return -1;
}

// Dynamic shared memory a block may opt into, by compute capability (the CUDA guide's table).
int MaxSmemOptin(int cc_major, int cc_minor) {
  if (cc_major == 8 && (cc_minor == 0 || cc_minor == 7)) return 163 * 1024;
  if (cc_major == 9 || cc_major == 10) return 227 * 1024;
  return 99 * 1024;
}

// cp.async moves 16 bytes: every row of the tensor must start 16-byte aligned.
bool RowsAligned16(const void* base, int heads, int dim) {
  return Aligned16(base) && dim % 8 == 0 && (static_cast<int64_t>(heads) * dim * 2) % 16 == 0;
}

// Whether the request fits the kernel's common-case build (kGeneral = false): every load through
// cp.async (aligned rows, no RoPE), no score modifiers, an interval mask (none, causal, window).
bool FastPathOk(const AttentionArgs& args, const flash::FlashFlags& flags) {
  return flags.async_q && flags.async_k && flags.async_v && !flags.modifiers &&
         args.mask != MaskCode::kBlock;
}

// kFastBuild: whether Cfg also has the common-case build (instantiated for the head dims up to
// 128 only, to keep this file's compile time down).
flash::FlashFlags FlagsFor(const AttentionArgs& args) {
  flash::FlashFlags flags;
  const bool rope = args.rope_cos_sin != nullptr;
  flags.async_q = !rope && RowsAligned16(args.q, args.heads_q, args.dim_qk);
  flags.async_k = !rope && RowsAligned16(args.k, args.heads_kv, args.dim_qk);
  flags.async_v = RowsAligned16(args.v, args.heads_kv, args.dim_v);
  flags.vector_o = RowsAligned16(args.o, args.heads_out, args.dim_v);
  flags.modifiers = args.alibi_slopes != nullptr || args.softcap > 0 || !(args.scale > 0);
  flags.exp_scale = args.scale * 1.4426950408889634f;
  return flags;
}

template <typename T, typename Cfg, bool kFastBuild>
cudaError_t LaunchConfig(const AttentionArgs& args, cudaStream_t stream) {
  const flash::FlashFlags flags = FlagsFor(args);
  const int64_t qtiles = (args.seq_q + Cfg::kBr - 1) / Cfg::kBr;

  auto kernel = flash::FlashForwardKernel<T, Cfg, true>;
  if constexpr (kFastBuild) {
    if (FastPathOk(args, flags)) kernel = flash::FlashForwardKernel<T, Cfg, false>;
  }
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (err != cudaSuccess) return err;
  const dim3 grid = flash::FlashGrid<Cfg::kTilesInY>(args, qtiles);
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(args, flags);
  return cudaGetLastError();
}

// The instantiations: one per (storage, config), plus the common-case build for D <= 128.
template <typename T>
cudaError_t LaunchStorage(const AttentionArgs& args, cudaStream_t stream) {
  switch (PickConfig(args.dim_qk, args.dim_v)) {
    case 0:
      return LaunchConfig<T, Config64, true>(args, stream);
    case 1:
      return LaunchConfig<T, Config96, true>(args, stream);
    case 2:
      return LaunchConfig<T, Config128, true>(args, stream);
    case 3:
      return LaunchConfig<T, Config192x128, false>(args, stream);
    case 4:
      return LaunchConfig<T, Config192, false>(args, stream);
    case 5:
      return LaunchConfig<T, Config256, false>(args, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace

std::string FlashKernelName(const AttentionArgs& args, int cc_major, int cc_minor) {
  if (!FlashUnsupportedReason(args, cc_major, cc_minor).empty()) return "";
  if (HopperRuns(args, cc_major, cc_minor)) return HopperKernelName(args);
  const int config = PickConfig(args.dim_qk, args.dim_v);
  const ConfigInfo& info = kFlashConfigs[config];
  // The common-case build exists for the configurations up to D = 128 (LaunchStorage).
  const bool fast = info.dim_qk <= 128 && info.dim_v <= 128 && FastPathOk(args, FlagsFor(args));
  return "mma.sync D=" + std::to_string(info.dim_qk) + "/" + std::to_string(info.dim_v) +
         (fast ? " (common-case build)" : " (general build)");
}

std::string FlashUnsupportedReason(const AttentionArgs& args, int cc_major, int cc_minor) {
  const std::string cc = std::to_string(cc_major) + "." + std::to_string(cc_minor);
  if (cc_major < 8) {
    return "compute capability " + cc +
           ": the fused kernel needs sm_80 or newer (mma.sync, "
           "cp.async)";
  }
  if (args.storage == Storage::kFloat32) {
    return "dtype float32: the fused kernel needs float16 or bfloat16";
  }
  if (args.storage != Storage::kFloat16 && args.storage != Storage::kBFloat16) {
    return "unknown storage type";
  }
  if (args.dim_qk <= 0 || args.dim_v <= 0 || args.dim_qk > 256 || args.dim_v > 256) {
    return "head dims " + std::to_string(args.dim_qk) + "/" + std::to_string(args.dim_v) +
           ": the fused kernel handles head dims 1 to 256";
  }
  if (args.batch <= 0 || args.seq_q <= 0 || args.seq_kv <= 0 || args.heads_q <= 0 ||
      args.heads_kv <= 0 || args.heads_out <= 0) {
    return "empty problem";
  }
  if (args.batch > 65535 || args.heads_out > 65535) {
    return "batch or output heads above 65535 (grid y/z limit of the fused kernel)";
  }
  if ((args.seq_q + 127) / 128 > 0x7fffffff) return "S_q too large for the fused kernel's grid";
  // Judged on sizes alone: backends ask before any device memory exists (ShapeArgs), so the
  // pointers are checked at launch instead.
  if (args.rope_dims != 0 || args.rope_cos_sin != nullptr) {
    if (args.rope_dims <= 0 || args.rope_dims % 2 != 0 || args.rope_dims > args.dim_qk) {
      return "rope_dims must be even and within D_qk";
    }
  }
  const int config = PickConfig(args.dim_qk, args.dim_v);
  if (config < 0) return "no compiled head-dim pair holds these dims";
  if (kFlashConfigs[config].tiles_in_y && (args.seq_q + 127) / 128 > 65535) {
    return "S_q above 65535 query tiles of 128 rows (grid y limit of the fused kernel)";
  }
  const int smem = kFlashConfigs[config].smem_bytes;
  if (smem > MaxSmemOptin(cc_major, cc_minor)) {
    return "head dims " + std::to_string(args.dim_qk) + "/" + std::to_string(args.dim_v) +
           " need " + std::to_string(smem / 1024) +
           " KB of shared memory per block, above "
           "compute capability " +
           cc + "'s limit";
  }
  return "";
}

cudaError_t LaunchFlashAttention(const AttentionArgs& args, cudaStream_t stream) {
  int cc_major = 0;
  int cc_minor = 0;
  if (cudaError_t err = CachedDeviceAttribute<cudaDevAttrComputeCapabilityMajor>(&cc_major);
      err != cudaSuccess) {
    return err;
  }
  if (cudaError_t err = CachedDeviceAttribute<cudaDevAttrComputeCapabilityMinor>(&cc_minor);
      err != cudaSuccess) {
    return err;
  }
  if (!FlashUnsupportedReason(args, cc_major, cc_minor).empty()) return cudaErrorNotSupported;
  if (args.head_map == nullptr || (args.mask == MaskCode::kBlock && args.block_bitmap == nullptr) ||
      (args.rope_dims > 0 && args.rope_cos_sin == nullptr)) {
    return cudaErrorInvalidValue;
  }
  if (HopperRuns(args, cc_major, cc_minor)) return LaunchHopperAttention(args, stream);
  if (args.storage == Storage::kBFloat16) {
    return LaunchStorage<__nv_bfloat16>(args, stream);
  }
  return LaunchStorage<__half>(args, stream);
}

}  // namespace attnbench::cuda
