// `attnbench run` flags -> RunRequest: every layout, mask, modifier and setting lands in its
// proto field, unset flags stay unset, and bad combinations are usage errors naming the flag.
#include "client/request_builder.h"

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/test_util.h"

namespace attnbench::client {
namespace {

using ::attnbench::client::testing::Apply;
using ::attnbench::client::testing::EqualsProto;
using ::attnbench::client::testing::Proto;
using ::testing::HasSubstr;
using ::testing::StartsWith;

struct Case {
  std::string name;
  std::vector<std::string> args;
  std::string expected;  // Text-format RunRequest.
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class RunRequestTest : public ::testing::TestWithParam<Case> {};

TEST_P(RunRequestTest, BuildsExpectedRequest) {
  const Case& c = GetParam();
  ASSERT_TRUE(Apply(Subcommand::kRun, c.args).ok());
  absl::StatusOr<v1::RunRequest> request = RunRequestFromFlags();
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_THAT(*request, EqualsProto(Proto<v1::RunRequest>(c.expected)));
}

INSTANTIATE_TEST_SUITE_P(
    Flags, RunRequestTest,
    ::testing::Values(
        // Nothing given: an empty spec, and no measurement or check message at all.
        Case{"NoFlags", {}, "spec {}"},
        Case{"Shape",
             {"--batch=2", "--seq_len=128", "--head_dim=64"},
             "spec { batch_size: 2 seq_len_q: 128 seq_len_kv: 128 head_dim_qk: 64 }"},
        Case{"SeqLenQOverridesSeqLen",
             {"--seq_len=128", "--seq_len_q=1"},
             "spec { seq_len_q: 1 seq_len_kv: 128 }"},
        Case{"SeparateLengthsAndHeadDimV",
             {"--seq_len_q=4", "--seq_len_kv=1000", "--head_dim=192", "--head_dim_v=128"},
             "spec { seq_len_q: 4 seq_len_kv: 1000 head_dim_qk: 192 head_dim_v: 128 }"},
        // Expressions go as written, whitespace and all: the server parses them.
        Case{"ScoreMod",
             {"--score_mod=30 * tanh(s / 30)"},
             R"pb(spec { score_mod { expression: "30 * tanh(s / 30)" } })pb"},
        Case{"MaskModWithMask",
             {"--mask=causal", "--mask_mod", "kv < 4 || q - kv < 1024"},
             R"pb(spec {
                    mask { causal {} }
                    mask_mod { expression: "kv < 4 || q - kv < 1024" }
                  })pb"},
        // Layouts.
        Case{"HeadsAloneMeansMha", {"--heads=8"}, "spec { layout { mha { num_heads: 8 } } }"},
        Case{"Mha", {"--layout=mha", "--heads=4"}, "spec { layout { mha { num_heads: 4 } } }"},
        Case{"Mqa", {"--layout=mqa", "--heads=4"}, "spec { layout { mqa { num_heads: 4 } } }"},
        Case{"GqaWithHeads",
             {"--layout=gqa", "--heads=8", "--kv_heads=2"},
             "spec { layout { gqa { num_query_heads: 8 num_kv_heads: 2 } } }"},
        Case{"GqaWithQueryHeads",
             {"--layout=gqa", "--query_heads=8", "--kv_heads=4"},
             "spec { layout { gqa { num_query_heads: 8 num_kv_heads: 4 } } }"},
        Case{"Sqa",
             {"--layout=sqa", "--heads=16", "--query_heads=8", "--kv_heads=4"},
             "spec { layout { sqa { baseline_heads: 16 num_query_heads: 8 num_kv_heads: 4 } } }"},
        Case{"SymmetricSqa",
             {"--layout=ssqa", "--heads=16"},
             "spec { layout { symmetric_sqa { baseline_heads: 16 } } }"},
        Case{"ExtremeSqaDefault",
             {"--layout=xsqa", "--heads=16"},
             "spec { layout { extreme_sqa { baseline_heads: 16 } } }"},
        Case{"ExtremeSqaWithQueryHeads",
             {"--layout=xsqa", "--heads=16", "--query_heads=2"},
             "spec { layout { extreme_sqa { baseline_heads: 16 num_query_heads: 2 } } }"},
        Case{"Gqkva",
             {"--layout=gqkva", "--query_groups=2", "--kv_groups=3"},
             "spec { layout { gqkva { query_groups: 2 kv_groups: 3 } } }"},
        Case{"Explicit",
             {"--layout=explicit", "--query_heads=2", "--kv_heads=1", "--head_map=0:0,1:0,1:0"},
             "spec { layout { explicit_map { num_query_heads: 2 num_kv_heads: 1 "
             "pairs { query_head: 0 kv_head: 0 } pairs { query_head: 1 kv_head: 0 } "
             "pairs { query_head: 1 kv_head: 0 } } } }"},
        // Masks.
        Case{"MaskNone", {"--mask=none"}, "spec { mask { none {} } }"},
        Case{"MaskCausal", {"--mask=causal"}, "spec { mask { causal {} } }"},
        Case{"WindowBothSides",
             {"--mask=window", "--window_left=128", "--window_right=0"},
             "spec { mask { sliding_window { left_tokens: 128 right_tokens: 0 } } }"},
        Case{"WindowLeftOnly",
             {"--mask=window", "--window_left=64"},
             "spec { mask { sliding_window { left_tokens: 64 } } }"},
        Case{"WindowUnbounded", {"--mask=window"}, "spec { mask { sliding_window {} } }"},
        Case{"BlockSparse",
             {"--mask=block_sparse", "--block_q=64", "--block_kv=32", "--blocks=0:0,1:0,1:1",
              "--block_causal"},
             "spec { mask { block_sparse { query_block_tokens: 64 kv_block_tokens: 32 "
             "blocks { query_block: 0 kv_block: 0 } blocks { query_block: 1 kv_block: 0 } "
             "blocks { query_block: 1 kv_block: 1 } intersect_causal: true } } }"},
        Case{"ProbBlockSparse",
             {"--mask=prob_block_sparse", "--block_q=64", "--block_kv=64", "--prob_c=2",
              "--prob_alpha=1.5", "--mask_seed=7"},
             "spec { mask { probabilistic_block_sparse { query_block_tokens: 64 "
             "kv_block_tokens: 64 c_coefficient: 2 alpha: 1.5 seed: 7 } } }"},
        // Score modifiers.
        Case{"Rope", {"--rope"}, "spec { rope {} }"},
        Case{"RopeWithThetaAndDims",
             {"--rope", "--rope_theta=500000", "--rotary_dims=32"},
             "spec { rope { theta: 500000 rotary_dims: 32 } }"},
        Case{"AlibiGeometric",
             {"--alibi=geometric"},
             "spec { alibi { schedule: ALIBI_SCHEDULE_GEOMETRIC } }"},
        Case{"AlibiHarmonic",
             {"--alibi=harmonic", "--alibi_base_slope=0.5"},
             "spec { alibi { schedule: ALIBI_SCHEDULE_HARMONIC harmonic_base_slope: 0.5 } }"},
        Case{"RopeAndAlibiTogether",
             {"--rope", "--alibi=geometric"},
             "spec { rope {} alibi { schedule: ALIBI_SCHEDULE_GEOMETRIC } }"},
        Case{"SoftcapAndScale",
             {"--softcap=30", "--scale=0.125"},
             "spec { softcap { cap: 30 } scale: 0.125 }"},
        // Type, phase, scope, inputs.
        Case{"DTypes", {"--dtype=bf16"}, "spec { dtype: DTYPE_BFLOAT16 }"},
        Case{"Fp8", {"--dtype=fp8"}, "spec { dtype: DTYPE_FLOAT8_E4M3 }"},
        Case{"PhaseAndScope",
             {"--phase=backward", "--scope=layer", "--d_model=1024"},
             "spec { phase: PHASE_BACKWARD scope: SCOPE_LAYER d_model: 1024 }"},
        Case{"SeedAndInputScale",
             {"--seed=42", "--input_scale=0.5"},
             "spec { seed: 42 input_scale: 0.5 }"},
        Case{"KvSpectrum",
             {"--kv_spectrum_decay=0.9", "--kv_spectrum_rank=32"},
             "spec { kv_spectrum { decay: 0.9 rank: 32 } }"},
        Case{"KvSpectrumDecayAlone",
             {"--kv_spectrum_decay=0.5"},
             "spec { kv_spectrum { decay: 0.5 } }"},
        Case{"Float8Scales",
             {"--dtype=fp8", "--fp8_scales=head", "--query_scales=0.5,0.25", "--key_scales=2",
              "--value_scales=0.125"},
             "spec { dtype: DTYPE_FLOAT8_E4M3 float8 { granularity: SCALE_GRANULARITY_HEAD "
             "query_scales: 0.5 query_scales: 0.25 key_scales: 2 value_scales: 0.125 } }"},
        Case{"Float8ScalesDerived",
             {"--dtype=fp8", "--fp8_scales=tensor"},
             "spec { dtype: DTYPE_FLOAT8_E4M3 float8 { granularity: SCALE_GRANULARITY_TENSOR } }"},
        Case{"KvCompression",
             {"--kv_compression_heads=2"},
             "spec { kv_compression { target_kv_heads: 2 } }"},
        // Decode KV cache.
        Case{"PagedInt8Cache",
             {"--phase=decode", "--page_size=16", "--cache_format=int8"},
             "spec { phase: PHASE_DECODE kv_cache { paging { page_size_tokens: 16 } "
             "format: CACHE_FORMAT_INT8 } }"},
        Case{"Saq",
             {"--saq=512:native,2048:int8,rest:int4"},
             "spec { kv_cache { saq_bands { num_tokens: 512 format: CACHE_FORMAT_NATIVE } "
             "saq_bands { num_tokens: 2048 format: CACHE_FORMAT_INT8 } "
             "saq_bands { format: CACHE_FORMAT_INT4 } } }"},
        // Where, measurement, checking, output.
        Case{"BackendAndDevice",
             {"--backend=cpu_reference", "--device_index=0"},
             "spec {} backend: 'cpu_reference' device_index: 0"},
        Case{"Measurement",
             {"--warmup=2", "--min_iters=3", "--max_iters=50", "--max_seconds=1.5",
              "--target_noise=0.02", "--cache=warm", "--cuda_graph", "--samples"},
             "spec {} measurement { warmup_iterations: 2 min_iterations: 3 max_iterations: 50 "
             "max_duration_seconds: 1.5 target_relative_noise: 0.02 cache_mode: CACHE_MODE_WARM "
             "use_cuda_graph: true return_samples: true }"},
        Case{"Deterministic", {"--deterministic"}, "spec {} measurement { deterministic: true }"},
        Case{"Check",
             {"--check=auto", "--check_rows=100"},
             "spec {} check { mode: CHECK_MODE_AUTO max_sampled_rows: 100 }"},
        Case{"CheckOff", {"--check=off"}, "spec {} check { mode: CHECK_MODE_OFF }"},
        Case{"BackwardTiming",
             {"--phase=backward", "--backward_timing=training_step"},
             "spec { phase: PHASE_BACKWARD } "
             "measurement { backward_timing: BACKWARD_TIMING_TRAINING_STEP }"},
        Case{"BackwardOnly",
             {"--phase=backward", "--backward_timing=backward_only", "--output=/tmp/o.bin"},
             "spec { phase: PHASE_BACKWARD } "
             "measurement { backward_timing: BACKWARD_TIMING_BACKWARD_ONLY } return_output: true"},
        Case{"OutputAsksForTheTensor", {"--output=/tmp/o.bin"}, "spec {} return_output: true"}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

struct ErrorCase {
  std::string name;
  std::vector<std::string> args;
  std::string flag;     // The message starts with "--<flag>: ".
  std::string message;  // ... and contains this.
};

void PrintTo(const ErrorCase& c, std::ostream* os) { *os << c.name; }

class RunRequestErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(RunRequestErrorTest, RejectsWithFlagName) {
  const ErrorCase& c = GetParam();
  ASSERT_TRUE(Apply(Subcommand::kRun, c.args).ok());
  absl::StatusOr<v1::RunRequest> request = RunRequestFromFlags();
  ASSERT_FALSE(request.ok());
  EXPECT_EQ(request.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(request.status().message()), StartsWith("--" + c.flag + ": "));
  EXPECT_THAT(std::string(request.status().message()), HasSubstr(c.message));
}

INSTANTIATE_TEST_SUITE_P(
    Flags, RunRequestErrorTest,
    ::testing::Values(
        ErrorCase{"UnknownLayout", {"--layout=foo", "--heads=4"}, "layout", "unknown layout 'foo'"},
        ErrorCase{"GqaNeedsKvHeads", {"--layout=gqa", "--heads=8"}, "kv_heads", "required by"},
        ErrorCase{"SqaNeedsQueryHeads",
                  {"--layout=sqa", "--heads=8", "--kv_heads=2"},
                  "query_heads",
                  "required by --layout=sqa"},
        ErrorCase{"MhaTakesNoKvHeads",
                  {"--layout=mha", "--heads=8", "--kv_heads=2"},
                  "kv_heads",
                  "does not apply to --layout=mha"},
        ErrorCase{"GqkvaTakesNoHeads",
                  {"--layout=gqkva", "--query_groups=2", "--kv_groups=2", "--heads=4"},
                  "heads",
                  "does not apply"},
        ErrorCase{"KvHeadsNeedLayout", {"--kv_heads=2"}, "kv_heads", "needs --layout"},
        ErrorCase{"SpectrumRankNeedsDecay",
                  {"--kv_spectrum_rank=8"},
                  "kv_spectrum_rank",
                  "needs --kv_spectrum_decay"},
        ErrorCase{"BadScaleGranularity", {"--fp8_scales=row"}, "fp8_scales", "tensor or head"},
        ErrorCase{"BadScale", {"--key_scales=0.5,x"}, "key_scales", "\"x\" is not a number"},
        ErrorCase{"ExplicitNeedsMap",
                  {"--layout=explicit", "--query_heads=2", "--kv_heads=1"},
                  "head_map",
                  "required"},
        ErrorCase{"BadHeadMap",
                  {"--layout=explicit", "--query_heads=2", "--kv_heads=1", "--head_map=0:0,1"},
                  "head_map",
                  "'1' is not of the form a:b"},
        ErrorCase{"UnknownMask", {"--mask=diagonal"}, "mask", "unknown mask 'diagonal'"},
        ErrorCase{"BlockSparseNeedsBlocks",
                  {"--mask=block_sparse", "--block_q=64", "--block_kv=64"},
                  "blocks",
                  "required by mask block_sparse"},
        ErrorCase{"BadBlocks",
                  {"--mask=block_sparse", "--block_q=64", "--block_kv=64", "--blocks=0:x"},
                  "blocks",
                  "'x' is not an integer"},
        ErrorCase{"ProbNeedsAlpha",
                  {"--mask=prob_block_sparse", "--block_q=64", "--block_kv=64", "--prob_c=1"},
                  "prob_alpha",
                  "required"},
        ErrorCase{"WindowFlagNeedsMask", {"--window_left=4"}, "window_left", "needs --mask"},
        ErrorCase{"BlocksDoNotApplyToCausal",
                  {"--mask=causal", "--blocks=0:0"},
                  "blocks",
                  "does not apply to mask causal"},
        ErrorCase{"RopeThetaNeedsRope", {"--rope_theta=1e4"}, "rope_theta", "needs --rope"},
        ErrorCase{"RotaryDimsNeedRope", {"--rotary_dims=16"}, "rotary_dims", "needs --rope"},
        ErrorCase{"UnknownAlibi", {"--alibi=linear"}, "alibi", "geometric|harmonic"},
        ErrorCase{"BaseSlopeNeedsHarmonic",
                  {"--alibi=geometric", "--alibi_base_slope=1"},
                  "alibi_base_slope",
                  "needs --alibi=harmonic"},
        ErrorCase{"UnknownDType", {"--dtype=fp64"}, "dtype", "fp32|fp16|bf16|fp8"},
        ErrorCase{"UnknownPhase", {"--phase=train"}, "phase", "prefill|decode|backward"},
        ErrorCase{"UnknownScope", {"--scope=model"}, "scope", "core|layer"},
        ErrorCase{"UnknownCacheFormat", {"--cache_format=int2"}, "cache_format", "int2"},
        ErrorCase{"SaqWithCacheFormat",
                  {"--saq=rest:int4", "--cache_format=int8"},
                  "saq",
                  "cannot be combined"},
        ErrorCase{"SaqRestNotLast",
                  {"--saq=rest:int4,512:int8"},
                  "saq",
                  "only the last SAQ band may be 'rest'"},
        ErrorCase{"SaqBadFormat", {"--saq=512:fp4"}, "saq", "unknown cache format 'fp4'"},
        ErrorCase{"UnknownCacheMode", {"--cache=hot"}, "cache", "cold|warm"},
        ErrorCase{"UnknownCheckMode", {"--check=some"}, "check", "off|auto|full"},
        ErrorCase{"BackwardTimingNeedsBackward",
                  {"--backward_timing=training_step"},
                  "backward_timing",
                  "needs --phase=backward"},
        ErrorCase{"BackwardTimingNotForDecode",
                  {"--phase=decode", "--backward_timing=backward_only"},
                  "backward_timing",
                  "needs --phase=backward"},
        ErrorCase{"UnknownBackwardTiming",
                  {"--phase=backward", "--backward_timing=forward"},
                  "backward_timing",
                  "unknown backward timing 'forward' (expected backward_only|training_step)"},
        ErrorCase{"GradOutputNeedsBackward",
                  {"--grad_output=/nonexistent"},
                  "grad_output",
                  "needs --phase=backward"},
        ErrorCase{"GradOutputNeedsTheShape",
                  {"--phase=backward", "--grad_output=/nonexistent", "--batch=1"},
                  "grad_output",
                  "dO's shape [B, S_q, H_out, D_v] needs --seq_len (or --seq_len_q), a layout "
                  "with its heads, --head_dim, --dtype"},
        ErrorCase{"AuxNeedsAnExpression",
                  {"--aux=doc=/nonexistent/doc.npy"},
                  "aux",
                  "needs --score_mod or --mask_mod"},
        ErrorCase{"AuxNotNameEqualsFile",
                  {"--mask_mod=doc[q] == doc[kv]", "--aux=doc.npy"},
                  "aux",
                  "'doc.npy' is not of the form name=FILE"},
        ErrorCase{"AuxBadName",
                  {"--mask_mod=true", "--aux=doc-id=/nonexistent/doc.npy"},
                  "aux",
                  "'doc-id' is not a tensor name"},
        ErrorCase{"AuxNameTwiceInRepeatedFlags",
                  {"--mask_mod=true", "--aux=doc=/nonexistent/a.npy", "--aux=doc=/b.npy"},
                  "aux",
                  "tensor 'doc' is given twice"},
        ErrorCase{"AuxFileMissing",
                  {"--score_mod=s", "--aux=bias=/nonexistent/bias.npy"},
                  "aux",
                  "tensor 'bias': cannot read /nonexistent/bias.npy: No such file or directory"},
        ErrorCase{"GradOutputFileMissing",
                  {"--phase=backward", "--grad_output=/nonexistent/d.bin", "--batch=1",
                   "--seq_len=4", "--heads=2", "--head_dim=8", "--dtype=fp32"},
                  "grad_output",
                  "cannot read /nonexistent/d.bin: No such file or directory"}),
    [](const ::testing::TestParamInfo<ErrorCase>& info) { return info.param.name; });

// The file's bytes as they are, in a Tensor of dO's shape [B, S_q, H_out, D_v] and --dtype.
std::string WriteFile(const std::string& name, size_t bytes) {
  const std::string path = ::testing::TempDir() + name;
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  for (size_t i = 0; i < bytes; ++i) file.put(static_cast<char>(i * 37 % 251));
  return path;
}

TEST(GradOutputTest, TheFileBecomesDOOfTheShapeTheFlagsImply) {
  // GQKVA 2x3: H_out = 6; D_v from --head_dim_v; S_q from --seq_len_q.
  const std::string path = WriteFile("grad_output_gqkva.bin", 2 * 3 * 6 * 4 * 2);
  ASSERT_TRUE(Apply(Subcommand::kRun,
                    {"--phase=backward", "--batch=2", "--seq_len=9", "--seq_len_q=3",
                     "--layout=gqkva", "--query_groups=2", "--kv_groups=3", "--head_dim=8",
                     "--head_dim_v=4", "--dtype=bf16", "--grad_output=" + path})
                  .ok());
  absl::StatusOr<v1::RunRequest> request = RunRequestFromFlags();
  ASSERT_TRUE(request.ok()) << request.status();
  const v1::Tensor& d_o = request->spec().inputs().grad_output();
  EXPECT_EQ(d_o.dtype(), v1::DTYPE_BFLOAT16);
  EXPECT_THAT(d_o.shape(), ::testing::ElementsAre(2, 3, 6, 4));
  std::ifstream file(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  EXPECT_EQ(d_o.data(), bytes);
  EXPECT_EQ(d_o.data().size(), 288u);
  EXPECT_FALSE(request->spec().inputs().has_query());
  EXPECT_FALSE(request->return_output());

  // MHA fp32, D_v = D_qk: [1, 4, 2, 8] x 4 bytes.
  const std::string mha = WriteFile("grad_output_mha.bin", 1 * 4 * 2 * 8 * 4);
  ASSERT_TRUE(Apply(Subcommand::kRun, {"--phase=backward", "--batch=1", "--seq_len=4", "--heads=2",
                                       "--head_dim=8", "--dtype=fp32", "--grad_output=" + mha})
                  .ok());
  request = RunRequestFromFlags();
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_THAT(request->spec().inputs().grad_output().shape(), ::testing::ElementsAre(1, 4, 2, 8));
}

TEST(GradOutputTest, AFileOfAnotherSizeIsAUsageError) {
  const std::string path = WriteFile("grad_output_short.bin", 255);
  ASSERT_TRUE(Apply(Subcommand::kRun, {"--phase=backward", "--batch=1", "--seq_len=4", "--heads=2",
                                       "--head_dim=8", "--dtype=fp32", "--grad_output=" + path})
                  .ok());
  absl::StatusOr<v1::RunRequest> request = RunRequestFromFlags();
  ASSERT_FALSE(request.ok());
  EXPECT_EQ(request.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(request.status().message(),
            "--grad_output: " + path + " has 255 bytes; dO [1,4,2,8] of fp32 needs 256");
}

// --x and the weights: each file in its own InputTensors field, shaped from the flags (GQA 4/2,
// D_qk 8, D_v 4, d_model 16); unset ones stay absent.
TEST(LayerInputsTest, FilesBecomeXAndWeightsOfTheShapesTheFlagsImply) {
  const std::string x = WriteFile("layer_x.bin", 2 * 3 * 16 * 2);
  const std::string w_k = WriteFile("layer_w_k.bin", 16 * 2 * 8 * 2);
  const std::string w_o = WriteFile("layer_w_o.bin", 4 * 4 * 16 * 2);
  const std::vector<std::string> shape = {
      "--scope=layer",   "--d_model=16", "--batch=2",    "--seq_len=3",    "--layout=gqa",
      "--query_heads=4", "--kv_heads=2", "--head_dim=8", "--head_dim_v=4", "--dtype=bf16"};
  std::vector<std::string> flags = shape;
  flags.push_back("--x=" + x);
  ASSERT_TRUE(Apply(Subcommand::kRun, flags).ok());
  absl::StatusOr<v1::RunRequest> request = RunRequestFromFlags();
  ASSERT_TRUE(request.ok()) << request.status();
  const v1::InputTensors& in = request->spec().inputs();
  EXPECT_THAT(in.x().shape(), ::testing::ElementsAre(2, 3, 16));
  EXPECT_EQ(in.x().dtype(), v1::DTYPE_BFLOAT16);
  EXPECT_EQ(in.x().data().size(), 192u);
  EXPECT_FALSE(in.has_w_q());
  EXPECT_FALSE(in.has_query());

  flags = shape;
  flags.push_back("--w_q=" + WriteFile("layer_w_q.bin", 16 * 32 * 2));
  flags.push_back("--w_k=" + w_k);
  flags.push_back("--w_v=" + WriteFile("layer_w_v.bin", 16 * 8 * 2));
  flags.push_back("--w_o=" + w_o);
  ASSERT_TRUE(Apply(Subcommand::kRun, flags).ok());
  request = RunRequestFromFlags();
  ASSERT_TRUE(request.ok()) << request.status();
  const v1::InputTensors& w = request->spec().inputs();
  EXPECT_FALSE(w.has_x());
  EXPECT_THAT(w.w_q().shape(), ::testing::ElementsAre(16, 32));
  EXPECT_THAT(w.w_k().shape(), ::testing::ElementsAre(16, 16));
  EXPECT_THAT(w.w_v().shape(), ::testing::ElementsAre(16, 8));
  EXPECT_THAT(w.w_o().shape(), ::testing::ElementsAre(16, 16));
}

TEST(LayerInputsTest, NeedLayerScopeAndTheRightSize) {
  const std::string x = WriteFile("layer_x_short.bin", 10);
  ASSERT_TRUE(Apply(Subcommand::kRun, {"--batch=1", "--seq_len=2", "--heads=2", "--head_dim=8",
                                       "--dtype=fp32", "--x=" + x})
                  .ok());
  absl::StatusOr<v1::RunRequest> request = RunRequestFromFlags();
  ASSERT_FALSE(request.ok());
  EXPECT_EQ(request.status().message(), "--x: needs --scope=layer");

  ASSERT_TRUE(Apply(Subcommand::kRun, {"--scope=layer", "--d_model=8", "--batch=1", "--seq_len=2",
                                       "--heads=2", "--head_dim=8", "--dtype=fp32", "--x=" + x})
                  .ok());
  request = RunRequestFromFlags();
  ASSERT_FALSE(request.ok());
  EXPECT_EQ(request.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(request.status().message(),
            "--x: " + x + " has 10 bytes; X [B, S, d_model] [1,2,8] of fp32 needs 64");

  ASSERT_TRUE(Apply(Subcommand::kRun, {"--scope=layer", "--batch=1", "--seq_len=2", "--heads=2",
                                       "--head_dim=8", "--dtype=fp32", "--w_o=" + x})
                  .ok());
  request = RunRequestFromFlags();
  ASSERT_FALSE(request.ok());
  EXPECT_EQ(request.status().message(),
            "--w_o: the shape of W_o [H_out * D_v, d_model] needs --d_model");
}

// Every --aux file becomes spec.aux[k] in the order given: its name, and its values as float32
// bytes of its shape; repeated flags and a comma-separated list are the same request.
TEST(AuxTest, FilesBecomeNamedFloat32TensorsInOrder) {
  const std::string slopes = ::testing::TempDir() + "aux_slopes.txt";
  std::ofstream(slopes) << "0.5 0.25\n";
  const std::string bias = ::testing::TempDir() + "aux_bias.txt";
  std::ofstream(bias) << "1 2 3\n-4 5 6\n";
  const std::string expected = R"pb(
    spec {
      score_mod { expression: "s - slopes[h] * (q - kv) + bias[h, 0]" }
      aux {
        name: "slopes"
        tensor { dtype: DTYPE_FLOAT32 shape: 2 data: "\x00\x00\x00\x3f\x00\x00\x80\x3e" }
      }
      aux {
        name: "bias"
        tensor {
          dtype: DTYPE_FLOAT32
          shape: [ 2, 3 ]
          data: "\x00\x00\x80\x3f\x00\x00\x00\x40\x00\x00\x40\x40"
                "\x00\x00\x80\xc0\x00\x00\xa0\x40\x00\x00\xc0\x40"
        }
      }
    })pb";
  const std::string expression = "--score_mod=s - slopes[h] * (q - kv) + bias[h, 0]";
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{expression, "--aux=slopes=" + slopes, "--aux", "bias=" + bias},
        std::vector<std::string>{"--aux=slopes=" + slopes + ",bias=" + bias, expression}}) {
    ASSERT_TRUE(Apply(Subcommand::kRun, args).ok());
    absl::StatusOr<v1::RunRequest> request = RunRequestFromFlags();
    ASSERT_TRUE(request.ok()) << request.status();
    EXPECT_THAT(*request, EqualsProto(Proto<v1::RunRequest>(expected)));
  }
}

TEST(AuxTest, ABadFileIsAUsageErrorNamingTheTensorAndFile) {
  const std::string doc = ::testing::TempDir() + "aux_doc_ragged.txt";
  std::ofstream(doc) << "0 0\n1\n";
  ASSERT_TRUE(
      Apply(Subcommand::kRun, {"--mask_mod=doc[q, 0] == doc[kv, 0]", "--aux=doc=" + doc}).ok());
  absl::StatusOr<v1::RunRequest> request = RunRequestFromFlags();
  ASSERT_FALSE(request.ok());
  EXPECT_EQ(request.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(request.status().message(),
            "--aux: tensor 'doc': " + doc +
                ": line 2 has 1 numbers, but line 1 has 2 (the rows of a 2-D tensor must be as "
                "long)");
}

// A sweep's points share the base's expressions and aux tensors.
TEST(AuxTest, SweepBaseCarriesTheExpressions) {
  const std::string doc = ::testing::TempDir() + "aux_doc_sweep.txt";
  std::ofstream(doc) << "0 0 1 1\n";
  ASSERT_TRUE(Apply(Subcommand::kSweep, {"--mask_mod=doc[q] == doc[kv]", "--aux=doc=" + doc,
                                         "--score_mod=s", "--sweep_seq_len=4"})
                  .ok());
  absl::StatusOr<v1::SweepRequest> sweep = SweepRequestFromFlags();
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  const v1::AttentionSpec& spec = sweep->base().spec();
  EXPECT_EQ(spec.mask_mod().expression(), "doc[q] == doc[kv]");
  EXPECT_EQ(spec.score_mod().expression(), "s");
  ASSERT_EQ(spec.aux_size(), 1);
  EXPECT_EQ(spec.aux(0).name(), "doc");
  EXPECT_THAT(spec.aux(0).tensor().shape(), ::testing::ElementsAre(4));
}

}  // namespace
}  // namespace attnbench::client
