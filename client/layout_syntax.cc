#include "client/layout_syntax.h"

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/lists.h"

namespace attnbench::client {
namespace {

absl::Status SyntaxError(absl::string_view text, absl::string_view expected) {
  return absl::InvalidArgumentError(
      absl::StrCat("layout '", text, "' is not of the form ", expected));
}

// Parses "a/b/c" into exactly `min..max` integers.
absl::StatusOr<std::vector<int32_t>> ParseCounts(absl::string_view text, size_t min, size_t max) {
  std::vector<std::string> parts = absl::StrSplit(text, '/');
  if (parts.size() < min || parts.size() > max) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' needs ", min,
                                                   (min == max ? "" : absl::StrCat(" to ", max)),
                                                   " '/'-separated counts"));
  }
  std::vector<int32_t> counts;
  for (const std::string& part : parts) {
    absl::StatusOr<int32_t> count = ParseInt32(part);
    if (!count.ok()) return count.status();
    counts.push_back(*count);
  }
  return counts;
}

absl::StatusOr<v1::HeadLayout> ParseExplicit(absl::string_view text, absl::string_view args) {
  std::vector<std::string> parts = absl::StrSplit(args, absl::MaxSplits('/', 2));
  if (parts.size() != 3) return SyntaxError(text, "explicit:Hq/Hkv/q-k+q-k+...");
  v1::HeadLayout layout;
  v1::HeadLayout::ExplicitMap* map = layout.mutable_explicit_map();
  absl::StatusOr<int32_t> query_heads = ParseInt32(parts[0]);
  if (!query_heads.ok()) return query_heads.status();
  absl::StatusOr<int32_t> kv_heads = ParseInt32(parts[1]);
  if (!kv_heads.ok()) return kv_heads.status();
  map->set_num_query_heads(*query_heads);
  map->set_num_kv_heads(*kv_heads);
  for (absl::string_view pair_text : absl::StrSplit(parts[2], '+')) {
    std::vector<std::string> halves = absl::StrSplit(pair_text, '-');
    if (halves.size() != 2) return SyntaxError(text, "explicit:Hq/Hkv/q-k+q-k+...");
    absl::StatusOr<int32_t> query_head = ParseInt32(halves[0]);
    if (!query_head.ok()) return query_head.status();
    absl::StatusOr<int32_t> kv_head = ParseInt32(halves[1]);
    if (!kv_head.ok()) return kv_head.status();
    v1::HeadLayout::HeadPair* pair = map->add_pairs();
    pair->set_query_head(*query_head);
    pair->set_kv_head(*kv_head);
  }
  return layout;
}

}  // namespace

absl::StatusOr<v1::HeadLayout> ParseLayoutSpec(absl::string_view text) {
  std::vector<std::string> name_args = absl::StrSplit(text, absl::MaxSplits(':', 1));
  if (name_args.size() != 2 || name_args[1].empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layout '", text, "' is not of the form name:counts (name one of ", kLayoutNames, ")"));
  }
  const std::string& name = name_args[0];
  const std::string& args = name_args[1];
  if (name == "explicit") return ParseExplicit(text, args);

  v1::HeadLayout layout;
  absl::StatusOr<std::vector<int32_t>> counts;
  if (name == "mha" || name == "mqa" || name == "ssqa") {
    counts = ParseCounts(args, 1, 1);
  } else if (name == "gqa" || name == "gqkva") {
    counts = ParseCounts(args, 2, 2);
  } else if (name == "sqa") {
    counts = ParseCounts(args, 3, 3);
  } else if (name == "xsqa") {
    counts = ParseCounts(args, 1, 2);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown layout '", name, "' (expected ", kLayoutNames, ")"));
  }
  if (!counts.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("layout '", text, "': ", counts.status().message()));
  }
  const std::vector<int32_t>& c = *counts;
  if (name == "mha") {
    layout.mutable_mha()->set_num_heads(c[0]);
  } else if (name == "mqa") {
    layout.mutable_mqa()->set_num_heads(c[0]);
  } else if (name == "gqa") {
    layout.mutable_gqa()->set_num_query_heads(c[0]);
    layout.mutable_gqa()->set_num_kv_heads(c[1]);
  } else if (name == "sqa") {
    layout.mutable_sqa()->set_baseline_heads(c[0]);
    layout.mutable_sqa()->set_num_query_heads(c[1]);
    layout.mutable_sqa()->set_num_kv_heads(c[2]);
  } else if (name == "ssqa") {
    layout.mutable_symmetric_sqa()->set_baseline_heads(c[0]);
  } else if (name == "xsqa") {
    layout.mutable_extreme_sqa()->set_baseline_heads(c[0]);
    if (c.size() == 2) layout.mutable_extreme_sqa()->set_num_query_heads(c[1]);
  } else {
    layout.mutable_gqkva()->set_query_groups(c[0]);
    layout.mutable_gqkva()->set_kv_groups(c[1]);
  }
  return layout;
}

std::string LayoutToString(const v1::HeadLayout& layout) {
  switch (layout.layout_case()) {
    case v1::HeadLayout::kMha:
      return absl::StrCat("mha:", layout.mha().num_heads());
    case v1::HeadLayout::kMqa:
      return absl::StrCat("mqa:", layout.mqa().num_heads());
    case v1::HeadLayout::kGqa:
      return absl::StrCat("gqa:", layout.gqa().num_query_heads(), "/", layout.gqa().num_kv_heads());
    case v1::HeadLayout::kSqa:
      return absl::StrCat("sqa:", layout.sqa().baseline_heads(), "/",
                          layout.sqa().num_query_heads(), "/", layout.sqa().num_kv_heads());
    case v1::HeadLayout::kSymmetricSqa:
      return absl::StrCat("ssqa:", layout.symmetric_sqa().baseline_heads());
    case v1::HeadLayout::kExtremeSqa: {
      const v1::HeadLayout::ExtremeSqa& x = layout.extreme_sqa();
      if (!x.has_num_query_heads()) return absl::StrCat("xsqa:", x.baseline_heads());
      return absl::StrCat("xsqa:", x.baseline_heads(), "/", x.num_query_heads());
    }
    case v1::HeadLayout::kGqkva:
      return absl::StrCat("gqkva:", layout.gqkva().query_groups(), "/", layout.gqkva().kv_groups());
    case v1::HeadLayout::kExplicitMap: {
      const v1::HeadLayout::ExplicitMap& map = layout.explicit_map();
      return absl::StrCat(
          "explicit:", map.num_query_heads(), "/", map.num_kv_heads(), "/",
          absl::StrJoin(map.pairs(), "+", [](std::string* out, const v1::HeadLayout::HeadPair& p) {
            absl::StrAppend(out, p.query_head(), "-", p.kv_head());
          }));
    }
    case v1::HeadLayout::LAYOUT_NOT_SET:
      break;
  }
  return "unset";
}

absl::StatusOr<v1::Mask> ParseWindowSpec(absl::string_view text) {
  constexpr absl::string_view kPrefix = "window:";
  std::vector<std::string> sides;
  if (absl::StartsWith(text, kPrefix)) sides = absl::StrSplit(text.substr(kPrefix.size()), '/');
  if (sides.size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("mask '", text, "' is not of the form window:L/R (a side may be empty)"));
  }
  v1::Mask mask;
  v1::Mask::SlidingWindow* window = mask.mutable_sliding_window();
  if (!sides[0].empty()) {
    absl::StatusOr<int64_t> left = ParseInt64(sides[0]);
    if (!left.ok()) return left.status();
    window->set_left_tokens(*left);
  }
  if (!sides[1].empty()) {
    absl::StatusOr<int64_t> right = ParseInt64(sides[1]);
    if (!right.ok()) return right.status();
    window->set_right_tokens(*right);
  }
  return mask;
}

std::string MaskToString(const v1::Mask& mask) {
  switch (mask.kind_case()) {
    case v1::Mask::kNone:
    case v1::Mask::KIND_NOT_SET:
      return "none";
    case v1::Mask::kCausal:
      return "causal";
    case v1::Mask::kSlidingWindow: {
      const v1::Mask::SlidingWindow& w = mask.sliding_window();
      return absl::StrCat("window:", w.has_left_tokens() ? absl::StrCat(w.left_tokens()) : "", "/",
                          w.has_right_tokens() ? absl::StrCat(w.right_tokens()) : "");
    }
    case v1::Mask::kBlockSparse: {
      const v1::Mask::BlockSparse& b = mask.block_sparse();
      return absl::StrCat("block_sparse:", b.query_block_tokens(), "/", b.kv_block_tokens(),
                          b.intersect_causal() ? "+causal" : "");
    }
    case v1::Mask::kProbabilisticBlockSparse: {
      const v1::Mask::ProbabilisticBlockSparse& p = mask.probabilistic_block_sparse();
      return absl::StrCat("prob_block_sparse:", p.query_block_tokens(), "/", p.kv_block_tokens());
    }
  }
  return "none";
}

HeadCounts HeadsOf(const v1::HeadLayout& layout) {
  switch (layout.layout_case()) {
    case v1::HeadLayout::kMha: {
      const int h = layout.mha().num_heads();
      return {h, h, h};
    }
    case v1::HeadLayout::kMqa: {
      const int h = layout.mqa().num_heads();
      return {h, 1, h};
    }
    case v1::HeadLayout::kGqa:
      return {layout.gqa().num_query_heads(), layout.gqa().num_kv_heads(),
              layout.gqa().num_query_heads()};
    case v1::HeadLayout::kSqa:
      return {layout.sqa().num_query_heads(), layout.sqa().num_kv_heads(),
              layout.sqa().num_query_heads()};
    case v1::HeadLayout::kSymmetricSqa: {
      const int h = layout.symmetric_sqa().baseline_heads() / 2;
      return {h, h, h};
    }
    case v1::HeadLayout::kExtremeSqa: {
      const v1::HeadLayout::ExtremeSqa& x = layout.extreme_sqa();
      const int h = x.has_num_query_heads() ? x.num_query_heads() : x.baseline_heads() / 4;
      return {h, h, h};
    }
    case v1::HeadLayout::kGqkva: {
      const v1::HeadLayout::Gqkva& g = layout.gqkva();
      return {g.query_groups(), g.kv_groups(), g.query_groups() * g.kv_groups()};
    }
    case v1::HeadLayout::kExplicitMap: {
      const v1::HeadLayout::ExplicitMap& m = layout.explicit_map();
      return {m.num_query_heads(), m.num_kv_heads(), m.pairs_size()};
    }
    case v1::HeadLayout::LAYOUT_NOT_SET:
      break;
  }
  return {};
}

int OutputHeads(const v1::HeadLayout& layout) { return HeadsOf(layout).output; }

}  // namespace attnbench::client
