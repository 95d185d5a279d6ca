// The CUDA emitter (kernels/expr/cuda_source.h) against the float interpreter: the emitted text
// of many random and hand-written programs, with the prelude, is compiled at test time by the
// host C++ compiler (the prelude's macros make it plain C++) into a shared object, loaded, and
// called pair by pair. Results must be bitwise equal (NaN matching NaN). Equality is exact even
// for exp, log, tanh and sigmoid because on the host both sides call the same libm functions
// (expf, logf, ... in float); on a GPU the CUDA math library differs by a few ulp, which this
// test cannot see and does not claim.
#include "kernels/expr/cuda_source.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/expr/evaluate.h"
#include "tests/kernels/expr/random_expr.h"

#ifndef ATTNBENCH_TEST_CXX
#error "ATTNBENCH_TEST_CXX must name the host C++ compiler"
#endif

namespace attnbench::expr {
namespace {

using testing::MakeAux;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// The layout of the emitted AttnbenchAux.
struct HostAux {
  const float* data;
  long long rows, cols;
};

using ScoreFn = float (*)(float, long long, long long, long long, long long, long long, long long,
                          const HostAux*);
using MaskFn = bool (*)(long long, long long, long long, long long, long long, long long,
                        const HostAux*);

struct Case {
  std::string text;
  Kind kind;
  Program program;
};

// Writes the prelude, one function per case and an extern "C" wrapper with 64-bit parameters for
// each, compiles them into a shared object and loads it. Returns null and records a failure
// with the compiler's output when compiling fails.
void* CompileCases(const std::vector<Case>& cases, const std::string& dir) {
  std::ostringstream src;
  src << CudaPrelude();
  for (size_t i = 0; i < cases.size(); ++i) {
    const Program& p = cases[i].program;
    const std::string name = absl::StrCat("attnbench_f", i);
    src << "// " << cases[i].text << "\n" << CudaFunction(p, name);
    if (p.kind == Kind::kScoreMod) {
      src << "extern \"C\" float case" << i << "(float s, long long b, long long h, long long q, "
          << "long long kv, long long hq, long long hkv, const AttnbenchAux* aux) { return " << name
          << "(s, b, h, q, kv, hq, hkv, aux); }\n";
    } else {
      src << "extern \"C\" bool case" << i
          << "(long long b, long long h, long long q, long long kv, "
          << "long long hq, long long hkv, const AttnbenchAux* aux) { return " << name
          << "(b, h, q, kv, hq, hkv, aux); }\n";
    }
  }
  const std::string cc = dir + "/expr.cc", so = dir + "/expr.so", log = dir + "/log.txt";
  std::ofstream(cc) << src.str();
  // No FMA contraction, no fast math: the emitted text must be exact as written, like NVRTC
  // without --use_fast_math. -O1 rather than -O0 so the check covers an optimizer too.
  const std::string cmd = absl::StrCat(ATTNBENCH_TEST_CXX,
                                       " -std=c++17 -O1 -ffp-contract=off -fno-fast-math -Wall "
                                       "-Werror=return-type -shared -fPIC -o ",
                                       so, " ", cc, " > ", log, " 2>&1");
  if (std::system(cmd.c_str()) != 0) {
    std::ifstream in(log);
    std::stringstream text;
    text << in.rdbuf();
    ADD_FAILURE() << "compiling the emitted source failed: " << cmd << "\n"
                  << text.str().substr(0, 8000);
    return nullptr;
  }
  void* lib = dlopen(so.c_str(), RTLD_NOW | RTLD_LOCAL);
  EXPECT_NE(lib, nullptr) << dlerror();
  return lib;
}

bool SameFloat(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, sizeof(float)) == 0;
}

class CudaSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/attnbench_cuda_source_XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    if (lib_ != nullptr) dlclose(lib_);
    std::system(absl::StrCat("rm -rf ", dir_).c_str());
  }

  // Every case at every point of `env`, emitted code against Evaluator<float>.
  void ExpectEqual(const std::vector<Case>& cases, const Env& env,
                   const std::vector<AuxTensor>& aux) {
    lib_ = CompileCases(cases, dir_);
    if (lib_ == nullptr) return;
    std::vector<HostAux> host(aux.size());
    for (size_t k = 0; k < aux.size(); ++k) {
      host[k] = {aux[k].values.data(), aux[k].shape[0],
                 aux[k].shape.size() > 1 ? aux[k].shape[1] : 1};
    }
    const double kS[] = {0.0, -1.5, 2.25, 1e30, -kInf, kInf, kNaN, -0.0, 3e38, 1e-3, 0.7, -60.0};
    for (size_t i = 0; i < cases.size(); ++i) {
      const Program& p = cases[i].program;
      void* fn = dlsym(lib_, absl::StrCat("case", i).c_str());
      ASSERT_NE(fn, nullptr);
      Evaluator<float> eval(p, aux);
      for (int64_t b = 0; b < env.batch; ++b) {
        for (int64_t h = 0; h < env.output_heads; ++h) {
          for (int64_t q = env.seq_kv - env.seq_q; q < env.seq_kv; ++q) {
            for (int64_t kv = 0; kv < env.seq_kv; ++kv) {
              Bindings bind;
              bind.b = b;
              bind.h = h;
              bind.hq = h % env.query_heads;
              bind.hkv = h % env.kv_heads;
              bind.q = q;
              if (p.kind == Kind::kScoreMod) {
                for (int k = 0; k < 3; ++k) {
                  const float s = static_cast<float>(kS[((kv + q + 5 * k) % 12 + 12) % 12]);
                  const float want = eval.Score(bind, kv, s);
                  const float got =
                      reinterpret_cast<ScoreFn>(fn)(s, b, h, q, kv, bind.hq, bind.hkv, host.data());
                  ASSERT_TRUE(SameFloat(got, want))
                      << cases[i].text << "\n  at b=" << b << " h=" << h << " q=" << q
                      << " kv=" << kv << " s=" << s << ": emitted " << got << ", interpreter "
                      << want << "\n"
                      << CudaFunction(p, "f");
                }
              } else {
                const bool want = eval.Keeps(bind, kv);
                const bool got =
                    reinterpret_cast<MaskFn>(fn)(b, h, q, kv, bind.hq, bind.hkv, host.data());
                ASSERT_EQ(got, want) << cases[i].text << "\n  at b=" << b << " h=" << h
                                     << " q=" << q << " kv=" << kv << "\n"
                                     << CudaFunction(p, "f");
              }
            }
          }
        }
      }
    }
  }

  std::string dir_;
  void* lib_ = nullptr;
};

TEST_F(CudaSourceTest, HandWrittenProgramsMatchTheInterpreter) {
  std::vector<float> ids(12), bias(3 * 12);
  for (int i = 0; i < 12; ++i) ids[i] = static_cast<float>(i / 5);
  for (int i = 0; i < 36; ++i) bias[i] = 0.125f * static_cast<float>(i) - 2.0f;
  const std::vector<AuxTensor> aux = {MakeAux("doc", {12}, ids), MakeAux("rel", {3, 12}, bias)};
  Env env;
  env.batch = 2;
  env.output_heads = env.query_heads = 3;
  env.kv_heads = 1;
  env.seq_q = 4;
  env.seq_kv = 12;
  env.aux = &aux;
  const std::pair<const char*, Kind> texts[] = {
      {"s - 0.0625 * abs(q - kv)", Kind::kScoreMod},  // ALiBi
      {"30.0 * tanh(s / 30.0)", Kind::kScoreMod},     // softcap
      {"s + rel[h, kv]", Kind::kScoreMod},            // relative bias table
      {"s * sigmoid(s) + exp(s) - log(abs(s)) + sqrt(s)", Kind::kScoreMod},
      {"exp2(s) + log2(s + 1) + min(s, 0.5) + max(s, -0.5)", Kind::kScoreMod},
      {"floor(s) + ceil(s) * 2", Kind::kScoreMod},
      {"kv / (q - 9) + kv % (q - 9) + (q - kv) / 0", Kind::kScoreMod},  // x / 0 and x / -1
      {"9223372036854775807 * kv + (-9223372036854775807 - 1) / (kv - 1)", Kind::kScoreMod},
      {"abs(-9223372036854775807 - 1 + kv) * 1.0 + S_q + S_kv", Kind::kScoreMod},
      {"q < kv ? s : -s", Kind::kScoreMod},
      {"kv < 4 || (kv <= q && q - kv < 3)", Kind::kMaskMod},  // sinks + window
      {"doc[q] == doc[kv] && kv <= q", Kind::kMaskMod},       // documents
      {"kv < 2 || kv <= q", Kind::kMaskMod},                  // prefix-LM
      {"(b == 1) != (hq > hkv) || !(rel[h, kv] < 0.0)", Kind::kMaskMod},
      {"floor(rel[h, kv] * 3e38) > 0 && ceil(log(rel[h, kv])) != 0", Kind::kMaskMod},
  };
  std::vector<Case> cases;
  for (const auto& [text, kind] : texts) {
    absl::StatusOr<Program> p = Compile(text, kind, env);
    ASSERT_TRUE(p.ok()) << text << ": " << p.status();
    cases.push_back({text, kind, *std::move(p)});
  }
  // Both integer widths must be covered.
  bool narrow = false, wide = false;
  for (const Case& c : cases) (c.program.ints_fit_32 ? narrow : wide) = true;
  EXPECT_TRUE(narrow && wide);
  ExpectEqual(cases, env, aux);
}

TEST_F(CudaSourceTest, RandomProgramsMatchTheInterpreter) {
  const std::vector<AuxTensor> aux = {MakeAux("doc", {6}, {0, 0, 1, 1, 2, 2}),
                                      MakeAux("t", {2, 3}, {-1.5f, 0, 3e38f, 1e-30f, 7, -2})};
  Env env;
  env.batch = 2;
  env.output_heads = env.query_heads = 2;
  env.kv_heads = 1;
  env.seq_q = 3;
  env.seq_kv = 6;
  env.aux = &aux;
  std::vector<Case> cases;
  for (Kind kind : {Kind::kScoreMod, Kind::kMaskMod}) {
    testing::RandomExpr gen(kind == Kind::kScoreMod ? 21 : 22, kind, &aux);
    for (int trial = 0; trial < 250; ++trial) {
      const std::string text = gen.Next(1 + trial % 5);
      absl::StatusOr<Program> p = Compile(text, kind, env);
      if (p.ok()) cases.push_back({text, kind, *std::move(p)});
    }
  }
  EXPECT_GT(cases.size(), 300u);
  ExpectEqual(cases, env, aux);
}

}  // namespace
}  // namespace attnbench::expr
