// Run and GetCapabilities on the in-process service with cpu_reference: results that pass the
// float64 check across layouts, masks, dtypes, modifiers, decode and layer scope; counts equal to
// CountWork; the normalized echo; inline outputs; metrics.
#include <cmath>

#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "kernels/reference/check.h"
#include "kernels/spec/counting.h"
#include "kernels/spec/inputs.h"
#include "kernels/spec/shapes.h"
#include "server/convert.h"
#include "tests/server/test_util.h"

namespace attnbench::server {
namespace {

using testing::FastMeasurement;
using ::testing::HasSubstr;
using testing::InProcessServer;
using testing::MetricValue;
using testing::SmallRequest;

struct RunCase {
  const char* name;
  const char* spec;
};

class RunCorrectTest : public ::testing::TestWithParam<RunCase> {
 protected:
  static InProcessServer* server() {
    static auto* s = new InProcessServer();
    return s;
  }
};

TEST_P(RunCorrectTest, PassesCheckAndCountsMatch) {
  pb::RunRequest request;
  ASSERT_TRUE(
      google::protobuf::TextFormat::ParseFromString(GetParam().spec, request.mutable_spec()));
  *request.mutable_measurement() = FastMeasurement();
  request.mutable_check()->set_mode(pb::CHECK_MODE_FULL);
  request.set_backend(GetParam().name[0] == 'a' ? "auto" : "cpu_reference");

  grpc::ClientContext context;
  pb::RunResponse response;
  const grpc::Status status = server()->stub().Run(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_code() << ": " << status.error_message();
  const pb::RunResult& r = response.result();

  const Problem problem = NormalizeProblem(*ProblemFromProto(request.spec()));
  const absl::StatusOr<WorkCounts> work = CountWork(problem);
  ASSERT_TRUE(work.ok());
  EXPECT_EQ(r.work().kept_pairs(), work->kept_pairs);
  EXPECT_DOUBLE_EQ(r.work().flops(), work->flops);
  EXPECT_DOUBLE_EQ(r.work().flops_flash_convention(), work->flops_flash_convention);
  EXPECT_DOUBLE_EQ(r.work().projection_flops(), work->projection_flops);
  EXPECT_EQ(r.work().exponentials(), work->exponentials);
  EXPECT_EQ(r.work().min_bytes(), work->min_bytes);

  EXPECT_TRUE(r.correctness().checked());
  EXPECT_TRUE(r.correctness().passed()) << "relative error " << r.correctness().relative_error()
                                        << " tolerance " << r.correctness().tolerance();
  EXPECT_EQ(r.correctness().rows_checked(), r.correctness().rows_total());
  EXPECT_GT(r.correctness().rows_total(), 0);
  // A quantized cache's decode, and FP8 on drawn inputs, report the kernel's error apart from the
  // quantization's, and cpu_reference, reading what is stored, passes the kernel's own check.
  EXPECT_EQ(r.correctness().has_quantization(), SplitsQuantizationError(problem));
  if (r.correctness().has_quantization()) {
    const pb::QuantizationErrors& q = r.correctness().quantization();
    EXPECT_TRUE(q.kernel_passed()) << q.kernel_relative_error();
    EXPECT_LT(q.kernel_relative_error(), q.kernel_tolerance());
    EXPECT_GT(q.quantization_relative_error(), q.kernel_relative_error());
    EXPECT_LT(q.kernel_tolerance(), r.correctness().tolerance());
  }

  const absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
  ASSERT_TRUE(shapes.ok());
  EXPECT_EQ(r.output_summary().num_elements(), NumElements(shapes->output));
  ASSERT_EQ(r.head_map_size(), shapes->heads.num_output_heads);
  for (int h = 0; h < r.head_map_size(); ++h) {
    EXPECT_EQ(r.head_map(h).query_head(), shapes->heads.map[h].query_head);
    EXPECT_EQ(r.head_map(h).kv_head(), shapes->heads.map[h].kv_head);
  }
  EXPECT_EQ(r.backend(), "cpu_reference");
  EXPECT_EQ(r.device().kind(), "cpu");
  EXPECT_EQ(r.timing().count(), 3);
  EXPECT_EQ(r.timing().samples_ms_size(), 0);
  EXPECT_GT(r.timing().median_ms(), 0);
  EXPECT_LE(r.timing().min_ms(), r.timing().median_ms());
  EXPECT_LE(r.timing().median_ms(), r.timing().max_ms());
  EXPECT_GT(r.throughput().achieved_tflops(), 0);
  EXPECT_GT(r.throughput().achieved_gbps(), 0);
  EXPECT_GE(r.queue_ms(), 0);
  EXPECT_GE(r.wall_ms(), r.queue_ms());
  EXPECT_FALSE(r.has_output());
  if (request.spec().scope() == pb::SCOPE_LAYER) {
    // Each iteration's projections and core lie inside it, so the smallest of each part add up
    // to at most the smallest iteration.
    ASSERT_TRUE(r.has_layer_timing());
    const pb::LayerTiming& layer = r.layer_timing();
    EXPECT_EQ(layer.projections().count(), 3);
    EXPECT_EQ(layer.core().count(), 3);
    EXPECT_GT(layer.projections().min_ms(), 0);
    EXPECT_GT(layer.core().min_ms(), 0);
    EXPECT_LE(layer.projections().min_ms() + layer.core().min_ms(), r.timing().min_ms());
  } else {
    EXPECT_FALSE(r.has_layer_timing());
  }
}

// Client X and weights equal to the generated ones give the generated run's output bit for bit,
// and other client weights a different output that still passes the check.
TEST(RunTest, LayerScopeTakesClientXAndWeights) {
  InProcessServer server;
  pb::RunRequest request;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(
      R"pb(batch_size: 1
           seq_len_q: 9
           seq_len_kv: 9
           head_dim_qk: 8
           layout { gqa { num_query_heads: 2 num_kv_heads: 1 } }
           mask { causal {} }
           scope: SCOPE_LAYER
           d_model: 24
           dtype: DTYPE_BFLOAT16
           seed: 11)pb",
      request.mutable_spec()));
  *request.mutable_measurement() = FastMeasurement(1);
  request.mutable_check()->set_mode(pb::CHECK_MODE_FULL);
  request.set_backend("cpu_reference");
  request.set_return_output(true);
  auto run = [&](const pb::RunRequest& r) {
    grpc::ClientContext context;
    pb::RunResponse response;
    const grpc::Status status = server.stub().Run(&context, r, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_TRUE(response.result().correctness().passed());
    return response.result();
  };
  const pb::RunResult generated = run(request);

  const Problem problem = NormalizeProblem(*ProblemFromProto(request.spec()));
  const absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
  ASSERT_TRUE(shapes.ok());
  auto client = [&](uint32_t id, const Shape& shape, double factor, pb::Tensor* out) {
    out->Clear();
    TensorToProto(GenerateTensor(problem.seed, id, shape, factor, problem.dtype), out);
  };
  pb::RunRequest same = request;
  pb::InputTensors* in = same.mutable_spec()->mutable_inputs();
  client(kTensorX, shapes->x, 1.0, in->mutable_x());
  client(kTensorWq, shapes->w_q, 1.0 / std::sqrt(24.0), in->mutable_w_q());
  client(kTensorWk, shapes->w_k, 1.0 / std::sqrt(24.0), in->mutable_w_k());
  client(kTensorWv, shapes->w_v, 1.0 / std::sqrt(24.0), in->mutable_w_v());
  client(kTensorWo, shapes->w_o, 1.0 / std::sqrt(16.0), in->mutable_w_o());
  const pb::RunResult echoed = run(same);
  EXPECT_EQ(echoed.output().data(), generated.output().data());
  EXPECT_EQ(echoed.spec().inputs().w_o().shape_size(), 2);

  pb::RunRequest other = same;
  client(kTensorWq, shapes->w_q, 0.5, other.mutable_spec()->mutable_inputs()->mutable_w_q());
  EXPECT_NE(run(other).output().data(), generated.output().data());
}

INSTANTIATE_TEST_SUITE_P(
    Variants, RunCorrectTest,
    ::testing::Values(
        RunCase{"mha_none_f32", R"pb(batch_size: 2
                                     seq_len_q: 24
                                     seq_len_kv: 24
                                     head_dim_qk: 16
                                     layout { mha { num_heads: 2 } }
                                     dtype: DTYPE_FLOAT32)pb"},
        RunCase{"gqa_causal_f16", R"pb(batch_size: 1
                                       seq_len_q: 33
                                       seq_len_kv: 33
                                       head_dim_qk: 32
                                       layout { gqa { num_query_heads: 4 num_kv_heads: 2 } }
                                       mask { causal {} }
                                       dtype: DTYPE_FLOAT16
                                       seed: 3)pb"},
        RunCase{"mqa_window_bf16",
                R"pb(batch_size: 1
                     seq_len_q: 40
                     seq_len_kv: 40
                     head_dim_qk: 16
                     layout { mqa { num_heads: 3 } }
                     mask { sliding_window { left_tokens: 8 right_tokens: 0 } }
                     dtype: DTYPE_BFLOAT16)pb"},
        RunCase{"sqa_blocks_bf16",
                R"pb(batch_size: 1
                     seq_len_q: 32
                     seq_len_kv: 32
                     head_dim_qk: 16
                     layout { sqa { baseline_heads: 8 num_query_heads: 4 num_kv_heads: 2 } }
                     mask {
                       block_sparse {
                         query_block_tokens: 16
                         kv_block_tokens: 16
                         blocks { query_block: 0 kv_block: 0 }
                         blocks { query_block: 1 kv_block: 0 }
                         blocks { query_block: 1 kv_block: 1 }
                       }
                     }
                     dtype: DTYPE_BFLOAT16)pb"},
        RunCase{"auto_ssqa_prob_f32",
                R"pb(batch_size: 1
                     seq_len_q: 64
                     seq_len_kv: 64
                     head_dim_qk: 16
                     layout { symmetric_sqa { baseline_heads: 4 } }
                     mask {
                       probabilistic_block_sparse {
                         query_block_tokens: 16
                         kv_block_tokens: 16
                         c_coefficient: 0.5
                         alpha: 1
                         seed: 3
                       }
                     }
                     dtype: DTYPE_FLOAT32)pb"},
        RunCase{"xsqa_modifiers_fp8",
                R"pb(batch_size: 1
                     seq_len_q: 16
                     seq_len_kv: 16
                     head_dim_qk: 16
                     layout { extreme_sqa { baseline_heads: 8 } }
                     mask { causal {} }
                     rope {}
                     alibi {}
                     softcap { cap: 20 }
                     dtype: DTYPE_FLOAT8_E4M3)pb"},
        RunCase{"gqkva_causal_rect_f16",
                R"pb(batch_size: 1
                     seq_len_q: 8
                     seq_len_kv: 40
                     head_dim_qk: 16
                     head_dim_v: 8
                     layout { gqkva { query_groups: 2 kv_groups: 2 } }
                     mask { causal {} }
                     dtype: DTYPE_FLOAT16)pb"},
        RunCase{"explicit_harmonic_f32",
                R"pb(batch_size: 1
                     seq_len_q: 12
                     seq_len_kv: 12
                     head_dim_qk: 8
                     layout {
                       explicit_map {
                         num_query_heads: 2
                         num_kv_heads: 2
                         pairs { query_head: 1 kv_head: 0 }
                         pairs { query_head: 0 kv_head: 1 }
                         pairs { query_head: 1 kv_head: 1 }
                       }
                     }
                     alibi { schedule: ALIBI_SCHEDULE_HARMONIC }
                     dtype: DTYPE_FLOAT32)pb"},
        RunCase{"decode_paged_int8",
                R"pb(batch_size: 2
                     seq_len_q: 1
                     seq_len_kv: 64
                     head_dim_qk: 16
                     layout { gqa { num_query_heads: 4 num_kv_heads: 1 } }
                     phase: PHASE_DECODE
                     dtype: DTYPE_FLOAT16
                     kv_cache {
                       paging { page_size_tokens: 16 }
                       format: CACHE_FORMAT_INT8
                     })pb"},
        RunCase{"layer_scope_f32",
                R"pb(batch_size: 1
                     seq_len_q: 16
                     seq_len_kv: 16
                     head_dim_qk: 8
                     layout { sqa { baseline_heads: 4 num_query_heads: 2 num_kv_heads: 1 } }
                     scope: SCOPE_LAYER
                     d_model: 32
                     dtype: DTYPE_FLOAT32)pb"}),
    [](const ::testing::TestParamInfo<RunCase>& info) { return std::string(info.param.name); });

TEST(RunTest, NormalizedEchoFillsDefaultsAndKeepsClientValues) {
  InProcessServer server;
  pb::RunRequest request = SmallRequest(16, 2, 16);
  request.mutable_spec()->mutable_rope()->set_theta(500000);
  request.mutable_spec()->set_seed(1234);
  request.mutable_spec()->set_input_scale(0.5);
  request.clear_measurement();
  request.mutable_measurement()->set_max_iterations(4);
  request.mutable_measurement()->set_cache_mode(pb::CACHE_MODE_WARM);
  request.mutable_measurement()->set_return_samples(true);
  grpc::ClientContext context;
  pb::RunResponse response;
  ASSERT_TRUE(server.stub().Run(&context, request, &response).ok());
  const pb::AttentionSpec& echo = response.result().spec();
  EXPECT_EQ(echo.head_dim_v(), 16);
  EXPECT_TRUE(echo.has_head_dim_v());
  EXPECT_DOUBLE_EQ(echo.scale(), 0.25);
  EXPECT_EQ(echo.phase(), pb::PHASE_PREFILL);
  EXPECT_EQ(echo.scope(), pb::SCOPE_CORE);
  EXPECT_DOUBLE_EQ(echo.rope().theta(), 500000);
  EXPECT_EQ(echo.rope().rotary_dims(), 16);
  EXPECT_EQ(echo.seed(), 1234u);
  EXPECT_DOUBLE_EQ(echo.input_scale(), 0.5);
  EXPECT_EQ(echo.layout().mha().num_heads(), 2);
  EXPECT_TRUE(echo.mask().has_none());
  const pb::MeasurementSettings& m = response.result().measurement();
  EXPECT_EQ(m.warmup_iterations(), 2);
  EXPECT_EQ(m.min_iterations(), 4);
  EXPECT_EQ(m.max_iterations(), 4);
  EXPECT_DOUBLE_EQ(m.max_duration_seconds(), 2.0);
  EXPECT_EQ(m.cache_mode(), pb::CACHE_MODE_WARM);
  EXPECT_TRUE(m.return_samples());
  EXPECT_EQ(response.result().timing().samples_ms_size(), 4);
}

uint64_t Fnv1a(const std::string& bytes) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 0x100000001b3ull;
  }
  return hash;
}

TEST(RunTest, InlineOutputMatchesSummary) {
  InProcessServer server;
  pb::RunRequest request = SmallRequest(16, 2, 8);
  request.mutable_spec()->set_dtype(pb::DTYPE_BFLOAT16);
  request.set_return_output(true);
  request.mutable_check()->set_mode(pb::CHECK_MODE_OFF);
  grpc::ClientContext context;
  pb::RunResponse response;
  ASSERT_TRUE(server.stub().Run(&context, request, &response).ok());
  const pb::RunResult& r = response.result();
  EXPECT_FALSE(r.correctness().checked());
  ASSERT_TRUE(r.has_output());
  EXPECT_EQ(r.output().dtype(), pb::DTYPE_BFLOAT16);
  EXPECT_THAT(r.output().shape(), ::testing::ElementsAre(1, 16, 2, 8));
  EXPECT_EQ(r.output().data().size(), 16u * 2 * 8 * 2);
  EXPECT_EQ(r.output_summary().checksum(), Fnv1a(r.output().data()));
}

TEST(RunTest, CheckAutoSamplesLargeProblems) {
  InProcessServer server;
  pb::RunRequest request = SmallRequest(64, 2, 8);  // 128 rows
  request.mutable_check()->set_max_sampled_rows(10);
  grpc::ClientContext context;
  pb::RunResponse response;
  ASSERT_TRUE(server.stub().Run(&context, request, &response).ok());
  EXPECT_EQ(response.result().correctness().rows_checked(), 10);
  EXPECT_EQ(response.result().correctness().rows_total(), 128);
  EXPECT_TRUE(response.result().correctness().passed());
}

TEST(RunTest, MetricsCountRequestsAndRuns) {
  InProcessServer server;
  for (int i = 0; i < 2; ++i) {
    grpc::ClientContext context;
    pb::RunResponse response;
    ASSERT_TRUE(server.stub().Run(&context, SmallRequest(8, 1, 8), &response).ok());
  }
  grpc::ClientContext context;
  pb::RunRequest bad = SmallRequest();
  bad.set_backend("nope");
  pb::RunResponse response;
  EXPECT_FALSE(server.stub().Run(&context, bad, &response).ok());
  EXPECT_EQ(MetricValue(server.metrics(), "attnbench_requests_total",
                        {{"method", "Run"}, {"code", "OK"}}),
            2);
  EXPECT_EQ(MetricValue(server.metrics(), "attnbench_requests_total",
                        {{"method", "Run"}, {"code", "INVALID_ARGUMENT"}}),
            1);
  const std::map<std::string, std::string> run{
      {"backend", "cpu_reference"}, {"layout", "mha"}, {"dtype", "float32"}};
  EXPECT_EQ(MetricValue(server.metrics(), "attnbench_runs_total", run), 2);
  EXPECT_EQ(MetricValue(server.metrics(), "attnbench_kernel_time_seconds", run), 2);
  EXPECT_EQ(MetricValue(server.metrics(), "attnbench_queue_wait_seconds", {{"device", "cpu:0"}}),
            2);
  EXPECT_EQ(MetricValue(server.metrics(), "attnbench_tenant_runs_total", {{"tenant", "other"}}), 2);
}

TEST(GetCapabilitiesTest, ListsCpuReferenceAndLimits) {
  ServerOptions options;
  options.max_sweep_points = 77;
  options.max_iterations = 999;
  options.max_inline_output_bytes = 12345;
  options.max_request_bytes = 1ull << 33;
  options.max_duration_seconds = 42;
  options.max_request_flops_cpu = 3e11;
  options.max_request_flops_gpu = 0;
  InProcessServer server(options);
  grpc::ClientContext context;
  pb::GetCapabilitiesResponse caps;
  ASSERT_TRUE(server.stub().GetCapabilities(&context, pb::GetCapabilitiesRequest(), &caps).ok());
  EXPECT_EQ(caps.server_version(), ATTNBENCH_VERSION);
  const pb::BackendCapabilities* cpu = nullptr;
  for (const auto& b : caps.backends()) {
    if (b.name() == "cpu_reference") cpu = &b;
  }
  ASSERT_NE(cpu, nullptr);
  EXPECT_FALSE(cpu->description().empty());
  ASSERT_EQ(cpu->devices_size(), 1);
  EXPECT_EQ(cpu->devices(0).kind(), "cpu");
  EXPECT_GT(cpu->devices(0).compute_units(), 0);
  EXPECT_THAT(cpu->dtypes(), ::testing::Contains(pb::DTYPE_FLOAT32));
  EXPECT_THAT(cpu->phases(), ::testing::Contains(pb::PHASE_PREFILL));
  EXPECT_THAT(cpu->phases(), ::testing::Contains(pb::PHASE_BACKWARD));
  EXPECT_THAT(cpu->layouts(), ::testing::IsSupersetOf({"mha", "gqkva", "explicit_map"}));
  EXPECT_THAT(cpu->masks(), ::testing::Contains("causal"));
  EXPECT_THAT(cpu->modifiers(), ::testing::Contains("rope"));
  EXPECT_FALSE(cpu->limitations().empty());
  EXPECT_EQ(caps.limits().max_sweep_points(), 77);
  EXPECT_EQ(caps.limits().max_iterations(), 999);
  EXPECT_EQ(caps.limits().max_inline_output_bytes(), 12345u);
  EXPECT_EQ(caps.limits().max_request_bytes(), 1ull << 33);
  EXPECT_DOUBLE_EQ(caps.limits().max_duration_seconds(), 42);
  EXPECT_EQ(caps.limits().max_message_bytes(), 64 << 20);
  EXPECT_DOUBLE_EQ(caps.limits().max_request_flops_cpu(), 3e11);
  EXPECT_DOUBLE_EQ(caps.limits().max_request_flops_gpu(), 0);
  EXPECT_EQ(MetricValue(server.metrics(), "attnbench_requests_total",
                        {{"method", "GetCapabilities"}, {"code", "OK"}}),
            1);
}

}  // namespace
}  // namespace attnbench::server
