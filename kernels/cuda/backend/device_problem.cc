#include "kernels/cuda/backend/device_problem.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/backend/cuda_status.h"
#include "kernels/cuda/backend/device_tensor.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/mask.h"
#include "kernels/spec/modifiers.h"

namespace attnbench::cuda {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

uint64_t InputBytes(const ProblemShapes& s, DType dtype) {
  return static_cast<uint64_t>(NumElements(s.query) + NumElements(s.key) + NumElements(s.value)) *
         DTypeBytes(dtype);
}

// A layer's Q, K, V (and W_q, W_k, W_v) share one allocation each, every tensor starting on 256
// bytes: aligned for the kernels' vector and TMA loads, and at one stride from the next tensor of
// the same width, so those projections are one strided-batched GEMM.
constexpr uint64_t kLayerAlignment = 256;
uint64_t LayerRegion(int64_t elements, DType dtype) {
  const uint64_t bytes = static_cast<uint64_t>(elements) * DTypeBytes(dtype);
  return (bytes + kLayerAlignment - 1) / kLayerAlignment * kLayerAlignment;
}

// Device bytes of a layer beside the tables and Y: X, the weights, Q, K, V and the core's O.
uint64_t LayerBytes(const ProblemShapes& s, DType dtype) {
  uint64_t bytes = LayerRegion(NumElements(s.x), dtype) + LayerRegion(NumElements(s.w_o), dtype) +
                   LayerRegion(NumElements(s.core_output), dtype);
  for (const Shape* w : {&s.w_q, &s.w_k, &s.w_v}) bytes += LayerRegion(NumElements(*w), dtype);
  for (const Shape* t : {&s.query, &s.key, &s.value}) bytes += LayerRegion(NumElements(*t), dtype);
  return bytes;
}

// Positions a RoPE table covers: queries sit at i + (S_kv - S_q), keys at j.
int64_t FirstPosition(const ProblemShapes& s) { return std::min<int64_t>(0, s.seq_kv - s.seq_q); }

uint64_t RopeTableBytes(const Problem& p, const ProblemShapes& s) {
  if (!p.rope.enabled) return 0;
  const int64_t half = p.rope.rotary_dims.value_or(p.head_dim_qk) / 2;
  return static_cast<uint64_t>(s.seq_kv - FirstPosition(s)) * half * 2 * sizeof(float);
}

uint64_t BitmapBytes(const Problem& p, const ProblemShapes& s) {
  const Mask& m = p.mask;
  if (m.kind != MaskKind::kBlockSparse && m.kind != MaskKind::kProbabilisticBlockSparse) return 0;
  const uint64_t one = static_cast<uint64_t>(CeilDiv(s.seq_q, m.query_block_tokens)) *
                       CeilDiv(s.seq_kv, m.kv_block_tokens);
  if (m.kind == MaskKind::kBlockSparse) return one;
  return one * s.batch * s.heads.num_output_heads;
}

}  // namespace

Storage StorageOf(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return Storage::kFloat16;
    case DType::kBFloat16:
      return Storage::kBFloat16;
    default:
      return Storage::kFloat32;
  }
}

DType DeviceDType(const Problem& problem) {
  return problem.dtype == DType::kFloat8E4M3 ? DType::kFloat32 : problem.dtype;
}

AttentionArgs ShapeArgs(const Problem& problem, const ProblemShapes& shapes) {
  AttentionArgs a;
  a.storage = StorageOf(DeviceDType(problem));
  a.batch = static_cast<int32_t>(shapes.batch);
  a.seq_q = shapes.seq_q;
  a.seq_kv = shapes.seq_kv;
  a.heads_q = shapes.heads.num_query_heads;
  a.heads_kv = shapes.heads.num_kv_heads;
  a.heads_out = shapes.heads.num_output_heads;
  a.dim_qk = static_cast<int32_t>(shapes.dim_qk);
  a.dim_v = static_cast<int32_t>(shapes.dim_v);
  a.scale = static_cast<float>(problem.scale.value_or(1.0 / std::sqrt(shapes.dim_qk)));
  a.offset = shapes.seq_kv - shapes.seq_q;
  const Mask& m = problem.mask;
  a.mask = MaskCode::kUnknown;  // a mask kind with no case below stays refused
  switch (m.kind) {
    case MaskKind::kNone:
      a.mask = MaskCode::kNone;
      break;
    case MaskKind::kCausal:
      a.mask = MaskCode::kCausal;
      break;
    case MaskKind::kSlidingWindow:
      a.mask = MaskCode::kWindow;
      a.window_left = m.left_tokens.value_or(-1);
      a.window_right = m.right_tokens.value_or(-1);
      break;
    case MaskKind::kBlockSparse:
    case MaskKind::kProbabilisticBlockSparse:
      a.mask = MaskCode::kBlock;
      a.block_q = static_cast<int32_t>(m.query_block_tokens);
      a.block_k = static_cast<int32_t>(m.kv_block_tokens);
      a.block_rows = static_cast<int32_t>(CeilDiv(shapes.seq_q, m.query_block_tokens));
      a.block_cols = static_cast<int32_t>(CeilDiv(shapes.seq_kv, m.kv_block_tokens));
      a.block_per_head = m.kind == MaskKind::kProbabilisticBlockSparse;
      a.block_causal = m.kind == MaskKind::kProbabilisticBlockSparse || m.intersect_causal;
      break;
  }
  static_assert(kModifierRope == 1u << static_cast<int>(Modifier::kRope) &&
                    kModifierAlibi == 1u << static_cast<int>(Modifier::kAlibi) &&
                    kModifierSoftcap == 1u << static_cast<int>(Modifier::kSoftcap),
                "AttentionArgs::modifiers bits follow the Modifier numbering");
  for (Modifier mod : ModifiersOf(problem)) a.modifiers |= 1u << static_cast<int>(mod);
  if (problem.rope.enabled) a.rope_dims = problem.rope.rotary_dims.value_or(problem.head_dim_qk);
  if (problem.softcap.enabled) a.softcap = static_cast<float>(problem.softcap.cap);
  return a;
}

int DeviceProblem::InputSetsFor(const ProblemShapes& shapes, DType dtype, uint64_t l2_bytes) {
  // A layer's Q, K, V are rewritten by its projections in every iteration.
  if (shapes.layer) return 1;
  const uint64_t bytes = std::max<uint64_t>(1, InputBytes(shapes, dtype));
  if (bytes > l2_bytes) return 1;
  return static_cast<int>(std::min<uint64_t>(4, (2 * l2_bytes + bytes - 1) / bytes));
}

uint64_t DeviceProblem::EstimateBytes(const Problem& problem, const ProblemShapes& shapes,
                                      uint64_t l2_bytes) {
  const DType dtype = DeviceDType(problem);
  const uint64_t sets = InputSetsFor(shapes, dtype, l2_bytes);
  const uint64_t inputs =
      shapes.layer ? LayerBytes(shapes, dtype) : sets * InputBytes(shapes, dtype);
  return inputs + static_cast<uint64_t>(NumElements(shapes.output)) * DTypeBytes(dtype) +
         RopeTableBytes(problem, shapes) + BitmapBytes(problem, shapes) +
         static_cast<uint64_t>(shapes.heads.num_output_heads) * 3 * sizeof(int32_t);
}

absl::StatusOr<std::unique_ptr<DeviceProblem>> DeviceProblem::Create(const Problem& problem,
                                                                     const ProblemShapes& shapes,
                                                                     const AttentionInputs& inputs,
                                                                     uint64_t l2_bytes) {
  std::unique_ptr<DeviceProblem> dp(new DeviceProblem());
  dp->dtype_ = DeviceDType(problem);
  dp->output_dtype_ = problem.output_dtype;
  dp->output_shape_ = shapes.output;
  dp->base_ = ShapeArgs(problem, shapes);
  AttentionArgs& a = dp->base_;

  absl::StatusOr<DeviceBuffer> out = DeviceBuffer::Allocate(
      static_cast<uint64_t>(NumElements(shapes.output)) * DTypeBytes(dp->dtype_), "the output");
  if (!out.ok()) return out.status();
  dp->output_ = *std::move(out);
  a.o = dp->output_.get();
  if (shapes.layer) {
    if (absl::Status s = dp->CreateLayer(shapes, inputs); !s.ok()) return s;
  } else {
    // Inputs: encoded once (FP8's as what the codes stand for, in float32), uploaded into every
    // copy.
    auto encode = [&](const FloatTensor& t) {
      if (t.scales.empty()) return EncodeTensor(t);
      return EncodeTensor(FloatTensor{dp->dtype_, t.shape, DequantizedValues(t), {}});
    };
    const std::string q = encode(inputs.query);
    const std::string k = encode(inputs.key);
    const std::string v = encode(inputs.value);
    const int sets = InputSetsFor(shapes, dp->dtype_, l2_bytes);
    for (int i = 0; i < sets; ++i) {
      InputSet set;
      for (const auto& [data, what, ptr] :
           {std::tuple{&q, "the query", &set.q}, std::tuple{&k, "the keys", &set.k},
            std::tuple{&v, "the values", &set.v}}) {
        absl::StatusOr<DeviceBuffer> b = DeviceBuffer::Upload(data->data(), data->size(), what);
        if (!b.ok()) return b.status();
        *ptr = b->get();
        set.buffers.push_back(*std::move(b));
      }
      dp->sets_.push_back(std::move(set));
    }
  }

  std::vector<int32_t> map;
  for (const HeadPair& p : shapes.heads.map) {
    map.push_back(p.query_head);
    map.push_back(p.kv_head);
  }
  absl::StatusOr<DeviceBuffer> table =
      DeviceBuffer::Upload(map.data(), map.size() * sizeof(int32_t), "the head map");
  if (!table.ok()) return table.status();
  dp->head_map_ = *std::move(table);
  a.head_map = dp->head_map_.as<int32_t>();

  // Block-sparse bitmaps.
  const Mask& m = problem.mask;
  if (a.mask == MaskCode::kBlock) {
    const int64_t one = static_cast<int64_t>(a.block_rows) * a.block_cols;
    std::vector<uint8_t> bits(BitmapBytes(problem, shapes), 0);
    if (m.kind == MaskKind::kBlockSparse) {
      for (const Block& blk : m.blocks) bits[blk.query_block * a.block_cols + blk.kv_block] = 1;
    } else {
      const MaskEvaluator eval(problem);
      for (int64_t b = 0; b < shapes.batch; ++b) {
        for (int h = 0; h < a.heads_out; ++h) {
          uint8_t* head = bits.data() + (b * a.heads_out + h) * one;
          for (int64_t r = 0; r < a.block_rows; ++r) {
            for (int64_t c = 0; c < a.block_cols; ++c) {
              head[r * a.block_cols + c] = eval.BlockSelected(b, h, r, c) ? 1 : 0;
            }
          }
        }
      }
    }
    table = DeviceBuffer::Upload(bits.data(), bits.size(), "the block-sparse bitmap");
    if (!table.ok()) return table.status();
    dp->bitmap_ = *std::move(table);
    a.block_bitmap = dp->bitmap_.as<uint8_t>();
  }

  if (problem.rope.enabled) {
    const int dims = a.rope_dims;
    const int half = dims / 2;
    const std::vector<double> inv =
        RopeInverseFrequencies(problem.rope.theta.value_or(10000.0), dims);
    const int64_t first = FirstPosition(shapes);
    std::vector<float> cs(static_cast<size_t>(shapes.seq_kv - first) * half * 2);
    for (int64_t pos = first; pos < shapes.seq_kv; ++pos) {
      RopeCosSin(pos, inv, cs.data() + (pos - first) * half * 2);
    }
    table = DeviceBuffer::Upload(cs.data(), cs.size() * sizeof(float), "the RoPE table");
    if (!table.ok()) return table.status();
    dp->rope_ = *std::move(table);
    // Position 0's entry, so a query at a negative position indexes backwards into the table.
    a.rope_cos_sin = dp->rope_.as<float>() - first * half * 2;
  }
  if (problem.alibi.enabled) {
    const std::vector<double> slopes = AlibiSlopes(problem.alibi, a.heads_out);
    const std::vector<float> f(slopes.begin(), slopes.end());
    table = DeviceBuffer::Upload(f.data(), f.size() * sizeof(float), "the ALiBi slopes");
    if (!table.ok()) return table.status();
    dp->alibi_ = *std::move(table);
    a.alibi_slopes = dp->alibi_.as<float>();
  }
  return dp;
}

absl::Status DeviceProblem::CreateLayer(const ProblemShapes& s, const AttentionInputs& inputs) {
  LayerBuffers& l = layer_;
  l.storage = base_.storage;
  l.tokens = s.batch * s.seq_q;
  l.d_model = s.d_model;
  const Shape* weights[3] = {&s.w_q, &s.w_k, &s.w_v};
  const Shape* projected[3] = {&s.query, &s.key, &s.value};
  const FloatTensor* given[3] = {&inputs.w_q, &inputs.w_k, &inputs.w_v};
  uint64_t weight_at[3], projected_at[3], weight_bytes = 0, projected_bytes = 0;
  for (int p = 0; p < 3; ++p) {
    l.width[p] = (*weights[p])[1];
    weight_at[p] = weight_bytes;
    weight_bytes += LayerRegion(NumElements(*weights[p]), dtype_);
    projected_at[p] = projected_bytes;
    projected_bytes += LayerRegion(NumElements(*projected[p]), dtype_);
  }
  l.width_o = s.w_o[0];

  std::string staged(weight_bytes, '\0');
  for (int p = 0; p < 3; ++p) {
    const std::string w = EncodeTensor(*given[p]);
    std::memcpy(staged.data() + weight_at[p], w.data(), w.size());
  }
  absl::StatusOr<DeviceBuffer> b =
      DeviceBuffer::Upload(staged.data(), staged.size(), "the layer's W_q, W_k and W_v");
  if (!b.ok()) return b.status();
  w_qkv_ = *std::move(b);
  const std::string x = EncodeTensor(inputs.x);
  b = DeviceBuffer::Upload(x.data(), x.size(), "the layer's X");
  if (!b.ok()) return b.status();
  x_ = *std::move(b);
  const std::string w_o = EncodeTensor(inputs.w_o);
  b = DeviceBuffer::Upload(w_o.data(), w_o.size(), "the layer's W_o");
  if (!b.ok()) return b.status();
  w_o_ = *std::move(b);
  b = DeviceBuffer::Allocate(projected_bytes, "the layer's Q, K and V");
  if (!b.ok()) return b.status();
  InputSet set;
  set.buffers.push_back(*std::move(b));
  char* qkv = set.buffers.back().as<char>();
  b = DeviceBuffer::Allocate(static_cast<uint64_t>(NumElements(s.core_output)) * DTypeBytes(dtype_),
                             "the core's output");
  if (!b.ok()) return b.status();
  core_output_ = *std::move(b);

  for (int p = 0; p < 3; ++p) {
    l.w[p] = w_qkv_.as<char>() + weight_at[p];
    l.projected[p] = qkv + projected_at[p];
  }
  set.q = l.projected[0];
  set.k = l.projected[1];
  set.v = l.projected[2];
  sets_.push_back(std::move(set));
  l.x = x_.get();
  l.w_o = w_o_.get();
  l.core_output = core_output_.get();
  l.output = output_.get();
  base_.o = core_output_.get();  // the core writes O; Y is the output projection's
  return absl::OkStatus();
}

AttentionArgs DeviceProblem::Args(int set) const {
  AttentionArgs a = base_;
  a.q = sets_[set].q;
  a.k = sets_[set].k;
  a.v = sets_[set].v;
  return a;
}

absl::Status DeviceProblem::PoisonOutput() {
  // 0xFF bytes are NaN in float32, float16 and bfloat16 alike. At layer scope the core's O too,
  // so an element the core fails to write reaches Y as NaN.
  ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaMemset(output_.get(), 0xFF, output_.bytes()));
  if (core_output_.get() != nullptr) {
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaMemset(core_output_.get(), 0xFF, core_output_.bytes()));
  }
  return absl::OkStatus();
}

absl::StatusOr<FloatTensor> DeviceProblem::DownloadOutput() const {
  absl::StatusOr<FloatTensor> t = DownloadTensor(output_.get(), output_shape_, dtype_);
  if (!t.ok() || output_dtype_ == dtype_) return t;
  for (float& x : t->values) x = RoundToDType(x, output_dtype_);
  t->dtype = output_dtype_;
  return t;
}

}  // namespace attnbench::cuda
