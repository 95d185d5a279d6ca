// What a PHASE_BACKWARD problem keeps resident on its CUDA device beside DeviceProblem's inputs
// and output: dO in the storage type, O in float32 and the log-sum-exp as the forward saves them,
// the row terms D, dQ, dK and dV, and the head map inverted (the output heads reading each query
// head and each key/value head), all described by BackwardArgs. dO is not copied for input
// rotation: the backward reads it beside whichever copy of Q, K and V an iteration takes.
#ifndef ATTNBENCH_KERNELS_CUDA_BACKEND_DEVICE_BACKWARD_H_
#define ATTNBENCH_KERNELS_CUDA_BACKEND_DEVICE_BACKWARD_H_

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/backend/device_buffer.h"
#include "kernels/cuda/common/backward_args.h"
#include "kernels/spec/problem.h"
#include "kernels/spec/shapes.h"
#include "kernels/spec/tensors.h"

namespace attnbench::cuda {

class DeviceBackward {
 public:
  // Device bytes Create allocates: dO, O and dQ, dK, dV at the stored width (O in float32), the
  // log-sum-exp and D (a float per output row each) and the inverted head map. Needs no device.
  static uint64_t EstimateBytes(const Problem& problem, const ProblemShapes& shapes);

  // On the current device, for a normalized, valid, core-scope PHASE_BACKWARD problem; `inputs`
  // from GenerateInputs (grad_output included). dQ, dK and dV start as NaN, so an element a kernel
  // fails to write cannot pass a check. A grad_output with its shape but no values leaves dO to
  // whoever holds GradOutput() (a layer's backward writes it from dY), NaN until then.
  static absl::StatusOr<std::unique_ptr<DeviceBackward>> Create(const Problem& problem,
                                                                const ProblemShapes& shapes,
                                                                const AttentionInputs& inputs);

  const BackwardArgs& Args() const { return args_; }
  // dO on the device, in the storage type, shaped as the core's output.
  void* GradOutput() const { return grad_out_.get(); }

  // dQ, dK, dV as float values of the storage dtype, in the shapes of Q, K and V.
  absl::StatusOr<GradientTensors> DownloadGradients() const;

 private:
  DeviceBackward() = default;

  DType dtype_ = DType::kUnspecified;
  Shape query_shape_, key_shape_, value_shape_;
  BackwardArgs args_;
  DeviceBuffer grad_out_, out_, lse_, row_terms_, dq_, dk_, dv_, heads_;
};

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_BACKEND_DEVICE_BACKWARD_H_
