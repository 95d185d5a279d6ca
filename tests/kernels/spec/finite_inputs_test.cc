// Non-finite values in the spec layer: ValidateProblem refuses client tensors holding NaN or
// +-inf (every bit pattern, every dtype, each of Q, K and V) naming the tensor, the first bad
// element's flat index and BSHD coordinates and its kind; refuses an input_scale whose generated
// values would overflow the dtype; and the output count covers every element as stored.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/inputs.h"
#include "kernels/spec/problem.h"
#include "kernels/spec/tensors.h"
#include "tests/kernels/non_finite_util.h"

namespace attnbench {
namespace {

using testing::ClientTensor;
using testing::FlatIndex;
using testing::NonFiniteValues;
using testing::RefusalOf;
using testing::SetElement;
using testing::WithClientInputs;

// B = 2, S_q = 5, S_kv = 7, GQA 4/2, D_qk = 8, D_v = 6: Q, K and V all have different shapes.
Problem Gqa(DType dtype) {
  Problem p;
  p.batch_size = 2;
  p.seq_len_q = 5;
  p.seq_len_kv = 7;
  p.head_dim_qk = 8;
  p.head_dim_v = 6;
  p.layout.kind = LayoutKind::kGqa;
  p.layout.num_query_heads = 4;
  p.layout.num_kv_heads = 2;
  p.dtype = dtype;
  p.seed = 11;
  return p;
}

struct Spoiled {
  std::string tensor;
  int64_t b, s, h, d;
  int64_t index;  // worked out by hand from Gqa's shapes
};
const Spoiled kSpoiled[] = {
    {"query", 1, 3, 2, 5, 277},  // [2, 5, 4, 8]
    {"key", 1, 6, 1, 7, 223},    // [2, 7, 2, 8]
    {"value", 0, 4, 1, 3, 57},   // [2, 7, 2, 6]
};

TEST(NonFiniteInputsTest, RefusesEachClientTensorNamingTheElement) {
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    const Problem clean = WithClientInputs(Gqa(dtype));
    ASSERT_TRUE(ValidateProblem(clean).ok()) << ValidateProblem(clean);
    for (const Spoiled& e : kSpoiled) {
      for (const auto& [kind, value] : NonFiniteValues()) {
        Problem p = clean;
        HostTensor& t = ClientTensor(p, e.tensor);
        ASSERT_EQ(FlatIndex(t.shape, e.b, e.s, e.h, e.d), e.index);
        SetElement(t, e.index, value);
        const absl::Status s = ValidateProblem(p);
        EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
        EXPECT_EQ(s.message(), RefusalOf(e.tensor, e.index, e.b, e.s, e.h, e.d, kind))
            << DTypeName(dtype);
      }
    }
  }
}

TEST(NonFiniteInputsTest, MessageSpellsOutTheElement) {
  Problem p = WithClientInputs(Gqa(DType::kFloat16));
  SetElement(*p.query, 277, std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(ValidateProblem(p).message(),
            "spec.inputs.query: element 277 [b=1, s=3, h=2, d=5] is NaN; inputs must be finite");
}

TEST(NonFiniteInputsTest, NamesTheFirstBadElementAndTensor) {
  Problem p = WithClientInputs(Gqa(DType::kBFloat16));
  SetElement(*p.key, 223, -std::numeric_limits<float>::infinity());
  SetElement(*p.key, 200, std::numeric_limits<float>::quiet_NaN());
  SetElement(*p.value, 1, std::numeric_limits<float>::infinity());
  EXPECT_EQ(ValidateProblem(p).message(), RefusalOf("key", 200, 1, 5, 1, 0, "NaN"));
  SetElement(*p.query, 0, std::numeric_limits<float>::infinity());
  EXPECT_EQ(ValidateProblem(p).message(), RefusalOf("query", 0, 0, 0, 0, 0, "+inf"));
}

// Writes raw little-endian bits into element 0 of the query.
absl::Status WithQueryBits(DType dtype, uint32_t bits) {
  Problem p = WithClientInputs(Gqa(dtype));
  for (int k = 0; k < DTypeBytes(dtype); ++k) {
    p.query->data[k] = static_cast<char>((bits >> (8 * k)) & 0xff);
  }
  return ValidateProblem(p);
}

TEST(NonFiniteInputsTest, EveryNaNAndInfinityPatternIsCaught) {
  struct Bits {
    DType dtype;
    uint32_t bits;
    const char* kind;  // nullptr: finite, accepted
  };
  const Bits cases[] = {
      {DType::kFloat16, 0x7c00, "+inf"},      {DType::kFloat16, 0xfc00, "-inf"},
      {DType::kFloat16, 0x7c01, "NaN"},                                            // signalling
      {DType::kFloat16, 0xfe00, "NaN"},                                            // negative quiet
      {DType::kFloat16, 0x7fff, "NaN"},       {DType::kFloat16, 0x7bff, nullptr},  // 65504
      {DType::kFloat16, 0xfbff, nullptr},                                          // -65504
      {DType::kFloat16, 0x0001, nullptr},  // smallest subnormal
      {DType::kFloat16, 0x8000, nullptr},  // -0
      {DType::kBFloat16, 0x7f80, "+inf"},     {DType::kBFloat16, 0xff80, "-inf"},
      {DType::kBFloat16, 0x7f81, "NaN"},      {DType::kBFloat16, 0xffc0, "NaN"},
      {DType::kBFloat16, 0x7f7f, nullptr},  // largest finite
      {DType::kFloat32, 0x7f800000, "+inf"},  {DType::kFloat32, 0xff800000, "-inf"},
      {DType::kFloat32, 0x7f800001, "NaN"},   {DType::kFloat32, 0xffc00000, "NaN"},
      {DType::kFloat32, 0x7f7fffff, nullptr},  // FLT_MAX
      {DType::kFloat32, 0x00000001, nullptr},  // smallest subnormal
      {DType::kFloat8E4M3, 0x7f, "NaN"},       // e4m3fn has no infinity; both all-ones are NaN
      {DType::kFloat8E4M3, 0xff, "NaN"},      {DType::kFloat8E4M3, 0x7e, nullptr},  // 448
      {DType::kFloat8E4M3, 0xfe, nullptr},                                          // -448
  };
  for (const Bits& c : cases) {
    const absl::Status s = WithQueryBits(c.dtype, c.bits);
    const std::string context = absl::StrCat(DTypeName(c.dtype), " bits 0x", absl::Hex(c.bits));
    if (c.kind == nullptr) {
      EXPECT_TRUE(s.ok()) << context << ": " << s;
    } else {
      EXPECT_EQ(s.message(), RefusalOf("query", 0, 0, 0, 0, 0, c.kind)) << context;
    }
  }
}

TEST(InputScaleTest, GeneratorBoundIsSqrt66Ln2) {
  EXPECT_DOUBLE_EQ(LargestAbsStandardNormal(), std::sqrt(66 * std::log(2.0)));
  EXPECT_NEAR(LargestAbsStandardNormal(), 6.7637056, 1e-7);
  // No drawn value exceeds it (a million draws reach about 5).
  const FloatTensor t = GenerateTensor(3, kTensorQuery, {1 << 20}, 1.0, DType::kFloat32);
  double largest = 0;
  for (float v : t.values) largest = std::max(largest, std::fabs(static_cast<double>(v)));
  EXPECT_GT(largest, 4.5);
  EXPECT_LE(largest, LargestAbsStandardNormal());
}

Problem Scaled(DType dtype, double input_scale) {
  Problem p = NormalizeProblem(Gqa(dtype));
  p.input_scale = input_scale;
  return p;
}

TEST(InputScaleTest, RefusesAScaleThatOverflowsEachDtype) {
  struct Limit {
    DType dtype;
    double largest;      // the dtype's largest finite value the rule uses
    const char* within;  // how the message names it
  };
  const Limit limits[] = {
      {DType::kFloat16, 65504.0, "the largest finite float16"},
      {DType::kBFloat16, 3.3895313892515355e38, "the largest finite bfloat16"},
      {DType::kFloat32, 3.4028234663852886e38, "the largest finite float32"},
      // fp8 saturates at 448 instead of overflowing, but is drawn through a float.
      {DType::kFloat8E4M3, 3.4028234663852886e38, "the largest finite float32"},
  };
  for (const Limit& l : limits) {
    const double limit = l.largest / LargestAbsStandardNormal();
    const std::string context = DTypeName(l.dtype);
    EXPECT_TRUE(ValidateProblem(Scaled(l.dtype, limit * (1 - 1e-9))).ok()) << context;
    const absl::Status s = ValidateProblem(Scaled(l.dtype, limit * (1 + 1e-9)));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << context;
    EXPECT_EQ(s.message().find("spec.input_scale ("), 0u) << s;
    EXPECT_NE(s.message().find(absl::StrCat("generated ", DTypeName(l.dtype), " inputs overflow")),
              std::string::npos)
        << s;
    EXPECT_NE(s.message().find(l.within), std::string::npos) << s;
    EXPECT_EQ(ValidateProblem(Scaled(l.dtype, 1e300)).code(), absl::StatusCode::kInvalidArgument)
        << context;
  }
  EXPECT_EQ(ValidateProblem(Scaled(DType::kFloat16, 1e5)).message(),
            "spec.input_scale (100000) would make generated float16 inputs overflow: the "
            "generator's largest |z| (6.76371) times input_scale is 676371, above 65504, the "
            "largest finite float16; input_scale must be at most about 9684.63");
}

TEST(InputScaleTest, TheRefusedScalesReallyOverflow) {
  // Just past the limit, the largest |z| rounds to infinity in fp16 and bf16 (the rule is not
  // stricter than the dtype by more than the rounding margin).
  for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    const double z = LargestAbsStandardNormal();
    const double limit = LargestFiniteValue(dtype) / z;
    EXPECT_TRUE(std::isfinite(RoundToDType(static_cast<float>(z * limit), dtype)));
    EXPECT_TRUE(std::isinf(RoundToDType(static_cast<float>(z * limit * 1.0025), dtype)))
        << DTypeName(dtype);
  }
  // And what generation would have produced at a refused fp16 scale: infinities.
  Problem p = Scaled(DType::kFloat16, 20000);
  ASSERT_EQ(ValidateProblem(p).code(), absl::StatusCode::kInvalidArgument);
  const absl::StatusOr<AttentionInputs> in = GenerateInputs(p);
  ASSERT_TRUE(in.ok());
  EXPECT_GT(CountNonFinite(in->query) + CountNonFinite(in->key) + CountNonFinite(in->value), 0);
}

TEST(InputScaleTest, NotCheckedWhenClientTensorsReplaceGeneratedInputs) {
  Problem p = WithClientInputs(Gqa(DType::kFloat16));
  p.input_scale = 1e6;
  EXPECT_TRUE(ValidateProblem(p).ok()) << ValidateProblem(p);
  p.input_scale = std::numeric_limits<double>::infinity();  // still must be finite and > 0
  EXPECT_EQ(ValidateProblem(p).code(), absl::StatusCode::kInvalidArgument);
}

// PHASE_BACKWARD's dO goes through the same refusal as Q, K and V.
Problem WithClientGradOutput(DType dtype) {
  Problem p = Gqa(dtype);
  p.phase = Phase::kBackward;
  p = WithClientInputs(p);
  const absl::StatusOr<AttentionInputs> in = GenerateInputs(p);
  EXPECT_TRUE(in.ok()) << in.status();
  HostTensor h;
  h.dtype = dtype;
  h.shape = in->grad_output.shape;  // [2, 5, 4, 6]
  h.data = EncodeTensor(in->grad_output);
  p.grad_output = h;
  return p;
}

TEST(NonFiniteInputsTest, RefusesANonFiniteGradOutputNamingTheElement) {
  for (DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
    const Problem clean = WithClientGradOutput(dtype);
    ASSERT_TRUE(ValidateProblem(clean).ok()) << ValidateProblem(clean);
    for (const auto& [kind, value] : NonFiniteValues()) {
      Problem p = clean;
      ASSERT_EQ(FlatIndex(p.grad_output->shape, 1, 2, 3, 4), 190);
      SetElement(*p.grad_output, 190, value);
      const absl::Status s = ValidateProblem(p);
      EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
      EXPECT_EQ(s.message(), RefusalOf("grad_output", 190, 1, 2, 3, 4, kind)) << DTypeName(dtype);
    }
  }
}

TEST(InputScaleTest, CheckedWhileDOIsGenerated) {
  // Client Q, K, V but a generated dO: input_scale still scales what is drawn.
  Problem p = Gqa(DType::kFloat16);
  p.phase = Phase::kBackward;
  p = WithClientInputs(p);
  p.input_scale = 1e6;
  EXPECT_NE(ValidateProblem(p).message().find("spec.input_scale"), std::string::npos)
      << ValidateProblem(p);
  // With the client's dO as well, nothing is drawn.
  Problem all_client = WithClientGradOutput(DType::kFloat16);
  all_client.input_scale = 1e6;
  EXPECT_TRUE(ValidateProblem(all_client).ok()) << ValidateProblem(all_client);
}

TEST(CountNonFiniteTest, CountsEveryElementAsStored) {
  FloatTensor t;
  t.dtype = DType::kFloat16;
  t.shape = {7};
  // 70000 is a finite float but infinite in fp16, which is what a client receives.
  t.values = {1.0f,
              std::numeric_limits<float>::quiet_NaN(),
              65504.0f,
              std::numeric_limits<float>::infinity(),
              -std::numeric_limits<float>::infinity(),
              70000.0f,
              -2.0f};
  EXPECT_EQ(CountNonFinite(t), 4);
  EXPECT_EQ(SummarizeTensor(t).non_finite_elements, 4);
  t.dtype = DType::kFloat32;
  EXPECT_EQ(CountNonFinite(t), 3);
  EXPECT_EQ(SummarizeTensor(t).non_finite_elements, 3);
  t.values = {0.0f, -1.0f, 3.0e38f};
  t.shape = {3};
  EXPECT_EQ(CountNonFinite(t), 0);
  EXPECT_EQ(SummarizeTensor(t).non_finite_elements, 0);
}

}  // namespace
}  // namespace attnbench
