// Non-finite values through the service: for every backend the server registers (cpu_reference
// everywhere, the CUDA backends on a GPU machine), a client tensor holding NaN or +-inf and an
// input_scale that would overflow the generated inputs are INVALID_ARGUMENT naming the element or
// the field; and finite inputs whose scores overflow in the kernel come back with
// output_summary.non_finite_elements counted and correctness.passed false, even when the
// sampled check never compared the non-finite row.
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/inputs.h"
#include "kernels/spec/tensors.h"
#include "tests/server/test_util.h"

namespace attnbench::server {
namespace {

namespace pb = ::attnbench::v1;

using testing::FastMeasurement;
using ::testing::HasSubstr;
using testing::InProcessServer;

InProcessServer& Server() {
  static auto* server = new InProcessServer();
  return *server;
}

std::vector<pb::BackendCapabilities> RegisteredBackends() {
  grpc::ClientContext context;
  pb::GetCapabilitiesResponse caps;
  const grpc::Status s = Server().stub().GetCapabilities(&context, {}, &caps);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_GT(caps.backends_size(), 0);
  return {caps.backends().begin(), caps.backends().end()};
}

// The first of float32, float16, bfloat16 the backend lists.
pb::DType SomeDTypeOf(const pb::BackendCapabilities& backend) {
  for (pb::DType d : {pb::DTYPE_FLOAT32, pb::DTYPE_FLOAT16, pb::DTYPE_BFLOAT16}) {
    for (int listed : backend.dtypes()) {
      if (listed == d) return d;
    }
  }
  ADD_FAILURE() << backend.name() << " lists none of float32, float16, bfloat16";
  return pb::DTYPE_FLOAT32;
}

DType FromProto(pb::DType d) {
  return d == pb::DTYPE_FLOAT16    ? DType::kFloat16
         : d == pb::DTYPE_BFLOAT16 ? DType::kBFloat16
                                   : DType::kFloat32;
}

// B = 1, S_q = S_kv = 16, MHA 2 heads of dim 64 on `backend`, dtype d, with client Q, K, V
// (generated values, so finite); every CUDA kernel runs this shape.
pb::RunRequest ClientRequest(const std::string& backend, pb::DType d) {
  pb::RunRequest r;
  r.set_backend(backend);
  pb::AttentionSpec& spec = *r.mutable_spec();
  spec.set_batch_size(1);
  spec.set_seq_len_q(16);
  spec.set_seq_len_kv(16);
  spec.set_head_dim_qk(64);
  spec.mutable_layout()->mutable_mha()->set_num_heads(2);
  spec.set_dtype(d);
  spec.set_seed(9);
  uint32_t id = 0;
  for (pb::Tensor* t :
       {spec.mutable_inputs()->mutable_query(), spec.mutable_inputs()->mutable_key(),
        spec.mutable_inputs()->mutable_value()}) {
    t->set_dtype(d);
    for (int64_t dim : {1, 16, 2, 64}) t->add_shape(dim);
    t->set_data(EncodeTensor(GenerateTensor(9, id++, {1, 16, 2, 64}, 1.0, FromProto(d))));
  }
  *r.mutable_measurement() = FastMeasurement(1);
  return r;
}

// Overwrites element `index` of t with value, encoded in t's dtype.
void SetElement(pb::Tensor* t, int64_t index, float value) {
  std::string bytes;
  AppendEncoded(value, FromProto(t->dtype()), &bytes);
  t->mutable_data()->replace(static_cast<size_t>(index) * bytes.size(), bytes.size(), bytes);
}

grpc::Status CallRun(const pb::RunRequest& request, pb::RunResponse* response) {
  grpc::ClientContext context;
  return Server().stub().Run(&context, request, response);
}

TEST(NonFiniteServiceTest, EveryBackendRefusesNonFiniteClientTensors) {
  for (const pb::BackendCapabilities& backend : RegisteredBackends()) {
    const pb::DType d = SomeDTypeOf(backend);
    const pb::RunRequest clean = ClientRequest(backend.name(), d);
    pb::RunResponse response;
    const grpc::Status ok = CallRun(clean, &response);
    ASSERT_TRUE(ok.ok()) << backend.name() << ": " << ok.error_message();
    EXPECT_EQ(response.result().output_summary().non_finite_elements(), 0);

    struct Case {
      pb::Tensor* (pb::InputTensors::*tensor)();
      const char* name;
      float value;
      const char* refusal;
    };
    // [b, s, h, d] = [0, 3, 1, 7] of [1, 16, 2, 64]: index (3 * 2 + 1) * 64 + 7 = 455.
    const Case cases[] = {
        {&pb::InputTensors::mutable_query, "query", std::numeric_limits<float>::quiet_NaN(),
         "spec.inputs.query: element 455 [b=0, s=3, h=1, d=7] is NaN; inputs must be finite"},
        {&pb::InputTensors::mutable_key, "key", std::numeric_limits<float>::infinity(),
         "spec.inputs.key: element 455 [b=0, s=3, h=1, d=7] is +inf; inputs must be finite"},
        {&pb::InputTensors::mutable_value, "value", -std::numeric_limits<float>::infinity(),
         "spec.inputs.value: element 455 [b=0, s=3, h=1, d=7] is -inf; inputs must be finite"},
    };
    for (const Case& c : cases) {
      pb::RunRequest r = clean;
      SetElement((r.mutable_spec()->mutable_inputs()->*c.tensor)(), 455, c.value);
      const grpc::Status s = CallRun(r, &response);
      EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
          << backend.name() << " " << c.name << ": " << s.error_message();
      EXPECT_THAT(s.error_message(), HasSubstr(c.refusal)) << backend.name();
    }
  }
}

TEST(NonFiniteServiceTest, EveryBackendRefusesAnInputScaleThatOverflows) {
  for (const pb::BackendCapabilities& backend : RegisteredBackends()) {
    pb::RunRequest r = ClientRequest(backend.name(), SomeDTypeOf(backend));
    r.mutable_spec()->clear_inputs();         // generated inputs
    r.mutable_spec()->set_input_scale(1000);  // within every dtype's limit (float16: ~9684.6)
    pb::RunResponse response;
    const grpc::Status ok = CallRun(r, &response);
    EXPECT_TRUE(ok.ok()) << backend.name() << ": " << ok.error_message();
    r.mutable_spec()->set_input_scale(1e38);  // past every dtype's limit (at most ~5.03e37)
    const grpc::Status s = CallRun(r, &response);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << backend.name() << ": " << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("spec.input_scale (1e+38) would make generated"));
  }
}

TEST(NonFiniteServiceTest, KernelOverflowIsCountedAndFailsEvenUnsampled) {
  // cpu_reference, float32: query row [0, 5, 1, :] of finite values near FLT_MAX, whose scores
  // overflow float32 in the kernel (the float64 oracle's do not).
  pb::RunRequest r = ClientRequest("cpu_reference", pb::DTYPE_FLOAT32);
  for (int d = 0; d < 64; ++d) {
    SetElement(r.mutable_spec()->mutable_inputs()->mutable_query(), (5 * 2 + 1) * 64 + d, 3e38f);
  }
  r.mutable_check()->set_mode(pb::CHECK_MODE_AUTO);
  r.mutable_check()->set_max_sampled_rows(2);  // of 32 rows
  int unsampled = 0;
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    r.mutable_spec()->set_seed(seed);  // seeds the sample (the inputs are the client's)
    pb::RunResponse response;
    const grpc::Status s = CallRun(r, &response);
    ASSERT_TRUE(s.ok()) << s.error_message();
    const pb::RunResult& result = response.result();
    EXPECT_GT(result.output_summary().non_finite_elements(), 0) << seed;
    EXPECT_LE(result.output_summary().non_finite_elements(), 64) << seed;
    EXPECT_TRUE(result.correctness().checked());
    EXPECT_EQ(result.correctness().rows_checked(), 2);
    EXPECT_FALSE(result.correctness().passed()) << "seed " << seed;
    // A finite relative error: the non-finite row was not among the compared ones.
    unsampled += std::isfinite(result.correctness().relative_error());
  }
  EXPECT_GT(unsampled, 0) << "every sample held the overflowing row; the case proves nothing";
}

}  // namespace
}  // namespace attnbench::server
