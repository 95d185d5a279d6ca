// A validated Problem made resident on one CUDA device: Q, K, V in their storage type (several
// identical copies to rotate through when they fit in L2, so a warm-cache timing never reads the
// previous iteration's lines), the output, and the small tables the kernels read (head map, ALiBi
// slopes, RoPE cos/sin, block-sparse bitmaps), all described by AttentionArgs. At layer scope X
// and the four weights instead, with Q, K, V the projections' outputs (written every iteration,
// one copy), the core's output O apart from the layer's output Y, described by LayerBuffers.
#ifndef ATTNBENCH_KERNELS_CUDA_BACKEND_DEVICE_PROBLEM_H_
#define ATTNBENCH_KERNELS_CUDA_BACKEND_DEVICE_PROBLEM_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/backend/device_buffer.h"
#include "kernels/cuda/backend/layer_projections.h"
#include "kernels/cuda/common/attention_args.h"
#include "kernels/spec/problem.h"
#include "kernels/spec/shapes.h"
#include "kernels/spec/tensors.h"

namespace attnbench::cuda {

// The Storage of a supported dtype.
Storage StorageOf(DType dtype);

// The dtype the device holds Q, K, V and O in: the problem's, except DTYPE_FLOAT8_E4M3, which
// cuda_reference runs on its float32 path (§1b: the codes times their scales uploaded as float32,
// O rounded to the problem's output dtype on the way back).
DType DeviceDType(const Problem& problem);

// The arguments of a problem without any device memory: sizes, scale, mask kind and window,
// block geometry, modifier settings. Kernels' support checks read this; DeviceProblem::Create
// starts from it and fills the pointers.
AttentionArgs ShapeArgs(const Problem& problem, const ProblemShapes& shapes);

class DeviceProblem {
 public:
  // Copies of the inputs kept when Q, K and V together fit in `l2_bytes` twice over: enough that
  // consecutive iterations read different lines.
  static int InputSetsFor(const ProblemShapes& shapes, DType dtype, uint64_t l2_bytes);

  // Device bytes Create will allocate (inputs times their copies, output, tables).
  static uint64_t EstimateBytes(const Problem& problem, const ProblemShapes& shapes,
                                uint64_t l2_bytes);

  // On the current device. The problem must be normalized, valid and supported by the backend.
  static absl::StatusOr<std::unique_ptr<DeviceProblem>> Create(const Problem& problem,
                                                               const ProblemShapes& shapes,
                                                               const AttentionInputs& inputs,
                                                               uint64_t l2_bytes);

  int num_input_sets() const { return static_cast<int>(sets_.size()); }
  // The arguments reading input set `set` (0 <= set < num_input_sets()).
  AttentionArgs Args(int set) const;

  // SCOPE_LAYER only: X, the weights, Q, K, V, O and Y for the projections.
  const LayerBuffers& Layer() const { return layer_; }
  bool layer() const { return layer_.x != nullptr; }

  // Fills the output with NaN, so an element a kernel fails to write cannot pass the check.
  absl::Status PoisonOutput();
  // The output as float values of the problem's output dtype, shape [B, S_q, H_out, D_v].
  absl::StatusOr<FloatTensor> DownloadOutput() const;

 private:
  // Q, K, V of one copy: where they lie, and the allocations they lie in.
  struct InputSet {
    std::vector<DeviceBuffer> buffers;
    const void* q = nullptr;
    const void* k = nullptr;
    const void* v = nullptr;
  };
  DeviceProblem() = default;
  absl::Status CreateLayer(const ProblemShapes& shapes, const AttentionInputs& inputs);

  AttentionArgs base_;
  DType dtype_ = DType::kUnspecified;         // DeviceDType
  DType output_dtype_ = DType::kUnspecified;  // the problem's
  Shape output_shape_;
  std::vector<InputSet> sets_;
  DeviceBuffer output_, head_map_, alibi_, rope_, bitmap_;
  // Layer scope: X, the weights (W_q, W_k, W_v in one allocation), the core's output.
  DeviceBuffer x_, w_qkv_, w_o_, core_output_;
  LayerBuffers layer_;
};

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_BACKEND_DEVICE_PROBLEM_H_
