// NormalizeProblem's defaults, every rule of ValidateProblem (one passing and one failing case
// each, the failure naming the field by proto path), and the head map of every layout.
#include "kernels/spec/problem.h"

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/spec/dtype.h"
#include "tests/kernels/test_util.h"

namespace attnbench {
namespace {

using testing::SmallProblem;

TEST(NormalizeTest, FillsEveryDefault) {
  Problem p = SmallProblem();
  p.rope.enabled = true;
  p.alibi.enabled = true;
  p.phase = Phase::kDecode;
  const Problem n = NormalizeProblem(p);
  EXPECT_EQ(n.head_dim_v, 8);
  EXPECT_DOUBLE_EQ(*n.scale, 1.0 / std::sqrt(8.0));
  EXPECT_EQ(n.scope, Scope::kCore);
  EXPECT_EQ(n.rope.theta, 10000.0);
  EXPECT_EQ(n.rope.rotary_dims, 8);
  EXPECT_EQ(n.alibi.schedule, AlibiSchedule::kGeometric);
  EXPECT_FALSE(n.alibi.harmonic_base_slope.has_value());
  EXPECT_EQ(n.kv_cache.format, CacheFormat::kNative);
  EXPECT_EQ(n.input_scale, 1.0);
  EXPECT_EQ(NormalizeProblem(SmallProblem()).phase, Phase::kPrefill);

  Problem h = SmallProblem();
  h.alibi.enabled = true;
  h.alibi.schedule = AlibiSchedule::kHarmonic;
  EXPECT_EQ(NormalizeProblem(h).alibi.harmonic_base_slope, 1.0);

  Problem x = SmallProblem();
  x.layout = {};
  x.layout.kind = LayoutKind::kExtremeSqa;
  x.layout.baseline_heads = 16;
  EXPECT_EQ(NormalizeProblem(x).layout.extreme_query_heads, 4);
}

TEST(NormalizeTest, NeverChangesSetFields) {
  Problem p = SmallProblem();
  p.head_dim_v = 3;
  p.scale = 0.5;
  p.phase = Phase::kDecode;
  p.scope = Scope::kCore;
  p.rope = {true, 500.0, 4};
  p.alibi = {true, AlibiSchedule::kHarmonic, 0.25};
  p.kv_cache.format = CacheFormat::kInt4;
  p.input_scale = 3.0;
  const Problem n = NormalizeProblem(p);
  EXPECT_EQ(n.head_dim_v, 3);
  EXPECT_EQ(n.scale, 0.5);
  EXPECT_EQ(n.phase, Phase::kDecode);
  EXPECT_EQ(n.rope.theta, 500.0);
  EXPECT_EQ(n.rope.rotary_dims, 4);
  EXPECT_EQ(n.alibi.harmonic_base_slope, 0.25);
  EXPECT_EQ(n.kv_cache.format, CacheFormat::kInt4);
  EXPECT_EQ(n.input_scale, 3.0);

  Problem bands = SmallProblem();
  bands.phase = Phase::kDecode;
  bands.kv_cache.saq_bands = {{std::nullopt, CacheFormat::kInt8}};
  EXPECT_EQ(NormalizeProblem(bands).kv_cache.format, CacheFormat::kUnspecified);
}

TEST(NamesTest, MatchTheProto) {
  EXPECT_EQ(DTypeBytes(DType::kFloat32), 4);
  EXPECT_EQ(DTypeBytes(DType::kBFloat16), 2);
  EXPECT_EQ(DTypeBytes(DType::kFloat16), 2);
  EXPECT_EQ(DTypeBytes(DType::kFloat8E4M3), 1);
  EXPECT_EQ(std::string(DTypeName(DType::kFloat8E4M3)), "float8_e4m3");
  EXPECT_EQ(std::string(LayoutName(LayoutKind::kExplicit)), "explicit_map");
  EXPECT_EQ(std::string(LayoutName(LayoutKind::kSymmetricSqa)), "symmetric_sqa");
  EXPECT_EQ(std::string(MaskName(MaskKind::kProbabilisticBlockSparse)),
            "probabilistic_block_sparse");
}

// One validation rule: `valid` and `invalid` each edit SmallProblem(); the invalid one must fail
// with INVALID_ARGUMENT naming `field`.
struct Rule {
  std::string name;
  std::function<void(Problem&)> valid;
  std::function<void(Problem&)> invalid;
  std::string field;
};

void SetLayout(Problem& p, LayoutKind kind) {
  p.layout = {};
  p.layout.kind = kind;
}
void Decode(Problem& p) {
  p.phase = Phase::kDecode;
  p.seq_len_q = 2;
}
void Layer(Problem& p) {
  p.scope = Scope::kLayer;
  p.d_model = 32;
}
HostTensor Client(DType dtype, std::vector<int64_t> shape) {
  HostTensor t;
  t.dtype = dtype;
  t.shape = shape;
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  t.data.assign(n * DTypeBytes(dtype), '\0');
  return t;
}
void ClientInputs(Problem& p) {
  p.query = Client(DType::kFloat32, {2, 16, 4, 8});
  p.key = Client(DType::kFloat32, {2, 16, 4, 8});
  p.value = Client(DType::kFloat32, {2, 16, 4, 8});
}
void Paged(Problem& p) {
  Decode(p);
  p.kv_cache.paged = true;
  p.kv_cache.page_size_tokens = 4;  // 2 sequences x 4 pages
}

std::vector<Rule> Rules() {
  static constexpr double inf = std::numeric_limits<double>::infinity();
  static constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<Rule> r;
  auto add = [&](std::string name, std::function<void(Problem&)> valid,
                 std::function<void(Problem&)> invalid, std::string field) {
    r.push_back({std::move(name), std::move(valid), std::move(invalid), std::move(field)});
  };
  add(
      "batch", [](Problem& p) { p.batch_size = 1; }, [](Problem& p) { p.batch_size = 0; },
      "spec.batch_size");
  add(
      "seq_q", [](Problem& p) { p.seq_len_q = 5; }, [](Problem& p) { p.seq_len_q = -1; },
      "spec.seq_len_q");
  add(
      "seq_kv", [](Problem& p) { p.seq_len_kv = 3; }, [](Problem& p) { p.seq_len_kv = 0; },
      "spec.seq_len_kv");
  add(
      "head_dim_qk", [](Problem& p) { p.head_dim_qk = 1; }, [](Problem& p) { p.head_dim_qk = 0; },
      "spec.head_dim_qk");
  add(
      "head_dim_v", [](Problem& p) { p.head_dim_v = 3; }, [](Problem& p) { p.head_dim_v = -2; },
      "spec.head_dim_v");
  add(
      "query_size",
      [](Problem& p) { p.seq_len_q = p.seq_len_kv = int64_t{1} << 33; },  // 2^39 elements
      [](Problem& p) { p.seq_len_q = int64_t{1} << 36; }, "spec.seq_len_q");
  add(
      "key_size", [](Problem& p) { p.seq_len_kv = int64_t{1} << 33; },
      [](Problem& p) { p.seq_len_kv = int64_t{1} << 36; }, "spec.seq_len_kv");
  // 4 heads of 4096: W_q is d_model x 2^14.
  add(
      "weight_size",
      [](Problem& p) {
        Layer(p);
        p.head_dim_qk = 1 << 12;
        p.d_model = 1 << 20;
      },
      [](Problem& p) {
        Layer(p);
        p.head_dim_qk = 1 << 12;
        p.d_model = 1 << 28;
      },
      "spec.d_model");
  add(
      "dtype", [](Problem& p) { p.dtype = DType::kFloat8E4M3; },
      [](Problem& p) { p.dtype = DType::kUnspecified; }, "spec.dtype");
  add(
      "layout", [](Problem& p) {}, [](Problem& p) { SetLayout(p, LayoutKind::kUnspecified); },
      "spec.layout");
  add(
      "mha_heads", [](Problem& p) { p.layout.num_heads = 1; },
      [](Problem& p) { p.layout.num_heads = 0; }, "spec.layout.mha.num_heads");
  add(
      "mha_heads_bound", [](Problem& p) { p.layout.num_heads = 3; },
      [](Problem& p) { p.layout.num_heads = (1 << 16) + 1; }, "spec.layout.mha.num_heads");
  add(
      "mqa_heads",
      [](Problem& p) {
        SetLayout(p, LayoutKind::kMqa);
        p.layout.num_heads = 3;
      },
      [](Problem& p) {
        SetLayout(p, LayoutKind::kMqa);
        p.layout.num_heads = -1;
      },
      "spec.layout.mqa.num_heads");
  static constexpr auto gqa = [](int hq, int hkv) {
    return [=](Problem& p) {
      SetLayout(p, LayoutKind::kGqa);
      p.layout.num_query_heads = hq;
      p.layout.num_kv_heads = hkv;
    };
  };
  add("gqa_hq", gqa(6, 3), gqa(0, 3), "spec.layout.gqa.num_query_heads");
  add("gqa_hkv", gqa(6, 6), gqa(6, 0), "spec.layout.gqa.num_kv_heads");
  add("gqa_divisible", gqa(30, 5), gqa(32, 5), "spec.layout.gqa.num_kv_heads (5)");
  auto sqa = [](int h, int hq, int hkv) {
    return [=](Problem& p) {
      SetLayout(p, LayoutKind::kSqa);
      p.layout.baseline_heads = h;
      p.layout.num_query_heads = hq;
      p.layout.num_kv_heads = hkv;
    };
  };
  add("sqa_baseline", sqa(8, 4, 2), sqa(0, 4, 2), "spec.layout.sqa.baseline_heads");
  add("sqa_hq", sqa(8, 6, 3), sqa(8, 0, 2), "spec.layout.sqa.num_query_heads");
  add("sqa_hkv", sqa(8, 4, 4), sqa(8, 4, 0), "spec.layout.sqa.num_kv_heads");
  add("sqa_fewer_queries", sqa(8, 7, 7), sqa(8, 8, 4), "spec.layout.sqa.baseline_heads");
  add("sqa_kv_le_q", sqa(8, 4, 1), sqa(8, 4, 6), "spec.layout.sqa.num_kv_heads (6)");
  add("sqa_divisible", sqa(8, 6, 2), sqa(8, 6, 4), "spec.layout.sqa.num_kv_heads (4)");
  auto ssqa = [](int h) {
    return [=](Problem& p) {
      SetLayout(p, LayoutKind::kSymmetricSqa);
      p.layout.baseline_heads = h;
    };
  };
  add("ssqa_even", ssqa(2), ssqa(5), "spec.layout.symmetric_sqa.baseline_heads (5)");
  add("ssqa_positive", ssqa(10), ssqa(0), "spec.layout.symmetric_sqa.baseline_heads");
  auto xsqa = [](int h, std::optional<int> hq) {
    return [=](Problem& p) {
      SetLayout(p, LayoutKind::kExtremeSqa);
      p.layout.baseline_heads = h;
      p.layout.extreme_query_heads = hq;
    };
  };
  add("xsqa_baseline", xsqa(4, std::nullopt), xsqa(3, std::nullopt),
      "spec.layout.extreme_sqa.baseline_heads (3)");
  add("xsqa_heads_positive", xsqa(16, 1), xsqa(16, 0), "spec.layout.extreme_sqa.num_query_heads");
  add("xsqa_heads_quarter", xsqa(16, 4), xsqa(16, 5),
      "spec.layout.extreme_sqa.num_query_heads (5)");
  auto gqkva = [](int g, int k) {
    return [=](Problem& p) {
      SetLayout(p, LayoutKind::kGqkva);
      p.layout.query_groups = g;
      p.layout.kv_groups = k;
    };
  };
  add("gqkva_query", gqkva(2, 3), gqkva(0, 3), "spec.layout.gqkva.query_groups");
  add("gqkva_kv", gqkva(1, 1), gqkva(2, -3), "spec.layout.gqkva.kv_groups");
  add("gqkva_product", gqkva(256, 256), gqkva(512, 256), "spec.layout.gqkva.query_groups");
  auto explicit_map = [](int nq, int nkv, std::vector<HeadPair> pairs) {
    return [=](Problem& p) {
      SetLayout(p, LayoutKind::kExplicit);
      p.layout.num_query_heads = nq;
      p.layout.num_kv_heads = nkv;
      p.layout.pairs = pairs;
    };
  };
  add("explicit_nq", explicit_map(2, 1, {{1, 0}}), explicit_map(0, 1, {{0, 0}}),
      "spec.layout.explicit_map.num_query_heads");
  add("explicit_nkv", explicit_map(1, 3, {{0, 2}}), explicit_map(1, 0, {{0, 0}}),
      "spec.layout.explicit_map.num_kv_heads");
  add("explicit_pairs", explicit_map(1, 1, {{0, 0}}), explicit_map(1, 1, {}),
      "spec.layout.explicit_map.pairs");
  add("explicit_query_index", explicit_map(3, 2, {{2, 1}, {0, 0}}),
      explicit_map(3, 2, {{0, 0}, {3, 1}}), "spec.layout.explicit_map.pairs[1].query_head (3)");
  add("explicit_kv_index", explicit_map(3, 2, {{0, 1}}), explicit_map(3, 2, {{0, -1}}),
      "spec.layout.explicit_map.pairs[0].kv_head (-1)");
  auto window = [](std::optional<int64_t> l, std::optional<int64_t> rt) {
    return [=](Problem& p) {
      p.mask.kind = MaskKind::kSlidingWindow;
      p.mask.left_tokens = l;
      p.mask.right_tokens = rt;
    };
  };
  add("window_left", window(0, std::nullopt), window(-1, std::nullopt),
      "spec.mask.sliding_window.left_tokens");
  add("window_right", window(std::nullopt, 0), window(3, -2),
      "spec.mask.sliding_window.right_tokens");
  auto block = [](int64_t bq, int64_t bk, std::vector<Block> blocks) {
    return [=](Problem& p) {
      p.mask.kind = MaskKind::kBlockSparse;
      p.mask.query_block_tokens = bq;
      p.mask.kv_block_tokens = bk;
      p.mask.blocks = blocks;
    };
  };
  // 16 tokens in blocks of 5 (q) and 6 (kv): a 4 x 3 grid.
  add("block_q_tokens", block(5, 6, {}), block(0, 6, {}),
      "spec.mask.block_sparse.query_block_tokens");
  add("block_kv_tokens", block(5, 6, {}), block(5, -6, {}),
      "spec.mask.block_sparse.kv_block_tokens");
  add("block_row", block(5, 6, {{3, 2}}), block(5, 6, {{0, 0}, {4, 0}}),
      "spec.mask.block_sparse.blocks[1].query_block (4)");
  add("block_col", block(5, 6, {{0, 2}}), block(5, 6, {{0, 3}}),
      "spec.mask.block_sparse.blocks[0].kv_block (3)");
  auto prob = [](int64_t bq, int64_t bk, double c, double alpha) {
    return [=](Problem& p) {
      p.mask.kind = MaskKind::kProbabilisticBlockSparse;
      p.mask.query_block_tokens = bq;
      p.mask.kv_block_tokens = bk;
      p.mask.c_coefficient = c;
      p.mask.alpha = alpha;
    };
  };
  const std::string pb = "spec.mask.probabilistic_block_sparse.";
  add("prob_q_tokens", prob(4, 4, 1, 1), prob(0, 4, 1, 1), pb + "query_block_tokens");
  add("prob_kv_tokens", prob(4, 4, 1, 1), prob(4, 0, 1, 1), pb + "kv_block_tokens");
  add("prob_c", prob(4, 4, 0.1, 1), prob(4, 4, 0, 1), pb + "c_coefficient");
  add("prob_c_finite", prob(4, 4, 10, 1), prob(4, 4, inf, 1), pb + "c_coefficient");
  add("prob_alpha", prob(4, 4, 1, 0), prob(4, 4, 1, -0.5), pb + "alpha");
  add("prob_alpha_finite", prob(4, 4, 1, 2), prob(4, 4, 1, nan), pb + "alpha");
  auto rope = [](std::optional<double> theta, std::optional<int> dims) {
    return [=](Problem& p) { p.rope = {true, theta, dims}; };
  };
  add("rope_theta", rope(500.0, std::nullopt), rope(0.0, std::nullopt), "spec.rope.theta");
  add("rope_theta_finite", rope(1e6, std::nullopt), rope(inf, std::nullopt), "spec.rope.theta");
  add("rope_dims_even", rope(std::nullopt, 4), rope(std::nullopt, 3), "spec.rope.rotary_dims (3)");
  add("rope_dims_positive", rope(std::nullopt, 2), rope(std::nullopt, 0), "spec.rope.rotary_dims");
  add("rope_dims_le_dim", rope(std::nullopt, 8), rope(std::nullopt, 10), "spec.rope.rotary_dims");
  add(
      "alibi_base_only_harmonic",
      [](Problem& p) {
        p.alibi = {true, AlibiSchedule::kHarmonic, 0.5};
      },
      [](Problem& p) {
        p.alibi = {true, AlibiSchedule::kGeometric, 0.5};
      },
      "spec.alibi.harmonic_base_slope");
  add(
      "alibi_base_positive",
      [](Problem& p) {
        p.alibi = {true, AlibiSchedule::kHarmonic, 2.0};
      },
      [](Problem& p) {
        p.alibi = {true, AlibiSchedule::kHarmonic, 0.0};
      },
      "spec.alibi.harmonic_base_slope");
  add(
      "softcap",
      [](Problem& p) {
        p.softcap = {true, 30.0};
      },
      [](Problem& p) {
        p.softcap = {true, 0.0};
      },
      "spec.softcap.cap");
  add(
      "softcap_finite",
      [](Problem& p) {
        p.softcap = {true, 1e-3};
      },
      [](Problem& p) {
        p.softcap = {true, inf};
      },
      "spec.softcap.cap");
  add(
      "scale", [](Problem& p) { p.scale = 2.0; }, [](Problem& p) { p.scale = 0.0; }, "spec.scale");
  add(
      "scale_finite", [](Problem& p) { p.scale = 1e-9; }, [](Problem& p) { p.scale = nan; },
      "spec.scale");
  add(
      "input_scale", [](Problem& p) { p.input_scale = 0.01; },
      [](Problem& p) { p.input_scale = -1.0; }, "spec.input_scale");
  add(
      "input_scale_finite", [](Problem& p) { p.input_scale = 100.0; },
      [](Problem& p) { p.input_scale = inf; }, "spec.input_scale");
  add(
      "d_model_only_layer", [](Problem& p) { Layer(p); }, [](Problem& p) { p.d_model = 32; },
      "spec.d_model");
  add(
      "d_model_required", [](Problem& p) { Layer(p); },
      [](Problem& p) {
        Layer(p);
        p.d_model.reset();
      },
      "spec.d_model");
  add(
      "d_model_positive",
      [](Problem& p) {
        Layer(p);
        p.d_model = 1;
      },
      [](Problem& p) {
        Layer(p);
        p.d_model = 0;
      },
      "spec.d_model");
  auto client_weights = [](Problem& p) {
    p.w_q = Client(DType::kFloat32, {32, 32});
    p.w_k = Client(DType::kFloat32, {32, 32});
    p.w_v = Client(DType::kFloat32, {32, 32});
    p.w_o = Client(DType::kFloat32, {32, 32});
  };
  add(
      "layer_x_only_layer",
      [](Problem& p) {
        Layer(p);
        p.x = Client(DType::kFloat32, {2, 16, 32});
      },
      [](Problem& p) {
        p.x = Client(DType::kFloat32, {2, 16, 32});
      },
      "spec.inputs.x is only valid with spec.scope = SCOPE_LAYER");
  add(
      "layer_weights_only_layer",
      [&](Problem& p) {
        Layer(p);
        client_weights(p);
      },
      [&](Problem& p) { client_weights(p); },
      "spec.inputs.w_q is only valid with spec.scope = SCOPE_LAYER");
  add(
      "layer_weights_all_or_none",
      [&](Problem& p) {
        Layer(p);
        client_weights(p);
        p.x = Client(DType::kFloat32, {2, 16, 32});
      },
      [&](Problem& p) {
        Layer(p);
        client_weights(p);
        p.w_v.reset();
      },
      "spec.inputs must give all of w_q, w_k, w_v and w_o or none (w_q w_k w_o given)");
  add(
      "layer_x_shape",
      [](Problem& p) {
        Layer(p);
        p.x = Client(DType::kFloat32, {2, 16, 32});
      },
      [](Problem& p) {
        Layer(p);
        p.x = Client(DType::kFloat32, {2, 16, 4, 8});
      },
      "spec.inputs.x.shape [2, 16, 4, 8] must be [2, 16, 32] (batch, seq, d_model)");
  add(
      "layer_weight_shape",
      [&](Problem& p) {
        Layer(p);
        client_weights(p);
      },
      [&](Problem& p) {
        Layer(p);
        client_weights(p);
        p.w_o = Client(DType::kFloat32, {32, 16});
      },
      "spec.inputs.w_o.shape [32, 16] must be [32, 32] (H_out * D_v, d_model)");
  add(
      "layer_weight_dtype",
      [&](Problem& p) {
        Layer(p);
        client_weights(p);
      },
      [&](Problem& p) {
        Layer(p);
        client_weights(p);
        p.w_k = Client(DType::kBFloat16, {32, 32});
      },
      "spec.inputs.w_k.dtype (bfloat16) must equal spec.dtype (float32)");
  add(
      "layer_no_client_qkv",
      [](Problem& p) {
        Layer(p);
        p.x = Client(DType::kFloat32, {2, 16, 32});
      },
      [](Problem& p) {
        Layer(p);
        ClientInputs(p);
      },
      "spec.inputs.query, .key and .value must be unset for spec.scope = SCOPE_LAYER");
  add(
      "layer_x_finite",
      [](Problem& p) {
        Layer(p);
        p.x = Client(DType::kFloat32, {2, 16, 32});
      },
      [](Problem& p) {
        Layer(p);
        p.x = Client(DType::kFloat32, {2, 16, 32});
        const float nan = std::numeric_limits<float>::quiet_NaN();
        std::memcpy(p.x->data.data() + 4 * 40, &nan, sizeof(nan));
      },
      "spec.inputs.x: element 40 [0, 1, 8] is NaN");
  add(
      "layer_input_scale_scales_x_only",
      [](Problem& p) {  // a client X leaves nothing for input_scale to overflow
        Layer(p);
        p.dtype = DType::kFloat16;
        p.x = Client(DType::kFloat16, {2, 16, 32});
        p.input_scale = 1e6;
      },
      [](Problem& p) {
        Layer(p);
        p.dtype = DType::kFloat16;
        p.input_scale = 1e6;
      },
      "spec.input_scale");
  add(
      "layer_self_attention",
      [](Problem& p) {
        Layer(p);
        p.seq_len_q = p.seq_len_kv = 9;
      },
      [](Problem& p) {
        Layer(p);
        p.seq_len_q = 9;
      },
      "spec.seq_len_q (9)");
  add(
      "layer_prefill",
      [](Problem& p) {
        Layer(p);
        p.phase = Phase::kPrefill;
      },
      [](Problem& p) {
        Layer(p);
        p.phase = Phase::kDecode;
      },
      "spec.phase");
  add(
      "layer_no_client_tensors", [](Problem& p) { ClientInputs(p); },
      [](Problem& p) {
        ClientInputs(p);
        Layer(p);
      },
      "spec.inputs");
  add(
      "paging_only_decode", [](Problem& p) { Paged(p); },
      [](Problem& p) {
        Paged(p);
        p.phase = Phase::kPrefill;
      },
      "spec.kv_cache.paging");
  add(
      "cache_format_only_decode", [](Problem& p) { p.kv_cache.format = CacheFormat::kNative; },
      [](Problem& p) { p.kv_cache.format = CacheFormat::kInt8; }, "spec.kv_cache.format");
  add(
      "saq_only_decode",
      [](Problem& p) {
        Decode(p);
        p.kv_cache.saq_bands = {{4, CacheFormat::kInt8}};
      },
      [](Problem& p) {
        p.kv_cache.saq_bands = {{4, CacheFormat::kInt8}};
      },
      "spec.kv_cache.saq_bands");
  add(
      "saq_only_decode_backward", [](Problem& p) { p.phase = Phase::kBackward; },
      [](Problem& p) {
        p.phase = Phase::kBackward;
        p.kv_cache.format = CacheFormat::kInt4;
      },
      "spec.kv_cache.format");
  add(
      "decode_q_le_kv",
      [](Problem& p) {
        Decode(p);
        p.seq_len_q = 16;
      },
      [](Problem& p) {
        Decode(p);
        p.seq_len_q = 17;
      },
      "spec.seq_len_q (17)");
  add(
      "page_size",
      [](Problem& p) {
        Paged(p);
        p.kv_cache.page_size_tokens = 100;
      },
      [](Problem& p) {
        Paged(p);
        p.kv_cache.page_size_tokens = 0;
      },
      "spec.kv_cache.paging.page_size_tokens");
  add(
      "page_table_size",
      [](Problem& p) {
        Paged(p);
        p.kv_cache.page_table = {7, 6, 5, 4, 3, 2, 1, 0};
      },
      [](Problem& p) {
        Paged(p);
        p.kv_cache.page_table = {0, 1, 2, 3, 4, 5, 6};
      },
      "spec.kv_cache.paging.page_table");
  add(
      "page_table_range",
      [](Problem& p) {
        Paged(p);
        p.kv_cache.page_table = {1, 0, 2, 3, 4, 5, 6, 7};
      },
      [](Problem& p) {
        Paged(p);
        p.kv_cache.page_table = {0, 1, 2, 3, 4, 5, 6, 8};
      },
      "spec.kv_cache.paging.page_table[7] (8)");
  add(
      "page_table_permutation",
      [](Problem& p) {
        Paged(p);
        p.kv_cache.page_table = {3, 1, 2, 0, 4, 5, 6, 7};
      },
      [](Problem& p) {
        Paged(p);
        p.kv_cache.page_table = {0, 1, 2, 3, 4, 5, 6, 3};
      },
      "spec.kv_cache.paging.page_table[7] (3)");
  add(
      "saq_format",
      [](Problem& p) {
        Decode(p);
        p.kv_cache.saq_bands = {{4, CacheFormat::kNative}};
      },
      [](Problem& p) {
        Decode(p);
        p.kv_cache.saq_bands = {{4, CacheFormat::kUnspecified}};
      },
      "spec.kv_cache.saq_bands[0].format");
  add(
      "saq_tokens",
      [](Problem& p) {
        Decode(p);
        p.kv_cache.saq_bands = {{1, CacheFormat::kInt4}};
      },
      [](Problem& p) {
        Decode(p);
        p.kv_cache.saq_bands = {{4, CacheFormat::kInt8}, {0, CacheFormat::kInt4}};
      },
      "spec.kv_cache.saq_bands[1].num_tokens");
  add(
      "saq_unset_last_only",
      [](Problem& p) {
        Decode(p);
        p.kv_cache.saq_bands = {{4, CacheFormat::kInt8}, {std::nullopt, CacheFormat::kInt4}};
      },
      [](Problem& p) {
        Decode(p);
        p.kv_cache.saq_bands = {{std::nullopt, CacheFormat::kInt8}, {4, CacheFormat::kInt4}};
      },
      "spec.kv_cache.saq_bands[0].num_tokens");
  add(
      "saq_format_unspecified",
      [](Problem& p) {
        Decode(p);
        p.kv_cache.saq_bands = {{4, CacheFormat::kInt8}};
      },
      [](Problem& p) {
        Decode(p);
        p.kv_cache.format = CacheFormat::kInt8;
        p.kv_cache.saq_bands = {{4, CacheFormat::kInt8}};
      },
      "spec.kv_cache.format");
  add(
      "client_all_or_none", [](Problem& p) { ClientInputs(p); },
      [](Problem& p) {
        ClientInputs(p);
        p.value.reset();
      },
      "spec.inputs");
  add(
      "client_dtype", [](Problem& p) { ClientInputs(p); },
      [](Problem& p) {
        ClientInputs(p);
        p.key = Client(DType::kFloat16, {2, 16, 4, 8});
      },
      "spec.inputs.key.dtype");
  add(
      "client_shape",
      [](Problem& p) {
        p.head_dim_v = 3;
        ClientInputs(p);
        p.value = Client(DType::kFloat32, {2, 16, 4, 3});
      },
      [](Problem& p) {
        ClientInputs(p);
        p.value = Client(DType::kFloat32, {2, 16, 4, 3});
      },
      "spec.inputs.value.shape");
  add(
      "client_shape_resolved_heads",
      [](Problem& p) {
        gqa(4, 2)(p);
        ClientInputs(p);
        p.key = Client(DType::kFloat32, {2, 16, 2, 8});
        p.value = Client(DType::kFloat32, {2, 16, 2, 8});
      },
      [](Problem& p) {
        gqa(4, 2)(p);
        ClientInputs(p);
      },
      "spec.inputs.key.shape");
  // PHASE_BACKWARD's dO [B, S_q, H_out, D_v] (SmallProblem: [2, 16, 4, 8]) and timing.
  static constexpr auto backward = [](Problem& p) { p.phase = Phase::kBackward; };
  add(
      "grad_output_only_backward",
      [](Problem& p) {
        backward(p);
        p.grad_output = Client(DType::kFloat32, {2, 16, 4, 8});
      },
      [](Problem& p) {
        p.grad_output = Client(DType::kFloat32, {2, 16, 4, 8});
      },
      "spec.inputs.grad_output is only valid with spec.phase = PHASE_BACKWARD");
  add(
      "grad_output_with_client_qkv",
      [](Problem& p) {
        backward(p);
        ClientInputs(p);
        p.grad_output = Client(DType::kFloat32, {2, 16, 4, 8});
      },
      [](Problem& p) {
        backward(p);
        ClientInputs(p);
        p.grad_output = Client(DType::kFloat32, {2, 16, 4, 9});
      },
      "spec.inputs.grad_output.shape [2, 16, 4, 9] must be [2, 16, 4, 8]");
  add(
      "grad_output_shape_is_the_outputs",
      [](Problem& p) {
        backward(p);
        gqa(4, 2)(p);
        p.head_dim_v = 3;
        p.grad_output = Client(DType::kFloat32, {2, 16, 4, 3});
      },
      [](Problem& p) {
        backward(p);
        gqa(4, 2)(p);
        p.head_dim_v = 3;
        p.grad_output = Client(DType::kFloat32, {2, 16, 2, 3});  // H_kv heads, not H_out
      },
      "spec.inputs.grad_output.shape");
  add(
      "grad_output_dtype",
      [](Problem& p) {
        backward(p);
        p.dtype = DType::kBFloat16;
        p.grad_output = Client(DType::kBFloat16, {2, 16, 4, 8});
      },
      [](Problem& p) {
        backward(p);
        p.dtype = DType::kBFloat16;
        p.grad_output = Client(DType::kFloat16, {2, 16, 4, 8});
      },
      "spec.inputs.grad_output.dtype");
  add(
      "grad_output_data_size",
      [](Problem& p) {
        backward(p);
        p.grad_output = Client(DType::kFloat32, {2, 16, 4, 8});
      },
      [](Problem& p) {
        backward(p);
        p.grad_output = Client(DType::kFloat32, {2, 16, 4, 8});
        p.grad_output->data.pop_back();
      },
      "spec.inputs.grad_output.data");
  add(
      "training_step_only_backward",
      [](Problem& p) {
        backward(p);
        p.training_step = true;
      },
      [](Problem& p) { p.training_step = true; }, "measurement.backward_timing");
  // SCOPE_LAYER's backward: dY has Y's shape [B, S, d_model], not the core's dO's.
  add(
      "layer_backward_grad_output_shape",
      [](Problem& p) {
        backward(p);
        Layer(p);
        p.grad_output = Client(DType::kFloat32, {2, 16, 32});
      },
      [](Problem& p) {
        backward(p);
        Layer(p);
        p.grad_output = Client(DType::kFloat32, {2, 16, 4, 8});  // the core's dO
      },
      "spec.inputs.grad_output.shape [2, 16, 4, 8] must be [2, 16, 32] (batch, seq, d_model");
  add(
      "layer_backward_grad_output_finite",
      [](Problem& p) {
        backward(p);
        Layer(p);
        p.grad_output = Client(DType::kFloat32, {2, 16, 32});
      },
      [](Problem& p) {
        backward(p);
        Layer(p);
        p.grad_output = Client(DType::kFloat32, {2, 16, 32});
        const float inf = std::numeric_limits<float>::infinity();
        std::memcpy(p.grad_output->data.data() + 4 * 33, &inf, sizeof(inf));
      },
      "spec.inputs.grad_output: element 33");
  add(
      "layer_backward_self_attention",
      [](Problem& p) {
        backward(p);
        Layer(p);
        p.seq_len_q = p.seq_len_kv = 9;
      },
      [](Problem& p) {
        backward(p);
        Layer(p);
        p.seq_len_q = 9;
      },
      "spec.seq_len_q (9) must equal spec.seq_len_kv (16) for spec.scope = SCOPE_LAYER");
  add(
      "layer_phase_prefill_or_backward",
      [](Problem& p) {
        backward(p);
        Layer(p);
      },
      [](Problem& p) {
        Layer(p);
        Decode(p);
        p.seq_len_kv = p.seq_len_q;
      },
      "spec.phase must be PHASE_PREFILL or PHASE_BACKWARD for spec.scope = SCOPE_LAYER");
  add(
      "layer_backward_input_scale_scales_dy",
      [](Problem& p) {  // a client X and dY leave nothing for input_scale to overflow
        backward(p);
        Layer(p);
        p.dtype = DType::kFloat16;
        p.x = Client(DType::kFloat16, {2, 16, 32});
        p.grad_output = Client(DType::kFloat16, {2, 16, 32});
        p.input_scale = 1e6;
      },
      [](Problem& p) {  // a generated dY would overflow float16
        backward(p);
        Layer(p);
        p.dtype = DType::kFloat16;
        p.x = Client(DType::kFloat16, {2, 16, 32});
        p.input_scale = 1e6;
      },
      "spec.input_scale");
  add(
      "layer_backward_no_client_qkv",
      [](Problem& p) {
        backward(p);
        Layer(p);
      },
      [](Problem& p) {
        backward(p);
        ClientInputs(p);
        Layer(p);
      },
      "spec.inputs.query, .key and .value must be unset for spec.scope = SCOPE_LAYER");
  add(
      "backward_no_decode_cache", [](Problem& p) { backward(p); },
      [](Problem& p) {
        backward(p);
        Paged(p);
        p.phase = Phase::kBackward;
      },
      "spec.kv_cache.paging is only valid with spec.phase = PHASE_DECODE");
  // §1b: FP8's scales, its output dtype, and where it is defined.
  auto fp8 = [](Problem& p) { p.dtype = DType::kFloat8E4M3; };
  add(
      "fp8_prefill_only", fp8,
      [&](Problem& p) {
        fp8(p);
        backward(p);
      },
      "spec.dtype DTYPE_FLOAT8_E4M3 is defined for PHASE_PREFILL at SCOPE_CORE");
  add(
      "fp8_core_only", fp8,
      [&](Problem& p) {
        fp8(p);
        Layer(p);
      },
      "spec.dtype DTYPE_FLOAT8_E4M3 is defined for PHASE_PREFILL at SCOPE_CORE");
  add(
      "fp8_output_bf16",
      [&](Problem& p) {
        fp8(p);
        p.output_dtype = DType::kBFloat16;
      },
      [&](Problem& p) {
        fp8(p);
        p.output_dtype = DType::kFloat32;
      },
      "spec.output_dtype (float32) must be bfloat16");
  add(
      "output_dtype_is_the_dtype", [](Problem& p) { p.output_dtype = p.dtype; },
      [](Problem& p) {
        p.dtype = DType::kFloat16;
        p.output_dtype = DType::kBFloat16;
      },
      "spec.output_dtype (bfloat16) must be float16");
  add(
      "fp8_scales_per_head",
      [&](Problem& p) {
        fp8(p);
        p.float8.granularity = ScaleGranularity::kHead;
        p.float8.value_scales.assign(ResolveHeads(p.layout)->num_kv_heads, 0.5f);
      },
      [&](Problem& p) {
        fp8(p);
        p.float8.granularity = ScaleGranularity::kHead;
        p.float8.value_scales.assign(ResolveHeads(p.layout)->num_kv_heads + 1, 0.5f);
      },
      "spec.float8.value_scales has");
  add(
      "fp8_scale_finite",
      [&](Problem& p) {
        fp8(p);
        p.float8.query_scales = {7e35f};
      },
      [&](Problem& p) {
        fp8(p);
        p.float8.query_scales = {8e35f};
      },
      "spec.float8.query_scales[0]");
  add(
      "float8_needs_fp8", fp8, [](Problem& p) { p.float8.key_scales = {1.0f}; },
      "spec.float8 is only valid with spec.dtype DTYPE_FLOAT8_E4M3");
  add(
      "client_data_size", [](Problem& p) { ClientInputs(p); },
      [](Problem& p) {
        ClientInputs(p);
        p.query->data.pop_back();
      },
      "spec.inputs.query.data");
  return r;
}

void PrintTo(const Rule& rule, std::ostream* os) { *os << rule.name; }

class ValidationRuleTest : public ::testing::TestWithParam<Rule> {};

TEST_P(ValidationRuleTest, ValidPassesInvalidNamesTheField) {
  const Rule& rule = GetParam();
  Problem valid = SmallProblem();
  rule.valid(valid);
  const absl::Status ok = ValidateProblem(NormalizeProblem(valid));
  EXPECT_TRUE(ok.ok()) << ok;

  Problem invalid = SmallProblem();
  rule.invalid(invalid);
  const absl::Status bad = ValidateProblem(NormalizeProblem(invalid));
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument) << bad;
  EXPECT_NE(bad.message().find(rule.field), std::string::npos)
      << "message \"" << bad.message() << "\" does not name " << rule.field;
}

INSTANTIATE_TEST_SUITE_P(AllRules, ValidationRuleTest, ::testing::ValuesIn(Rules()),
                         [](const ::testing::TestParamInfo<Rule>& info) {
                           return info.param.name;
                         });

TEST(ValidationTest, MessagesCarryTheRuleAndValues) {
  Problem p = SmallProblem();
  SetLayout(p, LayoutKind::kGqa);
  p.layout.num_query_heads = 32;
  p.layout.num_kv_heads = 5;
  EXPECT_EQ(ValidateProblem(NormalizeProblem(p)).message(),
            "spec.layout.gqa.num_query_heads (32) must be a multiple of "
            "spec.layout.gqa.num_kv_heads (5)");
}

// Found by tests/fuzz: a client shape of 100k dimensions was written out in full, and a status
// message that long breaks the gRPC connection it travels on.
TEST(ValidationTest, LongClientShapesAreAbbreviated) {
  Problem p = SmallProblem();
  ClientInputs(p);
  p.query->shape.assign(100000, int64_t{1} << 40);
  const absl::Status s = ValidateProblem(NormalizeProblem(p));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("spec.inputs.query.shape"), std::string::npos) << s;
  EXPECT_NE(s.message().find("(100000 dimensions)"), std::string::npos) << s;
  EXPECT_LT(s.message().size(), 400u) << s;
}

// Sizes near INT64_MAX must be refused, not overflow on the way (UBSan in the asan preset).
TEST(ValidationTest, ExtremeSizesAreRefusedWithoutOverflow) {
  const int64_t big = std::numeric_limits<int64_t>::max();
  for (auto edit :
       std::vector<std::function<void(Problem&)>>{[&](Problem& p) {
                                                    p.seq_len_q = big;
                                                    p.seq_len_kv = big;
                                                  },
                                                  [&](Problem& p) { p.batch_size = big; },
                                                  [&](Problem& p) {
                                                    p.seq_len_kv = big;
                                                    p.phase = Phase::kDecode;
                                                  },
                                                  [&](Problem& p) {
                                                    p.mask.kind = MaskKind::kBlockSparse;
                                                    p.mask.query_block_tokens = big;
                                                    p.mask.kv_block_tokens = big;
                                                    p.seq_len_q = big;
                                                  }}) {
    Problem p = SmallProblem();
    edit(p);
    const absl::Status s = ValidateProblem(NormalizeProblem(p));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  }
}

TEST(ValidationTest, SmallProblemIsValid) {
  EXPECT_TRUE(ValidateProblem(NormalizeProblem(SmallProblem())).ok());
}

// Head maps against hand-written expectations (§2).
HeadConfig Resolve(std::function<void(HeadLayout&)> edit) {
  HeadLayout l;
  edit(l);
  absl::StatusOr<HeadConfig> c = ResolveHeads(l);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : HeadConfig{};
}

void ExpectHeads(const HeadConfig& c, int hq, int hkv, int hout, int baseline,
                 std::vector<HeadPair> map) {
  EXPECT_EQ(c.num_query_heads, hq);
  EXPECT_EQ(c.num_kv_heads, hkv);
  EXPECT_EQ(c.num_output_heads, hout);
  EXPECT_EQ(c.baseline_heads, baseline);
  EXPECT_EQ(c.map, map);
}

TEST(ResolveHeadsTest, EveryLayout) {
  ExpectHeads(Resolve([](HeadLayout& l) {
                l.kind = LayoutKind::kMha;
                l.num_heads = 3;
              }),
              3, 3, 3, 3, {{0, 0}, {1, 1}, {2, 2}});
  ExpectHeads(Resolve([](HeadLayout& l) {
                l.kind = LayoutKind::kMqa;
                l.num_heads = 3;
              }),
              3, 1, 3, 3, {{0, 0}, {1, 0}, {2, 0}});
  ExpectHeads(Resolve([](HeadLayout& l) {
                l.kind = LayoutKind::kGqa;
                l.num_query_heads = 6;
                l.num_kv_heads = 2;
              }),
              6, 2, 6, 6, {{0, 0}, {1, 0}, {2, 0}, {3, 1}, {4, 1}, {5, 1}});
  ExpectHeads(Resolve([](HeadLayout& l) {
                l.kind = LayoutKind::kSqa;
                l.baseline_heads = 8;
                l.num_query_heads = 4;
                l.num_kv_heads = 2;
              }),
              4, 2, 4, 8, {{0, 0}, {1, 0}, {2, 1}, {3, 1}});
  ExpectHeads(Resolve([](HeadLayout& l) {
                l.kind = LayoutKind::kSymmetricSqa;
                l.baseline_heads = 6;
              }),
              3, 3, 3, 6, {{0, 0}, {1, 1}, {2, 2}});
  ExpectHeads(Resolve([](HeadLayout& l) {
                l.kind = LayoutKind::kExtremeSqa;
                l.baseline_heads = 8;
              }),
              2, 2, 2, 8, {{0, 0}, {1, 1}});
  ExpectHeads(Resolve([](HeadLayout& l) {
                l.kind = LayoutKind::kExtremeSqa;
                l.baseline_heads = 16;
                l.extreme_query_heads = 3;
              }),
              3, 3, 3, 16, {{0, 0}, {1, 1}, {2, 2}});
  ExpectHeads(Resolve([](HeadLayout& l) {
                l.kind = LayoutKind::kGqkva;
                l.query_groups = 2;
                l.kv_groups = 3;
              }),
              2, 3, 6, 2, {{0, 0}, {0, 1}, {0, 2}, {1, 0}, {1, 1}, {1, 2}});
  ExpectHeads(Resolve([](HeadLayout& l) {
                l.kind = LayoutKind::kExplicit;
                l.num_query_heads = 4;
                l.num_kv_heads = 2;
                l.pairs = {{3, 1}, {3, 0}, {0, 1}};
              }),
              4, 2, 3, 4, {{3, 1}, {3, 0}, {0, 1}});
}

TEST(ResolveHeadsTest, RejectsInvalidLayouts) {
  HeadLayout l;
  l.kind = LayoutKind::kGqa;
  l.num_query_heads = 6;
  l.num_kv_heads = 4;
  EXPECT_EQ(ResolveHeads(l).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ResolveHeads(HeadLayout{}).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace attnbench
