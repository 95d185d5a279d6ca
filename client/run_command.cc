// `attnbench run`: one workload through Run, or through StreamRun when --output asks for the
// output tensor in a file (and for --phase=backward dQ, dK, dV in FILE.dq, FILE.dk, FILE.dv; with
// --scope=layer dX and the weight gradients in FILE.dx, FILE.dw_q, FILE.dw_k, FILE.dw_v,
// FILE.dw_o).
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_join.h"
#include "client/command_common.h"
#include "client/commands.h"
#include "client/names.h"
#include "client/request_builder.h"
#include "client/tensor_files.h"

namespace attnbench::client {

int RunCommand(std::ostream& out, std::ostream& err) {
  absl::StatusOr<OutputFormat> format = FormatFromFlags();
  if (!format.ok()) return ReportUsageError(Subcommand::kRun, format.status(), err);
  absl::StatusOr<v1::RunRequest> request = RunRequestFromFlags();
  if (!request.ok()) return ReportUsageError(Subcommand::kRun, request.status(), err);
  absl::StatusOr<std::unique_ptr<RpcClient>> client = ClientFromFlags();
  if (!client.ok()) return ReportUsageError(Subcommand::kRun, client.status(), err);

  v1::RunResponse response;
  if (const std::optional<std::string> path = absl::GetFlag(FLAGS_output)) {
    std::vector<WrittenTensor> written;
    absl::StatusOr<v1::RunResult> result =
        (*client)->StreamRunToFiles(*request, OutputFilesFor(request->spec(), *path), &written);
    if (!result.ok()) return ReportFailure(result.status(), err);
    *response.mutable_result() = *std::move(result);
    for (const WrittenTensor& w : written) {
      err << "wrote " << w.bytes << " bytes of " << DTypeName(w.dtype) << " ["
          << absl::StrJoin(w.shape, ",") << "] to " << w.path << "\n";
    }
  } else {
    absl::StatusOr<v1::RunResponse> ran = (*client)->Run(*request);
    if (!ran.ok()) return ReportFailure(ran.status(), err);
    response = *std::move(ran);
  }

  switch (*format) {
    case OutputFormat::kTable:
      out << FormatTable({ResultRow{0, response.result(), absl::OkStatus()}});
      break;
    case OutputFormat::kCsv:
      out << FormatCsv({ResultRow{0, response.result(), absl::OkStatus()}});
      break;
    case OutputFormat::kJson: {
      absl::StatusOr<std::string> json = FormatJson(response);
      if (!json.ok()) return ReportFailure(json.status(), err);
      out << *json;
      break;
    }
  }
  return kExitOk;
}

}  // namespace attnbench::client
