// cuda_flash's kernels compiled with client expressions through NVRTC, on the host (NVRTC needs
// no GPU, so this runs in CI): the Hopper kernel for sm_90a and the mma.sync kernel for sm_80,
// from the headers embedded in the library, with an ALiBi-like and a softcap-like score_mod, a
// sliding window with sink tokens and a document mask over an aux tensor, alone and together,
// under the policies a request can take (storage, tile rows, built-in modifiers, RoPE, block
// lists); each image is a CUBIN that defines the kernel under the lowered name NVRTC returned.
// Also: the instance a request gets, the cache keys, the toolkit's include directories, and a
// second request for the same kernel hitting the cache. Skips where libnvrtc or the CUDA headers
// are missing.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/backend/device_problem.h"
#include "kernels/cuda/expr/expression_module.h"
#include "kernels/cuda/expr/nvrtc_compiler.h"
#include "kernels/cuda/flash/configs.h"
#include "kernels/cuda/flash/flash.h"
#include "kernels/cuda/flash/flash_rtc.h"
#include "kernels/spec/problem.h"
#include "kernels/spec/shapes.h"
#include "tests/kernels/expr/random_expr.h"
#include "tests/kernels/test_util.h"

namespace attnbench::cuda::flash {
namespace {

using expr::Compile;
using expr::Kind;
using expr::Program;

// An H100 as the allow-lists see it, with a build that carries sm_90a code.
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

class FlashRtcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!NvrtcAvailable()) GTEST_SKIP() << "libnvrtc is not on this machine";
    absl::StatusOr<std::vector<std::string>> dirs = FlashRtcIncludeDirs();
    if (!dirs.ok()) GTEST_SKIP() << dirs.status();
    dirs_ = *dirs;
    aux_ = {expr::testing::MakeAux("slope", {8}, std::vector<float>(8, 0.25f)),
            expr::testing::MakeAux("doc", {4096}, std::vector<float>(4096, 1.0f))};
    env_.batch = 2;
    env_.output_heads = env_.query_heads = 8;
    env_.kv_heads = 2;
    env_.seq_q = 4096;
    env_.seq_kv = 4096;
    env_.aux = &aux_;
  }
  Program Must(const std::string& text, Kind kind) {
    absl::StatusOr<Program> p = Compile(text, kind, env_);
    EXPECT_TRUE(p.ok()) << text << ": " << p.status();
    return p.ok() ? *std::move(p) : Program{};
  }
  // Compiles the instance and checks the image; returns NVRTC's seconds.
  double ExpectCompiles(const RtcInstance& instance, const Program* score, const Program* mask,
                        const std::string& arch) {
    const std::string what = RtcKernelExpression(instance) + " for " + arch;
    std::string log;
    absl::StatusOr<CompiledCubin> c =
        CompileProgram(FlashRtcProgram(instance, score, mask, dirs_), "flash_rtc_test", arch, &log);
    EXPECT_TRUE(c.ok()) << what << ": " << c.status() << "\n" << log;
    if (!c.ok()) return 0;
    EXPECT_TRUE(c->cubin.size() > 4 && c->cubin.compare(0, 4,
                                                        "\x7f"
                                                        "ELF") == 0)
        << what;
    EXPECT_EQ(c->lowered_names.size(), 1u) << what;
    if (c->lowered_names.size() == 1) {
      // The kernel's symbol is in the image's string table.
      EXPECT_NE(c->cubin.find(c->lowered_names[0]), std::string::npos) << what;
      EXPECT_NE(c->lowered_names[0].find("ClientExpressions"), std::string::npos) << what;
    }
    std::printf("[ nvrtc    ] %.2f s  %s\n", c->seconds, what.c_str());
    return c->seconds;
  }

  std::vector<std::string> dirs_;
  std::vector<expr::AuxTensor> aux_;
  expr::Env env_;
};

AttentionArgs Args(Storage storage, int dim, MaskCode mask, uint32_t modifiers) {
  AttentionArgs a;
  a.storage = storage;
  a.batch = 2;
  a.seq_q = a.seq_kv = 4096;
  a.heads_q = a.heads_out = 8;
  a.heads_kv = 2;
  a.dim_qk = a.dim_v = dim;
  a.scale = 0.088f;
  a.mask = mask;
  a.modifiers = modifiers;
  a.rope_dims = dim;
  return a;
}

TEST_F(FlashRtcTest, HopperKernelCompilesWithEachExpression) {
  const Program alibi = Must("s + slope[h] * (kv - q)", Kind::kScoreMod);
  const Program softcap = Must("30 * tanh(s / 30)", Kind::kScoreMod);
  const Program window = Must("kv < 4 || (q - kv >= 0 && q - kv < 1024)", Kind::kMaskMod);
  const Program doc = Must("doc[q] == doc[kv]", Kind::kMaskMod);
  struct Case {
    const Program* score;
    const Program* mask;
    Storage storage;
    int dim;
    MaskCode mask_code;
    uint32_t modifiers;
  };
  const Case cases[] = {
      {&alibi, nullptr, Storage::kBFloat16, 128, MaskCode::kCausal, 0},
      {&softcap, nullptr, Storage::kFloat16, 64, MaskCode::kNone, kModifierAlibi},
      {nullptr, &window, Storage::kBFloat16, 128, MaskCode::kNone, 0},
      {&alibi, &doc, Storage::kBFloat16, 128, MaskCode::kCausal, kModifierSoftcap},
      {&softcap, &doc, Storage::kFloat16, 256, MaskCode::kBlock, kModifierRope},
  };
  for (const Case& c : cases) {
    AttentionArgs a = Args(c.storage, c.dim, c.mask_code, c.modifiers);
    if (c.score != nullptr) a.modifiers |= kModifierScoreMod;
    if (c.mask != nullptr) a.modifiers |= kModifierMaskMod;
    ASSERT_EQ(Sm90Refusal(a, Hopper()), "");
    const RtcInstance i =
        RtcInstanceOf(a, RouteOf(a, Hopper()), c.score != nullptr, c.mask != nullptr);
    ASSERT_EQ(i.route, FlashRoute::kSm90);
    EXPECT_EQ(i.tile, PickTile(kSm90Tiles, c.dim, c.dim));
    EXPECT_EQ(i.tile_lists, c.mask != nullptr || c.mask_code == MaskCode::kBlock);
    EXPECT_EQ(i.rope, (c.modifiers & kModifierRope) != 0);
    EXPECT_EQ(i.tile_q, kSm90BlockQ);
    EXPECT_EQ(i.tile_kv, kSm90Tiles[i.tile].block_kv);
    ExpectCompiles(i, c.score, c.mask, "sm_90a");
  }
}

TEST_F(FlashRtcTest, Sm80KernelCompilesWithEachExpression) {
  const Program alibi = Must("s + slope[h] * (kv - q)", Kind::kScoreMod);
  const Program window = Must("kv < 4 || (q - kv >= 0 && q - kv < 1024)", Kind::kMaskMod);
  const Program doc = Must("doc[q] == doc[kv]", Kind::kMaskMod);
  const Program softcap = Must("30 * tanh(s / 30)", Kind::kScoreMod);
  struct Case {
    const Program* score;
    const Program* mask;
    Storage storage;
    int dim;
  };
  const Case cases[] = {{&alibi, &window, Storage::kBFloat16, 128},
                        {&softcap, nullptr, Storage::kFloat16, 64},
                        {nullptr, &doc, Storage::kBFloat16, 256}};
  for (const Case& c : cases) {
    AttentionArgs a = Args(c.storage, c.dim, MaskCode::kCausal, kModifierAlibi);
    if (c.score != nullptr) a.modifiers |= kModifierScoreMod;
    if (c.mask != nullptr) a.modifiers |= kModifierMaskMod;
    ASSERT_EQ(Sm80Refusal(a, Ampere()), "");
    const RtcInstance i =
        RtcInstanceOf(a, RouteOf(a, Ampere()), c.score != nullptr, c.mask != nullptr);
    ASSERT_EQ(i.route, FlashRoute::kSm80);
    EXPECT_EQ(i.tile_q, kSm80BlockQ);
    EXPECT_EQ(i.tile_kv, kSm80Tiles[i.tile].block_kv);
    ExpectCompiles(i, c.score, c.mask, "sm_80");
  }
}

// Expressions whose integers need 64 bits take the long long form of the emitted functions.
TEST_F(FlashRtcTest, WideIntegerExpressionsCompile) {
  const Program wide = Must("(q * 3000000000 + kv) % 7 != 1", Kind::kMaskMod);
  ASSERT_FALSE(wide.ints_fit_32);
  AttentionArgs a = Args(Storage::kBFloat16, 64, MaskCode::kNone, kModifierMaskMod);
  ExpectCompiles(RtcInstanceOf(a, FlashRoute::kSm90, false, true), nullptr, &wide, "sm_90a");
}

TEST_F(FlashRtcTest, KeysSeparateInstancesExpressionsAndArchitectures) {
  const Program alibi = Must("s + slope[h] * (kv - q)", Kind::kScoreMod);
  const Program alibi_spaced = Must("s+slope[h]*(kv-q)", Kind::kScoreMod);
  const Program softcap = Must("30 * tanh(s / 30)", Kind::kScoreMod);
  AttentionArgs a = Args(Storage::kBFloat16, 128, MaskCode::kCausal, kModifierScoreMod);
  const RtcInstance i = RtcInstanceOf(a, FlashRoute::kSm90, true, false);
  RtcInstance other = i;
  other.storage = Storage::kFloat16;
  EXPECT_EQ(FlashRtcKey(i, &alibi, nullptr, "sm_90a"),
            FlashRtcKey(i, &alibi_spaced, nullptr, "sm_90a"));
  EXPECT_NE(FlashRtcKey(i, &alibi, nullptr, "sm_90a"), FlashRtcKey(i, &softcap, nullptr, "sm_90a"));
  EXPECT_NE(FlashRtcKey(i, &alibi, nullptr, "sm_90a"),
            FlashRtcKey(other, &alibi, nullptr, "sm_90a"));
  EXPECT_NE(FlashRtcKey(i, &alibi, nullptr, "sm_90a"), FlashRtcKey(i, &alibi, nullptr, "sm_80"));
  // Not the key of the per-pair expression module of the same expressions.
  EXPECT_NE(FlashRtcKey(i, &alibi, nullptr, "sm_90a"),
            ExpressionModuleKey(&alibi, nullptr, "sm_90a"));
}

TEST_F(FlashRtcTest, EmbeddedHeadersAndIncludeDirs) {
  bool sm90 = false, sm80 = false, hooks = false;
  for (const auto& [name, text] : FlashRtcHeaders()) {
    sm90 = sm90 || (name == "kernels/cuda/flash/kernel_sm90.cuh" && !text.empty());
    sm80 = sm80 || (name == "kernels/cuda/flash/kernel_sm80.cuh" && !text.empty());
    hooks = hooks || name == "kernels/cuda/common/expr_hooks.cuh";
  }
  EXPECT_TRUE(sm90 && sm80 && hooks);
  ASSERT_FALSE(dirs_.empty());
  // A CUDA_HOME without the headers is passed over, not taken.
  const char* old = std::getenv("CUDA_HOME");
  const std::string saved = old != nullptr ? old : "";
  setenv("CUDA_HOME", "/nonexistent/cuda", 1);
  absl::StatusOr<std::vector<std::string>> dirs = FlashRtcIncludeDirs();
  if (old != nullptr) {
    setenv("CUDA_HOME", saved.c_str(), 1);
  } else {
    unsetenv("CUDA_HOME");
  }
  ASSERT_TRUE(dirs.ok()) << dirs.status();
  EXPECT_NE(dirs->front().find("include"), std::string::npos);
}

// The shared cache holds the flash images beside the per-pair modules: a second request for the
// same kernel and expressions compiles nothing.
TEST_F(FlashRtcTest, SecondRequestHitsTheCache) {
  ExpressionModuleCache cache(4);
  const Program softcap = Must("30 * tanh(s / 30)", Kind::kScoreMod);
  AttentionArgs a = Args(Storage::kBFloat16, 64, MaskCode::kNone, kModifierScoreMod);
  const RtcInstance i = RtcInstanceOf(a, FlashRoute::kSm80, true, false);
  int made = 0;
  auto get = [&](bool* hit) {
    return cache.GetProgram(
        FlashRtcKey(i, &softcap, nullptr, "sm_80"),
        [&] {
          ++made;
          return FlashRtcProgram(i, &softcap, nullptr, dirs_);
        },
        "flash_rtc_test", "sm_80", hit);
  };
  bool hit = true;
  absl::StatusOr<std::shared_ptr<const ExpressionModule>> first = get(&hit);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(hit);
  absl::StatusOr<std::shared_ptr<const ExpressionModule>> second = get(&hit);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(hit);
  EXPECT_EQ(made, 1);
  EXPECT_EQ((*second)->compiled.lowered_names, (*first)->compiled.lowered_names);
  const ExpressionCacheStats s = cache.Stats();
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.misses, 1u);
  EXPECT_GT(s.compile_seconds, 0);
}

// A problem with expressions reaches the allow-lists with their modifier bits, which both
// kernels now declare; the precompiled launch refuses them (only the NVRTC build runs them).
TEST_F(FlashRtcTest, ProblemsWithExpressionsRouteToBothKernels) {
  Problem p = testing::OddGqaProblem();
  p.dtype = DType::kBFloat16;
  p.head_dim_qk = 64;
  p.head_dim_v = 64;
  p.score_mod = "s * 0.5";
  p.mask_mod = "kv <= q";
  p = NormalizeProblem(p);
  absl::StatusOr<ProblemShapes> shapes = ShapesOf(p);
  ASSERT_TRUE(shapes.ok());
  const AttentionArgs a = ShapeArgs(p, *shapes);
  EXPECT_NE(a.modifiers & kModifierScoreMod, 0u);
  EXPECT_NE(a.modifiers & kModifierMaskMod, 0u);
  EXPECT_EQ(RouteOf(a, Hopper()), FlashRoute::kSm90);
  EXPECT_EQ(RouteOf(a, Ampere()), FlashRoute::kSm80);
  EXPECT_EQ(BlockListTiles(a, Hopper()).query, kSm90BlockQ);  // the mask_mod's tile lists
  EXPECT_EQ(BlockListTiles(a, Ampere()).query, 0);
  EXPECT_NE(KernelName(a, Hopper()).find("+mask_mod (nvrtc)"), std::string::npos)
      << KernelName(a, Hopper());
  EXPECT_EQ(Launch(a, nullptr), cudaErrorInvalidValue);  // no tables; NotSupported past them
  AttentionArgs with_tables = a;
  static const int32_t head_map[16] = {};
  with_tables.head_map = head_map;
  EXPECT_EQ(Launch(with_tables, nullptr), cudaErrorNotSupported);
}

}  // namespace
}  // namespace attnbench::cuda::flash
