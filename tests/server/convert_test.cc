#include "server/convert.h"

#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace attnbench::server {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using ::testing::HasSubstr;

pb::AttentionSpec Parse(const std::string& text) {
  pb::AttentionSpec spec;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &spec)) << text;
  return spec;
}

// Every field of the spec set, so a field the converter forgets breaks the round trip.
constexpr char kFullSpec[] = R"pb(
  batch_size: 3
  seq_len_q: 5
  seq_len_kv: 70
  head_dim_qk: 64
  head_dim_v: 32
  mask { none {} }
  rope { theta: 500000 rotary_dims: 32 }
  alibi { schedule: ALIBI_SCHEDULE_HARMONIC harmonic_base_slope: 0.5 }
  softcap { cap: 30 }
  scale: 0.125
  dtype: DTYPE_BFLOAT16
  phase: PHASE_DECODE
  scope: SCOPE_LAYER
  d_model: 512
  kv_cache {
    paging {
      page_size_tokens: 16
      page_table: [ 3, 1, 2, 0 ]
    }
    format: CACHE_FORMAT_UNSPECIFIED
    saq_bands { num_tokens: 32 format: CACHE_FORMAT_NATIVE }
    saq_bands { num_tokens: 16 format: CACHE_FORMAT_INT8 }
    saq_bands { format: CACHE_FORMAT_INT4 }
  }
  seed: 18446744073709551615
  input_scale: 0.25
  inputs {
    query {
      dtype: DTYPE_FLOAT32
      shape: [ 1, 2 ]
      data: "abcdefgh"
    }
    key {
      dtype: DTYPE_FLOAT16
      shape: [ 3 ]
      data: "\001\002\003\004\005\006"
    }
    value {
      dtype: DTYPE_FLOAT8_E4M3
      shape: [ 1 ]
      data: "\377"
    }
    grad_output {
      dtype: DTYPE_BFLOAT16
      shape: [ 1, 1, 2 ]
      data: "\x80\x3f\x00\xc0"
    }
  }
)pb";

void ExpectRoundTrip(const pb::AttentionSpec& spec) {
  const absl::StatusOr<Problem> problem = ProblemFromProto(spec);
  ASSERT_TRUE(problem.ok()) << problem.status();
  const pb::AttentionSpec back = ProblemToProto(*problem, /*include_input_data=*/true);
  std::string diff;
  MessageDifferencer differencer;
  differencer.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differencer.Compare(spec, back)) << diff;
}

class LayoutRoundTrip : public ::testing::TestWithParam<std::string> {};

TEST_P(LayoutRoundTrip, EveryLayoutCase) {
  pb::AttentionSpec spec = Parse(kFullSpec);
  pb::HeadLayout layout;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(GetParam(), &layout));
  *spec.mutable_layout() = layout;
  ExpectRoundTrip(spec);
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, LayoutRoundTrip,
    ::testing::Values("mha { num_heads: 8 }", "mqa { num_heads: 4 }",
                      "gqa { num_query_heads: 8 num_kv_heads: 2 }",
                      "sqa { baseline_heads: 16 num_query_heads: 8 num_kv_heads: 4 }",
                      "symmetric_sqa { baseline_heads: 16 }",
                      "extreme_sqa { baseline_heads: 16 num_query_heads: 2 }",
                      "extreme_sqa { baseline_heads: 16 }",
                      "gqkva { query_groups: 3 kv_groups: 2 }",
                      "explicit_map { num_query_heads: 3 num_kv_heads: 2 pairs { query_head: 2 "
                      "kv_head: 1 } pairs { query_head: 0 kv_head: 0 } }"));

class MaskRoundTrip : public ::testing::TestWithParam<std::string> {};

TEST_P(MaskRoundTrip, EveryMaskCase) {
  pb::AttentionSpec spec = Parse(kFullSpec);
  spec.mutable_layout()->mutable_mha()->set_num_heads(2);
  pb::Mask mask;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(GetParam(), &mask));
  *spec.mutable_mask() = mask;
  ExpectRoundTrip(spec);
}

INSTANTIATE_TEST_SUITE_P(
    Masks, MaskRoundTrip,
    ::testing::Values("none {}", "causal {}", "sliding_window {}",
                      "sliding_window { left_tokens: 0 }",
                      "sliding_window { left_tokens: 128 right_tokens: 0 }",
                      "sliding_window { right_tokens: 7 }",
                      "block_sparse { query_block_tokens: 64 kv_block_tokens: 32 blocks { "
                      "query_block: 1 kv_block: 0 } blocks { query_block: 0 kv_block: 0 } "
                      "intersect_causal: true }",
                      "probabilistic_block_sparse { query_block_tokens: 64 kv_block_tokens: 64 "
                      "c_coefficient: 0.5 alpha: 1.5 seed: 99 }"));

TEST(ConvertSpecTest, OptionalFieldsStayUnset) {
  pb::AttentionSpec spec = Parse(R"pb(
    batch_size: 1
    seq_len_q: 4
    seq_len_kv: 4
    head_dim_qk: 8
    layout { extreme_sqa { baseline_heads: 8 } }
    mask { sliding_window { left_tokens: 3 } }
    rope {}
    alibi {}
  )pb");
  const absl::StatusOr<Problem> p = ProblemFromProto(spec);
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->head_dim_v.has_value());
  EXPECT_FALSE(p->scale.has_value());
  EXPECT_FALSE(p->d_model.has_value());
  EXPECT_FALSE(p->input_scale.has_value());
  EXPECT_FALSE(p->layout.extreme_query_heads.has_value());
  EXPECT_EQ(p->mask.left_tokens, 3);
  EXPECT_FALSE(p->mask.right_tokens.has_value());
  EXPECT_TRUE(p->rope.enabled);
  EXPECT_FALSE(p->rope.theta.has_value());
  EXPECT_TRUE(p->alibi.enabled);
  EXPECT_EQ(p->alibi.schedule, AlibiSchedule::kUnspecified);
  EXPECT_FALSE(p->softcap.enabled);
  EXPECT_FALSE(p->kv_cache.paged);
  EXPECT_FALSE(p->query.has_value());
  EXPECT_EQ(p->dtype, DType::kUnspecified);
  EXPECT_EQ(p->phase, Phase::kUnspecified);
  EXPECT_EQ(p->scope, Scope::kUnspecified);
  ExpectRoundTrip(spec);
}

TEST(ConvertSpecTest, KvSpectrumAndCompressionRoundTrip) {
  pb::AttentionSpec spec = Parse(R"pb(
    batch_size: 1
    seq_len_q: 4
    seq_len_kv: 4
    head_dim_qk: 8
    layout { mha { num_heads: 4 } }
    mask { none {} }
    kv_spectrum { decay: 0.75 rank: 5 }
    kv_compression { target_kv_heads: 2 }
  )pb");
  absl::StatusOr<Problem> p = ProblemFromProto(spec);
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->kv_spectrum.enabled);
  EXPECT_EQ(p->kv_spectrum.decay, 0.75);
  EXPECT_EQ(p->kv_spectrum.rank, 5);
  EXPECT_TRUE(p->kv_compression.enabled);
  EXPECT_EQ(p->kv_compression.target_kv_heads, 2);
  ExpectRoundTrip(spec);
  // Present but empty stays present (and then fails validation, naming the field).
  spec.mutable_kv_spectrum()->clear_rank();
  spec.mutable_kv_compression()->clear_target_kv_heads();
  p = ProblemFromProto(spec);
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->kv_spectrum.rank.has_value());
  EXPECT_TRUE(p->kv_compression.enabled);
  ExpectRoundTrip(spec);
  spec.clear_kv_spectrum();
  spec.clear_kv_compression();
  p = ProblemFromProto(spec);
  EXPECT_FALSE(p->kv_spectrum.enabled);
  EXPECT_FALSE(p->kv_compression.enabled);
}

TEST(ConvertSpecTest, EmptySpecIsUnspecifiedEverywhere) {
  const absl::StatusOr<Problem> p = ProblemFromProto(pb::AttentionSpec());
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->layout.kind, LayoutKind::kUnspecified);
  EXPECT_EQ(p->mask.kind, MaskKind::kNone);
  EXPECT_EQ(p->kv_cache.format, CacheFormat::kUnspecified);
  const pb::AttentionSpec back = ProblemToProto(*p);
  EXPECT_EQ(back.layout().layout_case(), pb::HeadLayout::LAYOUT_NOT_SET);
  EXPECT_TRUE(back.mask().has_none());
  EXPECT_FALSE(back.has_kv_cache());
  EXPECT_EQ(back.dtype(), pb::DTYPE_UNSPECIFIED);
}

TEST(ConvertSpecTest, EchoDropsInputBytesButKeepsShape) {
  const absl::StatusOr<Problem> p = ProblemFromProto(Parse(kFullSpec));
  ASSERT_TRUE(p.ok());
  const pb::AttentionSpec echo = ProblemToProto(*p);
  EXPECT_TRUE(echo.inputs().query().data().empty());
  EXPECT_EQ(echo.inputs().query().shape_size(), 2);
  EXPECT_EQ(echo.inputs().key().dtype(), pb::DTYPE_FLOAT16);
  EXPECT_TRUE(echo.inputs().grad_output().data().empty());
  EXPECT_THAT(echo.inputs().grad_output().shape(), ::testing::ElementsAre(1, 1, 2));
  EXPECT_EQ(echo.inputs().grad_output().dtype(), pb::DTYPE_BFLOAT16);
}

// dO alone (generated Q, K, V) reaches Problem.grad_output byte for byte, in its own dtype, and
// comes back in the echo without the others appearing; no dO leaves grad_output unset.
TEST(ConvertSpecTest, GradOutputAloneCrossesBothWays) {
  const pb::AttentionSpec spec = Parse(R"pb(
    phase: PHASE_BACKWARD
    inputs {
      grad_output {
        dtype: DTYPE_FLOAT32
        shape: [ 1, 2, 1, 1 ]
        data: "\x00\x00\x80\x3f\x00\x00\x00\xc0"
      }
    }
  )pb");
  const absl::StatusOr<Problem> p = ProblemFromProto(spec);
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_TRUE(p->grad_output.has_value());
  EXPECT_EQ(p->grad_output->dtype, DType::kFloat32);
  EXPECT_THAT(p->grad_output->shape, ::testing::ElementsAre(1, 2, 1, 1));
  EXPECT_EQ(p->grad_output->data, std::string("\x00\x00\x80\x3f\x00\x00\x00\xc0", 8));
  EXPECT_FALSE(p->query.has_value() || p->key.has_value() || p->value.has_value());
  EXPECT_FALSE(p->training_step);  // a measurement setting, not part of the spec
  const pb::AttentionSpec echo = ProblemToProto(*p);
  EXPECT_TRUE(echo.inputs().has_grad_output());
  EXPECT_FALSE(echo.inputs().has_query() || echo.inputs().has_key() || echo.inputs().has_value());
  EXPECT_TRUE(echo.inputs().grad_output().data().empty());
  EXPECT_EQ(ProblemToProto(*p, /*include_input_data=*/true).inputs().grad_output().data(),
            spec.inputs().grad_output().data());

  const absl::StatusOr<Problem> none = ProblemFromProto(Parse("phase: PHASE_BACKWARD"));
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->grad_output.has_value());
  EXPECT_FALSE(ProblemToProto(*none).has_inputs());
}

TEST(ConvertSpecTest, UnknownEnumValuesNamed) {
  const std::pair<const char*, const char*> cases[] = {
      {"dtype: 99", "spec.dtype"},
      {"phase: 9", "spec.phase"},
      {"scope: 7", "spec.scope"},
      {"alibi { schedule: 5 }", "spec.alibi.schedule"},
      {"kv_cache { format: 8 }", "spec.kv_cache.format"},
      {"kv_cache { saq_bands {} saq_bands { format: 8 } }", "spec.kv_cache.saq_bands[1].format"},
      {"inputs { key { dtype: 42 } }", "spec.inputs.key.dtype"},
      {"inputs { grad_output { dtype: 17 } }", "spec.inputs.grad_output.dtype: unknown enum"},
  };
  for (const auto& [text, field] : cases) {
    const absl::StatusOr<Problem> p = ProblemFromProto(Parse(text));
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(std::string(p.status().message()), HasSubstr(field)) << text;
  }
}

TEST(ConvertEnumTest, EveryValueBothWays) {
  for (int v = 0; v <= 4; ++v) {
    EXPECT_EQ(DTypeToProto(*DTypeFromProto(v, "x")), v);
  }
  for (int v = 0; v <= 3; ++v) {
    EXPECT_EQ(PhaseToProto(*PhaseFromProto(v, "x")), v);
    EXPECT_EQ(CacheFormatToProto(*CacheFormatFromProto(v, "x")), v);
  }
  for (int v = 0; v <= 2; ++v) {
    EXPECT_EQ(ScopeToProto(*ScopeFromProto(v, "x")), v);
    EXPECT_EQ(AlibiScheduleToProto(*AlibiScheduleFromProto(v, "x")), v);
  }
  EXPECT_FALSE(DTypeFromProto(-1, "x").ok());
}

TEST(ConvertResultsTest, FieldByField) {
  WorkCounts w{10, 2.5, 3.5, 4.5, 11, 12};
  pb::WorkCounts pw;
  WorkCountsToProto(w, &pw);
  EXPECT_EQ(pw.kept_pairs(), 10u);
  EXPECT_EQ(pw.flops(), 2.5);
  EXPECT_EQ(pw.flops_flash_convention(), 3.5);
  EXPECT_EQ(pw.projection_flops(), 4.5);
  EXPECT_EQ(pw.exponentials(), 11u);
  EXPECT_EQ(pw.min_bytes(), 12u);

  CorrectnessReport r{5, 9, 0.1, 0.01, 0.02, true};
  pb::Correctness pc;
  CorrectnessToProto(r, &pc);
  EXPECT_TRUE(pc.checked());
  EXPECT_EQ(pc.rows_checked(), 5);
  EXPECT_EQ(pc.rows_total(), 9);
  EXPECT_EQ(pc.max_abs_error(), 0.1);
  EXPECT_EQ(pc.relative_error(), 0.01);
  EXPECT_EQ(pc.tolerance(), 0.02);
  EXPECT_TRUE(pc.passed());

  EXPECT_EQ(pc.tensors_size(), 0);  // none reported, none invented

  OutputSummary s{0xfeedface12345678ull, 0.5, 3.0, 77, 4};
  pb::OutputSummary ps;
  OutputSummaryToProto(s, &ps);
  EXPECT_EQ(ps.checksum(), 0xfeedface12345678ull);
  EXPECT_EQ(ps.mean(), 0.5);
  EXPECT_EQ(ps.abs_max(), 3.0);
  EXPECT_EQ(ps.num_elements(), 77);
  EXPECT_EQ(ps.non_finite_elements(), 4);

  DeviceDescription d{"H100", "cuda", 1, 132, 80ull << 30, "9.0", 700, 3000};
  pb::DeviceInfo pd;
  DeviceToProto(d, &pd);
  EXPECT_EQ(pd.name(), "H100");
  EXPECT_EQ(pd.kind(), "cuda");
  EXPECT_EQ(pd.index(), 1);
  EXPECT_EQ(pd.compute_units(), 132);
  EXPECT_EQ(pd.memory_bytes(), 80ull << 30);
  EXPECT_EQ(pd.compute_capability(), "9.0");
  EXPECT_EQ(pd.peak_tflops(), 700);
  EXPECT_EQ(pd.peak_gbps(), 3000);

  BackendSupport b;
  b.dtypes = {DType::kFloat16};
  b.phases = {Phase::kDecode};
  b.scopes = {Scope::kLayer};
  b.layouts = {LayoutKind::kGqkva, LayoutKind::kExplicit};
  b.masks = {MaskKind::kProbabilisticBlockSparse};
  b.modifiers = {Modifier::kRope};
  b.cache_formats = {CacheFormat::kInt4};
  b.paged_kv_cache = true;
  b.head_dims = {64, 128};
  b.limitations = {"no fp8"};
  KernelSupport k;
  k.name = "fast";
  k.compute_capabilities = {"9.0"};
  k.dtypes = {DType::kBFloat16};
  k.phases = {Phase::kPrefill};
  k.masks = {MaskKind::kCausal};
  k.modifiers = {Modifier::kSoftcap};
  k.head_dims = {{192, 128}};
  k.requirements = {"aligned"};
  b.kernels = {k};
  pb::BackendCapabilities pcaps;
  SupportToProto(b, &pcaps);
  ASSERT_EQ(pcaps.kernels_size(), 1);
  const pb::KernelSupport& pk = pcaps.kernels(0);
  EXPECT_EQ(pk.name(), "fast");
  EXPECT_THAT(pk.compute_capabilities(), ::testing::ElementsAre("9.0"));
  EXPECT_THAT(pk.dtypes(), ::testing::ElementsAre(pb::DTYPE_BFLOAT16));
  EXPECT_THAT(pk.phases(), ::testing::ElementsAre(pb::PHASE_PREFILL));
  EXPECT_THAT(pk.masks(), ::testing::ElementsAre("causal"));
  EXPECT_THAT(pk.modifiers(), ::testing::ElementsAre("softcap"));
  ASSERT_EQ(pk.head_dims_size(), 1);
  EXPECT_EQ(pk.head_dims(0).qk(), 192);
  EXPECT_EQ(pk.head_dims(0).v(), 128);
  EXPECT_THAT(pk.requirements(), ::testing::ElementsAre("aligned"));
  EXPECT_THAT(pcaps.dtypes(), ::testing::ElementsAre(pb::DTYPE_FLOAT16));
  EXPECT_THAT(pcaps.phases(), ::testing::ElementsAre(pb::PHASE_DECODE));
  EXPECT_THAT(pcaps.scopes(), ::testing::ElementsAre(pb::SCOPE_LAYER));
  EXPECT_THAT(pcaps.layouts(), ::testing::ElementsAre("gqkva", "explicit_map"));
  EXPECT_THAT(pcaps.masks(), ::testing::ElementsAre("probabilistic_block_sparse"));
  EXPECT_THAT(pcaps.modifiers(), ::testing::ElementsAre("rope"));
  EXPECT_THAT(pcaps.cache_formats(), ::testing::ElementsAre(pb::CACHE_FORMAT_INT4));
  EXPECT_TRUE(pcaps.paged_kv_cache());
  EXPECT_THAT(pcaps.head_dims(), ::testing::ElementsAre(64, 128));
  EXPECT_THAT(pcaps.limitations(), ::testing::ElementsAre("no fp8"));

  pb::RunResult result;
  HeadMapToProto({{0, 0}, {3, 1}}, result.mutable_head_map());
  ASSERT_EQ(result.head_map_size(), 2);
  EXPECT_EQ(result.head_map(1).query_head(), 3);
  EXPECT_EQ(result.head_map(1).kv_head(), 1);

  TimingStats t{3, 1, 1.2, 2, 2, 2.8, 3, 1};
  pb::TimingStats pt;
  TimingToProto(t, {1, 2, 3}, false, &pt);
  EXPECT_EQ(pt.count(), 3);
  EXPECT_EQ(pt.p10_ms(), 1.2);
  EXPECT_EQ(pt.p90_ms(), 2.8);
  EXPECT_EQ(pt.stdev_ms(), 1);
  EXPECT_EQ(pt.samples_ms_size(), 0);
  TimingToProto(t, {1, 2, 3}, true, &pt);
  EXPECT_THAT(pt.samples_ms(), ::testing::ElementsAre(1, 2, 3));
}

// Every tensor of the report becomes a TensorCheck, in order and field by field, whatever its
// name; the report's own fields stay the summary.
TEST(ConvertResultsTest, TensorChecksFieldByFieldInOrder) {
  CorrectnessReport r;
  r.rows_checked = 30;
  r.rows_total = 40;
  r.max_abs_error = 0.5;
  r.relative_error = 0.03;
  r.tolerance = 0.01;
  r.passed = false;
  r.tensors = {{"dq", 10, 12, 0.125, 0.002, 0.01, 0, true},
               {"dk", 11, 14, 0.5, 0.03, 0.01, 2, false},
               {"dv", 9, 14, 0.25, 0.004, 0.02, 0, true}};
  pb::Correctness pc;
  CorrectnessToProto(r, &pc);
  EXPECT_EQ(pc.relative_error(), 0.03);
  EXPECT_FALSE(pc.passed());
  ASSERT_EQ(pc.tensors_size(), 3);
  EXPECT_EQ(pc.tensors(0).name(), "dq");
  EXPECT_EQ(pc.tensors(2).name(), "dv");
  const pb::TensorCheck& dk = pc.tensors(1);
  EXPECT_EQ(dk.name(), "dk");
  EXPECT_EQ(dk.rows_checked(), 11);
  EXPECT_EQ(dk.rows_total(), 14);
  EXPECT_EQ(dk.max_abs_error(), 0.5);
  EXPECT_EQ(dk.relative_error(), 0.03);
  EXPECT_EQ(dk.tolerance(), 0.01);
  EXPECT_EQ(dk.non_finite_elements(), 2);
  EXPECT_FALSE(dk.passed());
  EXPECT_TRUE(pc.tensors(0).passed());
  EXPECT_EQ(pc.tensors(2).tolerance(), 0.02);
}

TEST(ConvertResultsTest, TensorEncodesLittleEndianInItsDType) {
  FloatTensor t;
  t.dtype = DType::kFloat16;
  t.shape = {2};
  t.values = {1.0f, -2.0f};  // fp16 0x3C00 and 0xC000
  pb::Tensor out;
  TensorToProto(t, &out);
  EXPECT_EQ(out.dtype(), pb::DTYPE_FLOAT16);
  EXPECT_THAT(out.shape(), ::testing::ElementsAre(2));
  EXPECT_EQ(out.data(), std::string("\x00\x3c\x00\xc0", 4));
  EXPECT_EQ(out.data(), EncodeTensor(t));
}

}  // namespace
}  // namespace attnbench::server
