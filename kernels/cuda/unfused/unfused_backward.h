// The cuda_unfused backend's backward (PHASE_BACKWARD, docs/variants.md §5): the textbook one
// with cuBLAS, the baseline a fused backward is compared against. Per chunk of (b, output head)
// pairs and query rows it recomputes S = scale Q' K'^T and dP = dO V^T with batched GEMMs into
// float32 scratch, turns them into P = exp(s - lse) (the forward's log-sum-exp) and
// dS = P (dP - D) ds/dt with D = sum_j P dP (the softmax's backward, in one kernel), both in the
// storage type, then accumulates dV += P^T dO, dK' += scale dS^T Q' and dQ' += scale dS K' with
// batched GEMMs (beta = 1) into float32 accumulators indexed by the key/value and query heads,
// so K and V are never expanded to the output heads. Finally dQ and dK go back through RoPE's
// transpose and all three are rounded to the storage type. Materializes S and dP (no tile
// skipping), chunked so that both stay under a caller-chosen size.
//
// Determinism without atomics: the output heads are split into rounds (UnfusedHeadRounds) in
// which no two heads share a query head or a key/value head, and a batched GEMM only ever holds
// entries of one round, so no two of its entries add to the same accumulator; rounds, chunks and
// row blocks follow in a fixed order on one stream.
#ifndef ATTNBENCH_KERNELS_CUDA_UNFUSED_UNFUSED_BACKWARD_H_
#define ATTNBENCH_KERNELS_CUDA_UNFUSED_UNFUSED_BACKWARD_H_

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/backward_args.h"

namespace attnbench::cuda {

// The output heads in rounds: round r is heads[offsets[r]] .. heads[offsets[r + 1] - 1],
// ascending, no two reading the same query head or the same key/value head. Every output head is
// in exactly one round, and there are as few rounds as can be: the most output heads reading one
// query head or one key/value head (a proper edge colouring of the head map's bipartite graph;
// Konig's theorem). One round for MHA, sSQA and xSQA, H_q / H_kv for GQA and SQA, H for MQA,
// max(g_q, g_kv) for GQKVA. The same map always gives the same rounds.
struct UnfusedHeadRounds {
  std::vector<int32_t> heads;
  std::vector<int32_t> offsets;  // rounds + 1 entries, offsets[0] = 0

  int rounds() const { return offsets.empty() ? 0 : static_cast<int>(offsets.size()) - 1; }
  // The most heads of any round (0 without heads).
  int max_round_size() const;
};

class UnfusedBackward {
 public:
  // The head map as its two columns: output head h reads query head query_heads[h] and key/value
  // head kv_heads[h] (same length).
  static UnfusedHeadRounds HeadRounds(const std::vector<int32_t>& query_heads,
                                      const std::vector<int32_t>& kv_heads);

  // Where everything lives in the scratch and how the work is chunked; ScratchBytes and Run both
  // derive it from the same inputs, so they always agree.
  struct Plan {
    // (b, h) entries of one round per chunk (at most B times the largest round, and 65535), and
    // query rows per chunk; entries > 1 only when rows_per_chunk == S_q.
    int64_t entries_per_chunk = 1;
    int64_t rows_per_chunk = 1;
    uint64_t rope_q_offset = 0;  // RoPE'd Q and K copies in the storage type (only with RoPE)
    uint64_t rope_k_offset = 0;
    uint64_t dq_offset = 0;  // float32 accumulators shaped like Q, K, V
    uint64_t dk_offset = 0;
    uint64_t dv_offset = 0;
    uint64_t pointers_offset = 0;     // kUnfusedBackwardPointerArrays arrays of entries_per_chunk
    uint64_t pair_ids_offset = 0;     // an int64 per entry of a chunk
    uint64_t scores_offset = 0;       // float32 S of a chunk, later P
    uint64_t score_grads_offset = 0;  // float32 dP of a chunk, later dS
    uint64_t total = 0;
  };
  // S and dP of one chunk stay under max_scratch_bytes together (at least one (b, h, query row)
  // entry per chunk whatever the budget); the accumulators and the RoPE'd copies come on top.
  // Depends only on shapes, storage, RoPE on/off, the rounds and max_scratch_bytes, so shape-only
  // args (ShapeArgs) give the same plan as device args.
  static Plan MakePlan(const AttentionArgs& args, const UnfusedHeadRounds& rounds,
                       uint64_t max_scratch_bytes);
  static uint64_t ScratchBytes(const AttentionArgs& args, const UnfusedHeadRounds& rounds,
                               uint64_t max_scratch_bytes) {
    return MakePlan(args, rounds, max_scratch_bytes).total;
  }

  // Computes grads.dq, grads.dk, grads.dv (and grads.row_terms) from args' Q, K, V, grads.grad_out
  // and grads.lse, which the forward (UnfusedAttention::Run with `lse`) wrote, on `stream`, using
  // `handle` (bound to `stream` by the caller; its pointer mode is set to host) and `scratch`
  // (device memory, at least ScratchBytes(args, rounds, max_scratch_bytes) bytes, 256-byte
  // aligned). `round_heads` is rounds.heads on the device. Allocates nothing and does not
  // synchronize. Errors as UnfusedAttention::Run's: unsupported input FAILED_PRECONDITION (its
  // UnsupportedReason), missing pointers or too little scratch INVALID_ARGUMENT, cuBLAS and CUDA
  // failures INTERNAL with the call named.
  static absl::Status Run(const AttentionArgs& args, const BackwardArgs& grads,
                          const UnfusedHeadRounds& rounds, const int32_t* round_heads,
                          cublasHandle_t handle, void* scratch, uint64_t scratch_bytes,
                          uint64_t max_scratch_bytes, cudaStream_t stream);
};

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_UNFUSED_UNFUSED_BACKWARD_H_
