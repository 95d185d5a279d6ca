#include "tests/kernels/expression_cases.h"

#include <cmath>
#include <cstring>
#include <optional>
#include <utility>

namespace attnbench::testing {

NamedTensor Aux(const std::string& name, std::vector<int64_t> shape,
                const std::vector<float>& values) {
  NamedTensor t;
  t.name = name;
  t.tensor.dtype = DType::kFloat32;
  t.tensor.shape = std::move(shape);
  t.tensor.data.resize(values.size() * sizeof(float));
  std::memcpy(t.tensor.data.data(), values.data(), t.tensor.data.size());
  return t;
}

// Document ids over the 53 keys: 5 documents of uneven lengths.
float DocOf(int64_t j) { return j < 9 ? 0.f : j < 20 ? 1.f : j < 21 ? 2.f : j < 40 ? 3.f : 4.f; }
std::vector<float> DocIds() {
  std::vector<float> d(53);
  for (int64_t j = 0; j < 53; ++j) d[j] = DocOf(j);
  return d;
}
// A [6, 16] relative-position bias table, varied per head and distance.
float Bias(int h, int64_t d) { return 0.25f * std::sin(0.7f * h + 0.3f * d); }
std::vector<float> BiasTable() {
  std::vector<float> t;
  for (int h = 0; h < 6; ++h) {
    for (int d = 0; d < 16; ++d) t.push_back(Bias(h, d));
  }
  return t;
}
void AllBuiltins(Problem& p) {
  p.mask.kind = MaskKind::kCausal;
  p.rope = {true, std::nullopt, std::nullopt};
  p.alibi = {true, AlibiSchedule::kGeometric, std::nullopt};
  p.softcap = {true, 2.5};
}
const std::vector<float> kSlopes = {0.5f, 0.25f, 0.125f, 0.0625f, 0.03125f, 0.015625f};

std::vector<ExpressionCase> CommonExpressionCases() {
  using Case = ExpressionCase;
  std::vector<Case> c;
  {
    Case k{"softcap", [](Problem& p) { p.score_mod = "2.5 * tanh(s / 2.5)"; }, {}};
    k.naive.score_mod = [](double s, int64_t, int, int64_t, int64_t) {
      return 2.5 * std::tanh(s / 2.5);
    };
    c.push_back(k);
  }
  {
    Case k{"alibi_from_aux",
           [](Problem& p) {
             p.score_mod = "s + slope[h] * (kv - q)";
             p.aux = {Aux("slope", {6}, kSlopes)};
             p.mask.kind = MaskKind::kCausal;
           },
           {}};
    k.naive.score_mod = [](double s, int64_t, int h, int64_t q, int64_t kv) {
      return s + kSlopes[h] * static_cast<double>(kv - q);
    };
    c.push_back(k);
  }
  {
    Case k{"document_mask",
           [](Problem& p) {
             p.mask_mod = "doc[q] == doc[kv]";
             p.aux = {Aux("doc", {53}, DocIds())};
             p.mask.kind = MaskKind::kCausal;
           },
           {}};
    k.naive.mask_mod = [](int64_t, int, int64_t q, int64_t kv) { return DocOf(q) == DocOf(kv); };
    c.push_back(k);
  }
  {
    Case k{"prefix_lm", [](Problem& p) { p.mask_mod = "kv < 24 || kv <= q"; }, {}};
    k.naive.mask_mod = [](int64_t, int, int64_t q, int64_t kv) { return kv < 24 || kv <= q; };
    c.push_back(k);
  }
  {
    Case k{"window_with_sinks",
           [](Problem& p) {
             p.mask_mod = "kv < 4 || q - kv < 10";
             p.mask.kind = MaskKind::kCausal;
           },
           {}};
    k.naive.mask_mod = [](int64_t, int, int64_t q, int64_t kv) { return kv < 4 || q - kv < 10; };
    c.push_back(k);
  }
  {
    Case k{"relative_bias_table",
           [](Problem& p) {
             p.score_mod = "s + bias[h, min(max(q - kv, 0), 15)]";
             p.aux = {Aux("bias", {6, 16}, BiasTable())};
           },
           {}};
    k.naive.score_mod = [](double s, int64_t, int h, int64_t q, int64_t kv) {
      return s + Bias(h, std::min<int64_t>(std::max<int64_t>(q - kv, 0), 15));
    };
    c.push_back(k);
  }
  {
    // Rows whose every key is hidden come out as zeros, as with a built-in mask.
    Case k{"empty_rows", [](Problem& p) { p.mask_mod = "q < 30 && kv > q - 5"; }, {}};
    k.naive.mask_mod = [](int64_t, int, int64_t q, int64_t kv) { return q < 30 && kv > q - 5; };
    c.push_back(k);
  }
  return c;
}

}  // namespace attnbench::testing
