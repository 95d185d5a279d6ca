#include "kernels/spec/finite_inputs.h"

#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/inputs.h"

namespace attnbench {
namespace {

// "[b=0, s=3, h=1, d=7]" for the BSHD tensors clients send; "[0, 3, 1, 7, 2]" for any other rank.
std::string Coordinates(int64_t index, const std::vector<int64_t>& shape) {
  std::vector<int64_t> coords(shape.size());
  for (size_t k = shape.size(); k-- > 0;) {
    if (shape[k] <= 0) return "[]";
    coords[k] = index % shape[k];
    index /= shape[k];
  }
  if (coords.size() != 4) return absl::StrCat("[", absl::StrJoin(coords, ", "), "]");
  return absl::StrCat("[b=", coords[0], ", s=", coords[1], ", h=", coords[2], ", d=", coords[3],
                      "]");
}

const char* NonFiniteKind(float value) {
  if (std::isnan(value)) return "NaN";
  return value > 0 ? "+inf" : "-inf";
}

}  // namespace

absl::Status CheckFiniteClientTensor(const std::string& path, const HostTensor& tensor) {
  const int width = DTypeBytes(tensor.dtype);
  if (width <= 0) return absl::OkStatus();  // an unspecified dtype is refused elsewhere
  const auto* bytes = reinterpret_cast<const unsigned char*>(tensor.data.data());
  const int64_t count = static_cast<int64_t>(tensor.data.size()) / width;
  for (int64_t k = 0; k < count; ++k) {
    const float value = DecodeElement(bytes + k * width, tensor.dtype);
    if (std::isfinite(value)) continue;
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": element ", k, " ", Coordinates(k, tensor.shape), " is ",
                     NonFiniteKind(value), "; inputs must be finite"));
  }
  return absl::OkStatus();
}

absl::Status CheckInputScaleFits(double input_scale, DType dtype) {
  // fp8 values pass through a float before saturating, so the float must not overflow.
  const DType bound_dtype = dtype == DType::kFloat8E4M3 ? DType::kFloat32 : dtype;
  const double largest = LargestFiniteValue(bound_dtype);
  const double z = LargestAbsStandardNormal();
  // z * input_scale rounds to at most `largest` (itself a float), and so does every generated
  // |value| (each below z * input_scale before the same monotone roundings).
  if (z * input_scale <= largest) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat(
      "spec.input_scale (%g) would make generated %s inputs overflow: the generator's largest "
      "|z| (%.6g) times input_scale is %g, above %g, the largest finite %s; input_scale must be "
      "at most about %.6g",
      input_scale, DTypeName(dtype), z, z * input_scale, largest, DTypeName(bound_dtype),
      largest / z));
}

absl::Status CheckSpectrumScaleFits(double input_scale, double decay, int64_t rank, DType dtype) {
  const DType bound_dtype = dtype == DType::kFloat8E4M3 ? DType::kFloat32 : dtype;
  const double largest = LargestFiniteValue(bound_dtype);
  // The relative margin covers the double rounding of the recipe's sum of r products.
  const double bound = SpectrumLargestAbs(decay, rank) * (1 + 1e-9);
  if (bound * input_scale <= largest) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat(
      "spec.input_scale (%g) would make %s K or V drawn with spec.kv_spectrum (decay %g, rank "
      "%d) overflow: their largest |value| is input_scale times %.6g, above %g, the largest "
      "finite %s; input_scale must be at most about %.6g",
      input_scale, DTypeName(dtype), decay, rank, bound, largest, DTypeName(bound_dtype),
      largest / bound));
}

}  // namespace attnbench
