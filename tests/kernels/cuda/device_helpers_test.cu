// The device-side helpers every CUDA kernel shares (kernels/cuda/common/attention_device.cuh) run
// on the GPU and compared with naive host versions written here again from docs/variants.md, in
// double, without kernels/spec's MaskEvaluator, RopeInverseFrequencies or AlibiSlopes: a wrong
// shared helper would make every backend wrong the same way, and their outputs agree with each
// other. The AttentionArgs come from DeviceProblem::Create, so the tables it builds and uploads
// (head map, block-sparse bitmaps, RoPE cos/sin, ALiBi slopes) are checked with the helpers that
// read them:
//   - MaskKeeps on every (b, h, i, j) of random odd shapes, for every mask kind: none, causal,
//     sliding windows (two-sided, one-sided, unbounded), explicit block-sparse with and without
//     the causal intersection, probabilistic block-sparse;
//   - TileCoverage on aligned tile grids of the kernels' sizes and on random tiles, against brute
//     force over the tile;
//   - RopedElement on every element of Q (positions i', negative when S_q > S_kv) and K, in every
//     storage type, partial rotary dims;
//   - ModifyScore: ALiBi with the geometric (power-of-two and interpolated) and harmonic slopes,
//     softcap, both;
//   - the head map of every layout;
//   - PolyExp2 (the softmax's exp2 on the FMA pipes) against std::exp2, on the host.
// Skips (GTEST_SKIP) on a machine without a CUDA device, but for the host-side PolyExp2 test.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/backend/device_buffer.h"
#include "kernels/cuda/backend/device_problem.h"
#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/attention_device.cuh"
#include "kernels/cuda/common/poly_exp2.cuh"
#include "kernels/cuda/flash/row_keep_bits.cuh"
#include "kernels/spec/inputs.h"
#include "kernels/spec/philox.h"
#include "kernels/spec/shapes.h"

namespace attnbench::cuda {
namespace {

// ---- device side: one thread per evaluation, grid-stride ------------------------------------

constexpr int kThreads = 256;

int Blocks(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 4096));
}

// keep[((b * H_out + h) * S_q + i) * S_kv + j] = MaskKeeps(a, b, h, i, j).
__global__ void MaskKernel(AttentionArgs a, uint8_t* keep) {
  const int64_t n = static_cast<int64_t>(a.batch) * a.heads_out * a.seq_q * a.seq_kv;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = t % a.seq_kv;
    int64_t rest = t / a.seq_kv;
    const int64_t i = rest % a.seq_q;
    rest /= a.seq_q;
    const int h = static_cast<int>(rest % a.heads_out);
    const int b = static_cast<int>(rest / a.heads_out);
    keep[t] = MaskKeeps(a, b, h, i, j) ? 1 : 0;
  }
}

// bits[((b * H_out + h) * S_q + i) * S_kv + jl] = RowKeepBits<32>(a, b, h, i, jl): every row
// and every first column a thread of the fused kernels could hold.
__global__ void RowKeepBitsKernel(AttentionArgs a, uint32_t* bits) {
  const int64_t n = static_cast<int64_t>(a.batch) * a.heads_out * a.seq_q * a.seq_kv;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t jl = t % a.seq_kv;
    int64_t rest = t / a.seq_kv;
    const int64_t i = rest % a.seq_q;
    rest /= a.seq_q;
    const int h = static_cast<int>(rest % a.heads_out);
    const int b = static_cast<int>(rest / a.heads_out);
    bits[t] = flash::RowKeepBits<32>(a, b, h, i, jl);
  }
}

struct Tile {
  int32_t b = 0, h = 0;
  int64_t i0 = 0, i1 = 0, j0 = 0, j1 = 0;
};

__global__ void CoverageKernel(AttentionArgs a, const Tile* tiles, int64_t n, int32_t* out) {
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Tile& x = tiles[t];
    out[t] = static_cast<int32_t>(TileCoverage(a, x.b, x.h, x.i0, x.i1, x.j0, x.j1));
  }
}

// out[t] = RopedElement of element t of Q (query) or K, [B, S, H, D_qk], at position i' or j.
template <typename T>
__global__ void RopeKernel(AttentionArgs a, bool query, float* out) {
  const int64_t seq = query ? a.seq_q : a.seq_kv;
  const int heads = query ? a.heads_q : a.heads_kv;
  const T* base = static_cast<const T*>(query ? a.q : a.k);
  const int64_t n = static_cast<int64_t>(a.batch) * seq * heads * a.dim_qk;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int d = static_cast<int>(t % a.dim_qk);
    int64_t rest = t / a.dim_qk;
    const int head = static_cast<int>(rest % heads);
    rest /= heads;
    const int64_t s = rest % seq;
    const int64_t b = rest / seq;
    const T* row = base + RowOffset(b, seq, s, heads, head, a.dim_qk);
    out[t] = RopedElement(a, row, query ? s + a.offset : s, d);
  }
}

// out[(h * S_q + i) * S_kv + j] = ModifyScore(a, h, i, j, s[same]).
__global__ void ScoreKernel(AttentionArgs a, const float* s, float* out) {
  const int64_t n = static_cast<int64_t>(a.heads_out) * a.seq_q * a.seq_kv;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < n;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = t % a.seq_kv;
    const int64_t i = (t / a.seq_kv) % a.seq_q;
    const int h = static_cast<int>(t / (a.seq_kv * a.seq_q));
    out[t] = ModifyScore(a, h, i, j, s[t]);
  }
}

// The (query head, kv head) each output head reads, as a kernel reads it.
__global__ void HeadMapKernel(AttentionArgs a, int32_t* out) {
  for (int h = blockIdx.x * blockDim.x + threadIdx.x; h < a.heads_out;
       h += gridDim.x * blockDim.x) {
    out[2 * h] = a.head_map[2 * h];
    out[2 * h + 1] = a.head_map[2 * h + 1];
  }
}

// ---- host plumbing ----------------------------------------------------------------------------

bool HaveDevice() {
  int n = 0;
  const bool yes = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
  cudaGetLastError();  // no device is not an error to carry into the next call
  return yes;
}

#define SKIP_WITHOUT_DEVICE() \
  if (!HaveDevice()) GTEST_SKIP() << "no CUDA device on this machine"

// A problem made resident the way the backends do it (DeviceProblem::Create), with its inputs.
struct Resident {
  Problem problem;
  ProblemShapes shapes;
  AttentionInputs inputs;
  std::unique_ptr<DeviceProblem> device;
  AttentionArgs args;
};

std::string Describe(const Problem& p) {
  std::ostringstream s;
  s << "B=" << p.batch_size << " S_q=" << p.seq_len_q << " S_kv=" << p.seq_len_kv
    << " D=" << p.head_dim_qk << " layout=" << LayoutName(p.layout.kind)
    << " mask=" << MaskName(p.mask.kind);
  const Mask& m = p.mask;
  if (m.kind == MaskKind::kSlidingWindow) {
    s << " left=" << (m.left_tokens ? std::to_string(*m.left_tokens) : "unbounded")
      << " right=" << (m.right_tokens ? std::to_string(*m.right_tokens) : "unbounded");
  }
  if (m.kind == MaskKind::kBlockSparse || m.kind == MaskKind::kProbabilisticBlockSparse) {
    s << " blocks " << m.query_block_tokens << "x" << m.kv_block_tokens;
  }
  if (m.kind == MaskKind::kBlockSparse) {
    s << " listed=" << m.blocks.size() << " causal=" << m.intersect_causal;
  }
  if (m.kind == MaskKind::kProbabilisticBlockSparse) {
    s << " c=" << m.c_coefficient << " alpha=" << m.alpha << " seed=" << m.seed;
  }
  if (p.rope.enabled) {
    s << " rope(theta=" << *p.rope.theta << ", dims=" << *p.rope.rotary_dims << ")";
  }
  if (p.alibi.enabled) {
    s << " alibi(" << (p.alibi.schedule == AlibiSchedule::kHarmonic ? "harmonic" : "geometric")
      << ")";
  }
  if (p.softcap.enabled) s << " softcap=" << p.softcap.cap;
  s << " dtype=" << DTypeName(p.dtype);
  return s.str();
}

// Normalizes, validates and uploads; failures are test failures (nullptr returned).
std::unique_ptr<Resident> MakeResident(const Problem& raw) {
  auto r = std::make_unique<Resident>();
  r->problem = NormalizeProblem(raw);
  if (absl::Status s = ValidateProblem(r->problem); !s.ok()) {
    ADD_FAILURE() << Describe(r->problem) << ": " << s;
    return nullptr;
  }
  absl::StatusOr<ProblemShapes> shapes = ShapesOf(r->problem);
  absl::StatusOr<AttentionInputs> inputs = GenerateInputs(r->problem);
  if (!shapes.ok() || !inputs.ok()) {
    ADD_FAILURE() << shapes.status() << " " << inputs.status();
    return nullptr;
  }
  r->shapes = *std::move(shapes);
  r->inputs = *std::move(inputs);
  absl::StatusOr<std::unique_ptr<DeviceProblem>> device =
      DeviceProblem::Create(r->problem, r->shapes, r->inputs, /*l2_bytes=*/0);
  if (!device.ok()) {
    ADD_FAILURE() << Describe(r->problem) << ": " << device.status();
    return nullptr;
  }
  r->device = *std::move(device);
  r->args = r->device->Args(0);
  return r;
}

template <typename T>
std::vector<T> Download(const DeviceBuffer& buffer, size_t n) {
  std::vector<T> host(n);
  const cudaError_t e =
      cudaMemcpy(host.data(), buffer.get(), n * sizeof(T), cudaMemcpyDeviceToHost);
  EXPECT_EQ(e, cudaSuccess) << cudaGetErrorString(e);
  return host;
}

DeviceBuffer MustAllocate(uint64_t bytes) {
  absl::StatusOr<DeviceBuffer> b = DeviceBuffer::Allocate(std::max<uint64_t>(bytes, 1), "test");
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *std::move(b) : DeviceBuffer();
}

DeviceBuffer MustUpload(const void* data, uint64_t bytes) {
  absl::StatusOr<DeviceBuffer> b = DeviceBuffer::Upload(data, std::max<uint64_t>(bytes, 1), "test");
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *std::move(b) : DeviceBuffer();
}

::testing::AssertionResult Launched() {
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) e = cudaDeviceSynchronize();
  if (e == cudaSuccess) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "kernel failed: " << cudaGetErrorString(e);
}

// ---- naive host versions, from docs/variants.md ---------------------------------------------

// §2's table: (qh(h), kh(h)) for every output head, and H_q, H_kv.
struct NaiveMap {
  int hq = 0, hkv = 0;
  std::vector<std::pair<int, int>> pairs;
};

NaiveMap NaiveHeadTable(const HeadLayout& l) {
  NaiveMap n;
  switch (l.kind) {
    case LayoutKind::kMha:
      n.hq = n.hkv = l.num_heads;
      for (int h = 0; h < l.num_heads; ++h) n.pairs.emplace_back(h, h);
      break;
    case LayoutKind::kMqa:
      n.hq = l.num_heads;
      n.hkv = 1;
      for (int h = 0; h < l.num_heads; ++h) n.pairs.emplace_back(h, 0);
      break;
    case LayoutKind::kGqa:
    case LayoutKind::kSqa:
      n.hq = l.num_query_heads;
      n.hkv = l.num_kv_heads;
      for (int h = 0; h < n.hq; ++h) n.pairs.emplace_back(h, h / (n.hq / n.hkv));
      break;
    case LayoutKind::kSymmetricSqa:
      n.hq = n.hkv = l.baseline_heads / 2;
      for (int h = 0; h < n.hq; ++h) n.pairs.emplace_back(h, h);
      break;
    case LayoutKind::kExtremeSqa:
      n.hq = n.hkv = l.extreme_query_heads.value_or(l.baseline_heads / 4);
      for (int h = 0; h < n.hq; ++h) n.pairs.emplace_back(h, h);
      break;
    case LayoutKind::kGqkva:
      n.hq = l.query_groups;
      n.hkv = l.kv_groups;
      for (int h = 0; h < l.query_groups * l.kv_groups; ++h) {
        n.pairs.emplace_back(h / l.kv_groups, h % l.kv_groups);
      }
      break;
    case LayoutKind::kExplicit:
      n.hq = l.num_query_heads;
      n.hkv = l.num_kv_heads;
      for (const HeadPair& p : l.pairs) n.pairs.emplace_back(p.query_head, p.kv_head);
      break;
    default:
      break;
  }
  return n;
}

// §3's masks. Positions are bottom-right aligned: query i sits at i' = i + S_kv - S_q.
class NaiveMask {
 public:
  explicit NaiveMask(const Problem& p) : p_(p), m_(p.mask) {
    for (const Block& blk : m_.blocks) listed_.insert({blk.query_block, blk.kv_block});
  }

  // Block masks: whether block (r, c) is selected, before any causal intersection. The
  // probabilistic draw as kernels/spec/mask.h's comment defines it: block distance
  // d = floor((r * b_q + S_kv - S_q) / b_k) - c; kept when d <= 0 (the diagonal band and above),
  // else when the first Philox-4x32-10 word keyed by the seed over (c, r, h, b), over 2^32, is
  // below min(1, c_coef / (1 + d)^alpha).
  bool Selected(int64_t b, int h, int64_t r, int64_t c) const {
    if (m_.kind == MaskKind::kBlockSparse) return listed_.count({r, c}) > 0;
    const double first_row_position =
        static_cast<double>(r * m_.query_block_tokens + p_.seq_len_kv - p_.seq_len_q);
    const double d = std::floor(first_row_position / m_.kv_block_tokens) - c;
    if (d <= 0) return true;
    const PhiloxCounter w = Philox4x32_10(
        {static_cast<uint32_t>(c), static_cast<uint32_t>(r), static_cast<uint32_t>(h),
         static_cast<uint32_t>(b)},
        {static_cast<uint32_t>(m_.seed % 4294967296ull), static_cast<uint32_t>(m_.seed >> 32)});
    const double probability = std::min(1.0, m_.c_coefficient / std::pow(1.0 + d, m_.alpha));
    return std::ldexp(static_cast<double>(w[0]), -32) < probability;
  }

  // Whether query i keeps key j for batch b, output head h.
  bool Keep(int64_t b, int h, int64_t i, int64_t j) const {
    const int64_t ip = i + (p_.seq_len_kv - p_.seq_len_q);
    switch (m_.kind) {
      case MaskKind::kNone:
        return true;
      case MaskKind::kCausal:
        return j <= ip;
      case MaskKind::kSlidingWindow: {
        const bool left_ok = !m_.left_tokens.has_value() || ip - *m_.left_tokens <= j;
        const bool right_ok = !m_.right_tokens.has_value() || j <= ip + *m_.right_tokens;
        return left_ok && right_ok;
      }
      case MaskKind::kBlockSparse:
      case MaskKind::kProbabilisticBlockSparse: {
        // The probabilistic mask is always intersected with causal.
        const bool causal = m_.kind == MaskKind::kProbabilisticBlockSparse || m_.intersect_causal;
        if (causal && j > ip) return false;
        return Selected(b, h, i / m_.query_block_tokens, j / m_.kv_block_tokens);
      }
    }
    return false;
  }

 private:
  const Problem& p_;
  const Mask& m_;
  std::set<std::pair<int64_t, int64_t>> listed_;
};

// §4.2's geometric schedule: 2^(-8 (h + 1) / n) for n a power of two; otherwise (the ALiBi
// paper's get_slopes) the schedule of the largest power of two m below n, followed by every other
// slope of the 2m schedule (its 1st, 3rd, ...) until there are n.
std::vector<double> NaiveGeometricSlopes(int n) {
  auto power_of_two = [](int count) {
    std::vector<double> s;
    for (int h = 0; h < count; ++h) s.push_back(std::exp2(-8.0 * (h + 1) / count));
    return s;
  };
  int m = 1;
  while (2 * m <= n) m *= 2;
  std::vector<double> slopes = power_of_two(m);
  if (m == n) return slopes;
  const std::vector<double> twice = power_of_two(2 * m);
  for (size_t k = 0; slopes.size() < static_cast<size_t>(n); k += 2) slopes.push_back(twice[k]);
  return slopes;
}

double NaiveSlope(const Problem& p, int h, int heads_out) {
  if (p.alibi.schedule == AlibiSchedule::kHarmonic) {
    return p.alibi.harmonic_base_slope.value_or(1.0) / (h + 1);
  }
  return NaiveGeometricSlopes(heads_out)[h];
}

// ---- random problems ----------------------------------------------------------------------------

int64_t Uniform(std::mt19937_64& rng, int64_t lo, int64_t hi) {
  return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
}

double UniformReal(std::mt19937_64& rng, double lo, double hi) {
  return std::uniform_real_distribution<double>(lo, hi)(rng);
}

// An odd-sized problem: B in 1..2, GQA with 2..3 kv heads and 1..2 query heads each, S_q and S_kv
// odd in 1..~300 with S_q > S_kv a third of the time, D = 16, float16.
Problem RandomShape(std::mt19937_64& rng) {
  Problem p;
  p.batch_size = Uniform(rng, 1, 2);
  p.layout.kind = LayoutKind::kGqa;
  p.layout.num_kv_heads = static_cast<int>(Uniform(rng, 2, 3));
  p.layout.num_query_heads = p.layout.num_kv_heads * static_cast<int>(Uniform(rng, 1, 2));
  p.seq_len_kv = 2 * Uniform(rng, 0, 150) + 1;
  const int64_t kind = Uniform(rng, 0, 2);
  p.seq_len_q = kind == 0   ? p.seq_len_kv
                : kind == 1 ? 2 * Uniform(rng, 0, (p.seq_len_kv - 1) / 2) + 1
                            : p.seq_len_kv + 2 * Uniform(rng, 1, 40);
  p.head_dim_qk = 16;
  p.dtype = DType::kFloat16;
  p.seed = rng();
  return p;
}

// One random problem per mask variant; `variant` picks which.
struct MaskVariant {
  std::string name;
  void (*edit)(Problem&, std::mt19937_64&);
};

int64_t RandomBlock(std::mt19937_64& rng) {
  static const int64_t kSizes[] = {1, 3, 5, 7, 16, 13, 32, 64, 100};
  return kSizes[Uniform(rng, 0, 8)];
}

void RandomBlockList(Problem& p, std::mt19937_64& rng) {
  Mask& m = p.mask;
  m.query_block_tokens = RandomBlock(rng);
  m.kv_block_tokens = RandomBlock(rng);
  const int64_t rows = (p.seq_len_q + m.query_block_tokens - 1) / m.query_block_tokens;
  const int64_t cols = (p.seq_len_kv + m.kv_block_tokens - 1) / m.kv_block_tokens;
  // A third to two thirds of the blocks, so tiles see all, some and none of theirs listed.
  const double density = UniformReal(rng, 0.3, 0.7);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      if (UniformReal(rng, 0, 1) < density) m.blocks.push_back({r, c});
    }
  }
  std::shuffle(m.blocks.begin(), m.blocks.end(), rng);  // the list's order must not matter
}

std::vector<MaskVariant> MaskVariants() {
  return {
      {"none", [](Problem& p, std::mt19937_64&) { p.mask.kind = MaskKind::kNone; }},
      {"causal", [](Problem& p, std::mt19937_64&) { p.mask.kind = MaskKind::kCausal; }},
      {"window",
       [](Problem& p, std::mt19937_64& rng) {
         p.mask.kind = MaskKind::kSlidingWindow;
         p.mask.left_tokens = Uniform(rng, 0, 80);
         p.mask.right_tokens = Uniform(rng, 0, 80);
       }},
      {"window_causal",
       [](Problem& p, std::mt19937_64& rng) {
         p.mask.kind = MaskKind::kSlidingWindow;
         p.mask.left_tokens = Uniform(rng, 0, 80);
         p.mask.right_tokens = 0;
       }},
      {"window_left_only",
       [](Problem& p, std::mt19937_64& rng) {
         p.mask.kind = MaskKind::kSlidingWindow;
         p.mask.left_tokens = Uniform(rng, 0, 80);
       }},
      {"window_right_only",
       [](Problem& p, std::mt19937_64& rng) {
         p.mask.kind = MaskKind::kSlidingWindow;
         p.mask.right_tokens = Uniform(rng, 0, 80);
       }},
      {"window_unbounded",
       [](Problem& p, std::mt19937_64&) { p.mask.kind = MaskKind::kSlidingWindow; }},
      {"block_sparse",
       [](Problem& p, std::mt19937_64& rng) {
         p.mask.kind = MaskKind::kBlockSparse;
         RandomBlockList(p, rng);
       }},
      {"block_sparse_causal",
       [](Problem& p, std::mt19937_64& rng) {
         p.mask.kind = MaskKind::kBlockSparse;
         RandomBlockList(p, rng);
         p.mask.intersect_causal = true;
       }},
      {"block_sparse_empty",
       [](Problem& p, std::mt19937_64& rng) {
         p.mask.kind = MaskKind::kBlockSparse;
         p.mask.query_block_tokens = RandomBlock(rng);
         p.mask.kv_block_tokens = RandomBlock(rng);
       }},
      {"probabilistic",
       [](Problem& p, std::mt19937_64& rng) {
         p.mask.kind = MaskKind::kProbabilisticBlockSparse;
         p.mask.query_block_tokens = RandomBlock(rng);
         p.mask.kv_block_tokens = RandomBlock(rng);
         p.mask.c_coefficient = UniformReal(rng, 0.2, 1.5);
         p.mask.alpha = UniformReal(rng, 0.0, 2.0);
         p.mask.seed = rng();
       }},
  };
}

constexpr int kProblemsPerVariant = 4;

// Problems for variant v: random shapes, the first two pinned to S_q > S_kv and S_q < S_kv.
std::vector<Problem> VariantProblems(const MaskVariant& v, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<Problem> out;
  for (int k = 0; k < kProblemsPerVariant; ++k) {
    Problem p = RandomShape(rng);
    if (k == 0) p.seq_len_q = p.seq_len_kv + 2 * Uniform(rng, 1, 30);
    if (k == 1) {
      p.seq_len_kv = 2 * Uniform(rng, 60, 150) + 1;
      p.seq_len_q = 2 * Uniform(rng, 0, 50) + 1;
    }
    v.edit(p, rng);
    out.push_back(p);
  }
  return out;
}

std::vector<uint8_t> NaiveKeepAll(const Problem& p, int heads_out) {
  const NaiveMask mask(p);
  std::vector<uint8_t> keep(p.batch_size * heads_out * p.seq_len_q * p.seq_len_kv);
  size_t t = 0;
  for (int64_t b = 0; b < p.batch_size; ++b) {
    for (int h = 0; h < heads_out; ++h) {
      for (int64_t i = 0; i < p.seq_len_q; ++i) {
        for (int64_t j = 0; j < p.seq_len_kv; ++j) keep[t++] = mask.Keep(b, h, i, j) ? 1 : 0;
      }
    }
  }
  return keep;
}

// ---- tests --------------------------------------------------------------------------------------

TEST(DeviceHelpersTest, MaskKeepsMatchesTheDocsOnEveryPair) {
  SKIP_WITHOUT_DEVICE();
  uint64_t seed = 100;
  for (const MaskVariant& v : MaskVariants()) {
    int64_t kept = 0, pairs = 0;
    for (const Problem& raw : VariantProblems(v, ++seed)) {
      const std::unique_ptr<Resident> r = MakeResident(raw);
      ASSERT_NE(r, nullptr);
      const AttentionArgs& a = r->args;
      const std::vector<uint8_t> expected = NaiveKeepAll(r->problem, a.heads_out);
      DeviceBuffer keep = MustAllocate(expected.size());
      MaskKernel<<<Blocks(expected.size()), kThreads>>>(a, keep.as<uint8_t>());
      ASSERT_TRUE(Launched());
      const std::vector<uint8_t> got = Download<uint8_t>(keep, expected.size());
      int64_t wrong = 0;
      std::string first;
      pairs += expected.size();
      for (size_t t = 0; t < expected.size(); ++t) {
        kept += expected[t];
        if (got[t] == expected[t]) continue;
        if (wrong++ == 0) {
          const int64_t j = t % a.seq_kv, i = t / a.seq_kv % a.seq_q;
          const int64_t h = t / (a.seq_kv * a.seq_q) % a.heads_out;
          const int64_t b = t / (a.seq_kv * a.seq_q * a.heads_out);
          first = "(b " + std::to_string(b) + ", h " + std::to_string(h) + ", i " +
                  std::to_string(i) + ", j " + std::to_string(j) + "): device " +
                  std::to_string(got[t]) + ", docs " + std::to_string(expected[t]);
        }
      }
      EXPECT_EQ(wrong, 0) << v.name << " " << Describe(r->problem) << ": " << wrong << " of "
                          << expected.size() << " pairs differ; first " << first;
    }
    // Each variant's problems keep some pairs and hide others (bar the masks that cannot), so
    // the comparison saw both answers.
    if (v.name != "none" && v.name != "window_unbounded") EXPECT_LT(kept, pairs) << v.name;
    if (v.name != "block_sparse_empty") EXPECT_GT(kept, 0) << v.name;
  }
}

// The fused kernels' per-row test of partly kept tiles (flash/row_keep_bits.cuh): block masks
// stepping along the row's bitmap line, the rest through MaskKeeps; bit c of row i from jl must be
// the documented keep of (i, jl + 8 (c / 2) + c % 2), 0 past S_kv.
TEST(DeviceHelpersTest, RowKeepBitsMatchTheDocsFromEveryColumn) {
  SKIP_WITHOUT_DEVICE();
  uint64_t seed = 150;
  for (const MaskVariant& v : MaskVariants()) {
    for (const Problem& raw : VariantProblems(v, ++seed)) {
      const std::unique_ptr<Resident> r = MakeResident(raw);
      ASSERT_NE(r, nullptr);
      const AttentionArgs& a = r->args;
      const std::vector<uint8_t> keep = NaiveKeepAll(r->problem, a.heads_out);
      DeviceBuffer bits = MustAllocate(keep.size() * sizeof(uint32_t));
      RowKeepBitsKernel<<<Blocks(keep.size()), kThreads>>>(a, bits.as<uint32_t>());
      ASSERT_TRUE(Launched());
      const std::vector<uint32_t> got = Download<uint32_t>(bits, keep.size());
      int64_t wrong = 0;
      std::string first;
      for (size_t t = 0; t < keep.size(); ++t) {
        const int64_t jl = t % a.seq_kv;
        const size_t row = t - jl;  // (b, h, i)'s first pair
        uint32_t want = 0;
        for (int c = 0; c < 32; ++c) {
          const int64_t j = jl + 8 * (c / 2) + c % 2;
          if (j < a.seq_kv && keep[row + j] != 0) want |= 1u << c;
        }
        if (got[t] == want) continue;
        if (wrong++ == 0) {
          std::ostringstream o;
          o << "row " << t / a.seq_kv << " from jl " << jl << ": device " << std::hex << got[t]
            << ", docs " << want;
          first = o.str();
        }
      }
      EXPECT_EQ(wrong, 0) << v.name << " " << Describe(r->problem) << ": " << wrong << " of "
                          << keep.size() << " rows differ; first " << first;
    }
  }
}

// Coverage of a tile by brute force: kNone when no pair is kept, kAll when every pair is.
Coverage BruteCoverage(const std::vector<uint8_t>& keep, const AttentionArgs& a, const Tile& t) {
  bool any = false, all = true;
  for (int64_t i = t.i0; i < t.i1; ++i) {
    const uint8_t* row =
        &keep[((static_cast<int64_t>(t.b) * a.heads_out + t.h) * a.seq_q + i) * a.seq_kv];
    for (int64_t j = t.j0; j < t.j1; ++j) {
      any = any || row[j];
      all = all && row[j];
    }
  }
  return !any ? Coverage::kNone : all ? Coverage::kAll : Coverage::kPartial;
}

const char* CoverageName(int c) {
  switch (static_cast<Coverage>(c)) {
    case Coverage::kNone:
      return "kNone";
    case Coverage::kAll:
      return "kAll";
    case Coverage::kPartial:
      return "kPartial";
  }
  return "?";
}

// Whether a kPartial for a tile whose truth is kNone is the one imprecision of TileCoverage,
// allowed here: for block masks intersected with causal it tests the causal bound against the
// whole tile, not per block, so a tile straddling the diagonal whose selected blocks all lie
// above it (every pair of them hidden by causal) reads kPartial. Safe (a kernel then masks that
// tile per element and finds nothing kept: wasted work, no wrong output) and rare (a tile
// straddling the diagonal nearly always holds a kept diagonal block); anything else must be exact.
bool DocumentedConservativePartial(const AttentionArgs& a, const NaiveMask& mask, const Tile& t,
                                   Coverage truth, Coverage got) {
  if (!(a.mask == MaskCode::kBlock && a.block_causal && truth == Coverage::kNone &&
        got == Coverage::kPartial)) {
    return false;
  }
  for (int64_t r = t.i0 / a.block_q; r <= (t.i1 - 1) / a.block_q; ++r) {
    for (int64_t c = t.j0 / a.block_k; c <= (t.j1 - 1) / a.block_k; ++c) {
      if (mask.Selected(t.b, t.h, r, c)) return true;
    }
  }
  return false;
}

TEST(DeviceHelpersTest, TileCoverageMatchesBruteForce) {
  SKIP_WITHOUT_DEVICE();
  uint64_t seed = 200;
  int64_t conservative = 0, tiles_checked = 0;
  for (const MaskVariant& v : MaskVariants()) {
    for (const Problem& raw : VariantProblems(v, ++seed)) {
      const std::unique_ptr<Resident> r = MakeResident(raw);
      ASSERT_NE(r, nullptr);
      const AttentionArgs& a = r->args;
      const std::vector<uint8_t> keep = NaiveKeepAll(r->problem, a.heads_out);
      const NaiveMask mask(r->problem);
      std::mt19937_64 rng(seed * 31);
      // The kernels' tile grids (queries 16 to 128, keys 32 to 128) and odd ones, clipped to
      // S_q x S_kv as the kernels clip them, then random tiles anywhere.
      std::vector<Tile> tiles;
      const std::vector<std::pair<int64_t, int64_t>> grids = {
          {16, 32}, {64, 64}, {128, 128}, {128, 64}, {64, 128}, {7, 13}, {1, 1}};
      for (int32_t b = 0; b < a.batch; ++b) {
        for (int32_t h = 0; h < a.heads_out; ++h) {
          for (const auto& [br, bc] : grids) {
            if (br * bc == 1 && (a.seq_q * a.seq_kv > 20000 || h > 0)) continue;
            for (int64_t i0 = 0; i0 < a.seq_q; i0 += br) {
              for (int64_t j0 = 0; j0 < a.seq_kv; j0 += bc) {
                tiles.push_back(
                    {b, h, i0, std::min(a.seq_q, i0 + br), j0, std::min(a.seq_kv, j0 + bc)});
              }
            }
          }
          for (int k = 0; k < 100; ++k) {
            const int64_t i0 = Uniform(rng, 0, a.seq_q - 1), j0 = Uniform(rng, 0, a.seq_kv - 1);
            tiles.push_back(
                {b, h, i0, Uniform(rng, i0 + 1, a.seq_q), j0, Uniform(rng, j0 + 1, a.seq_kv)});
          }
        }
      }
      const DeviceBuffer tiles_d = MustUpload(tiles.data(), tiles.size() * sizeof(Tile));
      DeviceBuffer out = MustAllocate(tiles.size() * sizeof(int32_t));
      CoverageKernel<<<Blocks(tiles.size()), kThreads>>>(a, tiles_d.as<Tile>(), tiles.size(),
                                                         out.as<int32_t>());
      ASSERT_TRUE(Launched());
      const std::vector<int32_t> got = Download<int32_t>(out, tiles.size());
      int64_t wrong = 0;
      std::string first;
      for (size_t k = 0; k < tiles.size(); ++k) {
        const Tile& t = tiles[k];
        const Coverage truth = BruteCoverage(keep, a, t);
        const Coverage device = static_cast<Coverage>(got[k]);
        ++tiles_checked;
        if (device == truth) continue;
        if (DocumentedConservativePartial(a, mask, t, truth, device)) {
          ++conservative;
          continue;
        }
        if (wrong++ == 0) {
          first = "tile b " + std::to_string(t.b) + " h " + std::to_string(t.h) + " rows [" +
                  std::to_string(t.i0) + ", " + std::to_string(t.i1) + ") keys [" +
                  std::to_string(t.j0) + ", " + std::to_string(t.j1) + "): device " +
                  CoverageName(got[k]) + ", brute force " + CoverageName(static_cast<int>(truth));
        }
      }
      EXPECT_EQ(wrong, 0) << v.name << " " << Describe(r->problem) << ": " << wrong << " of "
                          << tiles.size() << " tiles wrong; first " << first;
    }
  }
  RecordProperty("tiles_checked", std::to_string(tiles_checked));
  RecordProperty("documented_conservative_partial", std::to_string(conservative));
  std::cout << tiles_checked << " tiles checked; " << conservative
            << " read kPartial where every pair is hidden (block masks with causal, documented)\n";
}

// RoPE: every element of Q and K through RopedElement against the rotation in double.
TEST(DeviceHelpersTest, RopedElementMatchesTheRotation) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937_64 rng(300);
  struct RopeCase {
    DType dtype;
    int64_t seq_q, seq_kv;
    int dim, rotary;
    double theta;
  };
  const std::vector<RopeCase> cases = {
      {DType::kFloat32, 37, 53, 40, 40, 10000},
      {DType::kFloat16, 91, 57, 64, 32, 500},       // S_q > S_kv: queries at -34 .. 56
      {DType::kBFloat16, 150, 131, 128, 128, 1e6},  // the GPU test's case with 19 negative rows
      {DType::kFloat16, 1, 777, 96, 96, 10000},     // decode-shaped: one query at 776
      {DType::kBFloat16, 45, 45, 80, 16, 10000},
      {DType::kFloat32, 300, 1, 24, 8, 2.5},  // 299 negative positions, a tiny theta
  };
  for (const RopeCase& c : cases) {
    Problem p = RandomShape(rng);
    p.seq_len_q = c.seq_q;
    p.seq_len_kv = c.seq_kv;
    p.head_dim_qk = c.dim;
    p.dtype = c.dtype;
    p.rope = {true, c.theta, c.rotary};
    const std::unique_ptr<Resident> r = MakeResident(p);
    ASSERT_NE(r, nullptr);
    const AttentionArgs& a = r->args;
    ASSERT_EQ(a.rope_dims, c.rotary);
    for (bool query : {true, false}) {
      const FloatTensor& x = query ? r->inputs.query : r->inputs.key;
      const int64_t seq = query ? a.seq_q : a.seq_kv;
      const int heads = query ? a.heads_q : a.heads_kv;
      DeviceBuffer out = MustAllocate(x.values.size() * sizeof(float));
      switch (a.storage) {
        case Storage::kFloat32:
          RopeKernel<float><<<Blocks(x.values.size()), kThreads>>>(a, query, out.as<float>());
          break;
        case Storage::kFloat16:
          RopeKernel<__half><<<Blocks(x.values.size()), kThreads>>>(a, query, out.as<float>());
          break;
        case Storage::kBFloat16:
          RopeKernel<__nv_bfloat16>
              <<<Blocks(x.values.size()), kThreads>>>(a, query, out.as<float>());
          break;
      }
      ASSERT_TRUE(Launched());
      const std::vector<float> got = Download<float>(out, x.values.size());
      const int half = c.rotary / 2;
      int64_t wrong = 0;
      std::string first;
      for (size_t t = 0; t < got.size(); ++t) {
        const int d = static_cast<int>(t % c.dim);
        const int64_t s = t / c.dim / heads % seq;
        const int64_t pos = query ? s + c.seq_kv - c.seq_q : s;
        const float* row = &x.values[t - d];
        double expected = row[d];
        double magnitude = std::fabs(row[d]);
        if (d < c.rotary) {
          const int m = d % half;
          // theta^(-2m / rotary_dims), written as an exponential.
          const double angle = pos * std::exp(-2.0 * m / c.rotary * std::log(c.theta));
          expected = d < half ? row[d] * std::cos(angle) - row[d + half] * std::sin(angle)
                              : row[d] * std::cos(angle) + row[d - half] * std::sin(angle);
          magnitude += std::fabs(row[d < half ? d + half : d - half]);
        }
        // cos and sin rounded to float in the table, two float products and a sum: under
        // 4 units of 2^-24 of the magnitude; 8 leaves room for contraction into FMAs.
        const double bound = 8 * std::ldexp(magnitude, -24);
        if (!(std::fabs(got[t] - expected) <= bound)) {
          if (wrong++ == 0) {
            first = std::string(query ? "Q" : "K") + " element " + std::to_string(t) +
                    " (position " + std::to_string(pos) + ", d " + std::to_string(d) +
                    "): device " + std::to_string(got[t]) + ", expected " +
                    std::to_string(expected);
          }
        }
      }
      EXPECT_EQ(wrong, 0) << Describe(r->problem) << ": " << wrong << " of " << got.size()
                          << " wrong; first " << first;
    }
  }
  // Without RoPE the helper returns the stored value itself.
  Problem plain = RandomShape(rng);
  plain.dtype = DType::kBFloat16;
  const std::unique_ptr<Resident> r = MakeResident(plain);
  ASSERT_NE(r, nullptr);
  ASSERT_EQ(r->args.rope_cos_sin, nullptr);
  DeviceBuffer out = MustAllocate(r->inputs.query.values.size() * sizeof(float));
  RopeKernel<__nv_bfloat16>
      <<<Blocks(r->inputs.query.values.size()), kThreads>>>(r->args, true, out.as<float>());
  ASSERT_TRUE(Launched());
  EXPECT_EQ(Download<float>(out, r->inputs.query.values.size()), r->inputs.query.values);
}

void Mha(Problem& p, int heads) {
  p.layout = {};
  p.layout.kind = LayoutKind::kMha;
  p.layout.num_heads = heads;
}

// ALiBi (geometric for power-of-two and other head counts, harmonic) and softcap, alone and
// together, on random scores, against §4 in double.
TEST(DeviceHelpersTest, ModifyScoreMatchesAlibiAndSoftcap) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937_64 rng(400);
  struct ScoreCase {
    std::string name;
    void (*edit)(Problem&);
  };
  const std::vector<ScoreCase> cases = {
      {"none", [](Problem&) {}},
      {"geometric_1",
       [](Problem& p) {
         Mha(p, 1);
         p.alibi.enabled = true;
       }},
      {"geometric_3",
       [](Problem& p) {
         Mha(p, 3);
         p.alibi.enabled = true;
       }},
      {"geometric_6",
       [](Problem& p) {
         Mha(p, 6);
         p.alibi.enabled = true;
       }},
      {"geometric_8",
       [](Problem& p) {
         Mha(p, 8);
         p.alibi.enabled = true;
       }},
      {"geometric_12_gqkva",
       [](Problem& p) {
         p.layout = {};
         p.layout.kind = LayoutKind::kGqkva;
         p.layout.query_groups = 4;
         p.layout.kv_groups = 3;
         p.alibi = {true, AlibiSchedule::kGeometric, std::nullopt};
       }},
      {"geometric_16",
       [](Problem& p) {
         Mha(p, 16);
         p.alibi.enabled = true;
       }},
      {"harmonic_default",
       [](Problem& p) {
         Mha(p, 5);
         p.alibi = {true, AlibiSchedule::kHarmonic, std::nullopt};
       }},
      {"harmonic_0.3",
       [](Problem& p) {
         Mha(p, 7);
         p.alibi = {true, AlibiSchedule::kHarmonic, 0.3};
       }},
      {"softcap_1.5",
       [](Problem& p) {
         p.softcap = {true, 1.5};
       }},
      {"softcap_30",
       [](Problem& p) {
         p.softcap = {true, 30.0};
       }},
      {"geometric_softcap",
       [](Problem& p) {
         Mha(p, 6);
         p.alibi.enabled = true;
         p.softcap = {true, 2.5};
       }},
      {"harmonic_softcap",
       [](Problem& p) {
         Mha(p, 4);
         p.alibi = {true, AlibiSchedule::kHarmonic, 0.5};
         p.softcap = {true, 5.0};
       }},
  };
  for (const ScoreCase& c : cases) {
    Problem p = RandomShape(rng);
    c.edit(p);
    const std::unique_ptr<Resident> r = MakeResident(p);
    ASSERT_NE(r, nullptr) << c.name;
    const AttentionArgs& a = r->args;
    ASSERT_EQ(a.alibi_slopes != nullptr, r->problem.alibi.enabled) << c.name;
    std::vector<float> s(static_cast<size_t>(a.heads_out) * a.seq_q * a.seq_kv);
    for (float& x : s) x = static_cast<float>(UniformReal(rng, -8, 8));
    const DeviceBuffer s_d = MustUpload(s.data(), s.size() * sizeof(float));
    DeviceBuffer out = MustAllocate(s.size() * sizeof(float));
    ScoreKernel<<<Blocks(s.size()), kThreads>>>(a, s_d.as<float>(), out.as<float>());
    ASSERT_TRUE(Launched());
    const std::vector<float> got = Download<float>(out, s.size());
    int64_t wrong = 0;
    std::string first;
    for (size_t t = 0; t < s.size(); ++t) {
      const int64_t j = t % a.seq_kv, i = t / a.seq_kv % a.seq_q;
      const int h = static_cast<int>(t / (a.seq_kv * a.seq_q));
      const int64_t ip = i + a.seq_kv - a.seq_q;
      double expected = s[t];
      double bias = 0;
      if (r->problem.alibi.enabled) {
        bias = NaiveSlope(r->problem, h, a.heads_out) * static_cast<double>(j - ip);
        expected += bias;
      }
      // The slope rounded to float, a float product and sum; the softcap's division, tanhf and
      // product (its derivative is at most 1, so the error before it passes at most as is).
      double bound = std::ldexp(std::fabs(s[t]) + std::fabs(bias), -21);
      if (r->problem.softcap.enabled) {
        const double cap = r->problem.softcap.cap;
        expected = cap * std::tanh(expected / cap);
        bound += std::ldexp(cap, -20);
      }
      if (!(std::fabs(got[t] - expected) <= bound)) {
        if (wrong++ == 0) {
          first = "(h " + std::to_string(h) + ", i " + std::to_string(i) + ", j " +
                  std::to_string(j) + ", s " + std::to_string(s[t]) + "): device " +
                  std::to_string(got[t]) + ", expected " + std::to_string(expected);
        }
      }
    }
    EXPECT_EQ(wrong, 0) << c.name << " " << Describe(r->problem) << ": " << wrong << " of "
                        << s.size() << " wrong; first " << first;
  }
}

// The head map DeviceProblem uploads, as a kernel reads it, against §2's table, for every layout
// on random sizes.
TEST(DeviceHelpersTest, HeadMapMatchesTheLayoutTable) {
  SKIP_WITHOUT_DEVICE();
  std::mt19937_64 rng(500);
  std::vector<HeadLayout> layouts;
  for (int k = 0; k < 4; ++k) {
    HeadLayout l;
    l.kind = LayoutKind::kMha;
    l.num_heads = static_cast<int>(Uniform(rng, 1, 9));
    layouts.push_back(l);
    l = {};
    l.kind = LayoutKind::kMqa;
    l.num_heads = static_cast<int>(Uniform(rng, 1, 9));
    layouts.push_back(l);
    l = {};
    l.kind = LayoutKind::kGqa;
    l.num_kv_heads = static_cast<int>(Uniform(rng, 1, 5));
    l.num_query_heads = l.num_kv_heads * static_cast<int>(Uniform(rng, 1, 5));
    layouts.push_back(l);
    l = {};
    l.kind = LayoutKind::kSqa;
    l.num_kv_heads = static_cast<int>(Uniform(rng, 1, 3));
    l.num_query_heads = l.num_kv_heads * static_cast<int>(Uniform(rng, 1, 3));
    l.baseline_heads = l.num_query_heads + static_cast<int>(Uniform(rng, 1, 8));
    layouts.push_back(l);
    l = {};
    l.kind = LayoutKind::kSymmetricSqa;
    l.baseline_heads = 2 * static_cast<int>(Uniform(rng, 1, 8));
    layouts.push_back(l);
    l = {};
    l.kind = LayoutKind::kExtremeSqa;
    l.baseline_heads = static_cast<int>(Uniform(rng, 4, 33));
    if (k % 2 == 1) l.extreme_query_heads = static_cast<int>(Uniform(rng, 1, l.baseline_heads / 4));
    layouts.push_back(l);
    l = {};
    l.kind = LayoutKind::kGqkva;
    l.query_groups = static_cast<int>(Uniform(rng, 1, 5));
    l.kv_groups = static_cast<int>(Uniform(rng, 1, 5));
    layouts.push_back(l);
    l = {};
    l.kind = LayoutKind::kExplicit;
    l.num_query_heads = static_cast<int>(Uniform(rng, 1, 6));
    l.num_kv_heads = static_cast<int>(Uniform(rng, 1, 6));
    for (int64_t h = Uniform(rng, 1, 11); h > 0; --h) {
      l.pairs.push_back({static_cast<int>(Uniform(rng, 0, l.num_query_heads - 1)),
                         static_cast<int>(Uniform(rng, 0, l.num_kv_heads - 1))});
    }
    layouts.push_back(l);
  }
  for (const HeadLayout& l : layouts) {
    Problem p = RandomShape(rng);
    p.layout = l;
    const std::unique_ptr<Resident> r = MakeResident(p);
    ASSERT_NE(r, nullptr);
    const AttentionArgs& a = r->args;
    const NaiveMap expected = NaiveHeadTable(l);
    const std::string what = Describe(r->problem);
    EXPECT_EQ(a.heads_q, expected.hq) << what;
    EXPECT_EQ(a.heads_kv, expected.hkv) << what;
    ASSERT_EQ(a.heads_out, static_cast<int>(expected.pairs.size())) << what;
    DeviceBuffer out = MustAllocate(2 * a.heads_out * sizeof(int32_t));
    HeadMapKernel<<<1, 64>>>(a, out.as<int32_t>());
    ASSERT_TRUE(Launched());
    const std::vector<int32_t> got = Download<int32_t>(out, 2 * a.heads_out);
    for (int h = 0; h < a.heads_out; ++h) {
      EXPECT_EQ(got[2 * h], expected.pairs[h].first) << what << " output head " << h;
      EXPECT_EQ(got[2 * h + 1], expected.pairs[h].second) << what << " output head " << h;
    }
  }
}

// The fused kernels' softmax takes some exp2s from PolyExp2 (common/poly_exp2.cuh): within the
// 1e-4 relative error its comment states (1.2e-4 allowed) over the range probabilities use, on both
// sides of every half-integer too (where the rounding trick switches n), exactly 0 below -125 and
// for -inf (a hidden key adds nothing), NaN kept.
TEST(PolyExp2Test, MatchesExp2OverTheProbabilityRange) {
  double worst = 0;
  float worst_x = 0;
  for (int i = 0; i <= 1250000; ++i) {
    const float x = -125.f * static_cast<float>(i) / 1250000.f;
    const double rel = std::abs(PolyExp2(x) / std::exp2(static_cast<double>(x)) - 1.0);
    if (rel > worst) {
      worst = rel;
      worst_x = x;
    }
  }
  EXPECT_LT(worst, 1.2e-4) << "at x = " << worst_x;
  EXPECT_GT(worst, 1.0e-6) << "a cubic cannot be this close: is the polynomial used at all?";
  for (int n = -124; n <= 0; ++n) {
    for (float x : {std::nextafter(n - 0.5f, -200.f), n - 0.5f, std::nextafter(n + 0.5f, 1.f)}) {
      EXPECT_NEAR(PolyExp2(x) / std::exp2(static_cast<double>(x)), 1.0, 1.2e-4) << "x = " << x;
    }
  }
  EXPECT_EQ(PolyExp2(0.f), PolyExp2(-0.f));
  EXPECT_NEAR(PolyExp2(0.f), 1.0, 1.0e-4);
  EXPECT_EQ(PolyExp2(-125.5f), 0.f);
  EXPECT_EQ(PolyExp2(-1000.f), 0.f);
  EXPECT_EQ(PolyExp2(-std::numeric_limits<float>::infinity()), 0.f);
  EXPECT_TRUE(std::isnan(PolyExp2(std::numeric_limits<float>::quiet_NaN())));
}

}  // namespace
}  // namespace attnbench::cuda
