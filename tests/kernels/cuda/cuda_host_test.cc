// The host side of the CUDA backends, which runs without a device (so CI exercises it): a
// Problem turned into the kernels' AttentionArgs (sizes, scale, mask geometry, modifiers), the
// refusals every GPU backend shares, the input copies kept for rotation, and the fused and
// unfused kernels' support decisions and scratch sizing, PHASE_BACKWARD on cuda_reference alone
// and the device memory its buffers take, all judged on shapes alone.
#include <algorithm>
#include <cmath>
#include <string>

#include "gtest/gtest.h"
#include "kernels/cuda/backend/cuda_support.h"
#include "kernels/cuda/backend/device_backward.h"
#include "kernels/cuda/backend/device_problem.h"
#include "kernels/cuda/expr/expression_module.h"
#include "kernels/cuda/expr/nvrtc_compiler.h"
#include "kernels/cuda/flash/flash.h"
#include "kernels/cuda/flash/flash_rtc.h"
#include "kernels/cuda/flash/support.h"
#include "kernels/cuda/unfused/unfused_attention.h"
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
  };
  // Refused by every CUDA backend (PHASE_BACKWARD by all but cuda_reference: BackwardSupportTest).
  const Refusal refusals[] = {
      {"DTYPE_FLOAT8_E4M3", [](Problem& p) { p.dtype = DType::kFloat8E4M3; }},
      {"SCOPE_LAYER",
       [](Problem& p) {
         p.scope = Scope::kLayer;
         p.d_model = 64;
       }},
      {"spec.kv_cache.paging",
       [](Problem& p) {
         p.phase = Phase::kDecode;
         p.kv_cache.paged = true;
         p.kv_cache.page_size_tokens = 16;
       }},
      {"CACHE_FORMAT_INT8",
       [](Problem& p) {
         p.phase = Phase::kDecode;
         p.kv_cache.format = CacheFormat::kInt8;
       }},
  };
  for (const Refusal& r : refusals) {
    Problem p = Base();
    r.edit(p);
    for (CudaBackendKind kind :
         {CudaBackendKind::kFlash, CudaBackendKind::kUnfused, CudaBackendKind::kReference}) {
      const absl::Status s = CheckCudaSupport(kind, NormalizeProblem(p), HopperTraits());
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

// PHASE_BACKWARD runs on cuda_reference for every layout, mask, modifier and 16/32-bit dtype, and
// GetCapabilities says so; cuda_flash and cuda_unfused refuse it naming spec.phase.
TEST(BackwardSupportTest, OnCudaReferenceOnly) {
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
      EXPECT_TRUE(CheckCudaSupport(CudaBackendKind::kReference, n, HopperTraits()).ok())
          << context << ": " << CheckCudaSupport(CudaBackendKind::kReference, n, HopperTraits());
      for (CudaBackendKind kind : {CudaBackendKind::kFlash, CudaBackendKind::kUnfused}) {
        const absl::Status s = CheckCudaSupport(kind, n, HopperTraits());
        EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << context;
        // cuda_flash names float32 storage first: the dtype is checked before the phase.
        const bool fp32_on_flash = kind == CudaBackendKind::kFlash && dtype == DType::kFloat32;
        EXPECT_NE(
            std::string(s.message())
                .find(fp32_on_flash ? "spec.dtype=DTYPE_FLOAT32" : "spec.phase=PHASE_BACKWARD"),
            std::string::npos)
            << context << ": " << s;
        EXPECT_NE(std::string(s.message()).find(CudaBackendName(kind)), std::string::npos) << s;
      }
    }
  }
  // What cuda_reference's backward still refuses, by name.
  Problem fp8 = Base();
  fp8.phase = Phase::kBackward;
  fp8.dtype = DType::kFloat8E4M3;
  const absl::Status s =
      CheckCudaSupport(CudaBackendKind::kReference, NormalizeProblem(fp8), HopperTraits());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(std::string(s.message()).find("DTYPE_FLOAT8_E4M3"), std::string::npos) << s;

  // GetCapabilities: the phase listed where it is checked, and nowhere else.
  auto lists_backward = [](CudaBackendKind kind) {
    const BackendSupport support = CudaBackendSupport(kind);
    int n = 0;
    for (Phase phase : support.phases) n += phase == Phase::kBackward ? 1 : 0;
    return n;
  };
  EXPECT_EQ(lists_backward(CudaBackendKind::kReference), 1);
  EXPECT_EQ(lists_backward(CudaBackendKind::kFlash), 0);
  EXPECT_EQ(lists_backward(CudaBackendKind::kUnfused), 0);
  for (const KernelSupport& k : CudaBackendSupport(CudaBackendKind::kFlash).kernels) {
    for (Phase phase : k.phases) EXPECT_NE(phase, Phase::kBackward) << k.name;
  }
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

}  // namespace
}  // namespace attnbench::cuda
