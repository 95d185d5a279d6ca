#include "server/measurement.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnbench::server {
namespace {

namespace pb = ::attnbench::v1;
using ::testing::HasSubstr;

TEST(MeasurementTest, DefaultsFillEveryField) {
  const auto plan = ResolveMeasurement(pb::MeasurementSettings(), ServerOptions());
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->warmup_iterations, 2);
  EXPECT_EQ(plan->min_iterations, 5);
  EXPECT_EQ(plan->max_iterations, 200);
  EXPECT_DOUBLE_EQ(plan->max_duration_seconds, 2.0);
  EXPECT_DOUBLE_EQ(plan->target_relative_noise, 0);
  EXPECT_TRUE(plan->flush_cache);
  const pb::MeasurementSettings echo = MeasurementToProto(*plan);
  EXPECT_TRUE(echo.has_warmup_iterations() && echo.has_min_iterations() &&
              echo.has_max_iterations() && echo.has_max_duration_seconds() &&
              echo.has_target_relative_noise());
  EXPECT_EQ(echo.cache_mode(), pb::CACHE_MODE_COLD);
  // The echo resolves to itself.
  const auto again = ResolveMeasurement(echo, ServerOptions());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->max_iterations, 200);
}

TEST(MeasurementTest, ClientValuesKeptAndDefaultsBend) {
  pb::MeasurementSettings in;
  in.set_min_iterations(500);
  in.set_cache_mode(pb::CACHE_MODE_WARM);
  in.set_target_relative_noise(0.01);
  in.set_return_samples(true);
  auto plan = ResolveMeasurement(in, ServerOptions());
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->min_iterations, 500);
  EXPECT_EQ(plan->max_iterations, 500);  // the default 200 would contradict min
  EXPECT_FALSE(plan->flush_cache);
  EXPECT_DOUBLE_EQ(plan->target_relative_noise, 0.01);
  EXPECT_TRUE(plan->return_samples);

  pb::MeasurementSettings cap;
  cap.set_max_iterations(3);
  plan = ResolveMeasurement(cap, ServerOptions());
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->min_iterations, 3);
  EXPECT_EQ(plan->max_iterations, 3);
}

TEST(MeasurementTest, OverLimitsRefusedNamingFieldAndLimit) {
  ServerOptions options;
  options.max_iterations = 1000;
  options.max_duration_seconds = 10;
  pb::MeasurementSettings in;
  in.set_max_iterations(1001);
  auto plan = ResolveMeasurement(in, options);
  ASSERT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr("measurement.max_iterations"));
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr("--max_iterations=1000"));

  in.Clear();
  in.set_max_duration_seconds(11);
  plan = ResolveMeasurement(in, options);
  ASSERT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(plan.status().message()), HasSubstr("--max_duration_seconds=10"));

  in.Clear();
  in.set_warmup_iterations(5000);
  EXPECT_EQ(ResolveMeasurement(in, options).status().code(), absl::StatusCode::kInvalidArgument);
  in.Clear();
  in.set_min_iterations(1001);
  EXPECT_EQ(ResolveMeasurement(in, options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(MeasurementTest, BadValuesRefused) {
  const ServerOptions options;
  auto refused = [&](const pb::MeasurementSettings& in, const char* field) {
    const auto plan = ResolveMeasurement(in, options);
    EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_THAT(std::string(plan.status().message()), HasSubstr(field));
  };
  pb::MeasurementSettings in;
  in.set_warmup_iterations(-1);
  refused(in, "warmup_iterations");
  in.Clear();
  in.set_min_iterations(0);
  refused(in, "min_iterations");
  in.Clear();
  in.set_min_iterations(10);
  in.set_max_iterations(5);
  refused(in, "max_iterations");
  in.Clear();
  in.set_max_duration_seconds(0);
  refused(in, "max_duration_seconds");
  in.Clear();
  in.set_max_duration_seconds(std::nan(""));
  refused(in, "max_duration_seconds");
  in.Clear();
  in.set_target_relative_noise(-0.1);
  refused(in, "target_relative_noise");
  in.Clear();
  in.set_cache_mode(static_cast<pb::CacheMode>(42));
  refused(in, "cache_mode");
}

// backward_timing resolves as asked (whether the phase takes it is CheckRunRequest's rule) and is
// echoed only when set, so a forward result carries none.
TEST(MeasurementTest, BackwardTimingResolvedAndEchoedOnlyWhenSet) {
  pb::MeasurementSettings in;
  auto plan = ResolveMeasurement(in, ServerOptions());
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->backward_timing, BackwardTiming::kUnspecified);
  EXPECT_EQ(MeasurementToProto(*plan).backward_timing(), pb::BACKWARD_TIMING_UNSPECIFIED);

  in.set_backward_timing(pb::BACKWARD_TIMING_BACKWARD_ONLY);
  plan = ResolveMeasurement(in, ServerOptions());
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->backward_timing, BackwardTiming::kBackwardOnly);
  EXPECT_EQ(MeasurementToProto(*plan).backward_timing(), pb::BACKWARD_TIMING_BACKWARD_ONLY);

  in.set_backward_timing(pb::BACKWARD_TIMING_TRAINING_STEP);
  plan = ResolveMeasurement(in, ServerOptions());
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->backward_timing, BackwardTiming::kTrainingStep);
  const pb::MeasurementSettings echo = MeasurementToProto(*plan);
  EXPECT_EQ(echo.backward_timing(), pb::BACKWARD_TIMING_TRAINING_STEP);
  EXPECT_EQ(ResolveMeasurement(echo, ServerOptions())->backward_timing,
            BackwardTiming::kTrainingStep);

  in.set_backward_timing(static_cast<pb::BackwardTiming>(7));
  plan = ResolveMeasurement(in, ServerOptions());
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(plan.status().message(), "measurement.backward_timing = 7: unknown enum value");
}

TEST(MeasurementTest, DefaultsRespectSmallLimits) {
  ServerOptions options;
  options.max_iterations = 3;
  options.max_duration_seconds = 0.5;
  const auto plan = ResolveMeasurement(pb::MeasurementSettings(), options);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->max_iterations, 3);
  EXPECT_EQ(plan->min_iterations, 3);
  EXPECT_DOUBLE_EQ(plan->max_duration_seconds, 0.5);
}

TEST(CheckSettingsTest, ModesAndRows) {
  pb::CheckSettings in;
  auto plan = ResolveCheck(in);
  ASSERT_TRUE(plan.ok());
  EXPECT_TRUE(plan->enabled);
  EXPECT_FALSE(plan->full);
  EXPECT_EQ(plan->max_sampled_rows, 4096);
  in.set_mode(pb::CHECK_MODE_OFF);
  EXPECT_FALSE(ResolveCheck(in)->enabled);
  in.set_mode(pb::CHECK_MODE_FULL);
  EXPECT_TRUE(ResolveCheck(in)->full);
  in.set_max_sampled_rows(0);
  EXPECT_EQ(ResolveCheck(in).status().code(), absl::StatusCode::kInvalidArgument);
  in.set_max_sampled_rows(10);
  EXPECT_EQ(ResolveCheck(in)->max_sampled_rows, 10);
  in.set_mode(static_cast<pb::CheckMode>(9));
  EXPECT_EQ(ResolveCheck(in).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace attnbench::server
