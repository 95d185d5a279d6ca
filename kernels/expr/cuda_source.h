// CUDA C++ source for a checked expression, for NVRTC to compile into the flash kernel's
// score-modifier and mask hooks. The emitted function computes exactly what the interpreter
// (evaluate.h) computes in float: the same wrapping integer arithmetic, x / 0 = 0, saturating
// floor/ceil, fminf/fmaxf, clamped aux indexes. The text is plain C++ under a few macros, so a
// host test compiles it with g++ and compares it with the interpreter pair by pair.
//
// Emitted interface (T is int where every integer provably fits 32 bits, else long long):
//   struct AttnbenchAux { const float* data; long long rows, cols; };  // cols = 1 for 1-D
//   __device__ float <name>(float s, T b, T h, T q, T kv, T hq, T hkv,
//                           const AttnbenchAux* aux);                        // score_mod
//   __device__ bool <name>(T b, T h, T q, T kv, T hq, T hkv, const AttnbenchAux* aux);
//                                                                            // mask_mod
#ifndef ATTNBENCH_KERNELS_EXPR_CUDA_SOURCE_H_
#define ATTNBENCH_KERNELS_EXPR_CUDA_SOURCE_H_

#include <string>

#include "absl/strings/string_view.h"
#include "kernels/expr/program.h"

namespace attnbench::expr {

// Helpers and the AttnbenchAux struct, once per translation unit, before any function.
std::string CudaPrelude();

// The function `name` for `program`.
std::string CudaFunction(const Program& program, absl::string_view name);

}  // namespace attnbench::expr

#endif  // ATTNBENCH_KERNELS_EXPR_CUDA_SOURCE_H_
