#include "server/throughput.h"

#include "gtest/gtest.h"

namespace attnbench::server {
namespace {

TEST(ThroughputTest, RatesFractionsAndRoofline) {
  WorkCounts w;
  w.flops = 3e12;
  w.projection_flops = 1e12;
  w.flops_flash_convention = 5e12;
  w.min_bytes = 2'000'000'000;
  DeviceDescription d;
  d.peak_tflops = 100;
  d.peak_gbps = 1000;
  // Median 0.5 s: (3 + 1) TFLOP / 0.5 s = 8 TFLOP/s; flash (5 + 1) / 0.5 = 12; 2 GB / 0.5 = 4 GB/s.
  const auto t = ComputeThroughput(w, 0.5, d);
  EXPECT_DOUBLE_EQ(t.achieved_tflops(), 8);
  EXPECT_DOUBLE_EQ(t.achieved_tflops_flash_convention(), 12);
  EXPECT_DOUBLE_EQ(t.achieved_gbps(), 4);
  EXPECT_DOUBLE_EQ(t.fraction_of_peak_flops(), 0.08);
  EXPECT_DOUBLE_EQ(t.fraction_of_peak_bandwidth(), 0.004);
  // Intensity 4e12 / 2e9 = 2000 FLOP/B; ridge 1e14 / 1e12 = 100: compute bound.
  EXPECT_DOUBLE_EQ(t.flops_per_byte(), 2000);
  EXPECT_FALSE(t.memory_bound());

  w.flops = 1e9;
  w.projection_flops = 0;
  // Intensity 0.5 FLOP/B: left of the ridge.
  EXPECT_TRUE(ComputeThroughput(w, 0.5, d).memory_bound());
}

TEST(ThroughputTest, UnknownCeilingsAndZeroTime) {
  WorkCounts w;
  w.flops = 1e12;
  w.min_bytes = 1e9;
  const auto t = ComputeThroughput(w, 1.0, DeviceDescription{});
  EXPECT_DOUBLE_EQ(t.achieved_tflops(), 1);
  EXPECT_DOUBLE_EQ(t.fraction_of_peak_flops(), 0);
  EXPECT_FALSE(t.memory_bound());
  const auto z = ComputeThroughput(w, 0.0, DeviceDescription{});
  EXPECT_DOUBLE_EQ(z.achieved_tflops(), 0);
  EXPECT_DOUBLE_EQ(z.achieved_gbps(), 0);
}

}  // namespace
}  // namespace attnbench::server
