// The CLI's --help texts: the top-level usage and each subcommand's flags, generated from the
// flag registry (client/flags.h) so they list exactly what each subcommand accepts.
#ifndef ATTNBENCH_CLIENT_USAGE_H_
#define ATTNBENCH_CLIENT_USAGE_H_

#include <string>

#include "client/flags.h"

namespace attnbench::client {

std::string TopLevelUsage();
std::string SubcommandUsage(Subcommand subcommand);

}  // namespace attnbench::client

#endif  // ATTNBENCH_CLIENT_USAGE_H_
