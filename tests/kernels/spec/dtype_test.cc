// Rounding to fp16, bf16 and fp8 e4m3 (ties to even, overflow, saturation, subnormals), the
// byte encodings (of large tensors too, encoded and decoded on several threads), the fp16/bf16
// fast paths bit for bit against the generic rounding, and the tensor summary's checksum.
#include "kernels/spec/dtype.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "absl/base/casts.h"
#include "gtest/gtest.h"
#include "kernels/spec/dtype_generic.h"
#include "kernels/spec/tensors.h"

namespace attnbench {
namespace {

const float kInf = std::numeric_limits<float>::infinity();

// Compares every fast fp16/bf16/fp32 function with dtype_generic's on x, bit for bit (NaNs too:
// the fast path must return the very NaN the generic one does). Counts mismatches, reporting the
// first few, so one wrong branch does not print millions of lines.
class FastPathChecker {
 public:
  void Check(float x) {
    ++checked_;
    for (DType dtype : {DType::kFloat16, DType::kBFloat16, DType::kFloat32}) {
      Expect("RoundToDType", dtype, absl::bit_cast<uint32_t>(x),
             absl::bit_cast<uint32_t>(RoundToDType(x, dtype)),
             absl::bit_cast<uint32_t>(dtype_generic::RoundToDType(x, dtype)));
    }
    Expect("FloatToHalfBits", DType::kFloat16, absl::bit_cast<uint32_t>(x), FloatToHalfBits(x),
           dtype_generic::FloatToHalfBits(x));
    Expect("FloatToBFloat16Bits", DType::kBFloat16, absl::bit_cast<uint32_t>(x),
           FloatToBFloat16Bits(x), dtype_generic::FloatToBFloat16Bits(x));
  }
  // x and its float neighbours on either side, in both signs.
  void CheckAround(float x) {
    for (float s : {x, -x}) {
      Check(s);
      Check(std::nextafter(s, kInf));
      Check(std::nextafter(s, -kInf));
    }
  }
  // `input`: the argument's bits (a float's, or the 16-bit pattern decoded).
  void Expect(const char* what, DType dtype, uint32_t input, uint32_t fast, uint32_t generic) {
    if (fast == generic) return;
    if (++mismatches_ <= 20) {
      ADD_FAILURE() << what << "(" << DTypeName(dtype) << ") of bits 0x" << std::hex << input
                    << ": fast 0x" << fast << ", generic 0x" << generic;
    }
  }
  int64_t checked() const { return checked_; }
  int64_t mismatches() const { return mismatches_; }

 private:
  int64_t checked_ = 0;
  int64_t mismatches_ = 0;
};

TEST(DTypeTest, HalfRoundsToNearestEven) {
  EXPECT_EQ(RoundToDType(1.0f + std::ldexp(1.0f, -11), DType::kFloat16), 1.0f);  // tie: even
  EXPECT_EQ(RoundToDType(1.0f + 3 * std::ldexp(1.0f, -11), DType::kFloat16),
            1.0f + std::ldexp(1.0f, -9));  // tie: up to even
  EXPECT_EQ(RoundToDType(1.0f + std::ldexp(1.5f, -11), DType::kFloat16),
            1.0f + std::ldexp(1.0f, -10));  // above the tie
  EXPECT_EQ(RoundToDType(65504.0f, DType::kFloat16), 65504.0f);
  EXPECT_EQ(RoundToDType(65519.0f, DType::kFloat16), 65504.0f);
  EXPECT_EQ(RoundToDType(65520.0f, DType::kFloat16), kInf);  // overflow past the halfway point
  EXPECT_EQ(RoundToDType(-1e6f, DType::kFloat16), -kInf);
  EXPECT_EQ(RoundToDType(std::ldexp(1.0f, -24), DType::kFloat16), std::ldexp(1.0f, -24));
  EXPECT_EQ(RoundToDType(std::ldexp(1.0f, -25), DType::kFloat16), 0.0f);  // tie to zero (even)
  EXPECT_EQ(RoundToDType(std::ldexp(1.5f, -24), DType::kFloat16), std::ldexp(1.0f, -23));
  EXPECT_TRUE(std::signbit(RoundToDType(-std::ldexp(1.0f, -30), DType::kFloat16)));
  EXPECT_TRUE(std::isnan(RoundToDType(std::nanf(""), DType::kFloat16)));
  EXPECT_EQ(FloatToHalfBits(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalfBits(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalfBits(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalfBits(kInf), 0x7c00);
  EXPECT_EQ(FloatToHalfBits(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(FloatToHalfBits(std::nanf("")) & 0x7e00, 0x7e00);
}

TEST(DTypeTest, BFloat16RoundsToNearestEven) {
  EXPECT_EQ(RoundToDType(1.0f + std::ldexp(1.0f, -8), DType::kBFloat16), 1.0f);
  EXPECT_EQ(RoundToDType(1.0f + 3 * std::ldexp(1.0f, -8), DType::kBFloat16),
            1.0f + std::ldexp(1.0f, -6));
  EXPECT_EQ(RoundToDType(3.3895313892515355e38f, DType::kBFloat16), 3.3895313892515355e38f);
  EXPECT_EQ(RoundToDType(std::numeric_limits<float>::max(), DType::kBFloat16), kInf);
  EXPECT_EQ(FloatToBFloat16Bits(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBFloat16Bits(-kInf), 0xff80);
  EXPECT_EQ(FloatToBFloat16Bits(std::nanf("")) & 0x7fc0, 0x7fc0);
  // Subnormals of float stay representable in bf16 when their low bits are zero.
  EXPECT_EQ(RoundToDType(std::ldexp(1.0f, -133), DType::kBFloat16), std::ldexp(1.0f, -133));
}

TEST(DTypeTest, Float8E4M3SaturatesWithoutInfinity) {
  EXPECT_EQ(RoundToDType(448.0f, DType::kFloat8E4M3), 448.0f);
  EXPECT_EQ(RoundToDType(464.0f, DType::kFloat8E4M3), 448.0f);
  EXPECT_EQ(RoundToDType(1e9f, DType::kFloat8E4M3), 448.0f);
  EXPECT_EQ(RoundToDType(-kInf, DType::kFloat8E4M3), -448.0f);
  EXPECT_EQ(RoundToDType(17.0f, DType::kFloat8E4M3), 16.0f);  // tie between 16 and 18: even
  EXPECT_EQ(RoundToDType(19.0f, DType::kFloat8E4M3), 20.0f);  // tie between 18 and 20: even
  EXPECT_EQ(RoundToDType(std::ldexp(1.0f, -9), DType::kFloat8E4M3), std::ldexp(1.0f, -9));
  EXPECT_EQ(RoundToDType(std::ldexp(1.0f, -10), DType::kFloat8E4M3), 0.0f);
  EXPECT_EQ(RoundToDType(std::ldexp(3.0f, -10), DType::kFloat8E4M3), std::ldexp(1.0f, -8));
  EXPECT_TRUE(std::isnan(RoundToDType(std::nanf(""), DType::kFloat8E4M3)));
  EXPECT_EQ(FloatToFloat8E4M3Bits(448.0f), 0x7e);
  EXPECT_EQ(FloatToFloat8E4M3Bits(-448.0f), 0xfe);
  EXPECT_EQ(FloatToFloat8E4M3Bits(1.0f), 0x38);
  EXPECT_EQ(FloatToFloat8E4M3Bits(std::nanf("")), 0x7f);
  EXPECT_EQ(FloatToFloat8E4M3Bits(std::ldexp(1.0f, -9)), 0x01);
  EXPECT_TRUE(std::isnan(Float8E4M3BitsToFloat(0xff)));
  EXPECT_EQ(Float8E4M3BitsToFloat(0x78), 256.0f);  // exponent field 15 is finite in e4m3fn
}

TEST(DTypeTest, EveryCodeRoundTrips) {
  for (int bits = 0; bits < 256; ++bits) {
    const float v = Float8E4M3BitsToFloat(static_cast<uint8_t>(bits));
    if (std::isnan(v)) continue;
    EXPECT_EQ(RoundToDType(v, DType::kFloat8E4M3), v);
    if (v != 0) {
      EXPECT_EQ(FloatToFloat8E4M3Bits(v), bits) << bits;
    }
  }
  for (int bits = 0; bits < 65536; ++bits) {
    const float h = HalfBitsToFloat(static_cast<uint16_t>(bits));
    if (!std::isnan(h)) {
      ASSERT_EQ(FloatToHalfBits(h), bits);
      ASSERT_EQ(RoundToDType(h, DType::kFloat16), h);
    }
    const float b = BFloat16BitsToFloat(static_cast<uint16_t>(bits));
    if (!std::isnan(b)) {
      ASSERT_EQ(FloatToBFloat16Bits(b), bits);
    }
  }
}

// Every fp16 and bf16 value, the midpoint to the next one up (where ties to even decide) and the
// float neighbours of both, in both signs; past the largest finite value the "next" is the power
// of two that overflows. Also every 16-bit pattern decoded, and every pattern (NaNs included) as
// a float input.
TEST(DTypeFastPathTest, MatchesGenericAtEveryBoundary) {
  FastPathChecker checker;
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const double lo = dtype_generic::HalfBitsToFloat(static_cast<uint16_t>(h));
    const double hi =
        h + 1 == 0x7c00 ? 65536.0 : dtype_generic::HalfBitsToFloat(static_cast<uint16_t>(h + 1));
    const double mid = (lo + hi) / 2;
    ASSERT_EQ(static_cast<double>(static_cast<float>(mid)), mid) << h;
    checker.CheckAround(static_cast<float>(lo));
    checker.CheckAround(static_cast<float>(mid));
  }
  for (uint32_t h = 0; h < 0x7f80; ++h) {
    const double lo = BFloat16BitsToFloat(static_cast<uint16_t>(h));
    const double hi =
        h + 1 == 0x7f80 ? std::ldexp(1.0, 128) : BFloat16BitsToFloat(static_cast<uint16_t>(h + 1));
    const double mid = (lo + hi) / 2;
    ASSERT_EQ(static_cast<double>(static_cast<float>(mid)), mid) << h;
    checker.CheckAround(static_cast<float>(lo));
    checker.CheckAround(static_cast<float>(mid));
  }
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    checker.Expect("HalfBitsToFloat", DType::kFloat16, h,
                   absl::bit_cast<uint32_t>(HalfBitsToFloat(bits)),
                   absl::bit_cast<uint32_t>(dtype_generic::HalfBitsToFloat(bits)));
    checker.Check(absl::bit_cast<float>(
        h << 16));  // every bf16 pattern: infinities, NaNs, signaling ones too
    checker.Check(absl::bit_cast<float>(h));  // float subnormals
    checker.Check(HalfBitsToFloat(bits));
  }
  EXPECT_EQ(checker.mismatches(), 0) << "of " << checker.checked() << " inputs";
}

// Random float bit patterns (every exponent equally likely, so subnormals, NaNs and huge values
// come up often) and the special values by name.
TEST(DTypeFastPathTest, MatchesGenericOnRandomBits) {
  FastPathChecker checker;
  const float specials[] = {0.0f,
                            kInf,
                            std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::signaling_NaN(),
                            std::numeric_limits<float>::denorm_min(),
                            std::numeric_limits<float>::min(),
                            std::numeric_limits<float>::max(),
                            65504.0f,
                            65520.0f,
                            std::ldexp(1.0f, -24),
                            std::ldexp(1.0f, -25),
                            std::ldexp(1.0f, -14),
                            3.3895313892515355e38f};
  for (float x : specials) checker.CheckAround(x);
  std::mt19937 rng(20240611);
  for (int k = 0; k < 4'000'000; ++k)
    checker.Check(absl::bit_cast<float>(static_cast<uint32_t>(rng())));
  // Float values near fp16's range, where its rounding has the most cases.
  std::uniform_int_distribution<uint32_t> near_half(0x32000000u, 0x48000000u);
  for (int k = 0; k < 1'000'000; ++k) {
    checker.Check(
        absl::bit_cast<float>(near_half(rng) | (static_cast<uint32_t>(rng()) & 0x80000000u)));
  }
  EXPECT_EQ(checker.mismatches(), 0) << "of " << checker.checked() << " inputs";
}

TEST(DTypeTest, EncodesLittleEndianAndDecodes) {
  std::string bytes;
  AppendEncoded(1.0f, DType::kFloat16, &bytes);
  AppendEncoded(1.0f, DType::kFloat32, &bytes);
  AppendEncoded(-2.0f, DType::kBFloat16, &bytes);
  EXPECT_EQ(bytes, std::string("\x00\x3c\x00\x00\x80\x3f\x00\xc0", 8));
  const absl::StatusOr<std::vector<float>> half =
      DecodeValues(std::string("\x00\x3c\xff\x7b", 4), DType::kFloat16);
  ASSERT_TRUE(half.ok());
  EXPECT_EQ(*half, (std::vector<float>{1.0f, 65504.0f}));
  EXPECT_FALSE(DecodeValues("abc", DType::kFloat16).ok());
  EXPECT_FALSE(DecodeValues("abcd", DType::kUnspecified).ok());
}

// A tensor large enough to be encoded and decoded on several threads: the bytes are those of
// AppendEncoded, element by element in order, and decode back to the rounded values.
TEST(TensorsTest, LargeTensorEncodesAsElementByElement) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 100.0f);
  for (DType dtype : {DType::kFloat16, DType::kBFloat16, DType::kFloat8E4M3, DType::kFloat32}) {
    FloatTensor t;
    t.dtype = dtype;
    t.shape = {1 << 19};
    t.values.resize(1 << 19);
    for (float& v : t.values) v = normal(rng);
    std::string expected;
    for (float v : t.values) AppendEncoded(v, dtype, &expected);
    const std::string encoded = EncodeTensor(t);
    ASSERT_EQ(encoded, expected) << DTypeName(dtype);
    const absl::StatusOr<std::vector<float>> decoded = DecodeValues(encoded, dtype);
    ASSERT_TRUE(decoded.ok());
    ASSERT_EQ(decoded->size(), t.values.size());
    for (size_t k = 0; k < t.values.size(); ++k) {
      ASSERT_EQ((*decoded)[k], RoundToDType(t.values[k], dtype)) << DTypeName(dtype) << " " << k;
    }
  }
}

TEST(TensorsTest, EncodeAndSummarize) {
  FloatTensor t;
  t.dtype = DType::kFloat8E4M3;
  t.shape = {1};
  t.values = {36.0f};  // e4m3 0x61 = 'a'
  EXPECT_EQ(EncodeTensor(t), "a");
  // FNV-1a 64 of "a", from the FNV reference test vectors.
  EXPECT_EQ(SummarizeTensor(t).checksum, 0xaf63dc4c8601ec8cull);

  FloatTensor f;
  f.dtype = DType::kFloat16;
  f.shape = {2, 2};
  f.values = {1.0f, -3.0f, 0.5f, 1.0f + std::ldexp(1.0f, -12)};  // the last rounds to 1
  const OutputSummary s = SummarizeTensor(f);
  EXPECT_EQ(s.num_elements, 4);
  EXPECT_DOUBLE_EQ(s.mean, (1.0 - 3.0 + 0.5 + 1.0) / 4);
  EXPECT_DOUBLE_EQ(s.abs_max, 3.0);
  EXPECT_EQ(EncodeTensor(f).size(), 8u);
  f.values[2] = 0.25f;
  EXPECT_NE(SummarizeTensor(f).checksum, s.checksum);
}

}  // namespace
}  // namespace attnbench
