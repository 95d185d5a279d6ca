#include "client/command_common.h"

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "client/commands.h"

namespace attnbench::client {

absl::StatusOr<OutputFormat> FormatFromFlags() {
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(absl::GetFlag(FLAGS_format));
  if (!format.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--format: ", format.status().message()));
  }
  return format;
}

absl::StatusOr<std::unique_ptr<RpcClient>> ClientFromFlags() {
  const std::string server = absl::GetFlag(FLAGS_server);
  if (server.empty()) return absl::InvalidArgumentError("--server: empty target");
  const std::optional<double> deadline = absl::GetFlag(FLAGS_deadline_seconds);
  if (deadline.has_value() && !(*deadline > 0)) {
    return absl::InvalidArgumentError("--deadline_seconds: must be positive");
  }
  return std::make_unique<RpcClient>(server, deadline);
}

int ReportUsageError(Subcommand subcommand, const absl::Status& status, std::ostream& err) {
  err << "attnbench " << SubcommandName(subcommand) << ": " << status.message() << "\n"
      << "Run 'attnbench " << SubcommandName(subcommand) << " --help' for usage.\n";
  return kExitUsage;
}

int ReportFailure(const absl::Status& status, std::ostream& err) {
  err << "attnbench: " << StatusText(status) << "\n";
  return kExitFailure;
}

}  // namespace attnbench::client
