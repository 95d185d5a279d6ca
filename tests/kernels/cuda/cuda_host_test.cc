// The host side of the CUDA backends, which runs without a device (so CI exercises it): a
// Problem turned into the kernels' AttentionArgs (sizes, scale, mask geometry, modifiers), the
// refusals every GPU backend shares, the input copies kept for rotation, and the fused and
// unfused kernels' support decisions and scratch sizing, PHASE_BACKWARD on cuda_unfused and
// cuda_reference (not cuda_flash) and the device memory its buffers take, and the unfused
// backward's head rounds, scratch plan and argument checks, all judged on shapes alone.
#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/backend/cuda_support.h"
#include "kernels/cuda/backend/device_backward.h"
#include "kernels/cuda/backend/device_problem.h"
#include "kernels/cuda/backend/layer_projections.h"
#include "kernels/cuda/expr/expression_module.h"
#include "kernels/cuda/expr/nvrtc_compiler.h"
#include "kernels/cuda/flash/decode.h"
#include "kernels/cuda/flash/flash.h"
#include "kernels/cuda/flash/flash_rtc.h"
#include "kernels/cuda/flash/support.h"
#include "kernels/cuda/unfused/unfused_attention.h"
#include "kernels/cuda/unfused/unfused_backward.h"
#include "kernels/cuda/unfused/unfused_kernels.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/shapes.h"

namespace attnbench::cuda {
namespace {

// B = 2, S_q = 77, S_kv = 131, D_qk = 96, D_v = 64, GQA 6/2, bfloat16.
Problem Base() {
  Problem p;
  p.batch_size = 2;
  p.seq_len_q = 77;
  p.seq_len_kv = 131;
  p.head_dim_qk = 96;
  p.head_dim_v = 64;
  p.layout.kind = LayoutKind::kGqa;
  p.layout.num_query_heads = 6;
  p.layout.num_kv_heads = 2;
  p.dtype = DType::kBFloat16;
  return p;
}

flash::FlashDevice HopperTraits() {
  flash::FlashDevice d;
  d.cc_major = 9;
  d.cc_minor = 0;
  d.sm90_code = true;
  d.tma = true;
  d.smem_optin_bytes = 227 * 1024;
  return d;
}

AttentionArgs ArgsOf(const Problem& raw) {
  const Problem p = NormalizeProblem(raw);
  EXPECT_TRUE(ValidateProblem(p).ok()) << ValidateProblem(p);
  absl::StatusOr<ProblemShapes> shapes = ShapesOf(p);
  EXPECT_TRUE(shapes.ok());
  return ShapeArgs(p, *shapes);
}

TEST(ShapeArgsTest, SizesScaleAndAlignment) {
  const AttentionArgs a = ArgsOf(Base());
  EXPECT_EQ(a.storage, Storage::kBFloat16);
  EXPECT_EQ(a.batch, 2);
  EXPECT_EQ(a.seq_q, 77);
  EXPECT_EQ(a.seq_kv, 131);
  EXPECT_EQ(a.heads_q, 6);
  EXPECT_EQ(a.heads_kv, 2);
  EXPECT_EQ(a.heads_out, 6);
  EXPECT_EQ(a.dim_qk, 96);
  EXPECT_EQ(a.dim_v, 64);
  EXPECT_FLOAT_EQ(a.scale, static_cast<float>(1 / std::sqrt(96.0)));
  EXPECT_EQ(a.offset, 131 - 77);  // bottom-right alignment
  EXPECT_EQ(a.mask, MaskCode::kNone);
  EXPECT_EQ(a.q, nullptr);  // shapes only: no device memory yet
  EXPECT_EQ(a.head_map, nullptr);
  EXPECT_EQ(a.rope_dims, 0);
  EXPECT_EQ(a.softcap, 0);

  Problem p = Base();
  p.scale = 0.25;
  p.dtype = DType::kFloat16;
  EXPECT_FLOAT_EQ(ArgsOf(p).scale, 0.25f);
  EXPECT_EQ(ArgsOf(p).storage, Storage::kFloat16);
  p.dtype = DType::kFloat32;
  EXPECT_EQ(ArgsOf(p).storage, Storage::kFloat32);
}

TEST(ShapeArgsTest, MasksBecomeCodesAndGeometry) {
  Problem p = Base();
  p.mask.kind = MaskKind::kCausal;
  EXPECT_EQ(ArgsOf(p).mask, MaskCode::kCausal);

  p.mask.kind = MaskKind::kSlidingWindow;
  p.mask.left_tokens = 17;
  p.mask.right_tokens = std::nullopt;  // unbounded on the right
  AttentionArgs a = ArgsOf(p);
  EXPECT_EQ(a.mask, MaskCode::kWindow);
  EXPECT_EQ(a.window_left, 17);
  EXPECT_LT(a.window_right, 0);

  p.mask = {};
  p.mask.kind = MaskKind::kBlockSparse;
  p.mask.query_block_tokens = 16;
  p.mask.kv_block_tokens = 32;
  p.mask.blocks = {{0, 0}, {4, 4}};
  a = ArgsOf(p);
  EXPECT_EQ(a.mask, MaskCode::kBlock);
  EXPECT_EQ(a.block_q, 16);
  EXPECT_EQ(a.block_k, 32);
  EXPECT_EQ(a.block_rows, 5);  // ceil(77 / 16)
  EXPECT_EQ(a.block_cols, 5);  // ceil(131 / 32)
  EXPECT_FALSE(a.block_per_head);
  EXPECT_FALSE(a.block_causal);
  p.mask.intersect_causal = true;
  EXPECT_TRUE(ArgsOf(p).block_causal);

  p.mask = {};
  p.mask.kind = MaskKind::kProbabilisticBlockSparse;
  p.mask.query_block_tokens = 8;
  p.mask.kv_block_tokens = 8;
  p.mask.c_coefficient = 0.5;
  p.mask.alpha = 1.0;
  a = ArgsOf(p);
  EXPECT_EQ(a.mask, MaskCode::kBlock);
  EXPECT_TRUE(a.block_per_head);  // drawn per (batch, head)
  EXPECT_TRUE(a.block_causal);    // always intersected with causal (§3)
}

TEST(ShapeArgsTest, Modifiers) {
  Problem p = Base();
  p.rope = {true, 500.0, 32};
  p.softcap = {true, 2.5};
  const AttentionArgs a = ArgsOf(p);
  EXPECT_EQ(a.rope_dims, 32);
  EXPECT_FLOAT_EQ(a.softcap, 2.5f);
  p.rope = {true, std::nullopt, std::nullopt};
  EXPECT_EQ(ArgsOf(p).rope_dims, 96);  // default: every dimension of D_qk
}

TEST(CudaSupportTest, RefusesNamingTheField) {
  struct Refusal {
    std::string field;
    void (*edit)(Problem&);
    // cuda_reference reads paged and quantized decode caches (cuda_flash within its decode
    // kernel's allow-list), and FP8 inputs.
    bool reference_runs = false;
  };
  // Refused by every CUDA backend but where marked (PHASE_BACKWARD by cuda_flash:
  // BackwardSupportTest).
  const Refusal refusals[] = {
      // cuda_reference runs FP8 on its float32 path (DeviceDType).
      {"DTYPE_FLOAT8_E4M3", [](Problem& p) { p.dtype = DType::kFloat8E4M3; }, true},
      {"spec.kv_cache.paging",
       [](Problem& p) {
         p.phase = Phase::kDecode;
         p.kv_cache.paged = true;
         p.kv_cache.page_size_tokens = 16;
       },
       true},
      {"CACHE_FORMAT_INT8",
       [](Problem& p) {
         p.phase = Phase::kDecode;
         p.kv_cache.format = CacheFormat::kInt8;
       },
       true},
      {"CACHE_FORMAT_INT4",
       [](Problem& p) {
         p.phase = Phase::kDecode;
         p.kv_cache.saq_bands = {{8, CacheFormat::kNative}, {std::nullopt, CacheFormat::kInt4}};
       },
       true},
  };
  for (const Refusal& r : refusals) {
    Problem p = Base();
    r.edit(p);
    for (CudaBackendKind kind :
         {CudaBackendKind::kFlash, CudaBackendKind::kUnfused, CudaBackendKind::kReference}) {
      const absl::Status s = CheckCudaSupport(kind, NormalizeProblem(p), HopperTraits());
      if (kind == CudaBackendKind::kReference && r.reference_runs) {
        EXPECT_TRUE(s.ok()) << r.field << ": " << s;
        continue;
      }
      // cuda_flash reads these caches with its decode kernel alone (when switched on), whose
      // allow-list this shape (S_q 77, D 96/64) is outside (FlashDecodeSupportTest).
      if (kind == CudaBackendKind::kFlash && r.reference_runs && p.phase == Phase::kDecode &&
          flash::FlashDecodeEnabled()) {
        EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << r.field;
        EXPECT_NE(std::string(s.message()).find("spec.kv_cache"), std::string::npos) << s;
        EXPECT_NE(std::string(s.message()).find("decode kernel takes S_q from 1 to 64"),
                  std::string::npos)
            << s;
        continue;
      }
      EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << r.field;
      EXPECT_NE(std::string(s.message()).find(r.field), std::string::npos) << s;
      EXPECT_NE(std::string(s.message()).find(CudaBackendName(kind)), std::string::npos) << s;
    }
  }
  Problem decode = Base();
  decode.phase = Phase::kDecode;
  decode.seq_len_q = 1;
  EXPECT_TRUE(
      CheckCudaSupport(CudaBackendKind::kFlash, NormalizeProblem(decode), HopperTraits()).ok());
}

// Client expressions: cuda_unfused and cuda_flash list score_mod and mask_mod and take them with
// every built-in modifier and mask, as long as NVRTC can be loaded (and, for cuda_flash, which
// compiles its kernel with them, the CUDA toolkit's headers found); cuda_reference refuses them
// naming the field.
TEST(CudaSupportTest, ExpressionsRunOnUnfusedAndFlash) {
  const auto lists = [](CudaBackendKind kind, Modifier m) {
    const std::vector<Modifier>& mods = CudaBackendSupport(kind).modifiers;
    return std::find(mods.begin(), mods.end(), m) != mods.end();
  };
  for (Modifier m : {Modifier::kScoreMod, Modifier::kMaskMod}) {
    EXPECT_TRUE(lists(CudaBackendKind::kUnfused, m)) << ModifierName(m);
    EXPECT_TRUE(lists(CudaBackendKind::kFlash, m)) << ModifierName(m);
    EXPECT_FALSE(lists(CudaBackendKind::kReference, m)) << ModifierName(m);
  }
  struct Case {
    std::string field;
    void (*edit)(Problem&);
  };
  const Case cases[] = {
      {"score_mod", [](Problem& p) { p.score_mod = "s - 0.5 * (q - kv)"; }},
      {"mask_mod", [](Problem& p) { p.mask_mod = "kv < 4 || q - kv < 16"; }},
  };
  for (const Case& c : cases) {
    Problem p = Base();
    c.edit(p);
    // Every built-in on top: the order question the unfused backend had to answer.
    p.mask.kind = MaskKind::kCausal;
    p.rope = {true, std::nullopt, std::nullopt};
    p.alibi = {true, AlibiSchedule::kGeometric, std::nullopt};
    p.softcap = {true, 2.5};
    const Problem n = NormalizeProblem(p);
    ASSERT_TRUE(ValidateProblem(n).ok()) << ValidateProblem(n);
    const absl::Status s = CheckCudaSupport(CudaBackendKind::kReference, n, HopperTraits());
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << c.field;
    EXPECT_NE(std::string(s.message()).find(c.field), std::string::npos) << s;
    EXPECT_NE(std::string(s.message()).find(CudaBackendName(CudaBackendKind::kReference)),
              std::string::npos)
        << s;
    const absl::Status unfused = CheckCudaSupport(CudaBackendKind::kUnfused, n, HopperTraits());
    const absl::Status fused = CheckCudaSupport(CudaBackendKind::kFlash, n, HopperTraits());
    if (NvrtcAvailable()) {
      EXPECT_TRUE(unfused.ok()) << unfused;
      if (flash::FlashRtcIncludeDirs().ok()) {
        EXPECT_TRUE(fused.ok()) << fused;
      } else {
        EXPECT_EQ(fused.code(), absl::StatusCode::kFailedPrecondition) << fused;
        EXPECT_NE(std::string(fused.message()).find("CUDA_HOME"), std::string::npos) << fused;
      }
    } else {
      for (const absl::Status& st : {unfused, fused}) {
        EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << c.field;
        EXPECT_NE(std::string(st.message()).find("spec." + c.field), std::string::npos) << st;
        EXPECT_NE(std::string(st.message()).find("NVRTC"), std::string::npos) << st;
      }
    }
    // The sm_80 kernel runs them as well.
    flash::FlashDevice ampere;
    ampere.cc_major = 8;
    ampere.smem_optin_bytes = 163 * 1024;
    if (NvrtcAvailable() && flash::FlashRtcIncludeDirs().ok()) {
      EXPECT_TRUE(CheckCudaSupport(CudaBackendKind::kFlash, n, ampere).ok());
    }
  }
}

TEST(ExpressionArchTest, HopperGetsTheArchSpecificTarget) {
  EXPECT_EQ(ExpressionArch(9, 0), "sm_90a");
  EXPECT_EQ(ExpressionArch(8, 0), "sm_80");
  EXPECT_EQ(ExpressionArch(8, 9), "sm_89");
  EXPECT_EQ(ExpressionArch(10, 0), "sm_100");
}

TEST(ExpressionCacheTest, OneCacheForTheProcess) {
  EXPECT_EQ(&SharedExpressionModuleCache(), &SharedExpressionModuleCache());
}

// PHASE_BACKWARD runs on cuda_unfused and cuda_reference for every layout, mask, built-in modifier
// and 16/32-bit dtype, and GetCapabilities says so. cuda_flash runs the 16-bit ones on its
// mma.sync backward where it declares it (flash/support.h FlashBackwardEnabled()), on Hopper and
// Ampere alike, refusing float32 naming spec.dtype; otherwise it refuses every one naming
// spec.phase.
TEST(BackwardSupportTest, OnCudaUnfusedAndCudaReference) {
  struct Variant {
    const char* name;
    void (*edit)(Problem&);
  };
  const Variant variants[] = {
      {"gqa", [](Problem&) {}},
      {"mqa_causal",
       [](Problem& p) {
         p.layout = {};
         p.layout.kind = LayoutKind::kMqa;
         p.layout.num_heads = 4;
         p.mask.kind = MaskKind::kCausal;
       }},
      {"gqkva_window",
       [](Problem& p) {
         p.layout = {};
         p.layout.kind = LayoutKind::kGqkva;
         p.layout.query_groups = 2;
         p.layout.kv_groups = 3;
         p.mask.kind = MaskKind::kSlidingWindow;
         p.mask.left_tokens = 9;
         p.mask.right_tokens = 0;
       }},
      {"explicit_block_sparse",
       [](Problem& p) {
         p.layout = {};
         p.layout.kind = LayoutKind::kExplicit;
         p.layout.num_query_heads = 3;
         p.layout.num_kv_heads = 2;
         p.layout.pairs = {{2, 0}, {0, 1}, {2, 1}};
         p.mask.kind = MaskKind::kBlockSparse;
         p.mask.query_block_tokens = 16;
         p.mask.kv_block_tokens = 32;
         p.mask.blocks = {{0, 0}, {4, 4}};
       }},
      {"probabilistic_all_modifiers",
       [](Problem& p) {
         p.mask.kind = MaskKind::kProbabilisticBlockSparse;
         p.mask.query_block_tokens = 8;
         p.mask.kv_block_tokens = 8;
         p.mask.c_coefficient = 0.5;
         p.mask.alpha = 1.0;
         p.rope = {true, std::nullopt, 32};
         p.alibi.enabled = true;
         p.softcap = {true, 20.0};
       }},
  };
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    for (const Variant& v : variants) {
      Problem p = Base();
      p.phase = Phase::kBackward;
      p.dtype = dtype;
      v.edit(p);
      const Problem n = NormalizeProblem(p);
      ASSERT_TRUE(ValidateProblem(n).ok()) << v.name << ": " << ValidateProblem(n);
      const std::string context = std::string(v.name) + "/" + DTypeName(dtype);
      for (CudaBackendKind kind : {CudaBackendKind::kUnfused, CudaBackendKind::kReference}) {
        EXPECT_TRUE(CheckCudaSupport(kind, n, HopperTraits()).ok())
            << CudaBackendName(kind) << " " << context << ": "
            << CheckCudaSupport(kind, n, HopperTraits());
      }
      flash::FlashDevice ampere;
      ampere.cc_major = 8;
      ampere.smem_optin_bytes = 163 * 1024;
      for (const flash::FlashDevice& device : {HopperTraits(), ampere}) {
        const absl::Status s = CheckCudaSupport(CudaBackendKind::kFlash, n, device);
        if (flash::FlashBackwardEnabled() && dtype != DType::kFloat32) {
          EXPECT_TRUE(s.ok()) << context << ": " << s;
          continue;
        }
        EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << context;
        // cuda_flash names float32 storage first: the dtype is checked before the phase.
        EXPECT_NE(std::string(s.message())
                      .find(dtype == DType::kFloat32 ? "spec.dtype=DTYPE_FLOAT32"
                                                     : "spec.phase=PHASE_BACKWARD"),
                  std::string::npos)
            << context << ": " << s;
        EXPECT_NE(std::string(s.message()).find("cuda_flash"), std::string::npos) << s;
      }
    }
  }
  // Before Ampere, no kernel of cuda_flash runs it.
  if (flash::FlashBackwardEnabled()) {
    Problem p = Base();
    p.phase = Phase::kBackward;
    flash::FlashDevice turing;
    turing.cc_major = 7;
    turing.cc_minor = 5;
    turing.smem_optin_bytes = 64 * 1024;
    const absl::Status s = CheckCudaSupport(CudaBackendKind::kFlash, NormalizeProblem(p), turing);
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_NE(std::string(s.message()).find("mma.sync backward"), std::string::npos) << s;
    // Head dims past its largest tile (128/128) are refused naming them.
    p.head_dim_qk = 192;
    p.head_dim_v = 128;
    const absl::Status wide =
        CheckCudaSupport(CudaBackendKind::kFlash, NormalizeProblem(p), HopperTraits());
    EXPECT_EQ(wide.code(), absl::StatusCode::kFailedPrecondition) << wide;
    EXPECT_NE(std::string(wide.message()).find("spec.head_dim_qk"), std::string::npos) << wide;
  }
  // FP8 has no backward at all (§1b: refused by validation, before any backend).
  Problem fp8 = Base();
  fp8.phase = Phase::kBackward;
  fp8.dtype = DType::kFloat8E4M3;
  EXPECT_EQ(ValidateProblem(NormalizeProblem(fp8)).code(), absl::StatusCode::kInvalidArgument);

  // GetCapabilities: the phase listed where it is checked, and nowhere else.
  auto lists_backward = [](CudaBackendKind kind) {
    const BackendSupport support = CudaBackendSupport(kind);
    int n = 0;
    for (Phase phase : support.phases) n += phase == Phase::kBackward ? 1 : 0;
    return n;
  };
  EXPECT_EQ(lists_backward(CudaBackendKind::kReference), 1);
  EXPECT_EQ(lists_backward(CudaBackendKind::kFlash), flash::FlashBackwardEnabled() ? 1 : 0);
  EXPECT_EQ(lists_backward(CudaBackendKind::kUnfused), 1);
  // The one kernel of cuda_flash that lists the phase, and only it, is the mma.sync backward.
  int backward_kernels = 0;
  for (const KernelSupport& k : CudaBackendSupport(CudaBackendKind::kFlash).kernels) {
    const bool backward = k.name == flash::Sm80BackwardAllowList().name;
    backward_kernels += backward ? 1 : 0;
    if (backward) {
      EXPECT_EQ(k.phases, std::vector<Phase>{Phase::kBackward});
    } else {
      for (Phase phase : k.phases) EXPECT_NE(phase, Phase::kBackward) << k.name;
    }
  }
  EXPECT_EQ(backward_kernels, flash::FlashBackwardEnabled() ? 1 : 0);
}

// cuda_flash's backward on the host: its workspace is the float32 dQ accumulator, one float per
// element of Q, and its name gives the tile the head dims land on (zero-padded) and the policies.
TEST(BackwardSupportTest, FlashBackwardWorkspaceAndName) {
  Problem p = Base();
  p.phase = Phase::kBackward;
  p.rope = {true, std::nullopt, std::nullopt};
  const AttentionArgs args = ArgsOf(p);
  EXPECT_EQ(flash::BackwardWorkspaceBytes(args), size_t{2} * 77 * 6 * 96 * sizeof(float));
  EXPECT_EQ(flash::BackwardKernelName(args, HopperTraits()),
            "mma.sync backward D=128/128 Br=32 Bc=64 +rope (dQ by atomics)");
  p.head_dim_qk = 40;
  p.head_dim_v = 24;
  p.rope = {};
  p.softcap = {true, 5.0};
  EXPECT_EQ(flash::BackwardKernelName(ArgsOf(p), HopperTraits()),
            "mma.sync backward D=64/64 Br=64 Bc=64 +softcap (dQ by atomics)");
  p.head_dim_qk = 256;
  p.head_dim_v = 256;
  EXPECT_EQ(flash::BackwardKernelName(ArgsOf(p), HopperTraits()), "");
}

// cuda_unfused runs score_mod and mask_mod forward only: its backward has no derivative of an
// expression, and says so through its backward allow-list (CudaBackwardModifiers) before it looks
// for NVRTC, naming the field and the phase; GetCapabilities lists it as a limitation. The
// built-in modifiers it takes with PHASE_BACKWARD are the forward's.
TEST(BackwardSupportTest, UnfusedRefusesExpressionsWithBackwardOnly) {
  const std::vector<Modifier> unfused = CudaBackwardModifiers(CudaBackendKind::kUnfused);
  EXPECT_EQ(unfused,
            (std::vector<Modifier>{Modifier::kRope, Modifier::kAlibi, Modifier::kSoftcap}));
  EXPECT_EQ(CudaBackwardModifiers(CudaBackendKind::kReference), unfused);
  // cuda_flash's backward, where declared, takes the same built-ins and no expression either.
  if (flash::FlashBackwardEnabled()) {
    EXPECT_EQ(CudaBackwardModifiers(CudaBackendKind::kFlash), unfused);
  } else {
    EXPECT_TRUE(CudaBackwardModifiers(CudaBackendKind::kFlash).empty());
  }
  struct Case {
    std::string field;
    void (*edit)(Problem&);
  };
  const Case cases[] = {
      {"score_mod", [](Problem& p) { p.score_mod = "s - 0.5 * (q - kv)"; }},
      {"mask_mod", [](Problem& p) { p.mask_mod = "kv < 4 || q - kv < 16"; }},
  };
  for (const Case& c : cases) {
    Problem p = Base();
    c.edit(p);
    p.rope = {true, std::nullopt, std::nullopt};
    p.softcap = {true, 2.5};
    p.phase = Phase::kBackward;
    const Problem backward = NormalizeProblem(p);
    ASSERT_TRUE(ValidateProblem(backward).ok()) << ValidateProblem(backward);
    const absl::Status s = CheckCudaSupport(CudaBackendKind::kUnfused, backward, HopperTraits());
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << c.field;
    EXPECT_NE(std::string(s.message()).find("spec." + c.field + " with spec.phase=PHASE_BACKWARD"),
              std::string::npos)
        << s;
    EXPECT_NE(std::string(s.message()).find("cuda_unfused"), std::string::npos) << s;
    if (flash::FlashBackwardEnabled()) {
      const absl::Status f = CheckCudaSupport(CudaBackendKind::kFlash, backward, HopperTraits());
      EXPECT_EQ(f.code(), absl::StatusCode::kFailedPrecondition) << c.field;
      EXPECT_NE(
          std::string(f.message()).find("spec." + c.field + " with spec.phase=PHASE_BACKWARD"),
          std::string::npos)
          << f;
    }
    // Forward, the same expression is the unfused backend's (given NVRTC).
    p.phase = Phase::kPrefill;
    const absl::Status prefill =
        CheckCudaSupport(CudaBackendKind::kUnfused, NormalizeProblem(p), HopperTraits());
    EXPECT_EQ(prefill.ok(), NvrtcAvailable()) << prefill;
  }
  bool documented = false;
  for (const std::string& l : CudaBackendSupport(CudaBackendKind::kUnfused).limitations) {
    documented = documented || (l.find("backward") != std::string::npos &&
                                l.find("score_mod") != std::string::npos &&
                                l.find("mask_mod") != std::string::npos);
  }
  EXPECT_TRUE(documented);
}

// The backward's device buffers, element by element: dO, dQ, dK, dV at the stored width, O kept
// in float32, the log-sum-exp and D (a float per output row each), and the inverted head map.
TEST(DeviceBackwardTest, EstimateCoversGradientsLseRowTermsAndGradOutput) {
  for (DType dtype : {DType::kBFloat16, DType::kFloat32}) {
    Problem p = Base();  // B 2, S_q 77, S_kv 131, D_qk 96, D_v 64, GQA 6/2
    p.phase = Phase::kBackward;
    p.dtype = dtype;
    const Problem n = NormalizeProblem(p);
    const ProblemShapes s = *ShapesOf(n);
    const uint64_t w = dtype == DType::kFloat32 ? 4 : 2;
    const uint64_t o = 2 * 77 * 6 * 64, q = 2 * 77 * 6 * 96, k = 2 * 131 * 2 * 96,
                   v = 2 * 131 * 2 * 64, rows = 2 * 6 * 77;
    const uint64_t heads = (6 + 1) + 6 + (2 + 1) + 6;  // offsets and members, both sides
    EXPECT_EQ(DeviceBackward::EstimateBytes(n, s),
              w * o + 4 * o + 2 * 4 * rows + w * (q + k + v) + 4 * heads)
        << DTypeName(dtype);
  }
  // It grows with the sequence: dO and the row statistics with S_q, dK and dV with S_kv.
  Problem p = Base();
  p.phase = Phase::kBackward;
  const Problem shorter = NormalizeProblem(p);
  p.seq_len_kv *= 2;
  const Problem longer = NormalizeProblem(p);
  EXPECT_EQ(DeviceBackward::EstimateBytes(longer, *ShapesOf(longer)) -
                DeviceBackward::EstimateBytes(shorter, *ShapesOf(shorter)),
            2u * (2 * 131 * 2 * 96 + 2 * 131 * 2 * 64));
}

TEST(DeviceProblemTest, InputCopiesRotateOnlyWhenTheyFitInL2) {
  Problem p = NormalizeProblem(Base());
  const ProblemShapes s = *ShapesOf(p);
  const uint64_t l2 = 50ull << 20;
  EXPECT_EQ(DeviceProblem::InputSetsFor(s, p.dtype, l2), 4);  // small inputs: capped at 4
  p.batch_size = 4096;                                        // ~330 MB of inputs: one copy
  EXPECT_EQ(DeviceProblem::InputSetsFor(*ShapesOf(p), p.dtype, l2), 1);
  // The estimate covers every copy, the output and the tables.
  const Problem small = NormalizeProblem(Base());
  const uint64_t inputs = (2 * 77 * 6 * 96 + 2 * 131 * 2 * 96 + 2 * 131 * 2 * 64) * 2;
  const uint64_t output = 2 * 77 * 6 * 64 * 2;
  EXPECT_GE(DeviceProblem::EstimateBytes(small, s, l2), 4 * inputs + output);
}

// SCOPE_LAYER runs on every CUDA backend: the projections wrap whatever core the backend has.
TEST(CudaSupportTest, EveryBackendRunsLayers) {
  Problem p = Base();
  p.seq_len_kv = p.seq_len_q;
  p.scope = Scope::kLayer;
  p.d_model = 200;
  const Problem n = NormalizeProblem(p);
  ASSERT_TRUE(ValidateProblem(n).ok()) << ValidateProblem(n);
  for (CudaBackendKind kind :
       {CudaBackendKind::kFlash, CudaBackendKind::kUnfused, CudaBackendKind::kReference}) {
    EXPECT_TRUE(CheckCudaSupport(kind, n, HopperTraits()).ok()) << CudaBackendName(kind);
  }
}

// PHASE_BACKWARD at SCOPE_LAYER sits behind one switch (CudaLayerBackwardEnabled) until it has
// passed on a device: off, every CUDA backend refuses it by name before any device work; on, every
// backend with a core backward declares it (BackendSupport::layer_backward, with a limitation
// saying how) and accepts the problem exactly where it accepts the core's backward.
TEST(CudaSupportTest, LayerBackwardIsDeclaredOnlyBehindItsSwitch) {
  Problem p = Base();
  p.seq_len_kv = p.seq_len_q;
  p.scope = Scope::kLayer;
  p.d_model = 200;
  p.phase = Phase::kBackward;
  const Problem n = NormalizeProblem(p);
  ASSERT_TRUE(ValidateProblem(n).ok()) << ValidateProblem(n);
  const CudaBackendKind kinds[] = {CudaBackendKind::kFlash, CudaBackendKind::kUnfused,
                                   CudaBackendKind::kReference};
  if (!CudaLayerBackwardEnabled()) {
    for (CudaBackendKind kind : kinds) {
      EXPECT_FALSE(CudaBackendSupport(kind).layer_backward) << CudaBackendName(kind);
      const absl::Status s = CheckCudaSupport(kind, n, HopperTraits());
      EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << CudaBackendName(kind) << s;
      EXPECT_NE(s.message().find("PHASE_BACKWARD"), std::string::npos) << s;
    }
    // The same problem at core scope is refused for nothing but what each backend lacks.
    Problem core = n;
    core.scope = Scope::kCore;
    core.d_model.reset();
    for (CudaBackendKind kind : {CudaBackendKind::kUnfused, CudaBackendKind::kReference}) {
      EXPECT_TRUE(CheckCudaSupport(kind, core, HopperTraits()).ok()) << CudaBackendName(kind);
    }
  }
  EnableCudaLayerBackwardForTest();
  ASSERT_TRUE(CudaLayerBackwardEnabled());
  for (CudaBackendKind kind : kinds) {
    const BackendSupport support = CudaBackendSupport(kind);
    EXPECT_TRUE(support.layer_backward) << CudaBackendName(kind);
    const bool has_backward = std::find(support.phases.begin(), support.phases.end(),
                                        Phase::kBackward) != support.phases.end();
    EXPECT_TRUE(has_backward || kind == CudaBackendKind::kFlash) << CudaBackendName(kind);
    const bool says_how =
        std::any_of(support.limitations.begin(), support.limitations.end(), [](const auto& l) {
          return l.find("SCOPE_LAYER with PHASE_BACKWARD") != std::string::npos;
        });
    EXPECT_TRUE(says_how) << CudaBackendName(kind);
    // The layer's backward is accepted exactly where its core's is.
    Problem core = n;
    core.scope = Scope::kCore;
    core.d_model.reset();
    const absl::Status s = CheckCudaSupport(kind, n, HopperTraits());
    const absl::Status core_status = CheckCudaSupport(kind, core, HopperTraits());
    EXPECT_EQ(s.code(), core_status.code()) << CudaBackendName(kind) << ": " << s;
    if (has_backward && kind != CudaBackendKind::kFlash) {
      EXPECT_TRUE(s.ok()) << CudaBackendName(kind) << ": " << s;
    }
    if (!has_backward) {
      EXPECT_NE(s.message().find("spec.phase"), std::string::npos) << s;
    }
  }
}

// Deterministic phases: every listed phase on cuda_reference and cuda_unfused; cuda_flash's
// forward but not its backward (dQ summed with float32 atomics), which it refuses by name when a
// request asks for the same bits, leaving `auto` to cuda_unfused.
TEST(CudaSupportTest, EveryPhaseIsDeterministicButTheFlashBackward) {
  for (CudaBackendKind kind :
       {CudaBackendKind::kFlash, CudaBackendKind::kUnfused, CudaBackendKind::kReference}) {
    const BackendSupport support = CudaBackendSupport(kind);
    std::vector<Phase> expected;
    for (Phase p : support.phases) {
      if (kind != CudaBackendKind::kFlash || p != Phase::kBackward) expected.push_back(p);
    }
    EXPECT_EQ(support.deterministic_phases, expected) << CudaBackendName(kind);
  }
  Problem p = Base();
  p.phase = Phase::kBackward;
  p.head_dim_qk = 64;
  p.head_dim_v = 64;
  p.deterministic = true;
  const Problem n = NormalizeProblem(p);
  ASSERT_TRUE(ValidateProblem(n).ok()) << ValidateProblem(n);
  for (CudaBackendKind kind : {CudaBackendKind::kUnfused, CudaBackendKind::kReference}) {
    EXPECT_TRUE(CheckCudaSupport(kind, n, HopperTraits()).ok()) << CudaBackendName(kind);
  }
  const absl::Status s = CheckCudaSupport(CudaBackendKind::kFlash, n, HopperTraits());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  if (cuda::flash::FlashBackwardEnabled()) {
    EXPECT_NE(s.message().find("measurement.deterministic"), std::string::npos) << s;
    Problem free = n;
    free.deterministic = false;
    EXPECT_TRUE(CheckCudaSupport(CudaBackendKind::kFlash, free, HopperTraits()).ok());
  }
  Problem forward = n;
  forward.phase = Phase::kPrefill;
  EXPECT_TRUE(CheckCudaSupport(CudaBackendKind::kFlash, forward, HopperTraits()).ok());
}

// At layer scope Q, K, V are the projections' outputs, one copy in 256-byte-aligned regions; the
// estimate adds X, the weights and the core's O to Y and the tables.
TEST(DeviceProblemTest, LayerKeepsOneCopyAndCountsXWeightsAndCoreOutput) {
  Problem p = Base();  // GQA 6/2, D 96/64, bfloat16
  p.seq_len_kv = p.seq_len_q;
  p.scope = Scope::kLayer;
  p.d_model = 200;
  const Problem n = NormalizeProblem(p);
  const ProblemShapes s = *ShapesOf(n);
  EXPECT_EQ(DeviceProblem::InputSetsFor(s, n.dtype, 50ull << 20), 1);
  auto region = [](uint64_t elements) { return (elements * 2 + 255) / 256 * 256; };
  const uint64_t tokens = 2 * 77;
  const uint64_t expected =
      region(tokens * 200) +                                                // X
      region(200 * 6 * 96) + region(200 * 2 * 96) + region(200 * 2 * 64) +  // W_q, W_k, W_v
      region(6 * 64 * 200) +                                                // W_o
      region(tokens * 6 * 96) + region(tokens * 2 * 96) + region(tokens * 2 * 64) +  // Q, K, V
      region(tokens * 6 * 64) +                                                      // O
      tokens * 200 * 2 +                                                             // Y
      6 * 3 * sizeof(int32_t);                                                       // head map
  EXPECT_EQ(DeviceProblem::EstimateBytes(n, s, 50ull << 20), expected);
}

// Input projections of one width at one stride are one GEMM; anything else is not merged.
TEST(LayerProjectionsTest, BatchesProjectionsOfOneWidthAtOneStride) {
  alignas(256) static char w[1 << 16], out[1 << 16];
  LayerBuffers b;
  b.storage = Storage::kBFloat16;
  b.tokens = 10;
  b.d_model = 8;
  auto place = [&](int64_t wq, int64_t wk, int64_t wv, int64_t stride_w, int64_t stride_o) {
    const int64_t widths[3] = {wq, wk, wv};
    for (int p = 0; p < 3; ++p) {
      b.width[p] = widths[p];
      b.w[p] = w + p * stride_w * 2;
      b.projected[p] = out + p * stride_o * 2;
    }
  };
  place(16, 16, 16, 128, 160);  // MHA: all three, W 8x16 = 128 and Q 10x16 = 160 elements apart
  std::vector<ProjectionBatch> batches = InputProjectionBatches(b);
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].count, 3);
  EXPECT_EQ(batches[0].weight_stride, 128);
  EXPECT_EQ(batches[0].output_stride, 160);

  place(16, 16, 16, 128, 100);  // outputs would overlap (10 x 16 > 100): no batch
  EXPECT_EQ(InputProjectionBatches(b).size(), 3u);

  place(32, 16, 16, 512, 512);  // GQA: Q alone, then K and V together
  batches = InputProjectionBatches(b);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0].first, 0);
  EXPECT_EQ(batches[0].count, 1);
  EXPECT_EQ(batches[1].first, 1);
  EXPECT_EQ(batches[1].count, 2);

  place(16, 16, 8, 512, 512);  // D_qk != D_v: V alone
  batches = InputProjectionBatches(b);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0].count, 2);
  EXPECT_EQ(batches[1].first, 2);

  b.w[2] = static_cast<const char*>(b.w[1]) + 3;  // not a whole number of elements apart
  b.width[2] = 16;
  EXPECT_EQ(InputProjectionBatches(b).back().count, 1);
}

TEST(FlashSupportTest, JudgedOnShapes) {
  const flash::FlashDevice hopper = HopperTraits();
  flash::FlashDevice ampere = hopper;
  ampere.cc_major = 8;
  ampere.sm90_code = false;
  flash::FlashDevice turing = ampere;
  turing.cc_major = 7;
  turing.cc_minor = 5;
  Problem p = Base();
  EXPECT_EQ(flash::FlashRefusal(ArgsOf(p), hopper), "");
  EXPECT_EQ(flash::FlashRefusal(ArgsOf(p), ampere), "");
  EXPECT_NE(flash::FlashRefusal(ArgsOf(p), turing), "");  // no sm_75 tensor-core path
  p.dtype = DType::kFloat32;
  EXPECT_NE(flash::FlashRefusal(ArgsOf(p), hopper).find("float32"), std::string::npos);
  p = Base();
  p.head_dim_qk = 320;
  EXPECT_NE(flash::FlashRefusal(ArgsOf(p), hopper), "");
  p = Base();
  p.head_dim_qk = 80;  // padded to 96
  p.rope.enabled = true;
  p.seq_len_q = 200;  // S_q > S_kv: queries at negative positions
  EXPECT_EQ(flash::RouteOf(ArgsOf(p), hopper), flash::FlashRoute::kSm90);
  p.head_dim_qk = 84;  // not a multiple of 8: TMA cannot, mma.sync pads
  p.rope.rotary_dims = 84;
  EXPECT_EQ(flash::RouteOf(ArgsOf(p), hopper), flash::FlashRoute::kSm80);
}

// The Hopper kernel rotates K once per problem into its workspace under RoPE (rope_keys.cu): the
// backend must allocate exactly K's size there, and nothing where no pre-pass runs.
TEST(FlashSupportTest, WorkspaceHoldsRotatedKOnlyUnderRopeOnHopper) {
  const flash::FlashDevice hopper = HopperTraits();
  flash::FlashDevice ampere = hopper;
  ampere.cc_major = 8;
  ampere.sm90_code = false;
  Problem p = Base();
  EXPECT_EQ(flash::WorkspaceBytes(ArgsOf(p), hopper), 0u);
  p.rope.enabled = true;
  EXPECT_EQ(flash::WorkspaceBytes(ArgsOf(p), hopper), 2u * 131 * 2 * 96 * 2);  // B S_kv H_kv D_qk
  EXPECT_EQ(flash::WorkspaceBytes(ArgsOf(p), ampere), 0u);  // sm_80 rotates K as it loads it
  p.rope.rotary_dims = 32;                                  // partial: the rest is copied
  EXPECT_EQ(flash::WorkspaceBytes(ArgsOf(p), hopper), 2u * 131 * 2 * 96 * 2);
}

TEST(UnfusedSupportTest, ScratchStaysUnderTheCapAndCoversRope) {
  Problem p = Base();
  EXPECT_EQ(UnfusedAttention::UnsupportedReason(ArgsOf(p)), "");
  p.dtype = DType::kFloat32;
  EXPECT_EQ(UnfusedAttention::UnsupportedReason(ArgsOf(p)), "");
  // One (b, h) pair of 16k x 16k float32 scores is 1 GiB; a 64 MiB cap chunks query rows.
  p = Base();
  p.batch_size = 1;
  p.seq_len_q = p.seq_len_kv = 16384;
  const uint64_t cap = 64ull << 20;
  const uint64_t plain = UnfusedAttention::ScratchBytes(ArgsOf(p), cap);
  EXPECT_GT(plain, 0u);
  EXPECT_LE(plain, cap + (1ull << 20));
  p.rope.enabled = true;  // rotated copies of Q and K on top
  const uint64_t rope_bytes = (16384ull * 6 * 96 + 16384ull * 2 * 96) * 2;
  EXPECT_GE(UnfusedAttention::ScratchBytes(ArgsOf(p), cap), plain + rope_bytes);
}

// ---- the unfused backward's plan ----------------------------------------------------------------

std::vector<HeadPair> HeadMapOf(const Problem& raw) {
  const Problem p = NormalizeProblem(raw);
  EXPECT_TRUE(ValidateProblem(p).ok()) << ValidateProblem(p);
  absl::StatusOr<ProblemShapes> shapes = ShapesOf(p);
  EXPECT_TRUE(shapes.ok()) << shapes.status();
  return shapes.ok() ? shapes->heads.map : std::vector<HeadPair>{};
}

UnfusedHeadRounds RoundsOf(const std::vector<HeadPair>& map) {
  std::vector<int32_t> q, kv;
  for (const HeadPair& pair : map) {
    q.push_back(pair.query_head);
    kv.push_back(pair.kv_head);
  }
  return UnfusedBackward::HeadRounds(q, kv);
}

// No batched GEMM of the backward may hold two entries adding to the same accumulator: every
// round's heads read distinct query heads and distinct key/value heads. Every output head is in
// one round, ascending within it, and there are exactly as many rounds as the most heads sharing
// one query or key/value head (fewer cannot be; more would batch less).
TEST(UnfusedBackwardPlanTest, HeadRoundsShareNoHeadAndAreAsFewAsCanBe) {
  struct Layout {
    const char* name;
    void (*edit)(Problem&);
  };
  const Layout layouts[] = {
      {"mha",
       [](Problem& p) {
         p.layout = {};
         p.layout.kind = LayoutKind::kMha;
         p.layout.num_heads = 8;
       }},
      {"mqa",
       [](Problem& p) {
         p.layout = {};
         p.layout.kind = LayoutKind::kMqa;
         p.layout.num_heads = 5;
       }},
      {"gqa_6_2", [](Problem&) {}},
      {"gqa_32_8",
       [](Problem& p) {
         p.layout.num_query_heads = 32;
         p.layout.num_kv_heads = 8;
       }},
      {"sqa",
       [](Problem& p) {
         p.layout = {};
         p.layout.kind = LayoutKind::kSqa;
         p.layout.baseline_heads = 16;
         p.layout.num_query_heads = 8;
         p.layout.num_kv_heads = 2;
       }},
      {"ssqa",
       [](Problem& p) {
         p.layout = {};
         p.layout.kind = LayoutKind::kSymmetricSqa;
         p.layout.baseline_heads = 8;
       }},
      {"xsqa",
       [](Problem& p) {
         p.layout = {};
         p.layout.kind = LayoutKind::kExtremeSqa;
         p.layout.baseline_heads = 16;
       }},
      {"gqkva_2_3",
       [](Problem& p) {
         p.layout = {};
         p.layout.kind = LayoutKind::kGqkva;
         p.layout.query_groups = 2;
         p.layout.kv_groups = 3;
       }},
      {"gqkva_5_4",
       [](Problem& p) {
         p.layout = {};
         p.layout.kind = LayoutKind::kGqkva;
         p.layout.query_groups = 5;
         p.layout.kv_groups = 4;
       }},
      {"explicit",
       [](Problem& p) {
         p.layout = {};
         p.layout.kind = LayoutKind::kExplicit;
         p.layout.num_query_heads = 3;
         p.layout.num_kv_heads = 2;
         p.layout.pairs = {{2, 0}, {0, 1}, {2, 1}};
       }},
      {"explicit_repeated_pairs",
       [](Problem& p) {
         p.layout = {};
         p.layout.kind = LayoutKind::kExplicit;
         p.layout.num_query_heads = 4;
         p.layout.num_kv_heads = 3;
         p.layout.pairs = {{0, 0}, {1, 0}, {0, 0}, {3, 2}, {1, 1}, {2, 1}, {0, 2}, {3, 0}};
       }},
  };
  for (const Layout& l : layouts) {
    Problem p = Base();
    l.edit(p);
    const std::vector<HeadPair> map = HeadMapOf(p);
    ASSERT_FALSE(map.empty()) << l.name;
    const UnfusedHeadRounds rounds = RoundsOf(map);
    std::vector<int> per_q, per_kv;
    for (const HeadPair& pair : map) {
      per_q.resize(std::max<size_t>(per_q.size(), pair.query_head + 1));
      per_kv.resize(std::max<size_t>(per_kv.size(), pair.kv_head + 1));
      ++per_q[pair.query_head];
      ++per_kv[pair.kv_head];
    }
    const int most = std::max(*std::max_element(per_q.begin(), per_q.end()),
                              *std::max_element(per_kv.begin(), per_kv.end()));
    EXPECT_EQ(rounds.rounds(), most) << l.name;
    ASSERT_EQ(rounds.offsets.size(), static_cast<size_t>(rounds.rounds()) + 1) << l.name;
    EXPECT_EQ(rounds.offsets.front(), 0) << l.name;
    EXPECT_EQ(rounds.offsets.back(), static_cast<int32_t>(map.size())) << l.name;
    std::vector<int32_t> all = rounds.heads;
    std::sort(all.begin(), all.end());
    for (size_t h = 0; h < map.size(); ++h) EXPECT_EQ(all[h], static_cast<int32_t>(h)) << l.name;
    int largest = 0;
    for (int r = 0; r < rounds.rounds(); ++r) {
      std::set<int> q, kv;
      EXPECT_LT(rounds.offsets[r], rounds.offsets[r + 1]) << l.name << " round " << r << " empty";
      largest = std::max(largest, rounds.offsets[r + 1] - rounds.offsets[r]);
      for (int e = rounds.offsets[r]; e < rounds.offsets[r + 1]; ++e) {
        const HeadPair& pair = map[rounds.heads[e]];
        EXPECT_TRUE(q.insert(pair.query_head).second) << l.name << " round " << r;
        EXPECT_TRUE(kv.insert(pair.kv_head).second) << l.name << " round " << r;
        if (e > rounds.offsets[r]) {
          EXPECT_LT(rounds.heads[e - 1], rounds.heads[e]) << l.name;
        }
      }
    }
    EXPECT_EQ(rounds.max_round_size(), largest) << l.name;
    // Deterministic: the same map, the same rounds.
    const UnfusedHeadRounds again = RoundsOf(map);
    EXPECT_EQ(again.heads, rounds.heads) << l.name;
    EXPECT_EQ(again.offsets, rounds.offsets) << l.name;
  }
  // MHA batches every head at once; GQA 6/2 in three rounds of one head per kv head.
  Problem mha = Base();
  mha.layout = {};
  mha.layout.kind = LayoutKind::kMha;
  mha.layout.num_heads = 4;
  EXPECT_EQ(RoundsOf(HeadMapOf(mha)).heads, (std::vector<int32_t>{0, 1, 2, 3}));
  const UnfusedHeadRounds gqa = RoundsOf(HeadMapOf(Base()));
  EXPECT_EQ(gqa.rounds(), 3);
  EXPECT_EQ(gqa.max_round_size(), 2);
  EXPECT_EQ(UnfusedBackward::HeadRounds({}, {}).rounds(), 0);
}

uint64_t Align256(uint64_t bytes) { return (bytes + 255) / 256 * 256; }

// The backward's scratch, region by region, for Base (B 2, S_q 77, S_kv 131, D_qk 96, D_v 64,
// GQA 6/2, bfloat16: rounds of 2 heads, so 4 (b, h) entries per chunk at most): RoPE'd Q and K
// copies only with RoPE, float32 dQ, dK, dV accumulators, nine pointer arrays and the entries'
// pair ids, then S and dP of a chunk in float32.
TEST(UnfusedBackwardPlanTest, ScratchLayoutRegionByRegion) {
  const uint64_t big = 2ull << 30;
  Problem p = Base();
  p.phase = Phase::kBackward;
  const UnfusedHeadRounds rounds = RoundsOf(HeadMapOf(p));
  const uint64_t q = 2 * 77 * 6 * 96, k = 2 * 131 * 2 * 96, v = 2 * 131 * 2 * 64;
  UnfusedBackward::Plan plan = UnfusedBackward::MakePlan(ArgsOf(p), rounds, big);
  EXPECT_EQ(plan.entries_per_chunk, 4);
  EXPECT_EQ(plan.rows_per_chunk, 77);
  EXPECT_EQ(plan.dq_offset, 0u);
  EXPECT_EQ(plan.dk_offset, Align256(4 * q));
  EXPECT_EQ(plan.dv_offset, plan.dk_offset + Align256(4 * k));
  EXPECT_EQ(plan.pointers_offset, plan.dv_offset + Align256(4 * v));
  EXPECT_EQ(plan.pair_ids_offset,
            plan.pointers_offset + Align256(kUnfusedBackwardPointerArrays * 4 * sizeof(void*)));
  EXPECT_EQ(plan.scores_offset, plan.pair_ids_offset + Align256(4 * sizeof(int64_t)));
  const uint64_t chunk = Align256(4ull * 4 * 77 * 131);
  EXPECT_EQ(plan.score_grads_offset, plan.scores_offset + chunk);
  EXPECT_EQ(plan.total, plan.score_grads_offset + chunk);
  EXPECT_EQ(UnfusedBackward::ScratchBytes(ArgsOf(p), rounds, big), plan.total);

  // RoPE puts the rotated copies (in the storage type) first; the rest moves up by their size.
  p.rope.enabled = true;
  const UnfusedBackward::Plan roped = UnfusedBackward::MakePlan(ArgsOf(p), rounds, big);
  const uint64_t copies = Align256(2 * q) + Align256(2 * k);
  EXPECT_EQ(roped.rope_q_offset, 0u);
  EXPECT_EQ(roped.rope_k_offset, Align256(2 * q));
  EXPECT_EQ(roped.dq_offset, copies);
  EXPECT_EQ(roped.total, plan.total + copies);

  // The same plan from shapes alone as from device args (pointers set, RoPE from its table).
  AttentionArgs device = ArgsOf(p);
  const float table = 0;
  device.rope_cos_sin = &table;
  device.q = device.k = device.v = &table;
  const UnfusedBackward::Plan from_device = UnfusedBackward::MakePlan(device, rounds, big);
  EXPECT_EQ(from_device.total, roped.total);
  EXPECT_EQ(from_device.entries_per_chunk, roped.entries_per_chunk);
  EXPECT_EQ(from_device.rows_per_chunk, roped.rows_per_chunk);

  // float32 storage: the copies double, the float32 regions stay.
  p.dtype = DType::kFloat32;
  EXPECT_EQ(UnfusedBackward::MakePlan(ArgsOf(p), rounds, big).dq_offset,
            Align256(4 * q) + Align256(4 * k));

  // MHA's single round takes every (b, h) entry in one chunk: 2 x 6.
  Problem mha = Base();
  mha.phase = Phase::kBackward;
  mha.layout = {};
  mha.layout.kind = LayoutKind::kMha;
  mha.layout.num_heads = 6;
  mha.head_dim_v = 96;
  EXPECT_EQ(UnfusedBackward::MakePlan(ArgsOf(mha), RoundsOf(HeadMapOf(mha)), big).entries_per_chunk,
            12);
}

// S and dP of a chunk stay under the budget together: whole (b, h) entries while S_q rows fit,
// then blocks of query rows of one entry, and never less than one row whatever the budget. The
// accumulators and copies do not shrink with it.
TEST(UnfusedBackwardPlanTest, ChunksStayUnderTheBudget) {
  Problem p = Base();
  p.phase = Phase::kBackward;
  const UnfusedHeadRounds rounds = RoundsOf(HeadMapOf(p));
  const AttentionArgs a = ArgsOf(p);
  const uint64_t row = 131 * 8;  // a float32 row of S and one of dP
  const UnfusedBackward::Plan fixed = UnfusedBackward::MakePlan(a, rounds, 2ull << 30);
  for (uint64_t budget : {uint64_t{1}, row - 1, row, 10 * row, 76 * row, 77 * row, 78 * row,
                          2 * 77 * row + 5, 3 * 77 * row, 4 * 77 * row, 100 * 77 * row}) {
    const UnfusedBackward::Plan plan = UnfusedBackward::MakePlan(a, rounds, budget);
    const uint64_t chunk = static_cast<uint64_t>(plan.entries_per_chunk) * plan.rows_per_chunk;
    EXPECT_GE(plan.entries_per_chunk, 1) << budget;
    EXPECT_GE(plan.rows_per_chunk, 1) << budget;
    EXPECT_LE(plan.entries_per_chunk, 4) << budget;  // B times the largest round
    if (budget >= row) {
      EXPECT_LE(chunk * row, budget) << budget;
    }
    if (plan.entries_per_chunk > 1) {
      EXPECT_EQ(plan.rows_per_chunk, 77) << budget;
    }
    // The fixed regions are the same whatever the budget.
    EXPECT_EQ(plan.pointers_offset, fixed.pointers_offset) << budget;
    EXPECT_EQ(plan.total - plan.scores_offset, 2 * Align256(4 * chunk * 131)) << budget;
  }
  EXPECT_EQ(UnfusedBackward::MakePlan(a, rounds, 1).rows_per_chunk, 1);
  EXPECT_EQ(UnfusedBackward::MakePlan(a, rounds, 10 * row).rows_per_chunk, 10);
  EXPECT_EQ(UnfusedBackward::MakePlan(a, rounds, 3 * 77 * row).entries_per_chunk, 3);
  // A long sequence: 16k x 16k under a 64 MiB budget plans 64 MiB of S and dP, not 2 GiB.
  p.batch_size = 1;
  p.seq_len_q = p.seq_len_kv = 16384;
  const uint64_t cap = 64ull << 20;
  const UnfusedBackward::Plan long_plan = UnfusedBackward::MakePlan(ArgsOf(p), rounds, cap);
  EXPECT_LE(long_plan.total - long_plan.scores_offset, cap + 512);
  EXPECT_EQ(long_plan.entries_per_chunk, 1);
  EXPECT_EQ(long_plan.rows_per_chunk, static_cast<int64_t>(cap / (16384 * 8)));
}

// Run checks its arguments before it touches the device, so these run without one: unsupported
// shapes FAILED_PRECONDITION, missing pointers, rounds of another problem and too little scratch
// INVALID_ARGUMENT.
TEST(UnfusedBackwardPlanTest, RunRefusesBadArgumentsBeforeAnyDeviceWork) {
  Problem p = Base();
  p.phase = Phase::kBackward;
  const UnfusedHeadRounds rounds = RoundsOf(HeadMapOf(p));
  const uint64_t big = 2ull << 30;
  AttentionArgs a = ArgsOf(p);
  float dummy[4] = {};
  int32_t heads[6] = {};
  a.q = a.k = a.v = dummy;
  a.o = dummy;
  a.head_map = heads;
  BackwardArgs g;
  g.grad_out = dummy;
  g.out = g.lse = g.row_terms = dummy;
  g.dq = g.dk = g.dv = dummy;
  const uint64_t needed = UnfusedBackward::ScratchBytes(a, rounds, big);
  auto run = [&](const AttentionArgs& args, const BackwardArgs& grads, const UnfusedHeadRounds& r,
                 const int32_t* device_heads, uint64_t bytes) {
    return UnfusedBackward::Run(args, grads, r, device_heads, /*handle=*/nullptr, dummy, bytes, big,
                                /*stream=*/nullptr);
  };
  AttentionArgs fp8 = a;
  fp8.storage = static_cast<Storage>(7);
  EXPECT_EQ(run(fp8, g, rounds, heads, needed).code(), absl::StatusCode::kFailedPrecondition);
  BackwardArgs no_lse = g;
  no_lse.lse = nullptr;
  EXPECT_EQ(run(a, no_lse, rounds, heads, needed).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(run(a, g, rounds, nullptr, needed).code(), absl::StatusCode::kInvalidArgument);
  AttentionArgs no_table = a;
  no_table.rope_dims = 96;  // RoPE on, but no cos/sin table
  EXPECT_EQ(run(no_table, g, rounds, heads, big).code(), absl::StatusCode::kInvalidArgument);
  Problem mha = Base();
  mha.layout = {};
  mha.layout.kind = LayoutKind::kMha;
  mha.layout.num_heads = 4;
  const absl::Status other = run(a, g, RoundsOf(HeadMapOf(mha)), heads, big);
  EXPECT_EQ(other.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(other.message()).find("head rounds"), std::string::npos) << other;
  const absl::Status small = run(a, g, rounds, heads, needed - 1);
  EXPECT_EQ(small.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(small.message()).find(std::to_string(needed)), std::string::npos) << small;
}

// cuda_flash takes every decode cache kind through its decode kernel, and only there: inside the
// kernel's allow-list paged, int8, int4 and SAQ caches run (UsesFlashDecode), outside it they are
// refused naming spec.kv_cache and the kernel's rule; a native contiguous decode outside it still
// runs on the forward kernels. Prefill never takes the decode kernel.
TEST(FlashDecodeSupportTest, EveryCacheKindRunsThroughTheDecodeKernelOnly) {
  // Off, cuda_flash lists no decode kernel and refuses every cache but a native contiguous one,
  // naming the field, and never takes the decode kernel.
  if (!flash::FlashDecodeEnabled()) {
    const BackendSupport off = CudaBackendSupport(CudaBackendKind::kFlash);
    EXPECT_EQ(off.cache_formats, std::vector<CacheFormat>{CacheFormat::kNative});
    EXPECT_FALSE(off.paged_kv_cache);
    for (const KernelSupport& k : off.kernels) EXPECT_NE(k.name, "decode split-kv");
    Problem paged = Base();
    paged.phase = Phase::kDecode;
    paged.seq_len_q = 1;
    paged.head_dim_qk = 128;
    paged.head_dim_v = std::nullopt;
    EXPECT_FALSE(UsesFlashDecode(NormalizeProblem(paged)));
    paged.kv_cache.paged = true;
    paged.kv_cache.page_size_tokens = 16;
    const absl::Status s =
        CheckCudaSupport(CudaBackendKind::kFlash, NormalizeProblem(paged), HopperTraits());
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_NE(std::string(s.message()).find("spec.kv_cache.paging"), std::string::npos) << s;
  }
  flash::EnableFlashDecodeForTest();
  ASSERT_TRUE(flash::FlashDecodeEnabled());
  Problem base = Base();
  base.phase = Phase::kDecode;
  base.seq_len_q = 4;
  base.seq_len_kv = 4096;
  base.head_dim_qk = 128;
  base.head_dim_v = std::nullopt;
  base.layout.num_query_heads = 8;
  const std::vector<std::pair<std::string, void (*)(KvCache&)>> caches = {
      {"native", [](KvCache&) {}},
      {"paged16", [](KvCache& c) {
         c.paged = true;
         c.page_size_tokens = 16;
       }},
      {"paged256_int8", [](KvCache& c) {
         c.paged = true;
         c.page_size_tokens = 256;
         c.format = CacheFormat::kInt8;
       }},
      {"int4", [](KvCache& c) { c.format = CacheFormat::kInt4; }},
      {"saq", [](KvCache& c) {
         c.saq_bands = {{512, CacheFormat::kNative},
                        {1024, CacheFormat::kInt8},
                        {std::nullopt, CacheFormat::kInt4}};
       }},
  };
  for (const auto& [name, edit] : caches) {
    Problem p = base;
    edit(p.kv_cache);
    const Problem n = NormalizeProblem(p);
    ASSERT_TRUE(ValidateProblem(n).ok()) << name << ": " << ValidateProblem(n);
    EXPECT_TRUE(UsesFlashDecode(n)) << name;
    EXPECT_TRUE(CheckCudaSupport(CudaBackendKind::kFlash, n, HopperTraits()).ok()) << name;
    EXPECT_EQ(CheckCudaSupport(CudaBackendKind::kUnfused, n, HopperTraits()).ok(),
              name == "native")
        << name;

    // Outside the allow-list: S_q 65, head dim 96, D_qk != D_v.
    for (auto outside : {+[](Problem& q) { q.seq_len_q = 65; },
                         +[](Problem& q) { q.head_dim_qk = 96; },
                         +[](Problem& q) { q.head_dim_v = 64; }}) {
      Problem o = p;
      outside(o);
      const Problem no = NormalizeProblem(o);
      ASSERT_TRUE(ValidateProblem(no).ok()) << name << ": " << ValidateProblem(no);
      EXPECT_FALSE(UsesFlashDecode(no)) << name;
      const absl::Status s = CheckCudaSupport(CudaBackendKind::kFlash, no, HopperTraits());
      if (name == "native") {  // the forward kernels' to take or refuse, not the cache's
        EXPECT_EQ(std::string(s.message()).find("spec.kv_cache"), std::string::npos) << s;
        continue;
      }
      EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << name;
      EXPECT_NE(std::string(s.message()).find("spec.kv_cache"), std::string::npos) << s;
      EXPECT_NE(std::string(s.message()).find("the decode kernel takes"), std::string::npos) << s;
    }
  }
  Problem prefill = Base();
  prefill.head_dim_qk = 128;
  prefill.head_dim_v = std::nullopt;
  EXPECT_FALSE(UsesFlashDecode(NormalizeProblem(prefill)));
  // float16 and bfloat16 only, like the rest of cuda_flash.
  Problem wide = base;
  wide.dtype = DType::kFloat32;
  EXPECT_FALSE(UsesFlashDecode(NormalizeProblem(wide)));
}

TEST(FlashDecodeSupportTest, RefusalsNameTheRule) {
  Problem p = Base();
  p.phase = Phase::kDecode;
  p.seq_len_q = 2;
  p.head_dim_qk = 64;
  p.head_dim_v = std::nullopt;
  AttentionArgs a = ArgsOf(p);
  EXPECT_EQ(flash::DecodeRefusal(a), "");
  a.seq_q = 65;
  EXPECT_NE(flash::DecodeRefusal(a).find("S_q from 1 to 64"), std::string::npos);
  a = ArgsOf(p);
  a.storage = Storage::kFloat32;
  EXPECT_NE(flash::DecodeRefusal(a).find("float16 and bfloat16"), std::string::npos);
  a = ArgsOf(p);
  a.dim_v = 32;
  EXPECT_NE(flash::DecodeRefusal(a).find("D_qk = D_v"), std::string::npos);
  a = ArgsOf(p);
  a.modifiers |= kModifierScoreMod;
  EXPECT_NE(flash::DecodeRefusal(a).find("score_mod"), std::string::npos);
}

// The split plan: row tiles from the largest KV-head group, the keys an interval mask keeps, and
// splits that fill the device without empty or tiny splits, covering every kept key once.
TEST(FlashDecodePlanTest, SplitsCoverTheKeptKeysAndFillTheDevice) {
  constexpr int kBlocksPerSm = 4;  // the D 128 kernel on an H100
  struct PlanCase {
    const char* name;
    int batch, heads_q, heads_kv, seq_q;
    int64_t seq_kv;
    void (*edit)(Problem&);
  };
  const PlanCase cases[] = {
      {"gqa32/8 q1 512k", 1, 32, 8, 1, 1 << 19, [](Problem&) {}},
      {"mha32 q1 16k b32", 32, 32, 32, 1, 1 << 14, [](Problem&) {}},
      {"mqa32 q4 8k", 2, 32, 1, 4, 8192, [](Problem&) {}},
      {"gqa q64 short", 1, 8, 2, 64, 100, [](Problem&) {}},
      {"causal window", 4, 8, 2, 16, 100000, [](Problem& p) {
         p.mask.kind = MaskKind::kSlidingWindow;
         p.mask.left_tokens = 1000;
         p.mask.right_tokens = 0;
       }},
  };
  for (const PlanCase& c : cases) {
    Problem p = Base();
    p.phase = Phase::kDecode;
    p.batch_size = c.batch;
    p.layout = {};
    p.layout.kind = c.heads_q == c.heads_kv ? LayoutKind::kMha : LayoutKind::kGqa;
    if (c.heads_q == c.heads_kv) {
      p.layout.num_heads = c.heads_q;
    } else {
      p.layout.num_query_heads = c.heads_q;
      p.layout.num_kv_heads = c.heads_kv;
    }
    p.head_dim_qk = 128;
    p.head_dim_v = std::nullopt;
    p.seq_len_q = c.seq_q;
    p.seq_len_kv = c.seq_kv;
    c.edit(p);
    const AttentionArgs a = ArgsOf(p);
    std::vector<int32_t> kv_of(static_cast<size_t>(c.heads_q));
    for (int h = 0; h < c.heads_q; ++h) kv_of[h] = h / (c.heads_q / c.heads_kv);
    const flash::DecodePlan plan = flash::PlanDecode(a, kv_of, 132, kBlocksPerSm);
    const int64_t rows = static_cast<int64_t>(c.heads_q / c.heads_kv) * c.seq_q;
    EXPECT_EQ(plan.row_tiles, (rows + flash::kDecodeRowTile - 1) / flash::kDecodeRowTile) << c.name;
    const int64_t first_kept =
        p.mask.kind == MaskKind::kSlidingWindow ? c.seq_kv - c.seq_q - 1000 : 0;
    EXPECT_EQ(plan.key_begin, first_kept) << c.name;
    EXPECT_EQ(plan.key_end, c.seq_kv) << c.name;
    const int64_t keys = plan.key_end - plan.key_begin;
    EXPECT_EQ(plan.split_tokens % flash::kDecodeChunk, 0) << c.name;
    EXPECT_GE(plan.splits, 1) << c.name;
    EXPECT_LE(plan.splits, flash::kDecodeMaxSplits) << c.name;
    EXPECT_GE(static_cast<int64_t>(plan.splits) * plan.split_tokens, keys) << c.name;
    EXPECT_LT(static_cast<int64_t>(plan.splits - 1) * plan.split_tokens, keys) << c.name;
    if (plan.splits > 1) {
      EXPECT_GE(plan.split_tokens, flash::kDecodeMinChunksPerSplit * flash::kDecodeChunk)
          << c.name;
      EXPECT_EQ(flash::DecodeWorkspaceBytes(a, plan),
                static_cast<size_t>(plan.splits) * c.batch * c.heads_q * c.seq_q * (128 + 1) * 4)
          << c.name;
    } else {
      EXPECT_EQ(flash::DecodeWorkspaceBytes(a, plan), 0u) << c.name;
    }
    // Where the keys allow 64 splits, the grid fills its waves of the device's slots to 90%.
    const int64_t blocks = static_cast<int64_t>(c.batch) * c.heads_kv * plan.row_tiles;
    const int64_t slots = 132 * kBlocksPerSm;
    const int64_t waves = (blocks * plan.splits + slots - 1) / slots;
    if (keys >= int64_t{flash::kDecodeMaxSplits} * flash::kDecodeMinChunksPerSplit *
                    flash::kDecodeChunk) {
      EXPECT_GE(10 * blocks * plan.splits, 9 * waves * slots) << c.name << ": " << plan.splits;
    }
  }
  // 8 blocks (GQA 32/8, B 1) split 64 ways: 512 of 528 slots in one wave. 32 blocks (MHA 32)
  // fill two waves exactly rather than leave 16 blocks to a second one.
  {
    Problem p = Base();
    p.phase = Phase::kDecode;
    p.batch_size = 1;
    p.layout = {};
    p.layout.kind = LayoutKind::kMha;
    p.layout.num_heads = 32;
    p.head_dim_qk = 128;
    p.head_dim_v = std::nullopt;
    p.seq_len_q = 1;
    p.seq_len_kv = 1 << 19;
    std::vector<int32_t> kv_of(32);
    for (int h = 0; h < 32; ++h) kv_of[h] = h;
    const flash::DecodePlan mha = flash::PlanDecode(ArgsOf(p), kv_of, 132, kBlocksPerSm);
    EXPECT_EQ(mha.splits, 33);
    EXPECT_EQ(32 * mha.splits, 2 * 132 * kBlocksPerSm);
  }
  // One KV head read by more heads than the others: the tiles follow the largest group.
  Problem p = Base();
  p.phase = Phase::kDecode;
  p.seq_len_q = 5;
  p.head_dim_qk = 64;
  p.head_dim_v = std::nullopt;
  const flash::DecodePlan uneven =
      flash::PlanDecode(ArgsOf(p), {0, 0, 0, 0, 1, 0}, 132, kBlocksPerSm);
  EXPECT_EQ(uneven.row_tiles, 2);  // 5 heads x 5 rows = 25 rows
  // Every key hidden (a window that ends before the cache): one split that writes zeros.
  AttentionArgs none = ArgsOf(p);
  none.mask = MaskCode::kWindow;
  none.window_left = 0;
  none.window_right = 0;
  none.offset = -100;
  const flash::DecodePlan empty = flash::PlanDecode(none, {0, 0, 0, 1, 1, 1}, 132, kBlocksPerSm);
  EXPECT_EQ(empty.splits, 1);
  EXPECT_EQ(empty.key_end, empty.key_begin);
}

}  // namespace
}  // namespace attnbench::cuda
