// Client expressions compiled with NVRTC and run on the GPU (kernels/cuda/expr), against the
// interpreter that defines them (kernels/expr/evaluate.h): every pair's mask_mod and score_mod of
// a small problem with odd sizes and aux tensors, and the tile classification against the tiles'
// pairs. Masks and arithmetic-only scores must agree exactly (--fmad=false, the same float32
// rounding); scores through exp, log, tanh may differ by the device functions' few ulp. Skips
// without a device.
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/expr/expression_module.h"
#include "kernels/expr/evaluate.h"
#include "tests/kernels/expr/random_expr.h"

namespace attnbench::cuda {
namespace {

using expr::Kind;
using expr::Program;

// The emitted AttnbenchAux, as the host lays it out.
struct DeviceAux {
  const float* data;
  long long rows, cols;
};

#define CUDA_OK(call)                                                  \
  do {                                                                 \
    const cudaError_t e = (call);                                      \
    ASSERT_EQ(e, cudaSuccess) << #call << ": " << cudaGetErrorString(e); \
  } while (0)

class ExpressionDeviceTest : public ::testing::Test {
 protected:
  static constexpr int kBatch = 2, kHeads = 3, kSeqQ = 37, kSeqKv = 53;

  void SetUp() override {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
      GTEST_SKIP() << "no CUDA device on this machine";
    }
    if (!NvrtcAvailable()) GTEST_SKIP() << "libnvrtc is not on this machine";
    int major = 0, minor = 0;
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
    cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0);
    arch_ = major == 9 ? "sm_90a" : "sm_" + std::to_string(major * 10 + minor);
    std::vector<float> doc(kSeqKv), bias(kHeads * 8);
    for (int j = 0; j < kSeqKv; ++j) doc[j] = static_cast<float>(j / 11 + (j % 7 == 3));
    for (int k = 0; k < kHeads * 8; ++k) bias[k] = 0.37f * std::sin(1.3f * k) - 0.1f;
    aux_ = {expr::testing::MakeAux("doc", {kSeqKv}, doc),
            expr::testing::MakeAux("bias", {kHeads, 8}, bias)};
    env_.batch = kBatch;
    env_.output_heads = env_.query_heads = kHeads;
    env_.kv_heads = 1;  // MQA: hq = h, hkv = 0
    env_.seq_q = kSeqQ;
    env_.seq_kv = kSeqKv;
    env_.aux = &aux_;
    // Aux tensors and the head map on the device.
    std::vector<DeviceAux> table;
    for (const expr::AuxTensor& t : aux_) {
      float* d = nullptr;
      CUDA_OK(cudaMalloc(&d, t.values.size() * sizeof(float)));
      CUDA_OK(cudaMemcpy(d, t.values.data(), t.values.size() * sizeof(float),
                         cudaMemcpyHostToDevice));
      buffers_.push_back(d);
      table.push_back({d, t.shape[0], t.shape.size() == 2 ? t.shape[1] : 1});
    }
    CUDA_OK(cudaMalloc(&aux_table_, table.size() * sizeof(DeviceAux)));
    CUDA_OK(cudaMemcpy(aux_table_, table.data(), table.size() * sizeof(DeviceAux),
                       cudaMemcpyHostToDevice));
    const std::vector<int> hq = {0, 1, 2}, hkv = {0, 0, 0};
    CUDA_OK(cudaMalloc(&hq_, 3 * sizeof(int)));
    CUDA_OK(cudaMalloc(&hkv_, 3 * sizeof(int)));
    CUDA_OK(cudaMemcpy(hq_, hq.data(), 3 * sizeof(int), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(hkv_, hkv.data(), 3 * sizeof(int), cudaMemcpyHostToDevice));
  }
  void TearDown() override {
    for (void* p : buffers_) cudaFree(p);
    cudaFree(aux_table_);
    cudaFree(hq_);
    cudaFree(hkv_);
  }

  // Loads `module` and launches `kernel` with the common arguments, then `extra`.
  void Launch(const ExpressionModule& module, const char* kernel, dim3 grid, dim3 block,
              std::vector<void*> extra) {
    cudaLibrary_t lib = nullptr;
    CUDA_OK(cudaLibraryLoadData(&lib, module.compiled.cubin.data(), nullptr, nullptr, 0, nullptr,
                                nullptr, 0));
    cudaKernel_t k = nullptr;
    CUDA_OK(cudaLibraryGetKernel(&k, lib, kernel));
    long long heads = kHeads, sq = kSeqQ, skv = kSeqKv;
    std::vector<void*> args = {&aux_table_, &hq_, &hkv_, &heads, &sq, &skv};
    args.insert(args.end(), extra.begin(), extra.end());
    CUDA_OK(cudaLaunchKernel(reinterpret_cast<const void*>(k), grid, block, args.data(), 0,
                             nullptr));
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaLibraryUnload(lib));
  }

  expr::Bindings Bind(int64_t bh, int64_t i) const {
    expr::Bindings bind;
    bind.b = bh / kHeads;
    bind.h = bind.hq = bh % kHeads;
    bind.hkv = 0;
    bind.q = i + kSeqKv - kSeqQ;
    return bind;
  }

  void CheckMask(const std::string& text) {
    SCOPED_TRACE(text);
    absl::StatusOr<Program> p = expr::Compile(text, Kind::kMaskMod, env_);
    ASSERT_TRUE(p.ok()) << p.status();
    absl::StatusOr<std::shared_ptr<const ExpressionModule>> m = cache_.Get(nullptr, &*p, arch_);
    ASSERT_TRUE(m.ok()) << m.status();
    const long long bh_count = kBatch * kHeads, n = bh_count * kSeqQ * kSeqKv;
    unsigned char* keep = nullptr;
    CUDA_OK(cudaMalloc(&keep, n));
    buffers_.push_back(keep);
    long long bh0 = 0, bh = bh_count, row0 = 0, rows = kSeqQ;
    Launch(**m, "attnbench_mask_pairs", dim3(64), dim3(128), {&bh0, &bh, &row0, &rows, &keep});
    std::vector<unsigned char> got(n);
    CUDA_OK(cudaMemcpy(got.data(), keep, n, cudaMemcpyDeviceToHost));
    expr::Evaluator<float> eval(*p, aux_);
    std::vector<uint8_t> want(kSeqKv);
    for (int64_t b = 0; b < bh_count; ++b) {
      for (int64_t i = 0; i < kSeqQ; ++i) {
        eval.Mask(Bind(b, i), 0, kSeqKv, want.data());
        for (int64_t j = 0; j < kSeqKv; ++j) {
          ASSERT_EQ(got[(b * kSeqQ + i) * kSeqKv + j], want[j]) << "bh " << b << " i " << i
                                                                 << " j " << j;
        }
      }
    }
    // Tiles of 16 x 8 (ragged at both ends) against their pairs.
    const int tq = 16, tk = 8, nq = (kSeqQ + tq - 1) / tq, nk = (kSeqKv + tk - 1) / tk;
    unsigned char* tiles = nullptr;
    CUDA_OK(cudaMalloc(&tiles, bh_count * nq * nk));
    buffers_.push_back(tiles);
    int tile_q = tq, tile_kv = tk;
    Launch(**m, "attnbench_mask_tiles", dim3(nk, nq, bh_count), dim3(64),
           {&tile_q, &tile_kv, &tiles});
    std::vector<unsigned char> t(bh_count * nq * nk);
    CUDA_OK(cudaMemcpy(t.data(), tiles, t.size(), cudaMemcpyDeviceToHost));
    int classes[3] = {0, 0, 0};
    for (int64_t b = 0; b < bh_count; ++b) {
      for (int y = 0; y < nq; ++y) {
        for (int x = 0; x < nk; ++x) {
          bool any = false, all = true;
          for (int i = y * tq; i < std::min(kSeqQ, (y + 1) * tq); ++i) {
            for (int j = x * tk; j < std::min(kSeqKv, (x + 1) * tk); ++j) {
              const bool k = got[(b * kSeqQ + i) * kSeqKv + j] != 0;
              any = any || k;
              all = all && k;
            }
          }
          const int want_class = all ? 2 : any ? 1 : 0;
          ASSERT_EQ(t[(b * nq + y) * nk + x], want_class) << "tile " << b << "," << y << "," << x;
          ++classes[want_class];
        }
      }
    }
    RecordProperty(text + " tiles none/some/all",
                   std::to_string(classes[0]) + "/" + std::to_string(classes[1]) + "/" +
                       std::to_string(classes[2]));
  }

  // Max relative difference allowed: 0 for arithmetic only.
  void CheckScore(const std::string& text, double tolerance) {
    SCOPED_TRACE(text);
    absl::StatusOr<Program> p = expr::Compile(text, Kind::kScoreMod, env_);
    ASSERT_TRUE(p.ok()) << p.status();
    absl::StatusOr<std::shared_ptr<const ExpressionModule>> m = cache_.Get(&*p, nullptr, arch_);
    ASSERT_TRUE(m.ok()) << m.status();
    const long long bh_count = kBatch * kHeads, n = bh_count * kSeqQ * kSeqKv;
    std::vector<float> scores(n);
    for (long long t = 0; t < n; ++t) scores[t] = 4.0f * std::sin(0.7f * t) + 0.01f * (t % 97);
    float* d = nullptr;
    CUDA_OK(cudaMalloc(&d, n * sizeof(float)));
    buffers_.push_back(d);
    CUDA_OK(cudaMemcpy(d, scores.data(), n * sizeof(float), cudaMemcpyHostToDevice));
    long long bh0 = 0, bh = bh_count, row0 = 0, rows = kSeqQ;
    Launch(**m, "attnbench_score_pairs", dim3(64), dim3(128), {&bh0, &bh, &row0, &rows, &d});
    std::vector<float> got(n);
    CUDA_OK(cudaMemcpy(got.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
    expr::Evaluator<float> eval(*p, aux_);
    for (int64_t b = 0; b < bh_count; ++b) {
      for (int64_t i = 0; i < kSeqQ; ++i) {
        std::vector<float> want(&scores[(b * kSeqQ + i) * kSeqKv],
                                &scores[(b * kSeqQ + i) * kSeqKv] + kSeqKv);
        eval.Scores(Bind(b, i), 0, kSeqKv, want.data());
        for (int64_t j = 0; j < kSeqKv; ++j) {
          const float g = got[(b * kSeqQ + i) * kSeqKv + j], w = want[j];
          if (std::isnan(w)) {
            ASSERT_TRUE(std::isnan(g)) << "bh " << b << " i " << i << " j " << j;
          } else if (tolerance == 0 || std::isinf(w)) {
            ASSERT_EQ(g, w) << "bh " << b << " i " << i << " j " << j;
          } else {
            ASSERT_NEAR(g, w, tolerance * std::max(1.0f, std::fabs(w)))
                << "bh " << b << " i " << i << " j " << j;
          }
        }
      }
    }
  }

  std::string arch_;
  std::vector<expr::AuxTensor> aux_;
  expr::Env env_;
  std::vector<void*> buffers_;
  void* aux_table_ = nullptr;
  int* hq_ = nullptr;
  int* hkv_ = nullptr;
  ExpressionModuleCache cache_;
};

TEST_F(ExpressionDeviceTest, MasksAgreePairByPairAndTileByTile) {
  CheckMask("kv <= q");
  CheckMask("doc[q] == doc[kv]");
  CheckMask("kv < 4 || (q - kv < 10 && kv <= q)");
  CheckMask("(h % 2 == 0 || kv <= q) && kv < S_kv - 7 * b");
  CheckMask("kv % 5 != 0 && bias[h, min(max(q - kv, 0), 7)] > 0");
  CheckMask("q * 0.37 - kv * 0.21 > 1.5");
}

TEST_F(ExpressionDeviceTest, ScoresAgreePairByPair) {
  CheckScore("s + bias[h, min(max(q - kv, 0), 7)]", 0);
  CheckScore("s * 0.5 + (q - kv) % 3 / 2 - hq * 0.25", 0);
  CheckScore("q >= kv ? s : s - 1.5 * (kv - q)", 0);
  CheckScore("min(s, 2.5) / (1 + abs(s))", 0);
  CheckScore("30 * tanh(s / 30)", 4e-7);
  CheckScore("s * sigmoid(s) + log(1 + exp(s)) - sqrt(s * s + 1) + exp2(-s) + log2(abs(s) + 1)",
             4e-6);
}

// A chunk of pairs and query rows (what cuda_unfused passes) computes what the whole problem
// computes at those pairs and rows: the offsets reach b, h and the positions, S_q stays the
// problem's. attnbench_mask_scores leaves kept scores alone and hides the rest with -inf.
TEST_F(ExpressionDeviceTest, ChunksAgreeWithTheWholeProblem) {
  absl::StatusOr<Program> mask =
      expr::Compile("doc[q] == doc[kv] && kv <= q + b && h != 1", Kind::kMaskMod, env_);
  ASSERT_TRUE(mask.ok()) << mask.status();
  absl::StatusOr<Program> score =
      expr::Compile("s + bias[h, min(max(q - kv, 0), 7)] * (b + 1)", Kind::kScoreMod, env_);
  ASSERT_TRUE(score.ok()) << score.status();
  absl::StatusOr<std::shared_ptr<const ExpressionModule>> m = cache_.Get(&*score, &*mask, arch_);
  ASSERT_TRUE(m.ok()) << m.status();
  const long long bh_count = kBatch * kHeads, n = bh_count * kSeqQ * kSeqKv;
  // The whole problem: keep bytes and modified scores.
  unsigned char* keep = nullptr;
  CUDA_OK(cudaMalloc(&keep, n));
  buffers_.push_back(keep);
  std::vector<float> scores(n);
  for (long long t = 0; t < n; ++t) scores[t] = 3.0f * std::cos(0.3f * t);
  float* whole = nullptr;
  CUDA_OK(cudaMalloc(&whole, n * sizeof(float)));
  buffers_.push_back(whole);
  CUDA_OK(cudaMemcpy(whole, scores.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  long long bh0 = 0, bh = bh_count, row0 = 0, rows = kSeqQ;
  Launch(**m, "attnbench_mask_pairs", dim3(64), dim3(128), {&bh0, &bh, &row0, &rows, &keep});
  Launch(**m, "attnbench_score_pairs", dim3(64), dim3(128), {&bh0, &bh, &row0, &rows, &whole});
  std::vector<unsigned char> want_keep(n);
  std::vector<float> want_scores(n);
  CUDA_OK(cudaMemcpy(want_keep.data(), keep, n, cudaMemcpyDeviceToHost));
  CUDA_OK(cudaMemcpy(want_scores.data(), whole, n * sizeof(float), cudaMemcpyDeviceToHost));
  // Pairs 2..4 (crossing the batch boundary at 3) and rows 5..15: score_mod, then the mask.
  const long long c_bh0 = 2, c_bh = 3, c_row0 = 5, c_rows = 11, c_n = c_bh * c_rows * kSeqKv;
  std::vector<float> chunk(c_n);
  for (long long p = 0; p < c_bh; ++p) {
    for (long long r = 0; r < c_rows; ++r) {
      for (long long j = 0; j < kSeqKv; ++j) {
        chunk[(p * c_rows + r) * kSeqKv + j] =
            scores[((c_bh0 + p) * kSeqQ + c_row0 + r) * kSeqKv + j];
      }
    }
  }
  float* d = nullptr;
  CUDA_OK(cudaMalloc(&d, c_n * sizeof(float)));
  buffers_.push_back(d);
  CUDA_OK(cudaMemcpy(d, chunk.data(), c_n * sizeof(float), cudaMemcpyHostToDevice));
  bh0 = c_bh0, bh = c_bh, row0 = c_row0, rows = c_rows;
  Launch(**m, "attnbench_score_pairs", dim3(7), dim3(64), {&bh0, &bh, &row0, &rows, &d});
  Launch(**m, "attnbench_mask_scores", dim3(7), dim3(64), {&bh0, &bh, &row0, &rows, &d});
  std::vector<float> got(c_n);
  CUDA_OK(cudaMemcpy(got.data(), d, c_n * sizeof(float), cudaMemcpyDeviceToHost));
  int hidden = 0;
  for (long long p = 0; p < c_bh; ++p) {
    for (long long r = 0; r < c_rows; ++r) {
      for (long long j = 0; j < kSeqKv; ++j) {
        const long long whole_t = ((c_bh0 + p) * kSeqQ + c_row0 + r) * kSeqKv + j;
        const float g = got[(p * c_rows + r) * kSeqKv + j];
        if (want_keep[whole_t] != 0) {
          ASSERT_EQ(g, want_scores[whole_t]) << "pair " << c_bh0 + p << " row " << c_row0 + r
                                             << " key " << j;
        } else {
          ASSERT_TRUE(std::isinf(g) && g < 0) << "pair " << c_bh0 + p << " row " << c_row0 + r
                                              << " key " << j << ": " << g;
          ++hidden;
        }
      }
    }
  }
  // The mask hides some pairs of the chunk and keeps others, so both branches were checked.
  EXPECT_GT(hidden, 0);
  EXPECT_LT(hidden, c_n);
}

TEST_F(ExpressionDeviceTest, RandomScoresAgree) {
  expr::testing::RandomExpr gen(20261206, Kind::kScoreMod, &aux_);
  int checked = 0;
  for (int tries = 0; checked < 25 && tries < 300; ++tries) {
    const std::string text = gen.Next(4);
    if (!expr::Compile(text, Kind::kScoreMod, env_).ok()) continue;
    // Transcendental functions near overflow differ more than a few ulp: relative 1e-4.
    CheckScore(text, 1e-4);
    if (HasFatalFailure()) return;
    ++checked;
  }
  EXPECT_GE(checked, 20);
}

}  // namespace
}  // namespace attnbench::cuda
