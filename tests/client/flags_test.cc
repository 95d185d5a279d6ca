// The argv walker: flag syntax, which subcommand takes which flag, and usage errors that name
// the flag.
#include "client/flags.h"

#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/test_util.h"

namespace attnbench::client {
namespace {

using ::attnbench::client::testing::Apply;
using ::testing::HasSubstr;
using ::testing::Optional;

TEST(ApplyArgsTest, AcceptsEqualsAndSeparateValues) {
  ASSERT_TRUE(Apply(Subcommand::kRun, {"--batch=4", "--seq_len", "256", "-head_dim=64"}).ok());
  EXPECT_THAT(absl::GetFlag(FLAGS_batch), Optional(4));
  EXPECT_THAT(absl::GetFlag(FLAGS_seq_len), Optional(256));
  EXPECT_THAT(absl::GetFlag(FLAGS_head_dim), Optional(64));
}

TEST(ApplyArgsTest, UnsetFlagsStayUnset) {
  ASSERT_TRUE(Apply(Subcommand::kRun, {"--batch=4"}).ok());
  EXPECT_FALSE(absl::GetFlag(FLAGS_seq_len).has_value());
  EXPECT_FALSE(absl::GetFlag(FLAGS_layout).has_value());
  EXPECT_FALSE(absl::GetFlag(FLAGS_dtype).has_value());
  EXPECT_FALSE(absl::GetFlag(FLAGS_rope));
  EXPECT_EQ(absl::GetFlag(FLAGS_server), "localhost:50051");
  EXPECT_EQ(absl::GetFlag(FLAGS_format), "table");
}

TEST(ApplyArgsTest, ResetFlagsRestoresDefaults) {
  ASSERT_TRUE(Apply(Subcommand::kRun, {"--batch=4", "--rope", "--server=h:1"}).ok());
  ResetFlags();
  EXPECT_FALSE(absl::GetFlag(FLAGS_batch).has_value());
  EXPECT_FALSE(absl::GetFlag(FLAGS_rope));
  EXPECT_EQ(absl::GetFlag(FLAGS_server), "localhost:50051");
}

TEST(ApplyArgsTest, BooleanForms) {
  ASSERT_TRUE(Apply(Subcommand::kRun, {"--rope", "--samples=true", "--cuda_graph=false"}).ok());
  EXPECT_TRUE(absl::GetFlag(FLAGS_rope));
  EXPECT_TRUE(absl::GetFlag(FLAGS_samples));
  EXPECT_FALSE(absl::GetFlag(FLAGS_cuda_graph));
  ASSERT_TRUE(ApplyArgs(Subcommand::kRun, {"--norope"}).ok());
  EXPECT_FALSE(absl::GetFlag(FLAGS_rope));
}

TEST(ApplyArgsTest, FanOutAndHealthFlags) {
  ASSERT_TRUE(Apply(Subcommand::kSweep, {"--fan_out=4"}).ok());
  EXPECT_EQ(absl::GetFlag(FLAGS_fan_out), 4);
  ASSERT_TRUE(Apply(Subcommand::kHealth, {"--service=attnbench.v1.AttnBench", "--tls",
                                          "--deadline_seconds=2", "--server=unix:/s"})
                  .ok());
  EXPECT_EQ(absl::GetFlag(FLAGS_service), "attnbench.v1.AttnBench");
  ResetFlags();
  EXPECT_EQ(absl::GetFlag(FLAGS_fan_out), 0);
  EXPECT_EQ(absl::GetFlag(FLAGS_service), "");
  EXPECT_FALSE(absl::GetFlag(FLAGS_tls));
}

TEST(ApplyArgsTest, BackwardFlags) {
  ASSERT_TRUE(
      Apply(Subcommand::kRun, {"--backward_timing=training_step", "--grad_output=/d"}).ok());
  EXPECT_THAT(absl::GetFlag(FLAGS_backward_timing), Optional(std::string("training_step")));
  EXPECT_THAT(absl::GetFlag(FLAGS_grad_output), Optional(std::string("/d")));
  ASSERT_TRUE(Apply(Subcommand::kSweep, {"--backward_timing=backward_only"}).ok());
  EXPECT_THAT(absl::GetFlag(FLAGS_backward_timing), Optional(std::string("backward_only")));
  EXPECT_FALSE(absl::GetFlag(FLAGS_grad_output).has_value());
  // ResetFlags clears run-only flags too.
  ASSERT_TRUE(Apply(Subcommand::kRun, {"--grad_output=/d"}).ok());
  ResetFlags();
  EXPECT_FALSE(absl::GetFlag(FLAGS_grad_output).has_value());
}

// --aux collects every occurrence; other flags given twice keep the last value. Health takes
// none of the expression flags.
TEST(ApplyArgsTest, ExpressionFlags) {
  ASSERT_TRUE(Apply(Subcommand::kRun, {"--score_mod=s * 2", "--score_mod", "s / 2", "--aux=a=x",
                                       "--aux", "b=y,c=z", "--mask_mod=kv <= q"})
                  .ok());
  EXPECT_EQ(absl::GetFlag(FLAGS_score_mod), "s / 2");
  EXPECT_EQ(absl::GetFlag(FLAGS_mask_mod), "kv <= q");
  EXPECT_EQ(absl::GetFlag(FLAGS_aux), "a=x,b=y,c=z");
  // A new parse starts the list afresh.
  ASSERT_TRUE(ApplyArgs(Subcommand::kSweep, {"--aux=d=w"}).ok());
  EXPECT_EQ(absl::GetFlag(FLAGS_aux), "d=w");
  absl::Status empty = Apply(Subcommand::kRun, {"--aux=a=x", "--aux="});
  EXPECT_EQ(empty.message(), "--aux: empty value");
  // absl would read an empty optional as unset; an empty expression is an error instead.
  EXPECT_EQ(Apply(Subcommand::kRun, {"--score_mod="}).message(), "--score_mod: empty expression");
  EXPECT_EQ(Apply(Subcommand::kSweep, {"--mask_mod", " \t"}).message(),
            "--mask_mod: empty expression");
  EXPECT_FALSE(Apply(Subcommand::kHealth, {"--score_mod=s"}).ok());
  EXPECT_FALSE(Apply(Subcommand::kCaps, {"--aux=a=x"}).ok());
}

TEST(ApplyArgsTest, AcceptsGrpcUriTargets) {
  ASSERT_TRUE(Apply(Subcommand::kCaps, {"--server=dns:///localhost:50051"}).ok());
  EXPECT_EQ(absl::GetFlag(FLAGS_server), "dns:///localhost:50051");
}

struct ErrorCase {
  std::string name;
  Subcommand subcommand;
  std::vector<std::string> args;
  std::string message;
};

void PrintTo(const ErrorCase& c, std::ostream* os) { *os << c.name; }

class ApplyArgsErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(ApplyArgsErrorTest, Rejects) {
  const ErrorCase& c = GetParam();
  absl::Status status = Apply(c.subcommand, c.args);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr(c.message));
}

INSTANTIATE_TEST_SUITE_P(
    Args, ApplyArgsErrorTest,
    ::testing::Values(
        ErrorCase{"MalformedInteger", Subcommand::kRun, {"--batch=abc"}, "--batch: "},
        ErrorCase{"MalformedDouble", Subcommand::kRun, {"--softcap=soft"}, "--softcap: "},
        ErrorCase{"NegativeUnsigned", Subcommand::kRun, {"--seed=-1"}, "--seed: "},
        ErrorCase{"UnknownFlag", Subcommand::kRun, {"--bogus=1"}, "--bogus: not a flag of 'run'"},
        ErrorCase{"SweepFlagOnRun",
                  Subcommand::kRun,
                  {"--sweep_seq_len=1"},
                  "--sweep_seq_len: not a flag of 'run'"},
        ErrorCase{
            "OutputOnSweep", Subcommand::kSweep, {"--output=x"}, "--output: not a flag of 'sweep'"},
        ErrorCase{"GradOutputOnSweep",
                  Subcommand::kSweep,
                  {"--grad_output=x"},
                  "--grad_output: not a flag of 'sweep'"},
        ErrorCase{"BackwardTimingOnCaps",
                  Subcommand::kCaps,
                  {"--backward_timing=training_step"},
                  "--backward_timing: not a flag of 'caps'"},
        ErrorCase{"WorkloadFlagOnCaps",
                  Subcommand::kCaps,
                  {"--batch=1"},
                  "--batch: not a flag of 'caps'"},
        ErrorCase{"MissingValue", Subcommand::kRun, {"--batch"}, "--batch: missing value"},
        ErrorCase{"FanOutOnRun", Subcommand::kRun, {"--fan_out=2"}, "--fan_out: not a flag"},
        ErrorCase{"WorkloadFlagOnHealth",
                  Subcommand::kHealth,
                  {"--batch=1"},
                  "--batch: not a flag of 'health'"},
        ErrorCase{"TokenOnHealth", Subcommand::kHealth, {"--token=t"}, "--token: not a flag"},
        ErrorCase{"ServiceOnCaps", Subcommand::kCaps, {"--service=x"}, "--service: not a flag"},
        ErrorCase{"NegatedNonBoolean", Subcommand::kRun, {"--nobatch"}, "--nobatch: not a flag"},
        ErrorCase{
            "Positional", Subcommand::kRun, {"--batch=1", "extra"}, "unexpected argument 'extra'"},
        ErrorCase{"DoubleDash", Subcommand::kRun, {"--"}, "unexpected argument '--'"},
        ErrorCase{"AbslBuiltinsAreNotOurs",
                  Subcommand::kRun,
                  {"--flagfile=x"},
                  "--flagfile: not a flag of 'run'"}),
    [](const ::testing::TestParamInfo<ErrorCase>& info) { return info.param.name; });

TEST(SubcommandTest, ParsesNames) {
  EXPECT_EQ(*ParseSubcommand("run"), Subcommand::kRun);
  EXPECT_EQ(*ParseSubcommand("sweep"), Subcommand::kSweep);
  EXPECT_EQ(*ParseSubcommand("caps"), Subcommand::kCaps);
  EXPECT_EQ(*ParseSubcommand("health"), Subcommand::kHealth);
  EXPECT_EQ(SubcommandName(Subcommand::kHealth), "health");
  EXPECT_THAT(std::string(ParseSubcommand("bench").status().message()),
              HasSubstr("unknown subcommand 'bench'"));
}

}  // namespace
}  // namespace attnbench::client
