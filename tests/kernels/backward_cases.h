// The backward tests' variant cases, shared by cpu_reference's (tests/kernels/cpu/
// cpu_backward_test.cc) and cuda_reference's (tests/kernels/cuda/cuda_backward_test.cc) tests, so
// both backends are checked against the float64 oracle on exactly the same problems. Each test
// adds its own cases beside these (dtypes baked into the case on the CPU, wide head dims on the
// GPU, which runs every case in every dtype).
#ifndef ATTNBENCH_TESTS_KERNELS_BACKWARD_CASES_H_
#define ATTNBENCH_TESTS_KERNELS_BACKWARD_CASES_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

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
// Causal, full RoPE, geometric ALiBi and softcap 2.5 at once.
void SetAllModifiers(Problem& p);
// S_q = 150, S_kv = 170, D_qk = 24, D_v = 16: several blocks of either backend each way.
void SetLong(Problem& p);

// Every layout (§2: dK and dV summed over the heads sharing a kv head, dQ over those sharing a
// query head), mask (§3, bottom-right aligned) and modifier (§4: RoPE's transpose on dQ and dK,
// ALiBi without a gradient, the softcap's tanh derivative) and their combinations, as edits of a
// test's odd base problem (GQA 6/2, S_q 37, S_kv 53).
std::vector<BackwardCase> BackwardVariantCases();

}  // namespace attnbench::testing

#endif  // ATTNBENCH_TESTS_KERNELS_BACKWARD_CASES_H_
