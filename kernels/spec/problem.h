// The attention problem in plain C++: what a client asked to compute (docs/variants.md), with no
// gRPC or protobuf types. The server translates attnbench.v1.AttentionSpec into a Problem field by
// field (same names), NormalizeProblem fills defaults, ValidateProblem checks every rule.
#ifndef ATTNBENCH_KERNELS_SPEC_PROBLEM_H_
#define ATTNBENCH_KERNELS_SPEC_PROBLEM_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace attnbench {

enum class DType { kUnspecified, kFloat32, kFloat16, kBFloat16, kFloat8E4M3 };
enum class Phase { kUnspecified, kPrefill, kDecode, kBackward };
enum class Scope { kUnspecified, kCore, kLayer };
enum class LayoutKind {
  kUnspecified,
  kMha,
  kMqa,
  kGqa,
  kSqa,
  kSymmetricSqa,
  kExtremeSqa,
  kGqkva,
  kExplicit
};
enum class MaskKind { kNone, kCausal, kSlidingWindow, kBlockSparse, kProbabilisticBlockSparse };
enum class AlibiSchedule { kUnspecified, kGeometric, kHarmonic };
enum class CacheFormat { kUnspecified, kNative, kInt8, kInt4 };
enum class ScaleGranularity { kUnspecified, kTensor, kHead };

// Bytes one element occupies in storage.
int DTypeBytes(DType dtype);
// "float32", "float16", "bfloat16", "float8_e4m3".
const char* DTypeName(DType dtype);
// "mha", "mqa", "gqa", "sqa", "symmetric_sqa", "extreme_sqa", "gqkva", "explicit_map"
// (the names of the HeadLayout oneof cases).
const char* LayoutName(LayoutKind kind);
// "none", "causal", "sliding_window", "block_sparse", "probabilistic_block_sparse".
const char* MaskName(MaskKind kind);

struct HeadPair {
  int query_head = 0;
  int kv_head = 0;
  bool operator==(const HeadPair& o) const {
    return query_head == o.query_head && kv_head == o.kv_head;
  }
};

// One of the layouts of §2. Only the fields of `kind` are meaningful; see the proto's comments.
struct HeadLayout {
  LayoutKind kind = LayoutKind::kUnspecified;
  int num_heads = 0;                       // mha, mqa
  int num_query_heads = 0;                 // gqa, sqa, explicit_map
  int num_kv_heads = 0;                    // gqa, sqa, explicit_map
  int baseline_heads = 0;                  // sqa, symmetric_sqa, extreme_sqa
  std::optional<int> extreme_query_heads;  // extreme_sqa; unset means baseline_heads / 4
  int query_groups = 0;                    // gqkva
  int kv_groups = 0;                       // gqkva
  std::vector<HeadPair> pairs;             // explicit_map
};

struct Block {
  int64_t query_block = 0;
  int64_t kv_block = 0;
};

struct Mask {
  MaskKind kind = MaskKind::kNone;
  // kSlidingWindow; unset is unbounded.
  std::optional<int64_t> left_tokens;
  std::optional<int64_t> right_tokens;
  // kBlockSparse and kProbabilisticBlockSparse.
  int64_t query_block_tokens = 0;
  int64_t kv_block_tokens = 0;
  // kBlockSparse.
  std::vector<Block> blocks;
  bool intersect_causal = false;
  // kProbabilisticBlockSparse.
  double c_coefficient = 0.0;
  double alpha = 0.0;
  uint64_t seed = 0;
};

struct Rope {
  bool enabled = false;
  std::optional<double> theta;     // default 10000
  std::optional<int> rotary_dims;  // default head_dim_qk
};

struct Alibi {
  bool enabled = false;
  AlibiSchedule schedule = AlibiSchedule::kUnspecified;  // default geometric
  std::optional<double> harmonic_base_slope;             // default 1.0 (harmonic only)
};

struct Softcap {
  bool enabled = false;
  double cap = 0.0;
};

struct SaqBand {
  std::optional<int64_t> num_tokens;  // unset: the rest (last band only)
  CacheFormat format = CacheFormat::kUnspecified;
};

struct KvCache {
  bool paged = false;
  int page_size_tokens = 0;
  std::vector<int32_t> page_table;  // [batch][pages per sequence]; empty: drawn from the seed
  CacheFormat format = CacheFormat::kUnspecified;  // default native
  std::vector<SaqBand> saq_bands;
};

// Generated K and V with a decaying singular-value spectrum (§8, inputs.h has the recipe).
struct KvSpectrum {
  bool enabled = false;
  double decay = 0.0;       // 0 < decay < 1
  std::optional<int> rank;  // caps the rank; unset: n and decay^k >= 1e-4 bound it
};

// DTYPE_FLOAT8_E4M3 (§1b): Q, K and V are e4m3 codes, each standing for code * scale, with one
// scale per tensor or per head (dimension 2 of BSHD). A tensor's list is empty when its scales are
// to be derived from the data (amax / 448, kernels/spec/float8.h); else it holds one scale, or one
// per head.
struct Float8Scaling {
  ScaleGranularity granularity = ScaleGranularity::kUnspecified;  // default per tensor
  std::vector<float> query_scales;
  std::vector<float> key_scales;
  std::vector<float> value_scales;
};

// KV-head compression (§5b, kernels/compress): also run the problem with its KV heads compressed
// to target_kv_heads, by principal components and by mean-pooling.
struct KvCompression {
  bool enabled = false;
  int target_kv_heads = 0;
};

// A tensor a client sent: row-major, little-endian elements of dtype.
struct HostTensor {
  DType dtype = DType::kUnspecified;
  std::vector<int64_t> shape;
  std::string data;
};

// An auxiliary tensor the expressions index by name (AttentionSpec.aux).
struct NamedTensor {
  std::string name;
  HostTensor tensor;
};

struct Problem {
  int64_t batch_size = 0;
  int64_t seq_len_q = 0;
  int64_t seq_len_kv = 0;
  int head_dim_qk = 0;
  std::optional<int> head_dim_v;  // default head_dim_qk
  HeadLayout layout;
  Mask mask;
  Rope rope;
  Alibi alibi;
  Softcap softcap;
  std::optional<double> scale;  // default 1 / sqrt(head_dim_qk)
  DType dtype = DType::kUnspecified;
  // What O is stored in: default the dtype, except bfloat16 for DTYPE_FLOAT8_E4M3 (§1b).
  DType output_dtype = DType::kUnspecified;
  Float8Scaling float8;               // DTYPE_FLOAT8_E4M3 only
  Phase phase = Phase::kUnspecified;  // default prefill
  Scope scope = Scope::kUnspecified;  // default core
  std::optional<int> d_model;         // layer scope only
  KvCache kv_cache;                   // decode only
  uint64_t seed = 0;
  std::optional<double> input_scale;            // default 1.0
  std::optional<HostTensor> query, key, value;  // client inputs instead of generated ones
  // PHASE_BACKWARD: the client's dO [B, S_q, H_out, D_v] (at layer scope dY [B, S, d_model])
  // instead of a generated one.
  std::optional<HostTensor> grad_output;
  // SCOPE_LAYER: the client's X and weights instead of generated ones (x alone, the four weights
  // alone, or all five).
  std::optional<HostTensor> x, w_q, w_k, w_v, w_o;
  // PHASE_BACKWARD: an iteration is a training step (forward, then backward) rather than the
  // backward alone (MeasurementSettings.backward_timing; carried here because a workload
  // prepares differently for each: the backward alone needs O and the log-sum-exp up front).
  bool training_step = false;
  // The same bits over runs on one device (MeasurementSettings.deterministic; carried here so that
  // a backend's support check, and so `auto`, can refuse a phase it does not run so).
  bool deterministic = false;
  // Client-written expressions (docs/expressions.md): AttentionSpec.score_mod.expression and
  // mask_mod.expression; unset when the message is absent.
  std::optional<std::string> score_mod;
  std::optional<std::string> mask_mod;
  std::vector<NamedTensor> aux;
  KvSpectrum kv_spectrum;        // AttentionSpec.kv_spectrum
  KvCompression kv_compression;  // AttentionSpec.kv_compression
};

// Returns a copy with every default of the proto comments filled in (head_dim_v, scale,
// output_dtype, float8.granularity (fp8 only), phase, scope, rope theta/rotary_dims, alibi
// schedule/base slope, cache format, input_scale, extreme_query_heads). Never changes a field the
// client set.
Problem NormalizeProblem(const Problem& problem);

// The core problem a SCOPE_LAYER problem contains (§6): the same layout, mask, modifiers, scale,
// dtype, phase and seed, at core scope, without d_model and the layer's client tensors (X, the
// weights, dY), whose Q, K, V (and for PHASE_BACKWARD dO) are the layer's projections.
Problem CoreProblemOfLayer(const Problem& layer);

// Checks every rule of §1-§6 on a normalized problem. INVALID_ARGUMENT naming the field by its
// proto path ("spec.layout.gqa.num_kv_heads") and the rule it breaks.
absl::Status ValidateProblem(const Problem& problem);

// Head counts and the head map a normalized, valid layout resolves to.
struct HeadConfig {
  int num_query_heads = 0;    // H_q: heads in the Q tensor
  int num_kv_heads = 0;       // H_kv: heads in K and V
  int num_output_heads = 0;   // H_out: heads in O
  int baseline_heads = 0;     // H the layout is compared with (SQA family); else num_query_heads
  std::vector<HeadPair> map;  // map[h] = (qh(h), kh(h)), size num_output_heads
};
absl::StatusOr<HeadConfig> ResolveHeads(const HeadLayout& layout);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_SPEC_PROBLEM_H_
