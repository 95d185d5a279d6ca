// SCOPE_LAYER's PHASE_BACKWARD around the core's backward on the GPU (docs/variants.md §5, §6),
// the products cpu_reference's layer backward makes (kernels/cpu/cpu_layer_backward_workload.h),
// by cuBLAS with float32 accumulation, each result stored once in the problem's storage type:
//
//   before the core   dW_o = O^T dY, dO = dY W_o^T
//   after the core    dW_q, dW_k, dW_v = X^T dQ, X^T dK, X^T dV; dX = [dQ dK dV] [W_q W_k W_v]^T,
//                     one product over the three gradients side by side, so the sum is rounded
//                     once (the side-by-side copies are strided device copies)
//
// [W_q W_k W_v] side by side is laid out once, when the run is prepared (ConcatenateWeights): the
// weights are inputs, fixed for the run.
#ifndef ATTNBENCH_KERNELS_CUDA_BACKEND_LAYER_GRADIENTS_H_
#define ATTNBENCH_KERNELS_CUDA_BACKEND_LAYER_GRADIENTS_H_

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "absl/status/status.h"
#include "kernels/cuda/backend/layer_projections.h"

namespace attnbench::cuda {

// Row-major device tensors of a layer's backward beside the forward's (`layer`), all in
// layer.storage. Index p: 0 = Q, 1 = K, 2 = V.
struct LayerGradientBuffers {
  LayerBuffers layer;
  const void* grad_output = nullptr;  // dY [tokens, d_model]
  void* grad_core_output = nullptr;   // dO [tokens, width_o]: the core's input
  const void* grad_projected[3] = {nullptr, nullptr, nullptr};  // dQ, dK, dV [tokens, width[p]]
  void* grad_concat = nullptr;                // [tokens, width[0] + width[1] + width[2]]
  const void* w_concat = nullptr;             // [d_model, width[0] + width[1] + width[2]]
  void* dx = nullptr;                         // [tokens, d_model]
  void* dw[3] = {nullptr, nullptr, nullptr};  // [d_model, width[p]]
  void* dw_o = nullptr;                       // [width_o, d_model]
};

// Elements of [W_q W_k W_v] side by side, and of [dQ dK dV].
int64_t ConcatWidth(const LayerBuffers& b);

// Writes [W_q W_k W_v] side by side to `w_concat` (ConcatWidth(b) * d_model elements) on
// `stream`.
absl::Status ConcatenateWeights(const LayerBuffers& b, void* w_concat, cudaStream_t stream);

// Enqueues dW_o = O^T dY and dO = dY W_o^T on the handle's stream (`stream`).
absl::Status EnqueueOutputGradients(const LayerGradientBuffers& g, cublasHandle_t handle);

// Enqueues dW_q, dW_k, dW_v and dX from the core's dQ, dK, dV on the handle's stream, `stream`
// (the copies side by side are enqueued there too).
absl::Status EnqueueInputGradients(const LayerGradientBuffers& g, cublasHandle_t handle,
                                   cudaStream_t stream);

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_BACKEND_LAYER_GRADIENTS_H_
