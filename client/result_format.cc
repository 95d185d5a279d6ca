#include "client/result_format.h"

#include <algorithm>
#include <cstddef>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "client/layout_syntax.h"
#include "client/names.h"
#include "google/protobuf/util/json_util.h"

namespace attnbench::client {
namespace {

struct Column {
  const char* title;
  bool right_aligned;
};

constexpr Column kColumns[] = {
    {"point", true},   {"backend", false}, {"layout", false},   {"mask", false},
    {"dtype", false},  {"B", true},        {"S_q", true},       {"S_kv", true},
    {"H", true},       {"D", true},        {"median ms", true}, {"p10-p90 ms", true},
    {"TFLOP/s", true}, {"GB/s", true},     {"rel err", true},   {"pass", false},
    {"server", false}, {"device", false},
};
// Appended to the table, each when some row's check compared that gradient of a backward run: a
// core-scope backward's dQ, dK, dV, a layer's dX and weight gradients.
struct GradientColumn {
  Column column;
  const char* name;  // TensorCheck.name
};
constexpr GradientColumn kGradientColumns[] = {
    {{"dQ err", true}, "dq"},     {{"dK err", true}, "dk"},     {{"dV err", true}, "dv"},
    {{"dX err", true}, "dx"},     {{"dW_q err", true}, "dw_q"}, {{"dW_k err", true}, "dw_k"},
    {{"dW_v err", true}, "dw_v"}, {{"dW_o err", true}, "dw_o"},
};
// The CSV's gradient fields: the core's, where they always were, and a layer's dX and weight
// gradients, appended last so that the older columns keep their positions.
constexpr const char* kCsvGradientNames[] = {"dq", "dk", "dv"};
constexpr const char* kCsvLayerGradientNames[] = {"dx", "dw_q", "dw_k", "dw_v", "dw_o"};
// Appended (after any gradient columns) when some row ran a client-written expression.
constexpr Column kExpressionColumns[] = {{"score_mod", false}, {"mask_mod", false}};

bool HasExpressions(const v1::RunResult& r) {
  return r.spec().has_score_mod() || r.spec().has_mask_mod();
}

// The expressions as the result's spec echoes them; "-" where there is none.
std::vector<std::string> ExpressionCells(const v1::RunResult& r) {
  const v1::AttentionSpec& spec = r.spec();
  return {spec.has_score_mod() ? spec.score_mod().expression() : "-",
          spec.has_mask_mod() ? spec.mask_mod().expression() : "-"};
}

// The check of one tensor ("dq", ...) of a result, or null.
const v1::TensorCheck* TensorCheckOf(const v1::RunResult& r, absl::string_view name) {
  for (const v1::TensorCheck& t : r.correctness().tensors()) {
    if (t.name() == name) return &t;
  }
  return nullptr;
}

bool HasGradientCheck(const v1::RunResult& r, const char* name) {
  return TensorCheckOf(r, name) != nullptr;
}

// `<name>_rel_err` and `<name>_passed` of one gradient: empty unless the check compared it.
void AppendGradientFields(const v1::RunResult& r, const char* name,
                          std::vector<std::string>* fields) {
  const v1::TensorCheck* t = TensorCheckOf(r, name);
  fields->push_back(t != nullptr ? absl::StrFormat("%.6g", t->relative_error()) : "");
  fields->push_back(t != nullptr ? (t->passed() ? "true" : "false") : "");
}

int HeadsOf(const v1::RunResult& result) {
  if (result.head_map_size() > 0) return result.head_map_size();
  return OutputHeads(result.spec().layout());
}

std::string HeadDimOf(const v1::AttentionSpec& spec) {
  if (spec.has_head_dim_v() && spec.head_dim_v() != spec.head_dim_qk()) {
    return absl::StrCat(spec.head_dim_qk(), "/", spec.head_dim_v());
  }
  return absl::StrCat(spec.head_dim_qk());
}

// "yes", "NO" or "-" (not checked), followed by the count of NaN and infinite elements of the
// output and of any checked gradient when there are any: whatever the check compared, a
// non-finite tensor is never shown clean.
std::string PassCell(const v1::RunResult& r) {
  const v1::Correctness& check = r.correctness();
  std::string cell = check.checked() ? (check.passed() ? "yes" : "NO") : "-";
  int64_t non_finite = r.output_summary().non_finite_elements();
  for (const GradientColumn& g : kGradientColumns) {
    if (const v1::TensorCheck* t = TensorCheckOf(r, g.name)) non_finite += t->non_finite_elements();
  }
  if (non_finite > 0) absl::StrAppend(&cell, " (", non_finite, " non-finite)");
  return cell;
}

std::vector<std::string> TableCells(int point, const v1::RunResult& r,
                                    const std::vector<const char*>& gradient_names,
                                    bool expression_columns) {
  const v1::AttentionSpec& spec = r.spec();
  const v1::Correctness& check = r.correctness();
  std::vector<std::string> cells = {
      absl::StrCat(point),
      r.backend(),
      LayoutToString(spec.layout()),
      MaskToString(spec.mask()),
      DTypeName(spec.dtype()),
      absl::StrCat(spec.batch_size()),
      absl::StrCat(spec.seq_len_q()),
      absl::StrCat(spec.seq_len_kv()),
      absl::StrCat(HeadsOf(r)),
      HeadDimOf(spec),
      absl::StrFormat("%.3f", r.timing().median_ms()),
      absl::StrFormat("%.3f-%.3f", r.timing().p10_ms(), r.timing().p90_ms()),
      absl::StrFormat("%.3f", r.throughput().achieved_tflops()),
      absl::StrFormat("%.2f", r.throughput().achieved_gbps()),
      check.checked() ? absl::StrFormat("%.2e", check.relative_error()) : "-",
      PassCell(r),
      ServerLabel(r),
      DeviceLabel(r)};
  for (const char* name : gradient_names) {
    const v1::TensorCheck* t = TensorCheckOf(r, name);
    cells.push_back(t != nullptr ? absl::StrFormat("%.2e", t->relative_error()) : "-");
  }
  if (expression_columns) {
    for (std::string& cell : ExpressionCells(r)) cells.push_back(std::move(cell));
  }
  return cells;
}

// spec.kv_compression's methods in the order the server reports them (the CSV's columns).
constexpr const char* kCompressionMethods[] = {"pca", "mean_pool"};

const v1::KvCompressionResult* CompressionOf(const v1::RunResult& r, absl::string_view method) {
  for (const v1::KvCompressionResult& c : r.kv_compression()) {
    if (c.method() == method) return &c;
  }
  return nullptr;
}

// The rows' KV-head compression results under the main table: each method's errors and its
// compressed run's time beside the original's.
std::string FormatCompressionTable(const std::vector<ResultRow>& rows) {
  std::vector<std::vector<std::string>> lines = {{"point", "method", "kv_heads", "key err",
                                                  "value err", "output err", "median ms",
                                                  "speed-up", "pass"}};
  for (const ResultRow& row : rows) {
    if (!row.result.has_value()) continue;
    for (const v1::KvCompressionResult& c : row.result->kv_compression()) {
      const double original = row.result->timing().median_ms();
      const double median = c.timing().median_ms();
      lines.push_back(
          {absl::StrCat(row.point), c.method(), absl::StrCat(c.kv_heads()),
           absl::StrFormat("%.2e", c.key_error()), absl::StrFormat("%.2e", c.value_error()),
           absl::StrFormat("%.2e", c.output_error()), absl::StrFormat("%.3f", median),
           median > 0 ? absl::StrFormat("%.2fx", original / median) : "-",
           c.correctness().checked() ? (c.correctness().passed() ? "yes" : "NO") : "-"});
    }
  }
  if (lines.size() == 1) return "";
  std::vector<size_t> widths(lines[0].size(), 0);
  for (const auto& line : lines) {
    for (size_t c = 0; c < line.size(); ++c) widths[c] = std::max(widths[c], line[c].size());
  }
  std::string out = "\nKV-head compression\n";
  for (const auto& line : lines) {
    for (size_t c = 0; c < line.size(); ++c) {
      const size_t pad = widths[c] - line[c].size();
      if (c > 0) out += "  ";
      // Text columns (method, pass) left, numbers right; no trailing blanks.
      if (c == 1 || c + 1 == line.size()) {
        out += line[c];
        if (c + 1 < line.size()) out.append(pad, ' ');
      } else {
        out += std::string(pad, ' ') + line[c];
      }
    }
    out += "\n";
  }
  return out;
}

std::string CsvField(absl::string_view text) {
  if (text.find_first_of(",\"\n") == absl::string_view::npos) return std::string(text);
  return absl::StrCat("\"", absl::StrReplaceAll(text, {{"\"", "\"\""}}), "\"");
}

}  // namespace

absl::StatusOr<OutputFormat> ParseOutputFormat(absl::string_view name) {
  if (name == "table") return OutputFormat::kTable;
  if (name == "csv") return OutputFormat::kCsv;
  if (name == "json") return OutputFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown format '", name, "' (expected table|csv|json)"));
}

std::string ServerLabel(const v1::RunResult& result) {
  return result.server().empty() ? "-" : result.server();
}

std::string DeviceLabel(const v1::RunResult& result) {
  if (!result.has_device() || result.device().kind().empty()) return "-";
  return absl::StrCat(result.device().kind(), ":", result.device().index());
}

ResultRow RowOf(const v1::SweepResponse& response) {
  ResultRow row;
  row.point = response.point_index();
  if (response.has_result()) {
    row.result = response.result();
  } else {
    row.error = absl::Status(static_cast<absl::StatusCode>(response.error().code()),
                             response.error().message());
    if (row.error.ok()) row.error = absl::UnknownError("point failed without a status");
  }
  return row;
}

std::string StatusText(const absl::Status& status) {
  return absl::StrCat(absl::StatusCodeToString(status.code()), ": ", status.message());
}

std::string FormatTable(const std::vector<ResultRow>& rows) {
  std::vector<Column> columns(std::begin(kColumns), std::end(kColumns));
  std::vector<const char*> gradient_names;
  for (const GradientColumn& g : kGradientColumns) {
    if (std::any_of(rows.begin(), rows.end(), [&](const ResultRow& row) {
          return row.result.has_value() && HasGradientCheck(*row.result, g.name);
        })) {
      columns.push_back(g.column);
      gradient_names.push_back(g.name);
    }
  }
  const bool expression_columns = std::any_of(rows.begin(), rows.end(), [](const ResultRow& row) {
    return row.result.has_value() && HasExpressions(*row.result);
  });
  if (expression_columns) {
    columns.insert(columns.end(), std::begin(kExpressionColumns), std::end(kExpressionColumns));
  }
  std::vector<std::vector<std::string>> cells;
  std::vector<size_t> widths(columns.size());
  for (size_t c = 0; c < columns.size(); ++c) widths[c] = std::string(columns[c].title).size();
  for (const ResultRow& row : rows) {
    if (!row.result.has_value()) continue;
    cells.push_back(TableCells(row.point, *row.result, gradient_names, expression_columns));
    for (size_t c = 0; c < columns.size(); ++c) {
      widths[c] = std::max(widths[c], cells.back()[c].size());
    }
  }
  auto line = [&](const std::vector<std::string>& values) {
    std::string out;
    for (size_t c = 0; c < values.size(); ++c) {
      const size_t pad = widths[c] - std::min(widths[c], values[c].size());
      if (c > 0) out += "  ";
      if (columns[c].right_aligned) out.append(pad, ' ');
      out += values[c];
      if (!columns[c].right_aligned && c + 1 < values.size()) out.append(pad, ' ');
    }
    return out + "\n";
  };
  std::vector<std::string> header;
  for (const Column& column : columns) header.emplace_back(column.title);
  std::string out = line(header);
  size_t next = 0;
  for (const ResultRow& row : rows) {
    if (row.result.has_value()) {
      out += line(cells[next++]);
    } else {
      std::string point = absl::StrCat(row.point);
      out += std::string(widths[0] - std::min(widths[0], point.size()), ' ');
      out += absl::StrCat(point, "  error ", StatusText(row.error), "\n");
    }
  }
  return out + FormatCompressionTable(rows);
}

std::string FormatCsv(const std::vector<ResultRow>& rows) {
  std::string out =
      "point,backend,layout,mask,dtype,batch,seq_len_q,seq_len_kv,heads,head_dim_qk,head_dim_v,"
      "median_ms,p10_ms,p90_ms,tflops,gbps,rel_err,passed,server,device,kernel,error,"
      "non_finite_elements,phase,backward_timing,dq_rel_err,dq_passed,dk_rel_err,dk_passed,"
      "dv_rel_err,dv_passed,score_mod,mask_mod,kv_heads,pca_key_err,pca_value_err,"
      "pca_output_err,pca_median_ms,mean_pool_key_err,mean_pool_value_err,mean_pool_output_err,"
      "mean_pool_median_ms,dx_rel_err,dx_passed,dw_q_rel_err,dw_q_passed,dw_k_rel_err,"
      "dw_k_passed,dw_v_rel_err,dw_v_passed,dw_o_rel_err,dw_o_passed,kernel_rel_err,"
      "kernel_passed,quantization_rel_err,deterministic\n";
  for (const ResultRow& row : rows) {
    if (!row.result.has_value()) {
      absl::StrAppend(&out, row.point, std::string(21, ','), CsvField(StatusText(row.error)),
                      std::string(34, ','), "\n");
      continue;
    }
    const v1::RunResult& r = *row.result;
    const v1::AttentionSpec& spec = r.spec();
    const v1::Correctness& check = r.correctness();
    std::vector<std::string> fields = {
        absl::StrCat(row.point),
        CsvField(r.backend()),
        CsvField(LayoutToString(spec.layout())),
        CsvField(MaskToString(spec.mask())),
        DTypeName(spec.dtype()),
        absl::StrCat(spec.batch_size()),
        absl::StrCat(spec.seq_len_q()),
        absl::StrCat(spec.seq_len_kv()),
        absl::StrCat(HeadsOf(r)),
        absl::StrCat(spec.head_dim_qk()),
        absl::StrCat(spec.has_head_dim_v() ? spec.head_dim_v() : spec.head_dim_qk()),
        absl::StrFormat("%.6g", r.timing().median_ms()),
        absl::StrFormat("%.6g", r.timing().p10_ms()),
        absl::StrFormat("%.6g", r.timing().p90_ms()),
        absl::StrFormat("%.6g", r.throughput().achieved_tflops()),
        absl::StrFormat("%.6g", r.throughput().achieved_gbps()),
        check.checked() ? absl::StrFormat("%.6g", check.relative_error()) : "",
        check.checked() ? (check.passed() ? "true" : "false") : "",
        CsvField(r.server()),
        r.has_device() && !r.device().kind().empty() ? DeviceLabel(r) : "",
        CsvField(r.kernel()),
        "",
        absl::StrCat(r.output_summary().non_finite_elements()),
        PhaseName(spec.phase() == v1::PHASE_UNSPECIFIED ? v1::PHASE_PREFILL : spec.phase()),
        r.measurement().backward_timing() != v1::BACKWARD_TIMING_UNSPECIFIED
            ? BackwardTimingName(r.measurement().backward_timing())
            : ""};
    for (const char* name : kCsvGradientNames) AppendGradientFields(r, name, &fields);
    // Empty, not "-", where there is none: "-" would read as an expression.
    fields.push_back(spec.has_score_mod() ? CsvField(spec.score_mod().expression()) : "");
    fields.push_back(spec.has_mask_mod() ? CsvField(spec.mask_mod().expression()) : "");
    fields.push_back(
        spec.has_kv_compression() ? absl::StrCat(spec.kv_compression().target_kv_heads()) : "");
    for (const char* method : kCompressionMethods) {
      const v1::KvCompressionResult* c = CompressionOf(r, method);
      for (double x : {c ? c->key_error() : 0.0, c ? c->value_error() : 0.0,
                       c ? c->output_error() : 0.0, c ? c->timing().median_ms() : 0.0}) {
        fields.push_back(c != nullptr ? absl::StrFormat("%.6g", x) : "");
      }
    }
    for (const char* name : kCsvLayerGradientNames) AppendGradientFields(r, name, &fields);
    const bool split = check.has_quantization();
    const v1::QuantizationErrors& q = check.quantization();
    fields.push_back(split ? absl::StrFormat("%.6g", q.kernel_relative_error()) : "");
    fields.push_back(split ? (q.kernel_passed() ? "true" : "false") : "");
    fields.push_back(split ? absl::StrFormat("%.6g", q.quantization_relative_error()) : "");
    fields.push_back(r.measurement().deterministic() ? "true" : "false");
    absl::StrAppend(&out, absl::StrJoin(fields, ","), "\n");
  }
  return out;
}

absl::StatusOr<std::string> FormatJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  std::string json;
  const google::protobuf::util::Status status =
      google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    return absl::InternalError(absl::StrCat("JSON conversion failed: ", status.ToString()));
  }
  return json;
}

absl::StatusOr<std::string> FormatSweepJson(const std::vector<v1::SweepResponse>& responses) {
  std::vector<std::string> items;
  for (const v1::SweepResponse& response : responses) {
    absl::StatusOr<std::string> json = FormatJson(response);
    if (!json.ok()) return json.status();
    // Pretty-printed objects end with a newline; the array adds its own separators.
    while (!json->empty() && json->back() == '\n') json->pop_back();
    items.push_back(*std::move(json));
  }
  if (items.empty()) return std::string("[]\n");
  return absl::StrCat("[\n", absl::StrJoin(items, ",\n"), "\n]\n");
}

}  // namespace attnbench::client
