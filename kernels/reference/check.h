// Correctness against the float64 oracle: compares a backend's output with reference64 on every
// output row or on a seeded sample of rows, and reports max-abs and relative error. Non-finite
// values are counted over the whole output, sampled or not: any one fails the check.
#ifndef ATTNBENCH_KERNELS_REFERENCE_CHECK_H_
#define ATTNBENCH_KERNELS_REFERENCE_CHECK_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/spec/problem.h"
#include "kernels/spec/tensors.h"

namespace attnbench {

struct CheckOptions {
  // Compare every row when rows_total <= max_rows (or always when full), else max_rows rows drawn
  // from a seeded generator.
  bool full = false;
  int64_t max_rows = 4096;
  uint64_t seed = 0;
};

// One tensor's comparison with its float64 reference.
struct TensorCheckReport {
  std::string name;  // "output", "dq", "dk", "dv"; at layer scope "dx", "dw_q", ... "dw_o"
  int64_t rows_checked = 0;
  int64_t rows_total = 0;
  double max_abs_error = 0;
  double relative_error = 0;
  double tolerance = 0;
  int64_t non_finite_elements = 0;
  bool passed = false;
};

// A decode from a quantized cache (int8, int4 or SAQ bands), or an FP8 run on drawn inputs (§1b),
// checked against the reference of the unquantized inputs mixes two errors; these are them apart,
// over the same rows: the kernel's own (the output against the float64 reference of the inputs as
// stored, dequantized) and the quantization's (that reference against the unquantized one).
struct QuantizationSplit {
  double kernel_relative_error = 0;
  double kernel_max_abs_error = 0;
  // The dtype's tolerance, without the quantized cache's allowance.
  double kernel_tolerance = 0;
  bool kernel_passed = false;
  double quantization_relative_error = 0;
};

struct CorrectnessReport {
  int64_t rows_checked = 0;
  int64_t rows_total = 0;
  double max_abs_error = 0;
  double relative_error = 0;  // ||out - ref|| / ||ref|| over the compared rows
  double tolerance = 0;       // for the problem's dtype (and cache quantization)
  // relative_error within tolerance, no NaN in the compared rows, and no non-finite element.
  bool passed = false;
  // NaN or infinite output elements over the whole output (CountNonFinite), not only the
  // compared rows: a sample must not let a non-finite value through as a pass.
  int64_t non_finite_elements = 0;
  // Each tensor compared ("output"; for PHASE_BACKWARD "dq", "dk", "dv", or at layer scope "dx",
  // "dw_q", "dw_k", "dw_v", "dw_o", and the fields above are then the worst of them, passed only
  // when every one passed).
  std::vector<TensorCheckReport> tensors;
  // Set when SplitsQuantizationError(problem).
  std::optional<QuantizationSplit> quantization;
};

// Whether `problem` decodes from a cache holding any token quantized (int8, int4, or an SAQ band
// of either): CheckOutput then also reports the QuantizationSplit, at twice the oracle's work.
bool QuantizedDecode(const Problem& problem);
// QuantizedDecode, or DTYPE_FLOAT8_E4M3 on drawn inputs (UnquantizedInputs exists): CheckOutput
// reports the QuantizationSplit, at twice the oracle's work.
bool SplitsQuantizationError(const Problem& problem);

// The output rows CheckOutput compares: all of [0, rows_total) when options.full or rows_total <=
// options.max_rows, else options.max_rows of them drawn from options.seed (kOutputRowStream);
// unordered.
std::vector<int64_t> CheckedRows(int64_t rows_total, const CheckOptions& options);

// Relative-error tolerance for forward outputs stored in dtype (and a quantized cache, if any);
// gradient_check.h has the backward's.
double ToleranceFor(const Problem& problem);
// The same without a quantized cache's allowance: the kernel's own error's.
double DTypeToleranceFor(const Problem& problem);

// The output O (or Y) against the forward oracle; report.tensors holds one entry, "output", with
// the top-level fields. PHASE_BACKWARD's dQ, dK, dV are checked by CheckGradients
// (gradient_check.h).
absl::StatusOr<CorrectnessReport> CheckOutput(const Problem& problem, const AttentionInputs& inputs,
                                              const FloatTensor& output,
                                              const CheckOptions& options);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_REFERENCE_CHECK_H_
