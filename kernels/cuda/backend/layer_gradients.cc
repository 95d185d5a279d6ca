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
  RowMajorGemm dw_o;  // [width_o, d_model] = O^T [width_o, tokens] dY [tokens, d_model]
  dw_o.trans_a = true;
  dw_o.m = l.width_o;
  dw_o.n = l.d_model;
  dw_o.k = l.tokens;
  dw_o.a = l.core_output;
  dw_o.b = g.grad_output;
  dw_o.c = g.dw_o;
  dw_o.storage = dw_o.c_storage = l.storage;
  dw_o.what = "dW_o = O^T dY";
  if (absl::Status s = EnqueueGemm(dw_o, handle); !s.ok()) return s;
  RowMajorGemm d_o;  // [tokens, width_o] = dY [tokens, d_model] W_o^T [d_model, width_o]
  d_o.trans_b = true;
  d_o.m = l.tokens;
  d_o.n = l.width_o;
  d_o.k = l.d_model;
  d_o.a = g.grad_output;
  d_o.b = l.w_o;
  d_o.c = g.grad_core_output;
  d_o.storage = d_o.c_storage = l.storage;
  d_o.what = "dO = dY W_o^T";
  return EnqueueGemm(d_o, handle);
}

absl::Status EnqueueInputGradients(const LayerGradientBuffers& g, cublasHandle_t handle,
                                   cudaStream_t stream) {
  const LayerBuffers& l = g.layer;
  constexpr const char* kWeightGradients[3] = {"dW_q = X^T dQ", "dW_k = X^T dK", "dW_v = X^T dV"};
  const int64_t width = ConcatWidth(l);
  int64_t column = 0;
  for (int p = 0; p < 3; ++p) {
    RowMajorGemm dw;  // [d_model, width[p]] = X^T [d_model, tokens] dP [tokens, width[p]]
    dw.trans_a = true;
    dw.m = l.d_model;
    dw.n = l.width[p];
    dw.k = l.tokens;
    dw.a = l.x;
    dw.b = g.grad_projected[p];
    dw.c = g.dw[p];
    dw.storage = dw.c_storage = l.storage;
    dw.what = kWeightGradients[p];
    if (absl::Status s = EnqueueGemm(dw, handle); !s.ok()) return s;
    char* at = static_cast<char*>(g.grad_concat) + column * StorageBytes(l.storage);
    if (absl::Status s =
            CopyColumns(l.storage, g.grad_projected[p], l.width[p], at, width, l.tokens, stream);
        !s.ok()) {
      return s;
    }
    column += l.width[p];
  }
  RowMajorGemm dx;  // [tokens, d_model] = [dQ dK dV] [tokens, width] [W_q W_k W_v]^T
  dx.trans_b = true;
  dx.m = l.tokens;
  dx.n = l.d_model;
  dx.k = width;
  dx.a = g.grad_concat;
  dx.b = g.w_concat;
  dx.c = g.dx;
  dx.storage = dx.c_storage = l.storage;
  dx.what = "dX = [dQ dK dV] [W_q W_k W_v]^T";
  return EnqueueGemm(dx, handle);
}

}  // namespace attnbench::cuda
