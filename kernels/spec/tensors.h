// Host-side tensors exchanged between backends, the reference and the server: values as float
// (exactly representable in the storage dtype after rounding) plus the dtype they are stored in.
#ifndef ATTNBENCH_KERNELS_SPEC_TENSORS_H_
#define ATTNBENCH_KERNELS_SPEC_TENSORS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/spec/problem.h"

namespace attnbench {

struct FloatTensor {
  DType dtype = DType::kFloat32;  // what the values were rounded to
  std::vector<int64_t> shape;
  std::vector<float> values;  // row-major
  // DTYPE_FLOAT8_E4M3 Q, K, V only (§1b, kernels/spec/float8.h): values are e4m3 codes, and
  // element [b, s, h, d] stands for values * scales[h] (one per head) or values * scales[0] (one
  // for the tensor). Empty: the values are what they stand for.
  std::vector<float> scales;
};

// The scale of head `head` of a BSHD tensor (1 when it has none).
inline double ScaleOfHead(const FloatTensor& t, int64_t head) {
  if (t.scales.empty()) return 1.0;
  return t.scales.size() == 1 ? t.scales[0] : t.scales[head];
}

// What the values stand for, as float32 (code * scale, rounded once; a copy of the values when
// the tensor has no scales).
std::vector<float> DequantizedValues(const FloatTensor& t);

// What a forward pass reads (§1 shapes, BSHD). Layer scope adds X and the four weights.
struct AttentionInputs {
  FloatTensor query;  // [B, S_q, H_q, D_qk]
  FloatTensor key;    // [B, S_kv, H_kv, D_qk]
  FloatTensor value;  // [B, S_kv, H_kv, D_v]
  // Layer scope only (empty otherwise).
  FloatTensor x;    // [B, S, d_model]
  FloatTensor w_q;  // [d_model, H_q * D_qk]
  FloatTensor w_k;  // [d_model, H_kv * D_qk]
  FloatTensor w_v;  // [d_model, H_kv * D_v]
  FloatTensor w_o;  // [H_out * D_v, d_model]
  // PHASE_BACKWARD only: dO [B, S_q, H_out, D_v] (the client's or generated, tensor id 3).
  FloatTensor grad_output;
};

// What a PHASE_BACKWARD run computes, in the dtype: at core scope dQ, dK, dV with the shapes of
// Q, K, V; at layer scope dX and the four weight gradients with the shapes of X and the weights.
// The other scope's stay empty (gradients.h lists which a problem has).
struct GradientTensors {
  FloatTensor dq;
  FloatTensor dk;
  FloatTensor dv;
  FloatTensor dx;    // [B, S, d_model]
  FloatTensor dw_q;  // [d_model, H_q * D_qk]
  FloatTensor dw_k;  // [d_model, H_kv * D_qk]
  FloatTensor dw_v;  // [d_model, H_kv * D_v]
  FloatTensor dw_o;  // [H_out * D_v, d_model]
};

// Encodes values as little-endian elements of `dtype` (round to nearest even).
std::string EncodeTensor(const FloatTensor& tensor);

// Elements of the whole tensor that are NaN or infinite as stored in its dtype (a float32 value
// beyond fp16's range counts: it is infinite in what a client receives).
int64_t CountNonFinite(const FloatTensor& tensor);

struct OutputSummary {
  uint64_t checksum = 0;  // FNV-1a 64 over the encoded bytes
  double mean = 0;
  double abs_max = 0;
  int64_t num_elements = 0;
  int64_t non_finite_elements = 0;  // CountNonFinite over every element, not a sample
};
OutputSummary SummarizeTensor(const FloatTensor& tensor);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_SPEC_TENSORS_H_
