#include "kernels/cuda/backend/device_backward.h"

#include <cuda_runtime.h>

#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda/backend/cuda_status.h"
#include "kernels/cuda/backend/device_tensor.h"
#include "kernels/spec/dtype.h"

namespace attnbench::cuda {
namespace {

uint64_t StoredBytes(const Shape& shape, DType dtype) {
  return static_cast<uint64_t>(NumElements(shape)) * DTypeBytes(dtype);
}

uint64_t OutputRows(const ProblemShapes& s) {
  return static_cast<uint64_t>(s.batch) * s.heads.num_output_heads * s.seq_q;
}

// Offsets (one more than heads) and members of the output heads reading each head, ascending: the
// CSR form of the inverted head map. `kv` picks the key/value side of each pair.
void AppendInverse(const HeadConfig& heads, bool kv, std::vector<int32_t>& offsets,
                   std::vector<int32_t>& members) {
  const int count = kv ? heads.num_kv_heads : heads.num_query_heads;
  for (int head = 0; head < count; ++head) {
    offsets.push_back(static_cast<int32_t>(members.size()));
    for (int h = 0; h < static_cast<int>(heads.map.size()); ++h) {
      const HeadPair& p = heads.map[h];
      if ((kv ? p.kv_head : p.query_head) == head) members.push_back(h);
    }
  }
  offsets.push_back(static_cast<int32_t>(members.size()));
}

uint64_t InverseMapBytes(const ProblemShapes& s) {
  const uint64_t entries = static_cast<uint64_t>(s.heads.num_query_heads) + 1 +
                           s.heads.num_kv_heads + 1 + 2 * s.heads.map.size();
  return entries * sizeof(int32_t);
}

}  // namespace

uint64_t DeviceBackward::EstimateBytes(const Problem& problem, const ProblemShapes& s) {
  const DType w = problem.dtype;
  return StoredBytes(s.core_output, w) +                                      // dO
         static_cast<uint64_t>(NumElements(s.core_output)) * sizeof(float) +  // O in float32
         2 * OutputRows(s) * sizeof(float) +                                  // lse, D
         StoredBytes(s.query, w) + StoredBytes(s.key, w) + StoredBytes(s.value, w) +  // dQ, dK, dV
         InverseMapBytes(s);
}

absl::StatusOr<std::unique_ptr<DeviceBackward>> DeviceBackward::Create(
    const Problem& problem, const ProblemShapes& shapes, const AttentionInputs& inputs) {
  std::unique_ptr<DeviceBackward> db(new DeviceBackward());
  db->dtype_ = problem.dtype;
  db->query_shape_ = shapes.query;
  db->key_shape_ = shapes.key;
  db->value_shape_ = shapes.value;
  BackwardArgs& g = db->args_;

  if (inputs.grad_output.shape != shapes.core_output) {
    return absl::InternalError("the backward's dO does not have the shape of the output");
  }
  absl::StatusOr<DeviceBuffer> b;
  if (inputs.grad_output.values.empty()) {
    b = AllocateNaN(StoredBytes(shapes.core_output, problem.dtype), "the output gradient dO");
  } else {
    const std::string dout = EncodeTensor(inputs.grad_output);
    b = DeviceBuffer::Upload(dout.data(), dout.size(), "the output gradient dO");
  }
  if (!b.ok()) return b.status();
  db->grad_out_ = *std::move(b);
  g.grad_out = db->grad_out_.get();

  b = DeviceBuffer::Allocate(NumElements(shapes.core_output) * sizeof(float),
                             "the float32 output kept for the backward");
  if (!b.ok()) return b.status();
  db->out_ = *std::move(b);
  g.out = db->out_.as<float>();
  b = DeviceBuffer::Allocate(OutputRows(shapes) * sizeof(float), "the log-sum-exp");
  if (!b.ok()) return b.status();
  db->lse_ = *std::move(b);
  g.lse = db->lse_.as<float>();
  b = DeviceBuffer::Allocate(OutputRows(shapes) * sizeof(float), "the row terms D = <dO, O>");
  if (!b.ok()) return b.status();
  db->row_terms_ = *std::move(b);
  g.row_terms = db->row_terms_.as<float>();

  b = AllocateNaN(StoredBytes(shapes.query, problem.dtype), "the query gradient dQ");
  if (!b.ok()) return b.status();
  db->dq_ = *std::move(b);
  g.dq = db->dq_.get();
  b = AllocateNaN(StoredBytes(shapes.key, problem.dtype), "the key gradient dK");
  if (!b.ok()) return b.status();
  db->dk_ = *std::move(b);
  g.dk = db->dk_.get();
  b = AllocateNaN(StoredBytes(shapes.value, problem.dtype), "the value gradient dV");
  if (!b.ok()) return b.status();
  db->dv_ = *std::move(b);
  g.dv = db->dv_.get();

  // One table: query offsets, query members, kv offsets, kv members.
  std::vector<int32_t> q_offsets, q_members, kv_offsets, kv_members;
  AppendInverse(shapes.heads, /*kv=*/false, q_offsets, q_members);
  AppendInverse(shapes.heads, /*kv=*/true, kv_offsets, kv_members);
  std::vector<int32_t> table;
  for (const std::vector<int32_t>* part : {&q_offsets, &q_members, &kv_offsets, &kv_members}) {
    table.insert(table.end(), part->begin(), part->end());
  }
  b = DeviceBuffer::Upload(table.data(), table.size() * sizeof(int32_t),
                           "the output heads of each query and key/value head");
  if (!b.ok()) return b.status();
  db->heads_ = *std::move(b);
  const int32_t* base = db->heads_.as<int32_t>();
  g.query_head_offsets = base;
  g.query_heads = g.query_head_offsets + q_offsets.size();
  g.kv_head_offsets = g.query_heads + q_members.size();
  g.kv_heads = g.kv_head_offsets + kv_offsets.size();
  return db;
}

absl::StatusOr<GradientTensors> DeviceBackward::DownloadGradients() const {
  GradientTensors g;
  absl::StatusOr<FloatTensor> t = DownloadTensor(dq_.get(), query_shape_, dtype_);
  if (!t.ok()) return t.status();
  g.dq = *std::move(t);
  t = DownloadTensor(dk_.get(), key_shape_, dtype_);
  if (!t.ok()) return t.status();
  g.dk = *std::move(t);
  t = DownloadTensor(dv_.get(), value_shape_, dtype_);
  if (!t.ok()) return t.status();
  g.dv = *std::move(t);
  return g;
}

}  // namespace attnbench::cuda
