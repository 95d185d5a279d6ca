#include "kernels/spec/validate_layout.h"

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace attnbench {
namespace {

absl::Status Invalid(const std::string& message) { return absl::InvalidArgumentError(message); }

// "<path> (<value>) must be > 0" for a head count, with the common upper bound.
absl::Status CheckCount(const std::string& path, int64_t value) {
  if (value <= 0) return Invalid(absl::StrCat(path, " (", value, ") must be > 0"));
  if (value > kMaxHeads) {
    return Invalid(absl::StrCat(path, " (", value, ") must be <= ", kMaxHeads));
  }
  return absl::OkStatus();
}

absl::Status CheckGrouped(const std::string& prefix, int num_query_heads, int num_kv_heads) {
  if (num_query_heads % num_kv_heads != 0) {
    return Invalid(absl::StrCat(prefix, "num_query_heads (", num_query_heads,
                                ") must be a multiple of ", prefix, "num_kv_heads (", num_kv_heads,
                                ")"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateLayout(const HeadLayout& layout) {
  switch (layout.kind) {
    case LayoutKind::kUnspecified:
      return Invalid(
          "spec.layout must be set (one of mha, mqa, gqa, sqa, symmetric_sqa, extreme_sqa, gqkva, "
          "explicit_map)");
    case LayoutKind::kMha:
      return CheckCount("spec.layout.mha.num_heads", layout.num_heads);
    case LayoutKind::kMqa:
      return CheckCount("spec.layout.mqa.num_heads", layout.num_heads);
    case LayoutKind::kGqa: {
      const std::string p = "spec.layout.gqa.";
      if (auto s = CheckCount(p + "num_query_heads", layout.num_query_heads); !s.ok()) return s;
      if (auto s = CheckCount(p + "num_kv_heads", layout.num_kv_heads); !s.ok()) return s;
      return CheckGrouped(p, layout.num_query_heads, layout.num_kv_heads);
    }
    case LayoutKind::kSqa: {
      const std::string p = "spec.layout.sqa.";
      if (auto s = CheckCount(p + "baseline_heads", layout.baseline_heads); !s.ok()) return s;
      if (auto s = CheckCount(p + "num_query_heads", layout.num_query_heads); !s.ok()) return s;
      if (auto s = CheckCount(p + "num_kv_heads", layout.num_kv_heads); !s.ok()) return s;
      if (layout.num_query_heads >= layout.baseline_heads) {
        return Invalid(absl::StrCat(p, "num_query_heads (", layout.num_query_heads, ") must be < ",
                                    p, "baseline_heads (", layout.baseline_heads,
                                    "): SQA uses fewer query heads than its baseline"));
      }
      if (layout.num_kv_heads > layout.num_query_heads) {
        return Invalid(absl::StrCat(p, "num_kv_heads (", layout.num_kv_heads, ") must be <= ", p,
                                    "num_query_heads (", layout.num_query_heads, ")"));
      }
      return CheckGrouped(p, layout.num_query_heads, layout.num_kv_heads);
    }
    case LayoutKind::kSymmetricSqa: {
      const std::string path = "spec.layout.symmetric_sqa.baseline_heads";
      if (auto s = CheckCount(path, layout.baseline_heads); !s.ok()) return s;
      if (layout.baseline_heads < 2 || layout.baseline_heads % 2 != 0) {
        return Invalid(absl::StrCat(path, " (", layout.baseline_heads,
                                    ") must be even and >= 2 (H_q = H_kv = H / 2)"));
      }
      return absl::OkStatus();
    }
    case LayoutKind::kExtremeSqa: {
      const std::string p = "spec.layout.extreme_sqa.";
      if (auto s = CheckCount(p + "baseline_heads", layout.baseline_heads); !s.ok()) return s;
      if (layout.baseline_heads < 4) {
        return Invalid(absl::StrCat(p, "baseline_heads (", layout.baseline_heads,
                                    ") must be >= 4 (H_q <= H / 4 needs at least one head)"));
      }
      const int hq = layout.extreme_query_heads.value_or(layout.baseline_heads / 4);
      if (hq <= 0 || hq > layout.baseline_heads / 4) {
        return Invalid(absl::StrCat(p, "num_query_heads (", hq, ") must be in [1, ", p,
                                    "baseline_heads / 4 = ", layout.baseline_heads / 4, "]"));
      }
      return absl::OkStatus();
    }
    case LayoutKind::kGqkva: {
      const std::string p = "spec.layout.gqkva.";
      if (auto s = CheckCount(p + "query_groups", layout.query_groups); !s.ok()) return s;
      if (auto s = CheckCount(p + "kv_groups", layout.kv_groups); !s.ok()) return s;
      const int64_t out = static_cast<int64_t>(layout.query_groups) * layout.kv_groups;
      if (out > kMaxHeads) {
        return Invalid(absl::StrCat(p, "query_groups * ", p, "kv_groups (", layout.query_groups,
                                    " * ", layout.kv_groups, " = ", out,
                                    " output heads) must be <= ", kMaxHeads));
      }
      return absl::OkStatus();
    }
    case LayoutKind::kExplicit: {
      const std::string p = "spec.layout.explicit_map.";
      if (auto s = CheckCount(p + "num_query_heads", layout.num_query_heads); !s.ok()) return s;
      if (auto s = CheckCount(p + "num_kv_heads", layout.num_kv_heads); !s.ok()) return s;
      if (layout.pairs.empty()) return Invalid(p + "pairs must not be empty");
      if (layout.pairs.size() > static_cast<size_t>(kMaxHeads)) {
        return Invalid(absl::StrCat(p, "pairs has ", layout.pairs.size(), " entries; at most ",
                                    kMaxHeads, " output heads"));
      }
      for (size_t h = 0; h < layout.pairs.size(); ++h) {
        const HeadPair& pair = layout.pairs[h];
        if (pair.query_head < 0 || pair.query_head >= layout.num_query_heads) {
          return Invalid(absl::StrCat(p, "pairs[", h, "].query_head (", pair.query_head,
                                      ") must be in [0, ", p,
                                      "num_query_heads = ", layout.num_query_heads, ")"));
        }
        if (pair.kv_head < 0 || pair.kv_head >= layout.num_kv_heads) {
          return Invalid(absl::StrCat(p, "pairs[", h, "].kv_head (", pair.kv_head,
                                      ") must be in [0, ", p,
                                      "num_kv_heads = ", layout.num_kv_heads, ")"));
        }
      }
      return absl::OkStatus();
    }
  }
  return Invalid("spec.layout has an unknown kind");
}

}  // namespace attnbench
