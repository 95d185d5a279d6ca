#include "kernels/reference/reference64.h"

#include <cmath>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/modifiers.h"
#include "kernels/spec/parallel_fill.h"

namespace attnbench {
namespace {

absl::Status CheckShape(const char* name, const FloatTensor& t, const Shape& expected) {
  if (t.shape != expected || static_cast<int64_t>(t.values.size()) != NumElements(expected)) {
    return absl::InvalidArgumentError(
        absl::StrCat("input ", name, " has shape [", absl::StrJoin(t.shape, ", "), "] and ",
                     t.values.size(), " values; expected [", absl::StrJoin(expected, ", "), "]"));
  }
  return absl::OkStatus();
}

double Stored(double x, DType dtype) { return RoundToDType(static_cast<float>(x), dtype); }

}  // namespace

absl::StatusOr<Reference64> Reference64::Create(const Problem& problem,
                                                const AttentionInputs& inputs) {
  absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
  if (!shapes.ok()) return shapes.status();
  if (shapes->layer) {
    for (auto [name, t, shape] :
         {std::tuple{"x", &inputs.x, &shapes->x}, std::tuple{"w_q", &inputs.w_q, &shapes->w_q},
          std::tuple{"w_k", &inputs.w_k, &shapes->w_k},
          std::tuple{"w_v", &inputs.w_v, &shapes->w_v},
          std::tuple{"w_o", &inputs.w_o, &shapes->w_o}}) {
      if (auto s = CheckShape(name, *t, *shape); !s.ok()) return s;
    }
  } else {
    if (auto s = CheckShape("query", inputs.query, shapes->query); !s.ok()) return s;
    if (auto s = CheckShape("key", inputs.key, shapes->key); !s.ok()) return s;
    if (auto s = CheckShape("value", inputs.value, shapes->value); !s.ok()) return s;
  }
  absl::StatusOr<std::shared_ptr<const ProblemExpressions>> exprs = CompileExpressions(problem);
  if (!exprs.ok()) return exprs.status();
  return Reference64(problem, inputs, *std::move(shapes), *std::move(exprs));
}

Reference64::Reference64(const Problem& problem, const AttentionInputs& inputs,
                         ProblemShapes shapes, std::shared_ptr<const ProblemExpressions> exprs)
    : problem_(&problem),
      inputs_(&inputs),
      shapes_(std::move(shapes)),
      mask_(problem),
      scale_(problem.scale.value_or(1.0 / std::sqrt(static_cast<double>(problem.head_dim_qk)))) {
  if (problem.rope.enabled) {
    inv_freq_ = RopeInverseFrequencies(problem.rope.theta.value_or(10000.0),
                                       problem.rope.rotary_dims.value_or(problem.head_dim_qk));
  }
  if (problem.alibi.enabled) slopes_ = AlibiSlopes(problem.alibi, shapes_.heads.num_output_heads);
  exprs_ = std::move(exprs);
  if (exprs_ != nullptr && exprs_->score_mod.has_value()) {
    score_mod_ = std::make_unique<expr::Evaluator<double>>(*exprs_->score_mod, exprs_->aux);
  }
}

std::pair<int64_t, int> Reference64::RowKeyGroup(int64_t row) const {
  if (shapes_.layer) return {row / shapes_.seq_q, 0};
  const int64_t bh = row / shapes_.seq_q;
  const int h = static_cast<int>(bh % shapes_.heads.num_output_heads);
  return {bh / shapes_.heads.num_output_heads, shapes_.heads.map[h].kv_head};
}

std::vector<double> Reference64::Project(int64_t b, int64_t t, const FloatTensor& w, int64_t col0,
                                         int64_t n) const {
  const int64_t dm = shapes_.d_model;
  const int64_t w_cols = w.shape[1];
  const float* x = &inputs_->x.values[(b * shapes_.seq_q + t) * dm];
  std::vector<double> out(n, 0.0);
  for (int64_t c = 0; c < dm; ++c) {
    const float* wrow = &w.values[c * w_cols + col0];
    for (int64_t k = 0; k < n; ++k) out[k] += static_cast<double>(x[c]) * wrow[k];
  }
  for (double& v : out) v = Stored(v, problem_->dtype);
  return out;
}

const Reference64::KeyValues& Reference64::KeyValuesFor(int64_t b, int kv_head) {
  if (b != cached_batch_ || (!shapes_.layer && cache_.count(kv_head) == 0)) {
    cache_.clear();
    cached_batch_ = b;
  }
  auto it = cache_.find(kv_head);
  if (it != cache_.end()) return it->second;
  const int64_t skv = shapes_.seq_kv, dqk = shapes_.dim_qk, dv = shapes_.dim_v;
  const int64_t hkv = shapes_.heads.num_kv_heads;
  KeyValues kv;
  kv.keys.resize(skv * dqk);
  kv.values.resize(skv * dv);
  // Each key j is filled on its own (copied or projected, then rotated at j), so the keys are
  // split over threads: one (b, kv head) of a long decode cache is over 10^8 elements.
  const int64_t cost_each = (dqk + dv) * (shapes_.layer ? shapes_.d_model : 1);
  ParallelFill(skv, cost_each, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      double* k = &kv.keys[j * dqk];
      double* v = &kv.values[j * dv];
      if (shapes_.layer) {
        const std::vector<double> pk = Project(b, j, inputs_->w_k, kv_head * dqk, dqk);
        const std::vector<double> pv = Project(b, j, inputs_->w_v, kv_head * dv, dv);
        std::copy(pk.begin(), pk.end(), k);
        std::copy(pv.begin(), pv.end(), v);
      } else {
        // FP8 codes times their scales (§1b), exact in double; 1 for every other dtype.
        const double key_scale = ScaleOfHead(inputs_->key, kv_head);
        const double value_scale = ScaleOfHead(inputs_->value, kv_head);
        const float* src_k = &inputs_->key.values[((b * skv + j) * hkv + kv_head) * dqk];
        const float* src_v = &inputs_->value.values[((b * skv + j) * hkv + kv_head) * dv];
        for (int64_t d = 0; d < dqk; ++d) k[d] = src_k[d] * key_scale;
        for (int64_t d = 0; d < dv; ++d) v[d] = src_v[d] * value_scale;
      }
      if (!inv_freq_.empty()) ApplyRope(k, j, inv_freq_);
    }
  });
  return cache_.emplace(kv_head, std::move(kv)).first->second;
}

std::vector<double> Reference64::QueryRow(int64_t b, int64_t i, int query_head) const {
  const int64_t dqk = shapes_.dim_qk;
  std::vector<double> q(dqk);
  if (shapes_.layer) {
    q = Project(b, i, inputs_->w_q, query_head * dqk, dqk);
  } else {
    const float* src =
        &inputs_->query
             .values[((b * shapes_.seq_q + i) * shapes_.heads.num_query_heads + query_head) * dqk];
    const double query_scale = ScaleOfHead(inputs_->query, query_head);
    for (int64_t d = 0; d < dqk; ++d) q[d] = src[d] * query_scale;
  }
  if (!inv_freq_.empty()) ApplyRope(q.data(), i + mask_.offset(), inv_freq_);
  return q;
}

std::vector<double> Reference64::CoreRow(int64_t b, int h, int64_t i) {
  const HeadPair pair = shapes_.heads.map[h];
  const std::vector<double> q = QueryRow(b, i, pair.query_head);
  const KeyValues& kv = KeyValuesFor(b, pair.kv_head);
  const int64_t skv = shapes_.seq_kv, dqk = shapes_.dim_qk, dv = shapes_.dim_v;
  const int64_t pos = i + mask_.offset();
  expr::Bindings bind;
  bind.b = b;
  bind.h = h;
  bind.q = pos;
  bind.hq = pair.query_head;
  bind.hkv = pair.kv_head;
  std::vector<double> scores(skv, -std::numeric_limits<double>::infinity());
  double max_score = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < skv; ++j) {
    if (!mask_.Keeps(b, h, i, j)) continue;
    double dot = 0;
    for (int64_t d = 0; d < dqk; ++d) dot += q[d] * kv.keys[j * dqk + d];
    double s = scale_ * dot;
    if (!slopes_.empty()) s += slopes_[h] * static_cast<double>(j - pos);
    if (problem_->softcap.enabled) s = Softcap(s, problem_->softcap.cap);
    if (score_mod_ != nullptr) s = score_mod_->Score(bind, j, s);
    // std::max skips a NaN, so a row of NaN scores would read as fully masked and come out as
    // zeros; the oracle's row is NaN instead, and a backend that lost the NaN fails the check.
    if (std::isnan(s)) return std::vector<double>(dv, std::numeric_limits<double>::quiet_NaN());
    scores[j] = s;
    max_score = std::max(max_score, s);
  }
  std::vector<double> out(dv, 0.0);
  if (max_score == -std::numeric_limits<double>::infinity()) return out;  // every key hidden
  double denominator = 0;
  for (int64_t j = 0; j < skv; ++j) {
    if (scores[j] == -std::numeric_limits<double>::infinity()) continue;
    const double p = std::exp(scores[j] - max_score);
    denominator += p;
    for (int64_t d = 0; d < dv; ++d) out[d] += p * kv.values[j * dv + d];
  }
  for (double& v : out) v /= denominator;
  return out;
}

std::vector<double> Reference64::Row(int64_t row) {
  if (!shapes_.layer) {
    const int64_t i = row % shapes_.seq_q;
    const int64_t bh = row / shapes_.seq_q;
    return CoreRow(bh / shapes_.heads.num_output_heads,
                   static_cast<int>(bh % shapes_.heads.num_output_heads), i);
  }
  const int64_t b = row / shapes_.seq_q;
  const int64_t i = row % shapes_.seq_q;
  const int64_t dv = shapes_.dim_v, dm = shapes_.d_model;
  std::vector<double> y(dm, 0.0);
  for (int h = 0; h < shapes_.heads.num_output_heads; ++h) {
    const std::vector<double> o = CoreRow(b, h, i);
    for (int64_t d = 0; d < dv; ++d) {
      const double stored = Stored(o[d], problem_->dtype);
      const float* wrow = &inputs_->w_o.values[(h * dv + d) * dm];
      for (int64_t c = 0; c < dm; ++c) y[c] += stored * wrow[c];
    }
  }
  return y;
}

}  // namespace attnbench
