#include "tests/kernels/naive_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/spec/dtype.h"
#include "kernels/spec/philox.h"

namespace attnbench::testing {
namespace {

int64_t FloorDivide(int64_t a, int64_t b) {
  return static_cast<int64_t>(std::floor(static_cast<double>(a) / static_cast<double>(b)));
}

void Rotate(std::vector<double>& v, double pos, double theta, int rot) {
  const std::vector<double> x = v;
  for (int m = 0; m < rot / 2; ++m) {
    const double angle = pos * std::pow(theta, -2.0 * m / rot);
    v[m] = x[m] * std::cos(angle) - x[m + rot / 2] * std::sin(angle);
    v[m + rot / 2] = x[m + rot / 2] * std::cos(angle) + x[m] * std::sin(angle);
  }
}

// Format of cache token j from the SAQ bands (newest first) or the single format.
CacheFormat FormatOfToken(const Problem& p, int64_t j) {
  if (p.kv_cache.saq_bands.empty()) return p.kv_cache.format;
  int64_t newer = 0;                         // tokens newer than the current band's start
  const int64_t age = p.seq_len_kv - 1 - j;  // 0 for the newest token
  for (const SaqBand& band : p.kv_cache.saq_bands) {
    if (!band.num_tokens.has_value()) return band.format;
    newer += *band.num_tokens;
    if (age < newer) return band.format;
  }
  return CacheFormat::kNative;
}

void Quantize(std::vector<double>& row, CacheFormat format) {
  if (format != CacheFormat::kInt8 && format != CacheFormat::kInt4) return;
  const double levels = format == CacheFormat::kInt8 ? 127 : 7;
  float amax = 0;
  for (double v : row) amax = std::max(amax, std::fabs(static_cast<float>(v)));
  const float scale = amax / static_cast<float>(levels);
  for (double& v : row) {
    if (scale == 0) {
      v = 0;
      continue;
    }
    double q = std::nearbyint(static_cast<float>(v) / scale);
    q = std::min(levels, std::max(-levels, q));
    v = q * scale;
  }
}

}  // namespace

NaiveHeads NaiveHeadMap(const HeadLayout& l) {
  NaiveHeads n;
  switch (l.kind) {
    case LayoutKind::kMha:
      n.hq = n.hkv = n.hout = l.num_heads;
      for (int h = 0; h < n.hout; ++h) n.map.push_back({h, h});
      break;
    case LayoutKind::kMqa:
      n.hq = n.hout = l.num_heads;
      n.hkv = 1;
      for (int h = 0; h < n.hout; ++h) n.map.push_back({h, 0});
      break;
    case LayoutKind::kGqa:
    case LayoutKind::kSqa:
      n.hq = n.hout = l.num_query_heads;
      n.hkv = l.num_kv_heads;
      for (int h = 0; h < n.hout; ++h) n.map.push_back({h, h / (n.hq / n.hkv)});
      break;
    case LayoutKind::kSymmetricSqa:
      n.hq = n.hkv = n.hout = l.baseline_heads / 2;
      for (int h = 0; h < n.hout; ++h) n.map.push_back({h, h});
      break;
    case LayoutKind::kExtremeSqa:
      n.hq = n.hkv = n.hout = l.extreme_query_heads ? *l.extreme_query_heads : l.baseline_heads / 4;
      for (int h = 0; h < n.hout; ++h) n.map.push_back({h, h});
      break;
    case LayoutKind::kGqkva:
      n.hq = l.query_groups;
      n.hkv = l.kv_groups;
      n.hout = l.query_groups * l.kv_groups;
      for (int h = 0; h < n.hout; ++h) n.map.push_back({h / l.kv_groups, h % l.kv_groups});
      break;
    case LayoutKind::kExplicit:
      n.hq = l.num_query_heads;
      n.hkv = l.num_kv_heads;
      n.hout = static_cast<int>(l.pairs.size());
      for (const HeadPair& pair : l.pairs) n.map.push_back({pair.query_head, pair.kv_head});
      break;
    default:
      break;
  }
  return n;
}

std::vector<double> NaiveAlibiSlopes(int n) {
  auto power_of_2 = [](int k) {
    const double start = std::pow(2.0, -std::pow(2.0, -(std::log2(k) - 3)));
    std::vector<double> s;
    for (int i = 0; i < k; ++i) s.push_back(start * std::pow(start, i));
    return s;
  };
  const double lg = std::log2(n);
  if (lg == std::floor(lg)) return power_of_2(n);
  const int closest = 1 << static_cast<int>(std::floor(lg));
  std::vector<double> s = power_of_2(closest);
  const std::vector<double> extra = NaiveAlibiSlopes(2 * closest);
  for (int k = 0; static_cast<int>(s.size()) < n; k += 2) s.push_back(extra[k]);
  return s;
}

bool NaiveKeeps(const Problem& p, int64_t b, int h, int64_t i, int64_t j) {
  const int64_t ip = i + p.seq_len_kv - p.seq_len_q;
  const Mask& m = p.mask;
  switch (m.kind) {
    case MaskKind::kNone:
      return true;
    case MaskKind::kCausal:
      return j <= ip;
    case MaskKind::kSlidingWindow:
      if (m.left_tokens && j < ip - *m.left_tokens) return false;
      if (m.right_tokens && j > ip + *m.right_tokens) return false;
      return true;
    case MaskKind::kBlockSparse: {
      if (m.intersect_causal && j > ip) return false;
      for (const Block& blk : m.blocks) {
        if (blk.query_block == i / m.query_block_tokens && blk.kv_block == j / m.kv_block_tokens) {
          return true;
        }
      }
      return false;
    }
    case MaskKind::kProbabilisticBlockSparse: {
      if (j > ip) return false;
      const int64_t r = i / m.query_block_tokens, c = j / m.kv_block_tokens;
      const int64_t d =
          FloorDivide(r * m.query_block_tokens + p.seq_len_kv - p.seq_len_q, m.kv_block_tokens) - c;
      if (d <= 0) return true;
      const auto w =
          Philox4x32_10({static_cast<uint32_t>(c), static_cast<uint32_t>(r),
                         static_cast<uint32_t>(h), static_cast<uint32_t>(b)},
                        {static_cast<uint32_t>(m.seed), static_cast<uint32_t>(m.seed >> 32)});
      const double prob = std::min(1.0, m.c_coefficient / std::pow(1.0 + d, m.alpha));
      return w[0] / 4294967296.0 < prob;
    }
  }
  return false;
}

std::vector<double> NaiveAttention(const Problem& p, const AttentionInputs& in,
                                   const NaiveOptions& options) {
  const NaiveHeads heads = NaiveHeadMap(p.layout);
  const int64_t B = p.batch_size, Sq = p.seq_len_q, Skv = p.seq_len_kv;
  const int64_t Dqk = p.head_dim_qk, Dv = p.head_dim_v ? *p.head_dim_v : Dqk;
  const bool layer = p.scope == Scope::kLayer;
  const double scale = p.scale ? *p.scale : 1.0 / std::sqrt(static_cast<double>(Dqk));
  const int rot = p.rope.rotary_dims ? *p.rope.rotary_dims : static_cast<int>(Dqk);
  const double theta = p.rope.theta ? *p.rope.theta : 10000.0;
  std::vector<double> slopes(heads.hout);
  if (p.alibi.enabled) {
    if (p.alibi.schedule == AlibiSchedule::kHarmonic) {
      for (int h = 0; h < heads.hout; ++h) {
        slopes[h] = (p.alibi.harmonic_base_slope ? *p.alibi.harmonic_base_slope : 1.0) / (h + 1);
      }
    } else {
      slopes = NaiveAlibiSlopes(heads.hout);
    }
  }

  // Q, K, V as double [B][S][H][D]: the inputs, or at layer scope the projections of X stored in
  // the dtype.
  auto project = [&](const FloatTensor& w, int64_t nh, int64_t dim) {
    std::vector<double> out(B * Sq * nh * dim);
    const int64_t dm = *p.d_model;
    for (int64_t t = 0; t < B * Sq; ++t) {
      for (int64_t col = 0; col < nh * dim; ++col) {
        double acc = 0;
        for (int64_t c = 0; c < dm; ++c) {
          acc += static_cast<double>(in.x.values[t * dm + c]) * w.values[c * nh * dim + col];
        }
        out[t * nh * dim + col] = RoundToDType(static_cast<float>(acc), p.dtype);
      }
    }
    return out;
  };
  // FP8 codes stand for code * scale (§1b).
  auto copy = [](const FloatTensor& t) {
    std::vector<double> out(t.values.begin(), t.values.end());
    if (t.scales.empty()) return out;
    const int64_t dim = t.shape[3], nh = t.shape[2];
    for (size_t k = 0; k < out.size(); ++k) {
      out[k] *= ScaleOfHead(t, (static_cast<int64_t>(k) / dim) % nh);
    }
    return out;
  };
  const std::vector<double> Q = layer ? project(in.w_q, heads.hq, Dqk) : copy(in.query);
  const std::vector<double> K = layer ? project(in.w_k, heads.hkv, Dqk) : copy(in.key);
  const std::vector<double> V = layer ? project(in.w_v, heads.hkv, Dv) : copy(in.value);

  std::vector<double> O(B * Sq * heads.hout * Dv, 0.0);
  for (int64_t b = 0; b < B; ++b) {
    for (int h = 0; h < heads.hout; ++h) {
      const int qh = heads.map[h].first, kh = heads.map[h].second;
      // Keys after RoPE and values, optionally through the quantized cache.
      std::vector<std::vector<double>> keys(Skv), values(Skv);
      for (int64_t j = 0; j < Skv; ++j) {
        keys[j].assign(&K[((b * Skv + j) * heads.hkv + kh) * Dqk],
                       &K[((b * Skv + j) * heads.hkv + kh) * Dqk] + Dqk);
        values[j].assign(&V[((b * Skv + j) * heads.hkv + kh) * Dv],
                         &V[((b * Skv + j) * heads.hkv + kh) * Dv] + Dv);
        if (p.rope.enabled) Rotate(keys[j], static_cast<double>(j), theta, rot);
        if (options.quantize_cache) {
          // The cache stores float32 values (keys rotated in float32 arithmetic is what is
          // quantized; the difference from double is far below a quantization step).
          Quantize(keys[j], FormatOfToken(p, j));
          Quantize(values[j], FormatOfToken(p, j));
        }
      }
      for (int64_t i = 0; i < Sq; ++i) {
        const int64_t ip = i + Skv - Sq;
        std::vector<double> q(&Q[((b * Sq + i) * heads.hq + qh) * Dqk],
                              &Q[((b * Sq + i) * heads.hq + qh) * Dqk] + Dqk);
        if (p.rope.enabled) Rotate(q, static_cast<double>(ip), theta, rot);
        std::vector<double> s(Skv, -std::numeric_limits<double>::infinity());
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < Skv; ++j) {
          if (!NaiveKeeps(p, b, h, i, j)) continue;
          if (options.mask_mod && !options.mask_mod(b, h, ip, j)) continue;
          double dot = 0;
          for (int64_t d = 0; d < Dqk; ++d) dot += q[d] * keys[j][d];
          double score = scale * dot;
          if (p.alibi.enabled) score += slopes[h] * static_cast<double>(j - ip);
          if (p.softcap.enabled) score = p.softcap.cap * std::tanh(score / p.softcap.cap);
          if (options.score_mod) score = options.score_mod(score, b, h, ip, j);
          s[j] = score;
          mx = std::max(mx, score);
        }
        if (mx == -std::numeric_limits<double>::infinity()) continue;  // all hidden: zeros
        double total = 0;
        std::vector<double> o(Dv, 0.0);
        for (int64_t j = 0; j < Skv; ++j) {
          if (s[j] == -std::numeric_limits<double>::infinity()) continue;
          const double e = std::exp(s[j] - mx);
          total += e;
          for (int64_t d = 0; d < Dv; ++d) o[d] += e * values[j][d];
        }
        for (int64_t d = 0; d < Dv; ++d) O[((b * Sq + i) * heads.hout + h) * Dv + d] = o[d] / total;
      }
    }
  }
  if (!layer) return O;
  const int64_t dm = *p.d_model;
  std::vector<double> Y(B * Sq * dm, 0.0);
  for (int64_t t = 0; t < B * Sq; ++t) {
    for (int64_t c = 0; c < heads.hout * Dv; ++c) {
      const double o = RoundToDType(static_cast<float>(O[t * heads.hout * Dv + c]), p.dtype);
      for (int64_t col = 0; col < dm; ++col) Y[t * dm + col] += o * in.w_o.values[c * dm + col];
    }
  }
  return Y;
}

}  // namespace attnbench::testing
