#include "kernels/reference/check.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/reference/reference64.h"
#include "kernels/reference/row_sample.h"
#include "kernels/spec/cache_format.h"
#include "kernels/spec/inputs.h"
#include "kernels/spec/kv_cache_store.h"
#include "kernels/spec/modifiers.h"
#include "kernels/spec/parallel_fill.h"

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
  // A quantized decode: the output against the stored cache's reference (kernel_*), and that
  // reference against the unquantized one (quant_diff2, over ref2).
  double kernel_diff2 = 0;
  double kernel_ref2 = 0;
  double kernel_max_abs = 0;
  double quant_diff2 = 0;
  absl::Status status;
};

// `inputs` with K and V as a quantized decode cache stores them, read back: the keys rotated at
// their positions (RoPE) as the cache holds them, stored by KvCacheStore (the backends' bytes),
// dequantized and rotated back, since the oracle rotates the keys it is given. Every pass is per
// (b, token) row and writes only that row, so the rows are split over threads (a long cache has
// about a billion elements) with the same result as one thread.
AttentionInputs StoredCacheInputs(const Problem& problem, const ProblemShapes& s,
                                  const AttentionInputs& inputs) {
  // A decode is core scope: Q, K and V are all the oracle reads. K and V are written below, so
  // they are not copied from `inputs` first.
  AttentionInputs stored;
  stored.query = inputs.query;
  for (auto [from, to] :
       {std::pair{&inputs.key, &stored.key}, std::pair{&inputs.value, &stored.value}}) {
    to->dtype = from->dtype;
    to->shape = from->shape;
    to->values.resize(from->values.size());
  }
  const int64_t heads = s.heads.num_kv_heads;
  const int64_t rows = s.batch * s.seq_kv;
  std::vector<double> inv_freq;
  if (problem.rope.enabled) {
    inv_freq = RopeInverseFrequencies(problem.rope.theta.value_or(10000.0),
                                      problem.rope.rotary_dims.value_or(problem.head_dim_qk));
  }
  // Without RoPE the cache stores the keys as given: no rotated copy.
  const std::vector<float>* keys = &inputs.key.values;
  std::vector<float> rotated;
  if (!inv_freq.empty()) {
    rotated.resize(inputs.key.values.size());
    ParallelFill(rows, heads * s.dim_qk, [&](int64_t begin, int64_t end) {
      RotateKeyRows(inv_freq, s.seq_kv, heads, s.dim_qk, begin, end, inputs.key.values.data(),
                    rotated.data());
    });
    keys = &rotated;
  }
  const KvCacheStore store(problem, *keys, inputs.value.values, static_cast<int>(heads),
                           ParallelForItems);
  ParallelFill(rows, heads * (s.dim_qk + s.dim_v), [&](int64_t begin, int64_t end) {
    std::vector<double> row(s.dim_qk);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / s.seq_kv;
      const int64_t j = r % s.seq_kv;
      const int64_t slot = store.Slot(b, j);
      const CacheFormat format = store.FormatOf(j);
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t at = r * heads + h;
        float* k = stored.key.values.data() + at * s.dim_qk;
        store.Read(store.keys(), format, slot, static_cast<int>(h), k, 1);
        if (!inv_freq.empty()) {
          std::copy(k, k + s.dim_qk, row.begin());
          ApplyRopeTranspose(row.data(), j, inv_freq);
          std::copy(row.begin(), row.end(), k);
        }
        store.Read(store.values(), format, slot, static_cast<int>(h),
                   stored.value.values.data() + at * s.dim_v, 1);
      }
    }
  });
  return stored;
}

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

double DTypeToleranceFor(const Problem& problem) {
  switch (problem.dtype) {
    case DType::kFloat16:
      return 5e-3;
    case DType::kBFloat16:
      return 1e-2;
    case DType::kFloat8E4M3:
      // The kernel's own error against the inputs as stored: O's bfloat16 rounding, and P rounded
      // to e4m3 for the second product where a kernel does so (FlashAttention-3's FP8 path).
      return 5e-2;
    default:
      return 1e-4;
  }
}

double ToleranceFor(const Problem& problem) {
  double tolerance = DTypeToleranceFor(problem);
  // FP8 inputs quantized from drawn values (§1b): e4m3's 3 mantissa bits under an amax scale.
  if (problem.dtype == DType::kFloat8E4M3) tolerance += 1e-1;
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

bool QuantizedDecode(const Problem& problem) {
  if (problem.phase != Phase::kDecode) return false;
  const CacheFormat coarsest = CoarsestCacheFormat(problem);
  return coarsest == CacheFormat::kInt8 || coarsest == CacheFormat::kInt4;
}

bool SplitsQuantizationError(const Problem& problem) {
  return QuantizedDecode(problem) ||
         (problem.dtype == DType::kFloat8E4M3 && !HasClientCoreInputs(problem));
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
  // The unquantized inputs (the top-level fields' reference) and the inputs as stored (the
  // kernel's own): a quantized decode's cache as stored, or FP8's drawn values before quantizing.
  const bool quantized = SplitsQuantizationError(problem);
  std::optional<AttentionInputs> other;
  const AttentionInputs* unquantized = &inputs;
  const AttentionInputs* stored = &inputs;
  if (QuantizedDecode(problem)) {
    other = StoredCacheInputs(problem, s, inputs);
    stored = &*other;
  } else if (quantized) {
    other = UnquantizedInputs(problem);
    if (!other.has_value()) return absl::InternalError("FP8 inputs without their draws");
    unquantized = &*other;
  }

  const int64_t threads = std::clamp<int64_t>(std::thread::hardware_concurrency(), 1,
                                              std::max<int64_t>(1, report.rows_checked / 8));
  std::vector<Partial> partials(threads);
  auto work = [&](int64_t t) {
    absl::StatusOr<Reference64> oracle = Reference64::Create(problem, *unquantized);
    Partial& part = partials[t];
    if (!oracle.ok()) {
      part.status = oracle.status();
      return;
    }
    std::optional<Reference64> stored_oracle;
    if (quantized) {
      absl::StatusOr<Reference64> o = Reference64::Create(problem, *stored);
      if (!o.ok()) {
        part.status = o.status();
        return;
      }
      stored_oracle.emplace(*std::move(o));
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
      if (!stored_oracle) continue;
      const std::vector<double> as_stored = stored_oracle->Row(rows[k]);
      for (size_t d = 0; d < as_stored.size(); ++d) {
        const double diff = static_cast<double>(out[d]) - as_stored[d];
        part.kernel_diff2 += diff * diff;
        part.kernel_ref2 += as_stored[d] * as_stored[d];
        part.kernel_max_abs = std::max(part.kernel_max_abs, std::fabs(diff));
        part.quant_diff2 += (as_stored[d] - ref[d]) * (as_stored[d] - ref[d]);
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
    total.kernel_diff2 += p.kernel_diff2;
    total.kernel_ref2 += p.kernel_ref2;
    total.kernel_max_abs = std::max(total.kernel_max_abs, p.kernel_max_abs);
    total.quant_diff2 += p.quant_diff2;
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
  if (quantized) {
    QuantizationSplit q;
    const double nan = std::nan("");
    q.kernel_max_abs_error = total.nan ? nan : total.kernel_max_abs;
    q.kernel_relative_error = total.nan ? nan
                              : total.kernel_ref2 > 0
                                  ? std::sqrt(total.kernel_diff2 / total.kernel_ref2)
                                  : total.kernel_max_abs;
    q.kernel_tolerance = DTypeToleranceFor(problem);
    q.kernel_passed = !total.nan && report.non_finite_elements == 0 &&
                      q.kernel_relative_error <= q.kernel_tolerance;
    q.quantization_relative_error =
        total.ref2 > 0 ? std::sqrt(total.quant_diff2 / total.ref2) : std::sqrt(total.quant_diff2);
    report.quantization = q;
  }
  return report;
}

}  // namespace attnbench
