// The backward tests' variant cases, shared by cpu_reference's (tests/kernels/cpu/
// cpu_backward_test.cc) and the CUDA backends' (tests/kernels/cuda/cuda_backward_test.cc:
// cuda_reference and cuda_unfused) tests, so every backend is checked against the float64 oracle
// on exactly the same problems. Each test adds its own cases beside these (dtypes baked into the
// case on the CPU, wide head dims on the GPU, which runs every case in every dtype). The GPU
// test's cases and seeds are here too, for the host test that emulates cuda_unfused's roundings on
// exactly those problems (tests/kernels/backward_closeness_test.cc).
#ifndef ATTNBENCH_TESTS_KERNELS_BACKWARD_CASES_H_
#define ATTNBENCH_TESTS_KERNELS_BACKWARD_CASES_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "kernels/spec/dtype.h"
#include "kernels/spec/problem.h"

namespace attnbench::testing {

struct BackwardCase {
  std::string name;
  std::function<void(Problem&)> edit;
};
inline void PrintTo(const BackwardCase& c, std::ostream* os) { *os << c.name; }

// Edits the cases are made of, for a test's own extra cases.
void SetLayout(Problem& p, LayoutKind kind);
void SetWindow(Problem& p, std::optional<int64_t> left, std::optional<int64_t> right);
// MHA of `heads` heads; SQA of `baseline` heads cut to `query_heads` / `kv_heads`.
void SetMha(Problem& p, int heads);
void SetSqa(Problem& p, int baseline, int query_heads, int kv_heads);
// Causal, full RoPE, geometric ALiBi and softcap 2.5 at once.
void SetAllModifiers(Problem& p);
// S_q = 150, S_kv = 170, D_qk = 24, D_v = 16: several blocks of either backend each way.
void SetLong(Problem& p);
// The GPU test's longer problem: B = 1, S_q = 300, S_kv = 433, D = 128, GQA 8/2, causal, RoPE,
// bfloat16, seed 4242.
void SetLongerGqa(Problem& p);

// Every layout (§2: dK and dV summed over the heads sharing a kv head, dQ over those sharing a
// query head), mask (§3, bottom-right aligned) and modifier (§4: RoPE's transpose on dQ and dK,
// ALiBi without a gradient, the softcap's tanh derivative) and their combinations, as edits of a
// test's odd base problem (GQA 6/2, S_q 37, S_kv 53).
std::vector<BackwardCase> BackwardVariantCases();

// The GPU backward test's base problem: B = 2, S_q = 37, S_kv = 53, D_qk = 40, D_v = 24, GQA 6/2
// (three query heads per kv head), float32, PHASE_BACKWARD; not normalized.
Problem GpuBackwardBaseProblem();
// BackwardVariantCases and the GPU test's own (a head dim wider than a warp several times over).
std::vector<BackwardCase> GpuBackwardCases();
// Case `index` of GpuBackwardCases on the base in `dtype`, with the seed the GPU test uses (the
// same in both timing modes and on both CUDA backends); not normalized.
Problem GpuBackwardCaseProblem(int index, DType dtype);

// cuda_flash's backward GPU test's own larger problems beside the cases (many 64-row query tiles
// and 64-key tiles of its small tile each way): "window_all_modifiers" (S_q 333, S_kv 301, D 64,
// GQA 6/2, a 70/3 window, RoPE, ALiBi, softcap, bfloat16) and "mha_more_queries" (S_q 260,
// S_kv 130, D 64, MHA 2, no mask, float16). Normalized by the caller; emulated by
// backward_closeness_test.cc too.
struct NamedProblem {
  std::string name;
  Problem problem;
};
std::vector<NamedProblem> FlashBackwardTileProblems();

}  // namespace attnbench::testing

#endif  // ATTNBENCH_TESTS_KERNELS_BACKWARD_CASES_H_
