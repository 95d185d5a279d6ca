#include "kernels/spec/shapes.h"

#include <limits>

namespace attnbench {
namespace {

// Shapes are computed before ValidateProblem has bounded them (it needs them to do so), so a
// hostile spec must not overflow here: products saturate at INT64_MAX, which validation rejects.
int64_t SatMul(int64_t a, int64_t b) {
  int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) return std::numeric_limits<int64_t>::max();
  return r;
}

}  // namespace

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n = SatMul(n, d);
  return n;
}

absl::StatusOr<ProblemShapes> ShapesOf(const Problem& problem) {
  absl::StatusOr<HeadConfig> heads = ResolveHeads(problem.layout);
  if (!heads.ok()) return heads.status();
  ProblemShapes s;
  s.heads = *std::move(heads);
  s.batch = problem.batch_size;
  s.seq_q = problem.seq_len_q;
  s.seq_kv = problem.seq_len_kv;
  s.dim_qk = problem.head_dim_qk;
  s.dim_v = problem.head_dim_v.value_or(problem.head_dim_qk);
  const int64_t hq = s.heads.num_query_heads;
  const int64_t hkv = s.heads.num_kv_heads;
  const int64_t hout = s.heads.num_output_heads;
  s.query = {s.batch, s.seq_q, hq, s.dim_qk};
  s.key = {s.batch, s.seq_kv, hkv, s.dim_qk};
  s.value = {s.batch, s.seq_kv, hkv, s.dim_v};
  s.core_output = {s.batch, s.seq_q, hout, s.dim_v};
  s.layer = problem.scope == Scope::kLayer;
  if (s.layer) {
    s.d_model = problem.d_model.value_or(0);
    s.x = {s.batch, s.seq_q, s.d_model};
    s.w_q = {s.d_model, SatMul(hq, s.dim_qk)};
    s.w_k = {s.d_model, SatMul(hkv, s.dim_qk)};
    s.w_v = {s.d_model, SatMul(hkv, s.dim_v)};
    s.w_o = {SatMul(hout, s.dim_v), s.d_model};
    s.output = {s.batch, s.seq_q, s.d_model};
    s.rows_total = SatMul(s.batch, s.seq_q);
    s.row_width = s.d_model;
  } else {
    s.output = s.core_output;
    s.rows_total = SatMul(SatMul(s.batch, hout), s.seq_q);
    s.row_width = s.dim_v;
  }
  return s;
}

}  // namespace attnbench
