// Checks a --server target before any connection. gRPC takes "host:port" (resolved by DNS) and
// URIs: dns:[//authority/]host[:port], ipv4:addr:port[,addr:port...], ipv6:[addr]:port[,...],
// unix:path, unix:///absolute/path and unix-abstract:name. It reports a malformed target only as
// UNAVAILABLE on the first call; these checks turn the common mistakes into usage errors.
#ifndef ATTNBENCH_CLIENT_TARGET_H_
#define ATTNBENCH_CLIENT_TARGET_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace attnbench::client {

// InvalidArgument naming what is wrong; OK for anything gRPC may accept (an unknown scheme is
// left to gRPC, which reads "name:port" as a DNS host and port).
absl::Status CheckTarget(absl::string_view target);

}  // namespace attnbench::client

#endif  // ATTNBENCH_CLIENT_TARGET_H_
