#include "kernels/spec/dtype.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "absl/base/casts.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/spec/dtype_generic.h"
#include "kernels/spec/parallel_fill.h"

namespace attnbench {
namespace {

// A binary floating-point format with an implicit leading bit: `mantissa_bits` stored fraction
// bits and `min_exponent` the exponent of the smallest normal (below it values are subnormal).
struct Format {
  int mantissa_bits;
  int min_exponent;
  int exponent_bias;
  double max_finite;
  bool saturate;  // overflow goes to +-max_finite instead of infinity
};

constexpr Format kHalf{10, -14, 15, 65504.0, false};
constexpr Format kBFloat16{7, -126, 127, 3.3895313892515355e38, false};
constexpr Format kFloat8E4M3{3, -6, 7, 448.0, true};

// Rounding is done in double, where every float and every quantum of these formats is exact, so
// nearbyint (round-half-even under the default rounding mode) gives the correctly rounded result.
double RoundToFormat(double x, const Format& f) {
  if (std::isnan(x)) return x;
  if (std::isinf(x)) {
    return f.saturate ? std::copysign(f.max_finite, x) : x;
  }
  if (x == 0) return x;
  int exponent;
  std::frexp(x, &exponent);  // |x| = m * 2^exponent with m in [0.5, 1)
  const int e = std::max(exponent - 1, f.min_exponent);
  const double quantum = std::ldexp(1.0, e - f.mantissa_bits);
  double r = std::nearbyint(x / quantum) * quantum;
  if (std::fabs(r) > f.max_finite) {
    r = f.saturate ? std::copysign(f.max_finite, x) : std::copysign(HUGE_VAL, x);
  }
  if (r == 0) r = std::copysign(0.0, x);
  return r;
}

// Bits of a value already representable in f (finite, or infinite for non-saturating formats).
uint32_t EncodeRounded(double r, const Format& f, int exponent_bits) {
  const uint32_t sign = std::signbit(r) ? 1u : 0u;
  const int total_bits = 1 + exponent_bits + f.mantissa_bits;
  const uint32_t sign_bit = sign << (total_bits - 1);
  const uint32_t max_field = (1u << exponent_bits) - 1;
  if (std::isnan(r)) {
    // e4m3fn has a single NaN pattern (all ones); IEEE-like formats use the quiet NaN.
    if (f.saturate)
      return sign_bit | (max_field << f.mantissa_bits) | ((1u << f.mantissa_bits) - 1);
    return sign_bit | (max_field << f.mantissa_bits) | (1u << (f.mantissa_bits - 1));
  }
  if (std::isinf(r)) return sign_bit | (max_field << f.mantissa_bits);
  const double a = std::fabs(r);
  if (a == 0) return sign_bit;
  int exponent;
  std::frexp(a, &exponent);
  const int e = exponent - 1;
  if (e < f.min_exponent) {  // subnormal: a = mantissa * 2^(min_exponent - mantissa_bits)
    const uint32_t mantissa =
        static_cast<uint32_t>(std::ldexp(a, f.mantissa_bits - f.min_exponent));
    return sign_bit | mantissa;
  }
  const uint32_t field = static_cast<uint32_t>(e + f.exponent_bias);
  const uint32_t mantissa =
      static_cast<uint32_t>(std::ldexp(a, f.mantissa_bits - e)) - (1u << f.mantissa_bits);
  return sign_bit | (field << f.mantissa_bits) | mantissa;
}

double DecodeBits(uint32_t bits, const Format& f, int exponent_bits) {
  const int total_bits = 1 + exponent_bits + f.mantissa_bits;
  const bool negative = (bits >> (total_bits - 1)) & 1u;
  const uint32_t max_field = (1u << exponent_bits) - 1;
  const uint32_t field = (bits >> f.mantissa_bits) & max_field;
  const uint32_t mantissa = bits & ((1u << f.mantissa_bits) - 1);
  double value;
  if (f.saturate && field == max_field && mantissa == (1u << f.mantissa_bits) - 1) {
    value = std::numeric_limits<double>::quiet_NaN();
  } else if (!f.saturate && field == max_field) {
    value = mantissa == 0 ? HUGE_VAL : std::numeric_limits<double>::quiet_NaN();
  } else if (field == 0) {
    value = std::ldexp(static_cast<double>(mantissa), f.min_exponent - f.mantissa_bits);
  } else {
    value = std::ldexp(static_cast<double>(mantissa + (1u << f.mantissa_bits)),
                       static_cast<int>(field) - f.exponent_bias - f.mantissa_bits);
  }
  return negative ? -value : value;
}

// The fast paths below: fp16 and bf16 rounded on the float's bits (generating a long decode cache
// rounds hundreds of millions of elements, and frexp/nearbyint/ldexp per element took most of the
// preparation). dtype_test checks them against the generic functions above on every boundary.

constexpr uint32_t kSignBit = 0x80000000u;
constexpr uint32_t kFloatInf = 0x7f800000u;
constexpr uint32_t kHalfMinNormal = 0x38800000u;  // 2^-14 as float bits
constexpr uint32_t kHalfOverflow = 0x47800000u;   // 2^16: the first float past fp16's range
// At or below 2^-25 (half of fp16's smallest subnormal) everything rounds to zero; 2^-25 itself
// is a tie to the even zero.
constexpr uint32_t kHalfZeroLimit = 0x33000000u;

// The NaN RoundToDType returns, as the generic path returns it: x through double and back.
float SameNaN(float x) { return static_cast<float>(static_cast<double>(x)); }

// |x| (float bits `a`, below 2^-14) in fp16's subnormal quanta of 2^-24, rounded to nearest even:
// 0 .. 1024 (1024 is the smallest normal, 2^-14, where rounding carries into the exponent).
uint32_t HalfSubnormalQuanta(uint32_t a) {
  if (a <= kHalfZeroLimit) return 0;
  // a is a normal float here (2^-25 < |x| < 2^-14): |x| = m * 2^(e - 150), that is m * 2^(e - 126)
  // quanta, with the shift 126 - e between 14 and 24.
  const uint32_t e = a >> 23;
  const uint32_t m = (a & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126 - e;
  const uint32_t q = m >> shift;
  const uint32_t rest = m & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  return q + (rest > half || (rest == half && (q & 1u)) ? 1u : 0u);
}

// x rounded to fp16 (not NaN), as a float.
float RoundToHalfFast(float x) {
  const uint32_t u = absl::bit_cast<uint32_t>(x);
  const uint32_t sign = u & kSignBit;
  const uint32_t a = u ^ sign;
  if (a >= kHalfMinNormal) {
    // 10 of the float's 23 fraction bits stay: round to nearest even at bit 13; a carry moves
    // the exponent up, as it should. Past 65504 (the carry reaching 2^16) is infinity.
    uint32_t r = (a + 0xfffu + ((a >> 13) & 1u)) & ~0x1fffu;
    if (r >= kHalfOverflow) r = kFloatInf;
    return absl::bit_cast<float>(sign | r);
  }
  // Exact: at most 1024 quanta, a power-of-two scale well inside float's normal range.
  const float magnitude = static_cast<float>(HalfSubnormalQuanta(a)) * 0x1p-24f;
  return absl::bit_cast<float>(sign | absl::bit_cast<uint32_t>(magnitude));
}

uint16_t FloatToHalfBitsFast(float x) {
  const uint32_t u = absl::bit_cast<uint32_t>(x);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & ~kSignBit;
  if (a > kFloatInf) return static_cast<uint16_t>(sign | 0x7e00u);  // EncodeRounded's quiet NaN
  if (a >= kHalfOverflow) return static_cast<uint16_t>(sign | 0x7c00u);
  if (a >= kHalfMinNormal) {
    // Round at bit 13 as above, then rebias the exponent from 127 to 15 (112 fields down). A
    // carry to 2^16 lands on 0x7c00, infinity.
    const uint32_t r = a + 0xfffu + ((a >> 13) & 1u) - (112u << 23);
    return static_cast<uint16_t>(sign | (r >> 13));
  }
  return static_cast<uint16_t>(sign | HalfSubnormalQuanta(a));
}

float HalfBitsToFloatFast(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t field = (bits >> 10) & 0x1fu;
  const uint32_t mantissa = bits & 0x3ffu;
  if (field == 0x1f) {
    // DecodeBits gives a positive quiet NaN (payload dropped), negated for a set sign bit.
    return absl::bit_cast<float>(sign | (mantissa == 0 ? kFloatInf : 0x7fc00000u));
  }
  if (field == 0) {
    // Subnormal (or zero): mantissa * 2^-24, exact in float.
    return absl::bit_cast<float>(sign |
                                 absl::bit_cast<uint32_t>(static_cast<float>(mantissa) * 0x1p-24f));
  }
  return absl::bit_cast<float>(sign | ((field + 112u) << 23) | (mantissa << 13));
}

// bf16 is float's top half: round to nearest even at bit 16. A carry out of the largest finite
// value reaches the infinity pattern, and float's subnormals round on the same grid.
uint32_t BFloat16RoundedBits(uint32_t u) { return u + 0x7fffu + ((u >> 16) & 1u); }

float RoundToBFloat16Fast(float x) {
  return absl::bit_cast<float>(BFloat16RoundedBits(absl::bit_cast<uint32_t>(x)) & 0xffff0000u);
}

uint16_t FloatToBFloat16BitsFast(float x) {
  const uint32_t u = absl::bit_cast<uint32_t>(x);
  if ((u & ~kSignBit) > kFloatInf) {
    return static_cast<uint16_t>(((u >> 16) & 0x8000u) | 0x7fc0u);  // EncodeRounded's quiet NaN
  }
  return static_cast<uint16_t>(BFloat16RoundedBits(u) >> 16);
}

}  // namespace

namespace dtype_generic {

float RoundToDType(float x, DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return static_cast<float>(RoundToFormat(x, kHalf));
    case DType::kBFloat16:
      return static_cast<float>(RoundToFormat(x, kBFloat16));
    case DType::kFloat8E4M3:
      return static_cast<float>(RoundToFormat(x, kFloat8E4M3));
    case DType::kFloat32:
    case DType::kUnspecified:
      break;
  }
  return x;
}

uint16_t FloatToHalfBits(float x) {
  return static_cast<uint16_t>(EncodeRounded(RoundToFormat(x, kHalf), kHalf, 5));
}

float HalfBitsToFloat(uint16_t bits) { return static_cast<float>(DecodeBits(bits, kHalf, 5)); }

uint16_t FloatToBFloat16Bits(float x) {
  return static_cast<uint16_t>(EncodeRounded(RoundToFormat(x, kBFloat16), kBFloat16, 8));
}

}  // namespace dtype_generic

float RoundToDType(float x, DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
    case DType::kBFloat16:
      if (std::isnan(x)) return SameNaN(x);
      return dtype == DType::kFloat16 ? RoundToHalfFast(x) : RoundToBFloat16Fast(x);
    case DType::kFloat8E4M3:
      return static_cast<float>(RoundToFormat(x, kFloat8E4M3));
    case DType::kFloat32:
    case DType::kUnspecified:
      break;
  }
  return x;
}

uint16_t FloatToHalfBits(float x) { return FloatToHalfBitsFast(x); }
float HalfBitsToFloat(uint16_t bits) { return HalfBitsToFloatFast(bits); }

uint16_t FloatToBFloat16Bits(float x) { return FloatToBFloat16BitsFast(x); }
float BFloat16BitsToFloat(uint16_t bits) {
  uint32_t word = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &word, sizeof(value));
  return value;
}

uint8_t FloatToFloat8E4M3Bits(float x) {
  return static_cast<uint8_t>(EncodeRounded(RoundToFormat(x, kFloat8E4M3), kFloat8E4M3, 4));
}
float Float8E4M3BitsToFloat(uint8_t bits) {
  return static_cast<float>(DecodeBits(bits, kFloat8E4M3, 4));
}

int EncodeElement(float x, DType dtype, unsigned char* out) {
  switch (dtype) {
    case DType::kFloat16:
    case DType::kBFloat16: {
      const uint16_t bits = dtype == DType::kFloat16 ? FloatToHalfBits(x) : FloatToBFloat16Bits(x);
      out[0] = static_cast<unsigned char>(bits & 0xff);
      out[1] = static_cast<unsigned char>(bits >> 8);
      return 2;
    }
    case DType::kFloat8E4M3:
      out[0] = FloatToFloat8E4M3Bits(x);
      return 1;
    case DType::kFloat32:
    case DType::kUnspecified:
      break;
  }
  const uint32_t bits = absl::bit_cast<uint32_t>(x);
  for (int k = 0; k < 4; ++k) out[k] = static_cast<unsigned char>((bits >> (8 * k)) & 0xff);
  return 4;
}

void AppendEncoded(float x, DType dtype, std::string* out) {
  unsigned char bytes[4];
  const int n = EncodeElement(x, dtype, bytes);
  out->append(reinterpret_cast<const char*>(bytes), static_cast<size_t>(n));
}

float DecodeElement(const unsigned char* p, DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return HalfBitsToFloat(static_cast<uint16_t>(p[0] | (p[1] << 8)));
    case DType::kBFloat16:
      return BFloat16BitsToFloat(static_cast<uint16_t>(p[0] | (p[1] << 8)));
    case DType::kFloat8E4M3:
      return Float8E4M3BitsToFloat(p[0]);
    case DType::kFloat32:
    case DType::kUnspecified:
      break;
  }
  const uint32_t bits = static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
                        (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
  float value;
  std::memcpy(&value, &bits, sizeof(float));
  return value;
}

double LargestFiniteValue(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return kHalf.max_finite;
    case DType::kBFloat16:
      return kBFloat16.max_finite;
    case DType::kFloat8E4M3:
      return kFloat8E4M3.max_finite;
    case DType::kFloat32:
    case DType::kUnspecified:
      break;
  }
  return std::numeric_limits<float>::max();
}

absl::StatusOr<std::vector<float>> DecodeValues(const std::string& data, DType dtype) {
  const int width = DTypeBytes(dtype);
  if (width <= 0) return absl::InvalidArgumentError("cannot decode values of an unspecified dtype");
  if (data.size() % static_cast<size_t>(width) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("data size ", data.size(),
                                                   " is not a multiple of the element width ",
                                                   width, " of ", DTypeName(dtype)));
  }
  const auto* bytes = reinterpret_cast<const unsigned char*>(data.data());
  std::vector<float> values(data.size() / width);
  // A client's KV cache may hold hundreds of millions of elements; each decodes on its own.
  ParallelFill(static_cast<int64_t>(values.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) values[n] = DecodeElement(bytes + n * width, dtype);
  });
  return values;
}

}  // namespace attnbench
