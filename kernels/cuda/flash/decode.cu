// cuda_flash's split-KV decode kernel and its combine (decode.h says what they compute).
//
// A block (4 warps) holds the kDecodeRowTile query rows of one KV head, one mma m-tile, and walks
// its split of the keys kDecodeChunk (64) at a time through a cp.async pipeline of kStages chunks:
//   locate   thread t < 64 finds token t's cache row (page table, SAQ band) a chunk before its
//            copy is issued, so the dependent page-table load never stalls the copies
//   copy     each token's K and V rows at their stored width (int8, int4 or 16-bit), its scales
//            and its format, into the stage; decode is memory-bound, and kStages - 1 chunks in
//            flight per block are what keep the device's bandwidth busy
//   widen    each warp widens the int8 / int4 rows of its 16 keys to T in place (exact); the
//            scales stay apart: K's multiplies the score, V's the probability
//   QK^T     mma.sync m16n8k16 over the warp's 16 keys, then the mask and the modifiers per pair
//            exactly as the reference kernel applies them
//   softmax  the online softmax (softmax.cuh), P rounded to T with V's scale folded in
//   PV       mma.sync into the warp's float32 O (16 rows x D)
// Each warp keeps its own softmax state over every 4th run of 16 keys; the block merges the four
// by their maxima at the end, and a combine kernel merges the splits by their log-sum-exp.
// Tensor cores, not CUDA cores: an int4 cache brings a quarter of the bytes per key, and 16 rows
// of FMAs per key would then bound the kernel, not the memory.
// Measured (H100, bench/RESULTS.md 2026-12-07, GQA 32/8, 512k keys): native 0.94 and paged
// 0.89-0.94 of the copy bandwidth; int8 0.43, int4 and SAQ 0.20. A chunk costs ~3.5 us per block
// whatever its width: at 2 blocks (8 warps) an SM the kernel is latency-bound, and shared memory
// (3 stages at 16-bit width) is what caps the blocks.
#include "kernels/cuda/flash/decode.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>

#include "kernels/cuda/common/attention_device.cuh"
#include "kernels/cuda/common/fragment.cuh"
#include "kernels/cuda/common/kv_cache.cuh"
#include "kernels/cuda/common/ptx.cuh"
#include "kernels/cuda/common/softmax.cuh"

namespace attnbench::cuda::flash {
namespace {

// On since CudaFlashDecodeTest.* (kernels_cuda_backends_test) passed on an H100 (2026-12-07,
// bench/RESULTS.md); false again would switch the decode kernel off in this one line.
constexpr bool kFlashDecodeEnabled = true;
std::atomic<bool> decode_for_test{false};

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr size_t kDefaultSharedBytes = 48 * 1024;
constexpr int kWarpKeys = 16;  // keys a warp scores per chunk: one m16n8k16 k-step of P V
static_assert(kDecodeChunk == kWarps * kWarpKeys, "a chunk is every warp's keys");
static_assert(kDecodeRowTile == 16, "the rows of a tile are one mma m-tile");
constexpr int kMaxSharedSegments = 8;  // SAQ bands read from shared memory; more from global

// The shapes of one instantiation, T the storage and kDim = D_qk = D_v, and its shared memory:
//   stages  kStages x { K rows, V rows: kDecodeChunk x kRowBytes each; K and V scales; codes }
//   q       the tile's query rows after RoPE, in T (the mma's A operand)
//   loc     two chunks' cache rows and codes, computed a chunk ahead of their copies
// After the loop the stages hold the warps' partial outputs for the block's merge.
template <typename T, int kDim>
struct DecodeTile {
  // A row in T and a 16-byte pad: the 8 rows of an ldmatrix land on distinct banks.
  static constexpr int kRowBytes = kDim * 2 + 16;
  static constexpr int kVecs = kDim * 2 / 16;  // 16-byte vectors of a row at 16-bit width
  static constexpr int kInt8Vecs = kDim / 16;
  static constexpr int kInt4Vecs = kDim / 32;
  static constexpr int kTokensPerPass = kThreads / kVecs;
  static constexpr int kPasses = kDecodeChunk / kTokensPerPass;
  // Chunks in flight: enough bytes to cover the memory latency, few enough for two blocks an SM
  // at D <= 128 (one at 256).
  static constexpr int kStages = kDim <= 64 ? 4 : kDim == 128 ? 3 : 2;
  static constexpr int kKOff = 0;
  static constexpr int kVOff = kDecodeChunk * kRowBytes;
  static constexpr int kKScaleOff = 2 * kDecodeChunk * kRowBytes;
  static constexpr int kVScaleOff = kKScaleOff + kDecodeChunk * 4;
  static constexpr int kCodeOff = kVScaleOff + kDecodeChunk * 4;
  static constexpr int kStageBytes = kCodeOff + kDecodeChunk * 4;
  static constexpr int kQOff = kStages * kStageBytes;
  static constexpr int kLocRowOff = kQOff + kDecodeRowTile * kRowBytes;
  static constexpr int kLocCodeOff = kLocRowOff + 2 * kDecodeChunk * 8;
  static constexpr int kSharedBytes = kLocCodeOff + 2 * kDecodeChunk * 4;
  // The merge: each warp's float O rows, row maxima and sums.
  static constexpr int kMergeBytes = kWarps * kDecodeRowTile * (kDim + 2) * 4;
  static_assert(kThreads % kVecs == 0 && kDecodeChunk % kTokensPerPass == 0, "whole passes");
  static_assert(kStageBytes % 16 == 0 && kQOff % 16 == 0 && kLocRowOff % 16 == 0, "alignment");
  static_assert(kMergeBytes <= kStages * kStageBytes, "the merge fits in the stages");
  static_assert(kInt4Vecs >= 1, "an int4 row is whole 16-byte vectors");
};

// What a split leaves for the combine: [splits][B * H_out * S_q] rows (row (b * H_out + h) * S_q
// + i) of D_v floats, normalized by the split's own sum, and the split's log-sum-exp per row.
struct SplitOut {
  float* out = nullptr;
  float* lse = nullptr;
};

// The format of token j: the SAQ band it falls in (the first kMaxSharedSegments from shared
// memory).
__device__ __forceinline__ int SegmentCode(const KvCacheArgs& c, const int64_t* ends_s,
                                           const int* codes_s, int64_t j) {
  for (int s = 0; s < c.num_segments; ++s) {
    const bool shared = s < kMaxSharedSegments;
    if (j < (shared ? ends_s[s] : c.segment_ends[s])) {
      return shared ? codes_s[s] : static_cast<int>(c.segment_codes[s]);
    }
  }
  return static_cast<int>(CacheCode::kNative);
}

// Issues the copies of one chunk into `stage`: row vector (threadIdx % kVecs) of every kPasses-th
// token, K and V, at the token's stored width (int8 and int4 rows are fewer vectors), and each
// token's scales and code. A token past the split (code < 0) is zero-filled.
template <typename T, int kDim>
__device__ __forceinline__ void IssueChunk(const KvCacheArgs& c, unsigned char* stage,
                                           const int64_t* loc_row, const int* loc_code) {
  using Tile = DecodeTile<T, kDim>;
  const int vec = threadIdx.x % Tile::kVecs;
  const uint32_t base = SmemAddr(stage);
#pragma unroll
  for (int p = 0; p < Tile::kPasses; ++p) {
    const int t = p * Tile::kTokensPerPass + threadIdx.x / Tile::kVecs;
    const int code = loc_code[t];
    const int64_t row = loc_row[t];
    const uint32_t kd = base + Tile::kKOff + t * Tile::kRowBytes + vec * 16;
    const uint32_t vd = base + Tile::kVOff + t * Tile::kRowBytes + vec * 16;
    if (code == static_cast<int>(CacheCode::kInt8)) {
      if (vec < Tile::kInt8Vecs) {
        CpAsync16(kd, c.keys.int8 + row * kDim + vec * 16, true);
        CpAsync16(vd, c.values.int8 + row * kDim + vec * 16, true);
      }
      if (vec == 0) {
        CpAsync4(base + Tile::kKScaleOff + 4 * t, c.keys.scales8 + row);
        CpAsync4(base + Tile::kVScaleOff + 4 * t, c.values.scales8 + row);
      }
    } else if (code == static_cast<int>(CacheCode::kInt4)) {
      if (vec < Tile::kInt4Vecs) {
        CpAsync16(kd, c.keys.int4 + row * (kDim / 2) + vec * 16, true);
        CpAsync16(vd, c.values.int4 + row * (kDim / 2) + vec * 16, true);
      }
      if (vec == 0) {
        CpAsync4(base + Tile::kKScaleOff + 4 * t, c.keys.scales4 + row);
        CpAsync4(base + Tile::kVScaleOff + 4 * t, c.values.scales4 + row);
      }
    } else {
      const bool real = code >= 0;
      const unsigned char* kp = static_cast<const unsigned char*>(c.keys.stored);
      const unsigned char* vp = static_cast<const unsigned char*>(c.values.stored);
      const int64_t at = real ? row * kDim * 2 + vec * 16 : 0;
      // No token: a valid address that copies nothing and zero-fills the 16 bytes.
      CpAsync16(kd, real ? kp + at : static_cast<const void*>(c.page_table), real);
      CpAsync16(vd, real ? vp + at : static_cast<const void*>(c.page_table), real);
      if (vec == 0) {
        reinterpret_cast<float*>(stage + Tile::kKScaleOff)[t] = real ? 1.f : 0.f;
        reinterpret_cast<float*>(stage + Tile::kVScaleOff)[t] = real ? 1.f : 0.f;
      }
    }
    if (vec == 0) reinterpret_cast<int*>(stage + Tile::kCodeOff)[t] = code;
  }
}

// Integers to packed pairs of T, exactly and on the full-rate pipes (I2F runs at a quarter of the
// rate, and was what bound the int8 and int4 caches): a biased integer u is OR-ed into the mantissa
// of a power of two p, the number p + u is exact, and one subtraction of p + bias leaves it.
template <typename T>
struct Widen;
template <>
struct Widen<__half> {
  // Four int8 (a word) to two pairs: half 0x64uu is 1024 + u, u = x + 128.
  static __device__ __forceinline__ void Int8(uint32_t word, uint32_t* out) {
    const uint32_t u = word ^ 0x80808080u;
    const __half2 bias = __halves2half2(__ushort_as_half(0x6480), __ushort_as_half(0x6480));
    uint32_t lo = __byte_perm(u, 0x64646464u, 0x4140);
    uint32_t hi = __byte_perm(u, 0x64646464u, 0x4342);
    const __half2 a = __hsub2(*reinterpret_cast<__half2*>(&lo), bias);
    const __half2 b = __hsub2(*reinterpret_cast<__half2*>(&hi), bias);
    out[0] = *reinterpret_cast<const uint32_t*>(&a);
    out[1] = *reinterpret_cast<const uint32_t*>(&b);
  }
  // Two int4 (nibbles n0 n1 of a byte, biased by 8) in the low bits of each half: 1024 + u.
  static __device__ __forceinline__ uint32_t Int4Pair(uint32_t spread) {
    uint32_t h = (spread & 0x000f000fu) | 0x64006400u;
    const __half2 bias = __halves2half2(__ushort_as_half(0x6408), __ushort_as_half(0x6408));
    const __half2 r = __hsub2(*reinterpret_cast<__half2*>(&h), bias);
    return *reinterpret_cast<const uint32_t*>(&r);
  }
};
template <>
struct Widen<__nv_bfloat16> {
  // bfloat16's 8-bit mantissa cannot hold 128 + 255, so through float: 2^23 + u, minus 2^23 + 128,
  // then the high halves (exact: |x| <= 128 has at most 8 significant bits).
  static __device__ __forceinline__ void Int8(uint32_t word, uint32_t* out) {
    const uint32_t u = word ^ 0x80808080u;
    float f[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      f[k] = __uint_as_float(__byte_perm(u, 0x4b000000u, 0x7540 + k)) - 8388736.f;
    }
    out[0] = __byte_perm(__float_as_uint(f[0]), __float_as_uint(f[1]), 0x7632);
    out[1] = __byte_perm(__float_as_uint(f[2]), __float_as_uint(f[3]), 0x7632);
  }
  // bfloat16 0x43uu is 128 + u for u < 128.
  static __device__ __forceinline__ uint32_t Int4Pair(uint32_t spread) {
    uint32_t h = (spread & 0x000f000fu) | 0x43004300u;
    const __nv_bfloat162 bias =
        __halves2bfloat162(__ushort_as_bfloat16(0x4308), __ushort_as_bfloat16(0x4308));
    const __nv_bfloat162 r = __hsub2(*reinterpret_cast<__nv_bfloat162*>(&h), bias);
    return *reinterpret_cast<const uint32_t*>(&r);
  }
};

// Widens one int8 or int4 row of the stage to T in place, back to front so no byte is overwritten
// before it is read. The scale is applied later, to the score (K) or the probability (V).
template <typename T, int kDim>
__device__ __forceinline__ void WidenRow(unsigned char* row, int code) {
  if (code == static_cast<int>(CacheCode::kInt8)) {
#pragma unroll
    for (int piece = kDim / 8 - 1; piece >= 0; --piece) {
      const uint2 raw = *reinterpret_cast<const uint2*>(row + 8 * piece);
      uint4 out;
      Widen<T>::Int8(raw.x, &out.x);
      Widen<T>::Int8(raw.y, &out.z);
      *reinterpret_cast<uint4*>(row + 16 * piece) = out;
    }
  } else if (code == static_cast<int>(CacheCode::kInt4)) {
#pragma unroll
    for (int piece = kDim / 8 - 1; piece >= 0; --piece) {
      // Element 2e in the low nibble of byte e; biased by 8 so each nibble is unsigned.
      const uint32_t u = *reinterpret_cast<const uint32_t*>(row + 4 * piece) ^ 0x88888888u;
      uint32_t o[4];
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        // Byte w times 0x1001: its low nibble at bit 0, its high nibble at bit 16.
        o[w] = Widen<T>::Int4Pair(__byte_perm(u, 0u, 0x4440 + w) * 0x1001u);
      }
      *reinterpret_cast<uint4*>(row + 16 * piece) = make_uint4(o[0], o[1], o[2], o[3]);
    }
  }
}

template <typename T, int kDim>
__global__ void __launch_bounds__(kThreads)
    DecodeKernel(const __grid_constant__ AttentionArgs a, const __grid_constant__ KvCacheArgs c,
                 const DecodePlan plan, SplitOut split_out) {
  using Tile = DecodeTile<T, kDim>;
  constexpr int kStages = Tile::kStages;
  extern __shared__ float4 shared4[];
  unsigned char* smem = reinterpret_cast<unsigned char*>(shared4);
  unsigned char* q_s = smem + Tile::kQOff;
  int64_t* loc_row = reinterpret_cast<int64_t*>(smem + Tile::kLocRowOff);  // [2][kDecodeChunk]
  int* loc_code = reinterpret_cast<int*>(smem + Tile::kLocCodeOff);        // [2][kDecodeChunk]
  __shared__ int row_h[kDecodeRowTile];
  __shared__ int row_i[kDecodeRowTile];
  __shared__ int64_t seg_end_s[kMaxSharedSegments];
  __shared__ int seg_code_s[kMaxSharedSegments];

  // blockIdx.x = (b * H_kv + g) * row_tiles + tile: the row tiles of one KV head run side by
  // side, so all but the first read its cache from L2.
  const int tile = static_cast<int>(blockIdx.x % plan.row_tiles);
  const int b = static_cast<int>(blockIdx.x / plan.row_tiles / a.heads_kv);
  const int g = static_cast<int>(blockIdx.x / plan.row_tiles % a.heads_kv);
  const int split = static_cast<int>(blockIdx.y);
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;

  // The tile's rows: row r of KV head g is query i = r % S_q of the (r / S_q)-th output head
  // reading g, in increasing head order; -1 past the last.
  if (threadIdx.x < kDecodeRowTile) {
    const int64_t r = static_cast<int64_t>(tile) * kDecodeRowTile + threadIdx.x;
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
  }
  if (threadIdx.x < kMaxSharedSegments && threadIdx.x < c.num_segments) {
    seg_end_s[threadIdx.x] = c.segment_ends[threadIdx.x];
    seg_code_s[threadIdx.x] = static_cast<int>(c.segment_codes[threadIdx.x]);
  }
  __syncthreads();
  if (row_h[0] < 0) return;  // block-uniform: this KV head has fewer rows than the grid's tiles

  // Q in T after RoPE, zeros in the rows past the last (their scores are never kept).
  const T* q = static_cast<const T*>(a.q);
  for (int e = threadIdx.x; e < kDecodeRowTile * kDim; e += kThreads) {
    const int rr = e / kDim;
    const int d = e % kDim;
    float x = 0.f;
    if (row_h[rr] >= 0) {
      const int i = row_i[rr];
      x = RopedElement(a, q + RowOffset(b, a.seq_q, i, a.heads_q, a.head_map[2 * row_h[rr]], kDim),
                       i + a.offset, d);
    }
    reinterpret_cast<T*>(q_s + rr * Tile::kRowBytes)[d] = FromFloat<T>(x);
  }

  const int64_t j_begin = plan.key_begin + split * plan.split_tokens;
  const int64_t j_end = min(plan.key_end, j_begin + plan.split_tokens);
  const int chunks =
      static_cast<int>((max(j_end - j_begin, int64_t{0}) + kDecodeChunk - 1) / kDecodeChunk);

  // Where the chunk's tokens are: thread t < kDecodeChunk locates token t. The page-table load is
  // issued a chunk before its value is stored (load_page, then store_loc an iteration later), so
  // no thread waits on it.
  // 32-bit token arithmetic (S_kv < 2^31 by the allow-list): a 64-bit division is a long
  // dependent chain on the warps that locate.
  const int32_t* pages = c.page_table + static_cast<int64_t>(b) * c.pages_per_sequence;
  const uint32_t page_size = static_cast<uint32_t>(c.page_size);
  auto token_of = [&](int chunk) { return j_begin + int64_t{chunk} * kDecodeChunk + threadIdx.x; };
  auto load_page = [&](int chunk) -> int64_t {
    const int64_t j = token_of(chunk);
    return j < j_end ? __ldg(pages + static_cast<uint32_t>(j) / page_size) : 0;
  };
  auto store_loc = [&](int chunk, int64_t page) {
    const int64_t j = token_of(chunk);
    const int slot = chunk % 2;
    const bool real = j < j_end;
    loc_row[slot * kDecodeChunk + threadIdx.x] =
        real ? (page * page_size + static_cast<uint32_t>(j) % page_size) * c.heads_kv + g : 0;
    loc_code[slot * kDecodeChunk + threadIdx.x] =
        real ? SegmentCode(c, seg_end_s, seg_code_s, j) : -1;
  };
  auto issue = [&](int chunk) {
    if (chunk < chunks) {
      IssueChunk<T, kDim>(c, smem + (chunk % kStages) * Tile::kStageBytes,
                          loc_row + (chunk % 2) * kDecodeChunk,
                          loc_code + (chunk % 2) * kDecodeChunk);
    }
    CpAsyncCommit();  // an empty group past the last chunk keeps the wait count uniform
  };
  const bool locator = threadIdx.x < kDecodeChunk;
#pragma unroll 1
  for (int chunk = 0; chunk < kStages - 1; ++chunk) {
    if (locator) store_loc(chunk, load_page(chunk));
    __syncthreads();
    issue(chunk);
    __syncthreads();
  }
  int64_t next_page = 0;
  if (locator) {
    store_loc(kStages - 1, load_page(kStages - 1));
    next_page = load_page(kStages);
  }

  // The warp's fragment rows: row lane / 4 + 8 r of the tile.
  int hr[2];
  int64_t ir[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    hr[r] = row_h[lane / 4 + 8 * r];
    ir[r] = row_i[lane / 4 + 8 * r];
  }
  const uint32_t q_addr = SmemAddr(q_s) + (lane % 16) * Tile::kRowBytes + (lane / 16) * 16;
  // ldmatrix rows of this lane in the warp's 16 keys: K as B (non-transposed) and V (transposed).
  const int k_lane = ((lane % 8) + 8 * (lane / 16)) * Tile::kRowBytes + ((lane / 8) % 2) * 16;
  const int v_lane = ((lane % 8) + 8 * ((lane / 8) % 2)) * Tile::kRowBytes + (lane / 16) * 16;

  float o_acc[kDim / 8][4];
#pragma unroll
  for (int n = 0; n < kDim / 8; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) o_acc[n][e] = 0.f;
  }
  SoftmaxRows rows;

#pragma unroll 1
  for (int chunk = 0; chunk < chunks; ++chunk) {
    CpAsyncWait<kStages - 2>();
    __syncthreads();  // the chunk's bytes are visible; the stage of chunk - 1 is free again
    issue(chunk + kStages - 1);
    if (locator) {
      store_loc(chunk + kStages, next_page);
      next_page = load_page(chunk + kStages + 1);
    }

    unsigned char* stage = smem + (chunk % kStages) * Tile::kStageBytes;
    const int64_t j0 = j_begin + int64_t{chunk} * kDecodeChunk + warp * kWarpKeys;
    if (j0 >= j_end) continue;  // warp-uniform: none of this warp's keys is in the split
    const int* code_s = reinterpret_cast<const int*>(stage + Tile::kCodeOff) + warp * kWarpKeys;
    {
      // Lanes 0-15 widen the warp's K rows, 16-31 its V rows (native rows are already T).
      const int t = lane % kWarpKeys;
      unsigned char* row = stage + (lane < kWarpKeys ? Tile::kKOff : Tile::kVOff) +
                           (warp * kWarpKeys + t) * Tile::kRowBytes;
      WidenRow<T, kDim>(row, code_s[t]);
      __syncwarp();
    }

    // S = Q K^T over the warp's 16 keys: two n-tiles of 8.
    float s[2][4] = {};
    const uint32_t k_addr =
        SmemAddr(stage + Tile::kKOff + warp * kWarpKeys * Tile::kRowBytes) + k_lane;
#pragma unroll
    for (int kk = 0; kk < kDim / 16; ++kk) {
      uint32_t qa[4];
      uint32_t b0, b1, b2, b3;
      Ldmatrix4(q_addr + kk * 32, qa[0], qa[1], qa[2], qa[3]);
      Ldmatrix4(k_addr + kk * 32, b0, b1, b2, b3);
      Mma16816<T>(s[0], qa, b0, b1);
      Mma16816<T>(s[1], qa, b2, b3);
    }

    // Element (n, 2 r + e): row lane / 4 + 8 r, key j0 + 8 n + 2 (lane % 4) + e. The K scale,
    // then the mask and the modifiers per pair, exactly as the reference kernel applies them.
    const float* k_scale =
        reinterpret_cast<const float*>(stage + Tile::kKScaleOff) + warp * kWarpKeys;
    const float* v_scale =
        reinterpret_cast<const float*>(stage + Tile::kVScaleOff) + warp * kWarpKeys;
    float vs[2][2];
#pragma unroll
    for (int n = 0; n < 2; ++n) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int t = 8 * n + 2 * (lane % 4) + e;
        const int64_t j = j0 + t;
        const float ks = k_scale[t];
        vs[n][e] = v_scale[t];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          float& x = s[n][2 * r + e];
          x = hr[r] >= 0 && j < j_end && MaskKeeps(a, b, hr[r], ir[r], j)
                  ? ModifyScore(a, hr[r], ir[r], j, a.scale * (x * ks))
                  : kNegInf;
        }
      }
    }

    // The online softmax; P carries the V scale into the mma (the row sums do not).
    uint32_t pk[2][2];
    float alpha[2];
    SoftmaxStep<2>(s, rows, kLog2e, alpha, [&](int n, int r, float p0, float p1) {
      pk[n][r] = Pack2<T>(p0 * vs[n][0], p1 * vs[n][1]);
    });
    // Once the row maxima settle (a few chunks into a long split) every alpha is 1: the warp
    // then skips the D / 2 multiplications, a fifth of its work per chunk at D 128.
    if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
      for (int n = 0; n < kDim / 8; ++n) {
        o_acc[n][0] *= alpha[0];
        o_acc[n][1] *= alpha[0];
        o_acc[n][2] *= alpha[1];
        o_acc[n][3] *= alpha[1];
      }
    }

    // O += P V.
    const uint32_t pa[4] = {pk[0][0], pk[0][1], pk[1][0], pk[1][1]};
    const uint32_t v_addr =
        SmemAddr(stage + Tile::kVOff + warp * kWarpKeys * Tile::kRowBytes) + v_lane;
#pragma unroll
    for (int np = 0; np < kDim / 16; ++np) {
      uint32_t b0, b1, b2, b3;
      Ldmatrix4Trans(v_addr + np * 32, b0, b1, b2, b3);
      Mma16816<T>(o_acc[2 * np], pa, b0, b1);
      Mma16816<T>(o_acc[2 * np + 1], pa, b2, b3);
    }
  }

  // The block's merge: each warp saw every kWarps-th run of 16 keys; its rows' maxima, sums and
  // unnormalized outputs go to the (now idle) stages and combine as the splits do.
  CpAsyncWait<0>();
  __syncthreads();
  float* m_o = reinterpret_cast<float*>(smem);          // [kWarps][16][kDim]
  float* m_max = m_o + kWarps * kDecodeRowTile * kDim;  // [kWarps][16]
  float* m_sum = m_max + kWarps * kDecodeRowTile;       // [kWarps][16]
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int rr = lane / 4 + 8 * r;
    const float l = QuadSum(rows.sum[r]);
    if (lane % 4 == 0) {
      m_max[warp * kDecodeRowTile + rr] = rows.max[r];
      m_sum[warp * kDecodeRowTile + rr] = l;
    }
#pragma unroll
    for (int n = 0; n < kDim / 8; ++n) {
      *reinterpret_cast<float2*>(m_o + (warp * kDecodeRowTile + rr) * kDim + 8 * n +
                                 2 * (lane % 4)) =
          make_float2(o_acc[n][2 * r], o_acc[n][2 * r + 1]);
    }
  }
  __syncthreads();

  // A row whose every key (of this split) is hidden has l = 0 and outputs zeros (§1).
  const int64_t rows_total = static_cast<int64_t>(a.batch) * a.heads_out * a.seq_q;
  for (int gi = threadIdx.x; gi < kDecodeRowTile * (kDim / 4); gi += kThreads) {
    const int rr = gi / (kDim / 4);
    const int col4 = gi % (kDim / 4);
    const int h = row_h[rr];
    if (h < 0) continue;
    const int i = row_i[rr];
    float mx = kNegInf;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, m_max[w * kDecodeRowTile + rr]);
    float l = 0.f;
    float4 x = make_float4(0.f, 0.f, 0.f, 0.f);
    if (mx != kNegInf) {
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        const float f = exp2f((m_max[w * kDecodeRowTile + rr] - mx) * kLog2e);  // -inf: 0
        l = fmaf(f, m_sum[w * kDecodeRowTile + rr], l);
        const float4 y =
            reinterpret_cast<const float4*>(m_o + (w * kDecodeRowTile + rr) * kDim)[col4];
        x.x = fmaf(f, y.x, x.x);
        x.y = fmaf(f, y.y, x.y);
        x.z = fmaf(f, y.z, x.z);
        x.w = fmaf(f, y.w, x.w);
      }
    }
    const float inv = l > 0.f ? 1.f / l : 0.f;
    x = make_float4(x.x * inv, x.y * inv, x.z * inv, x.w * inv);
    if (split_out.out == nullptr) {
      T* out = static_cast<T*>(a.o) + RowOffset(b, a.seq_q, i, a.heads_out, h, kDim) + 4 * col4;
      out[0] = FromFloat<T>(x.x);
      out[1] = FromFloat<T>(x.y);
      out[2] = FromFloat<T>(x.z);
      out[3] = FromFloat<T>(x.w);
    } else {
      const int64_t row =
          split * rows_total + (static_cast<int64_t>(b) * a.heads_out + h) * a.seq_q + i;
      reinterpret_cast<float4*>(split_out.out + row * kDim)[col4] = x;
      if (col4 == 0) split_out.lse[row] = l > 0.f ? mx + logf(l) : kNegInf;
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
    const cudaError_t e =
        cudaFuncSetAttribute(DecodeKernel<T, kDim>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(Tile::kSharedBytes));
    if (e != cudaSuccess) return e;
  }
  const dim3 grid(
      static_cast<unsigned>(static_cast<int64_t>(a.batch) * a.heads_kv * plan.row_tiles),
      static_cast<unsigned>(plan.splits));
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

// The kernel's shared memory is past the default 48 KB at most head dims: the opt-in first, then
// the occupancy the device reports for it.
template <typename T, int kDim>
int BlocksPerSmFor() {
  using Tile = DecodeTile<T, kDim>;
  int blocks = 0;
  if (Tile::kSharedBytes > kDefaultSharedBytes &&
      cudaFuncSetAttribute(DecodeKernel<T, kDim>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(Tile::kSharedBytes)) != cudaSuccess) {
    return 0;
  }
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, DecodeKernel<T, kDim>, kThreads,
                                                    Tile::kSharedBytes) != cudaSuccess) {
    return 0;
  }
  return blocks;
}

template <typename T>
int BlocksPerSmForDim(int dim) {
  switch (dim) {
    case 32:
      return BlocksPerSmFor<T, 32>();
    case 64:
      return BlocksPerSmFor<T, 64>();
    case 128:
      return BlocksPerSmFor<T, 128>();
    case 256:
      return BlocksPerSmFor<T, 256>();
  }
  return 0;
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
    l->requirements = {"S_q from 1 to " + std::to_string(kDecodeMaxSeqQ), "S_kv below 2^31",
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
