#include "kernels/cuda/backend/layer_gradients.h"

#include "kernels/cuda/backend/cuda_status.h"

namespace attnbench::cuda {
namespace {

// Copies rows of `width` elements from `src` (rows `width` apart) to `dst` (rows `dst_width`
// apart), `rows` of them, on `stream`.
absl::Status CopyColumns(Storage storage, const void* src, int64_t width, void* dst,
                         int64_t dst_width, int64_t rows, cudaStream_t stream) {
  const size_t e = static_cast<size_t>(StorageBytes(storage));
  return CudaStatus(cudaMemcpy2DAsync(dst, dst_width * e, src, width * e, width * e, rows,
                                      cudaMemcpyDeviceToDevice, stream),
                    "cudaMemcpy2DAsync (a layer gradient's columns side by side)");
}

}  // namespace

int64_t ConcatWidth(const LayerBuffers& b) { return b.width[0] + b.width[1] + b.width[2]; }

absl::Status ConcatenateWeights(const LayerBuffers& b, void* w_concat, cudaStream_t stream) {
  const int64_t width = ConcatWidth(b);
  int64_t column = 0;
  for (int p = 0; p < 3; ++p) {
    char* at = static_cast<char*>(w_concat) + column * StorageBytes(b.storage);
    if (absl::Status s = CopyColumns(b.storage, b.w[p], b.width[p], at, width, b.d_model, stream);
        !s.ok()) {
      return s;
    }
    column += b.width[p];
  }
  return absl::OkStatus();
}

absl::Status EnqueueOutputGradients(const LayerGradientBuffers& g, cublasHandle_t handle) {
  const LayerBuffers& l = g.layer;
  // dW_o [width_o, d_model] = O^T [width_o, tokens] dY [tokens, d_model].
  if (absl::Status s =
          EnqueueGemm(StoredGemm(true, false, l.width_o, l.d_model, l.tokens, l.core_output,
                                 g.grad_output, g.dw_o, l.storage, "dW_o = O^T dY"),
                      handle);
      !s.ok()) {
    return s;
  }
  // dO [tokens, width_o] = dY [tokens, d_model] W_o^T [d_model, width_o].
  return EnqueueGemm(StoredGemm(false, true, l.tokens, l.width_o, l.d_model, g.grad_output, l.w_o,
                                g.grad_core_output, l.storage, "dO = dY W_o^T"),
                     handle);
}

absl::Status EnqueueInputGradients(const LayerGradientBuffers& g, cublasHandle_t handle,
                                   cudaStream_t stream) {
  const LayerBuffers& l = g.layer;
  constexpr const char* kWeightGradients[3] = {"dW_q = X^T dQ", "dW_k = X^T dK", "dW_v = X^T dV"};
  const int64_t width = ConcatWidth(l);
  int64_t column = 0;
  for (int p = 0; p < 3; ++p) {
    // dW_p [d_model, width[p]] = X^T [d_model, tokens] dP [tokens, width[p]].
    if (absl::Status s =
            EnqueueGemm(StoredGemm(true, false, l.d_model, l.width[p], l.tokens, l.x,
                                   g.grad_projected[p], g.dw[p], l.storage, kWeightGradients[p]),
                        handle);
        !s.ok()) {
      return s;
    }
    char* at = static_cast<char*>(g.grad_concat) + column * StorageBytes(l.storage);
    if (absl::Status s =
            CopyColumns(l.storage, g.grad_projected[p], l.width[p], at, width, l.tokens, stream);
        !s.ok()) {
      return s;
    }
    column += l.width[p];
  }
  // dX [tokens, d_model] = [dQ dK dV] [tokens, width] [W_q W_k W_v]^T [width, d_model].
  return EnqueueGemm(StoredGemm(false, true, l.tokens, l.d_model, width, g.grad_concat, g.w_concat,
                                g.dx, l.storage, "dX = [dQ dK dV] [W_q W_k W_v]^T"),
                     handle);
}

}  // namespace attnbench::cuda
