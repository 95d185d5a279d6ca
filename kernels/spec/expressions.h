// A problem's score_mod and mask_mod, compiled against its shapes and aux tensors: the bridge
// between the spec (Problem) and the expression language (kernels/expr). Validation compiles
// them to report errors by field; backends and the oracle compile them again to evaluate (a
// few microseconds for text of at most 4 KiB, plus decoding the aux tensors).
#ifndef ATTNBENCH_KERNELS_SPEC_EXPRESSIONS_H_
#define ATTNBENCH_KERNELS_SPEC_EXPRESSIONS_H_

#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/expr/program.h"
#include "kernels/spec/problem.h"

namespace attnbench {

// Aux tensors decoded, at most this many elements in all (256 MiB as float).
inline constexpr int64_t kMaxAuxElements = int64_t{64} << 20;

struct ProblemExpressions {
  std::vector<expr::AuxTensor> aux;
  std::optional<expr::Program> score_mod;
  std::optional<expr::Program> mask_mod;
};

// Null when the problem has neither expression. INVALID_ARGUMENT naming the field
// ("spec.mask_mod.expression: column 7: unknown name 'qq' ...", "spec.aux[1].name ...") on a
// normalized problem whose head layout is valid.
absl::StatusOr<std::shared_ptr<const ProblemExpressions>> CompileExpressions(const Problem& problem);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_SPEC_EXPRESSIONS_H_
