// `attnbench sweep` flags -> SweepRequest: each --sweep_* flag becomes one axis, axes come in
// the documented order whatever the command line's, and the base request is built like run's.
#include <string>
#include <vector>

#include "client/request_builder.h"
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

absl::StatusOr<v1::SweepRequest> Build(const std::vector<std::string>& args) {
  absl::Status applied = Apply(Subcommand::kSweep, args);
  if (!applied.ok()) return applied;
  return SweepRequestFromFlags();
}

TEST(SweepRequestTest, EveryAxisInGridOrder) {
  // Given in an order different from the grid's.
  absl::StatusOr<v1::SweepRequest> sweep =
      Build({"--sweep_kv_compression_heads=1,2", "--sweep_head_dim=64,128",
             "--sweep_seq_len_kv=1024", "--sweep_seq_len_q=1,8", "--sweep_seq_len=256,512",
             "--sweep_batch=1,4", "--sweep_phase=prefill,decode", "--sweep_dtype=fp32,fp16",
             "--sweep_mask=none,causal,window:128/0", "--sweep_layout=mha:8,gqa:8/2",
             "--sweep_backend=cpu_reference,auto", "--continue_on_error"});
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  EXPECT_THAT(*sweep, EqualsProto(Proto<v1::SweepRequest>(R"pb(
    base { spec {} }
    axes { backend { values: "cpu_reference" values: "auto" } }
    axes {
      layout {
        values { mha { num_heads: 8 } }
        values { gqa { num_query_heads: 8 num_kv_heads: 2 } }
      }
    }
    axes {
      mask {
        values { none {} }
        values { causal {} }
        values { sliding_window { left_tokens: 128 right_tokens: 0 } }
      }
    }
    axes { dtype { values: DTYPE_FLOAT32 values: DTYPE_FLOAT16 } }
    axes { phase { values: PHASE_PREFILL values: PHASE_DECODE } }
    axes { batch_size { values: 1 values: 4 } }
    axes { seq_len { values: 256 values: 512 } }
    axes { seq_len_q { values: 1 values: 8 } }
    axes { seq_len_kv { values: 1024 } }
    axes { head_dim { values: 64 values: 128 } }
    axes { kv_compression_heads { values: 1 values: 2 } }
    continue_on_error: true
  )pb")));
}

TEST(SweepRequestTest, BaseRequestComesFromWorkloadFlags) {
  absl::StatusOr<v1::SweepRequest> sweep =
      Build({"--batch=1", "--head_dim=64", "--mask=causal", "--dtype=fp32", "--min_iters=2",
             "--backend=cpu_reference", "--sweep_seq_len=128"});
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  EXPECT_THAT(*sweep, EqualsProto(Proto<v1::SweepRequest>(R"pb(
    base {
      spec {
        batch_size: 1
        head_dim_qk: 64
        mask { causal {} }
        dtype: DTYPE_FLOAT32
      }
      backend: "cpu_reference"
      measurement { min_iterations: 2 }
    }
    axes { seq_len { values: 128 } }
  )pb")));
}

TEST(SweepRequestTest, EveryCompactLayout) {
  absl::StatusOr<v1::SweepRequest> sweep =
      Build({"--sweep_layout=mha:8,mqa:8,gqa:8/2,sqa:16/8/4,ssqa:16,xsqa:16,xsqa:16/2,gqkva:2/4,"
             "explicit:2/1/0-0+1-0"});
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  EXPECT_THAT(sweep->axes(0), EqualsProto(Proto<v1::SweepAxis>(R"pb(
                layout {
                  values { mha { num_heads: 8 } }
                  values { mqa { num_heads: 8 } }
                  values { gqa { num_query_heads: 8 num_kv_heads: 2 } }
                  values { sqa { baseline_heads: 16 num_query_heads: 8 num_kv_heads: 4 } }
                  values { symmetric_sqa { baseline_heads: 16 } }
                  values { extreme_sqa { baseline_heads: 16 } }
                  values { extreme_sqa { baseline_heads: 16 num_query_heads: 2 } }
                  values { gqkva { query_groups: 2 kv_groups: 4 } }
                  values {
                    explicit_map {
                      num_query_heads: 2
                      num_kv_heads: 1
                      pairs { query_head: 0 kv_head: 0 }
                      pairs { query_head: 1 kv_head: 0 }
                    }
                  }
                }
              )pb")));
}

TEST(SweepRequestTest, BlockMasksTakeTheBlockFlags) {
  absl::StatusOr<v1::SweepRequest> sweep =
      Build({"--sweep_mask=block_sparse,prob_block_sparse", "--block_q=32", "--block_kv=32",
             "--blocks=0:0", "--prob_c=1", "--prob_alpha=2"});
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  EXPECT_THAT(sweep->axes(0), EqualsProto(Proto<v1::SweepAxis>(R"pb(
                mask {
                  values {
                    block_sparse {
                      query_block_tokens: 32
                      kv_block_tokens: 32
                      blocks { query_block: 0 kv_block: 0 }
                    }
                  }
                  values {
                    probabilistic_block_sparse {
                      query_block_tokens: 32
                      kv_block_tokens: 32
                      c_coefficient: 1
                      alpha: 2
                    }
                  }
                }
              )pb")));
}

TEST(SweepRequestTest, WindowSidesMayBeUnbounded) {
  absl::StatusOr<v1::SweepRequest> sweep = Build({"--sweep_mask=window:/0,window:16/"});
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  EXPECT_THAT(sweep->axes(0), EqualsProto(Proto<v1::SweepAxis>(R"pb(
                mask {
                  values { sliding_window { right_tokens: 0 } }
                  values { sliding_window { left_tokens: 16 } }
                }
              )pb")));
}

TEST(SweepRequestTest, BackwardTimingGoesInTheBase) {
  absl::StatusOr<v1::SweepRequest> sweep =
      Build({"--phase=backward", "--backward_timing=training_step", "--sweep_seq_len=64,128"});
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  EXPECT_THAT(*sweep, EqualsProto(Proto<v1::SweepRequest>(R"pb(
    base {
      spec { phase: PHASE_BACKWARD }
      measurement { backward_timing: BACKWARD_TIMING_TRAINING_STEP }
    }
    axes { seq_len { values: 64 values: 128 } }
  )pb")));
  // A phase axis of backward points alone takes it too.
  sweep = Build({"--backward_timing=backward_only", "--sweep_phase=backward"});
  ASSERT_TRUE(sweep.ok()) << sweep.status();
  EXPECT_EQ(sweep->base().measurement().backward_timing(), v1::BACKWARD_TIMING_BACKWARD_ONLY);
}

struct ErrorCase {
  std::string name;
  std::vector<std::string> args;
  std::string prefix;
  std::string message;
};

void PrintTo(const ErrorCase& c, std::ostream* os) { *os << c.name; }

class SweepRequestErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(SweepRequestErrorTest, Rejects) {
  const ErrorCase& c = GetParam();
  absl::StatusOr<v1::SweepRequest> sweep = Build(c.args);
  ASSERT_FALSE(sweep.ok());
  EXPECT_EQ(sweep.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(sweep.status().message()), StartsWith(c.prefix));
  EXPECT_THAT(std::string(sweep.status().message()), HasSubstr(c.message));
}

INSTANTIATE_TEST_SUITE_P(
    Flags, SweepRequestErrorTest,
    ::testing::Values(
        ErrorCase{"NoAxis", {"--seq_len=128"}, "sweep needs at least one axis", ""},
        ErrorCase{"UnknownLayout",
                  {"--sweep_layout=mha:8,foo:2"},
                  "--sweep_layout: ",
                  "unknown layout 'foo'"},
        ErrorCase{"LayoutWithoutCounts", {"--sweep_layout=gqa"}, "--sweep_layout: ", "name:counts"},
        ErrorCase{"GqaNeedsTwoCounts",
                  {"--sweep_layout=gqa:8"},
                  "--sweep_layout: ",
                  "needs 2 '/'-separated counts"},
        ErrorCase{
            "UnknownMask", {"--sweep_mask=none,diag"}, "--sweep_mask: ", "unknown mask 'diag'"},
        ErrorCase{"BadWindow", {"--sweep_mask=window:5"}, "--sweep_mask: ", "window:L/R"},
        ErrorCase{"BlockMaskWithoutBlocks",
                  {"--sweep_mask=block_sparse"},
                  "--block_q: ",
                  "required by mask block_sparse"},
        ErrorCase{"BlocksWithoutBlockMask",
                  {"--sweep_mask=causal", "--blocks=0:0"},
                  "--blocks: ",
                  "does not apply"},
        ErrorCase{
            "UnknownDType", {"--sweep_dtype=fp32,int8"}, "--sweep_dtype: ", "unknown dtype 'int8'"},
        ErrorCase{"UnknownPhase", {"--sweep_phase=forward"}, "--sweep_phase: ", "forward"},
        ErrorCase{"BackwardTimingNeedsBackward",
                  {"--backward_timing=training_step", "--sweep_seq_len=64"},
                  "--backward_timing: ",
                  "needs --phase=backward"},
        ErrorCase{"BackwardTimingOnAForwardBase",
                  {"--phase=decode", "--backward_timing=training_step", "--sweep_seq_len=64"},
                  "--backward_timing: ",
                  "needs every point's phase to be backward (the server refuses it at the "
                  "decode points)"},
        ErrorCase{"BackwardTimingWithForwardPoints",
                  {"--phase=backward", "--backward_timing=training_step",
                   "--sweep_phase=backward,prefill"},
                  "--backward_timing: ",
                  "needs every point's phase to be backward (the server refuses it at the "
                  "prefill points)"},
        ErrorCase{
            "BadSeqLen", {"--sweep_seq_len=128,x"}, "--sweep_seq_len: ", "'x' is not an integer"},
        ErrorCase{"EmptyItem", {"--sweep_batch=1,,2"}, "--sweep_batch: ", "empty item"},
        ErrorCase{
            "BadHeadDim", {"--sweep_head_dim=64.5"}, "--sweep_head_dim: ", "not a 32-bit integer"},
        ErrorCase{"BaseErrorsToo",
                  {"--sweep_seq_len=1", "--layout=mqa"},
                  "--heads: ",
                  "required by --layout=mqa"}),
    [](const ::testing::TestParamInfo<ErrorCase>& info) { return info.param.name; });

}  // namespace
}  // namespace attnbench::client
