// Text to syntax tree for score_mod / mask_mod expressions: C-like precedence, 1-based columns in
// every error, and the size limits enforced while parsing so hostile text costs little.
#ifndef ATTNBENCH_KERNELS_EXPR_PARSER_H_
#define ATTNBENCH_KERNELS_EXPR_PARSER_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/expr/ast.h"

namespace attnbench::expr {

inline constexpr int kMaxTextBytes = 4096;
inline constexpr int kMaxNodes = 256;
inline constexpr int kMaxDepth = 32;

// INVALID_ARGUMENT "column C: <what is wrong>" on a syntax error or a limit. Names are not
// resolved here (variables, aux tensors and functions are the type checker's job), except that a
// call must name a known function.
absl::StatusOr<Ast> Parse(absl::string_view text);

}  // namespace attnbench::expr

#endif  // ATTNBENCH_KERNELS_EXPR_PARSER_H_
