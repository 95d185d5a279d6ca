// The expressions' device code through NVRTC, on the host (NVRTC needs no GPU, so this runs in
// CI): the module source of hand-written and random expressions compiles for sm_80 and sm_90a to
// a CUBIN; the cache hits on the same expressions and shapes, misses when anything the emitted
// code depends on changes (S_kv, the integer width, the architecture), evicts the least recent;
// and a source NVRTC rejects is INTERNAL with the log kept apart. Skips where libnvrtc is missing.
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/expr/expression_module.h"
#include "kernels/cuda/expr/nvrtc_compiler.h"
#include "kernels/expr/cuda_source.h"
#include "tests/kernels/expr/random_expr.h"

namespace attnbench::cuda {
namespace {

using expr::Compile;
using expr::Kind;
using expr::Program;

class ExpressionNvrtcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!NvrtcAvailable()) GTEST_SKIP() << "libnvrtc is not on this machine";
    aux_ = {expr::testing::MakeAux("doc", {64}, std::vector<float>(64, 1.0f)),
            expr::testing::MakeAux("bias", {4, 16}, std::vector<float>(64, 0.5f))};
    env_.batch = 2;
    env_.output_heads = env_.query_heads = 4;
    env_.kv_heads = 2;
    env_.seq_q = 48;
    env_.seq_kv = 64;
    env_.aux = &aux_;
  }
  Program Must(const std::string& text, Kind kind) {
    absl::StatusOr<Program> p = Compile(text, kind, env_);
    EXPECT_TRUE(p.ok()) << text << ": " << p.status();
    return p.ok() ? *std::move(p) : Program{};
  }
  static bool IsElf(const std::string& image) {
    return image.size() > 4 && image.compare(0, 4, "\x7f" "ELF") == 0;
  }

  std::vector<expr::AuxTensor> aux_;
  expr::Env env_;
};

TEST_F(ExpressionNvrtcTest, HandWrittenExpressionsCompileForBothArchitectures) {
  const Program score = Must("s + bias[h, min(max(q - kv, 0), 15)] - 0.5 * tanh(s / 30)",
                             Kind::kScoreMod);
  const Program mask = Must("doc[q] == doc[kv] && (kv < 4 || q - kv < 16)", Kind::kMaskMod);
  for (const char* arch : {"sm_80", "sm_90a"}) {
    using Pair = std::pair<const Program*, const Program*>;
    for (const auto& [s, m] : {Pair{&score, &mask}, Pair{&score, nullptr}, Pair{nullptr, &mask}}) {
      std::string log;
      absl::StatusOr<CompiledCubin> c =
          CompileToCubin(ExpressionModuleSource(s, m), "test", arch, {}, &log);
      ASSERT_TRUE(c.ok()) << arch << ": " << c.status() << "\n" << log;
      EXPECT_TRUE(IsElf(c->cubin)) << arch;
      EXPECT_GT(c->seconds, 0);
    }
  }
}

TEST_F(ExpressionNvrtcTest, RandomExpressionsCompile) {
  // A few dozen random programs per kind in one module each (NVRTC costs ~0.1 s per module).
  for (Kind kind : {Kind::kScoreMod, Kind::kMaskMod}) {
    expr::testing::RandomExpr gen(kind == Kind::kScoreMod ? 11 : 12, kind, &aux_);
    std::string source = expr::CudaPrelude();
    int n = 0;
    for (int tries = 0; n < 40 && tries < 400; ++tries) {
      absl::StatusOr<Program> p = Compile(gen.Next(5), kind, env_);
      if (!p.ok()) continue;  // the generator may write an index the checker cannot prove
      source += expr::CudaFunction(*p, "f" + std::to_string(n++));
    }
    ASSERT_GE(n, 20);
    // Something must call them, or NVRTC has nothing to compile.
    source += "extern \"C\" __global__ void use(float* out, const AttnbenchAux* aux) {\n";
    for (int k = 0; k < n; ++k) {
      source += kind == Kind::kScoreMod
                    ? "  out[" + std::to_string(k) + "] = f" + std::to_string(k) +
                          "(out[0], 1, 2, 50, threadIdx.x, 2, 1, aux);\n"
                    : "  out[" + std::to_string(k) + "] = f" + std::to_string(k) +
                          "(1, 2, 50, threadIdx.x, 2, 1, aux);\n";
    }
    source += "}\n";
    std::string log;
    absl::StatusOr<CompiledCubin> c = CompileToCubin(source, "random", "sm_90a", {}, &log);
    ASSERT_TRUE(c.ok()) << c.status() << "\n" << log;
    EXPECT_TRUE(IsElf(c->cubin));
  }
}

TEST_F(ExpressionNvrtcTest, CacheHitsMissesAndEvicts) {
  ExpressionModuleCache cache(2);
  const Program a = Must("s * 2", Kind::kScoreMod);
  const Program a_spaced = Must("( s*2 )", Kind::kScoreMod);  // same normalized text
  const Program b = Must("kv <= q", Kind::kMaskMod);
  bool hit = true;
  ASSERT_TRUE(cache.Get(&a, nullptr, "sm_90a", &hit).ok());
  EXPECT_FALSE(hit);
  ASSERT_TRUE(cache.Get(&a_spaced, nullptr, "sm_90a", &hit).ok());
  EXPECT_TRUE(hit);
  ASSERT_TRUE(cache.Get(&a, nullptr, "sm_80", &hit).ok());  // another architecture
  EXPECT_FALSE(hit);
  // The same text with another S_kv emits other code (S_kv is a constant in it).
  env_.seq_kv = 80;
  const Program a_longer = Must("s * 2 + S_kv", Kind::kScoreMod);
  env_.seq_kv = 64;
  const Program a_shorter = Must("s * 2 + S_kv", Kind::kScoreMod);
  EXPECT_NE(ExpressionModuleKey(&a_longer, nullptr, "sm_90a"),
            ExpressionModuleKey(&a_shorter, nullptr, "sm_90a"));
  ASSERT_TRUE(cache.Get(&a, &b, "sm_90a", &hit).ok());  // third entry: evicts (a, sm_90a)
  EXPECT_FALSE(hit);
  ASSERT_TRUE(cache.Get(&a, nullptr, "sm_90a", &hit).ok());
  EXPECT_FALSE(hit);
  const ExpressionCacheStats s = cache.Stats();
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.misses, 4u);
  EXPECT_EQ(s.evictions, 2u);
  EXPECT_EQ(s.entries, 2u);
  EXPECT_GT(s.compile_seconds, 0);
}

// A failed compile is counted (a miss and a failure, no entry) and its NVRTC log goes to the
// failure log, the server's, never into the status a client sees.
TEST_F(ExpressionNvrtcTest, CacheFailureIsCountedAndLoggedApart) {
  ExpressionModuleCache cache;
  std::string logged;
  absl::Status logged_status;
  int calls = 0;
  cache.SetFailureLog([&](const absl::Status& status, const std::string& log) {
    ++calls;
    logged_status = status;
    logged = log;
  });
  const Program a = Must("s * 2", Kind::kScoreMod);
  bool hit = true;
  // No such architecture: NVRTC rejects the option and says why in its log.
  absl::StatusOr<std::shared_ptr<const ExpressionModule>> m = cache.Get(&a, nullptr, "sm_1", &hit);
  ASSERT_FALSE(m.ok());
  EXPECT_FALSE(hit);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInternal) << m.status();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(logged_status, m.status());
  EXPECT_FALSE(logged.empty());
  EXPECT_EQ(std::string(m.status().message()).find(logged), std::string::npos);
  ExpressionCacheStats s = cache.Stats();
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.failures, 1u);
  EXPECT_EQ(s.entries, 0u);
  // A good compile afterwards is a plain miss, logs nothing, and is cached.
  ASSERT_TRUE(cache.Get(&a, nullptr, "sm_80", &hit).ok());
  EXPECT_EQ(calls, 1);
  s = cache.Stats();
  EXPECT_EQ(s.misses, 2u);
  EXPECT_EQ(s.failures, 1u);
  EXPECT_EQ(s.entries, 1u);
}

// The module has the chunked per-pair kernels the unfused backend launches, with the chunk in
// their parameters, and the mask folded into scores as -inf.
TEST_F(ExpressionNvrtcTest, ModuleHasTheChunkedKernels) {
  const Program score = Must("s + 1", Kind::kScoreMod);
  const Program mask = Must("kv <= q", Kind::kMaskMod);
  const std::string both = ExpressionModuleSource(&score, &mask);
  for (const char* kernel : {"attnbench_score_pairs(", "attnbench_mask_pairs(",
                             "attnbench_mask_scores(", "attnbench_mask_tiles("}) {
    EXPECT_NE(both.find(kernel), std::string::npos) << kernel;
  }
  EXPECT_NE(both.find("long long bh0, long long bh_count, long long row0, long long rows"),
            std::string::npos);
  const std::string score_only = ExpressionModuleSource(&score, nullptr);
  EXPECT_EQ(score_only.find("attnbench_mask_scores"), std::string::npos);
  std::string log;
  absl::StatusOr<CompiledCubin> c = CompileToCubin(both, "both", "sm_80", {}, &log);
  ASSERT_TRUE(c.ok()) << c.status() << "\n" << log;
  EXPECT_TRUE(IsElf(c->cubin));
}

TEST_F(ExpressionNvrtcTest, RejectedSourceIsInternalWithTheLogApart) {
  std::string log;
  absl::StatusOr<CompiledCubin> c =
      CompileToCubin("__global__ void k() { undeclared_name(); }", "broken", "sm_90a", {}, &log);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(log.find("undeclared_name"), std::string::npos) << log;
  EXPECT_EQ(std::string(c.status().message()).find("undeclared_name"), std::string::npos);
}

}  // namespace
}  // namespace attnbench::cuda
