#include "kernels/reference/gradient_check.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/reference/backward64.h"
#include "kernels/reference/layer_backward64.h"
#include "kernels/reference/row_sample.h"
#include "kernels/spec/gradients.h"

namespace attnbench {
namespace {

// ||out - ref||^2, ||ref||^2 and the largest |out - ref| over compared elements.
struct Partial {
  double diff2 = 0;
  double ref2 = 0;
  double max_abs = 0;
  bool nan = false;

  void Add(const double* ref, const float* out, int64_t n) {
    for (int64_t k = 0; k < n; ++k) {
      const double diff = static_cast<double>(out[k]) - ref[k];
      if (std::isnan(diff)) nan = true;
      diff2 += diff * diff;
      ref2 += ref[k] * ref[k];
      max_abs = std::max(max_abs, std::fabs(diff));
    }
  }
  void Merge(const Partial& o) {
    diff2 += o.diff2;
    ref2 += o.ref2;
    max_abs = std::max(max_abs, o.max_abs);
    nan = nan || o.nan;
  }
};

TensorCheckReport Judge(const char* name, const Partial& p, int64_t rows_checked,
                        int64_t rows_total, const FloatTensor& tensor, double tolerance) {
  TensorCheckReport r;
  r.name = name;
  r.rows_checked = rows_checked;
  r.rows_total = rows_total;
  r.tolerance = tolerance;
  r.non_finite_elements = CountNonFinite(tensor);
  r.max_abs_error = p.nan ? std::nan("") : p.max_abs;
  // A zero reference (every compared row fully masked) has no scale: judge the absolute error.
  r.relative_error = p.nan ? std::nan("") : p.ref2 > 0 ? std::sqrt(p.diff2 / p.ref2) : p.max_abs;
  r.passed = !p.nan && r.non_finite_elements == 0 && r.relative_error <= tolerance;
  return r;
}

absl::Status CheckGradientShape(const char* name, const FloatTensor& t, const Shape& expected) {
  if (t.shape != expected || static_cast<int64_t>(t.values.size()) != NumElements(expected)) {
    return absl::InvalidArgumentError(
        absl::StrCat("gradient ", name, " has shape [", absl::StrJoin(t.shape, ", "), "] and ",
                     t.values.size(), " values; expected [", absl::StrJoin(expected, ", "), "]"));
  }
  return absl::OkStatus();
}

// The most output heads that read one kv head.
int64_t MostHeadsPerKv(const HeadConfig& heads) {
  std::vector<int64_t> count(heads.num_kv_heads, 0);
  for (const HeadPair& pair : heads.map) ++count[pair.kv_head];
  return std::max<int64_t>(1, *std::max_element(count.begin(), count.end()));
}

int Threads(int64_t work_items) {
  return static_cast<int>(std::clamp<int64_t>(std::thread::hardware_concurrency(), 1,
                                              std::max<int64_t>(1, work_items)));
}

// Output heads reading query head qh, and kv head kh.
std::pair<std::vector<int64_t>, std::vector<int64_t>> HeadsPerQueryAndKv(const HeadConfig& heads) {
  std::vector<int64_t> per_q(heads.num_query_heads, 0), per_kv(heads.num_kv_heads, 0);
  for (const HeadPair& pair : heads.map) {
    ++per_q[pair.query_head];
    ++per_kv[pair.kv_head];
  }
  return {per_q, per_kv};
}

// The report of several tensors' checks: rows and non-finite elements summed, the largest
// errors, passed only when every tensor passed.
CorrectnessReport Summarize(std::vector<TensorCheckReport> tensors, double tolerance) {
  CorrectnessReport report;
  report.tensors = std::move(tensors);
  report.tolerance = tolerance;
  report.passed = true;
  for (const TensorCheckReport& t : report.tensors) {
    report.rows_checked += t.rows_checked;
    report.rows_total += t.rows_total;
    report.non_finite_elements += t.non_finite_elements;
    report.passed = report.passed && t.passed;
    // NaN wins over any number (std::max would keep the first argument for a NaN second one).
    const auto worst = [](double a, double b) { return std::isnan(a) || a >= b ? a : b; };
    report.max_abs_error = worst(report.max_abs_error, t.max_abs_error);
    report.relative_error = worst(report.relative_error, t.relative_error);
  }
  return report;
}

// Layer scope: dX and the weight gradients against LayerBackward64, every row of each (a weight's
// gradient sums over every token, so the oracle computes everything whole anyway).
absl::StatusOr<CorrectnessReport> CheckLayerGradients(const Problem& problem,
                                                      const AttentionInputs& inputs,
                                                      const GradientTensors& gradients,
                                                      const ProblemShapes& s) {
  const std::vector<GradientSlot> slots = GradientSlotsOf(s);
  for (const GradientSlot& slot : slots) {
    if (auto st = CheckGradientShape(slot.name, gradients.*slot.tensor, slot.shape); !st.ok()) {
      return st;
    }
  }
  absl::StatusOr<LayerGradients64> oracle =
      LayerBackward64(problem, inputs, Threads(s.batch * s.seq_q));
  if (!oracle.ok()) return oracle.status();
  // In GradientSlotsOf's order: dx, dw_q, dw_k, dw_v, dw_o.
  const std::vector<double>* refs[] = {&oracle->dx, &oracle->dw_q, &oracle->dw_k, &oracle->dw_v,
                                       &oracle->dw_o};
  const double tolerance = GradientToleranceFor(problem);
  std::vector<TensorCheckReport> tensors;
  for (size_t k = 0; k < slots.size(); ++k) {
    const FloatTensor& t = gradients.*slots[k].tensor;
    Partial p;
    p.Add(refs[k]->data(), t.values.data(), static_cast<int64_t>(t.values.size()));
    // Rows: all but the last dimension (dX: B * S rows of d_model; a weight: its first dimension).
    const int64_t rows = NumElements(slots[k].shape) / slots[k].shape.back();
    tensors.push_back(Judge(slots[k].name, p, rows, rows, t, tolerance));
  }
  return Summarize(std::move(tensors), tolerance);
}

}  // namespace

GradientCheckPlan PlanGradientCheck(const ProblemShapes& s, const CheckOptions& options) {
  GradientCheckPlan plan;
  const int64_t hq = s.heads.num_query_heads;
  const int64_t max_rows = std::max<int64_t>(1, options.max_rows);
  plan.dq_rows_total = s.batch * s.seq_q * hq;
  if (options.full || plan.dq_rows_total <= max_rows) {
    plan.dq_rows.resize(plan.dq_rows_total);
    for (int64_t r = 0; r < plan.dq_rows_total; ++r) plan.dq_rows[r] = r;
  } else {
    plan.dq_rows = SampleRows(plan.dq_rows_total, max_rows, options.seed, kQueryGradRowStream);
  }
  auto key = [&](int64_t r) {
    return std::make_tuple(r / (s.seq_q * hq), r % hq, (r / hq) % s.seq_q);  // (b, qh, i)
  };
  std::sort(plan.dq_rows.begin(), plan.dq_rows.end(),
            [&](int64_t a, int64_t b) { return key(a) < key(b); });

  plan.kv_groups_total = s.batch * s.heads.num_kv_heads;
  const int64_t rows_per_group = s.seq_q * MostHeadsPerKv(s.heads);
  const int64_t groups = std::max<int64_t>(1, max_rows / rows_per_group);
  if (options.full || groups >= plan.kv_groups_total) {
    plan.kv_groups.resize(plan.kv_groups_total);
    for (int64_t g = 0; g < plan.kv_groups_total; ++g) plan.kv_groups[g] = g;
  } else {
    plan.kv_groups = SampleRows(plan.kv_groups_total, groups, options.seed, kKvGroupStream);
    std::sort(plan.kv_groups.begin(), plan.kv_groups.end());
  }
  return plan;
}

GradientCheckCost EstimateGradientCheckCost(const Problem& problem, const WorkCounts& counts,
                                            const CheckOptions& options) {
  GradientCheckCost cost;
  absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
  if (!shapes.ok()) return cost;
  const ProblemShapes& s = *shapes;
  if (s.layer) {
    // The layer's oracle computes everything whole (LayerBackward64): the core's full gradient
    // check, the core forward of every row, and the projections: Q, K, V and dO (as many FLOPs
    // as the forward's four), then dX and the weight gradients (twice that).
    CheckOptions full = options;
    full.full = true;
    cost = EstimateGradientCheckCost(CoreProblemOfLayer(problem), counts, full);
    const double pairs = static_cast<double>(counts.kept_pairs);
    cost.kept_pairs += pairs;
    cost.flops += 2 * static_cast<double>(s.dim_qk + s.dim_v) * pairs + 3 * LayerProjectionFlops(s);
    return cost;
  }
  const GradientCheckPlan plan = PlanGradientCheck(s, options);
  const auto [per_q, per_kv] = HeadsPerQueryAndKv(s.heads);
  const double rows = static_cast<double>(s.batch) * s.heads.num_output_heads * s.seq_q;
  const double pairs_per_row = rows > 0 ? static_cast<double>(counts.kept_pairs) / rows : 0;
  const double dims = static_cast<double>(s.dim_qk + s.dim_v);
  double dq_pairs = 0;
  for (int64_t r : plan.dq_rows) dq_pairs += per_q[r % s.heads.num_query_heads] * pairs_per_row;
  double kv_pairs = 0;  // per pass
  for (int64_t g : plan.kv_groups) {
    kv_pairs += per_kv[g % s.heads.num_kv_heads] * s.seq_q * pairs_per_row;
  }
  cost.dq_rows = static_cast<int64_t>(plan.dq_rows.size());
  cost.kv_groups = static_cast<int64_t>(plan.kv_groups.size());
  cost.kv_rows = cost.kv_groups * s.seq_kv;
  cost.kept_pairs = dq_pairs + 2 * kv_pairs;
  cost.flops = 2 * dims * dq_pairs + 2 * dims * kv_pairs + 4 * dims * kv_pairs;
  return cost;
}

// Each of dQ, dK, dV is a sum of products; a kernel stores the result in the dtype (unit
// roundoff u: 2^-11 float16, 2^-8 bfloat16), and a tensor-core kernel also holds its matmul
// operands there, as FlashAttention-2 does: Q and K after RoPE, O (read by D = <dO, O>), P for
// dV = P^T dO, dS for dQ = dS K and dK = dS^T Q. Each rounding is an independent relative error
// of standard deviation about u / sqrt(3) per term, so the relative L2 error of a gradient is a
// small multiple of u whatever its length; gradient_check_test.cc measures, over layouts,
// modifiers, head dims 32 to 128 and rows of up to 32k keys: 0.43u to 1.7u with the gradients
// rounded only (cpu_reference), 1.8u with every operand rounded too (an emulated tensor-core
// backward). Hence, per dtype:
//   bfloat16  2e-2 = 5.1u: 2.8 times the worst measured.
//   float16   1e-2 = 20u: float16's narrow exponent holds P and dS below 2^-14 as subnormals with
//             an absolute step of 2^-24, so in rows of n keys (P ~ 1/n) each carries a relative
//             error up to n 2^-25: about 5u (standard deviation) at n = 128k on top of the 1.8u;
//             20u keeps rows of a few hundred thousand keys in bounds.
//   float32   1e-4, the forward's: no operand is rounded, float32 sums measured at 3.3e-6 over
//             32k keys.
//   float8    5u = 0.3125 by bfloat16's rule (no backend runs a float8 backward yet).
double GradientToleranceFor(const Problem& problem) {
  switch (problem.dtype) {
    case DType::kFloat16:
      return 1e-2;
    case DType::kBFloat16:
      return 2e-2;
    case DType::kFloat8E4M3:
      return 0.3125;
    default:
      return 1e-4;
  }
}

absl::StatusOr<CorrectnessReport> CheckGradients(const Problem& problem,
                                                 const AttentionInputs& inputs,
                                                 const GradientTensors& gradients,
                                                 const CheckOptions& options) {
  absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
  if (!shapes.ok()) return shapes.status();
  if (shapes->layer) return CheckLayerGradients(problem, inputs, gradients, *shapes);
  absl::StatusOr<Backward64> probe = Backward64::Create(problem, inputs);
  if (!probe.ok()) return probe.status();
  const ProblemShapes& s = probe->shapes();
  if (auto st = CheckGradientShape("dq", gradients.dq, s.query); !st.ok()) return st;
  if (auto st = CheckGradientShape("dk", gradients.dk, s.key); !st.ok()) return st;
  if (auto st = CheckGradientShape("dv", gradients.dv, s.value); !st.ok()) return st;
  const GradientCheckPlan plan = PlanGradientCheck(s, options);
  const double tolerance = GradientToleranceFor(problem);
  const int64_t hq = s.heads.num_query_heads, hkv = s.heads.num_kv_heads;
  const int64_t dqk = s.dim_qk, dv = s.dim_v;

  // dQ: contiguous slices of the ordered rows, one oracle (and key cache) per thread.
  const int dq_threads = Threads(static_cast<int64_t>(plan.dq_rows.size()) / 8);
  std::vector<Partial> dq_parts(dq_threads);
  std::vector<absl::Status> statuses(dq_threads);
  auto dq_work = [&](int t) {
    absl::StatusOr<Backward64> oracle = Backward64::Create(problem, inputs);
    if (!oracle.ok()) {
      statuses[t] = oracle.status();
      return;
    }
    const int64_t n = static_cast<int64_t>(plan.dq_rows.size());
    for (int64_t k = n * t / dq_threads; k < n * (t + 1) / dq_threads; ++k) {
      const int64_t r = plan.dq_rows[k];
      const std::vector<double> ref =
          oracle->QueryGradRow(r / (s.seq_q * hq), (r / hq) % s.seq_q, static_cast<int>(r % hq));
      dq_parts[t].Add(ref.data(), &gradients.dq.values[r * dqk], dqk);
    }
  };
  std::vector<std::thread> workers;
  for (int t = 1; t < dq_threads; ++t) workers.emplace_back(dq_work, t);
  dq_work(0);
  for (std::thread& w : workers) w.join();
  Partial dq;
  for (int t = 0; t < dq_threads; ++t) {
    if (!statuses[t].ok()) return statuses[t];
    dq.Merge(dq_parts[t]);
  }

  // dK, dV: whole groups, each split over every thread by the oracle.
  Partial dk, dvp;
  const int group_threads = Threads(s.seq_kv);
  for (int64_t g : plan.kv_groups) {
    const int64_t b = g / hkv;
    const int kh = static_cast<int>(g % hkv);
    const Backward64::KeyValueGrads ref = probe->KeyValueGradGroup(b, kh, group_threads);
    for (int64_t j = 0; j < s.seq_kv; ++j) {
      const int64_t row = (b * s.seq_kv + j) * hkv + kh;
      dk.Add(&ref.dk[j * dqk], &gradients.dk.values[row * dqk], dqk);
      dvp.Add(&ref.dv[j * dv], &gradients.dv.values[row * dv], dv);
    }
  }

  const int64_t kv_rows = static_cast<int64_t>(plan.kv_groups.size()) * s.seq_kv;
  const int64_t kv_total = plan.kv_groups_total * s.seq_kv;
  return Summarize(
      {
          Judge("dq", dq, static_cast<int64_t>(plan.dq_rows.size()), plan.dq_rows_total,
                gradients.dq, tolerance),
          Judge("dk", dk, kv_rows, kv_total, gradients.dk, tolerance),
          Judge("dv", dvp, kv_rows, kv_total, gradients.dv, tolerance),
      },
      tolerance);
}

}  // namespace attnbench
