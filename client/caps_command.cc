// `attnbench caps`: the server's GetCapabilities, as text, CSV or JSON.
#include "client/caps_format.h"
#include "client/command_common.h"
#include "client/commands.h"

namespace attnbench::client {

int CapsCommand(std::ostream& out, std::ostream& err) {
  absl::StatusOr<OutputFormat> format = FormatFromFlags();
  if (!format.ok()) return ReportUsageError(Subcommand::kCaps, format.status(), err);
  absl::StatusOr<std::unique_ptr<RpcClient>> client = ClientFromFlags();
  if (!client.ok()) return ReportUsageError(Subcommand::kCaps, client.status(), err);
  absl::StatusOr<v1::GetCapabilitiesResponse> caps = (*client)->GetCapabilities();
  if (!caps.ok()) return ReportFailure(caps.status(), err);
  switch (*format) {
    case OutputFormat::kTable:
      out << FormatCapabilitiesText(*caps);
      break;
    case OutputFormat::kCsv:
      out << FormatCapabilitiesCsv(*caps);
      break;
    case OutputFormat::kJson: {
      absl::StatusOr<std::string> json = FormatJson(*caps);
      if (!json.ok()) return ReportFailure(json.status(), err);
      out << *json;
      break;
    }
  }
  return kExitOk;
}

int RunSubcommand(Subcommand subcommand, std::ostream& out, std::ostream& err) {
  switch (subcommand) {
    case Subcommand::kRun:
      return RunCommand(out, err);
    case Subcommand::kSweep:
      return SweepCommand(out, err);
    case Subcommand::kHealth:
      return HealthCommand(out, err);
    case Subcommand::kCaps:
      break;
  }
  return CapsCommand(out, err);
}

}  // namespace attnbench::client
