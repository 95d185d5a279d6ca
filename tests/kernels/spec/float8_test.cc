// kernels/spec/float8.h: FP8 inputs' scales and quantization (docs/variants.md §1b).
#include "kernels/spec/float8.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/spec/dtype.h"

namespace attnbench {
namespace {

// [1, 2, 3, 2] BSHD: head 0 holds small values, head 1 values up to 1000 (past e4m3's 448).
FloatTensor TwoHeads() {
  FloatTensor t;
  t.shape = {1, 2, 3, 2};
  // Element [0, s, h, d] at index (s * 3 + h) * 2 + d.
  t.values = {0.5f,   -0.25f, 1000.f, -3.f,   0.f, 0.f,  //
              0.125f, 0.75f,  7.f,    -600.f, 0.f, 0.f};
  return t;
}

TEST(Float8Test, DerivedScalesMapEachGroupsLargestValueToTheLargestCode) {
  const FloatTensor per_head = QuantizeFloat8(TwoHeads(), ScaleGranularity::kHead, {});
  EXPECT_EQ(per_head.dtype, DType::kFloat8E4M3);
  ASSERT_EQ(per_head.scales.size(), 3u);
  EXPECT_EQ(per_head.scales[0], 0.75f / 448.0f);
  EXPECT_EQ(per_head.scales[1], 1000.f / 448.0f);
  EXPECT_EQ(per_head.scales[2], 1.0f);   // an all-zero head keeps scale 1
  EXPECT_EQ(per_head.values[7], 448.f);  // 0.75 in head 0
  EXPECT_EQ(per_head.values[2], 448.f);  // 1000 in head 1
  EXPECT_EQ(per_head.values[9], -RoundToDType(600.f / (1000.f / 448.0f), DType::kFloat8E4M3));
  for (size_t k = 0; k < per_head.values.size(); ++k) {
    const float code = per_head.values[k];
    EXPECT_EQ(RoundToDType(code, DType::kFloat8E4M3), code) << k;
  }
  const FloatTensor per_tensor = QuantizeFloat8(TwoHeads(), ScaleGranularity::kTensor, {});
  ASSERT_EQ(per_tensor.scales.size(), 1u);
  EXPECT_EQ(per_tensor.scales[0], 1000.f / 448.0f);
  // Head 0's small values lose everything under the tensor's scale but not under their own.
  EXPECT_NEAR(per_head.values[0] * per_head.scales[0], 0.5, 0.5 * 0.07);
  EXPECT_LT(std::fabs(per_tensor.values[1] * per_tensor.scales[0] + 0.25), 0.25);
}

TEST(Float8Test, GivenScalesQuantizeAndSaturate) {
  const FloatTensor t = QuantizeFloat8(TwoHeads(), ScaleGranularity::kTensor, {0.5f});
  EXPECT_EQ(t.scales, std::vector<float>{0.5f});
  EXPECT_EQ(t.values[0], 1.0f);     // 0.5 / 0.5
  EXPECT_EQ(t.values[2], 448.0f);   // 2000 saturates
  EXPECT_EQ(t.values[9], -448.0f);  // -1200 saturates
  EXPECT_EQ(t.values[8], 14.0f);
}

TEST(Float8Test, ClientCodesTakeTheGivenScalesOrOne) {
  FloatTensor codes = TwoHeads();
  AttachFloat8Scales(ScaleGranularity::kHead, {}, &codes);
  EXPECT_EQ(codes.scales, (std::vector<float>{1.f, 1.f, 1.f}));
  AttachFloat8Scales(ScaleGranularity::kTensor, {}, &codes);
  EXPECT_EQ(codes.scales, std::vector<float>{1.f});
  AttachFloat8Scales(ScaleGranularity::kTensor, {0.25f}, &codes);
  EXPECT_EQ(codes.scales, std::vector<float>{0.25f});
  // What they stand for: each head's codes times its scale.
  codes.scales = {1.f, 2.f, 4.f};
  const std::vector<float> values = DequantizedValues(codes);
  EXPECT_EQ(values[0], 0.5f);
  EXPECT_EQ(values[2], 2000.f);
  EXPECT_EQ(values[9], -1200.f);
}

}  // namespace
}  // namespace attnbench
