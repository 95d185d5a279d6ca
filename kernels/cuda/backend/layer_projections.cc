#include "kernels/cuda/backend/layer_projections.h"

#include "absl/strings/str_cat.h"
#include "kernels/cuda/backend/cuda_status.h"
#include "kernels/cuda/common/cublas_type.h"

namespace attnbench::cuda {
namespace {

// Elements from `from` to `to` (both in `storage`), or -1 when `to` is not past `from` by a whole
// number of elements.
int64_t ElementsBetween(const void* from, const void* to, Storage storage) {
  const auto diff = reinterpret_cast<intptr_t>(to) - reinterpret_cast<intptr_t>(from);
  const int64_t bytes = StorageBytes(storage);
  if (diff <= 0 || diff % bytes != 0) return -1;
  return diff / bytes;
}

absl::Status HostPointers(cublasHandle_t handle) {
  return CublasStatus(cublasSetPointerMode(handle, CUBLAS_POINTER_MODE_HOST),
                      "cublasSetPointerMode");
}

}  // namespace

std::vector<ProjectionBatch> InputProjectionBatches(const LayerBuffers& b) {
  std::vector<ProjectionBatch> batches;
  for (int p = 0; p < 3; ++p) {
    if (!batches.empty()) {
      ProjectionBatch& last = batches.back();
      const int prev = last.first + last.count - 1;
      const int64_t ws = ElementsBetween(b.w[prev], b.w[p], b.storage);
      const int64_t os = ElementsBetween(b.projected[prev], b.projected[p], b.storage);
      // A batch's matrices must not overlap, and share one stride.
      const bool fits = b.width[p] == b.width[last.first] && ws >= b.d_model * b.width[p] &&
                        os >= b.tokens * b.width[p] &&
                        (last.count == 1 || (ws == last.weight_stride && os == last.output_stride));
      if (fits) {
        last.weight_stride = ws;
        last.output_stride = os;
        ++last.count;
        continue;
      }
    }
    batches.push_back({p, 1, 0, 0});
  }
  return batches;
}

// Row-major C [rows, n] = A [rows, k] B [k, n] is column-major C^T = B^T A^T: cuBLAS gets B as its
// first operand (leading dimension n) and A as its second (leading dimension k).
absl::Status EnqueueInputProjections(const LayerBuffers& b, cublasHandle_t handle) {
  if (absl::Status s = HostPointers(handle); !s.ok()) return s;
  const cudaDataType_t type = CublasType(b.storage);
  const float one = 1.0f, zero = 0.0f;
  constexpr const char* kNames[3] = {"Q", "K", "V"};
  for (const ProjectionBatch& batch : InputProjectionBatches(b)) {
    const int p = batch.first;
    const int width = static_cast<int>(b.width[p]);
    // X is shared by every GEMM of the batch (stride 0).
    if (absl::Status s = CublasStatus(
            cublasGemmStridedBatchedEx(
                handle, CUBLAS_OP_N, CUBLAS_OP_N, width, static_cast<int>(b.tokens),
                static_cast<int>(b.d_model), &one, b.w[p], type, width, batch.weight_stride, b.x,
                type, static_cast<int>(b.d_model), 0, &zero, b.projected[p], type, width,
                batch.output_stride, batch.count, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            absl::StrCat("cublasGemmStridedBatchedEx (", batch.count, " input projection(s) from ",
                         kNames[p], ", width ", width, ")"));
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::Status EnqueueGemm(const RowMajorGemm& g, cublasHandle_t handle) {
  if (absl::Status s = HostPointers(handle); !s.ok()) return s;
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: cuBLAS gets B first. A
  // row-major matrix stored [r, c] is column-major [c, r] with leading dimension c, so an operand
  // used as stored is CUBLAS_OP_N and a transposed one CUBLAS_OP_T.
  const float one = 1.0f;
  const cudaDataType_t type = CublasType(g.storage);
  return CublasStatus(
      cublasGemmEx(handle, g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                   g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(g.n),
                   static_cast<int>(g.m), static_cast<int>(g.k), &one, g.b, type,
                   static_cast<int>(g.trans_b ? g.k : g.n), g.a, type,
                   static_cast<int>(g.trans_a ? g.m : g.k), &g.beta, g.c, CublasType(g.c_storage),
                   static_cast<int>(g.n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
      absl::StrCat("cublasGemmEx (", g.what, ")"));
}

absl::Status EnqueueOutputProjection(const LayerBuffers& b, cublasHandle_t handle) {
  return EnqueueGemm(StoredGemm(false, false, b.tokens, b.d_model, b.width_o, b.core_output, b.w_o,
                                b.output, b.storage, "output projection Y = O W_o"),
                     handle);
}

}  // namespace attnbench::cuda
