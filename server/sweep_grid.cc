#include "server/sweep_grid.h"

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace attnbench::server {
namespace {

namespace pb = ::attnbench::v1;

// Fields of RunRequest an axis may set, as bits, to find two axes setting the same one.
enum FieldBit : uint32_t {
  kSeqQ = 1 << 0,
  kSeqKv = 1 << 1,
  kBatch = 1 << 2,
  kHeadDim = 1 << 3,
  kLayout = 1 << 4,
  kMask = 1 << 5,
  kDType = 1 << 6,
  kBackend = 1 << 7,
  kPhase = 1 << 8,
  kKvCompression = 1 << 9,
};

int AxisSize(const pb::SweepAxis& axis) {
  switch (axis.axis_case()) {
    case pb::SweepAxis::kSeqLen:
      return axis.seq_len().values_size();
    case pb::SweepAxis::kSeqLenQ:
      return axis.seq_len_q().values_size();
    case pb::SweepAxis::kSeqLenKv:
      return axis.seq_len_kv().values_size();
    case pb::SweepAxis::kBatchSize:
      return axis.batch_size().values_size();
    case pb::SweepAxis::kHeadDim:
      return axis.head_dim().values_size();
    case pb::SweepAxis::kLayout:
      return axis.layout().values_size();
    case pb::SweepAxis::kMask:
      return axis.mask().values_size();
    case pb::SweepAxis::kDtype:
      return axis.dtype().values_size();
    case pb::SweepAxis::kBackend:
      return axis.backend().values_size();
    case pb::SweepAxis::kPhase:
      return axis.phase().values_size();
    case pb::SweepAxis::kKvCompressionHeads:
      return axis.kv_compression_heads().values_size();
    case pb::SweepAxis::AXIS_NOT_SET:
      break;
  }
  return 0;
}

uint32_t AxisFields(const pb::SweepAxis& axis) {
  switch (axis.axis_case()) {
    case pb::SweepAxis::kSeqLen:
      return kSeqQ | kSeqKv;
    case pb::SweepAxis::kSeqLenQ:
      return kSeqQ;
    case pb::SweepAxis::kSeqLenKv:
      return kSeqKv;
    case pb::SweepAxis::kBatchSize:
      return kBatch;
    case pb::SweepAxis::kHeadDim:
      return kHeadDim;
    case pb::SweepAxis::kLayout:
      return kLayout;
    case pb::SweepAxis::kMask:
      return kMask;
    case pb::SweepAxis::kDtype:
      return kDType;
    case pb::SweepAxis::kBackend:
      return kBackend;
    case pb::SweepAxis::kPhase:
      return kPhase;
    case pb::SweepAxis::kKvCompressionHeads:
      return kKvCompression;
    case pb::SweepAxis::AXIS_NOT_SET:
      break;
  }
  return 0;
}

// The value index each axis takes at point `index` (last axis fastest).
std::vector<int> Coordinates(const pb::SweepRequest& sweep, int index) {
  std::vector<int> coords(sweep.axes_size());
  for (int a = sweep.axes_size() - 1; a >= 0; --a) {
    const int size = AxisSize(sweep.axes(a));
    coords[a] = index % size;
    index /= size;
  }
  return coords;
}

void Apply(const pb::SweepAxis& axis, int i, pb::RunRequest* request) {
  pb::AttentionSpec* spec = request->mutable_spec();
  switch (axis.axis_case()) {
    case pb::SweepAxis::kSeqLen:
      spec->set_seq_len_q(axis.seq_len().values(i));
      spec->set_seq_len_kv(axis.seq_len().values(i));
      break;
    case pb::SweepAxis::kSeqLenQ:
      spec->set_seq_len_q(axis.seq_len_q().values(i));
      break;
    case pb::SweepAxis::kSeqLenKv:
      spec->set_seq_len_kv(axis.seq_len_kv().values(i));
      break;
    case pb::SweepAxis::kBatchSize:
      spec->set_batch_size(axis.batch_size().values(i));
      break;
    case pb::SweepAxis::kHeadDim:
      // head_dim_v follows through normalization when the base leaves it unset.
      spec->set_head_dim_qk(axis.head_dim().values(i));
      break;
    case pb::SweepAxis::kLayout:
      *spec->mutable_layout() = axis.layout().values(i);
      break;
    case pb::SweepAxis::kMask:
      *spec->mutable_mask() = axis.mask().values(i);
      break;
    case pb::SweepAxis::kDtype:
      spec->set_dtype(axis.dtype().values(i));
      break;
    case pb::SweepAxis::kBackend:
      request->set_backend(axis.backend().values(i));
      break;
    case pb::SweepAxis::kPhase:
      spec->set_phase(axis.phase().values(i));
      break;
    case pb::SweepAxis::kKvCompressionHeads:
      spec->mutable_kv_compression()->set_target_kv_heads(axis.kv_compression_heads().values(i));
      break;
    case pb::SweepAxis::AXIS_NOT_SET:
      break;
  }
}

// A backend name from the client, escaped and cut short: the description ends up in a status
// message, which must stay far below gRPC's metadata size limit.
std::string Clipped(absl::string_view text) {
  constexpr size_t kShown = 64;
  std::string out = absl::CHexEscape(text.substr(0, kShown));
  if (text.size() > kShown) absl::StrAppend(&out, "... (", text.size(), " bytes)");
  return out;
}

std::string Describe(const pb::SweepAxis& axis, int i) {
  switch (axis.axis_case()) {
    case pb::SweepAxis::kSeqLen:
      return absl::StrCat("seq_len=", axis.seq_len().values(i));
    case pb::SweepAxis::kSeqLenQ:
      return absl::StrCat("seq_len_q=", axis.seq_len_q().values(i));
    case pb::SweepAxis::kSeqLenKv:
      return absl::StrCat("seq_len_kv=", axis.seq_len_kv().values(i));
    case pb::SweepAxis::kBatchSize:
      return absl::StrCat("batch_size=", axis.batch_size().values(i));
    case pb::SweepAxis::kHeadDim:
      return absl::StrCat("head_dim=", axis.head_dim().values(i));
    case pb::SweepAxis::kLayout:
      return absl::StrCat("layout[", i, "]");
    case pb::SweepAxis::kMask:
      return absl::StrCat("mask[", i, "]");
    case pb::SweepAxis::kDtype:
      return absl::StrCat("dtype=", pb::DType_Name(axis.dtype().values(i)));
    case pb::SweepAxis::kBackend:
      return absl::StrCat("backend=", Clipped(axis.backend().values(i)));
    case pb::SweepAxis::kPhase:
      return absl::StrCat("phase=", pb::Phase_Name(axis.phase().values(i)));
    case pb::SweepAxis::kKvCompressionHeads:
      return absl::StrCat("kv_compression_heads=", axis.kv_compression_heads().values(i));
    case pb::SweepAxis::AXIS_NOT_SET:
      break;
  }
  return "?";
}

}  // namespace

absl::StatusOr<int> CountSweepPoints(const pb::SweepRequest& sweep, int max_points) {
  int64_t total = 1;
  uint32_t seen = 0;
  for (int a = 0; a < sweep.axes_size(); ++a) {
    const pb::SweepAxis& axis = sweep.axes(a);
    if (axis.axis_case() == pb::SweepAxis::AXIS_NOT_SET) {
      return absl::InvalidArgumentError(absl::StrCat("axes[", a, "]: no axis set"));
    }
    const int size = AxisSize(axis);
    if (size == 0) {
      return absl::InvalidArgumentError(absl::StrCat("axes[", a, "]: no values"));
    }
    const uint32_t fields = AxisFields(axis);
    if ((seen & fields) != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("axes[", a, "]: sets a field an earlier axis already sweeps"));
    }
    seen |= fields;
    // Checked per axis so the product cannot overflow before it is compared.
    total *= size;
    if (total > max_points) {
      return absl::InvalidArgumentError(absl::StrCat("axes: the grid has more than ", max_points,
                                                     " points (--max_sweep_points) after axes[", a,
                                                     "]"));
    }
  }
  return static_cast<int>(total);
}

pb::RunRequest SweepPointRequest(const pb::SweepRequest& sweep, int index) {
  pb::RunRequest request = sweep.base();
  const std::vector<int> coords = Coordinates(sweep, index);
  for (int a = 0; a < sweep.axes_size(); ++a) Apply(sweep.axes(a), coords[a], &request);
  return request;
}

std::string DescribeSweepPoint(const pb::SweepRequest& sweep, int index) {
  const std::vector<int> coords = Coordinates(sweep, index);
  std::vector<std::string> parts;
  for (int a = 0; a < sweep.axes_size(); ++a) {
    parts.push_back(absl::StrCat("axes[", a, "].", Describe(sweep.axes(a), coords[a])));
  }
  return absl::StrJoin(parts, ", ");
}

}  // namespace attnbench::server
