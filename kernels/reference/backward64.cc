#include "kernels/reference/backward64.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <set>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/spec/modifiers.h"

namespace attnbench {
namespace {

constexpr double kMinusInf = -std::numeric_limits<double>::infinity();
// Keys (or queries) per mask tile when walking the kept pairs of one row (or column): the mask's
// coverage of a tile is asked once, so hidden stretches cost one call per tile.
constexpr int64_t kTile = 64;

absl::Status CheckShape(const char* name, const FloatTensor& t, const Shape& expected) {
  if (t.shape != expected || static_cast<int64_t>(t.values.size()) != NumElements(expected)) {
    return absl::InvalidArgumentError(
        absl::StrCat("input ", name, " has shape [", absl::StrJoin(t.shape, ", "), "] and ",
                     t.values.size(), " values; expected [", absl::StrJoin(expected, ", "), "]"));
  }
  return absl::OkStatus();
}

double Dot(const double* a, const double* b, int64_t n) {
  double sum = 0;
  for (int64_t d = 0; d < n; ++d) sum += a[d] * b[d];
  return sum;
}

double Dot(const float* a, const double* b, int64_t n) {
  double sum = 0;
  for (int64_t d = 0; d < n; ++d) sum += static_cast<double>(a[d]) * b[d];
  return sum;
}

// fn(begin, end) over `threads` contiguous slices of [0, n); each slice is one thread's.
template <typename F>
void ParallelSlices(int64_t n, int threads, F fn) {
  const int64_t count = std::clamp<int64_t>(threads, 1, std::max<int64_t>(1, n));
  std::vector<std::thread> workers;
  for (int64_t t = 1; t < count; ++t) {
    workers.emplace_back([&, t] { fn(n * t / count, n * (t + 1) / count); });
  }
  fn(0, n / count);
  for (std::thread& w : workers) w.join();
}

}  // namespace

absl::StatusOr<Backward64> Backward64::Create(const Problem& problem,
                                              const AttentionInputs& inputs) {
  absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
  if (!shapes.ok()) return shapes.status();
  if (shapes->layer || problem.phase != Phase::kBackward) {
    return absl::InvalidArgumentError(
        "the backward oracle takes core-scope PHASE_BACKWARD problems only");
  }
  if (auto s = CheckShape("query", inputs.query, shapes->query); !s.ok()) return s;
  if (auto s = CheckShape("key", inputs.key, shapes->key); !s.ok()) return s;
  if (auto s = CheckShape("value", inputs.value, shapes->value); !s.ok()) return s;
  if (auto s = CheckShape("grad_output", inputs.grad_output, shapes->core_output); !s.ok()) {
    return s;
  }
  absl::StatusOr<std::shared_ptr<const ProblemExpressions>> exprs = CompileExpressions(problem);
  if (!exprs.ok()) return exprs.status();
  return Backward64(problem, inputs, *std::move(shapes), *std::move(exprs));
}

Backward64::Backward64(const Problem& problem, const AttentionInputs& inputs, ProblemShapes shapes,
                       std::shared_ptr<const ProblemExpressions> exprs)
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
    score_mod_ = std::make_unique<expr::ThreadEvaluators<double>>(*exprs_->score_mod, exprs_->aux);
  }
  heads_of_query_.resize(shapes_.heads.num_query_heads);
  heads_of_kv_.resize(shapes_.heads.num_kv_heads);
  for (int h = 0; h < shapes_.heads.num_output_heads; ++h) {
    heads_of_query_[shapes_.heads.map[h].query_head].push_back(h);
    heads_of_kv_[shapes_.heads.map[h].kv_head].push_back(h);
  }
}

Backward64::KeyValues Backward64::LoadKeyValues(int64_t b, int kv_head) const {
  const int64_t skv = shapes_.seq_kv, dqk = shapes_.dim_qk, dv = shapes_.dim_v;
  const int64_t hkv = shapes_.heads.num_kv_heads;
  KeyValues kv;
  kv.keys.resize(skv * dqk);
  kv.values.resize(skv * dv);
  for (int64_t j = 0; j < skv; ++j) {
    const float* k = &inputs_->key.values[((b * skv + j) * hkv + kv_head) * dqk];
    const float* v = &inputs_->value.values[((b * skv + j) * hkv + kv_head) * dv];
    std::copy(k, k + dqk, &kv.keys[j * dqk]);
    std::copy(v, v + dv, &kv.values[j * dv]);
    if (!inv_freq_.empty()) ApplyRope(&kv.keys[j * dqk], j, inv_freq_);
  }
  return kv;
}

const Backward64::KeyValues& Backward64::CachedKeyValues(int64_t b, int kv_head) {
  if (b != cached_batch_) {
    cache_.clear();
    cached_batch_ = b;
  }
  auto it = cache_.find(kv_head);
  if (it != cache_.end()) return it->second;
  return cache_.emplace(kv_head, LoadKeyValues(b, kv_head)).first->second;
}

void Backward64::QueryRow(int64_t b, int64_t i, int query_head, double* q) const {
  const int64_t dqk = shapes_.dim_qk;
  const float* src =
      &inputs_->query
           .values[((b * shapes_.seq_q + i) * shapes_.heads.num_query_heads + query_head) * dqk];
  std::copy(src, src + dqk, q);
  if (!inv_freq_.empty()) ApplyRope(q, i + mask_.offset(), inv_freq_);
}

const float* Backward64::GradOutRow(int64_t b, int64_t i, int h) const {
  return &inputs_->grad_output
              .values[((b * shapes_.seq_q + i) * shapes_.heads.num_output_heads + h) *
                      shapes_.dim_v];
}

double Backward64::Score(int64_t b, int h, int64_t i, int64_t j, const double* q, const double* k,
                         double* chain) const {
  double s = scale_ * Dot(q, k, shapes_.dim_qk);
  if (!slopes_.empty()) s += slopes_[h] * static_cast<double>(j - (i + mask_.offset()));
  *chain = 1;
  if (problem_->softcap.enabled) {
    s = Softcap(s, problem_->softcap.cap);
    *chain = SoftcapDerivative(s, problem_->softcap.cap);
  }
  if (score_mod_ != nullptr) {
    expr::Bindings bind;
    bind.b = b;
    bind.h = h;
    bind.q = i + mask_.offset();
    bind.hq = shapes_.heads.map[h].query_head;
    bind.hkv = shapes_.heads.map[h].kv_head;
    double slope = 0;
    score_mod_->Get().ScoresAndSlopes(bind, j, 1, &s, &slope);
    *chain *= slope;
  }
  return s;
}

template <typename F>
void Backward64::ForKeptKeys(int64_t b, int h, int64_t i, F f) const {
  for (int64_t j0 = 0; j0 < shapes_.seq_kv; j0 += kTile) {
    const int64_t j1 = std::min(shapes_.seq_kv, j0 + kTile);
    const TileCoverage coverage = mask_.Coverage(b, h, i, i + 1, j0, j1);
    if (coverage == TileCoverage::kNone) continue;
    for (int64_t j = j0; j < j1; ++j) {
      if (coverage == TileCoverage::kAll || mask_.Keeps(b, h, i, j)) f(j);
    }
  }
}

template <typename F>
void Backward64::ForKeptQueries(int64_t b, int h, int64_t j, F f) const {
  for (int64_t i0 = 0; i0 < shapes_.seq_q; i0 += kTile) {
    const int64_t i1 = std::min(shapes_.seq_q, i0 + kTile);
    const TileCoverage coverage = mask_.Coverage(b, h, i0, i1, j, j + 1);
    if (coverage == TileCoverage::kNone) continue;
    for (int64_t i = i0; i < i1; ++i) {
      if (coverage == TileCoverage::kAll || mask_.Keeps(b, h, i, j)) f(i);
    }
  }
}

std::vector<double> Backward64::QueryGradRow(int64_t b, int64_t i, int query_head,
                                             uint64_t* pairs) {
  const int64_t dqk = shapes_.dim_qk, dv = shapes_.dim_v;
  // Only the kv heads this query head reads stay cached, so memory is bounded by them.
  std::set<int> needed;
  for (int h : heads_of_query_[query_head]) needed.insert(shapes_.heads.map[h].kv_head);
  for (auto it = cache_.begin(); it != cache_.end();) {
    it = needed.count(it->first) ? std::next(it) : cache_.erase(it);
  }
  std::vector<double> q(dqk);
  QueryRow(b, i, query_head, q.data());
  std::vector<double> grad(dqk, 0.0);
  std::vector<int64_t> kept;
  std::vector<double> s, p, dp, chain;
  for (int h : heads_of_query_[query_head]) {
    const KeyValues& kv = CachedKeyValues(b, shapes_.heads.map[h].kv_head);
    const float* dout = GradOutRow(b, i, h);
    kept.clear();
    s.clear();
    dp.clear();
    chain.clear();
    double max_score = kMinusInf;
    bool nan = false;
    ForKeptKeys(b, h, i, [&](int64_t j) {
      double cj = 1;
      const double sj = Score(b, h, i, j, q.data(), &kv.keys[j * dqk], &cj);
      nan = nan || std::isnan(sj);
      max_score = std::max(max_score, sj);
      kept.push_back(j);
      s.push_back(sj);
      chain.push_back(cj);
      dp.push_back(Dot(dout, &kv.values[j * dv], dv));
    });
    if (pairs != nullptr) *pairs += kept.size();
    if (nan) return std::vector<double>(dqk, std::numeric_limits<double>::quiet_NaN());
    if (kept.empty()) continue;  // every key hidden: O = 0 and no gradient
    p.resize(kept.size());
    double denominator = 0;
    for (size_t k = 0; k < kept.size(); ++k) {
      p[k] = std::exp(s[k] - max_score);
      denominator += p[k];
    }
    double d = 0;
    for (size_t k = 0; k < kept.size(); ++k) {
      p[k] /= denominator;
      d += p[k] * dp[k];
    }
    for (size_t k = 0; k < kept.size(); ++k) {
      double ds = p[k] * (dp[k] - d);
      if (p[k] != 0) ds *= chain[k];  // p = 0: a score of -inf, whose slope must not poison dS
      const double* key = &kv.keys[kept[k] * dqk];
      for (int64_t e = 0; e < dqk; ++e) grad[e] += scale_ * ds * key[e];
    }
  }
  if (!inv_freq_.empty()) ApplyRopeTranspose(grad.data(), i + mask_.offset(), inv_freq_);
  return grad;
}

Backward64::KeyValueGrads Backward64::KeyValueGradGroup(int64_t b, int kv_head, int threads) const {
  const int64_t sq = shapes_.seq_q, skv = shapes_.seq_kv;
  const int64_t dqk = shapes_.dim_qk, dv = shapes_.dim_v;
  const KeyValues kv = LoadKeyValues(b, kv_head);
  KeyValueGrads out;
  out.dk.assign(skv * dqk, 0.0);
  out.dv.assign(skv * dv, 0.0);
  std::vector<double> q(sq * dqk), lse(sq), d(sq);
  std::atomic<uint64_t> pairs{0};
  for (int h : heads_of_kv_[kv_head]) {
    const int qh = shapes_.heads.map[h].query_head;
    // Pass 1: each query row's log-sum-exp and D_i, which every key of the row needs.
    ParallelSlices(sq, threads, [&](int64_t begin, int64_t end) {
      uint64_t visited = 0;
      std::vector<double> s, dp;
      for (int64_t i = begin; i < end; ++i) {
        double* qi = &q[i * dqk];
        QueryRow(b, i, qh, qi);
        const float* dout = GradOutRow(b, i, h);
        s.clear();
        dp.clear();
        double max_score = kMinusInf;
        bool nan = false;
        ForKeptKeys(b, h, i, [&](int64_t j) {
          double unused;
          const double sj = Score(b, h, i, j, qi, &kv.keys[j * dqk], &unused);
          nan = nan || std::isnan(sj);
          max_score = std::max(max_score, sj);
          s.push_back(sj);
          dp.push_back(Dot(dout, &kv.values[j * dv], dv));
        });
        visited += s.size();
        if (nan) {
          // Poisons every key the row keeps: P = exp(s - NaN) is NaN.
          lse[i] = d[i] = std::numeric_limits<double>::quiet_NaN();
          continue;
        }
        if (s.empty()) {
          lse[i] = kMinusInf;  // no key: the row never appears in pass 2
          d[i] = 0;
          continue;
        }
        double denominator = 0;
        for (double sj : s) denominator += std::exp(sj - max_score);
        lse[i] = max_score + std::log(denominator);
        double di = 0;
        for (size_t k = 0; k < s.size(); ++k) di += std::exp(s[k] - lse[i]) * dp[k];
        d[i] = di;
      }
      pairs += visited;
    });
    // Pass 2: every key row of the group, from the queries that keep it.
    ParallelSlices(skv, threads, [&](int64_t begin, int64_t end) {
      uint64_t visited = 0;
      for (int64_t j = begin; j < end; ++j) {
        const double* key = &kv.keys[j * dqk];
        const double* value = &kv.values[j * dv];
        double* dk = &out.dk[j * dqk];
        double* dvj = &out.dv[j * dv];
        ForKeptQueries(b, h, j, [&](int64_t i) {
          ++visited;
          double chain = 1;
          const double s = Score(b, h, i, j, &q[i * dqk], key, &chain);
          const double p = std::exp(s - lse[i]);
          const float* dout = GradOutRow(b, i, h);
          for (int64_t e = 0; e < dv; ++e) dvj[e] += p * dout[e];
          double ds = p * (Dot(dout, value, dv) - d[i]);
          if (p != 0) ds *= chain;
          const double* qi = &q[i * dqk];
          for (int64_t e = 0; e < dqk; ++e) dk[e] += scale_ * ds * qi[e];
        });
      }
      pairs += visited;
    });
  }
  if (!inv_freq_.empty()) {
    for (int64_t j = 0; j < skv; ++j) ApplyRopeTranspose(&out.dk[j * dqk], j, inv_freq_);
  }
  out.pairs = pairs.load();
  return out;
}

}  // namespace attnbench
