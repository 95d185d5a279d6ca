#include "tests/kernels/backward_cases.h"

#include "tests/kernels/test_util.h"

namespace attnbench::testing {

void SetLayout(Problem& p, LayoutKind kind) {
  p.layout = {};
  p.layout.kind = kind;
}
void SetMha(Problem& p, int heads) {
  SetLayout(p, LayoutKind::kMha);
  p.layout.num_heads = heads;
}
void SetSqa(Problem& p, int baseline, int query_heads, int kv_heads) {
  SetLayout(p, LayoutKind::kSqa);
  p.layout.baseline_heads = baseline;
  p.layout.num_query_heads = query_heads;
  p.layout.num_kv_heads = kv_heads;
}
void SetWindow(Problem& p, std::optional<int64_t> left, std::optional<int64_t> right) {
  p.mask.kind = MaskKind::kSlidingWindow;
  p.mask.left_tokens = left;
  p.mask.right_tokens = right;
}
void SetAllModifiers(Problem& p) {
  p.mask.kind = MaskKind::kCausal;
  p.rope = {true, std::nullopt, std::nullopt};
  p.alibi = {true, AlibiSchedule::kGeometric, std::nullopt};
  p.softcap = {true, 2.5};
}
void SetLong(Problem& p) {
  p.seq_len_q = 150;
  p.seq_len_kv = 170;
  p.head_dim_qk = 24;
  p.head_dim_v = 16;
}

void SetLongerGqa(Problem& p) {
  p.batch_size = 1;
  p.seq_len_q = 300;
  p.seq_len_kv = 433;
  p.head_dim_qk = 128;
  p.head_dim_v = 128;
  p.layout.num_query_heads = 8;
  p.layout.num_kv_heads = 2;
  p.mask.kind = MaskKind::kCausal;
  p.rope.enabled = true;
  p.dtype = DType::kBFloat16;
  p.seed = 4242;
}

std::vector<BackwardCase> BackwardVariantCases() {
  std::vector<BackwardCase> c;
  // Layouts (§2): dK, dV summed over the heads sharing a kv head, dQ over those sharing a query
  // head (GQKVA, explicit maps).
  c.push_back({"mha", [](Problem& p) {
                 SetLayout(p, LayoutKind::kMha);
                 p.layout.num_heads = 3;
               }});
  c.push_back({"mqa", [](Problem& p) {
                 SetLayout(p, LayoutKind::kMqa);
                 p.layout.num_heads = 6;
                 p.mask.kind = MaskKind::kCausal;
               }});
  c.push_back({"gqa", [](Problem& p) { p.mask.kind = MaskKind::kCausal; }});
  c.push_back({"sqa", [](Problem& p) {
                 SetLayout(p, LayoutKind::kSqa);
                 p.layout.baseline_heads = 8;
                 p.layout.num_query_heads = 6;
                 p.layout.num_kv_heads = 3;
                 p.mask.kind = MaskKind::kCausal;
               }});
  c.push_back({"symmetric_sqa", [](Problem& p) {
                 SetLayout(p, LayoutKind::kSymmetricSqa);
                 p.layout.baseline_heads = 6;
               }});
  c.push_back({"extreme_sqa", [](Problem& p) {
                 SetLayout(p, LayoutKind::kExtremeSqa);
                 p.layout.baseline_heads = 16;
                 p.layout.extreme_query_heads = 3;
                 p.mask.kind = MaskKind::kCausal;
               }});
  c.push_back({"gqkva", [](Problem& p) {
                 SetLayout(p, LayoutKind::kGqkva);
                 p.layout.query_groups = 2;
                 p.layout.kv_groups = 3;
                 p.mask.kind = MaskKind::kCausal;
               }});
  c.push_back({"explicit_map", [](Problem& p) {
                 SetLayout(p, LayoutKind::kExplicit);
                 p.layout.num_query_heads = 5;
                 p.layout.num_kv_heads = 3;
                 // Query head 4 read twice, kv head 1 twice by the same query head, query heads 1
                 // and 3 never (their dQ must be written as zeros).
                 p.layout.pairs = {{4, 0}, {4, 2}, {0, 2}, {2, 1}, {2, 1}};
               }});
  // Masks (§3), bottom-right aligned.
  c.push_back({"none", [](Problem& p) {}});
  c.push_back({"causal_more_queries_than_keys", [](Problem& p) {
                 p.seq_len_q = 53;
                 p.seq_len_kv = 37;  // queries 0..15 see no key: no gradient from them
                 p.mask.kind = MaskKind::kCausal;
               }});
  c.push_back({"window", [](Problem& p) { SetWindow(p, 5, 2); }});
  c.push_back({"window_right_only", [](Problem& p) { SetWindow(p, std::nullopt, 3); }});
  c.push_back({"block_sparse", [](Problem& p) {
                 p.mask.kind = MaskKind::kBlockSparse;
                 p.mask.query_block_tokens = 8;
                 p.mask.kv_block_tokens = 16;
                 p.mask.blocks = {{0, 0}, {0, 3}, {1, 1}, {2, 2}, {4, 0}, {4, 3}};
               }});
  c.push_back({"block_sparse_causal", [](Problem& p) {
                 p.mask.kind = MaskKind::kBlockSparse;
                 p.mask.query_block_tokens = 5;
                 p.mask.kv_block_tokens = 7;
                 p.mask.blocks = {{0, 2}, {0, 3}, {1, 0}, {3, 4}, {7, 7}, {7, 1}, {6, 6}};
                 p.mask.intersect_causal = true;
               }});
  c.push_back({"probabilistic", [](Problem& p) {
                 p.mask.kind = MaskKind::kProbabilisticBlockSparse;
                 p.mask.query_block_tokens = 4;
                 p.mask.kv_block_tokens = 6;
                 p.mask.c_coefficient = 0.6;
                 p.mask.alpha = 0.8;
                 p.mask.seed = 31;
               }});
  // Modifiers (§4) and their combinations: RoPE's transpose on dQ and dK, ALiBi without a
  // gradient, the softcap's tanh derivative.
  c.push_back({"rope", [](Problem& p) { p.rope.enabled = true; }});
  c.push_back({"rope_partial", [](Problem& p) { p.rope = {true, 500.0, 16}; }});
  c.push_back({"rope_more_queries_than_keys", [](Problem& p) {
                 p.seq_len_q = 53;  // queries at negative positions
                 p.seq_len_kv = 37;
                 p.rope.enabled = true;
               }});
  c.push_back({"alibi_geometric", [](Problem& p) {
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
  c.push_back({"scale", [](Problem& p) { p.scale = 0.05; }});
  c.push_back({"all_modifiers", SetAllModifiers});
  c.push_back({"all_modifiers_gqkva_window", [](Problem& p) {
                 SetAllModifiers(p);
                 SetLayout(p, LayoutKind::kGqkva);
                 p.layout.query_groups = 3;
                 p.layout.kv_groups = 2;
                 SetWindow(p, 9, 0);
                 p.rope.rotary_dims = 24;
               }});
  c.push_back({"explicit_probabilistic_softcap", [](Problem& p) {
                 SetLayout(p, LayoutKind::kExplicit);
                 p.layout.num_query_heads = 2;
                 p.layout.num_kv_heads = 2;
                 p.layout.pairs = {{1, 0}, {0, 1}, {1, 1}};
                 p.mask.kind = MaskKind::kProbabilisticBlockSparse;
                 p.mask.query_block_tokens = 3;
                 p.mask.kv_block_tokens = 5;
                 p.mask.c_coefficient = 0.9;
                 p.mask.alpha = 1.5;
                 p.softcap = {true, 4.0};
               }});
  // Several blocks each way (the CPU kernel's 64, the GPU passes' chunks of 128): whole blocks
  // skipped, kept whole and cut by the mask, ragged last ones.
  c.push_back({"long_causal_rope", [](Problem& p) {
                 SetLong(p);
                 p.mask.kind = MaskKind::kCausal;
                 p.rope.enabled = true;
               }});
  c.push_back({"long_window_mqa", [](Problem& p) {
                 SetLong(p);
                 SetLayout(p, LayoutKind::kMqa);
                 p.layout.num_heads = 4;
                 SetWindow(p, 40, 10);
               }});
  c.push_back({"long_block_sparse", [](Problem& p) {
                 SetLong(p);
                 p.mask.kind = MaskKind::kBlockSparse;
                 p.mask.query_block_tokens = 64;
                 p.mask.kv_block_tokens = 64;
                 p.mask.blocks = {{0, 0}, {1, 2}, {2, 1}, {2, 2}};
               }});
  return c;
}

Problem GpuBackwardBaseProblem() {
  Problem p = OddGqaProblem();
  p.layout.num_kv_heads = 2;
  p.phase = Phase::kBackward;
  return p;
}

std::vector<BackwardCase> GpuBackwardCases() {
  std::vector<BackwardCase> c = BackwardVariantCases();
  // A head dim wider than a warp's 32 lanes several times over, D_qk != D_v.
  c.push_back({"d128_dv64_causal", [](Problem& p) {
                 p.batch_size = 1;
                 p.head_dim_qk = 128;
                 p.head_dim_v = 64;
                 p.mask.kind = MaskKind::kCausal;
                 p.rope.enabled = true;
               }});
  return c;
}

Problem GpuBackwardCaseProblem(int index, DType dtype) {
  Problem p = GpuBackwardBaseProblem();
  GpuBackwardCases()[index].edit(p);
  p.dtype = dtype;
  p.seed = 0x5eed0000u + 97u * static_cast<uint64_t>(index) + static_cast<uint64_t>(dtype);
  return p;
}

std::vector<NamedProblem> FlashBackwardTileProblems() {
  Problem window = GpuBackwardBaseProblem();
  SetAllModifiers(window);
  SetWindow(window, 70, 3);
  window.seq_len_q = 333;
  window.seq_len_kv = 301;
  window.head_dim_qk = 64;
  window.head_dim_v = 64;
  window.dtype = DType::kBFloat16;
  window.seed = 0x5eed1000u;
  Problem mha = GpuBackwardBaseProblem();
  SetLayout(mha, LayoutKind::kMha);
  mha.layout.num_heads = 2;
  mha.seq_len_q = 260;
  mha.seq_len_kv = 130;
  mha.head_dim_qk = 64;
  mha.head_dim_v = 64;
  mha.dtype = DType::kFloat16;
  mha.seed = 0x5eed1001u;
  return {{"window_all_modifiers", window}, {"mha_more_queries", mha}};
}

}  // namespace attnbench::testing
