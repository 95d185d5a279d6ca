// What a CUDA backward kernel (PHASE_BACKWARD, docs/variants.md §5) reads and writes beside the
// forward's AttentionArgs: dO, what the forward saves for the backward (O before rounding, the
// log-sum-exp of each row), the row terms D = <dO, O>, the gradients, and the head map inverted
// (the output heads reading each query head and each key/value head), so that a kernel sums dQ,
// dK and dV over those heads without expanding K and V. DeviceBackward (backend/device_backward.h)
// builds it on the host. Plain C++ like attention_args.h, for .cc and .cu files alike.
#ifndef ATTNBENCH_KERNELS_CUDA_COMMON_BACKWARD_ARGS_H_
#define ATTNBENCH_KERNELS_CUDA_COMMON_BACKWARD_ARGS_H_

#include <cstdint>

namespace attnbench::cuda {

struct BackwardArgs {
  // dO [B, S_q, H_out, D_v] in AttentionArgs::storage.
  const void* grad_out = nullptr;
  // Written by the forward: O [B, S_q, H_out, D_v] in float32 before its rounding to the storage
  // type, and the natural-log log-sum-exp of each row's kept scores [B, H_out, S_q] (-inf for a
  // row whose every key is hidden).
  float* out = nullptr;
  float* lse = nullptr;
  // D_i = <dO_i, O_i> [B, H_out, S_q], written by the backward's first step.
  float* row_terms = nullptr;
  // dQ [B, S_q, H_q, D_qk], dK [B, S_kv, H_kv, D_qk], dV [B, S_kv, H_kv, D_v] in the storage type.
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  // The output heads reading query head qh are query_heads[query_head_offsets[qh]] up to
  // query_heads[query_head_offsets[qh + 1]] (exclusive), ascending; likewise for key/value head kh
  // with kv_head_offsets and kv_heads. Offsets have H_q + 1 and H_kv + 1 entries.
  const int32_t* query_head_offsets = nullptr;
  const int32_t* query_heads = nullptr;
  const int32_t* kv_head_offsets = nullptr;
  const int32_t* kv_heads = nullptr;
};

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_COMMON_BACKWARD_ARGS_H_
