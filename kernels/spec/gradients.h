// The gradients a PHASE_BACKWARD run returns (§5, §6), in one list per scope, so that backends,
// the check, the server's tensor messages and stream order agree on names, shapes and order:
//   core scope   "dq", "dk", "dv"                         the shapes of Q, K, V
//   layer scope  "dx", "dw_q", "dw_k", "dw_v", "dw_o"     the shapes of X and the four weights
#ifndef ATTNBENCH_KERNELS_SPEC_GRADIENTS_H_
#define ATTNBENCH_KERNELS_SPEC_GRADIENTS_H_

#include <vector>

#include "kernels/spec/shapes.h"
#include "kernels/spec/tensors.h"

namespace attnbench {

struct GradientSlot {
  const char* name;  // as the API spells it (TensorChunk.name, TensorCheck.name)
  FloatTensor GradientTensors::*tensor;  // where GradientTensors holds it
  Shape shape;
};

// The problem's gradients in the order they are sent and reported.
std::vector<GradientSlot> GradientSlotsOf(const ProblemShapes& shapes);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_SPEC_GRADIENTS_H_
