#include "server/stats.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace attnbench::server {
namespace {

TEST(StatsTest, FiveSamplesWorkedByHand) {
  // Sorted: 1 2 3 4 5. p10 at rank 0.4 -> 1.4; p90 at rank 3.6 -> 4.6.
  // Squared deviations from 3: 4 1 0 1 4 = 10; sample variance 10 / 4 = 2.5.
  const TimingStats s = ComputeStats({4, 1, 3, 2, 5});
  EXPECT_EQ(s.count, 5);
  EXPECT_DOUBLE_EQ(s.min, 1);
  EXPECT_DOUBLE_EQ(s.max, 5);
  EXPECT_DOUBLE_EQ(s.median, 3);
  EXPECT_DOUBLE_EQ(s.mean, 3);
  EXPECT_DOUBLE_EQ(s.p10, 1.4);
  EXPECT_DOUBLE_EQ(s.p90, 4.6);
  EXPECT_DOUBLE_EQ(s.stdev, std::sqrt(2.5));
  EXPECT_DOUBLE_EQ(RelativeNoise(s), std::sqrt(2.5) / 3);
}

TEST(StatsTest, TwoSamplesInterpolate) {
  // Median halfway; p10 one tenth of the way; variance (25 + 25) / 1.
  const TimingStats s = ComputeStats({20, 10});
  EXPECT_DOUBLE_EQ(s.median, 15);
  EXPECT_DOUBLE_EQ(s.p10, 11);
  EXPECT_DOUBLE_EQ(s.p90, 19);
  EXPECT_DOUBLE_EQ(s.stdev, std::sqrt(50.0));
}

TEST(StatsTest, EvenCountMedianAveragesMiddlePair) {
  const TimingStats s = ComputeStats({1, 2, 3, 10});
  EXPECT_DOUBLE_EQ(s.median, 2.5);
  EXPECT_DOUBLE_EQ(s.mean, 4);
  // p90 at rank 2.7: 3 + 0.7 * 7.
  EXPECT_DOUBLE_EQ(s.p90, 3 + 0.7 * 7);
}

TEST(StatsTest, OneSampleHasNoSpreadAndUndefinedNoise) {
  const TimingStats s = ComputeStats({7});
  EXPECT_EQ(s.count, 1);
  EXPECT_DOUBLE_EQ(s.min, 7);
  EXPECT_DOUBLE_EQ(s.p10, 7);
  EXPECT_DOUBLE_EQ(s.p90, 7);
  EXPECT_DOUBLE_EQ(s.stdev, 0);
  EXPECT_EQ(RelativeNoise(s), std::numeric_limits<double>::infinity());
}

TEST(StatsTest, EmptyIsAllZero) {
  const TimingStats s = ComputeStats({});
  EXPECT_EQ(s.count, 0);
  EXPECT_DOUBLE_EQ(s.median, 0);
  EXPECT_DOUBLE_EQ(Percentile({}, 0.5), 0);
}

TEST(StatsTest, PercentileEndsAndClamp) {
  const std::vector<double> sorted = {1, 2, 4, 8};
  EXPECT_DOUBLE_EQ(Percentile(sorted, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile(sorted, 1), 8);
  EXPECT_DOUBLE_EQ(Percentile(sorted, 2), 8);
  EXPECT_DOUBLE_EQ(Percentile(sorted, 0.5), 3);  // rank 1.5
}

}  // namespace
}  // namespace attnbench::server
