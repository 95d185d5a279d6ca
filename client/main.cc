// attnbench: the command-line client of the attnbench service.
//
//   attnbench <run|sweep|caps|health> [--flag=value ...]
//
// argv[1] names the subcommand; the rest are absl flags, applied by ApplyArgs (client/flags.h)
// rather than absl::ParseCommandLine so that a flag the subcommand does not take, or a malformed
// value, is a usage error (exit 2) reported before any RPC.
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/usage.h"
#include "client/commands.h"
#include "client/flags.h"
#include "client/usage.h"

namespace {

bool IsHelp(const std::string& arg) {
  return arg == "--help" || arg == "-help" || arg == "-h" || arg == "--helpfull" || arg == "help";
}

}  // namespace

int main(int argc, char** argv) {
  using attnbench::client::kExitOk;
  using attnbench::client::kExitUsage;
  using attnbench::client::Subcommand;
  absl::SetProgramUsageMessage("attnbench <run|sweep|caps|health> [--flag=value ...]");
  if (argc < 2) {
    std::cerr << attnbench::client::TopLevelUsage();
    return kExitUsage;
  }
  if (IsHelp(argv[1])) {
    std::cout << attnbench::client::TopLevelUsage();
    return kExitOk;
  }
  absl::StatusOr<Subcommand> subcommand = attnbench::client::ParseSubcommand(argv[1]);
  if (!subcommand.ok()) {
    std::cerr << "attnbench: " << subcommand.status().message() << "\n"
              << "Run 'attnbench --help' for usage.\n";
    return kExitUsage;
  }
  const std::vector<std::string> args(argv + 2, argv + argc);
  for (const std::string& arg : args) {
    if (IsHelp(arg)) {
      std::cout << attnbench::client::SubcommandUsage(*subcommand);
      return kExitOk;
    }
  }
  absl::Status applied = attnbench::client::ApplyArgs(*subcommand, args);
  if (!applied.ok()) {
    std::cerr << "attnbench " << argv[1] << ": " << applied.message() << "\n"
              << "Run 'attnbench " << argv[1] << " --help' for usage.\n";
    return kExitUsage;
  }
  return attnbench::client::RunSubcommand(*subcommand, std::cout, std::cerr);
}
