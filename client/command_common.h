// What the subcommands share: reading the connection and format flags, and reporting usage and
// RPC errors in one style ("attnbench: --flag: ...", "attnbench: CODE: message").
#ifndef ATTNBENCH_CLIENT_COMMAND_COMMON_H_
#define ATTNBENCH_CLIENT_COMMAND_COMMON_H_

#include <memory>
#include <ostream>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/flags.h"
#include "client/result_format.h"
#include "client/rpc_client.h"

namespace attnbench::client {

// --format, or a usage error naming it.
absl::StatusOr<OutputFormat> FormatFromFlags();

// A client for --server with --deadline_seconds, the --tls_* flags and --token/--token_file/
// --tenant (files read here), or a usage error naming the bad flag (never a file's contents).
absl::StatusOr<std::unique_ptr<RpcClient>> ClientFromFlags();

// Prints a usage error with a pointer to --help; returns kExitUsage.
int ReportUsageError(Subcommand subcommand, const absl::Status& status, std::ostream& err);

// Prints "attnbench: CODE: message"; returns kExitFailure.
int ReportFailure(const absl::Status& status, std::ostream& err);

}  // namespace attnbench::client

#endif  // ATTNBENCH_CLIENT_COMMAND_COMMON_H_
