// The compact layout and mask syntax: every form parses to its proto and prints back the same.
#include "client/layout_syntax.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/test_util.h"

namespace attnbench::client {
namespace {

using ::attnbench::client::testing::EqualsProto;
using ::attnbench::client::testing::Proto;
using ::testing::HasSubstr;

struct LayoutCase {
  std::string text;
  std::string proto;
  int output_heads;
};

void PrintTo(const LayoutCase& c, std::ostream* os) { *os << c.text; }

class LayoutSyntaxTest : public ::testing::TestWithParam<LayoutCase> {};

TEST_P(LayoutSyntaxTest, ParsesPrintsAndCountsHeads) {
  const LayoutCase& c = GetParam();
  absl::StatusOr<v1::HeadLayout> layout = ParseLayoutSpec(c.text);
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_THAT(*layout, EqualsProto(Proto<v1::HeadLayout>(c.proto)));
  EXPECT_EQ(LayoutToString(*layout), c.text);
  EXPECT_EQ(OutputHeads(*layout), c.output_heads);
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, LayoutSyntaxTest,
    ::testing::Values(
        LayoutCase{"mha:8", "mha { num_heads: 8 }", 8},
        LayoutCase{"mqa:4", "mqa { num_heads: 4 }", 4},
        LayoutCase{"gqa:8/2", "gqa { num_query_heads: 8 num_kv_heads: 2 }", 8},
        LayoutCase{"sqa:16/8/4", "sqa { baseline_heads: 16 num_query_heads: 8 num_kv_heads: 4 }",
                   8},
        LayoutCase{"ssqa:16", "symmetric_sqa { baseline_heads: 16 }", 8},
        LayoutCase{"xsqa:16", "extreme_sqa { baseline_heads: 16 }", 4},
        LayoutCase{"xsqa:16/2", "extreme_sqa { baseline_heads: 16 num_query_heads: 2 }", 2},
        LayoutCase{"gqkva:2/3", "gqkva { query_groups: 2 kv_groups: 3 }", 6},
        LayoutCase{"explicit:2/1/0-0+1-0+1-0",
                   "explicit_map { num_query_heads: 2 num_kv_heads: 1 "
                   "pairs { query_head: 0 kv_head: 0 } pairs { query_head: 1 kv_head: 0 } "
                   "pairs { query_head: 1 kv_head: 0 } }",
                   3}));

TEST(LayoutSyntaxTest, UnsetLayoutPrintsUnset) {
  EXPECT_EQ(LayoutToString(v1::HeadLayout()), "unset");
  EXPECT_EQ(OutputHeads(v1::HeadLayout()), 0);
}

TEST(LayoutSyntaxTest, RejectsMalformedLayouts) {
  for (const auto& [text, message] : std::vector<std::pair<std::string, std::string>>{
           {"mha", "name:counts"},
           {"mha:", "name:counts"},
           {"moe:4", "unknown layout 'moe'"},
           {"mha:4/2", "needs 1 '/'-separated counts"},
           {"sqa:16/8", "needs 3"},
           {"xsqa:16/2/1", "needs 1 to 2"},
           {"gqa:8/x", "'x' is not a 32-bit integer"},
           {"explicit:2/1", "explicit:Hq/Hkv/q-k+q-k+..."},
           {"explicit:2/1/0:0", "explicit:Hq/Hkv/q-k+q-k+..."},
       }) {
    absl::StatusOr<v1::HeadLayout> layout = ParseLayoutSpec(text);
    ASSERT_FALSE(layout.ok()) << text;
    EXPECT_THAT(std::string(layout.status().message()), HasSubstr(message)) << text;
  }
}

TEST(MaskSyntaxTest, WindowParsesAndPrints) {
  for (const std::string text : {"window:128/0", "window:/0", "window:64/", "window:/"}) {
    absl::StatusOr<v1::Mask> mask = ParseWindowSpec(text);
    ASSERT_TRUE(mask.ok()) << text << ": " << mask.status();
    EXPECT_EQ(MaskToString(*mask), text);
  }
  EXPECT_FALSE(ParseWindowSpec("window:5").ok());
  EXPECT_FALSE(ParseWindowSpec("window:a/0").ok());
  EXPECT_FALSE(ParseWindowSpec("causal").ok());
}

TEST(MaskSyntaxTest, PrintsEveryKind) {
  EXPECT_EQ(MaskToString(v1::Mask()), "none");
  EXPECT_EQ(MaskToString(Proto<v1::Mask>("none {}")), "none");
  EXPECT_EQ(MaskToString(Proto<v1::Mask>("causal {}")), "causal");
  EXPECT_EQ(
      MaskToString(Proto<v1::Mask>("block_sparse { query_block_tokens: 64 kv_block_tokens: 32 }")),
      "block_sparse:64/32");
  EXPECT_EQ(
      MaskToString(Proto<v1::Mask>(
          "block_sparse { query_block_tokens: 64 kv_block_tokens: 64 intersect_causal: true }")),
      "block_sparse:64/64+causal");
  EXPECT_EQ(MaskToString(Proto<v1::Mask>(
                "probabilistic_block_sparse { query_block_tokens: 16 kv_block_tokens: 16 }")),
            "prob_block_sparse:16/16");
}

}  // namespace
}  // namespace attnbench::client
