// cuda_flash's split-KV decode kernel and its combine (decode.h says what they compute).
//
// A block (kThreads) holds up to kDecodeRowTile query rows of one KV head and walks its split of
// the keys kDecodeChunk at a time:
//   stage    the chunk's K and V rows, dequantized to float, into shared memory; the next chunk's
//            raw bytes are loaded into registers right after, so its loads are in flight while
//            this chunk is computed (decode is memory-bound: that overlap is the kernel's speed)
//   score    a warp per query row, a lane per key: <q, k> over float4 rows, then the mask and the
//            modifiers per pair, exactly as the reference kernel applies them
//   softmax  the online softmax per row (max, rescale, sum) with warp shuffles
//   PV       each thread owns float4 groups of the rows' outputs and adds p * v over the chunk
// CUDA cores, not tensor cores: at S_q * (heads per KV head) <= 16 the work per cache byte is a
// few FMAs, far under what the SM can issue while the bytes stream in; past that the kernel turns
// compute-bound, which bench/decode_table.py measures rather than hides.
#include "kernels/cuda/flash/decode.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>

#include "kernels/cuda/common/attention_device.cuh"
#include "kernels/cuda/common/kv_cache.cuh"

namespace attnbench::cuda::flash {
namespace {

// On since CudaFlashDecodeTest.* (kernels_cuda_backends_test) passed on an H100 (2026-12-07,
// bench/RESULTS.md); false again would switch the decode kernel off in this one line.
constexpr bool kFlashDecodeEnabled = true;
std::atomic<bool> decode_for_test{false};

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr size_t kDefaultSharedBytes = 48 * 1024;
static_assert(kDecodeChunk == 32, "a lane per key of the chunk");

// The shapes of one instantiation: T the storage, kDim = D_qk = D_v.
template <typename T, int kDim>
struct DecodeTile {
  static constexpr int kVec = 16 / static_cast<int>(sizeof(T));  // elements of a 16-byte native load
  static constexpr int kVecsPerRow = kDim / kVec;
  static constexpr int kTokensPerPass = kThreads / kVecsPerRow;
  static constexpr int kPasses = kDecodeChunk / kTokensPerPass;  // raw slots a thread holds
  // Floats per staged K/V row: rows 4 floats apart keep a quarter-warp's float4 reads of 8
  // consecutive rows on distinct banks.
  static constexpr int kStride = kDim + 4;
  static constexpr int kPStride = kDecodeChunk + 1;
  static constexpr int kGroups = kDim / 4;  // float4 output groups per row
  static constexpr int kOutPerThread = kDecodeRowTile * kGroups / kThreads;
  static constexpr int kSharedFloats = kDecodeRowTile * kDim + 2 * kDecodeChunk * kStride +
                                       kDecodeRowTile * kPStride + 3 * kDecodeRowTile;
  static constexpr size_t kSharedBytes = kSharedFloats * sizeof(float);
  static_assert(kDim % kVec == 0 && kThreads % kVecsPerRow == 0, "whole rows per pass");
  static_assert(kPasses >= 1 && kDecodeChunk % kTokensPerPass == 0, "whole passes per chunk");
  static_assert(kOutPerThread >= 1 && (kDecodeRowTile * kGroups) % kThreads == 0, "outputs");
};

// One token's raw bytes of a thread's vector of K and V, and how to read them. code < 0: no token
// (past the split), which stages as zeros.
struct RawSlot {
  uint4 k;
  uint4 v;
  float k_scale;
  float v_scale;
  int code;
};

template <int kBytes>
__device__ __forceinline__ uint4 LoadBytes(const void* p) {
  uint4 r = make_uint4(0, 0, 0, 0);
  if constexpr (kBytes == 16) {
    r = __ldg(static_cast<const uint4*>(p));
  } else if constexpr (kBytes == 8) {
    const uint2 x = __ldg(static_cast<const uint2*>(p));
    r.x = x.x;
    r.y = x.y;
  } else if constexpr (kBytes == 4) {
    r.x = __ldg(static_cast<const unsigned int*>(p));
  } else {
    static_assert(kBytes == 2, "2, 4, 8 or 16 bytes");
    r.x = __ldg(static_cast<const unsigned short*>(p));
  }
  return r;
}

// Vector `vec` (kVec elements) of cache row `row` of `pool`, stored as `code`.
template <typename T, int kDim>
__device__ __forceinline__ uint4 LoadVector(const KvCachePool& pool, int64_t row, CacheCode code,
                                            int vec) {
  using Tile = DecodeTile<T, kDim>;
  constexpr int kVec = Tile::kVec;
  switch (code) {
    case CacheCode::kInt8:
      return LoadBytes<kVec>(pool.int8 + row * kDim + vec * kVec);
    case CacheCode::kInt4:
      return LoadBytes<kVec / 2>(pool.int4 + row * (kDim / 2) + vec * (kVec / 2));
    default:
      return LoadBytes<16>(static_cast<const T*>(pool.stored) + row * kDim + vec * kVec);
  }
}

// The kVec elements of a raw vector as float, exactly as CachedElement reads them.
template <typename T, int kVec>
__device__ __forceinline__ void Dequantize(const uint4& raw, int code, float scale, float* out) {
  if (code < 0) {
#pragma unroll
    for (int e = 0; e < kVec; ++e) out[e] = 0.f;
  } else if (code == static_cast<int>(CacheCode::kInt8)) {
    const int8_t* q = reinterpret_cast<const int8_t*>(&raw);
#pragma unroll
    for (int e = 0; e < kVec; ++e) out[e] = static_cast<float>(q[e]) * scale;
  } else if (code == static_cast<int>(CacheCode::kInt4)) {
    const uint8_t* q = reinterpret_cast<const uint8_t*>(&raw);
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      const int nibble = (q[e / 2] >> (4 * (e % 2))) & 0xf;
      out[e] = static_cast<float>(nibble >= 8 ? nibble - 16 : nibble) * scale;
    }
  } else {
    const T* x = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int e = 0; e < kVec; ++e) out[e] = ToFloat(x[e]);
  }
}

// The raw bytes of this thread's vectors of the keys [j0, j0 + kDecodeChunk) below j_end.
template <typename T, int kDim>
__device__ __forceinline__ void LoadChunk(const KvCacheArgs& c, int b, int g, int64_t j0,
                                          int64_t j_end, RawSlot (&slots)[DecodeTile<T, kDim>::kPasses]) {
  using Tile = DecodeTile<T, kDim>;
  const int vec = threadIdx.x % Tile::kVecsPerRow;
#pragma unroll
  for (int p = 0; p < Tile::kPasses; ++p) {
    const int64_t j = j0 + p * Tile::kTokensPerPass + threadIdx.x / Tile::kVecsPerRow;
    RawSlot& s = slots[p];
    s.code = -1;
    if (j >= j_end) continue;
    const CacheRow r = LocateCacheRow(c, b, j, g);
    s.code = static_cast<int>(r.code);
    s.k = LoadVector<T, kDim>(c.keys, r.row, r.code, vec);
    s.v = LoadVector<T, kDim>(c.values, r.row, r.code, vec);
    s.k_scale = r.code == CacheCode::kInt8   ? __ldg(c.keys.scales8 + r.row)
                : r.code == CacheCode::kInt4 ? __ldg(c.keys.scales4 + r.row)
                                             : 1.f;
    s.v_scale = r.code == CacheCode::kInt8   ? __ldg(c.values.scales8 + r.row)
                : r.code == CacheCode::kInt4 ? __ldg(c.values.scales4 + r.row)
                                             : 1.f;
  }
}

// What a split leaves for the combine: [splits][B * H_out * S_q] rows (row (b * H_out + h) * S_q
// + i) of D_v floats, normalized by the split's own sum, and the split's log-sum-exp per row.
struct SplitOut {
  float* out = nullptr;
  float* lse = nullptr;
};

template <typename T, int kDim>
__global__ void __launch_bounds__(kThreads)
    DecodeKernel(const __grid_constant__ AttentionArgs a, const __grid_constant__ KvCacheArgs c,
                 const DecodePlan plan, SplitOut split_out) {
  using Tile = DecodeTile<T, kDim>;
  extern __shared__ float4 shared4[];
  float* q_s = reinterpret_cast<float*>(shared4);
  float* k_s = q_s + kDecodeRowTile * kDim;
  float* v_s = k_s + kDecodeChunk * Tile::kStride;
  float* p_s = v_s + kDecodeChunk * Tile::kStride;
  float* m_s = p_s + kDecodeRowTile * Tile::kPStride;
  float* l_s = m_s + kDecodeRowTile;
  float* alpha_s = l_s + kDecodeRowTile;
  __shared__ int row_h[kDecodeRowTile];
  __shared__ int row_i[kDecodeRowTile];

  const int b = static_cast<int>(blockIdx.x / a.heads_kv);
  const int g = static_cast<int>(blockIdx.x % a.heads_kv);
  const int split = static_cast<int>(blockIdx.z);
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;

  // The tile's rows: row r of KV head g is query i = r % S_q of the (r / S_q)-th output head
  // reading g, in increasing head order.
  if (threadIdx.x < kDecodeRowTile) {
    const int64_t r = static_cast<int64_t>(blockIdx.y) * kDecodeRowTile + threadIdx.x;
    const int64_t slot = r / a.seq_q;
    int found = -1;
    for (int h = 0, seen = 0; h < a.heads_out; ++h) {
      if (a.head_map[2 * h + 1] != g) continue;
      if (seen++ == slot) {
        found = h;
        break;
      }
    }
    row_h[threadIdx.x] = found;
    row_i[threadIdx.x] = static_cast<int>(r % a.seq_q);
    m_s[threadIdx.x] = kNegInf;
    l_s[threadIdx.x] = 0.f;
  }
  __syncthreads();
  int rows = 0;
  while (rows < kDecodeRowTile && row_h[rows] >= 0) ++rows;
  if (rows == 0) return;  // block-uniform: this KV head has fewer rows than the grid's tiles

  const T* q = static_cast<const T*>(a.q);
  for (int e = threadIdx.x; e < rows * kDim; e += kThreads) {
    const int rr = e / kDim;
    const int d = e % kDim;
    const int i = row_i[rr];
    const T* q_row = q + RowOffset(b, a.seq_q, i, a.heads_q, a.head_map[2 * row_h[rr]], kDim);
    q_s[e] = RopedElement(a, q_row, i + a.offset, d);
  }

  const int64_t j_begin = plan.key_begin + split * plan.split_tokens;
  const int64_t j_end = min(plan.key_end, j_begin + plan.split_tokens);
  float4 acc[Tile::kOutPerThread];
#pragma unroll
  for (int o = 0; o < Tile::kOutPerThread; ++o) acc[o] = make_float4(0.f, 0.f, 0.f, 0.f);

  RawSlot slots[Tile::kPasses];
  if (j_begin < j_end) LoadChunk<T, kDim>(c, b, g, j_begin, j_end, slots);
  for (int64_t j0 = j_begin; j0 < j_end; j0 += kDecodeChunk) {
    __syncthreads();  // the previous chunk's PV is done with k_s, v_s and p_s (and q_s is written)
    {
      const int vec = threadIdx.x % Tile::kVecsPerRow;
#pragma unroll
      for (int p = 0; p < Tile::kPasses; ++p) {
        const int t = p * Tile::kTokensPerPass + threadIdx.x / Tile::kVecsPerRow;
        float x[Tile::kVec];
        Dequantize<T, Tile::kVec>(slots[p].k, slots[p].code, slots[p].k_scale, x);
        float4* kd = reinterpret_cast<float4*>(k_s + t * Tile::kStride + vec * Tile::kVec);
#pragma unroll
        for (int e = 0; e < Tile::kVec / 4; ++e) {
          kd[e] = make_float4(x[4 * e], x[4 * e + 1], x[4 * e + 2], x[4 * e + 3]);
        }
        Dequantize<T, Tile::kVec>(slots[p].v, slots[p].code, slots[p].v_scale, x);
        float4* vd = reinterpret_cast<float4*>(v_s + t * Tile::kStride + vec * Tile::kVec);
#pragma unroll
        for (int e = 0; e < Tile::kVec / 4; ++e) {
          vd[e] = make_float4(x[4 * e], x[4 * e + 1], x[4 * e + 2], x[4 * e + 3]);
        }
      }
    }
    __syncthreads();
    if (j0 + kDecodeChunk < j_end) LoadChunk<T, kDim>(c, b, g, j0 + kDecodeChunk, j_end, slots);

    // Scores: warp w takes rows w, w + kWarps, ...; lane t key j0 + t.
    for (int rr = warp; rr < rows; rr += kWarps) {
      const int64_t j = j0 + lane;
      const int h = row_h[rr];
      const int64_t i = row_i[rr];
      float s = kNegInf;
      if (j < j_end && MaskKeeps(a, b, h, i, j)) {
        const float4* qv = reinterpret_cast<const float4*>(q_s + rr * kDim);
        const float4* kv = reinterpret_cast<const float4*>(k_s + lane * Tile::kStride);
        // Four independent sums: one chain of kDim FMAs would be latency-bound where a single
        // warp scores the chunk (MHA, S_q 1).
        float4 dot = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 8
        for (int d4 = 0; d4 < kDim / 4; ++d4) {
          const float4 x = qv[d4];
          const float4 y = kv[d4];
          dot.x = fmaf(x.x, y.x, dot.x);
          dot.y = fmaf(x.y, y.y, dot.y);
          dot.z = fmaf(x.z, y.z, dot.z);
          dot.w = fmaf(x.w, y.w, dot.w);
        }
        s = ModifyScore(a, h, i, j, a.scale * ((dot.x + dot.y) + (dot.z + dot.w)));
      }
      p_s[rr * Tile::kPStride + lane] = s;
    }
    __syncthreads();

    // The online softmax of each row over this chunk.
    for (int rr = warp; rr < rows; rr += kWarps) {
      const float s = p_s[rr * Tile::kPStride + lane];
      float mx = s;
#pragma unroll
      for (int delta = 16; delta > 0; delta /= 2) {
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, delta));
      }
      const float m_old = m_s[rr];
      const float m_new = fmaxf(m_old, mx);
      const float p = m_new == kNegInf ? 0.f : exp2f((s - m_new) * kLog2e);
      float sum = p;
#pragma unroll
      for (int delta = 16; delta > 0; delta /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, delta);
      p_s[rr * Tile::kPStride + lane] = p;
      if (lane == 0) {
        // Nothing accumulated while every key so far was hidden: the factor is then 0.
        const float alpha = m_old == kNegInf ? 0.f : exp2f((m_old - m_new) * kLog2e);
        alpha_s[rr] = alpha;
        l_s[rr] = l_s[rr] * alpha + sum;
        m_s[rr] = m_new;
      }
    }
    __syncthreads();

    // PV: output group o of this thread is row gi / kGroups, columns 4 (gi % kGroups) + 0..3.
#pragma unroll
    for (int o = 0; o < Tile::kOutPerThread; ++o) {
      const int gi = threadIdx.x + o * kThreads;
      const int rr = gi / Tile::kGroups;
      if (rr >= rows) continue;
      const int col4 = gi % Tile::kGroups;
      const float alpha = alpha_s[rr];
      float4 x = acc[o];
      x.x *= alpha;
      x.y *= alpha;
      x.z *= alpha;
      x.w *= alpha;
      const float* pr = p_s + rr * Tile::kPStride;
#pragma unroll 8
      for (int t = 0; t < kDecodeChunk; ++t) {
        const float p = pr[t];
        const float4 v = reinterpret_cast<const float4*>(v_s + t * Tile::kStride)[col4];
        x.x = fmaf(p, v.x, x.x);
        x.y = fmaf(p, v.y, x.y);
        x.z = fmaf(p, v.z, x.z);
        x.w = fmaf(p, v.w, x.w);
      }
      acc[o] = x;
    }
  }

  // A row whose every key (of this split) is hidden has l = 0 and outputs zeros (§1).
  const int64_t rows_total = static_cast<int64_t>(a.batch) * a.heads_out * a.seq_q;
#pragma unroll
  for (int o = 0; o < Tile::kOutPerThread; ++o) {
    const int gi = threadIdx.x + o * kThreads;
    const int rr = gi / Tile::kGroups;
    if (rr >= rows) continue;
    const int col4 = gi % Tile::kGroups;
    const int h = row_h[rr];
    const int i = row_i[rr];
    const float l = l_s[rr];
    const float inv = l > 0.f ? 1.f / l : 0.f;
    const float4 x = make_float4(acc[o].x * inv, acc[o].y * inv, acc[o].z * inv, acc[o].w * inv);
    if (split_out.out == nullptr) {
      T* out = static_cast<T*>(a.o) + RowOffset(b, a.seq_q, i, a.heads_out, h, kDim) + 4 * col4;
      out[0] = FromFloat<T>(x.x);
      out[1] = FromFloat<T>(x.y);
      out[2] = FromFloat<T>(x.z);
      out[3] = FromFloat<T>(x.w);
    } else {
      const int64_t row = split * rows_total + (static_cast<int64_t>(b) * a.heads_out + h) * a.seq_q + i;
      reinterpret_cast<float4*>(split_out.out + row * kDim)[col4] = x;
      if (col4 == 0) split_out.lse[row] = l > 0.f ? m_s[rr] + logf(l) : kNegInf;
    }
  }
}

// One warp per output row: the splits' rows weighted by exp(lse - max lse), over their sum.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    CombineKernel(const __grid_constant__ AttentionArgs a, int splits, SplitOut split_out) {
  constexpr int kMaxPerLane = 256 / 32;
  const int64_t rows = static_cast<int64_t>(a.batch) * a.heads_out * a.seq_q;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (row >= rows) return;
  const int lane = threadIdx.x % 32;
  const int i = static_cast<int>(row % a.seq_q);
  const int h = static_cast<int>((row / a.seq_q) % a.heads_out);
  const int b = static_cast<int>(row / (static_cast<int64_t>(a.seq_q) * a.heads_out));
  float mx = kNegInf;
  for (int s = 0; s < splits; ++s) mx = fmaxf(mx, split_out.lse[s * rows + row]);
  float acc[kMaxPerLane] = {};
  float total = 0.f;
  if (mx != kNegInf) {
    for (int s = 0; s < splits; ++s) {
      const float w = exp2f((split_out.lse[s * rows + row] - mx) * kLog2e);  // -inf: 0
      if (w == 0.f) continue;
      total += w;
      const float* part = split_out.out + (s * rows + row) * a.dim_v;
#pragma unroll
      for (int e = 0; e < kMaxPerLane; ++e) {
        const int d = lane + 32 * e;
        if (d < a.dim_v) acc[e] = fmaf(w, part[d], acc[e]);
      }
    }
  }
  const float inv = total > 0.f ? 1.f / total : 0.f;
  T* out = static_cast<T*>(a.o) + RowOffset(b, a.seq_q, i, a.heads_out, h, a.dim_v);
#pragma unroll
  for (int e = 0; e < kMaxPerLane; ++e) {
    const int d = lane + 32 * e;
    if (d < a.dim_v) out[d] = FromFloat<T>(acc[e] * inv);
  }
}

template <typename T, int kDim>
cudaError_t LaunchFor(const AttentionArgs& a, const KvCacheArgs& c, const DecodePlan& plan,
                      SplitOut split_out, cudaStream_t stream) {
  using Tile = DecodeTile<T, kDim>;
  if (Tile::kSharedBytes > kDefaultSharedBytes) {
    const cudaError_t e = cudaFuncSetAttribute(DecodeKernel<T, kDim>,
                                               cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(Tile::kSharedBytes));
    if (e != cudaSuccess) return e;
  }
  const dim3 grid(static_cast<unsigned>(static_cast<int64_t>(a.batch) * a.heads_kv),
                  static_cast<unsigned>(plan.row_tiles), static_cast<unsigned>(plan.splits));
  DecodeKernel<T, kDim><<<grid, kThreads, Tile::kSharedBytes, stream>>>(a, c, plan, split_out);
  if (split_out.out == nullptr) return cudaGetLastError();
  if (const cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
  const int64_t rows = static_cast<int64_t>(a.batch) * a.heads_out * a.seq_q;
  CombineKernel<T><<<static_cast<unsigned>((rows + kWarps - 1) / kWarps), kThreads, 0, stream>>>(
      a, plan.splits, split_out);
  return cudaGetLastError();
}

// The instantiations, one per head dim DecodeRefusal allows (for each 16-bit storage).
template <typename T>
cudaError_t LaunchForDim(const AttentionArgs& a, const KvCacheArgs& c, const DecodePlan& plan,
                         SplitOut split_out, cudaStream_t stream) {
  switch (a.dim_qk) {
    case 32:
      return LaunchFor<T, 32>(a, c, plan, split_out, stream);
    case 64:
      return LaunchFor<T, 64>(a, c, plan, split_out, stream);
    case 128:
      return LaunchFor<T, 128>(a, c, plan, split_out, stream);
    case 256:
      return LaunchFor<T, 256>(a, c, plan, split_out, stream);
  }
  return cudaErrorNotSupported;
}

template <typename T>
int BlocksPerSmForDim(int dim) {
  int blocks = 0;
  cudaError_t e = cudaErrorNotSupported;
  switch (dim) {
    case 32:
      e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, DecodeKernel<T, 32>, kThreads,
                                                        DecodeTile<T, 32>::kSharedBytes);
      break;
    case 64:
      e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, DecodeKernel<T, 64>, kThreads,
                                                        DecodeTile<T, 64>::kSharedBytes);
      break;
    case 128:
      e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, DecodeKernel<T, 128>, kThreads,
                                                        DecodeTile<T, 128>::kSharedBytes);
      break;
    case 256:
      // Past the default 48 KB: the opt-in the launch sets first.
      e = cudaFuncSetAttribute(DecodeKernel<T, 256>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                               static_cast<int>(DecodeTile<T, 256>::kSharedBytes));
      if (e == cudaSuccess) {
        e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, DecodeKernel<T, 256>, kThreads,
                                                          DecodeTile<T, 256>::kSharedBytes);
      }
      break;
  }
  return e == cudaSuccess ? blocks : 0;
}

}  // namespace

int DecodeBlocksPerSm(const AttentionArgs& a) {
  if (!DecodeRefusal(a).empty()) return 0;
  const int blocks = a.storage == Storage::kFloat16 ? BlocksPerSmForDim<__half>(a.dim_qk)
                                                    : BlocksPerSmForDim<__nv_bfloat16>(a.dim_qk);
  return std::max(blocks, 1);
}

bool FlashDecodeEnabled() { return kFlashDecodeEnabled || decode_for_test; }
void EnableFlashDecodeForTest() { decode_for_test = true; }

const KernelAllowList& DecodeAllowList() {
  static const KernelAllowList* const list = [] {
    auto* l = new KernelAllowList;
    l->name = "decode split-kv";
    l->cc_major = 8;
    l->cc_minor = 0;
    l->cc_minimum = true;
    l->storages = {Storage::kFloat16, Storage::kBFloat16};
    l->masks = {MaskCode::kNone, MaskCode::kCausal, MaskCode::kWindow, MaskCode::kBlock};
    l->modifiers = kModifierRope | kModifierAlibi | kModifierSoftcap;
    l->head_dims = {{32, 32}, {64, 64}, {128, 128}, {256, 256}};
    l->requirements = {"S_q from 1 to " + std::to_string(kDecodeMaxSeqQ),
                       "S_kv below 2^31",
                       "reads native, paged, int8, int4 and SAQ caches at their stored width"};
    l->decode = true;
    return l;
  }();
  return *list;
}

std::string DecodeRefusal(const AttentionArgs& a) {
  const KernelAllowList& list = DecodeAllowList();
  if (a.seq_q < 1 || a.seq_q > kDecodeMaxSeqQ) {
    return "the decode kernel takes S_q from 1 to " + std::to_string(kDecodeMaxSeqQ);
  }
  if (std::find(list.storages.begin(), list.storages.end(), a.storage) == list.storages.end()) {
    return "the decode kernel stores float16 and bfloat16 only";
  }
  if (std::find(list.head_dims.begin(), list.head_dims.end(),
                std::pair<int, int>(a.dim_qk, a.dim_v)) == list.head_dims.end()) {
    return "the decode kernel takes D_qk = D_v in {32, 64, 128, 256}";
  }
  if (std::find(list.masks.begin(), list.masks.end(), a.mask) == list.masks.end()) {
    return "the decode kernel does not take this mask";
  }
  if ((a.modifiers & ~list.modifiers) != 0) {
    return "the decode kernel runs RoPE, ALiBi and softcap only (no score_mod or mask_mod)";
  }
  if (a.seq_kv >= (int64_t{1} << 31)) return "the decode kernel takes S_kv below 2^31";
  if (a.batch <= 0 || a.heads_q <= 0 || a.heads_kv <= 0 || a.heads_out <= 0) {
    return "the decode kernel needs a non-empty problem";
  }
  return "";
}

DecodePlan PlanDecode(const AttentionArgs& a, const std::vector<int32_t>& kv_head_of_output,
                      int sms, int blocks_per_sm) {
  DecodePlan p;
  std::vector<int64_t> heads_of(static_cast<size_t>(std::max(a.heads_kv, 1)), 0);
  for (int32_t g : kv_head_of_output) {
    if (g >= 0 && g < a.heads_kv) ++heads_of[static_cast<size_t>(g)];
  }
  const int64_t max_rows = *std::max_element(heads_of.begin(), heads_of.end()) * a.seq_q;
  p.row_tiles = static_cast<int>((max_rows + kDecodeRowTile - 1) / kDecodeRowTile);
  const KeyInterval keys = KeysKeptByRows(a, 0, a.seq_q - 1);
  p.key_begin = keys.lo;
  p.key_end = std::max(keys.lo, keys.hi);
  const int64_t chunks = (p.key_end - p.key_begin + kDecodeChunk - 1) / kDecodeChunk;
  if (chunks == 0) return p;  // every key hidden: one split that writes zeros
  const int64_t blocks = static_cast<int64_t>(a.batch) * a.heads_kv * std::max(p.row_tiles, 1);
  const int64_t slots = static_cast<int64_t>(std::max(sms, 1)) * std::max(blocks_per_sm, 1);
  const int64_t most =
      std::min<int64_t>(kDecodeMaxSplits, std::max<int64_t>(1, chunks / kDecodeMinChunksPerSplit));
  // Time ~ waves of the grid x chunks a split walks; the fewest splits among equals (each adds
  // to the combine).
  int64_t best = 1;
  int64_t best_time = (blocks + slots - 1) / slots * chunks;
  for (int64_t s = 2; s <= most; ++s) {
    const int64_t time = (blocks * s + slots - 1) / slots * ((chunks + s - 1) / s);
    if (time < best_time) {
      best = s;
      best_time = time;
    }
  }
  const int64_t per = (chunks + best - 1) / best;
  p.splits = static_cast<int>((chunks + per - 1) / per);
  p.split_tokens = per * kDecodeChunk;
  return p;
}

size_t DecodeWorkspaceBytes(const AttentionArgs& a, const DecodePlan& plan) {
  if (plan.splits <= 1) return 0;
  const size_t rows = static_cast<size_t>(plan.splits) * static_cast<size_t>(a.batch) *
                      static_cast<size_t>(a.heads_out) * static_cast<size_t>(a.seq_q);
  return rows * (static_cast<size_t>(a.dim_v) + 1) * sizeof(float);
}

cudaError_t LaunchDecode(const AttentionArgs& a, const KvCacheArgs& c, const DecodePlan& plan,
                         void* workspace, cudaStream_t stream) {
  if (!DecodeRefusal(a).empty()) return cudaErrorNotSupported;
  if (c.page_table == nullptr || plan.row_tiles <= 0 || plan.splits < 1) {
    return cudaErrorInvalidValue;
  }
  SplitOut split_out;
  if (plan.splits > 1) {
    if (workspace == nullptr) return cudaErrorInvalidValue;
    const size_t rows = static_cast<size_t>(plan.splits) * static_cast<size_t>(a.batch) *
                        static_cast<size_t>(a.heads_out) * static_cast<size_t>(a.seq_q);
    split_out.out = static_cast<float*>(workspace);
    split_out.lse = split_out.out + rows * static_cast<size_t>(a.dim_v);
  }
  switch (a.storage) {
    case Storage::kFloat16:
      return LaunchForDim<__half>(a, c, plan, split_out, stream);
    case Storage::kBFloat16:
      return LaunchForDim<__nv_bfloat16>(a, c, plan, split_out, stream);
    default:
      return cudaErrorNotSupported;
  }
}

}  // namespace attnbench::cuda::flash
