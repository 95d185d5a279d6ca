#include "client/fan_out.h"

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"

namespace attnbench::client {
namespace {

// Moves element `index` to the front and drops the rest (RepeatedField and RepeatedPtrField).
template <typename Repeated>
void KeepOne(Repeated* values, int index) {
  values->SwapElements(0, index);
  while (values->size() > 1) values->RemoveLast();
}

constexpr int64_t kMaxPoints = int64_t{1} << 30;

}  // namespace

int AxisSize(const v1::SweepAxis& axis) {
  switch (axis.axis_case()) {
    case v1::SweepAxis::kSeqLen:
      return axis.seq_len().values_size();
    case v1::SweepAxis::kSeqLenQ:
      return axis.seq_len_q().values_size();
    case v1::SweepAxis::kSeqLenKv:
      return axis.seq_len_kv().values_size();
    case v1::SweepAxis::kBatchSize:
      return axis.batch_size().values_size();
    case v1::SweepAxis::kHeadDim:
      return axis.head_dim().values_size();
    case v1::SweepAxis::kLayout:
      return axis.layout().values_size();
    case v1::SweepAxis::kMask:
      return axis.mask().values_size();
    case v1::SweepAxis::kDtype:
      return axis.dtype().values_size();
    case v1::SweepAxis::kBackend:
      return axis.backend().values_size();
    case v1::SweepAxis::kPhase:
      return axis.phase().values_size();
    case v1::SweepAxis::kKvCompressionHeads:
      return axis.kv_compression_heads().values_size();
    case v1::SweepAxis::AXIS_NOT_SET:
      break;
  }
  return 0;
}

v1::SweepAxis AxisWithValue(const v1::SweepAxis& axis, int index) {
  v1::SweepAxis out = axis;
  switch (out.axis_case()) {
    case v1::SweepAxis::kSeqLen:
      KeepOne(out.mutable_seq_len()->mutable_values(), index);
      break;
    case v1::SweepAxis::kSeqLenQ:
      KeepOne(out.mutable_seq_len_q()->mutable_values(), index);
      break;
    case v1::SweepAxis::kSeqLenKv:
      KeepOne(out.mutable_seq_len_kv()->mutable_values(), index);
      break;
    case v1::SweepAxis::kBatchSize:
      KeepOne(out.mutable_batch_size()->mutable_values(), index);
      break;
    case v1::SweepAxis::kHeadDim:
      KeepOne(out.mutable_head_dim()->mutable_values(), index);
      break;
    case v1::SweepAxis::kLayout:
      KeepOne(out.mutable_layout()->mutable_values(), index);
      break;
    case v1::SweepAxis::kMask:
      KeepOne(out.mutable_mask()->mutable_values(), index);
      break;
    case v1::SweepAxis::kDtype:
      KeepOne(out.mutable_dtype()->mutable_values(), index);
      break;
    case v1::SweepAxis::kBackend:
      KeepOne(out.mutable_backend()->mutable_values(), index);
      break;
    case v1::SweepAxis::kPhase:
      KeepOne(out.mutable_phase()->mutable_values(), index);
      break;
    case v1::SweepAxis::kKvCompressionHeads:
      KeepOne(out.mutable_kv_compression_heads()->mutable_values(), index);
      break;
    case v1::SweepAxis::AXIS_NOT_SET:
      break;
  }
  return out;
}

absl::StatusOr<SweepSplit> SplitSweep(const v1::SweepRequest& request) {
  if (request.axes_size() == 0) return absl::InvalidArgumentError("a sweep needs an axis");
  int64_t total = 1;
  int split_axis = -1;
  for (int a = 0; a < request.axes_size(); ++a) {
    const int size = AxisSize(request.axes(a));
    if (size == 0) return absl::InvalidArgumentError(absl::StrCat("sweep axis ", a, " is empty"));
    if (size > 1 && split_axis < 0) split_axis = a;
    total *= size;
    if (total > kMaxPoints) {
      return absl::InvalidArgumentError(absl::StrCat("a grid over ", kMaxPoints, " points"));
    }
  }
  SweepSplit split;
  split.total_points = static_cast<int>(total);
  if (split_axis < 0) {
    split.parts.push_back(SweepPart{request, 0, split.total_points});
    return split;
  }
  const int values = AxisSize(request.axes(split_axis));
  const int per_part = split.total_points / values;
  for (int v = 0; v < values; ++v) {
    SweepPart part;
    part.request = request;
    *part.request.mutable_axes(split_axis) = AxisWithValue(request.axes(split_axis), v);
    part.first_point = v * per_part;
    part.points = per_part;
    split.parts.push_back(std::move(part));
  }
  return split;
}

absl::Status FanOutSweep(const SweepSplit& split, int concurrency, const SweepCall& call,
                         const std::function<void(const v1::SweepResponse&)>& on_response) {
  std::mutex mu;
  size_t next_part = 0;
  int completed = 0;
  absl::Status first_error;
  std::vector<bool> seen(split.total_points, false);
  CallCanceller canceller;

  // Called with `mu` held.
  auto fail = [&](absl::Status status) {
    if (!first_error.ok()) return;
    first_error = std::move(status);
    canceller.Cancel();
  };

  auto worker = [&] {
    while (true) {
      size_t index;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (!first_error.ok() || next_part >= split.parts.size()) return;
        index = next_part++;
      }
      const SweepPart& part = split.parts[index];
      int received = 0;
      absl::Status status = call(
          part.request,
          [&](const v1::SweepResponse& response) {
            std::lock_guard<std::mutex> lock(mu);
            if (!first_error.ok()) return;
            if (response.total_points() != part.points || response.point_index() < 0 ||
                response.point_index() >= part.points) {
              fail(absl::DataLossError(
                  absl::StrCat("sub-sweep ", index, " sent point ", response.point_index(), " of ",
                               response.total_points(), ", expected one of ", part.points)));
              return;
            }
            const int global = part.first_point + response.point_index();
            if (seen[global]) {
              fail(absl::DataLossError(absl::StrCat("point ", global, " arrived twice")));
              return;
            }
            seen[global] = true;
            ++received;
            v1::SweepResponse merged = response;
            merged.set_point_index(global);
            merged.set_total_points(split.total_points);
            merged.set_completed_points(++completed);
            on_response(merged);
          },
          &canceller);
      std::lock_guard<std::mutex> lock(mu);
      if (!status.ok()) {
        fail(std::move(status));
        return;
      }
      if (received != part.points) {
        fail(absl::DataLossError(absl::StrCat("sub-sweep ", index, " ended after ", received,
                                              " of ", part.points, " points")));
        return;
      }
    }
  };

  const size_t threads =
      std::min(split.parts.size(), static_cast<size_t>(std::max(concurrency, 1)));
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (size_t t = 0; t < threads; ++t) pool.emplace_back(worker);
  for (std::thread& thread : pool) thread.join();
  return first_error;
}

}  // namespace attnbench::client
