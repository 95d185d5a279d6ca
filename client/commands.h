// The attnbench CLI's subcommands, run once their flags are applied (client/flags.h): each builds
// its request, calls the server named by --server, and prints the result in --format. Results go
// to `out`; progress, usage errors and RPC errors go to `err`.
#ifndef ATTNBENCH_CLIENT_COMMANDS_H_
#define ATTNBENCH_CLIENT_COMMANDS_H_

#include <ostream>

#include "client/flags.h"

namespace attnbench::client {

// Process exit codes.
inline constexpr int kExitOk = 0;
// An RPC failed (or a sweep point did, or the output could not be written).
inline constexpr int kExitFailure = 1;
// A flag was missing or malformed; the server was not contacted.
inline constexpr int kExitUsage = 2;

int RunCommand(std::ostream& out, std::ostream& err);
int SweepCommand(std::ostream& out, std::ostream& err);
int CapsCommand(std::ostream& out, std::ostream& err);
int HealthCommand(std::ostream& out, std::ostream& err);

// Dispatches to one of the above.
int RunSubcommand(Subcommand subcommand, std::ostream& out, std::ostream& err);

}  // namespace attnbench::client

#endif  // ATTNBENCH_CLIENT_COMMANDS_H_
