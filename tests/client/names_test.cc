// The enum name tables: every name parses to its value and prints back; unknown names list the
// accepted ones.
#include "client/names.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnbench::client {
namespace {

using ::testing::HasSubstr;

TEST(NamesTest, DTypesRoundTrip) {
  for (const char* name : {"fp32", "fp16", "bf16", "fp8"}) {
    absl::StatusOr<v1::DType> dtype = ParseDType(name);
    ASSERT_TRUE(dtype.ok()) << name;
    EXPECT_EQ(DTypeName(*dtype), name);
  }
  EXPECT_EQ(*ParseDType("fp8"), v1::DTYPE_FLOAT8_E4M3);
  EXPECT_EQ(DTypeName(v1::DTYPE_UNSPECIFIED), "unspecified");
  EXPECT_THAT(std::string(ParseDType("FP32").status().message()),
              HasSubstr("unknown dtype 'FP32' (expected fp32|fp16|bf16|fp8)"));
}

TEST(NamesTest, OtherEnums) {
  EXPECT_EQ(*ParsePhase("decode"), v1::PHASE_DECODE);
  EXPECT_EQ(PhaseName(v1::PHASE_BACKWARD), "backward");
  EXPECT_EQ(*ParseScope("layer"), v1::SCOPE_LAYER);
  EXPECT_EQ(ScopeName(v1::SCOPE_CORE), "core");
  EXPECT_EQ(*ParseCacheFormat("int4"), v1::CACHE_FORMAT_INT4);
  EXPECT_EQ(CacheFormatName(v1::CACHE_FORMAT_NATIVE), "native");
  EXPECT_EQ(*ParseCacheMode("cold"), v1::CACHE_MODE_COLD);
  EXPECT_EQ(*ParseCheckMode("full"), v1::CHECK_MODE_FULL);
  EXPECT_EQ(*ParseAlibiSchedule("harmonic"), v1::ALIBI_SCHEDULE_HARMONIC);
  EXPECT_EQ(PhaseNames(), "prefill|decode|backward");
  EXPECT_EQ(CheckModeNames(), "off|auto|full");
  EXPECT_FALSE(ParseCheckMode("").ok());
}

TEST(NamesTest, BackwardTimings) {
  for (const char* name : {"backward_only", "training_step"}) {
    absl::StatusOr<v1::BackwardTiming> timing = ParseBackwardTiming(name);
    ASSERT_TRUE(timing.ok()) << name;
    EXPECT_EQ(BackwardTimingName(*timing), name);
  }
  EXPECT_EQ(*ParseBackwardTiming("training_step"), v1::BACKWARD_TIMING_TRAINING_STEP);
  EXPECT_EQ(BackwardTimingName(v1::BACKWARD_TIMING_UNSPECIFIED), "unspecified");
  EXPECT_EQ(BackwardTimingNames(), "backward_only|training_step");
  EXPECT_EQ(ParseBackwardTiming("forward").status().message(),
            "unknown backward timing 'forward' (expected backward_only|training_step)");
}

}  // namespace
}  // namespace attnbench::client
