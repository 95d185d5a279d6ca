// The list-valued flag parsers: integers, head maps, blocks and SAQ bands.
#include "client/lists.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/test_util.h"

namespace attnbench::client {
namespace {

using ::attnbench::client::testing::EqualsProto;
using ::attnbench::client::testing::Proto;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ListsTest, IntegerLists) {
  EXPECT_THAT(*ParseInt64List("512,1024,4294967296"), ElementsAre(512, 1024, 4294967296));
  EXPECT_THAT(*ParseInt32List("64"), ElementsAre(64));
  EXPECT_THAT(std::string(ParseInt64List("").status().message()), HasSubstr("empty list"));
  EXPECT_THAT(std::string(ParseInt64List("1,").status().message()), HasSubstr("empty item"));
  EXPECT_THAT(std::string(ParseInt64List("1,2x").status().message()),
              HasSubstr("'2x' is not an integer"));
  EXPECT_FALSE(ParseInt32List("4294967296").ok());
}

TEST(ListsTest, HeadMap) {
  absl::StatusOr<std::vector<v1::HeadLayout::HeadPair>> pairs = ParseHeadMap("0:0,1:0,2:1");
  ASSERT_TRUE(pairs.ok());
  ASSERT_EQ(pairs->size(), 3u);
  EXPECT_THAT((*pairs)[2],
              EqualsProto(Proto<v1::HeadLayout::HeadPair>("query_head: 2 kv_head: 1")));
  EXPECT_FALSE(ParseHeadMap("0:0:0").ok());
  EXPECT_FALSE(ParseHeadMap(":1").ok());
  EXPECT_FALSE(ParseHeadMap("0-1").ok());
}

TEST(ListsTest, Blocks) {
  absl::StatusOr<std::vector<v1::Mask::Block>> blocks = ParseBlocks("3:1");
  ASSERT_TRUE(blocks.ok());
  ASSERT_EQ(blocks->size(), 1u);
  EXPECT_THAT((*blocks)[0], EqualsProto(Proto<v1::Mask::Block>("query_block: 3 kv_block: 1")));
  EXPECT_FALSE(ParseBlocks("3").ok());
}

TEST(ListsTest, SaqBands) {
  absl::StatusOr<std::vector<v1::KvCache::SaqBand>> bands = ParseSaqBands("16:int8,rest:int4");
  ASSERT_TRUE(bands.ok()) << bands.status();
  ASSERT_EQ(bands->size(), 2u);
  EXPECT_THAT((*bands)[0],
              EqualsProto(Proto<v1::KvCache::SaqBand>("num_tokens: 16 format: CACHE_FORMAT_INT8")));
  EXPECT_FALSE((*bands)[1].has_num_tokens());
  EXPECT_THAT(std::string(ParseSaqBands("rest:int4,16:int8").status().message()),
              HasSubstr("only the last"));
  EXPECT_THAT(std::string(ParseSaqBands("16:int3").status().message()),
              HasSubstr("native|int8|int4"));
}

}  // namespace
}  // namespace attnbench::client
