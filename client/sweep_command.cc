// `attnbench sweep`: a grid through Sweep, with one progress line per point on stderr and the
// whole table (or CSV, or JSON array) at the end.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/command_common.h"
#include "client/commands.h"
#include "client/layout_syntax.h"
#include "client/names.h"
#include "client/request_builder.h"

namespace attnbench::client {
namespace {

std::string ProgressLine(const v1::SweepResponse& response) {
  std::string line = absl::StrFormat("[%d/%d] point %d: ", response.completed_points(),
                                     response.total_points(), response.point_index());
  if (!response.has_result()) {
    return absl::StrCat(line, "error ", StatusText(RowOf(response).error));
  }
  const v1::RunResult& r = response.result();
  const v1::AttentionSpec& spec = r.spec();
  return absl::StrCat(line, r.backend(), " ", LayoutToString(spec.layout()), " ",
                      MaskToString(spec.mask()), " ", DTypeName(spec.dtype()),
                      " B=", spec.batch_size(), " S_q=", spec.seq_len_q(),
                      " S_kv=", spec.seq_len_kv(), " D=", spec.head_dim_qk(), ": ",
                      absl::StrFormat("%.3f ms", r.timing().median_ms()));
}

}  // namespace

int SweepCommand(std::ostream& out, std::ostream& err) {
  absl::StatusOr<OutputFormat> format = FormatFromFlags();
  if (!format.ok()) return ReportUsageError(Subcommand::kSweep, format.status(), err);
  absl::StatusOr<v1::SweepRequest> request = SweepRequestFromFlags();
  if (!request.ok()) return ReportUsageError(Subcommand::kSweep, request.status(), err);
  absl::StatusOr<std::unique_ptr<RpcClient>> client = ClientFromFlags();
  if (!client.ok()) return ReportUsageError(Subcommand::kSweep, client.status(), err);

  std::vector<v1::SweepResponse> responses;
  bool point_failed = false;
  absl::Status status = (*client)->Sweep(*request, [&](const v1::SweepResponse& response) {
    err << ProgressLine(response) << std::endl;
    point_failed = point_failed || !response.has_result();
    responses.push_back(response);
  });

  std::vector<ResultRow> rows;
  rows.reserve(responses.size());
  for (const v1::SweepResponse& response : responses) rows.push_back(RowOf(response));
  switch (*format) {
    case OutputFormat::kTable:
      out << FormatTable(rows);
      break;
    case OutputFormat::kCsv:
      out << FormatCsv(rows);
      break;
    case OutputFormat::kJson: {
      absl::StatusOr<std::string> json = FormatSweepJson(responses);
      if (!json.ok()) return ReportFailure(json.status(), err);
      out << *json;
      break;
    }
  }
  if (!status.ok()) return ReportFailure(status, err);
  if (point_failed) {
    err << "attnbench: some sweep points failed\n";
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace attnbench::client
