// The cuda_unfused backward's host side: the head rounds, the scratch plan (RoPE'd copies, float32
// accumulators, pointer arrays, S and dP of a chunk) and, per round, chunk of its (b, h) entries
// and block of query rows, five batched cuBLAS GEMMs around the score-gradient kernel. cuBLAS is
// column-major, so each row-major product is computed as its transpose; with every BSHD head a
// strided matrix (leading dimension heads * dim) and the chunk's S, dP, P, dS rows [rows][S_kv]:
//   S^T  (S_kv x rows)   = scale K' Q'^T     (T, N) over D_qk, into float32
//   dP^T (S_kv x rows)   = V dO^T            (T, N) over D_v, into float32
//   dV^T (D_v x S_kv)   += dO^T P            (N, T) over rows, float32 accumulator
//   dK^T (D_qk x S_kv)  += scale Q'^T dS     (N, T) over rows
//   dQ^T (D_qk x rows)  += scale K'^T dS^T   (N, N) over S_kv
// P and dS (the storage type) lie over the float32 rows of S and dP, leading dimension
// S_kv * 4 / element size, as the forward's P does.
#include "kernels/cuda/unfused/unfused_backward.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/backend/cuda_status.h"
#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/unfused/unfused_attention.h"
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

uint64_t Elements(int64_t batch, int64_t seq, int64_t heads, int64_t dim) {
  return static_cast<uint64_t>(std::max<int64_t>(batch, 0)) * std::max<int64_t>(seq, 0) *
         std::max<int64_t>(heads, 0) * std::max<int64_t>(dim, 0);
}

// One batched GEMM with host alpha and beta: C (float32, or the storage type where c_type says)
// = alpha op(A) op(B) + beta C over `batch` pointer triples.
absl::Status Gemm(cublasHandle_t handle, cublasOperation_t op_a, cublasOperation_t op_b, int m,
                  int n, int k, float alpha, void** a, cudaDataType_t ab_type, int lda, void** b,
                  int ldb, float beta, void** c, int ldc, int batch, const char* what) {
  return CublasStatus(cublasGemmBatchedEx(handle, op_a, op_b, m, n, k, &alpha, a, ab_type, lda, b,
                                          ab_type, ldb, &beta, c, CUDA_R_32F, ldc, batch,
                                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                      what);
}

}  // namespace

int UnfusedHeadRounds::max_round_size() const {
  int most = 0;
  for (int r = 0; r < rounds(); ++r) most = std::max(most, offsets[r + 1] - offsets[r]);
  return most;
}

UnfusedHeadRounds UnfusedBackward::HeadRounds(const std::vector<int32_t>& query_heads,
                                              const std::vector<int32_t>& kv_heads) {
  // A proper edge colouring of the bipartite multigraph whose edges are the output heads (query
  // head -- key/value head) with as many colours as the largest degree (Konig's theorem), built
  // edge by edge: colour a is the first free at the query head, b the first free at the key/value
  // head; when a is taken at the key/value head, the a/b alternating path from there is flipped
  // first (in a bipartite graph it never reaches the query head, where a is free).
  const int heads = static_cast<int>(std::min(query_heads.size(), kv_heads.size()));
  UnfusedHeadRounds out;
  out.offsets.push_back(0);
  if (heads == 0) return out;
  const int num_q = *std::max_element(query_heads.begin(), query_heads.begin() + heads) + 1;
  const int num_kv = *std::max_element(kv_heads.begin(), kv_heads.begin() + heads) + 1;
  std::vector<int> degree_q(num_q, 0), degree_kv(num_kv, 0);
  for (int h = 0; h < heads; ++h) {
    ++degree_q[query_heads[h]];
    ++degree_kv[kv_heads[h]];
  }
  const int colours = std::max(*std::max_element(degree_q.begin(), degree_q.end()),
                               *std::max_element(degree_kv.begin(), degree_kv.end()));
  // at_q[qh * colours + c]: the head of colour c reading query head qh, or -1; at_kv likewise.
  std::vector<int> at_q(static_cast<size_t>(num_q) * colours, -1);
  std::vector<int> at_kv(static_cast<size_t>(num_kv) * colours, -1);
  std::vector<int> colour(heads, -1);
  auto slot_q = [&](int h, int c) -> int& { return at_q[query_heads[h] * colours + c]; };
  auto slot_kv = [&](int h, int c) -> int& { return at_kv[kv_heads[h] * colours + c]; };
  for (int h = 0; h < heads; ++h) {
    int a = 0;
    while (at_q[query_heads[h] * colours + a] != -1) ++a;
    int b = 0;
    while (at_kv[kv_heads[h] * colours + b] != -1) ++b;
    if (at_kv[kv_heads[h] * colours + a] != -1) {
      // The path: from the key/value head along colour a, then b, a, ... alternating sides.
      std::vector<int> path;
      bool on_kv = true;
      int node = kv_heads[h];
      int c = a;
      for (;;) {
        const int e = on_kv ? at_kv[node * colours + c] : at_q[node * colours + c];
        if (e == -1) break;
        path.push_back(e);
        node = on_kv ? query_heads[e] : kv_heads[e];
        on_kv = !on_kv;
        c = c == a ? b : a;
      }
      for (int e : path) slot_q(e, colour[e]) = slot_kv(e, colour[e]) = -1;
      for (int e : path) {
        colour[e] = colour[e] == a ? b : a;
        slot_q(e, colour[e]) = slot_kv(e, colour[e]) = e;
      }
    }
    colour[h] = a;
    slot_q(h, a) = slot_kv(h, a) = h;
  }
  for (int c = 0; c < colours; ++c) {
    for (int h = 0; h < heads; ++h) {
      if (colour[h] == c) out.heads.push_back(h);
    }
    out.offsets.push_back(static_cast<int32_t>(out.heads.size()));
  }
  return out;
}

UnfusedBackward::Plan UnfusedBackward::MakePlan(const AttentionArgs& a,
                                                const UnfusedHeadRounds& rounds,
                                                uint64_t max_scratch_bytes) {
  Plan plan;
  // Clamped so an unsupported (zero-sized) request still plans without dividing by zero.
  const int64_t seq_q = std::max<int64_t>(a.seq_q, 1);
  const int64_t entries =
      std::max<int64_t>(static_cast<int64_t>(a.batch) * rounds.max_round_size(), 1);
  // A row of S and a row of dP, float32 each.
  const uint64_t row_bytes = static_cast<uint64_t>(std::max<int64_t>(a.seq_kv, 1)) * 8;
  const uint64_t rows_fit = max_scratch_bytes / row_bytes;
  if (static_cast<uint64_t>(seq_q) <= rows_fit) {
    plan.rows_per_chunk = seq_q;
    const uint64_t entries_fit = rows_fit / static_cast<uint64_t>(seq_q);
    plan.entries_per_chunk =
        static_cast<int64_t>(std::min<uint64_t>(entries_fit, std::min(entries, kMaxPairsPerChunk)));
  } else {
    plan.entries_per_chunk = 1;
    plan.rows_per_chunk = static_cast<int64_t>(std::max<uint64_t>(rows_fit, 1));
  }
  plan.rows_per_chunk = std::min<int64_t>(plan.rows_per_chunk, INT_MAX);  // cuBLAS n is an int

  const uint64_t q_elements = Elements(a.batch, a.seq_q, a.heads_q, a.dim_qk);
  const uint64_t k_elements = Elements(a.batch, a.seq_kv, a.heads_kv, a.dim_qk);
  const uint64_t v_elements = Elements(a.batch, a.seq_kv, a.heads_kv, a.dim_v);
  uint64_t offset = 0;
  if (RopeOn(a)) {
    plan.rope_q_offset = offset;
    offset += AlignUp(ElementBytes(a.storage) * q_elements);
    plan.rope_k_offset = offset;
    offset += AlignUp(ElementBytes(a.storage) * k_elements);
  }
  plan.dq_offset = offset;
  offset += AlignUp(4 * q_elements);
  plan.dk_offset = offset;
  offset += AlignUp(4 * k_elements);
  plan.dv_offset = offset;
  offset += AlignUp(4 * v_elements);
  const uint64_t chunk_entries = static_cast<uint64_t>(plan.entries_per_chunk);
  plan.pointers_offset = offset;
  offset +=
      AlignUp(static_cast<uint64_t>(kUnfusedBackwardPointerArrays) * chunk_entries * sizeof(void*));
  plan.pair_ids_offset = offset;
  offset += AlignUp(chunk_entries * sizeof(int64_t));
  const uint64_t chunk_floats = chunk_entries * static_cast<uint64_t>(plan.rows_per_chunk) *
                                static_cast<uint64_t>(std::max<int64_t>(a.seq_kv, 1));
  plan.scores_offset = offset;
  offset += AlignUp(4 * chunk_floats);
  plan.score_grads_offset = offset;
  offset += AlignUp(4 * chunk_floats);
  plan.total = offset;
  return plan;
}

absl::Status UnfusedBackward::Run(const AttentionArgs& args, const BackwardArgs& grads,
                                  const UnfusedHeadRounds& rounds, const int32_t* round_heads,
                                  cublasHandle_t handle, void* scratch, uint64_t scratch_bytes,
                                  uint64_t max_scratch_bytes, cudaStream_t stream) {
  if (const std::string why = UnfusedAttention::UnsupportedReason(args); !why.empty()) {
    return absl::FailedPreconditionError(why);
  }
  if (args.q == nullptr || args.k == nullptr || args.v == nullptr || args.head_map == nullptr ||
      (RopeOn(args) && args.rope_cos_sin == nullptr) ||
      (args.mask == MaskCode::kBlock && args.block_bitmap == nullptr) ||
      grads.grad_out == nullptr || grads.lse == nullptr || grads.row_terms == nullptr ||
      grads.dq == nullptr || grads.dk == nullptr || grads.dv == nullptr || round_heads == nullptr) {
    return absl::InvalidArgumentError(
        "the unfused backward needs Q, K, V, dO, the log-sum-exp, D, dQ, dK, dV, the head map, "
        "the head rounds and the mask and RoPE tables it uses on the device");
  }
  if (rounds.rounds() < 1 || rounds.offsets.front() != 0 ||
      rounds.offsets.back() != static_cast<int32_t>(rounds.heads.size()) ||
      static_cast<int64_t>(rounds.heads.size()) != args.heads_out) {
    return absl::InvalidArgumentError(absl::StrCat("the unfused backward's head rounds hold ",
                                                   rounds.heads.size(), " heads, the problem has ",
                                                   args.heads_out));
  }
  const Plan plan = MakePlan(args, rounds, max_scratch_bytes);
  if (scratch == nullptr || scratch_bytes < plan.total) {
    return absl::InvalidArgumentError(absl::StrCat("the unfused backward needs ", plan.total,
                                                   " scratch bytes, was given ", scratch_bytes));
  }
  char* base = static_cast<char*>(scratch);
  float* dq = reinterpret_cast<float*>(base + plan.dq_offset);
  float* dk = reinterpret_cast<float*>(base + plan.dk_offset);
  float* dv = reinterpret_cast<float*>(base + plan.dv_offset);
  void** ptrs = reinterpret_cast<void**>(base + plan.pointers_offset);
  int64_t* pair_ids = reinterpret_cast<int64_t*>(base + plan.pair_ids_offset);
  float* scores = reinterpret_cast<float*>(base + plan.scores_offset);
  float* score_grads = reinterpret_cast<float*>(base + plan.score_grads_offset);
  const int64_t stride = plan.entries_per_chunk;  // entries per pointer array

  // The accumulators start at zero on every run: a query head no output head reads keeps a zero
  // dQ. Memsets on the stream, so they order with the rest (and are captured by a graph).
  ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(
      dq, 0, 4 * Elements(args.batch, args.seq_q, args.heads_q, args.dim_qk), stream));
  ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(
      dk, 0, 4 * Elements(args.batch, args.seq_kv, args.heads_kv, args.dim_qk), stream));
  ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(
      dv, 0, 4 * Elements(args.batch, args.seq_kv, args.heads_kv, args.dim_v), stream));

  // The GEMMs read RoPE'd copies when RoPE is on, as the forward's do.
  const void* q = nullptr;
  const void* k = nullptr;
  ATTNBENCH_CUDA_RETURN_IF_ERROR(
      GemmOperands(args, base + plan.rope_q_offset, base + plan.rope_k_offset, stream, &q, &k));

  if (absl::Status s = CublasStatus(cublasSetPointerMode(handle, CUBLAS_POINTER_MODE_HOST),
                                    "cublasSetPointerMode");
      !s.ok()) {
    return s;
  }
  const cudaDataType_t type = CublasType(args.storage);
  const float scale = args.scale;
  const int seq_kv = static_cast<int>(args.seq_kv);
  const int dim_qk = args.dim_qk;
  const int dim_v = args.dim_v;
  const int ld_q = args.heads_q * args.dim_qk;
  const int ld_k = args.heads_kv * args.dim_qk;
  const int ld_v = args.heads_kv * args.dim_v;
  const int ld_o = args.heads_out * args.dim_v;
  const int ld_p =
      static_cast<int>(args.seq_kv * 4 / static_cast<int64_t>(ElementBytes(args.storage)));
  void** q_ptrs = ptrs + kBwdQ * stride;
  void** k_ptrs = ptrs + kBwdK * stride;
  void** v_ptrs = ptrs + kBwdV * stride;
  void** do_ptrs = ptrs + kBwdGradOut * stride;
  void** s_ptrs = ptrs + kBwdScores * stride;
  void** dp_ptrs = ptrs + kBwdScoreGrads * stride;
  void** dq_ptrs = ptrs + kBwdDq * stride;
  void** dk_ptrs = ptrs + kBwdDk * stride;
  void** dv_ptrs = ptrs + kBwdDv * stride;

  // Every chunk reuses the same pointer arrays and S / dP buffers; stream order makes the next
  // chunk's pointer kernel wait for the previous chunk's GEMMs to finish reading them.
  for (int r = 0; r < rounds.rounds(); ++r) {
    const int32_t round_size = rounds.offsets[r + 1] - rounds.offsets[r];
    const int64_t round_entries = static_cast<int64_t>(args.batch) * round_size;
    for (int64_t entry0 = 0; entry0 < round_entries; entry0 += plan.entries_per_chunk) {
      const int entries =
          static_cast<int>(std::min(plan.entries_per_chunk, round_entries - entry0));
      for (int64_t row0 = 0; row0 < args.seq_q; row0 += plan.rows_per_chunk) {
        const int rows = static_cast<int>(std::min(plan.rows_per_chunk, args.seq_q - row0));
        ATTNBENCH_CUDA_RETURN_IF_ERROR(LaunchUnfusedBackwardPointers(
            args, q, k, grads.grad_out, dq, dk, dv, round_heads + rounds.offsets[r], round_size,
            entry0, entries, row0, rows, scores, score_grads, ptrs, pair_ids, stride, stream));
        if (absl::Status s = Gemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, seq_kv, rows, dim_qk, scale,
                                  k_ptrs, type, ld_k, q_ptrs, ld_q, 0.0f, s_ptrs, seq_kv, entries,
                                  "cublasGemmBatchedEx (S = scale Q K^T)");
            !s.ok()) {
          return s;
        }
        if (absl::Status s = Gemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, seq_kv, rows, dim_v, 1.0f,
                                  v_ptrs, type, ld_v, do_ptrs, ld_o, 0.0f, dp_ptrs, seq_kv, entries,
                                  "cublasGemmBatchedEx (dP = dO V^T)");
            !s.ok()) {
          return s;
        }
        ATTNBENCH_CUDA_RETURN_IF_ERROR(LaunchUnfusedScoreGrads(args, grads.lse, grads.row_terms,
                                                               scores, score_grads, pair_ids,
                                                               entries, row0, rows, stream));
        // From here s_ptrs hold P and dp_ptrs dS, in the storage type with leading dim ld_p.
        if (absl::Status s = Gemm(handle, CUBLAS_OP_N, CUBLAS_OP_T, dim_v, seq_kv, rows, 1.0f,
                                  do_ptrs, type, ld_o, s_ptrs, ld_p, 1.0f, dv_ptrs, ld_v, entries,
                                  "cublasGemmBatchedEx (dV += P^T dO)");
            !s.ok()) {
          return s;
        }
        if (absl::Status s = Gemm(handle, CUBLAS_OP_N, CUBLAS_OP_T, dim_qk, seq_kv, rows, scale,
                                  q_ptrs, type, ld_q, dp_ptrs, ld_p, 1.0f, dk_ptrs, ld_k, entries,
                                  "cublasGemmBatchedEx (dK += scale dS^T Q)");
            !s.ok()) {
          return s;
        }
        if (absl::Status s = Gemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, dim_qk, rows, seq_kv, scale,
                                  k_ptrs, type, ld_k, dp_ptrs, ld_p, 1.0f, dq_ptrs, ld_q, entries,
                                  "cublasGemmBatchedEx (dQ += scale dS K)");
            !s.ok()) {
          return s;
        }
      }
    }
  }
  ATTNBENCH_CUDA_RETURN_IF_ERROR(
      LaunchUnfusedGradientsOut(args, dq, dk, dv, grads.dq, grads.dk, grads.dv, stream));
  return absl::OkStatus();
}

}  // namespace attnbench::cuda
