// Client-expression cases (score_mod / mask_mod, docs/expressions.md) with the same expressions
// written in C++ for the naive float64 attention, shared by cpu_reference's test
// (tests/kernels/cpu/cpu_expressions_test.cc) and cuda_unfused's (tests/kernels/cuda/
// unfused_expressions_test.cc), so both backends are held to the same problems. The base problem
// they edit is each test's odd one: B = 2, GQA 6/3 (h reads kv head h / 2), S_q = 37, S_kv = 53.
#ifndef ATTNBENCH_TESTS_KERNELS_EXPRESSION_CASES_H_
#define ATTNBENCH_TESTS_KERNELS_EXPRESSION_CASES_H_

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "kernels/spec/problem.h"
#include "tests/kernels/naive_attention.h"

namespace attnbench::testing {

struct ExpressionCase {
  std::string name;
  std::function<void(Problem&)> edit;  // sets the expressions, aux and anything else
  NaiveOptions naive;                  // the same expressions in C++
};
inline void PrintTo(const ExpressionCase& c, std::ostream* os) { *os << c.name; }

// A float32 aux tensor.
NamedTensor Aux(const std::string& name, std::vector<int64_t> shape,
                const std::vector<float>& values);
// Document ids over the 53 keys: 5 documents of uneven lengths.
float DocOf(int64_t j);
std::vector<float> DocIds();
// A [6, 16] relative-position bias table, varied per head and distance.
float Bias(int h, int64_t d);
std::vector<float> BiasTable();
// Per-head ALiBi slopes for the 6 output heads.
extern const std::vector<float> kSlopes;
// Causal, full RoPE, geometric ALiBi and softcap 2.5 at once.
void AllBuiltins(Problem& p);

// The cases both backends run: ALiBi from an aux table, softcap, document mask, window with
// sinks, prefix-LM, a relative-bias table, rows with every key hidden.
std::vector<ExpressionCase> CommonExpressionCases();

}  // namespace attnbench::testing

#endif  // ATTNBENCH_TESTS_KERNELS_EXPRESSION_CASES_H_
