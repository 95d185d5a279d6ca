// SCOPE_LAYER's projections on the GPU (docs/variants.md §6): Q, K, V = X W_q, X W_k, X W_v before
// the attention core and Y = O W_o after it, by cuBLAS with float32 accumulation and each result
// stored in the problem's storage type, as the CPU reference rounds it. Input projections of one
// width whose weights and outputs lie at one stride from each other are one strided-batched GEMM
// (DeviceProblem lays them out so: all three for MHA with D_qk = D_v, K and V when D_qk = D_v).
#ifndef ATTNBENCH_KERNELS_CUDA_BACKEND_LAYER_PROJECTIONS_H_
#define ATTNBENCH_KERNELS_CUDA_BACKEND_LAYER_PROJECTIONS_H_

#include <cublas_v2.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/cuda/common/attention_args.h"

namespace attnbench::cuda {

// Row-major device tensors of one layer, all in `storage`. Index p of the arrays: 0 = Q, 1 = K,
// 2 = V.
struct LayerBuffers {
  Storage storage = Storage::kFloat32;
  int64_t tokens = 0;  // B * S
  int64_t d_model = 0;
  int64_t width[3] = {0, 0, 0};                      // H_q * D_qk, H_kv * D_qk, H_kv * D_v
  int64_t width_o = 0;                               // H_out * D_v, W_o's rows
  const void* x = nullptr;                           // [tokens, d_model]
  const void* w[3] = {nullptr, nullptr, nullptr};    // [d_model, width[p]]
  void* projected[3] = {nullptr, nullptr, nullptr};  // [tokens, width[p]]: Q, K, V
  const void* w_o = nullptr;                         // [width_o, d_model]
  const void* core_output = nullptr;                 // O [tokens, width_o]
  void* output = nullptr;                            // Y [tokens, d_model]
};

// Bytes of one element of `storage`.
inline int64_t StorageBytes(Storage storage) { return storage == Storage::kFloat32 ? 4 : 2; }

// One GEMM of the input projections: `count` consecutive projections from `first`, one width,
// their weights `weight_stride` and their outputs `output_stride` elements apart.
struct ProjectionBatch {
  int first = 0;
  int count = 1;
  int64_t weight_stride = 0;
  int64_t output_stride = 0;
};

// The input projections grouped into as few GEMMs as their widths and strides allow.
std::vector<ProjectionBatch> InputProjectionBatches(const LayerBuffers& b);

// One product of row-major matrices on the handle's stream, float32 accumulation: C [m, n] =
// op(A) op(B) + beta C, with A stored [m, k] (or [k, m] when trans_a: op(A) = A^T) and B stored
// [k, n] (or [n, k] when trans_b). A and B in `storage`, C in `c_storage`. `what` names the
// product in an error.
struct RowMajorGemm {
  bool trans_a = false;
  bool trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;
  const void* b = nullptr;
  void* c = nullptr;
  float beta = 0;
  Storage storage = Storage::kFloat32;
  Storage c_storage = Storage::kFloat32;
  const char* what = "";
};
absl::Status EnqueueGemm(const RowMajorGemm& g, cublasHandle_t handle);

// C = op(A) op(B) with A, B and C all in `storage` (beta 0), as RowMajorGemm says.
inline RowMajorGemm StoredGemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                               const void* a, const void* b, void* c, Storage storage,
                               const char* what) {
  RowMajorGemm g;
  g.trans_a = trans_a;
  g.trans_b = trans_b;
  g.m = m;
  g.n = n;
  g.k = k;
  g.a = a;
  g.b = b;
  g.c = c;
  g.storage = g.c_storage = storage;
  g.what = what;
  return g;
}

// Enqueues Q, K, V = X W_q, X W_k, X W_v on the handle's stream.
absl::Status EnqueueInputProjections(const LayerBuffers& b, cublasHandle_t handle);
// Enqueues Y = O W_o on the handle's stream.
absl::Status EnqueueOutputProjection(const LayerBuffers& b, cublasHandle_t handle);

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_BACKEND_LAYER_PROJECTIONS_H_
