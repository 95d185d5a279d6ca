// The support walk (no device needed, runs in CI): every mask x modifier set x dtype x head dims
// x phase, on the traits of a Hopper and an Ampere device. For each combination the CUDA
// backends must accept exactly what this test's own statement of their kernels says they
// implement (written here, independently of kernels/cuda/flash/configs.h, backward_configs.h and
// support.cc; the backward is cuda_unfused's, cuda_reference's and, where FlashBackwardEnabled(),
// cuda_flash's mma.sync backward), every refusal must be FAILED_PRECONDITION
// naming a spec field, and cuda_flash must route what it accepts to a kernel that implements it:
// the Hopper kernel wherever it can, never one that cannot. A mask kind this walk does not know
// fails the guard test, so a new mask cannot reach the fast paths unnoticed.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/backend/cuda_support.h"
#include "kernels/cuda/backend/device_problem.h"
#include "kernels/cuda/flash/decode.h"
#include "kernels/cuda/flash/support.h"
#include "kernels/spec/shapes.h"

namespace attnbench {
namespace {

using cuda::flash::FlashDevice;
using cuda::flash::FlashRoute;

const MaskKind kMasks[] = {MaskKind::kNone, MaskKind::kCausal, MaskKind::kSlidingWindow,
                           MaskKind::kBlockSparse, MaskKind::kProbabilisticBlockSparse};

// Every value MaskName knows is walked: a mask added to the spec without a place here (and so
// without a line in each kernel's statement below) fails.
TEST(FlashSupportWalkTest, WalksEveryMaskKind) {
  for (int v = 0; v < 64; ++v) {
    const MaskKind kind = static_cast<MaskKind>(v);
    if (std::string(MaskName(kind)) == "unknown") continue;
    bool walked = false;
    for (MaskKind m : kMasks) walked = walked || m == kind;
    EXPECT_TRUE(walked) << "mask " << MaskName(kind) << " is not in the support walk";
  }
  for (Modifier m : kAllModifiers) EXPECT_STRNE(ModifierName(m), "unknown");
}

struct Dims {
  int qk, v;
};
const Dims kDims[] = {{64, 64},   {96, 96},  {128, 128}, {192, 128}, {192, 192},
                      {256, 256}, {32, 32},  {80, 80},   {100, 100}, {40, 24},
                      {128, 64},  {64, 128}, {256, 128}, {320, 320}, {256, 320},
                      {8, 8},     {72, 200}, {16, 16},   {24, 24},   {16, 32}};

struct Mods {
  const char* name;
  bool rope = false;
  int rotary = 0;  // 0: all of D_qk
  bool alibi = false;
  AlibiSchedule schedule = AlibiSchedule::kGeometric;
  bool softcap = false;
};
const Mods kMods[] = {
    {"none"},
    {"rope", true},
    {"rope_24", true, 24},
    {"rope_36", true, 36},
    {"alibi_geometric", false, 0, true, AlibiSchedule::kGeometric},
    {"alibi_harmonic", false, 0, true, AlibiSchedule::kHarmonic},
    {"softcap", false, 0, false, AlibiSchedule::kGeometric, true},
    {"rope_alibi", true, 0, true, AlibiSchedule::kGeometric},
    {"alibi_softcap", false, 0, true, AlibiSchedule::kHarmonic, true},
    {"rope_softcap", true, 0, false, AlibiSchedule::kGeometric, true},
    {"rope_alibi_softcap", true, 0, true, AlibiSchedule::kGeometric, true},
};
const DType kDtypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kFloat8E4M3};
const Phase kPhases[] = {Phase::kPrefill, Phase::kDecode, Phase::kBackward};

Problem Make(MaskKind mask, const Mods& mods, DType dtype, Dims dims, Phase phase) {
  Problem p;
  p.batch_size = 2;
  p.seq_len_q = phase == Phase::kDecode ? 3 : 300;
  p.seq_len_kv = 333;
  p.head_dim_qk = dims.qk;
  p.head_dim_v = dims.v;
  p.layout.kind = LayoutKind::kGqa;
  p.layout.num_query_heads = 6;
  p.layout.num_kv_heads = 2;
  p.dtype = dtype;
  p.phase = phase;
  p.mask.kind = mask;
  switch (mask) {
    case MaskKind::kSlidingWindow:
      p.mask.left_tokens = 100;
      p.mask.right_tokens = 0;
      break;
    case MaskKind::kBlockSparse:
      p.mask.query_block_tokens = 64;
      p.mask.kv_block_tokens = 64;
      p.mask.blocks = {{0, 0}, {1, 2}, {4, 5}};
      break;
    case MaskKind::kProbabilisticBlockSparse:
      p.mask.query_block_tokens = 64;
      p.mask.kv_block_tokens = 128;
      p.mask.c_coefficient = 0.5;
      p.mask.alpha = 1.0;
      break;
    default:
      break;
  }
  p.rope.enabled = mods.rope;
  if (mods.rotary > 0) p.rope.rotary_dims = mods.rotary;
  p.alibi.enabled = mods.alibi;
  p.alibi.schedule = mods.schedule;
  p.softcap = {mods.softcap, 20.0};
  return NormalizeProblem(p);
}

// ---- the test's own statement of what each kernel implements ----------------------------------

bool HoldsTile(const std::vector<Dims>& tiles, Dims d) {
  for (const Dims& t : tiles) {
    if (d.qk <= t.qk && d.v <= t.v) return true;
  }
  return false;
}
const std::vector<Dims> kCompiled = {{16, 16},   {32, 32},   {64, 64},   {96, 96},
                                     {128, 128}, {192, 128}, {192, 192}, {256, 256}};

bool Backendwide(const Problem& p) {  // what every CUDA backend runs at all
  return (p.phase == Phase::kPrefill || p.phase == Phase::kDecode) && p.scope == Scope::kCore;
}
bool NotFloat8(const Problem& p) { return p.dtype != DType::kFloat8E4M3; }
bool Fp16OrBf16(const Problem& p) {
  return p.dtype == DType::kFloat16 || p.dtype == DType::kBFloat16;
}
int Rotary(const Problem& p) { return p.rope.rotary_dims.value_or(p.head_dim_qk); }

bool Sm80Implements(const Problem& p, const FlashDevice& d) {
  return d.cc_major >= 8 && Backendwide(p) && Fp16OrBf16(p) &&
         HoldsTile(kCompiled, {p.head_dim_qk, *p.head_dim_v});
}
bool Sm90Implements(const Problem& p, const FlashDevice& d) {
  return d.cc_major == 9 && d.cc_minor == 0 && Backendwide(p) && Fp16OrBf16(p) &&
         HoldsTile(kCompiled, {p.head_dim_qk, *p.head_dim_v}) && p.head_dim_qk % 8 == 0 &&
         *p.head_dim_v % 8 == 0 && (!p.rope.enabled || Rotary(p) % 8 == 0);
}
// cuda_flash's mma.sync backward (backward_sm80.cuh): fp16 and bf16 on sm_80 and newer, head dims
// up to 128/128 on two tiles, every mask and built-in modifier (its forward, the mma.sync kernel,
// runs all of those). The kernel alone, whatever the backend declares.
const std::vector<Dims> kBackwardCompiled = {{64, 64}, {128, 128}};
bool CoreBackward(const Problem& p);
bool FlashBackwardKernelImplements(const Problem& p, const FlashDevice& d) {
  return d.cc_major >= 8 && CoreBackward(p) && Fp16OrBf16(p) &&
         HoldsTile(kBackwardCompiled, {p.head_dim_qk, *p.head_dim_v});
}
// ... and the backend, which runs it only where it declares it.
bool FlashBackwardImplements(const Problem& p, const FlashDevice& d) {
  return cuda::flash::FlashBackwardEnabled() && FlashBackwardKernelImplements(p, d);
}

// cuda_unfused (unfused_backward.cc) and cuda_reference (reference_backward.cu) have a backward,
// for everything they run forward (the walk has no client expressions, which cuda_unfused's
// backward refuses).
bool CoreBackward(const Problem& p) {
  return p.phase == Phase::kBackward && p.scope == Scope::kCore;
}
bool UnfusedImplements(const Problem& p) {
  return (Backendwide(p) || CoreBackward(p)) && NotFloat8(p);
}
// FP8 too, on its float32 path: valid FP8 problems are prefills at core scope (§1b).
bool ReferenceImplements(const Problem& p) { return Backendwide(p) || CoreBackward(p); }

FlashDevice Hopper() {
  FlashDevice d;
  d.cc_major = 9;
  d.cc_minor = 0;
  d.sm90_code = true;
  d.tma = true;
  d.smem_optin_bytes = 227 * 1024;
  return d;
}
FlashDevice Ampere() {
  FlashDevice d;
  d.cc_major = 8;
  d.cc_minor = 0;
  d.smem_optin_bytes = 163 * 1024;
  return d;
}

void ExpectRefusalNamesAField(const absl::Status& s, const std::string& context) {
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << context << ": " << s;
  EXPECT_NE(std::string(s.message()).find("spec."), std::string::npos) << context << ": " << s;
}

TEST(FlashSupportWalkTest, EachKernelAcceptsExactlyWhatItImplements) {
  int walked = 0, to_hopper = 0, to_sm80 = 0, unfused_backward = 0, reference_backward = 0,
      flash_backward = 0;
  for (MaskKind mask : kMasks) {
    for (const Mods& mods : kMods) {
      for (DType dtype : kDtypes) {
        for (Dims dims : kDims) {
          for (Phase phase : kPhases) {
            const Problem p = Make(mask, mods, dtype, dims, phase);
            if (!ValidateProblem(p).ok()) continue;  // e.g. rotary dims above D_qk
            ++walked;
            const std::string context = std::string(MaskName(mask)) + "/" + mods.name + "/" +
                                        DTypeName(dtype) + "/" + std::to_string(dims.qk) + "x" +
                                        std::to_string(dims.v) + "/phase" +
                                        std::to_string(static_cast<int>(phase));
            const cuda::AttentionArgs args = cuda::ShapeArgs(p, *ShapesOf(p));
            for (const FlashDevice& dev : {Hopper(), Ampere()}) {
              const std::string where = context + (dev.cc_major == 9 ? " on 9.0" : " on 8.0");
              const bool sm90 = Sm90Implements(p, dev);
              const bool sm80 = Sm80Implements(p, dev);
              const bool backward = FlashBackwardImplements(p, dev);
              // Each kernel alone, when the backend-wide lists let the problem through.
              if (Backendwide(p)) {
                EXPECT_EQ(cuda::flash::Sm90Refusal(args, dev).empty(), sm90) << where;
                EXPECT_EQ(cuda::flash::Sm80Refusal(args, dev).empty(), sm80) << where;
              }
              if (CoreBackward(p) && NotFloat8(p)) {
                EXPECT_EQ(cuda::flash::Sm80BackwardRefusal(args, dev).empty(),
                          FlashBackwardKernelImplements(p, dev))
                    << where << ": " << cuda::flash::Sm80BackwardRefusal(args, dev);
              }
              // The backend: accepts what some kernel implements, routes it there.
              const absl::Status flash = CheckCudaSupport(CudaBackendKind::kFlash, p, dev);
              EXPECT_EQ(flash.ok(), sm90 || sm80 || backward) << where << ": " << flash;
              if (!flash.ok()) {
                ExpectRefusalNamesAField(flash, where);
              } else if (p.phase == Phase::kBackward) {
                ++flash_backward;
              } else {
                const FlashRoute route = cuda::flash::RouteOf(args, dev);
                EXPECT_EQ(route, sm90 ? FlashRoute::kSm90 : FlashRoute::kSm80) << where;
                (route == FlashRoute::kSm90 ? to_hopper : to_sm80) += 1;
              }
              for (CudaBackendKind kind :
                   {CudaBackendKind::kUnfused, CudaBackendKind::kReference}) {
                const absl::Status s = CheckCudaSupport(kind, p, dev);
                const bool implements = kind == CudaBackendKind::kUnfused ? UnfusedImplements(p)
                                                                          : ReferenceImplements(p);
                EXPECT_EQ(s.ok(), implements) << CudaBackendName(kind) << " " << where;
                if (!s.ok()) ExpectRefusalNamesAField(s, where);
                if (s.ok() && p.phase == Phase::kBackward) {
                  ++(kind == CudaBackendKind::kUnfused ? unfused_backward : reference_backward);
                }
              }
            }
          }
        }
      }
    }
  }
  EXPECT_GT(walked, 5000);
  EXPECT_GT(to_hopper, 1000);  // the walk exercises both kernels
  EXPECT_GT(to_sm80, 1000);
  EXPECT_GT(unfused_backward, 1000);  // and both backwards
  EXPECT_GT(reference_backward, 1000);
  if (cuda::flash::FlashBackwardEnabled()) {
    EXPECT_GT(flash_backward, 1000);
  } else {
    EXPECT_EQ(flash_backward, 0);
  }
}

// A mask code no kernel lists (what an unmapped MaskKind becomes) is refused by both kernels.
TEST(FlashSupportWalkTest, UnknownMaskAndModifierBitsAreRefused) {
  Problem p = Make(MaskKind::kCausal, kMods[0], DType::kBFloat16, {128, 128}, Phase::kPrefill);
  cuda::AttentionArgs args = cuda::ShapeArgs(p, *ShapesOf(p));
  ASSERT_EQ(cuda::flash::RouteOf(args, Hopper()), FlashRoute::kSm90);
  cuda::AttentionArgs unknown_mask = args;
  unknown_mask.mask = cuda::MaskCode::kUnknown;
  EXPECT_EQ(cuda::flash::RouteOf(unknown_mask, Hopper()), FlashRoute::kNone);
  EXPECT_NE(cuda::flash::FlashRefusal(unknown_mask, Hopper()).find("spec.mask"), std::string::npos);
  cuda::AttentionArgs new_modifier = args;
  new_modifier.modifiers |= 1u << 7;  // a modifier no allow-list names
  EXPECT_EQ(cuda::flash::RouteOf(new_modifier, Hopper()), FlashRoute::kNone);
  EXPECT_EQ(cuda::flash::RouteOf(new_modifier, Ampere()), FlashRoute::kNone);
}

// The per-kernel lists GetCapabilities reports are the ones checked.
TEST(FlashSupportWalkTest, CapabilitiesListTheKernels) {
  const bool decode_on = cuda::flash::FlashDecodeEnabled();
  const BackendSupport s = CudaBackendSupport(CudaBackendKind::kFlash);
  const bool backward = cuda::flash::FlashBackwardEnabled();
  // Without the decode kernel: the Hopper and mma.sync forward kernels, then the backward.
  ASSERT_EQ(s.kernels.size(), (decode_on ? 1u : 0u) + (backward ? 3u : 2u));
  const size_t first = decode_on ? 1 : 0;
  // The decode kernel (while switched on, flash/decode.h) first, so that a decode inside its
  // list is claimed for it: PHASE_DECODE only, 16-bit storage, every mask, the built-in
  // modifiers, D_qk = D_v of 32 to 256.
  cuda::flash::EnableFlashDecodeForTest();
  const BackendSupport with_decode = CudaBackendSupport(CudaBackendKind::kFlash);
  ASSERT_EQ(with_decode.kernels.size(), s.kernels.size() + (decode_on ? 0 : 1));
  const KernelSupport& decode = with_decode.kernels[0];
  EXPECT_EQ(decode.name, "decode split-kv");
  EXPECT_EQ(decode.compute_capabilities, std::vector<std::string>{"8.0+"});
  EXPECT_EQ(decode.phases, std::vector<Phase>{Phase::kDecode});
  EXPECT_EQ(decode.dtypes, (std::vector<DType>{DType::kFloat16, DType::kBFloat16}));
  EXPECT_EQ(decode.masks.size(), 5u);
  EXPECT_EQ(decode.modifiers,
            (std::vector<Modifier>{Modifier::kRope, Modifier::kAlibi, Modifier::kSoftcap}));
  EXPECT_EQ(decode.head_dims,
            (std::vector<std::pair<int, int>>{{32, 32}, {64, 64}, {128, 128}, {256, 256}}));
  EXPECT_EQ(s.kernels[first].name, cuda::flash::Sm90AllowList().name);
  EXPECT_EQ(s.kernels[first].compute_capabilities, std::vector<std::string>{"9.0"});
  EXPECT_EQ(s.kernels[first + 1].compute_capabilities, std::vector<std::string>{"8.0+"});
  if (backward) {
    // The backward: its own kernel, listing only its phase, the built-in modifiers, every mask
    // and its two tiles.
    const KernelSupport& k = s.kernels[first + 2];
    EXPECT_EQ(k.name, "mma.sync backward");
    EXPECT_EQ(k.compute_capabilities, std::vector<std::string>{"8.0+"});
    EXPECT_EQ(k.phases, std::vector<Phase>{Phase::kBackward});
    EXPECT_EQ(k.masks.size(), 5u);
    EXPECT_EQ(k.modifiers,
              (std::vector<Modifier>{Modifier::kRope, Modifier::kAlibi, Modifier::kSoftcap}));
    ASSERT_EQ(k.head_dims.size(), kBackwardCompiled.size());
    for (size_t i = 0; i < kBackwardCompiled.size(); ++i) {
      EXPECT_EQ(k.head_dims[i], std::make_pair(kBackwardCompiled[i].qk, kBackwardCompiled[i].v));
    }
    EXPECT_NE(std::find(s.phases.begin(), s.phases.end(), Phase::kBackward), s.phases.end());
  } else {
    EXPECT_EQ(std::find(s.phases.begin(), s.phases.end(), Phase::kBackward), s.phases.end());
  }
  for (size_t forward = first; forward < first + 2; ++forward) {
    const KernelSupport& k = s.kernels[forward];
    EXPECT_EQ(k.phases, (std::vector<Phase>{Phase::kPrefill, Phase::kDecode})) << k.name;
    EXPECT_EQ(k.masks.size(), 5u) << k.name;
    EXPECT_EQ(k.modifiers.size(), 5u) << k.name;  // RoPE, ALiBi, softcap, score_mod, mask_mod
    EXPECT_EQ(k.head_dims.size(), kCompiled.size()) << k.name;
    for (size_t i = 0; i < kCompiled.size(); ++i) {
      EXPECT_EQ(k.head_dims[i], std::make_pair(kCompiled[i].qk, kCompiled[i].v)) << k.name;
    }
  }
  EXPECT_TRUE(CudaBackendSupport(CudaBackendKind::kReference).kernels.empty());
}

}  // namespace
}  // namespace attnbench
