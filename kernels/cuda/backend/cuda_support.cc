#include "kernels/cuda/backend/cuda_support.h"

#include <algorithm>
#include <atomic>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/backend_support.h"
#include "kernels/cuda/backend/cuda_backend.h"
#include "kernels/cuda/backend/device_kv_cache.h"
#include "kernels/cuda/backend/device_problem.h"
#include "kernels/cuda/expr/nvrtc_compiler.h"
#include "kernels/cuda/flash/decode.h"
#include "kernels/cuda/flash/flash_rtc.h"
#include "kernels/cuda/unfused/unfused_attention.h"
#include "kernels/spec/modifiers.h"
#include "kernels/spec/shapes.h"

namespace attnbench {
namespace {

// On since CudaLayerBackwardTest.* (kernels_cuda_backward_test) passed on an H100 (2026-12-07,
// bench/RESULTS.md); false again would switch the layer backward off in this one line.
constexpr bool kCudaLayerBackwardEnabled = true;
std::atomic<bool> layer_backward_for_test{false};

DType DTypeOf(cuda::Storage s) {
  switch (s) {
    case cuda::Storage::kFloat32:
      return DType::kFloat32;
    case cuda::Storage::kFloat16:
      return DType::kFloat16;
    case cuda::Storage::kBFloat16:
      return DType::kBFloat16;
  }
  return DType::kUnspecified;
}

// A flash kernel's allow-lists as GetCapabilities reports them.
KernelSupport KernelSupportOf(const cuda::flash::KernelAllowList& list) {
  KernelSupport k;
  k.name = list.name;
  k.compute_capabilities = {
      absl::StrCat(list.cc_major, ".", list.cc_minor, list.cc_minimum ? "+" : "")};
  for (cuda::Storage st : list.storages) k.dtypes.push_back(DTypeOf(st));
  if (list.backward) {
    k.phases = {Phase::kBackward};
  } else if (list.decode) {
    k.phases = {Phase::kDecode};
  } else {
    k.phases = {Phase::kPrefill, Phase::kDecode};
  }
  for (cuda::MaskCode m : list.masks) {
    switch (m) {
      case cuda::MaskCode::kNone:
        k.masks.push_back(MaskKind::kNone);
        break;
      case cuda::MaskCode::kCausal:
        k.masks.push_back(MaskKind::kCausal);
        break;
      case cuda::MaskCode::kWindow:
        k.masks.push_back(MaskKind::kSlidingWindow);
        break;
      case cuda::MaskCode::kBlock:
        k.masks.push_back(MaskKind::kBlockSparse);
        k.masks.push_back(MaskKind::kProbabilisticBlockSparse);
        break;
      case cuda::MaskCode::kUnknown:
        break;
    }
  }
  for (Modifier m : kAllModifiers) {
    if ((list.modifiers & (1u << static_cast<int>(m))) != 0) k.modifiers.push_back(m);
  }
  k.head_dims = list.head_dims;
  k.requirements = list.requirements;
  return k;
}

}  // namespace

std::vector<Modifier> CudaBackwardModifiers(CudaBackendKind kind) {
  switch (kind) {
    case CudaBackendKind::kFlash:
      // The mma.sync backward's built-ins (flash/support.h Sm80BackwardAllowList), when
      // declared at all.
      if (!cuda::flash::FlashBackwardEnabled()) return {};
      return {Modifier::kRope, Modifier::kAlibi, Modifier::kSoftcap};
    case CudaBackendKind::kUnfused:
    case CudaBackendKind::kReference:
      // The built-ins, whose derivatives score_grads.cuh has; the backward has none for a
      // client's score_mod (and cuda_unfused's mask_mod kernel takes contiguous (b, h) pairs,
      // where its backward batches rounds of heads).
      return {Modifier::kRope, Modifier::kAlibi, Modifier::kSoftcap};
  }
  return {};
}

bool CudaLayerBackwardEnabled() { return kCudaLayerBackwardEnabled || layer_backward_for_test; }
void EnableCudaLayerBackwardForTest() { layer_backward_for_test = true; }

const char* CudaBackendName(CudaBackendKind kind) {
  switch (kind) {
    case CudaBackendKind::kFlash:
      return kCudaFlashBackend;
    case CudaBackendKind::kUnfused:
      return kCudaUnfusedBackend;
    case CudaBackendKind::kReference:
      return kCudaReferenceBackend;
  }
  return "";
}

BackendSupport CudaBackendSupport(CudaBackendKind kind) {
  BackendSupport s;
  s.dtypes = {DType::kFloat16, DType::kBFloat16};
  if (kind != CudaBackendKind::kFlash) s.dtypes.push_back(DType::kFloat32);
  s.phases = {Phase::kPrefill, Phase::kDecode};  // PHASE_BACKWARD: cuda_unfused, cuda_reference
  // SCOPE_LAYER wraps any forward kernel in cuBLAS projections (layer_projections.h).
  s.scopes = {Scope::kCore, Scope::kLayer};
  s.layouts = {LayoutKind::kMha,   LayoutKind::kMqa,          LayoutKind::kGqa,
               LayoutKind::kSqa,   LayoutKind::kSymmetricSqa, LayoutKind::kExtremeSqa,
               LayoutKind::kGqkva, LayoutKind::kExplicit};
  s.masks = {MaskKind::kNone, MaskKind::kCausal, MaskKind::kSlidingWindow, MaskKind::kBlockSparse,
             MaskKind::kProbabilisticBlockSparse};
  s.modifiers = {Modifier::kRope, Modifier::kAlibi, Modifier::kSoftcap};
  s.cache_formats = {CacheFormat::kNative};
  s.cuda_graphs = true;
  s.limitations = {
      "SCOPE_LAYER: the projections by cuBLAS (float32 accumulation; input projections of one "
      "width in one strided-batched GEMM) around this backend's core; RunResult.layer_timing "
      "splits each iteration, except a replayed CUDA graph"};
  if (kind != CudaBackendKind::kReference) s.limitations.emplace_back("no float8 storage");
  // Around whichever core backward the backend has (its phases say whether it has one).
  s.layer_backward = CudaLayerBackwardEnabled();
  if (s.layer_backward) {
    s.limitations.emplace_back(
        "SCOPE_LAYER with PHASE_BACKWARD: dW_o, dO, the weight gradients and dX by cuBLAS "
        "(float32 accumulation, each stored once in the dtype; dX one product over [dQ dK dV] "
        "side by side) around this backend's core backward");
  }
  switch (kind) {
    case CudaBackendKind::kFlash:
      for (const auto& [qk, v] : cuda::flash::Sm80AllowList().head_dims) {
        if (qk == v) s.head_dims.push_back(qk);
      }
      s.limitations.emplace_back(
          "head dims up to 256; other dims run on the next compiled size, zero-padded");
      // The decode kernel first: a decode inside its list runs there (UsesFlashDecode), one
      // outside it on the forward kernels, in this order.
      if (cuda::flash::FlashDecodeEnabled()) {
        s.kernels.push_back(KernelSupportOf(cuda::flash::DecodeAllowList()));
      }
      s.kernels.push_back(KernelSupportOf(cuda::flash::Sm90AllowList()));
      s.kernels.push_back(KernelSupportOf(cuda::flash::Sm80AllowList()));
      if (cuda::flash::FlashBackwardEnabled()) {
        s.phases.push_back(Phase::kBackward);
        s.kernels.push_back(KernelSupportOf(cuda::flash::Sm80BackwardAllowList()));
      }
      // Client expressions: the fused kernel of the route compiled with NVRTC for them, on both
      // kernels (flash/flash_rtc.h).
      s.modifiers.push_back(Modifier::kScoreMod);
      s.modifiers.push_back(Modifier::kMaskMod);
      s.limitations.emplace_back(
          "score_mod / mask_mod: the fused kernel compiled with them by NVRTC when the run is "
          "prepared (libnvrtc and the CUDA toolkit's headers needed; cached per process, "
          "RunResult.expression_compile_ms); mask_mod tiles classified on the GPU before timing "
          "(mask_preparation_ms)");
      if (cuda::flash::FlashBackwardEnabled()) {
        s.limitations.emplace_back(
            "backward: the mma.sync kernel (FlashAttention-2 style) on every device, head dims up "
            "to 128/128, built-in modifiers only (no score_mod or mask_mod with PHASE_BACKWARD); "
            "its forward is the mma.sync kernel keeping the log-sum-exp and float32 O; dQ summed "
            "in float32 with atomics (not bit-for-bit deterministic)");
      } else {
        s.limitations.emplace_back("forward only: no PHASE_BACKWARD");
      }
      if (cuda::flash::FlashDecodeEnabled()) {
        // Every cache kind, through the decode kernel's allow-list (CheckCudaSupport).
        s.cache_formats.push_back(CacheFormat::kInt8);
        s.cache_formats.push_back(CacheFormat::kInt4);
        s.paged_kv_cache = true;
        s.limitations.emplace_back(
            "decode: the split-KV kernel (flash-decoding on tensor cores, float32 softmax) for S_q "
            "1-64, D_qk = D_v in {32, 64, 128, 256}, no score_mod or mask_mod; native, paged, "
            "int8, int4 and SAQ caches read at their stored width, the query rows of every head "
            "sharing a KV head in one block. Paged and quantized caches run only there; a native "
            "contiguous decode outside it runs on the forward kernels");
      } else {
        s.limitations.emplace_back(
            "decode: contiguous native cache only (no paging, no int8/int4/SAQ), on the forward "
            "kernels");
      }
      s.auto_priority = 30;
      break;
    case CudaBackendKind::kUnfused:
      // Client expressions: the materialized float32 scores take per-pair kernels compiled with
      // NVRTC, with ALiBi and softcap moved out of the softmax into a pass before them so the
      // order stays variants.md §4b's.
      s.modifiers.push_back(Modifier::kScoreMod);
      s.modifiers.push_back(Modifier::kMaskMod);
      s.phases.push_back(Phase::kBackward);
      s.limitations.emplace_back("computes every score: masks do not skip work");
      s.limitations.emplace_back(
          "score_mod / mask_mod: compiled with NVRTC when the run is prepared (libnvrtc needed; "
          "cached per process, RunResult.expression_compile_ms), applied per score pair");
      s.limitations.emplace_back(
          "backward: S and dP recomputed by cuBLAS and materialized in float32 per chunk, P and dS "
          "rounded to the dtype as GEMM operands, dQ, dK, dV summed in float32 over rounds of "
          "heads sharing no query or key/value head (deterministic, no atomics)");
      s.limitations.emplace_back(
          "backward: no score_mod or mask_mod (FAILED_PRECONDITION with PHASE_BACKWARD; "
          "cpu_reference runs them)");
      s.limitations.emplace_back(
          "decode: contiguous native cache only (no paging, no int8/int4/SAQ)");
      s.auto_priority = 20;
      break;
    case CudaBackendKind::kReference:
      s.phases.push_back(Phase::kBackward);
      // FP8 (prefill at core scope, by validation) on the float32 path: DeviceDType.
      s.dtypes.push_back(DType::kFloat8E4M3);
      s.limitations.emplace_back(
          "DTYPE_FLOAT8_E4M3: the codes times their scales uploaded as float32 and run on the "
          "float32 path, O rounded to bfloat16 on the host: a check of FP8 results, not a "
          "measure of FP8 speed (its timings read 4-byte inputs)");
      // The decode cache as stored (kernels/spec/kv_cache_store.h), read through its page table
      // and dequantized per element.
      s.cache_formats.push_back(CacheFormat::kInt8);
      s.cache_formats.push_back(CacheFormat::kInt4);
      s.paged_kv_cache = true;
      s.limitations.emplace_back("one query row per block: slow by design");
      s.limitations.emplace_back(
          "backward: a key pass and a query pass that both recompute S and dP (seven matmuls' "
          "work where the FLOP count has five), no atomics, deterministic");
      s.auto_priority = 10;
      break;
  }
  // Every sum in one order, but cuda_flash's backward's: its dQ is summed with float32 atomics.
  for (Phase p : s.phases) {
    if (kind != CudaBackendKind::kFlash || p != Phase::kBackward) {
      s.deterministic_phases.push_back(p);
    }
  }
  return s;
}

bool UsesFlashDecode(const Problem& problem) {
  if (problem.phase != Phase::kDecode || !cuda::flash::FlashDecodeEnabled()) return false;
  absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
  return shapes.ok() && cuda::flash::DecodeRefusal(cuda::ShapeArgs(problem, *shapes)).empty();
}

absl::Status CheckCudaSupport(CudaBackendKind kind, const Problem& problem,
                              const cuda::flash::FlashDevice& device) {
  const char* name = CudaBackendName(kind);
  if (absl::Status s = CheckSupport(CudaBackendSupport(kind), problem, name); !s.ok()) return s;
  // The allow-lists have one modifier list for every phase; the backward's may be shorter.
  if (problem.phase == Phase::kBackward) {
    const std::vector<Modifier> allowed = CudaBackwardModifiers(kind);
    for (Modifier m : ModifiersOf(problem)) {
      if (std::find(allowed.begin(), allowed.end(), m) != allowed.end()) continue;
      std::vector<std::string> names;
      for (Modifier a : allowed) names.emplace_back(ModifierName(a));
      return absl::FailedPreconditionError(
          absl::StrCat("backend ", name, " does not support spec.", ModifierName(m),
                       " with spec.phase=PHASE_BACKWARD (supports with PHASE_BACKWARD: ",
                       names.empty() ? "none" : absl::StrJoin(names, ", "), ")"));
    }
  }
  // Past the allow-list an expression still needs NVRTC at run time; refusing here (not failing
  // in Prepare) lets `auto` move on to a backend that interprets it.
  if ((problem.score_mod || problem.mask_mod) && !cuda::NvrtcAvailable()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "backend ", name, " compiles ", problem.score_mod ? "spec.score_mod" : "spec.mask_mod",
        " with NVRTC, and libnvrtc could not be loaded on this server"));
  }
  // cuda_flash compiles its kernel with them, which needs the toolkit's headers as well.
  if ((problem.score_mod || problem.mask_mod) && kind == CudaBackendKind::kFlash) {
    if (absl::StatusOr<std::vector<std::string>> dirs = cuda::flash::FlashRtcIncludeDirs();
        !dirs.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("backend ", name, ": ", dirs.status().message()));
    }
  }
  absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
  if (!shapes.ok()) return shapes.status();
  const cuda::AttentionArgs args = cuda::ShapeArgs(problem, *shapes);
  std::string why;
  switch (kind) {
    case CudaBackendKind::kFlash:
      if (problem.phase == Phase::kBackward) {
        // Reached only when FlashBackwardEnabled() (CheckSupport refused the phase otherwise).
        why = cuda::flash::Sm80BackwardRefusal(args, device);
        if (!why.empty()) why = cuda::flash::Sm80BackwardAllowList().name + ": " + why;
      } else if (problem.phase == Phase::kDecode &&
                 (cuda::DeviceKvCache::Needed(problem) || UsesFlashDecode(problem))) {
        why = cuda::flash::DecodeRefusal(args);
        if (!why.empty()) {
          why = "spec.kv_cache (paged or quantized) is read only by the decode kernel, and " + why;
        }
      } else {
        why = cuda::flash::FlashRefusal(args, device);
      }
      break;
    case CudaBackendKind::kUnfused:
      why = cuda::UnfusedAttention::UnsupportedReason(args);
      break;
    case CudaBackendKind::kReference:
      break;
  }
  if (!why.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("backend ", name, ": ", why));
  }
  return absl::OkStatus();
}

}  // namespace attnbench
