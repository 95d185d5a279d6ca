// The server's TLS flags without certificates: plaintext when none is set, and a startup error
// naming the flag for every bad combination, unreadable file or non-PEM file. Valid certificates
// (TLS and mutual TLS end to end) are in tests/e2e/security_test.py, which makes them with openssl.
#include "server/tls.h"

#include <cstdio>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnbench::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string WriteFile(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/tls_test_" + name;
  std::ofstream(path) << text;
  return path;
}

void ExpectFlagError(const TlsFiles& files, const std::string& flag, const std::string& text) {
  absl::StatusOr<ServerTransport> transport = LoadServerTransport(files);
  ASSERT_FALSE(transport.ok());
  EXPECT_EQ(transport.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(transport.status().message(), HasSubstr("--" + flag + ": "));
  EXPECT_THAT(transport.status().message(), HasSubstr(text));
}

TEST(TlsTest, NoFlagsIsPlaintext) {
  absl::StatusOr<ServerTransport> transport = LoadServerTransport(TlsFiles{});
  ASSERT_TRUE(transport.ok()) << transport.status();
  EXPECT_EQ(transport->security, TransportSecurity::kPlaintext);
  EXPECT_NE(transport->credentials, nullptr);
  EXPECT_STREQ(TransportSecurityName(transport->security), "plaintext");
}

TEST(TlsTest, BadCombinationsNameTheFlag) {
  ExpectFlagError({"cert.pem", "", ""}, "tls_key_file", "needed with --tls_cert_file");
  ExpectFlagError({"", "key.pem", ""}, "tls_cert_file", "needed with --tls_key_file");
  ExpectFlagError({"", "", "ca.pem"}, "tls_client_ca_file", "needs --tls_cert_file");
}

TEST(TlsTest, UnreadableOrNonPemFilesNameTheFlag) {
  const std::string missing = ::testing::TempDir() + "/tls_test_missing.pem";
  ExpectFlagError({missing, missing, ""}, "tls_cert_file", "cannot read " + missing);
  const std::string empty = WriteFile("empty.pem", "");
  ExpectFlagError({empty, empty, ""}, "tls_cert_file", "is empty");
  const std::string junk = WriteFile("junk.pem", "s3cret not a certificate\n");
  ExpectFlagError({junk, junk, ""}, "tls_cert_file", "holds no valid PEM certificate");
  const std::string broken =
      WriteFile("broken.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
  ExpectFlagError({broken, junk, ""}, "tls_cert_file", "holds no valid PEM certificate");

  absl::StatusOr<ServerTransport> transport = LoadServerTransport({junk, junk, ""});
  ASSERT_FALSE(transport.ok());
  EXPECT_THAT(transport.status().message(), Not(HasSubstr("s3cret")));
}

}  // namespace
}  // namespace attnbench::server
