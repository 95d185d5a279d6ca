#include "kernels/spec/dtype.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

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

}  // namespace

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

void AppendEncoded(float x, DType dtype, std::string* out) {
  switch (dtype) {
    case DType::kFloat16:
    case DType::kBFloat16: {
      const uint16_t bits = dtype == DType::kFloat16 ? FloatToHalfBits(x) : FloatToBFloat16Bits(x);
      out->push_back(static_cast<char>(bits & 0xff));
      out->push_back(static_cast<char>(bits >> 8));
      return;
    }
    case DType::kFloat8E4M3:
      out->push_back(static_cast<char>(FloatToFloat8E4M3Bits(x)));
      return;
    case DType::kFloat32:
    case DType::kUnspecified: {
      uint32_t bits;
      std::memcpy(&bits, &x, sizeof(bits));
      for (int k = 0; k < 4; ++k) out->push_back(static_cast<char>((bits >> (8 * k)) & 0xff));
      return;
    }
  }
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
  for (size_t n = 0; n < values.size(); ++n) values[n] = DecodeElement(bytes + n * width, dtype);
  return values;
}

}  // namespace attnbench
