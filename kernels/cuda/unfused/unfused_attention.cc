// The cuda_unfused backend's host side: plans the scratch (RoPE'd copies, pointer arrays, a
// chunk of float32 scores) and drives, per chunk of (b, h) pairs and query rows, a batched cuBLAS
// GEMM for the scores, the softmax kernel and a batched GEMM for the output. cuBLAS is
// column-major, so row-major S = Q K^T is computed as column-major S^T = K Q^T and O = P V as
// O^T = V^T P^T; each BSHD head is a strided matrix with leading dimension heads * dim.
#include "kernels/cuda/unfused/unfused_attention.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/backend/cuda_status.h"
#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/unfused/unfused_kernels.h"
#include "kernels/cuda/unfused/unfused_plan.h"

namespace attnbench::cuda {
namespace {

using unfused::AlignUp;
using unfused::CublasType;
using unfused::ElementBytes;
using unfused::kMaxPairsPerChunk;
using unfused::GemmOperands;
using unfused::RopeOn;

bool KnownStorage(Storage storage) {
  return storage == Storage::kFloat32 || storage == Storage::kFloat16 ||
         storage == Storage::kBFloat16;
}

// Where everything lives in the scratch and how the work is chunked. ScratchBytes and Run both
// derive it from the same inputs, so they always agree.
struct Plan {
  int64_t pairs_per_chunk = 1;  // (b, h) pairs per chunk; > 1 only when rows_per_chunk == S_q
  int64_t rows_per_chunk = 1;   // query rows per chunk
  uint64_t rope_q_offset = 0;   // RoPE'd Q copy (only with RoPE)
  uint64_t rope_k_offset = 0;   // RoPE'd K copy (only with RoPE)
  uint64_t pointers_offset = 0;
  uint64_t scores_offset = 0;
  uint64_t total = 0;
};

Plan MakePlan(const AttentionArgs& a, uint64_t max_scratch_bytes) {
  Plan plan;
  // Clamped so an unsupported (zero-sized) request still plans without dividing by zero.
  const int64_t seq_q = std::max<int64_t>(a.seq_q, 1);
  const int64_t pairs = std::max<int64_t>(static_cast<int64_t>(a.batch) * a.heads_out, 1);
  const uint64_t row_bytes = static_cast<uint64_t>(std::max<int64_t>(a.seq_kv, 1)) * 4;
  const uint64_t rows_fit = max_scratch_bytes / row_bytes;  // score rows within the budget
  if (static_cast<uint64_t>(seq_q) <= rows_fit) {
    plan.rows_per_chunk = seq_q;
    const uint64_t pairs_fit = rows_fit / static_cast<uint64_t>(seq_q);
    plan.pairs_per_chunk =
        static_cast<int64_t>(std::min<uint64_t>(pairs_fit, std::min(pairs, kMaxPairsPerChunk)));
  } else {
    plan.pairs_per_chunk = 1;
    plan.rows_per_chunk = static_cast<int64_t>(std::max<uint64_t>(rows_fit, 1));
  }
  plan.rows_per_chunk = std::min<int64_t>(plan.rows_per_chunk, INT_MAX);  // cuBLAS n is an int

  uint64_t offset = 0;
  if (RopeOn(a)) {
    const uint64_t bytes = ElementBytes(a.storage) * static_cast<uint64_t>(a.dim_qk);
    plan.rope_q_offset = offset;
    offset += AlignUp(bytes * static_cast<uint64_t>(a.batch) * seq_q * a.heads_q);
    plan.rope_k_offset = offset;
    offset += AlignUp(bytes * static_cast<uint64_t>(a.batch) * a.seq_kv * a.heads_kv);
  }
  plan.pointers_offset = offset;
  offset +=
      AlignUp(static_cast<uint64_t>(kUnfusedPointerArrays) * plan.pairs_per_chunk * sizeof(void*));
  plan.scores_offset = offset;
  offset += AlignUp(static_cast<uint64_t>(plan.pairs_per_chunk) * plan.rows_per_chunk * row_bytes);
  plan.total = offset;
  return plan;
}

// Whether x * y fits cuBLAS's 32-bit int dimensions (x, y > 0).
bool FitsInt(int64_t x, int64_t y) { return x <= INT_MAX / y; }

}  // namespace

uint64_t UnfusedAttention::ScratchBytes(const AttentionArgs& args, uint64_t max_scratch_bytes) {
  return MakePlan(args, max_scratch_bytes).total;
}

std::string UnfusedAttention::UnsupportedReason(const AttentionArgs& args) {
  if (!KnownStorage(args.storage)) {
    return absl::StrCat("storage code ", static_cast<int>(args.storage),
                        ": the unfused backend runs float32, float16 and bfloat16");
  }
  if (args.batch <= 0 || args.seq_q <= 0 || args.seq_kv <= 0 || args.heads_q <= 0 ||
      args.heads_kv <= 0 || args.heads_out <= 0 || args.dim_qk <= 0 || args.dim_v <= 0) {
    return "the unfused backend needs every size positive";
  }
  // P is written over float32 score rows, so its leading dimension is S_kv * 4 / element size.
  const int64_t p_ld_factor = 4 / static_cast<int64_t>(ElementBytes(args.storage));
  if (!FitsInt(args.seq_kv, p_ld_factor)) {
    return absl::StrCat("seq_kv ", args.seq_kv,
                        ": the unfused backend's cuBLAS leading dimensions are 32-bit");
  }
  if (!FitsInt(args.heads_q, args.dim_qk) || !FitsInt(args.heads_kv, args.dim_qk) ||
      !FitsInt(args.heads_kv, args.dim_v) || !FitsInt(args.heads_out, args.dim_v)) {
    return "heads * head_dim past 2^31 - 1: the unfused backend's cuBLAS leading dimensions are "
           "32-bit";
  }
  if (RopeOn(args) &&
      (args.rope_dims <= 0 || args.rope_dims % 2 != 0 || args.rope_dims > args.dim_qk)) {
    return absl::StrCat("rope_dims ", args.rope_dims, " must be even and in (0, dim_qk]");
  }
  return "";
}

absl::Status UnfusedAttention::Run(const AttentionArgs& args, cublasHandle_t handle, void* scratch,
                                   uint64_t scratch_bytes, uint64_t max_scratch_bytes,
                                   cudaStream_t stream, const DeviceExpressions* expressions,
                                   float* lse) {
  if (const std::string why = UnsupportedReason(args); !why.empty()) {
    return absl::FailedPreconditionError(why);
  }
  // UnsupportedReason judges shapes only (the integrator asks before any upload); the device
  // tables are checked here.
  if (args.q == nullptr || args.k == nullptr || args.v == nullptr || args.o == nullptr ||
      args.head_map == nullptr || (RopeOn(args) && args.rope_cos_sin == nullptr) ||
      (args.mask == MaskCode::kBlock && args.block_bitmap == nullptr)) {
    return absl::InvalidArgumentError(
        "unfused attention needs Q, K, V, O, the head map and the mask and RoPE tables it uses "
        "on the device");
  }
  const Plan plan = MakePlan(args, max_scratch_bytes);
  if (scratch == nullptr || scratch_bytes < plan.total) {
    return absl::InvalidArgumentError(absl::StrCat("unfused attention needs ", plan.total,
                                                   " scratch bytes, was given ", scratch_bytes));
  }
  char* base = static_cast<char*>(scratch);
  void** ptrs = reinterpret_cast<void**>(base + plan.pointers_offset);
  float* scores = reinterpret_cast<float*>(base + plan.scores_offset);
  const int64_t stride = plan.pairs_per_chunk;  // entries per pointer array

  // The GEMMs read RoPE'd copies when RoPE is on: rotating once up front keeps the GEMMs plain.
  const void* q = nullptr;
  const void* k = nullptr;
  ATTNBENCH_CUDA_RETURN_IF_ERROR(
      GemmOperands(args, base + plan.rope_q_offset, base + plan.rope_k_offset, stream, &q, &k));

  // alpha and beta below are host values.
  if (absl::Status s = CublasStatus(cublasSetPointerMode(handle, CUBLAS_POINTER_MODE_HOST),
                                    "cublasSetPointerMode");
      !s.ok()) {
    return s;
  }
  const cudaDataType_t type = CublasType(args.storage);
  const float scale = args.scale;
  const float one = 1.0f;
  const float zero = 0.0f;
  const int seq_kv = static_cast<int>(args.seq_kv);
  const int ld_q = args.heads_q * args.dim_qk;
  const int ld_k = args.heads_kv * args.dim_qk;
  const int ld_v = args.heads_kv * args.dim_v;
  const int ld_o = args.heads_out * args.dim_v;
  const int ld_p =
      static_cast<int>(args.seq_kv * 4 / static_cast<int64_t>(ElementBytes(args.storage)));
  const int64_t total_pairs = static_cast<int64_t>(args.batch) * args.heads_out;
  // With expressions the built-in modifiers must come before the score_mod, and a mask_mod's -inf
  // must not pass through softcap (tanh would make it finite): they run as a pass of their own
  // and the softmax gets args without them.
  const bool modifiers_pass =
      expressions != nullptr && (args.alibi_slopes != nullptr || args.softcap > 0);
  AttentionArgs softmax_args = args;
  if (modifiers_pass) {
    softmax_args.alibi_slopes = nullptr;
    softmax_args.softcap = 0;
    softmax_args.modifiers &= ~(kModifierAlibi | kModifierSoftcap);
  }

  // Every chunk reuses the same pointer arrays and score buffer; stream order makes the next
  // chunk's pointer kernel wait for the previous chunk's GEMM to finish reading them.
  for (int64_t pair0 = 0; pair0 < total_pairs; pair0 += plan.pairs_per_chunk) {
    const int pairs = static_cast<int>(std::min(plan.pairs_per_chunk, total_pairs - pair0));
    for (int64_t row0 = 0; row0 < args.seq_q; row0 += plan.rows_per_chunk) {
      const int rows = static_cast<int>(std::min(plan.rows_per_chunk, args.seq_q - row0));
      ATTNBENCH_CUDA_RETURN_IF_ERROR(LaunchUnfusedPointers(args, q, k, pair0, pairs, row0, rows,
                                                           scores, ptrs, stride, stream));
      // S^T (S_kv x rows, ld S_kv) = K (S_kv x D_qk, stored as column-major K^T: op T) times
      // Q^T (D_qk x rows, column-major as stored). alpha applies the scale.
      if (absl::Status s = CublasStatus(
              cublasGemmBatchedEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, seq_kv, rows, args.dim_qk,
                                  &scale, ptrs + kPtrK * stride, type, ld_k, ptrs + kPtrQ * stride,
                                  type, ld_q, &zero, ptrs + kPtrScores * stride, CUDA_R_32F, seq_kv,
                                  pairs, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              "cublasGemmBatchedEx (scores = scale Q K^T)");
          !s.ok()) {
        return s;
      }
      if (expressions != nullptr) {
        // scale q.k -> ALiBi -> softcap -> score_mod -> mask: the built-ins as their own pass,
        // the expressions, then a softmax that only applies spec.mask.
        if (modifiers_pass) {
          ATTNBENCH_CUDA_RETURN_IF_ERROR(
              LaunchUnfusedModifiers(args, scores, pair0, pairs, row0, rows, stream));
        }
        ATTNBENCH_CUDA_RETURN_IF_ERROR(
            expressions->ApplyScoreMod(scores, pair0, pairs, row0, rows, stream));
        ATTNBENCH_CUDA_RETURN_IF_ERROR(
            expressions->ApplyMaskMod(scores, pair0, pairs, row0, rows, stream));
      }
      ATTNBENCH_CUDA_RETURN_IF_ERROR(
          LaunchUnfusedSoftmax(softmax_args, scores, pair0, pairs, row0, rows, stream, lse));
      // O^T (D_v x rows, ld H_out D_v) = V^T (D_v x S_kv, column-major as stored) times
      // P^T (S_kv x rows, column-major as stored with ld_p).
      if (absl::Status s = CublasStatus(
              cublasGemmBatchedEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, args.dim_v, rows, seq_kv, &one,
                                  ptrs + kPtrV * stride, type, ld_v, ptrs + kPtrScores * stride,
                                  type, ld_p, &zero, ptrs + kPtrO * stride, type, ld_o, pairs,
                                  CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              "cublasGemmBatchedEx (O = P V)");
          !s.ok()) {
        return s;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace attnbench::cuda
