// Shared by the non-finite tests of every kernels layer: a problem whose generated inputs come
// back as client tensors (so one element can be spoiled), an element overwritten in a client
// tensor's bytes, and the refusal the spec layer gives for it.
#ifndef ATTNBENCH_TESTS_KERNELS_NON_FINITE_UTIL_H_
#define ATTNBENCH_TESTS_KERNELS_NON_FINITE_UTIL_H_

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/inputs.h"
#include "kernels/spec/problem.h"
#include "kernels/spec/tensors.h"

namespace attnbench::testing {

// The normalized problem with its own generated Q, K and V attached as client tensors: valid and
// finite, so any refusal of a spoiled copy is the spoiled element's doing.
inline Problem WithClientInputs(const Problem& raw) {
  Problem p = NormalizeProblem(raw);
  const absl::StatusOr<AttentionInputs> in = GenerateInputs(p);
  EXPECT_TRUE(in.ok()) << in.status();
  auto host = [](const FloatTensor& t) {
    HostTensor h;
    h.dtype = t.dtype;
    h.shape = t.shape;
    h.data = EncodeTensor(t);
    return h;
  };
  p.query = host(in->query);
  p.key = host(in->key);
  p.value = host(in->value);
  return p;
}

// Row-major index of [b, s, h, d] in a BSHD shape.
inline int64_t FlatIndex(const std::vector<int64_t>& shape, int64_t b, int64_t s, int64_t h,
                         int64_t d) {
  return ((b * shape[1] + s) * shape[2] + h) * shape[3] + d;
}

// Overwrites element `index` of t with `value` encoded in t's dtype.
inline void SetElement(HostTensor& t, int64_t index, float value) {
  std::string bytes;
  AppendEncoded(value, t.dtype, &bytes);
  t.data.replace(static_cast<size_t>(index) * bytes.size(), bytes.size(), bytes);
}

// The client tensor of `name` ("query", "key", "value").
inline HostTensor& ClientTensor(Problem& p, const std::string& name) {
  return name == "query" ? *p.query : name == "key" ? *p.key : *p.value;
}

struct NonFiniteValue {
  const char* kind;  // as the refusal names it
  float value;
};
inline std::vector<NonFiniteValue> NonFiniteValues() {
  return {{"NaN", std::numeric_limits<float>::quiet_NaN()},
          {"+inf", std::numeric_limits<float>::infinity()},
          {"-inf", -std::numeric_limits<float>::infinity()}};
}

// "spec.inputs.key: element 629 [b=1, s=3, h=2, d=5] is +inf; inputs must be finite".
inline std::string RefusalOf(const std::string& name, int64_t index, int64_t b, int64_t s,
                             int64_t h, int64_t d, const std::string& kind) {
  return absl::StrCat("spec.inputs.", name, ": element ", index, " [b=", b, ", s=", s, ", h=", h,
                      ", d=", d, "] is ", kind, "; inputs must be finite");
}

}  // namespace attnbench::testing

#endif  // ATTNBENCH_TESTS_KERNELS_NON_FINITE_UTIL_H_
