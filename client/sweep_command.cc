// `attnbench sweep`: a grid through Sweep, with one progress line per point on stderr and the
// whole table (or CSV, or JSON array) at the end. With --fan_out=N the grid is split into
// sub-sweeps that run at once on the servers behind the target (client/fan_out.h) and the rows
// come out in grid order, each labelled with the server and device that measured it.
#include <algorithm>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/command_common.h"
#include "client/commands.h"
#include "client/fan_out.h"
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
                      absl::StrFormat("%.3f ms", r.timing().median_ms()), " on ", ServerLabel(r),
                      " ", DeviceLabel(r));
}

// Largest --fan_out: each running part holds a thread and a stream.
constexpr int kMaxFanOut = 256;
// Before fanning out: how long to wait for a first server, then for the others to connect.
constexpr double kConnectSeconds = 20;
constexpr double kSettleSeconds = 0.3;

}  // namespace

int SweepCommand(std::ostream& out, std::ostream& err) {
  absl::StatusOr<OutputFormat> format = FormatFromFlags();
  if (!format.ok()) return ReportUsageError(Subcommand::kSweep, format.status(), err);
  absl::StatusOr<v1::SweepRequest> request = SweepRequestFromFlags();
  if (!request.ok()) return ReportUsageError(Subcommand::kSweep, request.status(), err);
  const int fan_out = absl::GetFlag(FLAGS_fan_out);
  if (fan_out < 0 || fan_out > kMaxFanOut) {
    return ReportUsageError(
        Subcommand::kSweep,
        absl::InvalidArgumentError(absl::StrCat("--fan_out: must be 0 to ", kMaxFanOut)), err);
  }
  absl::StatusOr<SweepSplit> split;
  if (fan_out > 0) {
    split = SplitSweep(*request);
    if (!split.ok()) return ReportUsageError(Subcommand::kSweep, split.status(), err);
  }
  absl::StatusOr<std::unique_ptr<RpcClient>> client = ClientFromFlags();
  if (!client.ok()) return ReportUsageError(Subcommand::kSweep, client.status(), err);

  std::vector<v1::SweepResponse> responses;
  bool point_failed = false;
  auto on_response = [&](const v1::SweepResponse& response) {
    err << ProgressLine(response) << std::endl;
    point_failed = point_failed || !response.has_result();
    responses.push_back(response);
  };
  absl::Status status;
  if (fan_out > 0) {
    RpcClient* rpc = client->get();
    // Not connecting in time is no error here: the first part's call then reports why.
    rpc->WaitForServers(
        std::min(kConnectSeconds, absl::GetFlag(FLAGS_deadline_seconds).value_or(kConnectSeconds)),
        kSettleSeconds);
    status = FanOutSweep(
        *split, fan_out,
        [rpc](const v1::SweepRequest& part,
              const std::function<void(const v1::SweepResponse&)>& on_part_response,
              CallCanceller* canceller) { return rpc->Sweep(part, on_part_response, canceller); },
        on_response);
    // Parts finish in any order; the grid's order reads better.
    std::stable_sort(responses.begin(), responses.end(),
                     [](const v1::SweepResponse& a, const v1::SweepResponse& b) {
                       return a.point_index() < b.point_index();
                     });
  } else {
    status = (*client)->Sweep(*request, on_response);
  }

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
