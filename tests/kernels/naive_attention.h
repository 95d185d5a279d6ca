// An independent float64 attention for the kernels tests: written from docs/variants.md alone,
// sharing no code with kernels/ beyond Philox, dtype rounding and input generation (each tested
// on its own), so a backend and the oracle are both judged against something they did not shape.
#ifndef ATTNBENCH_TESTS_KERNELS_NAIVE_ATTENTION_H_
#define ATTNBENCH_TESTS_KERNELS_NAIVE_ATTENTION_H_

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "kernels/spec/problem.h"
#include "kernels/spec/tensors.h"

namespace attnbench::testing {

// (qh(h), kh(h)) and the head counts, from §2's table.
struct NaiveHeads {
  int hq = 0, hkv = 0, hout = 0;
  std::vector<std::pair<int, int>> map;
};
NaiveHeads NaiveHeadMap(const HeadLayout& layout);

// The ALiBi paper's get_slopes, transcribed.
std::vector<double> NaiveAlibiSlopes(int n);

bool NaiveKeeps(const Problem& p, int64_t b, int h, int64_t i, int64_t j);

struct NaiveOptions {
  // Decode: store the cache (keys after RoPE, values) quantized per (token, head) as the format
  // of its token range says, like cpu_reference documents; false compares with exact K, V.
  bool quantize_cache = false;
  // A client expression written again as C++ by the test (docs/expressions.md): the score after
  // the built-in modifiers becomes score_mod(s, ...), and pairs mask_mod rejects are hidden on top
  // of spec.mask. q is the absolute query position i'. Unset: the problem has none.
  std::function<double(double s, int64_t b, int h, int64_t q, int64_t kv)> score_mod;
  std::function<bool(int64_t b, int h, int64_t q, int64_t kv)> mask_mod;
};

// The output the problem defines: O [B, S_q, H_out, D_v], or Y [B, S, d_model] at layer scope.
std::vector<double> NaiveAttention(const Problem& p, const AttentionInputs& in,
                                   const NaiveOptions& options = {});

}  // namespace attnbench::testing

#endif  // ATTNBENCH_TESTS_KERNELS_NAIVE_ATTENTION_H_
