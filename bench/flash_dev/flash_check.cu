// Standalone correctness and timing driver for cuda_flash (kernels/cuda/flash: the Hopper wgmma
// kernel and the mma.sync kernel). No Abseil or gRPC: bench/flash_dev/run.sh builds it with the
// flash family's own sources (flash.cu, support.cc, launch_sm80.cu, launch_sm90.cu,
// sm90_tile*.cu) for sm_90a.
// Correctness: random normal inputs from a host RNG, output poisoned with NaN, compared with a
// float64 CPU reference of docs/variants.md on small odd shapes covering head maps, masks, RoPE,
// ALiBi, softcap and padded head dims. Timing: CUDA events around single launches, L2 flushed
// (2 x L2 memset) between iterations outside the timed region, median of 30. Writes the timing
// rows to the file named by argv[1] (for bench/flash_dev/torch_flash.py's side-by-side table).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/flash/flash.h"
#include "kernels/cuda/flash/item_order.h"
#include "kernels/cuda/flash/kernel_sm80.cuh"
#include "kernels/cuda/flash/launch_sm90.cuh"
#include "kernels/cuda/flash/launchers.h"

using attnbench::cuda::AttentionArgs;
using attnbench::cuda::MaskCode;
using attnbench::cuda::Storage;

#define CHECK(x)                                                                              \
  do {                                                                                        \
    cudaError_t e_ = (x);                                                                     \
    if (e_ != cudaSuccess) {                                                                  \
      std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
      std::exit(1);                                                                           \
    }                                                                                         \
  } while (0)

namespace {

struct Rng {
  uint64_t s;
  uint64_t Next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double Uniform() { return ((Next() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
  double Normal() {
    return std::sqrt(-2.0 * std::log(Uniform())) * std::cos(6.283185307179586 * Uniform());
  }
};

uint16_t ToBits(float x, Storage st) {
  uint16_t r;
  if (st == Storage::kBFloat16) {
    __nv_bfloat16 v = __float2bfloat16_rn(x);
    std::memcpy(&r, &v, 2);
  } else {
    __half v = __float2half_rn(x);
    std::memcpy(&r, &v, 2);
  }
  return r;
}
float FromBits(uint16_t b, Storage st) {
  if (st == Storage::kBFloat16) {
    __nv_bfloat16 v;
    std::memcpy(&v, &b, 2);
    return __bfloat162float(v);
  }
  __half v;
  std::memcpy(&v, &b, 2);
  return __half2float(v);
}

enum class Map { kMha, kGqa, kMqa, kGqkva, kExplicit };

struct Case {
  std::string name;
  int batch = 1;
  int sq = 77, skv = 131;
  int hq = 4, hkv = 4, hout = 4;
  int dqk = 64, dv = 64;
  Map map = Map::kMha;
  MaskCode mask = MaskCode::kNone;
  int wl = -1, wr = -1;
  bool block_per_head = false, block_causal = false;
  int rope_dims = 0;
  bool alibi = false;
  float softcap = 0;
};

struct CaseResult {
  double rel = 0, max_abs = 0;
  long nan = 0, guard_bad = 0;
  long zero_rows = 0;
  bool hopper = false;  // ran the wgmma/TMA kernel (on an H100)
};

using LaunchFn = cudaError_t (*)(const AttentionArgs&, cudaStream_t);

// The Hopper kernel with the softcap's tanh evaluated the other way than the shipped one
// (kSm90PackedTanh): D = 64 and 128 rows, no RoPE, interval masks; cudaErrorNotSupported
// otherwise. Same grid rule as the shipped route.
template <typename T, int kTile, int kMods>
cudaError_t LaunchOtherTanhAt(const AttentionArgs& a, cudaStream_t stream) {
  namespace flash = attnbench::cuda::flash;
  using Policy = flash::Sm90Policy<kMods, false, false, !flash::kSm90PackedTanh>;
  const bool persistent = a.mask == MaskCode::kNone && a.seq_kv <= 2048;
  return flash::sm90_detail::LaunchPolicy<T, kTile, Policy>(a, stream, persistent);
}
template <typename T, int kTile>
cudaError_t LaunchOtherTanhMods(const AttentionArgs& a, cudaStream_t stream) {
  namespace cu = attnbench::cuda;
  switch (cu::ScoreModsOf(a)) {
    case cu::kModsSoftcap:
      return LaunchOtherTanhAt<T, kTile, cu::kModsSoftcap>(a, stream);
    case cu::kModsSoftcap | cu::kModsAlibi:
      return LaunchOtherTanhAt<T, kTile, cu::kModsSoftcap | cu::kModsAlibi>(a, stream);
    default:
      return cudaErrorNotSupported;
  }
}
template <typename T>
cudaError_t LaunchOtherTanhT(const AttentionArgs& a, cudaStream_t stream) {
  namespace flash = attnbench::cuda::flash;
  constexpr int kD64 = flash::PickTile(flash::kSm90Tiles, 64, 64);
  constexpr int kD128 = flash::PickTile(flash::kSm90Tiles, 128, 128);
  const int tile = flash::PickTile(flash::kSm90Tiles, a.dim_qk, a.dim_v);
  if (tile == kD64) return LaunchOtherTanhMods<T, kD64>(a, stream);
  if (tile == kD128) return LaunchOtherTanhMods<T, kD128>(a, stream);
  return cudaErrorNotSupported;
}
// The Hopper kernel with the softmax's exp2 split otherwise than the table (Sm90PolyExp2Of4):
// g_poly of every 4 column groups on the FMA pipes. bf16, D = 16, 32, 64, 128 rows, no RoPE,
// interval masks, no modifier (g_poly 1 or 2) or softcap alone (2 or 3); cudaErrorNotSupported
// otherwise. Same grid rule as the shipped route.
int g_poly = 0;
template <int kTile, int kMods, int kPoly>
cudaError_t LaunchPolyAt(const AttentionArgs& a, cudaStream_t stream) {
  namespace flash = attnbench::cuda::flash;
  using Policy = flash::Sm90Policy<kMods, false, false, flash::kSm90PackedTanh,
                                   attnbench::cuda::NoExpressions, kPoly>;
  const bool persistent = a.mask == MaskCode::kNone && a.seq_kv <= 2048;
  return flash::sm90_detail::LaunchPolicy<__nv_bfloat16, kTile, Policy>(a, stream, persistent);
}
template <int kTile>
cudaError_t LaunchPolyTile(const AttentionArgs& a, cudaStream_t stream) {
  namespace cu = attnbench::cuda;
  const int mods = cu::ScoreModsOf(a);
  if (mods == cu::kModsNone && g_poly == 1) return LaunchPolyAt<kTile, cu::kModsNone, 1>(a, stream);
  if (mods == cu::kModsNone && g_poly == 2) return LaunchPolyAt<kTile, cu::kModsNone, 2>(a, stream);
  if (mods == cu::kModsSoftcap && g_poly == 2) {
    return LaunchPolyAt<kTile, cu::kModsSoftcap, 2>(a, stream);
  }
  if (mods == cu::kModsSoftcap && g_poly == 3) {
    return LaunchPolyAt<kTile, cu::kModsSoftcap, 3>(a, stream);
  }
  return cudaErrorNotSupported;
}
cudaError_t LaunchPoly(const AttentionArgs& a, cudaStream_t stream) {
  namespace flash = attnbench::cuda::flash;
  if ((a.modifiers & attnbench::cuda::kModifierRope) != 0 || flash::UsesTileLists(a.mask) ||
      a.storage != Storage::kBFloat16 ||
      flash::RouteOf(a, flash::CurrentDevice()) != flash::FlashRoute::kSm90) {
    return cudaErrorNotSupported;
  }
  constexpr int kTiles[4] = {
      flash::PickTile(flash::kSm90Tiles, 16, 16), flash::PickTile(flash::kSm90Tiles, 32, 32),
      flash::PickTile(flash::kSm90Tiles, 64, 64), flash::PickTile(flash::kSm90Tiles, 128, 128)};
  const int tile = flash::PickTile(flash::kSm90Tiles, a.dim_qk, a.dim_v);
  if (tile == kTiles[0]) return LaunchPolyTile<kTiles[0]>(a, stream);
  if (tile == kTiles[1]) return LaunchPolyTile<kTiles[1]>(a, stream);
  if (tile == kTiles[2]) return LaunchPolyTile<kTiles[2]>(a, stream);
  if (tile == kTiles[3]) return LaunchPolyTile<kTiles[3]>(a, stream);
  return cudaErrorNotSupported;
}

cudaError_t LaunchOtherTanh(const AttentionArgs& a, cudaStream_t stream) {
  namespace flash = attnbench::cuda::flash;
  if ((a.modifiers & attnbench::cuda::kModifierRope) != 0 || flash::UsesTileLists(a.mask) ||
      flash::RouteOf(a, flash::CurrentDevice()) != flash::FlashRoute::kSm90) {
    return cudaErrorNotSupported;
  }
  return a.storage == Storage::kBFloat16 ? LaunchOtherTanhT<__nv_bfloat16>(a, stream)
                                         : LaunchOtherTanhT<__half>(a, stream);
}

// launch: the shipped route (flash::Launch) unless another launcher is given; a launcher that
// returns cudaErrorNotSupported leaves the result marked unsupported (nan = -1).
CaseResult RunCase(const Case& c, Storage st, uint64_t seed, LaunchFn launch = nullptr) {
  Rng rng{seed};
  const int64_t nq = (int64_t)c.batch * c.sq * c.hq * c.dqk;
  const int64_t nk = (int64_t)c.batch * c.skv * c.hkv * c.dqk;
  const int64_t nv = (int64_t)c.batch * c.skv * c.hkv * c.dv;
  const int64_t no = (int64_t)c.batch * c.sq * c.hout * c.dv;
  std::vector<uint16_t> hq(nq), hk(nk), hv(nv);
  std::vector<double> q(nq), k(nk), v(nv);
  auto fill = [&](std::vector<uint16_t>& bits, std::vector<double>& val) {
    for (size_t i = 0; i < bits.size(); ++i) {
      bits[i] = ToBits((float)rng.Normal(), st);
      val[i] = FromBits(bits[i], st);
    }
  };
  fill(hq, q);
  fill(hk, k);
  fill(hv, v);

  // Head map.
  std::vector<int32_t> map(2 * c.hout);
  for (int h = 0; h < c.hout; ++h) {
    int qh = h, kh = h;
    switch (c.map) {
      case Map::kMha:
        break;
      case Map::kGqa:
        kh = h / (c.hq / c.hkv);
        break;
      case Map::kMqa:
        kh = 0;
        break;
      case Map::kGqkva:
        qh = h / c.hkv;
        kh = h % c.hkv;
        break;
      case Map::kExplicit:
        qh = (int)(rng.Next() % c.hq);
        kh = (int)(rng.Next() % c.hkv);
        break;
    }
    map[2 * h] = qh;
    map[2 * h + 1] = kh;
  }

  AttentionArgs a;
  a.storage = st;
  a.batch = c.batch;
  a.seq_q = c.sq;
  a.seq_kv = c.skv;
  a.heads_q = c.hq;
  a.heads_kv = c.hkv;
  a.heads_out = c.hout;
  a.dim_qk = c.dqk;
  a.dim_v = c.dv;
  a.scale = (float)(1.0 / std::sqrt((double)c.dqk));
  a.mask = c.mask;
  a.offset = c.skv - c.sq;
  a.window_left = c.wl;
  a.window_right = c.wr;
  a.softcap = c.softcap;
  if (c.rope_dims > 0) a.modifiers |= attnbench::cuda::kModifierRope;
  if (c.alibi) a.modifiers |= attnbench::cuda::kModifierAlibi;
  if (c.softcap > 0) a.modifiers |= attnbench::cuda::kModifierSoftcap;

  // Block bitmap: 16 x 32 blocks, random, with one block row cleared (its rows output zeros).
  std::vector<uint8_t> bitmap;
  if (c.mask == MaskCode::kBlock) {
    a.block_q = 16;
    a.block_k = 32;
    a.block_rows = (c.sq + 15) / 16;
    a.block_cols = (c.skv + 31) / 32;
    a.block_per_head = c.block_per_head;
    a.block_causal = c.block_causal;
    const int maps = c.block_per_head ? c.batch * c.hout : 1;
    bitmap.resize((size_t)maps * a.block_rows * a.block_cols);
    for (auto& x : bitmap) x = rng.Uniform() < 0.5 ? 1 : 0;
    for (int m = 0; m < maps; ++m) {
      for (int cc = 0; cc < a.block_cols; ++cc) {
        bitmap[((size_t)m * a.block_rows + 1) * a.block_cols + cc] = 0;
      }
    }
  }
  // RoPE table in double, stored float.
  std::vector<float> rope;
  if (c.rope_dims > 0) {
    const int half = c.rope_dims / 2;
    rope.resize((size_t)2 * c.skv * half);
    for (int p = 0; p < c.skv; ++p) {
      for (int m = 0; m < half; ++m) {
        const double inv = std::pow(10000.0, -2.0 * m / c.rope_dims);
        rope[2 * ((size_t)p * half + m)] = (float)std::cos(p * inv);
        rope[2 * ((size_t)p * half + m) + 1] = (float)std::sin(p * inv);
      }
    }
    a.rope_dims = c.rope_dims;
  }
  std::vector<float> slopes;
  if (c.alibi) {
    for (int h = 0; h < c.hout; ++h)
      slopes.push_back((float)std::pow(2.0, -8.0 * (h + 1) / c.hout));
  }

  // Device buffers. O gets a poisoned guard tail that must stay untouched.
  const int64_t kGuard = 4096;
  void *dq, *dk, *dv, *dout;
  int32_t* dmap;
  CHECK(cudaMalloc(&dq, nq * 2));
  CHECK(cudaMalloc(&dk, nk * 2));
  CHECK(cudaMalloc(&dv, nv * 2));
  CHECK(cudaMalloc(&dout, (no + kGuard) * 2));
  CHECK(cudaMalloc(&dmap, map.size() * 4));
  CHECK(cudaMemcpy(dq, hq.data(), nq * 2, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dk, hk.data(), nk * 2, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dv, hv.data(), nv * 2, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dmap, map.data(), map.size() * 4, cudaMemcpyHostToDevice));
  CHECK(cudaMemset(dout, 0xff, (no + kGuard) * 2));  // 0xffff: NaN in fp16 and bf16
  uint8_t* dbits = nullptr;
  float *drope = nullptr, *dslopes = nullptr;
  if (!bitmap.empty()) {
    CHECK(cudaMalloc(&dbits, bitmap.size()));
    CHECK(cudaMemcpy(dbits, bitmap.data(), bitmap.size(), cudaMemcpyHostToDevice));
    a.block_bitmap = dbits;
  }
  if (!rope.empty()) {
    CHECK(cudaMalloc(&drope, rope.size() * 4));
    CHECK(cudaMemcpy(drope, rope.data(), rope.size() * 4, cudaMemcpyHostToDevice));
    a.rope_cos_sin = drope;
  }
  if (!slopes.empty()) {
    CHECK(cudaMalloc(&dslopes, slopes.size() * 4));
    CHECK(cudaMemcpy(dslopes, slopes.data(), slopes.size() * 4, cudaMemcpyHostToDevice));
    a.alibi_slopes = dslopes;
  }
  a.q = dq;
  a.k = dk;
  a.v = dv;
  a.o = dout;
  a.head_map = dmap;

  CaseResult res;
  namespace flash = attnbench::cuda::flash;
  const flash::FlashDevice device = flash::CurrentDevice();
  const std::string why = flash::FlashRefusal(a, device);
  if (!why.empty()) {
    std::printf("  UNSUPPORTED: %s\n", why.c_str());
    res.nan = -1;
    return res;
  }
  // Block masks on the Hopper kernel walk lists of kept K/V tiles: built here from the bitmap by
  // brute force over every pair (the server builds them from the spec's mask instead).
  int32_t* dtiles = nullptr;
  int64_t* doffsets = nullptr;
  int32_t* dorder = nullptr;
  const flash::ListTiles lt = flash::BlockListTiles(a, device);
  if (lt.query > 0) {
    const int maps = c.block_per_head ? c.batch * c.hout : 1;
    const int64_t qt = (c.sq + lt.query - 1) / lt.query, kt = (c.skv + lt.kv - 1) / lt.kv;
    std::vector<int32_t> tiles;
    std::vector<int64_t> offsets{0};
    for (int m = 0; m < maps; ++m) {
      const size_t base = c.block_per_head ? (size_t)m * a.block_rows * a.block_cols : 0;
      for (int64_t r = 0; r < qt; ++r) {
        for (int64_t t = 0; t < kt; ++t) {
          long kept = 0, all = 0;
          for (int64_t i = r * lt.query; i < std::min<int64_t>(c.sq, (r + 1) * lt.query); ++i) {
            for (int64_t j = t * lt.kv; j < std::min<int64_t>(c.skv, (t + 1) * lt.kv); ++j) {
              const bool keep = (!c.block_causal || j <= i + a.offset) &&
                                bitmap[base + (i / 16) * a.block_cols + j / 32] != 0;
              kept += keep;
              ++all;
            }
          }
          if (kept > 0) {
            tiles.push_back((int32_t)t | (kept < all ? attnbench::cuda::kTilePartial : 0));
          }
        }
        offsets.push_back((int64_t)tiles.size());
      }
    }
    CHECK(cudaMalloc(&dtiles, std::max<size_t>(4, tiles.size() * 4)));
    CHECK(cudaMalloc(&doffsets, offsets.size() * 8));
    CHECK(cudaMemcpy(dtiles, tiles.data(), tiles.size() * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(doffsets, offsets.data(), offsets.size() * 8, cudaMemcpyHostToDevice));
    a.block_tiles = dtiles;
    a.block_tile_offsets = doffsets;
    a.block_tile_q = lt.query;
    a.block_tile_kv = lt.kv;
    // The balanced order the backend builds beside the lists (flash::ItemOrderFor).
    int sms = 0;
    CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
    const std::vector<int32_t> order = flash::ItemOrderFor(a, offsets, sms);
    if (!order.empty()) {
      CHECK(cudaMalloc(&dorder, order.size() * 4));
      CHECK(cudaMemcpy(dorder, order.data(), order.size() * 4, cudaMemcpyHostToDevice));
      a.item_order = dorder;
      a.item_order_blocks = (int)std::min<size_t>(order.size(), sms);
    }
  }
  res.hopper = flash::RouteOf(a, device) == flash::FlashRoute::kSm90;
  void* dworkspace = nullptr;
  if (const size_t bytes = flash::WorkspaceBytes(a, device); bytes > 0) {
    CHECK(cudaMalloc(&dworkspace, bytes));
    CHECK(cudaMemset(dworkspace, 0xff, bytes));  // NaN-like garbage: the pre-pass must write it all
    a.workspace = dworkspace;
  }
  bool declined = false;  // the launcher does not run this case: marked unsupported (nan = -1)
  if (launch != nullptr) {
    const cudaError_t e = launch(a, 0);
    if (e == cudaErrorNotSupported) {
      (void)cudaGetLastError();
      declined = true;
    } else {
      CHECK(e);
    }
  } else {
    CHECK(flash::Launch(a, 0));
  }
  CHECK(cudaDeviceSynchronize());
  std::vector<uint16_t> ho(no + kGuard);
  CHECK(cudaMemcpy(ho.data(), dout, (no + kGuard) * 2, cudaMemcpyDeviceToHost));
  for (int64_t i = no; i < no + kGuard; ++i) res.guard_bad += ho[i] != 0xffff;

  // float64 reference.
  auto keeps = [&](int b, int h, int64_t i, int64_t j) {
    const int64_t ip = i + a.offset;
    switch (c.mask) {
      case MaskCode::kNone:
        return true;
      case MaskCode::kCausal:
        return j <= ip;
      case MaskCode::kWindow:
        return (c.wl < 0 || j >= ip - c.wl) && (c.wr < 0 || j <= ip + c.wr);
      case MaskCode::kBlock: {
        if (c.block_causal && j > ip) return false;
        size_t base = c.block_per_head ? ((size_t)b * c.hout + h) * a.block_rows * a.block_cols : 0;
        return bitmap[base + (i / 16) * a.block_cols + j / 32] != 0;
      }
    }
    return true;
  };
  auto roped = [&](const std::vector<double>& x, int64_t row_off, int64_t pos, int d) {
    if (c.rope_dims == 0 || d >= c.rope_dims) return x[row_off + d];
    const int half = c.rope_dims / 2;
    const int m = d < half ? d : d - half;
    const double cs = rope[2 * ((size_t)pos * half + m)],
                 sn = rope[2 * ((size_t)pos * half + m) + 1];
    if (d < half) return x[row_off + d] * cs - x[row_off + d + half] * sn;
    return x[row_off + d] * cs + x[row_off + d - half] * sn;
  };
  double num = 0, den = 0;
  std::vector<double> qr(c.dqk), s(c.skv), kr((size_t)c.skv * c.dqk);
  for (int b = 0; b < c.batch; ++b) {
    for (int h = 0; h < c.hout; ++h) {
      const int qh = map[2 * h], kh = map[2 * h + 1];
      for (int j = 0; j < c.skv; ++j) {
        const int64_t ko = (((int64_t)b * c.skv + j) * c.hkv + kh) * c.dqk;
        for (int d = 0; d < c.dqk; ++d) kr[(size_t)j * c.dqk + d] = roped(k, ko, j, d);
      }
      for (int i = 0; i < c.sq; ++i) {
        const int64_t qo = (((int64_t)b * c.sq + i) * c.hq + qh) * c.dqk;
        const int64_t ip = i + a.offset;
        for (int d = 0; d < c.dqk; ++d) qr[d] = roped(q, qo, ip, d);
        double mx = -INFINITY;
        for (int j = 0; j < c.skv; ++j) {
          double dot = 0;
          for (int d = 0; d < c.dqk; ++d) dot += qr[d] * kr[(size_t)j * c.dqk + d];
          double sc = dot * (double)a.scale;
          if (c.alibi) sc += (double)slopes[h] * (double)(j - ip);
          if (c.softcap > 0) sc = c.softcap * std::tanh(sc / c.softcap);
          if (!keeps(b, h, i, j)) sc = -INFINITY;
          s[j] = sc;
          mx = std::max(mx, sc);
        }
        double l = 0;
        for (int j = 0; j < c.skv; ++j) {
          s[j] = mx == -INFINITY ? 0.0 : std::exp(s[j] - mx);
          l += s[j];
        }
        if (l == 0) ++res.zero_rows;
        const int64_t oo = (((int64_t)b * c.sq + i) * c.hout + h) * c.dv;
        for (int d = 0; d < c.dv; ++d) {
          double acc = 0;
          if (l > 0) {
            for (int j = 0; j < c.skv; ++j) {
              acc += s[j] * v[(((int64_t)b * c.skv + j) * c.hkv + kh) * c.dv + d];
            }
            acc /= l;
          }
          const float got = FromBits(ho[oo + d], st);
          if (std::isnan(got)) {
            ++res.nan;
            continue;
          }
          num += (got - acc) * (got - acc);
          den += acc * acc;
          res.max_abs = std::max(res.max_abs, std::fabs(got - acc));
        }
      }
    }
  }
  res.rel = std::sqrt(num / std::max(den, 1e-300));
  cudaFree(dq);
  cudaFree(dk);
  cudaFree(dv);
  cudaFree(dout);
  cudaFree(dmap);
  if (dbits) cudaFree(dbits);
  if (drope) cudaFree(drope);
  if (dslopes) cudaFree(dslopes);
  if (dtiles) cudaFree(dtiles);
  if (doffsets) cudaFree(doffsets);
  if (dworkspace) cudaFree(dworkspace);
  if (dorder) cudaFree(dorder);
  if (declined) res.nan = -1;
  return res;
}

std::vector<Case> Cases() {
  std::vector<Case> cs;
  auto add = [&](Case c) { cs.push_back(c); };
  Case c;
  c.name = "mha d64 none 77x131";
  add(c);
  c.name = "mha d64 causal 77x131 (bottom-right)";
  c.mask = MaskCode::kCausal;
  add(c);
  c = Case();
  c.name = "gqa 6/2 d128 causal 200x200 b2";
  c.batch = 2;
  c.sq = c.skv = 200;
  c.hq = c.hout = 6;
  c.hkv = 2;
  c.map = Map::kGqa;
  c.dqk = c.dv = 128;
  c.mask = MaskCode::kCausal;
  add(c);
  c = Case();
  c.name = "mha d80(pad96) window(17,5) 77x131";
  c.dqk = c.dv = 80;
  c.mask = MaskCode::kWindow;
  c.wl = 17;
  c.wr = 5;
  add(c);
  c = Case();
  c.name = "gqkva 2x3 d192/128 none 77x131";
  c.hq = 2;
  c.hkv = 3;
  c.hout = 6;
  c.map = Map::kGqkva;
  c.dqk = 192;
  c.dv = 128;
  add(c);
  c = Case();
  c.name = "explicit 3q/2kv->5 d64 block+causal 77x131";
  c.hq = 3;
  c.hkv = 2;
  c.hout = 5;
  c.map = Map::kExplicit;
  c.mask = MaskCode::kBlock;
  c.block_causal = true;
  add(c);
  c = Case();
  c.name = "mqa 4/1 d128 block per-head 300x300";
  c.sq = c.skv = 300;
  c.hkv = 1;
  c.map = Map::kMqa;
  c.dqk = c.dv = 128;
  c.mask = MaskCode::kBlock;
  c.block_per_head = true;
  add(c);
  c = Case();
  c.name = "rope 32/64 causal 150x150";
  c.sq = c.skv = 150;
  c.rope_dims = 32;
  c.mask = MaskCode::kCausal;
  add(c);
  c = Case();
  c.name = "rope 128 + alibi d128 causal 77x131";
  c.dqk = c.dv = 128;
  c.rope_dims = 128;
  c.alibi = true;
  c.mask = MaskCode::kCausal;
  add(c);
  c = Case();
  c.name = "alibi + softcap 5 d64 window(17,5) 77x131";
  c.alibi = true;
  c.softcap = 5.f;
  c.mask = MaskCode::kWindow;
  c.wl = 17;
  c.wr = 5;
  add(c);
  c = Case();
  c.name = "causal 131x77 (54 rows hidden)";
  c.sq = 131;
  c.skv = 77;
  c.mask = MaskCode::kCausal;
  add(c);
  c = Case();
  c.name = "window(17,5) 131x77 (rows hidden)";
  c.sq = 131;
  c.skv = 77;
  c.mask = MaskCode::kWindow;
  c.wl = 17;
  c.wr = 5;
  add(c);
  c = Case();
  c.name = "d100 h3 unaligned (pad128, plain loads)";
  c.hq = c.hkv = c.hout = 3;
  c.dqk = c.dv = 100;
  add(c);
  c = Case();
  c.name = "d40 (pad64) causal 77x131";
  c.dqk = c.dv = 40;
  c.mask = MaskCode::kCausal;
  add(c);
  c = Case();
  c.name = "d256 causal 200x333";
  c.sq = 200;
  c.skv = 333;
  c.hq = c.hkv = c.hout = 2;
  c.dqk = c.dv = 256;
  c.mask = MaskCode::kCausal;
  add(c);
  c = Case();
  c.name = "d192 none 77x131";
  c.hq = c.hkv = c.hout = 2;
  c.dqk = c.dv = 192;
  add(c);
  c = Case();
  c.name = "d64/d200(pad 192/256? ->256) none";
  c.hq = c.hkv = c.hout = 2;
  c.dqk = 64;
  c.dv = 200;
  add(c);
  c = Case();
  c.name = "mha d128 none 1000x1000";
  c.sq = c.skv = 1000;
  c.hq = c.hkv = c.hout = 2;
  c.dqk = c.dv = 128;
  add(c);
  c.name = "mha d128 causal 1000x1000";
  c.mask = MaskCode::kCausal;
  add(c);
  c = Case();
  c = Case();
  c.name = "causal d128 b3 h3 300x300";
  c.batch = 3;
  c.sq = c.skv = 300;
  c.hq = c.hkv = c.hout = 3;
  c.dqk = c.dv = 128;
  c.mask = MaskCode::kCausal;
  add(c);
  c = Case();
  c.name = "causal d64 b2 h5 300x333";
  c.batch = 2;
  c.sq = 300;
  c.skv = 333;
  c.hq = c.hkv = c.hout = 5;
  c.mask = MaskCode::kCausal;
  add(c);
  c = Case();
  c.name = "d96 window(-1,0) 1 row 1x300";
  c.sq = 1;
  c.skv = 300;
  c.dqk = c.dv = 96;
  c.mask = MaskCode::kWindow;
  c.wl = -1;
  c.wr = 0;
  add(c);
  // Shapes of the Hopper path (D = 64 / 128, interval masks): several K/V tiles, odd sizes,
  // every head map, S_q > S_kv, one-sided windows, tiny S_kv.
  c = Case();
  c.name = "hopper gqa 8/2 d128 none 1500x2100 b2";
  c.batch = 2;
  c.sq = 1500;
  c.skv = 2100;
  c.hq = c.hout = 8;
  c.hkv = 2;
  c.map = Map::kGqa;
  c.dqk = c.dv = 128;
  add(c);
  c = Case();
  c.name = "hopper mqa 4/1 d64 causal 1000x700";
  c.sq = 1000;
  c.skv = 700;
  c.hkv = 1;
  c.map = Map::kMqa;
  c.mask = MaskCode::kCausal;
  add(c);
  c = Case();
  c.name = "hopper explicit 3/2->5 d128 window(100,20)";
  c.sq = 700;
  c.skv = 900;
  c.hq = 3;
  c.hkv = 2;
  c.hout = 5;
  c.map = Map::kExplicit;
  c.dqk = c.dv = 128;
  c.mask = MaskCode::kWindow;
  c.wl = 100;
  c.wr = 20;
  add(c);
  c = Case();
  c.name = "hopper gqkva 2x3 d64 causal 500x500";
  c.sq = c.skv = 500;
  c.hq = 2;
  c.hkv = 3;
  c.hout = 6;
  c.map = Map::kGqkva;
  c.mask = MaskCode::kCausal;
  add(c);
  c = Case();
  c.name = "hopper d128 window(-1,37) 333x333";
  c.sq = c.skv = 333;
  c.dqk = c.dv = 128;
  c.mask = MaskCode::kWindow;
  c.wr = 37;
  add(c);
  c = Case();
  c.name = "hopper d64 window(50,-1) 333x333";
  c.sq = c.skv = 333;
  c.mask = MaskCode::kWindow;
  c.wl = 50;
  add(c);
  c = Case();
  c.name = "hopper d128 causal 1x1000";
  c.sq = 1;
  c.skv = 1000;
  c.dqk = c.dv = 128;
  c.mask = MaskCode::kCausal;
  add(c);
  c = Case();
  c.name = "hopper d64 none 300x5";
  c.sq = 300;
  c.skv = 5;
  add(c);
  c = Case();
  c.name = "hopper d128 causal 2048x2048 h2";
  c.sq = c.skv = 2048;
  c.hq = c.hkv = c.hout = 2;
  c.dqk = c.dv = 128;
  c.mask = MaskCode::kCausal;
  add(c);
  // The small head dims' rows (32- and 64-byte swizzled panels), several K/V tiles.
  c = Case();
  c.name = "hopper d16 causal 300x300";
  c.sq = c.skv = 300;
  c.dqk = c.dv = 16;
  c.mask = MaskCode::kCausal;
  add(c);
  c = Case();
  c.name = "hopper d32 softcap 10 257x400";
  c.sq = 257;
  c.skv = 400;
  c.dqk = c.dv = 32;
  c.softcap = 10.f;
  add(c);
  c = Case();
  c.name = "hopper d16 softcap 5 window(60,9) 200x333";
  c.sq = 200;
  c.skv = 333;
  c.dqk = c.dv = 16;
  c.softcap = 5.f;
  c.mask = MaskCode::kWindow;
  c.wl = 60;
  c.wr = 9;
  add(c);
  // Every Hopper tile row and policy: modifiers, RoPE in shared memory, block lists.
  c = Case();
  c.name = "hopper d128 softcap 30 300x500";
  c.sq = 300;
  c.skv = 500;
  c.dqk = c.dv = 128;
  c.softcap = 30.f;
  add(c);
  c = Case();
  c.name = "hopper d64 alibi+softcap 30 causal 257x257";
  c.sq = c.skv = 257;
  c.alibi = true;
  c.softcap = 30.f;
  c.mask = MaskCode::kCausal;
  add(c);
  c = Case();
  c.name = "hopper d96 rope+alibi+softcap causal 300x400";
  c.sq = 300;
  c.skv = 400;
  c.dqk = c.dv = 96;
  c.rope_dims = 96;
  c.alibi = true;
  c.softcap = 4.f;
  c.mask = MaskCode::kCausal;
  add(c);
  c = Case();
  c.name = "hopper d192/128 block per-head causal 400x400";
  c.sq = c.skv = 400;
  c.dqk = 192;
  c.dv = 128;
  c.mask = MaskCode::kBlock;
  c.block_per_head = true;
  c.block_causal = true;
  add(c);
  c = Case();
  c.name = "hopper d256 window(200,30) softcap 300x700";
  c.sq = 300;
  c.skv = 700;
  c.hq = c.hkv = c.hout = 2;
  c.dqk = c.dv = 256;
  c.mask = MaskCode::kWindow;
  c.wl = 200;
  c.wr = 30;
  c.softcap = 3.f;
  add(c);
  c = Case();
  c.name = "hopper d192 alibi rope causal 400x400";
  c.sq = c.skv = 400;
  c.hq = c.hkv = c.hout = 2;
  c.dqk = c.dv = 192;
  c.alibi = true;
  c.rope_dims = 192;
  c.mask = MaskCode::kCausal;
  add(c);
  c = Case();
  c.name = "hopper d64 rope block 1000x1000";
  c.sq = c.skv = 1000;
  c.rope_dims = 64;
  c.mask = MaskCode::kBlock;
  add(c);
  return cs;
}

// ---- timing ---------------------------------------------------------------------------------

__global__ void InitNormal(__nv_bfloat16* x, int64_t n, uint64_t seed) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    uint64_t z = seed + 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const float u1 = ((z >> 40) + 0.5f) * (1.0f / 16777216.0f);
    const float u2 = (((z >> 16) & 0xffffff) + 0.5f) * (1.0f / 16777216.0f);
    x[i] = __float2bfloat16(sqrtf(-2.f * logf(u1)) * cospif(2.f * u2));
  }
}

// Alternative configurations, timed next to the shipped one to choose tiles.
template <typename Cfg>
cudaError_t LaunchAlt(const AttentionArgs& a, cudaStream_t stream) {
  attnbench::cuda::flash::FlashFlags f;
  f.async_q = f.async_k = f.async_v = f.vector_o = true;
  auto kernel = attnbench::cuda::flash::FlashForwardKernel<__nv_bfloat16, Cfg, false>;
  cudaError_t e =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (e != cudaSuccess) return e;
  const dim3 grid =
      attnbench::cuda::flash::FlashGrid<Cfg::kTilesInY>(a, (a.seq_q + Cfg::kBr - 1) / Cfg::kBr);
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(a, f);
  return cudaGetLastError();
}

// The Hopper kernel with each grid forced (shipped: Sm90Grid::kAuto picks per request).
cudaError_t LaunchHopperPerTile(const AttentionArgs& a, cudaStream_t stream) {
  return attnbench::cuda::flash::LaunchSm90(a, stream, attnbench::cuda::flash::Sm90Grid::kPerTile);
}
cudaError_t LaunchHopperPersistent(const AttentionArgs& a, cudaStream_t stream) {
  return attnbench::cuda::flash::LaunchSm90(a, stream,
                                            attnbench::cuda::flash::Sm90Grid::kPersistent);
}

struct Variant {
  const char* name;
  int d;  // 0: any
  LaunchFn fn;
};

}  // namespace

int main(int argc, char** argv) {
  const char* out_path = argc > 1 ? argv[1] : "ours.tsv";
  const bool only_exp2 = argc > 2 && std::string(argv[2]) == "exp2";
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize >> 20);

  // Correctness.
  int fails = 0;
  uint64_t seed = 12345;
  std::printf("%-46s %5s %10s %10s %5s %5s %5s\n", "case", "dtype", "rel", "max_abs", "nan",
              "guard", "0rows");
  for (const Case& c : only_exp2 ? std::vector<Case>{} : Cases()) {
    for (Storage st : {Storage::kBFloat16, Storage::kFloat16}) {
      const CaseResult r = RunCase(c, st, seed++);
      const double tol = st == Storage::kBFloat16 ? 1e-2 : 5e-3;
      const bool ok = r.nan == 0 && r.guard_bad == 0 && r.rel < tol;
      fails += !ok;
      std::printf("%-46s %5s %10.3e %10.3e %5ld %5ld %5ld %-6s %s\n", c.name.c_str(),
                  st == Storage::kBFloat16 ? "bf16" : "fp16", r.rel, r.max_abs, r.nan, r.guard_bad,
                  r.zero_rows, r.hopper ? "hopper" : "mma", ok ? "ok" : "FAIL");
    }
  }
  // The softcap's other tanh (kSm90PackedTanh flipped) on the cases it can run, to choose it by
  // accuracy as well as time; failures here count too.
  for (const Case& c : only_exp2 ? std::vector<Case>{} : Cases()) {
    if (c.softcap <= 0) continue;
    for (Storage st : {Storage::kBFloat16, Storage::kFloat16}) {
      const CaseResult r = RunCase(c, st, seed++, LaunchOtherTanh);
      if (r.nan < 0) continue;
      const double tol = st == Storage::kBFloat16 ? 1e-2 : 5e-3;
      const bool ok = r.nan == 0 && r.guard_bad == 0 && r.rel < tol;
      fails += !ok;
      std::printf("%-46s %5s %10.3e %10.3e %5ld %5ld %5ld %-6s %s\n",
                  ("other tanh: " + c.name).c_str(), st == Storage::kBFloat16 ? "bf16" : "fp16",
                  r.rel, r.max_abs, r.nan, r.guard_bad, r.zero_rows, "hopper", ok ? "ok" : "FAIL");
    }
  }
  // The exp2 split's settings on the bf16 cases they can run (D 16-128, no RoPE, interval masks).
  for (int poly : {1, 2, 3}) {
    g_poly = poly;
    for (const Case& c : Cases()) {
      // Only what LaunchPoly runs (its float64 reference is the slow part of a case).
      const bool cap = c.softcap > 0;
      if (c.rope_dims > 0 || c.alibi || c.mask == MaskCode::kBlock || (cap && poly == 1) ||
          (!cap && poly == 3) || c.dqk > 128 || c.dv > 128) {
        continue;
      }
      const CaseResult r = RunCase(c, Storage::kBFloat16, seed++, LaunchPoly);
      if (r.nan < 0) continue;
      const bool ok = r.nan == 0 && r.guard_bad == 0 && r.rel < 1e-2;
      fails += !ok;
      std::printf("%-46s %5s %10.3e %10.3e %5ld %5ld %5ld %-6s %s\n",
                  ("exp2 " + std::to_string(poly) + "/4 poly: " + c.name).c_str(), "bf16", r.rel,
                  r.max_abs, r.nan, r.guard_bad, r.zero_rows, "hopper", ok ? "ok" : "FAIL");
    }
  }
  std::printf("correctness: %d failures\n", fails);

  // Timing.
  const size_t flush_bytes = 2 * (size_t)prop.l2CacheSize;
  void* flush;
  CHECK(cudaMalloc(&flush, flush_bytes));
  const int kH = 32;
  const int64_t kTokens = 16384;
  const int64_t max_elems = kTokens * kH * 128;
  __nv_bfloat16 *q, *k, *v, *o;
  CHECK(cudaMalloc(&q, max_elems * 2));
  CHECK(cudaMalloc(&k, max_elems * 2));
  CHECK(cudaMalloc(&v, max_elems * 2));
  CHECK(cudaMalloc(&o, max_elems * 2));
  InitNormal<<<1024, 256>>>(q, max_elems, 1);
  InitNormal<<<1024, 256>>>(k, max_elems, 2);
  InitNormal<<<1024, 256>>>(v, max_elems, 3);
  CHECK(cudaGetLastError());
  std::vector<int32_t> map(2 * kH);
  for (int h = 0; h < kH; ++h) map[2 * h] = map[2 * h + 1] = h;
  int32_t* dmap;
  CHECK(cudaMalloc(&dmap, map.size() * 4));
  CHECK(cudaMemcpy(dmap, map.data(), map.size() * 4, cudaMemcpyHostToDevice));

  using attnbench::cuda::flash::FlashConfig;
  const Variant variants[] = {
      {"shipped", 0, attnbench::cuda::flash::Launch},
      {"hopper per-tile grid", 0, LaunchHopperPerTile},
      {"hopper persistent grid", 0, LaunchHopperPersistent},
      {"mma.sync d64", 64, LaunchAlt<FlashConfig<64, 64, 4, 2, 64, true, 2, true>>},
      {"mma.sync d128", 128, LaunchAlt<FlashConfig<128, 128, 4, 2, 64, false, 2>>},
  };

  FILE* out = std::fopen(out_path, "w");
  cudaEvent_t e0, e1;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));
  std::printf("\n%-26s %6s %4s %6s %10s %9s\n", "variant", "S", "D", "causal", "ms", "TFLOP/s");
  for (int d : only_exp2 ? std::vector<int>{} : std::vector<int>{64, 128}) {
    for (int64_t s : {1024, 4096, 16384}) {
      for (bool causal : {false, true}) {
        AttentionArgs a;
        a.storage = Storage::kBFloat16;
        a.q = q;
        a.k = k;
        a.v = v;
        a.o = o;
        a.batch = (int)(kTokens / s);
        a.seq_q = a.seq_kv = s;
        a.heads_q = a.heads_kv = a.heads_out = kH;
        a.dim_qk = a.dim_v = d;
        a.head_map = dmap;
        a.scale = 1.f / std::sqrt((float)d);
        a.mask = causal ? MaskCode::kCausal : MaskCode::kNone;
        const double flops = 4.0 * a.batch * kH * (double)s * s * d / (causal ? 2 : 1);
        for (const Variant& var : variants) {
          if (var.d != 0 && var.d != d) continue;
          for (int w = 0; w < 3; ++w) CHECK(var.fn(a, 0));
          std::vector<float> ms;
          for (int it = 0; it < 30; ++it) {
            CHECK(cudaMemsetAsync(flush, it & 0xff, flush_bytes));
            CHECK(cudaEventRecord(e0));
            CHECK(var.fn(a, 0));
            CHECK(cudaEventRecord(e1));
            CHECK(cudaEventSynchronize(e1));
            float t;
            CHECK(cudaEventElapsedTime(&t, e0, e1));
            ms.push_back(t);
          }
          std::sort(ms.begin(), ms.end());
          const double med = ms[ms.size() / 2];
          const double tf = flops / (med * 1e-3) / 1e12;
          std::printf("%-26s %6ld %4d %6d %10.3f %9.1f\n", var.name, (long)s, d, (int)causal, med,
                      tf);
          std::fprintf(out, "%s\t%ld\t%d\t%d\t%.4f\t%.1f\n", var.name, (long)s, d, (int)causal, med,
                       tf);
        }
      }
    }
  }

  // Score modifiers and RoPE on the shipped route, against the same shape without them (issue
  // target: within 10%), and block-sparse masks from tile lists against the dense kernel
  // (TFLOP/s counted over kept pairs). Tables built once here: RoPE cos/sin for every position,
  // ALiBi slopes, random 128 x 128 block bitmaps at 10/25/50% density and their tile lists.
  std::vector<float> rope_host;
  float* rope_dev[2] = {nullptr, nullptr};  // D = 64, 128
  for (int di = 0; di < 2; ++di) {
    const int dims = di == 0 ? 64 : 128, half = dims / 2;
    rope_host.assign((size_t)2 * kTokens * half, 0.f);
    for (int64_t pos = 0; pos < kTokens; ++pos) {
      for (int m = 0; m < half; ++m) {
        const double ang = pos * std::pow(10000.0, -2.0 * m / dims);
        rope_host[2 * ((size_t)pos * half + m)] = (float)std::cos(ang);
        rope_host[2 * ((size_t)pos * half + m) + 1] = (float)std::sin(ang);
      }
    }
    CHECK(cudaMalloc(&rope_dev[di], rope_host.size() * 4));
    CHECK(cudaMemcpy(rope_dev[di], rope_host.data(), rope_host.size() * 4, cudaMemcpyHostToDevice));
  }
  std::vector<float> slopes_host(kH);
  for (int h = 0; h < kH; ++h) slopes_host[h] = (float)std::pow(2.0, -8.0 * (h + 1) / kH);
  void* workspace;  // RoPE's rotated K (flash::WorkspaceBytes), at most the size of K
  CHECK(cudaMalloc(&workspace, max_elems * 2));
  float* slopes_dev;
  CHECK(cudaMalloc(&slopes_dev, kH * 4));
  CHECK(cudaMemcpy(slopes_dev, slopes_host.data(), kH * 4, cudaMemcpyHostToDevice));
  auto time_ms = [&](const AttentionArgs& a, LaunchFn fn = attnbench::cuda::flash::Launch) {
    for (int w = 0; w < 3; ++w) CHECK(fn(a, 0));
    std::vector<float> ms;
    for (int it = 0; it < 20; ++it) {
      CHECK(cudaMemsetAsync(flush, it & 0xff, flush_bytes));
      CHECK(cudaEventRecord(e0));
      CHECK(fn(a, 0));
      CHECK(cudaEventRecord(e1));
      CHECK(cudaEventSynchronize(e1));
      float t;
      CHECK(cudaEventElapsedTime(&t, e0, e1));
      ms.push_back(t);
    }
    std::sort(ms.begin(), ms.end());
    return (double)ms[ms.size() / 2];
  };
  auto plain = [&](int d, int64_t s, bool causal) {
    AttentionArgs a;
    a.storage = Storage::kBFloat16;
    a.q = q;
    a.k = k;
    a.v = v;
    a.o = o;
    a.batch = (int)(kTokens / s);
    a.seq_q = a.seq_kv = s;
    a.heads_q = a.heads_kv = a.heads_out = kH;
    a.dim_qk = a.dim_v = d;
    a.head_map = dmap;
    a.scale = 1.f / std::sqrt((float)d);
    a.mask = causal ? MaskCode::kCausal : MaskCode::kNone;
    a.workspace = workspace;
    return a;
  };
  // The softmax's exp2 split: the shipped setting (Sm90PolyExp2Of4) against g_poly of every 4
  // column groups on the FMA pipes, MHA 32 heads, 16k tokens, bf16. First of the tables that
  // follow, and the only one with `flash_check FILE exp2`.
  std::printf("\n%-22s %6s %4s %6s %9s %9s %7s\n", "exp2 split", "S", "D", "causal", "ms",
              "TFLOP/s", "vs ship");
  for (int d : {16, 32, 64, 128}) {
    for (int64_t s : {4096, 16384}) {
      for (bool causal : {false, true}) {
        for (bool cap : {false, true}) {
          AttentionArgs a = plain(d, s, causal);
          if (cap) {
            a.modifiers |= attnbench::cuda::kModifierSoftcap;
            a.softcap = 30.f;
          }
          const double flops = 4.0 * (kTokens / s) * kH * (double)s * s * d / (causal ? 2 : 1);
          const double ship = time_ms(a);
          const char* mods = cap ? "softcap" : "none";
          std::printf("%-22s %6ld %4d %6d %9.3f %9.1f %7.3f\n",
                      (std::string(mods) + " shipped").c_str(), (long)s, d, (int)causal, ship,
                      flops / (ship * 1e-3) / 1e12, 1.0);
          for (int poly : cap ? std::vector<int>{2, 3} : std::vector<int>{1, 2}) {
            g_poly = poly;
            const double t = time_ms(a, LaunchPoly);
            std::printf("%-22s %6ld %4d %6d %9.3f %9.1f %7.3f\n",
                        (std::string(mods) + " poly " + std::to_string(poly) + "/4").c_str(),
                        (long)s, d, (int)causal, t, flops / (t * 1e-3) / 1e12, t / ship);
            std::fprintf(out, "exp2:%s:%d\t%ld\t%d\t%d\t%.4f\t%.4f\n", mods, poly, (long)s, d,
                         (int)causal, t, ship);
          }
        }
      }
    }
  }
  if (only_exp2) {
    std::fclose(out);
    return fails == 0 ? 0 : 2;
  }
  std::printf("\n%-22s %6s %4s %6s %9s %9s %7s  %s\n", "modifiers", "S", "D", "causal", "ms",
              "TFLOP/s", "vs none", "kernel");
  for (int d : {64, 128}) {
    for (int64_t s : {1024, 4096, 16384}) {
      for (bool causal : {false, true}) {
        const double flops = 4.0 * (kTokens / s) * kH * (double)s * s * d / (causal ? 2 : 1);
        double base = 0;
        for (int mods = 0; mods < 6; ++mods) {
          static const char* kNames[] = {"none",    "rope",          "alibi",
                                         "softcap", "alibi+softcap", "rope+alibi+softcap"};
          AttentionArgs a = plain(d, s, causal);
          const bool rope = mods == 1 || mods == 5, alibi = mods == 2 || mods >= 4,
                     cap = mods == 3 || mods >= 4;
          if (rope) {
            a.modifiers |= attnbench::cuda::kModifierRope;
            a.rope_dims = d;
            a.rope_cos_sin = rope_dev[d == 64 ? 0 : 1];
          }
          if (alibi) {
            a.modifiers |= attnbench::cuda::kModifierAlibi;
            a.alibi_slopes = slopes_dev;
          }
          if (cap) {
            a.modifiers |= attnbench::cuda::kModifierSoftcap;
            a.softcap = 30.f;
          }
          const double med = time_ms(a);
          if (mods == 0) base = med;
          const std::string name =
              attnbench::cuda::flash::KernelName(a, attnbench::cuda::flash::CurrentDevice());
          std::printf("%-22s %6ld %4d %6d %9.3f %9.1f %7.3f  %s\n", kNames[mods], (long)s, d,
                      (int)causal, med, flops / (med * 1e-3) / 1e12, med / base, name.c_str());
          std::fprintf(out, "mod:%s\t%ld\t%d\t%d\t%.4f\t%.1f\n", kNames[mods], (long)s, d,
                       (int)causal, med, flops / (med * 1e-3) / 1e12);
          if (mods == 3 || mods == 4) {  // the softcap's other tanh, same shape
            const double other = time_ms(a, LaunchOtherTanh);
            const char* form = attnbench::cuda::flash::kSm90PackedTanh ? "f32" : "f16x2";
            std::printf("%-22s %6ld %4d %6d %9.3f %9.1f %7.3f  tanh %s\n", kNames[mods], (long)s, d,
                        (int)causal, other, flops / (other * 1e-3) / 1e12, other / base, form);
            std::fprintf(out, "mod:%s/tanh-%s\t%ld\t%d\t%d\t%.4f\t%.1f\n", kNames[mods], form,
                         (long)s, d, (int)causal, other, flops / (other * 1e-3) / 1e12);
          }
        }
      }
    }
  }
  std::printf("\n%-22s %6s %4s %7s %9s %9s %9s\n", "block-sparse 128x128", "S", "D", "density",
              "ms", "TF/s kept", "vs dense");
  Rng brng{777};
  for (int64_t s : {8192, 16384}) {
    const int d = 128;
    const AttentionArgs dense = plain(d, s, false);
    const double dense_ms = time_ms(dense);
    const double dense_tf = 4.0 * (kTokens / s) * kH * (double)s * s * d / (dense_ms * 1e-3) / 1e12;
    std::printf("%-22s %6ld %4d %7.2f %9.3f %9.1f %9.3f\n", "dense", (long)s, d, 1.0, dense_ms,
                dense_tf, 1.0);
    for (double density : {0.1, 0.25, 0.5}) {
      AttentionArgs a = plain(d, s, false);
      const int batch = a.batch, blocks = (int)(s / 128);
      a.mask = MaskCode::kBlock;
      a.block_q = a.block_k = 128;
      a.block_rows = a.block_cols = blocks;
      a.block_per_head = true;
      std::vector<uint8_t> bits((size_t)batch * kH * blocks * blocks);
      long kept_blocks = 0;
      for (auto& x : bits) kept_blocks += (x = brng.Uniform() < density ? 1 : 0);
      std::vector<int32_t> tiles;
      std::vector<int64_t> offsets{0};
      for (int64_t m = 0; m < (int64_t)batch * kH; ++m) {
        for (int r = 0; r < blocks; ++r) {
          for (int c = 0; c < blocks; ++c) {
            if (bits[((size_t)m * blocks + r) * blocks + c]) tiles.push_back(c);
          }
          offsets.push_back((int64_t)tiles.size());
        }
      }
      uint8_t* dbits;
      int32_t* dtiles;
      int64_t* doffs;
      CHECK(cudaMalloc(&dbits, bits.size()));
      CHECK(cudaMalloc(&dtiles, std::max<size_t>(4, tiles.size() * 4)));
      CHECK(cudaMalloc(&doffs, offsets.size() * 8));
      CHECK(cudaMemcpy(dbits, bits.data(), bits.size(), cudaMemcpyHostToDevice));
      CHECK(cudaMemcpy(dtiles, tiles.data(), tiles.size() * 4, cudaMemcpyHostToDevice));
      CHECK(cudaMemcpy(doffs, offsets.data(), offsets.size() * 8, cudaMemcpyHostToDevice));
      a.block_bitmap = dbits;
      a.block_tiles = dtiles;
      a.block_tile_offsets = doffs;
      a.block_tile_q = 128;
      a.block_tile_kv = 128;
      const double kept_flops = 4.0 * kept_blocks * 128.0 * 128.0 * d;
      // Natural order on one block per item (the route before item orders), the balanced order
      // on one block per item, and the balanced order on the persistent grid; then the route.
      const std::vector<int64_t> work =
          attnbench::cuda::flash::TileListWork(a, offsets, attnbench::cuda::flash::kSm90BlockQ);
      const int sms = prop.multiProcessorCount;
      const std::vector<int32_t> order =
          attnbench::cuda::flash::BalancedItemOrder(work, (int)std::min<size_t>(work.size(), sms));
      int32_t* dorder;
      CHECK(cudaMalloc(&dorder, order.size() * 4));
      CHECK(cudaMemcpy(dorder, order.data(), order.size() * 4, cudaMemcpyHostToDevice));
      AttentionArgs ordered = a;
      ordered.item_order = dorder;
      ordered.item_order_blocks = (int)std::min<size_t>(work.size(), sms);
      const std::vector<int32_t> routed = attnbench::cuda::flash::ItemOrderFor(a, offsets, sms);
      const struct {
        const char* name;
        const AttentionArgs* args;
        LaunchFn fn;
      } grids[] = {{"list natural/tile", &a, LaunchHopperPerTile},
                   {"list ordered/tile", &ordered, LaunchHopperPerTile},
                   {"list ordered/persist", &ordered, LaunchHopperPersistent},
                   {routed.empty() ? "list route (natural)" : "list route (ordered)",
                    routed.empty() ? &a : &ordered, attnbench::cuda::flash::Launch}};
      for (const auto& g : grids) {
        const double med = time_ms(*g.args, g.fn);
        const double tf = kept_flops / (med * 1e-3) / 1e12;
        std::printf("%-22s %6ld %4d %7.2f %9.3f %9.1f %9.3f\n", g.name, (long)s, d,
                    (double)kept_blocks / bits.size(), med, tf, tf / dense_tf);
        std::fprintf(out, "block:%.2f:%s\t%ld\t%d\t0\t%.4f\t%.1f\n", density, g.name, (long)s, d,
                     med, tf);
      }
      cudaFree(dorder);
      cudaFree(dbits);
      cudaFree(dtiles);
      cudaFree(doffs);
    }
  }
  std::fclose(out);
  return fails == 0 ? 0 : 2;
}
