// The GPU backends' test cases (kernel_cases.h).
#include "tests/kernels/kernel_cases.h"

#include <optional>

namespace attnbench::testing {
namespace {

void Layout(Problem& p, LayoutKind kind) {
  p.layout = {};
  p.layout.kind = kind;
}

}  // namespace

Problem GpuBaseProblem() {
  Problem p;
  p.batch_size = 2;
  p.seq_len_q = 77;
  p.seq_len_kv = 131;
  p.head_dim_qk = 64;
  p.layout.kind = LayoutKind::kGqa;
  p.layout.num_query_heads = 6;
  p.layout.num_kv_heads = 2;
  p.dtype = DType::kBFloat16;
  return p;
}

std::vector<KernelCase> GpuKernelCases() {
  std::vector<KernelCase> c;
  c.push_back({"gqa_none", [](Problem&) {}});
  c.push_back({"mha_causal", [](Problem& p) {
                 Layout(p, LayoutKind::kMha);
                 p.layout.num_heads = 3;
                 p.mask.kind = MaskKind::kCausal;
               }});
  c.push_back({"mqa_square_causal", [](Problem& p) {
                 Layout(p, LayoutKind::kMqa);
                 p.layout.num_heads = 5;
                 p.seq_len_q = p.seq_len_kv = 200;
                 p.mask.kind = MaskKind::kCausal;
               }});
  c.push_back({"sqa", [](Problem& p) {
                 Layout(p, LayoutKind::kSqa);
                 p.layout.baseline_heads = 8;
                 p.layout.num_query_heads = 4;
                 p.layout.num_kv_heads = 2;
               }});
  c.push_back({"symmetric_sqa", [](Problem& p) {
                 Layout(p, LayoutKind::kSymmetricSqa);
                 p.layout.baseline_heads = 6;
               }});
  c.push_back({"extreme_sqa", [](Problem& p) {
                 Layout(p, LayoutKind::kExtremeSqa);
                 p.layout.baseline_heads = 12;
                 p.mask.kind = MaskKind::kCausal;
               }});
  c.push_back({"gqkva_2x3", [](Problem& p) {
                 Layout(p, LayoutKind::kGqkva);
                 p.layout.query_groups = 2;
                 p.layout.kv_groups = 3;
                 p.mask.kind = MaskKind::kCausal;
               }});
  c.push_back({"explicit_map", [](Problem& p) {
                 Layout(p, LayoutKind::kExplicit);
                 p.layout.num_query_heads = 5;
                 p.layout.num_kv_heads = 3;
                 p.layout.pairs = {{4, 0}, {4, 2}, {0, 2}, {2, 1}, {2, 1}};
               }});
  c.push_back({"causal_more_queries_than_keys", [](Problem& p) {
                 p.seq_len_q = 150;  // the first 19 rows see no key: zeros
                 p.mask.kind = MaskKind::kCausal;
               }});
  c.push_back({"window", [](Problem& p) {
                 p.mask.kind = MaskKind::kSlidingWindow;
                 p.mask.left_tokens = 17;
                 p.mask.right_tokens = 5;
               }});
  c.push_back({"window_causal_long", [](Problem& p) {
                 p.seq_len_q = 300;
                 p.seq_len_kv = 700;
                 p.mask.kind = MaskKind::kSlidingWindow;
                 p.mask.left_tokens = 70;
                 p.mask.right_tokens = 0;
               }});
  c.push_back({"window_left_only", [](Problem& p) {
                 p.mask.kind = MaskKind::kSlidingWindow;
                 p.mask.left_tokens = 40;
               }});
  c.push_back({"block_sparse_causal", [](Problem& p) {
                 p.mask.kind = MaskKind::kBlockSparse;
                 p.mask.query_block_tokens = 16;
                 p.mask.kv_block_tokens = 32;
                 p.mask.blocks = {{0, 0}, {0, 3}, {1, 1}, {2, 2}, {4, 0}, {4, 4}, {3, 2}};
                 p.mask.intersect_causal = true;
               }});
  c.push_back({"block_sparse", [](Problem& p) {
                 p.mask.kind = MaskKind::kBlockSparse;
                 p.mask.query_block_tokens = 64;
                 p.mask.kv_block_tokens = 64;
                 p.mask.blocks = {{0, 1}, {1, 0}, {1, 2}};
               }});
  c.push_back({"probabilistic", [](Problem& p) {
                 p.mask.kind = MaskKind::kProbabilisticBlockSparse;
                 p.mask.query_block_tokens = 16;
                 p.mask.kv_block_tokens = 16;
                 p.mask.c_coefficient = 0.7;
                 p.mask.alpha = 0.8;
                 p.mask.seed = 31;
               }});
  c.push_back({"rope_partial", [](Problem& p) { p.rope = {true, 500.0, 32}; }});
  c.push_back({"alibi_geometric_causal", [](Problem& p) {
                 p.alibi = {true, AlibiSchedule::kGeometric, std::nullopt};
                 p.mask.kind = MaskKind::kCausal;
               }});
  c.push_back({"alibi_harmonic", [](Problem& p) {
                 p.alibi = {true, AlibiSchedule::kHarmonic, 0.3};
               }});
  c.push_back({"softcap", [](Problem& p) {
                 p.softcap = {true, 1.5};
                 p.input_scale = 3.0;
               }});
  c.push_back({"rope_alibi_softcap_causal", [](Problem& p) {
                 p.rope.enabled = true;
                 p.alibi.enabled = true;
                 p.softcap = {true, 2.5};
                 p.mask.kind = MaskKind::kCausal;
               }});
  c.push_back({"dim80_padded", [](Problem& p) { p.head_dim_qk = 80; }});
  // The small head dims of their own tiles (16: 32-byte swizzled panels; 32: 64-byte), and dims
  // that pad to them, over several K/V tiles.
  c.push_back({"dim16_causal_long", [](Problem& p) {
                 Layout(p, LayoutKind::kMha);
                 p.layout.num_heads = 4;
                 p.head_dim_qk = 16;
                 p.seq_len_q = p.seq_len_kv = 300;
                 p.mask.kind = MaskKind::kCausal;
               }});
  c.push_back({"dim16_sqa_rope", [](Problem& p) {
                 Layout(p, LayoutKind::kSqa);
                 p.layout.baseline_heads = 16;
                 p.layout.num_query_heads = 8;
                 p.layout.num_kv_heads = 4;
                 p.head_dim_qk = 16;
                 p.seq_len_kv = 333;
                 p.rope.enabled = true;
               }});
  c.push_back({"dim32_window_alibi_long", [](Problem& p) {
                 p.head_dim_qk = 32;
                 p.seq_len_q = 333;
                 p.seq_len_kv = 700;
                 p.mask.kind = MaskKind::kSlidingWindow;
                 p.mask.left_tokens = 150;
                 p.mask.right_tokens = 20;
                 p.alibi = {true, AlibiSchedule::kGeometric, std::nullopt};
               }});
  c.push_back({"dim32_block_sparse_softcap", [](Problem& p) {
                 p.head_dim_qk = 32;
                 p.seq_len_q = 256;
                 p.seq_len_kv = 400;
                 p.mask.kind = MaskKind::kBlockSparse;
                 p.mask.query_block_tokens = 64;
                 p.mask.kv_block_tokens = 64;
                 p.mask.blocks = {{0, 0}, {0, 5}, {1, 2}, {2, 3}, {3, 1}, {3, 6}};
                 p.softcap = {true, 3.0};
               }});
  c.push_back({"dim24_padded_rope", [](Problem& p) {
                 p.head_dim_qk = 24;
                 p.rope.enabled = true;
               }});
  c.push_back({"dim16_v32", [](Problem& p) {
                 p.head_dim_qk = 16;
                 p.head_dim_v = 32;
               }});
  c.push_back({"dim96_rope_causal", [](Problem& p) {
                 p.head_dim_qk = 96;
                 p.rope.enabled = true;
                 p.mask.kind = MaskKind::kCausal;
               }});
  c.push_back({"dim128_causal", [](Problem& p) {
                 p.head_dim_qk = 128;
                 p.mask.kind = MaskKind::kCausal;
               }});
  // Several 128-key tiles at D = 128 and 64: on an H100 these run cuda_flash's wgmma/TMA path
  // (kernels/cuda/flash/kernel_sm90.cuh) through its multi-stage pipeline and tile edges.
  c.push_back({"dim128_gqa_long", [](Problem& p) {
                 p.head_dim_qk = 128;
                 p.seq_len_q = 333;
                 p.seq_len_kv = 1029;
               }});
  c.push_back({"dim64_causal_long", [](Problem& p) {
                 Layout(p, LayoutKind::kMha);
                 p.layout.num_heads = 2;
                 p.seq_len_q = p.seq_len_kv = 1100;
                 p.mask.kind = MaskKind::kCausal;
               }});
  c.push_back({"dim192_v128", [](Problem& p) {
                 p.head_dim_qk = 192;
                 p.head_dim_v = 128;
               }});
  c.push_back({"dim256_rope", [](Problem& p) {
                 p.head_dim_qk = 256;
                 p.rope.enabled = true;
               }});
  // Every Hopper tile row over several tiles, with each mask and modifier policy somewhere.
  c.push_back({"dim192_alibi_causal_long", [](Problem& p) {
                 p.head_dim_qk = 192;
                 p.seq_len_q = p.seq_len_kv = 400;
                 p.mask.kind = MaskKind::kCausal;
                 p.alibi = {true, AlibiSchedule::kGeometric, std::nullopt};
               }});
  c.push_back({"dim256_window_softcap_long", [](Problem& p) {
                 p.head_dim_qk = 256;
                 p.seq_len_q = 300;
                 p.seq_len_kv = 700;
                 p.mask.kind = MaskKind::kSlidingWindow;
                 p.mask.left_tokens = 200;
                 p.mask.right_tokens = 30;
                 p.softcap = {true, 4.0};
               }});
  c.push_back({"dim96_block_sparse_causal_long", [](Problem& p) {
                 p.head_dim_qk = 96;
                 p.seq_len_q = 513;
                 p.seq_len_kv = 640;
                 p.mask.kind = MaskKind::kBlockSparse;
                 p.mask.query_block_tokens = 128;
                 p.mask.kv_block_tokens = 128;
                 p.mask.blocks = {{0, 0}, {0, 3}, {1, 1}, {2, 4}, {3, 0}, {3, 2}, {4, 4}};
                 p.mask.intersect_causal = true;
               }});
  c.push_back({"dim128_probabilistic_rope_long", [](Problem& p) {
                 p.head_dim_qk = 128;
                 p.seq_len_q = p.seq_len_kv = 700;
                 p.mask.kind = MaskKind::kProbabilisticBlockSparse;
                 p.mask.query_block_tokens = 64;
                 p.mask.kv_block_tokens = 64;
                 p.mask.c_coefficient = 0.6;
                 p.mask.alpha = 0.5;
                 p.mask.seed = 77;
                 p.rope.enabled = true;
               }});
  c.push_back({"rope_queries_before_keys_causal", [](Problem& p) {
                 p.seq_len_q = 300;  // S_q > S_kv: the first queries sit at negative positions
                 p.rope.enabled = true;
                 p.mask.kind = MaskKind::kCausal;
               }});
  c.push_back({"dim72_padded_alibi_harmonic", [](Problem& p) {
                 p.head_dim_qk = 72;
                 p.alibi = {true, AlibiSchedule::kHarmonic, 0.5};
               }});
  c.push_back({"gqkva_rope_alibi_softcap_window", [](Problem& p) {
                 Layout(p, LayoutKind::kGqkva);
                 p.layout.query_groups = 2;
                 p.layout.kv_groups = 3;
                 p.head_dim_qk = 128;
                 p.seq_len_q = 200;
                 p.seq_len_kv = 450;
                 p.mask.kind = MaskKind::kSlidingWindow;
                 p.mask.left_tokens = 150;
                 p.rope.enabled = true;
                 p.alibi.enabled = true;
                 p.softcap = {true, 3.0};
               }});
  c.push_back({"decode", [](Problem& p) {
                 p.phase = Phase::kDecode;
                 p.seq_len_q = 4;
                 p.seq_len_kv = 1000;
                 p.mask.kind = MaskKind::kCausal;
                 p.rope.enabled = true;
               }});
  c.push_back({"decode_single_token", [](Problem& p) {
                 p.phase = Phase::kDecode;
                 p.seq_len_q = 1;
                 p.seq_len_kv = 777;
               }});
  return c;
}

Problem GpuCaseProblem(int index, DType dtype) {
  Problem p = GpuBaseProblem();
  GpuKernelCases()[index].edit(p);
  p.dtype = dtype;
  p.seed = 1000 + index * 7 + static_cast<int>(dtype);
  return p;
}

std::vector<CacheFormatCase> QuantizedCacheCases() {
  return {
      {"int8", [](KvCache& c) { c.format = CacheFormat::kInt8; }},
      {"int4", [](KvCache& c) { c.format = CacheFormat::kInt4; }},
      {"saq",
       [](KvCache& c) {
         c.saq_bands = {{40, CacheFormat::kNative},
                        {100, CacheFormat::kInt8},
                        {std::nullopt, CacheFormat::kInt4}};
       }},
      {"saq_short_bands",
       [](KvCache& c) {
         c.saq_bands = {{17, CacheFormat::kInt4}, {50, CacheFormat::kInt8}};  // rest native
       }},
  };
}

}  // namespace attnbench::testing
