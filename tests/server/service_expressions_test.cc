// Run with client expressions (spec.score_mod, spec.mask_mod, spec.aux) through the service in
// process: a document mask and a bias table run on cpu_reference and pass the float64 check, the
// counted work is the mask_mod's kept pairs, the spec comes back as sent, and every bad
// expression or aux tensor is INVALID_ARGUMENT naming the field (and the column), before any work.
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/server/test_util.h"

namespace attnbench::server {
namespace {

namespace pb = ::attnbench::v1;

using ::testing::HasSubstr;
using testing::InProcessServer;
using testing::SmallRequest;

InProcessServer& Server() {
  static auto* s = new InProcessServer(ServerOptions{});
  return *s;
}

grpc::Status CallRun(const pb::RunRequest& request, pb::RunResponse* response) {
  grpc::ClientContext context;
  return Server().stub().Run(&context, request, response);
}

void SetAux(pb::NamedTensor* t, const std::string& name, std::vector<int64_t> shape,
            const std::vector<float>& values) {
  t->set_name(name);
  t->mutable_tensor()->set_dtype(pb::DTYPE_FLOAT32);
  for (int64_t d : shape) t->mutable_tensor()->add_shape(d);
  std::string bytes(values.size() * sizeof(float), '\0');
  std::memcpy(bytes.data(), values.data(), bytes.size());
  t->mutable_tensor()->set_data(bytes);
}

// S = 48, 2 heads, D = 16, a document-id tensor of 4 documents and a [2, 8] bias table.
pb::RunRequest DocumentRequest() {
  pb::RunRequest r = SmallRequest(48, 2, 16);
  r.set_backend("cpu_reference");
  r.mutable_spec()->mutable_mask()->mutable_causal();
  r.mutable_spec()->mutable_mask_mod()->set_expression("doc[q] == doc[kv]");
  r.mutable_spec()->mutable_score_mod()->set_expression("s + bias[h, min(max(q - kv, 0), 7)]");
  std::vector<float> doc(48), bias(16);
  for (int j = 0; j < 48; ++j) doc[j] = j < 5 ? 0 : j < 20 ? 1 : j < 33 ? 2 : 3;
  for (int k = 0; k < 16; ++k) bias[k] = 0.1f * (k % 5) - 0.2f;
  SetAux(r.mutable_spec()->add_aux(), "doc", {48}, doc);
  SetAux(r.mutable_spec()->add_aux(), "bias", {2, 8}, bias);
  return r;
}

TEST(ServiceExpressionsTest, RunsCheckedWithTheMaskModsWork) {
  const pb::RunRequest request = DocumentRequest();
  pb::RunResponse response;
  const grpc::Status status = CallRun(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const pb::RunResult& r = response.result();
  EXPECT_TRUE(r.correctness().checked());
  EXPECT_TRUE(r.correctness().passed()) << r.correctness().relative_error();
  // Causal within each document: sum of n (n + 1) / 2 over lengths 5, 15, 13, 15, per head.
  EXPECT_EQ(r.work().kept_pairs(), 2u * (15 + 120 + 91 + 120));
  EXPECT_EQ(r.spec().score_mod().expression(), request.spec().score_mod().expression());
  EXPECT_EQ(r.spec().mask_mod().expression(), request.spec().mask_mod().expression());
  ASSERT_EQ(r.spec().aux_size(), 2);
  EXPECT_EQ(r.spec().aux(1).name(), "bias");
  EXPECT_GT(r.expression_compile_ms(), 0);
  EXPECT_LE(r.expression_compile_ms(), r.preparation_ms());
}

TEST(ServiceExpressionsTest, BadExpressionsAndAuxNameTheField) {
  struct Bad {
    std::function<void(pb::AttentionSpec&)> edit;
    std::string field;
  };
  const std::vector<Bad> bad = {
      {[](pb::AttentionSpec& s) { s.mutable_mask_mod()->set_expression("doc[q] == dock[kv]"); },
       "spec.mask_mod.expression: column 11"},
      {[](pb::AttentionSpec& s) { s.mutable_score_mod()->set_expression("s +"); },
       "spec.score_mod.expression: column"},
      {[](pb::AttentionSpec& s) { s.mutable_score_mod()->set_expression("kv < q"); },
       "spec.score_mod.expression"},
      {[](pb::AttentionSpec& s) { s.mutable_mask_mod()->set_expression("doc[kv + 1] > 0"); },
       "spec.mask_mod.expression"},
      {[](pb::AttentionSpec& s) { s.mutable_score_mod()->set_expression(""); },
       "spec.score_mod.expression is empty"},
      {[](pb::AttentionSpec& s) { s.mutable_aux(0)->set_name("kv"); }, "spec.aux[0].name"},
      {[](pb::AttentionSpec& s) { s.mutable_aux(1)->set_name("doc"); }, "spec.aux[1].name"},
      {[](pb::AttentionSpec& s) {
         s.mutable_aux(0)->mutable_tensor()->add_shape(1);
         s.mutable_aux(0)->mutable_tensor()->add_shape(1);
       },
       "spec.aux[0].tensor.shape has 3 dimensions"},
      {[](pb::AttentionSpec& s) { s.mutable_aux(0)->mutable_tensor()->add_shape(1); },
       "spec.mask_mod.expression: column 1: aux tensor 'doc' has 2 dimensions"},
      {[](pb::AttentionSpec& s) { s.mutable_aux(1)->mutable_tensor()->set_data("abc"); },
       "spec.aux[1].tensor.data"},
      {[](pb::AttentionSpec& s) {
         float nan = std::numeric_limits<float>::quiet_NaN();
         std::string data = s.aux(0).tensor().data();
         std::memcpy(data.data() + 8, &nan, sizeof(float));
         s.mutable_aux(0)->mutable_tensor()->set_data(data);
       },
       "spec.aux[0].tensor"},
      {[](pb::AttentionSpec& s) {
         s.clear_score_mod();
         s.clear_mask_mod();
       },
       "spec.aux"},
  };
  for (size_t k = 0; k < bad.size(); ++k) {
    pb::RunRequest request = DocumentRequest();
    bad[k].edit(*request.mutable_spec());
    pb::RunResponse response;
    const grpc::Status status = CallRun(request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << k << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(bad[k].field)) << k;
  }
}

// The backward runs both expressions on cpu_reference, the score_mod through its derivative, and
// the gradients pass the float64 check.
TEST(ServiceExpressionsTest, BackwardRunsCheckedWithBothExpressions) {
  pb::RunRequest request = DocumentRequest();
  request.mutable_spec()->set_phase(pb::PHASE_BACKWARD);
  pb::RunResponse response;
  const grpc::Status status = CallRun(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const pb::Correctness& c = response.result().correctness();
  EXPECT_TRUE(c.checked());
  EXPECT_TRUE(c.passed()) << c.relative_error();
  ASSERT_EQ(c.tensors_size(), 3);
  EXPECT_EQ(c.tensors(0).name(), "dq");
  EXPECT_EQ(response.result().work().kept_pairs(), 2u * (15 + 120 + 91 + 120));
}

}  // namespace
}  // namespace attnbench::server
