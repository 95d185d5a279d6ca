// spec.kv_compression and spec.kv_spectrum through the Run RPC on cpu_reference: one result per
// method after the original, each with its own timing, work and passing check; PCA ahead of
// mean-pooling on a decaying spectrum; RoPE, GQA and a paged decode cache; the refusals.
#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "server/convert.h"
#include "tests/server/test_util.h"

namespace attnbench::server {
namespace {

using testing::FastMeasurement;
using ::testing::HasSubstr;
using testing::InProcessServer;

InProcessServer* Server() {
  static auto* s = new InProcessServer();
  return s;
}

pb::RunRequest Request(const char* spec) {
  pb::RunRequest request;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(spec, request.mutable_spec()));
  *request.mutable_measurement() = FastMeasurement();
  request.mutable_check()->set_mode(pb::CHECK_MODE_FULL);
  request.set_backend("cpu_reference");
  return request;
}

grpc::Status CallRun(const pb::RunRequest& request, pb::RunResponse* response) {
  grpc::ClientContext context;
  return Server()->stub().Run(&context, request, response);
}

TEST(KvCompressionServiceTest, ReportsEachMethodAfterTheOriginal) {
  const pb::RunRequest request = Request(R"pb(
    batch_size: 1
    seq_len_q: 48
    seq_len_kv: 48
    head_dim_qk: 16
    layout { mha { num_heads: 4 } }
    dtype: DTYPE_FLOAT32
    kv_spectrum { decay: 0.7 }
    kv_compression { target_kv_heads: 2 }
  )pb");
  pb::RunResponse response;
  const grpc::Status status = CallRun(request, &response);
  ASSERT_TRUE(status.ok()) << status.error_code() << ": " << status.error_message();
  const pb::RunResult& r = response.result();
  EXPECT_TRUE(r.correctness().passed());
  EXPECT_EQ(r.timing().count(), 3);
  EXPECT_DOUBLE_EQ(r.spec().kv_spectrum().decay(), 0.7);
  EXPECT_EQ(r.spec().kv_compression().target_kv_heads(), 2);
  ASSERT_EQ(r.kv_compression_size(), 2);
  const pb::KvCompressionResult& pca = r.kv_compression(0);
  const pb::KvCompressionResult& mean = r.kv_compression(1);
  EXPECT_EQ(pca.method(), "pca");
  EXPECT_EQ(mean.method(), "mean_pool");
  for (const pb::KvCompressionResult* c : {&pca, &mean}) {
    SCOPED_TRACE(c->method());
    EXPECT_EQ(c->kv_heads(), 2);
    EXPECT_EQ(c->timing().count(), 3);
    EXPECT_GT(c->timing().median_ms(), 0);
    EXPECT_TRUE(c->correctness().checked());
    EXPECT_TRUE(c->correctness().passed()) << c->correctness().relative_error();
    EXPECT_EQ(c->output_rows_compared(), 4 * 48);
    // The original's attention work on half the K and V bytes.
    EXPECT_EQ(c->work().kept_pairs(), r.work().kept_pairs());
    EXPECT_DOUBLE_EQ(c->work().flops(), r.work().flops());
    EXPECT_EQ(r.work().min_bytes() - c->work().min_bytes(), 4u * 48 * 2 * 16 * 2);
    EXPECT_GT(c->key_error(), 0);
    EXPECT_LT(c->output_error(), 1);
  }
  EXPECT_LT(pca.key_error(), mean.key_error());
  EXPECT_LT(pca.value_error(), mean.value_error());
  EXPECT_LT(pca.output_error(), mean.output_error());
}

TEST(KvCompressionServiceTest, RopeGqaAndAPagedDecodeCache) {
  for (const char* spec : {R"pb(
                             batch_size: 2
                             seq_len_q: 20
                             seq_len_kv: 40
                             head_dim_qk: 8
                             head_dim_v: 4
                             layout { gqa { num_query_heads: 8 num_kv_heads: 4 } }
                             mask { causal {} }
                             rope {}
                             alibi {}
                             softcap { cap: 20 }
                             dtype: DTYPE_FLOAT32
                             kv_spectrum { decay: 0.5 rank: 6 }
                             kv_compression { target_kv_heads: 2 }
                           )pb",
                           R"pb(
                             batch_size: 2
                             seq_len_q: 2
                             seq_len_kv: 40
                             head_dim_qk: 8
                             layout { mha { num_heads: 4 } }
                             rope {}
                             phase: PHASE_DECODE
                             kv_cache { paging { page_size_tokens: 8 } }
                             dtype: DTYPE_BFLOAT16
                             kv_compression { target_kv_heads: 1 }
                           )pb"}) {
    SCOPED_TRACE(spec);
    pb::RunResponse response;
    const grpc::Status status = CallRun(Request(spec), &response);
    ASSERT_TRUE(status.ok()) << status.error_code() << ": " << status.error_message();
    const pb::RunResult& r = response.result();
    ASSERT_EQ(r.kv_compression_size(), 2);
    for (const pb::KvCompressionResult& c : r.kv_compression()) {
      EXPECT_TRUE(c.correctness().passed())
          << c.method() << " " << c.correctness().relative_error();
      EXPECT_GT(c.output_error(), 0);
    }
  }
  // Rank 6 keys in groups of 2 heads of 8 (width 16): the top 8 components hold all of it.
  pb::RunResponse response;
  ASSERT_TRUE(CallRun(Request(R"pb(
                        batch_size: 1
                        seq_len_q: 16
                        seq_len_kv: 16
                        head_dim_qk: 8
                        layout { mha { num_heads: 4 } }
                        dtype: DTYPE_FLOAT32
                        kv_spectrum { decay: 0.5 rank: 6 }
                        kv_compression { target_kv_heads: 2 }
                      )pb"),
                      &response)
                  .ok());
  // K and V of rank 6 over n = 32 columns: each 16-wide group has rank <= 6 <= D.
  EXPECT_LT(response.result().kv_compression(0).key_error(), 1e-6);
  EXPECT_LT(response.result().kv_compression(0).output_error(), 1e-6);
}

TEST(KvCompressionServiceTest, CheckOffStillReportsTheMethodsErrors) {
  pb::RunRequest request = Request(R"pb(
    batch_size: 1
    seq_len_q: 32
    seq_len_kv: 32
    head_dim_qk: 8
    layout { mha { num_heads: 2 } }
    dtype: DTYPE_FLOAT32
    kv_compression { target_kv_heads: 1 }
  )pb");
  request.mutable_check()->set_mode(pb::CHECK_MODE_OFF);
  pb::RunResponse response;
  ASSERT_TRUE(CallRun(request, &response).ok());
  ASSERT_EQ(response.result().kv_compression_size(), 2);
  for (const pb::KvCompressionResult& c : response.result().kv_compression()) {
    EXPECT_FALSE(c.correctness().checked());
    EXPECT_EQ(c.output_rows_compared(), 2 * 32);
    EXPECT_GT(c.output_error(), 0);
  }
}

TEST(KvCompressionServiceTest, Refusals) {
  struct Case {
    const char* spec;
    grpc::StatusCode code;
    const char* message;
  } cases[] = {
      {R"pb(batch_size: 1
            seq_len_q: 8
            seq_len_kv: 8
            head_dim_qk: 8
            layout { mha { num_heads: 4 } }
            dtype: DTYPE_FLOAT32
            kv_compression { target_kv_heads: 3 })pb",
       grpc::StatusCode::INVALID_ARGUMENT,
       "spec.kv_compression.target_kv_heads (3) must be less than the layout's KV heads (4) and "
       "divide them into equal groups"},
      {R"pb(batch_size: 1
            seq_len_q: 8
            seq_len_kv: 8
            head_dim_qk: 8
            layout { mqa { num_heads: 4 } }
            dtype: DTYPE_FLOAT32
            kv_compression { target_kv_heads: 1 })pb",
       grpc::StatusCode::INVALID_ARGUMENT,
       "spec.kv_compression is only valid with spec.layout mha or gqa"},
      {R"pb(batch_size: 1
            seq_len_q: 8
            seq_len_kv: 8
            head_dim_qk: 8
            layout { mha { num_heads: 4 } }
            dtype: DTYPE_FLOAT32
            kv_spectrum { decay: 1.5 })pb",
       grpc::StatusCode::INVALID_ARGUMENT, "spec.kv_spectrum.decay (1.5) must be in (0, 1)"},
      {R"pb(batch_size: 1
            seq_len_q: 8
            seq_len_kv: 8
            head_dim_qk: 128
            layout { mha { num_heads: 16 } }
            dtype: DTYPE_FLOAT32
            kv_compression { target_kv_heads: 1 })pb",
       grpc::StatusCode::RESOURCE_EXHAUSTED,
       "spec.kv_compression.target_kv_heads (1): groups of 16 KV heads of width 128 concatenate "
       "to 2048 columns, over the 1024"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.spec);
    pb::RunResponse response;
    const grpc::Status status = CallRun(Request(c.spec), &response);
    EXPECT_EQ(status.error_code(), c.code) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(c.message));
  }
}

}  // namespace
}  // namespace attnbench::server
