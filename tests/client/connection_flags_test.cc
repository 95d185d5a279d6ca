// The CLI's connection security flags: which combinations ClientFromFlags accepts, and usage
// errors that name the flag and never echo a token or a file's contents.
#include <cstdio>
#include <fstream>
#include <string>

#include "client/command_common.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/test_util.h"

namespace attnbench::client {
namespace {

using ::attnbench::client::testing::Apply;
using ::testing::HasSubstr;
using ::testing::Not;

std::string WriteFile(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/connection_flags_test_" + name;
  std::ofstream(path) << text;
  return path;
}

absl::Status ClientStatus(const std::vector<std::string>& args) {
  absl::Status applied = Apply(Subcommand::kCaps, args);
  if (!applied.ok()) return applied;
  return ClientFromFlags().status();
}

TEST(ConnectionFlagsTest, AcceptedCombinations) {
  const std::string pem = WriteFile("ca.pem", "-----BEGIN CERTIFICATE-----\n");
  const std::string token = WriteFile("token", "  s3cret-token\n");
  EXPECT_TRUE(ClientStatus({}).ok());
  EXPECT_TRUE(ClientStatus({"--tls"}).ok());
  EXPECT_TRUE(ClientStatus({"--tls_ca_file=" + pem}).ok());
  EXPECT_TRUE(
      ClientStatus({"--tls_ca_file=" + pem, "--tls_cert_file=" + pem, "--tls_key_file=" + pem})
          .ok());
  EXPECT_TRUE(ClientStatus({"--token=s3cret-token"}).ok());
  EXPECT_TRUE(ClientStatus({"--token_file=" + token, "--tls"}).ok());
  EXPECT_TRUE(ClientStatus({"--tenant=team-a"}).ok());
  // absl reads an empty value of an optional flag as unset: no token is sent (and a server with
  // tokens answers UNAUTHENTICATED).
  EXPECT_TRUE(ClientStatus({"--token="}).ok());
}

TEST(ConnectionFlagsTest, UsageErrorsNameTheFlag) {
  const std::string pem = WriteFile("cert.pem", "-----BEGIN CERTIFICATE-----\n");
  const std::string missing = ::testing::TempDir() + "/connection_flags_test_missing";
  const std::string empty = WriteFile("empty", "");
  const std::string two_tokens = WriteFile("two_tokens", "s3cret-a s3cret-b\n");
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {{"--tls_cert_file=" + pem}, "--tls_key_file: needed with --tls_cert_file"},
           {{"--tls_key_file=" + pem}, "--tls_cert_file: needed with --tls_key_file"},
           {{"--tls_ca_file=" + missing}, "--tls_ca_file: cannot read " + missing},
           {{"--tls_cert_file=" + pem, "--tls_key_file=" + empty}, "--tls_key_file: "},
           {{"--token=s3cret-token", "--token_file=" + pem}, "--token_file: give --token or"},
           {{"--token=s3cret token"}, "--token: a token is printable ASCII"},
           {{"--token_file=" + two_tokens}, "--token_file: a token is printable ASCII"},
           {{"--token_file=" + empty}, "--token_file: "},
       }) {
    absl::Status status = ClientStatus(c.args);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.args[0];
    EXPECT_THAT(status.message(), HasSubstr(c.message));
    EXPECT_THAT(status.message(), Not(HasSubstr("s3cret")));
  }
}

TEST(ConnectionFlagsTest, RunAndSweepTakeTheSecurityFlags) {
  for (Subcommand subcommand : {Subcommand::kRun, Subcommand::kSweep}) {
    EXPECT_TRUE(
        Apply(subcommand, {"--tls", "--tls_ca_file=x", "--token_file=y", "--tenant=t"}).ok());
  }
  ResetFlags();
}

}  // namespace
}  // namespace attnbench::client
