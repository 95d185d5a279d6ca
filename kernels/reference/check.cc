#include "kernels/reference/check.h"

#include <algorithm>
#include <cmath>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/reference/reference64.h"
#include "kernels/reference/row_sample.h"
#include "kernels/spec/cache_format.h"

namespace attnbench {
namespace {

// Offset of row `row` (see Reference64::Row) in the output tensor.
int64_t RowOffset(const ProblemShapes& s, int64_t row) {
  if (s.layer) return row * s.d_model;
  const int64_t i = row % s.seq_q;
  const int64_t bh = row / s.seq_q;
  const int64_t heads = s.heads.num_output_heads;
  return (((bh / heads) * s.seq_q + i) * heads + bh % heads) * s.dim_v;
}

struct Partial {
  double diff2 = 0;
  double ref2 = 0;
  double max_abs = 0;
  double ref_max_abs = 0;
  bool nan = false;
  absl::Status status;
};

}  // namespace

std::vector<int64_t> CheckedRows(int64_t rows_total, const CheckOptions& options) {
  std::vector<int64_t> rows;
  if (options.full || rows_total <= options.max_rows) {
    rows.resize(rows_total);
    for (int64_t r = 0; r < rows_total; ++r) rows[r] = r;
    return rows;
  }
  return SampleRows(rows_total, std::max<int64_t>(1, options.max_rows), options.seed,
                    kOutputRowStream);
}

double ToleranceFor(const Problem& problem) {
  double tolerance = 1e-4;
  switch (problem.dtype) {
    case DType::kFloat16:
      tolerance = 5e-3;
      break;
    case DType::kBFloat16:
      tolerance = 1e-2;
      break;
    case DType::kFloat8E4M3:
      tolerance = 1e-1;
      break;
    default:
      break;
  }
  if (problem.phase == Phase::kDecode) {
    switch (CoarsestCacheFormat(problem)) {
      case CacheFormat::kInt8:
        tolerance += 3e-2;
        break;
      case CacheFormat::kInt4:
        tolerance += 2.5e-1;
        break;
      default:
        break;
    }
  }
  return tolerance;
}

absl::StatusOr<CorrectnessReport> CheckOutput(const Problem& problem, const AttentionInputs& inputs,
                                              const FloatTensor& output,
                                              const CheckOptions& options) {
  absl::StatusOr<Reference64> probe = Reference64::Create(problem, inputs);
  if (!probe.ok()) return probe.status();
  const ProblemShapes& s = probe->shapes();
  if (output.shape != s.output ||
      static_cast<int64_t>(output.values.size()) != NumElements(s.output)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "output has shape [", absl::StrJoin(output.shape, ", "), "] and ", output.values.size(),
        " values; expected [", absl::StrJoin(s.output, ", "), "]"));
  }
  CorrectnessReport report;
  report.rows_total = s.rows_total;
  report.tolerance = ToleranceFor(problem);
  report.non_finite_elements = CountNonFinite(output);
  std::vector<int64_t> rows = CheckedRows(s.rows_total, options);
  // Rows sharing (batch, kv head) next to each other, so each oracle reuses its cached keys.
  std::sort(rows.begin(), rows.end(), [&](int64_t a, int64_t b) {
    return std::make_pair(probe->RowKeyGroup(a), a) < std::make_pair(probe->RowKeyGroup(b), b);
  });
  report.rows_checked = static_cast<int64_t>(rows.size());

  const int64_t threads = std::clamp<int64_t>(std::thread::hardware_concurrency(), 1,
                                              std::max<int64_t>(1, report.rows_checked / 8));
  std::vector<Partial> partials(threads);
  auto work = [&](int64_t t) {
    absl::StatusOr<Reference64> oracle = Reference64::Create(problem, inputs);
    Partial& part = partials[t];
    if (!oracle.ok()) {
      part.status = oracle.status();
      return;
    }
    const int64_t begin = report.rows_checked * t / threads;
    const int64_t end = report.rows_checked * (t + 1) / threads;
    for (int64_t k = begin; k < end; ++k) {
      const std::vector<double> ref = oracle->Row(rows[k]);
      const float* out = &output.values[RowOffset(s, rows[k])];
      for (size_t d = 0; d < ref.size(); ++d) {
        const double diff = static_cast<double>(out[d]) - ref[d];
        if (std::isnan(out[d]) || std::isnan(diff)) part.nan = true;
        part.diff2 += diff * diff;
        part.ref2 += ref[d] * ref[d];
        part.max_abs = std::max(part.max_abs, std::fabs(diff));
        part.ref_max_abs = std::max(part.ref_max_abs, std::fabs(ref[d]));
      }
    }
  };
  std::vector<std::thread> workers;
  for (int64_t t = 1; t < threads; ++t) workers.emplace_back(work, t);
  work(0);
  for (std::thread& w : workers) w.join();

  Partial total;
  for (const Partial& p : partials) {
    if (!p.status.ok()) return p.status;
    total.diff2 += p.diff2;
    total.ref2 += p.ref2;
    total.max_abs = std::max(total.max_abs, p.max_abs);
    total.nan = total.nan || p.nan;
  }
  report.max_abs_error = total.nan ? std::nan("") : total.max_abs;
  // An all-zero reference (every row fully masked) has no scale: judge the absolute error.
  report.relative_error = total.nan        ? std::nan("")
                          : total.ref2 > 0 ? std::sqrt(total.diff2 / total.ref2)
                                           : total.max_abs;
  report.passed =
      !total.nan && report.non_finite_elements == 0 && report.relative_error <= report.tolerance;
  TensorCheckReport tensor;
  tensor.name = "output";
  tensor.rows_checked = report.rows_checked;
  tensor.rows_total = report.rows_total;
  tensor.max_abs_error = report.max_abs_error;
  tensor.relative_error = report.relative_error;
  tensor.tolerance = report.tolerance;
  tensor.non_finite_elements = report.non_finite_elements;
  tensor.passed = report.passed;
  report.tensors = {tensor};
  return report;
}

}  // namespace attnbench
