// A checked score_mod or mask_mod: parsed, typed (int, float, bool with C's promotions made
// explicit), every aux index proven in bounds for the problem's ranges, and ready for the
// interpreter (evaluate.h), the tile classifier (tile_bounds.h) and the CUDA emitter
// (cuda_source.h). Compile is the only way to get one, so nothing downstream sees an
// unchecked expression.
#ifndef ATTNBENCH_KERNELS_EXPR_PROGRAM_H_
#define ATTNBENCH_KERNELS_EXPR_PROGRAM_H_

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/expr/ast.h"
#include "kernels/expr/interval.h"

namespace attnbench::expr {

enum class Kind { kScoreMod, kMaskMod };

// A client's auxiliary tensor, decoded: 1-D or 2-D, values widened to float.
struct AuxTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;  // row-major
  float min = 0, max = 0;     // over every element (finite: clients' inputs are checked)
};

// What the variables range over (§4b): b < batch, h < output_heads, q in [S_kv - S_q, S_kv),
// kv < S_kv, hq < query_heads, hkv < kv_heads.
struct Env {
  int64_t batch = 1;
  int64_t output_heads = 1;
  int64_t query_heads = 1;
  int64_t kv_heads = 1;
  int64_t seq_q = 1;
  int64_t seq_kv = 1;
  const std::vector<AuxTensor>* aux = nullptr;  // may be null: no aux tensors
};

struct Program {
  Kind kind = Kind::kScoreMod;
  Ast ast;                            // typed, children before parents, root last
  std::array<bool, kNumVars> uses{};  // which variables the expression reads
  std::vector<bool> varies;           // per node: depends on kv or s (differs across a row)
  std::vector<Interval> ranges;       // per node, over the whole problem
  bool ints_fit_32 = false;           // every integer value fits int32 (CUDA emits int)
  int64_t seq_q = 0, seq_kv = 0;      // the values of S_q and S_kv
  std::vector<std::vector<int64_t>> aux_shapes;
  std::string normalized;  // canonical, fully parenthesized text: equal meaning, equal text
  uint64_t hash = 0;       // FNV-1a 64 of `normalized`

  // Whether the expression reads b, or one of h, hq, hkv: counting and tile plans that assume
  // every (batch, head) keeps the same pairs must look at each one otherwise.
  bool UsesBatch() const { return uses[static_cast<int>(Var::kB)]; }
  bool UsesHead() const {
    return uses[static_cast<int>(Var::kH)] || uses[static_cast<int>(Var::kHq)] ||
           uses[static_cast<int>(Var::kHkv)];
  }
};

// Parses and checks `text` as `kind` for `env`. INVALID_ARGUMENT "column C: <rule>" for any
// syntax, name, arity, type or bounds error and for text over the limits of parser.h.
absl::StatusOr<Program> Compile(absl::string_view text, Kind kind, const Env& env);

// Whole-problem variable ranges of `env`.
VarRanges RangesOf(const Env& env);

}  // namespace attnbench::expr

#endif  // ATTNBENCH_KERNELS_EXPR_PROGRAM_H_
