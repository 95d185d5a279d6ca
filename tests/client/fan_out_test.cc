// Fan-out of a sweep (client/fan_out.h): splitting the grid along its first axis with several
// values, and merging concurrent sub-sweeps back into the grid's point indices, against a fake
// server that computes each sub-grid itself and answers from several threads at once.
#include "client/fan_out.h"

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/test_util.h"

namespace attnbench::client {
namespace {

using ::attnbench::client::testing::EqualsProto;
using ::attnbench::client::testing::Proto;
using ::testing::HasSubstr;

// backend[1] x layout[3] x mask[2] x seq_len[2]: split along the layout axis, 3 parts of 4.
v1::SweepRequest Grid() {
  return Proto<v1::SweepRequest>(R"pb(
    base { spec { batch_size: 1 head_dim_qk: 64 dtype: DTYPE_FLOAT32 } }
    axes { backend { values: "cpu_reference" } }
    axes {
      layout {
        values { mha { num_heads: 4 } }
        values { gqa { num_query_heads: 4 num_kv_heads: 2 } }
        values { mqa { num_heads: 4 } }
      }
    }
    axes {
      mask {
        values {}
        values { causal {} }
      }
    }
    axes { seq_len { values: 64 values: 128 } }
    continue_on_error: true
  )pb");
}

// The coordinates of point `index` of a grid with axis sizes `sizes` (row-major, last fastest).
std::vector<int> Coordinates(int index, const std::vector<int>& sizes) {
  std::vector<int> coords(sizes.size());
  for (int a = static_cast<int>(sizes.size()) - 1; a >= 0; --a) {
    coords[a] = index % sizes[a];
    index /= sizes[a];
  }
  return coords;
}

// A label naming the axis values of one point, e.g. "cpu_reference|1|0|128".
std::string Label(const v1::SweepRequest& request, const std::vector<int>& coords) {
  std::string label;
  for (int a = 0; a < request.axes_size(); ++a) {
    const v1::SweepAxis& axis = request.axes(a);
    const int v = coords[a];
    std::string value;
    switch (axis.axis_case()) {
      case v1::SweepAxis::kBackend:
        value = axis.backend().values(v);
        break;
      case v1::SweepAxis::kLayout:
        value = axis.layout().values(v).ShortDebugString();
        break;
      case v1::SweepAxis::kMask:
        value = axis.mask().values(v).ShortDebugString();
        break;
      case v1::SweepAxis::kSeqLen:
        value = absl::StrCat(axis.seq_len().values(v));
        break;
      default:
        value = "?";
    }
    absl::StrAppend(&label, a == 0 ? "" : "|", value);
  }
  return label;
}

std::vector<int> Sizes(const v1::SweepRequest& request) {
  std::vector<int> sizes;
  for (const v1::SweepAxis& axis : request.axes()) sizes.push_back(AxisSize(axis));
  return sizes;
}

// What the whole grid's point `index` is, computed from the unsplit request.
std::string ExpectedLabel(const v1::SweepRequest& grid, int index) {
  return Label(grid, Coordinates(index, Sizes(grid)));
}

// A fake Sweep: streams every point of the sub-grid it is given, last point first, with the
// point's label in RunResult.server; counts concurrent calls.
struct FakeServer {
  std::atomic<int> running{0};
  std::atomic<int> max_running{0};
  std::atomic<int> calls{0};
  std::chrono::milliseconds hold{20};

  absl::Status Call(const v1::SweepRequest& request,
                    const std::function<void(const v1::SweepResponse&)>& on_response,
                    CallCanceller* canceller) {
    ++calls;
    const int now = ++running;
    int seen = max_running.load();
    while (now > seen && !max_running.compare_exchange_weak(seen, now)) {
    }
    // Hold the call open so that concurrent parts overlap.
    std::this_thread::sleep_for(hold);
    const std::vector<int> sizes = Sizes(request);
    int total = 1;
    for (int size : sizes) total *= size;
    for (int i = total - 1; i >= 0; --i) {
      v1::SweepResponse response;
      response.set_point_index(i);
      response.set_total_points(total);
      response.set_completed_points(total - i);
      response.mutable_result()->set_server(Label(request, Coordinates(i, sizes)));
      on_response(response);
    }
    --running;
    return canceller->cancelled() ? absl::CancelledError("cancelled") : absl::OkStatus();
  }

  SweepCall AsCall() {
    return [this](const v1::SweepRequest& r, const std::function<void(const v1::SweepResponse&)>& f,
                  CallCanceller* c) { return Call(r, f, c); };
  }
};

TEST(FanOutTest, AxisSizeAndAxisWithValue) {
  const v1::SweepRequest grid = Grid();
  EXPECT_EQ(Sizes(grid), (std::vector<int>{1, 3, 2, 2}));
  EXPECT_EQ(AxisSize(v1::SweepAxis()), 0);
  EXPECT_THAT(AxisWithValue(grid.axes(1), 2), EqualsProto(Proto<v1::SweepAxis>(R"pb(
                layout { values { mqa { num_heads: 4 } } }
              )pb")));
  EXPECT_THAT(AxisWithValue(grid.axes(3), 1),
              EqualsProto(Proto<v1::SweepAxis>("seq_len { values: 128 }")));
  v1::SweepAxis dtypes = Proto<v1::SweepAxis>(
      "dtype { values: DTYPE_FLOAT32 values: DTYPE_FLOAT16 values: DTYPE_BFLOAT16 }");
  EXPECT_THAT(AxisWithValue(dtypes, 1),
              EqualsProto(Proto<v1::SweepAxis>("dtype { values: DTYPE_FLOAT16 }")));
}

TEST(FanOutTest, SplitsAlongTheFirstAxisWithSeveralValues) {
  const v1::SweepRequest grid = Grid();
  absl::StatusOr<SweepSplit> split = SplitSweep(grid);
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_EQ(split->total_points, 12);
  ASSERT_EQ(split->parts.size(), 3u);
  for (int p = 0; p < 3; ++p) {
    const SweepPart& part = split->parts[p];
    EXPECT_EQ(part.first_point, 4 * p);
    EXPECT_EQ(part.points, 4);
    // Only the layout axis changed, to its value p; the base and the flags stay.
    v1::SweepRequest expected = grid;
    *expected.mutable_axes(1) = AxisWithValue(grid.axes(1), p);
    EXPECT_THAT(part.request, EqualsProto(expected));
  }
}

TEST(FanOutTest, SingleValuedGridIsOnePart) {
  v1::SweepRequest request = Proto<v1::SweepRequest>(R"pb(
    axes { seq_len { values: 64 } }
    axes { backend { values: "cpu_reference" } }
  )pb");
  absl::StatusOr<SweepSplit> split = SplitSweep(request);
  ASSERT_TRUE(split.ok());
  ASSERT_EQ(split->parts.size(), 1u);
  EXPECT_EQ(split->total_points, 1);
  EXPECT_THAT(split->parts[0].request, EqualsProto(request));
}

TEST(FanOutTest, SplitRejectsBadGrids) {
  EXPECT_THAT(std::string(SplitSweep(v1::SweepRequest()).status().message()),
              HasSubstr("needs an axis"));
  v1::SweepRequest empty_axis = Grid();
  empty_axis.mutable_axes(2)->mutable_mask()->clear_values();
  EXPECT_THAT(std::string(SplitSweep(empty_axis).status().message()), HasSubstr("axis 2 is empty"));
  v1::SweepRequest huge;
  for (int a = 0; a < 4; ++a) {
    v1::SweepAxis* axis = huge.add_axes();
    for (int v = 0; v < 1000; ++v) axis->mutable_seq_len()->add_values(v + 1);
  }
  EXPECT_EQ(SplitSweep(huge).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(FanOutTest, MergesEveryPointOnceAtItsGlobalIndex) {
  const v1::SweepRequest grid = Grid();
  absl::StatusOr<SweepSplit> split = SplitSweep(grid);
  ASSERT_TRUE(split.ok());
  FakeServer server;
  std::vector<v1::SweepResponse> merged;
  std::atomic<int> inside{0};
  bool overlapped = false;
  absl::Status status =
      FanOutSweep(*split, 2, server.AsCall(), [&](const v1::SweepResponse& response) {
        // Never called concurrently.
        overlapped = overlapped || ++inside > 1;
        merged.push_back(response);
        --inside;
      });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_FALSE(overlapped);
  EXPECT_EQ(server.calls.load(), 3);
  EXPECT_EQ(server.max_running.load(), 2);  // At most --fan_out at once, and that many.
  ASSERT_EQ(merged.size(), 12u);
  std::map<int, std::string> by_index;
  for (size_t i = 0; i < merged.size(); ++i) {
    EXPECT_EQ(merged[i].total_points(), 12);
    EXPECT_EQ(merged[i].completed_points(), static_cast<int>(i) + 1);
    EXPECT_TRUE(by_index.emplace(merged[i].point_index(), merged[i].result().server()).second)
        << "point " << merged[i].point_index() << " twice";
  }
  for (int index = 0; index < 12; ++index) {
    ASSERT_EQ(by_index.count(index), 1u) << index;
    EXPECT_EQ(by_index[index], ExpectedLabel(grid, index)) << "point " << index;
  }
}

TEST(FanOutTest, ConcurrencyAboveThePartCountRunsEveryPartAtOnce) {
  absl::StatusOr<SweepSplit> split = SplitSweep(Grid());
  ASSERT_TRUE(split.ok());
  FakeServer server;
  server.hold = std::chrono::milliseconds(100);
  int count = 0;
  ASSERT_TRUE(
      FanOutSweep(*split, 16, server.AsCall(), [&](const v1::SweepResponse&) { ++count; }).ok());
  EXPECT_EQ(count, 12);
  EXPECT_EQ(server.max_running.load(), 3);
}

TEST(FanOutTest, FirstFailureCancelsTheOtherParts) {
  absl::StatusOr<SweepSplit> split = SplitSweep(Grid());
  ASSERT_TRUE(split.ok());
  std::atomic<int> calls{0};
  std::atomic<bool> saw_cancel{false};
  const auto start = std::chrono::steady_clock::now();
  absl::Status status = FanOutSweep(
      *split, 3,
      [&](const v1::SweepRequest& request, const std::function<void(const v1::SweepResponse&)>&,
          CallCanceller* canceller) -> absl::Status {
        ++calls;
        if (request.axes(1).layout().values(0).has_gqa()) {
          return absl::ResourceExhaustedError("no memory for gqa");
        }
        // The others wait (boundedly) to be cancelled, as a long sub-sweep would.
        for (int i = 0; i < 1000 && !canceller->cancelled(); ++i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        saw_cancel = saw_cancel || canceller->cancelled();
        return absl::CancelledError("cancelled");
      },
      [](const v1::SweepResponse&) {});
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(status.message(), "no memory for gqa");
  EXPECT_TRUE(saw_cancel.load());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

TEST(FanOutTest, NoNewPartsStartAfterAFailure) {
  absl::StatusOr<SweepSplit> split = SplitSweep(Grid());
  ASSERT_TRUE(split.ok());
  int calls = 0;
  absl::Status status = FanOutSweep(
      *split, 1,
      [&](const v1::SweepRequest&, const std::function<void(const v1::SweepResponse&)>&,
          CallCanceller*) {
        ++calls;
        return absl::UnavailableError("down");
      },
      [](const v1::SweepResponse&) {});
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(calls, 1);
}

// A sub-sweep stream that breaks the grid is DATA_LOSS.
TEST(FanOutTest, BrokenStreamsAreDataLoss) {
  absl::StatusOr<SweepSplit> split = SplitSweep(Grid());
  ASSERT_TRUE(split.ok());
  struct Case {
    std::string name;
    std::vector<std::pair<int, int>> points;  // (point_index, total_points) sent by every part
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {"duplicate", {{0, 4}, {0, 4}, {1, 4}, {2, 4}}, "arrived twice"},
           {"missing", {{0, 4}, {1, 4}, {3, 4}}, "ended after 3 of 4 points"},
           {"outside", {{4, 4}}, "sent point 4 of 4"},
           {"wrong total", {{0, 12}}, "sent point 0 of 12"},
       }) {
    absl::Status status = FanOutSweep(
        *split, 1,
        [&](const v1::SweepRequest&,
            const std::function<void(const v1::SweepResponse&)>& on_response, CallCanceller*) {
          for (auto [index, total] : c.points) {
            v1::SweepResponse response;
            response.set_point_index(index);
            response.set_total_points(total);
            on_response(response);
          }
          return absl::OkStatus();
        },
        [](const v1::SweepResponse&) {});
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << c.name;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.message)) << c.name;
  }
}

}  // namespace
}  // namespace attnbench::client
