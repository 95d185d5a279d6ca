// Shared by the backward tests: a problem turned into its PHASE_BACKWARD version, the oracle's
// whole dQ, dK, dV in float64 (backward64.h), and a client tensor from a FloatTensor.
#ifndef ATTNBENCH_TESTS_KERNELS_GRADIENT_UTIL_H_
#define ATTNBENCH_TESTS_KERNELS_GRADIENT_UTIL_H_

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/reference/backward64.h"
#include "kernels/spec/problem.h"
#include "kernels/spec/tensors.h"

namespace attnbench::testing {

inline Problem AsBackward(Problem p) {
  p.phase = Phase::kBackward;
  return p;
}

inline HostTensor ToHost(const FloatTensor& t) {
  HostTensor h;
  h.dtype = t.dtype;
  h.shape = t.shape;
  h.data = EncodeTensor(t);
  return h;
}

// dQ, dK, dV in BSHD, as double.
struct OracleGradients {
  std::vector<double> dq, dk, dv;
};

inline OracleGradients FullOracleGradients(const Problem& p, const AttentionInputs& in,
                                           int threads = 2) {
  OracleGradients g;
  absl::StatusOr<Backward64> oracle = Backward64::Create(p, in);
  EXPECT_TRUE(oracle.ok()) << oracle.status();
  if (!oracle.ok()) return g;
  const ProblemShapes& s = oracle->shapes();
  const int64_t hq = s.heads.num_query_heads, hkv = s.heads.num_kv_heads;
  g.dq.resize(NumElements(s.query));
  g.dk.resize(NumElements(s.key));
  g.dv.resize(NumElements(s.value));
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int qh = 0; qh < hq; ++qh) {
      for (int64_t i = 0; i < s.seq_q; ++i) {
        const std::vector<double> row = oracle->QueryGradRow(b, i, qh);
        std::copy(row.begin(), row.end(), &g.dq[((b * s.seq_q + i) * hq + qh) * s.dim_qk]);
      }
    }
    for (int kh = 0; kh < hkv; ++kh) {
      const Backward64::KeyValueGrads kv = oracle->KeyValueGradGroup(b, kh, threads);
      for (int64_t j = 0; j < s.seq_kv; ++j) {
        const int64_t row = (b * s.seq_kv + j) * hkv + kh;
        std::copy(&kv.dk[j * s.dim_qk], &kv.dk[(j + 1) * s.dim_qk], &g.dk[row * s.dim_qk]);
        std::copy(&kv.dv[j * s.dim_v], &kv.dv[(j + 1) * s.dim_v], &g.dv[row * s.dim_v]);
      }
    }
  }
  return g;
}

}  // namespace attnbench::testing

#endif  // ATTNBENCH_TESTS_KERNELS_GRADIENT_UTIL_H_
