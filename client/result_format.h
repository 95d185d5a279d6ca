// Renders measured results as an aligned text table, CSV or JSON. One row per run or sweep
// point; a failed sweep point is a row carrying its error.
#ifndef ATTNBENCH_CLIENT_RESULT_FORMAT_H_
#define ATTNBENCH_CLIENT_RESULT_FORMAT_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "attnbench/v1/attnbench.pb.h"

namespace attnbench::client {

// What --format selects.
enum class OutputFormat { kTable, kCsv, kJson };

// "table", "csv" or "json"; InvalidArgument otherwise.
absl::StatusOr<OutputFormat> ParseOutputFormat(absl::string_view name);

// A measured point (result set) or a failed one (error not OK).
struct ResultRow {
  int point = 0;
  std::optional<v1::RunResult> result;
  absl::Status error;
};

// The row of a sweep response.
ResultRow RowOf(const v1::SweepResponse& response);

// Which server measured a result (RunResult.server: the pod name in Kubernetes), "-" if unset.
std::string ServerLabel(const v1::RunResult& result);
// Its device as kind:index ("cuda:0", "cpu:0"), "-" if unset.
std::string DeviceLabel(const v1::RunResult& result);

// Columns: point, backend, layout, mask, dtype, B, S_q, S_kv, H, D, median ms, p10-p90 ms,
// TFLOP/s, GB/s, rel err, pass, server, device, and when some row's check compared the gradients
// of a backward run, dQ err, dK err, dV err (core scope) and dX err, dW_q err, dW_k err, dW_v err,
// dW_o err (layer scope), each only when some row has it (each tensor's relative error; "-" on
// rows without it), and when some row ran a client-written expression, score_mod and mask_mod (the
// expressions as the result's spec echoes them; "-" on rows without). For a backward run rel err
// and pass are the worst of the gradients'. pass adds "(N
// non-finite)" when the output or a checked gradient held NaN or infinite elements. Text columns
// are left-aligned, numbers right-aligned; an error row shows its status code name and message
// after the point. Ends with a newline.
std::string FormatTable(const std::vector<ResultRow>& rows);

// A header line and one line per row; numbers at full precision, then an `error` column and,
// appended after it so older readers keep their column positions, `non_finite_elements` (the
// output's NaN and infinite elements; empty on an error row), then `phase`, `backward_timing`
// (empty unless backward) and `dq_rel_err`, `dq_passed`, `dk_rel_err`, `dk_passed`,
// `dv_rel_err`, `dv_passed` (empty unless the check compared that gradient), then `score_mod`
// and `mask_mod` (the expressions; empty when the spec has none), then `kv_heads` and per KV-head
// compression method (pca, mean_pool) `<method>_key_err`, `_value_err`, `_output_err`,
// `_median_ms` (empty without compression), and last a layer backward's `dx_rel_err`,
// `dx_passed`, `dw_q_rel_err`, `dw_q_passed`, `dw_k_rel_err`, `dw_k_passed`, `dw_v_rel_err`,
// `dw_v_passed`, `dw_o_rel_err`, `dw_o_passed` (empty unless the check compared that gradient),
// then a quantized cache's decode's `kernel_rel_err`, `kernel_passed`, `quantization_rel_err`
// (Correctness.quantization; empty otherwise) and `deterministic` (as the result echoes it; empty
// on an error row).
std::string FormatCsv(const std::vector<ResultRow>& rows);

// The proto3 JSON mapping (lowerCamelCase names) of one message, pretty-printed.
absl::StatusOr<std::string> FormatJson(const google::protobuf::Message& message);

// A JSON array of the sweep's responses in arrival order.
absl::StatusOr<std::string> FormatSweepJson(const std::vector<v1::SweepResponse>& responses);

// "INVALID_ARGUMENT: message" for a status.
std::string StatusText(const absl::Status& status);

}  // namespace attnbench::client

#endif  // ATTNBENCH_CLIENT_RESULT_FORMAT_H_
