#include "server/sweep_grid.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnbench::server {
namespace {

namespace pb = ::attnbench::v1;
using ::testing::HasSubstr;

pb::SweepRequest Grid() {
  pb::SweepRequest sweep;
  sweep.mutable_base()->mutable_spec()->set_batch_size(1);
  sweep.mutable_base()->set_backend("cpu_reference");
  auto* seq = sweep.add_axes()->mutable_seq_len();
  seq->add_values(16);
  seq->add_values(32);
  seq->add_values(64);
  auto* dtype = sweep.add_axes()->mutable_dtype();
  dtype->add_values(pb::DTYPE_FLOAT32);
  dtype->add_values(pb::DTYPE_FLOAT16);
  return sweep;
}

TEST(SweepGridTest, RowMajorLastAxisFastest) {
  const pb::SweepRequest sweep = Grid();
  const auto total = CountSweepPoints(sweep, 100);
  ASSERT_TRUE(total.ok());
  ASSERT_EQ(*total, 6);
  const int64_t seqs[] = {16, 16, 32, 32, 64, 64};
  const pb::DType dtypes[] = {pb::DTYPE_FLOAT32, pb::DTYPE_FLOAT16, pb::DTYPE_FLOAT32,
                              pb::DTYPE_FLOAT16, pb::DTYPE_FLOAT32, pb::DTYPE_FLOAT16};
  for (int i = 0; i < 6; ++i) {
    const pb::RunRequest r = SweepPointRequest(sweep, i);
    EXPECT_EQ(r.spec().seq_len_q(), seqs[i]) << i;
    EXPECT_EQ(r.spec().seq_len_kv(), seqs[i]) << i;
    EXPECT_EQ(r.spec().dtype(), dtypes[i]) << i;
    EXPECT_EQ(r.spec().batch_size(), 1);  // base fields kept
    EXPECT_EQ(r.backend(), "cpu_reference");
  }
  EXPECT_EQ(DescribeSweepPoint(sweep, 3), "axes[0].seq_len=32, axes[1].dtype=DTYPE_FLOAT16");
}

TEST(SweepGridTest, EveryAxisKindApplies) {
  pb::SweepRequest sweep;
  sweep.mutable_base()->mutable_spec()->set_head_dim_v(8);
  sweep.add_axes()->mutable_seq_len_q()->add_values(3);
  sweep.add_axes()->mutable_seq_len_kv()->add_values(5);
  sweep.add_axes()->mutable_batch_size()->add_values(2);
  sweep.add_axes()->mutable_head_dim()->add_values(64);
  sweep.add_axes()->mutable_layout()->add_values()->mutable_gqa()->set_num_kv_heads(2);
  sweep.add_axes()->mutable_mask()->add_values()->mutable_causal();
  sweep.add_axes()->mutable_backend()->add_values("auto");
  sweep.add_axes()->mutable_phase()->add_values(pb::PHASE_DECODE);
  sweep.add_axes()->mutable_kv_compression_heads()->add_values(1);
  ASSERT_EQ(*CountSweepPoints(sweep, 1), 1);
  const pb::RunRequest r = SweepPointRequest(sweep, 0);
  EXPECT_EQ(r.spec().seq_len_q(), 3);
  EXPECT_EQ(r.spec().seq_len_kv(), 5);
  EXPECT_EQ(r.spec().batch_size(), 2);
  EXPECT_EQ(r.spec().head_dim_qk(), 64);
  EXPECT_EQ(r.spec().head_dim_v(), 8);  // the base set it, so the axis leaves it
  EXPECT_EQ(r.spec().layout().gqa().num_kv_heads(), 2);
  EXPECT_TRUE(r.spec().mask().has_causal());
  EXPECT_EQ(r.backend(), "auto");
  EXPECT_EQ(r.spec().phase(), pb::PHASE_DECODE);
  EXPECT_EQ(r.spec().kv_compression().target_kv_heads(), 1);
  EXPECT_THAT(DescribeSweepPoint(sweep, 0), ::testing::HasSubstr("kv_compression_heads=1"));
}

// A point's description goes into status messages: a client's long backend name is cut short.
TEST(SweepGridTest, LongBackendValuesAreDescribedShort) {
  pb::SweepRequest sweep;
  sweep.add_axes()->mutable_backend()->add_values(std::string(100000, 'b'));
  const std::string text = DescribeSweepPoint(sweep, 0);
  EXPECT_THAT(text, HasSubstr("axes[0].backend=bbbb"));
  EXPECT_THAT(text, HasSubstr("... (100000 bytes)"));
  EXPECT_LT(text.size(), 200u);
}

TEST(SweepGridTest, NoAxesIsTheBase) {
  pb::SweepRequest sweep;
  sweep.mutable_base()->mutable_spec()->set_seq_len_q(9);
  ASSERT_EQ(*CountSweepPoints(sweep, 1), 1);
  EXPECT_EQ(SweepPointRequest(sweep, 0).spec().seq_len_q(), 9);
}

TEST(SweepGridTest, BadGridsRefused) {
  pb::SweepRequest empty_axis = Grid();
  empty_axis.add_axes()->mutable_batch_size();
  auto s = CountSweepPoints(empty_axis, 100).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("axes[2]: no values"));

  pb::SweepRequest unset = Grid();
  unset.add_axes();
  s = CountSweepPoints(unset, 100).status();
  EXPECT_THAT(std::string(s.message()), HasSubstr("axes[2]: no axis set"));

  pb::SweepRequest conflict = Grid();
  conflict.add_axes()->mutable_seq_len_q()->add_values(8);
  s = CountSweepPoints(conflict, 100).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("axes[2]"));

  s = CountSweepPoints(Grid(), 5).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("--max_sweep_points"));
  EXPECT_TRUE(CountSweepPoints(Grid(), 6).ok());
}

TEST(SweepGridTest, HugeGridDoesNotOverflow) {
  // 10^15 points: the product must be refused, not wrap around to something small.
  pb::SweepRequest sweep;
  auto* q = sweep.add_axes()->mutable_seq_len_q();
  auto* kv = sweep.add_axes()->mutable_seq_len_kv();
  auto* b = sweep.add_axes()->mutable_batch_size();
  for (int i = 0; i < 100000; ++i) {
    q->add_values(i);
    kv->add_values(i);
    b->add_values(i);
  }
  EXPECT_EQ(CountSweepPoints(sweep, 10000).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace attnbench::server
