// --server targets: what CheckTarget accepts (every form gRPC resolves, including several
// addresses for round_robin) and the usage errors ClientFromFlags reports for malformed ones.
#include "client/target.h"

#include <string>

#include "client/command_common.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/test_util.h"

namespace attnbench::client {
namespace {

using ::attnbench::client::testing::Apply;
using ::testing::HasSubstr;

TEST(TargetTest, AcceptsWhatGrpcResolves) {
  for (const std::string target : {
           "localhost:50051",
           "localhost",
           "attnbench",
           "10.1.2.3:50051",
           "[::1]:50051",
           "dns:///attnbench.bench.svc.cluster.local:50051",
           "dns:attnbench:50051",
           "dns://10.0.0.10:53/attnbench.bench.svc:50051",
           "dns:///[::1]:50051",
           "ipv4:127.0.0.1:50051",
           "ipv4:127.0.0.1:50051,127.0.0.1:50052",
           "ipv6:[::1]:50051,[::1]:50052",
           "unix:/run/attnbench.sock",
           "unix:///run/attnbench.sock",
           "unix-abstract:attnbench",
       }) {
    EXPECT_TRUE(CheckTarget(target).ok()) << target << ": " << CheckTarget(target);
  }
}

TEST(TargetTest, RejectsMalformedTargets) {
  struct Case {
    std::string target;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {"", "empty target"},
           {"dns:///", "no host name"},
           {"dns:///:50051", "no host name"},
           {"dns://nohost", "expected dns://[dns-server]/host"},
           {"dns:///host:0", "port must be 1-65535"},
           {"dns:///host:http", "port must be 1-65535"},
           {"ipv4:", "no addresses"},
           {"ipv4:127.0.0.1", "not address:port"},
           {"ipv4:127.0.0.1:50051,", "not address:port"},
           {"ipv4:127.0.0.1:70000", "not address:port"},
           {"ipv4:localhost:50051", "'localhost' is not an IPv4 address"},
           {"ipv4:127.0.0.256:50051", "is not an IPv4 address"},
           {"ipv6:::1:50051", "is not an [IPv6] address"},
           {"unix:", "no socket path"},
           {"host name:50051", "whitespace"},
       }) {
    absl::Status status = CheckTarget(c.target);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.target;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.message)) << c.target;
  }
}

TEST(TargetTest, ClientFromFlagsReportsTheServerFlag) {
  ASSERT_TRUE(Apply(Subcommand::kCaps, {"--server=ipv4:127.0.0.1"}).ok());
  absl::Status status = ClientFromFlags().status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("--server: target 'ipv4:127.0.0.1'"));
  ASSERT_TRUE(Apply(Subcommand::kSweep, {"--server=ipv4:127.0.0.1:1,127.0.0.1:2"}).ok());
  EXPECT_TRUE(ClientFromFlags().ok());
  ResetFlags();
}

}  // namespace
}  // namespace attnbench::client
