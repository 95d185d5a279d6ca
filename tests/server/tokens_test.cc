// The tokens file parser: the format (fields, comments, default weight, disabled tenants), every
// startup error with its line number, and that no error message ever contains a token.
#include "server/tokens.h"

#include <cstdio>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnbench::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(TokensTest, ParsesEntriesCommentsAndDefaultWeight) {
  absl::StatusOr<TokenTable> table = ParseTokens(
      "# token tenant weight\n"
      "\n"
      "tok-alice-1 alice 2.5\n"
      "  tok-alice-2\talice 2.5   # rotated\n"
      "tok-bob bob\r\n"
      "tok#hash carol 0\n");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->num_tokens(), 4u);
  EXPECT_EQ(table->num_tenants(), 3u);
  std::optional<TenantGrant> alice = table->Find("tok-alice-2");
  ASSERT_TRUE(alice.has_value());
  EXPECT_EQ(alice->tenant, "alice");
  EXPECT_EQ(alice->weight, 2.5);
  EXPECT_FALSE(alice->disabled());
  std::optional<TenantGrant> bob = table->Find("tok-bob");
  ASSERT_TRUE(bob.has_value());
  EXPECT_EQ(bob->tenant, "bob");
  EXPECT_EQ(bob->weight, 1);
  std::optional<TenantGrant> carol = table->Find("tok#hash");
  ASSERT_TRUE(carol.has_value());
  EXPECT_TRUE(carol->disabled());
  EXPECT_FALSE(table->Find("tok-bo").has_value());
  EXPECT_FALSE(table->Find("").has_value());
  EXPECT_FALSE(table->Find("rotated").has_value());
}

struct BadCase {
  std::string name;
  std::string text;
  std::string message;
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

class TokensErrorTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(TokensErrorTest, NamesTheLineNeverTheToken) {
  absl::StatusOr<TokenTable> table = ParseTokens(GetParam().text);
  ASSERT_FALSE(table.ok());
  EXPECT_EQ(table.status().code(), absl::StatusCode::kInvalidArgument);
  const std::string message(table.status().message());
  EXPECT_THAT(message, HasSubstr(GetParam().message));
  EXPECT_THAT(message, Not(HasSubstr("s3cret")));
}

INSTANTIATE_TEST_SUITE_P(
    All, TokensErrorTest,
    ::testing::Values(
        BadCase{"Empty", "# nothing\n\n", "no tokens"},
        BadCase{"TokenOnly", "ok-token a\ns3cret\n", "line 2: expected 'token tenant [weight]'"},
        BadCase{"TooManyFields", "s3cret a 1 extra\n", "line 1: expected"},
        BadCase{"Duplicate", "s3cret a\nother b\ns3cret c\n",
                "line 3: duplicate token (first on line 1)"},
        BadCase{"BadTenant", "s3cret al/ice\n", "line 1: the tenant"},
        BadCase{"LongTenant", "s3cret " + std::string(65, 'a') + "\n", "line 1: the tenant"},
        BadCase{"NegativeWeight", "s3cret a -1\n", "line 1: the weight"},
        BadCase{"WordWeight", "s3cret a heavy\n", "line 1: the weight"},
        BadCase{"InfWeight", "s3cret a inf\n", "line 1: the weight"},
        BadCase{"NanWeight", "s3cret a nan\n", "line 1: the weight"},
        BadCase{"NonAsciiToken", "s3cret\xc3\xa9 a\n", "line 1: the token"},
        BadCase{"WeightConflict", "s3cret a 1\nother a 2\n",
                "line 2: tenant 'a' has weight 2 here but 1 on line 1"}),
    [](const ::testing::TestParamInfo<BadCase>& info) { return info.param.name; });

TEST(TokensTest, LoadFileNamesPathAndLine) {
  const std::string path = ::testing::TempDir() + "/tokens_test_tokens.txt";
  {
    std::ofstream file(path);
    file << "s3cret-one alice\n"
         << "s3cret-one bob\n";
  }
  absl::StatusOr<TokenTable> table = LoadTokensFile(path);
  ASSERT_FALSE(table.ok());
  EXPECT_THAT(table.status().message(), HasSubstr(path + ": line 2: duplicate token"));
  EXPECT_THAT(table.status().message(), Not(HasSubstr("s3cret")));
  {
    std::ofstream file(path);
    file << "s3cret-one alice 3\n";
  }
  table = LoadTokensFile(path);
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->Find("s3cret-one")->weight, 3);
  std::remove(path.c_str());

  table = LoadTokensFile(path);
  ASSERT_FALSE(table.ok());
  EXPECT_THAT(table.status().message(), HasSubstr("cannot read " + path));
}

TEST(TokensTest, TenantNames) {
  EXPECT_TRUE(IsValidTenantName("team-a.prod_1"));
  EXPECT_TRUE(IsValidTenantName(std::string(64, 'x')));
  EXPECT_FALSE(IsValidTenantName(""));
  EXPECT_FALSE(IsValidTenantName(std::string(65, 'x')));
  EXPECT_FALSE(IsValidTenantName("a b"));
  EXPECT_FALSE(IsValidTenantName("a\nb"));
}

}  // namespace
}  // namespace attnbench::server
